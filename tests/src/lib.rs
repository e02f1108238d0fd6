//! Shared helpers for the behaviour tests: build a node running the switch with pods in fresh
//! namespaces (through `podswitch_lab::topology`), read the switch's state over its control
//! API, and send or watch raw frames on a pod's interface.
//!
//! Every helper cleans up through guards, so a failing assertion (a panic) still removes the
//! namespaces and stops the switch. Names are unique per process and call, so tests run in
//! parallel. A test that is not root prints "skipped: needs root" and passes, the way
//! `ADD_NAMESPACES || return 77` does in OVS's system tests.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use podswitch_lab::topology::PodswitchNode;
use vswitch::config::Config;
pub use vswitch::control::api::PortAddKind;
use vswitch::control::api::{FdbReply, PortStatsReport, Reply, Request, StatsReply};
use vswitch::sys::netlink::Netlink;
use vswitch::sys::netns::NetNs;
use vswitch::wire::MacAddr;

pub use podswitch_lab::topology;
pub use podswitch_lab::traffic;

/// Returns from the test, passing, when not running as root.
#[macro_export]
macro_rules! require_root {
    () => {
        if !vswitch::sys::process::is_root() {
            eprintln!("skipped: needs root");
            return;
        }
    };
}

/// Sets `stop` when dropped: declared first inside a `thread::scope`, it stops the servers
/// when the test body panics too, so the scope's join cannot hang on them.
#[derive(Debug)]
pub struct StopOnDrop<'a>(pub &'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// A TCP server in `ns` on `addr:port` until `stop`: each accepted connection (blocking,
/// with `read_timeout`) is handed to `serve` on a thread of its own in `s`.
pub fn tcp_server_with<'s>(
    s: &'s std::thread::Scope<'s, '_>,
    ns: &'s NetNs,
    addr: Ipv4Addr,
    port: u16,
    stop: &'s AtomicBool,
    read_timeout: Duration,
    serve: impl Fn(TcpStream) + Copy + Send + 's,
) {
    let l = ns.run(move || TcpListener::bind(SocketAddrV4::new(addr, port))).unwrap().unwrap();
    l.set_nonblocking(true).unwrap();
    s.spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match l.accept() {
                Ok((c, _)) => {
                    c.set_nonblocking(false).unwrap();
                    c.set_read_timeout(Some(read_timeout)).unwrap();
                    s.spawn(move || serve(c));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
    });
}

/// The default pod CIDR of test nodes.
pub const POD_CIDR: &str = "10.244.1.0/24";

/// A node running the switch under test with `pods` pods.
pub fn node(exe: &str, pods: usize) -> PodswitchNode {
    node_with(exe, pods, |_| {})
}

/// A node with a modified configuration.
pub fn node_with(exe: &str, pods: usize, edit: impl FnOnce(&mut Config)) -> PodswitchNode {
    node_with_kind(exe, pods, PortAddKind::Tap, edit)
}

/// A node whose pods get ports of `kind` (the scenarios shared by every port kind take it
/// as a parameter).
pub fn node_kind(exe: &str, pods: usize, kind: PortAddKind) -> PodswitchNode {
    node_with_kind(exe, pods, kind, |_| {})
}

/// A node with pods of `kind` and a modified configuration.
pub fn node_with_kind(
    exe: &str,
    pods: usize,
    kind: PortAddKind,
    edit: impl FnOnce(&mut Config),
) -> PodswitchNode {
    PodswitchNode::build_with_kind(exe.as_ref(), "pst", POD_CIDR.parse().unwrap(), pods, kind, edit)
        .unwrap_or_else(|e| panic!("cannot build the test node ({kind} pods): {e}"))
}

/// A node whose pods (attached through the control API) have port security off: for
/// scenarios of stations behind a pod, which send from MACs that are not the pod's own.
pub fn node_unchecked_kind(
    exe: &str,
    pods: usize,
    kind: PortAddKind,
    edit: impl FnOnce(&mut Config),
) -> PodswitchNode {
    let mut n = node_with_kind(exe, 0, kind, edit);
    n.port_security = false;
    for i in 1..=pods {
        n.add_pod(&format!("pod{i}"), None)
            .unwrap_or_else(|e| panic!("cannot add pod{i} ({kind}): {e}"));
    }
    n
}

/// The switch's counters.
pub fn stats(node: &PodswitchNode) -> StatsReply {
    match node.switch.call(&Request::Stats) {
        Ok(Reply::Stats(s)) => s,
        other => panic!("stats: {other:?}"),
    }
}

/// One port's counters.
pub fn port_stats(node: &PodswitchNode, name: &str) -> PortStatsReport {
    stats(node)
        .ports
        .into_iter()
        .find(|p| p.name == name)
        .unwrap_or_else(|| panic!("no port {name}"))
}

/// Drops of `reason` on port `name`.
pub fn drops(node: &PodswitchNode, name: &str, reason: &str) -> u64 {
    port_stats(node, name).drops.get(reason).copied().unwrap_or(0)
}

/// The MAC table.
pub fn fdb(node: &PodswitchNode) -> FdbReply {
    match node.switch.call(&Request::FdbList) {
        Ok(Reply::Fdb(f)) => f,
        other => panic!("fdb list: {other:?}"),
    }
}

/// Pings and asserts every reply came back.
pub fn ping_ok(ns: &NetNs, dst: Ipv4Addr) {
    let r = traffic::ping(ns, dst, 3, Duration::from_millis(50), Duration::from_secs(3))
        .unwrap_or_else(|e| panic!("ping {dst}: {e}"));
    assert_eq!(r.received, r.sent, "ping {dst}: {}/{} replies", r.received, r.sent);
}

