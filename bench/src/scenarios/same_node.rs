//! Same-node scenarios: two pods on one node, client `pods[0]`, server `pods[1]`. One build of
//! each peer per round serves every same-node scenario asked for, so peers alternate round by
//! round and no peer's idle threads run while another is measured.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use hdrhistogram::Histogram;
use podswitch_lab::traffic::{self, Endpoint, PAYLOAD_FOR_64_BYTE_FRAMES};
use vswitch::cidr::Ipv4Cidr;

use super::{add_peer_columns, cdf_points, step_error, us, Ctx};
use crate::machine::CpuSource;
use crate::peers::{Peer, SameNode};
use crate::results::{Better, Cdf, Scenario};

/// Which same-node scenarios to run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Selection {
    /// TCP throughput, 1 and 4 streams.
    pub throughput: bool,
    /// 64-byte UDP packet rate and CPU cost.
    pub udp: bool,
    /// Request/response latency.
    pub latency: bool,
}

const LABELS: [(Peer, &str); 4] = [
    (Peer::Kernel, "kernel bridge (veth)"),
    (Peer::Ovs, "OVS userspace"),
    (Peer::Podswitch, "podswitch (TAP)"),
    (Peer::PodswitchAfxdp, "podswitch (AF_XDP veth)"),
];

fn skip(peer: Peer) -> Option<String> {
    match peer {
        Peer::Ovs => {
            crate::ovs::installed().err().map(|e| format!("Open vSwitch not installed: {e}"))
        }
        _ => None,
    }
}

/// Runs the selected scenarios; returns them in the order throughput, UDP, latency.
pub fn run(ctx: &Ctx, sel: Selection) -> Vec<Scenario> {
    let setup = "Two pods on one node (10.244.1.0/24, MTU 1500); client pod1, server pod2; \
                 TCP through the pods' own kernel stacks, tools built into the bench binary.";
    let mut scenarios = Vec::new();
    if sel.throughput {
        scenarios.push(Scenario::new(
            "tcp-throughput",
            "Same-node pod-to-pod TCP throughput",
            setup,
        ));
    }
    if sel.udp {
        scenarios.push(Scenario::new(
            "udp-pps",
            "Same-node 64-byte UDP packet rate",
            &format!(
                "{setup} One sender thread sends 64-byte frames ({PAYLOAD_FOR_64_BYTE_FRAMES}-byte \
                 payloads) as fast as it can; the receiver counts distinct sequence numbers."
            ),
        ));
    }
    if sel.latency {
        scenarios.push(Scenario::new(
            "latency",
            "Same-node request/response latency (64 B)",
            &format!("{setup} One request outstanding at a time; UDP and TCP (TCP_NODELAY)."),
        ));
    }
    for sc in &mut scenarios {
        if sc.id == "udp-pps" || sc.id == "tcp-throughput" {
            sc.notes.push(format!(
                "Datapath CPU is read from /proc over each measurement: {} for podswitch and \
                 OVS (ovs-vswitchd, including its polling threads), {} for the kernel.",
                CpuSource::Process(0).describe(),
                CpuSource::Softirq.describe()
            ));
        }
        add_peer_columns(sc, ctx, &LABELS, skip);
        sc.reference = Some(Peer::Kernel.id().to_string());
    }
    let mut udp_h: BTreeMap<Peer, Histogram<u64>> = BTreeMap::new();
    let mut tcp_h: BTreeMap<Peer, Histogram<u64>> = BTreeMap::new();
    let cidr = Ipv4Cidr::new(Ipv4Addr::new(10, 244, 1, 0), 24).expect("valid CIDR");
    for round in 0..ctx.runs {
        for &peer in &ctx.peers {
            if ctx.stopped() {
                return scenarios;
            }
            let id = peer.id();
            if !scenarios.iter().any(|s| s.measuring(id)) {
                continue;
            }
            eprintln!("  round {}/{}: {peer}", round + 1, ctx.runs);
            let node = match SameNode::build(peer, cidr, 2) {
                Ok(n) => n,
                Err(e) => {
                    for sc in &mut scenarios {
                        sc.fail(id, step_error("building the topology", &e));
                    }
                    continue;
                }
            };
            for sc in &mut scenarios {
                if !sc.measuring(id) || ctx.stopped() {
                    continue;
                }
                let r = match sc.id.as_str() {
                    "tcp-throughput" => throughput(ctx, &node, id, sc),
                    "udp-pps" => udp(ctx, &node, id, sc),
                    _ => latency(ctx, &node, peer, sc, &mut udp_h, &mut tcp_h),
                };
                if let Err(e) = r {
                    sc.fail(id, e);
                }
            }
            if peer == Peer::Ovs {
                for sc in &mut scenarios {
                    if let Some(c) = sc.column_mut(id) {
                        c.label = format!("OVS userspace ({})", node.detail);
                    }
                }
            }
        }
    }
    if let Some(sc) = scenarios.iter_mut().find(|s| s.id == "latency") {
        for (title, hs) in
            [("UDP request/response, 64 B", &udp_h), ("TCP request/response, 64 B", &tcp_h)]
        {
            sc.cdfs.push(Cdf {
                title: title.to_string(),
                series: hs.iter().map(|(p, h)| (p.id().to_string(), cdf_points(h))).collect(),
            });
        }
    }
    scenarios
}

