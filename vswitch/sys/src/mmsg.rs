//! Batched datagram I/O: `recvmmsg` and `sendmmsg` over message arrays allocated once, so a
//! burst of datagrams costs one syscall each way and no allocation.
//!
//! The arrays hold raw pointers into the caller's buffers only for the duration of one call;
//! between calls they are stale and never read.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::RawFd;

/// `setsockopt(SOL_UDP, UDP_SEGMENT)` / the cmsg of the same name: UDP GSO segment size.
pub const UDP_SEGMENT: libc::c_int = 103;
/// `setsockopt(SOL_UDP, UDP_GRO)` / the cmsg giving a coalesced read's segment size.
pub const UDP_GRO: libc::c_int = 104;

/// Control buffer of one received message: room for a few cmsgs (8-byte aligned).
type Ctrl = [u64; 8];

/// Message arrays for up to `capacity` datagrams per call, with up to three buffer pieces
/// each (outer headers, inner headers, payload: sent without joining them).
#[derive(Debug)]
pub struct MsgArrays {
    hdrs: Vec<libc::mmsghdr>,
    iovs: Vec<[libc::iovec; 3]>,
    addrs: Vec<libc::sockaddr_in>,
    /// Per-message control buffers for `recv` (empty: no control data asked for).
    ctrl: Vec<Ctrl>,
}

// SAFETY: the raw pointers inside are only written and dereferenced (by the kernel) within one
// `recv`/`send` call on the thread making it, while the buffers they point to are borrowed.
unsafe impl Send for MsgArrays {}

fn empty_iov() -> libc::iovec {
    libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }
}

fn sockaddr(a: SocketAddrV4) -> libc::sockaddr_in {
    // SAFETY: sockaddr_in is plain old data; all-zero is a valid value.
    let mut s: libc::sockaddr_in = unsafe { zeroed() };
    s.sin_family = libc::AF_INET as libc::sa_family_t;
    s.sin_port = a.port().to_be();
    s.sin_addr = libc::in_addr { s_addr: u32::from(*a.ip()).to_be() };
    s
}

impl MsgArrays {
    /// Arrays for `capacity` datagrams per call.
    pub fn new(capacity: usize) -> MsgArrays {
        MsgArrays {
            // SAFETY: mmsghdr and sockaddr_in are plain old data; all-zero is valid.
            hdrs: (0..capacity).map(|_| unsafe { zeroed() }).collect(),
            iovs: (0..capacity).map(|_| [empty_iov(), empty_iov(), empty_iov()]).collect(),
            // SAFETY: as above.
            addrs: (0..capacity).map(|_| unsafe { zeroed() }).collect(),
            ctrl: Vec::new(),
        }
    }

    /// Arrays whose `recv` also collects control messages (see [`MsgArrays::gro_size`]).
    pub fn with_control(capacity: usize) -> MsgArrays {
        MsgArrays { ctrl: vec![[0u64; 8]; capacity], ..MsgArrays::new(capacity) }
    }

