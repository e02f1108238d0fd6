//! The port pair that TCP and UDP headers both start with.
//!
//! ```text
//! +-----------------+-----------------+
//! |  source port    | destination port|   ... rest of the TCP or UDP header
//! +-----------------+-----------------+
//! ```
//!
//! For the places that have the ports and not necessarily a whole header: the 8 bytes of a
//! transport header quoted in an ICMP error (a TCP header is cut short there, a UDP length
//! field speaks of the original datagram), or a first fragment. `check_len`: 4 bytes
//! (`Truncated`). A checked view never panics.

use super::{get_u16, need, set_u16, Layer, Result};

mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const END: usize = 4;
}

/// Length of the port pair.
pub const LEN: usize = field::END;

/// A view over the port pair at the start of a TCP or UDP header.
#[derive(Debug, Clone)]
pub struct Ports<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ports<T> {
    /// A view without checks; accessors panic below 4 bytes.
    #[inline]
    pub fn new_unchecked(buffer: T) -> Ports<T> {
        Ports { buffer }
    }

    /// A view over at least [`LEN`] bytes.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Ports<T>> {
        let p = Ports::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Checks the length. The bytes do not say whether they are TCP or UDP; the error names
    /// `Layer::Tcp` for both.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        need(Layer::Tcp, self.buffer.as_ref(), LEN)
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Source port.
    #[inline(always)]
    pub fn src_port(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::SRC_PORT)
    }

    /// Destination port.
    #[inline(always)]
    pub fn dst_port(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::DST_PORT)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ports<T> {
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
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::wire::{Error, TcpPacket, UdpPacket};

    #[test]
    fn reads_the_ports_of_tcp_and_udp_headers() {
        let mut v = Vec::new();
        etherparse::PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .udp(5353, 53)
            .write(&mut v, b"q")
            .unwrap();
        let udp = UdpPacket::new_checked(&v[20..]).unwrap();
        let p = Ports::new_checked(&v[20..]).unwrap();
        assert_eq!((p.src_port(), p.dst_port()), (udp.src_port(), udp.dst_port()));
        let mut t = Vec::new();
        etherparse::PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(40000, 443, 1, 2)
            .write(&mut t, b"")
            .unwrap();
        let tcp = TcpPacket::new_checked(&t[20..]).unwrap();
        // A quoted TCP header is 8 bytes: too short for the TCP view, enough for this one.
        let quoted = &t[20..28];
        assert!(TcpPacket::new_checked(quoted).is_err());
        let p = Ports::new_checked(quoted).unwrap();
        assert_eq!((p.src_port(), p.dst_port()), (tcp.src_port(), tcp.dst_port()));
    }

    #[test]
    fn setters_write_big_endian_and_short_buffers_are_errors() {
        let mut b = [0u8; 8];
        let mut p = Ports::new_checked(&mut b[..]).unwrap();
        p.set_src_port(0x1234);
        p.set_dst_port(0xabcd);
        assert_eq!(b, [0x12, 0x34, 0xab, 0xcd, 0, 0, 0, 0]);
        assert_eq!(
            Ports::new_checked(&b[..3]).unwrap_err(),
            Error::Truncated { layer: Layer::Tcp, needed: 4, got: 3 }
        );
        assert!(Ports::new_unchecked(&b[..1]).check_len().is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..10)) {
            match Ports::new_checked(&data[..]) {
                Ok(p) => {
                    prop_assert!(data.len() >= LEN);
                    let _ = (p.src_port(), p.dst_port());
                    let mut copy = data.clone();
                    let mut m = Ports::new_checked(&mut copy[..]).unwrap();
                    m.set_src_port(1);
                    m.set_dst_port(2);
                }
                Err(_) => prop_assert!(data.len() < LEN),
            }
        }
    }
}
