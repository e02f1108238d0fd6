//! Flow steering: with several workers, which one runs a packet through Service NAT.
//!
//! Each worker keeps its own connection-tracking table (no locks on the packet path), so
//! both directions of a translated connection must be processed by the same worker, whatever
//! queue the kernel delivered them on. The rule only needs the packet's own headers:
//!
//! - To a Service frontend (an address in the Service CIDR, or the node address on the
//!   NodePort interface): the worker of the *source*, `key(src)`. That is the client.
//! - Anything else TCP/UDP: the worker of the *destination*, `key(dst)`, but only if some
//!   connection's reply goes there ([`ReplyMarks`]); other traffic stays where it arrived.
//!   A reply's destination is the client again, or the gateway address and port that
//!   source NAT (NodePort, hairpin) put in, and NAT picks that port so `key` lands on the
//!   worker that created the connection ([`Steering::owns_snat`]).
//! - ICMP errors: the worker of the connection the quoted packet belongs to.
//! - Later IPv4 fragments (no ports): like their first fragment, which is possible because
//!   `key` ignores the port of every address but the gateway's; fragments from or to the
//!   gateway address itself stay where they arrived.
//!
//! `key(ip, port)` hashes the address alone, so all of one client's connections meet in one
//! table (session affinity needs that), except for the gateway address, which stands for
//! every connection the node and source NAT make: there the port is hashed.
//!
//! The marks are shared by all workers: an array of counters indexed by `key`, raised by the
//! worker that creates a connection and lowered when the connection goes. Reading one is one
//! relaxed atomic load per packet; writes happen per connection, not per packet. A stale
//! mark costs a needless handoff, never a wrong translation.

use std::net::Ipv4Addr;

use crate::packet::{Action, Batch, Frag, Packet};
pub use crate::tables::steer_marks::{key, ReplyMarks, MARK_SLOTS};
use crate::wire::{IcmpMessage, IcmpPacket, IpProtocol, QuotedIpv4};

use super::Gateway;

/// A worker's place among the workers, and the rule's inputs.
#[derive(Debug, Clone)]
pub struct Steering {
    /// How many workers there are (1: no steering at all).
    pub workers: usize,
    /// This worker's index.
    pub me: usize,
    /// The shared marks.
    pub marks: std::sync::Arc<ReplyMarks>,
    /// Entries in all the workers' connection-tracking tables, in all and per pod port (the
    /// node's limits apply to the sums).
    pub conntrack_len: std::sync::Arc<crate::tables::conntrack::SharedCounts>,
    /// The seed classify hashes each packet's 5-tuple with (`Meta::flow_hash`), the same for
    /// every worker: a packet classified by one is looked up in another's conntrack table.
    pub flow_seed: u64,
}

impl Default for Steering {
    fn default() -> Self {
        Steering {
            workers: 1,
            me: 0,
            marks: std::sync::Arc::new(ReplyMarks::new()),
            conntrack_len: Default::default(),
            flow_seed: random_seed(),
        }
    }
}

/// A secret per-process value, from std's randomly keyed hasher.
fn random_seed() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(0x5eed_u64)
}

/// The steer stage: marks every classified packet whose connection another worker tracks
/// with [`Action::Steer`]; the table stages skip it, and the worker moves it to that worker
/// after the pipeline. With one worker, nothing.
pub fn run(batch: &mut Batch, steering: &Steering, gw: &Gateway) {
    if steering.workers <= 1 {
        return;
    }
    for pkt in batch.packets_mut() {
        if pkt.meta.action != Action::Continue {
            continue;
        }
        if let Some(w) = steering.owner(pkt, gw) {
            pkt.meta.action = Action::Steer(w as u8);
        }
    }
}

impl Steering {
    /// The worker a key belongs to.
    #[inline]
    pub fn worker_of(&self, key: u32) -> usize {
        (key as usize >> 16 ^ key as usize) % self.workers.max(1)
    }

