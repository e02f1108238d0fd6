//! Unit tests of software GRO: merging, flushing and the merged frames' headers.

use proptest::prelude::*;

use std::net::Ipv4Addr;

use super::*;
use crate::offload::gso::{tcp4_segment_headers, tcp4_segmentation, MAX_HDR_LEN};

const TCP_ACK: u8 = 0x10;
const TCP_PSH: u8 = 0x08;

/// A TCP/IPv4 segment to build.
#[derive(Debug, Clone)]
struct Tcp {
    sport: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    win: u16,
    id: u16,
    df: bool,
    ttl: u8,
    tos: u8,
    ip_opts: Vec<u8>,
    opts: Vec<u8>,
    payload: Vec<u8>,
    /// Leave the pseudo-header sum in the checksum field (as with `NEEDS_CSUM`).
    partial: bool,
}

impl Tcp {
    fn new(seq: u32, id: u16, payload: Vec<u8>) -> Tcp {
        Tcp {
            sport: 40000,
            seq,
            ack: 777,
            flags: TCP_ACK,
            win: 501,
            id,
            df: true,
            ttl: 63,
            tos: 0,
            ip_opts: vec![],
            opts: timestamps(1000, 2000),
            payload,
            partial: false,
        }
    }

    fn frame(&self) -> Vec<u8> {
        let ihl = 20 + self.ip_opts.len();
        let doff = 20 + self.opts.len();
        let total = ihl + doff + self.payload.len();
        let mut f = vec![2, 0, 0, 0, 0, 9, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
        f.extend_from_slice(&[0x40 | (ihl / 4) as u8, self.tos]);
        f.extend_from_slice(&(total as u16).to_be_bytes());
        f.extend_from_slice(&self.id.to_be_bytes());
        f.extend_from_slice(&[if self.df { 0x40 } else { 0 }, 0, self.ttl, 6, 0, 0]);
        f.extend_from_slice(&[10, 244, 1, 2, 10, 244, 2, 3]);
        f.extend_from_slice(&self.ip_opts);
        let c = checksum::checksum(&f[ETH..ETH + ihl]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
        let l4 = f.len();
        f.extend_from_slice(&self.sport.to_be_bytes());
        f.extend_from_slice(&80u16.to_be_bytes());
        f.extend_from_slice(&self.seq.to_be_bytes());
        f.extend_from_slice(&self.ack.to_be_bytes());
        f.extend_from_slice(&[(doff / 4) as u8 * 16, self.flags]);
        f.extend_from_slice(&self.win.to_be_bytes());
        f.extend_from_slice(&[0, 0, 0, 0]);
        f.extend_from_slice(&self.opts);
        f.extend_from_slice(&self.payload);
        let pseudo = checksum::pseudo_header_v4(
            &Ipv4Addr::new(10, 244, 1, 2),
            &Ipv4Addr::new(10, 244, 2, 3),
            IpProtocol::Tcp,
            (total - ihl) as u16,
        );
        let c = if self.partial {
            checksum::fold(pseudo)
        } else {
            checksum::finish(checksum::add(pseudo, checksum::sum(&f[l4..])))
        };
        f[l4 + 16..l4 + 18].copy_from_slice(&c.to_be_bytes());
        f
    }

    fn vnet(&self) -> VnetHdr {
        if self.partial {
            VnetHdr {
                flags: VnetHdr::NEEDS_CSUM,
                csum_start: (ETH + 20 + self.ip_opts.len()) as u16,
                csum_offset: 16,
                ..Default::default()
            }
        } else {
            VnetHdr::default()
        }
    }
}

/// NOP, NOP, timestamps.
fn timestamps(val: u32, ecr: u32) -> Vec<u8> {
    let mut o = vec![1, 1, 8, 10];
    o.extend_from_slice(&val.to_be_bytes());
    o.extend_from_slice(&ecr.to_be_bytes());
    o
}

fn bytes(n: usize, salt: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(salt)).collect()
}

/// A flow's next segments: `lens` payload bytes each, sequence and IDs following on.
fn stream(lens: &[usize]) -> Vec<Tcp> {
    let mut seq = 1_000_000u32;
    lens.iter()
        .enumerate()
        .map(|(k, &n)| {
            let t = Tcp::new(seq, 100 + k as u16, bytes(n, k as u8));
            seq = seq.wrapping_add(n as u32);
            t
        })
        .collect()
}

/// Runs the coalescer; each output as (vnet, frame, segments).
fn run(frames: &[(Vec<u8>, VnetHdr)]) -> Vec<(VnetHdr, Vec<u8>, u32)> {
    let mut gro = Gro::new();
    let mut out = Vec::new();
    gro.coalesce(frames.iter().map(|(f, v)| (&f[..], *v)), |o| {
        out.push((o.vnet, o.frame.to_vec(), o.segments))
    });
    out
}

fn frames(segs: &[Tcp]) -> Vec<(Vec<u8>, VnetHdr)> {
    segs.iter().map(|t| (t.frame(), t.vnet())).collect()
}

/// Segments a merged frame back with the overlay's software segmentation (complete
/// checksums); a plain frame is returned with its partial checksum completed.
fn expand(vnet: &VnetHdr, frame: &[u8]) -> Vec<Vec<u8>> {
    if !vnet.is_gso() {
        let mut f = frame.to_vec();
        assert!(vnet.complete_checksum(&mut f));
        return vec![f];
    }
    let seg = tcp4_segmentation(frame, vnet.gso_size).expect("a TCP/IPv4 super-frame");
    (0..seg.count)
        .map(|k| {
            let start = seg.hdr_len + k * seg.mss;
            let end = (start + seg.mss).min(frame.len());
            let mut h = [0u8; MAX_HDR_LEN];
            tcp4_segment_headers(frame, &seg, k, &frame[start..end], &mut h);
            let mut one = h[..seg.hdr_len].to_vec();
            one.extend_from_slice(&frame[start..end]);
            one
        })
        .collect()
}

/// The TCP checksum of an IPv4 frame verifies.
fn tcp_checksum_ok(f: &[u8]) -> bool {
    let p = etherparse::SlicedPacket::from_ethernet(f).unwrap();
    let Some(etherparse::NetSlice::Ipv4(ip)) = p.net else { return false };
    let Some(etherparse::TransportSlice::Tcp(tcp)) = p.transport else { return false };
    tcp.to_header().calc_checksum_ipv4(&ip.header().to_header(), tcp.payload()).unwrap()
        == tcp.checksum()
}

#[test]
fn the_test_builder_makes_valid_segments() {
    for partial in [false, true] {
        let mut t = Tcp::new(5, 6, bytes(101, 3));
        t.partial = partial;
        let mut f = t.frame();
        assert!(t.vnet().complete_checksum(&mut f));
        assert!(tcp_checksum_ok(&f));
        let p = etherparse::SlicedPacket::from_ethernet(&f).unwrap();
        let Some(etherparse::NetSlice::Ipv4(ip)) = p.net else { panic!() };
        assert_eq!(ip.header().to_header().calc_header_checksum(), ip.header().header_checksum());
    }
}

#[test]
fn in_order_segments_merge_into_one_super_frame() {
    let segs = stream(&[1000, 1000, 1000, 640]);
    let mut segs2 = segs.clone();
    segs2[3].flags |= TCP_PSH;
    let out = run(&frames(&segs2));
    assert_eq!(out.len(), 1);
    let (vnet, frame, n) = &out[0];
    assert_eq!(*n, 4);
    let hdr_len = ETH + 20 + 32;
    assert_eq!(
        *vnet,
        VnetHdr {
            flags: VnetHdr::NEEDS_CSUM,
            gso_type: VnetHdr::GSO_TCPV4,
            hdr_len: hdr_len as u16,
            gso_size: 1000,
            csum_start: 34,
            csum_offset: 16,
        }
    );
    // Expected: the first segment's headers, total length and IP checksum updated, PSH,
    // the pseudo-header sum in the TCP checksum; then the payloads.
    let first = segs2[0].frame();
    let mut want = first[..hdr_len].to_vec();
    let total = (20 + 32 + 3640) as u16;
    want[16..18].copy_from_slice(&total.to_be_bytes());
    want[24..26].copy_from_slice(&[0, 0]);
    let c = checksum::checksum(&want[14..34]);
    want[24..26].copy_from_slice(&c.to_be_bytes());
    want[47] |= TCP_PSH;
    let pseudo = checksum::fold(checksum::pseudo_header_v4(
        &Ipv4Addr::new(10, 244, 1, 2),
        &Ipv4Addr::new(10, 244, 2, 3),
        IpProtocol::Tcp,
        32 + 3640,
    ));
    want[50..52].copy_from_slice(&pseudo.to_be_bytes());
    for s in &segs2 {
        want.extend_from_slice(&s.payload);
    }
    assert_eq!(frame, &want);
    // Completing the partial checksum gives a valid TCP packet with all the data.
    let mut done = frame.clone();
    assert!(vnet.complete_checksum(&mut done));
    assert!(tcp_checksum_ok(&done));
    // Segmenting it back gives the original segments, byte for byte.
    let back = expand(vnet, frame);
    let orig: Vec<Vec<u8>> = segs2.iter().map(Tcp::frame).collect();
    assert_eq!(back, orig);
}

#[test]
fn partial_checksum_segments_merge_too() {
    let mut segs = stream(&[500, 500, 500]);
    segs[1].partial = true;
    let out = run(&frames(&segs));
    assert_eq!(out.len(), 1);
    let back = expand(&out[0].0, &out[0].1);
    let orig: Vec<Vec<u8>> = segs
        .iter()
        .map(|t| {
            let mut f = t.frame();
            t.vnet().complete_checksum(&mut f);
            f
        })
        .collect();
    assert_eq!(back, orig);
}

/// The segment counts of the output frames.
fn shape(out: &[(VnetHdr, Vec<u8>, u32)]) -> Vec<u32> {
    out.iter().map(|o| o.2).collect()
}

#[test]
fn anything_that_breaks_the_rules_ends_the_run() {
    let base = stream(&[100; 6]);
    let check = |name: &str, segs: &[Tcp], want: &[u32]| {
        let f = frames(segs);
        let out = run(&f);
        assert_eq!(shape(&out), want, "{name}");
        // Frames written as they are stay untouched.
        let mut k = 0;
        for (v, frame, n) in &out {
            if *n == 1 {
                assert_eq!((frame, v), (&f[k].0, &f[k].1), "{name}");
            }
            k += *n as usize;
        }
    };
    check("in order", &base, &[6]);
    let mut s = base.clone();
    s.swap(2, 3);
    check("out of order", &s, &[2, 1, 1, 2]);
    let mut s = base.clone();
    s[3].sport = 1;
    check("another flow", &s, &[3, 1, 2]);
    let mut s = base.clone();
    s[2].seq = s[2].seq.wrapping_add(1);
    check("sequence gap", &s, &[2, 1, 3]);
    let mut s = base.clone();
    s[4].ack += 1;
    check("new ack", &s, &[4, 1, 1]);
    let mut s = base.clone();
    s[4].win += 1;
    check("new window", &s, &[4, 1, 1]);
    for (flag, want) in [
        (0x01, vec![2, 1, 3]),
        (0x02, vec![2, 1, 3]),
        (0x04, vec![2, 1, 3]),
        (0x20, vec![2, 1, 3]),
        (0x40, vec![2, 1, 3]),
        (0x80, vec![2, 1, 3]),
        (TCP_PSH, vec![3, 3]),
    ] {
        let mut s = base.clone();
        s[2].flags |= flag;
        check(&format!("flag {flag:#x}"), &s, &want);
    }
    let mut s = base.clone();
    s[0].flags |= TCP_PSH;
    check("PSH on a first segment", &s, &[1, 5]);
    let mut s = base.clone();
    s[3].opts = timestamps(1001, 2000);
    s[4].opts = timestamps(1001, 2000);
    s[5].opts = timestamps(1001, 2000);
    check("newer timestamp", &s, &[3, 3]);
    let mut s = base.clone();
    s[3].opts = vec![];
    check("options dropped", &s, &[3, 1, 2]);
    let mut s = base.clone();
    s[2].payload.truncate(60);
    for t in &mut s[3..] {
        t.seq -= 40;
    }
    check("short middle segment", &s, &[3, 3]);
    let mut s = base.clone();
    s[2].payload.push(1);
    for t in &mut s[3..] {
        t.seq += 1;
    }
    check("long segment", &s, &[2, 2, 2]);
    let mut s = base.clone();
    s[1].payload.clear();
    for t in &mut s[2..] {
        t.seq -= 100;
    }
    check("pure ACK", &s, &[1, 1, 4]);
    let mut s = base.clone();
    for t in &mut s {
        t.ip_opts = vec![1, 1, 1, 0];
    }
    check("IP options", &s, &[1; 6]);
    let mut s = base.clone();
    s[3].ttl = 9;
    check("TTL", &s, &[3, 1, 2]);
    let mut s = base.clone();
    s[3].tos = 2;
    check("TOS", &s, &[3, 1, 2]);
    let mut s = base.clone();
    s[3].df = false;
    check("DF", &s, &[3, 1, 2]);
    let mut s = base.clone();
    for t in &mut s {
        t.id = 9;
    }
    check("fixed IDs with DF", &s, &[6]);
    let mut s = base.clone();
    for t in &mut s {
        (t.id, t.df) = (9, false);
    }
    check("fixed IDs without DF", &s, &[1; 6]);
    let mut s = base.clone();
    s[3].id = 9;
    check("ID jump", &s, &[3, 1, 2]);
    let mut s = base.clone();
    s[0].id = s[1].id;
    check("IDs fixed then incrementing", &s, &[2, 4]);
    // Not TCP, a fragment, a super-frame, a broken IP checksum, arbitrary junk.
    let fix_ip = |f: &mut Vec<u8>| {
        f[24..26].fill(0);
        let c = checksum::checksum(&f[14..34]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
    };
    let mut f = frames(&base);
    f[1].0[23] = 17;
    fix_ip(&mut f[1].0);
    f[2].0[20] = 0x60;
    fix_ip(&mut f[2].0);
    f[3].1 = VnetHdr { gso_type: VnetHdr::GSO_TCPV4, gso_size: 100, ..Default::default() };
    f[4].0[24] ^= 1;
    f.insert(5, (vec![0x45; 7], VnetHdr::default()));
    assert_eq!(shape(&run(&f)), [1; 7]);
}

#[test]
fn merged_frames_stay_within_64_kib_and_64_segments() {
    let segs = stream(&[1448; 50]);
    let out = run(&frames(&segs));
    // 45 × 1448 + 52 bytes of IPv4/TCP headers = 65,212 ≤ 65,535; one more would not fit.
    assert_eq!(shape(&out), [45, 5]);
    assert_eq!(out[0].1.len(), ETH + 52 + 45 * 1448);
    assert_eq!(u16::from_be_bytes([out[0].1[16], out[0].1[17]]) as usize, 52 + 45 * 1448);
    let segs = stream(&[100; 130]);
    assert_eq!(shape(&run(&frames(&segs))), [64, 64, 2]);
    let segs = stream(&[1]);
    assert_eq!(shape(&run(&frames(&segs))), [1]);
    assert!(run(&[]).is_empty());
}

/// What a test flow sends next.
#[derive(Debug, Clone)]
struct Flow {
    next: Tcp,
    mss: usize,
    fixed_ids: bool,
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Three flows' segments interleaved with junk: the output, segmented back and with
    /// checksums completed, is the input (IP ID aside for fixed-ID runs, checksums
    /// recomputed), so each flow's byte stream arrives whole and in order.
    #[test]
    fn merging_then_segmenting_gives_back_the_input(
        mss in proptest::array::uniform3(1usize..=300),
        fixed in proptest::array::uniform3(any::<bool>()),
        ops in proptest::collection::vec((0u8..8, any::<u32>(), any::<u32>()), 0..150),
        junk in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..80), 1..4),
    ) {
        let mut flows: Vec<Flow> = (0..3)
            .map(|i| {
                let mut next = Tcp::new(u32::MAX - 2000 * i as u32, 65530, vec![]);
                next.sport = 1000 + i as u16;
                next.id = if fixed[i] { 7 } else { 65530 };
                Flow { next, mss: mss[i], fixed_ids: fixed[i] }
            })
            .collect();
        let mut input: Vec<(Vec<u8>, VnetHdr)> = Vec::new();
        let mut prev = 0;
        for (op, r, r2) in ops {
            // 0..3: that flow, 3: junk, above: the previous flow again (long runs).
            let op = if op > 3 { prev } else { usize::from(op) };
            prev = op;
            let Some(flow) = flows.get_mut(op) else {
                // Junk: arbitrary bytes with an arbitrary header, or a mutated segment.
                let j = &junk[r as usize % junk.len()];
                if r2 % 2 == 0 {
                    let mut v = [0u8; VnetHdr::LEN];
                    for (k, b) in v.iter_mut().enumerate() {
                        *b = j.get(k).copied().unwrap_or(0);
                    }
                    input.push((j.clone(), VnetHdr::parse(&v)));
                } else if let Some((f, v)) = input.last().cloned() {
                    let mut f = f;
                    if !f.is_empty() {
                        let at = r2 as usize % f.len();
                        f[at] ^= (r >> 8) as u8 | 1;
                    }
                    input.push((f, v));
                }
                continue;
            };
            let mut t = flow.next.clone();
            t.payload = bytes(flow.mss, r as u8);
            match r % 32 {
                0 => t.payload.truncate(r2 as usize % flow.mss),
                1 => t.flags |= TCP_PSH,
                2 => t.opts = timestamps(r2, 5),
                3 => t.flags |= [0x01, 0x02, 0x04, 0x20, 0x40, 0x80][r2 as usize % 6],
                4 => t.seq = t.seq.wrapping_add(r2 % 3000),
                5 => t.ack = r2,
                6 => t.payload.push(0),
                _ => {}
            }
            t.partial = (r >> 5) % 4 == 0;
            input.push((t.frame(), t.vnet()));
            flow.next.seq = t.seq.wrapping_add(t.payload.len() as u32);
            flow.next.opts = t.opts.clone();
            flow.next.ack = t.ack;
            if !flow.fixed_ids {
                flow.next.id = t.id.wrapping_add(1);
            }
        }
        let out = run(&input);
        prop_assert_eq!(out.iter().map(|o| o.2 as usize).sum::<usize>(), input.len());
        let mut k = 0;
        let mut streams_in = [Vec::new(), Vec::new(), Vec::new()];
        let mut streams_out = [Vec::new(), Vec::new(), Vec::new()];
        for (vnet, frame, n) in &out {
            let n = *n as usize;
            let originals = &input[k..k + n];
            k += n;
            if n == 1 {
                prop_assert_eq!((frame, vnet), (&originals[0].0, &originals[0].1));
                continue;
            }
            prop_assert!(n <= MAX_SEGMENTS && frame.len() - ETH <= MAX_IP_LEN);
            prop_assert!(vnet.is_gso() && vnet.needs_csum());
            let mut whole = frame.clone();
            prop_assert!(vnet.complete_checksum(&mut whole));
            let back = expand(vnet, frame);
            prop_assert_eq!(back.len(), n);
            for ((b, (o, ov)), i) in back.iter().zip(originals).zip(0..) {
                let mut o = o.clone();
                prop_assert!(ov.complete_checksum(&mut o));
                prop_assert_eq!(b.len(), o.len());
                // The IP ID of a fixed-ID run comes back incrementing (and the IP
                // checksum with it); everything else is the original's.
                let mask = |f: &[u8]| {
                    let mut f = f.to_vec();
                    f[18..20].fill(0);
                    f[24..26].fill(0);
                    f[50..52].fill(0);
                    f
                };
                prop_assert_eq!(mask(b), mask(&o), "segment {} of {}", i, n);
                prop_assert_eq!(checksum::checksum(&b[14..34]), 0);
                prop_assert!(tcp_checksum_ok(b));
                // Only segments with good checksums merged: a corrupted copy of a complete
                // one was written alone (a partial one is the kernel's to vouch for).
                if ov.flags & (VnetHdr::NEEDS_CSUM | VnetHdr::DATA_VALID) == 0 {
                    prop_assert!(tcp_checksum_ok(&o), "segment {} of {}", i, n);
                }
            }
        }
        // Per flow, the payload stream is the input's (checked on valid segments).
        for (i, (f, v)) in input.iter().enumerate() {
            let mut f = f.clone();
            if v.complete_checksum(&mut f) && Seg::parse(&f, &VnetHdr::default()).is_some() {
                let port = u16::from_be_bytes([f[34], f[35]]);
                if let Some(s) = port.checked_sub(1000).and_then(|p| streams_in.get_mut(usize::from(p))) {
                    s.push((i, f[ETH + 20 + usize::from(f[46] >> 4) * 4..].to_vec()));
                }
            }
        }
        let mut k = 0;
        for (vnet, frame, n) in &out {
            let back = if *n == 1 {
                let mut f = frame.clone();
                vec![if vnet.complete_checksum(&mut f) { f } else { vec![] }]
            } else {
                expand(vnet, frame)
            };
            for f in back {
                if Seg::parse(&f, &VnetHdr::default()).is_some() {
                    let port = u16::from_be_bytes([f[34], f[35]]);
                    if let Some(s) = port.checked_sub(1000).and_then(|p| streams_out.get_mut(usize::from(p))) {
                        s.push((k, f[ETH + 20 + usize::from(f[46] >> 4) * 4..].to_vec()));
                    }
                }
                k += 1;
            }
        }
        prop_assert_eq!(streams_in, streams_out);
    }

