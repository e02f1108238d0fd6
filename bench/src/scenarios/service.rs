//! Service VIP: a client pod opens connections to a ClusterIP whose two backends are pods on
//! the same node, with kube-proxy's rules (plus background Services, so lookups cost what they
//! cost in a populated cluster) in the node namespace.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use podswitch_lab::traffic::{self, Endpoint};
use vswitch::cidr::Ipv4Cidr;

use super::{step_error, us, Ctx};
use crate::kube_rules::{self, Proto, Service, Tool};
use crate::peers::{sysctl, Peer, SameNode};
use crate::results::{Better, ColumnStatus, Scenario};

/// The ClusterIP measured for connection rate (two backends on port 8080).
pub const VIP_CONNECT: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
/// The ClusterIP measured for request/response latency (one backend on port 8081).
pub const VIP_RR: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 11);

const KERNEL_COLUMNS: [(Tool, &str, &str); 2] = [
    (Tool::IptablesNft, "kernel-iptables", "kernel + kube-proxy iptables"),
    (Tool::Nft, "kernel-nft", "kernel + kube-proxy nftables"),
];

/// Background Services loaded beside the two measured ones.
pub fn background(ctx: &Ctx) -> usize {
    if ctx.quick {
        100
    } else {
        1_000
    }
}

/// Runs the service scenario.
pub fn run(ctx: &Ctx) -> Scenario {
    let bg = background(ctx);
    let mut sc = Scenario::new(
        "service",
        "Service VIP: new connections and request/response through a ClusterIP",
        &format!(
            "A client pod and two backend pods on one node (10.244.1.0/24). Connections go to \
             {VIP_CONNECT}:80 (two endpoints, random choice) for the connection rate: connect, \
             one byte each way, close; round trips of 64 B go over one connection to \
             {VIP_RR}:80 (one endpoint). The node also holds {bg} other Services (2 endpoints \
             each), loaded before the measured ones so a linear rule walk pays for them."
        ),
    );
    if ctx.wants(Peer::Kernel) {
        for (tool, id, label) in KERNEL_COLUMNS {
            let status = match tool.available() {
                Ok(()) => ColumnStatus::Measured,
                Err(e) => ColumnStatus::Skipped { reason: e },
            };
            sc.column(id, label, status);
        }
        sc.reference = Some(KERNEL_COLUMNS[0].1.to_string());
    }
    if ctx.wants(Peer::Ovs) {
        sc.column(
            "ovs",
            "OVS userspace",
            ColumnStatus::Skipped { reason: "the harness programs no Service NAT into OVS".into() },
        );
    }
    if ctx.wants(Peer::Podswitch) {
        sc.column("podswitch", "podswitch (Service NAT, Maglev)", ColumnStatus::Measured);
    }
    for round in 0..ctx.runs {
        for (tool, id, _) in KERNEL_COLUMNS {
            if ctx.stopped() {
                return sc;
            }
            if !sc.measuring(id) {
                continue;
            }
            eprintln!("  round {}/{}: {id}", round + 1, ctx.runs);
            if let Err(e) = kernel_round(ctx, &mut sc, tool, id, bg) {
                sc.fail(id, e);
            }
        }
        if sc.measuring("podswitch") && !ctx.stopped() {
            eprintln!("  round {}/{}: podswitch", round + 1, ctx.runs);
            if let Err(e) = podswitch_round(ctx, &mut sc, bg) {
                sc.fail("podswitch", e);
            }
        }
    }
    sc
}

/// The Services in podswitch's API shape (namespace `bench`).
pub fn specs(services: &[Service]) -> Vec<vswitch::control::api::ServiceSpec> {
    use vswitch::control::api::{Algorithm, Endpoint, L4Proto, ServiceSpec};
    services
        .iter()
        .enumerate()
        .map(|(i, s)| ServiceSpec {
            name: format!("svc-{i}"),
            namespace: "bench".into(),
            vip: s.vip,
            port: s.port,
            proto: match s.proto {
                Proto::Tcp => L4Proto::Tcp,
                Proto::Udp => L4Proto::Udp,
            },
            endpoints: s
                .endpoints
                .iter()
                .map(|(ip, port)| Endpoint {
                    ip: *ip,
                    port: *port,
                    ready: true,
                    terminating: false,
                    weight: 1,
                })
                .collect(),
            algorithm: Algorithm::Maglev,
            session_affinity_secs: None,
            node_port: None,
        })
        .collect()
}

fn podswitch_round(ctx: &Ctx, sc: &mut Scenario, bg: usize) -> Result<(), String> {
    use vswitch::control::api::{Reply, Request, ServiceApplyArgs};
    let cidr = Ipv4Cidr::new(Ipv4Addr::new(10, 244, 1, 0), 24).expect("valid CIDR");
    let node = SameNode::build(Peer::Podswitch, cidr, 3)
        .map_err(|e| step_error("building the topology", &e))?;
    let socket = node.switch_socket.clone().ok_or("podswitch node without a socket")?;
    let backends = [node.pods[1].ip, node.pods[2].ip];
    let services = specs(&services(bg, &backends));
    vswitch::control::client::call(&socket, &Request::ServiceApply(ServiceApplyArgs { services }))
        .map_err(|e| format!("applying the Services: {e}"))?;
    measure(ctx, sc, &node, "podswitch")?;
    let Reply::ConntrackStats(stats) =
        vswitch::control::client::call(&socket, &Request::ConntrackStats)
            .map_err(|e| format!("conntrack stats: {e}"))?
    else {
        return Err("conntrack stats: unexpected reply".into());
    };
    sc.metric(CT_PER_GIB, "M", Better::Higher)
        .push("podswitch", per_gib(stats.bytes_per_entry as f64));
    Ok(())
}

