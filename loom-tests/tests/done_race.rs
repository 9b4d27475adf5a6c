//! Model 7: `done()` racing operations and a janitor run: nothing lost, nothing freed twice,
//! the wheel never touched by two threads at once (the stopper must leave the last run to
//! a run in progress), and the map keeps working without the janitor. Caught with
//! `loom_broken = "stop_without_lock"`. (Two threads: with a third, the state space is too
//! large for this machine at preemption bound 2.)
#![cfg(crossbeam_loom)]

use loom::sync::Arc;
use loom::thread;
use loom_tests::{collect_garbage, tracked_map, Tracked};

#[test]
fn done_racing_operations() {
    loom::model(|| {
        let (map, _clock, counts) = tracked_map();
        let map = Arc::new(map);
        map.set(1, Tracked::new(1, &counts));
        let stopper = {
            let map = Arc::clone(&map);
            thread::spawn(move || map.done())
        };
        map.set(2, Tracked::new(2, &counts));
        map.run_janitor();
        let fetched = map.fetch_and_delete(&1).map(|value| value.value());
        stopper.join().unwrap();
        assert_eq!(fetched, Some(1));
        assert_eq!(map.get(&2).map(|value| value.value()), Some(2));
        assert_eq!(map.len(), 1);
        assert!(map.run_janitor().skipped, "no janitor run after done");
        drop(map);
        collect_garbage(&counts);
    });
}

/// After `done`, a `fetch_and_delete` that takes a leased value lets go of the janitor's
/// hold for it, one grace period later (its entry is freed then): a `get` racing it, which
/// may have found the entry before the unlink, never touches freed memory. Caught with
/// `loom_broken = "after_done_releases_taken_now"` (the hold let go of at once).
#[test]
fn after_done_a_removal_that_takes_the_value_waits_for_racing_readers() {
    loom::model(|| {
        let (map, _clock, counts) = tracked_map();
        map.set(1, Tracked::new(1, &counts));
        map.run_janitor(); // taken by the janitor: after done, its unlinker lets go for it
        map.done();
        let map = Arc::new(map);
        let reader = {
            let map = Arc::clone(&map);
            thread::spawn(move || map.get(&1).map(|value| value.value()))
        };
        let fetched = map.fetch_and_delete(&1).map(|value| value.value());
        let read = reader.join().unwrap();
        assert_eq!(fetched, Some(1));
        assert!(matches!(read, None | Some(1)), "the get read {read:?}");
        drop(map);
        collect_garbage(&counts);
    });
}
