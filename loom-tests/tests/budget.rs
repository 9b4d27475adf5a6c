//! Model 12: the byte budget's accounting. Two `try_set`s race for the last room under the
//! budget: exactly one stores, and the bytes held never pass the budget, not even while
//! they race (each reads them right after its call, while the other may still be in its
//! own). And a replacing `try_set` (which needs room only for the difference) raced by a
//! `fetch_and_delete`: whatever the order, the bytes counted end equal to the weight of
//! what is left. The model also shows the one refusal a budget gives that hindsight would
//! not: a removal counts its bytes out just after its mark, so a `try_set` that finds the
//! key already gone may still see them counted, and is refused (counting them out before
//! the mark would let the count dip below the bytes held, and a racing `try_set` pass the
//! budget).
#![cfg(crossbeam_loom)]

use loom::sync::Arc;
use loom::thread;
use loom_tests::budgeted_map;

use download_buffer::Error;

#[test]
fn two_try_sets_for_the_last_room_never_pass_the_budget() {
    loom::model(|| {
        let map = Arc::new(budgeted_map(10));
        map.set(0, 4); // 6 bytes of room left
        let racer = {
            let map = Arc::clone(&map);
            thread::spawn(move || {
                let result = map.try_set(1, 6);
                let seen = map.stats().bytes;
                assert!(seen <= 10, "read {seen} bytes held under a budget of 10");
                result
            })
        };
        let mine = map.try_set(2, 6);
        let seen = map.stats().bytes;
        assert!(seen <= 10, "read {seen} bytes held under a budget of 10");
        let results = [racer.join().unwrap(), mine];
        let stored = results.iter().filter(|result| result.is_ok()).count();
        assert_eq!(stored, 1, "{results:?}");
        for result in &results {
            if let Err(error) = result {
                assert!(matches!(error, Error::Full { budget: 10, asked: 6, .. }), "{error:?}");
            }
        }
        let stats = map.stats();
        assert_eq!((stats.bytes, stats.entries), (10, 2), "{stats:?}");
    });
}

#[test]
fn a_replacing_try_set_raced_by_a_removal_leaves_the_count_exact() {
    loom::model(|| {
        let map = Arc::new(budgeted_map(10));
        map.set(0, 4);
        let replacer = {
            let map = Arc::clone(&map);
            thread::spawn(move || map.try_set(0, 9)) // needs 5 more, unless the 4 is gone
        };
        let taken = map.fetch_and_delete(&0);
        let replaced = replacer.join().unwrap();
        let left = map.peek(&0).unwrap_or(0);
        match replaced {
            Ok(()) => assert!(matches!((taken, left), (Some(4), 9) | (Some(9), 0)), "took {taken:?}, left {left}"),
            // Found the key gone while the removal's 4 bytes were still counted.
            Err(error) => {
                assert_eq!(error, Error::Full { budget: 10, held: 4, asked: 9 });
                assert_eq!((taken, left), (Some(4), 0));
            }
        }
        assert_eq!(map.stats().bytes, left, "bytes counted vs bytes left");
    });
}
