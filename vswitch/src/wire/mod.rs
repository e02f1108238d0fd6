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
use std::str::FromStr;

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

/// An Ethernet MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// `ff:ff:ff:ff:ff:ff`.
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
    /// `00:00:00:00:00:00`.
    pub const ZERO: MacAddr = MacAddr([0; 6]);

    /// The address from the first six bytes of `b`; `None` when shorter.
    #[inline]
    pub fn from_slice(b: &[u8]) -> Option<MacAddr> {
        b.get(..6).map(|s| MacAddr([s[0], s[1], s[2], s[3], s[4], s[5]]))
    }

    /// All ones.
    #[inline]
    pub fn is_broadcast(&self) -> bool {
        *self == Self::BROADCAST
    }

    /// Group address (I/G bit set); true for broadcast too.
    #[inline]
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    /// Individual address (I/G bit clear).
    #[inline]
    pub fn is_unicast(&self) -> bool {
        !self.is_multicast()
    }

    /// Locally administered (U/L bit set).
    #[inline]
    pub fn is_local_admin(&self) -> bool {
        self.0[0] & 0x02 != 0
    }

    /// The address as the low 48 bits of a `u64`.
    #[inline]
    pub fn to_u64(&self) -> u64 {
        let b = self.0;
        u64::from_be_bytes([0, 0, b[0], b[1], b[2], b[3], b[4], b[5]])
    }

    /// The address from the low 48 bits of `v`.
    #[inline]
    pub fn from_u64(v: u64) -> MacAddr {
        let b = v.to_be_bytes();
        MacAddr([b[2], b[3], b[4], b[5], b[6], b[7]])
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3], b[4], b[5])
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Why a MAC address did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a MAC address: {reason} (expected six hex bytes like 02:00:5e:10:00:01)")]
pub struct MacAddrParseError {
    input: String,
    reason: &'static str,
}

impl FromStr for MacAddr {
    type Err = MacAddrParseError;

    /// Accepts six two-digit hex bytes separated by `:` or `-` (one kind throughout).
    fn from_str(s: &str) -> core::result::Result<Self, MacAddrParseError> {
        let err = |reason| MacAddrParseError { input: s.to_string(), reason };
        let sep = if s.contains(':') { ':' } else { '-' };
        let parts: Vec<&str> = s.split(sep).collect();
        if parts.len() != 6 {
            return Err(err("it needs six bytes separated by ':' or '-'"));
        }
        let mut out = [0u8; 6];
        for (o, p) in out.iter_mut().zip(&parts) {
            if p.len() != 2 {
                return Err(err("each byte is two hex digits"));
            }
            *o = u8::from_str_radix(p, 16).map_err(|_| err("not hexadecimal"))?;
        }
        Ok(MacAddr(out))
    }
}

impl serde::Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> core::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> core::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_text_round_trip_and_errors() {
        let m: MacAddr = "02:70:73:F4:01:01".parse().unwrap();
        assert_eq!(m, MacAddr([0x02, 0x70, 0x73, 0xf4, 0x01, 0x01]));
        assert_eq!(m.to_string(), "02:70:73:f4:01:01");
        assert_eq!("02-70-73-f4-01-01".parse::<MacAddr>().unwrap(), m);
        for bad in [
            "",
            "02:70:73:f4:01",
            "02:70:73:f4:01:01:00",
            "02:70:73:f4:01:1",
            "02:70:73:f4:01:zz",
            "02:70-73:f4:01:01",
        ] {
            let e = bad.parse::<MacAddr>().unwrap_err();
            assert!(e.to_string().contains("not a MAC address"), "{bad}: {e}");
        }
        assert_eq!(serde_json::to_string(&m).unwrap(), "\"02:70:73:f4:01:01\"");
        assert_eq!(serde_json::from_str::<MacAddr>("\"02:70:73:f4:01:01\"").unwrap(), m);
        assert!(serde_json::from_str::<MacAddr>("\"nope\"").is_err());
    }

    #[test]
    fn mac_classes_and_packing() {
        assert!(MacAddr::BROADCAST.is_broadcast() && MacAddr::BROADCAST.is_multicast());
        assert!(MacAddr([0x01, 0, 0x5e, 0, 0, 1]).is_multicast());
        let m = MacAddr([0x0a, 0x58, 10, 244, 1, 2]);
        assert!(m.is_unicast() && m.is_local_admin());
        assert_eq!(MacAddr::from_u64(m.to_u64()), m);
        assert_eq!(m.to_u64() >> 48, 0);
        assert_eq!(MacAddr::from_slice(&[1, 2, 3]), None);
    }

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
