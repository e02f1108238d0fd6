//! `bench`: podswitch side by side with the kernel path and Open vSwitch. One command builds
//! identical topologies for every peer in fresh namespaces, runs the same traffic through each
//! in the same run, and writes `bench/results/<timestamp>.json` plus a markdown report (and,
//! for a full `all` run, `docs/benchmarks.md`).
//!
//! ```text
//!   scenarios ──► peers (topologies, torn down on drop) ──► podswitch_lab::traffic tools
//!        │                                                        │
//!        └──────────── results (every run) ──► stats ──► report.md + CDF .svg
//! ```

mod kube_rules;
mod machine;
mod ovs;
mod peers;
mod report;
mod results;
mod scenarios;
mod stats;
mod svg;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::SystemTime;

use clap::{Parser, Subcommand};

use machine::{utc_timestamp, Machine};
use peers::Peer;
use results::RunReport;
use scenarios::{same_node, Ctx};

/// Benchmarks podswitch against the kernel path and Open vSwitch (run as root).
#[derive(Debug, Parser)]
#[command(name = "bench", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Short measurements (the whole `all` in under 3 minutes); a smoke check, not a result.
    #[arg(long, global = true)]
    quick: bool,
    /// Runs of every measurement (at least 3 for medians worth reporting).
    #[arg(long, global = true, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=20))]
    runs: u64,
    /// Peers to measure, comma-separated.
    #[arg(
        long,
        global = true,
        value_delimiter = ',',
        default_value = "kernel,ovs,podswitch,podswitch-afxdp"
    )]
    peers: Vec<Peer>,
    /// Directory for `<timestamp>.json`, `.md` and `-latency-cdf.svg`.
    #[arg(long, global = true)]
    out: Option<PathBuf>,
    /// Do not rewrite `docs/benchmarks.md` after a full `all` run.
    #[arg(long, global = true)]
    no_docs: bool,
    /// Run every podswitch in busy-poll-only mode (`[worker] busy_poll = "always"`: its
    /// worker never sleeps), as OVS's PMD threads do.
    #[arg(long, global = true)]
    busy_poll: bool,
    /// Worker threads of every podswitch (default: the switch's own, one per CPU, worker i
    /// pinned to CPU i).
    #[arg(long, global = true)]
    workers: Option<usize>,
    /// Leave podswitch's workers unpinned (`[worker] pin = false`): the scheduler places them.
    #[arg(long, global = true)]
    no_pin: bool,
    /// CPU for client-side traffic threads (senders, request loops).
    #[arg(long, global = true, default_value_t = 0)]
    client_cpu: usize,
    /// CPU for server-side traffic threads (receivers, echo servers).
    #[arg(long, global = true, default_value_t = 1)]
    server_cpu: usize,
}

#[derive(Debug, Clone, Subcommand)]
enum Command {
    /// Every scenario below, in this order.
    All,
    /// Same-node pod-to-pod TCP throughput, 1 and 4 streams.
    TcpThroughput,
    /// Same-node 64-byte UDP: delivered packet rate, loss, CPU cost per packet.
    UdpPps,
    /// Same-node UDP and TCP request/response latency (p50, p99, p99.9, CDF plot).
    Latency,
    /// Cross-node TCP throughput and latency over the VXLAN overlay.
    CrossNode,
    /// Service VIP: new connections per second and request/response latency.
    Service,
    /// Loading 1,000 / 10,000 / 50,000 Services and changing one.
    ControlPlane,
    /// In-memory pipeline micro-benchmarks (no I/O).
    Pipeline,
    /// Re-renders the markdown report (and plot) of a results file.
    Report {
        /// A `bench/results/<timestamp>.json`.
        json: PathBuf,
    },
}

/// The repository root, from this crate's location at build time.
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

