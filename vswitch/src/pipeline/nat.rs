//! Service NAT: connections to a ClusterIP (VIP:port) are load-balanced over the Service's
//! endpoints and tracked, so every later packet of the connection, and every reply, is
//! translated the same way.
//!
//! For each untagged IPv4 TCP or UDP packet (after classify and learning, before ARP and the
//! gateway):
//! - **Known flow** (the conntrack table has its 5-tuple): in the client's direction the
//!   destination becomes the chosen endpoint (and, for hairpin, the source becomes the
//!   gateway); in the reply direction the source becomes the VIP again (and the hairpin
//!   rewrite is undone). A flow whose endpoint has since been removed from the Service is
//!   answered with a TCP reset / ICMP port unreachable and forgotten, instead of vanishing
//!   into a black hole; endpoints that are only *terminating* keep their flows.
//! - **New flow to a VIP**: a TCP SYN or any UDP datagram picks a ready, non-terminating
//!   endpoint (the Service's algorithm over a hash of the 5-tuple), gets a conntrack entry
//!   and is translated. A plain ACK mid-connection is picked up too (after a flush or a
//!   restart; Maglev maps it to the same endpoint as before), as Linux's conntrack does by
//!   default; a first segment with RST, FIN or SYN-ACK is dropped (`nat_no_flow`, conntrack's
//!   INVALID). A Service without eligible endpoints answers with a TCP reset or ICMP port
//!   unreachable, as kube-proxy's reject rules do. A full table drops the new flow
//!   (`conntrack_full`) and evicts nothing.
//! - **ICMP errors about a translated connection** coming back from the endpoint side
//!   (port unreachable, fragmentation needed, TTL exceeded) are translated too, quoted header
//!   included, so the client sees them come from the Service address it used.
//! - Anything else passes untouched.
//!
//! After the destination rewrite the packet is still addressed to the gateway MAC (the client
//! routed it there: the VIP is not on its link), so the gateway stage routes it to the
//! endpoint, locally or through the overlay. Checksums are updated incrementally (RFC 1624);
//! a packet with a partial L4 checksum (TAP offload) gets its pseudo-header sum adjusted.

use std::net::Ipv4Addr;
use std::time::Instant;

use rustc_hash::FxHashMap;

use crate::packet::{Action, Batch, Packet};
use crate::stats::{DropReason, PortCounters};
use crate::tables::conntrack::{Conntrack, CreateError, Dir, FlowKey, Nat};
use crate::tables::services::{L4Proto, Selection, ServiceKey, ServiceTable};
use crate::wire::{checksum, EtherType, IpProtocol};

use super::{drop_packet, Gateway};

/// The Service NAT state in the pipeline.
#[derive(Debug)]
pub struct ServiceNat {
    /// The Services.
    pub services: ServiceTable,
    /// The tracked connections.
    pub conntrack: Conntrack,
    /// ClientIP session affinity: (client, Service) -> (endpoint, until when).
    pub affinity: Affinity,
}

/// ClientIP session affinity (`session_affinity_secs`): a client's new connections to a
/// Service go to the endpoint its previous one went to, as long as that endpoint is still
/// eligible and the client came back within the timeout (each new connection restarts it,
/// as kube-proxy's `recent` match does). Bounded like the conntrack table; when full,
/// expired entries are cleared and, failing that, new clients simply get no stickiness.
#[derive(Debug)]
pub struct Affinity {
    map: FxHashMap<(Ipv4Addr, ServiceKey), (Ipv4Addr, u16, Instant)>,
    max: usize,
}

impl Affinity {
    /// An empty table for at most `max` clients.
    pub fn new(max: usize) -> Affinity {
        Affinity { map: FxHashMap::default(), max }
    }

    /// The endpoint `client` is pinned to for `svc`, if the pin is still valid at `now`.
    fn get(&self, client: Ipv4Addr, svc: ServiceKey, now: Instant) -> Option<(Ipv4Addr, u16)> {
        self.map
            .get(&(client, svc))
            .filter(|(_, _, until)| *until > now)
            .map(|(ip, port, _)| (*ip, *port))
    }

