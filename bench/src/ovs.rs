//! Open vSwitch as a benchmark peer: the same-node topology of [`BridgeNode`], switched by
//! OVS's userspace (`netdev`) datapath instead of the kernel bridge, since OVS's kernel module
//! is not available on the machines we benchmark on.
//!
//! This module owns a private OVS instance per node: an `ovsdb-server` and an `ovs-vswitchd`
//! started inside the node namespace, not daemonized, with their database, sockets, pidfiles
//! and logs in a scratch directory (`OVS_RUNDIR` and friends point there too, so nothing
//! touches the system's OVS). Both are stopped by PID when the node is dropped. The system's
//! OVS service is never started or contacted.
//!
//! Pods sit on veth pairs whose node ends are OVS ports: `afxdp` when the build supports it
//! and the MTU fits its frames, otherwise `system` ports (AF_PACKET). Neither completes the
//! partial checksums a veth hands over (TCP from a pod would arrive with bad checksums and be
//! dropped), so each pod's `eth0` has TX checksum offload turned off. The bridge has no
//! controller and standalone fail mode, so its flow table is the single `NORMAL` flow; its
//! internal port `br0` carries the gateway address, as the Linux bridge does in `BridgeNode`.
//!
//! [`BridgeNode`]: podswitch_lab::topology::BridgeNode

use std::io::{self, Read, Seek, SeekFrom};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use podswitch_lab::topology::{
    netns_with_lo, unique_name, veth_pod, Pod, ScratchDir, STOP_TIMEOUT,
};
use vswitch::cidr::Ipv4Cidr;
use vswitch::sys::netlink::Netlink;
use vswitch::sys::netns::{NamedNetNs, NetNs};
use vswitch::sys::process::send_signal;

/// How long the database, the bridge and its ports have to come up.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// The largest MTU OVS accepts on an `afxdp` port: its 4 KiB umem frame less OVS's and
/// XDP's headroom and a VLAN Ethernet header (`netdev_afxdp_verify_mtu_size`). Above it the
/// kernel interface keeps its MTU but OVS drops longer frames, so pods use `system` ports.
const AFXDP_MAX_MTU: u32 = 4096 - 128 - 256 - 18;

/// `--timeout` for every `ovs-vsctl` call, in seconds.
const VSCTL_TIMEOUT_SECS: u32 = 10;

/// The bridge, and its internal interface in the node namespace.
const BRIDGE: &str = "br0";

/// The OVS database schema the private database is created from.
const SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";

/// Where the OVS programs live.
#[derive(Debug, Clone)]
struct Binaries {
    ovsdb_server: PathBuf,
    vswitchd: PathBuf,
    vsctl: PathBuf,
    ovsdb_tool: PathBuf,
    schema: PathBuf,
}

