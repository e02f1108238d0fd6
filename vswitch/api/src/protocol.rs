//! The control API's types: one [`Request`] enum, one [`Reply`] enum, one [`ApiError`]. The
//! daemon, `podswitch ctl`, the CNI plugin and the tests all use these same types, so the
//! two sides cannot drift apart. The wire format is documented in `docs/control-api.md`.
//!
//! Framing: newline-delimited JSON over a Unix stream socket. A client writes one request
//! object per line and reads one response object per line; requests on one connection are
//! answered in order.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::cidr::{Ipv4Cidr, Ipv4IfAddr};
pub use crate::counters::{ConntrackCounters, FdbCounters, PortStatsReport};
pub use crate::limits::MAX_REQUEST_LEN;
use crate::mac::MacAddr;

/// Version of this API; bumped on incompatible changes.
pub const API_VERSION: u32 = 1;

/// A request. Serialized as `{"command": "<snake_case name>", "args": {...}}`; commands
/// without arguments may omit `args`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "command", content = "args", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Is the switch up, and what is it? Always allowed.
    Status,
    /// Creates a pod's interface in its namespace (a TAP device, or a veth pair driven
    /// through AF_XDP with `kind: afxdp`), configures it and attaches it. Refused when the
    /// name, address or MAC is taken, the namespace does not exist, the port limit is
    /// reached, or (`args.kind`) the kernel cannot do AF_XDP; a refused or failed add leaves
    /// nothing behind.
    PortAdd(PortAddArgs),
    /// Detaches a port and removes its device; the pod's interface disappears.
    PortDel(PortDelArgs),
    /// Lists the ports.
    PortList,
    /// Lists the MAC table.
    FdbList,
    /// Flushes the MAC table, or one port's entries.
    FdbFlush(FdbFlushArgs),
    /// Counters of every port and table.
    Stats,
    /// Adds an overlay peer (another node: its underlay address and pod CIDR), or replaces
    /// the one with the same name. Refused when no overlay is configured, when a field is
    /// invalid or clashes with another peer or this node, or when the peer table is full.
    PeerAdd(PeerAddArgs),
    /// Removes an overlay peer; traffic to its pods stops at once.
    PeerDel(PeerDelArgs),
    /// Lists the overlay peers.
    PeerList,
    /// Adds a Service, or replaces the one with the same namespace and name. Connections to
    /// endpoints that stay are kept.
    ServiceAdd(ServiceSpec),
    /// Removes a Service; its open connections are reset at their next packet.
    ServiceDel(ServiceRefArgs),
    /// Lists the Services.
    ServiceList,
    /// Replaces one Service's endpoints.
    EndpointSet(EndpointSetArgs),
    /// Replaces the whole Service table at once: every Service is validated first, and
    /// either all of them take effect in one step or none does.
    ServiceApply(ServiceApplyArgs),
    /// Lists tracked connections.
    ConntrackList(ConntrackListArgs),
    /// Forgets every tracked connection; their next packets are picked up as new ones (with
    /// Maglev, by the same endpoints while the Services are unchanged).
    ConntrackFlush,
    /// Size, limit and counters of the connection-tracking table.
    ConntrackStats,
}

pub use crate::service::{Algorithm, Endpoint, L4Proto, ServiceSpec};

/// A Service by namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceRefArgs {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

/// What a port is, as the API shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PortKind {
    /// A pod's TAP device, living in the pod's network namespace.
    Tap,
    /// The node's own TAP device carrying the gateway address.
    Host,
    /// An in-memory port (tests and benchmarks).
    Memory,
    /// The VXLAN overlay: a UDP socket on the node's underlay address.
    Overlay,
    /// A pod's veth pair whose host end the switch drives through an AF_XDP socket.
    Afxdp,
    /// The interface carrying the node's address, driven through AF_XDP behind the NodePort
    /// filter: only NodePort packets reach the switch.
    NodePort,
}

/// Arguments of [`Request::EndpointSet`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointSetArgs {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Which port of the Service (needed when it has several).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// That port's protocol (default tcp).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proto: Option<L4Proto>,
    /// The new endpoints (all of them).
    pub endpoints: Vec<Endpoint>,
}

/// Arguments of [`Request::ServiceApply`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceApplyArgs {
    /// Every Service the node should have.
    pub services: Vec<ServiceSpec>,
}

