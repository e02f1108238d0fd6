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
use std::sync::Arc;
use std::time::Instant;

use rustc_hash::FxHashMap;

use crate::packet::{Action, Batch, Frag, Packet};
use crate::port::PortId;
use crate::stats::{DropReason, PortCounters};
use crate::tables::conntrack::{Conntrack, CreateError, Dir, EntryId, FlowHash, FlowKey, Nat};
use crate::tables::frags::{FragKey, FragRewrite, FragTable};
use crate::tables::services::{
    L4Proto, Selection, ServiceCounters, ServiceKey, ServiceState, ServiceTable,
};
use crate::wire::{
    checksum, icmp, ipv4, tcp, udp, EtherType, EthernetFrame, IcmpMessage, IcmpPacket, IpProtocol,
    Ipv4Packet, MacAddr, QuotedIpv4, TcpPacket, UdpPacket,
};

use super::burst::{self, Prefetched};
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
///
/// The Service table is the control plane's published snapshot, shared by every worker and
/// never written here; what a worker changes while choosing endpoints (round-robin cursors,
/// counters) is its own, in `service_state`, and so are affinity pins. A new table is
/// swapped in between bursts with [`ServiceNat::install_services`]; per-Service state of
/// Services the new table did not change carries over (see `tables/services/lookup.rs` for
/// what resets).
#[derive(Debug)]
pub struct ServiceNat {
    /// The Services: the published table (read only).
    pub services: Arc<ServiceTable>,
    /// This worker's round-robin cursors and selection counters.
    pub service_state: ServiceState,
    /// The tracked connections.
    pub conntrack: Conntrack,
    /// ClientIP session affinity: (client, Service) -> (endpoint, until when).
    pub affinity: Affinity,
    /// NodePort clients' next-hop MACs, learned from their packets: where replies go.
    pub node_clients: NodeClients,
    /// This worker's place among the workers: source NAT picks ports whose replies are
    /// steered back here.
    pub steer: super::steer::Steering,
    /// Translations of fragmented datagrams, for their later fragments.
    pub frags: FragTable,
}

impl ServiceNat {
    /// Whether the NAT stage has anything to do: Services, tracked connections or a
    /// NodePort path (else it, and classify's flow hash, are skipped).
    #[inline]
    pub fn has_work(&self, gw: &Gateway) -> bool {
        !self.services.is_empty() || !self.conntrack.is_empty() || gw.node_port.is_some()
    }

    /// Installs a published Service table (between bursts) and returns the one it replaces,
    /// for the caller to drop off the packet path.
    pub fn install_services(&mut self, table: Arc<ServiceTable>) -> Arc<ServiceTable> {
        self.service_state.adopt(&table);
        std::mem::replace(&mut self.services, table)
    }

    /// Edits a copy of the table on this thread and installs it: for tests and benchmarks
    /// that drive a pipeline without a control plane (the switch builds tables in the
    /// control plane and publishes them).
    pub fn edit_services<R>(&mut self, edit: impl FnOnce(&mut ServiceTable) -> R) -> R {
        let mut next = ServiceTable::clone(&self.services);
        let r = edit(&mut next);
        self.install_services(Arc::new(next));
        r
    }

