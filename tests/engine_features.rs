//! The operators' features on the engine itself, with exact schedules (a `ManualClock`): the
//! expiry listener (once per expired entry, with the value that expired, never for another
//! exit, contained when it panics, on the janitor's thread outside any epoch pin), the
//! weigher and budget of an `ExpiringMap`, `set_if_absent` over an entry past its deadline,
//! and `peek` against the exact deadline. The trait-level behaviour of both designs is in
//! `tests/conformance/features.rs`.

mod common;

use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock, Weak};
use std::thread;
use std::time::Duration;

use common::{ms, wait_for};
use download_buffer::{Builder, Error, ExpiringMap, ManualClock};

const TICK: Duration = Duration::from_millis(80); // a wheel tick of 10 ms
const EXPIRE: Duration = Duration::from_secs(1);

/// A value that counts the copies of it alive, so that a test can check that every one was
/// dropped exactly once (the count never goes below zero and ends at zero).
#[derive(Debug)]
struct Value {
    key: u64,
    version: u32,
    alive: Arc<AtomicIsize>,
}

impl Value {
    fn new(key: u64, version: u32, alive: &Arc<AtomicIsize>) -> Value {
        alive.fetch_add(1, Ordering::SeqCst);
        Value { key, version, alive: Arc::clone(alive) }
    }
}

impl Clone for Value {
    fn clone(&self) -> Value {
        Value::new(self.key, self.version, &self.alive)
    }
}

impl Drop for Value {
    fn drop(&mut self) {
        let before = self.alive.fetch_sub(1, Ordering::SeqCst);
        assert!(before > 0, "a value of key {} was dropped twice", self.key);
    }
}

type Log = Arc<Mutex<Vec<(u64, u32)>>>;

/// A manual-mode map whose listener logs `(key, version)` of each expiry, after checking
/// that the key and the value agree and that no epoch pin is held.
fn logged_map() -> (ExpiringMap<u64, Value>, ManualClock, Log) {
    let clock = ManualClock::new();
    let log: Log = Arc::default();
    let logged = Arc::clone(&log);
    let map = Builder::new(TICK, EXPIRE)
        .clock(clock.clone())
        .manual()
        .on_expire(move |key: &u64, value: &Value| {
            assert_eq!(*key, value.key, "the listener got another entry's value");
            assert!(!crossbeam_epoch::is_pinned(), "the listener runs inside an epoch pin");
            logged.lock().unwrap().push((*key, value.version));
        })
        .build()
        .expect("valid durations");
    (map, clock, log)
}

/// Runs the janitor until it has nothing more due.
fn run_until_done<K, V>(map: &ExpiringMap<K, V>)
where
    K: std::hash::Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    while map.run_janitor().more_due {}
}

fn sorted(log: &Log) -> Vec<(u64, u32)> {
    let mut entries = log.lock().unwrap().clone();
    entries.sort_unstable();
    entries
}

#[test]
fn the_listener_hears_once_of_each_expired_entry_with_its_current_value_and_of_nothing_else() {
    let alive = Arc::new(AtomicIsize::new(0));
    let (map, clock, log) = logged_map();
    for key in 0..100 {
        map.set(key, Value::new(key, 1, &alive));
    }
    for key in 0..10 {
        map.set(key, Value::new(key, 2, &alive)); // replaced: version 1 is never reported
    }
    for key in 10..20 {
        assert!(map.delete(&key));
    }
    for key in 20..30 {
        assert_eq!(map.fetch_and_delete(&key).map(|value| value.version), Some(1));
    }
    map.retain(|key, _| !(30..40).contains(key));
    map.run_janitor();
    assert!(log.lock().unwrap().is_empty(), "nothing is due yet");
    clock.advance(EXPIRE + ms(20));
    run_until_done(&map);
    let mut expected: Vec<(u64, u32)> = (0..10).map(|key| (key, 2)).collect();
    expected.extend((40..100).map(|key| (key, 1)));
    assert_eq!(sorted(&log), expected, "each expired entry once, with the value it held");
    assert!(map.is_empty());
    let stats = map.stats();
    assert_eq!((stats.expirations, stats.removals, stats.entries), (70, 20, 0), "{stats:?}");
    assert_eq!(map.janitor_stats().expired, 70);
    clock.advance(EXPIRE * 10);
    run_until_done(&map);
    assert_eq!(log.lock().unwrap().len(), 70, "nothing is reported twice");
    drop(map);
    assert_eq!(alive.load(Ordering::SeqCst), 0, "every value and every clone dropped exactly once");
}

