//! Control plane: how long a node takes to load N Services (2 endpoints each) in kube-proxy's
//! layouts, and to add one more afterwards (kube-proxy's partial sync). Each run loads into a
//! fresh namespace, so no run inherits another's tables.

use std::time::Duration;

use super::{step_error, Ctx};
use crate::kube_rules::{self, Proto, Service, Tool};
use crate::peers::{scratch_netns, Peer};
use crate::results::{Better, ColumnStatus, Scenario};

/// Column label per tool; the column id is [`Tool::label`].
const COLUMNS: [(Tool, &str); 3] = [
    (Tool::IptablesNft, "iptables-restore (nf_tables backend)"),
    (Tool::IptablesLegacy, "iptables-legacy-restore"),
    (Tool::Nft, "nft -f (kube-proxy nftables layout)"),
];

/// Service counts measured.
pub fn sizes(ctx: &Ctx) -> Vec<usize> {
    if ctx.quick {
        vec![1_000]
    } else {
        vec![1_000, 10_000, 50_000]
    }
}

/// How long one load may take before the size counts as out of reach for that tool.
pub fn timeout(ctx: &Ctx) -> Duration {
    Duration::from_secs(if ctx.quick { 30 } else { 90 })
}

fn one_more() -> Service {
    Service {
        vip: std::net::Ipv4Addr::new(10, 111, 255, 254),
        port: 443,
        proto: Proto::Tcp,
        endpoints: vec![
            (std::net::Ipv4Addr::new(10, 255, 255, 1), 8443),
            (std::net::Ipv4Addr::new(10, 255, 255, 2), 8443),
        ],
    }
}

/// Runs the control-plane scenario.
pub fn run(ctx: &Ctx) -> Scenario {
    let limit = timeout(ctx);
    let mut sc = Scenario::new(
        "control-plane",
        "Control plane: loading N Services and changing one",
        &format!(
            "Synthetic Services (ClusterIPs from 10.96.1.0, TCP port 80, 2 endpoints each) \
             rendered in kube-proxy's layouts and loaded into a fresh node namespace: a full \
             load, then one more Service added without a full resync (iptables-restore \
             --noflush; nft add). Wall time of the tool process; a load over {}s stops that \
             tool's larger sizes.",
            limit.as_secs()
        ),
    );
    if ctx.wants(Peer::Kernel) {
        for (tool, label) in COLUMNS {
            let status = match tool.available() {
                Ok(()) => ColumnStatus::Measured,
                Err(e) => ColumnStatus::Skipped { reason: e },
            };
            sc.column(tool.label(), label, status);
        }
        sc.reference = Some(COLUMNS[0].0.label().to_string());
    }
    if ctx.wants(Peer::Podswitch) {
        sc.column("podswitch", "podswitch (service_apply / service_add)", ColumnStatus::Measured);
        sc.notes.push(
            "podswitch: wall time of the control-API call as a client sees it (JSON over the \
             Unix socket, validation, Maglev tables built, the new table swapped into the \
             running worker), one running switch per run."
                .into(),
        );
    }
    let mut out_of_reach: Vec<(&str, String)> = Vec::new();
    let specs_of = |services: &[Service]| super::service::specs(services);
    for n in sizes(ctx) {
        let services = kube_rules::synthetic_services(n);
        let full = format!("full load, {n} Services");
        let add = format!("add one to {n}");
        sc.metric(&full, "s", Better::Lower);
        sc.metric(&add, "ms", Better::Lower);
        for round in 0..ctx.runs {
            for (tool, _) in COLUMNS {
                let id = tool.label();
                if ctx.stopped() {
                    return sc;
                }
                if !sc.measuring(id) {
                    continue;
                }
                if let Some((_, why)) = out_of_reach.iter().find(|(t, _)| *t == id) {
                    for name in [&full, &add] {
                        sc.metric(name, "", Better::Lower).missing.insert(id.into(), why.clone());
                    }
                    continue;
                }
                eprintln!("  {n} Services, round {}/{}: {id}", round + 1, ctx.runs);
                match measure(tool, &services, limit) {
                    Ok((load, one)) => {
                        sc.metric(&full, "s", Better::Lower).push(id, load.as_secs_f64());
                        sc.metric(&add, "ms", Better::Lower).push(id, one.as_secs_f64() * 1e3);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                        let why = format!("over {}s at {n}", limit.as_secs());
                        for name in [&full, &add] {
                            sc.metric(name, "", Better::Lower)
                                .missing
                                .insert(id.into(), why.clone());
                        }
                        out_of_reach.push((id, why));
                    }
                    Err(e) => sc.fail(id, step_error(&format!("{n} Services"), &e)),
                }
            }
            if sc.measuring("podswitch") && !ctx.stopped() {
                eprintln!("  {n} Services, round {}/{}: podswitch", round + 1, ctx.runs);
                match measure_podswitch(specs_of(&services), specs_of(&[one_more()])) {
                    Ok((load, one)) => {
                        sc.metric(&full, "s", Better::Lower).push("podswitch", load.as_secs_f64());
                        sc.metric(&add, "ms", Better::Lower)
                            .push("podswitch", one.as_secs_f64() * 1e3);
                    }
                    Err(e) => sc.fail("podswitch", format!("{n} Services: {e}")),
                }
            }
        }
    }
    sc
}

/// Starts a switch, applies `services` through the API, then adds `extra[0]`; returns both
/// call times as a client sees them.
fn measure_podswitch(
    services: Vec<vswitch::control::api::ServiceSpec>,
    extra: Vec<vswitch::control::api::ServiceSpec>,
) -> Result<(Duration, Duration), String> {
    use vswitch::control::api::{Request, ServiceApplyArgs};
    use vswitch::control::client::Client;
    let ns = scratch_netns("pswcp").map_err(|e| e.to_string())?;
    let dir = podswitch_lab::topology::ScratchDir::new("pswcp").map_err(|e| e.to_string())?;
    let cidr = vswitch::cidr::Ipv4Cidr::new(std::net::Ipv4Addr::new(10, 244, 1, 0), 24)
        .expect("valid CIDR");
    // A node as it runs in a cluster: host port and cluster DNS on, so every Service change
    // also republishes the DNS names.
    let config = vswitch::config::Config::for_node("bench", cidr, dir.path().join("s.sock"));
    let exe = crate::peers::switch_exe().map_err(|e| e.to_string())?;
    let switch = podswitch_lab::topology::SwitchProcess::start(&exe, &ns, &config)
        .map_err(|e| e.to_string())?;
    let mut client = Client::connect(switch.socket()).map_err(|e| e.to_string())?;
    let t = std::time::Instant::now();
    client
        .call(&Request::ServiceApply(ServiceApplyArgs { services }))
        .map_err(|e| e.to_string())?;
    let load = t.elapsed();
    let mut one = extra.into_iter().next().ok_or("no extra Service")?;
    one.name = "one-more".into();
    let t = std::time::Instant::now();
    client.call(&Request::ServiceAdd(one)).map_err(|e| e.to_string())?;
    Ok((load, t.elapsed()))
}

fn measure(
    tool: Tool,
    services: &[Service],
    limit: Duration,
) -> std::io::Result<(Duration, Duration)> {
    let ns = scratch_netns("pswcp")?;
    let load = kube_rules::load(&ns, tool, services, limit)?;
    let one = kube_rules::add_one(&ns, tool, &one_more(), limit)?;
    Ok((load, one))
}
