//! The connection-tracking table (OVS's `conntrack.c`): a slab of [`Entry`]s found by both
//! keys through the index, its limit (possibly shared between workers), counters, bounded
//! sweeping, and the steering marks of reply destinations. Behaviour is described in the
//! [module doc](super).

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use super::index::Index;
use super::key::{reply_key, CreateError, Dir, FlowKey, Nat};
use super::tcp::{initial_state, tcp_next, CtState, TcpState};
use super::timeouts::ConntrackConfig;
use crate::port::PortId;
use crate::tables::prefetch;

/// Entries reserved up front. Tables configured larger than this grow (and allocate) while
/// creating past it.
pub const PREALLOCATE_MAX: usize = 65_536;

/// Slots a full table examines for expired entries before refusing a new flow.
pub const RECLAIM_BUDGET: usize = 64;

/// Index slots a full table examines, from the new flow's own bucket on, for an entry it
/// may early-drop (Linux examines `NF_CT_EVICTION_RANGE`, 8 hash chains, from the new
/// tuple's bucket). 64 slots are 8 cache lines and hold at most 64 keys; the index is at
/// most half full, so about 32 entries are looked at, a few hundred nanoseconds, spent only
/// when the table is full.
pub const EARLY_DROP_SCAN: usize = 64;

/// Ports whose entries are counted for [`ConntrackConfig::max_per_port`]: every port id
/// the switch can give out ([`MAX_PORTS`](crate::config::MAX_PORTS)). A create for a port
/// beyond it is not limited (none exists).
pub const PORT_SLOTS: usize = crate::config::MAX_PORTS as usize;

/// The largest `max_entries` honoured: ids must fit in 30 bits, so that the index keeps
/// the direction in the low bit and still has a value no slot uses (its empty mark), and
/// its `4 * max_entries` slots are addressed by a 32-bit hash.
pub const MAX_ENTRIES_LIMIT: usize = 1 << 30;

/// Index of an entry in the table; valid until the entry is removed (see the module doc).
pub type EntryId = u32;

/// One connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// The 5-tuple as the client sent it.
    pub original: FlowKey,
    /// Its translation.
    pub nat: Nat,
    /// Protocol state.
    pub state: CtState,
    /// When the entry was created.
    pub created: Instant,
    /// When its last packet was accounted.
    pub last_seen: Instant,
    /// From this instant on the entry is treated as absent.
    pub expires: Instant,
    /// Packets accounted, indexed by [`Dir::index`].
    pub packets: [u64; 2],
    /// Bytes accounted, indexed by [`Dir::index`].
    pub bytes: [u64; 2],
    /// The pod port the flow came from, whose share of the table it counts against
    /// ([`Conntrack::create_for`]); `None` for flows no pod opened (the node, NodePort
    /// clients).
    pub owner: Option<PortId>,
}

impl Entry {
    /// The 5-tuple of the replies: `backend:bport -> client:sport`, or `-> snat address:port`
    /// with a source rewrite. For ICMP echo both "ports" are the identifier the backend
    /// sees (the snat one if any, else the client's).
    pub fn reply(&self) -> FlowKey {
        reply_key(&self.original, &self.nat)
    }

    /// The 5-tuple this entry is found by in direction `dir`.
    pub fn key(&self, dir: Dir) -> FlowKey {
        match dir {
            Dir::Original => self.original,
            Dir::Reply => self.reply(),
        }
    }

    /// True once the entry is to be treated as absent.
    #[inline]
    pub fn is_expired(&self, now: Instant) -> bool {
        now >= self.expires
    }

    /// True when a full table may drop this entry to make room for a new flow (Linux's
    /// early drop: an entry without `IPS_ASSURED`, or one that `tcp_can_early_drop`
    /// allows). Assured, and so kept, are only a TCP connection that is `Established` with
    /// a reply seen, and a UDP (or other protocol) flow that has seen a reply. Droppable
    /// are TCP handshakes (`SynSent`, `SynRecv`), a TCP flow picked up mid-stream that has
    /// had no reply, TCP connections already closing (`FinWait`, `CloseWait`, `LastAck`,
    /// `TimeWait`, `Close`), UDP without a reply, and ICMP echo.
    #[inline]
    pub fn is_early_droppable(&self) -> bool {
        match self.state {
            CtState::Tcp(TcpState::Established) => self.packets[Dir::Reply.index()] == 0,
            CtState::Tcp(_) => true,
            CtState::Udp { assured } => !assured,
            CtState::Icmp => true,
        }
    }
}

