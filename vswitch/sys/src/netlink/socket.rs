//! The client: [`Netlink`] owns one `NETLINK_ROUTE` socket and runs the two exchanges every
//! operation is made of, a request answered by an ACK (or the kernel's error) and a dump.
//! Everything that touches the socket is here (and with it this module's `unsafe`); what goes
//! in a request and how a reply reads are [`super::message`]'s and [`super::parse`]'s.

use std::fmt;
use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use super::message::*;
use super::parse::{kernel_error, malformed, parse_ack, Messages};
use crate::netns::NetNs;

// --- Client parameters -------------------------------------------------------------------

/// Receive buffer. The kernel sizes dump datagrams by the reader's buffer, up to 32 KiB;
/// single replies (one link) are far smaller.
const RECV_BUF_LEN: usize = 64 * 1024;
/// How long to wait for a reply before giving up, so a lost reply cannot hang the caller.
/// Generous: requests queue behind the kernel's RTNL lock on a busy node.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// How many times a dump is run when the kernel keeps flagging it as interrupted.
const DUMP_ATTEMPTS: usize = 5;

/// A synchronous rtnetlink client on one `NETLINK_ROUTE` socket, bound to the network
/// namespace it was opened in.
pub struct Netlink {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl fmt::Debug for Netlink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Netlink")
            .field("fd", &self.sock.as_raw_fd())
            .field("seq", &self.seq)
            .finish()
    }
}

impl Netlink {
    /// Opens a client in the calling thread's network namespace.
    pub fn open() -> io::Result<Netlink> {
        let sock = Socket::new(
            Domain::from(libc::AF_NETLINK),
            Type::RAW,
            Some(Protocol::from(libc::NETLINK_ROUTE)),
        )
        .map_err(|e| io::Error::new(e.kind(), format!("cannot open netlink socket: {e}")))?;
        sock.set_read_timeout(Some(REPLY_TIMEOUT))?;
        // Best effort: older kernels answer without the kernel's error text, which is fine.
        // CAP_ACK stops the kernel from echoing our whole request back in error replies.
        let _ = set_netlink_flag(&sock, libc::NETLINK_EXT_ACK);
        let _ = set_netlink_flag(&sock, libc::NETLINK_CAP_ACK);
        Ok(Netlink { sock, seq: 0, buf: vec![0; RECV_BUF_LEN] })
    }

    /// Opens a client whose socket is created inside `ns` (on a short-lived thread that
    /// enters it), so that every request on it concerns `ns`.
    pub fn open_in(ns: &NetNs) -> io::Result<Netlink> {
        ns.run(Netlink::open)?.map_err(|e| {
            io::Error::new(e.kind(), format!("in network namespace {}: {e}", ns.path().display()))
        })
    }

    /// Sends a change request and waits for its ACK.
    pub(super) fn execute(&mut self, req: &Request, what: &str) -> io::Result<()> {
        self.transact(req, what).map(drop)
    }

    /// Sends `req` with `NLM_F_ACK` and reads until the kernel's `NLMSG_ERROR` for it;
    /// returns the (type, payload) of the reply messages that came before.
    pub(super) fn transact(
        &mut self,
        req: &Request,
        what: &str,
    ) -> io::Result<Vec<(u16, Vec<u8>)>> {
        let seq = self.next_seq();
        self.send(&req.finish(seq, NLM_F_ACK), what)?;
        let mut replies = Vec::new();
        loop {
            let n = self.recv(what)?;
            for msg in Messages(&self.buf[..n]) {
                let msg = msg.map_err(|e| malformed(what, e))?;
                if msg.seq != seq {
                    continue;
                }
                match msg.ty {
                    NLMSG_ERROR => return parse_ack(&msg, what).map(|()| replies),
                    NLMSG_DONE => return Ok(replies),
                    NLMSG_NOOP => {}
                    NLMSG_OVERRUN => return Err(malformed(what, "NLMSG_OVERRUN")),
                    ty => replies.push((ty, msg.payload.to_vec())),
                }
            }
        }
    }

