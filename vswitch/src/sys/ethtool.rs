//! The one ethtool setting the topologies need, through `SIOCETHTOOL` (no `ethtool` binary
//! on the machine required).
//!
//! Why it is needed: between namespaces on one machine, veth devices hand each other packets
//! whose checksums are still *partial* (to be completed by a NIC that never comes). The
//! kernel's own receive path accepts that; a userspace reader does not see the metadata and
//! gets a wrong checksum. Devices whose packets end up in userspace (through AF_XDP or
//! AF_PACKET, or inside a VXLAN datagram delivered to a socket) must complete checksums on
//! transmit instead.

use std::io;
use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::AsRawFd;

use super::netns::NetNs;

/// `struct ethtool_value` from `<linux/ethtool.h>`.
#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

/// `struct ifreq` with the `ifr_data` member of its union (padded to the union's size).
#[repr(C)]
struct IfreqData {
    name: [u8; libc::IFNAMSIZ],
    data: *mut EthtoolValue,
    _pad: [u8; 16],
}

/// `ETHTOOL_STXCSUM` from `<linux/ethtool.h>`.
const ETHTOOL_STXCSUM: u32 = 0x17;

/// Turns TX checksum offload off on interface `ifname` in `ns` (`ethtool -K IF tx off`):
/// every packet leaves it with complete checksums, the inner ones of a tunnel included.
pub fn disable_tx_checksum(ns: &NetNs, ifname: &str) -> io::Result<()> {
    let bytes = ifname.as_bytes();
    if bytes.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "interface name too long"));
    }
    let sock = ns.run(|| UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)))??;
    let mut value = EthtoolValue { cmd: ETHTOOL_STXCSUM, data: 0 };
    let mut req = IfreqData { name: [0; libc::IFNAMSIZ], data: &mut value, _pad: [0; 16] };
    req.name[..bytes.len()].copy_from_slice(bytes);
    // SAFETY: `req` is a valid ifreq whose data pointer refers to `value`; both outlive the
    // call, and the kernel reads/writes only within them for ETHTOOL_STXCSUM.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCETHTOOL, &mut req) };
    if rc != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("ethtool tx off on {ifname}: {e}")));
    }
    Ok(())
}
