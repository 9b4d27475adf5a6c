//! The process's janitor thread: one thread runs the janitor of every engine map in the
//! process, each on its own schedule, so that ten thousand idle maps cost one sleeping
//! thread, not ten thousand.
//!
//! A map registers a job (a closure returning when it wants its next run, [`Next`]) with
//! its [`Doorbell`], and gets a [`Registration`]; dropping or stopping that deregisters the
//! job, waiting for a run of it in progress. The schedule is a queue of due times under one
//! mutex, which only the janitor thread, registration and deregistration take: no call on a
//! map's hot path touches it. Runs are aligned to multiples of their period, so maps with
//! the same period are run in one wakeup, one after another.
//!
//! An idle map sleeps until its next entry may be due; what ends its sleep early is its
//! doorbell (`crate::doorbell`): the first push onto an empty intake stripe rings it (one `swap` on the bell,
//! and one CAS onto a process-wide lock-free stack when it was not rung already), and the
//! thread, which looks at that stack at least every [`RING_POLL`], runs the map at once.
//!
//! Jobs run one at a time, outside the lock. A run is bounded (a janitor run stops after
//! about a wheel tick of work, 1 to 10 ms, and asks to run again at once), and a job that
//! asks to run again at once is queued behind every job already due: a mass expiry in one
//! map delays the others by at most one run at a time. A job's panic is contained.
//!
//! The thread starts with the first registration and ends once no job has been registered
//! for [`IDLE_EXIT`]; the next registration starts another. Its end lets go of what the
//! thread held for the process: its registration with the epoch, whose bag of deferred
//! drops (the epoch's own queue nodes, left behind by its last collection) a thread that
//! sleeps forever would keep forever.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::{self, ThreadId};
use std::time::{Duration, Instant};

use crate::doorbell::{Doorbell, Rack};
use crate::ticker::{Next, HURRY};

/// A map's janitor, as the thread runs it.
pub(crate) type Job = Box<dyn FnMut() -> Next + Send>;

/// The shortest period a job runs at: a shorter one is raised to this. A wheel tick of a
/// microsecond would otherwise keep the thread busy with runs that each find almost
/// nothing (the entries' deadlines keep their own resolution: callers judge them by the
/// clock, not by the janitor's runs).
pub(crate) const MIN_PERIOD: Duration = Duration::from_millis(1);

/// How often the thread looks for rung doorbells while any job is registered: the
/// longest a new or removed entry of a sleeping map waits to be taken by its janitor.
pub(crate) const RING_POLL: Duration = Duration::from_millis(100);

/// How long the thread lingers once no job is registered before it ends: a program that
/// drops its last map and makes another soon keeps the one thread.
pub(crate) const IDLE_EXIT: Duration = Duration::from_secs(1);

/// The generation of a free slot: registrations are numbered from 1.
const VACANT: u64 = 0;

/// Farther than any schedule: what a longer wait is cut to.
const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

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
/// from now, later or sooner as its runs ask, and soon after `bell` rings. Starts the
/// janitor thread if none runs.
pub(crate) fn register(period: Duration, bell: &Doorbell, job: Job) -> Registration {
    let scheduler = Scheduler::get();
    let period = period.max(MIN_PERIOD);
    let mut state = scheduler.lock();
    if state.thread.is_none() {
        // Spawned under the lock: its loop starts by taking it, after this registration.
        let handle = thread::Builder::new()
            .name("download-buffer-janitor".to_owned())
            .spawn(move || scheduler.serve())
            .expect("failed to spawn the janitor thread");
        state.thread = Some(handle.thread().id());
    }
    let slot = match state.free.pop() {
        Some(slot) => slot,
        None => {
            state.slots.push(Slot::vacant());
            state.slots.len() - 1
        }
    };
    state.registered += 1;
    let generation = state.registered;
    bell.register(slot, generation);
    state.slots[slot] = Slot { job: Some(job), period, generation, live: true, due: None };
    state.jobs += 1;
    state.idle_since = None;
    let due = scheduler.aligned_after(period, Instant::now());
    let earliest = state.queue.peek().is_none_or(|Reverse(first)| due < first.due);
    state.queue_at(slot, due);
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
            return; // stopped, and its slot freed
        };
        // Taken out now (unless it is running), dropped after the lock: it holds the map.
        // Stopped already but not freed means a run is in progress (the thread frees the
        // slot as it ends): wait for it all the same, as the first stopper does.
        let was_live = std::mem::take(&mut slot.live);
        let job = if was_live { slot.job.take() } else { None };
        let me = (self.slot, self.generation);
        if state.running != Some(me) {
            state.release(self.slot);
        }
        if was_live {
            state.jobs -= 1;
            if state.jobs == 0 {
                // Every queue item is stale now: drop them, and wake the thread to start
                // its countdown to the end, from now.
                state.queue.clear();
                state.stale = 0;
                state.idle_since = Some(Instant::now());
                scheduler.wake.notify_one();
            }
        }
        if state.running == Some(me) && state.thread != Some(thread::current().id()) {
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
    /// The origin of the aligned schedule.
    origin: Instant,
}

