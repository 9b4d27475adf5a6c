//! Model 3: inserts racing a bucket split and table growth: no lost or duplicated entry.
#![cfg(crossbeam_loom)]

use loom::sync::Arc;
use loom::thread;
use loom_tests::small_map;

#[test]
fn inserts_racing_growth_lose_nothing() {
    loom::model(|| {
        let (map, _clock) = small_map::<u64>();
        let map = Arc::new(map);
        // Two buckets, load factor 2: the fifth entry doubles the buckets.
        for key in 0..4 {
            map.set(key, key);
        }
        let inserters: Vec<_> = [4u64, 5]
            .into_iter()
            .map(|key| {
                let map = Arc::clone(&map);
                thread::spawn(move || map.set(key, key))
            })
            .collect();
        for inserter in inserters {
            inserter.join().unwrap();
        }
        for key in 0..6 {
            assert_eq!(map.get(&key), Some(key), "lost {key}");
        }
        assert_eq!(map.len(), 6);
    });
}
