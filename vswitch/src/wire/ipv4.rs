//! IPv4 (RFC 791).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Version|  IHL  |  DSCP     |ECN|          Total Length         |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |         Identification        |Flags|      Fragment Offset    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  Time to Live |    Protocol   |         Header Checksum       |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                       Source Address                          |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                    Destination Address                        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                    Options (IHL > 5)                          |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! `check_len` validates, in order: at least 20 bytes (`Truncated`), version 4
//! (`Invalid "version"`), IHL ≥ 5 (`Invalid "ihl"`), header within the buffer (`Truncated`),
//! header ≤ total length ≤ buffer (`Invalid "total_len"`). Bytes past the total length are
//! Ethernet padding and not part of `payload()`. After it succeeds no accessor panics.
//!
//! [`Quoted`] is the view over the header an ICMP error quotes: the same header checks, no
//! total-length check (the quote is cut short on purpose), and the quoted ports present.

use std::net::Ipv4Addr;

use super::checksum;
use super::{enum_with_unknown, get_u16, need, set_u16, Error, Layer, Result};

enum_with_unknown! {
    /// IP protocol numbers.
    pub enum IpProtocol(u8) {
        /// ICMP.
        Icmp = 1,
        /// TCP.
        Tcp = 6,
        /// UDP.
        Udp = 17,
    }
}

mod field {
    pub const VER_IHL: usize = 0;
    pub const DSCP_ECN: usize = 1;
    pub const LENGTH: usize = 2;
    pub const IDENT: usize = 4;
    pub const FLG_OFF: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC_ADDR: usize = 12;
    pub const DST_ADDR: usize = 16;
    pub const OPTIONS: usize = 20;
}

/// Length of a header without options.
pub const HEADER_LEN: usize = field::OPTIONS;

const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;

/// A view over an IPv4 packet.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

