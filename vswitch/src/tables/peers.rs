//! The overlay peer table: which node owns which pod CIDR, and at which underlay address.
//!
//! Two lookups run per packet and neither scans: [`PeerTable::route`] finds the peer owning
//! a destination address (longest prefix first: one hash probe per distinct prefix length
//! configured, usually one), and [`PeerTable::by_underlay`] tells whether received VXLAN comes
//! from a known peer. The table has a fixed capacity; when it is full an add is refused and
//! nothing already present changes.

use std::net::Ipv4Addr;

use rustc_hash::FxHashMap;

use crate::config::PeerConfig;

/// The table is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the peer table is full ({0} peers)")]
pub struct PeersFull(pub usize);

/// Overlay peers, by name, underlay address and pod CIDR.
#[derive(Debug, Clone)]
pub struct PeerTable {
    peers: Vec<PeerConfig>,
    by_ip: FxHashMap<Ipv4Addr, usize>,
    /// (prefix length, network → index into `peers`), longest prefix first.
    by_prefix: Vec<(u8, FxHashMap<u32, usize>)>,
    max: usize,
}

impl PeerTable {
    /// An empty table for at most `max` peers.
    pub fn new(max: usize) -> PeerTable {
        PeerTable {
            peers: Vec::with_capacity(max.min(4096)),
            by_ip: FxHashMap::default(),
            by_prefix: Vec::new(),
            max,
        }
    }

    /// Adds a peer, replacing one of the same name. The caller has checked that it fits
    /// (`PeerConfig::check_fits` against the others).
    pub fn upsert(&mut self, peer: PeerConfig) -> Result<Option<PeerConfig>, PeersFull> {
        let old = self.remove(&peer.name);
        if self.peers.len() >= self.max {
            if let Some(old) = old {
                self.peers.push(old);
                self.reindex();
            }
            return Err(PeersFull(self.max));
        }
        self.peers.push(peer);
        self.reindex();
        Ok(old)
    }

    /// Removes the peer called `name`.
    pub fn remove(&mut self, name: &str) -> Option<PeerConfig> {
        let i = self.peers.iter().position(|p| p.name == name)?;
        let old = self.peers.swap_remove(i);
        self.reindex();
        Some(old)
    }

    /// Rebuilds the indexes (control-plane changes only, never per packet).
    fn reindex(&mut self) {
        self.by_ip.clear();
        self.by_prefix.clear();
        for (i, p) in self.peers.iter().enumerate() {
            self.by_ip.insert(p.ip, i);
            let len = p.pod_cidr.prefix_len();
            let slot = match self.by_prefix.iter().position(|(l, _)| *l == len) {
                Some(s) => s,
                None => {
                    self.by_prefix.push((len, FxHashMap::default()));
                    self.by_prefix.len() - 1
                }
            };
            self.by_prefix[slot].1.insert(u32::from(p.pod_cidr.network()), i);
        }
        self.by_prefix.sort_by_key(|(len, _)| std::cmp::Reverse(*len));
    }

    /// The peer whose pod CIDR holds `dst`.
    #[inline]
    pub fn route(&self, dst: Ipv4Addr) -> Option<&PeerConfig> {
        let d = u32::from(dst);
        for (len, map) in &self.by_prefix {
            let mask = if *len == 0 { 0 } else { u32::MAX << (32 - u32::from(*len)) };
            if let Some(&i) = map.get(&(d & mask)) {
                return self.peers.get(i);
            }
        }
        None
    }

    /// The peer at underlay address `ip`.
    #[inline]
    pub fn by_underlay(&self, ip: Ipv4Addr) -> Option<&PeerConfig> {
        self.by_ip.get(&ip).and_then(|&i| self.peers.get(i))
    }

    /// Every peer, sorted by name.
    pub fn list(&self) -> Vec<PeerConfig> {
        let mut v = self.peers.clone();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Number of peers.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// The capacity.
    pub fn max(&self) -> usize {
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(name: &str, ip: &str, cidr: &str) -> PeerConfig {
        PeerConfig::parse(name, ip, cidr, None).unwrap()
    }

    #[test]
    fn routes_by_longest_prefix_and_finds_senders() {
        let mut t = PeerTable::new(8);
        t.upsert(peer("n2", "192.168.0.2", "10.244.2.0/24")).unwrap();
        t.upsert(peer("n3", "192.168.0.3", "10.245.0.0/16")).unwrap();
        t.upsert(peer("n4", "192.168.0.4", "10.245.7.0/24")).unwrap();
        let route = |a: [u8; 4]| t.route(Ipv4Addr::from(a)).map(|p| p.name.clone());
        assert_eq!(route([10, 244, 2, 9]).as_deref(), Some("n2"));
        assert_eq!(route([10, 245, 7, 1]).as_deref(), Some("n4"));
        assert_eq!(route([10, 245, 8, 1]).as_deref(), Some("n3"));
        assert_eq!(route([10, 244, 3, 1]), None);
        assert_eq!(t.by_underlay(Ipv4Addr::new(192, 168, 0, 3)).unwrap().name, "n3");
        assert!(t.by_underlay(Ipv4Addr::new(192, 168, 0, 9)).is_none());
        assert_eq!(
            t.list().iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
            ["n2", "n3", "n4"]
        );
    }

    #[test]
    fn remove_and_replace() {
        let mut t = PeerTable::new(8);
        t.upsert(peer("n2", "192.168.0.2", "10.244.2.0/24")).unwrap();
        let old = t.upsert(peer("n2", "192.168.0.22", "10.244.2.0/24")).unwrap();
        assert_eq!(old.unwrap().ip, Ipv4Addr::new(192, 168, 0, 2));
        assert!(t.by_underlay(Ipv4Addr::new(192, 168, 0, 2)).is_none());
        assert!(t.by_underlay(Ipv4Addr::new(192, 168, 0, 22)).is_some());
        assert_eq!(t.remove("n2").unwrap().name, "n2");
        assert!(t.route(Ipv4Addr::new(10, 244, 2, 1)).is_none());
        assert!(t.remove("n2").is_none() && t.is_empty());
    }

    #[test]
    fn full_table_refuses_and_keeps_what_it_has() {
        let mut t = PeerTable::new(2);
        t.upsert(peer("a", "192.168.0.2", "10.244.2.0/24")).unwrap();
        t.upsert(peer("b", "192.168.0.3", "10.244.3.0/24")).unwrap();
        assert_eq!(t.upsert(peer("c", "192.168.0.4", "10.244.4.0/24")), Err(PeersFull(2)));
        assert_eq!(t.len(), 2);
        assert!(t.route(Ipv4Addr::new(10, 244, 3, 5)).is_some());
        // Replacing an existing peer still works at capacity.
        t.upsert(peer("b", "192.168.0.5", "10.244.3.0/24")).unwrap();
        assert_eq!(t.by_underlay(Ipv4Addr::new(192, 168, 0, 5)).unwrap().name, "b");
    }
}