/// Arguments of [`Request::ConntrackList`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConntrackListArgs {
    /// Most entries returned (default 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// One tracked connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConntrackEntryInfo {
    /// `tcp` or `udp`.
    pub proto: String,
    /// The client, `ip:port`.
    pub client: String,
    /// The Service address it used, `ip:port`.
    pub service: String,
    /// The endpoint it was sent to, `ip:port`.
    pub endpoint: String,
    /// Connection state (`established`, `time_wait`, `udp`, `udp_assured`, ...).
    pub state: String,
    /// Seconds since the first packet.
    pub age_secs: f64,
    /// Seconds until it expires without traffic.
    pub expires_in_secs: f64,
    /// Packets client→endpoint and back.
    pub packets: [u64; 2],
}

/// The connection-tracking table's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConntrackStatsReply {
    /// Connections tracked.
    pub entries: u64,
    /// The limit.
    pub max_entries: u64,
    /// Memory one entry takes at capacity, bytes.
    pub bytes_per_entry: u64,
    /// Event counters.
    pub counters: ConntrackCounters,
}

/// Arguments of [`Request::PeerAdd`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerAddArgs {
    /// Peer name (a DNS-1123 subdomain, e.g. its node name).
    pub name: String,
    /// Its underlay address.
    pub ip: Ipv4Addr,
    /// Its pod CIDR.
    pub pod_cidr: Ipv4Cidr,
    /// Inner destination MAC for it (a Linux `vxlan` device's MAC). Default: the gateway
    /// MAC a podswitch node with that pod CIDR uses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vtep_mac: Option<MacAddr>,
}

/// Arguments of [`Request::PeerDel`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerDelArgs {
    /// The peer's name.
    pub name: String,
}

/// One overlay peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerInfo {
    /// Name.
    pub name: String,
    /// Underlay address.
    pub ip: Ipv4Addr,
    /// Pod CIDR.
    pub pod_cidr: Ipv4Cidr,
    /// Inner destination MAC used toward it.
    pub vtep_mac: MacAddr,
}

/// The overlay's settings, in `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverlayStatus {
    /// This node's underlay address.
    pub underlay_ip: Ipv4Addr,
    /// VNI.
    pub vni: u32,
    /// VXLAN UDP port.
    pub udp_port: u16,
    /// Underlay MTU.
    pub underlay_mtu: u32,
    /// Peers configured.
    pub peers: usize,
    /// Peer limit.
    pub max_peers: usize,
}

/// Arguments of [`Request::PortAdd`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortAddArgs {
    /// Unique port name (e.g. the pod or container id): 1-128 of `[A-Za-z0-9._:-]`.
    pub name: String,
    /// The pod's network namespace: a name under `/run/netns` or a path.
    pub netns: String,
    /// Address and prefix length; the prefix must be the pod CIDR's or 32. Default: the next
    /// free address of the pod CIDR, with its prefix length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<Ipv4IfAddr>,
    /// Interface MAC. Default: `0a:58` followed by the four address bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<MacAddr>,
    /// Interface name inside the pod. Default `eth0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ifname: Option<String>,
    /// Interface MTU. Default: the node's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// The device the pod gets. Default `tap` (left out of requests that do not set it, so
    /// older clients and switches understand each other).
    #[serde(default, skip_serializing_if = "PortAddKind::is_tap")]
    pub kind: PortAddKind,
    /// Port security (on by default): the pod may send only from its own MAC and address
    /// (and `allow_ips`); see docs/architecture.md. `false` turns every check off for this
    /// port, for a pod that must send as others (a bridge or a router in a pod).
    #[serde(default = "port_security_on", skip_serializing_if = "is_true")]
    pub port_security: bool,
    /// More IPv4 sources the pod may send from (and claim in ARP), for pods that route other
    /// addresses: at most 16 CIDRs, each once; only with port security on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_ips: Vec<Ipv4Cidr>,
}

fn port_security_on() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

/// What a pod port is built on (`port_add`'s `kind`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PortAddKind {
    /// A TAP device moved into the pod's namespace; the switch holds its fd (with TSO and
    /// checksum offloads).
    #[default]
    Tap,
    /// A veth pair: the pod end in the pod's namespace, the host end in the switch's,
    /// driven through an AF_XDP socket and an XDP redirect program.
    Afxdp,
}

