//! The Service table itself: indexes by key, name, VIP and node port over Services derived
//! from their specs (Maglev tables included), built whole ([`ServiceTable::from_specs`]) or
//! edited ([`ServiceTable::upsert`], [`ServiceTable::remove`],
//! [`ServiceTable::set_endpoints`]) by the control plane, off the packet threads. Workers
//! only read a published table; see the parent module for the behaviour.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::spec::{
    check_endpoints, endpoint_id as pack, Algorithm, Endpoint, L4Proto, ServiceError,
    ServiceErrorKind, ServiceKey, ServiceSpec,
};
use crate::cidr::Ipv4Cidr;
use crate::tables::maglev;

/// One namespace's Services: name -> the keys of its ports. Shared between clones of the
/// table until one adds or removes a Service in that namespace.
type Names = Arc<FxHashMap<Arc<str>, Arc<[ServiceKey]>>>;

/// The slot of a Service built by `from_specs` until the table gives it one.
const UNSLOTTED: u32 = u32::MAX;

/// A Service with what `select` needs, derived from its spec once, when the control plane
/// builds a table; immutable afterwards (tables share it by `Arc` across snapshots).
#[derive(Debug)]
pub(super) struct Service {
    pub(super) spec: ServiceSpec,
    /// Every endpoint's packed `(ip, port)`, sorted, for `has_endpoint`.
    pub(super) all: Vec<u64>,
    /// Eligible endpoints, sorted by `(ip, port)`.
    pub(super) eligible: Vec<(Ipv4Addr, u16)>,
    /// Running sums of the eligible endpoints' weights (`cumulative[i]` includes `i`).
    pub(super) cumulative: Vec<u32>,
    /// Indices into `eligible` (Maglev services with an eligible endpoint only).
    pub(super) maglev: Vec<u16>,
    /// The Maglev table's size, kept across endpoint changes (even while `maglev` is empty).
    pub(super) maglev_size: usize,
    /// Where workers keep this Service's mutable state ([`super::ServiceState`]); kept by
    /// the table while the Service exists, reused after it is removed.
    pub(super) slot: u32,
    /// Unique to this build of the Service (never 0): a worker's state for another
    /// version is stale.
    pub(super) version: u64,
}

/// Versions handed to built Services, process-wide, so no two builds share one.
static VERSIONS: AtomicU64 = AtomicU64::new(1);

impl Service {
    /// Derives the lookup state. `spec` has been validated. `prev_size` is the Maglev table
    /// size of the Service this one replaces, kept when it still fits ([`maglev::resize`]).
    fn new(spec: ServiceSpec, maglev_max: usize, prev_size: Option<usize>, slot: u32) -> Service {
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
        let version = VERSIONS.fetch_add(1, Ordering::Relaxed);
        Service { spec, all, eligible, cumulative, maglev, maglev_size, slot, version }
    }

    /// The eligible endpoint covering weight unit `r` (< total weight).
    #[inline]
    pub(super) fn by_weight(&self, r: u64) -> (Ipv4Addr, u16) {
        let i = self.cumulative.partition_point(|&c| u64::from(c) <= r);
        self.eligible[i]
    }
}

/// The Service table. See the module doc for its behaviour.
///
/// Cloning is cheap next to building: every Service and every name is shared (`Arc`), so a
/// clone copies the indexes' pointers, and an edit of the clone rebuilds only what it
/// changes. That is how the control plane edits: clone the published table, edit, publish.
#[derive(Debug, Clone)]
pub struct ServiceTable {
    by_key: FxHashMap<ServiceKey, Arc<Service>>,
    /// namespace -> name -> key (nested so lookups by `&str` need no allocation).
    /// Keys of each Service's ports (a Kubernetes Service with several ports is one spec
    /// per port, all with its name and VIP), sorted by port and protocol.
    /// Shared between clones until one adds or removes a Service (`endpoint set`, the
    /// common edit, leaves it shared).
    by_name: Arc<FxHashMap<Arc<str>, Names>>,
    /// Services per VIP, for `is_vip`.
    vips: FxHashMap<Ipv4Addr, u32>,
    /// (node port, protocol) -> key.
    node_ports: FxHashMap<(u16, L4Proto), ServiceKey>,
    max_services: usize,
    maglev_max: usize,
    /// Slots handed out: every Service's slot is below this.
    slots: u32,
    /// Slots below `slots` that no Service holds, lowest last.
    free_slots: Vec<u32>,
}

impl ServiceTable {
    /// An empty table for at most `max_services` services, Maglev tables capped at
    /// `maglev_max` entries (see [`maglev::table_size`]).
    pub fn new(max_services: usize, maglev_max: usize) -> ServiceTable {
        ServiceTable {
            by_key: FxHashMap::default(),
            by_name: Arc::default(),
            vips: FxHashMap::default(),
            node_ports: FxHashMap::default(),
            max_services,
            maglev_max,
            slots: 0,
            free_slots: Vec::new(),
        }
    }

