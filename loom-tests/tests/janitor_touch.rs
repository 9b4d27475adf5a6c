//! Model 5: a janitor run racing a `get` that touches the entry one wheel tick before its
//! deadline, while the clock reaches the deadline: a touched entry is never expired; an
//! untouched one is expired exactly once.
#![cfg(crossbeam_loom)]

use loom::sync::Arc;
use loom::thread;
use loom_tests::{raced_map, DEADLINE_TICKS, WHEEL_TICK};

#[test]
fn touch_and_expiry_agree() {
    loom::model(|| {
        let (map, clock) = raced_map::<u64>();
        map.set(1, 11);
        map.run_janitor(); // file it in the wheel
                           // One wheel tick before the deadline: a get that reads this time moves the deadline.
        clock.advance(WHEEL_TICK * (DEADLINE_TICKS - 1));
        let map = Arc::new(map);
        let janitor = {
            let (map, clock) = (Arc::clone(&map), clock.clone());
            thread::spawn(move || {
                clock.advance(WHEEL_TICK); // the deadline: due for the janitor
                map.run_janitor().expired
            })
        };
        let seen = map.get(&1);
        let expired = janitor.join().unwrap();
        match seen {
            // The get touched it (it read the time before the deadline, and its CAS came
            // before the janitor's claim): it must live on.
            Some(value) => {
                assert_eq!(value, 11);
                assert_eq!(expired, 0, "a touched entry was expired");
                assert_eq!(map.len(), 1);
            }
            // The get read the deadline's time, or the janitor claimed it first: gone, once.
            None => {
                assert_eq!(expired, 1);
                assert_eq!(map.len(), 0);
            }
        }
        assert_eq!(map.janitor_stats().expired, expired as u64);
    });
}
