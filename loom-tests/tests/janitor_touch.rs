//! Model 5: a janitor run racing a `get` that touches the entry at its deadline: a touched
//! entry is never expired; an untouched one is expired exactly once.
#![cfg(crossbeam_loom)]

use loom::sync::Arc;
use loom::thread;
use loom_tests::{small_map, DEADLINE_TICKS, WHEEL_TICK};

#[test]
fn touch_and_expiry_agree() {
    loom::model(|| {
        let (map, clock) = small_map::<u64>();
        map.set(1, 11);
        // Coarse time one wheel tick before the deadline: a get now moves the deadline.
        clock.advance(WHEEL_TICK * (DEADLINE_TICKS - 1));
        map.run_janitor();
        clock.advance(WHEEL_TICK);
        let map = Arc::new(map);
        let janitor = {
            let map = Arc::clone(&map);
            thread::spawn(move || map.run_janitor().expired)
        };
        let seen = map.get(&1);
        let expired = janitor.join().unwrap();
        match seen {
            // The get touched it (its CAS came before the janitor's claim): it must live on.
            Some(value) => {
                assert_eq!(value, 11);
                assert_eq!(expired, 0, "a touched entry was expired");
                assert_eq!(map.len(), 1);
            }
            // The janitor claimed it first: gone, exactly once.
            None => {
                assert_eq!(expired, 1);
                assert_eq!(map.len(), 0);
            }
        }
        assert_eq!(map.janitor_stats().expired, expired as u64);
    });
}