    /// This worker's Service selection counters.
    pub fn service_counters(&self) -> ServiceCounters {
        self.service_state.counters()
    }
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

/// Where the headers of an IPv4 TCP/UDP packet sit, as [`layout`] checked them: at least an
/// option-less IPv4 header at `l3`, and a whole TCP header (20 bytes) or UDP header (8) at
/// `l4`. Those bounds cover every field the stage reads or writes (addresses, checksums,
/// ports, TCP flags), and frames are never resized in this stage, so views built at these
/// offsets with `new_unchecked` stay within the checked bytes.
#[derive(Debug, Clone, Copy)]
struct Layout {
    l3: usize,
    l4: usize,
    proto: IpProtocol,
}

/// The layout of an untagged IPv4 TCP/UDP packet that carries its ports (not a later
/// fragment). Parse once: classify validated the IPv4 header (`l4_offset` is the end of it)
/// and the L4 header and read the 5-tuple; this checks only the bounds the stage relies on,
/// from `Meta`.
#[inline(always)]
fn layout(pkt: &Packet) -> Option<Layout> {
    let m = &pkt.meta;
    if !m.has_ports || m.vlan.is_some() || m.ethertype != u16::from(EtherType::Ipv4) {
        return None;
    }
    let (l3, l4) = (usize::from(m.l3_offset), usize::from(m.l4_offset));
    let proto = IpProtocol::from(m.flow.proto);
    let l4_len = match proto {
        IpProtocol::Tcp => tcp::HEADER_LEN,
        IpProtocol::Udp => udp::HEADER_LEN,
        _ => return None,
    };
    (l4 >= l3 + ipv4::HEADER_LEN && pkt.data().len() >= l4 + l4_len).then_some(Layout {
        l3,
        l4,
        proto,
    })
}

/// The packet's layout, 5-tuple and conntrack bucket, all from `Meta`.
#[inline(always)]
fn prepare(pkt: &Packet, ct: &Conntrack) -> Option<(Layout, FlowKey, FlowHash)> {
    let lay = layout(pkt)?;
    let key = pkt.meta.flow;
    // Not hashed when the worker that classified it had no NAT work yet (a Service table
    // published to it a burst later than here).
    let h = if pkt.meta.hashed { FlowHash::from_seeded(pkt.meta.flow_hash) } else { ct.hash(&key) };
    debug_assert_eq!(h, ct.hash(&key), "classify's flow seed is the conntrack table's");
    Some((lay, key, h))
}

/// Runs Service NAT over the batch.
///
/// The conntrack lookups of a burst are started together (`pipeline::burst`): a first pass
/// takes every undecided TCP/UDP packet's 5-tuple and bucket from `Meta` and prefetches the
/// bucket, a second prefetches the entries found there, and only then are the packets
/// handled one by one, in order, as if each were alone. With many flows the cache misses of
/// a burst overlap instead of adding up.
pub fn run(
    batch: &mut Batch,
    nat: &mut ServiceNat,
    gw: &Gateway,
    counters: &mut [PortCounters],
    now: Instant,
) {
    if !nat.has_work(gw) {
        return;
    }
    burst::run(batch, &mut NatStage { nat, gw, counters, now }, true);
}

/// [`run`]'s state over a batch.
struct NatStage<'a> {
    nat: &'a mut ServiceNat,
    gw: &'a Gateway,
    counters: &'a mut [PortCounters],
    now: Instant,
}