/// Entry counts that several workers' tables share: all entries (which `max_entries`
/// limits) and entries per owning port (which `max_per_port` limits), so that both limits
/// are the node's and not each worker's. Changed only when an entry is created or removed,
/// never per packet.
#[derive(Debug)]
pub struct SharedCounts {
    len: AtomicUsize,
    per_port: Box<[AtomicU32]>,
}

impl Default for SharedCounts {
    fn default() -> SharedCounts {
        SharedCounts {
            len: AtomicUsize::new(0),
            per_port: (0..PORT_SLOTS).map(|_| AtomicU32::new(0)).collect(),
        }
    }
}

impl SharedCounts {
    /// Entries in all the tables sharing these counts.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// True when no table sharing these counts holds an entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entries owned by `port` in all the tables sharing these counts.
    pub fn port_len(&self, port: PortId) -> usize {
        self.per_port.get(port.index()).map_or(0, |c| c.load(Ordering::Relaxed) as usize)
    }
}

/// Adds one to `c` if it is below `max`: true if it was.
#[inline]
fn take_below<C: Counter>(c: &C, max: usize) -> bool {
    c.take_below(max)
}

/// The two counter widths of [`SharedCounts`].
trait Counter {
    fn take_below(&self, max: usize) -> bool;
    fn give_one(&self);
}

impl Counter for AtomicUsize {
    #[inline]
    fn take_below(&self, max: usize) -> bool {
        self.fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| (n < max).then_some(n + 1))
            .is_ok()
    }
    #[inline]
    fn give_one(&self) {
        self.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Counter for AtomicU32 {
    #[inline]
    fn take_below(&self, max: usize) -> bool {
        self.fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
            ((n as usize) < max).then_some(n + 1)
        })
        .is_ok()
    }
    #[inline]
    fn give_one(&self) {
        self.fetch_sub(1, Ordering::AcqRel);
    }
}

pub use podswitch_api::counters::ConntrackCounters;

/// A slab slot: one entry on two whole cache lines (the entry is 120 bytes), which a
/// lookup and the update after it touch together and prefetching brings in together.
#[derive(Debug, Clone, Copy)]
#[repr(align(64))]
struct Cell(Option<Entry>);

const _: () = assert!(std::mem::size_of::<Cell>() == 128);

/// The bucket of a 5-tuple in one table's index ([`Conntrack::hash`]), computed ahead of
/// the lookup so that its memory can be prefetched. Only meaningful for tables with the
/// seed it was computed with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowHash(u32);

impl FlowHash {
    /// The hash classify already computed for a packet (`Meta::flow_hash`, which is
    /// [`FlowKey::seeded_hash`] with the switch's flow seed): valid for a table whose seed is
    /// that seed ([`Conntrack::set_seed`]).
    #[inline]
    pub fn from_seeded(h: u32) -> FlowHash {
        FlowHash(h)
    }
}

/// The connection-tracking table. See the module doc for its behaviour.
#[derive(Debug)]
pub struct Conntrack {
    /// Entries by id; `None` is a free slot (its id is in `free`).
    slab: Vec<Cell>,
    /// Free slab ids, reused last-freed first.
    free: Vec<EntryId>,
    /// Both keys of every entry -> `id << 1 | dir` (see the `index` module).
    index: Index,
    /// This table's hash seed.
    seed: u64,
    /// Next slab slot [`Conntrack::sweep`] examines.
    cursor: usize,
    len: usize,
    cfg: ConntrackConfig,
    counters: ConntrackCounters,
    /// With several workers: the shared marks of reply destinations (flow steering), and the
    /// gateway address their keys are computed with.
    marks: Option<(std::sync::Arc<crate::tables::steer_marks::ReplyMarks>, Ipv4Addr)>,
    /// Entry counts, total and per owning port: this table's own, or with several workers
    /// those of all their tables ([`Conntrack::share_limit`]).
    shared: Arc<SharedCounts>,
}

impl Conntrack {
    /// An empty table with the configured limit and timeouts.
    pub fn new(cfg: ConntrackConfig) -> Conntrack {
        let max = cfg.max_entries;
        Conntrack::with_reserve(cfg, max)
    }

