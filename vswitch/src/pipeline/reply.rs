//! Answers the switch writes itself in place of a frame: ICMP errors (fragmentation needed,
//! port unreachable) and TCP resets. The frame is rewritten into the answer in its own buffer
//! and sent back out of the port it came from (`Action::Reply`); the answer carries no
//! offload metadata.
//!
//! Both take an untagged IPv4 frame whose IPv4 header classify has validated.

use std::net::Ipv4Addr;

use crate::packet::Packet;
use crate::wire::{checksum, IpProtocol, MacAddr};

const ETH: usize = 14;

/// Rewrites `pkt` into an ICMP error of `typ`/`code` from `from_ip`/`from_mac` to the frame's
/// sender, quoting the original IP header and the first 8 bytes of its payload (RFC 792);
/// `mtu` fills the next-hop MTU field (RFC 1191; 0 for other errors).
pub fn icmp_error(
    pkt: &mut Packet,
    from_ip: Ipv4Addr,
    from_mac: MacAddr,
    typ: u8,
    code: u8,
    mtu: u16,
) {
    let d = pkt.data();
    let ihl = usize::from(d[ETH] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([d[ETH + 2], d[ETH + 3]]));
    let quote_len = (ihl + 8).min(total).min(d.len() - ETH);
    let mut quote = [0u8; 68];
    quote[..quote_len].copy_from_slice(&d[ETH..ETH + quote_len]);
    let requester_mac = MacAddr::from_slice(&d[6..12]).unwrap_or(MacAddr::ZERO);
    let requester_ip = Ipv4Addr::new(d[26], d[27], d[28], d[29]);
    let len = ETH + 20 + 8 + quote_len;
    // The answer may be longer than a small original: the buffer has room (it is sized for
    // super-frames), and every byte of the answer is written below.
    pkt.set_len(len);
    let f = pkt.data_mut();
    write_eth_ip(
        f,
        requester_mac,
        from_mac,
        from_ip,
        requester_ip,
        IpProtocol::Icmp,
        8 + quote_len,
    );
    let icmp = &mut f[ETH + 20..len];
    icmp[..8].copy_from_slice(&[typ, code, 0, 0, 0, 0, 0, 0]);
    icmp[6..8].copy_from_slice(&mtu.to_be_bytes());
    icmp[8..].copy_from_slice(&quote[..quote_len]);
    let c = checksum::checksum(icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    pkt.meta.vnet = Default::default();
}

/// Rewrites a TCP segment into the reset its receiver would send (RFC 9293 §3.10.7.1): from
/// the segment's destination (as the sender addressed it) back to its source, with `from_mac`.
pub fn tcp_reset(pkt: &mut Packet, from_mac: MacAddr) {
    let d = pkt.data();
    let ihl = usize::from(d[ETH] & 0x0f) * 4;
    let l4 = ETH + ihl;
    let total = usize::from(u16::from_be_bytes([d[ETH + 2], d[ETH + 3]]));
    let src_mac = MacAddr::from_slice(&d[6..12]).unwrap_or(MacAddr::ZERO);
    let (src, dst) =
        (Ipv4Addr::new(d[26], d[27], d[28], d[29]), Ipv4Addr::new(d[30], d[31], d[32], d[33]));
    let t = &d[l4..];
    let (sport, dport) = (u16::from_be_bytes([t[0], t[1]]), u16::from_be_bytes([t[2], t[3]]));
    let seq = u32::from_be_bytes([t[4], t[5], t[6], t[7]]);
    let ack = u32::from_be_bytes([t[8], t[9], t[10], t[11]]);
    let flags = t[13];
    let doff = usize::from(t[12] >> 4) * 4;
    let payload = total.saturating_sub(ihl + doff) as u32;
    // With ACK set: <SEQ=SEG.ACK><CTL=RST>; otherwise <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>.
    let (rseq, rack, rflags) = if flags & 0x10 != 0 {
        (ack, 0, 0x04)
    } else {
        let syn_fin = u32::from(flags & 0x02 != 0) + u32::from(flags & 0x01 != 0);
        (0, seq.wrapping_add(payload + syn_fin), 0x14)
    };
    pkt.set_len(ETH + 40);
    let f = pkt.data_mut();
    write_eth_ip(f, src_mac, from_mac, dst, src, IpProtocol::Tcp, 20);
    let tcp = &mut f[ETH + 20..ETH + 40];
    tcp.fill(0);
    tcp[0..2].copy_from_slice(&dport.to_be_bytes());
    tcp[2..4].copy_from_slice(&sport.to_be_bytes());
    tcp[4..8].copy_from_slice(&rseq.to_be_bytes());
    tcp[8..12].copy_from_slice(&rack.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = rflags;
    let sum = checksum::add(
        checksum::pseudo_header_v4(&dst, &src, IpProtocol::Tcp, 20),
        checksum::sum(tcp),
    );
    let c = checksum::finish(sum);
    tcp[16..18].copy_from_slice(&c.to_be_bytes());
    pkt.meta.vnet = Default::default();
}

/// Writes Ethernet (to `dst_mac` from `src_mac`) and a 20-byte IPv4 header (TTL 64, no DF)
/// for `payload_len` bytes of `proto` from `src` to `dst`, with its checksum.
fn write_eth_ip(
    f: &mut [u8],
    dst_mac: MacAddr,
    src_mac: MacAddr,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: IpProtocol,
    payload_len: usize,
) {
    f[..6].copy_from_slice(&dst_mac.0);
    f[6..12].copy_from_slice(&src_mac.0);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip = &mut f[ETH..ETH + 20];
    ip.copy_from_slice(&[
        0x45,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        64,
        u8::from(proto),
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
    ]);
    ip[2..4].copy_from_slice(&((20 + payload_len) as u16).to_be_bytes());
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    let c = checksum::checksum(ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
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
        tcp_reset(&mut p, GW_MAC);
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
        icmp_error(&mut p, vip, GW_MAC, 3, 3, 0);
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
}
