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
//! Every error is an [`io::Error`] whose kind follows the kernel's errno (`AlreadyExists` for
//! `EEXIST`, `NotFound` for `ENODEV`/`ESRCH`/`ENOENT`, ...) and whose message names the
//! request and its arguments. Replies are parsed with bounds checks throughout: a malformed
//! message yields an `InvalidData` error or a skipped attribute, never a panic.

use std::fmt;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use super::netns::NetNs;
use super::tun::validate_ifname;

// --- Kernel ABI --------------------------------------------------------------------------
// Messages are encoded and decoded by hand, field by field in native byte order, rather than
// through `repr(C)` structs: no unsafe, and every read is bounds-checked.

/// `struct nlmsghdr` (`<linux/netlink.h>`): len u32, type u16, flags u16, seq u32, pid u32.
const NLMSG_HDRLEN: usize = std::mem::size_of::<libc::nlmsghdr>();
/// `struct ifinfomsg` (`<linux/rtnetlink.h>`): family u8, pad u8, type u16, index i32,
/// flags u32, change u32.
const IFINFOMSG_LEN: usize = std::mem::size_of::<libc::ifinfomsg>();
/// `struct ifaddrmsg` (`<linux/if_addr.h>`): family, prefixlen, flags, scope (u8), index u32.
const IFADDRMSG_LEN: usize = std::mem::size_of::<libc::ifaddrmsg>();
/// `struct rtmsg` (`<linux/rtnetlink.h>`, not in libc): family, dst_len, src_len, tos, table,
/// protocol, scope, type (all u8), then flags u32.
const RTMSG_LEN: usize = 12;
/// `struct rtattr` / `struct nlattr` header: len u16, type u16.
const RTA_HDRLEN: usize = 4;

/// `VETH_INFO_PEER` from `<linux/veth.h>` (not in libc): the peer's `ifinfomsg` and
/// attributes, nested in `IFLA_INFO_DATA` of a veth.
const VETH_INFO_PEER: u16 = 1;
/// `IFLA_NUM_TX_QUEUES` and `IFLA_NUM_RX_QUEUES` (`<linux/if_link.h>`; in libc for Android
/// only): a new link's queue counts.
const IFLA_NUM_TX_QUEUES: u16 = 31;
const IFLA_NUM_RX_QUEUES: u16 = 32;
/// `IFLA_STATS64` (`<linux/if_link.h>`).
const IFLA_STATS64: u16 = 23;
/// `IFLA_XDP` and, nested in it, `IFLA_XDP_PROG_ID` (`<linux/if_link.h>`).
const IFLA_XDP: u16 = 43;
const IFLA_XDP_PROG_ID: u16 = 4;
/// `NLMSGERR_ATTR_MSG` from `<linux/netlink.h>` (not in libc): the extended ACK's text.
const NLMSGERR_ATTR_MSG: u16 = 1;

const NLM_F_REQUEST: u16 = libc::NLM_F_REQUEST as u16;
const NLM_F_ACK: u16 = libc::NLM_F_ACK as u16;
const NLM_F_DUMP: u16 = libc::NLM_F_DUMP as u16;
const NLM_F_DUMP_INTR: u16 = libc::NLM_F_DUMP_INTR as u16;
const NLM_F_CREATE: u16 = libc::NLM_F_CREATE as u16;
const NLM_F_EXCL: u16 = libc::NLM_F_EXCL as u16;
const NLM_F_CAPPED: u16 = libc::NLM_F_CAPPED as u16;
const NLM_F_ACK_TLVS: u16 = libc::NLM_F_ACK_TLVS as u16;
const NLMSG_NOOP: u16 = libc::NLMSG_NOOP as u16;
const NLMSG_ERROR: u16 = libc::NLMSG_ERROR as u16;
const NLMSG_DONE: u16 = libc::NLMSG_DONE as u16;
const NLMSG_OVERRUN: u16 = libc::NLMSG_OVERRUN as u16;
const NLA_TYPE_MASK: u16 = libc::NLA_TYPE_MASK as u16;
const AF_INET: u8 = libc::AF_INET as u8;

// --- Client parameters -------------------------------------------------------------------

/// Receive buffer. The kernel sizes dump datagrams by the reader's buffer, up to 32 KiB;
/// single replies (one link) are far smaller.
const RECV_BUF_LEN: usize = 64 * 1024;
/// How long to wait for a reply before giving up, so a lost reply cannot hang the caller.
/// Generous: requests queue behind the kernel's RTNL lock on a busy node.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// How many times a dump is run when the kernel keeps flagging it as interrupted.
const DUMP_ATTEMPTS: usize = 5;
/// The most queues a link can have (the kernel's limit in `rtnl_create_link`).
pub const MAX_QUEUES: u32 = 4096;
/// The smallest MTU accepted: the IPv4 minimum (RFC 791).
const MIN_MTU: u32 = 68;

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

/// One link as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    /// The interface index (`ifindex`), unique within its namespace.
    pub index: u32,
    /// The interface name.
    pub name: String,
    /// The Ethernet address, for links that have a 6-byte one (`IFLA_ADDRESS`).
    pub mac: Option<[u8; 6]>,
    /// The MTU (`IFLA_MTU`).
    pub mtu: u32,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    /// Up with carrier (`IFF_LOWER_UP`): a veth whose peer is up, a TAP with an open fd.
    pub running: bool,
    /// The index of the bridge (or other master) this link is enslaved to (`IFLA_MASTER`).
    pub master: Option<u32>,
    /// The link type (`IFLA_INFO_KIND`): `"veth"`, `"bridge"`, `"tun"`; `None` for links
    /// without one, such as `lo` or physical NICs.
    pub kind: Option<String>,
    /// The id of the XDP program attached to the link, in any mode (`IFLA_XDP_PROG_ID`
    /// inside `IFLA_XDP`); `None` when there is none.
    pub xdp_prog_id: Option<u32>,
    /// Packets the device dropped on transmit (`tx_dropped` of `IFLA_STATS64`): for a TAP,
    /// frames its namespace sent that found the queue to the reader full.
    pub tx_dropped: u64,
}

/// One IPv4 address as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddrInfo {
    /// The index of the interface carrying it.
    pub index: u32,
    /// The local address (`IFA_LOCAL`).
    pub addr: Ipv4Addr,
    /// The prefix length of its subnet.
    pub prefix_len: u8,
}

