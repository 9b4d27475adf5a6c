//! Model 8: the striped length counters: at rest, `len` equals the live entries, whichever way
//! an insert, two racing deletes of one key and a replace on two threads interleave (each
//! thread counts on its own shard; the losing delete counted out early and must count back
//! in). Caught with `loom_broken = "len_no_undo"`.
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
        let other = {
            let map = Arc::clone(&map);
            thread::spawn(move || {
                map.set(3, 3);
                map.delete(&1)
            })
        };
        let mine = map.delete(&1);
        map.set(2, 20);
        let theirs = other.join().unwrap();
        assert!(mine != theirs, "exactly one delete of key 1 wins: {mine} {theirs}");
        let live = (1..=3).filter(|key| map.get(key).is_some()).count();
        assert_eq!(live, 2);
        assert_eq!(map.len(), live);
    });
}