    /// Receives up to one datagram into each buffer `bufs` yields (at most the capacity),
    /// without blocking. Returns how many arrived (0 when none are waiting); then
    /// [`MsgArrays::received`] tells each one's length and sender.
    pub fn recv<'a>(
        &mut self,
        fd: RawFd,
        bufs: impl Iterator<Item = &'a mut [u8]>,
    ) -> io::Result<usize> {
        let mut n = 0;
        for (i, buf) in bufs.take(self.hdrs.len()).enumerate() {
            self.iovs[i][0] = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
            let h = &mut self.hdrs[i];
            h.msg_len = 0;
            h.msg_hdr.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_in).cast();
            h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
            h.msg_hdr.msg_iov = self.iovs[i].as_mut_ptr();
            h.msg_hdr.msg_iovlen = 1;
            match self.ctrl.get_mut(i) {
                Some(c) => {
                    h.msg_hdr.msg_control = c.as_mut_ptr().cast();
                    h.msg_hdr.msg_controllen = size_of::<Ctrl>() as _;
                }
                None => {
                    h.msg_hdr.msg_control = std::ptr::null_mut();
                    h.msg_hdr.msg_controllen = 0;
                }
            }
            h.msg_hdr.msg_flags = 0;
            n = i + 1;
        }
        if n == 0 {
            return Ok(0);
        }
        loop {
            // SAFETY: the first `n` headers point at live buffers borrowed for this call
            // (iovecs) and at this struct's own address slots; the kernel writes at most
            // iov_len bytes into each and msg_namelen into each name.
            let rc = unsafe {
                libc::recvmmsg(
                    fd,
                    self.hdrs.as_mut_ptr(),
                    n as u32,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if rc >= 0 {
                return Ok(rc as usize);
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => return Ok(0),
                _ => return Err(e),
            }
        }
    }

    /// Length, truncation flag and IPv4 sender of the `i`-th datagram of the last `recv`.
    pub fn received(&self, i: usize) -> (usize, bool, Option<Ipv4Addr>) {
        let Some(h) = self.hdrs.get(i) else { return (0, false, None) };
        let truncated = h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
        let a = &self.addrs[i];
        let from = (h.msg_hdr.msg_namelen as usize >= size_of::<libc::sockaddr_in>()
            && a.sin_family == libc::AF_INET as libc::sa_family_t)
            .then(|| Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)));
        (h.msg_len as usize, truncated, from)
    }

    /// The `UDP_GRO` segment size of the `i`-th datagram of the last `recv` (arrays made
    /// with [`MsgArrays::with_control`] on a socket with `UDP_GRO` on): `Some(size)` when the
    /// kernel coalesced several datagrams of `size` bytes (the last may be shorter) into it.
    pub fn gro_size(&self, i: usize) -> Option<usize> {
        let (h, c) = (self.hdrs.get(i)?, self.ctrl.get(i)?);
        let mut bytes = [0u8; size_of::<Ctrl>()];
        for (b, w) in bytes.chunks_exact_mut(8).zip(c) {
            b.copy_from_slice(&w.to_ne_bytes());
        }
        // `msg_controllen` is `size_t` on glibc, `socklen_t` on musl.
        #[allow(clippy::unnecessary_cast)]
        let len = (h.msg_hdr.msg_controllen as usize).min(bytes.len());
        parse_gro_cmsg(&bytes[..len])
    }

    /// Sends one datagram per item (destination and the datagram in up to three pieces), at
    /// most the capacity, without blocking. Returns how many the kernel took, in order; the
    /// first one it refused is reported as `Err` only when it took none.
    pub fn send<'a>(
        &mut self,
        fd: RawFd,
        msgs: impl Iterator<Item = (SocketAddrV4, [&'a [u8]; 3])>,
    ) -> io::Result<usize> {
        let mut n = 0;
        let iov =
            |b: &[u8]| libc::iovec { iov_base: b.as_ptr() as *mut libc::c_void, iov_len: b.len() };
        for (i, (to, pieces)) in msgs.take(self.hdrs.len()).enumerate() {
            self.addrs[i] = sockaddr(to);
            self.iovs[i] = [iov(pieces[0]), iov(pieces[1]), iov(pieces[2])];
            let h = &mut self.hdrs[i];
            h.msg_len = 0;
            h.msg_hdr.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_in).cast();
            h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
            h.msg_hdr.msg_iov = self.iovs[i].as_mut_ptr();
            h.msg_hdr.msg_iovlen = 3;
            h.msg_hdr.msg_control = std::ptr::null_mut();
            h.msg_hdr.msg_controllen = 0;
            h.msg_hdr.msg_flags = 0;
            n = i + 1;
        }
        let mut done = 0;
        while done < n {
            // SAFETY: headers `done..n` point at buffers borrowed for this call (the kernel only
            // reads them) and at this struct's address slots.
            let rc = unsafe {
                libc::sendmmsg(
                    fd,
                    self.hdrs[done..].as_mut_ptr(),
                    (n - done) as u32,
                    libc::MSG_DONTWAIT,
                )
            };
            if rc > 0 {
                done += rc as usize;
                continue;
            }
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return if done > 0 { Ok(done) } else { Err(e) };
        }
        Ok(done)
    }
}

