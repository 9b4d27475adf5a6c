//! Memory use of the lock-free engine, measured with a counting global allocator (this
//! binary's only): heap bytes per entry, allocation-free `get`, a steady heap under a long
//! set/get/get/fetch_and_delete pipeline, and prompt release of large removed payloads.
//!
//! The heap figures are process-wide, so the tests of this file run one at a time, each on
//! a thread of its own (`common::isolated`). Run with `--nocapture` to see the figures.

mod common;

use std::time::{Duration, Instant};

use common::{isolated, manual_buffer, manual_map, ms};
use download_buffer::{BufferId, Bytes, ChunkHandle};

#[path = "common/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::{peak, reset_peak, thread_allocations};

/// Heap bytes in use now.
fn heap() -> isize {
    counting_alloc::live()
}

const MIB: f64 = 1024.0 * 1024.0;

fn mib(bytes: isize) -> f64 {
    bytes as f64 / MIB
}

/// A fresh id whose key bits are `n` (no clock read, no global state).
fn id(n: u64) -> BufferId {
    BufferId { handle: ChunkHandle(n as i64), timestamp: (n as i64).wrapping_mul(31) }
}

#[test]
fn heap_bytes_per_entry_with_empty_values() {
    isolated(|| {
        const N: u64 = 1_000_000;
        let ids: Vec<BufferId> = (0..N).map(id).collect();
        let (buffer, _clock) = manual_buffer(ms(100), Duration::from_secs(3600));
        buffer.set(id(u64::MAX), Bytes::new()); // registers this thread with the epoch
        buffer.run_janitor();
        let before = heap();
        for id in &ids {
            buffer.set(*id, Bytes::new());
        }
        let run = buffer.run_janitor();
        assert_eq!(run.filed, N as usize, "{run:?}");
        let after = heap();
        assert_eq!(buffer.len(), N as usize + 1);
        let per_entry = (after - before) as f64 / N as f64;
        println!("DownloadBuffer: {per_entry:.1} heap bytes per entry with empty values ({N} entries, filed)");
        assert!(per_entry <= 128.0, "{per_entry:.1} bytes per entry (limit 128)");
        drop(buffer);

        // The generic engine at u64 -> u64, for comparison.
        let (map, _clock) = manual_map::<u64, u64>(ms(100), Duration::from_secs(3600));
        map.set(u64::MAX, 0);
        let before = heap();
        for key in 0..N {
            map.set(key, key);
        }
        map.run_janitor();
        let per_entry = (heap() - before) as f64 / N as f64;
        println!("ExpiringMap<u64, u64>: {per_entry:.1} heap bytes per entry ({N} entries, filed)");
        assert!(per_entry <= 112.0, "{per_entry:.1} bytes per entry (limit 112)");
    })
}

#[test]
fn get_never_allocates() {
    isolated(|| {
        let (buffer, _clock) = manual_buffer(ms(100), Duration::from_secs(3600));
        // Values of every representation Bytes has: static, empty, from a Vec (promoted to
        // shared by `set`), from a Vec with spare capacity, and a large one.
        for n in 0..1_000u64 {
            let data = match n % 5 {
                0 => Bytes::from_static(b"static payload"),
                1 => Bytes::new(),
                2 => Bytes::from(vec![n as u8; 100]),
                3 => {
                    let mut vec = Vec::with_capacity(256);
                    vec.extend_from_slice(&[n as u8; 100]);
                    Bytes::from(vec)
                }
                _ => Bytes::from(vec![n as u8; 64 * 1024]),
            };
            buffer.set(id(n), data);
        }
        buffer.run_janitor();
        let (map, _clock) = manual_map::<u64, u64>(ms(100), Duration::from_secs(3600));
        for key in 0..1_000 {
            map.set(key, key);
        }
        map.run_janitor();
        // Warm-up: the first pin registers this thread with the epoch.
        for n in 0..1_000 {
            drop(buffer.get(&id(n)));
            let _ = map.get(&n);
        }

        let before = thread_allocations();
        let mut hits = 0usize;
        for round in 0..100_000u64 {
            let n = round % 2_000; // half present, half absent
            if let Some(data) = buffer.get(&id(n)) {
                hits += 1;
                std::hint::black_box(&data);
            }
            if map.get(&n).is_some() {
                hits += 1;
            }
        }
        let allocations = thread_allocations() - before;
        assert_eq!(hits, 100_000, "half of 2 x 100_000 gets hit");
        println!("get: {allocations} allocations in 200_000 gets (100_000 on each map)");
        assert_eq!(allocations, 0, "get allocated");
    })
}

