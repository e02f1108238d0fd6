//! The overlay port: VXLAN datagrams on the node's underlay address, in bursts.
//!
//! Receive: a UDP socket bound to `underlay_ip:udp_port`, read with `recvmmsg`; each
//! datagram's payload (VXLAN header + inner frame) lands in a packet buffer with the sender's
//! address in `meta.tunnel`, and the pipeline's decap stage validates and strips it.
//!
//! Send: a raw IPv4 socket (`IPPROTO_RAW`, so the port writes the outer IPv4 and UDP headers
//! itself) written with `sendmmsg`, each datagram as two pieces: the 36 bytes of outer IPv4 +
//! UDP + VXLAN built here, then the inner frame straight from its packet buffer. Writing the
//! UDP header is what lets the source port carry a hash of the inner flow (RFC 7348 §5:
//! entropy for the underlay's ECMP and RSS) where a bound UDP socket would always use one
//! port. The outer IPv4 has DF set; the kernel fills in its identification and checksum and
//! routes it (and resolves the next hop) like any packet of the node.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};

use socket2::{Domain, Protocol, Socket, Type};

use super::gso::{tcp4_segment_headers, tcp4_segmentation, MAX_HDR_LEN as MAX_INNER_HDR};
use super::{Port, PortId, PortKind, TxOutcome};
use crate::packet::{Batch, BATCH_SIZE};
use crate::sys::mmsg::MsgArrays;
use crate::wire::checksum;

/// Outer IPv4 (20) + UDP (8) + VXLAN (8).
pub const OUTER_LEN: usize = 36;

/// First outer UDP source port used (RFC 7348 recommends the dynamic range 49152–65535).
pub const SRC_PORT_BASE: u16 = 49152;

/// Settings of an overlay port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverlayOptions {
    /// This node's underlay address.
    pub local: Ipv4Addr,
    /// VXLAN UDP port.
    pub udp_port: u16,
    /// This node's VNI.
    pub vni: u32,
    /// Compute outer UDP checksums (otherwise zero, as RFC 7348 allows over IPv4).
    pub udp_checksum: bool,
}

/// The VXLAN endpoint of a node.
#[derive(Debug)]
pub struct OverlayPort {
    rx: UdpSocket,
    tx: Socket,
    opts: OverlayOptions,
    rx_arrays: MsgArrays,
    tx_arrays: MsgArrays,
    heads: Vec<[u8; OUTER_LEN]>,
    inner: Vec<[u8; MAX_INNER_HDR]>,
    queue: Vec<Queued>,
}

impl OverlayPort {
    /// Sends what is queued (one `sendmmsg`) and counts the outcome in datagrams.
    fn flush(&mut self, pkts: &[crate::packet::Packet], out: &mut TxOutcome) {
        let n = self.queue.len();
        if n == 0 {
            return;
        }
        let (heads, inner, queue) = (&self.heads, &self.inner, &self.queue);
        let msgs = queue.iter().enumerate().map(|(slot, q)| {
            let frame = pkts[usize::from(q.pkt)].data();
            let pieces: [&[u8]; 3] = match q.segment {
                None => [&heads[slot][..], frame, &[]],
                Some((hdr_len, start, end)) => {
                    [&heads[slot][..], &inner[slot][..hdr_len], &frame[start..end]]
                }
            };
            (SocketAddrV4::new(q.dst, 0), pieces)
        });
        let bytes = |q: &Queued| match q.segment {
            None => pkts[usize::from(q.pkt)].len() as u64,
            Some((hdr_len, start, end)) => (hdr_len + end - start) as u64,
        };
        match self.tx_arrays.send(self.tx.as_raw_fd(), msgs) {
            Ok(sent) => {
                out.sent += sent as u32;
                out.bytes += self.queue[..sent].iter().map(bytes).sum::<u64>();
                out.queue_full += (n - sent) as u32;
            }
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock
                    || e.raw_os_error() == Some(libc::ENOBUFS) =>
            {
                out.queue_full += n as u32
            }
            Err(_) => out.errors += n as u32,
        }
        self.queue.clear();
    }

