//! The `[conntrack]` section: the connection-tracking limit and one timeout per protocol
//! state (TCP's eight states by name, UDP before and after a reply, ICMP echo), in seconds
//! in the file and as [`Duration`]s once validated. The switch turns [`ConntrackSettings`]
//! into the table's own `ConntrackConfig` (see `pipeline::conntrack_config`).

use std::time::Duration;

use serde::Deserialize;

use super::{invalid, ConfigError};

/// Connection-tracking limit and timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConntrackSettings {
    /// Most tracked connections; when full, new connections are dropped (and counted),
    /// unassured ones early-dropped first (see `tables::conntrack`).
    pub max_entries: usize,
    /// Most connections one pod port may hold; `None`: an eighth of `max_entries`
    /// ([`ConntrackSettings::per_port_limit`]).
    pub max_per_port: Option<usize>,
    /// TCP timeouts, one per state.
    pub tcp: TcpTimeouts,
    /// UDP before a reply was seen.
    pub udp: Duration,
    /// UDP once a reply was seen.
    pub udp_assured: Duration,
    /// ICMP echo.
    pub icmp: Duration,
}

impl ConntrackSettings {
    /// The per-port limit in force: `max_per_port`, or `max_entries / 8` (at least 1).
    pub fn per_port_limit(&self) -> usize {
        self.max_per_port.unwrap_or((self.max_entries / DEFAULT_SHARE as usize).max(1))
    }
}

/// How long a TCP connection is kept without a packet, by state (keys
/// `conntrack.tcp_<state>_secs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpTimeouts {
    /// `SynSent`: the client's SYN was seen; also the cap of every state before a reply.
    pub syn_sent: Duration,
    /// `SynRecv`: the backend's SYN-ACK was seen.
    pub syn_recv: Duration,
    /// `Established`: the handshake completed (or the flow was picked up mid-stream).
    pub established: Duration,
    /// `FinWait`: one side sent FIN.
    pub fin_wait: Duration,
    /// `CloseWait`: the FIN was acknowledged; the other side may still send.
    pub close_wait: Duration,
    /// `LastAck`: both sides sent FIN; waiting for the last ACK.
    pub last_ack: Duration,
    /// `TimeWait`: both FINs acknowledged.
    pub time_wait: Duration,
    /// `Close`: after RST.
    pub close: Duration,
}

/// `max_per_port` is `max_entries / DEFAULT_SHARE` unless set. An eighth: a node runs up
/// to 110 pods (Kubernetes' default `maxPods`), most holding a handful of Service
/// connections, so a pod near its share is a flood or a busy proxy. With an eighth, one
/// flooding pod leaves seven eighths of the table to the others, and it takes eight pods
/// flooding at once to fill it (then early drop still frees unassured entries), while a
/// proxy pod on a default node can still hold 32,768 connections.
const DEFAULT_SHARE: u32 = 8;

/// Conntrack limits and timeouts (seconds), defaulting to Linux's nf_conntrack values.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct ConntrackSection {
    max_entries: u32,
    max_per_port: Option<u32>,
    tcp_syn_sent_secs: u32,
    tcp_syn_recv_secs: u32,
    tcp_established_secs: u32,
    tcp_fin_wait_secs: u32,
    tcp_close_wait_secs: u32,
    tcp_last_ack_secs: u32,
    tcp_time_wait_secs: u32,
    tcp_close_secs: u32,
    udp_secs: u32,
    udp_assured_secs: u32,
    icmp_secs: u32,
}

impl Default for ConntrackSection {
    fn default() -> Self {
        ConntrackSection {
            max_entries: 262_144,
            max_per_port: None,
            tcp_syn_sent_secs: 120,
            tcp_syn_recv_secs: 60,
            tcp_established_secs: 432_000,
            tcp_fin_wait_secs: 120,
            tcp_close_wait_secs: 60,
            tcp_last_ack_secs: 30,
            tcp_time_wait_secs: 120,
            tcp_close_secs: 10,
            udp_secs: 30,
            udp_assured_secs: 120,
            icmp_secs: 30,
        }
    }
}

