//! The MAC table's coarse timestamps: `u32` ticks since the table's epoch, so that a slot
//! holds its times in six bytes instead of two 16-byte `Instant`s.
//!
//! - **Tick**: 2^20 ns (about 1 ms), or a coarser power of two when the aging time would
//!   otherwise reach 2^27 ticks (a year's aging: 2^28 ns, 0.27 s). A power of two, so that
//!   converting an `Instant` is a shift.
//! - **Wrap-around**: ticks wrap (2^32 ticks: 52 days at 1 ms). An age is the wrapping
//!   difference read as signed, so it is right while the two times are less than 2^31 ticks
//!   apart; a time ahead of `now` counts as age zero, as `saturating_duration_since` does.
//!   The table keeps stored times that close by sweeping whole at least every
//!   [`Clock::wrap_guard`] (2^30 ticks): afterwards nothing older than the aging time
//!   (at most 2^27 ticks) is left.
//! - **Precision**: an age is the difference of two floored tick counts, off by less than a
//!   tick either way, and the thresholds are floored: an entry expires up to two ticks
//!   early, never late.
//! - **Announcements** are stamped in `u16` units of 2^s ticks, `s` the smallest that puts
//!   `aging / 8` below 256 units (so a refresh is announced up to two units, 1/64 of
//!   `aging / 8`, early, never late). A live entry's last announcement is less than
//!   `aging + aging / 8` (< 2,304 units) old, far inside the stamp's wrap-around; an expired
//!   entry's refresh is announced without looking at its stamp. `s` is at most 16, so the
//!   stamp follows the tick across the tick's wrap-around.

use std::time::{Duration, Instant};

/// The finest tick, as a shift of nanoseconds (2^20 ns, about 1 ms).
pub(super) const MIN_TICK_SHIFT: u32 = 20;

/// Aging times reach this many ticks only with a coarser tick.
const MAX_AGING_TICKS: u64 = 1 << 27;

/// The conversions of one table. See the module doc.
#[derive(Clone, Copy, Debug)]
pub(super) struct Clock {
    epoch: Instant,
    /// A tick is `2^shift` ns.
    shift: u32,
    /// The aging time in ticks.
    aging: u32,
    /// An announcement stamp is `ticks >> announce_shift`.
    announce_shift: u32,
    /// `aging / 8` in announcement units.
    announce_every: u16,
}

/// Whole nanoseconds of `d`, saturating.
fn nanos(d: Duration) -> u64 {
    d.as_secs().saturating_mul(1_000_000_000).saturating_add(u64::from(d.subsec_nanos()))
}

impl Clock {
    /// The clock of a table created at `epoch` with `aging`.
    pub(super) fn new(epoch: Instant, aging: Duration) -> Clock {
        let aging_ns = nanos(aging);
        let mut shift = MIN_TICK_SHIFT;
        while aging_ns >> shift >= MAX_AGING_TICKS {
            shift += 1;
        }
        let eighth = (aging_ns / 8) >> shift;
        let mut announce_shift = 0;
        while eighth >> announce_shift >= 256 {
            announce_shift += 1;
        }
        Clock {
            epoch,
            shift,
            aging: (aging_ns >> shift) as u32,
            announce_shift,
            announce_every: (eighth >> announce_shift) as u16,
        }
    }

    /// `now` in ticks since the epoch (wrapping; before the epoch is negative).
    #[inline]
    pub(super) fn ticks(&self, now: Instant) -> u32 {
        let ns = match now.checked_duration_since(self.epoch) {
            Some(d) => nanos(d).min(i64::MAX as u64) as i64,
            None => -(nanos(self.epoch.duration_since(now)).min(i64::MAX as u64) as i64),
        };
        // An arithmetic shift floors, before the epoch too.
        (ns >> self.shift) as u32
    }

    /// Ticks from `then` to `now`; 0 when `then` is ahead.
    #[inline]
    pub(super) fn age(now: u32, then: u32) -> u32 {
        (now.wrapping_sub(then) as i32).max(0) as u32
    }

    /// Whether something last seen at `seen` has aged out at `now`.
    #[inline]
    pub(super) fn expired(&self, now: u32, seen: u32) -> bool {
        Clock::age(now, seen) >= self.aging
    }

    /// The later of two times.
    #[inline]
    pub(super) fn later(a: u32, b: u32) -> u32 {
        if Clock::age(a, b) > 0 {
            a
        } else {
            b
        }
    }

    /// The announcement stamp of `now`.
    #[inline]
    pub(super) fn stamp(&self, now: u32) -> u16 {
        (now >> self.announce_shift) as u16
    }

