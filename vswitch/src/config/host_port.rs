//! The `[host_port]` section: the TAP device in the node's namespace that carries the
//! gateway address (enabled by default), and its name.

use serde::Deserialize;

use super::{invalid, ConfigError};

/// Default host port name.
pub const DEFAULT_HOST_PORT: &str = "psw0";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HostPortSection {
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

fn yes() -> bool {
    true
}

fn default_host_port() -> String {
    DEFAULT_HOST_PORT.to_string()
}

/// The host port: a TAP device in the node's namespace carrying the gateway address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPortConfig {
    /// Interface name in the node namespace.
    pub name: String,
}

impl HostPortSection {
    /// Validates the section: `None` when the host port is disabled.
    pub(super) fn validate(self) -> Result<Option<HostPortConfig>, ConfigError> {
        if !self.enabled {
            return Ok(None);
        }
        crate::sys::tun::validate_ifname(&self.name)
            .map_err(|e| invalid("host_port.name", e.to_string()))?;
        Ok(Some(HostPortConfig { name: self.name }))
    }
}
