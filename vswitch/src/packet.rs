//! Packet buffers, their per-packet [`Meta`], and the fixed-capacity [`Batch`] the pipeline
//! runs over.
//!
//! A [`Batch`] is allocated once per worker and reused for every burst: a port's `rx_burst`
//! writes frames into the buffers it already holds, the pipeline stages read and rewrite them
//! in place, and the output stage hands the same buffers to the ports' `tx_burst`. Nothing on
//! that path allocates.
//!
//! Every buffer keeps [`HEADROOM`] bytes in front of the frame so that an encapsulation
//! (VXLAN adds 50 bytes) can prepend headers without moving the frame.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::stats::DropReason;
use crate::wire::EthernetFrame;

/// Index of a port in the switch's port table.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub struct PortId(pub u16);

impl PortId {
    /// The id as an index into per-port arrays.
    #[inline]
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

impl std::fmt::Display for PortId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Bytes reserved in front of every received frame for headers pushed later (VXLAN + outer
/// IPv4/UDP/Ethernet is 50 bytes; 128 keeps the frame start cache-line aligned).
pub const HEADROOM: usize = 128;

/// Largest frame a port may hand to the pipeline: a TCP segmentation offload super-frame (an
/// IPv4 packet of up to 65,535 bytes) plus Ethernet and one VLAN tag, rounded up. TAP ports
/// with offloads deliver such frames; everything else stays below 9,216 bytes.
pub const MAX_FRAME_LEN: usize = 65_560;

/// Size of one packet buffer.
pub const BUF_SIZE: usize = HEADROOM + MAX_FRAME_LEN;

/// Packets per burst. 32 keeps a batch's headers in L1/L2 while amortising the per-burst
/// work (stage dispatch, table snapshot loads, tx flushes); it is also the copy-mode AF_XDP
/// kick limit and what OVS uses (`NETDEV_MAX_BURST`).
pub const BATCH_SIZE: usize = 32;

/// What the pipeline decided to do with a packet. Stages only move a packet forward from
/// `Continue`; once set to anything else, later stages leave it alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Action {
    /// Not decided yet: the next stage looks at it.
    #[default]
    Continue,
    /// Send out of exactly this port.
    Forward(PortId),
    /// Send out of every port except the one it came in on.
    Flood,
    /// The frame was rewritten into an answer (ARP reply, ICMP echo reply) for its sender:
    /// send it back out of the port it came in on.
    Reply,
    /// To be run through the table stages by worker `.0`, which tracks the flow's
    /// connection (set by the steer stage; the worker moves the packet there after the
    /// pipeline, as it executes the transmit plan).
    Steer(u8),
    /// Moved to another worker, which finishes it (the flow's connection-tracking state
    /// lives there); this batch's slot holds an empty buffer.
    Handed,
    /// Dropped; the reason is counted against the ingress port.
    Drop(DropReason),
}

/// What classify learned about a frame, so later stages never parse it again.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Meta {
    /// Port the frame arrived on.
    pub in_port: PortId,
    /// Decision so far.
    pub action: Action,
    /// EtherType of the payload after any VLAN tag (host order).
    pub ethertype: u16,
    /// 802.1Q VLAN id when the frame carried a tag.
    pub vlan: Option<u16>,
    /// Offset of the L3 header from the start of the frame.
    pub l3_offset: u16,
    /// Offset of the L4 header (IPv4 only; 0 when not parsed).
    pub l4_offset: u16,
    /// The IPv4 5-tuple: addresses of every IPv4 packet, `proto` its protocol number (0
    /// when not IPv4), ports only when [`Meta::has_ports`]. It describes the frame's
    /// current headers: a stage that rewrites addresses or ports (NAT) updates it.
    pub flow: FlowKey,
    /// The IPv4 fragment bits.
    pub frag: Frag,
    /// True for a TCP or UDP packet whose whole L4 header is in the frame (not a later
    /// fragment): `flow` has its ports and `flow_hash` is set.
    pub has_ports: bool,
    /// [`FlowKey::seeded_hash`] of the 5-tuple classify read, with the switch's flow seed
    /// (the conntrack tables' bucket hash); valid only when `hashed`. Rewrites leave it as
    /// it was: it names the flow the packet arrived as.
    pub flow_hash: u32,
    /// Whether classify computed `flow_hash` (a packet with ports, while the worker had
    /// Service NAT work: without Services, connections or NodePort nothing reads it).
    pub hashed: bool,
    /// The overlay peer's underlay address: the sender of a received VXLAN datagram, the
    /// destination of one to send.
    pub tunnel: Option<std::net::Ipv4Addr>,
    /// Offload metadata that came with the frame (a TAP port's virtio-net header): a partial
    /// checksum to complete, or a super-frame to segment, before it leaves through a port
    /// that cannot take it as is.
    pub vnet: VnetHdr,
}

