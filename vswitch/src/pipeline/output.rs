//! Output: turn each packet's decision into per-port transmit lists, so every output port
//! gets one `tx_burst` per batch however the packets are interleaved.
//!
//! The lists are packet indices into the batch; a flooded packet appears in the list of every
//! live port but its ingress one, and is written once per port from the same buffer (no
//! copies). All lists are allocated once, sized for a full batch, so planning never
//! allocates. Dropped packets appear in no list.

use crate::packet::{Action, Batch, BATCH_SIZE};
use crate::port::PortId;

/// Per-port transmit lists for one batch.
#[derive(Debug)]
pub struct TxPlan {
    lists: Vec<Vec<u16>>,
    touched: Vec<PortId>,
    no_flood: [Option<PortId>; 2],
}

impl TxPlan {
    /// Lists for ports `0..max_ports`.
    pub fn new(max_ports: usize) -> TxPlan {
        TxPlan {
            lists: (0..max_ports).map(|_| Vec::with_capacity(BATCH_SIZE)).collect(),
            touched: Vec::with_capacity(max_ports),
            no_flood: [None; 2],
        }
    }

    /// Keeps floods off the overlay port and the node-port interface: both are routed,
    /// never flooded.
    pub fn set_no_flood(&mut self, overlay: Option<PortId>, node_port: Option<PortId>) {
        self.no_flood = [overlay, node_port];
    }

    /// Plans `batch`. `live` (sorted) lists the ports a flood goes to and every port a
    /// forward or reply may target; a decision naming any other port (one that failed or was
    /// removed after the decision's table entry was read) sends nothing.
    pub fn build(&mut self, batch: &Batch, live: &[PortId]) {
        let is_live = |p: PortId| live.binary_search(&p).is_ok();
        self.clear();
        for (i, pkt) in batch.packets().iter().enumerate() {
            let idx = i as u16;
            match pkt.meta.action {
                Action::Forward(p) if is_live(p) => self.push(p, idx),
                Action::Reply if is_live(pkt.meta.in_port) => self.push(pkt.meta.in_port, idx),
                Action::Flood => {
                    for &p in live {
                        if p != pkt.meta.in_port && !self.no_flood.contains(&Some(p)) {
                            self.push(p, idx);
                        }
                    }
                }
                _ => {}
            }
        }
    }

    #[inline]
    fn push(&mut self, port: PortId, idx: u16) {
        let Some(list) = self.lists.get_mut(port.index()) else { return };
        if list.is_empty() {
            self.touched.push(port);
        }
        list.push(idx);
    }

    /// The ports with something to send, and their packet indices, in first-use order.
    pub fn iter(&self) -> impl Iterator<Item = (PortId, &[u16])> + '_ {
        self.touched.iter().filter_map(|p| Some((*p, self.lists.get(p.index())?.as_slice())))
    }

    /// Empties every list.
    pub fn clear(&mut self) {
        for p in self.touched.drain(..) {
            if let Some(list) = self.lists.get_mut(p.index()) {
                list.clear();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::DropReason;

    fn batch(actions: &[(u16, Action)]) -> Batch {
        let mut b = Batch::new();
        for (port, action) in actions {
            b.push_frame(PortId(*port), &[0u8; 60]);
            let n = b.len();
            b.packets_mut()[n - 1].meta.action = *action;
        }
        b
    }

    #[test]
    fn groups_by_port_floods_to_all_but_ingress_and_skips_drops() {
        let live = [PortId(0), PortId(1), PortId(2)];
        let b = batch(&[
            (1, Action::Forward(PortId(2))),
            (1, Action::Flood),
            (2, Action::Drop(DropReason::Runt)),
            (2, Action::Reply),
            (1, Action::Forward(PortId(2))),
            (1, Action::Forward(PortId(7))),
        ]);
        let mut plan = TxPlan::new(8);
        plan.build(&b, &live);
        let got: Vec<(PortId, Vec<u16>)> = plan.iter().map(|(p, l)| (p, l.to_vec())).collect();
        assert_eq!(
            got,
            vec![(PortId(2), vec![0, 1, 3, 4]), (PortId(0), vec![1])],
            "port 1 never receives its own flood; the forward to a dead port is gone"
        );
        plan.clear();
        assert_eq!(plan.iter().count(), 0);
    }

    #[test]
    fn ports_beyond_the_lists_send_nothing() {
        let live = [PortId(0), PortId(1), PortId(9)];
        let b = batch(&[(1, Action::Forward(PortId(9))), (9, Action::Reply), (1, Action::Flood)]);
        let mut plan = TxPlan::new(2);
        plan.build(&b, &live);
        let got: Vec<(PortId, Vec<u16>)> = plan.iter().map(|(p, l)| (p, l.to_vec())).collect();
        assert_eq!(got, vec![(PortId(0), vec![2])]);
        plan.clear();
        assert_eq!(plan.iter().count(), 0);
    }
}
