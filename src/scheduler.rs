//! The process's janitor thread: one thread runs the janitor of every engine map in the
//! process, each on its own schedule, so that a thousand idle maps cost one sleeping
//! thread, not a thousand.
//!
//! A map registers a job (a closure returning when it wants its next run, [`Next`]) and
//! gets a [`Registration`]; dropping or stopping it deregisters the job, waiting for a run
//! of it in progress. The schedule is a queue of due times under one mutex, which only
//! the janitor thread, registration and deregistration take: no call on a map's hot path
//! touches it. Periodic runs are aligned to multiples of their period, so maps with the
//! same period are run in one wakeup, one after another.
//!
//! Jobs run one at a time, outside the lock. A run is bounded (a janitor run stops after
//! about a wheel tick of work, 1 to 10 ms, and asks to run again at once), and a job that
//! asks to run again at once is queued behind every job already due: a mass expiry in one
//! map delays the others by at most one run at a time. A job's panic is contained.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::{self, ThreadId};
use std::time::{Duration, Instant};

use crate::ticker::{Next, HURRY};

/// A map's janitor, as the thread runs it.
pub(crate) type Job = Box<dyn FnMut() -> Next + Send>;

/// The shortest period a job runs at: a shorter one is raised to this. A wheel tick of a
/// microsecond would otherwise keep the thread busy with runs that each find almost
/// nothing (the entries' deadlines keep their own resolution: callers judge them by the
/// clock, not by the janitor's runs).
pub(crate) const MIN_PERIOD: Duration = Duration::from_millis(1);

/// A registered job. Deregisters it when dropped.
pub(crate) struct Registration {
    slot: usize,
    generation: u64,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration").field("slot", &self.slot).finish()
    }
}

/// Registers `job` to run every `period` (at least [`MIN_PERIOD`]) from about one period
/// from now, sooner or at once when a run asks for it. Starts the janitor thread on the
/// first registration of the process.
pub(crate) fn register(period: Duration, job: Job) -> Registration {
    let scheduler = Scheduler::get();
    let period = period.max(MIN_PERIOD);
    let mut state = scheduler.lock();
    let slot = match state.free.pop() {
        Some(slot) => slot,
        None => {
            state.slots.push(Slot { job: None, period, generation: 0, live: false });
            state.slots.len() - 1
        }
    };
    let generation = state.slots[slot].generation;
    state.slots[slot] = Slot { job: Some(job), period, generation, live: true };
    let due = scheduler.aligned(period, Instant::now());
    let earliest = state.queue.peek().is_none_or(|Reverse(first)| due < first.due);
    state.push(due, slot, generation);
    drop(state);
    if earliest {
        scheduler.wake.notify_one();
    }
    Registration { slot, generation }
}

