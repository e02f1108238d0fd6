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
//!   included, so the client sees them come from the Service address it used. For a
//!   source-NATed connection (hairpin, NodePort) the error is also readdressed from the
//!   stand-in address to the client; a NodePort client's leaves by the node-port port.
//! - Anything else passes untouched.
//!
//! After the destination rewrite the packet is still addressed to the gateway MAC (the client
//! routed it there: the VIP is not on its link), so the gateway stage routes it to the
//! endpoint, locally or through the overlay. Checksums are updated incrementally (RFC 1624);
//! a packet with a partial L4 checksum (TAP offload) gets its pseudo-header sum adjusted.

use std::net::Ipv4Addr;
use std::time::Instant;

use rustc_hash::FxHashMap;

use crate::packet::{Action, Batch, Packet, BATCH_SIZE};
use crate::stats::{DropReason, PortCounters};
use crate::tables::conntrack::{Conntrack, CreateError, Dir, EntryId, FlowHash, FlowKey, Nat};
use crate::tables::services::{L4Proto, Selection, ServiceKey, ServiceTable};
use crate::wire::{checksum, EtherType, IpProtocol, MacAddr};

use super::gateway::NodePortPath;
use super::{drop_packet, Gateway};

/// What the NAT stage decided for a packet it handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Translated (or not a Service packet): the next stages route it.
    Continue,
    /// Answered with a reject (TCP reset, ICMP unreachable).
    Reject(Action),
    /// Translated and settled (a NodePort reply: out of the node-port interface).
    Settled(Action),
}

/// The Service NAT state in the pipeline.
#[derive(Debug)]
pub struct ServiceNat {
    /// The Services.
    pub services: ServiceTable,
    /// The tracked connections.
    pub conntrack: Conntrack,
    /// ClientIP session affinity: (client, Service) -> (endpoint, until when).
    pub affinity: Affinity,
    /// NodePort clients' next-hop MACs, learned from their packets: where replies go.
    pub node_clients: NodeClients,
    /// This worker's place among the workers: source NAT picks ports whose replies are
    /// steered back here.
    pub steer: super::steer::Steering,
}

/// The MAC each NodePort client's packets came from (the client's, or its router's), learned
/// from every packet it sends, so the reply leaves the node-port interface addressed to it.
/// At most `max` clients; when full, the table is cleared and relearned from the next packets
/// (a client whose MAC is not known when a reply leaves loses that reply: `node_port_unknown`).
#[derive(Debug)]
pub struct NodeClients {
    map: FxHashMap<Ipv4Addr, MacAddr>,
    max: usize,
}

impl NodeClients {
    /// An empty table for at most `max` clients.
    pub fn new(max: usize) -> NodeClients {
        NodeClients { map: FxHashMap::default(), max: max.max(1) }
    }

    #[inline]
    fn learn(&mut self, ip: Ipv4Addr, mac: MacAddr) {
        if self.map.get(&ip) == Some(&mac) {
            return;
        }
        if self.map.len() >= self.max && !self.map.contains_key(&ip) {
            self.map.clear();
        }
        self.map.insert(ip, mac);
    }

    #[inline]
    fn get(&self, ip: Ipv4Addr) -> Option<MacAddr> {
        self.map.get(&ip).copied()
    }

