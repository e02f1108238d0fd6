//! The `[node_port]` section: the interface NodePort traffic arrives on and the node address
//! node ports are taken on (by default the overlay's underlay address).

use std::net::Ipv4Addr;

use serde::Deserialize;

use super::overlay::OverlayConfig;
use super::{invalid, ConfigError};

/// Where NodePort traffic arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePortConfig {
    /// The interface carrying the node's address (an XDP program there hands node-port
    /// packets to the switch; everything else passes to the kernel untouched).
    pub interface: String,
    /// The node's address: node ports are taken on it.
    pub address: Ipv4Addr,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NodePortSection {
    interface: String,
    address: Option<String>,
}

impl NodePortSection {
    pub(super) fn validate(
        self,
        overlay: Option<&OverlayConfig>,
    ) -> Result<NodePortConfig, ConfigError> {
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
        if let Some(ul) = overlay.and_then(|o| o.afxdp_interface.as_ref()) {
            if *ul == self.interface {
                // One XDP program and one AF_XDP socket per queue: the two would need one
                // shared filter and port, which the switch does not build.
                return Err(invalid(
                    "overlay.afxdp_interface",
                    format!("{ul} is also node_port.interface; use the UDP underlay (remove afxdp_interface) with NodePort on the same interface"),
                ));
            }
        }
        Ok(NodePortConfig { interface: self.interface, address })
    }
}
