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
//! (see [`Worker::process_batch`]). A worker thread that exits anyway is reported by
//! [`WorkerHandle::health`] and `ctl status`.

pub mod fabric;

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

#[derive(Debug)]
struct Slot {
    /// This worker's queue of the port; `None` when another worker owns its only queue.
    port: Option<Box<dyn Port>>,
    /// The worker that owns the port's only queue (when `port` is `None`).
    owner: usize,
    /// Set when the device failed; the port stays listed until removed.
    failed: Option<String>,
    /// On the ready list.
    queued: bool,
    has_fd: bool,
    /// The pod's own MAC, as the control plane gave it: kept in the MAC table while the
    /// port exists ([`Worker::keep_pod_macs`]).
    mac: Option<MacAddr>,
}

/// One worker's state. Built by [`WorkerHandle::spawn_with`] and moved onto its thread.
#[derive(Debug)]
struct Worker {
    me: usize,
    fabric: Arc<Fabric>,
    poll: Poll,
    slots: Vec<Option<Slot>>,
    live: Vec<PortId>,
    counters: Vec<PortCounters>,
    pipeline: Pipeline,
    batch: Batch,
    ready: VecDeque<PortId>,
    fdless: Vec<PortId>,
    commands: Receiver<Command>,
    last_sweep: Instant,
    busy_poll: crate::config::BusyPoll,
    /// Workers this batch sent packets to (a bit each): woken once the batch is done.
    to_wake: u64,
    /// A port was left with frames because the fabric's pool was low.
    gated: bool,
    /// Bursts lost to a panic in the pipeline (see [`Worker::process_batch`]), read by the
    /// control plane without asking the worker.
    panics: Arc<AtomicU64>,
}

#[derive(Debug)]
struct Thread {
    tx: Mutex<Option<Sender<Command>>>,
    waker: Arc<Waker>,
    thread: Mutex<Option<JoinHandle<()>>>,
    panics: Arc<AtomicU64>,
}

/// The workers' health as the control plane sees it without asking them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerHealth {
    /// Workers started.
    pub workers: usize,
    /// Workers whose thread has exited (their ports no longer move frames).
    pub down: Vec<usize>,
    /// Bursts dropped because the pipeline panicked on them, all workers together.
    pub panics: u64,
}

/// The control plane's handle on the worker threads.
///
/// Every worker holds the control-plane state it needs: its own copy of ports and
/// neighbors, and the same published snapshot of the Service and peer tables (one `Arc`
/// for all). A change is sent to all of them and is in effect once all have answered.
/// Reads that differ per worker (counters, tracked connections, MAC tables) are merged here.
#[derive(Debug)]
pub struct WorkerHandle {
    threads: Vec<Thread>,
}

/// The worker threads have exited or stopped answering.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the packet worker is not answering")]
pub struct WorkerGone;

impl WorkerHandle {
    /// Starts one worker thread with `pipeline` and room for `max_ports` ports.
    pub fn spawn(pipeline: Pipeline, max_ports: usize) -> io::Result<WorkerHandle> {
        let mut pipeline = Some(pipeline);
        WorkerHandle::spawn_with(
            move |_| pipeline.take().expect("one worker"),
            max_ports,
            crate::config::WorkerConfig::single(),
        )
    }

    /// Starts `settings.count` workers; `pipeline` builds each one's tables from its place
    /// among them. Each is pinned as `settings.pin` says (a failure to pin is logged, not
    /// fatal).
    pub fn spawn_with(
        mut pipeline: impl FnMut(Steering) -> Pipeline,
        max_ports: usize,
        settings: crate::config::WorkerConfig,
    ) -> io::Result<WorkerHandle> {
        quiet_worker_panics();
        let n = settings.count.clamp(1, crate::config::MAX_WORKERS);
        let mut polls = Vec::with_capacity(n);
        let mut wakers = Vec::with_capacity(n);
        for _ in 0..n {
            let poll = Poll::new()?;
            wakers.push(Arc::new(Waker::new(poll.registry(), WAKER_TOKEN)?));
            polls.push(poll);
        }
        let fabric = Fabric::new(wakers.clone());
        let marks = Arc::new(ReplyMarks::new());
        let conntrack_len = Arc::new(crate::tables::conntrack::SharedCounts::default());
        let flow_seed = Steering::default().flow_seed;
        let mut threads = Vec::with_capacity(n);
        for (me, (poll, waker)) in polls.into_iter().zip(wakers).enumerate() {
            let (tx, rx) = crossbeam_channel::unbounded();
            let steering = Steering {
                workers: n,
                me,
                marks: marks.clone(),
                conntrack_len: conntrack_len.clone(),
                flow_seed,
            };
            let worker = Worker {
                me,
                fabric: fabric.clone(),
                poll,
                slots: (0..max_ports).map(|_| None).collect(),
                live: Vec::with_capacity(max_ports),
                counters: vec![PortCounters::default(); max_ports],
                pipeline: pipeline(steering),
                batch: Batch::new(),
                ready: VecDeque::with_capacity(max_ports),
                fdless: Vec::new(),
                commands: rx,
                last_sweep: Instant::now(),
                busy_poll: settings.busy_poll,
                to_wake: 0,
                gated: false,
                panics: Arc::new(AtomicU64::new(0)),
            };
            let panics = worker.panics.clone();
            let cpu = settings.cpu_of(me);
            let thread =
                std::thread::Builder::new().name(format!("psw-worker-{me}")).spawn(move || {
                    if let Some(cpu) = cpu {
                        if !core_affinity::set_for_current(core_affinity::CoreId { id: cpu }) {
                            eprintln!(
                                "podswitch: worker {me}: could not pin to CPU {cpu}; running \
                                 unpinned"
                            );
                        }
                    }
                    worker.run()
                });
            let thread = match thread {
                Ok(t) => t,
                Err(e) => {
                    WorkerHandle { threads }.shutdown();
                    return Err(e);
                }
            };
            threads.push(Thread {
                tx: Mutex::new(Some(tx)),
                waker,
                thread: Mutex::new(Some(thread)),
                panics,
            });
        }
        Ok(WorkerHandle { threads })
    }

