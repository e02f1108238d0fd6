//! Protocol states and the TCP state machine (OVS's `conntrack-tcp.c`, Linux's
//! `tcp_conntracks`): the state a flow starts in from its first packet, and the state after
//! each later one. TCP is tracked on flags only (see the [module doc](super)); UDP and ICMP
//! have a single flag of state each, kept here beside TCP's so that [`CtState`] is whole.

use std::fmt;

use crate::wire::tcp::TcpFlags;

use super::key::CreateError;
use super::key::{Dir, PROTO_ICMP, PROTO_TCP};

/// TCP connection states, as Linux names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TcpState {
    /// The client's SYN was seen.
    SynSent,
    /// The backend's SYN-ACK was seen.
    SynRecv,
    /// The handshake completed (or the flow was picked up mid-stream).
    Established,
    /// One side sent FIN.
    FinWait,
    /// The FIN was acknowledged; the other side may still send.
    CloseWait,
    /// Both sides sent FIN; waiting for the last ACK.
    LastAck,
    /// Both FINs acknowledged.
    TimeWait,
    /// Reset.
    Close,
}

impl TcpState {
    /// The name used in the API (`syn_sent`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            TcpState::SynSent => "syn_sent",
            TcpState::SynRecv => "syn_recv",
            TcpState::Established => "established",
            TcpState::FinWait => "fin_wait",
            TcpState::CloseWait => "close_wait",
            TcpState::LastAck => "last_ack",
            TcpState::TimeWait => "time_wait",
            TcpState::Close => "close",
        }
    }
}

impl fmt::Display for TcpState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A connection's protocol state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CtState {
    /// TCP, tracked on flags.
    Tcp(TcpState),
    /// UDP, or any protocol other than TCP and ICMP.
    Udp {
        /// A reply has been seen (Linux: `ASSURED`), so the long timeout applies.
        assured: bool,
    },
    /// ICMP echo.
    Icmp,
}

impl fmt::Display for CtState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CtState::Tcp(s) => write!(f, "tcp {s}"),
            CtState::Udp { assured: true } => f.write_str("udp_assured"),
            CtState::Udp { assured: false } => f.write_str("udp"),
            CtState::Icmp => f.write_str("icmp"),
        }
    }
}

/// The state a flow starts in, from its protocol and its first packet's TCP flags.
pub(super) fn initial_state(
    proto: u8,
    first_tcp_flags: Option<u8>,
) -> Result<CtState, CreateError> {
    match proto {
        PROTO_TCP => {
            let flags = first_tcp_flags.unwrap_or(0);
            let f = TcpFlags(flags);
            if f.contains(TcpFlags::RST) || f.contains(TcpFlags::FIN) {
                Err(CreateError::InvalidTcp(flags))
            } else if f.contains(TcpFlags::SYN) {
                if f.contains(TcpFlags::ACK) {
                    Err(CreateError::InvalidTcp(flags))
                } else {
                    Ok(CtState::Tcp(TcpState::SynSent))
                }
            } else if f.contains(TcpFlags::ACK) {
                // Mid-stream pickup (nf_conntrack_tcp_loose).
                Ok(CtState::Tcp(TcpState::Established))
            } else {
                Err(CreateError::InvalidTcp(flags))
            }
        }
        PROTO_ICMP => Ok(CtState::Icmp),
        _ => Ok(CtState::Udp { assured: false }),
    }
}

/// The TCP state after a packet with `flags` in direction `dir`, from `state`.
///
/// Linux's `tcp_conntracks` table without window tracking, simplified. The packet's kind is
/// decided in Linux's order: RST, then SYN (with or without ACK), then FIN, then ACK; a
/// packet with none of these changes nothing.
///
/// | from \ packet | SYN (orig)        | SYN-ACK (reply) | FIN       | ACK                          |
/// |---------------|-------------------|-----------------|-----------|------------------------------|
/// | SynSent       | SynSent           | SynRecv         | –         | –                            |
/// | SynRecv       | –                 | SynRecv         | FinWait   | Established (orig only)      |
/// | Established   | –                 | –               | FinWait   | –                            |
/// | FinWait       | –                 | –               | LastAck   | CloseWait                    |
/// | CloseWait     | –                 | –               | LastAck   | –                            |
/// | LastAck       | –                 | –               | –         | TimeWait                     |
/// | TimeWait      | SynSent (reopen)  | –               | –         | –                            |
/// | Close         | SynSent (reopen)  | –               | –         | –                            |
///
/// RST gives `Close` from every state; "–" keeps the state. A reopened flow keeps its NAT.
#[inline]
pub fn tcp_next(state: TcpState, dir: Dir, flags: u8) -> TcpState {
    use TcpState::*;
    let f = TcpFlags(flags);
    if f.contains(TcpFlags::RST) {
        return Close;
    }
    if f.contains(TcpFlags::SYN) {
        return match (f.contains(TcpFlags::ACK), dir, state) {
            (false, Dir::Original, TimeWait | Close) => SynSent,
            (true, Dir::Reply, SynSent | SynRecv) => SynRecv,
            _ => state,
        };
    }
    if f.contains(TcpFlags::FIN) {
        return match state {
            SynRecv | Established => FinWait,
            FinWait | CloseWait => LastAck,
            s => s,
        };
    }
    if f.contains(TcpFlags::ACK) {
        return match (dir, state) {
            (Dir::Original, SynRecv) => Established,
            (_, FinWait) => CloseWait,
            (_, LastAck) => TimeWait,
            (_, s) => s,
        };
    }
    state
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_and_display_names() {
        assert_eq!(TcpState::TimeWait.to_string(), "time_wait");
        assert_eq!(CtState::Tcp(TcpState::SynSent).to_string(), "tcp syn_sent");
        let j = serde_json::to_string(&CtState::Tcp(TcpState::CloseWait)).unwrap();
        assert_eq!(j, r#"{"tcp":"close_wait"}"#);
        let j = serde_json::to_string(&CtState::Udp { assured: true }).unwrap();
        assert_eq!(j, r#"{"udp":{"assured":true}}"#);
    }
}
