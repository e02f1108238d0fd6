//! Cross-node: a pod on node 1 talks to a pod on node 2 through the overlay (VXLAN over a veth
//! underlay), one build per peer per round, peers alternating.

use podswitch_lab::traffic::{self, Endpoint};

use super::{add_peer_columns, step_error, us, Ctx};
use crate::peers::{CrossNode, Peer};
use crate::results::{Better, Scenario};

/// Runs the cross-node scenario.
pub fn run(ctx: &Ctx) -> Scenario {
    let mut sc = Scenario::new(
        "cross-node",
        "Cross-node pod-to-pod traffic (VXLAN overlay)",
        "Two node namespaces on a veth underlay (a bridge in an underlay namespace, \
         192.168.0.0/24, MTU 1500), one pod each (10.244.1.0/24, 10.244.2.0/24, MTU 1450); \
         VXLAN VNI 1, UDP port 4789. Kernel: bridge + vxlan device with static FDB and \
         neighbour entries, as Flannel programs them. podswitch: two switches peered in their \
         configuration; with AF_XDP, pods on veth pairs and the underlay interface driven \
         through AF_XDP ([overlay] afxdp_interface).",
    );
    add_peer_columns(
        &mut sc,
        ctx,
        &[
            (Peer::Kernel, "kernel bridge + vxlan"),
            (Peer::Ovs, "OVS userspace"),
            (Peer::Podswitch, "podswitch (TAP + VXLAN)"),
            (Peer::PodswitchAfxdp, "podswitch (AF_XDP pods + AF_XDP underlay)"),
        ],
        |peer| match peer {
            Peer::Ovs => Some("the harness builds Open vSwitch on a single node only".into()),
            _ => None,
        },
    );
    sc.reference = Some(Peer::Kernel.id().to_string());
    sc.notes.push(
        "Datapath CPU: node 1's switch process for podswitch, softirq time of all CPUs for \
         the kernel (both nodes share this machine's CPUs)."
            .into(),
    );
    for round in 0..ctx.runs {
        for &peer in &ctx.peers {
            if ctx.stopped() {
                return sc;
            }
            if !sc.measuring(peer.id()) {
                continue;
            }
            eprintln!("  round {}/{}: {peer}", round + 1, ctx.runs);
            if let Err(e) = one_round(ctx, &mut sc, peer) {
                sc.fail(peer.id(), e);
            }
        }
    }
    sc
}

fn one_round(ctx: &Ctx, sc: &mut Scenario, peer: Peer) -> Result<(), String> {
    let id = peer.id();
    let t = CrossNode::build(peer).map_err(|e| step_error("building the topology", &e))?;
    let server = Endpoint { ns: &t.server.ns, addr: t.server.ip };
    for streams in [1, 4] {
        let cpu0 = t.cpu.seconds();
        let r = traffic::tcp_throughput(server, &t.client.ns, streams, ctx.bulk_time())
            .map_err(|e| step_error(&format!("TCP {streams} streams"), &e))?;
        let name = if streams == 1 { "TCP, 1 stream" } else { "TCP, 4 streams" };
        sc.metric(name, "Gbit/s", Better::Higher).push(id, r.gbit_per_sec());
        if let (Some(a), Some(b)) = (cpu0, t.cpu.seconds()) {
            let gbit = r.bytes as f64 * 8.0 / 1e9;
            sc.metric(&format!("{name}: datapath CPU per Gbit"), "CPU-ms", Better::Lower)
                .push(id, (b - a) * 1000.0 / gbit.max(1e-9));
        }
    }
    let f = traffic::udp_flood(
        server,
        &t.client.ns,
        traffic::PAYLOAD_FOR_64_BYTE_FRAMES,
        ctx.bulk_time(),
    )
    .map_err(|e| step_error("UDP flood", &e))?;
    sc.metric("64 B UDP delivered", "kpps", Better::Higher).push(id, f.delivered_pps() / 1e3);
    sc.metric("64 B UDP loss", "%", Better::Lower).push(id, f.loss() * 100.0);
    let deadline = ctx.bulk_time() * 10;
    let u = traffic::udp_rr(server, &t.client.ns, 64, ctx.round_trips(), deadline)
        .map_err(|e| step_error("UDP request/response", &e))?;
    let l = traffic::tcp_rr(server, &t.client.ns, 64, ctx.round_trips(), deadline)
        .map_err(|e| step_error("TCP request/response", &e))?;
    for (proto, h) in [("UDP", &u.histogram), ("TCP", &l.histogram)] {
        for (q, label) in [(0.5, "p50"), (0.99, "p99"), (0.999, "p99.9")] {
            sc.metric(&format!("{proto} RR {label}"), "µs", Better::Lower)
                .push(id, us(h.value_at_quantile(q)));
        }
    }
    Ok(())
}
