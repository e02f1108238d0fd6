//! The controller: the control plane's state (which ports exist, with which names, addresses
//! and MACs) and the steps that carry out each [`Request`].
//!
//! It owns no packet state: tables and counters belong to the worker, which the controller
//! drives through [`WorkerHandle`] commands. A port add does all the slow, fallible work
//! first (validate, create the TAP or veth pair, move the pod's end into the pod's
//! namespace, configure address and routes, bind the AF_XDP socket) and hands the finished
//! port to the worker last; every failure before that point drops the TAP (or deletes the
//! veth's host end), which destroys the device wherever it is, and releases the address. So
//! a failed add leaves nothing behind, and the worker never sees a half-configured port.
//!
//! One mutex serializes requests that change ports. Port adds from many CNI invocations are
//! therefore applied one at a time, which is what makes address allocation race-free; the
//! packet path never takes this lock.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use crate::cidr::Ipv4IfAddr;
use crate::config::{Config, PeerConfig, MAX_MTU, MIN_MTU};
use crate::control::api::*;
use crate::dns::server::{
    edit as edit_names, publish, shared_names, DnsCounters, DnsServer, SharedNames,
};
use crate::dns::NameTable;
use crate::pipeline::gateway::NodePortPath;
use crate::port::afxdp::{AfXdpOptions, AfXdpPort};
use crate::port::node_port_filter::{self, NodePortMap};
use crate::port::overlay::{OverlayOptions, OverlayPort};
use crate::port::overlay_xdp::OverlayXdpPort;
use crate::port::queue_steering;
use crate::port::tap::TapPort;
use crate::port::{Port, PortId, PortKind};
use crate::sys::bpf::{SchedClsProgram, SocketFilterProgram, TcxLink};
use crate::sys::netlink::Netlink;
use crate::sys::netns::NetNs;
use crate::sys::tun::{self, TapDevice, TapOptions};
use crate::tables::conntrack::{Conntrack, Entry as CtEntry};
use crate::tables::ipam::IpPool;
use crate::tables::services::ServiceTable;
use crate::wire::MacAddr;
use crate::worker::{Command, WorkerGone, WorkerHandle};

/// Interface name pods get when the request names none.
pub const DEFAULT_IFNAME: &str = "eth0";

/// Longest port name.
pub const MAX_PORT_NAME_LEN: usize = 128;

/// A port as the control plane knows it.
#[derive(Debug)]
struct PortRecord {
    id: PortId,
    kind: PortKind,
    netns: Option<String>,
    ifname: String,
    mac: MacAddr,
    ip: Option<Ipv4IfAddr>,
    mtu: u32,
    /// An AF_XDP pod end's queue-steering program, attached while this lives.
    pod_steering: Option<TcxLink>,
}

#[derive(Debug)]
struct State {
    ports: BTreeMap<String, PortRecord>,
    ids: Vec<bool>,
    pool: IpPool,
    macs: HashSet<MacAddr>,
    netlink: Netlink,
    tmp_seq: u32,
    /// Overlay peers, as the worker has them.
    peers: Vec<PeerConfig>,
    /// The host port's interface index: peers' pod CIDRs are routed to it in the node
    /// namespace, so the node reaches remote pods through the gateway.
    host_index: Option<u32>,
    /// The Service table as the worker has it (same edits, same order): what an apply
    /// inherits Maglev table sizes from, and where Service names are read.
    services: ServiceTable,
    /// The NodePort filter's port map and the (protocol, port) pairs in it, when NodePort is
    /// configured.
    node_ports: Option<(NodePortMap, BTreeSet<(L4Proto, u16)>)>,
}

/// Name the NodePort interface is listed under.
pub const NODE_PORT_PORT_NAME: &str = "node-port";

/// Name the overlay port is listed under.
pub const OVERLAY_PORT_NAME: &str = "overlay";

/// Why the switch could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The host port could not be created or configured.
    #[error("host port {name}: {step}: {source}")]
    HostPort {
        /// Its name.
        name: String,
        /// The step that failed.
        step: &'static str,
        /// Why.
        source: io::Error,
    },
    /// The worker thread or netlink socket could not be created.
    #[error("{step}: {source}")]
    Setup {
        /// The step that failed.
        step: &'static str,
        /// Why.
        source: io::Error,
    },
    /// The worker refused the host port.
    #[error("worker: {0}")]
    Worker(String),
    /// The overlay's sockets or routes could not be set up.
    #[error("overlay: {step}: {source}")]
    Overlay {
        /// The step that failed.
        step: String,
        /// Why.
        source: io::Error,
    },
    /// The cluster DNS responder could not start.
    #[error("dns: {step}: {source}")]
    Dns {
        /// The step that failed.
        step: String,
        /// Why.
        source: io::Error,
    },
    /// The NodePort interface could not be attached.
    #[error("node_port: {step}: {source}")]
    NodePort {
        /// The step that failed.
        step: String,
        /// Why.
        source: io::Error,
    },
}

/// The control plane of one switch.
#[derive(Debug)]
pub struct Controller {
    config: Config,
    worker: WorkerHandle,
    state: Mutex<State>,
    started: Instant,
    /// The cluster DNS responder and the names it answers from, when it runs.
    dns: Option<(DnsServer, SharedNames)>,
    /// With several workers: the program that picks each TAP frame's queue (worker) the way
    /// flow steering would (`port/queue_steering.rs`); `None` if the kernel refused it (the
    /// kernel's own per-flow choice applies, and the switch steers what arrives elsewhere).
    tap_steering: Option<SocketFilterProgram>,
    /// The same for AF_XDP pods: the tc program on each pod end's egress that picks a frame's
    /// tx queue, which veth delivers on the host end's rx queue of that number (read by the
    /// worker of that number); `None` if the kernel refused it.
    veth_steering: Option<SchedClsProgram>,
}

/// Namespace of the built-in DNS Services.
pub const DNS_NAMESPACE: &str = "kube-system";

/// The built-in DNS Service `kube-system/kube-dns` (UDP and TCP on the DNS address, one
/// spec per port):
/// their only endpoint is the switch's own responder on the gateway address.
fn dns_services(config: &Config) -> Vec<ServiceSpec> {
    let Some(d) = &config.dns else { return Vec::new() };
    [("kube-dns", L4Proto::Udp), ("kube-dns", L4Proto::Tcp)]
        .into_iter()
        .map(|(name, proto)| ServiceSpec {
            name: name.into(),
            namespace: DNS_NAMESPACE.into(),
            vip: d.vip,
            port: d.port,
            proto,
            endpoints: vec![Endpoint {
                ip: config.node.gateway,
                port: d.listen_port,
                ready: true,
                terminating: false,
                weight: 1,
            }],
            algorithm: Algorithm::Maglev,
            session_affinity_secs: None,
            node_port: None,
        })
        .collect()
}

fn failed(step: &str, e: io::Error) -> ApiError {
    let kind = match e.kind() {
        io::ErrorKind::AlreadyExists => ErrorKind::AlreadyExists,
        io::ErrorKind::NotFound => ErrorKind::NotFound,
        _ => ErrorKind::Failed,
    };
    ApiError::new(kind, format!("{step}: {e}"))
}

fn unavailable(_: WorkerGone) -> ApiError {
    ApiError::new(ErrorKind::Unavailable, "the packet worker is not answering")
}

