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
