//! The conntrack index: `FlowKey -> id << 1 | direction`, an open-addressing hash table
//! whose bucket a caller can compute (and prefetch) before looking up.
//!
//! Design:
//! - A power-of-two array of 8-byte slots `(hash: u32, value: u32)`; eight slots share a
//!   cache line. A slot's home is `hash & mask`; collisions probe linearly to the next
//!   slots. An empty slot has the value [`EMPTY`] (values are `id << 1 | dir` with ids
//!   below 2^30, so they never reach it).
//! - Keys are not stored: a slot whose hash matches is confirmed by the caller's `eq`
//!   closure, which compares the key against the entry the value names (the entry a lookup
//!   needs anyway). Two keys are only compared when their 32-bit hashes are equal.
//! - The hash is seeded per table (from std's random hasher keys), so which 5-tuples
//!   collide cannot be worked out in advance to build long probe runs.
//! - Removal shifts later slots of the run back into the hole (no tombstones), so probe
//!   runs stay as short as the load allows, however long the table lives.
//! - **Load**: at most half of the slots are ever used. An insertion that would pass that
//!   doubles the array first (moving slots by their stored hash, no key is rehashed); the
//!   table then allocates, which only happens while a table grows past what it reserved.
//!   Conntrack limits its entries, so the index never grows past `4 * max_entries` slots
//!   (rounded up to a power of two): it is never full, and a probe always ends at an empty
//!   slot.

/// The value of an empty slot.
pub(super) const EMPTY: u32 = u32::MAX;

/// Fewest slots of an index.
const MIN_SLOTS: usize = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
struct Slot {
    hash: u32,
    value: u32,
}

const EMPTY_SLOT: Slot = Slot { hash: 0, value: EMPTY };

/// See the module doc.
#[derive(Debug)]
pub(super) struct Index {
    slots: Vec<Slot>,
    /// `slots.len() - 1`.
    mask: usize,
    /// Slots in use.
    len: usize,
}

impl Index {
    /// An empty index with room for `keys` keys without growing.
    pub(super) fn with_capacity(keys: usize) -> Index {
        let n = keys.saturating_mul(2).max(MIN_SLOTS).next_power_of_two();
        Index { slots: vec![EMPTY_SLOT; n], mask: n - 1, len: 0 }
    }

    /// Keys present.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Slots allocated (for tests and accounting).
    #[cfg(test)]
    pub(super) fn slots(&self) -> usize {
        self.slots.len()
    }

    /// Asks the CPU to bring the home slot of `hash` into cache: a hint, no effect on
    /// results.
    #[inline]
    pub(super) fn prefetch(&self, hash: u32) {
        if let Some(s) = self.slots.get(hash as usize & self.mask) {
            crate::tables::prefetch(s);
        }
    }

    /// The value of the first slot of `hash`'s run with that hash, if any: the likely
    /// answer of [`Index::get`], for prefetching what it names. Reads one probe run.
    #[inline]
    pub(super) fn candidate(&self, hash: u32) -> Option<u32> {
        let mut pos = hash as usize & self.mask;
        loop {
            let s = *self.slots.get(pos)?;
            if s.value == EMPTY {
                return None;
            }
            if s.hash == hash {
                return Some(s.value);
            }
            pos = (pos + 1) & self.mask;
        }
    }

    /// The value stored for the key with `hash` that `eq` confirms.
    #[inline]
    pub(super) fn get(&self, hash: u32, mut eq: impl FnMut(u32) -> bool) -> Option<u32> {
        let mut pos = hash as usize & self.mask;
        loop {
            let s = *self.slots.get(pos)?;
            if s.value == EMPTY {
                return None;
            }
            if s.hash == hash && eq(s.value) {
                return Some(s.value);
            }
            pos = (pos + 1) & self.mask;
        }
    }

    /// Adds `value` under `hash`. The caller guarantees its key is not present. Doubles
    /// the array first if this would take the load past one half.
    pub(super) fn insert(&mut self, hash: u32, value: u32) {
        debug_assert_ne!(value, EMPTY);
        if (self.len + 1) * 2 > self.slots.len() {
            self.grow();
        }
        self.place(hash, value);
        self.len += 1;
    }

    fn place(&mut self, hash: u32, value: u32) {
        let mut pos = hash as usize & self.mask;
        // At most half full: an empty slot is always found.
        while let Some(s) = self.slots.get(pos) {
            if s.value == EMPTY {
                self.slots[pos] = Slot { hash, value };
                return;
            }
            pos = (pos + 1) & self.mask;
        }
    }

    fn grow(&mut self) {
        let n = self.slots.len() * 2;
        let old = std::mem::replace(&mut self.slots, vec![EMPTY_SLOT; n]);
        self.mask = n - 1;
        for s in old.into_iter().filter(|s| s.value != EMPTY) {
            self.place(s.hash, s.value);
        }
    }

