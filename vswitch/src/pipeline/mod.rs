//! The pipeline: the ordered stages a burst of frames runs through, and the tables they use.
//!
//! ```text
//!  rx burst ─► decap ─► classify ─► steer ─┬─► learn ─► nat ─► arp ─► gateway ─► forward ─► output
//!  (worker)   overlay  parse once  to the  │   src MAC  Service answer route to  L2 lookup  tx plan
//!             port:    fill Meta   worker  │   -> port  NAT,    for gw  pods,    flood on   per port
//!             strip    (5-tuple,   that    │            conn-   and     overlay, miss
//!             VXLAN    hash, frag) tracks  │            track   pods    host
//!                      drop bad    the flow│
//!  steered here by another worker ─────────┘   (the worker executes the plan: tx bursts, hand-offs)
//! ```
//!
//! [`Pipeline::run`] is the one place that names the order. Every stage takes the whole
//! batch and only looks at packets whose [`Action`] is still `Continue`; the first stage to
//! decide (drop, reply, forward, flood, steer) settles the packet. Frames are parsed once, in
//! classify: later stages and steering read the offsets, 5-tuple, fragment bits and flow hash
//! from [`Meta`](crate::packet::Meta). Drops are counted per ingress port by reason, never
//! logged per packet.
//!
//! The pipeline is sans-I/O: it never touches a device, and time is an argument. That is what
//! lets the same code run under the worker, under in-memory tests and under the micro
//! benchmarks.

pub mod arp;
mod burst;
pub mod classify;
pub mod gateway;
#[cfg(any(test, feature = "fuzzing"))]
pub mod harness;
pub mod l2;
pub mod nat;
pub mod output;
pub mod overlay;
pub mod port_security;
pub mod reply;
pub mod steer;

use std::time::Instant;

use crate::config::Config;
use crate::packet::{Action, Batch};
use crate::port::PortId;
use crate::stats::{DropReason, PortCounters};
use crate::tables::conntrack::{Conntrack, ConntrackConfig};
use crate::tables::fdb::Fdb;
use crate::tables::neigh::NeighTable;
use crate::tables::peers::PeerTable;
use crate::tables::services::{ServiceState, ServiceTable};
use output::TxPlan;

pub use gateway::Gateway;
pub use nat::ServiceNat;
pub use overlay::Overlay;

/// The stages' shared state: the tables and the gateway identity.
#[derive(Debug)]
pub struct Pipeline {
    /// The MAC table.
    pub fdb: Fdb,
    /// Pod addresses attached here.
    pub neigh: NeighTable,
    /// The pods' gateway.
    pub gateway: Gateway,
    /// The VXLAN overlay to other nodes, when configured.
    pub overlay: Option<Overlay>,
    /// Services and the connections through them.
    pub nat: ServiceNat,
    /// What each pod port may send as (`port_security.rs`).
    pub port_security: port_security::PortSecurity,
    /// With several workers: MAC table changes the other workers should hear of, filled by
    /// the learn stage, emptied by the worker after each batch. Without: never filled.
    pub announced: Vec<(crate::tables::fdb::FdbKey, PortId)>,
    /// The output stage's transmit plan for the last batch run, which the worker executes.
    pub plan: TxPlan,
}

/// Where a batch enters the stage list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// Received from ports: every stage.
    Port,
    /// Steered here by another worker, which ran the stages up to steering: from learn on.
    Steered,
}

impl Pipeline {
    /// A pipeline with empty tables for `config`'s node. The host port, if any, is set once it
    /// has been attached ([`Gateway::host_port`]).
    pub fn new(config: &Config) -> Pipeline {
        Pipeline::for_worker(config, steer::Steering::default())
    }

