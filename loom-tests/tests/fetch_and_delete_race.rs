//! Model 2: `fetch_and_delete` racing `fetch_and_delete` and `set` on one key: exactly one
//! winner per value, and every value dropped at most once (the payload's poison catches a
//! second drop; loom catches a drop racing a clone). Two threads: a third makes the state
//! space too large for this machine at preemption bound 2.
#![cfg(crossbeam_loom)]

use loom::sync::Arc;
use loom::thread;
use loom_tests::{collect_garbage, tracked_map, Tracked};

#[test]
fn one_winner_and_values_dropped_once() {
    loom::model(|| {
        let (map, _clock, counts) = tracked_map();
        let map = Arc::new(map);
        map.set(1, Tracked::new(7, &counts));
        let racer = {
            let map = Arc::clone(&map);
            thread::spawn(move || map.fetch_and_delete(&1).map(|value| value.value()))
        };
        let mine = map.fetch_and_delete(&1).map(|value| value.value());
        map.set(1, Tracked::new(8, &counts));
        let theirs = racer.join().unwrap();
        let got = [mine, theirs];
        let winners_of = |v| got.iter().filter(|g| **g == Some(v)).count();
        assert_eq!(winners_of(7), 1, "7 must be taken exactly once: {got:?}");
        assert!(winners_of(8) <= 1, "8 taken twice: {got:?}");
        let left = map.get(&1).map(|value| value.value());
        assert_eq!(winners_of(8) == 1, left.is_none(), "got {got:?}, left {left:?}");
        assert_eq!(map.len(), usize::from(left.is_some()));
        drop(map);
        collect_garbage(&counts);
    });
}
