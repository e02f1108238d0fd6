//! Connection tracking for Service NAT: one entry per connection, found from both
//! directions, with TCP state tracking and timeouts modelled on Linux's nf_conntrack
//! defaults.
//!
//! Behaviour a user can rely on:
//! - **Both directions**: an entry is created from the first packet of a flow (its
//!   *original* 5-tuple, as the client sent it) and the [`Nat`] chosen for it. It is then
//!   found by the original 5-tuple ([`Dir::Original`]) and by the 5-tuple of the replies,
//!   `backend:bport -> client:sport` (or `-> snat address:port` when the source is rewritten
//!   for hairpin traffic), as [`Dir::Reply`]. Both keys point at one entry.
//! - **Accounting**: [`Conntrack::create`] records the flow but does not count its first
//!   packet; the caller passes every packet, the first included, to [`Conntrack::update`],
//!   which counts it, runs the TCP state machine and pushes the expiry out.
//! - **Timeouts**: each state has its own timeout ([`ConntrackConfig`], Linux's values by
//!   default). An entry not refreshed before its expiry is treated as absent from then on:
//!   [`Conntrack::lookup`] removes it when it meets it, [`Conntrack::create`] replaces it
//!   when a new flow needs one of its keys, and [`Conntrack::sweep`] removes the rest in
//!   bounded slices of work. Until then an expired entry still occupies a slot.
//! - **Full**: with `max_entries` entries present, `create` first tries to reclaim expired
//!   ones (one [`Conntrack::sweep`] slice of [`RECLAIM_BUDGET`] slots); if none is found the
//!   new flow is refused with [`CreateError::Full`] and counted in `full`. Nothing live is
//!   ever evicted to make room: a flood of new flows (a SYN flood to a Service VIP) cannot
//!   break connections that are already established. Their packets are dropped instead
//!   until entries expire or are removed.
//! - **Clash**: a new flow whose original or reply 5-tuple belongs to a live entry is
//!   refused ([`CreateError::Clash`]); the existing entry is untouched.
//!
//! TCP is tracked on flags only (no sequence-window checks), with Linux's `tcp_conntracks`
//! transitions simplified: RST closes from any state; a flow starts with SYN (`SynSent`), or
//! is picked up mid-stream from a plain ACK as `Established` (Linux's default
//! `nf_conntrack_tcp_loose = 1`, useful after a restart since endpoint selection by
//! [`FlowKey::hash64`] picks the same backend again); a first packet with RST, FIN or
//! SYN-ACK is refused ([`CreateError::InvalidTcp`]). Until any reply has been seen, a TCP
//! entry's timeout is capped at `tcp_syn_sent`, so an unanswered picked-up flow is not kept
//! for five days. UDP (and any protocol other than TCP and ICMP) becomes *assured* once a
//! reply is seen and then gets the long `udp_assured` timeout.
//!
//! Threading: the table belongs to one worker and is used without locks; both directions of
//! a flow must be handled by the same table. The switch runs one worker, so that holds.
//! With several workers, each flow's two directions would have to be steered to the same
//! worker (or the table shared); that multi-worker design is future work, not done here.
//!
//! Memory: a slab of entries indexed by [`EntryId`] (each entry on its own two cache lines),
//! and an index holding two keys per entry, each mapping to `id << 1 | direction`. The
//! index is an open-addressing hash table of 8-byte slots (a 32-bit hash and the value;
//! keys are confirmed against the entry), linear probing, backward-shift deletion, never
//! more than half full: it doubles before an insertion would pass that, so with at most
//! `max_entries` entries it reaches at most `4 * max_entries` slots (rounded up to a power
//! of two) and a lookup always ends. Its hash is seeded per table. Up to
//! [`PREALLOCATE_MAX`] entries (and their index slots) are reserved up front; lookups and
//! updates never allocate, and creations allocate only while a table configured larger than
//! that grows past it. [`Conntrack::bytes_per_entry`] gives the cost of one entry.
//!
//! Batched lookups: [`Conntrack::hash`] gives a key's bucket ahead of the lookup, so a
//! caller with a burst of packets can prefetch every packet's index slots
//! ([`Conntrack::prefetch_index`]), then their entries ([`Conntrack::prefetch_entry`]),
//! then look them up ([`Conntrack::lookup_hashed`]) with the memory already on its way:
//! the misses of a burst overlap instead of coming one after the other. Prefetches are
//! hints; results do not depend on them.
//!
//! Entry ids are reused: an id is valid from `create` until its entry is removed (by
//! `lookup` or `create` meeting it expired, `sweep`, `remove`, `remove_backend` or `flush`).
//! The pipeline looks up (or creates) and updates within one burst, so it never holds a
//! stale id.

use std::fmt;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use crate::wire::tcp::TcpFlags;

mod index;

use index::Index;

use super::prefetch;

/// Entries reserved up front. Tables configured larger than this grow (and allocate) while
/// creating past it.
pub const PREALLOCATE_MAX: usize = 65_536;

/// Slots a full table examines for expired entries before refusing a new flow.
pub const RECLAIM_BUDGET: usize = 64;

/// The largest `max_entries` honoured: ids must fit in 30 bits, so that the index keeps
/// the direction in the low bit and still has a value no slot uses (its empty mark), and
/// its `4 * max_entries` slots are addressed by a 32-bit hash.
pub const MAX_ENTRIES_LIMIT: usize = 1 << 30;

const PROTO_ICMP: u8 = 1;
const PROTO_TCP: u8 = 6;

/// A flow's 5-tuple as seen on the wire. For ICMP echo, `sport` = `dport` = the echo
/// identifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Source port (ICMP: the echo identifier).
    pub sport: u16,
    /// Destination port (ICMP: the echo identifier).
    pub dport: u16,
    /// IP protocol number.
    pub proto: u8,
}

const _: () = assert!(std::mem::size_of::<FlowKey>() == 14);

impl FlowKey {
    /// The same flow seen from the other end: addresses and ports swapped.
    #[inline]
    pub fn reversed(&self) -> FlowKey {
        FlowKey {
            src: self.dst,
            dst: self.src,
            sport: self.dport,
            dport: self.sport,
            proto: self.proto,
        }
    }

    /// A well-mixed 64-bit hash (for endpoint selection); same value every time for the
    /// same key, in every process and version (no random seed), so a restarted switch picks
    /// the same backend for a flow it meets again. Direction matters: `k.reversed()` hashes
    /// differently.
    #[inline]
    pub fn hash64(&self) -> u64 {
        let a = u64::from(u32::from(self.src)) << 32 | u64::from(u32::from(self.dst));
        let b = u64::from(self.sport) << 32 | u64::from(self.dport) << 16 | u64::from(self.proto);
        mix64(mix64(a.wrapping_add(0x9e37_79b9_7f4a_7c15)) ^ b)
    }
}

