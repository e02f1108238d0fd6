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
//!   ones (one [`Conntrack::sweep`] slice of [`RECLAIM_BUDGET`] slots), then, like Linux's
//!   `early_drop`, removes one *unassured* entry ([`Entry::is_early_droppable`]: a TCP
//!   handshake or closing connection, UDP without a reply, ICMP echo) among the
//!   [`EARLY_DROP_SCAN`] index slots from the new flow's bucket on, counted in
//!   `early_drop`. Only if none is found there is the new flow refused with
//!   [`CreateError::Full`] and counted in `full`. Assured connections (established TCP,
//!   answered UDP) are never evicted: a flood of new flows (a SYN flood to a Service VIP,
//!   UDP to a silent endpoint) displaces only its own kind, and cannot break connections
//!   that are already established.
//! - **Per-pod share**: an entry created with [`Conntrack::create_for`] belongs to the pod
//!   port the flow came from; a port holding `max_per_port` entries gets its new flows
//!   refused ([`CreateError::PortLimit`], counted in `port_limit`) while other ports still
//!   open theirs. The per-port counts ([`SharedCounts`], [`PORT_SLOTS`] of them, one per
//!   possible port id) are kept exact on every create and removal (expiry, sweep, early
//!   drop, `remove`, `remove_backend`, `flush`, and [`Conntrack::remove_port`], which
//!   removes a departed port's entries).
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
//! a flow must be handled by the same table (flow steering sees to that with several
//! workers). With several workers the entry counts the two limits apply to are shared
//! ([`Conntrack::share_limit`]): atomics changed on creation and removal, never per packet.
//! Early drop only looks at the creating worker's own table.
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
//!
//! Layout (after OVS's `conntrack.c` / `conntrack-tcp.c` / `conntrack-tp.c`):
//! - `key`: the 5-tuple ([`FlowKey`]), the translation ([`Nat`]), the direction ([`Dir`])
//!   and how a flow's reply key follows from its original key and translation.
//! - `tcp`: protocol states ([`CtState`], [`TcpState`]), the state a flow starts in, and
//!   the TCP state machine ([`tcp_next`]).
//! - `timeouts`: the limit and per-state timeouts ([`ConntrackConfig`]).
//! - `table`: the table itself ([`Conntrack`], [`Entry`]): slab, counters, limits, sweeping.
//! - `index`: the open-addressing hash index the table finds entries by.

mod index;
mod key;
mod table;
mod tcp;
mod timeouts;

pub use key::{CreateError, Dir, FlowKey, Nat};
pub use table::{
    Conntrack, ConntrackCounters, Entry, EntryId, FlowHash, SharedCounts, EARLY_DROP_SCAN,
    MAX_ENTRIES_LIMIT, PORT_SLOTS, PREALLOCATE_MAX, RECLAIM_BUDGET,
};
pub use tcp::{tcp_next, CtState, TcpState};
pub use timeouts::ConntrackConfig;
