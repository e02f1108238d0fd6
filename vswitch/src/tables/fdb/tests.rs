//! Unit tests of the MAC table.

use super::*;

fn mac(n: u8) -> MacAddr {
    MacAddr([0x02, 0, 0, 0, 0, n])
}

fn fdb(max: usize, aging_secs: u64) -> Fdb {
    Fdb::new(FdbConfig { max_entries: max, aging: Duration::from_secs(aging_secs) })
}

#[test]
fn key_packs_vlan_and_mac() {
    let k = FdbKey::new(Some(100), mac(7));
    assert_eq!(k.vlan(), 100);
    assert_eq!(k.mac(), mac(7));
    assert_ne!(k, FdbKey::new(None, mac(7)));
    assert_eq!(FdbKey::new(None, mac(7)).vlan(), 0);
}

#[test]
fn learns_refreshes_and_moves() {
    let t = Instant::now();
    let mut f = fdb(10, 300);
    let k = FdbKey::new(None, mac(1));
    assert_eq!(f.lookup(k, t), None);
    assert_eq!(f.learn(k, PortId(1), t), Learned::New);
    assert_eq!(f.learn(k, PortId(1), t), Learned::Refreshed { announce: false });
    assert_eq!(f.lookup(k, t), Some(PortId(1)));
    assert_eq!(f.learn(k, PortId(2), t), Learned::Moved { from: PortId(1) });
    assert_eq!(f.lookup(k, t), Some(PortId(2)));
    assert_eq!(f.counters().moves, 1);
    assert_eq!(f.counters().learned, 1);
}

#[test]
fn full_table_refuses_new_macs_and_keeps_old_ones() {
    let t = Instant::now();
    let mut f = fdb(2, 300);
    f.learn(FdbKey::new(None, mac(1)), PortId(1), t);
    f.learn(FdbKey::new(None, mac(2)), PortId(1), t);
    assert_eq!(f.learn(FdbKey::new(None, mac(3)), PortId(1), t), Learned::LimitReached);
    assert_eq!(f.learn(FdbKey::new(None, mac(3)), PortId(2), t), Learned::LimitReached);
    assert_eq!(f.counters().learn_limit_hits, 2);
    assert_eq!(f.lookup(FdbKey::new(None, mac(3)), t), None);
    assert_eq!(f.lookup(FdbKey::new(None, mac(1)), t), Some(PortId(1)));
    // Known MACs still refresh and move when full.
    assert_eq!(
        f.learn(FdbKey::new(None, mac(2)), PortId(3), t),
        Learned::Moved { from: PortId(1) }
    );
}

#[test]
fn aging_hides_then_removes() {
    let t = Instant::now();
    let mut f = fdb(10, 5);
    let k = FdbKey::new(None, mac(1));
    f.learn(k, PortId(1), t);
    f.learn(FdbKey::new(None, mac(2)), PortId(1), t + Duration::from_secs(3));
    assert_eq!(f.lookup(k, t + Duration::from_secs(4)), Some(PortId(1)));
    assert_eq!(f.lookup(k, t + Duration::from_secs(5)), None);
    assert_eq!(f.entries(t + Duration::from_secs(5)).len(), 1);
    assert_eq!(f.age(t + Duration::from_secs(5)), 1);
    assert_eq!(f.len(), 1);
    assert_eq!(f.counters().aged, 1);
    // A refreshed entry does not age.
    f.learn(k, PortId(1), t + Duration::from_secs(6));
    assert_eq!(f.age(t + Duration::from_secs(9)), 1);
    assert_eq!(f.lookup(k, t + Duration::from_secs(9)), Some(PortId(1)));
}

#[test]
fn expired_entry_is_relearned_as_refresh_or_move() {
    let t = Instant::now();
    let mut f = fdb(1, 5);
    let k = FdbKey::new(None, mac(1));
    f.learn(k, PortId(1), t);
    let later = t + Duration::from_secs(60);
    assert_eq!(f.learn(k, PortId(2), later), Learned::Moved { from: PortId(1) });
    assert_eq!(f.lookup(k, later), Some(PortId(2)));
}

