//! In-memory pipeline micro-benchmarks: the switch's stages over prepared frames, no I/O, one
//! thread, so the figure is the pipeline's own cost per packet on one core. Frames are copied
//! into the batch as a receive would, and the output plan is built as before a transmit.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use vswitch::cidr::Ipv4Cidr;
use vswitch::config::{Config, OverlayConfig, PeerConfig};
use vswitch::packet::{Action, Batch};
use vswitch::pipeline::port_security::PortPolicy;
use vswitch::pipeline::{Entry, Pipeline};
use vswitch::port::overlay::{outer_headers, OverlayOptions, OUTER_LEN};
use vswitch::port::PortId;
use vswitch::stats::PortCounters;
use vswitch::tables::fdb::FdbKey;
use vswitch::tables::neigh::Neighbor;
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

/// A 60-byte Ethernet/IPv4/UDP frame (64 bytes on the wire) from the one pod on port 1
/// (port security allows a pod one source MAC) to flow `i`'s destination.
fn frame(i: usize) -> Vec<u8> {
    let b = etherparse::PacketBuilder::ethernet2(mac(0, 0).0, mac(1, i).0)
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
    let policy = PortPolicy::new(mac(0, 0), Ipv4Addr::new(10, 244, 1, 2), &[]);
    pipeline.port_security.set(a, Some(policy.expect("no allow-list")));
    let frames: Vec<Vec<u8>> = (0..flows).map(frame).collect();
    drive(
        &mut pipeline,
        &frames,
        a,
        &live,
        now,
        time,
        |_| {},
        |p| p.meta.action == Action::Forward(b),
    )
}

/// Runs `frames` (cycled) into `pipeline` as arriving on `in_port`, in full batches, through
/// every stage and the output plan, for about `time`. `prepare` sees each filled batch first
/// (to set what a port would, such as the tunnel sender); `handled` judges each packet after
/// the pipeline (and may do the work a port would do on transmit).
#[allow(clippy::too_many_arguments)]
fn drive(
    pipeline: &mut Pipeline,
    frames: &[Vec<u8>],
    in_port: PortId,
    live: &[PortId],
    now: Instant,
    time: Duration,
    mut prepare: impl FnMut(&mut Batch),
    mut handled: impl FnMut(&vswitch::packet::Packet) -> bool,
) -> L2Result {
    let mut counters = vec![PortCounters::default(); 4];
    let mut batch = Batch::new();
    let (mut packets, mut forwarded, mut next) = (0u64, 0u64, 0usize);
    let start = Instant::now();
    while start.elapsed() < time {
        for _ in 0..64 {
            batch.clear();
            while !batch.is_full() {
                batch.push_frame(in_port, &frames[next]);
                next = if next + 1 == frames.len() { 0 } else { next + 1 };
            }
            prepare(&mut batch);
            pipeline.run(&mut batch, &mut counters, now, Entry::Port, live);
            packets += batch.len() as u64;
            forwarded += batch.packets().iter().filter(|p| handled(p)).count() as u64;
        }
    }
    L2Result { packets, forwarded, elapsed: start.elapsed() }
}

/// Which overlay direction [`overlay`] measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// A local pod's packets to pods on a peer node: routed, encapsulated (outer headers
    /// built as the overlay port builds them before `sendmmsg`).
    Encap,
    /// VXLAN from a peer: validated, stripped, routed to a local pod.
    Decap,
}

const OVERLAY_PORT: PortId = PortId(3);
const PEER_UNDERLAY: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 2);

/// Address of remote flow `i` (inside the peer's 10.128.0.0/9).
fn remote_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 128, 0, 1)) + i as u32)
}

/// A 64-byte UDP frame of flow `i`.
fn udp_frame(i: usize, src: MacAddr, dst: MacAddr, sip: Ipv4Addr, dip: Ipv4Addr) -> Vec<u8> {
    let b = etherparse::PacketBuilder::ethernet2(src.0, dst.0)
        .ipv4(sip.octets(), dip.octets(), 64)
        .udp(40_000 + (i % 20_000) as u16, 5201);
    let mut v = Vec::with_capacity(60);
    b.write(&mut v, &[0u8; 18]).expect("writing to a Vec");
    v
}

