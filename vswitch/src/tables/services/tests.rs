//! The Service table's tests: spec validation and JSON shape, building and editing,
//! selection, and what per-worker state survives a new table.

use std::net::Ipv4Addr;

use rustc_hash::FxHashMap;

use super::*;
use crate::cidr::Ipv4Cidr;

/// A selection with fresh per-worker state (enough for every algorithm but round-robin).
fn pick(t: &ServiceTable, k: &ServiceKey, h: u64) -> Selection {
    t.select(k, h, &mut ServiceState::new())
}

fn cidr() -> Ipv4Cidr {
    "10.96.0.0/12".parse().unwrap()
}

fn ep(last: u8, port: u16) -> Endpoint {
    Endpoint::new(Ipv4Addr::new(10, 244, 1, last), port)
}

fn spec(name: &str, vip_last: u8, endpoints: Vec<Endpoint>, algorithm: Algorithm) -> ServiceSpec {
    ServiceSpec {
        name: name.to_string(),
        namespace: "default".to_string(),
        vip: Ipv4Addr::new(10, 96, 0, vip_last),
        port: 80,
        proto: L4Proto::Tcp,
        endpoints,
        algorithm,
        session_affinity_secs: None,
        node_port: None,
    }
}

fn three() -> Vec<Endpoint> {
    vec![ep(2, 8080), ep(3, 8080), ep(4, 8080)]
}

fn key(vip_last: u8) -> ServiceKey {
    ServiceKey { vip: Ipv4Addr::new(10, 96, 0, vip_last), port: 80, proto: L4Proto::Tcp }
}

fn table(specs: Vec<ServiceSpec>) -> ServiceTable {
    ServiceTable::from_specs(specs, cidr(), 100, maglev::DEFAULT_MAX_SIZE, None).unwrap()
}

/// How many of 3000 flow hashes each endpoint (by last octet) gets.
fn spread(t: &ServiceTable, k: &ServiceKey) -> FxHashMap<u8, usize> {
    let mut m = FxHashMap::default();
    let mut state = ServiceState::new();
    state.adopt(t);
    for h in 0..3000u64 {
        match t.select(k, maglev::mix64(h), &mut state) {
            Selection::Endpoint { ip, .. } => *m.entry(ip.octets()[3]).or_insert(0) += 1,
            other => panic!("{other:?}"),
        }
    }
    m
}

#[test]
fn keys_protocols_and_algorithms_parse_and_print() {
    let k: ServiceKey = "10.96.0.20:80/tcp".parse().unwrap();
    assert_eq!(k, ServiceKey { vip: Ipv4Addr::new(10, 96, 0, 20), port: 80, proto: L4Proto::Tcp });
    assert_eq!(k.to_string(), "10.96.0.20:80/tcp");
    assert_eq!("10.96.0.20:80".parse::<ServiceKey>().unwrap(), k);
    let u: ServiceKey = "10.96.0.10:53/UDP".parse().unwrap();
    assert_eq!(
        (u.proto, u.proto.number(), u.to_string().as_str()),
        (L4Proto::Udp, 17, "10.96.0.10:53/udp")
    );
    assert_eq!(L4Proto::Tcp.number(), 6);
    assert_eq!("10.96.0.20:80/sctp".parse::<ServiceKey>().unwrap_err().field, "proto");
    assert_eq!("10.96.0.20/tcp".parse::<ServiceKey>().unwrap_err().field, "key");
    assert_eq!("10.96.0.x:80".parse::<ServiceKey>().unwrap_err().field, "vip");
    assert_eq!("10.96.0.20:99999".parse::<ServiceKey>().unwrap_err().field, "port");
    for (s, a) in [
        ("random", Algorithm::Random),
        ("round-robin", Algorithm::RoundRobin),
        ("round_robin", Algorithm::RoundRobin),
        ("maglev", Algorithm::Maglev),
    ] {
        assert_eq!(s.parse::<Algorithm>().unwrap(), a);
    }
    assert!("hash".parse::<Algorithm>().is_err());
    assert_eq!(Algorithm::default(), Algorithm::Maglev);
}

