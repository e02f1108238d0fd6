//! Ports come and go: adding and removing ports while traffic flows on others loses none of
//! it, a refused or failed add leaves nothing behind, a removed port takes its interface
//! with it, and the port limit is enforced.

use std::collections::HashSet;
use std::net::{SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use podswitch_tests::topology::{netns_with_lo, unique_name, PodswitchNode};
use podswitch_tests::*;
use vswitch::control::api::{ErrorKind, PortAddArgs, PortDelArgs, PortInfo, Reply, Request};
use vswitch::control::client::ClientError;
use vswitch::port::PortKind;
use vswitch::sys::netlink::{LinkInfo, Netlink};
use vswitch::sys::netns::NetNs;

const EXE: &str = env!("CARGO_BIN_EXE_psw-test-switch");

fn add(
    n: &PodswitchNode,
    name: &str,
    netns: &str,
    ip: Option<&str>,
    ifname: Option<&str>,
) -> Result<Reply, ClientError> {
    add_kind(n, name, netns, ip, ifname, n.pod_kind)
}

fn add_kind(
    n: &PodswitchNode,
    name: &str,
    netns: &str,
    ip: Option<&str>,
    ifname: Option<&str>,
    kind: PortAddKind,
) -> Result<Reply, ClientError> {
    n.switch.call(&Request::PortAdd(PortAddArgs {
        name: name.into(),
        netns: netns.into(),
        ip: ip.map(|i| i.parse().unwrap()),
        mac: None,
        ifname: ifname.map(Into::into),
        mtu: None,
        kind,
        port_security: true,
        allow_ips: Vec::new(),
    }))
}

fn api_err(r: Result<Reply, ClientError>) -> (ErrorKind, Option<String>) {
    match r {
        Err(ClientError::Api(e)) => (e.kind, e.field),
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn port_names(n: &PodswitchNode) -> Vec<String> {
    match n.switch.call(&Request::PortList).unwrap() {
        Reply::Ports { ports } => ports.into_iter().map(|p| p.name).collect(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn churning_other_ports_loses_no_traffic() {
    require_root!();
    let n = node(EXE, 2);
    let (a, b) = (&n.pods[0], &n.pods[1]);
    let rx = b.ns.run(|| UdpSocket::bind(SocketAddrV4::new(b.ip, 0))).unwrap().unwrap();
    rx.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let dst = rx.local_addr().unwrap();
    let tx = a.ns.run(|| UdpSocket::bind(SocketAddrV4::new(a.ip, 0))).unwrap().unwrap();
    const COUNT: u32 = 8000;
    let done = AtomicBool::new(false);
    let churned = std::thread::scope(|s| {
        let receiver = s.spawn(|| {
            let mut seen = HashSet::new();
            let mut buf = [0u8; 64];
            let deadline = Instant::now() + Duration::from_secs(30);
            while seen.len() < COUNT as usize && Instant::now() < deadline {
                match rx.recv(&mut buf) {
                    Ok(4) => {
                        seen.insert(u32::from_be_bytes(buf[..4].try_into().unwrap()));
                    }
                    Ok(_) => {}
                    Err(_) if done.load(Ordering::SeqCst) => break,
                    Err(_) => {}
                }
            }
            seen.len()
        });
        let churner = s.spawn(|| {
            let mut cycles = 0;
            while !done.load(Ordering::SeqCst) && cycles < 50 {
                let ns = netns_with_lo(&unique_name("pst-churn")).unwrap();
                let name = format!("churn{cycles}");
                add(&n, &name, ns.name(), None, None).unwrap();
                n.switch.call(&Request::PortDel(PortDelArgs { name })).unwrap();
                cycles += 1;
            }
            cycles
        });
        // Paced at ~2.5k datagrams/s, so even a busy CI box (where the switch may be off the
        // CPU for a few hundred milliseconds) never overflows the pod's TAP queue (1,000
        // frames) or a socket buffer: any loss would be the switch's.
        let start = Instant::now();
        for seq in 0..COUNT {
            let due = start + Duration::from_micros(400) * seq;
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            tx.send_to(&seq.to_be_bytes(), dst).unwrap();
        }
        std::thread::sleep(Duration::from_millis(300));
        done.store(true, Ordering::SeqCst);
        let cycles = churner.join().unwrap();
        let got = receiver.join().unwrap();
        if got != COUNT as usize {
            panic!(
                "{} datagrams lost during {cycles} add/remove cycles; the switch saw: {:?} / {:?}",
                COUNT as usize - got,
                port_stats(&n, &a.name),
                port_stats(&n, &b.name)
            );
        }
        cycles
    });
    assert!(churned >= 3, "ports were added and removed meanwhile ({churned} cycles)");
    assert_eq!(port_stats(&n, "pod1").drops.values().sum::<u64>(), 0);
    assert_eq!(port_names(&n), vec!["psw0", "pod1", "pod2"]);
}

#[test]
fn refused_adds_leave_nothing_behind() {
    require_root!();
    let n = node(EXE, 1);
    let ns = netns_with_lo(&unique_name("pst-refused")).unwrap();
    let before_node_links = links(&n.ns);
    let cases = [
        (add(&n, "x", "no-such-namespace-here", None, None), ErrorKind::NotFound, "args.netns"),
        (add(&n, "x", ns.name(), None, Some("lo")), ErrorKind::AlreadyExists, "args.ifname"),
        (
            add(&n, "x", ns.name(), Some(&format!("{}/24", n.pods[0].ip)), None),
            ErrorKind::AlreadyExists,
            "args.ip",
        ),
        (add(&n, "x", ns.name(), Some("10.9.9.9/24"), None), ErrorKind::InvalidArgument, "args.ip"),
        (
            add(&n, "x", ns.name(), Some("10.244.1.1/24"), None),
            ErrorKind::InvalidArgument,
            "args.ip",
        ),
        (
            add(&n, "x", ns.name(), None, Some("a-name-too-long-for-linux")),
            ErrorKind::InvalidArgument,
            "args.ifname",
        ),
        (add(&n, "pod1", ns.name(), None, None), ErrorKind::AlreadyExists, "args.name"),
        (add(&n, "bad name!", ns.name(), None, None), ErrorKind::InvalidArgument, "args.name"),
    ];
    for (i, (result, kind, field)) in cases.into_iter().enumerate() {
        let (k, f) = api_err(result);
        assert_eq!((k, f.as_deref()), (kind, Some(field)), "case {i}");
    }
    assert_eq!(links(&ns), vec!["lo"], "nothing was left in the pod namespace");
    assert_eq!(links(&n.ns), before_node_links, "nothing was left in the node namespace");
    assert_eq!(port_names(&n), vec!["psw0", "pod1"]);
    // No address was consumed by the failures: the next add gets the next free one.
    let Reply::Port(p) = add(&n, "x", ns.name(), None, None).unwrap() else { panic!() };
    assert_eq!(p.ip.unwrap().to_string(), "10.244.1.3/24");
    ping_ok(&ns, n.pods[0].ip);
}

#[test]
fn removing_a_port_removes_its_interface_and_frees_its_address() {
    require_root!();
    let n = node(EXE, 2);
    let gone = &n.pods[1];
    ping_ok(&n.pods[0].ns, gone.ip);
    let Reply::Port(info) =
        n.switch.call(&Request::PortDel(PortDelArgs { name: "pod2".into() })).unwrap()
    else {
        panic!()
    };
    assert_eq!(info.ip.unwrap().addr, gone.ip);
    assert_eq!(links(&gone.ns), vec!["lo"], "eth0 went with the port");
    let r = traffic::ping(
        &n.pods[0].ns,
        gone.ip,
        2,
        Duration::from_millis(50),
        Duration::from_millis(500),
    )
    .unwrap();
    assert_eq!(r.received, 0);
    let (k, f) = api_err(n.switch.call(&Request::PortDel(PortDelArgs { name: "pod2".into() })));
    assert_eq!((k, f.as_deref()), (ErrorKind::NotFound, Some("args.name")));
    // The address can be given to a new pod.
    let ns = netns_with_lo(&unique_name("pst-reuse")).unwrap();
    add(&n, "again", ns.name(), Some(&format!("{}/24", gone.ip)), None).unwrap();
    ping_ok(&n.pods[0].ns, gone.ip);
    // The host port cannot be removed through the API.
    let (k, _) = api_err(n.switch.call(&Request::PortDel(PortDelArgs { name: "psw0".into() })));
    assert_eq!(k, ErrorKind::InvalidArgument);
}

#[test]
fn the_port_limit_is_enforced() {
    require_root!();
    let n = node_with(EXE, 2, |c| c.ports.max_ports = 3);
    let ns = netns_with_lo(&unique_name("pst-limit")).unwrap();
    let (k, _) = api_err(add(&n, "third", ns.name(), None, None));
    assert_eq!(k, ErrorKind::ResourceExhausted);
    assert_eq!(links(&ns), vec!["lo"]);
}

#[test]
fn removing_ports_that_carry_traffic_leaves_the_switch_forwarding() {
    require_root!();
    let n = node(EXE, 4);
    let (a, b) = (&n.pods[0], &n.pods[1]);
    std::thread::scope(|s| {
        // pod1 floods pod2 while first the receiver's, then the sender's port goes away.
        let flood = s.spawn(|| {
            traffic::udp_flood(
                traffic::Endpoint { ns: &b.ns, addr: b.ip },
                &a.ns,
                64,
                Duration::from_millis(1500),
            )
        });
        std::thread::sleep(Duration::from_millis(400));
        n.switch.call(&Request::PortDel(PortDelArgs { name: "pod2".into() })).unwrap();
        std::thread::sleep(Duration::from_millis(400));
        n.switch.call(&Request::PortDel(PortDelArgs { name: "pod1".into() })).unwrap();
        // The flood itself may end in an error once its interface is gone; the switch must not.
        let _ = flood.join().unwrap();
    });
    assert_eq!(port_names(&n), vec!["psw0", "pod3", "pod4"]);
    ping_ok(&n.pods[2].ns, n.pods[3].ip);
    ping_ok(&n.ns, n.pods[3].ip);
    let s = stats(&n);
    assert!(s.ports.iter().all(|p| !p.drops.contains_key("rx_error")), "{:?}", s.ports);
}

fn namespace_deleted_under_a_port(kind: PortAddKind) {
    let n = node_kind(EXE, 2, kind);
    let ns = netns_with_lo(&unique_name("pst-vanish")).unwrap();
    add(&n, "doomed", ns.name(), None, None).unwrap();
    drop(ns); // the pod's namespace, and with it the TAP device, goes away under the switch
    let state = || match n.switch.call(&Request::PortList).unwrap() {
        Reply::Ports { ports } => ports.into_iter().find(|p| p.name == "doomed").unwrap().state,
        other => panic!("{other:?}"),
    };
    assert!(
        wait_until(Duration::from_secs(5), || state().starts_with("failed")),
        "state: {}",
        state()
    );
    // Floods no longer go to it, the rest keeps working, and it can be removed.
    ping_ok(&n.pods[0].ns, n.pods[1].ip);
    n.switch.call(&Request::PortDel(PortDelArgs { name: "doomed".into() })).unwrap();
    assert_eq!(port_names(&n), vec!["psw0", "pod1", "pod2"]);
}

#[test]
fn a_port_whose_namespace_is_deleted_is_marked_failed_and_can_be_removed() {
    require_root!();
    namespace_deleted_under_a_port(PortAddKind::Tap);
}

#[test]
fn an_afxdp_port_whose_namespace_is_deleted_is_marked_failed_and_can_be_removed() {
    require_root!();
    namespace_deleted_under_a_port(PortAddKind::Afxdp);
    // (The veth pair went with the namespace: nothing is left to delete.)
}

/// The AF_XDP host ends (`psx…`) in the switch's namespace.
fn host_ends(ns: &NetNs) -> Vec<LinkInfo> {
    let mut nl = Netlink::open_in(ns).unwrap();
    nl.link_list().unwrap().into_iter().filter(|l| l.name.starts_with("psx")).collect()
}

fn port_info(n: &PodswitchNode, name: &str) -> PortInfo {
    match n.switch.call(&Request::PortList).unwrap() {
        Reply::Ports { ports } => ports.into_iter().find(|p| p.name == name).unwrap(),
        other => panic!("{other:?}"),
    }
}

/// The tcx egress programs of an AF_XDP pod's `eth0`: the switch's queue-steering program
/// when it runs several workers, nothing with one; `None` on a kernel without tcx.
fn steering_programs(n: &PodswitchNode, ns: &NetNs) -> Option<Vec<u32>> {
    match pod_egress_programs(ns) {
        Ok(ids) => {
            let want = usize::from(n.config.worker.count > 1);
            assert_eq!(ids.len(), want, "{} workers: {ids:?}", n.config.worker.count);
            Some(ids)
        }
        Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => None,
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn removing_an_afxdp_port_removes_its_veth_and_its_xdp_program() {
    require_root!();
    let mut n = node_kind(EXE, 2, PortAddKind::Afxdp);
    let gone = &n.pods[1];
    ping_ok(&n.pods[0].ns, gone.ip);
    assert_eq!(port_info(&n, "pod2").kind, PortKind::Afxdp);
    let ends = host_ends(&n.ns);
    assert_eq!(ends.len(), 2, "one host end per pod: {ends:?}");
    assert!(ends.iter().all(|l| l.kind.as_deref() == Some("veth") && l.up), "{ends:?}");
    let progs: Vec<u32> = ends.iter().map(|l| l.xdp_prog_id.expect("XDP attached")).collect();
    assert_ne!(progs[0], progs[1], "a program per port");
    // With several workers each pod end carries the queue-steering program (one for all).
    let steering = steering_programs(&n, &n.pods[0].ns);
    assert_eq!(steering, steering_programs(&n, &gone.ns));
    assert!(progs.iter().all(|&id| vswitch::sys::bpf::prog_loaded(id).unwrap()));
    let Reply::Port(info) =
        n.switch.call(&Request::PortDel(PortDelArgs { name: "pod2".into() })).unwrap()
    else {
        panic!()
    };
    assert_eq!((info.ip.unwrap().addr, info.kind), (gone.ip, PortKind::Afxdp));
    assert_eq!(links(&gone.ns), vec!["lo"], "the pod's eth0 went with the port");
    let left = host_ends(&n.ns);
    assert_eq!(left.len(), 1, "the host end went with the port: {left:?}");
    let removed = *progs.iter().find(|&&id| Some(id) != left[0].xdp_prog_id).unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || !vswitch::sys::bpf::prog_loaded(removed).unwrap()),
        "XDP program {removed} still loaded"
    );
    let r = traffic::ping(
        &n.pods[0].ns,
        gone.ip,
        2,
        Duration::from_millis(50),
        Duration::from_millis(500),
    )
    .unwrap();
    assert_eq!(r.received, 0);
    // The address and the port id can be used again, by either kind.
    let ns = netns_with_lo(&unique_name("pst-xreuse")).unwrap();
    add_kind(&n, "again", ns.name(), Some(&format!("{}/24", gone.ip)), None, PortAddKind::Afxdp)
        .unwrap();
    ping_ok(&n.pods[0].ns, gone.ip);
    assert_eq!(host_ends(&n.ns).len(), 2);
    assert_eq!(steering_programs(&n, &ns), steering);
    // A switch that stops takes its veth pairs with it, as TAPs vanish with their fds.
    n.switch.stop().unwrap();
    assert!(host_ends(&n.ns).is_empty(), "{:?}", host_ends(&n.ns));
    assert_eq!(links(&n.pods[0].ns), vec!["lo"]);
    assert_eq!(links(&ns), vec!["lo"]);
}

#[test]
fn refused_and_failed_afxdp_adds_leave_nothing_behind() {
    require_root!();
    let n = node_kind(EXE, 1, PortAddKind::Afxdp);
    let ns = netns_with_lo(&unique_name("pst-xrefused")).unwrap();
    let before_node_links = links(&n.ns);
    // Fails after the veth pair exists: the pod's namespace already has the name.
    let (k, f) = api_err(add_kind(&n, "x", ns.name(), None, Some("lo"), PortAddKind::Afxdp));
    assert_eq!((k, f.as_deref()), (ErrorKind::AlreadyExists, Some("args.ifname")));
    // Refused before anything is created: too large for one UMEM frame.
    let too_big = n.switch.call(&Request::PortAdd(PortAddArgs {
        name: "y".into(),
        netns: ns.name().into(),
        ip: None,
        mac: None,
        ifname: None,
        mtu: Some(9000),
        kind: PortAddKind::Afxdp,
        port_security: true,
        allow_ips: Vec::new(),
    }));
    let (k, f) = api_err(too_big);
    assert_eq!((k, f.as_deref()), (ErrorKind::InvalidArgument, Some("args.mtu")));
    assert_eq!(links(&ns), vec!["lo"], "nothing was left in the pod namespace");
    assert_eq!(links(&n.ns), before_node_links, "nothing was left in the node namespace");
    let Reply::Port(p) = add_kind(&n, "x", ns.name(), None, None, PortAddKind::Afxdp).unwrap()
    else {
        panic!()
    };
    assert_eq!(p.ip.unwrap().to_string(), "10.244.1.3/24", "no address was consumed");
    ping_ok(&ns, n.pods[0].ip);
}
