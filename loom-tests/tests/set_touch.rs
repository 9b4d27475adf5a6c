//! Model 10: a `set` replacing an entry, racing the clock moving on and a `get` that touches
//! the key: whatever the order, once both have returned, the key lives `expire` from the
//! get's time (the later one). The set links its entry pending and dates it only after the
//! link, keeping the later of its own date and any touch made meanwhile.
#![cfg(crossbeam_loom)]

use std::time::Duration;

use loom::sync::Arc;
use loom::thread;
use loom_tests::{raced_map, WHEEL_TICK};

#[test]
fn a_set_never_dates_its_entry_older_than_a_touch() {
    loom::model(|| {
        let (map, clock) = raced_map::<u64>();
        map.set(1, 11); // at 0: deadline 1 s
        let map = Arc::new(map);
        let setter = {
            let map = Arc::clone(&map);
            thread::spawn(move || map.set(1, 12))
        };
        clock.advance(Duration::from_millis(500));
        let seen = map.get(&1); // began at 500 ms: the key must live until 1.5 s
        setter.join().unwrap();
        assert!(seen == Some(11) || seen == Some(12), "{seen:?}");
        // One wheel tick before 1.5 s, nothing touched since: still there.
        clock.advance(Duration::from_millis(1000) - WHEEL_TICK);
        assert_eq!(map.get(&1), Some(12), "the replacing entry was dated older than the touch");
        assert_eq!(map.len(), 1);
    });
}
