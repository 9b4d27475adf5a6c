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
