//! The `[overlay]` section and its `[[overlay.peers]]`: this node's underlay address and
//! VXLAN settings, and the other nodes it tunnels to. [`PeerConfig`] is also how the API
//! adds peers, so its checks (one field named per error) live here for both.

use std::net::Ipv4Addr;

use serde::Deserialize;

use crate::cidr::Ipv4Cidr;
use crate::wire::MacAddr;

use super::node::{default_gateway_mac, validate_node_name, DEFAULT_MTU, MAX_MTU, MIN_MTU};
use super::{invalid, ConfigError};

/// Default VXLAN network identifier (Flannel's).
pub const DEFAULT_VNI: u32 = 1;
/// Default and largest number of overlay peers.
pub const DEFAULT_MAX_PEERS: u32 = 4096;

/// Bytes VXLAN adds in front of a pod's IPv4 packet on the underlay (outer IPv4 20, UDP 8,
/// VXLAN 8, inner Ethernet 14).
pub const OVERLAY_OVERHEAD: u32 = 50;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct OverlaySection {
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
pub(super) struct PeerSection {
    name: String,
    ip: String,
    pod_cidr: String,
    vtep_mac: Option<String>,
}

fn default_mtu() -> u32 {
    DEFAULT_MTU
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

impl OverlaySection {
    pub(super) fn validate(self, own_cidr: Ipv4Cidr) -> Result<OverlayConfig, ConfigError> {
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