fn server(node: &SameNode) -> Endpoint<'_> {
    Endpoint { ns: &node.pods[1].ns, addr: node.pods[1].ip }
}

fn throughput(ctx: &Ctx, node: &SameNode, id: &str, sc: &mut Scenario) -> Result<(), String> {
    for streams in [1, 4] {
        let cpu0 = node.cpu.seconds();
        let r = traffic::tcp_throughput(server(node), &node.pods[0].ns, streams, ctx.bulk_time())
            .map_err(|e| step_error(&format!("TCP {streams} streams"), &e))?;
        let cpu = cpu0.zip(node.cpu.seconds()).map(|(a, b)| b - a);
        let name = if streams == 1 { "TCP, 1 stream" } else { "TCP, 4 streams" };
        sc.metric(name, "Gbit/s", Better::Higher).push(id, r.gbit_per_sec());
        if let Some(cpu) = cpu {
            let gbit = r.bytes as f64 * 8.0 / 1e9;
            sc.metric(&format!("{name}: datapath CPU per Gbit"), "CPU-ms", Better::Lower)
                .push(id, cpu * 1000.0 / gbit.max(1e-9));
        }
    }
    Ok(())
}

/// Every non-zero drop counter of a switch, `port reason` → count (drop reasons and the
/// devices' own drops); empty when there is no switch to ask.
fn switch_drops(node: &SameNode) -> BTreeMap<String, u64> {
    use vswitch::control::api::{Reply, Request};
    let mut m = BTreeMap::new();
    let Some(sock) = &node.switch_socket else { return m };
    if let Ok(Reply::Stats(s)) = vswitch::control::client::call(sock, &Request::Stats) {
        for p in s.ports {
            for (reason, n) in p.drops.iter().chain(&p.device_drops) {
                if *n > 0 {
                    m.insert(format!("{} {reason}", p.name), *n);
                }
            }
        }
    }
    m
}

fn udp(ctx: &Ctx, node: &SameNode, id: &str, sc: &mut Scenario) -> Result<(), String> {
    let drops0 = switch_drops(node);
    let cpu0 = node.cpu.seconds();
    let r = traffic::udp_flood(
        server(node),
        &node.pods[0].ns,
        PAYLOAD_FOR_64_BYTE_FRAMES,
        ctx.bulk_time(),
    )
    .map_err(|e| step_error("UDP flood", &e))?;
    let cpu = cpu0.zip(node.cpu.seconds()).map(|(a, b)| b - a);
    sc.metric("64 B delivered", "kpps", Better::Higher).push(id, r.delivered_pps() / 1e3);
    sc.metric("64 B offered by the sender", "kpps", Better::Neither)
        .push(id, r.offered_pps() / 1e3);
    sc.metric("loss at that rate", "%", Better::Lower).push(id, r.loss() * 100.0);
    if let Some(cpu) = cpu {
        sc.metric("datapath CPU per million delivered", "CPU-s", Better::Lower)
            .push(id, cpu / (r.received.max(1) as f64 / 1e6));
    }
    if node.switch_socket.is_some() {
        // Where the switch itself lost packets (the rest of the loss is outside it: the
        // pods' stacks and sockets).
        let drops: Vec<String> = switch_drops(node)
            .into_iter()
            .filter_map(|(k, v)| {
                let d = v - drops0.get(&k).copied().unwrap_or(0);
                (d > 0).then(|| format!("{k} {d}"))
            })
            .collect();
        let lost = r.sent.saturating_sub(r.received);
        sc.notes.push(format!(
            "{id}: {lost} of {} lost; counted by the switch: {}",
            r.sent,
            if drops.is_empty() { "none".to_string() } else { drops.join(", ") }
        ));
    }
    Ok(())
}

fn latency(
    ctx: &Ctx,
    node: &SameNode,
    peer: Peer,
    sc: &mut Scenario,
    udp_h: &mut BTreeMap<Peer, Histogram<u64>>,
    tcp_h: &mut BTreeMap<Peer, Histogram<u64>>,
) -> Result<(), String> {
    let id = peer.id();
    let deadline = ctx.bulk_time() * 10;
    let u = traffic::udp_rr(server(node), &node.pods[0].ns, 64, ctx.round_trips(), deadline)
        .map_err(|e| step_error("UDP request/response", &e))?;
    let t = traffic::tcp_rr(server(node), &node.pods[0].ns, 64, ctx.round_trips(), deadline)
        .map_err(|e| step_error("TCP request/response", &e))?;
    for (proto, r, hs) in [("UDP", &u, &mut *udp_h), ("TCP", &t, &mut *tcp_h)] {
        let h = &r.histogram;
        for (q, label) in [(0.5, "p50"), (0.99, "p99"), (0.999, "p99.9")] {
            sc.metric(&format!("{proto} RR {label}"), "µs", Better::Lower)
                .push(id, us(h.value_at_quantile(q)));
        }
        match hs.get_mut(&peer) {
            Some(acc) => {
                let _ = acc.add(h);
            }
            None => {
                hs.insert(peer, h.clone());
            }
        }
    }
    sc.metric("UDP RR lost", "requests", Better::Lower).push(id, u.lost as f64);
    Ok(())
}