#[test]
fn heap_stays_steady_under_a_long_pipeline() {
    isolated(|| {
        // Each round: set a 1 KiB value, get it twice, fetch_and_delete it. Every 10_000 ops the
        // clock moves 1 ms and the janitor runs (expire 10 min: nothing expires; the janitor
        // only retires removed entries).
        // 2 M rounds take ~3 s in debug builds: CI (debug) runs half of them.
        let rounds: u64 = if cfg!(debug_assertions) { 1_000_000 } else { 2_000_000 };
        let warm_up = rounds / 10;
        const OPS_PER_RUN: u64 = 10_000;
        const LIMIT: isize = 4 << 20;
        let (buffer, clock) = manual_buffer(ms(100), Duration::from_secs(600));
        let payload = vec![0x5au8; 1024];
        let start = Instant::now();
        let mut ops = 0u64;
        let (mut warm, mut highest, mut lowest) = (0isize, isize::MIN, isize::MAX);
        for round in 0..rounds {
            let key = id(round);
            buffer.set(key, Bytes::from(payload.clone()));
            assert_eq!(buffer.get(&key).map(|data| data.len()), Some(1024));
            assert_eq!(buffer.get(&key).map(|data| data.len()), Some(1024));
            assert_eq!(buffer.fetch_and_delete(&key).map(|data| data.len()), Ok(1024));
            ops += 4;
            if ops % OPS_PER_RUN == 0 {
                clock.advance(ms(1));
                buffer.run_janitor();
                if round + 1 == warm_up {
                    warm = heap();
                    reset_peak();
                } else if round >= warm_up {
                    highest = highest.max(heap());
                    lowest = lowest.min(heap());
                }
            }
        }
        let top = peak();
        println!(
            "pipeline: {rounds} rounds ({ops} ops) in {:?}; live heap after warm-up {:.2} MiB, then between \
             {:.2} and {:.2} MiB after janitor runs, peak {:.2} MiB (+{:.2} MiB over the warm-up level)",
            start.elapsed(),
            mib(warm),
            mib(lowest),
            mib(highest),
            mib(top),
            mib(top - warm)
        );
        assert!(buffer.is_empty());
        assert!(top - warm < LIMIT, "heap grew {:.2} MiB over its warm-up level", mib(top - warm));
    })
}

#[test]
fn large_removed_values_are_released_without_the_janitor() {
    isolated(|| {
        // 10_000 values of 64 KiB (640 MiB in all) set and fetched; the janitor never runs, so
        // only their removers can free them (leased: `fetch_and_delete` hands the payload over).
        const ROUNDS: u64 = 10_000;
        const LIMIT: isize = 8 << 20;
        let (buffer, _clock) = manual_buffer(ms(100), Duration::from_secs(3600));
        buffer.set(id(u64::MAX), Bytes::new()); // registers this thread with the epoch
        let before = heap();
        reset_peak();
        let mut highest = 0isize;
        for round in 0..ROUNDS {
            let key = id(round);
            buffer.set(key, Bytes::from(vec![round as u8; 64 * 1024]));
            let data = buffer.fetch_and_delete(&key).expect("present");
            assert_eq!(data.len(), 64 * 1024);
            drop(data);
            highest = highest.max(heap() - before);
        }
        let grown = peak() - before;
        println!(
            "large values: {ROUNDS} x 64 KiB set and fetched without a janitor run: heap +{:.2} MiB at the end, \
             peak +{:.2} MiB (largest after a round +{:.2} MiB)",
            mib(heap() - before),
            mib(grown),
            mib(highest)
        );
        assert!(grown < LIMIT, "heap grew by {:.2} MiB: removed 64 KiB values are held", mib(grown));
    })
}

#[test]
fn a_consumed_payload_is_freed_when_its_consumer_drops_it() {
    isolated(|| {
        // A `DownloadBuffer` leases its values: `fetch_and_delete` hands over the stored
        // payload itself, so dropping it frees the memory on the spot (no epoch advance, no
        // janitor run). Only the entries' small shells wait, for the janitor.
        const ROUNDS: u64 = 1_000;
        const PAYLOAD: usize = 1 << 20;
        const SHELL_ALLOWANCE: isize = 512;
        let (buffer, _clock) = manual_buffer(ms(100), Duration::from_secs(3600));
        buffer.set(id(u64::MAX), Bytes::new()); // registers this thread with the epoch

        // A churning table grows its slot array to 4096 slots (32 KiB) so that its purges of
        // tombstones come rarely: let it get there before the baseline.
        for round in 0..10_000u64 {
            buffer.set(id(u64::MAX - 1 - round), Bytes::new());
            buffer.fetch_and_delete(&id(u64::MAX - 1 - round)).expect("present");
        }
        for _ in 0..3 {
            buffer.run_janitor();
        }
        // Counted on this thread only: the harness's threads start and report beside it.
        let mine = counting_alloc::thread_net_bytes;
        let before = mine();
        let mut highest = 0isize;
        for round in 0..ROUNDS {
            let key = id(round);
            buffer.set(key, Bytes::from(vec![round as u8; PAYLOAD]));
            let data = buffer.fetch_and_delete(&key).expect("present");
            assert_eq!(data.len(), PAYLOAD);
            drop(data);
            highest = highest.max(mine() - before);
        }
        println!(
            "consumed payloads: {ROUNDS} x 1 MiB set, fetched and dropped: heap at most +{highest} bytes after a round"
        );
        let allowed = ROUNDS as isize * SHELL_ALLOWANCE;
        assert!(
            highest <= allowed,
            "heap +{highest} bytes after a round (allowed {allowed}): a consumed payload lingers"
        );
        // The shells go too (1000 of ~100 bytes), once the janitor has taken them and the
        // epoch has moved on. What may stay: one purge's new slot array (32 KiB) beside the
        // retired one, and the epoch's own bookkeeping, a few of its 2 KiB bags of deferred
        // drops in flight (each collection defers the free of the queue nodes it pops).
        // Janitor runs 1 ms apart, for up to 2 s (one run is enough on a quiet machine).
        const TABLE_GROWTH: isize = 32 * 1024;
        const EPOCH_BAGS: isize = 4 * 2072;
        const ALLOWED: isize = TABLE_GROWTH + EPOCH_BAGS;
        let start = Instant::now();
        let mut runs = 0;
        while mine() - before > ALLOWED && start.elapsed() < Duration::from_secs(2) {
            buffer.run_janitor();
            runs += 1;
            std::thread::sleep(Duration::from_millis(1));
        }
        let left = mine() - before;
        assert!(
            left <= ALLOWED,
            "heap still +{left} bytes (allowed {ALLOWED}) after {runs} janitor runs over {:?} ({:?}); after draining the epoch: +{}",
            start.elapsed(),
            buffer.janitor_stats(),
            {
                common::drain_epoch();
                mine() - before
            }
        );
    })
}

