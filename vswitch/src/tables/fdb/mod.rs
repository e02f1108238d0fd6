//! The MAC table (forwarding database): `(network, MAC) -> port`, learned from source
//! addresses, with aging, a size limit and station moves.
//!
//! Behaviour a user can rely on:
//! - **Learning**: every frame with a unicast source MAC refreshes (or creates) the entry for
//!   its source on its ingress port. A MAC seen on a different port than the one it was
//!   learned on *moves* there at once (a pod re-attached, a VM migrated); moves are counted.
//! - **Aging**: an entry not refreshed for `aging` is treated as absent from then on and
//!   removed by [`Fdb::age`], which the worker calls about once a second. Until that sweep an
//!   expired entry still occupies a slot.
//! - **Full**: with `max_entries` entries present, a new MAC is *not learned*; frames to it
//!   keep being flooded, existing entries are untouched, and every refusal is counted in
//!   `learn_limit_hits`. Nothing is evicted to make room: an attacker flooding random source
//!   MACs cannot push out the stations that are already known.
//! - **Flush**: all entries, or those of one port (used when a port is removed, so a reused
//!   port id never inherits stale stations).
//!
//! - **Several workers**: each worker keeps its own copy of the table (lookups take no
//!   lock). What one worker learns, moves, or keeps refreshing is announced to the others
//!   ([`Learned::announce`]; a refresh at most every `aging / 8`), which apply it with
//!   [`Fdb::apply_announced`]: a station that only ever talks through one worker's queues
//!   stays known to all of them. Counters count each worker's own learning.
//!
//! The key packs the VLAN id (0 for untagged) and the MAC into one `u64`, so a lookup hashes
//! and compares a single word.

use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

use crate::config::FdbConfig;
use crate::port::PortId;
use crate::wire::MacAddr;

/// Slots reserved up front. Tables configured larger than this grow (and allocate) while
/// learning past it; the default size fits.
const PREALLOCATE_MAX: usize = 65_536;

/// `(network, MAC)` packed as `vlan << 48 | mac`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FdbKey(u64);

const _: () = assert!(std::mem::size_of::<FdbKey>() == 8);

impl FdbKey {
    /// The key of `mac` in VLAN `vlan` (untagged traffic is network 0).
    #[inline]
    pub fn new(vlan: Option<u16>, mac: MacAddr) -> FdbKey {
        FdbKey(u64::from(vlan.unwrap_or(0) & 0x0fff) << 48 | mac.to_u64())
    }

    /// The MAC part.
    pub fn mac(self) -> MacAddr {
        MacAddr::from_u64(self.0 & 0xffff_ffff_ffff)
    }

    /// The VLAN part (0 for untagged).
    pub fn vlan(self) -> u16 {
        (self.0 >> 48) as u16
    }
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    port: PortId,
    last_seen: Instant,
    /// When this entry was last announced to the other workers.
    announced: Instant,
}

/// What [`Fdb::learn`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Learned {
    /// Already known on this port; its age was reset. `announce`: the other workers last
    /// heard of it `aging / 8` ago or more.
    Refreshed {
        /// Tell the other workers.
        announce: bool,
    },
    /// A new entry.
    New,
    /// Known on another port; it now points here.
    Moved {
        /// The port it was on.
        from: PortId,
    },
    /// Not learned: the table is full.
    LimitReached,
}

impl Learned {
    /// Whether the other workers should hear of it.
    #[inline]
    pub fn announce(self) -> bool {
        match self {
            Learned::New | Learned::Moved { .. } => true,
            Learned::Refreshed { announce } => announce,
            Learned::LimitReached => false,
        }
    }
}

/// Event counters of the table, as the API reports them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FdbCounters {
    /// Entries created.
    pub learned: u64,
    /// Station moves (an entry changed port).
    pub moves: u64,
    /// New MACs not learned because the table was full.
    pub learn_limit_hits: u64,
    /// Entries removed by aging.
    pub aged: u64,
    /// Entries removed by flushes (API or port removal).
    pub flushed: u64,
}

impl FdbCounters {
    /// Adds another table's counters (the workers' tables add up to the switch's).
    pub fn add(&mut self, o: &FdbCounters) {
        self.learned += o.learned;
        self.moves += o.moves;
        self.learn_limit_hits += o.learn_limit_hits;
        self.aged += o.aged;
        self.flushed += o.flushed;
    }
}

/// One entry as listed by the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdbEntry {
    /// The key.
    pub key: FdbKey,
    /// The port the MAC was learned on.
    pub port: PortId,
    /// Time since the MAC was last seen.
    pub age: Duration,
}

/// The MAC table. See the module doc for its behaviour.
#[derive(Debug)]
pub struct Fdb {
    map: FxHashMap<FdbKey, Entry>,
    max_entries: usize,
    aging: Duration,
    counters: FdbCounters,
}

impl Fdb {
    /// An empty table with the configured limit and aging time.
    pub fn new(config: FdbConfig) -> Fdb {
        let mut map = FxHashMap::default();
        map.reserve(config.max_entries.min(PREALLOCATE_MAX));
        Fdb {
            map,
            max_entries: config.max_entries,
            aging: config.aging,
            counters: FdbCounters::default(),
        }
    }

