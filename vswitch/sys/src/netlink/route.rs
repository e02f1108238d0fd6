//! IPv4 routes of the main table: adding one, deleting it, listing them ([`RouteInfo`]). The
//! `RTM_*ROUTE` requests are built here; their replies are read by [`super::parse`].

use super::info::RouteInfo;
use std::io;
use std::net::Ipv4Addr;

use super::message::*;
use super::parse::parse_route;
use super::socket::Netlink;
use super::validate::{check_index, check_route_dst};

impl Netlink {
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
}

/// The attributes shared by route add and delete.
pub(super) fn route_attrs(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::test_support::{link, needs_root, test_ns};

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
}
