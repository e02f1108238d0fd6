//! A connection's identity: the 5-tuple a packet carries ([`FlowKey`]), the translation
//! chosen for its flow ([`Nat`]), which way a packet goes ([`Dir`]), and the reply 5-tuple
//! that follows from the first two. Kept apart from the table because endpoint selection
//! (`FlowKey::hash64`) and the NAT stage use these types without touching the table.

use std::net::Ipv4Addr;

/// IP protocol number of ICMP.
pub(super) const PROTO_ICMP: u8 = 1;
/// IP protocol number of TCP.
pub(super) const PROTO_TCP: u8 = 6;

pub use crate::packet::FlowKey;

/// The translation of a flow: the client sent to `vip:vport`, it goes to `backend:bport`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Nat {
    /// The Service address the client sent to.
    pub vip: Ipv4Addr,
    /// The Service port the client sent to (ICMP: unused).
    pub vport: u16,
    /// The chosen endpoint.
    pub backend: Ipv4Addr,
    /// The endpoint's port (ICMP: unused).
    pub bport: u16,
    /// Source rewrite for hairpin traffic: the client's source is rewritten to this
    /// address and port (ICMP: echo identifier) on the way to the backend.
    pub snat: Option<(Ipv4Addr, u16)>,
}

/// Which way a packet goes relative to the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dir {
    /// From the client (towards the VIP, translated to the backend).
    Original,
    /// From the backend back to the client.
    Reply,
}

impl Dir {
    /// 0 for `Original`, 1 for `Reply`: the index into [`Entry::packets`](super::Entry::packets) and
    /// [`Entry::bytes`](super::Entry::bytes).
    #[inline]
    pub fn index(self) -> usize {
        self as usize
    }
}

/// The 5-tuple of the replies of a flow whose first packet had `original`, translated by
/// `nat` (see [`Entry::reply`](super::Entry::reply)).
#[inline]
pub(super) fn reply_key(original: &FlowKey, nat: &Nat) -> FlowKey {
    let (dst, dport) = nat.snat.unwrap_or((original.src, original.sport));
    let sport = if original.proto == PROTO_ICMP { dport } else { nat.bport };
    FlowKey { src: nat.backend, dst, sport, dport, proto: original.proto }
}

/// Why [`Conntrack::create`](super::Conntrack::create) refused a flow. The table is unchanged, except that expired
/// entries may have been removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CreateError {
    /// `max_entries` entries are present and none of those examined had expired.
    #[error("conntrack table full ({0} entries)")]
    Full(usize),
    /// This 5-tuple (the flow's original or its reply) belongs to a live entry, or the two
    /// are the same 5-tuple.
    #[error("5-tuple {0:?} already tracked")]
    Clash(FlowKey),
    /// A TCP flow cannot start with these flags (RST, FIN or SYN-ACK; Linux marks such
    /// packets invalid).
    #[error("TCP flags {0:#04x} cannot start a connection")]
    InvalidTcp(u8),
    /// The originating port already holds `max_per_port` entries.
    #[error("port {0:?} holds its whole share of the conntrack table")]
    PortLimit(crate::port::PortId),
}

#[cfg(test)]
mod tests {
    use super::*;

    const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);

    fn client(n: u8, sport: u16, proto: u8) -> FlowKey {
        FlowKey { src: Ipv4Addr::new(10, 0, 0, n), dst: VIP, sport, dport: 80, proto }
    }

    #[test]
    fn hash64_is_stable_and_mixed() {
        let k = client(1, 40000, PROTO_TCP);
        assert_eq!(k.hash64(), k.hash64());
        assert_eq!(k.hash64(), 0x810c_03e4_2b5e_5f7a);
        assert_ne!(k.hash64(), k.reversed().hash64());
        let variants = [
            client(2, 40000, PROTO_TCP),
            client(1, 40001, PROTO_TCP),
            client(1, 40000, 17),
            FlowKey { dport: 81, ..k },
            FlowKey { dst: Ipv4Addr::new(10, 96, 0, 11), ..k },
        ];
        for v in variants {
            let diff = (k.hash64() ^ v.hash64()).count_ones();
            assert!((16..=48).contains(&diff), "{v:?}: {diff} bits differ");
        }
        // Low bits spread evenly across a small backend set.
        let mut buckets = [0u32; 4];
        for p in 0..4000 {
            buckets[(client(1, p, PROTO_TCP).hash64() % 4) as usize] += 1;
        }
        assert!(buckets.iter().all(|&b| (850..1150).contains(&b)), "{buckets:?}");
    }
}
