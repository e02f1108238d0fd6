//! The node configuration file: its serde shape, and its conversion into a validated
//! [`Config`] whose existence proves every value is usable.
//!
//! Validation happens once, at the edge: `podswitch run` refuses to start on any error, so the
//! daemon is never half-configured, and the switch core takes the validated types and cannot
//! fail on them. Every error names the key (`fdb.max_entries: ...`). Unknown keys are
//! rejected, not ignored, so a typo never silently falls back to a default.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::cidr::Ipv4Cidr;
use crate::wire::MacAddr;

/// Default control socket path.
pub const DEFAULT_SOCKET: &str = "/run/podswitch/podswitch.sock";
/// Default host port name.
pub const DEFAULT_HOST_PORT: &str = "psw0";
/// Default pod MTU.
pub const DEFAULT_MTU: u32 = 1500;
/// Smallest MTU IPv4 allows (RFC 791).
pub const MIN_MTU: u32 = 68;
/// Largest MTU a port buffer carries (see `packet::MAX_FRAME_LEN`).
pub const MAX_MTU: u32 = 9000;
/// Default MAC table size.
pub const DEFAULT_FDB_MAX_ENTRIES: u32 = 65_536;
/// Largest MAC table size accepted.
pub const MAX_FDB_ENTRIES: u32 = 1 << 24;
/// Default MAC aging time in seconds (the 802.1D default, as the Linux bridge uses).
pub const DEFAULT_FDB_AGING_SECS: u64 = 300;
/// Default and largest number of ports.
pub const DEFAULT_MAX_PORTS: u32 = 1024;
/// Port ids are 16-bit.
pub const MAX_PORTS: u32 = 4096;
/// Default VXLAN network identifier (Flannel's).
pub const DEFAULT_VNI: u32 = 1;
/// Default and largest number of overlay peers.
pub const DEFAULT_MAX_PEERS: u32 = 4096;
/// Default Service CIDR (ClusterIPs), Kubernetes' default.
pub const DEFAULT_SERVICE_CIDR: &str = "10.96.0.0/12";
/// Default and largest number of Services.
pub const DEFAULT_MAX_SERVICES: u32 = 65_536;
/// Default (and largest) Maglev lookup table size per Service: a prime.
pub const DEFAULT_MAGLEV_TABLE_SIZE: u32 = 65_537;
/// Bytes VXLAN adds in front of a pod's IPv4 packet on the underlay (outer IPv4 20, UDP 8,
/// VXLAN 8, inner Ethernet 14).
pub const OVERLAY_OVERHEAD: u32 = 50;

/// A configuration error. The message always names the offending key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// TOML syntax error, unknown key, or a value of the wrong type.
    #[error("config {key}: {message}")]
    Parse {
        /// Dotted path of the key (`.` when the error is not inside a key).
        key: String,
        /// The parser's description, with line and column.
        message: String,
    },
    /// A value of the right type that is not acceptable.
    #[error("config {key}: {reason}")]
    Invalid {
        /// Dotted path of the key (`overlay.peers[2].pod_cidr`).
        key: String,
        /// What is wrong and what is accepted.
        reason: String,
    },
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.into(), reason: reason.into() }
}

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    node: NodeSection,
    #[serde(default)]
    host_port: HostPortSection,
    #[serde(default)]
    control: ControlSection,
    #[serde(default)]
    fdb: FdbSection,
    #[serde(default)]
    ports: PortsSection,
    overlay: Option<OverlaySection>,
    #[serde(default)]
    services: ServicesSection,
    #[serde(default)]
    conntrack: ConntrackSection,
    node_port: Option<NodePortSection>,
    #[serde(default)]
    dns: DnsSection,
    #[serde(default)]
    worker: WorkerSection,
    #[serde(default)]
    afxdp: AfxdpSection,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AfxdpSection {
    #[serde(default = "default_afxdp_frames")]
    rx_frames: u32,
    #[serde(default = "default_afxdp_frames")]
    tx_frames: u32,
}

impl Default for AfxdpSection {
    fn default() -> Self {
        AfxdpSection { rx_frames: default_afxdp_frames(), tx_frames: default_afxdp_frames() }
    }
}

fn default_afxdp_frames() -> u32 {
    crate::sys::xsk::DEFAULT_RING_SIZE
}