/// Finds a `SOL_UDP`/`UDP_GRO` control message in `ctrl` (the bytes the kernel wrote) and
/// returns its segment size (an `int`), ignoring anything malformed.
fn parse_gro_cmsg(ctrl: &[u8]) -> Option<usize> {
    let hdr = size_of::<libc::cmsghdr>();
    let word = size_of::<usize>();
    let mut off = 0;
    while off + hdr <= ctrl.len() {
        let len = usize::from_ne_bytes(ctrl[off..off + word].try_into().ok()?);
        let level = i32::from_ne_bytes(ctrl[off + word..off + word + 4].try_into().ok()?);
        let kind = i32::from_ne_bytes(ctrl[off + word + 4..off + word + 8].try_into().ok()?);
        if len < hdr || off + len > ctrl.len() {
            return None;
        }
        if level == libc::SOL_UDP && kind == UDP_GRO && len >= hdr + 4 {
            let v = i32::from_ne_bytes(ctrl[off + hdr..off + hdr + 4].try_into().ok()?);
            return usize::try_from(v).ok().filter(|v| *v > 0);
        }
        off += len.next_multiple_of(word);
    }
    None
}

/// The control message of a `UDP_SEGMENT` send.
#[repr(C)]
struct SegmentCmsg {
    hdr: libc::cmsghdr,
    size: u16,
    pad: [u8; 6],
}

