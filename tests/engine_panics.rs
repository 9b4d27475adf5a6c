//! Panicking user code on the callers' threads and in manual janitor runs leaves the
//! engine consistent and leaks nothing: keys whose `Hash` or `Eq` panic, values whose
//! `Clone` panics, a clock that panics, an expiry listener that panics. Each test ends by
//! waiting for the end state: `len` agreeing with the keys held and the bytes with their
//! weights, then every entry expired, the bytes held 0, every value dropped exactly once,
//! and the heap back to its baseline (a counting allocator, this binary's only). The
//! janitor thread's side is `engine_panics_janitor.rs` (a binary of its own: the process's
//! janitor thread would make this one's heap figures move).

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;

use common::{isolated, ms, XorShift};
use download_buffer::{Builder, ExpiringMap, ManualClock};

#[path = "common/counting_alloc.rs"]
mod counting_alloc;
#[path = "common/faults.rs"]
mod faults;
#[path = "common/heap.rs"]
mod heap;

use faults::*;
use heap::drained_minimum;

/// Runs `round` twice, the heap measured around the second: the first makes the
/// process's one-time allocations (and lets an earlier test's exited threads be cleaned
/// up), so that only what a round leaves behind shows.
fn twice(round: impl Fn(Option<heap::Heap>) + Send + 'static) {
    isolated(move || {
        quiet_injected_panics();
        round(None);
        round(Some(drained_minimum()));
    });
}

