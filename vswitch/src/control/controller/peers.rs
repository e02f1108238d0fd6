//! Overlay peers: `peer add`, `peer del`, `peer list`. Like Services, the peer table is
//! validated and built here and published to every worker as one shared snapshot; the
//! route of a peer's pod CIDR to the host port (so the node reaches remote pods through
//! the gateway) is added before the table that uses it is published, and removed after the
//! table without it is.

use std::sync::Arc;

use crate::config::PeerConfig;
use crate::control::api::*;
use crate::tables::peers::PeerTable;

use super::{failed, unavailable, Controller, State};

fn peer_info(p: &PeerConfig) -> PeerInfo {
    PeerInfo { name: p.name.clone(), ip: p.ip, pod_cidr: p.pod_cidr, vtep_mac: p.vtep_mac }
}

impl Controller {
    /// The peers, sorted by name: the table the workers have.
    pub(super) fn peer_list(&self) -> Vec<PeerInfo> {
        self.state().peers.list().iter().map(peer_info).collect()
    }

    /// Publishes `table` to every worker and keeps it as current; the tables the workers
    /// hand back are dropped here, off the packet path.
    fn publish_peers(&self, st: &mut State, table: PeerTable) -> Result<(), ApiError> {
        let table = Arc::new(table);
        let olds = self.worker.peers_publish(&table).map_err(unavailable)?;
        st.peers = table;
        drop(olds);
        Ok(())
    }

    /// Adds (or replaces) a peer: validated against this node and the other peers, its pod
    /// CIDR routed to the host port in the node namespace, then the new table published. A
    /// failure at any step leaves the table and the routes as they were.
    pub(super) fn peer_add(&self, args: PeerAddArgs) -> Result<PeerInfo, ApiError> {
        let Some(ov) = &self.config.overlay else {
            return Err(ApiError::new(
                ErrorKind::InvalidArgument,
                "no overlay is configured on this node ([overlay] in its config)",
            ));
        };
        let field = |e: crate::config::PeerError| {
            ApiError::field(ErrorKind::InvalidArgument, &format!("args.{}", e.field), e.reason)
        };
        let peer =
            PeerConfig::new(&args.name, args.ip, args.pod_cidr, args.vtep_mac).map_err(field)?;
        let mut st = self.state();
        let current = st.peers.list();
        let old = current.iter().find(|p| p.name == peer.name).cloned();
        let others: Vec<&PeerConfig> = current.iter().filter(|p| p.name != peer.name).collect();
        peer.check_fits(self.config.node.pod_cidr, ov.underlay_ip, others).map_err(field)?;
        let mut next = PeerTable::clone(&st.peers);
        next.upsert(peer.clone())
            .map_err(|e| ApiError::new(ErrorKind::ResourceExhausted, e.to_string()))?;
        let new_route = old.as_ref().is_none_or(|o| o.pod_cidr != peer.pod_cidr);
        let host = st.host_index.filter(|_| new_route);
        if let Some(h) = host {
            st.devices
                .route_add(peer.pod_cidr, h)
                .map_err(|e| failed(&format!("route {} to the host port", peer.pod_cidr), e))?;
        }
        if let Err(e) = self.publish_peers(&mut st, next) {
            if let Some(h) = host {
                st.devices.route_del(peer.pod_cidr, h);
            }
            return Err(e);
        }
        if let (Some(h), Some(o)) = (host, &old) {
            st.devices.route_del(o.pod_cidr, h);
        }
        Ok(peer_info(&peer))
    }

    /// Removes a peer: the table without it is published first (its traffic stops with the
    /// next burst), then its route goes.
    pub(super) fn peer_del(&self, name: &str) -> Result<PeerInfo, ApiError> {
        let mut st = self.state();
        let mut next = PeerTable::clone(&st.peers);
        let Some(peer) = next.remove(name) else {
            return Err(ApiError::field(
                ErrorKind::NotFound,
                "args.name",
                format!("no peer named {name:?}"),
            ));
        };
        self.publish_peers(&mut st, next)?;
        if let Some(h) = st.host_index {
            st.devices.route_del(peer.pod_cidr, h);
        }
        Ok(peer_info(&peer))
    }
}