impl Controller {
    /// Starts the worker and attaches the host port (if configured) in the calling thread's
    /// network namespace. On error nothing is left running.
    pub fn start(config: Config) -> Result<Controller, StartError> {
        let mut netlink = Netlink::open()
            .map_err(|source| StartError::Setup { step: "netlink socket", source })?;
        let worker = WorkerHandle::spawn_with(
            |steering| crate::pipeline::Pipeline::for_worker(&config, steering),
            config.ports.max_ports,
            config.worker.clone(),
        )
        .map_err(|source| StartError::Setup { step: "worker thread", source })?;
        let queues = worker.count();
        let tap_steering = (queues > 1)
            .then(|| {
                queue_steering::load_tap(config.node.gateway, config.services.cidr)
                    .map_err(|e| {
                        eprintln!(
                            "podswitch: TAP queue steering program refused ({e}); the kernel \
                             picks queues per flow and the switch steers the rest"
                        )
                    })
                    .ok()
            })
            .flatten();
        let steer_fd = tap_steering.as_ref().map(|p| p.fd());
        let veth_steering = (queues > 1)
            .then(|| {
                queue_steering::load_veth(config.node.gateway, config.services.cidr, queues)
                    .map_err(|e| {
                        eprintln!(
                            "podswitch: veth queue steering program refused ({e}); AF_XDP pods' \
                             flows spread by hash and the switch steers the rest"
                        )
                    })
                    .ok()
            })
            .flatten();
        let mut ports = BTreeMap::new();
        let mut ids = vec![false; config.ports.max_ports];
        let mut macs = HashSet::new();
        let mut host_index = None;
        if let Some(hp) = &config.host_port {
            let err = |step, source| StartError::HostPort { name: hp.name.clone(), step, source };
            let taps = create_tap(&hp.name, queues, steer_fd).map_err(|e| err("create", e))?;
            let link = netlink
                .link_get(&hp.name)
                .map_err(|e| err("look up", e))?
                .ok_or_else(|| err("look up", io::ErrorKind::NotFound.into()))?;
            let gw = config.node.gateway;
            netlink
                .link_set_mac(link.index, config.node.gateway_mac.0)
                .map_err(|e| err("set MAC", e))?;
            netlink.link_set_mtu(link.index, config.node.mtu).map_err(|e| err("set MTU", e))?;
            netlink
                .addr_add(link.index, gw, config.node.pod_cidr.prefix_len())
                .map_err(|e| err("add gateway address", e))?;
            netlink.link_set_up(link.index, true).map_err(|e| err("set up", e))?;
            host_index = Some(link.index);
            let port = tap_ports(taps, PortKind::Host);
            let record = PortRecord {
                id: PortId(0),
                kind: PortKind::Host,
                netns: None,
                ifname: hp.name.clone(),
                mac: config.node.gateway_mac,
                ip: Some(Ipv4IfAddr { addr: gw, prefix_len: config.node.pod_cidr.prefix_len() }),
                mtu: config.node.mtu,
                pod_steering: None,
            };
            add_own_port(&worker, &mut ids, &mut ports, &hp.name, port, record, |id| {
                worker.call(|reply| Command::SetHostPort { id: Some(id), reply })
            })?;
        }
        macs.insert(config.node.gateway_mac);
        if let Some(h) = host_index {
            // The node reaches Services through the host port, like pods through the gateway.
            let c = config.services.cidr;
            netlink.route_add(c.network(), c.prefix_len(), None, h).map_err(|source| {
                StartError::Setup { step: "route the Service CIDR to the host port", source }
            })?;
        }
        let mut peers = Vec::new();
        if let Some(ov) = &config.overlay {
            let err = |step: &str, source| StartError::Overlay { step: step.to_string(), source };
            let opts = OverlayOptions {
                local: ov.underlay_ip,
                udp_port: ov.udp_port,
                vni: ov.vni,
                udp_checksum: ov.udp_checksum,
            };
            let workers = worker.count() as u32;
            let (queues, ifname) = match &ov.afxdp_interface {
                None => {
                    let queues = OverlayPort::bind_queues(opts, workers)
                        .map_err(|e| err(&format!("bind {}:{}", ov.underlay_ip, ov.udp_port), e))?;
                    let queues: Vec<Box<dyn Port>> =
                        queues.into_iter().map(|p| Box::new(p) as Box<dyn Port>).collect();
                    (queues, format!("udp:{}", ov.udp_port))
                }
                Some(name) => {
                    let q = xdp_underlay(&mut netlink, name, opts, workers, &config.afxdp)?;
                    (q, format!("afxdp:{name}"))
                }
            };
            let record = PortRecord {
                id: PortId(0),
                kind: PortKind::Overlay,
                netns: None,
                ifname,
                mac: config.node.gateway_mac,
                ip: Some(Ipv4IfAddr { addr: ov.underlay_ip, prefix_len: 32 }),
                mtu: ov.underlay_mtu,
                pod_steering: None,
            };
            add_own_port(&worker, &mut ids, &mut ports, OVERLAY_PORT_NAME, queues, record, |id| {
                worker.call(|reply| Command::SetOverlayPort { id: Some(id), reply })
            })?;
            for p in &ov.peers {
                if let Some(h) = host_index {
                    netlink
                        .route_add(p.pod_cidr.network(), p.pod_cidr.prefix_len(), None, h)
                        .map_err(|e| err(&format!("route {} to the host port", p.pod_cidr), e))?;
                }
                peers.push(p.clone());
            }
        }
        let mut node_ports = None;
        if let Some(np) = &config.node_port {
            let err = |step: String, source| StartError::NodePort { step, source };
            let link = netlink
                .link_get(&np.interface)
                .map_err(|e| err(format!("look up {}", np.interface), e))?
                .ok_or_else(|| {
                    err(format!("look up {}", np.interface), io::ErrorKind::NotFound.into())
                })?;
            let mac = link.mac.map(MacAddr).ok_or_else(|| {
                err(
                    format!("{} has no Ethernet address", np.interface),
                    io::ErrorKind::InvalidInput.into(),
                )
            })?;
            let map = NodePortMap::create().map_err(|e| err("port map".into(), e))?;
            let opts =
                AfXdpOptions::for_mtu_and_config(link.mtu, &config.afxdp).ok_or_else(|| {
                    err(
                        format!("MTU {} of {} is too large for AF_XDP", link.mtu, np.interface),
                        io::ErrorKind::InvalidInput.into(),
                    )
                })?;
            let (ip, map_fd) = (np.address, map.fd());
            let port = AfXdpPort::open_with_program(
                &np.interface,
                link.index,
                opts,
                PortKind::NodePort,
                |xsks| node_port_filter::program(ip, map_fd, xsks.fd()),
            )
            .map_err(|e| err(format!("AF_XDP on {}", np.interface), e))?;
            let record = PortRecord {
                id: PortId(0),
                kind: PortKind::NodePort,
                netns: None,
                ifname: np.interface.clone(),
                mac,
                ip: Some(Ipv4IfAddr { addr: ip, prefix_len: 32 }),
                mtu: link.mtu,
                pod_steering: None,
            };
            add_own_port(
                &worker,
                &mut ids,
                &mut ports,
                NODE_PORT_PORT_NAME,
                vec![Box::new(port)],
                record,
                |id| {
                    let path = Some(NodePortPath { port: id, ip, mac });
                    worker.call(|reply| Command::SetNodePort { path, reply })
                },
            )?;
            node_ports = Some((map, BTreeSet::new()));
        }
        let pool = IpPool::new(config.node.pod_cidr, &[config.node.gateway]);
        let mut services =
            ServiceTable::new(config.services.max_services, config.services.maglev_table_size);
        let mut dns = None;
        if let (Some(d), Some(_)) = (&config.dns, host_index) {
            let err = |step: &str, source| StartError::Dns { step: step.to_string(), source };
            let names = NameTable::from_services(std::iter::empty(), &d.cluster_domain)
                .map_err(|e| err("cluster domain", io::Error::other(e.to_string())))?;
            let names = shared_names(names);
            let at = SocketAddrV4::new(config.node.gateway, d.listen_port);
            let server = DnsServer::spawn(at, names.clone())
                .map_err(|e| err(&format!("listen on {at}"), e))?;
            for spec in dns_services(&config) {
                let cidr = config.services.cidr;
                worker
                    .call(|reply| Command::ServiceUpsert { spec: spec.clone(), cidr, reply })
                    .map_err(|e| StartError::Worker(e.to_string()))?
                    .map_err(StartError::Worker)?;
                services.upsert(spec, cidr).map_err(|e| StartError::Worker(e.to_string()))?;
            }
            dns = Some((server, names));
        }
        let controller = Controller {
            state: Mutex::new(State {
                ports,
                ids,
                pool,
                macs,
                netlink,
                tmp_seq: 0,
                peers,
                host_index,
                services,
                node_ports,
            }),
            config,
            worker,
            started: Instant::now(),
            dns,
            tap_steering,
            veth_steering,
        };
        controller.services_changed(&mut controller.state(), None);
        Ok(controller)
    }

