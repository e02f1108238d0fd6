//! VXLAN encapsulation, the part both overlay ports share (the socket port in this module
//! and the AF_XDP underlay, `port/overlay_xdp.rs`): what each packet handed to an overlay
//! port becomes ([`plan`]), the outer IPv4 + UDP + VXLAN headers with the source port taken
//! from the inner flow ([`outer_headers`], [`flow_hash`]), and a super-frame's segments as
//! VXLAN payloads for one `UDP_SEGMENT` send ([`build_gso_payloads`]). Pure: no sockets, no
//! allocation.

use std::net::Ipv4Addr;
use std::ops::Range;

use super::OverlayOptions;
use crate::offload::gso::{tcp4_segment_headers, Segmentation};
use crate::packet::Packet;
use crate::port::TxOutcome;
use crate::wire::checksum;

/// Outer IPv4 (20) + UDP (8) + VXLAN (8).
pub const OUTER_LEN: usize = 36;

/// First outer UDP source port used (RFC 7348 recommends the dynamic range 49152–65535).
pub const SRC_PORT_BASE: u16 = 49152;

/// Most segments one `UDP_SEGMENT` send carries (the kernel's `UDP_MAX_SEGMENTS` is 64 on
/// older kernels, 128 on newer ones).
pub const GSO_MAX_SEGMENTS: usize = 64;

/// What an overlay port does with one packet it was handed ([`plan`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    /// One datagram to the peer at this underlay address: the outer headers, then the frame.
    Whole(Ipv4Addr),
    /// A TCP super-frame (`meta.vnet` GSO) for this peer: one datagram per segment.
    Segments(Ipv4Addr),
}

/// What `pkt` becomes on an overlay port; `None`, counted in `out.errors`, when no peer was
/// chosen for it (`meta.tunnel` unset: the gateway stage did not route it here).
#[inline]
pub fn plan(pkt: &Packet, out: &mut TxOutcome) -> Option<Plan> {
    match pkt.meta.tunnel {
        None => {
            out.errors += 1;
            None
        }
        Some(dst) if pkt.meta.vnet.is_gso() => Some(Plan::Segments(dst)),
        Some(dst) => Some(Plan::Whole(dst)),
    }
}

/// The VXLAN header (RFC 7348 §5): the I flag, then `vni` (24 bits).
#[inline]
pub fn vxlan_header(vni: u32) -> [u8; 8] {
    let v = vni.to_be_bytes();
    [0x08, 0, 0, 0, v[1], v[2], v[3], 0]
}

/// Segment `k`'s payload bytes in `frame` under `seg` (empty past the frame's end).
#[inline]
pub fn segment_range(frame: &[u8], seg: &Segmentation, k: usize) -> Range<usize> {
    let start = seg.hdr_len + k * seg.mss;
    let end = start.saturating_add(seg.mss).min(frame.len());
    start.min(end)..end
}

/// Builds, in `out`, the VXLAN payloads (VXLAN header with `vni`, then segment `k`'s inner
/// headers from [`tcp4_segment_headers`] and its payload) of segments `first..` of `seg`'s
/// split of `frame`, back to back, as many as fit in `out` and [`GSO_MAX_SEGMENTS`]. All but
/// the frame's last segment have the same size. Returns the bytes written, the segments
/// written and the size of one full segment's payload (the `UDP_SEGMENT` size); no segments
/// when not even one fits.
pub fn build_gso_payloads(
    frame: &[u8],
    seg: &Segmentation,
    first: usize,
    vni: u32,
    out: &mut [u8],
) -> (usize, usize, usize) {
    let unit = 8 + seg.hdr_len + seg.mss;
    let fit = (out.len() / unit).min(GSO_MAX_SEGMENTS);
    let last = seg.count.min(first.saturating_add(fit));
    let vxlan = vxlan_header(vni);
    let mut at = 0;
    for k in first..last {
        let payload = &frame[segment_range(frame, seg, k)];
        out[at..at + 8].copy_from_slice(&vxlan);
        at += 8;
        tcp4_segment_headers(frame, seg, k, payload, &mut out[at..at + seg.hdr_len]);
        at += seg.hdr_len;
        out[at..at + payload.len()].copy_from_slice(payload);
        at += payload.len();
    }
    (at, last.saturating_sub(first), unit)
}

/// A hash of the inner flow (addresses, protocol, ports), so the packets of one flow share an
/// outer source port and different flows spread.
pub fn flow_hash(frame: &[u8]) -> u32 {
    let mut h: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut mix = |v: u64| {
        h = (h ^ v).wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 32;
    };
    if frame.get(12..14) == Some(&[0x08, 0x00][..]) && frame.len() >= 34 {
        let ihl = usize::from(frame[14] & 0x0f) * 4;
        let proto = frame[23];
        mix(u64::from(u32::from_be_bytes([frame[26], frame[27], frame[28], frame[29]])));
        mix(u64::from(u32::from_be_bytes([frame[30], frame[31], frame[32], frame[33]])));
        mix(u64::from(proto));
        let unfragmented = frame[20] & 0x3f == 0 && frame[21] == 0;
        if matches!(proto, 6 | 17) && unfragmented {
            if let Some(p) = frame.get(14 + ihl..14 + ihl + 4) {
                mix(u64::from(u32::from_be_bytes([p[0], p[1], p[2], p[3]])));
            }
        }
    } else if let Some(macs) = frame.get(..12) {
        for c in macs.chunks(4) {
            mix(u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]])));
        }
    }
    h as u32
}

