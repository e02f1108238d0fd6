//! A stateful harness for the whole packet path, shared by the fuzz target
//! `pipeline_stateful` (`vswitch/fuzz/`) and the bounded property test in `tests.rs`.
//!
//! What it owns: a realistic node ([`Harness::new`]) and a decoder that turns any byte string
//! into a run over it ([`run_case`]). No I/O, no threads; time is simulated.
//!
//! # The node
//!
//! Two workers (the pipelines of worker 0 and worker 1 of 2, sharing the reply marks and the
//! conntrack limit), each with its own tables and counters, as `worker/` runs them; a packet
//! whose connection the other worker tracks is handed to it after classification, the way
//! `Worker::steer_out` does, and finished there. Ports:
//!
//! | port | what |
//! |---|---|
//! | 0 | the host port (`psw0`, the gateway MAC) |
//! | 1–4 | pods A–D (10.244.1.2–5), each a neighbour |
//! | 5 | the overlay port, peers `node-2` (10.244.2.0/24) and `node-3` (10.244.3.0/24) |
//! | 6 | the NodePort interface on 192.168.1.1 |
//!
//! Services: `web` (TCP and UDP 10.96.0.20:80 → B, C; NodePort 30080/tcp), `kube-dns`
//! (10.96.0.10:53 UDP and TCP → the gateway, behind the host port), `sticky` (TCP
//! 10.96.0.30:443 → A, D, ClientIP affinity, round robin), `loop` (UDP 10.96.0.41:7000 → A
//! only: A reaching it is a hairpin), `remote` (TCP 10.96.0.50:8080 → a pod on `node-2`),
//! `empty` (TCP 10.96.0.60:80, no ready endpoint), `dns-np` (UDP 10.96.0.70:53 → C, NodePort
//! 30053/udp). Small limits (16 MACs, 48 connections, 4 NodePort clients, 8 affinity pins)
//! so that full tables are reached too.
//!
//! Before the input runs, conntrack is populated with real traffic through the pipeline: UDP
//! and TCP handshakes from pods to each VIP and the endpoints' answers, a hairpin flow, a
//! NodePort flow of each protocol, a flow to the remote endpoint answered over VXLAN, ARP and
//! a ping. From these, [templates](Template) are made: valid frames deep in the state space
//! (a reply of each tracked flow, ICMP errors quoting each translated packet, VXLAN from a
//! peer, a super-frame to a remote pod, ...), which the input may mutate.
//!
//! # The input
//!
//! A sequence of [`Step`]s ([`decode`]; [`encode`] is its inverse for generated cases): raw
//! frames, mutated templates (byte writes, truncation, extension, and optional repair of
//! IPv4 lengths and checksums so a mutation survives classification), time passing (with the
//! workers' housekeeping), and control-plane changes (endpoints, Services, flushes, ports,
//! peers). Frames collect in per-worker bursts, which run when a step asks or when full.
//!
//! # What is checked
//!
//! Beyond "no panic", after every burst ([`Harness::run`] panics with the step when one
//! fails):
//! - every packet has a decision (no `Continue`); forwards name live ports; nothing is
//!   flooded from the overlay or the NodePort interface, or relayed back into the overlay;
//!   a frame for the overlay port has a known peer as its tunnel, one for the NodePort
//!   interface the interface's MAC as its source;
//! - drop counters grew by exactly the drops decided, per port and reason;
//! - forwarded frames did not grow, answers stay within an ICMP error's size;
//! - a frame whose IPv4 header checksum (and, without offload metadata, TCP/UDP/ICMP
//!   checksum) verified on the way in still verifies on the way out;
//! - the transmit side works: GRO over each TAP port's list keeps every frame, software
//!   segmentation for the overlay and NodePort ports stays within its buffers;
//! - conntrack stays within the node's limit (shared count exact), the MAC tables within
//!   theirs, and at the end no connection is tracked by both workers.
//!
//! The warm-up is not checked: it is the same for every case (its templates are made once
//! per thread), and the unit tests in `tests.rs` check it.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::offload::gro::{Gro, MAX_MERGED_LEN};
use crate::offload::gso::{tcp4_segment_headers, tcp4_segmentation, MAX_HDR_LEN};
use crate::packet::{Action, Batch, Packet, VnetHdr, BATCH_SIZE, MAX_FRAME_LEN};
use crate::port::PortId;
use crate::stats::{DropReason, PortCounters};
use crate::tables::neigh::Neighbor;
use crate::tables::services::{Algorithm, Endpoint, L4Proto, ServiceSpec};
use crate::wire::{checksum, MacAddr};

