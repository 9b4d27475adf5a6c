//! Expiry of the lock-free engine ([`ExpiringMap`], [`DownloadBuffer`]), driven by a
//! [`ManualClock`] in manual mode: exact deadlines, life extension, lazy re-filing,
//! cascading, budgets and catch-up, `done`.
//!
//! The arithmetic every test relies on: the wheel ticks eight times per user tick, so with
//! `tick = 80 ms` a wheel tick is 10 ms and `expire = 1 s` is 100 wheel ticks. An entry
//! set or touched at coarse wheel tick `c` gets the deadline `c + 2 + 100`, and it is dead
//! once the coarse time (published by `run_janitor` in manual mode) reaches that tick.
//! Set at 0, its deadline is tick 102: it is visible through 1019 ms and gone at 1020 ms.
//!
//! `get` extends life, so tests that must not move a deadline observe it through `len()`
//! (which counts entries until the janitor sweeps them) or through a fresh map per probe.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use common::{manual_buffer, manual_map, manual_map_with_budget, ms, wait_for, wait_for_janitor_runs};
use download_buffer::{BufferId, Builder, Bytes, ChunkHandle, Clock, Error, ExpiringMap, JanitorRun, ManualClock};

const TICK: Duration = ms(80);
const EXPIRE: Duration = ms(1000);

/// Advances `clock` to `at` (from wherever it stands; never backwards).
fn advance_to(clock: &ManualClock, at: Duration) {
    use download_buffer::Clock;
    let now = clock.now();
    assert!(at >= now, "test bug: moving the clock back from {now:?} to {at:?}");
    clock.advance(at - now);
}

/// Runs the janitor until nothing is due; returns the runs and the entries they expired.
fn run_until_idle<K, V>(map: &ExpiringMap<K, V>) -> (usize, usize)
where
    K: std::hash::Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    let (mut runs, mut expired) = (0, 0);
    loop {
        let run = map.run_janitor();
        assert!(!run.skipped, "a manual run was skipped: {run:?}");
        runs += 1;
        expired += run.expired;
        if !run.more_due {
            return (runs, expired);
        }
        assert!(runs < 10_000, "the janitor never finished: {run:?}");
    }
}

/// A map with one entry set at time 0, its clock moved to `at` and the janitor run once.
fn one_entry_probed_at(at: Duration) -> (ExpiringMap<u64, u64>, JanitorRun) {
    let (map, clock) = manual_map(TICK, EXPIRE);
    map.set(1, 11);
    advance_to(&clock, at);
    let run = map.run_janitor();
    (map, run)
}

#[test]
fn entry_is_visible_until_its_deadline_and_gone_exactly_when_the_coarse_time_reaches_it() {
    // Each probe on a fresh map: a `get` would extend the entry's life.
    for (at, visible) in [(ms(0), true), (ms(999), true), (ms(1000), true), (ms(1019), true), (ms(1020), false)] {
        let (map, run) = one_entry_probed_at(at);
        assert_eq!(run.now, (at.as_millis() / 10) as u64, "coarse time at {at:?}");
        assert_eq!(map.get(&1).is_some(), visible, "get at {at:?}");
        let (map, _) = one_entry_probed_at(at);
        assert_eq!(map.fetch_and_delete(&1), visible.then_some(11), "fetch_and_delete at {at:?}");
    }

    // One map, observed only through len(): swept by the run that reaches tick 102, not before.
    let (map, clock) = manual_map::<u64, u64>(TICK, EXPIRE);
    map.set(1, 11);
    let run = map.run_janitor();
    assert_eq!((run.now, run.filed, run.expired, run.timers), (0, 1, 0, 1), "{run:?}");
    for at in [ms(500), ms(1000), ms(1019)] {
        advance_to(&clock, at);
        let run = map.run_janitor();
        assert_eq!(run.expired, 0, "run at {at:?} expired the entry early: {run:?}");
        assert_eq!(map.len(), 1, "len after the run at {at:?}");
    }
    advance_to(&clock, ms(1020));
    let run = map.run_janitor();
    assert_eq!((run.now, run.expired, run.more_due, run.timers), (102, 1, false, 0), "{run:?}");
    assert_eq!(map.len(), 0, "len after the run at the deadline");
    assert_eq!(map.get(&1), None);
}

#[test]
fn deadline_counts_from_the_coarse_tick_of_the_set_plus_two() {
    // Set at coarse tick 100 (clock 1005 ms, inside tick 100): deadline 100 + 2 + 100 = 202 =
    // 2020 ms, not 2005 ms: the set may have happened up to two ticks after the coarse time.
    let (map, clock) = manual_map::<u64, u64>(TICK, EXPIRE);
    advance_to(&clock, ms(1005));
    assert_eq!(map.run_janitor().now, 100);
    map.set(1, 11);
    advance_to(&clock, ms(2019));
    assert_eq!(map.run_janitor().expired, 0);
    assert_eq!(map.len(), 1, "the entry must live through 2019 ms");
    advance_to(&clock, ms(2020));
    assert_eq!(map.run_janitor().expired, 1);
    assert!(map.is_empty());
}