#[test]
fn validation_errors_name_the_field() {
    let field = |f: &dyn Fn(&mut ServiceSpec)| {
        let mut s = spec("web", 20, three(), Algorithm::Maglev);
        f(&mut s);
        s.validate(cidr()).err().map(|e| e.field)
    };
    assert_eq!(field(&|_| ()), None);
    assert_eq!(field(&|s| s.name = "Web".into()).as_deref(), Some("name"));
    assert_eq!(field(&|s| s.name = "-web".into()).as_deref(), Some("name"));
    assert_eq!(field(&|s| s.name = "a".repeat(64)).as_deref(), Some("name"));
    assert_eq!(field(&|s| s.name = "a".repeat(63)), None);
    assert_eq!(field(&|s| s.namespace = String::new()).as_deref(), Some("namespace"));
    assert_eq!(field(&|s| s.namespace = "kube.system".into()).as_deref(), Some("namespace"));
    assert_eq!(field(&|s| s.vip = Ipv4Addr::new(10, 112, 0, 1)).as_deref(), Some("vip"));
    assert_eq!(field(&|s| s.port = 0).as_deref(), Some("port"));
    assert_eq!(field(&|s| s.endpoints[1].port = 0).as_deref(), Some("endpoints[1].port"));
    assert_eq!(field(&|s| s.endpoints[0].weight = 0).as_deref(), Some("endpoints[0].weight"));
    assert_eq!(
        field(&|s| s.endpoints[2].ip = Ipv4Addr::new(224, 0, 0, 1)).as_deref(),
        Some("endpoints[2].ip")
    );
    assert_eq!(field(&|s| s.endpoints[2] = ep(2, 8080)).as_deref(), Some("endpoints[2]"));
    // Same address, other port: not a duplicate.
    assert_eq!(field(&|s| s.endpoints[2] = ep(2, 8081)), None);
    assert_eq!(
        field(&|s| s.endpoints = (0..=MAX_ENDPOINTS as u16).map(|p| ep(9, p + 1)).collect())
            .as_deref(),
        Some("endpoints")
    );
    assert_eq!(
        field(&|s| s.endpoints = (0..MAX_ENDPOINTS as u16).map(|p| ep(9, p + 1)).collect()),
        None
    );
    assert_eq!(
        field(&|s| s.session_affinity_secs = Some(0)).as_deref(),
        Some("session_affinity_secs")
    );
    assert_eq!(
        field(&|s| s.session_affinity_secs = Some(86_401)).as_deref(),
        Some("session_affinity_secs")
    );
    assert_eq!(field(&|s| s.session_affinity_secs = Some(10_800)), None);
    let e = spec("web", 20, vec![ep(2, 0)], Algorithm::Maglev).validate(cidr()).unwrap_err();
    assert_eq!(e.to_string(), "endpoints[0].port: must not be 0");
}

