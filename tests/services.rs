//! Services: connections to a ClusterIP are load-balanced over endpoints, tracked and
//! translated both ways, with real TCP and UDP between real pod namespaces.

use std::io::{ErrorKind as IoKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use podswitch_tests::topology::{Pod, PodswitchNode};
use podswitch_tests::traffic::{self, Endpoint as TEndpoint};
use podswitch_tests::*;
use vswitch::control::api::{
    Algorithm, Endpoint, EndpointSetArgs, L4Proto, PortAddKind, Reply, Request, ServiceApplyArgs,
    ServiceSpec,
};
use vswitch::sys::netns::NetNs;

const EXE: &str = env!("CARGO_BIN_EXE_psw-test-switch");
const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 20);

fn ep(p: &Pod, port: u16) -> Endpoint {
    Endpoint { ip: p.ip, port, ready: true, terminating: false, weight: 1 }
}

fn spec(
    name: &str,
    vip: Ipv4Addr,
    port: u16,
    proto: L4Proto,
    endpoints: Vec<Endpoint>,
) -> ServiceSpec {
    ServiceSpec {
        name: name.into(),
        namespace: "default".into(),
        vip,
        port,
        proto,
        endpoints,
        algorithm: Algorithm::Maglev,
        session_affinity_secs: None,
        node_port: None,
    }
}

/// Services other than the built-in DNS pair.
fn user_services(all: &[ServiceSpec]) -> usize {
    all.iter().filter(|s| s.namespace != "kube-system").count()
}

fn call(n: &PodswitchNode, req: Request) -> Reply {
    n.switch.call(&req).unwrap_or_else(|e| panic!("{req:?}: {e}"))
}

/// A TCP server in `ns` on `addr:port` answering each connection's line with its `id`,
/// until `stop`.
fn tcp_server<'s>(
    s: &'s std::thread::Scope<'s, '_>,
    ns: &'s NetNs,
    addr: Ipv4Addr,
    port: u16,
    id: u8,
    stop: &'s AtomicBool,
) {
    tcp_server_with(s, ns, addr, port, stop, Duration::from_secs(5), move |mut c| {
        let mut b = [0u8; 64];
        while let Ok(n) = c.read(&mut b) {
            if n == 0 || c.write_all(&[id]).is_err() {
                break;
            }
        }
    });
}

/// A UDP server in `ns` answering each datagram with its `id`, until `stop`.
fn udp_server<'s>(
    s: &'s std::thread::Scope<'s, '_>,
    ns: &'s NetNs,
    addr: Ipv4Addr,
    port: u16,
    id: u8,
    stop: &'s AtomicBool,
) {
    let u = ns.run(move || UdpSocket::bind(SocketAddrV4::new(addr, port))).unwrap().unwrap();
    u.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    s.spawn(move || {
        let mut b = [0u8; 64];
        while !stop.load(Ordering::Relaxed) {
            if let Ok((_, from)) = u.recv_from(&mut b) {
                let _ = u.send_to(&[id], from);
            }
        }
    });
}

/// Services `web` (TCP `VIP:80` → `:8080`) and `dns` (UDP `VIP:53` → `:5353`) over
/// `backends`.
fn add_web_and_dns(n: &PodswitchNode, backends: &[Pod]) {
    let eps = |port| backends.iter().map(|p| ep(p, port)).collect();
    call(n, Request::ServiceAdd(spec("web", VIP, 80, L4Proto::Tcp, eps(8080))));
    call(n, Request::ServiceAdd(spec("dns", VIP, 53, L4Proto::Udp, eps(5353))));
}

/// The servers behind [`add_web_and_dns`]: backend `i` answers with `i`.
fn serve_web_and_dns<'s>(
    s: &'s std::thread::Scope<'s, '_>,
    backends: &'s [Pod],
    stop: &'s AtomicBool,
) {
    for (i, b) in backends.iter().enumerate() {
        tcp_server(s, &b.ns, b.ip, 8080, i as u8, stop);
        udp_server(s, &b.ns, b.ip, 5353, i as u8, stop);
    }
}

fn connect(ns: &NetNs, to: SocketAddrV4) -> std::io::Result<TcpStream> {
    let c = ns.run(move || TcpStream::connect_timeout(&to.into(), Duration::from_secs(2)))??;
    c.set_read_timeout(Some(Duration::from_secs(3)))?;
    Ok(c)
}

fn ask(c: &mut TcpStream) -> std::io::Result<u8> {
    c.write_all(b"?")?;
    let mut b = [0u8; 1];
    c.read_exact(&mut b)?;
    Ok(b[0])
}

#[test]
fn tcp_and_udp_through_a_vip_reach_every_endpoint() {
    require_root!();
    through_a_vip_reach_every_endpoint(PortAddKind::Tap);
}

#[test]
fn tcp_and_udp_through_a_vip_reach_every_endpoint_afxdp() {
    require_root!();
    through_a_vip_reach_every_endpoint(PortAddKind::Afxdp);
}

