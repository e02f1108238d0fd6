//! IPv6 fixed header (RFC 8200), and a view of one extension header. The switch forwards
//! IPv6 at L2 and only needs to know a header is sound; extension headers are payload to it,
//! except to port security, which walks them with [`ExtHeader`] to find what a pod sends.
//!
//! ```text
//! +-------+---------------+---------------------------------------+
//! |Version| Traffic Class |              Flow Label               |
//! +-------+---------------+-------+---------------+---------------+
//! |         Payload Length        |  Next Header  |   Hop Limit   |
//! +-------------------------------+---------------+---------------+
//! |                  Source Address (16 bytes)                    |
//! +---------------------------------------------------------------+
//! |                Destination Address (16 bytes)                 |
//! +---------------------------------------------------------------+
//! ```
//!
//! `check_len`: 40 bytes (`Truncated`), version 6 (`Invalid "version"`), 40 + payload length
//! within the buffer (`Invalid "payload_len"`). After it succeeds no accessor panics.

use std::net::Ipv6Addr;

use super::{get_u16, get_u32, need, set_u16, set_u32, Error, Layer, Result};

mod field {
    pub const VER_TC_FLOW: usize = 0;
    pub const LENGTH: usize = 4;
    pub const NXT_HDR: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC_ADDR: usize = 8;
    pub const DST_ADDR: usize = 24;
    pub const PAYLOAD: usize = 40;
}

/// Length of the fixed header.
pub const HEADER_LEN: usize = field::PAYLOAD;

/// A view over an IPv6 packet.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

fn addr_at(b: &[u8], at: usize) -> Ipv6Addr {
    let mut o = [0u8; 16];
    o.copy_from_slice(&b[at..at + 16]);
    Ipv6Addr::from(o)
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// A view without checks.
    #[inline]
    pub fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// A checked view (see the module doc).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Packet<T>> {
        let p = Packet::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Validates version and payload length against the buffer.
    pub fn check_len(&self) -> Result<()> {
        let b = self.buffer.as_ref();
        need(Layer::Ipv6, b, HEADER_LEN)?;
        if self.version() != 6 {
            return Err(Error::Invalid {
                layer: Layer::Ipv6,
                field: "version",
                value: u32::from(self.version()),
            });
        }
        if HEADER_LEN + usize::from(self.payload_len()) > b.len() {
            return Err(Error::Invalid {
                layer: Layer::Ipv6,
                field: "payload_len",
                value: u32::from(self.payload_len()),
            });
        }
        Ok(())
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Version field.
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_TC_FLOW] >> 4
    }

    /// Traffic class.
    pub fn traffic_class(&self) -> u8 {
        (get_u16(self.buffer.as_ref(), field::VER_TC_FLOW) >> 4) as u8
    }

    /// Flow label.
    pub fn flow_label(&self) -> u32 {
        get_u32(self.buffer.as_ref(), field::VER_TC_FLOW) & 0x000f_ffff
    }

    /// Payload length.
    #[inline]
    pub fn payload_len(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::LENGTH)
    }

    /// Next header.
    #[inline]
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::NXT_HDR]
    }

    /// Hop limit.
    #[inline]
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    /// Source address.
    pub fn src_addr(&self) -> Ipv6Addr {
        addr_at(self.buffer.as_ref(), field::SRC_ADDR)
    }

    /// Destination address.
    pub fn dst_addr(&self) -> Ipv6Addr {
        addr_at(self.buffer.as_ref(), field::DST_ADDR)
    }

    /// The payload (payload length bytes after the fixed header).
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..HEADER_LEN + usize::from(self.payload_len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets version 6, traffic class and flow label.
    pub fn set_version_tc_flow(&mut self, traffic_class: u8, flow_label: u32) {
        let v = (6 << 28) | (u32::from(traffic_class) << 20) | (flow_label & 0x000f_ffff);
        set_u32(self.buffer.as_mut(), field::VER_TC_FLOW, v);
    }

    /// Sets the payload length.
    pub fn set_payload_len(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), field::LENGTH, v);
    }

    /// Sets the next header.
    pub fn set_next_header(&mut self, v: u8) {
        self.buffer.as_mut()[field::NXT_HDR] = v;
    }

    /// Sets the hop limit.
    pub fn set_hop_limit(&mut self, v: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = v;
    }

    /// Sets the source address.
    pub fn set_src_addr(&mut self, a: Ipv6Addr) {
        self.buffer.as_mut()[field::SRC_ADDR..field::SRC_ADDR + 16].copy_from_slice(&a.octets());
    }

    /// Sets the destination address.
    pub fn set_dst_addr(&mut self, a: Ipv6Addr) {
        self.buffer.as_mut()[field::DST_ADDR..field::DST_ADDR + 16].copy_from_slice(&a.octets());
    }
}

