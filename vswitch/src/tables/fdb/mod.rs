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
//! - **Pods' own MACs**: the worker enters the MAC the control plane gave each pod when the
//!   port is attached and refreshes it at every aging sweep while the port exists, unless a
//!   frame showed it moving to another port (`worker::Worker::keep_pod_macs`). A pod that
//!   only receives is therefore never reached by flooding; after a flush its MAC is back
//!   within a second. Other stations are learned as above.
//!
//! - **Several workers**: each worker keeps its own copy of the table (lookups take no
//!   lock). What one worker learns, moves, or keeps refreshing is announced to the others
//!   ([`Learned::announce`]; a refresh at most every `aging / 8`), which apply it with
//!   [`Fdb::apply_announced`]: a station that only ever talks through one worker's queues
//!   stays known to all of them. Counters count each worker's own learning.
//!
//! The key packs the VLAN id (0 for untagged) and the MAC into one `u64`, so a lookup hashes
//! and compares a single word.
//!
//! **Layout** (why): learning and forwarding touch one entry per frame, spread over the
//! whole table, so with many stations the cost is cache misses, not instructions. The table
//! is therefore an open-addressing array of 16-byte slots (key, port, two `u32` coarse
//! timestamps; a `HashMap` entry with two `Instant`s took 48), four to a cache line, at
//! least twice as many slots as entries (see the `index` module: 32 to 64 bytes per entry,
//! 2 MiB for the default 65,536), and a caller with a burst of frames hashes them all and
//! prefetches their slots ([`Fdb::hash`], [`Fdb::prefetch`]) before learning or looking up
//! any ([`Fdb::learn_hashed`], [`Fdb::lookup_hashed`]), so the misses of a burst overlap.
//! Timestamps are ticks of about a millisecond that wrap around (see the `clock` module): an
//! entry expires up to two ticks early, never late. Room for `max_entries` (up to 65,536)
//! is allocated up front; a table configured larger grows by doubling while learning past
//! that, which allocates and rehashes (rare, amortized).

use std::time::{Duration, Instant};

use crate::config::FdbConfig;
use crate::port::PortId;
use crate::wire::MacAddr;

mod clock;
mod index;

use clock::Clock;
use index::{Index, Probe, Slot};

/// Entries reserved up front. Tables configured larger than this grow (and allocate) while
/// learning past it; the default size fits.
const PREALLOCATE_MAX: usize = 65_536;

/// `(network, MAC)` packed as `vlan << 48 | mac`, the VLAN id 12 bits: bits 60 to 63 are
/// always zero (the slot array marks occupied slots with bit 63).
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

pub use podswitch_api::counters::FdbCounters;

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

/// A key's hash in one table ([`Fdb::hash`]), computed ahead of the lookup so that its slot
/// can be prefetched. Only meaningful for the table that computed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdbHash(u64);

/// A time as one table stores it ([`Fdb::clock`], [`Fdb::time`]), for
/// [`Fdb::learn_hashed`] and [`Fdb::lookup_hashed`]: coarse ticks since the table was
/// created. Only meaningful for that table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdbTime {
    ticks: u32,
    /// Every entry has aged out: nothing was stored for the aging time.
    stale: bool,
}

/// The MAC table. See the module doc for its behaviour.
#[derive(Debug)]
pub struct Fdb {
    index: Index,
    clock: Clock,
    /// When [`Fdb::clock`] sweeps, unless [`Fdb::age`] did before (`None`: never, as the
    /// guard time overflows `Instant`).
    sweep_due: Option<Instant>,
    /// The latest time stored ([`Fdb::clock`]). With `sweep_due`, what keeps wrapped ticks
    /// from being misread: see [`Fdb::clock`].
    last: Instant,
    max_entries: usize,
    aging: Duration,
    counters: FdbCounters,
}

impl Fdb {
    /// An empty table with the configured limit and aging time.
    pub fn new(config: FdbConfig) -> Fdb {
        let seed = {
            use std::hash::BuildHasher;
            std::collections::hash_map::RandomState::new().hash_one(0x5eed_u64)
        };
        let now = Instant::now();
        let clock = Clock::new(now, config.aging);
        Fdb {
            index: Index::with_capacity(config.max_entries.min(PREALLOCATE_MAX), seed),
            clock,
            sweep_due: now.checked_add(clock.wrap_guard()),
            last: now,
            max_entries: config.max_entries,
            aging: config.aging,
            counters: FdbCounters::default(),
        }
    }

