//! The datapaths under test and the topologies the harness builds for them, each in its own
//! fresh namespaces and torn down on drop (also on error or panic):
//!
//! - **same node** (pods on one node): the kernel bridge with veth pods (`cni0` model), Open
//!   vSwitch's userspace datapath, podswitch with TAP ports;
//! - **cross node** (two nodes on a veth underlay): the kernel bridge plus a `vxlan` device
//!   with static FDB and neighbour entries, as Flannel programs it, and two podswitch nodes
//!   peered over their VXLAN overlay;
//! - **service** (a client and two backend pods behind a ClusterIP): the kernel bridge with
//!   kube-proxy's rules in the node namespace, iptables or nftables layout.

use std::fmt;
use std::io;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::str::FromStr;

use podswitch_lab::topology::{
    netns_with_lo, node_pod_cidr, podswitch_peer, underlay_ip, unique_name, BridgeNode,
    KernelVxlanNode, Pod, PodswitchNode, Underlay,
};
use vswitch::cidr::Ipv4Cidr;
use vswitch::control::api::PortAddKind;
use vswitch::sys::netns::{NamedNetNs, NetNs};

use crate::machine::CpuSource;
use crate::ovs::OvsNode;

/// A datapath the harness can build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Peer {
    /// Linux bridge, veth, vxlan, iptables/nftables.
    Kernel,
    /// Open vSwitch, userspace datapath.
    Ovs,
    /// podswitch.
    Podswitch,
    /// podswitch with AF_XDP pod ports (veth pairs); across nodes, its underlay interface
    /// through AF_XDP too (`[overlay] afxdp_interface`).
    PodswitchAfxdp,
}

impl Peer {
    /// Every peer, in report order.
    pub const ALL: [Peer; 4] = [Peer::Kernel, Peer::Ovs, Peer::Podswitch, Peer::PodswitchAfxdp];

    /// Id used in results and on the command line.
    pub fn id(self) -> &'static str {
        match self {
            Peer::Kernel => "kernel",
            Peer::Ovs => "ovs",
            Peer::Podswitch => "podswitch",
            Peer::PodswitchAfxdp => "podswitch-afxdp",
        }
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

impl FromStr for Peer {
    type Err = String;

