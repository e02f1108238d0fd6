//! The overlay port: VXLAN datagrams on the node's underlay address, in bursts.
//!
//! Receive: a UDP socket bound to `underlay_ip:udp_port` with `UDP_GRO` on, read with
//! `recvmmsg` into 64 KiB buffers: a read may hold several equal-size datagrams the kernel
//! coalesced (a peer's UDP GSO send, carried whole through veth and bridge), with a
//! `UDP_GRO` cmsg giving the size. Each datagram is copied into its own packet (VXLAN header
//! and inner frame) with the sender's address in `meta.tunnel`, and the pipeline's decap stage
//! validates and strips it. Datagrams left over when the batch is full wait for the next
//! burst (the batch then came back full, so the worker calls again).
//!
//! Several queues ([`OverlayPort::bind_queues`], one port per worker): the ports' receive
//! sockets form one `SO_REUSEPORT` group on the address, so the kernel hands each datagram
//! to one of them by a hash of its addresses and ports (a peer's flow, whose outer source
//! port follows its inner flow, always reaches the same worker); each port has its own send
//! sockets.
//!
//! Send, ordinary frames: a raw IPv4 socket (`IPPROTO_RAW`, so the port writes the outer
//! IPv4 and UDP headers itself) written with `sendmmsg`, each datagram as pieces: the 36 bytes
//! of outer IPv4 + UDP + VXLAN built here, then the inner frame straight from its packet
//! buffer. Writing the UDP header is what lets the source port carry a hash of the inner flow
//! (RFC 7348 §5: entropy for the underlay's ECMP and RSS) where a bound UDP socket would
//! always use one port. The outer IPv4 has DF set; the kernel fills in its identification and
//! checksum and routes it (and resolves the next hop) like any packet of the node.
//!
//! Send, TCP super-frames (a pod's TSO, `meta.vnet` GSO): UDP GSO. The segments' VXLAN
//! payloads (VXLAN header, inner headers rebuilt per segment with complete checksums, the
//! segment's payload) are built back to back in one preallocated buffer and sent with one
//! `sendmsg` carrying a `UDP_SEGMENT` cmsg (up to 64 segments / 64 KiB per send) on one of
//! [`GSO_SOCKETS`] UDP sockets bound to `underlay_ip:0` (each its own ephemeral port, DF
//! set), picked by the inner flow hash: a flow keeps one outer source port and flows spread
//! over 16. The kernel splits the send late (or never, on a veth path: the GSO skb crosses
//! veth and bridge whole and the peer's `UDP_GRO` socket reads it in one go). UDP GSO needs
//! UDP checksums, so these datagrams always carry one (the kernel's, offloaded), whatever
//! `udp_checksum` says; RFC 7348 allows either. If the kernel refuses `UDP_SEGMENT` (at setup
//! or on the first send) the port segments super-frames in software for good, through the
//! raw socket as before.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};

use socket2::{Domain, Protocol, Socket, Type};

use super::{Port, PortId, PortKind, TxOutcome};
use crate::offload::gso::{
    tcp4_segment_headers, tcp4_segmentation, Segmentation, MAX_HDR_LEN as MAX_INNER_HDR,
};
use crate::packet::{Batch, Packet};
use crate::sys::mmsg::{self, MsgArrays};

pub mod encap;

pub use encap::{
    build_gso_payloads, flow_hash, outer_headers, plan, Plan, GSO_MAX_SEGMENTS, OUTER_LEN,
    SRC_PORT_BASE,
};

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
    /// UDP GSO senders for super-frames; `None` when the kernel refused `UDP_SEGMENT`.
    gso: Option<GsoTx>,
    /// Receive buffers (one coalesced `UDP_GRO` read each) and how far they are consumed:
    /// messages `rx_next..rx_count` of the last `recvmmsg` still hold datagrams, the current
    /// one from byte `rx_off`.
    rx_bufs: Vec<Box<[u8]>>,
    rx_count: usize,
    rx_next: usize,
    rx_off: usize,
    /// The first send error was logged (later ones are only counted).
    logged_error: bool,
}

/// The UDP GSO send side: one UDP socket per outer source port, and the buffer a
/// super-frame's VXLAN payloads are built in.
#[derive(Debug)]
struct GsoTx {
    socks: Vec<Socket>,
    buf: Box<[u8]>,
    /// A `UDP_SEGMENT` send has succeeded (later refusals are per frame, not "unsupported").
    worked: bool,
}

