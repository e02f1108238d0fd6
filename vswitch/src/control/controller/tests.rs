//! The controller's logic against fake devices and real workers over memory ports: no root,
//! no kernel device. Port add/del bookkeeping and rollback, and the validate → build →
//! publish → keep order of Service and peer changes.

use std::collections::BTreeSet;
use std::io;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use super::*;
use crate::cidr::Ipv4Cidr;
use crate::config::{Config, OverlayConfig, PeerConfig, Pinning, WorkerConfig};
use crate::pipeline::Pipeline;
use crate::port::memory::MemoryPort;
use crate::port::Port;
use crate::sys::netns::NetNs;

/// What the fake devices were asked to do, and how to misbehave.
#[derive(Debug, Default)]
struct Log {
    created: Vec<(PortId, String)>,
    deleted: Vec<PortId>,
    routes: BTreeSet<(Ipv4Cidr, u32)>,
    /// Queues a created device has (default: one per worker).
    queues: Option<usize>,
    /// Refuse to create the next device.
    fail_create: bool,
}

#[derive(Debug)]
struct FakeDevices {
    log: Arc<Mutex<Log>>,
    workers: usize,
}

impl Devices for FakeDevices {
    fn open_netns(&mut self, spec: &str) -> io::Result<NetNs> {
        if spec == "missing" {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no namespace named missing"));
        }
        // Any namespace handle will do: the fake moves nothing into it.
        NetNs::open("/proc/self/ns/net")
    }

    fn create_pod(&mut self, _: &NetNs, pod: &PodDevice<'_>) -> Result<PodQueues, ApiError> {
        let mut log = self.log.lock().unwrap();
        if std::mem::take(&mut log.fail_create) {
            return Err(ApiError::new(ErrorKind::Failed, "create TAP: refused by the test"));
        }
        log.created.push((pod.id, pod.ifname.to_string()));
        let n = log.queues.unwrap_or(self.workers);
        let queues = (0..n).map(|_| Box::new(MemoryPort::new().0) as Box<dyn Port>).collect();
        Ok(PodQueues { queues, steering: None })
    }

    fn delete_pod(&mut self, id: PortId, _: PortKind) {
        self.log.lock().unwrap().deleted.push(id);
    }

    fn route_add(&mut self, cidr: Ipv4Cidr, index: u32) -> io::Result<()> {
        self.log.lock().unwrap().routes.insert((cidr, index));
        Ok(())
    }

    fn route_del(&mut self, cidr: Ipv4Cidr, index: u32) {
        self.log.lock().unwrap().routes.remove(&(cidr, index));
    }

    fn tx_dropped(&mut self, _: Option<&str>, _: &str) -> Option<u64> {
        None
    }
}

fn config() -> Config {
    let mut c = Config::for_node("n1", "10.244.1.0/24".parse().unwrap(), "/nonexistent".into());
    c.overlay = Some(OverlayConfig {
        underlay_ip: Ipv4Addr::new(192, 168, 0, 1),
        vni: 1,
        udp_port: 4789,
        underlay_mtu: 1500,
        udp_checksum: false,
        afxdp_interface: None,
        max_peers: 2,
        peers: vec![PeerConfig::parse("n2", "192.168.0.2", "10.244.2.0/24", None).unwrap()],
    });
    // No built-in DNS Services: the tables hold only what a test puts there.
    c.dns = None;
    c
}

/// A controller over two workers and fake devices, and the devices' log.
fn controller() -> (Controller, Arc<Mutex<Log>>) {
    controller_with(|_| {})
}

fn controller_with(change: impl FnOnce(&mut Config)) -> (Controller, Arc<Mutex<Log>>) {
    let mut config = config();
    change(&mut config);
    let settings = WorkerConfig { count: 2, pin: Pinning::Off, ..WorkerConfig::single() };
    let worker = WorkerHandle::spawn_with(
        |s| Pipeline::for_worker(&config, s),
        config.ports.max_ports,
        settings,
    )
    .unwrap();
    let log = Arc::new(Mutex::new(Log::default()));
    let devices = FakeDevices { log: log.clone(), workers: 2 };
    (Controller::with_devices(config, worker, Box::new(devices)).unwrap(), log)
}

fn ok(c: &Controller, req: Request) -> Reply {
    match c.handle(req) {
        Response::Ok(r) => r,
        Response::Error(e) => panic!("{e:?}"),
    }
}

