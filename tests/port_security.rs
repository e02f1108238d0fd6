//! Port security: what a hostile pod (any container has `CAP_NET_RAW`) can no longer do to the
//! others or to the node. Each scenario sends real frames from an attacker pod's `eth0`
//! through an `AF_PACKET` socket and watches the victims, with TAP pods and with AF_XDP pods:
//! MAC theft, ARP poisoning, a rogue IPv6 router advertisement, forged source addresses;
//! and the allow-list letting a listed source through.

use std::net::{Ipv4Addr, Ipv6Addr, UdpSocket};
use std::time::{Duration, Instant};

use podswitch_tests::topology::PodswitchNode;
use podswitch_tests::*;
use vswitch::cidr::Ipv4Cidr;
use vswitch::control::api::{Reply, Request};
use vswitch::sys::netns::NetNs;
use vswitch::wire::MacAddr;

const EXE: &str = env!("CARGO_BIN_EXE_psw-test-switch");

fn fdb_port_of(n: &PodswitchNode, mac: MacAddr) -> Option<String> {
    fdb(n).entries.into_iter().find(|e| e.mac == mac).map(|e| e.port)
}

fn udp_frame(dst: MacAddr, src: MacAddr, sip: Ipv4Addr, dip: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
    let mut f = eth(dst, src, 0x0800);
    f.extend(ipv4_udp(sip, dip, payload));
    f
}

fn carries(f: &[u8], marker: &[u8]) -> bool {
    f.windows(marker.len()).any(|w| w == marker)
}

