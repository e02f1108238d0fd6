//! `podswitch lab`: the self-contained demonstration. It builds two nodes on an underlay
//! network, each running the switch in its own namespace, attaches the pods (by executing the
//! CNI plugin `podswitch-cni` exactly as a container runtime does, when it is built), proves
//! they can talk (ping, verified TCP transfers, node to pod and pod to node, and across nodes
//! through the VXLAN overlay), measures throughput and latency with the built-in traffic
//! tools, does the same on the kernel's path (bridge, veth, `vxlan`) for comparison, prints one
//! table, and removes everything it created, also on Ctrl-C or on failure.
//!
//! Nothing is installed or configured outside the lab's own namespaces; every traffic loop
//! is bounded in packets and time.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use serde::Serialize;

use crate::topology::{
    node_pod_cidr, podswitch_peer, underlay_ip, KernelVxlanNode, PodswitchNode, Underlay,
};
use crate::traffic::{self, Endpoint};
use podswitch_api::protocol::{Reply, Request};
use podswitch_sys::netns::NetNs;

/// Options of `podswitch lab`.
#[derive(Debug, Clone, Args)]
pub struct LabArgs {
    /// Number of pods (at least 2).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(2..=50))]
    pub pods: u16,
    /// Seconds per throughput measurement.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=60))]
    pub seconds: u64,
    /// Size of the verified TCP transfer, in MiB.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub transfer_mib: u64,
    /// Request/response round trips per latency measurement.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(100..=1_000_000))]
    pub round_trips: u64,
    /// Measurement rounds per datapath (alternating); the table shows medians.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=20))]
    pub repeat: u64,
    /// Skip the kernel bridge comparison.
    #[arg(long)]
    pub no_compare: bool,
    /// Keep the lab up after the checks until Ctrl-C, to look around with `ip netns exec`.
    #[arg(long)]
    pub hold: bool,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// The podswitch binary to run as the switch (default: this one).
    #[arg(long, hide = true)]
    pub switch_exe: Option<PathBuf>,
    /// The CNI plugin to attach the pods through, as a container runtime would (default:
    /// `podswitch-cni` next to this binary; without one, the pods are attached through the
    /// control API).
    #[arg(long)]
    pub cni_plugin: Option<PathBuf>,
}

/// One round of measurements of one datapath.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Measurements {
    /// TCP, one stream, Gbit/s.
    pub tcp_1_stream_gbps: f64,
    /// 64-byte UDP frames delivered per second.
    pub udp64_delivered_pps: f64,
    /// 64-byte UDP frames offered per second.
    pub udp64_offered_pps: f64,
    /// Loss at that rate.
    pub udp64_loss: f64,
    /// UDP request/response 64 B p50 in µs.
    pub udp_rr_p50_us: f64,
    /// UDP request/response p99 in µs.
    pub udp_rr_p99_us: f64,
    /// TCP request/response 64 B p50 in µs.
    pub tcp_rr_p50_us: f64,
    /// TCP request/response p99 in µs.
    pub tcp_rr_p99_us: f64,
    /// Cross-node TCP, one stream, Gbit/s.
    pub xnode_tcp_gbps: f64,
    /// Cross-node TCP request/response 64 B p50 in µs.
    pub xnode_tcp_rr_p50_us: f64,
    /// Cross-node TCP request/response p99 in µs.
    pub xnode_tcp_rr_p99_us: f64,
}

/// Every round of one datapath, and their per-metric medians.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// Which datapath.
    pub datapath: String,
    /// Each round, in order.
    pub rounds: Vec<Measurements>,
}

type Getter = fn(&Measurements) -> f64;

impl Summary {
    fn of(datapath: &str, rounds: Vec<Measurements>) -> Summary {
        Summary { datapath: datapath.to_string(), rounds }
    }

    /// Median, min and max of one metric over the rounds.
    pub fn stat(&self, get: Getter) -> (f64, f64, f64) {
        let mut v: Vec<f64> = self.rounds.iter().map(get).collect();
        v.sort_by(f64::total_cmp);
        match v.len() {
            0 => (0.0, 0.0, 0.0),
            n if n % 2 == 1 => (v[n / 2], v[0], v[n - 1]),
            n => ((v[n / 2 - 1] + v[n / 2]) / 2.0, v[0], v[n - 1]),
        }
    }
}

