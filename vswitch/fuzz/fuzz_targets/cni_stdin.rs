//! The CNI plugin's input (`cni-shim/`): the network configuration a container runtime writes
//! to its stdin, and the `CNI_*` environment.
//!
//! Input: environment lines (`NAME=value`), a NUL byte, then stdin; without a NUL it is all
//! stdin. Only what needs no switch and no IPAM plugin runs: `Env::from_vars`,
//! `NetConf::parse`, `reply_version`, the whole invocation when the command is VERSION (or
//! missing, which is an error answered as JSON), the `prevResult` re-rendered for the
//! configuration's version, and stdin read as an IPAM plugin's result (`lease_from_result`
//! at every result format, then `fit_to_node`). Whatever it prints must be one JSON object,
//! an error's included; a port name made from the environment must parse back.
#![no_main]

use cni_shim::commands::{parse_port_name, port_name};
use cni_shim::config::{reply_version, NetConf};
use cni_shim::ipam::{fit_to_node, lease_from_result};
use cni_shim::spec::{Command, Env, Version};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fn json_object(s: &str) {
    let v: Value = serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"));
    assert!(v.is_object(), "not an object: {s}");
}

fuzz_target!(|data: &[u8]| {
    let (env_text, stdin) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&[][..], data),
    };
    let env_text = String::from_utf8_lossy(env_text);
    let vars: Vec<(&str, &str)> = env_text.lines().filter_map(|l| l.split_once('=')).collect();
    let get = |k: &str| vars.iter().rev().find(|(n, _)| *n == k).map(|(_, v)| v.to_string());

    assert!(reply_version(stdin).is_supported(), "replies only in a version spoken");
    let env = Env::from_vars(&get);
    if let Ok(env) = &env {
        if matches!(env.command, Command::Add | Command::Del | Command::Check) {
            let name = port_name(env.container_id(), env.ifname());
            if let Some((id, ifname)) = parse_port_name(&name) {
                assert_eq!((id, ifname), (env.container_id(), env.ifname()), "{name}");
            }
        }
    }
    if env.as_ref().map_or(true, |e| e.command == Command::Version) {
        let o = cni_shim::run(&get, Ok(stdin));
        json_object(&o.stdout);
    }

    match NetConf::parse(stdin) {
        Ok(conf) => {
            assert!(conf.cni_version.is_supported());
            if let Some(prev) = conf.prev_result.clone() {
                let r = prev.for_version(conf.cni_version);
                json_object(&serde_json::to_string(&r).expect("results serialize"));
            }
        }
        Err(e) => json_object(&e.to_json(reply_version(stdin))),
    }

    let Ok(result) = serde_json::from_slice::<Value>(stdin) else { return };
    let pod_cidr: vswitch::cidr::Ipv4Cidr = "10.244.1.0/24".parse().expect("a CIDR");
    for version in
        [Version(0, 2, 0), Version(0, 3, 1), Version(0, 4, 0), Version(1, 0, 0), Version(1, 1, 0)]
    {
        if let Ok(lease) = lease_from_result(&result, version) {
            if let Ok(addr) =
                fit_to_node(&lease, pod_cidr, "10.244.1.1".parse().expect("an address"))
            {
                assert!(pod_cidr.contains(addr.addr));
            }
        }
    }
});
