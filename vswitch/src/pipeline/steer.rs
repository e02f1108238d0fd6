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
use std::sync::atomic::{AtomicU32, Ordering};

use crate::packet::Packet;

use super::Gateway;

/// Counters in [`ReplyMarks`]: a power of two, so a key's slot is a mask away.
pub const MARK_SLOTS: usize = 1 << 16;

/// Which reply destinations have tracked connections, shared by every worker.
#[derive(Debug)]
pub struct ReplyMarks {
    slots: Box<[AtomicU32]>,
}

impl Default for ReplyMarks {
    fn default() -> Self {
        ReplyMarks::new()
    }
}

impl ReplyMarks {
    /// No marks.
    pub fn new() -> ReplyMarks {
        ReplyMarks { slots: (0..MARK_SLOTS).map(|_| AtomicU32::new(0)).collect() }
    }

    /// A connection whose replies go to `key` was created.
    #[inline]
    pub fn raise(&self, key: u32) {
        self.slots[key as usize & (MARK_SLOTS - 1)].fetch_add(1, Ordering::Release);
    }

    /// A connection whose replies went to `key` is gone.
    #[inline]
    pub fn lower(&self, key: u32) {
        let slot = &self.slots[key as usize & (MARK_SLOTS - 1)];
        // Never below zero, whatever the caller's bookkeeping.
        let _ = slot.fetch_update(Ordering::Release, Ordering::Relaxed, |v| v.checked_sub(1));
    }

    /// Some connection's replies may go to `key`.
    #[inline]
    pub fn is_marked(&self, key: u32) -> bool {
        self.slots[key as usize & (MARK_SLOTS - 1)].load(Ordering::Acquire) != 0
    }
}

/// A worker's place among the workers, and the rule's inputs.
#[derive(Debug, Clone)]
pub struct Steering {
    /// How many workers there are (1: no steering at all).
    pub workers: usize,
    /// This worker's index.
    pub me: usize,
    /// The shared marks.
    pub marks: std::sync::Arc<ReplyMarks>,
    /// Entries in all the workers' connection-tracking tables (the node's limit applies to
    /// the sum).
    pub conntrack_len: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Default for Steering {
    fn default() -> Self {
        Steering {
            workers: 1,
            me: 0,
            marks: std::sync::Arc::new(ReplyMarks::new()),
            conntrack_len: Default::default(),
        }
    }
}

/// The steering key of an address and port (see the module doc).
#[inline]
pub fn key(gateway: Ipv4Addr, ip: Ipv4Addr, port: u16) -> u32 {
    if ip == gateway {
        mix(0x1_0000 | u32::from(port))
    } else {
        mix(u32::from(ip))
    }
}

#[inline]
fn mix(v: u32) -> u32 {
    // murmur3's finalizer: every input bit moves every output bit.
    let mut h = v ^ 0x9e37_79b9;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
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
    if pkt.meta.vlan.is_some() || pkt.meta.ethertype != 0x0800 || pkt.meta.l4_offset == 0 {
        return None;
    }
    let d = pkt.data();
    let l3 = usize::from(pkt.meta.l3_offset);
    let l4 = usize::from(pkt.meta.l4_offset);
    let frag = d.get(l3 + 6..l3 + 8)?;
    if frag[0] & 0x1f != 0 || frag[1] != 0 {
        return None;
    }
    let (src, dst) = (ip_at(d, l3 + 12)?, ip_at(d, l3 + 16)?);
    match pkt.meta.ip_proto {
        6 | 17 => {
            let (sport, dport) = (port_at(d, l4)?, port_at(d, l4 + 2)?);
            if is_frontend(dst, pkt.meta.in_port, gw) {
                return Some(key(gw.ip, src, sport));
            }
            let k = key(gw.ip, dst, dport);
            marks.is_marked(k).then_some(k)
        }
        1 => {
            // Destination unreachable, time exceeded, parameter problem: about a packet
            // whose headers are quoted after the 8-byte ICMP header.
            if !matches!(d.get(l4)?, 3 | 11 | 12) {
                return None;
            }
            let q = l4 + 8;
            let ihl = usize::from(d.get(q)? & 0x0f) * 4;
            if ihl < 20 || !matches!(d.get(q + 9)?, 6 | 17) {
                return None;
            }
            let (qsrc, qdst) = (ip_at(d, q + 12)?, ip_at(d, q + 16)?);
            let (qsport, qdport) = (port_at(d, q + ihl)?, port_at(d, q + ihl + 2)?);
            // The quoted packet left a frontend (a translated reply): its destination is the
            // client; otherwise its source is (the client, or the source-NAT address).
            let from_frontend = gw.service_cidr.is_some_and(|c| c.contains(qsrc))
                || gw.node_port.is_some_and(|np| np.ip == qsrc);
            Some(if from_frontend { key(gw.ip, qdst, qdport) } else { key(gw.ip, qsrc, qsport) })
        }
        _ => None,
    }
}

#[inline]
fn ip_at(d: &[u8], at: usize) -> Option<Ipv4Addr> {
    let b = d.get(at..at + 4)?;
    Some(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
}

#[inline]
fn port_at(d: &[u8], at: usize) -> Option<u16> {
    let b = d.get(at..at + 2)?;
    Some(u16::from_be_bytes([b[0], b[1]]))
}

#[cfg(test)]
mod tests {
    use super::*;
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
            p.meta.ip_proto = 1;
            let _ = steering(1).owner(&p, &gw());
            p.meta.ip_proto = 6;
            let _ = steering(1).owner(&p, &gw());
        }
    }
}
