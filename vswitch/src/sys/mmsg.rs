//! Batched datagram I/O: `recvmmsg` and `sendmmsg` over message arrays allocated once, so a
//! burst of datagrams costs one syscall each way and no allocation.
//!
//! The arrays hold raw pointers into the caller's buffers only for the duration of one call;
//! between calls they are stale and never read.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::RawFd;

/// Message arrays for up to `capacity` datagrams per call, with up to three buffer pieces
/// each (outer headers, inner headers, payload: sent without joining them).
#[derive(Debug)]
pub struct MsgArrays {
    hdrs: Vec<libc::mmsghdr>,
    iovs: Vec<[libc::iovec; 3]>,
    addrs: Vec<libc::sockaddr_in>,
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
        }
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
            h.msg_hdr.msg_control = std::ptr::null_mut();
            h.msg_hdr.msg_controllen = 0;
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
}
