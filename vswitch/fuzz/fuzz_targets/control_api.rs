//! The control API's request parser (`podswitch-api`'s `protocol.rs`), as the server reads a
//! line from the socket: UTF-8, trimmed, then `parse_request`. A request that parses must
//! serialize and parse back to itself (the CLI and the CNI plugin write what the server
//! reads), and its contents go on to the pure checks the controller applies: Service validation, the
//! Service table (Maglev included) for `service_add`, `service_apply` and `endpoint_set`,
//! and peer validation for `peer_add`. A refused line's error must serialize too.
//!
//! With a first byte of `0xff` the rest is a Service file for `ctl service apply` instead,
//! YAML or JSON, read with the same types; with `0xfe`, a response line as the client reads
//! it, which must round-trip like a request.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vswitch::cidr::Ipv4Cidr;
use vswitch::config::PeerConfig;
use vswitch::control::api::{parse_request, Request, Response, ServiceSpec};
use vswitch::tables::services::{ServiceState, ServiceTable};

const MAX_SERVICES: usize = 64;
const MAGLEV_MAX: usize = 65_537;

fn service_cidr() -> Ipv4Cidr {
    "10.96.0.0/12".parse().expect("a CIDR")
}

/// A table with the harness's Services, as the node has them.
fn table() -> ServiceTable {
    let mut t = ServiceTable::new(MAX_SERVICES, MAGLEV_MAX);
    for s in vswitch::pipeline::harness::services() {
        t.upsert(s, service_cidr()).expect("valid Service");
    }
    t
}

fn services(specs: Vec<ServiceSpec>) {
    let specs: Vec<ServiceSpec> = specs.into_iter().take(MAX_SERVICES).collect();
    if let Ok(t) =
        ServiceTable::from_specs(specs.clone(), service_cidr(), MAX_SERVICES, MAGLEV_MAX, None)
    {
        assert_eq!(t.len(), specs.len());
        for s in &specs {
            assert!(t.get(&s.key()).is_some(), "every applied Service is in the table");
        }
    }
}

fn request(req: &Request) {
    let text = serde_json::to_string(req).expect("requests serialize");
    assert_eq!(parse_request(&text).as_ref(), Ok(req), "request round trip: {text}");
    match req {
        Request::ServiceAdd(spec) => {
            let valid = spec.validate(service_cidr()).is_ok();
            let mut t = table();
            let added = t.upsert(spec.clone(), service_cidr());
            assert!(valid || added.is_err(), "an invalid Service is refused");
            if added.is_ok() {
                assert!(t.get(&spec.key()).is_some());
                let mut state = ServiceState::new();
                state.adopt(&t);
                let _ = t.select(&spec.key(), 0x1234_5678, &mut state);
            }
        }
        Request::ServiceApply(args) => services(args.services.clone()),
        Request::EndpointSet(args) => {
            let mut t = table();
            let port = args.port.map(|p| (p, args.proto.unwrap_or_default()));
            let _ = t.set_endpoints(&args.namespace, &args.name, port, args.endpoints.clone());
        }
        Request::PeerAdd(args) => {
            if let Ok(p) = PeerConfig::new(&args.name, args.ip, args.pod_cidr, args.vtep_mac) {
                let own: Ipv4Cidr = "10.244.1.0/24".parse().expect("a CIDR");
                let _ = p.check_fits(own, "192.168.0.1".parse().expect("an address"), &[]);
            }
        }
        Request::PortAdd(args) => {
            let _ = (args.kind.as_str(), args.ip.map(|a| a.to_string()));
        }
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else { return };
    match first {
        0xff => {
            let Ok(text) = std::str::from_utf8(rest) else { return };
            if let Ok(list) = serde_saphyr::from_str::<Vec<ServiceSpec>>(text) {
                services(list);
            }
            if let Ok(list) = serde_json::from_str::<Vec<ServiceSpec>>(text) {
                services(list);
            }
        }
        0xfe => {
            let Ok(text) = std::str::from_utf8(rest) else { return };
            if let Ok(r) = serde_json::from_str::<Response>(text) {
                let again = serde_json::to_string(&r).expect("responses serialize");
                let back = serde_json::from_str::<Response>(&again);
                assert_eq!(back.ok().as_ref(), Some(&r), "response round trip: {again}");
            }
        }
        _ => {
            let Ok(text) = std::str::from_utf8(data) else { return };
            match parse_request(text.trim()) {
                Ok(req) => request(&req),
                Err(e) => {
                    let _ = serde_json::to_string(&Response::Error(e)).expect("errors serialize");
                }
            }
        }
    }
});
