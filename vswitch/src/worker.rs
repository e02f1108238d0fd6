//! The worker: the thread that owns the ports, the tables and the counters, and runs
//! receive → pipeline → transmit on bursts.
//!
//! Threading model: one worker thread does all packet work; the control plane never touches
//! its state. The control plane sends [`Command`]s over a channel and wakes the worker
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

use std::collections::VecDeque;
use std::io;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

use crate::cidr::Ipv4Cidr;
use crate::config::PeerConfig;
use crate::packet::{Batch, BATCH_SIZE};
use crate::pipeline::output::TxPlan;
use crate::pipeline::Pipeline;
use crate::port::{Port, PortId};
use crate::stats::{DropReason, PortCounters};
use crate::tables::conntrack::{ConntrackCounters, Entry as CtEntry};
use crate::tables::fdb::{FdbCounters, FdbEntry};
use crate::tables::neigh::Neighbor;
use crate::tables::services::{Endpoint as ServiceEndpoint, ServiceSpec, ServiceTable};
use crate::wire::MacAddr;

/// Bursts taken from one port before the others get a turn.
pub const MAX_BURSTS_PER_TURN: usize = 8;

/// How often the MAC table is swept for aged entries.
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

const WAKER_TOKEN: Token = Token(usize::MAX);

/// A change or question from the control plane, applied between bursts.
#[derive(Debug)]
pub enum Command {
    /// Starts polling `port` as `id`; with `neighbor`, the pod's address is added to the
    /// neighbor table in the same step. Refused (nothing changed) when the id is in use or the
    /// address is taken.
    AddPort {
        /// Id to use (chosen by the control plane, below `max_ports`).
        id: PortId,
        /// The port.
        port: Box<dyn Port>,
        /// The pod's address and MAC.
        neighbor: Option<(Ipv4Addr, MacAddr)>,
        /// Answer.
        reply: Sender<Result<(), String>>,
    },
    /// Stops polling a port and hands it back (dropping it closes the device), with its final
    /// counters. Its MAC table entries and neighbor entries are removed in the same step.
    RemovePort {
        /// The port.
        id: PortId,
        /// Answer: the port and its counters, or `None` if there was no such port.
        reply: Sender<Option<(Box<dyn Port>, PortCounters)>>,
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
    /// Adds an overlay peer, or replaces the one with its name. The control plane has checked
    /// that it fits beside the others; refused when the peer table is full.
    PeerUpsert {
        /// The peer.
        peer: PeerConfig,
        /// Answer.
        reply: Sender<Result<(), String>>,
    },
    /// Removes an overlay peer: packets to its pod CIDR stop being sent to it from the next
    /// burst on.
    PeerRemove {
        /// Its name.
        name: String,
        /// Answer: whether it existed.
        reply: Sender<bool>,
    },
    /// Replaces the whole Service table (built and validated by the control plane) in one
    /// step; tracked connections are kept. Answer: the old table, to be dropped off the
    /// packet path.
    ServicesReplace {
        /// The new table.
        table: Box<ServiceTable>,
        /// Answer.
        reply: Sender<Box<ServiceTable>>,
    },
    /// Adds or replaces one Service (validated by the control plane).
    ServiceUpsert {
        /// The Service.
        spec: ServiceSpec,
        /// The Service CIDR it was validated against.
        cidr: Ipv4Cidr,
        /// Answer: the Service it replaced, or why it was refused.
        reply: Sender<Result<Option<ServiceSpec>, String>>,
    },
    /// Removes a Service; its connections' next packets are reset.
    ServiceRemove {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// Answer: the removed Service's ports (none: no such Service).
        reply: Sender<Vec<ServiceSpec>>,
    },
    /// Replaces a Service's endpoints.
    EndpointsSet {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// Which port (and protocol), when the Service has several.
        port: Option<(u16, crate::tables::services::L4Proto)>,
        /// The endpoints.
        endpoints: Vec<ServiceEndpoint>,
        /// Answer.
        reply: Sender<Result<(), String>>,
    },
    /// Lists the Services.
    ServiceList {
        /// Answer.
        reply: Sender<Vec<ServiceSpec>>,
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
}

#[derive(Debug)]
struct Slot {
    port: Box<dyn Port>,
    /// Set when the device failed; the port stays listed until removed.
    failed: Option<String>,
    /// On the ready list.
    queued: bool,
    has_fd: bool,
}

/// The worker's state. Built by [`WorkerHandle::spawn`] and moved onto its thread.
#[derive(Debug)]
struct Worker {
    poll: Poll,
    slots: Vec<Option<Slot>>,
    live: Vec<PortId>,
    counters: Vec<PortCounters>,
    pipeline: Pipeline,
    batch: Batch,
    plan: TxPlan,
    ready: VecDeque<PortId>,
    fdless: Vec<PortId>,
    commands: Receiver<Command>,
    last_sweep: Instant,
    busy_poll: crate::config::BusyPoll,
}

/// The control plane's handle on the worker thread.
#[derive(Debug)]
pub struct WorkerHandle {
    tx: Mutex<Option<Sender<Command>>>,
    waker: Arc<Waker>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// The worker thread has exited or stopped answering.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the packet worker is not answering")]
pub struct WorkerGone;

impl WorkerHandle {
    /// Starts the worker thread with `pipeline` and room for `max_ports` ports.
    pub fn spawn(pipeline: Pipeline, max_ports: usize) -> io::Result<WorkerHandle> {
        WorkerHandle::spawn_with(
            pipeline,
            max_ports,
            crate::config::WorkerConfig {
                busy_poll: crate::config::BusyPoll::After(BUSY_POLL),
                cpu: None,
            },
        )
    }

    /// [`WorkerHandle::spawn`] with explicit polling and placement: busy-poll window (or
    /// never sleep) and the CPU to pin the thread to (pinning failure is logged, not fatal).
    pub fn spawn_with(
        pipeline: Pipeline,
        max_ports: usize,
        settings: crate::config::WorkerConfig,
    ) -> io::Result<WorkerHandle> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER_TOKEN)?);
        let (tx, rx) = crossbeam_channel::unbounded();
        let worker = Worker {
            poll,
            slots: (0..max_ports).map(|_| None).collect(),
            live: Vec::with_capacity(max_ports),
            counters: vec![PortCounters::default(); max_ports],
            pipeline,
            batch: Batch::new(),
            plan: TxPlan::new(max_ports),
            ready: VecDeque::with_capacity(max_ports),
            fdless: Vec::new(),
            commands: rx,
            last_sweep: Instant::now(),
            busy_poll: settings.busy_poll,
        };
        let cpu = settings.cpu;
        let thread = std::thread::Builder::new().name("psw-worker".into()).spawn(move || {
            if let Some(cpu) = cpu {
                if !core_affinity::set_for_current(core_affinity::CoreId { id: cpu }) {
                    eprintln!("podswitch: worker: could not pin to CPU {cpu}; running unpinned");
                }
            }
            worker.run()
        })?;
        Ok(WorkerHandle { tx: Mutex::new(Some(tx)), waker, thread: Mutex::new(Some(thread)) })
    }

