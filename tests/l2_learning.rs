//! MAC learning: unknown unicast floods until the destination is learned (a pod's own MAC is
//! known from its attachment), entries age out,
//! a full table stops learning (and floods) without forgetting what it knows, and a station
//! that moves is followed. Every scenario runs with TAP pods and with AF_XDP pods (the
//! `_afxdp` tests), each with two workers (whose MAC tables must agree through their
//! announcements) and with one (`_one_worker`). The stations are test MACs sending a local
//! experimental EtherType, as stations behind a bridge in a pod would: the pods have port
//! security off, which would refuse both (`tests/port_security.rs` covers that).

use std::time::Duration;

use podswitch_tests::topology::PodswitchNode;
use podswitch_tests::*;
use vswitch::control::api::{Reply, Request};
use vswitch::wire::MacAddr;

const EXE: &str = env!("CARGO_BIN_EXE_psw-test-switch");
/// IEEE "local experimental" EtherType: no kernel reacts to it.
const EXPERIMENTAL: u16 = 0x88b5;

fn frame(dst: MacAddr, src: MacAddr) -> Vec<u8> {
    let mut f = eth(dst, src, EXPERIMENTAL);
    f.resize(60, 0xab);
    f
}

fn is_test_frame(f: &[u8], src: MacAddr) -> bool {
    f.len() >= 14 && f[12..14] == EXPERIMENTAL.to_be_bytes() && f[6..12] == src.0
}