#[test]
fn flushes() {
    let t = Instant::now();
    let mut f = fdb(10, 300);
    for i in 0..4 {
        f.learn(FdbKey::new(None, mac(i)), PortId(u16::from(i % 2)), t);
    }
    assert_eq!(f.flush_port(PortId(0)), 2);
    assert!(f.entries(t).iter().all(|e| e.port == PortId(1)));
    assert_eq!(f.flush(), 2);
    assert!(f.is_empty());
    assert_eq!(f.counters().flushed, 4);
}

#[test]
fn entries_are_sorted() {
    let t = Instant::now();
    let mut f = fdb(10, 300);
    for i in [5u8, 1, 3] {
        f.learn(FdbKey::new(None, mac(i)), PortId(1), t);
    }
    let macs: Vec<_> = f.entries(t).iter().map(|e| e.key.mac()).collect();
    assert_eq!(macs, vec![mac(1), mac(3), mac(5)]);
}

#[test]
fn refreshes_are_announced_at_most_every_eighth_of_the_aging_time() {
    let mut f = fdb(16, 80);
    let t = Instant::now();
    let k = FdbKey::new(None, mac(1));
    assert!(f.learn(k, PortId(1), t).announce(), "new stations are announced");
    let s = Duration::from_secs;
    assert_eq!(f.learn(k, PortId(1), t + s(5)), Learned::Refreshed { announce: false });
    assert_eq!(f.learn(k, PortId(1), t + s(10)), Learned::Refreshed { announce: true });
    assert_eq!(f.learn(k, PortId(1), t + s(11)), Learned::Refreshed { announce: false });
    assert!(f.learn(k, PortId(2), t + s(12)).announce(), "moves are announced");
}

#[test]
fn announced_stations_are_applied_uncounted_and_respect_the_limit() {
    let mut f = fdb(2, 300);
    let t = Instant::now();
    f.apply_announced(FdbKey::new(None, mac(1)), PortId(3), t);
    f.apply_announced(FdbKey::new(None, mac(2)), PortId(3), t);
    f.apply_announced(FdbKey::new(None, mac(3)), PortId(3), t);
    assert_eq!(f.len(), 2, "full: the third is not added");
    assert_eq!(f.lookup(FdbKey::new(None, mac(1)), t), Some(PortId(3)));
    // A later announcement moves it, and counts nothing here.
    f.apply_announced(FdbKey::new(None, mac(1)), PortId(4), t);
    assert_eq!(f.lookup(FdbKey::new(None, mac(1)), t), Some(PortId(4)));
    assert_eq!(f.counters(), FdbCounters::default());
}

const TICK: Duration = Duration::from_nanos(1 << clock::MIN_TICK_SHIFT);

#[test]
fn entries_live_and_age_across_the_tick_wrap_around() {
    let mut f = fdb(10, 300);
    let near = Instant::now() + TICK * (u32::MAX - 100);
    let k = FdbKey::new(None, mac(1));
    assert_eq!(f.learn(k, PortId(1), near), Learned::New);
    let after = near + TICK * 200;
    assert!(f.time(after).ticks < f.time(near).ticks, "the ticks wrapped");
    assert_eq!(f.lookup(k, after), Some(PortId(1)));
    assert_eq!(f.entries(after)[0].age, TICK * 200);
    assert_eq!(f.age(after), 0);
    assert_eq!(f.learn(k, PortId(1), after), Learned::Refreshed { announce: false });
    let expiry = after + Duration::from_secs(300);
    assert_eq!(f.lookup(k, expiry - Duration::from_millis(5)), Some(PortId(1)));
    assert_eq!(f.lookup(k, expiry), None);
    assert_eq!(f.age(expiry), 1);
}

