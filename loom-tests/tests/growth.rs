//! Model 3: inserts racing a bucket split. The table starts with 2 buckets and grows to 4 on
//! its fifth entry; then two threads insert keys that both hash into the new bucket 2, so both
//! race to initialize it (insert its dummy into the list) and to insert behind it: no lost or
//! duplicated entry, and `len` agrees.
#![cfg(crossbeam_loom)]

use std::hash::BuildHasher;

use loom::sync::Arc;
use loom::thread;
use loom_tests::{small_map, FixedHasher};

/// The first `n` keys from `from` on whose hash falls in bucket `bucket` of 4.
fn keys_in_bucket(bucket: u64, from: u64, n: usize) -> Vec<u64> {
    (from..).filter(|key| FixedHasher::default().hash_one(key) & 3 == bucket).take(n).collect()
}

#[test]
fn inserts_racing_a_bucket_split_lose_nothing() {
    // Outside the model: plain hashing, no loom objects.
    let before: Vec<u64> = [0, 1, 3].iter().flat_map(|&bucket| keys_in_bucket(bucket, 0, 2)).take(5).collect();
    let racing = keys_in_bucket(2, 1000, 2);
    loom::model(move || {
        let (map, _clock) = small_map::<u64>();
        for &key in &before {
            map.set(key, key); // the fifth doubles the buckets; none touches bucket 2
        }
        let map = Arc::new(map);
        let other = {
            let map = Arc::clone(&map);
            let key = racing[0];
            thread::spawn(move || map.set(key, key))
        };
        map.set(racing[1], racing[1]);
        other.join().unwrap();
        for &key in before.iter().chain(&racing) {
            assert_eq!(map.get(&key), Some(key), "lost {key}");
        }
        assert_eq!(map.len(), before.len() + racing.len());
    });
}