impl Registration {
    /// Deregisters the job: no run of it starts afterwards, and one in progress has ended
    /// when this returns, except when called on the janitor thread itself (from a value's
    /// destructor during a run, say), where it only deregisters. Idempotent.
    pub(crate) fn stop(&self) {
        let scheduler = Scheduler::get();
        let mut state = scheduler.lock();
        let Some(slot) = state.slots.get_mut(self.slot).filter(|slot| slot.generation == self.generation) else {
            return;
        };
        if !slot.live {
            return; // stopped already
        }
        slot.live = false;
        // Taken out now, dropped after the lock: a job's drop is the map's code.
        let job = slot.job.take();
        let me = (self.slot, self.generation);
        if state.running != Some(me) {
            // Not running: free the slot now.
            state.release(self.slot);
        } else if scheduler.thread.get() != Some(&thread::current().id()) {
            // Running on the janitor thread: wait for the run to end (the thread frees the slot).
            state.waiters += 1;
            while state.running == Some(me) {
                state = scheduler.finished.wait(state).unwrap_or_else(PoisonError::into_inner);
            }
            state.waiters -= 1;
        }
        drop(state);
        drop(job);
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The process's scheduler.
struct Scheduler {
    state: Mutex<State>,
    /// Wakes the janitor thread: a job was registered ahead of the queue.
    wake: Condvar,
    /// Wakes deregistrations waiting for a run in progress.
    finished: Condvar,
    /// The janitor thread's id, once it runs.
    thread: OnceLock<ThreadId>,
    /// The origin of the aligned schedule.
    origin: Instant,
}

struct State {
    slots: Vec<Slot>,
    /// Slots free for reuse.
    free: Vec<usize>,
    queue: BinaryHeap<Reverse<Due>>,
    /// The slot (and its generation) whose job is running, taken out of its slot meanwhile.
    running: Option<(usize, u64)>,
    /// Deregistrations waiting on `finished`.
    waiters: usize,
    /// Tie-breaker: jobs due at the same time run in the order they were queued.
    queued: u64,
}

struct Slot {
    /// `None` while it runs, and once deregistered.
    job: Option<Job>,
    period: Duration,
    /// Bumped when the slot is freed, so that a stale queue item or registration for an
    /// earlier job in this slot is recognized.
    generation: u64,
    /// Registered and not deregistered.
    live: bool,
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Due {
    due: Instant,
    order: u64,
    slot: usize,
    generation: u64,
}

impl State {
    fn push(&mut self, due: Instant, slot: usize, generation: u64) {
        self.queued += 1;
        let order = self.queued;
        self.queue.push(Reverse(Due { due, order, slot, generation }));
    }

    /// Frees `slot` for another job; stale queue items for it are skipped by generation.
    fn release(&mut self, slot: usize) {
        self.slots[slot].generation += 1;
        self.slots[slot].job = None;
        self.free.push(slot);
    }
}

impl Scheduler {
    fn get() -> &'static Scheduler {
        static SCHEDULER: OnceLock<Scheduler> = OnceLock::new();
        static STARTED: std::sync::Once = std::sync::Once::new();
        let scheduler = SCHEDULER.get_or_init(|| Scheduler {
            state: Mutex::new(State {
                slots: Vec::new(),
                free: Vec::new(),
                queue: BinaryHeap::new(),
                running: None,
                waiters: 0,
                queued: 0,
            }),
            wake: Condvar::new(),
            finished: Condvar::new(),
            thread: OnceLock::new(),
            origin: Instant::now(),
        });
        STARTED.call_once(|| {
            let handle = thread::Builder::new()
                .name("download-buffer-janitor".to_owned())
                .spawn(move || scheduler.serve())
                .expect("failed to spawn the janitor thread");
            let _ = scheduler.thread.set(handle.thread().id());
        });
        scheduler
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Jobs run outside the lock and the code under it does not panic; a poisoned lock
        // still holds a consistent state.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The first multiple of `period` (counted from the origin) after `now`: jobs with the
    /// same period share their wakeups.
    fn aligned(&self, period: Duration, now: Instant) -> Instant {
        let since = now.saturating_duration_since(self.origin).as_nanos();
        let period_nanos = period.as_nanos().max(1);
        let next = (since / period_nanos + 1).saturating_mul(period_nanos);
        // A period too long to schedule (beyond a century) never fires.
        match u64::try_from(next).ok().and_then(|next| self.origin.checked_add(Duration::from_nanos(next))) {
            Some(due) if next < CENTURY_NANOS => due,
            _ => now + Duration::from_secs(CENTURY_SECS),
        }
    }

    /// The janitor thread's loop: runs each job when it is due, forever. One lock and one
    /// clock read per run: the run's next due time is queued and the next job taken in
    /// the same critical section.
    fn serve(&self) {
        let mut state = self.lock();
        let mut now = Instant::now();
        loop {
            let Some(Reverse(first)) = state.queue.peek() else {
                state = self.wake.wait(state).unwrap_or_else(PoisonError::into_inner);
                now = Instant::now();
                continue;
            };
            if first.due > now {
                let wait = first.due - now;
                state = self.wake.wait_timeout(state, wait).unwrap_or_else(PoisonError::into_inner).0;
                now = Instant::now();
                continue;
            }
            let Some(Reverse(Due { slot, generation, .. })) = state.queue.pop() else { continue };
            if state.slots[slot].generation != generation {
                continue; // a stale item: the slot's job was deregistered
            }
            let Some(mut job) = state.slots[slot].job.take() else { continue };
            state.running = Some((slot, generation));
            drop(state);
            let next = std::panic::catch_unwind(std::panic::AssertUnwindSafe(&mut job)).unwrap_or(Next::OnTick);
            state = self.lock();
            if !state.slots[slot].live {
                // Deregistered during its run: drop the job (maybe the last handle on its
                // map) outside the lock but before the run counts as ended, so that the
                // deregistering thread, waiting for that, still holds the map when it wakes.
                drop(state);
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(job)));
                state = self.lock();
                state.running = None;
                state.release(slot);
                if state.waiters > 0 {
                    self.finished.notify_all();
                }
                now = Instant::now();
                continue;
            }
            state.running = None;
            state.slots[slot].job = Some(job);
            let period = state.slots[slot].period;
            now = Instant::now();
            let due = match next {
                Next::OnTick => self.aligned(period, now),
                Next::Soon => now + HURRY.min(period),
                Next::Now => now,
                Next::After(wait) => self.aligned(wait.max(MIN_PERIOD), now),
            };
            state.push(due, slot, generation);
        }
    }
}

const CENTURY_SECS: u64 = 100 * 365 * 24 * 3600;
const CENTURY_NANOS: u128 = CENTURY_SECS as u128 * 1_000_000_000;

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{mpsc, Arc};