    /// Brings what follows the Service table up to date with `st.services`: the NodePort
    /// filter's port map and the DNS responder's names (only `changed`'s name when one
    /// Service changed, all of them after an apply).
    fn services_changed(&self, st: &mut State, changed: Option<(&str, &str)>) {
        if let Some((map, in_map)) = &mut st.node_ports {
            let want: BTreeSet<(L4Proto, u16)> =
                st.services.node_ports().map(|(port, proto)| (proto, port)).collect();
            for &(proto, port) in want.difference(in_map) {
                if let Err(e) = map.insert(proto.number().into(), port) {
                    eprintln!("podswitch: node port {port}/{proto}: {e}");
                }
            }
            for &(proto, port) in in_map.difference(&want) {
                if let Err(e) = map.remove(proto.number().into(), port) {
                    eprintln!("podswitch: node port {port}/{proto}: {e}");
                }
            }
            *in_map = want;
        }
        match changed {
            Some((namespace, name)) => {
                let Some((_, shared)) = &self.dns else { return };
                let vips: Vec<Ipv4Addr> =
                    st.services.ports_of(namespace, name).iter().map(|k| k.vip).collect();
                edit_names(shared, |t| t.set_service(namespace, name, &vips));
            }
            None => self.publish_names(st),
        }
    }

    /// Hands the DNS responder the names of the Services in `st` (built off the packet path;
    /// the responder swaps it in for its next query).
    fn publish_names(&self, st: &State) {
        let Some((_, shared)) = &self.dns else { return };
        let Some(d) = &self.config.dns else { return };
        if let Ok(names) = NameTable::from_services(st.services.iter(), &d.cluster_domain) {
            publish(shared, names);
        }
    }

    /// Counters of the DNS responder, when it runs.
    pub fn dns_counters(&self) -> Option<DnsCounters> {
        self.dns.as_ref().map(|(server, _)| server.counters())
    }

    /// The configuration the switch runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the registry inconsistent with the
        // worker in a way worse than refusing service, and refusing would take the node's
        // networking down; keep going with the data as it is.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Carries out one request.
    pub fn handle(&self, req: Request) -> Response {
        let result = match req {
            Request::Status => Ok(Reply::Status(self.status())),
            Request::PortAdd(args) => self.port_add(args).map(Reply::Port),
            Request::PortDel(args) => self.port_del(&args.name).map(Reply::Port),
            Request::PortList => self.port_list().map(|ports| Reply::Ports { ports }),
            Request::FdbList => self.fdb_list().map(Reply::Fdb),
            Request::FdbFlush(args) => self.fdb_flush(args.port.as_deref()),
            Request::Stats => self.stats().map(Reply::Stats),
            Request::PeerAdd(args) => self.peer_add(args).map(Reply::Peer),
            Request::PeerDel(args) => self.peer_del(&args.name).map(Reply::Peer),
            Request::PeerList => {
                Ok(Reply::Peers { peers: self.state().peers.iter().map(peer_info).collect() })
            }
            Request::ServiceAdd(spec) => self.service_add(spec).map(Reply::Service),
            Request::ServiceDel(args) => self.service_del(&args).map(Reply::Service),
            Request::ServiceList => self
                .worker
                .ask(|reply| Command::ServiceList { reply })
                .map(|services| Reply::Services { services })
                .map_err(unavailable),
            Request::EndpointSet(args) => self.endpoint_set(args),
            Request::ServiceApply(args) => self.service_apply(args.services),
            Request::ConntrackList(args) => self.conntrack_list(args.limit.unwrap_or(1000)),
            Request::ConntrackFlush => self
                .worker
                .conntrack_flush()
                .map(|n| Reply::Flushed { removed: n as u64 })
                .map_err(unavailable),
            Request::ConntrackStats => self
                .worker
                .conntrack_stats()
                .map(|(len, max, counters)| {
                    Reply::ConntrackStats(ConntrackStatsReply {
                        entries: len as u64,
                        max_entries: max as u64,
                        bytes_per_entry: Conntrack::bytes_per_entry() as u64,
                        counters,
                    })
                })
                .map_err(unavailable),
        };
        match result {
            Ok(r) => Response::Ok(r),
            Err(e) => Response::Error(e),
        }
    }

    fn status(&self) -> StatusReply {
        let st = self.state();
        let n = &self.config.node;
        let health = self.worker.health();
        StatusReply {
            api_version: API_VERSION,
            version: env!("CARGO_PKG_VERSION").to_string(),
            node: n.name.clone(),
            pod_cidr: n.pod_cidr,
            gateway: n.gateway,
            gateway_mac: n.gateway_mac,
            mtu: n.mtu,
            host_port: self.config.host_port.as_ref().map(|h| h.name.clone()),
            ports: st.ports.len(),
            max_ports: self.config.ports.max_ports,
            uptime_secs: self.started.elapsed().as_secs(),
            workers: health.workers,
            workers_down: health.down,
            worker_panics: health.panics,
            overlay: self.config.overlay.as_ref().map(|o| OverlayStatus {
                underlay_ip: o.underlay_ip,
                vni: o.vni,
                udp_port: o.udp_port,
                underlay_mtu: o.underlay_mtu,
                peers: st.peers.len(),
                max_peers: o.max_peers,
            }),
        }
    }

