//! The node configuration file: its serde shape, and its conversion into a validated
//! [`Config`] whose existence proves every value is usable.
//!
//! Validation happens once, at the edge: `podswitch run` refuses to start on any error, so the
//! daemon is never half-configured, and the switch core takes the validated types and cannot
//! fail on them. Every error names the key (`fdb.max_entries: ...`). Unknown keys are
//! rejected, not ignored, so a typo never silently falls back to a default.
//!
//! One file per section of the file (`[node]`, `[host_port]`, `[control]`, `[fdb]`,
//! `[ports]`, `[overlay]`, `[services]`, `[conntrack]`, `[node_port]`, `[dns]`, `[worker]`,
//! `[afxdp]`), each holding that section's serde shape, its defaults, its validated type
//! and its validation. This module holds the file as a whole: [`Config`], parsing, the
//! order sections are validated in (some depend on others), rendering back to TOML, and
//! [`ConfigError`]. Every public name is re-exported here.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::cidr::Ipv4Cidr;

mod afxdp;
mod conntrack;
mod control;
mod dns;
mod fdb;
mod host_port;
mod node;
mod node_port;
mod overlay;
mod ports;
mod services;
mod worker;

use afxdp::AfxdpSection;
use conntrack::ConntrackSection;
use control::ControlSection;
use dns::DnsSection;
use fdb::FdbSection;
use host_port::HostPortSection;
use node::NodeSection;
use node_port::NodePortSection;
use overlay::OverlaySection;
use ports::PortsSection;
use services::ServicesSection;
use worker::WorkerSection;

pub use afxdp::{AfxdpConfig, MAX_AFXDP_FRAMES, MIN_AFXDP_FRAMES};
pub use conntrack::{ConntrackSettings, TcpTimeouts};
pub use control::{ControlConfig, DEFAULT_SOCKET};
pub use dns::DnsConfig;
pub use fdb::{FdbConfig, DEFAULT_FDB_AGING_SECS, DEFAULT_FDB_MAX_ENTRIES, MAX_FDB_ENTRIES};
pub use host_port::{HostPortConfig, DEFAULT_HOST_PORT};
pub use node::{default_gateway_mac, NodeConfig, DEFAULT_MTU, MAX_MTU, MIN_MTU};
pub use node_port::NodePortConfig;
pub use overlay::{
    OverlayConfig, PeerConfig, PeerError, DEFAULT_MAX_PEERS, DEFAULT_VNI, OVERLAY_OVERHEAD,
};
pub use ports::{PortsConfig, DEFAULT_MAX_PORTS, MAX_PORTS};
pub use services::{
    ServicesConfig, DEFAULT_MAGLEV_TABLE_SIZE, DEFAULT_MAX_SERVICES, DEFAULT_SERVICE_CIDR,
};
pub use worker::{cpus, BusyPoll, Pinning, WorkerConfig, DEFAULT_BUSY_POLL, MAX_WORKERS};

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
        s += &format!("[control]\nsocket = {:?}\n", self.control.socket.display().to_string());
        if let Some(g) = self.control.group {
            s += &format!("group = \"{g}\"\n");
        }
        s += "\n";
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
            "\n[conntrack]\nmax_entries = {}\n{}tcp_syn_sent_secs = {}\ntcp_syn_recv_secs = {}\ntcp_established_secs = {}\ntcp_fin_wait_secs = {}\ntcp_close_wait_secs = {}\ntcp_last_ack_secs = {}\ntcp_time_wait_secs = {}\ntcp_close_secs = {}\nudp_secs = {}\nudp_assured_secs = {}\nicmp_secs = {}\n",
            c.max_entries, c.max_per_port.map_or(String::new(), |m| format!("max_per_port = {m}\n")), t(c.tcp.syn_sent), t(c.tcp.syn_recv), t(c.tcp.established), t(c.tcp.fin_wait), t(c.tcp.close_wait), t(c.tcp.last_ack), t(c.tcp.time_wait), t(c.tcp.close), t(c.udp), t(c.udp_assured), t(c.icmp)
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
    /// Validates every section, in the order their keys depend on each other.
    pub(super) fn validate(self) -> Result<Config, ConfigError> {
        let overlay_section = self.overlay;
        let (node, overlay) = self.node.validate(|pod_cidr| {
            let overlay = overlay_section.map(|o| o.validate(pod_cidr)).transpose()?;
            let bound = overlay.as_ref().map(|o| o.underlay_mtu - overlay::OVERLAY_OVERHEAD);
            Ok((overlay, bound))
        })?;
        let host_port = self.host_port.validate()?;
        let control = self.control.validate()?;
        let fdb = self.fdb.validate()?;
        let ports = self.ports.validate()?;
        let pod_cidr = node.pod_cidr;
        let services = self.services.validate(pod_cidr)?;
        let node_port = match self.node_port {
            Some(np) => Some(np.validate(overlay.as_ref())?),
            None => None,
        };
        let dns = self.dns.validate(services.cidr)?;
        let worker = self.worker.validate()?;
        let afxdp = self.afxdp.validate()?;
        Ok(Config {
            node,
            host_port,
            control,
            fdb,
            ports,
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

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

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
