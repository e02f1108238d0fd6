//! Fair shares under pressure (the hostile-pods issue, items 6 and 8): one pod cannot take
//! the conntrack table or the DNS responder's TCP connections from the others; `port add`
//! refuses namespaces that are not a pod's without blocking the control plane; the control
//! socket admits a configured group; the running switch holds only the capabilities it
//! uses. Real namespaces and packets, both port kinds where ports are involved.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use podswitch_tests::topology::PodswitchNode;
use podswitch_tests::*;
use vswitch::control::api::{
    Algorithm, Endpoint, L4Proto, PortAddArgs, PortAddKind, PortDelArgs, Reply, Request,
    ServiceSpec,
};
use vswitch::control::client::ClientError;
use vswitch::sys::netns::NetNs;

const EXE: &str = env!("CARGO_BIN_EXE_psw-test-switch");
const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 40);

fn call(n: &PodswitchNode, req: Request) -> Reply {
    n.switch.call(&req).unwrap_or_else(|e| panic!("{req:?}: {e}"))
}

fn service(n: &PodswitchNode, name: &str, port: u16, proto: L4Proto, ep: Ipv4Addr, eport: u16) {
    let endpoints =
        vec![Endpoint { ip: ep, port: eport, ready: true, terminating: false, weight: 1 }];
    call(
        n,
        Request::ServiceAdd(ServiceSpec {
            name: name.into(),
            namespace: "default".into(),
            vip: VIP,
            port,
            proto,
            endpoints,
            algorithm: Algorithm::Maglev,
            session_affinity_secs: None,
            node_port: None,
        }),
    );
}

/// Sets the flag when dropped, so servers stop when the test body panics too.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// A TCP server in `ns` on `addr:port` answering each connection's first 4 bytes with
/// them reversed, until `stop`.
fn reverse_server<'s>(
    s: &'s std::thread::Scope<'s, '_>,
    ns: &NetNs,
    addr: Ipv4Addr,
    port: u16,
    stop: &'s AtomicBool,
) {
    let l = ns.run(move || TcpListener::bind(SocketAddrV4::new(addr, port))).unwrap().unwrap();
    l.set_nonblocking(true).unwrap();
    s.spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match l.accept() {
                Ok((mut c, _)) => {
                    c.set_nonblocking(false).unwrap();
                    c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                    let mut b = [0u8; 4];
                    if c.read_exact(&mut b).is_ok() {
                        b.reverse();
                        let _ = c.write_all(&b);
                    }
                }
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
    });
}

/// A connection through the VIP from `ns`, checked end to end.
fn vip_round(ns: &NetNs, port: u16) -> std::io::Result<()> {
    let to = SocketAddrV4::new(VIP, port);
    let mut c =
        ns.run(move || TcpStream::connect_timeout(&to.into(), Duration::from_secs(3)))??;
    c.set_read_timeout(Some(Duration::from_secs(3)))?;
    c.write_all(b"abcd")?;
    let mut b = [0u8; 4];
    c.read_exact(&mut b)?;
    if &b != b"dcba" {
        return Err(std::io::Error::other(format!("answer {b:?}")));
    }
    Ok(())
}

/// `flows` UDP datagrams from `ns` to the VIP, each from its own source port (a new
/// connection each).
fn udp_flood(ns: &NetNs, port: u16, flows: usize) {
    ns.run(move || {
        for _ in 0..flows {
            let s = UdpSocket::bind("0.0.0.0:0").unwrap();
            s.send_to(b"flood", SocketAddrV4::new(VIP, port)).unwrap();
        }
    })
    .unwrap();
}

fn conntrack_entries(n: &PodswitchNode) -> u64 {
    match call(n, Request::ConntrackStats) {
        Reply::ConntrackStats(c) => c.entries,
        other => panic!("conntrack stats: {other:?}"),
    }
}