fn through_a_vip_reach_every_endpoint(kind: PortAddKind) {
    let n = node_kind(EXE, 4, kind);
    let (client, backends) = (&n.pods[0], &n.pods[1..]);
    add_web_and_dns(&n, backends);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        serve_web_and_dns(s, backends, &stop);
        let mut tcp_seen = [0u32; 3];
        for _ in 0..30 {
            // The handshake completes only if the answers come from the VIP.
            let mut c =
                connect(&client.ns, SocketAddrV4::new(VIP, 80)).expect("connect to the VIP");
            assert_eq!(c.peer_addr().unwrap(), SocketAddrV4::new(VIP, 80).into());
            let id = ask(&mut c).unwrap();
            assert_eq!(ask(&mut c).unwrap(), id, "one connection stays on one endpoint");
            tcp_seen[usize::from(id)] += 1;
        }
        let mut udp_seen = [0u32; 3];
        // Kept open to the end, so no two flows share a source port (and a tracked entry).
        let mut sockets = Vec::new();
        for _ in 0..30 {
            let u = client.ns.run(|| UdpSocket::bind("0.0.0.0:0")).unwrap().unwrap();
            u.connect(SocketAddrV4::new(VIP, 53)).unwrap();
            u.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            u.send(b"q").unwrap();
            let mut b = [0u8; 8];
            // A connected socket accepts only what comes from the VIP.
            let got = u.recv(&mut b).expect("UDP answer from the VIP");
            assert_eq!(got, 1);
            udp_seen[usize::from(b[0])] += 1;
            sockets.push(u);
        }
        stop.store(true, Ordering::Relaxed);
        assert!(
            tcp_seen.iter().all(|&c| c > 0),
            "every endpoint got TCP connections: {tcp_seen:?}"
        );
        assert!(udp_seen.iter().all(|&c| c > 0), "every endpoint got UDP flows: {udp_seen:?}");
    });
    let Reply::Conntrack { entries } = call(&n, Request::ConntrackList(Default::default())) else {
        panic!()
    };
    assert!(entries.len() >= 60, "{} connections tracked", entries.len());
    assert!(entries.iter().all(|e| e.service.starts_with("10.96.0.20:")));
}

#[test]
fn a_service_without_endpoints_rejects_and_unknown_ports_too() {
    require_root!();
    let n = node(EXE, 2);
    let client = &n.pods[0];
    call(&n, Request::ServiceAdd(spec("empty", VIP, 80, L4Proto::Tcp, vec![])));
    call(&n, Request::ServiceAdd(spec("empty-udp", VIP, 53, L4Proto::Udp, vec![])));
    let e = connect(&client.ns, SocketAddrV4::new(VIP, 80)).unwrap_err();
    assert_eq!(e.kind(), IoKind::ConnectionRefused, "a reset, not a timeout: {e}");
    let e = connect(&client.ns, SocketAddrV4::new(VIP, 8443)).unwrap_err();
    assert_eq!(e.kind(), IoKind::ConnectionRefused, "unknown port on a VIP: {e}");
    let u = client.ns.run(|| UdpSocket::bind("0.0.0.0:0")).unwrap().unwrap();
    u.connect(SocketAddrV4::new(VIP, 53)).unwrap();
    u.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    u.send(b"q").unwrap();
    let mut b = [0u8; 8];
    let e = u.recv(&mut b).unwrap_err();
    assert_eq!(e.kind(), IoKind::ConnectionRefused, "ICMP port unreachable: {e}");
    assert!(port_stats(&n, "pod1").service_rejects >= 3);
}

#[test]
fn terminating_endpoints_keep_their_connections_removed_ones_are_reset() {
    require_root!();
    terminating_and_removed_endpoints(PortAddKind::Tap);
}

#[test]
fn terminating_endpoints_keep_their_connections_removed_ones_are_reset_afxdp() {
    require_root!();
    terminating_and_removed_endpoints(PortAddKind::Afxdp);
}

fn terminating_and_removed_endpoints(kind: PortAddKind) {
    let n = node_kind(EXE, 3, kind);
    let (client, a, b) = (&n.pods[0], &n.pods[1], &n.pods[2]);
    call(&n, Request::ServiceAdd(spec("web", VIP, 80, L4Proto::Tcp, vec![ep(a, 8080)])));
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        tcp_server(s, &a.ns, a.ip, 8080, 1, &stop);
        tcp_server(s, &b.ns, b.ip, 8080, 2, &stop);
        let mut old = connect(&client.ns, SocketAddrV4::new(VIP, 80)).unwrap();
        assert_eq!(ask(&mut old).unwrap(), 1);
        let set = |endpoints| {
            call(
                &n,
                Request::EndpointSet(EndpointSetArgs {
                    namespace: "default".into(),
                    name: "web".into(),
                    port: None,
                    proto: None,
                    endpoints,
                }),
            )
        };
        set(vec![Endpoint { terminating: true, ..ep(a, 8080) }, ep(b, 8080)]);
        assert_eq!(ask(&mut old).unwrap(), 1, "a terminating endpoint keeps its connection");
        let mut new = connect(&client.ns, SocketAddrV4::new(VIP, 80)).unwrap();
        assert_eq!(ask(&mut new).unwrap(), 2, "new connections avoid the terminating endpoint");
        set(vec![ep(b, 8080)]);
        let e = ask(&mut old).unwrap_err();
        assert!(
            matches!(
                e.kind(),
                IoKind::ConnectionReset | IoKind::UnexpectedEof | IoKind::BrokenPipe
            ),
            "a removed endpoint's connection is reset, not left hanging: {e}"
        );
        assert_eq!(ask(&mut new).unwrap(), 2, "the other connection is untouched");
        stop.store(true, Ordering::Relaxed);
    });
}

