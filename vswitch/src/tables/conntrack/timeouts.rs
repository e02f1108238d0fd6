//! The table's limit and its timeouts, one per protocol state (OVS's `conntrack-tp.c`):
//! [`ConntrackConfig`], Linux's values by default, and which timeout a state gets.

use std::time::Duration;

use super::tcp::{CtState, TcpState};

/// Timeouts and limit. Defaults are Linux's (`net.netfilter.nf_conntrack_*_timeout*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConntrackConfig {
    /// Entries at most (live or expired but not yet removed); capped at
    /// [`MAX_ENTRIES_LIMIT`](super::MAX_ENTRIES_LIMIT).
    pub max_entries: usize,
    /// Entries one pod port may own at most ([`Conntrack::create_for`](super::Conntrack::create_for)).
    pub max_per_port: usize,
    /// TCP `SynSent`; also the cap for any TCP state before a reply was seen.
    pub tcp_syn_sent: Duration,
    /// TCP `SynRecv`.
    pub tcp_syn_recv: Duration,
    /// TCP `Established`.
    pub tcp_established: Duration,
    /// TCP `FinWait`.
    pub tcp_fin_wait: Duration,
    /// TCP `CloseWait`.
    pub tcp_close_wait: Duration,
    /// TCP `LastAck`.
    pub tcp_last_ack: Duration,
    /// TCP `TimeWait`.
    pub tcp_time_wait: Duration,
    /// TCP `Close` (after RST).
    pub tcp_close: Duration,
    /// UDP before a reply was seen.
    pub udp: Duration,
    /// UDP after a reply was seen (Linux: `udp_timeout_stream`).
    pub udp_assured: Duration,
    /// ICMP echo.
    pub icmp: Duration,
}

impl Default for ConntrackConfig {
    fn default() -> ConntrackConfig {
        let s = Duration::from_secs;
        ConntrackConfig {
            max_entries: 262_144,
            max_per_port: 262_144 / 8,
            tcp_syn_sent: s(120),
            tcp_syn_recv: s(60),
            tcp_established: s(432_000),
            tcp_fin_wait: s(120),
            tcp_close_wait: s(60),
            tcp_last_ack: s(30),
            tcp_time_wait: s(120),
            tcp_close: s(10),
            udp: s(30),
            udp_assured: s(120),
            icmp: s(30),
        }
    }
}

impl ConntrackConfig {
    /// The timeout of `state`, `replied` telling whether a reply has been seen.
    #[inline]
    pub(super) fn timeout(&self, state: CtState, replied: bool) -> Duration {
        match state {
            CtState::Tcp(s) => {
                let t = match s {
                    TcpState::SynSent => self.tcp_syn_sent,
                    TcpState::SynRecv => self.tcp_syn_recv,
                    TcpState::Established => self.tcp_established,
                    TcpState::FinWait => self.tcp_fin_wait,
                    TcpState::CloseWait => self.tcp_close_wait,
                    TcpState::LastAck => self.tcp_last_ack,
                    TcpState::TimeWait => self.tcp_time_wait,
                    TcpState::Close => self.tcp_close,
                };
                if replied {
                    t
                } else {
                    t.min(self.tcp_syn_sent)
                }
            }
            CtState::Udp { assured: false } => self.udp,
            CtState::Udp { assured: true } => self.udp_assured,
            CtState::Icmp => self.icmp,
        }
    }
}