    /// [`Conntrack::new`] that allocates room for `reserve` entries up front (at most
    /// [`PREALLOCATE_MAX`]), for a table that holds a share of a limit shared with others
    /// ([`Conntrack::share_limit`]); past it, the table grows.
    pub fn with_reserve(cfg: ConntrackConfig, reserve: usize) -> Conntrack {
        let cfg = ConntrackConfig { max_entries: cfg.max_entries.min(MAX_ENTRIES_LIMIT), ..cfg };
        let reserve = reserve.min(cfg.max_entries).min(PREALLOCATE_MAX);
        let seed = {
            use std::hash::BuildHasher;
            std::collections::hash_map::RandomState::new().hash_one(0x5eed_u64)
        };
        Conntrack {
            slab: Vec::with_capacity(reserve),
            free: Vec::with_capacity(reserve),
            index: Index::with_capacity(2 * reserve),
            seed,
            cursor: 0,
            len: 0,
            cfg,
            counters: ConntrackCounters::default(),
            marks: None,
            shared: Arc::default(),
        }
    }

    /// Makes `max_entries` and `max_per_port` limits on this table and every other table
    /// given the same counts (the workers' tables: the node's limits). Call on an empty
    /// table.
    pub fn share_limit(&mut self, counts: Arc<SharedCounts>) {
        debug_assert!(self.is_empty(), "share_limit on a table with entries");
        self.shared = counts;
    }

    /// The counts this table adds to (its own, or those it shares).
    pub fn shared_counts(&self) -> &Arc<SharedCounts> {
        &self.shared
    }

    /// Takes room for one entry: true if there was room.
    #[inline]
    fn reserve(&self) -> bool {
        take_below(&self.shared.len, self.cfg.max_entries)
    }

    /// Takes room for one entry of `port`'s: true if it is under its share (or not a
    /// counted port).
    #[inline]
    fn reserve_port(&self, port: PortId) -> bool {
        match self.shared.per_port.get(port.index()) {
            Some(c) => take_below(c, self.cfg.max_per_port),
            None => true,
        }
    }

    /// Gives back the room of one removed entry owned by `owner`.
    #[inline]
    fn release(&self, owner: Option<PortId>) {
        self.shared.len.give_one();
        if let Some(c) = owner.and_then(|p| self.shared.per_port.get(p.index())) {
            c.give_one();
        }
    }

    /// Keeps `marks` up to date with this table's reply destinations (keys computed with
    /// `gateway`), so other workers steer replies here. Entries already present are marked.
    pub fn set_marks(
        &mut self,
        marks: std::sync::Arc<crate::tables::steer_marks::ReplyMarks>,
        gateway: Ipv4Addr,
    ) {
        for e in self.slab.iter().filter_map(|c| c.0.as_ref()) {
            let r = e.reply();
            marks.raise(crate::tables::steer_marks::key(gateway, r.dst, r.dport));
        }
        self.marks = Some((marks, gateway));
    }

    #[inline]
    fn unmark(&self, e: &Entry) {
        if let Some((m, gw)) = &self.marks {
            let r = e.reply();
            m.lower(crate::tables::steer_marks::key(*gw, r.dst, r.dport));
        }
    }

    /// `key`'s bucket in this table, for [`Conntrack::prefetch_index`],
    /// [`Conntrack::prefetch_entry`] and [`Conntrack::lookup_hashed`].
    #[inline]
    pub fn hash(&self, key: &FlowKey) -> FlowHash {
        FlowHash(key.seeded_hash(self.seed))
    }

    /// Makes the table hash with `seed` (the switch's flow seed, which classify hashes each
    /// packet's 5-tuple with), so packets' precomputed hashes index it. Only an empty table
    /// changes its seed: false (nothing changed) when it holds entries.
    pub fn set_seed(&mut self, seed: u64) -> bool {
        if self.len != 0 {
            return false;
        }
        self.seed = seed;
        true
    }

    /// Starts bringing the index slots of `h` into cache (a hint; see
    /// [`Conntrack::lookup_hashed`]).
    #[inline]
    pub fn prefetch_index(&self, h: FlowHash) {
        self.index.prefetch(h.0);
    }

    /// Starts bringing into cache the entry the index most likely holds for `h`: best after
    /// [`Conntrack::prefetch_index`] had time to complete (it reads the index slots).
    #[inline]
    pub fn prefetch_entry(&self, h: FlowHash) {
        if let Some(c) = self.index.candidate(h.0).and_then(|v| self.slab.get((v >> 1) as usize)) {
            let p = (c as *const Cell).cast::<u8>();
            prefetch(p);
            prefetch(p.wrapping_add(64));
        }
    }