#[test]
fn hairpin_node_to_service_and_apply_keep_working() {
    require_root!();
    hairpin_node_to_service_and_apply(PortAddKind::Tap);
}

#[test]
fn hairpin_node_to_service_and_apply_keep_working_afxdp() {
    require_root!();
    hairpin_node_to_service_and_apply(PortAddKind::Afxdp);
}

fn hairpin_node_to_service_and_apply(kind: PortAddKind) {
    let n = node_kind(EXE, 2, kind);
    let (a, b) = (&n.pods[0], &n.pods[1]);
    let web = spec("web", VIP, 80, L4Proto::Tcp, vec![ep(a, 8080)]);
    let other = spec("other", Ipv4Addr::new(10, 96, 0, 30), 80, L4Proto::Tcp, vec![ep(b, 8080)]);
    let Reply::Applied { services, .. } =
        call(&n, Request::ServiceApply(ServiceApplyArgs { services: vec![web.clone(), other] }))
    else {
        panic!()
    };
    assert_eq!(services, 4, "the two given and the built-in DNS pair");
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        tcp_server(s, &a.ns, a.ip, 8080, 1, &stop);
        // Hairpin: the only endpoint reaches itself through its own Service.
        let mut hp = connect(&a.ns, SocketAddrV4::new(VIP, 80)).expect("hairpin");
        assert_eq!(ask(&mut hp).unwrap(), 1);
        // The node reaches the Service through its host port.
        let mut node_conn = connect(&n.ns, SocketAddrV4::new(VIP, 80)).expect("node to Service");
        assert_eq!(ask(&mut node_conn).unwrap(), 1);
        // Replacing the whole table, keeping this Service's endpoint, keeps the connections.
        call(&n, Request::ServiceApply(ServiceApplyArgs { services: vec![web.clone()] }));
        assert_eq!(ask(&mut hp).unwrap(), 1);
        assert_eq!(ask(&mut node_conn).unwrap(), 1);
        stop.store(true, Ordering::Relaxed);
    });
    let Reply::Services { services } = call(&n, Request::ServiceList) else { panic!() };
    assert_eq!(user_services(&services), 1);
    // A bad Service in an apply changes nothing and names the field.
    let mut bad = web.clone();
    bad.vip = Ipv4Addr::new(192, 168, 9, 9);
    let e = n
        .switch
        .call(&Request::ServiceApply(ServiceApplyArgs { services: vec![web, bad] }))
        .unwrap_err();
    assert!(e.to_string().contains("services[1].vip"), "{e}");
    let Reply::Services { services } = call(&n, Request::ServiceList) else { panic!() };
    assert_eq!(user_services(&services), 1);
}

#[test]
fn a_full_conntrack_table_drops_new_connections_and_keeps_old_ones() {
    require_root!();
    // One client fills the table (its share is the whole table); another finds it full.
    let n = node_with(EXE, 3, |c| {
        c.conntrack.max_entries = 2;
        c.conntrack.max_per_port = Some(2);
    });
    let (client, a, other) = (&n.pods[0], &n.pods[1], &n.pods[2]);
    call(&n, Request::ServiceAdd(spec("web", VIP, 80, L4Proto::Tcp, vec![ep(a, 8080)])));
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        tcp_server(s, &a.ns, a.ip, 8080, 1, &stop);
        let mut c1 = connect(&client.ns, SocketAddrV4::new(VIP, 80)).unwrap();
        let mut c2 = connect(&client.ns, SocketAddrV4::new(VIP, 80)).unwrap();
        let third = connect(&other.ns, SocketAddrV4::new(VIP, 80));
        assert!(third.is_err(), "no room for a third connection");
        assert_eq!(ask(&mut c1).unwrap(), 1);
        assert_eq!(ask(&mut c2).unwrap(), 1);
        assert!(drops(&n, &other.name, "conntrack_full") >= 1);
        stop.store(true, Ordering::Relaxed);
    });
    // Direct pod-to-pod traffic is not tracked and not limited.
    let r = traffic::tcp_rr(
        TEndpoint { ns: &a.ns, addr: a.ip },
        &client.ns,
        64,
        100,
        Duration::from_secs(10),
    );
    assert_eq!(r.expect("direct traffic").samples, 100);
}

#[test]
fn client_ip_affinity_keeps_a_client_on_one_endpoint_until_it_expires() {
    require_root!();
    let n = node(EXE, 4);
    let (client, backends) = (&n.pods[0], &n.pods[1..]);
    let mut web =
        spec("web", VIP, 80, L4Proto::Tcp, backends.iter().map(|p| ep(p, 8080)).collect());
    web.session_affinity_secs = Some(1);
    call(&n, Request::ServiceAdd(web));
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        for (i, b) in backends.iter().enumerate() {
            tcp_server(s, &b.ns, b.ip, 8080, i as u8, &stop);
        }
        let one = |_| {
            let mut c = connect(&client.ns, SocketAddrV4::new(VIP, 80)).unwrap();
            ask(&mut c).unwrap()
        };
        let pinned: std::collections::BTreeSet<u8> = (0..20).map(one).collect();
        assert_eq!(pinned.len(), 1, "20 connections, one endpoint: {pinned:?}");
        // After the timeout the pin is gone: a later connection lands elsewhere sooner or
        // later (each new pin lasts 1 s, so wait it out between tries; 12 tries all landing
        // on the same one of 3 endpoints has odds of 1 in 531,441).
        let first = *pinned.iter().next().unwrap();
        let moved = (0..12).any(|_| {
            std::thread::sleep(Duration::from_millis(1100));
            one(0) != first
        });
        assert!(moved, "the pin outlived its timeout");
        stop.store(true, Ordering::Relaxed);
    });
}