#[test]
fn from_specs_refuses_duplicates_and_too_many() {
    let dup_key =
        vec![spec("a", 20, three(), Algorithm::Maglev), spec("b", 20, three(), Algorithm::Maglev)];
    let e = ServiceTable::from_specs(dup_key, cidr(), 10, 65_537, None).unwrap_err();
    assert_eq!(e.field, "services[1].vip");
    assert!(e.reason.contains("services[0]"), "{e}");

    let mut other_port = spec("b", 20, three(), Algorithm::Maglev);
    other_port.port = 443;
    let mut other_proto = spec("c", 20, three(), Algorithm::Maglev);
    other_proto.proto = L4Proto::Udp;
    let ok = vec![spec("a", 20, three(), Algorithm::Maglev), other_port, other_proto];
    assert_eq!(ServiceTable::from_specs(ok, cidr(), 10, 65_537, None).unwrap().len(), 3);

    let dup_name =
        vec![spec("a", 20, three(), Algorithm::Maglev), spec("a", 21, three(), Algorithm::Maglev)];
    let e = ServiceTable::from_specs(dup_name, cidr(), 10, 65_537, None).unwrap_err();
    assert_eq!(e.field, "services[1].name");
    // Same name in another namespace is another service.
    let mut elsewhere = spec("a", 21, three(), Algorithm::Maglev);
    elsewhere.namespace = "prod".into();
    let ok = vec![spec("a", 20, three(), Algorithm::Maglev), elsewhere];
    assert_eq!(ServiceTable::from_specs(ok, cidr(), 10, 65_537, None).unwrap().len(), 2);

    let bad = vec![
        spec("a", 20, three(), Algorithm::Maglev),
        spec("b", 21, vec![ep(2, 0)], Algorithm::Maglev),
    ];
    let e = ServiceTable::from_specs(bad, cidr(), 10, 65_537, None).unwrap_err();
    assert_eq!(e.field, "services[1].endpoints[0].port");

    let many = (0..3).map(|i| spec(&format!("s{i}"), 20 + i, three(), Algorithm::Maglev)).collect();
    assert_eq!(
        ServiceTable::from_specs(many, cidr(), 2, 65_537, None).unwrap_err().field,
        "services"
    );
}

#[test]
fn every_algorithm_spreads_over_all_endpoints() {
    for a in [Algorithm::Random, Algorithm::RoundRobin, Algorithm::Maglev] {
        let t = table(vec![spec("web", 20, three(), a)]);
        let m = spread(&t, &key(20));
        assert_eq!(m.len(), 3, "{a:?}: {m:?}");
        for (&last, &n) in &m {
            assert!((700..=1300).contains(&n), "{a:?}: endpoint {last} got {n}");
        }
        if a == Algorithm::RoundRobin {
            assert!(m.values().all(|&n| n == 1000), "{m:?}");
        }
    }
}

#[test]
fn weights_are_honoured() {
    for a in [Algorithm::Random, Algorithm::RoundRobin, Algorithm::Maglev] {
        let mut eps = three();
        eps[2].weight = 4;
        let t = table(vec![spec("web", 20, eps, a)]);
        let m = spread(&t, &key(20));
        // Shares 1:1:4 of 3000 = 500, 500, 2000.
        assert!((1800..=2200).contains(&m[&4]), "{a:?}: {m:?}");
        assert!((350..=650).contains(&m[&2]), "{a:?}: {m:?}");
    }
}

#[test]
fn only_ready_endpoints_that_are_not_terminating_get_new_flows() {
    for a in [Algorithm::Random, Algorithm::RoundRobin, Algorithm::Maglev] {
        let mut eps = three();
        eps[0].ready = false;
        eps[1].terminating = true;
        let t = table(vec![spec("web", 20, eps, a)]);
        let m = spread(&t, &key(20));
        assert_eq!(m.keys().copied().collect::<Vec<_>>(), [4], "{a:?}");
        // Still endpoints, for flows already on them.
        assert!(t.has_endpoint(&key(20), Ipv4Addr::new(10, 244, 1, 2), 8080));
        assert!(t.has_endpoint(&key(20), Ipv4Addr::new(10, 244, 1, 3), 8080));
    }
}

