//! Panicking user code on the janitor thread leaves the engine consistent and leaks
//! nothing: keys whose `Eq` panics as the janitor removes their entries, an expiry listener
//! that panics, while the callers' calls fault too (see `engine_panics.rs`). The test waits
//! for the end state: every entry expired by the janitor thread, the bytes held 0, every
//! value dropped exactly once, and, once the janitor thread has ended with no map left to
//! serve, the heap back to its baseline exactly.

mod common;

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;

use common::{isolated, ms, XorShift};
use download_buffer::Builder;

#[path = "common/counting_alloc.rs"]
mod counting_alloc;
#[path = "common/faults.rs"]
mod faults;
#[path = "common/heap.rs"]
mod heap;

use faults::*;
use heap::drained_minimum;

/// How long the janitor thread lingers with no map registered (the crate's private
/// `scheduler::IDLE_EXIT`).
const IDLE_EXIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Waits for the janitor thread to end, as it does a second after the last map is dropped
/// (elsewhere than on Linux, where threads cannot be listed, sleeps past that).
fn wait_for_no_janitor_thread() {
    if cfg!(target_os = "linux") {
        common::wait_for("the janitor thread to end", || common::janitor_threads().is_empty());
    } else {
        thread::sleep(IDLE_EXIT + ms(500));
    }
}

#[test]
fn panicking_keys_and_listener_on_the_janitor_thread_leak_nothing() {
    isolated(|| {
        quiet_injected_panics();
        wait_for_no_janitor_thread();
        // Taken with no janitor thread running: the heap returns to it exactly once the
        // thread, started by this test's map, has ended after the map's drop (it lets go of
        // its tables and its registration with the epoch).
        let before = drained_minimum();
        let live = Arc::new(AtomicI64::new(0));
        let heard = Arc::new(AtomicU64::new(0));
        // The system clock and a janitor thread: expiries (and their key comparisons and
        // listener calls) run on the janitor thread while the callers' calls fault too.
        let map = Arc::new(budgeted(Builder::new(ms(8), ms(40)), &heard));
        ARMED.store(true, Ordering::Relaxed);
        let workers: Vec<_> = (0..4)
            .map(|t| {
                let (map, live) = (Arc::clone(&map), Arc::clone(&live));
                thread::spawn(move || {
                    let mut rng = XorShift::new(100 + t);
                    for i in 0..20_000u64 {
                        let _ = operate(&map, &live, &mut rng);
                        if i % 1024 == 0 {
                            thread::sleep(ms(2)); // let entries expire under the janitor
                        }
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.join().expect("every panic was caught");
        }
        ARMED.store(false, Ordering::Relaxed);
        common::wait_for("every entry to expire on the janitor thread", || map.is_empty());
        assert_eq!(map.stats().bytes, 0, "bytes held after everything expired: {:?}", map.stats());
        assert!(map.janitor_stats().expired > 0, "{:?}", map.janitor_stats());
        drop((map, heard));
        wait_for_no_janitor_thread();
        assert_leaks_nothing(Some(before), live);
    });
}
