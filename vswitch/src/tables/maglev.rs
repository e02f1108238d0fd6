//! Maglev consistent hashing (Eisenbud et al., "Maglev: A Fast and Reliable Software Network
//! Load Balancer", NSDI 2016, §3.4): a lookup table of `M` entries (`M` prime), each naming a
//! backend, so that picking a backend for a flow is one index `table[hash % M]`.
//!
//! What it owns: building the table from a list of backends. What it does not: the backends
//! themselves (the caller keeps them and maps the table's indices back), and flow state.
//!
//! How the table is filled (the paper's population loop):
//! - Every backend has its own permutation of `0..M`, from two independent hashes of its
//!   identity: `offset = h1 % M`, `skip = h2 % (M - 1) + 1`, `permutation[j] = (offset + j *
//!   skip) % M`. `M` prime makes every `skip` coprime with `M`, so each permutation visits
//!   every entry once. The invariant a reader must know: **`size` must be prime**; [`build`]
//!   refuses any other size, because a non-prime size can leave a backend cycling over a
//!   subset of full entries forever.
//! - Backends take turns in input order; at its turn a backend claims the first entry of its
//!   permutation not yet claimed. Each turn fills exactly one entry, so the shares come out
//!   within one entry per turn of equal.
//! - Weighted Maglev: a backend of weight `w` takes `w` turns per round, so its share is
//!   `w / sum(weights)` of the table (within `w` entries). A weight of 0 counts as 1.
//!
//! Why it is consistent: a backend's preferences do not depend on the other backends. Removing
//! one backend hands its entries to others and moves only a few entries of the survivors.
//! Measured with tables sized by [`table_size`] (`M ≈ 100 N`, N = 3..19, 2000 random sets,
//! every backend removed in turn): on average 1.5-2.8% of the survivors' entries move, p99
//! 3.8-8.3%. Maglev is not minimally disruptive, and the tail is long for few backends: when
//! two survivors draw the same `skip` (chance about `1 / (M - 1)` per pair) they walk the same
//! cycle and chase each other, and one removal then moved up to 52% (N = 3) or 18% (N = 8).
//! The proptest asserts, over samples of 20 sets, a median <= 5% and a mean <= 8%. Changing `M`
//! reshuffles everything, so callers keep the size stable across changes they want gentle.
//!
//! Limits: at most `u16::MAX` backends (entries are `u16` indices); sizes up to a few million
//! (the default cap [`DEFAULT_MAX_SIZE`] is 65,537, 128 KiB of table). Building costs about
//! `M * ln(M)` probes, a few microseconds for `M = 211`.

/// Default cap on a table's size: the paper's `M = 65537` (a prime).
pub const DEFAULT_MAX_SIZE: usize = 65_537;

/// Smallest table size [`table_size`] returns.
pub const MIN_SIZE: usize = 7;

/// Entries per backend [`table_size`] aims for (the paper's `M >> N`).
pub const ENTRIES_PER_BACKEND: usize = 100;

/// Marks an entry not yet claimed while building.
const EMPTY: u16 = u16::MAX;

/// Seeds of the two identity hashes (arbitrary odd constants, fixed forever: changing them
/// would change every table, and nodes building the same service must agree).
const SEED_OFFSET: u64 = 0x9e37_79b9_7f4a_7c15;
const SEED_SKIP: u64 = 0xc2b2_ae3d_27d4_eb4f;

/// The splitmix64 finalizer: a bijection of `u64` whose output bits each depend on every
/// input bit.
#[inline]
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// True when `n` is prime (trial division; fine up to a few million).
pub fn is_prime(n: usize) -> bool {
    if n < 2 {
        return false;
    }
    if n < 4 {
        return true;
    }
    if n.is_multiple_of(2) || n.is_multiple_of(3) {
        return false;
    }
    let mut d = 5;
    while d * d <= n {
        if n.is_multiple_of(d) || n.is_multiple_of(d + 2) {
            return false;
        }
        d += 6;
    }
    true
}

/// The smallest prime >= n (n up to a few million; simple trial division is fine).
pub fn next_prime(n: usize) -> usize {
    let mut p = n.max(2);
    while !is_prime(p) {
        p += 1;
    }
    p
}

/// The largest prime <= n, or `None` below 2.
fn prev_prime(n: usize) -> Option<usize> {
    (2..=n).rev().find(|&p| is_prime(p))
}

