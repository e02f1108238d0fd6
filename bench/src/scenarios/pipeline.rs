//! In-memory pipeline micro-benchmarks: the switch's stages over prepared frames, no I/O, one
//! thread, so the figure is the pipeline's own cost per packet on one core. Frames are copied
//! into the batch as a receive would, and the output plan is built as before a transmit.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use vswitch::cidr::Ipv4Cidr;
use vswitch::config::Config;
use vswitch::packet::{Action, Batch};
use vswitch::pipeline::output::TxPlan;
use vswitch::pipeline::Pipeline;
use vswitch::port::PortId;
use vswitch::stats::PortCounters;
use vswitch::tables::fdb::FdbKey;
use vswitch::wire::MacAddr;

use super::Ctx;
use crate::results::{Better, ColumnStatus, Scenario};

/// Flow counts measured (distinct source/destination MAC pairs).
pub const FLOWS: [usize; 3] = [1, 1_000, 100_000];

/// A locally administered MAC for flow `i` on side `side`.
fn mac(side: u8, i: usize) -> MacAddr {
    let b = (i as u32).to_be_bytes();
    MacAddr([0x0a, 0x58 + side, b[0], b[1], b[2], b[3]])
}

/// A 60-byte Ethernet/IPv4/UDP frame (64 bytes on the wire) from flow `i`'s source to its
/// destination.
fn frame(i: usize) -> Vec<u8> {
    let b = etherparse::PacketBuilder::ethernet2(mac(0, i).0, mac(1, i).0)
        .ipv4([10, 244, 1, 2], [10, 244, 1, 3], 64)
        .udp(40_000 + (i % 20_000) as u16, 5201);
    let mut v = Vec::with_capacity(60);
    b.write(&mut v, &[0u8; 18]).expect("writing to a Vec");
    v
}

/// Result of one L2 forwarding measurement.
#[derive(Debug, Clone, Copy)]
pub struct L2Result {
    /// Packets through the pipeline.
    pub packets: u64,
    /// Packets forwarded to the expected port.
    pub forwarded: u64,
    /// Time taken.
    pub elapsed: Duration,
}

impl L2Result {
    /// Millions of packets per second.
    pub fn mpps(&self) -> f64 {
        self.packets as f64 / self.elapsed.as_secs_f64().max(1e-9) / 1e6
    }
}

/// Forwards frames of `flows` flows from port 1 to port 2 (all MACs learned beforehand) for
/// about `time`.
pub fn l2_forwarding(flows: usize, time: Duration) -> L2Result {
    let cidr = Ipv4Cidr::new(Ipv4Addr::new(10, 244, 1, 0), 24).expect("valid CIDR");
    let mut config = Config::for_node("bench", cidr, PathBuf::from("/nonexistent"));
    config.fdb.max_entries = 2 * flows + 16;
    let mut pipeline = Pipeline::new(&config);
    let (a, b) = (PortId(1), PortId(2));
    let live = [a, b];
    let now = Instant::now();
    for i in 0..flows {
        pipeline.fdb.learn(FdbKey::new(None, mac(0, i)), a, now);
        pipeline.fdb.learn(FdbKey::new(None, mac(1, i)), b, now);
    }
    let frames: Vec<Vec<u8>> = (0..flows).map(frame).collect();
    let mut counters = vec![PortCounters::default(); 3];
    let mut batch = Batch::new();
    let mut plan = TxPlan::new(config.ports.max_ports);
    let (mut packets, mut forwarded, mut next) = (0u64, 0u64, 0usize);
    let start = Instant::now();
    while start.elapsed() < time {
        for _ in 0..64 {
            batch.clear();
            while !batch.is_full() {
                batch.push_frame(a, &frames[next]);
                next = if next + 1 == flows { 0 } else { next + 1 };
            }
            pipeline.run(&mut batch, &mut counters, now);
            plan.clear();
            plan.build(&batch, &live);
            packets += batch.len() as u64;
            forwarded +=
                batch.packets().iter().filter(|p| p.meta.action == Action::Forward(b)).count()
                    as u64;
        }
    }
    L2Result { packets, forwarded, elapsed: start.elapsed() }
}

/// Runs the micro-benchmarks.
pub fn run(ctx: &Ctx) -> Scenario {
    let mut sc = Scenario::new(
        "pipeline",
        "In-memory pipeline micro-benchmarks (no I/O, one core)",
        "Prepared 64-byte frames copied into 32-frame batches, run through every stage \
         (classify, learn, ARP, gateway, L2 forward) and the output plan, on one thread; all \
         MACs learned beforehand; flows are distinct source/destination MAC pairs.",
    );
    sc.column("podswitch", "podswitch pipeline", ColumnStatus::Measured);
    sc.notes.push(
        "VXLAN encapsulation/decapsulation and NAT on established flows are not measured yet: \
         the overlay (issue 6) and Service NAT (issue 7) do not exist in podswitch so far."
            .into(),
    );
    let time = if ctx.quick { Duration::from_millis(300) } else { Duration::from_secs(2) };
    for round in 0..ctx.runs {
        for flows in FLOWS {
            if ctx.stopped() {
                return sc;
            }
            eprintln!("  round {}/{}: L2 forwarding, {flows} flows", round + 1, ctx.runs);
            let r = l2_forwarding(flows, time);
            if r.forwarded != r.packets {
                sc.fail(
                    "podswitch",
                    format!(
                        "{} of {} packets were not forwarded to the expected port",
                        r.packets - r.forwarded,
                        r.packets
                    ),
                );
                return sc;
            }
            sc.metric(&format!("L2 forwarding, {flows} flows"), "Mpps", Better::Higher)
                .push("podswitch", r.mpps());
        }
    }
    sc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_frame_is_forwarded_to_the_learned_port() {
        for flows in [1, 3, 1_000] {
            let r = l2_forwarding(flows, Duration::from_millis(20));
            assert!(r.packets > 0);
            assert_eq!(r.forwarded, r.packets, "{flows} flows");
        }
    }

    #[test]
    fn frames_are_64_bytes_on_the_wire() {
        assert_eq!(frame(7).len(), 60);
        assert_ne!(mac(0, 1), mac(0, 2));
        assert_ne!(mac(0, 1), mac(1, 1));
    }
}
