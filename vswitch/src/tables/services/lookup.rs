//! The per-packet side of the Service table: picking an endpoint for a new flow from a
//! published (immutable) [`ServiceTable`], with the mutable part of the choice (round-robin
//! cursors) and the event counters kept apart in a [`ServiceState`] that each worker owns.
//!
//! Why apart: the table is built once by the control plane and shared by every worker as
//! one `Arc`; nothing a packet does may write to it. Each worker's NAT stage holds its own
//! `ServiceState`, indexed by the Service's *slot* (a small number the table gives each
//! Service and keeps while the Service exists), so a lookup costs no hash and no allocation.
//!
//! What resets when a Service changes (any edit that rebuilds it: `service add` of a changed
//! spec, `endpoint set` with other endpoints, an apply that changes it): its round-robin cursor starts again at
//! the first endpoint (each rebuilt Service has a new [`version`](ServiceTable::version_of),
//! and a cursor of another version counts as unset). An unchanged Service keeps its cursor
//! across snapshots, an apply included. Counters are per worker and never reset; the
//! control plane sums them.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::spec::{Algorithm, ServiceKey};
use super::table::ServiceTable;
use crate::tables::maglev;

/// What the pipeline gets for a new flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    /// Send the flow here.
    Endpoint {
        /// The endpoint's address.
        ip: Ipv4Addr,
        /// Its port.
        port: u16,
    },
    /// The key is a Service, but none of its endpoints is eligible (reject the flow).
    NoEndpoints,
    /// No Service at this key (leave the packet alone).
    NotAService,
}

/// Event counters of Service selection. On a worker, `selected + no_endpoints +
/// not_a_service` is the number of [`ServiceTable::select`] calls it made; `full_refusals`
/// is counted by the control plane (which alone edits tables).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceCounters {
    /// New flows given an endpoint.
    pub selected: u64,
    /// New flows to a Service without an eligible endpoint.
    pub no_endpoints: u64,
    /// `select` calls for a key that is no Service.
    pub not_a_service: u64,
    /// New Services refused because the table was full.
    pub full_refusals: u64,
}

impl ServiceCounters {
    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &ServiceCounters) {
        self.selected += other.selected;
        self.no_endpoints += other.no_endpoints;
        self.not_a_service += other.not_a_service;
        self.full_refusals += other.full_refusals;
    }
}

/// A round-robin position, valid for one version of one Service.
#[derive(Debug, Clone, Copy, Default)]
struct Cursor {
    /// The Service version it belongs to (0: never used; versions start at 1).
    version: u64,
    /// Next weight unit to hand out.
    next: u64,
}

/// One worker's mutable Service state: round-robin cursors by slot, and counters. Sized
/// by [`ServiceState::adopt`] when a table is installed (between bursts), never on the
/// packet path; at most the table's slot count (bounded by its `max_services`).
#[derive(Debug, Clone, Default)]
pub struct ServiceState {
    cursors: Vec<Cursor>,
    counters: ServiceCounters,
}

impl ServiceState {
    /// No cursors, zero counters.
    pub fn new() -> ServiceState {
        ServiceState::default()
    }

    /// Makes room for every slot of `table` (call when installing it). Cursors of slots
    /// now held by another Service, or by a new version of theirs, are reset by
    /// [`ServiceTable::select`] on first use.
    pub fn adopt(&mut self, table: &ServiceTable) {
        let n = table.slots();
        if self.cursors.len() < n {
            self.cursors.resize(n, Cursor::default());
        }
    }

    /// This worker's counters.
    pub fn counters(&self) -> ServiceCounters {
        self.counters
    }
}

impl ServiceTable {
    /// Picks an endpoint for a NEW flow to `key`. Only endpoints that are ready and not
    /// terminating are eligible. `flow_hash` is a hash of the flow's 5-tuple (the caller
    /// computes it); random uses it as its randomness, maglev indexes its table with it,
    /// round_robin advances this worker's cursor in `state`. With session affinity the
    /// caller handles stickiness (not this table). Does not allocate.
    #[inline]
    pub fn select(&self, key: &ServiceKey, flow_hash: u64, state: &mut ServiceState) -> Selection {
        let Some(svc) = self.service(key) else {
            state.counters.not_a_service += 1;
            return Selection::NotAService;
        };
        let total = match svc.cumulative.last() {
            Some(&t) => u64::from(t),
            None => {
                state.counters.no_endpoints += 1;
                return Selection::NoEndpoints;
            }
        };
        let (ip, port) = match svc.spec.algorithm {
            Algorithm::Maglev => {
                let e = svc.maglev[(flow_hash % svc.maglev.len() as u64) as usize];
                svc.eligible[usize::from(e)]
            }
            // Mixed first: the caller's hash need not have good low bits.
            Algorithm::Random => svc.by_weight(maglev::mix64(flow_hash) % total),
            Algorithm::RoundRobin => {
                let mut spare = Cursor::default();
                let c = state.cursors.get_mut(svc.slot as usize).unwrap_or(&mut spare);
                if c.version != svc.version {
                    *c = Cursor { version: svc.version, next: 0 };
                }
                let r = c.next % total;
                c.next = (r + 1) % total;
                svc.by_weight(r)
            }
        };
        state.counters.selected += 1;
        Selection::Endpoint { ip, port }
    }
}
