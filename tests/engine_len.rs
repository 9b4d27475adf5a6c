//! `len` under concurrent churn: it may lag the table, but it never reports more entries
//! than the map held at some instant during the call.
//!
//! The churn sets and deletes the same few keys from several threads, so that an entry is
//! counted in by one thread and counted out by another: a `len` that sums per-thread
//! counters one after the other, while a key is deleted on one counter and set again on a
//! counter read later, counts it twice.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::{manual_map, ms, XorShift};

const HOUR: Duration = Duration::from_secs(3600);

#[test]
fn len_never_exceeds_the_keys_in_use_under_churn() {
    const KEYS: u64 = 2;
    const WRITERS: u64 = 3;
    const RUN: Duration = Duration::from_millis(1500);
    let (map, _clock) = manual_map::<u64, u64>(ms(100), HOUR);
    let stop = AtomicBool::new(false);
    let worst = thread::scope(|s| {
        for t in 0..WRITERS {
            let (map, stop) = (&map, &stop);
            s.spawn(move || {
                let mut rng = XorShift::new(t + 7);
                while !stop.load(Ordering::Relaxed) {
                    let key = rng.below(KEYS);
                    if rng.below(2) == 0 {
                        map.set(key, key);
                    } else {
                        map.delete(&key);
                    }
                }
            });
        }
        let reader = s.spawn(|| {
            let start = Instant::now();
            let mut worst = 0;
            while start.elapsed() < RUN {
                for _ in 0..256 {
                    worst = worst.max(map.len());
                }
            }
            worst
        });
        let worst = reader.join().expect("reader panicked");
        stop.store(true, Ordering::Relaxed);
        worst
    });
    assert!(worst <= KEYS as usize, "len() reported {worst} with only {KEYS} keys in use");
    // At rest, len is exact again: the keys `get` finds, and none once they are deleted.
    let present = (0..KEYS).filter(|key| map.get(key).is_some()).count();
    assert_eq!(map.len(), present, "len at rest");
    for key in 0..KEYS {
        map.delete(&key);
    }
    assert_eq!(map.len(), 0, "len after deleting every key");
}
