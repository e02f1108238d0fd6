//! Topologies built from scratch in fresh network namespaces, for the lab, the behaviour
//! tests and the benchmarks: a node running podswitch with pods attached (through the control
//! API, or by executing the CNI plugin as a container runtime does), and the same node built
//! the kernel's way (pods on veth pairs to a Linux bridge) as the peer to compare with.
//!
//! Everything here is created inside namespaces it creates itself; nothing is added to the
//! namespace the caller runs in. Every piece is a guard: dropping it removes it, even during
//! a panic. Field order in the structs is drop order, chosen so the switch stops (closing its
//! TAP devices) before the namespaces holding them are deleted.

use std::io::{self, Read};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};

use std::time::{Duration, Instant};

use podswitch_api::cidr::{Ipv4Cidr, Ipv4IfAddr};
use podswitch_api::client::{self, Client, ClientError};
use podswitch_api::mac::MacAddr;
use podswitch_api::protocol::{PortAddArgs, PortAddKind, PortInfo, Reply, Request};
use podswitch_sys::netlink::Netlink;
use podswitch_sys::netns::{NamedNetNs, NetNs};
use podswitch_sys::process::send_signal;
use vswitch::config::Config;

/// How long a freshly started switch has to answer on its socket.
pub const START_TIMEOUT: Duration = Duration::from_secs(15);

/// How long a stopping switch has after SIGTERM before it is killed.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);

pub use podswitch_sys::netns::{netns_with_lo, unique_name};

