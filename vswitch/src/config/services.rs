//! The `[services]` section: the Service CIDR (ClusterIPs), how many Services, and the
//! largest Maglev table per Service.

use serde::Deserialize;

use crate::cidr::Ipv4Cidr;

use super::{invalid, ConfigError};

/// Default Service CIDR (ClusterIPs), Kubernetes' default.
pub const DEFAULT_SERVICE_CIDR: &str = "10.96.0.0/12";
/// Default and largest number of Services.
pub const DEFAULT_MAX_SERVICES: u32 = 65_536;
/// Default (and largest) Maglev lookup table size per Service: a prime.
pub const DEFAULT_MAGLEV_TABLE_SIZE: u32 = 65_537;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ServicesSection {
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

fn default_service_cidr() -> String {
    DEFAULT_SERVICE_CIDR.to_string()
}
fn default_max_services() -> u32 {
    DEFAULT_MAX_SERVICES
}
fn default_maglev_size() -> u32 {
    DEFAULT_MAGLEV_TABLE_SIZE
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

impl ServicesSection {
    pub(super) fn validate(self, pod_cidr: Ipv4Cidr) -> Result<ServicesConfig, ConfigError> {
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
