//! Pods reach each other, the gateway and the node, and the node reaches them: real frames
//! through the switch between real namespaces.

use std::time::Duration;

use podswitch_tests::traffic::{self, Endpoint};
use podswitch_tests::*;

const EXE: &str = env!("CARGO_BIN_EXE_psw-test-switch");

#[test]
fn pods_ping_each_other_and_the_gateway() {
    require_root!();
    let n = node(EXE, 3);
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
fn tcp_100_mb_between_pods_arrives_intact() {
    require_root!();
    let n = node(EXE, 2);
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
fn node_reaches_pods_and_pods_reach_the_node_through_the_host_port() {
    require_root!();
    let n = node(EXE, 2);
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
    // Node -> pod TCP.
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
fn a_pod_with_a_32_address_is_routed_by_the_gateway() {
    require_root!();
    let mut n = node(EXE, 1);
    n.add_pod("routed", Some("10.244.1.77/32".parse().unwrap())).unwrap();
    let (a, r) = (&n.pods[0], &n.pods[1]);
    ping_ok(&r.ns, a.ip);
    ping_ok(&a.ns, r.ip);
    let routed = port_stats(&n, "routed").routed;
    assert!(routed >= 3, "frames from the /32 pod went through the gateway: {routed}");
}
