//! Ethernet II frames and the 802.1Q tag.
//!
//! ```text
//!  0                   6                   12      14
//! +-------------------+-------------------+-------+----------------
//! | destination MAC   | source MAC        | type  | payload ...
//! +-------------------+-------------------+-------+----------------
//!
//! with one 802.1Q (0x8100) or 802.1ad (0x88a8) tag:
//! +-------------------+-------------------+-------+-------+-------+----------
//! | destination MAC   | source MAC        | TPID  |PCP|VID| type  | payload
//! +-------------------+-------------------+-------+-------+-------+----------
//!                                          12      14      16      18
//! ```
//!
//! [`Frame`] is the plain header view; [`parse_l2`] reads through one tag and says where the
//! L3 header starts. No FCS: ports hand frames without it. Accessors of a checked `Frame`
//! never panic (it only needs 14 bytes).

use super::{enum_with_unknown, get_u16, need, set_u16, Error, Layer, MacAddr, Result};

enum_with_unknown! {
    /// EtherType values the switch acts on.
    pub enum EtherType(u16) {
        /// IPv4.
        Ipv4 = 0x0800,
        /// ARP.
        Arp = 0x0806,
        /// IPv6.
        Ipv6 = 0x86dd,
        /// 802.1Q VLAN tag.
        Vlan = 0x8100,
        /// 802.1ad (QinQ) service tag.
        QinQ = 0x88a8,
    }
}

mod field {
    use std::ops::Range;
    pub const DESTINATION: Range<usize> = 0..6;
    pub const SOURCE: Range<usize> = 6..12;
    pub const ETHERTYPE: usize = 12;
    pub const PAYLOAD: usize = 14;
}

/// Length of the Ethernet II header.
pub const HEADER_LEN: usize = field::PAYLOAD;

/// Length of one 802.1Q tag.
pub const VLAN_TAG_LEN: usize = 4;

/// A view over an Ethernet II frame.
#[derive(Debug, Clone)]
pub struct Frame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// A view without checks; accessors panic if the buffer is shorter than 14 bytes.
    #[inline]
    pub fn new_unchecked(buffer: T) -> Frame<T> {
        Frame { buffer }
    }

    /// A view over a buffer of at least [`HEADER_LEN`] bytes.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Frame<T>> {
        let f = Frame::new_unchecked(buffer);
        f.check_len()?;
        Ok(f)
    }

    /// Checks the buffer holds a header.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        need(Layer::Ethernet, self.buffer.as_ref(), HEADER_LEN)
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Destination MAC.
    #[inline]
    pub fn dst_addr(&self) -> MacAddr {
        MacAddr::from_slice(&self.buffer.as_ref()[field::DESTINATION]).unwrap_or_default()
    }

    /// Source MAC.
    #[inline]
    pub fn src_addr(&self) -> MacAddr {
        MacAddr::from_slice(&self.buffer.as_ref()[field::SOURCE]).unwrap_or_default()
    }

    /// The EtherType field (the TPID when the frame is tagged).
    #[inline]
    pub fn ethertype(&self) -> EtherType {
        EtherType::from(get_u16(self.buffer.as_ref(), field::ETHERTYPE))
    }

    /// Everything after the 14-byte header.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Frame<T> {
    /// Sets the destination MAC.
    #[inline]
    pub fn set_dst_addr(&mut self, a: MacAddr) {
        self.buffer.as_mut()[field::DESTINATION].copy_from_slice(&a.0);
    }

    /// Sets the source MAC.
    #[inline]
    pub fn set_src_addr(&mut self, a: MacAddr) {
        self.buffer.as_mut()[field::SOURCE].copy_from_slice(&a.0);
    }

    /// Sets the EtherType.
    #[inline]
    pub fn set_ethertype(&mut self, t: EtherType) {
        set_u16(self.buffer.as_mut(), field::ETHERTYPE, t.into());
    }

    /// Everything after the header, writable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD..]
    }
}

/// The meaning of an untagged Ethernet header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// Source MAC.
    pub src_addr: MacAddr,
    /// Destination MAC.
    pub dst_addr: MacAddr,
    /// EtherType.
    pub ethertype: EtherType,
}

impl Repr {
    /// Reads a checked frame's header.
    pub fn parse<T: AsRef<[u8]>>(f: &Frame<T>) -> Result<Repr> {
        f.check_len()?;
        Ok(Repr { src_addr: f.src_addr(), dst_addr: f.dst_addr(), ethertype: f.ethertype() })
    }

    /// Header length.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header; the frame must have [`HEADER_LEN`] bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, f: &mut Frame<T>) {
        f.set_dst_addr(self.dst_addr);
        f.set_src_addr(self.src_addr);
        f.set_ethertype(self.ethertype);
    }
}

