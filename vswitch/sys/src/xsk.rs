//! AF_XDP sockets: the UMEM, the four rings, bind, wakeups and statistics, written against
//! `<linux/if_xdp.h>` with `libc` only (no libxdp, no C).
//!
//! An AF_XDP socket exchanges frames with the kernel through a UMEM (one anonymous mapping
//! cut into equal frames) and four single-producer/single-consumer rings of frame
//! addresses, each shared memory with the kernel:
//!
//! ```text
//!            userspace                      kernel
//!  fill       ── free frame addresses ──►   receives into them
//!  rx         ◄── (addr, len) received ──
//!  tx         ── (addr, len) to send ───►   sends them
//!  completion ◄── addresses sent ────────
//! ```
//!
//! **Frame ownership** (the invariant everything here keeps): every frame is owned either by
//! this struct or by the kernel. A frame put on the fill or tx ring belongs to the kernel and
//! is not read or written here until it comes back on the rx or completion ring. Frames are
//! split in two fixed pools so neither direction can starve the other: `fill_size` frames
//! circulate fill → rx → fill (a received frame is handed to the caller, then put straight
//! back on the fill ring), and the rest circulate free list → tx → completion → free list.
//! Slices into the UMEM are only ever made for frames this struct owns, so they never alias
//! memory the kernel writes, and the safe methods below cannot hand out a frame twice.
//!
//! **Ring protocol**: a producer writes descriptors, then publishes its index with a
//! `Release` store; a consumer reads the other side's index with an `Acquire` load before
//! reading descriptors, and publishes its own index with `Release` once done with them. Each
//! side keeps cached copies of both indices and reads the shared ones only when the cache
//! says the ring is empty or full (the libxdp scheme).
//!
//! **Wakeups**: sockets are always bound with `XDP_USE_NEED_WAKEUP`; the kernel sets a flag
//! in the fill or tx ring when it needs a syscall to make progress, and the caller makes one
//! only then ([`XskSocket::rx_needs_wakeup`], [`XskSocket::tx_needs_wakeup`]). In copy mode
//! (veth) the tx flag is always set and each `sendto` sends at most 32 frames.
//!
//! The socket's file descriptor becomes readable when the rx ring has frames; the kernel
//! signals it (`sk_data_ready`) after each batch it delivers, so it works edge-triggered.
//! Sockets are created in, and bind to a device of, the calling thread's network namespace.

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

/// Default UMEM frame size: a 1,500-byte MTU frame after the kernel's receive headroom.
pub const DEFAULT_FRAME_SIZE: u32 = 2048;
/// Default number of UMEM frames (16 MiB with 2 KiB frames): half receive, half transmit.
pub const DEFAULT_FRAME_COUNT: u32 = 8192;
/// Default size of each ring, in descriptors. 2,048 lost 3.6% of a 1 Mpps 64-byte flood
/// between two AF_XDP pods (the receive ring filled while the worker was transmitting);
/// 4,096 lost 0.5% (`bench udp-pps`).
pub const DEFAULT_RING_SIZE: u32 = 4096;
/// Bytes the kernel leaves in front of a received frame in copy mode (`XDP_PACKET_HEADROOM`):
/// the longest frame a socket can receive is the frame size minus this.
pub const XDP_PACKET_HEADROOM: u32 = 256;

/// Geometry of a socket's UMEM and rings. Sizes are powers of two.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XskConfig {
    /// Bytes per UMEM frame: 2048 or 4096 (a page).
    pub frame_size: u32,
    /// UMEM frames; `fill_size` of them serve receive, the rest transmit.
    pub frame_count: u32,
    /// Fill ring entries (= frames set aside for receive).
    pub fill_size: u32,
    /// Completion ring entries (at least the transmit frames).
    pub comp_size: u32,
    /// Receive ring entries.
    pub rx_size: u32,
    /// Transmit ring entries.
    pub tx_size: u32,
}

impl Default for XskConfig {
    fn default() -> Self {
        XskConfig {
            frame_size: DEFAULT_FRAME_SIZE,
            frame_count: DEFAULT_FRAME_COUNT,
            fill_size: DEFAULT_RING_SIZE,
            comp_size: DEFAULT_RING_SIZE,
            rx_size: DEFAULT_RING_SIZE,
            tx_size: DEFAULT_RING_SIZE,
        }
    }
}