impl AfxdpSection {
    fn validate(&self) -> Result<AfxdpConfig, ConfigError> {
        for (key, v) in [("afxdp.rx_frames", self.rx_frames), ("afxdp.tx_frames", self.tx_frames)] {
            if !(MIN_AFXDP_FRAMES..=MAX_AFXDP_FRAMES).contains(&v) || !v.is_power_of_two() {
                return Err(invalid(
                    key,
                    format!(
                        "must be a power of two from {MIN_AFXDP_FRAMES} to {MAX_AFXDP_FRAMES}, got {v}"
                    ),
                ));
            }
        }
        Ok(AfxdpConfig { rx_frames: self.rx_frames, tx_frames: self.tx_frames })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkerSection {
    #[serde(default)]
    count: Option<usize>,
    #[serde(default)]
    busy_poll: Option<String>,
    #[serde(default)]
    cpu: Option<usize>,
    #[serde(default)]
    cpus: Option<Vec<usize>>,
    #[serde(default)]
    pin: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodePortSection {
    interface: String,
    address: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DnsSection {
    #[serde(default = "default_true")]
    enabled: bool,
    #[serde(default = "default_dns_vip")]
    vip: String,
    #[serde(default = "default_dns_port")]
    port: u16,
    #[serde(default = "default_cluster_domain")]
    cluster_domain: String,
    #[serde(default = "default_dns_port")]
    listen_port: u16,
}

impl Default for DnsSection {
    fn default() -> Self {
        DnsSection {
            enabled: true,
            vip: default_dns_vip(),
            port: default_dns_port(),
            cluster_domain: default_cluster_domain(),
            listen_port: default_dns_port(),
        }
    }
}

fn default_true() -> bool {
    true
}

fn default_dns_vip() -> String {
    "10.96.0.10".into()
}

fn default_dns_port() -> u16 {
    53
}

fn default_cluster_domain() -> String {
    "cluster.local".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServicesSection {
    #[serde(default = "default_service_cidr")]
    cidr: String,
    #[serde(default = "default_max_services")]
    max_services: u32,
    #[serde(default = "default_maglev_size")]
    maglev_table_size: u32,
}

impl Default for ServicesSection {
    fn default() -> Self {
        ServicesSection {
            cidr: default_service_cidr(),
            max_services: default_max_services(),
            maglev_table_size: default_maglev_size(),
        }
    }
}

/// Conntrack limits and timeouts (seconds), defaulting to Linux's nf_conntrack values.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ConntrackSection {
    max_entries: u32,
    tcp_syn_sent_secs: u32,
    tcp_syn_recv_secs: u32,
    tcp_established_secs: u32,
    tcp_fin_wait_secs: u32,
    tcp_close_wait_secs: u32,
    tcp_last_ack_secs: u32,
    tcp_time_wait_secs: u32,
    tcp_close_secs: u32,
    udp_secs: u32,
    udp_assured_secs: u32,
    icmp_secs: u32,
}

impl Default for ConntrackSection {
    fn default() -> Self {
        ConntrackSection {
            max_entries: 262_144,
            tcp_syn_sent_secs: 120,
            tcp_syn_recv_secs: 60,
            tcp_established_secs: 432_000,
            tcp_fin_wait_secs: 120,
            tcp_close_wait_secs: 60,
            tcp_last_ack_secs: 30,
            tcp_time_wait_secs: 120,
            tcp_close_secs: 10,
            udp_secs: 30,
            udp_assured_secs: 120,
            icmp_secs: 30,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OverlaySection {
    underlay_ip: String,
    #[serde(default = "default_vni")]
    vni: u32,
    #[serde(default = "default_vxlan_port")]
    udp_port: u16,
    #[serde(default = "default_mtu")]
    underlay_mtu: u32,
    #[serde(default)]
    udp_checksum: bool,
    #[serde(default)]
    afxdp_interface: Option<String>,
    #[serde(default = "default_max_peers")]
    max_peers: u32,
    #[serde(default)]
    peers: Vec<PeerSection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PeerSection {
    name: String,
    ip: String,
    pod_cidr: String,
    vtep_mac: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeSection {
    name: String,
    pod_cidr: String,
    gateway: Option<String>,
    gateway_mac: Option<String>,
    mtu: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HostPortSection {
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default = "default_host_port")]
    name: String,
}

impl Default for HostPortSection {
    fn default() -> Self {
        HostPortSection { enabled: true, name: default_host_port() }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ControlSection {
    #[serde(default = "default_socket")]
    socket: PathBuf,
}

impl Default for ControlSection {
    fn default() -> Self {
        ControlSection { socket: default_socket() }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FdbSection {
    #[serde(default = "default_fdb_max")]
    max_entries: u32,
    #[serde(default = "default_fdb_aging")]
    aging_secs: u64,
}

impl Default for FdbSection {
    fn default() -> Self {
        FdbSection { max_entries: default_fdb_max(), aging_secs: default_fdb_aging() }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PortsSection {
    #[serde(default = "default_max_ports")]
    max_ports: u32,
}

impl Default for PortsSection {
    fn default() -> Self {
        PortsSection { max_ports: default_max_ports() }
    }
}

fn yes() -> bool {
    true
}
fn default_mtu() -> u32 {
    DEFAULT_MTU
}
fn default_host_port() -> String {
    DEFAULT_HOST_PORT.to_string()
}
fn default_socket() -> PathBuf {
    PathBuf::from(DEFAULT_SOCKET)
}
fn default_fdb_max() -> u32 {
    DEFAULT_FDB_MAX_ENTRIES
}
fn default_fdb_aging() -> u64 {
    DEFAULT_FDB_AGING_SECS
}
fn default_max_ports() -> u32 {
    DEFAULT_MAX_PORTS
}
fn default_vni() -> u32 {
    DEFAULT_VNI
}
fn default_vxlan_port() -> u16 {
    crate::wire::vxlan::UDP_PORT
}
fn default_max_peers() -> u32 {
    DEFAULT_MAX_PEERS
}
fn default_service_cidr() -> String {
    DEFAULT_SERVICE_CIDR.to_string()
}
fn default_max_services() -> u32 {
    DEFAULT_MAX_SERVICES
}
fn default_maglev_size() -> u32 {
    DEFAULT_MAGLEV_TABLE_SIZE
}

/// A validated node configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// This node's identity and pod network.
    pub node: NodeConfig,
    /// The host port, when enabled.
    pub host_port: Option<HostPortConfig>,
    /// Where the control API listens.
    pub control: ControlConfig,
    /// MAC table limits.
    pub fdb: FdbConfig,
    /// Port table limits.
    pub ports: PortsConfig,
    /// The VXLAN overlay to other nodes, when configured.
    pub overlay: Option<OverlayConfig>,
    /// Services (ClusterIPs).
    pub services: ServicesConfig,
    /// Connection tracking for Service NAT.
    pub conntrack: ConntrackSettings,
    /// NodePort Services, when configured.
    pub node_port: Option<NodePortConfig>,
    /// The packet worker's polling and placement.
    pub worker: WorkerConfig,
    /// Memory of every AF_XDP socket (pod ports of kind `afxdp`, NodePort, the AF_XDP
    /// underlay).
    pub afxdp: AfxdpConfig,
    /// The cluster DNS responder, when enabled. It is reached through the host port: a switch
    /// without one runs no responder.
    pub dns: Option<DnsConfig>,
}

/// Fewest UMEM frames on either side of an AF_XDP socket.
pub const MIN_AFXDP_FRAMES: u32 = 64;
/// Most UMEM frames on either side of an AF_XDP socket (64 MiB with 2 KiB frames).
pub const MAX_AFXDP_FRAMES: u32 = 32_768;

/// The UMEM of each AF_XDP socket (one per queue of a port): frames set aside for receive
/// (the fill and rx rings' size) and for transmit (the tx and completion rings' size). The
/// socket's memory is `(rx_frames + tx_frames)` × the frame size (2 KiB up to MTU 1,774,
/// 4 KiB above).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AfxdpConfig {
    /// Frames the kernel can receive into before the worker takes any: how many packets a
    /// queue holds while its worker is busy elsewhere. When they run out the kernel drops
    /// (`xsk_fill_ring_empty` in the port's `device_drops`).
    pub rx_frames: u32,
    /// Frames queued for transmit and not yet completed.
    pub tx_frames: u32,
}

impl Default for AfxdpConfig {
    fn default() -> Self {
        AfxdpConfig {
            rx_frames: crate::sys::xsk::DEFAULT_RING_SIZE,
            tx_frames: crate::sys::xsk::DEFAULT_RING_SIZE,
        }
    }
}

/// How the packet worker waits for frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusyPoll {
    /// Keep polling this long after the last frame, then sleep in `epoll_wait` (an idle
    /// switch costs nothing).
    After(Duration),
    /// Never sleep: lowest latency, one core always busy (benchmarks, dedicated cores).
    Always,
}

/// The packet workers' settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerConfig {
    /// How many worker threads run (default: one per CPU).
    pub count: usize,
    /// How they wait for frames.
    pub busy_poll: BusyPoll,
    /// Where they run.
    pub pin: Pinning,
}

/// Where worker threads are pinned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pinning {
    /// Worker `i` on CPU `i` (modulo the CPUs there are): the default.
    Auto,
    /// Not pinned: the kernel's scheduler places them.
    Off,
    /// Worker `i` on `cpus[i]`.
    Cpus(Vec<usize>),
}

impl WorkerConfig {
    /// One worker, unpinned, with the default busy-poll window (tests, benchmarks of the
    /// pipeline alone).
    pub fn single() -> WorkerConfig {
        WorkerConfig { count: 1, busy_poll: BusyPoll::After(DEFAULT_BUSY_POLL), pin: Pinning::Off }
    }

    /// The CPU worker `i` is pinned to, if any.
    pub fn cpu_of(&self, i: usize) -> Option<usize> {
        match &self.pin {
            Pinning::Auto => Some(i % cpus()),
            Pinning::Off => None,
            Pinning::Cpus(c) => c.get(i).copied(),
        }
    }
}

/// CPUs this process may run on.
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Most worker threads a switch runs (the fabric keeps one bit per worker in a `u64`).
pub const MAX_WORKERS: usize = 64;

/// Default busy-poll window after the last frame.
pub const DEFAULT_BUSY_POLL: Duration = Duration::from_micros(200);

/// Where NodePort traffic arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePortConfig {
    /// The interface carrying the node's address (an XDP program there hands node-port
    /// packets to the switch; everything else passes to the kernel untouched).
    pub interface: String,
    /// The node's address: node ports are taken on it.
    pub address: Ipv4Addr,
}

/// The cluster DNS responder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    /// The DNS Service address pods are given (inside the Service CIDR).
    pub vip: Ipv4Addr,
    /// Its port (UDP and TCP).
    pub port: u16,
    /// Names are `<service>.<namespace>.svc.<cluster_domain>`.
    pub cluster_domain: String,
    /// The responder listens on the gateway address (host port) on this port; the DNS
    /// Service's endpoint.
    pub listen_port: u16,
}

/// Service settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServicesConfig {
    /// ClusterIPs come from here; routed to the host port in the node namespace.
    pub cidr: Ipv4Cidr,
    /// Most Services at once.
    pub max_services: usize,
    /// Upper bound (a prime) of a Service's Maglev table; each Service's table is the smallest
    /// prime at least 100 times its endpoint count, up to this.
    pub maglev_table_size: usize,
}

/// Connection-tracking limit and timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConntrackSettings {
    /// Most tracked connections; when full, new connections are dropped (and counted),
    /// established ones are never evicted.
    pub max_entries: usize,
    /// TCP timeouts by state: syn_sent, syn_recv, established, fin_wait, close_wait,
    /// last_ack, time_wait, close.
    pub tcp: [Duration; 8],
    /// UDP without and with replies seen.
    pub udp: Duration,
    /// UDP once a reply was seen.
    pub udp_assured: Duration,
    /// ICMP echo.
    pub icmp: Duration,
}

/// The node's place on the underlay and the peers it tunnels to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayConfig {
    /// This node's underlay address: VXLAN is received on it and sent from it.
    pub underlay_ip: Ipv4Addr,
    /// VXLAN network identifier (24 bits).
    pub vni: u32,
    /// UDP destination port of VXLAN.
    pub udp_port: u16,
    /// MTU of the underlay; pod MTU defaults to this minus [`OVERLAY_OVERHEAD`].
    pub underlay_mtu: u32,
    /// Compute outer UDP checksums (RFC 7348 allows zero, the default).
    pub udp_checksum: bool,
    /// The interface carrying `underlay_ip`, when the switch drives it through AF_XDP: an XDP
    /// program hands the node's VXLAN datagrams to the switch and frames to peers leave
    /// through the AF_XDP transmit ring (`port/overlay_xdp.rs`). `None`: UDP sockets.
    pub afxdp_interface: Option<String>,
    /// Most peers at once.
    pub max_peers: usize,
    /// The other nodes at start; more can be added through the API.
    pub peers: Vec<PeerConfig>,
}

/// Another node reachable over the overlay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    /// Its name (a DNS-1123 subdomain, like node names).
    pub name: String,
    /// Its underlay address.
    pub ip: Ipv4Addr,
    /// Its pod CIDR.
    pub pod_cidr: Ipv4Cidr,
    /// Inner destination MAC of frames sent to it: what its VXLAN endpoint accepts as its own
    /// (a Linux `vxlan` device's MAC; another podswitch accepts any). Default: the MAC a
    /// podswitch node with that pod CIDR would use as its gateway MAC.
    pub vtep_mac: MacAddr,
}

/// Why a peer cannot be added; names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct PeerError {
    /// The field (`name`, `ip`, `pod_cidr`, `vtep_mac`).
    pub field: &'static str,
    /// What is wrong.
    pub reason: String,
}

impl PeerConfig {
    /// Parses a peer from the config file's text fields, checking each one.
    pub fn parse(
        name: &str,
        ip: &str,
        pod_cidr: &str,
        vtep_mac: Option<&str>,
    ) -> Result<PeerConfig, PeerError> {
        let err = |field, reason: String| PeerError { field, reason };
        let ip: Ipv4Addr =
            ip.parse().map_err(|_| err("ip", format!("{ip:?} is not an IPv4 address")))?;
        let pod_cidr: Ipv4Cidr = pod_cidr.parse().map_err(|e| err("pod_cidr", format!("{e}")))?;
        let vtep_mac = match vtep_mac {
            None => None,
            Some(m) => Some(m.parse().map_err(|e| err("vtep_mac", format!("{e}")))?),
        };
        PeerConfig::new(name, ip, pod_cidr, vtep_mac)
    }

    /// A peer from typed fields (the API's), checking each one; `vtep_mac` defaults to the
    /// gateway MAC a podswitch node with `pod_cidr` uses.
    pub fn new(
        name: &str,
        ip: Ipv4Addr,
        pod_cidr: Ipv4Cidr,
        vtep_mac: Option<MacAddr>,
    ) -> Result<PeerConfig, PeerError> {
        let err = |field, reason: String| PeerError { field, reason };
        validate_node_name(name).map_err(|r| err("name", r))?;
        if ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() || ip.is_loopback() {
            return Err(err("ip", format!("{ip} is not a unicast address")));
        }
        let vtep_mac = match vtep_mac {
            None => default_gateway_mac(pod_cidr.nth(1).unwrap_or(pod_cidr.network())),
            Some(mac) if !mac.is_unicast() || mac == MacAddr::ZERO => {
                return Err(err("vtep_mac", format!("{mac} is not a unicast MAC")));
            }
            Some(mac) => mac,
        };
        Ok(PeerConfig { name: name.to_string(), ip, pod_cidr, vtep_mac })
    }

    /// Checks that this peer fits beside `others` on a node with `own_cidr` and `own_ip`:
    /// unique name and address, a pod CIDR overlapping no one's.
    pub fn check_fits<'a>(
        &self,
        own_cidr: Ipv4Cidr,
        own_ip: Ipv4Addr,
        others: impl IntoIterator<Item = &'a PeerConfig>,
    ) -> Result<(), PeerError> {
        let err = |field, reason: String| Err(PeerError { field, reason });
        if self.ip == own_ip {
            return err("ip", format!("{} is this node's own underlay address", self.ip));
        }
        if self.pod_cidr.overlaps(&own_cidr) {
            return err(
                "pod_cidr",
                format!("{} overlaps this node's pod CIDR {own_cidr}", self.pod_cidr),
            );
        }
        for o in others {
            if o.name == self.name {
                return err("name", format!("a peer named {:?} exists", self.name));
            }
            if o.ip == self.ip {
                return err("ip", format!("{} is peer {:?}'s address", self.ip, o.name));
            }
            if o.pod_cidr.overlaps(&self.pod_cidr) {
                return err(
                    "pod_cidr",
                    format!("{} overlaps peer {:?}'s {}", self.pod_cidr, o.name, o.pod_cidr),
                );
            }
        }
        Ok(())
    }
}

/// The node's identity and pod network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// Node name (a DNS-1123 subdomain, as Kubernetes node names are).
    pub name: String,
    /// The pod CIDR this node hands addresses out of.
    pub pod_cidr: Ipv4Cidr,
    /// The pods' default gateway, owned by the switch: a host address of `pod_cidr`.
    pub gateway: Ipv4Addr,
    /// The gateway's MAC, also the host port's MAC.
    pub gateway_mac: MacAddr,
    /// MTU of pod interfaces and of the host port.
    pub mtu: u32,
}

