//! TCP header (RFC 9293). The switch reads ports, flags and lengths (connection tracking and
//! NAT build on them) and rewrites ports and checksums; it never terminates TCP.
//!
//! ```text
//! +-----------------+-----------------+
//! |  source port    | destination port|
//! +-----------------+-----------------+
//! |          sequence number          |
//! +-----------------------------------+
//! |       acknowledgment number       |
//! +----+----+-------+-----------------+
//! |doff|rsvd| flags |     window      |
//! +----+----+-------+-----------------+
//! |  checksum       | urgent pointer  |
//! +-----------------+-----------------+
//! |  options (doff > 5) ... payload   |
//! +-----------------------------------+
//! ```
//!
//! The view is over the whole segment (the IPv4 payload). `check_len`: 20 bytes
//! (`Truncated`), data offset ≥ 5 (`Invalid "data_offset"`), header within the buffer
//! (`Truncated`). A checked view never panics.

use std::fmt;
use std::net::Ipv4Addr;

use super::checksum;
use super::{get_u16, get_u32, need, set_u16, set_u32, Error, IpProtocol, Layer, Result};

mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const SEQ_NUM: usize = 4;
    pub const ACK_NUM: usize = 8;
    pub const DOFF: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WIN_SIZE: usize = 14;
    pub const CHECKSUM: usize = 16;
    pub const URGENT: usize = 18;
    pub const OPTIONS: usize = 20;
}

/// Length of a header without options.
pub const HEADER_LEN: usize = field::OPTIONS;

/// The TCP flag bits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    /// No more data.
    pub const FIN: TcpFlags = TcpFlags(0x01);
    /// Synchronize sequence numbers.
    pub const SYN: TcpFlags = TcpFlags(0x02);
    /// Reset.
    pub const RST: TcpFlags = TcpFlags(0x04);
    /// Push.
    pub const PSH: TcpFlags = TcpFlags(0x08);
    /// Acknowledgment field significant.
    pub const ACK: TcpFlags = TcpFlags(0x10);
    /// Urgent pointer significant.
    pub const URG: TcpFlags = TcpFlags(0x20);
    /// ECN echo.
    pub const ECE: TcpFlags = TcpFlags(0x40);
    /// Congestion window reduced.
    pub const CWR: TcpFlags = TcpFlags(0x80);

    /// True when every bit of `other` is set.
    #[inline]
    pub fn contains(self, other: TcpFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for TcpFlags {
    type Output = TcpFlags;
    fn bitor(self, rhs: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 | rhs.0)
    }
}

impl fmt::Debug for TcpFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NAMES: [&str; 8] = ["FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR"];
        let set: Vec<&str> = (0..8).filter(|i| self.0 & (1 << i) != 0).map(|i| NAMES[i]).collect();
        write!(f, "[{}]", set.join("|"))
    }
}