    /// `key`'s hash, for [`Fdb::prefetch`], [`Fdb::learn_hashed`] and
    /// [`Fdb::lookup_hashed`].
    #[inline]
    pub fn hash(&self, key: FdbKey) -> FdbHash {
        FdbHash(self.index.hash(key))
    }

    /// Starts bringing the slot of `h` into cache: a hint, no effect on results. Hash and
    /// prefetch a whole burst first, then learn or look up each frame.
    #[inline]
    pub fn prefetch(&self, h: FdbHash) {
        self.index.prefetch(h.0);
    }

    /// `now` as this table's time, for [`Fdb::learn_hashed`] (and [`Fdb::lookup_hashed`]).
    /// Stored ticks wrap around every 2^32 ticks and are read right while less than 2^31
    /// old, so this first sweeps the table (as [`Fdb::age`]) when it went 2^30 ticks (13
    /// days) without a sweep; the worker sweeps every second. That sweep reads right too:
    /// either nothing was stored for the aging time and everything goes (decided on
    /// `Instant`s), or no entry is older than 2^30 ticks plus the aging time.
    #[inline]
    pub fn clock(&mut self, now: Instant) -> FdbTime {
        if self.sweep_due.is_some_and(|due| now >= due) {
            self.age(now);
        }
        self.last = self.last.max(now);
        // Stale only if nothing can live: `now` is no later than `last` now.
        FdbTime { ticks: self.clock.ticks(now), stale: self.aging.is_zero() }
    }

    /// `now` as this table's time, for lookups ([`Fdb::clock`] for learning).
    #[inline]
    pub fn time(&self, now: Instant) -> FdbTime {
        FdbTime { ticks: self.clock.ticks(now), stale: self.stale(now) }
    }