/// A scratch directory removed on drop.
#[derive(Debug)]
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    /// Creates `/tmp/<unique name>`.
    pub fn new(tag: &str) -> io::Result<ScratchDir> {
        let p = std::env::temp_dir().join(unique_name(tag));
        std::fs::create_dir_all(&p)?;
        Ok(ScratchDir(p))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A `podswitch run` child process in a namespace, stopped (SIGTERM, then SIGKILL) on drop.
#[derive(Debug)]
pub struct SwitchProcess {
    child: Option<Child>,
    socket: PathBuf,
    log: PathBuf,
    dir: ScratchDir,
}

impl SwitchProcess {
    /// Writes `config` to a scratch directory and runs `exe run --config` inside `ns`; returns
    /// once the switch answers on its socket. `config.control.socket` should point into a
    /// directory of the caller's (it is used as is).
    pub fn start(exe: &Path, ns: &NetNs, config: &Config) -> io::Result<SwitchProcess> {
        let dir = ScratchDir::new("psw-switch")?;
        let cfg_path = dir.path().join("node.toml");
        std::fs::write(&cfg_path, config.to_toml())?;
        let log = dir.path().join("switch.log");
        let log_file = std::fs::File::create(&log)?;
        let exe = exe.to_path_buf();
        let child = ns.run(move || {
            Command::new(exe)
                .arg("run")
                .arg("--config")
                .arg(&cfg_path)
                .stdin(Stdio::null())
                .stdout(log_file.try_clone()?)
                .stderr(log_file)
                .spawn()
        })??;
        let mut sp =
            SwitchProcess { child: Some(child), socket: config.control.socket.clone(), log, dir };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Reply::Status(_)) = client::call(&sp.socket, &Request::Status) {
                return Ok(sp);
            }
            if let Some(status) = sp.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                return Err(io::Error::other(format!(
                    "podswitch exited at start ({status}): {}",
                    sp.log_text().trim()
                )));
            }
            if Instant::now() > deadline {
                let log = sp.log_text();
                let _ = sp.stop();
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("podswitch did not answer within {START_TIMEOUT:?}: {}", log.trim()),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The control socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The child's PID.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// A new control connection.
    pub fn client(&self) -> Result<Client, ClientError> {
        Client::connect(&self.socket)
    }

    /// One request on a new connection.
    pub fn call(&self, req: &Request) -> Result<Reply, ClientError> {
        client::call(&self.socket, req)
    }

    /// What the switch printed so far.
    pub fn log_text(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// The scratch directory (config, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Asks the switch to stop and waits for it; kills it after [`STOP_TIMEOUT`].
    pub fn stop(&mut self) -> io::Result<Option<ExitStatus>> {
        let Some(mut child) = self.child.take() else { return Ok(None) };
        if child.try_wait()?.is_none() {
            let _ = send_signal(child.id(), libc::SIGTERM);
            let deadline = Instant::now() + STOP_TIMEOUT;
            while Instant::now() < deadline {
                if let Some(s) = child.try_wait()? {
                    return Ok(Some(s));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
        }
        child.wait().map(Some)
    }
}

impl Drop for SwitchProcess {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// A pod: a namespace with one interface.
#[derive(Debug)]
pub struct Pod {
    /// Name (also the switch port name for pods attached through the control API; the CNI
    /// plugin names ports `cni:<namespace name>:eth0`).
    pub name: String,
    /// Its address.
    pub ip: Ipv4Addr,
    /// Its interface MAC.
    pub mac: MacAddr,
    /// Its namespace.
    pub ns: NamedNetNs,
}

/// A node running podswitch, with pods attached through the control API or, as a container
/// runtime does it, by executing the CNI plugin.
#[derive(Debug)]
pub struct PodswitchNode {
    /// The switch (first: stops before the namespaces go).
    pub switch: SwitchProcess,
    /// The pods.
    pub pods: Vec<Pod>,
    /// The node's configuration.
    pub config: Config,
    /// The node namespace.
    pub ns: NamedNetNs,
    /// The CNI plugin (`podswitch-cni`) pods are attached through; `None`: the control API.
    pub cni_plugin: Option<PathBuf>,
    /// The device [`PodswitchNode::add_pod`] gives pods (TAP unless built otherwise). Pods
    /// of any other kind than TAP are attached through the control API.
    pub pod_kind: PortAddKind,
    /// Whether [`PodswitchNode::add_pod`] asks for port security on the pods it attaches
    /// through the control API (on unless changed; tests of stations behind a pod turn it
    /// off). The CNI plugin's pods always have it.
    pub port_security: bool,
    /// Container ids of the pods attached through the plugin (DEL'd on drop).
    cni_attachments: Vec<(String, PathBuf)>,
    _dir: ScratchDir,
}

/// The interface name the lab's pods get through the CNI plugin.
pub const CNI_IFNAME: &str = "eth0";

/// Executes a CNI plugin as a runtime does: `CNI_COMMAND`, `CNI_CONTAINERID`, `CNI_NETNS`,
/// `CNI_IFNAME` and `CNI_PATH` (the plugin's directory) in an otherwise empty environment,
/// the network configuration on stdin. Returns its stdout; a failure carries its error object.
pub fn cni_exec(
    plugin: &Path,
    command: &str,
    container_id: &str,
    netns: &Path,
    ifname: &str,
    netconf: &str,
) -> io::Result<String> {
    use std::io::Write;
    let dir = plugin.parent().unwrap_or(Path::new("/"));
    let mut child = Command::new(plugin)
        .env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", container_id)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", ifname)
        .env("CNI_PATH", dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", plugin.display())))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(netconf.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(io::Error::other(format!(
            "{} {command} {container_id}: {stdout}{}",
            plugin.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

impl PodswitchNode {
    /// Builds a node namespace running `exe` with `config_edit` applied to the default node
    /// config for `pod_cidr`, and attaches `pods` pods through the control API.
    pub fn build(
        exe: &Path,
        tag: &str,
        pod_cidr: Ipv4Cidr,
        pods: usize,
        config_edit: impl FnOnce(&mut Config),
    ) -> io::Result<PodswitchNode> {
        PodswitchNode::build_with(exe, None, tag, pod_cidr, pods, |_| Ok(()), config_edit)
    }

    /// Like [`PodswitchNode::build`], with pods of `kind` (a TAP or a veth pair driven
    /// through AF_XDP) attached through the control API.
    pub fn build_with_kind(
        exe: &Path,
        tag: &str,
        pod_cidr: Ipv4Cidr,
        pods: usize,
        kind: PortAddKind,
        config_edit: impl FnOnce(&mut Config),
    ) -> io::Result<PodswitchNode> {
        let mut node = PodswitchNode::build(exe, tag, pod_cidr, 0, config_edit)?;
        node.pod_kind = kind;
        for i in 1..=pods {
            node.add_pod(&format!("pod{i}"), None)?;
        }
        Ok(node)
    }

    /// Like [`PodswitchNode::build`], attaching the pods by executing `cni_plugin` when given.
    pub fn build_with_cni(
        exe: &Path,
        cni_plugin: Option<PathBuf>,
        tag: &str,
        pod_cidr: Ipv4Cidr,
        pods: usize,
        config_edit: impl FnOnce(&mut Config),
    ) -> io::Result<PodswitchNode> {
        PodswitchNode::build_with(exe, cni_plugin, tag, pod_cidr, pods, |_| Ok(()), config_edit)
    }

    /// The general builder: `prepare` runs on the fresh node namespace before the switch
    /// starts (to plug it into an underlay, say); pods are attached through `cni_plugin` when
    /// given, through the control API otherwise.
    pub fn build_with(
        exe: &Path,
        cni_plugin: Option<PathBuf>,
        tag: &str,
        pod_cidr: Ipv4Cidr,
        pods: usize,
        prepare: impl FnOnce(&NamedNetNs) -> io::Result<()>,
        config_edit: impl FnOnce(&mut Config),
    ) -> io::Result<PodswitchNode> {
        let dir = ScratchDir::new(tag)?;
        let ns = netns_with_lo(&unique_name(&format!("{tag}-node")))?;
        prepare(&ns)?;
        let mut config = Config::for_node("lab-node", pod_cidr, dir.path().join("podswitch.sock"));
        config_edit(&mut config);
        let switch = SwitchProcess::start(exe, &ns, &config)?;
        let mut node = PodswitchNode {
            switch,
            pods: Vec::new(),
            config,
            ns,
            cni_plugin,
            pod_kind: PortAddKind::Tap,
            port_security: true,
            cni_attachments: Vec::new(),
            _dir: dir,
        };
        for i in 1..=pods {
            node.add_pod(&format!("pod{i}"), None)?;
        }
        Ok(node)
    }

    /// Node `n` (1-based) of an overlay: plugged into `underlay` at [`underlay_ip`]`(n)`, pod
    /// CIDR [`node_pod_cidr`]`(n)`, VNI 1, pod MTU `underlay_mtu` − 50, tunnelling to `peers`
    /// from the start, pods attached through `cni_plugin` when given; `config_edit` sees the
    /// config last. Several nodes share this machine's CPUs, so each switch runs one worker,
    /// unpinned: busy-polling workers of two switches on one CPU take turns in busy-poll
    /// windows (measured: cross-node request/response p50 460 µs with workers pinned to the
    /// same CPUs, 420 µs with two unpinned workers per switch on 2 CPUs, 20 µs with one).
    #[allow(clippy::too_many_arguments)]
    pub fn build_on_underlay(
        exe: &Path,
        tag: &str,
        underlay: &mut Underlay,
        n: u8,
        pods: usize,
        peers: &[vswitch::config::PeerConfig],
        underlay_mtu: u32,
        cni_plugin: Option<PathBuf>,
        config_edit: impl FnOnce(&mut Config),
    ) -> io::Result<PodswitchNode> {
        let ip = underlay_ip(n);
        PodswitchNode::build_with(
            exe,
            cni_plugin,
            tag,
            node_pod_cidr(n),
            pods,
            |ns| underlay.plug(ns, ip, underlay_mtu),
            |c| {
                c.node.name = format!("node-{n}");
                c.worker.pin = vswitch::config::Pinning::Off;
                c.worker.count = 1;
                c.node.mtu = underlay_mtu - vswitch::config::OVERLAY_OVERHEAD;
                c.overlay = Some(vswitch::config::OverlayConfig {
                    underlay_ip: ip,
                    vni: 1,
                    udp_port: vswitch::wire::vxlan::UDP_PORT,
                    underlay_mtu,
                    udp_checksum: false,
                    afxdp_interface: None,
                    max_peers: 64,
                    peers: peers.to_vec(),
                });
                config_edit(c);
            },
        )
    }

    /// The network configuration the node's pods are attached with through the CNI plugin:
    /// the switch's socket, addresses from the switch's own allocator.
    pub fn cni_netconf(&self) -> String {
        serde_json::json!({
            "cniVersion": "1.1.0",
            "name": "podswitch-lab",
            "type": "podswitch-cni",
            "socket": self.config.control.socket,
        })
        .to_string()
    }

    /// Creates a pod namespace and attaches it with the node's [`PodswitchNode::pod_kind`]:
    /// through the CNI plugin when the node has one, the kind is TAP and no address is asked
    /// for (the plugin's address comes from the switch), otherwise through the control API
    /// (address from the switch unless given).
    pub fn add_pod(&mut self, name: &str, ip: Option<Ipv4IfAddr>) -> io::Result<&Pod> {
        self.add_pod_kind(name, ip, self.pod_kind)
    }

    /// [`PodswitchNode::add_pod`] with a port kind of its own (to mix kinds on one node).
    pub fn add_pod_kind(
        &mut self,
        name: &str,
        ip: Option<Ipv4IfAddr>,
        kind: PortAddKind,
    ) -> io::Result<&Pod> {
        let security = self.port_security.then(Vec::new);
        self.add_pod_secured(name, ip, kind, security)
    }

    /// [`PodswitchNode::add_pod_kind`] with port security of its own: on with the given
    /// allow-list, or off with `None`.
    pub fn add_pod_secured(
        &mut self,
        name: &str,
        ip: Option<Ipv4IfAddr>,
        kind: PortAddKind,
        security: Option<Vec<Ipv4Cidr>>,
    ) -> io::Result<&Pod> {
        let ns = netns_with_lo(&unique_name(&format!("{}-{name}", self.ns.name())))?;
        let plugin = self.cni_plugin.clone().filter(|_| kind == PortAddKind::Tap);
        if let (Some(plugin), None) = (plugin, ip) {
            let (id, netns) = (ns.name().to_string(), ns.path().to_path_buf());
            let conf = self.cni_netconf();
            let out = cni_exec(&plugin, "ADD", &id, &netns, CNI_IFNAME, &conf)?;
            self.cni_attachments.push((id, netns));
            let (ip, mac) = cni_result_address(&out).ok_or_else(|| {
                io::Error::other(format!("CNI ADD {name}: no address and MAC in {out}"))
            })?;
            self.pods.push(Pod { name: name.to_string(), ip, mac, ns });
            return Ok(self.pods.last().expect("just pushed"));
        }
        let reply = self
            .switch
            .call(&Request::PortAdd(PortAddArgs {
                name: name.to_string(),
                netns: ns.name().to_string(),
                ip,
                mac: None,
                ifname: None,
                mtu: None,
                kind,
                port_security: security.is_some(),
                allow_ips: security.unwrap_or_default(),
            }))
            .map_err(|e| io::Error::other(format!("port add {name} ({kind}): {e}")))?;
        let Reply::Port(PortInfo { ip: Some(ip), mac, .. }) = reply else {
            return Err(io::Error::other(format!("port add {name}: unexpected reply {reply:?}")));
        };
        self.pods.push(Pod { name: name.to_string(), ip: ip.addr, mac, ns });
        Ok(self.pods.last().expect("just pushed"))
    }

    /// The gateway address (carried by the host port in the node namespace).
    pub fn gateway(&self) -> Ipv4Addr {
        self.config.node.gateway
    }
}

/// The first address and interface MAC of a CNI ADD result.
fn cni_result_address(result: &str) -> Option<(Ipv4Addr, MacAddr)> {
    let v: serde_json::Value = serde_json::from_str(result).ok()?;
    let ip: Ipv4IfAddr = v["ips"][0]["address"].as_str()?.parse().ok()?;
    let mac: MacAddr = v["interfaces"][0]["mac"].as_str()?.parse().ok()?;
    Some((ip.addr, mac))
}

impl Drop for PodswitchNode {
    fn drop(&mut self) {
        if let Some(plugin) = &self.cni_plugin {
            let conf = self.cni_netconf();
            for (id, netns) in &self.cni_attachments {
                let _ = cni_exec(plugin, "DEL", id, netns, CNI_IFNAME, &conf);
            }
        }
    }
}

/// The kernel's way: pods on veth pairs to a Linux bridge in the node namespace, the bridge
/// carrying the gateway address (the `cni0` model).
#[derive(Debug)]
pub struct BridgeNode {
    /// The pods.
    pub pods: Vec<Pod>,
    /// The node namespace.
    pub ns: NamedNetNs,
    /// The gateway (the bridge's address).
    pub gateway: Ipv4Addr,
}

impl BridgeNode {
    /// Builds the node with `pods` pods at `.2`, `.3`, ... of `pod_cidr`.
    pub fn build(tag: &str, pod_cidr: Ipv4Cidr, pods: usize, mtu: u32) -> io::Result<BridgeNode> {
        let ns = netns_with_lo(&unique_name(&format!("{tag}-node")))?;
        let gateway = pod_cidr.nth(1).expect("pod CIDR has hosts");
        let mut nl = Netlink::open_in(&ns)?;
        nl.bridge_add("br0")?;
        let br = nl.link_get("br0")?.ok_or_else(|| io::Error::other("br0 vanished"))?.index;
        nl.addr_add(br, gateway, pod_cidr.prefix_len())?;
        nl.link_set_mtu(br, mtu)?;
        nl.link_set_up(br, true)?;
        let mut node = BridgeNode { pods: Vec::new(), ns, gateway };
        for i in 1..=pods {
            let (pod, host_end) = veth_pod(&mut nl, node.ns.name(), i, pod_cidr, mtu, true)?;
            nl.link_set_master(host_end, Some(br))?;
            node.pods.push(pod);
        }
        Ok(node)
    }
}

/// Pod `i` (1-based) of the node whose namespace `nl` talks to, on a veth pair: a fresh
/// namespace `<node>-pod<i>-...` holding `eth0` with address `.1+i` of `pod_cidr`, MTU `mtu`
/// and a default route via the CIDR's first host; the node end `veth<i>`, up, same MTU.
/// With `tx_checksum` false the pod's `eth0` computes checksums itself (for a switch that
/// reads the frames from the node end and cannot complete partial checksums). Returns the pod
/// and the node end's interface index, for the caller to attach to its switch.
pub fn veth_pod(
    nl: &mut Netlink,
    node: &str,
    i: usize,
    pod_cidr: Ipv4Cidr,
    mtu: u32,
    tx_checksum: bool,
) -> io::Result<(Pod, u32)> {
    let gateway = pod_cidr.nth(1).ok_or_else(|| io::Error::other("pod CIDR has no hosts"))?;
    let ip = pod_cidr.nth(1 + i as u32).ok_or_else(|| io::Error::other("pod CIDR too small"))?;
    let pod_ns = netns_with_lo(&unique_name(&format!("{node}-pod{i}")))?;
    let host_end = format!("veth{i}");
    nl.veth_add(&host_end, "eth0", Some(&pod_ns))?;
    let h = nl.link_get(&host_end)?.ok_or_else(|| io::Error::other("veth vanished"))?.index;
    nl.link_set_mtu(h, mtu)?;
    nl.link_set_up(h, true)?;
    let mut pnl = Netlink::open_in(&pod_ns)?;
    let eth0 = pnl.link_get("eth0")?.ok_or_else(|| io::Error::other("eth0 vanished"))?;
    pnl.link_set_mtu(eth0.index, mtu)?;
    pnl.addr_add(eth0.index, ip, pod_cidr.prefix_len())?;
    if !tx_checksum {
        podswitch_sys::ethtool::disable_tx_checksum(&pod_ns, "eth0")?;
    }
    pnl.link_set_up(eth0.index, true)?;
    pnl.route_add(Ipv4Addr::UNSPECIFIED, 0, Some(gateway), eth0.index)?;
    let mac = eth0.mac.map(MacAddr).unwrap_or(MacAddr::ZERO);
    Ok((Pod { name: format!("pod{i}"), ip, mac, ns: pod_ns }, h))
}

/// An underlay network: a namespace holding a bridge that node namespaces plug into with veth
/// pairs, each node getting `ul0` with an address of `192.168.0.0/24` (the nodes' "physical"
/// network).
#[derive(Debug)]
pub struct Underlay {
    /// The underlay namespace (bridge `br0`).
    pub ns: NamedNetNs,
    bridge: u32,
    next: u32,
    /// Queues of the veth pairs [`Underlay::plug`] makes from now on (1 unless set; a node
    /// with an AF_XDP underlay and several workers can use one per worker).
    pub queues: u32,
}

/// The underlay's prefix length.
pub const UNDERLAY_PREFIX: u8 = 24;

/// Underlay address of node `n` (1-based): `192.168.0.n`.
pub fn underlay_ip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(192, 168, 0, n)
}

/// Pod CIDR of node `n`: `10.244.n.0/24`.
pub fn node_pod_cidr(n: u8) -> Ipv4Cidr {
    Ipv4Cidr::new(Ipv4Addr::new(10, 244, n, 0), 24).expect("a valid CIDR")
}

/// Node `n` as an overlay peer of the others (a podswitch node: default VTEP MAC).
pub fn podswitch_peer(n: u8) -> vswitch::config::PeerConfig {
    vswitch::config::PeerConfig::new(&format!("node-{n}"), underlay_ip(n), node_pod_cidr(n), None)
        .expect("a valid peer")
}

impl Underlay {
    /// Creates the underlay namespace and its bridge.
    pub fn build(tag: &str) -> io::Result<Underlay> {
        let ns = netns_with_lo(&unique_name(&format!("{tag}-ul")))?;
        let mut nl = Netlink::open_in(&ns)?;
        nl.bridge_add("br0")?;
        let bridge = nl.link_get("br0")?.ok_or_else(|| io::Error::other("br0 vanished"))?.index;
        nl.link_set_up(bridge, true)?;
        Ok(Underlay { ns, bridge, next: 0, queues: 1 })
    }

    /// Plugs `node` in: a veth pair whose node end is `ul0`, up, with `ip/24` and `mtu`.
    pub fn plug(&mut self, node: &NetNs, ip: Ipv4Addr, mtu: u32) -> io::Result<()> {
        self.next += 1;
        let name = format!("port{}", self.next);
        let mut nl = Netlink::open_in(&self.ns)?;
        if self.queues > 1 {
            nl.veth_add_queues(&name, "ul0", Some(node), self.queues)?;
        } else {
            nl.veth_add(&name, "ul0", Some(node))?;
        }
        let here = nl.link_get(&name)?.ok_or_else(|| io::Error::other("veth vanished"))?.index;
        nl.link_set_mtu(here, mtu)?;
        nl.link_set_master(here, Some(self.bridge))?;
        nl.link_set_up(here, true)?;
        let mut nnl = Netlink::open_in(node)?;
        let ul = nnl.link_get("ul0")?.ok_or_else(|| io::Error::other("ul0 vanished"))?.index;
        nnl.link_set_mtu(ul, mtu)?;
        nnl.addr_add(ul, ip, UNDERLAY_PREFIX)?;
        nnl.link_set_up(ul, true)?;
        Ok(())
    }

    /// Adds `ip/24` to the underlay bridge itself, so the underlay namespace can send on it
    /// (a stranger on the underlay, for tests).
    pub fn add_address(&self, ip: Ipv4Addr) -> io::Result<()> {
        Netlink::open_in(&self.ns)?.addr_add(self.bridge, ip, UNDERLAY_PREFIX)
    }
}

/// Runs a program (`ip`, `bridge`) and turns a failure into an error naming it.
fn run_tool(program: &str, args: &[&str]) -> io::Result<()> {
    let out = Command::new(program).args(args).output().map_err(|e| {
        io::Error::new(e.kind(), format!("{program}: {e} (is iproute2 installed?)"))
    })?;
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

/// A node built the kernel's way for the overlay, as Flannel's vxlan backend programs it: a
/// [`BridgeNode`] plus a `vxlan0` device (VNI, port 4789, no learning) on the underlay, with
/// the node's pod network address `<cidr>.0/32` on it, IP forwarding on, and per peer a
/// static neighbour entry, FDB entry and route. Built with iproute2 (`ip`, `bridge`).
#[derive(Debug)]
pub struct KernelVxlanNode {
    /// The node and its pods.
    pub bridge: BridgeNode,
    /// The MAC of `vxlan0` (what peers must send to).
    pub vtep_mac: MacAddr,
    /// The node's underlay address.
    pub underlay_ip: Ipv4Addr,
}

impl KernelVxlanNode {
    /// Builds the node on `underlay` at `underlay_ip`, with `pods` pods in `pod_cidr` whose
    /// MTU is the underlay's minus 50.
    pub fn build(
        tag: &str,
        underlay: &mut Underlay,
        underlay_ip: Ipv4Addr,
        pod_cidr: Ipv4Cidr,
        pods: usize,
        vni: u32,
        underlay_mtu: u32,
    ) -> io::Result<KernelVxlanNode> {
        let mtu = underlay_mtu - vswitch::config::OVERLAY_OVERHEAD;
        let bridge = BridgeNode::build(tag, pod_cidr, pods, mtu)?;
        underlay.plug(&bridge.ns, underlay_ip, underlay_mtu)?;
        let o = underlay_ip.octets();
        let vtep_mac = MacAddr([0x02, 0x76, 0x78, o[1], o[2], o[3]]);
        let n = bridge.ns.name().to_string();
        run_tool(
            "ip",
            &[
                "-n",
                &n,
                "link",
                "add",
                "vxlan0",
                "address",
                &vtep_mac.to_string(),
                "type",
                "vxlan",
                "id",
                &vni.to_string(),
                "local",
                &underlay_ip.to_string(),
                "dev",
                "ul0",
                "dstport",
                "4789",
                "nolearning",
            ],
        )?;
        run_tool("ip", &["-n", &n, "link", "set", "vxlan0", "mtu", &mtu.to_string(), "up"])?;
        run_tool(
            "ip",
            &["-n", &n, "addr", "add", &format!("{}/32", pod_cidr.network()), "dev", "vxlan0"],
        )?;
        let path = "/proc/sys/net/ipv4/ip_forward";
        bridge.ns.run(move || std::fs::write(path, "1"))??;
        Ok(KernelVxlanNode { bridge, vtep_mac, underlay_ip })
    }

    /// Makes the node complete inner checksums before its packets reach the underlay. On a
    /// veth underlay they would otherwise stay partial (a NIC completes them on real
    /// hardware): fine for another kernel, wrong for a peer that receives VXLAN through a
    /// socket, as podswitch does. Costs the kernel its TSO on the underlay.
    pub fn complete_checksums(&self) -> io::Result<()> {
        podswitch_sys::ethtool::disable_tx_checksum(&self.bridge.ns, "ul0")
    }

    /// Routes `pod_cidr` through the overlay to the node at `ip` whose VTEP answers to `mac`.
    pub fn add_peer(&self, ip: Ipv4Addr, pod_cidr: Ipv4Cidr, mac: MacAddr) -> io::Result<()> {
        let n = self.bridge.ns.name();
        let net = pod_cidr.network().to_string();
        let mac = mac.to_string();
        run_tool(
            "ip",
            &[
                "-n",
                n,
                "neigh",
                "replace",
                &net,
                "lladdr",
                &mac,
                "dev",
                "vxlan0",
                "nud",
                "permanent",
            ],
        )?;
        run_tool(
            "bridge",
            &["-n", n, "fdb", "append", &mac, "dev", "vxlan0", "dst", &ip.to_string()],
        )?;
        run_tool(
            "ip",
            &[
                "-n",
                n,
                "route",
                "replace",
                &pod_cidr.to_string(),
                "via",
                &net,
                "dev",
                "vxlan0",
                "onlink",
            ],
        )
    }
}
