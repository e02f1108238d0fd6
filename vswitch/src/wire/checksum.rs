//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624).
//!
//! `sum` accumulates the ones'-complement sum of big-endian 16-bit words into a `u32` that
//! callers can combine (`add`) before folding it (`fold`) and complementing it (`finish`).
//!
//! Incremental updates use RFC 1624 equation 3, `HC' = ~(~HC + ~m + m')`, not equation 2
//! (`HC' = HC - ~m - m'`): equation 2 can produce `0x0000` where a full computation gives
//! `0xFFFF`, a difference receivers that verify by recomputing do notice. Rewriting one field
//! costs three additions instead of a pass over the header (and, for TCP/UDP, the payload),
//! which is why TTL decrements and NAT rewrites use it.
//!
//! UDP over IPv4: a checksum of 0 means "not computed" and must be left at 0 by anything
//! rewriting the packet (there is nothing to update); a computed checksum that comes out as 0
//! is sent as 0xFFFF.

use std::net::Ipv4Addr;

use super::IpProtocol;

/// Partial ones'-complement sum of `data` as big-endian 16-bit words; an odd last byte is
/// padded with zero.
#[inline]
pub fn sum(data: &[u8]) -> u32 {
    // Eight bytes at a time into a u64: a u64 holds 2^32 such additions of 32-bit values
    // before it could overflow, far beyond any frame.
    let mut acc: u64 = 0;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let v = u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        acc += v >> 32;
        acc += v & 0xffff_ffff;
    }
    let mut rest = chunks.remainder();
    while rest.len() >= 2 {
        acc += u64::from(u16::from_be_bytes([rest[0], rest[1]]));
        rest = &rest[2..];
    }
    if let [last] = rest {
        acc += u64::from(*last) << 8;
    }
    // Fold 64 -> 32 bits, keeping the ones'-complement carries.
    while acc >> 32 != 0 {
        acc = (acc & 0xffff_ffff) + (acc >> 32);
    }
    acc as u32
}

/// Combines two partial sums.
#[inline]
pub fn add(a: u32, b: u32) -> u32 {
    let (s, carry) = a.overflowing_add(b);
    s + u32::from(carry)
}

/// Folds a partial sum into 16 bits (not complemented).
#[inline]
pub fn fold(mut sum: u32) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The value to write into a checksum field for a partial sum.
#[inline]
pub fn finish(sum: u32) -> u16 {
    !fold(sum)
}

/// The checksum of `data` (with the checksum field zeroed, this is the value to store; over
/// data with its checksum in place, a correct packet gives 0).
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    finish(sum(data))
}

/// Partial sum of the IPv4 pseudo-header TCP and UDP checksums cover.
#[inline]
pub fn pseudo_header_v4(src: &Ipv4Addr, dst: &Ipv4Addr, proto: IpProtocol, len: u16) -> u32 {
    let s = src.octets();
    let d = dst.octets();
    u32::from(u16::from_be_bytes([s[0], s[1]]))
        + u32::from(u16::from_be_bytes([s[2], s[3]]))
        + u32::from(u16::from_be_bytes([d[0], d[1]]))
        + u32::from(u16::from_be_bytes([d[2], d[3]]))
        + u32::from(u8::from(proto))
        + u32::from(len)
}

/// Updates checksum `csum` for a 16-bit field changing from `old` to `new` (RFC 1624 eqn. 3).
#[inline]
pub fn update16(csum: u16, old: u16, new: u16) -> u16 {
    let s = u32::from(!csum) + u32::from(!old) + u32::from(new);
    !fold(s)
}

/// Updates checksum `csum` for a 32-bit field changing from `old` to `new`.
#[inline]
pub fn update32(csum: u16, old: u32, new: u32) -> u16 {
    let s = u32::from(!csum)
        + u32::from(!(old >> 16) as u16)
        + u32::from(!(old as u16))
        + (new >> 16)
        + (new & 0xffff);
    !fold(s)
}