#[test]
fn cleared_entries_are_never_reported() {
    let alive = Arc::new(AtomicIsize::new(0));
    let (map, clock, log) = logged_map();
    for key in 0..50 {
        map.set(key, Value::new(key, 1, &alive));
    }
    map.run_janitor(); // filed in the wheel
    map.clear();
    assert!(map.is_empty());
    clock.advance(EXPIRE * 2);
    run_until_done(&map);
    assert!(log.lock().unwrap().is_empty(), "cleared entries reported: {:?}", sorted(&log));
    assert_eq!(map.stats().expirations, 0);
    drop(map);
    assert_eq!(alive.load(Ordering::SeqCst), 0);
}

#[test]
fn a_panicking_listener_is_contained_and_counted_and_the_run_still_expires_the_rest() {
    let alive = Arc::new(AtomicIsize::new(0));
    let clock = ManualClock::new();
    let heard = Arc::new(Mutex::new(Vec::new()));
    let logged = Arc::clone(&heard);
    let map = Builder::new(TICK, EXPIRE)
        .clock(clock.clone())
        .manual()
        .on_expire(move |key: &u64, _: &Value| {
            if key % 2 == 0 {
                panic!("intentional panic in the expiry listener for key {key}");
            }
            logged.lock().unwrap().push(*key);
        })
        .build()
        .expect("valid durations");
    for key in 0..100 {
        map.set(key, Value::new(key, 1, &alive));
    }
    clock.advance(EXPIRE + ms(20));
    let run = map.run_janitor();
    assert_eq!(run.expired, 100, "{run:?}");
    assert!(map.is_empty(), "a panicking listener stopped the expiry: {} left", map.len());
    let mut heard = heard.lock().unwrap().clone();
    heard.sort_unstable();
    assert_eq!(heard, (0..100).filter(|key| key % 2 == 1).collect::<Vec<_>>());
    assert_eq!(map.janitor_stats().listener_panics, 50);
    // The map goes on: a later expiry is reported too.
    map.set(1000, Value::new(1000, 1, &alive));
    clock.advance(EXPIRE + ms(20));
    assert_eq!(map.run_janitor().expired, 1);
    drop(map);
    assert_eq!(alive.load(Ordering::SeqCst), 0, "values whose listener panicked were dropped too");
}

#[test]
fn the_listener_runs_on_the_janitor_thread_and_may_call_into_the_map() {
    let (sender, heard) = mpsc::channel::<(u64, String)>();
    let sender = Mutex::new(sender);
    let this: Arc<OnceLock<Weak<ExpiringMap<u64, u64>>>> = Arc::default();
    let handle = Arc::clone(&this);
    let map = Arc::new(
        Builder::new(ms(10), ms(50))
            .on_expire(move |key: &u64, value: &u64| {
                assert!(!crossbeam_epoch::is_pinned(), "the listener runs inside an epoch pin");
                let name = thread::current().name().unwrap_or("").to_string();
                sender.lock().unwrap().send((*key, name)).unwrap();
                // Calling into the map from the listener: re-store the first expiries under
                // a dead-letter key (which expires in turn, and is not re-stored).
                if *key < 1000 {
                    if let Some(map) = handle.get().and_then(Weak::upgrade) {
                        map.set(key + 1000, *value);
                    }
                }
            })
            .build()
            .expect("valid durations"),
    );
    this.set(Arc::downgrade(&map)).unwrap();
    for key in 0..20 {
        map.set(key, key);
    }
    let mut keys = Vec::new();
    while keys.len() < 40 {
        let (key, thread) = heard.recv_timeout(Duration::from_secs(10)).expect("40 expiries within 10 s");
        assert_eq!(thread, "download-buffer-janitor");
        keys.push(key);
    }
    keys.sort_unstable();
    let expected: Vec<u64> = (0..20).chain(1000..1020).collect();
    assert_eq!(keys, expected);
    wait_for("the dead letters expired", || map.is_empty());
    assert_eq!(map.stats().expirations, 40);
}

