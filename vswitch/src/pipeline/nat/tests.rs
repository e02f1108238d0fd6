use std::net::Ipv4Addr;
use std::time::Instant;

use etherparse::{NetSlice, SlicedPacket, TransportSlice};

use crate::config::Config;
use crate::packet::{Action, Batch};
use crate::pipeline::gateway::NodePortPath;
use crate::pipeline::testutil::*;
use crate::pipeline::Pipeline;
use crate::port::PortId;
use crate::stats::{DropReason, PortCounters};
use crate::tables::neigh::Neighbor;
use crate::tables::services::{Algorithm, Endpoint, L4Proto, ServiceSpec};
use crate::wire::MacAddr;

const NODE_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 1);
const NODE_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 1, 1]);
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 9);
const CLIENT_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 1, 9]);
const NP: PortId = PortId(3);

fn pipeline() -> Pipeline {
    let cfg = Config::for_node("n", "10.244.1.0/24".parse().unwrap(), "/tmp/x".into());
    let mut p = Pipeline::new(&cfg);
    p.gateway.host_port = Some(PortId(0));
    p.gateway.node_port = Some(NodePortPath { port: NP, ip: NODE_IP, mac: NODE_MAC });
    p.neigh.insert(IP_B, Neighbor { mac: MAC_B, port: PortId(2) }).unwrap();
    let spec = ServiceSpec {
        name: "web".into(),
        namespace: "default".into(),
        vip: Ipv4Addr::new(10, 96, 0, 20),
        port: 80,
        proto: L4Proto::Udp,
        endpoints: vec![Endpoint {
            ip: IP_B,
            port: 8080,
            ready: true,
            terminating: false,
            weight: 1,
        }],
        algorithm: Algorithm::Maglev,
        session_affinity_secs: None,
        node_port: Some(30_080),
    };
    p.nat.edit_services(|t| t.upsert(spec, "10.96.0.0/12".parse().unwrap())).unwrap();
    p
}

/// Runs one frame through the pipeline: its decision and the frame as it leaves.
fn run(p: &mut Pipeline, port: PortId, frame: &[u8], c: &mut [PortCounters]) -> (Action, Vec<u8>) {
    let mut batch = Batch::new();
    batch.push_frame(port, frame);
    p.run(&mut batch, c, Instant::now(), crate::pipeline::Entry::Port, &[]);
    let pkt = &batch.packets()[0];
    (pkt.meta.action, pkt.data().to_vec())
}

/// (src, sport, dst, dport) of an IPv4/UDP frame, after checking both checksums.
fn udp_view(frame: &[u8]) -> (Ipv4Addr, u16, Ipv4Addr, u16) {
    let s = SlicedPacket::from_ethernet(frame).unwrap();
    let Some(NetSlice::Ipv4(ip)) = s.net else { panic!("not IPv4") };
    let h = ip.header().to_header();
    assert_eq!(h.header_checksum, h.calc_header_checksum(), "IPv4 header checksum");
    let Some(TransportSlice::Udp(u)) = s.transport else { panic!("not UDP") };
    let want = u.to_header().calc_checksum_ipv4(&h, u.payload()).unwrap();
    assert_eq!(u.checksum(), want, "UDP checksum");
    (h.source.into(), u.source_port(), h.destination.into(), u.destination_port())
}

/// `frame` (Ethernet + option-less IPv4) as two fragments with IP id `id`, split `at`
/// bytes (a multiple of 8) into the IPv4 payload.
fn fragments(frame: &[u8], id: u16, at: usize) -> (Vec<u8>, Vec<u8>) {
    let (head, payload) = frame.split_at(34);
    let piece = |bytes: &[u8], more: bool, offset: usize| {
        let mut f = head.to_vec();
        f.extend_from_slice(bytes);
        let mut ip = crate::wire::Ipv4Packet::new_unchecked(&mut f[14..]);
        ip.set_total_len(20 + bytes.len() as u16);
        ip.set_ident(id);
        ip.set_dont_frag(false);
        ip.set_frag(more, offset as u16);
        ip.fill_checksum();
        f
    };
    (piece(&payload[..at], true, 0), piece(&payload[at..], false, at))
}

