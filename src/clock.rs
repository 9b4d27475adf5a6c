//! Time for the engine: where "now" comes from, and how durations become wheel ticks.
//!
//! The hot path never reads a clock. The janitor reads the [`Clock`] once per run,
//! converts it to wheel ticks and publishes that as the *coarse time*, one atomic the
//! hot path loads. Tests and embedders inject a [`ManualClock`] to make expiry
//! deterministic.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A monotonic source of time for a buffer's expiry.
pub trait Clock: Send + Sync + 'static {
    /// Time elapsed since an origin of the clock's choosing. Must never go backwards.
    fn now(&self) -> Duration;
}

/// The default clock: a monotonic [`Instant`] (never the wall clock, which may step back).
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    origin: Instant,
}

impl SystemClock {
    /// A clock whose origin is now.
    pub fn new() -> SystemClock {
        SystemClock { origin: Instant::now() }
    }
}

impl Default for SystemClock {
    fn default() -> SystemClock {
        SystemClock::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }
}

/// A clock that moves only when told to: for deterministic expiry tests and for
/// embedders that drive the janitor from their own event loop.
///
/// Clones share one time.
#[derive(Clone, Default)]
pub struct ManualClock {
    nanos: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock standing at zero.
    pub fn new() -> ManualClock {
        ManualClock::default()
    }

    /// Moves the clock forward by `by` (saturating at about 584 years).
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        let _ = self.nanos.fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| Some(now.saturating_add(by)));
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::Acquire))
    }
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManualClock").field("now", &self.now()).finish()
    }
}

/// The wheel's unit of time and the conversions to it.
///
/// The wheel ticks eight times per user `tick`: the coarse time is then at most about an
/// eighth of a tick stale, so an entry can be kept alive for at least `expire` after its
/// last touch and still be gone within `expire + tick` (see `docs/design.md`, "Time").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimeScale {
    /// Length of one wheel tick in nanoseconds (at least 1).
    pub(crate) resolution_nanos: u64,
    /// `expire` in wheel ticks, rounded up; [`NEVER`] when it does not fit.
    pub(crate) expire_ticks: u64,
}

/// Wheel ticks per user tick.
pub(crate) const TICKS_PER_USER_TICK: u32 = 8;

/// Wheel ticks added to a touch's coarse time (see [`TimeScale::deadline_after_touch`]).
pub(crate) const TOUCH_MARGIN: u64 = 2;

/// A deadline that never comes. Deadlines live in the low 59 bits of an entry's state.
pub(crate) const NEVER: u64 = (1 << 59) - 1;

impl TimeScale {
    pub(crate) fn new(tick: Duration, expire: Duration) -> TimeScale {
        let resolution = tick / TICKS_PER_USER_TICK;
        let resolution_nanos = u64::try_from(resolution.as_nanos()).unwrap_or(u64::MAX).max(1);
        let expire_ticks = expire
            .as_nanos()
            .div_ceil(u128::from(resolution_nanos))
            .try_into()
            .map_or(NEVER, |ticks: u64| ticks.min(NEVER));
        TimeScale { resolution_nanos, expire_ticks }
    }

    /// The wheel tick that `now` falls in; saturates below [`NEVER`], so that time never
    /// reaches a deadline that never comes.
    pub(crate) fn ticks(&self, now: Duration) -> u64 {
        let ticks = now.as_nanos() / u128::from(self.resolution_nanos);
        u64::try_from(ticks).map_or(NEVER - 1, |ticks| ticks.min(NEVER - 1))
    }

    /// The deadline of an entry touched at coarse time `now`: the first wheel tick at which
    /// it is dead. [`TOUCH_MARGIN`] ticks are added because the touch really happened up
    /// to two ticks after `now`: the coarse time is published when a janitor run starts
    /// (somewhere inside a tick, rounded down), and the next run publishes one tick later.
    pub(crate) fn deadline_after_touch(&self, now: u64) -> u64 {
        if self.expire_ticks >= NEVER {
            return NEVER;
        }
        now.saturating_add(TOUCH_MARGIN).saturating_add(self.expire_ticks).min(NEVER)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_rounds_expire_up_and_keeps_an_eighth_tick_resolution() {
        let scale = TimeScale::new(Duration::from_millis(80), Duration::from_millis(1005));
        assert_eq!(scale.resolution_nanos, 10_000_000);
        assert_eq!(scale.expire_ticks, 101);
        assert_eq!(scale.ticks(Duration::from_millis(99)), 9);
        assert_eq!(scale.deadline_after_touch(9), 112);
    }

    #[test]
    fn huge_durations_saturate_to_never() {
        // A tick of Duration::MAX: a wheel tick is 584 years, which no clock reaches.
        let scale = TimeScale::new(Duration::MAX, Duration::MAX);
        assert_eq!(scale.resolution_nanos, u64::MAX);
        assert_eq!(scale.ticks(Duration::from_secs(1_000_000)), 0);
        let scale = TimeScale::new(Duration::from_nanos(1), Duration::MAX);
        assert_eq!(scale.resolution_nanos, 1);
        assert_eq!(scale.expire_ticks, NEVER);
        assert_eq!(scale.ticks(Duration::MAX), NEVER - 1, "time never reaches NEVER");
        assert_eq!(scale.deadline_after_touch(NEVER - 1), NEVER);
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::new();
        let shared = clock.clone();
        assert_eq!(clock.now(), Duration::ZERO);
        shared.advance(Duration::from_secs(3));
        assert_eq!(clock.now(), Duration::from_secs(3));
        clock.advance(Duration::MAX);
        assert_eq!(clock.now(), Duration::from_nanos(u64::MAX));
    }
}