#[test]
fn with_concurrent_touches_every_entry_is_reported_exactly_once_when_it_finally_expires() {
    // A janitor thread on a ManualClock moved in steps while two threads keep half of the
    // keys alive; then the touching stops and everything expires.
    let clock = ManualClock::new();
    let log: Log = Arc::default();
    let logged = Arc::clone(&log);
    let map = Arc::new(
        Builder::new(TICK, EXPIRE)
            .clock(clock.clone())
            .on_expire(move |key: &u64, value: &u64| {
                assert_eq!(key, value);
                logged.lock().unwrap().push((*key, 0));
            })
            .build()
            .expect("valid durations"),
    );
    for key in 0..1000 {
        map.set(key, key);
    }
    let stop = AtomicBool::new(false);
    thread::scope(|s| {
        for toucher in 0..2u64 {
            let (map, stop) = (&map, &stop);
            s.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    for key in (toucher..500).step_by(2) {
                        let _ = map.get(&key);
                    }
                }
            });
        }
        for _ in 0..30 {
            clock.advance(ms(100));
            thread::sleep(ms(5));
        }
        stop.store(true, Ordering::Relaxed);
    });
    clock.advance(EXPIRE * 3);
    // The listener hears of a run's expiries after the run removed them: wait for it, not
    // for an empty map.
    wait_for("every expiry heard", || log.lock().unwrap().len() >= 1000);
    assert!(map.is_empty());
    let keys: Vec<u64> = sorted(&log).into_iter().map(|(key, _)| key).collect();
    assert_eq!(keys, (0..1000).collect::<Vec<_>>(), "each key reported exactly once");
    assert_eq!(map.stats().expirations, 1000);
}

#[test]
fn set_if_absent_over_an_entry_past_its_deadline_replaces_it_and_reports_no_expiry() {
    let alive = Arc::new(AtomicIsize::new(0));
    let (map, clock, log) = logged_map();
    map.set(7, Value::new(7, 1, &alive));
    map.run_janitor();
    clock.advance(EXPIRE);
    assert!(map.get(&7).is_none(), "dead from its deadline on");
    assert!(map.set_if_absent(7, Value::new(7, 2, &alive)), "dead: absent");
    assert!(!map.set_if_absent(7, Value::new(7, 3, &alive)), "the new one is live");
    run_until_done(&map);
    assert!(log.lock().unwrap().is_empty(), "the replaced value was reported: {:?}", sorted(&log));
    assert_eq!(map.get(&7).map(|value| value.version), Some(2));
    clock.advance(EXPIRE);
    run_until_done(&map);
    assert_eq!(sorted(&log), vec![(7, 2)]);
    let stats = map.stats();
    assert_eq!((stats.inserts, stats.expirations, stats.entries), (2, 1, 0), "{stats:?}");
    drop(map);
    assert_eq!(alive.load(Ordering::SeqCst), 0);
}

#[test]
fn peek_leaves_the_deadline_where_the_set_put_it() {
    let (map, clock) = common::manual_map::<u64, u64>(TICK, EXPIRE);
    map.set(1, 1);
    map.set(2, 2);
    clock.advance(ms(500));
    assert_eq!(map.peek(&1), Some(1));
    assert!(map.contains_key(&1));
    assert_eq!(map.get(&2), Some(2)); // extends key 2 to 1500 ms
    clock.advance(ms(499)); // 999 ms
    assert_eq!(map.peek(&1), Some(1), "live until its deadline");
    clock.advance(ms(1)); // 1000 ms: the set's deadline
    assert_eq!(map.peek(&1), None, "peek extended the entry's life");
    assert!(!map.contains_key(&1));
    assert_eq!(map.peek(&2), Some(2), "the get extended it");
    let stats = map.stats();
    assert_eq!((stats.hits, stats.misses), (1, 0), "peek and contains_key count neither");
}

