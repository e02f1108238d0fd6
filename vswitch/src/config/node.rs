//! The `[node]` section: the node's name, pod CIDR, gateway address and MAC, and pod MTU
//! (bounded by the overlay's underlay MTU when there is one). Also the default gateway MAC
//! and the node-name rule, which overlay peers share.

use std::net::Ipv4Addr;

use serde::Deserialize;

use crate::cidr::Ipv4Cidr;
use crate::wire::MacAddr;

use super::{invalid, ConfigError};

/// Default pod MTU.
pub const DEFAULT_MTU: u32 = 1500;
pub use podswitch_api::limits::{MAX_MTU, MIN_MTU};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NodeSection {
    name: String,
    pod_cidr: String,
    gateway: Option<String>,
    gateway_mac: Option<String>,
    mtu: Option<u32>,
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

/// The default gateway MAC: locally administered `02:70:73` ("ps") followed by the low 24
/// bits of the gateway address, so every node of a cluster gets a distinct one.
pub fn default_gateway_mac(gateway: Ipv4Addr) -> MacAddr {
    let o = gateway.octets();
    MacAddr([0x02, 0x70, 0x73, o[1], o[2], o[3]])
}

/// Kubernetes node names are DNS-1123 subdomains.
pub(super) fn validate_node_name(name: &str) -> Result<(), String> {
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

impl NodeSection {
    /// Validates the section into a [`NodeConfig`]. The MTU's bound depends on the overlay,
    /// which is itself validated against the pod CIDR: `overlay` validates it once the pod
    /// CIDR is known and gives back its result (returned beside the node's) with the largest
    /// pod MTU it carries, if it bounds it.
    pub(super) fn validate<O>(
        self,
        overlay: impl FnOnce(Ipv4Cidr) -> Result<(O, Option<u32>), ConfigError>,
    ) -> Result<(NodeConfig, O), ConfigError> {
        validate_node_name(&self.name).map_err(|r| invalid("node.name", r))?;
        let pod_cidr: Ipv4Cidr =
            self.pod_cidr.parse().map_err(|e| invalid("node.pod_cidr", format!("{e}")))?;
        if !(8..=30).contains(&pod_cidr.prefix_len()) {
            return Err(invalid(
                "node.pod_cidr",
                format!("prefix length must be 8 to 30, got /{}", pod_cidr.prefix_len()),
            ));
        }
        let gateway = match self.gateway {
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
        let gateway_mac = match self.gateway_mac {
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
        let (overlay, bound) = overlay(pod_cidr)?;
        let mtu_limit = bound.unwrap_or(MAX_MTU);
        let mtu = self.mtu.unwrap_or(DEFAULT_MTU.min(mtu_limit));
        if !(MIN_MTU..=mtu_limit).contains(&mtu) {
            let why = if bound.is_some() { " (overlay.underlay_mtu - 50)" } else { "" };
            return Err(invalid(
                "node.mtu",
                format!("must be from {MIN_MTU} to {mtu_limit}{why}, got {mtu}"),
            ));
        }
        Ok((NodeConfig { name: self.name, pod_cidr, gateway, gateway_mac, mtu }, overlay))
    }
}
