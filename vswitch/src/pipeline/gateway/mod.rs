//! The pods' default gateway: what happens to an IPv4 frame addressed to the gateway MAC.
//!
//! - To the gateway address itself: an ICMP echo request is answered here (rewritten in
//!   place); anything else goes to the host port, where the node's kernel, which carries the
//!   gateway address on that port, handles it (health checks, node services). Without a host
//!   port it is dropped as `gateway_unhandled`.
//! - To a pod attached here: routed, i.e. TTL decremented (with an incremental checksum
//!   update), source MAC set to the gateway's and destination MAC to the pod's. Pods whose
//!   address is a /32, or traffic that reached the gateway for any other reason, take this
//!   path.
//! - To an unknown address inside the pod CIDR: dropped as `no_route`.
//! - To an address in a peer node's pod CIDR: routed through the overlay (see `overlay.rs`).
//! - To anywhere else: handed unchanged to the host port, the node's kernel routes it on.
//!   Decapsulated packets never take this path: the overlay does not relay between peers.
//!
//! Non-IPv4 frames to the gateway MAC (IPv6 neighbour discovery to the host port's link-local
//! address, say) are left to L2 forwarding, which knows the gateway MAC lives on the host port.

mod to_peer;

pub use to_peer::frag_needed_reply;

use std::net::Ipv4Addr;

use crate::cidr::Ipv4Cidr;
use crate::packet::{Action, Batch, Packet};
use crate::port::PortId;
use crate::stats::{DropReason, PortCounters};
use crate::tables::neigh::NeighTable;
use crate::wire::{
    checksum, EtherType, EthernetFrame, IcmpMessage, IcmpPacket, IpProtocol, Ipv4Packet, MacAddr,
};

use super::drop_packet;
use super::overlay::Overlay;

/// TTL of the echo replies the gateway sends.
pub const REPLY_TTL: u8 = 64;

/// The gateway's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gateway {
    /// The gateway address (first host of the pod CIDR by default).
    pub ip: Ipv4Addr,
    /// The gateway MAC, which is also the host port's MAC.
    pub mac: MacAddr,
    /// The node's pod CIDR.
    pub pod_cidr: Ipv4Cidr,
    /// The host port, once attached.
    pub host_port: Option<PortId>,
    /// The overlay port, once attached: frames from it are never learned or relayed.
    pub overlay_port: Option<PortId>,
    /// The Service CIDR: an address there that Service NAT did not translate goes nowhere
    /// (in particular not to the host port, which routes the CIDR back to the switch).
    pub service_cidr: Option<Ipv4Cidr>,
    /// Where NodePort traffic comes in and its replies go out, once attached.
    pub node_port: Option<NodePortPath>,
}

/// The NodePort interface as the pipeline sees it: an L3 port on the node's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodePortPath {
    /// The port frames come in on and replies leave by.
    pub port: PortId,
    /// The node's address: node ports are taken on it, replies come from it.
    pub ip: Ipv4Addr,
    /// The interface's MAC: the source of replies.
    pub mac: MacAddr,
}

/// Handles every undecided untagged IPv4 frame addressed to the gateway MAC.
pub fn run(
    batch: &mut Batch,
    gateway: &Gateway,
    neigh: &NeighTable,
    overlay: Option<&Overlay>,
    counters: &mut [PortCounters],
) {
    let ipv4 = u16::from(EtherType::Ipv4);
    for pkt in batch.packets_mut() {
        if pkt.meta.action != Action::Continue
            || pkt.meta.vlan.is_some()
            || pkt.meta.ethertype != ipv4
        {
            continue;
        }
        match EthernetFrame::new_checked(pkt.data()) {
            Ok(eth) if eth.dst_addr() == gateway.mac => {}
            _ => continue,
        }
        let in_port = pkt.meta.in_port;
        match handle(pkt, gateway, neigh, overlay) {
            Ok(action) => {
                pkt.meta.action = action;
                if action == Action::Reply {
                    // A frame the switch rewrote into its own answer carries no offload.
                    pkt.meta.vnet = Default::default();
                }
                if let Some(c) = counters.get_mut(in_port.index()) {
                    match action {
                        Action::Reply if is_frag_needed(pkt) => c.frag_needed += 1,
                        Action::Reply => c.icmp_echo_replies += 1,
                        Action::Forward(p) if Some(p) != gateway.host_port => c.routed += 1,
                        _ => {}
                    }
                }
            }
            Err(reason) => drop_packet(&mut pkt.meta.action, in_port, reason, counters),
        }
    }
}