/// UDP sockets (so outer source ports) the GSO path spreads flows over.
pub const GSO_SOCKETS: usize = 16;

/// Most bytes one `UDP_SEGMENT` send carries (the largest UDP payload over IPv4).
pub const GSO_MAX_BYTES: usize = 65_507;

/// Datagrams read per `recvmmsg`, each into a buffer large enough for a coalesced read.
const RX_MSGS: usize = 16;

/// Size of a receive buffer: a whole `UDP_GRO` read (at most 64 KiB).
const RX_BUF_LEN: usize = 65_536;

impl GsoTx {
    /// Opens the send sockets on `local`, each bound to its own ephemeral port, with DF
    /// (`IP_PMTUDISC_DO`) and `UDP_SEGMENT` accepted; an error means no UDP GSO here.
    fn open(local: Ipv4Addr) -> io::Result<GsoTx> {
        let mut socks = Vec::with_capacity(GSO_SOCKETS);
        for _ in 0..GSO_SOCKETS {
            let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
            let _ = s.set_send_buffer_size(4 << 20);
            let _ = s.set_recv_buffer_size(4096);
            let fd = s.as_raw_fd();
            mmsg::set_int_opt(fd, libc::IPPROTO_IP, libc::IP_MTU_DISCOVER, libc::IP_PMTUDISC_DO)?;
            mmsg::set_int_opt(fd, libc::SOL_UDP, mmsg::UDP_SEGMENT, 0)?;
            s.bind(&SocketAddrV4::new(local, 0).into())?;
            s.set_nonblocking(true)?;
            socks.push(s);
        }
        Ok(GsoTx { socks, buf: vec![0u8; GSO_MAX_BYTES].into_boxed_slice(), worked: false })
    }
}