fn refused(c: &Controller, req: Request) -> ApiError {
    match c.handle(req) {
        Response::Ok(r) => panic!("accepted: {r:?}"),
        Response::Error(e) => e,
    }
}

fn add(name: &str) -> Request {
    Request::PortAdd(PortAddArgs {
        name: name.into(),
        netns: format!("{name}-ns"),
        ip: None,
        mac: None,
        ifname: None,
        mtu: None,
        kind: PortAddKind::Tap,
        port_security: true,
        allow_ips: Vec::new(),
    })
}

fn port_ids(c: &Controller) -> Vec<u16> {
    let Reply::Ports { ports } = ok(c, Request::PortList) else { panic!() };
    ports.iter().map(|p| p.id).collect()
}

/// Ports the workers poll (by their counters), whatever the controller's records say.
fn worker_ports(c: &Controller) -> Vec<PortId> {
    c.worker.stats().unwrap().ports.iter().map(|p| p.id).collect()
}

#[test]
fn port_add_creates_the_device_hands_it_over_and_refuses_a_duplicate_name() {
    let (c, log) = controller();
    let Reply::Port(p) = ok(&c, add("web-1")) else { panic!() };
    assert_eq!(p.ip.unwrap().addr, Ipv4Addr::new(10, 244, 1, 2));
    assert_eq!((p.ifname.as_str(), p.state.as_str()), ("eth0", "up"));
    assert_eq!(log.lock().unwrap().created, [(PortId(p.id), "eth0".to_string())]);
    assert_eq!(worker_ports(&c), [PortId(p.id)]);
    let e = refused(&c, add("web-1"));
    assert_eq!((e.kind, e.field.as_deref()), (ErrorKind::AlreadyExists, Some("args.name")));
    assert_eq!(log.lock().unwrap().created.len(), 1, "no device for the refused add");
    let e = refused(&c, Request::PortAdd(PortAddArgs { netns: "missing".into(), ..args("web-2") }));
    assert_eq!((e.kind, e.field.as_deref()), (ErrorKind::NotFound, Some("args.netns")));
    assert_eq!(port_ids(&c), [p.id]);
}

fn args(name: &str) -> PortAddArgs {
    let Request::PortAdd(a) = add(name) else { unreachable!() };
    a
}

#[test]
fn port_add_rolls_back_the_device_and_the_address_when_the_workers_refuse_it() {
    let (c, log) = controller();
    // Three queues for two workers: every worker refuses the port.
    log.lock().unwrap().queues = Some(3);
    let e = refused(&c, add("web-1"));
    assert_eq!(e.kind, ErrorKind::Failed);
    assert!(e.message.contains("attach: 3 queues for 2 workers"), "{e:?}");
    let created = log.lock().unwrap().created[0].0;
    assert_eq!(log.lock().unwrap().deleted, [created], "the device is deleted again");
    assert!(port_ids(&c).is_empty() && worker_ports(&c).is_empty());
    // Nothing was kept: the same id and address go to the next port.
    log.lock().unwrap().queues = None;
    let Reply::Port(p) = ok(&c, add("web-1")) else { panic!() };
    assert_eq!((PortId(p.id), p.ip.unwrap().addr), (created, Ipv4Addr::new(10, 244, 1, 2)));
}

#[test]
fn a_device_that_cannot_be_created_claims_nothing() {
    let (c, log) = controller();
    log.lock().unwrap().fail_create = true;
    let e = refused(&c, add("web-1"));
    assert!(e.message.contains("refused by the test"), "{e:?}");
    assert!(log.lock().unwrap().deleted.is_empty(), "nothing was made");
    let Reply::Port(p) = ok(&c, add("web-1")) else { panic!() };
    assert_eq!(p.ip.unwrap().addr, Ipv4Addr::new(10, 244, 1, 2));
}

