//! The reply parsers: the messages of a received datagram, the attributes of a message, the
//! kernel's ACK or error, and the link, address and route payloads of `RTM_NEWLINK`,
//! `RTM_NEWADDR` and `RTM_NEWROUTE`.
//!
//! Pure functions on byte buffers, no socket, so a hostile or buggy reply can be thrown at
//! them without a kernel: every read is bounds-checked, and a malformed message yields an
//! error or a skipped attribute, never a panic (proptested below, along with reading back
//! what [`super::message::Request`] writes).

use std::fmt;
use std::io;
use std::net::Ipv4Addr;

use super::info::{AddrInfo, LinkInfo, RouteInfo};
use super::message::*;

/// One message of a received datagram.
#[derive(Debug)]
pub(super) struct Message<'a> {
    pub(super) ty: u16,
    pub(super) flags: u16,
    pub(super) seq: u32,
    pub(super) payload: &'a [u8],
}

/// The messages of a received datagram. Yields an error (then stops) on a message whose
/// length is impossible.
pub(super) struct Messages<'a>(pub(super) &'a [u8]);

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
pub(super) struct Attrs<'a>(pub(super) &'a [u8]);

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
pub(super) fn parse_ack(msg: &Message<'_>, what: &str) -> io::Result<()> {
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
pub(super) fn kernel_error(what: &str, errno: i32, text: Option<String>) -> io::Error {
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

pub(super) fn malformed(what: &str, problem: impl fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("netlink {what}: malformed reply: {problem}"),
    )
}

pub(super) fn parse_link(payload: &[u8]) -> Option<LinkInfo> {
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

pub(super) fn parse_addr(payload: &[u8]) -> Option<AddrInfo> {
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

pub(super) fn parse_route(payload: &[u8]) -> Option<RouteInfo> {
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

pub(super) fn ipv4(data: &[u8]) -> Option<Ipv4Addr> {
    <[u8; 4]>::try_from(data).ok().map(Ipv4Addr::from)
}

/// A string attribute: up to the first NUL, invalid UTF-8 replaced.
pub(super) fn c_string(data: &[u8]) -> String {
    let end = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    String::from_utf8_lossy(&data[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::route::route_attrs;
    use crate::netlink::test_support::nlattr;

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
                let _ = parse_link(m.payload);
                let _ = parse_addr(m.payload);
                let _ = parse_route(m.payload);
            }
            for (_, payload) in Attrs(&data) {
                let _ = Attrs(payload).count();
            }
        }

        /// A link message written with the request builder reads back as the link it
        /// describes.
        #[test]
        fn links_written_by_the_builder_parse_back(
            index in proptest::num::u32::ANY,
            flags in proptest::num::u32::ANY,
            name in "[^\u{0}]{0,20}",
            mac in proptest::option::of(proptest::array::uniform6(proptest::num::u8::ANY)),
            mtu in proptest::num::u32::ANY,
            master in proptest::option::of(1..=u32::MAX),
            kind in proptest::option::of("[a-z]{1,12}"),
            xdp_prog_id in proptest::option::of(1..=u32::MAX),
            tx_dropped in proptest::num::u64::ANY,
        ) {
            let mut req = Request::new(libc::RTM_NEWLINK, 0);
            req.push(&ifinfomsg(index, flags, 0));
            req.attr_str(libc::IFLA_IFNAME, &name);
            if let Some(mac) = mac {
                req.attr(libc::IFLA_ADDRESS, &mac);
            }
            req.attr_u32(libc::IFLA_MTU, mtu);
            if let Some(m) = master {
                req.attr_u32(libc::IFLA_MASTER, m);
            }
            if let Some(k) = &kind {
                let nest = req.begin_nested(libc::IFLA_LINKINFO);
                req.attr_str(libc::IFLA_INFO_KIND, k);
                req.end_nested(nest);
            }
            if let Some(id) = xdp_prog_id {
                let nest = req.begin_nested(IFLA_XDP);
                req.attr(2, &[1]); // IFLA_XDP_ATTACHED, skipped
                req.attr_u32(IFLA_XDP_PROG_ID, id);
                req.end_nested(nest);
            }
            let mut stats = [0u8; 64];
            stats[56..].copy_from_slice(&tx_dropped.to_ne_bytes());
            req.attr(IFLA_STATS64, &stats);
            let msg = req.finish(1, 0);

            let want = LinkInfo {
                index,
                name,
                mac,
                mtu,
                up: flags & libc::IFF_UP as u32 != 0,
                running: flags & libc::IFF_LOWER_UP as u32 != 0,
                master,
                kind,
                xdp_prog_id,
                tx_dropped,
            };
            let m = Messages(&msg).next().unwrap().unwrap();
            proptest::prop_assert_eq!(parse_link(m.payload), Some(want));
        }

        /// An address message written with the request builder reads back as its address:
        /// `IFA_LOCAL` when there is one, `IFA_ADDRESS` otherwise.
        #[test]
        fn addresses_written_by_the_builder_parse_back(
            index in proptest::num::u32::ANY,
            prefix_len in 0u8..=32,
            scope in proptest::num::u8::ANY,
            local in proptest::option::of(proptest::num::u32::ANY),
            address in proptest::option::of(proptest::num::u32::ANY),
        ) {
            let (local, address) = (local.map(Ipv4Addr::from), address.map(Ipv4Addr::from));
            let mut req = Request::new(libc::RTM_NEWADDR, 0);
            req.push(&ifaddrmsg(index, prefix_len, scope));
            if let Some(a) = address {
                req.attr(libc::IFA_ADDRESS, &a.octets());
            }
            if let Some(a) = local {
                req.attr(libc::IFA_LOCAL, &a.octets());
            }
            let msg = req.finish(1, 0);
            let want = local.or(address).map(|addr| AddrInfo { index, addr, prefix_len });
            let m = Messages(&msg).next().unwrap().unwrap();
            proptest::prop_assert_eq!(parse_addr(m.payload), want);
        }

        /// A route written with the attributes `route_add` sends reads back as that route.
        #[test]
        fn routes_written_by_the_builder_parse_back(
            dst in proptest::num::u32::ANY,
            prefix_len in 0u8..=32,
            gateway in proptest::option::of(proptest::num::u32::ANY),
            oif in proptest::option::of(proptest::num::u32::ANY),
            protocol in proptest::num::u8::ANY,
            scope in proptest::num::u8::ANY,
        ) {
            let (dst, gateway) = (Ipv4Addr::from(dst), gateway.map(Ipv4Addr::from));
            let mut req = Request::new(libc::RTM_NEWROUTE, 0);
            req.push(&rtmsg(prefix_len, protocol, scope, libc::RTN_UNICAST));
            route_attrs(&mut req, dst, prefix_len, gateway, oif);
            let msg = req.finish(1, 0);
            let want = RouteInfo {
                // A default route carries no RTA_DST.
                dst: if prefix_len > 0 { dst } else { Ipv4Addr::UNSPECIFIED },
                prefix_len,
                gateway,
                oif,
                table: u32::from(libc::RT_TABLE_MAIN),
                scope,
                protocol,
            };
            let m = Messages(&msg).next().unwrap().unwrap();
            proptest::prop_assert_eq!(parse_route(m.payload), Some(want));
        }
    }
}