    /// Builds a whole table at once (for an atomic "apply"): validates every spec (errors name
    /// "services[i].field"), refuses duplicate keys or (namespace,name) pairs, and more than
    /// max_services; builds Maglev tables. A Service also in `previous` (same namespace and
    /// name) keeps its Maglev table size while it fits, so an apply that changes a few
    /// endpoints moves only the flows it must; one whose spec is unchanged is taken over as
    /// it is (not rebuilt: same Maglev table, same slot and version, so workers keep its
    /// round-robin cursor).
    pub fn from_specs(
        specs: Vec<ServiceSpec>,
        service_cidr: Ipv4Cidr,
        max_services: usize,
        maglev_max: usize,
        previous: Option<&ServiceTable>,
    ) -> Result<ServiceTable, ServiceError> {
        if specs.len() > max_services {
            return Err(ServiceError::invalid(
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
                return Err(ServiceError::conflict(
                    format!("services[{i}].vip"),
                    format!("{key} is also services[{j}]"),
                ));
            }
            if let Some(other) = t.port_of(&spec.namespace, &spec.name, spec.port, spec.proto) {
                let j = index[&other];
                return Err(ServiceError::conflict(
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
                    return Err(ServiceError::conflict(
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
                return Err(ServiceError::conflict(
                    format!("services[{i}].node_port"),
                    format!("{} is also services[{j}]'s", spec.node_port.unwrap_or_default()),
                ));
            }
            index.insert(key, i);
            let same = previous.and_then(|p| p.by_key.get(&key)).filter(|s| s.spec == spec);
            match same {
                Some(s) => t.insert(s.clone()),
                None => {
                    let prev = previous.and_then(|p| p.maglev_size_of(&spec));
                    t.insert(Arc::new(Service::new(spec, maglev_max, prev, UNSLOTTED)));
                }
            }
        }
        t.assign_slots();
        Ok(t)
    }

    /// Gives every Service built by `from_specs` (slot [`UNSLOTTED`]) the lowest slot no
    /// taken-over Service holds.
    fn assign_slots(&mut self) {
        let mut taken: Vec<u32> =
            self.by_key.values().map(|s| s.slot).filter(|&s| s != UNSLOTTED).collect();
        taken.sort_unstable();
        let mut taken = taken.into_iter().peekable();
        let mut next = 0u32;
        for svc in self.by_key.values_mut() {
            if svc.slot != UNSLOTTED {
                continue;
            }
            loop {
                while taken.next_if(|&t| t < next).is_some() {}
                if taken.next_if(|&t| t == next).is_none() {
                    break;
                }
                next += 1;
            }
            Arc::get_mut(svc).expect("built here, not shared yet").slot = next;
            next += 1;
        }
        let mut held: Vec<u32> = self.by_key.values().map(|s| s.slot).collect();
        held.sort_unstable();
        self.slots = held.last().map_or(0, |&s| s + 1);
        self.free_slots =
            (0..self.slots).rev().filter(|s| held.binary_search(s).is_err()).collect();
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
                return Err(ServiceError::conflict(
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
                return Err(ServiceError::conflict(
                    "vip",
                    format!("{key} is service {}/{}", other.spec.namespace, other.spec.name),
                ));
            }
        }
        if let Some(other) = self.node_port_clash(&spec).filter(|k| Some(*k) != old_key) {
            let o = &self.by_key[&other].spec;
            return Err(ServiceError::conflict(
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
            return Err(ServiceError {
                field: "services".into(),
                kind: ServiceErrorKind::Full,
                reason: format!("the service table is full ({} services)", self.max_services),
            });
        }
        if old_key == Some(key) && self.by_key.get(&key).is_some_and(|s| s.spec == spec) {
            // Unchanged: nothing is rebuilt, workers keep its state.
            return Ok(Some(spec));
        }
        let prev = old_key.and_then(|k| self.by_key.get(&k)).map(|s| (s.maglev_size, s.slot));
        let old = old_key.and_then(|k| self.take(k));
        // A replacement keeps its slot (its version tells workers it changed).
        let slot = match prev {
            Some((_, slot)) => {
                self.free_slots.retain(|&s| s != slot);
                slot
            }
            None => self.alloc_slot(),
        };
        let prev = prev.map(|(size, _)| size);
        self.insert(Arc::new(Service::new(spec, self.maglev_max, prev, slot)));
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
        self.by_name.get(namespace).and_then(|m| m.get(name)).map_or(&[], |p| &**p)
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
            (_, []) => {
                return Err(ServiceError::not_found(
                    "name",
                    format!("no service {namespace}/{name}"),
                ))
            }
            (None, [only]) => *only,
            (None, many) => {
                let list: Vec<String> =
                    many.iter().map(|k| format!("{}/{}", k.port, k.proto)).collect();
                return Err(ServiceError::invalid(
                    "port",
                    format!("{namespace}/{name} has ports {}: say which", list.join(", ")),
                ));
            }
            (Some((p, proto)), _) => self.port_of(namespace, name, p, proto).ok_or_else(|| {
                ServiceError::invalid("port", format!("{namespace}/{name} has no port {p}/{proto}"))
            })?,
        };
        // The other indexes stay as they are: the key, name and VIP do not change.
        let Some(svc) = self.by_key.get(&key) else {
            return Err(ServiceError::not_found("name", format!("no service {namespace}/{name}")));
        };
        if svc.spec.endpoints == endpoints {
            // Unchanged: nothing is rebuilt, workers keep its state.
            return Ok(());
        }
        let mut spec = svc.spec.clone();
        spec.endpoints = endpoints;
        let rebuilt = Service::new(spec, self.maglev_max, Some(svc.maglev_size), svc.slot);
        self.by_key.insert(key, Arc::new(rebuilt));
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

    /// The derived Service at `key` (one hash probe).
    #[inline]
    pub(super) fn service(&self, key: &ServiceKey) -> Option<&Service> {
        self.by_key.get(key).map(|s| &**s)
    }

    /// How many slots workers keep state for: every Service's slot is below this; at most
    /// the most Services the table has held at once.
    pub fn slots(&self) -> usize {
        self.slots as usize
    }

    /// The build version of the Service at `key`: changes whenever the Service is rebuilt
    /// (any change to its spec), and only then.
    pub fn version_of(&self, key: &ServiceKey) -> Option<u64> {
        self.by_key.get(key).map(|s| s.version)
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

    /// The Service called `name` in `namespace` (its first port).
    pub fn by_name(&self, namespace: &str, name: &str) -> Option<&ServiceSpec> {
        self.get(self.ports_of(namespace, name).first()?)
    }

    /// The lowest free slot.
    fn alloc_slot(&mut self) -> u32 {
        self.free_slots.pop().unwrap_or_else(|| {
            self.slots += 1;
            self.slots - 1
        })
    }

    /// Indexes a service whose key and name are free.
    fn insert(&mut self, svc: Arc<Service>) {
        let key = svc.spec.key();
        *self.vips.entry(key.vip).or_insert(0) += 1;
        if let Some(p) = svc.spec.node_port {
            self.node_ports.insert((p, key.proto), key);
        }
        let by_name = Arc::make_mut(&mut self.by_name);
        if !by_name.contains_key(svc.spec.namespace.as_str()) {
            by_name.insert(Arc::from(svc.spec.namespace.as_str()), Names::default());
        }
        let names = by_name.get_mut(svc.spec.namespace.as_str()).expect("inserted above");
        let names = Arc::make_mut(names);
        let mut ports: Vec<ServiceKey> =
            names.get(svc.spec.name.as_str()).map_or_else(Vec::new, |p| p.to_vec());
        let at = ports.partition_point(|k| (k.port, k.proto) < (key.port, key.proto));
        ports.insert(at, key);
        names.insert(Arc::from(svc.spec.name.as_str()), ports.into());
        self.by_key.insert(key, svc);
    }

    /// Removes the service at `key` from every index.
    fn take(&mut self, key: ServiceKey) -> Option<ServiceSpec> {
        let svc = self.by_key.remove(&key)?;
        if svc.slot != UNSLOTTED {
            // Lowest last, so the next Service takes the lowest free slot.
            let at = self.free_slots.partition_point(|&s| s > svc.slot);
            self.free_slots.insert(at, svc.slot);
        }
        if let Some(p) = svc.spec.node_port {
            self.node_ports.remove(&(p, key.proto));
        }
        if let Some(n) = self.vips.get_mut(&key.vip) {
            *n -= 1;
            if *n == 0 {
                self.vips.remove(&key.vip);
            }
        }
        let (namespace, name) = (svc.spec.namespace.as_str(), svc.spec.name.as_str());
        let by_name = Arc::make_mut(&mut self.by_name);
        if let Some(names) = by_name.get_mut(namespace) {
            let names = Arc::make_mut(names);
            if let Some(ports) = names.get_mut(name) {
                let rest: Vec<ServiceKey> = ports.iter().copied().filter(|k| *k != key).collect();
                if rest.is_empty() {
                    names.remove(name);
                } else {
                    *ports = rest.into();
                }
            }
            if names.is_empty() {
                by_name.remove(namespace);
            }
        }
        Some(Arc::try_unwrap(svc).map_or_else(|s| s.spec.clone(), |s| s.spec))
    }
}
