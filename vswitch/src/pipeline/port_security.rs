//! Port security: a pod port accepts only what its pod may send, the way OVN's
//! `port_security` and Cilium's endpoint source checks do. It owns the per-port policies and
//! the stage that enforces them, right after classify and before anything learns or answers
//! (a spoofed frame never reaches the MAC table, the ARP responder or the gateway).
//!
//! A pod's container has `CAP_NET_RAW` by default and can write any frame; without this a
//! pod could take another pod's MAC (the MAC table's station move), poison neighbour caches
//! with ARP, advertise itself as the router of every IPv6 host on the node, or send with any
//! source address. From a port with a [`PortPolicy`], in order:
//!
//! | check | refused as |
//! |---|---|
//! | Ethernet source = the port's MAC | `src_mac_spoofed` |
//! | EtherType IPv4, ARP or IPv6 (after at most one 802.1Q tag) | `pod_ethertype` |
//! | IPv4 source = the port's address, or in its allow-list | `src_ip_spoofed` |
//! | no ICMP redirect (type 5) | `icmp_redirect` |
//! | no UDP from port 67 (a DHCPv4 server) | `dhcp_server` |
//! | ARP sender MAC = the port's MAC; sender IP = its address or in its allow-list, or 0.0.0.0 in a request (a probe) | `arp_spoofed` |
//! | ARP replies and gratuitous ARP: consumed | `arp_absorbed` |
//! | IPv6 source = the link-local address derived from the port's MAC (EUI-64), or `::` | `src_ip_spoofed` |
//! | upper layer found within four extension headers of a first fragment | `ipv6_hidden_l4` |
//! | no ICMPv6 router advertisement (134) or redirect (137) | `router_advert`, `icmp_redirect` |
//! | no UDP from port 547 (a DHCPv6 server or relay) | `dhcp_server` |
//!
//! Decisions:
//! - **0.0.0.0** is refused as an IPv4 source. The switch sets each pod's address itself at
//!   attach and runs no DHCP server, so a DHCP client's `0.0.0.0:68 → 255.255.255.255:67`
//!   has nobody to answer it; refusing it keeps "source is yours" without exceptions.
//! - **ARP replies and gratuitous ARP** from a pod are consumed, never flooded or passed on:
//!   the switch answers every request for the gateway and for known pods itself (the ARP
//!   responder, from the neighbour table the control plane fills at attach), so another
//!   pod's reply is never needed, and a broadcast announcement would only rewrite other
//!   pods' caches. They carry nothing new to the switch either: the pod's MAC is kept on its
//!   port by the worker and its address is the control plane's. The cost: an allow-listed
//!   address inside the pod CIDR is not resolved by other pods' ARP (route it instead).
//! - **IPv6**: the switch has no IPv6 addressing (pods get IPv4 only) and switches IPv6 at
//!   L2, so a pod's only legitimate IPv6 source is its link-local address from its MAC (the
//!   kernel's default `addr_gen_mode` in a fresh namespace) or `::` (duplicate address
//!   detection, MLD before an address). The allow-list is IPv4 only. Neighbour
//!   advertisements are not inspected: no pod has an IPv6 address another pod could need.
//! - Non-first fragments carry no L4 header: they pass after the source check (a refused
//!   first fragment makes them unreassemblable).
//!
//! Ports without a policy (the host port, the overlay, the NodePort interface, a pod port
//! added with port security off) are not checked. The stage costs one array index for them,
//! and for a pod port reads only headers classify has bounded, through the `wire/` views.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::cidr::Ipv4Cidr;
use crate::packet::{Action, Batch, Frag, Packet, PortId};
use crate::stats::{DropReason, PortCounters};
use crate::wire::ipv6::next_header as nh;
use crate::wire::{
    ArpOperation, ArpPacket, EtherType, EthernetFrame, IcmpPacket, IpProtocol, Ipv6ExtHeader,
    Ipv6Packet, MacAddr, UdpPacket,
};

use super::drop_packet;

/// Most CIDRs in one port's allow-list.
pub const MAX_ALLOW_IPS: usize = 16;

/// Extension headers walked in an IPv6 packet before giving up on finding its upper layer.
pub const MAX_IPV6_EXT_HEADERS: usize = 4;

const ICMP_REDIRECT: u8 = 5;
const ICMPV6_ROUTER_ADVERT: u8 = 134;
const ICMPV6_REDIRECT: u8 = 137;
const DHCPV4_SERVER_PORT: u16 = 67;
const DHCPV6_SERVER_PORT: u16 = 547;