    /// Whether every entry has aged out at `now`: nothing stored for the aging time.
    #[inline]
    fn stale(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.last) >= self.aging
    }

    /// Learns (or refreshes) `key` on `port` at time `now`.
    #[inline]
    pub fn learn(&mut self, key: FdbKey, port: PortId, now: Instant) -> Learned {
        let t = self.clock(now);
        self.learn_hashed(key, self.hash(key), port, t)
    }

    /// [`Fdb::learn`] with the key's [`Fdb::hash`] and the time ([`Fdb::clock`]) computed
    /// beforehand.
    #[inline]
    pub fn learn_hashed(&mut self, key: FdbKey, h: FdbHash, port: PortId, now: FdbTime) -> Learned {
        let t = now.ticks;
        let stamp = self.clock.stamp(t);
        match self.index.find(key, h.0) {
            Probe::Found(pos) => {
                // Always there: `find` returned it.
                let Some(e) = self.index.slot_mut(pos) else { return Learned::LimitReached };
                // An expired entry was last announced longer ago than that.
                let expired = self.clock.expired(t, e.seen);
                e.seen = t;
                if e.port == port {
                    let announce = expired || self.clock.announce_due(t, e.announced);
                    if announce {
                        e.announced = stamp;
                    }
                    return Learned::Refreshed { announce };
                }
                e.announced = stamp;
                let from = e.port;
                e.port = port;
                self.counters.moves += 1;
                Learned::Moved { from }
            }
            Probe::Vacant(pos) => {
                if self.index.len() >= self.max_entries {
                    self.counters.learn_limit_hits += 1;
                    return Learned::LimitReached;
                }
                self.index.insert(pos, h.0, Slot::new(key, port, t, stamp));
                self.counters.learned += 1;
                Learned::New
            }
        }
    }

    /// Applies what another worker announced: `key` was seen on `port` at `now`. Not
    /// counted; refused silently (frames to it are flooded) when the table is full.
    pub fn apply_announced(&mut self, key: FdbKey, port: PortId, now: Instant) {
        let t = self.clock(now).ticks;
        let stamp = self.clock.stamp(t);
        let h = self.index.hash(key);
        match self.index.find(key, h) {
            Probe::Found(pos) => {
                if let Some(e) = self.index.slot_mut(pos) {
                    e.seen = Clock::later(e.seen, t);
                    e.port = port;
                    e.announced = stamp;
                }
            }
            Probe::Vacant(pos) => {
                if self.index.len() < self.max_entries {
                    self.index.insert(pos, h, Slot::new(key, port, t, stamp));
                }
            }
        }
    }

    /// The port `key` was learned on, unless unknown or aged out.
    #[inline]
    pub fn lookup(&self, key: FdbKey, now: Instant) -> Option<PortId> {
        self.lookup_hashed(key, self.hash(key), self.time(now))
    }

    /// [`Fdb::lookup`] with the key's [`Fdb::hash`] and the time ([`Fdb::time`]) computed
    /// beforehand.
    #[inline]
    pub fn lookup_hashed(&self, key: FdbKey, h: FdbHash, now: FdbTime) -> Option<PortId> {
        if now.stale {
            return None;
        }
        let Probe::Found(pos) = self.index.find(key, h.0) else { return None };
        let e = self.index.slot(pos)?;
        (!self.clock.expired(now.ticks, e.seen)).then_some(e.port)
    }

    /// Removes entries not seen for the aging time; returns how many.
    pub fn age(&mut self, now: Instant) -> usize {
        let removed = if self.stale(now) {
            // Ticks may have wrapped since: go by the time of the latest entry.
            let n = self.index.len();
            self.index.clear();
            n
        } else {
            let t = self.clock.ticks(now);
            let clock = self.clock;
            self.index.retain(|e| !clock.expired(t, e.seen))
        };
        if let Some(due) = now.checked_add(self.clock.wrap_guard()) {
            // Never earlier (an `age` with an older `now`).
            self.sweep_due = self.sweep_due.max(Some(due));
        }
        self.counters.aged += removed as u64;
        removed
    }

    /// Removes every entry; returns how many.
    pub fn flush(&mut self) -> usize {
        let n = self.index.len();
        self.index.clear();
        self.counters.flushed += n as u64;
        n
    }

    /// Removes the entries learned on `port`; returns how many.
    pub fn flush_port(&mut self, port: PortId) -> usize {
        let n = self.index.retain(|e| e.port != port);
        self.counters.flushed += n as u64;
        n
    }

    /// Live (not aged-out) entries, sorted by key.
    pub fn entries(&self, now: Instant) -> Vec<FdbEntry> {
        if self.stale(now) {
            return Vec::new();
        }
        let t = self.clock.ticks(now);
        let mut v: Vec<FdbEntry> = self
            .index
            .iter()
            .filter(|e| !self.clock.expired(t, e.seen))
            .map(|e| FdbEntry {
                key: e.key(),
                port: e.port,
                age: self.clock.duration(Clock::age(t, e.seen)),
            })
            .collect();
        v.sort_by_key(|e| e.key);
        v
    }

    /// Entries present, including expired ones not yet swept.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.index.len() == 0
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

    const TICK: Duration = Duration::from_nanos(1 << clock::MIN_TICK_SHIFT);

    #[test]
    fn entries_live_and_age_across_the_tick_wrap_around() {
        let mut f = fdb(10, 300);
        let near = Instant::now() + TICK * (u32::MAX - 100);
        let k = FdbKey::new(None, mac(1));
        assert_eq!(f.learn(k, PortId(1), near), Learned::New);
        let after = near + TICK * 200;
        assert!(f.time(after).ticks < f.time(near).ticks, "the ticks wrapped");
        assert_eq!(f.lookup(k, after), Some(PortId(1)));
        assert_eq!(f.entries(after)[0].age, TICK * 200);
        assert_eq!(f.age(after), 0);
        assert_eq!(f.learn(k, PortId(1), after), Learned::Refreshed { announce: false });
        let expiry = after + Duration::from_secs(300);
        assert_eq!(f.lookup(k, expiry - Duration::from_millis(5)), Some(PortId(1)));
        assert_eq!(f.lookup(k, expiry), None);
        assert_eq!(f.age(expiry), 1);
    }

    #[test]
    fn a_table_left_unswept_is_swept_before_its_times_could_be_misread() {
        let mut f = fdb(10, 300);
        let t = Instant::now();
        let k = FdbKey::new(None, mac(1));
        f.learn(k, PortId(1), t);
        // Exactly 2^32 ticks later the stored time reads as "now" again.
        let wrapped = t + TICK * u32::MAX + TICK;
        assert_eq!(f.time(wrapped).ticks, f.time(t).ticks);
        assert_eq!(f.lookup(k, wrapped), None);
        assert!(f.entries(wrapped).is_empty());
        assert_eq!(f.lookup_hashed(k, f.hash(k), f.time(wrapped)), None);
        assert_eq!(f.learn(FdbKey::new(None, mac(2)), PortId(2), wrapped), Learned::New);
        assert_eq!(f.counters().aged, 1, "swept first");
        assert_eq!(f.lookup(k, wrapped), None);
        assert_eq!(f.learn(k, PortId(1), wrapped), Learned::New);
    }

    #[test]
    fn a_year_of_aging_works_with_coarser_ticks() {
        let year = Duration::from_secs(86_400 * 365);
        let mut f = Fdb::new(FdbConfig { max_entries: 4, aging: year });
        let t = Instant::now();
        let k = FdbKey::new(None, mac(1));
        f.learn(k, PortId(1), t);
        let eighth = year / 8;
        let day = Duration::from_secs(86_400);
        assert_eq!(f.learn(k, PortId(1), t + eighth - day), Learned::Refreshed { announce: false });
        assert_eq!(f.learn(k, PortId(1), t + eighth), Learned::Refreshed { announce: true });
        let last = t + eighth;
        assert_eq!(f.lookup(k, last + year - day), Some(PortId(1)));
        assert_eq!(f.lookup(k, last + year), None);
        assert_eq!(f.age(last + year - day), 0);
        assert_eq!(f.age(last + year), 1);
    }

    #[test]
    fn prefetched_calls_agree_with_plain_ones() {
        let mut f = fdb(64, 300);
        let t = Instant::now();
        let keys: Vec<FdbKey> = (0..40).map(|i| FdbKey::new(Some(i % 3), mac(i as u8))).collect();
        let now = f.clock(t);
        for (i, &k) in keys.iter().enumerate() {
            let h = f.hash(k);
            f.prefetch(h);
            assert_eq!(f.learn_hashed(k, h, PortId(i as u16), now), Learned::New);
        }
        let now = f.time(t);
        for (i, &k) in keys.iter().enumerate() {
            assert_eq!(f.lookup_hashed(k, f.hash(k), now), Some(PortId(i as u16)));
            assert_eq!(f.lookup(k, t), Some(PortId(i as u16)));
        }
    }

    #[test]
    fn large_tables_grow_past_what_they_reserve() {
        let mut f = fdb(PREALLOCATE_MAX + 1_000, 300);
        let t = Instant::now();
        let key = |i: u32| FdbKey::new(None, MacAddr::from_u64(u64::from(i)));
        for i in 0..(PREALLOCATE_MAX + 1_000) as u32 {
            assert_eq!(f.learn(key(i), PortId(1), t), Learned::New);
        }
        assert_eq!(f.learn(key(u32::MAX), PortId(1), t), Learned::LimitReached);
        assert_eq!(f.len(), PREALLOCATE_MAX + 1_000);
        assert!((0..(PREALLOCATE_MAX + 1_000) as u32).all(|i| f.lookup(key(i), t).is_some()));
        assert_eq!(f.flush_port(PortId(1)), PREALLOCATE_MAX + 1_000);
        assert!(f.is_empty());
    }
}

