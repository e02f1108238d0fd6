//! A small synchronous rtnetlink client: the links, IPv4 addresses and IPv4 routes that
//! podswitch needs to build a pod port (veth or TAP into the pod's namespace, renamed to
//! `eth0`, addressed, routed) and to inspect what is there.
//!
//! Why speak netlink directly rather than run `ip`: adding a port is on the CNI `ADD` path,
//! which the kubelet waits on for every pod start. One port takes a dozen link, address and
//! route changes; as netlink requests on one socket that is a dozen syscall round trips, as
//! `ip` invocations it is a dozen fork/execs plus output parsing. It also means the node
//! needs no `iproute2` binary, and errors arrive as errno values, not as text to scrape.
//!
//! The protocol, as used here: [`Netlink`] owns one `NETLINK_ROUTE` socket. Every change is
//! a single request carrying `NLM_F_REQUEST | NLM_F_ACK` and a fresh sequence number; the
//! kernel answers with any reply messages (for a `GET`), then an `NLMSG_ERROR` message with
//! that sequence number, whose error field is 0 for success (the ACK) or a negative errno.
//! We read until that message arrives. Listings are dumps (`NLM_F_DUMP`): the kernel streams
//! multi-part messages ending with `NLMSG_DONE`. If the table changed during the dump the
//! kernel flags the messages `NLM_F_DUMP_INTR` and we run the dump again, a few times at
//! most. Messages carrying any other sequence number (a late reply to an abandoned request)
//! are skipped. Extended ACKs are requested, so a kernel error comes with the kernel's own
//! explanation when it gives one.
//!
//! A socket is bound to the network namespace it was created in, for its whole life:
//! [`Netlink::open_in`] creates it inside another namespace, and from then on every request
//! on it concerns that namespace, whatever thread sends it.
//!
//! Every error is an [`io::Error`](std::io::Error) whose kind follows the kernel's errno
//! (`AlreadyExists` for `EEXIST`, `NotFound` for `ENODEV`/`ESRCH`/`ENOENT`, ...) and whose
//! message names the request and its arguments. Replies are parsed with bounds checks
//! throughout: a malformed message yields an `InvalidData` error or a skipped attribute,
//! never a panic.
//!
//! Layout: the byte-level work is pure and separate from the socket, so it can be tested
//! (and proptested) without a kernel.
//!
//! - `socket`: the [`Netlink`] client itself, its socket and the request/ACK and dump
//!   exchanges (the only `unsafe` here outside test code).
//! - `message`: the wire format (kernel ABI constants, fixed headers) and the request
//!   builder.
//! - `parse`: the reply parsers (messages, attributes, ACKs, links, addresses, routes).
//! - `link`, `addr`, `route`: the operations on each object and what they report.
//! - `validate`: argument checks shared by the operations, done before anything is sent.

mod addr;
mod info;
mod link;
mod message;
mod parse;
mod route;
mod socket;
#[cfg(test)]
mod test_support;
mod validate;

pub use info::{AddrInfo, LinkInfo, RouteInfo};
pub use link::MAX_QUEUES;
pub use socket::Netlink;