    /// Whether a refresh at `now` of an entry last announced at `stamp` is announced: at
    /// least `aging / 8` later.
    #[inline]
    pub(super) fn announce_due(&self, now: u32, stamp: u16) -> bool {
        let since = (self.stamp(now).wrapping_sub(stamp) as i16).max(0) as u16;
        since >= self.announce_every
    }

    /// `ticks` as a duration.
    pub(super) fn duration(&self, ticks: u32) -> Duration {
        Duration::from_nanos(1 << self.shift).saturating_mul(ticks)
    }

    /// How long the table may go without a whole sweep before stored times could be
    /// misread (2^30 ticks: 13 days at the finest tick).
    pub(super) fn wrap_guard(&self) -> Duration {
        self.duration(1 << 30)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: Duration = Duration::from_nanos(1 << MIN_TICK_SHIFT);

    #[test]
    fn default_aging_uses_one_millisecond_ticks() {
        let c = Clock::new(Instant::now(), Duration::from_secs(300));
        assert_eq!(c.shift, MIN_TICK_SHIFT);
        assert_eq!(c.aging, 286_102);
        assert_eq!(c.announce_every, 35_762 >> c.announce_shift);
        assert!(c.announce_every < 256 && c.announce_every >= 128);
    }

    #[test]
    fn long_aging_coarsens_the_tick_and_stays_in_range() {
        for secs in [1u64, 300, 86_400, 86_400 * 365, u64::MAX] {
            let c = Clock::new(Instant::now(), Duration::from_secs(secs));
            assert!(u64::from(c.aging) < MAX_AGING_TICKS, "{secs}");
            assert!(c.announce_shift <= 16, "{secs}");
            assert!(c.wrap_guard() > Duration::from_secs(86_400 * 12), "{secs}");
        }
        let year = Clock::new(Instant::now(), Duration::from_secs(86_400 * 365));
        assert_eq!(year.shift, 28);
    }

    #[test]
    fn ticks_floor_before_and_after_the_epoch() {
        let e = Instant::now();
        let c = Clock::new(e, Duration::from_secs(300));
        assert_eq!(c.ticks(e), 0);
        assert_eq!(c.ticks(e + TICK * 3), 3);
        assert_eq!(c.ticks(e + TICK * 3 + TICK / 2), 3);
        if let Some(before) = e.checked_sub(TICK / 2) {
            assert_eq!(c.ticks(before), u32::MAX, "-1: floored");
            assert_eq!(Clock::age(c.ticks(e + TICK), c.ticks(before)), 2);
        }
    }

    #[test]
    fn ages_are_right_across_the_wrap_around() {
        let e = Instant::now();
        let c = Clock::new(e, Duration::from_secs(300));
        let near = e + TICK * (u32::MAX - 5);
        let seen = c.ticks(near);
        let now = c.ticks(near + TICK * 10);
        assert!(now < seen, "wrapped");
        assert_eq!(Clock::age(now, seen), 10);
        assert_eq!(Clock::age(seen, now), 0, "ahead of now: age zero");
        assert_eq!(Clock::later(seen, now), now);
        assert_eq!(Clock::later(now, seen), now);
        assert!(!c.expired(now, seen));
        let much_later = c.ticks(near + Duration::from_secs(300));
        assert!(c.expired(much_later, seen));
        // Announcement stamps wrap with the ticks.
        let eighth = Duration::from_secs(300) / 8;
        assert!(!c.announce_due(now, c.stamp(seen)));
        assert!(c.announce_due(c.ticks(near + eighth), c.stamp(seen)));
        assert!(!c.announce_due(c.ticks(near + eighth - eighth / 32), c.stamp(seen)));
    }

    #[test]
    fn stamps_are_continuous_across_the_tick_wrap_around_for_long_aging() {
        let e = Instant::now();
        let year = Duration::from_secs(86_400 * 365);
        let c = Clock::new(e, year);
        let tick = c.duration(1);
        let near = e + tick * (u32::MAX - 2);
        let (t0, t1) = (c.ticks(near), c.ticks(near + tick * 4));
        assert!(t1 < t0);
        let s = c.announce_shift;
        let unwrapped = ((u64::from(t0) + 4) >> s) - (u64::from(t0) >> s);
        assert_eq!(u64::from(c.stamp(t1).wrapping_sub(c.stamp(t0))), unwrapped);
        assert!(!c.announce_due(t1, c.stamp(t0)));
        assert!(c.announce_due(c.ticks(near + year / 8), c.stamp(t0)));
        assert!(!c.expired(c.ticks(near + year - tick * 3), t0));
        assert!(c.expired(c.ticks(near + year), t0));
    }
}
