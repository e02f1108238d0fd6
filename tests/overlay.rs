//! The overlay: pods on different nodes reach each other through VXLAN over a shared underlay
//! (a bridge in an underlay namespace), podswitch to podswitch and podswitch to a node built
//! the kernel's way (bridge + `vxlan` device, as Flannel programs it).

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::Duration;

use podswitch_lab::topology::Pod;
use podswitch_tests::topology::{
    node_pod_cidr, podswitch_peer, underlay_ip, KernelVxlanNode, PodswitchNode, Underlay,
};
use podswitch_tests::traffic::{self, Endpoint};
use podswitch_tests::*;
use vswitch::config::default_gateway_mac;
use vswitch::control::api::{
    ErrorKind, PeerAddArgs, PeerDelArgs, PortAddArgs, PortAddKind, PortInfo, Reply, Request,
};
use vswitch::control::client::ClientError;

const EXE: &str = env!("CARGO_BIN_EXE_psw-test-switch");

fn overlay_node(ul: &mut Underlay, n: u8, pods: usize, peers: &[u8]) -> PodswitchNode {
    let peers: Vec<_> = peers.iter().map(|&m| podswitch_peer(m)).collect();
    // Two workers (the topology's default is one per node): the overlay's queue per worker
    // and steering across them are what these tests exercise.
    PodswitchNode::build_on_underlay(EXE.as_ref(), "pso", ul, n, pods, &peers, 1500, None, |c| {
        c.worker.count = 2
    })
    .unwrap_or_else(|e| panic!("node {n}: {e}"))
}

fn underlay() -> Underlay {
    Underlay::build("pso").expect("underlay")
}

fn ping_fails(ns: &vswitch::sys::netns::NetNs, dst: Ipv4Addr) -> bool {
    let r = traffic::ping(ns, dst, 2, Duration::from_millis(50), Duration::from_millis(400));
    r.map_or(true, |r| r.received == 0)
}

/// [`overlay_node`] whose pods get ports of `kind`.
fn overlay_node_kind(
    ul: &mut Underlay,
    n: u8,
    pods: usize,
    peers: &[u8],
    kind: PortAddKind,
) -> PodswitchNode {
    let mut node = overlay_node(ul, n, 0, peers);
    node.pod_kind = kind;
    for i in 1..=pods {
        node.add_pod(&format!("pod{i}"), None).unwrap_or_else(|e| panic!("node {n} pod{i}: {e}"));
    }
    node
}

#[test]
fn three_nodes_every_pod_reaches_every_pod() {
    require_root!();
    three_nodes(PortAddKind::Tap);
}

#[test]
fn three_nodes_every_pod_reaches_every_pod_afxdp() {
    require_root!();
    three_nodes(PortAddKind::Afxdp);
}

fn three_nodes(kind: PortAddKind) {
    let mut ul = underlay();
    let nodes = [
        overlay_node_kind(&mut ul, 1, 2, &[2, 3], kind),
        overlay_node_kind(&mut ul, 2, 2, &[1, 3], kind),
        overlay_node_kind(&mut ul, 3, 2, &[1, 2], kind),
    ];
    let pods: Vec<&Pod> = nodes.iter().flat_map(|n| &n.pods).collect();
    for a in &pods {
        for b in &pods {
            if a.ip != b.ip {
                ping_ok(&a.ns, b.ip);
            }
        }
    }
    // The node itself reaches remote pods through its host port and the overlay, and remote
    // pods reach the node's gateway address.
    ping_ok(&nodes[0].ns, nodes[1].pods[0].ip);
    ping_ok(&nodes[2].pods[1].ns, nodes[0].gateway());
    let (from, to) = (&nodes[0].pods[0], &nodes[2].pods[1]);
    let r = traffic::tcp_transfer_verified(
        Endpoint { ns: &to.ns, addr: to.ip },
        &from.ns,
        100_000_000,
        Duration::from_secs(240),
    )
    .expect("verified cross-node transfer");
    assert_eq!(r.bytes, 100_000_000);
    let s = port_stats(&nodes[0], "overlay");
    // (The ACKs coming back are few: the receiver's TAP gets long super-frames.)
    assert!(s.tx_packets > 60_000 && s.rx_packets > 100, "went through the overlay: {s:?}");
    assert_eq!(s.drops.values().sum::<u64>(), 0, "{s:?}");
    // A TAP pod's TSO super-frames left as UDP GSO sends, several datagrams each (an AF_XDP
    // pod has no TSO: its frames go one by one).
    if kind == PortAddKind::Tap {
        assert!(s.tx_gso_sends > 0 && s.tx_packets > 4 * s.tx_gso_sends, "UDP GSO used: {s:?}");
    }
    eprintln!("overlay: {} datagrams, {} UDP GSO sends", s.tx_packets, s.tx_gso_sends);
    let s = port_stats(&nodes[2], "overlay");
    assert_eq!(s.drops.values().sum::<u64>(), 0, "{s:?}");
    // The receiving pod's TAP got the decapsulated segments merged into super-frames (an
    // AF_XDP port sends frame by frame).
    let s = port_stats(&nodes[2], &to.name);
    if kind == PortAddKind::Tap {
        assert!(s.tx_gro_frames > 0 && s.tx_gro_merged >= 2 * s.tx_gro_frames, "{s:?}");
    }
    eprintln!(
        "{}: {} frames written, {} of them merged from {} segments",
        to.name, s.tx_packets, s.tx_gro_frames, s.tx_gro_merged
    );
}