/// Table size for `backends` backends: the smallest prime >= 100 * backends (the paper's
/// M >> N advice), capped at `max` (itself a prime, default [`DEFAULT_MAX_SIZE`]), at least 7.
///
/// Should `max` not be prime, the cap is the largest prime below it, so the result is always
/// prime. Zero backends get [`MIN_SIZE`].
pub fn table_size(backends: usize, max: usize) -> usize {
    let want = backends.saturating_mul(ENTRIES_PER_BACKEND).max(MIN_SIZE);
    if want < max {
        // The common case, and cheap: no need to test `max` (a primality test of 65,537 costs
        // about as much as building a 211-entry table).
        let p = next_prime(want);
        if p < max {
            return p;
        }
    }
    prev_prime(max).unwrap_or(MIN_SIZE).max(MIN_SIZE)
}

/// Table size for a Service whose table had `prev` entries (a size this module chose) before
/// its endpoints changed to `backends`: `prev` is kept while it gives each backend between
/// 50 and 400 entries (or is all the cap allows), else [`table_size`]. A new size reshuffles
/// the whole table, so scaling a Service by a few endpoints must not change it: removing one
/// of four endpoints then moves only the flows Maglev has to move.
pub fn resize(prev: usize, backends: usize, max: usize) -> usize {
    let fresh = table_size(backends, max);
    let n = backends.max(1);
    let lo = n.saturating_mul(ENTRIES_PER_BACKEND / 2).min(fresh);
    let hi = n.saturating_mul(ENTRIES_PER_BACKEND * 4).max(fresh);
    if (lo..=hi).contains(&prev) && prev <= max && prev >= MIN_SIZE {
        prev
    } else {
        fresh
    }
}

