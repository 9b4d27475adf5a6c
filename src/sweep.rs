//! Pushing the epoch on until the janitor's removals are freed.
//!
//! A janitor run that removed something flushes the epoch a few times, so that the values
//! it deferred are dropped now rather than whenever some thread next collects. A flush
//! advances the epoch only if no thread is pinned in an older epoch at that moment: a
//! thread pinned throughout the run (preempted inside a `get`, say) holds all of that
//! run's flushes back. Later runs may find nothing to do, and an idle run does not pin,
//! so without more the values would wait until some thread happens to pin 128 times; on a
//! quiet server, for hours.
//!
//! So the run also defers a *mark* behind what it deferred: a numbered note that the
//! epoch runs once it has taken off its queue everything the janitor's thread deferred
//! before it (the epoch's queue is first in, first out). Until the latest mark has run, each
//! later run, idle or not, flushes again ([`EpochSweep::chase`]), and the janitor thread
//! does not sleep past its next tick, backing off while the chases make no progress: a
//! thread pinned for good costs each map that removed something before it one short chase
//! per wake, the wakes doubling in interval up to the 10 s a map sleeps anyway.
//!
//! Under loom no mark is deferred: the models would explore each extra pin, and what they
//! check (who frees what) does not depend on when the epoch advances.

use crate::sync::epoch;
use crate::sync::{Arc, AtomicBool, AtomicU32, AtomicU64, Ordering};

/// The flushes a chase makes at most: two advances free the mark's bag, and a few more
/// collect the bags queued before it (8 a flush); a larger backlog takes a few runs.
const CHASE_FLUSHES: u32 = 4;

/// The janitor's record of its marks. Written only by the run holding the janitor's
/// try-lock; the epoch writes `ran`, from whichever thread runs the mark.
pub(crate) struct EpochSweep {
    /// The number of the latest mark deferred (0: none yet).
    sent: AtomicU64,
    /// The highest mark the epoch has run. Shared with the marks, which may run after the
    /// janitor is gone.
    ran: Arc<AtomicU64>,
    /// Chases since the latest mark that ended with it still queued (a thread stays
    /// pinned): the janitor thread backs off by that many doublings of its period.
    misses: AtomicU32,
}

impl EpochSweep {
    pub(crate) fn new() -> EpochSweep {
        EpochSweep { sent: AtomicU64::new(0), ran: Arc::new(AtomicU64::new(0)), misses: AtomicU32::new(0) }
    }

    /// After a run that removed `removed` entries (its deferred drops queued on this
    /// thread): defers a mark behind them and flushes until it has run, at most 3 times
    /// plus once per 256 removed (each flush may advance the epoch once and collects up to
    /// 8 bags, 512 deferred drops; two advances free a bag).
    pub(crate) fn after_removals(&self, removed: usize) {
        let flushes = 3 + (removed / 256).min(u32::MAX as usize - 3) as u32;
        if !cfg!(crossbeam_loom) {
            let mark = self.sent.load(Ordering::Relaxed) + 1;
            self.sent.store(mark, Ordering::Relaxed);
            self.misses.store(0, Ordering::Relaxed);
            let ran = Arc::clone(&self.ran);
            // Two words: the closure is stored in the bag, not boxed.
            epoch::pin().defer(move || {
                ran.fetch_max(mark, Ordering::Release);
            });
        }
        self.flush_while_pending(flushes);
    }

    /// Whether the latest mark has not run yet: the drops deferred before it may still be
    /// waiting.
    pub(crate) fn pending(&self) -> bool {
        self.ran.load(Ordering::Acquire) < self.sent.load(Ordering::Relaxed)
    }

    /// Flushes again (a few times) if the latest mark has not run; returns whether it still
    /// has not.
    pub(crate) fn chase(&self) -> bool {
        if !self.pending() {
            return false;
        }
        self.flush_while_pending(CHASE_FLUSHES);
        let pending = self.pending();
        if pending {
            let misses = self.misses.load(Ordering::Relaxed);
            self.misses.store(misses.saturating_add(1), Ordering::Relaxed);
        }
        pending
    }

    /// Chases since the latest mark that ended with it still queued.
    pub(crate) fn misses(&self) -> u32 {
        self.misses.load(Ordering::Relaxed)
    }

    /// Flushes up to `flushes` times, stopping once the latest mark has run (without a mark,
    /// under loom, all of them).
    fn flush_while_pending(&self, flushes: u32) {
        for _ in 0..flushes {
            epoch::pin().flush();
            if !cfg!(crossbeam_loom) && !self.pending() {
                return;
            }
        }
    }
}

/// Flushes the epoch until a marker deferred now has run (bounded: a thread pinned forever
/// elsewhere would hold it back indefinitely). For the map's drop, which frees what the
/// epoch still holds of it once, instead of chasing over later runs.
pub(crate) fn drain_epoch_queue() {
    const MAX_FLUSHES: usize = if cfg!(crossbeam_loom) { 8 } else { 100_000 };
    let ran = Arc::new(AtomicBool::new(false));
    {
        let ran = Arc::clone(&ran);
        let guard = epoch::pin();
        guard.defer(move || ran.store(true, Ordering::Release));
        guard.flush();
    }
    for _ in 0..MAX_FLUSHES {
        if ran.load(Ordering::Acquire) {
            return;
        }
        epoch::pin().flush();
    }
}
