//! Model 9: an insert racing a lookup of a key that is already there: the lookup walks
//! through the new node, so it must see the new node's `next` as the inserter wrote it before
//! publishing (the publishing CAS is Release, the walk's loads Acquire). A key present the
//! whole time is never missed.
#![cfg(crossbeam_loom)]

use std::hash::BuildHasher;

use loom::sync::Arc;
use loom::thread;
use loom_tests::{small_map, FixedHasher};

/// Where a key sorts in the table's list (its split-order key; see src/entry.rs).
fn split_order(key: u64) -> u64 {
    (FixedHasher::default().hash_one(key) | 1 << 63).reverse_bits()
}

#[test]
fn a_present_key_is_found_through_a_node_being_inserted() {
    // Two keys of bucket 0 (of 2), `first` sorting before `present`: inserting `first` links
    // it in front of `present`.
    let bucket0: Vec<u64> = (0..).filter(|key| FixedHasher::default().hash_one(key) & 1 == 0).take(2).collect();
    let (first, present) = if split_order(bucket0[0]) < split_order(bucket0[1]) {
        (bucket0[0], bucket0[1])
    } else {
        (bucket0[1], bucket0[0])
    };
    loom::model(move || {
        let (map, _clock) = small_map::<u64>();
        map.set(present, present);
        let map = Arc::new(map);
        let inserter = {
            let map = Arc::clone(&map);
            thread::spawn(move || map.set(first, first))
        };
        assert_eq!(map.get(&present), Some(present), "a present key was missed");
        inserter.join().unwrap();
        assert_eq!(map.get(&first), Some(first));
    });
}
