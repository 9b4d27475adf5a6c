//! Model 8: the striped length counters: at rest, `len` equals the live entries, whichever way
//! an insert on one thread and a delete and a replace on another interleave (each thread
//! counts on its own shard; `len` sums them).
#![cfg(crossbeam_loom)]

use loom::sync::Arc;
use loom::thread;
use loom_tests::small_map;

#[test]
fn quiescent_len_counts_live_entries() {
    loom::model(|| {
        let (map, _clock) = small_map::<u64>();
        map.set(1, 1);
        map.set(2, 2);
        let map = Arc::new(map);
        let inserter = {
            let map = Arc::clone(&map);
            thread::spawn(move || map.set(3, 3))
        };
        map.delete(&1);
        map.set(2, 20);
        inserter.join().unwrap();
        let live = (1..=3).filter(|key| map.get(key).is_some()).count();
        assert_eq!(live, 2);
        assert_eq!(map.len(), live);
    });
}