fn conntrack_counters(n: &PodswitchNode) -> vswitch::tables::conntrack::ConntrackCounters {
    match call(n, Request::ConntrackStats) {
        Reply::ConntrackStats(c) => c.counters,
        other => panic!("conntrack stats: {other:?}"),
    }
}

/// Pods flood new UDP flows through a Service whose endpoint never answers (no reply:
/// unassured) until the table is full; another pod still opens a TCP connection through
/// the VIP and gets its answer, because the full table early-drops an unassured entry.
fn full_table_early_drops(kind: PortAddKind) {
    // Two flooding pods, each within its share of half the table, fill it between them.
    let n = node_with_kind(EXE, 4, kind, |c| {
        c.conntrack.max_entries = 256;
        c.conntrack.max_per_port = Some(128);
    });
    let (attacker, attacker2, victim, endpoint) = (&n.pods[0], &n.pods[3], &n.pods[1], &n.pods[2]);
    service(&n, "silent", 9, L4Proto::Udp, endpoint.ip, 9);
    service(&n, "rev", 80, L4Proto::Tcp, endpoint.ip, 8080);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        reverse_server(s, &endpoint.ns, endpoint.ip, 8080, &stop);
        udp_flood(&attacker.ns, 9, 150);
        udp_flood(&attacker2.ns, 9, 150);
        assert!(
            wait_until(Duration::from_secs(5), || conntrack_entries(&n) == 256),
            "the flood filled the table: {:?}",
            conntrack_counters(&n)
        );
        for round in 0..5 {
            vip_round(&victim.ns, 80).unwrap_or_else(|e| {
                panic!("round {round}: the other pod's connection through the VIP: {e}")
            });
            udp_flood(&attacker.ns, 9, 20);
            udp_flood(&attacker2.ns, 9, 20);
        }
    });
    let c = conntrack_counters(&n);
    assert!(c.early_drop >= 5, "{c:?}");
}

#[test]
fn a_full_conntrack_table_early_drops_unassured_flows_tap() {
    require_root!();
    full_table_early_drops(PortAddKind::Tap);
}

#[test]
fn a_full_conntrack_table_early_drops_unassured_flows_afxdp() {
    require_root!();
    full_table_early_drops(PortAddKind::Afxdp);
}