/// Where an IPv4 packet sits among the fragments of its datagram.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Frag {
    /// Not fragmented (or not IPv4).
    #[default]
    Whole,
    /// The first fragment (offset 0, more fragments follow): carries the L4 header.
    First,
    /// A later fragment (offset > 0): no L4 header, no ports.
    Later,
}

impl Frag {
    /// From the IPv4 header's MF flag and fragment offset.
    #[inline]
    pub fn of(more_frags: bool, offset: u16) -> Frag {
        match (offset, more_frags) {
            (0, false) => Frag::Whole,
            (0, true) => Frag::First,
            _ => Frag::Later,
        }
    }
}

/// A flow's 5-tuple as seen on the wire. For ICMP echo, `sport` = `dport` = the echo
/// identifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Source port (ICMP: the echo identifier).
    pub sport: u16,
    /// Destination port (ICMP: the echo identifier).
    pub dport: u16,
    /// IP protocol number.
    pub proto: u8,
}

const _: () = assert!(std::mem::size_of::<FlowKey>() == 14);

impl Default for FlowKey {
    fn default() -> Self {
        FlowKey {
            src: Ipv4Addr::UNSPECIFIED,
            dst: Ipv4Addr::UNSPECIFIED,
            sport: 0,
            dport: 0,
            proto: 0,
        }
    }
}

impl FlowKey {
    /// The same flow seen from the other end: addresses and ports swapped.
    #[inline]
    pub fn reversed(&self) -> FlowKey {
        FlowKey {
            src: self.dst,
            dst: self.src,
            sport: self.dport,
            dport: self.sport,
            proto: self.proto,
        }
    }

    /// A well-mixed 64-bit hash (for endpoint selection); same value every time for the
    /// same key, in every process and version (no random seed), so a restarted switch picks
    /// the same backend for a flow it meets again. Direction matters: `k.reversed()` hashes
    /// differently.
    #[inline]
    pub fn hash64(&self) -> u64 {
        let (a, b) = self.words();
        mix64(mix64(a.wrapping_add(0x9e37_79b9_7f4a_7c15)) ^ b)
    }

    /// A 32-bit hash keyed by `seed` (a secret random value per process), for hash tables a
    /// pod must not be able to aim collisions at: which 5-tuples share a bucket depends on
    /// the seed.
    #[inline]
    pub fn seeded_hash(&self, seed: u64) -> u32 {
        let (a, b) = self.words();
        mix64(mix64(a ^ seed) ^ b) as u32
    }

    #[inline(always)]
    fn words(&self) -> (u64, u64) {
        let a = u64::from(u32::from(self.src)) << 32 | u64::from(u32::from(self.dst));
        let b = u64::from(self.sport) << 32 | u64::from(self.dport) << 16 | u64::from(self.proto);
        (a, b)
    }
}

/// The splitmix64 finalizer: every input bit affects every output bit.
#[inline]
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The `struct virtio_net_hdr` a TAP device with `IFF_VNET_HDR` puts in front of each frame
/// (fields in host order). All zero: a plain frame with complete checksums.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VnetHdr {
    /// `NEEDS_CSUM` (1): the L4 checksum is partial; `DATA_VALID` (2).
    pub flags: u8,
    /// `GSO_NONE` (0), `GSO_TCPV4` (1), `GSO_UDP` (3), `GSO_TCPV6` (4), `GSO_UDP_L4` (5), with
    /// `GSO_ECN` (0x80) or'ed in.
    pub gso_type: u8,
    /// Length of the headers (a hint).
    pub hdr_len: u16,
    /// Payload bytes per segment.
    pub gso_size: u16,
    /// Where checksumming starts (the L4 header).
    pub csum_start: u16,
    /// Where, from `csum_start`, the checksum goes.
    pub csum_offset: u16,
}

