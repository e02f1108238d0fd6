//! The network configuration a runtime writes to the plugin's stdin: decoded, checked field
//! by field, and kept whole as JSON for the IPAM plugin, which receives the same
//! configuration.
//!
//! Unknown top-level fields are refused with the spec's code 2 (naming the key and value),
//! so a misspelt `"sockt"` does not silently fall back to a default; known fields with bad
//! values get code 7 with the field's dotted path. The keys of `ipam` other than `type`
//! belong to the IPAM plugin and are not looked at.

use std::path::PathBuf;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::spec::{code, CniError, CniResult, Dns, Version, LATEST, SUPPORTED_VERSIONS};

/// Where the switch listens unless `socket` says otherwise.
pub const DEFAULT_SOCKET: &str = podswitch_api::limits::DEFAULT_SOCKET;

/// Smallest and largest MTU the switch accepts.
pub const MTU_RANGE: std::ops::RangeInclusive<u32> =
    podswitch_api::limits::MIN_MTU..=podswitch_api::limits::MAX_MTU;

/// Top-level keys: the spec's, then podswitch's.
const KNOWN_KEYS: [&str; 13] = [
    "cniVersion",
    "name",
    "type",
    "args",
    "runtimeConfig",
    "capabilities",
    "prevResult",
    "cni.dev/valid-attachments",
    "ipam",
    "dns",
    "socket",
    "portType",
    "mtu",
];

/// The kind of device the switch gives a pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortType {
    /// A TAP device (the switch reads and writes frames through its file descriptor).
    Tap,
    /// A veth pair whose host end the switch drives through an AF_XDP socket.
    AfXdp,
}

/// A `{containerID, ifname}` pair of `cni.dev/valid-attachments`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attachment {
    /// The container.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// Its interface.
    pub ifname: String,
}

/// The `ipam` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpamConf {
    /// The IPAM plugin's binary name, looked up in `CNI_PATH`.
    pub plugin_type: String,
}

/// A checked network configuration.
#[derive(Debug, Clone)]
pub struct NetConf {
    /// `cniVersion`; one of [`SUPPORTED_VERSIONS`].
    pub cni_version: Version,
    /// `name` of the network.
    pub name: String,
    /// `socket`: the switch's control socket.
    pub socket: PathBuf,
    /// `portType`.
    pub port_type: PortType,
    /// `mtu` of the pod interface; the switch's when absent.
    pub mtu: Option<u32>,
    /// `ipam`: the plugin that hands out addresses; the switch's own allocator when absent.
    pub ipam: Option<IpamConf>,
    /// `dns`, returned in the result.
    pub dns: Dns,
    /// `prevResult`.
    pub prev_result: Option<CniResult>,
    /// `cni.dev/valid-attachments` (GC).
    pub valid_attachments: Option<Vec<Attachment>>,
    /// The configuration as received, for delegates.
    pub raw: Map<String, Value>,
}

#[derive(Deserialize)]
struct Fields {
    name: Option<String>,
    #[serde(rename = "type")]
    plugin_type: Option<String>,
    socket: Option<String>,
    #[serde(rename = "portType")]
    port_type: Option<String>,
    mtu: Option<u32>,
    ipam: Option<IpamFields>,
    dns: Option<Dns>,
    #[serde(rename = "prevResult")]
    prev_result: Option<CniResult>,
    #[serde(rename = "cni.dev/valid-attachments")]
    valid_attachments: Option<Vec<Attachment>>,
}

#[derive(Deserialize)]
struct IpamFields {
    #[serde(rename = "type")]
    plugin_type: Option<String>,
}

/// An invalid-configuration error naming `field`.
pub fn invalid(field: &str, why: impl std::fmt::Display) -> CniError {
    CniError::new(code::INVALID_CONFIG, "invalid network config", format!("{field}: {why}"))
}

/// Decodes stdin into a JSON object (code 6 when it is not one).
pub fn decode_object(stdin: &[u8]) -> Result<Map<String, Value>, CniError> {
    let decode =
        |why: String| CniError::new(code::DECODE, "cannot decode the network configuration", why);
    match serde_json::from_slice::<Value>(stdin) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(decode(format!("expected a JSON object, got {other}"))),
        Err(e) => Err(decode(format!("stdin is not JSON: {e}"))),
    }
}

