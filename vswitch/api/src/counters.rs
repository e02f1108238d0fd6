//! Counters as the API reports them: one port's, the MAC table's and the
//! connection-tracking table's. The dataplane counts into its own per-worker structures and
//! converts or sums into these; the types live here so that clients need not link the
//! dataplane to read them.

use serde::{Deserialize, Serialize};

/// One port's counters as the control API returns them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortStatsReport {
    /// Port name.
    pub name: String,
    /// Frames read from the port.
    pub rx_packets: u64,
    /// Bytes read from the port.
    pub rx_bytes: u64,
    /// Frames written to the port.
    pub tx_packets: u64,
    /// Bytes written to the port.
    pub tx_bytes: u64,
    /// Of `tx_packets`, super-frames merged from several frames (software GRO on a TAP).
    #[serde(default)]
    pub tx_gro_frames: u64,
    /// Frames carried by those super-frames.
    #[serde(default)]
    pub tx_gro_merged: u64,
    /// Overlay port: `UDP_SEGMENT` sends (each several of the `tx_packets` datagrams).
    #[serde(default)]
    pub tx_gso_sends: u64,
    /// Frames from this port that were flooded.
    pub flooded: u64,
    /// Of `flooded`, unicast frames to a MAC the table did not know.
    pub unknown_unicast: u64,
    /// ARP requests from this port answered by the switch.
    pub arp_replies: u64,
    /// ICMP echo requests to the gateway answered by the switch.
    pub icmp_echo_replies: u64,
    /// Frames from this port routed by the gateway.
    pub routed: u64,
    /// Packets from this port answered with ICMP "fragmentation needed" (too big for the
    /// overlay, DF set).
    #[serde(default)]
    pub frag_needed: u64,
    /// Packets from this port to a Service answered with a reset / port unreachable.
    #[serde(default)]
    pub service_rejects: u64,
    /// Frames from this port handed to the worker tracking their flow (flow steering).
    #[serde(default)]
    pub steered: u64,
    /// Frames for this port passed to the worker owning its only queue.
    #[serde(default)]
    pub tx_handoffs: u64,
    /// Drops by reason label; reasons with no drops are left out.
    pub drops: std::collections::BTreeMap<String, u64>,
    /// Drops the device counted before the switch saw the frames (an AF_XDP socket's
    /// `xsk_rx_ring_full`, `xsk_fill_ring_empty`, ...), by name; absent for devices that
    /// report none.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub device_drops: std::collections::BTreeMap<String, u64>,
}

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
/// `created = len() + expired + removed + flushed` at all times.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
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
        self.clash += o.clash;
        self.invalid += o.invalid;
        self.expired += o.expired;
        self.removed += o.removed;
        self.flushed += o.flushed;
    }
}
