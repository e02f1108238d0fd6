//! The MAC table (forwarding database): `(network, MAC) -> port`, learned from source
//! addresses, with aging, a size limit and station moves.
//!
//! Behaviour a user can rely on:
//! - **Learning**: every frame with a unicast source MAC refreshes (or creates) the entry for
//!   its source on its ingress port. A MAC seen on a different port than the one it was
//!   learned on *moves* there at once (a pod re-attached, a VM migrated); moves are counted.
//! - **Aging**: an entry not refreshed for `aging` is treated as absent from then on, and
//!   removed by the aging sweep: [`Fdb::age_step`], which the worker calls once per loop
//!   turn, examines at most [`AGING_STEP_SLOTS`] slots per call, resuming where the last
//!   call stopped, and spreads one pass over the whole array across [`AGING_PASS`] (a
//!   second), so no turn stalls forwarding for the whole table. A worker that is idle wakes
//!   at least once a second and then takes one full step; the default table (131,072
//!   slots) is then covered in 32 wake-ups. Until the sweep reaches it an expired entry
//!   still occupies a slot. [`Fdb::age`] sweeps the whole table at once (tests, and the
//!   wrap-around guard of [`Fdb::clock`]).
//! - **Full**: with `max_entries` entries present, a new MAC is *not learned*; frames to it
//!   keep being flooded, existing entries are untouched, and every refusal is counted in
//!   `learn_limit_hits`. Nothing is evicted to make room: an attacker flooding random source
//!   MACs cannot push out the stations that are already known.
//! - **Flush**: all entries, or those of one port (used when a port is removed, so a reused
//!   port id never inherits stale stations).
//! - **Pods' own MACs**: the worker enters the MAC the control plane gave each pod when the
//!   port is attached and refreshes it every second while the port exists, unless a
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

/// Slots one [`Fdb::age_step`] examines at most (64 KiB of slots, read in order).
pub const AGING_STEP_SLOTS: usize = 4096;

/// How long one aging pass over the whole slot array is spread across, when the worker
/// turns often enough: [`Fdb::age_step`] examines the share of the array that this much
/// time has made due, up to its budget.
pub const AGING_PASS: Duration = Duration::from_secs(1);

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

/// What one [`Fdb::age_step`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AgingStep {
    /// Slots examined (never more than the step's budget).
    pub examined: usize,
    /// Entries removed as aged out.
    pub removed: usize,
}

/// Where the sliced aging sweep is ([`Fdb::age_step`]).
#[derive(Clone, Copy, Debug)]
struct Sweep {
    /// The next slot to examine.
    cursor: usize,
    /// When this pass began: every entry present then and still present when the pass ends
    /// was examined during it, or refreshed.
    start: Instant,
    /// The array's size when the pass began (growing moves every entry: the pass restarts).
    slots: usize,
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
    /// The sliced sweep's position.
    sweep: Sweep,
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
        let index = Index::with_capacity(config.max_entries.min(PREALLOCATE_MAX), seed);
        Fdb {
            sweep: Sweep { cursor: 0, start: now, slots: index.slots() },
            index,
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
    /// days) without a completed sweep; the worker completes one about every second
    /// ([`Fdb::age_step`]). That sweep reads right too:
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

    /// One slice of the aging sweep: removes the entries not seen for the aging time among
    /// at most `budget` slots, from where the last step stopped. It examines only the part of
    /// the array that time has made due (one whole pass per [`AGING_PASS`]), so frequent
    /// calls each do a little and one call after a long pause does `budget`. A pass ends at
    /// the end of the array and the next one starts over from the front.
    pub fn age_step(&mut self, now: Instant, budget: usize) -> AgingStep {
        let slots = self.index.slots();
        if self.sweep.slots != slots {
            self.rewind_sweep();
        }
        let elapsed = now.saturating_duration_since(self.sweep.start);
        let due = (slots as u128 * elapsed.as_nanos() / AGING_PASS.as_nanos()).min(slots as u128);
        // Stale: every entry has aged out, whatever its (possibly wrapped) ticks say.
        let all = self.stale(now);
        let t = self.clock.ticks(now);
        let clock = self.clock;
        let slice = self.index.retain_slice(self.sweep.cursor, due as usize, budget, |e| {
            !all && !clock.expired(t, e.seen)
        });
        self.sweep.cursor = slice.next;
        if slice.next >= slots {
            // Every entry present at the pass's start was examined (or refreshed since).
            if let Some(due) = self.sweep.start.checked_add(self.clock.wrap_guard()) {
                self.sweep_due = self.sweep_due.max(Some(due));
            }
            self.restart_sweep(now);
        }
        self.counters.aged += slice.removed as u64;
        AgingStep { examined: slice.examined, removed: slice.removed }
    }

    /// Starts a new aging pass at `now`, after one ended.
    fn restart_sweep(&mut self, now: Instant) {
        self.sweep = Sweep { cursor: 0, start: now, slots: self.index.slots() };
    }

    /// Starts the current pass over from the front, keeping its start time (so the wrap
    /// guard is never pushed out too far): something moved entries behind the cursor
    /// (growth, removals outside the sweep).
    fn rewind_sweep(&mut self) {
        self.sweep.cursor = 0;
        self.sweep.slots = self.index.slots();
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
        if n > 0 {
            // The removals' shifts may have moved entries behind the sweep's cursor.
            self.rewind_sweep();
        }
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
mod tests;

#[cfg(test)]
mod model_tests;