#[test]
fn get_extends_life() {
    let (map, clock) = manual_map::<u64, u64>(TICK, EXPIRE);
    map.set(1, 11);
    map.set(2, 22); // untouched neighbour
    advance_to(&clock, ms(900));
    assert_eq!(map.run_janitor().now, 90);
    assert_eq!(map.get(&1), Some(11)); // deadline 90 + 102 = 192 = 1920 ms
    advance_to(&clock, ms(1020));
    let run = map.run_janitor();
    assert_eq!(run.expired, 1, "only the untouched neighbour is due at 1020 ms: {run:?}");
    assert_eq!(map.len(), 1);
    assert_eq!(run.timers, 1, "the touched entry was filed again (lazy re-filing): {run:?}");
    advance_to(&clock, ms(1919));
    assert_eq!(map.run_janitor().expired, 0);
    assert_eq!(map.len(), 1, "a get at 900 ms keeps the entry through 1919 ms");
    advance_to(&clock, ms(1920));
    assert_eq!(map.run_janitor().expired, 1);
    assert!(map.is_empty());
    assert_eq!(map.get(&1), None);
}

#[test]
fn gets_within_one_coarse_tick_give_the_same_expiry() {
    // Key 1: touched many times while the coarse time is 90 (clock 900..=909 ms): every touch
    // after the first would move the deadline by less than a tick, so it stays at 192 (1920 ms).
    // Key 2: touched once more at 910 ms (tick 91): its deadline moves to 193 (1930 ms).
    let (map, clock) = manual_map::<u64, u64>(TICK, EXPIRE);
    map.set(1, 11);
    map.set(2, 22);
    for at in [900, 903, 905, 909] {
        advance_to(&clock, ms(at));
        assert_eq!(map.run_janitor().now, 90);
        for _ in 0..100 {
            assert_eq!(map.get(&1), Some(11));
        }
        assert_eq!(map.get(&2), Some(22));
    }
    advance_to(&clock, ms(910));
    assert_eq!(map.run_janitor().now, 91);
    assert_eq!(map.get(&2), Some(22));

    advance_to(&clock, ms(1919));
    map.run_janitor();
    assert_eq!(map.len(), 2);
    advance_to(&clock, ms(1920));
    assert_eq!(map.run_janitor().expired, 1, "key 1 expires at 1920 ms, after 400 gets in tick 90");
    assert_eq!(map.len(), 1);
    advance_to(&clock, ms(1929));
    assert_eq!(map.run_janitor().expired, 0);
    assert_eq!(map.len(), 1, "key 2, touched in tick 91, lives through 1929 ms");
    advance_to(&clock, ms(1930));
    assert_eq!(map.run_janitor().expired, 1);
    assert!(map.is_empty());
}

#[test]
fn set_replaces_and_resets_life() {
    let (map, clock) = manual_map::<u64, u64>(TICK, EXPIRE);
    map.set(1, 11);
    map.run_janitor(); // the first entry is filed at tick 102
    advance_to(&clock, ms(900));
    assert_eq!(map.run_janitor().now, 90);
    map.set(1, 12); // a new entry, deadline 90 + 102 = 192 = 1920 ms
    assert_eq!(map.len(), 1, "a replacing set does not add an entry");
    advance_to(&clock, ms(1020));
    let run = map.run_janitor();
    assert_eq!(run.expired, 0, "the replaced entry's old deadline must not expire the new value: {run:?}");
    assert_eq!(map.len(), 1);
    advance_to(&clock, ms(1919));
    map.run_janitor();
    assert_eq!(map.len(), 1);
    advance_to(&clock, ms(1920));
    assert_eq!(map.run_janitor().expired, 1);
    assert!(map.is_empty());

    // The value is the new one, and a replaced value is gone for good.
    let (map, _clock) = manual_map::<u64, u64>(TICK, EXPIRE);
    map.set(1, 11);
    map.set(1, 12);
    assert_eq!(map.get(&1), Some(12));
    assert_eq!(map.fetch_and_delete(&1), Some(12));
    assert_eq!(map.get(&1), None);
    assert!(map.is_empty());
}

#[test]
fn expired_but_unswept_entries_are_never_returned() {
    // Budget 1: the run that reaches the deadline expires one entry; the others stay in the
    // table (len counts them) while the coarse time is past their deadline.
    const N: u64 = 100;
    let (map, clock) = manual_map_with_budget::<u64, u64>(TICK, EXPIRE, 1);
    for key in 0..N {
        map.set(key, key * 10);
    }
    assert_eq!(map.run_janitor().filed, N as usize);
    advance_to(&clock, ms(1020));
    let run = map.run_janitor();
    assert_eq!((run.handled, run.expired, run.more_due), (1, 1, true), "{run:?}");
    assert_eq!(map.len(), N as usize - 1);
    let mut unswept = 0;
    for key in 0..N {
        assert_eq!(map.fetch_and_delete(&key), None, "fetch_and_delete({key}) past its deadline");
        assert_eq!(map.get(&key), None, "get({key}) past its deadline");
        unswept += 1;
    }
    assert_eq!(unswept, N);
    assert_eq!(map.len(), N as usize - 1, "misses neither remove nor revive expired entries");

    // A set on an expired, unswept key makes a live entry that the backlog must not take.
    map.set(7, 777);
    assert_eq!(map.get(&7), Some(777));
    let (runs, expired) = run_until_idle(&map);
    // The replaced key's old timer is unfiled when its entry is retired, not handed out: one
    // run per due entry, the last one reporting nothing more due.
    assert_eq!(runs, N as usize - 2, "{runs} runs at budget 1 for {} due entries", N - 2);
    assert_eq!(expired, N as usize - 2, "the replaced key's old entry is not counted as expired");
    assert_eq!(map.len(), 1);
    assert_eq!(map.get(&7), Some(777));
}

