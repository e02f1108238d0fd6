//! The overlay: pods on other nodes, reached through VXLAN (RFC 7348) over the underlay.
//!
//! The overlay is *routed*, as Flannel's vxlan backend is: the control plane knows which node
//! owns which pod CIDR ([`PeerTable`]), so nothing is flooded across the underlay and no MAC
//! is learned from it.
//!
//! - **Decapsulation** ([`decap`], first stage): the overlay port delivers each datagram's
//!   payload (VXLAN header + inner frame) with the sender's underlay address in
//!   `meta.tunnel`. The header is checked (I flag, this node's VNI, a known sender) and
//!   removed; the inner frame must be untagged IPv4, and its destination MAC is set to the
//!   gateway's, so the gateway stage routes it to the local pod (or the host port) whatever
//!   MAC the sending VTEP chose. Anything else is dropped and counted by reason.
//! - **Encapsulation decision** ([`to_peer`], called by the gateway stage for addresses it
//!   does not own): TTL decremented, inner MACs set (gateway → the peer's VTEP MAC), the
//!   peer's underlay address put in `meta.tunnel`, forwarded to the overlay port, which
//!   builds the outer headers. A packet too big for the underlay gets ICMP "fragmentation
//!   needed" (DF set) or is dropped and counted (DF clear): never silently lost.

use std::net::Ipv4Addr;

use crate::packet::{Action, Batch, Packet, VnetHdr};
use crate::port::PortId;
use crate::stats::{DropReason, PortCounters};
use crate::tables::peers::PeerTable;
use crate::wire::{self, vxlan, EtherType, EthernetFrame, Ipv4Packet, MacAddr, VxlanHeader};

use super::{drop_packet, Gateway};

/// The overlay's state in the pipeline.
#[derive(Debug, Clone)]
pub struct Overlay {
    /// The overlay port, once attached.
    pub port: Option<PortId>,
    /// This node's VNI.
    pub vni: u32,
    /// The peers.
    pub peers: PeerTable,
    /// Largest inner IPv4 packet the underlay carries (underlay MTU − 50).
    pub inner_mtu: u16,
}

/// Validates and strips the VXLAN header of every packet from the overlay port.
pub fn decap(
    batch: &mut Batch,
    overlay: &Overlay,
    gateway_mac: MacAddr,
    counters: &mut [PortCounters],
) {
    let Some(port) = overlay.port else { return };
    for pkt in batch.packets_mut() {
        if pkt.meta.action != Action::Continue || pkt.meta.in_port != port {
            continue;
        }
        if let Err(reason) = decap_one(pkt, overlay, gateway_mac) {
            drop_packet(&mut pkt.meta.action, port, reason, counters);
        }
    }
}

#[inline]
fn decap_one(pkt: &mut Packet, overlay: &Overlay, gateway_mac: MacAddr) -> Result<(), DropReason> {
    let d = pkt.data();
    let inner = d.get(vxlan::HEADER_LEN..).ok_or(DropReason::VxlanMalformed)?;
    EthernetFrame::new_checked(inner).map_err(|_| DropReason::VxlanMalformed)?;
    let header = VxlanHeader::new_checked(d).map_err(|e| match e {
        wire::Error::Truncated { .. } => DropReason::VxlanMalformed,
        wire::Error::Invalid { .. } => DropReason::VxlanBadFlags,
    })?;
    if header.vni().get() != overlay.vni {
        return Err(DropReason::VxlanUnknownVni);
    }
    match pkt.meta.tunnel {
        Some(ip) if overlay.peers.by_underlay(ip).is_some() => {}
        _ => return Err(DropReason::VxlanUnknownPeer),
    }
    if !pkt.pull_front(vxlan::HEADER_LEN) {
        return Err(DropReason::VxlanMalformed);
    }
    let mut inner =
        EthernetFrame::new_checked(pkt.data_mut()).map_err(|_| DropReason::VxlanMalformed)?;
    if inner.ethertype() != EtherType::Ipv4 {
        return Err(DropReason::VxlanInnerNotIpv4);
    }
    inner.set_dst_addr(gateway_mac);
    Ok(())
}

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
        let seg = crate::port::gso::tcp4_segmentation(pkt.data(), vnet.gso_size)
            .ok_or(DropReason::L4Truncated)?;
        let headers =
            seg.hdr_len.checked_sub(usize::from(pkt.meta.l3_offset)).ok_or(DropReason::Runt)?;
        u16::try_from(headers + seg.mss).unwrap_or(u16::MAX)
    } else {
        if vnet.needs_csum() && !pkt.complete_checksum() {
            return Err(DropReason::L4Truncated);
        }
        0
    };
    let l3 = usize::from(pkt.meta.l3_offset);
    let (eth, ip_bytes) =
        pkt.data_mut().split_at_mut_checked(l3).ok_or(DropReason::Ipv4BadHeader)?;
    let mut eth = EthernetFrame::new_checked(eth).map_err(|_| DropReason::Runt)?;
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
    super::gateway::decrement_ttl(&mut ip);
    eth.set_src_addr(gw.mac);
    eth.set_dst_addr(vtep_mac);
    pkt.meta.tunnel = Some(tunnel);
    Ok(Action::Forward(port))
}

