//! Counters as the API reports them: one port's, the MAC table's and the
//! connection-tracking table's. The dataplane counts into its own per-worker structures and
//! converts or sums into these; the types live here so that clients need not link the
//! dataplane to read them.

use serde::{Deserialize, Serialize};

/// The list of port counters, written once: invokes `$callback!` with every counter as
/// `doc comments, optional #[serde(..)], name,`. This crate builds [`PortStatsReport`] from
/// it; the switch builds its per-worker `PortCounters`, their sum and their conversion to
/// the report from it, so a counter added here is counted, summed, reported and serialized
/// everywhere. `#[serde(default)]` marks the counters added after the first API version (an
/// older reply without them still reads).
#[macro_export]
macro_rules! port_counter_list {
    ($callback:ident) => {
        $callback! {
            /// Frames read from the port.
            rx_packets,
            /// Bytes of frames read from the port.
            rx_bytes,
            /// Frames written to the port.
            tx_packets,
            /// Bytes of frames written to the port.
            tx_bytes,
            /// Of `tx_packets`, super-frames merged from two or more frames (software GRO).
            #[serde(default)]
            tx_gro_frames,
            /// Frames carried by those `tx_gro_frames`.
            #[serde(default)]
            tx_gro_merged,
            /// Overlay port: `UDP_SEGMENT` sends, each carrying several of the `tx_packets`
            /// datagrams (a super-frame's segments) in one syscall.
            #[serde(default)]
            tx_gso_sends,
            /// Frames from this port flooded (broadcast, multicast, unknown unicast).
            flooded,
            /// Of `flooded`, unicast frames whose destination MAC was not in the MAC table.
            unknown_unicast,
            /// ARP requests from this port that the switch answered itself.
            arp_replies,
            /// ICMP echo requests to the gateway from this port answered by the switch.
            icmp_echo_replies,
            /// Frames from this port routed by the gateway (TTL decremented, MACs rewritten),
            /// to a local pod or through the overlay to a peer.
            routed,
            /// Packets from this port too big for the overlay with DF set, answered with ICMP
            /// "fragmentation needed" so path MTU discovery works.
            #[serde(default)]
            frag_needed,
            /// Packets from this port to a Service that could not take them (no ready endpoint, an
            /// endpoint removed under an open connection, an unknown port on a Service address),
            /// answered with a TCP reset or ICMP port unreachable.
            #[serde(default)]
            service_rejects,
            /// Frames from this port handed to the worker that tracks their flow's connection (flow
            /// steering; only with several workers).
            #[serde(default)]
            steered,
            /// Frames for this port passed to the worker that owns its only queue (only with several
            /// workers, for single-queue ports).
            #[serde(default)]
            tx_handoffs,
        }
    };
}

macro_rules! port_stats_report {
    ($($(#[doc = $doc:literal])* $(#[serde($serde:meta)])? $name:ident,)*) => {
        /// One port's counters as the control API returns them.
        #[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct PortStatsReport {
            /// Port name.
            pub name: String,
            $($(#[doc = $doc])* $(#[serde($serde)])? pub $name: u64,)*
            /// Drops by reason label; reasons with no drops are left out.
            pub drops: std::collections::BTreeMap<String, u64>,
            /// Drops the device counted before the switch saw the frames (an AF_XDP socket's
            /// `xsk_rx_ring_full`, `xsk_fill_ring_empty`, ...), by name; absent for devices
            /// that report none.
            #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
            pub device_drops: std::collections::BTreeMap<String, u64>,
        }
    };
}

port_counter_list!(port_stats_report);

/// Event counters of the table, as the API reports them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
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

/// Event counters of the table, as the API reports them.
///
/// `created = len() + expired + removed + flushed + early_drop` at all times.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConntrackCounters {
    /// Entries created.
    pub created: u64,
    /// Lookups that found a live entry.
    pub found: u64,
    /// Creations refused because the table was full and no entry in reach could be
    /// early-dropped.
    pub full: u64,
    /// Unassured entries removed to make room for a new flow in a full table (Linux's
    /// `early_drop`; see the connection table's `Entry::is_early_droppable`). Prometheus
    /// name: `podswitch_conntrack_early_drop_total`.
    #[serde(default)]
    pub early_drop: u64,
    /// Creations refused because the originating pod port already held
    /// `conntrack.max_per_port` entries (drop reason `conntrack_port_limit`).
    #[serde(default)]
    pub port_limit: u64,
    /// Creations refused because a 5-tuple was already tracked.
    pub clash: u64,
    /// Creations refused because of the first packet's TCP flags.
    pub invalid: u64,
    /// Entries removed because they expired (by lookup, create or sweep).
    pub expired: u64,
    /// Entries removed one by one (the connection table's `remove`, `remove_backend`).
    pub removed: u64,
    /// Entries removed by the table's `flush`.
    pub flushed: u64,
}

impl ConntrackCounters {
    /// Adds another table's counters (the workers' tables add up to the node's).
    pub fn add(&mut self, o: &ConntrackCounters) {
        self.created += o.created;
        self.found += o.found;
        self.full += o.full;
        self.early_drop += o.early_drop;
        self.port_limit += o.port_limit;
        self.clash += o.clash;
        self.invalid += o.invalid;
        self.expired += o.expired;
        self.removed += o.removed;
        self.flushed += o.flushed;
    }
}