/// The link layer as the pipeline needs it: addresses, at most one tag, the inner EtherType
/// and where the L3 header starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct L2Header {
    /// Destination MAC.
    pub dst: MacAddr,
    /// Source MAC.
    pub src: MacAddr,
    /// VLAN id of the tag, if tagged.
    pub vlan: Option<u16>,
    /// Priority code point of the tag (0 when untagged).
    pub pcp: u8,
    /// EtherType after the tag (a second tag shows up here as `Vlan`/`QinQ`).
    pub ethertype: EtherType,
    /// Offset of the L3 header: 14, or 18 when tagged.
    pub payload_offset: usize,
}

/// Parses the Ethernet header and one 802.1Q/802.1ad tag.
#[inline]
pub fn parse_l2(frame: &[u8]) -> Result<L2Header> {
    let f = Frame::new_checked(frame)?;
    let mut h = L2Header {
        dst: f.dst_addr(),
        src: f.src_addr(),
        vlan: None,
        pcp: 0,
        ethertype: f.ethertype(),
        payload_offset: HEADER_LEN,
    };
    if matches!(h.ethertype, EtherType::Vlan | EtherType::QinQ) {
        if frame.len() < HEADER_LEN + VLAN_TAG_LEN {
            return Err(Error::Truncated {
                layer: Layer::Vlan,
                needed: HEADER_LEN + VLAN_TAG_LEN,
                got: frame.len(),
            });
        }
        let tci = get_u16(frame, HEADER_LEN);
        h.vlan = Some(tci & 0x0fff);
        h.pcp = (tci >> 13) as u8;
        h.ethertype = EtherType::from(get_u16(frame, HEADER_LEN + 2));
        h.payload_offset = HEADER_LEN + VLAN_TAG_LEN;
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    // An ARP request as captured: broadcast to ff:ff.., from 52:54:00:12:34:56.
    const FRAME: [u8; 16] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x08, 0x06, 0xaa,
        0xbb,
    ];

    #[test]
    fn parse_known_frame() {
        let f = Frame::new_checked(&FRAME[..]).unwrap();
        assert_eq!(f.dst_addr(), MacAddr::BROADCAST);
        assert_eq!(f.src_addr(), MacAddr([0x52, 0x54, 0, 0x12, 0x34, 0x56]));
        assert_eq!(f.ethertype(), EtherType::Arp);
        assert_eq!(f.payload(), &[0xaa, 0xbb]);
        let r = Repr::parse(&f).unwrap();
        let mut out = [0u8; 16];
        out[14..].copy_from_slice(&[0xaa, 0xbb]);
        r.emit(&mut Frame::new_unchecked(&mut out[..]));
        assert_eq!(out, FRAME);
    }

    #[test]
    fn tagged_frame() {
        let mut f = FRAME.to_vec();
        f.splice(12..12, [0x81, 0x00, 0xa0, 0x64]);
        let h = parse_l2(&f).unwrap();
        assert_eq!(h.vlan, Some(100));
        assert_eq!(h.pcp, 5);
        assert_eq!(h.ethertype, EtherType::Arp);
        assert_eq!(h.payload_offset, 18);
        let untagged = parse_l2(&FRAME).unwrap();
        assert_eq!((untagged.vlan, untagged.payload_offset), (None, 14));
        assert_eq!(
            parse_l2(&f[..17]),
            Err(Error::Truncated { layer: Layer::Vlan, needed: 18, got: 17 })
        );
        assert_eq!(
            parse_l2(&f[..13]),
            Err(Error::Truncated { layer: Layer::Ethernet, needed: 14, got: 13 })
        );
    }

    #[test]
    fn agrees_with_etherparse() {
        let b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .single_vlan(etherparse::VlanId::try_new(42).unwrap())
            .ipv4([1, 2, 3, 4], [5, 6, 7, 8], 9)
            .udp(1, 2);
        let mut v = Vec::new();
        b.write(&mut v, b"x").unwrap();
        let h = parse_l2(&v).unwrap();
        assert_eq!(h.src, MacAddr([2, 0, 0, 0, 0, 1]));
        assert_eq!(h.dst, MacAddr([2, 0, 0, 0, 0, 2]));
        assert_eq!(h.vlan, Some(42));
        assert_eq!(h.ethertype, EtherType::Ipv4);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(f) = Frame::new_checked(&data[..]) {
                let _ = (f.dst_addr(), f.src_addr(), f.ethertype(), f.payload());
            }
            if let Ok(h) = parse_l2(&data) {
                prop_assert!(h.payload_offset <= data.len());
            }
        }
    }
}
