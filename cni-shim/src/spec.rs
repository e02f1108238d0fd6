//! The CNI contract as data: the spec versions this plugin speaks, the environment a runtime
//! passes (`CNI_*` variables), the error object with the spec's well-known codes and ours
//! (≥ 100), and the result object in the shape of spec 1.0.0 and 1.1.0.
//!
//! Everything a runtime can get wrong is rejected here, before any work is done, with the
//! code the spec assigns to it and the offending variable named in the message.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Spec versions this plugin accepts in a network configuration, oldest first.
pub const SUPPORTED_VERSIONS: [Version; 2] = [Version(1, 0, 0), Version(1, 1, 0)];

/// The newest spec version this plugin speaks.
pub const LATEST: Version = Version(1, 1, 0);

/// Error codes: the spec's well-known ones (below 100) and podswitch's own (100 and up),
/// documented in `docs/cni.md`.
pub mod code {
    /// The configuration's `cniVersion` is not one this plugin speaks.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// The configuration has a field this plugin does not know.
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// A required `CNI_*` variable is missing or invalid.
    pub const INVALID_ENV: u32 = 4;
    /// Reading stdin failed.
    pub const IO_FAILURE: u32 = 5;
    /// Stdin is not JSON, or not an object.
    pub const DECODE: u32 = 6;
    /// A configuration field has an unacceptable value.
    pub const INVALID_CONFIG: u32 = 7;
    /// A transient condition (the switch is restarting, say); the runtime should retry.
    pub const TRY_AGAIN: u32 = 11;
    /// The switch is not reachable: the plugin cannot serve ADD.
    pub const NOT_AVAILABLE: u32 = 50;
    /// The switch refused or failed a request; the details carry its error.
    pub const SWITCH_REFUSED: u32 = 100;
    /// The IPAM plugin could not be run, or its answer was unusable.
    pub const IPAM_FAILED: u32 = 101;
    /// A kernel operation of the plugin itself failed (routes, reading the namespace).
    pub const KERNEL: u32 = 102;
    /// CHECK found the attachment different from what ADD created.
    pub const CHECK_FAILED: u32 = 103;
    /// The attachment already exists (ADD twice without DEL).
    pub const ALREADY_ATTACHED: u32 = 104;
}

/// A CNI spec version, `major.minor.patch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version(pub u8, pub u8, pub u8);

impl Version {
    /// Whether this plugin accepts configurations of this version.
    pub fn is_supported(self) -> bool {
        SUPPORTED_VERSIONS.contains(&self)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

impl FromStr for Version {
    type Err = String;
    fn from_str(s: &str) -> Result<Version, String> {
        let parts: Vec<&str> = s.split('.').collect();
        let bad = || format!("{s:?} is not a version (major.minor.patch)");
        if parts.len() != 3 {
            return Err(bad());
        }
        let n = |p: &str| p.parse::<u8>().map_err(|_| bad());
        Ok(Version(n(parts[0])?, n(parts[1])?, n(parts[2])?))
    }
}

/// A CNI error: `{"cniVersion", "code", "msg", "details"}` on stdout, non-zero exit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{msg}{}", if details.is_empty() { String::new() } else { format!(": {details}") })]
pub struct CniError {
    /// Well-known (< 100) or podswitch's (≥ 100) code, see [`code`].
    pub code: u32,
    /// Short summary.
    pub msg: String,
    /// Longer explanation; names the field or variable at fault.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniError {
    /// An error with a code, summary and details.
    pub fn new(code: u32, msg: impl Into<String>, details: impl Into<String>) -> CniError {
        CniError { code, msg: msg.into(), details: details.into() }
    }

    /// The error object as the spec prints it, for a configuration of `version`.
    pub fn to_json(&self, version: Version) -> String {
        let mut v = serde_json::json!({
            "cniVersion": version.to_string(),
            "code": self.code,
            "msg": self.msg,
        });
        if !self.details.is_empty() {
            v["details"] = self.details.clone().into();
        }
        v.to_string()
    }
}

/// `CNI_COMMAND`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Attach a container.
    Add,
    /// Detach it; idempotent.
    Del,
    /// Verify an attachment.
    Check,
    /// Report supported versions.
    Version,
    /// Is the plugin ready for ADD?
    Status,
    /// Remove attachments not in the valid list.
    Gc,
}

impl Command {
    fn parse(s: &str) -> Option<Command> {
        Some(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            _ => return None,
        })
    }
}

/// The parameters a runtime passes in the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Env {
    /// `CNI_COMMAND`.
    pub command: Command,
    /// `CNI_CONTAINERID`, validated when present.
    pub container_id: Option<String>,
    /// `CNI_NETNS` (empty counts as absent: DEL may get it empty).
    pub netns: Option<String>,
    /// `CNI_IFNAME`, validated when present.
    pub ifname: Option<String>,
    /// `CNI_ARGS`, passed on to delegates as is.
    pub args: Option<String>,
    /// `CNI_PATH`, split on `:`.
    pub path: Vec<PathBuf>,
}

