//! Software GRO for frames written to a TAP: consecutive in-order TCP/IPv4 segments of one
//! flow become one super-frame, written with one `writev` and a virtio-net header that says
//! "GSO TCPv4, partial checksum". The tun driver turns it into one GSO skb, which the pod's
//! stack receives the way it receives a packet its NIC's GRO built: one trip through IP and
//! TCP for up to 64 KiB instead of one per ~1.4 KB segment. This is the receive half of the
//! overlay: every VXLAN datagram decapsulates into one MTU-sized frame, and without this each
//! of them costs the pod's TAP a syscall and its stack a full receive.
//!
//! # What merges
//!
//! The rules follow Linux's `tcp4_gro_receive` (and RFC 5681-friendly GRO in general): a run
//! only ever grows by a segment that the receiving TCP would have accepted as the very next
//! one, and whose headers say nothing a merged frame would lose.
//!
//! - Every segment is a *plain* frame (its own virtio-net header says no GSO; a partial
//!   checksum is fine when it sits at the TCP checksum field), untagged Ethernet, IPv4
//!   without options (IHL 5), not a fragment (MF clear, offset 0), a valid IPv4 header
//!   checksum (20 bytes: cheap, and what `inet_gro_receive` checks too), TCP with a payload
//!   (pure ACKs are never merged) and a good checksum (see below).
//! - Same Ethernet header, addresses, ports, IP TOS, TTL and DF; same TCP ACK number, window,
//!   urgent pointer, header length and options byte for byte (timestamps included: a
//!   segment with a newer TSval starts a new run, as in Linux).
//! - Flags exactly ACK; PSH is allowed on the segment that ends a run (it is carried on the
//!   merged frame, and segmentation puts it back on the last segment only). SYN, FIN, RST,
//!   URG, ECE, CWR or the reserved bits end the run and are written as they are.
//! - The sequence number continues exactly where the run ends; IP IDs either increment by
//!   one (what a sender's TSO produces) or are all identical with DF set (fixed IDs).
//! - The first segment's payload length is the run's `gso_size`; every later segment carries
//!   exactly that much, except the one that ends the run, which may carry less.
//! - At most [`MAX_SEGMENTS`] segments and an IPv4 total length of at most 65,535 bytes.
//!
//! Only *consecutive* frames merge: another flow's frame (or anything unmergeable) between
//! two segments ends the run, so the output keeps the input's order exactly. A frame that
//! does not merge with a neighbour is written unchanged, with its own virtio-net header.
//!
//! # The merged frame
//!
//! The first segment's headers, then every segment's payload. IPv4 total length is set and
//! its checksum recomputed; the TCP flags get PSH when the last segment had it; the TCP
//! checksum field holds the pseudo-header sum (addresses, protocol, TCP length), not
//! complemented, exactly as a TAP with offloads hands a super-frame to us. Its virtio-net
//! header: `NEEDS_CSUM` with `csum_start` at the TCP header and `csum_offset` 16,
//! `GSO_TCPV4`, `gso_size` the run's segment payload, `hdr_len` the header length.
//!
//! # Checksums
//!
//! A segment merges only when its TCP checksum is known good: its virtio-net header says the
//! kernel verified it (`DATA_VALID`) or will compute it over data the kernel wrote itself
//! (`NEEDS_CSUM`, a partial checksum from another pod's TAP), or it verifies here. The merged
//! frame carries a partial checksum, which the kernel trusts on local delivery, so a corrupted
//! segment merged with the others would reach the pod's TCP instead of being dropped by it.
//! A segment whose checksum is bad is written unchanged, with its own virtio-net header, and
//! the pod's stack drops it. Segments from the overlay come without such a header (their
//! underlay UDP checksum may be zero, RFC 7348), so theirs are verified: one pass over each
//! payload just before it is copied, made only for a segment about to merge, so a frame that
//! is written as it is costs nothing more. The merged checksum is recomputed from scratch
//! either way.
//!
//! # Cost
//!
//! No allocation per packet: a [`Gro`] owns one scratch buffer of [`MAX_MERGED_LEN`] bytes
//! (allocated on first use), and building a merged frame is one copy of the first segment and
//! one `memcpy` per later segment's payload, plus the checksum pass above where the
//! virtio-net header does not vouch for it. A frame that starts a run is not copied until a
//! second segment joins it.

use crate::packet::VnetHdr;
use crate::wire::{
    checksum, ethernet, ipv4, EtherType, EthernetFrame, IpProtocol, Ipv4Packet, TcpFlags, TcpPacket,
};

/// Most segments merged into one frame.
pub const MAX_SEGMENTS: usize = 64;

/// Largest IPv4 total length of a merged frame.
pub const MAX_IP_LEN: usize = 65_535;

