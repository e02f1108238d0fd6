//! Argument checks shared by the link, address and route operations: an index, prefix
//! length or route destination the kernel would refuse (or misread) is refused here with an
//! `InvalidInput` error naming it, before any request is sent.

use std::io;
use std::net::Ipv4Addr;

pub(super) fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

pub(super) fn check_index(index: u32) -> io::Result<()> {
    // The kernel's ifindex is a positive `int`.
    if index == 0 || index > i32::MAX as u32 {
        return Err(invalid(format!("invalid ifindex {index}: must be 1..={}", i32::MAX)));
    }
    Ok(())
}

pub(super) fn check_prefix_len(addr: Ipv4Addr, prefix_len: u8) -> io::Result<()> {
    if prefix_len > 32 {
        return Err(invalid(format!(
            "invalid prefix_len {prefix_len} for {addr}: must be at most 32"
        )));
    }
    Ok(())
}

pub(super) fn check_route_dst(dst: Ipv4Addr, prefix_len: u8) -> io::Result<()> {
    check_prefix_len(dst, prefix_len)?;
    if u32::from(dst) & !prefix_mask(prefix_len) != 0 {
        return Err(invalid(format!(
            "invalid route dst {dst}/{prefix_len}: host bits set beyond the prefix"
        )));
    }
    Ok(())
}

/// The netmask of a prefix length (at most 32), as a host-order integer.
pub(super) fn prefix_mask(prefix_len: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix_len.min(32))).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_masks() {
        assert_eq!(prefix_mask(0), 0);
        assert_eq!(prefix_mask(8), 0xff00_0000);
        assert_eq!(prefix_mask(32), u32::MAX);
        assert!(check_route_dst(Ipv4Addr::new(10, 0, 0, 0), 8).is_ok());
        assert!(check_route_dst(Ipv4Addr::new(10, 0, 0, 1), 8).is_err());
        assert!(check_route_dst(Ipv4Addr::new(10, 0, 0, 1), 32).is_ok());
        assert!(check_route_dst(Ipv4Addr::UNSPECIFIED, 0).is_ok());
    }
}