impl Prefetched for NatStage<'_> {
    type Prep = (Layout, FlowKey, FlowHash);

    #[inline(always)]
    fn prepare(&mut self, pkt: &mut Packet) -> Option<Self::Prep> {
        let prep = prepare(pkt, &self.nat.conntrack)?;
        self.nat.conntrack.prefetch_index(prep.2);
        Some(prep)
    }

    #[inline(always)]
    fn between(&mut self, prepared: &[Option<Self::Prep>]) {
        for (_, _, h) in prepared.iter().flatten() {
            self.nat.conntrack.prefetch_entry(*h);
        }
    }

    #[inline(always)]
    fn handle(&mut self, pkt: &mut Packet, prep: Option<Self::Prep>) {
        let NatStage { nat, gw, counters, now } = self;
        let (gw, now) = (*gw, *now);
        let in_port = pkt.meta.in_port;
        let from_node_port = gw.node_port.filter(|np| np.port == in_port);
        let Some((lay, key, h)) = prep else {
            if pkt.meta.frag == Frag::Later {
                match later_fragment(pkt, &mut nat.frags, now) {
                    Some(settled) => pkt.meta.action = settled.unwrap_or(Action::Continue),
                    None if from_node_port.is_some() || is_frontend(pkt, nat, gw) => drop_packet(
                        &mut pkt.meta.action,
                        in_port,
                        DropReason::FragUntracked,
                        counters,
                    ),
                    None => {}
                }
                return;
            }
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
            return;
        };
        let verdict = handle(pkt, &lay, key, h, nat, gw, from_node_port, now);
        if pkt.meta.frag == Frag::First {
            if let Ok(Verdict::Continue | Verdict::Settled(_)) = verdict {
                let settled = match verdict {
                    Ok(Verdict::Settled(a)) => Some(a),
                    _ => None,
                };
                record_first_fragment(pkt, &lay, &key, settled, &mut nat.frags, now);
            }
        }
        match verdict {
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

/// Whether `pkt` is addressed to a Service frontend: a VIP, or the node-port interface's
/// address.
#[inline]
fn is_frontend(pkt: &Packet, nat: &ServiceNat, gw: &Gateway) -> bool {
    let dst = pkt.meta.flow.dst;
    nat.services.is_vip(dst) || gw.node_port.is_some_and(|np| np.ip == dst)
}

/// Keeps the translation of a first fragment NAT just translated (see `tables::frags`), so
/// its later fragments get it too. `key` is the 5-tuple it arrived with.
fn record_first_fragment(
    pkt: &mut Packet,
    lay: &Layout,
    key: &FlowKey,
    settled: Option<Action>,
    frags: &mut FragTable,
    now: Instant,
) {
    let (src, dst) = (pkt.meta.flow.src, pkt.meta.flow.dst);
    if settled.is_none() && src == key.src && dst == key.dst {
        return; // not translated
    }
    let Some(ip) = pkt.data().get(lay.l3..) else { return };
    let id = Ipv4Packet::new_unchecked(ip).ident();
    let eth = EthernetFrame::new_unchecked(pkt.data());
    let rewrite =
        FragRewrite { src, dst, dst_mac: eth.dst_addr(), src_mac: eth.src_addr(), settled };
    frags.record(FragKey { src: key.src, dst: key.dst, proto: key.proto, id }, rewrite, now);
}

/// Translates a later fragment (no ports) as its datagram's first fragment was. `None`
/// when its first was not translated here (or not tracked); else the action the first was
/// settled with, if any.
fn later_fragment(pkt: &mut Packet, frags: &mut FragTable, now: Instant) -> Option<Option<Action>> {
    if frags.is_empty() {
        return None;
    }
    let (mut eth, ip_bytes) = pkt.split_l3_mut()?;
    let mut ip = Ipv4Packet::new_checked(ip_bytes).ok()?;
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    let key = FragKey { src, dst, proto: u8::from(ip.next_header()), id: ip.ident() };
    let rw = frags.lookup(&key, !ip.more_frags(), now)?;
    let csum = checksum::update_addr(ip.checksum(), &src, &rw.src);
    ip.set_src_addr(rw.src);
    ip.set_dst_addr(rw.dst);
    ip.set_checksum(checksum::update_addr(csum, &dst, &rw.dst));
    eth.set_dst_addr(rw.dst_mac);
    eth.set_src_addr(rw.src_mac);
    (pkt.meta.flow.src, pkt.meta.flow.dst) = (rw.src, rw.dst);
    Some(rw.settled)
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
    let tcp_flags = match lay.proto {
        IpProtocol::Tcp => pkt.data().get(lay.l4..).map(|t| TcpPacket::new_unchecked(t).flags().0),
        _ => None,
    };
    let len = pkt.len();
    let proto = proto_of(lay.proto);
    if let Some(np) = node_port {
        if key.dst != np.ip {
            return Err(DropReason::NodePortUnknown);
        }
        // Learned only from packets for this node: a forged frame for another address
        // cannot redirect a client's replies.
        nat.node_clients.learn(key.src, EthernetFrame::new_unchecked(pkt.data()).src_addr());
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
                return Ok(Verdict::Reject(reject(pkt, lay, reply_mac)?));
            }
            nat.conntrack.update(id, dir, tcp_flags, len, now);
            rewrite_dst(pkt, lay, n.backend, n.bport);
            if let Some((ip, port)) = n.snat {
                rewrite_src(pkt, lay, ip, port);
            }
            if node_port.is_some() {
                // Routed by the gateway stage from here on, like a pod's packet.
                EthernetFrame::new_unchecked(pkt.data_mut()).set_dst_addr(gw.mac);
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
                set_macs(pkt, client, np.mac);
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
            return Ok(Verdict::Reject(reject(pkt, lay, reply_mac)?));
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
        None => nat.services.select(&svc, key.hash64(), &mut nat.service_state),
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
                create_snat(nat, None, key, n, gw.ip, None, tcp_flags, now)?
            } else if ip == key.src {
                // Hairpin: a pod reaching itself through its Service would see its own
                // address as the source and answer itself directly; the gateway stands in,
                // keeping the client's port when its replies are steered to this worker.
                create_snat(nat, owner(pkt, gw), key, n, gw.ip, Some(key.sport), tcp_flags, now)?
            } else {
                let owner = owner(pkt, gw);
                nat.conntrack.create_for(owner, key, n, tcp_flags, now).map_err(create_error)?
            };
            nat.conntrack.update(id, Dir::Original, tcp_flags, len, now);
            let snat = nat.conntrack.get(id).and_then(|e| e.nat.snat);
            rewrite_dst(pkt, lay, ip, port);
            if let Some((ip, port)) = snat {
                rewrite_src(pkt, lay, ip, port);
            }
            if node_port.is_some() {
                EthernetFrame::new_unchecked(pkt.data_mut()).set_dst_addr(gw.mac);
            }
            Ok(Verdict::Continue)
        }
        Selection::NoEndpoints => Ok(Verdict::Reject(reject(pkt, lay, reply_mac)?)),
        Selection::NotAService => Ok(Verdict::Continue),
    }
}