#[test]
fn port_del_removes_the_device_and_the_workers_state() {
    let (c, log) = controller();
    let Reply::Port(a) = ok(&c, add("web-1")) else { panic!() };
    let Reply::Port(b) = ok(&c, add("web-2")) else { panic!() };
    let Reply::Port(gone) = ok(&c, Request::PortDel(PortDelArgs { name: "web-1".into() })) else {
        panic!()
    };
    assert_eq!(gone.id, a.id);
    assert_eq!(log.lock().unwrap().deleted, [PortId(a.id)]);
    assert_eq!(worker_ports(&c), [PortId(b.id)]);
    assert_eq!(port_ids(&c), [b.id]);
    let e = refused(&c, Request::PortDel(PortDelArgs { name: "web-1".into() }));
    assert_eq!((e.kind, e.field.as_deref()), (ErrorKind::NotFound, Some("args.name")));
    // Its address and id are free again.
    let again = Request::PortAdd(PortAddArgs { ip: a.ip, ..args("web-3") });
    let Reply::Port(again) = ok(&c, again) else { panic!() };
    assert_eq!((again.id, again.ip), (a.id, a.ip));
}

fn web(endpoints: Vec<Endpoint>) -> ServiceSpec {
    ServiceSpec {
        name: "web".into(),
        namespace: "default".into(),
        vip: Ipv4Addr::new(10, 96, 0, 20),
        port: 80,
        proto: L4Proto::Tcp,
        endpoints,
        algorithm: Algorithm::Maglev,
        session_affinity_secs: None,
        node_port: None,
    }
}

fn ep(last: u8) -> Endpoint {
    Endpoint::new(Ipv4Addr::new(10, 244, 1, last), 8080)
}

fn listed(c: &Controller) -> Vec<ServiceSpec> {
    let Reply::Services { services } = ok(c, Request::ServiceList) else { panic!() };
    services
}

/// The controller's current Service table, and whether both workers hold that very
/// snapshot (nothing else holds it in these tests).
fn published(c: &Controller) -> (Arc<ServiceTable>, bool) {
    let t = c.state().services.clone();
    let shared = Arc::strong_count(&t) == 1 + 1 + c.worker.count();
    (t, shared)
}

#[test]
fn service_changes_publish_one_snapshot_that_service_list_shows() {
    let (c, _) = controller();
    ok(&c, Request::ServiceAdd(web(vec![ep(2), ep(3)])));
    let (t, shared) = published(&c);
    assert!(shared, "the workers hold the controller's snapshot");
    assert_eq!(listed(&c), t.list());
    assert_eq!(listed(&c), [web(vec![ep(2), ep(3)])]);
    let set = EndpointSetArgs {
        namespace: "default".into(),
        name: "web".into(),
        port: None,
        proto: None,
        endpoints: vec![ep(4)],
    };
    let Reply::Applied { services, .. } = ok(&c, Request::EndpointSet(set)) else { panic!() };
    assert_eq!(services, 1);
    let (t2, shared) = published(&c);
    assert!(shared && !Arc::ptr_eq(&t, &t2));
    assert_eq!(listed(&c)[0].endpoints, [ep(4)]);
    let del = ServiceRefArgs { namespace: "default".into(), name: "web".into() };
    let Reply::Service(s) = ok(&c, Request::ServiceDel(del.clone())) else { panic!() };
    assert_eq!(s.endpoints, [ep(4)]);
    assert!(listed(&c).is_empty() && published(&c).1);
    let e = refused(&c, Request::ServiceDel(del));
    assert_eq!((e.kind, e.field.as_deref()), (ErrorKind::NotFound, Some("args.name")));
    // An apply publishes the whole table the same way.
    let args = ServiceApplyArgs { services: vec![web(vec![ep(5)])] };
    ok(&c, Request::ServiceApply(args));
    assert!(published(&c).1);
    assert_eq!(listed(&c), [web(vec![ep(5)])]);
}