#[test]
fn maglev_readiness_change_moves_only_that_endpoints_flows() {
    let eps: Vec<Endpoint> = (2..7).map(|i| ep(i, 8080)).collect();
    let mut t = table(vec![spec("web", 20, eps.clone(), Algorithm::Maglev)]);
    let before: Vec<Selection> = (0..3000).map(|h| pick(&t, &key(20), maglev::mix64(h))).collect();
    let mut fewer = eps.clone();
    fewer[1].ready = false;
    t.set_endpoints("default", "web", None, fewer).unwrap();
    let gone = Selection::Endpoint { ip: Ipv4Addr::new(10, 244, 1, 3), port: 8080 };
    let mut moved = 0;
    for (h, b) in before.iter().enumerate() {
        let a = pick(&t, &key(20), maglev::mix64(h as u64));
        assert_ne!(a, gone);
        if *b != gone && a != *b {
            moved += 1;
        }
    }
    assert!(moved <= 300, "{moved} of the others' flows moved");
    // Ready again: the same table as before, whatever the list order.
    let mut reordered = eps;
    reordered.reverse();
    t.set_endpoints("default", "web", None, reordered).unwrap();
    let again: Vec<Selection> = (0..3000).map(|h| pick(&t, &key(20), maglev::mix64(h))).collect();
    assert_eq!(again, before);
}

#[test]
fn no_endpoints_and_not_a_service() {
    let mut eps = three();
    for e in &mut eps {
        e.ready = false;
    }
    let t = table(vec![
        spec("web", 20, eps, Algorithm::Maglev),
        spec("empty", 21, vec![], Algorithm::RoundRobin),
    ]);
    let mut state = ServiceState::new();
    state.adopt(&t);
    assert_eq!(t.select(&key(20), 1, &mut state), Selection::NoEndpoints);
    assert_eq!(t.select(&key(21), 1, &mut state), Selection::NoEndpoints);
    assert_eq!(t.select(&key(22), 1, &mut state), Selection::NotAService);
    let mut udp = key(20);
    udp.proto = L4Proto::Udp;
    assert_eq!(t.select(&udp, 1, &mut state), Selection::NotAService);
    assert!(t.is_vip(Ipv4Addr::new(10, 96, 0, 20)) && !t.is_vip(Ipv4Addr::new(10, 96, 0, 22)));
    assert_eq!(
        state.counters(),
        ServiceCounters { selected: 0, no_endpoints: 2, not_a_service: 2, full_refusals: 0 }
    );
}

#[test]
fn a_service_with_several_ports_is_one_name_and_one_vip() {
    let http = spec("web", 20, vec![ep(5, 8080)], Algorithm::Maglev);
    let https = ServiceSpec { port: 443, endpoints: vec![ep(5, 8443)], ..http.clone() };
    let dns = ServiceSpec { port: 53, proto: L4Proto::Udp, ..http.clone() };
    let mut t = table(vec![http.clone(), https.clone()]);
    assert_eq!(t.ports_of("default", "web").len(), 2);
    t.upsert(dns.clone(), cidr()).unwrap();
    assert_eq!(
        t.ports_of("default", "web").iter().map(|k| k.port).collect::<Vec<_>>(),
        [53, 80, 443],
        "sorted by port"
    );
    let moved = ServiceSpec { vip: Ipv4Addr::new(10, 96, 0, 21), ..https.clone() };
    assert_eq!(t.upsert(moved, cidr()).unwrap_err().field, "vip", "one VIP per Service");
    assert_eq!(t.set_endpoints("default", "web", None, vec![]).unwrap_err().field, "port");
    t.set_endpoints("default", "web", Some((443, L4Proto::Tcp)), vec![ep(6, 8443)]).unwrap();
    assert_eq!(t.get(&https.key()).unwrap().endpoints, vec![ep(6, 8443)]);
    assert_eq!(t.get(&http.key()).unwrap().endpoints, vec![ep(5, 8080)], "untouched");
    let e = t.set_endpoints("default", "web", Some((8443, L4Proto::Tcp)), vec![]);
    assert_eq!(e.unwrap_err().field, "port");
    // The same port twice in one apply, or two VIPs for one name, are refused.
    let twice = ServiceTable::from_specs(
        vec![http.clone(), ServiceSpec { vip: Ipv4Addr::new(10, 96, 0, 22), ..http.clone() }],
        cidr(),
        10,
        65_537,
        None,
    );
    assert_eq!(twice.unwrap_err().field, "services[1].name");
    let split = ServiceTable::from_specs(
        vec![http, ServiceSpec { vip: Ipv4Addr::new(10, 96, 0, 22), ..https }],
        cidr(),
        10,
        65_537,
        None,
    );
    assert_eq!(split.unwrap_err().field, "services[1].vip");
    assert_eq!(t.remove("default", "web").len(), 3, "every port goes");
    assert!(t.is_empty() && !t.is_vip(Ipv4Addr::new(10, 96, 0, 20)));
}