#[test]
fn download_buffer_reports_not_found_for_an_expired_unswept_entry() {
    let clock = ManualClock::new();
    let buffer = download_buffer::DownloadBuffer::builder(TICK, EXPIRE)
        .clock(clock.clone())
        .manual()
        .janitor_budget(1)
        .build_download_buffer()
        .unwrap();
    let ids: Vec<BufferId> = (0..10).map(|n| BufferId::new(ChunkHandle(n))).collect();
    for (n, id) in ids.iter().enumerate() {
        buffer.set(*id, Bytes::from(vec![n as u8; 100]));
    }
    advance_to(&clock, ms(1020));
    assert!(buffer.run_janitor().more_due);
    assert_eq!(buffer.len(), 9);
    for id in &ids {
        assert_eq!(buffer.fetch_and_delete(id), Err(Error::NotFound { id: *id }));
        assert_eq!(buffer.get(id), None);
    }
    assert_eq!(buffer.len(), 9);
}

/// `delete` says it "returns whether this call removed a live one". An entry past its
/// deadline is not live (get and fetch_and_delete refuse it), so deleting one, swept or
/// not, reports `false`.
#[test]
fn delete_of_an_expired_unswept_entry_reports_no_live_removal() {
    let (map, clock) = manual_map_with_budget::<u64, u64>(TICK, EXPIRE, 1);
    for key in 0..10 {
        map.set(key, key);
    }
    advance_to(&clock, ms(1020));
    assert!(map.run_janitor().more_due);
    let removed_live = (0..10).filter(|key| map.delete(key)).count();
    assert_eq!(removed_live, 0, "delete reported removing a live entry past its deadline");
}

#[test]
fn lazy_refiling_keeps_a_hot_entry_for_100_s_while_neighbours_expire() {
    // Every 100 ms (ten wheel ticks) for 100 s: move the clock, run the janitor, touch the hot
    // key, set a new cold key. A cold key set at t (right after the run at t) dies at the run
    // at t + 1100 ms (its deadline is t + 1020 ms), so after each run exactly the ten previous
    // ones remain.
    let (map, clock) = manual_map::<u64, u64>(TICK, EXPIRE);
    const HOT: u64 = u64::MAX;
    map.set(HOT, 0);
    for step in 1..=1000u64 {
        clock.advance(ms(100));
        let run = map.run_janitor();
        assert_eq!(run.now, step * 10);
        let cold_alive = (step - 1).min(10);
        assert_eq!(map.len() as u64, 1 + cold_alive, "step {step}: {run:?}");
        if step > 11 {
            assert_eq!(run.expired, 1, "step {step}: one cold key expires per step: {run:?}");
        }
        assert_eq!(map.get(&HOT), Some(0), "step {step}: the hot key expired");
        map.set(step, step);
    }
    // Only the hot key and the last eleven cold ones: the 989 others expired on time.
    assert_eq!(map.len(), 12);
    assert_eq!(map.janitor_stats().expired, 989);
    assert_eq!(map.get(&HOT), Some(0));
    assert_eq!(map.get(&985), None);
    assert_eq!(map.get(&991), Some(991));
}

#[test]
fn cascading_across_levels_expires_every_entry_exactly_on_its_tick() {
    // tick 20 ms: a wheel tick is 2.5 ms; expire 10 min = 240_000 wheel ticks (a wheel of
    // three 64-slot levels, 262_144 ticks, plus its overflow list). Entries are set at
    // coarse ticks around level and window boundaries (set at 22_142, the deadline is the
    // window boundary 262_144); each must still be counted by len() after the run at its
    // deadline - 1 and be gone after the run at its deadline.
    const WHEEL_NANOS: u64 = 2_500_000;
    const EXPIRE_TICKS: u64 = 240_000;
    let (map, clock) = manual_map::<u64, u64>(ms(20), Duration::from_secs(600));
    let set_at: Vec<u64> = vec![
        0, 1, 63, 64, 65, 4_095, 4_096, 4_097, 22_141, 22_142, 22_143, 100_000, 262_143, 262_144, 262_145, 300_001,
    ];
    let deadline = |c: u64| c + 2 + EXPIRE_TICKS;
    // (tick, Some(key) = set that key, None = probe)
    let mut events: Vec<(u64, Option<u64>)> = Vec::new();
    for (key, &c) in set_at.iter().enumerate() {
        events.push((c, Some(key as u64)));
        events.push((deadline(c) - 1, None));
        events.push((deadline(c), None));
    }
    events.sort();
    let mut set: Vec<u64> = Vec::new(); // deadlines of the entries set so far
    for (tick, event) in events {
        advance_to(&clock, Duration::from_nanos(tick * WHEEL_NANOS));
        let (_, expired) = run_until_idle(&map);
        match event {
            Some(key) => {
                map.set(key, key);
                set.push(deadline(tick));
            }
            None => {
                let alive = set.iter().filter(|&&d| d > tick).count();
                assert_eq!(map.len(), alive, "after the run at tick {tick} (expired {expired} in it)");
            }
        }
    }
    assert!(map.is_empty());
    assert_eq!(map.janitor_stats().expired, set_at.len() as u64);
}

