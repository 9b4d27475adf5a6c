//! Model 8: the striped length counters: at rest, `len` equals the live entries.
#![cfg(crossbeam_loom)]

use loom::sync::Arc;
use loom::thread;
use loom_tests::small_map;

#[test]
fn quiescent_len_counts_live_entries() {
    loom::model(|| {
        let (map, _clock) = small_map::<u64>();
        let map = Arc::new(map);
        map.set(2, 2);
        let a = {
            let map = Arc::clone(&map);
            thread::spawn(move || map.set(1, 1))
        };
        let b = {
            let map = Arc::clone(&map);
            thread::spawn(move || {
                map.set(2, 20);
                map.delete(&1);
            })
        };
        a.join().unwrap();
        b.join().unwrap();
        let live = (1..=2).filter(|key| map.get(key).is_some()).count();
        assert_eq!(map.len(), live);
    });
}