/// Whether a settled reply is an ICMP "fragmentation needed" the overlay produced (an echo
/// reply is the other kind).
fn is_frag_needed(pkt: &Packet) -> bool {
    let Ok(eth) = EthernetFrame::new_checked(pkt.data()) else { return false };
    let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else { return false };
    ip.next_header() == IpProtocol::Icmp
        && IcmpPacket::new_checked(ip.payload()).is_ok_and(|icmp| {
            icmp.msg_type() == IcmpMessage::DstUnreachable && icmp.msg_code() == 4
        })
}

#[inline]
fn handle(
    pkt: &mut Packet,
    gw: &Gateway,
    neigh: &NeighTable,
    overlay: Option<&Overlay>,
) -> Result<Action, DropReason> {
    let in_port = pkt.meta.in_port;
    let to_host = || match gw.host_port {
        Some(h) if h != in_port => Ok(Action::Forward(h)),
        _ => Err(DropReason::NoRoute),
    };
    let (mut eth, ip_bytes) = pkt.split_l3_mut().ok_or(DropReason::Ipv4BadHeader)?;
    let mut ip = Ipv4Packet::new_checked(ip_bytes).map_err(|_| DropReason::Ipv4BadHeader)?;
    let dst = ip.dst_addr();
    if dst == gw.ip {
        if echo_reply(&mut ip) {
            let requester = eth.src_addr();
            eth.set_dst_addr(requester);
            eth.set_src_addr(gw.mac);
            return Ok(Action::Reply);
        }
        return to_host().map_err(|_| DropReason::GatewayUnhandled);
    }
    if let Some(n) = neigh.lookup(dst) {
        let ttl = ip.hop_limit();
        if ttl <= 1 {
            return Err(DropReason::TtlExpired);
        }
        decrement_ttl(&mut ip);
        eth.set_src_addr(gw.mac);
        eth.set_dst_addr(n.mac);
        return Ok(Action::Forward(n.port));
    }
    if gw.pod_cidr.contains(dst) || gw.service_cidr.is_some_and(|c| c.contains(dst)) {
        return Err(DropReason::NoRoute);
    }
    if gw.overlay_port == Some(in_port) {
        return Err(DropReason::OverlayNotLocal);
    }
    if let Some(ov) = overlay {
        if let Some(decision) = to_peer::to_peer(pkt, ov, gw, dst) {
            return decision;
        }
    }
    to_host()
}

/// Turns an unfragmented ICMP echo request with a complete header into its reply: swap
/// addresses (the IPv4 checksum does not change, the sum is commutative), fresh TTL, type
/// 8 -> 0; both checksums updated incrementally. False, packet untouched, for anything else.
fn echo_reply(ip: &mut Ipv4Packet<&mut [u8]>) -> bool {
    if ip.next_header() != IpProtocol::Icmp || ip.frag_offset() != 0 || ip.more_frags() {
        return false;
    }
    match IcmpPacket::new_checked(ip.payload()) {
        Ok(icmp) if icmp.msg_type() == IcmpMessage::EchoRequest && icmp.msg_code() == 0 => {}
        _ => return false,
    }
    let src = ip.src_addr();
    let dst = ip.dst_addr();
    ip.set_src_addr(dst);
    ip.set_dst_addr(src);
    let old = u16::from_be_bytes([ip.hop_limit(), u8::from(ip.next_header())]);
    ip.set_hop_limit(REPLY_TTL);
    let new = u16::from_be_bytes([REPLY_TTL, u8::from(ip.next_header())]);
    let csum = checksum::update16(ip.checksum(), old, new);
    ip.set_checksum(csum);
    // Checked as an echo request just above, on these bytes.
    let mut icmp = IcmpPacket::new_unchecked(ip.payload_mut());
    let old = u16::from_be_bytes([u8::from(IcmpMessage::EchoRequest), icmp.msg_code()]);
    icmp.set_msg_type(IcmpMessage::EchoReply);
    let new = u16::from_be_bytes([u8::from(IcmpMessage::EchoReply), icmp.msg_code()]);
    let csum = checksum::update16(icmp.checksum(), old, new);
    icmp.set_checksum(csum);
    true
}