    /// How many workers run.
    pub fn count(&self) -> usize {
        self.threads.len()
    }

    /// Sends every worker the command `make(worker, reply)` builds and waits for all the
    /// answers, in worker order. The commands are all sent before any answer is awaited, so
    /// the workers apply them at the same time.
    pub fn call_each<R>(
        &self,
        mut make: impl FnMut(usize, Sender<R>) -> Command,
    ) -> Result<Vec<R>, WorkerGone> {
        let mut pending = Vec::with_capacity(self.threads.len());
        for (i, t) in self.threads.iter().enumerate() {
            let (reply_tx, reply_rx) = crossbeam_channel::bounded(1);
            let tx = t.tx.lock().unwrap_or_else(|p| p.into_inner()).clone().ok_or(WorkerGone)?;
            tx.send(make(i, reply_tx)).map_err(|_| WorkerGone)?;
            t.waker.wake().map_err(|_| WorkerGone)?;
            pending.push(reply_rx);
        }
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        pending.into_iter().map(|rx| rx.recv_deadline(deadline).map_err(|_| WorkerGone)).collect()
    }

    /// Sends the command `make` builds to every worker (a change to the state they all
    /// hold) and returns the first worker's answer; the others answer alike.
    pub fn call<R>(&self, mut make: impl FnMut(Sender<R>) -> Command) -> Result<R, WorkerGone> {
        let mut answers = self.call_each(|_, reply| make(reply))?;
        if answers.is_empty() {
            return Err(WorkerGone);
        }
        Ok(answers.swap_remove(0))
    }

    /// Asks the first worker only (a read of state every worker holds alike).
    pub fn ask<R>(&self, make: impl FnOnce(Sender<R>) -> Command) -> Result<R, WorkerGone> {
        let t = self.threads.first().ok_or(WorkerGone)?;
        let (reply_tx, reply_rx) = crossbeam_channel::bounded(1);
        let tx = t.tx.lock().unwrap_or_else(|p| p.into_inner()).clone().ok_or(WorkerGone)?;
        tx.send(make(reply_tx)).map_err(|_| WorkerGone)?;
        t.waker.wake().map_err(|_| WorkerGone)?;
        reply_rx.recv_timeout(COMMAND_TIMEOUT).map_err(|_| WorkerGone)
    }

    /// Attaches a port with its queues: one per worker (worker `i` polls `queues[i]`), or a
    /// single one, owned by worker `id % workers`; the others hand that port's packets to
    /// it. With `neighbor`, the pod's address is added to every worker's neighbor table in
    /// the same step, and with `security` its port policy, so no frame of the port is ever
    /// handled unchecked. Refused (nothing changed anywhere) when the id is in use, the address
    /// is taken, or the queue count fits neither shape.
    pub fn add_port(
        &self,
        id: PortId,
        queues: Vec<Box<dyn Port>>,
        neighbor: Option<(Ipv4Addr, MacAddr)>,
        security: Option<PortPolicy>,
    ) -> Result<Result<(), AttachError>, WorkerGone> {
        let n = self.count();
        let single = queues.len() == 1;
        if !single && queues.len() != n {
            return Ok(Err(AttachError::QueueCount { queues: queues.len(), workers: n }));
        }
        let owner = if single { id.index() % n } else { 0 };
        let mut queues: Vec<Option<Box<dyn Port>>> = queues.into_iter().map(Some).collect();
        let answers = self.call_each(|i, reply| {
            let port = if single {
                if i == owner {
                    queues[0].take()
                } else {
                    None
                }
            } else {
                queues[i].take()
            };
            Command::AddPort { id, port, owner, neighbor, security, reply }
        })?;
        if answers.iter().any(Result::is_err) {
            let mut first = None;
            // Undo where it was taken; the ports come back and are dropped.
            for (i, a) in answers.into_iter().enumerate() {
                if let Err(e) = a {
                    first.get_or_insert(e);
                } else {
                    let t = &self.threads[i];
                    let (reply_tx, reply_rx) = crossbeam_channel::bounded(1);
                    if let Some(tx) = t.tx.lock().unwrap_or_else(|p| p.into_inner()).clone() {
                        let _ = tx.send(Command::RemovePort { id, reply: reply_tx });
                        let _ = t.waker.wake();
                        let _ = reply_rx.recv_timeout(COMMAND_TIMEOUT);
                    }
                }
            }
            return Ok(Err(first.expect("one answer was an error")));
        }
        Ok(Ok(()))
    }

    /// Detaches a port from every worker: its queues (dropping them closes the device) and
    /// its counters summed over the workers; `None` if there was no such port.
    #[allow(clippy::type_complexity)]
    pub fn remove_port(
        &self,
        id: PortId,
    ) -> Result<Option<(Vec<Box<dyn Port>>, PortCounters)>, WorkerGone> {
        let answers = self.call_each(|_, reply| Command::RemovePort { id, reply })?;
        let mut found = false;
        let mut queues = Vec::new();
        let mut total = PortCounters::default();
        for (port, counters) in answers.into_iter().flatten() {
            found = true;
            queues.extend(port);
            total.add(&counters);
        }
        Ok(found.then_some((queues, total)))
    }

    /// Installs `table` on every worker (the same snapshot, shared) and returns the tables
    /// they replaced, for the caller to drop off the packet path.
    pub fn services_publish(
        &self,
        table: &Arc<ServiceTable>,
    ) -> Result<Vec<Arc<ServiceTable>>, WorkerGone> {
        self.call_each(|_, reply| Command::ServicesPublish { table: table.clone(), reply })
    }

    /// Installs `table` on every worker (the same snapshot, shared) and returns the tables
    /// they replaced (none when the switch has no overlay).
    pub fn peers_publish(&self, table: &Arc<PeerTable>) -> Result<Vec<Arc<PeerTable>>, WorkerGone> {
        let olds =
            self.call_each(|_, reply| Command::PeersPublish { table: table.clone(), reply })?;
        Ok(olds.into_iter().flatten().collect())
    }

