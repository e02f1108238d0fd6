//! The overlay over AF_XDP (`[overlay] afxdp_interface`): VXLAN datagrams move between the
//! switch and the interface carrying the underlay address without the kernel's UDP stack.
//!
//! ```text
//!  underlay ──► ul0 ──► XDP filter ──► XSK rx ──► strip Ethernet/IPv4/UDP ──► decap stage
//!  underlay ◄── ul0 ◄── sendto kick ◄── XSK tx ◄── Ethernet + outer_headers ◄── encap stage
//!                 ▲
//!                 └──── kernel (raw / UDP GSO sockets): next hop unknown, TCP super-frames
//! ```
//!
//! Receive: the NodePort filter program (`node_port_filter.rs`), with the VXLAN port as the
//! only entry of its port map, redirects IPv4 UDP datagrams without options or fragments
//! addressed to `underlay_ip:udp_port` to the queue's AF_XDP socket; everything else (ARP,
//! SSH, other UDP) passes to the kernel. The port checks the outer headers again, strips
//! them, and hands the pipeline what the socket overlay hands it: VXLAN header and inner
//! frame, with the sender in `meta.tunnel`. The outer UDP checksum is not verified (RFC 7348
//! §5 leaves that to the receiver); the inner frame's own checksums still are, by its
//! destination.
//!
//! Next hops: the source MAC of a datagram is remembered for its source address (a peer on
//! the same segment, or the router in front of it), but only from a datagram that passes the
//! VXLAN check (I flag, this node's VNI) and the peer check: its source must be an address
//! the pipeline has sent to, and the pipeline sends only to the peer table's underlay
//! addresses (the gateway stage sets `meta.tunnel` from it). Any other host on the underlay
//! sending UDP to the VXLAN port, or a datagram the decap stage is about to drop, teaches
//! the port nothing. A frame for a peer whose next hop was seen within [`NEXT_HOP_TTL`] is
//! written whole (Ethernet, outer IPv4/UDP/VXLAN, inner frame) into the AF_XDP transmit
//! ring. Otherwise it goes through the kernel like the socket overlay's (raw socket; the
//! kernel routes it and resolves the next hop), the address is marked as wanted, and the
//! peer's next datagram teaches the port its MAC. At most [`MAX_NEXT_HOPS`] addresses are
//! kept, wanted or known; when full, expired ones are dropped first, and a new one that
//! still finds no room is sent to through the kernel.
//!
//! TCP super-frames (a TAP pod's TSO) go through the kernel's UDP GSO as in the socket
//! overlay: one `sendmsg` per 64 KiB costs less than writing each segment to the ring, and
//! the underlay's own offloads still apply.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::RawFd;
use std::time::Instant;

use rustc_hash::FxHashMap;

use super::afxdp::AfXdpPort;
use super::overlay::encap::{outer_headers, plan, Plan, OUTER_LEN};
use super::overlay::{OverlayOptions, OverlayPort};
use super::{Port, PortId, PortKind, TxOutcome};
use crate::packet::{Batch, BATCH_SIZE};
use crate::wire::{MacAddr, VxlanHeader};

/// Ethernet header in front of the outer IPv4.
const ETH_LEN: usize = 14;

/// Ethernet + IPv4 (no options) + UDP: what the port strips from a received datagram.
const STRIP_LEN: usize = ETH_LEN + 20 + 8;

/// Longest a learned next hop is used without being seen again, in seconds: after that, frames
/// to the peer go through the kernel (which resolves the address afresh) until it sends again.
pub const NEXT_HOP_TTL: u32 = 60;

/// Most next hops remembered per port.
pub const MAX_NEXT_HOPS: usize = 4096;

/// Underlay address → (next-hop MAC once learned, second it was last seen or wanted),
/// bounded. An address gets an entry only by being sent to ([`NextHops::want`]).
#[derive(Debug)]
struct NextHops {
    map: FxHashMap<Ipv4Addr, (Option<MacAddr>, u32)>,
}

impl NextHops {
    fn new() -> NextHops {
        let mut map = FxHashMap::default();
        map.reserve(MAX_NEXT_HOPS);
        NextHops { map }
    }

