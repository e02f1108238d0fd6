//! The `[worker]` section: how many packet workers run, how they wait for frames
//! (busy-poll window or always), and which CPUs they are pinned to.

use std::time::Duration;

use serde::Deserialize;

use super::{invalid, ConfigError};

/// How the packet worker waits for frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusyPoll {
    /// Keep polling this long after the last frame, then sleep in `epoll_wait` (an idle
    /// switch costs nothing).
    After(Duration),
    /// Never sleep: lowest latency, one core always busy (benchmarks, dedicated cores).
    Always,
}

/// The packet workers' settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerConfig {
    /// How many worker threads run (default: one per CPU).
    pub count: usize,
    /// How they wait for frames.
    pub busy_poll: BusyPoll,
    /// Where they run.
    pub pin: Pinning,
}

/// Where worker threads are pinned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pinning {
    /// Worker `i` on CPU `i` (modulo the CPUs there are): the default.
    Auto,
    /// Not pinned: the kernel's scheduler places them.
    Off,
    /// Worker `i` on `cpus[i]`.
    Cpus(Vec<usize>),
}

impl WorkerConfig {
    /// One worker, unpinned, with the default busy-poll window (tests, benchmarks of the
    /// pipeline alone).
    pub fn single() -> WorkerConfig {
        WorkerConfig { count: 1, busy_poll: BusyPoll::After(DEFAULT_BUSY_POLL), pin: Pinning::Off }
    }

    /// The CPU worker `i` is pinned to, if any.
    pub fn cpu_of(&self, i: usize) -> Option<usize> {
        match &self.pin {
            Pinning::Auto => Some(i % cpus()),
            Pinning::Off => None,
            Pinning::Cpus(c) => c.get(i).copied(),
        }
    }
}

/// CPUs this process may run on.
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Most worker threads a switch runs (the fabric keeps one bit per worker in a `u64`).
pub const MAX_WORKERS: usize = 64;

/// Default busy-poll window after the last frame.
pub const DEFAULT_BUSY_POLL: Duration = Duration::from_micros(200);

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WorkerSection {
    #[serde(default)]
    count: Option<usize>,
    #[serde(default)]
    busy_poll: Option<String>,
    #[serde(default)]
    cpu: Option<usize>,
    #[serde(default)]
    cpus: Option<Vec<usize>>,
    #[serde(default)]
    pin: Option<bool>,
}

impl WorkerSection {
    pub(super) fn validate(self) -> Result<WorkerConfig, ConfigError> {
        let busy_poll = match self.busy_poll.as_deref() {
            None => BusyPoll::After(DEFAULT_BUSY_POLL),
            Some("always") => BusyPoll::Always,
            Some(v) => {
                let us = v.strip_suffix("us").and_then(|n| n.parse::<u64>().ok());
                match us {
                    Some(us) if us <= 1_000_000 => BusyPoll::After(Duration::from_micros(us)),
                    _ => {
                        return Err(invalid(
                            "worker.busy_poll",
                            format!(
                                "{v:?} is neither \"always\" nor a window like \"200us\" \
                                 (0 to 1000000us)"
                            ),
                        ))
                    }
                }
            }
        };
        let (field, list) = match (self.cpu, self.cpus) {
            (Some(_), Some(_)) => {
                return Err(invalid("worker.cpu", "give either cpu (one worker) or cpus, not both"))
            }
            (Some(cpu), None) => ("worker.cpu", Some(vec![cpu])),
            (None, Some(list)) => ("worker.cpus", Some(list)),
            (None, None) => ("", None),
        };
        let n = cpus();
        // Without a count, one worker per CPU listed, or per CPU there is.
        let count = match self.count {
            None => list.as_ref().map_or(n, |l| l.len().max(1)),
            Some(c) if (1..=MAX_WORKERS).contains(&c) => c,
            Some(c) => {
                return Err(invalid(
                    "worker.count",
                    format!("{c} workers: from 1 to {MAX_WORKERS}"),
                ))
            }
        };
        let pin = match (list, self.pin) {
            (Some(_), Some(false)) => {
                return Err(invalid(field, "CPUs given while pin = false"));
            }
            (Some(list), _) => {
                if let Some(cpu) = list.iter().find(|&&c| c >= n) {
                    return Err(invalid(
                        field,
                        format!("CPU {cpu} does not exist here (CPUs 0 to {})", n - 1),
                    ));
                }
                if list.len() != count {
                    return Err(invalid(
                        field,
                        format!("{} CPUs for {count} workers: give one per worker", list.len()),
                    ));
                }
                Pinning::Cpus(list)
            }
            (None, Some(false)) => Pinning::Off,
            (None, _) => Pinning::Auto,
        };
        Ok(WorkerConfig { count, busy_poll, pin })
    }
}