/// Updates checksum `csum` for an IPv4 address changing from `old` to `new`.
#[inline]
pub fn update_addr(csum: u16, old: &Ipv4Addr, new: &Ipv4Addr) -> u16 {
    update32(csum, u32::from(*old), u32::from(*new))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn naive(data: &[u8]) -> u16 {
        let mut s: u32 = 0;
        for pair in data.chunks(2) {
            let w = if pair.len() == 2 {
                u16::from_be_bytes([pair[0], pair[1]])
            } else {
                u16::from(pair[0]) << 8
            };
            s += u32::from(w);
            s = (s & 0xffff) + (s >> 16);
        }
        !(s as u16)
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: the sum of 0001 f203 f4f5 f6f7 is ddf2 (folded).
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(&data)), 0xddf2);
        assert_eq!(checksum(&data), !0xddf2);
    }

    #[test]
    fn known_ipv4_header() {
        // A real header (Wikipedia's example): checksum b861.
        let mut h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(&h), 0xb861);
        h[10..12].copy_from_slice(&0xb861u16.to_be_bytes());
        assert_eq!(checksum(&h), 0);
    }

    #[test]
    fn update_rfc1624_example() {
        // RFC 1624 §4: HC = 0xdd2f, m = 0x5555 -> m' = 0x3285 gives HC' = 0x0000.
        assert_eq!(update16(0xdd2f, 0x5555, 0x3285), 0x0000);
    }

    proptest! {
        #[test]
        fn sum_matches_naive(data in proptest::collection::vec(any::<u8>(), 0..300), skip in 0usize..8) {
            let d = &data[skip.min(data.len())..];
            prop_assert_eq!(checksum(d), naive(d));
        }

        #[test]
        fn combined_sums_match(a in proptest::collection::vec(any::<u8>(), 0..64), b in proptest::collection::vec(any::<u8>(), 0..64)) {
            // Only even-length prefixes combine word-aligned.
            let a = &a[..a.len() & !1];
            let whole: Vec<u8> = a.iter().chain(b.iter()).copied().collect();
            prop_assert_eq!(finish(add(sum(a), sum(&b))), checksum(&whole));
        }

        #[test]
        fn incremental_equals_recompute(
            mut data in proptest::collection::vec(any::<u8>(), 12..128),
            field in 0usize..4,
            new16 in any::<u16>(),
            new32 in any::<u32>(),
        ) {
            let len = data.len() & !1;
            data.truncate(len);
            // A fixed non-zero word the updates never touch keeps the sum off the degenerate
            // all-zero case, where 0x0000 and 0xFFFF are both "zero".
            data[len - 2] = 0x12;
            data[len - 1] = 0x34;
            // Slot 0..2 holds the checksum.
            data[0] = 0;
            data[1] = 0;
            let c = checksum(&data);
            data[0..2].copy_from_slice(&c.to_be_bytes());
            // A 16-bit field at an even offset past the checksum.
            let at = 2 + 2 * (field % ((len - 6) / 2));
            let old16 = u16::from_be_bytes([data[at], data[at + 1]]);
            data[at..at + 2].copy_from_slice(&new16.to_be_bytes());
            let c16 = update16(c, old16, new16);
            let mut check = data.clone();
            check[0..2].copy_from_slice(&[0, 0]);
            prop_assert_eq!(fold(sum(&check)) ^ 0xffff, c16);
            data[0..2].copy_from_slice(&c16.to_be_bytes());
            prop_assert_eq!(checksum(&data), 0);
            // Then a 32-bit field.
            let at = 2 + 2 * (field % ((len - 6) / 2)).min((len - 6) / 2 - 1);
            let old32 = u32::from_be_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]);
            data[at..at + 4].copy_from_slice(&new32.to_be_bytes());
            let c32 = update32(c16, old32, new32);
            data[0..2].copy_from_slice(&c32.to_be_bytes());
            prop_assert_eq!(checksum(&data), 0);
        }
    }
}