#[test]
fn panicking_keys_values_clock_and_listener_on_callers_and_manual_runs_leak_nothing() {
    twice(|before| {
        let live = Arc::new(AtomicI64::new(0));
        let heard = Arc::new(AtomicU64::new(0));
        let clock = ManualClock::new();
        let raised_before = RAISED.load(Ordering::Relaxed);
        let map = Arc::new(budgeted(Builder::new(TICK, EXPIRE).clock(FaultyClock(clock.clone())).manual(), &heard));
        ARMED.store(true, Ordering::Relaxed);
        let workers: Vec<_> = (0..4)
            .map(|t| {
                let (map, live, clock) = (Arc::clone(&map), Arc::clone(&live), clock.clone());
                thread::spawn(move || {
                    let mut rng = XorShift::new(t + 1);
                    for i in 0..20_000u64 {
                        let _ = operate(&map, &live, &mut rng);
                        if t == 0 && i % 64 == 0 {
                            clock.advance(ms(7)); // entries expire as the others work
                            let _ = catch_unwind(AssertUnwindSafe(|| map.run_janitor()));
                        }
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.join().expect("every panic was caught");
        }
        ARMED.store(false, Ordering::Relaxed);
        let raised = RAISED.load(Ordering::Relaxed) - raised_before;
        assert!(raised > 1000, "only {raised} faults were injected");
        assert_consistent_then_drained(
            &map,
            |by| clock.advance(by),
            || {
                map.run_janitor();
            },
        );
        assert!(heard.load(Ordering::Relaxed) > 0, "the listener was called");
        drop((map, heard, clock));
        assert_leaks_nothing(before, live);
    });
}

#[test]
fn a_key_whose_eq_panics_inside_set_leaks_neither_value_nor_entry() {
    // The failure as first seen: every value of a set whose key comparison panicked stayed
    // alive, even after the map was dropped.
    twice(|before| {
        let live = Arc::new(AtomicI64::new(0));
        let map: ExpiringMap<Key, Value> = Builder::new(TICK, EXPIRE).manual().build().expect("valid durations");
        map.set(Key(0), Value::new(&live, 1));
        let mut panicked = 0;
        for n in 1..1000 {
            // Keys 16 apart share a hash: the set compares with the key held, and faults.
            ARMED.store(true, Ordering::Relaxed);
            let set = catch_unwind(AssertUnwindSafe(|| {
                for _ in 0..64 {
                    map.set(Key(16 * n), Value::new(&live, 1));
                }
            }));
            ARMED.store(false, Ordering::Relaxed);
            panicked += usize::from(set.is_err());
        }
        assert!(panicked > 100, "only {panicked} sets panicked");
        let held = (0..1000).filter(|&n| map.contains_key(&Key(16 * n))).count();
        assert_eq!(map.len(), held);
        drop(map);
        assert_leaks_nothing(before, live);
    });
}

/// Hashes left before this key's `Hash` panics (negative: never).
static HASHES_LEFT: AtomicI64 = AtomicI64::new(-1);
/// Whether the weigher panics.
static WEIGHER_PANICS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The key whose every hash panics (none: `u64::MAX`).
static POISONED: AtomicU64 = AtomicU64::new(u64::MAX);

/// A key whose `Hash` panics once `HASHES_LEFT` runs out, and always for key `POISONED`.
#[derive(PartialEq, Eq, Debug)]
struct CountedKey(u64);

impl std::hash::Hash for CountedKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        if HASHES_LEFT.fetch_sub(1, Ordering::Relaxed) == 0 || self.0 == POISONED.load(Ordering::Relaxed) {
            std::panic::panic_any(INJECTED);
        }
        self.0.hash(state);
    }
}

#[test]
fn a_removal_hashes_its_key_once_and_a_panicking_weigher_leaves_it_cleaned_up() {
    // A removal's accounting (the weigher) runs between its mark and its cleanup, and the
    // cleanup runs in a drop guard while the weigher's panic unwinds, where a second panic
    // would abort the process: so the cleanup runs no user code. It finds the entry's slot
    // with the hash of the caller's lookup, and hashes nothing itself: a key whose every
    // hash after the lookup's panics is removed and cleaned up all the same.
    twice(|before| {
        let live = Arc::new(AtomicI64::new(0));
        let map: ExpiringMap<CountedKey, Value> = Builder::new(TICK, EXPIRE)
            .manual()
            .max_bytes(1 << 20)
            .weigher(|value: &Value| {
                if WEIGHER_PANICS.load(Ordering::Relaxed) {
                    std::panic::panic_any(INJECTED);
                }
                value.weight
            })
            .build()
            .expect("valid settings");
        for key in 0..4 {
            map.set(CountedKey(key), Value::new(&live, 10));
        }
        // Key 0: the weigher panics; only the lookup's hash is allowed.
        WEIGHER_PANICS.store(true, Ordering::Relaxed);
        HASHES_LEFT.store(1, Ordering::Relaxed);
        let removal = catch_unwind(AssertUnwindSafe(|| map.delete(&CountedKey(0))));
        WEIGHER_PANICS.store(false, Ordering::Relaxed);
        HASHES_LEFT.store(-1, Ordering::Relaxed);
        assert!(removal.is_err(), "the weigher's panic reaches the caller");
        drop(removal);
        // Key 1: only the lookup's hash is allowed; the removal completes.
        HASHES_LEFT.store(1, Ordering::Relaxed);
        let removal = catch_unwind(AssertUnwindSafe(|| map.delete(&CountedKey(1))));
        HASHES_LEFT.store(-1, Ordering::Relaxed);
        assert_eq!(removal.ok(), Some(true), "a removal hashed its key more than once");
        for key in [0, 1] {
            assert!(!map.contains_key(&CountedKey(key)), "key {key} still present");
        }
        assert!(map.contains_key(&CountedKey(2)) && map.contains_key(&CountedKey(3)));
        assert_eq!(map.len(), 2);
        // Both left their slots: their values are dropped once the epoch moves on (an entry
        // left in its slot would keep its value until a migration or the map's drop).
        common::wait_for("the removed values to be dropped", || {
            crossbeam_epoch::pin().flush();
            live.load(Ordering::Relaxed) == 2
        });
        // The keys can be stored again.
        map.set(CountedKey(0), Value::new(&live, 10));
        assert!(map.contains_key(&CountedKey(0)));
        assert_eq!(map.len(), 3);
        drop(map);
        assert_leaks_nothing(before, live);
    });
}

/// A manual map over `CountedKey`s holding `keys`, on `clock`, every entry due.
fn due_map(live: &Arc<AtomicI64>, clock: &ManualClock, keys: std::ops::Range<u64>) -> ExpiringMap<CountedKey, Value> {
    let map: ExpiringMap<CountedKey, Value> =
        Builder::new(TICK, EXPIRE).clock(clock.clone()).manual().build().expect("valid durations");
    for key in keys {
        map.set(CountedKey(key), Value::new(live, 1));
    }
    clock.advance(EXPIRE + TICK * 2);
    map
}

/// Runs the janitor once with the next `HASHES_LEFT` hashes allowed; whether the run panicked.
fn run_with_hashes_left(map: &ExpiringMap<CountedKey, Value>, hashes: i64) -> bool {
    HASHES_LEFT.store(hashes, Ordering::Relaxed);
    let run = catch_unwind(AssertUnwindSafe(|| map.run_janitor()));
    HASHES_LEFT.store(-1, Ordering::Relaxed);
    run.is_err()
}

#[test]
fn a_janitor_run_whose_removal_prefetch_hash_panics_strands_no_due_entry() {
    // The janitor hands due entries out of the wheel into a ring, and warms the home slot
    // of the entry 8 places back as it adds one, which hashes that entry's key. A hash
    // that panics there must not lose the entry just handed out (off the wheel and out of
    // the ring, it would never expire): the panic is caught, the entry expired without
    // its hash, and the panic raised once the run is done.
    twice(|before| {
        let live = Arc::new(AtomicI64::new(0));
        let clock = ManualClock::new();
        let map = due_map(&live, &clock, 0..32);
        // The run's first hash is the prefetch for the first entry handed out, as the
        // ninth comes out of the wheel.
        assert!(run_with_hashes_left(&map, 0), "the hash's panic reaches the manual caller");
        assert_eq!(map.len(), 0, "every due entry expires in the run, the one whose hash panicked too");
        assert_eq!(map.janitor_stats().expired, 32);
        assert!(!run_with_hashes_left(&map, -1), "a later run has nothing to raise");
        drop((map, clock));
        assert_leaks_nothing(before, live);
    });
}

#[test]
fn a_janitor_run_whose_removal_hash_panics_expires_the_entry_all_the_same() {
    // Fewer than nine due entries: no prefetch, each key is hashed as its entry comes up.
    twice(|before| {
        let live = Arc::new(AtomicI64::new(0));
        let clock = ManualClock::new();
        let map = due_map(&live, &clock, 0..4);
        assert!(run_with_hashes_left(&map, 1), "the second entry's hash panics");
        assert_eq!(map.len(), 0);
        assert_eq!(map.janitor_stats().expired, 4);
        // The key can be stored again, in the slot its removed entry kept.
        map.set(CountedKey(1), Value::new(&live, 1));
        assert!(map.contains_key(&CountedKey(1)));
        assert_eq!(map.len(), 1);
        drop((map, clock));
        assert_leaks_nothing(before, live);
    });
}

#[test]
fn a_key_whose_hash_always_panics_holds_up_no_other_expiry() {
    // A key that cannot be hashed any more once it is stored: each run that meets it must
    // still expire the rest, and it must be met once, not in every run.
    twice(|before| {
        let live = Arc::new(AtomicI64::new(0));
        let clock = ManualClock::new();
        let map = due_map(&live, &clock, 0..100);
        POISONED.store(5, Ordering::Relaxed);
        let mut panicked = 0;
        for _ in 0..4 {
            panicked += usize::from(run_with_hashes_left(&map, -1));
            clock.advance(TICK);
        }
        assert_eq!(panicked, 1, "runs that raised the poisoned key's panic");
        assert_eq!(map.len(), 0);
        assert_eq!(map.janitor_stats().expired, 100);
        // Later entries expire as usual.
        for key in 100..200 {
            map.set(CountedKey(key), Value::new(&live, 1));
        }
        clock.advance(EXPIRE + TICK * 2);
        common::wait_for("the later entries to expire", || {
            assert!(!run_with_hashes_left(&map, -1), "a run panicked with no poisoned key due");
            map.is_empty()
        });
        assert_eq!(map.janitor_stats().expired, 200);
        drop((map, clock));
        POISONED.store(u64::MAX, Ordering::Relaxed);
        assert_leaks_nothing(before, live);
    });
}