/// The lab's results.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LabReport {
    /// Connectivity checks: (description, passed, detail).
    pub checks: Vec<(String, bool, String)>,
    /// podswitch, then the kernel bridge if compared.
    pub measurements: Vec<Summary>,
}

/// Set by the first Ctrl-C; the lab stops at its next step and cleans up.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

fn interrupted() -> Result<(), String> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        Err("interrupted".into())
    } else {
        Ok(())
    }
}

/// Entry point of `podswitch lab`.
pub fn main(args: LabArgs) -> ExitCode {
    if !podswitch_sys::process::is_root() {
        eprintln!("podswitch lab: needs root (it creates network namespaces and TAP devices)");
        return ExitCode::from(2);
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        eprintln!("podswitch lab: /dev/net/tun is missing (modprobe tun)");
        return ExitCode::from(2);
    }
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let _ = signal_hook::flag::register(sig, flag.clone());
    }
    let watcher = std::thread::spawn({
        let flag = flag.clone();
        move || loop {
            if flag.load(Ordering::SeqCst) {
                INTERRUPTED.store(true, Ordering::SeqCst);
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    let result = run(&args);
    flag.store(true, Ordering::SeqCst);
    let _ = watcher.join();
    match result {
        Ok(report) => {
            if let Some(path) = &args.json {
                if let Err(e) =
                    std::fs::write(path, serde_json::to_string_pretty(&report).unwrap_or_default())
                {
                    eprintln!("podswitch lab: cannot write {}: {e}", path.display());
                }
            }
            if report.checks.iter().all(|c| c.1) {
                println!("\nlab passed; everything it created has been removed");
                ExitCode::SUCCESS
            } else {
                println!("\nlab FAILED; everything it created has been removed");
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("\npodswitch lab: {e}\neverything the lab created has been removed");
            ExitCode::FAILURE
        }
    }
}

fn step<T, E: std::fmt::Display>(what: &str, r: Result<T, E>) -> Result<T, String> {
    interrupted()?;
    r.map_err(|e| format!("{what}: {e}"))
}

fn run(args: &LabArgs) -> Result<LabReport, String> {
    let exe = match &args.switch_exe {
        Some(p) => p.clone(),
        None => step("locate podswitch", std::env::current_exe())?,
    };
    let cidr = node_pod_cidr(1);
    println!(
        "podswitch lab: building two nodes on an underlay: node-1 with {} pods (pod CIDR {cidr}), node-2 with 1 pod ({})",
        args.pods,
        node_pod_cidr(2)
    );
    let plugin = cni_plugin(args)?;
    match &plugin {
        Some(p) => println!("  pods are attached by executing the CNI plugin {}", p.display()),
        None => println!("  pods are attached through the switch's control API"),
    }
    let mut underlay = step("build the underlay", Underlay::build("psl"))?;
    let node = step(
        "build podswitch node-1",
        PodswitchNode::build_on_underlay(
            &exe,
            "psl",
            &mut underlay,
            1,
            args.pods.into(),
            &[podswitch_peer(2)],
            LAB_UNDERLAY_MTU,
            plugin.clone(),
            |_| {},
        ),
    )?;
    let node2 = step(
        "build podswitch node-2",
        PodswitchNode::build_on_underlay(
            &exe,
            "psl",
            &mut underlay,
            2,
            1,
            &[podswitch_peer(1)],
            LAB_UNDERLAY_MTU,
            plugin,
            |_| {},
        ),
    )?;
    println!(
        "  node namespace {} runs podswitch (pid {}), host port psw0 = {}/{}",
        node.ns.name(),
        node.switch.pid().unwrap_or(0),
        node.gateway(),
        cidr.prefix_len()
    );
    if node.cni_plugin.is_some() {
        println!("  CNI network configuration (on the plugin's stdin): {}", node.cni_netconf());
    }
    for p in &node.pods {
        println!("  pod {:<5} namespace {:<22} eth0 {} {}", p.name, p.ns.name(), p.ip, p.mac);
    }
    let remote = &node2.pods[0];
    println!(
        "  node-2 namespace {}: pod {} {}; underlay {} (node-1 {}, node-2 {}, VXLAN VNI 1)",
        node2.ns.name(),
        remote.name,
        remote.ip,
        underlay.ns.name(),
        underlay_ip(1),
        underlay_ip(2)
    );

    let mut report = LabReport::default();
    println!("\nconnectivity");
    let mut check = |name: String, r: Result<String, String>| {
        let (ok, detail) = match r {
            Ok(d) => (true, d),
            Err(e) => (false, e),
        };
        println!("  [{}] {name}: {detail}", if ok { " ok " } else { "FAIL" });
        report.checks.push((name, ok, detail));
    };
    let (a, b) = (&node.pods[0], &node.pods[1]);
    for p in &node.pods[1..] {
        interrupted()?;
        check(format!("ping {} -> {} ({})", a.name, p.name, p.ip), ping(&a.ns, p.ip));
    }
    check(format!("ping {} -> gateway {}", a.name, node.gateway()), ping(&a.ns, node.gateway()));
    let last = node.pods.last().expect("at least 2 pods");
    check(
        format!("ping node -> {} ({}) via the host port", last.name, last.ip),
        ping(&node.ns, last.ip),
    );
    interrupted()?;
    let bytes = args.transfer_mib << 20;
    check(
        format!("TCP {} MiB {} -> {}, every byte verified", args.transfer_mib, a.name, b.name),
        traffic::tcp_transfer_verified(
            Endpoint { ns: &b.ns, addr: b.ip },
            &a.ns,
            bytes,
            Duration::from_secs(120),
        )
        .map(|r| format!("{:.2} Gbit/s", r.gbit_per_sec()))
        .map_err(|e| e.to_string()),
    );
    interrupted()?;
    check(
        format!("TCP 8 MiB {} -> node {} (host port), verified", b.name, node.gateway()),
        traffic::tcp_transfer_verified(
            Endpoint { ns: &node.ns, addr: node.gateway() },
            &b.ns,
            8 << 20,
            Duration::from_secs(60),
        )
        .map(|r| format!("{:.2} Gbit/s", r.gbit_per_sec()))
        .map_err(|e| e.to_string()),
    );
    check("ARP answered by the switch".into(), arp_answered(&node));
    interrupted()?;
    check(
        format!("ping {} -> node-2 {} ({}) over VXLAN", a.name, remote.name, remote.ip),
        ping(&a.ns, remote.ip),
    );
    check(
        format!("ping node-1 -> node-2 {} ({}) via host port + overlay", remote.name, remote.ip),
        ping(&node.ns, remote.ip),
    );
    interrupted()?;
    check(
        format!(
            "TCP {} MiB {} -> node-2 {}, across nodes, every byte verified",
            args.transfer_mib, a.name, remote.name
        ),
        traffic::tcp_transfer_verified(
            Endpoint { ns: &remote.ns, addr: remote.ip },
            &a.ns,
            bytes,
            Duration::from_secs(120),
        )
        .map(|r| format!("{:.2} Gbit/s", r.gbit_per_sec()))
        .map_err(|e| e.to_string()),
    );

    let kernel = if args.no_compare {
        None
    } else {
        println!(
            "\nbuilding the kernel peer: two nodes, pods on veth pairs to a Linux bridge (cni0 model), vxlan between them (Flannel model)"
        );
        Some(step("build the kernel nodes", kernel_peer())?)
    };
    println!(
        "\nmeasuring, {} round(s) alternating between datapaths ({} s per throughput test, {} round trips per latency test)",
        args.repeat, args.seconds, args.round_trips
    );
    let mut ps_runs = Vec::new();
    let mut k_runs = Vec::new();
    for round in 1..=args.repeat {
        println!("round {round}: podswitch (TAP, VXLAN overlay)");
        ps_runs.push(measure(&a.ns, (&b.ns, b.ip), (&remote.ns, remote.ip), args)?);
        if let Some((k1, k2, _)) = &kernel {
            let (ka, kb, kr) = (&k1.bridge.pods[0], &k1.bridge.pods[1], &k2.bridge.pods[0]);
            println!("round {round}: kernel (bridge, veth, vxlan)");
            k_runs.push(measure(&ka.ns, (&kb.ns, kb.ip), (&kr.ns, kr.ip), args)?);
        }
    }
    report.measurements.push(Summary::of("podswitch", ps_runs));
    if kernel.is_some() {
        report.measurements.push(Summary::of("kernel path", k_runs));
    }
    if let Ok(Reply::Stats(s)) = node.switch.call(&Request::Stats) {
        print_switch_stats(&s);
    }
    if args.hold {
        hold(&node.ns);
    }
    drop(kernel);
    drop(node);
    drop(node2);
    drop(underlay);
    print_table(&report.measurements, args.repeat);
    Ok(report)
}

/// The CNI plugin to attach pods through: `--cni-plugin`, else `podswitch-cni` beside this
/// executable, else none (the control API), saying so.
fn cni_plugin(args: &LabArgs) -> Result<Option<PathBuf>, String> {
    if let Some(p) = &args.cni_plugin {
        return if p.is_file() {
            Ok(Some(p.clone()))
        } else {
            Err(format!("--cni-plugin {}: no such file", p.display()))
        };
    }
    let me = step("locate podswitch", std::env::current_exe())?;
    let beside = me.with_file_name("podswitch-cni");
    if beside.is_file() {
        Ok(Some(beside))
    } else {
        println!(
            "podswitch lab: {} not found (build it with `cargo build --release --workspace`); falling back to the control API",
            beside.display()
        );
        Ok(None)
    }
}

fn hold(ns: &NetNs) {
    println!("\n--hold: the lab stays up; look around with `ip netns exec <namespace> ...` (node: {}). Ctrl-C to tear down.", ns.path().display());
    while !INTERRUPTED.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(100));
    }
    INTERRUPTED.store(false, Ordering::SeqCst);
}

fn ping(ns: &NetNs, dst: Ipv4Addr) -> Result<String, String> {
    let r = traffic::ping(ns, dst, 3, Duration::from_millis(100), Duration::from_secs(2))
        .map_err(|e| e.to_string())?;
    if r.received == r.sent {
        let avg = r.rtts.iter().map(|d| d.as_secs_f64()).sum::<f64>() / r.rtts.len().max(1) as f64;
        Ok(format!("{}/{} replies, avg rtt {:.0} µs", r.received, r.sent, avg * 1e6))
    } else {
        Err(format!("{}/{} replies", r.received, r.sent))
    }
}

fn arp_answered(node: &PodswitchNode) -> Result<String, String> {
    match node.switch.call(&Request::Stats) {
        Ok(Reply::Stats(s)) => {
            let replies: u64 = s.ports.iter().map(|p| p.arp_replies).sum();
            if replies > 0 {
                Ok(format!("{replies} ARP requests answered from the switch's tables"))
            } else {
                Err("no ARP request was answered by the switch".into())
            }
        }
        Ok(other) => Err(format!("unexpected reply {other:?}")),
        Err(e) => Err(e.to_string()),
    }
}

/// MTU of the lab's underlays: pods get 1500 after the overlay's 50 bytes, like the kernel
/// bridge peer's pods.
pub const LAB_UNDERLAY_MTU: u32 = 1550;

/// The kernel's path on its own underlay: node 1 with two pods, node 2 with one, Flannel-style
/// VXLAN between them.
fn kernel_peer() -> std::io::Result<(KernelVxlanNode, KernelVxlanNode, Underlay)> {
    let mut ul = Underlay::build("psk")?;
    let k1 = KernelVxlanNode::build(
        "psk",
        &mut ul,
        underlay_ip(1),
        node_pod_cidr(1),
        2,
        1,
        LAB_UNDERLAY_MTU,
    )?;
    let k2 = KernelVxlanNode::build(
        "psk",
        &mut ul,
        underlay_ip(2),
        node_pod_cidr(2),
        1,
        1,
        LAB_UNDERLAY_MTU,
    )?;
    k1.add_peer(underlay_ip(2), node_pod_cidr(2), k2.vtep_mac)?;
    k2.add_peer(underlay_ip(1), node_pod_cidr(1), k1.vtep_mac)?;
    Ok((k1, k2, ul))
}

/// One round: same-node measurements from `client` to `local`, cross-node ones to `remote`.
fn measure(
    client: &NetNs,
    local: (&NetNs, Ipv4Addr),
    remote: (&NetNs, Ipv4Addr),
    args: &LabArgs,
) -> Result<Measurements, String> {
    let secs = Duration::from_secs(args.seconds);
    let (server_ns, server) = local;
    let ep = || Endpoint { ns: server_ns, addr: server };
    let tcp = step("TCP throughput", traffic::tcp_throughput(ep(), client, 1, secs))?;
    println!("  TCP 1 stream: {:.2} Gbit/s", tcp.gbit_per_sec());
    let udp = step("UDP 64-byte flood", traffic::udp_flood(ep(), client, 18, secs))?;
    println!(
        "  UDP 64 B: offered {:.0} pps, delivered {:.0} pps, loss {:.2}%",
        udp.offered_pps(),
        udp.delivered_pps(),
        udp.loss() * 100.0
    );
    let deadline = Duration::from_secs(60);
    let urr = step(
        "UDP request/response",
        traffic::udp_rr(ep(), client, 64, args.round_trips, deadline),
    )?;
    println!(
        "  UDP RR 64 B: p50 {:.1} µs, p99 {:.1} µs ({} lost)",
        us(urr.p50),
        us(urr.p99),
        urr.lost
    );
    let trr = step(
        "TCP request/response",
        traffic::tcp_rr(ep(), client, 64, args.round_trips, deadline),
    )?;
    println!("  TCP RR 64 B: p50 {:.1} µs, p99 {:.1} µs", us(trr.p50), us(trr.p99));
    let rep = Endpoint { ns: remote.0, addr: remote.1 };
    let xtcp = step("cross-node TCP throughput", traffic::tcp_throughput(rep, client, 1, secs))?;
    println!("  cross-node TCP 1 stream: {:.2} Gbit/s", xtcp.gbit_per_sec());
    let xrr = step(
        "cross-node TCP request/response",
        traffic::tcp_rr(rep, client, 64, args.round_trips, deadline),
    )?;
    println!("  cross-node TCP RR 64 B: p50 {:.1} µs, p99 {:.1} µs", us(xrr.p50), us(xrr.p99));
    Ok(Measurements {
        xnode_tcp_gbps: xtcp.gbit_per_sec(),
        xnode_tcp_rr_p50_us: us(xrr.p50),
        xnode_tcp_rr_p99_us: us(xrr.p99),
        tcp_1_stream_gbps: tcp.gbit_per_sec(),
        udp64_delivered_pps: udp.delivered_pps(),
        udp64_offered_pps: udp.offered_pps(),
        udp64_loss: udp.loss(),
        udp_rr_p50_us: us(urr.p50),
        udp_rr_p99_us: us(urr.p99),
        tcp_rr_p50_us: us(trr.p50),
        tcp_rr_p99_us: us(trr.p99),
    })
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn print_switch_stats(s: &podswitch_api::protocol::StatsReply) {
    println!("\nswitch counters (podswitch ctl stats)");
    print!("{}", vswitch::control::render::render(&Reply::Stats(s.clone())));
}

fn print_table(m: &[Summary], rounds: u64) {
    if rounds > 1 {
        println!("\nresults: medians of {rounds} rounds [min-max] (same machine, same run)");
    } else {
        println!("\nresults (same machine, same run)");
    }
    let mut header = vec!["metric".to_string()];
    header.extend(m.iter().map(|x| x.datapath.clone()));
    if m.len() == 2 {
        header.push("podswitch / kernel".into());
    }
    let rows: [(&str, Getter); 10] = [
        ("TCP 1 stream, Gbit/s", |x| x.tcp_1_stream_gbps),
        ("UDP 64 B delivered, kpps", |x| x.udp64_delivered_pps / 1e3),
        ("UDP 64 B loss, %", |x| x.udp64_loss * 100.0),
        ("UDP RR 64 B p50, µs", |x| x.udp_rr_p50_us),
        ("UDP RR 64 B p99, µs", |x| x.udp_rr_p99_us),
        ("TCP RR 64 B p50, µs", |x| x.tcp_rr_p50_us),
        ("TCP RR 64 B p99, µs", |x| x.tcp_rr_p99_us),
        ("cross-node TCP 1 stream, Gbit/s", |x| x.xnode_tcp_gbps),
        ("cross-node TCP RR p50, µs", |x| x.xnode_tcp_rr_p50_us),
        ("cross-node TCP RR p99, µs", |x| x.xnode_tcp_rr_p99_us),
    ];
    let mut table_rows = Vec::new();
    for (label, get) in rows {
        let mut r = vec![label.to_string()];
        for x in m {
            let (med, lo, hi) = x.stat(get);
            r.push(if rounds > 1 {
                format!("{med:.2} [{lo:.2}-{hi:.2}]")
            } else {
                format!("{med:.2}")
            });
        }
        if m.len() == 2 {
            let (a, b) = (m[0].stat(get).0, m[1].stat(get).0);
            r.push(if b > 0.0 { format!("{:.2}x", a / b) } else { "-".into() });
        }
        table_rows.push(r);
    }
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    print!("{}", vswitch::control::render::table(&header, &table_rows));
}