    /// Marks `ip` as an address frames are sent to at second `now`, so its datagrams may
    /// teach its next hop; never grows past [`MAX_NEXT_HOPS`] (expired entries make room
    /// first).
    fn want(&mut self, ip: Ipv4Addr, now: u32) {
        if let Some(e) = self.map.get_mut(&ip) {
            if e.0.is_none() {
                e.1 = now;
            }
            return;
        }
        if self.map.len() >= MAX_NEXT_HOPS {
            self.map.retain(|_, (_, seen)| now.saturating_sub(*seen) < NEXT_HOP_TTL);
            if self.map.len() >= MAX_NEXT_HOPS {
                return;
            }
        }
        self.map.insert(ip, (None, now));
    }

    /// Remembers that `ip` sent from `mac` at second `now`, if `ip` is sent to (wanted or
    /// known); true when remembered.
    fn learn(&mut self, ip: Ipv4Addr, mac: MacAddr, now: u32) -> bool {
        match self.map.get_mut(&ip) {
            Some(e) => {
                *e = (Some(mac), now);
                true
            }
            None => false,
        }
    }

    /// The next hop of `ip`, if seen within [`NEXT_HOP_TTL`] of `now`.
    fn get(&self, ip: Ipv4Addr, now: u32) -> Option<MacAddr> {
        let (mac, seen) = self.map.get(&ip)?;
        (now.saturating_sub(*seen) < NEXT_HOP_TTL).then_some((*mac)?)
    }
}

/// True when `payload` (what follows the outer UDP header) starts with a VXLAN header with
/// the I flag and `vni`: the check the decap stage makes first.
fn vxlan_ok(payload: &[u8], vni: u32) -> bool {
    VxlanHeader::new_checked(payload).is_ok_and(|h| h.vni().get() == vni)
}

/// The VXLAN endpoint of a node on an AF_XDP underlay queue.
#[derive(Debug)]
pub struct OverlayXdpPort {
    xdp: AfXdpPort,
    kernel: OverlayPort,
    opts: OverlayOptions,
    mac: MacAddr,
    next_hops: NextHops,
    epoch: Instant,
    /// Indices handed to the kernel path this burst (never more than a batch).
    to_kernel: Vec<u16>,
}

impl OverlayXdpPort {
    /// Pairs an AF_XDP port on the underlay interface (whose program hands it the node's
    /// VXLAN datagrams) with a socket overlay port for the kernel path; `mac` is the
    /// interface's address, the source of every frame written.
    pub fn new(xdp: AfXdpPort, kernel: OverlayPort, opts: OverlayOptions, mac: MacAddr) -> Self {
        OverlayXdpPort {
            xdp,
            kernel,
            opts,
            mac,
            next_hops: NextHops::new(),
            epoch: Instant::now(),
            to_kernel: Vec::with_capacity(BATCH_SIZE),
        }
    }

    fn seconds(&self) -> u32 {
        self.epoch.elapsed().as_secs().min(u64::from(u32::MAX)) as u32
    }
}

/// The outer headers of a received frame, checked: `(source address, source MAC, length of
/// the UDP payload)`, or `None` for anything but IPv4/UDP to `opts` without options.
fn parse_outer(frame: &[u8], opts: &OverlayOptions) -> Option<(Ipv4Addr, MacAddr, usize)> {
    let h = frame.get(..STRIP_LEN)?;
    if h[12..14] != [0x08, 0x00] || h[14] != 0x45 || h[23] != 17 {
        return None;
    }
    if h[20] & 0x3f != 0 || h[21] != 0 {
        return None; // a fragment
    }
    let total = usize::from(u16::from_be_bytes([h[16], h[17]]));
    let dst = Ipv4Addr::new(h[30], h[31], h[32], h[33]);
    let dport = u16::from_be_bytes([h[36], h[37]]);
    let udp_len = usize::from(u16::from_be_bytes([h[38], h[39]]));
    if dst != opts.local || dport != opts.udp_port {
        return None;
    }
    if total < 28 || ETH_LEN + total > frame.len() || udp_len < 8 || udp_len > total - 20 {
        return None;
    }
    let src = Ipv4Addr::new(h[26], h[27], h[28], h[29]);
    Some((src, MacAddr([h[6], h[7], h[8], h[9], h[10], h[11]]), udp_len - 8))
}

