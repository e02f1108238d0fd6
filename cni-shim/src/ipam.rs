//! The IPAM delegate: the plugin named by `ipam.type`, executed from `CNI_PATH` the way the
//! spec says (same `CNI_*` environment, the network configuration on stdin, its answer on
//! stdout).
//!
//! Plugins in the wild speak older versions than ours (the distributions' `host-local` stops
//! at 1.0.0), so before every call the delegate is asked for its `VERSION`, the configuration
//! it receives is rewritten to the newest version both sides speak, and its result is
//! converted back: from the 0.3.x/0.4.0/1.x shape (`ips` with `address`) or the 0.2.0 shape
//! (`ip4`/`ip6`). Its errors reach the runtime with their own code, prefixed with the
//! plugin's name.

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Stdio};

use podswitch_api::cidr::Ipv4IfAddr;
use serde_json::{Map, Value};

use crate::config::{invalid, NetConf};
use crate::spec::{code, CniError, Dns, Env, Route, Version};

/// Oldest delegate version whose results this plugin reads.
pub const OLDEST_DELEGATE: Version = Version(0, 2, 0);

/// The first version with CHECK.
pub const CHECK_SINCE: Version = Version(0, 4, 0);

/// The first version with STATUS and GC.
pub const STATUS_GC_SINCE: Version = Version(1, 1, 0);

/// What an IPAM plugin handed out, reduced to what a podswitch port can carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The pod's address.
    pub addr: Ipv4IfAddr,
    /// The gateway the plugin names, if any.
    pub gateway: Option<Ipv4Addr>,
    /// Routes the plugin asks for.
    pub routes: Vec<Route>,
    /// DNS settings the plugin returns.
    pub dns: Dns,
}

/// An IPAM plugin found in `CNI_PATH`, with the version to speak to it.
#[derive(Debug, Clone)]
pub struct Delegate {
    /// Its `type`.
    pub name: String,
    /// Its executable.
    pub exe: PathBuf,
    /// The version used on its stdin.
    pub version: Version,
}

fn failed(plugin: &str, why: impl std::fmt::Display) -> CniError {
    CniError::new(code::IPAM_FAILED, format!("IPAM plugin {plugin} failed"), why.to_string())
}

/// Finds `name` in the directories of `CNI_PATH`.
pub fn find(name: &str, path: &[PathBuf]) -> Result<PathBuf, CniError> {
    if path.is_empty() {
        return Err(CniError::new(
            code::INVALID_ENV,
            "invalid CNI_PATH",
            format!("CNI_PATH: not set, and the ipam plugin {name} must be looked up in it"),
        ));
    }
    path.iter().map(|d| d.join(name)).find(|p| p.is_file()).ok_or_else(|| {
        let dirs: Vec<String> = path.iter().map(|d| d.display().to_string()).collect();
        failed(name, format!("no plugin {name:?} in CNI_PATH ({})", dirs.join(":")))
    })
}

/// One execution's output: stdout on success, the plugin's error otherwise.
fn exec(name: &str, exe: &Path, vars: &[(&str, &str)], stdin: &[u8]) -> Result<Vec<u8>, CniError> {
    let mut cmd = Process::new(exe);
    for k in ["CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS"] {
        cmd.env_remove(k);
    }
    cmd.envs(vars.iter().copied()).stdin(Stdio::piped()).stdout(Stdio::piped());
    cmd.stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| failed(name, format!("{}: {e}", exe.display())))?;
    if let Some(mut input) = child.stdin.take() {
        // A plugin may exit without reading stdin (VERSION); its verdict is in the output.
        let _ = input.write_all(stdin);
    }
    let out = child.wait_with_output().map_err(|e| failed(name, e))?;
    if out.status.success() {
        return Ok(out.stdout);
    }
    match serde_json::from_slice::<CniError>(&out.stdout) {
        Ok(e) => Err(CniError { msg: format!("IPAM plugin {name}: {}", e.msg), ..e }),
        Err(_) => Err(failed(
            name,
            format!(
                "{} ({}): {}{}",
                exe.display(),
                out.status,
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        )),
    }
}