    #[test]
    fn jobs_share_one_thread_and_stop_waits_for_a_run_in_progress() {
        let threads = Arc::new(Mutex::new(std::collections::HashSet::new()));
        let runs = Arc::new(AtomicUsize::new(0));
        let registrations: Vec<Registration> = (0..50)
            .map(|_| {
                let (threads, runs) = (Arc::clone(&threads), Arc::clone(&runs));
                register(
                    Duration::from_millis(5),
                    Box::new(move || {
                        threads.lock().unwrap().insert(thread::current().id());
                        runs.fetch_add(1, Ordering::Relaxed);
                        Next::OnTick
                    }),
                )
            })
            .collect();
        while runs.load(Ordering::Relaxed) < 500 {
            thread::sleep(Duration::from_millis(5));
        }
        drop(registrations);
        let after = runs.load(Ordering::Relaxed);
        thread::sleep(Duration::from_millis(30));
        assert_eq!(runs.load(Ordering::Relaxed), after, "a deregistered job ran again");
        assert_eq!(threads.lock().unwrap().len(), 1, "every job ran on the one janitor thread");
    }

    #[test]
    fn stopping_a_job_waits_for_its_run_to_end() {
        let (started, started_rx) = mpsc::channel();
        let ended = Arc::new(AtomicUsize::new(0));
        let ended_in_job = Arc::clone(&ended);
        let registration = register(
            MIN_PERIOD,
            Box::new(move || {
                let _ = started.send(());
                thread::sleep(Duration::from_millis(50));
                ended_in_job.fetch_add(1, Ordering::SeqCst);
                Next::OnTick
            }),
        );
        started_rx.recv().unwrap();
        let runs_begun = 1;
        registration.stop();
        assert!(ended.load(Ordering::SeqCst) >= runs_begun, "stop returned while the run was in progress");
    }

    #[test]
    fn a_panicking_job_is_contained_and_runs_again() {
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&runs);
        let registration = register(
            MIN_PERIOD,
            Box::new(move || {
                counted.fetch_add(1, Ordering::Relaxed);
                panic!("a job's panic");
            }),
        );
        while runs.load(Ordering::Relaxed) < 3 {
            thread::sleep(Duration::from_millis(1));
        }
        drop(registration);
    }
}
