//! The janitor: the only owner of the timing wheel and the only thread that frees entries.
//!
//! Each run (on the janitor thread every wheel tick, an eighth of `tick`, but at least every
//! 100 ms and every 10 ms while its intakes are busy or due entries are left past the
//! budget; or whenever an embedder in manual mode calls it):
//!
//! 1. reads the clock once and publishes the coarse time that the hot path reads;
//! 2. takes new entries from the intake and files them in the wheel (or frees them at
//!    once if they were already unlinked from the table);
//! 3. takes unlinked entries from the table's intake, unfiles them and retires them;
//! 4. hands out due timers, at most `budget` of them: an entry whose deadline moved is
//!    filed again; one that is due is claimed with a CAS on its `life` word and removed
//!    from the table; the rest of a mass expiry waits for the next run;
//! 5. retires its own removals and pushes the epoch forward so that retired entries
//!    (and their values) are freed before the next run.
//!
//! Nothing here ever blocks a caller: callers never wait for the janitor, and the janitor
//! only takes a try-lock against a second janitor run (an embedder calling
//! [`run`](Janitor::run) from two threads).

use std::ptr::NonNull;

use crate::clock::TimeScale;
use crate::coarse_time::{CoarseTime, Reading};
use crate::intake::Intake;
use crate::reclaim::{self, release_janitor_hold};
use crate::sync::epoch::{self, Guard};
use crate::sync::{fence, prefetch, AtomicBool, AtomicU64, Ordering, UnsafeCell};
use crate::table::{life, Entry, Removal, Table};
use crate::wheel::{self, Wheel};

/// What one janitor run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JanitorRun {
    /// The wheel tick the run advanced to.
    pub now: u64,
    /// New entries filed in the wheel.
    pub filed: usize,
    /// Due timers handed out by the wheel (at most the budget).
    pub handled: usize,
    /// Entries this run expired and removed itself. An entry it claimed that a racing
    /// remover unlinked first is gone all the same but not counted here.
    pub expired: usize,
    /// Removed entries the janitor let go of (their memory is freed once their value is).
    pub retired: usize,
    /// Due entries given a new deadline instead of expiring: their deadline came from a
    /// touch dated while the janitor was late, so the touch may have been an instant ago.
    pub redated: usize,
    /// Whether due timers were left for the next run (the budget ran out).
    pub more_due: bool,
    /// Entries filed in the wheel after the run.
    pub timers: usize,
    /// Whether the run did nothing because another run was in progress or the janitor
    /// was stopped.
    pub skipped: bool,
}

impl JanitorRun {
    /// Removed entries taken from the intakes in one run beyond which the janitor thread
    /// runs again after [`HURRY`](crate::ticker::HURRY) rather than a whole wheel tick
    /// later: a removed entry's shell (its ~100 bytes, not its value) is freed only once
    /// the janitor has taken it, so under a steady stream of removals the shells held are
    /// bounded by about 10 ms of removals, not by one wheel tick (1.875 s at the
    /// chunkserver's 15 s tick: 7.5 M shells, 850 MB, measured at 4 M removals a second).
    const HURRY_RETIRED: usize = 1024;

    /// Whether the janitor thread should run again soon: due entries are left past the
    /// budget, or the intakes were busy.
    pub(crate) fn wants_another_soon(&self) -> bool {
        !self.skipped && (self.more_due || self.retired >= Self::HURRY_RETIRED)
    }
}

/// Counters over the janitor's life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JanitorStats {
    /// Runs completed.
    pub runs: u64,
    /// Entries the janitor expired and removed itself (see [`JanitorRun::expired`]).
    pub expired: u64,
    /// Removed entries the janitor let go of.
    pub retired: u64,
    /// Entries whose drop panicked (process-wide: drops run wherever the epoch runs them).
    pub drop_panics: u64,
}

/// The janitor's private state and the try-lock that guards it.
pub(crate) struct Janitor<K, V> {
    running: AtomicBool,
    /// Set by `done`; the run that holds the try-lock then (or the stopper itself)
    /// makes the last run and sets `stopped`.
    stop_requested: AtomicBool,
    /// Set once the janitor has stopped for good.
    stopped: AtomicBool,
    wheel: UnsafeCell<Wheel<Entry<K, V>>>,
    budget: usize,
    runs: AtomicU64,
    expired: AtomicU64,
    retired: AtomicU64,
}