#[test]
fn icmp_errors_from_an_endpoint_reach_the_client_as_coming_from_the_vip() {
    require_root!();
    let n = node(EXE, 2);
    let (client, a) = (&n.pods[0], &n.pods[1]);
    // The endpoint exists but nothing listens on its port: its kernel answers with ICMP port
    // unreachable, quoting the translated datagram.
    call(&n, Request::ServiceAdd(spec("dns", VIP, 53, L4Proto::Udp, vec![ep(a, 5353)])));
    let u = client.ns.run(|| UdpSocket::bind("0.0.0.0:0")).unwrap().unwrap();
    u.connect(SocketAddrV4::new(VIP, 53)).unwrap();
    u.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    u.send(b"q").unwrap();
    let mut b = [0u8; 8];
    // A connected socket only takes the error if it names the VIP and port it sent to.
    let e = u.recv(&mut b).unwrap_err();
    assert_eq!(e.kind(), IoKind::ConnectionRefused, "translated port unreachable: {e}");
    assert_eq!(port_stats(&n, "pod1").service_rejects, 0, "the endpoint answered, not the switch");
}

/// One UDP question from `client` bound to `sport`, to the VIP: the answering endpoint's id.
fn udp_ask_from(client: &NetNs, sport: u16, to: SocketAddrV4) -> std::io::Result<u8> {
    let u =
        client.run(move || UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, sport)))??;
    u.connect(to)?;
    u.set_read_timeout(Some(Duration::from_secs(2)))?;
    u.send(b"q")?;
    let mut b = [0u8; 8];
    u.recv(&mut b)?;
    Ok(b[0])
}

#[test]
fn maglev_removing_one_endpoint_moves_only_a_few_other_flows() {
    require_root!();
    let n = node(EXE, 5);
    let (client, backends) = (&n.pods[0], &n.pods[1..]);
    let svc = |eps: Vec<Endpoint>| spec("dns", VIP, 53, L4Proto::Udp, eps);
    call(&n, Request::ServiceAdd(svc(backends.iter().map(|p| ep(p, 5353)).collect())));
    let to = SocketAddrV4::new(VIP, 53);
    let sports: Vec<u16> = (0..80).map(|i| 41_000 + i * 7).collect();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        for (i, b) in backends.iter().enumerate() {
            udp_server(s, &b.ns, b.ip, 5353, i as u8, &stop);
        }
        // Each flow (fixed 5-tuple) lands where Maglev puts it; a conntrack flush between
        // rounds makes every flow pick again.
        let round = || -> Vec<u8> {
            call(&n, Request::ConntrackFlush);
            sports.iter().map(|&p| udp_ask_from(&client.ns, p, to).expect("answer")).collect()
        };
        let before = round();
        assert_eq!(round(), before, "Maglev is deterministic for an unchanged Service");
        let gone = 2u8;
        let kept: Vec<Endpoint> = backends
            .iter()
            .enumerate()
            .filter(|(i, _)| *i as u8 != gone)
            .map(|(_, p)| ep(p, 5353))
            .collect();
        call(&n, Request::ServiceAdd(svc(kept)));
        let after = round();
        stop.store(true, Ordering::Relaxed);
        assert!(after.iter().all(|&e| e != gone), "the removed endpoint gets no flow");
        let survivors: Vec<usize> = (0..before.len()).filter(|&i| before[i] != gone).collect();
        let moved = survivors.iter().filter(|&&i| before[i] != after[i]).count();
        assert!(survivors.len() >= 40 && before.contains(&gone), "{before:?}");
        // Maglev is near-minimal, not minimal: a few percent of other flows may move
        // (tables/maglev.rs measures it); far from the ~75% a modulo hash would move.
        assert!(
            moved * 10 <= survivors.len(),
            "{moved} of {} flows on other endpoints moved: {before:?} -> {after:?}",
            survivors.len()
        );
    });
}