/// Runs `flows` flows through the overlay stages in `dir` for about `time`.
pub fn overlay(dir: Direction, flows: usize, time: Duration) -> L2Result {
    let cidr = Ipv4Cidr::new(Ipv4Addr::new(10, 244, 1, 0), 24).expect("valid CIDR");
    let mut config = Config::for_node("bench", cidr, PathBuf::from("/nonexistent"));
    let peer_cidr = Ipv4Cidr::new(Ipv4Addr::new(10, 128, 0, 0), 9).expect("valid CIDR");
    let peer = PeerConfig::new("node-2", PEER_UNDERLAY, peer_cidr, None).expect("valid peer");
    let local = Ipv4Addr::new(192, 168, 0, 1);
    config.overlay = Some(OverlayConfig {
        underlay_ip: local,
        vni: 1,
        udp_port: 4789,
        underlay_mtu: 1500,
        udp_checksum: false,
        afxdp_interface: None,
        max_peers: 16,
        peers: vec![peer],
    });
    let mut pipeline = Pipeline::new(&config);
    pipeline.gateway.overlay_port = Some(OVERLAY_PORT);
    if let Some(ov) = &mut pipeline.overlay {
        ov.port = Some(OVERLAY_PORT);
    }
    let (pod_port, pod_mac, pod_ip) = (PortId(1), mac(0, 0), Ipv4Addr::new(10, 244, 1, 2));
    pipeline
        .neigh
        .insert(pod_ip, Neighbor { mac: pod_mac, port: pod_port })
        .expect("room for one pod");
    let gw_mac = config.node.gateway_mac;
    let now = Instant::now();
    pipeline.fdb.learn(FdbKey::new(None, pod_mac), pod_port, now);
    let policy = PortPolicy::new(pod_mac, pod_ip, &[]).expect("no allow-list");
    pipeline.port_security.set(pod_port, Some(policy));
    let frames: Vec<Vec<u8>> = (0..flows)
        .map(|i| match dir {
            Direction::Encap => udp_frame(i, pod_mac, gw_mac, pod_ip, remote_ip(i)),
            Direction::Decap => {
                let mut d = vec![0x08, 0, 0, 0, 0, 0, 1, 0];
                d.extend(udp_frame(i, mac(1, 0), gw_mac, remote_ip(i), pod_ip));
                d
            }
        })
        .collect();
    let (in_port, expect) = match dir {
        Direction::Encap => (pod_port, Action::Forward(OVERLAY_PORT)),
        Direction::Decap => (OVERLAY_PORT, Action::Forward(pod_port)),
    };
    let opts = OverlayOptions { local, udp_port: 4789, vni: 1, udp_checksum: false };
    let mut head = [0u8; OUTER_LEN];
    let live = [pod_port, OVERLAY_PORT];
    let prepare = |b: &mut Batch| {
        if dir == Direction::Decap {
            for p in b.packets_mut() {
                p.meta.tunnel = Some(PEER_UNDERLAY);
            }
        }
    };
    let handled = |p: &vswitch::packet::Packet| {
        if p.meta.action != expect {
            return false;
        }
        if let (Direction::Encap, Some(dst)) = (dir, p.meta.tunnel) {
            outer_headers(&mut head, &opts, dst, &[p.data()]);
        }
        true
    };
    let r = drive(&mut pipeline, &frames, in_port, &live, now, time, prepare, handled);
    std::hint::black_box(&head);
    r
}

/// Address of client flow `i` (a /12 of clients, so 100k flows are 100k distinct 5-tuples).
fn client_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 200, 0, 1)) + (i / 50_000) as u32)
}