/// Builds the lookup table: `size` (prime) entries, each an index into `backends`.
///
/// `backends[i]` is (stable identity hash of backend i, weight >= 1). Weighted Maglev: a
/// backend with weight w takes w turns per round of the population loop. Deterministic for the
/// same input, and independent of the order of `backends` (turns go in identity order; ties
/// in input order). Empty input -> empty table.
///
/// # Panics
/// When `size` is not prime, or there are more than `u16::MAX` backends.
pub fn build(backends: &[(u64, u16)], size: usize) -> Vec<u16> {
    if backends.is_empty() {
        return Vec::new();
    }
    assert!(is_prime(size), "maglev table size {size} is not prime");
    assert!(
        backends.len() <= usize::from(u16::MAX),
        "maglev tables index at most {} backends, got {}",
        u16::MAX,
        backends.len()
    );
    let m = size as u64;
    // Turns go in identity order, not input order, so the table depends only on the set of
    // backends: a backend removed and added back at another place in the list gets its
    // entries back exactly. (In input order, re-adding one of 2 backends at the other end
    // of the list changed 17% of the table.)
    let mut order: Vec<usize> = (0..backends.len()).collect();
    order.sort_by_key(|&i| (backends[i].0, i));
    // Per backend: its next preference (a position in the table) and its skip.
    let mut next: Vec<(usize, usize)> = backends
        .iter()
        .map(|&(id, _)| {
            let offset = mix64(id ^ SEED_OFFSET) % m;
            let skip = mix64(id ^ SEED_SKIP) % (m - 1) + 1;
            (offset as usize, skip as usize)
        })
        .collect();
    let mut table = vec![EMPTY; size];
    let mut filled = 0;
    loop {
        for &i in &order {
            let weight = backends[i].1;
            let (pos, skip) = &mut next[i];
            for _ in 0..weight.max(1) {
                // `pos += skip (mod size)` with one compare: `skip < size`. Terminates
                // because the permutation visits every entry and one is still empty.
                while table[*pos] != EMPTY {
                    *pos += *skip;
                    if *pos >= size {
                        *pos -= size;
                    }
                }
                table[*pos] = i as u16;
                filled += 1;
                if filled == size {
                    return table;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shares(table: &[u16], n: usize) -> Vec<usize> {
        let mut c = vec![0; n];
        for &e in table {
            c[usize::from(e)] += 1;
        }
        c
    }

    fn ids(n: usize) -> Vec<(u64, u16)> {
        (0..n as u64).map(|i| (0x0af4_0100_0000 + (i << 16) + 8080, 1)).collect()
    }

    #[test]
    fn primes() {
        let small: Vec<usize> = (0..30).filter(|&n| is_prime(n)).collect();
        assert_eq!(small, [2, 3, 5, 7, 11, 13, 17, 19, 23, 29]);
        assert_eq!(next_prime(0), 2);
        assert_eq!(next_prime(200), 211);
        assert_eq!(next_prime(211), 211);
        assert_eq!(next_prime(65_536), 65_537);
        assert!(is_prime(DEFAULT_MAX_SIZE));
        assert_eq!(next_prime(1_000_000), 1_000_003);
    }

    #[test]
    fn resize_keeps_the_size_while_it_fits() {
        let max = DEFAULT_MAX_SIZE;
        assert_eq!(resize(401, 3, max), 401, "one of four removed");
        assert_eq!(resize(307, 6, max), 307, "three added to three");
        assert_eq!(resize(307, 7, max), table_size(7, max), "too few entries per backend");
        assert_eq!(resize(4001, 4, max), table_size(4, max), "far too many");
        assert_eq!(resize(65_537, 1000, max), 65_537, "at the cap");
        assert_eq!(resize(101, 0, max), 101, "no endpoints for a while");
    }

    #[test]
    fn table_sizes() {
        assert_eq!(table_size(0, DEFAULT_MAX_SIZE), 7);
        assert_eq!(table_size(1, DEFAULT_MAX_SIZE), 101);
        assert_eq!(table_size(2, DEFAULT_MAX_SIZE), 211);
        assert_eq!(table_size(3, DEFAULT_MAX_SIZE), 307);
        assert_eq!(table_size(655, DEFAULT_MAX_SIZE), 65_519);
        assert_eq!(table_size(656, DEFAULT_MAX_SIZE), 65_537);
        assert_eq!(table_size(5000, DEFAULT_MAX_SIZE), 65_537);
        assert_eq!(table_size(50, 1009), 1009);
        // A cap that is not prime still gives a prime; a tiny cap gives the minimum.
        assert_eq!(table_size(50, 1000), 997);
        assert_eq!(table_size(50, 3), 7);
        assert_eq!(table_size(usize::MAX, DEFAULT_MAX_SIZE), 65_537);
    }

    #[test]
    fn empty_input_gives_empty_table() {
        assert!(build(&[], 211).is_empty());
    }

    #[test]
    #[should_panic(expected = "not prime")]
    fn refuses_a_size_that_is_not_prime() {
        build(&ids(2), 200);
    }

    #[test]
    fn one_backend_takes_everything() {
        let t = build(&ids(1), 7);
        assert_eq!(t, vec![0; 7]);
    }

    #[test]
    fn equal_backends_get_equal_shares() {
        let t = build(&ids(3), DEFAULT_MAX_SIZE);
        assert_eq!(t.len(), DEFAULT_MAX_SIZE);
        for c in shares(&t, 3) {
            let pct = c as f64 * 100.0 / DEFAULT_MAX_SIZE as f64;
            assert!((30.0..=37.0).contains(&pct), "{pct}%");
        }
        // Each turn fills one entry: the shares differ by at most one.
        let s = shares(&build(&ids(7), 701), 7);
        assert!(s.iter().max().unwrap() - s.iter().min().unwrap() <= 1, "{s:?}");
    }

    #[test]
    fn weights_set_the_shares() {
        let mut b = ids(2);
        b[1].1 = 2;
        let s = shares(&build(&b, DEFAULT_MAX_SIZE), 2);
        let ratio = s[1] as f64 / s[0] as f64;
        assert!((1.9..=2.1).contains(&ratio), "{s:?}");

        let mut b = ids(3);
        b[0].1 = 1;
        b[1].1 = 3;
        b[2].1 = 6;
        let s = shares(&build(&b, 1009), 3);
        for (c, w) in s.iter().zip([1.0, 3.0, 6.0]) {
            let want = 1009.0 * w / 10.0;
            assert!((*c as f64 - want).abs() <= 7.0, "{s:?}");
        }
    }

    #[test]
    fn deterministic() {
        let b = ids(5);
        assert_eq!(build(&b, 503), build(&b, 503));
        assert_ne!(build(&b, 503), build(&ids(5)[1..], 503));
    }

    /// The table with backend `gone` left out, its indices mapped back to `b`'s.
    fn without(b: &[(u64, u16)], gone: usize, size: usize) -> Vec<usize> {
        let rest: Vec<_> =
            b.iter().enumerate().filter(|(i, _)| *i != gone).map(|(_, x)| *x).collect();
        build(&rest, size)
            .iter()
            .map(|&e| {
                let e = usize::from(e);
                if e >= gone {
                    e + 1
                } else {
                    e
                }
            })
            .collect()
    }

    /// Fraction of the entries of surviving backends that point elsewhere after `gone` leaves.
    fn disruption(n: usize, gone: usize, seed: u64) -> f64 {
        let b: Vec<(u64, u16)> = (0..n as u64).map(|i| (mix64(seed ^ i), 1)).collect();
        let size = table_size(n, DEFAULT_MAX_SIZE);
        let before = build(&b, size);
        let after = without(&b, gone, size);
        let survivors = before.iter().filter(|&&e| usize::from(e) != gone).count();
        let moved = before
            .iter()
            .zip(&after)
            .filter(|(&x, &y)| usize::from(x) != gone && usize::from(x) != y)
            .count();
        moved as f64 / survivors as f64
    }

    /// Prints the disruption measured over many cases (the figure in the module doc):
    /// `cargo test -p vswitch --lib maglev -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement; run with --ignored --nocapture"]
    fn measure_disruption() {
        for n in 2..20 {
            let mut all = Vec::new();
            for seed in 0..2000u64 {
                for gone in 0..n {
                    all.push(disruption(n, gone, mix64(seed)));
                }
            }
            all.sort_by(f64::total_cmp);
            let q = |f: f64| all[((all.len() - 1) as f64 * f) as usize] * 100.0;
            println!(
                "N={n:3} M={:6}: survivors' entries moved: mean {:.2}%, p50 {:.2}%, p99 {:.2}%, p99.9 {:.2}%, max {:.2}%",
                table_size(n, DEFAULT_MAX_SIZE),
                all.iter().sum::<f64>() * 100.0 / all.len() as f64,
                q(0.5), q(0.99), q(0.999), q(1.0)
            );
        }
    }

    proptest::proptest! {
        /// Removing one backend of N (N in 2..20) hands every entry of the removed backend to
        /// survivors and moves few of the survivors' entries; adding it back (anywhere in the
        /// list) restores the table exactly.
        ///
        /// A single removal can move a lot (up to 52% at N = 3, see `measure_disruption`), and
        /// the bad cases cluster in sets holding two backends of equal `skip`, so the bound is
        /// on a sample: 20 sets of N random identities, every backend removed in turn.
        /// Measured: median 1.0-2.7% and mean 1.5-2.8% per N. Asserted, with margin for a few
        /// unlucky sets in one sample: median <= 5%, mean <= 8%.
        #[test]
        fn removing_a_backend_moves_little(n in 2usize..20, seed in proptest::prelude::any::<u64>()) {
            let size = table_size(n, DEFAULT_MAX_SIZE);
            let mut fractions = Vec::new();
            for set in 0..20u64 {
                let b: Vec<(u64, u16)> =
                    (0..n as u64).map(|i| (mix64(seed ^ (set << 32) ^ i), 1)).collect();
                let before = build(&b, size);
                for gone in 0..n {
                    let after = without(&b, gone, size);
                    let mut survivors = 0;
                    let mut moved = 0;
                    for (&x, &y) in before.iter().zip(&after) {
                        let x = usize::from(x);
                        proptest::prop_assert_ne!(y, gone);
                        if x != gone {
                            survivors += 1;
                            if x != y {
                                moved += 1;
                            }
                        }
                    }
                    fractions.push(moved as f64 / survivors as f64);

                    // Back again, at the end of the list: the same table, by identity.
                    let mut again: Vec<(u64, u16)> =
                        b.iter().enumerate().filter(|(i, _)| *i != gone).map(|(_, x)| *x).collect();
                    again.push(b[gone]);
                    let restored: Vec<u64> =
                        build(&again, size).iter().map(|&e| again[usize::from(e)].0).collect();
                    let original: Vec<u64> = before.iter().map(|&e| b[usize::from(e)].0).collect();
                    proptest::prop_assert_eq!(restored, original);
                }
            }
            let mean = fractions.iter().sum::<f64>() / fractions.len() as f64;
            fractions.sort_by(f64::total_cmp);
            let median = fractions[fractions.len() / 2];
            proptest::prop_assert!(median <= 0.05, "median disruption {:.2}%", median * 100.0);
            proptest::prop_assert!(mean <= 0.08, "mean disruption {:.2}%", mean * 100.0);
        }
    }
}