/// Decrements the TTL (the caller checked it is above 1; 0 stays 0) and updates the checksum.
pub(crate) fn decrement_ttl(ip: &mut Ipv4Packet<&mut [u8]>) {
    let ttl = ip.hop_limit();
    let proto = u8::from(ip.next_header());
    let next = ttl.saturating_sub(1);
    ip.set_hop_limit(next);
    let csum = checksum::update16(
        ip.checksum(),
        u16::from_be_bytes([ttl, proto]),
        u16::from_be_bytes([next, proto]),
    );
    ip.set_checksum(csum);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::Meta;
    use crate::pipeline::classify;
    use crate::pipeline::testutil::*;
    use crate::tables::neigh::Neighbor;

    const HOST: PortId = PortId(0);

    fn gw(host: Option<PortId>) -> Gateway {
        Gateway {
            ip: GW_IP,
            mac: GW_MAC,
            pod_cidr: "10.244.1.0/24".parse().unwrap(),
            host_port: host,
            overlay_port: None,
            service_cidr: None,
            node_port: None,
        }
    }

    fn run_one(g: &Gateway, port: u16, frame: &[u8]) -> (Action, Vec<u8>, PortCounters) {
        let mut n = NeighTable::new(8);
        n.insert(IP_B, Neighbor { mac: MAC_B, port: PortId(2) }).unwrap();
        let mut b = Batch::new();
        b.push_frame(PortId(port), frame);
        let mut c = vec![PortCounters::default(); 4];
        classify::run(&mut b, &mut c, Some(0));
        run(&mut b, g, &n, None, &mut c);
        (b.packets()[0].meta.action, b.packets()[0].data().to_vec(), c[usize::from(port)])
    }

    #[test]
    fn answers_ping_to_the_gateway() {
        let req = icmp_echo(MAC_A, GW_MAC, IP_A, GW_IP, 0x1234, 7, b"abcdefgh");
        let (action, reply, c) = run_one(&gw(None), 1, &req);
        assert_eq!(action, Action::Reply);
        assert_eq!(c.icmp_echo_replies, 1);
        let p = etherparse::SlicedPacket::from_ethernet(&reply).unwrap();
        let Some(etherparse::LinkSlice::Ethernet2(eth)) = p.link else { panic!() };
        assert_eq!(eth.destination(), MAC_A.0);
        assert_eq!(eth.source(), GW_MAC.0);
        let Some(etherparse::NetSlice::Ipv4(ip)) = p.net else { panic!() };
        assert_eq!(ip.header().source_addr(), GW_IP);
        assert_eq!(ip.header().destination_addr(), IP_A);
        assert_eq!(ip.header().ttl(), REPLY_TTL);
        assert_eq!(ip.header().to_header().calc_header_checksum(), ip.header().header_checksum());
        let Some(etherparse::TransportSlice::Icmpv4(icmp)) = p.transport else { panic!() };
        assert_eq!(
            icmp.icmp_type(),
            etherparse::Icmpv4Type::EchoReply(etherparse::IcmpEchoHeader { id: 0x1234, seq: 7 })
        );
        assert_eq!(icmp.checksum(), icmp.icmp_type().calc_checksum(icmp.payload()));
        assert_eq!(icmp.payload(), b"abcdefgh");
    }

    #[test]
    fn other_traffic_to_the_gateway_goes_to_the_host_or_is_dropped() {
        let tcp = tcp_frame(MAC_A, GW_MAC, IP_A, GW_IP, 5000, 80, 0x02, b"");
        assert_eq!(run_one(&gw(Some(HOST)), 1, &tcp).0, Action::Forward(HOST));
        assert_eq!(run_one(&gw(None), 1, &tcp).0, Action::Drop(DropReason::GatewayUnhandled));
    }

    #[test]
    fn routes_to_a_known_pod_with_ttl_decrement() {
        let f = udp_frame(MAC_A, GW_MAC, IP_A, IP_B, 1, 2, b"routed");
        let (action, out, c) = run_one(&gw(Some(HOST)), 1, &f);
        assert_eq!(action, Action::Forward(PortId(2)));
        assert_eq!(c.routed, 1);
        let p = etherparse::SlicedPacket::from_ethernet(&out).unwrap();
        let Some(etherparse::LinkSlice::Ethernet2(eth)) = p.link else { panic!() };
        assert_eq!(eth.destination(), MAC_B.0);
        assert_eq!(eth.source(), GW_MAC.0);
        let Some(etherparse::NetSlice::Ipv4(ip)) = p.net else { panic!() };
        assert_eq!(ip.header().ttl(), 63);
        assert_eq!(ip.header().to_header().calc_header_checksum(), ip.header().header_checksum());
    }

    #[test]
    fn expired_ttl_and_unknown_pods_drop() {
        let mut f = udp_frame(MAC_A, GW_MAC, IP_A, IP_B, 1, 2, b"");
        f[22] = 1;
        assert_eq!(run_one(&gw(Some(HOST)), 1, &f).0, Action::Drop(DropReason::TtlExpired));
        let unknown = udp_frame(MAC_A, GW_MAC, IP_A, IP_C, 1, 2, b"");
        assert_eq!(run_one(&gw(Some(HOST)), 1, &unknown).0, Action::Drop(DropReason::NoRoute));
    }

    #[test]
    fn off_cidr_goes_to_the_host_unchanged() {
        let f = udp_frame(MAC_A, GW_MAC, IP_A, Ipv4Addr::new(192, 168, 7, 7), 1, 2, b"out");
        let (action, out, _) = run_one(&gw(Some(HOST)), 1, &f);
        assert_eq!(action, Action::Forward(HOST));
        assert_eq!(out, f);
        assert_eq!(run_one(&gw(None), 1, &f).0, Action::Drop(DropReason::NoRoute));
        // Never back out of the host port.
        assert_eq!(run_one(&gw(Some(HOST)), 0, &f).0, Action::Drop(DropReason::NoRoute));
    }

    #[test]
    fn frames_to_other_macs_are_not_touched() {
        let f = udp_frame(MAC_A, MAC_B, IP_A, GW_IP, 1, 2, b"");
        assert_eq!(run_one(&gw(Some(HOST)), 1, &f).0, Action::Continue);
    }

    #[test]
    fn truncated_frames_and_lying_offsets_are_dropped_or_passed_never_a_panic() {
        let mut n = NeighTable::new(8);
        n.insert(IP_B, Neighbor { mac: MAC_B, port: PortId(2) }).unwrap();
        let g = gw(Some(HOST));
        let frames = [
            icmp_echo(MAC_A, GW_MAC, IP_A, GW_IP, 0x1234, 7, b"abcdefgh"),
            udp_frame(MAC_A, GW_MAC, IP_A, IP_B, 1, 2, b"routed"),
            tcp_frame(MAC_A, GW_MAC, IP_A, Ipv4Addr::new(192, 168, 7, 7), 1, 2, 0x02, b""),
        ];
        for frame in &frames {
            let mut whole = Batch::new();
            whole.push_frame(PortId(1), frame);
            classify::run(&mut whole, &mut vec![PortCounters::default(); 4], Some(0));
            let meta = whole.packets()[0].meta;
            for cut in 0..=frame.len() {
                for l3 in [0, 1, 6, 13, 14, 15, 18, cut, cut + 1, usize::from(u16::MAX)] {
                    let mut b = Batch::new();
                    b.push_frame(PortId(1), &frame[..cut]);
                    b.packets_mut()[0].meta = Meta { l3_offset: l3 as u16, ..meta };
                    let mut c = vec![PortCounters::default(); 4];
                    run(&mut b, &g, &n, None, &mut c);
                    let p = &b.packets()[0];
                    if cut < 14 {
                        assert_eq!(p.meta.action, Action::Continue, "no Ethernet header");
                    }
                    if let Action::Drop(r) = p.meta.action {
                        assert_eq!(c[1].drops[r as usize], 1);
                    }
                    if cut == frame.len() && l3 == 14 {
                        assert!(matches!(p.meta.action, Action::Reply | Action::Forward(_)));
                    }
                    assert!(!is_frag_needed(p));
                }
            }
        }
    }

    #[test]
    fn frag_needed_is_told_from_its_bytes_and_truncations_are_neither() {
        let big = udp_frame(MAC_A, GW_MAC, IP_A, IP_B, 1, 2, &[0u8; 100]);
        let mut p = Packet::new();
        assert!(p.fill_from(&big));
        assert!(super::super::reply::icmp_error(&mut p, GW_IP, GW_MAC, 3, 4, 1450));
        let answer = p.data().to_vec();
        assert!(is_frag_needed(&p));
        for cut in 0..answer.len() {
            assert!(p.fill_from(&answer[..cut]));
            assert!(!is_frag_needed(&p), "cut {cut}");
        }
        let mut unreachable = Packet::new();
        assert!(unreachable.fill_from(&big));
        assert!(super::super::reply::icmp_error(&mut unreachable, GW_IP, GW_MAC, 3, 3, 0));
        assert!(!is_frag_needed(&unreachable));
    }
}