    /// Clients known.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when no client is known.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Most NodePort clients whose MAC is remembered at once.
pub const MAX_NODE_CLIENTS: usize = 65_536;

/// First port of the range NodePort connections' source NAT takes on the gateway address:
/// above the kernel's default ephemeral range (32768-60999), so the node's own connections
/// from the gateway address never collide with them.
pub const NODE_PORT_SNAT_FIRST: u16 = 61_000;

/// Ports in the NodePort source NAT range (61000-65535).
pub const NODE_PORT_SNAT_PORTS: u16 = u16::MAX - NODE_PORT_SNAT_FIRST + 1;

/// Source ports tried for a new NodePort connection before it is dropped as a clash.
const SNAT_TRIES: u16 = 8;

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

#[inline]
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

/// The 5-tuple at `lay` (which [`layout`] checked lies within `d`), read as whole words.
#[inline]
fn flow_key(d: &[u8], lay: &Layout) -> FlowKey {
    let word =
        |o: usize| d.get(o..o + 4).map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
    let ports = word(lay.l4);
    FlowKey {
        src: Ipv4Addr::from(word(lay.l3 + 12)),
        dst: Ipv4Addr::from(word(lay.l3 + 16)),
        sport: (ports >> 16) as u16,
        dport: ports as u16,
        proto: lay.proto,
    }
}

/// A packet's layout, 5-tuple and conntrack bucket, computed ahead of its turn.
type Prepared = Option<(Layout, FlowKey, FlowHash)>;

/// Runs Service NAT over the batch.
///
/// The conntrack lookups of the batch are started together: a first pass computes every
/// undecided TCP/UDP packet's 5-tuple and bucket and prefetches the bucket, a second
/// prefetches the entries found there, and only then are the packets handled one by one, in
/// order, as if each were alone (prefetching changes no result). With many flows the cache
/// misses of a batch overlap instead of adding up.
pub fn run(
    batch: &mut Batch,
    nat: &mut ServiceNat,
    gw: &Gateway,
    counters: &mut [PortCounters],
    now: Instant,
) {
    if nat.services.is_empty() && nat.conntrack.is_empty() && gw.node_port.is_none() {
        return;
    }
    let mut prepared: [Prepared; BATCH_SIZE] = [None; BATCH_SIZE];
    for (pkt, prep) in batch.packets().iter().zip(prepared.iter_mut()) {
        if pkt.meta.action != Action::Continue {
            continue;
        }
        if let Some(lay) = layout(pkt) {
            let key = flow_key(pkt.data(), &lay);
            let h = nat.conntrack.hash(&key);
            nat.conntrack.prefetch_index(h);
            *prep = Some((lay, key, h));
        }
    }
    for (_, _, h) in prepared.iter().flatten() {
        nat.conntrack.prefetch_entry(*h);
    }
    for (i, pkt) in batch.packets_mut().iter_mut().enumerate() {
        if pkt.meta.action != Action::Continue {
            continue;
        }
        let in_port = pkt.meta.in_port;
        let from_node_port = gw.node_port.filter(|np| np.port == in_port);
        // Prepared above unless the batch is larger than a burst.
        let prep = match prepared.get(i) {
            Some(p) => *p,
            None => layout(pkt).map(|lay| {
                let key = flow_key(pkt.data(), &lay);
                (lay, key, nat.conntrack.hash(&key))
            }),
        };
        let Some((lay, key, h)) = prep else {
            if from_node_port.is_some() {
                drop_packet(&mut pkt.meta.action, in_port, DropReason::NodePortUnknown, counters);
            } else {
                match icmp_error_from_endpoint(pkt, nat, gw, now) {
                    Some(Action::Drop(reason)) => {
                        drop_packet(&mut pkt.meta.action, in_port, reason, counters)
                    }
                    Some(action) => pkt.meta.action = action,
                    None => {}
                }
            }
            continue;
        };
        match handle(pkt, &lay, key, h, nat, gw, from_node_port, now) {
            Ok(Verdict::Continue) => {}
            Ok(Verdict::Settled(action)) => pkt.meta.action = action,
            Ok(Verdict::Reject(action)) => {
                pkt.meta.action = action;
                if let Some(c) = counters.get_mut(in_port.index()) {
                    c.service_rejects += 1;
                }
            }
            Err(reason) => drop_packet(&mut pkt.meta.action, in_port, reason, counters),
        }
    }
}

/// Translates one packet, whose 5-tuple is `key` (`h` its conntrack bucket). `node_port`
/// is the NodePort path when the packet came in on it.
#[inline]
#[allow(clippy::too_many_arguments)]
fn handle(
    pkt: &mut Packet,
    lay: &Layout,
    key: FlowKey,
    h: FlowHash,
    nat: &mut ServiceNat,
    gw: &Gateway,
    node_port: Option<NodePortPath>,
    now: Instant,
) -> Result<Verdict, DropReason> {
    let tcp_flags = (lay.proto == 6).then(|| pkt.data().get(lay.l4 + 13).copied()).flatten();
    let len = pkt.len();
    let proto = proto_of(lay.proto);
    if let Some(np) = node_port {
        nat.node_clients.learn(key.src, mac_at(pkt.data(), 6));
        if key.dst != np.ip {
            return Err(DropReason::NodePortUnknown);
        }
    }
    // The mac to answer rejects with: the node-port interface's own, or the gateway's.
    let reply_mac = node_port.map_or(gw.mac, |np| np.mac);
    if let Some((id, dir)) = nat.conntrack.lookup_hashed(&key, h, now) {
        let Some(entry) = nat.conntrack.get(id).copied() else { return Ok(Verdict::Continue) };
        let n = entry.nat;
        let np_flow = gw.node_port.filter(|np| n.vip == np.ip);
        if dir == Dir::Original {
            let svc = match np_flow {
                Some(_) => nat.services.by_node_port(n.vport, proto),
                None => Some(ServiceKey { vip: n.vip, port: n.vport, proto }),
            };
            if !svc.is_some_and(|svc| nat.services.has_endpoint(&svc, n.backend, n.bport)) {
                nat.conntrack.remove(id);
                return Ok(Verdict::Reject(reject(pkt, lay, reply_mac)));
            }
            nat.conntrack.update(id, dir, tcp_flags, len, now);
            rewrite_dst(pkt, lay, n.backend, n.bport);
            if let Some((ip, port)) = n.snat {
                rewrite_src(pkt, lay, ip, port);
            }
            if node_port.is_some() {
                // Routed by the gateway stage from here on, like a pod's packet.
                pkt.data_mut()[..6].copy_from_slice(&gw.mac.0);
            }
        } else {
            nat.conntrack.update(id, dir, tcp_flags, len, now);
            rewrite_src(pkt, lay, n.vip, n.vport);
            if n.snat.is_some() {
                rewrite_dst(pkt, lay, entry.original.src, entry.original.sport);
            }
            if let Some(np) = np_flow {
                let client =
                    nat.node_clients.get(entry.original.src).ok_or(DropReason::NodePortUnknown)?;
                let d = pkt.data_mut();
                d[..6].copy_from_slice(&client.0);
                d[6..12].copy_from_slice(&np.mac.0);
                return Ok(Verdict::Settled(Action::Forward(np.port)));
            }
        }
        return Ok(Verdict::Continue);
    }
    let svc = match node_port {
        Some(_) => {
            nat.services.by_node_port(key.dport, proto).ok_or(DropReason::NodePortUnknown)?
        }
        None => ServiceKey { vip: key.dst, port: key.dport, proto },
    };
    if nat.services.get(&svc).is_none() {
        if nat.services.is_vip(key.dst) {
            return Ok(Verdict::Reject(reject(pkt, lay, reply_mac)));
        }
        return Ok(Verdict::Continue);
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
            let n = Nat { vip: key.dst, vport: key.dport, backend: ip, bport: port, snat: None };
            let id = if node_port.is_some() {
                // NodePort: the client is outside the cluster network, so the endpoint must
                // answer the node, which translates back: source NAT to the gateway address,
                // on a port of the NodePort range that no other connection uses with this
                // endpoint.
                create_snat(nat, key, n, gw.ip, None, tcp_flags, now)?
            } else if ip == key.src {
                // Hairpin: a pod reaching itself through its Service would see its own
                // address as the source and answer itself directly; the gateway stands in,
                // keeping the client's port when its replies are steered to this worker.
                create_snat(nat, key, n, gw.ip, Some(key.sport), tcp_flags, now)?
            } else {
                nat.conntrack.create(key, n, tcp_flags, now).map_err(create_error)?
            };
            nat.conntrack.update(id, Dir::Original, tcp_flags, len, now);
            let snat = nat.conntrack.get(id).and_then(|e| e.nat.snat);
            rewrite_dst(pkt, lay, ip, port);
            if let Some((ip, port)) = snat {
                rewrite_src(pkt, lay, ip, port);
            }
            if node_port.is_some() {
                pkt.data_mut()[..6].copy_from_slice(&gw.mac.0);
            }
            Ok(Verdict::Continue)
        }
        Selection::NoEndpoints => Ok(Verdict::Reject(reject(pkt, lay, reply_mac))),
        Selection::NotAService => Ok(Verdict::Continue),
    }
}