#[test]
fn an_expiring_map_weighs_values_with_its_weigher_and_holds_them_to_the_budget() {
    let clock = ManualClock::new();
    let map: ExpiringMap<&'static str, Vec<u8>> = ExpiringMap::builder(TICK, EXPIRE)
        .clock(clock.clone())
        .manual()
        .weigher(Vec::len)
        .max_bytes(100)
        .build()
        .expect("valid durations");
    assert_eq!(map.max_bytes(), Some(100));
    assert_eq!(map.try_set("a", vec![0; 60]), Ok(()));
    assert_eq!(map.try_set("b", vec![0; 41]), Err(Error::Full { budget: 100, held: 60, asked: 41 }));
    assert_eq!(map.try_set("b", vec![0; 40]), Ok(()));
    assert_eq!(map.stats().bytes, 100);
    clock.advance(EXPIRE);
    run_until_done(&map);
    assert_eq!((map.stats().bytes, map.len()), (0, 0), "expiry gives the bytes back");
    // Without a weigher every value weighs nothing: the budget never refuses.
    let unweighed: ExpiringMap<u64, Vec<u8>> =
        ExpiringMap::builder(TICK, EXPIRE).manual().max_bytes(1).build().expect("valid durations");
    assert_eq!(unweighed.try_set(1, vec![0; 1000]), Ok(()));
    assert_eq!(unweighed.stats().bytes, 0);
}

#[test]
fn zero_durations_are_still_refused_by_every_builder() {
    let map = ExpiringMap::<u64, u64>::builder(Duration::ZERO, EXPIRE).build();
    assert_eq!(map.err(), Some(Error::ZeroDuration { parameter: "tick" }));
    let buffer = download_buffer::DownloadBuffer::builder(TICK, Duration::ZERO).max_bytes(10).build();
    assert_eq!(buffer.err(), Some(Error::ZeroDuration { parameter: "expire" }));
}

#[test]
fn a_map_built_without_counting_reports_only_what_it_holds_and_what_expired() {
    let clock = ManualClock::new();
    let map: ExpiringMap<u64, u64> =
        Builder::new(TICK, EXPIRE).clock(clock.clone()).manual().count_stats(false).build().expect("valid durations");
    map.set(1, 1);
    map.set(2, 2);
    assert_eq!(map.get(&1), Some(1));
    assert_eq!(map.get(&3), None);
    assert_eq!(map.fetch_and_delete(&1), Some(1));
    clock.advance(EXPIRE);
    run_until_done(&map);
    let stats = map.stats();
    assert_eq!((stats.hits, stats.misses, stats.inserts, stats.removals), (0, 0, 0, 0), "{stats:?}");
    assert_eq!((stats.expirations, stats.entries), (1, 0), "{stats:?}");
    // Bytes: not counted without a budget; counted (by the budget) with one.
    let buffer = download_buffer::DownloadBuffer::builder(TICK, EXPIRE).manual().count_stats(false).build().unwrap();
    buffer.set(download_buffer::BufferId::new(download_buffer::ChunkHandle(1)), vec![0u8; 10].into());
    assert_eq!(buffer.stats().bytes, 0);
    let budgeted = download_buffer::DownloadBuffer::builder(TICK, EXPIRE)
        .manual()
        .count_stats(false)
        .max_bytes(100)
        .build()
        .unwrap();
    assert_eq!(
        budgeted.try_set(download_buffer::BufferId::new(download_buffer::ChunkHandle(1)), vec![0u8; 10].into()),
        Ok(())
    );
    assert_eq!(budgeted.stats().bytes, 10);
}