    /// Runs a dump request, parsing each message with `parse` (messages it returns `None`
    /// for are skipped); retries when the kernel reports the dump as interrupted.
    pub(super) fn dump<T>(
        &mut self,
        req: &Request,
        what: &str,
        mut parse: impl FnMut(u16, &[u8]) -> Option<T>,
    ) -> io::Result<Vec<T>> {
        for _ in 0..DUMP_ATTEMPTS {
            let seq = self.next_seq();
            self.send(&req.finish(seq, 0), what)?;
            let mut out = Vec::new();
            let mut interrupted = false;
            'recv: loop {
                let n = self.recv(what)?;
                for msg in Messages(&self.buf[..n]) {
                    let msg = msg.map_err(|e| malformed(what, e))?;
                    if msg.seq != seq {
                        continue;
                    }
                    interrupted |= msg.flags & NLM_F_DUMP_INTR != 0;
                    match msg.ty {
                        NLMSG_DONE => {
                            // The payload is an int: 0, or a negative errno if the dump failed.
                            let err = i32_at(msg.payload, 0).unwrap_or(0);
                            if err < 0 {
                                return Err(kernel_error(what, err.wrapping_neg(), None));
                            }
                            break 'recv;
                        }
                        NLMSG_ERROR => {
                            parse_ack(&msg, what)?;
                            break 'recv;
                        }
                        NLMSG_NOOP => {}
                        NLMSG_OVERRUN => return Err(malformed(what, "NLMSG_OVERRUN")),
                        ty => {
                            if !interrupted {
                                out.extend(parse(ty, msg.payload));
                            }
                        }
                    }
                }
            }
            if !interrupted {
                return Ok(out);
            }
        }
        Err(io::Error::other(format!(
            "netlink {what}: interrupted by concurrent changes {DUMP_ATTEMPTS} times in a row"
        )))
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1).max(1);
        self.seq
    }

    fn send(&self, msg: &[u8], what: &str) -> io::Result<()> {
        loop {
            match self.sock.send(msg) {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(io::Error::new(e.kind(), format!("netlink {what}: send: {e}")))
                }
            }
        }
    }

    /// Receives one datagram into `self.buf`, returning its length.
    fn recv(&mut self, what: &str) -> io::Result<usize> {
        loop {
            // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the whole call, and
            // the fd is owned by `sock`. MSG_TRUNC makes the return value the datagram's full
            // length even when it did not fit, which we check below.
            let n = unsafe {
                libc::recv(
                    self.sock.as_raw_fd(),
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                    libc::MSG_TRUNC,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                return Err(match e.kind() {
                    io::ErrorKind::Interrupted => continue,
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("netlink {what}: no reply within {}s", REPLY_TIMEOUT.as_secs()),
                    ),
                    kind => io::Error::new(kind, format!("netlink {what}: recv: {e}")),
                });
            }
            let n = n as usize;
            if n > self.buf.len() {
                return Err(malformed(
                    what,
                    format!("a {n}-byte reply overflowed the {}-byte buffer", self.buf.len()),
                ));
            }
            return Ok(n);
        }
    }
}

fn set_netlink_flag(sock: &Socket, option: libc::c_int) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: the option value points at `one`, a live `int` of the length passed, and the
    // fd is owned by `sock`.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_NETLINK,
            option,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::test_support::{link, needs_root, test_ns};

    #[test]
    fn errors_name_the_operation() {
        needs_root!();
        let ns = test_ns();
        let mut nl = Netlink::open_in(&ns).unwrap();
        let e = nl.link_set_mtu(4242, 1500).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
        assert!(e.to_string().starts_with("netlink RTM_SETLINK ifindex 4242 mtu 1500: "), "{e}");
        let e = nl.link_del(4242).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
        assert!(e.to_string().starts_with("netlink RTM_DELLINK ifindex 4242: "), "{e}");
        let e = nl.link_set_master(1, Some(4242)).unwrap_err();
        assert!(e.to_string().contains("master ifindex 4242"), "{e}");
        // lo is not a bridge: the kernel refuses, with its reason when it gives one.
        nl.veth_add("m0", "m1", None).unwrap();
        let m0 = link(&mut nl, "m0").index;
        let e = nl.link_set_master(m0, Some(1)).unwrap_err();
        assert!(e.to_string().starts_with(&format!("netlink RTM_SETLINK ifindex {m0} master")));
        // The socket is still in step after errors.
        assert_eq!(nl.link_list().unwrap().len(), 3);
    }
}
