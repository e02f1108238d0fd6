//! The MAC table's slot array: open addressing with linear probing over 16-byte slots, four
//! to a cache line, so that a burst can prefetch every frame's slot before looking it up.
//!
//! - A slot holds the key tagged with [`OCCUPIED`] (keys use bits 0..60; an all-zero slot is
//!   empty), the port and the two coarse timestamps (see the `clock` module).
//! - A key's home is its hash masked to the array size (a power of two); collisions probe
//!   the following slots, wrapping around at the end. The hash is the splitmix64 finalizer
//!   of the key xored with a per-table seed, so which MACs collide cannot be worked out in
//!   advance to build long probe runs.
//! - Removal shifts later slots of the run back into the hole (no tombstones), so probe runs
//!   stay as short as the load allows, however long the table lives.
//! - **Load**: at most half of the slots are used, so a probe always ends at an empty slot.
//!   An insertion that would pass that doubles the array first (every key rehashed; the only
//!   allocation after creation).

use crate::port::PortId;
use crate::tables::maglev::mix64;

use super::FdbKey;

/// The tag of an occupied slot's key.
pub(super) const OCCUPIED: u64 = 1 << 63;

/// Slots per cache line.
const PER_LINE: usize = 4;

/// Fewest slots of a table.
const MIN_SLOTS: usize = 8;

/// One entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub(super) struct Slot {
    /// `key | OCCUPIED`, or 0 when empty.
    tagged: u64,
    /// Last seen, in ticks.
    pub(super) seen: u32,
    /// The port the key was learned on.
    pub(super) port: PortId,
    /// Last announced to the other workers, as an announcement stamp.
    pub(super) announced: u16,
}

const _: () = assert!(std::mem::size_of::<Slot>() == 16);

const EMPTY: Slot = Slot { tagged: 0, seen: 0, port: PortId(0), announced: 0 };

impl Slot {
    /// An occupied slot.
    pub(super) fn new(key: FdbKey, port: PortId, seen: u32, announced: u16) -> Slot {
        Slot { tagged: key.0 | OCCUPIED, seen, port, announced }
    }

    /// The key (meaningless for an empty slot).
    pub(super) fn key(&self) -> FdbKey {
        FdbKey(self.tagged & !OCCUPIED)
    }

    #[inline]
    fn is_empty(&self) -> bool {
        self.tagged == 0
    }
}

/// Four slots on one cache line: the allocation is line-aligned, so a slot never straddles
/// two lines and a prefetch brings its neighbours along.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(64))]
struct Line([Slot; PER_LINE]);

const _: () = assert!(std::mem::size_of::<Line>() == 64);

/// What one [`Index::retain_slice`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Slice {
    /// Slots examined (a removal's position counts again when examined again).
    pub(super) examined: usize,
    /// Slots removed.
    pub(super) removed: usize,
    /// Where the next slice starts (the slot count when this one reached the end).
    pub(super) next: usize,
}

/// Where a key is, or where it would go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Probe {
    /// The slot holding the key.
    Found(usize),
    /// The empty slot that ends the key's probe run.
    Vacant(usize),
}

/// See the module doc.
#[derive(Debug)]
pub(super) struct Index {
    lines: Vec<Line>,
    /// Slots - 1.
    mask: usize,
    /// Slots in use.
    len: usize,
    seed: u64,
}

impl Index {
    /// An empty index with room for `keys` keys without growing.
    pub(super) fn with_capacity(keys: usize, seed: u64) -> Index {
        let n = keys.saturating_mul(2).max(MIN_SLOTS).next_power_of_two();
        Index { lines: vec![Line([EMPTY; PER_LINE]); n / PER_LINE], mask: n - 1, len: 0, seed }
    }

    /// Keys present.
    #[inline]
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Slots allocated.
    pub(super) fn slots(&self) -> usize {
        self.mask + 1
    }

    /// `key`'s hash in this index.
    #[inline]
    pub(super) fn hash(&self, key: FdbKey) -> u64 {
        mix64(key.0 ^ self.seed)
    }

    /// Asks the CPU to bring the home slot of `h` into cache: a hint, no effect on results.
    #[inline]
    pub(super) fn prefetch(&self, h: u64) {
        if let Some(line) = self.lines.get((h as usize & self.mask) / PER_LINE) {
            crate::tables::prefetch(line);
        }
    }

