//! `podswitch-cni`: the CNI plugin binary. Everything happens in the library
//! ([`cni_shim::run`]); this reads the process's environment and stdin and writes the answer.

use std::io::{Read, Write};
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut stdin = Vec::new();
    let read = std::io::stdin().read_to_end(&mut stdin).map(|_| ());
    let outcome = cni_shim::run(&|k| std::env::var(k).ok(), read.map(|()| stdin.as_slice()));
    let mut out = std::io::stdout().lock();
    if !outcome.stdout.is_empty() {
        let _ = writeln!(out, "{}", outcome.stdout);
    }
    let _ = out.flush();
    if outcome.success {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