    /// Adds (or replaces) a peer: validated against this node and the other peers, handed
    /// to the worker, then routed to the host port in the node namespace. On a failure after
    /// the worker took it, the worker's table is put back as it was.
    fn peer_add(&self, args: PeerAddArgs) -> Result<PeerInfo, ApiError> {
        let Some(ov) = &self.config.overlay else {
            return Err(ApiError::new(
                ErrorKind::InvalidArgument,
                "no overlay is configured on this node ([overlay] in its config)",
            ));
        };
        let field = |e: crate::config::PeerError| {
            ApiError::field(ErrorKind::InvalidArgument, &format!("args.{}", e.field), e.reason)
        };
        let peer =
            PeerConfig::new(&args.name, args.ip, args.pod_cidr, args.vtep_mac).map_err(field)?;
        let mut st = self.state();
        let old = st.peers.iter().find(|p| p.name == peer.name).cloned();
        let others: Vec<&PeerConfig> = st.peers.iter().filter(|p| p.name != peer.name).collect();
        peer.check_fits(self.config.node.pod_cidr, ov.underlay_ip, others).map_err(field)?;
        if old.is_none() && st.peers.len() >= ov.max_peers {
            return Err(ApiError::new(
                ErrorKind::ResourceExhausted,
                format!("the peer table is full ({} peers)", ov.max_peers),
            ));
        }
        let p = peer.clone();
        self.worker
            .call(|reply| Command::PeerUpsert { peer: p.clone(), reply })
            .map_err(unavailable)?
            .map_err(|e| ApiError::new(ErrorKind::ResourceExhausted, e))?;
        if let Some(h) = st.host_index {
            let routed = |st: &mut State, c: crate::cidr::Ipv4Cidr| {
                st.netlink.route_add(c.network(), c.prefix_len(), None, h)
            };
            let same_cidr = old.as_ref().is_some_and(|o| o.pod_cidr == peer.pod_cidr);
            if !same_cidr {
                if let Err(e) = routed(&mut st, peer.pod_cidr) {
                    let undo = old.clone();
                    let name = peer.name.clone();
                    let _ = match undo {
                        Some(o) => self
                            .worker
                            .call(|reply| Command::PeerUpsert { peer: o.clone(), reply })
                            .map(|_| ()),
                        None => self
                            .worker
                            .call(|reply| Command::PeerRemove { name: name.clone(), reply })
                            .map(|_| ()),
                    };
                    return Err(failed(&format!("route {} to the host port", peer.pod_cidr), e));
                }
                if let Some(o) = &old {
                    let _ = st.netlink.route_del(
                        o.pod_cidr.network(),
                        o.pod_cidr.prefix_len(),
                        None,
                        Some(h),
                    );
                }
            }
        }
        st.peers.retain(|p| p.name != peer.name);
        st.peers.push(peer.clone());
        st.peers.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(peer_info(&peer))
    }

    /// Validates a Service against the node's Service CIDR and hands it to the worker.
    fn service_add(&self, spec: ServiceSpec) -> Result<ServiceSpec, ApiError> {
        let cidr = self.config.services.cidr;
        spec.validate(cidr).map_err(|e| {
            ApiError::field(ErrorKind::InvalidArgument, &format!("args.{}", e.field), e.reason)
        })?;
        let mut st = self.state();
        let s = spec.clone();
        self.worker
            .call(|reply| Command::ServiceUpsert { spec: s.clone(), cidr, reply })
            .map_err(unavailable)?
            .map_err(|e| ApiError::new(ErrorKind::InvalidArgument, e))?;
        // The worker accepted it, so the mirror does too.
        let _ = st.services.upsert(spec.clone(), cidr);
        self.services_changed(&mut st, Some((&spec.namespace, &spec.name)));
        Ok(spec)
    }

    fn service_del(&self, args: &ServiceRefArgs) -> Result<ServiceSpec, ApiError> {
        let mut st = self.state();
        let (namespace, name) = (args.namespace.clone(), args.name.clone());
        if dns_services(&self.config).iter().any(|d| d.namespace == namespace && d.name == name) {
            return Err(ApiError::field(
                ErrorKind::InvalidArgument,
                "args.name",
                format!(
                    "{namespace}/{name} is the built-in cluster DNS Service; \
                     turn it off with [dns] enabled = false"
                ),
            ));
        }
        st.services.remove(&namespace, &name);
        self.services_changed(&mut st, Some((&namespace, &name)));
        self.worker
            .call(|reply| Command::ServiceRemove {
                namespace: namespace.clone(),
                name: name.clone(),
                reply,
            })
            .map_err(unavailable)?
            .into_iter()
            .next()
            .ok_or_else(|| {
                ApiError::field(
                    ErrorKind::NotFound,
                    "args.name",
                    format!("no Service {}/{}", args.namespace, args.name),
                )
            })
    }

    fn endpoint_set(&self, args: EndpointSetArgs) -> Result<Reply, ApiError> {
        let started = Instant::now();
        let mut st = self.state();
        let EndpointSetArgs { namespace, name, port, proto, endpoints } = args;
        let port = port.map(|p| (p, proto.unwrap_or_default()));
        // The mirror answers first: same table, same edits, and its error names the field;
        // a refused change touches neither.
        st.services.set_endpoints(&namespace, &name, port, endpoints.clone()).map_err(|e| {
            let kind =
                if e.field == "name" { ErrorKind::NotFound } else { ErrorKind::InvalidArgument };
            ApiError::field(kind, &format!("args.{}", e.field), e.reason)
        })?;
        self.worker
            .call(|reply| Command::EndpointsSet {
                namespace: namespace.clone(),
                name: name.clone(),
                port,
                endpoints: endpoints.clone(),
                reply,
            })
            .map_err(unavailable)?
            .map_err(|e| ApiError::new(ErrorKind::Failed, e))?;
        let services =
            self.worker.ask(|reply| Command::ServiceList { reply }).map_err(unavailable)?;
        Ok(Reply::Applied {
            services: services.len() as u64,
            elapsed_us: started.elapsed().as_micros() as u64,
        })
    }

    /// Builds and validates the whole new table here, off the packet path, then swaps it in
    /// with one worker command; the old table is dropped here too.
    fn service_apply(&self, specs: Vec<ServiceSpec>) -> Result<Reply, ApiError> {
        let started = Instant::now();
        let s = &self.config.services;
        let mut st = self.state();
        // The built-in DNS Services stay, unless the new table puts its own Service on their
        // address (pointing the DNS address at CoreDNS pods, say).
        let mut specs = specs;
        let n_given = specs.len();
        for d in dns_services(&self.config) {
            if !specs[..n_given].iter().any(|x| x.key() == d.key()) {
                specs.push(d);
            }
        }
        let table = ServiceTable::from_specs(
            specs,
            s.cidr,
            s.max_services,
            s.maglev_table_size,
            Some(&st.services),
        )
        .map_err(|e| {
            ApiError::field(ErrorKind::InvalidArgument, &format!("args.{}", e.field), e.reason)
        })?;
        let n = table.len();
        st.services = table.clone();
        self.services_changed(&mut st, None);
        let old = self.worker.services_replace(table).map_err(unavailable)?;
        let elapsed_us = started.elapsed().as_micros() as u64;
        drop(old);
        Ok(Reply::Applied { services: n as u64, elapsed_us })
    }

