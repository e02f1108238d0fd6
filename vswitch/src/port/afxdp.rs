//! AF_XDP ports: a pod's veth pair whose pod end is the pod's `eth0` and whose host end, in
//! the switch's namespace, is driven through an AF_XDP socket.
//!
//! ```text
//!  pod netns              │ switch netns
//!  eth0 (veth, tx csum off) ──► psx… (veth) ── XDP: redirect to the XSKMAP slot of the
//!                         │                      rx queue ──► XSK rx ring ──► rx_burst
//!  eth0 ◄── veth ◄──────────── psx… ◄── sendto kick ◄── XSK tx ring ◄── tx_burst
//! ```
//!
//! A port owns one queue of the host end: its socket with its UMEM and the fds that wake
//! its worker. The attachment is shared by the ports of all queues of a device
//! ([`AfXdpPort::open_queues`]), each holding an `Arc` of it: the [`XdpLink`] (dropping it
//! detaches the program), the program and its XSKMAP, whose slot `k` holds the socket of
//! queue `k`. Drop order keeps the program from redirecting to a socket that is closing: a
//! dropped port first empties its XSKMAP slot (frames on that queue then go on into the
//! kernel), then lets go of its `Arc` (the last one detaches the program), and only then
//! closes its socket. Deleting the veth is the control plane's job (it created it).
//!
//! Several queues: one worker per queue, each with its own port. veth hands a frame the pod
//! sends on its tx queue `k` to rx queue `k` of the host end, where native XDP sees it with
//! `rx_queue_index = k`, and the pod end picks the tx queue by the flow's hash (veth has no
//! XPS map and no `ndo_select_queue`), so flows spread over the queues and each flow stays
//! on one: the tests see it for UDP sockets, and raw packet sockets spread the same way
//! whatever CPU sends. With several workers the control plane overrides that choice with a
//! tc program on the pod end ([`super::queue_steering`]), so each frame reaches the queue of
//! the worker flow steering names. Nothing needs configuring beyond giving both ends the same
//! number of queues in use
//! ([`Netlink::veth_add_queues`](crate::sys::netlink::Netlink::veth_add_queues)): by
//! default a veth allocates a queue per possible CPU but uses one, and an AF_XDP socket
//! cannot bind to a queue not in use. The caveat is skb mode, the fallback when native XDP
//! is refused: veth then delivers without its per-queue NAPI, frames reach XDP with rx
//! queue 0 (on a 2-queue pair, as a test shows) and the first port gets every flow, whatever
//! the pod end picked. Nothing is lost.
//!
//! Receive copies each frame from the UMEM into a batch packet and gives the frame straight
//! back to the fill ring, so the fill ring stays full and the kernel never waits for the
//! pipeline. Transmit copies each packet into a free UMEM frame and kicks the kernel with
//! `sendto` while the tx ring has frames it has not taken (copy mode, as on veth, sends at
//! most 32 per kick).
//!
//! AF_XDP carries no offload metadata, so what a TAP port hands over with a virtio-net
//! header is finished here in software before it leaves: a TCP/IPv4 super-frame is cut into
//! segments that fit the port's MTU ([`super::gso`]), and a partial checksum is completed
//! ([`VnetHdr::complete_checksum`]). The other way needs nothing: the pod end has tx
//! checksum offload turned off by the control plane, so its frames arrive complete (the
//! "checksum trap" of `IO-NOTES.md`), and veth turns off the pod end's segmentation while an
//! XDP program is attached in native mode.
//!
//! Memory: one UMEM per port, so per queue (16 MiB with the defaults). The next step is
//! one UMEM per worker shared by its ports (`XDP_SHARED_UMEM`), which would let forwarding
//! between two AF_XDP ports move a descriptor from one ring to another instead of copying
//! through a batch packet.
//!
//! Nothing on the receive or transmit path allocates: the frame lists are sized when the
//! socket is created.
//!
//! Waking the worker: the fd the worker waits on ([`Port::poll_fd`]) is an epoll instance of
//! the port's own holding the AF_XDP socket (readable when the rx ring has frames; the kernel
//! signals every batch it delivers, so edge-triggered waiting works) and a
//! [`PacketSocket::watch`] on the host end. The second is needed because an AF_XDP socket
//! whose device is deleted (with the pod's namespace) records the error but polls as "no
//! event", so nothing would ever tell the worker; the watch socket reports the device going
//! and the next `rx_burst` returns the socket's error, which marks the port failed.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use mio::unix::SourceFd;
use mio::{Interest, Poll, Token};

use super::{Port, PortId, PortKind, TxOutcome};
use crate::offload::gso::{tcp4_segment_headers, tcp4_segmentation};
use crate::packet::{Batch, Packet, VnetHdr};
use crate::sys::bpf::{self, BpfMap, Insn, MapKind, XdpLink, XdpMode, XdpProgram};
use crate::sys::packet::PacketSocket;
use crate::sys::xsk::{BindMode, TxWrite, XskConfig, XskSocket, XskStats};

