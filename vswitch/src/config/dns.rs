//! The `[dns]` section: the cluster DNS responder (enabled by default), its Service address
//! and port, the cluster domain and the port it listens on.

use std::net::Ipv4Addr;

use serde::Deserialize;

use crate::cidr::Ipv4Cidr;

use super::{invalid, ConfigError};

/// The cluster DNS responder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    /// The DNS Service address pods are given (inside the Service CIDR).
    pub vip: Ipv4Addr,
    /// Its port (UDP and TCP).
    pub port: u16,
    /// Names are `<service>.<namespace>.svc.<cluster_domain>`.
    pub cluster_domain: String,
    /// The responder listens on the gateway address (host port) on this port; the DNS
    /// Service's endpoint.
    pub listen_port: u16,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DnsSection {
    #[serde(default = "default_true")]
    enabled: bool,
    #[serde(default = "default_dns_vip")]
    vip: String,
    #[serde(default = "default_dns_port")]
    port: u16,
    #[serde(default = "default_cluster_domain")]
    cluster_domain: String,
    #[serde(default = "default_dns_port")]
    listen_port: u16,
}

impl Default for DnsSection {
    fn default() -> Self {
        DnsSection {
            enabled: true,
            vip: default_dns_vip(),
            port: default_dns_port(),
            cluster_domain: default_cluster_domain(),
            listen_port: default_dns_port(),
        }
    }
}

fn default_true() -> bool {
    true
}

fn default_dns_vip() -> String {
    "10.96.0.10".into()
}

fn default_dns_port() -> u16 {
    53
}

fn default_cluster_domain() -> String {
    "cluster.local".into()
}

impl DnsSection {
    pub(super) fn validate(self, service_cidr: Ipv4Cidr) -> Result<Option<DnsConfig>, ConfigError> {
        if !self.enabled {
            return Ok(None);
        }
        let vip: Ipv4Addr = self
            .vip
            .parse()
            .map_err(|_| invalid("dns.vip", format!("{:?} is not an IPv4 address", self.vip)))?;
        if !service_cidr.contains(vip) {
            return Err(invalid(
                "dns.vip",
                format!("{vip} is outside services.cidr {service_cidr}"),
            ));
        }
        if self.port == 0 {
            return Err(invalid("dns.port", "must not be 0"));
        }
        if self.listen_port == 0 {
            return Err(invalid("dns.listen_port", "must not be 0"));
        }
        let d = self.cluster_domain.trim_end_matches('.');
        let labels_ok = !d.is_empty()
            && d.len() <= 200
            && d.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            });
        if !labels_ok {
            return Err(invalid(
                "dns.cluster_domain",
                format!("{:?} is not a lowercase DNS name", self.cluster_domain),
            ));
        }
        Ok(Some(DnsConfig {
            vip,
            port: self.port,
            cluster_domain: d.to_string(),
            listen_port: self.listen_port,
        }))
    }
}
