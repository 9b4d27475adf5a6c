//! Model 3: two `set`s racing the table's first migration. The table starts with 4 slots
//! holding 3 keys; whichever racing `set` lands first fills it past 3/4 and starts a
//! migration, which the other store may have to help with (freezing its key's chain, copying
//! a chunk) before it stores in the new generation: no lost or duplicated entry, and `len`
//! agrees.
#![cfg(crossbeam_loom)]

use loom::sync::Arc;
use loom::thread;
use loom_tests::small_map;

#[test]
fn sets_racing_a_migration_lose_nothing() {
    loom::model(|| {
        let (map, _clock) = small_map::<u64>();
        for key in 0..3 {
            map.set(key, key);
        }
        let map = Arc::new(map);
        let other = {
            let map = Arc::clone(&map);
            thread::spawn(move || map.set(3, 3))
        };
        map.set(4, 4);
        other.join().unwrap();
        for key in 0..5 {
            assert_eq!(map.get(&key), Some(key), "lost {key}");
        }
        assert_eq!(map.len(), 5);
    });
}