/// What one pod port may send as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortPolicy {
    mac: MacAddr,
    ip: Ipv4Addr,
    link_local: Ipv6Addr,
    /// `(network, mask)` of each allow-list entry, `allow_len` of them.
    allow: [(u32, u32); MAX_ALLOW_IPS],
    allow_len: u8,
}

/// Why a policy cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// More than [`MAX_ALLOW_IPS`] allow-list entries.
    #[error("{0} entries; at most {MAX_ALLOW_IPS}")]
    TooManyAllowed(usize),
}

impl PortPolicy {
    /// The policy of a pod with `mac` and `ip` that may also send from `allow`.
    pub fn new(mac: MacAddr, ip: Ipv4Addr, allow: &[Ipv4Cidr]) -> Result<PortPolicy, PolicyError> {
        if allow.len() > MAX_ALLOW_IPS {
            return Err(PolicyError::TooManyAllowed(allow.len()));
        }
        let mut p = PortPolicy {
            mac,
            ip,
            link_local: link_local(mac),
            allow: [(0, u32::MAX); MAX_ALLOW_IPS],
            allow_len: allow.len() as u8,
        };
        for (slot, c) in p.allow.iter_mut().zip(allow) {
            *slot = (u32::from(c.network()), c.mask());
        }
        Ok(p)
    }

    /// The pod's MAC.
    pub fn mac(&self) -> MacAddr {
        self.mac
    }

    /// True when the pod may send from `addr` (its own address or an allow-listed one).
    #[inline]
    pub fn allows_ipv4(&self, addr: Ipv4Addr) -> bool {
        if addr == self.ip {
            return true;
        }
        let a = u32::from(addr);
        self.allow[..usize::from(self.allow_len)].iter().any(|&(net, mask)| a & mask == net)
    }
}

/// The link-local address a kernel derives from `mac` (modified EUI-64, RFC 4291 §2.5.1).
pub fn link_local(mac: MacAddr) -> Ipv6Addr {
    let m = mac.0;
    Ipv6Addr::from([
        0xfe,
        0x80,
        0,
        0,
        0,
        0,
        0,
        0,
        m[0] ^ 0x02,
        m[1],
        m[2],
        0xff,
        0xfe,
        m[3],
        m[4],
        m[5],
    ])
}

/// The policies, indexed by port id. Sized once for `max_ports`; setting a policy for an id
/// beyond that is refused, and a port without one is not checked.
#[derive(Debug, Clone)]
pub struct PortSecurity {
    policies: Vec<Option<PortPolicy>>,
}

impl PortSecurity {
    /// Room for ports `0..max_ports`, none checked.
    pub fn new(max_ports: usize) -> PortSecurity {
        PortSecurity { policies: vec![None; max_ports] }
    }

    /// Sets (or with `None` clears) the policy of `port`; false when the id is beyond
    /// `max_ports`.
    pub fn set(&mut self, port: PortId, policy: Option<PortPolicy>) -> bool {
        match self.policies.get_mut(port.index()) {
            Some(slot) => {
                *slot = policy;
                true
            }
            None => false,
        }
    }

    /// The policy of `port`, if it is checked.
    #[inline]
    pub fn get(&self, port: PortId) -> Option<&PortPolicy> {
        self.policies.get(port.index()).and_then(Option::as_ref)
    }
}

/// Checks every undecided packet from a port with a policy; refusals are dropped and
/// counted on the port by reason.
pub fn run(batch: &mut Batch, table: &PortSecurity, counters: &mut [PortCounters]) {
    for pkt in batch.packets_mut() {
        if pkt.meta.action != Action::Continue {
            continue;
        }
        let in_port = pkt.meta.in_port;
        let Some(policy) = table.get(in_port) else { continue };
        if let Err(reason) = check(pkt, policy) {
            drop_packet(&mut pkt.meta.action, in_port, reason, counters);
        }
    }
}

/// One frame against its port's policy.
#[inline]
fn check(pkt: &Packet, policy: &PortPolicy) -> Result<(), DropReason> {
    let data = pkt.data();
    let eth = EthernetFrame::new_checked(data).map_err(|_| DropReason::Runt)?;
    if eth.src_addr() != policy.mac {
        return Err(DropReason::SrcMacSpoofed);
    }
    let l3 = data.get(usize::from(pkt.meta.l3_offset)..).unwrap_or(&[]);
    match EtherType::from(pkt.meta.ethertype) {
        EtherType::Ipv4 => check_ipv4(pkt, policy),
        EtherType::Arp => check_arp(l3, policy),
        EtherType::Ipv6 => check_ipv6(l3, policy),
        _ => Err(DropReason::PodEthertype),
    }
}

