//! The `bpf(2)` layer every object is made with: the system call itself ([`sys_bpf`]), the
//! command numbers, taking ownership of the fds it returns, object names as the kernel
//! accepts them, and reading an object's info. Kept apart so the `unsafe` contract of the
//! call is stated once; maps, programs and links build their own `bpf_attr` parts.

use std::io;
use std::mem::size_of;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

// --- Kernel ABI --------------------------------------------------------------------------
// One `#[repr(C)]` struct per command for the part of `union bpf_attr` it uses. The syscall
// takes the size we pass; the kernel zero-fills the rest of its (larger) union.

/// `enum bpf_cmd`.
pub(super) const BPF_MAP_CREATE: u32 = 0;
pub(super) const BPF_MAP_LOOKUP_ELEM: u32 = 1;
pub(super) const BPF_MAP_UPDATE_ELEM: u32 = 2;
pub(super) const BPF_MAP_DELETE_ELEM: u32 = 3;
pub(super) const BPF_PROG_LOAD: u32 = 5;
pub(super) const BPF_PROG_TEST_RUN: u32 = 10;
pub(super) const BPF_PROG_GET_FD_BY_ID: u32 = 13;
pub(super) const BPF_OBJ_GET_INFO_BY_FD: u32 = 15;
pub(super) const BPF_PROG_QUERY: u32 = 16;
pub(super) const BPF_LINK_CREATE: u32 = 28;

/// `BPF_XDP` in `enum bpf_attach_type`.
pub(super) const BPF_XDP: u32 = 37;
/// `BPF_OBJ_NAME_LEN`.
pub(super) const BPF_OBJ_NAME_LEN: usize = 16;

/// `union bpf_attr` for `BPF_OBJ_GET_INFO_BY_FD`.
#[repr(C)]
#[derive(Default)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// Calls `bpf(cmd, attr, sizeof attr)`.
///
/// # Safety
/// Every pointer stored in `attr` must be valid for what the kernel does with it for `cmd`
/// (reads of the stated lengths, writes of the stated lengths) for the duration of the call.
pub(super) unsafe fn sys_bpf<T>(cmd: u32, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, exclusively borrowed `T` of the size passed; pointers inside
    // it are valid per this function's contract.
    let rc = unsafe {
        libc::syscall(libc::SYS_bpf, cmd as libc::c_int, attr as *mut T, size_of::<T>() as u32)
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Takes ownership of an fd the kernel just returned.
pub(super) fn owned(fd: libc::c_long) -> OwnedFd {
    // SAFETY: `fd` is a fresh descriptor returned by bpf(2), owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(fd as RawFd) }
}

/// An object name as the kernel accepts it: at most 15 bytes of `[A-Za-z0-9_.]` (others
/// become `_`), NUL-terminated.
pub(super) fn obj_name(name: &str) -> [u8; BPF_OBJ_NAME_LEN] {
    let mut out = [0u8; BPF_OBJ_NAME_LEN];
    for (o, b) in out.iter_mut().zip(name.bytes().take(BPF_OBJ_NAME_LEN - 1)) {
        *o = if b.is_ascii_alphanumeric() || b == b'_' || b == b'.' { b } else { b'_' };
    }
    out
}

pub(super) fn context(e: io::Error, what: impl std::fmt::Display) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// Reads the head of an object's info struct (`BPF_OBJ_GET_INFO_BY_FD`); the kernel fills at
/// most `size_of::<T>()` bytes.
pub(super) fn obj_info<T>(fd: RawFd, info: &mut T) -> io::Result<()> {
    let mut attr = InfoAttr {
        bpf_fd: fd as u32,
        info_len: size_of::<T>() as u32,
        info: info as *mut T as u64,
    };
    // SAFETY: the kernel writes at most info_len bytes (the size of `*info`, which is plain
    // integer data) at `info`, which is exclusively borrowed for the call.
    unsafe { sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr) }?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_made_acceptable_to_the_kernel() {
        assert_eq!(&obj_name("xsks")[..5], b"xsks\0");
        assert_eq!(&obj_name("psx-1234.5")[..11], b"psx_1234.5\0");
        let long = obj_name("a_very_long_program_name");
        assert_eq!(&long[..15], b"a_very_long_pro");
        assert_eq!(long[15], 0);
    }
}
