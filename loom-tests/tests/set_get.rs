//! Model 1: `set` racing `get` on one key: the reader sees nothing or the whole value, and
//! everything the writer wrote before publishing the entry (the payload is loom-tracked, so
//! a publication without Release is a causality violation).
#![cfg(crossbeam_loom)]

use loom::sync::Arc;
use loom::thread;
use loom_tests::{collect_garbage, tracked_map, Tracked};

#[test]
fn set_racing_get_sees_nothing_or_the_whole_value() {
    loom::model(|| {
        let (map, _clock, counts) = tracked_map();
        let map = Arc::new(map);
        let writer = {
            let map = Arc::clone(&map);
            let counts = Arc::clone(&counts);
            thread::spawn(move || map.set(1, Tracked::new(11, &counts)))
        };
        let seen = map.get(&1).map(|value| value.value());
        assert!(seen.is_none() || seen == Some(11), "wrong value: {seen:?}");
        writer.join().unwrap();
        assert_eq!(map.get(&1).map(|value| value.value()), Some(11));
        assert_eq!(map.len(), 1);
        drop(map);
        collect_garbage(&counts);
    });
}