/// IPv4, from what classify put in `Meta` (the source, the fragment bits, the UDP source
/// port); only an ICMP message's type byte is read from the frame.
#[inline]
fn check_ipv4(pkt: &Packet, policy: &PortPolicy) -> Result<(), DropReason> {
    let m = &pkt.meta;
    if !policy.allows_ipv4(m.flow.src) {
        return Err(DropReason::SrcIpSpoofed);
    }
    if m.frag == Frag::Later {
        return Ok(());
    }
    match IpProtocol::from(m.flow.proto) {
        IpProtocol::Icmp => match pkt.data().get(usize::from(m.l4_offset)) {
            Some(&ICMP_REDIRECT) => Err(DropReason::IcmpRedirect),
            _ => Ok(()),
        },
        IpProtocol::Udp if m.has_ports && m.flow.sport == DHCPV4_SERVER_PORT => {
            Err(DropReason::DhcpServer)
        }
        _ => Ok(()),
    }
}

#[inline]
fn check_arp(l3: &[u8], policy: &PortPolicy) -> Result<(), DropReason> {
    let arp = ArpPacket::new_checked(l3).map_err(|_| DropReason::ArpMalformed)?;
    if arp.source_hardware_addr() != policy.mac {
        return Err(DropReason::ArpSpoofed);
    }
    let sender = arp.source_protocol_addr();
    let request = arp.operation() == ArpOperation::Request;
    let probe = sender == Ipv4Addr::UNSPECIFIED && request;
    if !probe && !policy.allows_ipv4(sender) {
        return Err(DropReason::ArpSpoofed);
    }
    // A reply (to anyone) or an announcement (sender = target, a request or a reply, usually
    // broadcast): nothing any other station needs from a pod.
    if !request || sender == arp.target_protocol_addr() {
        return Err(DropReason::ArpAbsorbed);
    }
    Ok(())
}

