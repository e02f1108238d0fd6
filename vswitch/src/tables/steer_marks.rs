//! The steering marks: which reply destinations have tracked connections, shared by every
//! worker, and the steering key they are indexed by. Raised and lowered by the connection
//! table as connections come and go, read by the steering stage (`pipeline::steer`, which
//! describes the rule) once per packet. Lives with the tables because the table writes it.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU32, Ordering};

/// Counters in [`ReplyMarks`]: a power of two, so a key's slot is a mask away.
pub const MARK_SLOTS: usize = 1 << 16;

/// Which reply destinations have tracked connections, shared by every worker.
#[derive(Debug)]
pub struct ReplyMarks {
    slots: Box<[AtomicU32]>,
}

impl Default for ReplyMarks {
    fn default() -> Self {
        ReplyMarks::new()
    }
}

impl ReplyMarks {
    /// No marks.
    pub fn new() -> ReplyMarks {
        ReplyMarks { slots: (0..MARK_SLOTS).map(|_| AtomicU32::new(0)).collect() }
    }

    /// A connection whose replies go to `key` was created.
    #[inline]
    pub fn raise(&self, key: u32) {
        self.slots[key as usize & (MARK_SLOTS - 1)].fetch_add(1, Ordering::Release);
    }

    /// A connection whose replies went to `key` is gone.
    #[inline]
    pub fn lower(&self, key: u32) {
        let slot = &self.slots[key as usize & (MARK_SLOTS - 1)];
        // Never below zero, whatever the caller's bookkeeping.
        let _ = slot.fetch_update(Ordering::Release, Ordering::Relaxed, |v| v.checked_sub(1));
    }

    /// Some connection's replies may go to `key`.
    #[inline]
    pub fn is_marked(&self, key: u32) -> bool {
        self.slots[key as usize & (MARK_SLOTS - 1)].load(Ordering::Acquire) != 0
    }
}

/// The steering key of an address and port (see the module doc).
#[inline]
pub fn key(gateway: Ipv4Addr, ip: Ipv4Addr, port: u16) -> u32 {
    if ip == gateway {
        mix(0x1_0000 | u32::from(port))
    } else {
        mix(u32::from(ip))
    }
}

#[inline]
fn mix(v: u32) -> u32 {
    // murmur3's finalizer: every input bit moves every output bit.
    let mut h = v ^ 0x9e37_79b9;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}