impl Port for OverlayXdpPort {
    fn kind(&self) -> PortKind {
        PortKind::Overlay
    }

    fn rx_burst(&mut self, batch: &mut Batch, in_port: PortId) -> io::Result<usize> {
        let first = batch.len();
        let n = self.xdp.rx_burst(batch, in_port)?;
        if n == 0 {
            return Ok(0);
        }
        let now = self.seconds();
        for i in first..first + n {
            let pkt = &mut batch.packets_mut()[i];
            match parse_outer(pkt.data(), &self.opts) {
                Some((src, mac, payload)) => {
                    pkt.pull_front(STRIP_LEN);
                    pkt.truncate(payload);
                    pkt.meta.tunnel = Some(src);
                    if vxlan_ok(pkt.data(), self.opts.vni) {
                        self.next_hops.learn(src, mac, now);
                    }
                }
                None => {
                    // Empty: the decap stage drops it, counted as `vxlan_malformed`.
                    pkt.set_len(0);
                    pkt.meta.tunnel = None;
                }
            }
        }
        Ok(n)
    }

    fn tx_burst(&mut self, batch: &Batch, indices: &[u16]) -> TxOutcome {
        let mut out = TxOutcome::default();
        let pkts = batch.packets();
        let now = self.seconds();
        self.to_kernel.clear();
        let mut head = [0u8; ETH_LEN + OUTER_LEN];
        head[6..12].copy_from_slice(&self.mac.0);
        head[12..14].copy_from_slice(&[0x08, 0x00]);
        for &i in indices {
            let Some(pkt) = pkts.get(usize::from(i)) else { continue };
            let frame = pkt.data();
            let Some(plan) = plan(pkt, &mut out) else { continue };
            let dst = match plan {
                // Super-frames go through the kernel's UDP GSO.
                Plan::Segments(_) => {
                    self.to_kernel.push(i);
                    continue;
                }
                Plan::Whole(dst) => dst,
            };
            match self.next_hops.get(dst, now) {
                Some(mac) if ETH_LEN + OUTER_LEN + frame.len() <= self.xdp.max_frame() => {
                    head[..6].copy_from_slice(&mac.0);
                    let outer: &mut [u8; OUTER_LEN] =
                        (&mut head[ETH_LEN..]).try_into().expect("OUTER_LEN bytes");
                    outer_headers(outer, &self.opts, dst, &[frame]);
                    self.xdp.queue_parts(&head, frame, &mut out);
                }
                _ => {
                    self.next_hops.want(dst, now);
                    self.to_kernel.push(i);
                }
            }
        }
        self.xdp.flush();
        if !self.to_kernel.is_empty() {
            out.add(&self.kernel.tx_burst(batch, &self.to_kernel));
        }
        out
    }

    fn poll_fd(&self) -> Option<RawFd> {
        self.xdp.poll_fd()
    }