/// Writes the outer IPv4 + UDP + VXLAN headers for an inner frame given in `pieces` (the
/// first holds at least the inner headers the flow hash reads; only the last may have an odd
/// length), sent from `opts.local` to `dst`.
pub fn outer_headers(
    out: &mut [u8; OUTER_LEN],
    opts: &OverlayOptions,
    dst: Ipv4Addr,
    pieces: &[&[u8]],
) {
    let inner_len: usize = pieces.iter().map(|p| p.len()).sum();
    let udp_len = (8 + 8 + inner_len) as u16;
    let total = 20 + udp_len;
    let src_port =
        SRC_PORT_BASE + (flow_hash(pieces.first().copied().unwrap_or(&[])) % 16384) as u16;
    out[..20]
        .copy_from_slice(&[0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    out[2..4].copy_from_slice(&total.to_be_bytes());
    out[12..16].copy_from_slice(&opts.local.octets());
    out[16..20].copy_from_slice(&dst.octets());
    let ip_csum = checksum::checksum(&out[..20]);
    out[10..12].copy_from_slice(&ip_csum.to_be_bytes());
    out[20..22].copy_from_slice(&src_port.to_be_bytes());
    out[22..24].copy_from_slice(&opts.udp_port.to_be_bytes());
    out[24..26].copy_from_slice(&udp_len.to_be_bytes());
    out[26..28].copy_from_slice(&[0, 0]);
    out[28..36].copy_from_slice(&vxlan_header(opts.vni));
    if opts.udp_checksum {
        let mut sum = checksum::add(
            checksum::pseudo_header_v4(&opts.local, &dst, crate::wire::IpProtocol::Udp, udp_len),
            checksum::sum(&out[20..36]),
        );
        for p in pieces {
            sum = checksum::add(sum, checksum::sum(p));
        }
        let c = match checksum::finish(sum) {
            0 => 0xffff,
            c => c,
        };
        out[26..28].copy_from_slice(&c.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offload::gso::tcp4_segmentation;
    use crate::port::overlay::GSO_MAX_BYTES;

    fn tcp_frame(sport: u16) -> Vec<u8> {
        let b = etherparse::PacketBuilder::ethernet2([2; 6], [4; 6])
            .ipv4([10, 244, 1, 2], [10, 244, 2, 3], 64)
            .tcp(sport, 80, 1, 1000);
        let mut v = Vec::new();
        b.write(&mut v, b"data").unwrap();
        v
    }

    #[test]
    fn outer_headers_are_valid_vxlan_over_udp() {
        let opts = OverlayOptions {
            local: Ipv4Addr::new(192, 168, 0, 1),
            udp_port: 4789,
            vni: 0x12_3456,
            udp_checksum: true,
        };
        let inner = tcp_frame(1234);
        let mut h = [0u8; OUTER_LEN];
        let dst = Ipv4Addr::new(192, 168, 0, 2);
        outer_headers(&mut h, &opts, dst, &[&inner]);
        let mut whole = h.to_vec();
        whole.extend_from_slice(&inner);
        let ip = etherparse::Ipv4HeaderSlice::from_slice(&whole).unwrap();
        assert_eq!(ip.total_len() as usize, whole.len());
        assert!(ip.dont_fragment());
        assert_eq!(ip.protocol(), etherparse::IpNumber::UDP);
        assert_eq!((ip.source_addr(), ip.destination_addr()), (opts.local, dst));
        assert_eq!(ip.to_header().calc_header_checksum(), ip.header_checksum());
        let udp = etherparse::UdpHeaderSlice::from_slice(&whole[20..]).unwrap();
        assert_eq!(udp.destination_port(), 4789);
        assert!(udp.source_port() >= SRC_PORT_BASE);
        assert_eq!(udp.length() as usize, whole.len() - 20);
        let expect = udp.to_header().calc_checksum_ipv4(&ip.to_header(), &whole[28..]).unwrap();
        assert_eq!(udp.checksum(), expect);
        assert_eq!(&whole[28..36], &[0x08, 0, 0, 0, 0x12, 0x34, 0x56, 0]);
        let plain = OverlayOptions { udp_checksum: false, ..opts };
        outer_headers(&mut h, &plain, dst, &[&inner]);
        assert_eq!(&h[26..28], &[0, 0]);
    }

    #[test]
    fn source_port_follows_the_inner_flow() {
        let ports: std::collections::HashSet<u32> =
            (0..64).map(|p| flow_hash(&tcp_frame(1000 + p)) % 16384).collect();
        assert!(ports.len() > 48, "flows spread over source ports: {}", ports.len());
        assert_eq!(flow_hash(&tcp_frame(7)), flow_hash(&tcp_frame(7)));
        // Arbitrary bytes never panic.
        for n in 0..80 {
            flow_hash(&vec![0x45; n]);
        }
    }

    fn super_frame(payload_len: usize) -> (Vec<u8>, Vec<u8>) {
        let payload: Vec<u8> = (0..payload_len as u32).map(|i| (i * 13 + i / 251) as u8).collect();
        let b = etherparse::PacketBuilder::ethernet2([2; 6], [4; 6])
            .ipv4([10, 244, 1, 2], [10, 244, 2, 3], 64)
            .tcp(40000, 80, 0xffff_f000, 65535)
            .ack(9)
            .psh();
        let mut frame = Vec::new();
        b.write(&mut frame, &payload).unwrap();
        (frame, payload)
    }

    /// Checks the VXLAN payloads of one build: sizes, VXLAN header, inner headers and
    /// checksums; returns the inner TCP payloads in order.
    fn check_payloads(
        buf: &[u8],
        n: usize,
        unit: usize,
        first: usize,
        seg: &Segmentation,
    ) -> Vec<u8> {
        let mut joined = Vec::new();
        let chunks: Vec<&[u8]> = buf.chunks(unit).collect();
        assert_eq!(chunks.len(), n);
        for (j, c) in chunks.iter().enumerate() {
            let k = first + j;
            let last = k + 1 == seg.count;
            if !last {
                assert_eq!(c.len(), unit, "segment {k} is full size");
            }
            assert_eq!(&c[..8], &[0x08, 0, 0, 0, 0x12, 0x34, 0x56, 0]);
            let p = etherparse::SlicedPacket::from_ethernet(&c[8..]).unwrap();
            let Some(etherparse::NetSlice::Ipv4(ip)) = p.net else { panic!("segment {k}") };
            assert_eq!(ip.header().total_len() as usize, c.len() - 8 - 14);
            assert_eq!(
                ip.header().to_header().calc_header_checksum(),
                ip.header().header_checksum()
            );
            let Some(etherparse::TransportSlice::Tcp(tcp)) = p.transport else { panic!() };
            assert_eq!(tcp.sequence_number(), 0xffff_f000u32.wrapping_add((k * seg.mss) as u32));
            assert_eq!(tcp.psh(), last, "segment {k}");
            let expect = tcp
                .to_header()
                .calc_checksum_ipv4(&ip.header().to_header(), tcp.payload())
                .unwrap();
            assert_eq!(tcp.checksum(), expect, "segment {k}");
            joined.extend_from_slice(tcp.payload());
        }
        joined
    }

    #[test]
    fn gso_payloads_are_equal_vxlan_datagrams_with_complete_inner_headers() {
        // 10 segments of 1398 and a short last one of 100.
        let (frame, payload) = super_frame(10 * 1398 + 100);
        let seg = tcp4_segmentation(&frame, 1398).unwrap();
        assert_eq!(seg.count, 11);
        let mut out = vec![0u8; GSO_MAX_BYTES];
        let (bytes, n, unit) = build_gso_payloads(&frame, &seg, 0, 0x12_3456, &mut out);
        assert_eq!((n, unit), (11, 8 + 54 + 1398));
        assert_eq!(bytes, 10 * unit + 8 + 54 + 100);
        assert_eq!(check_payloads(&out[..bytes], n, unit, 0, &seg), payload);

        // A buffer for three segments: the frame goes out in four sends (3, 3, 3, 2), the
        // sequence numbers wrapping past 2^32 on the way.
        let mut small = vec![0u8; 3 * unit + 10];
        let (mut first, mut joined) = (0, Vec::new());
        let mut sends = Vec::new();
        while first < seg.count {
            let (bytes, n, u) = build_gso_payloads(&frame, &seg, first, 0x12_3456, &mut small);
            assert!(n > 0 && u == unit);
            joined.extend(check_payloads(&small[..bytes], n, unit, first, &seg));
            sends.push(n);
            first += n;
        }
        assert_eq!(sends, [3, 3, 3, 2]);
        assert_eq!(joined, payload);

        // A full-size super-frame stays within one UDP datagram and 64 segments per send.
        let (frame, payload) = super_frame(65_535 - 20 - 20);
        let seg = tcp4_segmentation(&frame, 1398).unwrap();
        let (mut first, mut joined) = (0, Vec::new());
        while first < seg.count {
            let (bytes, n, unit) = build_gso_payloads(&frame, &seg, first, 0x12_3456, &mut out);
            assert!(n > 0 && n <= GSO_MAX_SEGMENTS && bytes <= GSO_MAX_BYTES);
            joined.extend(check_payloads(&out[..bytes], n, unit, first, &seg));
            first += n;
        }
        assert_eq!(joined, payload);

        // Nothing fits: no segments, nothing written out of bounds.
        assert_eq!(build_gso_payloads(&frame, &seg, 0, 1, &mut out[..100]).1, 0);
        assert_eq!(build_gso_payloads(&frame, &seg, seg.count, 1, &mut out).1, 0);
    }
}