/// Ethernet header length (merged frames are untagged).
const ETH: usize = ethernet::HEADER_LEN;

/// Offset of the TCP header: Ethernet + IPv4 without options.
const L4: usize = ETH + ipv4::HEADER_LEN;

/// Offset of the TCP checksum from the TCP header.
const TCP_CSUM: usize = 16;

/// Largest merged frame: Ethernet + the largest IPv4 packet.
pub const MAX_MERGED_LEN: usize = ETH + MAX_IP_LEN;

/// One frame to write: a merged super-frame, or an input frame passed through unchanged.
#[derive(Debug, Clone, Copy)]
pub struct GroFrame<'b> {
    /// The virtio-net header to write in front of the frame.
    pub vnet: VnetHdr,
    /// The frame.
    pub frame: &'b [u8],
    /// How many input frames it carries (1 for a frame passed through).
    pub segments: u32,
}

/// A merge candidate: what the rules need of one segment.
#[derive(Debug, Clone, Copy)]
struct Seg {
    /// Ethernet + IPv4 + TCP header length.
    hdr_len: usize,
    /// End of the IPv4 packet in the frame (14 + total length): bytes past it are padding.
    end: usize,
    seq: u32,
    id: u16,
    df: bool,
    psh: bool,
    /// The virtio-net header vouches for the TCP checksum (`DATA_VALID` or `NEEDS_CSUM`).
    csum_trusted: bool,
}

impl Seg {
    #[inline]
    fn payload(&self) -> usize {
        self.end.saturating_sub(self.hdr_len)
    }

    /// The segment as a merge candidate, or `None` when it must be written as it is.
    fn parse(frame: &[u8], vnet: &VnetHdr) -> Option<Seg> {
        if vnet.gso_type != VnetHdr::GSO_NONE
            || vnet.flags & !(VnetHdr::NEEDS_CSUM | VnetHdr::DATA_VALID) != 0
        {
            return None;
        }
        if vnet.needs_csum()
            && (usize::from(vnet.csum_start) != L4 || usize::from(vnet.csum_offset) != TCP_CSUM)
        {
            return None;
        }
        let eth = EthernetFrame::new_checked(frame).ok()?;
        if eth.ethertype() != EtherType::Ipv4 {
            return None;
        }
        let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
        if usize::from(ip.header_len()) != ipv4::HEADER_LEN
            || ip.next_header() != IpProtocol::Tcp
            || ip.more_frags()
            || ip.frag_offset() != 0
            || !ip.verify_checksum()
        {
            return None;
        }
        let tcp = TcpPacket::new_checked(ip.payload()).ok()?;
        // Reserved bits (and AccECN's AE) clear; flags ACK, or ACK|PSH; some payload.
        if tcp.reserved_bits() != 0 || tcp.payload().is_empty() {
            return None;
        }
        let psh = match tcp.flags() {
            TcpFlags::ACK => false,
            f if f == TcpFlags::ACK | TcpFlags::PSH => true,
            _ => return None,
        };
        Some(Seg {
            hdr_len: L4 + usize::from(tcp.header_len()),
            end: ETH + usize::from(ip.total_len()),
            seq: tcp.seq_number(),
            id: ip.ident(),
            df: ip.dont_frag(),
            psh,
            csum_trusted: vnet.flags & (VnetHdr::NEEDS_CSUM | VnetHdr::DATA_VALID) != 0,
        })
    }

    /// True when the TCP checksum of this segment (of `frame`) is known good: its virtio-net
    /// header vouches for it, or it verifies. Only asked of segments about to merge, so a
    /// frame written as it is costs no pass over its payload.
    fn checksum_good(&self, frame: &[u8]) -> bool {
        if self.csum_trusted {
            return true;
        }
        let Ok(eth) = EthernetFrame::new_checked(frame) else { return false };
        let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else { return false };
        TcpPacket::new_checked(ip.payload())
            .is_ok_and(|tcp| tcp.verify_checksum(&ip.src_addr(), &ip.dst_addr()))
    }
}