    fn device_drops(&self) -> Vec<(&'static str, u64)> {
        self.xdp.device_drops()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> OverlayOptions {
        OverlayOptions {
            local: Ipv4Addr::new(192, 168, 0, 1),
            udp_port: 4789,
            vni: 1,
            udp_checksum: false,
        }
    }

    fn datagram(payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; STRIP_LEN];
        f[..6].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
        f[12..14].copy_from_slice(&[8, 0]);
        f[14] = 0x45;
        f[16..18].copy_from_slice(&((20 + 8 + payload.len()) as u16).to_be_bytes());
        f[22] = 64;
        f[23] = 17;
        f[26..30].copy_from_slice(&[192, 168, 0, 2]);
        f[30..34].copy_from_slice(&[192, 168, 0, 1]);
        f[34..36].copy_from_slice(&50_000u16.to_be_bytes());
        f[36..38].copy_from_slice(&4789u16.to_be_bytes());
        f[38..40].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn outer_headers_are_checked_and_measured() {
        let o = opts();
        let mut f = datagram(&[7u8; 30]);
        assert_eq!(
            parse_outer(&f, &o),
            Some((Ipv4Addr::new(192, 168, 0, 2), MacAddr([2, 0, 0, 0, 0, 2]), 30))
        );
        // Ethernet padding after the IP packet is not payload.
        f.extend_from_slice(&[0; 10]);
        assert_eq!(parse_outer(&f, &o).map(|p| p.2), Some(30));
        let bad = |edit: &dyn Fn(&mut Vec<u8>)| {
            let mut f = datagram(&[7u8; 30]);
            edit(&mut f);
            parse_outer(&f, &o)
        };
        assert_eq!(bad(&|f| f[12] = 0x86), None, "not IPv4");
        assert_eq!(bad(&|f| f[14] = 0x46), None, "IP options");
        assert_eq!(bad(&|f| f[23] = 6), None, "TCP");
        assert_eq!(bad(&|f| f[20] = 0x20), None, "more fragments");
        assert_eq!(bad(&|f| f[33] = 9), None, "another address");
        assert_eq!(bad(&|f| f[37] = 0), None, "another port");
        assert_eq!(bad(&|f| f[17] = 200), None, "IP length past the frame");
        assert_eq!(bad(&|f| f[39] = 200), None, "UDP length past the packet");
        assert_eq!(bad(&|f| f[39] = 4), None, "UDP length below its header");
        assert_eq!(bad(&|f| f.truncate(STRIP_LEN - 1)), None, "short");
    }

    #[test]
    fn next_hops_expire_and_stay_bounded() {
        let mut h = NextHops::new();
        let (a, m) = (Ipv4Addr::new(192, 168, 0, 2), MacAddr([2, 0, 0, 0, 0, 2]));
        assert_eq!(h.get(a, 0), None);
        h.want(a, 5);
        assert_eq!(h.get(a, 5), None, "wanted, not known");
        assert!(h.learn(a, m, 10));
        assert_eq!(h.get(a, 10 + NEXT_HOP_TTL - 1), Some(m));
        assert_eq!(h.get(a, 10 + NEXT_HOP_TTL), None, "expired: the kernel path again");
        let m2 = MacAddr([2, 0, 0, 0, 0, 3]);
        assert!(h.learn(a, m2, 100));
        assert_eq!(h.get(a, 100), Some(m2), "a move is learned at once");
        for i in 0..MAX_NEXT_HOPS as u32 + 10 {
            h.want(Ipv4Addr::from(0x0a00_0000 + i), 100);
        }
        assert_eq!(h.map.len(), MAX_NEXT_HOPS, "full: newcomers are not kept");
        assert_eq!(h.get(a, 100), Some(m2), "nothing known is evicted while fresh");
        // Once the others expired, a newcomer makes room by sweeping them.
        let late = 100 + NEXT_HOP_TTL;
        let c = Ipv4Addr::new(172, 16, 0, 1);
        h.want(c, late);
        assert!(h.learn(c, m, late));
        assert_eq!(h.get(c, late), Some(m));
        assert_eq!(h.map.len(), 1);
    }

    #[test]
    fn only_checked_datagrams_from_peers_teach_a_next_hop() {
        let mut h = NextHops::new();
        let (peer, m) = (Ipv4Addr::new(192, 168, 0, 2), MacAddr([2, 0, 0, 0, 0, 2]));
        let stranger = Ipv4Addr::new(192, 168, 0, 66);
        assert!(!h.learn(stranger, m, 1), "never sent to: not a peer");
        assert_eq!(h.get(stranger, 1), None);
        assert!(h.map.is_empty());
        h.want(peer, 1);
        assert!(h.learn(peer, m, 2));
        assert_eq!(h.get(peer, 2), Some(m));
        // The VXLAN check: I flag and this node's VNI.
        assert!(vxlan_ok(&[0x08, 0, 0, 0, 0, 0, 1, 0, 0xaa], 1));
        assert!(!vxlan_ok(&[0x08, 0, 0, 0, 0, 0, 2, 0, 0xaa], 1), "another VNI");
        assert!(!vxlan_ok(&[0x00, 0, 0, 0, 0, 0, 1, 0, 0xaa], 1), "no I flag");
        assert!(!vxlan_ok(&[0x08, 0, 0], 1), "short");
    }

    proptest::proptest! {
        #[test]
        fn parse_outer_never_panics_and_stays_in_the_frame(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)
        ) {
            if let Some((_, _, len)) = parse_outer(&bytes, &opts()) {
                proptest::prop_assert!(STRIP_LEN + len <= bytes.len());
            }
        }
    }
}
