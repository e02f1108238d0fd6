//! The `[control]` section: where the control API's Unix socket listens.

use std::path::PathBuf;

use serde::Deserialize;

use super::{invalid, ConfigError};

pub use podswitch_api::limits::DEFAULT_SOCKET;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ControlSection {
    #[serde(default = "default_socket")]
    socket: PathBuf,
}

impl Default for ControlSection {
    fn default() -> Self {
        ControlSection { socket: default_socket() }
    }
}

fn default_socket() -> PathBuf {
    PathBuf::from(DEFAULT_SOCKET)
}

/// Control API settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlConfig {
    /// Unix socket path.
    pub socket: PathBuf,
}

impl ControlSection {
    /// Validates the section.
    pub(super) fn validate(self) -> Result<ControlConfig, ConfigError> {
        if self.socket.as_os_str().is_empty() {
            return Err(invalid("control.socket", "must not be empty"));
        }
        Ok(ControlConfig { socket: self.socket })
    }
}