impl Delegate {
    /// Finds the plugin and agrees on a version: the newest it supports that is not newer
    /// than the configuration's.
    pub fn negotiate(name: &str, env: &Env, conf_version: Version) -> Result<Delegate, CniError> {
        let exe = find(name, &env.path)?;
        let path = path_var(env);
        let input = serde_json::json!({ "cniVersion": conf_version.to_string() }).to_string();
        let out = exec(
            name,
            &exe,
            &[("CNI_COMMAND", "VERSION"), ("CNI_PATH", path.as_str())],
            input.as_bytes(),
        )?;
        let info: Value = serde_json::from_slice(&out)
            .map_err(|e| failed(name, format!("VERSION answer is not JSON: {e}")))?;
        let versions: Vec<Version> = info
            .get("supportedVersions")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|v| v.as_str()?.parse().ok()).collect())
            .unwrap_or_else(|| vec![Version(0, 1, 0), Version(0, 2, 0)]);
        let version = versions
            .into_iter()
            .filter(|v| *v <= conf_version && *v >= OLDEST_DELEGATE)
            .max()
            .ok_or_else(|| {
                CniError::new(
                    code::INCOMPATIBLE_VERSION,
                    "incompatible CNI version",
                    format!(
                        "ipam: {name} shares no version with podswitch-cni between {OLDEST_DELEGATE} and {conf_version}"
                    ),
                )
            })?;
        Ok(Delegate { name: name.to_string(), exe, version })
    }

    /// Runs `command` with the environment of this invocation (container id and interface
    /// from `attachment` when given, for GC's per-attachment DELs) and `conf` rewritten to the
    /// delegate's version.
    pub fn call(
        &self,
        command: &str,
        env: &Env,
        attachment: Option<(&str, &str)>,
        conf: &NetConf,
    ) -> Result<Vec<u8>, CniError> {
        let mut raw: Map<String, Value> = conf.raw.clone();
        raw.insert("cniVersion".into(), self.version.to_string().into());
        if let Some(prev) = raw.get_mut("prevResult") {
            downgrade_result(prev, self.version);
        }
        let stdin = Value::Object(raw).to_string();
        let path = path_var(env);
        let (id, ifname) = match attachment {
            Some(a) => a,
            None => (env.container_id(), env.ifname()),
        };
        let netns = if attachment.is_some() { "" } else { env.netns.as_deref().unwrap_or("") };
        let mut vars = vec![("CNI_COMMAND", command), ("CNI_PATH", path.as_str())];
        for (k, v) in [
            ("CNI_CONTAINERID", id),
            ("CNI_IFNAME", ifname),
            ("CNI_NETNS", netns),
            ("CNI_ARGS", env.args.as_deref().unwrap_or("")),
        ] {
            if !v.is_empty() {
                vars.push((k, v));
            }
        }
        exec(&self.name, &self.exe, &vars, stdin.as_bytes())
    }

    /// ADD: the address for the attachment.
    pub fn add(&self, env: &Env, conf: &NetConf) -> Result<Lease, CniError> {
        let out = self.call("ADD", env, None, conf)?;
        let v: Value = serde_json::from_slice(&out)
            .map_err(|e| failed(&self.name, format!("ADD result is not JSON: {e}")))?;
        lease_from_result(&v, self.version).map_err(|why| {
            CniError::new(
                code::IPAM_FAILED,
                format!("IPAM plugin {} returned an unusable result", self.name),
                why,
            )
        })
    }
}

fn path_var(env: &Env) -> String {
    env.path.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(":")
}

/// Rewrites a result (a `prevResult`) in place for a reader of `version`.
fn downgrade_result(result: &mut Value, version: Version) {
    let Some(obj) = result.as_object_mut() else { return };
    obj.insert("cniVersion".into(), version.to_string().into());
    if version < Version(0, 4, 0) {
        if let Some(Value::Array(ips)) = obj.get_mut("ips") {
            for ip in ips.iter_mut().filter_map(Value::as_object_mut) {
                let v6 = ip.get("address").and_then(Value::as_str).is_some_and(|a| a.contains(':'));
                ip.insert("version".into(), if v6 { "6" } else { "4" }.into());
            }
        }
    }
}

/// Reads the one IPv4 address, gateway, routes and DNS out of an IPAM result of `version`.
pub fn lease_from_result(v: &Value, version: Version) -> Result<Lease, String> {
    let obj = v.as_object().ok_or("the result is not an object")?;
    let dns: Dns = match obj.get("dns") {
        None | Some(Value::Null) => Dns::default(),
        Some(d) => serde_json::from_value(d.clone()).map_err(|e| format!("dns: {e}"))?,
    };
    let route_list = |r: Option<&Value>| -> Result<Vec<Route>, String> {
        match r {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(r) => serde_json::from_value(r.clone()).map_err(|e| format!("routes: {e}")),
        }
    };
    if version < Version(0, 3, 0) {
        let ip4 = obj.get("ip4").ok_or("no ip4 section: podswitch pods need an IPv4 address")?;
        let addr = ip4.get("ip").and_then(Value::as_str).ok_or("ip4.ip missing")?;
        let gateway = ip4.get("gateway").and_then(Value::as_str);
        return Ok(Lease {
            addr: addr.parse().map_err(|e| format!("ip4.ip {addr:?}: {e}"))?,
            gateway: gateway
                .map(|g| g.parse().map_err(|e| format!("ip4.gateway {g:?}: {e}")))
                .transpose()?,
            routes: route_list(ip4.get("routes"))?,
            dns,
        });
    }
    let ips = obj.get("ips").and_then(Value::as_array).ok_or("no ips in the result")?;
    let mut v4 = Vec::new();
    for ip in ips {
        let a = ip.get("address").and_then(Value::as_str).ok_or("ips[].address missing")?;
        if a.contains(':') {
            return Err(format!("{a} is IPv6; podswitch pods are IPv4 only"));
        }
        let addr: Ipv4IfAddr = a.parse().map_err(|e| format!("ips[].address {a:?}: {e}"))?;
        let gw = match ip.get("gateway").and_then(Value::as_str) {
            Some(g) => Some(g.parse::<Ipv4Addr>().map_err(|e| format!("gateway {g:?}: {e}"))?),
            None => None,
        };
        v4.push((addr, gw));
    }
    let [(addr, gateway)] = v4.as_slice() else {
        return Err(format!("{} IPv4 addresses; a podswitch port carries exactly one", v4.len()));
    };
    Ok(Lease { addr: *addr, gateway: *gateway, routes: route_list(obj.get("routes"))?, dns })
}

