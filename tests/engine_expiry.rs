//! Expiry of the lock-free engine ([`ExpiringMap`], [`DownloadBuffer`]), driven by a
//! [`ManualClock`] in manual mode: exact deadlines, life extension, lazy re-filing,
//! cascading, budgets and catch-up, `done`.
//!
//! The arithmetic every test relies on: the wheel ticks eight times per user tick, so with
//! `tick = 80 ms` a wheel tick is 10 ms and `expire = 1 s` is 100 wheel ticks. An entry
//! set or touched at clock time `t` gets the deadline `ceil((t + 1 s) / 10 ms)` in wheel
//! ticks, and it is dead once the clock reaches that tick, whether or not a janitor run
//! has removed it (every call reads the clock). Set at 0, its deadline is tick 100: it is
//! visible through 999 ms and gone at 1000 ms; the first run at or after 1000 ms removes it.
//!
//! `get` extends life, so tests that must not move a deadline observe it through `len()`
//! (which counts entries until the janitor sweeps them) or through a fresh map per probe.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use common::{manual_buffer, manual_map, manual_map_with_budget, ms, wait_for};
use download_buffer::{BufferId, Builder, Bytes, ChunkHandle, Error, ExpiringMap, JanitorRun, ManualClock};

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
fn entry_is_visible_until_its_deadline_and_gone_exactly_when_the_clock_reaches_it() {
    // Each probe on a fresh map: a `get` would extend the entry's life.
    for (at, visible) in [(ms(0), true), (ms(500), true), (ms(999), true), (ms(1000), false), (ms(1019), false)] {
        let (map, run) = one_entry_probed_at(at);
        assert_eq!(run.now, (at.as_millis() / 10) as u64, "coarse time at {at:?}");
        assert_eq!(map.get(&1).is_some(), visible, "get at {at:?}");
        let (map, _) = one_entry_probed_at(at);
        assert_eq!(map.fetch_and_delete(&1), visible.then_some(11), "fetch_and_delete at {at:?}");
    }

    // One map, observed only through len(): swept by the run that reaches tick 100, not before.
    let (map, clock) = manual_map::<u64, u64>(TICK, EXPIRE);
    map.set(1, 11);
    let run = map.run_janitor();
    assert_eq!((run.now, run.filed, run.expired, run.timers), (0, 1, 0, 1), "{run:?}");
    for at in [ms(500), ms(990), ms(999)] {
        advance_to(&clock, at);
        let run = map.run_janitor();
        assert_eq!(run.expired, 0, "run at {at:?} expired the entry early: {run:?}");
        assert_eq!(map.len(), 1, "len after the run at {at:?}");
    }
    advance_to(&clock, ms(1000));
    assert_eq!(map.get(&1), None, "dead at its deadline before any run removes it");
    assert_eq!(map.len(), 1);
    let run = map.run_janitor();
    assert_eq!((run.now, run.expired, run.more_due, run.timers), (100, 1, false, 0), "{run:?}");
    assert_eq!(map.len(), 0, "len after the run at the deadline");
    assert_eq!(map.get(&1), None);
}

#[test]
fn deadline_is_expire_after_the_set_rounded_up_to_a_wheel_tick() {
    // Set at 1005 ms (inside wheel tick 100): 2005 ms rounds up to tick 201 = 2010 ms. No
    // janitor run since the map was made: the set reads the clock itself.
    let (map, clock) = manual_map::<u64, u64>(TICK, EXPIRE);
    advance_to(&clock, ms(1005));
    map.set(1, 11);
    advance_to(&clock, ms(2009));
    assert_eq!(map.run_janitor().expired, 0);
    assert_eq!(map.len(), 1, "the entry must live through 2009 ms");
    advance_to(&clock, ms(2010));
    assert_eq!(map.run_janitor().expired, 1);
    assert!(map.is_empty());
}

#[test]
fn get_extends_life() {
    let (map, clock) = manual_map::<u64, u64>(TICK, EXPIRE);
    map.set(1, 11);
    map.set(2, 22); // untouched neighbour
    assert_eq!(map.run_janitor().filed, 2);
    advance_to(&clock, ms(900));
    assert_eq!(map.get(&1), Some(11)); // deadline 1900 ms
    advance_to(&clock, ms(1000));
    let run = map.run_janitor();
    assert_eq!(run.expired, 1, "only the untouched neighbour is due at 1000 ms: {run:?}");
    assert_eq!(map.len(), 1);
    assert_eq!(run.timers, 1, "the touched entry was filed again (lazy re-filing): {run:?}");
    advance_to(&clock, ms(1899));
    assert_eq!(map.run_janitor().expired, 0);
    assert_eq!(map.len(), 1, "a get at 900 ms keeps the entry through 1899 ms");
    advance_to(&clock, ms(1900));
    assert_eq!(map.run_janitor().expired, 1);
    assert!(map.is_empty());
    assert_eq!(map.get(&1), None);
}