use super::gateway::NodePortPath;
use super::output::TxPlan;
use super::steer::{ReplyMarks, Steering};
use super::{Entry, Pipeline};

mod bursts;
mod checks;
mod frames;
mod input;
mod node;
mod seeds;
mod warmup;

pub use frames::*;
pub use input::*;
pub use node::*;
pub use seeds::*;

/// What a case did (for the property test's sanity checks and for curiosity).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Frames run through the pipeline (warm-up excluded).
    pub frames: usize,
    /// Of those, handed to the other worker.
    pub steered: usize,
    /// Of those, dropped.
    pub dropped: usize,
    /// Bursts run.
    pub bursts: usize,
    /// Connections tracked by both workers after the warm-up.
    pub warm_conntrack: usize,
    /// Connections tracked at the end.
    pub end_conntrack: usize,
}

/// Runs one case: a fresh node, its warm-up, then `input` (see [`Step`]). Panics when the
/// pipeline panics or an invariant breaks.
pub fn run_case(input: &[u8]) -> Summary {
    let mut h = Harness::new();
    h.run(&decode(input));
    h.summary
}

/// A frame the harness can start from, valid in the warmed-up state.
#[derive(Debug, Clone)]
pub struct Template {
    /// What it is.
    pub name: &'static str,
    /// The port it arrives on.
    pub port: PortId,
    /// For the overlay port: the sending peer.
    pub tunnel: Option<Ipv4Addr>,
    /// The frame (for the overlay port, VXLAN header first).
    pub frame: Vec<u8>,
}

/// A connection the warm-up opened, as it went through the switch.
#[derive(Debug, Clone)]
struct Flow {
    /// The client's port, MAC, address and port; the Service address it used.
    client_port: PortId,
    client_mac: MacAddr,
    client: (Ipv4Addr, u16),
    vip: (Ipv4Addr, u16),
    proto: u8,
    /// The translated packet as the endpoint saw it: its IPv4 header and first 8 bytes of
    /// L4, and the addresses it went between.
    seen: Vec<u8>,
    from: (Ipv4Addr, u16),
    to: (Ipv4Addr, u16),
}

impl Flow {
    /// Where the client sends its packets: the NodePort interface or the gateway.
    fn next_hop(&self) -> MacAddr {
        if self.client_port == NODE_PORT {
            NODE_MAC
        } else {
            GW_MAC
        }
    }
}

/// Per-packet facts recorded on the way in, checked on the way out.
#[derive(Debug, Clone, Copy)]
struct Ingress {
    len: usize,
    ip_ok: bool,
    l4_ok: bool,
}

#[derive(Debug)]
struct Worker {
    pipeline: Pipeline,
    counters: Vec<PortCounters>,
    batch: Batch,
    info: Vec<Ingress>,
}

/// The simulated node: two workers, their ports and the transmit side. See the module doc.
#[derive(Debug)]
pub struct Harness {
    workers: Vec<Worker>,
    services: Vec<ServiceSpec>,
    live: Vec<PortId>,
    now: Instant,
    tx: Tx,
    inbox: Option<Batch>,
    spare: Vec<Packet>,
    flows: Vec<Flow>,
    templates: std::rc::Rc<[Template]>,
    peers: Vec<crate::config::PeerConfig>,
    /// Whether bursts are checked and transmitted (not during the warm-up, which is the
    /// same every time and checked by the unit tests).
    checking: bool,
    /// Step being run (for failure messages).
    step: usize,
    summary: Summary,
}

/// The transmit side: output planning and the ports' software offloads.
#[derive(Debug)]
struct Tx {
    plan: TxPlan,
    gro: Gro,
    scratch: Vec<u8>,
}

