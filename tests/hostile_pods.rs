//! Hostile pods: frames a pod with `CAP_NET_RAW` can write into its interface must not hurt
//! the switch, the node or any other pod. Real namespaces, real frames, both port kinds.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use podswitch_tests::topology::PodswitchNode;
use podswitch_tests::*;
use vswitch::control::api::{
    Algorithm, Endpoint, L4Proto, PortAddKind, Reply, Request, ServiceSpec, StatusReply,
};
use vswitch::sys::netns::NetNs;
use vswitch::wire::MacAddr;

const EXE: &str = env!("CARGO_BIN_EXE_psw-test-switch");
const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 30);

fn call(n: &PodswitchNode, req: Request) -> Reply {
    n.switch.call(&req).unwrap_or_else(|e| panic!("{req:?}: {e}"))
}

fn status(n: &PodswitchNode) -> StatusReply {
    match call(n, Request::Status) {
        Reply::Status(s) => s,
        other => panic!("status: {other:?}"),
    }
}

/// A TCP echo server in `ns` on `addr:port` until `stop`.
fn echo_server<'s>(
    s: &'s std::thread::Scope<'s, '_>,
    ns: &'s NetNs,
    addr: Ipv4Addr,
    port: u16,
    stop: &'s AtomicBool,
) {
    tcp_server_with(s, ns, addr, port, stop, Duration::from_millis(200), move |mut c| {
        let mut b = [0u8; 2048];
        while !stop.load(Ordering::Relaxed) {
            match c.read(&mut b) {
                Ok(0) => break,
                Ok(n) if c.write_all(&b[..n]).is_ok() => {}
                Ok(_) => break,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => break,
            }
        }
    });
}

/// Sends `round`'s 256-byte pattern and checks it comes back intact.
fn echo_round(c: &mut TcpStream, round: u32) -> std::io::Result<()> {
    let msg: Vec<u8> = (0..256u32).map(|i| (i.wrapping_mul(31) ^ round) as u8).collect();
    c.write_all(&msg)?;
    let mut back = vec![0u8; msg.len()];
    c.read_exact(&mut back)?;
    if back != msg {
        return Err(std::io::Error::other(format!("round {round}: echo differs")));
    }
    Ok(())
}

/// An ICMP destination unreachable (port unreachable) from `src` to `dst`, whose data is
/// `quote` exactly as given, addressed to the gateway MAC.
fn icmp_unreachable(
    gw_mac: MacAddr,
    src_mac: MacAddr,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    quote: &[u8],
) -> Vec<u8> {
    let mut f = eth(gw_mac, src_mac, 0x0800);
    let total = (20 + 8 + quote.len()) as u16;
    let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 1, 0, 0];
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let c = vswitch::wire::checksum::checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut icmp = vec![3, 3, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(quote);
    let c = vswitch::wire::checksum::checksum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&icmp);
    f
}

/// The IPv4 + TCP header the endpoint received for the connection client:cport ->
/// endpoint:8080, as its kernel would quote it (20 + 8 bytes).
fn quoted_tcp(client: Ipv4Addr, cport: u16, endpoint: Ipv4Addr) -> Vec<u8> {
    let mut q = vec![0x45, 0, 0, 60, 0, 0, 0x40, 0, 63, 6, 0, 0];
    q.extend_from_slice(&client.octets());
    q.extend_from_slice(&endpoint.octets());
    let c = vswitch::wire::checksum::checksum(&q);
    q[10..12].copy_from_slice(&c.to_be_bytes());
    q.extend_from_slice(&cport.to_be_bytes());
    q.extend_from_slice(&8080u16.to_be_bytes());
    q.extend_from_slice(&[0, 0, 0, 1]);
    q
}

