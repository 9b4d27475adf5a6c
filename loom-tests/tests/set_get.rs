//! Model 1: `set` racing `get` on one key: the reader sees nothing or the whole value.
#![cfg(crossbeam_loom)]

use loom::sync::Arc;
use loom::thread;
use loom_tests::small_map;

#[test]
fn set_racing_get_sees_nothing_or_the_whole_value() {
    loom::model(|| {
        let (map, _clock) = small_map::<(u64, u64)>();
        let map = Arc::new(map);
        let writer = {
            let map = Arc::clone(&map);
            thread::spawn(move || map.set(1, (11, 11)))
        };
        let seen = map.get(&1);
        assert!(seen.is_none() || seen == Some((11, 11)), "torn or wrong value: {seen:?}");
        writer.join().unwrap();
        assert_eq!(map.get(&1), Some((11, 11)));
        assert_eq!(map.len(), 1);
    });
}
