//! The janitor: the only owner of the timing wheel. It removes what is due and lets go of
//! removed entries, one grace period after it takes them (one epoch deferral a run);
//! whichever of its hold and the value's lets go second frees an entry (`crate::reclaim`).
//!
//! Each run (on the process's janitor thread, when the map's earliest entry may be due, soon
//! after entries arrive or are removed, every 10 ms while its intakes are busy, and at once
//! while due entries are left past the budget or the time limit: see `crate::scheduler`; or
//! whenever an embedder in manual mode calls it):
//!
//! 1. reads the clock (the hot path reads it too: no caller depends on the janitor's time);
//! 2. takes new entries from the intake and files them in the wheel (or lets go of them
//!    if they were already unlinked from the table);
//! 3. takes unlinked entries from the table's intake, unfiles them and lets go of them;
//! 4. hands out due timers, at most `budget` of them and for at most about one wheel tick
//!    of time ([`run_time_limit`]): an entry whose deadline moved is filed again; one that
//!    is due is claimed with a CAS on its `life` word and removed from the table; the rest
//!    of a mass expiry waits for the next run, which the janitor thread starts at once;
//! 5. moves a migration of the table under way along, if any, for what is left of its
//!    time (at least a few thousand slots): writers help only while they write, so this is
//!    how a migration they left behind ends and frees its old slot array;
//! 6. lets go of the entries its own removals unlinked, defers the release of every entry
//!    it let go of (one closure for the run, `crate::reclaim::JanitorReleases`) and pushes
//!    the epoch forward so that they (and the values removed) are freed before the next run.
//!
//! A run that finds both intakes empty, nothing due and no migration under way stops after
//! step 1, before pinning:
//! an idle map's run flushes no epoch (a flush walks every thread registered with it).
//!
//! Nothing here ever blocks a caller: callers never wait for the janitor, and the janitor
//! only takes a try-lock against a second janitor run (an embedder calling
//! [`run`](Janitor::run) from two threads).

use std::ptr::NonNull;

use crate::clock::{TimeScale, TimeSource};
use crate::entry::Entry;
use crate::intake::Intake;
use crate::life::Claim;
use crate::reclaim::{self, JanitorReleases, Taken};
use crate::sweep::EpochSweep;
use crate::sync::epoch::{self, Guard};
use crate::sync::{fence, prefetch, AtomicBool, AtomicU64, Ordering, UnsafeCell};
use crate::table::Table;
use crate::ticker::Next;
use crate::weights::Weights;
use crate::wheel::{self, Wheel};

/// What one janitor run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct JanitorRun {
    /// The wheel tick the run advanced to.
    pub now: u64,
    /// New entries filed in the wheel.
    pub filed: usize,
    /// Due timers handed out by the wheel (at most the budget).
    pub handled: usize,
    /// Entries this run expired: claimed past their deadline (and removed, by this run or
    /// by a call that raced it to the removal). The expiry listener is called for each.
    pub expired: usize,
    /// Removed entries the janitor let go of (their memory is freed one grace period later,
    /// once their value is dropped too).
    pub retired: usize,
    /// Whether due timers were left for the next run (the budget or the run's time limit
    /// ran out).
    pub more_due: bool,
    /// Entries filed in the wheel after the run.
    pub timers: usize,
    /// Whether the run did nothing because another run was in progress or the janitor
    /// was stopped.
    pub skipped: bool,
    /// How long after the run's start, by the map's clock, the earliest filed entry may be
    /// due (`None` when none is filed): a manual-mode embedder needs no run before then,
    /// except to take new and removed entries.
    pub next_due_in: Option<std::time::Duration>,
    /// Whether values the janitor removed may still wait for the epoch: a thread pinned
    /// during the runs' flushes held it back. The next runs, idle or not, flush again; a
    /// manual-mode embedder keeps running the janitor at its tick meanwhile (the janitor
    /// thread does).
    pub sweeping: bool,
    /// Whether the table was still moving its entries into a new slot array after the run
    /// (a migration: it grew, or purged removed keys' slots). Callers' writes move a few
    /// slots each, and every run moves more, so a migration writers left behind ends; a
    /// manual-mode embedder keeps running the janitor meanwhile (the janitor thread comes
    /// back soon).
    pub migrating: bool,
    /// While sweeping: the runs since the latest removals whose flushes could not free them
    /// (a thread stays pinned); the janitor thread doubles its wait that many times.
    pub(crate) sweep_misses: u32,
}