/// Polls `f` every 20 ms until it is true or `timeout` passes; returns its last value.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The MAC a namespace's ARP cache holds for `ip`, if any (read from
/// `/proc/thread-self/net/arp` inside the namespace).
pub fn arp_cache_entry(ns: &NetNs, ip: Ipv4Addr) -> Option<MacAddr> {
    let text = ns.run(|| std::fs::read_to_string("/proc/thread-self/net/arp")).ok()?.ok()?;
    text.lines().skip(1).find_map(|l| {
        let cols: Vec<&str> = l.split_whitespace().collect();
        (cols.first()? == &ip.to_string() && cols.get(2)? != &"0x0")
            .then(|| cols.get(3)?.parse().ok())?
    })
}

/// The tcx programs on the egress of the pod's interface `eth0` in `ns`, where the switch
/// attaches an AF_XDP pod's queue-steering program; an `InvalidInput` error on a kernel
/// without tcx.
pub fn pod_egress_programs(ns: &NetNs) -> io::Result<Vec<u32>> {
    use vswitch::sys::bpf::{tcx_prog_ids, TcxDirection};
    ns.run(|| {
        let eth0 = Netlink::open()?
            .link_get("eth0")?
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no eth0"))?;
        tcx_prog_ids(eth0.index, TcxDirection::Egress)
    })?
}

/// Interface names inside a namespace.
pub fn links(ns: &NetNs) -> Vec<String> {
    let mut nl = Netlink::open_in(ns).expect("netlink");
    nl.link_list().expect("link list").into_iter().map(|l| l.name).collect()
}

/// An `AF_PACKET` raw socket on one interface of a namespace: sends frames exactly as given
/// (the kernel adds nothing) and receives every frame the interface sees.
#[derive(Debug)]
pub struct RawSocket {
    fd: OwnedFd,
    ifindex: i32,
}

const ETH_P_ALL: u16 = 0x0003;

impl RawSocket {
    /// Opens the socket inside `ns`, bound to `ifname`.
    pub fn open(ns: &NetNs, ifname: &str) -> io::Result<RawSocket> {
        let ifname = ifname.to_string();
        ns.run(move || -> io::Result<RawSocket> {
            let ifindex = Netlink::open()?
                .link_get(&ifname)?
                .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, ifname.clone()))?
                .index as i32;
            // SAFETY: plain socket(2) call; the returned fd is checked and owned at once.
            let raw = unsafe {
                libc::socket(
                    libc::AF_PACKET,
                    libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                    i32::from(ETH_P_ALL.to_be()),
                )
            };
            if raw < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: `raw` is a fresh, valid fd nobody else owns.
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            let sock = RawSocket { fd, ifindex };
            let addr = sock.sockaddr();
            // SAFETY: `addr` is a valid sockaddr_ll and the length matches its type.
            let rc = unsafe {
                libc::bind(
                    sock.fd.as_raw_fd(),
                    (&addr as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(sock)
        })?
    }

    fn sockaddr(&self) -> libc::sockaddr_ll {
        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
        let mut a: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        a.sll_family = libc::AF_PACKET as u16;
        a.sll_protocol = ETH_P_ALL.to_be();
        a.sll_ifindex = self.ifindex;
        a
    }

    /// Sends one frame.
    pub fn send(&self, frame: &[u8]) -> io::Result<usize> {
        let addr = self.sockaddr();
        // SAFETY: the buffer and address are valid for the given lengths during the call.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// Counts received frames for which `matches` holds, for `duration`.
    pub fn count_for(&self, duration: Duration, matches: impl Fn(&[u8]) -> bool) -> usize {
        let mut n = 0;
        self.each_for(duration, |f| {
            if matches(f) {
                n += 1;
            }
        });
        n
    }

    /// Hands every frame received during `duration` to `f`.
    pub fn each_for(&self, duration: Duration, mut f: impl FnMut(&[u8])) {
        let deadline = Instant::now() + duration;
        let mut buf = vec![0u8; 65536];
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let mut pfd =
                libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            let ms = left.as_millis().clamp(1, 1000) as i32;
            // SAFETY: `pfd` is a valid pollfd array of length 1 for the call.
            if unsafe { libc::poll(&mut pfd, 1, ms) } <= 0 {
                continue;
            }
            // SAFETY: `buf` is valid for writes of its length.
            let len = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if len > 0 {
                f(&buf[..len as usize]);
            }
        }
    }
}

/// An Ethernet header.
pub fn eth(dst: MacAddr, src: MacAddr, ethertype: u16) -> Vec<u8> {
    let mut v = Vec::with_capacity(64);
    v.extend_from_slice(&dst.0);
    v.extend_from_slice(&src.0);
    v.extend_from_slice(&ethertype.to_be_bytes());
    v
}

/// A minimal valid IPv4/UDP packet (checksums filled) as bytes after the Ethernet header.
pub fn ipv4_udp(src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
    let total = 20 + 8 + payload.len();
    let mut v = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0];
    v[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    v.extend_from_slice(&src.octets());
    v.extend_from_slice(&dst.octets());
    let csum = vswitch::wire::checksum::checksum(&v);
    v[10..12].copy_from_slice(&csum.to_be_bytes());
    v.extend_from_slice(&1234u16.to_be_bytes());
    v.extend_from_slice(&5678u16.to_be_bytes());
    v.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    v.extend_from_slice(&[0, 0]);
    v.extend_from_slice(payload);
    v
}

/// A locally administered unicast MAC numbered `n` (for injected test stations).
pub fn test_mac(n: u32) -> MacAddr {
    let b = n.to_be_bytes();
    MacAddr([0x02, 0xee, b[0], b[1], b[2], b[3]])
}
