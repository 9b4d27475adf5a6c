//! The engine's janitor *thread* on a [`ManualClock`]: it sees only the clock steps the
//! test makes, so a late janitor (the clock moving several wheel ticks between two runs, a
//! run held up inside its clock read) is an exact schedule, and every end state can be
//! asserted exactly: an untouched entry is gone after the first run at or past its
//! deadline; a touched one is never missing.
//!
//! Arithmetic: a touch at clock `c` gives the deadline `ceil((c + expire) / wheel_tick)`
//! (in wheel ticks, an eighth of `tick`); with the clock moved in whole wheel ticks that
//! is `c + expire` exactly.

mod common;

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use common::{ms, wait_for, wait_for_janitor_runs};
use download_buffer::{Builder, Clock, ExpiringMap, ManualClock};

/// A map with a janitor thread on `clock`.
fn threaded_map<K, V>(tick: Duration, expire: Duration, clock: &ManualClock) -> ExpiringMap<K, V>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    Builder::new(tick, expire).clock(clock.clone()).build().expect("valid durations")
}

/// Waits until a janitor run that began after this call has finished (two completed runs).
fn after_a_run<K, V>(map: &ExpiringMap<K, V>)
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    wait_for_janitor_runs(map, 2);
}

/// Late steps recurring every `every` wheel ticks, `late` wheel ticks long, for several
/// patterns, with bursts of untouched entries and hot entries touched at every step: after
/// each step's run, exactly the hot entries and the untouched entries whose deadline is
/// still ahead are held; every hot entry is found at every step.
#[test]
fn late_steps_in_any_pattern_strand_nothing_and_expire_nothing_touched() {
    const WHEEL_TICK: Duration = ms(1);
    const EXPIRE_TICKS: u64 = 50;
    const HOT: u64 = 20;
    for every in [1, 2, 3, 5, 8] {
        for late in [3, 10, 40] {
            let clock = ManualClock::new();
            let map: ExpiringMap<u64, u64> = threaded_map(WHEEL_TICK * 8, WHEEL_TICK * EXPIRE_TICKS as u32, &clock);
            for hot in 0..HOT {
                map.set(hot, hot);
            }
            let mut now = 0u64; // wheel ticks
            let mut untouched: Vec<u64> = Vec::new(); // deadlines of the untouched entries set
            let mut next_key = HOT;
            for step in 1..=120u64 {
                let by = if step % every == 0 { late } else { 1 };
                clock.advance(WHEEL_TICK * by as u32);
                now += by;
                if step % 10 == 1 {
                    for _ in 0..200 {
                        map.set(next_key, next_key);
                        next_key += 1;
                        untouched.push(now + EXPIRE_TICKS);
                    }
                }
                for hot in 0..HOT {
                    assert_eq!(
                        map.get(&hot),
                        Some(hot),
                        "every {every}, late {late}, step {step}: a touched entry expired"
                    );
                }
                after_a_run(&map);
                let held = untouched.iter().filter(|&&deadline| deadline > now).count();
                assert_eq!(
                    map.len(),
                    HOT as usize + held,
                    "every {every}, late {late}, step {step} (tick {now}): {:?}",
                    map.janitor_stats()
                );
            }
            // The end state: untouched entries all gone; the hot ones too once left alone.
            clock.advance(WHEEL_TICK * EXPIRE_TICKS as u32);
            after_a_run(&map);
            assert!(map.is_empty(), "every {every}, late {late}: {} left", map.len());
            assert_eq!(map.janitor_stats().expired, HOT + untouched.len() as u64);
        }
    }
}

