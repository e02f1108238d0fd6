//! The switch's tables. Each has a capacity, a documented behaviour when full, and its own
//! counters; stages reach them only through their methods.
//!
//! - [`conntrack`]: connection tracking for Service NAT, both directions -> one entry; TCP
//!   states and timeouts; bounded, never evicts; swept in bounded slices.
//! - [`fdb`]: `(network, MAC) -> port`, learned, aged, bounded.
//! - [`neigh`]: `pod IP -> (MAC, port)`, written by the control plane; answers ARP and routes.
//! - [`ipam`]: which pod-CIDR addresses are taken (control plane only).
//! - [`maglev`]: Maglev consistent-hash lookup tables (pure functions, no state).
//! - [`peers`]: overlay peers: pod CIDR -> node, underlay address -> node.
//! - [`services`]: `VIP:port/proto -> endpoints`; picks an endpoint for a new flow.
//! - [`steer_marks`]: which reply destinations have connections, shared by the workers.

pub mod conntrack;
pub mod fdb;
pub mod frags;
pub mod ipam;
pub mod maglev;
pub mod neigh;
pub mod peers;
pub mod services;
pub mod steer_marks;

/// The prefetch hint of the batched lookups (in `podswitch-sys`, being `unsafe` to call).
pub(crate) use crate::sys::prefetch::prefetch;