struct State {
    slots: Vec<Slot>,
    /// Slots free for reuse.
    free: Vec<usize>,
    /// Due times; an item is current only while it matches its slot's generation and `due`.
    queue: BinaryHeap<Reverse<Due>>,
    /// The slot (and its generation) whose job is running, taken out of its slot meanwhile.
    running: Option<(usize, u64)>,
    /// Deregistrations waiting on `finished`.
    waiters: usize,
    /// Queue items that are no longer current (a wake queued its job earlier, or it was
    /// deregistered); dropped in a sweep once they are half the queue.
    stale: usize,
    /// Tie-breaker: jobs due at the same time run in the order they were queued.
    queued: u64,
    /// Jobs registered and not deregistered.
    jobs: usize,
    /// Registrations so far: the next one's generation is one more (unique in the
    /// process, so that the tables can be dropped while no job is registered).
    registered: u64,
    /// The janitor thread's id, while one runs.
    thread: Option<ThreadId>,
    /// Since when no job has been registered (while none is): the thread's countdown to
    /// its end.
    idle_since: Option<Instant>,
}

struct Slot {
    /// `None` while it runs, and once deregistered.
    job: Option<Job>,
    period: Duration,
    /// The registration's number ([`VACANT`] once the slot is freed), so that a stale
    /// queue item, bell or registration for an earlier job in this slot is recognized.
    generation: u64,
    /// Registered and not deregistered.
    live: bool,
    /// When its current queue item is due; `None` while it runs.
    due: Option<Instant>,
}

impl Slot {
    fn vacant() -> Slot {
        Slot { job: None, period: MIN_PERIOD, generation: VACANT, live: false, due: None }
    }
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Due {
    due: Instant,
    order: u64,
    slot: usize,
    generation: u64,
}

impl State {
    /// Queues `slot`'s job at `due`; an earlier item of it becomes stale.
    fn queue_at(&mut self, slot: usize, due: Instant) {
        self.queued += 1;
        let (order, generation) = (self.queued, self.slots[slot].generation);
        if self.slots[slot].due.replace(due).is_some() {
            self.went_stale();
        }
        self.queue.push(Reverse(Due { due, order, slot, generation }));
    }

    /// Whether `item` is its slot's current queue item.
    fn is_current(&self, item: &Due) -> bool {
        let slot = &self.slots[item.slot];
        slot.generation == item.generation && slot.due == Some(item.due)
    }

    /// Counts an item that went stale; sweeps the stale ones out once they are half the
    /// queue (a map woken often while it sleeps long would otherwise leave one behind per
    /// wake until its sleep ends).
    fn went_stale(&mut self) {
        self.stale += 1;
        if self.stale > 32 && self.stale * 2 > self.queue.len() {
            let queue = std::mem::take(&mut self.queue);
            let mut current: Vec<Reverse<Due>> = queue.into_vec();
            current.retain(|Reverse(item)| self.is_current(item));
            current.shrink_to(current.len() * 2);
            self.queue = BinaryHeap::from(current);
            self.stale = 0;
        }
    }