/// One IPv4 unicast route of the main table as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteInfo {
    /// The destination network (`0.0.0.0` for the default route).
    pub dst: Ipv4Addr,
    /// The destination prefix length.
    pub prefix_len: u8,
    /// The next hop (`RTA_GATEWAY`), `None` for a directly connected destination.
    pub gateway: Option<Ipv4Addr>,
    /// The output interface index (`RTA_OIF`); `None` for multipath routes.
    pub oif: Option<u32>,
    /// The routing table (always `RT_TABLE_MAIN`, 254, in [`Netlink::route_list`]).
    pub table: u32,
    /// The scope (`RT_SCOPE_*`): 0 universe, 253 link, 254 host.
    pub scope: u8,
    /// Who installed it (`RTPROT_*`): 2 kernel, 3 boot, 4 static.
    pub protocol: u8,
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

    /// The link named `name`, or `None` if there is none.
    pub fn link_get(&mut self, name: &str) -> io::Result<Option<LinkInfo>> {
        validate_ifname(name)?;
        let mut req = Request::new(libc::RTM_GETLINK, 0);
        req.push(&ifinfomsg(0, 0, 0));
        req.attr_str(libc::IFLA_IFNAME, name);
        req.attr_u32(libc::IFLA_EXT_MASK, libc::RTEXT_FILTER_SKIP_STATS as u32);
        self.get_link(req, &format!("RTM_GETLINK {name}"))
    }

    /// The link with interface index `index`, or `None` if there is none.
    pub fn link_by_index(&mut self, index: u32) -> io::Result<Option<LinkInfo>> {
        check_index(index)?;
        let mut req = Request::new(libc::RTM_GETLINK, 0);
        req.push(&ifinfomsg(index, 0, 0));
        req.attr_u32(libc::IFLA_EXT_MASK, libc::RTEXT_FILTER_SKIP_STATS as u32);
        self.get_link(req, &format!("RTM_GETLINK ifindex {index}"))
    }

    /// All links of the namespace, in the kernel's order (by index).
    pub fn link_list(&mut self) -> io::Result<Vec<LinkInfo>> {
        let mut req = Request::new(libc::RTM_GETLINK, NLM_F_DUMP);
        req.push(&ifinfomsg(0, 0, 0));
        req.attr_u32(libc::IFLA_EXT_MASK, libc::RTEXT_FILTER_SKIP_STATS as u32);
        self.dump(&req, "RTM_GETLINK dump", |ty, payload| {
            (ty == libc::RTM_NEWLINK).then(|| parse_link(payload)).flatten()
        })
    }

    /// Sets a link administratively up or down (`IFF_UP`).
    pub fn link_set_up(&mut self, index: u32, up: bool) -> io::Result<()> {
        check_index(index)?;
        let iff_up = libc::IFF_UP as u32;
        let mut req = Request::new(libc::RTM_SETLINK, 0);
        req.push(&ifinfomsg(index, if up { iff_up } else { 0 }, iff_up));
        let state = if up { "up" } else { "down" };
        self.execute(&req, &format!("RTM_SETLINK ifindex {index} {state}"))
    }

    /// Sets a link's MTU (at least 68).
    pub fn link_set_mtu(&mut self, index: u32, mtu: u32) -> io::Result<()> {
        check_index(index)?;
        if mtu < MIN_MTU {
            return Err(invalid(format!("invalid mtu {mtu}: must be at least {MIN_MTU}")));
        }
        let mut req = Request::new(libc::RTM_SETLINK, 0);
        req.push(&ifinfomsg(index, 0, 0));
        req.attr_u32(libc::IFLA_MTU, mtu);
        self.execute(&req, &format!("RTM_SETLINK ifindex {index} mtu {mtu}"))
    }

    /// Sets a link's Ethernet address.
    pub fn link_set_mac(&mut self, index: u32, mac: [u8; 6]) -> io::Result<()> {
        check_index(index)?;
        let mut req = Request::new(libc::RTM_SETLINK, 0);
        req.push(&ifinfomsg(index, 0, 0));
        req.attr(libc::IFLA_ADDRESS, &mac);
        self.execute(&req, &format!("RTM_SETLINK ifindex {index} address {}", MacFmt(mac)))
    }

    /// Renames a link. Kernels before 6.6 refuse (`ResourceBusy`) while the link is up, so
    /// rename links while they are down.
    pub fn link_set_name(&mut self, index: u32, name: &str) -> io::Result<()> {
        check_index(index)?;
        validate_ifname(name)?;
        let mut req = Request::new(libc::RTM_SETLINK, 0);
        req.push(&ifinfomsg(index, 0, 0));
        req.attr_str(libc::IFLA_IFNAME, name);
        self.execute(&req, &format!("RTM_SETLINK ifindex {index} name {name}"))
    }

    /// Moves a link into `ns`, renaming it there in the same request (`IFLA_NET_NS_FD` +
    /// `IFLA_IFNAME`) so a name that exists only in the target (e.g. `eth0`) is no conflict
    /// here. The link gets a new index in `ns`; look it up there by name.
    pub fn link_move_to_netns(
        &mut self,
        index: u32,
        ns: &NetNs,
        new_name: Option<&str>,
    ) -> io::Result<()> {
        check_index(index)?;
        if let Some(name) = new_name {
            validate_ifname(name)?;
        }
        let mut req = Request::new(libc::RTM_SETLINK, 0);
        req.push(&ifinfomsg(index, 0, 0));
        req.attr_u32(libc::IFLA_NET_NS_FD, ns.as_fd().as_raw_fd() as u32);
        let mut what = format!("RTM_SETLINK ifindex {index} netns {}", ns.path().display());
        if let Some(name) = new_name {
            req.attr_str(libc::IFLA_IFNAME, name);
            what.push_str(&format!(" name {name}"));
        }
        self.execute(&req, &what)
    }

    /// Enslaves a link to a bridge (`Some(bridge index)`) or releases it (`None`).
    pub fn link_set_master(&mut self, index: u32, master: Option<u32>) -> io::Result<()> {
        check_index(index)?;
        if let Some(m) = master {
            check_index(m)?;
        }
        let mut req = Request::new(libc::RTM_SETLINK, 0);
        req.push(&ifinfomsg(index, 0, 0));
        req.attr_u32(libc::IFLA_MASTER, master.unwrap_or(0));
        let what = match master {
            Some(m) => format!("RTM_SETLINK ifindex {index} master ifindex {m}"),
            None => format!("RTM_SETLINK ifindex {index} nomaster"),
        };
        self.execute(&req, &what)
    }

    /// Deletes a link (both ends, for a veth).
    pub fn link_del(&mut self, index: u32) -> io::Result<()> {
        check_index(index)?;
        let mut req = Request::new(libc::RTM_DELLINK, 0);
        req.push(&ifinfomsg(index, 0, 0));
        self.execute(&req, &format!("RTM_DELLINK ifindex {index}"))
    }

    /// Creates a veth pair; the peer end may be created directly inside another namespace
    /// (`VETH_INFO_PEER` with `IFLA_NET_NS_FD`). Both ends start down. Fails with
    /// `AlreadyExists` if either name is taken in the namespace it would live in.
    ///
    /// Each end gets the kernel's default queues: room for one per possible CPU, one in use.
    pub fn veth_add(
        &mut self,
        name: &str,
        peer_name: &str,
        peer_ns: Option<&NetNs>,
    ) -> io::Result<()> {
        self.veth_add_queues(name, peer_name, peer_ns, 1)
    }

    /// [`Netlink::veth_add`] with `queues` rx and tx queues in use on both ends
    /// (`IFLA_NUM_TX_QUEUES` and `IFLA_NUM_RX_QUEUES` on the link and, inside
    /// `VETH_INFO_PEER`, on the peer). veth hands a frame sent on queue `k` of one end to rx
    /// queue `k` of the other, so an end needs at least as many rx queues as its peer has tx
    /// queues for native XDP to attach, and an AF_XDP socket can only bind to a queue in
    /// use.
    ///
    /// `queues = 1` sends neither attribute and is exactly [`Netlink::veth_add`]: the kernel
    /// then allocates a queue per possible CPU but uses one, and
    /// `ethtool -L` can raise it later. `queues` must be `1..=`[`MAX_QUEUES`].
    pub fn veth_add_queues(
        &mut self,
        name: &str,
        peer_name: &str,
        peer_ns: Option<&NetNs>,
        queues: u32,
    ) -> io::Result<()> {
        validate_ifname(name)?;
        validate_ifname(peer_name)?;
        check_queues(queues)?;
        let peer_ns_fd = peer_ns.map(|ns| ns.as_fd().as_raw_fd() as u32);
        let req = veth_request(name, peer_name, peer_ns_fd, queues);
        let mut what = format!("RTM_NEWLINK veth {name} peer {peer_name}");
        if let Some(ns) = peer_ns {
            what.push_str(&format!(" in netns {}", ns.path().display()));
        }
        if queues > 1 {
            what.push_str(&format!(" with {queues} queues"));
        }
        self.execute(&req, &what)
    }

    /// Creates a bridge (down, no ports). Fails with `AlreadyExists` if the name is taken.
    pub fn bridge_add(&mut self, name: &str) -> io::Result<()> {
        validate_ifname(name)?;
        let mut req = Request::new(libc::RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL);
        req.push(&ifinfomsg(0, 0, 0));
        req.attr_str(libc::IFLA_IFNAME, name);
        let linkinfo = req.begin_nested(libc::IFLA_LINKINFO);
        req.attr_str(libc::IFLA_INFO_KIND, "bridge");
        req.end_nested(linkinfo);
        self.execute(&req, &format!("RTM_NEWLINK bridge {name}"))
    }

    /// Adds `addr/prefix_len` to a link (`IFA_LOCAL` and `IFA_ADDRESS`, with the subnet's
    /// broadcast address for prefixes up to /30). Fails with `AlreadyExists` if the link
    /// already has that address.
    pub fn addr_add(&mut self, index: u32, addr: Ipv4Addr, prefix_len: u8) -> io::Result<()> {
        check_index(index)?;
        check_prefix_len(addr, prefix_len)?;
        let scope = if addr.is_loopback() { libc::RT_SCOPE_HOST } else { libc::RT_SCOPE_UNIVERSE };
        let mut req = Request::new(libc::RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL);
        req.push(&ifaddrmsg(index, prefix_len, scope));
        req.attr(libc::IFA_LOCAL, &addr.octets());
        req.attr(libc::IFA_ADDRESS, &addr.octets());
        if prefix_len < 31 {
            let broadcast = u32::from(addr) | !prefix_mask(prefix_len);
            req.attr(libc::IFA_BROADCAST, &broadcast.to_be_bytes());
        }
        self.execute(&req, &format!("RTM_NEWADDR {addr}/{prefix_len} on ifindex {index}"))
    }

    /// Removes `addr/prefix_len` from a link. Fails with `AddrNotAvailable` if it has no
    /// such address.
    pub fn addr_del(&mut self, index: u32, addr: Ipv4Addr, prefix_len: u8) -> io::Result<()> {
        check_index(index)?;
        check_prefix_len(addr, prefix_len)?;
        let mut req = Request::new(libc::RTM_DELADDR, 0);
        req.push(&ifaddrmsg(index, prefix_len, 0));
        req.attr(libc::IFA_LOCAL, &addr.octets());
        req.attr(libc::IFA_ADDRESS, &addr.octets());
        self.execute(&req, &format!("RTM_DELADDR {addr}/{prefix_len} on ifindex {index}"))
    }

    /// The IPv4 addresses of one link (`Some(index)`) or of all links (`None`).
    pub fn addr_list(&mut self, index: Option<u32>) -> io::Result<Vec<AddrInfo>> {
        let mut req = Request::new(libc::RTM_GETADDR, NLM_F_DUMP);
        req.push(&ifaddrmsg(0, 0, 0));
        let addrs = self.dump(&req, "RTM_GETADDR dump", |ty, payload| {
            (ty == libc::RTM_NEWADDR).then(|| parse_addr(payload)).flatten()
        })?;
        Ok(addrs.into_iter().filter(|a| index.is_none_or(|i| a.index == i)).collect())
    }

    /// Adds an IPv4 route in the main table: `dst/prefix_len [via gateway] dev oif`; scope
    /// link when there is no gateway, universe otherwise; protocol static. `dst` must have
    /// no bits set beyond the prefix. Fails with `AlreadyExists` if the route exists.
    pub fn route_add(
        &mut self,
        dst: Ipv4Addr,
        prefix_len: u8,
        gateway: Option<Ipv4Addr>,
        oif: u32,
    ) -> io::Result<()> {
        check_route_dst(dst, prefix_len)?;
        check_index(oif)?;
        let scope = if gateway.is_some() { libc::RT_SCOPE_UNIVERSE } else { libc::RT_SCOPE_LINK };
        let mut req = Request::new(libc::RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL);
        req.push(&rtmsg(prefix_len, libc::RTPROT_STATIC, scope, libc::RTN_UNICAST));
        route_attrs(&mut req, dst, prefix_len, gateway, Some(oif));
        let what = route_what("RTM_NEWROUTE", dst, prefix_len, gateway, Some(oif));
        self.execute(&req, &what)
    }

    /// Deletes an IPv4 route of the main table. `gateway` and `oif`, when given, must match
    /// too; otherwise the first route to `dst/prefix_len` goes. Fails with `NotFound` if
    /// nothing matches.
    pub fn route_del(
        &mut self,
        dst: Ipv4Addr,
        prefix_len: u8,
        gateway: Option<Ipv4Addr>,
        oif: Option<u32>,
    ) -> io::Result<()> {
        check_route_dst(dst, prefix_len)?;
        if let Some(i) = oif {
            check_index(i)?;
        }
        let mut req = Request::new(libc::RTM_DELROUTE, 0);
        // Protocol and type 0 and scope "nowhere" are the kernel's wildcards for a delete.
        req.push(&rtmsg(prefix_len, libc::RTPROT_UNSPEC, libc::RT_SCOPE_NOWHERE, libc::RTN_UNSPEC));
        route_attrs(&mut req, dst, prefix_len, gateway, oif);
        let what = route_what("RTM_DELROUTE", dst, prefix_len, gateway, oif);
        self.execute(&req, &what)
    }

    /// The IPv4 unicast routes of the main table.
    pub fn route_list(&mut self) -> io::Result<Vec<RouteInfo>> {
        let mut req = Request::new(libc::RTM_GETROUTE, NLM_F_DUMP);
        req.push(&rtmsg(0, 0, 0, 0));
        let routes = self.dump(&req, "RTM_GETROUTE dump", |ty, payload| {
            (ty == libc::RTM_NEWROUTE).then(|| parse_route(payload)).flatten()
        })?;
        Ok(routes.into_iter().filter(|r| r.table == u32::from(libc::RT_TABLE_MAIN)).collect())
    }

    // --- Transport -----------------------------------------------------------------------

    /// Runs a link `GET` request: the reply's link, or `None` if the kernel says `ENODEV`.
    fn get_link(&mut self, req: Request, what: &str) -> io::Result<Option<LinkInfo>> {
        let replies = match self.transact(&req, what) {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        replies
            .iter()
            .find(|(ty, _)| *ty == libc::RTM_NEWLINK)
            .and_then(|(_, payload)| parse_link(payload))
            .map(Some)
            .ok_or_else(|| malformed(what, "no valid RTM_NEWLINK in the reply"))
    }

    /// Sends a change request and waits for its ACK.
    fn execute(&mut self, req: &Request, what: &str) -> io::Result<()> {
        self.transact(req, what).map(drop)
    }

    /// Sends `req` with `NLM_F_ACK` and reads until the kernel's `NLMSG_ERROR` for it;
    /// returns the (type, payload) of the reply messages that came before.
    fn transact(&mut self, req: &Request, what: &str) -> io::Result<Vec<(u16, Vec<u8>)>> {
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
    fn dump<T>(
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

// --- Requests ----------------------------------------------------------------------------

/// A request under construction: header, fixed part, attributes. The header's length,
/// sequence number and final flags are filled in by [`Request::finish`].
#[derive(Debug, Clone)]
struct Request {
    buf: Vec<u8>,
}

impl Request {
    fn new(ty: u16, flags: u16) -> Request {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // length, set by finish
        buf.extend_from_slice(&ty.to_ne_bytes());
        buf.extend_from_slice(&(NLM_F_REQUEST | flags).to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // sequence number, set by finish
        buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: 0, the kernel fills it in
        Request { buf }
    }

    /// Appends raw bytes (a fixed header) padded to 4 bytes.
    fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        self.buf.resize(align4(self.buf.len()), 0);
    }

    fn attr(&mut self, ty: u16, payload: &[u8]) {
        // Our attributes are a few bytes each, far from the 64 KiB an rtattr can describe.
        self.buf.extend_from_slice(&((RTA_HDRLEN + payload.len()) as u16).to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.push(payload);
    }

    fn attr_u32(&mut self, ty: u16, value: u32) {
        self.attr(ty, &value.to_ne_bytes());
    }

    /// A NUL-terminated string attribute.
    fn attr_str(&mut self, ty: u16, s: &str) {
        let mut bytes = Vec::with_capacity(s.len() + 1);
        bytes.extend_from_slice(s.as_bytes());
        bytes.push(0);
        self.attr(ty, &bytes);
    }

    /// Starts a nested attribute; returns its offset for [`Request::end_nested`].
    fn begin_nested(&mut self, ty: u16) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        start
    }

    fn end_nested(&mut self, start: usize) {
        let len = (self.buf.len() - start) as u16;
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    }

    /// The finished message, with `extra_flags` added to the header's.
    fn finish(&self, seq: u32, extra_flags: u16) -> Vec<u8> {
        let mut msg = self.buf.clone();
        let len = msg.len() as u32;
        msg[0..4].copy_from_slice(&len.to_ne_bytes());
        let flags = u16_at(&msg, 6).unwrap_or(0) | extra_flags;
        msg[6..8].copy_from_slice(&flags.to_ne_bytes());
        msg[8..12].copy_from_slice(&seq.to_ne_bytes());
        msg
    }
}

fn ifinfomsg(index: u32, flags: u32, change: u32) -> [u8; IFINFOMSG_LEN] {
    let mut m = [0u8; IFINFOMSG_LEN];
    // family AF_UNSPEC, padding and device type stay 0.
    m[4..8].copy_from_slice(&index.to_ne_bytes());
    m[8..12].copy_from_slice(&flags.to_ne_bytes());
    m[12..16].copy_from_slice(&change.to_ne_bytes());
    m
}

/// The `RTM_NEWLINK` request creating a veth pair; the queue attributes only when
/// `queues > 1` (see [`Netlink::veth_add_queues`]).
fn veth_request(name: &str, peer_name: &str, peer_ns_fd: Option<u32>, queues: u32) -> Request {
    let mut req = Request::new(libc::RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL);
    req.push(&ifinfomsg(0, 0, 0));
    req.attr_str(libc::IFLA_IFNAME, name);
    if queues > 1 {
        req.attr_u32(IFLA_NUM_TX_QUEUES, queues);
        req.attr_u32(IFLA_NUM_RX_QUEUES, queues);
    }
    let linkinfo = req.begin_nested(libc::IFLA_LINKINFO);
    req.attr_str(libc::IFLA_INFO_KIND, "veth");
    let data = req.begin_nested(libc::IFLA_INFO_DATA);
    let peer = req.begin_nested(VETH_INFO_PEER);
    req.push(&ifinfomsg(0, 0, 0));
    req.attr_str(libc::IFLA_IFNAME, peer_name);
    if let Some(fd) = peer_ns_fd {
        req.attr_u32(libc::IFLA_NET_NS_FD, fd);
    }
    if queues > 1 {
        req.attr_u32(IFLA_NUM_TX_QUEUES, queues);
        req.attr_u32(IFLA_NUM_RX_QUEUES, queues);
    }
    req.end_nested(peer);
    req.end_nested(data);
    req.end_nested(linkinfo);
    req
}

fn ifaddrmsg(index: u32, prefix_len: u8, scope: u8) -> [u8; IFADDRMSG_LEN] {
    let mut m = [0u8; IFADDRMSG_LEN];
    m[0] = AF_INET;
    m[1] = prefix_len;
    m[3] = scope;
    m[4..8].copy_from_slice(&index.to_ne_bytes());
    m
}

fn rtmsg(dst_len: u8, protocol: u8, scope: u8, rtype: u8) -> [u8; RTMSG_LEN] {
    let mut m = [0u8; RTMSG_LEN];
    m[0] = AF_INET;
    m[1] = dst_len;
    m[4] = libc::RT_TABLE_MAIN;
    m[5] = protocol;
    m[6] = scope;
    m[7] = rtype;
    m
}

/// The attributes shared by route add and delete.
fn route_attrs(
    req: &mut Request,
    dst: Ipv4Addr,
    prefix_len: u8,
    gateway: Option<Ipv4Addr>,
    oif: Option<u32>,
) {
    if prefix_len > 0 {
        req.attr(libc::RTA_DST, &dst.octets());
    }
    if let Some(gw) = gateway {
        req.attr(libc::RTA_GATEWAY, &gw.octets());
    }
    if let Some(i) = oif {
        req.attr_u32(libc::RTA_OIF, i);
    }
    req.attr_u32(libc::RTA_TABLE, u32::from(libc::RT_TABLE_MAIN));
}

fn route_what(
    op: &str,
    dst: Ipv4Addr,
    prefix_len: u8,
    gateway: Option<Ipv4Addr>,
    oif: Option<u32>,
) -> String {
    let mut what = format!("{op} {dst}/{prefix_len}");
    if let Some(gw) = gateway {
        what.push_str(&format!(" via {gw}"));
    }
    if let Some(i) = oif {
        what.push_str(&format!(" dev ifindex {i}"));
    }
    what
}

// --- Input validation --------------------------------------------------------------------

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

fn check_index(index: u32) -> io::Result<()> {
    // The kernel's ifindex is a positive `int`.
    if index == 0 || index > i32::MAX as u32 {
        return Err(invalid(format!("invalid ifindex {index}: must be 1..={}", i32::MAX)));
    }
    Ok(())
}

fn check_queues(queues: u32) -> io::Result<()> {
    if queues == 0 || queues > MAX_QUEUES {
        return Err(invalid(format!("invalid queues {queues}: must be 1..={MAX_QUEUES}")));
    }
    Ok(())
}

fn check_prefix_len(addr: Ipv4Addr, prefix_len: u8) -> io::Result<()> {
    if prefix_len > 32 {
        return Err(invalid(format!(
            "invalid prefix_len {prefix_len} for {addr}: must be at most 32"
        )));
    }
    Ok(())
}

fn check_route_dst(dst: Ipv4Addr, prefix_len: u8) -> io::Result<()> {
    check_prefix_len(dst, prefix_len)?;
    if u32::from(dst) & !prefix_mask(prefix_len) != 0 {
        return Err(invalid(format!(
            "invalid route dst {dst}/{prefix_len}: host bits set beyond the prefix"
        )));
    }
    Ok(())
}

/// The netmask of a prefix length (at most 32), as a host-order integer.
fn prefix_mask(prefix_len: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix_len.min(32))).unwrap_or(0)
}

// --- Replies -----------------------------------------------------------------------------

/// One message of a received datagram.
#[derive(Debug)]
struct Message<'a> {
    ty: u16,
    flags: u16,
    seq: u32,
    payload: &'a [u8],
}

