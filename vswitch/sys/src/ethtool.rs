//! The ethtool calls the switch needs, through `SIOCETHTOOL` (no `ethtool` binary on the
//! machine required): turning TX checksum offload off, and reading how many receive queues an
//! interface uses.
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
    data: *mut libc::c_void,
    _pad: [u8; 16],
}

/// `struct ethtool_channels` from `<linux/ethtool.h>`.
#[repr(C)]
#[derive(Default)]
struct EthtoolChannels {
    cmd: u32,
    max_rx: u32,
    max_tx: u32,
    max_other: u32,
    max_combined: u32,
    rx_count: u32,
    tx_count: u32,
    other_count: u32,
    combined_count: u32,
}

/// `ETHTOOL_GCHANNELS` from `<linux/ethtool.h>`.
const ETHTOOL_GCHANNELS: u32 = 0x3c;

/// Runs one `SIOCETHTOOL` request for `ifname` on `sock` with `data` as its argument.
fn ethtool<T>(sock: &UdpSocket, ifname: &str, data: &mut T) -> io::Result<()> {
    let bytes = ifname.as_bytes();
    if bytes.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "interface name too long"));
    }
    let mut req =
        IfreqData { name: [0; libc::IFNAMSIZ], data: (data as *mut T).cast(), _pad: [0; 16] };
    req.name[..bytes.len()].copy_from_slice(bytes);
    // SAFETY: `req` is a valid ifreq whose data pointer refers to `data`, a `#[repr(C)]`
    // struct of the layout the command in its first field expects; both outlive the call,
    // and the kernel reads and writes only within them.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCETHTOOL, &mut req) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// How many receive queues `ifname` (in the calling thread's namespace) uses: its receive
/// plus combined channels (`ethtool -l`); 1 for a device that does not report channels.
pub fn rx_queues(ifname: &str) -> io::Result<u32> {
    let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
    let mut ch = EthtoolChannels { cmd: ETHTOOL_GCHANNELS, ..Default::default() };
    match ethtool(&sock, ifname, &mut ch) {
        Ok(()) => Ok((ch.rx_count + ch.combined_count).max(1)),
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => Ok(1),
        Err(e) => Err(io::Error::new(e.kind(), format!("ethtool -l {ifname}: {e}"))),
    }
}

/// `ETHTOOL_STXCSUM` from `<linux/ethtool.h>`.
const ETHTOOL_STXCSUM: u32 = 0x17;

/// Turns TX checksum offload off on interface `ifname` in `ns` (`ethtool -K IF tx off`):
/// every packet leaves it with complete checksums, the inner ones of a tunnel included.
pub fn disable_tx_checksum(ns: &NetNs, ifname: &str) -> io::Result<()> {
    let sock = ns.run(|| UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)))??;
    let mut value = EthtoolValue { cmd: ETHTOOL_STXCSUM, data: 0 };
    ethtool(&sock, ifname, &mut value)
        .map_err(|e| io::Error::new(e.kind(), format!("ethtool tx off on {ifname}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::Netlink;
    use crate::test_support::needs_root;

    #[test]
    fn rx_queues_counts_the_queues_a_veth_uses() {
        needs_root!();
        let ns = crate::test_support::test_ns("pswet");
        ns.run(|| {
            let mut nl = Netlink::open().unwrap();
            nl.veth_add("one0", "one1", None).unwrap();
            nl.veth_add_queues("two0", "two1", None, 2).unwrap();
            assert_eq!(rx_queues("one0").unwrap(), 1);
            assert_eq!(rx_queues("two0").unwrap(), 2);
            assert_eq!(rx_queues("lo").unwrap(), 1, "lo reports no channels");
            assert!(rx_queues("nosuch0").is_err());
        })
        .unwrap();
    }
}