#[test]
#[allow(deprecated)]
fn the_deprecated_builders_still_build_a_download_buffer_that_counts_bytes() {
    let buffer = Builder::new(TICK, EXPIRE).build_download_buffer().expect("valid durations");
    buffer.set(download_buffer::BufferId::new(download_buffer::ChunkHandle(1)), vec![0u8; 10].into());
    assert_eq!(buffer.stats().bytes, 10);
    let buffer = download_buffer::DownloadBuffer::builder(TICK, EXPIRE).max_bytes(5).build_download_buffer().unwrap();
    assert_eq!(buffer.max_bytes(), Some(5));
}

/// Real threads on the real clock, a janitor thread, a budget and a listener: 2, 4 and 16
/// writers store with `try_set` and `set_if_absent`, consume or delete some, and leave the
/// rest to expire. The end state, waited for: every entry left was heard exactly once and
/// no earlier than `expire` after its store began, the map is empty, no bytes are held,
/// the counts agree, and every value and clone is dropped once the map is.
#[test]
fn on_real_threads_everything_left_expires_is_heard_once_and_gives_its_bytes_back() {
    use download_buffer::{Clock, SystemClock};
    const PER_THREAD: u64 = 300;
    let expire = ms(100);
    for threads in [2u64, 4, 16] {
        let alive = Arc::new(AtomicIsize::new(0));
        let clock = SystemClock::new();
        let heard: Arc<Mutex<Vec<(u64, Duration)>>> = Arc::default();
        let (logged, stamp) = (Arc::clone(&heard), clock.clone());
        let map: ExpiringMap<u64, Value> = Builder::new(ms(10), expire)
            .clock(clock.clone())
            .weigher(|value: &Value| 1 + value.version as usize)
            .max_bytes(1 << 20)
            .on_expire(move |key: &u64, _: &Value| logged.lock().unwrap().push((*key, stamp.now())))
            .build()
            .expect("valid durations");
        // key -> when its store began, for the entries left to expire.
        let left: Mutex<Vec<(u64, Duration)>> = Mutex::default();
        thread::scope(|s| {
            for thread in 0..threads {
                let (map, alive, left, clock) = (&map, &alive, &left, &clock);
                s.spawn(move || {
                    let mut mine = Vec::new();
                    for n in 0..PER_THREAD {
                        let key = thread * 1_000_000 + n;
                        let began = clock.now();
                        if n % 2 == 0 {
                            map.try_set(key, Value::new(key, (n % 7) as u32, alive)).expect("within the budget");
                        } else {
                            assert!(map.set_if_absent(key, Value::new(key, (n % 7) as u32, alive)));
                        }
                        match n % 5 {
                            0 => assert!(map.fetch_and_delete(&key).is_some()),
                            1 => assert!(map.delete(&key)),
                            _ => mine.push((key, began)),
                        }
                    }
                    left.lock().unwrap().extend(mine);
                });
            }
        });
        let mut left = left.into_inner().unwrap();
        wait_for("every entry left heard", || heard.lock().unwrap().len() >= left.len());
        let mut heard = heard.lock().unwrap().clone();
        left.sort_unstable();
        heard.sort_unstable();
        assert_eq!(heard.len(), left.len(), "{threads} threads: heard more than once");
        for ((key, began), (heard_key, heard_at)) in left.iter().zip(&heard) {
            assert_eq!(key, heard_key, "{threads} threads: heard another key");
            assert!(*heard_at >= *began + expire, "{threads} threads: key {key} expired early");
        }
        let stats = map.stats();
        let stored = threads * PER_THREAD;
        assert_eq!((stats.entries, stats.bytes), (0, 0), "{threads} threads: {stats:?}");
        assert_eq!((stats.inserts, stats.removals, stats.expirations), (stored, stored * 2 / 5, left.len() as u64));
        drop(map);
        // Values removed by the workers went to the epoch's queue when they exited; the map's
        // drop pushes the epoch a bounded number of times, which a preempted pinned thread of
        // another test (or the janitor thread) can outlast on a loaded machine: wait for it.
        common::drain_epoch();
        assert_eq!(alive.load(Ordering::SeqCst), 0, "{threads} threads: values not dropped exactly once");
    }
}