#[inline(always)]
fn addr_at(b: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3])
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// A view without checks.
    #[inline]
    pub fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// A view whose length fields agree with the buffer (see the module doc).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Packet<T>> {
        let p = Packet::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Validates version and length fields against the buffer.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        let b = self.buffer.as_ref();
        let hl = self.check_header()?;
        let total = usize::from(self.total_len());
        if total < hl || total > b.len() {
            return Err(Error::Invalid {
                layer: Layer::Ipv4,
                field: "total_len",
                value: total as u32,
            });
        }
        Ok(())
    }

    /// Validates version and IHL, and that the whole header is in the buffer: its length.
    #[inline]
    fn check_header(&self) -> Result<usize> {
        let b = self.buffer.as_ref();
        need(Layer::Ipv4, b, HEADER_LEN)?;
        if self.version() != 4 {
            return Err(Error::Invalid {
                layer: Layer::Ipv4,
                field: "version",
                value: u32::from(self.version()),
            });
        }
        let hl = usize::from(self.header_len());
        if hl < HEADER_LEN {
            return Err(Error::Invalid {
                layer: Layer::Ipv4,
                field: "ihl",
                value: (hl / 4) as u32,
            });
        }
        need(Layer::Ipv4, b, hl)?;
        Ok(hl)
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Version field.
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// Header length in bytes (IHL × 4).
    #[inline]
    pub fn header_len(&self) -> u8 {
        (self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    /// DSCP.
    #[inline]
    pub fn dscp(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN] >> 2
    }

    /// ECN.
    #[inline]
    pub fn ecn(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN] & 0x03
    }

    /// Total length (header and payload).
    #[inline]
    pub fn total_len(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::LENGTH)
    }

    /// Identification.
    #[inline]
    pub fn ident(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::IDENT)
    }

    /// Don't fragment.
    #[inline]
    pub fn dont_frag(&self) -> bool {
        get_u16(self.buffer.as_ref(), field::FLG_OFF) & FLAG_DF != 0
    }

    /// More fragments.
    #[inline]
    pub fn more_frags(&self) -> bool {
        get_u16(self.buffer.as_ref(), field::FLG_OFF) & FLAG_MF != 0
    }

    /// Fragment offset in bytes.
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        (get_u16(self.buffer.as_ref(), field::FLG_OFF) & 0x1fff) << 3
    }

    /// Time to live.
    #[inline]
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    /// Protocol of the payload.
    #[inline]
    pub fn next_header(&self) -> IpProtocol {
        IpProtocol::from(self.buffer.as_ref()[field::PROTOCOL])
    }

    /// Header checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Source address.
    #[inline]
    pub fn src_addr(&self) -> Ipv4Addr {
        addr_at(self.buffer.as_ref(), field::SRC_ADDR)
    }

    /// Destination address.
    #[inline]
    pub fn dst_addr(&self) -> Ipv4Addr {
        addr_at(self.buffer.as_ref(), field::DST_ADDR)
    }

    /// Options (empty when IHL is 5).
    #[inline]
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[field::OPTIONS..usize::from(self.header_len())]
    }

    /// The payload: from the end of the header to the total length.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[usize::from(self.header_len())..usize::from(self.total_len())]
    }

    /// True when the header checksum is correct.
    pub fn verify_checksum(&self) -> bool {
        checksum::checksum(&self.buffer.as_ref()[..usize::from(self.header_len())]) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets version 4 and the header length in bytes (a multiple of 4).
    pub fn set_version_and_header_len(&mut self, header_len: u8) {
        self.buffer.as_mut()[field::VER_IHL] = 0x40 | ((header_len / 4) & 0x0f);
    }

    /// Sets DSCP and ECN.
    pub fn set_dscp_ecn(&mut self, dscp: u8, ecn: u8) {
        self.buffer.as_mut()[field::DSCP_ECN] = (dscp << 2) | (ecn & 0x03);
    }

    /// Sets the total length.
    #[inline]
    pub fn set_total_len(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), field::LENGTH, v);
    }

    /// Sets the identification.
    pub fn set_ident(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), field::IDENT, v);
    }

    /// Sets or clears don't-fragment.
    pub fn set_dont_frag(&mut self, df: bool) {
        let b = self.buffer.as_mut();
        let v = get_u16(b, field::FLG_OFF);
        set_u16(b, field::FLG_OFF, if df { v | FLAG_DF } else { v & !FLAG_DF });
    }

    /// Sets more-fragments and the fragment offset (bytes, multiple of 8).
    pub fn set_frag(&mut self, more: bool, offset: u16) {
        let b = self.buffer.as_mut();
        let df = get_u16(b, field::FLG_OFF) & FLAG_DF;
        set_u16(b, field::FLG_OFF, df | if more { FLAG_MF } else { 0 } | ((offset >> 3) & 0x1fff));
    }

    /// Sets the time to live.
    #[inline]
    pub fn set_hop_limit(&mut self, v: u8) {
        self.buffer.as_mut()[field::TTL] = v;
    }

    /// Sets the protocol.
    #[inline]
    pub fn set_next_header(&mut self, p: IpProtocol) {
        self.buffer.as_mut()[field::PROTOCOL] = p.into();
    }

    /// Sets the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), field::CHECKSUM, v);
    }

    /// Sets the source address.
    #[inline]
    pub fn set_src_addr(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC_ADDR..field::SRC_ADDR + 4].copy_from_slice(&a.octets());
    }

    /// Sets the destination address.
    #[inline]
    pub fn set_dst_addr(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::DST_ADDR..field::DST_ADDR + 4].copy_from_slice(&a.octets());
    }

    /// Computes and writes the header checksum.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let hl = usize::from(self.header_len());
        let c = checksum::checksum(&self.buffer.as_ref()[..hl]);
        self.set_checksum(c);
    }

    /// The payload, writable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (hl, total) = (usize::from(self.header_len()), usize::from(self.total_len()));
        &mut self.buffer.as_mut()[hl..total]
    }
}

/// Bytes of the original datagram an ICMP error quotes after its IPv4 header (RFC 792): in
/// TCP and UDP, the port pair and the next four bytes.
pub const QUOTED_L4_LEN: usize = 8;

