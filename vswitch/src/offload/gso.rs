//! Software offloads for ports that cannot carry offload metadata: TCP segmentation of the
//! super-frames a TAP port hands over (`meta.vnet` says GSO). The overlay
//! port and the AF_XDP port both split a TCP/IPv4 super-frame into segments with
//! [`tcp4_segmentation`] and [`tcp4_segment_headers`]; completing a partial checksum is
//! [`crate::packet::VnetHdr::complete_checksum`].
//!
//! A segment is the super-frame's headers (rewritten per segment: lengths, IP id and
//! checksum, sequence number, flags, full TCP checksum) followed by a slice of its payload,
//! so a port can write the headers into its own buffer and copy or point at the payload.

use std::net::Ipv4Addr;

use crate::wire::checksum;

/// Longest header block of a segment: Ethernet, IPv4 and TCP with full options.
pub const MAX_HDR_LEN: usize = 14 + 60 + 60;

/// How a TCP/IPv4 super-frame splits into segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segmentation {
    /// Bytes of Ethernet + IPv4 + TCP headers copied into every segment.
    pub hdr_len: usize,
    /// Payload bytes per segment (the last may be shorter).
    pub mss: usize,
    /// Number of segments.
    pub count: usize,
}

/// The segmentation of an untagged TCP/IPv4 super-frame with segment payload `gso_size`, or
/// `None` when the frame is not one (or its headers do not fit).
pub fn tcp4_segmentation(frame: &[u8], gso_size: u16) -> Option<Segmentation> {
    if frame.get(12..14)? != [0x08, 0x00] || *frame.get(23)? != 6 || gso_size == 0 {
        return None;
    }
    let ihl = usize::from(frame[14] & 0x0f) * 4;
    let l4 = 14 + ihl;
    let doff = usize::from(frame.get(l4 + 12)? >> 4) * 4;
    let hdr_len = l4 + doff;
    if ihl < 20 || doff < 20 || hdr_len > MAX_HDR_LEN || hdr_len > frame.len() {
        return None;
    }
    let mss = usize::from(gso_size);
    let payload = frame.len() - hdr_len;
    Some(Segmentation { hdr_len, mss, count: payload.div_ceil(mss).max(1) })
}

/// Writes segment `k` of `seg`'s split of `frame` into `out`: the headers with total length,
/// IP identification and checksum, sequence number, flags (FIN/PSH only on the last, CWR
/// only on the first) and a complete TCP checksum over the segment's `payload`.
pub fn tcp4_segment_headers(
    frame: &[u8],
    seg: &Segmentation,
    k: usize,
    payload: &[u8],
    out: &mut [u8],
) {
    let h = &mut out[..seg.hdr_len];
    h.copy_from_slice(&frame[..seg.hdr_len]);
    let ihl = usize::from(h[14] & 0x0f) * 4;
    let l4 = 14 + ihl;
    let tcp_len = seg.hdr_len - l4 + payload.len();
    let total = (ihl + tcp_len) as u16;
    h[16..18].copy_from_slice(&total.to_be_bytes());
    let id = u16::from_be_bytes([h[18], h[19]]).wrapping_add(k as u16);
    h[18..20].copy_from_slice(&id.to_be_bytes());
    h[24..26].copy_from_slice(&[0, 0]);
    let c = checksum::checksum(&h[14..l4]);
    h[24..26].copy_from_slice(&c.to_be_bytes());
    let seq = u32::from_be_bytes([h[l4 + 4], h[l4 + 5], h[l4 + 6], h[l4 + 7]])
        .wrapping_add((k * seg.mss) as u32);
    h[l4 + 4..l4 + 8].copy_from_slice(&seq.to_be_bytes());
    if k + 1 != seg.count {
        h[l4 + 13] &= !(0x01 | 0x08);
    }
    if k != 0 {
        h[l4 + 13] &= !0x80;
    }
    h[l4 + 16..l4 + 18].copy_from_slice(&[0, 0]);
    let src = Ipv4Addr::new(h[26], h[27], h[28], h[29]);
    let dst = Ipv4Addr::new(h[30], h[31], h[32], h[33]);
    let sum = checksum::add(
        checksum::pseudo_header_v4(&src, &dst, crate::wire::IpProtocol::Tcp, tcp_len as u16),
        checksum::add(checksum::sum(&h[l4..]), checksum::sum(payload)),
    );
    let c = checksum::finish(sum);
    h[l4 + 16..l4 + 18].copy_from_slice(&c.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn super_frames_split_into_valid_segments() {
        let payload: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
        let b = etherparse::PacketBuilder::ethernet2([2; 6], [4; 6])
            .ipv4([10, 244, 1, 2], [10, 244, 2, 3], 64)
            .tcp(40000, 80, 1_000_000, 65535)
            .ack(5)
            .psh()
            .fin();
        let mut frame = Vec::new();
        b.write(&mut frame, &payload).unwrap();
        let seg = tcp4_segmentation(&frame, 1400).unwrap();
        assert_eq!(seg, Segmentation { hdr_len: 54, mss: 1400, count: 4 });
        let mut joined = Vec::new();
        for k in 0..seg.count {
            let start = seg.hdr_len + k * seg.mss;
            let end = (start + seg.mss).min(frame.len());
            let mut h = [0u8; MAX_HDR_LEN];
            tcp4_segment_headers(&frame, &seg, k, &frame[start..end], &mut h);
            let mut one = h[..seg.hdr_len].to_vec();
            one.extend_from_slice(&frame[start..end]);
            let p = etherparse::SlicedPacket::from_ethernet(&one).unwrap();
            let Some(etherparse::NetSlice::Ipv4(ip)) = p.net else { panic!() };
            assert_eq!(ip.header().total_len() as usize, one.len() - 14);
            assert_eq!(
                ip.header().to_header().calc_header_checksum(),
                ip.header().header_checksum()
            );
            assert_eq!(ip.header().identification(), k as u16);
            let Some(etherparse::TransportSlice::Tcp(tcp)) = p.transport else { panic!() };
            assert_eq!(tcp.sequence_number(), 1_000_000 + (k * 1400) as u32);
            let last = k + 1 == seg.count;
            assert_eq!((tcp.fin(), tcp.psh()), (last, last), "segment {k}");
            assert!(tcp.ack());
            let expect = tcp
                .to_header()
                .calc_checksum_ipv4(&ip.header().to_header(), tcp.payload())
                .unwrap();
            assert_eq!(tcp.checksum(), expect, "segment {k}");
            joined.extend_from_slice(tcp.payload());
        }
        assert_eq!(joined, payload);
        assert!(tcp4_segmentation(&frame[..40], 1400).is_none());
        assert!(tcp4_segmentation(&frame, 0).is_none());
        for n in 0..80 {
            let _ = tcp4_segmentation(&vec![0x45; n], 1400);
        }
    }
}
