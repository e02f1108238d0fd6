//! ARP responder: answers requests for the gateway address (with the gateway MAC) and for
//! known pod addresses (with the pod's MAC, from the neighbor table), so ARP broadcasts for
//! them are never flooded. Requests from the host port for addresses on peer nodes are
//! answered with the gateway MAC (proxy ARP): the node's kernel reaches remote pods through
//! the host port, and the gateway routes them into the overlay. The request is rewritten into the reply in place and sent back out
//! of the port it came from.
//!
//! Left alone, to be switched normally: replies, gratuitous ARP (sender address = target
//! address), requests for unknown addresses, requests arriving on the port that owns the
//! target address (a pod probing its own address for duplicates must not hear a conflict
//! from the switch), and tagged frames (the pod network is untagged).

use crate::packet::{Action, Batch, Packet};
use crate::stats::PortCounters;
use crate::tables::neigh::NeighTable;
use crate::wire::{ArpOperation, ArpPacket, EtherType, MacAddr};

use super::{Gateway, Overlay};

/// Answers the ARP requests of the batch that the switch knows the answer to.
pub fn run(
    batch: &mut Batch,
    gateway: &Gateway,
    neigh: &NeighTable,
    overlay: Option<&Overlay>,
    counters: &mut [PortCounters],
) {
    for pkt in batch.packets_mut() {
        if pkt.meta.action != Action::Continue
            || pkt.meta.vlan.is_some()
            || pkt.meta.ethertype != u16::from(EtherType::Arp)
        {
            continue;
        }
        if answer(pkt, gateway, neigh, overlay) {
            pkt.meta.action = Action::Reply;
            pkt.meta.vnet = Default::default();
            if let Some(c) = counters.get_mut(pkt.meta.in_port.index()) {
                c.arp_replies += 1;
            }
        }
    }
}