impl ConntrackSection {
    /// Validates the section: a limit from 1 to 2^24, a per-port share from 1 to that
    /// limit, each timeout from 1 second to 30 days.
    pub(super) fn validate(self) -> Result<ConntrackSettings, ConfigError> {
        if !(1..=16_777_216).contains(&self.max_entries) {
            return Err(invalid(
                "conntrack.max_entries",
                format!("must be from 1 to 16777216, got {}", self.max_entries),
            ));
        }
        if let Some(m) = self.max_per_port.filter(|m| !(1..=self.max_entries).contains(m)) {
            return Err(invalid(
                "conntrack.max_per_port",
                format!("must be from 1 to conntrack.max_entries ({}), got {m}", self.max_entries),
            ));
        }
        let secs = |key: &str, v: u32| {
            if v == 0 || v > 30 * 86_400 {
                Err(invalid(
                    format!("conntrack.{key}"),
                    format!("must be from 1 to 2592000 seconds, got {v}"),
                ))
            } else {
                Ok(Duration::from_secs(u64::from(v)))
            }
        };
        Ok(ConntrackSettings {
            max_entries: self.max_entries as usize,
            max_per_port: self.max_per_port.map(|m| m as usize),
            tcp: TcpTimeouts {
                syn_sent: secs("tcp_syn_sent_secs", self.tcp_syn_sent_secs)?,
                syn_recv: secs("tcp_syn_recv_secs", self.tcp_syn_recv_secs)?,
                established: secs("tcp_established_secs", self.tcp_established_secs)?,
                fin_wait: secs("tcp_fin_wait_secs", self.tcp_fin_wait_secs)?,
                close_wait: secs("tcp_close_wait_secs", self.tcp_close_wait_secs)?,
                last_ack: secs("tcp_last_ack_secs", self.tcp_last_ack_secs)?,
                time_wait: secs("tcp_time_wait_secs", self.tcp_time_wait_secs)?,
                close: secs("tcp_close_secs", self.tcp_close_secs)?,
            },
            udp: secs("udp_secs", self.udp_secs)?,
            udp_assured: secs("udp_assured_secs", self.udp_assured_secs)?,
            icmp: secs("icmp_secs", self.icmp_secs)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const MINIMAL: &str = "[node]\nname = \"node-1\"\npod_cidr = \"10.244.1.0/24\"\n";

    #[test]
    fn tcp_timeouts_are_named_by_state() {
        let c = Config::parse(MINIMAL).unwrap().conntrack;
        assert_eq!(c.max_entries, 262_144);
        assert_eq!(c.tcp.syn_sent, Duration::from_secs(120));
        assert_eq!(c.tcp.established, Duration::from_secs(432_000));
        assert_eq!(c.tcp.close, Duration::from_secs(10));
        let c = Config::parse(&format!(
            "{MINIMAL}[conntrack]\ntcp_time_wait_secs = 7\ntcp_close_wait_secs = 8\n"
        ))
        .unwrap();
        assert_eq!(
            (c.conntrack.tcp.time_wait, c.conntrack.tcp.close_wait),
            (Duration::from_secs(7), Duration::from_secs(8))
        );
        assert_eq!(Config::parse(&c.to_toml()).unwrap(), c);
    }

    #[test]
    fn bad_timeouts_name_the_key() {
        for key in ["tcp_syn_recv_secs", "tcp_last_ack_secs", "udp_assured_secs", "icmp_secs"] {
            for v in [0, 2_592_001] {
                let e = Config::parse(&format!("{MINIMAL}[conntrack]\n{key} = {v}\n"))
                    .unwrap_err()
                    .to_string();
                assert!(e.starts_with(&format!("config conntrack.{key}:")), "{key}: {e}");
            }
        }
        for v in [0, 262_145] {
            let e =
                Config::parse(&format!("{MINIMAL}[conntrack]\nmax_per_port = {v}\n")).unwrap_err();
            assert!(e.to_string().starts_with("config conntrack.max_per_port:"), "{e}");
        }
        let c = Config::parse(&format!("{MINIMAL}[conntrack]\nmax_entries = 80\n")).unwrap();
        assert_eq!((c.conntrack.max_per_port, c.conntrack.per_port_limit()), (None, 10));
        let c = Config::parse(&format!("{MINIMAL}[conntrack]\nmax_per_port = 7\n")).unwrap();
        assert_eq!(c.conntrack.per_port_limit(), 7);
        assert_eq!(Config::parse(&c.to_toml()).unwrap(), c);
        let e = Config::parse(&format!("{MINIMAL}[conntrack]\nmax_entries = 0\n")).unwrap_err();
        assert!(e.to_string().starts_with("config conntrack.max_entries:"), "{e}");
    }
}