impl PortAddKind {
    /// True for the default, [`PortAddKind::Tap`].
    pub fn is_tap(&self) -> bool {
        *self == PortAddKind::Tap
    }

    /// The name used in requests and on the command line.
    pub fn as_str(&self) -> &'static str {
        match self {
            PortAddKind::Tap => "tap",
            PortAddKind::Afxdp => "afxdp",
        }
    }
}

impl std::fmt::Display for PortAddKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for PortAddKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tap" => Ok(PortAddKind::Tap),
            "afxdp" => Ok(PortAddKind::Afxdp),
            other => Err(format!("unknown port kind {other:?}: expected tap or afxdp")),
        }
    }
}

/// Arguments of [`Request::PortDel`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortDelArgs {
    /// The port's name.
    pub name: String,
}

/// Arguments of [`Request::FdbFlush`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FdbFlushArgs {
    /// Only this port's entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<String>,
}

/// A response line: `{"ok": <Reply>}` or `{"error": <ApiError>}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Response {
    /// Success.
    Ok(Reply),
    /// Failure; nothing was changed unless the message says otherwise.
    Error(ApiError),
}

/// What a successful request returns; `{"type": "...", ...}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Reply {
    /// For `status`.
    Status(StatusReply),
    /// For `port_add` (the port as created) and `port_del` (the port as it was removed).
    Port(PortInfo),
    /// For `port_list`.
    Ports {
        /// Every port, host port first.
        ports: Vec<PortInfo>,
    },
    /// For `fdb_list`.
    Fdb(FdbReply),
    /// For `fdb_flush`.
    Flushed {
        /// Entries removed.
        removed: u64,
    },
    /// For `stats`.
    Stats(StatsReply),
    /// For `peer_add` (the peer as added) and `peer_del` (as it was removed).
    Peer(PeerInfo),
    /// For `peer_list`.
    Peers {
        /// Every peer, by name.
        peers: Vec<PeerInfo>,
    },
    /// For `service_add` (the Service as added) and `service_del` (as removed).
    Service(ServiceSpec),
    /// For `service_list`.
    Services {
        /// Every Service, by namespace and name.
        services: Vec<ServiceSpec>,
    },
    /// For `endpoint_set` and `service_apply`.
    Applied {
        /// Services in the table now.
        services: u64,
        /// Time the switch took to validate, build and swap in the change, µs.
        elapsed_us: u64,
    },
    /// For `conntrack_list`.
    Conntrack {
        /// The entries.
        entries: Vec<ConntrackEntryInfo>,
    },
    /// For `conntrack_stats`.
    ConntrackStats(ConntrackStatsReply),
}

/// The switch's identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusReply {
    /// API version.
    pub api_version: u32,
    /// podswitch version.
    pub version: String,
    /// Node name.
    pub node: String,
    /// Pod CIDR.
    pub pod_cidr: Ipv4Cidr,
    /// Gateway address.
    pub gateway: Ipv4Addr,
    /// Gateway MAC.
    pub gateway_mac: MacAddr,
    /// Default pod MTU.
    pub mtu: u32,
    /// Host port name, if enabled.
    pub host_port: Option<String>,
    /// Ports attached, host port included.
    pub ports: usize,
    /// Port limit.
    pub max_ports: usize,
    /// Seconds since start.
    pub uptime_secs: u64,
    /// Packet workers started.
    #[serde(default)]
    pub workers: usize,
    /// Workers whose thread has exited: their ports move no frames. Empty when healthy.
    #[serde(default)]
    pub workers_down: Vec<usize>,
    /// Bursts dropped because the pipeline panicked on them (a bug; see `worker_panic`).
    #[serde(default)]
    pub worker_panics: u64,
    /// The overlay, when configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlay: Option<OverlayStatus>,
}