    /// The slot at `pos` (a position [`Index::find`] returned).
    #[inline]
    pub(super) fn slot(&self, pos: usize) -> Option<&Slot> {
        self.lines.get(pos / PER_LINE).map(|l| &l.0[pos % PER_LINE])
    }

    /// The slot at `pos` (a position [`Index::find`] returned), writable.
    #[inline]
    pub(super) fn slot_mut(&mut self, pos: usize) -> Option<&mut Slot> {
        self.lines.get_mut(pos / PER_LINE).map(|l| &mut l.0[pos % PER_LINE])
    }

    /// Where `key` (whose hash is `h`) is, or the empty slot where it would go.
    #[inline]
    pub(super) fn find(&self, key: FdbKey, h: u64) -> Probe {
        let tagged = key.0 | OCCUPIED;
        let mut pos = h as usize & self.mask;
        // Never more than half full: the probe ends at an empty slot.
        while let Some(s) = self.slot(pos) {
            if s.tagged == tagged {
                return Probe::Found(pos);
            }
            if s.is_empty() {
                return Probe::Vacant(pos);
            }
            pos = (pos + 1) & self.mask;
        }
        Probe::Vacant(pos)
    }

    /// Stores `slot` (for a key not present, whose hash is `h`) at `vacant`, the position
    /// [`Index::find`] returned for it. Doubles the array first if this would take the load
    /// past one half.
    pub(super) fn insert(&mut self, vacant: usize, h: u64, slot: Slot) {
        let pos = if (self.len + 1) * 2 > self.slots() {
            self.grow();
            self.vacant(h)
        } else {
            vacant
        };
        if let Some(s) = self.slot_mut(pos) {
            *s = slot;
            self.len += 1;
        }
    }

    /// The first empty slot of `h`'s probe run.
    fn vacant(&self, h: u64) -> usize {
        let mut pos = h as usize & self.mask;
        while self.slot(pos).is_some_and(|s| !s.is_empty()) {
            pos = (pos + 1) & self.mask;
        }
        pos
    }

    fn grow(&mut self) {
        let n = self.slots() * 2;
        let old = std::mem::replace(&mut self.lines, vec![Line([EMPTY; PER_LINE]); n / PER_LINE]);
        self.mask = n - 1;
        for s in old.iter().flat_map(|l| l.0.iter()).filter(|s| !s.is_empty()) {
            let pos = self.vacant(self.hash(s.key()));
            if let Some(d) = self.slot_mut(pos) {
                *d = *s;
            }
        }
    }

    /// Occupied slots, in array order.
    pub(super) fn iter(&self) -> impl Iterator<Item = &Slot> {
        self.lines.iter().flat_map(|l| l.0.iter()).filter(|s| !s.is_empty())
    }

    /// Removes every slot `keep` rejects, in place; returns how many. `keep` must give the
    /// same answer for a slot each time.
    pub(super) fn retain(&mut self, keep: impl FnMut(&Slot) -> bool) -> usize {
        self.retain_slice(0, usize::MAX, usize::MAX, keep).removed
    }

    /// [`Index::retain`] over a slice of the array: examines at most `budget` slots from
    /// `pos` on, never at `end` or past the array's end, and says where to resume. A removal's position is
    /// examined again (the backward shift may have moved a later slot of the run into it),
    /// and that counts against the budget too.
    ///
    /// A removal's backward shift moves slots not yet visited only into the hole (visited
    /// again next), and slots already visited only from the array's front to its end (a
    /// run wrapping around): slices resumed from where the last one stopped visit every slot
    /// present throughout, some twice, which `keep` allows.
    pub(super) fn retain_slice(
        &mut self,
        mut pos: usize,
        end: usize,
        budget: usize,
        mut keep: impl FnMut(&Slot) -> bool,
    ) -> Slice {
        let mut examined = 0;
        let mut removed = 0;
        let end = end.min(self.slots());
        while pos < end && examined < budget {
            examined += 1;
            match self.slot(pos) {
                Some(s) if !s.is_empty() && !keep(s) => {
                    self.remove_at(pos);
                    removed += 1;
                }
                _ => pos += 1,
            }
        }
        Slice { examined, removed, next: pos }
    }

    /// Empties the slot at `pos`, shifting back each later slot of the run whose home is
    /// not between the hole and itself.
    fn remove_at(&mut self, pos: usize) {
        let mask = self.mask;
        let mut hole = pos;
        let mut next = pos;
        loop {
            next = (next + 1) & mask;
            let Some(s) = self.slot(next).copied() else { break };
            if s.is_empty() {
                break;
            }
            let home = self.hash(s.key()) as usize & mask;
            if next.wrapping_sub(home) & mask >= next.wrapping_sub(hole) & mask {
                if let Some(h) = self.slot_mut(hole) {
                    *h = s;
                }
                hole = next;
            }
        }
        if let Some(h) = self.slot_mut(hole) {
            *h = EMPTY;
        }
        self.len -= 1;
    }

