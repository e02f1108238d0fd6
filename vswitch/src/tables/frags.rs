//! IPv4 fragment tracking for Service NAT: the translation of a datagram's first fragment,
//! kept so its later fragments get the same one.
//!
//! Only the first fragment of a datagram carries the TCP/UDP ports, so only it can be
//! matched to a connection. When NAT translates a first fragment it records here, under the
//! datagram's identity as it arrived (source, destination, protocol, IP id), the addresses
//! and MACs it left with and, if it was settled (a NodePort reply), its action. Later
//! fragments of the datagram (no ports) look the identity up and are rewritten the same way;
//! the L4 checksum, which covers the whole datagram, lives in the first fragment and was
//! already updated there. The last fragment (MF clear) ends the entry. This is Cilium's
//! approach (its `ipv4_frag_datagrams` map) rather than reassembly (the kernel's and OVS's):
//! no buffering, no copies, bounded memory.
//!
//! Limits: fragments must arrive first-first, as Linux sends them; a later fragment that
//! comes before its first, or whose entry was refused, is not translated (NAT drops one to
//! a Service address as `frag_untracked`; one from an endpoint passes unchanged and the
//! client's reassembly discards the datagram). At most `max` datagrams are tracked per
//! worker, each for at most [`FRAG_TIMEOUT`]; when full, expired entries are cleared (at
//! most once per [`FRAG_TIMEOUT`] / 8, so the sweep's cost is bounded) and, failing that,
//! new datagrams are not tracked (`full` counts them).

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

use crate::packet::Action;
use crate::wire::MacAddr;

/// How long a datagram's translation waits for its later fragments (the sender sends them
/// back to back; Linux waits 30 s to reassemble, a translation needs far less).
pub const FRAG_TIMEOUT: Duration = Duration::from_secs(5);

/// Datagrams tracked per worker by default.
pub const DEFAULT_MAX_FRAGS: usize = 4096;

/// A datagram's identity as its fragments arrive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FragKey {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// IP protocol number.
    pub proto: u8,
    /// The IPv4 identification field.
    pub id: u16,
}

/// What the first fragment left NAT as: every later fragment leaves the same way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FragRewrite {
    /// Source address after translation.
    pub src: Ipv4Addr,
    /// Destination address after translation.
    pub dst: Ipv4Addr,
    /// Destination MAC after translation.
    pub dst_mac: MacAddr,
    /// Source MAC after translation.
    pub src_mac: MacAddr,
    /// The action NAT settled the first fragment with, if it did (else the later stages
    /// route the fragments as they routed it).
    pub settled: Option<Action>,
}

/// Counters of the fragment table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FragCounters {
    /// First fragments recorded.
    pub tracked: u64,
    /// Later fragments translated.
    pub translated: u64,
    /// First fragments not recorded because the table was full.
    pub full: u64,
}

/// See the module doc.
#[derive(Debug)]
pub struct FragTable {
    map: FxHashMap<FragKey, (FragRewrite, Instant)>,
    max: usize,
    next_sweep: Option<Instant>,
    counters: FragCounters,
}

impl FragTable {
    /// An empty table for at most `max` datagrams; its memory is reserved now.
    pub fn new(max: usize) -> FragTable {
        let mut map = FxHashMap::default();
        map.reserve(max);
        FragTable { map, max, next_sweep: None, counters: FragCounters::default() }
    }

    /// Records the translation of a datagram whose first fragment was just translated.
    pub fn record(&mut self, key: FragKey, rewrite: FragRewrite, now: Instant) {
        if self.map.len() >= self.max && !self.map.contains_key(&key) {
            if self.next_sweep.is_none_or(|t| now >= t) {
                self.map.retain(|_, (_, until)| *until > now);
                self.next_sweep = Some(now + FRAG_TIMEOUT / 8);
            }
            if self.map.len() >= self.max {
                self.counters.full += 1;
                return;
            }
        }
        self.map.insert(key, (rewrite, now + FRAG_TIMEOUT));
        self.counters.tracked += 1;
    }

    /// The translation for a later fragment of `key`, if its first was recorded and has not
    /// expired; `last` (MF clear) ends the entry.
    pub fn lookup(&mut self, key: &FragKey, last: bool, now: Instant) -> Option<FragRewrite> {
        let (rewrite, until) = *self.map.get(key)?;
        if until <= now {
            self.map.remove(key);
            return None;
        }
        if last {
            self.map.remove(key);
        }
        self.counters.translated += 1;
        Some(rewrite)
    }

    /// True when no datagram is tracked (the NAT stage skips later fragments' lookups).
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Datagrams tracked.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// The counters.
    pub fn counters(&self) -> FragCounters {
        self.counters
    }

    /// Forgets every datagram (a conntrack flush).
    pub fn clear(&mut self) {
        self.map.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: u16) -> FragKey {
        FragKey {
            src: Ipv4Addr::new(10, 0, 0, 1),
            dst: Ipv4Addr::new(10, 96, 0, 10),
            proto: 17,
            id,
        }
    }

    fn rw() -> FragRewrite {
        FragRewrite {
            src: Ipv4Addr::new(10, 0, 0, 1),
            dst: Ipv4Addr::new(10, 0, 0, 9),
            dst_mac: MacAddr([2, 0, 0, 0, 0, 1]),
            src_mac: MacAddr([2, 0, 0, 0, 0, 2]),
            settled: None,
        }
    }

    #[test]
    fn later_fragments_get_the_first_ones_translation_until_the_last() {
        let t0 = Instant::now();
        let mut t = FragTable::new(4);
        t.record(key(1), rw(), t0);
        assert_eq!(t.lookup(&key(1), false, t0), Some(rw()));
        assert_eq!(t.lookup(&key(2), false, t0), None, "another datagram");
        assert_eq!(t.lookup(&key(1), true, t0), Some(rw()), "the last one");
        assert_eq!(t.lookup(&key(1), false, t0), None, "ended by the last");
        assert_eq!(t.counters(), FragCounters { tracked: 1, translated: 2, full: 0 });
    }

    #[test]
    fn entries_expire_and_a_full_table_makes_room_only_from_expired_ones() {
        let t0 = Instant::now();
        let mut t = FragTable::new(2);
        t.record(key(1), rw(), t0);
        t.record(key(2), rw(), t0);
        t.record(key(3), rw(), t0);
        assert_eq!((t.len(), t.counters().full), (2, 1), "full: not recorded");
        assert_eq!(t.lookup(&key(3), false, t0), None);
        let later = t0 + FRAG_TIMEOUT;
        assert_eq!(t.lookup(&key(1), false, later), None, "expired");
        t.record(key(4), rw(), later);
        assert_eq!(t.lookup(&key(4), false, later), Some(rw()), "room from the expired one");
        assert!(t.len() <= 2);
    }
}