#[test]
fn set_endpoints_replaces_them() {
    let mut t = table(vec![spec("web", 20, three(), Algorithm::Maglev)]);
    t.set_endpoints("default", "web", None, vec![ep(9, 9090)]).unwrap();
    for h in 0..100 {
        assert_eq!(
            pick(&t, &key(20), h),
            Selection::Endpoint { ip: Ipv4Addr::new(10, 244, 1, 9), port: 9090 }
        );
    }
    assert!(!t.has_endpoint(&key(20), Ipv4Addr::new(10, 244, 1, 2), 8080));
    assert!(t.has_endpoint(&key(20), Ipv4Addr::new(10, 244, 1, 9), 9090));
    assert_eq!(t.get(&key(20)).unwrap().endpoints, vec![ep(9, 9090)]);
    assert_eq!(
        t.set_endpoints("default", "web", None, vec![ep(9, 0)]).unwrap_err().field,
        "endpoints[0].port"
    );
    assert_eq!(t.set_endpoints("default", "nope", None, vec![]).unwrap_err().field, "name");
    t.set_endpoints("default", "web", None, vec![]).unwrap();
    assert_eq!(pick(&t, &key(20), 1), Selection::NoEndpoints);
}

#[test]
fn upsert_adds_replaces_and_refuses() {
    let mut t = ServiceTable::new(2, maglev::DEFAULT_MAX_SIZE);
    assert_eq!(t.upsert(spec("web", 20, three(), Algorithm::Maglev), cidr()), Ok(None));
    // Replace, moving it to another VIP.
    let old = t.upsert(spec("web", 21, vec![ep(5, 80)], Algorithm::Random), cidr()).unwrap();
    assert_eq!(old.unwrap().vip, Ipv4Addr::new(10, 96, 0, 20));
    assert!(t.get(&key(20)).is_none() && !t.is_vip(Ipv4Addr::new(10, 96, 0, 20)));
    assert_eq!(t.by_name("default", "web").unwrap().algorithm, Algorithm::Random);
    assert_eq!(
        pick(&t, &key(21), 7),
        Selection::Endpoint { ip: Ipv4Addr::new(10, 244, 1, 5), port: 80 }
    );
    // Another service may not take its key.
    let e = t.upsert(spec("api", 21, three(), Algorithm::Maglev), cidr()).unwrap_err();
    assert_eq!(e.field, "vip");
    assert!(e.reason.contains("default/web"), "{e}");
    // Invalid specs change nothing.
    assert_eq!(
        t.upsert(spec("api", 22, vec![ep(2, 0)], Algorithm::Maglev), cidr()).unwrap_err().field,
        "endpoints[0].port"
    );
    t.upsert(spec("api", 22, three(), Algorithm::Maglev), cidr()).unwrap();
    // Full: a new one is refused, a replacement is not.
    assert_eq!(
        t.upsert(spec("db", 23, three(), Algorithm::Maglev), cidr()).unwrap_err().field,
        "services"
    );
    let full = t.upsert(spec("db", 23, three(), Algorithm::Maglev), cidr()).unwrap_err();
    assert_eq!(full.kind, ServiceErrorKind::Full);
    assert!(t
        .upsert(spec("api", 22, vec![ep(7, 80)], Algorithm::Maglev), cidr())
        .unwrap()
        .is_some());
    assert_eq!(t.len(), 2);
    let names: Vec<String> = t.list().into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["api", "web"]);
    assert_eq!(t.remove("default", "web")[0].name, "web");
    assert!(t.remove("default", "web").is_empty());
    assert!(t.by_name("default", "web").is_none() && t.get(&key(21)).is_none());
    t.upsert(spec("db", 23, three(), Algorithm::Maglev), cidr()).unwrap();
    assert_eq!(t.len(), 2);
}