/// The messages of a received datagram. Yields an error (then stops) on a message whose
/// length is impossible.
struct Messages<'a>(&'a [u8]);

impl<'a> Iterator for Messages<'a> {
    type Item = Result<Message<'a>, String>;

    fn next(&mut self) -> Option<Self::Item> {
        let data = self.0;
        if data.len() < NLMSG_HDRLEN {
            // Nothing, or trailing padding too short to be a message.
            self.0 = &[];
            return None;
        }
        let len = u32_at(data, 0).unwrap_or(0) as usize;
        let parsed = (len >= NLMSG_HDRLEN && len <= data.len())
            .then(|| {
                Some(Message {
                    ty: u16_at(data, 4)?,
                    flags: u16_at(data, 6)?,
                    seq: u32_at(data, 8)?,
                    payload: data.get(NLMSG_HDRLEN..len)?,
                })
            })
            .flatten();
        match parsed {
            Some(msg) => {
                self.0 = data.get(align4(len)..).unwrap_or(&[]);
                Some(Ok(msg))
            }
            None => {
                self.0 = &[];
                Some(Err(format!(
                    "message length {len} invalid with {} bytes left in the datagram",
                    data.len()
                )))
            }
        }
    }
}

/// The attributes in `data`. Stops at the first attribute whose length is impossible.
struct Attrs<'a>(&'a [u8]);