/// Checks a lease against the node's pod CIDR and gateway (ipam ranges must lie inside the
/// switch's pod CIDR, with the switch's gateway); returns the address to give the port: as
/// leased when its prefix is the pod CIDR's, else as a /32 (routed through the gateway).
pub fn fit_to_node(
    lease: &Lease,
    pod_cidr: podswitch_api::cidr::Ipv4Cidr,
    gateway: Ipv4Addr,
) -> Result<Ipv4IfAddr, CniError> {
    if !pod_cidr.is_host(lease.addr.addr) || lease.addr.addr == gateway {
        return Err(invalid(
            "ipam",
            format!(
                "the plugin gave {}, which is not a pod address of the switch's pod CIDR {pod_cidr} (gateway {gateway}); make the ipam ranges lie inside it",
                lease.addr
            ),
        ));
    }
    if let Some(g) = lease.gateway {
        if g != gateway {
            return Err(invalid(
                "ipam",
                format!("the plugin's gateway {g} is not the switch's gateway {gateway}"),
            ));
        }
    }
    if lease.addr.prefix_len == pod_cidr.prefix_len() {
        Ok(lease.addr)
    } else {
        Ok(Ipv4IfAddr { addr: lease.addr.addr, prefix_len: 32 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_of_every_shape_become_a_lease() {
        let current = serde_json::json!({
            "cniVersion": "1.0.0",
            "ips": [{"address": "10.244.1.7/24", "gateway": "10.244.1.1"}],
            "routes": [{"dst": "0.0.0.0/0"}],
            "dns": {"nameservers": ["10.96.0.10"]}
        });
        let l = lease_from_result(&current, Version(1, 0, 0)).unwrap();
        assert_eq!(l.addr.to_string(), "10.244.1.7/24");
        assert_eq!(l.gateway, Some(Ipv4Addr::new(10, 244, 1, 1)));
        assert_eq!(l.routes[0].dst, "0.0.0.0/0");
        assert_eq!(l.dns.nameservers, vec!["10.96.0.10"]);
        let v030 = serde_json::json!({
            "cniVersion": "0.3.1",
            "ips": [{"version": "4", "address": "10.244.1.8/24"}]
        });
        assert_eq!(lease_from_result(&v030, Version(0, 3, 1)).unwrap().gateway, None);
        let v020 = serde_json::json!({
            "cniVersion": "0.2.0",
            "ip4": {"ip": "10.244.1.9/24", "gateway": "10.244.1.1", "routes": [{"dst": "0.0.0.0/0"}]}
        });
        assert_eq!(
            lease_from_result(&v020, Version(0, 2, 0)).unwrap().addr.to_string(),
            "10.244.1.9/24"
        );
        let v6 = serde_json::json!({"ips": [{"address": "fd00::5/64"}]});
        assert!(lease_from_result(&v6, Version(1, 0, 0)).unwrap_err().contains("IPv6"));
        let two =
            serde_json::json!({"ips": [{"address": "10.0.0.2/24"}, {"address": "10.0.0.3/24"}]});
        assert!(lease_from_result(&two, Version(1, 0, 0)).unwrap_err().contains("exactly one"));
    }

    #[test]
    fn leases_must_fit_the_node() {
        let cidr = "10.244.1.0/24".parse().unwrap();
        let gw = Ipv4Addr::new(10, 244, 1, 1);
        let lease = |a: &str, g: Option<&str>| Lease {
            addr: a.parse().unwrap(),
            gateway: g.map(|g| g.parse().unwrap()),
            routes: Vec::new(),
            dns: Dns::default(),
        };
        assert_eq!(
            fit_to_node(&lease("10.244.1.5/24", Some("10.244.1.1")), cidr, gw).unwrap().to_string(),
            "10.244.1.5/24"
        );
        assert_eq!(
            fit_to_node(&lease("10.244.1.130/25", None), cidr, gw).unwrap().to_string(),
            "10.244.1.130/32"
        );
        assert_eq!(
            fit_to_node(&lease("10.9.0.5/24", None), cidr, gw).unwrap_err().code,
            code::INVALID_CONFIG
        );
        assert_eq!(
            fit_to_node(&lease("10.244.1.5/24", Some("10.244.1.254")), cidr, gw).unwrap_err().code,
            code::INVALID_CONFIG
        );
    }

    #[test]
    fn prev_results_are_downgraded_for_old_readers() {
        let mut r = serde_json::json!({"cniVersion": "1.1.0", "ips": [{"address": "10.0.0.2/24"}]});
        downgrade_result(&mut r, Version(0, 3, 1));
        assert_eq!(r["cniVersion"], "0.3.1");
        assert_eq!(r["ips"][0]["version"], "4");
    }
}
