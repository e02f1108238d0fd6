//! The datapaths under test and the topologies the harness builds for them, each in its own
//! fresh namespaces and torn down on drop (also on error or panic):
//!
//! - **same node** (pods on one node): the kernel bridge with veth pods (`cni0` model), Open
//!   vSwitch's userspace datapath, podswitch with TAP ports;
//! - **cross node** (two nodes on a veth underlay): the kernel bridge plus a `vxlan` device
//!   with static FDB and neighbour entries, as Flannel programs it;
//! - **service** (a client and two backend pods behind a ClusterIP): the kernel bridge with
//!   kube-proxy's rules in the node namespace, iptables or nftables layout.

use std::fmt;
use std::io;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;
use std::str::FromStr;

use vswitch::cidr::Ipv4Cidr;
use vswitch::lab::topology::{netns_with_lo, unique_name, BridgeNode, Pod, PodswitchNode};
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
}

impl Peer {
    /// Every peer, in report order.
    pub const ALL: [Peer; 3] = [Peer::Kernel, Peer::Ovs, Peer::Podswitch];

    /// Id used in results and on the command line.
    pub fn id(self) -> &'static str {
        match self {
            Peer::Kernel => "kernel",
            Peer::Ovs => "ovs",
            Peer::Podswitch => "podswitch",
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
        Peer::ALL
            .into_iter()
            .find(|p| p.id() == s)
            .ok_or_else(|| format!("unknown peer {s:?} (expected kernel, ovs or podswitch)"))
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
                    _topology: Topology::Ovs(node),
                })
            }
            Peer::Podswitch => {
                let node = PodswitchNode::build(&switch_exe()?, "psws", pod_cidr, pods, |_| {})?;
                let pid =
                    node.switch.pid().ok_or_else(|| io::Error::other("switch not running"))?;
                Ok(SameNode {
                    pods: refs(&node.pods)?,
                    cpu: CpuSource::Process(pid),
                    detail: "TAP ports".into(),
                    node_ns: Some(handle(&node.ns)?),
                    _topology: Topology::Podswitch(node),
                })
            }
        }
    }
}

/// Runs `ip`/`bridge`/`sysctl`-style commands and turns a failure into an error naming it.
pub fn run_tool(program: &str, args: &[&str]) -> io::Result<()> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("{program}: {e} (is it installed?)")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Writes a sysctl inside `ns` (sysctls under `/proc/sys/net` are per namespace).
pub fn sysctl(ns: &NetNs, key: &str, value: &str) -> io::Result<()> {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    ns.run(move || std::fs::write(&path, value))?
        .map_err(|e| io::Error::new(e.kind(), format!("sysctl {key}={value}: {e}")))
}

/// Two kernel nodes joined by a veth underlay, pods crossing through `vxlan` devices.
#[derive(Debug)]
pub struct KernelCrossNode {
    /// The client pod (node 1).
    pub client: PodRef,
    /// The server pod (node 2).
    pub server: PodRef,
    // Field order is drop order: nodes (and their pods) before nothing else depends on them.
    _nodes: [BridgeNode; 2],
}

/// VXLAN network identifier of the cross-node peers (Flannel's default).
pub const VNI: u32 = 1;

impl KernelCrossNode {
    /// Nodes `10.244.1.0/24` and `10.244.2.0/24` with one pod each; underlay
    /// `192.168.0.0/24`; VXLAN (VNI 1, port 4789) with static FDB and neighbour entries.
    pub fn build() -> io::Result<KernelCrossNode> {
        let mtu = MTU - vswitch::wire::vxlan::ENCAP_OVERHEAD as u32;
        let cidr = |n: u8| Ipv4Cidr::new(Ipv4Addr::new(10, 244, n, 0), 24).expect("valid CIDR");
        let nodes = [
            BridgeNode::build("pswx", cidr(1), 1, mtu)?,
            BridgeNode::build("pswx", cidr(2), 1, mtu)?,
        ];
        let names = [nodes[0].ns.name().to_string(), nodes[1].ns.name().to_string()];
        let underlay = unique_name("pu");
        let uname = |i: usize| {
            format!("{underlay}{i}")
                .chars()
                .rev()
                .take(15)
                .collect::<String>()
                .chars()
                .rev()
                .collect::<String>()
        };
        let (u0, u1) = (uname(0), uname(1));
        run_tool(
            "ip",
            &[
                "link", "add", &u0, "netns", &names[0], "type", "veth", "peer", "name", &u1,
                "netns", &names[1],
            ],
        )?;
        let vtep_mac = |i: usize| format!("02:76:78:00:00:{:02x}", i + 1);
        for (i, (name, uif)) in names.iter().zip([&u0, &u1]).enumerate() {
            let underlay_ip = format!("192.168.0.{}", i + 1);
            let ns = &nodes[i].ns;
            run_tool("ip", &["-n", name, "addr", "add", &format!("{underlay_ip}/24"), "dev", uif])?;
            run_tool("ip", &["-n", name, "link", "set", uif, "up"])?;
            run_tool(
                "ip",
                &[
                    "-n",
                    name,
                    "link",
                    "add",
                    "vxlan0",
                    "address",
                    &vtep_mac(i),
                    "type",
                    "vxlan",
                    "id",
                    &VNI.to_string(),
                    "local",
                    &underlay_ip,
                    "dev",
                    uif,
                    "dstport",
                    "4789",
                    "nolearning",
                ],
            )?;
            run_tool("ip", &["-n", name, "link", "set", "vxlan0", "mtu", &mtu.to_string(), "up"])?;
            run_tool(
                "ip",
                &["-n", name, "addr", "add", &format!("10.244.{}.0/32", i + 1), "dev", "vxlan0"],
            )?;
            sysctl(ns, "net.ipv4.ip_forward", "1")?;
            let j = 1 - i;
            let remote_net = format!("10.244.{}.0", j + 1);
            run_tool(
                "ip",
                &[
                    "-n",
                    name,
                    "neigh",
                    "add",
                    &remote_net,
                    "lladdr",
                    &vtep_mac(j),
                    "dev",
                    "vxlan0",
                    "nud",
                    "permanent",
                ],
            )?;
            run_tool(
                "bridge",
                &[
                    "-n",
                    name,
                    "fdb",
                    "append",
                    &vtep_mac(j),
                    "dev",
                    "vxlan0",
                    "dst",
                    &format!("192.168.0.{}", j + 1),
                ],
            )?;
            run_tool(
                "ip",
                &[
                    "-n",
                    name,
                    "route",
                    "add",
                    &format!("{remote_net}/24"),
                    "via",
                    &remote_net,
                    "dev",
                    "vxlan0",
                    "onlink",
                ],
            )?;
        }
        let client = refs(&nodes[0].pods)?.remove(0);
        let server = refs(&nodes[1].pods)?.remove(0);
        Ok(KernelCrossNode { client, server, _nodes: nodes })
    }
}

/// Throwaway namespace for control-plane timing (rules are loaded into it, then it goes).
pub fn scratch_netns(tag: &str) -> io::Result<NamedNetNs> {
    netns_with_lo(&unique_name(tag))
}