/// A view over a TCP segment.
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

    /// Validates the data offset against the buffer.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        let b = self.buffer.as_ref();
        need(Layer::Tcp, b, HEADER_LEN)?;
        let hl = usize::from(self.header_len());
        if hl < HEADER_LEN {
            return Err(Error::Invalid {
                layer: Layer::Tcp,
                field: "data_offset",
                value: (hl / 4) as u32,
            });
        }
        need(Layer::Tcp, b, hl)
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

    /// Sequence number.
    #[inline]
    pub fn seq_number(&self) -> u32 {
        get_u32(self.buffer.as_ref(), field::SEQ_NUM)
    }

    /// Acknowledgment number.
    #[inline]
    pub fn ack_number(&self) -> u32 {
        get_u32(self.buffer.as_ref(), field::ACK_NUM)
    }

    /// Header length in bytes (data offset × 4).
    #[inline]
    pub fn header_len(&self) -> u8 {
        (self.buffer.as_ref()[field::DOFF] >> 4) * 4
    }

    /// The four bits between the data offset and the flags: reserved, and AccECN's AE flag in
    /// the lowest one. Zero in a segment that uses neither.
    #[inline]
    pub fn reserved_bits(&self) -> u8 {
        self.buffer.as_ref()[field::DOFF] & 0x0f
    }

    /// Flags.
    #[inline]
    pub fn flags(&self) -> TcpFlags {
        TcpFlags(self.buffer.as_ref()[field::FLAGS])
    }

    /// SYN set.
    #[inline]
    pub fn syn(&self) -> bool {
        self.flags().contains(TcpFlags::SYN)
    }

    /// ACK set.
    #[inline]
    pub fn ack(&self) -> bool {
        self.flags().contains(TcpFlags::ACK)
    }

    /// FIN set.
    #[inline]
    pub fn fin(&self) -> bool {
        self.flags().contains(TcpFlags::FIN)
    }

    /// RST set.
    #[inline]
    pub fn rst(&self) -> bool {
        self.flags().contains(TcpFlags::RST)
    }

    /// Window.
    #[inline]
    pub fn window_len(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::WIN_SIZE)
    }

    /// Checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Urgent pointer.
    #[inline]
    pub fn urgent_at(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::URGENT)
    }

    /// Options.
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[field::OPTIONS..usize::from(self.header_len())]
    }

    /// The payload (everything after the header).
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[usize::from(self.header_len())..]
    }

    /// True when the checksum (with the IPv4 pseudo-header) is correct.
    pub fn verify_checksum(&self, src: &Ipv4Addr, dst: &Ipv4Addr) -> bool {
        let b = self.buffer.as_ref();
        let s = checksum::add(
            checksum::pseudo_header_v4(src, dst, IpProtocol::Tcp, b.len() as u16),
            checksum::sum(b),
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

    /// Sets the sequence number.
    pub fn set_seq_number(&mut self, v: u32) {
        set_u32(self.buffer.as_mut(), field::SEQ_NUM, v);
    }

    /// Sets the acknowledgment number.
    pub fn set_ack_number(&mut self, v: u32) {
        set_u32(self.buffer.as_mut(), field::ACK_NUM, v);
    }

    /// Sets the header length in bytes (a multiple of 4).
    pub fn set_header_len(&mut self, len: u8) {
        self.buffer.as_mut()[field::DOFF] = (len / 4) << 4;
    }

    /// Sets the flags.
    pub fn set_flags(&mut self, f: TcpFlags) {
        self.buffer.as_mut()[field::FLAGS] = f.0;
    }

    /// Sets the window.
    pub fn set_window_len(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), field::WIN_SIZE, v);
    }

    /// Sets the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), field::CHECKSUM, v);
    }

    /// Sets the urgent pointer.
    pub fn set_urgent_at(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), field::URGENT, v);
    }

    /// The payload, writable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let hl = usize::from(self.header_len());
        &mut self.buffer.as_mut()[hl..]
    }

    /// Computes and writes the checksum with the IPv4 pseudo-header.
    pub fn fill_checksum(&mut self, src: &Ipv4Addr, dst: &Ipv4Addr) {
        self.set_checksum(0);
        let b = self.buffer.as_ref();
        let s = checksum::add(
            checksum::pseudo_header_v4(src, dst, IpProtocol::Tcp, b.len() as u16),
            checksum::sum(b),
        );
        self.set_checksum(checksum::finish(s));
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const SRC: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const DST: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

    #[test]
    fn construct_parse_and_flags() {
        let mut b = [0u8; 24 + 3];
        let mut p = Packet::new_unchecked(&mut b[..]);
        p.set_src_port(40000);
        p.set_dst_port(443);
        p.set_seq_number(0x01020304);
        p.set_ack_number(7);
        p.set_header_len(24);
        p.set_flags(TcpFlags::SYN | TcpFlags::ACK);
        p.set_window_len(65535);
        p.payload_mut().copy_from_slice(b"abc");
        p.fill_checksum(&SRC, &DST);
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(
            (p.src_port(), p.dst_port(), p.seq_number(), p.ack_number()),
            (40000, 443, 0x01020304, 7)
        );
        assert!(p.syn() && p.ack() && !p.fin() && !p.rst());
        assert_eq!(format!("{:?}", p.flags()), "[SYN|ACK]");
        assert_eq!(p.options().len(), 4);
        assert_eq!(p.reserved_bits(), 0);
        assert_eq!(p.payload(), b"abc");
        assert!(p.verify_checksum(&SRC, &DST));
        let mut bad = b;
        bad[12] = 0x40;
        assert!(matches!(
            Packet::new_checked(&bad[..]),
            Err(Error::Invalid { field: "data_offset", value: 4, .. })
        ));
        bad[12] = 0xf0;
        assert!(matches!(Packet::new_checked(&bad[..]), Err(Error::Truncated { needed: 60, .. })));
        let mut ae = b;
        ae[12] |= 0x01;
        let p = Packet::new_checked(&ae[..]).unwrap();
        assert_eq!((p.reserved_bits(), p.header_len()), (0x01, 24));
    }

    #[test]
    fn agrees_with_etherparse() {
        let mut v = Vec::new();
        etherparse::PacketBuilder::ipv4(SRC.octets(), DST.octets(), 64)
            .tcp(5000, 80, 99, 1024)
            .syn()
            .write(&mut v, b"GET")
            .unwrap();
        let p = Packet::new_checked(&v[20..]).unwrap();
        assert_eq!(
            (p.src_port(), p.dst_port(), p.seq_number(), p.window_len()),
            (5000, 80, 99, 1024)
        );
        assert!(p.syn() && !p.ack());
        assert_eq!(p.payload(), b"GET");
        assert!(p.verify_checksum(&SRC, &DST));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..80)) {
            if let Ok(p) = Packet::new_checked(&data[..]) {
                let _ = (p.src_port(), p.dst_port(), p.seq_number(), p.ack_number(), p.flags(), p.reserved_bits(),
                    p.window_len(), p.urgent_at(), p.options(), p.payload(), p.verify_checksum(&SRC, &DST));
            }
        }

        #[test]
        fn nat_style_update_matches_recompute(payload in proptest::collection::vec(any::<u8>(), 0..64), new_src in any::<u32>(), new_port in any::<u16>()) {
            let mut b = vec![0u8; HEADER_LEN + payload.len()];
            let mut p = Packet::new_unchecked(&mut b[..]);
            p.set_src_port(1234);
            p.set_dst_port(80);
            p.set_header_len(20);
            p.payload_mut().copy_from_slice(&payload);
            p.fill_checksum(&SRC, &DST);
            let new_src = Ipv4Addr::from(new_src);
            let c = checksum::update_addr(p.checksum(), &SRC, &new_src);
            let c = checksum::update16(c, 1234, new_port);
            p.set_src_port(new_port);
            p.set_checksum(c);
            prop_assert!(p.verify_checksum(&new_src, &DST));
        }
    }
}
