//! The Service table: `VIP:port/proto -> endpoints`, consulted by the packet pipeline for the
//! first packet of a connection to a VIP. Later packets follow conntrack, not this table.
//!
//! What it owns: the validated Service specs (their JSON shape and per-spec validation,
//! [`ServiceSpec`], are the API crate's, `podswitch_api::service`), the checks across
//! Services, and the choice of an endpoint for a new flow. What it does not: flow state, NAT, session affinity (the caller keeps the stickiness), and
//! publishing (the control plane builds a table off to the side, whole with
//! [`ServiceTable::from_specs`] or by editing a clone, and swaps it in).
//!
//! Behaviour a user can rely on:
//! - **Eligibility**: only endpoints that are ready and not terminating are picked for new
//!   flows. [`ServiceTable::has_endpoint`] still knows the others, so flows already on a
//!   terminating endpoint are not reset.
//! - **Algorithms** ([`Algorithm`]): `maglev` (default) indexes a per-service Maglev table
//!   with the flow hash, so every node picks the same endpoint for the same 5-tuple;
//!   `random` uses the flow hash as its randomness; `round_robin` uses a per-service counter.
//!   All three honour endpoint weights. Eligible endpoints are kept sorted by `(ip, port)`, so
//!   the choice depends on the set of endpoints, not on the order the API listed them in.
//! - **Maglev table size**: [`maglev::table_size`] of the number of *all* endpoints of the
//!   service (in any state), capped at `maglev_max`. Not of the eligible ones: changing the
//!   size reshuffles the whole table, and readiness flaps are the common change, so an
//!   endpoint going not-ready or terminating only hands its own entries to the others.
//!   A Service whose endpoints change keeps its size while it still gives each endpoint 50
//!   to 400 entries ([`maglev::resize`]; an apply inherits sizes from the table it
//!   replaces), so adding or removing a few endpoints moves only the flows it must.
//! - **Identity**: a spec is one port of a Service: `(namespace, name, port, protocol)`.
//!   All ports of one Service share its VIP; deleting the Service removes them all.
//! - **Full**: at `max_services` services, adding a new one is refused (counted in
//!   `full_refusals`); replacing an existing one still works. Nothing is evicted.
//!
//! Limits: [`MAX_ENDPOINTS`] endpoints per service; the Maglev table holds `table_size(n)`
//! `u16` entries, at most `maglev_max` (the default cap, 65,537 entries, is 128 KiB).
//! Building 10,000 services of 2 endpoints (Maglev tables of 211 entries) with `from_specs`
//! took 27-29 ms in release on a 2-CPU development VM (up to 50 ms while it was busy with
//! other builds), 50,000 about 150 ms (linear); about
//! 60% of it is Maglev population (`M ln M`, some 1,100 probes per 211-entry table). The
//! ignored test `build_time` prints both figures.
//!
//! Lookups are one hash probe ([`ServiceTable::get`], [`ServiceTable::select`]); `select` does
//! not allocate.

use std::net::Ipv4Addr;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::cidr::Ipv4Cidr;
use crate::tables::maglev;

use podswitch_api::service::{check_endpoints, endpoint_id as pack};
pub use podswitch_api::service::{
    Algorithm, Endpoint, L4Proto, ServiceError, ServiceKey, ServiceSpec, MAX_AFFINITY_SECS,
    MAX_ENDPOINTS, NODE_PORT_RANGE,
};

fn err(field: impl Into<String>, reason: impl Into<String>) -> ServiceError {
    ServiceError::new(field, reason)
}

/// What the pipeline gets for a new flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    /// Send the flow here.
    Endpoint {
        /// The endpoint's address.
        ip: Ipv4Addr,
        /// Its port.
        port: u16,
    },
    /// The key is a Service, but none of its endpoints is eligible (reject the flow).
    NoEndpoints,
    /// No Service at this key (leave the packet alone).
    NotAService,
}

