//! Hostile settings and many buffers are tamed: a thousand maps share one janitor thread
//! and cost no janitor runs while idle; a 1 ns tick does not make the janitor spin; a tick
//! far longer than `expire` keeps no entry much past `expire`; a clock stepped back is
//! caught in debug builds. Counts, not timings: a slow machine only makes the counts lower.
//! And the shared janitor thread keeps each map's promises when maps meet on it: a run
//! skipped for a manual run does not put the map to sleep, and `done` and drop wait for a
//! run in progress whoever stopped the map first.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::ms;
use download_buffer::{Builder, Clock, DownloadBuffer, ExpiringMap, ManualClock};

#[test]
fn a_thousand_maps_share_one_janitor_thread_and_cost_no_runs_while_idle() {
    // Before: a thread per map, each running ten times a second and flushing the epoch.
    const EXPIRE: Duration = Duration::from_secs(5);
    let set_at = Instant::now();
    let maps: Vec<ExpiringMap<u64, u64>> =
        (0..1000).map(|_| ExpiringMap::new(Duration::from_secs(1), EXPIRE).unwrap()).collect();
    for (n, map) in maps.iter().enumerate() {
        for key in 0..10 {
            map.set(key, n as u64);
        }
    }
    if cfg!(target_os = "linux") {
        // (Two only for an instant: one ending, a second after another test's last map was
        // dropped, as these maps' registrations start the next.)
        common::wait_for("one janitor thread for the process", || common::janitor_threads().len() == 1);
    }
    // Each map's janitor thread run takes its new entries (their push rang its bell), then
    // it sleeps: nothing is due for 5 s and nothing arrives.
    common::wait_for("every map's janitor to run", || maps.iter().all(|map| map.janitor_stats().runs >= 1));
    let runs = |maps: &[ExpiringMap<u64, u64>]| maps.iter().map(|map| map.janitor_stats().runs).sum::<u64>();
    let before = runs(&maps);
    let started = Instant::now();
    std::thread::sleep(ms(500));
    let idle_runs = runs(&maps) - before;
    // Sleeping maps wake at most every 10 s (a backstop): in half a second, a few of them.
    let bound = 1000 * (started.elapsed().as_millis() as u64 / 10_000 + 1);
    assert!(idle_runs <= bound, "{idle_runs} janitor runs of 1000 idle maps in {:?}", started.elapsed());
    // The janitor thread took every entry and wakes each map when they are due: all expire
    // well before the 10 s backstop would bring an entry left on an intake (a lost ring).
    common::wait_for("every map to empty", || maps.iter().all(|map| map.is_empty()));
    let drained = set_at.elapsed();
    assert!(drained < EXPIRE + Duration::from_secs(4), "the maps emptied {drained:?} after their sets");
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
    // One a millisecond; one for each set that rang the map's bell (at most 200); and one
    // after each run that removed entries, whose own unlinks ring it (at most 200 more).
    assert!(runs <= elapsed_ms + 400 + 10, "{runs} janitor runs in {elapsed_ms} ms with a 1 ns tick");
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
    // What happens (documented on `Clock`), in either build: the janitor keeps its time
    // until the clock catches up; callers, judging by the clock, still find the older
    // entry; once the clock passes everything, every entry goes.
    let clock = Steppable::default();
    let second = 1_000_000_000u64;
    clock.0.store(100 * second, Ordering::SeqCst);
    let map: ExpiringMap<u64, u64> =
        Builder::new(Duration::from_secs(1), Duration::from_secs(10)).clock(clock.clone()).manual().build().unwrap();
    map.set(1, 1); // dead at 110 s
    map.run_janitor();
    clock.0.store(50 * second, Ordering::SeqCst); // 50 s back
    map.set(2, 2); // dated 50 s: dead at 60 s by its deadline, a time the janitor has passed
                   // Debug builds report the step (once per map); release builds go on.
    let stepped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| map.run_janitor()));
    assert_eq!(stepped.is_err(), cfg!(debug_assertions));
    assert_eq!(map.get(&1), Some(1), "the older entry, live by the callers' clock");
    clock.0.store(60 * second, Ordering::SeqCst); // still behind the janitor's 100 s
    map.run_janitor(); // reported once per map: no second panic
    clock.0.store(105 * second, Ordering::SeqCst);
    map.run_janitor();
    assert_eq!(map.get(&1), Some(1), "not due before 110 s");
    clock.0.store(200 * second, Ordering::SeqCst); // past everything
    map.run_janitor();
    assert!(map.is_empty(), "{:?}", map.stats());
}

/// Whether this thread is the process's janitor thread.
fn on_janitor_thread() -> bool {
    std::thread::current().name() == Some("download-buffer-janitor")
}