/// The UDP checksum of the datagram the two fragments reassemble to is right.
fn reassembled_udp_checksum_ok(first: &[u8], later: &[u8]) -> bool {
    let mut udp = first[34..].to_vec();
    udp.extend_from_slice(&later[34..]);
    let (src, dst) = (&first[26..30], &first[30..34]);
    let mut sum: u32 = 17 + udp.len() as u32;
    for w in src.chunks(2).chain(dst.chunks(2)).chain(udp.chunks(2)) {
        sum += u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum == 0xffff
}

#[test]
fn later_fragments_follow_their_first_fragments_translation_both_ways() {
    let mut p = pipeline();
    p.neigh.insert(IP_A, Neighbor { mac: MAC_A, port: PortId(1) }).unwrap();
    let mut c = vec![PortCounters::default(); 4];
    let vip = Ipv4Addr::new(10, 96, 0, 20);
    let payload: Vec<u8> = (0..100u8).collect();
    let q = udp_frame(MAC_A, GW_MAC, IP_A, vip, 5353, 80, &payload);
    let (first, later) = fragments(&q, 0x77, 48);
    // Out of order: a later fragment to a VIP whose first was not seen is dropped.
    let (action, _) = run(&mut p, PortId(1), &later, &mut c);
    assert_eq!(action, Action::Drop(DropReason::FragUntracked));
    let (action, out_first) = run(&mut p, PortId(1), &first, &mut c);
    assert_eq!(action, Action::Forward(PortId(2)));
    assert_eq!(p.nat.frags.len(), 1);
    let (action, out_later) = run(&mut p, PortId(1), &later, &mut c);
    assert_eq!(action, Action::Forward(PortId(2)), "routed like its first");
    assert_eq!(&out_later[30..34], &IP_B.octets(), "to the same endpoint");
    assert_eq!(&out_later[..6], &MAC_B.0);
    let ip = etherparse::Ipv4HeaderSlice::from_slice(&out_later[14..]).unwrap().to_header();
    assert_eq!(ip.header_checksum, ip.calc_header_checksum());
    assert!(reassembled_udp_checksum_ok(&out_first, &out_later));
    assert!(p.nat.frags.is_empty(), "the last fragment ends the entry");
    assert_eq!(c[1].drops[DropReason::FragUntracked as usize], 1);
    // The endpoint's fragmented answer leaves from the VIP, every fragment of it.
    let r = udp_frame(MAC_B, GW_MAC, IP_B, IP_A, 8080, 5353, &payload);
    let (first, later) = fragments(&r, 0x99, 48);
    let (_, out_first) = run(&mut p, PortId(2), &first, &mut c);
    let (action, out_later) = run(&mut p, PortId(2), &later, &mut c);
    assert_eq!(action, Action::Forward(PortId(1)));
    assert_eq!(&out_later[26..30], &vip.octets());
    assert!(reassembled_udp_checksum_ok(&out_first, &out_later));
    // Fragments of traffic that is not translated pass as they are, untracked.
    let pod = udp_frame(MAC_B, GW_MAC, IP_B, IP_A, 7, 7, &payload);
    let (first, later) = fragments(&pod, 0x55, 48);
    run(&mut p, PortId(2), &first, &mut c);
    assert!(p.nat.frags.is_empty());
    let (action, out) = run(&mut p, PortId(2), &later, &mut c);
    assert_eq!((action, &out[26..30]), (Action::Forward(PortId(1)), &IP_B.octets()[..]));
}

#[test]
fn node_port_flows_are_translated_both_ways_and_replies_leave_by_the_node_port() {
    let mut p = pipeline();
    let mut c = vec![PortCounters::default(); 4];
    let q = udp_frame(CLIENT_MAC, NODE_MAC, CLIENT_IP, NODE_IP, 5555, 30_080, b"query");
    let (action, out) = run(&mut p, NP, &q, &mut c);
    assert_eq!(action, Action::Forward(PortId(2)), "routed to the endpoint's port");
    let (src, sport, dst, dport) = udp_view(&out);
    assert_eq!((dst, dport), (IP_B, 8080));
    assert_eq!(src, GW_IP, "source NAT to the gateway, so the reply comes back here");
    assert!(sport >= super::NODE_PORT_SNAT_FIRST, "{sport}");
    assert_eq!(&out[..6], &MAC_B.0, "addressed to the endpoint");
    let r = udp_frame(MAC_B, GW_MAC, IP_B, GW_IP, 8080, sport, b"answer");
    let (action, out) = run(&mut p, PortId(2), &r, &mut c);
    assert_eq!(action, Action::Forward(NP), "the reply leaves by the node-port interface");
    assert_eq!(udp_view(&out), (NODE_IP, 30_080, CLIENT_IP, 5555));
    assert_eq!(&out[..6], &CLIENT_MAC.0, "to the MAC the client's packets came from");
    assert_eq!(&out[6..12], &NODE_MAC.0);
    // A second packet of the flow takes the same translation.
    let (_, out) = run(&mut p, NP, &q, &mut c);
    assert_eq!(udp_view(&out), (GW_IP, sport, IP_B, 8080));
    assert_eq!(p.nat.conntrack.len(), 1);
}

#[test]
fn icmp_errors_about_node_port_flows_reach_the_client_from_the_node_address() {
    use etherparse::{icmpv4::DestUnreachableHeader, Icmpv4Type, PacketBuilder};
    let mut p = pipeline();
    let mut c = vec![PortCounters::default(); 4];
    let q = udp_frame(CLIENT_MAC, NODE_MAC, CLIENT_IP, NODE_IP, 5555, 30_080, b"query");
    let (_, out) = run(&mut p, NP, &q, &mut c);
    let (_, sport, _, _) = udp_view(&out);
    // The endpoint's kernel answers "port unreachable", quoting what it got: the IPv4
    // header and 8 bytes of UDP, gateway:sport -> endpoint:8080.
    let quoted = &out[14..14 + 28];
    let b = PacketBuilder::ethernet2(MAC_B.0, GW_MAC.0)
        .ipv4(IP_B.octets(), GW_IP.octets(), 64)
        .icmpv4(Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::Port));
    let mut err = Vec::new();
    b.write(&mut err, quoted).unwrap();
    let (action, out) = run(&mut p, PortId(2), &err, &mut c);
    assert_eq!(action, Action::Forward(NP), "out of the node-port interface");
    assert_eq!(&out[..6], &CLIENT_MAC.0);
    let s = SlicedPacket::from_ethernet(&out).unwrap();
    let Some(NetSlice::Ipv4(ip)) = s.net else { panic!("not IPv4") };
    let h = ip.header().to_header();
    assert_eq!(h.header_checksum, h.calc_header_checksum());
    assert_eq!((h.source, h.destination), (NODE_IP.octets(), CLIENT_IP.octets()));
    let Some(TransportSlice::Icmpv4(icmp)) = s.transport else { panic!("not ICMP") };
    let want = icmp.icmp_type().calc_checksum(icmp.payload());
    assert_eq!(icmp.checksum(), want, "ICMP checksum");
    let inner = icmp.payload();
    assert_eq!(&inner[12..16], &CLIENT_IP.octets(), "quoted source: the client");
    assert_eq!(&inner[16..20], &NODE_IP.octets(), "quoted destination: the node");
    assert_eq!(&inner[20..22], &5555u16.to_be_bytes());
    assert_eq!(&inner[22..24], &30_080u16.to_be_bytes());
    let qh = etherparse::Ipv4HeaderSlice::from_slice(&inner[..20]).unwrap().to_header();
    assert_eq!(qh.header_checksum, qh.calc_header_checksum(), "quoted header checksum");
    assert_ne!(sport, 5555);
}