impl VnetHdr {
    /// Size on the wire (the legacy header, `TUNSETVNETHDRSZ` default).
    pub const LEN: usize = 10;
    /// Flag: the checksum at `csum_start + csum_offset` is partial.
    pub const NEEDS_CSUM: u8 = 1;
    /// Flag: the checksum was verified (only ever read from a device, never needed on write).
    pub const DATA_VALID: u8 = 2;
    /// GSO type: none.
    pub const GSO_NONE: u8 = 0;
    /// GSO type: TCP over IPv4.
    pub const GSO_TCPV4: u8 = 1;
    /// GSO type: TCP over IPv6.
    pub const GSO_TCPV6: u8 = 4;
    /// GSO flag: the segments carry ECN (CWR only on the first).
    pub const GSO_ECN: u8 = 0x80;

    /// Reads a header.
    pub fn parse(b: &[u8; Self::LEN]) -> VnetHdr {
        let u = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u(2),
            gso_size: u(4),
            csum_start: u(6),
            csum_offset: u(8),
        }
    }

    /// Writes the header.
    pub fn write(&self, b: &mut [u8; Self::LEN]) {
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_ne_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_ne_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_ne_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_ne_bytes());
    }

    /// A super-frame to be segmented.
    #[inline]
    pub fn is_gso(&self) -> bool {
        self.gso_type & !Self::GSO_ECN != Self::GSO_NONE
    }

    /// The L4 checksum is partial.
    #[inline]
    pub fn needs_csum(&self) -> bool {
        self.flags & Self::NEEDS_CSUM != 0
    }

    /// Completes the partial L4 checksum this header describes in `frame` (a copy of the
    /// frame it came with): the field holds the pseudo-header sum, so the checksum over
    /// everything from `csum_start` is the final one. True when done or not needed; false
    /// (frame unchanged) when the offsets point outside the frame.
    pub fn complete_checksum(&self, frame: &mut [u8]) -> bool {
        if !self.needs_csum() {
            return true;
        }
        let start = usize::from(self.csum_start);
        let at = start + usize::from(self.csum_offset);
        if at + 2 > frame.len() {
            return false;
        }
        let c = match crate::wire::checksum::finish(crate::wire::checksum::sum(&frame[start..])) {
            0 => 0xffff,
            c => c,
        };
        frame[at..at + 2].copy_from_slice(&c.to_be_bytes());
        true
    }
}

/// One frame in a buffer with headroom. The frame is `buf[start..start + len]`.
pub struct Packet {
    buf: Box<[u8]>,
    start: usize,
    len: usize,
    /// Per-packet metadata filled by the pipeline.
    pub meta: Meta,
}

impl std::fmt::Debug for Packet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Packet").field("len", &self.len).field("meta", &self.meta).finish()
    }
}

impl Default for Packet {
    fn default() -> Self {
        Self::new()
    }
}

impl Packet {
    /// A new empty packet with its own buffer (allocated once, reused for every frame).
    pub fn new() -> Self {
        Packet {
            buf: vec![0u8; BUF_SIZE].into_boxed_slice(),
            start: HEADROOM,
            len: 0,
            meta: Meta::default(),
        }
    }