/// One port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortInfo {
    /// Port name.
    pub name: String,
    /// Internal id (appears in traces).
    pub id: u16,
    /// Port kind.
    pub kind: PortKind,
    /// Namespace path the interface lives in (`null` for the host port: the switch's own).
    pub netns: Option<String>,
    /// Interface name.
    pub ifname: String,
    /// Interface MAC.
    pub mac: MacAddr,
    /// Interface address, if any.
    pub ip: Option<Ipv4IfAddr>,
    /// Interface MTU.
    pub mtu: u32,
    /// `up`, or `failed: <why>` when the device broke (its namespace was deleted, say).
    pub state: String,
    /// Frames from the port are checked against its MAC, address and `allow_ips` (pod ports
    /// unless added with port security off; never the host, overlay or NodePort ports).
    #[serde(default)]
    pub port_security: bool,
    /// More sources the pod may send from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_ips: Vec<Ipv4Cidr>,
}

/// The MAC table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FdbReply {
    /// Live entries.
    pub entries: Vec<FdbEntryInfo>,
    /// Entries present, counting expired ones not yet swept.
    pub size: u64,
    /// Limit.
    pub max_entries: u64,
    /// Aging time in seconds.
    pub aging_secs: u64,
    /// Event counters.
    pub counters: FdbCounters,
}

/// One MAC table entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FdbEntryInfo {
    /// The MAC.
    pub mac: MacAddr,
    /// VLAN id, 0 for untagged.
    pub vlan: u16,
    /// Port name.
    pub port: String,
    /// Seconds since last seen.
    pub age_secs: f64,
}

/// Counters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsReply {
    /// Per port.
    pub ports: Vec<PortStatsReport>,
    /// MAC table size.
    pub fdb_size: u64,
    /// MAC table events.
    pub fdb: FdbCounters,
    /// Neighbor table size.
    pub neighbors: u64,
}

/// What kind of failure an [`ApiError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request is malformed or a value is unacceptable; `field` names it.
    InvalidArgument,
    /// The named object does not exist.
    NotFound,
    /// The name, address or MAC is taken.
    AlreadyExists,
    /// A limit was reached (ports, addresses).
    ResourceExhausted,
    /// The switch could not do it (a kernel call failed); the message says which step.
    Failed,
    /// The switch is shutting down or its worker is not answering, or the control socket
    /// is at its connection limit with every connection busy.
    Unavailable,
    /// The client's user may not use the control socket (checked with `SO_PEERCRED`).
    PermissionDenied,
}

/// An error answer. `field` is the dotted path of the offending request field
/// (`args.ip`), when one is to blame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(deny_unknown_fields)]
#[error("{}{message}", field.as_ref().map(|f| format!("{f}: ")).unwrap_or_default())]
pub struct ApiError {
    /// Category.
    pub kind: ErrorKind,
    /// The offending field, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Human-readable explanation.
    pub message: String,
}

impl ApiError {
    /// An error about one field.
    pub fn field(kind: ErrorKind, field: &str, message: impl Into<String>) -> ApiError {
        ApiError { kind, field: Some(field.to_string()), message: message.into() }
    }

    /// An error not tied to a field.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> ApiError {
        ApiError { kind, field: None, message: message.into() }
    }
}

