//! Classify: parse each frame once (Ethernet, one 802.1Q tag, then IPv4, ARP or IPv6 and the
//! L4 header length), record what later stages need in [`Meta`](crate::packet::Meta) (the
//! offsets, the IPv4 5-tuple, fragment bits and the flow hash the conntrack tables index
//! by), and drop what is malformed with a counted reason. Later stages and steering read
//! those fields instead of parsing the headers again.
//!
//! What counts as malformed is what no receiver could make sense of: a frame shorter than an
//! Ethernet header, a truncated tag, an IPv4 header or total length that does not fit the
//! frame, an ARP or L4 header cut short. Frames of other EtherTypes are switched untouched.
//! A multicast source MAC is dropped here too, before anything could learn it.

use crate::packet::{Action, Batch, FlowKey, Frag, Packet};
use crate::stats::{DropReason, PortCounters};
use crate::wire::{
    self, ArpPacket, ArpRepr, EtherType, IcmpPacket, IpProtocol, Ipv4Packet, Ipv6Packet, Layer,
    Ports, TcpPacket, UdpPacket,
};

use super::drop_packet;

/// Classifies every undecided packet of the batch; `seed` is the flow seed
/// (`Steering::flow_seed`) the 5-tuples are hashed with, `None` when nothing will read the
/// hash (no Service NAT work on this worker).
pub fn run(batch: &mut Batch, counters: &mut [PortCounters], seed: Option<u64>) {
    for pkt in batch.packets_mut() {
        if pkt.meta.action != Action::Continue {
            continue;
        }
        if let Err(reason) = classify_seeded(pkt, seed) {
            let in_port = pkt.meta.in_port;
            drop_packet(&mut pkt.meta.action, in_port, reason, counters);
        }
    }
}

/// Parses one frame and fills its metadata, hashing with seed 0 (for tests and tools; the
/// pipeline uses [`run`]).
pub fn classify(pkt: &mut Packet) -> Result<(), DropReason> {
    classify_seeded(pkt, Some(0))
}

/// Parses one frame and fills its metadata; `seed` as in [`run`].
#[inline]
pub fn classify_seeded(pkt: &mut Packet, seed: Option<u64>) -> Result<(), DropReason> {
    let data = pkt.data();
    let l2 = wire::parse_l2(data).map_err(|e| match e {
        wire::Error::Truncated { layer: Layer::Vlan, .. } => DropReason::VlanTruncated,
        _ => DropReason::Runt,
    })?;
    if l2.src.is_multicast() {
        return Err(DropReason::SrcMacMulticast);
    }
    let l3 = data.get(l2.payload_offset..).unwrap_or(&[]);
    let mut l4_offset = 0;
    let mut flow = FlowKey::default();
    let mut frag = Frag::Whole;
    let mut has_ports = false;
    match l2.ethertype {
        EtherType::Ipv4 => {
            let ip = Ipv4Packet::new_checked(l3).map_err(ipv4_reason)?;
            let proto = ip.next_header();
            flow.proto = u8::from(proto);
            flow.src = ip.src_addr();
            flow.dst = ip.dst_addr();
            l4_offset = l2.payload_offset + usize::from(ip.header_len());
            frag = Frag::of(ip.more_frags(), ip.frag_offset());
            // Only a first fragment (or an unfragmented packet) carries the L4 header.
            if frag != Frag::Later {
                let l4 = ip.payload();
                let l4_ok = match proto {
                    IpProtocol::Tcp => TcpPacket::new_checked(l4).is_ok(),
                    IpProtocol::Udp => UdpPacket::new_checked(l4).is_ok(),
                    IpProtocol::Icmp => IcmpPacket::new_checked(l4).is_ok(),
                    _ => true,
                };
                if !l4_ok && frag == Frag::Whole {
                    return Err(DropReason::L4Truncated);
                }
                // A first fragment's UDP length (and a TCP header's options, rarely) run
                // past it: its fixed header is enough for the ports.
                let fixed = match proto {
                    IpProtocol::Tcp => wire::tcp::HEADER_LEN,
                    IpProtocol::Udp => wire::udp::HEADER_LEN,
                    _ => usize::MAX,
                };
                if fixed <= l4.len() && (l4_ok || frag == Frag::First) {
                    let ports = Ports::new_unchecked(l4);
                    flow.sport = ports.src_port();
                    flow.dport = ports.dst_port();
                    has_ports = true;
                }
            }
        }
        EtherType::Arp => {
            let arp = ArpPacket::new_checked(l3).map_err(|_| DropReason::ArpMalformed)?;
            ArpRepr::parse(&arp).map_err(|_| DropReason::ArpMalformed)?;
        }
        EtherType::Ipv6 => {
            Ipv6Packet::new_checked(l3).map_err(|_| DropReason::Ipv6BadHeader)?;
        }
        _ => {}
    }
    let meta = &mut pkt.meta;
    meta.ethertype = u16::from(l2.ethertype);
    meta.vlan = l2.vlan;
    meta.l3_offset = l2.payload_offset as u16;
    meta.l4_offset = l4_offset as u16;
    meta.flow = flow;
    meta.frag = frag;
    meta.has_ports = has_ports;
    (meta.flow_hash, meta.hashed) = match seed {
        Some(seed) if has_ports => (flow.seeded_hash(seed), true),
        _ => (0, false),
    };
    Ok(())
}