impl JanitorRun {
    /// Removed entries taken from the intakes in one run beyond which the janitor thread
    /// runs again after [`HURRY`](crate::ticker::HURRY) rather than a whole wheel tick
    /// later: a removed entry's shell (its ~100 bytes, not its value) is freed only once
    /// the janitor has taken it, so under a steady stream of removals the shells held are
    /// bounded by about 10 ms of removals, not by one wheel tick (1.875 s at the
    /// chunkserver's 15 s tick: 7.5 M shells, 850 MB, measured at 4 M removals a second).
    const HURRY_RETIRED: usize = 1024;

    /// When the janitor thread should run next: at once while due entries are left (the
    /// budget or the time limit cut the run short), soon after a run that found busy
    /// intakes, else at the next tick.
    pub(crate) fn next(&self) -> Next {
        if self.skipped {
            Next::OnTick
        } else if self.more_due {
            Next::Now
        } else if self.retired >= Self::HURRY_RETIRED || self.migrating {
            Next::Soon
        } else {
            Next::OnTick
        }
    }
}

/// How long one run may hand out due timers before it stops and leaves the rest to the
/// next: about one wheel tick (so that a mass expiry never holds the janitor from the
/// next tick's work for long), but at least 1 ms (so that the fixed cost of a run stays
/// small against its work) and at most 10 ms (so that `done`, which waits for the current
/// run, stays prompt). Measured by the map's clock: a [`ManualClock`](crate::ManualClock)
/// that nobody moves never cuts a run short.
pub(crate) fn run_time_limit(scale: &TimeScale) -> u64 {
    const MIN: u64 = 1_000_000;
    const MAX: u64 = 10_000_000;
    scale.resolution_nanos.clamp(MIN, MAX)
}

/// How long after `started` (the clock's nanoseconds) the wheel's earliest timer may be due.
fn next_due_in<K, V>(wheel: &Wheel<Entry<K, V>>, scale: &TimeScale, started: u64) -> Option<std::time::Duration> {
    let due = wheel.next_due()?.saturating_mul(scale.resolution_nanos);
    Some(std::time::Duration::from_nanos(due.saturating_sub(started)))
}

/// How far back the clock may seem to go between runs before a debug build reports it:
/// runs on different threads read counters of different cores.
const CLOCK_SLACK_NANOS: u64 = 1_000_000;

/// Handed-out timers between two looks at the clock for the time limit (a clock read is
/// ~25 ns; an expiry ~150-400 ns).
const CLOCK_EVERY: usize = 64;

/// Chunks of a migration (512 slots each) a run moves between two reads of the clock.
const MIGRATION_BATCH: usize = 8;

/// Batches of a migration one run moves at most (1 M slots: a few milliseconds), however
/// much time it has left: a migration of a large table ends over several runs, and a
/// [`ManualClock`](crate::ManualClock) nobody moves still bounds the run.
const MIGRATION_BATCHES: usize = 256;

/// Counters over the janitor's life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct JanitorStats {
    /// Runs completed.
    pub runs: u64,
    /// Entries the janitor expired (see [`JanitorRun::expired`]).
    pub expired: u64,
    /// Removed entries the janitor let go of.
    pub retired: u64,
    /// Entries whose drop panicked (process-wide: drops run wherever the epoch runs them).
    pub drop_panics: u64,
    /// Calls of the expiry listener that panicked (contained; the run went on).
    pub listener_panics: u64,
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
    /// Written only by the run holding the try-lock, one claim at a time.
    expired: AtomicU64,
    retired: AtomicU64,
    listener_panics: AtomicU64,
    /// Set once a run found the clock gone back (debug builds report it once).
    clock_went_back: AtomicBool,
    /// Pushes the epoch on until what the runs removed is freed.
    sweep: EpochSweep,
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
            listener_panics: AtomicU64::new(0),
            clock_went_back: AtomicBool::new(false),
            sweep: EpochSweep::new(),
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
            listener_panics: self.listener_panics.load(Ordering::Relaxed),
        }
    }

    fn try_lock(&self) -> Option<Running<'_>> {
        self.running
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .ok()
            .map(|_| Running(&self.running))
    }
}

