//! Cross-node: a pod on node 1 talks to a pod on node 2 through the overlay (VXLAN over a veth
//! underlay), one build per round.

use vswitch::lab::traffic::{self, Endpoint};

use super::{add_peer_columns, step_error, us, Ctx};
use crate::peers::{KernelCrossNode, Peer};
use crate::results::{Better, Scenario};

/// Runs the cross-node scenario.
pub fn run(ctx: &Ctx) -> Scenario {
    let mut sc = Scenario::new(
        "cross-node",
        "Cross-node pod-to-pod TCP (VXLAN overlay)",
        "Two node namespaces on a veth underlay (192.168.0.0/24), one pod each \
         (10.244.1.0/24, 10.244.2.0/24, MTU 1450); VXLAN VNI 1, UDP port 4789, static \
         FDB and neighbour entries as Flannel programs them.",
    );
    add_peer_columns(
        &mut sc,
        ctx,
        &[
            (Peer::Kernel, "kernel bridge + vxlan"),
            (Peer::Ovs, "OVS userspace"),
            (Peer::Podswitch, "podswitch"),
        ],
        |peer| match peer {
            Peer::Kernel => None,
            Peer::Ovs => Some("the harness builds Open vSwitch on a single node only".into()),
            Peer::Podswitch => Some("podswitch has no VXLAN overlay yet (issue 6)".into()),
        },
    );
    sc.reference = Some(Peer::Kernel.id().to_string());
    for round in 0..ctx.runs {
        if ctx.stopped() || !sc.measuring(Peer::Kernel.id()) {
            break;
        }
        eprintln!("  round {}/{}: kernel", round + 1, ctx.runs);
        if let Err(e) = kernel_round(ctx, &mut sc) {
            sc.fail(Peer::Kernel.id(), e);
        }
    }
    sc
}

fn kernel_round(ctx: &Ctx, sc: &mut Scenario) -> Result<(), String> {
    let id = Peer::Kernel.id();
    let t = KernelCrossNode::build().map_err(|e| step_error("building the topology", &e))?;
    let server = Endpoint { ns: &t.server.ns, addr: t.server.ip };
    let r = traffic::tcp_throughput(server, &t.client.ns, 1, ctx.bulk_time())
        .map_err(|e| step_error("TCP 1 stream", &e))?;
    sc.metric("TCP, 1 stream", "Gbit/s", Better::Higher).push(id, r.gbit_per_sec());
    let l = traffic::tcp_rr(server, &t.client.ns, 64, ctx.round_trips(), ctx.bulk_time() * 10)
        .map_err(|e| step_error("TCP request/response", &e))?;
    for (q, label) in [(0.5, "p50"), (0.99, "p99"), (0.999, "p99.9")] {
        sc.metric(&format!("TCP RR {label}"), "µs", Better::Lower)
            .push(id, us(l.histogram.value_at_quantile(q)));
    }
    Ok(())
}