impl<'a> Iterator for Attrs<'a> {
    type Item = (u16, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let data = self.0;
        let len = u16_at(data, 0)? as usize;
        let ty = u16_at(data, 2)? & NLA_TYPE_MASK;
        let Some(payload) = data.get(RTA_HDRLEN..len) else {
            self.0 = &[];
            return None;
        };
        self.0 = data.get(align4(len)..).unwrap_or(&[]);
        Some((ty, payload))
    }
}

/// Interprets an `NLMSG_ERROR` message: `Ok` for an ACK, the kernel's error otherwise.
fn parse_ack(msg: &Message<'_>, what: &str) -> io::Result<()> {
    let Some(error) = i32_at(msg.payload, 0) else {
        return Err(malformed(what, "NLMSG_ERROR without an error code"));
    };
    if error == 0 {
        return Ok(());
    }
    // Extended ACK attributes follow the echoed request: its header only when capped,
    // the whole request otherwise.
    let mut text = None;
    if msg.flags & NLM_F_ACK_TLVS != 0 {
        let echoed = if msg.flags & NLM_F_CAPPED != 0 {
            NLMSG_HDRLEN
        } else {
            align4(u32_at(msg.payload, 4).unwrap_or(0) as usize)
        };
        let tlvs = msg.payload.get(4usize.saturating_add(echoed)..).unwrap_or(&[]);
        text = Attrs(tlvs)
            .find(|(ty, _)| *ty == NLMSGERR_ATTR_MSG)
            .map(|(_, s)| c_string(s))
            .filter(|s| !s.is_empty());
    }
    Err(kernel_error(what, error.wrapping_neg(), text))
}

