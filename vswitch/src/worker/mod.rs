//! The worker: the thread that owns the ports, the tables and the counters, and runs
//! receive → pipeline → transmit on bursts.
//!
//! Threading model: N worker threads do all packet work, each on its own queue of every
//! device with its own tables, and hand each other frames through the [`fabric`] (steered
//! Service flows, frames for a single-queue port); the control plane never touches their
//! state. The control plane sends [`Command`]s over a channel and wakes the worker
//! through a `mio::Waker`; the worker applies them *between* bursts, so a port being added or
//! removed never pauses or reorders traffic on the others, and a reply means the change is in
//! effect. Reads of counters and tables are answered the same way, with copies.
//!
//! Waiting: ports' fds are registered edge-triggered with epoll (via mio). A woken port is
//! drained burst by burst, at most [`MAX_BURSTS_PER_TURN`] bursts per turn so one busy port
//! cannot starve the others; a port that still has frames stays on the ready list and the
//! next wait does not block. After the last frame the worker keeps polling without sleeping
//! for [`BUSY_POLL`] (200 µs), so a reply that comes back within a round trip costs no
//! wakeup (halving request/response latency); an idle worker sleeps in `epoll_wait` and
//! costs nothing (0 CPU ticks in 10 s measured).
//!
//! Panics: the pipeline runs under `catch_unwind`, so a bug a pod's frame triggers costs the
//! burst it was in (counted `worker_panic`), not the worker and every pod's device with it
//! (see `packet_loop.rs`, `Worker::process_batch`). A worker thread that exits anyway is reported by
//! [`WorkerHandle::health`] and `ctl status`.

pub mod fabric;
mod handle;
mod packet_loop;
#[cfg(test)]
mod tests;

pub use handle::{WorkerGone, WorkerHandle, WorkerHealth};

use std::collections::VecDeque;
use std::io;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

use crate::packet::{Action, Batch, Packet, BATCH_SIZE};
use crate::pipeline::port_security::PortPolicy;
use crate::pipeline::steer::{ReplyMarks, Steering};
use crate::pipeline::{Entry, Pipeline};
use crate::port::{Port, PortId};
use crate::stats::{DropReason, PortCounters};
use crate::tables::conntrack::{ConntrackCounters, Entry as CtEntry};
use crate::tables::fdb::{FdbCounters, FdbEntry, FdbKey};
use crate::tables::neigh::{NeighError, Neighbor};
use crate::tables::peers::PeerTable;
use crate::tables::services::{ServiceCounters, ServiceTable};
use crate::wire::MacAddr;

use fabric::Fabric;

/// Bursts taken from one port before the others get a turn.
pub const MAX_BURSTS_PER_TURN: usize = 8;

/// How often pods' own MACs are refreshed in the MAC table (and the longest an idle worker
/// sleeps, so the sliced aging sweep still advances).
pub const AGING_SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// How long the control plane waits for the worker to answer before calling it stuck.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the worker keeps polling without sleeping after the last frame it saw: a reply
/// that comes back within this window costs no wakeup. Idle beyond it, the worker sleeps in
/// `epoll_wait` and costs nothing.
pub const BUSY_POLL: Duration = Duration::from_micros(200);

/// Conntrack entries examined for expiry per worker turn.
pub const CONNTRACK_SWEEP_BUDGET: usize = 256;

/// How often ports without an fd (in-memory ports) are polled when nothing else happens.
const POLLED_PORT_INTERVAL: Duration = Duration::from_millis(1);

/// How long a worker waits (instead of spinning) when it left frames in its devices because
/// another worker is behind (the fabric's pool is low): the CPU goes to that worker, or to
/// the pods.
const GATED_WAIT: Duration = Duration::from_micros(20);

const WAKER_TOKEN: Token = Token(usize::MAX);