/// A view over the IPv4 header an ICMP error quotes, followed by (at least) the first
/// [`QUOTED_L4_LEN`] bytes of the datagram's payload.
///
/// `new_checked` validates the header as [`Packet::check_len`] does (version, IHL, the header
/// within the buffer) but not the total length, which speaks of the original datagram, not of
/// the quote; then that the first [`QUOTED_L4_LEN`] payload bytes are there. After it succeeds
/// no accessor panics. The quoted datagram's transport ports are the first four payload bytes
/// (TCP and UDP alike).
#[derive(Debug, Clone)]
pub struct Quoted<T: AsRef<[u8]>> {
    inner: Packet<T>,
    header_len: usize,
}

impl<T: AsRef<[u8]>> Quoted<T> {
    /// A checked view over an ICMP error's data.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Quoted<T>> {
        let inner = Packet::new_unchecked(buffer);
        let header_len = inner.check_header()?;
        need(Layer::Ipv4, inner.buffer.as_ref(), header_len + QUOTED_L4_LEN)?;
        Ok(Quoted { inner, header_len })
    }

    /// Header length in bytes.
    #[inline]
    pub fn header_len(&self) -> usize {
        self.header_len
    }

    /// Protocol of the quoted datagram.
    #[inline]
    pub fn next_header(&self) -> IpProtocol {
        self.inner.next_header()
    }

    /// Header checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        self.inner.checksum()
    }

    /// Source address of the quoted datagram.
    #[inline]
    pub fn src_addr(&self) -> Ipv4Addr {
        self.inner.src_addr()
    }

    /// Destination address of the quoted datagram.
    #[inline]
    pub fn dst_addr(&self) -> Ipv4Addr {
        self.inner.dst_addr()
    }

    /// The first two payload bytes: a TCP or UDP source port.
    #[inline]
    pub fn src_port(&self) -> u16 {
        get_u16(self.inner.buffer.as_ref(), self.header_len)
    }

    /// Payload bytes 2-3: a TCP or UDP destination port.
    #[inline]
    pub fn dst_port(&self) -> u16 {
        get_u16(self.inner.buffer.as_ref(), self.header_len + 2)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Quoted<T> {
    /// Sets the header checksum field.
    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        self.inner.set_checksum(v);
    }

    /// Sets the quoted source address.
    #[inline]
    pub fn set_src_addr(&mut self, a: Ipv4Addr) {
        self.inner.set_src_addr(a);
    }

    /// Sets the quoted destination address.
    #[inline]
    pub fn set_dst_addr(&mut self, a: Ipv4Addr) {
        self.inner.set_dst_addr(a);
    }

    /// Sets the quoted TCP or UDP source port.
    #[inline]
    pub fn set_src_port(&mut self, v: u16) {
        set_u16(self.inner.buffer.as_mut(), self.header_len, v);
    }

    /// Sets the quoted TCP or UDP destination port.
    #[inline]
    pub fn set_dst_port(&mut self, v: u16) {
        set_u16(self.inner.buffer.as_mut(), self.header_len + 2, v);
    }
}

/// An IPv4 header without options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// Source address.
    pub src_addr: Ipv4Addr,
    /// Destination address.
    pub dst_addr: Ipv4Addr,
    /// Payload protocol.
    pub next_header: IpProtocol,
    /// Payload length in bytes.
    pub payload_len: usize,
    /// Time to live.
    pub hop_limit: u8,
}

impl Repr {
    /// Parses a checked packet; a wrong header checksum is `Invalid "checksum"`.
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Repr> {
        p.check_len()?;
        if !p.verify_checksum() {
            return Err(Error::Invalid {
                layer: Layer::Ipv4,
                field: "checksum",
                value: u32::from(p.checksum()),
            });
        }
        Ok(Repr {
            src_addr: p.src_addr(),
            dst_addr: p.dst_addr(),
            next_header: p.next_header(),
            payload_len: p.payload().len(),
            hop_limit: p.hop_limit(),
        })
    }