// SAFETY: the wheel (raw pointers to entries) is only touched by the holder of `running`.
unsafe impl<K: Send + Sync, V: Send + Sync> Send for Janitor<K, V> {}
// SAFETY: as above.
unsafe impl<K: Send + Sync, V: Send + Sync> Sync for Janitor<K, V> {}

/// Releases the janitor's try-lock, also when a run unwinds.
struct Running<'a>(&'a AtomicBool);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
        // Pairs with the fence in `Janitor::stop` (a store-buffering handshake): either the
        // stopper's `try_lock` sees this release, or `finish_stop`, which every run calls
        // after this, sees its request. Fences, not SeqCst accesses, because loom checks
        // fences but models SeqCst accesses as AcqRel (loom-tests model 7 found the gap).
        fence(Ordering::SeqCst);
    }
}

impl<K, V> Janitor<K, V> {
    pub(crate) fn new(levels: usize, now: u64, budget: usize) -> Janitor<K, V> {
        Janitor {
            running: AtomicBool::new(false),
            stop_requested: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            wheel: UnsafeCell::new(Wheel::new(levels, now)),
            budget: budget.max(1),
            runs: AtomicU64::new(0),
            expired: AtomicU64::new(0),
            retired: AtomicU64::new(0),
        }
    }

    pub(crate) fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    pub(crate) fn stats(&self) -> JanitorStats {
        JanitorStats {
            runs: self.runs.load(Ordering::Relaxed),
            expired: self.expired.load(Ordering::Relaxed),
            retired: self.retired.load(Ordering::Relaxed),
            drop_panics: reclaim::drop_panics(),
        }
    }

    fn try_lock(&self) -> Option<Running<'_>> {
        self.running
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .ok()
            .map(|_| Running(&self.running))
    }
}