    /// Arbitrary frames with arbitrary headers never panic, and every frame comes out
    /// exactly once.
    #[test]
    fn arbitrary_bytes_never_panic(
        frames in proptest::collection::vec(
            (proptest::collection::vec(any::<u8>(), 0..120), any::<[u8; 10]>()), 0..40),
        tcp_like in any::<bool>(),
    ) {
        let frames: Vec<(Vec<u8>, VnetHdr)> = frames
            .into_iter()
            .map(|(mut f, v)| {
                if tcp_like && f.len() >= 54 {
                    // Mostly-valid headers so the deeper checks are reached.
                    f[12..16].copy_from_slice(&[8, 0, 0x45, 0]);
                    f[23] = 6;
                    f[20] &= 0x40;
                    f[21] = 0;
                    f[24..26].fill(0);
                    let c = checksum::checksum(&f[14..34]);
                    f[24..26].copy_from_slice(&c.to_be_bytes());
                }
                (f, VnetHdr::parse(&v))
            })
            .collect();
        let out = run(&frames);
        prop_assert_eq!(out.iter().map(|o| o.2 as usize).sum::<usize>(), frames.len());
    }
}

/// Breaks the TCP checksum of a built segment.
fn corrupt(f: &mut [u8]) {
    f[50] ^= 0x5a;
}