    /// Whether replies to `gateway:port` (a source-NAT port) come back to this worker.
    #[inline]
    pub fn owns_snat(&self, gateway: Ipv4Addr, port: u16) -> bool {
        self.workers <= 1 || self.worker_of(key(gateway, gateway, port)) == self.me
    }

    /// The worker that must run `pkt` (classified) through NAT, when it is not this one.
    #[inline]
    pub fn owner(&self, pkt: &Packet, gw: &Gateway) -> Option<usize> {
        if self.workers <= 1 {
            return None;
        }
        let w = self.worker_of(flow_key(pkt, gw, &self.marks)?);
        (w != self.me).then_some(w)
    }
}

/// Whether `ip` is a Service frontend for a packet that came in on `pkt`'s port.
#[inline]
fn is_frontend(ip: Ipv4Addr, in_port: crate::port::PortId, gw: &Gateway) -> bool {
    gw.service_cidr.is_some_and(|c| c.contains(ip))
        || gw.node_port.is_some_and(|np| np.port == in_port && np.ip == ip)
}

/// The steering key of the connection `pkt` belongs to; `None` for packets that need no
/// particular worker.
fn flow_key(pkt: &Packet, gw: &Gateway, marks: &ReplyMarks) -> Option<u32> {
    let m = &pkt.meta;
    if m.vlan.is_some() || m.ethertype != 0x0800 || m.l4_offset == 0 {
        return None;
    }
    // Classify read the 5-tuple; only an ICMP error's quote is read here.
    let f = &m.flow;
    match IpProtocol::from(f.proto) {
        IpProtocol::Tcp | IpProtocol::Udp if m.frag == Frag::Later => {
            // No ports, but the key of an address other than the gateway's ignores the
            // port: the fragment meets its first one, whose translation it needs.
            if is_frontend(f.dst, m.in_port, gw) {
                return (f.src != gw.ip).then(|| key(gw.ip, f.src, 0));
            }
            let k = key(gw.ip, f.dst, 0);
            (f.dst != gw.ip && marks.is_marked(k)).then_some(k)
        }
        _ if m.frag == Frag::Later => None,
        IpProtocol::Tcp | IpProtocol::Udp => {
            if !m.has_ports {
                return None;
            }
            if is_frontend(f.dst, m.in_port, gw) {
                return Some(key(gw.ip, f.src, f.sport));
            }
            let k = key(gw.ip, f.dst, f.dport);
            marks.is_marked(k).then_some(k)
        }
        IpProtocol::Icmp => {
            // Destination unreachable, time exceeded, parameter problem: about a packet
            // whose headers are quoted after the 8-byte ICMP header.
            let l4 = pkt.data().get(usize::from(m.l4_offset)..)?;
            let icmp = IcmpPacket::new_checked(l4).ok()?;
            if !matches!(
                icmp.msg_type(),
                IcmpMessage::DstUnreachable | IcmpMessage::TimeExceeded | IcmpMessage::ParamProblem
            ) {
                return None;
            }
            let q = QuotedIpv4::new_checked(icmp.data()).ok()?;
            if !matches!(q.next_header(), IpProtocol::Tcp | IpProtocol::Udp) {
                return None;
            }
            let (qsrc, qdst) = (q.src_addr(), q.dst_addr());
            let (qsport, qdport) = (q.src_port(), q.dst_port());
            // The quoted packet left a frontend (a translated reply): its destination is the
            // client; otherwise its source is (the client, or the source-NAT address).
            let from_frontend = gw.service_cidr.is_some_and(|c| c.contains(qsrc))
                || gw.node_port.is_some_and(|np| np.ip == qsrc);
            Some(if from_frontend { key(gw.ip, qdst, qdport) } else { key(gw.ip, qsrc, qsport) })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::Meta;
    use crate::pipeline::classify::classify;
    use crate::pipeline::testutil::*;
    use crate::port::PortId;
    use std::sync::Arc;

    fn gw() -> Gateway {
        Gateway {
            ip: Ipv4Addr::new(10, 244, 1, 1),
            mac: GW_MAC,
            pod_cidr: "10.244.1.0/24".parse().unwrap(),
            host_port: None,
            overlay_port: None,
            service_cidr: Some("10.96.0.0/12".parse().unwrap()),
            node_port: None,
        }
    }

    fn pkt(frame: &[u8]) -> Packet {
        let mut p = Packet::new();
        assert!(p.fill_from(frame));
        p.meta.in_port = PortId(1);
        classify(&mut p).unwrap();
        p
    }

    fn steering(me: usize) -> Steering {
        Steering {
            workers: 2,
            me,
            marks: Arc::new(ReplyMarks::new()),
            conntrack_len: Default::default(),
            flow_seed: 0,
        }
    }

    #[test]
    fn both_directions_of_a_translated_connection_meet_on_one_worker() {
        let g = gw();
        let vip = Ipv4Addr::new(10, 96, 0, 7);
        let marks = Arc::new(ReplyMarks::new());
        // Try many clients: each forward packet and its reply pick the same worker.
        for i in 0..200u8 {
            let client = Ipv4Addr::new(10, 244, 1, i.max(2));
            let fwd = pkt(&udp_frame(MAC_A, GW_MAC, client, vip, 40_000 + u16::from(i), 53, b"q"));
            let owner = [0, 1]
                .into_iter()
                .find(|&me| {
                    Steering {
                        workers: 2,
                        me,
                        marks: marks.clone(),
                        conntrack_len: Default::default(),
                        flow_seed: 0,
                    }
                    .owner(&fwd, &g)
                    .is_none()
                })
                .unwrap();
            marks.raise(key(g.ip, client, 40_000 + u16::from(i)));
            let reply =
                pkt(&udp_frame(MAC_B, MAC_A, IP_B, client, 53, 40_000 + u16::from(i), b"a"));
            let s = Steering { me: owner, ..steering(0) };
            let s = Steering { marks: marks.clone(), ..s };
            assert_eq!(s.owner(&reply, &g), None, "client {client}");
            let other = Steering { me: 1 - owner, marks: marks.clone(), ..steering(0) };
            assert_eq!(other.owner(&reply, &g), Some(owner));
        }
    }

    #[test]
    fn unmarked_pod_traffic_stays_where_it_arrived() {
        let p = pkt(&udp_frame(MAC_A, MAC_B, IP_A, IP_B, 1, 2, b"x"));
        assert_eq!(steering(0).owner(&p, &gw()), None);
        assert_eq!(steering(1).owner(&p, &gw()), None);
        let one = Steering::default();
        let vip = Ipv4Addr::new(10, 96, 0, 7);
        let to_vip = pkt(&udp_frame(MAC_A, GW_MAC, IP_A, vip, 1, 2, b"x"));
        assert_eq!(one.owner(&to_vip, &gw()), None, "one worker never steers");
    }

    #[test]
    fn snat_ports_are_picked_per_worker() {
        let g = gw();
        let (a, b) = (steering(0), steering(1));
        let mine: Vec<u16> = (61_000..61_100).filter(|&p| a.owns_snat(g.ip, p)).collect();
        assert!(mine.len() > 20 && mine.len() < 80, "{}", mine.len());
        assert!(mine.iter().all(|&p| !b.owns_snat(g.ip, p)));
    }

    #[test]
    fn marks_count_and_never_underflow() {
        let m = ReplyMarks::new();
        m.raise(7);
        m.raise(7 + MARK_SLOTS as u32);
        m.lower(7);
        assert!(m.is_marked(7));
        m.lower(7);
        m.lower(7);
        assert!(!m.is_marked(7));
        m.raise(7);
        assert!(m.is_marked(7), "an extra lower did not wrap the counter");
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_are_safe(data in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let mut p = Packet::new();
            p.fill_from(&data);
            let _ = classify(&mut p);
            let _ = steering(0).owner(&p, &gw());
            // Also with metadata that points anywhere.
            p.meta.ethertype = 0x0800;
            p.meta.l3_offset = 14;
            p.meta.l4_offset = 34;
            p.meta.flow.proto = 1;
            let _ = steering(1).owner(&p, &gw());
            p.meta.flow.proto = 6;
            p.meta.has_ports = true;
            let _ = steering(1).owner(&p, &gw());
        }
    }

    /// An ICMP port unreachable from `IP_B` about a TCP segment `IP_A:40000` -> `vip:80`.
    fn icmp_error_about_tcp(vip: Ipv4Addr) -> Vec<u8> {
        let mut p = Packet::new();
        assert!(p.fill_from(&tcp_frame(MAC_A, GW_MAC, IP_A, vip, 40000, 80, 0x02, b"")));
        assert!(crate::pipeline::reply::icmp_error(&mut p, IP_B, MAC_B, 3, 3, 0));
        p.data().to_vec()
    }

    #[test]
    fn icmp_errors_steer_by_the_quoted_connection_and_truncations_by_nothing() {
        let g = gw();
        let marks = ReplyMarks::new();
        let frame = icmp_error_about_tcp(Ipv4Addr::new(10, 96, 0, 7));
        let whole = pkt(&frame);
        assert_eq!(flow_key(&whole, &g, &marks), Some(key(g.ip, IP_A, 40000)));
        // The quoted packet left a frontend: keyed by its destination.
        let mut p = Packet::new();
        assert!(p.fill_from(&udp_frame(
            MAC_B,
            MAC_A,
            Ipv4Addr::new(10, 96, 0, 7),
            IP_A,
            53,
            5353,
            b"a"
        )));
        assert!(crate::pipeline::reply::icmp_error(&mut p, IP_A, MAC_A, 3, 3, 0));
        let reply_error = pkt(p.data());
        assert_eq!(flow_key(&reply_error, &g, &marks), Some(key(g.ip, IP_A, 5353)));
        // The quote is read through views from the L4 offset: a truncated error (which
        // classify passes when its IPv4 header is whole) steers by nothing, and offsets that
        // lie read nothing out of bounds.
        for cut in 0..=frame.len() {
            let mut p = Packet::new();
            assert!(p.fill_from(&frame[..cut]));
            if classify(&mut p).is_ok() && cut < frame.len() {
                assert_eq!(flow_key(&p, &g, &marks), None, "cut {cut}");
            }
            for (l3, l4) in [(0, 0), (14, 0), (0, 20), (18, 38), (14, 60_000), (60_000, 34)] {
                p.meta = Meta { l3_offset: l3, l4_offset: l4, ..whole.meta };
                let _ = flow_key(&p, &g, &marks);
            }
        }
    }

    #[test]
    fn truncated_tcp_and_udp_steer_by_nothing() {
        let g = gw();
        let vip = Ipv4Addr::new(10, 96, 0, 7);
        let frames = [
            udp_frame(MAC_A, GW_MAC, IP_A, vip, 1000, 53, b"q"),
            tcp_frame(MAC_A, GW_MAC, IP_A, vip, 1000, 80, 0x02, b""),
        ];
        for frame in &frames {
            let whole = pkt(frame);
            assert!(steering(1).owner(&whole, &g).or(steering(0).owner(&whole, &g)).is_some());
            // Classify refuses every truncation, or passes it without ports.
            for cut in 0..frame.len() {
                let mut p = Packet::new();
                assert!(p.fill_from(&frame[..cut]));
                if classify(&mut p).is_ok() {
                    assert_eq!(flow_key(&p, &g, &ReplyMarks::new()), None, "cut {cut}");
                }
            }
        }
    }
}