    fn from_str(s: &str) -> Result<Peer, String> {
        Peer::ALL.into_iter().find(|p| p.id() == s).ok_or_else(|| {
            format!("unknown peer {s:?} (expected kernel, ovs, podswitch or podswitch-afxdp)")
        })
    }
}

/// Whether podswitch's worker busy-polls without ever sleeping in this run (`--busy-poll`).
static BUSY_POLL: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Sets how every podswitch this run starts polls (see `bench --busy-poll`).
pub fn set_busy_poll(on: bool) {
    BUSY_POLL.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Worker threads of every podswitch this run starts; 0: the switch's default.
static WORKERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Whether every podswitch this run starts pins its workers (see `bench --no-pin`).
static PIN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Sets how many workers every podswitch this run starts has, and whether they are pinned
/// (see `bench --workers`, `--no-pin`).
pub fn set_workers(n: Option<usize>, pin: bool) {
    WORKERS.store(n.unwrap_or(0), std::sync::atomic::Ordering::Relaxed);
    PIN.store(pin, std::sync::atomic::Ordering::Relaxed);
}

/// The run's polling mode and worker count applied to a switch's configuration.
fn polling(config: &mut vswitch::config::Config) {
    if BUSY_POLL.load(std::sync::atomic::Ordering::Relaxed) {
        config.worker.busy_poll = vswitch::config::BusyPoll::Always;
    }
    match WORKERS.load(std::sync::atomic::Ordering::Relaxed) {
        0 => {}
        n => config.worker.count = n,
    }
    if !PIN.load(std::sync::atomic::Ordering::Relaxed) {
        config.worker.pin = vswitch::config::Pinning::Off;
    }
}

/// MTU of same-node pods.
pub const MTU: u32 = 1500;

/// The binary that runs the switch: this one (`bench run --config FILE` is `podswitch run`),
/// so the switch measured is the build being benchmarked.
pub fn switch_exe() -> io::Result<PathBuf> {
    std::env::current_exe()
}

/// Pods on one node, whichever datapath connects them.
#[derive(Debug)]
pub struct SameNode {
    /// The pods (`pods[0]` is the client).
    pub pods: Vec<PodRef>,
    /// Where the datapath's CPU time is read.
    pub cpu: CpuSource,
    /// What the label says about the ports.
    pub detail: String,
    /// The node namespace (an extra handle), where the node's own rules go.
    pub node_ns: Option<NetNs>,
    /// podswitch's control socket.
    pub switch_socket: Option<PathBuf>,
    _topology: Topology,
}

/// A pod's namespace path and address, detached from the topology that owns it.
#[derive(Debug)]
pub struct PodRef {
    /// The pod namespace (an extra handle; the topology deletes the name).
    pub ns: NetNs,
    /// Its address.
    pub ip: Ipv4Addr,
}

#[derive(Debug)]
#[allow(dead_code, clippy::large_enum_variant)]
enum Topology {
    Kernel(BridgeNode),
    Ovs(OvsNode),
    Podswitch(PodswitchNode),
}

fn handle(ns: &NamedNetNs) -> io::Result<NetNs> {
    NetNs::open(&ns.path().to_string_lossy())
}

fn refs(pods: &[Pod]) -> io::Result<Vec<PodRef>> {
    pods.iter().map(|p| Ok(PodRef { ns: handle(&p.ns)?, ip: p.ip })).collect()
}

impl SameNode {
    /// Builds `pods` pods on one node of `peer` in `pod_cidr`.
    pub fn build(peer: Peer, pod_cidr: Ipv4Cidr, pods: usize) -> io::Result<SameNode> {
        match peer {
            Peer::Kernel => {
                let node = BridgeNode::build("pswb", pod_cidr, pods, MTU)?;
                Ok(SameNode {
                    pods: refs(&node.pods)?,
                    cpu: CpuSource::Softirq,
                    detail: "veth pods on a Linux bridge".into(),
                    node_ns: Some(handle(&node.ns)?),
                    switch_socket: None,
                    _topology: Topology::Kernel(node),
                })
            }
            Peer::Ovs => {
                crate::ovs::installed().map_err(io::Error::other)?;
                let node = OvsNode::build("pswo", pod_cidr, pods, MTU)?;
                Ok(SameNode {
                    pods: refs(&node.pods)?,
                    cpu: CpuSource::Process(node.vswitchd_pid()),
                    detail: format!("netdev datapath, {} ports", node.port_kind),
                    node_ns: Some(handle(&node.ns)?),
                    switch_socket: None,
                    _topology: Topology::Ovs(node),
                })
            }
            Peer::Podswitch | Peer::PodswitchAfxdp => {
                let (kind, detail) = match peer {
                    Peer::Podswitch => (PortAddKind::Tap, "TAP ports"),
                    _ => (PortAddKind::Afxdp, "AF_XDP ports (veth, copy mode)"),
                };
                let node = PodswitchNode::build_with_kind(
                    &switch_exe()?,
                    "psws",
                    pod_cidr,
                    pods,
                    kind,
                    polling,
                )?;
                let pid =
                    node.switch.pid().ok_or_else(|| io::Error::other("switch not running"))?;
                Ok(SameNode {
                    pods: refs(&node.pods)?,
                    cpu: CpuSource::Process(pid),
                    detail: detail.into(),
                    node_ns: Some(handle(&node.ns)?),
                    switch_socket: Some(node.switch.socket().to_path_buf()),
                    _topology: Topology::Podswitch(node),
                })
            }
        }
    }
}

/// Writes a sysctl inside `ns` (sysctls under `/proc/sys/net` are per namespace).
pub fn sysctl(ns: &NetNs, key: &str, value: &str) -> io::Result<()> {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    ns.run(move || std::fs::write(&path, value))?
        .map_err(|e| io::Error::new(e.kind(), format!("sysctl {key}={value}: {e}")))
}

/// Two nodes on a veth underlay (`192.168.0.0/24`, MTU 1500), one pod each (pod MTU 1450),
/// the client on node 1 and the server on node 2, pods crossing through VXLAN (VNI 1).
#[derive(Debug)]
pub struct CrossNode {
    /// The client pod (node 1).
    pub client: PodRef,
    /// The server pod (node 2).
    pub server: PodRef,
    /// Where the datapath's CPU time is read (node 1's switch, or softirq).
    pub cpu: CpuSource,
    // Field order is drop order: the handles above, then the nodes, then the underlay.
    _nodes: CrossNodes,
    _underlay: Underlay,
}

#[derive(Debug)]
#[allow(dead_code, clippy::large_enum_variant)]
enum CrossNodes {
    Kernel(KernelVxlanNode, KernelVxlanNode),
    Podswitch(PodswitchNode, PodswitchNode),
}

impl CrossNode {
    /// Builds the two nodes of `peer`: bridge + `vxlan` devices with static FDB and neighbour
    /// entries (Flannel's layout) for the kernel, two podswitch nodes peered with each other.
    pub fn build(peer: Peer) -> io::Result<CrossNode> {
        let mut ul = Underlay::build("pswx")?;
        match peer {
            Peer::Kernel => {
                let k = |ul: &mut Underlay, n| {
                    KernelVxlanNode::build(
                        "pswx",
                        ul,
                        underlay_ip(n),
                        node_pod_cidr(n),
                        1,
                        VNI,
                        MTU,
                    )
                };
                let (k1, k2) = (k(&mut ul, 1)?, k(&mut ul, 2)?);
                k1.add_peer(underlay_ip(2), node_pod_cidr(2), k2.vtep_mac)?;
                k2.add_peer(underlay_ip(1), node_pod_cidr(1), k1.vtep_mac)?;
                Ok(CrossNode {
                    client: refs(&k1.bridge.pods)?.remove(0),
                    server: refs(&k2.bridge.pods)?.remove(0),
                    cpu: CpuSource::Softirq,
                    _nodes: CrossNodes::Kernel(k1, k2),
                    _underlay: ul,
                })
            }
            Peer::Podswitch | Peer::PodswitchAfxdp => {
                let exe = switch_exe()?;
                // AF_XDP throughout: pods on veth pairs, the underlay interface too.
                let afxdp = peer == Peer::PodswitchAfxdp;
                let p = |ul: &mut Underlay, n: u8, other: u8| {
                    let mut node = PodswitchNode::build_on_underlay(
                        &exe,
                        "pswx",
                        ul,
                        n,
                        if afxdp { 0 } else { 1 },
                        &[podswitch_peer(other)],
                        MTU,
                        None,
                        |c| {
                            polling(c);
                            if let (true, Some(o)) = (afxdp, c.overlay.as_mut()) {
                                o.afxdp_interface = Some("ul0".into());
                            }
                        },
                    )?;
                    if afxdp {
                        node.pod_kind = vswitch::control::api::PortAddKind::Afxdp;
                        node.add_pod("pod1", None)?;
                    }
                    Ok::<_, io::Error>(node)
                };
                let (p1, p2) = (p(&mut ul, 1, 2)?, p(&mut ul, 2, 1)?);
                let pid = p1.switch.pid().ok_or_else(|| io::Error::other("switch not running"))?;
                Ok(CrossNode {
                    client: refs(&p1.pods)?.remove(0),
                    server: refs(&p2.pods)?.remove(0),
                    cpu: CpuSource::Process(pid),
                    _nodes: CrossNodes::Podswitch(p1, p2),
                    _underlay: ul,
                })
            }
            Peer::Ovs => {
                Err(io::Error::other("the harness builds Open vSwitch on a single node only"))
            }
        }
    }
}

/// VXLAN network identifier of the cross-node peers (Flannel's default).
pub const VNI: u32 = 1;

/// Throwaway namespace for control-plane timing (rules are loaded into it, then it goes).
pub fn scratch_netns(tag: &str) -> io::Result<NamedNetNs> {
    netns_with_lo(&unique_name(tag))
}