#[test]
fn a_table_left_unswept_is_swept_before_its_times_could_be_misread() {
    let mut f = fdb(10, 300);
    let t = Instant::now();
    let k = FdbKey::new(None, mac(1));
    f.learn(k, PortId(1), t);
    // Exactly 2^32 ticks later the stored time reads as "now" again.
    let wrapped = t + TICK * u32::MAX + TICK;
    assert_eq!(f.time(wrapped).ticks, f.time(t).ticks);
    assert_eq!(f.lookup(k, wrapped), None);
    assert!(f.entries(wrapped).is_empty());
    assert_eq!(f.lookup_hashed(k, f.hash(k), f.time(wrapped)), None);
    assert_eq!(f.learn(FdbKey::new(None, mac(2)), PortId(2), wrapped), Learned::New);
    assert_eq!(f.counters().aged, 1, "swept first");
    assert_eq!(f.lookup(k, wrapped), None);
    assert_eq!(f.learn(k, PortId(1), wrapped), Learned::New);
}

#[test]
fn a_year_of_aging_works_with_coarser_ticks() {
    let year = Duration::from_secs(86_400 * 365);
    let mut f = Fdb::new(FdbConfig { max_entries: 4, aging: year });
    let t = Instant::now();
    let k = FdbKey::new(None, mac(1));
    f.learn(k, PortId(1), t);
    let eighth = year / 8;
    let day = Duration::from_secs(86_400);
    assert_eq!(f.learn(k, PortId(1), t + eighth - day), Learned::Refreshed { announce: false });
    assert_eq!(f.learn(k, PortId(1), t + eighth), Learned::Refreshed { announce: true });
    let last = t + eighth;
    assert_eq!(f.lookup(k, last + year - day), Some(PortId(1)));
    assert_eq!(f.lookup(k, last + year), None);
    assert_eq!(f.age(last + year - day), 0);
    assert_eq!(f.age(last + year), 1);
}

#[test]
fn prefetched_calls_agree_with_plain_ones() {
    let mut f = fdb(64, 300);
    let t = Instant::now();
    let keys: Vec<FdbKey> = (0..40).map(|i| FdbKey::new(Some(i % 3), mac(i as u8))).collect();
    let now = f.clock(t);
    for (i, &k) in keys.iter().enumerate() {
        let h = f.hash(k);
        f.prefetch(h);
        assert_eq!(f.learn_hashed(k, h, PortId(i as u16), now), Learned::New);
    }
    let now = f.time(t);
    for (i, &k) in keys.iter().enumerate() {
        assert_eq!(f.lookup_hashed(k, f.hash(k), now), Some(PortId(i as u16)));
        assert_eq!(f.lookup(k, t), Some(PortId(i as u16)));
    }
}

#[test]
fn large_tables_grow_past_what_they_reserve() {
    let mut f = fdb(PREALLOCATE_MAX + 1_000, 300);
    let t = Instant::now();
    let key = |i: u32| FdbKey::new(None, MacAddr::from_u64(u64::from(i)));
    for i in 0..(PREALLOCATE_MAX + 1_000) as u32 {
        assert_eq!(f.learn(key(i), PortId(1), t), Learned::New);
    }
    assert_eq!(f.learn(key(u32::MAX), PortId(1), t), Learned::LimitReached);
    assert_eq!(f.len(), PREALLOCATE_MAX + 1_000);
    assert!((0..(PREALLOCATE_MAX + 1_000) as u32).all(|i| f.lookup(key(i), t).is_some()));
    assert_eq!(f.flush_port(PortId(1)), PREALLOCATE_MAX + 1_000);
    assert!(f.is_empty());
}

/// Steps the sweep until a pass has covered the whole array, one `AGING_PASS` apart, from
/// `from`; checks every step keeps to `budget`. Returns the time after the last step.
fn step_through(f: &mut Fdb, from: Instant, budget: usize) -> Instant {
    let mut now = from;
    // Every slot once, and each removal's position once more.
    for _ in 0..=(f.index.slots() + f.len()) / budget + 1 {
        now += AGING_PASS;
        let step = f.age_step(now, budget);
        assert!(step.examined <= budget, "{step:?} over a budget of {budget}");
    }
    now
}