/// What a run works on: the parts of the map the janitor shares with its callers.
pub(crate) struct Parts<'a, K, V, S> {
    pub(crate) table: &'a Table<K, V, S>,
    /// New entries, for the janitor to file.
    pub(crate) fresh: &'a Intake<K, V>,
    pub(crate) clock: &'a TimeSource,
    pub(crate) scale: &'a TimeScale,
    /// Where the weight of what the janitor removes is counted out.
    pub(crate) weights: &'a Weights<V>,
    pub(crate) on_expire: Option<&'a Listener<K, V>>,
}

/// Called for each entry the janitor expires ([`Builder::on_expire`](crate::Builder::on_expire)).
pub(crate) type Listener<K, V> = Box<dyn Fn(&K, &V) + Send + Sync>;

/// Entries a run expired, with each value (taken by the run's removal, or a clone), for the
/// listener: called once the run has unpinned. The entries' shells stay alive until the run
/// lets go of them (the last `take_unlinked`, after the listener), so their keys can be lent
/// out meanwhile.
type Expired<K, V> = Vec<(NonNull<Entry<K, V>>, V)>;

impl<K, V> Janitor<K, V>
where
    K: std::hash::Hash + Eq,
    V: Clone,
{
    /// One run: reads the clock and works up to that time; see the module documentation.
    pub(crate) fn run<S: std::hash::BuildHasher>(&self, parts: &Parts<'_, K, V, S>) -> JanitorRun {
        let report = self.run_once(parts);
        self.finish_stop(parts);
        report
    }

    fn run_once<S: std::hash::BuildHasher>(&self, parts: &Parts<'_, K, V, S>) -> JanitorRun {
        let Some(_running) = self.try_lock() else {
            return JanitorRun { skipped: true, ..JanitorRun::default() };
        };
        if self.is_stopped() {
            return JanitorRun { skipped: true, ..JanitorRun::default() };
        }
        self.wheel.with_mut(|wheel| {
            // SAFETY: holding `running` gives exclusive access to the wheel.
            let wheel = unsafe { &mut *wheel };
            let report = self.run_locked(wheel, parts);
            self.runs.fetch_add(1, Ordering::Relaxed);
            self.retired.fetch_add(report.retired as u64, Ordering::Relaxed);
            report
        })
    }

    fn run_locked<S: std::hash::BuildHasher>(
        &self,
        wheel: &mut Wheel<Entry<K, V>>,
        parts: &Parts<'_, K, V, S>,
    ) -> JanitorRun {
        let Parts { table, fresh, clock, scale, weights, on_expire } = *parts;
        // Step 1: the time. Read under the lock, so that the wheel's time only grows.
        let started = clock.now();
        // The coarse clock's lag, checked against the kernel once a run (`KernelClock`).
        clock.check_lag();
        // The `Clock` contract: never backwards. A clock stepped back keeps the wheel at
        // its time (the `max`) until the clock catches up: no expiry for the length of the
        // step, and entries set meanwhile, dated by the earlier time, are claimed as soon as
        // the janitor sees them (docs/design.md, "Time"). Debug builds say so, once per map;
        // with 1 ms of slack for counters read on different cores.
        let last_run = wheel.elapsed().saturating_mul(scale.resolution_nanos);
        if cfg!(debug_assertions)
            && started.saturating_add(CLOCK_SLACK_NANOS) < last_run
            && !self.clock_went_back.swap(true, Ordering::Relaxed)
        {
            panic!("the map's clock went back: it reads {started} ns, the janitor's last run was at {last_run} ns");
        }
        let now = scale.ticks(started).max(wheel.elapsed());
        let stop_at = started.saturating_add(run_time_limit(scale));
        let mut report = JanitorRun { now, ..JanitorRun::default() };
        if fresh.is_empty() && table.unlinked().is_empty() && !wheel.has_due(now) && !table.may_be_migrating() {
            // Idle: nothing to take, nothing due. No pin and no epoch flush (a flush walks
            // every thread registered with the epoch: a thousand idle maps flushing ten
            // times a second kept two cores busy).
            // Unless earlier removals may still wait for the epoch (crate::sweep).
            report.sweeping = self.sweep.chase();
            report.sweep_misses = self.sweep.misses();
            wheel.advance_to(now);
            report.timers = wheel.len();
            report.next_due_in = next_due_in(wheel, scale, started);
            return report;
        }
        let guard = epoch::pin();
        // What this run lets go of: released one grace period after the run's end (or its
        // panic), with one deferral.
        let mut releases = JanitorReleases::new();
        take_fresh(wheel, fresh, &mut releases, &mut report);
        take_unlinked(wheel, table, &mut releases, &mut report);
        let mut ahead = Lookahead::new();
        let mut expired = on_expire.map(|_| Expired::new());
        let mut stop_popping = false;
        let mut out_of_time = false;
        // Caught so that a panic from user code here (the weigher, asked as the janitor
        // removes an entry; the listener's `V: Clone`; a custom clock) strands none of the
        // entries held ahead: off the wheel, they would never be expired. The janitor thread
        // contains the panic anyway; a manual caller sees it re-raised below. (A key's
        // `Hash` panicking is caught where it is asked, in `Lookahead`, and raised at the
        // run's end.)
        let handled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| loop {
            while !stop_popping && !ahead.is_full() && report.handled < self.budget {
                if report.handled % CLOCK_EVERY == CLOCK_EVERY - 1 && clock.now() >= stop_at {
                    stop_popping = true; // out of time: the rest waits for the next run
                    out_of_time = true;
                    break;
                }
                match wheel.pop_due(now) {
                    Some(entry) => {
                        report.handled += 1;
                        ahead.push(entry, table, &guard);
                    }
                    None => stop_popping = true,
                }
            }
            let Some(entry) = ahead.front() else { break };
            // SAFETY: handed-out entries are alive: an entry is freed only after its janitor
            // side lets go, which happens only once it is off the wheel and handled here (the
            // unlinked intake is taken only before and after this loop).
            unsafe {
                expire_or_refile(
                    wheel,
                    entry,
                    || ahead.front_hash(table),
                    now,
                    table,
                    weights,
                    &guard,
                    &mut report,
                    &self.expired,
                    expired.as_mut(),
                )
            };
            ahead.pop();
        }));
        if let Err(panic) = handled {
            drop(guard);
            if let (Some(listener), Some(expired)) = (on_expire, expired) {
                self.notify(listener, expired); // the run's expiries are reported all the same
            }
            while let Some(timer) = ahead.pop() {
                // SAFETY: held, so alive (as above).
                let deadline = unsafe { timer.as_ref() }.life.load().deadline();
                // SAFETY: alive, and on no wheel list: held, and the one being handled when
                // the panic came too (nothing that can panic follows its refiling). Filed
                // again no earlier than the next tick: the next run handles it as if this
                // one had not reached it (one removed meanwhile, by someone else or by this
                // run before its weigher panicked, is unfiled again by `take_unlinked`).
                unsafe { wheel.insert_later(timer, deadline) };
            }
            if let Some(hash_panic) = ahead.hash_panic.take() {
                drop_payload(hash_panic);
            }
            std::panic::resume_unwind(panic);
        }
        // Broken on purpose under `loom_broken = "time_cut_forgets_more_due"`: a run cut short
        // by its time limit says nothing is left, and the due rest waits for a later run
        // (the simulation in tests/engine_simulation.rs catches it).
        let forget = cfg!(loom_broken = "time_cut_forgets_more_due") && out_of_time;
        report.more_due = wheel.has_due(now) && !forget;
        report.timers = wheel.len();
        wheel.advance_to(now);
        if report.expired + report.retired > 0 {
            guard.flush();
        }
        drop(guard);
        if let (Some(listener), Some(expired)) = (on_expire, expired) {
            // Before `take_unlinked`: until then the janitor holds every entry it expired.
            self.notify(listener, expired);
        }
        // After the listener, and caught: a migration rehashes keys (user code), and a
        // panic there must not skip the run's bookkeeping below; it is raised again at the
        // end (a panicking hash leaves the migration as it was: a copy hashes before it
        // writes). What the migration hands off (entries whose removal it found done) is
        // taken just below.
        let migration =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| help_migration(table, clock, stop_at)));
        let (migrated, migration_panic) = match migration {
            Ok(migrated) => (migrated, None),
            Err(panic) => (Some(true), Some(panic)),
        };
        report.migrating = migrated == Some(true);
        take_unlinked(wheel, table, &mut releases, &mut report);
        // Before the sweep's mark, so that the mark runs after them.
        if !releases.is_empty() {
            releases.release_later(&epoch::pin());
        }
        report.next_due_in = next_due_in(wheel, scale, started);
        // Push the epoch on so that the values this run removed are freed now, not whenever
        // other threads happen to collect (crate::sweep); the slot arrays a migration
        // retired wait for the epoch too.
        report.sweeping = if report.expired + report.retired > 0 || migrated.is_some() {
            self.sweep.after_removals(report.expired);
            self.sweep.pending()
        } else {
            self.sweep.chase()
        };
        report.sweep_misses = self.sweep.misses();
        // A key's `Hash` panicked (caught in `Lookahead`) or the migration did: raised now,
        // after the bookkeeping, the first of them (the other's payload dropped).
        let panic = match (ahead.hash_panic.take(), migration_panic) {
            (Some(hash_panic), Some(migration_panic)) => {
                drop_payload(migration_panic);
                Some(hash_panic)
            }
            (hash_panic, migration_panic) => hash_panic.or(migration_panic),
        };
        if let Some(panic) = panic {
            std::panic::resume_unwind(panic);
        }
        report
    }

    /// Calls the listener for each entry of `expired`, containing and counting its panics,
    /// and then drops the value (a `Taken`: its destructor's panic contained and counted as
    /// a drop panic, not run while a listener's panic unwinds, where a second one aborts).
    fn notify(&self, listener: &Listener<K, V>, expired: Expired<K, V>) {
        for (entry, value) in expired {
            // SAFETY: the janitor still holds the entry (see `Expired`), so its key is alive;
            // the key is never mutated.
            let key = unsafe { &entry.as_ref().key };
            let called = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| listener(key, &value)));
            if called.is_err() {
                self.listener_panics.fetch_add(1, Ordering::Relaxed);
            }
            drop(Taken::new(Some(value)));
        }
    }

    /// Stops the janitor for good; `ExpiringMap::done` calls it after taking the map off the
    /// janitor thread (`Registration::stop`, which waits for a run in progress). The whole
    /// shutdown, in order:
    ///
    /// 1. the map's job is deregistered from the janitor thread (no new run of it starts);
    /// 2. `stop_requested` is stored, then a SeqCst fence (the handshake with a run in
    ///    progress, see `Running::drop`);
    /// 3. whoever holds the try-lock (this call, or the run in progress as it finishes)
    ///    makes a last run that only takes the intakes, so that nothing stays on them for
    ///    a janitor that will never come;
    /// 4. the table is told (`janitor_gone`): from then on a `set` marks its entry taken
    ///    and pushes nothing, and an unlinker lets go for the janitor itself;
    /// 5. `stopped`: every later run is skipped.
    ///
    /// Callers need nothing from the janitor to judge an entry (they read the clock), so
    /// deadlines hold as before; only the expiring ends. Never waits: if a run is in
    /// progress (another thread's manual run, or this very thread, when a destructor calls
    /// `done` during a run), that run makes the last run as it finishes.
    pub(crate) fn stop<S: std::hash::BuildHasher>(&self, parts: &Parts<'_, K, V, S>) {
        self.stop_requested.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst); // see `Running::drop`
        self.finish_stop(parts);
    }

    fn finish_stop<S: std::hash::BuildHasher>(&self, parts: &Parts<'_, K, V, S>) {
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
            let mut report = JanitorRun::default();
            let mut releases = JanitorReleases::new();
            take_fresh(wheel, parts.fresh, &mut releases, &mut report);
            take_unlinked(wheel, parts.table, &mut releases, &mut report);
            if !releases.is_empty() {
                releases.release_later(&epoch::pin());
                // No later run will chase them: push the epoch on as a run's removals do.
                self.sweep.after_removals(0);
            }
        });
        // Once more for removals the epoch was held back on (no later run will chase them;
        // the map's drop drains the epoch's queue in any case).
        self.sweep.chase();
        // From here on, removers retire entries themselves.
        parts.table.mark_janitor_gone();
        self.stopped.store(true, Ordering::Release);
    }
}