/// The host port: a TAP device in the node's namespace carrying the gateway address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPortConfig {
    /// Interface name in the node namespace.
    pub name: String,
}

/// Control API settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlConfig {
    /// Unix socket path.
    pub socket: PathBuf,
}

/// MAC table settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdbConfig {
    /// Most MACs learned at once; when full, new MACs are not learned (frames to them are
    /// flooded) and each refusal is counted.
    pub max_entries: usize,
    /// A MAC not seen for this long is forgotten.
    pub aging: Duration,
}

/// Port table settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortsConfig {
    /// Most ports (pod ports plus the host port).
    pub max_ports: usize,
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        Config::parse(&text)
    }

    /// Parses and validates config text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let de = toml::Deserializer::parse(text).map_err(|e| ConfigError::Parse {
            key: ".".into(),
            message: one_line(&e.to_string()),
        })?;
        let file: File = serde_path_to_error::deserialize(de).map_err(|e| ConfigError::Parse {
            key: e.path().to_string(),
            message: one_line(&e.inner().to_string()),
        })?;
        file.validate()
    }

    /// The configuration the lab and tests start from: everything default but the node
    /// name, pod CIDR and socket.
    pub fn for_node(name: &str, pod_cidr: Ipv4Cidr, socket: PathBuf) -> Config {
        let text = format!(
            "[node]\nname = {name:?}\npod_cidr = \"{pod_cidr}\"\n[control]\nsocket = {:?}\n",
            socket.display().to_string()
        );
        Config::parse(&text).expect("defaults are valid")
    }

    /// Renders the configuration back as TOML that [`Config::parse`] accepts.
    pub fn to_toml(&self) -> String {
        let mut s = format!(
            "[node]\nname = {:?}\npod_cidr = \"{}\"\ngateway = \"{}\"\ngateway_mac = \"{}\"\nmtu = {}\n\n",
            self.node.name, self.node.pod_cidr, self.node.gateway, self.node.gateway_mac, self.node.mtu
        );
        match &self.host_port {
            Some(h) => s += &format!("[host_port]\nenabled = true\nname = {:?}\n\n", h.name),
            None => s += "[host_port]\nenabled = false\n\n",
        }
        s += &format!("[control]\nsocket = {:?}\n\n", self.control.socket.display().to_string());
        s += &format!(
            "[fdb]\nmax_entries = {}\naging_secs = {}\n\n[ports]\nmax_ports = {}\n",
            self.fdb.max_entries,
            self.fdb.aging.as_secs(),
            self.ports.max_ports
        );
        s += &format!(
            "\n[services]\ncidr = \"{}\"\nmax_services = {}\nmaglev_table_size = {}\n",
            self.services.cidr, self.services.max_services, self.services.maglev_table_size
        );
        let c = &self.conntrack;
        let t = |d: Duration| d.as_secs();
        s += &format!(
            "\n[conntrack]\nmax_entries = {}\ntcp_syn_sent_secs = {}\ntcp_syn_recv_secs = {}\ntcp_established_secs = {}\ntcp_fin_wait_secs = {}\ntcp_close_wait_secs = {}\ntcp_last_ack_secs = {}\ntcp_time_wait_secs = {}\ntcp_close_secs = {}\nudp_secs = {}\nudp_assured_secs = {}\nicmp_secs = {}\n",
            c.max_entries, t(c.tcp[0]), t(c.tcp[1]), t(c.tcp[2]), t(c.tcp[3]), t(c.tcp[4]), t(c.tcp[5]), t(c.tcp[6]), t(c.tcp[7]), t(c.udp), t(c.udp_assured), t(c.icmp)
        );
        match &self.dns {
            Some(d) => {
                s += &format!(
                    "\n[dns]\nenabled = true\nvip = \"{}\"\nport = {}\ncluster_domain = {:?}\nlisten_port = {}\n",
                    d.vip, d.port, d.cluster_domain, d.listen_port
                )
            }
            None => s += "\n[dns]\nenabled = false\n",
        }
        s += &match self.worker.busy_poll {
            BusyPoll::Always => "\n[worker]\nbusy_poll = \"always\"\n".to_string(),
            BusyPoll::After(d) => format!("\n[worker]\nbusy_poll = \"{}us\"\n", d.as_micros()),
        };
        s += &format!("count = {}\n", self.worker.count);
        match &self.worker.pin {
            Pinning::Auto => {}
            Pinning::Off => s += "pin = false\n",
            Pinning::Cpus(c) => s += &format!("cpus = {c:?}\n"),
        }
        s += &format!(
            "\n[afxdp]\nrx_frames = {}\ntx_frames = {}\n",
            self.afxdp.rx_frames, self.afxdp.tx_frames
        );
        if let Some(np) = &self.node_port {
            s += &format!(
                "\n[node_port]\ninterface = {:?}\naddress = \"{}\"\n",
                np.interface, np.address
            );
        }
        if let Some(o) = &self.overlay {
            s += &format!(
                "\n[overlay]\nunderlay_ip = \"{}\"\nvni = {}\nudp_port = {}\nunderlay_mtu = {}\nudp_checksum = {}\nmax_peers = {}\n",
                o.underlay_ip, o.vni, o.udp_port, o.underlay_mtu, o.udp_checksum, o.max_peers
            );
            if let Some(i) = &o.afxdp_interface {
                s += &format!("afxdp_interface = {i:?}\n");
            }
            for p in &o.peers {
                s += &format!(
                    "\n[[overlay.peers]]\nname = {:?}\nip = \"{}\"\npod_cidr = \"{}\"\nvtep_mac = \"{}\"\n",
                    p.name, p.ip, p.pod_cidr, p.vtep_mac
                );
            }
        }
        s
    }
}