/// Next-header values: the extension headers a receiver walks before the upper layer (RFC
/// 8200 §4: hop-by-hop options, routing, fragment, destination options), and the upper layers
/// port security inspects.
pub mod next_header {
    /// Hop-by-hop options.
    pub const HOP_BY_HOP: u8 = 0;
    /// Routing.
    pub const ROUTING: u8 = 43;
    /// Fragment.
    pub const FRAGMENT: u8 = 44;
    /// Destination options.
    pub const DEST_OPTS: u8 = 60;
    /// ICMPv6.
    pub const ICMPV6: u8 = 58;
    /// UDP.
    pub const UDP: u8 = 17;
}

/// A view over one extension header (hop-by-hop, routing, destination options: length in
/// 8-byte units after the first 8; fragment: always 8 bytes, RFC 8200 §4.5).
///
/// `new_checked`: the whole header within the buffer (`Truncated`). After it succeeds no
/// accessor panics.
#[derive(Debug, Clone)]
pub struct ExtHeader<'a> {
    buffer: &'a [u8],
    kind: u8,
}

impl<'a> ExtHeader<'a> {
    /// A checked view of the extension header of type `kind` at the start of `buffer`.
    #[inline]
    pub fn new_checked(buffer: &'a [u8], kind: u8) -> Result<ExtHeader<'a>> {
        need(Layer::Ipv6, buffer, 8)?;
        let h = ExtHeader { buffer, kind };
        need(Layer::Ipv6, buffer, h.header_len())?;
        Ok(h)
    }

    /// The type of the header that follows.
    #[inline]
    pub fn next_header(&self) -> u8 {
        self.buffer[0]
    }

    /// Length of this header in bytes.
    #[inline]
    pub fn header_len(&self) -> usize {
        if self.kind == next_header::FRAGMENT {
            8
        } else {
            (usize::from(self.buffer[1]) + 1) * 8
        }
    }

    /// A fragment header's offset in 8-byte units (0 for other headers and first fragments).
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        if self.kind == next_header::FRAGMENT {
            get_u16(self.buffer, 2) >> 3
        } else {
            0
        }
    }

    /// What follows this header.
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        &self.buffer[self.header_len()..]
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn construct_and_parse() {
        let mut b = vec![0u8; 48];
        let mut p = Packet::new_unchecked(&mut b[..]);
        p.set_version_tc_flow(0xb8, 0x12345);
        p.set_payload_len(8);
        p.set_next_header(58);
        p.set_hop_limit(255);
        p.set_src_addr("fe80::1".parse().unwrap());
        p.set_dst_addr("ff02::2".parse().unwrap());
        assert_eq!(&b[..8], &[0x6b, 0x81, 0x23, 0x45, 0, 8, 58, 255]);
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.traffic_class(), 0xb8);
        assert_eq!(p.flow_label(), 0x12345);
        assert_eq!(p.src_addr(), "fe80::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(p.dst_addr(), "ff02::2".parse::<Ipv6Addr>().unwrap());
        assert_eq!(p.payload().len(), 8);
        assert!(matches!(
            Packet::new_checked(&b[..47]),
            Err(Error::Invalid { field: "payload_len", .. })
        ));
        assert!(matches!(Packet::new_checked(&b[..39]), Err(Error::Truncated { .. })));
        let mut v4 = b.clone();
        v4[0] = 0x4b;
        assert!(matches!(
            Packet::new_checked(&v4[..]),
            Err(Error::Invalid { field: "version", .. })
        ));
    }

    #[test]
    fn extension_headers() {
        // Hop-by-hop with 8 bytes after the first 8, then a fragment header (offset 3).
        let mut b = vec![44u8, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        b.extend_from_slice(&[58, 0, 0, 3 << 3, 0, 0, 0, 1, 0x86]);
        let h = ExtHeader::new_checked(&b, next_header::HOP_BY_HOP).unwrap();
        assert_eq!((h.next_header(), h.header_len(), h.frag_offset()), (44, 16, 0));
        let f = ExtHeader::new_checked(h.payload(), next_header::FRAGMENT).unwrap();
        assert_eq!((f.next_header(), f.header_len(), f.frag_offset()), (58, 8, 3));
        assert_eq!(f.payload(), &[0x86]);
        assert!(ExtHeader::new_checked(&b[..15], next_header::HOP_BY_HOP).is_err());
        assert!(ExtHeader::new_checked(&b[..7], next_header::FRAGMENT).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..100)) {
            if let Ok(p) = Packet::new_checked(&data[..]) {
                let _ = (p.traffic_class(), p.flow_label(), p.next_header(), p.hop_limit(),
                    p.src_addr(), p.dst_addr(), p.payload());
            }
        }
    }
}