/// One counter of `/proc/net/{file}` (`snmp` or `netstat`; `group` "Udp", "IpExt", ...) as
/// `ns` sees it.
fn net_counter(ns: &vswitch::sys::netns::NetNs, file: &str, group: &str, field: &str) -> u64 {
    let path = format!("/proc/thread-self/net/{file}");
    let text =
        ns.run(|| std::fs::read_to_string(path)).expect("enter the namespace").expect("read snmp");
    let prefix = format!("{group}:");
    let mut lines = text.lines().filter(|l| l.starts_with(&prefix));
    let (names, values) = (lines.next().expect("header"), lines.next().expect("values"));
    let i = names.split_whitespace().position(|n| n == field).expect("field");
    values.split_whitespace().nth(i).and_then(|v| v.parse().ok()).expect("value")
}

/// Pings `dst` from `ns` `count` times, 2 ms apart, all answered.
fn pings(ns: &vswitch::sys::netns::NetNs, dst: Ipv4Addr, count: u32) {
    let r = traffic::ping(ns, dst, count, Duration::from_millis(2), Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("ping {dst}: {e}"));
    assert_eq!(r.received, r.sent, "ping {dst}: {}/{} replies", r.received, r.sent);
}

/// Two nodes whose switches drive the underlay interface through AF_XDP and one with the
/// UDP-socket underlay: every pod reaches every other, and on the AF_XDP nodes the VXLAN
/// traffic bypasses the kernel's IP and UDP stacks (its counters stand still while the
/// socket node's move).
#[test]
fn an_afxdp_underlay_carries_the_overlay_past_the_kernel_stack() {
    require_root!();
    let mut ul = underlay();
    let node = |ul: &mut Underlay, n: u8, peers: &[u8], xdp: bool| {
        let peers: Vec<_> = peers.iter().map(|&m| podswitch_peer(m)).collect();
        PodswitchNode::build_on_underlay(EXE.as_ref(), "psx", ul, n, 1, &peers, 1500, None, |c| {
            c.worker.count = 2;
            if xdp {
                c.overlay.as_mut().expect("overlay").afxdp_interface = Some("ul0".into());
            }
        })
        .unwrap_or_else(|e| panic!("node {n}: {e}"))
    };
    let nodes = [
        node(&mut ul, 1, &[2, 3], true),
        node(&mut ul, 2, &[1, 3], true),
        node(&mut ul, 3, &[1, 2], false),
    ];
    let overlay_ifname = match nodes[0].switch.call(&Request::PortList).unwrap() {
        Reply::Ports { ports } => ports.into_iter().find(|p| p.name == "overlay").unwrap().ifname,
        other => panic!("{other:?}"),
    };
    assert_eq!(overlay_ifname, "afxdp:ul0");
    let pods: Vec<&Pod> = nodes.iter().flat_map(|n| &n.pods).collect();
    for a in &pods {
        for b in &pods {
            if a.ip != b.ip {
                ping_ok(&a.ns, b.ip);
            }
        }
    }
    // Datagrams the kernel's UDP received, bytes its IP sent (raw sends count only there).
    let counters = |n: &PodswitchNode| {
        (
            net_counter(&n.ns, "snmp", "Udp", "InDatagrams"),
            net_counter(&n.ns, "netstat", "IpExt", "OutOctets"),
        )
    };
    let before: Vec<_> = nodes.iter().map(counters).collect();
    let overlay_before = port_stats(&nodes[0], "overlay");
    pings(&pods[0].ns, pods[1].ip, 200);
    pings(&pods[2].ns, pods[1].ip, 200);
    let after: Vec<_> = nodes.iter().map(counters).collect();
    let overlay_after = port_stats(&nodes[0], "overlay");
    let delta = |i: usize| (after[i].0 - before[i].0, after[i].1 - before[i].1);
    eprintln!("kernel UDP in / IP out bytes per node: {:?}", (0..3).map(delta).collect::<Vec<_>>());
    // The socket node's kernel received and sent the VXLAN of its 200 pings (134 bytes each).
    let (udp_in, ip_out) = delta(2);
    assert!(udp_in >= 200 && ip_out >= 200 * 134, "the counters count: {:?}", delta(2));
    // The AF_XDP nodes' kernels saw (nearly) none of their 400 and 200 datagrams each way.
    for i in [0, 1] {
        let (udp_in, ip_out) = delta(i);
        assert_eq!(udp_in, 0, "node {}: VXLAN reached the kernel's UDP", i + 1);
        assert!(ip_out < 10 * 134, "node {}: {ip_out} bytes left through the kernel", i + 1);
    }
    assert!(overlay_after.tx_packets - overlay_before.tx_packets >= 200, "{overlay_after:?}");
    assert!(overlay_after.rx_packets - overlay_before.rx_packets >= 200, "{overlay_after:?}");
    // Bulk TCP from a TAP pod: its super-frames take the kernel's UDP GSO, the ACKs coming
    // back arrive through AF_XDP; every byte arrives intact.
    let r = traffic::tcp_transfer_verified(
        Endpoint { ns: &pods[1].ns, addr: pods[1].ip },
        &pods[0].ns,
        20_000_000,
        Duration::from_secs(120),
    )
    .expect("verified transfer over the AF_XDP underlay");
    assert_eq!(r.bytes, 20_000_000);
    for n in &nodes {
        let s = port_stats(n, "overlay");
        assert_eq!(s.drops.values().sum::<u64>(), 0, "{s:?}");
        assert_eq!(s.device_drops.values().sum::<u64>(), 0, "{s:?}");
    }
}