    /// Binds the receive socket and opens the raw send socket, both non-blocking, in the
    /// calling thread's network namespace.
    pub fn bind(opts: OverlayOptions) -> io::Result<OverlayPort> {
        let rx = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        let _ = rx.set_recv_buffer_size(8 << 20);
        rx.bind(&SocketAddrV4::new(opts.local, opts.udp_port).into())?;
        rx.set_nonblocking(true)?;
        let tx = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(libc::IPPROTO_RAW)))?;
        let _ = tx.set_send_buffer_size(8 << 20);
        tx.set_nonblocking(true)?;
        Ok(OverlayPort {
            rx: rx.into(),
            tx,
            opts,
            rx_arrays: MsgArrays::new(BATCH_SIZE),
            tx_arrays: MsgArrays::new(TX_MSGS),
            heads: vec![[0u8; OUTER_LEN]; TX_MSGS],
            inner: vec![[0u8; MAX_INNER_HDR]; TX_MSGS],
            queue: Vec::with_capacity(TX_MSGS),
        })
    }
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
    let v = opts.vni.to_be_bytes();
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
    out[28..36].copy_from_slice(&[0x08, 0, 0, 0, v[1], v[2], v[3], 0]);
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

/// One datagram queued for `sendmmsg`: a whole frame, or one segment of a super-frame.
#[derive(Debug, Clone, Copy)]
struct Queued {
    pkt: u16,
    dst: Ipv4Addr,
    /// For a segment: its header length (the headers are in `inner[slot]`) and payload range
    /// in the frame.
    segment: Option<(usize, usize, usize)>,
}

/// Datagrams per `sendmmsg` call.
const TX_MSGS: usize = 64;

impl Port for OverlayPort {
    fn kind(&self) -> PortKind {
        PortKind::Overlay
    }

    fn rx_burst(&mut self, batch: &mut Batch, in_port: PortId) -> io::Result<usize> {
        let fd = self.rx.as_raw_fd();
        let free = batch.free_mut();
        let n = self.rx_arrays.recv(fd, free.iter_mut().map(|p| p.rx_space()))?;
        for (i, pkt) in free.iter_mut().enumerate().take(n) {
            let (len, truncated, from) = self.rx_arrays.received(i);
            pkt.set_len(if truncated { 0 } else { len });
            pkt.meta.in_port = in_port;
            pkt.meta.tunnel = from;
        }
        batch.commit_n(n);
        Ok(n)
    }

    fn tx_burst(&mut self, batch: &Batch, indices: &[u16]) -> TxOutcome {
        let mut out = TxOutcome::default();
        let pkts = batch.packets();
        self.queue.clear();
        for &i in indices {
            let Some(pkt) = pkts.get(usize::from(i)) else { continue };
            let Some(dst) = pkt.meta.tunnel else {
                out.errors += 1;
                continue;
            };
            let frame = pkt.data();
            if !pkt.meta.vnet.is_gso() {
                if self.queue.len() == TX_MSGS {
                    self.flush(pkts, &mut out);
                }
                let slot = self.queue.len();
                outer_headers(&mut self.heads[slot], &self.opts, dst, &[frame]);
                self.queue.push(Queued { pkt: i, dst, segment: None });
                continue;
            }
            let Some(seg) = tcp4_segmentation(frame, pkt.meta.vnet.gso_size) else {
                out.errors += 1;
                continue;
            };
            for k in 0..seg.count {
                if self.queue.len() == TX_MSGS {
                    self.flush(pkts, &mut out);
                }
                let slot = self.queue.len();
                let start = seg.hdr_len + k * seg.mss;
                let end = (start + seg.mss).min(frame.len());
                let payload = &frame[start..end];
                tcp4_segment_headers(frame, &seg, k, payload, &mut self.inner[slot]);
                let headers = &self.inner[slot][..seg.hdr_len];
                outer_headers(&mut self.heads[slot], &self.opts, dst, &[headers, payload]);
                self.queue.push(Queued { pkt: i, dst, segment: Some((seg.hdr_len, start, end)) });
            }
        }
        self.flush(pkts, &mut out);
        out
    }

    fn poll_fd(&self) -> Option<RawFd> {
        Some(self.rx.as_raw_fd())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
