//! The `[fdb]` section: the MAC table's size and aging time.

use std::time::Duration;

use serde::Deserialize;

use super::{invalid, ConfigError};

/// Default MAC table size.
pub const DEFAULT_FDB_MAX_ENTRIES: u32 = 65_536;
/// Largest MAC table size accepted.
pub const MAX_FDB_ENTRIES: u32 = 1 << 24;
/// Default MAC aging time in seconds (the 802.1D default, as the Linux bridge uses).
pub const DEFAULT_FDB_AGING_SECS: u64 = 300;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FdbSection {
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

fn default_fdb_max() -> u32 {
    DEFAULT_FDB_MAX_ENTRIES
}
fn default_fdb_aging() -> u64 {
    DEFAULT_FDB_AGING_SECS
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

impl FdbSection {
    /// Validates the section.
    pub(super) fn validate(self) -> Result<FdbConfig, ConfigError> {
        if !(1..=MAX_FDB_ENTRIES).contains(&self.max_entries) {
            return Err(invalid(
                "fdb.max_entries",
                format!("must be from 1 to {MAX_FDB_ENTRIES}, got {}", self.max_entries),
            ));
        }
        if !(1..=86_400 * 365).contains(&self.aging_secs) {
            return Err(invalid(
                "fdb.aging_secs",
                format!("must be from 1 to 31536000 seconds, got {}", self.aging_secs),
            ));
        }
        Ok(FdbConfig {
            max_entries: self.max_entries as usize,
            aging: Duration::from_secs(self.aging_secs),
        })
    }
}