    /// The pipeline of one of several workers: its connection-tracking table counts against
    /// the node's `conntrack.max_entries` and marks reply destinations for flow steering, and
    /// its MAC table changes are collected for the others.
    pub fn for_worker(config: &Config, steering: steer::Steering) -> Pipeline {
        let workers = steering.workers.max(1);
        let ct = conntrack_config(&config.conntrack);
        // Each table reserves its share up front; the limit is the node's, shared.
        let mut conntrack = Conntrack::with_reserve(ct, ct.max_entries.div_ceil(workers));
        // Empty, so it takes the seed classify hashes with.
        conntrack.set_seed(steering.flow_seed);
        if workers > 1 {
            conntrack.set_marks(steering.marks.clone(), config.node.gateway);
            conntrack.share_limit(steering.conntrack_len.clone());
        }
        Pipeline {
            announced: Vec::with_capacity(if workers > 1 { crate::packet::BATCH_SIZE } else { 0 }),
            plan: TxPlan::new(config.ports.max_ports),
            fdb: Fdb::new(config.fdb),
            port_security: port_security::PortSecurity::new(config.ports.max_ports),
            neigh: NeighTable::new(config.ports.max_ports),
            gateway: Gateway {
                ip: config.node.gateway,
                mac: config.node.gateway_mac,
                pod_cidr: config.node.pod_cidr,
                host_port: None,
                overlay_port: None,
                service_cidr: Some(config.services.cidr),
                node_port: None,
            },
            nat: ServiceNat {
                services: std::sync::Arc::new(ServiceTable::new(
                    config.services.max_services,
                    config.services.maglev_table_size,
                )),
                service_state: ServiceState::new(),
                conntrack,
                affinity: nat::Affinity::new(config.conntrack.max_entries.div_ceil(workers)),
                node_clients: nat::NodeClients::new(nat::MAX_NODE_CLIENTS),
                frags: crate::tables::frags::FragTable::new(
                    crate::tables::frags::DEFAULT_MAX_FRAGS,
                ),
                steer: steering,
            },
            overlay: config.overlay.as_ref().map(|o| {
                let mut peers = PeerTable::new(o.max_peers);
                for p in &o.peers {
                    // Validated in the config: names, addresses and CIDRs are unique and the
                    // count is within max_peers.
                    let _ = peers.upsert(p.clone());
                }
                Overlay {
                    port: None,
                    vni: o.vni,
                    peers: std::sync::Arc::new(peers),
                    inner_mtu: (o.underlay_mtu - crate::config::OVERLAY_OVERHEAD) as u16,
                }
            }),
        }
    }

    /// Runs the stages over `batch`, in order, from `entry`, and plans its transmission
    /// ([`Pipeline::plan`]). `counters` is indexed by port id and must cover every `in_port`
    /// in the batch; `live` (sorted) lists the ports a flood goes to and every port a
    /// decision may target.
    pub fn run(
        &mut self,
        batch: &mut Batch,
        counters: &mut [PortCounters],
        now: Instant,
        entry: Entry,
        live: &[PortId],
    ) {
        if entry == Entry::Port {
            if let Some(ov) = &self.overlay {
                overlay::decap(batch, ov, self.gateway.mac, counters);
            }
            let seed = self.nat.has_work(&self.gateway).then_some(self.nat.steer.flow_seed);
            classify::run(batch, counters, seed);
            port_security::run(batch, &self.port_security, counters);
            steer::run(batch, &self.nat.steer, &self.gateway);
        }
        let announced = (self.nat.steer.workers > 1).then_some(&mut self.announced);
        l2::learn(batch, &mut self.fdb, &self.gateway, counters, now, announced);
        nat::run(batch, &mut self.nat, &self.gateway, counters, now);
        arp::run(batch, &self.gateway, &self.neigh, self.overlay.as_ref(), counters);
        gateway::run(batch, &self.gateway, &self.neigh, self.overlay.as_ref(), counters);
        l2::forward(batch, &self.fdb, counters, now);
        self.plan_handed(batch, live);
    }

    /// The output stage alone: plans `batch`, whose packets are decided (the ones other
    /// workers handed over for ports whose queue is here, or a run's). Floods never go to
    /// the overlay or the node-port interface, which are routed.
    pub fn plan_handed(&mut self, batch: &Batch, live: &[PortId]) {
        let gw = &self.gateway;
        self.plan.set_no_flood(gw.overlay_port, gw.node_port.map(|np| np.port));
        self.plan.build(batch, live);
    }
}

/// The conntrack table's settings from the node configuration.
pub fn conntrack_config(c: &crate::config::ConntrackSettings) -> ConntrackConfig {
    ConntrackConfig {
        max_entries: c.max_entries,
        max_per_port: c.per_port_limit(),
        tcp_syn_sent: c.tcp.syn_sent,
        tcp_syn_recv: c.tcp.syn_recv,
        tcp_established: c.tcp.established,
        tcp_fin_wait: c.tcp.fin_wait,
        tcp_close_wait: c.tcp.close_wait,
        tcp_last_ack: c.tcp.last_ack,
        tcp_time_wait: c.tcp.time_wait,
        tcp_close: c.tcp.close,
        udp: c.udp,
        udp_assured: c.udp_assured,
        icmp: c.icmp,
    }
}