    /// The frame bytes.
    #[inline]
    pub fn data(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.len]
    }

    /// The frame bytes, writable.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.start + self.len]
    }

    /// The frame split where classify found the L3 header (`meta.l3_offset`): the Ethernet
    /// header as a writable view, and the L3 bytes to build the L3 view on. `None` when the
    /// offset lies past the frame or leaves no room for an Ethernet header before it.
    #[inline]
    pub fn split_l3_mut(&mut self) -> Option<(EthernetFrame<&mut [u8]>, &mut [u8])> {
        let l3 = usize::from(self.meta.l3_offset);
        let (eth, rest) = self.data_mut().split_at_mut_checked(l3)?;
        Some((EthernetFrame::new_checked(eth).ok()?, rest))
    }

    /// Frame length in bytes.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the packet holds no frame.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Resets the packet for a new frame and returns the space a port may receive into
    /// (everything after the headroom). Call [`Packet::set_len`] with what was written.
    #[inline]
    pub fn rx_space(&mut self) -> &mut [u8] {
        self.start = HEADROOM;
        self.len = 0;
        self.meta = Meta::default();
        &mut self.buf[HEADROOM..]
    }

    /// Sets the frame length after a receive into [`Packet::rx_space`] (or before a stage
    /// writes a longer answer in place). Lengths beyond the
    /// buffer are clamped, so a port cannot make the frame point outside it.
    #[inline]
    pub fn set_len(&mut self, len: usize) {
        self.len = len.min(self.buf.len() - self.start);
    }

    /// Copies `frame` in as a freshly received frame (used by in-memory ports and tests).
    /// Returns false, leaving the packet empty, when the frame is larger than [`MAX_FRAME_LEN`].
    pub fn fill_from(&mut self, frame: &[u8]) -> bool {
        let space = self.rx_space();
        if frame.len() > space.len() {
            return false;
        }
        space[..frame.len()].copy_from_slice(frame);
        self.set_len(frame.len());
        true
    }

    /// Grows the frame at the front by `n` bytes taken from the headroom and returns the new
    /// front bytes (uninitialised content: the caller writes the new header). `None` when the
    /// headroom is too small.
    #[inline]
    pub fn push_front(&mut self, n: usize) -> Option<&mut [u8]> {
        if n > self.start {
            return None;
        }
        self.start -= n;
        self.len += n;
        Some(&mut self.buf[self.start..self.start + n])
    }

    /// Removes `n` bytes from the front of the frame (a decapsulation). `false` when the frame
    /// is shorter than `n`.
    #[inline]
    pub fn pull_front(&mut self, n: usize) -> bool {
        if n > self.len {
            return false;
        }
        self.start += n;
        self.len -= n;
        true
    }

    /// Completes a partial L4 checksum (`meta.vnet` says where) in software and clears the
    /// flag, for a frame leaving through a port that cannot carry the offload metadata. The
    /// field holds the pseudo-header sum, so the checksum over everything from `csum_start`
    /// is the final one. False (frame unchanged) when the offsets point outside the frame.
    pub fn complete_checksum(&mut self) -> bool {
        let v = self.meta.vnet;
        if !v.complete_checksum(self.data_mut()) {
            return false;
        }
        self.meta.vnet.flags &= !VnetHdr::NEEDS_CSUM;
        true
    }

    /// Shortens the frame to `len` bytes (no-op when already shorter).
    #[inline]
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }
}

/// A burst of up to [`BATCH_SIZE`] packets. The buffers live as long as the batch; `len`
/// says how many of them hold frames of the current burst.
#[derive(Debug)]
pub struct Batch {
    pkts: Vec<Packet>,
    len: usize,
}

impl Default for Batch {
    fn default() -> Self {
        Self::new()
    }
}

impl Batch {
    /// A batch with [`BATCH_SIZE`] preallocated buffers.
    pub fn new() -> Self {
        Batch { pkts: (0..BATCH_SIZE).map(|_| Packet::new()).collect(), len: 0 }
    }

    /// Number of packets in the current burst.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the burst is empty.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True when no more packets fit.
    #[inline]
    pub fn is_full(&self) -> bool {
        self.len == self.pkts.len()
    }

    /// Empties the burst (buffers are kept).
    #[inline]
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// The next free packet, for a port to receive into; call [`Batch::commit`] once it
    /// holds a frame. `None` when the batch is full.
    #[inline]
    pub fn next_free(&mut self) -> Option<&mut Packet> {
        self.pkts.get_mut(self.len)
    }

    /// Accepts the packet last returned by [`Batch::next_free`] into the burst.
    #[inline]
    pub fn commit(&mut self) {
        debug_assert!(self.len < self.pkts.len());
        self.len = (self.len + 1).min(self.pkts.len());
    }

    /// Every free buffer after the current burst, for a port that receives several frames in
    /// one call; follow with [`Batch::commit_n`].
    #[inline]
    pub fn free_mut(&mut self) -> &mut [Packet] {
        &mut self.pkts[self.len..]
    }

    /// Accepts the first `n` free buffers into the burst.
    #[inline]
    pub fn commit_n(&mut self, n: usize) {
        self.len = (self.len + n).min(self.pkts.len());
    }

    /// Copies a frame into the next free buffer as arriving on `in_port`. False when the
    /// batch is full or the frame too large.
    pub fn push_frame(&mut self, in_port: PortId, frame: &[u8]) -> bool {
        let Some(pkt) = self.next_free() else { return false };
        if !pkt.fill_from(frame) {
            return false;
        }
        pkt.meta.in_port = in_port;
        self.commit();
        true
    }