/// Frames copy-mode AF_XDP sends per `sendto` (`MAX_PER_SOCKET_BUDGET` in the kernel).
pub const COPY_MODE_TX_BUDGET: u32 = 32;

/// Ethernet header plus one VLAN tag: the largest frame a port sends is its MTU plus this.
pub const L2_OVERHEAD: usize = 14 + 4;

/// Settings of an AF_XDP port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AfXdpOptions {
    /// Device queue the socket binds to (veth: 0).
    pub queue: u32,
    /// Where the XDP program should run; native falls back to skb mode if refused.
    pub mode: XdpMode,
    /// The interface MTU: frames longer than MTU + [`L2_OVERHEAD`] are not sent.
    pub mtu: u32,
    /// UMEM and ring geometry.
    pub xsk: XskConfig,
}

impl AfXdpOptions {
    /// Native XDP on queue 0 with the smallest frames that hold `mtu`-sized packets; `None`
    /// when `mtu` is too large for single-frame AF_XDP.
    pub fn for_mtu(mtu: u32) -> Option<AfXdpOptions> {
        let xsk = XskConfig::for_frame_len(mtu as usize + L2_OVERHEAD)?;
        Some(AfXdpOptions { queue: 0, mode: XdpMode::Native, mtu, xsk })
    }

    /// [`AfXdpOptions::for_mtu`] with the UMEM the configuration asks for (`[afxdp]`).
    pub fn for_mtu_and_config(mtu: u32, c: &crate::config::AfxdpConfig) -> Option<AfXdpOptions> {
        let xsk = XskConfig::for_frame_len_and_frames(
            mtu as usize + L2_OVERHEAD,
            c.rx_frames,
            c.tx_frames,
        )?;
        Some(AfXdpOptions { queue: 0, mode: XdpMode::Native, mtu, xsk })
    }
}

/// What the ports on the queues of one device share: the attachment, the program and its
/// XSKMAP. Held through an `Arc` by each of them; the last one to go detaches the program.
#[derive(Debug)]
struct Attachment {
    // Field order is drop order: detach, then let the program and the map go.
    link: XdpLink,
    prog: XdpProgram,
    xsks: BpfMap,
    native_refused: Option<String>,
}

/// One queue of the host end of a pod's veth pair, driven through AF_XDP.
#[derive(Debug)]
pub struct AfXdpPort {
    // Field order is drop order, after `Drop::drop` has emptied this queue's XSKMAP slot:
    // the attachment goes first, so the last port of a device detaches the program before
    // its socket closes and nothing is redirected to a socket that is going away.
    attach: Arc<Attachment>,
    xsk: XskSocket,
    wake: Poll,
    watch: PacketSocket,
    ifname: String,
    kind: PortKind,
    queue: u32,
    max_frame: usize,
    max_kicks: u32,
}

/// The part of a port that belongs to its queue alone, made before anything is attached.
struct QueueParts {
    queue: u32,
    xsk: XskSocket,
    wake: Poll,
    watch: PacketSocket,
}

impl AfXdpPort {
    /// Binds an AF_XDP socket to `opts.queue` of the device `ifindex` (named `ifname`, in the
    /// calling thread's namespace), registers it in a new XSKMAP, loads the redirect program
    /// and attaches it in `opts.mode`, falling back to skb mode when native XDP is refused
    /// (see [`AfXdpPort::native_refused`]). On error nothing stays attached.
    ///
    /// The same as [`AfXdpPort::open_queues`] with one queue.
    pub fn open(ifname: &str, ifindex: u32, opts: AfXdpOptions) -> io::Result<AfXdpPort> {
        let mut ports = AfXdpPort::open_queues(ifname, ifindex, opts, 1)?;
        ports.pop().ok_or_else(|| io::Error::other("no port for queue"))
    }

    /// One port per queue `opts.queue .. opts.queue + queues` of the device `ifindex`, for
    /// one worker each: every port has its own AF_XDP socket (and UMEM) bound to its queue
    /// and registered at that index of one XSKMAP, which one redirect program, attached once
    /// as in [`AfXdpPort::open`], reads by the frame's rx queue. The ports share the
    /// attachment: it stays until the last of them is dropped. A port dropped earlier
    /// empties its XSKMAP slot, so frames on its queue go on into the kernel (`XDP_PASS`).
    ///
    /// The device must use that many queues (a veth made with
    /// [`Netlink::veth_add_queues`](crate::sys::netlink::Netlink::veth_add_queues)). Fails
    /// with `InvalidInput` when `queues` is 0; on any error nothing stays attached.
    pub fn open_queues(
        ifname: &str,
        ifindex: u32,
        opts: AfXdpOptions,
        queues: u32,
    ) -> io::Result<Vec<AfXdpPort>> {
        AfXdpPort::open_queues_with(ifname, ifindex, opts, queues, PortKind::Afxdp, |xsks| {
            bpf::xsk_redirect_program(xsks)
        })
    }