#[test]
fn cascading_with_one_second_steps_and_with_one_jump() {
    // tick 20 ms: a wheel tick is 2.5 ms, expire 10 min = 240_000 wheel ticks; set at 0, the
    // deadline is tick 240_002 = 600.005 s.
    let deadline = Duration::from_nanos(240_002 * 2_500_000);
    assert_eq!(deadline, ms(600_005));
    // Runs every second for ten minutes: the entry cascades down the levels and expires on
    // the first run at or past its deadline.
    let (map, clock) = manual_map::<u64, u64>(ms(20), Duration::from_secs(600));
    map.set(1, 1);
    for second in 1..=600 {
        clock.advance(Duration::from_secs(1));
        assert_eq!(map.run_janitor().expired, 0, "expired early, at {second} s");
        assert_eq!(map.len(), 1);
    }
    advance_to(&clock, deadline - Duration::from_nanos(1));
    assert_eq!(map.run_janitor().expired, 0);
    advance_to(&clock, deadline);
    assert_eq!(map.run_janitor().expired, 1, "not expired within one wheel tick of its deadline");
    assert!(map.is_empty());

    // The janitor not run at all until one tick before the deadline, then at the deadline.
    let (map, clock) = manual_map::<u64, u64>(ms(20), Duration::from_secs(600));
    map.set(1, 1);
    map.run_janitor();
    advance_to(&clock, deadline - Duration::from_nanos(1));
    assert_eq!(map.run_janitor().expired, 0);
    assert_eq!(map.len(), 1);
    advance_to(&clock, deadline);
    assert_eq!(map.run_janitor().expired, 1);
    assert!(map.is_empty());
}

#[test]
fn duration_max_expire_never_expires() {
    const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);
    for tick in [ms(1), TICK, Duration::from_secs(15), Duration::from_secs(3600)] {
        for expire in [Duration::MAX, Duration::from_secs(u64::MAX)] {
            let (map, clock) = manual_map::<u64, u64>(tick, expire);
            map.set(1, 1);
            map.set(2, 2);
            map.run_janitor();
            for _ in 0..100 {
                clock.advance(YEAR); // a century, a year at a time
                assert_eq!(map.run_janitor().expired, 0);
            }
            assert_eq!(map.get(&1), Some(1), "tick {tick:?}, expire {expire:?}: expired within a century");
            clock.advance(Duration::MAX); // the manual clock saturates at about 584 years
            assert_eq!(map.run_janitor().expired, 0, "tick {tick:?}, expire {expire:?}");
            assert_eq!(map.len(), 2, "tick {tick:?}, expire {expire:?}");
            assert_eq!(map.get(&1), Some(1), "tick {tick:?}, expire {expire:?}");
            assert_eq!(map.fetch_and_delete(&2), Some(2), "tick {tick:?}, expire {expire:?}");
        }
    }
}

/// With a wheel tick under 32 ns the clock's ~584 years of nanoseconds exceed the 59-bit
/// deadline space: the coarse time saturates at `NEVER - 1`, one tick before `NEVER`, the
/// deadline of an entry that should never expire. (tick 8 ns: a wheel tick of 1 ns.)
#[test]
fn duration_max_expire_never_expires_even_with_a_nanosecond_tick() {
    let (map, clock) = manual_map::<u64, u64>(Duration::from_nanos(8), Duration::MAX);
    map.set(1, 1);
    map.run_janitor();
    clock.advance(Duration::MAX);
    map.run_janitor();
    assert_eq!(map.len(), 1);
    assert_eq!(map.get(&1), Some(1), "an entry with expire Duration::MAX became invisible");
}

#[test]
fn tick_longer_than_expire_works() {
    // tick 10 s, expire 1 s: a wheel tick is 1.25 s, expire rounds up to 1 wheel tick; set at
    // 0, the deadline is tick 0 + 2 + 1 = 3 = 3.75 s. Visible for at least expire, gone within
    // expire + tick.
    for (at, visible) in [(ms(0), true), (ms(1000), true), (ms(3749), true), (ms(3750), false)] {
        let (map, clock) = manual_map::<u64, u64>(Duration::from_secs(10), EXPIRE);
        map.set(1, 1);
        advance_to(&clock, at);
        map.run_janitor();
        assert_eq!(map.get(&1).is_some(), visible, "get at {at:?}");
        assert_eq!(map.len(), usize::from(visible), "len at {at:?}");
    }
    // Touched at 3 s (tick 2): deadline 2 + 2 + 1 = 5 = 6.25 s.
    let (map, clock) = manual_map::<u64, u64>(Duration::from_secs(10), EXPIRE);
    map.set(1, 1);
    advance_to(&clock, ms(3000));
    assert_eq!(map.run_janitor().now, 2);
    assert_eq!(map.get(&1), Some(1));
    advance_to(&clock, ms(6249));
    map.run_janitor();
    assert_eq!(map.len(), 1);
    advance_to(&clock, ms(6250));
    assert_eq!(map.run_janitor().expired, 1);
    assert!(map.is_empty());
}