/// The toml crate's messages span several lines (a source excerpt); keep them on one.
fn one_line(s: &str) -> String {
    s.split('\n').map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ")
}

impl File {
    fn validate(self) -> Result<Config, ConfigError> {
        let n = self.node;
        validate_node_name(&n.name).map_err(|r| invalid("node.name", r))?;
        let pod_cidr: Ipv4Cidr =
            n.pod_cidr.parse().map_err(|e| invalid("node.pod_cidr", format!("{e}")))?;
        if !(8..=30).contains(&pod_cidr.prefix_len()) {
            return Err(invalid(
                "node.pod_cidr",
                format!("prefix length must be 8 to 30, got /{}", pod_cidr.prefix_len()),
            ));
        }
        let gateway = match n.gateway {
            None => pod_cidr.nth(1).expect("a /30 or larger has a first host"),
            Some(g) => {
                let g: Ipv4Addr = g.parse().map_err(|_| {
                    invalid("node.gateway", format!("{g:?} is not an IPv4 address"))
                })?;
                if !pod_cidr.is_host(g) {
                    return Err(invalid(
                        "node.gateway",
                        format!("{g} is not a host address of node.pod_cidr {pod_cidr}"),
                    ));
                }
                g
            }
        };
        let gateway_mac = match n.gateway_mac {
            None => default_gateway_mac(gateway),
            Some(m) => {
                let mac: MacAddr =
                    m.parse().map_err(|e| invalid("node.gateway_mac", format!("{e}")))?;
                if !mac.is_unicast() || mac == MacAddr::ZERO {
                    return Err(invalid("node.gateway_mac", format!("{mac} is not a unicast MAC")));
                }
                mac
            }
        };
        let overlay = match self.overlay {
            Some(o) => Some(o.validate(pod_cidr)?),
            None => None,
        };
        let mtu_limit = overlay.as_ref().map_or(MAX_MTU, |o| o.underlay_mtu - OVERLAY_OVERHEAD);
        let mtu = n.mtu.unwrap_or(DEFAULT_MTU.min(mtu_limit));
        if !(MIN_MTU..=mtu_limit).contains(&mtu) {
            let why = if overlay.is_some() { " (overlay.underlay_mtu - 50)" } else { "" };
            return Err(invalid(
                "node.mtu",
                format!("must be from {MIN_MTU} to {mtu_limit}{why}, got {mtu}"),
            ));
        }
        let host_port = if self.host_port.enabled {
            crate::sys::tun::validate_ifname(&self.host_port.name)
                .map_err(|e| invalid("host_port.name", e.to_string()))?;
            Some(HostPortConfig { name: self.host_port.name })
        } else {
            None
        };
        if self.control.socket.as_os_str().is_empty() {
            return Err(invalid("control.socket", "must not be empty"));
        }
        if !(1..=MAX_FDB_ENTRIES).contains(&self.fdb.max_entries) {
            return Err(invalid(
                "fdb.max_entries",
                format!("must be from 1 to {MAX_FDB_ENTRIES}, got {}", self.fdb.max_entries),
            ));
        }
        if !(1..=86_400 * 365).contains(&self.fdb.aging_secs) {
            return Err(invalid(
                "fdb.aging_secs",
                format!("must be from 1 to 31536000 seconds, got {}", self.fdb.aging_secs),
            ));
        }
        if !(2..=MAX_PORTS).contains(&self.ports.max_ports) {
            return Err(invalid(
                "ports.max_ports",
                format!("must be from 2 to {MAX_PORTS}, got {}", self.ports.max_ports),
            ));
        }
        let services = self.services.validate(pod_cidr)?;
        let node_port = match self.node_port {
            Some(np) => Some(np.validate(overlay.as_ref())?),
            None => None,
        };
        if let (Some(np), Some(Some(ul))) =
            (&node_port, overlay.as_ref().map(|o| o.afxdp_interface.as_ref()))
        {
            if &np.interface == ul {
                // One XDP program and one AF_XDP socket per queue: the two would need one
                // shared filter and port, which the switch does not build.
                return Err(invalid(
                    "overlay.afxdp_interface",
                    format!("{ul} is also node_port.interface; use the UDP underlay (remove afxdp_interface) with NodePort on the same interface"),
                ));
            }
        }
        let dns = self.dns.validate(services.cidr)?;
        let worker = self.worker.validate()?;
        let afxdp = self.afxdp.validate()?;
        Ok(Config {
            node: NodeConfig { name: n.name, pod_cidr, gateway, gateway_mac, mtu },
            host_port,
            control: ControlConfig { socket: self.control.socket },
            fdb: FdbConfig {
                max_entries: self.fdb.max_entries as usize,
                aging: Duration::from_secs(self.fdb.aging_secs),
            },
            ports: PortsConfig { max_ports: self.ports.max_ports as usize },
            overlay,
            node_port,
            dns,
            worker,
            afxdp,
            services,
            conntrack: self.conntrack.validate()?,
        })
    }
}

