//! Model 4: `delete` racing `get`: the reader never touches a freed value. The payload is
//! loom-tracked and leased: the delete takes and drops it when the get is not in, else it
//! waits for the epoch (with flushes), so reclamation runs in the model both ways.
#![cfg(crossbeam_loom)]

use loom::sync::Arc;
use loom::thread;
use loom_tests::{collect_garbage, flush_epoch, tracked_map, Tracked};

#[test]
fn delete_racing_get_never_uses_freed_memory() {
    loom::model(|| {
        let (map, _clock, counts) = tracked_map();
        let map = Arc::new(map);
        map.set(1, Tracked::new(7, &counts));
        map.set(2, Tracked::new(9, &counts));
        let deleter = {
            let map = Arc::clone(&map);
            thread::spawn(move || {
                map.delete(&1);
                map.delete(&2);
                flush_epoch();
            })
        };
        if let Some(value) = map.get(&1) {
            assert_eq!(value.value(), 7);
        }
        deleter.join().unwrap();
        assert!(map.get(&1).is_none() && map.get(&2).is_none());
        drop(map);
        collect_garbage(&counts);
    });
}