/// A change or question from the control plane, applied between bursts.
#[derive(Debug)]
pub enum Command {
    /// Starts polling `port` (this worker's queue of it) as `id`; with `neighbor`, the pod's
    /// address is added to the neighbor table in the same step. Refused (nothing changed)
    /// when the id is in use or the address is taken.
    AddPort {
        /// Id to use (chosen by the control plane, below `max_ports`).
        id: PortId,
        /// This worker's queue of the port; `None`: worker `owner` has its only queue.
        port: Option<Box<dyn Port>>,
        /// The worker polling the port's only queue, when `port` is `None`.
        owner: usize,
        /// The pod's address and MAC.
        neighbor: Option<(Ipv4Addr, MacAddr)>,
        /// What the pod may send as; `None`: the port is not checked.
        security: Option<PortPolicy>,
        /// Answer.
        reply: Sender<Result<(), AttachError>>,
    },
    /// Stops polling a port and hands it back (dropping it closes the device), with its final
    /// counters. Its MAC table entries and neighbor entries are removed in the same step.
    RemovePort {
        /// The port.
        id: PortId,
        /// Answer: this worker's queue of the port and its counters here, or `None` if there
        /// was no such port.
        reply: Sender<Option<RemovedQueue>>,
    },
    /// Sets which port is the host port (the gateway hands traffic to it).
    SetHostPort {
        /// The host port.
        id: Option<PortId>,
        /// Answer.
        reply: Sender<()>,
    },
    /// Sets which port is the overlay port (VXLAN to peers; never flooded to).
    SetOverlayPort {
        /// The overlay port.
        id: Option<PortId>,
        /// Answer.
        reply: Sender<()>,
    },
    /// Sets the NodePort path (an L3 port on the node's address; never flooded to).
    SetNodePort {
        /// The path.
        path: Option<crate::pipeline::gateway::NodePortPath>,
        /// Answer.
        reply: Sender<()>,
    },
    /// Installs a published peer table (built and checked by the control plane) between
    /// bursts: packets route by it from the next burst on. Answer: the table it replaced,
    /// to be dropped by the control plane, off the packet path; `None` when this switch has
    /// no overlay (nothing installed).
    PeersPublish {
        /// The new table, shared by every worker.
        table: Arc<PeerTable>,
        /// Answer.
        reply: Sender<Option<Arc<PeerTable>>>,
    },
    /// Installs a published Service table (built and validated by the control plane, Maglev
    /// tables included) between bursts; tracked connections are kept, and so are the
    /// worker's round-robin cursors of the Services it did not change. Answer: the table it
    /// replaced, to be dropped by the control plane, off the packet path.
    ServicesPublish {
        /// The new table, shared by every worker.
        table: Arc<ServiceTable>,
        /// Answer.
        reply: Sender<Arc<ServiceTable>>,
    },
    /// Lists up to `limit` tracked connections.
    ConntrackList {
        /// Most entries returned.
        limit: usize,
        /// Answer.
        reply: Sender<Vec<CtEntry>>,
    },
    /// Forgets every tracked connection.
    ConntrackFlush {
        /// Answer: entries removed.
        reply: Sender<usize>,
    },
    /// The conntrack table's size, limit and counters.
    ConntrackStats {
        /// Answer.
        reply: Sender<(usize, usize, ConntrackCounters)>,
    },
    /// Lists the MAC table.
    FdbList {
        /// Answer.
        reply: Sender<FdbSnapshot>,
    },
    /// Flushes the MAC table, or one port's entries.
    FdbFlush {
        /// Only this port's entries.
        port: Option<PortId>,
        /// Answer: entries removed.
        reply: Sender<usize>,
    },
    /// Copies the counters.
    Stats {
        /// Answer.
        reply: Sender<StatsSnapshot>,
    },
}

/// Why a worker refused a port ([`Command::AddPort`]): nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// The id is not below `max_ports`.
    #[error("port id {0} is beyond the port limit")]
    BeyondLimit(PortId),
    /// Another port has the id.
    #[error("port id {0} is in use")]
    InUse(PortId),
    /// The pod's address could not be made a neighbor (taken, or the table is full).
    #[error("{0}")]
    Neighbor(#[from] NeighError),
    /// The port's fd could not be registered with epoll.
    #[error("cannot poll the port: {0}")]
    Poll(io::Error),
    /// The queues fit neither one per worker nor a single one.
    #[error("{queues} queues for {workers} workers")]
    QueueCount {
        /// Queues given.
        queues: usize,
        /// Workers running.
        workers: usize,
    },
}

/// A worker's part of a removed port: its queue (if it had one) and its counters there.
pub type RemovedQueue = (Option<Box<dyn Port>>, PortCounters);

/// One port in a [`StatsSnapshot`].
#[derive(Debug, Clone)]
pub struct PortSnapshot {
    /// The port.
    pub id: PortId,
    /// Its counters.
    pub counters: PortCounters,
    /// The error that stopped it, if any.
    pub failed: Option<String>,
    /// The drops its device counted ([`Port::device_drops`]).
    pub device_drops: Vec<(&'static str, u64)>,
}

/// The MAC table as listed.
#[derive(Debug, Clone)]
pub struct FdbSnapshot {
    /// Live entries, sorted.
    pub entries: Vec<FdbEntry>,
    /// Entries present (including expired ones not yet swept).
    pub len: usize,
    /// The limit.
    pub max_entries: usize,
    /// The aging time.
    pub aging: Duration,
    /// Event counters.
    pub counters: FdbCounters,
}

/// Counters of every port and table.
#[derive(Debug, Clone)]
pub struct StatsSnapshot {
    /// Every port's counters.
    pub ports: Vec<PortSnapshot>,
    /// MAC table size.
    pub fdb_len: usize,
    /// MAC table event counters.
    pub fdb: FdbCounters,
    /// Neighbor table size.
    pub neighbors: usize,
    /// Service selection counters, summed over the workers.
    pub services: ServiceCounters,
}