/// An ICMP destination unreachable from `MAC_B`/`IP_B` (the endpoint) to the gateway,
/// whose data is `quote` as given: any IHL, any length.
fn icmp_error_quoting(quote: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&GW_MAC.0);
    f.extend_from_slice(&MAC_B.0);
    f.extend_from_slice(&[0x08, 0x00]);
    let total = (20 + 8 + quote.len()) as u16;
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[8] = 64;
    ip[9] = 1;
    ip[12..16].copy_from_slice(&IP_B.octets());
    ip[16..20].copy_from_slice(&IP_A.octets());
    let c = crate::wire::checksum::checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&[3, 3, 0, 0, 0, 0, 0, 0]);
    f.extend_from_slice(quote);
    f
}

#[test]
fn icmp_errors_with_any_quoted_ihl_or_truncation_are_survived_with_conntrack_populated() {
    let mut p = pipeline();
    let mut c = vec![PortCounters::default(); 4];
    p.neigh.insert(IP_A, Neighbor { mac: MAC_A, port: PortId(1) }).unwrap();
    let vip = Ipv4Addr::new(10, 96, 0, 20);
    let q = udp_frame(MAC_A, GW_MAC, IP_A, vip, 4000, 80, b"query");
    let (action, out) = run(&mut p, PortId(1), &q, &mut c);
    assert_eq!(action, Action::Forward(PortId(2)));
    assert_eq!(p.nat.conntrack.len(), 1, "a tracked flow: the state the crash needed");
    // What the endpoint got, quoted as a kernel would: header and 8 bytes of UDP.
    let good = out[14..14 + 28].to_vec();
    for ihl in 0..16u8 {
        for cut in 0..=good.len() + 40 {
            let mut quote = good.clone();
            quote[0] = 0x40 | ihl;
            quote.resize(cut, 0);
            let f = icmp_error_quoting(&quote);
            let _ = run(&mut p, PortId(2), &f, &mut c);
        }
    }
    // The flow still works, and a well-formed error is still translated.
    let (action, _) = run(&mut p, PortId(1), &q, &mut c);
    assert_eq!(action, Action::Forward(PortId(2)));
    let (_, out) = run(&mut p, PortId(2), &icmp_error_quoting(&good), &mut c);
    let inner = &out[14 + 20 + 8..];
    assert_eq!(&inner[16..20], &vip.octets(), "quoted destination: the VIP again");
    assert_eq!(&inner[22..24], &80u16.to_be_bytes());
    assert_eq!(&out[14 + 12..14 + 16], &vip.octets(), "from the VIP");
}