    /// Every port's counters summed over the workers, and the tables' sizes.
    pub fn stats(&self) -> Result<StatsSnapshot, WorkerGone> {
        let snaps = self.call_each(|_, reply| Command::Stats { reply })?;
        let mut merged: std::collections::BTreeMap<PortId, PortSnapshot> = Default::default();
        let mut out = StatsSnapshot {
            ports: Vec::new(),
            fdb_len: 0,
            fdb: FdbCounters::default(),
            neighbors: 0,
            services: ServiceCounters::default(),
        };
        for (i, s) in snaps.into_iter().enumerate() {
            for p in s.ports {
                match merged.get_mut(&p.id) {
                    None => {
                        merged.insert(p.id, p);
                    }
                    Some(m) => {
                        m.counters.add(&p.counters);
                        if m.failed.is_none() {
                            m.failed = p.failed;
                        }
                        for (name, v) in p.device_drops {
                            match m.device_drops.iter_mut().find(|(k, _)| *k == name) {
                                Some((_, total)) => *total += v,
                                None => m.device_drops.push((name, v)),
                            }
                        }
                    }
                }
            }
            out.fdb_len = out.fdb_len.max(s.fdb_len);
            out.fdb.add(&s.fdb);
            out.services.add(&s.services);
            if i == 0 {
                out.neighbors = s.neighbors;
            }
        }
        out.ports = merged.into_values().collect();
        Ok(out)
    }

    /// The MAC table: every worker's copy merged (a station any worker knows, with the
    /// youngest age any worker has for it).
    pub fn fdb_list(&self) -> Result<FdbSnapshot, WorkerGone> {
        let snaps = self.call_each(|_, reply| Command::FdbList { reply })?;
        let mut it = snaps.into_iter();
        let mut out = it.next().ok_or(WorkerGone)?;
        for s in it {
            for e in s.entries {
                match out.entries.iter_mut().find(|x| x.key == e.key) {
                    Some(x) if e.age < x.age => *x = e,
                    Some(_) => {}
                    None => out.entries.push(e),
                }
            }
            out.len = out.len.max(s.len);
            out.counters.add(&s.counters);
        }
        out.entries.sort_by_key(|e| e.key);
        out.len = out.len.max(out.entries.len());
        Ok(out)
    }

    /// Flushes the MAC table (or one port's entries) on every worker; the most any one
    /// worker removed.
    pub fn fdb_flush(&self, port: Option<PortId>) -> Result<usize, WorkerGone> {
        let n = self.call_each(|_, reply| Command::FdbFlush { port, reply })?;
        Ok(n.into_iter().max().unwrap_or(0))
    }

    /// Up to `limit` tracked connections, from all workers.
    pub fn conntrack_list(&self, limit: usize) -> Result<Vec<CtEntry>, WorkerGone> {
        let lists = self.call_each(|_, reply| Command::ConntrackList { limit, reply })?;
        Ok(lists.into_iter().flatten().take(limit).collect())
    }

    /// Forgets every tracked connection; how many there were.
    pub fn conntrack_flush(&self) -> Result<usize, WorkerGone> {
        Ok(self.call_each(|_, reply| Command::ConntrackFlush { reply })?.into_iter().sum())
    }

    /// Tracked connections (summed over the workers), their limit (the node's, which the
    /// workers share) and the counters, summed.
    pub fn conntrack_stats(&self) -> Result<(usize, usize, ConntrackCounters), WorkerGone> {
        let all = self.call_each(|_, reply| Command::ConntrackStats { reply })?;
        let mut out = (0, 0, ConntrackCounters::default());
        for (len, max, c) in all {
            out.0 += len;
            out.1 = out.1.max(max);
            out.2.add(&c);
        }
        Ok(out)
    }

    /// Which workers still run and how many bursts panics cost: answered from shared state,
    /// so it works even when a worker is gone.
    pub fn health(&self) -> WorkerHealth {
        let down = (0..self.threads.len())
            .filter(|&i| {
                let t = self.threads[i].thread.lock().unwrap_or_else(|p| p.into_inner());
                t.as_ref().is_none_or(|t| t.is_finished())
            })
            .collect();
        let panics = self.threads.iter().map(|t| t.panics.load(Ordering::Relaxed)).sum();
        WorkerHealth { workers: self.threads.len(), down, panics }
    }

    /// Stops the workers and waits for them; every port they still hold is dropped
    /// (closing its device).
    pub fn shutdown(&self) {
        for t in &self.threads {
            t.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
            let _ = t.waker.wake();
        }
        for t in &self.threads {
            let thread = t.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(t) = thread {
                let _ = t.join();
            }
        }
    }
}

/// Installs, once per process, a panic hook that keeps a storm of caught pipeline panics
/// (one pod sending the same bad frame in a loop) from flooding the log: on worker threads
/// the first 10 panics are reported in full, then one in 10,000, each with its number.
fn quiet_worker_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    static SEEN: AtomicU64 = AtomicU64::new(0);
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let thread = std::thread::current();
            if let Some(name) = thread.name().filter(|n| n.starts_with("psw-worker-")) {
                let n = SEEN.fetch_add(1, Ordering::Relaxed) + 1;
                if n > 10 && !n.is_multiple_of(10_000) {
                    return;
                }
                eprintln!(
                    "podswitch: {name}: pipeline panic #{n}: the burst is dropped and counted \
                     as worker_panic (a bug: please report it with this message)"
                );
            }
            previous(info);
        }));
    });
}