/// True when frame `n` belongs to the flow whose first segment is frame `first`: every header
/// field that a merged frame keeps only once is the same. Both are frames [`Seg::parse`]
/// took (the first may be followed by other segments' payloads, past its total length).
#[inline]
fn same_flow(first: &[u8], n: &[u8]) -> bool {
    let (Ok(fe), Ok(ne)) = (EthernetFrame::new_checked(first), EthernetFrame::new_checked(n))
    else {
        return false;
    };
    let (Ok(fi), Ok(ni)) =
        (Ipv4Packet::new_checked(fe.payload()), Ipv4Packet::new_checked(ne.payload()))
    else {
        return false;
    };
    let (Ok(ft), Ok(nt)) =
        (TcpPacket::new_checked(fi.payload()), TcpPacket::new_checked(ni.payload()))
    else {
        return false;
    };
    ft.header_len() == nt.header_len()
        && fe.dst_addr() == ne.dst_addr()
        && fe.src_addr() == ne.src_addr()
        && (fi.dscp(), fi.ecn()) == (ni.dscp(), ni.ecn())
        && fi.dont_frag() == ni.dont_frag()
        && fi.hop_limit() == ni.hop_limit()
        && (fi.src_addr(), fi.dst_addr()) == (ni.src_addr(), ni.dst_addr())
        && (ft.src_port(), ft.dst_port()) == (nt.src_port(), nt.dst_port())
        && ft.ack_number() == nt.ack_number()
        && ft.window_len() == nt.window_len()
        && ft.urgent_at() == nt.urgent_at()
        && ft.options() == nt.options()
}

/// How the IP IDs of a run go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ids {
    /// One segment so far.
    Open,
    /// Each one more than the last.
    Incrementing,
    /// All the same (DF set).
    Fixed,
}

/// A run of at least two segments being built in the scratch buffer.
#[derive(Debug, Clone, Copy)]
struct Run {
    first: Seg,
    last: Seg,
    count: usize,
    ids: Ids,
    /// Bytes of the merged frame so far in the scratch buffer.
    len: usize,
}

impl Run {
    fn new(first: Seg) -> Run {
        Run { first, last: first, count: 1, ids: Ids::Open, len: first.end }
    }

    /// The IP ID rule the run would follow with `n` next, or `None` when `n` cannot follow.
    /// `first` is the first segment's frame (with the run's payloads after it, if any),
    /// `next` the candidate's.
    fn accepts(&self, first: &[u8], next: &[u8], n: &Seg) -> Option<Ids> {
        let mss = self.first.payload();
        if self.count >= MAX_SEGMENTS
            || self.last.psh
            || self.last.payload() != mss
            || n.payload() > mss
            || self.len.saturating_sub(ETH) + n.payload() > MAX_IP_LEN
            || n.seq != self.last.seq.wrapping_add(self.last.payload() as u32)
            || self.first.hdr_len != n.hdr_len
            || !same_flow(first, next)
        {
            return None;
        }
        let incrementing = n.id == self.last.id.wrapping_add(1);
        let fixed = n.id == self.last.id && self.first.df;
        match self.ids {
            Ids::Open if incrementing => Some(Ids::Incrementing),
            Ids::Open if fixed => Some(Ids::Fixed),
            Ids::Incrementing if incrementing => Some(Ids::Incrementing),
            Ids::Fixed if fixed => Some(Ids::Fixed),
            _ => None,
        }
    }

    /// True when nothing can follow the last segment.
    fn closed(&self) -> bool {
        self.count >= MAX_SEGMENTS || self.last.psh || self.last.payload() != self.first.payload()
    }
}

/// The coalescer: a scratch buffer for merged frames and the rules above.
#[derive(Debug, Default)]
pub struct Gro {
    buf: Box<[u8]>,
}

/// A frame written as it came.
#[inline]
fn alone(frame: &[u8], vnet: VnetHdr) -> GroFrame<'_> {
    GroFrame { vnet, frame, segments: 1 }
}

impl Gro {
    /// A coalescer; its scratch buffer is allocated on the first merge.
    pub fn new() -> Gro {
        Gro::default()
    }