#[test]
fn a_segment_with_a_bad_tcp_checksum_is_not_merged() {
    let segs = stream(&[100; 4]);
    for (bad, want) in [(0, vec![1, 3]), (1, vec![1, 1, 2]), (2, vec![2, 1, 1]), (3, vec![3, 1])] {
        let mut f = frames(&segs);
        corrupt(&mut f[bad].0);
        let out = run(&f);
        assert_eq!(shape(&out), want, "bad segment {bad}");
        // The bad one is written as it came, for the pod's TCP to drop.
        let mut k = 0;
        for (v, frame, n) in &out {
            if k == bad {
                assert_eq!((*n, frame, v), (1, &f[bad].0, &f[bad].1));
                assert!(!tcp_checksum_ok(frame));
            }
            k += *n as usize;
        }
    }
    // A payload byte changed on the way is the same thing.
    let mut f = frames(&segs);
    f[2].0[70] ^= 1;
    assert_eq!(shape(&run(&f)), [2, 1, 1]);
}

#[test]
fn checksums_the_virtio_header_vouches_for_are_not_reverified() {
    let segs = stream(&[100; 3]);
    let mut f = frames(&segs);
    for (frame, vnet) in &mut f {
        corrupt(frame);
        vnet.flags = VnetHdr::DATA_VALID;
    }
    assert_eq!(shape(&run(&f)), [3], "DATA_VALID: the kernel verified them");
    let mut partial = segs.clone();
    for t in &mut partial {
        t.partial = true;
    }
    assert_eq!(shape(&run(&frames(&partial))), [3], "NEEDS_CSUM: the kernel computes them");
}

#[test]
fn every_truncation_of_a_segment_is_written_once_and_never_merged_broken() {
    let segs = stream(&[100; 3]);
    let good = frames(&segs);
    let victim = &good[1];
    for cut in 0..victim.0.len() {
        let mut f = good.clone();
        f[1].0.truncate(cut);
        assert!(Seg::parse(&f[1].0, &f[1].1).is_none(), "cut {cut}");
        let out = run(&f);
        assert_eq!(shape(&out), [1, 1, 1], "cut {cut}");
        assert_eq!(out[1].1, f[1].0);
    }
    // Padding after the IPv4 total length is not payload.
    let mut f = good.clone();
    for (frame, _) in &mut f {
        frame.extend_from_slice(&[0xee; 6]);
    }
    let out = run(&f);
    assert_eq!(shape(&out), [3]);
    assert_eq!(out[0].1.len(), ETH + 20 + 32 + 300);
}
