//! The node the harness runs: its ports, addresses and MACs, its configuration and its
//! Services (see the module doc of `harness`).

use super::*;

/// The host port.
pub const HOST: PortId = PortId(0);
/// The overlay port.
pub const OVERLAY: PortId = PortId(5);
/// The NodePort interface.
pub const NODE_PORT: PortId = PortId(6);
/// Number of ports (0..PORTS).
pub const PORTS: u16 = 7;

/// The gateway address.
pub const GW_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 1);
/// The gateway MAC (default for 10.244.1.1).
pub const GW_MAC: MacAddr = MacAddr([0x02, 0x70, 0x73, 244, 1, 1]);
/// The node's address on the NodePort interface.
pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 1);
/// The NodePort interface's MAC.
pub const NODE_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 1, 1]);
/// An external NodePort client.
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 9);
/// Its MAC.
pub const CLIENT_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 1, 9]);
/// Peer `node-2`'s underlay address.
pub const PEER2: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 2);
/// Peer `node-3`'s underlay address.
pub const PEER3: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 3);
/// A pod on `node-2`, endpoint of `remote`.
pub const REMOTE_POD: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 7);
/// The VNI.
pub const VNI: u32 = 1;
/// The DNS responder's port on the gateway address.
pub const DNS_LISTEN: u16 = 5353;

/// Pod `i` (0..4, A..D): its address.
pub fn pod_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, 1, 2 + i as u8)
}

/// Pod `i`'s MAC (`0a:58` + its address, as the switch assigns them).
pub fn pod_mac(i: usize) -> MacAddr {
    let o = pod_ip(i).octets();
    MacAddr([0x0a, 0x58, o[0], o[1], o[2], o[3]])
}

/// Pod `i`'s port.
pub fn pod_port(i: usize) -> PortId {
    PortId(1 + i as u16)
}

pub(super) const CONFIG: &str = r#"
[node]
name = "fuzz-node"
pod_cidr = "10.244.1.0/24"
[control]
socket = "/nonexistent/podswitch-harness.sock"
[fdb]
max_entries = 16
aging_secs = 300
[ports]
max_ports = 8
[conntrack]
max_entries = 48
tcp_established_secs = 600
udp_secs = 30
udp_assured_secs = 120
[overlay]
underlay_ip = "192.168.0.1"
underlay_mtu = 1500
[[overlay.peers]]
name = "node-2"
ip = "192.168.0.2"
pod_cidr = "10.244.2.0/24"
[[overlay.peers]]
name = "node-3"
ip = "192.168.0.3"
pod_cidr = "10.244.3.0/24"
vtep_mac = "02:76:78:a8:00:03"
"#;

pub(super) fn ep(ip: Ipv4Addr, port: u16) -> Endpoint {
    Endpoint::new(ip, port)
}

/// The Services the harness starts with (see the module doc).
pub fn services() -> Vec<ServiceSpec> {
    let svc = |name: &str, ns: &str, vip: [u8; 4], port, proto, endpoints| ServiceSpec {
        name: name.into(),
        namespace: ns.into(),
        vip: Ipv4Addr::from(vip),
        port,
        proto,
        endpoints,
        algorithm: Algorithm::Maglev,
        session_affinity_secs: None,
        node_port: None,
    };
    let (a, b, c, d) = (pod_ip(0), pod_ip(1), pod_ip(2), pod_ip(3));
    vec![
        ServiceSpec {
            node_port: Some(30_080),
            ..svc(
                "web",
                "default",
                [10, 96, 0, 20],
                80,
                L4Proto::Tcp,
                vec![ep(b, 8080), ep(c, 8080)],
            )
        },
        svc("web", "default", [10, 96, 0, 20], 80, L4Proto::Udp, vec![ep(b, 8080), ep(c, 8080)]),
        svc(
            "kube-dns",
            "kube-system",
            [10, 96, 0, 10],
            53,
            L4Proto::Udp,
            vec![ep(GW_IP, DNS_LISTEN)],
        ),
        svc(
            "kube-dns",
            "kube-system",
            [10, 96, 0, 10],
            53,
            L4Proto::Tcp,
            vec![ep(GW_IP, DNS_LISTEN)],
        ),
        ServiceSpec {
            session_affinity_secs: Some(60),
            algorithm: Algorithm::RoundRobin,
            ..svc(
                "sticky",
                "default",
                [10, 96, 0, 30],
                443,
                L4Proto::Tcp,
                vec![ep(a, 8443), ep(d, 8443)],
            )
        },
        ServiceSpec {
            algorithm: Algorithm::Random,
            ..svc("loop", "default", [10, 96, 0, 41], 7000, L4Proto::Udp, vec![ep(a, 7000)])
        },
        svc("remote", "default", [10, 96, 0, 50], 8080, L4Proto::Tcp, vec![ep(REMOTE_POD, 8080)]),
        svc(
            "empty",
            "default",
            [10, 96, 0, 60],
            80,
            L4Proto::Tcp,
            vec![
                Endpoint { ready: false, ..ep(b, 80) },
                Endpoint { terminating: true, ..ep(c, 80) },
            ],
        ),
        ServiceSpec {
            node_port: Some(30_053),
            ..svc("dns-np", "default", [10, 96, 0, 70], 53, L4Proto::Udp, vec![ep(c, 53)])
        },
    ]
}
