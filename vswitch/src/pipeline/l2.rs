//! L2 switching: learn source MACs, then forward by destination MAC, flooding broadcast,
//! multicast and unknown unicast to every port but the ingress one.
//!
//! The two passes run at different points of the pipeline: [`learn`] right after classify,
//! so a station is learned from every frame it sends (including the ARP requests and pings
//! the switch answers itself); [`forward`] last, for whatever no earlier stage settled.
//! Table behaviour (limit, aging, moves) is the MAC table's, see `tables/fdb`.
//!
//! Each goes over a burst twice (`pipeline::burst`): first every frame's key is hashed and
//! its table slot prefetched, then the frames are learned or looked up in order, as if each
//! were alone. With many stations the cache misses of a burst overlap instead of adding up.

use std::time::Instant;

use crate::packet::{Action, Batch, Packet};
use crate::port::PortId;
use crate::stats::{DropReason, PortCounters};
use crate::tables::fdb::{Fdb, FdbHash, FdbKey, FdbTime};
use crate::wire::EthernetFrame;

use super::burst::{self, Prefetched};
use super::{drop_packet, Gateway};

/// Learns the source MAC of every undecided packet on its ingress port. The gateway MAC is
/// only accepted from the host port (it is the host port's address); from anywhere else the
/// frame is a spoof and is dropped. With `announced`, what the other workers should hear of
/// (new stations, moves, refreshes due) is appended there (it never grows past the batch).
pub fn learn(
    batch: &mut Batch,
    fdb: &mut Fdb,
    gateway: &Gateway,
    counters: &mut [PortCounters],
    now: Instant,
    announced: Option<&mut Vec<(FdbKey, PortId)>>,
) {
    let mut stage = Learn { fdb, gateway, counters, now, table_now: None, announced };
    burst::run(batch, &mut stage, false);
}

struct Learn<'a> {
    fdb: &'a mut Fdb,
    gateway: &'a Gateway,
    counters: &'a mut [PortCounters],
    now: Instant,
    /// Taken on first use: a burst with nothing to learn (VXLAN from peers) costs nothing.
    table_now: Option<FdbTime>,
    announced: Option<&'a mut Vec<(FdbKey, PortId)>>,
}

impl Prefetched for Learn<'_> {
    type Prep = (FdbKey, FdbHash);

    #[inline(always)]
    fn prepare(&mut self, pkt: &mut Packet) -> Option<Self::Prep> {
        let (in_port, gw) = (pkt.meta.in_port, self.gateway);
        if gw.overlay_port == Some(in_port) || gw.node_port.is_some_and(|np| np.port == in_port) {
            return None;
        }
        // Classify dropped runts; anything else without a header is forward's to drop.
        let src = EthernetFrame::new_checked(pkt.data()).ok()?.src_addr();
        if src == gw.mac && gw.host_port != Some(in_port) {
            drop_packet(&mut pkt.meta.action, in_port, DropReason::SrcMacGateway, self.counters);
            return None;
        }
        let key = FdbKey::new(pkt.meta.vlan, src);
        let h = self.fdb.hash(key);
        self.fdb.prefetch(h);
        Some((key, h))
    }

    #[inline(always)]
    fn handle(&mut self, pkt: &mut Packet, prep: Option<Self::Prep>) {
        let Some((key, h)) = prep else { return };
        let (fdb, now) = (&mut *self.fdb, self.now);
        let now = *self.table_now.get_or_insert_with(|| fdb.clock(now));
        let in_port = pkt.meta.in_port;
        let learned = fdb.learn_hashed(key, h, in_port, now);
        if let Some(out) = self.announced.as_deref_mut() {
            if learned.announce() && out.len() < out.capacity() {
                out.push((key, in_port));
            }
        }
    }
}

/// Forwards every undecided packet by its destination MAC.
pub fn forward(batch: &mut Batch, fdb: &Fdb, counters: &mut [PortCounters], now: Instant) {
    let mut stage = Forward { fdb, counters, now, table_now: None };
    burst::run(batch, &mut stage, false);
}