#[test]
fn a_janitor_run_skipped_for_a_manual_run_does_not_put_the_map_to_sleep() {
    // A manual run holds map A's janitor lock (its listener sleeps 400 ms off the janitor
    // thread) when a set rings A's bell: the janitor thread's run of A is skipped. It used
    // to put A to sleep for 10 s, with the rung entry left on the intake behind the run's
    // take. Map B's listener holds the janitor thread for the first 200 ms, so that A's
    // first entry is still there for the manual run.
    let b: ExpiringMap<u64, u64> =
        Builder::new(ms(10), ms(20)).on_expire(|_, _| std::thread::sleep(ms(200))).build().unwrap();
    let a: Arc<ExpiringMap<u64, u64>> = Arc::new(
        Builder::new(ms(10), ms(50))
            .on_expire(|_, _| {
                if !on_janitor_thread() {
                    std::thread::sleep(ms(400));
                }
            })
            .build()
            .unwrap(),
    );
    let started = Instant::now();
    a.set(1, 1);
    b.set(0, 0);
    std::thread::sleep(ms(100));
    let manual = {
        let a = Arc::clone(&a);
        std::thread::spawn(move || a.run_janitor())
    };
    std::thread::sleep(ms(50));
    a.set(2, 2); // onto an emptied stripe: rings
    if manual.join().unwrap().expired == 0 {
        // A loaded machine ran the janitor thread's expiry of key 1 first: the manual run
        // held no lock for long, and this run checks nothing.
        println!("setup not reached (the janitor thread expired key 1 first)");
    }
    common::wait_for("map A to empty", || a.is_empty());
    assert!(started.elapsed() < Duration::from_secs(5), "an expired entry lingered {:?}", started.elapsed());
}

#[test]
fn a_second_done_waits_for_the_run_in_progress() {
    let (in_listener, listener_done) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (entered, ended) = (Arc::clone(&in_listener), Arc::clone(&listener_done));
    let map: Arc<ExpiringMap<u64, u64>> = Arc::new(
        Builder::new(ms(10), ms(20))
            .on_expire(move |_, _| {
                entered.store(1, Ordering::SeqCst);
                std::thread::sleep(ms(300));
                ended.store(1, Ordering::SeqCst);
            })
            .build()
            .unwrap(),
    );
    map.set(1, 1);
    common::wait_for("the listener to start", || in_listener.load(Ordering::SeqCst) == 1);
    let first = {
        let map = Arc::clone(&map);
        std::thread::spawn(move || map.done())
    };
    std::thread::sleep(ms(50));
    map.done();
    assert_eq!(listener_done.load(Ordering::SeqCst), 1, "the second done returned while the run was in progress");
    first.join().unwrap();
}

/// A value that records the name of the thread that drops it.
#[derive(Clone)]
struct Recorded(Arc<std::sync::Mutex<Vec<String>>>);

impl Drop for Recorded {
    fn drop(&mut self) {
        let name = std::thread::current().name().unwrap_or("unnamed").to_owned();
        self.0.lock().unwrap().push(name);
    }
}

#[test]
fn a_map_stopped_on_the_janitor_thread_and_dropped_elsewhere_is_freed_by_the_dropper() {
    // `done` from the map's own listener (on the janitor thread), then the last handle
    // dropped on this thread while that run is still in progress: the drop waits for the
    // run, and frees the map's values here, not later on the janitor thread.
    type Map = ExpiringMap<u64, Recorded>;
    let drops = Arc::new(std::sync::Mutex::new(Vec::new()));
    let me: Arc<std::sync::OnceLock<std::sync::Weak<Map>>> = Arc::new(std::sync::OnceLock::new());
    let (in_listener, listener_done) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (myself, entered, ended) = (Arc::clone(&me), Arc::clone(&in_listener), Arc::clone(&listener_done));
    let map: Arc<Map> = Arc::new(
        Builder::new(ms(10), ms(20))
            .on_expire(move |_, _| {
                if let Some(map) = myself.get().and_then(std::sync::Weak::upgrade) {
                    map.done(); // on the janitor thread, during the map's own run
                }
                entered.store(1, Ordering::SeqCst);
                std::thread::sleep(ms(300));
                ended.store(1, Ordering::SeqCst);
            })
            .build()
            .unwrap(),
    );
    let _ = me.set(Arc::downgrade(&map));
    map.set(1, Recorded(Arc::clone(&drops)));
    common::wait_for("the listener to start", || in_listener.load(Ordering::SeqCst) == 1);
    map.set(100, Recorded(Arc::clone(&drops))); // stays in the map
    drop(map);
    assert_eq!(listener_done.load(Ordering::SeqCst), 1, "drop returned while the map's janitor run was in progress");
    let dropped_here = drops.lock().unwrap().iter().filter(|name| !name.starts_with("download-buffer")).count();
    assert!(dropped_here >= 1, "the resident value was not freed by the dropping thread: {:?}", drops.lock().unwrap());
}