/// Two nodes whose underlay interface has one queue per worker: each worker drives its own
/// AF_XDP socket (and kernel-path sockets), and flows spread over both still arrive whole.
#[test]
fn an_afxdp_underlay_with_a_queue_per_worker() {
    require_root!();
    let mut ul = underlay();
    ul.queues = 2;
    let node = |ul: &mut Underlay, n: u8, other: u8| {
        PodswitchNode::build_on_underlay(
            EXE.as_ref(),
            "psq",
            ul,
            n,
            2,
            &[podswitch_peer(other)],
            1500,
            None,
            |c| {
                c.worker.count = 2;
                c.overlay.as_mut().expect("overlay").afxdp_interface = Some("ul0".into());
            },
        )
        .unwrap_or_else(|e| panic!("node {n}: {e}"))
    };
    let nodes = [node(&mut ul, 1, 2), node(&mut ul, 2, 1)];
    for a in &nodes[0].pods {
        for b in &nodes[1].pods {
            ping_ok(&a.ns, b.ip);
            ping_ok(&b.ns, a.ip);
        }
    }
    // Several TCP flows (their outer source ports differ, so the underlay spreads them over
    // both queues), each verified byte for byte.
    for (i, from) in nodes[0].pods.iter().enumerate() {
        let to = &nodes[1].pods[i];
        let r = traffic::tcp_transfer_verified(
            Endpoint { ns: &to.ns, addr: to.ip },
            &from.ns,
            5_000_000,
            Duration::from_secs(120),
        )
        .expect("verified transfer");
        assert_eq!(r.bytes, 5_000_000);
    }
    for n in &nodes {
        let s = port_stats(n, "overlay");
        assert!(s.rx_packets > 0 && s.tx_packets > 0, "{s:?}");
        assert_eq!(s.drops.values().sum::<u64>(), 0, "{s:?}");
    }
}