/// The next datagram of a received buffer of `len` bytes read at `off`, when the kernel
/// coalesced datagrams of `gro` bytes into it (`UDP_GRO`): its byte range, and the offset
/// after it (the buffer is used up when that reaches `len`). A missing or nonsensical size
/// (0, or not smaller than `len`) means the buffer is one datagram.
pub fn gro_segment(len: usize, gro: Option<usize>, off: usize) -> (std::ops::Range<usize>, usize) {
    let step = match gro {
        Some(g) if g > 0 && g < len => g,
        _ => len,
    };
    let start = off.min(len);
    let end = start.saturating_add(step).min(len);
    (start..end, end)
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
            Err(e) => {
                if !self.logged_error {
                    self.logged_error = true;
                    eprintln!("podswitch: overlay: send failed (counted as tx_error): {e}");
                }
                out.errors += n as u32
            }
        }
        self.queue.clear();
    }

    /// Binds the receive socket and opens the raw send socket, both non-blocking, in the
    /// calling thread's network namespace. Fails with `AddrInUse` when anything holds
    /// `local:udp_port`.
    pub fn bind(opts: OverlayOptions) -> io::Result<OverlayPort> {
        let mut ports = OverlayPort::bind_queues(opts, 1)?;
        ports.pop().ok_or_else(|| io::Error::other("no overlay port"))
    }

    /// `queues` ports on `local:udp_port`, for one worker each: their receive sockets share
    /// the address through `SO_REUSEPORT` (the kernel gives each datagram to one of them by
    /// a hash of its addresses and ports, so a peer's flow always reaches the same port), and
    /// each has its own send side. One queue is [`OverlayPort::bind`]: no `SO_REUSEPORT`.
    ///
    /// Fails with `InvalidInput` when `queues` is 0, and with `AddrInUse` when anything
    /// already holds the address, including another switch's reuse-port group.
    pub fn bind_queues(opts: OverlayOptions, queues: u32) -> io::Result<Vec<OverlayPort>> {
        if queues == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "overlay: invalid queues 0: must be at least 1",
            ));
        }
        let addr = SocketAddrV4::new(opts.local, opts.udp_port);
        let mut rxs = Vec::with_capacity(queues as usize);
        for q in 0..queues {
            let rx = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
            let _ = rx.set_recv_buffer_size(8 << 20);
            // Coalesced reads of a sender's GSO datagrams; without it the kernel splits them.
            let _ = mmsg::set_int_opt(rx.as_raw_fd(), libc::SOL_UDP, mmsg::UDP_GRO, 1);
            // The first socket binds without SO_REUSEPORT, so the bind fails if anything
            // holds the address, a reuse-port group included; it joins the group only once
            // bound, and the others join it. Another switch doing the same fails at its
            // first bind. What cannot be stopped is a process of the same user that sets
            // SO_REUSEPORT before binding: the kernel lets it join.
            if q > 0 {
                rx.set_reuse_port(true)?;
            }
            rx.bind(&addr.into()).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("overlay: cannot bind UDP {addr} (queue {q} of {queues}): {e}"),
                )
            })?;
            if q == 0 && queues > 1 {
                rx.set_reuse_port(true)?;
            }
            rx.set_nonblocking(true)?;
            rxs.push(rx);
        }
        rxs.into_iter().map(|rx| OverlayPort::with_rx(rx, opts)).collect()
    }

    /// A port receiving on `rx`, with a send side of its own: the raw socket and, when the
    /// kernel has UDP GSO, [`GSO_SOCKETS`] send sockets. Each queue gets the full set rather
    /// than a share of one: the flows of a worker then spread over as many outer source
    /// ports as with a single queue, and a flow (which one worker carries) keeps its port.
    fn with_rx(rx: Socket, opts: OverlayOptions) -> io::Result<OverlayPort> {
        let tx = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(libc::IPPROTO_RAW)))?;
        let _ = tx.set_send_buffer_size(8 << 20);
        tx.set_nonblocking(true)?;
        let gso = match GsoTx::open(opts.local) {
            Ok(g) => Some(g),
            Err(e) => {
                eprintln!(
                    "podswitch: overlay: no UDP GSO ({e}); segmenting super-frames in software"
                );
                None
            }
        };
        Ok(OverlayPort {
            rx: rx.into(),
            tx,
            opts,
            rx_arrays: MsgArrays::with_control(RX_MSGS),
            tx_arrays: MsgArrays::new(TX_MSGS),
            heads: vec![[0u8; OUTER_LEN]; TX_MSGS],
            inner: vec![[0u8; MAX_INNER_HDR]; TX_MSGS],
            queue: Vec::with_capacity(TX_MSGS),
            gso,
            rx_bufs: (0..RX_MSGS).map(|_| vec![0u8; RX_BUF_LEN].into_boxed_slice()).collect(),
            rx_count: 0,
            rx_next: 0,
            rx_off: 0,
            logged_error: false,
        })
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

impl OverlayPort {
    /// Sends super-frame `pkt`'s segments with `UDP_SEGMENT` sends, one per up to 64 KiB.
    /// `None` when all were sent or refused for a full queue (counted in `out`); otherwise
    /// the first segment left for the software path (after a refusal the kernel gave for
    /// this frame, or for good when it never took one).
    fn send_gso(
        &mut self,
        pkt: &Packet,
        dst: Ipv4Addr,
        seg: &Segmentation,
        out: &mut TxOutcome,
    ) -> Option<usize> {
        let Some(g) = self.gso.as_mut() else { return Some(0) };
        let frame = pkt.data();
        let sock = &g.socks[flow_hash(frame) as usize % g.socks.len()];
        let to = SocketAddrV4::new(dst, self.opts.udp_port);
        let mut first = 0;
        // Each send takes at least one segment or ends the loop: bounded by `seg.count`.
        while first < seg.count {
            let (bytes, n, unit) = build_gso_payloads(frame, seg, first, self.opts.vni, &mut g.buf);
            if n == 0 || unit > usize::from(u16::MAX) {
                return Some(first);
            }
            match mmsg::send_segmented(sock.as_raw_fd(), to, &g.buf[..bytes], unit as u16) {
                Ok(_) => {
                    g.worked = true;
                    out.sent += n as u32;
                    out.bytes += (bytes - 8 * n) as u64;
                    out.gso_sends += 1;
                    first += n;
                }
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.raw_os_error() == Some(libc::ENOBUFS) =>
                {
                    out.queue_full += (seg.count - first) as u32;
                    return None;
                }
                Err(e) => {
                    if !g.worked
                        && matches!(
                            e.raw_os_error(),
                            Some(libc::EINVAL | libc::EIO | libc::ENOPROTOOPT | libc::EOPNOTSUPP)
                        )
                    {
                        eprintln!(
                            "podswitch: overlay: UDP GSO send refused ({e}); segmenting super-frames in software from now on"
                        );
                        self.gso = None;
                    }
                    return Some(first);
                }
            }
        }
        None
    }
}