/// The splitmix64 finalizer: every input bit affects every output bit.
#[inline]
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The translation of a flow: the client sent to `vip:vport`, it goes to `backend:bport`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Nat {
    /// The Service address the client sent to.
    pub vip: Ipv4Addr,
    /// The Service port the client sent to (ICMP: unused).
    pub vport: u16,
    /// The chosen endpoint.
    pub backend: Ipv4Addr,
    /// The endpoint's port (ICMP: unused).
    pub bport: u16,
    /// Source rewrite for hairpin traffic: the client's source is rewritten to this
    /// address and port (ICMP: echo identifier) on the way to the backend.
    pub snat: Option<(Ipv4Addr, u16)>,
}

/// Which way a packet goes relative to the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dir {
    /// From the client (towards the VIP, translated to the backend).
    Original,
    /// From the backend back to the client.
    Reply,
}

impl Dir {
    /// 0 for `Original`, 1 for `Reply`: the index into [`Entry::packets`] and
    /// [`Entry::bytes`].
    #[inline]
    pub fn index(self) -> usize {
        self as usize
    }
}

/// TCP connection states, as Linux names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TcpState {
    /// The client's SYN was seen.
    SynSent,
    /// The backend's SYN-ACK was seen.
    SynRecv,
    /// The handshake completed (or the flow was picked up mid-stream).
    Established,
    /// One side sent FIN.
    FinWait,
    /// The FIN was acknowledged; the other side may still send.
    CloseWait,
    /// Both sides sent FIN; waiting for the last ACK.
    LastAck,
    /// Both FINs acknowledged.
    TimeWait,
    /// Reset.
    Close,
}

impl TcpState {
    /// The name used in the API (`syn_sent`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            TcpState::SynSent => "syn_sent",
            TcpState::SynRecv => "syn_recv",
            TcpState::Established => "established",
            TcpState::FinWait => "fin_wait",
            TcpState::CloseWait => "close_wait",
            TcpState::LastAck => "last_ack",
            TcpState::TimeWait => "time_wait",
            TcpState::Close => "close",
        }
    }
}

impl fmt::Display for TcpState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A connection's protocol state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CtState {
    /// TCP, tracked on flags.
    Tcp(TcpState),
    /// UDP, or any protocol other than TCP and ICMP.
    Udp {
        /// A reply has been seen (Linux: `ASSURED`), so the long timeout applies.
        assured: bool,
    },
    /// ICMP echo.
    Icmp,
}

impl fmt::Display for CtState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CtState::Tcp(s) => write!(f, "tcp {s}"),
            CtState::Udp { assured: true } => f.write_str("udp_assured"),
            CtState::Udp { assured: false } => f.write_str("udp"),
            CtState::Icmp => f.write_str("icmp"),
        }
    }
}

/// Timeouts and limit. Defaults are Linux's (`net.netfilter.nf_conntrack_*_timeout*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConntrackConfig {
    /// Entries at most (live or expired but not yet removed); capped at
    /// [`MAX_ENTRIES_LIMIT`].
    pub max_entries: usize,
    /// TCP `SynSent`; also the cap for any TCP state before a reply was seen.
    pub tcp_syn_sent: Duration,
    /// TCP `SynRecv`.
    pub tcp_syn_recv: Duration,
    /// TCP `Established`.
    pub tcp_established: Duration,
    /// TCP `FinWait`.
    pub tcp_fin_wait: Duration,
    /// TCP `CloseWait`.
    pub tcp_close_wait: Duration,
    /// TCP `LastAck`.
    pub tcp_last_ack: Duration,
    /// TCP `TimeWait`.
    pub tcp_time_wait: Duration,
    /// TCP `Close` (after RST).
    pub tcp_close: Duration,
    /// UDP before a reply was seen.
    pub udp: Duration,
    /// UDP after a reply was seen (Linux: `udp_timeout_stream`).
    pub udp_assured: Duration,
    /// ICMP echo.
    pub icmp: Duration,
}

impl Default for ConntrackConfig {
    fn default() -> ConntrackConfig {
        let s = Duration::from_secs;
        ConntrackConfig {
            max_entries: 262_144,
            tcp_syn_sent: s(120),
            tcp_syn_recv: s(60),
            tcp_established: s(432_000),
            tcp_fin_wait: s(120),
            tcp_close_wait: s(60),
            tcp_last_ack: s(30),
            tcp_time_wait: s(120),
            tcp_close: s(10),
            udp: s(30),
            udp_assured: s(120),
            icmp: s(30),
        }
    }
}

impl ConntrackConfig {
    /// The timeout of `state`, `replied` telling whether a reply has been seen.
    fn timeout(&self, state: CtState, replied: bool) -> Duration {
        match state {
            CtState::Tcp(s) => {
                let t = match s {
                    TcpState::SynSent => self.tcp_syn_sent,
                    TcpState::SynRecv => self.tcp_syn_recv,
                    TcpState::Established => self.tcp_established,
                    TcpState::FinWait => self.tcp_fin_wait,
                    TcpState::CloseWait => self.tcp_close_wait,
                    TcpState::LastAck => self.tcp_last_ack,
                    TcpState::TimeWait => self.tcp_time_wait,
                    TcpState::Close => self.tcp_close,
                };
                if replied {
                    t
                } else {
                    t.min(self.tcp_syn_sent)
                }
            }
            CtState::Udp { assured: false } => self.udp,
            CtState::Udp { assured: true } => self.udp_assured,
            CtState::Icmp => self.icmp,
        }
    }
}

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
}

fn reply_key(original: &FlowKey, nat: &Nat) -> FlowKey {
    let (dst, dport) = nat.snat.unwrap_or((original.src, original.sport));
    let sport = if original.proto == PROTO_ICMP { dport } else { nat.bport };
    FlowKey { src: nat.backend, dst, sport, dport, proto: original.proto }
}

/// Why [`Conntrack::create`] refused a flow. The table is unchanged, except that expired
/// entries may have been removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CreateError {
    /// `max_entries` entries are present and none of those examined had expired.
    #[error("conntrack table full ({0} entries)")]
    Full(usize),
    /// This 5-tuple (the flow's original or its reply) belongs to a live entry, or the two
    /// are the same 5-tuple.
    #[error("5-tuple {0:?} already tracked")]
    Clash(FlowKey),
    /// A TCP flow cannot start with these flags (RST, FIN or SYN-ACK; Linux marks such
    /// packets invalid).
    #[error("TCP flags {0:#04x} cannot start a connection")]
    InvalidTcp(u8),
}

