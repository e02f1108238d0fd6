//! Device plumbing for pod ports, behind the [`Devices`] trait: creating a pod's TAP or veth
//! pair, moving it into the pod's namespace, its MAC, MTU, address, routes and AF_XDP
//! attachment; deleting what outlives the port's fds; routes in the node namespace; reading
//! a TAP's drop counter. [`KernelDevices`] does it with netlink and the kernel; the port
//! add/del logic in `ports.rs` only sees the trait, so it is unit-tested against a fake
//! (`tests.rs`) without root.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::net::Ipv4Addr;

use crate::cidr::{Ipv4Cidr, Ipv4IfAddr};
use crate::config::{AfxdpConfig, Config};
use crate::control::api::{ApiError, ErrorKind};
use crate::port::afxdp::{AfXdpOptions, AfXdpPort};
use crate::port::queue_steering;
use crate::port::tap::TapPort;
use crate::port::{Port, PortId, PortKind};
use crate::sys::bpf::{SchedClsProgram, SocketFilterProgram, TcxLink};
use crate::sys::netlink::Netlink;
use crate::sys::netns::NetNs;
use crate::sys::tun::{self, TapDevice, TapOptions};
use crate::wire::MacAddr;

use super::failed;

/// A pod port to create: what the control plane decided, before any device exists.
#[derive(Debug, Clone, Copy)]
pub struct PodDevice<'a> {
    /// The port's id.
    pub id: PortId,
    /// TAP or AF_XDP.
    pub kind: PortKind,
    /// The interface's name in the pod's namespace.
    pub ifname: &'a str,
    /// The pod's MAC.
    pub mac: MacAddr,
    /// The pod's address.
    pub ip: Ipv4IfAddr,
    /// The interface's MTU.
    pub mtu: u32,
}

/// A pod's device, created and configured, not yet polled by any worker.
#[derive(Debug)]
pub struct PodQueues {
    /// Its queues, one per worker (or a single one). Dropping a TAP's destroys it.
    pub queues: Vec<Box<dyn Port>>,
    /// An AF_XDP pod end's queue-steering program, attached while this lives.
    pub steering: Option<TcxLink>,
}

/// What port add/del and peers need from the kernel. Every method is called with the
/// controller's lock held, so calls never overlap.
pub trait Devices: Send + fmt::Debug {
    /// Opens the pod's network namespace (`--netns`: a name under `/run/netns` or a path).
    fn open_netns(&mut self, spec: &str) -> io::Result<NetNs>;