    /// Removes every key, keeping the allocation.
    pub(super) fn clear(&mut self) {
        self.lines.fill(Line([EMPTY; PER_LINE]));
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::MacAddr;

    fn key(n: u64) -> FdbKey {
        FdbKey::new(None, MacAddr::from_u64(n))
    }

    /// `count` keys whose home in `ix` is `home`.
    fn keys_at(ix: &Index, home: usize, count: usize) -> Vec<FdbKey> {
        (0..).map(key).filter(|&k| ix.hash(k) as usize & ix.mask == home).take(count).collect()
    }

    fn insert(ix: &mut Index, k: FdbKey, port: u16) {
        let h = ix.hash(k);
        match ix.find(k, h) {
            Probe::Vacant(pos) => ix.insert(pos, h, Slot::new(k, PortId(port), 0, 0)),
            Probe::Found(_) => panic!("{k:?} present"),
        }
    }

    fn port_of(ix: &Index, k: FdbKey) -> Option<u16> {
        match ix.find(k, ix.hash(k)) {
            Probe::Found(pos) => ix.slot(pos).map(|s| s.port.0),
            Probe::Vacant(_) => None,
        }
    }

    #[test]
    fn slots_are_line_aligned() {
        let ix = Index::with_capacity(100, 1);
        assert_eq!(ix.slots(), 256);
        assert_eq!(ix.lines.as_ptr() as usize % 64, 0);
    }

    #[test]
    fn runs_wrap_around_and_shift_back_on_removal() {
        let mut ix = Index::with_capacity(4, 7);
        assert_eq!(ix.slots(), 8);
        // Three keys at the last slot's home: the run wraps to the front.
        let ks = keys_at(&ix, 7, 3);
        for (i, &k) in ks.iter().enumerate() {
            insert(&mut ix, k, i as u16);
        }
        assert_eq!(ix.find(ks[2], ix.hash(ks[2])), Probe::Found(1));
        let other = keys_at(&ix, 0, 1)[0];
        insert(&mut ix, other, 9);
        assert_eq!(ix.find(other, ix.hash(other)), Probe::Found(2));
        // Removing the first shifts the wrapped ones back, over the end.
        assert_eq!(ix.retain(|s| s.key() != ks[0]), 1);
        assert_eq!(ix.find(ks[1], ix.hash(ks[1])), Probe::Found(7));
        assert_eq!(ix.find(ks[2], ix.hash(ks[2])), Probe::Found(0));
        assert_eq!(ix.find(other, ix.hash(other)), Probe::Found(1));
        assert_eq!(port_of(&ix, ks[0]), None);
        assert_eq!(ix.len(), 3);
        // Growing past half rehashes everything.
        insert(&mut ix, key(1_000_000), 5);
        insert(&mut ix, key(1_000_001), 6);
        assert_eq!(ix.slots(), 16);
        assert_eq!(port_of(&ix, ks[1]), Some(1));
        assert_eq!(port_of(&ix, ks[2]), Some(2));
        assert_eq!(port_of(&ix, other), Some(9));
        assert_eq!(port_of(&ix, key(1_000_001)), Some(6));
        assert_eq!(ix.iter().count(), 5);
        ix.clear();
        assert_eq!((ix.len(), ix.iter().count(), port_of(&ix, other)), (0, 0, None));
    }

    #[test]
    fn retain_removes_whole_runs_that_wrap() {
        let mut ix = Index::with_capacity(4, 3);
        let ks = keys_at(&ix, 6, 4);
        for &k in &ks {
            insert(&mut ix, k, 1);
        }
        assert_eq!(ix.retain(|_| false), 4);
        assert_eq!(ix.len(), 0);
        assert!(ix.iter().next().is_none());
    }

    #[test]
    fn the_zero_key_is_not_an_empty_slot() {
        let mut ix = Index::with_capacity(1, 0);
        assert_eq!(port_of(&ix, key(0)), None);
        insert(&mut ix, key(0), 3);
        assert_eq!(port_of(&ix, key(0)), Some(3));
        assert_eq!(ix.iter().next().map(Slot::key), Some(key(0)));
    }
}