/// Due timers handed out ahead of the one being expired, each with its key's hash once
/// made.
///
/// Expiring an entry is a chain of cache misses: the entry, then its home slot (where the
/// cleanup's walk starts), whose index the entry's key names. Popping [`AHEAD`] timers ahead
/// lets each of those loads start while earlier entries are handled, so the misses
/// overlap instead of adding up (docs/performance.md, "Expiry"). Only hints are issued:
/// the entries are handled in the order the wheel handed them out, as without it. The hash
/// made for a prefetch is kept for the removal, so that each entry's key is hashed once.
///
/// A timer stays held until [`Lookahead::pop`], which the run calls after handling it: a
/// panic from user code while it is handled (the removal's weigher) finds it here, to be
/// filed again, never lost between the wheel and the ring. A panicking `K: Hash` is caught
/// instead, and kept for the end of the run: the entry is expired without its hash (left in
/// its slot for the next migration), so that a key whose hash always panics cannot make
/// every run fail on it.
struct Lookahead<K, V> {
    ring: [Option<Held<K, V>>; AHEAD],
    /// Timers pushed so far; the next goes to `pushed % AHEAD`.
    pushed: usize,
    /// Timers popped so far; never more than `pushed`, never `AHEAD` fewer.
    popped: usize,
    /// The first panic of a key's `Hash` caught in this run, raised at its end.
    hash_panic: Option<Panic>,
}

