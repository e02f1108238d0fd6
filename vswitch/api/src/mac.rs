//! Ethernet MAC addresses as the API, the configuration and the packet views use them:
//! `02:70:73:f4:01:01` in text and JSON, parsing with errors that say what is wrong. The
//! header views in the dataplane's `wire` module re-export [`MacAddr`].

use std::fmt;
use std::str::FromStr;

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
}