/// Event counters of the table. `selected + no_endpoints + not_a_service` is the number of
/// [`ServiceTable::select`] calls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceCounters {
    /// New flows given an endpoint.
    pub selected: u64,
    /// New flows to a Service without an eligible endpoint.
    pub no_endpoints: u64,
    /// `select` calls for a key that is no Service.
    pub not_a_service: u64,
    /// New Services refused because the table was full.
    pub full_refusals: u64,
}

/// A Service with what `select` needs, derived from its spec.
#[derive(Debug, Clone)]
struct Service {
    spec: ServiceSpec,
    /// Every endpoint's packed `(ip, port)`, sorted, for `has_endpoint`.
    all: Vec<u64>,
    /// Eligible endpoints, sorted by `(ip, port)`.
    eligible: Vec<(Ipv4Addr, u16)>,
    /// Running sums of the eligible endpoints' weights (`cumulative[i]` includes `i`).
    cumulative: Vec<u32>,
    /// Indices into `eligible` (Maglev services with an eligible endpoint only).
    maglev: Vec<u16>,
    /// The Maglev table's size, kept across endpoint changes (even while `maglev` is empty).
    maglev_size: usize,
    /// Round-robin position, in weight units.
    rr_next: u64,
}

impl Service {
    /// Derives the lookup state. `spec` has been validated. `prev_size` is the Maglev table
    /// size of the Service this one replaces, kept when it still fits ([`maglev::resize`]).
    fn new(spec: ServiceSpec, maglev_max: usize, prev_size: Option<usize>) -> Service {
        let mut all: Vec<u64> = spec.endpoints.iter().map(Endpoint::id).collect();
        all.sort_unstable();
        let mut chosen: Vec<&Endpoint> =
            spec.endpoints.iter().filter(|e| e.is_eligible()).collect();
        chosen.sort_unstable_by_key(|e| e.id());
        let eligible = chosen.iter().map(|e| (e.ip, e.port)).collect();
        let mut sum = 0u32;
        let cumulative = chosen
            .iter()
            .map(|e| {
                sum += u32::from(e.weight);
                sum
            })
            .collect();
        let n = spec.endpoints.len();
        let maglev_size = match prev_size {
            Some(p) => maglev::resize(p, n, maglev_max),
            None => maglev::table_size(n, maglev_max),
        };
        let maglev = if spec.algorithm == Algorithm::Maglev && !chosen.is_empty() {
            let backends: Vec<(u64, u16)> = chosen.iter().map(|e| (e.id(), e.weight)).collect();
            maglev::build(&backends, maglev_size)
        } else {
            Vec::new()
        };
        Service { spec, all, eligible, cumulative, maglev, maglev_size, rr_next: 0 }
    }

    /// The eligible endpoint covering weight unit `r` (< total weight).
    #[inline]
    fn by_weight(&self, r: u64) -> (Ipv4Addr, u16) {
        let i = self.cumulative.partition_point(|&c| u64::from(c) <= r);
        self.eligible[i]
    }

    #[inline]
    fn pick(&mut self, flow_hash: u64) -> Option<(Ipv4Addr, u16)> {
        let total = u64::from(*self.cumulative.last()?);
        Some(match self.spec.algorithm {
            Algorithm::Maglev => {
                let e = self.maglev[(flow_hash % self.maglev.len() as u64) as usize];
                self.eligible[usize::from(e)]
            }
            // Mixed first: the caller's hash need not have good low bits.
            Algorithm::Random => self.by_weight(maglev::mix64(flow_hash) % total),
            Algorithm::RoundRobin => {
                let r = self.rr_next % total;
                self.rr_next = (r + 1) % total;
                self.by_weight(r)
            }
        })
    }
}