    fn pin(
        &mut self,
        client: Ipv4Addr,
        svc: ServiceKey,
        ep: (Ipv4Addr, u16),
        until: Instant,
        now: Instant,
    ) {
        if self.map.len() >= self.max && !self.map.contains_key(&(client, svc)) {
            self.map.retain(|_, (_, _, u)| *u > now);
            if self.map.len() >= self.max {
                return;
            }
        }
        self.map.insert((client, svc), (ep.0, ep.1, until));
    }

    /// Pins tracked.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when nothing is pinned.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Where the addresses and ports of an IPv4 TCP/UDP packet sit.
#[derive(Debug, Clone, Copy)]
struct Layout {
    l3: usize,
    l4: usize,
    proto: u8,
    csum_at: usize,
}

fn layout(pkt: &Packet) -> Option<Layout> {
    if pkt.meta.vlan.is_some() || pkt.meta.ethertype != u16::from(EtherType::Ipv4) {
        return None;
    }
    let (l3, l4) = (usize::from(pkt.meta.l3_offset), usize::from(pkt.meta.l4_offset));
    let proto = pkt.meta.ip_proto;
    let csum_at = match proto {
        6 => l4 + 16,
        17 => l4 + 6,
        _ => return None,
    };
    let d = pkt.data();
    // Fragments other than the first carry no ports.
    if l4 == 0 || d.len() < csum_at + 2 || (d[l3 + 6] & 0x1f != 0 || d[l3 + 7] != 0) {
        return None;
    }
    Some(Layout { l3, l4, proto, csum_at })
}

fn flow_key(d: &[u8], lay: &Layout) -> FlowKey {
    let ip = |o: usize| Ipv4Addr::new(d[o], d[o + 1], d[o + 2], d[o + 3]);
    let port = |o: usize| u16::from_be_bytes([d[o], d[o + 1]]);
    FlowKey {
        src: ip(lay.l3 + 12),
        dst: ip(lay.l3 + 16),
        sport: port(lay.l4),
        dport: port(lay.l4 + 2),
        proto: lay.proto,
    }
}

/// Runs Service NAT over the batch.
pub fn run(
    batch: &mut Batch,
    nat: &mut ServiceNat,
    gw: &Gateway,
    counters: &mut [PortCounters],
    now: Instant,
) {
    if nat.services.is_empty() && nat.conntrack.is_empty() {
        return;
    }
    for pkt in batch.packets_mut() {
        if pkt.meta.action != Action::Continue {
            continue;
        }
        let Some(lay) = layout(pkt) else {
            icmp_error_from_endpoint(pkt, nat, now);
            continue;
        };
        let in_port = pkt.meta.in_port;
        match handle(pkt, &lay, nat, gw, now) {
            Ok(None) => {}
            Ok(Some(action)) => {
                pkt.meta.action = action;
                if let Some(c) = counters.get_mut(in_port.index()) {
                    c.service_rejects += 1;
                }
            }
            Err(reason) => drop_packet(&mut pkt.meta.action, in_port, reason, counters),
        }
    }
}

/// Translates one packet. `Ok(Some(Reply))` when it was answered with a reject.
#[inline]
fn handle(
    pkt: &mut Packet,
    lay: &Layout,
    nat: &mut ServiceNat,
    gw: &Gateway,
    now: Instant,
) -> Result<Option<Action>, DropReason> {
    let key = flow_key(pkt.data(), lay);
    let tcp_flags = (lay.proto == 6).then(|| pkt.data().get(lay.l4 + 13).copied()).flatten();
    let len = pkt.len();
    if let Some((id, dir)) = nat.conntrack.lookup(&key, now) {
        let Some(entry) = nat.conntrack.get(id).copied() else { return Ok(None) };
        let n = entry.nat;
        if dir == Dir::Original {
            let svc = ServiceKey { vip: n.vip, port: n.vport, proto: proto_of(lay.proto) };
            if !nat.services.has_endpoint(&svc, n.backend, n.bport) {
                nat.conntrack.remove(id);
                return Ok(Some(reject(pkt, lay, gw)));
            }
            nat.conntrack.update(id, dir, tcp_flags, len, now);
            rewrite_dst(pkt, lay, n.backend, n.bport);
            if let Some((ip, port)) = n.snat {
                rewrite_src(pkt, lay, ip, port);
            }
        } else {
            nat.conntrack.update(id, dir, tcp_flags, len, now);
            rewrite_src(pkt, lay, n.vip, n.vport);
            if n.snat.is_some() {
                rewrite_dst(pkt, lay, entry.original.src, entry.original.sport);
            }
        }
        return Ok(None);
    }
    let svc = ServiceKey { vip: key.dst, port: key.dport, proto: proto_of(lay.proto) };
    if nat.services.get(&svc).is_none() {
        if nat.services.is_vip(key.dst) {
            return Ok(Some(reject(pkt, lay, gw)));
        }
        return Ok(None);
    }
    let affinity = nat.services.get(&svc).and_then(|s| s.session_affinity_secs);
    let pinned = affinity.and_then(|_| {
        let (ip, port) = nat.affinity.get(key.src, svc, now)?;
        let spec = nat.services.get(&svc)?;
        spec.endpoints
            .iter()
            .any(|e| e.ip == ip && e.port == port && e.is_eligible())
            .then_some(Selection::Endpoint { ip, port })
    });
    let selection = match pinned {
        Some(s) => s,
        None => nat.services.select(&svc, key.hash64()),
    };
    match selection {
        Selection::Endpoint { ip, port } => {
            if let Some(secs) = affinity {
                let until = now + std::time::Duration::from_secs(u64::from(secs));
                nat.affinity.pin(key.src, svc, (ip, port), until, now);
            }
            // Hairpin: a pod reaching itself through its Service would see its own address as
            // the source and answer itself directly; the gateway stands in for it.
            let snat = (ip == key.src).then_some((gw.ip, key.sport));
            let n = Nat { vip: key.dst, vport: key.dport, backend: ip, bport: port, snat };
            let id = nat.conntrack.create(key, n, tcp_flags, now).map_err(|e| match e {
                CreateError::Full(_) => DropReason::ConntrackFull,
                CreateError::Clash(_) | CreateError::InvalidTcp(_) => DropReason::NatNoFlow,
            })?;
            nat.conntrack.update(id, Dir::Original, tcp_flags, len, now);
            rewrite_dst(pkt, lay, ip, port);
            if let Some((ip, port)) = snat {
                rewrite_src(pkt, lay, ip, port);
            }
            Ok(None)
        }
        Selection::NoEndpoints => Ok(Some(reject(pkt, lay, gw))),
        Selection::NotAService => Ok(None),
    }
}

/// An ICMP error (destination unreachable, time exceeded, parameter problem) that an endpoint
/// (or a router on its way) sends back about a translated packet quotes the packet as the
/// endpoint saw it: client -> endpoint. The client only recognizes it if it speaks of the
/// Service address it used, so the quoted destination and the error's source become the VIP
/// again (checksums fixed: quoted IP header, outer IP header, ICMP).
fn icmp_error_from_endpoint(pkt: &mut Packet, nat: &mut ServiceNat, now: Instant) {
    if nat.conntrack.is_empty()
        || pkt.meta.vlan.is_some()
        || pkt.meta.ethertype != u16::from(EtherType::Ipv4)
        || pkt.meta.ip_proto != u8::from(IpProtocol::Icmp)
    {
        return;
    }
    let (l3, l4) = (usize::from(pkt.meta.l3_offset), usize::from(pkt.meta.l4_offset));
    let d = pkt.data();
    if l4 == 0 || !matches!(d.get(l4), Some(3 | 11 | 12)) {
        return;
    }
    let q = l4 + 8;
    let Some(&vihl) = d.get(q) else { return };
    let q4 = q + usize::from(vihl & 0x0f) * 4;
    if vihl >> 4 != 4 || d.len() < q4 + 4 || !matches!(d[q + 9], 6 | 17) {
        return;
    }
    let ip = |o: usize| Ipv4Addr::new(d[o], d[o + 1], d[o + 2], d[o + 3]);
    let port = |o: usize| u16::from_be_bytes([d[o], d[o + 1]]);
    let quoted = FlowKey {
        src: ip(q + 12),
        dst: ip(q + 16),
        sport: port(q4),
        dport: port(q4 + 2),
        proto: d[q + 9],
    };
    // The quoted packet went client -> endpoint: the reverse of the connection's reply key.
    let Some((id, Dir::Reply)) = nat.conntrack.lookup(&quoted.reversed(), now) else { return };
    let Some(n) = nat.conntrack.get(id).map(|e| e.nat) else { return };
    let outer_src = ip(l3 + 12);
    let d = pkt.data_mut();
    if outer_src == n.backend {
        d[l3 + 12..l3 + 16].copy_from_slice(&n.vip.octets());
        let c =
            checksum::update_addr(u16::from_be_bytes([d[l3 + 10], d[l3 + 11]]), &n.backend, &n.vip);
        d[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
    }
    d[q + 16..q + 20].copy_from_slice(&n.vip.octets());
    d[q4 + 2..q4 + 4].copy_from_slice(&n.vport.to_be_bytes());
    let c = checksum::update_addr(u16::from_be_bytes([d[q + 10], d[q + 11]]), &n.backend, &n.vip);
    d[q + 10..q + 12].copy_from_slice(&c.to_be_bytes());
    // The ICMP checksum covers the whole (short) message: recompute it.
    let end = (l3 + usize::from(u16::from_be_bytes([d[l3 + 2], d[l3 + 3]]))).min(d.len());
    d[l4 + 2..l4 + 4].copy_from_slice(&[0, 0]);
    let c = checksum::checksum(&d[l4..end]);
    d[l4 + 2..l4 + 4].copy_from_slice(&c.to_be_bytes());
}

fn proto_of(p: u8) -> L4Proto {
    if p == 6 {
        L4Proto::Tcp
    } else {
        L4Proto::Udp
    }
}

/// Answers a packet the Service cannot take: a TCP reset, or ICMP port unreachable, from the
/// address the client used.
fn reject(pkt: &mut Packet, lay: &Layout, gw: &Gateway) -> Action {
    if lay.proto == 6 {
        super::reply::tcp_reset(pkt, gw.mac);
    } else {
        let d = pkt.data();
        let o = lay.l3 + 16;
        let vip = Ipv4Addr::new(d[o], d[o + 1], d[o + 2], d[o + 3]);
        super::reply::icmp_error(pkt, vip, gw.mac, 3, 3, 0);
    }
    Action::Reply
}

/// Rewrites the destination address and port (offsets `l3 + 16`, `l4 + 2`).
fn rewrite_dst(pkt: &mut Packet, lay: &Layout, ip: Ipv4Addr, port: u16) {
    rewrite(pkt, lay, lay.l3 + 16, lay.l4 + 2, ip, port);
}

/// Rewrites the source address and port (offsets `l3 + 12`, `l4`).
fn rewrite_src(pkt: &mut Packet, lay: &Layout, ip: Ipv4Addr, port: u16) {
    rewrite(pkt, lay, lay.l3 + 12, lay.l4, ip, port);
}

fn rewrite(
    pkt: &mut Packet,
    lay: &Layout,
    addr_at: usize,
    port_at: usize,
    ip: Ipv4Addr,
    port: u16,
) {
    let partial = pkt.meta.vnet.needs_csum();
    let d = pkt.data_mut();
    let old_ip = Ipv4Addr::new(d[addr_at], d[addr_at + 1], d[addr_at + 2], d[addr_at + 3]);
    let old_port = u16::from_be_bytes([d[port_at], d[port_at + 1]]);
    if old_ip == ip && old_port == port {
        return;
    }
    d[addr_at..addr_at + 4].copy_from_slice(&ip.octets());
    d[port_at..port_at + 2].copy_from_slice(&port.to_be_bytes());
    let ip_csum = u16::from_be_bytes([d[lay.l3 + 10], d[lay.l3 + 11]]);
    let ip_csum = checksum::update_addr(ip_csum, &old_ip, &ip);
    d[lay.l3 + 10..lay.l3 + 12].copy_from_slice(&ip_csum.to_be_bytes());
    let l4 = u16::from_be_bytes([d[lay.csum_at], d[lay.csum_at + 1]]);
    let new = if partial {
        // The field holds the pseudo-header sum, uncomplemented; ports are not in it.
        !checksum::update_addr(!l4, &old_ip, &ip)
    } else if lay.proto == u8::from(IpProtocol::Udp) && l4 == 0 {
        0
    } else {
        let c = checksum::update16(checksum::update_addr(l4, &old_ip, &ip), old_port, port);
        if lay.proto == u8::from(IpProtocol::Udp) && c == 0 {
            0xffff
        } else {
            c
        }
    };
    d[lay.csum_at..lay.csum_at + 2].copy_from_slice(&new.to_be_bytes());
}
