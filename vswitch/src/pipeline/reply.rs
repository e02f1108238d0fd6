//! Answers the switch writes itself in place of a frame: ICMP errors (fragmentation needed,
//! port unreachable) and TCP resets. The frame is rewritten into the answer in its own buffer
//! and sent back out of the port it came from (`Action::Reply`); the answer carries no
//! offload metadata.
//!
//! Both read the frame through the `wire` views and answer only an untagged IPv4 frame whose
//! IPv4 header checks (a reset also needs a whole TCP header); for anything else they write
//! nothing and return false, for the caller to drop the frame.

use std::net::Ipv4Addr;

use crate::packet::Packet;
use crate::wire::{
    ethernet, icmp, ipv4, tcp, EtherType, EthernetFrame, EthernetRepr, IcmpMessage, IcmpPacket,
    IpProtocol, Ipv4Packet, MacAddr, TcpFlags, TcpPacket,
};

/// TTL of the answers.
const TTL: u8 = 64;

/// Longest quote: an IPv4 header with every option and 8 bytes of its payload.
const MAX_QUOTE: usize = 60 + 8;

/// Rewrites `pkt` into an ICMP error of `typ`/`code` from `from_ip`/`from_mac` to the frame's
/// sender, quoting the original IP header and the first 8 bytes of its payload (RFC 792);
/// `mtu` fills the next-hop MTU field (RFC 1191; 0 for other errors). False when it is not
/// an untagged IPv4 frame with a valid header: no answer was written, the caller drops it.
pub fn icmp_error(
    pkt: &mut Packet,
    from_ip: Ipv4Addr,
    from_mac: MacAddr,
    typ: u8,
    code: u8,
    mtu: u16,
) -> bool {
    let mut quote = [0u8; MAX_QUOTE];
    let (requester_mac, requester_ip, quote_len) = {
        let Some((requester_mac, ip)) = ipv4_of(pkt.data()) else { return false };
        let quote_len = (usize::from(ip.header_len()) + 8).min(usize::from(ip.total_len()));
        let requester_ip = ip.src_addr();
        let Some(original) = ip.into_inner().get(..quote_len) else { return false };
        let Some(q) = quote.get_mut(..quote_len) else { return false };
        q.copy_from_slice(original);
        (requester_mac, requester_ip, quote_len)
    };
    let icmp_len = icmp::HEADER_LEN + quote_len;
    let Some(mut ip) = answer(pkt, requester_mac, from_mac, IpProtocol::Icmp, icmp_len) else {
        return false;
    };
    let Ok(mut icmp) = IcmpPacket::new_checked(ip_payload(&mut ip, from_ip, requester_ip)) else {
        return false;
    };
    icmp.set_msg_type(IcmpMessage::from(typ));
    icmp.set_msg_code(code);
    icmp.set_next_hop_mtu(mtu);
    let Some(data) = icmp.data_mut().get_mut(..quote_len) else { return false };
    let Some(q) = quote.get(..quote_len) else { return false };
    data.copy_from_slice(q);
    icmp.fill_checksum();
    pkt.meta.vnet = Default::default();
    true
}

