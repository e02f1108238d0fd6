//! BPF maps: [`BpfMap`] (create, update, delete, look up) and the kinds podswitch makes
//! ([`MapKind`]), with the part of `bpf_attr` the map commands use.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use super::syscall::*;

/// `enum bpf_map_type`.
const BPF_MAP_TYPE_HASH: u32 = 1;
const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_MAP_TYPE_DEVMAP: u32 = 14;
const BPF_MAP_TYPE_XSKMAP: u32 = 17;
/// `BPF_ANY`: create or replace.
const BPF_ANY: u64 = 0;

/// `union bpf_attr` for `BPF_MAP_CREATE` (up to `map_name`).
#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; BPF_OBJ_NAME_LEN],
}

/// `union bpf_attr` for `BPF_MAP_*_ELEM`.
#[repr(C)]
#[derive(Default)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// The kinds of map podswitch creates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapKind {
    /// `BPF_MAP_TYPE_HASH`.
    Hash,
    /// `BPF_MAP_TYPE_ARRAY` (key: u32 index).
    Array,
    /// `BPF_MAP_TYPE_XSKMAP` (key: u32 queue, value: u32 AF_XDP socket fd; lookups from
    /// userspace are not supported by the kernel).
    XskMap,
    /// `BPF_MAP_TYPE_DEVMAP` (key: u32, value: u32 ifindex).
    DevMap,
}

impl MapKind {
    fn raw(self) -> u32 {
        match self {
            MapKind::Hash => BPF_MAP_TYPE_HASH,
            MapKind::Array => BPF_MAP_TYPE_ARRAY,
            MapKind::XskMap => BPF_MAP_TYPE_XSKMAP,
            MapKind::DevMap => BPF_MAP_TYPE_DEVMAP,
        }
    }
}

/// A BPF map, freed when the last fd or program referring to it goes.
#[derive(Debug)]
pub struct BpfMap {
    fd: OwnedFd,
    kind: MapKind,
    key_size: u32,
    value_size: u32,
}

impl BpfMap {
    /// Creates a map. `name` is for `bpftool` listings (cut to 15 bytes).
    pub fn create(
        kind: MapKind,
        name: &str,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
    ) -> io::Result<BpfMap> {
        let mut attr = MapCreateAttr {
            map_type: kind.raw(),
            key_size,
            value_size,
            max_entries,
            map_name: obj_name(name),
            ..Default::default()
        };
        // SAFETY: MAP_CREATE reads only the attr itself, which holds no pointers.
        let fd = unsafe { sys_bpf(BPF_MAP_CREATE, &mut attr) }.map_err(|e| {
            context(e, format_args!("BPF_MAP_CREATE {kind:?} {name} ({max_entries} entries)"))
        })?;
        Ok(BpfMap { fd: owned(fd), kind, key_size, value_size })
    }

    fn check(&self, key: &[u8], value: Option<usize>) -> io::Result<()> {
        if key.len() != self.key_size as usize {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("map key is {} bytes, the map's are {}", key.len(), self.key_size),
            ));
        }
        match value {
            Some(len) if len != self.value_size as usize => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("map value is {len} bytes, the map's are {}", self.value_size),
            )),
            _ => Ok(()),
        }
    }

    /// Sets `key` to `value`, creating or replacing the entry (`BPF_ANY`).
    pub fn update(&self, key: &[u8], value: &[u8]) -> io::Result<()> {
        self.check(key, Some(value.len()))?;
        let mut attr = MapElemAttr {
            map_fd: self.fd.as_raw_fd() as u32,
            key: key.as_ptr() as u64,
            value: value.as_ptr() as u64,
            flags: BPF_ANY,
            ..Default::default()
        };
        // SAFETY: the kernel reads key_size bytes at `key` and value_size bytes at `value`;
        // both slices have exactly those lengths (checked above) and outlive the call.
        unsafe { sys_bpf(BPF_MAP_UPDATE_ELEM, &mut attr) }
            .map_err(|e| context(e, format_args!("BPF_MAP_UPDATE_ELEM on {:?} map", self.kind)))?;
        Ok(())
    }

    /// Removes `key`'s entry; `NotFound` when there is none.
    pub fn delete(&self, key: &[u8]) -> io::Result<()> {
        self.check(key, None)?;
        let mut attr = MapElemAttr {
            map_fd: self.fd.as_raw_fd() as u32,
            key: key.as_ptr() as u64,
            ..Default::default()
        };
        // SAFETY: the kernel reads key_size bytes at `key`, which has that length (checked).
        unsafe { sys_bpf(BPF_MAP_DELETE_ELEM, &mut attr) }
            .map_err(|e| context(e, format_args!("BPF_MAP_DELETE_ELEM on {:?} map", self.kind)))?;
        Ok(())
    }

    /// Reads `key`'s value into `value`; false when there is no entry.
    pub fn lookup(&self, key: &[u8], value: &mut [u8]) -> io::Result<bool> {
        self.check(key, Some(value.len()))?;
        let mut attr = MapElemAttr {
            map_fd: self.fd.as_raw_fd() as u32,
            key: key.as_ptr() as u64,
            value: value.as_mut_ptr() as u64,
            ..Default::default()
        };
        // SAFETY: the kernel reads key_size bytes at `key` and writes value_size bytes at
        // `value`; both have exactly those lengths (checked) and are borrowed for the call.
        match unsafe { sys_bpf(BPF_MAP_LOOKUP_ELEM, &mut attr) } {
            Ok(_) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(context(e, format_args!("BPF_MAP_LOOKUP_ELEM on {:?} map", self.kind))),
        }
    }

    /// The map's fd (for [`Insn::ld_map_fd`](super::Insn::ld_map_fd)).
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The map's kind.
    pub fn kind(&self) -> MapKind {
        self.kind
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::needs_root;

    #[test]
    fn maps_update_lookup_and_delete() {
        needs_root!();
        let m = BpfMap::create(MapKind::Hash, "psw_test", 4, 8, 16).unwrap();
        let mut v = [0u8; 8];
        assert!(!m.lookup(&7u32.to_ne_bytes(), &mut v).unwrap());
        m.update(&7u32.to_ne_bytes(), &42u64.to_ne_bytes()).unwrap();
        assert!(m.lookup(&7u32.to_ne_bytes(), &mut v).unwrap());
        assert_eq!(u64::from_ne_bytes(v), 42);
        m.delete(&7u32.to_ne_bytes()).unwrap();
        assert!(!m.lookup(&7u32.to_ne_bytes(), &mut v).unwrap());
        assert_eq!(m.delete(&7u32.to_ne_bytes()).unwrap_err().kind(), io::ErrorKind::NotFound);
        let e = m.update(&[0u8; 3], &[0u8; 8]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        let e = m.lookup(&[0u8; 4], &mut [0u8; 4]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        let a = BpfMap::create(MapKind::Array, "psw_arr", 4, 4, 4).unwrap();
        a.update(&3u32.to_ne_bytes(), &9u32.to_ne_bytes()).unwrap();
        let mut w = [0u8; 4];
        assert!(a.lookup(&3u32.to_ne_bytes(), &mut w).unwrap());
        assert_eq!(u32::from_ne_bytes(w), 9);
        BpfMap::create(MapKind::DevMap, "psw_dev", 4, 4, 4).unwrap();
        BpfMap::create(MapKind::XskMap, "psw_xsk", 4, 4, 4).unwrap();
    }
}