#[test]
fn has_endpoint_knows_every_state() {
    let mut eps = three();
    eps[0].terminating = true;
    let t = table(vec![spec("web", 20, eps, Algorithm::Maglev)]);
    let ip = |l| Ipv4Addr::new(10, 244, 1, l);
    assert!(t.has_endpoint(&key(20), ip(2), 8080));
    assert!(t.has_endpoint(&key(20), ip(4), 8080));
    assert!(!t.has_endpoint(&key(20), ip(4), 8081));
    assert!(!t.has_endpoint(&key(20), ip(5), 8080));
    assert!(!t.has_endpoint(&key(21), ip(2), 8080));
}

#[test]
fn list_is_sorted_by_namespace_then_name() {
    let mut b = spec("b", 21, three(), Algorithm::Maglev);
    b.namespace = "alpha".into();
    let t = table(vec![
        spec("z", 20, three(), Algorithm::Maglev),
        spec("a", 22, three(), Algorithm::Maglev),
        b,
    ]);
    let got: Vec<(String, String)> = t.list().into_iter().map(|s| (s.namespace, s.name)).collect();
    let want = [("alpha", "b"), ("default", "a"), ("default", "z")];
    assert_eq!(got, want.map(|(n, m)| (n.to_string(), m.to_string())));
}

#[test]
fn json_shape_round_trips() {
    let text = r#"{"name":"web","namespace":"default","vip":"10.96.0.20","port":80,"proto":"tcp","endpoints":[{"ip":"10.244.1.2","port":8080}],"algorithm":"maglev"}"#;
    let s: ServiceSpec = serde_json::from_str(text).unwrap();
    assert_eq!(s, spec("web", 20, vec![ep(2, 8080)], Algorithm::Maglev));
    let back: ServiceSpec = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
    assert_eq!(back, s);

    let full = r#"{"name":"dns","namespace":"kube-system","vip":"10.96.0.10","port":53,"proto":"udp",
        "endpoints":[{"ip":"10.244.1.2","port":53,"ready":false,"terminating":true,"weight":3}],
        "algorithm":"round_robin","session_affinity_secs":10800}"#;
    let s: ServiceSpec = serde_json::from_str(full).unwrap();
    assert_eq!(
        (s.proto, s.algorithm, s.session_affinity_secs),
        (L4Proto::Udp, Algorithm::RoundRobin, Some(10_800))
    );
    assert_eq!(
        s.endpoints[0],
        Endpoint {
            ip: Ipv4Addr::new(10, 244, 1, 2),
            port: 53,
            ready: false,
            terminating: true,
            weight: 3
        }
    );
    let v = serde_json::to_value(&s).unwrap();
    assert_eq!(v["algorithm"], "round_robin");
    assert_eq!(v["proto"], "udp");
    assert_eq!(serde_json::from_value::<ServiceSpec>(v).unwrap(), s);

    // Defaults: proto tcp, algorithm maglev, no affinity (and not written out).
    let s: ServiceSpec = serde_json::from_str(
        r#"{"name":"web","namespace":"default","vip":"10.96.0.20","port":80,"endpoints":[]}"#,
    )
    .unwrap();
    assert_eq!(
        (s.proto, s.algorithm, s.session_affinity_secs),
        (L4Proto::Tcp, Algorithm::Maglev, None)
    );
    assert!(!serde_json::to_string(&s).unwrap().contains("affinity"));
    // Unknown fields are refused, in the spec and in its endpoints.
    assert!(serde_json::from_str::<ServiceSpec>(
        &text.replace("\"port\":80", "\"port\":80,\"type\":\"x\"")
    )
    .is_err());
    assert!(serde_json::from_str::<ServiceSpec>(&text.replace("8080}", "8080,\"zone\":\"a\"}"))
        .is_err());
    assert!(serde_json::from_str::<ServiceSpec>(&text.replace("\"maglev\"", "\"round-robin\""))
        .is_err());
}