/// A caught panic's payload.
type Panic = Box<dyn std::any::Any + Send>;

/// A timer the [`Lookahead`] holds, and what is known of its key's hash.
struct Held<K, V> {
    timer: NonNull<Entry<K, V>>,
    hash: KeyHash,
}

/// A held entry's key hash: not made yet, made, or panicked when it was being made.
#[derive(Clone, Copy)]
enum KeyHash {
    Unknown,
    Made(u64),
    Panicked,
}

// Manual impls: derives would demand `K: Copy, V: Copy`, but only a pointer is copied.
impl<K, V> Clone for Held<K, V> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<K, V> Copy for Held<K, V> {}

/// Timers held ahead of the one being expired. The lags were tuned on 1 M-entry expiries
/// (lags of 2, 3, 5, 8 and 10 entries: 8 was fastest, 2 slowest by 20%).
const AHEAD: usize = 24;
/// How many pushes after an entry's own its home slot is prefetched (by then the entry's
/// line, which holds the key naming the slot, has arrived).
const SLOT_LAG: usize = 8;

impl<K: std::hash::Hash + Eq, V> Lookahead<K, V> {
    fn new() -> Self {
        Lookahead { ring: [None; AHEAD], pushed: 0, popped: 0, hash_panic: None }
    }

    fn is_full(&self) -> bool {
        self.pushed - self.popped == AHEAD
    }

