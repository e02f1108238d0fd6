//! The worker thread's packet loop: wait for ports and commands, receive bursts, run the
//! pipeline, execute its transmit plan and hand-offs, apply commands between bursts.

use super::*;

#[derive(Debug)]
pub(super) struct Slot {
    /// This worker's queue of the port; `None` when another worker owns its only queue.
    pub(super) port: Option<Box<dyn Port>>,
    /// The worker that owns the port's only queue (when `port` is `None`).
    pub(super) owner: usize,
    /// Set when the device failed; the port stays listed until removed.
    pub(super) failed: Option<String>,
    /// On the ready list.
    pub(super) queued: bool,
    pub(super) has_fd: bool,
    /// The pod's own MAC, as the control plane gave it: kept in the MAC table while the
    /// port exists ([`Worker::keep_pod_macs`]).
    pub(super) mac: Option<MacAddr>,
}

/// One worker's state. Built by [`WorkerHandle::spawn_with`] and moved onto its thread.
#[derive(Debug)]
pub(super) struct Worker {
    pub(super) me: usize,
    pub(super) fabric: Arc<Fabric>,
    pub(super) poll: Poll,
    pub(super) slots: Vec<Option<Slot>>,
    pub(super) live: Vec<PortId>,
    pub(super) counters: Vec<PortCounters>,
    pub(super) pipeline: Pipeline,
    pub(super) batch: Batch,
    pub(super) ready: VecDeque<PortId>,
    pub(super) fdless: Vec<PortId>,
    pub(super) commands: Receiver<Command>,
    pub(super) last_sweep: Instant,
    pub(super) busy_poll: crate::config::BusyPoll,
    /// Workers this batch sent packets to (a bit each): woken once the batch is done.
    pub(super) to_wake: u64,
    /// A port was left with frames because the fabric's pool was low.
    pub(super) gated: bool,
    /// Bursts lost to a panic in the pipeline (see [`Worker::process_batch`]), read by the
    /// control plane without asking the worker.
    pub(super) panics: Arc<AtomicU64>,
}

/// Adds one `tx_burst`'s outcome to the output port's counters.
pub(super) fn count_tx(c: &mut PortCounters, out: &crate::port::TxOutcome) {
    c.tx_packets += u64::from(out.sent);
    c.tx_bytes += out.bytes;
    c.tx_gro_frames += u64::from(out.gro_frames);
    c.tx_gro_merged += u64::from(out.gro_merged);
    c.tx_gso_sends += u64::from(out.gso_sends);
    c.drops[DropReason::TxQueueFull as usize] += u64::from(out.queue_full);
    c.drops[DropReason::TxError as usize] += u64::from(out.errors);
}

impl Worker {
    pub(super) fn run(mut self) {
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
