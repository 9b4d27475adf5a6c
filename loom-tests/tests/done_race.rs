//! Model 7: `done()` racing operations from two threads: nothing lost, nothing freed twice,
//! and the map keeps working without the janitor.
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
        let worker = {
            let map = Arc::clone(&map);
            let counts = Arc::clone(&counts);
            thread::spawn(move || {
                map.set(2, Tracked::new(2, &counts));
                map.fetch_and_delete(&1).map(|value| value.value())
            })
        };
        map.run_janitor();
        stopper.join().unwrap();
        assert_eq!(worker.join().unwrap(), Some(1));
        assert_eq!(map.get(&2).map(|value| value.value()), Some(2));
        map.set(3, Tracked::new(3, &counts));
        assert_eq!(map.fetch_and_delete(&3).map(|value| value.value()), Some(3));
        assert_eq!(map.len(), 1);
        assert!(map.run_janitor().skipped);
        drop(map);
        collect_garbage(&counts);
    });
}
