//! The controller: the control plane's state (which ports exist, with which names, addresses
//! and MACs; the published Service and peer tables) and the steps that carry out each
//! [`Request`].
//!
//! It owns no packet state: conntrack, MAC tables and counters belong to the workers, which
//! the controller drives through [`WorkerHandle`] commands. Its files follow its seams:
//! `startup` (the switch's own ports, the overlay, NodePort, DNS), `dispatch` (request →
//! handler, and the read-only answers), `ports` (port add/del), `services`, `peers`, and
//! `devices` (the kernel plumbing behind the [`Devices`] trait, so the port logic is
//! unit-tested against a fake in `tests`).
//!
//! A port add does all the slow, fallible work first (validate, create the TAP or veth
//! pair, move the pod's end into the pod's namespace, configure address and routes, bind
//! the AF_XDP socket) and hands the finished port to the workers last; every failure before
//! that point drops the TAP (or deletes the veth pair), which destroys the device wherever it
//! is, and releases the address; a worker refusing it does the same. So a failed add leaves
//! nothing behind, and a worker never sees a half-configured port.
//!
//! Services and peers are published, not edited in place: a change is validated once here,
//! the new table (Maglev tables included) is built here, off the packet threads, and the
//! same immutable snapshot (`Arc`) goes to every worker, which swaps it in between bursts
//! and hands back the one it replaced (dropped here). The snapshot the controller keeps is
//! the one it published: what `service list` shows and what the next change starts from.
//! Every change follows one order: validate → build → publish to all workers → keep as
//! current; a change refused at any step before publishing changes nothing.
//!
//! One mutex serializes requests that change state. Port adds from many CNI invocations are
//! therefore applied one at a time, which is what makes address allocation race-free; the
//! packet path never takes this lock.

mod devices;
mod dispatch;
mod peers;
mod ports;
mod services;
mod startup;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use crate::cidr::Ipv4IfAddr;
use crate::config::Config;
use crate::control::api::*;
use crate::dns::server::{DnsCounters, DnsServer, SharedNames};
use crate::port::node_port_filter::NodePortMap;
use crate::port::{PortId, PortKind};
use crate::sys::bpf::TcxLink;
use crate::tables::ipam::IpPool;
use crate::tables::peers::PeerTable;
use crate::tables::services::ServiceTable;
use crate::wire::MacAddr;
use crate::worker::{WorkerGone, WorkerHandle};

pub use devices::{afxdp_host_name, Devices, KernelDevices, PodDevice, PodQueues, TAP_OFFLOADS};

/// Interface name pods get when the request names none.
pub const DEFAULT_IFNAME: &str = "eth0";

pub use podswitch_api::limits::MAX_PORT_NAME_LEN;

/// Namespace of the built-in DNS Services.
pub const DNS_NAMESPACE: &str = "kube-system";

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
    /// Port security: the allow-list when on (pod ports by default), `None` when off.
    security: Option<Vec<crate::cidr::Ipv4Cidr>>,
}

#[derive(Debug)]
struct State {
    ports: BTreeMap<String, PortRecord>,
    ids: Vec<bool>,
    pool: IpPool,
    macs: HashSet<MacAddr>,
    /// The kernel side of ports and routes.
    devices: Box<dyn Devices>,
    /// The peer table every worker has (the last one published).
    peers: Arc<PeerTable>,
    /// The host port's interface index: peers' pod CIDRs are routed to it in the node
    /// namespace, so the node reaches remote pods through the gateway.
    host_index: Option<u32>,
    /// The Service table every worker has (the last one published): what `service list`
    /// shows, what an edit clones and an apply inherits Maglev table sizes from.
    services: Arc<ServiceTable>,
    /// New Services refused because the table was full (the workers count the rest).
    service_full_refusals: u64,
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
    /// A controller over running `worker`s with no port of its own (no host port, overlay
    /// port, NodePort or DNS responder, whatever `config` says), its pod devices made by
    /// `devices`; the configured peers and an empty Service table are published to the
    /// workers. [`Controller::start`] is the switch's; this is for driving the control logic
    /// against fake devices.
    pub fn with_devices(
        config: Config,
        worker: WorkerHandle,
        devices: Box<dyn Devices>,
    ) -> Result<Controller, StartError> {
        let ids = vec![false; config.ports.max_ports];
        let mut macs = HashSet::new();
        macs.insert(config.node.gateway_mac);
        let pool = IpPool::new(config.node.pod_cidr, &[config.node.gateway]);
        let s = &config.services;
        let services = Arc::new(ServiceTable::new(s.max_services, s.maglev_table_size));
        let mut peers = PeerTable::new(config.overlay.as_ref().map_or(0, |o| o.max_peers));
        for p in config.overlay.iter().flat_map(|o| &o.peers) {
            peers.upsert(p.clone()).map_err(|e| StartError::Worker(e.to_string()))?;
        }
        let peers = Arc::new(peers);
        let gone = |e: WorkerGone| StartError::Worker(e.to_string());
        worker.services_publish(&services).map_err(gone)?;
        worker.peers_publish(&peers).map_err(gone)?;
        let state = State {
            ports: BTreeMap::new(),
            ids,
            pool,
            macs,
            devices,
            peers,
            host_index: None,
            services,
            service_full_refusals: 0,
            node_ports: None,
        };
        Ok(Controller {
            config,
            worker,
            state: Mutex::new(state),
            started: Instant::now(),
            dns: None,
        })
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

    /// Stops the workers; every port's device is closed, so pod interfaces and the host port
    /// disappear.
    pub fn shutdown(&self) {
        self.worker.shutdown();
        let mut st = self.state();
        // Veth pairs outlive the fds that drove them: delete them as TAPs vanish.
        let pods: Vec<(PortId, PortKind)> = st.ports.values().map(|r| (r.id, r.kind)).collect();
        for (id, kind) in pods {
            st.devices.delete_pod(id, kind);
        }
        st.ports.clear();
    }
}