impl<K, V> Janitor<K, V>
where
    K: std::hash::Hash + Eq,
{
    /// One run up to wheel tick `now`; see the module documentation.
    pub(crate) fn run<S: std::hash::BuildHasher>(
        &self,
        now: u64,
        time: &CoarseTime,
        scale: &TimeScale,
        table: &Table<K, V, S>,
        fresh: &Intake<K, V>,
    ) -> JanitorRun {
        let report = self.run_once(now, time, scale, table, fresh);
        self.finish_stop(time, scale, table, fresh);
        report
    }

    fn run_once<S: std::hash::BuildHasher>(
        &self,
        now: u64,
        time: &CoarseTime,
        scale: &TimeScale,
        table: &Table<K, V, S>,
        fresh: &Intake<K, V>,
    ) -> JanitorRun {
        let Some(_running) = self.try_lock() else {
            return JanitorRun { skipped: true, ..JanitorRun::default() };
        };
        if self.is_stopped() {
            return JanitorRun { skipped: true, ..JanitorRun::default() };
        }
        self.wheel.with_mut(|wheel| {
            // SAFETY: holding `running` gives exclusive access to the wheel.
            let wheel = unsafe { &mut *wheel };
            let report = self.run_locked(wheel, now, time, scale, table, fresh);
            self.runs.fetch_add(1, Ordering::Relaxed);
            self.expired.fetch_add(report.expired as u64, Ordering::Relaxed);
            self.retired.fetch_add(report.retired as u64, Ordering::Relaxed);
            report
        })
    }

    fn run_locked<S: std::hash::BuildHasher>(
        &self,
        wheel: &mut Wheel<Entry<K, V>>,
        now: u64,
        time: &CoarseTime,
        scale: &TimeScale,
        table: &Table<K, V, S>,
        fresh: &Intake<K, V>,
    ) -> JanitorRun {
        let now = now.max(wheel.elapsed());
        // Step 1: publish the time (and, if this run is late, the uncertain deadlines).
        let due = Due { time: time.publish(now, scale), redate_to: scale.deadline_after_touch(now) };
        let mut report = JanitorRun { now, ..JanitorRun::default() };
        let guard = epoch::pin();
        take_fresh(wheel, fresh, &due, table, &guard, &mut report);
        take_unlinked(wheel, table, &mut report);
        let mut ahead = Lookahead::new();
        let mut drained = false;
        // Caught so that a panic from user code here (the eager-release predicate, asked as
        // the janitor unlinks) strands none of the entries held ahead: off the wheel, they
        // would never be expired. The janitor thread contains the panic anyway; a manual
        // caller sees it re-raised below.
        let handled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| loop {
            while !drained && !ahead.is_full() && report.handled < self.budget {
                match wheel.pop_due(now) {
                    Some(entry) => {
                        report.handled += 1;
                        ahead.push(entry, table);
                    }
                    None => drained = true,
                }
            }
            let Some(entry) = ahead.pop() else { break };
            // SAFETY: handed-out entries are alive: an entry is freed only after its janitor
            // side lets go, which happens only once it is off the wheel and handled here (the
            // unlinked intake is taken only before and after this loop).
            unsafe { expire_or_refile(wheel, entry, &due, table, &guard, &mut report) };
        }));
        if let Err(panic) = handled {
            while let Some(timer) = ahead.pop() {
                // SAFETY: held, so alive (as above) and on no wheel list. Filed again no earlier
                // than the next tick: the next run handles it as if this one had not reached it
                // (one removed meanwhile is unfiled again by `take_unlinked`).
                let deadline = life::deadline(unsafe { timer.as_ref() }.load_life());
                let filed = unsafe { wheel.insert(timer, deadline.max(wheel.elapsed().saturating_add(1))) };
                debug_assert!(filed.is_ok(), "filed after elapsed");
            }
            std::panic::resume_unwind(panic);
        }
        report.more_due = wheel.has_due(now);
        if !report.more_due {
            time.settle(now);
        }
        report.timers = wheel.len();
        wheel.advance_to(now);
        take_unlinked(wheel, table, &mut report);
        guard.flush();
        drop(guard);
        // Push the epoch on so that the values this run removed are freed now, not whenever
        // other threads happen to collect: each flush may advance the epoch once and runs
        // up to a few hundred deferred drops.
        for _ in 0..3 + report.expired / 256 {
            epoch::pin().flush();
        }
        report
    }

    /// Stops the janitor for good: a last run takes the intakes (so that nothing is left
    /// on them for a janitor that will never come), then removers retire entries
    /// themselves. Never waits: if a run is in progress (another thread's manual run, or
    /// this very thread, when a destructor calls `done` during a run), that run makes
    /// the last run as it finishes.
    pub(crate) fn stop<S: std::hash::BuildHasher>(
        &self,
        time: &CoarseTime,
        scale: &TimeScale,
        table: &Table<K, V, S>,
        fresh: &Intake<K, V>,
    ) {
        self.stop_requested.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst); // see `Running::drop`
        self.finish_stop(time, scale, table, fresh);
    }

    fn finish_stop<S: std::hash::BuildHasher>(
        &self,
        time: &CoarseTime,
        scale: &TimeScale,
        table: &Table<K, V, S>,
        fresh: &Intake<K, V>,
    ) {
        if !self.stop_requested.load(Ordering::Relaxed) || self.is_stopped() {
            return;
        }
        // Broken on purpose under `loom_broken = "stop_without_lock"`: the last run goes
        // ahead while another run may hold the wheel.
        let _running = match self.try_lock() {
            Some(running) => Some(running),
            None if cfg!(loom_broken = "stop_without_lock") => None,
            None => return, // the holder sees the request when it releases the lock
        };
        if self.is_stopped() {
            return;
        }
        self.wheel.with_mut(|wheel| {
            // SAFETY: holding `running` gives exclusive access to the wheel.
            let wheel = unsafe { &mut *wheel };
            let guard = epoch::pin();
            let mut report = JanitorRun::default();
            let now = wheel.elapsed();
            let due = Due { time: time.read().at(now), redate_to: scale.deadline_after_touch(now) };
            take_fresh(wheel, fresh, &due, table, &guard, &mut report);
            take_unlinked(wheel, table, &mut report);
        });
        // From here on, removers retire entries themselves.
        table.mark_janitor_gone();
        self.stopped.store(true, Ordering::Release);
    }
}

/// What a run expires against: its reading of the coarse time, and the deadline it gives
/// an entry whose deadline is uncertain (as if touched at the run's time).
struct Due {
    time: Reading,
    redate_to: u64,
}