fn invalid_env(var: &str, why: impl fmt::Display) -> CniError {
    CniError::new(code::INVALID_ENV, format!("invalid {var}"), format!("{var}: {why}"))
}

impl Env {
    /// Reads the `CNI_*` variables through `get` and checks the ones `CNI_COMMAND` requires.
    pub fn from_vars(get: &dyn Fn(&str) -> Option<String>) -> Result<Env, CniError> {
        let nonempty = |k: &str| get(k).filter(|v| !v.is_empty());
        let command = match nonempty("CNI_COMMAND") {
            None => return Err(invalid_env("CNI_COMMAND", "not set")),
            Some(c) => Command::parse(&c).ok_or_else(|| {
                invalid_env(
                    "CNI_COMMAND",
                    format!("{c:?} is not one of ADD, DEL, CHECK, VERSION, STATUS, GC"),
                )
            })?,
        };
        let env = Env {
            command,
            container_id: nonempty("CNI_CONTAINERID"),
            netns: nonempty("CNI_NETNS"),
            ifname: nonempty("CNI_IFNAME"),
            args: nonempty("CNI_ARGS"),
            path: nonempty("CNI_PATH")
                .map(|p| p.split(':').filter(|s| !s.is_empty()).map(PathBuf::from).collect())
                .unwrap_or_default(),
        };
        let (id, netns, ifname) = match command {
            Command::Add | Command::Check => (true, true, true),
            Command::Del => (true, false, true),
            Command::Version | Command::Status | Command::Gc => (false, false, false),
        };
        if id && env.container_id.is_none() {
            return Err(invalid_env("CNI_CONTAINERID", "not set"));
        }
        if netns && env.netns.is_none() {
            return Err(invalid_env("CNI_NETNS", "not set"));
        }
        if ifname && env.ifname.is_none() {
            return Err(invalid_env("CNI_IFNAME", "not set"));
        }
        if let Some(c) = &env.container_id {
            validate_container_id(c).map_err(|e| invalid_env("CNI_CONTAINERID", e))?;
        }
        if let Some(i) = &env.ifname {
            validate_ifname(i).map_err(|e| invalid_env("CNI_IFNAME", e))?;
        }
        if let Some(n) = &env.netns {
            if !n.starts_with('/') {
                return Err(invalid_env("CNI_NETNS", format!("{n:?} is not an absolute path")));
            }
        }
        Ok(env)
    }

    /// The container id (checked present for the commands that need it).
    pub fn container_id(&self) -> &str {
        self.container_id.as_deref().unwrap_or_default()
    }

    /// The interface name (checked present for the commands that need it).
    pub fn ifname(&self) -> &str {
        self.ifname.as_deref().unwrap_or_default()
    }
}

/// The spec's rule for container ids: non-empty, alphanumerics, `_`, `.` and `-`.
pub fn validate_container_id(id: &str) -> Result<(), String> {
    if !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b)) {
        Ok(())
    } else {
        Err(format!("{id:?}: use only letters, digits, '_', '.' and '-'"))
    }
}

/// The spec's rule for interface names: at most 15 bytes, not `.` or `..`, no `/`, `:` or
/// whitespace.
pub fn validate_ifname(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && !name.bytes().any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace());
    if ok {
        Ok(())
    } else {
        Err(format!("{name:?}: 1-15 bytes, not '.' or '..', without '/', ':' or whitespace"))
    }
}

/// An interface in a result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Interface {
    /// Its name.
    pub name: String,
    /// Its MAC.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    /// Its MTU (1.1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// The namespace path it lives in; empty for host interfaces.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sandbox: String,
    /// vhost-user socket (1.1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket_path: Option<String>,
    /// PCI address (1.1.0).
    #[serde(default, rename = "pciID", skip_serializing_if = "Option::is_none")]
    pub pci_id: Option<String>,
}

/// An address in a result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// `A.B.C.D/LEN` (or IPv6 from other plugins).
    pub address: String,
    /// The default gateway of that subnet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Index into `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

/// A route in a result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// Destination `A.B.C.D/LEN`.
    pub dst: String,
    /// Next hop; absent means the interface's default gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<String>,
    /// Route MTU (1.1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Advertised MSS (1.1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advmss: Option<u32>,
    /// Route priority (1.1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    /// Routing table (1.1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<u32>,
    /// Route scope (1.1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<u32>,
}

/// DNS settings, in configurations and results.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dns {
    /// Name servers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    /// Local domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Search domains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    /// Resolver options.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    /// Nothing set.
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty()
            && self.domain.is_none()
            && self.search.is_empty()
            && self.options.is_empty()
    }
}