/// Item 1 of the hostile-pods issue: ICMP errors whose quoted IPv4 header has every IHL
/// (0-15) and every truncation, sent by the endpoint pod while conntrack holds a live Service
/// connection. The switch must stay up, every pod keep its eth0, and the connection keep
/// carrying verified data, during the storm and after it.
fn icmp_quote_storm(kind: PortAddKind, workers: usize) {
    let n = node_with_kind(EXE, 3, kind, |c| c.worker.count = workers);
    let (client, endpoint, other) = (&n.pods[0], &n.pods[1], &n.pods[2]);
    let ep = Endpoint { ip: endpoint.ip, port: 8080, ready: true, terminating: false, weight: 1 };
    call(
        &n,
        Request::ServiceAdd(ServiceSpec {
            name: "echo".into(),
            namespace: "default".into(),
            vip: VIP,
            port: 80,
            proto: L4Proto::Tcp,
            endpoints: vec![ep],
            algorithm: Algorithm::Maglev,
            session_affinity_secs: None,
            node_port: None,
        }),
    );
    let gw_mac = n.config.node.gateway_mac;
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        echo_server(s, &endpoint.ns, endpoint.ip, 8080, &stop);
        let to = SocketAddrV4::new(VIP, 80);
        let mut c = client
            .ns
            .run(move || TcpStream::connect_timeout(&to.into(), Duration::from_secs(3)))
            .unwrap()
            .expect("connect through the VIP");
        c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        echo_round(&mut c, 0).expect("the connection works before the storm");
        let cport = c.local_addr().unwrap().port();
        let good = quoted_tcp(client.ip, cport, endpoint.ip);
        let mut frames = Vec::new();
        for ihl in 0..16u8 {
            for cut in 0..=good.len() + 16 {
                let mut q = good.clone();
                q[0] = 0x40 | ihl;
                q.resize(cut, 0xa5);
                frames.push(icmp_unreachable(gw_mac, endpoint.mac, endpoint.ip, client.ip, &q));
            }
        }
        let tx = RawSocket::open(&endpoint.ns, "eth0").unwrap();
        let storm = s.spawn(move || {
            for round in 0..3 {
                for f in &frames {
                    tx.send(f).unwrap();
                }
                std::thread::sleep(Duration::from_millis(20 * round));
            }
            frames.len() * 3
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut round = 1;
        while !storm.is_finished() && Instant::now() < deadline {
            echo_round(&mut c, round).expect("the connection carries data during the storm");
            round += 1;
        }
        let sent = storm.join().unwrap();
        for r in round..round + 20 {
            echo_round(&mut c, r).expect("the connection carries data after the storm");
        }
        eprintln!(
            "{kind} pods, {workers} workers: {sent} crafted ICMP errors, {round} echo rounds"
        );
    });
    let st = status(&n);
    assert!(st.workers_down.is_empty(), "workers down: {st:?}");
    assert_eq!(st.worker_panics, 0, "no frame made the pipeline panic");
    for p in [client, endpoint, other] {
        assert!(links(&p.ns).iter().any(|l| l == "eth0"), "{} lost eth0", p.name);
    }
    ping_ok(&client.ns, other.ip);
}

#[test]
fn icmp_quote_storm_with_conntrack_populated_tap_one_worker() {
    require_root!();
    icmp_quote_storm(PortAddKind::Tap, 1);
}

#[test]
fn icmp_quote_storm_with_conntrack_populated_tap_two_workers() {
    require_root!();
    icmp_quote_storm(PortAddKind::Tap, 2);
}

#[test]
fn icmp_quote_storm_with_conntrack_populated_afxdp_two_workers() {
    require_root!();
    icmp_quote_storm(PortAddKind::Afxdp, 2);
}

/// Item 6 of the hostile-pods issue, control socket: 64 idle connections (and a slow one
/// mid-line) must not lock out a new client, a CNI call among them; a line past the limit
/// is refused without the daemon keeping it; a user other than root is refused by
/// `SO_PEERCRED` even when the socket's mode lets it connect.
#[test]
fn idle_and_oversized_control_clients_lock_nobody_out() {
    require_root!();
    let mut n = node(EXE, 1);
    let socket = n.switch.socket().to_path_buf();
    let mut idle = Vec::new();
    for _ in 0..64 {
        idle.push(std::os::unix::net::UnixStream::connect(&socket).unwrap());
    }
    // One more mid-way through a (never finished) request line.
    let mut slow = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    slow.write_all(b"{\"command\":").unwrap();
    for i in 0..5 {
        let st = status(&n);
        assert!(st.workers_down.is_empty(), "round {i}: {st:?}");
    }
    // Attaching a pod (a port add, as CNI ADD does) through a fresh connection still works.
    n.add_pod("late", None).expect("a pod attached while 65 clients sit idle");
    assert_eq!(status(&n).ports, 3, "host port and both pods");
    // An oversized line: refused, connection closed, the switch still answers.
    let mut big = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    big.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let chunk = vec![b' '; 1 << 20];
    let mut refused = false;
    for _ in 0..80 {
        if big.write_all(&chunk).is_err() {
            refused = true;
            break;
        }
    }
    let mut answer = String::new();
    let _ = big.read_to_string(&mut answer);
    assert!(refused || answer.contains("longer than"), "oversized line accepted: {answer}");
    assert!(status(&n).workers_down.is_empty());
    // Another user, even with the socket opened up to everyone.
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = std::process::Command::new(EXE)
        .args(["ctl", "--json", "--socket"])
        .arg(&socket)
        .arg("status")
        .uid(65_534)
        .gid(65_534)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "nobody was served: {text}");
    assert!(text.contains("permission_denied") || text.contains("may not use"), "{text}");
    drop(idle);
}
