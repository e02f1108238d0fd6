//! The gateway's route into the overlay: what becomes of a packet bound for an address this
//! node does not own but a peer does. TTL decremented, inner MACs set (gateway → the peer's
//! VTEP MAC), the peer's underlay address put in `meta.tunnel`, forwarded to the overlay
//! port, which builds the outer headers. A packet too big for the underlay gets ICMP
//! "fragmentation needed" (DF set) or is dropped and counted (DF clear): never silently lost.

use std::net::Ipv4Addr;

use crate::offload::gso;
use crate::packet::{Action, Packet, VnetHdr};
use crate::port::PortId;
use crate::stats::DropReason;
use crate::wire::{Ipv4Packet, MacAddr};

use super::{decrement_ttl, Gateway};
use crate::pipeline::overlay::Overlay;

/// What the gateway does with a packet bound for `dst`, an address it does not own, when it
/// arrived on a port other than the overlay's: `None` when no peer owns `dst`.
#[inline]
pub fn to_peer(
    pkt: &mut Packet,
    overlay: &Overlay,
    gw: &Gateway,
    dst: Ipv4Addr,
) -> Option<Result<Action, DropReason>> {
    let peer = overlay.peers.route(dst)?;
    let Some(port) = overlay.port else { return Some(Err(DropReason::NoRoute)) };
    let (tunnel, vtep_mac) = (peer.ip, peer.vtep_mac);
    Some(encap_decision(pkt, overlay.inner_mtu, gw, port, tunnel, vtep_mac))
}

#[inline]
fn encap_decision(
    pkt: &mut Packet,
    inner_mtu: u16,
    gw: &Gateway,
    port: PortId,
    tunnel: Ipv4Addr,
    vtep_mac: MacAddr,
) -> Result<Action, DropReason> {
    let vnet = pkt.meta.vnet;
    // The size that goes on the underlay: the whole packet, or each segment of a super-frame
    // (the overlay port segments TCP/IPv4 super-frames; nothing else may be one here).
    let on_wire = if vnet.is_gso() {
        if vnet.gso_type & !VnetHdr::GSO_ECN != VnetHdr::GSO_TCPV4 {
            return Err(DropReason::OverlayTooBig);
        }
        let seg =
            gso::tcp4_segmentation(pkt.data(), vnet.gso_size).ok_or(DropReason::L4Truncated)?;
        let headers =
            seg.hdr_len.checked_sub(usize::from(pkt.meta.l3_offset)).ok_or(DropReason::Runt)?;
        u16::try_from(headers + seg.mss).unwrap_or(u16::MAX)
    } else {
        if vnet.needs_csum() && !pkt.complete_checksum() {
            return Err(DropReason::L4Truncated);
        }
        0
    };
    let (mut eth, ip_bytes) = pkt.split_l3_mut().ok_or(DropReason::Ipv4BadHeader)?;
    let mut ip = Ipv4Packet::new_checked(ip_bytes).map_err(|_| DropReason::Ipv4BadHeader)?;
    if ip.hop_limit() <= 1 {
        return Err(DropReason::TtlExpired);
    }
    let on_wire = if on_wire == 0 { ip.total_len() } else { on_wire };
    if on_wire > inner_mtu {
        if !ip.dont_frag() {
            return Err(DropReason::OverlayTooBig);
        }
        if !frag_needed_reply(pkt, gw, inner_mtu) {
            return Err(DropReason::OverlayTooBig);
        }
        return Ok(Action::Reply);
    }
    decrement_ttl(&mut ip);
    eth.set_src_addr(gw.mac);
    eth.set_dst_addr(vtep_mac);
    pkt.meta.tunnel = Some(tunnel);
    Ok(Action::Forward(port))
}

