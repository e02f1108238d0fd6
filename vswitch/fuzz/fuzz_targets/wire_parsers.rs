//! Every `wire/` view over arbitrary bytes: `new_checked`, then every getter, every setter
//! on a copy and `payload()`, which `wire/mod.rs` promises never panic once the check passed;
//! `parse_l2`; each `Repr::parse` and, where it succeeds, `emit` and parse again (the same
//! meaning must come back). The views are also nested as a frame is (Ethernet, then IPv4 or
//! ARP or IPv6, then TCP, UDP or ICMP, VXLAN inside UDP), and the pipeline's own parser,
//! classify, and the flow-steering rule run over the same bytes.
//!
//! The first byte chooses where the bytes start: as an Ethernet frame (most), or directly as
//! one protocol's header, so every view also sees bytes no frame would put in front of it.
#![no_main]

use std::net::Ipv4Addr;

use libfuzzer_sys::fuzz_target;
use vswitch::packet::{Packet, VnetHdr};
use vswitch::pipeline::classify::classify;
use vswitch::port::PortId;
use vswitch::wire::{
    arp, checksum, ethernet, icmp, ipv4, ipv6, parse_l2, tcp, udp, vxlan, ArpPacket, ArpRepr,
    EthernetFrame, EthernetRepr, IcmpPacket, Ipv4Packet, Ipv4Repr, Ipv6Packet, TcpFlags, TcpPacket,
    UdpPacket, VxlanHeader, VxlanRepr,
};

fn ethernet_view(b: &[u8]) {
    let Ok(f) = EthernetFrame::new_checked(b) else { return };
    let (dst, src, ty) = (f.dst_addr(), f.src_addr(), f.ethertype());
    let payload = f.payload();
    let mut copy = b.to_vec();
    let mut m = EthernetFrame::new_checked(&mut copy[..]).expect("checked once");
    m.set_dst_addr(src);
    m.set_src_addr(dst);
    m.set_ethertype(ty);
    let _ = m.payload_mut();
    if let Ok(r) = EthernetRepr::parse(&f) {
        let mut out = vec![0u8; r.buffer_len()];
        r.emit(&mut EthernetFrame::new_unchecked(&mut out[..]));
        let again = EthernetRepr::parse(&EthernetFrame::new_checked(&out[..]).expect("emitted"));
        assert_eq!(again.ok(), Some(r), "ethernet repr round trip");
    }
    let _ = (dst.is_broadcast(), dst.is_multicast(), dst.is_unicast(), dst.is_local_admin());
    assert_eq!(vswitch::wire::MacAddr::from_u64(dst.to_u64()), dst);
    match u16::from(ty) {
        0x0800 => ipv4_view(payload),
        0x0806 => arp_view(payload),
        0x86dd => ipv6_view(payload),
        _ => {}
    }
}

fn ipv4_view(b: &[u8]) {
    let Ok(p) = Ipv4Packet::new_checked(b) else { return };
    let _ = (p.version(), p.header_len(), p.dscp(), p.ecn(), p.total_len(), p.ident());
    let _ = (p.dont_frag(), p.more_frags(), p.frag_offset(), p.hop_limit(), p.checksum());
    let (src, dst, proto) = (p.src_addr(), p.dst_addr(), p.next_header());
    let _ = (p.options(), p.verify_checksum());
    let payload = p.payload();
    let mut copy = b.to_vec();
    let mut m = Ipv4Packet::new_checked(&mut copy[..]).expect("checked once");
    m.set_dscp_ecn(m.dscp(), m.ecn());
    m.set_ident(1);
    m.set_dont_frag(true);
    m.set_frag(false, 0);
    m.set_hop_limit(1);
    m.set_next_header(proto);
    m.set_src_addr(dst);
    m.set_dst_addr(src);
    m.fill_checksum();
    assert!(m.verify_checksum(), "a filled checksum verifies");
    let _ = m.payload_mut();
    if let Ok(r) = Ipv4Repr::parse(&p) {
        let mut out = vec![0u8; r.buffer_len() + r.payload_len];
        r.emit(&mut Ipv4Packet::new_unchecked(&mut out[..]));
        let again = Ipv4Packet::new_checked(&out[..]).map(|q| Ipv4Repr::parse(&q));
        assert_eq!(again.ok().and_then(Result::ok), Some(r), "ipv4 repr round trip");
    }
    if p.frag_offset() != 0 {
        return;
    }
    match u8::from(proto) {
        1 => icmp_view(payload),
        6 => tcp_view(payload, src, dst),
        17 => udp_view(payload, src, dst),
        _ => {}
    }
}

