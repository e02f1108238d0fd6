//! The `[ports]` section: how many ports the switch holds.

use serde::Deserialize;

use super::{invalid, ConfigError};

/// Default and largest number of ports.
pub const DEFAULT_MAX_PORTS: u32 = 1024;
/// Port ids are 16-bit.
pub const MAX_PORTS: u32 = 4096;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PortsSection {
    #[serde(default = "default_max_ports")]
    max_ports: u32,
}

impl Default for PortsSection {
    fn default() -> Self {
        PortsSection { max_ports: default_max_ports() }
    }
}

fn default_max_ports() -> u32 {
    DEFAULT_MAX_PORTS
}

/// Port table settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortsConfig {
    /// Most ports (pod ports plus the host port).
    pub max_ports: usize,
}

impl PortsSection {
    /// Validates the section.
    pub(super) fn validate(self) -> Result<PortsConfig, ConfigError> {
        if !(2..=MAX_PORTS).contains(&self.max_ports) {
            return Err(invalid(
                "ports.max_ports",
                format!("must be from 2 to {MAX_PORTS}, got {}", self.max_ports),
            ));
        }
        Ok(PortsConfig { max_ports: self.max_ports as usize })
    }
}
