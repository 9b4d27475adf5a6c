//! Model 14: a janitor run racing `set_if_absent` on an entry that comes due: whichever
//! claims it dead first decides who may take its leased value. A `set_if_absent` whose own
//! look claimed it takes the value when it replaces the entry; one that finds the janitor's
//! claim leaves the value to the epoch, because the janitor lends it to the expiry listener.
//! Each value is dropped once, the listener reads a whole value, and the key ends up holding
//! the new value whenever the set stored it.
#![cfg(crossbeam_loom)]

use loom::sync::atomic::Ordering;
use loom::sync::Arc;
use loom::thread;
use loom_tests::{collect_garbage, raced_tracked_map_with_listener, Tracked, DEADLINE_TICKS, WHEEL_TICK};

#[test]
fn a_dead_entry_replaced_by_set_if_absent_is_taken_only_by_its_claimer() {
    loom::model(|| {
        let (map, clock, counts, heard) = raced_tracked_map_with_listener();
        map.set(1, Tracked::new(7, &counts));
        map.run_janitor(); // file it in the wheel
        clock.advance(WHEEL_TICK * DEADLINE_TICKS); // due: both see it dead
        let map = Arc::new(map);
        let janitor = {
            let map = Arc::clone(&map);
            thread::spawn(move || map.run_janitor().expired)
        };
        let stored = map.set_if_absent(1, Tracked::new(9, &counts));
        let expired = janitor.join().unwrap();
        // The entry was dead for both: the set always stores (over it, or after it was gone).
        assert!(stored, "set_if_absent refused a dead entry");
        assert_eq!(map.peek(&1).map(|value| value.value()), Some(9));
        // The listener read the whole value whenever the janitor counted the expiry.
        assert_eq!(heard.load(Ordering::SeqCst), if expired == 1 { 7 } else { 0 });
        drop(map);
        collect_garbage(&counts);
    });
}