/// The chunkserver's settings (tick 15 s, expire 60 s: a wheel tick of 1.875 s), the clock
/// moving one wheel tick a step but three (5.6 s) once a minute. A burst of 50,000 entries
/// at time 0 and another right after the first stall (set before the janitor has run since
/// the clock jumped) are each gone after the first run at 60 s past their set, while 100
/// entries touched at every step stay.
#[test]
fn at_the_chunkservers_settings_a_stall_a_minute_strands_no_burst() {
    const WHEEL_TICK: Duration = Duration::from_nanos(1_875_000_000);
    const EXPIRE_TICKS: u32 = 32; // 60 s
    const BURST: u64 = 50_000;
    const HOT: u64 = 100;
    let clock = ManualClock::new();
    let map: ExpiringMap<u64, u64> = threaded_map(Duration::from_secs(15), Duration::from_secs(60), &clock);
    let mut bursts: Vec<u32> = Vec::new(); // deadlines, in wheel ticks
    let burst = |map: &ExpiringMap<u64, u64>, bursts: &mut Vec<u32>, now: u32| {
        let first = HOT + bursts.len() as u64 * BURST;
        for key in first..first + BURST {
            map.set(key, key);
        }
        bursts.push(now + EXPIRE_TICKS);
    };
    for hot in 0..HOT {
        map.set(hot, hot);
    }
    burst(&map, &mut bursts, 0);
    let mut now = 0u32;
    for step in 1..=75u32 {
        let by = if step % 32 == 0 { 3 } else { 1 };
        clock.advance(WHEEL_TICK * by);
        now += by;
        if step == 32 {
            burst(&map, &mut bursts, now);
        }
        for hot in 0..HOT {
            assert_eq!(map.get(&hot), Some(hot), "step {step} (wheel tick {now}): a touched entry expired");
        }
        after_a_run(&map);
        let held = bursts.iter().filter(|&&deadline| deadline > now).count() as u64 * BURST;
        assert_eq!(map.len() as u64, HOT + held, "step {step} at wheel tick {now}: {:?}", map.janitor_stats());
    }
    assert_eq!(map.janitor_stats().expired, 2 * BURST);
}

/// A clock that holds the janitor thread (only it) inside `now()` while told to: a janitor
/// descheduled between reading the time and acting on it, made deterministic. Callers read
/// the same clock unhindered.
#[derive(Clone, Default)]
struct HoldingClock(Arc<HoldState>);

#[derive(Default)]
struct HoldState {
    nanos: AtomicU64,
    holding: Mutex<bool>,
    released: Condvar,
    held: AtomicBool,
}

impl Clock for HoldingClock {
    fn now(&self) -> Duration {
        let state = &*self.0;
        let now = Duration::from_nanos(state.nanos.load(Ordering::SeqCst));
        if std::thread::current().name() == Some("download-buffer-janitor") {
            let mut holding = state.holding.lock().unwrap();
            while *holding {
                state.held.store(true, Ordering::SeqCst);
                holding = state.released.wait(holding).unwrap();
            }
        }
        now
    }
}

impl HoldingClock {
    fn advance(&self, by: Duration) {
        self.0.nanos.fetch_add(by.as_nanos() as u64, Ordering::SeqCst);
    }
    /// Holds the janitor in its next clock read (after it has read the time); returns once
    /// it is held there.
    fn hold_janitor(&self) {
        *self.0.holding.lock().unwrap() = true;
        wait_for("the janitor to be held in the clock", || self.0.held.load(Ordering::SeqCst));
    }
    fn release(&self) {
        self.0.held.store(false, Ordering::SeqCst);
        *self.0.holding.lock().unwrap() = false;
        self.0.released.notify_all();
    }
}

/// Releases the held janitor when dropped, so that a failing assertion cannot leave the
/// map's drop waiting forever for a held janitor thread.
struct ReleaseOnDrop<'a>(&'a HoldingClock);

impl Drop for ReleaseOnDrop<'_> {
    fn drop(&mut self) {
        self.0.release();
    }
}

/// The janitor thread is held for an hour of clock time after reading 500 ms; meanwhile
/// entry 1 is set again and entry 2 is set. The held run (its time an hour old) expires
/// nothing; the next runs expire entry 3 (untouched since 0) at once, and entries 1 and 2
/// live exactly `expire` from their sets, then go.
#[test]
fn a_janitor_held_up_after_reading_the_clock_expires_nothing_early_and_strands_nothing() {
    const TICK: Duration = ms(80); // a wheel tick of 10 ms
    const EXPIRE: Duration = ms(1000);
    let clock = HoldingClock::default();
    let map: ExpiringMap<u64, u64> = Builder::new(TICK, EXPIRE).clock(clock.clone()).build().unwrap();
    map.set(1, 1);
    map.set(3, 3);
    clock.advance(ms(500));
    wait_for_janitor_runs(&map, 2);
    let release = ReleaseOnDrop(&clock);
    clock.hold_janitor(); // it read 500 ms
    clock.advance(Duration::from_secs(3600));
    assert_eq!(map.get(&3), None, "untouched for an hour: invisible, swept or not");
    map.set(1, 11); // set at 3600.5 s
    map.set(2, 2);
    assert_eq!(map.janitor_stats().expired, 0);
    drop(release);
    wait_for_janitor_runs(&map, 3);
    assert_eq!(map.janitor_stats().expired, 1, "only entry 3 is due: {:?}", map.janitor_stats());
    assert_eq!(map.len(), 2);
    clock.advance(ms(999));
    wait_for_janitor_runs(&map, 2);
    assert_eq!(map.len(), 2, "entries set during the hold expired early: {:?}", map.janitor_stats());
    clock.advance(ms(1));
    wait_for_janitor_runs(&map, 2);
    assert!(map.is_empty(), "entries set during the hold must expire at their deadline: {:?}", map.janitor_stats());
}

