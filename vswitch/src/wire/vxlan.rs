//! VXLAN (RFC 7348): the 8-byte header between the outer UDP header (port 4789) and the
//! inner Ethernet frame.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |R|R|R|R|I|R|R|R|            Reserved                           |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                VXLAN Network Identifier (VNI) |   Reserved    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! The I flag must be set (`Invalid "flags"` otherwise). Reserved bits are ignored on
//! receive and written as zero (RFC 7348 §5). A checked header never panics.

use std::fmt;

use super::{get_u32, need, set_u32, Error, Layer, Result};

/// The IANA-assigned VXLAN UDP port.
pub const UDP_PORT: u16 = 4789;

/// Length of the VXLAN header.
pub const HEADER_LEN: usize = 8;

/// Bytes VXLAN adds around an inner frame over IPv4 without options: outer Ethernet (14),
/// IPv4 (20), UDP (8), VXLAN (8).
pub const ENCAP_OVERHEAD: usize = 50;

const FLAG_I: u8 = 0x08;

/// A VXLAN network identifier: 24 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Vni(u32);

/// A value does not fit in 24 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("VNI {0} is out of range (0 to 16777215)")]
pub struct VniRangeError(u32);

impl Vni {
    /// Largest VNI.
    pub const MAX: u32 = (1 << 24) - 1;

    /// The VNI, if `v` fits in 24 bits.
    pub const fn new(v: u32) -> Option<Vni> {
        if v <= Self::MAX {
            Some(Vni(v))
        } else {
            None
        }
    }

    /// The number.
    pub const fn get(self) -> u32 {
        self.0
    }
}

impl TryFrom<u32> for Vni {
    type Error = VniRangeError;
    fn try_from(v: u32) -> core::result::Result<Vni, VniRangeError> {
        Vni::new(v).ok_or(VniRangeError(v))
    }
}

impl fmt::Display for Vni {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl serde::Serialize for Vni {
    fn serialize<S: serde::Serializer>(&self, s: S) -> core::result::Result<S::Ok, S::Error> {
        s.serialize_u32(self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Vni {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> core::result::Result<Self, D::Error> {
        let v = u32::deserialize(d)?;
        Vni::try_from(v).map_err(serde::de::Error::custom)
    }
}

/// A view over a VXLAN header and the inner frame after it.
#[derive(Debug, Clone)]
pub struct Header<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Header<T> {
    /// A view without checks.
    #[inline]
    pub fn new_unchecked(buffer: T) -> Header<T> {
        Header { buffer }
    }

    /// A checked view: 8 bytes with the I flag set.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Header<T>> {
        let h = Header::new_unchecked(buffer);
        h.check_len()?;
        if !h.has_vni() {
            return Err(Error::Invalid {
                layer: Layer::Vxlan,
                field: "flags",
                value: u32::from(h.flags()),
            });
        }
        Ok(h)
    }

    /// Checks the length.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        need(Layer::Vxlan, self.buffer.as_ref(), HEADER_LEN)
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The flags byte.
    #[inline]
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[0]
    }

    /// The I flag: the VNI is valid.
    #[inline]
    pub fn has_vni(&self) -> bool {
        self.flags() & FLAG_I != 0
    }

    /// The VNI.
    #[inline]
    pub fn vni(&self) -> Vni {
        Vni(get_u32(self.buffer.as_ref(), 4) >> 8)
    }

    /// The inner Ethernet frame.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Header<T> {
    /// Sets the flags byte and clears the reserved bytes after it.
    pub fn set_flags(&mut self, flags: u8) {
        let b = self.buffer.as_mut();
        b[0] = flags;
        b[1..4].fill(0);
    }

    /// Sets the VNI (the reserved byte after it is cleared).
    pub fn set_vni(&mut self, vni: Vni) {
        set_u32(self.buffer.as_mut(), 4, vni.0 << 8);
    }
}

/// A VXLAN header's meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// The network identifier.
    pub vni: Vni,
}

impl Repr {
    /// Parses a header.
    pub fn parse<T: AsRef<[u8]>>(h: &Header<T>) -> Result<Repr> {
        h.check_len()?;
        if !h.has_vni() {
            return Err(Error::Invalid {
                layer: Layer::Vxlan,
                field: "flags",
                value: u32::from(h.flags()),
            });
        }
        Ok(Repr { vni: h.vni() })
    }

    /// Header length.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header: I flag, reserved bits zero.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, h: &mut Header<T>) {
        h.set_flags(FLAG_I);
        h.set_vni(self.vni);
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const HEADER: [u8; 8] = [0x08, 0, 0, 0, 0x12, 0x34, 0x56, 0];

    #[test]
    fn parse_and_emit() {
        let h = Header::new_checked(&HEADER[..]).unwrap();
        assert_eq!(h.vni().get(), 0x123456);
        let mut out = [0xffu8; 8];
        Repr { vni: Vni::new(0x123456).unwrap() }.emit(&mut Header::new_unchecked(&mut out[..]));
        assert_eq!(out, HEADER);
        // Reserved bits set on receive are ignored.
        let mut r = HEADER;
        r[0] |= 0x80;
        r[7] = 0xff;
        assert_eq!(Header::new_checked(&r[..]).unwrap().vni().get(), 0x123456);
        let mut no_i = HEADER;
        no_i[0] = 0;
        assert!(matches!(
            Header::new_checked(&no_i[..]),
            Err(Error::Invalid { field: "flags", .. })
        ));
        assert!(matches!(Header::new_checked(&HEADER[..7]), Err(Error::Truncated { .. })));
    }

    #[test]
    fn vni_range() {
        assert_eq!(Vni::new(Vni::MAX).map(Vni::get), Some(0xff_ffff));
        assert!(Vni::new(1 << 24).is_none());
        assert!(Vni::try_from(1 << 24).unwrap_err().to_string().contains("out of range"));
        assert_eq!(serde_json::from_str::<Vni>("42").unwrap().get(), 42);
        assert!(serde_json::from_str::<Vni>("16777216").is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..20)) {
            if let Ok(h) = Header::new_checked(&data[..]) {
                let _ = (h.flags(), h.vni(), h.payload(), Repr::parse(&h));
            }
        }

        #[test]
        fn round_trip(v in 0u32..=Vni::MAX) {
            let mut b = [0u8; 8];
            let r = Repr { vni: Vni::new(v).unwrap() };
            r.emit(&mut Header::new_unchecked(&mut b[..]));
            prop_assert_eq!(Repr::parse(&Header::new_checked(&b[..]).unwrap()).unwrap(), r);
        }
    }
}