impl Tx {
    /// The transmit side of the ports: GRO for TAP ports (host, pods), software
    /// segmentation for the overlay and NodePort (AF_XDP) ports.
    fn transmit(&mut self, batch: &Batch, live: &[PortId], step: usize) {
        self.plan.build(batch, live);
        for (port, list) in self.plan.iter() {
            let pkts = list.iter().map(|&i| &batch.packets()[usize::from(i)]);
            if port == OVERLAY || port == NODE_PORT {
                for pkt in pkts {
                    let vnet = pkt.meta.vnet;
                    let frame = pkt.data();
                    if !vnet.is_gso() {
                        if vnet.needs_csum() {
                            let mut copy = frame.to_vec();
                            let _ = vnet.complete_checksum(&mut copy);
                        }
                        continue;
                    }
                    let Some(seg) = (vnet.gso_type & !VnetHdr::GSO_ECN == VnetHdr::GSO_TCPV4)
                        .then(|| tcp4_segmentation(frame, vnet.gso_size))
                        .flatten()
                    else {
                        continue;
                    };
                    if port == OVERLAY {
                        let mut first = 0;
                        while first < seg.count {
                            let (_, n, _) = crate::port::overlay::build_gso_payloads(
                                frame,
                                &seg,
                                first,
                                VNI,
                                &mut self.scratch,
                            );
                            if n == 0 {
                                break;
                            }
                            first += n;
                        }
                    } else {
                        let mut hdr = [0u8; MAX_HDR_LEN];
                        for k in 0..seg.count {
                            let start = seg.hdr_len + k * seg.mss;
                            let end = (start + seg.mss).min(frame.len());
                            tcp4_segment_headers(frame, &seg, k, &frame[start..end], &mut hdr);
                        }
                    }
                }
            } else {
                let mut carried = 0;
                self.gro.coalesce(pkts.map(|p| (p.data(), p.meta.vnet)), |f| {
                    assert!(f.frame.len() <= MAX_MERGED_LEN, "step {step}: GRO frame too long");
                    carried += f.segments as usize;
                });
                assert_eq!(carried, list.len(), "step {step}: GRO lost or made frames");
            }
        }
    }
}

thread_local! {
    /// Batches and packet buffers of harnesses that are gone, for the next one: allocating
    /// (and zeroing) 2 MiB per batch would cost more than the case itself. Buffers carry
    /// nothing from one case to the next: a frame is always written before it is read.
    static POOL: std::cell::RefCell<(Vec<Batch>, Vec<Packet>)> = Default::default();
}

fn pooled_batch() -> Batch {
    POOL.with(|p| p.borrow_mut().0.pop()).unwrap_or_default()
}

impl Drop for Harness {
    fn drop(&mut self) {
        let mut batches: Vec<Batch> = self
            .workers
            .drain(..)
            .map(|mut w| {
                w.batch.clear();
                w.batch
            })
            .collect();
        if let Some(mut inbox) = self.inbox.take() {
            inbox.clear();
            batches.push(inbox);
        }
        let spare = std::mem::take(&mut self.spare);
        POOL.with(|p| {
            let mut p = p.borrow_mut();
            for b in batches {
                if p.0.len() < 8 {
                    p.0.push(b);
                }
            }
            for s in spare {
                if p.1.len() < 64 {
                    p.1.push(s);
                }
            }
        });
    }
}

fn cidr(s: &str) -> crate::cidr::Ipv4Cidr {
    s.parse().expect("a valid CIDR")
}

impl Default for Harness {
    fn default() -> Self {
        Harness::new()
    }
}

impl Harness {
    /// The node of the module doc, warmed up: conntrack populated, templates made.
    pub fn new() -> Harness {
        static CONFIG_PARSED: std::sync::OnceLock<Config> = std::sync::OnceLock::new();
        let config = CONFIG_PARSED.get_or_init(|| Config::parse(CONFIG).expect("a valid config"));
        let marks = Arc::new(ReplyMarks::new());
        let conntrack_len: Arc<crate::tables::conntrack::SharedCounts> = Default::default();
        let services = services();
        let workers = (0..2)
            .map(|me| {
                let steering = Steering {
                    workers: 2,
                    me,
                    marks: marks.clone(),
                    conntrack_len: conntrack_len.clone(),
                    // Fixed, so a run is the same every time (a pod cannot read it anyway).
                    flow_seed: 0x5eed,
                };
                let mut p = Pipeline::for_worker(config, steering);
                p.nat.node_clients = super::nat::NodeClients::new(4);
                p.nat.affinity = super::nat::Affinity::new(8);
                p.nat.edit_services(|t| {
                    for s in &services {
                        t.upsert(s.clone(), config.services.cidr).expect("valid Service");
                    }
                });
                Worker {
                    pipeline: p,
                    counters: vec![PortCounters::default(); usize::from(PORTS)],
                    batch: pooled_batch(),
                    info: Vec::with_capacity(BATCH_SIZE),
                }
            })
            .collect();
        let peers = config.overlay.as_ref().map(|o| o.peers.clone()).unwrap_or_default();
        let mut h = Harness {
            workers,
            services,
            live: (0..PORTS).map(PortId).collect(),
            now: Instant::now(),
            tx: Tx {
                plan: TxPlan::new(usize::from(PORTS)),
                gro: Gro::new(),
                scratch: vec![0u8; 1 << 16],
            },
            inbox: Some(pooled_batch()),
            spare: POOL.with(|p| std::mem::take(&mut p.borrow_mut().1)),
            flows: Vec::new(),
            templates: std::rc::Rc::from(Vec::new()),
            checking: false,
            peers,
            step: 0,
            summary: Summary::default(),
        };
        h.restore_ports();
        h.warm_up();
        h.checking = true;
        h.summary = Summary { warm_conntrack: h.conntrack_len(), ..Summary::default() };
        h
    }