    /// Adds a handed-out timer, and moves the earlier ones' prefetches a step on: the
    /// timer `SLOT_LAG` pushes back gets its hash, and its home slot a prefetch.
    fn push<S: std::hash::BuildHasher>(&mut self, timer: NonNull<Entry<K, V>>, table: &Table<K, V, S>, guard: &Guard) {
        debug_assert!(!self.is_full());
        prefetch(timer.as_ptr());
        let at = self.pushed;
        self.ring[at % AHEAD] = Some(Held { timer, hash: KeyHash::Unknown });
        self.pushed += 1;
        if let Some(lagged) = at.checked_sub(SLOT_LAG).filter(|&lagged| lagged >= self.popped) {
            if let Some(hash) = self.hash_at(lagged, table) {
                table.prefetch_removal(hash, guard);
            }
        }
    }

    /// The hash of the key of the timer pushed `at`th (held), made now if it was not;
    /// `None` if making it panicked (the panic is kept for the end of the run).
    fn hash_at<S: std::hash::BuildHasher>(&mut self, at: usize, table: &Table<K, V, S>) -> Option<u64> {
        let held = self.ring[at % AHEAD].as_mut().expect("held timers are in the ring");
        let made = match held.hash {
            KeyHash::Made(hash) => return Some(hash),
            KeyHash::Panicked => return None,
            KeyHash::Unknown => {
                // SAFETY: held here, so handed out and not handled yet: alive (see `run_locked`).
                let key = unsafe { &held.timer.as_ref().key };
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| table.hash(key)))
            }
        };
        match made {
            Ok(hash) => {
                held.hash = KeyHash::Made(hash);
                Some(hash)
            }
            Err(panic) => {
                held.hash = KeyHash::Panicked;
                match self.hash_panic {
                    None => self.hash_panic = Some(panic),
                    // One is raised; the others' payloads are dropped (under a catch: a
                    // payload's drop may panic too).
                    Some(_) => drop_payload(panic),
                }
                None
            }
        }
    }

    /// The oldest held timer, still held: [`pop`](Self::pop) it once it is handled.
    fn front(&self) -> Option<NonNull<Entry<K, V>>> {
        (self.popped < self.pushed).then(|| self.ring[self.popped % AHEAD].expect("held timers are in the ring").timer)
    }

    /// The key hash of the [`front`](Self::front) timer, as [`hash_at`](Self::hash_at).
    fn front_hash<S: std::hash::BuildHasher>(&mut self, table: &Table<K, V, S>) -> Option<u64> {
        self.hash_at(self.popped, table)
    }

    /// Lets go of the oldest held timer.
    fn pop(&mut self) -> Option<NonNull<Entry<K, V>>> {
        if self.popped == self.pushed {
            return None;
        }
        let held = self.ring[self.popped % AHEAD].take();
        self.popped += 1;
        held.map(|held| held.timer)
    }
}

