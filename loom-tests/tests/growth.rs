//! Model 3: an insert that grows the table (2 → 4 buckets, initializing a new bucket)
//! racing an insert and lookups on another thread: no lost or duplicated entry, and a
//! reader never misses a key that was present before the growth began.
#![cfg(crossbeam_loom)]

use loom::sync::Arc;
use loom::thread;
use loom_tests::small_map;

#[test]
fn inserts_racing_growth_lose_nothing() {
    loom::model(|| {
        let (map, _clock) = small_map::<u64>();
        // Two buckets, load factor 2: the fifth entry doubles the buckets.
        for key in 0..4 {
            map.set(key, key);
        }
        let map = Arc::new(map);
        let grower = {
            let map = Arc::clone(&map);
            thread::spawn(move || map.set(4, 4))
        };
        assert_eq!(map.get(&1), Some(1), "a present key was missed during growth");
        map.set(5, 5);
        grower.join().unwrap();
        for key in 0..6 {
            assert_eq!(map.get(&key), Some(key), "lost {key}");
        }
        assert_eq!(map.len(), 6);
    });
}