#[test]
fn podswitch_and_a_kernel_vxlan_node_exchange_traffic_both_ways() {
    require_root!();
    let mut ul = underlay();
    let kernel =
        KernelVxlanNode::build("psok", &mut ul, underlay_ip(2), node_pod_cidr(2), 1, 1, 1500)
            .expect("kernel node");
    kernel.complete_checksums().expect("ethtool");
    let mut peer = podswitch_peer(2);
    peer.vtep_mac = kernel.vtep_mac;
    let ps = PodswitchNode::build_on_underlay(
        EXE.as_ref(),
        "pso",
        &mut ul,
        1,
        1,
        &[peer],
        1500,
        None,
        |_| {},
    )
    .expect("podswitch node");
    let gw_mac = default_gateway_mac(ps.gateway());
    kernel.add_peer(underlay_ip(1), node_pod_cidr(1), gw_mac).expect("kernel peer");
    let (p, k) = (&ps.pods[0], &kernel.bridge.pods[0]);
    ping_ok(&p.ns, k.ip);
    ping_ok(&k.ns, p.ip);
    for (from, to) in [(p, k), (k, p)] {
        let r = traffic::tcp_transfer_verified(
            Endpoint { ns: &to.ns, addr: to.ip },
            &from.ns,
            20_000_000,
            Duration::from_secs(120),
        )
        .unwrap_or_else(|e| panic!("{} -> {}: {e}", from.ip, to.ip));
        assert_eq!(r.bytes, 20_000_000);
    }
    let s = port_stats(&ps, "overlay");
    assert_eq!(s.drops.values().sum::<u64>(), 0, "{s:?}\n{}", ps.switch.log_text());
}

fn call(node: &PodswitchNode, req: Request) -> Result<Reply, ClientError> {
    node.switch.call(&req)
}

#[test]
fn peers_added_and_removed_at_runtime_while_other_traffic_flows() {
    require_root!();
    let mut ul = underlay();
    let n1 = overlay_node(&mut ul, 1, 1, &[2]);
    let n2 = overlay_node(&mut ul, 2, 1, &[1]);
    let n3 = overlay_node(&mut ul, 3, 1, &[1]);
    let (p1, p2, p3) = (&n1.pods[0], &n2.pods[0], &n3.pods[0]);
    std::thread::scope(|s| {
        let bulk = s.spawn(|| {
            traffic::tcp_transfer_verified(
                Endpoint { ns: &p2.ns, addr: p2.ip },
                &p1.ns,
                60_000_000,
                Duration::from_secs(120),
            )
        });
        assert!(ping_fails(&p1.ns, p3.ip), "node 3 is not a peer of node 1 yet");
        let add = PeerAddArgs {
            name: "node-3".into(),
            ip: underlay_ip(3),
            pod_cidr: node_pod_cidr(3),
            vtep_mac: None,
        };
        match call(&n1, Request::PeerAdd(add.clone())) {
            Ok(Reply::Peer(p)) => assert_eq!(p.ip, underlay_ip(3)),
            other => panic!("peer add: {other:?}"),
        }
        ping_ok(&p1.ns, p3.ip);
        // A clashing peer is refused with the field named, and changes nothing.
        let clash = PeerAddArgs { name: "node-9".into(), ip: underlay_ip(9), ..add.clone() };
        match call(&n1, Request::PeerAdd(clash)) {
            Err(ClientError::Api(e)) => {
                assert_eq!(e.kind, ErrorKind::InvalidArgument);
                assert_eq!(e.field.as_deref(), Some("args.pod_cidr"), "{e:?}");
            }
            other => panic!("clashing peer: {other:?}"),
        }
        match call(&n1, Request::PeerList) {
            Ok(Reply::Peers { peers }) => {
                let names: Vec<&str> = peers.iter().map(|p| p.name.as_str()).collect();
                assert_eq!(names, ["node-2", "node-3"]);
            }
            other => panic!("peer list: {other:?}"),
        }
        ping_ok(&p1.ns, p3.ip);
        match call(&n1, Request::PeerDel(PeerDelArgs { name: "node-3".into() })) {
            Ok(Reply::Peer(p)) => assert_eq!(p.name, "node-3"),
            other => panic!("peer del: {other:?}"),
        }
        assert!(ping_fails(&p1.ns, p3.ip), "traffic to a removed peer stops");
        let r = bulk.join().expect("bulk thread").expect("bulk transfer intact");
        assert_eq!(r.bytes, 60_000_000);
    });
    let s = port_stats(&n2, "overlay");
    assert_eq!(s.drops.values().sum::<u64>(), 0, "{s:?}\n{}", n2.switch.log_text());
}

fn ip_mtu(sock: &UdpSocket) -> i32 {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `v` and `len` are valid for writes of their sizes for the call.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MTU,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0, "getsockopt IP_MTU: {}", std::io::Error::last_os_error());
    v
}