/// The table against a plain `HashMap` with `Instant`s (the previous implementation), over
/// random operations on a few keys in a small table: collisions, runs that wrap around the
/// end of the array, a full table and removals in the middle of runs all happen often.
/// Times are whole ticks and the aging time a multiple of eight ticks, where the coarse
/// timestamps are exact.
#[cfg(test)]
mod model_tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    const TICK: Duration = Duration::from_nanos(1 << clock::MIN_TICK_SHIFT);

    #[derive(Clone, Copy, Debug)]
    struct Key {
        mac: u8,
        tagged: bool,
    }

    impl Key {
        fn key(self) -> FdbKey {
            FdbKey::new(self.tagged.then_some(7), MacAddr([0x02, 0, 0, 0, 0, self.mac]))
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        Learn(Key, u16),
        Announced(Key, u16),
        Lookup(Key),
        Wait(u32),
        Age,
        FlushPort(u16),
        Flush,
    }

    fn key() -> impl Strategy<Value = Key> {
        (0u8..16, proptest::bool::weighted(0.2)).prop_map(|(mac, tagged)| Key { mac, tagged })
    }

    fn op(aging_ticks: u32) -> impl Strategy<Value = Op> {
        prop_oneof![
            8 => (key(), 0u16..4).prop_map(|(k, p)| Op::Learn(k, p)),
            2 => (key(), 0u16..4).prop_map(|(k, p)| Op::Announced(k, p)),
            6 => key().prop_map(Op::Lookup),
            4 => (0..aging_ticks / 2).prop_map(Op::Wait),
            1 => (aging_ticks - 2..aging_ticks + 2).prop_map(Op::Wait),
            2 => Just(Op::Age),
            1 => (0u16..4).prop_map(Op::FlushPort),
            1 => Just(Op::Flush),
        ]
    }

    #[derive(Clone, Copy, Debug)]
    struct Entry {
        port: PortId,
        seen: Instant,
        announced: Instant,
    }

    /// The previous implementation, on a `HashMap`.
    struct Model {
        map: HashMap<FdbKey, Entry>,
        max: usize,
        aging: Duration,
        counters: FdbCounters,
    }

    impl Model {
        fn learn(&mut self, key: FdbKey, port: PortId, now: Instant) -> Learned {
            if let Some(e) = self.map.get_mut(&key) {
                e.seen = now;
                if e.port == port {
                    let announce = now.saturating_duration_since(e.announced) >= self.aging / 8;
                    if announce {
                        e.announced = now;
                    }
                    return Learned::Refreshed { announce };
                }
                e.announced = now;
                let from = std::mem::replace(&mut e.port, port);
                self.counters.moves += 1;
                return Learned::Moved { from };
            }
            if self.map.len() >= self.max {
                self.counters.learn_limit_hits += 1;
                return Learned::LimitReached;
            }
            self.map.insert(key, Entry { port, seen: now, announced: now });
            self.counters.learned += 1;
            Learned::New
        }

        fn apply_announced(&mut self, key: FdbKey, port: PortId, now: Instant) {
            if let Some(e) = self.map.get_mut(&key) {
                *e = Entry { port, seen: e.seen.max(now), announced: now };
            } else if self.map.len() < self.max {
                self.map.insert(key, Entry { port, seen: now, announced: now });
            }
        }

        fn live(&self, e: &Entry, now: Instant) -> bool {
            now.saturating_duration_since(e.seen) < self.aging
        }

        fn entries(&self, now: Instant) -> Vec<FdbEntry> {
            let mut v: Vec<FdbEntry> = self
                .map
                .iter()
                .filter(|(_, e)| self.live(e, now))
                .map(|(&key, e)| FdbEntry { key, port: e.port, age: now - e.seen })
                .collect();
            v.sort_by_key(|e| e.key);
            v
        }

        fn remove(&mut self, keep: impl Fn(&Entry) -> bool) -> usize {
            let before = self.map.len();
            self.map.retain(|_, e| keep(e));
            before - self.map.len()
        }
    }

    fn check(max: usize, eighths: u32, start: i64, ops: Vec<Op>) -> Result<(), TestCaseError> {
        let aging = TICK * 8 * eighths;
        let t0 = Instant::now();
        let mut f = Fdb::new(FdbConfig { max_entries: max, aging });
        let mut m = Model { map: HashMap::new(), max, aging, counters: FdbCounters::default() };
        let offset = TICK * start.unsigned_abs() as u32;
        let mut now = if start < 0 { t0.checked_sub(offset).unwrap_or(t0) } else { t0 + offset };
        for op in ops {
            match op {
                Op::Learn(k, p) => {
                    let (k, p) = (k.key(), PortId(p));
                    prop_assert_eq!(f.learn(k, p, now), m.learn(k, p, now), "learn {:?}", k);
                }
                Op::Announced(k, p) => {
                    f.apply_announced(k.key(), PortId(p), now);
                    m.apply_announced(k.key(), PortId(p), now);
                }
                Op::Lookup(k) => {
                    let want = m.map.get(&k.key()).filter(|e| m.live(e, now)).map(|e| e.port);
                    prop_assert_eq!(f.lookup(k.key(), now), want, "lookup {:?}", k);
                }
                Op::Wait(ticks) => now += TICK * ticks,
                Op::Age => {
                    let aged = m.remove(|e| now.saturating_duration_since(e.seen) < aging);
                    m.counters.aged += aged as u64;
                    prop_assert_eq!(f.age(now), aged);
                }
                Op::FlushPort(p) => {
                    let n = m.remove(|e| e.port != PortId(p));
                    m.counters.flushed += n as u64;
                    prop_assert_eq!(f.flush_port(PortId(p)), n);
                }
                Op::Flush => {
                    let n = m.map.len();
                    m.map.clear();
                    m.counters.flushed += n as u64;
                    prop_assert_eq!(f.flush(), n);
                }
            }
            prop_assert_eq!(f.len(), m.map.len());
            prop_assert!(f.len() <= max);
            prop_assert_eq!(f.counters(), m.counters);
            prop_assert_eq!(f.entries(now), m.entries(now));
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn behaves_like_a_hash_map(
            (max, eighths, start, ops) in (1usize..12, 1u32..6).prop_flat_map(|(max, eighths)| (
                Just(max),
                Just(eighths),
                // Before the epoch, at it, and just before the ticks turn negative and wrap.
                prop_oneof![Just(-1_000i64), Just(0), Just((1 << 31) - 60), Just((1 << 32) - 60)],
                prop::collection::vec(op(8 * eighths), 1..200),
            )),
        ) {
            check(max, eighths, start, ops)?;
        }
    }
}