/// The error for a kernel errno, with the kind the errno implies.
fn kernel_error(what: &str, errno: i32, text: Option<String>) -> io::Error {
    let os = io::Error::from_raw_os_error(errno);
    let kind = match errno {
        libc::ENODEV | libc::ESRCH | libc::ENOENT => io::ErrorKind::NotFound,
        _ => os.kind(),
    };
    match text {
        Some(t) => io::Error::new(kind, format!("netlink {what}: {os}: {t}")),
        None => io::Error::new(kind, format!("netlink {what}: {os}")),
    }
}

fn malformed(what: &str, problem: impl fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("netlink {what}: malformed reply: {problem}"),
    )
}

fn parse_link(payload: &[u8]) -> Option<LinkInfo> {
    let header = payload.get(..IFINFOMSG_LEN)?;
    let index = u32_at(header, 4)?;
    let flags = u32_at(header, 8)?;
    let mut link = LinkInfo {
        index,
        name: String::new(),
        mac: None,
        mtu: 0,
        up: flags & libc::IFF_UP as u32 != 0,
        running: flags & libc::IFF_LOWER_UP as u32 != 0,
        master: None,
        kind: None,
        xdp_prog_id: None,
        tx_dropped: 0,
    };
    for (ty, data) in Attrs(payload.get(IFINFOMSG_LEN..)?) {
        match ty {
            libc::IFLA_IFNAME => link.name = c_string(data),
            libc::IFLA_ADDRESS => link.mac = data.try_into().ok(),
            libc::IFLA_MTU => link.mtu = u32_at(data, 0).unwrap_or(0),
            libc::IFLA_MASTER => link.master = u32_at(data, 0).filter(|&m| m != 0),
            // struct rtnl_link_stats64: rx/tx packets, bytes, errors, then rx_dropped (48)
            // and tx_dropped (56).
            IFLA_STATS64 => {
                link.tx_dropped = data
                    .get(56..64)
                    .map_or(0, |b| u64::from_ne_bytes(b.try_into().expect("8 bytes")))
            }
            libc::IFLA_LINKINFO => {
                link.kind = Attrs(data)
                    .find(|(ty, _)| *ty == libc::IFLA_INFO_KIND)
                    .map(|(_, kind)| c_string(kind));
            }
            IFLA_XDP => {
                link.xdp_prog_id = Attrs(data)
                    .find(|(ty, _)| *ty == IFLA_XDP_PROG_ID)
                    .and_then(|(_, id)| u32_at(id, 0))
                    .filter(|&id| id != 0);
            }
            _ => {}
        }
    }
    Some(link)
}

fn parse_addr(payload: &[u8]) -> Option<AddrInfo> {
    let header = payload.get(..IFADDRMSG_LEN)?;
    if header[0] != AF_INET {
        return None;
    }
    let prefix_len = header[1];
    let index = u32_at(header, 4)?;
    let (mut local, mut address) = (None, None);
    for (ty, data) in Attrs(payload.get(IFADDRMSG_LEN..)?) {
        match ty {
            libc::IFA_LOCAL => local = ipv4(data),
            libc::IFA_ADDRESS => address = ipv4(data),
            _ => {}
        }
    }
    Some(AddrInfo { index, addr: local.or(address)?, prefix_len })
}

fn parse_route(payload: &[u8]) -> Option<RouteInfo> {
    let header = payload.get(..RTMSG_LEN)?;
    // Only IPv4 unicast routes: local, broadcast, blackhole, ... entries are not ours.
    if header[0] != AF_INET || header[7] != libc::RTN_UNICAST {
        return None;
    }
    let mut route = RouteInfo {
        dst: Ipv4Addr::UNSPECIFIED,
        prefix_len: header[1],
        gateway: None,
        oif: None,
        table: u32::from(header[4]),
        scope: header[6],
        protocol: header[5],
    };
    for (ty, data) in Attrs(payload.get(RTMSG_LEN..)?) {
        match ty {
            libc::RTA_DST => route.dst = ipv4(data)?,
            libc::RTA_GATEWAY => route.gateway = ipv4(data),
            libc::RTA_OIF => route.oif = u32_at(data, 0),
            // The header's table field is 8 bits; the attribute carries the real one.
            libc::RTA_TABLE => route.table = u32_at(data, 0).unwrap_or(route.table),
            _ => {}
        }
    }
    Some(route)
}

fn ipv4(data: &[u8]) -> Option<Ipv4Addr> {
    <[u8; 4]>::try_from(data).ok().map(Ipv4Addr::from)
}

/// A string attribute: up to the first NUL, invalid UTF-8 replaced.
fn c_string(data: &[u8]) -> String {
    let end = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    String::from_utf8_lossy(&data[..end]).into_owned()
}

fn u16_at(data: &[u8], offset: usize) -> Option<u16> {
    data.get(offset..offset.checked_add(2)?)?.try_into().ok().map(u16::from_ne_bytes)
}

fn u32_at(data: &[u8], offset: usize) -> Option<u32> {
    data.get(offset..offset.checked_add(4)?)?.try_into().ok().map(u32::from_ne_bytes)
}

fn i32_at(data: &[u8], offset: usize) -> Option<i32> {
    data.get(offset..offset.checked_add(4)?)?.try_into().ok().map(i32::from_ne_bytes)
}

/// `NLMSG_ALIGN` / `NLA_ALIGN`: rounds up to a multiple of 4, saturating.
fn align4(len: usize) -> usize {
    len.saturating_add(3) & !3
}

struct MacFmt([u8; 6]);