/// The Service table. See the module doc for its behaviour.
#[derive(Debug, Clone)]
pub struct ServiceTable {
    by_key: FxHashMap<ServiceKey, Service>,
    /// namespace -> name -> key (nested so lookups by `&str` need no allocation).
    /// Keys of each Service's ports (a Kubernetes Service with several ports is one spec
    /// per port, all with its name and VIP), sorted by port and protocol.
    by_name: FxHashMap<String, FxHashMap<String, Vec<ServiceKey>>>,
    /// Services per VIP, for `is_vip`.
    vips: FxHashMap<Ipv4Addr, u32>,
    /// (node port, protocol) -> key.
    node_ports: FxHashMap<(u16, L4Proto), ServiceKey>,
    max_services: usize,
    maglev_max: usize,
    counters: ServiceCounters,
}

impl ServiceTable {
    /// An empty table for at most `max_services` services, Maglev tables capped at
    /// `maglev_max` entries (see [`maglev::table_size`]).
    pub fn new(max_services: usize, maglev_max: usize) -> ServiceTable {
        ServiceTable {
            by_key: FxHashMap::default(),
            by_name: FxHashMap::default(),
            vips: FxHashMap::default(),
            node_ports: FxHashMap::default(),
            max_services,
            maglev_max,
            counters: ServiceCounters::default(),
        }
    }

    /// Builds a whole table at once (for an atomic "apply"): validates every spec (errors name
    /// "services[i].field"), refuses duplicate keys or (namespace,name) pairs, and more than
    /// max_services; builds Maglev tables. A Service also in `previous` (same namespace and
    /// name) keeps its Maglev table size while it fits, so an apply that changes a few
    /// endpoints moves only the flows it must.
    pub fn from_specs(
        specs: Vec<ServiceSpec>,
        service_cidr: Ipv4Cidr,
        max_services: usize,
        maglev_max: usize,
        previous: Option<&ServiceTable>,
    ) -> Result<ServiceTable, ServiceError> {
        if specs.len() > max_services {
            return Err(err(
                "services",
                format!("{} services, at most {max_services} allowed", specs.len()),
            ));
        }
        let mut t = ServiceTable::new(max_services, maglev_max);
        t.by_key.reserve(specs.len());
        let mut index: FxHashMap<ServiceKey, usize> = FxHashMap::default();
        index.reserve(specs.len());
        for (i, spec) in specs.into_iter().enumerate() {
            spec.validate(service_cidr).map_err(|e| e.in_list(i))?;
            let key = spec.key();
            if let Some(&j) = index.get(&key) {
                return Err(err(
                    format!("services[{i}].vip"),
                    format!("{key} is also services[{j}]"),
                ));
            }
            if let Some(other) = t.port_of(&spec.namespace, &spec.name, spec.port, spec.proto) {
                let j = index[&other];
                return Err(err(
                    format!("services[{i}].name"),
                    format!(
                        "{}/{} port {}/{} is also services[{j}]",
                        spec.namespace, spec.name, spec.port, spec.proto
                    ),
                ));
            }
            if let Some(other) = t.ports_of(&spec.namespace, &spec.name).first() {
                if other.vip != spec.vip {
                    let j = index[other];
                    return Err(err(
                        format!("services[{i}].vip"),
                        format!(
                            "{}/{} is on {} (services[{j}]): one VIP for all its ports",
                            spec.namespace, spec.name, other.vip
                        ),
                    ));
                }
            }
            if let Some(other) = t.node_port_clash(&spec) {
                let j = index[&other];
                return Err(err(
                    format!("services[{i}].node_port"),
                    format!("{} is also services[{j}]'s", spec.node_port.unwrap_or_default()),
                ));
            }
            index.insert(key, i);
            let prev = previous.and_then(|p| p.maglev_size_of(&spec));
            t.insert(Service::new(spec, maglev_max, prev));
        }
        Ok(t)
    }