/// The `cniVersion` of a decoded configuration, checked against [`SUPPORTED_VERSIONS`].
pub fn version_of(raw: &Map<String, Value>) -> Result<Version, CniError> {
    let s = match raw.get("cniVersion") {
        None => return Err(invalid("cniVersion", "missing")),
        Some(Value::String(s)) => s,
        Some(other) => {
            return Err(invalid("cniVersion", format!("expected a string, got {other}")))
        }
    };
    let v: Version = s.parse().map_err(|e| invalid("cniVersion", e))?;
    if !v.is_supported() {
        let list: Vec<String> = SUPPORTED_VERSIONS.iter().map(Version::to_string).collect();
        return Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            "incompatible CNI version",
            format!("cniVersion {v} is not supported; podswitch-cni speaks {}", list.join(", ")),
        ));
    }
    Ok(v)
}

impl NetConf {
    /// Decodes and checks stdin.
    pub fn parse(stdin: &[u8]) -> Result<NetConf, CniError> {
        let raw = decode_object(stdin)?;
        let cni_version = version_of(&raw)?;
        for (k, v) in &raw {
            if !KNOWN_KEYS.contains(&k.as_str()) {
                return Err(CniError::new(
                    code::UNSUPPORTED_FIELD,
                    "unsupported field in network config",
                    format!("{k}: {v} (podswitch-cni knows {})", KNOWN_KEYS.join(", ")),
                ));
            }
        }
        let f: Fields =
            serde_path_to_error::deserialize(Value::Object(raw.clone())).map_err(|e| {
                let path = e.path().to_string();
                invalid(&path, e.into_inner())
            })?;
        let name = f.name.ok_or_else(|| invalid("name", "missing"))?;
        if name.is_empty()
            || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        {
            return Err(invalid("name", format!("{name:?}: use letters, digits, '_', '.', '-'")));
        }
        if f.plugin_type.as_deref().is_none_or(str::is_empty) {
            return Err(invalid("type", "missing"));
        }
        let socket = PathBuf::from(f.socket.unwrap_or_else(|| DEFAULT_SOCKET.to_string()));
        if !socket.is_absolute() {
            return Err(invalid("socket", format!("{} is not an absolute path", socket.display())));
        }
        let port_type = match f.port_type.as_deref() {
            None | Some("tap") => PortType::Tap,
            Some("af_xdp" | "afxdp") => PortType::AfXdp,
            Some(other) => {
                return Err(invalid(
                    "portType",
                    format!("{other:?}: expected \"tap\" or \"af_xdp\""),
                ));
            }
        };
        if let Some(m) = f.mtu {
            if !MTU_RANGE.contains(&m) {
                return Err(invalid(
                    "mtu",
                    format!("{m}: must be from {} to {}", MTU_RANGE.start(), MTU_RANGE.end()),
                ));
            }
        }
        let ipam = match f.ipam {
            None => None,
            Some(i) => {
                let t = i.plugin_type.ok_or_else(|| invalid("ipam.type", "missing"))?;
                if t.is_empty() || t.contains('/') || t == "." || t == ".." {
                    return Err(invalid("ipam.type", format!("{t:?} is not a plugin name")));
                }
                Some(IpamConf { plugin_type: t })
            }
        };
        if let Some(atts) = &f.valid_attachments {
            for (i, a) in atts.iter().enumerate() {
                crate::spec::validate_container_id(&a.container_id).map_err(|e| {
                    invalid(&format!("cni.dev/valid-attachments[{i}].containerID"), e)
                })?;
            }
        }
        Ok(NetConf {
            cni_version,
            name,
            socket,
            port_type,
            mtu: f.mtu,
            ipam,
            dns: f.dns.unwrap_or_default(),
            prev_result: f.prev_result,
            valid_attachments: f.valid_attachments,
            raw,
        })
    }
}