/// Rewrites `pkt` (an untagged IPv4 frame too big for the overlay) into an ICMP destination
/// unreachable / fragmentation needed (RFC 1191) from the gateway to its sender. False when
/// the frame is not one (see [`super::reply::icmp_error`]): the caller drops it.
pub fn frag_needed_reply(pkt: &mut Packet, gw: &Gateway, mtu: u16) -> bool {
    super::reply::icmp_error(pkt, gw.ip, gw.mac, 3, 4, mtu)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PeerConfig;
    use crate::pipeline::classify;
    use crate::pipeline::testutil::*;

    const OV: PortId = PortId(9);
    const PEER_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 2);

    fn overlay() -> Overlay {
        let mut peers = PeerTable::new(4);
        peers
            .upsert(PeerConfig::parse("n2", "192.168.0.2", "10.244.2.0/24", None).unwrap())
            .unwrap();
        Overlay { port: Some(OV), vni: 1, peers, inner_mtu: 1450 }
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

    fn vxlan_datagram(flags: u8, vni: u32, inner: &[u8]) -> Vec<u8> {
        let v = vni.to_be_bytes();
        let mut d = vec![flags, 0, 0, 0, v[1], v[2], v[3], 0];
        d.extend_from_slice(inner);
        d
    }

    fn decap_one_frame(datagram: &[u8], from: Ipv4Addr) -> (Action, Vec<u8>, PortCounters) {
        let mut b = Batch::new();
        b.push_frame(OV, datagram);
        b.packets_mut()[0].meta.tunnel = Some(from);
        let mut c = vec![PortCounters::default(); 10];
        decap(&mut b, &overlay(), GW_MAC, &mut c);
        classify::run(&mut b, &mut c);
        let p = &b.packets()[0];
        (p.meta.action, p.data().to_vec(), c[OV.index()])
    }

    #[test]
    fn valid_vxlan_is_stripped_and_aimed_at_the_gateway() {
        let inner = udp_frame(MAC_C, MAC_A, Ipv4Addr::new(10, 244, 2, 5), IP_A, 1, 2, b"x");
        let (action, out, c) = decap_one_frame(&vxlan_datagram(0x08, 1, &inner), PEER_IP);
        assert_eq!(action, Action::Continue);
        assert_eq!(&out[..6], &GW_MAC.0);
        assert_eq!(&out[6..], &inner[6..]);
        assert_eq!(c.total_drops(), 0);
    }

    #[test]
    fn malformed_vxlan_is_dropped_by_reason() {
        let inner = udp_frame(MAC_C, MAC_A, Ipv4Addr::new(10, 244, 2, 5), IP_A, 1, 2, b"x");
        let arp = arp_request(MAC_C, Ipv4Addr::new(10, 244, 2, 5), IP_A);
        let cases: [(Vec<u8>, Ipv4Addr, DropReason); 5] = [
            (vec![0x08, 0, 0, 0, 0, 0, 1, 0, 1, 2], PEER_IP, DropReason::VxlanMalformed),
            (vxlan_datagram(0x00, 1, &inner), PEER_IP, DropReason::VxlanBadFlags),
            (vxlan_datagram(0x08, 2, &inner), PEER_IP, DropReason::VxlanUnknownVni),
            (
                vxlan_datagram(0x08, 1, &inner),
                Ipv4Addr::new(192, 168, 0, 77),
                DropReason::VxlanUnknownPeer,
            ),
            (vxlan_datagram(0x08, 1, &arp), PEER_IP, DropReason::VxlanInnerNotIpv4),
        ];
        for (d, from, reason) in cases {
            let (action, _, c) = decap_one_frame(&d, from);
            assert_eq!(action, Action::Drop(reason));
            assert_eq!(c.drops[reason as usize], 1);
        }
    }

    fn classified(frame: &[u8]) -> Packet {
        let mut b = Batch::new();
        b.push_frame(PortId(1), frame);
        let mut c = vec![PortCounters::default(); 10];
        classify::run(&mut b, &mut c);
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

    proptest::proptest! {
        /// Arbitrary datagrams from the overlay port, or arbitrary frames from a pod toward a
        /// peer, through the whole pipeline: no panic, nothing flooded, nothing relayed back
        /// into the overlay, every drop counted.
        #[test]
        fn arbitrary_input_never_panics_or_loops(
            data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
            from_overlay in proptest::prelude::any::<bool>(),
            known_sender in proptest::prelude::any::<bool>(),
        ) {
            let mut config = crate::config::Config::for_node(
                "n1",
                "10.244.1.0/24".parse().unwrap(),
                "/nonexistent".into(),
            );
            config.overlay = Some(crate::config::OverlayConfig {
                underlay_ip: Ipv4Addr::new(192, 168, 0, 1),
                vni: 1,
                udp_port: 4789,
                underlay_mtu: 1500,
                udp_checksum: false,
                afxdp_interface: None,
                max_peers: 4,
                peers: vec![PeerConfig::parse("n2", "192.168.0.2", "10.244.2.0/24", None).unwrap()],
            });
            let mut p = crate::pipeline::Pipeline::new(&config);
            p.gateway.overlay_port = Some(OV);
            p.overlay.as_mut().unwrap().port = Some(OV);
            let mut b = Batch::new();
            let port = if from_overlay { OV } else { PortId(1) };
            let mut frame = data.clone();
            if !from_overlay && frame.len() >= 6 {
                frame[..6].copy_from_slice(&p.gateway.mac.0);
            }
            b.push_frame(port, &frame);
            b.packets_mut()[0].meta.tunnel =
                Some(if known_sender { PEER_IP } else { Ipv4Addr::new(192, 168, 0, 99) });
            let mut c = vec![PortCounters::default(); 10];
            p.run(&mut b, &mut c, std::time::Instant::now());
            let action = b.packets()[0].meta.action;
            if from_overlay {
                proptest::prop_assert!(action != Action::Flood);
                proptest::prop_assert!(action != Action::Forward(OV));
            }
            if let Action::Drop(r) = action {
                proptest::prop_assert_eq!(c[port.index()].drops[r as usize], 1);
            }
        }
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
    fn every_truncation_of_a_datagram_is_decapsulated_or_dropped_as_malformed() {
        let inner = udp_frame(MAC_C, MAC_A, Ipv4Addr::new(10, 244, 2, 5), IP_A, 1, 2, b"x");
        let datagram = vxlan_datagram(0x08, 1, &inner);
        for cut in 0..=datagram.len() {
            let mut pkt = Packet::new();
            assert!(pkt.fill_from(&datagram[..cut]));
            pkt.meta.tunnel = Some(PEER_IP);
            let r = decap_one(&mut pkt, &overlay(), GW_MAC);
            if cut < vxlan::HEADER_LEN + 14 {
                assert_eq!(r, Err(DropReason::VxlanMalformed), "cut {cut}");
            } else {
                assert_eq!(r, Ok(()), "cut {cut}");
                assert_eq!(&pkt.data()[..6], &GW_MAC.0);
                assert_eq!(pkt.data()[6..], inner[6..cut - vxlan::HEADER_LEN]);
            }
        }
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
