//! Pods reach each other, the gateway and the node, and the node reaches them: real frames
//! through the switch between real namespaces. Every scenario runs with TAP pods and with
//! AF_XDP pods (veth pairs; the `_afxdp` tests), and TAP and AF_XDP pods talk to each other.

use std::time::Duration;

use podswitch_tests::traffic::{self, Endpoint};
use podswitch_tests::*;

const EXE: &str = env!("CARGO_BIN_EXE_psw-test-switch");

fn ping_all_pairs_and_the_gateway(kind: PortAddKind) {
    let n = node_kind(EXE, 3, kind);
    for a in &n.pods {
        for b in &n.pods {
            if a.name != b.name {
                ping_ok(&a.ns, b.ip);
            }
        }
        ping_ok(&a.ns, n.gateway());
    }
    // The gateway's echo replies come from the switch itself.
    let replies: u64 = stats(&n).ports.iter().map(|p| p.icmp_echo_replies).sum();
    assert!(replies >= 9, "gateway echo replies counted: {replies}");
}

#[test]
fn pods_ping_each_other_and_the_gateway() {
    require_root!();
    ping_all_pairs_and_the_gateway(PortAddKind::Tap);
}

#[test]
fn pods_ping_each_other_and_the_gateway_afxdp() {
    require_root!();
    ping_all_pairs_and_the_gateway(PortAddKind::Afxdp);
}

fn tcp_100_mb(kind: PortAddKind) {
    let n = node_kind(EXE, 2, kind);
    let (a, b) = (&n.pods[0], &n.pods[1]);
    let r = traffic::tcp_transfer_verified(
        Endpoint { ns: &b.ns, addr: b.ip },
        &a.ns,
        100_000_000,
        Duration::from_secs(240),
    )
    .expect("verified transfer");
    assert_eq!(r.bytes, 100_000_000);
    let s = port_stats(&n, "pod1");
    // Offloads carry it as TCP super-frames, so count bytes, not frames.
    assert!(s.rx_bytes > 100_000_000, "the data went through the switch: {s:?}");
    assert_eq!(s.drops.values().sum::<u64>(), 0, "no drops: {s:?}");
}

#[test]
fn tcp_100_mb_between_pods_arrives_intact() {
    require_root!();
    tcp_100_mb(PortAddKind::Tap);
}

#[test]
fn tcp_100_mb_between_pods_arrives_intact_afxdp() {
    require_root!();
    tcp_100_mb(PortAddKind::Afxdp);
}

fn udp_round_trips(kind: PortAddKind) {
    let n = node_kind(EXE, 2, kind);
    let (a, b) = (&n.pods[0], &n.pods[1]);
    for payload in [18, 1400] {
        let r = traffic::udp_rr(
            Endpoint { ns: &b.ns, addr: b.ip },
            &a.ns,
            payload,
            1000,
            Duration::from_secs(60),
        )
        .expect("UDP request/response");
        assert_eq!((r.samples, r.lost), (1000, 0), "{payload}-byte datagrams: {r:?}");
    }
    let s = port_stats(&n, "pod2");
    assert!(s.rx_packets >= 2000 && s.tx_packets >= 2000, "{s:?}");
    assert_eq!(s.drops.values().sum::<u64>(), 0, "no drops: {s:?}");
    // An AF_XDP port also reports what its socket dropped before the switch saw it.
    if kind == PortAddKind::Afxdp {
        assert_eq!(s.device_drops.get("xsk_rx_ring_full"), Some(&0), "{s:?}");
        assert_eq!(s.device_drops.values().sum::<u64>(), 0, "{s:?}");
    } else {
        assert!(s.device_drops.is_empty(), "{s:?}");
    }
}

#[test]
fn udp_between_pods_loses_nothing() {
    require_root!();
    udp_round_trips(PortAddKind::Tap);
}

#[test]
fn udp_between_pods_loses_nothing_afxdp() {
    require_root!();
    udp_round_trips(PortAddKind::Afxdp);
}

