//! The node's own address pool: which host addresses of the pod CIDR are taken, so
//! `port add` without `--ip` gets the next free one.
//!
//! Control-plane state only (the packet path never reads it). The gateway is reserved at
//! creation. Allocation scans forward from the last address handed out, wrapping once, so a
//! just-released address is not reused at once (a stale ARP cache entry in some pod would
//! otherwise point at the new owner). Full: `allocate` returns `None` and nothing changes.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use crate::cidr::Ipv4Cidr;

/// Addresses in use in the pod CIDR.
#[derive(Debug, Clone)]
pub struct IpPool {
    cidr: Ipv4Cidr,
    used: BTreeSet<Ipv4Addr>,
    cursor: u32,
}

impl IpPool {
    /// A pool over the host addresses of `cidr` with `reserved` (the gateway) taken.
    pub fn new(cidr: Ipv4Cidr, reserved: &[Ipv4Addr]) -> IpPool {
        let mut used = BTreeSet::new();
        used.extend(reserved.iter().copied().filter(|a| cidr.contains(*a)));
        IpPool { cidr, used, cursor: 0 }
    }

    /// The pool's network.
    pub fn cidr(&self) -> Ipv4Cidr {
        self.cidr
    }

    /// Takes the next free host address, or `None` when all are in use.
    pub fn allocate(&mut self) -> Option<Ipv4Addr> {
        let size = 1u64 << (32 - u32::from(self.cidr.prefix_len()));
        for step in 1..=size {
            let n = ((u64::from(self.cursor) + step) % size) as u32;
            let addr = self.cidr.nth(n)?;
            if self.cidr.is_host(addr) && !self.used.contains(&addr) {
                self.used.insert(addr);
                self.cursor = n;
                return Some(addr);
            }
        }
        None
    }

    /// Marks a specific address as used; false when it is taken or not a host address here.
    pub fn claim(&mut self, addr: Ipv4Addr) -> bool {
        self.cidr.is_host(addr) && self.used.insert(addr)
    }

    /// Returns an address to the pool.
    pub fn release(&mut self, addr: Ipv4Addr) -> bool {
        self.used.remove(&addr)
    }

    /// Where the next allocation will start searching; pass it to [`IpPool::undo`].
    pub fn checkpoint(&self) -> u32 {
        self.cursor
    }

    /// Undoes a claim or allocation of `addr` made since `checkpoint`, as if it never
    /// happened (used when the operation that needed the address failed).
    pub fn undo(&mut self, addr: Ipv4Addr, checkpoint: u32) {
        self.used.remove(&addr);
        self.cursor = checkpoint;
    }

    /// True when `addr` is taken.
    pub fn is_used(&self, addr: Ipv4Addr) -> bool {
        self.used.contains(&addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_in_order_skipping_reserved_and_wraps() {
        let cidr: Ipv4Cidr = "10.0.0.0/29".parse().unwrap();
        let gw = Ipv4Addr::new(10, 0, 0, 1);
        let mut p = IpPool::new(cidr, &[gw]);
        let got: Vec<_> = std::iter::from_fn(|| p.allocate()).collect();
        assert_eq!(got, (2..=6).map(|i| Ipv4Addr::new(10, 0, 0, i)).collect::<Vec<_>>());
        assert_eq!(p.allocate(), None);
        assert!(p.release(Ipv4Addr::new(10, 0, 0, 3)));
        assert_eq!(p.allocate(), Some(Ipv4Addr::new(10, 0, 0, 3)));
    }

    #[test]
    fn released_address_is_not_reused_immediately() {
        let mut p = IpPool::new("10.0.0.0/24".parse().unwrap(), &[Ipv4Addr::new(10, 0, 0, 1)]);
        let a = p.allocate().unwrap();
        p.release(a);
        assert_ne!(p.allocate(), Some(a));
    }

    #[test]
    fn undo_restores_the_allocation_order() {
        let mut p = IpPool::new("10.0.0.0/24".parse().unwrap(), &[Ipv4Addr::new(10, 0, 0, 1)]);
        let cp = p.checkpoint();
        let a = p.allocate().unwrap();
        p.undo(a, cp);
        assert!(!p.is_used(a));
        assert_eq!(p.allocate(), Some(a));
    }

    #[test]
    fn claim_rules() {
        let mut p = IpPool::new("10.0.0.0/24".parse().unwrap(), &[Ipv4Addr::new(10, 0, 0, 1)]);
        assert!(!p.claim(Ipv4Addr::new(10, 0, 0, 1)), "reserved");
        assert!(!p.claim(Ipv4Addr::new(10, 0, 0, 0)), "network address");
        assert!(!p.claim(Ipv4Addr::new(10, 0, 0, 255)), "broadcast");
        assert!(!p.claim(Ipv4Addr::new(10, 0, 1, 5)), "outside");
        assert!(p.claim(Ipv4Addr::new(10, 0, 0, 9)));
        assert!(!p.claim(Ipv4Addr::new(10, 0, 0, 9)), "taken");
        assert!(p.is_used(Ipv4Addr::new(10, 0, 0, 9)));
    }
}
