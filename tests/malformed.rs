//! Malformed frames written into a pod's interface are dropped and counted by reason on its
//! port, never forwarded, and the switch keeps forwarding good traffic.
//!
//! Frames shorter than an Ethernet header cannot be sent from a pod at all (the kernel's
//! AF_PACKET refuses them), so the shortest here is a header-only frame; the sub-header runts
//! are covered by the classify stage's unit and property tests.

use std::time::Duration;

use podswitch_tests::*;
use vswitch::wire::MacAddr;

const EXE: &str = env!("CARGO_BIN_EXE_psw-test-switch");

#[test]
fn malformed_frames_are_counted_by_reason_and_not_forwarded() {
    require_root!();
    let n = node(EXE, 2);
    let (a, b) = (&n.pods[0], &n.pods[1]);
    ping_ok(&a.ns, b.ip); // both MACs learned: a forwarded frame would be unicast to pod2
    let src = test_mac(7);
    let good_ip = ipv4_udp(a.ip, b.ip, b"0123456789");
    let with = |ethertype: u16, body: &[u8]| {
        let mut f = eth(b.mac, src, ethertype);
        f.extend_from_slice(body);
        f
    };
    let mut cases: Vec<(&str, Vec<u8>)> = vec![("ipv4_bad_header", eth(b.mac, src, 0x0800))];
    let mut ihl = good_ip.clone();
    ihl[0] = 0x43;
    cases.push(("ipv4_bad_header", with(0x0800, &ihl)));
    let mut version = good_ip.clone();
    version[0] = 0x55;
    cases.push(("ipv4_bad_header", with(0x0800, &version)));
    cases.push(("ipv4_bad_header", with(0x0800, &good_ip[..12])));
    let mut long = good_ip.clone();
    long[2..4].copy_from_slice(&1000u16.to_be_bytes());
    cases.push(("ipv4_bad_length", with(0x0800, &long)));
    let mut short = good_ip.clone();
    short[2..4].copy_from_slice(&12u16.to_be_bytes());
    cases.push(("ipv4_bad_length", with(0x0800, &short)));
    let mut udp_len = good_ip.clone();
    udp_len[24..26].copy_from_slice(&500u16.to_be_bytes());
    cases.push(("l4_truncated", with(0x0800, &udp_len)));
    let mut cut_udp = good_ip[..24].to_vec();
    cut_udp[2..4].copy_from_slice(&24u16.to_be_bytes());
    cases.push(("l4_truncated", with(0x0800, &cut_udp)));
    cases.push(("vlan_truncated", with(0x8100, &[0x00])));
    cases.push(("arp_malformed", with(0x0806, &[0, 1, 8, 0, 6, 4, 0, 1, 1, 2])));
    cases.push((
        "arp_malformed",
        with(
            0x0806,
            &[0, 6, 8, 0, 6, 4, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        ),
    ));
    cases.push(("ipv6_bad_header", with(0x86dd, &[0x60, 0, 0, 0, 0, 8])));
    let mut mc = eth(b.mac, MacAddr([0x01, 0x00, 0x5e, 0, 0, 1]), 0x0800);
    mc.extend_from_slice(&good_ip);
    cases.push(("src_mac_multicast", mc));

    let tx = RawSocket::open(&a.ns, "eth0").unwrap();
    let sniffer = RawSocket::open(&b.ns, "eth0").unwrap();
    let seen = std::thread::scope(|s| {
        let seen = s.spawn(|| {
            sniffer.count_for(Duration::from_millis(1500), |f| {
                f.len() >= 12 && (f[6..12] == src.0 || f[6] & 1 == 1)
            })
        });
        std::thread::sleep(Duration::from_millis(150));
        for (_, f) in &cases {
            tx.send(f).unwrap();
        }
        // Good traffic keeps flowing meanwhile.
        ping_ok(&a.ns, b.ip);
        seen.join().unwrap()
    });
    assert_eq!(seen, 0, "a malformed frame reached pod2");
    let stats = port_stats(&n, "pod1");
    let mut expected = std::collections::BTreeMap::<String, u64>::new();
    for (reason, _) in &cases {
        *expected.entry(reason.to_string()).or_default() += 1;
    }
    assert_eq!(stats.drops, expected, "drops by reason on pod1");
    ping_ok(&b.ns, a.ip);
}
