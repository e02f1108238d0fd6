//! IPv4 addresses: adding one to a link, removing it, listing them ([`AddrInfo`]). The
//! `RTM_*ADDR` requests are built here; their replies are read by [`super::parse`].

use super::info::AddrInfo;
use std::io;
use std::net::Ipv4Addr;

use super::message::*;
use super::parse::parse_addr;
use super::socket::Netlink;
use super::validate::{check_index, check_prefix_len, prefix_mask};

impl Netlink {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::test_support::{link, needs_root, test_ns};

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
}
