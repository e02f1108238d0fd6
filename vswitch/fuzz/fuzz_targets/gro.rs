//! The TAP port's software GRO (`offload/gro.rs`) and the software segmentation of
//! super-frames (`offload/gso.rs`, and the overlay port's `build_gso_payloads`).
//!
//! Input: frames one after the other, each `[len: u16 LE][virtio-net header: 10 bytes]
//! [frame: len bytes]` (the last may be cut short). All of them go through one
//! `Gro::coalesce`; then:
//! - every input frame is carried exactly once, in order (`segments` add up);
//! - a merged frame is a TCP/IPv4 super-frame its own header describes: segmenting it back
//!   gives, byte for byte, the payloads of the frames it carried, each segment with a valid
//!   IPv4 header checksum and a complete, valid TCP checksum;
//! - every input frame with a GSO header is also segmented as the overlay and AF_XDP ports
//!   would, which must stay within their buffers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vswitch::packet::VnetHdr;
use vswitch::offload::gro::{Gro, MAX_MERGED_LEN};
use vswitch::offload::gso::{tcp4_segment_headers, tcp4_segmentation, Segmentation, MAX_HDR_LEN};
use vswitch::wire::checksum;

/// The frames of the input.
fn frames(mut data: &[u8]) -> Vec<(&[u8], VnetHdr)> {
    let mut out = Vec::new();
    while data.len() >= 2 + VnetHdr::LEN && out.len() < 128 {
        let len = usize::from(u16::from_le_bytes([data[0], data[1]]));
        let raw: [u8; VnetHdr::LEN] = data[2..2 + VnetHdr::LEN].try_into().expect("ten bytes");
        data = &data[2 + VnetHdr::LEN..];
        let (frame, rest) = data.split_at(len.min(data.len()));
        out.push((frame, VnetHdr::parse(&raw)));
        data = rest;
    }
    out
}

/// The TCP payload of a plain segment (IHL 5, as GRO requires): after the headers, up to the
/// IPv4 total length.
fn payload(frame: &[u8]) -> &[u8] {
    let total = usize::from(u16::from_be_bytes([frame[16], frame[17]]));
    let doff = usize::from(frame[14 + 20 + 12] >> 4) * 4;
    &frame[14 + 20 + doff..14 + total]
}

/// Segments `frame` as `seg` says; checks each segment's checksums; returns the payloads.
fn segment(frame: &[u8], seg: &Segmentation) -> Vec<u8> {
    let mut all = Vec::new();
    let mut hdr = [0u8; MAX_HDR_LEN];
    for k in 0..seg.count {
        let start = seg.hdr_len + k * seg.mss;
        let end = (start + seg.mss).min(frame.len());
        let body = &frame[start..end];
        tcp4_segment_headers(frame, seg, k, body, &mut hdr);
        let ihl = usize::from(hdr[14] & 0x0f) * 4;
        assert_eq!(checksum::checksum(&hdr[14..14 + ihl]), 0, "segment {k}: IPv4 checksum");
        let total = usize::from(u16::from_be_bytes([hdr[16], hdr[17]]));
        assert_eq!(total, seg.hdr_len - 14 + body.len(), "segment {k}: total length");
        let mut whole = hdr[..seg.hdr_len].to_vec();
        whole.extend_from_slice(body);
        let src = std::net::Ipv4Addr::new(hdr[26], hdr[27], hdr[28], hdr[29]);
        let dst = std::net::Ipv4Addr::new(hdr[30], hdr[31], hdr[32], hdr[33]);
        let tcp = &whole[14 + ihl..];
        let pseudo = checksum::pseudo_header_v4(&src, &dst, 6.into(), tcp.len() as u16);
        let sum = checksum::finish(checksum::add(pseudo, checksum::sum(tcp)));
        assert_eq!(sum, 0, "segment {k}: TCP checksum");
        all.extend_from_slice(body);
    }
    all
}

fuzz_target!(|data: &[u8]| {
    let input = frames(data);
    let mut gro = Gro::new();
    let mut next = 0;
    gro.coalesce(input.iter().copied(), |out| {
        let n = out.segments as usize;
        assert!(n >= 1 && next + n <= input.len(), "carries frames that were not given");
        assert!(out.frame.len() <= MAX_MERGED_LEN);
        if n == 1 {
            assert_eq!(out.frame, input[next].0, "a frame passed through is unchanged");
            assert_eq!(out.vnet, input[next].1);
        } else {
            assert!(out.vnet.is_gso() && out.vnet.needs_csum());
            let seg = tcp4_segmentation(out.frame, out.vnet.gso_size)
                .expect("a merged frame is a TCP/IPv4 super-frame");
            assert_eq!(seg.count, n, "segments back as many as were merged");
            let want: Vec<u8> =
                input[next..next + n].iter().flat_map(|(f, _)| payload(f)).copied().collect();
            assert_eq!(segment(out.frame, &seg), want, "payloads come back in order");
        }
        next += n;
    });
    assert_eq!(next, input.len(), "every frame is written once");

    // Software segmentation of whatever claims to be a super-frame.
    let mut out = vec![0u8; 1 << 16];
    for (frame, vnet) in &input {
        if !vnet.is_gso() {
            let _ = vnet.complete_checksum(&mut frame.to_vec());
            continue;
        }
        let Some(seg) = tcp4_segmentation(frame, vnet.gso_size) else { continue };
        assert!(seg.hdr_len <= frame.len() && seg.hdr_len <= MAX_HDR_LEN && seg.mss > 0);
        if seg.count <= 1024 {
            let mut hdr = [0u8; MAX_HDR_LEN];
            for k in 0..seg.count {
                let start = seg.hdr_len + k * seg.mss;
                let end = (start + seg.mss).min(frame.len());
                tcp4_segment_headers(frame, &seg, k, &frame[start..end], &mut hdr);
            }
        }
        let mut first = 0;
        while first < seg.count {
            let (written, n, unit) =
                vswitch::port::overlay::build_gso_payloads(frame, &seg, first, 1, &mut out);
            assert!(written <= out.len() && written <= n * unit);
            if n == 0 {
                break;
            }
            first += n;
        }
    }
});