    /// The entry a packet with this 5-tuple belongs to, and in which direction (`Original`
    /// = the client's direction). An expired entry is treated as absent and removed right
    /// here. O(1): one hash probe.
    #[inline]
    pub fn lookup(&mut self, key: &FlowKey, now: Instant) -> Option<(EntryId, Dir)> {
        self.lookup_hashed(key, self.hash(key), now)
    }

    /// [`Conntrack::lookup`] with the key's [`Conntrack::hash`] computed beforehand (by this
    /// table: another table's hash finds nothing).
    #[inline]
    pub fn lookup_hashed(
        &mut self,
        key: &FlowKey,
        h: FlowHash,
        now: Instant,
    ) -> Option<(EntryId, Dir)> {
        let v = self.find(key, h)?;
        let id = v >> 1;
        let dir = dir_of(v);
        let expired = self.entry(id).is_expired(now);
        if expired {
            self.remove_slot(id);
            self.counters.expired += 1;
            return None;
        }
        self.counters.found += 1;
        Some((id, dir))
    }

    /// Creates the entry for a new flow whose first packet has 5-tuple `original`,
    /// translated by `nat`; it is then found by `original` and by [`Entry::reply`].
    /// `first_tcp_flags` are the TCP flags of that first packet (`None` for UDP/ICMP); they
    /// set the initial state. The packet itself is not accounted: pass it to
    /// [`Conntrack::update`] like every other.
    ///
    /// Refused with `Clash` if either key belongs to a live entry (expired holders are
    /// removed and do not clash), with `InvalidTcp` for a first packet with RST, FIN or
    /// SYN-ACK, and with `Full` when `max_entries` entries remain after trying to reclaim
    /// expired ones and to early-drop an unassured one ([`Entry::is_early_droppable`]);
    /// assured entries are never evicted. The entry has no owner: see
    /// [`Conntrack::create_for`].
    pub fn create(
        &mut self,
        original: FlowKey,
        nat: Nat,
        first_tcp_flags: Option<u8>,
        now: Instant,
    ) -> Result<EntryId, CreateError> {
        self.create_for(None, original, nat, first_tcp_flags, now)
    }