    fn conntrack_list(&self, limit: usize) -> Result<Reply, ApiError> {
        let entries = self.worker.conntrack_list(limit).map_err(unavailable)?;
        let now = Instant::now();
        Ok(Reply::Conntrack { entries: entries.iter().map(|e| conntrack_info(e, now)).collect() })
    }

    /// Removes a peer from the worker first (its traffic stops with the next burst), then
    /// its route.
    fn peer_del(&self, name: &str) -> Result<PeerInfo, ApiError> {
        let mut st = self.state();
        let Some(peer) = st.peers.iter().find(|p| p.name == name).cloned() else {
            return Err(ApiError::field(
                ErrorKind::NotFound,
                "args.name",
                format!("no peer named {name:?}"),
            ));
        };
        let n = name.to_string();
        self.worker
            .call(|reply| Command::PeerRemove { name: n.clone(), reply })
            .map_err(unavailable)?;
        if let Some(h) = st.host_index {
            let _ = st.netlink.route_del(
                peer.pod_cidr.network(),
                peer.pod_cidr.prefix_len(),
                None,
                Some(h),
            );
        }
        st.peers.retain(|p| p.name != name);
        Ok(peer_info(&peer))
    }

    /// Validates a port add and resolves its defaults, without changing anything.
    fn plan_port_add(&self, st: &State, args: &PortAddArgs) -> Result<PortRecord, ApiError> {
        validate_port_name(&args.name)?;
        if st.ports.contains_key(&args.name) {
            return Err(ApiError::field(
                ErrorKind::AlreadyExists,
                "args.name",
                format!("a port named {:?} exists", args.name),
            ));
        }
        let Some(slot) = st.ids.iter().position(|used| !used) else {
            return Err(ApiError::new(
                ErrorKind::ResourceExhausted,
                format!("the switch has its maximum of {} ports", self.config.ports.max_ports),
            ));
        };
        let ifname = args.ifname.clone().unwrap_or_else(|| DEFAULT_IFNAME.to_string());
        tun::validate_ifname(&ifname).map_err(|e| {
            ApiError::field(ErrorKind::InvalidArgument, "args.ifname", e.to_string())
        })?;
        let mtu = args.mtu.unwrap_or(self.config.node.mtu);
        if !(MIN_MTU..=MAX_MTU).contains(&mtu) {
            return Err(ApiError::field(
                ErrorKind::InvalidArgument,
                "args.mtu",
                format!("must be from {MIN_MTU} to {MAX_MTU}, got {mtu}"),
            ));
        }
        let kind = match args.kind {
            PortAddKind::Tap => PortKind::Tap,
            PortAddKind::Afxdp => PortKind::Afxdp,
        };
        if kind == PortKind::Afxdp && AfXdpOptions::for_mtu(mtu).is_none() {
            return Err(ApiError::field(
                ErrorKind::InvalidArgument,
                "args.mtu",
                format!("{mtu} is too large for an afxdp port (one 4 KiB frame per packet)"),
            ));
        }
        let cidr = self.config.node.pod_cidr;
        let ip = match args.ip {
            Some(ip) => {
                if ip.prefix_len != cidr.prefix_len() && ip.prefix_len != 32 {
                    return Err(ApiError::field(
                        ErrorKind::InvalidArgument,
                        "args.ip",
                        format!(
                            "prefix length must be /{} (the pod CIDR's) or /32, got /{}",
                            cidr.prefix_len(),
                            ip.prefix_len
                        ),
                    ));
                }
                if ip.addr == self.config.node.gateway {
                    return Err(ApiError::field(
                        ErrorKind::InvalidArgument,
                        "args.ip",
                        format!("{} is the gateway address", ip.addr),
                    ));
                }
                if !cidr.is_host(ip.addr) {
                    return Err(ApiError::field(
                        ErrorKind::InvalidArgument,
                        "args.ip",
                        format!("{} is not a host address of the pod CIDR {cidr}", ip.addr),
                    ));
                }
                if st.pool.is_used(ip.addr) {
                    return Err(ApiError::field(
                        ErrorKind::AlreadyExists,
                        "args.ip",
                        format!("{} is in use by another port", ip.addr),
                    ));
                }
                Some(ip)
            }
            None => None, // allocated when the add is carried out
        };
        let mac = match args.mac {
            Some(m) => {
                if !m.is_unicast() || m == MacAddr::ZERO {
                    return Err(ApiError::field(
                        ErrorKind::InvalidArgument,
                        "args.mac",
                        format!("{m} is not a unicast MAC"),
                    ));
                }
                m
            }
            None => MacAddr::ZERO, // derived from the address once it is known
        };
        if args.mac.is_some() && st.macs.contains(&mac) {
            return Err(ApiError::field(
                ErrorKind::AlreadyExists,
                "args.mac",
                format!("{mac} is in use by another port or the gateway"),
            ));
        }
        Ok(PortRecord {
            id: PortId(slot as u16),
            kind,
            netns: Some(args.netns.clone()),
            ifname,
            mac,
            ip,
            mtu,
            pod_steering: None,
        })
    }

    fn port_add(&self, args: PortAddArgs) -> Result<PortInfo, ApiError> {
        let mut guard = self.state();
        let st = &mut *guard;
        let mut rec = self.plan_port_add(st, &args)?;
        let ns = NetNs::open_pod(&args.netns).map_err(|e| {
            let kind = if e.kind() == io::ErrorKind::NotFound {
                ErrorKind::NotFound
            } else {
                ErrorKind::InvalidArgument
            };
            ApiError::field(kind, "args.netns", e.to_string())
        })?;
        rec.netns = Some(ns.path().display().to_string());
        // Address: claim the requested one or allocate; undone on any failure below.
        let checkpoint = st.pool.checkpoint();
        let ip = match rec.ip {
            Some(ip) => {
                st.pool.claim(ip.addr);
                ip
            }
            None => {
                let addr = st.pool.allocate().ok_or_else(|| {
                    ApiError::new(
                        ErrorKind::ResourceExhausted,
                        format!(
                            "no free address left in the pod CIDR {}",
                            self.config.node.pod_cidr
                        ),
                    )
                })?;
                Ipv4IfAddr { addr, prefix_len: self.config.node.pod_cidr.prefix_len() }
            }
        };
        rec.ip = Some(ip);
        if rec.mac == MacAddr::ZERO {
            let o = ip.addr.octets();
            rec.mac = MacAddr([0x0a, 0x58, o[0], o[1], o[2], o[3]]);
            if st.macs.contains(&rec.mac) {
                st.pool.undo(ip.addr, checkpoint);
                return Err(ApiError::field(
                    ErrorKind::AlreadyExists,
                    "args.mac",
                    format!("the derived MAC {} is in use; pass --mac", rec.mac),
                ));
            }
        }
        st.tmp_seq = st.tmp_seq.wrapping_add(1);
        let tmp_name = format!("pst{:04x}{:04x}", std::process::id() & 0xffff, st.tmp_seq & 0xffff);
        let attached = match rec.kind {
            PortKind::Afxdp => self.attach_afxdp(&mut st.netlink, &ns, &tmp_name, &rec, ip),
            _ => self.attach(&mut st.netlink, &ns, &tmp_name, &rec, ip).map(|()| None),
        };
        match attached {
            Ok(pod_steering) => {
                rec.pod_steering = pod_steering;
                st.ids[rec.id.index()] = true;
                st.macs.insert(rec.mac);
                let info = self.info(&args.name, &rec, None);
                st.ports.insert(args.name.clone(), rec);
                Ok(info)
            }
            Err(e) => {
                st.pool.undo(ip.addr, checkpoint);
                Err(e)
            }
        }
    }

