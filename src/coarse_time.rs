//! The coarse time the hot path reads instead of a clock, and what a late janitor does
//! about the touches it dated.
//!
//! The janitor publishes the time (in wheel ticks) at each run; `set` and `get` date
//! their touches with it. A run that comes late (the janitor thread descheduled, an
//! embedder's loop stuck) finds that every touch since the last publication was dated
//! with the old time, however late it really came: their deadlines, all equal to
//! `deadline_after_touch(old time)`, may lie in the past although the touch was an instant
//! ago. Such deadlines are *uncertain*: the run publishes their range before the new time,
//! and until the janitor has gone past them, an entry whose deadline is uncertain counts as
//! live. The janitor re-dates each one it meets to a deadline from the new time instead of
//! expiring it. A stall thus never expires a touched entry early; it may keep an entry up to
//! the stall's length longer. (See `docs/design.md`, "A late janitor".)

use crate::clock::{TimeScale, TOUCH_MARGIN};
use crate::sync::{AtomicU64, CachePadded, Ordering};

/// The coarse time's value once the janitor has stopped: callers then read the clock.
pub(crate) const READ_THE_CLOCK: u64 = u64::MAX;

/// Published by the janitor, read by every call: kept on one cache line that only the
/// janitor writes.
pub(crate) struct CoarseTime {
    fields: CachePadded<Fields>,
}

struct Fields {
    /// The coarse time in wheel ticks, or [`READ_THE_CLOCK`].
    now: AtomicU64,
    /// Whether runs come on a known cadence, so that a late one means a stall (the janitor
    /// thread's). In manual mode the embedder's runs *are* the clock: touches are dated by
    /// the last run by definition, and a gap between runs is not a stall.
    detects_stalls: bool,
    /// The uncertain deadlines: `lo..=hi` (empty when `lo > hi`).
    uncertain_lo: AtomicU64,
    uncertain_hi: AtomicU64,
    /// Janitor-private: every entry whose deadline is at most this has been handed out by
    /// the wheel (expired, re-filed or re-dated).
    settled: AtomicU64,
}

/// One reading of [`CoarseTime`]: the time and the uncertain deadlines at that time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reading {
    pub(crate) now: u64,
    uncertain_lo: u64,
    uncertain_hi: u64,
}

impl Reading {
    /// Whether an entry with this deadline still lives at this reading.
    #[inline]
    pub(crate) fn keeps(&self, deadline: u64) -> bool {
        deadline > self.now || self.is_uncertain(deadline)
    }

    /// Whether `deadline` may come from a touch dated by a stale time.
    #[inline]
    pub(crate) fn is_uncertain(&self, deadline: u64) -> bool {
        self.uncertain_lo <= deadline && deadline <= self.uncertain_hi
    }

    /// This reading at another time (the clock's, once the janitor has stopped).
    pub(crate) fn at(self, now: u64) -> Reading {
        Reading { now, ..self }
    }
}

impl CoarseTime {
    pub(crate) fn new(now: u64, detects_stalls: bool) -> CoarseTime {
        CoarseTime {
            fields: CachePadded::new(Fields {
                now: AtomicU64::new(now),
                detects_stalls,
                uncertain_lo: AtomicU64::new(u64::MAX),
                uncertain_hi: AtomicU64::new(0),
                settled: AtomicU64::new(now),
            }),
        }
    }

    /// The time alone, for callers that only date a touch (`set`).
    #[inline]
    pub(crate) fn now(&self) -> u64 {
        self.fields.now.load(Ordering::Acquire)
    }

    /// The hot path's reading. The range is read after the time (Acquire), so it is at
    /// least as new as the range published with that time (it may be newer; see
    /// [`CoarseTime::publish`] for why that is harmless).
    #[inline]
    pub(crate) fn read(&self) -> Reading {
        let f = &*self.fields;
        let now = f.now.load(Ordering::Acquire);
        // `lo` before `hi`, both Acquire, pairing with the janitor's Release stores (`hi`
        // first, then `lo`): a reader that sees a new `lo` sees the `hi` stored with it
        // and every re-dating the janitor did before it.
        let uncertain_lo = f.uncertain_lo.load(Ordering::Acquire);
        let uncertain_hi = f.uncertain_hi.load(Ordering::Acquire);
        Reading { now, uncertain_lo, uncertain_hi }
    }

    /// Janitor only (under its lock): publishes `now` unless the janitor has stopped, first
    /// widening the uncertain range if this run is late. Returns the reading the run works
    /// with.
    pub(crate) fn publish(&self, now: u64, scale: &TimeScale) -> Reading {
        let f = &*self.fields;
        let before = f.now.load(Ordering::Acquire);
        if f.detects_stalls && before != READ_THE_CLOCK && now > before.saturating_add(TOUCH_MARGIN) {
            // Late: more than the margin the deadlines allow for. Touches since `before`
            // was published may have come at any moment up to now.
            // (`before` only grows, so `uncertain` is at least any earlier range's end.)
            let uncertain = scale.deadline_after_touch(before);
            let (lo, hi) = (f.uncertain_lo.load(Ordering::Relaxed), f.uncertain_hi.load(Ordering::Relaxed));
            // A range the janitor has not gone past yet may still hold entries: extend it.
            let still_held = lo <= hi && hi > f.settled.load(Ordering::Relaxed);
            // The end first: a reader mixing this run's values with older ones then sees a
            // range too wide, never one too narrow (too wide is harmless: an entry it keeps
            // is touched, and the janitor's claim still wins over any touch).
            f.uncertain_hi.store(uncertain, Ordering::Release);
            f.uncertain_lo.store(if still_held { lo } else { uncertain }, Ordering::Release);
        }
        if before != READ_THE_CLOCK && now > before {
            // Release: a reader of the new time sees the range stored above. A CAS, not a
            // store: `done` may have switched the hot path to the clock meanwhile.
            let _ = f.now.compare_exchange(before, now, Ordering::Release, Ordering::Relaxed);
        }
        self.read().at(now)
    }

    /// Janitor only: every entry with a deadline up to `now` has been handed out.
    pub(crate) fn settle(&self, now: u64) {
        self.fields.settled.store(now, Ordering::Relaxed);
    }

    /// From now on callers read the clock themselves (the janitor has stopped).
    pub(crate) fn switch_to_clock(&self) {
        self.fields.now.store(READ_THE_CLOCK, Ordering::Release);
    }
}