impl fmt::Display for MacFmt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::netns::NamedNetNs;
    use crate::sys::tun::{TapDevice, TapOptions};
    use std::sync::atomic::{AtomicU32, Ordering};

    fn is_root() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    /// A fresh namespace with a name unique to this process and test; deleted on drop.
    fn test_ns() -> NamedNetNs {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        NamedNetNs::create(&format!("pswnl-{}-{n}", std::process::id())).unwrap()
    }

    fn link(nl: &mut Netlink, name: &str) -> LinkInfo {
        nl.link_get(name).unwrap().unwrap_or_else(|| panic!("no link {name}"))
    }

    /// Polls `f` for up to two seconds (carrier changes are propagated asynchronously).
    fn eventually(mut f: impl FnMut() -> bool) -> bool {
        for _ in 0..200 {
            if f() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    macro_rules! needs_root {
        () => {
            if !is_root() {
                eprintln!("skipped: needs root");
                return;
            }
        };
    }

    #[test]
    fn fresh_namespace_has_only_lo() {
        needs_root!();
        let ns = test_ns();
        let mut nl = Netlink::open_in(&ns).unwrap();
        let links = nl.link_list().unwrap();
        assert_eq!(links.len(), 1, "{links:?}");
        let lo = &links[0];
        assert_eq!(lo.name, "lo");
        assert_eq!((lo.up, lo.running, lo.master, lo.kind.as_deref()), (false, false, None, None));
        assert_eq!(lo.mac, Some([0; 6]));
        assert_eq!(nl.link_get("lo").unwrap().as_ref(), Some(lo));
        assert_eq!(nl.link_by_index(lo.index).unwrap().as_ref(), Some(lo));
        assert!(nl.addr_list(None).unwrap().is_empty());

        nl.link_set_up(lo.index, true).unwrap();
        let lo = link(&mut nl, "lo");
        assert!(lo.up && lo.running, "{lo:?}");
        // The kernel addresses lo itself when it comes up.
        let addrs = nl.addr_list(Some(lo.index)).unwrap();
        assert_eq!(addrs, [AddrInfo { index: lo.index, addr: Ipv4Addr::LOCALHOST, prefix_len: 8 }]);
        nl.link_set_up(lo.index, false).unwrap();
        assert!(!link(&mut nl, "lo").up);
    }

    #[test]
    fn missing_links_are_none() {
        needs_root!();
        let ns = test_ns();
        let mut nl = Netlink::open_in(&ns).unwrap();
        assert_eq!(nl.link_get("nothere0").unwrap(), None);
        assert_eq!(nl.link_by_index(4242).unwrap(), None);
    }

    #[test]
    fn veth_peer_in_another_namespace() {
        needs_root!();
        let (ns_a, ns_b) = (test_ns(), test_ns());
        let mut a = Netlink::open_in(&ns_a).unwrap();
        let mut b = Netlink::open_in(&ns_b).unwrap();
        a.veth_add("va", "vb", Some(&ns_b)).unwrap();
        let va = link(&mut a, "va");
        let vb = link(&mut b, "vb");
        assert_eq!(va.kind.as_deref(), Some("veth"));
        assert_eq!(vb.kind.as_deref(), Some("veth"));
        assert!(!va.up && !vb.up);
        assert_eq!(a.link_get("vb").unwrap(), None);
        assert_eq!(b.link_get("va").unwrap(), None);
        assert_eq!(a.link_list().unwrap().len(), 2); // lo, va
        assert_eq!(b.link_list().unwrap().len(), 2); // lo, vb

        // Both names are now taken, each in its own namespace.
        let e = a.veth_add("va", "other", Some(&ns_b)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists, "{e}");
        assert!(
            e.to_string().starts_with("netlink RTM_NEWLINK veth va peer other in netns"),
            "{e}"
        );
        let e = a.veth_add("other", "vb", Some(&ns_b)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists, "{e}");

        // Rename (only while down), then configure and read back.
        a.link_set_name(va.index, "va-renamed").unwrap();
        assert_eq!(a.link_get("va").unwrap(), None);
        let mac = [0x02, 0x42, 0xac, 0x11, 0x00, 0x07];
        a.link_set_mtu(va.index, 9000).unwrap();
        a.link_set_mac(va.index, mac).unwrap();
        a.link_set_up(va.index, true).unwrap();
        let va = link(&mut a, "va-renamed");
        assert_eq!((va.mtu, va.mac, va.up, va.running), (9000, Some(mac), true, false));

        // Carrier comes with the peer.
        b.link_set_up(vb.index, true).unwrap();
        assert!(eventually(|| link(&mut a, "va-renamed").running));
        assert!(eventually(|| link(&mut b, "vb").running));

        // Deleting one end deletes the pair.
        a.link_del(va.index).unwrap();
        assert_eq!(a.link_get("va-renamed").unwrap(), None);
        assert!(eventually(|| b.link_get("vb").unwrap().is_none()));
    }

    #[test]
    fn veth_in_one_namespace_and_input_validation() {
        needs_root!();
        let ns = test_ns();
        let mut nl = Netlink::open_in(&ns).unwrap();
        nl.veth_add("x0", "x1", None).unwrap();
        let x0 = link(&mut nl, "x0");
        assert_eq!(link(&mut nl, "x1").kind.as_deref(), Some("veth"));

        let e = nl.link_set_mtu(x0.index, 67).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("mtu 67"), "{e}");
        let e = nl.veth_add("bad name", "x2", None).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("invalid interface name"), "{e}");
        let e = nl.link_set_name(x0.index, &"n".repeat(16)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        let e = nl.link_get("a/b").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        let e = nl.link_set_up(0, true).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("ifindex 0"), "{e}");
        // Nothing was created by the rejected requests.
        assert_eq!(nl.link_list().unwrap().len(), 3);
    }

    #[test]
    fn veth_with_queues() {
        needs_root!();
        use crate::sys::xsk::{XskConfig, XskSocket};
        let (ns, peer_ns) = (test_ns(), test_ns());
        let mut nl = Netlink::open_in(&ns).unwrap();
        let mut peer_nl = Netlink::open_in(&peer_ns).unwrap();
        let e = nl.veth_add_queues("q0", "q1", None, 0).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("queues 0"), "{e}");
        let e = nl.veth_add_queues("q0", "q1", None, MAX_QUEUES + 1).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        nl.veth_add_queues("q0", "q1", Some(&peer_ns), 2).unwrap();
        nl.veth_add("s0", "s1", None).unwrap();
        let q0 = link(&mut nl, "q0").index;
        let q1 = link(&mut peer_nl, "q1").index;
        let s0 = link(&mut nl, "s0").index;
        // An AF_XDP socket binds only to a queue the device uses, rx and tx alike.
        let cfg = XskConfig::for_frame_len(1518).unwrap();
        let bind = |ns: &NamedNetNs, name: &'static str, index: u32, queue: u32| {
            ns.run(move || XskSocket::bind(name, index, queue, cfg).map(drop)).unwrap()
        };
        bind(&ns, "q0", q0, 1).unwrap();
        bind(&peer_ns, "q1", q1, 1).unwrap();
        bind(&ns, "q0", q0, 0).unwrap();
        assert!(bind(&ns, "q0", q0, 2).is_err());
        bind(&ns, "s0", s0, 0).unwrap();
        assert!(bind(&ns, "s0", s0, 1).is_err(), "a default veth uses one queue");
    }

    #[test]
    fn addresses() {
        needs_root!();
        let ns = test_ns();
        let mut nl = Netlink::open_in(&ns).unwrap();
        nl.veth_add("a0", "a1", None).unwrap();
        let a0 = link(&mut nl, "a0").index;
        let a1 = link(&mut nl, "a1").index;
        let ip = Ipv4Addr::new(10, 244, 1, 5);
        nl.addr_add(a0, ip, 24).unwrap();
        nl.addr_add(a0, Ipv4Addr::new(10, 244, 1, 6), 32).unwrap();
        nl.addr_add(a1, Ipv4Addr::new(192, 168, 7, 1), 30).unwrap();
        let mine = AddrInfo { index: a0, addr: ip, prefix_len: 24 };
        let host = AddrInfo { index: a0, addr: Ipv4Addr::new(10, 244, 1, 6), prefix_len: 32 };
        let other = AddrInfo { index: a1, addr: Ipv4Addr::new(192, 168, 7, 1), prefix_len: 30 };
        assert_eq!(nl.addr_list(Some(a0)).unwrap(), [mine, host]);
        assert_eq!(nl.addr_list(Some(a1)).unwrap(), [other]);
        let mut all = nl.addr_list(None).unwrap();
        all.sort_by_key(|a| (a.index, a.addr));
        let mut want = [mine, host, other];
        want.sort_by_key(|a| (a.index, a.addr));
        assert_eq!(all, want);

        let e = nl.addr_add(a0, ip, 24).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists, "{e}");
        assert!(
            e.to_string()
                .starts_with(&format!("netlink RTM_NEWADDR 10.244.1.5/24 on ifindex {a0}: ")),
            "{e}"
        );
        assert!(e.to_string().contains("(os error 17)"), "{e}");

        nl.addr_del(a0, ip, 24).unwrap();
        assert_eq!(nl.addr_list(Some(a0)).unwrap(), [host]);
        let e = nl.addr_del(a0, ip, 24).unwrap_err();
        assert!(e.to_string().contains("RTM_DELADDR 10.244.1.5/24"), "{e}");

        let e = nl.addr_add(a0, ip, 33).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("prefix_len 33"), "{e}");
        let e = nl.addr_add(4242, ip, 24).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
        assert!(e.to_string().contains("on ifindex 4242"), "{e}");
    }

    #[test]
    fn routes() {
        needs_root!();
        let ns = test_ns();
        let mut nl = Netlink::open_in(&ns).unwrap();
        nl.veth_add("r0", "r1", None).unwrap();
        let r0 = link(&mut nl, "r0").index;
        let r1 = link(&mut nl, "r1").index;
        nl.link_set_up(r0, true).unwrap();
        nl.link_set_up(r1, true).unwrap();
        nl.addr_add(r0, Ipv4Addr::new(10, 1, 0, 1), 24).unwrap();

        let direct = Ipv4Addr::new(10, 2, 0, 0);
        let via = Ipv4Addr::new(10, 3, 0, 0);
        let gw = Ipv4Addr::new(10, 1, 0, 254);
        nl.route_add(direct, 16, None, r0).unwrap();
        nl.route_add(via, 16, Some(gw), r0).unwrap();
        nl.route_add(Ipv4Addr::UNSPECIFIED, 0, Some(gw), r0).unwrap();

        let main = u32::from(libc::RT_TABLE_MAIN);
        let routes = nl.route_list().unwrap();
        let expect = [
            RouteInfo {
                dst: Ipv4Addr::UNSPECIFIED,
                prefix_len: 0,
                gateway: Some(gw),
                oif: Some(r0),
                table: main,
                scope: libc::RT_SCOPE_UNIVERSE,
                protocol: libc::RTPROT_STATIC,
            },
            RouteInfo {
                dst: direct,
                prefix_len: 16,
                gateway: None,
                oif: Some(r0),
                table: main,
                scope: libc::RT_SCOPE_LINK,
                protocol: libc::RTPROT_STATIC,
            },
            RouteInfo {
                dst: via,
                prefix_len: 16,
                gateway: Some(gw),
                oif: Some(r0),
                table: main,
                scope: libc::RT_SCOPE_UNIVERSE,
                protocol: libc::RTPROT_STATIC,
            },
        ];
        for r in &expect {
            assert!(routes.contains(r), "{r:?} not in {routes:?}");
        }
        // The connected route the kernel made for the address; nothing from other tables.
        assert!(routes.iter().any(|r| r.dst == Ipv4Addr::new(10, 1, 0, 0)
            && r.prefix_len == 24
            && r.protocol == libc::RTPROT_KERNEL));
        assert_eq!(routes.len(), 4, "{routes:?}");

        let e = nl.route_add(direct, 16, None, r0).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists, "{e}");
        assert!(
            e.to_string()
                .starts_with(&format!("netlink RTM_NEWROUTE 10.2.0.0/16 dev ifindex {r0}")),
            "{e}"
        );

        nl.route_del(direct, 16, None, Some(r0)).unwrap();
        nl.route_del(via, 16, Some(gw), None).unwrap();
        nl.route_del(Ipv4Addr::UNSPECIFIED, 0, None, None).unwrap();
        assert_eq!(nl.route_list().unwrap().len(), 1);
        let e = nl.route_del(direct, 16, None, Some(r0)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
        assert!(e.to_string().contains("RTM_DELROUTE 10.2.0.0/16"), "{e}");

        let e = nl.route_add(Ipv4Addr::new(10, 2, 0, 1), 16, None, r0).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("host bits"), "{e}");
        let e = nl.route_add(direct, 40, None, r0).unwrap_err();
        assert!(e.to_string().contains("prefix_len 40"), "{e}");
        // A gateway the kernel cannot reach: its own explanation comes along.
        let e = nl.route_add(via, 16, Some(Ipv4Addr::new(172, 16, 0, 1)), r0).unwrap_err();
        assert!(
            e.to_string().starts_with("netlink RTM_NEWROUTE 10.3.0.0/16 via 172.16.0.1"),
            "{e}"
        );
    }

    #[test]
    fn bridge_master() {
        needs_root!();
        let ns = test_ns();
        let mut nl = Netlink::open_in(&ns).unwrap();
        nl.bridge_add("br0").unwrap();
        let br = link(&mut nl, "br0");
        assert_eq!(br.kind.as_deref(), Some("bridge"));
        let e = nl.bridge_add("br0").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists, "{e}");
        nl.veth_add("p0", "p1", None).unwrap();
        let p0 = link(&mut nl, "p0");
        assert_eq!(p0.master, None);
        nl.link_set_master(p0.index, Some(br.index)).unwrap();
        assert_eq!(link(&mut nl, "p0").master, Some(br.index));
        nl.link_set_master(p0.index, None).unwrap();
        assert_eq!(link(&mut nl, "p0").master, None);
    }

    #[test]
    fn tap_moved_into_another_namespace_as_eth0() {
        needs_root!();
        let (ns_a, ns_b) = (test_ns(), test_ns());
        let mut a = Netlink::open_in(&ns_a).unwrap();
        let mut b = Netlink::open_in(&ns_b).unwrap();
        // ns A has an eth0 of its own: the rename must happen on arrival in B, not here.
        a.bridge_add("eth0").unwrap();
        let tap =
            ns_a.run(|| TapDevice::create("tap-pod1", TapOptions::default())).unwrap().unwrap();
        let t = link(&mut a, "tap-pod1");
        assert_eq!(t.kind.as_deref(), Some("tun"));

        a.link_move_to_netns(t.index, &ns_b, Some("eth0")).unwrap();
        assert_eq!(a.link_get("tap-pod1").unwrap(), None);
        assert_eq!(link(&mut a, "eth0").kind.as_deref(), Some("bridge"));
        let moved = link(&mut b, "eth0");
        assert_eq!(moved.kind.as_deref(), Some("tun"));
        assert_eq!(b.link_get("tap-pod1").unwrap(), None);

        // The name is taken in B now: a second move under it fails, and says what it was.
        let tap2 =
            ns_a.run(|| TapDevice::create("tap-pod2", TapOptions::default())).unwrap().unwrap();
        let t2 = link(&mut a, "tap-pod2").index;
        let e = a.link_move_to_netns(t2, &ns_b, Some("eth0")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists, "{e}");
        assert!(e.to_string().contains(&format!("RTM_SETLINK ifindex {t2} netns ")), "{e}");
        assert!(e.to_string().contains(" name eth0"), "{e}");
        drop(tap2);

        // The fd held in A still owns the device in B.
        drop(tap);
        assert!(eventually(|| b.link_get("eth0").unwrap().is_none()));
    }

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

    // --- Encoding and parsing, no kernel involved ---------------------------------------

    fn nlattr(ty: u16, payload: &[u8]) -> Vec<u8> {
        let mut v = ((4 + payload.len()) as u16).to_ne_bytes().to_vec();
        v.extend_from_slice(&ty.to_ne_bytes());
        v.extend_from_slice(payload);
        v.resize(align4(v.len()), 0);
        v
    }

    #[test]
    fn requests_are_encoded_with_lengths_and_padding() {
        let mut req = Request::new(libc::RTM_NEWLINK, NLM_F_CREATE);
        req.push(&ifinfomsg(7, 1, 1));
        req.attr_str(libc::IFLA_IFNAME, "abc"); // 4 + 4 bytes
        let nest = req.begin_nested(libc::IFLA_LINKINFO);
        req.attr_str(libc::IFLA_INFO_KIND, "veth"); // 4 + 5, padded to 12
        req.end_nested(nest);
        let msg = req.finish(99, NLM_F_ACK);
        assert_eq!(msg.len(), 16 + 16 + 8 + 4 + 12);
        assert_eq!(u32_at(&msg, 0), Some(msg.len() as u32));
        assert_eq!(u16_at(&msg, 4), Some(libc::RTM_NEWLINK));
        assert_eq!(u16_at(&msg, 6), Some(NLM_F_REQUEST | NLM_F_CREATE | NLM_F_ACK));
        assert_eq!(u32_at(&msg, 8), Some(99));
        assert_eq!(u32_at(&msg, 20), Some(7));
        let attrs: Vec<_> = Attrs(&msg[32..]).collect();
        assert_eq!(attrs.len(), 2);
        assert_eq!(attrs[0], (libc::IFLA_IFNAME, &b"abc\0"[..]));
        assert_eq!(attrs[1].0, libc::IFLA_LINKINFO);
        assert_eq!(attrs[1].1.len(), 12);
        assert_eq!(Attrs(attrs[1].1).next(), Some((libc::IFLA_INFO_KIND, &b"veth\0"[..])));
    }

    #[test]
    fn veth_requests_carry_queue_counts_on_both_ends_only_when_asked() {
        let queue_attrs = |attrs: &[(u16, &[u8])]| -> Vec<(u16, Option<u32>)> {
            attrs
                .iter()
                .filter(|(ty, _)| matches!(*ty, IFLA_NUM_TX_QUEUES | IFLA_NUM_RX_QUEUES))
                .map(|&(ty, data)| (ty, u32_at(data, 0)))
                .collect()
        };
        for (queues, want) in [(1, vec![]), (2, vec![(31, Some(2)), (32, Some(2))])] {
            let msg = veth_request("ha", "pb", Some(5), queues).finish(1, 0);
            let attrs: Vec<_> = Attrs(&msg[NLMSG_HDRLEN + IFINFOMSG_LEN..]).collect();
            assert_eq!(queue_attrs(&attrs), want);
            let (_, linkinfo) = attrs.iter().find(|(ty, _)| *ty == libc::IFLA_LINKINFO).unwrap();
            let (_, data) = Attrs(linkinfo).find(|(ty, _)| *ty == libc::IFLA_INFO_DATA).unwrap();
            let (_, peer) = Attrs(data).find(|(ty, _)| *ty == VETH_INFO_PEER).unwrap();
            let peer_attrs: Vec<_> = Attrs(&peer[IFINFOMSG_LEN..]).collect();
            assert!(peer_attrs.contains(&(libc::IFLA_IFNAME, &b"pb\0"[..])));
            assert!(peer_attrs.contains(&(libc::IFLA_NET_NS_FD, &5u32.to_ne_bytes()[..])));
            assert_eq!(queue_attrs(&peer_attrs), want);
        }
    }

    #[test]
    fn links_parse_and_tolerate_damage() {
        let mut payload = ifinfomsg(3, (libc::IFF_UP | libc::IFF_LOWER_UP) as u32, 0).to_vec();
        payload.extend(nlattr(libc::IFLA_IFNAME, b"eth0\0"));
        payload.extend(nlattr(libc::IFLA_ADDRESS, &[2, 0, 0, 0, 0, 1]));
        payload.extend(nlattr(libc::IFLA_MTU, &1450u32.to_ne_bytes()));
        payload.extend(nlattr(libc::IFLA_MASTER, &9u32.to_ne_bytes()));
        payload.extend(nlattr(libc::IFLA_LINKINFO, &nlattr(libc::IFLA_INFO_KIND, b"veth\0")));
        let mut xdp = nlattr(2, &[1]);
        xdp.extend(nlattr(IFLA_XDP_PROG_ID, &77u32.to_ne_bytes()));
        payload.extend(nlattr(IFLA_XDP, &xdp));
        let mut stats = vec![0u8; 64];
        stats[56..64].copy_from_slice(&1234u64.to_ne_bytes());
        payload.extend(nlattr(IFLA_STATS64, &stats));
        let full = LinkInfo {
            index: 3,
            name: "eth0".into(),
            mac: Some([2, 0, 0, 0, 0, 1]),
            mtu: 1450,
            up: true,
            running: true,
            master: Some(9),
            kind: Some("veth".into()),
            xdp_prog_id: Some(77),
            tx_dropped: 1234,
        };
        assert_eq!(parse_link(&payload), Some(full));
        // Every truncation parses or is refused, never panics; short of a header is refused.
        for cut in 0..payload.len() {
            let parsed = parse_link(&payload[..cut]);
            assert_eq!(parsed.is_some(), cut >= IFINFOMSG_LEN, "cut at {cut}");
        }
        // An attribute claiming more than there is ends the walk.
        let mut bad = ifinfomsg(3, 0, 0).to_vec();
        bad.extend(nlattr(libc::IFLA_IFNAME, b"x\0"));
        bad.extend_from_slice(&200u16.to_ne_bytes());
        bad.extend_from_slice(&libc::IFLA_MTU.to_ne_bytes());
        bad.extend_from_slice(&[1, 2, 3, 4]);
        let link = parse_link(&bad).unwrap();
        assert_eq!((link.name.as_str(), link.mtu), ("x", 0));
        // Wrong-sized values are ignored rather than misread.
        let mut odd = ifinfomsg(3, 0, 0).to_vec();
        odd.extend(nlattr(libc::IFLA_ADDRESS, &[1, 2, 3, 4]));
        odd.extend(nlattr(libc::IFLA_MTU, &[1, 2]));
        odd.extend(nlattr(libc::IFLA_IFNAME, b"no-nul"));
        let link = parse_link(&odd).unwrap();
        assert_eq!((link.mac, link.mtu, link.name.as_str()), (None, 0, "no-nul"));
    }

    #[test]
    fn messages_and_acks_parse_and_tolerate_damage() {
        // An error reply with an extended ACK message, capped.
        let mut err = (-libc::EEXIST).to_ne_bytes().to_vec();
        err.extend_from_slice(&[0; NLMSG_HDRLEN]);
        err.extend(nlattr(NLMSGERR_ATTR_MSG, b"Address already assigned\0"));
        let mut dgram = Vec::new();
        let flags = NLM_F_ACK_TLVS | NLM_F_CAPPED;
        for (ty, flags, seq, payload) in
            [(NLMSG_NOOP, 0, 5, &[][..]), (NLMSG_ERROR, flags, 6, &err[..])]
        {
            dgram.extend_from_slice(&((NLMSG_HDRLEN + payload.len()) as u32).to_ne_bytes());
            dgram.extend_from_slice(&ty.to_ne_bytes());
            dgram.extend_from_slice(&flags.to_ne_bytes());
            dgram.extend_from_slice(&u32::to_ne_bytes(seq));
            dgram.extend_from_slice(&0u32.to_ne_bytes());
            dgram.extend_from_slice(payload);
        }
        let msgs: Vec<_> = Messages(&dgram).collect::<Result<_, _>>().unwrap();
        assert_eq!(msgs.len(), 2);
        assert_eq!((msgs[1].ty, msgs[1].seq), (NLMSG_ERROR, 6));
        let e = parse_ack(&msgs[1], "RTM_NEWADDR x").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert!(e.to_string().ends_with("(os error 17): Address already assigned"), "{e}");

        // Truncated datagrams: the complete messages come out, then one error; no panics.
        for cut in 0..dgram.len() {
            let out: Vec<_> = Messages(&dgram[..cut]).collect();
            for m in out.iter().flatten() {
                let _ = parse_ack(m, "x");
            }
        }
        // A length field smaller than a header is refused.
        let mut bad = dgram.clone();
        bad[0..4].copy_from_slice(&3u32.to_ne_bytes());
        assert!(Messages(&bad).next().unwrap().is_err());
        // An ACK without an error code is refused, not read past its end.
        let short = Message { ty: NLMSG_ERROR, flags: NLM_F_ACK_TLVS, seq: 1, payload: &[0, 0] };
        assert_eq!(parse_ack(&short, "x").unwrap_err().kind(), io::ErrorKind::InvalidData);
        // Uncapped, with an echoed length pointing past the end: no text, still the errno.
        let mut huge = (-libc::ENODEV).to_ne_bytes().to_vec();
        huge.extend_from_slice(&u32::MAX.to_ne_bytes());
        let msg = Message { ty: NLMSG_ERROR, flags: NLM_F_ACK_TLVS, seq: 1, payload: &huge };
        let e = parse_ack(&msg, "RTM_GETLINK x").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn addresses_and_routes_parse() {
        let mut a = ifaddrmsg(4, 24, 0).to_vec();
        a.extend(nlattr(libc::IFA_ADDRESS, &[10, 0, 0, 9]));
        a.extend(nlattr(libc::IFA_LOCAL, &[10, 0, 0, 1]));
        let want = AddrInfo { index: 4, addr: Ipv4Addr::new(10, 0, 0, 1), prefix_len: 24 };
        assert_eq!(parse_addr(&a), Some(want));
        for cut in 0..a.len() {
            let _ = parse_addr(&a[..cut]);
        }
        let mut r = rtmsg(16, libc::RTPROT_STATIC, libc::RT_SCOPE_LINK, libc::RTN_UNICAST).to_vec();
        r.extend(nlattr(libc::RTA_TABLE, &254u32.to_ne_bytes()));
        r.extend(nlattr(libc::RTA_DST, &[10, 2, 0, 0]));
        r.extend(nlattr(libc::RTA_OIF, &5u32.to_ne_bytes()));
        let route = parse_route(&r).unwrap();
        assert_eq!(
            (route.dst, route.prefix_len, route.oif),
            (Ipv4Addr::new(10, 2, 0, 0), 16, Some(5))
        );
        for cut in 0..r.len() {
            let _ = parse_route(&r[..cut]);
        }
        // Not unicast: skipped.
        let local = rtmsg(32, 2, libc::RT_SCOPE_HOST, libc::RTN_LOCAL);
        assert_eq!(parse_route(&local), None);
    }

    proptest::proptest! {
        #[test]
        fn parsers_never_panic(data in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = parse_link(&data);
            let _ = parse_addr(&data);
            let _ = parse_route(&data);
            for m in Messages(&data).flatten() {
                let _ = parse_ack(&m, "x");
            }
            for (_, payload) in Attrs(&data) {
                let _ = Attrs(payload).count();
            }
        }
    }

    #[test]
    fn prefix_masks() {
        assert_eq!(prefix_mask(0), 0);
        assert_eq!(prefix_mask(8), 0xff00_0000);
        assert_eq!(prefix_mask(32), u32::MAX);
        assert!(check_route_dst(Ipv4Addr::new(10, 0, 0, 0), 8).is_ok());
        assert!(check_route_dst(Ipv4Addr::new(10, 0, 0, 1), 8).is_err());
        assert!(check_route_dst(Ipv4Addr::new(10, 0, 0, 1), 32).is_ok());
        assert!(check_route_dst(Ipv4Addr::UNSPECIFIED, 0).is_ok());
    }
}