/// Sends `buf` to `to` as one `sendmsg` with a `UDP_SEGMENT` control message: the kernel (or
/// the device) splits it into datagrams of `segment` bytes (the last may be shorter). Returns
/// the bytes taken; never blocks.
pub fn send_segmented(fd: RawFd, to: SocketAddrV4, buf: &[u8], segment: u16) -> io::Result<usize> {
    let mut addr = sockaddr(to);
    let mut iov = libc::iovec { iov_base: buf.as_ptr() as *mut libc::c_void, iov_len: buf.len() };
    // SAFETY: cmsghdr is plain old data; all-zero is a valid value.
    let mut cmsg = SegmentCmsg { hdr: unsafe { zeroed() }, size: segment, pad: [0; 6] };
    cmsg.hdr.cmsg_len = (size_of::<libc::cmsghdr>() + size_of::<u16>()) as _;
    cmsg.hdr.cmsg_level = libc::SOL_UDP;
    cmsg.hdr.cmsg_type = UDP_SEGMENT;
    // SAFETY: msghdr is plain old data; all-zero is a valid value.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_name = (&mut addr as *mut libc::sockaddr_in).cast();
    msg.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = (&mut cmsg as *mut SegmentCmsg).cast();
    msg.msg_controllen = size_of::<SegmentCmsg>() as _;
    loop {
        // SAFETY: `msg` points at the address, iovec and control message above, all live for
        // the call; the kernel only reads them and `buf`.
        let rc = unsafe { libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT) };
        if rc >= 0 {
            return Ok(rc as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// `setsockopt` with an `int` value.
pub fn set_int_opt(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    v: libc::c_int,
) -> io::Result<()> {
    // SAFETY: the option value is a live `int` of the given size, only read by the kernel.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&v as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    use super::*;

    #[test]
    fn a_burst_each_way_over_loopback() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = match rx.local_addr().unwrap() {
            std::net::SocketAddr::V4(a) => a,
            _ => unreachable!(),
        };
        let mut arrays = MsgArrays::new(4);
        let heads = [[1u8, 2], [3, 4], [5, 6]];
        let bodies: [&[u8]; 3] = [b"alpha", b"beta", b""];
        let sent = arrays
            .send(
                tx.as_raw_fd(),
                heads.iter().zip(bodies).map(|(h, b)| (to, [&h[..1], &h[1..], b])),
            )
            .unwrap();
        assert_eq!(sent, 3);
        let mut bufs = vec![vec![0u8; 64]; 4];
        let mut got = 0;
        for _ in 0..100 {
            got += arrays.recv(rx.as_raw_fd(), bufs[got..].iter_mut().map(|b| &mut b[..])).unwrap();
            if got == 3 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(got, 3);
        assert_eq!(&bufs[0][..7], b"\x01\x02alpha");
        assert_eq!(&bufs[2][..2], b"\x05\x06");
        // Nothing more waiting: no error, no datagram.
        assert_eq!(arrays.recv(rx.as_raw_fd(), bufs.iter_mut().map(|b| &mut b[..])).unwrap(), 0);
        assert_eq!(arrays.send(tx.as_raw_fd(), std::iter::empty()).unwrap(), 0);
    }

    #[test]
    fn received_reports_length_and_sender() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.send_to(b"0123456789", rx.local_addr().unwrap()).unwrap();
        let mut arrays = MsgArrays::new(2);
        let mut buf = [0u8; 4];
        let mut n = 0;
        for _ in 0..100 {
            n = arrays.recv(rx.as_raw_fd(), std::iter::once(&mut buf[..])).unwrap();
            if n > 0 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(n, 1);
        let (len, truncated, from) = arrays.received(0);
        assert_eq!((len, truncated, from), (4, true, Some(Ipv4Addr::LOCALHOST)));
    }

    #[test]
    fn udp_gso_send_arrives_coalesced_with_udp_gro() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        set_int_opt(rx.as_raw_fd(), libc::SOL_UDP, UDP_GRO, 1).unwrap();
        let to = match rx.local_addr().unwrap() {
            std::net::SocketAddr::V4(a) => a,
            _ => unreachable!(),
        };
        let buf: Vec<u8> = (0..3500u32).map(|i| (i % 251) as u8).collect();
        assert_eq!(send_segmented(tx.as_raw_fd(), to, &buf, 1000).unwrap(), 3500);
        let mut arrays = MsgArrays::with_control(4);
        let mut bufs = vec![vec![0u8; 65536]; 4];
        let mut got = Vec::new();
        let mut sizes = Vec::new();
        for _ in 0..100 {
            let n = arrays.recv(rx.as_raw_fd(), bufs.iter_mut().map(|b| &mut b[..])).unwrap();
            for (i, b) in bufs.iter().enumerate().take(n) {
                let (len, truncated, _) = arrays.received(i);
                assert!(!truncated);
                sizes.push((len, arrays.gro_size(i)));
                got.extend_from_slice(&b[..len]);
            }
            if got.len() >= buf.len() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(got, buf);
        // Loopback carries the GSO datagram whole and the UDP_GRO socket gets it as one read.
        assert_eq!(sizes, [(3500, Some(1000))]);
    }

    #[test]
    fn gro_cmsg_parsing_ignores_garbage() {
        assert_eq!(parse_gro_cmsg(&[]), None);
        for n in 0..64 {
            assert_eq!(parse_gro_cmsg(&vec![0xff; n]), None);
            assert_eq!(parse_gro_cmsg(&vec![0; n]), None);
        }
        let hdr = size_of::<libc::cmsghdr>();
        let mut c = vec![0u8; hdr + 8];
        c[..size_of::<usize>()].copy_from_slice(&(hdr + 4).to_ne_bytes());
        c[size_of::<usize>()..size_of::<usize>() + 4].copy_from_slice(&libc::SOL_UDP.to_ne_bytes());
        c[size_of::<usize>() + 4..size_of::<usize>() + 8].copy_from_slice(&UDP_GRO.to_ne_bytes());
        c[hdr..hdr + 4].copy_from_slice(&1472i32.to_ne_bytes());
        assert_eq!(parse_gro_cmsg(&c), Some(1472));
        c[hdr..hdr + 4].copy_from_slice(&(-3i32).to_ne_bytes());
        assert_eq!(parse_gro_cmsg(&c), None);
        // A length running past the buffer.
        c[..size_of::<usize>()].copy_from_slice(&(hdr + 400).to_ne_bytes());
        assert_eq!(parse_gro_cmsg(&c), None);
    }
}