/// The result of ADD (and the `prevResult` of CHECK, DEL and chained plugins).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CniResult {
    /// Version of the result's format.
    pub cni_version: String,
    /// Interfaces created.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    /// Addresses assigned.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig>,
    /// Routes installed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    /// DNS settings.
    #[serde(default, skip_serializing_if = "Dns::is_empty")]
    pub dns: Dns,
}

impl CniResult {
    /// The result in the format of `version`: fields a 1.0.0 reader does not know are left
    /// out.
    pub fn for_version(mut self, version: Version) -> CniResult {
        self.cni_version = version.to_string();
        if version < Version(1, 1, 0) {
            for i in &mut self.interfaces {
                i.mtu = None;
                i.socket_path = None;
                i.pci_id = None;
            }
            for r in &mut self.routes {
                r.mtu = None;
                r.advmss = None;
                r.priority = None;
                r.table = None;
                r.scope = None;
            }
        }
        self
    }
}

/// The answer to VERSION.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionInfo {
    /// Version of this answer's format.
    pub cni_version: String,
    /// Every version the plugin speaks.
    pub supported_versions: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: Vec<(String, String)> =
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| map.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone())
    }

    #[test]
    fn versions_parse_and_order() {
        assert_eq!("1.1.0".parse::<Version>().unwrap(), Version(1, 1, 0));
        assert!(Version(0, 4, 0) < Version(1, 0, 0));
        assert!("1.1".parse::<Version>().is_err());
        assert!("one.two.three".parse::<Version>().is_err());
        assert!(Version(1, 0, 0).is_supported() && !Version(0, 4, 0).is_supported());
    }

    #[test]
    fn env_requires_what_each_command_needs() {
        let e = Env::from_vars(&vars(&[])).unwrap_err();
        assert_eq!(e.code, code::INVALID_ENV);
        assert!(e.details.contains("CNI_COMMAND"), "{e}");
        let e = Env::from_vars(&vars(&[("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "c1")]))
            .unwrap_err();
        assert!(e.details.contains("CNI_NETNS"), "{e}");
        let e = Env::from_vars(&vars(&[("CNI_COMMAND", "LAUNCH")])).unwrap_err();
        assert!(e.details.contains("LAUNCH"), "{e}");
        let del = Env::from_vars(&vars(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", ""),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/opt/cni/bin::/usr/lib/cni"),
        ]))
        .unwrap();
        assert_eq!(del.netns, None);
        assert_eq!(del.path, vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")]);
        let e = Env::from_vars(&vars(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "c/1"),
            ("CNI_IFNAME", "eth0"),
        ]))
        .unwrap_err();
        assert!(e.details.starts_with("CNI_CONTAINERID"), "{e}");
        let e = Env::from_vars(&vars(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_IFNAME", "a-name-much-too-long"),
        ]))
        .unwrap_err();
        assert!(e.details.starts_with("CNI_IFNAME"), "{e}");
        assert!(Env::from_vars(&vars(&[("CNI_COMMAND", "GC")])).is_ok());
    }

    #[test]
    fn errors_and_results_have_the_spec_shape() {
        let e = CniError::new(code::INVALID_CONFIG, "invalid network config", "mtu: too big");
        let v: serde_json::Value = serde_json::from_str(&e.to_json(LATEST)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"cniVersion":"1.1.0","code":7,"msg":"invalid network config","details":"mtu: too big"})
        );
        let r = CniResult {
            cni_version: "1.1.0".into(),
            interfaces: vec![Interface {
                name: "eth0".into(),
                mac: "0a:58:0a:f4:01:05".into(),
                mtu: Some(1500),
                sandbox: "/run/netns/a".into(),
                ..Interface::default()
            }],
            ips: vec![IpConfig {
                address: "10.244.1.5/24".into(),
                gateway: Some("10.244.1.1".into()),
                interface: Some(0),
            }],
            routes: vec![Route {
                dst: "0.0.0.0/0".into(),
                gw: Some("10.244.1.1".into()),
                ..Route::default()
            }],
            dns: Dns::default(),
        };
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(
            s,
            r#"{"cniVersion":"1.1.0","interfaces":[{"name":"eth0","mac":"0a:58:0a:f4:01:05","mtu":1500,"sandbox":"/run/netns/a"}],"ips":[{"address":"10.244.1.5/24","gateway":"10.244.1.1","interface":0}],"routes":[{"dst":"0.0.0.0/0","gw":"10.244.1.1"}]}"#
        );
        let old = serde_json::to_string(&r.for_version(Version(1, 0, 0))).unwrap();
        assert!(old.starts_with(r#"{"cniVersion":"1.0.0""#) && !old.contains("mtu"), "{old}");
    }
}