/// Rewrites a TCP segment into the reset its receiver would send (RFC 9293 §3.10.7.1): from
/// the segment's destination (as the sender addressed it) back to its source, with `from_mac`.
/// False when it is not an untagged IPv4 frame with a complete TCP header: no answer was
/// written, the caller drops it.
pub fn tcp_reset(pkt: &mut Packet, from_mac: MacAddr) -> bool {
    let ((sender_mac, src, dst), (sport, dport), (rseq, rack, rflags)) = {
        let Some((sender_mac, ip)) = ipv4_of(pkt.data()) else { return false };
        if ip.next_header() != IpProtocol::Tcp {
            return false;
        }
        let Ok(t) = TcpPacket::new_checked(ip.payload()) else { return false };
        let payload = t.payload().len() as u32;
        // With ACK set: <SEQ=SEG.ACK><CTL=RST>;
        // otherwise <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>.
        let (rseq, rack, rflags) = if t.ack() {
            (t.ack_number(), 0, TcpFlags::RST)
        } else {
            let syn_fin = u32::from(t.syn()) + u32::from(t.fin());
            (0, t.seq_number().wrapping_add(payload + syn_fin), TcpFlags::RST | TcpFlags::ACK)
        };
        (
            (sender_mac, ip.src_addr(), ip.dst_addr()),
            (t.src_port(), t.dst_port()),
            (rseq, rack, rflags),
        )
    };
    let Some(mut ip) = answer(pkt, sender_mac, from_mac, IpProtocol::Tcp, tcp::HEADER_LEN) else {
        return false;
    };
    let tcp_bytes = ip_payload(&mut ip, dst, src);
    if tcp_bytes.len() != tcp::HEADER_LEN {
        return false;
    }
    // The answer's own bytes, of the length just checked; the header is written from scratch.
    let mut t = TcpPacket::new_unchecked(tcp_bytes);
    t.set_src_port(dport);
    t.set_dst_port(sport);
    t.set_seq_number(rseq);
    t.set_ack_number(rack);
    t.set_header_len(tcp::HEADER_LEN as u8);
    t.set_flags(rflags);
    t.set_window_len(0);
    t.set_urgent_at(0);
    t.fill_checksum(&dst, &src);
    pkt.meta.vnet = Default::default();
    true
}

/// The sender's MAC and the IPv4 view of an untagged IPv4 frame whose IPv4 header checks.
fn ipv4_of(d: &[u8]) -> Option<(MacAddr, Ipv4Packet<&[u8]>)> {
    let (eth_bytes, ip_bytes) = d.split_at_checked(ethernet::HEADER_LEN)?;
    let eth = EthernetFrame::new_checked(eth_bytes).ok()?;
    if eth.ethertype() != EtherType::Ipv4 {
        return None;
    }
    Some((eth.src_addr(), Ipv4Packet::new_checked(ip_bytes).ok()?))
}

/// Resizes `pkt` to an untagged IPv4 frame carrying `payload_len` bytes of `proto`, writes
/// its Ethernet header (to `dst_mac` from `src_mac`) and returns the IPv4 view over the rest,
/// for [`ip_payload`] to finish. The answer may be longer than a small original: the buffer
/// has room (it is sized for super-frames), and every byte of the answer is written.
fn answer(
    pkt: &mut Packet,
    dst_mac: MacAddr,
    src_mac: MacAddr,
    proto: IpProtocol,
    payload_len: usize,
) -> Option<Ipv4Packet<&mut [u8]>> {
    let len = ethernet::HEADER_LEN + ipv4::HEADER_LEN + payload_len;
    pkt.set_len(len);
    let frame = pkt.data_mut().get_mut(..len)?;
    let (eth_bytes, ip_bytes) = frame.split_at_mut_checked(ethernet::HEADER_LEN)?;
    let mut eth = EthernetFrame::new_checked(eth_bytes).ok()?;
    EthernetRepr { src_addr: src_mac, dst_addr: dst_mac, ethertype: EtherType::Ipv4 }
        .emit(&mut eth);
    if ip_bytes.len() != ipv4::HEADER_LEN + payload_len {
        return None;
    }
    // The bytes are the answer's own, sized just above: every fixed field is in bounds.
    let mut ip = Ipv4Packet::new_unchecked(ip_bytes);
    ip.set_version_and_header_len(ipv4::HEADER_LEN as u8);
    ip.set_dscp_ecn(0, 0);
    ip.set_total_len((ipv4::HEADER_LEN + payload_len) as u16);
    ip.set_ident(0);
    ip.set_frag(false, 0);
    ip.set_dont_frag(false);
    ip.set_hop_limit(TTL);
    ip.set_next_header(proto);
    Some(ip)
}