/// The version to answer in when a configuration could not be read: the configuration's own
/// if it names a supported one, else [`LATEST`].
pub fn reply_version(stdin: &[u8]) -> Version {
    decode_object(stdin).ok().and_then(|m| version_of(&m).ok()).unwrap_or(LATEST)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<NetConf, CniError> {
        NetConf::parse(s.as_bytes())
    }

    #[test]
    fn a_full_config_parses() {
        let c = parse(
            r#"{"cniVersion":"1.1.0","name":"pods","type":"podswitch-cni","socket":"/tmp/s.sock",
                "portType":"tap","mtu":1400,"ipam":{"type":"host-local","ranges":[]},
                "dns":{"nameservers":["10.96.0.10"]},"runtimeConfig":{},"args":{}}"#,
        )
        .unwrap();
        assert_eq!(c.cni_version, Version(1, 1, 0));
        assert_eq!(c.socket, PathBuf::from("/tmp/s.sock"));
        assert_eq!(c.mtu, Some(1400));
        assert_eq!(c.ipam.unwrap().plugin_type, "host-local");
        assert_eq!(c.dns.nameservers, vec!["10.96.0.10"]);
        let d = parse(r#"{"cniVersion":"1.0.0","name":"pods","type":"podswitch-cni"}"#).unwrap();
        assert_eq!(d.socket, PathBuf::from(DEFAULT_SOCKET));
        assert!(d.ipam.is_none());
        assert_eq!(d.port_type, PortType::Tap);
        let x = parse(
            r#"{"cniVersion":"1.1.0","name":"pods","type":"podswitch-cni","portType":"af_xdp"}"#,
        )
        .unwrap();
        assert_eq!(x.port_type, PortType::AfXdp);
    }

    #[test]
    fn errors_carry_the_spec_code_and_name_the_field() {
        let base = r#""cniVersion":"1.1.0","name":"pods","type":"podswitch-cni""#;
        let cases: [(String, u32, &str); 11] = [
            ("not json".into(), code::DECODE, "JSON"),
            ("[1]".into(), code::DECODE, "object"),
            (r#"{"name":"x","type":"t"}"#.into(), code::INVALID_CONFIG, "cniVersion"),
            (
                r#"{"cniVersion":"0.4.0","name":"x","type":"t"}"#.into(),
                code::INCOMPATIBLE_VERSION,
                "0.4.0",
            ),
            (format!(r#"{{{base},"sockt":"/x"}}"#), code::UNSUPPORTED_FIELD, "sockt"),
            (format!(r#"{{{base},"mtu":"big"}}"#), code::INVALID_CONFIG, "mtu"),
            (format!(r#"{{{base},"mtu":20}}"#), code::INVALID_CONFIG, "mtu"),
            (format!(r#"{{{base},"socket":"rel.sock"}}"#), code::INVALID_CONFIG, "socket"),
            (format!(r#"{{{base},"portType":"veth"}}"#), code::INVALID_CONFIG, "portType"),
            (format!(r#"{{{base},"ipam":{{"ranges":[]}}}}"#), code::INVALID_CONFIG, "ipam.type"),
            (
                format!(r#"{{{base},"dns":{{"nameservers":"1.1.1.1"}}}}"#),
                code::INVALID_CONFIG,
                "dns.nameservers",
            ),
        ];
        for (input, want, mention) in cases {
            let e = parse(&input).unwrap_err();
            assert_eq!(e.code, want, "{input}: {e}");
            assert!(e.to_string().contains(mention), "{input}: {e}");
        }
        let e = parse(r#"{"cniVersion":"1.1.0","type":"t"}"#).unwrap_err();
        assert!(e.details.starts_with("name"), "{e}");
    }

    #[test]
    fn the_example_conflist_is_valid() {
        let list: Value =
            serde_json::from_str(include_str!("../../config/10-podswitch.conflist")).unwrap();
        let mut plugin = list["plugins"][0].clone();
        plugin["name"] = list["name"].clone();
        plugin["cniVersion"] = list["cniVersion"].clone();
        let c = NetConf::parse(plugin.to_string().as_bytes()).unwrap();
        assert_eq!(c.ipam.unwrap().plugin_type, "host-local");
        assert_eq!(c.socket, PathBuf::from(DEFAULT_SOCKET));
        assert_eq!(list["plugins"][0]["type"], "podswitch-cni");
    }

    #[test]
    fn reply_version_follows_the_config_when_it_can() {
        assert_eq!(reply_version(br#"{"cniVersion":"1.0.0"}"#), Version(1, 0, 0));
        assert_eq!(reply_version(br#"{"cniVersion":"0.1.0"}"#), LATEST);
        assert_eq!(reply_version(b"junk"), LATEST);
    }
}