impl XskConfig {
    /// The default geometry with frames big enough to receive `max_frame`-byte frames:
    /// 2 KiB frames up to 1,792 bytes, 4 KiB frames (and the same memory per frame count)
    /// beyond; `None` above 3,840 bytes (jumbo frames need multi-buffer AF_XDP).
    pub fn for_frame_len(max_frame: usize) -> Option<XskConfig> {
        let frame_size = [2048u32, 4096]
            .into_iter()
            .find(|&s| max_frame + XDP_PACKET_HEADROOM as usize <= s as usize)?;
        Some(XskConfig { frame_size, ..XskConfig::default() })
    }

    /// [`XskConfig::for_frame_len`] with `rx_frames` set aside for receive (fill and rx
    /// rings) and `tx_frames` for transmit (tx and completion rings); both powers of two.
    pub fn for_frame_len_and_frames(
        max_frame: usize,
        rx_frames: u32,
        tx_frames: u32,
    ) -> Option<XskConfig> {
        let base = XskConfig::for_frame_len(max_frame)?;
        Some(XskConfig {
            frame_count: rx_frames.checked_add(tx_frames)?,
            fill_size: rx_frames,
            rx_size: rx_frames,
            comp_size: tx_frames,
            tx_size: tx_frames,
            ..base
        })
    }

    /// Longest frame a socket with this geometry receives.
    pub fn max_rx_frame(&self) -> usize {
        (self.frame_size - XDP_PACKET_HEADROOM) as usize
    }

    /// Longest frame a socket with this geometry sends.
    pub fn max_tx_frame(&self) -> usize {
        self.frame_size as usize
    }

    /// Frames set aside for transmit.
    pub fn tx_frames(&self) -> u32 {
        self.frame_count.saturating_sub(self.fill_size)
    }

    fn validate(&self) -> io::Result<()> {
        let pow2 = |v: u32| v.is_power_of_two();
        let bad = |why: String| Err(io::Error::new(io::ErrorKind::InvalidInput, why));
        if !matches!(self.frame_size, 2048 | 4096) {
            return bad(format!("frame size {} is not 2048 or 4096", self.frame_size));
        }
        for (what, v) in [
            ("fill", self.fill_size),
            ("completion", self.comp_size),
            ("rx", self.rx_size),
            ("tx", self.tx_size),
        ] {
            if !pow2(v) {
                return bad(format!("{what} ring size {v} is not a power of two"));
            }
        }
        if self.fill_size >= self.frame_count {
            return bad(format!(
                "{} frames leave none for transmit after {} for the fill ring",
                self.frame_count, self.fill_size
            ));
        }
        if self.comp_size < self.tx_frames() {
            return bad(format!(
                "completion ring ({}) smaller than the {} transmit frames",
                self.comp_size,
                self.tx_frames()
            ));
        }
        Ok(())
    }
}

/// How the socket was bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BindMode {
    /// The driver DMAs straight into the UMEM.
    ZeroCopy,
    /// The kernel copies between its buffers and the UMEM (veth, generic XDP).
    Copy,
}

impl std::fmt::Display for BindMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BindMode::ZeroCopy => "zero-copy",
            BindMode::Copy => "copy",
        })
    }
}

/// The kernel's counters for one socket (`struct xdp_statistics`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XskStats {
    /// Frames dropped for any reason other than those below (too long for a frame, ...).
    pub rx_dropped: u64,
    /// Invalid descriptors on the fill ring.
    pub rx_invalid_descs: u64,
    /// Invalid descriptors on the tx ring.
    pub tx_invalid_descs: u64,
    /// Frames dropped because the rx ring was full.
    pub rx_ring_full: u64,
    /// Frames dropped because the fill ring was empty.
    pub rx_fill_ring_empty_descs: u64,
    /// Times the kernel found the tx ring empty when woken.
    pub tx_ring_empty_descs: u64,
}

/// Result of [`XskSocket::tx_write`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxWrite {
    /// A descriptor was written (it goes out after [`XskSocket::tx_submit`] and a kick).
    Queued,
    /// No free frame or tx ring slot: reap completions or kick, then retry.
    Full,
    /// The writer declined (returned `None`); nothing was queued.
    Cancelled,
}

