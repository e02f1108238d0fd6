//! The invariants checked after every burst and at the end of a case (see the module doc
//! of `harness`).

use super::*;

impl Harness {
    /// Per-packet invariants; returns the drops decided, as (port, reason, count).
    pub(super) fn check_batch(
        &self,
        batch: &Batch,
        info: &[Ingress],
    ) -> Vec<(PortId, DropReason, usize)> {
        let step = self.step;
        let mut drops: Vec<(PortId, DropReason, usize)> = Vec::new();
        for (pkt, ing) in batch.packets().iter().zip(info) {
            let m = &pkt.meta;
            let what = || format!("step {step}: packet from port {} ({:?})", m.in_port.0, m.action);
            match m.action {
                Action::Continue => panic!("{}: left undecided", what()),
                Action::Steer(_) => panic!("{}: steered but not moved", what()),
                Action::Handed => continue,
                Action::Drop(r) => {
                    match drops.iter_mut().find(|(p, q, _)| *p == m.in_port && *q == r) {
                        Some(d) => d.2 += 1,
                        None => drops.push((m.in_port, r, 1)),
                    }
                    continue;
                }
                Action::Forward(p) => {
                    assert!(self.live.contains(&p), "{}: to a port that is not live", what());
                    assert!(
                        pkt.len() <= ing.len,
                        "{}: grew from {} to {}",
                        what(),
                        ing.len,
                        pkt.len()
                    );
                    if p == OVERLAY {
                        assert_ne!(m.in_port, OVERLAY, "{}: relayed between peers", what());
                        let known = m.tunnel.is_some_and(|t| self.peers.iter().any(|x| x.ip == t));
                        assert!(
                            known,
                            "{}: to the overlay without a peer ({:?})",
                            what(),
                            m.tunnel
                        );
                    }
                    if p == NODE_PORT {
                        assert_eq!(pkt.data().get(6..12), Some(&NODE_MAC.0[..]), "{}", what());
                    }
                }
                Action::Flood => {
                    assert!(m.in_port != OVERLAY && m.in_port != NODE_PORT, "{}: flooded", what());
                    assert!(pkt.len() <= ing.len, "{}: grew", what());
                }
                Action::Reply => {
                    let limit = ing.len.max(14 + 20 + 8 + 68);
                    assert!(pkt.len() <= limit, "{}: answer of {} bytes", what(), pkt.len());
                }
            }
            if let Some((ip_ok, l4_ok)) = checksums(pkt.data()) {
                if ing.ip_ok {
                    assert!(ip_ok, "{}: IPv4 checksum broken on the way", what());
                }
                if ing.l4_ok && m.vnet == VnetHdr::default() {
                    assert!(l4_ok, "{}: L4 checksum broken on the way", what());
                }
            }
        }
        drops
    }

    /// Drop counters grew by exactly the drops decided.
    pub(super) fn check_counters(
        &self,
        before: &[Vec<PortCounters>],
        drops: &[(PortId, DropReason, usize)],
    ) {
        let mut decided = [[0u64; DropReason::COUNT]; PORTS as usize];
        for (p, r, n) in drops {
            decided[p.index()][*r as usize] += *n as u64;
        }
        for (port, want) in decided.iter().enumerate() {
            let mut grown = [0u64; DropReason::COUNT];
            for (w, b) in self.workers.iter().zip(before) {
                for (g, (now, then)) in
                    grown.iter_mut().zip(w.counters[port].drops.iter().zip(&b[port].drops))
                {
                    *g += now - then;
                }
            }
            if grown != *want {
                let r = (0..DropReason::COUNT).find(|&r| grown[r] != want[r]).unwrap_or(0);
                panic!(
                    "step {}: port {port} {}: counted {}, decided {}",
                    self.step,
                    DropReason::ALL[r].label(),
                    grown[r],
                    want[r]
                );
            }
        }
    }

    /// Table limits and the shared conntrack count.
    pub(super) fn check_tables(&self) {
        let total = self.conntrack_len();
        let shared = self.workers[0].pipeline.nat.steer.conntrack_len.len();
        assert_eq!(shared, total, "step {}: shared conntrack count", self.step);
        let max = self.workers[0].pipeline.nat.conntrack.max_entries();
        assert!(total <= max, "step {}: {total} connections, limit {max}", self.step);
        for w in &self.workers {
            assert!(w.pipeline.fdb.len() <= w.pipeline.fdb.max_entries(), "step {}", self.step);
        }
    }

    /// No connection is tracked by both workers: steering sent every packet of it to one.
    pub(super) fn check_no_shared_connections(&self) {
        let keys = |w: &Worker| -> Vec<crate::tables::conntrack::FlowKey> {
            w.pipeline
                .nat
                .conntrack
                .entries(self.now, usize::MAX)
                .iter()
                .flat_map(|e| [e.original, e.reply()])
                .collect()
        };
        let (a, b) = (keys(&self.workers[0]), keys(&self.workers[1]));
        for k in &a {
            assert!(!b.contains(k), "{k:?} is tracked by both workers");
        }
    }
}