    /// [`AfXdpPort::open`] with another XDP program: `program` gets the XSKMAP and returns
    /// a program that redirects the frames the switch should see into it (the NodePort
    /// filter hands over only NodePort packets). The port reports itself as `kind`.
    pub fn open_with_program(
        ifname: &str,
        ifindex: u32,
        opts: AfXdpOptions,
        kind: PortKind,
        program: impl FnOnce(&BpfMap) -> Vec<Insn>,
    ) -> io::Result<AfXdpPort> {
        let mut ports = AfXdpPort::open_queues_with(ifname, ifindex, opts, 1, kind, program)?;
        ports.pop().ok_or_else(|| io::Error::other("no port for queue"))
    }

    /// [`AfXdpPort::open_queues`] with another XDP program, as
    /// [`AfXdpPort::open_with_program`] (the AF_XDP underlay of the overlay).
    ///
    /// Everything per queue first (sockets, wake-up fds), then the map, the program and the
    /// attachment, then the ports, which cannot fail: an error leaves nothing attached.
    pub fn open_queues_with(
        ifname: &str,
        ifindex: u32,
        opts: AfXdpOptions,
        queues: u32,
        kind: PortKind,
        program: impl FnOnce(&BpfMap) -> Vec<Insn>,
    ) -> io::Result<Vec<AfXdpPort>> {
        let ctx = |what: &'static str| {
            move |e: io::Error| io::Error::new(e.kind(), format!("{what} for {ifname}: {e}"))
        };
        let end = opts.queue.checked_add(queues).filter(|_| queues > 0).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "AF_XDP port on {ifname}: invalid queues {queues} from queue {}: \
                     must be at least 1 and end below 2^32",
                    opts.queue
                ),
            )
        })?;
        let mut parts = Vec::with_capacity(queues as usize);
        for queue in opts.queue..end {
            let xsk = XskSocket::bind(ifname, ifindex, queue, opts.xsk)?;
            let watch = PacketSocket::watch(ifindex).map_err(ctx("device watch socket"))?;
            let wake = Poll::new().map_err(ctx("epoll"))?;
            for (fd, token) in [(xsk.fd(), 0), (watch.as_raw_fd(), 1)] {
                wake.registry()
                    .register(&mut SourceFd(&fd), Token(token), Interest::READABLE)
                    .map_err(ctx("epoll registration"))?;
            }
            parts.push(QueueParts { queue, xsk, wake, watch });
        }
        let xsks = BpfMap::create(MapKind::XskMap, "psw_xsks", 4, 4, end).map_err(ctx("XSKMAP"))?;
        for p in &parts {
            xsks.update(&p.queue.to_ne_bytes(), &(p.xsk.fd() as u32).to_ne_bytes())
                .map_err(ctx("XSKMAP entry"))?;
        }
        let prog = XdpProgram::load("psw_xsk", &program(&xsks)).map_err(ctx("XDP program"))?;
        let (link, native_refused) = match XdpLink::attach(&prog, ifindex, opts.mode) {
            Ok(l) => (l, None),
            Err(native) if opts.mode == XdpMode::Native => {
                let l = XdpLink::attach(&prog, ifindex, XdpMode::Skb).map_err(|e| {
                    io::Error::new(e.kind(), format!("{ifname}: {e} (native: {native})"))
                })?;
                (l, Some(native.to_string()))
            }
            Err(e) => return Err(ctx("XDP attach")(e)),
        };
        let attach = Arc::new(Attachment { link, prog, xsks, native_refused });
        let max_frame = (opts.mtu as usize + L2_OVERHEAD).min(opts.xsk.max_tx_frame());
        Ok(parts
            .into_iter()
            .map(|p| AfXdpPort {
                attach: Arc::clone(&attach),
                xsk: p.xsk,
                wake: p.wake,
                watch: p.watch,
                ifname: ifname.to_string(),
                kind,
                queue: p.queue,
                max_frame,
                max_kicks: opts.xsk.tx_size / COPY_MODE_TX_BUDGET + 8,
            })
            .collect())
    }

    /// The host-end interface name.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// The device queue this port's socket is bound to.
    pub fn queue(&self) -> u32 {
        self.queue
    }

    /// Where the program runs.
    pub fn xdp_mode(&self) -> XdpMode {
        self.attach.link.mode()
    }

    /// Why native mode was refused, when the port fell back to skb mode.
    pub fn native_refused(&self) -> Option<&str> {
        self.attach.native_refused.as_deref()
    }

    /// How the socket is bound (copy mode on veth).
    pub fn bind_mode(&self) -> BindMode {
        self.xsk.bind_mode()
    }

    /// The id of the XDP program (as `ip link` shows it).
    pub fn prog_id(&self) -> io::Result<u32> {
        self.attach.prog.id()
    }

    /// The kernel's drop counters for the socket.
    pub fn statistics(&self) -> io::Result<XskStats> {
        self.xsk.statistics()
    }

    /// The XSKMAP the program redirects through (shared by the ports of all queues).
    pub fn xsk_map(&self) -> &BpfMap {
        &self.attach.xsks
    }

    /// Queues one frame made of `head` followed by `body` for transmit (a port that builds
    /// its own headers in front of a packet, as the overlay does), counting the outcome in
    /// `out` as [`Port::tx_burst`] does. It leaves with the next [`AfXdpPort::flush`].
    pub fn queue_parts(&mut self, head: &[u8], body: &[u8], out: &mut TxOutcome) {
        let len = head.len() + body.len();
        self.queue_frame(len, body.is_empty(), out, |b| {
            b[..head.len()].copy_from_slice(head);
            b[head.len()..].copy_from_slice(body);
            true
        });
    }

    /// Queues one frame of `len` bytes that `write` fills (false: give the frame back, an
    /// error), counting the outcome; refused as an error when `empty` or too long.
    fn queue_frame(
        &mut self,
        len: usize,
        empty: bool,
        out: &mut TxOutcome,
        write: impl FnOnce(&mut [u8]) -> bool,
    ) {
        if empty || len > self.max_frame {
            out.errors += 1;
            return;
        }
        if !self.make_room(1) {
            out.queue_full += 1;
            return;
        }
        match self.xsk.tx_write(|buf| write(&mut buf[..len]).then_some(len)) {
            TxWrite::Queued => {
                out.sent += 1;
                out.bytes += len as u64;
            }
            TxWrite::Full => out.queue_full += 1,
            TxWrite::Cancelled => out.errors += 1,
        }
    }

    /// Sends what [`AfXdpPort::queue_parts`] queued.
    pub fn flush(&mut self) {
        self.xsk.tx_submit();
        self.kick();
    }

    /// The longest frame the port sends.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Kicks the kernel while the tx ring holds frames it has not taken, at most
    /// `max_kicks` times (enough to drain a full ring at 32 frames a kick), stopping early
    /// when a kick makes no progress; then takes back the frames it sent. Frames left over
    /// go with the next transmit or receive.
    fn kick(&mut self) {
        let mut kicks = 0;
        while kicks < self.max_kicks && self.xsk.tx_needs_wakeup() {
            let before = self.xsk.tx_unsent();
            if before == 0 {
                break;
            }
            match self.xsk.kick_tx() {
                Ok(()) => {}
                // The budget of one kick ran out with frames left, or the kernel is short of
                // buffers for a moment: kick again.
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || matches!(e.raw_os_error(), Some(libc::ENOBUFS | libc::EBUSY)) => {}
                // The device is gone (`ENETDOWN`, `ENXIO`): receive reports it.
                Err(_) => break,
            }
            kicks += 1;
            if self.xsk.tx_unsent() >= before && self.xsk.reap_completions() == 0 {
                break;
            }
        }
        self.xsk.reap_completions();
    }

    /// True when `n` frames can be queued, after sending what is queued and taking back
    /// what was sent if needed.
    fn make_room(&mut self, n: usize) -> bool {
        if self.xsk.tx_room() >= n {
            return true;
        }
        self.xsk.tx_submit();
        self.kick();
        self.xsk.tx_room() >= n
    }

    /// Queues one packet (or its segments) for transmit, counting the outcome.
    fn enqueue(&mut self, pkt: &Packet, out: &mut TxOutcome) {
        let frame = pkt.data();
        let vnet = pkt.meta.vnet;
        if vnet.is_gso() {
            let seg = (vnet.gso_type & !VnetHdr::GSO_ECN == VnetHdr::GSO_TCPV4)
                .then(|| tcp4_segmentation(frame, vnet.gso_size))
                .flatten();
            let Some(seg) = seg.filter(|s| s.hdr_len + s.mss <= self.max_frame) else {
                out.errors += 1;
                return;
            };
            if !self.make_room(seg.count) {
                out.queue_full += 1;
                return;
            }
            for k in 0..seg.count {
                let start = seg.hdr_len + k * seg.mss;
                let end = (start + seg.mss).min(frame.len());
                let payload = &frame[start..end];
                let len = seg.hdr_len + payload.len();
                let w = self.xsk.tx_write(|buf| {
                    tcp4_segment_headers(frame, &seg, k, payload, buf);
                    buf[seg.hdr_len..len].copy_from_slice(payload);
                    Some(len)
                });
                if w == TxWrite::Queued {
                    out.sent += 1;
                    out.bytes += len as u64;
                }
            }
            return;
        }
        self.queue_frame(frame.len(), frame.is_empty(), out, |b| {
            b.copy_from_slice(frame);
            vnet.complete_checksum(b)
        });
    }
}

