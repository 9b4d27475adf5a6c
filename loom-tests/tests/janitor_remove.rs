//! Model 6: a janitor run racing `fetch_and_delete` on a due entry: exactly one of them takes
//! the entry (the fetch returns it, or the janitor counts it expired and lends the value to
//! the expiry listener), its value is released once, and nothing is freed twice or read
//! after it was taken.
#![cfg(crossbeam_loom)]

use loom::sync::atomic::Ordering;
use loom::sync::Arc;
use loom::thread;
use loom_tests::{collect_garbage, raced_tracked_map_with_listener, Tracked, DEADLINE_TICKS, WHEEL_TICK};

#[test]
fn expiry_and_removal_take_the_entry_once() {
    loom::model(|| {
        let (map, clock, counts, heard) = raced_tracked_map_with_listener();
        map.set(1, Tracked::new(7, &counts));
        map.run_janitor(); // file it in the wheel
        clock.advance(WHEEL_TICK * (DEADLINE_TICKS - 1));
        let map = Arc::new(map);
        let janitor = {
            let (map, clock) = (Arc::clone(&map), clock.clone());
            thread::spawn(move || {
                clock.advance(WHEEL_TICK); // the deadline: due for the janitor; a fetch that
                                           // read the time before sees it live
                map.run_janitor().expired
            })
        };
        let fetched = map.fetch_and_delete(&1).map(|value| value.value());
        let expired = janitor.join().unwrap();
        // Exactly one. When the janitor claimed the entry and the fetch then marked it, the
        // fetch's settling RMW sees the claim (it reports not-found) and the janitor, whose
        // own removal then failed, counts the expiry all the same: the claim decided.
        assert_eq!(usize::from(fetched.is_some()) + expired, 1, "fetched {fetched:?}, expired {expired}");
        assert_eq!(fetched.unwrap_or(7), 7);
        // The listener heard of the expiry, and read the whole value it was lent.
        assert_eq!(heard.load(Ordering::SeqCst), if expired == 1 { 7 } else { 0 });
        assert_eq!(map.len(), 0);
        drop(map);
        collect_garbage(&counts);
    });
}