/// Event counters of the table, as the API reports them.
///
/// `created = len() + expired + removed + flushed` at all times.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ConntrackCounters {
    /// Entries created.
    pub created: u64,
    /// Lookups that found a live entry.
    pub found: u64,
    /// Creations refused because the table was full.
    pub full: u64,
    /// Creations refused because a 5-tuple was already tracked.
    pub clash: u64,
    /// Creations refused because of the first packet's TCP flags.
    pub invalid: u64,
    /// Entries removed because they expired (by lookup, create or sweep).
    pub expired: u64,
    /// Entries removed one by one ([`Conntrack::remove`], [`Conntrack::remove_backend`]).
    pub removed: u64,
    /// Entries removed by [`Conntrack::flush`].
    pub flushed: u64,
}

impl ConntrackCounters {
    /// Adds another table's counters (the workers' tables add up to the node's).
    pub fn add(&mut self, o: &ConntrackCounters) {
        self.created += o.created;
        self.found += o.found;
        self.full += o.full;
        self.clash += o.clash;
        self.invalid += o.invalid;
        self.expired += o.expired;
        self.removed += o.removed;
        self.flushed += o.flushed;
    }
}

/// A slab slot: one entry on two whole cache lines (the entry is 120 bytes), which a
/// lookup and the update after it touch together and prefetching brings in together.
#[derive(Debug, Clone, Copy)]
#[repr(align(64))]
struct Cell(Option<Entry>);

const _: () = assert!(std::mem::size_of::<Cell>() == 128);

/// The bucket of a 5-tuple in one table's index ([`Conntrack::hash`]), computed ahead of
/// the lookup so that its memory can be prefetched. Only meaningful for the table that
/// computed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowHash(u32);

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
    marks: Option<(std::sync::Arc<crate::pipeline::steer::ReplyMarks>, Ipv4Addr)>,
    /// With several workers: the entries of all their tables, which `max_entries` limits.
    shared_len: Option<std::sync::Arc<std::sync::atomic::AtomicUsize>>,
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
            shared_len: None,
        }
    }

    /// Makes `max_entries` a limit on this table and every other table given the same
    /// counter (the workers' tables: the node's limit). Call on an empty table.
    pub fn share_limit(&mut self, total: std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        total.fetch_add(self.len, std::sync::atomic::Ordering::Relaxed);
        self.shared_len = Some(total);
    }

    /// Takes room for one entry: true if there was room (and, with a shared limit, counts
    /// it there).
    #[inline]
    fn reserve(&self) -> bool {
        use std::sync::atomic::Ordering;
        let max = self.cfg.max_entries;
        match &self.shared_len {
            None => self.len < max,
            Some(total) => total
                .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| (n < max).then_some(n + 1))
                .is_ok(),
        }
    }

    /// Gives back the room of `n` removed entries.
    #[inline]
    fn release(&self, n: usize) {
        if let Some(total) = &self.shared_len {
            total.fetch_sub(n, std::sync::atomic::Ordering::AcqRel);
        }
    }

    /// Keeps `marks` up to date with this table's reply destinations (keys computed with
    /// `gateway`), so other workers steer replies here. Entries already present are marked.
    pub fn set_marks(
        &mut self,
        marks: std::sync::Arc<crate::pipeline::steer::ReplyMarks>,
        gateway: Ipv4Addr,
    ) {
        for e in self.slab.iter().filter_map(|c| c.0.as_ref()) {
            let r = e.reply();
            marks.raise(crate::pipeline::steer::key(gateway, r.dst, r.dport));
        }
        self.marks = Some((marks, gateway));
    }

    #[inline]
    fn unmark(&self, e: &Entry) {
        if let Some((m, gw)) = &self.marks {
            let r = e.reply();
            m.lower(crate::pipeline::steer::key(*gw, r.dst, r.dport));
        }
    }

    /// `key`'s bucket in this table, for [`Conntrack::prefetch_index`],
    /// [`Conntrack::prefetch_entry`] and [`Conntrack::lookup_hashed`].
    #[inline]
    pub fn hash(&self, key: &FlowKey) -> FlowHash {
        let a = u64::from(u32::from(key.src)) << 32 | u64::from(u32::from(key.dst));
        let b = u64::from(key.sport) << 32 | u64::from(key.dport) << 16 | u64::from(key.proto);
        FlowHash(mix64(mix64(a ^ self.seed) ^ b) as u32)
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
    /// expired ones; nothing live is evicted.
    pub fn create(
        &mut self,
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
        if !self.reserve() {
            self.sweep(now, RECLAIM_BUDGET);
            if !self.reserve() {
                self.counters.full += 1;
                return Err(CreateError::Full(self.cfg.max_entries));
            }
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
            m.raise(crate::pipeline::steer::key(*gw, reply.dst, reply.dport));
        }
        self.len += 1;
        self.counters.created += 1;
        Ok(id)
    }

    /// The entry `id`, if present (expired or not).
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
        }
        self.release(n);
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
        self.release(1);
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

/// The state a flow starts in, from its protocol and its first packet's TCP flags.
fn initial_state(proto: u8, first_tcp_flags: Option<u8>) -> Result<CtState, CreateError> {
    match proto {
        PROTO_TCP => {
            let flags = first_tcp_flags.unwrap_or(0);
            let f = TcpFlags(flags);
            if f.contains(TcpFlags::RST) || f.contains(TcpFlags::FIN) {
                Err(CreateError::InvalidTcp(flags))
            } else if f.contains(TcpFlags::SYN) {
                if f.contains(TcpFlags::ACK) {
                    Err(CreateError::InvalidTcp(flags))
                } else {
                    Ok(CtState::Tcp(TcpState::SynSent))
                }
            } else if f.contains(TcpFlags::ACK) {
                // Mid-stream pickup (nf_conntrack_tcp_loose).
                Ok(CtState::Tcp(TcpState::Established))
            } else {
                Err(CreateError::InvalidTcp(flags))
            }
        }
        PROTO_ICMP => Ok(CtState::Icmp),
        _ => Ok(CtState::Udp { assured: false }),
    }
}