    /// Creates, configures and attaches a pod's TAP. On error the TAP is dropped, which
    /// destroys the device and everything configured on it.
    fn attach(
        &self,
        netlink: &mut Netlink,
        ns: &NetNs,
        tmp_name: &str,
        rec: &PortRecord,
        ip: Ipv4IfAddr,
    ) -> Result<(), ApiError> {
        let taps =
            create_tap(tmp_name, self.worker.count(), self.tap_steering.as_ref().map(|p| p.fd()))
                .map_err(|e| failed("create TAP", e))?;
        let link = netlink
            .link_get(tmp_name)
            .map_err(|e| failed("look up TAP", e))?
            .ok_or_else(|| ApiError::new(ErrorKind::Failed, format!("TAP {tmp_name} vanished")))?;
        self.configure_pod_side(netlink, ns, link.index, rec, ip)?;
        self.hand_to_worker(rec, ip, tap_ports(taps, PortKind::Tap))
    }

    /// Creates a pod's veth pair, configures the pod end as [`Controller::attach`] does a
    /// TAP, and attaches the host end ([`afxdp_host_name`]) through AF_XDP. Returns the pod
    /// end's queue-steering attachment, if any. On error the host end is deleted, which
    /// deletes the pod end wherever it is.
    fn attach_afxdp(
        &self,
        netlink: &mut Netlink,
        ns: &NetNs,
        tmp_name: &str,
        rec: &PortRecord,
        ip: Ipv4IfAddr,
    ) -> Result<Option<TcxLink>, ApiError> {
        let host = afxdp_host_name(rec.id);
        // One queue per worker on both ends: the pod's flows spread over the host end's
        // receive queues, each driven by one worker's AF_XDP socket.
        let queues = self.worker.count() as u32;
        netlink
            .veth_add_queues(&host, tmp_name, None, queues)
            .map_err(|e| failed("create veth pair", e))?;
        let r = self.attach_afxdp_veth(netlink, ns, &host, tmp_name, rec, ip);
        if r.is_err() {
            delete_link(netlink, &host);
        }
        r
    }

    fn attach_afxdp_veth(
        &self,
        netlink: &mut Netlink,
        ns: &NetNs,
        host: &str,
        pod_end: &str,
        rec: &PortRecord,
        ip: Ipv4IfAddr,
    ) -> Result<Option<TcxLink>, ApiError> {
        let index = |nl: &mut Netlink, name: &str| {
            nl.link_get(name)
                .map_err(|e| failed("look up veth", e))?
                .map(|l| l.index)
                .ok_or_else(|| ApiError::new(ErrorKind::Failed, format!("veth {name} vanished")))
        };
        let host_index = index(netlink, host)?;
        let pod_index = index(netlink, pod_end)?;
        netlink.link_set_mtu(host_index, rec.mtu).map_err(|e| failed("set host end MTU", e))?;
        // The switch's kernel has no business on the host end: no IPv6 autoconfiguration
        // traffic toward the pod. Best effort (IPv6 may be disabled altogether).
        let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{host}/disable_ipv6"), "1");
        let pod_index = self.configure_pod_side(netlink, ns, pod_index, rec, ip)?;
        // Before the host end is up, so no frame the pod sends leaves unsteered.
        let pod_steering = self.veth_steering.as_ref().and_then(|prog| {
            queue_steering::attach_to_veth(prog, ns, pod_index)
                .map_err(|e| {
                    eprintln!(
                        "podswitch: {host}: queue steering program not attached to the pod end \
                         ({e}); its flows spread by hash and the switch steers the rest"
                    )
                })
                .ok()
        });
        netlink.link_set_up(host_index, true).map_err(|e| failed("set host end up", e))?;
        let opts =
            AfXdpOptions::for_mtu_and_config(rec.mtu, &self.config.afxdp).ok_or_else(|| {
                ApiError::field(ErrorKind::InvalidArgument, "args.mtu", "too large for afxdp")
            })?;
        let queues = self.worker.count() as u32;
        let ports = AfXdpPort::open_queues(host, host_index, opts, queues).map_err(|e| {
            ApiError::field(
                ErrorKind::Failed,
                "args.kind",
                format!("afxdp: cannot drive {host} through AF_XDP on this kernel: {e}"),
            )
        })?;
        if let Some(why) = ports.first().and_then(|p| p.native_refused()) {
            eprintln!("podswitch: {host}: native XDP refused, attached in skb mode: {why}");
        }
        let ports = ports.into_iter().map(|p| Box::new(p) as Box<dyn Port>).collect();
        self.hand_to_worker(rec, ip, ports)?;
        Ok(pod_steering)
    }