    /// Adds or replaces one Service port (by namespace, name, port and protocol; all ports of
    /// a Service share its VIP). Returns the spec it replaced.
    pub fn upsert(
        &mut self,
        spec: ServiceSpec,
        service_cidr: Ipv4Cidr,
    ) -> Result<Option<ServiceSpec>, ServiceError> {
        spec.validate(service_cidr)?;
        let key = spec.key();
        let old_key = self.port_of(&spec.namespace, &spec.name, spec.port, spec.proto);
        if let Some(sibling) =
            self.ports_of(&spec.namespace, &spec.name).iter().find(|k| Some(**k) != old_key)
        {
            if sibling.vip != spec.vip {
                return Err(err(
                    "vip",
                    format!(
                        "{}/{} is on {} (port {}/{}): one VIP for all its ports",
                        spec.namespace, spec.name, sibling.vip, sibling.port, sibling.proto
                    ),
                ));
            }
        }
        if let Some(other) = self.by_key.get(&key) {
            if old_key != Some(key) {
                return Err(err(
                    "vip",
                    format!("{key} is service {}/{}", other.spec.namespace, other.spec.name),
                ));
            }
        }
        if let Some(other) = self.node_port_clash(&spec).filter(|k| Some(*k) != old_key) {
            let o = &self.by_key[&other].spec;
            return Err(err(
                "node_port",
                format!(
                    "{}/{} is service {}/{}'s",
                    spec.node_port.unwrap_or_default(),
                    spec.proto,
                    o.namespace,
                    o.name
                ),
            ));
        }
        if old_key.is_none() && self.by_key.len() >= self.max_services {
            self.counters.full_refusals += 1;
            return Err(err(
                "services",
                format!("the service table is full ({} services)", self.max_services),
            ));
        }
        let prev = old_key.and_then(|k| self.by_key.get(&k)).map(|s| s.maglev_size);
        let old = old_key.and_then(|k| self.take(k));
        self.insert(Service::new(spec, self.maglev_max, prev));
        Ok(old)
    }

    /// Removes every port of the Service `namespace/name`, returning the specs (sorted by
    /// port; empty when there was no such Service).
    pub fn remove(&mut self, namespace: &str, name: &str) -> Vec<ServiceSpec> {
        let keys = self.ports_of(namespace, name).to_vec();
        keys.into_iter().filter_map(|k| self.take(k)).collect()
    }

    /// The key of port `port`/`proto` of `namespace/name`.
    fn port_of(
        &self,
        namespace: &str,
        name: &str,
        port: u16,
        proto: L4Proto,
    ) -> Option<ServiceKey> {
        self.ports_of(namespace, name).iter().find(|k| k.port == port && k.proto == proto).copied()
    }

    /// The keys of every port of `namespace/name`, sorted by port and protocol.
    pub fn ports_of(&self, namespace: &str, name: &str) -> &[ServiceKey] {
        self.by_name.get(namespace).and_then(|m| m.get(name)).map_or(&[], Vec::as_slice)
    }

    /// Replaces the endpoints of one port of a Service (rebuilds its Maglev table). `port`
    /// names it (port and protocol); it may be left out when the Service has one port.
    pub fn set_endpoints(
        &mut self,
        namespace: &str,
        name: &str,
        port: Option<(u16, L4Proto)>,
        endpoints: Vec<Endpoint>,
    ) -> Result<(), ServiceError> {
        check_endpoints(&endpoints)?;
        let ports = self.ports_of(namespace, name);
        let key = match (port, ports) {
            (_, []) => return Err(err("name", format!("no service {namespace}/{name}"))),
            (None, [only]) => *only,
            (None, many) => {
                let list: Vec<String> =
                    many.iter().map(|k| format!("{}/{}", k.port, k.proto)).collect();
                return Err(err(
                    "port",
                    format!("{namespace}/{name} has ports {}: say which", list.join(", ")),
                ));
            }
            (Some((p, proto)), _) => self.port_of(namespace, name, p, proto).ok_or_else(|| {
                err("port", format!("{namespace}/{name} has no port {p}/{proto}"))
            })?,
        };
        // The other indexes stay as they are: the key, name and VIP do not change.
        let Some(svc) = self.by_key.remove(&key) else {
            return Err(err("name", format!("no service {namespace}/{name}")));
        };
        let prev = Some(svc.maglev_size);
        let mut spec = svc.spec;
        spec.endpoints = endpoints;
        self.by_key.insert(key, Service::new(spec, self.maglev_max, prev));
        Ok(())
    }

