//! Frame builders for the stage tests. They use etherparse, not our own `wire` emitters, so a
//! bug in our views cannot hide itself by building the frames it then parses.

use std::net::Ipv4Addr;

use etherparse::PacketBuilder;

use crate::wire::MacAddr;

pub const MAC_A: MacAddr = MacAddr([0x0a, 0x58, 10, 244, 1, 2]);
pub const MAC_B: MacAddr = MacAddr([0x0a, 0x58, 10, 244, 1, 3]);
pub const MAC_C: MacAddr = MacAddr([0x0a, 0x58, 10, 244, 1, 4]);
pub const GW_MAC: MacAddr = MacAddr([0x02, 0x70, 0x73, 244, 1, 1]);
pub const IP_A: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 2);
pub const IP_B: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 3);
pub const IP_C: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 4);
pub const GW_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 1);

/// An Ethernet/IPv4/UDP frame.
pub fn udp_frame(
    src: MacAddr,
    dst: MacAddr,
    sip: Ipv4Addr,
    dip: Ipv4Addr,
    sport: u16,
    dport: u16,
    payload: &[u8],
) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(src.0, dst.0)
        .ipv4(sip.octets(), dip.octets(), 64)
        .udp(sport, dport);
    let mut v = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut v, payload).unwrap();
    v
}

/// An Ethernet/IPv4/TCP frame; `flags` bits: FIN 0x01, SYN 0x02, RST 0x04, PSH 0x08, ACK 0x10.
#[allow(clippy::too_many_arguments)]
pub fn tcp_frame(
    src: MacAddr,
    dst: MacAddr,
    sip: Ipv4Addr,
    dip: Ipv4Addr,
    sport: u16,
    dport: u16,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut b = PacketBuilder::ethernet2(src.0, dst.0)
        .ipv4(sip.octets(), dip.octets(), 64)
        .tcp(sport, dport, 1000, 65535);
    if flags & 0x01 != 0 {
        b = b.fin();
    }
    if flags & 0x02 != 0 {
        b = b.syn();
    }
    if flags & 0x04 != 0 {
        b = b.rst();
    }
    if flags & 0x08 != 0 {
        b = b.psh();
    }
    if flags & 0x10 != 0 {
        b = b.ack(1);
    }
    let mut v = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut v, payload).unwrap();
    v
}

/// An ICMP echo request.
pub fn icmp_echo(
    src: MacAddr,
    dst: MacAddr,
    sip: Ipv4Addr,
    dip: Ipv4Addr,
    ident: u16,
    seq: u16,
    payload: &[u8],
) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(src.0, dst.0)
        .ipv4(sip.octets(), dip.octets(), 64)
        .icmpv4_echo_request(ident, seq);
    let mut v = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut v, payload).unwrap();
    v
}

/// A broadcast ARP request from `src`/`sender` for `target`, padded to 60 bytes.
pub fn arp_request(src: MacAddr, sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut v = Vec::with_capacity(60);
    v.extend_from_slice(&[0xff; 6]);
    v.extend_from_slice(&src.0);
    v.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    v.extend_from_slice(&src.0);
    v.extend_from_slice(&sender.octets());
    v.extend_from_slice(&[0; 6]);
    v.extend_from_slice(&target.octets());
    v.resize(60, 0);
    v
}

/// The overlay port of the overlay fixtures.
pub const OVERLAY_PORT: crate::port::PortId = crate::port::PortId(9);

/// The underlay address of the fixture's one peer (`n2`, pod CIDR 10.244.2.0/24).
pub const PEER_UNDERLAY_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 2);

/// An overlay on [`OVERLAY_PORT`], VNI 1, inner MTU 1450, with the peer `n2`.
pub fn overlay_fixture() -> crate::pipeline::Overlay {
    let mut peers = crate::tables::peers::PeerTable::new(4);
    let n2 = crate::config::PeerConfig::parse("n2", "192.168.0.2", "10.244.2.0/24", None);
    peers.upsert(n2.unwrap()).unwrap();
    crate::pipeline::Overlay {
        port: Some(OVERLAY_PORT),
        vni: 1,
        peers: std::sync::Arc::new(peers),
        inner_mtu: 1450,
    }
}