fn node_and_pods_reach_each_other(kind: PortAddKind) {
    let n = node_kind(EXE, 2, kind);
    for p in &n.pods {
        ping_ok(&n.ns, p.ip);
    }
    // Pod -> node: a TCP service bound to the gateway address in the node namespace (the
    // host port carries it, like cni0's address on the kernel path).
    let r = traffic::tcp_transfer_verified(
        Endpoint { ns: &n.ns, addr: n.gateway() },
        &n.pods[0].ns,
        4 << 20,
        Duration::from_secs(60),
    )
    .expect("pod to node");
    assert_eq!(r.bytes, 4 << 20);
    // Node -> pod TCP (for an AF_XDP pod: the host port's super-frames are segmented).
    let r = traffic::tcp_transfer_verified(
        Endpoint { ns: &n.pods[1].ns, addr: n.pods[1].ip },
        &n.ns,
        4 << 20,
        Duration::from_secs(60),
    )
    .expect("node to pod");
    assert_eq!(r.bytes, 4 << 20);
    let host = port_stats(&n, "psw0");
    assert!(host.rx_packets > 0 && host.tx_packets > 0, "{host:?}");
}

#[test]
fn node_reaches_pods_and_pods_reach_the_node_through_the_host_port() {
    require_root!();
    node_and_pods_reach_each_other(PortAddKind::Tap);
}

#[test]
fn node_reaches_pods_and_pods_reach_the_node_through_the_host_port_afxdp() {
    require_root!();
    node_and_pods_reach_each_other(PortAddKind::Afxdp);
}

fn routed_32_pod(kind: PortAddKind) {
    let mut n = node_kind(EXE, 1, kind);
    n.add_pod("routed", Some("10.244.1.77/32".parse().unwrap())).unwrap();
    let (a, r) = (&n.pods[0], &n.pods[1]);
    ping_ok(&r.ns, a.ip);
    ping_ok(&a.ns, r.ip);
    let routed = port_stats(&n, "routed").routed;
    assert!(routed >= 3, "frames from the /32 pod went through the gateway: {routed}");
}

#[test]
fn a_pod_with_a_32_address_is_routed_by_the_gateway() {
    require_root!();
    routed_32_pod(PortAddKind::Tap);
}

#[test]
fn a_pod_with_a_32_address_is_routed_by_the_gateway_afxdp() {
    require_root!();
    routed_32_pod(PortAddKind::Afxdp);
}

#[test]
fn a_tap_pod_and_an_afxdp_pod_exchange_tcp_both_ways() {
    require_root!();
    let mut n = node(EXE, 0);
    n.add_pod_kind("tap", None, PortAddKind::Tap).unwrap();
    n.add_pod_kind("xdp", None, PortAddKind::Afxdp).unwrap();
    let (t, x) = (&n.pods[0], &n.pods[1]);
    ping_ok(&t.ns, x.ip);
    ping_ok(&x.ns, t.ip);
    // TAP -> AF_XDP: the TAP's TCP super-frames are cut into MTU-sized segments.
    let r = traffic::tcp_transfer_verified(
        Endpoint { ns: &x.ns, addr: x.ip },
        &t.ns,
        64 << 20,
        Duration::from_secs(120),
    )
    .expect("TAP pod to AF_XDP pod");
    assert_eq!(r.bytes, 64 << 20);
    let into_xdp = port_stats(&n, "xdp");
    assert!(
        into_xdp.tx_packets > (64 << 20) / 1500,
        "segments, not super-frames, left the AF_XDP port: {into_xdp:?}"
    );
    // AF_XDP -> TAP: plain frames with complete checksums into a TAP.
    let r = traffic::tcp_transfer_verified(
        Endpoint { ns: &t.ns, addr: t.ip },
        &x.ns,
        64 << 20,
        Duration::from_secs(120),
    )
    .expect("AF_XDP pod to TAP pod");
    assert_eq!(r.bytes, 64 << 20);
    for p in ["tap", "xdp"] {
        let s = port_stats(&n, p);
        assert_eq!(s.drops.values().sum::<u64>(), 0, "no drops on {p}: {s:?}");
    }
}

#[test]
fn a_busy_polling_pinned_worker_forwards_like_the_default_one() {
    use vswitch::config::{BusyPoll, Pinning, WorkerConfig};
    require_root!();
    let n = node_with(EXE, 2, |c| {
        c.worker =
            WorkerConfig { count: 1, busy_poll: BusyPoll::Always, pin: Pinning::Cpus(vec![0]) }
    });
    let (a, b) = (&n.pods[0], &n.pods[1]);
    ping_ok(&a.ns, b.ip);
    ping_ok(&b.ns, n.gateway());
    let r = traffic::tcp_rr(
        Endpoint { ns: &b.ns, addr: b.ip },
        &a.ns,
        64,
        200,
        Duration::from_secs(20),
    )
    .expect("request/response");
    assert_eq!(r.samples, 200);
    assert!(!n.switch.log_text().contains("could not pin"), "{}", n.switch.log_text());
}
