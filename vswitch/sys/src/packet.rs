//! `AF_PACKET` raw sockets bound to one interface: frames are sent exactly as given and every
//! frame the interface sees is received. For tests that inject and watch frames next to a
//! port (the port modules themselves may not use `unsafe`).
//!
//! [`PacketSocket::watch`] is the other use: a socket that receives nothing but reports an
//! error (`EPOLLERR`) when its interface goes down or away. An AF_XDP socket whose device
//! disappears gets an error too, but its poll then reports no event at all, so a worker
//! waiting on it would never learn; this socket is what wakes it.
//!
//! Like every socket, it lives in the network namespace of the thread that opened it.

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// `ETH_P_ALL`: every protocol.
const ETH_P_ALL: u16 = 0x0003;

/// The protocol a watch socket binds to (IEEE local experimental EtherType 2): binding to
/// some protocol is what makes the kernel report the device's going down to the socket;
/// the filter drops whatever comes.
const WATCH_PROTO: u16 = 0x88b6;

/// A raw packet socket on one interface.
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
}

impl PacketSocket {
    /// Opens a socket bound to the interface with index `ifindex` of the calling thread's
    /// namespace.
    pub fn open(ifindex: u32) -> io::Result<PacketSocket> {
        PacketSocket::bound(ifindex, ETH_P_ALL, false)
    }

    /// Opens a non-blocking socket on `ifindex` (which must be up) that never queues a frame
    /// (a drop-all filter) and becomes readable with an error (`ENETDOWN`) when the
    /// interface goes down or is deleted.
    pub fn watch(ifindex: u32) -> io::Result<PacketSocket> {
        PacketSocket::bound(ifindex, WATCH_PROTO, true)
    }

    fn bound(ifindex: u32, proto: u16, drop_all: bool) -> io::Result<PacketSocket> {
        // SAFETY: plain socket(2); the result is checked and owned at once.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW
                    | libc::SOCK_CLOEXEC
                    | if drop_all { libc::SOCK_NONBLOCK } else { 0 },
                i32::from(proto.to_be()),
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh fd nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        if drop_all {
            // Classic BPF `ret #0`: accept zero bytes of every frame. Attached before bind,
            // so no frame is ever queued.
            let mut insn = [libc::sock_filter { code: 0x06, jt: 0, jf: 0, k: 0 }];
            let prog = libc::sock_fprog { len: 1, filter: insn.as_mut_ptr() };
            // SAFETY: `prog` points at `insn`, one valid instruction; the kernel copies both
            // during the call, and both outlive it.
            let rc = unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_ATTACH_FILTER,
                    (&prog as *const libc::sock_fprog).cast(),
                    size_of::<libc::sock_fprog>() as u32,
                )
            };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        // SAFETY: sockaddr_ll is plain integers; all-zero is a valid value.
        let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sa.sll_family = libc::AF_PACKET as u16;
        sa.sll_protocol = proto.to_be();
        sa.sll_ifindex = ifindex as i32;
        // SAFETY: `sa` is a valid sockaddr_ll and the length passed is its size.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(PacketSocket { fd })
    }

    /// Sends one frame out of the interface.
    pub fn send(&self, frame: &[u8]) -> io::Result<usize> {
        // SAFETY: the buffer is valid for reads of its length during the call.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// Receives one frame (sent or received by the interface) into `buf` without waiting;
    /// `None` when none is queued.
    pub fn try_recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        // SAFETY: the buffer is valid for writes of its length during the call.
        let n = unsafe {
            libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT)
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::WouldBlock { Ok(None) } else { Err(e) };
        }
        Ok(Some(n as usize))
    }
}

impl PacketSocket {
    /// The socket's pending error (`SO_ERROR`, cleared by reading): `ENETDOWN` once its
    /// interface went down or away.
    pub fn take_error(&self) -> Option<io::Error> {
        let mut v: libc::c_int = 0;
        let mut len = size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `v` and `len` are live locals of the sizes the kernel expects for SO_ERROR.
        let rc = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ERROR,
                (&mut v as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        match (rc, v) {
            (0, 0) => None,
            (0, e) => Some(io::Error::from_raw_os_error(e)),
            _ => Some(io::Error::last_os_error()),
        }
    }
}

impl AsRawFd for PacketSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