    /// Learns (or refreshes) `key` on `port` at time `now`.
    #[inline]
    pub fn learn(&mut self, key: FdbKey, port: PortId, now: Instant) -> Learned {
        if let Some(e) = self.map.get_mut(&key) {
            e.last_seen = now;
            if e.port == port {
                let announce = now.saturating_duration_since(e.announced) >= self.aging / 8;
                if announce {
                    e.announced = now;
                }
                return Learned::Refreshed { announce };
            }
            e.announced = now;
            let from = e.port;
            e.port = port;
            self.counters.moves += 1;
            return Learned::Moved { from };
        }
        if self.map.len() >= self.max_entries {
            self.counters.learn_limit_hits += 1;
            return Learned::LimitReached;
        }
        self.map.insert(key, Entry { port, last_seen: now, announced: now });
        self.counters.learned += 1;
        Learned::New
    }

    /// Applies what another worker announced: `key` was seen on `port` at `now`. Not
    /// counted; refused silently (frames to it are flooded) when the table is full.
    pub fn apply_announced(&mut self, key: FdbKey, port: PortId, now: Instant) {
        if let Some(e) = self.map.get_mut(&key) {
            e.last_seen = e.last_seen.max(now);
            e.port = port;
            e.announced = now;
        } else if self.map.len() < self.max_entries {
            self.map.insert(key, Entry { port, last_seen: now, announced: now });
        }
    }

    /// The port `key` was learned on, unless unknown or aged out.
    #[inline]
    pub fn lookup(&self, key: FdbKey, now: Instant) -> Option<PortId> {
        let e = self.map.get(&key)?;
        (now.saturating_duration_since(e.last_seen) < self.aging).then_some(e.port)
    }

    /// Removes entries not seen for the aging time; returns how many.
    pub fn age(&mut self, now: Instant) -> usize {
        let aging = self.aging;
        let before = self.map.len();
        self.map.retain(|_, e| now.saturating_duration_since(e.last_seen) < aging);
        let removed = before - self.map.len();
        self.counters.aged += removed as u64;
        removed
    }

    /// Removes every entry; returns how many.
    pub fn flush(&mut self) -> usize {
        let n = self.map.len();
        self.map.clear();
        self.counters.flushed += n as u64;
        n
    }

    /// Removes the entries learned on `port`; returns how many.
    pub fn flush_port(&mut self, port: PortId) -> usize {
        let before = self.map.len();
        self.map.retain(|_, e| e.port != port);
        let n = before - self.map.len();
        self.counters.flushed += n as u64;
        n
    }

    /// Live (not aged-out) entries, sorted by key.
    pub fn entries(&self, now: Instant) -> Vec<FdbEntry> {
        let mut v: Vec<FdbEntry> = self
            .map
            .iter()
            .map(|(k, e)| FdbEntry {
                key: *k,
                port: e.port,
                age: now.saturating_duration_since(e.last_seen),
            })
            .filter(|e| e.age < self.aging)
            .collect();
        v.sort_by_key(|e| e.key);
        v
    }

    /// Entries present, including expired ones not yet swept.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The configured limit.
    pub fn max_entries(&self) -> usize {
        self.max_entries
    }

    /// The configured aging time.
    pub fn aging(&self) -> Duration {
        self.aging
    }