/// Rewrites an ARP request into its reply when the switch knows the answer.
#[inline]
fn answer(
    pkt: &mut Packet,
    gateway: &Gateway,
    neigh: &NeighTable,
    overlay: Option<&Overlay>,
) -> bool {
    let in_port = pkt.meta.in_port;
    let Some((mut eth, l3_bytes)) = pkt.split_l3_mut() else { return false };
    let Ok(mut arp) = ArpPacket::new_checked(l3_bytes) else { return false };
    if arp.operation() != ArpOperation::Request {
        return false;
    }
    let sender_ip = arp.source_protocol_addr();
    let target_ip = arp.target_protocol_addr();
    if sender_ip == target_ip {
        return false;
    }
    let from_host = gateway.host_port == Some(in_port);
    let answer_mac = if target_ip == gateway.ip {
        gateway.mac
    } else if let Some(n) = neigh.lookup(target_ip) {
        if n.port == in_port {
            return false;
        }
        n.mac
    } else if from_host
        && (overlay.is_some_and(|o| o.peers.route(target_ip).is_some())
            || gateway.service_cidr.is_some_and(|c| c.contains(target_ip)))
    {
        gateway.mac
    } else {
        return false;
    };
    let requester: MacAddr = arp.source_hardware_addr();
    arp.set_operation(ArpOperation::Reply);
    arp.set_target_hardware_addr(requester);
    arp.set_target_protocol_addr(sender_ip);
    arp.set_source_hardware_addr(answer_mac);
    arp.set_source_protocol_addr(target_ip);
    eth.set_dst_addr(requester);
    eth.set_src_addr(answer_mac);
    true
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::pipeline::classify;
    use crate::pipeline::testutil::*;
    use crate::port::PortId;
    use crate::tables::neigh::Neighbor;
    use crate::wire::EthernetFrame;

    fn gw() -> Gateway {
        Gateway {
            ip: GW_IP,
            mac: GW_MAC,
            pod_cidr: "10.244.1.0/24".parse().unwrap(),
            host_port: None,
            overlay_port: None,
            service_cidr: None,
            node_port: None,
        }
    }

    fn neigh() -> NeighTable {
        let mut n = NeighTable::new(8);
        n.insert(IP_B, Neighbor { mac: MAC_B, port: PortId(2) }).unwrap();
        n
    }

    fn run_one(port: u16, frame: &[u8]) -> (Action, Vec<u8>, PortCounters) {
        let mut b = Batch::new();
        b.push_frame(PortId(port), frame);
        let mut c = vec![PortCounters::default(); 4];
        classify::run(&mut b, &mut c, Some(0));
        run(&mut b, &gw(), &neigh(), None, &mut c);
        (b.packets()[0].meta.action, b.packets()[0].data().to_vec(), c[usize::from(port)])
    }

    fn check_reply(reply: &[u8], to: MacAddr, to_ip: Ipv4Addr, from: MacAddr, from_ip: Ipv4Addr) {
        let eth = EthernetFrame::new_checked(reply).unwrap();
        assert_eq!(eth.dst_addr(), to);
        assert_eq!(eth.src_addr(), from);
        let arp = ArpPacket::new_checked(eth.payload()).unwrap();
        assert_eq!(arp.operation(), ArpOperation::Reply);
        assert_eq!(arp.source_hardware_addr(), from);
        assert_eq!(arp.source_protocol_addr(), from_ip);
        assert_eq!(arp.target_hardware_addr(), to);
        assert_eq!(arp.target_protocol_addr(), to_ip);
    }

    #[test]
    fn answers_for_the_gateway() {
        let (action, reply, c) = run_one(1, &arp_request(MAC_A, IP_A, GW_IP));
        assert_eq!(action, Action::Reply);
        assert_eq!(c.arp_replies, 1);
        check_reply(&reply, MAC_A, IP_A, GW_MAC, GW_IP);
        // The reply is also a valid frame to etherparse.
        let parsed = etherparse::SlicedPacket::from_ethernet(&reply).unwrap();
        assert!(matches!(parsed.net, Some(etherparse::NetSlice::Arp(_))));
    }

    #[test]
    fn answers_for_a_known_pod_from_another_port() {
        let (action, reply, _) = run_one(1, &arp_request(MAC_A, IP_A, IP_B));
        assert_eq!(action, Action::Reply);
        check_reply(&reply, MAC_A, IP_A, MAC_B, IP_B);
    }

    #[test]
    fn leaves_the_rest_alone() {
        // Unknown target.
        assert_eq!(run_one(1, &arp_request(MAC_A, IP_A, IP_C)).0, Action::Continue);
        // The owner probing its own address.
        assert_eq!(
            run_one(2, &arp_request(MAC_B, Ipv4Addr::UNSPECIFIED, IP_B)).0,
            Action::Continue
        );
        // Gratuitous.
        assert_eq!(run_one(1, &arp_request(MAC_A, IP_B, IP_B)).0, Action::Continue);
        // A reply.
        let mut reply = arp_request(MAC_A, IP_A, GW_IP);
        reply[21] = 2;
        assert_eq!(run_one(1, &reply).0, Action::Continue);
        // Tagged.
        let mut tagged = arp_request(MAC_A, IP_A, GW_IP);
        tagged.splice(12..12, [0x81, 0x00, 0x00, 0x05]);
        assert_eq!(run_one(1, &tagged).0, Action::Continue);
    }

    #[test]
    fn probe_from_another_port_hears_the_conflict() {
        let (action, reply, _) = run_one(1, &arp_request(MAC_A, Ipv4Addr::UNSPECIFIED, IP_B));
        assert_eq!(action, Action::Reply);
        check_reply(&reply, MAC_A, Ipv4Addr::UNSPECIFIED, MAC_B, IP_B);
    }

    #[test]
    fn truncations_and_lying_offsets_are_left_alone() {
        let request = arp_request(MAC_A, IP_A, GW_IP);
        for cut in 0..=request.len() {
            for l3 in [0, 1, 13, 14, 15, 18, 32, cut, cut + 1, usize::from(u16::MAX)] {
                let mut p = Packet::new();
                assert!(p.fill_from(&request[..cut]));
                p.meta.in_port = PortId(1);
                p.meta.ethertype = u16::from(EtherType::Arp);
                p.meta.l3_offset = l3 as u16;
                let answered = answer(&mut p, &gw(), &neigh(), None);
                let fits = l3 >= 14 && cut >= l3 + crate::wire::arp::PACKET_LEN;
                assert_eq!(answered, fits && l3 == 14, "cut {cut}, l3 {l3}");
                if !answered {
                    assert_eq!(p.data(), &request[..cut]);
                }
            }
        }
    }
}