/// Sets fresh keys one at a time until one `set` allocates a slot array of at least
/// `min_bytes`: that set started a migration into it, and no write has helped it since.
/// Returns the keys set (0..n) and the new array's bytes.
fn set_until_a_migration_starts(set: impl Fn(u64), min_bytes: isize) -> (u64, isize) {
    for key in 0..10_000_000u64 {
        let before = heap();
        set(key);
        let grew = heap() - before;
        if grew >= min_bytes {
            return (key + 1, grew);
        }
    }
    panic!("no set allocated a slot array of {min_bytes} bytes");
}

/// The old slot array a migration into `new_array` bytes leaves: a table grows at least
/// twofold, so the old one is at most half of it (less the new one's chunk flags).
fn old_array_at_least(new_array: isize) -> isize {
    new_array / 2 - new_array / 16
}

#[test]
fn a_migration_writers_leave_behind_is_finished_by_janitor_runs() {
    isolated(|| {
        // Writers move a migration along a chunk per write; once they stop, only the
        // janitor's runs do. Until it ends, both slot arrays are held and lookups may visit
        // both. The migration here is one a single set started, with no write after it.
        let (map, _clock) = manual_map::<u64, u64>(ms(100), Duration::from_secs(3600));
        map.set(u64::MAX, 0); // registers this thread with the epoch
        map.run_janitor();
        let (keys, new_array) = set_until_a_migration_starts(|key| map.set(key, key), 256 * 1024);
        let started = heap();
        let mut runs = Vec::new();
        for _ in 0..100 {
            let run = map.run_janitor();
            runs.push(run);
            if !run.migrating && !run.sweeping {
                break;
            }
        }
        let freed = started - heap();
        println!(
            "a migration into {new_array} bytes of slots after {keys} sets: {} janitor runs, {freed} bytes freed",
            runs.len()
        );
        assert!(!runs.last().unwrap().migrating, "still migrating after {} runs", runs.len());
        let old_array = old_array_at_least(new_array);
        assert!(freed >= old_array, "{freed} bytes freed, the old slot array was at least {old_array}");
        assert_eq!(map.len(), keys as usize + 1);
        for key in 0..keys {
            assert_eq!(map.get(&key), Some(key), "key {key} lost in the migration");
        }
    })
}

#[test]
fn the_janitor_thread_finishes_a_migration_writers_leave_behind() {
    isolated(|| {
        // As above, on the real clock with the janitor thread (its tick 10 ms): the old
        // slot array is freed without any further call.
        let map = download_buffer::ExpiringMap::<u64, u64>::builder(ms(10), Duration::from_secs(3600))
            .build()
            .expect("valid settings");
        map.set(u64::MAX, 0);
        let (keys, new_array) = set_until_a_migration_starts(|key| map.set(key, key), 256 * 1024);
        let started = heap();
        let old_array = old_array_at_least(new_array);
        let start = Instant::now();
        while started - heap() < old_array && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(1));
        }
        let freed = started - heap();
        println!("janitor thread: {freed} bytes freed {:?} after the migration's start", start.elapsed());
        assert!(freed >= old_array, "{freed} bytes freed in 5 s, the old slot array was at least {old_array}");
        assert_eq!(map.len(), keys as usize + 1);
        for key in 0..keys {
            assert_eq!(map.get(&key), Some(key), "key {key} lost in the migration");
        }
    })
}