impl Drop for AfXdpPort {
    fn drop(&mut self) {
        // The kernel also empties the slot when the socket closes; doing it first keeps
        // "redirected only to a live socket" independent of that. Nothing to do on error:
        // the socket's closing empties the slot anyway.
        let _ = self.attach.xsks.delete(&self.queue.to_ne_bytes());
    }
}

impl Port for AfXdpPort {
    fn kind(&self) -> PortKind {
        self.kind
    }

    fn rx_burst(&mut self, batch: &mut Batch, in_port: PortId) -> io::Result<usize> {
        let room = batch.free_mut().len();
        if room == 0 {
            return Ok(0);
        }
        let n = self.xsk.recv(room, |frame| {
            if let Some(pkt) = batch.next_free() {
                let space = pkt.rx_space();
                let len = frame.len().min(space.len());
                space[..len].copy_from_slice(&frame[..len]);
                pkt.set_len(len);
                pkt.meta.in_port = in_port;
                batch.commit();
            }
        });
        if self.xsk.rx_needs_wakeup() {
            let _ = self.xsk.wake_rx();
        }
        // Frames a capped kick left behind go now rather than with the next transmit.
        if self.xsk.tx_unsent() > 0 {
            self.kick();
        }
        if n == 0 {
            // Woken with nothing to read: the device may have gone (with the pod's
            // namespace). The watch socket learns first (when the device goes down on its
            // way out), the AF_XDP socket when it is unregistered.
            if let Some(e) = self.xsk.take_error().or_else(|| self.watch.take_error()) {
                return Err(io::Error::new(
                    e.kind(),
                    format!("AF_XDP on {}: {e} (the veth went down or away)", self.ifname),
                ));
            }
        }
        Ok(n)
    }