/// The TCP state after a packet with `flags` in direction `dir`, from `state`.
///
/// Linux's `tcp_conntracks` table without window tracking, simplified. The packet's kind is
/// decided in Linux's order: RST, then SYN (with or without ACK), then FIN, then ACK; a
/// packet with none of these changes nothing.
///
/// | from \ packet | SYN (orig)        | SYN-ACK (reply) | FIN       | ACK                          |
/// |---------------|-------------------|-----------------|-----------|------------------------------|
/// | SynSent       | SynSent           | SynRecv         | –         | –                            |
/// | SynRecv       | –                 | SynRecv         | FinWait   | Established (orig only)      |
/// | Established   | –                 | –               | FinWait   | –                            |
/// | FinWait       | –                 | –               | LastAck   | CloseWait                    |
/// | CloseWait     | –                 | –               | LastAck   | –                            |
/// | LastAck       | –                 | –               | –         | TimeWait                     |
/// | TimeWait      | SynSent (reopen)  | –               | –         | –                            |
/// | Close         | SynSent (reopen)  | –               | –         | –                            |
///
/// RST gives `Close` from every state; "–" keeps the state. A reopened flow keeps its NAT.
pub fn tcp_next(state: TcpState, dir: Dir, flags: u8) -> TcpState {
    use TcpState::*;
    let f = TcpFlags(flags);
    if f.contains(TcpFlags::RST) {
        return Close;
    }
    if f.contains(TcpFlags::SYN) {
        return match (f.contains(TcpFlags::ACK), dir, state) {
            (false, Dir::Original, TimeWait | Close) => SynSent,
            (true, Dir::Reply, SynSent | SynRecv) => SynRecv,
            _ => state,
        };
    }
    if f.contains(TcpFlags::FIN) {
        return match state {
            SynRecv | Established => FinWait,
            FinWait | CloseWait => LastAck,
            s => s,
        };
    }
    if f.contains(TcpFlags::ACK) {
        return match (dir, state) {
            (Dir::Original, SynRecv) => Established,
            (_, FinWait) => CloseWait,
            (_, LastAck) => TimeWait,
            (_, s) => s,
        };
    }
    state
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    const SYN: u8 = TcpFlags::SYN.0;
    const ACK: u8 = TcpFlags::ACK.0;
    const FIN: u8 = TcpFlags::FIN.0;
    const RST: u8 = TcpFlags::RST.0;
    const SYN_ACK: u8 = SYN | ACK;
    const FIN_ACK: u8 = FIN | ACK;

    const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn client(n: u8, sport: u16, proto: u8) -> FlowKey {
        FlowKey { src: Ipv4Addr::new(10, 0, 0, n), dst: VIP, sport, dport: 80, proto }
    }

    fn to_backend(n: u8) -> Nat {
        Nat { vip: VIP, vport: 80, backend: Ipv4Addr::new(10, 1, 0, n), bport: 8080, snat: None }
    }

    fn table(max: usize) -> Conntrack {
        Conntrack::new(ConntrackConfig { max_entries: max, ..ConntrackConfig::default() })
    }

    /// Runs one packet through the table the way the NAT stage does: lookup, else create.
    fn packet(ct: &mut Conntrack, key: FlowKey, flags: Option<u8>, now: Instant) -> (EntryId, Dir) {
        let (id, dir) = ct.lookup(&key, now).expect("tracked");
        ct.update(id, dir, flags, 100, now);
        (id, dir)
    }

    fn state(ct: &Conntrack, id: EntryId) -> CtState {
        ct.get(id).unwrap().state
    }

    #[test]
    fn tables_sharing_a_limit_hold_max_entries_between_them() {
        let t0 = Instant::now();
        let total = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (mut a, mut b) = (table(3), table(3));
        a.share_limit(total.clone());
        b.share_limit(total.clone());
        let ida = a.create(client(1, 1, PROTO_TCP), to_backend(1), Some(SYN), t0).unwrap();
        b.create(client(2, 1, PROTO_TCP), to_backend(1), Some(SYN), t0).unwrap();
        b.create(client(3, 1, PROTO_TCP), to_backend(1), Some(SYN), t0).unwrap();
        let full = a.create(client(4, 1, PROTO_TCP), to_backend(1), Some(SYN), t0);
        assert!(matches!(full, Err(CreateError::Full(3))), "{full:?}");
        // Room given back by one table is usable by the other.
        assert!(a.remove(ida));
        b.create(client(5, 1, PROTO_TCP), to_backend(1), Some(SYN), t0).unwrap();
        assert_eq!(b.flush(), 3);
        assert_eq!(total.load(std::sync::atomic::Ordering::Relaxed), 0);
    }

    #[test]
    fn found_from_both_directions() {
        let t0 = Instant::now();
        let mut ct = table(16);
        let k = client(1, 40000, PROTO_TCP);
        let id = ct.create(k, to_backend(1), Some(SYN), t0).unwrap();
        let reply = FlowKey {
            src: Ipv4Addr::new(10, 1, 0, 1),
            dst: Ipv4Addr::new(10, 0, 0, 1),
            sport: 8080,
            dport: 40000,
            proto: PROTO_TCP,
        };
        assert_eq!(ct.get(id).unwrap().reply(), reply);
        assert_eq!(ct.lookup(&k, t0), Some((id, Dir::Original)));
        assert_eq!(ct.lookup(&reply, t0), Some((id, Dir::Reply)));
        // The untranslated reverse (VIP -> client) is not a key.
        assert_eq!(ct.lookup(&k.reversed(), t0), None);
        assert_eq!(ct.counters().found, 2);
        assert_eq!(ct.len(), 1);
    }

    #[test]
    fn snat_and_icmp_reply_keys() {
        let t0 = Instant::now();
        let mut ct = table(16);
        let hairpin = Ipv4Addr::new(10, 0, 0, 254);
        let k = client(1, 40000, PROTO_TCP);
        let nat = Nat { snat: Some((hairpin, 61000)), ..to_backend(1) };
        let id = ct.create(k, nat, Some(SYN), t0).unwrap();
        let r = ct.get(id).unwrap().reply();
        assert_eq!(
            (r.src, r.sport, r.dst, r.dport),
            (Ipv4Addr::new(10, 1, 0, 1), 8080, hairpin, 61000)
        );
        assert_eq!(ct.lookup(&r, t0), Some((id, Dir::Reply)));

        let ping = FlowKey {
            src: Ipv4Addr::new(10, 0, 0, 2),
            dst: VIP,
            sport: 7,
            dport: 7,
            proto: PROTO_ICMP,
        };
        let id = ct.create(ping, Nat { vport: 0, bport: 0, ..to_backend(2) }, None, t0).unwrap();
        let r = ct.get(id).unwrap().reply();
        assert_eq!((r.sport, r.dport), (7, 7));
        assert_eq!(state(&ct, id), CtState::Icmp);
        ct.update(id, Dir::Original, None, 84, t0);
        assert_eq!(ct.lookup(&r, t0 + secs(29)), Some((id, Dir::Reply)));
        assert_eq!(ct.lookup(&r, t0 + secs(30)), None);
    }

    #[test]
    fn tcp_lifecycle_to_time_wait_timeout() {
        let t0 = Instant::now();
        let mut ct = table(16);
        let k = client(1, 40000, PROTO_TCP);
        let id = ct.create(k, to_backend(1), Some(SYN), t0).unwrap();
        let r = ct.get(id).unwrap().reply();
        let at = |n| t0 + secs(n);

        packet(&mut ct, k, Some(SYN), at(0));
        assert_eq!(state(&ct, id), CtState::Tcp(TcpState::SynSent));
        assert_eq!(ct.get(id).unwrap().expires, at(120));
        packet(&mut ct, r, Some(SYN_ACK), at(1));
        assert_eq!(state(&ct, id), CtState::Tcp(TcpState::SynRecv));
        assert_eq!(ct.get(id).unwrap().expires, at(61));
        packet(&mut ct, k, Some(ACK), at(2));
        assert_eq!(state(&ct, id), CtState::Tcp(TcpState::Established));
        assert_eq!(ct.get(id).unwrap().expires, at(2 + 432_000));
        // Days later the connection is still there.
        packet(&mut ct, r, Some(ACK), at(400_000));
        packet(&mut ct, k, Some(FIN_ACK), at(400_001));
        assert_eq!(state(&ct, id), CtState::Tcp(TcpState::FinWait));
        packet(&mut ct, r, Some(ACK), at(400_002));
        assert_eq!(state(&ct, id), CtState::Tcp(TcpState::CloseWait));
        packet(&mut ct, r, Some(FIN_ACK), at(400_003));
        assert_eq!(state(&ct, id), CtState::Tcp(TcpState::LastAck));
        packet(&mut ct, k, Some(ACK), at(400_004));
        assert_eq!(state(&ct, id), CtState::Tcp(TcpState::TimeWait));
        let e = ct.get(id).unwrap();
        assert_eq!(e.packets, [4, 4]);
        assert_eq!(e.bytes, [400, 400]);
        assert_eq!(ct.lookup(&k, at(400_004 + 119)), Some((id, Dir::Original)));
        assert_eq!(ct.lookup(&k, at(400_004 + 120)), None);
        assert!(ct.is_empty());
        assert_eq!(ct.counters().expired, 1);
    }

    #[test]
    fn simultaneous_fins_and_reopen() {
        let t0 = Instant::now();
        let mut ct = table(16);
        let k = client(1, 40000, PROTO_TCP);
        let id = ct.create(k, to_backend(1), Some(SYN), t0).unwrap();
        let r = ct.get(id).unwrap().reply();
        for (key, flags) in [(k, SYN), (r, SYN_ACK), (k, ACK), (k, FIN_ACK), (r, FIN_ACK)] {
            packet(&mut ct, key, Some(flags), t0);
        }
        assert_eq!(state(&ct, id), CtState::Tcp(TcpState::LastAck));
        packet(&mut ct, k, Some(ACK), t0);
        assert_eq!(state(&ct, id), CtState::Tcp(TcpState::TimeWait));
        // The client reuses the port: a SYN in TimeWait reopens the same entry.
        packet(&mut ct, k, Some(SYN), t0 + secs(5));
        assert_eq!(state(&ct, id), CtState::Tcp(TcpState::SynSent));
    }

    #[test]
    fn rst_closes_with_short_timeout() {
        let t0 = Instant::now();
        let mut ct = table(16);
        let k = client(1, 40000, PROTO_TCP);
        let id = ct.create(k, to_backend(1), Some(SYN), t0).unwrap();
        let r = ct.get(id).unwrap().reply();
        for (key, flags) in [(k, SYN), (r, SYN_ACK), (k, ACK)] {
            packet(&mut ct, key, Some(flags), t0);
        }
        packet(&mut ct, r, Some(RST | ACK), t0 + secs(50));
        assert_eq!(state(&ct, id), CtState::Tcp(TcpState::Close));
        assert_eq!(ct.get(id).unwrap().expires, t0 + secs(60));
        assert_eq!(ct.sweep(t0 + secs(59), 100), 0);
        assert_eq!(ct.sweep(t0 + secs(60), 100), 1);
        assert!(ct.is_empty());
    }

    #[test]
    fn invalid_first_packets_and_pickup() {
        let t0 = Instant::now();
        let mut ct = table(16);
        for flags in [RST, RST | ACK, FIN_ACK, SYN_ACK, 0] {
            assert_eq!(
                ct.create(client(1, 1, PROTO_TCP), to_backend(1), Some(flags), t0),
                Err(CreateError::InvalidTcp(flags))
            );
        }
        assert_eq!(ct.counters().invalid, 5);
        assert!(ct.is_empty());
        // A mid-stream ACK is picked up, but not kept long without a reply.
        let k = client(1, 2, PROTO_TCP);
        let id = ct.create(k, to_backend(1), Some(ACK), t0).unwrap();
        packet(&mut ct, k, Some(ACK), t0);
        assert_eq!(state(&ct, id), CtState::Tcp(TcpState::Established));
        assert_eq!(ct.get(id).unwrap().expires, t0 + secs(120));
        let r = ct.get(id).unwrap().reply();
        packet(&mut ct, r, Some(ACK), t0 + secs(1));
        assert_eq!(ct.get(id).unwrap().expires, t0 + secs(1 + 432_000));
    }

    #[test]
    fn udp_assured_after_reply() {
        let t0 = Instant::now();
        let mut ct = table(16);
        let a = client(1, 5353, 17);
        let b = client(2, 5353, 17);
        let ida = ct.create(a, to_backend(1), None, t0).unwrap();
        let idb = ct.create(b, to_backend(1), None, t0).unwrap();
        packet(&mut ct, a, None, t0);
        packet(&mut ct, b, None, t0);
        assert_eq!(state(&ct, ida), CtState::Udp { assured: false });
        let ra = ct.get(ida).unwrap().reply();
        packet(&mut ct, ra, None, t0 + secs(1));
        assert_eq!(state(&ct, ida), CtState::Udp { assured: true });
        assert_eq!(state(&ct, ida).to_string(), "udp_assured");
        // Unreplied: 30 s. Replied: 120 s from the last packet.
        assert_eq!(ct.lookup(&b, t0 + secs(30)), None);
        assert_eq!(ct.lookup(&a, t0 + secs(120)), Some((ida, Dir::Original)));
        assert_eq!(ct.lookup(&a, t0 + secs(121)), None);
        assert_eq!(ct.get(idb), None);
    }

    #[test]
    fn full_table_refuses_never_evicts_then_accepts() {
        let t0 = Instant::now();
        let mut ct = table(2);
        let a = client(1, 1, 17);
        let b = client(2, 1, 17);
        let c = client(3, 1, 17);
        let ida = ct.create(a, to_backend(1), None, t0).unwrap();
        packet(&mut ct, a, None, t0);
        ct.update(ida, Dir::Reply, None, 10, t0); // a: assured, 120 s
        let idb = ct.create(b, to_backend(1), None, t0).unwrap(); // b: 30 s
        assert_eq!(ct.create(c, to_backend(1), None, t0 + secs(10)), Err(CreateError::Full(2)));
        assert_eq!(ct.create(c, to_backend(1), None, t0 + secs(10)), Err(CreateError::Full(2)));
        assert_eq!(ct.counters().full, 2);
        assert_eq!(ct.lookup(&a, t0 + secs(10)), Some((ida, Dir::Original)));
        assert_eq!(ct.lookup(&b, t0 + secs(10)), Some((idb, Dir::Original)));
        // b expires (not yet swept): the full table reclaims it for the new flow.
        let idc = ct.create(c, to_backend(1), None, t0 + secs(31)).unwrap();
        assert_eq!(ct.len(), 2);
        assert_eq!(ct.lookup(&a, t0 + secs(31)), Some((ida, Dir::Original)));
        assert_eq!(ct.lookup(&b, t0 + secs(31)), None);
        // Removal makes room too.
        assert!(ct.remove(idc));
        assert!(!ct.remove(idc));
        ct.create(b, to_backend(1), None, t0 + secs(32)).unwrap();
        let c = ct.counters();
        assert_eq!((c.created, c.expired, c.removed), (4, 1, 1));
    }

    #[test]
    fn clash_and_expired_holder() {
        let t0 = Instant::now();
        let mut ct = table(16);
        let snat = Some((Ipv4Addr::new(10, 0, 0, 254), 61000));
        let a = client(1, 1000, 17);
        let b = client(2, 2000, 17);
        ct.create(a, Nat { snat, ..to_backend(1) }, None, t0).unwrap();
        assert_eq!(ct.create(a, to_backend(2), None, t0), Err(CreateError::Clash(a)));
        // Same backend and same snat port: the reply 5-tuples collide.
        let nat = Nat { snat, ..to_backend(1) };
        let err = ct.create(b, nat, None, t0).unwrap_err();
        assert_eq!(err, CreateError::Clash(reply_key(&b, &nat)));
        assert_eq!(ct.counters().clash, 2);
        // Once the holder expired, the key is free.
        assert!(ct.create(b, nat, None, t0 + secs(30)).is_ok());
        assert_eq!(ct.len(), 1);
        assert_eq!(ct.counters().expired, 1);
    }

    #[test]
    fn sweep_respects_budget_and_eventually_removes_all() {
        let t0 = Instant::now();
        let mut ct = table(100);
        for i in 0..50 {
            ct.create(client(1, i, 17), to_backend(1), None, t0).unwrap();
        }
        for i in 0..10 {
            let id = ct.create(client(2, i, 17), to_backend(1), None, t0).unwrap();
            ct.update(id, Dir::Reply, None, 1, t0); // assured: lives 120 s
        }
        let later = t0 + secs(60);
        let mut total = 0;
        let mut calls = 0;
        while total < 50 {
            let n = ct.sweep(later, 7);
            assert!(n <= 7);
            total += n;
            calls += 1;
            assert!(calls <= 9, "one pass over 60 slots takes 9 calls of 7");
        }
        assert_eq!(ct.len(), 10);
        assert_eq!(ct.sweep(later, 1000), 0);
        assert_eq!(ct.counters().expired, 50);
        assert_eq!(ct.sweep(t0 + secs(120), usize::MAX), 10);
        assert!(ct.is_empty());
        assert_eq!(ct.sweep(t0 + secs(120), 10), 0);
    }

    #[test]
    fn remove_backend_and_flush() {
        let t0 = Instant::now();
        let mut ct = table(16);
        for i in 0..6u8 {
            ct.create(client(i, 1, PROTO_TCP), to_backend(i % 2), Some(SYN), t0).unwrap();
        }
        ct.create(client(9, 1, 17), to_backend(0), None, t0).unwrap();
        assert_eq!(ct.remove_backend(Ipv4Addr::new(10, 1, 0, 0), 8080, PROTO_TCP), 3);
        assert_eq!(ct.remove_backend(Ipv4Addr::new(10, 1, 0, 1), 9999, PROTO_TCP), 0);
        assert_eq!(ct.len(), 4);
        assert!(ct
            .entries(t0, 100)
            .iter()
            .all(|e| e.nat.backend != Ipv4Addr::new(10, 1, 0, 0) || e.original.proto == 17));
        assert_eq!(ct.lookup(&client(0, 1, PROTO_TCP), t0), None);
        assert_eq!(ct.counters().removed, 3);
        assert_eq!(ct.flush(), 4);
        assert!(ct.is_empty());
        assert_eq!(ct.lookup(&client(1, 1, PROTO_TCP), t0), None);
        assert_eq!(ct.counters().flushed, 4);
        // Usable again after a flush.
        let id = ct.create(client(1, 1, PROTO_TCP), to_backend(1), Some(SYN), t0).unwrap();
        assert_eq!(ct.lookup(&client(1, 1, PROTO_TCP), t0), Some((id, Dir::Original)));
    }

    #[test]
    fn entries_are_live_oldest_first_and_limited() {
        let t0 = Instant::now();
        let mut ct = table(16);
        for (i, at) in [(3u16, 5u64), (1, 1), (2, 3), (4, 0)] {
            ct.create(client(1, i, 17), to_backend(1), None, t0 + secs(at)).unwrap();
        }
        let ports = |v: Vec<Entry>| v.iter().map(|e| e.original.sport).collect::<Vec<_>>();
        assert_eq!(ports(ct.entries(t0 + secs(5), 10)), vec![4, 1, 2, 3]);
        assert_eq!(ports(ct.entries(t0 + secs(5), 2)), vec![4, 1]);
        assert_eq!(ports(ct.entries(t0 + secs(5), 0)), Vec::<u16>::new());
        // The entry created at 0 expired at 30.
        assert_eq!(ports(ct.entries(t0 + secs(30), 10)), vec![1, 2, 3]);
    }

    #[test]
    fn hash64_is_stable_and_mixed() {
        let k = client(1, 40000, PROTO_TCP);
        assert_eq!(k.hash64(), k.hash64());
        assert_eq!(k.hash64(), 0x810c_03e4_2b5e_5f7a);
        assert_ne!(k.hash64(), k.reversed().hash64());
        let variants = [
            client(2, 40000, PROTO_TCP),
            client(1, 40001, PROTO_TCP),
            client(1, 40000, 17),
            FlowKey { dport: 81, ..k },
            FlowKey { dst: Ipv4Addr::new(10, 96, 0, 11), ..k },
        ];
        for v in variants {
            let diff = (k.hash64() ^ v.hash64()).count_ones();
            assert!((16..=48).contains(&diff), "{v:?}: {diff} bits differ");
        }
        // Low bits spread evenly across a small backend set.
        let mut buckets = [0u32; 4];
        for p in 0..4000 {
            buckets[(client(1, p, PROTO_TCP).hash64() % 4) as usize] += 1;
        }
        assert!(buckets.iter().all(|&b| (850..1150).contains(&b)), "{buckets:?}");
    }

    #[test]
    fn index_grows_past_the_reserve_and_finds_both_directions() {
        let t0 = Instant::now();
        let cfg = ConntrackConfig { max_entries: 2000, ..ConntrackConfig::default() };
        let mut ct = Conntrack::with_reserve(cfg, 4);
        let key = |i: u16| client((i / 500) as u8, i, PROTO_TCP);
        let ids: Vec<EntryId> = (0..2000)
            .map(|i| ct.create(key(i), to_backend((i % 3) as u8), Some(SYN), t0).unwrap())
            .collect();
        assert!(ct.create(key(3000), to_backend(0), Some(SYN), t0).is_err());
        for i in (0..2000u16).step_by(2) {
            assert!(ct.remove(ids[usize::from(i)]));
        }
        for i in 0..2000u16 {
            let id = ids[usize::from(i)];
            let found = ct.lookup(&key(i), t0);
            if i % 2 == 0 {
                assert_eq!(found, None);
            } else {
                assert_eq!(found, Some((id, Dir::Original)));
                let reply = ct.get(id).unwrap().reply();
                let h = ct.hash(&reply);
                ct.prefetch_index(h);
                ct.prefetch_entry(h);
                assert_eq!(ct.lookup_hashed(&reply, h, t0), Some((id, Dir::Reply)));
            }
        }
        assert_eq!(ct.index.len(), 2 * ct.len());
    }

    #[test]
    fn bytes_per_entry_is_reported() {
        let b = Conntrack::bytes_per_entry();
        assert!(b >= std::mem::size_of::<Entry>() + 2 * std::mem::size_of::<FlowKey>());
        assert!(b < 256, "{b}");
    }

    #[test]
    fn serde_and_display_names() {
        assert_eq!(TcpState::TimeWait.to_string(), "time_wait");
        assert_eq!(CtState::Tcp(TcpState::SynSent).to_string(), "tcp syn_sent");
        let j = serde_json::to_string(&CtState::Tcp(TcpState::CloseWait)).unwrap();
        assert_eq!(j, r#"{"tcp":"close_wait"}"#);
        let j = serde_json::to_string(&CtState::Udp { assured: true }).unwrap();
        assert_eq!(j, r#"{"udp":{"assured":true}}"#);
    }

    // ---- Model-based property test ----

    #[derive(Clone, Debug)]
    enum Op {
        Create { client: u8, sport: u16, backend: u8, snat: Option<u16>, tcp: bool, flags: u8 },
        Lookup { client: u8, sport: u16, backend: u8, snat: Option<u16>, tcp: bool, reply: bool },
        Update { pick: usize, reply: bool, flags: u8, len: u16 },
        Advance { secs: u64 },
        Sweep { budget: usize },
        Remove { pick: usize },
        RemoveBackend { backend: u8, tcp: bool },
        Flush,
    }

    fn flags() -> impl Strategy<Value = u8> {
        prop::sample::select(vec![SYN, SYN_ACK, ACK, FIN_ACK, RST, RST | ACK, 0])
    }

    fn op() -> impl Strategy<Value = Op> {
        let snat = prop::option::weighted(0.3, 0u16..3);
        prop_oneof![
            6 => (0u8..4, 0u16..3, 0u8..3, snat.clone(), any::<bool>(), flags()).prop_map(
                |(client, sport, backend, snat, tcp, flags)| Op::Create { client, sport, backend, snat, tcp, flags }
            ),
            6 => (0u8..4, 0u16..3, 0u8..3, snat, any::<bool>(), any::<bool>()).prop_map(
                |(client, sport, backend, snat, tcp, reply)| Op::Lookup { client, sport, backend, snat, tcp, reply }
            ),
            6 => (any::<usize>(), any::<bool>(), flags(), 0u16..1500)
                .prop_map(|(pick, reply, flags, len)| Op::Update { pick, reply, flags, len }),
            3 => prop::sample::select(vec![0u64, 1, 5, 29, 30, 60, 119, 121, 500]).prop_map(|secs| Op::Advance { secs }),
            2 => prop::sample::select(vec![0usize, 1, 3, 10, usize::MAX]).prop_map(|budget| Op::Sweep { budget }),
            2 => any::<usize>().prop_map(|pick| Op::Remove { pick }),
            1 => (0u8..3, any::<bool>()).prop_map(|(backend, tcp)| Op::RemoveBackend { backend, tcp }),
            1 => Just(Op::Flush),
        ]
    }

    fn flow(client: u8, sport: u16, backend: u8, snat: Option<u16>, tcp: bool) -> (FlowKey, Nat) {
        let proto = if tcp { PROTO_TCP } else { 17 };
        let k = self::client(client, 1000 + sport, proto);
        let nat = Nat {
            snat: snat.map(|p| (Ipv4Addr::new(10, 0, 0, 254), 61000 + p)),
            ..to_backend(backend)
        };
        (k, nat)
    }

    #[derive(Debug)]
    struct Model {
        /// id -> (original, reply, expires)
        entries: BTreeMap<EntryId, (FlowKey, FlowKey, Instant)>,
        index: BTreeMap<FlowKey, (EntryId, Dir)>,
    }

    impl Model {
        fn remove(&mut self, id: EntryId) {
            let (o, r, _) = self.entries.remove(&id).unwrap();
            self.index.remove(&o);
            self.index.remove(&r);
        }

        /// Drops model entries the table no longer holds (an id may hold a new entry: a
        /// reused id, possibly for the same 5-tuple, differs in its expiry); each must have
        /// been expired.
        /// Returns how many.
        fn sync(&mut self, ct: &Conntrack, now: Instant) -> usize {
            let gone: Vec<EntryId> = self
                .entries
                .iter()
                .filter(|(id, (o, _, exp))| {
                    ct.get(**id).map(|e| (e.original, e.expires)) != Some((*o, *exp))
                })
                .map(|(id, _)| *id)
                .collect();
            for &id in &gone {
                assert!(now >= self.entries[&id].2, "live entry {id} vanished");
                self.remove(id);
            }
            gone.len()
        }
    }

    fn run(ops: Vec<Op>, max: usize) {
        let t0 = Instant::now();
        let mut now = t0;
        let mut ct = table(max);
        let mut m = Model { entries: BTreeMap::new(), index: BTreeMap::new() };
        for op in ops {
            match op {
                Op::Create { client, sport, backend, snat, tcp, flags } => {
                    let (k, nat) = flow(client, sport, backend, snat, tcp);
                    let reply = reply_key(&k, &nat);
                    let res = ct.create(k, nat, tcp.then_some(flags), now);
                    let valid = !tcp || flags == SYN || flags == ACK;
                    if !valid {
                        assert_eq!(res, Err(CreateError::InvalidTcp(flags)));
                        continue;
                    }
                    let live_clash = [k, reply]
                        .into_iter()
                        .find(|key| m.index.get(key).is_some_and(|(id, _)| now < m.entries[id].2));
                    // Whatever the outcome, the table may have dropped expired entries.
                    m.sync(&ct, now);
                    if let Some(key) = live_clash {
                        assert_eq!(res, Err(CreateError::Clash(key)));
                        continue;
                    }
                    match res {
                        Ok(id) => {
                            assert!(m.entries.len() < max);
                            let e = ct.get(id).unwrap();
                            assert_eq!((e.original, e.reply()), (k, reply));
                            m.entries.insert(id, (k, reply, e.expires));
                            m.index.insert(k, (id, Dir::Original));
                            m.index.insert(reply, (id, Dir::Reply));
                        }
                        Err(CreateError::Full(n)) => {
                            assert_eq!(n, max);
                            assert_eq!(m.entries.len(), max);
                            // The reclaim slice covered the whole (small) table.
                            assert!(m.entries.values().all(|e| now < e.2));
                        }
                        Err(e) => panic!("unexpected {e:?}"),
                    }
                }
                Op::Lookup { client, sport, backend, snat, tcp, reply } => {
                    let (k, nat) = flow(client, sport, backend, snat, tcp);
                    let key = if reply { reply_key(&k, &nat) } else { k };
                    let got = ct.lookup(&key, now);
                    match m.index.get(&key).copied() {
                        Some((id, dir)) if now < m.entries[&id].2 => {
                            assert_eq!(got, Some((id, dir)))
                        }
                        Some((id, _)) => {
                            assert_eq!(got, None);
                            m.remove(id);
                        }
                        None => assert_eq!(got, None),
                    }
                }
                Op::Update { pick, reply, flags, len } => {
                    if m.entries.is_empty() {
                        continue;
                    }
                    let id = *m.entries.keys().nth(pick % m.entries.len()).unwrap();
                    let dir = if reply { Dir::Reply } else { Dir::Original };
                    let before = *ct.get(id).unwrap();
                    let is_tcp = before.original.proto == PROTO_TCP;
                    ct.update(id, dir, is_tcp.then_some(flags), usize::from(len), now);
                    let after = *ct.get(id).unwrap();
                    assert_eq!(after.packets[dir.index()], before.packets[dir.index()] + 1);
                    assert_eq!(
                        after.bytes[dir.index()],
                        before.bytes[dir.index()] + u64::from(len)
                    );
                    assert_eq!(after.last_seen, now);
                    if !is_tcp {
                        // UDP's timeout, computed independently.
                        let assured = after.packets[1] > 0;
                        assert_eq!(after.state, CtState::Udp { assured });
                        assert_eq!(after.expires, now + secs(if assured { 120 } else { 30 }));
                    }
                    m.entries.get_mut(&id).unwrap().2 = after.expires;
                }
                Op::Advance { secs: s } => now += secs(s),
                Op::Sweep { budget } => {
                    let n = ct.sweep(now, budget);
                    assert!(n <= budget);
                    assert_eq!(m.sync(&ct, now), n);
                    if budget >= max {
                        assert!(m.entries.values().all(|e| now < e.2));
                    }
                }
                Op::Remove { pick } => {
                    if m.entries.is_empty() {
                        assert!(!ct.remove(pick as EntryId % 8));
                        continue;
                    }
                    let id = *m.entries.keys().nth(pick % m.entries.len()).unwrap();
                    assert!(ct.remove(id));
                    m.remove(id);
                    assert!(!ct.remove(id));
                }
                Op::RemoveBackend { backend, tcp } => {
                    let ip = Ipv4Addr::new(10, 1, 0, backend);
                    let proto = if tcp { PROTO_TCP } else { 17 };
                    let expect: Vec<EntryId> = m
                        .entries
                        .iter()
                        .filter(|(id, _)| {
                            let e = ct.get(**id).unwrap();
                            e.nat.backend == ip && e.original.proto == proto
                        })
                        .map(|(id, _)| *id)
                        .collect();
                    assert_eq!(ct.remove_backend(ip, 8080, proto), expect.len());
                    for id in expect {
                        m.remove(id);
                    }
                }
                Op::Flush => {
                    assert_eq!(ct.flush(), m.entries.len());
                    m.entries.clear();
                    m.index.clear();
                }
            }
            assert_eq!(ct.len(), m.entries.len());
            assert_eq!(ct.index.len(), 2 * ct.len());
            let c = ct.counters();
            assert_eq!(c.created, ct.len() as u64 + c.expired + c.removed + c.flushed);
            let live = m.entries.values().filter(|e| now < e.2).count();
            assert_eq!(ct.entries(now, usize::MAX).len(), live);
        }
    }

    proptest! {
        #[test]
        fn behaves_like_a_model(ops in prop::collection::vec(op(), 1..200), max in 1usize..12) {
            run(ops, max);
        }
    }
}
