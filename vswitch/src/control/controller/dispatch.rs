//! Dispatch: each [`Request`] to its handler, and the answers that only read (status,
//! stats, the MAC table, conntrack), merged from the workers' copies.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::control::api::*;
use crate::port::{PortId, PortKind};
use crate::tables::conntrack::{Conntrack, Entry as CtEntry};

use super::devices::tap_drops;
use super::{unavailable, Controller};

impl Controller {
    /// Carries out one request.
    pub fn handle(&self, req: Request) -> Response {
        let result = match req {
            Request::Status => Ok(Reply::Status(self.status())),
            Request::PortAdd(args) => self.port_add(args).map(Reply::Port),
            Request::PortDel(args) => self.port_del(&args.name).map(Reply::Port),
            Request::PortList => self.port_list().map(|ports| Reply::Ports { ports }),
            Request::FdbList => self.fdb_list().map(Reply::Fdb),
            Request::FdbFlush(args) => self.fdb_flush(args.port.as_deref()),
            Request::Stats => self.stats().map(Reply::Stats),
            Request::PeerAdd(args) => self.peer_add(args).map(Reply::Peer),
            Request::PeerDel(args) => self.peer_del(&args.name).map(Reply::Peer),
            Request::PeerList => Ok(Reply::Peers { peers: self.peer_list() }),
            Request::ServiceAdd(spec) => self.service_add(spec).map(Reply::Service),
            Request::ServiceDel(args) => self.service_del(&args).map(Reply::Service),
            Request::ServiceList => Ok(Reply::Services { services: self.state().services.list() }),
            Request::EndpointSet(args) => self.endpoint_set(args),
            Request::ServiceApply(args) => self.service_apply(args.services),
            Request::ConntrackList(args) => self.conntrack_list(args.limit.unwrap_or(1000)),
            Request::ConntrackFlush => self
                .worker
                .conntrack_flush()
                .map(|n| Reply::Flushed { removed: n as u64 })
                .map_err(unavailable),
            Request::ConntrackStats => self
                .worker
                .conntrack_stats()
                .map(|(len, max, counters)| {
                    Reply::ConntrackStats(ConntrackStatsReply {
                        entries: len as u64,
                        max_entries: max as u64,
                        bytes_per_entry: Conntrack::bytes_per_entry() as u64,
                        counters,
                    })
                })
                .map_err(unavailable),
        };
        match result {
            Ok(r) => Response::Ok(r),
            Err(e) => Response::Error(e),
        }
    }

    fn status(&self) -> StatusReply {
        let st = self.state();
        let n = &self.config.node;
        let health = self.worker.health();
        StatusReply {
            api_version: API_VERSION,
            version: env!("CARGO_PKG_VERSION").to_string(),
            node: n.name.clone(),
            pod_cidr: n.pod_cidr,
            gateway: n.gateway,
            gateway_mac: n.gateway_mac,
            mtu: n.mtu,
            host_port: self.config.host_port.as_ref().map(|h| h.name.clone()),
            ports: st.ports.len(),
            max_ports: self.config.ports.max_ports,
            uptime_secs: self.started.elapsed().as_secs(),
            workers: health.workers,
            workers_down: health.down,
            worker_panics: health.panics,
            overlay: self.config.overlay.as_ref().map(|o| OverlayStatus {
                underlay_ip: o.underlay_ip,
                vni: o.vni,
                udp_port: o.udp_port,
                underlay_mtu: o.underlay_mtu,
                peers: st.peers.len(),
                max_peers: o.max_peers,
            }),
        }
    }

    fn conntrack_list(&self, limit: usize) -> Result<Reply, ApiError> {
        let entries = self.worker.conntrack_list(limit).map_err(unavailable)?;
        let now = Instant::now();
        Ok(Reply::Conntrack { entries: entries.iter().map(|e| conntrack_info(e, now)).collect() })
    }

    fn names_by_id(&self) -> BTreeMap<PortId, String> {
        self.state().ports.iter().map(|(n, r)| (r.id, n.clone())).collect()
    }

    fn fdb_list(&self) -> Result<FdbReply, ApiError> {
        let snap = self.worker.fdb_list().map_err(unavailable)?;
        let names = self.names_by_id();
        Ok(FdbReply {
            entries: snap
                .entries
                .iter()
                .map(|e| FdbEntryInfo {
                    mac: e.key.mac(),
                    vlan: e.key.vlan(),
                    port: names.get(&e.port).cloned().unwrap_or_else(|| format!("#{}", e.port)),
                    age_secs: (e.age.as_secs_f64() * 10.0).round() / 10.0,
                })
                .collect(),
            size: snap.len as u64,
            max_entries: snap.max_entries as u64,
            aging_secs: snap.aging.as_secs(),
            counters: snap.counters,
        })
    }

    fn fdb_flush(&self, port: Option<&str>) -> Result<Reply, ApiError> {
        let id = match port {
            None => None,
            Some(name) => Some(self.state().ports.get(name).map(|r| r.id).ok_or_else(|| {
                ApiError::field(ErrorKind::NotFound, "args.port", format!("no port named {name:?}"))
            })?),
        };
        let n = self.worker.fdb_flush(id).map_err(unavailable)?;
        Ok(Reply::Flushed { removed: n as u64 })
    }

    /// Frames a TAP port's device dropped before the switch read them (the pod sent faster
    /// than its queue was read), by port id: the TAP's `tx_dropped`, read in its namespace.
    /// Ports whose namespace or device cannot be read are left out.
    fn tap_drops(&self) -> BTreeMap<PortId, u64> {
        let mut st = self.state();
        let taps: Vec<(PortId, Option<String>, String)> = st
            .ports
            .values()
            .filter(|r| matches!(r.kind, PortKind::Tap | PortKind::Host))
            .map(|r| (r.id, r.netns.clone(), r.ifname.clone()))
            .collect();
        tap_drops(&mut *st.devices, &taps)
    }

    fn stats(&self) -> Result<StatsReply, ApiError> {
        let snap = self.worker.stats().map_err(unavailable)?;
        let names = self.names_by_id();
        let tap_drops = self.tap_drops();
        Ok(StatsReply {
            ports: snap
                .ports
                .iter()
                .map(|p| {
                    let name = names.get(&p.id).map(String::as_str).unwrap_or("(detached)");
                    let mut r = p.counters.to_report(name);
                    r.device_drops =
                        p.device_drops.iter().map(|(k, v)| (k.to_string(), *v)).collect();
                    if let Some(&n) = tap_drops.get(&p.id).filter(|&&n| n > 0) {
                        r.device_drops.insert("tap_tx_dropped".into(), n);
                    }
                    r
                })
                .collect(),
            fdb_size: snap.fdb_len as u64,
            fdb: snap.fdb,
            neighbors: snap.neighbors as u64,
        })
    }
}

fn conntrack_info(e: &CtEntry, now: Instant) -> ConntrackEntryInfo {
    let o = &e.original;
    ConntrackEntryInfo {
        proto: if o.proto == 6 { "tcp" } else { "udp" }.to_string(),
        client: format!("{}:{}", o.src, o.sport),
        service: format!("{}:{}", e.nat.vip, e.nat.vport),
        endpoint: format!("{}:{}", e.nat.backend, e.nat.bport),
        state: e.state.to_string(),
        age_secs: now.saturating_duration_since(e.created).as_secs_f64(),
        expires_in_secs: e.expires.saturating_duration_since(now).as_secs_f64(),
        packets: e.packets,
    }
}