/// Creates a connection source-NATed to `gw_ip`: on `preferred` if given and free, else on
/// a port of the NodePort range. Only ports whose replies are steered to this worker are
/// used; up to [`SNAT_TRIES`] of those are tried.
fn create_snat(
    nat: &mut ServiceNat,
    key: FlowKey,
    n: Nat,
    gw_ip: Ipv4Addr,
    preferred: Option<u16>,
    tcp_flags: Option<u8>,
    now: Instant,
) -> Result<EntryId, DropReason> {
    let start = (key.hash64() % u64::from(NODE_PORT_SNAT_PORTS)) as u16;
    let range = (0..SNAT_TRIES * 16).map(|i| {
        NODE_PORT_SNAT_FIRST + (start.wrapping_add(i.wrapping_mul(7_919)) % NODE_PORT_SNAT_PORTS)
    });
    let mut tries = 0;
    for p in preferred.into_iter().chain(range) {
        if !nat.steer.owns_snat(gw_ip, p) {
            continue;
        }
        match nat.conntrack.create(key, Nat { snat: Some((gw_ip, p)), ..n }, tcp_flags, now) {
            Ok(id) => return Ok(id),
            Err(CreateError::Clash(_)) => {
                tries += 1;
                if tries >= SNAT_TRIES {
                    break;
                }
            }
            Err(e) => return Err(create_error(e)),
        }
    }
    Err(DropReason::NatNoFlow)
}