/// Creates a connection source-NATed to `gw_ip`: on `preferred` if given and free, else on
/// a port of the NodePort range. Only ports whose replies are steered to this worker are
/// used; up to [`SNAT_TRIES`] of those are tried.
#[allow(clippy::too_many_arguments)]
fn create_snat(
    nat: &mut ServiceNat,
    owner: Option<PortId>,
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
        let snat = Nat { snat: Some((gw_ip, p)), ..n };
        match nat.conntrack.create_for(owner, key, snat, tcp_flags, now) {
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

/// The pod port a new connection counts against (`conntrack.max_per_port`): the ingress
/// port, unless it is the node's own (host port) or the overlay's, whose connections are
/// not one pod's. NodePort clients come in on the node-port interface and are passed
/// `None` by their caller.
#[inline]
fn owner(pkt: &Packet, gw: &Gateway) -> Option<PortId> {
    let p = pkt.meta.in_port;
    (gw.host_port != Some(p) && gw.overlay_port != Some(p)).then_some(p)
}

fn create_error(e: CreateError) -> DropReason {
    match e {
        CreateError::Full(_) => DropReason::ConntrackFull,
        CreateError::PortLimit(_) => DropReason::ConntrackPortLimit,
        CreateError::Clash(_) | CreateError::InvalidTcp(_) => DropReason::NatNoFlow,
    }
}

/// Addresses the frame `src` -> `dst` (classify checked it holds an Ethernet header).
#[inline]
fn set_macs(pkt: &mut Packet, dst: MacAddr, src: MacAddr) {
    let mut eth = EthernetFrame::new_unchecked(pkt.data_mut());
    eth.set_dst_addr(dst);
    eth.set_src_addr(src);
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
        || pkt.meta.flow.proto != u8::from(IpProtocol::Icmp)
        || pkt.meta.frag == Frag::Later
    {
        return None;
    }
    let l3 = usize::from(pkt.meta.l3_offset);
    let (outer_src, quoted) = {
        let ip = Ipv4Packet::new_checked(pkt.data().get(l3..)?).ok()?;
        let icmp = IcmpPacket::new_checked(ip.payload()).ok()?;
        if !matches!(
            icmp.msg_type(),
            IcmpMessage::DstUnreachable | IcmpMessage::TimeExceeded | IcmpMessage::ParamProblem
        ) {
            return None;
        }
        let q = QuotedIpv4::new_checked(icmp.data()).ok()?;
        let proto = q.next_header();
        if !matches!(proto, IpProtocol::Tcp | IpProtocol::Udp) {
            return None;
        }
        let key = FlowKey {
            src: q.src_addr(),
            dst: q.dst_addr(),
            sport: q.src_port(),
            dport: q.dst_port(),
            proto: u8::from(proto),
        };
        (ip.src_addr(), key)
    };
    // The quoted packet went client -> endpoint: the reverse of the connection's reply key.
    let Some((id, Dir::Reply)) = nat.conntrack.lookup(&quoted.reversed(), now) else {
        return None;
    };
    let entry = *nat.conntrack.get(id)?;
    let n = entry.nat;
    {
        // Checked above, on these same bytes.
        let mut ip = Ipv4Packet::new_unchecked(pkt.data_mut().get_mut(l3..)?);
        let mut ip_csum = ip.checksum();
        let icmp_buf = ip.payload_mut();
        let mut q = QuotedIpv4::new_checked(icmp_buf.get_mut(icmp::HEADER_LEN..)?).ok()?;
        let mut q_csum = q.checksum();
        if let Some((snat_ip, _)) = n.snat {
            // Source-NATed (hairpin, NodePort): the endpoint quoted, and answered, the
            // address the switch stood in with; the client is who must hear it.
            let (client, cport) = (entry.original.src, entry.original.sport);
            q.set_src_addr(client);
            q.set_src_port(cport);
            q_csum = checksum::update_addr(q_csum, &snat_ip, &client);
        }
        q.set_dst_addr(n.vip);
        q.set_dst_port(n.vport);
        q.set_checksum(checksum::update_addr(q_csum, &n.backend, &n.vip));
        // The ICMP checksum covers the whole (short) message: recompute it.
        let mut icmp = IcmpPacket::new_unchecked(&mut icmp_buf[..]);
        icmp.fill_checksum();
        if n.snat.is_some() {
            // From whatever the error was addressed to (normally the stand-in address).
            let old_dst = ip.dst_addr();
            ip.set_dst_addr(entry.original.src);
            ip_csum = checksum::update_addr(ip_csum, &old_dst, &entry.original.src);
        }
        if outer_src == n.backend {
            ip.set_src_addr(n.vip);
            ip_csum = checksum::update_addr(ip_csum, &n.backend, &n.vip);
        }
        ip.set_checksum(ip_csum);
    }
    if n.snat.is_some() {
        pkt.meta.flow.dst = entry.original.src;
    }
    if outer_src == n.backend {
        pkt.meta.flow.src = n.vip;
    }
    // A NodePort client is reached through the node-port interface, like the replies.
    let np = gw.node_port.filter(|np| n.vip == np.ip)?;
    let Some(mac) = nat.node_clients.get(entry.original.src) else {
        return Some(Action::Drop(DropReason::NodePortUnknown));
    };
    set_macs(pkt, mac, np.mac);
    Some(Action::Forward(np.port))
}

fn proto_of(p: IpProtocol) -> L4Proto {
    if p == IpProtocol::Tcp {
        L4Proto::Tcp
    } else {
        L4Proto::Udp
    }
}

/// Answers a packet the Service cannot take: a TCP reset, or ICMP port unreachable, from the
/// address the client used.
/// Dropped (`l4_truncated`) when no answer could be built from it.
fn reject(pkt: &mut Packet, lay: &Layout, mac: MacAddr) -> Result<Action, DropReason> {
    let answered = if lay.proto == IpProtocol::Tcp {
        super::reply::tcp_reset(pkt, mac)
    } else {
        let vip = pkt.meta.flow.dst;
        super::reply::icmp_error(pkt, vip, mac, 3, 3, 0)
    };
    if answered {
        Ok(Action::Reply)
    } else {
        Err(DropReason::L4Truncated)
    }
}

/// Which end of a connection a rewrite changes.
#[derive(Debug, Clone, Copy)]
enum End {
    Src,
    Dst,
}

/// Rewrites the destination address and port.
fn rewrite_dst(pkt: &mut Packet, lay: &Layout, ip: Ipv4Addr, port: u16) {
    rewrite(pkt, lay, End::Dst, ip, port);
}

/// Rewrites the source address and port.
fn rewrite_src(pkt: &mut Packet, lay: &Layout, ip: Ipv4Addr, port: u16) {
    rewrite(pkt, lay, End::Src, ip, port);
}

#[inline]
fn rewrite(pkt: &mut Packet, lay: &Layout, end: End, ip: Ipv4Addr, port: u16) {
    let flow = &mut pkt.meta.flow;
    match end {
        End::Src => (flow.src, flow.sport) = (ip, port),
        End::Dst => (flow.dst, flow.dport) = (ip, port),
    }
    let partial = pkt.meta.vnet.needs_csum();
    let Some((front, l4)) = pkt.data_mut().split_at_mut_checked(lay.l4) else { return };
    let Some(l3) = front.get_mut(lay.l3..) else { return };
    // Both headers were checked by `layout` (see [`Layout`]).
    let mut iph = Ipv4Packet::new_unchecked(l3);
    let mut ports = UdpPacket::new_unchecked(&mut *l4);
    let (old_ip, old_port) = match end {
        End::Src => (iph.src_addr(), ports.src_port()),
        End::Dst => (iph.dst_addr(), ports.dst_port()),
    };
    if old_ip == ip && old_port == port {
        return;
    }
    match end {
        End::Src => {
            iph.set_src_addr(ip);
            ports.set_src_port(port);
        }
        End::Dst => {
            iph.set_dst_addr(ip);
            ports.set_dst_port(port);
        }
    }
    iph.set_checksum(checksum::update_addr(iph.checksum(), &old_ip, &ip));
    let udp = lay.proto == IpProtocol::Udp;
    let l4_csum = if udp { ports.checksum() } else { TcpPacket::new_unchecked(&*l4).checksum() };
    let new = if partial {
        // The field holds the pseudo-header sum, uncomplemented; ports are not in it.
        !checksum::update_addr(!l4_csum, &old_ip, &ip)
    } else if udp && l4_csum == 0 {
        0
    } else {
        let c = checksum::update16(checksum::update_addr(l4_csum, &old_ip, &ip), old_port, port);
        if udp && c == 0 {
            0xffff
        } else {
            c
        }
    };
    if udp {
        UdpPacket::new_unchecked(l4).set_checksum(new);
    } else {
        TcpPacket::new_unchecked(l4).set_checksum(new);
    }
}

#[cfg(test)]
mod tests;