#[test]
fn node_port_packets_that_are_no_services_are_dropped_not_flooded() {
    let mut p = pipeline();
    let mut c = vec![PortCounters::default(); 4];
    let other = udp_frame(CLIENT_MAC, NODE_MAC, CLIENT_IP, NODE_IP, 5555, 30_081, b"q");
    let to_vip =
        udp_frame(CLIENT_MAC, NODE_MAC, CLIENT_IP, Ipv4Addr::new(10, 96, 0, 20), 5, 80, b"q");
    let arp = arp_request(CLIENT_MAC, CLIENT_IP, NODE_IP);
    for f in [other, to_vip, arp] {
        let (action, _) = run(&mut p, NP, &f, &mut c);
        assert_eq!(action, Action::Drop(DropReason::NodePortUnknown));
    }
    assert_eq!(c[NP.index()].drops[DropReason::NodePortUnknown as usize], 3);
    assert!(p.fdb.is_empty(), "nothing is learned from the node-port interface");
}

#[test]
fn many_clients_with_one_source_port_get_distinct_snat_ports() {
    let mut p = pipeline();
    let mut c = vec![PortCounters::default(); 4];
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..50u8 {
        let ip = Ipv4Addr::new(192, 168, 2, i + 1);
        let q = udp_frame(CLIENT_MAC, NODE_MAC, ip, NODE_IP, 5555, 30_080, b"q");
        let (action, out) = run(&mut p, NP, &q, &mut c);
        assert_eq!(action, Action::Forward(PortId(2)));
        seen.insert(udp_view(&out).1);
    }
    assert_eq!(seen.len(), 50, "every flow has its own gateway port towards the endpoint");
}