/// One pod opens more answered (assured) UDP flows than its share; they are refused past
/// it under `conntrack_port_limit`, while another pod still opens a connection.
fn a_pod_past_its_share(kind: PortAddKind) {
    let n = node_with_kind(EXE, 3, kind, |c| {
        c.conntrack.max_entries = 256;
        c.conntrack.max_per_port = Some(64);
    });
    let (attacker, victim, endpoint) = (&n.pods[0], &n.pods[1], &n.pods[2]);
    service(&n, "echo", 7, L4Proto::Udp, endpoint.ip, 7007);
    service(&n, "rev", 80, L4Proto::Tcp, endpoint.ip, 8080);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        reverse_server(s, &endpoint.ns, endpoint.ip, 8080, &stop);
        let u = endpoint
            .ns
            .run(|| UdpSocket::bind(SocketAddrV4::new(endpoint.ip, 7007)))
            .unwrap()
            .unwrap();
        u.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let stop = &stop;
        s.spawn(move || {
            let mut b = [0u8; 64];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((len, from)) = u.recv_from(&mut b) {
                    let _ = u.send_to(&b[..len], from);
                }
            }
        });
        udp_flood(&attacker.ns, 7, 300);
        assert!(
            wait_until(Duration::from_secs(5), || drops(
                &n,
                &attacker.name,
                "conntrack_port_limit"
            ) > 0),
            "the pod past its share was refused: {:?}",
            conntrack_counters(&n)
        );
        for round in 0..5 {
            vip_round(&victim.ns, 80)
                .unwrap_or_else(|e| panic!("round {round}: the other pod's connection: {e}"));
        }
    });
    let c = conntrack_counters(&n);
    // The attacker never held more than its share: 64 of its flows plus the victim's five
    // connections (and a little slack for retransmitted SYNs) were ever created.
    assert!(c.port_limit > 0 && c.created <= 64 + 8, "{c:?}");
    assert_eq!(drops(&n, &victim.name, "conntrack_port_limit"), 0);
    // Its port removed, the pod's entries go with it.
    call(&n, Request::PortDel(PortDelArgs { name: attacker.name.clone() }));
    match call(&n, Request::ConntrackStats) {
        Reply::ConntrackStats(c) => assert!(c.entries <= 10, "{c:?}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_pod_past_its_conntrack_share_is_refused_others_are_not_tap() {
    require_root!();
    a_pod_past_its_share(PortAddKind::Tap);
}

#[test]
fn a_pod_past_its_conntrack_share_is_refused_others_are_not_afxdp() {
    require_root!();
    a_pod_past_its_share(PortAddKind::Afxdp);
}

/// `port add` refuses, naming `netns`, what is not a pod's network namespace, and answers
/// `status` right after each (a FIFO must not block it).
#[test]
fn port_add_refuses_bad_netns_paths_without_blocking() {
    require_root!();
    let n = node(EXE, 0);
    let dir = n.switch.dir().join("netns-probe");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("file");
    std::fs::write(&file, b"not a namespace").unwrap();
    let fifo = dir.join("fifo");
    let st = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(st.success());
    let own = format!("/proc/{}/ns/net", n.switch.pid().expect("switch pid"));
    let cases = [
        ("relative", "run/netns/x".to_string(), "relative path"),
        ("regular file", file.display().to_string(), "not a network namespace"),
        ("directory", dir.display().to_string(), "not a network namespace"),
        ("fifo", fifo.display().to_string(), "not a network namespace"),
        ("own namespace", own, "own network namespace"),
    ];
    for (i, (what, netns, why)) in cases.iter().enumerate() {
        let req = Request::PortAdd(PortAddArgs {
            name: format!("bad-{i}"),
            netns: netns.clone(),
            ip: None,
            mac: None,
            ifname: None,
            mtu: None,
            kind: PortAddKind::Tap,
            port_security: true,
            allow_ips: Vec::new(),
        });
        match n.switch.call(&req) {
            Err(ClientError::Api(e)) => {
                assert_eq!(e.field.as_deref(), Some("args.netns"), "{what}: {e:?}");
                assert!(e.message.contains(why), "{what}: {e:?}");
            }
            other => panic!("{what}: {other:?}"),
        }
        match call(&n, Request::Status) {
            Reply::Status(s) => assert_eq!(s.ports, 1, "{what}: only the host port"),
            other => panic!("{other:?}"),
        }
    }
}

/// A process whose group is `control.group` is served; another user is not.
#[test]
fn the_control_group_is_admitted_other_users_are_not() {
    require_root!();
    const GID: u32 = 4_242;
    let n = node_with(EXE, 0, |c| c.control.group = Some(GID));
    let socket = n.switch.socket().to_path_buf();
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::process::CommandExt;
    let m = std::fs::metadata(&socket).unwrap();
    assert_eq!((m.gid(), m.mode() & 0o777), (GID, 0o660));
    let ctl = |uid: u32, gid: u32| {
        let out = std::process::Command::new(EXE)
            .args(["ctl", "--json", "--socket"])
            .arg(&socket)
            .arg("status")
            .uid(uid)
            .gid(gid)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    };
    let (ok, text) = ctl(65_534, GID);
    assert!(ok, "a member of the control group: {text}");
    let (ok, text) = ctl(65_534, 65_534);
    assert!(!ok, "another user was served: {text}");
}

/// The capability sets of every thread of the switch: only what it uses while running;
/// ports of both kinds are still added, carry traffic and are removed.
fn capabilities_after_start(kind: PortAddKind) {
    let mut n = node_kind(EXE, 2, kind);
    let pid = n.switch.pid().expect("switch pid");
    let want: u64 = vswitch::sys::caps::RUNNING.iter().fold(0, |m, &c| m | 1 << c);
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    let mut threads = 0;
    for t in tasks {
        let status = std::fs::read_to_string(t.unwrap().path().join("status")).unwrap();
        let field = |name: &str| {
            let line = status.lines().find(|l| l.starts_with(name)).unwrap();
            u64::from_str_radix(line[name.len()..].trim(), 16).unwrap()
        };
        for f in ["CapEff:", "CapPrm:", "CapBnd:"] {
            assert_eq!(field(f), want, "{f} {:#x}, want {want:#x}", field(f));
        }
        assert_eq!(field("CapInh:"), 0);
        assert_eq!(field("NoNewPrivs:"), 1);
        threads += 1;
    }
    assert!(threads > 2, "workers and servers counted");
    ping_ok(&n.pods[0].ns, n.pods[1].ip);
    let late = n.add_pod_kind("late", None, kind).expect("port add after the drop").ip;
    ping_ok(&n.pods[0].ns, late);
    call(&n, Request::PortDel(PortDelArgs { name: "late".into() }));
    match call(&n, Request::Status) {
        Reply::Status(s) => assert_eq!(s.ports, 3, "host port and two pods"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn capabilities_are_dropped_once_running_tap() {
    require_root!();
    capabilities_after_start(PortAddKind::Tap);
}

#[test]
fn capabilities_are_dropped_once_running_afxdp() {
    require_root!();
    capabilities_after_start(PortAddKind::Afxdp);
}

/// One DNS query over TCP from `ns` to the cluster DNS address: the reply's id.
fn tcp_dns_query(ns: &NetNs, id: u16) -> std::io::Result<u16> {
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::{Name, RecordType};
    let mut q = Message::query();
    q.metadata.id = id;
    q.add_query(Query::query(
        Name::from_ascii("kube-dns.kube-system.svc.cluster.local.").unwrap(),
        RecordType::A,
    ));
    let bytes = q.to_vec().unwrap();
    let to = SocketAddrV4::new(Ipv4Addr::new(10, 96, 0, 10), 53);
    let mut c =
        ns.run(move || TcpStream::connect_timeout(&to.into(), Duration::from_secs(3)))??;
    c.set_read_timeout(Some(Duration::from_secs(3)))?;
    let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&bytes);
    c.write_all(&framed)?;
    let mut len = [0u8; 2];
    c.read_exact(&mut len)?;
    let mut reply = vec![0u8; usize::from(u16::from_be_bytes(len))];
    c.read_exact(&mut reply)?;
    Ok(Message::from_vec(&reply).map_err(std::io::Error::other)?.metadata.id)
}

/// One pod holding 64 idle TCP connections to the DNS responder (through the DNS VIP)
/// does not lock another pod out of TCP DNS.
fn dns_tcp_per_source(kind: PortAddKind) {
    let n = node_kind(EXE, 2, kind);
    let (attacker, victim) = (&n.pods[0], &n.pods[1]);
    let to = SocketAddrV4::new(Ipv4Addr::new(10, 96, 0, 10), 53);
    let held: Vec<TcpStream> = (0..64)
        .filter_map(|_| {
            attacker
                .ns
                .run(move || TcpStream::connect_timeout(&to.into(), Duration::from_secs(2)))
                .unwrap()
                .ok()
        })
        .collect();
    assert!(held.len() >= 8, "the attacker's connections were accepted by the kernel");
    for id in 0..5 {
        let got = tcp_dns_query(&victim.ns, 100 + id)
            .unwrap_or_else(|e| panic!("query {id} from the other pod: {e}"));
        assert_eq!(got, 100 + id);
    }
    drop(held);
}

#[test]
fn one_pod_cannot_lock_others_out_of_tcp_dns_tap() {
    require_root!();
    dns_tcp_per_source(PortAddKind::Tap);
}

#[test]
fn one_pod_cannot_lock_others_out_of_tcp_dns_afxdp() {
    require_root!();
    dns_tcp_per_source(PortAddKind::Afxdp);
}