#[test]
fn services_reach_endpoints_on_other_nodes_and_pods_on_other_nodes_reach_services() {
    use podswitch_tests::topology::{podswitch_peer, Underlay};
    require_root!();
    let mut ul = Underlay::build("psv").expect("underlay");
    let build = |ul: &mut Underlay, n: u8, peer: u8| {
        PodswitchNode::build_on_underlay(
            EXE.as_ref(),
            "psv",
            ul,
            n,
            2,
            &[podswitch_peer(peer)],
            1500,
            None,
            |_| {},
        )
        .unwrap_or_else(|e| panic!("node {n}: {e}"))
    };
    let n1 = build(&mut ul, 1, 2);
    let n2 = build(&mut ul, 2, 1);
    // One endpoint on each node; every node carries the whole Service table, as kube-proxy
    // does.
    let eps = vec![ep(&n1.pods[1], 8080), ep(&n2.pods[1], 8080)];
    for n in [&n1, &n2] {
        call(n, Request::ServiceAdd(spec("web", VIP, 80, L4Proto::Tcp, eps.clone())));
        call(n, Request::ServiceAdd(spec("dns", VIP, 53, L4Proto::Udp, eps.clone())));
    }
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        for (i, b) in [&n1.pods[1], &n2.pods[1]].into_iter().enumerate() {
            tcp_server(s, &b.ns, b.ip, 8080, i as u8, &stop);
            udp_server(s, &b.ns, b.ip, 8080, i as u8, &stop);
        }
        for client in [&n1.pods[0], &n2.pods[0]] {
            let mut seen = [0u32; 2];
            for sport in 0..24 {
                let mut c = connect(&client.ns, SocketAddrV4::new(VIP, 80)).expect("connect");
                let id = ask(&mut c).unwrap();
                assert_eq!(ask(&mut c).unwrap(), id);
                seen[usize::from(id)] += 1;
                let u = udp_ask_from(&client.ns, 42_000 + sport, SocketAddrV4::new(VIP, 53));
                seen[usize::from(u.expect("UDP answer from the VIP"))] += 1;
            }
            assert!(
                seen.iter().all(|&c| c > 0),
                "pod {} reached the endpoints on both nodes: {seen:?}",
                client.ip
            );
        }
        // The node itself, through its host port, to an endpoint behind the overlay.
        let mut ids = std::collections::BTreeSet::new();
        for _ in 0..16 {
            let mut c = connect(&n1.ns, SocketAddrV4::new(VIP, 80)).expect("node to Service");
            ids.insert(ask(&mut c).unwrap());
        }
        assert_eq!(ids.len(), 2, "the node reached both endpoints: {ids:?}");
        stop.store(true, Ordering::Relaxed);
    });
    let s = port_stats(&n1, "overlay");
    assert_eq!(s.drops.values().sum::<u64>(), 0, "{s:?}");
}

/// `/etc/netns/NAME/resolv.conf`, which `ip netns exec NAME` mounts over `/etc/resolv.conf`:
/// the pod's resolver configuration as kubelet writes it. Removed on drop.
struct PodResolvConf(std::path::PathBuf);

impl PodResolvConf {
    fn write(ns: &vswitch::sys::netns::NamedNetNs, text: &str) -> PodResolvConf {
        let dir = std::path::Path::new("/etc/netns").join(ns.name());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("resolv.conf"), text).unwrap();
        PodResolvConf(dir)
    }
}