    /// Frees `slot` for another job; stale queue items and bells for it are recognized by
    /// generation.
    fn release(&mut self, slot: usize) {
        let freed = &mut self.slots[slot];
        freed.generation = VACANT;
        freed.job = None;
        if freed.due.take().is_some() {
            self.went_stale();
        }
        self.free.push(slot);
    }

    /// A rung bell for `slot` at `generation`: run its job now (after the jobs already due).
    fn wake(&mut self, slot: usize, generation: u64, now: Instant) {
        let Some(woken) = self.slots.get_mut(slot).filter(|woken| woken.live && woken.generation == generation) else {
            return; // deregistered since it rang
        };
        // Bells are taken between runs, so the job is queued (`due` is set), not running.
        if woken.due.is_some_and(|due| due > now) {
            self.queue_at(slot, now);
        }
    }
}

impl Scheduler {
    fn get() -> &'static Scheduler {
        static SCHEDULER: OnceLock<Scheduler> = OnceLock::new();
        SCHEDULER.get_or_init(|| Scheduler {
            state: Mutex::new(State {
                slots: Vec::new(),
                free: Vec::new(),
                queue: BinaryHeap::new(),
                running: None,
                waiters: 0,
                stale: 0,
                queued: 0,
                jobs: 0,
                registered: 0,
                thread: None,
                idle_since: None,
            }),
            wake: Condvar::new(),
            finished: Condvar::new(),
            origin: Instant::now(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Jobs run outside the lock and the code under it does not panic; a poisoned lock
        // still holds a consistent state.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The first multiple of `period` (counted from the origin) after `at`: jobs with the
    /// same period share their wakeups. A time too far to schedule (beyond a century)
    /// becomes a century from `at`.
    fn aligned_after(&self, period: Duration, at: Instant) -> Instant {
        let since = at.saturating_duration_since(self.origin).as_nanos();
        let period_nanos = period.as_nanos().max(1);
        let next = (since / period_nanos + 1).saturating_mul(period_nanos);
        let century = CENTURY;
        match u64::try_from(next).ok().and_then(|next| self.origin.checked_add(Duration::from_nanos(next))) {
            Some(due) if due.saturating_duration_since(at) < century => due,
            _ => at.checked_add(century).unwrap_or(at),
        }
    }

    /// When a job that started its run at `started` and returned `next` at `now` runs again.
    fn due_after(&self, next: Next, period: Duration, started: Instant, now: Instant) -> Instant {
        match next {
            Next::OnTick => self.aligned_after(period, now),
            Next::Soon => now + HURRY.min(period),
            Next::Now => now,
            // Counted from the run's start (a map's next deadline is measured from there), on
            // the period's grid, so that sleeping maps share wakeups too.
            Next::After(wait) => self.aligned_after(period, started.checked_add(wait.min(CENTURY)).unwrap_or(now)),
        }
    }

    /// The janitor thread's loop: runs each job when it is due, until no job has been
    /// registered for [`IDLE_EXIT`]. One lock and one clock read per run: the run's next
    /// due time is queued and the next job taken in the same critical section.
    fn serve(&self) {
        let mut state = self.lock();
        let mut now = Instant::now();
        let mut polled = now;
        loop {
            let rack = Rack::process();
            if now.saturating_duration_since(polled) >= RING_POLL || !rack.is_empty() {
                rack.take(|bell| {
                    let (slot, generation) = bell.job();
                    state.wake(slot, generation, now);
                });
                polled = now;
            }
            let Some(Reverse(first)) = state.queue.peek() else {
                if state.jobs > 0 {
                    // Not reached: a registered job that is not running has a queue item.
                    debug_assert!(false, "{} jobs registered and none queued", state.jobs);
                    state = self.wake.wait_timeout(state, RING_POLL).unwrap_or_else(PoisonError::into_inner).0;
                    now = Instant::now();
                    continue;
                }
                let since = *state.idle_since.get_or_insert(now);
                let left = IDLE_EXIT.saturating_sub(now.saturating_duration_since(since));
                if left.is_zero() {
                    // No job, so no ring to come: the bells still on the rack are let go,
                    // and the tables too (no registration refers to a slot any more).
                    Rack::process().take(|_| {});
                    state.slots = Vec::new();
                    state.free = Vec::new();
                    state.queue = BinaryHeap::new();
                    state.stale = 0;
                    state.thread = None;
                    return;
                }
                state = self.wake.wait_timeout(state, left).unwrap_or_else(PoisonError::into_inner).0;
                now = Instant::now();
                continue;
            };
            if first.due > now {
                let wait = (first.due - now).min(RING_POLL.saturating_sub(now.saturating_duration_since(polled)));
                if !wait.is_zero() {
                    state = self.wake.wait_timeout(state, wait).unwrap_or_else(PoisonError::into_inner).0;
                }
                now = Instant::now();
                continue;
            }
            let Some(Reverse(item)) = state.queue.pop() else { continue };
            if !state.is_current(&item) {
                state.stale = state.stale.saturating_sub(1);
                continue; // stale: deregistered, or queued again since
            }
            let Due { slot, generation, .. } = item;
            let Some(mut job) = state.slots[slot].job.take() else { continue };
            state.slots[slot].due = None;
            state.running = Some((slot, generation));
            drop(state);
            let started = Instant::now();
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
            let ran = &mut state.slots[slot];
            ran.job = Some(job);
            let period = ran.period;
            now = Instant::now();
            let due = self.due_after(next, period, started, now);
            state.queue_at(slot, due);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{mpsc, Arc};

    fn job(f: impl FnMut() -> Next + Send + 'static) -> Job {
        Box::new(f)
    }

    #[test]
    fn jobs_share_one_thread_and_a_deregistered_job_never_runs_again() {
        let threads = Arc::new(Mutex::new(std::collections::HashSet::new()));
        let runs = Arc::new(AtomicUsize::new(0));
        let registrations: Vec<Registration> = (0..50)
            .map(|_| {
                let (threads, runs) = (Arc::clone(&threads), Arc::clone(&runs));
                register(
                    Duration::from_millis(5),
                    &Doorbell::new(Rack::process()),
                    job(move || {
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
            &Doorbell::new(Rack::process()),
            job(move || {
                let _ = started.send(());
                thread::sleep(Duration::from_millis(50));
                ended_in_job.fetch_add(1, Ordering::SeqCst);
                Next::OnTick
            }),
        );
        started_rx.recv().unwrap();
        registration.stop();
        assert!(ended.load(Ordering::SeqCst) >= 1, "stop returned while the run was in progress");
    }

    #[test]
    fn a_panicking_job_is_contained_and_runs_again() {
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&runs);
        let registration = register(
            MIN_PERIOD,
            &Doorbell::new(Rack::process()),
            job(move || {
                counted.fetch_add(1, Ordering::Relaxed);
                panic!("a job's panic");
            }),
        );
        while runs.load(Ordering::Relaxed) < 3 {
            thread::sleep(Duration::from_millis(1));
        }
        drop(registration);
    }

    #[test]
    fn a_sleeping_job_runs_soon_after_its_bell_rings() {
        // The job asks to sleep for an hour after each run; each ring wakes it within the
        // poll interval (allowing for a loaded machine).
        let (ran, runs) = mpsc::channel();
        let bell = Doorbell::new(Rack::process());
        let registration = register(
            Duration::from_millis(1),
            &bell,
            job(move || {
                let _ = ran.send(Instant::now());
                Next::After(Duration::from_secs(3600))
            }),
        );
        runs.recv().unwrap(); // the first, scheduled run
        for _ in 0..3 {
            let rung = Instant::now();
            bell.ring();
            let woke = runs.recv_timeout(Duration::from_secs(10)).expect("a rung job runs");
            assert!(woke >= rung, "ran before the ring");
        }
        drop(registration);
        bell.ring(); // a bell rung after deregistration is ignored
        assert!(runs.recv_timeout(RING_POLL * 3).is_err(), "a deregistered job ran");
    }
}
