//! Links: looking them up and listing them ([`LinkInfo`]), creating veth pairs and
//! bridges, and changing a link's state, MTU, address, name, namespace and master. The
//! `RTM_*LINK` requests are built here; their replies are read by [`super::parse`].

use super::info::LinkInfo;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd};

use super::message::*;
use super::parse::{malformed, parse_link};
use super::socket::Netlink;
use super::validate::{check_index, invalid};
use crate::netns::NetNs;
use crate::tun::validate_ifname;

/// The most queues a link can have (the kernel's limit in `rtnl_create_link`).
pub const MAX_QUEUES: u32 = 4096;
/// The smallest MTU accepted: the IPv4 minimum (RFC 791).
const MIN_MTU: u32 = 68;

impl Netlink {
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

fn check_queues(queues: u32) -> io::Result<()> {
    if queues == 0 || queues > MAX_QUEUES {
        return Err(invalid(format!("invalid queues {queues}: must be 1..={MAX_QUEUES}")));
    }
    Ok(())
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
    use crate::netlink::parse::Attrs;
    use crate::netlink::test_support::{eventually, link, needs_root, test_ns};
    use crate::netlink::AddrInfo;
    use crate::netns::NamedNetNs;
    use crate::tun::{TapDevice, TapOptions};
    use std::net::Ipv4Addr;

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
        use crate::xsk::{XskConfig, XskSocket};
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
}
