//! Model 11: two `set`s replacing one key back to back, racing a `get` that touches it after
//! the clock moved on: the second replacement may take over an entry that is still
//! inheriting from the first, so the deadline is handed down the chain. Once all have
//! returned, the key lives `expire` from the get's time, and no longer than a tick more.
// loom-max-preemptions: 1
#![cfg(crossbeam_loom)]

use std::time::Duration;

use loom::sync::Arc;
use loom::thread;
use loom_tests::{raced_map, WHEEL_TICK};

#[test]
fn a_chain_of_replacements_hands_every_touch_down() {
    loom::model(|| {
        let (map, clock) = raced_map::<u64>();
        map.set(1, 11); // at 0: deadline 1 s
        let map = Arc::new(map);
        let setters: Vec<_> = [12, 13]
            .into_iter()
            .map(|value| {
                let map = Arc::clone(&map);
                thread::spawn(move || map.set(1, value))
            })
            .collect();
        clock.advance(Duration::from_millis(500));
        let seen = map.get(&1); // began at 500 ms: the key must live until 1.5 s
        for setter in setters {
            setter.join().unwrap();
        }
        assert!(matches!(seen, Some(11..=13)), "{seen:?}");
        clock.advance(Duration::from_millis(1000) - WHEEL_TICK);
        assert!(map.get(&1).is_some(), "the last entry was dated older than the touch");
        // Nothing touched it since 1487.5 ms: dead a wheel tick after 2487.5 ms, and never
        // left pending (which would keep it live for good).
        clock.advance(Duration::from_millis(1000) + WHEEL_TICK);
        assert_eq!(map.get(&1), None, "the entry never inherited its deadline");
        assert_eq!(map.len(), 1);
    });
}
