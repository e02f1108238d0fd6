//! The traffic tools against loopback in throwaway namespaces.

use super::*;
use crate::topology::{netns_with_lo, unique_name};

fn lo_ns() -> Option<podswitch_sys::netns::NamedNetNs> {
    if !podswitch_sys::process::is_root() {
        eprintln!("skipped: needs root");
        return None;
    }
    Some(netns_with_lo(&unique_name("pswtt")).unwrap())
}

const LO: Ipv4Addr = Ipv4Addr::LOCALHOST;

#[test]
fn pattern_stream_is_deterministic_and_chunking_independent() {
    let mut a = PatternStream::new(7);
    let mut whole = vec![0u8; 1000];
    a.fill(&mut whole);
    let mut b = PatternStream::new(7);
    let mut pieces = Vec::new();
    for n in [1, 7, 8, 9, 100, 3, 872] {
        let mut p = vec![0u8; n];
        b.fill(&mut p);
        pieces.extend(p);
    }
    assert_eq!(pieces, whole);
    let mut c = PatternStream::new(8);
    let mut other = vec![0u8; 1000];
    c.fill(&mut other);
    assert_ne!(other, whole);
}

#[test]
fn ping_loopback_and_nobody() {
    let Some(ns) = lo_ns() else { return };
    let r = ping(&ns, LO, 3, Duration::from_millis(20), Duration::from_secs(2)).unwrap();
    assert!(r.all_received(), "{r:?}");
    assert_eq!(r.rtts.len(), 3);
    let t = Instant::now();
    let r = ping(
        &ns,
        Ipv4Addr::new(10, 0, 0, 1),
        2,
        Duration::from_millis(20),
        Duration::from_millis(300),
    );
    // No route: either an error at send or no replies, and quickly.
    if let Ok(r) = r {
        assert_eq!(r.received, 0);
    }
    assert!(t.elapsed() < Duration::from_secs(3));
}

#[test]
fn tcp_tools_over_loopback() {
    let Some(ns) = lo_ns() else { return };
    let ep = Endpoint { ns: &ns, addr: LO };
    let r = tcp_transfer_verified(ep, &ns, 8 << 20, Duration::from_secs(30)).unwrap();
    assert_eq!(r.bytes, 8 << 20);
    assert!(r.gbit_per_sec() > 0.0);
    for streams in [1, 2] {
        let t = tcp_throughput(ep, &ns, streams, Duration::from_millis(500)).unwrap();
        assert!(t.bytes > 0 && t.gbit_per_sec() > 0.0, "{t:?}");
    }
    let c = tcp_connect_rate(&[ep], 0, None, &ns, Duration::from_millis(300), 200).unwrap();
    assert!(c.completed > 0 && c.completed + c.failed <= 200, "{c:?}");
    let l = tcp_rr(ep, &ns, 64, 200, Duration::from_secs(10)).unwrap();
    assert_eq!(l.samples, 200);
    assert!(l.min <= l.p50 && l.p50 <= l.p99 && l.p99 <= l.max);
}

#[test]
fn udp_tools_over_loopback() {
    let Some(ns) = lo_ns() else { return };
    let ep = Endpoint { ns: &ns, addr: LO };
    let l = udp_rr(ep, &ns, 64, 300, Duration::from_secs(10)).unwrap();
    assert_eq!(l.samples + l.lost, 300);
    assert!(
        l.min <= l.p50 && l.p50 <= l.p90 && l.p90 <= l.p99 && l.p99 <= l.p999 && l.p999 <= l.max
    );
    let cdf = l.cdf(5);
    assert_eq!(cdf.len(), 5);
    assert!(cdf.windows(2).all(|w| w[0].0 <= w[1].0));
    let f = udp_flood(ep, &ns, PAYLOAD_FOR_64_BYTE_FRAMES, Duration::from_millis(300)).unwrap();
    assert!(f.received > 0 && f.received <= f.sent, "{f:?}");
    assert!((0.0..=1.0).contains(&f.loss()));
}

#[test]
fn every_tool_refuses_the_root_namespace() {
    if !podswitch_sys::process::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let root = NetNs::open("/proc/self/ns/net").unwrap();
    let ep = Endpoint { ns: &root, addr: LO };
    let d = Duration::from_millis(10);
    let denied =
        |r: io::Result<()>| assert_eq!(r.unwrap_err().kind(), io::ErrorKind::PermissionDenied);
    denied(ping(&root, LO, 1, d, d).map(|_| ()));
    denied(tcp_transfer_verified(ep, &root, 1, d).map(|_| ()));
    denied(tcp_throughput(ep, &root, 1, d).map(|_| ()));
    denied(udp_rr(ep, &root, 64, 1, d).map(|_| ()));
    denied(tcp_rr(ep, &root, 64, 1, d).map(|_| ()));
    denied(udp_flood(ep, &root, 18, d).map(|_| ()));
    denied(tcp_connect_rate(&[ep], 0, None, &root, d, 1).map(|_| ()));
}