fn main() -> ExitCode {
    // `bench run --config FILE` is `podswitch run`: the harness runs its own build as the switch.
    if std::env::args().nth(1).as_deref() == Some("run") {
        return vswitch::cli::main();
    }
    let cli = Cli::parse();
    if let Command::Report { json } = &cli.command {
        return match rerender(json) {
            Ok(md) => {
                println!("wrote {}", md.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("bench report: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if !vswitch::sys::process::is_root() {
        eprintln!("bench: needs root (it creates network namespaces, TAP and veth devices)");
        return ExitCode::from(2);
    }
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> Result<(), String> {
    let interrupted = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&interrupted))
            .map_err(|e| format!("signal handler: {e}"))?;
    }
    let machine = Machine::probe();
    let (client_cpu, server_cpu) = (cli.client_cpu, cli.server_cpu);
    if client_cpu >= machine.cpus || server_cpu >= machine.cpus {
        return Err(format!(
            "--client-cpu/--server-cpu: this machine has CPUs 0 to {}",
            machine.cpus - 1
        ));
    }
    podswitch_lab::traffic::set_placement(Some(client_cpu), Some(server_cpu));
    peers::set_busy_poll(cli.busy_poll);
    if let Some(w) = cli.workers {
        if w == 0 || w > vswitch::config::MAX_WORKERS {
            return Err(format!("--workers: 1 to {}", vswitch::config::MAX_WORKERS));
        }
    }
    peers::set_workers(cli.workers, !cli.no_pin);
    let workers = cli.workers.unwrap_or(machine.cpus);
    let mut peers = cli.peers.clone();
    peers.sort();
    peers.dedup();
    let ctx = Ctx {
        runs: cli.runs as usize,
        quick: cli.quick,
        peers,
        interrupted: Arc::clone(&interrupted),
    };
    let started = SystemTime::now();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut run = RunReport {
        command: format!("cargo run --release -p bench -- {}", args.join(" ")),
        started: utc_timestamp(started),
        finished: String::new(),
        quick: cli.quick,
        runs: ctx.runs,
        machine,
        placement: format!(
            "client-side traffic threads pinned to CPU {client_cpu}, server-side threads to CPU \
             {server_cpu}, for every peer; podswitch runs {workers} worker(s){} (the two \
             cross-node switches share the CPUs and run one unpinned worker each); the rest of the datapath \
             (OVS threads, kernel softirq) is left to the scheduler{}",
            if cli.no_pin { ", unpinned" } else { ", worker i pinned to CPU i" },
            if cli.busy_poll { "; podswitch in busy-poll-only mode" } else { "" }
        ),
        scenarios: Vec::new(),
    };
    let all = matches!(cli.command, Command::All);
    let is = |c: &Command| all || std::mem::discriminant(c) == std::mem::discriminant(&cli.command);
    let sel = same_node::Selection {
        throughput: is(&Command::TcpThroughput),
        udp: is(&Command::UdpPps),
        latency: is(&Command::Latency),
    };
    type Step = fn(&Ctx) -> results::Scenario;
    let steps: [(Command, Step); 4] = [
        (Command::CrossNode, scenarios::cross_node::run),
        (Command::Service, scenarios::service::run),
        (Command::ControlPlane, scenarios::control_plane::run),
        (Command::Pipeline, scenarios::pipeline::run),
    ];
    if sel.throughput || sel.udp || sel.latency {
        eprintln!("same-node scenarios");
        for sc in same_node::run(&ctx, sel) {
            println!("\n## {}\n\n{}", sc.title, report::scenario_table(&sc));
            run.scenarios.push(sc);
        }
    }
    for (command, step) in steps {
        if is(&command) && !ctx.stopped() {
            eprintln!("{command:?}");
            let sc = step(&ctx);
            println!("\n## {}\n\n{}", sc.title, report::scenario_table(&sc));
            run.scenarios.push(sc);
        }
    }
    run.finished = utc_timestamp(SystemTime::now());
    let out = cli.out.clone().unwrap_or_else(|| repo_root().join("bench/results"));
    let written = write_results(&run, &out)?;
    println!("\nwrote {}", written.display());
    if ctx.stopped() {
        return Err("interrupted: partial results written, everything built was removed".into());
    }
    if all && !cli.quick && !cli.no_docs {
        let docs = repo_root().join("docs");
        write_report(&run, &docs.join("benchmarks.md"), &docs.join("benchmarks-latency-cdf.svg"))?;
        println!("wrote {}", docs.join("benchmarks.md").display());
    }
    Ok(())
}

/// Writes `<out>/<timestamp>.json` and its report; returns the JSON's path.
fn write_results(run: &RunReport, out: &Path) -> Result<PathBuf, String> {
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let stem = run.started.replace(':', "-");
    let json = out.join(format!("{stem}.json"));
    let text = serde_json::to_string_pretty(run).map_err(|e| e.to_string())?;
    std::fs::write(&json, text + "\n").map_err(|e| format!("{}: {e}", json.display()))?;
    write_report(
        run,
        &out.join(format!("{stem}.md")),
        &out.join(format!("{stem}-latency-cdf.svg")),
    )?;
    Ok(json)
}

/// Writes the markdown report at `md` and, if any scenario has latency CDFs, the plot at `svg`.
fn write_report(run: &RunReport, md: &Path, svg: &Path) -> Result<(), String> {
    let cdfs: Vec<_> = run.scenarios.iter().flat_map(|s| s.cdfs.clone()).collect();
    let mut labels = std::collections::BTreeMap::new();
    for sc in run.scenarios.iter().filter(|s| !s.cdfs.is_empty()) {
        labels.extend(report::column_labels(sc));
    }
    let svg_name = if cdfs.iter().any(|c| c.series.values().any(|p| !p.is_empty())) {
        let text = svg::latency_cdfs(
            "Same-node request/response latency, 64 B (all runs)",
            &cdfs,
            &labels,
        );
        std::fs::write(svg, text).map_err(|e| format!("{}: {e}", svg.display()))?;
        svg.file_name().map(|n| n.to_string_lossy().into_owned())
    } else {
        None
    };
    std::fs::write(md, report::markdown(run, svg_name.as_deref()))
        .map_err(|e| format!("{}: {e}", md.display()))
}

fn rerender(json: &Path) -> Result<PathBuf, String> {
    let text = std::fs::read_to_string(json).map_err(|e| format!("{}: {e}", json.display()))?;
    let run: RunReport =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", json.display()))?;
    let md = json.with_extension("md");
    let stem = json.file_stem().map_or_else(String::new, |s| s.to_string_lossy().into_owned());
    write_report(&run, &md, &json.with_file_name(format!("{stem}-latency-cdf.svg")))?;
    Ok(md)
}
