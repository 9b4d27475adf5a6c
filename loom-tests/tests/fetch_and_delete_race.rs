//! Model 2: two `fetch_and_delete` and a `set` on one key: exactly one winner per value, and
//! every value dropped exactly once.
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
        let racers: Vec<_> = (0..2)
            .map(|_| {
                let map = Arc::clone(&map);
                thread::spawn(move || map.fetch_and_delete(&1).map(|value| value.value()))
            })
            .collect();
        map.set(1, Tracked::new(8, &counts));
        let got: Vec<Option<u64>> = racers.into_iter().map(|racer| racer.join().unwrap()).collect();
        let winners_of = |v| got.iter().filter(|g| **g == Some(v)).count();
        assert!(winners_of(7) <= 1 && winners_of(8) <= 1, "a value won twice: {got:?}");
        let left = map.get(&1).map(|value| value.value());
        // 7 is taken by one racer or replaced by the set; 8 is taken by one racer or left.
        assert_eq!(winners_of(8) == 1, left.is_none(), "got {got:?}, left {left:?}");
        assert_eq!(map.len(), usize::from(left.is_some()));
        drop(map);
        collect_garbage(&counts);
    });
}