/// An anonymous or ring mapping, unmapped on drop.
#[derive(Debug)]
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mapping {
    fn new(len: usize, fd: Option<(RawFd, u64)>) -> io::Result<Mapping> {
        let (flags, fd, off) = match fd {
            Some((fd, off)) => (libc::MAP_SHARED | libc::MAP_POPULATE, fd, off as libc::off_t),
            None => (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0),
        };
        // SAFETY: a fresh mapping at an address of the kernel's choosing; no existing memory
        // is affected. The result is checked before use.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                fd,
                off,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap gave null"))?;
        Ok(Mapping { ptr, len })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` describe a mapping made in `Mapping::new` and not unmapped
        // since; nothing refers into it once its owner is dropped.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// One mmapped ring: shared producer and consumer indices, flags, and the descriptor array.
#[derive(Debug)]
struct Ring<T: Copy> {
    producer: NonNull<AtomicU32>,
    consumer: NonNull<AtomicU32>,
    flags: NonNull<AtomicU32>,
    descs: NonNull<T>,
    mask: u32,
    size: u32,
    /// Producer rings: our next slot (published or not). Consumer rings: the kernel's
    /// producer index as last read.
    cached_prod: u32,
    /// Producer rings: the kernel's consumer index as last read. Consumer rings: our next
    /// slot to read.
    cached_cons: u32,
    _map: Mapping,
}

impl<T: Copy> Ring<T> {
    /// Maps the ring at page offset `pgoff` of the socket, laid out as `off` says.
    fn map(fd: RawFd, pgoff: u64, off: &libc::xdp_ring_offset, size: u32) -> io::Result<Self> {
        let len = off.desc as usize + size as usize * size_of::<T>();
        let map = Mapping::new(len, Some((fd, pgoff)))?;
        let at = |o: u64| -> io::Result<NonNull<u8>> {
            if o as usize + 4 > len {
                return Err(io::Error::other("ring offsets outside the mapping"));
            }
            // SAFETY: `o` is inside the mapping (checked), so the result is in bounds and
            // non-null.
            Ok(unsafe { map.ptr.add(o as usize) })
        };
        let producer = at(off.producer)?.cast::<AtomicU32>();
        let consumer = at(off.consumer)?.cast::<AtomicU32>();
        let flags = at(off.flags)?.cast::<AtomicU32>();
        let descs = at(off.desc)?.cast::<T>();
        // SAFETY: the producer index is a u32 inside the mapping that the kernel only
        // accesses atomically.
        let cached_prod = unsafe { producer.as_ref() }.load(Ordering::Acquire);
        // SAFETY: as above, for the consumer index.
        let cached_cons = unsafe { consumer.as_ref() }.load(Ordering::Acquire);
        Ok(Ring {
            producer,
            consumer,
            flags,
            descs,
            mask: size - 1,
            size,
            cached_prod,
            cached_cons,
            _map: map,
        })
    }

    fn producer(&self) -> &AtomicU32 {
        // SAFETY: points into `_map`, which lives as long as `self`; the kernel only ever
        // accesses this u32 atomically.
        unsafe { self.producer.as_ref() }
    }

    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: as for `producer`.
        unsafe { self.consumer.as_ref() }
    }

    fn needs_wakeup(&self) -> bool {
        // SAFETY: as for `producer`.
        let flags = unsafe { self.flags.as_ref() };
        flags.load(Ordering::Relaxed) & libc::XDP_RING_NEED_WAKEUP != 0
    }

    // --- producer side (fill, tx) ---

    /// Free slots, reading the kernel's consumer index only if the cache shows fewer than
    /// `want`.
    fn prod_free(&mut self, want: u32) -> u32 {
        let free = self.size - self.cached_prod.wrapping_sub(self.cached_cons);
        if free >= want {
            return free;
        }
        self.cached_cons = self.consumer().load(Ordering::Acquire);
        self.size - self.cached_prod.wrapping_sub(self.cached_cons)
    }

    /// Writes `v` into the next slot (the caller checked [`Ring::prod_free`]); it is seen by
    /// the kernel after [`Ring::prod_submit`].
    fn prod_push(&mut self, v: T) {
        let i = (self.cached_prod & self.mask) as usize;
        let slot = self.descs.as_ptr().wrapping_add(i);
        // SAFETY: `i` < size, so the slot is inside the descriptor array; the slot is free
        // (the caller checked), so the kernel does not read it concurrently.
        unsafe { slot.write(v) };
        self.cached_prod = self.cached_prod.wrapping_add(1);
    }

    fn prod_submit(&self) {
        self.producer().store(self.cached_prod, Ordering::Release);
    }

    /// Descriptors published but not yet taken by the kernel.
    fn prod_outstanding(&self) -> u32 {
        self.cached_prod.wrapping_sub(self.consumer().load(Ordering::Acquire))
    }

    // --- consumer side (rx, completion) ---

    /// Descriptors ready to read.
    fn cons_available(&mut self) -> u32 {
        let n = self.cached_prod.wrapping_sub(self.cached_cons);
        if n > 0 {
            return n;
        }
        self.cached_prod = self.producer().load(Ordering::Acquire);
        self.cached_prod.wrapping_sub(self.cached_cons)
    }

    /// Reads the `k`-th available descriptor (`k` < [`Ring::cons_available`]).
    fn cons_read(&self, k: u32) -> T {
        let i = (self.cached_cons.wrapping_add(k) & self.mask) as usize;
        let slot = self.descs.as_ptr().wrapping_add(i);
        // SAFETY: `i` < size; the slot was published by the kernel (acquire load of its
        // producer index) and is not rewritten until we release it.
        unsafe { slot.read() }
    }

    fn cons_release(&mut self, n: u32) {
        self.cached_cons = self.cached_cons.wrapping_add(n);
        self.consumer().store(self.cached_cons, Ordering::Release);
    }
}

/// An AF_XDP socket bound to one queue of one device, with its own UMEM.
pub struct XskSocket {
    // Field order is drop order: the socket closes (the kernel lets go of the UMEM and
    // rings) before the mappings go.
    fd: OwnedFd,
    fill: Ring<u64>,
    comp: Ring<u64>,
    rx: Ring<libc::xdp_desc>,
    tx: Ring<libc::xdp_desc>,
    umem: Mapping,
    cfg: XskConfig,
    mode: BindMode,
    /// Receive frames returned by the caller that did not fit on the fill ring yet (the
    /// kernel publishes rx entries just before it publishes its fill consumer index).
    refill: Vec<u64>,
    /// Transmit frames owned here and free.
    tx_free: Vec<u64>,
}

// SAFETY: the raw pointers point into mappings owned by this struct alone; moving it to
// another thread moves that ownership. It is not `Sync`: all methods that touch a ring take
// `&mut self` or only perform atomic loads.
unsafe impl Send for XskSocket {}

impl std::fmt::Debug for XskSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XskSocket")
            .field("fd", &self.fd.as_raw_fd())
            .field("mode", &self.mode)
            .field("cfg", &self.cfg)
            .field("tx_free", &self.tx_free.len())
            .finish()
    }
}

fn setsockopt<T>(fd: RawFd, opt: libc::c_int, v: &T) -> io::Result<()> {
    // SAFETY: `v` is a live `T` and the length passed is its size; the kernel only reads it.
    let rc = unsafe {
        libc::setsockopt(fd, libc::SOL_XDP, opt, (v as *const T).cast(), size_of::<T>() as u32)
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Reads a socket option into `v`; returns the length the kernel wrote.
fn getsockopt<T>(fd: RawFd, level: libc::c_int, opt: libc::c_int, v: &mut T) -> io::Result<usize> {
    let mut len = size_of::<T>() as libc::socklen_t;
    // SAFETY: `v` is exclusively borrowed and `len` is its size; the kernel writes at most
    // `len` bytes (plain integers) and updates `len`.
    let rc = unsafe { libc::getsockopt(fd, level, opt, (v as *mut T).cast(), &mut len) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(len as usize)
}

impl XskSocket {
    /// Creates a socket with its UMEM and rings and binds it to queue `queue` of the device
    /// `ifindex` (named `ifname` in errors), zero-copy if the driver can, copy mode
    /// otherwise, always with `XDP_USE_NEED_WAKEUP`. The fill ring starts full. Frames reach
    /// the socket once an XDP program redirects them to it (an XSKMAP entry).
    pub fn bind(ifname: &str, ifindex: u32, queue: u32, cfg: XskConfig) -> io::Result<XskSocket> {
        cfg.validate().map_err(|e| {
            io::Error::new(e.kind(), format!("AF_XDP socket for {ifname} queue {queue}: {e}"))
        })?;
        let wake = libc::XDP_USE_NEED_WAKEUP;
        match Self::create(ifname, ifindex, queue, cfg, libc::XDP_ZEROCOPY | wake) {
            Ok(s) => Ok(s),
            Err(zc) => {
                Self::create(ifname, ifindex, queue, cfg, libc::XDP_COPY | wake).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("{e} (in copy mode; zero-copy failed too: {zc})"),
                    )
                })
            }
        }
    }

    fn create(
        ifname: &str,
        ifindex: u32,
        queue: u32,
        cfg: XskConfig,
        bind_flags: u16,
    ) -> io::Result<XskSocket> {
        let step = |what: &str| {
            let what = what.to_string();
            move |e: io::Error| {
                io::Error::new(e.kind(), format!("AF_XDP {what} for {ifname} queue {queue}: {e}"))
            }
        };
        // SAFETY: plain socket(2); the result is checked and owned at once.
        let raw = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(step("socket")(io::Error::last_os_error()));
        }
        // SAFETY: `raw` is a fresh fd nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let umem_len = cfg.frame_size as usize * cfg.frame_count as usize;
        let umem = Mapping::new(umem_len, None).map_err(step("UMEM mmap"))?;
        let reg = libc::xdp_umem_reg {
            addr: umem.ptr.as_ptr() as u64,
            len: umem_len as u64,
            chunk_size: cfg.frame_size,
            headroom: 0,
            flags: 0,
            tx_metadata_len: 0,
        };
        let raw = fd.as_raw_fd();
        setsockopt(raw, libc::XDP_UMEM_REG, &reg).map_err(step("XDP_UMEM_REG"))?;
        setsockopt(raw, libc::XDP_UMEM_FILL_RING, &cfg.fill_size).map_err(step("fill ring"))?;
        setsockopt(raw, libc::XDP_UMEM_COMPLETION_RING, &cfg.comp_size)
            .map_err(step("completion ring"))?;
        setsockopt(raw, libc::XDP_RX_RING, &cfg.rx_size).map_err(step("rx ring"))?;
        setsockopt(raw, libc::XDP_TX_RING, &cfg.tx_size).map_err(step("tx ring"))?;
        // SAFETY: xdp_mmap_offsets is plain integers; all-zero is a valid value.
        let mut off: libc::xdp_mmap_offsets = unsafe { std::mem::zeroed() };
        let len = getsockopt(raw, libc::SOL_XDP, libc::XDP_MMAP_OFFSETS, &mut off)
            .map_err(step("XDP_MMAP_OFFSETS"))?;
        if len != size_of::<libc::xdp_mmap_offsets>() {
            return Err(step("XDP_MMAP_OFFSETS")(io::Error::other(
                "kernel too old (no ring flags: need_wakeup needs Linux 5.4)",
            )));
        }
        let fill = Ring::map(raw, libc::XDP_UMEM_PGOFF_FILL_RING, &off.fr, cfg.fill_size)
            .map_err(step("fill ring mmap"))?;
        let comp = Ring::map(raw, libc::XDP_UMEM_PGOFF_COMPLETION_RING, &off.cr, cfg.comp_size)
            .map_err(step("completion ring mmap"))?;
        let rx = Ring::map(raw, libc::XDP_PGOFF_RX_RING as u64, &off.rx, cfg.rx_size)
            .map_err(step("rx ring mmap"))?;
        let tx = Ring::map(raw, libc::XDP_PGOFF_TX_RING as u64, &off.tx, cfg.tx_size)
            .map_err(step("tx ring mmap"))?;
        let fs = u64::from(cfg.frame_size);
        let mut sock = XskSocket {
            fd,
            fill,
            comp,
            rx,
            tx,
            umem,
            cfg,
            mode: if bind_flags & libc::XDP_ZEROCOPY != 0 {
                BindMode::ZeroCopy
            } else {
                BindMode::Copy
            },
            refill: Vec::with_capacity(cfg.fill_size as usize),
            tx_free: (u64::from(cfg.fill_size)..u64::from(cfg.frame_count))
                .rev()
                .map(|i| i * fs)
                .collect(),
        };
        // The first `fill_size` frames go to the kernel for receiving, before bind so the
        // first frames find room.
        sock.refill.extend((0..u64::from(cfg.fill_size)).map(|i| i * fs));
        sock.refill_fill_ring();
        // SAFETY: sockaddr_xdp is plain integers; all-zero is a valid value.
        let mut sa: libc::sockaddr_xdp = unsafe { std::mem::zeroed() };
        sa.sxdp_family = libc::AF_XDP as u16;
        sa.sxdp_flags = bind_flags;
        sa.sxdp_ifindex = ifindex;
        sa.sxdp_queue_id = queue;
        // SAFETY: `sa` is a valid sockaddr_xdp and the length passed is its size.
        let rc = unsafe {
            libc::bind(
                raw,
                (&sa as *const libc::sockaddr_xdp).cast(),
                size_of::<libc::sockaddr_xdp>() as u32,
            )
        };
        if rc != 0 {
            return Err(step("bind")(io::Error::last_os_error()));
        }
        Ok(sock)
    }

    /// How the socket is bound.
    pub fn bind_mode(&self) -> BindMode {
        self.mode
    }

    /// Its geometry.
    pub fn config(&self) -> &XskConfig {
        &self.cfg
    }

    /// The socket's fd: readable when the rx ring has frames. Registered with epoll; also
    /// the fd of XSKMAP entries.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    fn frame(&self, addr: u64, len: u32) -> Option<&[u8]> {
        let (start, len) = (usize::try_from(addr).ok()?, len as usize);
        if start.checked_add(len)? > self.umem.len {
            return None;
        }
        let p = self.umem.ptr.as_ptr().wrapping_add(start);
        // SAFETY: the range is inside the UMEM (checked) and belongs to a frame the kernel
        // handed back on the rx ring, which it does not write until it is on the fill ring
        // again; the slice does not outlive `&self`.
        Some(unsafe { std::slice::from_raw_parts(p, len) })
    }

    /// Moves returned receive frames onto the fill ring, as many as fit, and publishes them.
    fn refill_fill_ring(&mut self) {
        if self.refill.is_empty() {
            return;
        }
        let n = (self.fill.prod_free(self.refill.len() as u32) as usize).min(self.refill.len());
        for _ in 0..n {
            if let Some(a) = self.refill.pop() {
                self.fill.prod_push(a);
            }
        }
        if n > 0 {
            self.fill.prod_submit();
        }
    }

    /// Hands up to `max` received frames to `f`, in order, and gives each frame back to the
    /// kernel right after. Returns how many were handed over.
    pub fn recv(&mut self, max: usize, mut f: impl FnMut(&[u8])) -> usize {
        let n = (self.rx.cons_available() as usize).min(max) as u32;
        if n == 0 {
            return 0;
        }
        let chunk = !(u64::from(self.cfg.frame_size) - 1);
        for k in 0..n {
            let d = self.rx.cons_read(k);
            // A descriptor outside the UMEM would be a kernel bug; skip it rather than trust it.
            if let Some(frame) = self.frame(d.addr, d.len) {
                f(frame);
            }
            if self.refill.len() < self.refill.capacity() {
                self.refill.push(d.addr & chunk);
            }
        }
        self.rx.cons_release(n);
        self.refill_fill_ring();
        n as usize
    }

    /// True when the kernel needs a syscall ([`XskSocket::wake_rx`]) to keep receiving
    /// (zero-copy drivers that ran out of fill entries; never in copy mode).
    pub fn rx_needs_wakeup(&self) -> bool {
        self.fill.needs_wakeup()
    }

    /// Wakes the receive side (`recvfrom`, non-blocking).
    pub fn wake_rx(&self) -> io::Result<()> {
        // SAFETY: a zero-length receive with null buffer and address, which AF_XDP accepts
        // as a wakeup; nothing is written.
        let rc = unsafe {
            libc::recvfrom(
                self.fd(),
                std::ptr::null_mut(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::WouldBlock {
                return Err(e);
            }
        }
        Ok(())
    }

    /// Takes sent frames off the completion ring back onto the free list; returns how many.
    pub fn reap_completions(&mut self) -> usize {
        let n = self.comp.cons_available();
        if n == 0 {
            return 0;
        }
        let chunk = !(u64::from(self.cfg.frame_size) - 1);
        for k in 0..n {
            let a = self.comp.cons_read(k) & chunk;
            // Only addresses handed out from the free list come back; the capacity check
            // keeps a kernel bug from making this allocate.
            if self.tx_free.len() < self.tx_free.capacity() && (a as usize) < self.umem.len {
                self.tx_free.push(a);
            }
        }
        self.comp.cons_release(n);
        n as usize
    }

    /// Frames that can be queued for transmit now without reaping completions: free frames
    /// and free tx ring slots, whichever is fewer.
    pub fn tx_room(&mut self) -> usize {
        let frames = self.tx_free.len();
        (self.tx.prod_free(frames as u32) as usize).min(frames)
    }

    /// Queues one frame for transmit: `write` gets a free frame's whole buffer
    /// ([`XskConfig::max_tx_frame`] bytes) and returns the frame's length, or `None` to
    /// give the frame back. The frame is sent after [`XskSocket::tx_submit`] and a kick.
    pub fn tx_write(&mut self, write: impl FnOnce(&mut [u8]) -> Option<usize>) -> TxWrite {
        if self.tx.prod_free(1) == 0 {
            return TxWrite::Full;
        }
        let Some(addr) = self.tx_free.pop() else { return TxWrite::Full };
        let size = self.cfg.frame_size as usize;
        let p = self.umem.ptr.as_ptr().wrapping_add(addr as usize);
        // SAFETY: `addr` came off the free list, so the frame is owned here and not on any
        // ring: the kernel neither reads nor writes it. Frames are `size` bytes at
        // multiples of `size` inside the UMEM. The slice ends with this call.
        let buf = unsafe { std::slice::from_raw_parts_mut(p, size) };
        match write(buf) {
            Some(len) if len > 0 && len <= size => {
                self.tx.prod_push(libc::xdp_desc { addr, len: len as u32, options: 0 });
                TxWrite::Queued
            }
            _ => {
                self.tx_free.push(addr);
                TxWrite::Cancelled
            }
        }
    }

    /// Publishes the frames queued by [`XskSocket::tx_write`] to the kernel.
    pub fn tx_submit(&mut self) {
        self.tx.prod_submit();
    }

    /// Submitted frames the kernel has not taken off the tx ring yet.
    pub fn tx_unsent(&self) -> u32 {
        self.tx.prod_outstanding()
    }

    /// True when the kernel needs a [`XskSocket::kick_tx`] to send (always, in copy mode).
    pub fn tx_needs_wakeup(&self) -> bool {
        self.tx.needs_wakeup()
    }

    /// Asks the kernel to send what is on the tx ring (`sendto`, non-blocking). In copy
    /// mode one kick sends at most 32 frames and then fails with `WouldBlock` if more are
    /// left; `WouldBlock` and `ENOBUFS` mean "try again", anything else is a real error.
    pub fn kick_tx(&self) -> io::Result<()> {
        // SAFETY: a zero-length send with null buffer and address, which AF_XDP accepts as a
        // transmit wakeup; nothing is read from userspace memory but the rings.
        let rc = unsafe {
            libc::sendto(self.fd(), std::ptr::null(), 0, libc::MSG_DONTWAIT, std::ptr::null(), 0)
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// The kernel's drop counters for this socket.
    pub fn statistics(&self) -> io::Result<XskStats> {
        // SAFETY: xdp_statistics is plain integers; all-zero is a valid value.
        let mut s: libc::xdp_statistics = unsafe { std::mem::zeroed() };
        getsockopt(self.fd(), libc::SOL_XDP, libc::XDP_STATISTICS, &mut s)?;
        Ok(XskStats {
            rx_dropped: s.rx_dropped,
            rx_invalid_descs: s.rx_invalid_descs,
            tx_invalid_descs: s.tx_invalid_descs,
            rx_ring_full: s.rx_ring_full,
            rx_fill_ring_empty_descs: s.rx_fill_ring_empty_descs,
            tx_ring_empty_descs: s.tx_ring_empty_descs,
        })
    }

    /// The socket's pending error (`SO_ERROR`, cleared by reading): `ENETDOWN` once its
    /// device has gone away.
    pub fn take_error(&self) -> Option<io::Error> {
        let mut v: libc::c_int = 0;
        match getsockopt(self.fd(), libc::SOL_SOCKET, libc::SO_ERROR, &mut v) {
            Ok(_) if v == 0 => None,
            Ok(_) => Some(io::Error::from_raw_os_error(v)),
            Err(e) => Some(e),
        }
    }
}

impl AsRawFd for XskSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bpf::{self, BpfMap, MapKind, XdpLink, XdpMode, XdpProgram};
    use crate::netlink::Netlink;
    use crate::netns::NamedNetNs;
    use crate::packet::PacketSocket;
    use crate::test_support::needs_root;
    use std::sync::atomic::AtomicU32;
    use std::time::{Duration, Instant};

    #[test]
    fn configs_are_checked() {
        assert!(XskConfig::default().validate().is_ok());
        assert_eq!(XskConfig::default().tx_frames(), 4096);
        assert_eq!(XskConfig::default().max_rx_frame(), 1792);
        for bad in [
            XskConfig { frame_size: 1000, ..Default::default() },
            XskConfig { rx_size: 1000, ..Default::default() },
            XskConfig { fill_size: 8192, ..Default::default() },
            XskConfig { comp_size: 2048, ..Default::default() },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        assert_eq!(XskConfig::for_frame_len(1518).unwrap().frame_size, 2048);
        assert_eq!(XskConfig::for_frame_len(1792).unwrap().frame_size, 2048);
        assert_eq!(XskConfig::for_frame_len(1793).unwrap().frame_size, 4096);
        assert!(XskConfig::for_frame_len(9018).is_none());
    }

    struct Pair {
        ns: NamedNetNs,
        a: u32,
    }

    /// A namespace with a veth pair `xa` (the socket's side) / `xb`, both up, IPv6 off so the
    /// kernel sends nothing of its own on them.
    fn pair() -> Pair {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!("pswxsk-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        let ns = NamedNetNs::create(&name).unwrap();
        ns.run(|| std::fs::write("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1"))
            .unwrap()
            .ok();
        let mut nl = Netlink::open_in(&ns).unwrap();
        nl.veth_add("xa", "xb", None).unwrap();
        let a = nl.link_get("xa").unwrap().unwrap().index;
        let b = nl.link_get("xb").unwrap().unwrap().index;
        nl.link_set_up(a, true).unwrap();
        nl.link_set_up(b, true).unwrap();
        Pair { ns, a }
    }

    #[test]
    fn frames_go_both_ways_through_a_copy_mode_socket() {
        needs_root!();
        let p = pair();
        let cfg =
            XskConfig { frame_count: 256, fill_size: 128, comp_size: 128, ..XskConfig::default() };
        let cfg = XskConfig { rx_size: 128, tx_size: 128, ..cfg };
        let mut sock = p.ns.run(|| XskSocket::bind("xa", p.a, 0, cfg)).unwrap().unwrap();
        assert_eq!(sock.bind_mode(), BindMode::Copy, "veth has no zero-copy");
        let xsks = BpfMap::create(MapKind::XskMap, "t_xsks", 4, 4, 1).unwrap();
        xsks.update(&0u32.to_ne_bytes(), &(sock.fd() as u32).to_ne_bytes()).unwrap();
        let prog = XdpProgram::load("t_xsk", &bpf::xsk_redirect_program(&xsks)).unwrap();
        let _link = p.ns.run(|| XdpLink::attach(&prog, p.a, XdpMode::Native)).unwrap().unwrap();
        // Send from our side (out of xa) to a raw socket on xb... and back: a packet socket on
        // xb both sees our frames and sends frames that arrive on xa.
        let raw = p.ns.run(|| packet_socket("xb")).unwrap().unwrap();
        let frame = |tag: u8| {
            let mut f = vec![0xffu8; 6];
            f.extend_from_slice(&[2, 0, 0, 0, 0, tag]);
            f.extend_from_slice(&0x88b5u16.to_be_bytes());
            f.resize(60 + tag as usize, tag);
            f
        };
        // Transmit 200 frames (more than one kick's 32, more than the 128 tx frames).
        let mut sent = 0;
        let deadline = Instant::now() + Duration::from_secs(5);
        while sent < 200 && Instant::now() < deadline {
            sock.reap_completions();
            while sent < 200 && sock.tx_room() > 0 {
                let f = frame((sent % 200) as u8);
                let w = sock.tx_write(|buf| {
                    buf[..f.len()].copy_from_slice(&f);
                    Some(f.len())
                });
                assert_eq!(w, TxWrite::Queued);
                sent += 1;
            }
            sock.tx_submit();
            let mut kicks = 0;
            while sock.tx_unsent() > 0 && kicks < 16 {
                let _ = sock.kick_tx();
                kicks += 1;
            }
        }
        assert_eq!(sent, 200);
        let mut got = 0;
        let mut buf = [0u8; 2048];
        let deadline = Instant::now() + Duration::from_secs(5);
        while got < 200 && Instant::now() < deadline {
            match raw.try_recv(&mut buf).unwrap() {
                Some(n) if buf[12..14] == [0x88, 0xb5] => {
                    assert_eq!(n, 60 + buf[11] as usize);
                    got += 1;
                }
                Some(_) => {}
                None => std::thread::sleep(Duration::from_millis(1)),
            }
        }
        assert_eq!(got, 200, "every transmitted frame arrived on the peer");
        // The other way: frames sent on xb arrive in our rx ring, more than the fill ring
        // holds at once, so frames must be recycled.
        let mut received = 0;
        let mut lens = Vec::new();
        for i in 0..300u32 {
            let f = frame((i % 200) as u8);
            assert_eq!(raw.send(&f).unwrap(), f.len());
            if i % 64 == 63 {
                std::thread::sleep(Duration::from_millis(5));
                received += sock.recv(1000, |fr| lens.push(fr.len()));
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while received < 300 && Instant::now() < deadline {
            received += sock.recv(32, |fr| lens.push(fr.len()));
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(received, 300, "stats: {:?}", sock.statistics());
        assert_eq!(lens[5], 65);
        let st = sock.statistics().unwrap();
        assert_eq!(st.rx_dropped, 0, "{st:?}");
        assert!(sock.take_error().is_none());
    }

    fn packet_socket(ifname: &str) -> io::Result<PacketSocket> {
        let index = Netlink::open()?.link_get(ifname)?.map(|l| l.index).unwrap_or(0);
        PacketSocket::open(index)
    }
}