    /// Event counters.
    pub fn counters(&self) -> FdbCounters {
        self.counters
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(n: u8) -> MacAddr {
        MacAddr([0x02, 0, 0, 0, 0, n])
    }

    fn fdb(max: usize, aging_secs: u64) -> Fdb {
        Fdb::new(FdbConfig { max_entries: max, aging: Duration::from_secs(aging_secs) })
    }

    #[test]
    fn key_packs_vlan_and_mac() {
        let k = FdbKey::new(Some(100), mac(7));
        assert_eq!(k.vlan(), 100);
        assert_eq!(k.mac(), mac(7));
        assert_ne!(k, FdbKey::new(None, mac(7)));
        assert_eq!(FdbKey::new(None, mac(7)).vlan(), 0);
    }

    #[test]
    fn learns_refreshes_and_moves() {
        let t = Instant::now();
        let mut f = fdb(10, 300);
        let k = FdbKey::new(None, mac(1));
        assert_eq!(f.lookup(k, t), None);
        assert_eq!(f.learn(k, PortId(1), t), Learned::New);
        assert_eq!(f.learn(k, PortId(1), t), Learned::Refreshed { announce: false });
        assert_eq!(f.lookup(k, t), Some(PortId(1)));
        assert_eq!(f.learn(k, PortId(2), t), Learned::Moved { from: PortId(1) });
        assert_eq!(f.lookup(k, t), Some(PortId(2)));
        assert_eq!(f.counters().moves, 1);
        assert_eq!(f.counters().learned, 1);
    }

    #[test]
    fn full_table_refuses_new_macs_and_keeps_old_ones() {
        let t = Instant::now();
        let mut f = fdb(2, 300);
        f.learn(FdbKey::new(None, mac(1)), PortId(1), t);
        f.learn(FdbKey::new(None, mac(2)), PortId(1), t);
        assert_eq!(f.learn(FdbKey::new(None, mac(3)), PortId(1), t), Learned::LimitReached);
        assert_eq!(f.learn(FdbKey::new(None, mac(3)), PortId(2), t), Learned::LimitReached);
        assert_eq!(f.counters().learn_limit_hits, 2);
        assert_eq!(f.lookup(FdbKey::new(None, mac(3)), t), None);
        assert_eq!(f.lookup(FdbKey::new(None, mac(1)), t), Some(PortId(1)));
        // Known MACs still refresh and move when full.
        assert_eq!(
            f.learn(FdbKey::new(None, mac(2)), PortId(3), t),
            Learned::Moved { from: PortId(1) }
        );
    }

    #[test]
    fn aging_hides_then_removes() {
        let t = Instant::now();
        let mut f = fdb(10, 5);
        let k = FdbKey::new(None, mac(1));
        f.learn(k, PortId(1), t);
        f.learn(FdbKey::new(None, mac(2)), PortId(1), t + Duration::from_secs(3));
        assert_eq!(f.lookup(k, t + Duration::from_secs(4)), Some(PortId(1)));
        assert_eq!(f.lookup(k, t + Duration::from_secs(5)), None);
        assert_eq!(f.entries(t + Duration::from_secs(5)).len(), 1);
        assert_eq!(f.age(t + Duration::from_secs(5)), 1);
        assert_eq!(f.len(), 1);
        assert_eq!(f.counters().aged, 1);
        // A refreshed entry does not age.
        f.learn(k, PortId(1), t + Duration::from_secs(6));
        assert_eq!(f.age(t + Duration::from_secs(9)), 1);
        assert_eq!(f.lookup(k, t + Duration::from_secs(9)), Some(PortId(1)));
    }

    #[test]
    fn expired_entry_is_relearned_as_refresh_or_move() {
        let t = Instant::now();
        let mut f = fdb(1, 5);
        let k = FdbKey::new(None, mac(1));
        f.learn(k, PortId(1), t);
        let later = t + Duration::from_secs(60);
        assert_eq!(f.learn(k, PortId(2), later), Learned::Moved { from: PortId(1) });
        assert_eq!(f.lookup(k, later), Some(PortId(2)));
    }

    #[test]
    fn flushes() {
        let t = Instant::now();
        let mut f = fdb(10, 300);
        for i in 0..4 {
            f.learn(FdbKey::new(None, mac(i)), PortId(u16::from(i % 2)), t);
        }
        assert_eq!(f.flush_port(PortId(0)), 2);
        assert!(f.entries(t).iter().all(|e| e.port == PortId(1)));
        assert_eq!(f.flush(), 2);
        assert!(f.is_empty());
        assert_eq!(f.counters().flushed, 4);
    }

    #[test]
    fn entries_are_sorted() {
        let t = Instant::now();
        let mut f = fdb(10, 300);
        for i in [5u8, 1, 3] {
            f.learn(FdbKey::new(None, mac(i)), PortId(1), t);
        }
        let macs: Vec<_> = f.entries(t).iter().map(|e| e.key.mac()).collect();
        assert_eq!(macs, vec![mac(1), mac(3), mac(5)]);
    }

    #[test]
    fn refreshes_are_announced_at_most_every_eighth_of_the_aging_time() {
        let mut f = fdb(16, 80);
        let t = Instant::now();
        let k = FdbKey::new(None, mac(1));
        assert!(f.learn(k, PortId(1), t).announce(), "new stations are announced");
        let s = Duration::from_secs;
        assert_eq!(f.learn(k, PortId(1), t + s(5)), Learned::Refreshed { announce: false });
        assert_eq!(f.learn(k, PortId(1), t + s(10)), Learned::Refreshed { announce: true });
        assert_eq!(f.learn(k, PortId(1), t + s(11)), Learned::Refreshed { announce: false });
        assert!(f.learn(k, PortId(2), t + s(12)).announce(), "moves are announced");
    }

    #[test]
    fn announced_stations_are_applied_uncounted_and_respect_the_limit() {
        let mut f = fdb(2, 300);
        let t = Instant::now();
        f.apply_announced(FdbKey::new(None, mac(1)), PortId(3), t);
        f.apply_announced(FdbKey::new(None, mac(2)), PortId(3), t);
        f.apply_announced(FdbKey::new(None, mac(3)), PortId(3), t);
        assert_eq!(f.len(), 2, "full: the third is not added");
        assert_eq!(f.lookup(FdbKey::new(None, mac(1)), t), Some(PortId(3)));
        // A later announcement moves it, and counts nothing here.
        f.apply_announced(FdbKey::new(None, mac(1)), PortId(4), t);
        assert_eq!(f.lookup(FdbKey::new(None, mac(1)), t), Some(PortId(4)));
        assert_eq!(f.counters(), FdbCounters::default());
    }
}
