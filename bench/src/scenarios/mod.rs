//! The scenarios: each builds its topologies, runs the same traffic through every peer in the
//! same run (rounds interleaved, so drift on a shared machine hits every peer alike), and
//! fills a [`Scenario`] with every run's values.

pub mod control_plane;
pub mod cross_node;
pub mod pipeline;
pub mod same_node;
pub mod service;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::peers::Peer;
use crate::results::{ColumnStatus, Scenario};

/// What every scenario is given.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// Runs per measurement (at least 3 for a report).
    pub runs: usize,
    /// Shortened measurements.
    pub quick: bool,
    /// The peers asked for.
    pub peers: Vec<Peer>,
    /// Set on Ctrl-C: stop at the next step, clean up, write what was measured.
    pub interrupted: Arc<AtomicBool>,
}

impl Ctx {
    /// Whether to stop.
    pub fn stopped(&self) -> bool {
        self.interrupted.load(Ordering::SeqCst)
    }

    /// Seconds of one bulk measurement.
    pub fn bulk_time(&self) -> Duration {
        if self.quick {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(4)
        }
    }

    /// Round trips of one latency measurement.
    pub fn round_trips(&self) -> u64 {
        if self.quick {
            2_000
        } else {
            20_000
        }
    }

    /// Whether `peer` was asked for.
    pub fn wants(&self, peer: Peer) -> bool {
        self.peers.contains(&peer)
    }
}

/// Adds a column per peer asked for: `skip` gives the reason a peer cannot be measured in
/// this scenario (or `None`).
pub fn add_peer_columns(
    sc: &mut Scenario,
    ctx: &Ctx,
    labels: &[(Peer, &str)],
    skip: impl Fn(Peer) -> Option<String>,
) {
    for &(peer, label) in labels {
        if !ctx.wants(peer) {
            continue;
        }
        let status = match skip(peer) {
            Some(reason) => ColumnStatus::Skipped { reason },
            None => ColumnStatus::Measured,
        };
        sc.column(peer.id(), label, status);
    }
}

/// Microseconds of a nanosecond histogram value.
pub fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

/// Points of a CDF from a histogram of nanoseconds: (µs, quantile), denser in the tail where
/// the peers differ most.
pub fn cdf_points(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    if h.is_empty() {
        return Vec::new();
    }
    let mut qs: Vec<f64> = (0..=90).map(|i| f64::from(i) / 100.0).collect();
    qs.extend((1..=9).map(|i| 0.90 + f64::from(i) / 100.0));
    qs.extend((1..=9).map(|i| 0.99 + f64::from(i) / 1000.0));
    qs.extend([0.9995, 0.9999, 1.0]);
    qs.into_iter().map(|q| (us(h.value_at_quantile(q)), q)).collect()
}

/// The error text of an I/O error with the step it happened in.
pub fn step_error(step: &str, e: &std::io::Error) -> String {
    format!("{step}: {e}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cdf_is_monotonic_and_ends_at_one() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 1_000_000_000, 3).unwrap();
        for v in 1..=10_000u64 {
            h.record(v * 100).unwrap();
        }
        let p = cdf_points(&h);
        assert!(p.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 < w[1].1));
        assert_eq!(p.last().unwrap().1, 1.0);
        assert!((p.last().unwrap().0 - 1000.0).abs() < 1.0);
        assert!(cdf_points(&Histogram::<u64>::new(3).unwrap()).is_empty());
    }
}
