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
//! checksum offload turned off by the control plane, so its frames arrive complete (AF_XDP
//! has no field for a partial checksum; see the Ports section of `docs/architecture.md`),
//! and veth turns off the pod end's segmentation while an
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
mod tests;