/// Adds one `tx_burst`'s outcome to the output port's counters.
fn count_tx(c: &mut PortCounters, out: &crate::port::TxOutcome) {
    c.tx_packets += u64::from(out.sent);
    c.tx_bytes += out.bytes;
    c.tx_gro_frames += u64::from(out.gro_frames);
    c.tx_gro_merged += u64::from(out.gro_merged);
    c.tx_gso_sends += u64::from(out.gso_sends);
    c.drops[DropReason::TxQueueFull as usize] += u64::from(out.queue_full);
    c.drops[DropReason::TxError as usize] += u64::from(out.errors);
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Worker {
    fn run(mut self) {
        let mut events = Events::with_capacity(256);
        let mut busy_until = Instant::now();
        let multi = self.fabric.workers() > 1;
        loop {
            let always = self.busy_poll == crate::config::BusyPoll::Always;
            let mut timeout = if std::mem::take(&mut self.gated) && !always {
                GATED_WAIT
            } else if always || !self.ready.is_empty() || Instant::now() < busy_until {
                Duration::ZERO
            } else if !self.fdless.is_empty() {
                POLLED_PORT_INTERVAL
            } else {
                AGING_SWEEP_INTERVAL
            };
            if multi && !timeout.is_zero() && !self.fabric.prepare_sleep(self.me) {
                timeout = Duration::ZERO;
            }
            let polled = self.poll.poll(&mut events, Some(timeout));
            if multi {
                self.fabric.awake(self.me);
            }
            if let Err(e) = polled {
                if e.kind() != io::ErrorKind::Interrupted {
                    eprintln!("podswitch: worker {}: epoll failed: {e}", self.me);
                    return;
                }
            }
            let mut woken = false;
            for ev in events.iter() {
                if ev.token() == WAKER_TOKEN {
                    woken = true;
                } else {
                    self.mark_ready(PortId(ev.token().0 as u16));
                }
            }
            if (woken || !self.commands.is_empty()) && !self.apply_commands() {
                return;
            }
            let handed = multi && self.drain_inbox();
            if !self.ready.is_empty() || handed {
                if let crate::config::BusyPoll::After(window) = self.busy_poll {
                    busy_until = Instant::now() + window;
                }
            }
            self.service_ready();
            for i in 0..self.fdless.len() {
                let id = self.fdless[i];
                self.service(id, 1);
            }
            let now = Instant::now();
            self.pipeline.fdb.age_step(now, crate::tables::fdb::AGING_STEP_SLOTS);
            if now.duration_since(self.last_sweep) >= AGING_SWEEP_INTERVAL {
                self.keep_pod_macs(now);
                self.last_sweep = now;
            }
            // A slice of the conntrack table per turn: expiry never stalls forwarding.
            if !self.pipeline.nat.conntrack.is_empty() {
                self.pipeline.nat.conntrack.sweep(now, CONNTRACK_SWEEP_BUDGET);
            }
        }
    }

    /// Keeps every pod's own MAC in the MAC table on its port, refreshed at each aging
    /// sweep: a pod that only receives (a UDP sink, a server that has not answered yet) is
    /// never reached by flooding. A MAC seen moving to another port is left there.
    fn keep_pod_macs(&mut self, now: Instant) {
        for &id in &self.live {
            let Some(Some(Slot { mac: Some(mac), .. })) = self.slots.get(id.index()) else {
                continue;
            };
            let key = FdbKey::new(None, *mac);
            match self.pipeline.fdb.lookup(key, now) {
                Some(p) if p != id => {}
                _ => self.pipeline.fdb.apply_announced(key, id, now),
            }
        }
    }

    fn mark_ready(&mut self, id: PortId) {
        if let Some(Some(slot)) = self.slots.get_mut(id.index()) {
            if !slot.queued && slot.failed.is_none() && slot.port.is_some() {
                slot.queued = true;
                self.ready.push_back(id);
            }
        }
    }

    /// One turn over the ready ports.
    fn service_ready(&mut self) {
        for _ in 0..self.ready.len() {
            let Some(id) = self.ready.pop_front() else { break };
            let drained = self.service(id, MAX_BURSTS_PER_TURN);
            if let Some(Some(slot)) = self.slots.get_mut(id.index()) {
                if drained || slot.failed.is_some() {
                    slot.queued = false;
                } else {
                    self.ready.push_back(id);
                }
            }
        }
    }

    /// Receives up to `max_bursts` bursts from `id`; true when the port ran dry.
    fn service(&mut self, id: PortId, max_bursts: usize) -> bool {
        let multi = self.fabric.workers() > 1;
        for _ in 0..max_bursts {
            if multi && !self.fabric.can_receive() {
                // Another worker is behind: leave the frames in the device (see fabric.rs).
                self.gated = true;
                return false;
            }
            self.batch.clear();
            let Some(Some(slot)) = self.slots.get_mut(id.index()) else { return true };
            if slot.failed.is_some() {
                return true;
            }
            let Some(port) = slot.port.as_mut() else { return true };
            let n = match port.rx_burst(&mut self.batch, id) {
                Ok(n) => n,
                Err(e) => {
                    self.fail_port(id, e);
                    return true;
                }
            };
            if n == 0 {
                return true;
            }
            let c = &mut self.counters[id.index()];
            c.rx_packets += n as u64;
            c.rx_bytes += self.batch.packets().iter().map(|p| p.len() as u64).sum::<u64>();
            self.process_batch(true);
            if n < BATCH_SIZE {
                return true;
            }
        }
        false
    }

    /// Takes what other workers sent: MAC table announcements, packets steered here (run
    /// through the table stages) and packets to write out of ports whose queue is here.
    /// True when there was anything.
    fn drain_inbox(&mut self) -> bool {
        let mut any = false;
        let now = Instant::now();
        for _ in 0..fabric::LEARN_RING {
            let Some((key, port)) = self.fabric.next_announced(self.me) else { break };
            if self.live.binary_search(&port).is_ok() {
                self.pipeline.fdb.apply_announced(key, port, now);
            }
            any = true;
        }
        for _ in 0..MAX_BURSTS_PER_TURN {
            if !self.fill_from_inbox(Fabric::next_steered) {
                break;
            }
            any = true;
            self.process_batch(false);
        }
        for _ in 0..MAX_BURSTS_PER_TURN {
            if !self.fill_from_inbox(Fabric::next_transmit) {
                break;
            }
            any = true;
            self.transmit_handed();
        }
        any
    }

    /// Fills the batch from one of the inbox's packet rings; false when it was empty.
    fn fill_from_inbox(&mut self, next: fn(&Fabric, usize) -> Option<Packet>) -> bool {
        self.batch.clear();
        while !self.batch.is_full() {
            let Some(pkt) = next(&self.fabric, self.me) else { break };
            match self.batch.push_packet(pkt) {
                Ok(empty) => self.fabric.recycle(empty),
                Err(pkt) => {
                    self.fabric.recycle(pkt);
                    break;
                }
            }
        }
        !self.batch.is_empty()
    }

    /// Runs the pipeline over the current batch and executes its transmit plan. `received`:
    /// the batch came from a port (every stage; packets may be steered to other workers),
    /// else it was steered here (from learn on).
    ///
    /// A panic in the pipeline is a bug, but one a pod's frame may trigger: it must not
    /// take the worker, and with it every pod's device, down. It is caught here; the burst
    /// it happened in is dropped (each frame counted as `worker_panic` on its ingress port,
    /// the burst in [`WorkerHealth::panics`]) and the worker goes on with the next one. The
    /// tables stay memory-safe; an entry the panicking stage was changing may be left
    /// half-updated, which the next packets of its flow correct or its timeout removes.
    fn process_batch(&mut self, received: bool) {
        let now = Instant::now();
        let entry = if received { Entry::Port } else { Entry::Steered };
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.pipeline.run(&mut self.batch, &mut self.counters, now, entry, &self.live);
            #[cfg(test)]
            tests::panic_on_marker(&self.batch);
        }));
        if ran.is_err() {
            self.panics.fetch_add(1, Ordering::Relaxed);
            for pkt in self.batch.packets() {
                if let Some(c) = self.counters.get_mut(pkt.meta.in_port.index()) {
                    c.drop(DropReason::WorkerPanic);
                }
            }
            self.batch.clear();
            self.pipeline.announced.clear();
            self.pipeline.plan.clear();
            return;
        }
        for (key, port) in self.pipeline.announced.drain(..) {
            self.fabric.announce(self.me, key, port);
        }
        if received && self.fabric.workers() > 1 {
            self.steer_out();
        }
        self.execute_plan();
        if self.to_wake != 0 {
            self.fabric.wake(std::mem::take(&mut self.to_wake));
        }
    }

    /// Writes the batch out as the pipeline planned: a burst to each port whose queue is
    /// here, a hand-off to the owner of each other port's queue.
    fn execute_plan(&mut self) {
        let Worker { pipeline, slots, batch, counters, fabric, to_wake, .. } = self;
        for (port, list) in pipeline.plan.iter() {
            let Some(Some(slot)) = slots.get_mut(port.index()) else { continue };
            match slot.port.as_mut() {
                Some(p) => {
                    let out = p.tx_burst(batch, list);
                    count_tx(&mut counters[port.index()], &out);
                }
                None => {
                    for &i in list {
                        let i = usize::from(i);
                        let Some(pkt) = batch.packets().get(i) else { continue };
                        let (in_port, flood) = (pkt.meta.in_port, pkt.meta.action == Action::Flood);
                        // A flooded packet goes to several ports: copy it. Anything else
                        // goes to this port only: move it.
                        let handed = if flood {
                            fabric.spare().map(|mut copy| {
                                let pkt = &batch.packets()[i];
                                copy.fill_from(pkt.data());
                                copy.meta = pkt.meta;
                                copy
                            })
                        } else {
                            fabric.spare().and_then(|spare| match batch.take(i, spare) {
                                Ok(pkt) => Some(pkt),
                                Err(spare) => {
                                    fabric.recycle(spare);
                                    None
                                }
                            })
                        };
                        let sent = match handed {
                            Some(mut pkt) => {
                                pkt.meta.action = Action::Forward(port);
                                fabric.transmit(slot.owner, pkt).map_err(|p| fabric.recycle(p))
                            }
                            None => Err(()),
                        };
                        match sent {
                            Ok(()) => {
                                counters[in_port.index()].tx_handoffs += 1;
                                *to_wake |= 1 << slot.owner;
                            }
                            Err(()) => counters[in_port.index()].drop(DropReason::HandoffFull),
                        }
                    }
                }
            }
        }
    }

    /// Moves every packet the steer stage marked to the worker that tracks its connection,
    /// which runs it through the table stages.
    fn steer_out(&mut self) {
        let Worker { batch, fabric, counters, to_wake, .. } = self;
        for i in 0..batch.len() {
            let pkt = &batch.packets()[i];
            let Action::Steer(to) = pkt.meta.action else { continue };
            let (to, in_port) = (usize::from(to), pkt.meta.in_port);
            let sent = match fabric.spare() {
                Some(spare) => match batch.take(i, spare) {
                    Ok(mut pkt) => {
                        pkt.meta.action = Action::Continue;
                        fabric.steer(to, pkt).map_err(|p| fabric.recycle(p))
                    }
                    Err(spare) => {
                        fabric.recycle(spare);
                        Err(())
                    }
                },
                None => Err(()),
            };
            match sent {
                Ok(()) => {
                    counters[in_port.index()].steered += 1;
                    *to_wake |= 1 << to;
                }
                Err(()) => {
                    let a = &mut batch.packets_mut()[i].meta.action;
                    crate::pipeline::drop_packet(a, in_port, DropReason::HandoffFull, counters);
                }
            }
        }
    }

    /// Writes the packets other workers handed over for ports whose queue is here.
    fn transmit_handed(&mut self) {
        self.pipeline.plan_handed(&self.batch, &self.live);
        for (port, list) in self.pipeline.plan.iter() {
            let Some(Some(slot)) = self.slots.get_mut(port.index()) else { continue };
            // Only ever handed to the owner of the port's queue.
            let Some(p) = slot.port.as_mut() else { continue };
            let out = p.tx_burst(&self.batch, list);
            count_tx(&mut self.counters[port.index()], &out);
        }
    }

    fn fail_port(&mut self, id: PortId, e: io::Error) {
        self.counters[id.index()].drop(DropReason::RxError);
        if let Some(Some(slot)) = self.slots.get_mut(id.index()) {
            if let Some(fd) = slot.port.as_ref().and_then(|p| p.poll_fd()) {
                let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
            }
            slot.failed = Some(e.to_string());
            slot.queued = false;
        }
        self.live.retain(|p| *p != id);
        self.fdless.retain(|p| *p != id);
        self.pipeline.fdb.flush_port(id);
    }

    /// Applies every queued command; false when the control plane has gone (shut down).
    fn apply_commands(&mut self) -> bool {
        loop {
            match self.commands.try_recv() {
                Ok(cmd) => self.apply(cmd),
                Err(crossbeam_channel::TryRecvError::Empty) => return true,
                Err(crossbeam_channel::TryRecvError::Disconnected) => return false,
            }
        }
    }

    fn apply(&mut self, cmd: Command) {
        match cmd {
            Command::AddPort { id, port, owner, neighbor, security, reply } => {
                let _ = reply.send(self.add_port(id, port, owner, neighbor, security));
            }
            Command::RemovePort { id, reply } => {
                let _ = reply.send(self.remove_port(id));
            }
            Command::SetHostPort { id, reply } => {
                self.pipeline.gateway.host_port = id;
                let _ = reply.send(());
            }
            Command::SetOverlayPort { id, reply } => {
                self.pipeline.gateway.overlay_port = id;
                if let Some(ov) = &mut self.pipeline.overlay {
                    ov.port = id;
                }
                let _ = reply.send(());
            }
            Command::SetNodePort { path, reply } => {
                self.pipeline.gateway.node_port = path;
                let _ = reply.send(());
            }
            Command::PeersPublish { table, reply } => {
                let old = self
                    .pipeline
                    .overlay
                    .as_mut()
                    .map(|ov| std::mem::replace(&mut ov.peers, table));
                let _ = reply.send(old);
            }
            Command::ServicesPublish { table, reply } => {
                let _ = reply.send(self.pipeline.nat.install_services(table));
            }
            Command::ConntrackList { limit, reply } => {
                let _ = reply.send(self.pipeline.nat.conntrack.entries(Instant::now(), limit));
            }
            Command::ConntrackFlush { reply } => {
                let _ = reply.send(self.pipeline.nat.conntrack.flush());
            }
            Command::ConntrackStats { reply } => {
                let ct = &self.pipeline.nat.conntrack;
                let _ = reply.send((ct.len(), ct.max_entries(), ct.counters()));
            }
            Command::FdbList { reply } => {
                let fdb = &self.pipeline.fdb;
                let _ = reply.send(FdbSnapshot {
                    entries: fdb.entries(Instant::now()),
                    len: fdb.len(),
                    max_entries: fdb.max_entries(),
                    aging: fdb.aging(),
                    counters: fdb.counters(),
                });
            }
            Command::FdbFlush { port, reply } => {
                let n = match port {
                    Some(p) => self.pipeline.fdb.flush_port(p),
                    None => self.pipeline.fdb.flush(),
                };
                let _ = reply.send(n);
            }
            Command::Stats { reply } => {
                let ports = self
                    .slots
                    .iter()
                    .enumerate()
                    .filter_map(|(i, s)| {
                        s.as_ref().map(|s| PortSnapshot {
                            id: PortId(i as u16),
                            counters: self.counters[i],
                            failed: s.failed.clone(),
                            device_drops: s
                                .port
                                .as_ref()
                                .map(|p| p.device_drops())
                                .unwrap_or_default(),
                        })
                    })
                    .collect();
                let _ = reply.send(StatsSnapshot {
                    ports,
                    fdb_len: self.pipeline.fdb.len(),
                    fdb: self.pipeline.fdb.counters(),
                    neighbors: self.pipeline.neigh.len(),
                    services: self.pipeline.nat.service_counters(),
                });
            }
        }
    }

    fn add_port(
        &mut self,
        id: PortId,
        port: Option<Box<dyn Port>>,
        owner: usize,
        neighbor: Option<(Ipv4Addr, MacAddr)>,
        security: Option<PortPolicy>,
    ) -> Result<(), AttachError> {
        match self.slots.get(id.index()) {
            None => return Err(AttachError::BeyondLimit(id)),
            Some(Some(_)) => return Err(AttachError::InUse(id)),
            Some(None) => {}
        }
        if let Some((ip, mac)) = neighbor {
            self.pipeline.neigh.insert(ip, Neighbor { mac, port: id })?;
        }
        let fd = port.as_ref().and_then(|p| p.poll_fd());
        if let Some(fd) = fd {
            if let Err(e) = self.poll.registry().register(
                &mut SourceFd(&fd),
                Token(id.index()),
                Interest::READABLE,
            ) {
                if let Some((ip, _)) = neighbor {
                    self.pipeline.neigh.remove(ip);
                }
                return Err(AttachError::Poll(e));
            }
        } else if port.is_some() {
            self.fdless.push(id);
        }
        let mac = neighbor.map(|(_, mac)| mac);
        self.slots[id.index()] =
            Some(Slot { port, owner, failed: None, queued: false, has_fd: fd.is_some(), mac });
        if let Some(mac) = mac {
            self.pipeline.fdb.apply_announced(FdbKey::new(None, mac), id, Instant::now());
        }
        // The id is below max_ports (its slot exists), so the policy always fits.
        self.pipeline.port_security.set(id, security);
        self.counters[id.index()] = PortCounters::default();
        self.live.push(id);
        self.live.sort_unstable();
        // Frames may already be waiting; epoll reports them on registration, but an explicit
        // turn costs nothing.
        self.mark_ready(id);
        Ok(())
    }

    fn remove_port(&mut self, id: PortId) -> Option<RemovedQueue> {
        let slot = self.slots.get_mut(id.index())?.take()?;
        if slot.has_fd && slot.failed.is_none() {
            if let Some(fd) = slot.port.as_ref().and_then(|p| p.poll_fd()) {
                let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
            }
        }
        self.live.retain(|p| *p != id);
        self.fdless.retain(|p| *p != id);
        self.ready.retain(|p| *p != id);
        self.pipeline.fdb.flush_port(id);
        self.pipeline.neigh.remove_port(id);
        self.pipeline.port_security.set(id, None);
        self.pipeline.nat.conntrack.remove_port(id);
        if self.pipeline.gateway.host_port == Some(id) {
            self.pipeline.gateway.host_port = None;
        }
        if self.pipeline.gateway.overlay_port == Some(id) {
            self.pipeline.gateway.overlay_port = None;
            if let Some(ov) = &mut self.pipeline.overlay {
                ov.port = None;
            }
        }
        if self.pipeline.gateway.node_port.is_some_and(|np| np.port == id) {
            self.pipeline.gateway.node_port = None;
        }
        let counters = std::mem::take(&mut self.counters[id.index()]);
        Some((slot.port, counters))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Pinning, WorkerConfig};
    use crate::pipeline::testutil::*;
    use crate::port::memory::{MemoryPort, MemoryPortHandle};

    /// A switch with `workers` workers and three memory ports (single-queue: with two
    /// workers, port 1 is polled by worker 1 and ports 0 and 2 by worker 0, so frames
    /// between them cross the fabric).
    fn start(workers: usize) -> (WorkerHandle, Vec<MemoryPortHandle>) {
        let cfg = Config::for_node("n1", "10.244.1.0/24".parse().unwrap(), "/tmp/unused".into());
        let settings = WorkerConfig { count: workers, pin: Pinning::Off, ..WorkerConfig::single() };
        let w = WorkerHandle::spawn_with(|s| Pipeline::for_worker(&cfg, s), 8, settings).unwrap();
        let mut handles = Vec::new();
        for i in 0..3u16 {
            let (p, h) = MemoryPort::new();
            let neighbor = match i {
                1 => Some((IP_A, MAC_A)),
                2 => Some((IP_B, MAC_B)),
                _ => None,
            };
            w.add_port(PortId(i), vec![Box::new(p)], neighbor, None).unwrap().unwrap();
            handles.push(h);
        }
        (w, handles)
    }

    fn wait_for(h: &MemoryPortHandle, n: usize) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut got = Vec::new();
        while got.len() < n && Instant::now() < deadline {
            got.extend(h.take_sent());
            std::thread::sleep(Duration::from_millis(2));
        }
        got
    }

    fn switches_between_memory_ports_and_counts(workers: usize) {
        let (w, h) = start(workers);
        // A floods (C, a station behind port 2, is unknown), C answers (C learned), then
        // A -> C is unicast. (The pods' own MACs, A and B, are known from the start.)
        h[1].inject(&udp_frame(MAC_A, MAC_C, IP_A, IP_C, 1, 2, b"1"));
        assert_eq!(wait_for(&h[2], 1).len(), 1);
        assert_eq!(wait_for(&h[0], 1).len(), 1, "flood reaches the third port");
        h[2].inject(&udp_frame(MAC_C, MAC_A, IP_C, IP_A, 2, 1, b"2"));
        assert_eq!(wait_for(&h[1], 1).len(), 1);
        // Give the announcement of C time to reach the worker that polls A.
        std::thread::sleep(Duration::from_millis(20));
        h[1].inject(&udp_frame(MAC_A, MAC_C, IP_A, IP_C, 1, 2, b"3"));
        assert_eq!(wait_for(&h[2], 1).len(), 1);
        std::thread::sleep(Duration::from_millis(20));
        assert!(h[0].take_sent().is_empty(), "known unicast is not flooded");
        let stats = w.stats().unwrap();
        let c1 = stats.ports.iter().find(|p| p.id == PortId(1)).unwrap().counters;
        assert_eq!(c1.rx_packets, 2);
        assert_eq!(c1.unknown_unicast, 1);
        assert_eq!(c1.tx_packets, 1);
        if workers == 2 {
            assert_eq!(c1.tx_handoffs, 3, "port 1's frames to ports 0 and 2 crossed over");
        }
        assert_eq!(stats.neighbors, 2);
        let fdb = w.fdb_list().unwrap();
        assert_eq!(fdb.entries.len(), 3, "A and B from attach, C learned: {:?}", fdb.entries);
    }

    #[test]
    fn pods_own_macs_are_known_from_attach_and_come_back_after_a_flush() {
        for workers in [1, 2] {
            let (w, h) = start(workers);
            h[1].inject(&udp_frame(MAC_A, MAC_B, IP_A, IP_B, 1, 2, b"to a silent B"));
            assert_eq!(wait_for(&h[2], 1).len(), 1);
            std::thread::sleep(Duration::from_millis(20));
            assert!(h[0].take_sent().is_empty(), "not flooded");
            w.fdb_flush(None).unwrap();
            assert!(w.fdb_list().unwrap().entries.is_empty());
            let deadline = Instant::now() + Duration::from_secs(3);
            while w.fdb_list().unwrap().entries.len() < 2 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let ports: Vec<PortId> = w.fdb_list().unwrap().entries.iter().map(|e| e.port).collect();
            assert_eq!(ports, [PortId(1), PortId(2)], "put back by the aging sweep");
        }
    }

    /// EtherType of the frame a test sends to make the pipeline panic (IEEE local
    /// experimental): stands for any bug a pod's frame could trigger.
    const PANIC_MARKER: [u8; 2] = [0x88, 0xb5];

    pub(super) fn panic_on_marker(batch: &Batch) {
        if batch.packets().iter().any(|p| p.data().get(12..14) == Some(&PANIC_MARKER[..])) {
            panic!("test: a frame of death");
        }
    }

    #[test]
    fn a_panic_in_the_pipeline_costs_its_burst_not_the_worker() {
        for workers in [1, 2] {
            let (w, h) = start(workers);
            let mut death = udp_frame(MAC_A, MAC_B, IP_A, IP_B, 1, 2, b"x");
            death[12..14].copy_from_slice(&PANIC_MARKER);
            for i in 1..=3 {
                h[1].inject(&death);
                // Each in a burst of its own: a panic costs the whole burst it is in.
                let deadline = Instant::now() + Duration::from_secs(5);
                while w.health().panics < i && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
            h[1].inject(&udp_frame(MAC_A, MAC_B, IP_A, IP_B, 1, 2, b"after"));
            let got = wait_for(&h[2], 1);
            assert_eq!(got.len(), 1, "{workers} workers: still forwarding; {:?}", w.health());
            assert!(got[0].ends_with(b"after"));
            let health = w.health();
            assert!(health.down.is_empty(), "{health:?}");
            assert_eq!(health.panics, 3, "{health:?}");
            let stats = w.stats().unwrap();
            let c1 = stats.ports.iter().find(|p| p.id == PortId(1)).unwrap().counters;
            assert_eq!(c1.drops[DropReason::WorkerPanic as usize], 3, "{workers} workers");
        }
    }

    #[test]
    fn switches_between_memory_ports_and_counts_one_worker() {
        switches_between_memory_ports_and_counts(1);
    }

    #[test]
    fn switches_between_memory_ports_and_counts_two_workers() {
        switches_between_memory_ports_and_counts(2);
    }

    #[test]
    fn stations_learned_by_one_worker_are_known_to_the_other() {
        let (w, h) = start(2);
        // C (a station behind port 2, not a pod the switch attached) talks first, learned
        // by worker 0, which polls port 2; then A -> C must be unicast on worker 1 without a
        // flood.
        let x = MacAddr([0x02, 0, 0, 0, 0, 0x33]);
        h[2].inject(&udp_frame(x, MAC_A, IP_C, IP_A, 2, 1, b"hello"));
        assert_eq!(wait_for(&h[1], 1).len(), 1);
        std::thread::sleep(Duration::from_millis(20));
        h[1].inject(&udp_frame(MAC_A, x, IP_A, IP_C, 1, 2, b"to C"));
        assert_eq!(wait_for(&h[2], 1).len(), 1);
        std::thread::sleep(Duration::from_millis(20));
        assert!(h[0].take_sent().is_empty(), "not flooded: worker 1 knew C");
        let c1 = w.stats().unwrap().ports.iter().find(|p| p.id == PortId(1)).unwrap().counters;
        assert_eq!(c1.unknown_unicast, 0);
    }

    #[test]
    fn arp_for_a_known_pod_is_answered_not_flooded() {
        for workers in [1, 2] {
            let (_w, h) = start(workers);
            h[1].inject(&arp_request(MAC_A, IP_A, IP_B));
            let replies = wait_for(&h[1], 1);
            assert_eq!(replies.len(), 1);
            assert_eq!(&replies[0][6..12], &MAC_B.0);
            std::thread::sleep(Duration::from_millis(20));
            assert!(h[0].take_sent().is_empty() && h[2].take_sent().is_empty());
        }
    }

    #[test]
    fn removing_a_port_flushes_its_state_and_keeps_the_rest() {
        for workers in [1, 2] {
            let (w, h) = start(workers);
            h[2].inject(&udp_frame(MAC_B, MAC_A, IP_B, IP_A, 2, 1, b"learn B"));
            wait_for(&h[1], 1);
            let (ports, counters) = w.remove_port(PortId(2)).unwrap().unwrap();
            assert_eq!(ports.len(), 1, "its one queue came back");
            drop(ports);
            assert_eq!(counters.rx_packets, 1);
            assert!(w.remove_port(PortId(2)).unwrap().is_none());
            let fdb = w.fdb_list().unwrap();
            assert!(fdb.entries.iter().all(|e| e.port != PortId(2)));
            // ARP for B is no longer answered: it is flooded to the remaining port.
            h[1].inject(&arp_request(MAC_A, IP_A, IP_B));
            assert_eq!(wait_for(&h[0], 1).len(), 1);
            let stats = w.stats().unwrap();
            assert_eq!(stats.neighbors, 1);
            // The id can be reused.
            let (p, _h) = MemoryPort::new();
            w.add_port(PortId(2), vec![Box::new(p)], None, None).unwrap().unwrap();
        }
    }

    #[test]
    fn add_port_refuses_used_ids_and_addresses_on_every_worker() {
        for workers in [1, 2] {
            let (w, _h) = start(workers);
            let (p, _) = MemoryPort::new();
            let e = w.add_port(PortId(1), vec![Box::new(p)], None, None).unwrap().unwrap_err();
            assert!(matches!(e, AttachError::InUse(PortId(1))), "{e}");
            let (p, _) = MemoryPort::new();
            let e = w
                .add_port(PortId(5), vec![Box::new(p)], Some((IP_A, MAC_C)), None)
                .unwrap()
                .unwrap_err();
            assert!(matches!(e, AttachError::Neighbor(NeighError::Exists(IP_A))), "{e}");
            assert!(e.to_string().contains("already in use"), "{e}");
            let (p, _) = MemoryPort::new();
            let e = w.add_port(PortId(99), vec![Box::new(p)], None, None).unwrap().unwrap_err();
            assert!(matches!(e, AttachError::BeyondLimit(PortId(99))), "{e}");
            // Refused everywhere: the id is still free on every worker.
            let (p, _) = MemoryPort::new();
            w.add_port(PortId(5), vec![Box::new(p)], None, None).unwrap().unwrap();
            let queues: Vec<Box<dyn Port>> =
                (0..3).map(|_| Box::new(MemoryPort::new().0) as Box<dyn Port>).collect();
            let e = w.add_port(PortId(6), queues, None, None).unwrap().unwrap_err();
            assert!(matches!(e, AttachError::QueueCount { queues: 3, .. }), "{e}");
        }
    }
}
