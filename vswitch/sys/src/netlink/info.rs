//! What the kernel reports of a link, an address and a route, as the parsers build them and
//! the operations hand them out. At the bottom of the module: both sides use them.

use std::net::Ipv4Addr;

/// One link as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    /// The interface index (`ifindex`), unique within its namespace.
    pub index: u32,
    /// The interface name.
    pub name: String,
    /// The Ethernet address, for links that have a 6-byte one (`IFLA_ADDRESS`).
    pub mac: Option<[u8; 6]>,
    /// The MTU (`IFLA_MTU`).
    pub mtu: u32,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    /// Up with carrier (`IFF_LOWER_UP`): a veth whose peer is up, a TAP with an open fd.
    pub running: bool,
    /// The index of the bridge (or other master) this link is enslaved to (`IFLA_MASTER`).
    pub master: Option<u32>,
    /// The link type (`IFLA_INFO_KIND`): `"veth"`, `"bridge"`, `"tun"`; `None` for links
    /// without one, such as `lo` or physical NICs.
    pub kind: Option<String>,
    /// The id of the XDP program attached to the link, in any mode (`IFLA_XDP_PROG_ID`
    /// inside `IFLA_XDP`); `None` when there is none.
    pub xdp_prog_id: Option<u32>,
    /// Packets the device dropped on transmit (`tx_dropped` of `IFLA_STATS64`): for a TAP,
    /// frames its namespace sent that found the queue to the reader full.
    pub tx_dropped: u64,
}

/// One IPv4 address as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddrInfo {
    /// The index of the interface carrying it.
    pub index: u32,
    /// The local address (`IFA_LOCAL`).
    pub addr: Ipv4Addr,
    /// The prefix length of its subnet.
    pub prefix_len: u8,
}

/// One IPv4 unicast route of the main table as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteInfo {
    /// The destination network (`0.0.0.0` for the default route).
    pub dst: Ipv4Addr,
    /// The destination prefix length.
    pub prefix_len: u8,
    /// The next hop (`RTA_GATEWAY`), `None` for a directly connected destination.
    pub gateway: Option<Ipv4Addr>,
    /// The output interface index (`RTA_OIF`); `None` for multipath routes.
    pub oif: Option<u32>,
    /// The routing table (always `RT_TABLE_MAIN`, 254, in [`Netlink::route_list`]).
    pub table: u32,
    /// The scope (`RT_SCOPE_*`): 0 universe, 253 link, 254 host.
    pub scope: u8,
    /// Who installed it (`RTPROT_*`): 2 kernel, 3 boot, 4 static.
    pub protocol: u8,
}