#[test]
fn one_run_decides_each_entry_of_a_slot_by_its_own_state() {
    // 1000 entries in one slot (more than the janitor holds ahead while expiring): a third
    // touched (re-filed), a third deleted before the run, a third due.
    let (map, clock) = manual_map::<u64, u64>(TICK, EXPIRE);
    for key in 0..1000 {
        map.set(key, key * 7);
    }
    map.run_janitor();
    advance_to(&clock, ms(500));
    map.run_janitor();
    for key in 0..1000 {
        match key % 3 {
            0 => assert_eq!(map.get(&key), Some(key * 7)),
            1 => assert!(map.delete(&key)),
            _ => {}
        }
    }
    advance_to(&clock, ms(1020));
    let run = map.run_janitor();
    // Handed out: the touched and the due (the deleted were unfiled before); retired: the
    // deleted and the expired.
    assert_eq!((run.expired, run.handled, run.retired), (333, 667, 666), "{run:?}");
    assert_eq!(map.len(), 334);
    for key in 0..1000 {
        assert_eq!(map.get(&key), (key % 3 == 0).then_some(key * 7), "key {key}");
    }
}

static ARMED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
static REENTRANT: std::sync::OnceLock<(ExpiringMap<u64, Arc<u64>>, ManualClock)> = std::sync::OnceLock::new();

/// The map's "is this value large" predicate, which the table asks as it unlinks an entry:
/// the first time it runs while [`ARMED`], it deletes every key of [`REENTRANT`]. Asked
/// from inside the janitor's first removal, it removes entries the janitor already holds
/// ahead (handed out by the wheel, not yet handled) or still has filed.
fn deleting_is_large(_: &Arc<u64>) -> bool {
    if ARMED.swap(false, Ordering::SeqCst) {
        let (map, _) = REENTRANT.get().expect("armed only once the map exists");
        for key in 0..1000 {
            map.delete(&key);
        }
    }
    false
}

#[test]
fn entries_removed_while_the_janitor_holds_them_ahead_are_left_to_their_remover() {
    let (map, clock) = REENTRANT.get_or_init(|| {
        let clock = ManualClock::new();
        let map = Builder::new(TICK, EXPIRE).clock(clock.clone()).manual().build_with_eager_release(deleting_is_large);
        (map.expect("valid durations"), clock)
    });
    let value = Arc::new(0);
    for key in 0..1000 {
        map.set(key, Arc::clone(&value));
    }
    map.run_janitor();
    advance_to(clock, ms(1020));
    ARMED.store(true, Ordering::SeqCst);
    let run = map.run_janitor();
    assert!(!ARMED.load(Ordering::SeqCst), "the janitor unlinked nothing: {run:?}");
    // The janitor's first removal deleted the 999 others: those it had handed out already
    // (held ahead) or still had filed are left unfiled, retired once each, and not counted
    // as expired.
    assert_eq!((run.expired, run.handled, run.retired), (1, 1000, 1000), "{run:?}");
    assert!(map.is_empty());
    assert_eq!(map.run_janitor().expired, 0);
    // Each run pushes the epoch on, so the values (removed on this thread) are dropped.
    wait_for("every value released", || {
        map.run_janitor();
        Arc::strong_count(&value) == 1
    });
}

static PANIC_ARMED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// An eager-release predicate that panics once, the first time it is asked while armed.
fn panicking_is_large(_: &u64) -> bool {
    if PANIC_ARMED.swap(false, Ordering::SeqCst) {
        std::panic::resume_unwind(Box::new("intentional panic in the eager-release predicate"));
    }
    false
}

#[test]
fn a_panic_in_the_middle_of_an_expiry_strands_no_entry() {
    // The janitor holds due entries ahead of the one it handles; a panic while handling one
    // (here from the predicate it asks as it unlinks) must not leave the others off the wheel,
    // where nothing would ever expire them.
    let clock = ManualClock::new();
    let map = Builder::new(TICK, EXPIRE)
        .clock(clock.clone())
        .manual()
        .build_with_eager_release::<u64, u64>(panicking_is_large)
        .expect("valid durations");
    for key in 0..100 {
        map.set(key, key);
    }
    map.run_janitor();
    advance_to(&clock, ms(1020));
    PANIC_ARMED.store(true, Ordering::SeqCst);
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| map.run_janitor()));
    assert!(run.is_err(), "the predicate did not panic");
    // The next runs expire the rest: the entry whose unlink panicked was claimed and counted
    // out already; the others were filed again.
    advance_to(&clock, ms(1040));
    let (_, expired) = run_until_idle(&map);
    assert_eq!(expired, 99, "{:?}", map.janitor_stats());
    assert_eq!(map.len(), 0);
    assert!((0..100).all(|key| map.get(&key).is_none()));
}