    /// The templates made by the warm-up (what [`Step::Template`] indexes).
    pub fn templates(&self) -> &[Template] {
        &self.templates
    }

    /// Connections tracked by both workers.
    pub fn conntrack_len(&self) -> usize {
        self.workers.iter().map(|w| w.pipeline.nat.conntrack.len()).sum()
    }

    /// What has happened so far.
    pub fn summary(&self) -> Summary {
        self.summary
    }

    /// Attaches every port (again): neighbours, host, overlay and NodePort paths.
    fn restore_ports(&mut self) {
        self.live = (0..PORTS).map(PortId).collect();
        for w in &mut self.workers {
            let p = &mut w.pipeline;
            p.gateway.host_port = Some(HOST);
            p.gateway.overlay_port = Some(OVERLAY);
            if let Some(ov) = &mut p.overlay {
                ov.port = Some(OVERLAY);
            }
            p.gateway.node_port =
                Some(NodePortPath { port: NODE_PORT, ip: NODE_IP, mac: NODE_MAC });
            for i in 0..4 {
                let _ = p.neigh.insert(pod_ip(i), Neighbor { mac: pod_mac(i), port: pod_port(i) });
            }
        }
        self.tx.plan.set_no_flood(Some(OVERLAY), Some(NODE_PORT));
    }

    /// Detaches `port` as the worker does when a port is removed or fails.
    fn remove_port(&mut self, port: PortId) {
        self.live.retain(|p| *p != port);
        for w in &mut self.workers {
            let p = &mut w.pipeline;
            p.fdb.flush_port(port);
            p.neigh.remove_port(port);
            if p.gateway.host_port == Some(port) {
                p.gateway.host_port = None;
            }
            if p.gateway.overlay_port == Some(port) {
                p.gateway.overlay_port = None;
                if let Some(ov) = &mut p.overlay {
                    ov.port = None;
                }
            }
            if p.gateway.node_port.is_some_and(|np| np.port == port) {
                p.gateway.node_port = None;
            }
        }
        let gw = &self.workers[0].pipeline.gateway;
        self.tx.plan.set_no_flood(gw.overlay_port, gw.node_port.map(|np| np.port));
    }

    // --- warm-up -------------------------------------------------------------------

    /// Runs one frame alone on worker 0 (steered as usual) and returns its decision and the
    /// frame as it left.
    fn one(&mut self, port: PortId, tunnel: Option<Ipv4Addr>, frame: &[u8]) -> (Action, Vec<u8>) {
        self.push(0, port, tunnel, VnetHdr::default(), frame);
        let out = self.run_bursts_out();
        out.into_iter().next().unwrap_or((Action::Continue, Vec::new()))
    }

    /// Runs `steps` (then whatever bursts are pending) and the end-of-case checks.
    pub fn run(&mut self, steps: &[Step]) {
        for (i, s) in steps.iter().enumerate() {
            self.step = i;
            self.apply(s);
        }
        self.step = steps.len();
        self.run_bursts();
        self.check_no_shared_connections();
        self.summary.end_conntrack = self.conntrack_len();
    }