    /// Configures a pod's interface, which exists as link `index` in the switch's
    /// namespace: MAC and MTU, moved into the pod's namespace as `rec.ifname`, then (there)
    /// TX checksum offload off for an AF_XDP port, the address, up, and routes to and via
    /// the gateway. Shared by every port kind with a pod side. Returns the interface's index
    /// in the pod's namespace.
    fn configure_pod_side(
        &self,
        netlink: &mut Netlink,
        ns: &NetNs,
        index: u32,
        rec: &PortRecord,
        ip: Ipv4IfAddr,
    ) -> Result<u32, ApiError> {
        netlink.link_set_mac(index, rec.mac.0).map_err(|e| failed("set MAC", e))?;
        netlink.link_set_mtu(index, rec.mtu).map_err(|e| failed("set MTU", e))?;
        netlink.link_move_to_netns(index, ns, Some(&rec.ifname)).map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                ApiError::field(
                    ErrorKind::AlreadyExists,
                    "args.ifname",
                    format!("the namespace already has an interface named {}", rec.ifname),
                )
            } else {
                failed("move into the namespace", e)
            }
        })?;
        let mut pod = Netlink::open_in(ns).map_err(|e| failed("netlink in the namespace", e))?;
        let index = pod
            .link_get(&rec.ifname)
            .map_err(|e| failed("look up interface in the namespace", e))?
            .ok_or_else(|| ApiError::new(ErrorKind::Failed, "interface vanished after the move"))?
            .index;
        if rec.kind == PortKind::Afxdp {
            // AF_XDP carries no checksum metadata: the pod's frames must leave it complete
            // (the checksum trap in IO-NOTES.md). This also turns off TSO on the pod end.
            crate::sys::ethtool::disable_tx_checksum(ns, &rec.ifname)
                .map_err(|e| failed("turn off tx checksum offload", e))?;
        }
        pod.addr_add(index, ip.addr, ip.prefix_len).map_err(|e| failed("add address", e))?;
        pod.link_set_up(index, true).map_err(|e| failed("set up", e))?;
        let gw = self.config.node.gateway;
        if !ip.subnet().contains(gw) {
            pod.route_add(gw, 32, None, index)
                .map_err(|e| failed("add route to the gateway", e))?;
        }
        pod.route_add(Ipv4Addr::UNSPECIFIED, 0, Some(gw), index)
            .map_err(|e| failed("add default route", e))?;
        Ok(index)
    }

    /// Hands a finished pod port to the worker with the pod's address as its neighbor.
    fn hand_to_worker(
        &self,
        rec: &PortRecord,
        ip: Ipv4IfAddr,
        queues: Vec<Box<dyn Port>>,
    ) -> Result<(), ApiError> {
        self.worker
            .add_port(rec.id, queues, Some((ip.addr, rec.mac)))
            .map_err(unavailable)?
            .map_err(|e| ApiError::new(ErrorKind::Failed, format!("attach: {e}")))
    }

    fn port_del(&self, name: &str) -> Result<PortInfo, ApiError> {
        let mut st = self.state();
        let rec = st.ports.get(name).ok_or_else(|| {
            ApiError::field(ErrorKind::NotFound, "args.name", format!("no port named {name:?}"))
        })?;
        if matches!(rec.kind, PortKind::Host | PortKind::Overlay | PortKind::NodePort) {
            return Err(ApiError::field(
                ErrorKind::InvalidArgument,
                "args.name",
                format!("the {name} port lives as long as the switch"),
            ));
        }
        let id = rec.id;
        let removed = self.worker.remove_port(id).map_err(unavailable)?;
        let rec = st.ports.remove(name).expect("looked up under the same lock");
        // Dropping the port closes the TAP: the pod's interface, its address and routes go.
        // An AF_XDP port's drop detaches its program and closes its socket; its veth goes
        // with the host end, and the pod end's steering program with it (its link with the
        // record).
        drop(removed);
        if rec.kind == PortKind::Afxdp {
            delete_link(&mut st.netlink, &afxdp_host_name(id));
        }
        st.ids[id.index()] = false;
        st.macs.remove(&rec.mac);
        if let Some(ip) = rec.ip {
            st.pool.release(ip.addr);
        }
        Ok(self.info(name, &rec, None))
    }

    fn info(&self, name: &str, rec: &PortRecord, failure: Option<&str>) -> PortInfo {
        PortInfo {
            name: name.to_string(),
            id: rec.id.0,
            kind: rec.kind,
            netns: rec.netns.clone(),
            ifname: rec.ifname.clone(),
            mac: rec.mac,
            ip: rec.ip,
            mtu: rec.mtu,
            state: match failure {
                None => "up".to_string(),
                Some(f) => format!("failed: {f}"),
            },
        }
    }

    fn port_list(&self) -> Result<Vec<PortInfo>, ApiError> {
        let snap = self.worker.stats().map_err(unavailable)?;
        let st = self.state();
        let mut v: Vec<PortInfo> = st
            .ports
            .iter()
            .map(|(name, rec)| {
                let failure =
                    snap.ports.iter().find(|p| p.id == rec.id).and_then(|p| p.failed.as_deref());
                self.info(name, rec, failure)
            })
            .collect();
        v.sort_by_key(|p| p.id);
        Ok(v)
    }

    fn names_by_id(&self) -> BTreeMap<PortId, String> {
        self.state().ports.iter().map(|(n, r)| (r.id, n.clone())).collect()
    }

    fn fdb_list(&self) -> Result<FdbReply, ApiError> {
        let snap = self.worker.fdb_list().map_err(unavailable)?;
        let names = self.names_by_id();
        Ok(FdbReply {
            entries: snap
                .entries
                .iter()
                .map(|e| FdbEntryInfo {
                    mac: e.key.mac(),
                    vlan: e.key.vlan(),
                    port: names.get(&e.port).cloned().unwrap_or_else(|| format!("#{}", e.port)),
                    age_secs: (e.age.as_secs_f64() * 10.0).round() / 10.0,
                })
                .collect(),
            size: snap.len as u64,
            max_entries: snap.max_entries as u64,
            aging_secs: snap.aging.as_secs(),
            counters: snap.counters,
        })
    }

    fn fdb_flush(&self, port: Option<&str>) -> Result<Reply, ApiError> {
        let id = match port {
            None => None,
            Some(name) => Some(self.state().ports.get(name).map(|r| r.id).ok_or_else(|| {
                ApiError::field(ErrorKind::NotFound, "args.port", format!("no port named {name:?}"))
            })?),
        };
        let n = self.worker.fdb_flush(id).map_err(unavailable)?;
        Ok(Reply::Flushed { removed: n as u64 })
    }

    /// Frames a TAP port's device dropped before the switch read them (the pod sent faster
    /// than its queue was read), by port id: the TAP's `tx_dropped`, read in its namespace.
    /// Ports whose namespace or device cannot be read are left out.
    fn tap_drops(&self) -> BTreeMap<PortId, u64> {
        let taps: Vec<(PortId, Option<String>, String)> = self
            .state()
            .ports
            .values()
            .filter(|r| matches!(r.kind, PortKind::Tap | PortKind::Host))
            .map(|r| (r.id, r.netns.clone(), r.ifname.clone()))
            .collect();
        let mut out = BTreeMap::new();
        for (id, netns, ifname) in taps {
            let nl = match &netns {
                Some(path) => NetNs::open(path).and_then(|ns| Netlink::open_in(&ns)),
                None => Netlink::open(),
            };
            if let Ok(Some(link)) = nl.and_then(|mut nl| nl.link_get(&ifname)) {
                out.insert(id, link.tx_dropped);
            }
        }
        out
    }

    fn stats(&self) -> Result<StatsReply, ApiError> {
        let snap = self.worker.stats().map_err(unavailable)?;
        let names = self.names_by_id();
        let tap_drops = self.tap_drops();
        Ok(StatsReply {
            ports: snap
                .ports
                .iter()
                .map(|p| {
                    let name = names.get(&p.id).map(String::as_str).unwrap_or("(detached)");
                    let mut r = p.counters.to_report(name);
                    r.device_drops =
                        p.device_drops.iter().map(|(k, v)| (k.to_string(), *v)).collect();
                    if let Some(&n) = tap_drops.get(&p.id).filter(|&&n| n > 0) {
                        r.device_drops.insert("tap_tx_dropped".into(), n);
                    }
                    r
                })
                .collect(),
            fdb_size: snap.fdb_len as u64,
            fdb: snap.fdb,
            neighbors: snap.neighbors as u64,
        })
    }

    /// Stops the worker; every port's device is closed, so pod interfaces and the host port
    /// disappear.
    pub fn shutdown(&self) {
        self.worker.shutdown();
        let mut st = self.state();
        // Veth pairs outlive the fds that drove them: delete them as TAPs vanish.
        let veths: Vec<PortId> =
            st.ports.values().filter(|r| r.kind == PortKind::Afxdp).map(|r| r.id).collect();
        for id in veths {
            delete_link(&mut st.netlink, &afxdp_host_name(id));
        }
        st.ports.clear();
    }
}