#[test]
fn mass_expiry_of_a_million_entries_is_spread_over_budgeted_runs() {
    const N: usize = 1_000_000;
    const BUDGET: usize = 65_536;
    let (map, clock) = manual_map_with_budget::<u64, ()>(TICK, EXPIRE, BUDGET);
    for key in 0..N as u64 {
        map.set(key, ());
    }
    let run = map.run_janitor();
    assert_eq!((run.filed, run.handled, run.timers), (N, 0, N), "{run:?}");
    advance_to(&clock, ms(1020));
    let before = map.janitor_stats();
    let mut runs: Vec<JanitorRun> = Vec::new();
    loop {
        let run = map.run_janitor();
        runs.push(run);
        assert!(run.handled <= BUDGET, "run {} handled {} > budget: {run:?}", runs.len(), run.handled);
        assert_eq!(run.expired, run.handled, "every handled timer was due: {run:?}");
        assert_eq!(map.len(), run.timers, "{run:?}");
        if !run.more_due {
            break;
        }
        assert!(runs.len() < N.div_ceil(BUDGET), "more_due after {} runs: {run:?}", runs.len());
    }
    let expired: usize = runs.iter().map(|run| run.expired).sum();
    assert_eq!(expired, N);
    let ideal = N.div_ceil(BUDGET);
    assert_eq!(runs.len(), ideal, "{} runs for {N} due entries at budget {BUDGET} (ideal {ideal})", runs.len());
    assert!(runs[..runs.len() - 1].iter().all(|run| run.more_due));
    assert!(map.is_empty());
    assert_eq!(map.janitor_stats().expired - before.expired, N as u64);
    println!("mass expiry: {N} entries, budget {BUDGET}: {} runs (ideal {ideal})", runs.len());
}

/// 10_000 entries filed at time 0, then the janitor is not run for an hour (a janitor
/// descheduled, or an embedder's event loop stuck), then it catches up at budget 1_000.
fn stalled_map() -> (ExpiringMap<u64, u64>, ManualClock) {
    let (map, clock) = manual_map_with_budget::<u64, u64>(TICK, EXPIRE, STALL_BUDGET);
    for key in 0..STALLED {
        map.set(key, key);
    }
    map.run_janitor();
    clock.advance(Duration::from_secs(3600));
    (map, clock)
}

const STALLED: u64 = 10_000;
const STALL_BUDGET: usize = 1_000;

#[test]
fn catching_up_after_a_one_hour_stall_takes_bounded_runs() {
    // Exactly ceil(10_000 / budget) runs, whatever the length of the gap.
    let (map, _clock) = stalled_map();
    let mut runs = 0;
    let mut expired = 0;
    loop {
        let run = map.run_janitor();
        runs += 1;
        assert_eq!(run.now, 3600 * 100, "{run:?}");
        assert!(run.handled <= STALL_BUDGET, "{run:?}");
        expired += run.expired;
        if !run.more_due {
            break;
        }
        assert!(runs < 1_000, "no end to the catch-up: {run:?}");
    }
    let ideal = (STALLED as usize).div_ceil(STALL_BUDGET);
    assert_eq!(runs, ideal, "{runs} runs to catch up (ideal {ideal})");
    assert_eq!(expired, STALLED as usize);
    assert!(map.is_empty());
    println!("catch-up after a 1 h stall: {runs} runs for {STALLED} due entries at budget {STALL_BUDGET}");
}

#[test]
fn entries_set_during_the_catch_up_are_not_taken_by_it() {
    // The first catch-up run published the new coarse time: entries set or touched from then
    // on are dated by it, and the rest of the catch-up, all of it due already, must not take
    // them; they live their full life from 3600 s (deadline tick 360_000 + 102, 3600 s + 1020 ms).
    let (map, clock) = stalled_map();
    let first = map.run_janitor();
    assert!(first.more_due, "{first:?}");
    for key in STALLED..STALLED + 10 {
        map.set(key, key);
    }
    let (_, expired) = run_until_idle(&map);
    assert_eq!(first.expired + expired, STALLED as usize);
    assert_eq!(map.len(), 10);
    for key in STALLED..STALLED + 10 {
        assert_eq!(map.get(&key), Some(key), "an entry set during the catch-up was expired by it");
    }
    advance_to(&clock, Duration::from_secs(3600) + ms(1019));
    run_until_idle(&map);
    assert_eq!(map.len(), 10);
    advance_to(&clock, Duration::from_secs(3600) + ms(1020));
    let (_, expired) = run_until_idle(&map);
    assert_eq!(expired, 10);
    assert!(map.is_empty());
}

