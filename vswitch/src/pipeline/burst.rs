//! The two-pass walk over a burst that the table stages share (learn, forward, NAT).
//!
//! A table lookup per packet is a cache miss per packet once the table outgrows the cache.
//! Done one packet at a time the misses add up; started together they overlap. So each
//! table stage goes over a burst twice: [`Prefetched::prepare`] computes every undecided
//! packet's key and hash and asks for its slot ahead of time, [`Prefetched::between`] may
//! start a second round (the entries the slots name), then [`Prefetched::handle`] decides
//! the packets one by one, in order, as if each were alone: prefetching changes no result.
//! What the first pass computed waits in an array on the stack, one burst long; a longer
//! batch is walked a burst at a time.

use crate::packet::{Action, Batch, Packet, BATCH_SIZE};

/// A stage that walks bursts in two passes (see the module doc).
pub(crate) trait Prefetched {
    /// What the first pass computes for a packet (its key, hash, layout).
    type Prep: Copy;

    /// First pass, for a packet still undecided: compute what the lookup needs and start
    /// bringing its memory into cache. May settle the packet (a drop), then `None`.
    fn prepare(&mut self, pkt: &mut Packet) -> Option<Self::Prep>;

    /// Between the passes, over the burst's preparations (index = packet's position in the
    /// burst; `None` for settled packets and those with nothing to look up).
    fn between(&mut self, _prepared: &[Option<Self::Prep>]) {}

    /// Second pass, in order, for every packet still undecided, with what `prepare` gave.
    fn handle(&mut self, pkt: &mut Packet, prep: Option<Self::Prep>);
}

/// Runs `stage` over `batch`, a burst at a time. A burst where `prepare` found nothing to
/// look up skips the second pass unless `always_handle`.
#[inline(always)]
pub(crate) fn run<S: Prefetched>(batch: &mut Batch, stage: &mut S, always_handle: bool) {
    for burst in batch.packets_mut().chunks_mut(BATCH_SIZE) {
        let mut prepared: [Option<S::Prep>; BATCH_SIZE] = [None; BATCH_SIZE];
        let mut any = false;
        for (pkt, prep) in burst.iter_mut().zip(prepared.iter_mut()) {
            if pkt.meta.action == Action::Continue {
                *prep = stage.prepare(pkt);
                any |= prep.is_some();
            }
        }
        if !any && !always_handle {
            continue;
        }
        stage.between(&prepared[..burst.len()]);
        for (pkt, prep) in burst.iter_mut().zip(prepared) {
            if pkt.meta.action == Action::Continue {
                stage.handle(pkt, prep);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::port::PortId;
    use crate::stats::DropReason;

    /// Records the calls; drops every third packet in `prepare`, prepares the even ones.
    #[derive(Default)]
    struct Probe {
        prepared: Vec<u16>,
        betweens: Vec<usize>,
        handled: Vec<(u16, Option<u16>)>,
    }

    impl Prefetched for Probe {
        type Prep = u16;
        fn prepare(&mut self, pkt: &mut Packet) -> Option<u16> {
            let n = pkt.meta.in_port.0;
            self.prepared.push(n);
            if n.is_multiple_of(3) {
                pkt.meta.action = Action::Drop(DropReason::Runt);
                return None;
            }
            n.is_multiple_of(2).then_some(n)
        }
        fn between(&mut self, prepared: &[Option<u16>]) {
            self.betweens.push(prepared.len());
        }
        fn handle(&mut self, pkt: &mut Packet, prep: Option<u16>) {
            self.handled.push((pkt.meta.in_port.0, prep));
        }
    }

    #[test]
    fn walks_bursts_in_order_and_skips_settled_packets() {
        let mut b = Batch::new();
        for i in 0..BATCH_SIZE as u16 {
            b.push_frame(PortId(i), &[0u8; 60]);
        }
        b.packets_mut()[1].meta.action = Action::Flood;
        let mut p = Probe::default();
        run(&mut b, &mut p, true);
        let undecided: Vec<u16> = (0..BATCH_SIZE as u16).filter(|&i| i != 1).collect();
        assert_eq!(p.prepared, undecided);
        assert_eq!(p.betweens, vec![BATCH_SIZE]);
        let want: Vec<(u16, Option<u16>)> = undecided
            .iter()
            .filter(|&&i| !i.is_multiple_of(3))
            .map(|&i| (i, i.is_multiple_of(2).then_some(i)))
            .collect();
        assert_eq!(p.handled, want);
    }

    #[test]
    fn a_burst_with_nothing_prepared_is_not_handled_unless_asked() {
        let mut b = Batch::new();
        b.push_frame(PortId(1), &[0u8; 60]);
        let mut p = Probe::default();
        run(&mut b, &mut p, false);
        assert!(p.handled.is_empty() && p.betweens.is_empty());
        run(&mut b, &mut p, true);
        assert_eq!(p.handled, vec![(1, None)]);
    }
}
