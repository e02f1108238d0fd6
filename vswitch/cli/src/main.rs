//! The `podswitch` binary: the switch's commands (`run`, `ctl`, `check-config`, from
//! `vswitch::cli`) and `lab`, the self-contained demonstration (`podswitch-lab`). It is a
//! package of its own because the lab links the switch's library and this binary links both.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// podswitch: a userspace virtual switch for Kubernetes pod networking.
#[derive(Debug, Parser)]
#[command(name = "podswitch", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    #[command(flatten)]
    Switch(vswitch::cli::Command),
    /// Build a node and pods in fresh network namespaces, run the switch, prove and measure
    /// connectivity, and remove everything again.
    Lab(podswitch_lab::LabArgs),
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Switch(command) => vswitch::cli::run(command),
        Command::Lab(args) => podswitch_lab::main(args),
    }
}