impl Port for OverlayPort {
    fn kind(&self) -> PortKind {
        PortKind::Overlay
    }

    fn rx_burst(&mut self, batch: &mut Batch, in_port: PortId) -> io::Result<usize> {
        let fd = self.rx.as_raw_fd();
        let mut added = 0;
        // Each turn fills one packet or reads more datagrams (at most once per packet the
        // batch can still take, and a read of nothing ends it), so this is bounded.
        while !batch.is_full() {
            if self.rx_next >= self.rx_count {
                let want = batch.free_mut().len().min(RX_MSGS);
                let n =
                    self.rx_arrays.recv(fd, self.rx_bufs[..want].iter_mut().map(|b| &mut b[..]))?;
                (self.rx_count, self.rx_next, self.rx_off) = (n, 0, 0);
                if n == 0 {
                    break;
                }
            }
            let i = self.rx_next;
            let (len, truncated, from) = self.rx_arrays.received(i);
            let len = if truncated { 0 } else { len.min(RX_BUF_LEN) };
            let (range, next) = gro_segment(len, self.rx_arrays.gro_size(i), self.rx_off);
            self.rx_off = next;
            if next >= len {
                (self.rx_next, self.rx_off) = (i + 1, 0);
            }
            let Some(pkt) = batch.next_free() else { break };
            if !pkt.fill_from(&self.rx_bufs[i][range]) {
                pkt.set_len(0);
            }
            pkt.meta.in_port = in_port;
            pkt.meta.tunnel = from;
            batch.commit();
            added += 1;
        }
        Ok(added)
    }