/// Sends `frames` from `from` and returns how many each of the `watch` pods saw.
fn send_and_watch(
    n: &PodswitchNode,
    from: usize,
    frames: &[Vec<u8>],
    watch: &[usize],
) -> Vec<usize> {
    let tx = RawSocket::open(&n.pods[from].ns, "eth0").unwrap();
    let sniffers: Vec<RawSocket> =
        watch.iter().map(|i| RawSocket::open(&n.pods[*i].ns, "eth0").unwrap()).collect();
    let src = MacAddr::from_slice(&frames[0][6..12]).unwrap();
    std::thread::scope(|s| {
        let counts: Vec<_> = sniffers
            .iter()
            .map(|sn| {
                s.spawn(move || sn.count_for(Duration::from_millis(800), |f| is_test_frame(f, src)))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(150));
        for f in frames {
            tx.send(f).unwrap();
        }
        counts.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn fdb_port_of(n: &PodswitchNode, mac: MacAddr) -> Option<String> {
    fdb(n).entries.into_iter().find(|e| e.mac == mac).map(|e| e.port)
}

fn flood_until_learned(kind: PortAddKind, workers: usize) {
    let n = node_unchecked_kind(EXE, 3, kind, |c| c.worker.count = workers);
    let (x, y) = (test_mac(1), test_mac(2));
    let before = port_stats(&n, "pod1").unknown_unicast;
    assert_eq!(send_and_watch(&n, 0, &[frame(y, x)], &[1, 2]), vec![1, 1], "flooded to both");
    assert_eq!(port_stats(&n, "pod1").unknown_unicast, before + 1);
    assert_eq!(fdb_port_of(&n, x).as_deref(), Some("pod1"), "source learned");
    // y answers from pod2: only pod1 gets it, and y is learned.
    assert_eq!(send_and_watch(&n, 1, &[frame(x, y)], &[0, 2]), vec![1, 0]);
    assert_eq!(fdb_port_of(&n, y).as_deref(), Some("pod2"));
    // Now x -> y is unicast to pod2 only.
    assert_eq!(send_and_watch(&n, 0, &[frame(y, x)], &[1, 2]), vec![1, 0]);
    assert_eq!(port_stats(&n, "pod1").unknown_unicast, before + 1, "no new unknown unicast");
}

/// A pod that has sent nothing (a UDP sink, a server before its first answer) is known by
/// the MAC the switch gave it: frames to it are not flooded to the others. Here the pods'
/// IPv6 is turned off (no more autoconfiguration frames), the MAC table flushed, and the
/// switch puts the pods' MACs back at its next aging sweep (once a second).
fn pod_macs_known_from_attach(kind: PortAddKind, workers: usize) {
    let n = node_unchecked_kind(EXE, 3, kind, |c| c.worker.count = workers);
    let pod2 = n.pods[1].mac;
    assert_eq!(fdb_port_of(&n, pod2).as_deref(), Some("pod2"), "known from the start");
    for p in &n.pods {
        p.ns.run(|| std::fs::write("/proc/sys/net/ipv6/conf/all/disable_ipv6", "1"))
            .unwrap()
            .unwrap();
    }
    std::thread::sleep(Duration::from_millis(100));
    match n.switch.call(&Request::FdbFlush(Default::default())).unwrap() {
        Reply::Flushed { .. } => {}
        other => panic!("{other:?}"),
    }
    assert!(
        wait_until(Duration::from_secs(3), || fdb_port_of(&n, pod2).as_deref() == Some("pod2")),
        "pod2's MAC not put back: {:?}",
        fdb(&n).entries
    );
    let before = port_stats(&n, "pod1").unknown_unicast;
    let f = frame(n.pods[1].mac, test_mac(20));
    assert_eq!(send_and_watch(&n, 0, &[f], &[1, 2]), vec![1, 0], "to pod2 only");
    assert_eq!(port_stats(&n, "pod1").unknown_unicast, before);
}

fn age_out(kind: PortAddKind, workers: usize) {
    let n = node_unchecked_kind(EXE, 2, kind, |c| {
        c.fdb.aging = Duration::from_secs(2);
        c.worker.count = workers;
    });
    let x = test_mac(10);
    send_and_watch(&n, 0, &[frame(test_mac(11), x)], &[1]);
    assert_eq!(fdb_port_of(&n, x).as_deref(), Some("pod1"));
    assert!(
        wait_until(Duration::from_secs(8), || fdb_port_of(&n, x).is_none()),
        "x never aged out"
    );
    // The sweep (once a second) then removes it for good.
    assert!(
        wait_until(Duration::from_secs(3), || fdb(&n).counters.aged >= 1),
        "{:?}",
        fdb(&n).counters
    );
    assert_eq!(fdb(&n).aging_secs, 2);
    // Traffic to an aged-out station is flooded again.
    assert_eq!(send_and_watch(&n, 1, &[frame(x, test_mac(12))], &[0]), vec![1]);
}

fn full_table(kind: PortAddKind, workers: usize) {
    let n = node_unchecked_kind(EXE, 3, kind, |c| {
        c.fdb.max_entries = 8;
        c.worker.count = workers;
    });
    // Let the pods' own MACs be learned first.
    ping_ok(&n.pods[1].ns, n.pods[2].ip);
    let frames: Vec<Vec<u8>> = (100..130).map(|i| frame(test_mac(999), test_mac(i))).collect();
    let tx = RawSocket::open(&n.pods[0].ns, "eth0").unwrap();
    for f in &frames {
        tx.send(f).unwrap();
    }
    assert!(wait_until(Duration::from_secs(3), || fdb(&n).counters.learn_limit_hits > 0));
    let f = fdb(&n);
    assert!(f.size <= 8, "limit respected: {}", f.size);
    assert!(f.counters.learn_limit_hits >= 20, "{:?}", f.counters);
    // A station that was not learned gets its traffic flooded.
    let unlearned = test_mac(129);
    assert!(fdb_port_of(&n, unlearned).is_none());
    assert_eq!(send_and_watch(&n, 1, &[frame(unlearned, test_mac(500))], &[0, 2]), vec![1, 1]);
    // Stations known before the flood still work.
    ping_ok(&n.pods[1].ns, n.pods[2].ip);
    assert_eq!(fdb_port_of(&n, n.pods[1].mac).as_deref(), Some("pod2"));
}

fn station_moves(kind: PortAddKind, workers: usize) {
    let n = node_unchecked_kind(EXE, 3, kind, |c| c.worker.count = workers);
    let x = test_mac(42);
    // Learning happens on the worker after the frame is sent: wait for it (bounded).
    let learned_on = |port: &str| {
        wait_until(Duration::from_secs(3), || fdb_port_of(&n, x).as_deref() == Some(port))
    };
    send_and_watch(&n, 0, &[frame(test_mac(43), x)], &[]);
    assert!(learned_on("pod1"), "x on pod1: {:?}", fdb_port_of(&n, x));
    let moves = fdb(&n).counters.moves;
    send_and_watch(&n, 1, &[frame(test_mac(43), x)], &[]);
    assert!(learned_on("pod2"), "x moved to pod2: {:?}", fdb_port_of(&n, x));
    assert_eq!(fdb(&n).counters.moves, moves + 1);
    // Traffic to x now goes to pod2 only.
    assert_eq!(send_and_watch(&n, 2, &[frame(x, test_mac(44))], &[0, 1]), vec![0, 1]);
}

/// Each scenario for both port kinds and for two workers and one.
macro_rules! matrix {
    ($scenario:ident: $tap:ident, $afxdp:ident, $tap1:ident, $afxdp1:ident) => {
        #[test]
        fn $tap() {
            require_root!();
            $scenario(PortAddKind::Tap, 2);
        }

        #[test]
        fn $afxdp() {
            require_root!();
            $scenario(PortAddKind::Afxdp, 2);
        }

        #[test]
        fn $tap1() {
            require_root!();
            $scenario(PortAddKind::Tap, 1);
        }

        #[test]
        fn $afxdp1() {
            require_root!();
            $scenario(PortAddKind::Afxdp, 1);
        }
    };
}

matrix!(flood_until_learned:
    unknown_unicast_is_flooded_until_learned,
    unknown_unicast_is_flooded_until_learned_afxdp,
    unknown_unicast_is_flooded_until_learned_one_worker,
    unknown_unicast_is_flooded_until_learned_afxdp_one_worker);

matrix!(pod_macs_known_from_attach:
    a_silent_pod_is_reached_without_flooding,
    a_silent_pod_is_reached_without_flooding_afxdp,
    a_silent_pod_is_reached_without_flooding_one_worker,
    a_silent_pod_is_reached_without_flooding_afxdp_one_worker);

matrix!(age_out:
    entries_age_out_after_the_configured_time,
    entries_age_out_after_the_configured_time_afxdp,
    entries_age_out_after_the_configured_time_one_worker,
    entries_age_out_after_the_configured_time_afxdp_one_worker);

matrix!(full_table:
    a_full_table_stops_learning_floods_and_keeps_known_stations,
    a_full_table_stops_learning_floods_and_keeps_known_stations_afxdp,
    a_full_table_stops_learning_floods_and_keeps_known_stations_one_worker,
    a_full_table_stops_learning_floods_and_keeps_known_stations_afxdp_one_worker);

matrix!(station_moves:
    a_station_that_moves_is_followed,
    a_station_that_moves_is_followed_afxdp,
    a_station_that_moves_is_followed_one_worker,
    a_station_that_moves_is_followed_afxdp_one_worker);