    /// Creates `pod`'s device in `ns`, configured (MAC, MTU, name, address, up, routes to
    /// and via the gateway) and ready to be polled. On error nothing is left behind.
    fn create_pod(&mut self, ns: &NetNs, pod: &PodDevice<'_>) -> Result<PodQueues, ApiError>;

    /// Deletes what a pod port of `kind` leaves once its queues are dropped (an AF_XDP
    /// port's veth pair; a TAP goes with its fds). Best effort: it may have gone with its
    /// namespace.
    fn delete_pod(&mut self, id: PortId, kind: PortKind);

    /// Routes `cidr` to interface `index` in the switch's namespace.
    fn route_add(&mut self, cidr: Ipv4Cidr, index: u32) -> io::Result<()>;

    /// Removes that route (best effort).
    fn route_del(&mut self, cidr: Ipv4Cidr, index: u32);

    /// The `tx_dropped` counter of interface `ifname` in namespace `netns` (the switch's
    /// own when `None`); `None` when it cannot be read.
    fn tx_dropped(&mut self, netns: Option<&str>, ifname: &str) -> Option<u64>;
}

/// Offloads the switch takes from a TAP's kernel side: partial checksums and TCP super-frames
/// (IPv4, IPv6, with ECN). UDP segmentation is left to the pod's kernel: the overlay would
/// have to segment it again.
pub const TAP_OFFLOADS: u32 =
    tun::TUN_F_CSUM | tun::TUN_F_TSO4 | tun::TUN_F_TSO6 | tun::TUN_F_TSO_ECN;

/// The name of an AF_XDP port's veth host end in the switch's namespace: `psx`, the
/// switch's pid and the port id in hex (at most 13 bytes), unique per switch and port.
pub fn afxdp_host_name(id: PortId) -> String {
    format!("psx{:x}{:04x}", std::process::id(), id.0)
}

/// Deletes a link of the switch's namespace by name, if it exists (best effort: it may have
/// gone with its pod's namespace).
pub(super) fn delete_link(netlink: &mut Netlink, name: &str) {
    if let Ok(Some(l)) = netlink.link_get(name) {
        let _ = netlink.link_del(l.index);
    }
}

/// A TAP device with virtio-net headers and [`TAP_OFFLOADS`]: the kernel hands the switch
/// 64 KiB TCP super-frames with one `read`, and takes them back with one `write`.
/// With several workers the device has one queue per worker, chosen per frame by
/// `steering` when given.
pub(super) fn create_tap(
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
pub(super) fn tap_ports(taps: Vec<TapDevice>, kind: PortKind) -> Vec<Box<dyn Port>> {
    taps.into_iter()
        .map(|t| Box::new(TapPort::new(t.into_file(), kind, true)) as Box<dyn Port>)
        .collect()
}

/// [`Devices`] on the real kernel: netlink in the switch's namespace and the pods'.
#[derive(Debug)]
pub struct KernelDevices {
    netlink: Netlink,
    /// Queues per device: one per worker.
    queues: usize,
    gateway: Ipv4Addr,
    afxdp: AfxdpConfig,
    tmp_seq: u32,
    /// With several workers: the program that picks each TAP frame's queue (worker) the way
    /// flow steering would (`port/queue_steering.rs`); `None` if the kernel refused it (the
    /// kernel's own per-flow choice applies, and the switch steers what arrives elsewhere).
    tap_steering: Option<SocketFilterProgram>,
    /// The same for AF_XDP pods: the tc program on each pod end's egress that picks a frame's
    /// tx queue, which veth delivers on the host end's rx queue of that number (read by the
    /// worker of that number); `None` if the kernel refused it.
    veth_steering: Option<SchedClsProgram>,
}

impl KernelDevices {
    /// Pod devices with one queue per worker (`queues`), steered by the given programs.
    pub fn new(
        netlink: Netlink,
        config: &Config,
        queues: usize,
        tap_steering: Option<SocketFilterProgram>,
        veth_steering: Option<SchedClsProgram>,
    ) -> KernelDevices {
        KernelDevices {
            netlink,
            queues,
            gateway: config.node.gateway,
            afxdp: config.afxdp,
            tmp_seq: 0,
            tap_steering,
            veth_steering,
        }
    }

    /// Creates and configures a pod's TAP. On error the TAP is dropped, which destroys the
    /// device and everything configured on it.
    fn create_tap_pod(
        &mut self,
        ns: &NetNs,
        tmp_name: &str,
        pod: &PodDevice<'_>,
    ) -> Result<PodQueues, ApiError> {
        let taps = create_tap(tmp_name, self.queues, self.tap_steering.as_ref().map(|p| p.fd()))
            .map_err(|e| failed("create TAP", e))?;
        let link =
            self.netlink.link_get(tmp_name).map_err(|e| failed("look up TAP", e))?.ok_or_else(
                || ApiError::new(ErrorKind::Failed, format!("TAP {tmp_name} vanished")),
            )?;
        self.configure_pod_side(ns, link.index, pod)?;
        Ok(PodQueues { queues: tap_ports(taps, PortKind::Tap), steering: None })
    }

    /// Creates a pod's veth pair, configures the pod end as a TAP is, and attaches the host
    /// end ([`afxdp_host_name`]) through AF_XDP. On error the host end is deleted, which
    /// deletes the pod end wherever it is.
    fn create_afxdp_pod(
        &mut self,
        ns: &NetNs,
        tmp_name: &str,
        pod: &PodDevice<'_>,
    ) -> Result<PodQueues, ApiError> {
        let host = afxdp_host_name(pod.id);
        // One queue per worker on both ends: the pod's flows spread over the host end's
        // receive queues, each driven by one worker's AF_XDP socket.
        self.netlink
            .veth_add_queues(&host, tmp_name, None, self.queues as u32)
            .map_err(|e| failed("create veth pair", e))?;
        let r = self.attach_afxdp_veth(ns, &host, tmp_name, pod);
        if r.is_err() {
            delete_link(&mut self.netlink, &host);
        }
        r
    }

    fn attach_afxdp_veth(
        &mut self,
        ns: &NetNs,
        host: &str,
        pod_end: &str,
        pod: &PodDevice<'_>,
    ) -> Result<PodQueues, ApiError> {
        let index = |nl: &mut Netlink, name: &str| {
            nl.link_get(name)
                .map_err(|e| failed("look up veth", e))?
                .map(|l| l.index)
                .ok_or_else(|| ApiError::new(ErrorKind::Failed, format!("veth {name} vanished")))
        };
        let host_index = index(&mut self.netlink, host)?;
        let pod_index = index(&mut self.netlink, pod_end)?;
        self.netlink
            .link_set_mtu(host_index, pod.mtu)
            .map_err(|e| failed("set host end MTU", e))?;
        // The switch's kernel has no business on the host end: no IPv6 autoconfiguration
        // traffic toward the pod. Best effort (IPv6 may be disabled altogether).
        let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{host}/disable_ipv6"), "1");
        let pod_index = self.configure_pod_side(ns, pod_index, pod)?;
        // Before the host end is up, so no frame the pod sends leaves unsteered.
        let steering = self.veth_steering.as_ref().and_then(|prog| {
            queue_steering::attach_to_veth(prog, ns, pod_index)
                .map_err(|e| {
                    eprintln!(
                        "podswitch: {host}: queue steering program not attached to the pod end \
                         ({e}); its flows spread by hash and the switch steers the rest"
                    )
                })
                .ok()
        });
        self.netlink.link_set_up(host_index, true).map_err(|e| failed("set host end up", e))?;
        let opts = AfXdpOptions::for_mtu_and_config(pod.mtu, &self.afxdp).ok_or_else(|| {
            ApiError::field(ErrorKind::InvalidArgument, "args.mtu", "too large for afxdp")
        })?;
        let ports =
            AfXdpPort::open_queues(host, host_index, opts, self.queues as u32).map_err(|e| {
                ApiError::field(
                    ErrorKind::Failed,
                    "args.kind",
                    format!("afxdp: cannot drive {host} through AF_XDP on this kernel: {e}"),
                )
            })?;
        if let Some(why) = ports.first().and_then(|p| p.native_refused()) {
            eprintln!("podswitch: {host}: native XDP refused, attached in skb mode: {why}");
        }
        let queues = ports.into_iter().map(|p| Box::new(p) as Box<dyn Port>).collect();
        Ok(PodQueues { queues, steering })
    }

    /// Configures a pod's interface, which exists as link `index` in the switch's
    /// namespace: MAC and MTU, moved into the pod's namespace as `pod.ifname`, then (there)
    /// TX checksum offload off for an AF_XDP port, the address, up, and routes to and via
    /// the gateway. Shared by every port kind with a pod side. Returns the interface's index
    /// in the pod's namespace.
    fn configure_pod_side(
        &mut self,
        ns: &NetNs,
        index: u32,
        pod: &PodDevice<'_>,
    ) -> Result<u32, ApiError> {
        let netlink = &mut self.netlink;
        netlink.link_set_mac(index, pod.mac.0).map_err(|e| failed("set MAC", e))?;
        netlink.link_set_mtu(index, pod.mtu).map_err(|e| failed("set MTU", e))?;
        netlink.link_move_to_netns(index, ns, Some(pod.ifname)).map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                ApiError::field(
                    ErrorKind::AlreadyExists,
                    "args.ifname",
                    format!("the namespace already has an interface named {}", pod.ifname),
                )
            } else {
                failed("move into the namespace", e)
            }
        })?;
        let mut in_pod = Netlink::open_in(ns).map_err(|e| failed("netlink in the namespace", e))?;
        let index = in_pod
            .link_get(pod.ifname)
            .map_err(|e| failed("look up interface in the namespace", e))?
            .ok_or_else(|| ApiError::new(ErrorKind::Failed, "interface vanished after the move"))?
            .index;
        if pod.kind == PortKind::Afxdp {
            // AF_XDP carries no checksum metadata: the pod's frames must leave it complete
            // (the checksum trap in IO-NOTES.md). This also turns off TSO on the pod end.
            crate::sys::ethtool::disable_tx_checksum(ns, pod.ifname)
                .map_err(|e| failed("turn off tx checksum offload", e))?;
        }
        let ip = pod.ip;
        in_pod.addr_add(index, ip.addr, ip.prefix_len).map_err(|e| failed("add address", e))?;
        in_pod.link_set_up(index, true).map_err(|e| failed("set up", e))?;
        let gw = self.gateway;
        if !ip.subnet().contains(gw) {
            in_pod
                .route_add(gw, 32, None, index)
                .map_err(|e| failed("add route to the gateway", e))?;
        }
        in_pod
            .route_add(Ipv4Addr::UNSPECIFIED, 0, Some(gw), index)
            .map_err(|e| failed("add default route", e))?;
        Ok(index)
    }
}

