//! The Service spec as the API and the config carry it ([`ServiceSpec`], [`Endpoint`],
//! [`ServiceKey`], [`L4Proto`], [`Algorithm`]), its limits, its validation, and the typed
//! error every check and edit returns ([`ServiceError`]). Pure data: no table, no lookup
//! state. It is here, not in the switch, because the protocol's requests and replies carry
//! it; the dataplane's Service table (`vswitch::tables::services`, which re-exports this
//! module as its `spec`) is built from validated specs and owns the checks that need the
//! whole table (clashes between Services, the table's size).

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::cidr::Ipv4Cidr;

/// Most endpoints one service may have.
pub const MAX_ENDPOINTS: usize = 1024;

/// Ports a Service's `node_port` may take (Kubernetes' default `--service-node-port-range`;
/// outside the kernel's ephemeral range, so the node's own connections never collide).
pub const NODE_PORT_RANGE: std::ops::RangeInclusive<u16> = 30_000..=32_767;

/// Longest ClientIP session affinity timeout accepted (a day, as Kubernetes allows).
pub const MAX_AFFINITY_SECS: u32 = 86_400;

/// A spec or an edit that is not acceptable: which field, what kind of problem, and why.
/// Kept typed from the table to the API, where it becomes an error naming `args.<field>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ServiceError {
    /// The field (`name`, `vip`, `endpoints[2].port`, `services[4].namespace`).
    pub field: String,
    /// What kind of problem it is.
    pub kind: ServiceErrorKind,
    /// What is wrong.
    pub reason: String,
}

/// The kinds of [`ServiceError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceErrorKind {
    /// The value is not acceptable on its own (a bad label, port 0, a VIP outside the
    /// Service CIDR).
    Invalid,
    /// The value collides with another Service (its key, node port or VIP).
    Conflict,
    /// The Service (or its port) named by the edit does not exist.
    NotFound,
    /// The table is at `max_services`.
    Full,
}

fn err(field: impl Into<String>, reason: impl Into<String>) -> ServiceError {
    ServiceError::invalid(field, reason)
}

impl ServiceError {
    /// A [`ServiceErrorKind::Invalid`] error for `field`.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ServiceError {
        ServiceError { field: field.into(), kind: ServiceErrorKind::Invalid, reason: reason.into() }
    }

    /// A [`ServiceErrorKind::Conflict`] error for `field`.
    pub fn conflict(field: impl Into<String>, reason: impl Into<String>) -> ServiceError {
        ServiceError {
            field: field.into(),
            kind: ServiceErrorKind::Conflict,
            reason: reason.into(),
        }
    }

    /// A [`ServiceErrorKind::NotFound`] error for `field`.
    pub fn not_found(field: impl Into<String>, reason: impl Into<String>) -> ServiceError {
        ServiceError {
            field: field.into(),
            kind: ServiceErrorKind::NotFound,
            reason: reason.into(),
        }
    }

    /// The same error for the spec at `services[i]`.
    pub fn in_list(self, i: usize) -> ServiceError {
        ServiceError { field: format!("services[{i}].{}", self.field), ..self }
    }
}

/// The transport protocol of a Service port.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum L4Proto {
    /// TCP (the default, as in Kubernetes).
    #[default]
    Tcp,
    /// UDP.
    Udp,
}

impl L4Proto {
    /// The IP protocol number (6 or 17).
    pub fn number(self) -> u8 {
        match self {
            L4Proto::Tcp => 6,
            L4Proto::Udp => 17,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            L4Proto::Tcp => "tcp",
            L4Proto::Udp => "udp",
        }
    }
}

impl fmt::Display for L4Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for L4Proto {
    type Err = ServiceError;
    /// `tcp` or `udp`, in any case (Kubernetes writes `TCP`).
    fn from_str(s: &str) -> Result<Self, ServiceError> {
        if s.eq_ignore_ascii_case("tcp") {
            Ok(L4Proto::Tcp)
        } else if s.eq_ignore_ascii_case("udp") {
            Ok(L4Proto::Udp)
        } else {
            Err(err("proto", format!("{s:?} is not tcp or udp")))
        }
    }
}