/// Sets the addresses of an [`answer`]'s IPv4 header, fills its checksum and returns its
/// payload, where the caller writes the ICMP or TCP message.
fn ip_payload<'a>(ip: &'a mut Ipv4Packet<&mut [u8]>, src: Ipv4Addr, dst: Ipv4Addr) -> &'a mut [u8] {
    ip.set_src_addr(src);
    ip.set_dst_addr(dst);
    ip.fill_checksum();
    ip.payload_mut()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::Batch;
    use crate::pipeline::testutil::*;
    use crate::port::PortId;

    fn packet(frame: &[u8]) -> Packet {
        let mut b = Batch::new();
        b.push_frame(PortId(1), frame);
        std::mem::take(&mut b.packets_mut()[0])
    }

    #[test]
    fn reset_answers_a_syn_from_its_destination() {
        let vip = Ipv4Addr::new(10, 96, 0, 20);
        let mut p = packet(&tcp_frame(MAC_A, GW_MAC, IP_A, vip, 40000, 80, 0x02, b""));
        assert!(tcp_reset(&mut p, GW_MAC));
        let s = etherparse::SlicedPacket::from_ethernet(p.data()).unwrap();
        let Some(etherparse::LinkSlice::Ethernet2(eth)) = s.link else { panic!() };
        assert_eq!((eth.destination(), eth.source()), (MAC_A.0, GW_MAC.0));
        let Some(etherparse::NetSlice::Ipv4(ip)) = s.net else { panic!() };
        assert_eq!((ip.header().source_addr(), ip.header().destination_addr()), (vip, IP_A));
        assert_eq!(ip.header().to_header().calc_header_checksum(), ip.header().header_checksum());
        let Some(etherparse::TransportSlice::Tcp(tcp)) = s.transport else { panic!() };
        assert!(tcp.rst() && tcp.ack());
        assert_eq!((tcp.source_port(), tcp.destination_port()), (80, 40000));
        assert_eq!(tcp.acknowledgment_number(), 1001, "SEG.SEQ (1000) + 1 for the SYN");
        let expect = tcp.to_header().calc_checksum_ipv4(&ip.header().to_header(), &[]).unwrap();
        assert_eq!(tcp.checksum(), expect);
    }

    #[test]
    fn port_unreachable_quotes_the_datagram() {
        let vip = Ipv4Addr::new(10, 96, 0, 21);
        let frame = udp_frame(MAC_A, GW_MAC, IP_A, vip, 5353, 53, b"query");
        let mut p = packet(&frame);
        assert!(icmp_error(&mut p, vip, GW_MAC, 3, 3, 0));
        let s = etherparse::SlicedPacket::from_ethernet(p.data()).unwrap();
        let Some(etherparse::NetSlice::Ipv4(ip)) = s.net else { panic!() };
        assert_eq!((ip.header().source_addr(), ip.header().destination_addr()), (vip, IP_A));
        let Some(etherparse::TransportSlice::Icmpv4(icmp)) = s.transport else { panic!() };
        assert_eq!(icmp.checksum(), icmp.icmp_type().calc_checksum(icmp.payload()));
        assert!(matches!(
            icmp.icmp_type(),
            etherparse::Icmpv4Type::DestinationUnreachable(
                etherparse::icmpv4::DestUnreachableHeader::Port
            )
        ));
        assert_eq!(icmp.payload(), &frame[14..14 + 28]);
    }

    /// A written answer is a well-formed frame to etherparse, with correct checksums.
    fn assert_valid_answer(d: &[u8]) {
        let s = etherparse::SlicedPacket::from_ethernet(d).unwrap();
        let Some(etherparse::NetSlice::Ipv4(ip)) = s.net else { panic!("{d:?}") };
        assert_eq!(ip.header().to_header().calc_header_checksum(), ip.header().header_checksum());
        assert!(!ip.header().dont_fragment());
        assert_eq!(ip.header().ttl(), TTL);
        match s.transport {
            Some(etherparse::TransportSlice::Tcp(tcp)) => {
                let want =
                    tcp.to_header().calc_checksum_ipv4(&ip.header().to_header(), &[]).unwrap();
                assert_eq!(tcp.checksum(), want);
                assert!(tcp.rst());
            }
            Some(etherparse::TransportSlice::Icmpv4(icmp)) => {
                assert_eq!(icmp.checksum(), icmp.icmp_type().calc_checksum(icmp.payload()));
            }
            other => panic!("{other:?}"),
        }
    }

    fn originals() -> Vec<Vec<u8>> {
        let vip = Ipv4Addr::new(10, 96, 0, 20);
        let mut tagged = udp_frame(MAC_A, GW_MAC, IP_A, vip, 5353, 53, b"query");
        tagged.splice(12..12, [0x81, 0x00, 0x00, 0x05]);
        let mut options = tcp_frame(MAC_A, GW_MAC, IP_A, vip, 1, 2, 0x10, b"data");
        // IHL 6 with one option word: a longer quote.
        options.splice(34..34, [1, 1, 1, 0]);
        options[14] = 0x46;
        let total = u16::from_be_bytes([options[16], options[17]]) + 4;
        options[16..18].copy_from_slice(&total.to_be_bytes());
        options[24..26].fill(0);
        let c = crate::wire::checksum::checksum(&options[14..38]);
        options[24..26].copy_from_slice(&c.to_be_bytes());
        vec![
            tcp_frame(MAC_A, GW_MAC, IP_A, vip, 40000, 80, 0x02, b""),
            tcp_frame(MAC_A, GW_MAC, IP_A, vip, 40000, 80, 0x19, b"payload"),
            udp_frame(MAC_A, GW_MAC, IP_A, vip, 5353, 53, b"query"),
            icmp_echo(MAC_A, GW_MAC, IP_A, vip, 1, 2, b"ping"),
            arp_request(MAC_A, IP_A, vip),
            options,
            tagged,
        ]
    }

    #[test]
    fn every_truncation_is_answered_or_refused_never_a_panic() {
        for frame in originals() {
            let tagged_or_arp = frame[12..14] != [0x08, 0x00];
            for cut in 0..=frame.len() {
                let whole = cut == frame.len();
                let mut p = packet(&frame[..cut]);
                let written = tcp_reset(&mut p, GW_MAC);
                let is_tcp = frame.get(23) == Some(&6);
                assert_eq!(written, whole && is_tcp && !tagged_or_arp, "reset, cut {cut}");
                if written {
                    assert_valid_answer(p.data());
                }
                let mut p = packet(&frame[..cut]);
                let written = icmp_error(&mut p, GW_IP, GW_MAC, 3, 4, 1450);
                assert_eq!(written, whole && !tagged_or_arp, "icmp error, cut {cut}");
                if written {
                    assert_valid_answer(p.data());
                }
            }
        }
    }

    #[test]
    fn an_ipv4_header_that_does_not_check_gets_no_answer() {
        let good = tcp_frame(MAC_A, GW_MAC, IP_A, IP_B, 1, 2, 0x02, b"");
        let lies: [(usize, u8); 5] = [(14, 0x65), (14, 0x44), (14, 0x4f), (16, 0xff), (17, 10)];
        for (at, v) in lies {
            let mut f = good.clone();
            f[at] = v;
            assert!(!tcp_reset(&mut packet(&f), GW_MAC), "byte {at} = {v:#x}");
            assert!(!icmp_error(&mut packet(&f), GW_IP, GW_MAC, 3, 3, 0), "byte {at} = {v:#x}");
        }
        // A TCP data offset past the segment: no reset, but an ICMP error may still quote it.
        let mut f = good.clone();
        f[46] = 0xf0;
        assert!(!tcp_reset(&mut packet(&f), GW_MAC));
        assert!(icmp_error(&mut packet(&f), GW_IP, GW_MAC, 3, 3, 0));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_and_mutated_frames_never_panic(
            which in 0usize..7,
            flips in proptest::collection::vec((0usize..80, proptest::prelude::any::<u8>()), 0..6),
            cut in 0usize..100,
            junk in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..100),
        ) {
            let mut f = originals().swap_remove(which);
            for (at, v) in flips {
                if let Some(b) = f.get_mut(at) {
                    *b = v;
                }
            }
            f.truncate(cut);
            for frame in [&f, &junk] {
                let mut p = packet(frame);
                if tcp_reset(&mut p, GW_MAC) {
                    proptest::prop_assert_eq!(p.len(), 54);
                }
                let mut p = packet(frame);
                if icmp_error(&mut p, GW_IP, GW_MAC, 3, 3, 0) {
                    proptest::prop_assert!(p.len() >= 62 && p.len() <= 62 + 60);
                }
            }
        }
    }
}