/// Frames from `src` whose payload holds `marker`, counted on each of `watch` while `send`
/// runs (sniffers open first, a bounded window).
fn watch_while(
    n: &PodswitchNode,
    watch: &[usize],
    src: MacAddr,
    marker: &[u8],
    send: impl FnOnce(),
) -> Vec<usize> {
    let sniffers: Vec<RawSocket> =
        watch.iter().map(|i| RawSocket::open(&n.pods[*i].ns, "eth0").unwrap()).collect();
    std::thread::scope(|s| {
        let counts: Vec<_> = sniffers
            .iter()
            .map(|sn| {
                s.spawn(move || {
                    sn.count_for(Duration::from_millis(900), |f| {
                        f.len() > 12 && f[6..12] == src.0 && carries(f, marker)
                    })
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(150));
        send();
        counts.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// The attacker (pod1) sends with the victim's (pod2's) MAC; afterwards pod3's frames to the
/// victim still reach the victim and never the attacker, and the MAC stays on the victim.
fn mac_theft(kind: PortAddKind) {
    let n = node_kind(EXE, 3, kind);
    let (a, b, c) = (&n.pods[0], &n.pods[1], &n.pods[2]);
    let tx = RawSocket::open(&a.ns, "eth0").unwrap();
    let stolen = udp_frame(c.mac, b.mac, b.ip, c.ip, b"psw-theft");
    let at_pod3 = watch_while(&n, &[2], b.mac, b"psw-theft", || {
        for _ in 0..5 {
            tx.send(&stolen).unwrap();
        }
    });
    assert_eq!(at_pod3, vec![0], "the attacker's frames with the victim's MAC were delivered");
    // Where learning would have moved the MAC (bounded wait: the workers announce moves).
    wait_until(Duration::from_secs(2), || fdb_port_of(&n, b.mac).as_deref() != Some("pod2"));
    assert_eq!(fdb_port_of(&n, b.mac).as_deref(), Some("pod2"), "the victim's MAC moved");
    let from_c = RawSocket::open(&c.ns, "eth0").unwrap();
    let to_victim = udp_frame(b.mac, c.mac, c.ip, b.ip, b"psw-for-victim");
    let seen = watch_while(&n, &[0, 1], c.mac, b"psw-for-victim", || {
        for _ in 0..5 {
            from_c.send(&to_victim).unwrap();
        }
    });
    assert_eq!(seen, vec![0, 5], "frames to the victim: (attacker, victim)");
    assert_eq!(drops(&n, "pod1", "src_mac_spoofed"), 5);
}

#[test]
fn mac_theft_tap() {
    require_root!();
    mac_theft(PortAddKind::Tap);
}

#[test]
fn mac_theft_afxdp() {
    require_root!();
    mac_theft(PortAddKind::Afxdp);
}

#[allow(clippy::too_many_arguments)]
fn arp_frame(
    dst: MacAddr,
    src: MacAddr,
    op: u16,
    sha: MacAddr,
    spa: Ipv4Addr,
    tha: MacAddr,
    tpa: Ipv4Addr,
) -> Vec<u8> {
    let mut f = eth(dst, src, 0x0806);
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4]);
    f.extend_from_slice(&op.to_be_bytes());
    f.extend_from_slice(&sha.0);
    f.extend_from_slice(&spa.octets());
    f.extend_from_slice(&tha.0);
    f.extend_from_slice(&tpa.octets());
    f.resize(60, 0);
    f
}

/// The attacker (pod1) claims the victim's (pod2's) address in a gratuitous ARP, a reply to
/// pod3 and a request to pod3; pod3's neighbour entry for the victim stays the victim's MAC
/// and its traffic to the victim keeps flowing.
fn arp_poisoning(kind: PortAddKind) {
    let n = node_kind(EXE, 3, kind);
    let (a, b, c) = (&n.pods[0], &n.pods[1], &n.pods[2]);
    ping_ok(&c.ns, b.ip);
    assert_eq!(arp_cache_entry(&c.ns, b.ip), Some(b.mac));
    // Past the kernel's neighbour lock time (1 s), when an ARP from anyone would overwrite it.
    std::thread::sleep(Duration::from_millis(1200));
    let bcast = MacAddr::BROADCAST;
    let lies = [
        arp_frame(bcast, a.mac, 1, a.mac, b.ip, MacAddr::ZERO, b.ip),
        arp_frame(c.mac, a.mac, 2, a.mac, b.ip, c.mac, c.ip),
        arp_frame(bcast, a.mac, 1, a.mac, b.ip, MacAddr::ZERO, c.ip),
    ];
    let tx = RawSocket::open(&a.ns, "eth0").unwrap();
    let sniffer = RawSocket::open(&c.ns, "eth0").unwrap();
    let is_lie = |f: &[u8]| f.len() >= 32 && f[12..14] == [8, 6] && f[22..28] == a.mac.0;
    let seen = std::thread::scope(|s| {
        let seen = s.spawn(|| sniffer.count_for(Duration::from_millis(1500), is_lie));
        std::thread::sleep(Duration::from_millis(150));
        for _ in 0..4 {
            for f in &lies {
                tx.send(f).unwrap();
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        seen.join().unwrap()
    });
    assert_eq!(seen, 0, "pod3 heard the attacker's ARP");
    assert_eq!(arp_cache_entry(&c.ns, b.ip), Some(b.mac), "pod3's entry for pod2 was poisoned");
    ping_ok(&c.ns, b.ip);
    assert_eq!(arp_cache_entry(&c.ns, b.ip), Some(b.mac));
    assert_eq!(drops(&n, "pod1", "arp_spoofed"), 12);
}

#[test]
fn arp_poisoning_tap() {
    require_root!();
    arp_poisoning(PortAddKind::Tap);
}

#[test]
fn arp_poisoning_afxdp() {
    require_root!();
    arp_poisoning(PortAddKind::Afxdp);
}

/// The attacker's prefix (documentation range).
const RA_PREFIX: [u8; 8] = [0x20, 0x01, 0x0d, 0xb8, 0x00, 0x51, 0x00, 0x00];

/// The link-local address a kernel derives from `mac` (EUI-64).
fn link_local(mac: MacAddr) -> Ipv6Addr {
    let m = mac.0;
    Ipv6Addr::from([
        0xfe,
        0x80,
        0,
        0,
        0,
        0,
        0,
        0,
        m[0] ^ 2,
        m[1],
        m[2],
        0xff,
        0xfe,
        m[3],
        m[4],
        m[5],
    ])
}

/// A router advertisement from `mac`'s link-local address to all nodes: default router for
/// 30 minutes, with an on-link, autonomous (SLAAC) prefix `RA_PREFIX`/64.
fn router_advert(mac: MacAddr) -> Vec<u8> {
    let src = link_local(mac);
    let dst: Ipv6Addr = "ff02::1".parse().unwrap();
    let mut msg = vec![134, 0, 0, 0, 64, 0];
    msg.extend_from_slice(&1800u16.to_be_bytes());
    msg.extend_from_slice(&[0; 8]);
    msg.extend_from_slice(&[3, 4, 64, 0xc0]);
    msg.extend_from_slice(&86_400u32.to_be_bytes());
    msg.extend_from_slice(&14_400u32.to_be_bytes());
    msg.extend_from_slice(&[0; 4]);
    msg.extend_from_slice(&RA_PREFIX);
    msg.extend_from_slice(&[0; 8]);
    msg.extend_from_slice(&[1, 1]);
    msg.extend_from_slice(&mac.0);
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 58]);
    pseudo.extend_from_slice(&msg);
    let csum = vswitch::wire::checksum::checksum(&pseudo);
    msg[2..4].copy_from_slice(&csum.to_be_bytes());
    let mut f = eth(MacAddr([0x33, 0x33, 0, 0, 0, 1]), mac, 0x86dd);
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    f.extend_from_slice(&[58, 255]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(&msg);
    f
}

/// What an RA would have left in `ns`: addresses in `RA_PREFIX` and IPv6 default routes
/// (lines of `if_inet6` and `ipv6_route`).
fn ra_traces(ns: &NetNs) -> Vec<String> {
    let read = |file: &str| {
        let path = format!("/proc/thread-self/net/{file}");
        ns.run(move || std::fs::read_to_string(path)).unwrap().unwrap_or_default()
    };
    let prefix: String = RA_PREFIX[..6].iter().map(|b| format!("{b:02x}")).collect();
    let mut found: Vec<String> =
        read("if_inet6").lines().filter(|l| l.starts_with(&prefix)).map(String::from).collect();
    found.extend(
        read("ipv6_route")
            .lines()
            .filter(|l| {
                let c: Vec<&str> = l.split_whitespace().collect();
                let default =
                    c.first() == Some(&"0".repeat(32).as_str()) && c.get(1) == Some(&"00");
                (default && c.last() != Some(&"lo")) || l.starts_with(&prefix)
            })
            .map(String::from),
    );
    found
}

/// The attacker (pod1) advertises itself as a router with a SLAAC prefix; no other pod and
/// not the node (where psw0 lives) gets a default route or an address from it.
fn router_advert_from_a_pod(kind: PortAddKind) {
    let n = node_kind(EXE, 3, kind);
    let victims: Vec<&NetNs> = vec![&n.pods[1].ns, &n.pods[2].ns, &n.ns];
    for ns in &victims {
        assert_eq!(ra_traces(ns), Vec::<String>::new(), "traces before the RA");
    }
    let tx = RawSocket::open(&n.pods[0].ns, "eth0").unwrap();
    let ra = router_advert(n.pods[0].mac);
    for _ in 0..3 {
        tx.send(&ra).unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    // The kernel handles an RA at once; watch for 2 s all the same (bounded).
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        for (i, ns) in victims.iter().enumerate() {
            let t = ra_traces(ns);
            assert!(t.is_empty(), "the RA took effect in victim {i} (pod2, pod3, node): {t:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(drops(&n, "pod1", "router_advert"), 3);
}

#[test]
fn router_advert_from_a_pod_tap() {
    require_root!();
    router_advert_from_a_pod(PortAddKind::Tap);
}

#[test]
fn router_advert_from_a_pod_afxdp() {
    require_root!();
    router_advert_from_a_pod(PortAddKind::Afxdp);
}

/// A UDP socket bound to `ip:port` inside `ns`.
fn listener(ns: &NetNs, ip: Ipv4Addr, port: u16) -> UdpSocket {
    let s = ns.run(move || UdpSocket::bind((ip, port))).unwrap().unwrap();
    s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    s
}

/// The payloads `sock` receives within 1 s (bounded).
fn received(sock: &UdpSocket) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while Instant::now() < deadline {
        if let Ok((len, _)) = sock.recv_from(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..len]).into_owned());
        }
    }
    got.sort();
    got
}

/// The destination port of [`ipv4_udp`]'s datagrams.
const PORT: u16 = 5678;

/// The attacker (pod1) sends UDP to a listener in pod3 and one in the node namespace from
/// another pod's address, the gateway's and an outside one: none delivered, each counted; its
/// datagram from its own address reaches both.
fn forged_source_ips(kind: PortAddKind) {
    let n = node_kind(EXE, 3, kind);
    let (a, b, c) = (&n.pods[0], &n.pods[1], &n.pods[2]);
    let (gw, gw_mac) = (n.gateway(), n.config.node.gateway_mac);
    let at_pod3 = listener(&c.ns, c.ip, PORT);
    let at_node = listener(&n.ns, gw, PORT);
    let tx = RawSocket::open(&a.ns, "eth0").unwrap();
    let outside = Ipv4Addr::new(203, 0, 113, 9);
    let mut forged = 0;
    for (dst_mac, dst) in [(c.mac, c.ip), (gw_mac, gw)] {
        for (name, src) in [("pod", b.ip), ("gateway", gw), ("outside", outside)] {
            tx.send(&udp_frame(dst_mac, a.mac, src, dst, format!("forged-{name}").as_bytes()))
                .unwrap();
            forged += 1;
        }
        tx.send(&udp_frame(dst_mac, a.mac, a.ip, dst, b"own")).unwrap();
    }
    assert_eq!(received(&at_pod3), vec!["own"], "delivered to pod3");
    assert_eq!(received(&at_node), vec!["own"], "delivered to the node");
    assert_eq!(drops(&n, "pod1", "src_ip_spoofed"), forged);
}

#[test]
fn forged_source_ips_tap() {
    require_root!();
    forged_source_ips(PortAddKind::Tap);
}

#[test]
fn forged_source_ips_afxdp() {
    require_root!();
    forged_source_ips(PortAddKind::Afxdp);
}

/// A pod added with an allow-list (it routes 192.0.2.0/24) may send from those addresses,
/// not from others; `port list` shows the list.
fn allow_list(kind: PortAddKind) {
    let mut n = node_kind(EXE, 1, kind);
    let routed: Ipv4Cidr = "192.0.2.0/24".parse().unwrap();
    n.add_pod_secured("router", None, kind, Some(vec![routed])).unwrap();
    let (c, r) = (&n.pods[0], &n.pods[1]);
    let at_pod1 = listener(&c.ns, c.ip, PORT);
    let tx = RawSocket::open(&r.ns, "eth0").unwrap();
    for (src, text) in [
        (Ipv4Addr::new(192, 0, 2, 7), "listed"),
        (Ipv4Addr::new(198, 51, 100, 7), "unlisted"),
        (r.ip, "own"),
    ] {
        tx.send(&udp_frame(c.mac, r.mac, src, c.ip, text.as_bytes())).unwrap();
    }
    assert_eq!(received(&at_pod1), vec!["listed", "own"]);
    assert_eq!(drops(&n, "router", "src_ip_spoofed"), 1);
    let Ok(Reply::Ports { ports }) = n.switch.call(&Request::PortList) else { panic!("port list") };
    let shown = |name: &str| {
        let p = ports.iter().find(|p| p.name == name).unwrap();
        (p.port_security, p.allow_ips.clone())
    };
    assert_eq!(shown("router"), (true, vec![routed]));
    assert_eq!(shown("pod1"), (true, vec![]));
}

#[test]
fn allow_list_lets_a_listed_source_through_tap() {
    require_root!();
    allow_list(PortAddKind::Tap);
}

#[test]
fn allow_list_lets_a_listed_source_through_afxdp() {
    require_root!();
    allow_list(PortAddKind::Afxdp);
}