/// Due timers handed out ahead of the one being expired.
///
/// Expiring an entry is a chain of cache misses: the entry, its bucket, the first node of
/// the bucket's run (where the unlinking search starts). Popping [`AHEAD`] timers ahead
/// lets each of those loads start while earlier entries are handled, so the misses
/// overlap instead of adding up (docs/performance.md, "Expiry"). Only hints are issued:
/// the entries are handled in the order the wheel handed them out, as without it.
struct Lookahead<K, V> {
    ring: [Option<NonNull<Entry<K, V>>>; AHEAD],
    /// Timers pushed so far; the next goes to `pushed % AHEAD`.
    pushed: usize,
    /// Timers popped so far; never more than `pushed`, never `AHEAD` fewer.
    popped: usize,
}

/// Timers held ahead of the one being expired. The lags were tuned on 1 M-entry expiries
/// (lags of 2, 3, 5, 8 and 10 entries: 8 was fastest, 2 slowest by 20%).
const AHEAD: usize = 24;
/// How many pushes after an entry's own its bucket is prefetched (by then the entry's line,
/// which holds the split-order key naming the bucket, has arrived).
const BUCKET_LAG: usize = 8;
/// How many pushes after an entry's own the first node of its bucket's run is prefetched
/// (by then the bucket, which points at that node, has arrived).
const RUN_LAG: usize = 16;

impl<K: std::hash::Hash + Eq, V> Lookahead<K, V> {
    fn new() -> Self {
        Lookahead { ring: [None; AHEAD], pushed: 0, popped: 0 }
    }

    fn is_full(&self) -> bool {
        self.pushed - self.popped == AHEAD
    }

    /// Adds a handed-out timer, and moves the earlier ones' prefetches a step on.
    fn push<S: std::hash::BuildHasher>(&mut self, timer: NonNull<Entry<K, V>>, table: &Table<K, V, S>) {
        debug_assert!(!self.is_full());
        prefetch(timer.as_ptr());
        self.ring[self.pushed % AHEAD] = Some(timer);
        for (lag, step) in [(BUCKET_LAG, Removal::Bucket), (RUN_LAG, Removal::Run)] {
            if let Some(at) = self.pushed.checked_sub(lag).filter(|&at| at >= self.popped) {
                let earlier = self.ring[at % AHEAD].expect("held timers are in the ring");
                // SAFETY: held here, so handed out and not handled yet: alive (see `run_locked`).
                table.prefetch_removal(unsafe { earlier.as_ref() }, step);
            }
        }
        self.pushed += 1;
    }

    /// The oldest held timer.
    fn pop(&mut self) -> Option<NonNull<Entry<K, V>>> {
        if self.popped == self.pushed {
            return None;
        }
        let timer = self.ring[self.popped % AHEAD].take();
        self.popped += 1;
        timer
    }
}

/// Step 2: file new entries, or free those already unlinked.
fn take_fresh<K: std::hash::Hash + Eq, V, S: std::hash::BuildHasher>(
    wheel: &mut Wheel<Entry<K, V>>,
    fresh: &Intake<K, V>,
    due: &Due,
    table: &Table<K, V, S>,
    guard: &Guard,
    report: &mut JanitorRun,
) {
    fresh.take_all(|entry| {
        // SAFETY: entries on the intake are alive: the janitor side has not let go of them.
        let before = unsafe { (*entry).life.fetch_or(life::TAKEN, Ordering::AcqRel) };
        if before & life::UNLINKED != 0 {
            // Unlinked before we took it: the unlinker left the janitor's hold to us.
            // SAFETY: unlinked, off the intake now and never filed.
            unsafe { release_janitor_hold(entry) };
            report.retired += 1;
            return;
        }
        let timer = NonNull::new(entry).expect("intake entries are non-null");
        // SAFETY: alive as above, and on no wheel list yet.
        match unsafe { wheel.insert(timer, life::deadline(before)) } {
            Ok(()) => report.filed += 1,
            // Due already: decide now.
            // SAFETY: as above.
            Err(timer) => unsafe { expire_or_refile(wheel, timer, due, table, guard, report) },
        }
    });
}

