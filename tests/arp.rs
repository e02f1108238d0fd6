//! The switch answers ARP for the gateway and for known pods from its own tables, so those
//! requests never reach the other pods; requests for unknown addresses are flooded.

use std::net::Ipv4Addr;
use std::time::Duration;

use podswitch_tests::*;
use vswitch::wire::MacAddr;

const EXE: &str = env!("CARGO_BIN_EXE_psw-test-switch");

fn is_arp_for(frame: &[u8], target: Ipv4Addr) -> bool {
    frame.len() >= 42 && frame[12..14] == [0x08, 0x06] && frame[38..42] == target.octets()
}

fn arp_request(src: MacAddr, sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut f = eth(MacAddr::BROADCAST, src, 0x0806);
    f.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&sender.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target.octets());
    f
}

#[test]
fn gateway_arp_is_answered_with_the_gateway_mac() {
    require_root!();
    let n = node(EXE, 1);
    let p = &n.pods[0];
    ping_ok(&p.ns, n.gateway());
    assert_eq!(arp_cache_entry(&p.ns, n.gateway()), Some(n.config.node.gateway_mac));
    assert!(port_stats(&n, "pod1").arp_replies >= 1);
}

#[test]
fn arp_for_a_known_pod_is_answered_by_the_switch_and_not_flooded() {
    require_root!();
    let n = node(EXE, 3);
    let (a, b, c) = (&n.pods[0], &n.pods[1], &n.pods[2]);
    let sniffer = RawSocket::open(&c.ns, "eth0").unwrap();
    std::thread::scope(|s| {
        let seen =
            s.spawn(|| sniffer.count_for(Duration::from_millis(1500), |f| is_arp_for(f, b.ip)));
        std::thread::sleep(Duration::from_millis(200));
        ping_ok(&a.ns, b.ip);
        assert_eq!(seen.join().unwrap(), 0, "pod3 saw the ARP request for pod2");
    });
    assert_eq!(
        arp_cache_entry(&a.ns, b.ip),
        Some(b.mac),
        "pod1 learned pod2's MAC from the switch"
    );
    assert!(port_stats(&n, "pod1").arp_replies >= 1);
}

#[test]
fn arp_for_an_unknown_address_is_flooded() {
    require_root!();
    let n = node(EXE, 3);
    let (a, c) = (&n.pods[0], &n.pods[2]);
    let unknown = Ipv4Addr::new(10, 244, 1, 200);
    let tx = RawSocket::open(&a.ns, "eth0").unwrap();
    let sniffer = RawSocket::open(&c.ns, "eth0").unwrap();
    std::thread::scope(|s| {
        let seen =
            s.spawn(|| sniffer.count_for(Duration::from_millis(1000), |f| is_arp_for(f, unknown)));
        std::thread::sleep(Duration::from_millis(200));
        for _ in 0..3 {
            tx.send(&arp_request(a.mac, a.ip, unknown)).unwrap();
        }
        assert_eq!(seen.join().unwrap(), 3, "every request for the unknown address is flooded");
    });
}
