//! The control plane's side of the workers: [`WorkerHandle`] starts them, sends them
//! [`Command`]s and waits for the answers, and tells whether they are alive.

use super::packet_loop::Worker;
use super::*;

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
pub(super) fn quiet_worker_panics() {
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

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}