/// Step 3: retire entries the table unlinked after we took them.
fn take_unlinked<K, V, S>(wheel: &mut Wheel<Entry<K, V>>, table: &Table<K, V, S>, report: &mut JanitorRun) {
    table.unlinked().take_all(|entry| {
        let timer = NonNull::new(entry).expect("intake entries are non-null");
        // SAFETY: alive until we let go; only the janitor touches its timer links.
        unsafe {
            wheel.remove(timer);
            release_janitor_hold(entry);
        }
        report.retired += 1;
    });
}

/// Step 4 for one handed-out timer: file it again if its deadline moved past `now`,
/// re-date and re-file it if its deadline is uncertain (a late run: see
/// [`crate::coarse_time`]), claim and remove it if it is due, leave it unfiled if it was
/// removed meanwhile.
///
/// # Safety
/// `timer` is a live entry on no wheel list.
unsafe fn expire_or_refile<K: std::hash::Hash + Eq, V, S: std::hash::BuildHasher>(
    wheel: &mut Wheel<Entry<K, V>>,
    timer: NonNull<Entry<K, V>>,
    due: &Due,
    table: &Table<K, V, S>,
    guard: &Guard,
    report: &mut JanitorRun,
) {
    // SAFETY: the caller guarantees the entry is alive.
    let entry = unsafe { timer.as_ref() };
    debug_assert_eq!(unsafe { wheel::list_of(timer) }, wheel::NOT_FILED);
    let now = due.time.now;
    let mut state = entry.load_life();
    loop {
        if state & (life::UNLINKED | life::EXPIRED) != 0 || entry.is_removed() {
            // Removed by someone else: its unlink hand-off retires it; keep it unfiled.
            return;
        }
        let deadline = life::deadline(state);
        if deadline > now {
            // Touched since it was filed: lazy re-filing.
            // SAFETY: alive and unfiled, as the caller guarantees.
            let filed = unsafe { wheel.insert(timer, deadline) };
            debug_assert!(filed.is_ok(), "deadline {deadline} > now {now} >= elapsed");
            return;
        }
        if due.time.is_uncertain(deadline) {
            // Perhaps touched an instant ago, dated by a stale time: touch it as of now,
            // for the caller that may have. A CAS like a touch's: a real touch or a
            // remover that comes first makes it fail, and we look again.
            let redated = (state & !life::DEADLINE) | due.redate_to;
            match entry.life.compare_exchange(state, redated, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    // SAFETY: alive and unfiled, as the caller guarantees.
                    let filed = unsafe { wheel.insert(timer, due.redate_to) };
                    debug_assert!(filed.is_ok(), "re-dated to {} > now {now}", due.redate_to);
                    report.redated += 1;
                    return;
                }
                Err(seen) => {
                    state = seen;
                    continue;
                }
            }
        }
        // Due. The CAS decides the race with touches: a touch that moved the deadline
        // first makes it fail (and we look again); once it succeeds, every touch fails.
        if cfg!(loom_broken = "janitor_blind_claim") {
            // Broken on purpose: claim without checking that no touch moved the deadline.
            entry.life.fetch_or(life::EXPIRED, Ordering::SeqCst);
            if table.remove(entry, guard) {
                report.expired += 1;
            }
            return;
        }
        // SeqCst: ordered against a remover's SeqCst mark (see `Core::fetch_and_delete`).
        match entry.life.compare_exchange(state, state | life::EXPIRED, Ordering::SeqCst, Ordering::Acquire) {
            Ok(_) => {
                // Only the remover that marks the entry owns it: if a `delete` or
                // `fetch_and_delete` marked it first, it is theirs, not an expiry.
                if table.remove(entry, guard) {
                    report.expired += 1;
                }
                return;
            }
            Err(seen) => state = seen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::JanitorRun;

    #[test]
    fn a_run_asks_for_another_soon_when_it_left_work_or_found_busy_intakes() {
        let quiet = JanitorRun { retired: JanitorRun::HURRY_RETIRED - 1, ..JanitorRun::default() };
        assert!(!quiet.wants_another_soon());
        assert!(JanitorRun { retired: JanitorRun::HURRY_RETIRED, ..quiet }.wants_another_soon());
        assert!(JanitorRun { more_due: true, ..quiet }.wants_another_soon());
        assert!(!JanitorRun { more_due: true, skipped: true, ..quiet }.wants_another_soon());
    }
}
