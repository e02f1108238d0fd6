//! UDP (RFC 768).
//!
//! ```text
//! +-----------------+-----------------+
//! |  source port    | destination port|
//! +-----------------+-----------------+
//! |  length         |  checksum       |
//! +-----------------+-----------------+
//! |  payload ...                      |
//! +-----------------------------------+
//! ```
//!
//! The view is over the IPv4 payload. `check_len`: 8 bytes (`Truncated`), 8 ≤ length ≤
//! buffer (`Invalid "len"`). Over IPv4 a checksum of 0 means "not computed" (see
//! `checksum.rs`). A checked view never panics.

use std::net::Ipv4Addr;

use super::checksum;
use super::{get_u16, need, set_u16, Error, IpProtocol, Layer, Result};

mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const LENGTH: usize = 4;
    pub const CHECKSUM: usize = 6;
    pub const PAYLOAD: usize = 8;
}

/// Length of the UDP header.
pub const HEADER_LEN: usize = field::PAYLOAD;

/// A view over a UDP datagram.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// A view without checks.
    #[inline]
    pub fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// A checked view.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Packet<T>> {
        let p = Packet::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Validates the length field against the buffer.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        let b = self.buffer.as_ref();
        need(Layer::Udp, b, HEADER_LEN)?;
        let len = usize::from(self.len());
        if len < HEADER_LEN || len > b.len() {
            return Err(Error::Invalid { layer: Layer::Udp, field: "len", value: len as u32 });
        }
        Ok(())
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Source port.
    #[inline]
    pub fn src_port(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::SRC_PORT)
    }

    /// Destination port.
    #[inline]
    pub fn dst_port(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::DST_PORT)
    }

    /// Length field (header and payload).
    #[inline]
    pub fn len(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::LENGTH)
    }

    /// True when the length field says there is no payload.
    #[inline]
    pub fn is_empty(&self) -> bool {
        usize::from(self.len()) <= HEADER_LEN
    }

    /// Checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// The payload, as long as the length field says.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..usize::from(self.len())]
    }

    /// True when the checksum is correct for these addresses, or absent (0).
    pub fn verify_checksum(&self, src: &Ipv4Addr, dst: &Ipv4Addr) -> bool {
        if self.checksum() == 0 {
            return true;
        }
        let data = &self.buffer.as_ref()[..usize::from(self.len())];
        let s = checksum::add(
            checksum::pseudo_header_v4(src, dst, IpProtocol::Udp, self.len()),
            checksum::sum(data),
        );
        checksum::finish(s) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the source port.
    #[inline]
    pub fn set_src_port(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), field::SRC_PORT, v);
    }

    /// Sets the destination port.
    #[inline]
    pub fn set_dst_port(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), field::DST_PORT, v);
    }

    /// Sets the length field.
    #[inline]
    pub fn set_len(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), field::LENGTH, v);
    }

    /// Sets the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), field::CHECKSUM, v);
    }

    /// The payload, writable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let len = usize::from(self.len());
        &mut self.buffer.as_mut()[HEADER_LEN..len]
    }

    /// Computes the checksum with the IPv4 pseudo-header; a result of 0 is written 0xFFFF.
    pub fn fill_checksum(&mut self, src: &Ipv4Addr, dst: &Ipv4Addr) {
        self.set_checksum(0);
        let len = self.len();
        let data = &self.buffer.as_ref()[..usize::from(len)];
        let s = checksum::add(
            checksum::pseudo_header_v4(src, dst, IpProtocol::Udp, len),
            checksum::sum(data),
        );
        let c = match checksum::finish(s) {
            0 => 0xffff,
            c => c,
        };
        self.set_checksum(c);
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const SRC: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 1);
    const DST: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 2);

    #[test]
    fn construct_and_parse() {
        let mut b = [0u8; 12];
        let mut p = Packet::new_unchecked(&mut b[..]);
        p.set_src_port(53);
        p.set_dst_port(40000);
        p.set_len(12);
        p.payload_mut().copy_from_slice(b"abcd");
        p.fill_checksum(&SRC, &DST);
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!((p.src_port(), p.dst_port(), p.len()), (53, 40000, 12));
        assert_eq!(p.payload(), b"abcd");
        assert!(p.verify_checksum(&SRC, &DST));
        assert!(!p.verify_checksum(&SRC, &Ipv4Addr::new(192, 168, 1, 3)));
        let mut none = b;
        none[6..8].copy_from_slice(&[0, 0]);
        assert!(Packet::new_checked(&none[..]).unwrap().verify_checksum(&SRC, &SRC));
        assert!(matches!(
            Packet::new_checked(&b[..11]),
            Err(Error::Invalid { field: "len", value: 12, .. })
        ));
        assert!(matches!(Packet::new_checked(&b[..7]), Err(Error::Truncated { .. })));
    }

    #[test]
    fn agrees_with_etherparse() {
        let mut v = Vec::new();
        etherparse::PacketBuilder::ipv4(SRC.octets(), DST.octets(), 64)
            .udp(1111, 2222)
            .write(&mut v, b"hello")
            .unwrap();
        let p = Packet::new_checked(&v[20..]).unwrap();
        assert_eq!((p.src_port(), p.dst_port(), p.payload()), (1111, 2222, &b"hello"[..]));
        assert!(p.verify_checksum(&SRC, &DST));
        let mut mine = v[20..].to_vec();
        let theirs = Packet::new_unchecked(&v[20..]).checksum();
        Packet::new_unchecked(&mut mine[..]).fill_checksum(&SRC, &DST);
        assert_eq!(Packet::new_unchecked(&mine[..]).checksum(), theirs);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..40)) {
            if let Ok(p) = Packet::new_checked(&data[..]) {
                let _ = (p.src_port(), p.dst_port(), p.payload(), p.verify_checksum(&SRC, &DST));
            }
        }

        #[test]
        fn nat_style_update_matches_recompute(payload in proptest::collection::vec(any::<u8>(), 0..64), new_dst in any::<u32>(), new_port in any::<u16>()) {
            let len = (HEADER_LEN + payload.len()) as u16;
            let mut b = vec![0u8; usize::from(len)];
            let mut p = Packet::new_unchecked(&mut b[..]);
            p.set_src_port(1000);
            p.set_dst_port(80);
            p.set_len(len);
            p.payload_mut().copy_from_slice(&payload);
            p.fill_checksum(&SRC, &DST);
            // Rewrite the destination address (pseudo-header) and port incrementally.
            let new_dst = Ipv4Addr::from(new_dst);
            let c = checksum::update_addr(p.checksum(), &DST, &new_dst);
            let c = checksum::update16(c, 80, new_port);
            p.set_dst_port(new_port);
            p.set_checksum(c);
            prop_assert!(p.verify_checksum(&SRC, &new_dst));
        }
    }
}