fn create_error(e: CreateError) -> DropReason {
    match e {
        CreateError::Full(_) => DropReason::ConntrackFull,
        CreateError::Clash(_) | CreateError::InvalidTcp(_) => DropReason::NatNoFlow,
    }
}

#[inline]
fn mac_at(d: &[u8], at: usize) -> MacAddr {
    let mut m = [0u8; 6];
    if let Some(b) = d.get(at..at + 6) {
        m.copy_from_slice(b);
    }
    MacAddr(m)
}

/// An ICMP error (destination unreachable, time exceeded, parameter problem) that an endpoint
/// (or a router on its way) sends back about a translated packet quotes the packet as the
/// endpoint saw it: client -> endpoint. The client only recognizes it if it speaks of the
/// Service address it used, so the quoted destination and the error's source become the VIP
/// again (checksums fixed: quoted IP header, outer IP header, ICMP).
fn icmp_error_from_endpoint(
    pkt: &mut Packet,
    nat: &mut ServiceNat,
    gw: &Gateway,
    now: Instant,
) -> Option<Action> {
    if nat.conntrack.is_empty()
        || pkt.meta.vlan.is_some()
        || pkt.meta.ethertype != u16::from(EtherType::Ipv4)
        || pkt.meta.ip_proto != u8::from(IpProtocol::Icmp)
    {
        return None;
    }
    let (l3, l4) = (usize::from(pkt.meta.l3_offset), usize::from(pkt.meta.l4_offset));
    let d = pkt.data();
    if l4 == 0 || !matches!(d.get(l4), Some(3 | 11 | 12)) {
        return None;
    }
    let q = l4 + 8;
    let &vihl = d.get(q)?;
    let q4 = q + usize::from(vihl & 0x0f) * 4;
    if vihl >> 4 != 4 || d.len() < q4 + 4 || !matches!(d[q + 9], 6 | 17) {
        return None;
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
    let Some((id, Dir::Reply)) = nat.conntrack.lookup(&quoted.reversed(), now) else {
        return None;
    };
    let entry = *nat.conntrack.get(id)?;
    let n = entry.nat;
    let outer_src = ip(l3 + 12);
    let d = pkt.data_mut();
    if let Some((snat_ip, _)) = n.snat {
        // Source-NATed (hairpin, NodePort): the endpoint quoted, and answered, the address
        // the switch stood in with; the client is who must hear it.
        let (client, cport) = (entry.original.src, entry.original.sport);
        d[q + 12..q + 16].copy_from_slice(&client.octets());
        d[q4..q4 + 2].copy_from_slice(&cport.to_be_bytes());
        let c =
            checksum::update_addr(u16::from_be_bytes([d[q + 10], d[q + 11]]), &snat_ip, &client);
        d[q + 10..q + 12].copy_from_slice(&c.to_be_bytes());
        d[l3 + 16..l3 + 20].copy_from_slice(&client.octets());
        let c =
            checksum::update_addr(u16::from_be_bytes([d[l3 + 10], d[l3 + 11]]), &snat_ip, &client);
        d[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
    }
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
    // A NodePort client is reached through the node-port interface, like the replies.
    let np = gw.node_port.filter(|np| n.vip == np.ip)?;
    let Some(mac) = nat.node_clients.get(entry.original.src) else {
        return Some(Action::Drop(DropReason::NodePortUnknown));
    };
    let d = pkt.data_mut();
    d[..6].copy_from_slice(&mac.0);
    d[6..12].copy_from_slice(&np.mac.0);
    Some(Action::Forward(np.port))
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
fn reject(pkt: &mut Packet, lay: &Layout, mac: MacAddr) -> Action {
    if lay.proto == 6 {
        super::reply::tcp_reset(pkt, mac);
    } else {
        let d = pkt.data();
        let o = lay.l3 + 16;
        let vip = Ipv4Addr::new(d[o], d[o + 1], d[o + 2], d[o + 3]);
        super::reply::icmp_error(pkt, vip, mac, 3, 3, 0);
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

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::time::Instant;

    use etherparse::{NetSlice, SlicedPacket, TransportSlice};

    use crate::config::Config;
    use crate::packet::{Action, Batch};
    use crate::pipeline::gateway::NodePortPath;
    use crate::pipeline::testutil::*;
    use crate::pipeline::Pipeline;
    use crate::port::PortId;
    use crate::stats::{DropReason, PortCounters};
    use crate::tables::neigh::Neighbor;
    use crate::tables::services::{Algorithm, Endpoint, L4Proto, ServiceSpec};
    use crate::wire::MacAddr;

    const NODE_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 1);
    const NODE_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 1, 1]);
    const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 9);
    const CLIENT_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 1, 9]);
    const NP: PortId = PortId(3);

    fn pipeline() -> Pipeline {
        let cfg = Config::for_node("n", "10.244.1.0/24".parse().unwrap(), "/tmp/x".into());
        let mut p = Pipeline::new(&cfg);
        p.gateway.host_port = Some(PortId(0));
        p.gateway.node_port = Some(NodePortPath { port: NP, ip: NODE_IP, mac: NODE_MAC });
        p.neigh.insert(IP_B, Neighbor { mac: MAC_B, port: PortId(2) }).unwrap();
        let spec = ServiceSpec {
            name: "web".into(),
            namespace: "default".into(),
            vip: Ipv4Addr::new(10, 96, 0, 20),
            port: 80,
            proto: L4Proto::Udp,
            endpoints: vec![Endpoint {
                ip: IP_B,
                port: 8080,
                ready: true,
                terminating: false,
                weight: 1,
            }],
            algorithm: Algorithm::Maglev,
            session_affinity_secs: None,
            node_port: Some(30_080),
        };
        p.nat.services.upsert(spec, "10.96.0.0/12".parse().unwrap()).unwrap();
        p
    }

    /// Runs one frame through the pipeline: its decision and the frame as it leaves.
    fn run(
        p: &mut Pipeline,
        port: PortId,
        frame: &[u8],
        c: &mut [PortCounters],
    ) -> (Action, Vec<u8>) {
        let mut batch = Batch::new();
        batch.push_frame(port, frame);
        p.run(&mut batch, c, Instant::now());
        let pkt = &batch.packets()[0];
        (pkt.meta.action, pkt.data().to_vec())
    }

    /// (src, sport, dst, dport) of an IPv4/UDP frame, after checking both checksums.
    fn udp_view(frame: &[u8]) -> (Ipv4Addr, u16, Ipv4Addr, u16) {
        let s = SlicedPacket::from_ethernet(frame).unwrap();
        let Some(NetSlice::Ipv4(ip)) = s.net else { panic!("not IPv4") };
        let h = ip.header().to_header();
        assert_eq!(h.header_checksum, h.calc_header_checksum(), "IPv4 header checksum");
        let Some(TransportSlice::Udp(u)) = s.transport else { panic!("not UDP") };
        let want = u.to_header().calc_checksum_ipv4(&h, u.payload()).unwrap();
        assert_eq!(u.checksum(), want, "UDP checksum");
        (h.source.into(), u.source_port(), h.destination.into(), u.destination_port())
    }

    #[test]
    fn node_port_flows_are_translated_both_ways_and_replies_leave_by_the_node_port() {
        let mut p = pipeline();
        let mut c = vec![PortCounters::default(); 4];
        let q = udp_frame(CLIENT_MAC, NODE_MAC, CLIENT_IP, NODE_IP, 5555, 30_080, b"query");
        let (action, out) = run(&mut p, NP, &q, &mut c);
        assert_eq!(action, Action::Forward(PortId(2)), "routed to the endpoint's port");
        let (src, sport, dst, dport) = udp_view(&out);
        assert_eq!((dst, dport), (IP_B, 8080));
        assert_eq!(src, GW_IP, "source NAT to the gateway, so the reply comes back here");
        assert!(sport >= super::NODE_PORT_SNAT_FIRST, "{sport}");
        assert_eq!(&out[..6], &MAC_B.0, "addressed to the endpoint");
        let r = udp_frame(MAC_B, GW_MAC, IP_B, GW_IP, 8080, sport, b"answer");
        let (action, out) = run(&mut p, PortId(2), &r, &mut c);
        assert_eq!(action, Action::Forward(NP), "the reply leaves by the node-port interface");
        assert_eq!(udp_view(&out), (NODE_IP, 30_080, CLIENT_IP, 5555));
        assert_eq!(&out[..6], &CLIENT_MAC.0, "to the MAC the client's packets came from");
        assert_eq!(&out[6..12], &NODE_MAC.0);
        // A second packet of the flow takes the same translation.
        let (_, out) = run(&mut p, NP, &q, &mut c);
        assert_eq!(udp_view(&out), (GW_IP, sport, IP_B, 8080));
        assert_eq!(p.nat.conntrack.len(), 1);
    }

    #[test]
    fn icmp_errors_about_node_port_flows_reach_the_client_from_the_node_address() {
        use etherparse::{icmpv4::DestUnreachableHeader, Icmpv4Type, PacketBuilder};
        let mut p = pipeline();
        let mut c = vec![PortCounters::default(); 4];
        let q = udp_frame(CLIENT_MAC, NODE_MAC, CLIENT_IP, NODE_IP, 5555, 30_080, b"query");
        let (_, out) = run(&mut p, NP, &q, &mut c);
        let (_, sport, _, _) = udp_view(&out);
        // The endpoint's kernel answers "port unreachable", quoting what it got: the IPv4
        // header and 8 bytes of UDP, gateway:sport -> endpoint:8080.
        let quoted = &out[14..14 + 28];
        let b = PacketBuilder::ethernet2(MAC_B.0, GW_MAC.0)
            .ipv4(IP_B.octets(), GW_IP.octets(), 64)
            .icmpv4(Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::Port));
        let mut err = Vec::new();
        b.write(&mut err, quoted).unwrap();
        let (action, out) = run(&mut p, PortId(2), &err, &mut c);
        assert_eq!(action, Action::Forward(NP), "out of the node-port interface");
        assert_eq!(&out[..6], &CLIENT_MAC.0);
        let s = SlicedPacket::from_ethernet(&out).unwrap();
        let Some(NetSlice::Ipv4(ip)) = s.net else { panic!("not IPv4") };
        let h = ip.header().to_header();
        assert_eq!(h.header_checksum, h.calc_header_checksum());
        assert_eq!((h.source, h.destination), (NODE_IP.octets(), CLIENT_IP.octets()));
        let Some(TransportSlice::Icmpv4(icmp)) = s.transport else { panic!("not ICMP") };
        let want = icmp.icmp_type().calc_checksum(icmp.payload());
        assert_eq!(icmp.checksum(), want, "ICMP checksum");
        let inner = icmp.payload();
        assert_eq!(&inner[12..16], &CLIENT_IP.octets(), "quoted source: the client");
        assert_eq!(&inner[16..20], &NODE_IP.octets(), "quoted destination: the node");
        assert_eq!(&inner[20..22], &5555u16.to_be_bytes());
        assert_eq!(&inner[22..24], &30_080u16.to_be_bytes());
        let qh = etherparse::Ipv4HeaderSlice::from_slice(&inner[..20]).unwrap().to_header();
        assert_eq!(qh.header_checksum, qh.calc_header_checksum(), "quoted header checksum");
        assert_ne!(sport, 5555);
    }

    #[test]
    fn node_port_packets_that_are_no_services_are_dropped_not_flooded() {
        let mut p = pipeline();
        let mut c = vec![PortCounters::default(); 4];
        let other = udp_frame(CLIENT_MAC, NODE_MAC, CLIENT_IP, NODE_IP, 5555, 30_081, b"q");
        let to_vip =
            udp_frame(CLIENT_MAC, NODE_MAC, CLIENT_IP, Ipv4Addr::new(10, 96, 0, 20), 5, 80, b"q");
        let arp = arp_request(CLIENT_MAC, CLIENT_IP, NODE_IP);
        for f in [other, to_vip, arp] {
            let (action, _) = run(&mut p, NP, &f, &mut c);
            assert_eq!(action, Action::Drop(DropReason::NodePortUnknown));
        }
        assert_eq!(c[NP.index()].drops[DropReason::NodePortUnknown as usize], 3);
        assert!(p.fdb.is_empty(), "nothing is learned from the node-port interface");
    }

    #[test]
    fn many_clients_with_one_source_port_get_distinct_snat_ports() {
        let mut p = pipeline();
        let mut c = vec![PortCounters::default(); 4];
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..50u8 {
            let ip = Ipv4Addr::new(192, 168, 2, i + 1);
            let q = udp_frame(CLIENT_MAC, NODE_MAC, ip, NODE_IP, 5555, 30_080, b"q");
            let (action, out) = run(&mut p, NP, &q, &mut c);
            assert_eq!(action, Action::Forward(PortId(2)));
            seen.insert(udp_view(&out).1);
        }
        assert_eq!(seen.len(), 50, "every flow has its own gateway port towards the endpoint");
    }
}