    /// Sends a command built around a reply channel and waits for the answer.
    pub fn call<R>(&self, make: impl FnOnce(Sender<R>) -> Command) -> Result<R, WorkerGone> {
        let (reply_tx, reply_rx) = crossbeam_channel::bounded(1);
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner()).clone().ok_or(WorkerGone)?;
        tx.send(make(reply_tx)).map_err(|_| WorkerGone)?;
        self.waker.wake().map_err(|_| WorkerGone)?;
        reply_rx.recv_timeout(COMMAND_TIMEOUT).map_err(|_| WorkerGone)
    }

    /// Stops the worker and waits for it; every port it still holds is dropped (closing its
    /// device).
    pub fn shutdown(&self) {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        let _ = self.waker.wake();
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
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
        loop {
            let always = self.busy_poll == crate::config::BusyPoll::Always;
            let timeout = if always || !self.ready.is_empty() || Instant::now() < busy_until {
                Duration::ZERO
            } else if !self.fdless.is_empty() {
                POLLED_PORT_INTERVAL
            } else {
                AGING_SWEEP_INTERVAL
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    eprintln!("podswitch: worker: epoll failed: {e}");
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
            if !self.ready.is_empty() {
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
            if now.duration_since(self.last_sweep) >= AGING_SWEEP_INTERVAL {
                self.pipeline.fdb.age(now);
                self.last_sweep = now;
            }
            // A slice of the conntrack table per turn: expiry never stalls forwarding.
            if !self.pipeline.nat.conntrack.is_empty() {
                self.pipeline.nat.conntrack.sweep(now, CONNTRACK_SWEEP_BUDGET);
            }
        }
    }

    fn mark_ready(&mut self, id: PortId) {
        if let Some(Some(slot)) = self.slots.get_mut(id.index()) {
            if !slot.queued && slot.failed.is_none() {
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
        for _ in 0..max_bursts {
            self.batch.clear();
            let Some(Some(slot)) = self.slots.get_mut(id.index()) else { return true };
            if slot.failed.is_some() {
                return true;
            }
            let n = match slot.port.rx_burst(&mut self.batch, id) {
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
            self.process_batch();
            if n < BATCH_SIZE {
                return true;
            }
        }
        false
    }

    /// Runs the pipeline over the current batch and transmits the result.
    fn process_batch(&mut self) {
        let now = Instant::now();
        self.pipeline.run(&mut self.batch, &mut self.counters, now);
        self.plan.build(&self.batch, &self.live);
        for (port, list) in self.plan.iter() {
            let Some(Some(slot)) = self.slots.get_mut(port.index()) else { continue };
            let out = slot.port.tx_burst(&self.batch, list);
            let c = &mut self.counters[port.index()];
            c.tx_packets += u64::from(out.sent);
            c.tx_bytes += out.bytes;
            c.tx_gro_frames += u64::from(out.gro_frames);
            c.tx_gro_merged += u64::from(out.gro_merged);
            c.tx_gso_sends += u64::from(out.gso_sends);
            c.drops[DropReason::TxQueueFull as usize] += u64::from(out.queue_full);
            c.drops[DropReason::TxError as usize] += u64::from(out.errors);
        }
    }

    fn fail_port(&mut self, id: PortId, e: io::Error) {
        self.counters[id.index()].drop(DropReason::RxError);
        if let Some(Some(slot)) = self.slots.get_mut(id.index()) {
            if let Some(fd) = slot.port.poll_fd() {
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
            Command::AddPort { id, port, neighbor, reply } => {
                let _ = reply.send(self.add_port(id, port, neighbor));
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
                self.plan.set_no_flood(id, self.pipeline.gateway.node_port.map(|np| np.port));
                let _ = reply.send(());
            }
            Command::SetNodePort { path, reply } => {
                self.pipeline.gateway.node_port = path;
                self.plan.set_no_flood(self.pipeline.gateway.overlay_port, path.map(|np| np.port));
                let _ = reply.send(());
            }
            Command::PeerUpsert { peer, reply } => {
                let r = match &mut self.pipeline.overlay {
                    Some(ov) => ov.peers.upsert(peer).map(|_| ()).map_err(|e| e.to_string()),
                    None => Err("no overlay is configured".to_string()),
                };
                let _ = reply.send(r);
            }
            Command::ServicesReplace { table, reply } => {
                let old = std::mem::replace(&mut self.pipeline.nat.services, *table);
                let _ = reply.send(Box::new(old));
            }
            Command::ServiceUpsert { spec, cidr, reply } => {
                let r = self.pipeline.nat.services.upsert(spec, cidr).map_err(|e| e.to_string());
                let _ = reply.send(r);
            }
            Command::ServiceRemove { namespace, name, reply } => {
                let _ = reply.send(self.pipeline.nat.services.remove(&namespace, &name));
            }
            Command::EndpointsSet { namespace, name, port, endpoints, reply } => {
                let r = self
                    .pipeline
                    .nat
                    .services
                    .set_endpoints(&namespace, &name, port, endpoints)
                    .map_err(|e| e.to_string());
                let _ = reply.send(r);
            }
            Command::ServiceList { reply } => {
                let _ = reply.send(self.pipeline.nat.services.list());
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
            Command::PeerRemove { name, reply } => {
                let removed = self
                    .pipeline
                    .overlay
                    .as_mut()
                    .is_some_and(|ov| ov.peers.remove(&name).is_some());
                let _ = reply.send(removed);
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
                            device_drops: s.port.device_drops(),
                        })
                    })
                    .collect();
                let _ = reply.send(StatsSnapshot {
                    ports,
                    fdb_len: self.pipeline.fdb.len(),
                    fdb: self.pipeline.fdb.counters(),
                    neighbors: self.pipeline.neigh.len(),
                });
            }
        }
    }

    fn add_port(
        &mut self,
        id: PortId,
        port: Box<dyn Port>,
        neighbor: Option<(Ipv4Addr, MacAddr)>,
    ) -> Result<(), String> {
        match self.slots.get(id.index()) {
            None => return Err(format!("port id {id} is beyond the port limit")),
            Some(Some(_)) => return Err(format!("port id {id} is in use")),
            Some(None) => {}
        }
        if let Some((ip, mac)) = neighbor {
            self.pipeline
                .neigh
                .insert(ip, Neighbor { mac, port: id })
                .map_err(|e| e.to_string())?;
        }
        let fd = port.poll_fd();
        if let Some(fd) = fd {
            if let Err(e) = self.poll.registry().register(
                &mut SourceFd(&fd),
                Token(id.index()),
                Interest::READABLE,
            ) {
                if let Some((ip, _)) = neighbor {
                    self.pipeline.neigh.remove(ip);
                }
                return Err(format!("cannot poll the port: {e}"));
            }
        } else {
            self.fdless.push(id);
        }
        self.slots[id.index()] =
            Some(Slot { port, failed: None, queued: false, has_fd: fd.is_some() });
        self.counters[id.index()] = PortCounters::default();
        self.live.push(id);
        self.live.sort_unstable();
        // Frames may already be waiting; epoll reports them on registration, but an explicit
        // turn costs nothing.
        self.mark_ready(id);
        Ok(())
    }

    fn remove_port(&mut self, id: PortId) -> Option<(Box<dyn Port>, PortCounters)> {
        let slot = self.slots.get_mut(id.index())?.take()?;
        if slot.has_fd && slot.failed.is_none() {
            if let Some(fd) = slot.port.poll_fd() {
                let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
            }
        }
        self.live.retain(|p| *p != id);
        self.fdless.retain(|p| *p != id);
        self.ready.retain(|p| *p != id);
        self.pipeline.fdb.flush_port(id);
        self.pipeline.neigh.remove_port(id);
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
        self.plan.set_no_flood(
            self.pipeline.gateway.overlay_port,
            self.pipeline.gateway.node_port.map(|np| np.port),
        );
        let counters = std::mem::take(&mut self.counters[id.index()]);
        Some((slot.port, counters))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::pipeline::testutil::*;
    use crate::port::memory::{MemoryPort, MemoryPortHandle};

    fn start() -> (WorkerHandle, Vec<MemoryPortHandle>) {
        let cfg = Config::for_node("n1", "10.244.1.0/24".parse().unwrap(), "/tmp/unused".into());
        let w = WorkerHandle::spawn(Pipeline::new(&cfg), 8).unwrap();
        let mut handles = Vec::new();
        for i in 0..3u16 {
            let (p, h) = MemoryPort::new();
            let neighbor = match i {
                1 => Some((IP_A, MAC_A)),
                2 => Some((IP_B, MAC_B)),
                _ => None,
            };
            w.call(|reply| Command::AddPort { id: PortId(i), port: Box::new(p), neighbor, reply })
                .unwrap()
                .unwrap();
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

    #[test]
    fn switches_between_memory_ports_and_counts() {
        let (w, h) = start();
        // A floods (unknown B), B answers (A learned), then A -> B is unicast.
        h[1].inject(&udp_frame(MAC_A, MAC_B, IP_A, IP_B, 1, 2, b"1"));
        assert_eq!(wait_for(&h[2], 1).len(), 1);
        assert_eq!(wait_for(&h[0], 1).len(), 1, "flood reaches the third port");
        h[2].inject(&udp_frame(MAC_B, MAC_A, IP_B, IP_A, 2, 1, b"2"));
        assert_eq!(wait_for(&h[1], 1).len(), 1);
        h[1].inject(&udp_frame(MAC_A, MAC_B, IP_A, IP_B, 1, 2, b"3"));
        assert_eq!(wait_for(&h[2], 1).len(), 1);
        std::thread::sleep(Duration::from_millis(20));
        assert!(h[0].take_sent().is_empty(), "known unicast is not flooded");
        let stats = w.call(|reply| Command::Stats { reply }).unwrap();
        let c1 = stats.ports.iter().find(|p| p.id == PortId(1)).unwrap().counters;
        assert_eq!(c1.rx_packets, 2);
        assert_eq!(c1.unknown_unicast, 1);
        assert_eq!(c1.tx_packets, 1);
        assert_eq!(stats.neighbors, 2);
        let fdb = w.call(|reply| Command::FdbList { reply }).unwrap();
        assert_eq!(fdb.entries.len(), 2);
    }

    #[test]
    fn arp_for_a_known_pod_is_answered_not_flooded() {
        let (_w, h) = start();
        h[1].inject(&arp_request(MAC_A, IP_A, IP_B));
        let replies = wait_for(&h[1], 1);
        assert_eq!(replies.len(), 1);
        assert_eq!(&replies[0][6..12], &MAC_B.0);
        std::thread::sleep(Duration::from_millis(20));
        assert!(h[0].take_sent().is_empty() && h[2].take_sent().is_empty());
    }

    #[test]
    fn removing_a_port_flushes_its_state_and_keeps_the_rest() {
        let (w, h) = start();
        h[2].inject(&udp_frame(MAC_B, MAC_A, IP_B, IP_A, 2, 1, b"learn B"));
        wait_for(&h[1], 1);
        let (port, counters) =
            w.call(|reply| Command::RemovePort { id: PortId(2), reply }).unwrap().unwrap();
        drop(port);
        assert_eq!(counters.rx_packets, 1);
        assert!(w.call(|reply| Command::RemovePort { id: PortId(2), reply }).unwrap().is_none());
        let fdb = w.call(|reply| Command::FdbList { reply }).unwrap();
        assert!(fdb.entries.iter().all(|e| e.port != PortId(2)));
        // ARP for B is no longer answered: it is flooded to the remaining port.
        h[1].inject(&arp_request(MAC_A, IP_A, IP_B));
        assert_eq!(wait_for(&h[0], 1).len(), 1);
        let stats = w.call(|reply| Command::Stats { reply }).unwrap();
        assert_eq!(stats.neighbors, 1);
        // The id can be reused.
        let (p, _h) = MemoryPort::new();
        w.call(|reply| Command::AddPort {
            id: PortId(2),
            port: Box::new(p),
            neighbor: None,
            reply,
        })
        .unwrap()
        .unwrap();
    }

    #[test]
    fn add_port_refuses_used_ids_and_addresses() {
        let (w, _h) = start();
        let (p, _) = MemoryPort::new();
        let e = w
            .call(|reply| Command::AddPort {
                id: PortId(1),
                port: Box::new(p),
                neighbor: None,
                reply,
            })
            .unwrap()
            .unwrap_err();
        assert!(e.contains("in use"), "{e}");
        let (p, _) = MemoryPort::new();
        let e = w
            .call(|reply| Command::AddPort {
                id: PortId(5),
                port: Box::new(p),
                neighbor: Some((IP_A, MAC_C)),
                reply,
            })
            .unwrap()
            .unwrap_err();
        assert!(e.contains("already in use"), "{e}");
        let (p, _) = MemoryPort::new();
        let e = w
            .call(|reply| Command::AddPort {
                id: PortId(99),
                port: Box::new(p),
                neighbor: None,
                reply,
            })
            .unwrap()
            .unwrap_err();
        assert!(e.contains("limit"), "{e}");
    }
}