/// Settles a packet as dropped and counts the reason against its ingress port.
#[inline]
pub(crate) fn drop_packet(
    action: &mut Action,
    in_port: PortId,
    reason: DropReason,
    counters: &mut [PortCounters],
) {
    *action = Action::Drop(reason);
    if let Some(c) = counters.get_mut(in_port.index()) {
        c.drop(reason);
    }
}

#[cfg(test)]
pub(crate) mod testutil;

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;
    use crate::pipeline::testutil::*;
    use crate::tables::neigh::Neighbor;

    /// One step of a simulated run, in the style of a stateful fuzzer: frames arrive on
    /// ports, time passes, the control plane flushes or removes ports.
    #[derive(Debug, Clone)]
    enum Step {
        Receive { port: u16, frame: Vec<u8> },
        AdvanceSecs(u8),
        FlushFdb,
        RemovePort(u16),
    }

    fn valid_frame() -> impl Strategy<Value = Vec<u8>> {
        let macs = prop::sample::select(vec![
            MAC_A,
            MAC_B,
            MAC_C,
            GW_MAC,
            crate::wire::MacAddr::BROADCAST,
        ]);
        let ips = prop::sample::select(vec![
            IP_A,
            IP_B,
            IP_C,
            GW_IP,
            std::net::Ipv4Addr::new(8, 8, 8, 8),
        ]);
        (macs.clone(), macs, ips.clone(), ips, 0u8..4, any::<u16>()).prop_map(
            |(s, d, si, di, kind, x)| match kind {
                0 => udp_frame(s, d, si, di, x, 53, b"payload"),
                1 => tcp_frame(s, d, si, di, x, 80, 0x12, b"seg"),
                2 => icmp_echo(s, d, si, di, x, 1, b"ping"),
                _ => arp_request(s, si, di),
            },
        )
    }

    fn frame() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..128),
            (
                valid_frame(),
                any::<prop::sample::Index>(),
                any::<u8>(),
                any::<prop::sample::Index>()
            )
                .prop_map(|(mut f, at, v, cut)| {
                    let i = at.index(f.len());
                    f[i] = v;
                    f.truncate(cut.index(f.len() + 1));
                    f
                }),
            valid_frame(),
        ]
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            8 => (0u16..4, frame()).prop_map(|(port, frame)| Step::Receive { port, frame }),
            1 => (0u8..120).prop_map(Step::AdvanceSecs),
            1 => Just(Step::FlushFdb),
            1 => (1u16..4).prop_map(Step::RemovePort),
        ]
    }

    proptest! {
        /// Whatever arrives in whatever order, the pipeline never panics, every packet gets a
        /// decision, forwards only target live ports, and the MAC table respects its limit.
        #[test]
        fn pipeline_survives_arbitrary_traffic(steps in proptest::collection::vec(step(), 1..60)) {
            let cfg = Config::for_node("n", "10.244.1.0/24".parse().unwrap(), "/tmp/x".into());
            let mut cfg = cfg;
            cfg.fdb.max_entries = 4;
            let mut p = Pipeline::new(&cfg);
            p.gateway.host_port = Some(PortId(0));
            // Port 3 is the node-port interface (on an address of the frames' pool).
            p.gateway.node_port = Some(gateway::NodePortPath {
                port: PortId(3),
                ip: IP_C,
                mac: MAC_C,
            });
            p.neigh.insert(IP_B, Neighbor { mac: MAC_B, port: PortId(2) }).unwrap();
            let mut live = vec![PortId(0), PortId(1), PortId(2), PortId(3)];
            let mut counters = vec![PortCounters::default(); 4];
            let mut now = Instant::now();
            let mut batch = Batch::new();
            for s in steps {
                match s {
                    Step::Receive { port, frame } => {
                        if !live.contains(&PortId(port)) {
                            continue;
                        }
                        batch.clear();
                        batch.push_frame(PortId(port), &frame);
                        p.run(&mut batch, &mut counters, now, Entry::Port, &live);
                        let action = batch.packets()[0].meta.action;
                        prop_assert_ne!(action, Action::Continue);
                        for (out, _) in p.plan.iter() {
                            prop_assert!(live.contains(&out));
                        }
                    }
                    Step::AdvanceSecs(s) => {
                        now += Duration::from_secs(u64::from(s));
                        p.fdb.age(now);
                    }
                    Step::FlushFdb => {
                        p.fdb.flush();
                    }
                    Step::RemovePort(port) => {
                        live.retain(|x| *x != PortId(port));
                        p.fdb.flush_port(PortId(port));
                        p.neigh.remove_port(PortId(port));
                    }
                }
                prop_assert!(p.fdb.len() <= 4);
            }
        }
    }
}