fn find_program(name: &str, extra_dirs: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/bin"].iter().map(PathBuf::from))
        .chain(extra_dirs.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

impl Binaries {
    fn locate() -> Result<Binaries, String> {
        let mut missing = Vec::new();
        let mut find = |name: &str, extra: &[&str]| {
            find_program(name, extra).unwrap_or_else(|| {
                missing.push(name.to_string());
                PathBuf::new()
            })
        };
        let ovsdb_server = find("ovsdb-server", &[]);
        let vswitchd = find("ovs-vswitchd", &["/usr/lib/openvswitch-switch"]);
        let vsctl = find("ovs-vsctl", &[]);
        let ovsdb_tool = find("ovsdb-tool", &[]);
        let schema = PathBuf::from(SCHEMA);
        if !schema.is_file() {
            missing.push(SCHEMA.to_string());
        }
        if missing.is_empty() {
            Ok(Binaries { ovsdb_server, vswitchd, vsctl, ovsdb_tool, schema })
        } else {
            Err(format!("Open vSwitch not installed: missing {}", missing.join(", ")))
        }
    }
}

/// True (`Ok`) when `ovsdb-server`, `ovs-vswitchd`, `ovs-vsctl`, `ovsdb-tool` and the
/// `vswitch` schema are all found; the error names what is missing.
pub fn installed() -> Result<(), String> {
    Binaries::locate().map(|_| ())
}

/// A non-daemonized OVS process, stopped by its PID on drop (SIGTERM, then SIGKILL after
/// [`STOP_TIMEOUT`]).
#[derive(Debug)]
struct Daemon {
    child: Option<Child>,
    name: &'static str,
    log: PathBuf,
}

impl Daemon {
    /// Spawns `exe args` on a thread inside `ns`, so the process lives in that namespace.
    fn spawn(
        ns: &NetNs,
        name: &'static str,
        exe: &Path,
        args: Vec<String>,
        dir: &Path,
    ) -> io::Result<Daemon> {
        let out = std::fs::File::create(dir.join(format!("{name}.out")))?;
        let mut cmd = Command::new(exe);
        cmd.args(&args).stdin(Stdio::null()).stdout(out.try_clone()?).stderr(out);
        ovs_env(&mut cmd, dir);
        let child = ns.run(move || cmd.spawn())?.map_err(|e| {
            io::Error::new(e.kind(), format!("cannot start {}: {e}", exe.display()))
        })?;
        Ok(Daemon { child: Some(child), name, log: dir.join(format!("{name}.log")) })
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// An error when the process has exited.
    fn check_alive(&mut self) -> io::Result<()> {
        let Some(child) = self.child.as_mut() else {
            return Err(io::Error::other(format!("{} was stopped", self.name)));
        };
        match child.try_wait()? {
            None => Ok(()),
            Some(status) => Err(io::Error::other(format!(
                "{} exited ({status}); log tail:\n{}",
                self.name,
                self.log_tail()
            ))),
        }
    }

    /// The last lines of the process's log file.
    fn log_tail(&self) -> String {
        tail_of(&self.log, 4096)
    }

    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        if let Ok(None) = child.try_wait() {
            let _ = send_signal(child.id(), libc::SIGTERM);
            let deadline = Instant::now() + STOP_TIMEOUT;
            while Instant::now() < deadline {
                if !matches!(child.try_wait(), Ok(None)) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
            }
        }
        let _ = child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The last `max` bytes of a file, from a line start when there is one.
fn tail_of(path: &Path, max: u64) -> String {
    let mut s = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = f.seek(SeekFrom::Start(len.saturating_sub(max)));
        let mut buf = Vec::new();
        let _ = f.read_to_end(&mut buf);
        s = String::from_utf8_lossy(&buf).into_owned();
        if len > max {
            if let Some(i) = s.find('\n') {
                s.drain(..=i);
            }
        }
    }
    s
}

/// Points every OVS default directory into `dir`, so that nothing falls back to the system's.
fn ovs_env(cmd: &mut Command, dir: &Path) {
    for var in ["OVS_RUNDIR", "OVS_LOGDIR", "OVS_DBDIR", "OVS_SYSCONFDIR"] {
        cmd.env(var, dir);
    }
}

/// `ovs-vsctl` bound to one private database.
#[derive(Debug)]
struct Vsctl {
    exe: PathBuf,
    db: String,
    dir: PathBuf,
}

impl Vsctl {
    /// Runs `ovs-vsctl --db=... --timeout=... args`; returns its trimmed stdout.
    fn run(&self, args: &[&str]) -> io::Result<String> {
        let mut cmd = Command::new(&self.exe);
        cmd.arg(format!("--db={}", self.db))
            .arg(format!("--timeout={VSCTL_TIMEOUT_SECS}"))
            .args(args)
            .stdin(Stdio::null());
        ovs_env(&mut cmd, &self.dir);
        let out = cmd.output()?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "ovs-vsctl {} failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// One column of one Interface row, as `ovs-vsctl get` prints it.
    fn interface(&self, name: &str, column: &str) -> io::Result<String> {
        self.run(&["get", "Interface", name, column])
    }
}

/// What an OVS interface reports about itself.
#[derive(Debug)]
enum PortState {
    Ready,
    Pending,
    Failed(String),
}

/// The state of interface `name`; with `need_link`, ready also means its link is up.
fn port_state(vsctl: &Vsctl, name: &str, need_link: bool) -> io::Result<PortState> {
    let error = vsctl.interface(name, "error")?;
    if error != "[]" {
        return Ok(PortState::Failed(error));
    }
    let ofport: i64 = vsctl.interface(name, "ofport")?.parse().unwrap_or(0);
    if ofport == -1 {
        return Ok(PortState::Failed("ofport -1".into()));
    }
    let up = !need_link || vsctl.interface(name, "link_state")? == "up";
    Ok(if ofport > 0 && up { PortState::Ready } else { PortState::Pending })
}

/// Same-node topology switched by Open vSwitch (userspace datapath): pods on veth pairs
/// whose node ends are ports of bridge `br0`, the gateway on `br0`'s internal port. Dropping
/// it stops `ovs-vswitchd`, then `ovsdb-server`, then deletes the namespaces and the scratch
/// directory (field order).
#[derive(Debug)]
pub struct OvsNode {
    vswitchd: Daemon,
    ovsdb: Daemon,
    /// The pods, at `.2`, `.3`, ... of the pod CIDR.
    pub pods: Vec<Pod>,
    /// The node namespace, where OVS runs and the bridge lives.
    pub ns: NamedNetNs,
    /// The gateway (the address of `br0`'s internal port).
    pub gateway: Ipv4Addr,
    /// The OVS interface type of the pod ports: `"afxdp"`, or `"system"` when this build has
    /// no AF_XDP, the MTU is above what its frames hold, or the first `afxdp` port failed.
    pub port_kind: String,
    #[cfg_attr(not(test), allow(dead_code, reason = "held for its Drop"))]
    dir: ScratchDir,
}

impl OvsNode {
    /// Builds the node with `pods` pods at `.2`, `.3`, ... of `pod_cidr`, every link at `mtu`,
    /// and returns once the bridge and every port are up.
    pub fn build(tag: &str, pod_cidr: Ipv4Cidr, pods: usize, mtu: u32) -> io::Result<OvsNode> {
        OvsNode::build_with(tag, pod_cidr, pods, mtu, true)
    }

    /// [`OvsNode::build`], trying `afxdp` pod ports only when `try_afxdp`.
    fn build_with(
        tag: &str,
        pod_cidr: Ipv4Cidr,
        pods: usize,
        mtu: u32,
        try_afxdp: bool,
    ) -> io::Result<OvsNode> {
        let bins = Binaries::locate().map_err(|e| io::Error::new(io::ErrorKind::NotFound, e))?;
        let gateway = pod_cidr.nth(1).ok_or_else(|| io::Error::other("pod CIDR has no hosts"))?;
        let dir = ScratchDir::new(&format!("{tag}-ovs"))?;
        let ns = netns_with_lo(&unique_name(&format!("{tag}-node")))?;
        let path = |name: &str| dir.path().join(name).display().to_string();
        let deadline = Instant::now() + READY_TIMEOUT;

        let db_file = path("conf.db");
        let out = Command::new(&bins.ovsdb_tool)
            .arg("create")
            .arg(&db_file)
            .arg(&bins.schema)
            .stdin(Stdio::null())
            .output()?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "ovsdb-tool create failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let db_sock = path("db.sock");
        let mut ovsdb = Daemon::spawn(
            &ns,
            "ovsdb-server",
            &bins.ovsdb_server,
            vec![
                db_file,
                format!("--remote=punix:{db_sock}"),
                format!("--pidfile={}", path("ovsdb-server.pid")),
                format!("--log-file={}", path("ovsdb-server.log")),
                format!("--unixctl={}", path("ovsdb-server.ctl")),
            ],
            dir.path(),
        )?;
        let vsctl = Vsctl {
            exe: bins.vsctl.clone(),
            db: format!("unix:{db_sock}"),
            dir: dir.path().to_path_buf(),
        };
        loop {
            ovsdb.check_alive()?;
            match vsctl.run(&["--no-wait", "init"]) {
                Ok(_) => break,
                Err(e) if Instant::now() > deadline => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("ovsdb-server not ready: {e}; log tail:\n{}", ovsdb.log_tail()),
                    ))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        let vswitchd = Daemon::spawn(
            &ns,
            "ovs-vswitchd",
            &bins.vswitchd,
            vec![
                format!("unix:{db_sock}"),
                format!("--pidfile={}", path("ovs-vswitchd.pid")),
                format!("--log-file={}", path("ovs-vswitchd.log")),
                format!("--unixctl={}", path("ovs-vswitchd.ctl")),
            ],
            dir.path(),
        )?;
        let mut node = OvsNode {
            vswitchd,
            ovsdb,
            pods: Vec::new(),
            ns,
            gateway,
            port_kind: String::new(),
            dir,
        };
        node.setup(&vsctl, pod_cidr, pods, mtu, try_afxdp, deadline).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("{e}\novs-vswitchd log tail:\n{}", node.vswitchd.log_tail()),
            )
        })?;
        Ok(node)
    }

    fn setup(
        &mut self,
        vsctl: &Vsctl,
        pod_cidr: Ipv4Cidr,
        pods: usize,
        mtu: u32,
        try_afxdp: bool,
        deadline: Instant,
    ) -> io::Result<()> {
        let mtu_request = format!("mtu_request={mtu}");
        vsctl.run(&[
            "add-br",
            BRIDGE,
            "--",
            "set",
            "Bridge",
            BRIDGE,
            "datapath_type=netdev",
            "fail_mode=standalone",
            "--",
            "set",
            "Interface",
            BRIDGE,
            &mtu_request,
        ])?;
        self.wait_port(vsctl, BRIDGE, false, deadline)?;
        let mut nl = Netlink::open_in(&self.ns)?;
        let br = nl
            .link_get(BRIDGE)?
            .ok_or_else(|| io::Error::other("the bridge's internal port is not in the node"))?
            .index;
        nl.addr_add(br, self.gateway, pod_cidr.prefix_len())?;
        nl.link_set_up(br, true)?;
        self.wait_port(vsctl, BRIDGE, true, deadline)?;

        let types = vsctl.run(&["get", "Open_vSwitch", ".", "iface_types"])?;
        let afxdp = try_afxdp
            && mtu <= AFXDP_MAX_MTU
            && types.trim_matches(['[', ']']).split(',').any(|t| t.trim() == "afxdp");
        self.port_kind = if afxdp { "afxdp" } else { "system" }.to_string();

        for i in 1..=pods {
            let (pod, _) = veth_pod(&mut nl, self.ns.name(), i, pod_cidr, mtu, false)?;
            self.pods.push(pod);
            self.add_port(vsctl, &format!("veth{i}"), &mtu_request, deadline)?;
        }
        Ok(())
    }

    /// Adds `name` as a port of kind [`OvsNode::port_kind`]; when the first `afxdp` port
    /// fails, falls back to `system` ports for it and every later one.
    fn add_port(
        &mut self,
        vsctl: &Vsctl,
        name: &str,
        mtu_request: &str,
        deadline: Instant,
    ) -> io::Result<()> {
        let add = |kind: &str| {
            let kind = format!("type={kind}");
            vsctl.run(&[
                "add-port",
                BRIDGE,
                name,
                "--",
                "set",
                "Interface",
                name,
                &kind,
                mtu_request,
            ])
        };
        add(&self.port_kind)?;
        match self.wait_port(vsctl, name, true, deadline) {
            Err(e) if self.port_kind == "afxdp" && self.pods.len() == 1 => {
                vsctl.run(&["del-port", BRIDGE, name])?;
                self.port_kind = "system".to_string();
                add(&self.port_kind)?;
                self.wait_port(vsctl, name, true, deadline)
                    .map_err(|e2| io::Error::new(e2.kind(), format!("afxdp: {e}; system: {e2}")))
            }
            r => r,
        }
    }

    /// Polls until interface `name` has an OpenFlow port number and, with `need_link`, its
    /// link is up.
    fn wait_port(
        &mut self,
        vsctl: &Vsctl,
        name: &str,
        need_link: bool,
        deadline: Instant,
    ) -> io::Result<()> {
        loop {
            self.vswitchd.check_alive()?;
            let state = port_state(vsctl, name, need_link)?;
            match state {
                PortState::Ready => return Ok(()),
                PortState::Failed(e) => {
                    return Err(io::Error::other(format!("OVS interface {name} failed: {e}")))
                }
                PortState::Pending if Instant::now() > deadline => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("OVS interface {name} not up within {READY_TIMEOUT:?}"),
                    ))
                }
                PortState::Pending => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// PID of `ovs-vswitchd` (all of OVS's datapath threads are in it).
    pub fn vswitchd_pid(&self) -> u32 {
        self.vswitchd.pid()
    }

    /// The scratch directory: database, sockets, pidfiles and logs.
    #[cfg(test)]
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for OvsNode {
    fn drop(&mut self) {
        self.vswitchd.stop();
        self.ovsdb.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use podswitch_lab::traffic::{self, Endpoint};
    use vswitch::sys::netns::NETNS_RUN_DIR;
    use vswitch::sys::process::is_root;

    /// Builds a 2-pod node, checks pod-to-pod and pod-to-gateway traffic, then that dropping
    /// it leaves no process, namespace or directory behind.
    fn check_node(try_afxdp: bool, mtu: u32, expect_kind: &str) {
        if !is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        if let Err(e) = installed() {
            eprintln!("skipped: {e}");
            return;
        }
        let cidr: Ipv4Cidr = "10.244.7.0/24".parse().unwrap();
        let node = OvsNode::build_with("ovst", cidr, 2, mtu, try_afxdp).unwrap();
        assert_eq!(node.port_kind, expect_kind);
        let pid = node.vswitchd_pid();
        let ns_name = node.ns.name().to_string();
        let (pod1, pod2) = (&node.pods[0], &node.pods[1]);
        let ping =
            traffic::ping(&pod1.ns, pod2.ip, 3, Duration::from_millis(50), Duration::from_secs(5))
                .unwrap();
        assert!(ping.all_received(), "{ping:?}");
        let gw = traffic::ping(
            &pod1.ns,
            node.gateway,
            3,
            Duration::from_millis(50),
            Duration::from_secs(5),
        )
        .unwrap();
        assert!(gw.all_received(), "gateway: {gw:?}");
        let tp = traffic::tcp_throughput(
            Endpoint { ns: &pod2.ns, addr: pod2.ip },
            &pod1.ns,
            1,
            Duration::from_secs(1),
        )
        .unwrap();
        println!(
            "OVS ({} ports, MTU {mtu}) pod1 -> pod2: {:.2} Gbit/s",
            node.port_kind,
            tp.gbit_per_sec()
        );
        assert!(tp.bytes > 0);
        let dir = node.dir().to_path_buf();
        drop(node);
        assert!(send_signal(pid, 0).is_err(), "ovs-vswitchd {pid} still exists");
        assert!(!Path::new(NETNS_RUN_DIR).join(&ns_name).exists(), "{ns_name} left behind");
        assert!(!dir.exists(), "{} left behind", dir.display());
    }

    #[test]
    fn ovs_node_switches_pod_traffic() {
        check_node(true, 1500, "afxdp");
    }

    #[test]
    fn ovs_node_with_system_ports() {
        check_node(false, 1500, "system");
    }

    #[test]
    fn jumbo_mtu_uses_system_ports() {
        check_node(true, 9000, "system");
    }
}