/// Rewrites `pkt` (an untagged IPv4 frame too big for the overlay) into an ICMP destination
/// unreachable / fragmentation needed (RFC 1191) from the gateway to its sender. False when
/// the frame is not one (see [`crate::pipeline::reply::icmp_error`]): the caller drops it.
pub fn frag_needed_reply(pkt: &mut Packet, gw: &Gateway, mtu: u16) -> bool {
    crate::pipeline::reply::icmp_error(pkt, gw.ip, gw.mac, 3, 4, mtu)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::Batch;
    use crate::pipeline::classify;
    use crate::pipeline::testutil::*;
    use crate::stats::PortCounters;

    const OV: PortId = OVERLAY_PORT;
    const PEER_IP: Ipv4Addr = PEER_UNDERLAY_IP;

    fn overlay() -> Overlay {
        overlay_fixture()
    }

    fn gw() -> Gateway {
        Gateway {
            ip: GW_IP,
            mac: GW_MAC,
            pod_cidr: "10.244.1.0/24".parse().unwrap(),
            host_port: None,
            overlay_port: Some(OV),
            service_cidr: None,
            node_port: None,
        }
    }

    fn classified(frame: &[u8]) -> Packet {
        let mut b = Batch::new();
        b.push_frame(PortId(1), frame);
        let mut c = vec![PortCounters::default(); 10];
        classify::run(&mut b, &mut c, Some(0));
        std::mem::take(&mut b.packets_mut()[0])
    }

    #[test]
    fn packets_for_a_peer_are_aimed_at_it() {
        let dst = Ipv4Addr::new(10, 244, 2, 7);
        let mut pkt = classified(&udp_frame(MAC_A, GW_MAC, IP_A, dst, 1, 2, b"hello"));
        let r = to_peer(&mut pkt, &overlay(), &gw(), dst).unwrap();
        assert_eq!(r, Ok(Action::Forward(OV)));
        assert_eq!(pkt.meta.tunnel, Some(PEER_IP));
        let p = etherparse::SlicedPacket::from_ethernet(pkt.data()).unwrap();
        let Some(etherparse::LinkSlice::Ethernet2(eth)) = p.link else { panic!() };
        assert_eq!(eth.source(), GW_MAC.0);
        assert_eq!(
            eth.destination(),
            crate::config::default_gateway_mac(Ipv4Addr::new(10, 244, 2, 1)).0
        );
        let Some(etherparse::NetSlice::Ipv4(ip)) = p.net else { panic!() };
        assert_eq!(ip.header().ttl(), 63);
        assert_eq!(ip.header().to_header().calc_header_checksum(), ip.header().header_checksum());
        let mut other = classified(&udp_frame(MAC_A, GW_MAC, IP_A, dst, 1, 2, b"hello"));
        assert!(to_peer(&mut other, &overlay(), &gw(), Ipv4Addr::new(10, 9, 9, 9)).is_none());
    }

    fn big_frame(df: bool, len: usize) -> Vec<u8> {
        let dst = Ipv4Addr::new(10, 244, 2, 7);
        let mut f = udp_frame(MAC_A, GW_MAC, IP_A, dst, 1000, 2000, &vec![7u8; len]);
        if !df {
            f[20] &= !0x40;
            let ip = etherparse::Ipv4HeaderSlice::from_slice(&f[14..]).unwrap().to_header();
            f[24..26].copy_from_slice(&ip.calc_header_checksum().to_be_bytes());
        }
        f
    }

    #[test]
    fn too_big_with_df_gets_frag_needed_with_the_overlay_mtu() {
        let frame = big_frame(true, 1450);
        let mut pkt = classified(&frame);
        let r = to_peer(&mut pkt, &overlay(), &gw(), Ipv4Addr::new(10, 244, 2, 7)).unwrap();
        assert_eq!(r, Ok(Action::Reply));
        let p = etherparse::SlicedPacket::from_ethernet(pkt.data()).unwrap();
        let Some(etherparse::LinkSlice::Ethernet2(eth)) = p.link else { panic!() };
        assert_eq!((eth.destination(), eth.source()), (MAC_A.0, GW_MAC.0));
        let Some(etherparse::NetSlice::Ipv4(ip)) = p.net else { panic!() };
        assert_eq!(ip.header().source_addr(), GW_IP);
        assert_eq!(ip.header().destination_addr(), IP_A);
        assert_eq!(ip.header().to_header().calc_header_checksum(), ip.header().header_checksum());
        let Some(etherparse::TransportSlice::Icmpv4(icmp)) = p.transport else { panic!() };
        assert_eq!(icmp.checksum(), icmp.icmp_type().calc_checksum(icmp.payload()));
        match icmp.icmp_type() {
            etherparse::Icmpv4Type::DestinationUnreachable(
                etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu },
            ) => assert_eq!(next_hop_mtu, 1450),
            t => panic!("{t:?}"),
        }
        // The quote is the original IP header and 8 bytes of UDP.
        assert_eq!(icmp.payload(), &frame[14..14 + 28]);
    }

    #[test]
    fn too_big_without_df_is_dropped_and_small_enough_passes() {
        let mut pkt = classified(&big_frame(false, 1450));
        let r = to_peer(&mut pkt, &overlay(), &gw(), Ipv4Addr::new(10, 244, 2, 7)).unwrap();
        assert_eq!(r, Err(DropReason::OverlayTooBig));
        // 1450 bytes of IP exactly fit.
        let mut pkt = classified(&big_frame(true, 1450 - 28));
        let r = to_peer(&mut pkt, &overlay(), &gw(), Ipv4Addr::new(10, 244, 2, 7)).unwrap();
        assert_eq!(r, Ok(Action::Forward(OV)));
    }

    #[test]
    fn encapsulation_survives_truncations_and_metadata_that_lies() {
        let dst = Ipv4Addr::new(10, 244, 2, 7);
        let frames = [
            udp_frame(MAC_A, GW_MAC, IP_A, dst, 1, 2, b"hello"),
            big_frame(true, 1450),
            tcp_frame(MAC_A, GW_MAC, IP_A, dst, 1, 2, 0x10, &[7u8; 3000]),
        ];
        let gso = VnetHdr {
            flags: VnetHdr::NEEDS_CSUM,
            gso_type: VnetHdr::GSO_TCPV4,
            hdr_len: 54,
            gso_size: 1400,
            csum_start: 34,
            csum_offset: 16,
        };
        for frame in &frames {
            let whole = classified(frame);
            for cut in 0..=frame.len() {
                for l3 in [0, 1, 13, 14, 15, 18, 34, cut, cut + 1, usize::from(u16::MAX)] {
                    for vnet in [VnetHdr::default(), gso] {
                        let mut pkt = Packet::new();
                        assert!(pkt.fill_from(&frame[..cut]));
                        pkt.meta = whole.meta;
                        pkt.meta.l3_offset = l3 as u16;
                        pkt.meta.vnet = vnet;
                        let r = to_peer(&mut pkt, &overlay(), &gw(), dst).unwrap();
                        if r == Ok(Action::Reply) {
                            let p = etherparse::SlicedPacket::from_ethernet(pkt.data()).unwrap();
                            assert!(matches!(
                                p.transport,
                                Some(etherparse::TransportSlice::Icmpv4(_))
                            ));
                        }
                        if cut == frame.len() && l3 == 14 && vnet == VnetHdr::default() {
                            assert!(r.is_ok(), "{r:?}");
                        }
                    }
                }
            }
        }
    }
}
