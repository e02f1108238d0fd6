//! Start-up: the workers, the switch's own ports (host port, overlay, NodePort interface),
//! the routes that reach them, the cluster DNS responder and its built-in Services, and the
//! first published Service and peer tables. On error nothing is left running.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io;
use std::net::SocketAddrV4;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::cidr::Ipv4IfAddr;
use crate::config::Config;
use crate::control::api::*;
use crate::dns::server::{shared_names, DnsServer};
use crate::dns::NameTable;
use crate::pipeline::gateway::NodePortPath;
use crate::port::afxdp::{AfXdpOptions, AfXdpPort};
use crate::port::node_port_filter::{self, NodePortMap};
use crate::port::overlay::{OverlayOptions, OverlayPort};
use crate::port::overlay_xdp::OverlayXdpPort;
use crate::port::queue_steering;
use crate::port::{Port, PortId, PortKind};
use crate::sys::netlink::Netlink;
use crate::tables::ipam::IpPool;
use crate::tables::peers::PeerTable;
use crate::tables::services::ServiceTable;
use crate::wire::MacAddr;
use crate::worker::{Command, WorkerGone, WorkerHandle};

use super::devices::{create_tap, tap_ports, KernelDevices};
use super::{Controller, PortRecord, StartError, State, DNS_NAMESPACE};
use super::{NODE_PORT_PORT_NAME, OVERLAY_PORT_NAME};

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
                security: None,
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
        let mut peers = PeerTable::new(config.overlay.as_ref().map_or(0, |o| o.max_peers));
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
                security: None,
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
                // Validated in the config: names, addresses and CIDRs are unique and the
                // count is within max_peers.
                peers.upsert(p.clone()).map_err(|e| StartError::Worker(e.to_string()))?;
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
                security: None,
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
        let peers = Arc::new(peers);
        worker.peers_publish(&peers).map_err(|e| StartError::Worker(e.to_string()))?;
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
                services
                    .upsert(spec, config.services.cidr)
                    .map_err(|e| StartError::Worker(e.to_string()))?;
            }
            dns = Some((server, names));
        }
        let services = Arc::new(services);
        worker.services_publish(&services).map_err(|e| StartError::Worker(e.to_string()))?;
        let devices = KernelDevices::new(netlink, &config, queues, tap_steering, veth_steering);
        let controller = Controller {
            state: Mutex::new(State {
                ports,
                ids,
                pool,
                macs,
                devices: Box::new(devices),
                peers,
                host_index,
                services,
                service_full_refusals: 0,
                node_ports,
            }),
            config,
            worker,
            started: Instant::now(),
            dns,
        };
        controller.services_changed(&mut controller.state(), None);
        Ok(controller)
    }
}

/// The built-in DNS Service `kube-system/kube-dns` (UDP and TCP on the DNS address, one
/// spec per port):
/// their only endpoint is the switch's own responder on the gateway address.
pub(super) fn dns_services(config: &Config) -> Vec<ServiceSpec> {
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
        .add_port(id, queues, None, None)
        .map_err(|e| StartError::Worker(e.to_string()))?
        .map_err(|e| StartError::Worker(e.to_string()))?;
    ids[slot] = true;
    record.id = id;
    ports.insert(name.to_string(), record);
    Ok(id)
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