/// After `done`, nothing sweeps, but no entry is ever returned past its deadline, late
/// janitor or not: entries touched after a late step, then `done`, then an hour.
#[test]
fn after_done_no_entry_is_returned_past_its_deadline() {
    const WHEEL_TICK: Duration = ms(1);
    let clock = ManualClock::new();
    let map: ExpiringMap<u64, u64> = threaded_map(WHEEL_TICK * 8, ms(50), &clock);
    for key in 0..100 {
        map.set(key, key);
    }
    after_a_run(&map);
    clock.advance(ms(30)); // a late step: 30 wheel ticks at once
    for key in 0..50 {
        assert_eq!(map.get(&key), Some(key)); // touched at 30 ms: deadline 80 ms
    }
    map.done();
    clock.advance(ms(49)); // 79 ms
    assert_eq!((0..100).filter(|key| map.get(key).is_some()).count(), 50, "touched at 30 ms, read at 79 ms");
    clock.advance(Duration::from_secs(3600));
    assert_eq!((0..100).filter(|key| map.get(key).is_some()).count(), 0, "returned an hour past its deadline");
    assert_eq!((0..100).filter(|key| map.fetch_and_delete(key).is_some()).count(), 0);
    assert_eq!(map.len(), 100, "no sweep after done: every entry is still held");
}

/// A key whose `Eq` holds its caller once, on the first comparison after it is armed, until
/// the test lets go: the `set` that compares it is held up in the middle of its search, as
/// by a preemption.
#[derive(Clone, Debug)]
struct SlowKey(u64);

static ARMED: AtomicBool = AtomicBool::new(false);
static HELD: AtomicBool = AtomicBool::new(false);
static LET_GO: AtomicBool = AtomicBool::new(false);

impl PartialEq for SlowKey {
    fn eq(&self, other: &SlowKey) -> bool {
        if ARMED.swap(false, Ordering::SeqCst) {
            HELD.store(true, Ordering::SeqCst);
            while !LET_GO.load(Ordering::SeqCst) {
                std::thread::yield_now();
            }
        }
        self.0 == other.0
    }
}

impl Eq for SlowKey {}

impl Hash for SlowKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

/// A `set` replacing an entry is held up before it links its entry; meanwhile the clock
/// moves 500 ms and a `get` touches the entry it replaces. The touch completed before the
/// set did, and began 500 ms later than the set: the replacing entry must live `expire`
/// from the touch, not from the set's start (the set dates its entry after linking it).
#[test]
fn a_set_held_up_before_it_links_never_dates_its_entry_older_than_a_touch() {
    let clock = ManualClock::new();
    let map = Arc::new(
        Builder::<SlowKey, u64>::new(ms(80), ms(1000)).clock(clock.clone()).manual().build().expect("valid durations"),
    );
    map.set(SlowKey(1), 1);
    ARMED.store(true, Ordering::SeqCst);
    let setter = {
        let map = Arc::clone(&map);
        std::thread::spawn(move || map.set(SlowKey(1), 2))
    };
    wait_for("the set to be held in its search", || HELD.load(Ordering::SeqCst));
    clock.advance(ms(500));
    map.run_janitor();
    assert_eq!(map.get(&SlowKey(1)), Some(1), "the get touches the old entry at 500 ms");
    LET_GO.store(true, Ordering::SeqCst);
    setter.join().unwrap();
    clock.advance(ms(999)); // 1499 ms: 999 ms after the touch, nothing touched since
    map.run_janitor();
    assert_eq!(map.len(), 1);
    assert_eq!(map.get(&SlowKey(1)), Some(2), "the replacing entry expired before the touch's expire");
}
