//! Zero-copy packet views: typed, bounds-checked access to the headers of frames that sit in
//! packet buffers, one file per protocol. No state, no I/O, no `unsafe`.
//!
//! Each protocol has a view, `Frame<T>`/`Packet<T>`/`Header<T>` over any `T: AsRef<[u8]>`,
//! with getters, and setters when `T: AsMut<[u8]>` too; `payload()` borrows from the same
//! buffer, so views nest without copies (`Ipv4Packet::new_checked(eth.payload())`).
//!
//! The one guarantee a reader must know: **after `new_checked` (or `check_len`) succeeds,
//! no getter, setter or `payload()` of that view panics, whatever the bytes are.** The
//! checks are what the header's own length fields promise (IPv4 IHL and total length, TCP
//! data offset, UDP length, IPv6 payload length), so a lying length field is an error, not a
//! slice out of bounds. `new_unchecked` skips the checks; its accessors may panic on a short
//! buffer and it is meant for buffers the caller has already checked (or is building).
//! Property tests in every file feed arbitrary bytes and truncations to `new_checked` and
//! every accessor.
//!
//! Where a header has a meaning beyond its bytes, a `Repr` type parses it (validating what
//! the view does not: checksums, supported combinations) and emits it.

use std::fmt;

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod icmp;
pub mod ipv4;
pub mod ipv6;
pub mod ports;
pub mod tcp;
pub mod udp;
pub mod vxlan;

pub use arp::{Operation as ArpOperation, Packet as ArpPacket, Repr as ArpRepr};
pub use ethernet::{parse_l2, EtherType, Frame as EthernetFrame, L2Header, Repr as EthernetRepr};
pub use icmp::{Message as IcmpMessage, Packet as IcmpPacket};
pub use ipv4::{IpProtocol, Packet as Ipv4Packet, Quoted as QuotedIpv4, Repr as Ipv4Repr};
pub use ipv6::{ExtHeader as Ipv6ExtHeader, Packet as Ipv6Packet};
pub use ports::Ports;
pub use tcp::{Packet as TcpPacket, TcpFlags};
pub use udp::Packet as UdpPacket;
pub use vxlan::{Header as VxlanHeader, Repr as VxlanRepr, Vni};

/// Which header a parse error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    /// Ethernet II.
    Ethernet,
    /// An 802.1Q/802.1ad tag.
    Vlan,
    /// ARP.
    Arp,
    /// IPv4.
    Ipv4,
    /// IPv6.
    Ipv6,
    /// ICMP for IPv4.
    Icmp,
    /// UDP.
    Udp,
    /// TCP.
    Tcp,
    /// VXLAN.
    Vxlan,
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Layer::Ethernet => "ethernet",
            Layer::Vlan => "802.1q",
            Layer::Arp => "arp",
            Layer::Ipv4 => "ipv4",
            Layer::Ipv6 => "ipv6",
            Layer::Icmp => "icmp",
            Layer::Udp => "udp",
            Layer::Tcp => "tcp",
            Layer::Vxlan => "vxlan",
        })
    }
}

/// Why a header did not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The buffer is shorter than the header (or than its length fields promise).
    #[error("{layer}: need {needed} bytes, have {got}")]
    Truncated {
        /// The header.
        layer: Layer,
        /// Bytes needed.
        needed: usize,
        /// Bytes present.
        got: usize,
    },
    /// A field holds a value the header cannot have.
    #[error("{layer}: invalid {field} ({value})")]
    Invalid {
        /// The header.
        layer: Layer,
        /// The field's name.
        field: &'static str,
        /// Its value.
        value: u32,
    },
}

/// Result of a parse.
pub type Result<T> = core::result::Result<T, Error>;

#[inline]
pub(crate) fn need(layer: Layer, buf: &[u8], needed: usize) -> Result<()> {
    if buf.len() < needed {
        Err(Error::Truncated { layer, needed, got: buf.len() })
    } else {
        Ok(())
    }
}

#[inline]
pub(crate) fn get_u16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

#[inline]
pub(crate) fn get_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[inline]
pub(crate) fn set_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

#[inline]
pub(crate) fn set_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

/// Declares a protocol-number enum whose unknown values are kept, not rejected.
macro_rules! enum_with_unknown {
    (
        $(#[$attr:meta])*
        pub enum $name:ident($ty:ty) {
            $( $(#[$vattr:meta])* $variant:ident = $value:expr ),+ $(,)?
        }
    ) => {
        $(#[$attr])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vattr])* $variant, )+
            /// A value without a name here.
            Unknown($ty),
        }

        impl From<$ty> for $name {
            #[inline]
            fn from(v: $ty) -> Self {
                match v {
                    $( $value => $name::$variant, )+
                    other => $name::Unknown(other),
                }
            }
        }

        impl From<$name> for $ty {
            #[inline]
            fn from(v: $name) -> Self {
                match v {
                    $( $name::$variant => $value, )+
                    $name::Unknown(other) => other,
                }
            }
        }
    };
}
pub(crate) use enum_with_unknown;

pub use podswitch_api::mac::{MacAddr, MacAddrParseError};

#[cfg(test)]
mod tests {
    enum_with_unknown! {
        /// Test enum.
        pub enum Sample(u8) {
            /// One.
            One = 1,
        }
    }

    #[test]
    fn unknown_values_are_kept() {
        assert_eq!(Sample::from(1), Sample::One);
        assert_eq!(Sample::from(9), Sample::Unknown(9));
        assert_eq!(u8::from(Sample::Unknown(9)), 9);
        assert_eq!(u8::from(Sample::One), 1);
    }
}