#[test]
fn gets_within_one_wheel_tick_give_the_same_expiry() {
    // Key 1: touched many times at 901..=910 ms: every touch gives the deadline 191 (1910 ms:
    // 1901..=1910 ms round up to it), so only the first one writes. Key 2: touched once
    // more at 911 ms: its deadline moves to 192 (1920 ms).
    let (map, clock) = manual_map::<u64, u64>(TICK, EXPIRE);
    map.set(1, 11);
    map.set(2, 22);
    map.run_janitor();
    for at in [901, 903, 905, 909, 910] {
        advance_to(&clock, ms(at));
        for _ in 0..100 {
            assert_eq!(map.get(&1), Some(11));
        }
        assert_eq!(map.get(&2), Some(22));
    }
    advance_to(&clock, ms(911));
    assert_eq!(map.get(&2), Some(22));

    advance_to(&clock, ms(1909));
    map.run_janitor();
    assert_eq!(map.len(), 2);
    advance_to(&clock, ms(1910));
    assert_eq!(map.run_janitor().expired, 1, "key 1 expires at 1910 ms, after 500 gets in 901..=910 ms");
    assert_eq!(map.len(), 1);
    advance_to(&clock, ms(1919));
    assert_eq!(map.run_janitor().expired, 0);
    assert_eq!(map.len(), 1, "key 2, touched at 911 ms, lives through 1919 ms");
    advance_to(&clock, ms(1920));
    assert_eq!(map.run_janitor().expired, 1);
    assert!(map.is_empty());
}

#[test]
fn set_replaces_and_resets_life() {
    let (map, clock) = manual_map::<u64, u64>(TICK, EXPIRE);
    map.set(1, 11);
    map.run_janitor(); // the first entry is filed at tick 100
    advance_to(&clock, ms(900));
    map.set(1, 12); // a new entry, deadline 1900 ms
    assert_eq!(map.len(), 1, "a replacing set does not add an entry");
    advance_to(&clock, ms(1000));
    let run = map.run_janitor();
    assert_eq!(run.expired, 0, "the replaced entry's old deadline must not expire the new value: {run:?}");
    assert_eq!(map.len(), 1);
    advance_to(&clock, ms(1899));
    map.run_janitor();
    assert_eq!(map.len(), 1);
    advance_to(&clock, ms(1900));
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
        .build()
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
    // at t + 1000 ms (its deadline), so after each run exactly the nine previous ones remain.
    let (map, clock) = manual_map::<u64, u64>(TICK, EXPIRE);
    const HOT: u64 = u64::MAX;
    map.set(HOT, 0);
    for step in 1..=1000u64 {
        clock.advance(ms(100));
        let run = map.run_janitor();
        assert_eq!(run.now, step * 10);
        let cold_alive = (step - 1).min(9);
        assert_eq!(map.len() as u64, 1 + cold_alive, "step {step}: {run:?}");
        if step > 10 {
            assert_eq!(run.expired, 1, "step {step}: one cold key expires per step: {run:?}");
        }
        assert_eq!(map.get(&HOT), Some(0), "step {step}: the hot key expired");
        map.set(step, step);
    }
    // Only the hot key and the last ten cold ones: the 990 others expired on time.
    assert_eq!(map.len(), 11);
    assert_eq!(map.janitor_stats().expired, 990);
    assert_eq!(map.get(&HOT), Some(0));
    assert_eq!(map.get(&985), None);
    assert_eq!(map.get(&991), Some(991));
}