impl ServicesSection {
    fn validate(self, pod_cidr: Ipv4Cidr) -> Result<ServicesConfig, ConfigError> {
        let cidr: Ipv4Cidr =
            self.cidr.parse().map_err(|e| invalid("services.cidr", format!("{e}")))?;
        if cidr.overlaps(&pod_cidr) {
            return Err(invalid(
                "services.cidr",
                format!("{cidr} overlaps node.pod_cidr {pod_cidr}"),
            ));
        }
        if !(1..=DEFAULT_MAX_SERVICES).contains(&self.max_services) {
            return Err(invalid(
                "services.max_services",
                format!("must be from 1 to {DEFAULT_MAX_SERVICES}, got {}", self.max_services),
            ));
        }
        let m = self.maglev_table_size;
        if !(7..=DEFAULT_MAGLEV_TABLE_SIZE).contains(&m)
            || !(2..).take_while(|d| d * d <= m).all(|d| !m.is_multiple_of(d))
        {
            return Err(invalid(
                "services.maglev_table_size",
                format!("must be a prime from 7 to {DEFAULT_MAGLEV_TABLE_SIZE}, got {m}"),
            ));
        }
        Ok(ServicesConfig {
            cidr,
            max_services: self.max_services as usize,
            maglev_table_size: m as usize,
        })
    }
}

