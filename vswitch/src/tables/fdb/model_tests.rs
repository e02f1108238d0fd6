//! The table against a plain `HashMap` with `Instant`s (the previous implementation), over
//! random operations on a few keys in a small table: collisions, runs that wrap around the
//! end of the array, a full table and removals in the middle of runs all happen often.
//! Times are whole ticks and the aging time a multiple of eight ticks, where the coarse
//! timestamps are exact.

use std::collections::HashMap;

use proptest::prelude::*;

use super::*;

const TICK: Duration = Duration::from_nanos(1 << clock::MIN_TICK_SHIFT);

#[derive(Clone, Copy, Debug)]
struct Key {
    mac: u8,
    tagged: bool,
}

impl Key {
    fn key(self) -> FdbKey {
        FdbKey::new(self.tagged.then_some(7), MacAddr([0x02, 0, 0, 0, 0, self.mac]))
    }
}

#[derive(Clone, Debug)]
enum Op {
    Learn(Key, u16),
    Announced(Key, u16),
    Lookup(Key),
    Wait(u32),
    Age,
    FlushPort(u16),
    Flush,
}

fn key() -> impl Strategy<Value = Key> {
    (0u8..16, proptest::bool::weighted(0.2)).prop_map(|(mac, tagged)| Key { mac, tagged })
}

fn op(aging_ticks: u32) -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (key(), 0u16..4).prop_map(|(k, p)| Op::Learn(k, p)),
        2 => (key(), 0u16..4).prop_map(|(k, p)| Op::Announced(k, p)),
        6 => key().prop_map(Op::Lookup),
        4 => (0..aging_ticks / 2).prop_map(Op::Wait),
        1 => (aging_ticks - 2..aging_ticks + 2).prop_map(Op::Wait),
        2 => Just(Op::Age),
        1 => (0u16..4).prop_map(Op::FlushPort),
        1 => Just(Op::Flush),
    ]
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    port: PortId,
    seen: Instant,
    announced: Instant,
}

/// The previous implementation, on a `HashMap`.
struct Model {
    map: HashMap<FdbKey, Entry>,
    max: usize,
    aging: Duration,
    counters: FdbCounters,
}

impl Model {
    fn learn(&mut self, key: FdbKey, port: PortId, now: Instant) -> Learned {
        if let Some(e) = self.map.get_mut(&key) {
            e.seen = now;
            if e.port == port {
                let announce = now.saturating_duration_since(e.announced) >= self.aging / 8;
                if announce {
                    e.announced = now;
                }
                return Learned::Refreshed { announce };
            }
            e.announced = now;
            let from = std::mem::replace(&mut e.port, port);
            self.counters.moves += 1;
            return Learned::Moved { from };
        }
        if self.map.len() >= self.max {
            self.counters.learn_limit_hits += 1;
            return Learned::LimitReached;
        }
        self.map.insert(key, Entry { port, seen: now, announced: now });
        self.counters.learned += 1;
        Learned::New
    }

    fn apply_announced(&mut self, key: FdbKey, port: PortId, now: Instant) {
        if let Some(e) = self.map.get_mut(&key) {
            *e = Entry { port, seen: e.seen.max(now), announced: now };
        } else if self.map.len() < self.max {
            self.map.insert(key, Entry { port, seen: now, announced: now });
        }
    }

    fn live(&self, e: &Entry, now: Instant) -> bool {
        now.saturating_duration_since(e.seen) < self.aging
    }

    fn entries(&self, now: Instant) -> Vec<FdbEntry> {
        let mut v: Vec<FdbEntry> = self
            .map
            .iter()
            .filter(|(_, e)| self.live(e, now))
            .map(|(&key, e)| FdbEntry { key, port: e.port, age: now - e.seen })
            .collect();
        v.sort_by_key(|e| e.key);
        v
    }

    fn remove(&mut self, keep: impl Fn(&Entry) -> bool) -> usize {
        let before = self.map.len();
        self.map.retain(|_, e| keep(e));
        before - self.map.len()
    }
}

fn check(max: usize, eighths: u32, start: i64, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let aging = TICK * 8 * eighths;
    let t0 = Instant::now();
    let mut f = Fdb::new(FdbConfig { max_entries: max, aging });
    let mut m = Model { map: HashMap::new(), max, aging, counters: FdbCounters::default() };
    let offset = TICK * start.unsigned_abs() as u32;
    let mut now = if start < 0 { t0.checked_sub(offset).unwrap_or(t0) } else { t0 + offset };
    for op in ops {
        match op {
            Op::Learn(k, p) => {
                let (k, p) = (k.key(), PortId(p));
                prop_assert_eq!(f.learn(k, p, now), m.learn(k, p, now), "learn {:?}", k);
            }
            Op::Announced(k, p) => {
                f.apply_announced(k.key(), PortId(p), now);
                m.apply_announced(k.key(), PortId(p), now);
            }
            Op::Lookup(k) => {
                let want = m.map.get(&k.key()).filter(|e| m.live(e, now)).map(|e| e.port);
                prop_assert_eq!(f.lookup(k.key(), now), want, "lookup {:?}", k);
            }
            Op::Wait(ticks) => now += TICK * ticks,
            Op::Age => {
                let aged = m.remove(|e| now.saturating_duration_since(e.seen) < aging);
                m.counters.aged += aged as u64;
                prop_assert_eq!(f.age(now), aged);
            }
            Op::FlushPort(p) => {
                let n = m.remove(|e| e.port != PortId(p));
                m.counters.flushed += n as u64;
                prop_assert_eq!(f.flush_port(PortId(p)), n);
            }
            Op::Flush => {
                let n = m.map.len();
                m.map.clear();
                m.counters.flushed += n as u64;
                prop_assert_eq!(f.flush(), n);
            }
        }
        prop_assert_eq!(f.len(), m.map.len());
        prop_assert!(f.len() <= max);
        prop_assert_eq!(f.counters(), m.counters);
        prop_assert_eq!(f.entries(now), m.entries(now));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn behaves_like_a_hash_map(
        (max, eighths, start, ops) in (1usize..12, 1u32..6).prop_flat_map(|(max, eighths)| (
            Just(max),
            Just(eighths),
            // Before the epoch, at it, and just before the ticks turn negative and wrap.
            prop_oneof![Just(-1_000i64), Just(0), Just((1 << 31) - 60), Just((1 << 32) - 60)],
            prop::collection::vec(op(8 * eighths), 1..200),
        )),
    ) {
        check(max, eighths, start, ops)?;
    }
}
