//! The neighbor table: `pod IPv4 address -> (MAC, port)` for the pods attached to this node.
//!
//! Unlike the MAC table it is not learned from traffic: the control plane writes an entry
//! when it attaches a pod with an address and removes it with the port. That makes it an
//! authority the switch can answer ARP from (a pod cannot claim another pod's address by
//! sending gratuitous ARP) and route with.
//!
//! Limit: one entry per port, so it is bounded by `ports.max_ports`; an insert past the limit
//! or for an address already present is refused and leaves the table unchanged.

use std::net::Ipv4Addr;

use rustc_hash::FxHashMap;

use crate::port::PortId;
use crate::wire::MacAddr;

/// Where a pod address lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Neighbor {
    /// The pod interface's MAC.
    pub mac: MacAddr,
    /// The switch port the pod is attached to.
    pub port: PortId,
}

/// Why an insert was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NeighError {
    /// The address already belongs to a port.
    #[error("address {0} is already in use by another port")]
    Exists(Ipv4Addr),
    /// The table holds its maximum number of entries.
    #[error("neighbor table full ({0} entries)")]
    Full(usize),
}

/// Pod addresses attached to this node.
#[derive(Debug)]
pub struct NeighTable {
    map: FxHashMap<Ipv4Addr, Neighbor>,
    max_entries: usize,
}

impl NeighTable {
    /// An empty table holding at most `max_entries` addresses.
    pub fn new(max_entries: usize) -> NeighTable {
        let mut map = FxHashMap::default();
        map.reserve(max_entries);
        NeighTable { map, max_entries }
    }

    /// Adds `addr`; refused when present or full.
    pub fn insert(&mut self, addr: Ipv4Addr, neighbor: Neighbor) -> Result<(), NeighError> {
        if self.map.contains_key(&addr) {
            return Err(NeighError::Exists(addr));
        }
        if self.map.len() >= self.max_entries {
            return Err(NeighError::Full(self.max_entries));
        }
        self.map.insert(addr, neighbor);
        Ok(())
    }

    /// Removes `addr`, returning what it mapped to.
    pub fn remove(&mut self, addr: Ipv4Addr) -> Option<Neighbor> {
        self.map.remove(&addr)
    }

    /// Removes every address of `port`; returns how many.
    pub fn remove_port(&mut self, port: PortId) -> usize {
        let before = self.map.len();
        self.map.retain(|_, n| n.port != port);
        before - self.map.len()
    }

    /// Where `addr` lives, if it is a known pod.
    #[inline]
    pub fn lookup(&self, addr: Ipv4Addr) -> Option<&Neighbor> {
        self.map.get(&addr)
    }

    /// Number of addresses.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(port: u16) -> Neighbor {
        Neighbor { mac: MacAddr([2, 0, 0, 0, 0, port as u8]), port: PortId(port) }
    }

    #[test]
    fn insert_lookup_remove() {
        let mut t = NeighTable::new(4);
        let a = Ipv4Addr::new(10, 244, 1, 5);
        t.insert(a, n(1)).unwrap();
        assert_eq!(t.lookup(a), Some(&n(1)));
        assert_eq!(t.insert(a, n(2)), Err(NeighError::Exists(a)));
        assert_eq!(t.lookup(a), Some(&n(1)), "a refused insert changes nothing");
        assert_eq!(t.remove(a), Some(n(1)));
        assert_eq!(t.lookup(a), None);
    }

    #[test]
    fn limit_and_port_removal() {
        let mut t = NeighTable::new(2);
        t.insert(Ipv4Addr::new(10, 0, 0, 1), n(1)).unwrap();
        t.insert(Ipv4Addr::new(10, 0, 0, 2), n(2)).unwrap();
        assert_eq!(t.insert(Ipv4Addr::new(10, 0, 0, 3), n(3)), Err(NeighError::Full(2)));
        assert_eq!(t.remove_port(PortId(1)), 1);
        assert_eq!(t.len(), 1);
        t.insert(Ipv4Addr::new(10, 0, 0, 3), n(3)).unwrap();
    }
}