struct Forward<'a> {
    fdb: &'a Fdb,
    counters: &'a mut [PortCounters],
    now: Instant,
    /// Taken on first use: most bursts routed by the gateway need no lookup.
    table_now: Option<FdbTime>,
}

impl Prefetched for Forward<'_> {
    type Prep = (FdbKey, FdbHash);

    #[inline(always)]
    fn prepare(&mut self, pkt: &mut Packet) -> Option<Self::Prep> {
        let in_port = pkt.meta.in_port;
        let Ok(eth) = EthernetFrame::new_checked(pkt.data()) else {
            drop_packet(&mut pkt.meta.action, in_port, DropReason::Runt, self.counters);
            return None;
        };
        let dst = eth.dst_addr();
        if dst.is_multicast() {
            pkt.meta.action = Action::Flood;
            if let Some(c) = self.counters.get_mut(in_port.index()) {
                c.flooded += 1;
            }
            return None;
        }
        let key = FdbKey::new(pkt.meta.vlan, dst);
        let h = self.fdb.hash(key);
        self.fdb.prefetch(h);
        Some((key, h))
    }

    #[inline(always)]
    fn handle(&mut self, pkt: &mut Packet, prep: Option<Self::Prep>) {
        let Some((key, h)) = prep else { return };
        let (fdb, now) = (self.fdb, self.now);
        let now = *self.table_now.get_or_insert_with(|| fdb.time(now));
        let in_port = pkt.meta.in_port;
        match fdb.lookup_hashed(key, h, now) {
            Some(p) if p == in_port => drop_packet(
                &mut pkt.meta.action,
                in_port,
                DropReason::DstOnIngressPort,
                self.counters,
            ),
            Some(p) => pkt.meta.action = Action::Forward(p),
            None => {
                pkt.meta.action = Action::Flood;
                if let Some(c) = self.counters.get_mut(in_port.index()) {
                    c.flooded += 1;
                    c.unknown_unicast += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::FdbConfig;
    use crate::packet::BATCH_SIZE;
    use crate::pipeline::classify;
    use crate::pipeline::testutil::*;
    use crate::port::PortId;
    use crate::wire::MacAddr;

    fn setup(max: usize) -> (Fdb, Gateway, Vec<PortCounters>) {
        let fdb = Fdb::new(FdbConfig { max_entries: max, aging: Duration::from_secs(300) });
        let gw = Gateway {
            ip: GW_IP,
            mac: GW_MAC,
            pod_cidr: "10.244.1.0/24".parse().unwrap(),
            host_port: Some(PortId(0)),
            overlay_port: None,
            service_cidr: None,
            node_port: None,
        };
        (fdb, gw, vec![PortCounters::default(); 8])
    }

    fn run_one(
        fdb: &mut Fdb,
        gw: &Gateway,
        c: &mut [PortCounters],
        port: u16,
        frame: &[u8],
        now: Instant,
    ) -> Action {
        let mut b = Batch::new();
        b.push_frame(PortId(port), frame);
        classify::run(&mut b, c, Some(0));
        learn(&mut b, fdb, gw, c, now, None);
        forward(&mut b, fdb, c, now);
        b.packets()[0].meta.action
    }

    #[test]
    fn unknown_unicast_floods_then_learned_destination_forwards() {
        let (mut fdb, gw, mut c) = setup(16);
        let t = Instant::now();
        let a_to_b = udp_frame(MAC_A, MAC_B, IP_A, IP_B, 1, 2, b"x");
        let b_to_a = udp_frame(MAC_B, MAC_A, IP_B, IP_A, 2, 1, b"y");
        assert_eq!(run_one(&mut fdb, &gw, &mut c, 1, &a_to_b, t), Action::Flood);
        assert_eq!(c[1].unknown_unicast, 1);
        assert_eq!(run_one(&mut fdb, &gw, &mut c, 2, &b_to_a, t), Action::Forward(PortId(1)));
        assert_eq!(run_one(&mut fdb, &gw, &mut c, 1, &a_to_b, t), Action::Forward(PortId(2)));
        assert_eq!(c[1].flooded, 1);
    }

    #[test]
    fn broadcast_floods_and_same_port_destination_drops() {
        let (mut fdb, gw, mut c) = setup(16);
        let t = Instant::now();
        let arp = arp_request(MAC_A, IP_A, IP_C);
        assert_eq!(run_one(&mut fdb, &gw, &mut c, 1, &arp, t), Action::Flood);
        let b_from_1 = udp_frame(MAC_B, MAC_C, IP_B, IP_C, 1, 2, b"x");
        run_one(&mut fdb, &gw, &mut c, 1, &b_from_1, t);
        let a_to_b_on_1 = udp_frame(MAC_A, MAC_B, IP_A, IP_B, 1, 2, b"x");
        assert_eq!(
            run_one(&mut fdb, &gw, &mut c, 1, &a_to_b_on_1, t),
            Action::Drop(DropReason::DstOnIngressPort)
        );
    }

    #[test]
    fn station_move_redirects_traffic() {
        let (mut fdb, gw, mut c) = setup(16);
        let t = Instant::now();
        run_one(&mut fdb, &gw, &mut c, 1, &udp_frame(MAC_A, MAC_C, IP_A, IP_C, 1, 2, b""), t);
        run_one(&mut fdb, &gw, &mut c, 3, &udp_frame(MAC_A, MAC_C, IP_A, IP_C, 1, 2, b""), t);
        let to_a = udp_frame(MAC_B, MAC_A, IP_B, IP_A, 1, 2, b"");
        assert_eq!(run_one(&mut fdb, &gw, &mut c, 2, &to_a, t), Action::Forward(PortId(3)));
        assert_eq!(fdb.counters().moves, 1);
    }

    #[test]
    fn full_table_floods_new_destinations() {
        let (mut fdb, gw, mut c) = setup(1);
        let t = Instant::now();
        run_one(&mut fdb, &gw, &mut c, 1, &udp_frame(MAC_A, MAC_C, IP_A, IP_C, 1, 2, b""), t);
        run_one(&mut fdb, &gw, &mut c, 2, &udp_frame(MAC_B, MAC_C, IP_B, IP_C, 1, 2, b""), t);
        assert_eq!(fdb.counters().learn_limit_hits, 1);
        let to_b = udp_frame(MAC_A, MAC_B, IP_A, IP_B, 1, 2, b"");
        assert_eq!(run_one(&mut fdb, &gw, &mut c, 1, &to_b, t), Action::Flood);
        let to_a = udp_frame(MAC_C, MAC_A, IP_C, IP_A, 1, 2, b"");
        assert_eq!(run_one(&mut fdb, &gw, &mut c, 3, &to_a, t), Action::Forward(PortId(1)));
    }

    #[test]
    fn gateway_mac_is_only_learned_from_the_host_port() {
        let (mut fdb, gw, mut c) = setup(16);
        let t = Instant::now();
        let spoof = udp_frame(GW_MAC, MAC_A, IP_B, IP_A, 1, 2, b"");
        assert_eq!(
            run_one(&mut fdb, &gw, &mut c, 2, &spoof, t),
            Action::Drop(DropReason::SrcMacGateway)
        );
        assert_eq!(c[2].drops[DropReason::SrcMacGateway as usize], 1);
        let from_host = udp_frame(GW_MAC, MAC_A, GW_IP, IP_A, 1, 2, b"");
        assert_eq!(run_one(&mut fdb, &gw, &mut c, 0, &from_host, t), Action::Flood);
        assert_eq!(fdb.lookup(FdbKey::new(None, GW_MAC), t), Some(PortId(0)));
    }

    #[test]
    fn vlans_are_separate_networks() {
        let (mut fdb, gw, mut c) = setup(16);
        let t = Instant::now();
        let mut tagged = udp_frame(MAC_A, MAC_C, IP_A, IP_C, 1, 2, b"");
        tagged.splice(12..12, [0x81, 0x00, 0x00, 0x0a]);
        run_one(&mut fdb, &gw, &mut c, 1, &tagged, t);
        let untagged_to_a = udp_frame(MAC_B, MAC_A, IP_B, IP_A, 1, 2, b"");
        assert_eq!(run_one(&mut fdb, &gw, &mut c, 2, &untagged_to_a, t), Action::Flood);
    }

    /// Per frame, the way the stages worked before bursts were prefetched.
    fn one_by_one(
        fdb: &mut Fdb,
        frames: &[(u16, Vec<u8>)],
        now: Instant,
    ) -> (Vec<Action>, Vec<(FdbKey, PortId)>) {
        let mut announced = Vec::new();
        for (port, f) in frames {
            let key = FdbKey::new(None, EthernetFrame::new_checked(&f[..]).unwrap().src_addr());
            if fdb.learn(key, PortId(*port), now).announce() {
                announced.push((key, PortId(*port)));
            }
        }
        let actions = frames
            .iter()
            .map(|(port, f)| {
                let dst = EthernetFrame::new_checked(&f[..]).unwrap().dst_addr();
                if dst.is_multicast() {
                    return Action::Flood;
                }
                match fdb.lookup(FdbKey::new(None, dst), now) {
                    Some(p) if p == PortId(*port) => Action::Drop(DropReason::DstOnIngressPort),
                    Some(p) => Action::Forward(p),
                    None => Action::Flood,
                }
            })
            .collect();
        (actions, announced)
    }

    proptest::proptest! {
        #[test]
        fn bursts_give_the_results_of_one_frame_at_a_time(
            bursts in proptest::collection::vec(
                proptest::collection::vec((0u8..6, 0u8..7, 1u16..4), 1..=BATCH_SIZE),
                1..6,
            ),
            max in 1usize..6,
        ) {
            let (mut fdb, gw, mut c) = setup(max);
            let mut reference = Fdb::new(FdbConfig { max_entries: max, aging: Duration::from_secs(300) });
            let t = Instant::now();
            let station = |n: u8| MacAddr([0x02, 0, 0, 0, 1, n]);
            for burst in bursts {
                let frames: Vec<(u16, Vec<u8>)> = burst
                    .iter()
                    .map(|&(src, dst, port)| {
                        let dst = if dst == 6 { MacAddr::BROADCAST } else { station(dst) };
                        (port, udp_frame(station(src), dst, IP_A, IP_B, 1, 2, b""))
                    })
                    .collect();
                let mut b = Batch::new();
                for (port, f) in &frames {
                    b.push_frame(PortId(*port), f);
                }
                classify::run(&mut b, &mut c, Some(0));
                let mut announced = Vec::with_capacity(BATCH_SIZE);
                learn(&mut b, &mut fdb, &gw, &mut c, t, Some(&mut announced));
                forward(&mut b, &fdb, &mut c, t);
                let actions: Vec<Action> = b.packets().iter().map(|p| p.meta.action).collect();
                let (want, want_announced) = one_by_one(&mut reference, &frames, t);
                proptest::prop_assert_eq!(actions, want);
                proptest::prop_assert_eq!(announced, want_announced);
                proptest::prop_assert_eq!(fdb.counters(), reference.counters());
            }
        }
    }

    #[test]
    fn frames_without_an_ethernet_header_are_not_learned_and_dropped_as_runts() {
        let (mut fdb, gw, mut c) = setup(8);
        let t = Instant::now();
        let frame = udp_frame(MAC_A, MAC_B, IP_A, IP_B, 1, 2, b"x");
        for cut in 0..=frame.len() {
            let mut b = Batch::new();
            // Not classified: these stages see whatever is there.
            b.push_frame(PortId(1), &frame[..cut]);
            learn(&mut b, &mut fdb, &gw, &mut c, t, None);
            forward(&mut b, &fdb, &mut c, t);
            let action = b.packets()[0].meta.action;
            if cut < 14 {
                assert_eq!(action, Action::Drop(DropReason::Runt), "cut {cut}");
                assert_eq!(fdb.len(), 0, "nothing learned from cut {cut}");
            } else {
                assert_eq!(action, Action::Flood, "cut {cut}");
                assert_eq!(fdb.lookup(FdbKey::new(None, MAC_A), t), Some(PortId(1)));
            }
        }
        assert_eq!(c[1].drops[DropReason::Runt as usize], 14);
    }
}
