//! ADD and DEL latency: podswitch-cni next to the stock `bridge` plugin, both with the stock
//! `host-local` IPAM and a 1.0.0 configuration, executed as a runtime executes them, on the
//! same machine in the same run, rounds interleaved. One at a time, then 20 at once. Prints a
//! markdown table (the one in `docs/cni.md`):
//!
//! ```sh
//! cargo test --release -p podswitch-tests --test cni_bench -- --ignored --nocapture
//! ```

#[macro_use]
mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use podswitch_lab::topology::{netns_with_lo, unique_name, ScratchDir};
use podswitch_sys::netns::{NamedNetNs, NetNs};
use serde_json::{json, Value};

/// Interleaved rounds per datapath.
const ROUNDS: usize = 3;

/// Attachments per round, one at a time.
const SEQUENTIAL: usize = 20;

/// Attachments per round, all at once.
const CONCURRENT: usize = 20;

struct Target {
    label: &'static str,
    plugin: PathBuf,
    /// The namespace the plugin starts in (the node's, for `bridge`).
    inside: Option<NamedNetNs>,
    conf: Value,
}

#[derive(Default)]
struct Samples {
    add_one: Vec<Duration>,
    del_one: Vec<Duration>,
    add_many: Vec<Duration>,
    del_many: Vec<Duration>,
}

type Getter = fn(&Samples) -> &Vec<Duration>;

fn timed(t: &Target, command: &str, ns: &NetNs, id: &str) -> Duration {
    let start = Instant::now();
    let a =
        cni_plugin(&t.plugin, t.inside.as_deref(), command, id, &netns_path(ns), "eth0", &t.conf);
    let took = start.elapsed();
    assert!(a.success, "{} {command}: {}", t.label, a.stdout);
    took
}

fn round(t: &Target, s: &mut Samples) {
    let pods: Vec<NamedNetNs> = (0..SEQUENTIAL).map(|_| pod_ns()).collect();
    for ns in &pods {
        s.add_one.push(timed(t, "ADD", ns, ns.name()));
    }
    for ns in &pods {
        s.del_one.push(timed(t, "DEL", ns, ns.name()));
    }
    let pods: Vec<NamedNetNs> = (0..CONCURRENT).map(|_| pod_ns()).collect();
    let all = |command: &str| -> Vec<Duration> {
        std::thread::scope(|sc| {
            let hs: Vec<_> =
                pods.iter().map(|ns| sc.spawn(move || timed(t, command, ns, ns.name()))).collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        })
    };
    s.add_many.extend(all("ADD"));
    s.del_many.extend(all("DEL"));
}

fn percentile(v: &[Duration], p: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort();
    let i = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
    v[i].as_secs_f64() * 1e3
}

fn ipam(store: &Path, subnet: &str, gateway: &str) -> Value {
    json!({"type": "host-local", "dataDir": store, "ranges": [[{"subnet": subnet, "gateway": gateway}]]})
}

#[test]
#[ignore = "a measurement; run with --ignored --nocapture"]
fn add_and_del_latency_next_to_the_bridge_plugin() {
    require!("host-local", "bridge");
    let node = node();
    let store = ScratchDir::new("pcn-bench").unwrap();
    let mut ps_conf = own_conf(&node, "1.0.0");
    ps_conf["ipam"] = ipam(&store.path().join("ps"), POD_CIDR, "10.244.1.1");
    let podswitch =
        Target { label: "podswitch", plugin: PLUGIN.into(), inside: None, conf: ps_conf };
    let bridge_node = netns_with_lo(&unique_name("pcn-brnode")).unwrap();
    let bridge = Target {
        label: "bridge",
        plugin: Path::new(STOCK_DIR).join("bridge"),
        inside: Some(bridge_node),
        conf: json!({
            "cniVersion": "1.0.0",
            "name": "pswbench",
            "type": "bridge",
            "bridge": "cnibr0",
            "isGateway": true,
            "ipMasq": false,
            "ipam": ipam(&store.path().join("br"), POD_CIDR, "10.244.1.1"),
        }),
    };
    let mut ps = Samples::default();
    let mut br = Samples::default();
    for _ in 0..ROUNDS {
        round(&podswitch, &mut ps);
        round(&bridge, &mut br);
    }
    println!(
        "\nADD/DEL latency in ms, {ROUNDS} interleaved rounds ({} one at a time, {} of {CONCURRENT} at once per datapath)\n",
        ROUNDS * SEQUENTIAL,
        ROUNDS * CONCURRENT
    );
    println!("| operation | podswitch median | podswitch p99 | bridge median | bridge p99 |");
    println!("|---|---:|---:|---:|---:|");
    let rows: [(&str, Getter); 4] = [
        ("ADD, one at a time", |s| &s.add_one),
        ("DEL, one at a time", |s| &s.del_one),
        ("ADD, 20 concurrent", |s| &s.add_many),
        ("DEL, 20 concurrent", |s| &s.del_many),
    ];
    for (label, get) in rows {
        println!(
            "| {label} | {:.1} | {:.1} | {:.1} | {:.1} |",
            percentile(get(&ps), 0.5),
            percentile(get(&ps), 0.99),
            percentile(get(&br), 0.5),
            percentile(get(&br), 0.99)
        );
    }
}