/// Name of the conntrack memory metric.
const CT_PER_GIB: &str = "conntrack entries per GiB";

/// Millions of entries of `bytes` each in a GiB.
fn per_gib(bytes: f64) -> f64 {
    (1u64 << 30) as f64 / bytes / 1e6
}

/// Bytes the kernel spends per tracked connection: the `nf_conntrack` slab object (from
/// `/proc/slabinfo`) plus one hash bucket pointer (the table has as many buckets as
/// `nf_conntrack_max` allows entries by default). `None` when slabinfo is not readable.
fn kernel_bytes_per_entry() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/slabinfo").ok()?;
    let line = text.lines().find(|l| l.split_whitespace().next() == Some("nf_conntrack"))?;
    let objsize: f64 = line.split_whitespace().nth(3)?.parse().ok()?;
    Some(objsize + 8.0)
}

/// The Services loaded: `bg` synthetic ones, then the two measured ones.
pub fn services(bg: usize, pods: &[Ipv4Addr]) -> Vec<Service> {
    let mut all = kube_rules::synthetic_services(bg);
    all.push(Service {
        vip: VIP_CONNECT,
        port: 80,
        proto: Proto::Tcp,
        endpoints: pods.iter().map(|ip| (*ip, 8080)).collect(),
    });
    all.push(Service {
        vip: VIP_RR,
        port: 80,
        proto: Proto::Tcp,
        endpoints: vec![(pods[0], 8081)],
    });
    all
}

fn kernel_round(
    ctx: &Ctx,
    sc: &mut Scenario,
    tool: Tool,
    id: &str,
    bg: usize,
) -> Result<(), String> {
    let cidr = Ipv4Cidr::new(Ipv4Addr::new(10, 244, 1, 0), 24).expect("valid CIDR");
    let node = SameNode::build(Peer::Kernel, cidr, 3)
        .map_err(|e| step_error("building the topology", &e))?;
    let node_ns = node.node_ns.as_ref().ok_or("kernel node without a namespace")?;
    sysctl(node_ns, "net.ipv4.ip_forward", "1").map_err(|e| step_error("sysctl", &e))?;
    let backends = [node.pods[1].ip, node.pods[2].ip];
    let all = services(bg, &backends);
    kube_rules::load(node_ns, tool, &all, Duration::from_secs(60))
        .map_err(|e| step_error("loading the Service rules", &e))?;
    let loaded = kube_rules::loaded_services(node_ns, tool, Duration::from_secs(60))
        .map_err(|e| step_error("listing the Service rules", &e))?;
    if loaded != all.len() {
        return Err(format!("{loaded} Services loaded, {} expected", all.len()));
    }
    measure(ctx, sc, &node, id)?;
    if let Some(b) = kernel_bytes_per_entry() {
        sc.metric(CT_PER_GIB, "M", Better::Higher).push(id, per_gib(b));
    }
    Ok(())
}

/// Connection rate and round trips through the two measured VIPs of `node`.
fn measure(ctx: &Ctx, sc: &mut Scenario, node: &SameNode, id: &str) -> Result<(), String> {
    let servers = [
        Endpoint { ns: &node.pods[1].ns, addr: node.pods[1].ip },
        Endpoint { ns: &node.pods[2].ns, addr: node.pods[2].ip },
    ];
    let max = if ctx.quick { 20_000 } else { 200_000 };
    let c = traffic::tcp_connect_rate(
        &servers,
        8080,
        Some(SocketAddrV4::new(VIP_CONNECT, 80)),
        &node.pods[0].ns,
        ctx.bulk_time(),
        max,
    )
    .map_err(|e| step_error("connection rate", &e))?;
    if c.completed == 0 {
        return Err(format!(
            "no connection through {VIP_CONNECT}:80 completed ({} failed)",
            c.failed
        ));
    }
    sc.metric("new connections", "conn/s", Better::Higher).push(id, c.per_sec());
    sc.metric("failed connections", "count", Better::Lower).push(id, c.failed as f64);
    let l = traffic::tcp_rr_via(
        servers[0],
        8081,
        Some(SocketAddrV4::new(VIP_RR, 80)),
        &node.pods[0].ns,
        64,
        ctx.round_trips(),
        ctx.bulk_time() * 10,
    )
    .map_err(|e| step_error("TCP request/response", &e))?;
    for (q, label) in [(0.5, "p50"), (0.99, "p99"), (0.999, "p99.9")] {
        sc.metric(&format!("TCP RR via VIP {label}"), "µs", Better::Lower)
            .push(id, us(l.histogram.value_at_quantile(q)));
    }
    Ok(())
}