fn ipv4_reason(e: wire::Error) -> DropReason {
    match e {
        wire::Error::Invalid { field: "total_len", .. } => DropReason::Ipv4BadLength,
        _ => DropReason::Ipv4BadHeader,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::testutil::*;
    use crate::port::PortId;
    use proptest::prelude::*;

    fn classify_frame(frame: &[u8]) -> Result<Packet, DropReason> {
        let mut p = Packet::new();
        assert!(p.fill_from(frame));
        classify(&mut p).map(|()| p)
    }

    #[test]
    fn fills_meta_for_udp() {
        let f = udp_frame(MAC_A, MAC_B, IP_A, IP_B, 1000, 2000, b"hello");
        let p = classify_frame(&f).unwrap();
        assert_eq!(p.meta.ethertype, 0x0800);
        assert_eq!(p.meta.l3_offset, 14);
        assert_eq!(p.meta.l4_offset, 34);
        assert_eq!(p.meta.flow.proto, 17);
        assert_eq!(p.meta.vlan, None);
        let flow = FlowKey { src: IP_A, dst: IP_B, sport: 1000, dport: 2000, proto: 17 };
        assert_eq!(p.meta.flow, flow);
        assert_eq!(p.meta.frag, Frag::Whole);
        assert!(p.meta.has_ports);
        assert_eq!(p.meta.flow_hash, flow.seeded_hash(0));
    }

    #[test]
    fn fragments_carry_ports_only_in_the_first() {
        let f = udp_frame(MAC_A, MAC_B, IP_A, IP_B, 1000, 2000, b"hello");
        let mut first = f.clone();
        first[20] = 0x20; // MF
        first[24..26].copy_from_slice(&[0, 0]);
        let mut first_ip = Ipv4Packet::new_unchecked(&mut first[14..]);
        first_ip.fill_checksum();
        let p = classify_frame(&first).unwrap();
        assert_eq!((p.meta.frag, p.meta.has_ports, p.meta.flow.dport), (Frag::First, true, 2000));
        let mut later = f.clone();
        later[20..22].copy_from_slice(&[0x00, 0x02]); // offset 16 bytes, MF clear
        let mut later_ip = Ipv4Packet::new_unchecked(&mut later[14..]);
        later_ip.fill_checksum();
        let p = classify_frame(&later).unwrap();
        assert_eq!((p.meta.frag, p.meta.has_ports, p.meta.flow.sport), (Frag::Later, false, 0));
        assert_eq!((p.meta.flow.src, p.meta.flow.dst, p.meta.flow_hash), (IP_A, IP_B, 0));
    }

    #[test]
    fn reads_through_a_vlan_tag() {
        let mut f = udp_frame(MAC_A, MAC_B, IP_A, IP_B, 1, 2, b"x");
        f.splice(12..12, [0x81, 0x00, 0x00, 0x64]);
        let p = classify_frame(&f).unwrap();
        assert_eq!(p.meta.vlan, Some(100));
        assert_eq!(p.meta.l3_offset, 18);
        assert_eq!(p.meta.ethertype, 0x0800);
    }

    #[test]
    fn names_each_malformation() {
        let good = udp_frame(MAC_A, MAC_B, IP_A, IP_B, 1, 2, b"payload");
        assert_eq!(classify_frame(&good[..10]).unwrap_err(), DropReason::Runt);
        let mut vlan = good[..16].to_vec();
        vlan[12..14].copy_from_slice(&[0x81, 0x00]);
        assert_eq!(classify_frame(&vlan[..16]).unwrap_err(), DropReason::VlanTruncated);
        assert_eq!(classify_frame(&good[..20]).unwrap_err(), DropReason::Ipv4BadHeader);
        let mut long = good.clone();
        long[16..18].copy_from_slice(&1400u16.to_be_bytes());
        assert_eq!(classify_frame(&long).unwrap_err(), DropReason::Ipv4BadLength);
        let mut short = good.clone();
        short[16..18].copy_from_slice(&10u16.to_be_bytes());
        assert_eq!(classify_frame(&short).unwrap_err(), DropReason::Ipv4BadLength);
        let mut ihl = good.clone();
        ihl[14] = 0x44;
        assert_eq!(classify_frame(&ihl).unwrap_err(), DropReason::Ipv4BadHeader);
        let mut udp_cut = good.clone();
        udp_cut[16..18].copy_from_slice(&24u16.to_be_bytes());
        assert_eq!(classify_frame(&udp_cut).unwrap_err(), DropReason::L4Truncated);
        let mut mc = good.clone();
        mc[6] |= 1;
        assert_eq!(classify_frame(&mc).unwrap_err(), DropReason::SrcMacMulticast);
        let arp = arp_request(MAC_A, IP_A, IP_B);
        assert_eq!(classify_frame(&arp[..30]).unwrap_err(), DropReason::ArpMalformed);
    }

    #[test]
    fn unknown_ethertypes_pass() {
        let mut f = vec![0u8; 60];
        f[..6].copy_from_slice(&MAC_B.0);
        f[6..12].copy_from_slice(&MAC_A.0);
        f[12..14].copy_from_slice(&0x88ccu16.to_be_bytes());
        let p = classify_frame(&f).unwrap();
        assert_eq!(p.meta.ethertype, 0x88cc);
    }

    #[test]
    fn batch_run_counts_drops_on_the_ingress_port() {
        let mut b = Batch::new();
        b.push_frame(PortId(2), &[0u8; 5]);
        b.push_frame(PortId(2), &udp_frame(MAC_A, MAC_B, IP_A, IP_B, 1, 2, b"ok"));
        let mut counters = vec![PortCounters::default(); 4];
        run(&mut b, &mut counters, Some(0));
        assert_eq!(b.packets()[0].meta.action, Action::Drop(DropReason::Runt));
        assert_eq!(b.packets()[1].meta.action, Action::Continue);
        assert_eq!(counters[2].drops[DropReason::Runt as usize], 1);
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes(frame in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = classify_frame(&frame);
        }

        #[test]
        fn never_panics_on_mutated_valid_frames(
            cut in 0usize..120,
            flips in proptest::collection::vec((0usize..120, any::<u8>()), 0..6),
        ) {
            let mut f = tcp_frame(MAC_A, MAC_B, IP_A, IP_B, 1, 2, 0x02, b"some data here");
            for (i, v) in flips {
                if i < f.len() { f[i] = v; }
            }
            f.truncate(cut.min(f.len()));
            let _ = classify_frame(&f);
        }
    }
}
