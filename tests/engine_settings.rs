//! Hostile settings and many buffers are tamed: a thousand maps share one janitor thread
//! and cost no janitor runs while idle; a 1 ns tick does not make the janitor spin; a tick
//! far longer than `expire` keeps no entry much past `expire`; a clock stepped back is
//! caught in debug builds. Counts, not timings: a slow machine only makes the counts lower.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::ms;
use download_buffer::{Builder, Clock, DownloadBuffer, ExpiringMap, ManualClock};

/// This process's threads named like the engine's janitor thread (`comm` keeps 15 bytes).
fn janitor_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|task| {
            std::fs::read_to_string(task.path().join("comm")).is_ok_and(|comm| comm.trim() == "download-buffer")
        })
        .count()
}

#[test]
fn a_thousand_maps_share_one_janitor_thread_and_cost_no_runs_while_idle() {
    // Before: a thread per map, each running ten times a second and flushing the epoch.
    let maps: Vec<ExpiringMap<u64, u64>> =
        (0..1000).map(|_| ExpiringMap::new(Duration::from_secs(1), Duration::from_secs(600)).unwrap()).collect();
    for (n, map) in maps.iter().enumerate() {
        for key in 0..10 {
            map.set(key, n as u64);
        }
    }
    if cfg!(target_os = "linux") {
        assert_eq!(janitor_threads(), 1, "one janitor thread for the process");
    }
    // Each map's janitor takes its new entries (a ring), then sleeps: nothing is due for
    // ten minutes and nothing arrives.
    common::wait_for("every map's janitor to take its entries", || {
        maps.iter().all(|map| map.janitor_stats().runs >= 1 && map.run_janitor().filed == 0)
    });
    let runs = |maps: &[ExpiringMap<u64, u64>]| maps.iter().map(|map| map.janitor_stats().runs).sum::<u64>();
    let before = runs(&maps);
    let started = Instant::now();
    std::thread::sleep(ms(500));
    let idle_runs = runs(&maps) - before;
    // Sleeping maps wake at most every 10 s (a backstop): in half a second, a few of them.
    let bound = 1000 * (started.elapsed().as_millis() as u64 / 10_000 + 1);
    assert!(idle_runs <= bound, "{idle_runs} janitor runs of 1000 idle maps in {:?}", started.elapsed());
    let dropping = Instant::now();
    drop(maps);
    println!(
        "1000 idle maps: {idle_runs} janitor runs in {:?}; dropped in {:?}",
        started.elapsed(),
        dropping.elapsed()
    );
}

#[test]
fn a_one_nanosecond_tick_does_not_make_the_janitor_spin() {
    // The janitor thread runs a map at most once a millisecond, whatever its tick, besides
    // the runs its doorbell asks for (before: back to back, a whole core).
    let buffer = DownloadBuffer::new(Duration::from_nanos(1), Duration::from_millis(50)).unwrap();
    let data = download_buffer::Bytes::from_static(b"chunk");
    let started = Instant::now();
    let runs_before = buffer.janitor_stats().runs;
    for n in 0..200 {
        buffer.set(download_buffer::BufferId::new(download_buffer::ChunkHandle(n)), data.clone());
        std::thread::sleep(ms(1));
    }
    std::thread::sleep(ms(100));
    let runs = buffer.janitor_stats().runs - runs_before;
    let elapsed_ms = started.elapsed().as_millis() as u64;
    // One a millisecond, and one for each set that rang the map's bell (at most 200).
    assert!(runs <= elapsed_ms + 200 + 10, "{runs} janitor runs in {elapsed_ms} ms with a 1 ns tick");
    common::wait_for("every entry to expire", || buffer.is_empty());
}

#[test]
fn a_tick_far_longer_than_expire_keeps_no_entry_past_expire_and_an_eighth() {
    // tick 60 s, expire 1 s: deadlines in eighths of the expire (125 ms), not of the tick
    // (7.5 s, which kept entries 8.5 s).
    let clock = ManualClock::new();
    let map: ExpiringMap<u64, u64> =
        Builder::new(Duration::from_secs(60), Duration::from_secs(1)).clock(clock.clone()).manual().build().unwrap();
    clock.advance(ms(10));
    map.set(1, 1);
    clock.advance(ms(999)); // 1 ms before `expire`: never early
    assert_eq!(map.peek(&1), Some(1));
    clock.advance(ms(126)); // past expire + expire/8
    assert_eq!(map.peek(&1), None, "alive {:?} after its set", ms(999 + 126));
    map.run_janitor();
    assert!(map.is_empty(), "the janitor removes it once it is due");
}

/// A clock that can be stepped back, as the `Clock` contract forbids.
#[derive(Clone, Default)]
struct Steppable(Arc<AtomicU64>);

impl Clock for Steppable {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.0.load(Ordering::SeqCst))
    }
}

#[test]
#[cfg(debug_assertions)]
#[should_panic(expected = "the map's clock went back")]
fn a_clock_stepped_back_is_caught_by_the_janitor_in_debug_builds() {
    let clock = Steppable::default();
    let hour = Duration::from_secs(3600).as_nanos() as u64;
    clock.0.store(2 * hour, Ordering::SeqCst);
    let map: ExpiringMap<u64, u64> =
        Builder::new(Duration::from_secs(1), Duration::from_secs(10)).clock(clock.clone()).manual().build().unwrap();
    map.set(1, 1);
    map.run_janitor();
    clock.0.store(hour, Ordering::SeqCst); // an hour back
    map.run_janitor();
}

#[test]
fn a_clock_stepped_back_freezes_expiry_for_the_step_and_nothing_is_lost() {
    // What release builds do (documented on `Clock`): the janitor keeps its time until the
    // clock catches up, then expires as before; every entry goes in the end.
    if cfg!(debug_assertions) {
        return; // the janitor's debug assertion stops this schedule (the test above)
    }
    let clock = Steppable::default();
    let second = 1_000_000_000u64;
    clock.0.store(100 * second, Ordering::SeqCst);
    let map: ExpiringMap<u64, u64> =
        Builder::new(Duration::from_secs(1), Duration::from_secs(10)).clock(clock.clone()).manual().build().unwrap();
    map.set(1, 1);
    map.run_janitor();
    clock.0.store(50 * second, Ordering::SeqCst); // 50 s back
    map.set(2, 2);
    map.run_janitor();
    clock.0.store(200 * second, Ordering::SeqCst); // past everything
    map.run_janitor();
    assert!(map.is_empty(), "{:?}", map.stats());
}