/// What a Service is reached at: VIP, port and protocol. Written `10.96.0.20:80/tcp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    /// The virtual IP.
    pub vip: Ipv4Addr,
    /// The Service port.
    pub port: u16,
    /// The protocol.
    pub proto: L4Proto,
}

const _: () = assert!(std::mem::size_of::<ServiceKey>() == 8);

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}/{}", self.vip, self.port, self.proto)
    }
}

impl FromStr for ServiceKey {
    type Err = ServiceError;
    /// `IP:PORT/PROTO`, the protocol optional (default tcp): `10.96.0.20:80/tcp`,
    /// `10.96.0.10:53/udp`, `10.96.0.20:80`.
    fn from_str(s: &str) -> Result<Self, ServiceError> {
        let (addr, proto) = match s.split_once('/') {
            Some((a, p)) => (a, p.parse()?),
            None => (s, L4Proto::Tcp),
        };
        let (vip, port) = addr
            .split_once(':')
            .ok_or_else(|| err("key", format!("{s:?} is not IP:PORT[/PROTO]")))?;
        let vip = vip.parse().map_err(|_| err("vip", format!("{vip:?} is not an IPv4 address")))?;
        let port =
            port.parse().map_err(|_| err("port", format!("{port:?} is not a port number")))?;
        Ok(ServiceKey { vip, port, proto })
    }
}

fn yes() -> bool {
    true
}
fn one() -> u16 {
    1
}

/// One backend of a Service (a pod address and its target port).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// The pod's address.
    pub ip: Ipv4Addr,
    /// The target port.
    pub port: u16,
    /// Passes its readiness probe (default true).
    #[serde(default = "yes")]
    pub ready: bool,
    /// Shutting down (default false): no new flows, existing ones continue.
    #[serde(default)]
    pub terminating: bool,
    /// Relative share of new flows, at least 1 (default 1).
    #[serde(default = "one")]
    pub weight: u16,
}

impl Endpoint {
    /// A ready endpoint of weight 1.
    pub fn new(ip: Ipv4Addr, port: u16) -> Endpoint {
        Endpoint { ip, port, ready: true, terminating: false, weight: 1 }
    }

    /// May receive new flows: ready and not terminating.
    pub fn is_eligible(&self) -> bool {
        self.ready && !self.terminating
    }

    /// `(ip, port)` packed into one word: the endpoint's identity (Maglev hashes it).
    pub fn id(&self) -> u64 {
        endpoint_id(self.ip, self.port)
    }
}

/// `(ip, port)` packed into one word, as [`Endpoint::id`].
pub fn endpoint_id(ip: Ipv4Addr, port: u16) -> u64 {
    u64::from(u32::from(ip)) << 16 | u64::from(port)
}

/// How a Service picks an endpoint for a new flow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// Weighted choice driven by the flow hash.
    Random,
    /// Weighted rotation: an endpoint of weight `w` gets `w` consecutive new flows.
    RoundRobin,
    /// Maglev consistent hashing of the flow hash (the default).
    #[default]
    Maglev,
}

impl FromStr for Algorithm {
    type Err = ServiceError;
    /// `random`, `round-robin` (or `round_robin`), `maglev`.
    fn from_str(s: &str) -> Result<Self, ServiceError> {
        match s {
            "random" => Ok(Algorithm::Random),
            "round-robin" | "round_robin" => Ok(Algorithm::RoundRobin),
            "maglev" => Ok(Algorithm::Maglev),
            _ => Err(err("algorithm", format!("{s:?} is not random, round-robin or maglev"))),
        }
    }
}

