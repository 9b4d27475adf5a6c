//! Model 11: two `set`s replacing one key at once: the second may replace the first's entry
//! while it is still inheriting, so the deadline is handed down the chain (the first set's
//! finish finds its entry replaced and finishes the next one). Once both have returned, the
//! key holds one of the two values and dies at its deadline: it is never left pending (which
//! would keep it live for good). (How long it lives is model 10's business; a `get` here
//! would extend it.)
#![cfg(crossbeam_loom)]

use std::time::Duration;

use loom::sync::Arc;
use loom::thread;
use loom_tests::raced_map;

#[test]
fn a_chain_of_replacements_never_stays_pending() {
    loom::model(|| {
        let (map, clock) = raced_map::<u64>();
        map.set(1, 11); // at 0: deadline 1 s
        let map = Arc::new(map);
        let setter = {
            let map = Arc::clone(&map);
            thread::spawn(move || map.set(1, 13))
        };
        map.set(1, 12);
        setter.join().unwrap();
        assert_eq!(map.len(), 1);
        clock.advance(Duration::from_millis(1000)); // the deadline of all three sets
        assert_eq!(map.get(&1), None, "the last entry never inherited its deadline");
        assert_eq!(map.len(), 1, "not removed: no janitor run");
    });
}