impl Drop for PodResolvConf {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `getent ahostsv4 NAME` in the pod (glibc's resolver, as any program there would use).
fn getent(ns: &vswitch::sys::netns::NamedNetNs, name: &str) -> (bool, String) {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", ns.name(), "getent", "ahostsv4", name])
        .output()
        .expect("ip netns exec getent");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
}

/// One DNS query over TCP to `server` from `ns`: the answer's rcode and A records.
fn dns_over_tcp(ns: &NetNs, server: SocketAddrV4, name: &str) -> (u16, Vec<Ipv4Addr>) {
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::{Name, RData, RecordType};
    let mut q = Message::query();
    q.metadata.id = 4242;
    q.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    let bytes = q.to_vec().unwrap();
    let mut c = connect(ns, server).expect("TCP to the DNS address");
    let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&bytes);
    c.write_all(&framed).unwrap();
    let mut len = [0u8; 2];
    c.read_exact(&mut len).unwrap();
    let mut reply = vec![0u8; usize::from(u16::from_be_bytes(len))];
    c.read_exact(&mut reply).unwrap();
    let m = Message::from_vec(&reply).unwrap();
    assert_eq!(m.metadata.id, 4242);
    let ips = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect();
    (u16::from(m.metadata.response_code), ips)
}

#[test]
fn a_fragmented_dns_query_through_the_vip_is_answered() {
    require_root!();
    fragmented_dns_query(PortAddKind::Tap);
}

#[test]
fn a_fragmented_dns_query_through_the_vip_is_answered_afxdp() {
    require_root!();
    fragmented_dns_query(PortAddKind::Afxdp);
}

/// A 4,000-byte DNS query (padded with an additional TXT record) leaves the pod as IPv4
/// fragments; the switch must give every fragment the translation of the first, so the
/// responder behind the DNS VIP reassembles and answers it.
fn fragmented_dns_query(kind: PortAddKind) {
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::rdata::TXT;
    use hickory_proto::rr::{Name, RData, Record, RecordType};
    let n = node_kind(EXE, 2, kind);
    call(&n, Request::ServiceAdd(spec("web", VIP, 80, L4Proto::Tcp, vec![ep(&n.pods[1], 8080)])));
    let client = &n.pods[0];
    let mut q = Message::query();
    q.metadata.id = 4000;
    let name = Name::from_ascii("web.default.svc.cluster.local.").unwrap();
    q.add_query(Query::query(name, RecordType::A));
    let pad = TXT::new(vec!["x".repeat(250); 15]);
    q.add_additional(Record::from_rdata(Name::from_ascii("pad.").unwrap(), 0, RData::TXT(pad)));
    let bytes = q.to_vec().unwrap();
    assert!(bytes.len() >= 3_800 && bytes.len() <= 4_100, "{} bytes", bytes.len());
    let sock = client.ns.run(|| UdpSocket::bind("0.0.0.0:0")).unwrap().unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let dns = SocketAddrV4::new(Ipv4Addr::new(10, 96, 0, 10), 53);
    let mut answer = None;
    for _ in 0..3 {
        sock.send_to(&bytes, dns).unwrap();
        let mut buf = [0u8; 4096];
        if let Ok((len, _)) = sock.recv_from(&mut buf) {
            answer = Some(Message::from_vec(&buf[..len]).unwrap());
            break;
        }
    }
    let m = answer.expect("an answer to the fragmented query");
    assert_eq!(m.metadata.id, 4000);
    let ips: Vec<Ipv4Addr> = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect();
    assert_eq!(ips, [VIP]);
    assert_eq!(drops(&n, &client.name, "frag_untracked"), 0);
}

#[test]
fn pods_resolve_service_names_through_the_cluster_dns() {
    require_root!();
    resolve_service_names(PortAddKind::Tap);
}

#[test]
fn pods_resolve_service_names_through_the_cluster_dns_afxdp() {
    require_root!();
    resolve_service_names(PortAddKind::Afxdp);
}

fn resolve_service_names(kind: PortAddKind) {
    let n = node_kind(EXE, 2, kind);
    let client = &n.pods[0];
    // A Service with two ports: one name, one address.
    call(&n, Request::ServiceAdd(spec("web", VIP, 80, L4Proto::Tcp, vec![ep(&n.pods[1], 8080)])));
    call(&n, Request::ServiceAdd(spec("web", VIP, 443, L4Proto::Tcp, vec![ep(&n.pods[1], 8443)])));
    let _conf = PodResolvConf::write(
        &client.ns,
        "nameserver 10.96.0.10\nsearch default.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5 timeout:2 attempts:2\n",
    );
    // glibc over UDP: the full name, a short name through the search list, an unknown name.
    let (ok, out) = getent(&client.ns, "web.default.svc.cluster.local");
    assert!(ok && out.contains("10.96.0.20"), "full name: {out:?}");
    let (ok, out) = getent(&client.ns, "web");
    assert!(ok && out.contains("10.96.0.20"), "short name through the search list: {out:?}");
    let (ok, out) = getent(&client.ns, "nope.default.svc.cluster.local");
    assert!(!ok && out.is_empty(), "unknown Service: {out:?}");
    // The DNS Service is itself a name.
    let (ok, out) = getent(&client.ns, "kube-dns.kube-system.svc.cluster.local");
    assert!(ok && out.contains("10.96.0.10"), "{out:?}");
    // Over TCP, through the same Service NAT: answers and NXDOMAIN (3).
    let dns = SocketAddrV4::new(Ipv4Addr::new(10, 96, 0, 10), 53);
    assert_eq!(dns_over_tcp(&client.ns, dns, "web.default.svc.cluster.local."), (0, vec![VIP]));
    assert_eq!(dns_over_tcp(&client.ns, dns, "gone.default.svc.cluster.local.").0, 3);
    assert_eq!(dns_over_tcp(&client.ns, dns, "example.com.").0, 5, "REFUSED outside");
    // A Service removed is gone from DNS at once.
    call(
        &n,
        Request::ServiceDel(vswitch::control::api::ServiceRefArgs {
            namespace: "default".into(),
            name: "web".into(),
        }),
    );
    assert_eq!(dns_over_tcp(&client.ns, dns, "web.default.svc.cluster.local.").0, 3);
    // The built-in DNS Services cannot be deleted by accident.
    let e = n
        .switch
        .call(&Request::ServiceDel(vswitch::control::api::ServiceRefArgs {
            namespace: "kube-system".into(),
            name: "kube-dns".into(),
        }))
        .unwrap_err();
    assert!(e.to_string().contains("args.name"), "{e}");
}

#[test]
fn node_ports_take_connections_from_a_client_on_the_underlay() {
    use podswitch_tests::topology::{
        netns_with_lo, podswitch_peer, underlay_ip, unique_name, Underlay,
    };
    use vswitch::config::NodePortConfig;
    require_root!();
    let mut ul = Underlay::build("psn").expect("underlay");
    let n1 = PodswitchNode::build_on_underlay(
        EXE.as_ref(),
        "psn",
        &mut ul,
        1,
        2,
        &[podswitch_peer(2)],
        1500,
        None,
        |c| c.node_port = Some(NodePortConfig { interface: "ul0".into(), address: underlay_ip(1) }),
    )
    .expect("node 1");
    let n2 = PodswitchNode::build_on_underlay(
        EXE.as_ref(),
        "psn",
        &mut ul,
        2,
        1,
        &[podswitch_peer(1)],
        1500,
        None,
        |_| {},
    )
    .expect("node 2");
    // A client outside the cluster network, on the underlay. Its veth would leave checksums
    // partial (a NIC completes them); AF_XDP sees the bytes, so it completes them itself.
    let client = netns_with_lo(&unique_name("psn-cl")).expect("client namespace");
    ul.plug(&client, underlay_ip(9), 1500).expect("plug the client");
    vswitch::sys::ethtool::disable_tx_checksum(&client, "ul0").expect("client tx csum off");
    let (a, b) = (&n1.pods[1], &n2.pods[0]);
    let eps = vec![ep(a, 8080), ep(b, 8080)];
    let mut web = spec("web", VIP, 80, L4Proto::Tcp, eps.clone());
    web.node_port = Some(30_080);
    let mut udp = spec("echo", VIP, 53, L4Proto::Udp, eps);
    udp.node_port = Some(30_053);
    // An endpoint where nothing listens: its kernel's port unreachable must reach the client.
    let mut closed = spec("closed", VIP, 54, L4Proto::Udp, vec![ep(a, 9_999)]);
    closed.node_port = Some(30_054);
    for s in [web, udp, closed] {
        call(&n1, Request::ServiceAdd(s));
    }
    let node = |port| SocketAddrV4::new(underlay_ip(1), port);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        tcp_server(s, &a.ns, a.ip, 8080, 0, &stop);
        tcp_server(s, &b.ns, b.ip, 8080, 1, &stop);
        udp_server(s, &a.ns, a.ip, 8080, 0, &stop);
        udp_server(s, &b.ns, b.ip, 8080, 1, &stop);
        let mut seen = [0u32; 2];
        for i in 0..24 {
            let mut c = connect(&client, node(30_080)).expect("connect to the node port");
            let id = ask(&mut c).unwrap();
            assert_eq!(ask(&mut c).unwrap(), id, "one connection stays on one endpoint");
            seen[usize::from(id)] += 1;
            let u = udp_ask_from(&client, 43_000 + i, node(30_053)).expect("UDP node port");
            seen[usize::from(u)] += 1;
        }
        assert!(seen.iter().all(|&c| c > 0), "a local and a remote endpoint served: {seen:?}");
        // 100 KB through one connection, both ways through the translation.
        let mut c = connect(&client, node(30_080)).unwrap();
        for _ in 0..1000 {
            c.write_all(&[b'x'; 100]).unwrap();
        }
        let mut got = vec![0u8; 1000];
        c.read_exact(&mut got).unwrap();
        // The endpoint's ICMP port unreachable comes back translated: a socket connected to
        // the node's address takes it as "refused".
        let e = udp_ask_from(&client, 43_999, node(30_054)).unwrap_err();
        assert_eq!(e.kind(), IoKind::ConnectionRefused, "translated ICMP error: {e}");
        // A port no Service has is the kernel's: refused, not swallowed by the switch.
        let e = connect(&client, node(30_099)).unwrap_err();
        assert_eq!(e.kind(), IoKind::ConnectionRefused, "{e}");
        // The rest of the node's traffic is untouched by the filter.
        ping_ok(&client, underlay_ip(1));
        // Deleting the Service gives its port back to the kernel.
        call(
            &n1,
            Request::ServiceDel(vswitch::control::api::ServiceRefArgs {
                namespace: "default".into(),
                name: "web".into(),
            }),
        );
        let e = connect(&client, node(30_080)).unwrap_err();
        assert_eq!(e.kind(), IoKind::ConnectionRefused, "after the delete: {e}");
        stop.store(true, Ordering::Relaxed);
    });
    let s = port_stats(&n1, "node-port");
    assert!(s.rx_bytes > 100_000 && s.tx_packets > 50, "{s:?}");
}