/// While the wheel's time lags behind `now` (a catch-up in progress), a new entry's deadline
/// lies beyond the wheel's window (two levels here, 4_096 ticks) and goes to the overflow
/// list. Were the overflow to "turn" one window at a time, handing every overflow timer out
/// again each time, a one-hour gap (360_000 ticks) would cost ~88 hand-outs per such entry,
/// each charged to the budget: ~8_800 for 100 entries set during the catch-up, ~9 more runs
/// at budget 1_000. Once nothing is filed before `now`, the catch-up turns the overflow
/// once: each new entry is handed out exactly once, so the catch-up handles the 10_000 due
/// entries plus 100 hand-outs, in exactly ceil(10_100 / 1_000) = 11 runs.
#[test]
fn entries_set_during_the_catch_up_do_not_prolong_it() {
    let (map, _clock) = stalled_map();
    let first = map.run_janitor();
    for key in STALLED..STALLED + 100 {
        map.set(key, key);
    }
    let mut runs = 1;
    let mut handled = first.handled;
    loop {
        let run = map.run_janitor();
        runs += 1;
        handled += run.handled;
        if !run.more_due || runs > 10_000 {
            break;
        }
    }
    let ideal = (STALLED as usize + 100).div_ceil(STALL_BUDGET);
    assert_eq!(
        (runs, handled),
        (ideal, STALLED as usize + 100),
        "{runs} runs ({handled} timers handed out) to catch up on {STALLED} due entries at budget {STALL_BUDGET} \
         after 100 entries were set during the catch-up (ideal {ideal})"
    );
}

/// A clock that can hold the janitor thread inside `now()`: a descheduled janitor, made
/// deterministic. The hot path never reads the clock while the janitor runs, so callers
/// are not held.
#[derive(Clone, Default)]
struct StallableClock(Arc<StallState>);

#[derive(Default)]
struct StallState {
    nanos: AtomicU64,
    stalled: Mutex<bool>,
    released: Condvar,
    /// Threads held inside `now()` right now.
    held: AtomicU64,
}

impl Clock for StallableClock {
    fn now(&self) -> Duration {
        let state = &*self.0;
        let mut stalled = state.stalled.lock().unwrap();
        if *stalled {
            state.held.fetch_add(1, Ordering::SeqCst);
            while *stalled {
                stalled = state.released.wait(stalled).unwrap();
            }
            state.held.fetch_sub(1, Ordering::SeqCst);
        }
        Duration::from_nanos(state.nanos.load(Ordering::SeqCst))
    }
}

impl StallableClock {
    fn advance(&self, by: Duration) {
        self.0.nanos.fetch_add(by.as_nanos() as u64, Ordering::SeqCst);
    }
    /// Holds the janitor in its next `now()`; returns once it is held there.
    fn stall_janitor(&self) {
        *self.0.stalled.lock().unwrap() = true;
        wait_for("the janitor to be held in the clock", || self.0.held.load(Ordering::SeqCst) == 1);
    }
    fn release(&self) {
        *self.0.stalled.lock().unwrap() = false;
        self.0.released.notify_all();
    }
}

/// The contract (`Buffer`): "an entry stays visible for at least `expire` after its last
/// `set` or `get`", in the clock's time. The janitor thread is held for an hour of clock
/// time; meanwhile a `get` touches entry 1 and a `set` makes entry 2, both dated with the
/// coarse time the janitor published before it stalled (500 ms), an hour stale: their
/// deadlines (1520 ms) are an hour in the past when the janitor comes back. The late run
/// must not expire them: their deadlines are uncertain, and it re-dates them as if touched
/// at its own time. Entry 3, last touched before the stall began (at 0, deadline 1020 ms),
/// is certain and expires at once.
#[test]
fn entries_touched_while_the_janitor_is_stalled_are_not_expired_by_its_late_run() {
    let clock = StallableClock::default();
    let map = Builder::new(TICK, EXPIRE).clock(clock.clone()).build::<u64, u64>().unwrap();
    map.set(1, 1);
    map.set(3, 3);
    wait_for_janitor_runs(&map, 2);
    walk(&clock, &map, ms(500)); // the coarse time is now 500 ms
    clock.stall_janitor();
    clock.advance(Duration::from_secs(3600));
    assert_eq!(map.get(&1), Some(1), "touched at 3600.5 s by the clock");
    map.set(2, 2); // set at 3600.5 s by the clock
    clock.release();
    wait_for_janitor_runs(&map, 2);
    let stats = map.janitor_stats();
    assert_eq!(stats.expired, 1, "only entry 3 is due: {stats:?}");
    assert_eq!(map.get(&3), None, "an entry untouched since before the stall outlived it");
    assert_eq!(map.len(), 2, "an entry touched or set an instant before the late run was expired by it");
    // They live their full life from the late run (deadline +1020 ms), no more.
    walk(&clock, &map, ms(1000));
    assert_eq!(map.len(), 2, "re-dated entries expired early: {:?}", map.janitor_stats());
    walk(&clock, &map, ms(60));
    assert!(map.is_empty(), "re-dated entries must still expire: {:?}", map.janitor_stats());
    map.done();
}

/// Moves the clock on by `by` in steps of two wheel ticks (20 ms), one janitor run each: a
/// janitor on time, however long the walk.
fn walk(clock: &StallableClock, map: &ExpiringMap<u64, u64>, by: Duration) {
    let mut walked = Duration::ZERO;
    while walked < by {
        clock.advance(ms(20));
        walked += ms(20);
        wait_for_janitor_runs(map, 1);
    }
}