fn many(n: u32) -> Vec<ServiceSpec> {
    (0..n)
        .map(|i| ServiceSpec {
            name: format!("svc-{i}"),
            namespace: "default".to_string(),
            vip: Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 1)) + i),
            port: 80,
            proto: L4Proto::Tcp,
            endpoints: vec![
                Endpoint::new(Ipv4Addr::from(0x0af4_0000 + 2 * i), 8080),
                Endpoint::new(Ipv4Addr::from(0x0af4_0001 + 2 * i), 8080),
            ],
            algorithm: Algorithm::Maglev,
            session_affinity_secs: None,
            node_port: None,
        })
        .collect()
}

/// Prints how long `from_specs` takes for 10k and 50k services of 2 endpoints (Maglev
/// tables of 211 entries): `cargo test --release -p vswitch --lib build_time -- --ignored
/// --nocapture`.
#[test]
#[ignore = "a measurement; run with --release --ignored --nocapture"]
fn build_time() {
    for n in [10_000, 50_000] {
        let specs = many(n);
        let start = std::time::Instant::now();
        let t = ServiceTable::from_specs(specs, cidr(), 100_000, maglev::DEFAULT_MAX_SIZE, None)
            .unwrap();
        let took = start.elapsed();
        assert_eq!(t.len(), n as usize);
        println!("from_specs: {n} services of 2 endpoints in {took:?}");
        let start = std::time::Instant::now();
        let mut next = t.clone();
        next.set_endpoints(
            "default",
            "svc-7",
            None,
            vec![Endpoint::new(Ipv4Addr::new(10, 244, 9, 9), 80)],
        )
        .unwrap();
        println!("clone and edit one of {n}: {:?}", start.elapsed());
        let start = std::time::Instant::now();
        let mut next = t.clone();
        let mut spec = many(1).remove(0);
        spec.name = "new".into();
        spec.vip = Ipv4Addr::new(10, 97, 0, 1);
        next.upsert(spec, cidr()).unwrap();
        println!("clone and add one to {n} in one namespace: {:?}", start.elapsed());
    }
}

#[test]
fn round_robin_cursors_live_in_worker_state_and_survive_unchanged_services() {
    let rr = |name: &str, vip| spec(name, vip, three(), Algorithm::RoundRobin);
    let t = table(vec![rr("a", 20), rr("b", 21)]);
    let mut state = ServiceState::new();
    state.adopt(&t);
    let last = |s: Selection| match s {
        Selection::Endpoint { ip, .. } => ip.octets()[3],
        other => panic!("{other:?}"),
    };
    assert_eq!(last(t.select(&key(20), 0, &mut state)), 2);
    assert_eq!(last(t.select(&key(21), 0, &mut state)), 2);
    assert_eq!(last(t.select(&key(21), 0, &mut state)), 3);
    // Two workers' states are independent: the table itself holds no cursor.
    assert_eq!(last(t.select(&key(21), 0, &mut ServiceState::new())), 2);
    // A new snapshot where "a" changed and "b" did not: b's cursor goes on, a's restarts.
    let mut next = t.clone();
    next.set_endpoints("default", "a", None, vec![ep(2, 8080), ep(3, 8080), ep(5, 8080)]).unwrap();
    assert_eq!(next.version_of(&key(21)), t.version_of(&key(21)));
    assert_ne!(next.version_of(&key(20)), t.version_of(&key(20)));
    state.adopt(&next);
    assert_eq!(last(next.select(&key(20), 0, &mut state)), 2, "changed: starts again");
    assert_eq!(last(next.select(&key(21), 0, &mut state)), 4, "unchanged: goes on");
    // The published table is untouched by the edit of its clone.
    assert_eq!(t.get(&key(20)).unwrap().endpoints, three());
    // An apply takes unchanged Services over as they are, and rebuilds changed ones.
    let applied =
        ServiceTable::from_specs(next.list(), cidr(), 100, maglev::DEFAULT_MAX_SIZE, Some(&next))
            .unwrap();
    assert_eq!(applied.version_of(&key(20)), next.version_of(&key(20)));
    assert_eq!(applied.version_of(&key(21)), next.version_of(&key(21)));
    state.adopt(&applied);
    assert_eq!(last(applied.select(&key(21), 0, &mut state)), 2, "wrapped after 2, 3, 4");
    // Re-adding the same spec changes nothing.
    let mut same = applied.clone();
    same.upsert(rr("b", 21), cidr()).unwrap();
    same.set_endpoints("default", "b", None, three()).unwrap();
    assert_eq!(same.version_of(&key(21)), applied.version_of(&key(21)));
}