    /// Merges what the rules allow among `frames` (each with the virtio-net header it came
    /// with) and hands every frame to write, in order, to `write`: merged super-frames (from
    /// the scratch buffer) and frames passed through unchanged.
    pub fn coalesce<'a, I, W>(&mut self, frames: I, mut write: W)
    where
        I: IntoIterator<Item = (&'a [u8], VnetHdr)>,
        W: FnMut(GroFrame<'_>),
    {
        // A frame that may start a run, not copied yet.
        let mut held: Option<(&'a [u8], VnetHdr, Seg)> = None;
        // A run of two or more segments in `self.buf`.
        let mut run: Option<Run> = None;
        for (frame, vnet) in frames {
            let Some(seg) = Seg::parse(frame, &vnet) else {
                if let Some(r) = run.take() {
                    self.finish(&r, &mut write);
                }
                if let Some((f, v, _)) = held.take() {
                    write(alone(f, v));
                }
                write(alone(frame, vnet));
                continue;
            };
            if let Some(r) = run.take() {
                let ids = r.accepts(self.buf.get(..r.len).unwrap_or_default(), frame, &seg);
                if let Some(ids) = ids {
                    if seg.checksum_good(frame) {
                        run = self.grow(r, frame, vnet, seg, ids, &mut write);
                    } else {
                        self.finish(&r, &mut write);
                        write(alone(frame, vnet));
                    }
                    continue;
                }
                self.finish(&r, &mut write);
            } else if let Some((f, v, first)) = held.take() {
                let r = Run::new(first);
                match r.accepts(f, frame, &seg) {
                    Some(_) if !first.checksum_good(f) => write(alone(f, v)),
                    Some(_) if !seg.checksum_good(frame) => {
                        write(alone(f, v));
                        write(alone(frame, vnet));
                        continue;
                    }
                    Some(ids) if self.start(f, &first) => {
                        run = self.grow(r, frame, vnet, seg, ids, &mut write);
                        continue;
                    }
                    _ => write(alone(f, v)),
                }
            }
            if Run::new(seg).closed() {
                write(alone(frame, vnet));
            } else {
                held = Some((frame, vnet, seg));
            }
        }
        if let Some(r) = run {
            self.finish(&r, &mut write);
        }
        if let Some((f, v, _)) = held {
            write(alone(f, v));
        }
    }

    /// Copies the first segment of a new run (its frame up to its total length) into the
    /// scratch buffer, allocating it on first use.
    fn start(&mut self, frame: &[u8], first: &Seg) -> bool {
        if self.buf.is_empty() {
            self.buf = vec![0u8; MAX_MERGED_LEN].into_boxed_slice();
        }
        let (Some(src), Some(dst)) = (frame.get(..first.end), self.buf.get_mut(..first.end)) else {
            return false;
        };
        dst.copy_from_slice(src);
        true
    }

    /// Appends `seg` (of `frame`) to the run `r`: a run that can take no more is written out
    /// at once, an open one is handed back.
    fn grow<W: FnMut(GroFrame<'_>)>(
        &mut self,
        mut r: Run,
        frame: &[u8],
        vnet: VnetHdr,
        seg: Seg,
        ids: Ids,
        write: &mut W,
    ) -> Option<Run> {
        if !self.append(&mut r, frame, seg, ids) {
            self.finish(&r, write);
            write(alone(frame, vnet));
            return None;
        }
        if r.closed() {
            self.finish(&r, write);
            None
        } else {
            Some(r)
        }
    }

    /// Appends `seg`'s payload (of `frame`) to the run; false, run unchanged, when it does
    /// not fit.
    fn append(&mut self, r: &mut Run, frame: &[u8], seg: Seg, ids: Ids) -> bool {
        let Some(payload) = frame.get(seg.hdr_len..seg.end) else { return false };
        let Some(dst) = self.buf.get_mut(r.len..r.len + payload.len()) else { return false };
        dst.copy_from_slice(payload);
        r.len += payload.len();
        r.last = seg;
        r.count += 1;
        r.ids = ids;
        true
    }

    /// Rewrites the run's headers in the scratch buffer (lengths, checksums, PSH) and writes
    /// it. The buffer holds what [`Gro::start`] and [`Gro::append`] put there, headers that
    /// [`Seg::parse`] took, so the views below always check; were they not to, the run's
    /// segments would be lost rather than written broken.
    fn finish<W: FnMut(GroFrame<'_>)>(&mut self, r: &Run, write: &mut W) {
        if let Some(frame) = self.merged(r) {
            write(frame);
        }
    }

    /// The run as one frame, its headers rewritten; `None` if they do not check.
    fn merged(&mut self, r: &Run) -> Option<GroFrame<'_>> {
        let ip_len = u16::try_from(r.len.checked_sub(ETH)?).ok()?;
        let mut eth = EthernetFrame::new_checked(self.buf.get_mut(..r.len)?).ok()?;
        let mut ip = Ipv4Packet::new_checked(eth.payload_mut()).ok()?;
        ip.set_total_len(ip_len);
        ip.fill_checksum();
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        let tcp_len = ip.payload().len() as u16;
        let mut tcp = TcpPacket::new_checked(ip.payload_mut()).ok()?;
        if r.last.psh {
            tcp.set_flags(tcp.flags() | TcpFlags::PSH);
        }
        tcp.set_checksum(checksum::fold(checksum::pseudo_header_v4(
            &src,
            &dst,
            IpProtocol::Tcp,
            tcp_len,
        )));
        Some(GroFrame {
            vnet: VnetHdr {
                flags: VnetHdr::NEEDS_CSUM,
                gso_type: VnetHdr::GSO_TCPV4,
                hdr_len: r.first.hdr_len as u16,
                gso_size: r.first.payload() as u16,
                csum_start: L4 as u16,
                csum_offset: TCP_CSUM as u16,
            },
            frame: self.buf.get(..r.len)?,
            segments: r.count as u32,
        })
    }
}

#[cfg(test)]
mod tests;