/// Drops a caught panic's payload, containing a panic of its own destructor.
fn drop_payload(panic: Panic) {
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(panic)));
}

/// Moves a migration under way along: batches of chunks until the run's time is up (at
/// least one batch), at most [`MIGRATION_BATCHES`]. `None` if none seemed under way; else
/// whether one still is. A run that helped pushes the epoch on as it does after removals:
/// the slot arrays of the generations it retired wait for it.
fn help_migration<K: std::hash::Hash + Eq, V, S: std::hash::BuildHasher>(
    table: &Table<K, V, S>,
    clock: &TimeSource,
    stop_at: u64,
) -> Option<bool> {
    if !table.may_be_migrating() {
        return None;
    }
    let guard = epoch::pin();
    let mut migrating = true;
    for _ in 0..MIGRATION_BATCHES {
        migrating = table.help_migration(MIGRATION_BATCH, &guard);
        if !migrating || clock.now() >= stop_at {
            break;
        }
    }
    // The retired slot arrays wait for the epoch: seal them in the global queue now.
    guard.flush();
    Some(migrating)
}

/// Step 2: file new entries, or let go of those already unlinked (into `releases`).
fn take_fresh<K, V>(
    wheel: &mut Wheel<Entry<K, V>>,
    fresh: &Intake<K, V>,
    releases: &mut JanitorReleases<K, V>,
    report: &mut JanitorRun,
) {
    fresh.take_all(|entry| {
        // SAFETY: entries on the intake are alive: the janitor side has not let go of them.
        let before = unsafe { (*entry).life.take() };
        if before.is_unlinked() {
            // Unlinked before we took it: the unlinker left the janitor's hold to us.
            // SAFETY: unlinked, off the intake now and never filed.
            unsafe { releases.push(entry) };
            report.retired += 1;
            return;
        }
        let timer = NonNull::new(entry).expect("intake entries are non-null");
        // Filed at its deadline (if it is still inheriting one, that is a lower bound: the
        // claim looks again). One already due is filed at the next tick, to be handed out by
        // this run's loop if the run's time is past that tick, else by the first run of the
        // next wheel tick: deciding it here would run user code (the removal's weigher)
        // outside the loop's panic guard, and a panic would drop the rest of the intake.
        // SAFETY: alive as above, and on no wheel list yet.
        unsafe { wheel.insert_later(timer, before.deadline()) };
        report.filed += 1;
    });
}

/// Step 3: retire entries the table unlinked after we took them (into `releases`).
fn take_unlinked<K, V, S>(
    wheel: &mut Wheel<Entry<K, V>>,
    table: &Table<K, V, S>,
    releases: &mut JanitorReleases<K, V>,
    report: &mut JanitorRun,
) {
    table.unlinked().take_all(|entry| {
        let timer = NonNull::new(entry).expect("intake entries are non-null");
        // SAFETY: alive until we let go; only the janitor touches its timer links; off the
        // intake and, after the removal, off the wheel.
        unsafe {
            wheel.remove(timer);
            releases.push(entry);
        }
        report.retired += 1;
    });
}

