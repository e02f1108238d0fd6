//! Counters: what each port received, sent and dropped, and why.
//!
//! A worker owns the counters of the ports it polls and bumps them with plain adds: no
//! atomics, no sharing on the packet path. The control plane reads them by asking the worker
//! for a [`PortCounters`] copy between bursts (see `worker.rs`), so a read never races a write.
//!
//! Which counters add up: for a port, every received frame is either dropped on ingress
//! (`drops[r]` for an ingress reason), or handed to output (forwarded, flooded, or answered).
//! `tx_packets` counts frames written to the port; frames that could not be written count
//! under the egress reasons [`DropReason::TxQueueFull`] and [`DropReason::TxError`] of *that*
//! port. A flooded frame therefore counts once in the ingress port's `flooded` and once per
//! egress port in `tx_packets` (or a tx drop).
//!
//! A TAP port merges TCP segments into super-frames on transmit (software GRO): `tx_packets`
//! and `tx_bytes` count what was written to the device, a super-frame once, and
//! `tx_gro_frames` of those frames carried `tx_gro_merged` of the switch's frames between
//! them. So the frames a port was handed add up as `tx_packets - tx_gro_frames +
//! tx_gro_merged` plus its tx drops (which count the switch's frames lost).
//!
//! The overlay port sends a super-frame's VXLAN datagrams with UDP GSO: `tx_packets` counts
//! the datagrams, `tx_gso_sends` the `UDP_SEGMENT` sends that carried them.

pub use podswitch_api::counters::PortStatsReport;