#[test]
fn conntrack_entries_expire_after_their_timeouts() {
    require_root!();
    let n = node_with(EXE, 3, |c| {
        c.conntrack.udp = Duration::from_secs(1);
        c.conntrack.udp_assured = Duration::from_secs(2);
        c.conntrack.tcp.established = Duration::from_secs(2);
    });
    let (client, a, b) = (&n.pods[0], &n.pods[1], &n.pods[2]);
    call(&n, Request::ServiceAdd(spec("web", VIP, 80, L4Proto::Tcp, vec![ep(a, 8080)])));
    call(&n, Request::ServiceAdd(spec("echo", VIP, 53, L4Proto::Udp, vec![ep(a, 8080)])));
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        tcp_server(s, &a.ns, a.ip, 8080, 1, &stop);
        tcp_server(s, &b.ns, b.ip, 8080, 2, &stop);
        udp_server(s, &a.ns, a.ip, 8080, 1, &stop);
        udp_server(s, &b.ns, b.ip, 8080, 2, &stop);
        let dns = SocketAddrV4::new(VIP, 53);
        assert_eq!(udp_ask_from(&client.ns, 44_000, dns).unwrap(), 1);
        let mut conn = connect(&client.ns, SocketAddrV4::new(VIP, 80)).unwrap();
        assert_eq!(ask(&mut conn).unwrap(), 1);
        let Reply::Conntrack { entries } = call(&n, Request::ConntrackList(Default::default()))
        else {
            panic!()
        };
        let udp = entries.iter().find(|e| e.proto == "udp").expect("the UDP flow is tracked");
        assert_eq!(udp.state, "udp_assured", "a reply was seen");
        assert!(udp.expires_in_secs <= 2.0, "{udp:?}");
        // New flows now go to b only; tracked ones stay on a while their entries live.
        let set = |eps| {
            call(
                &n,
                Request::EndpointSet(EndpointSetArgs {
                    namespace: "default".into(),
                    name: "echo".into(),
                    port: None,
                    proto: None,
                    endpoints: eps,
                }),
            )
        };
        set(vec![Endpoint { terminating: true, ..ep(a, 8080) }, ep(b, 8080)]);
        call(
            &n,
            Request::EndpointSet(EndpointSetArgs {
                namespace: "default".into(),
                name: "web".into(),
                port: None,
                proto: None,
                endpoints: vec![Endpoint { terminating: true, ..ep(a, 8080) }, ep(b, 8080)],
            }),
        );
        assert_eq!(udp_ask_from(&client.ns, 44_000, dns).unwrap(), 1, "still tracked");
        assert_eq!(ask(&mut conn).unwrap(), 1, "still tracked");
        std::thread::sleep(Duration::from_millis(2600));
        // Expired: the same 5-tuple is a new flow and goes where new flows go.
        assert_eq!(udp_ask_from(&client.ns, 44_000, dns).unwrap(), 2, "the UDP entry expired");
        // The idle TCP connection's entry expired too: its next segment is picked up as a
        // new flow (conntrack's loose pickup) towards b, whose kernel resets it.
        let e = ask(&mut conn).unwrap_err();
        assert!(
            matches!(e.kind(), IoKind::ConnectionReset | IoKind::UnexpectedEof),
            "the expired connection is reset by the new endpoint: {e}"
        );
        stop.store(true, Ordering::Relaxed);
    });
}