#[test]
fn cascading_across_levels_expires_every_entry_exactly_on_its_tick() {
    // tick 20 ms: a wheel tick is 2.5 ms; expire 10 min = 240_000 wheel ticks (a wheel of
    // three 64-slot levels, 262_144 ticks, plus its overflow list). Entries are set at
    // ticks around level and window boundaries (set at 22_144, the deadline is the window
    // boundary 262_144); each must still be counted by len() after the run at its
    // deadline - 1 and be gone after the run at its deadline.
    const WHEEL_NANOS: u64 = 2_500_000;
    const EXPIRE_TICKS: u64 = 240_000;
    let (map, clock) = manual_map::<u64, u64>(ms(20), Duration::from_secs(600));
    let set_at: Vec<u64> = vec![
        0, 1, 63, 64, 65, 4_095, 4_096, 4_097, 22_143, 22_144, 22_145, 100_000, 262_143, 262_144, 262_145, 300_001,
    ];
    let deadline = |c: u64| c + EXPIRE_TICKS;
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
    // deadline is tick 240_000 = 600 s.
    let deadline = Duration::from_nanos(240_000 * 2_500_000);
    assert_eq!(deadline, ms(600_000));
    // Runs every second for ten minutes: the entry cascades down the levels and expires on
    // the first run at or past its deadline.
    let (map, clock) = manual_map::<u64, u64>(ms(20), Duration::from_secs(600));
    map.set(1, 1);
    for second in 1..=599 {
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

/// With a wheel tick under 64 ns the clock's ~584 years of nanoseconds exceed the 58-bit
/// deadline space: the time in wheel ticks saturates at `NEVER - 1`, one tick before
/// `NEVER`, the deadline of an entry that should never expire. (tick 8 ns: a wheel tick of
/// 1 ns.)
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
    // tick 10 s, expire 1 s: deadlines are kept in eighths of the shorter, the expire (125 ms
    // wheel ticks), so an entry set at 0 is dead at exactly 1 s: visible for at least expire,
    // and not a tick of 1.25 s longer.
    for (at, visible) in [(ms(0), true), (ms(999), true), (ms(1000), false)] {
        let (map, clock) = manual_map::<u64, u64>(Duration::from_secs(10), EXPIRE);
        map.set(1, 1);
        advance_to(&clock, at);
        map.run_janitor();
        assert_eq!(map.get(&1).is_some(), visible, "get at {at:?}");
        assert_eq!(map.len(), usize::from(visible), "len at {at:?}");
    }
    // Touched at 900 ms: 1.9 s rounds up to wheel tick 16 = 2 s.
    let (map, clock) = manual_map::<u64, u64>(Duration::from_secs(10), EXPIRE);
    map.set(1, 1);
    advance_to(&clock, ms(900));
    assert_eq!(map.get(&1), Some(1));
    advance_to(&clock, ms(1999));
    map.run_janitor();
    assert_eq!(map.len(), 1);
    advance_to(&clock, ms(2000));
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

/// The map's weigher, which the janitor asks as it removes an entry (to count its weight
/// out): the first time it runs while [`ARMED`], it deletes every key of [`REENTRANT`].
/// Asked from inside the janitor's first removal, it removes entries the janitor already
/// holds ahead (handed out by the wheel, not yet handled) or still has filed.
fn deleting_weigher(_: &Arc<u64>) -> usize {
    if ARMED.swap(false, Ordering::SeqCst) {
        let (map, _) = REENTRANT.get().expect("armed only once the map exists");
        for key in 0..1000 {
            map.delete(&key);
        }
    }
    1
}

#[test]
fn entries_removed_while_the_janitor_holds_them_ahead_are_left_to_their_remover() {
    let (map, clock) = REENTRANT.get_or_init(|| {
        let clock = ManualClock::new();
        let map = Builder::new(TICK, EXPIRE).clock(clock.clone()).manual().weigher(deleting_weigher).build();
        (map.expect("valid durations"), clock)
    });
    let value = Arc::new(0);
    for key in 0..1000 {
        map.set(key, Arc::clone(&value));
    }
    map.run_janitor();
    advance_to(clock, ms(1000));
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

/// A weigher that panics once, the first time it is asked while armed (the janitor asks it
/// as it removes an expired entry, to count the entry's weight out).
fn weigher_panicking_once(_: &u64) -> usize {
    if PANIC_ARMED.swap(false, Ordering::SeqCst) {
        std::panic::resume_unwind(Box::new("intentional panic in the weigher"));
    }
    8
}

#[test]
fn a_panic_in_the_middle_of_an_expiry_strands_no_entry() {
    // The janitor holds due entries ahead of the one it handles; a panic while handling one
    // (here from the weigher, asked as the janitor removes it) must not leave the others off
    // the wheel, where nothing would ever expire them, nor the removed one in the table.
    let clock = ManualClock::new();
    let map = Builder::<u64, u64>::new(TICK, EXPIRE)
        .clock(clock.clone())
        .manual()
        .weigher(weigher_panicking_once)
        .build()
        .expect("valid");
    for key in 0..100 {
        map.set(key, key);
    }
    map.run_janitor();
    advance_to(&clock, ms(500));
    assert_eq!(map.get(&0), Some(0));
    advance_to(&clock, ms(1020));
    PANIC_ARMED.store(true, Ordering::SeqCst);
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| map.run_janitor()));
    assert!(run.is_err(), "the weigher did not panic: {run:?}");
    // The next runs expire the rest: the entry whose removal panicked was claimed, marked
    // and taken out of the table as the panic unwound; the others were filed again.
    advance_to(&clock, ms(1040));
    let (_, expired) = run_until_idle(&map);
    assert_eq!(expired, 98, "{:?}", map.janitor_stats());
    assert_eq!(map.len(), 1, "key 0, touched at 500 ms, lives on");
    advance_to(&clock, ms(1600));
    assert_eq!(run_until_idle(&map).1, 1);
    assert_eq!(map.len(), 0);
    assert!((0..100).all(|key| map.get(&key).is_none()));
}

static PREDICATE_PANICS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// An eager-release predicate that panics whenever it is asked while armed.
fn panicking_is_large(_: &u64) -> bool {
    if PREDICATE_PANICS.load(Ordering::SeqCst) {
        std::panic::resume_unwind(Box::new("intentional panic in the eager-release predicate"));
    }
    false
}

#[test]
fn a_panicking_eager_release_predicate_counts_as_no_and_expiry_completes() {
    // The predicate is a hint asked as each value is stored: a panic there counts as "not
    // large" and reaches nobody; the entries stored meanwhile expire as any others.
    let clock = ManualClock::new();
    let map = Builder::<u64, u64>::new(TICK, EXPIRE)
        .clock(clock.clone())
        .manual()
        .eager_release(panicking_is_large)
        .build()
        .expect("valid durations");
    for key in 0..50 {
        map.set(key, key);
    }
    PREDICATE_PANICS.store(true, Ordering::SeqCst);
    for key in 50..100 {
        map.set(key, key);
    }
    map.run_janitor();
    assert_eq!(map.len(), 100, "every set stored, the predicate's panic contained");
    assert!(map.delete(&0) && map.fetch_and_delete(&1) == Some(1));
    map.set(2, 20); // replaces, and unlinks the old entry
    advance_to(&clock, ms(1020));
    let (_, expired) = run_until_idle(&map);
    PREDICATE_PANICS.store(false, Ordering::SeqCst);
    assert_eq!(expired, 98, "{:?}", map.janitor_stats());
    assert_eq!(map.len(), 0);
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
    // Entries set during the catch-up are dated by the clock (3600 s), and the rest of the
    // catch-up, all of it due already, must not take them; they live their full life from
    // 3600 s (deadline tick 360_000 + 100, 3601 s).
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
    advance_to(&clock, Duration::from_secs(3600) + ms(999));
    run_until_idle(&map);
    assert_eq!(map.len(), 10);
    advance_to(&clock, Duration::from_secs(3600) + ms(1000));
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

/// Manual mode: the embedder's runs remove entries, but every call reads the clock, so an
/// entry is invisible from its deadline on, whether or not a run has come since.
#[test]
fn in_manual_mode_calls_read_the_clock_whatever_the_runs() {
    let (map, clock) = manual_map::<u64, u64>(TICK, EXPIRE);
    map.set(1, 1);
    map.set(2, 2);
    map.run_janitor();
    clock.advance(ms(600));
    assert_eq!(map.get(&2), Some(2), "touched at 600 ms, with no run since 0");
    clock.advance(Duration::from_secs(3600));
    assert_eq!(map.get(&1), None, "an hour past its deadline, with no run since");
    assert_eq!(map.fetch_and_delete(&2), None);
    assert_eq!(map.len(), 2, "not removed until a run");
    let run = map.run_janitor();
    assert_eq!(run.expired, 2, "{run:?}");
    assert!(map.is_empty());
}

#[test]
fn after_done_calls_still_judge_entries_by_the_clock() {
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

    // No janitor run: the deadlines (all tick 100 = 1000 ms) are judged by the clock.
    advance_to(&clock, ms(999));
    assert_eq!(map.get(&4), Some(4)); // read at 999 ms: deadline now tick 200 = 2000 ms
    advance_to(&clock, ms(1000));
    assert_eq!(map.get(&1), None, "after done, get must judge by the clock");
    assert_eq!(map.fetch_and_delete(&5), None, "after done, fetch_and_delete must judge by the clock");
    assert_eq!(map.get(&4), Some(4), "the get at 999 ms extended the entry");
    assert_eq!(map.len(), 3, "no sweep after done: expired entries are still counted");

    // New entries are dated by the clock too.
    map.set(6, 6); // at 1000 ms: deadline 2000 ms
    advance_to(&clock, ms(1999));
    assert_eq!(map.fetch_and_delete(&6), Some(6));
    advance_to(&clock, ms(2000));
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
    advance_to(&clock, ms(999));
    assert_eq!(buffer.len(), 1);
    assert!(buffer.get(&id).is_some());
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
    advance_to(&clock, ms(999));
    map.run_janitor();
    assert_eq!(map.len(), 5_000);
    advance_to(&clock, ms(1000));
    let run = map.run_janitor();
    assert_eq!((run.expired, run.more_due), (5_000, false), "{run:?}");
    assert!(map.is_empty());
}