macro_rules! drop_reasons {
    ($($(#[doc = $doc:literal])* $name:ident => $label:literal,)*) => {
        /// Why a frame was dropped. Ingress reasons are counted against the port the frame
        /// arrived on, egress (tx) reasons against the port it could not be written to.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(usize)]
        pub enum DropReason {
            $($(#[doc = $doc])* $name,)*
        }

        impl DropReason {
            /// Every reason, in counter-index order.
            pub const ALL: &'static [DropReason] = &[$(DropReason::$name,)*];
            /// Number of reasons (length of a counter array).
            pub const COUNT: usize = Self::ALL.len();

            /// The stable snake_case name used in the API and in Prometheus labels.
            pub fn label(self) -> &'static str {
                match self {
                    $(DropReason::$name => $label,)*
                }
            }

            /// Looks a reason up by its label.
            pub fn from_label(label: &str) -> Option<Self> {
                match label {
                    $($label => Some(DropReason::$name),)*
                    _ => None,
                }
            }
        }
    };
}

drop_reasons! {
    /// Shorter than an Ethernet header (14 bytes).
    Runt => "runt",
    /// An 802.1Q tag announced but cut short.
    VlanTruncated => "vlan_truncated",
    /// Source MAC is multicast or broadcast: no station can own it, so it is never learned
    /// and the frame is not forwarded.
    SrcMacMulticast => "src_mac_multicast",
    /// Source MAC is the gateway's, from a port other than the host port (spoofing).
    SrcMacGateway => "src_mac_gateway",
    /// ARP for IPv4 over Ethernet shorter than 28 bytes, or with inconsistent lengths.
    ArpMalformed => "arp_malformed",
    /// IPv4 header shorter than 20 bytes, wrong version, IHL below 5, or a header longer than
    /// the frame.
    Ipv4BadHeader => "ipv4_bad_header",
    /// IPv4 total length smaller than the header or larger than the frame.
    Ipv4BadLength => "ipv4_bad_length",
    /// IPv6 header shorter than 40 bytes, wrong version, or payload length past the frame.
    Ipv6BadHeader => "ipv6_bad_header",
    /// TCP, UDP or ICMP header cut short inside an otherwise valid IPv4 packet.
    L4Truncated => "l4_truncated",
    /// The destination MAC was learned on the port the frame came in on.
    DstOnIngressPort => "dst_on_ingress_port",
    /// Addressed to the gateway MAC, not for the switch itself, and no host port to pass it to.
    NoRoute => "no_route",
    /// Routed through the gateway with TTL 1 or 0.
    TtlExpired => "ttl_expired",
    /// Addressed to the gateway IP with a protocol the switch does not answer and no host
    /// port to hand it to.
    GatewayUnhandled => "gateway_unhandled",
    /// VXLAN shorter than its header plus an inner Ethernet header.
    VxlanMalformed => "vxlan_malformed",
    /// VXLAN without the I flag (no valid VNI).
    VxlanBadFlags => "vxlan_bad_flags",
    /// VXLAN for a VNI other than this node's.
    VxlanUnknownVni => "vxlan_unknown_vni",
    /// VXLAN from an underlay address that is not a configured peer.
    VxlanUnknownPeer => "vxlan_unknown_peer",
    /// A decapsulated frame that is not untagged IPv4 (the overlay is routed, not bridged).
    VxlanInnerNotIpv4 => "vxlan_inner_not_ipv4",
    /// A decapsulated packet for an address that is not on this node (the overlay never
    /// relays between peers).
    OverlayNotLocal => "overlay_not_local",
    /// Bound for a peer, larger than the overlay MTU and without DF: dropped, not fragmented
    /// (with DF set the sender gets ICMP "fragmentation needed" instead).
    OverlayTooBig => "overlay_too_big",
    /// A first TCP segment to a Service address that cannot open a connection (RST, FIN or
    /// SYN-ACK with no tracked connection: what conntrack calls INVALID).
    NatNoFlow => "nat_no_flow",
    /// A new connection to a Service while the connection-tracking table was full; nothing
    /// established is evicted to make room.
    ConntrackFull => "conntrack_full",
    /// A new connection to a Service from a pod port that already holds its share of the
    /// connection-tracking table (`conntrack.max_per_port`); other pods still open theirs.
    ConntrackPortLimit => "conntrack_port_limit",
    /// A packet from the node-port interface that is no NodePort Service's (the Service was
    /// removed while the interface's filter still passed its port) or whose client's MAC is
    /// not known on the way back.
    NodePortUnknown => "node_port_unknown",
    /// A later IPv4 fragment (no ports) to a Service address whose first fragment was not
    /// translated here first (out of order, or the fragment table was full): it cannot be
    /// translated. See `tables::frags`.
    FragUntracked => "frag_untracked",
    /// Port security (`pipeline/port_security.rs`): source MAC other than the pod port's own.
    SrcMacSpoofed => "src_mac_spoofed",
    /// Port security: IPv4 source neither the pod's address nor in its allow-list (0.0.0.0
    /// included), or IPv6 source other than its MAC-derived link-local address or `::`.
    SrcIpSpoofed => "src_ip_spoofed",
    /// Port security: ARP whose sender MAC is not the pod's, or whose sender IP is neither
    /// its address nor in its allow-list (0.0.0.0 only in a request: a probe).
    ArpSpoofed => "arp_spoofed",
    /// Port security: an ARP reply or gratuitous ARP from a pod, sound but consumed (not a
    /// refusal): the switch answers ARP itself from the neighbour table, so it is never
    /// flooded or passed on.
    ArpAbsorbed => "arp_absorbed",
    /// Port security: an ICMPv6 router advertisement (type 134) from a pod.
    RouterAdvert => "router_advert",
    /// Port security: an ICMP redirect (IPv4 type 5, ICMPv6 type 137) from a pod.
    IcmpRedirect => "icmp_redirect",
    /// Port security: a DHCPv4 server message (UDP source port 67) or DHCPv6 server or relay
    /// message (UDP source port 547) from a pod.
    DhcpServer => "dhcp_server",
    /// Port security: an EtherType other than IPv4, ARP and IPv6 (after at most one 802.1Q
    /// tag) from a pod.
    PodEthertype => "pod_ethertype",
    /// Port security: IPv6 from a pod whose upper-layer header is not found within four
    /// extension headers of the first fragment (how RA guard is evaded, RFC 7113).
    Ipv6HiddenL4 => "ipv6_hidden_l4",
    /// VXLAN whose inner IPv4 source is neither in the sending peer's pod CIDR nor its node
    /// (underlay) address.
    OverlaySrcSpoofed => "overlay_src_spoofed",
    /// The output port's queue was full (EAGAIN/ENOBUFS); egress reason.
    TxQueueFull => "tx_queue_full",
    /// The output port's write failed otherwise, or the frame exceeded its MTU; egress reason.
    TxError => "tx_error",
    /// The port's receive failed with an error other than "no more frames".
    RxError => "rx_error",
    /// Bound for another worker (the one tracking the flow's connection, or the one owning
    /// the output port's only queue) while the ring to it was full or no spare buffer was
    /// free.
    HandoffFull => "handoff_full",
    /// The pipeline panicked while handling the burst this frame was in (a bug): the burst
    /// was dropped and the worker went on. See the worker's module doc.
    WorkerPanic => "worker_panic",
}

/// [`PortCounters`] (the worker's copy), its [`PortCounters::add`] and
/// [`PortCounters::to_report`], from the one list of port counters that also gives the API
/// its [`PortStatsReport`] (`podswitch_api::port_counter_list!`): a counter added there is
/// counted, summed, reported and serialized everywhere.
macro_rules! port_counters {
    ($($(#[doc = $doc:literal])* $(#[serde($serde:meta)])? $name:ident,)*) => {
        /// Counters of one port. See the module doc for which ones add up.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub struct PortCounters {
            $($(#[doc = $doc])* pub $name: u64,)*
            /// Drops by reason, indexed by `DropReason as usize`.
            pub drops: [u64; DropReason::COUNT],
        }

        // By hand: `Default` is derived for arrays of at most 32 elements, and there are
        // more reasons.
        impl Default for PortCounters {
            fn default() -> Self {
                PortCounters { $($name: 0,)* drops: [0; DropReason::COUNT] }
            }
        }

        impl PortCounters {
            /// Adds another set of counters (used to sum per-worker copies).
            pub fn add(&mut self, other: &PortCounters) {
                $(self.$name += other.$name;)*
                for (d, o) in self.drops.iter_mut().zip(other.drops.iter()) {
                    *d += o;
                }
            }

            /// The counters as the API reports them: drops as a map of label to count, with
            /// zero counts left out.
            pub fn to_report(&self, name: &str) -> PortStatsReport {
                PortStatsReport {
                    name: name.to_string(),
                    $($name: self.$name,)*
                    drops: DropReason::ALL
                        .iter()
                        .filter(|r| self.drops[**r as usize] > 0)
                        .map(|r| (r.label().to_string(), self.drops[*r as usize]))
                        .collect(),
                    device_drops: Default::default(),
                }
            }
        }
    };
}

podswitch_api::port_counter_list!(port_counters);

impl PortCounters {
    /// Counts one drop.
    #[inline]
    pub fn drop(&mut self, reason: DropReason) {
        self.drops[reason as usize] += 1;
    }

    /// Total drops over all reasons.
    pub fn total_drops(&self) -> u64 {
        self.drops.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for r in DropReason::ALL {
            assert!(seen.insert(r.label()), "duplicate label {}", r.label());
            assert_eq!(DropReason::from_label(r.label()), Some(*r));
        }
        assert_eq!(DropReason::from_label("nope"), None);
        assert_eq!(DropReason::ALL[DropReason::TxError as usize], DropReason::TxError);
    }

    #[test]
    fn counters_add_and_report_nonzero_drops() {
        let mut a = PortCounters { rx_packets: 3, ..Default::default() };
        a.drop(DropReason::Runt);
        let mut b = PortCounters::default();
        b.add(&a);
        b.add(&a);
        assert_eq!(b.rx_packets, 6);
        assert_eq!(b.total_drops(), 2);
        let r = b.to_report("p0");
        assert_eq!(r.drops.len(), 1);
        assert_eq!(r.drops["runt"], 2);
    }
}