fn set_pmtu_discovery(sock: &UdpSocket, mode: libc::c_int) {
    // SAFETY: `mode` is a valid c_int for the call.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            (&mode as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
}

#[test]
fn too_big_for_the_overlay_gets_frag_needed_and_tcp_still_completes() {
    require_root!();
    let mut ul = underlay();
    let n1 = overlay_node(&mut ul, 1, 0, &[2]);
    let n2 = overlay_node(&mut ul, 2, 1, &[1]);
    // A pod whose MTU (1500) is larger than the overlay carries (1450).
    let ns = podswitch_lab::topology::netns_with_lo(&podswitch_lab::topology::unique_name("psob"))
        .expect("netns");
    match call(
        &n1,
        Request::PortAdd(PortAddArgs {
            name: "big".into(),
            netns: ns.name().into(),
            ip: None,
            mac: None,
            ifname: None,
            mtu: Some(1500),
            kind: Default::default(),
            port_security: true,
            allow_ips: Vec::new(),
        }),
    ) {
        Ok(Reply::Port(PortInfo { ip: Some(_), .. })) => {}
        other => panic!("port add: {other:?}"),
    }
    // Without DF the switch cannot fragment the packet: dropped and counted. (To an address
    // whose path MTU the pod has not learned yet, or its kernel would fragment first.)
    let plain = ns.run(|| UdpSocket::bind("0.0.0.0:0")).unwrap().unwrap();
    plain.connect(SocketAddrV4::new(Ipv4Addr::new(10, 244, 2, 200), 10)).unwrap();
    set_pmtu_discovery(&plain, libc::IP_PMTUDISC_DONT);
    plain.send(&[0u8; 1472]).unwrap();
    assert!(wait_until(Duration::from_secs(3), || drops(&n1, "big", "overlay_too_big") >= 1));
    // With DF: ICMP "fragmentation needed" with the overlay's MTU, and the pod learns it.
    let sock = ns.run(|| UdpSocket::bind("0.0.0.0:0")).unwrap().unwrap();
    sock.connect(SocketAddrV4::new(n2.pods[0].ip, 9)).unwrap();
    set_pmtu_discovery(&sock, libc::IP_PMTUDISC_DO);
    assert_eq!(ip_mtu(&sock), 1500);
    assert!(
        wait_until(Duration::from_secs(3), || {
            let _ = sock.send(&[0u8; 1472]);
            ip_mtu(&sock) == 1450
        }),
        "the pod learned the overlay MTU from ICMP: {}",
        ip_mtu(&sock)
    );
    assert!(port_stats(&n1, "big").frag_needed >= 1);
    // TCP with the MSS of a 1500-byte MTU still completes, through path MTU discovery.
    let to = &n2.pods[0];
    let r = traffic::tcp_transfer_verified(
        Endpoint { ns: &to.ns, addr: to.ip },
        &ns,
        10_000_000,
        Duration::from_secs(120),
    )
    .expect("TCP through PMTU discovery");
    assert_eq!(r.bytes, 10_000_000);
    // The switch goes before the pod namespace it holds a TAP in.
    drop(n1);
}

fn vxlan(flags: u8, vni: u32, inner: &[u8]) -> Vec<u8> {
    let v = vni.to_be_bytes();
    let mut d = vec![flags, 0, 0, 0, v[1], v[2], v[3], 0];
    d.extend_from_slice(inner);
    d
}

