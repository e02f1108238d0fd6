//! Shared by the plugin's behaviour tests and its measurement: a node running the switch in
//! a fresh namespace, pod namespaces, and the plugin (and the stock reference plugins)
//! executed exactly as a container runtime executes them.
//!
//! Everything is a guard from `podswitch_lab::topology`, so a failing assertion still deletes
//! the namespaces and stops the switch. host-local keeps its store in a scratch directory of
//! the test, so tests run in parallel and can look at what it holds.

#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};

use podswitch_api::protocol::{Reply, Request};
use podswitch_lab::topology::{netns_with_lo, unique_name, PodswitchNode, ScratchDir};
use podswitch_sys::netns::{NamedNetNs, NetNs};
use serde_json::{json, Value};

/// The plugin under test.
pub const PLUGIN: &str = env!("CARGO_BIN_EXE_psw-test-cni");

/// The switch the pods are attached to.
pub const SWITCH: &str = env!("CARGO_BIN_EXE_psw-test-switch");

/// Where Debian's `containernetworking-plugins` puts the reference plugins.
pub const STOCK_DIR: &str = "/usr/lib/cni";

/// The test nodes' pod CIDR.
pub const POD_CIDR: &str = "10.244.1.0/24";

/// Returns from the test, passing, when not root or when a stock plugin is missing.
macro_rules! require {
    ($($plugin:expr),*) => {
        if !podswitch_sys::process::is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        $(
            if !std::path::Path::new(common::STOCK_DIR).join($plugin).is_file() {
                eprintln!(
                    "skipped: needs the stock CNI plugin {} in {} (apt-get install containernetworking-plugins)",
                    $plugin,
                    common::STOCK_DIR
                );
                return;
            }
        )*
    };
}

/// `CNI_PATH`: the plugin's directory, then the stock plugins'.
pub fn cni_path() -> String {
    let own = Path::new(PLUGIN).parent().expect("the plugin has a directory");
    format!("{}:{STOCK_DIR}", own.display())
}

/// A plugin's answer.
#[derive(Debug)]
pub struct Answer {
    /// Exit status 0.
    pub success: bool,
    /// Its stdout, parsed (`Null` when empty).
    pub json: Value,
    /// Its stdout.
    pub stdout: String,
}

impl Answer {
    /// The error code of a failed invocation.
    pub fn code(&self) -> u64 {
        assert!(!self.success, "expected a failure, got {}", self.stdout);
        self.json["code"].as_u64().unwrap_or_else(|| panic!("no code in {}", self.stdout))
    }

    /// The result of a successful invocation.
    pub fn ok(self) -> Value {
        assert!(self.success, "plugin failed: {}", self.stdout);
        self.json
    }

    /// `msg` and `details` of an error.
    pub fn message(&self) -> String {
        format!("{} {}", self.json["msg"], self.json["details"])
    }
}

/// Executes `plugin` with exactly `vars` in its environment and `stdin`, from a thread in
/// `inside` when given (plugins such as `bridge` work in the namespace they start in).
pub fn exec_in(
    inside: Option<&NetNs>,
    plugin: &Path,
    vars: &[(&str, &str)],
    stdin: &str,
) -> Answer {
    let spawn = || {
        Command::new(plugin)
            .env_clear()
            .envs(vars.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
    };
    let mut child = match inside {
        None => spawn(),
        Some(ns) => ns.run(spawn).expect("enter the node namespace"),
    }
    .unwrap_or_else(|e| panic!("{}: {e}", plugin.display()));
    {
        use std::io::Write;
        let mut input = child.stdin.take().expect("stdin piped");
        let _ = input.write_all(stdin.as_bytes());
    }
    let out = child.wait_with_output().expect("wait for the plugin");
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let json = if stdout.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: not JSON: {stdout}"))
    };
    Answer { success: out.status.success(), json, stdout }
}

/// Executes the plugin under test as a runtime does.
pub fn cni(command: &str, id: &str, netns: &str, conf: &Value) -> Answer {
    cni_plugin(Path::new(PLUGIN), None, command, id, netns, "eth0", conf)
}

/// Executes any plugin as a runtime does (`netns` and `id` left out when empty).
pub fn cni_plugin(
    plugin: &Path,
    inside: Option<&NetNs>,
    command: &str,
    id: &str,
    netns: &str,
    ifname: &str,
    conf: &Value,
) -> Answer {
    let path = cni_path();
    let mut vars = vec![("CNI_COMMAND", command), ("CNI_PATH", path.as_str())];
    if !id.is_empty() {
        vars.push(("CNI_CONTAINERID", id));
        vars.push(("CNI_IFNAME", ifname));
    }
    if !netns.is_empty() {
        vars.push(("CNI_NETNS", netns));
    }
    exec_in(inside, plugin, &vars, &conf.to_string())
}

/// A node running the switch, no pods.
pub fn node() -> PodswitchNode {
    PodswitchNode::build(Path::new(SWITCH), "pcn", POD_CIDR.parse().unwrap(), 0, |_| {})
        .unwrap_or_else(|e| panic!("cannot build the test node: {e}"))
}

/// A network configuration for `node` with addresses from the switch.
pub fn own_conf(node: &PodswitchNode, version: &str) -> Value {
    json!({
        "cniVersion": version,
        "name": "pswtest",
        "type": "podswitch-cni",
        "socket": node.config.control.socket,
    })
}

/// A network configuration for `node` with addresses from host-local, its store in `store`.
pub fn host_local_conf(node: &PodswitchNode, store: &Path, version: &str) -> Value {
    let mut c = own_conf(node, version);
    c["ipam"] = json!({
        "type": "host-local",
        "dataDir": store,
        "ranges": [[{
            "subnet": POD_CIDR,
            "rangeStart": "10.244.1.10",
            "rangeEnd": "10.244.1.250",
            "gateway": "10.244.1.1"
        }]],
        "routes": [{"dst": "0.0.0.0/0"}]
    });
    c
}

/// The addresses host-local's store holds for network `name`.
pub fn store_ips(store: &Path, name: &str) -> Vec<Ipv4Addr> {
    let mut v: Vec<Ipv4Addr> = match std::fs::read_dir(store.join(name)) {
        Ok(d) => d.filter_map(|e| e.ok()?.file_name().into_string().ok()?.parse().ok()).collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

/// A pod namespace; its name is the container id.
pub fn pod_ns() -> NamedNetNs {
    netns_with_lo(&unique_name("pcn-pod")).expect("create a pod namespace")
}

/// The path a runtime passes as `CNI_NETNS`.
pub fn netns_path(ns: &NetNs) -> String {
    ns.path().display().to_string()
}

/// A private directory (host-local's store).
pub fn scratch(tag: &str) -> ScratchDir {
    ScratchDir::new(tag).expect("scratch dir")
}

/// The switch's port names.
pub fn port_names(node: &PodswitchNode) -> Vec<String> {
    match node.switch.call(&Request::PortList).expect("port list") {
        Reply::Ports { ports } => ports.into_iter().map(|p| p.name).collect(),
        other => panic!("{other:?}"),
    }
}

/// The IPv4 address of a result.
pub fn result_ip(result: &Value) -> Ipv4Addr {
    let a = result["ips"][0]["address"].as_str().unwrap_or_else(|| panic!("no ips in {result}"));
    a.split('/').next().unwrap().parse().unwrap()
}