    fn apply(&mut self, step: &Step) {
        match step {
            Step::Raw { ctl, vnet, frame } => {
                let port = PortId(u16::from(ctl & 0x0f) % PORTS);
                self.arrive(*ctl, vnet, port, None, frame);
            }
            Step::Template { ctl, vnet, template, writes, extend, truncate, fix } => {
                if self.templates.is_empty() {
                    return;
                }
                let t = &self.templates[usize::from(*template) % self.templates.len()];
                let mut frame = t.frame.clone();
                let (port, tunnel) = match ctl & 0x0f {
                    p @ 9.. => (PortId(u16::from(p - 9)), None),
                    _ => (t.port, t.tunnel),
                };
                for k in 0..usize::from(*extend) {
                    frame.extend(std::iter::repeat_n(k as u8, 64));
                }
                let anchors = Anchor::of(&frame, if t.port == OVERLAY { 8 } else { 0 });
                for &(at, b) in writes {
                    let from = anchors[usize::from(at >> 14)].min(frame.len());
                    let span = frame.len() - from;
                    let b = if at & 0x2000 != 0 { INTERESTING[usize::from(b) % 32] } else { b };
                    if span > 0 {
                        frame[from + usize::from(at & 0x1fff) % span] = b;
                    }
                }
                match *truncate {
                    0 => {}
                    t if t & 0x8000 != 0 => {
                        frame.truncate(frame.len().saturating_sub(usize::from(t & 0x3f)))
                    }
                    t => frame.truncate(usize::from(t)),
                }
                let at = if t.port == OVERLAY { 8 } else { 0 };
                repair(&mut frame, at, *fix);
                self.arrive(*ctl, vnet, port, tunnel, &frame);
            }
            Step::Advance { secs, housekeeping } => {
                self.run_bursts();
                let s = u64::from(secs & 0x7fff) * if secs & 0x8000 != 0 { 60 } else { 1 };
                self.now += Duration::from_secs(s);
                if *housekeeping {
                    for w in &mut self.workers {
                        w.pipeline.fdb.age(self.now);
                        w.pipeline.nat.conntrack.sweep(self.now, 64);
                    }
                    self.check_tables();
                }
            }
            Step::Control { op, arg } => {
                self.run_bursts();
                self.control(*op, *arg);
                self.check_tables();
            }
        }
    }

    /// Edits a copy of the published Service table once and installs the same snapshot on
    /// every worker, as the control plane does.
    fn publish_services(&mut self, edit: impl FnOnce(&mut crate::tables::services::ServiceTable)) {
        let mut next =
            crate::tables::services::ServiceTable::clone(&self.workers[0].pipeline.nat.services);
        edit(&mut next);
        let next = std::sync::Arc::new(next);
        for w in &mut self.workers {
            w.pipeline.nat.install_services(next.clone());
        }
    }

    fn control(&mut self, op: u8, arg: u8) {
        let cidr = cidr("10.96.0.0/12");
        match op % 8 {
            0 => {
                // Endpoints change: keep those whose bit is set; bit 7 makes the first
                // kept one terminating.
                let s = &self.services[usize::from(arg) % self.services.len()];
                let mut eps: Vec<Endpoint> = s
                    .endpoints
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| (arg >> (4 + (*i).min(2))) & 1 != 0)
                    .map(|(_, e)| *e)
                    .collect();
                if arg & 0x80 != 0 {
                    if let Some(e) = eps.first_mut() {
                        e.terminating = true;
                    }
                }
                let (ns, name, port) =
                    (s.namespace.clone(), s.name.clone(), Some((s.port, s.proto)));
                self.publish_services(|t| {
                    let _ = t.set_endpoints(&ns, &name, port, eps);
                });
            }
            1 => {
                let s = &self.services[usize::from(arg) % self.services.len()];
                let (ns, name) = (s.namespace.clone(), s.name.clone());
                self.publish_services(|t| {
                    t.remove(&ns, &name);
                });
            }
            2 => {
                let services = self.services.clone();
                self.publish_services(|t| {
                    for s in services {
                        let _ = t.upsert(s, cidr);
                    }
                });
            }
            3 => {
                for w in &mut self.workers {
                    w.pipeline.nat.conntrack.flush();
                }
            }
            4 => {
                for w in &mut self.workers {
                    if arg & 1 == 0 {
                        w.pipeline.fdb.flush();
                    } else {
                        w.pipeline.fdb.flush_port(PortId(u16::from(arg >> 1) % PORTS));
                    }
                }
            }
            5 => self.remove_port(PortId(u16::from(arg) % PORTS)),
            6 => self.restore_ports(),
            _ => {
                // One peer table edited once and published to both workers.
                let peer = self.peers[usize::from(arg >> 1) % self.peers.len()].clone();
                let Some(ov) = &self.workers[0].pipeline.overlay else { return };
                let mut next = crate::tables::peers::PeerTable::clone(&ov.peers);
                if arg & 1 == 0 {
                    next.remove(&peer.name);
                } else {
                    let _ = next.upsert(peer);
                }
                let next = std::sync::Arc::new(next);
                for w in &mut self.workers {
                    if let Some(ov) = &mut w.pipeline.overlay {
                        ov.peers = next.clone();
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