#[test]
fn malformed_vxlan_is_dropped_by_reason_and_forwarding_continues() {
    require_root!();
    let mut ul = underlay();
    let n1 = overlay_node(&mut ul, 1, 1, &[2]);
    let n2 = overlay_node(&mut ul, 2, 1, &[1]);
    let target = SocketAddrV4::new(underlay_ip(1), 4789);
    let pod = n1.pods[0].ip;
    let mut inner = eth(default_gateway_mac(n1.gateway()), test_mac(1), 0x0800);
    inner.extend(ipv4_udp(n2.pods[0].ip, pod, b"hello"));
    let mut arp = eth(default_gateway_mac(n1.gateway()), test_mac(1), 0x0806);
    arp.extend_from_slice(&[0u8; 28]);
    // From the peer's own underlay address: bad in every way but the sender.
    let peer =
        n2.ns.run(|| UdpSocket::bind(SocketAddrV4::new(underlay_ip(2), 0))).unwrap().unwrap();
    for d in
        [vec![0x08, 0, 0], vxlan(0x00, 1, &inner), vxlan(0x08, 7, &inner), vxlan(0x08, 1, &arp)]
    {
        peer.send_to(&d, target).unwrap();
    }
    // From a stranger on the underlay: well-formed, but not a peer.
    ul.add_address(Ipv4Addr::new(192, 168, 0, 250)).unwrap();
    let stranger = ul.ns.run(|| UdpSocket::bind("192.168.0.250:0")).unwrap().unwrap();
    stranger.send_to(&vxlan(0x08, 1, &inner), target).unwrap();
    for reason in [
        "vxlan_malformed",
        "vxlan_bad_flags",
        "vxlan_unknown_vni",
        "vxlan_inner_not_ipv4",
        "vxlan_unknown_peer",
    ] {
        assert!(
            wait_until(Duration::from_secs(3), || drops(&n1, "overlay", reason) == 1),
            "{reason}: {:?}",
            port_stats(&n1, "overlay")
        );
    }
    ping_ok(&n1.pods[0].ns, n2.pods[0].ip);
    ping_ok(&n2.pods[0].ns, n1.pods[0].ip);
}

#[test]
fn outer_source_ports_differ_between_flows_and_df_is_set() {
    require_root!();
    let mut ul = underlay();
    let n1 = overlay_node(&mut ul, 1, 1, &[2]);
    let n2 = overlay_node(&mut ul, 2, 1, &[1]);
    // The underlay end of node 1's veth is the first one plugged in.
    let capture = RawSocket::open(&ul.ns, "port1").expect("capture socket");
    let dst = SocketAddrV4::new(n2.pods[0].ip, 7);
    let socks: Vec<UdpSocket> = (0..16)
        .map(|_| n1.pods[0].ns.run(|| UdpSocket::bind("0.0.0.0:0")).unwrap().unwrap())
        .collect();
    let mut ports = std::collections::BTreeSet::new();
    let mut df_clear = 0;
    std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(200));
            for _ in 0..5 {
                for sock in &socks {
                    let _ = sock.send_to(b"flow", dst);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        capture.each_for(Duration::from_millis(1200), |f| {
            let is_vxlan = f.len() > 50
                && f[12..14] == [0x08, 0x00]
                && f[23] == 17
                && f[26..30] == underlay_ip(1).octets()
                && f[36..38] == 4789u16.to_be_bytes();
            if is_vxlan {
                ports.insert(u16::from_be_bytes([f[34], f[35]]));
                if f[20] & 0x40 == 0 {
                    df_clear += 1;
                }
            }
        });
    });
    assert!(ports.len() >= 8, "16 flows spread over outer source ports: {ports:?}");
    assert!(ports.iter().all(|p| *p >= 49152), "{ports:?}");
    assert_eq!(df_clear, 0, "outer DF is set");

    // TCP super-frames take the UDP GSO path (one socket per outer source port, picked by
    // the inner flow): its datagrams cross the underlay veth whole, with DF set, and 8 flows
    // spread over several source ports.
    let (mut gso_ports, mut big, mut df_clear) = (std::collections::BTreeSet::new(), 0, 0);
    let before = port_stats(&n1, "overlay").tx_gso_sends;
    std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(200));
            let to = Endpoint { ns: &n2.pods[0].ns, addr: n2.pods[0].ip };
            traffic::tcp_throughput(to, &n1.pods[0].ns, 8, Duration::from_millis(800))
                .expect("tcp streams");
        });
        capture.each_for(Duration::from_millis(1500), |f| {
            let is_vxlan = f.len() > 1514
                && f[12..14] == [0x08, 0x00]
                && f[23] == 17
                && f[26..30] == underlay_ip(1).octets()
                && f[36..38] == 4789u16.to_be_bytes();
            if is_vxlan {
                big += 1;
                gso_ports.insert(u16::from_be_bytes([f[34], f[35]]));
                if f[20] & 0x40 == 0 {
                    df_clear += 1;
                }
            }
        });
    });
    let sends = port_stats(&n1, "overlay").tx_gso_sends - before;
    assert!(sends > 0 && big > 0, "UDP GSO datagrams on the underlay: {sends} sends, {big} seen");
    assert!(gso_ports.len() >= 3, "8 TCP flows spread over GSO source ports: {gso_ports:?}");
    assert_eq!(df_clear, 0, "outer DF is set on the GSO path");
}