/// Parses one request line, naming the field on error (`args.mtu: invalid type: ...`).
pub fn parse_request(line: &str) -> Result<Request, ApiError> {
    let mut de = serde_json::Deserializer::from_str(line);
    let req: Request = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let msg = e.inner().to_string();
        // serde_json appends " at line L column C"; with one-line requests it is noise.
        let msg = match msg.rfind(" at line ") {
            Some(i) => msg[..i].to_string(),
            None => msg,
        };
        let field = if path == "." { None } else { Some(path) };
        ApiError { kind: ErrorKind::InvalidArgument, field, message: msg }
    })?;
    de.end().map_err(|_| {
        ApiError::new(ErrorKind::InvalidArgument, "trailing characters after the request")
    })?;
    Ok(req)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_in_the_documented_shape() {
        let r = Request::PortAdd(PortAddArgs {
            name: "pod-a".into(),
            netns: "pod-a".into(),
            ip: Some("10.244.1.5/24".parse().unwrap()),
            mac: None,
            ifname: None,
            mtu: Some(1400),
            kind: PortAddKind::Tap,
            port_security: true,
            allow_ips: Vec::new(),
        });
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(
            s,
            r#"{"command":"port_add","args":{"name":"pod-a","netns":"pod-a","ip":"10.244.1.5/24","mtu":1400}}"#
        );
        assert_eq!(parse_request(&s).unwrap(), r);
        let x = parse_request(
            r#"{"command":"port_add","args":{"name":"a","netns":"n","kind":"afxdp"}}"#,
        )
        .unwrap();
        let Request::PortAdd(args) = &x else { panic!("{x:?}") };
        assert_eq!(args.kind, PortAddKind::Afxdp);
        assert!(serde_json::to_string(&x).unwrap().contains(r#""kind":"afxdp""#));
        let e = parse_request(
            r#"{"command":"port_add","args":{"name":"a","netns":"n","kind":"veth"}}"#,
        )
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("args.kind"), "{e:?}");
        assert_eq!("afxdp".parse::<PortAddKind>(), Ok(PortAddKind::Afxdp));
        assert!("xdp".parse::<PortAddKind>().is_err());
        // Port security: on unless said otherwise, and written only when it is not the default.
        let Request::PortAdd(args) = &x else { panic!("{x:?}") };
        assert!(args.port_security && args.allow_ips.is_empty());
        let x = parse_request(
            r#"{"command":"port_add","args":{"name":"a","netns":"n","allow_ips":["192.0.2.0/24"]}}"#,
        )
        .unwrap();
        let Request::PortAdd(args) = &x else { panic!("{x:?}") };
        assert_eq!(args.allow_ips, vec!["192.0.2.0/24".parse().unwrap()]);
        let off = r#"{"command":"port_add","args":{"name":"a","netns":"n","port_security":false}}"#;
        let x = parse_request(off).unwrap();
        assert_eq!(serde_json::to_string(&x).unwrap(), off);
        let e = parse_request(
            r#"{"command":"port_add","args":{"name":"a","netns":"n","allow_ips":["192.0.2.1/24"]}}"#,
        )
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("args.allow_ips[0]"), "{e:?}");
        assert_eq!(parse_request(r#"{"command":"port_list"}"#).unwrap(), Request::PortList);
        assert_eq!(
            parse_request(r#"{"command":"fdb_flush","args":{}}"#).unwrap(),
            Request::FdbFlush(FdbFlushArgs::default())
        );
    }

    #[test]
    fn bad_requests_name_the_field() {
        let e =
            parse_request(r#"{"command":"port_add","args":{"name":"a","netns":"n","mtu":"big"}}"#)
                .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("args.mtu"), "{e:?}");
        let e = parse_request(
            r#"{"command":"port_add","args":{"name":"a","netns":"n","ip":"10.1.1.1"}}"#,
        )
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("args.ip"), "{e:?}");
        assert!(e.message.contains("prefix length"), "{e:?}");
        let e =
            parse_request(r#"{"command":"port_add","args":{"name":"a","netns":"n","colour":1}}"#)
                .unwrap_err();
        assert!(e.message.contains("colour"), "{e:?}");
        let e = parse_request(r#"{"command":"port_add","args":{"netns":"n"}}"#).unwrap_err();
        assert!(e.message.contains("name"), "{e:?}");
        let e = parse_request(r#"{"command":"launch_rockets"}"#).unwrap_err();
        assert!(e.message.contains("launch_rockets"), "{e:?}");
        let e = parse_request(r#"{"command":"port_list","extra":1}"#).unwrap_err();
        assert!(e.message.contains("extra"), "{e:?}");
        assert!(parse_request("not json").is_err());
        assert!(parse_request(r#"{"command":"status"} {"command":"status"}"#).is_err());
    }

    #[test]
    fn responses_round_trip() {
        let r = Response::Error(ApiError::field(ErrorKind::AlreadyExists, "args.name", "taken"));
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(
            s,
            r#"{"error":{"kind":"already_exists","field":"args.name","message":"taken"}}"#
        );
        assert_eq!(serde_json::from_str::<Response>(&s).unwrap(), r);
        let ok = Response::Ok(Reply::Flushed { removed: 3 });
        let s = serde_json::to_string(&ok).unwrap();
        assert_eq!(s, r#"{"ok":{"type":"flushed","removed":3}}"#);
        assert_eq!(serde_json::from_str::<Response>(&s).unwrap(), ok);
        assert_eq!(
            ApiError::field(ErrorKind::InvalidArgument, "args.ip", "bad").to_string(),
            "args.ip: bad"
        );
    }
}