    fn tx_burst(&mut self, batch: &Batch, indices: &[u16]) -> TxOutcome {
        let mut out = TxOutcome::default();
        let pkts = batch.packets();
        self.xsk.reap_completions();
        for &i in indices {
            let Some(pkt) = pkts.get(usize::from(i)) else { continue };
            self.enqueue(pkt, &mut out);
        }
        self.xsk.tx_submit();
        self.kick();
        out
    }

    fn device_drops(&self) -> Vec<(&'static str, u64)> {
        match self.statistics() {
            Ok(st) => vec![
                ("xsk_rx_ring_full", st.rx_ring_full),
                ("xsk_fill_ring_empty", st.rx_fill_ring_empty_descs),
                ("xsk_rx_dropped", st.rx_dropped),
                ("xsk_rx_invalid_descs", st.rx_invalid_descs),
                ("xsk_tx_invalid_descs", st.tx_invalid_descs),
            ],
            Err(_) => Vec::new(),
        }
    }

    fn poll_fd(&self) -> Option<RawFd> {
        Some(self.wake.as_raw_fd())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::netlink::Netlink;
    use crate::sys::netns::NamedNetNs;
    use crate::sys::packet::PacketSocket;
    use std::collections::HashSet;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::{Duration, Instant};

    #[test]
    fn options_follow_the_mtu() {
        let o = AfXdpOptions::for_mtu(1500).unwrap();
        assert_eq!((o.xsk.frame_size, o.queue, o.mode), (2048, 0, XdpMode::Native));
        assert_eq!(AfXdpOptions::for_mtu(3000).unwrap().xsk.frame_size, 4096);
        assert!(AfXdpOptions::for_mtu(9000).is_none());
    }

    /// A namespace with veth `ha` (the port's end) / `pb` (a packet socket's), IPv6 off.
    fn veth_ns(mtu: u32) -> (NamedNetNs, u32) {
        veth_ns_queues(mtu, 1)
    }

    /// [`veth_ns`] with `queues` queues on both ends.
    fn veth_ns_queues(mtu: u32, queues: u32) -> (NamedNetNs, u32) {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!("pswafx-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        let ns = NamedNetNs::create(&name).unwrap();
        let _ = ns.run(|| std::fs::write("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1"));
        let mut nl = Netlink::open_in(&ns).unwrap();
        nl.veth_add_queues("ha", "pb", None, queues).unwrap();
        let ha = nl.link_get("ha").unwrap().unwrap().index;
        let pb = nl.link_get("pb").unwrap().unwrap().index;
        for i in [ha, pb] {
            nl.link_set_mtu(i, mtu).unwrap();
            nl.link_set_up(i, true).unwrap();
        }
        (ns, ha)
    }

    fn packet_socket(ifname: &str) -> PacketSocket {
        let index = Netlink::open().unwrap().link_get(ifname).unwrap().unwrap().index;
        PacketSocket::open(index).unwrap()
    }

    fn recv_frames(sock: &PacketSocket, want: usize, timeout: Duration) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        let mut buf = vec![0u8; 65536];
        let deadline = Instant::now() + timeout;
        while got.len() < want && Instant::now() < deadline {
            match sock.try_recv(&mut buf).unwrap() {
                Some(n) if buf[..n].get(12..14) == Some(&[0x08, 0x00][..]) => {
                    got.push(buf[..n].to_vec())
                }
                Some(_) => {}
                None => std::thread::sleep(Duration::from_millis(1)),
            }
        }
        got
    }

    /// A TCP/IPv4 super-frame as a TAP port with offloads delivers it: one frame with the
    /// whole payload, GSO metadata and a partial checksum.
    fn super_frame(payload: &[u8]) -> (Vec<u8>, VnetHdr) {
        let b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([10, 244, 1, 2], [10, 244, 1, 3], 64)
            .tcp(40000, 5001, 7, 64000)
            .ack(1);
        let mut f = Vec::new();
        b.write(&mut f, payload).unwrap();
        let v = VnetHdr {
            flags: VnetHdr::NEEDS_CSUM,
            gso_type: VnetHdr::GSO_TCPV4,
            hdr_len: 54,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
        };
        (f, v)
    }

    #[test]
    fn super_frames_leave_as_valid_mtu_sized_segments_and_partial_checksums_are_completed() {
        if !crate::sys::process::is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let (ns, ha) = veth_ns(1500);
        let opts = AfXdpOptions::for_mtu(1500).unwrap();
        let mut port = ns.run(|| AfXdpPort::open("ha", ha, opts)).unwrap().unwrap();
        assert_eq!(port.bind_mode(), BindMode::Copy);
        assert_eq!(port.xdp_mode(), XdpMode::Native, "{:?}", port.native_refused());
        let sniff = ns.run(|| packet_socket("pb")).unwrap();
        let payload: Vec<u8> = (0..20_000u32).map(|i| (i * 13) as u8).collect();
        let (sf, vnet) = super_frame(&payload);
        let mut batch = Batch::new();
        assert!(batch.push_frame(PortId(1), &sf));
        batch.packets_mut()[0].meta.vnet = vnet;
        // A UDP frame with a partial checksum (the pseudo-header sum in the field).
        let b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([10, 244, 1, 2], [10, 244, 1, 3], 64)
            .udp(1000, 2000);
        let mut udp = Vec::new();
        b.write(&mut udp, b"checksum me").unwrap();
        let good = [udp[40], udp[41]];
        let pseudo = crate::wire::checksum::fold(crate::wire::checksum::pseudo_header_v4(
            &"10.244.1.2".parse().unwrap(),
            &"10.244.1.3".parse().unwrap(),
            crate::wire::IpProtocol::Udp,
            (udp.len() - 34) as u16,
        ));
        udp[40..42].copy_from_slice(&pseudo.to_be_bytes());
        assert!(batch.push_frame(PortId(1), &udp));
        batch.packets_mut()[1].meta.vnet = VnetHdr {
            flags: VnetHdr::NEEDS_CSUM,
            csum_start: 34,
            csum_offset: 6,
            ..Default::default()
        };
        // Too big for the MTU and not a super-frame: refused.
        let mut big = udp.clone();
        big.resize(1600, 0);
        assert!(batch.push_frame(PortId(1), &big));
        let out = port.tx_burst(&batch, &[0, 1, 2]);
        let segments = payload.len().div_ceil(1448);
        assert_eq!(out.sent as usize, segments + 1, "{out:?}");
        assert_eq!(out.errors, 1, "{out:?}");
        let frames = recv_frames(&sniff, segments + 1, Duration::from_secs(5));
        assert_eq!(frames.len(), segments + 1);
        let mut joined = Vec::new();
        for f in &frames[..segments] {
            assert!(f.len() <= 1514, "segment of {} bytes", f.len());
            let p = etherparse::SlicedPacket::from_ethernet(f).unwrap();
            let Some(etherparse::NetSlice::Ipv4(ip)) = p.net else { panic!() };
            let Some(etherparse::TransportSlice::Tcp(tcp)) = p.transport else { panic!() };
            let want = tcp.to_header().calc_checksum_ipv4(&ip.header().to_header(), tcp.payload());
            assert_eq!(tcp.checksum(), want.unwrap());
            joined.extend_from_slice(tcp.payload());
        }
        assert_eq!(joined, payload);
        assert_eq!([frames[segments][40], frames[segments][41]], good);
    }

    /// A 142-byte UDP frame from the veth's far end.
    fn udp_frame_100() -> Vec<u8> {
        let b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 9], [2, 0, 0, 0, 0, 8])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .udp(1, 2);
        let mut f = Vec::new();
        b.write(&mut f, &[7u8; 100]).unwrap();
        f
    }

    #[test]
    fn configured_rx_frames_bound_what_an_unread_queue_holds() {
        if !crate::sys::process::is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let (ns, ha) = veth_ns(1500);
        let umem = crate::config::AfxdpConfig { rx_frames: 64, tx_frames: 128 };
        let opts = AfXdpOptions::for_mtu_and_config(1500, &umem).unwrap();
        assert_eq!((opts.xsk.fill_size, opts.xsk.rx_size, opts.xsk.frame_count), (64, 64, 192));
        assert_eq!((opts.xsk.tx_size, opts.xsk.comp_size), (128, 128));
        let mut port = ns.run(|| AfXdpPort::open("ha", ha, opts));
        let port = port.as_mut().unwrap().as_mut().unwrap();
        let tx = ns.run(|| packet_socket("pb")).unwrap();
        let f = udp_frame_100();
        // 200 frames arrive while nobody reads: the 64 receive frames fill, the rest drop.
        for _ in 0..200 {
            assert_eq!(tx.send(&f).unwrap(), f.len());
        }
        std::thread::sleep(Duration::from_millis(100));
        let mut batch = Batch::new();
        let mut total = 0;
        loop {
            batch.clear();
            let n = port.rx_burst(&mut batch, PortId(3)).unwrap();
            if n == 0 {
                break;
            }
            total += n;
        }
        assert_eq!(total, 64);
        let st = port.statistics().unwrap();
        assert_eq!(st.rx_dropped, 200 - 64, "{st:?}");
    }

    #[test]
    fn received_frames_land_in_the_batch() {
        if !crate::sys::process::is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let (ns, ha) = veth_ns(1500);
        let mut port = ns.run(|| AfXdpPort::open("ha", ha, AfXdpOptions::for_mtu(1500).unwrap()));
        let port = port.as_mut().unwrap().as_mut().unwrap();
        let tx = ns.run(|| packet_socket("pb")).unwrap();
        let f = udp_frame_100();
        for _ in 0..40 {
            assert_eq!(tx.send(&f).unwrap(), f.len());
        }
        let mut batch = Batch::new();
        let mut total = 0;
        let deadline = Instant::now() + Duration::from_secs(5);
        while total < 40 && Instant::now() < deadline {
            batch.clear();
            let n = port.rx_burst(&mut batch, PortId(3)).unwrap();
            assert!(n <= crate::packet::BATCH_SIZE);
            for p in batch.packets() {
                assert_eq!(p.data(), &f[..]);
                assert_eq!(p.meta.in_port, PortId(3));
            }
            total += n;
            if n == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        assert_eq!(total, 40);
        assert_eq!(port.statistics().unwrap().rx_dropped, 0);
    }

    /// Polls every port until `want` UDP frames to `dst_port` have arrived in all, or five
    /// seconds pass; returns the source ports of the frames each port received.
    fn receive_on_all(ports: &mut [AfXdpPort], want: usize, dst_port: u16) -> Vec<Vec<u16>> {
        let mut got = vec![Vec::new(); ports.len()];
        let mut batch = Batch::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while got.iter().map(Vec::len).sum::<usize>() < want && Instant::now() < deadline {
            let mut idle = true;
            for (port, srcs) in ports.iter_mut().zip(got.iter_mut()) {
                batch.clear();
                if port.rx_burst(&mut batch, PortId(1)).unwrap() > 0 {
                    idle = false;
                }
                srcs.extend(
                    batch
                        .packets()
                        .iter()
                        .filter_map(|p| udp_ports(p.data()))
                        .filter_map(|(src, dst)| (dst == dst_port).then_some(src)),
                );
            }
            if idle {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        got
    }

    fn udp_ports(frame: &[u8]) -> Option<(u16, u16)> {
        let p = etherparse::SlicedPacket::from_ethernet(frame).ok()?;
        match p.transport? {
            etherparse::TransportSlice::Udp(u) => Some((u.source_port(), u.destination_port())),
            _ => None,
        }
    }

    /// Sends `per_flow` datagrams from each of `flows` UDP sockets (one source port each)
    /// out of `pb` to the subnet's broadcast address, which needs no neighbour entry.
    fn send_flows(ns: &NamedNetNs, flows: usize, per_flow: usize, dst_port: u16) {
        ns.run(move || {
            let mut nl = Netlink::open().unwrap();
            let pb = nl.link_get("pb").unwrap().unwrap().index;
            nl.addr_add(pb, "10.99.0.1".parse().unwrap(), 24).unwrap();
            let socks: Vec<_> = (0..flows)
                .map(|_| {
                    let s = std::net::UdpSocket::bind("10.99.0.1:0").unwrap();
                    s.set_broadcast(true).unwrap();
                    s
                })
                .collect();
            for _ in 0..per_flow {
                for s in &socks {
                    s.send_to(b"one flow of many", ("10.99.0.255", dst_port)).unwrap();
                }
            }
        })
        .unwrap();
    }

    fn needs_root() -> bool {
        let root = crate::sys::process::is_root();
        if !root {
            eprintln!("skipped: needs root");
        }
        root
    }

    const FLOWS: usize = 64;
    const PER_FLOW: usize = 4;
    const DPORT: u16 = 9999;

    /// Two queue ports on a 2-queue veth in `mode`; sends [`FLOWS`] flows from the pod end
    /// and returns the ports, their namespace and the source ports each port received, after
    /// checking that every frame arrived exactly once and each flow stayed on one queue.
    fn two_queue_ports(mode: XdpMode) -> (NamedNetNs, Vec<AfXdpPort>, Vec<HashSet<u16>>) {
        let (ns, ha) = veth_ns_queues(1500, 2);
        let opts = AfXdpOptions { mode, ..AfXdpOptions::for_mtu(1500).unwrap() };
        let mut ports = ns.run(|| AfXdpPort::open_queues("ha", ha, opts, 2)).unwrap().unwrap();
        assert_eq!(ports.iter().map(AfXdpPort::queue).collect::<Vec<_>>(), [0, 1]);
        assert_eq!(ports[0].xdp_mode(), mode, "{:?}", ports[0].native_refused());
        assert_eq!(ports[0].prog_id().unwrap(), ports[1].prog_id().unwrap());
        send_flows(&ns, FLOWS, PER_FLOW, DPORT);
        let got = receive_on_all(&mut ports, FLOWS * PER_FLOW, DPORT);
        let counts: Vec<usize> = got.iter().map(Vec::len).collect();
        eprintln!("{mode} mode, frames per queue: {counts:?}");
        assert_eq!(counts.iter().sum::<usize>(), FLOWS * PER_FLOW, "{counts:?}");
        for p in &ports {
            assert_eq!(p.statistics().unwrap().rx_dropped, 0);
        }
        // A flow stays on one queue, so one worker sees all of it, in order.
        let flows: Vec<HashSet<u16>> = got.iter().map(|g| g.iter().copied().collect()).collect();
        assert!(flows[0].is_disjoint(&flows[1]));
        assert_eq!(flows[0].len() + flows[1].len(), FLOWS);
        (ns, ports, flows)
    }

    #[test]
    fn flows_from_the_pod_spread_over_the_queue_ports_and_either_port_sends() {
        if !needs_root() {
            return;
        }
        let (ns, mut ports, flows) = two_queue_ports(XdpMode::Native);
        assert!(flows.iter().all(|f| !f.is_empty()), "every queue gets some flows: {flows:?}");

        let sniff = ns.run(|| packet_socket("pb")).unwrap();
        let mut sent = Vec::new();
        for (q, port) in ports.iter_mut().enumerate() {
            let b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
                .ipv4([10, 99, 0, 2], [10, 99, 0, 1], 64)
                .udp(7000 + q as u16, 7);
            let mut f = Vec::new();
            b.write(&mut f, b"from a queue port").unwrap();
            let mut batch = Batch::new();
            assert!(batch.push_frame(PortId(1), &f));
            assert_eq!(port.tx_burst(&batch, &[0]).sent, 1);
            sent.push(f);
        }
        let mut frames = recv_frames(&sniff, 2, Duration::from_secs(5));
        frames.sort();
        assert_eq!(frames, sent);
    }

    /// In skb mode veth gives XDP no rx queue of its own (the frame's queue is what the
    /// pod end's tx queue left recorded, 0 on a 2-queue pair): nothing is lost, but queue 0
    /// gets every flow.
    #[test]
    fn in_skb_mode_every_frame_still_arrives_once() {
        if !needs_root() {
            return;
        }
        let (_ns, _ports, flows) = two_queue_ports(XdpMode::Skb);
        assert_eq!(flows[0].len(), FLOWS, "{flows:?}");
    }

    #[test]
    fn the_program_stays_attached_until_the_last_queue_port_goes() {
        if !needs_root() {
            return;
        }
        let (ns, ha) = veth_ns_queues(1500, 2);
        let opts = AfXdpOptions::for_mtu(1500).unwrap();
        let mut nl = Netlink::open_in(&ns).unwrap();
        let mut prog_on_ha = || nl.link_by_index(ha).unwrap().unwrap().xdp_prog_id;
        let mut ports = ns.run(|| AfXdpPort::open_queues("ha", ha, opts, 2)).unwrap().unwrap();
        let id = ports[0].prog_id().unwrap();
        assert_eq!(prog_on_ha(), Some(id));
        let mut second = ports.split_off(1);
        drop(ports);
        assert_eq!(prog_on_ha(), Some(id));
        // The remaining port still receives its flows through the shared program.
        send_flows(&ns, FLOWS, PER_FLOW, DPORT);
        assert!(!receive_on_all(&mut second, 1, DPORT)[0].is_empty());
        drop(second);
        assert_eq!(prog_on_ha(), None);
        assert!(!bpf::prog_loaded(id).unwrap());
    }

    #[test]
    fn bad_queue_counts_are_refused_and_leave_nothing_attached() {
        if !needs_root() {
            return;
        }
        let (ns, ha) = veth_ns_queues(1500, 2);
        let opts = AfXdpOptions::for_mtu(1500).unwrap();
        let e = ns.run(|| AfXdpPort::open_queues("ha", ha, opts, 0)).unwrap().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("queues 0"), "{e}");
        let from_max = AfXdpOptions { queue: u32::MAX, ..opts };
        let e = ns.run(|| AfXdpPort::open_queues("ha", ha, from_max, 2)).unwrap().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        // The device uses two queues: binding the third fails in the kernel.
        let e = ns.run(|| AfXdpPort::open_queues("ha", ha, opts, 3)).unwrap().unwrap_err();
        assert!(e.to_string().contains("ha queue 2"), "{e}");
        let mut nl = Netlink::open_in(&ns).unwrap();
        assert_eq!(nl.link_by_index(ha).unwrap().unwrap().xdp_prog_id, None);
        // And the device is free for a working set of ports.
        let ports = ns.run(|| AfXdpPort::open_queues("ha", ha, opts, 2)).unwrap().unwrap();
        assert_eq!(ports.len(), 2);
    }
}