    /// [`Conntrack::create`] for a flow opened by pod port `owner`, which may hold at most
    /// `max_per_port` entries (across the tables sharing this one's counts): past that the
    /// flow is refused with `PortLimit` (counted in `port_limit`) and nothing is dropped
    /// for it, so one pod cannot take the table from the others. `None` creates an entry
    /// that counts only against `max_entries`.
    pub fn create_for(
        &mut self,
        owner: Option<PortId>,
        original: FlowKey,
        nat: Nat,
        first_tcp_flags: Option<u8>,
        now: Instant,
    ) -> Result<EntryId, CreateError> {
        let state = match initial_state(original.proto, first_tcp_flags) {
            Ok(s) => s,
            Err(e) => {
                self.counters.invalid += 1;
                return Err(e);
            }
        };
        let reply = reply_key(&original, &nat);
        if reply == original {
            self.counters.clash += 1;
            return Err(CreateError::Clash(original));
        }
        for key in [original, reply] {
            if let Some(v) = self.find(&key, self.hash(&key)) {
                let id = v >> 1;
                if !self.entry(id).is_expired(now) {
                    self.counters.clash += 1;
                    return Err(CreateError::Clash(key));
                }
                self.remove_slot(id);
                self.counters.expired += 1;
            }
        }
        if let Some(p) = owner {
            // Expired entries of the port's still count until removed: reclaim a slice.
            if !self.reserve_port(p)
                && (self.sweep(now, RECLAIM_BUDGET) == 0 || !self.reserve_port(p))
            {
                self.counters.port_limit += 1;
                return Err(CreateError::PortLimit(p));
            }
        }
        if !self.reserve() && !self.make_room(&original, now) {
            if let Some(c) = owner.and_then(|p| self.shared.per_port.get(p.index())) {
                c.give_one();
            }
            self.counters.full += 1;
            return Err(CreateError::Full(self.cfg.max_entries));
        }
        let entry = Entry {
            original,
            nat,
            state,
            created: now,
            last_seen: now,
            expires: now + self.cfg.timeout(state, false),
            packets: [0; 2],
            bytes: [0; 2],
            owner,
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.slab[id as usize] = Cell(Some(entry));
                id
            }
            None => {
                self.slab.push(Cell(Some(entry)));
                (self.slab.len() - 1) as EntryId
            }
        };
        self.index.insert(self.hash(&original).0, id << 1);
        self.index.insert(self.hash(&reply).0, id << 1 | 1);
        if let Some((m, gw)) = &self.marks {
            m.raise(crate::tables::steer_marks::key(*gw, reply.dst, reply.dport));
        }
        self.len += 1;
        self.counters.created += 1;
        Ok(id)
    }

    /// With the table full: reclaims expired entries (one sweep slice of
    /// [`RECLAIM_BUDGET`] slots), then early-drops the first droppable entry among the
    /// [`EARLY_DROP_SCAN`] index slots from `original`'s bucket on, and takes the room.
    /// False if there still is none.
    #[cold]
    fn make_room(&mut self, original: &FlowKey, now: Instant) -> bool {
        self.sweep(now, RECLAIM_BUDGET);
        if self.reserve() {
            return true;
        }
        let slab = &self.slab;
        let victim = self.index.scan(self.hash(original).0, EARLY_DROP_SCAN, |v| {
            slab.get((v >> 1) as usize)
                .and_then(|c| c.0.as_ref())
                .is_some_and(|e| e.is_expired(now) || e.is_early_droppable())
        });
        let Some(v) = victim else { return false };
        self.remove_slot(v >> 1);
        self.counters.early_drop += 1;
        // With a shared limit another worker may have taken the room just freed.
        self.reserve()
    }

    /// The entry `id`, if present (expired or not).
    #[inline]
    pub fn get(&self, id: EntryId) -> Option<&Entry> {
        self.slab.get(id as usize)?.0.as_ref()
    }

    /// Accounts one packet of `len` bytes in direction `dir` at `now`: counts it, advances
    /// the state (TCP on `tcp_flags`, see [`tcp_next`]; UDP becomes assured on a reply) and
    /// sets the expiry from the new state. Does nothing if `id` is not an entry.
    #[inline]
    pub fn update(
        &mut self,
        id: EntryId,
        dir: Dir,
        tcp_flags: Option<u8>,
        len: usize,
        now: Instant,
    ) {
        let Some(Cell(Some(e))) = self.slab.get_mut(id as usize) else {
            return;
        };
        e.packets[dir.index()] += 1;
        e.bytes[dir.index()] += len as u64;
        e.last_seen = now;
        e.state = match e.state {
            CtState::Tcp(s) => CtState::Tcp(tcp_next(s, dir, tcp_flags.unwrap_or(0))),
            CtState::Udp { assured } => CtState::Udp { assured: assured || dir == Dir::Reply },
            CtState::Icmp => CtState::Icmp,
        };
        e.expires = now + self.cfg.timeout(e.state, e.packets[Dir::Reply.index()] > 0);
    }

    /// Removes entries expired at `now`, examining at most `budget` slab slots per call
    /// (resuming where the last call stopped, never the same slot twice in one call), so the
    /// worker can call it between bursts without stalling forwarding. Returns the number
    /// removed. A full pass takes `max_entries / budget` calls at most.
    pub fn sweep(&mut self, now: Instant, budget: usize) -> usize {
        let n = self.slab.len();
        let mut removed = 0;
        for _ in 0..budget.min(n) {
            if self.cursor >= n {
                self.cursor = 0;
            }
            let id = self.cursor as EntryId;
            self.cursor += 1;
            if let Some(e) = &self.slab[id as usize].0 {
                if e.is_expired(now) {
                    self.remove_slot(id);
                    removed += 1;
                }
            }
        }
        self.counters.expired += removed as u64;
        removed
    }

    /// Removes one entry now (e.g. a flow reset because its backend was removed). False if
    /// `id` is not an entry.
    pub fn remove(&mut self, id: EntryId) -> bool {
        if self.get(id).is_none() {
            return false;
        }
        self.remove_slot(id);
        self.counters.removed += 1;
        true
    }

    /// Removes every entry; returns how many.
    pub fn flush(&mut self) -> usize {
        let n = self.len;
        for e in self.slab.iter().filter_map(|c| c.0.as_ref()) {
            self.unmark(e);
            self.release(e.owner);
        }
        self.slab.clear();
        self.free.clear();
        self.index.clear();
        self.cursor = 0;
        self.len = 0;
        self.counters.flushed += n as u64;
        n
    }

    /// Removes every entry (expired or not) whose backend is `ip:port` over `proto`, when
    /// that endpoint is removed; returns how many. Walks the whole slab: a control-plane
    /// operation, run between bursts.
    pub fn remove_backend(&mut self, ip: Ipv4Addr, port: u16, proto: u8) -> usize {
        let mut n = 0;
        for id in 0..self.slab.len() {
            if let Some(e) = &self.slab[id].0 {
                if e.nat.backend == ip && e.nat.bport == port && e.original.proto == proto {
                    self.remove_slot(id as EntryId);
                    n += 1;
                }
            }
        }
        self.counters.removed += n as u64;
        n
    }

    /// Removes every entry (expired or not) that port `port` owns, when the port is
    /// removed: its connections cannot carry anything any more, and a port added later
    /// with the same id starts with its whole share. Counted in `removed`; returns how
    /// many. Walks the whole slab: a control-plane operation, run between bursts.
    pub fn remove_port(&mut self, port: PortId) -> usize {
        let mut n = 0;
        for id in 0..self.slab.len() {
            if self.slab[id].0.is_some_and(|e| e.owner == Some(port)) {
                self.remove_slot(id as EntryId);
                n += 1;
            }
        }
        self.counters.removed += n as u64;
        n
    }

    /// Entries owned by `port` (in every table sharing this one's counts).
    pub fn port_len(&self, port: PortId) -> usize {
        self.shared.port_len(port)
    }

    /// Entries present, including expired ones not yet removed.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The configured limit.
    pub fn max_entries(&self) -> usize {
        self.cfg.max_entries
    }

    /// The configuration in force.
    pub fn config(&self) -> &ConntrackConfig {
        &self.cfg
    }

    /// Event counters.
    pub fn counters(&self) -> ConntrackCounters {
        self.counters
    }

    /// Live entries (for the API's `conntrack list`), at most `limit`: the oldest first,
    /// sorted by creation time (then original 5-tuple).
    pub fn entries(&self, now: Instant, limit: usize) -> Vec<Entry> {
        let mut v: Vec<Entry> =
            self.slab.iter().filter_map(|c| c.0).filter(|e| !e.is_expired(now)).collect();
        let by_age = |e: &Entry| (e.created, e.original);
        if limit < v.len() {
            if limit == 0 {
                return Vec::new();
            }
            v.select_nth_unstable_by_key(limit - 1, by_age);
            v.truncate(limit);
        }
        v.sort_unstable_by_key(by_age);
        v
    }

    /// Approximate bytes of memory per entry at capacity: the slab slot (128 bytes, two
    /// cache lines), a free-list slot, and the index's share: two keys of one 8-byte slot
    /// each, at the index's maximum load of one half. Power-of-two rounding of the index can
    /// add up to twice its share.
    pub fn bytes_per_entry() -> usize {
        std::mem::size_of::<Cell>() + std::mem::size_of::<EntryId>() + 2 * 2 * 8
    }

    /// The index value (`id << 1 | dir`) of `key`, whose hash is `h`: the index slot whose
    /// hash matches and whose entry has this key in that direction.
    #[inline]
    fn find(&self, key: &FlowKey, h: FlowHash) -> Option<u32> {
        let slab = &self.slab;
        self.index.get(h.0, |v| {
            slab.get((v >> 1) as usize)
                .and_then(|c| c.0.as_ref())
                .is_some_and(|e| e.key(dir_of(v)) == *key)
        })
    }

    /// The entry at `id`, which the index says is present.
    #[inline]
    fn entry(&self, id: EntryId) -> &Entry {
        self.slab[id as usize].0.as_ref().expect("conntrack index points at a free slot")
    }

    /// Unlinks entry `id` (present) from the index and frees its slot. Counting is the
    /// caller's.
    fn remove_slot(&mut self, id: EntryId) {
        let e = self.slab[id as usize].0.take().expect("conntrack removes a free slot");
        self.unmark(&e);
        self.release(e.owner);
        let removed = self.index.remove(self.hash(&e.original).0, id << 1)
            & self.index.remove(self.hash(&e.reply()).0, id << 1 | 1);
        debug_assert!(removed, "conntrack entry {id} missing from the index");
        self.free.push(id);
        self.len -= 1;
    }
}

/// The direction an index value (`id << 1 | dir`) names.
#[inline]
fn dir_of(v: u32) -> Dir {
    if v & 1 == 0 {
        Dir::Original
    } else {
        Dir::Reply
    }
}

#[cfg(test)]
mod tests;