#[inline]
fn check_ipv6(l3: &[u8], policy: &PortPolicy) -> Result<(), DropReason> {
    let ip = Ipv6Packet::new_checked(l3).map_err(|_| DropReason::Ipv6BadHeader)?;
    let src = ip.src_addr();
    if src != policy.link_local && src != Ipv6Addr::UNSPECIFIED {
        return Err(DropReason::SrcIpSpoofed);
    }
    let mut next = ip.next_header();
    let mut rest = ip.payload();
    for _ in 0..=MAX_IPV6_EXT_HEADERS {
        match next {
            nh::HOP_BY_HOP | nh::ROUTING | nh::FRAGMENT | nh::DEST_OPTS => {
                let h =
                    Ipv6ExtHeader::new_checked(rest, next).map_err(|_| DropReason::Ipv6HiddenL4)?;
                if h.frag_offset() != 0 {
                    return Ok(());
                }
                next = h.next_header();
                rest = h.payload();
            }
            nh::ICMPV6 => {
                // ICMPv6 shares ICMP's type/code/checksum layout.
                let icmp = IcmpPacket::new_checked(rest).map_err(|_| DropReason::Ipv6HiddenL4)?;
                return match u8::from(icmp.msg_type()) {
                    ICMPV6_ROUTER_ADVERT => Err(DropReason::RouterAdvert),
                    ICMPV6_REDIRECT => Err(DropReason::IcmpRedirect),
                    _ => Ok(()),
                };
            }
            nh::UDP => {
                let udp = UdpPacket::new_checked(rest).map_err(|_| DropReason::Ipv6HiddenL4)?;
                return if udp.src_port() == DHCPV6_SERVER_PORT {
                    Err(DropReason::DhcpServer)
                } else {
                    Ok(())
                };
            }
            _ => return Ok(()),
        }
    }
    Err(DropReason::Ipv6HiddenL4)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::pipeline::classify;
    use crate::pipeline::testutil::*;

    const POD: PortId = PortId(1);
    const OPEN: PortId = PortId(2);

    fn table(allow: &[&str]) -> PortSecurity {
        let allow: Vec<Ipv4Cidr> = allow.iter().map(|c| c.parse().unwrap()).collect();
        let mut t = PortSecurity::new(4);
        assert!(t.set(POD, Some(PortPolicy::new(MAC_A, IP_A, &allow).unwrap())));
        t
    }

    /// Classify, then this stage, on one frame from `port`.
    fn verdict_on(t: &PortSecurity, port: PortId, frame: &[u8]) -> (Action, PortCounters) {
        let mut b = Batch::new();
        b.push_frame(port, frame);
        let mut c = vec![PortCounters::default(); 4];
        classify::run(&mut b, &mut c, Some(0));
        run(&mut b, t, &mut c);
        (b.packets()[0].meta.action, c[port.index()])
    }

    fn verdict(frame: &[u8]) -> Action {
        verdict_on(&table(&[]), POD, frame).0
    }

    fn refused(r: DropReason) -> Action {
        Action::Drop(r)
    }

    fn ipv6_frame(src_mac: MacAddr, src: Ipv6Addr, next: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&[0x33, 0x33, 0, 0, 0, 1]);
        f.extend_from_slice(&src_mac.0);
        f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
        f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        f.extend_from_slice(&[next, 255]);
        f.extend_from_slice(&src.octets());
        f.extend_from_slice(&"ff02::1".parse::<Ipv6Addr>().unwrap().octets());
        f.extend_from_slice(payload);
        f
    }

    /// An ICMPv6 message of `ty` (checksum not filled: the switch does not check it).
    fn icmpv6(ty: u8) -> Vec<u8> {
        let mut m = vec![ty, 0, 0, 0, 64, 0, 0, 0];
        m.extend_from_slice(&[0u8; 8]);
        m
    }

    fn arp(op: u16, mac: MacAddr, sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
        let mut f = arp_request(mac, sender, target);
        f[20..22].copy_from_slice(&op.to_be_bytes());
        f
    }

    #[test]
    fn the_pods_own_traffic_passes() {
        assert_eq!(verdict(&udp_frame(MAC_A, MAC_B, IP_A, IP_B, 1000, 53, b"q")), Action::Continue);
        assert_eq!(
            verdict(&tcp_frame(MAC_A, GW_MAC, IP_A, IP_B, 1, 80, 0x02, b"")),
            Action::Continue
        );
        assert_eq!(verdict(&icmp_echo(MAC_A, GW_MAC, IP_A, GW_IP, 1, 1, b"p")), Action::Continue);
        assert_eq!(verdict(&arp_request(MAC_A, IP_A, GW_IP)), Action::Continue);
        // A duplicate-address probe.
        assert_eq!(verdict(&arp_request(MAC_A, Ipv4Addr::UNSPECIFIED, IP_A)), Action::Continue);
        // Router solicitation and neighbour solicitation from its link-local address and ::.
        assert_eq!(
            verdict(&ipv6_frame(MAC_A, link_local(MAC_A), 58, &icmpv6(133))),
            Action::Continue
        );
        assert_eq!(
            verdict(&ipv6_frame(MAC_A, Ipv6Addr::UNSPECIFIED, 58, &icmpv6(135))),
            Action::Continue
        );
        // MLD behind a hop-by-hop header.
        let mut hbh = vec![58, 0, 5, 2, 0, 0, 1, 0];
        hbh.extend(icmpv6(143));
        assert_eq!(verdict(&ipv6_frame(MAC_A, Ipv6Addr::UNSPECIFIED, 0, &hbh)), Action::Continue);
    }

    #[test]
    fn link_local_follows_the_kernels_eui64() {
        let mac = MacAddr([0x0a, 0x58, 10, 244, 1, 2]);
        assert_eq!(link_local(mac), "fe80::858:aff:fef4:102".parse::<Ipv6Addr>().unwrap());
    }

    #[test]
    fn each_refusal_has_its_reason() {
        let outside = Ipv4Addr::new(8, 8, 8, 8);
        let cases: Vec<(Vec<u8>, DropReason)> = vec![
            (udp_frame(MAC_B, MAC_C, IP_A, IP_C, 1, 2, b"x"), DropReason::SrcMacSpoofed),
            (udp_frame(MAC_A, MAC_C, IP_B, IP_C, 1, 2, b"x"), DropReason::SrcIpSpoofed),
            (udp_frame(MAC_A, GW_MAC, GW_IP, IP_C, 1, 2, b"x"), DropReason::SrcIpSpoofed),
            (udp_frame(MAC_A, GW_MAC, outside, IP_C, 1, 2, b"x"), DropReason::SrcIpSpoofed),
            (
                udp_frame(MAC_A, MAC_C, Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, 68, 67, b"d"),
                DropReason::SrcIpSpoofed,
            ),
            (udp_frame(MAC_A, MAC_C, IP_A, IP_C, 67, 68, b"offer"), DropReason::DhcpServer),
            (arp(1, MAC_A, IP_B, GW_IP), DropReason::ArpSpoofed),
            (arp(2, MAC_A, IP_B, IP_C), DropReason::ArpSpoofed),
            (arp(1, MAC_A, IP_B, IP_B), DropReason::ArpSpoofed),
            (arp(2, MAC_A, Ipv4Addr::UNSPECIFIED, IP_C), DropReason::ArpSpoofed),
            (arp(2, MAC_A, IP_A, IP_C), DropReason::ArpAbsorbed),
            (arp(1, MAC_A, IP_A, IP_A), DropReason::ArpAbsorbed),
            (ipv6_frame(MAC_A, link_local(MAC_A), 58, &icmpv6(134)), DropReason::RouterAdvert),
            (ipv6_frame(MAC_A, link_local(MAC_A), 58, &icmpv6(137)), DropReason::IcmpRedirect),
            (ipv6_frame(MAC_A, link_local(MAC_B), 58, &icmpv6(135)), DropReason::SrcIpSpoofed),
            (
                ipv6_frame(MAC_A, "2001:db8::1".parse().unwrap(), 17, &[0; 8]),
                DropReason::SrcIpSpoofed,
            ),
            (
                ipv6_frame(MAC_A, link_local(MAC_A), 17, &[2, 35, 2, 34, 0, 8, 0, 0]),
                DropReason::DhcpServer,
            ),
        ];
        for (frame, reason) in cases {
            let (action, c) = verdict_on(&table(&[]), POD, &frame);
            assert_eq!(action, refused(reason), "{frame:02x?}");
            assert_eq!(c.drops[reason as usize], 1);
        }
        // ARP whose Ethernet source is right but sender MAC another's.
        let mut f = arp_request(MAC_A, IP_A, GW_IP);
        f[22..28].copy_from_slice(&MAC_B.0);
        assert_eq!(verdict(&f), refused(DropReason::ArpSpoofed));
        // An ICMP redirect.
        let mut r = icmp_echo(MAC_A, GW_MAC, IP_A, IP_B, 1, 1, b"quote");
        r[34] = 5;
        assert_eq!(verdict(&r), refused(DropReason::IcmpRedirect));
        // Another EtherType (LLDP), and a second VLAN tag hiding an IPv4 packet.
        let mut lldp = udp_frame(MAC_A, MAC_B, IP_A, IP_B, 1, 2, b"x");
        lldp[12..14].copy_from_slice(&0x88ccu16.to_be_bytes());
        assert_eq!(verdict(&lldp), refused(DropReason::PodEthertype));
        let mut qinq = udp_frame(MAC_A, MAC_B, IP_B, IP_C, 1, 2, b"x");
        qinq.splice(12..12, [0x81, 0x00, 0x00, 0x05, 0x81, 0x00, 0x00, 0x06]);
        assert_eq!(verdict(&qinq), refused(DropReason::PodEthertype));
    }

    #[test]
    fn an_ra_behind_extension_headers_is_found_or_refused() {
        // Destination options, then the RA.
        let mut d = vec![58, 0, 1, 4, 0, 0, 0, 0];
        d.extend(icmpv6(134));
        assert_eq!(
            verdict(&ipv6_frame(MAC_A, link_local(MAC_A), 60, &d)),
            refused(DropReason::RouterAdvert)
        );
        // A first fragment carrying the RA.
        let mut f = vec![58, 0, 0, 1, 0, 0, 0, 7];
        f.extend(icmpv6(134));
        assert_eq!(
            verdict(&ipv6_frame(MAC_A, link_local(MAC_A), 44, &f)),
            refused(DropReason::RouterAdvert)
        );
        // Five destination-options headers: the upper layer is out of reach.
        let mut chain = Vec::new();
        for i in 0..5 {
            chain.extend_from_slice(&[if i == 4 { 58 } else { 60 }, 0, 1, 4, 0, 0, 0, 0]);
        }
        chain.extend(icmpv6(134));
        assert_eq!(
            verdict(&ipv6_frame(MAC_A, link_local(MAC_A), 60, &chain)),
            refused(DropReason::Ipv6HiddenL4)
        );
        // A hop-by-hop header cut short.
        assert_eq!(
            verdict(&ipv6_frame(MAC_A, link_local(MAC_A), 0, &[58, 2, 0, 0, 0, 0, 0, 0])),
            refused(DropReason::Ipv6HiddenL4)
        );
        // A later fragment: its source was checked, its L4 is elsewhere.
        let later = [58, 0, 0, 0x19, 0, 0, 0, 7, 1, 2, 3, 4];
        assert_eq!(verdict(&ipv6_frame(MAC_A, link_local(MAC_A), 44, &later)), Action::Continue);
    }

    #[test]
    fn the_allow_list_lets_listed_sources_through() {
        let t = table(&["192.0.2.0/24", "10.244.1.100/32"]);
        for ip in [Ipv4Addr::new(192, 0, 2, 9), Ipv4Addr::new(10, 244, 1, 100), IP_A] {
            let (a, _) = verdict_on(&t, POD, &udp_frame(MAC_A, MAC_B, ip, IP_B, 1, 2, b"x"));
            assert_eq!(a, Action::Continue, "{ip}");
            let (a, _) = verdict_on(&t, POD, &arp_request(MAC_A, ip, GW_IP));
            assert_eq!(a, Action::Continue, "arp from {ip}");
        }
        for ip in [Ipv4Addr::new(192, 0, 3, 1), Ipv4Addr::new(10, 244, 1, 101), IP_B] {
            let (a, _) = verdict_on(&t, POD, &udp_frame(MAC_A, MAC_B, ip, IP_B, 1, 2, b"x"));
            assert_eq!(a, refused(DropReason::SrcIpSpoofed), "{ip}");
        }
        let too_many: Vec<Ipv4Cidr> =
            (0..17).map(|i| Ipv4Cidr::new(Ipv4Addr::new(10, i, 0, 0), 16).unwrap()).collect();
        assert_eq!(PortPolicy::new(MAC_A, IP_A, &too_many), Err(PolicyError::TooManyAllowed(17)));
    }

    #[test]
    fn ports_without_a_policy_are_not_checked() {
        let t = table(&[]);
        let (a, _) = verdict_on(&t, OPEN, &udp_frame(MAC_B, MAC_C, IP_C, IP_A, 67, 2, b"x"));
        assert_eq!(a, Action::Continue);
        let mut t = t;
        assert!(t.set(POD, None));
        assert!(!t.set(PortId(4), None));
        let (a, _) = verdict_on(&t, POD, &udp_frame(MAC_B, MAC_C, IP_C, IP_A, 1, 2, b"x"));
        assert_eq!(a, Action::Continue);
    }

    #[test]
    fn a_spoofed_mac_never_reaches_the_mac_table() {
        let config =
            crate::config::Config::for_node("n", "10.244.1.0/24".parse().unwrap(), "/x".into());
        let mut p = crate::pipeline::Pipeline::new(&config);
        p.port_security.set(POD, Some(PortPolicy::new(MAC_A, IP_A, &[]).unwrap()));
        let now = std::time::Instant::now();
        p.fdb.learn(crate::tables::fdb::FdbKey::new(None, MAC_B), PortId(3), now);
        let mut b = Batch::new();
        b.push_frame(POD, &udp_frame(MAC_B, MAC_C, IP_A, IP_C, 1, 2, b"steal"));
        let mut c = vec![PortCounters::default(); 4];
        p.run(&mut b, &mut c, now, crate::pipeline::Entry::Port, &[]);
        assert_eq!(b.packets()[0].meta.action, refused(DropReason::SrcMacSpoofed));
        let key = crate::tables::fdb::FdbKey::new(None, MAC_B);
        assert_eq!(p.fdb.lookup(key, now), Some(PortId(3)));
    }

    proptest! {
        /// Whatever a pod sends, the stage never panics, and what it lets through carries
        /// the pod's MAC.
        #[test]
        fn arbitrary_frames_never_panic(
            data in proptest::collection::vec(any::<u8>(), 0..160),
            own_mac in any::<bool>(),
        ) {
            let mut frame = data;
            if own_mac && frame.len() >= 12 {
                frame[6..12].copy_from_slice(&MAC_A.0);
            }
            let (a, _) = verdict_on(&table(&["10.0.0.0/8"]), POD, &frame);
            if a == Action::Continue {
                prop_assert_eq!(&frame[6..12], &MAC_A.0);
            }
        }
    }
}
