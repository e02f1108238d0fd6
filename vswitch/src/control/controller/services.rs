//! Services: `service add`, `service del`, `endpoint set` and `service apply`, each as
//! validate → build → publish → keep. The new table is built here (a clone of the current
//! one, edited, or a whole new one for an apply; Maglev tables included), so the workers
//! only swap a pointer between bursts; a change refused by validation publishes nothing.
//! After a publish, what follows the table is brought up to date: the NodePort filter's
//! port map and the DNS responder's names.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Instant;

use crate::control::api::*;
use crate::dns::server::{edit as edit_names, publish};
use crate::dns::NameTable;
use crate::tables::services::{ServiceCounters, ServiceError, ServiceErrorKind, ServiceTable};

use super::startup::dns_services;
use super::{unavailable, Controller, State};

/// The API error for a refused Service change: it names `args.<field>`.
fn refused(e: ServiceError) -> ApiError {
    let kind = match e.kind {
        ServiceErrorKind::NotFound => ErrorKind::NotFound,
        ServiceErrorKind::Invalid | ServiceErrorKind::Conflict | ServiceErrorKind::Full => {
            ErrorKind::InvalidArgument
        }
    };
    ApiError::field(kind, &format!("args.{}", e.field), e.reason)
}

impl Controller {
    /// Validates and builds `next` (an edit of a clone of the current table; `edit`'s
    /// error refuses the change and nothing is published), publishes it to every worker
    /// and keeps it as current. Returns what `edit` returned.
    fn change_services<R>(
        &self,
        st: &mut State,
        edit: impl FnOnce(&mut ServiceTable) -> Result<R, ServiceError>,
    ) -> Result<R, ApiError> {
        let mut next = ServiceTable::clone(&st.services);
        let r = edit(&mut next).map_err(|e| {
            if e.kind == ServiceErrorKind::Full {
                st.service_full_refusals += 1;
            }
            refused(e)
        })?;
        self.publish_services(st, Arc::new(next))?;
        Ok(r)
    }

    /// Publishes `table` to every worker and keeps it as current; the tables the workers
    /// hand back are dropped here, off the packet path.
    fn publish_services(&self, st: &mut State, table: Arc<ServiceTable>) -> Result<(), ApiError> {
        let olds = self.worker.services_publish(&table).map_err(unavailable)?;
        st.services = table;
        drop(olds);
        Ok(())
    }

    /// Service selection counters, summed over the workers, with the refusals of a full
    /// table counted here.
    pub fn service_counters(&self) -> Result<ServiceCounters, ApiError> {
        let mut c = self.worker.stats().map_err(unavailable)?.services;
        c.full_refusals += self.state().service_full_refusals;
        Ok(c)
    }

    /// Validates a Service against the node's Service CIDR and the other Services, builds
    /// the table with it and publishes that.
    pub(super) fn service_add(&self, spec: ServiceSpec) -> Result<ServiceSpec, ApiError> {
        let cidr = self.config.services.cidr;
        let mut st = self.state();
        let s = spec.clone();
        self.change_services(&mut st, |t| t.upsert(s, cidr))?;
        self.services_changed(&mut st, Some((&spec.namespace, &spec.name)));
        Ok(spec)
    }

    pub(super) fn service_del(&self, args: &ServiceRefArgs) -> Result<ServiceSpec, ApiError> {
        let mut st = self.state();
        let (namespace, name) = (args.namespace.as_str(), args.name.as_str());
        if dns_services(&self.config).iter().any(|d| d.namespace == namespace && d.name == name) {
            return Err(ApiError::field(
                ErrorKind::InvalidArgument,
                "args.name",
                format!(
                    "{namespace}/{name} is the built-in cluster DNS Service; \
                     turn it off with [dns] enabled = false"
                ),
            ));
        }
        let removed = self.change_services(&mut st, |t| {
            let mut removed = t.remove(namespace, name);
            if removed.is_empty() {
                return Err(ServiceError {
                    field: "name".into(),
                    kind: ServiceErrorKind::NotFound,
                    reason: format!("no Service {namespace}/{name}"),
                });
            }
            Ok(removed.swap_remove(0))
        })?;
        self.services_changed(&mut st, Some((namespace, name)));
        Ok(removed)
    }

    pub(super) fn endpoint_set(&self, args: EndpointSetArgs) -> Result<Reply, ApiError> {
        let started = Instant::now();
        let mut st = self.state();
        let EndpointSetArgs { namespace, name, port, proto, endpoints } = args;
        let port = port.map(|p| (p, proto.unwrap_or_default()));
        self.change_services(&mut st, |t| t.set_endpoints(&namespace, &name, port, endpoints))?;
        Ok(Reply::Applied {
            services: st.services.len() as u64,
            elapsed_us: started.elapsed().as_micros() as u64,
        })
    }

    /// Builds and validates the whole new table here, off the packet path, then publishes
    /// it with one worker command; the old tables are dropped here too.
    pub(super) fn service_apply(&self, specs: Vec<ServiceSpec>) -> Result<Reply, ApiError> {
        let started = Instant::now();
        let s = &self.config.services;
        let mut st = self.state();
        // The built-in DNS Services stay, unless the new table puts its own Service on their
        // address (pointing the DNS address at CoreDNS pods, say).
        let mut specs = specs;
        let n_given = specs.len();
        for d in dns_services(&self.config) {
            if !specs[..n_given].iter().any(|x| x.key() == d.key()) {
                specs.push(d);
            }
        }
        let table = ServiceTable::from_specs(
            specs,
            s.cidr,
            s.max_services,
            s.maglev_table_size,
            Some(&st.services),
        )
        .map_err(refused)?;
        let n = table.len();
        self.publish_services(&mut st, Arc::new(table))?;
        self.services_changed(&mut st, None);
        let elapsed_us = started.elapsed().as_micros() as u64;
        Ok(Reply::Applied { services: n as u64, elapsed_us })
    }

    /// Brings what follows the Service table up to date with `st.services`: the NodePort
    /// filter's port map and the DNS responder's names (only `changed`'s name when one
    /// Service changed, all of them after an apply).
    pub(super) fn services_changed(&self, st: &mut State, changed: Option<(&str, &str)>) {
        if let Some((map, in_map)) = &mut st.node_ports {
            let want: BTreeSet<(L4Proto, u16)> =
                st.services.node_ports().map(|(port, proto)| (proto, port)).collect();
            for &(proto, port) in want.difference(in_map) {
                if let Err(e) = map.insert(proto.number().into(), port) {
                    eprintln!("podswitch: node port {port}/{proto}: {e}");
                }
            }
            for &(proto, port) in in_map.difference(&want) {
                if let Err(e) = map.remove(proto.number().into(), port) {
                    eprintln!("podswitch: node port {port}/{proto}: {e}");
                }
            }
            *in_map = want;
        }
        match changed {
            Some((namespace, name)) => {
                let Some((_, shared)) = &self.dns else { return };
                let vips: Vec<Ipv4Addr> =
                    st.services.ports_of(namespace, name).iter().map(|k| k.vip).collect();
                edit_names(shared, |t| t.set_service(namespace, name, &vips));
            }
            None => self.publish_names(st),
        }
    }

    /// Hands the DNS responder the names of the Services in `st` (built off the packet path;
    /// the responder swaps it in for its next query).
    fn publish_names(&self, st: &State) {
        let Some((_, shared)) = &self.dns else { return };
        let Some(d) = &self.config.dns else { return };
        if let Ok(names) = NameTable::from_services(st.services.iter(), &d.cluster_domain) {
            publish(shared, names);
        }
    }
}
