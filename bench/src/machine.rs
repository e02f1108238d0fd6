//! Facts about the machine and CPU accounting from `/proc`. The report names the machine it
//! ran on, and the CPU cost of each datapath comes from the kernel's own counters: a polling
//! switch cannot hide a burned core, and the kernel path is charged its softirq time.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Where a run happened.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    /// `model name` from `/proc/cpuinfo`.
    pub cpu_model: String,
    /// Online CPUs.
    pub cpus: usize,
    /// Kernel release.
    pub kernel: String,
    /// Memory, GiB.
    pub memory_gib: f64,
}

impl Machine {
    /// Reads the facts of this machine.
    pub fn probe() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Machine {
            cpu_model: cpu_model(&cpuinfo).unwrap_or_else(|| "unknown".into()),
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "unknown".into()),
            memory_gib: mem_total_kib(&meminfo).map_or(0.0, |k| k as f64 / (1024.0 * 1024.0)),
        }
    }
}

fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
}

fn mem_total_kib(meminfo: &str) -> Option<u64> {
    meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// Clock ticks per second of the `/proc` CPU counters.
fn ticks_per_sec() -> f64 {
    vswitch::sys::process::clock_ticks_per_sec().map_or(100.0, |t| t as f64)
}

/// What a datapath's CPU time is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuSource {
    /// User + system time of one process and all its threads (a userspace switch).
    Process(u32),
    /// Softirq time of all CPUs (the kernel's datapath).
    Softirq,
}

impl CpuSource {
    /// CPU-seconds consumed so far, or `None` if the counter cannot be read.
    pub fn seconds(self) -> Option<f64> {
        let ticks = match self {
            CpuSource::Process(pid) => {
                process_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)?
            }
            CpuSource::Softirq => softirq_ticks(&std::fs::read_to_string("/proc/stat").ok()?)?,
        };
        Some(ticks as f64 / ticks_per_sec())
    }

    /// What the report calls it.
    pub fn describe(self) -> &'static str {
        match self {
            CpuSource::Process(_) => "switch process user+system time",
            CpuSource::Softirq => "softirq time, all CPUs",
        }
    }
}

/// utime + stime (fields 14 and 15) of a `/proc/PID/stat` line. The command name (field 2)
/// may contain spaces and parentheses, so fields are counted after its last `)`.
fn process_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut f = rest.split_whitespace().skip(11);
    let utime: u64 = f.next()?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The softirq column (7th value) of the aggregate `cpu` line of `/proc/stat`.
fn softirq_ticks(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    line.split_whitespace().nth(7)?.parse().ok()
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn utc_timestamp(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn parses_proc_files() {
        let stat = "1234 (my (odd) prog) S 1 1 1 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0";
        assert_eq!(process_ticks(stat), Some(325));
        assert_eq!(process_ticks("garbage"), None);
        let s = "cpu  10 20 30 40 50 60 70 80 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n";
        assert_eq!(softirq_ticks(s), Some(70));
        assert_eq!(softirq_ticks("intr 1 2"), None);
        let ci = "processor\t: 0\nmodel name\t: Some CPU @ 2.0GHz\n";
        assert_eq!(cpu_model(ci).as_deref(), Some("Some CPU @ 2.0GHz"));
        assert_eq!(mem_total_kib("MemTotal:       25165824 kB\n"), Some(25_165_824));
    }

    #[test]
    fn own_process_is_readable() {
        let t = CpuSource::Process(std::process::id()).seconds();
        assert!(t.is_some_and(|t| t >= 0.0));
        assert!(CpuSource::Softirq.seconds().is_some());
    }

    #[test]
    fn timestamps() {
        assert_eq!(utc_timestamp(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_795_651_200 + 3_723);
        assert_eq!(utc_timestamp(t), "2026-11-26T01:02:03Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(utc_timestamp(leap), "2000-02-29T00:00:00Z");
    }
}