    fn tx_burst(&mut self, batch: &Batch, indices: &[u16]) -> TxOutcome {
        let mut out = TxOutcome::default();
        let pkts = batch.packets();
        self.queue.clear();
        for &i in indices {
            let Some(pkt) = pkts.get(usize::from(i)) else { continue };
            let frame = pkt.data();
            let Some(plan) = plan(pkt, &mut out) else { continue };
            let dst = match plan {
                Plan::Whole(dst) => {
                    if self.queue.len() == TX_MSGS {
                        self.flush(pkts, &mut out);
                    }
                    let slot = self.queue.len();
                    outer_headers(&mut self.heads[slot], &self.opts, dst, &[frame]);
                    self.queue.push(Queued { pkt: i, dst, segment: None });
                    continue;
                }
                Plan::Segments(dst) => dst,
            };
            let Some(seg) = tcp4_segmentation(frame, pkt.meta.vnet.gso_size) else {
                out.errors += 1;
                continue;
            };
            let first = if self.gso.is_some() {
                // Keep the flow's order: what is queued for the raw socket goes first.
                self.flush(pkts, &mut out);
                match self.send_gso(pkt, dst, &seg, &mut out) {
                    Some(k) => k,
                    None => continue,
                }
            } else {
                0
            };
            for k in first..seg.count {
                if self.queue.len() == TX_MSGS {
                    self.flush(pkts, &mut out);
                }
                let slot = self.queue.len();
                let range = encap::segment_range(frame, &seg, k);
                let (start, end) = (range.start, range.end);
                let payload = &frame[range];
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

    #[test]
    fn gro_reads_split_by_segment_size() {
        let split = |len: usize, gro: Option<usize>| {
            let (mut off, mut v) = (0, Vec::new());
            for _ in 0..1000 {
                let (r, next) = gro_segment(len, gro, off);
                v.push((r.start, r.end));
                off = next;
                if off >= len {
                    break;
                }
            }
            v
        };
        assert_eq!(split(4000, Some(1472)), [(0, 1472), (1472, 2944), (2944, 4000)]);
        assert_eq!(split(2944, Some(1472)), [(0, 1472), (1472, 2944)]);
        assert_eq!(split(1000, None), [(0, 1000)]);
        // Nonsense sizes: the read is one datagram.
        assert_eq!(split(1000, Some(0)), [(0, 1000)]);
        assert_eq!(split(1000, Some(1000)), [(0, 1000)]);
        assert_eq!(split(1000, Some(5000)), [(0, 1000)]);
        assert_eq!(split(0, Some(7)), [(0, 0)]);
        assert_eq!(split(5, Some(1)).len(), 5);
        assert_eq!(gro_segment(10, Some(4), 99), (10..10, 10));
    }

    fn needs_root() -> bool {
        let root = crate::sys::process::is_root();
        if !root {
            eprintln!("skipped: needs root");
        }
        root
    }

    /// A fresh namespace with `lo` up; deleted on drop.
    fn lo_ns() -> crate::sys::netns::NamedNetNs {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!("pswov-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        let ns = crate::sys::netns::NamedNetNs::create(&name).unwrap();
        let mut nl = crate::sys::netlink::Netlink::open_in(&ns).unwrap();
        let lo = nl.link_get("lo").unwrap().unwrap().index;
        nl.link_set_up(lo, true).unwrap();
        ns
    }

    #[test]
    fn queue_ports_share_the_address_and_each_flow_reaches_one_of_them() {
        if !needs_root() {
            return;
        }
        const FLOWS: usize = 64;
        const PER_FLOW: usize = 3;
        let ns = lo_ns();
        let opts = OverlayOptions {
            local: Ipv4Addr::LOCALHOST,
            udp_port: 4789,
            vni: 1,
            udp_checksum: false,
        };
        let e = ns.run(|| OverlayPort::bind_queues(opts, 0)).unwrap().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("queues 0"), "{e}");
        let mut ports = ns.run(|| OverlayPort::bind_queues(opts, 2)).unwrap().unwrap();
        assert_eq!(ports.len(), 2);

        // Another overlay on the same address fails, whether it wants queues or not.
        for queues in [1, 2] {
            let e = ns.run(|| OverlayPort::bind_queues(opts, queues)).unwrap().unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::AddrInUse, "{e}");
            assert!(e.to_string().contains("cannot bind UDP 127.0.0.1:4789"), "{e}");
        }

        // Each datagram carries its sender's port, so the test can tell flows apart.
        ns.run(|| {
            let socks: Vec<_> =
                (0..FLOWS).map(|_| UdpSocket::bind("127.0.0.1:0").unwrap()).collect();
            for _ in 0..PER_FLOW {
                for s in &socks {
                    let port = s.local_addr().unwrap().port();
                    s.send_to(&port.to_be_bytes(), "127.0.0.1:4789").unwrap();
                }
            }
        })
        .unwrap();
        let mut got = [Vec::new(), Vec::new()];
        let mut batch = Batch::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while got.iter().map(Vec::len).sum::<usize>() < FLOWS * PER_FLOW
            && std::time::Instant::now() < deadline
        {
            let mut idle = true;
            for (port, srcs) in ports.iter_mut().zip(got.iter_mut()) {
                batch.clear();
                if port.rx_burst(&mut batch, PortId(2)).unwrap() > 0 {
                    idle = false;
                }
                for p in batch.packets() {
                    assert_eq!(p.meta.tunnel, Some(Ipv4Addr::LOCALHOST));
                    srcs.push(u16::from_be_bytes([p.data()[0], p.data()[1]]));
                }
            }
            if idle {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        let counts: Vec<usize> = got.iter().map(Vec::len).collect();
        eprintln!("datagrams per queue: {counts:?}");
        assert_eq!(counts.iter().sum::<usize>(), FLOWS * PER_FLOW, "{counts:?}");
        assert!(counts.iter().all(|&n| n > 0), "{counts:?}");
        let flows: Vec<std::collections::HashSet<u16>> =
            got.iter().map(|g| g.iter().copied().collect()).collect();
        assert!(flows[0].is_disjoint(&flows[1]));
        assert_eq!(flows[0].len() + flows[1].len(), FLOWS);

        // The limitation: a socket of the same user that sets SO_REUSEPORT itself can join.
        let intruder = ns
            .run(|| {
                let s = Socket::new(Domain::IPV4, Type::DGRAM, None)?;
                s.set_reuse_port(true)?;
                s.bind(&SocketAddrV4::new(Ipv4Addr::LOCALHOST, 4789).into())
            })
            .unwrap();
        assert!(intruder.is_ok());

        // Once the ports are gone the address is free again.
        drop(ports);
        ns.run(|| OverlayPort::bind(opts)).unwrap().unwrap();
    }
}