    /// Removes the slot holding `value` (stored under `hash`); false if there is none.
    pub(super) fn remove(&mut self, hash: u32, value: u32) -> bool {
        let mut pos = hash as usize & self.mask;
        loop {
            let Some(s) = self.slots.get(pos).copied() else { return false };
            if s.value == EMPTY {
                return false;
            }
            if s.value == value {
                break;
            }
            pos = (pos + 1) & self.mask;
        }
        // Backward shift: move each later slot of the run whose home is not between the
        // hole and itself into the hole.
        let mask = self.mask;
        let mut hole = pos;
        let mut next = pos;
        loop {
            next = (next + 1) & mask;
            let s = self.slots[next];
            if s.value == EMPTY {
                break;
            }
            let home = s.hash as usize & mask;
            if next.wrapping_sub(home) & mask >= next.wrapping_sub(hole) & mask {
                self.slots[hole] = s;
                hole = next;
            }
        }
        self.slots[hole] = EMPTY_SLOT;
        self.len -= 1;
        true
    }

    /// The first value among the `n` slots from `hash`'s home slot on (wrapping, empty
    /// slots skipped) that `pick` accepts.
    pub(super) fn scan(
        &self,
        hash: u32,
        n: usize,
        mut pick: impl FnMut(u32) -> bool,
    ) -> Option<u32> {
        let home = hash as usize & self.mask;
        (0..n.min(self.slots.len()))
            .map(|i| self.slots[(home + i) & self.mask])
            .find(|s| s.value != EMPTY && pick(s.value))
            .map(|s| s.value)
    }

    /// Removes every key, keeping the allocation.
    pub(super) fn clear(&mut self) {
        self.slots.fill(EMPTY_SLOT);
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    /// Keys are small integers with a chosen hash (to force collisions and wrap-around);
    /// the value is the key itself, so `eq` compares values.
    #[derive(Clone, Debug)]
    enum Op {
        Insert { key: u16, hash: u32 },
        Remove { key: u16 },
        Get { key: u16 },
        Clear,
    }

    fn op(hashes: u32) -> impl Strategy<Value = Op> {
        prop_oneof![
            5 => (0u16..64, 0..hashes).prop_map(|(key, hash)| Op::Insert { key, hash }),
            3 => (0u16..64).prop_map(|key| Op::Remove { key }),
            4 => (0u16..64).prop_map(|key| Op::Get { key }),
            1 => Just(Op::Clear),
        ]
    }

    fn check(ops: Vec<Op>, spread: bool) {
        let mut ix = Index::with_capacity(1);
        let mut model: HashMap<u16, u32> = HashMap::new();
        for op in ops {
            match op {
                Op::Insert { key, hash } => {
                    // A high bit set or not, so growth splits runs.
                    let hash = if spread { hash.wrapping_mul(0x9e37_79b9) } else { hash };
                    if model.contains_key(&key) {
                        continue;
                    }
                    ix.insert(hash, u32::from(key));
                    model.insert(key, hash);
                }
                Op::Remove { key } => {
                    let hash = model.get(&key).copied().unwrap_or(0);
                    assert_eq!(ix.remove(hash, u32::from(key)), model.remove(&key).is_some());
                }
                Op::Get { key } => {
                    let hash = model.get(&key).copied();
                    let got = ix.get(hash.unwrap_or(0), |v| v == u32::from(key));
                    assert_eq!(got, hash.map(|_| u32::from(key)));
                    if let Some(h) = hash {
                        // The first candidate has the hash; with distinct hashes, it is it.
                        let c = ix.candidate(h).expect("a slot with this hash");
                        assert_eq!(model[&(c as u16)], h);
                    }
                }
                Op::Clear => {
                    ix.clear();
                    model.clear();
                }
            }
            assert_eq!(ix.len(), model.len());
            assert!(ix.len() * 2 <= ix.slots());
            for (&k, &h) in &model {
                assert_eq!(ix.get(h, |v| v == u32::from(k)), Some(u32::from(k)), "{k}");
            }
        }
    }

    proptest! {
        #[test]
        fn behaves_like_a_hash_map_with_many_collisions(ops in prop::collection::vec(op(8), 1..300)) {
            check(ops, false);
        }

        #[test]
        fn behaves_like_a_hash_map_with_spread_hashes(ops in prop::collection::vec(op(u32::MAX), 1..300)) {
            check(ops, true);
        }
    }

    #[test]
    fn grows_at_half_load_and_wraps_around() {
        let mut ix = Index::with_capacity(4);
        assert_eq!(ix.slots(), 8);
        // All at the last slot's home: the run wraps to the front.
        for v in 0..4 {
            ix.insert(7, v);
        }
        assert_eq!(ix.slots(), 8);
        ix.insert(7, 4);
        assert_eq!(ix.slots(), 16);
        for v in 0..5 {
            assert_eq!(ix.get(7, |x| x == v), Some(v));
        }
        assert!(ix.remove(7, 0));
        assert!(!ix.remove(7, 0));
        for v in 1..5 {
            assert_eq!(ix.get(7, |x| x == v), Some(v));
        }
        assert_eq!(ix.get(7, |x| x == 0), None);
        assert_eq!(ix.candidate(3), None);
    }
}