#[test]
fn slots_are_reused_and_bounded_by_the_most_services_held() {
    let mut t = ServiceTable::new(3, maglev::DEFAULT_MAX_SIZE);
    for (i, name) in ["a", "b", "c"].into_iter().enumerate() {
        t.upsert(spec(name, 20 + i as u8, three(), Algorithm::Maglev), cidr()).unwrap();
    }
    assert_eq!(t.slots(), 3);
    for round in 0..10u8 {
        t.remove("default", "b");
        t.upsert(spec("b", 21, vec![ep(2 + round, 80)], Algorithm::Maglev), cidr()).unwrap();
        // A replacement keeps its slot.
        t.upsert(spec("b", 21, vec![ep(3 + round, 80)], Algorithm::Maglev), cidr()).unwrap();
    }
    assert_eq!(t.slots(), 3);
    // An apply of other Services reuses the free slots.
    let others: Vec<ServiceSpec> =
        (0..3).map(|i| spec(&format!("n{i}"), 30 + i, three(), Algorithm::Maglev)).collect();
    let mut keep = vec![t.by_name("default", "c").unwrap().clone()];
    keep.extend(others.into_iter().take(2));
    let applied =
        ServiceTable::from_specs(keep, cidr(), 3, maglev::DEFAULT_MAX_SIZE, Some(&t)).unwrap();
    assert_eq!(applied.slots(), 3);
}

#[test]
fn errors_say_what_kind_of_problem() {
    let mut t = table(vec![spec("web", 20, three(), Algorithm::Maglev)]);
    let kind = |r: Result<Option<ServiceSpec>, ServiceError>| r.unwrap_err().kind;
    assert_eq!(
        kind(t.upsert(spec("Web", 21, three(), Algorithm::Maglev), cidr())),
        ServiceErrorKind::Invalid
    );
    assert_eq!(
        kind(t.upsert(spec("api", 20, three(), Algorithm::Maglev), cidr())),
        ServiceErrorKind::Conflict
    );
    let e = t.set_endpoints("default", "nope", None, vec![]).unwrap_err();
    assert_eq!((e.kind, e.field.as_str()), (ServiceErrorKind::NotFound, "name"));
    let e = t.set_endpoints("default", "web", Some((81, L4Proto::Tcp)), vec![]).unwrap_err();
    // A port the Service lacks is an invalid argument of an existing Service (as the API
    // has always answered it).
    assert_eq!((e.kind, e.field.as_str()), (ServiceErrorKind::Invalid, "port"));
    let e = t.set_endpoints("default", "web", None, vec![ep(2, 0)]).unwrap_err();
    assert_eq!((e.kind, e.field.as_str()), (ServiceErrorKind::Invalid, "endpoints[0].port"));
}