/// Service NAT on established TCP flows: `flows` connections to a VIP with two endpoints are
/// opened first (their SYNs create the conntrack entries), then their data segments run
/// through every stage for about `time`, each translated to its endpoint.
pub fn nat_established(flows: usize, time: Duration) -> L2Result {
    use vswitch::tables::services::{Algorithm, Endpoint, L4Proto, ServiceSpec};
    let cidr = Ipv4Cidr::new(Ipv4Addr::new(10, 244, 1, 0), 24).expect("valid CIDR");
    let mut config = Config::for_node("bench", cidr, PathBuf::from("/nonexistent"));
    config.conntrack.max_entries = flows + 16;
    // All the flows come from one port: its share is the whole table.
    config.conntrack.max_per_port = Some(flows + 16);
    let mut pipeline = Pipeline::new(&config);
    let (client_port, backend_port) = (PortId(1), PortId(2));
    let backends = [Ipv4Addr::new(10, 244, 1, 10), Ipv4Addr::new(10, 244, 1, 11)];
    for (k, ip) in backends.iter().enumerate() {
        pipeline
            .neigh
            .insert(*ip, Neighbor { mac: mac(1, k), port: backend_port })
            .expect("room for two pods");
    }
    let vip = Ipv4Addr::new(10, 96, 0, 20);
    let spec = ServiceSpec {
        name: "web".into(),
        namespace: "bench".into(),
        vip,
        port: 80,
        proto: L4Proto::Tcp,
        endpoints: backends.iter().map(|ip| Endpoint::new(*ip, 8080)).collect(),
        algorithm: Algorithm::Maglev,
        session_affinity_secs: None,
        node_port: None,
    };
    pipeline.nat.edit_services(|t| t.upsert(spec, config.services.cidr)).expect("a valid Service");
    // The clients are behind one pod that routes them: its allow-list covers their /16.
    let clients = Ipv4Cidr::new(Ipv4Addr::new(10, 200, 0, 0), 16).expect("valid CIDR");
    let policy = PortPolicy::new(mac(0, 0), Ipv4Addr::new(10, 244, 1, 2), &[clients]);
    pipeline.port_security.set(client_port, Some(policy.expect("one entry")));
    let gw_mac = config.node.gateway_mac;
    let segment = |i: usize, flags: u8| {
        let b = etherparse::PacketBuilder::ethernet2(mac(0, 0).0, gw_mac.0)
            .ipv4(client_ip(i).octets(), vip.octets(), 64)
            .tcp(10_000 + (i % 50_000) as u16, 80, 1, 65535);
        let b = if flags == 0x02 { b.syn() } else { b.ack(1) };
        let mut v = Vec::with_capacity(60);
        b.write(&mut v, if flags == 0x02 { &[][..] } else { &[0u8; 6][..] })
            .expect("writing to a Vec");
        v
    };
    let now = Instant::now();
    let mut counters = vec![PortCounters::default(); 4];
    let mut batch = Batch::new();
    for chunk in (0..flows).collect::<Vec<_>>().chunks(32) {
        batch.clear();
        for &i in chunk {
            batch.push_frame(client_port, &segment(i, 0x02));
        }
        pipeline.run(&mut batch, &mut counters, now, Entry::Port, &[]);
    }
    let frames: Vec<Vec<u8>> = (0..flows).map(|i| segment(i, 0x10)).collect();
    let live = [client_port, backend_port];
    drive(
        &mut pipeline,
        &frames,
        client_port,
        &live,
        now,
        time,
        |_| {},
        |p| p.meta.action == Action::Forward(backend_port),
    )
}

/// Runs the micro-benchmarks.
pub fn run(ctx: &Ctx) -> Scenario {
    let mut sc = Scenario::new(
        "pipeline",
        "In-memory pipeline micro-benchmarks (no I/O, one core)",
        "Prepared 64-byte frames copied into 32-frame batches, run through every stage \
         (decap, classify, port security, learn, ARP, gateway with the overlay, L2 forward) \
         and the output plan, on one thread; all MACs learned beforehand; the pod port \
         sending is checked by port security (one source MAC; the NAT clients in its \
         allow-list); L2 flows are distinct destination MACs.",
    );
    sc.column("podswitch", "podswitch pipeline", ColumnStatus::Measured);
    sc.notes.push(
        "VXLAN: flows are distinct remote pod addresses in a peer's 10.128.0.0/9; encap covers \
         routing, TTL and MAC rewrite and building the outer headers, decap covers the VXLAN \
         checks, stripping and routing to the local pod. NAT: TCP data segments of flows \
         already in the conntrack table (one Service, two endpoints), destination rewritten \
         with incremental checksums, then routed to the endpoint."
            .into(),
    );
    let time = if ctx.quick { Duration::from_millis(300) } else { Duration::from_secs(2) };
    type Bench = Box<dyn Fn(usize, Duration) -> L2Result>;
    let benches: [(&str, Bench); 4] = [
        ("L2 forwarding", Box::new(l2_forwarding)),
        ("NAT on established flows", Box::new(nat_established)),
        ("VXLAN encap", Box::new(|f, t| overlay(Direction::Encap, f, t))),
        ("VXLAN decap", Box::new(|f, t| overlay(Direction::Decap, f, t))),
    ];
    for round in 0..ctx.runs {
        for (label, bench) in &benches {
            for flows in FLOWS {
                if ctx.stopped() {
                    return sc;
                }
                eprintln!("  round {}/{}: {label}, {flows} flows", round + 1, ctx.runs);
                let r = bench(flows, time);
                if r.forwarded != r.packets {
                    let lost = r.packets - r.forwarded;
                    let msg = format!(
                        "{label}: {lost} of {} packets not forwarded as expected",
                        r.packets
                    );
                    sc.fail("podswitch", msg);
                    return sc;
                }
                sc.metric(&format!("{label}, {flows} flows"), "Mpps", Better::Higher)
                    .push("podswitch", r.mpps());
            }
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
    fn overlay_directions_forward_every_packet() {
        for dir in [Direction::Encap, Direction::Decap] {
            for flows in [1, 1_000] {
                let r = overlay(dir, flows, Duration::from_millis(20));
                assert!(r.packets > 0);
                assert_eq!(r.forwarded, r.packets, "{dir:?} {flows} flows");
            }
        }
    }

    #[test]
    fn nat_translates_every_established_flow() {
        for flows in [1, 1_000] {
            let r = nat_established(flows, Duration::from_millis(20));
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