    /// Header length [`Repr::emit`] writes.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes a 20-byte header (DF set, identification 0) with its checksum.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>) {
        p.set_version_and_header_len(HEADER_LEN as u8);
        p.set_dscp_ecn(0, 0);
        p.set_total_len((HEADER_LEN + self.payload_len) as u16);
        p.set_ident(0);
        p.set_frag(false, 0);
        p.set_dont_frag(true);
        p.set_hop_limit(self.hop_limit);
        p.set_next_header(self.next_header);
        p.set_src_addr(self.src_addr);
        p.set_dst_addr(self.dst_addr);
        p.fill_checksum();
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    // 192.168.0.1 -> 192.168.0.199 UDP, total length 0x73, checksum b861 (a real header).
    const HEADER: [u8; 20] = [
        0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8, 0x00,
        0x01, 0xc0, 0xa8, 0x00, 0xc7,
    ];

    fn packet() -> Vec<u8> {
        let mut v = HEADER.to_vec();
        v.resize(0x73, 0xee);
        v
    }

    #[test]
    fn quoted_header_is_read_without_its_total_length() {
        // What an ICMP error quotes: the header and 8 bytes, total length 0x73 far past it.
        let mut q = HEADER.to_vec();
        q.extend_from_slice(&[0x13, 0x88, 0x00, 0x35, 0, 0, 0, 0]);
        assert!(Packet::new_checked(&q[..]).is_err(), "a quote is not a whole packet");
        let v = Quoted::new_checked(&q[..]).unwrap();
        assert_eq!((v.src_port(), v.dst_port()), (5000, 53));
        assert_eq!(v.dst_addr(), Ipv4Addr::new(192, 168, 0, 199));
        assert_eq!(v.next_header(), IpProtocol::Udp);
        let mut q2 = q.clone();
        let mut w = Quoted::new_checked(&mut q2[..]).unwrap();
        w.set_dst_port(8080);
        w.set_src_addr(Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(&q2[20..24], &[0x13, 0x88, 0x1f, 0x90]);
        assert_eq!(&q2[12..16], &[10, 0, 0, 1]);
    }

    #[test]
    fn quoted_header_refuses_short_ihl_and_cut_quotes() {
        let mut q = HEADER.to_vec();
        q.extend_from_slice(&[0; 8]);
        for ihl in 0..5u8 {
            q[0] = 0x40 | ihl;
            assert!(Quoted::new_checked(&q[..]).is_err(), "ihl {ihl}");
        }
        q[0] = 0x46; // a 24-byte header leaves only 4 of the 8 quoted payload bytes
        assert!(Quoted::new_checked(&q[..]).is_err());
        q[0] = 0x45;
        for cut in 0..q.len() {
            assert!(Quoted::new_checked(&q[..cut]).is_err(), "cut at {cut}");
        }
        assert!(Quoted::new_checked(&q[..]).is_ok());
    }

    proptest! {
        #[test]
        fn quoted_view_never_panics(b in proptest::collection::vec(any::<u8>(), 0..80)) {
            if let Ok(v) = Quoted::new_checked(&b[..]) {
                let _ = (v.src_addr(), v.dst_addr(), v.src_port(), v.dst_port(), v.checksum());
                let mut c = b.clone();
                let mut w = Quoted::new_checked(&mut c[..]).unwrap();
                w.set_src_port(1);
                w.set_dst_port(2);
                w.set_checksum(3);
            }
        }
    }

    #[test]
    fn parse_known_header() {
        let b = packet();
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.version(), 4);
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.total_len(), 0x73);
        assert!(p.dont_frag());
        assert!(!p.more_frags());
        assert_eq!(p.frag_offset(), 0);
        assert_eq!(p.hop_limit(), 64);
        assert_eq!(p.next_header(), IpProtocol::Udp);
        assert_eq!(p.src_addr(), Ipv4Addr::new(192, 168, 0, 1));
        assert_eq!(p.dst_addr(), Ipv4Addr::new(192, 168, 0, 199));
        assert!(p.verify_checksum());
        assert_eq!(p.payload().len(), 0x73 - 20);
        let r = Repr::parse(&p).unwrap();
        let mut out = [0u8; 0x73];
        r.emit(&mut Packet::new_unchecked(&mut out[..]));
        assert_eq!(&out[..20], &HEADER[..]);
    }

    #[test]
    fn check_len_names_each_problem() {
        let b = packet();
        let err = |b: &[u8]| Packet::new_checked(b).unwrap_err();
        assert_eq!(err(&b[..19]), Error::Truncated { layer: Layer::Ipv4, needed: 20, got: 19 });
        let mut v = b.clone();
        v[0] = 0x65;
        assert!(matches!(err(&v), Error::Invalid { field: "version", value: 6, .. }));
        v[0] = 0x44;
        assert!(matches!(err(&v), Error::Invalid { field: "ihl", value: 4, .. }));
        v[0] = 0x4f;
        assert_eq!(err(&v[..40]), Error::Truncated { layer: Layer::Ipv4, needed: 60, got: 40 });
        let mut v = b.clone();
        v[2..4].copy_from_slice(&200u16.to_be_bytes());
        assert!(matches!(err(&v), Error::Invalid { field: "total_len", value: 200, .. }));
        v[2..4].copy_from_slice(&19u16.to_be_bytes());
        assert!(matches!(err(&v), Error::Invalid { field: "total_len", value: 19, .. }));
        // Padding after the total length is fine and not payload.
        let mut padded = b.clone();
        padded.extend_from_slice(&[0; 10]);
        assert_eq!(Packet::new_checked(&padded[..]).unwrap().payload().len(), 0x73 - 20);
        let mut bad = b.clone();
        bad[10] ^= 1;
        assert!(matches!(
            Repr::parse(&Packet::new_unchecked(&bad[..])),
            Err(Error::Invalid { field: "checksum", .. })
        ));
    }

    #[test]
    fn agrees_with_etherparse() {
        let mut v = Vec::new();
        etherparse::PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 33)
            .tcp(1, 2, 3, 4)
            .write(&mut v, b"abc")
            .unwrap();
        let p = Packet::new_checked(&v[..]).unwrap();
        assert_eq!(p.src_addr(), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(p.dst_addr(), Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(p.hop_limit(), 33);
        assert_eq!(p.next_header(), IpProtocol::Tcp);
        assert!(p.verify_checksum());
        assert_eq!(p.payload().len(), 20 + 3);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..100)) {
            if let Ok(p) = Packet::new_checked(&data[..]) {
                let _ = (p.version(), p.dscp(), p.ecn(), p.ident(), p.dont_frag(), p.more_frags(),
                    p.frag_offset(), p.hop_limit(), p.next_header(), p.src_addr(), p.dst_addr(),
                    p.options(), p.payload(), p.verify_checksum(), Repr::parse(&p));
                let mut copy = data.clone();
                let mut m = Packet::new_unchecked(&mut copy[..]);
                m.fill_checksum();
                let _ = m.payload_mut();
                prop_assert!(m.verify_checksum());
            }
        }

        #[test]
        fn truncations_are_errors(cut in 0usize..0x73) {
            let b = packet();
            prop_assert!(Packet::new_checked(&b[..cut]).is_err());
        }

        #[test]
        fn round_trip(src in any::<u32>(), dst in any::<u32>(), proto in any::<u8>(), len in 0usize..100, ttl in any::<u8>()) {
            let r = Repr { src_addr: src.into(), dst_addr: dst.into(), next_header: proto.into(), payload_len: len, hop_limit: ttl };
            let mut buf = vec![0u8; r.buffer_len() + len];
            r.emit(&mut Packet::new_unchecked(&mut buf[..]));
            prop_assert_eq!(Repr::parse(&Packet::new_checked(&buf[..]).unwrap()).unwrap(), r);
        }
    }
}