fn arp_view(b: &[u8]) {
    let Ok(p) = ArpPacket::new_checked(b) else { return };
    let _ = (p.hardware_type(), p.protocol_type(), p.hardware_len(), p.protocol_len());
    let (op, sha, spa) = (p.operation(), p.source_hardware_addr(), p.source_protocol_addr());
    let (tha, tpa) = (p.target_hardware_addr(), p.target_protocol_addr());
    let mut copy = b.to_vec();
    let mut m = ArpPacket::new_checked(&mut copy[..]).expect("checked once");
    m.set_operation(op);
    m.set_source_hardware_addr(tha);
    m.set_source_protocol_addr(tpa);
    m.set_target_hardware_addr(sha);
    m.set_target_protocol_addr(spa);
    m.set_hardware_type(1);
    m.set_protocol_type(0x0800);
    m.set_hardware_len(6);
    m.set_protocol_len(4);
    if let Ok(r) = ArpRepr::parse(&p) {
        let mut out = vec![0u8; r.buffer_len()];
        r.emit(&mut ArpPacket::new_unchecked(&mut out[..]));
        let again = ArpRepr::parse(&ArpPacket::new_checked(&out[..]).expect("emitted"));
        assert_eq!(again.ok(), Some(r), "arp repr round trip");
    }
}

fn ipv6_view(b: &[u8]) {
    let Ok(p) = Ipv6Packet::new_checked(b) else { return };
    let _ = (p.version(), p.traffic_class(), p.flow_label(), p.payload_len(), p.next_header());
    let _ = (p.hop_limit(), p.src_addr(), p.dst_addr(), p.payload());
    let mut copy = b.to_vec();
    let mut m = Ipv6Packet::new_checked(&mut copy[..]).expect("checked once");
    m.set_version_tc_flow(p.traffic_class(), p.flow_label());
    m.set_payload_len(p.payload_len());
    m.set_next_header(p.next_header());
    m.set_hop_limit(0);
    m.set_src_addr(p.dst_addr());
    m.set_dst_addr(p.src_addr());
}

fn icmp_view(b: &[u8]) {
    let Ok(p) = IcmpPacket::new_checked(b) else { return };
    let _ = (p.msg_type(), p.msg_code(), p.checksum(), p.echo_ident(), p.echo_seq_no());
    let _ = (p.next_hop_mtu(), p.data(), p.verify_checksum());
    let mut copy = b.to_vec();
    let mut m = IcmpPacket::new_checked(&mut copy[..]).expect("checked once");
    m.set_msg_type(p.msg_type());
    m.set_msg_code(p.msg_code());
    m.set_echo_ident(1);
    m.set_echo_seq_no(2);
    m.set_next_hop_mtu(1450);
    m.set_checksum(0);
    let _ = m.data_mut();
    m.fill_checksum();
    assert!(m.verify_checksum(), "a filled ICMP checksum verifies");
    // An error's quoted packet is another IPv4 header.
    if matches!(u8::from(p.msg_type()), 3 | 11 | 12) {
        ipv4_view(p.data());
    }
}

fn tcp_view(b: &[u8], src: Ipv4Addr, dst: Ipv4Addr) {
    let Ok(p) = TcpPacket::new_checked(b) else { return };
    let _ = (p.src_port(), p.dst_port(), p.seq_number(), p.ack_number(), p.header_len());
    let f = p.flags();
    let _ = (f.contains(TcpFlags(0x12)), p.syn(), p.ack(), p.fin(), p.rst());
    let _ = (p.window_len(), p.checksum(), p.urgent_at(), p.options(), p.payload());
    let _ = p.verify_checksum(&src, &dst);
    let mut copy = b.to_vec();
    let mut m = TcpPacket::new_checked(&mut copy[..]).expect("checked once");
    m.set_src_port(p.dst_port());
    m.set_dst_port(p.src_port());
    m.set_seq_number(1);
    m.set_ack_number(2);
    m.set_flags(f);
    m.set_window_len(3);
    m.set_urgent_at(0);
    m.set_header_len(p.header_len());
    let _ = m.payload_mut();
    m.fill_checksum(&src, &dst);
    assert!(m.verify_checksum(&src, &dst), "a filled TCP checksum verifies");
}