/// The same stall in manual mode is no stall: the embedder's runs are the clock ("the coarse
/// time moves only on `run_janitor`"), so touches are dated by the last run, and entries
/// whose deadline has passed by the next run expire then, as documented.
#[test]
fn in_manual_mode_touches_are_dated_by_the_last_run() {
    let (map, clock) = manual_map::<u64, u64>(TICK, EXPIRE);
    map.set(1, 1);
    map.run_janitor();
    clock.advance(Duration::from_secs(3600));
    assert_eq!(map.get(&1), Some(1), "the coarse time is still 0");
    let run = map.run_janitor();
    assert_eq!((run.expired, run.redated), (1, 0), "{run:?}");
    assert_eq!(map.get(&1), None);
}

#[test]
fn after_done_the_hot_path_reads_the_manual_clock_itself() {
    let (map, clock) = manual_map::<u64, u64>(TICK, EXPIRE);
    map.set(1, 1);
    map.set(2, 2);
    map.set(3, 3);
    map.run_janitor();
    map.done();
    map.done(); // idempotent
    let run = map.run_janitor();
    assert!(run.skipped, "run_janitor after done: {run:?}");
    let runs = map.janitor_stats().runs;

    // The map still serves every call.
    assert_eq!(map.get(&1), Some(1));
    assert_eq!(map.fetch_and_delete(&2), Some(2));
    assert!(map.delete(&3));
    map.set(4, 4);
    map.set(5, 5);
    assert_eq!(map.len(), 3);

    // No janitor run: the deadlines (all tick 102 = 1020 ms) are judged by the clock.
    advance_to(&clock, ms(1019));
    assert_eq!(map.get(&4), Some(4)); // read at 1019 ms (tick 101): deadline now 203 = 2030 ms
    advance_to(&clock, ms(1020));
    assert_eq!(map.get(&1), None, "after done, get must read the clock");
    assert_eq!(map.fetch_and_delete(&5), None, "after done, fetch_and_delete must read the clock");
    assert_eq!(map.get(&4), Some(4), "the get at 1019 ms extended the entry");
    assert_eq!(map.len(), 3, "no sweep after done: expired entries are still counted");

    // New entries are dated by the clock too.
    map.set(6, 6); // at 1020 ms = tick 102: deadline 204 = 2040 ms
    advance_to(&clock, ms(2039));
    assert_eq!(map.fetch_and_delete(&6), Some(6));
    advance_to(&clock, ms(2040));
    assert_eq!(map.get(&4), None);
    assert!(map.run_janitor().skipped);
    assert_eq!(map.janitor_stats().runs, runs, "a skipped run is not counted");
}

#[test]
fn download_buffer_after_done_misses_by_the_clock() {
    let (buffer, clock) = manual_buffer(TICK, EXPIRE);
    let id = BufferId::new(ChunkHandle(1));
    buffer.set(id, Bytes::from_static(b"payload"));
    buffer.done();
    assert!(buffer.run_janitor().skipped);
    advance_to(&clock, ms(1019));
    assert_eq!(buffer.len(), 1);
    advance_to(&clock, ms(1020 + 1000));
    assert_eq!(buffer.get(&id), None);
    assert_eq!(buffer.fetch_and_delete(&id), Err(Error::NotFound { id }));
}

#[test]
fn janitor_stats_count_runs_expiries_and_retirements() {
    let (map, clock) = manual_map::<u64, u64>(TICK, EXPIRE);
    assert_eq!(map.janitor_stats().runs, 0);
    for key in 0..10 {
        map.set(key, key);
    }
    let run = map.run_janitor();
    assert_eq!(run.filed, 10);
    assert!(map.delete(&0));
    assert_eq!(map.fetch_and_delete(&1), Some(1));
    map.set(2, 22); // replaces: the old entry is removed
    let run = map.run_janitor();
    assert_eq!(run.retired, 3, "deleted, fetched and replaced entries are retired: {run:?}");
    assert_eq!(run.filed, 1, "the replacing entry: {run:?}");
    advance_to(&clock, ms(1020));
    let run = map.run_janitor();
    assert_eq!(run.expired, 8, "{run:?}");
    assert!(map.is_empty());
    let stats = map.janitor_stats();
    assert_eq!(stats.runs, 3);
    assert_eq!(stats.expired, 8);
    assert_eq!(stats.retired, 11, "every removed entry is eventually retired by the janitor: {stats:?}");
}

#[test]
fn builder_with_capacity_and_default_budget_expires_the_same() {
    let clock = ManualClock::new();
    let map: ExpiringMap<u64, u64> =
        Builder::new(TICK, EXPIRE).clock(clock.clone()).manual().initial_capacity(10_000).build().unwrap();
    for key in 0..5_000 {
        map.set(key, key);
    }
    advance_to(&clock, ms(1019));
    map.run_janitor();
    assert_eq!(map.len(), 5_000);
    advance_to(&clock, ms(1020));
    let run = map.run_janitor();
    assert_eq!((run.expired, run.more_due), (5_000, false), "{run:?}");
    assert!(map.is_empty());
}