/// Step 4 for one handed-out timer: file it again if a touch moved its deadline past
/// `now`, claim and remove it if it is due, leave it unfiled if it was removed meanwhile.
/// An expired entry's value goes to the listener, if there is one: moved, if this run's
/// removal took it (a leased value no reader was in), else cloned after the removal (a
/// panicking `clone` then strands nothing; the value lives until this run unpins).
///
/// `hash` makes the table's hash of its key, asked only for a removal; `None` if the key's
/// `Hash` panicked (caught): the entry is removed without it (see `Slots::remove`).
///
/// # Safety
/// `timer` is a live entry on no wheel list; the caller holds the janitor's try-lock.
#[allow(clippy::too_many_arguments)]
unsafe fn expire_or_refile<K: std::hash::Hash + Eq, V: Clone, S: std::hash::BuildHasher>(
    wheel: &mut Wheel<Entry<K, V>>,
    timer: NonNull<Entry<K, V>>,
    hash: impl FnOnce() -> Option<u64>,
    now: u64,
    table: &Table<K, V, S>,
    weights: &Weights<V>,
    guard: &Guard,
    report: &mut JanitorRun,
    expired_total: &AtomicU64,
    expired: Option<&mut Expired<K, V>>,
) {
    // SAFETY: the caller guarantees the entry is alive.
    let entry = unsafe { timer.as_ref() };
    // SAFETY: alive, and only the janitor (this caller) touches its timer links.
    debug_assert_eq!(unsafe { wheel::list_of(timer) }, wheel::NOT_FILED);
    match entry.life.claim(now, || entry.is_removed()) {
        // Removed by someone else: its unlink hand-off retires it; keep it unfiled.
        Claim::Gone => {}
        Claim::Refile(deadline) => {
            // SAFETY: alive and unfiled, as the caller guarantees.
            let filed = unsafe { wheel.insert(timer, deadline) };
            debug_assert!(filed.is_ok(), "deadline {deadline} > now {now} >= elapsed");
        }
        // Claimed: every touch fails from now on, and the entry has expired, whoever marks
        // it. Only the remover that marks it counts its weight out: if a `delete`,
        // `fetch_and_delete` or `set` marked it first, they did.
        Claim::Expired => {
            report.expired += 1;
            // Counted before the removal, so that whoever sees the entry gone sees it counted
            // (`Stats::expirations` against `len`). Only the run holding the try-lock writes
            // the total: a load and a store.
            expired_total.store(expired_total.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
            // If this mark wins, the janitor is the remover: it takes a leased value no reader
            // is reading, for the listener (no clone) or to drop now. A call whose mark came
            // first saw the claim and left the value alone (`Core::remove`), for the clone.
            let taken = table.remove(entry, hash(), guard, || take_after_weighing(entry, weights));
            if let Some(expired) = expired {
                // SAFETY: not taken, so its value is dropped only after `guard` (reached
                // through the wheel while pinned; removed just now or after the pin).
                let value = taken.and_then(Taken::into_inner).unwrap_or_else(|| unsafe { entry.value() }.clone());
                expired.push((timer, value));
            }
        }
        // Claimed dead by a `set_if_absent` that will replace it, unless it panicked first:
        // remove it as garbage (not an expiry); whichever mark wins counts the weight out.
        Claim::Dead => {
            drop(table.remove(entry, hash(), guard, || take_after_weighing(entry, weights)));
        }
    }
}

/// The janitor's settle for an entry its mark removed: count its weight out, then take a
/// leased value if no reader is in (`crate::lease`).
fn take_after_weighing<K, V>(entry: &Entry<K, V>, weights: &Weights<V>) -> Taken<V> {
    // SAFETY: the caller reached the entry through the wheel while pinned; its value is
    // dropped only after the pin, or taken, below, by this call (the janitor marked it).
    weights.release(weights.weigh(unsafe { entry.value() }));
    // SAFETY: the janitor marked the entry and has read its value; nobody else reads it
    // unleased (a `set_if_absent` that claimed it dead does not read it).
    Taken::new(unsafe { entry.take_value() })
}

#[cfg(test)]
mod tests {
    use super::{run_time_limit, JanitorRun, Next};
    use crate::clock::TimeScale;
    use std::time::Duration;

    #[test]
    fn a_run_asks_for_the_next_at_once_when_it_left_work_and_soon_after_busy_intakes() {
        let quiet = JanitorRun { retired: JanitorRun::HURRY_RETIRED - 1, ..JanitorRun::default() };
        assert_eq!(quiet.next(), Next::OnTick);
        assert_eq!(JanitorRun { retired: JanitorRun::HURRY_RETIRED, ..quiet }.next(), Next::Soon);
        assert_eq!(JanitorRun { migrating: true, ..quiet }.next(), Next::Soon);
        assert_eq!(JanitorRun { more_due: true, ..quiet }.next(), Next::Now);
        assert_eq!(JanitorRun { more_due: true, skipped: true, ..quiet }.next(), Next::OnTick);
    }

    #[test]
    fn a_run_lasts_about_a_wheel_tick_within_1_to_10_ms() {
        let limit = |tick_ms| run_time_limit(&TimeScale::new(Duration::from_millis(tick_ms), Duration::from_secs(1)));
        assert_eq!(limit(1), 1_000_000, "1 ms tick: a 125 us wheel tick, raised to 1 ms");
        assert_eq!(limit(40), 5_000_000);
        assert_eq!(limit(15_000), 10_000_000, "15 s tick: capped at 10 ms");
    }
}