#[test]
fn a_refused_service_change_publishes_nothing_and_names_the_field() {
    let (c, _) = controller();
    ok(&c, Request::ServiceAdd(web(vec![ep(2)])));
    let (before, _) = published(&c);
    let unchanged = |c: &Controller| {
        let now = c.state().services.clone();
        assert!(Arc::ptr_eq(&before, &now), "a new table was published");
        // Held here twice, by the controller and by every worker.
        assert_eq!(Arc::strong_count(&now), 3 + c.worker.count());
    };
    let bad = web(vec![Endpoint::new(Ipv4Addr::new(10, 244, 1, 2), 0)]);
    let e = refused(&c, Request::ServiceAdd(bad));
    assert_eq!(
        (e.kind, e.field.as_deref()),
        (ErrorKind::InvalidArgument, Some("args.endpoints[0].port"))
    );
    unchanged(&c);
    // Another Service on web's key: the conflict names the field too.
    let e = refused(&c, Request::ServiceAdd(ServiceSpec { name: "api".into(), ..web(vec![]) }));
    assert_eq!((e.kind, e.field.as_deref()), (ErrorKind::InvalidArgument, Some("args.vip")));
    unchanged(&c);
    let set = |name: &str, endpoints| {
        Request::EndpointSet(EndpointSetArgs {
            namespace: "default".into(),
            name: name.into(),
            port: None,
            proto: None,
            endpoints,
        })
    };
    let e = refused(&c, set("nope", vec![]));
    assert_eq!((e.kind, e.field.as_deref()), (ErrorKind::NotFound, Some("args.name")));
    let e = refused(&c, set("web", vec![ep(0), ep(0)]));
    assert_eq!(
        (e.kind, e.field.as_deref()),
        (ErrorKind::InvalidArgument, Some("args.endpoints[1]"))
    );
    unchanged(&c);
    let apply =
        vec![web(vec![ep(3)]), ServiceSpec { vip: Ipv4Addr::new(192, 168, 9, 9), ..web(vec![]) }];
    let e = refused(&c, Request::ServiceApply(ServiceApplyArgs { services: apply }));
    assert_eq!(e.field.as_deref(), Some("args.services[1].vip"));
    unchanged(&c);
    assert_eq!(listed(&c), [web(vec![ep(2)])]);
}

#[test]
fn a_full_service_table_refuses_new_services_and_counts_it() {
    let (c, _) = controller_with(|c| c.services.max_services = 3);
    let max = c.config.services.max_services;
    let specs: Vec<ServiceSpec> = (0..max as u32)
        .map(|i| ServiceSpec {
            name: format!("s{i}"),
            vip: Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 1, 0)) + i),
            ..web(vec![ep(2)])
        })
        .collect();
    ok(&c, Request::ServiceApply(ServiceApplyArgs { services: specs }));
    let e = refused(&c, Request::ServiceAdd(web(vec![ep(2)])));
    assert_eq!(e.field.as_deref(), Some("args.services"));
    assert_eq!(c.service_counters().unwrap().full_refusals, 1);
}

fn peer(name: &str, ip: [u8; 4], cidr: &str) -> Request {
    Request::PeerAdd(PeerAddArgs {
        name: name.into(),
        ip: Ipv4Addr::from(ip),
        pod_cidr: cidr.parse().unwrap(),
        vtep_mac: None,
    })
}

fn peer_names(c: &Controller) -> Vec<String> {
    let Reply::Peers { peers } = ok(c, Request::PeerList) else { panic!() };
    peers.into_iter().map(|p| p.name).collect()
}

#[test]
fn peers_are_published_like_services_and_refusals_change_nothing() {
    let (c, _) = controller();
    assert_eq!(peer_names(&c), ["n2"], "the configured peers, published at start");
    let held = |c: &Controller| Arc::strong_count(&c.state().peers.clone()) == 2 + c.worker.count();
    assert!(held(&c));
    ok(&c, peer("n3", [192, 168, 0, 3], "10.244.3.0/24"));
    assert_eq!(peer_names(&c), ["n2", "n3"]);
    assert!(held(&c));
    let before = c.state().peers.clone();
    // Overlapping the node's own pod CIDR, then a full table (max_peers = 2).
    let e = refused(&c, peer("n4", [192, 168, 0, 4], "10.244.1.0/24"));
    assert_eq!(e.field.as_deref(), Some("args.pod_cidr"));
    let e = refused(&c, peer("n4", [192, 168, 0, 4], "10.244.4.0/24"));
    assert_eq!(e.kind, ErrorKind::ResourceExhausted);
    assert!(Arc::ptr_eq(&before, &c.state().peers));
    drop(before);
    let Reply::Peer(p) = ok(&c, Request::PeerDel(PeerDelArgs { name: "n2".into() })) else {
        panic!()
    };
    assert_eq!(p.name, "n2");
    assert_eq!(peer_names(&c), ["n3"]);
    assert!(held(&c));
    let e = refused(&c, Request::PeerDel(PeerDelArgs { name: "n2".into() }));
    assert_eq!(e.kind, ErrorKind::NotFound);
}