fn udp_view(b: &[u8], src: Ipv4Addr, dst: Ipv4Addr) {
    let Ok(p) = UdpPacket::new_checked(b) else { return };
    let _ = (p.src_port(), p.dst_port(), p.len(), p.is_empty(), p.checksum());
    let _ = p.verify_checksum(&src, &dst);
    let payload = p.payload();
    let mut copy = b.to_vec();
    let mut m = UdpPacket::new_checked(&mut copy[..]).expect("checked once");
    m.set_src_port(p.dst_port());
    m.set_dst_port(p.src_port());
    m.set_len(p.len());
    let _ = m.payload_mut();
    m.fill_checksum(&src, &dst);
    assert!(m.verify_checksum(&src, &dst), "a filled UDP checksum verifies");
    if p.dst_port() == 4789 {
        vxlan_view(payload);
    }
}

fn vxlan_view(b: &[u8]) {
    let Ok(h) = VxlanHeader::new_checked(b) else { return };
    let _ = (h.flags(), h.has_vni(), h.vni(), h.payload());
    let mut copy = b.to_vec();
    let mut m = VxlanHeader::new_checked(&mut copy[..]).expect("checked once");
    m.set_flags(h.flags());
    m.set_vni(h.vni());
    if let Ok(r) = VxlanRepr::parse(&h) {
        let mut out = vec![0u8; r.buffer_len()];
        r.emit(&mut VxlanHeader::new_unchecked(&mut out[..]));
        let again = VxlanRepr::parse(&VxlanHeader::new_checked(&out[..]).expect("emitted"));
        assert_eq!(again.ok(), Some(r), "vxlan repr round trip");
    }
    ethernet_view(h.payload());
}

/// The pipeline's own parse of the same bytes, and what flow steering makes of them.
fn pipeline_view(b: &[u8], vnet: &[u8]) {
    let mut pkt = Packet::new();
    if !pkt.fill_from(b) {
        return;
    }
    pkt.meta.in_port = PortId(1);
    if let Ok(raw) = <[u8; VnetHdr::LEN]>::try_from(vnet) {
        pkt.meta.vnet = VnetHdr::parse(&raw);
        let mut out = [0u8; VnetHdr::LEN];
        pkt.meta.vnet.write(&mut out);
        assert_eq!(VnetHdr::parse(&out), pkt.meta.vnet, "virtio-net header round trip");
        let _ = pkt.meta.vnet.complete_checksum(&mut b.to_vec());
    }
    if let Ok(l2) = parse_l2(b) {
        assert!(l2.payload_offset <= b.len(), "L3 offset within the frame");
    }
    if classify(&mut pkt).is_err() {
        return;
    }
    let m = pkt.meta;
    assert!(usize::from(m.l3_offset) <= b.len() && usize::from(m.l4_offset) <= b.len());
    let steering = vswitch::pipeline::steer::Steering { workers: 2, ..Default::default() };
    let gw = vswitch::pipeline::Gateway {
        ip: Ipv4Addr::new(10, 244, 1, 1),
        mac: vswitch::wire::MacAddr([2, 0x70, 0x73, 244, 1, 1]),
        pod_cidr: "10.244.1.0/24".parse().expect("a CIDR"),
        host_port: Some(PortId(0)),
        overlay_port: None,
        service_cidr: Some("10.96.0.0/12".parse().expect("a CIDR")),
        node_port: None,
    };
    let _ = steering.owner(&pkt, &gw);
}

fuzz_target!(|data: &[u8]| {
    let Some((&how, rest)) = data.split_first() else { return };
    let _ = (checksum::checksum(rest), checksum::sum(rest));
    match how % 16 {
        0 => ipv4_view(rest),
        1 => arp_view(rest),
        2 => ipv6_view(rest),
        3 => icmp_view(rest),
        4 => tcp_view(rest, Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2)),
        5 => udp_view(rest, Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::UNSPECIFIED),
        6 => vxlan_view(rest),
        7 => {
            let (vnet, frame) = rest.split_at(rest.len().min(VnetHdr::LEN));
            pipeline_view(frame, vnet);
        }
        _ => {
            ethernet_view(rest);
            pipeline_view(rest, &[]);
        }
    }
    // Every view refuses what is too short for its header, whatever the bytes.
    let short = &rest[..rest.len().min(7)];
    assert!(ethernet::Frame::new_checked(short).is_err());
    assert!(ipv4::Packet::new_checked(short).is_err());
    assert!(ipv6::Packet::new_checked(short).is_err());
    assert!(arp::Packet::new_checked(short).is_err());
    assert!(tcp::Packet::new_checked(short).is_err());
    assert!(udp::Packet::new_checked(short).is_err());
    assert!(icmp::Packet::new_checked(short).is_err());
    let _ = vxlan::Header::new_checked(short);
});
