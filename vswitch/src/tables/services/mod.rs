//! The Service table: `VIP:port/proto -> endpoints`, consulted by the packet pipeline for the
//! first packet of a connection to a VIP. Later packets follow conntrack, not this table.
//!
//! What it owns: the choice of an endpoint for a new flow, from a table of Services derived
//! from their specs. Its parts: [`spec`] (the API shapes and their validation: the
//! `podswitch-api` crate's `service`, re-exported here), `table` (the indexes, building and editing), `lookup` (selection, and the
//! per-worker state it needs: [`ServiceState`]). What it does not own: flow state, NAT,
//! session affinity (the caller keeps the stickiness), and publishing: the control plane
//! builds a table off to the side, whole with [`ServiceTable::from_specs`] or by editing a
//! clone (cheap: Services are shared, only what changes is rebuilt), and hands every worker
//! the same immutable table as an `Arc`, swapped in between bursts. Nothing on the packet
//! path writes to a table.
//!
//! Behaviour a user can rely on:
//! - **Eligibility**: only endpoints that are ready and not terminating are picked for new
//!   flows. [`ServiceTable::has_endpoint`] still knows the others, so flows already on a
//!   terminating endpoint are not reset.
//! - **Algorithms** ([`Algorithm`]): `maglev` (default) indexes a per-service Maglev table
//!   with the flow hash, so every node picks the same endpoint for the same 5-tuple;
//!   `random` uses the flow hash as its randomness; `round_robin` uses a per-service cursor
//!   kept by each worker ([`ServiceState`]; it starts again when the Service changes). All
//!   three honour endpoint weights. Eligible endpoints are kept sorted by `(ip, port)`, so
//!   the choice depends on the set of endpoints, not on the order the API listed them in.
//! - **Maglev table size**: [`maglev::table_size`] of the number of *all* endpoints of the
//!   service (in any state), capped at `maglev_max`. Not of the eligible ones: changing the
//!   size reshuffles the whole table, and readiness flaps are the common change, so an
//!   endpoint going not-ready or terminating only hands its own entries to the others.
//!   A Service whose endpoints change keeps its size while it still gives each endpoint 50
//!   to 400 entries ([`maglev::resize`]; an apply inherits sizes from the table it
//!   replaces), so adding or removing a few endpoints moves only the flows it must.
//! - **Identity**: a spec is one port of a Service: `(namespace, name, port, protocol)`.
//!   All ports of one Service share its VIP; deleting the Service removes them all.
//! - **Full**: at `max_services` services, adding a new one is refused
//!   ([`ServiceErrorKind::Full`]; the control plane counts it in `full_refusals`);
//!   replacing an existing one still works. Nothing is evicted.
//!
//! Limits: [`MAX_ENDPOINTS`] endpoints per service; the Maglev table holds `table_size(n)`
//! `u16` entries, at most `maglev_max` (the default cap, 65,537 entries, is 128 KiB).
//! Building 10,000 services of 2 endpoints (Maglev tables of 211 entries) with `from_specs`
//! took 27-29 ms in release on a 2-CPU development VM (up to 50 ms while it was busy with
//! other builds), 50,000 about 150 ms (linear); about
//! 60% of it is Maglev population (`M ln M`, some 1,100 probes per 211-entry table). One
//! edit of a clone is linear in the table's size, the Service map being copied (its entries
//! are pointers); the name index is shared per namespace until a Service is added to or
//! removed from it. In release on the same VM, loaded (from_specs: 58 and 181 ms):
//! replacing one Service's endpoints took 0.4 ms at 10,000 Services and 1.8 ms at 50,000;
//! adding one, all Services in one namespace (the worst case), 0.8 ms and 9.7 ms.
//! The ignored test `build_time` prints these figures.
//!
//! Lookups are one hash probe ([`ServiceTable::get`], [`ServiceTable::select`]); `select` does
//! not allocate.

mod lookup;
mod table;

pub use podswitch_api::service as spec;

pub use lookup::{Selection, ServiceCounters, ServiceState};
pub use spec::{
    Algorithm, Endpoint, L4Proto, ServiceError, ServiceErrorKind, ServiceKey, ServiceSpec,
    MAX_AFFINITY_SECS, MAX_ENDPOINTS, NODE_PORT_RANGE,
};
pub use table::ServiceTable;

#[cfg(test)]
use crate::tables::maglev;

#[cfg(test)]
mod tests;
