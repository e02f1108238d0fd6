//! The `[control]` section: where the control API's Unix socket listens, and which group
//! besides root and the switch's own user may use it.

use std::path::PathBuf;

use serde::Deserialize;

use super::{invalid, ConfigError};

pub use podswitch_api::limits::DEFAULT_SOCKET;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ControlSection {
    #[serde(default = "default_socket")]
    socket: PathBuf,
    /// A group name or a numeric gid.
    #[serde(default)]
    group: Option<String>,
}

impl Default for ControlSection {
    fn default() -> Self {
        ControlSection { socket: default_socket(), group: None }
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
    /// The group whose members may use the socket besides root and the switch's own user
    /// (the socket file is given to it, mode 0660), as a gid resolved from the name in the
    /// file.
    pub group: Option<u32>,
}

impl ControlSection {
    /// Validates the section; a group name is looked up in the system's group database
    /// now, so an unknown one fails at start (and in `check-config`), naming the key.
    pub(super) fn validate(self) -> Result<ControlConfig, ConfigError> {
        if self.socket.as_os_str().is_empty() {
            return Err(invalid("control.socket", "must not be empty"));
        }
        let group = match self.group.as_deref() {
            None => None,
            Some(g) if !g.is_empty() && g.bytes().all(|b| b.is_ascii_digit()) => Some(
                g.parse::<u32>()
                    .map_err(|_| invalid("control.group", format!("gid {g} is out of range")))?,
            ),
            Some(g) => match crate::sys::process::group_id(g) {
                Ok(Some(gid)) => Some(gid),
                Ok(None) => return Err(invalid("control.group", format!("no group named {g:?}"))),
                Err(e) => {
                    return Err(invalid("control.group", format!("cannot look up {g:?}: {e}")))
                }
            },
        };
        Ok(ControlConfig { socket: self.socket, group })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    const MINIMAL: &str = "[node]\nname = \"node-1\"\npod_cidr = \"10.244.1.0/24\"\n";

    #[test]
    fn group_by_name_or_gid_and_unknown_names_the_key() {
        let c = Config::parse(&format!("{MINIMAL}[control]\ngroup = \"root\"\n")).unwrap();
        assert_eq!(c.control.group, Some(0));
        let c = Config::parse(&format!("{MINIMAL}[control]\ngroup = \"4242\"\n")).unwrap();
        assert_eq!(c.control.group, Some(4242));
        assert_eq!(Config::parse(&c.to_toml()).unwrap(), c);
        assert_eq!(Config::parse(MINIMAL).unwrap().control.group, None);
        for bad in ["no-such-group-psw", "99999999999", "a b", ""] {
            let e = Config::parse(&format!("{MINIMAL}[control]\ngroup = {bad:?}\n")).unwrap_err();
            assert!(e.to_string().starts_with("config control.group:"), "{bad:?}: {e}");
        }
    }
}
