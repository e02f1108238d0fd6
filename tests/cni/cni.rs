//! The plugin executed as a container runtime executes it, against a running switch and the
//! stock reference plugins (`host-local`, `tuning`): concurrent ADDs that all talk to each
//! other, CHECK, idempotent DEL, chaining, STATUS, GC, and bad input that leaves nothing
//! behind.

#[macro_use]
mod common;

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use common::*;
use podswitch_api::protocol::{PortAddArgs, Request};
use podswitch_lab::traffic;
use podswitch_sys::netlink::Netlink;
use podswitch_sys::netns::{NamedNetNs, NetNs};
use serde_json::{json, Value};

fn links(ns: &NetNs) -> Vec<String> {
    let mut nl = Netlink::open_in(ns).expect("netlink");
    nl.link_list().expect("link list").into_iter().map(|l| l.name).collect()
}

fn reaches(from: &NetNs, dst: Ipv4Addr) -> bool {
    (0..3).any(|_| {
        traffic::ping(from, dst, 1, Duration::from_millis(10), Duration::from_secs(2))
            .is_ok_and(|r| r.all_received())
    })
}

fn add_all(pods: &[NamedNetNs], conf: &Value) -> Vec<Value> {
    std::thread::scope(|s| {
        let handles: Vec<_> = pods
            .iter()
            .map(|ns| s.spawn(move || cni("ADD", ns.name(), &netns_path(ns), conf)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap().ok()).collect()
    })
}

fn del_all(pods: &[NamedNetNs], conf: &Value) {
    std::thread::scope(|s| {
        for ns in pods {
            s.spawn(move || cni("DEL", ns.name(), &netns_path(ns), conf).ok());
        }
    });
}

fn with_prev(conf: &Value, prev: &Value) -> Value {
    let mut c = conf.clone();
    c["prevResult"] = prev.clone();
    c
}

#[test]
fn twenty_concurrent_adds_talk_to_each_other_and_del_releases_everything() {
    require!("host-local");
    let node = node();
    let store = scratch("pcn-store");
    let conf = host_local_conf(&node, store.path(), "1.1.0");
    let pods: Vec<NamedNetNs> = (0..20).map(|_| pod_ns()).collect();
    let results = add_all(&pods, &conf);

    let ips: Vec<Ipv4Addr> = results.iter().map(result_ip).collect();
    assert_eq!(ips.iter().collect::<HashSet<_>>().len(), 20, "distinct addresses: {ips:?}");
    let mut sorted = ips.clone();
    sorted.sort();
    assert_eq!(store_ips(store.path(), "pswtest"), sorted, "host-local holds exactly those");
    assert_eq!(port_names(&node).len(), 21);
    let r = &results[0];
    assert_eq!(r["cniVersion"], "1.1.0");
    assert_eq!(r["interfaces"][0]["name"], "eth0");
    assert_eq!(r["interfaces"][0]["sandbox"], netns_path(&pods[0]));
    assert_eq!(r["interfaces"][0]["mtu"], 1500);
    assert_eq!(r["ips"][0]["interface"], 0);
    assert_eq!(r["ips"][0]["gateway"], "10.244.1.1");
    assert_eq!(r["routes"][0], json!({"dst": "0.0.0.0/0", "gw": "10.244.1.1"}));

    let gateway = node.gateway();
    std::thread::scope(|s| {
        for (i, ns) in pods.iter().enumerate() {
            let ips = &ips;
            s.spawn(move || {
                assert!(reaches(ns, gateway), "pod {i} -> gateway");
                for (j, ip) in ips.iter().enumerate().filter(|(j, _)| *j != i) {
                    assert!(reaches(ns, *ip), "pod {i} -> pod {j} ({ip})");
                }
            });
        }
    });

    for (ns, r) in pods.iter().zip(&results) {
        let a = cni("CHECK", ns.name(), &netns_path(ns), &with_prev(&conf, r));
        assert!(a.success, "CHECK {}: {}", ns.name(), a.stdout);
    }
    let victim = &pods[3];
    {
        let mut nl = Netlink::open_in(victim).unwrap();
        let eth0 = nl.link_get("eth0").unwrap().unwrap();
        nl.addr_del(eth0.index, ips[3], 24).unwrap();
    }
    let a = cni("CHECK", victim.name(), &netns_path(victim), &with_prev(&conf, &results[3]));
    assert_eq!(a.code(), 103, "{}", a.stdout);
    assert!(a.message().contains(&format!("address {}/24 is missing", ips[3])), "{}", a.stdout);

    del_all(&pods, &conf);
    assert_eq!(store_ips(store.path(), "pswtest"), Vec::<Ipv4Addr>::new(), "every IP released");
    assert_eq!(port_names(&node), vec!["psw0"], "every port removed");
    for ns in &pods {
        assert_eq!(links(ns), vec!["lo"]);
    }
    let again = cni("DEL", pods[0].name(), &netns_path(&pods[0]), &conf);
    assert!(again.success, "DEL twice: {}", again.stdout);
}

#[test]
fn del_succeeds_when_the_namespace_is_already_gone() {
    require!("host-local");
    let node = node();
    let store = scratch("pcn-store");
    let conf = host_local_conf(&node, store.path(), "1.1.0");
    let ns = pod_ns();
    let (id, path) = (ns.name().to_string(), netns_path(&ns));
    cni("ADD", &id, &path, &conf).ok();
    drop(ns);
    assert!(cni("DEL", &id, &path, &conf).success);
    assert!(cni("DEL", &id, "", &conf).success, "DEL without CNI_NETNS");
    assert_eq!(store_ips(store.path(), "pswtest"), Vec::<Ipv4Addr>::new());
    assert_eq!(port_names(&node), vec!["psw0"]);
}

#[test]
fn the_switch_allocates_when_there_is_no_ipam_section() {
    require!();
    let node = node();
    let conf = own_conf(&node, "1.0.0");
    let pods: Vec<NamedNetNs> = (0..3).map(|_| pod_ns()).collect();
    let results = add_all(&pods, &conf);
    let ips: HashSet<Ipv4Addr> = results.iter().map(result_ip).collect();
    assert_eq!(ips.len(), 3);
    assert!(results
        .iter()
        .all(|r| r["cniVersion"] == "1.0.0" && r["interfaces"][0].get("mtu").is_none()));
    for ip in ips.iter().filter(|ip| **ip != result_ip(&results[0])) {
        assert!(reaches(&pods[0], *ip), "pod 0 -> {ip}");
    }
    assert!(
        cni("CHECK", pods[1].name(), &netns_path(&pods[1]), &with_prev(&conf, &results[1])).success
    );
    del_all(&pods, &conf);
    assert_eq!(port_names(&node), vec!["psw0"]);
    let released = result_ip(&results[0]);
    node.switch
        .call(&Request::PortAdd(PortAddArgs {
            name: "reuse".into(),
            netns: pods[0].name().into(),
            ip: Some(format!("{released}/24").parse().unwrap()),
            mac: None,
            ifname: None,
            mtu: None,
            kind: Default::default(),
            port_security: true,
            allow_ips: Vec::new(),
        }))
        .expect("DEL returned the address to the switch's pool");
}

#[test]
fn af_xdp_pods_are_added_checked_and_deleted() {
    require!();
    let node = node();
    let mut conf = own_conf(&node, "1.1.0");
    conf["portType"] = json!("af_xdp");
    let pods: Vec<NamedNetNs> = (0..2).map(|_| pod_ns()).collect();
    let results = add_all(&pods, &conf);
    let ports = match node.switch.call(&Request::PortList).unwrap() {
        podswitch_api::protocol::Reply::Ports { ports } => ports,
        other => panic!("{other:?}"),
    };
    assert!(
        ports
            .iter()
            .filter(|p| p.name != "psw0")
            .all(|p| p.kind == podswitch_api::protocol::PortKind::Afxdp),
        "{ports:?}"
    );
    assert!(reaches(&pods[0], result_ip(&results[1])));
    assert!(
        cni("CHECK", pods[1].name(), &netns_path(&pods[1]), &with_prev(&conf, &results[1])).success
    );
    del_all(&pods, &conf);
    assert_eq!(port_names(&node), vec!["psw0"]);
    assert!(pods.iter().all(|p| links(p) == vec!["lo"]), "the veth pairs are gone");
    assert!(
        !links(&node.ns).iter().any(|l| l.starts_with("psx")),
        "no host end left: {:?}",
        links(&node.ns)
    );
}

#[test]
fn chained_after_podswitch_tuning_gets_its_result() {
    require!("host-local", "tuning");
    let node = node();
    let store = scratch("pcn-store");
    let ours = host_local_conf(&node, store.path(), "1.0.0");
    let tuning = json!({
        "cniVersion": "1.0.0",
        "name": "pswtest",
        "type": "tuning",
        "mtu": 1400,
        "dataDir": store.path().join("tuning"),
    });
    let ns = pod_ns();
    let (id, path) = (ns.name().to_string(), netns_path(&ns));
    let first = cni("ADD", &id, &path, &ours).ok();
    let tuning_exe = Path::new(STOCK_DIR).join("tuning");
    let chained =
        cni_plugin(&tuning_exe, None, "ADD", &id, &path, "eth0", &with_prev(&tuning, &first)).ok();
    assert_eq!(chained["ips"], first["ips"], "tuning passes podswitch's result on");
    let mut nl = Netlink::open_in(&ns).unwrap();
    assert_eq!(nl.link_get("eth0").unwrap().unwrap().mtu, 1400, "tuning configured eth0");
    assert!(reaches(&ns, node.gateway()));
    let check = cni("CHECK", &id, &path, &with_prev(&ours, &chained));
    assert!(check.success, "{}", check.stdout);
    cni_plugin(&tuning_exe, None, "DEL", &id, &path, "eth0", &with_prev(&tuning, &chained)).ok();
    cni("DEL", &id, &path, &with_prev(&ours, &chained)).ok();
    assert_eq!(store_ips(store.path(), "pswtest"), Vec::<Ipv4Addr>::new());
    assert_eq!(port_names(&node), vec!["psw0"]);
}

#[test]
fn status_fails_with_50_while_the_switch_is_down() {
    require!("host-local");
    let mut node = node();
    let store = scratch("pcn-store");
    let conf = host_local_conf(&node, store.path(), "1.1.0");
    let up = cni("STATUS", "", "", &conf);
    assert!(up.success && up.stdout.is_empty(), "{}", up.stdout);
    node.switch.stop().unwrap();
    let down = cni("STATUS", "", "", &conf);
    assert_eq!(down.code(), 50, "{}", down.stdout);
    let ns = pod_ns();
    let add = cni("ADD", ns.name(), &netns_path(&ns), &conf);
    assert_eq!(add.code(), 11, "ADD asks to be retried: {}", add.stdout);
    assert_eq!(store_ips(store.path(), "pswtest"), Vec::<Ipv4Addr>::new());
}

#[test]
fn gc_removes_attachments_that_are_not_valid() {
    require!("host-local");
    let node = node();
    let store = scratch("pcn-store");
    let conf = host_local_conf(&node, store.path(), "1.1.0");
    let pods: Vec<NamedNetNs> = (0..3).map(|_| pod_ns()).collect();
    let results = add_all(&pods, &conf);
    let bystander = pod_ns();
    node.switch
        .call(&Request::PortAdd(PortAddArgs {
            name: "not-from-cni".into(),
            netns: bystander.name().into(),
            ip: None,
            mac: None,
            ifname: None,
            mtu: None,
            kind: Default::default(),
            port_security: true,
            allow_ips: Vec::new(),
        }))
        .unwrap();
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": pods[0].name(), "ifname": "eth0"}]);
    let a = cni("GC", "", "", &gc);
    assert!(a.success, "{}", a.stdout);
    let keep = format!("cni:{}:eth0", pods[0].name());
    assert_eq!(port_names(&node), vec!["psw0".to_string(), keep, "not-from-cni".to_string()]);
    assert_eq!(store_ips(store.path(), "pswtest"), vec![result_ip(&results[0])]);
    assert_eq!(links(&pods[1]), vec!["lo"]);
    assert!(reaches(&pods[0], node.gateway()));
    assert!(cni("DEL", pods[1].name(), &netns_path(&pods[1]), &conf).success);
}

#[test]
fn bad_input_gets_the_right_code_and_leaves_nothing_behind() {
    require!("host-local");
    let node = node();
    let store = scratch("pcn-store");
    let conf = host_local_conf(&node, store.path(), "1.1.0");
    let ns = pod_ns();
    let (id, path) = (ns.name().to_string(), netns_path(&ns));
    let cni_path = cni_path();
    let plugin = Path::new(PLUGIN);
    let full = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", id.as_str()),
        ("CNI_NETNS", path.as_str()),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", cni_path.as_str()),
    ];
    let text = conf.to_string();
    assert_eq!(exec_in(None, plugin, &full, "{\"cniVersion\":").code(), 6);
    assert_eq!(exec_in(None, plugin, &full, "").code(), 6);
    let no_netns: Vec<_> = full.iter().copied().filter(|(k, _)| *k != "CNI_NETNS").collect();
    let a = exec_in(None, plugin, &no_netns, &text);
    assert_eq!(a.code(), 4);
    assert!(a.message().contains("CNI_NETNS"), "{}", a.stdout);
    assert_eq!(exec_in(None, plugin, &full[1..], &text).code(), 4, "no CNI_COMMAND");
    let mut old = conf.clone();
    old["cniVersion"] = "0.4.0".into();
    assert_eq!(exec_in(None, plugin, &full, &old.to_string()).code(), 1);
    let mut bad_mtu = conf.clone();
    bad_mtu["mtu"] = 10.into();
    let a = exec_in(None, plugin, &full, &bad_mtu.to_string());
    assert_eq!(a.code(), 7);
    assert!(a.message().contains("mtu"), "{}", a.stdout);
    let mut typo = conf.clone();
    typo["sockt"] = "/run/x.sock".into();
    let a = exec_in(None, plugin, &full, &typo.to_string());
    assert_eq!(a.code(), 2);
    assert!(a.message().contains("sockt"), "{}", a.stdout);
    let mut outside = conf.clone();
    outside["ipam"]["ranges"] = json!([[{"subnet": "10.99.0.0/24"}]]);
    let a = exec_in(None, plugin, &full, &outside.to_string());
    assert_eq!(a.code(), 7, "a range outside the pod CIDR: {}", a.stdout);
    assert!(a.message().contains("ipam"), "{}", a.stdout);
    let a = cni_plugin(plugin, None, "ADD", &id, &path, "lo", &conf);
    assert_eq!(a.code(), 100, "the switch refuses an existing ifname: {}", a.stdout);
    let mut missing = conf.clone();
    missing["ipam"]["type"] = "no-such-ipam".into();
    assert_eq!(exec_in(None, plugin, &full, &missing.to_string()).code(), 101);

    assert_eq!(store_ips(store.path(), "pswtest"), Vec::<Ipv4Addr>::new(), "no IP kept");
    assert_eq!(port_names(&node), vec!["psw0"], "no port kept");
    assert_eq!(links(&ns), vec!["lo"], "nothing in the pod namespace");

    let first = cni("ADD", &id, &path, &conf).ok();
    let twice = cni("ADD", &id, &path, &conf);
    assert_eq!(twice.code(), 104, "{}", twice.stdout);
    assert_eq!(store_ips(store.path(), "pswtest"), vec![result_ip(&first)], "the first stays");
    assert!(reaches(&ns, node.gateway()));
    cni("DEL", &id, &path, &conf).ok();
}

#[test]
fn version_reports_the_supported_versions() {
    let a = exec_in(
        None,
        Path::new(PLUGIN),
        &[("CNI_COMMAND", "VERSION")],
        r#"{"cniVersion":"1.1.0"}"#,
    );
    assert_eq!(a.ok(), json!({"cniVersion": "1.1.0", "supportedVersions": ["1.0.0", "1.1.0"]}));
}