/// Connections from two client pods to a Service with two endpoints, on a switch with
/// `workers` workers: every connection is answered by its endpoint through the VIP, tracked
/// once, and nothing is dropped. With two workers every frame a pod sends is put on the
/// queue of the worker that tracks its connection, by the TAP's steering program or, for
/// AF_XDP pods, by the program on the egress of the pod's veth end, so none is steered
/// inside the switch; with one worker none is. On a kernel without tcx the AF_XDP pods'
/// veth picks queues by flow hash, and then some packets must be steered.
fn connections_meet_their_tracked_state(kind: PortAddKind, workers: usize) {
    let n = node_with_kind(EXE, 4, kind, |c| c.worker.count = workers);
    let (clients, backends) = (&n.pods[..2], &n.pods[2..]);
    add_web_and_dns(&n, backends);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        serve_web_and_dns(s, backends, &stop);
        let mut open = Open::default();
        for client in clients {
            for _ in 0..20 {
                let mut c = connect(&client.ns, SocketAddrV4::new(VIP, 80)).expect("connect");
                let id = ask(&mut c).expect("TCP answer through the VIP");
                assert_eq!(ask(&mut c).unwrap(), id, "one connection stays on one endpoint");
                open.push(c);
                let u = client.ns.run(|| UdpSocket::bind("0.0.0.0:0")).unwrap().unwrap();
                u.connect(SocketAddrV4::new(VIP, 53)).unwrap();
                u.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                u.send(b"q").unwrap();
                let mut b = [0u8; 8];
                assert_eq!(u.recv(&mut b).expect("UDP answer from the VIP"), 1);
                open.push_udp(u);
            }
        }
        // Still answered after the first exchanges settled each flow on its queues.
        for c in open.tcp.iter_mut() {
            ask(c).expect("a tracked connection keeps working");
        }
        stop.store(true, Ordering::Relaxed);
    });
    let Reply::Conntrack { entries } = call(&n, Request::ConntrackList(Default::default())) else {
        panic!()
    };
    assert_eq!(entries.len(), 80, "each connection tracked once");
    let st = stats(&n);
    let steered: u64 = st.ports.iter().map(|p| p.steered).sum();
    for p in &st.ports {
        assert_eq!(p.drops.values().sum::<u64>(), 0, "no drops: {p:?}");
    }
    match (workers, kind) {
        (1, _) => assert_eq!(steered, 0, "one worker steers nothing"),
        // The TAP's steering program put every frame on its connection's worker's queue.
        (_, PortAddKind::Tap) => {
            assert_eq!(steered, 0, "the kernel's queue choice agreed with the switch: {st:?}")
        }
        // So did the program on each pod's veth end.
        _ if afxdp_pods_steer_their_queues(&n) => {
            assert_eq!(steered, 0, "the pods' queue choice agreed with the switch: {st:?}")
        }
        // Without it a veth picks its queue by flow hash: the switch moves what arrived
        // elsewhere.
        _ => assert!(steered > 0, "some packets crossed to their connection's worker: {st:?}"),
    }
}

/// Whether every pod's veth end carries the switch's queue-steering program on its egress.
/// False only on a kernel without tcx; a kernel with tcx where any pod end lacks the
/// program fails the test.
fn afxdp_pods_steer_their_queues(n: &PodswitchNode) -> bool {
    let on: Vec<bool> = n
        .pods
        .iter()
        .map(|p| match pod_egress_programs(&p.ns) {
            Ok(ids) => {
                assert_eq!(ids.len(), 1, "{}: one steering program on eth0: {ids:?}", p.name);
                true
            }
            Err(e) if e.kind() == IoKind::InvalidInput => {
                eprintln!("{}: no tcx on this kernel ({e})", p.name);
                false
            }
            Err(e) => panic!("{}: {e}", p.name),
        })
        .collect();
    assert!(on.iter().all(|&o| o == on[0]), "{on:?}");
    on[0]
}

/// What a client keeps open until the end (so no two flows share a source port).
#[derive(Default)]
struct Open {
    tcp: Vec<TcpStream>,
    udp: Vec<UdpSocket>,
}

impl Open {
    fn push(&mut self, c: TcpStream) {
        self.tcp.push(c);
    }

    fn push_udp(&mut self, u: UdpSocket) {
        self.udp.push(u);
    }
}

#[test]
fn connections_meet_their_tracked_state_on_two_workers() {
    require_root!();
    connections_meet_their_tracked_state(PortAddKind::Tap, 2);
}

#[test]
fn connections_meet_their_tracked_state_on_two_workers_afxdp() {
    require_root!();
    connections_meet_their_tracked_state(PortAddKind::Afxdp, 2);
}

#[test]
fn connections_meet_their_tracked_state_on_one_worker() {
    require_root!();
    connections_meet_their_tracked_state(PortAddKind::Tap, 1);
}