impl Devices for KernelDevices {
    fn open_netns(&mut self, spec: &str) -> io::Result<NetNs> {
        NetNs::open_pod(spec)
    }

    fn create_pod(&mut self, ns: &NetNs, pod: &PodDevice<'_>) -> Result<PodQueues, ApiError> {
        self.tmp_seq = self.tmp_seq.wrapping_add(1);
        let tmp_name =
            format!("pst{:04x}{:04x}", std::process::id() & 0xffff, self.tmp_seq & 0xffff);
        match pod.kind {
            PortKind::Afxdp => self.create_afxdp_pod(ns, &tmp_name, pod),
            _ => self.create_tap_pod(ns, &tmp_name, pod),
        }
    }

    fn delete_pod(&mut self, id: PortId, kind: PortKind) {
        // A TAP went with its fds; a veth pair outlives the fds that drove it.
        if kind == PortKind::Afxdp {
            delete_link(&mut self.netlink, &afxdp_host_name(id));
        }
    }

    fn route_add(&mut self, cidr: Ipv4Cidr, index: u32) -> io::Result<()> {
        self.netlink.route_add(cidr.network(), cidr.prefix_len(), None, index)
    }

    fn route_del(&mut self, cidr: Ipv4Cidr, index: u32) {
        let _ = self.netlink.route_del(cidr.network(), cidr.prefix_len(), None, Some(index));
    }

    fn tx_dropped(&mut self, netns: Option<&str>, ifname: &str) -> Option<u64> {
        let nl = match netns {
            Some(path) => NetNs::open(path).and_then(|ns| Netlink::open_in(&ns)),
            None => Netlink::open(),
        };
        nl.and_then(|mut nl| nl.link_get(ifname)).ok().flatten().map(|l| l.tx_dropped)
    }
}

/// The TAP drop counters of `taps` (id, namespace, interface), leaving out those that
/// cannot be read.
pub(super) fn tap_drops(
    devices: &mut dyn Devices,
    taps: &[(PortId, Option<String>, String)],
) -> BTreeMap<PortId, u64> {
    taps.iter()
        .filter_map(|(id, netns, ifname)| {
            Some((*id, devices.tx_dropped(netns.as_deref(), ifname)?))
        })
        .collect()
}
