//! IPv4 prefixes (`10.244.1.0/24`) and interface addresses (`10.244.1.5/24`): parsing with
//! errors that say what is wrong, containment, and the host range a pod CIDR hands out.
//!
//! Two types because they mean different things: an [`Ipv4Cidr`] is a network (host bits
//! zero, enforced), an [`Ipv4IfAddr`] is one address plus the prefix length of its subnet.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a prefix or interface address did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    /// The text has no `/LEN` part.
    #[error("{0:?} has no prefix length (expected ADDR/LEN, e.g. 10.244.1.0/24)")]
    MissingPrefix(String),
    /// The address part is not dotted-quad IPv4.
    #[error("{0:?} is not an IPv4 address")]
    BadAddress(String),
    /// The prefix length is not a number from 0 to 32.
    #[error("prefix length {0:?} is not a number from 0 to 32")]
    BadPrefixLen(String),
    /// A network was written with host bits set.
    #[error("{addr}/{len} has host bits set (did you mean {network}/{len}?)")]
    HostBitsSet {
        /// The address as written.
        addr: Ipv4Addr,
        /// The prefix length.
        len: u8,
        /// The network the prefix covers.
        network: Ipv4Addr,
    },
}

fn split(s: &str) -> Result<(Ipv4Addr, u8), CidrError> {
    let (a, l) = s.split_once('/').ok_or_else(|| CidrError::MissingPrefix(s.to_string()))?;
    let addr: Ipv4Addr = a.parse().map_err(|_| CidrError::BadAddress(a.to_string()))?;
    let len: u8 = l.parse().map_err(|_| CidrError::BadPrefixLen(l.to_string()))?;
    if len > 32 {
        return Err(CidrError::BadPrefixLen(l.to_string()));
    }
    Ok((addr, len))
}

fn mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    }
}

/// An IPv4 network: address with all host bits zero, and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Cidr {
    network: Ipv4Addr,
    prefix_len: u8,
}

impl Ipv4Cidr {
    /// A network from its address and prefix length; fails when host bits are set or the
    /// length exceeds 32.
    pub fn new(network: Ipv4Addr, prefix_len: u8) -> Result<Self, CidrError> {
        if prefix_len > 32 {
            return Err(CidrError::BadPrefixLen(prefix_len.to_string()));
        }
        let masked = Ipv4Addr::from(u32::from(network) & mask(prefix_len));
        if masked != network {
            return Err(CidrError::HostBitsSet { addr: network, len: prefix_len, network: masked });
        }
        Ok(Ipv4Cidr { network, prefix_len })
    }

    /// The network address.
    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// The netmask as a `u32`.
    pub fn mask(&self) -> u32 {
        mask(self.prefix_len)
    }

    /// True when `addr` is inside this network.
    #[inline]
    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        u32::from(addr) & self.mask() == u32::from(self.network)
    }

    /// True when the two networks share any address (one contains the other).
    pub fn overlaps(&self, other: &Ipv4Cidr) -> bool {
        self.contains(other.network) || other.contains(self.network)
    }

    /// The broadcast address (last address of the network).
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !self.mask())
    }

    /// The `n`-th address of the network (0 is the network address itself); `None` past the
    /// end.
    pub fn nth(&self, n: u32) -> Option<Ipv4Addr> {
        let size = 1u64 << (32 - u32::from(self.prefix_len));
        (u64::from(n) < size).then(|| Ipv4Addr::from(u32::from(self.network) + n))
    }

    /// Number of addresses usable by hosts: all but the network and broadcast addresses
    /// (for /31 and /32, every address).
    pub fn host_count(&self) -> u64 {
        let size = 1u64 << (32 - u32::from(self.prefix_len));
        if self.prefix_len >= 31 {
            size
        } else {
            size - 2
        }
    }

    /// True when `addr` is a usable host address of this network (not the network or
    /// broadcast address, for prefixes up to /30).
    pub fn is_host(&self, addr: Ipv4Addr) -> bool {
        self.contains(addr)
            && (self.prefix_len >= 31 || (addr != self.network && addr != self.broadcast()))
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = CidrError;
    fn from_str(s: &str) -> Result<Self, CidrError> {
        let (addr, len) = split(s)?;
        Ipv4Cidr::new(addr, len)
    }
}

/// An interface address: one IPv4 address and the prefix length of its subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4IfAddr {
    /// The address.
    pub addr: Ipv4Addr,
    /// The subnet's prefix length.
    pub prefix_len: u8,
}

impl Ipv4IfAddr {
    /// The subnet this address is in.
    pub fn subnet(&self) -> Ipv4Cidr {
        let network = Ipv4Addr::from(u32::from(self.addr) & mask(self.prefix_len));
        Ipv4Cidr { network, prefix_len: self.prefix_len }
    }
}

impl fmt::Display for Ipv4IfAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl FromStr for Ipv4IfAddr {
    type Err = CidrError;
    fn from_str(s: &str) -> Result<Self, CidrError> {
        let (addr, prefix_len) = split(s)?;
        Ok(Ipv4IfAddr { addr, prefix_len })
    }
}

macro_rules! serde_via_str {
    ($t:ty, $what:literal) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(|e| serde::de::Error::custom(format!("{}: {e}", $what)))
            }
        }
    };
}
serde_via_str!(Ipv4Cidr, "invalid IPv4 prefix");
serde_via_str!(Ipv4IfAddr, "invalid IPv4 interface address");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_checks_networks() {
        let c: Ipv4Cidr = "10.244.1.0/24".parse().unwrap();
        assert_eq!(c.to_string(), "10.244.1.0/24");
        assert!(c.contains("10.244.1.77".parse().unwrap()));
        assert!(!c.contains("10.244.2.1".parse().unwrap()));
        assert_eq!(c.broadcast(), Ipv4Addr::new(10, 244, 1, 255));
        assert_eq!(c.nth(1), Some(Ipv4Addr::new(10, 244, 1, 1)));
        assert_eq!(c.nth(256), None);
        assert_eq!(c.host_count(), 254);
        assert!(c.is_host("10.244.1.1".parse().unwrap()));
        assert!(!c.is_host("10.244.1.0".parse().unwrap()));
        assert!(!c.is_host("10.244.1.255".parse().unwrap()));
        let all: Ipv4Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(Ipv4Addr::new(1, 2, 3, 4)));
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let e = "10.244.1.5/24".parse::<Ipv4Cidr>().unwrap_err();
        assert!(e.to_string().contains("did you mean 10.244.1.0/24"), "{e}");
        assert!(matches!("10.244.1.0".parse::<Ipv4Cidr>(), Err(CidrError::MissingPrefix(_))));
        assert!(matches!("10.244.1.0/33".parse::<Ipv4Cidr>(), Err(CidrError::BadPrefixLen(_))));
        assert!(matches!("10.244.1/24".parse::<Ipv4Cidr>(), Err(CidrError::BadAddress(_))));
        assert!(matches!("1.2.3.4/x".parse::<Ipv4IfAddr>(), Err(CidrError::BadPrefixLen(_))));
    }

    #[test]
    fn interface_address_knows_its_subnet() {
        let a: Ipv4IfAddr = "10.244.1.5/24".parse().unwrap();
        assert_eq!(a.subnet().to_string(), "10.244.1.0/24");
        assert_eq!(a.to_string(), "10.244.1.5/24");
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(json, "\"10.244.1.5/24\"");
        assert_eq!(serde_json::from_str::<Ipv4IfAddr>(&json).unwrap(), a);
    }
}