impl WorkerSection {
    fn validate(self) -> Result<WorkerConfig, ConfigError> {
        let busy_poll = match self.busy_poll.as_deref() {
            None => BusyPoll::After(DEFAULT_BUSY_POLL),
            Some("always") => BusyPoll::Always,
            Some(v) => {
                let us = v.strip_suffix("us").and_then(|n| n.parse::<u64>().ok());
                match us {
                    Some(us) if us <= 1_000_000 => BusyPoll::After(Duration::from_micros(us)),
                    _ => {
                        return Err(invalid(
                            "worker.busy_poll",
                            format!(
                                "{v:?} is neither \"always\" nor a window like \"200us\" \
                                 (0 to 1000000us)"
                            ),
                        ))
                    }
                }
            }
        };
        let (field, list) = match (self.cpu, self.cpus) {
            (Some(_), Some(_)) => {
                return Err(invalid("worker.cpu", "give either cpu (one worker) or cpus, not both"))
            }
            (Some(cpu), None) => ("worker.cpu", Some(vec![cpu])),
            (None, Some(list)) => ("worker.cpus", Some(list)),
            (None, None) => ("", None),
        };
        let n = cpus();
        // Without a count, one worker per CPU listed, or per CPU there is.
        let count = match self.count {
            None => list.as_ref().map_or(n, |l| l.len().max(1)),
            Some(c) if (1..=MAX_WORKERS).contains(&c) => c,
            Some(c) => {
                return Err(invalid(
                    "worker.count",
                    format!("{c} workers: from 1 to {MAX_WORKERS}"),
                ))
            }
        };
        let pin = match (list, self.pin) {
            (Some(_), Some(false)) => {
                return Err(invalid(field, "CPUs given while pin = false"));
            }
            (Some(list), _) => {
                if let Some(cpu) = list.iter().find(|&&c| c >= n) {
                    return Err(invalid(
                        field,
                        format!("CPU {cpu} does not exist here (CPUs 0 to {})", n - 1),
                    ));
                }
                if list.len() != count {
                    return Err(invalid(
                        field,
                        format!("{} CPUs for {count} workers: give one per worker", list.len()),
                    ));
                }
                Pinning::Cpus(list)
            }
            (None, Some(false)) => Pinning::Off,
            (None, _) => Pinning::Auto,
        };
        Ok(WorkerConfig { count, busy_poll, pin })
    }
}

impl NodePortSection {
    fn validate(self, overlay: Option<&OverlayConfig>) -> Result<NodePortConfig, ConfigError> {
        crate::sys::tun::validate_ifname(&self.interface)
            .map_err(|e| invalid("node_port.interface", e.to_string()))?;
        let address = match (self.address, overlay) {
            (Some(a), _) => a.parse::<Ipv4Addr>().map_err(|_| {
                invalid("node_port.address", format!("{a:?} is not an IPv4 address"))
            })?,
            (None, Some(o)) => o.underlay_ip,
            (None, None) => {
                return Err(invalid(
                    "node_port.address",
                    "required without an [overlay] section (whose underlay_ip is the default)",
                ))
            }
        };
        if address.is_unspecified() || address.is_multicast() || address.is_broadcast() {
            return Err(invalid("node_port.address", format!("{address} is not unicast")));
        }
        Ok(NodePortConfig { interface: self.interface, address })
    }
}

impl DnsSection {
    fn validate(self, service_cidr: Ipv4Cidr) -> Result<Option<DnsConfig>, ConfigError> {
        if !self.enabled {
            return Ok(None);
        }
        let vip: Ipv4Addr = self
            .vip
            .parse()
            .map_err(|_| invalid("dns.vip", format!("{:?} is not an IPv4 address", self.vip)))?;
        if !service_cidr.contains(vip) {
            return Err(invalid(
                "dns.vip",
                format!("{vip} is outside services.cidr {service_cidr}"),
            ));
        }
        if self.port == 0 {
            return Err(invalid("dns.port", "must not be 0"));
        }
        if self.listen_port == 0 {
            return Err(invalid("dns.listen_port", "must not be 0"));
        }
        let d = self.cluster_domain.trim_end_matches('.');
        let labels_ok = !d.is_empty()
            && d.len() <= 200
            && d.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            });
        if !labels_ok {
            return Err(invalid(
                "dns.cluster_domain",
                format!("{:?} is not a lowercase DNS name", self.cluster_domain),
            ));
        }
        Ok(Some(DnsConfig {
            vip,
            port: self.port,
            cluster_domain: d.to_string(),
            listen_port: self.listen_port,
        }))
    }
}

impl ConntrackSection {
    fn validate(self) -> Result<ConntrackSettings, ConfigError> {
        if !(1..=16_777_216).contains(&self.max_entries) {
            return Err(invalid(
                "conntrack.max_entries",
                format!("must be from 1 to 16777216, got {}", self.max_entries),
            ));
        }
        let secs = |key: &str, v: u32| {
            if v == 0 || v > 30 * 86_400 {
                Err(invalid(
                    format!("conntrack.{key}"),
                    format!("must be from 1 to 2592000 seconds, got {v}"),
                ))
            } else {
                Ok(Duration::from_secs(u64::from(v)))
            }
        };
        Ok(ConntrackSettings {
            max_entries: self.max_entries as usize,
            tcp: [
                secs("tcp_syn_sent_secs", self.tcp_syn_sent_secs)?,
                secs("tcp_syn_recv_secs", self.tcp_syn_recv_secs)?,
                secs("tcp_established_secs", self.tcp_established_secs)?,
                secs("tcp_fin_wait_secs", self.tcp_fin_wait_secs)?,
                secs("tcp_close_wait_secs", self.tcp_close_wait_secs)?,
                secs("tcp_last_ack_secs", self.tcp_last_ack_secs)?,
                secs("tcp_time_wait_secs", self.tcp_time_wait_secs)?,
                secs("tcp_close_secs", self.tcp_close_secs)?,
            ],
            udp: secs("udp_secs", self.udp_secs)?,
            udp_assured: secs("udp_assured_secs", self.udp_assured_secs)?,
            icmp: secs("icmp_secs", self.icmp_secs)?,
        })
    }
}

impl OverlaySection {
    fn validate(self, own_cidr: Ipv4Cidr) -> Result<OverlayConfig, ConfigError> {
        let ip = &self.underlay_ip;
        let underlay_ip: Ipv4Addr = ip.parse().map_err(|_| {
            invalid("overlay.underlay_ip", format!("{ip:?} is not an IPv4 address"))
        })?;
        if underlay_ip.is_unspecified() || underlay_ip.is_multicast() || underlay_ip.is_broadcast()
        {
            return Err(invalid("overlay.underlay_ip", format!("{underlay_ip} is not unicast")));
        }
        if self.vni >= 1 << 24 {
            return Err(invalid(
                "overlay.vni",
                format!("must be below 16777216, got {}", self.vni),
            ));
        }
        if self.udp_port == 0 {
            return Err(invalid("overlay.udp_port", "must not be 0"));
        }
        if let Some(i) = &self.afxdp_interface {
            crate::sys::tun::validate_ifname(i)
                .map_err(|e| invalid("overlay.afxdp_interface", e.to_string()))?;
        }
        let min = MIN_MTU + OVERLAY_OVERHEAD;
        if !(min..=MAX_MTU + OVERLAY_OVERHEAD).contains(&self.underlay_mtu) {
            return Err(invalid(
                "overlay.underlay_mtu",
                format!(
                    "must be from {min} to {}, got {}",
                    MAX_MTU + OVERLAY_OVERHEAD,
                    self.underlay_mtu
                ),
            ));
        }
        if !(1..=DEFAULT_MAX_PEERS).contains(&self.max_peers) {
            return Err(invalid(
                "overlay.max_peers",
                format!("must be from 1 to {DEFAULT_MAX_PEERS}, got {}", self.max_peers),
            ));
        }
        if self.peers.len() > self.max_peers as usize {
            return Err(invalid(
                "overlay.peers",
                format!(
                    "{} peers, more than overlay.max_peers {}",
                    self.peers.len(),
                    self.max_peers
                ),
            ));
        }
        let mut peers: Vec<PeerConfig> = Vec::with_capacity(self.peers.len());
        for (i, p) in self.peers.iter().enumerate() {
            let peer = PeerConfig::parse(&p.name, &p.ip, &p.pod_cidr, p.vtep_mac.as_deref())
                .and_then(|peer| peer.check_fits(own_cidr, underlay_ip, &peers).map(|()| peer))
                .map_err(|e| invalid(format!("overlay.peers[{i}].{}", e.field), e.reason))?;
            peers.push(peer);
        }
        Ok(OverlayConfig {
            underlay_ip,
            vni: self.vni,
            udp_port: self.udp_port,
            underlay_mtu: self.underlay_mtu,
            udp_checksum: self.udp_checksum,
            afxdp_interface: self.afxdp_interface,
            max_peers: self.max_peers as usize,
            peers,
        })
    }
}