    /// The packets of the current burst.
    /// Takes packet `i` out of the batch (to hand it to another worker), leaving
    /// `replacement` (an empty buffer) in its slot marked [`Action::Handed`], so later stages
    /// and the output plan skip it. `Err` (nothing changed, `replacement` given back) when
    /// `i` is not a packet of the batch.
    pub fn take(&mut self, i: usize, mut replacement: Packet) -> Result<Packet, Packet> {
        if i >= self.len {
            return Err(replacement);
        }
        replacement.len = 0;
        replacement.meta = Meta { action: Action::Handed, ..Meta::default() };
        Ok(std::mem::replace(&mut self.pkts[i], replacement))
    }

    /// Appends a whole packet (one handed over by another worker) and returns the empty
    /// buffer its slot held; gives `pkt` back when the batch is full.
    pub fn push_packet(&mut self, pkt: Packet) -> Result<Packet, Packet> {
        if self.len >= self.pkts.len() {
            return Err(pkt);
        }
        let old = std::mem::replace(&mut self.pkts[self.len], pkt);
        self.len += 1;
        Ok(old)
    }

    #[inline]
    pub fn packets(&self) -> &[Packet] {
        &self.pkts[..self.len]
    }

    /// The packets of the current burst, writable.
    #[inline]
    pub fn packets_mut(&mut self) -> &mut [Packet] {
        &mut self.pkts[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_and_pull_front_use_headroom() {
        let mut p = Packet::new();
        assert!(p.fill_from(&[1, 2, 3, 4]));
        p.push_front(2).unwrap().copy_from_slice(&[9, 9]);
        assert_eq!(p.data(), &[9, 9, 1, 2, 3, 4]);
        assert!(p.pull_front(2));
        assert_eq!(p.data(), &[1, 2, 3, 4]);
        assert!(p.push_front(HEADROOM + 1).is_none());
        assert!(!p.pull_front(5));
    }

    #[test]
    fn partial_checksums_are_completed() {
        let b = etherparse::PacketBuilder::ethernet2([2; 6], [4; 6])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .udp(1000, 2000);
        let mut frame = Vec::new();
        b.write(&mut frame, b"some payload bytes!").unwrap();
        let good = u16::from_be_bytes([frame[40], frame[41]]);
        // What a kernel hands over with NEEDS_CSUM: the pseudo-header sum, not complemented.
        let src = std::net::Ipv4Addr::new(10, 0, 0, 1);
        let dst = std::net::Ipv4Addr::new(10, 0, 0, 2);
        let len = (frame.len() - 34) as u16;
        let pseudo = crate::wire::checksum::fold(crate::wire::checksum::pseudo_header_v4(
            &src,
            &dst,
            crate::wire::IpProtocol::Udp,
            len,
        ));
        frame[40..42].copy_from_slice(&pseudo.to_be_bytes());
        let mut p = Packet::new();
        assert!(p.fill_from(&frame));
        p.meta.vnet = VnetHdr {
            flags: VnetHdr::NEEDS_CSUM,
            csum_start: 34,
            csum_offset: 6,
            ..Default::default()
        };
        assert!(p.complete_checksum());
        assert_eq!(u16::from_be_bytes([p.data()[40], p.data()[41]]), good);
        assert!(!p.meta.vnet.needs_csum());
        p.meta.vnet = VnetHdr {
            flags: VnetHdr::NEEDS_CSUM,
            csum_start: 60,
            csum_offset: 6,
            ..Default::default()
        };
        assert!(!p.complete_checksum(), "offsets past the frame are refused");
        let mut raw = [0u8; VnetHdr::LEN];
        let v = VnetHdr {
            flags: 1,
            gso_type: VnetHdr::GSO_TCPV4 | VnetHdr::GSO_ECN,
            hdr_len: 66,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
        };
        v.write(&mut raw);
        assert_eq!(VnetHdr::parse(&raw), v);
        assert!(v.is_gso() && v.needs_csum());
        assert!(!VnetHdr::default().is_gso());
    }

    #[test]
    fn batch_fills_to_capacity() {
        let mut b = Batch::new();
        for i in 0..BATCH_SIZE {
            assert!(b.push_frame(PortId(1), &[i as u8; 60]));
        }
        assert!(b.is_full());
        assert!(!b.push_frame(PortId(1), &[0; 60]));
        assert_eq!(b.packets()[3].data()[0], 3);
        b.clear();
        assert!(b.is_empty());
    }

    #[test]
    fn oversize_frames_are_refused() {
        let mut p = Packet::new();
        assert!(!p.fill_from(&vec![0u8; MAX_FRAME_LEN + 1]));
        assert!(p.is_empty());
    }
}