/// A Service as the API and config carry it (flat JSON):
///
/// ```json
/// {"name":"web","namespace":"default","vip":"10.96.0.20","port":80,"proto":"tcp",
///  "endpoints":[{"ip":"10.244.1.2","port":8080}],"algorithm":"maglev"}
/// ```
///
/// `proto` defaults to `tcp`, `algorithm` to `maglev`, `session_affinity_secs` to none;
/// endpoints default to ready, not terminating, weight 1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    /// The Service's name (a DNS-1123 label).
    pub name: String,
    /// Its namespace (a DNS-1123 label).
    pub namespace: String,
    /// Its virtual IP, inside the cluster's service CIDR.
    pub vip: Ipv4Addr,
    /// Its port.
    pub port: u16,
    /// Its protocol.
    #[serde(default)]
    pub proto: L4Proto,
    /// Its backends, at most [`MAX_ENDPOINTS`].
    pub endpoints: Vec<Endpoint>,
    /// How new flows pick an endpoint.
    #[serde(default)]
    pub algorithm: Algorithm,
    /// ClientIP affinity timeout in seconds (1 to [`MAX_AFFINITY_SECS`]); none = no
    /// affinity. The caller keeps the stickiness.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_affinity_secs: Option<u32>,
    /// NodePort: connections to the node's address on this port (same protocol) are
    /// load-balanced like the VIP's. In [`NODE_PORT_RANGE`], unique per protocol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_port: Option<u16>,
}

/// Checks a DNS-1123 label: 1 to 63 lowercase letters, digits and '-', not starting or ending
/// with '-'.
fn check_label(field: &str, s: &str) -> Result<(), ServiceError> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(err(
            field,
            format!(
                "{s:?} is not a DNS-1123 label (1 to 63 lowercase letters, digits and '-', \
                 not starting or ending with '-')"
            ),
        ))
    }
}

/// Checks a list of endpoints (field names `endpoints[i].x`): at most [`MAX_ENDPOINTS`],
/// unicast addresses, non-zero ports and weights, no endpoint twice.
pub fn check_endpoints(endpoints: &[Endpoint]) -> Result<(), ServiceError> {
    if endpoints.len() > MAX_ENDPOINTS {
        return Err(err(
            "endpoints",
            format!("{} endpoints, at most {MAX_ENDPOINTS} allowed", endpoints.len()),
        ));
    }
    for (i, e) in endpoints.iter().enumerate() {
        let ip = e.ip;
        if ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() || ip.is_loopback() {
            return Err(err(
                format!("endpoints[{i}].ip"),
                format!("{ip} is not a unicast address"),
            ));
        }
        if e.port == 0 {
            return Err(err(format!("endpoints[{i}].port"), "must not be 0"));
        }
        if e.weight == 0 {
            return Err(err(format!("endpoints[{i}].weight"), "must be at least 1"));
        }
    }
    let mut ids: Vec<(u64, usize)> =
        endpoints.iter().enumerate().map(|(i, e)| (e.id(), i)).collect();
    ids.sort_unstable();
    if let Some(w) = ids.windows(2).find(|w| w[0].0 == w[1].0) {
        let e = endpoints[w[1].1];
        return Err(err(
            format!("endpoints[{}]", w[1].1),
            format!("{}:{} repeats endpoints[{}]", e.ip, e.port, w[0].1),
        ));
    }
    Ok(())
}

impl ServiceSpec {
    /// Where the Service is reached.
    pub fn key(&self) -> ServiceKey {
        ServiceKey { vip: self.vip, port: self.port, proto: self.proto }
    }

    /// Checks every field; the error names the first one wrong.
    pub fn validate(&self, service_cidr: Ipv4Cidr) -> Result<(), ServiceError> {
        check_label("name", &self.name)?;
        check_label("namespace", &self.namespace)?;
        if !service_cidr.contains(self.vip) {
            return Err(err(
                "vip",
                format!("{} is outside the service CIDR {service_cidr}", self.vip),
            ));
        }
        if self.port == 0 {
            return Err(err("port", "must not be 0"));
        }
        check_endpoints(&self.endpoints)?;
        if let Some(s) = self.session_affinity_secs {
            if s == 0 || s > MAX_AFFINITY_SECS {
                return Err(err(
                    "session_affinity_secs",
                    format!("{s} is not from 1 to {MAX_AFFINITY_SECS}"),
                ));
            }
        }
        if let Some(p) = self.node_port {
            if !NODE_PORT_RANGE.contains(&p) {
                return Err(err(
                    "node_port",
                    format!(
                        "{p} is not from {} to {}",
                        NODE_PORT_RANGE.start(),
                        NODE_PORT_RANGE.end()
                    ),
                ));
            }
        }
        Ok(())
    }
}