/// The default gateway MAC: locally administered `02:70:73` ("ps") followed by the low 24
/// bits of the gateway address, so every node of a cluster gets a distinct one.
pub fn default_gateway_mac(gateway: Ipv4Addr) -> MacAddr {
    let o = gateway.octets();
    MacAddr([0x02, 0x70, 0x73, o[1], o[2], o[3]])
}

/// Kubernetes node names are DNS-1123 subdomains.
fn validate_node_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 253 {
        return Err(format!("must be 1 to 253 characters, got {}", name.len()));
    }
    let ok_label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if !name.split('.').all(ok_label) {
        return Err(format!(
            "{name:?} is not a DNS-1123 subdomain (lowercase letters, digits, '-' and '.')"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "[node]\nname = \"node-1\"\npod_cidr = \"10.244.1.0/24\"\n";

    fn err(text: &str) -> String {
        Config::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn minimal_config_gets_documented_defaults() {
        let c = Config::parse(MINIMAL).unwrap();
        assert_eq!(c.node.gateway, Ipv4Addr::new(10, 244, 1, 1));
        assert_eq!(c.node.gateway_mac.to_string(), "02:70:73:f4:01:01");
        assert_eq!(c.node.mtu, 1500);
        assert_eq!(c.host_port, Some(HostPortConfig { name: "psw0".into() }));
        assert_eq!(c.control.socket, PathBuf::from(DEFAULT_SOCKET));
        assert_eq!(c.fdb.max_entries, 65_536);
        assert_eq!(c.fdb.aging, Duration::from_secs(300));
        assert_eq!(c.ports.max_ports, 1024);
    }

    #[test]
    fn the_example_file_is_valid() {
        let text = include_str!("../../../config/node.example.toml");
        Config::parse(text).unwrap();
    }

    #[test]
    fn to_toml_round_trips() {
        let mut c = Config::parse(MINIMAL).unwrap();
        c.host_port = None;
        c.fdb.aging = Duration::from_secs(7);
        assert_eq!(Config::parse(&c.to_toml()).unwrap(), c);
        let d = Config::for_node("n2", "10.244.2.0/24".parse().unwrap(), "/tmp/x.sock".into());
        assert_eq!(Config::parse(&d.to_toml()).unwrap(), d);
    }

    #[test]
    fn afxdp_section_sizes_the_umem_and_names_bad_keys() {
        let c = Config::parse(MINIMAL).unwrap();
        assert_eq!(c.afxdp, AfxdpConfig { rx_frames: 4096, tx_frames: 4096 });
        let c = Config::parse(&format!("{MINIMAL}[afxdp]\nrx_frames = 16384\n")).unwrap();
        assert_eq!(c.afxdp, AfxdpConfig { rx_frames: 16384, tx_frames: 4096 });
        assert_eq!(Config::parse(&c.to_toml()).unwrap(), c);
        for (extra, key) in [
            ("rx_frames = 3000", "afxdp.rx_frames"),
            ("rx_frames = 32", "afxdp.rx_frames"),
            ("tx_frames = 65536", "afxdp.tx_frames"),
            ("umem = 1", "umem"),
        ] {
            let e = Config::parse(&format!("{MINIMAL}[afxdp]\n{extra}\n")).unwrap_err();
            assert!(e.to_string().contains(key), "{extra}: {e}");
        }
    }

    #[test]
    fn worker_node_port_and_dns_sections() {
        let c = Config::parse(&format!(
            "{MINIMAL}[worker]\nbusy_poll = \"always\"\ncpu = 0\n\
             [node_port]\ninterface = \"eth1\"\naddress = \"192.168.5.1\"\n\
             [dns]\ncluster_domain = \"corp.example\"\nlisten_port = 5353\n"
        ))
        .unwrap();
        assert_eq!(
            c.worker,
            WorkerConfig { count: 1, busy_poll: BusyPoll::Always, pin: Pinning::Cpus(vec![0]) }
        );
        assert_eq!(c.node_port.as_ref().unwrap().address, Ipv4Addr::new(192, 168, 5, 1));
        let d = c.dns.as_ref().unwrap();
        assert_eq!((d.vip, d.port, d.listen_port), (Ipv4Addr::new(10, 96, 0, 10), 53, 5353));
        assert_eq!(Config::parse(&c.to_toml()).unwrap(), c);
        let w = Config::parse(&format!("{MINIMAL}[worker]\nbusy_poll = \"50us\"\n")).unwrap();
        assert_eq!(w.worker.busy_poll, BusyPoll::After(Duration::from_micros(50)));
        let bad = |extra: &str, key: &str| {
            let e = Config::parse(&format!("{MINIMAL}{extra}")).unwrap_err().to_string();
            assert!(e.contains(key), "{extra}: {e}");
        };
        bad("[worker]\nbusy_poll = \"sometimes\"\n", "worker.busy_poll");
        bad("[worker]\ncpu = 4096\n", "worker.cpu");
        bad("[worker]\ncount = 0\n", "worker.count");
        bad("[worker]\ncount = 65\n", "worker.count");
        bad("[worker]\ncount = 2\ncpus = [0]\n", "worker.cpus");
        bad("[worker]\ncount = 1\ncpus = [0]\npin = false\n", "worker.cpus");
        bad("[worker]\ncpu = 0\ncpus = [0]\n", "worker.cpu");
        let d = Config::parse(MINIMAL).unwrap().worker;
        assert_eq!((d.count, d.pin.clone()), (cpus(), Pinning::Auto), "one pinned worker per CPU");
        let two = Config::parse(&format!("{MINIMAL}[worker]\ncount = 2\npin = false\n")).unwrap();
        assert_eq!((two.worker.count, two.worker.cpu_of(1)), (2, None));
        let round = Config::parse(&two.to_toml()).unwrap();
        assert_eq!(round.worker, two.worker, "written back as read");
        bad("[node_port]\ninterface = \"eth1\"\n", "node_port.address");
        bad("[dns]\nvip = \"10.0.0.10\"\n", "dns.vip");
        bad("[dns]\ncluster_domain = \"Bad_Domain\"\n", "dns.cluster_domain");
    }

    const OVERLAY: &str = "[overlay]\nunderlay_ip = \"192.168.0.1\"\n\
        [[overlay.peers]]\nname = \"node-2\"\nip = \"192.168.0.2\"\npod_cidr = \"10.244.2.0/24\"\n\
        [[overlay.peers]]\nname = \"node-3\"\nip = \"192.168.0.3\"\npod_cidr = \"10.244.3.0/24\"\n\
        vtep_mac = \"02:aa:bb:cc:dd:ee\"\n";

    #[test]
    fn overlay_defaults_and_round_trip() {
        let c = Config::parse(&format!("{MINIMAL}{OVERLAY}")).unwrap();
        let o = c.overlay.as_ref().unwrap();
        assert_eq!((o.vni, o.udp_port, o.underlay_mtu, o.udp_checksum), (1, 4789, 1500, false));
        assert_eq!(c.node.mtu, 1450, "pod MTU defaults to the underlay's minus 50");
        assert_eq!(o.peers.len(), 2);
        assert_eq!(o.peers[0].vtep_mac, default_gateway_mac(Ipv4Addr::new(10, 244, 2, 1)));
        assert_eq!(o.peers[1].vtep_mac.to_string(), "02:aa:bb:cc:dd:ee");
        assert_eq!(Config::parse(&c.to_toml()).unwrap(), c);
        let jumbo = Config::parse(&format!("{MINIMAL}{OVERLAY}underlay_mtu = 9000\n"));
        assert!(jumbo.is_err(), "keys after a table array go to the last peer");
        let c = Config::parse(&format!(
            "{MINIMAL}[overlay]\nunderlay_ip = \"192.168.0.1\"\nunderlay_mtu = 9000\n"
        ))
        .unwrap();
        assert_eq!(c.node.mtu, 1500, "an explicit default stays below the overlay limit");
    }

    #[test]
    fn overlay_errors_name_the_key() {
        let ov = |extra: &str| {
            err(&format!("{MINIMAL}[overlay]\nunderlay_ip = \"192.168.0.1\"\n{extra}"))
        };
        assert!(ov("vni = 16777216\n").starts_with("config overlay.vni:"));
        assert!(ov("udp_port = 0\n").starts_with("config overlay.udp_port:"));
        assert!(ov("underlay_mtu = 100\n").starts_with("config overlay.underlay_mtu:"));
        assert!(ov("max_peers = 0\n").starts_with("config overlay.max_peers:"));
        let peer = |name: &str, ip: &str, cidr: &str| {
            format!("[[overlay.peers]]\nname = \"{name}\"\nip = \"{ip}\"\npod_cidr = \"{cidr}\"\n")
        };
        let e = ov(&peer("n2", "192.168.0.1", "10.244.2.0/24"));
        assert!(e.starts_with("config overlay.peers[0].ip:") && e.contains("own"), "{e}");
        let e = ov(&peer("n2", "192.168.0.2", "10.244.0.0/16"));
        assert!(
            e.starts_with("config overlay.peers[0].pod_cidr:") && e.contains("overlaps"),
            "{e}"
        );
        let e = ov(&format!(
            "{}{}",
            peer("n2", "192.168.0.2", "10.244.2.0/24"),
            peer("n2", "192.168.0.3", "10.244.3.0/24")
        ));
        assert!(e.starts_with("config overlay.peers[1].name:"), "{e}");
        let e = ov(&format!(
            "{}{}",
            peer("n2", "192.168.0.2", "10.244.2.0/24"),
            peer("n3", "192.168.0.3", "10.244.2.128/25")
        ));
        assert!(e.starts_with("config overlay.peers[1].pod_cidr:"), "{e}");
        let e = ov(&peer("N_2", "192.168.0.2", "10.244.2.0/24"));
        assert!(e.starts_with("config overlay.peers[0].name:"), "{e}");
        let e = ov(&peer("n2", "10.0.0.x", "10.244.2.0/24"));
        assert!(e.starts_with("config overlay.peers[0].ip:"), "{e}");
        let e = err(&format!("{MINIMAL}mtu = 1500\n[overlay]\nunderlay_ip = \"192.168.0.1\"\n"));
        assert!(e.starts_with("config node.mtu:") && e.contains("1450"), "{e}");
        let e = err(&format!("{MINIMAL}[overlay]\nvni = 5\n"));
        assert!(e.contains("underlay_ip"), "{e}");
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = err(&format!("{MINIMAL}[fdb]\nmax_entires = 5\n"));
        assert!(e.contains("max_entires"), "{e}");
        let e = err(&format!("{MINIMAL}[bogus]\n"));
        assert!(e.contains("bogus"), "{e}");
    }

    #[test]
    fn wrong_types_name_the_key() {
        let e = err(&format!("{MINIMAL}[fdb]\nmax_entries = \"lots\"\n"));
        assert!(e.starts_with("config fdb.max_entries:"), "{e}");
        let e = err("[node]\nname = \"n\"\npod_cidr = \"10.244.1.0/24\"\nmtu = -1\n");
        assert!(e.starts_with("config node.mtu:"), "{e}");
    }

    #[test]
    fn bad_values_name_the_key_and_say_why() {
        let cases = [
            ("[node]\nname = \"Node_1\"\npod_cidr = \"10.244.1.0/24\"\n", "node.name"),
            ("[node]\nname = \"n\"\npod_cidr = \"10.244.1.5/24\"\n", "node.pod_cidr"),
            ("[node]\nname = \"n\"\npod_cidr = \"10.244.1.0/31\"\n", "node.pod_cidr"),
            ("[node]\nname = \"n\"\npod_cidr = \"10.244.1.0/24\"\ngateway = \"10.9.9.9\"\n", "node.gateway"),
            (
                "[node]\nname = \"n\"\npod_cidr = \"10.244.1.0/24\"\ngateway_mac = \"01:00:5e:00:00:01\"\n",
                "node.gateway_mac",
            ),
            ("[node]\nname = \"n\"\npod_cidr = \"10.244.1.0/24\"\nmtu = 9001\n", "node.mtu"),
            (&format!("{MINIMAL}[host_port]\nname = \"this-name-is-too-long\"\n"), "host_port.name"),
            (&format!("{MINIMAL}[fdb]\nmax_entries = 0\n"), "fdb.max_entries"),
            (&format!("{MINIMAL}[fdb]\naging_secs = 0\n"), "fdb.aging_secs"),
            (&format!("{MINIMAL}[ports]\nmax_ports = 5000\n"), "ports.max_ports"),
            (&format!("{MINIMAL}[control]\nsocket = \"\"\n"), "control.socket"),
        ];
        for (text, key) in cases {
            let e = err(text);
            assert!(e.starts_with(&format!("config {key}:")), "expected {key}, got {e}");
        }
    }

    #[test]
    fn missing_required_keys_are_named() {
        let e = err("[node]\nname = \"n\"\n");
        assert!(e.contains("pod_cidr"), "{e}");
        let e = err("");
        assert!(e.contains("node"), "{e}");
    }
}