/// Hands a port the switch owns itself (host, overlay, node-port) to the workers under the
/// lowest free id and records it as `name` (`record`'s id is filled in). Returns the id.
/// `role` tells the workers what the port is *before* it is attached, so no frame is ever
/// treated as from (or flooded to) an ordinary port in between.
#[allow(clippy::too_many_arguments)]
fn add_own_port(
    worker: &WorkerHandle,
    ids: &mut [bool],
    ports: &mut BTreeMap<String, PortRecord>,
    name: &str,
    queues: Vec<Box<dyn Port>>,
    mut record: PortRecord,
    role: impl FnOnce(PortId) -> Result<(), WorkerGone>,
) -> Result<PortId, StartError> {
    let slot = ids
        .iter()
        .position(|used| !used)
        .ok_or_else(|| StartError::Worker("no free port id for the switch's own ports".into()))?;
    let id = PortId(slot as u16);
    role(id).map_err(|e| StartError::Worker(e.to_string()))?;
    worker
        .add_port(id, queues, None)
        .map_err(|e| StartError::Worker(e.to_string()))?
        .map_err(StartError::Worker)?;
    ids[slot] = true;
    record.id = id;
    ports.insert(name.to_string(), record);
    Ok(id)
}

fn validate_port_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_PORT_NAME_LEN
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ApiError::field(
            ErrorKind::InvalidArgument,
            "args.name",
            format!(
                "{name:?} is not a valid port name: use 1-{MAX_PORT_NAME_LEN} of [A-Za-z0-9._:-]"
            ),
        ))
    }
}

/// The name of an AF_XDP port's veth host end in the switch's namespace: `psx`, the
/// switch's pid and the port id in hex (at most 13 bytes), unique per switch and port.
pub fn afxdp_host_name(id: PortId) -> String {
    format!("psx{:x}{:04x}", std::process::id(), id.0)
}

/// Deletes a link of the switch's namespace by name, if it exists (best effort: it may have
/// gone with its pod's namespace).
fn delete_link(netlink: &mut Netlink, name: &str) {
    if let Ok(Some(l)) = netlink.link_get(name) {
        let _ = netlink.link_del(l.index);
    }
}

fn peer_info(p: &PeerConfig) -> PeerInfo {
    PeerInfo { name: p.name.clone(), ip: p.ip, pod_cidr: p.pod_cidr, vtep_mac: p.vtep_mac }
}

/// Offloads the switch takes from a TAP's kernel side: partial checksums and TCP super-frames
/// (IPv4, IPv6, with ECN). UDP segmentation is left to the pod's kernel: the overlay would
/// have to segment it again.
pub const TAP_OFFLOADS: u32 =
    tun::TUN_F_CSUM | tun::TUN_F_TSO4 | tun::TUN_F_TSO6 | tun::TUN_F_TSO_ECN;

/// A TAP device with virtio-net headers and [`TAP_OFFLOADS`]: the kernel hands the switch
/// 64 KiB TCP super-frames with one `read`, and takes them back with one `write`.
/// With several workers the device has one queue per worker, chosen per frame by
/// `steering` when given.
fn create_tap(
    name: &str,
    queues: usize,
    steering: Option<std::os::fd::RawFd>,
) -> io::Result<Vec<TapDevice>> {
    let opts = TapOptions { vnet_hdr: true, multi_queue: queues > 1 };
    let first = TapDevice::create(name, opts)?;
    first.set_offload(TAP_OFFLOADS)?;
    if let Some(prog) = steering.filter(|_| queues > 1) {
        first.set_steering_program(prog)?;
    }
    let mut taps = vec![first];
    for _ in 1..queues {
        taps.push(TapDevice::open_queue(name, opts)?);
    }
    Ok(taps)
}

/// The ports over a TAP device's queues, in worker order.
fn tap_ports(taps: Vec<TapDevice>, kind: PortKind) -> Vec<Box<dyn Port>> {
    taps.into_iter()
        .map(|t| Box::new(TapPort::new(t.into_file(), kind, true)) as Box<dyn Port>)
        .collect()
}

fn conntrack_info(e: &CtEntry, now: Instant) -> ConntrackEntryInfo {
    let o = &e.original;
    ConntrackEntryInfo {
        proto: if o.proto == 6 { "tcp" } else { "udp" }.to_string(),
        client: format!("{}:{}", o.src, o.sport),
        service: format!("{}:{}", e.nat.vip, e.nat.vport),
        endpoint: format!("{}:{}", e.nat.backend, e.nat.bport),
        state: e.state.to_string(),
        age_secs: now.saturating_duration_since(e.created).as_secs_f64(),
        expires_in_secs: e.expires.saturating_duration_since(now).as_secs_f64(),
        packets: e.packets,
    }
}

/// The overlay's ports on an AF_XDP underlay (`[overlay] afxdp_interface`): one per queue of
/// `ifname`, which must have one receive queue or one per worker, each an AF_XDP socket
/// behind the filter program with only the VXLAN port in its map, paired with a socket
/// overlay port for the kernel path (`port/overlay_xdp.rs`).
fn xdp_underlay(
    netlink: &mut Netlink,
    ifname: &str,
    opts: OverlayOptions,
    workers: u32,
    umem: &crate::config::AfxdpConfig,
) -> Result<Vec<Box<dyn Port>>, StartError> {
    let err = |step: String, source| StartError::Overlay { step, source };
    let invalid = |what: String| io::Error::new(io::ErrorKind::InvalidInput, what);
    let link = netlink
        .link_get(ifname)
        .map_err(|e| err(format!("look up {ifname}"), e))?
        .ok_or_else(|| err(format!("look up {ifname}"), io::ErrorKind::NotFound.into()))?;
    let mac = link
        .mac
        .map(MacAddr)
        .ok_or_else(|| err(ifname.to_string(), invalid("it has no Ethernet address".into())))?;
    let in_use = crate::sys::ethtool::rx_queues(ifname).map_err(|e| err(ifname.to_string(), e))?;
    let queues = match in_use {
        1 => 1,
        n if n == workers => n,
        n => {
            return Err(err(
                ifname.to_string(),
                invalid(format!(
                    "it has {n} receive queues; AF_XDP needs 1 or one per worker ({workers})"
                )),
            ))
        }
    };
    let xopts = AfXdpOptions::for_mtu_and_config(link.mtu, umem).ok_or_else(|| {
        err(ifname.to_string(), invalid(format!("MTU {} is too large for AF_XDP", link.mtu)))
    })?;
    let map = NodePortMap::create().map_err(|e| err("port map".into(), e))?;
    map.insert(crate::wire::IpProtocol::Udp, opts.udp_port)
        .map_err(|e| err("port map entry".into(), e))?;
    let map_fd = map.fd();
    let xdp =
        AfXdpPort::open_queues_with(ifname, link.index, xopts, queues, PortKind::Overlay, |xsks| {
            node_port_filter::program(opts.local, map_fd, xsks.fd())
        })
        .map_err(|e| err(format!("AF_XDP on {ifname}"), e))?;
    if let Some(why) = xdp.first().and_then(|p| p.native_refused()) {
        eprintln!("podswitch: {ifname}: native XDP refused, attached in skb mode: {why}");
    }
    // The kernel path's sockets: they also hold the VXLAN port, so nothing else binds it.
    let kernel = OverlayPort::bind_queues(opts, queues)
        .map_err(|e| err(format!("bind {}:{}", opts.local, opts.udp_port), e))?;
    Ok(xdp
        .into_iter()
        .zip(kernel)
        .map(|(x, k)| Box::new(OverlayXdpPort::new(x, k, opts, mac)) as Box<dyn Port>)
        .collect())
}
