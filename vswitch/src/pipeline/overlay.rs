//! The overlay: pods on other nodes, reached through VXLAN (RFC 7348) over the underlay.
//!
//! The overlay is *routed*, as Flannel's vxlan backend is: the control plane knows which node
//! owns which pod CIDR ([`PeerTable`]), so nothing is flooded across the underlay and no MAC
//! is learned from it.
//!
//! - **Decapsulation** ([`decap`], first stage): the overlay port delivers each datagram's
//!   payload (VXLAN header + inner frame) with the sender's underlay address in
//!   `meta.tunnel`. The header is checked (I flag, this node's VNI, a known sender) and
//!   removed; the inner frame must be untagged IPv4 from the sending peer's pod CIDR or its
//!   node (underlay) address (anything else is `overlay_src_spoofed`: a peer speaks only for
//!   its own pods), and its destination MAC is set to the gateway's, so the gateway stage routes it to the local pod (or the host port) whatever
//!   MAC the sending VTEP chose. Anything else is dropped and counted by reason.
//! - **Encapsulation decision**: the gateway stage's, in `gateway/to_peer.rs`; the overlay
//!   port builds the outer headers.

use crate::packet::{Action, Batch, Packet};
use crate::port::PortId;
use crate::stats::{DropReason, PortCounters};
use crate::tables::peers::PeerTable;
use crate::wire::{self, vxlan, EtherType, EthernetFrame, Ipv4Packet, MacAddr, VxlanHeader};

use super::drop_packet;

/// The overlay's state in the pipeline.
#[derive(Debug, Clone)]
pub struct Overlay {
    /// The overlay port, once attached.
    pub port: Option<PortId>,
    /// This node's VNI.
    pub vni: u32,
    /// The peers: the control plane's published table (read only; a new one is swapped in
    /// between bursts).
    pub peers: std::sync::Arc<PeerTable>,
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
    let peer = pkt
        .meta
        .tunnel
        .and_then(|ip| overlay.peers.by_underlay(ip))
        .ok_or(DropReason::VxlanUnknownPeer)?;
    let (peer_cidr, peer_ip) = (peer.pod_cidr, peer.ip);
    if !pkt.pull_front(vxlan::HEADER_LEN) {
        return Err(DropReason::VxlanMalformed);
    }
    let mut inner =
        EthernetFrame::new_checked(pkt.data_mut()).map_err(|_| DropReason::VxlanMalformed)?;
    if inner.ethertype() != EtherType::Ipv4 {
        return Err(DropReason::VxlanInnerNotIpv4);
    }
    // A malformed inner header is classify's to drop (and name).
    if let Ok(ip) = Ipv4Packet::new_checked(inner.payload()) {
        let src = ip.src_addr();
        if src != peer_ip && !peer_cidr.contains(src) {
            return Err(DropReason::OverlaySrcSpoofed);
        }
    }
    inner.set_dst_addr(gateway_mac);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::config::PeerConfig;
    use crate::pipeline::classify;
    use crate::pipeline::testutil::*;

    const OV: PortId = OVERLAY_PORT;
    const PEER_IP: Ipv4Addr = PEER_UNDERLAY_IP;

    fn overlay() -> Overlay {
        overlay_fixture()
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
        classify::run(&mut b, &mut c, Some(0));
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

    #[test]
    fn inner_sources_must_be_the_senders() {
        let from = |src: Ipv4Addr| {
            let inner = udp_frame(MAC_C, MAC_A, src, IP_A, 1, 2, b"x");
            decap_one_frame(&vxlan_datagram(0x08, 1, &inner), PEER_IP).0
        };
        let peer = overlay().peers.by_underlay(PEER_IP).unwrap().clone();
        assert_eq!(from(peer.pod_cidr.nth(5).unwrap()), Action::Continue);
        assert_eq!(from(PEER_IP), Action::Continue);
        let spoofed = Action::Drop(DropReason::OverlaySrcSpoofed);
        // A local pod, the gateway, another node's pods, an outside address.
        for src in [IP_B, GW_IP, Ipv4Addr::new(10, 244, 3, 7), Ipv4Addr::new(8, 8, 8, 8)] {
            assert!(!peer.pod_cidr.contains(src));
            assert_eq!(from(src), spoofed, "{src}");
        }
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
            p.run(&mut b, &mut c, std::time::Instant::now(), crate::pipeline::Entry::Port, &[]);
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
}