#[test]
fn sliced_aging_removes_every_expired_entry_and_keeps_refreshed_ones() {
    let t = Instant::now();
    let mut f = fdb(1_000, 300);
    let key = |i: u32| FdbKey::new(None, MacAddr::from_u64(u64::from(i) << 8 | 1));
    for i in 0..1_000 {
        f.learn(key(i), PortId(1), t);
    }
    // The odd ones are refreshed later: they outlive the others by 200 s.
    for i in (1..1_000).step_by(2) {
        f.learn(key(i), PortId(1), t + Duration::from_secs(200));
    }
    let done = step_through(&mut f, t + Duration::from_secs(300), 64);
    assert!(done < t + Duration::from_secs(500), "the refreshed ones are still live");
    assert_eq!(f.len(), 500);
    assert_eq!(f.counters().aged, 500);
    for i in 0..1_000 {
        let want = (i % 2 == 1).then_some(PortId(1));
        assert_eq!(f.lookup(key(i), done), want, "entry {i}");
    }
    // Nothing left to remove: later passes remove nothing until the others expire.
    step_through(&mut f, done, 64);
    assert_eq!(f.len(), 500);
}

#[test]
fn an_aging_step_keeps_to_its_budget_and_to_the_time_made_due() {
    let t = Instant::now();
    let mut f = fdb(1_000, 5);
    for i in 0..1_000u32 {
        f.learn(FdbKey::new(None, MacAddr::from_u64(u64::from(i) + 1)), PortId(1), t);
    }
    let slots = f.index.slots();
    let later = t + Duration::from_secs(10);
    // Everything is expired and a whole pass is due: each step does its budget (removals
    // included), and no more.
    let mut removed = 0;
    for budget in [1, 7, 100, 333] {
        let step = f.age_step(later, budget);
        assert_eq!(step.examined, budget);
        removed += step.removed;
    }
    assert!(removed > 0);
    // A pass is spread over `AGING_PASS`: right after one ends, nothing is due yet; half the
    // pass time later, about half the array.
    let end = step_through(&mut f, later, 512);
    assert!(f.is_empty());
    // Whatever pass is on ends here: the array is empty.
    let end = end + AGING_PASS;
    assert!(f.age_step(end, usize::MAX).examined <= slots);
    assert_eq!(f.age_step(end, usize::MAX), AgingStep::default());
    let half = f.age_step(end + AGING_PASS / 2, usize::MAX);
    assert!(half.examined <= slots / 2 + 1 && half.examined >= slots / 2 - 1, "{half:?}");
}

#[test]
fn the_sweep_restarts_from_the_front_after_growth_and_port_flushes() {
    let t = Instant::now();
    let mut f = fdb(PREALLOCATE_MAX + 1_000, 5);
    let key = |i: u32| FdbKey::new(None, MacAddr::from_u64(u64::from(i) + 1));
    for i in 0..100 {
        f.learn(key(i), PortId(i as u16 % 2), t);
    }
    f.age_step(t + AGING_PASS / 2, usize::MAX);
    assert!(f.sweep.cursor > 0);
    f.flush_port(PortId(0));
    assert_eq!(f.sweep.cursor, 0, "rewound by the flush");
    for i in 100..PREALLOCATE_MAX as u32 + 100 {
        f.learn(key(i), PortId(1), t);
    }
    let grown = f.index.slots();
    assert!(grown > f.sweep.slots);
    let later = t + Duration::from_secs(60);
    step_through(&mut f, later, AGING_STEP_SLOTS);
    assert!(f.is_empty(), "{} left after growing to {grown} slots", f.len());
}

#[test]
fn a_completed_sliced_pass_puts_the_wrap_guard_off() {
    let t = Instant::now();
    let mut f = fdb(10, 300);
    let due = f.sweep_due;
    // The first pass began with the table; the second one later.
    let end = step_through(&mut f, t, 4);
    step_through(&mut f, end, 4);
    assert!(f.sweep_due > due, "a full pass counts as a sweep");
}