    /// The Service another spec's node port would collide with.
    fn node_port_clash(&self, spec: &ServiceSpec) -> Option<ServiceKey> {
        self.node_ports.get(&(spec.node_port?, spec.proto)).copied()
    }

    /// The Service behind node port `port`/`proto` (one hash probe).
    #[inline]
    pub fn by_node_port(&self, port: u16, proto: L4Proto) -> Option<ServiceKey> {
        self.node_ports.get(&(port, proto)).copied()
    }

    /// True when some Service has a node port.
    #[inline]
    pub fn has_node_ports(&self) -> bool {
        !self.node_ports.is_empty()
    }

    /// Every (node port, protocol) in use.
    pub fn node_ports(&self) -> impl Iterator<Item = (u16, L4Proto)> + '_ {
        self.node_ports.keys().copied()
    }

    /// The Maglev table size of the Service port `spec` would replace, if there is one.
    pub fn maglev_size_of(&self, spec: &ServiceSpec) -> Option<usize> {
        let key = self.port_of(&spec.namespace, &spec.name, spec.port, spec.proto)?;
        self.by_key.get(&key).map(|s| s.maglev_size)
    }

    /// The service at `key` (one hash probe).
    #[inline]
    pub fn get(&self, key: &ServiceKey) -> Option<&ServiceSpec> {
        self.by_key.get(key).map(|s| &s.spec)
    }

    /// True when any service (any port or protocol) is on `vip`.
    #[inline]
    pub fn is_vip(&self, vip: Ipv4Addr) -> bool {
        self.vips.contains_key(&vip)
    }

    /// Picks an endpoint for a NEW flow to `key`. Only endpoints that are ready and not
    /// terminating are eligible. `flow_hash` is a hash of the flow's 5-tuple (the caller
    /// computes it); random uses it as its randomness, maglev indexes its table with it,
    /// round_robin uses a per-service counter (this is why &mut self). With session affinity
    /// the caller handles stickiness (not this table). Does not allocate.
    #[inline]
    pub fn select(&mut self, key: &ServiceKey, flow_hash: u64) -> Selection {
        let Some(svc) = self.by_key.get_mut(key) else {
            self.counters.not_a_service += 1;
            return Selection::NotAService;
        };
        match svc.pick(flow_hash) {
            Some((ip, port)) => {
                self.counters.selected += 1;
                Selection::Endpoint { ip, port }
            }
            None => {
                self.counters.no_endpoints += 1;
                Selection::NoEndpoints
            }
        }
    }

    /// Whether `ip:port` is still an endpoint (in any state) of the service at `key` — the
    /// pipeline uses this to reset flows to removed endpoints. A binary search.
    #[inline]
    pub fn has_endpoint(&self, key: &ServiceKey, ip: Ipv4Addr, port: u16) -> bool {
        self.by_key.get(key).is_some_and(|s| s.all.binary_search(&pack(ip, port)).is_ok())
    }

    /// Every service's spec, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &ServiceSpec> + '_ {
        self.by_key.values().map(|s| &s.spec)
    }

    /// Every service port, sorted by namespace, name, port and protocol.
    pub fn list(&self) -> Vec<ServiceSpec> {
        let mut v: Vec<ServiceSpec> = self.by_key.values().map(|s| s.spec.clone()).collect();
        v.sort_by(|a, b| {
            (&a.namespace, &a.name, a.port, a.proto).cmp(&(&b.namespace, &b.name, b.port, b.proto))
        });
        v
    }

    /// Number of services.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// The capacity.
    pub fn max_services(&self) -> usize {
        self.max_services
    }

    /// The event counters.
    pub fn counters(&self) -> ServiceCounters {
        self.counters
    }

    /// The Service called `name` in `namespace` (its first port).
    pub fn by_name(&self, namespace: &str, name: &str) -> Option<&ServiceSpec> {
        self.get(self.ports_of(namespace, name).first()?)
    }

    /// Indexes a service whose key and name are free.
    fn insert(&mut self, svc: Service) {
        let key = svc.spec.key();
        *self.vips.entry(key.vip).or_insert(0) += 1;
        if let Some(p) = svc.spec.node_port {
            self.node_ports.insert((p, key.proto), key);
        }
        let ports = self
            .by_name
            .entry(svc.spec.namespace.clone())
            .or_default()
            .entry(svc.spec.name.clone())
            .or_default();
        let at = ports.partition_point(|k| (k.port, k.proto) < (key.port, key.proto));
        ports.insert(at, key);
        self.by_key.insert(key, svc);
    }

    /// Removes the service at `key` from every index.
    fn take(&mut self, key: ServiceKey) -> Option<ServiceSpec> {
        let svc = self.by_key.remove(&key)?;
        if let Some(p) = svc.spec.node_port {
            self.node_ports.remove(&(p, key.proto));
        }
        if let Some(n) = self.vips.get_mut(&key.vip) {
            *n -= 1;
            if *n == 0 {
                self.vips.remove(&key.vip);
            }
        }
        if let Some(names) = self.by_name.get_mut(&svc.spec.namespace) {
            if let Some(ports) = names.get_mut(&svc.spec.name) {
                ports.retain(|k| *k != key);
                if ports.is_empty() {
                    names.remove(&svc.spec.name);
                }
            }
            if names.is_empty() {
                self.by_name.remove(&svc.spec.namespace);
            }
        }
        Some(svc.spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr() -> Ipv4Cidr {
        "10.96.0.0/12".parse().unwrap()
    }

    fn ep(last: u8, port: u16) -> Endpoint {
        Endpoint::new(Ipv4Addr::new(10, 244, 1, last), port)
    }

    fn spec(
        name: &str,
        vip_last: u8,
        endpoints: Vec<Endpoint>,
        algorithm: Algorithm,
    ) -> ServiceSpec {
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
    fn spread(t: &mut ServiceTable, k: &ServiceKey) -> FxHashMap<u8, usize> {
        let mut m = FxHashMap::default();
        for h in 0..3000u64 {
            match t.select(k, maglev::mix64(h)) {
                Selection::Endpoint { ip, .. } => *m.entry(ip.octets()[3]).or_insert(0) += 1,
                other => panic!("{other:?}"),
            }
        }
        m
    }

    #[test]
    fn keys_protocols_and_algorithms_parse_and_print() {
        let k: ServiceKey = "10.96.0.20:80/tcp".parse().unwrap();
        assert_eq!(
            k,
            ServiceKey { vip: Ipv4Addr::new(10, 96, 0, 20), port: 80, proto: L4Proto::Tcp }
        );
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
        let dup_key = vec![
            spec("a", 20, three(), Algorithm::Maglev),
            spec("b", 20, three(), Algorithm::Maglev),
        ];
        let e = ServiceTable::from_specs(dup_key, cidr(), 10, 65_537, None).unwrap_err();
        assert_eq!(e.field, "services[1].vip");
        assert!(e.reason.contains("services[0]"), "{e}");

        let mut other_port = spec("b", 20, three(), Algorithm::Maglev);
        other_port.port = 443;
        let mut other_proto = spec("c", 20, three(), Algorithm::Maglev);
        other_proto.proto = L4Proto::Udp;
        let ok = vec![spec("a", 20, three(), Algorithm::Maglev), other_port, other_proto];
        assert_eq!(ServiceTable::from_specs(ok, cidr(), 10, 65_537, None).unwrap().len(), 3);

        let dup_name = vec![
            spec("a", 20, three(), Algorithm::Maglev),
            spec("a", 21, three(), Algorithm::Maglev),
        ];
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

        let many =
            (0..3).map(|i| spec(&format!("s{i}"), 20 + i, three(), Algorithm::Maglev)).collect();
        assert_eq!(
            ServiceTable::from_specs(many, cidr(), 2, 65_537, None).unwrap_err().field,
            "services"
        );
    }

    #[test]
    fn every_algorithm_spreads_over_all_endpoints() {
        for a in [Algorithm::Random, Algorithm::RoundRobin, Algorithm::Maglev] {
            let mut t = table(vec![spec("web", 20, three(), a)]);
            let m = spread(&mut t, &key(20));
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
            let mut t = table(vec![spec("web", 20, eps, a)]);
            let m = spread(&mut t, &key(20));
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
            let mut t = table(vec![spec("web", 20, eps, a)]);
            let m = spread(&mut t, &key(20));
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
        let before: Vec<Selection> =
            (0..3000).map(|h| t.select(&key(20), maglev::mix64(h))).collect();
        let mut fewer = eps.clone();
        fewer[1].ready = false;
        t.set_endpoints("default", "web", None, fewer).unwrap();
        let gone = Selection::Endpoint { ip: Ipv4Addr::new(10, 244, 1, 3), port: 8080 };
        let mut moved = 0;
        for (h, b) in before.iter().enumerate() {
            let a = t.select(&key(20), maglev::mix64(h as u64));
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
        let again: Vec<Selection> =
            (0..3000).map(|h| t.select(&key(20), maglev::mix64(h))).collect();
        assert_eq!(again, before);
    }

    #[test]
    fn no_endpoints_and_not_a_service() {
        let mut eps = three();
        for e in &mut eps {
            e.ready = false;
        }
        let mut t = table(vec![
            spec("web", 20, eps, Algorithm::Maglev),
            spec("empty", 21, vec![], Algorithm::RoundRobin),
        ]);
        assert_eq!(t.select(&key(20), 1), Selection::NoEndpoints);
        assert_eq!(t.select(&key(21), 1), Selection::NoEndpoints);
        assert_eq!(t.select(&key(22), 1), Selection::NotAService);
        let mut udp = key(20);
        udp.proto = L4Proto::Udp;
        assert_eq!(t.select(&udp, 1), Selection::NotAService);
        assert!(t.is_vip(Ipv4Addr::new(10, 96, 0, 20)) && !t.is_vip(Ipv4Addr::new(10, 96, 0, 22)));
        assert_eq!(
            t.counters(),
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
                t.select(&key(20), h),
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
        assert_eq!(t.select(&key(20), 1), Selection::NoEndpoints);
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
            t.select(&key(21), 7),
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
        assert_eq!(t.counters().full_refusals, 1);
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
        let got: Vec<(String, String)> =
            t.list().into_iter().map(|s| (s.namespace, s.name)).collect();
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
        assert!(serde_json::from_str::<ServiceSpec>(
            &text.replace("8080}", "8080,\"zone\":\"a\"}")
        )
        .is_err());
        assert!(serde_json::from_str::<ServiceSpec>(
            &text.replace("\"maglev\"", "\"round-robin\"")
        )
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
            let t =
                ServiceTable::from_specs(specs, cidr(), 100_000, maglev::DEFAULT_MAX_SIZE, None)
                    .unwrap();
            let took = start.elapsed();
            assert_eq!(t.len(), n as usize);
            println!("from_specs: {n} services of 2 endpoints in {took:?}");
        }
    }
}
