//! Model 6: a janitor run racing `fetch_and_delete` and `delete`: the entry goes once, its
//! value is released once, nothing is freed twice.
#![cfg(crossbeam_loom)]

use loom::sync::Arc;
use loom::thread;
use loom_tests::{collect_garbage, flush_epoch, tracked_map, Tracked, DEADLINE_TICKS, WHEEL_TICK};

#[test]
fn expiry_and_removal_take_the_entry_once() {
    loom::model(|| {
        let (map, clock, counts) = tracked_map();
        map.set(1, Tracked::new(7, &counts));
        map.set(2, Tracked::new(8, &counts));
        map.run_janitor(); // file both in the wheel
        clock.advance(WHEEL_TICK * DEADLINE_TICKS);
        let map = Arc::new(map);
        let janitor = {
            let map = Arc::clone(&map);
            thread::spawn(move || {
                let expired = map.run_janitor().expired;
                flush_epoch();
                expired
            })
        };
        let fetched = map.fetch_and_delete(&1).map(|value| value.value());
        map.delete(&2);
        let expired = janitor.join().unwrap();
        // Entry 1: fetched (before the janitor published the new time) or expired, not both.
        // Entry 2: deleted or expired. The janitor counts only what it removed itself.
        assert!(expired <= 2);
        if fetched.is_some() {
            assert_eq!(fetched, Some(7));
            assert!(expired <= 1);
        }
        assert_eq!(map.len(), 0);
        drop(map);
        collect_garbage(&counts);
    });
}
