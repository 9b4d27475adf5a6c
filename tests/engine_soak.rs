//! Exactly-once accounting for the lock-free engine ([`ExpiringMap`]) under stress with live
//! expiry: worker threads set, replace, get, delete and fetch_and_delete tracked values over
//! a small key space while a real janitor thread expires what they leave idle.
//!
//! Every value instance (each stored original and each clone handed out) has a serial
//! number; its `Drop` sets that serial's bit in a [`Ledger`], so a value dropped twice or
//! never shows up, and every value checks its own key and checksum, so a value returned for
//! another key, torn or freed early shows up too. `fetch_and_delete` must hand out each
//! stored original at most once.
//!
//! The janitor thread reads a [`ManualClock`] that a driver thread moves forward at about
//! real time (one wheel tick, 125 µs, per step of at least 100 µs) while the workers run.
//! Freezing it (stopping the driver) brings the map to rest with live entries: once the
//! janitor has swept what is due and has been stopped (`done`), `len()` must equal the
//! number of keys `get` finds. (With the system clock, entries would keep falling due after
//! `done`, and `len()` counts those until someone removes them.)
//!
//! `every_value_is_dropped_exactly_once_under_live_expiry` runs for 3 seconds; the ignored
//! soak variant runs the same body for `SOAK_SECS` seconds (default 300):
//!
//! ```text
//! SOAK_SECS=600 cargo test --release --test engine_soak -- --ignored --nocapture
//! ```

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use common::{drain_epoch, isolated, ms, wait_for, wait_for_janitor_runs, XorShift};
use download_buffer::{Builder, ExpiringMap, ManualClock};

/// A growable set of bits, allocated a chunk at a time as serials reach it.
struct Bits {
    chunks: Box<[OnceLock<Box<[AtomicU64]>>]>,
}

/// Bits per chunk (1 MiB chunks).
const CHUNK_BITS: u64 = 1 << 23;
/// At most 2^33 bits (1 GiB) per set.
const MAX_CHUNKS: usize = 1 << 10;
const CAPACITY: u64 = CHUNK_BITS * MAX_CHUNKS as u64;

impl Bits {
    fn new() -> Bits {
        Bits { chunks: (0..MAX_CHUNKS).map(|_| OnceLock::new()).collect() }
    }

    fn chunk(&self, bit: u64) -> &[AtomicU64] {
        self.chunks[(bit / CHUNK_BITS) as usize]
            .get_or_init(|| (0..CHUNK_BITS / 64).map(|_| AtomicU64::new(0)).collect())
    }

    /// Sets `bit`; returns whether it was set already.
    fn set(&self, bit: u64) -> bool {
        let mask = 1u64 << (bit % 64);
        let word = &self.chunk(bit)[((bit % CHUNK_BITS) / 64) as usize];
        word.fetch_or(mask, Ordering::SeqCst) & mask != 0
    }

    /// The bits below `end` that are clear: how many, and the first few.
    fn clear_below(&self, end: u64) -> (u64, Vec<u64>) {
        let (mut count, mut first) = (0u64, Vec::new());
        for start in (0..end).step_by(64) {
            let word = self.chunk(start)[((start % CHUNK_BITS) / 64) as usize].load(Ordering::SeqCst);
            let bits = (end - start).min(64);
            let wanted = if bits == 64 { u64::MAX } else { (1 << bits) - 1 };
            let clear = !word & wanted;
            count += u64::from(clear.count_ones());
            for bit in (0..64).filter(|bit| clear & (1 << bit) != 0) {
                if first.len() < 10 {
                    first.push(start + bit);
                }
            }
        }
        (count, first)
    }
}

/// Accounts for every [`Tracked`] instance.
struct Ledger {
    /// Serials handed out (instances created, originals and clones).
    next_serial: AtomicU64,
    /// Originals created (each `set` stores one).
    originals: AtomicU64,
    dropped: AtomicU64,
    /// One bit per instance serial: dropped.
    drops: Bits,
    /// One bit per original serial: handed out by a `fetch_and_delete`.
    fetched: Bits,
    double_drops: AtomicU64,
    double_fetches: AtomicU64,
    corrupt_drops: AtomicU64,
    /// Descriptions of the first problems seen by the workers and drops.
    problems: Mutex<Vec<String>>,
}

impl Ledger {
    fn new() -> Arc<Ledger> {
        Arc::new(Ledger {
            next_serial: AtomicU64::new(0),
            originals: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            drops: Bits::new(),
            fetched: Bits::new(),
            double_drops: AtomicU64::new(0),
            double_fetches: AtomicU64::new(0),
            corrupt_drops: AtomicU64::new(0),
            problems: Mutex::new(Vec::new()),
        })
    }

    fn serial(&self) -> u64 {
        let serial = self.next_serial.fetch_add(1, Ordering::SeqCst);
        assert!(serial < CAPACITY, "more than {CAPACITY} instances: raise MAX_CHUNKS");
        self.drops.chunk(serial); // allocated here, never inside a drop
        serial
    }

    fn report(&self, problem: String) {
        let mut problems = self.problems.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if problems.len() < 20 {
            problems.push(problem);
        }
    }

    /// A new original value for `key`.
    fn value(self: &Arc<Ledger>, key: u64, rng: &mut XorShift) -> Tracked {
        self.originals.fetch_add(1, Ordering::SeqCst);
        let serial = self.serial();
        self.fetched.chunk(serial);
        let bytes = (0..rng.below(48)).map(|_| rng.next_u64() as u8).collect::<Box<[u8]>>();
        let sum = checksum(key, serial, &bytes);
        Tracked { key, origin: serial, serial, bytes, sum, ledger: Arc::clone(self) }
    }

    /// Instances created and not dropped yet.
    fn live(&self) -> i64 {
        self.next_serial.load(Ordering::SeqCst) as i64 - self.dropped.load(Ordering::SeqCst) as i64
    }
}

/// FNV-1a over the key, the original's serial and the bytes.
fn checksum(key: u64, origin: u64, bytes: &[u8]) -> u64 {
    let mut sum = 0xcbf2_9ce4_8422_2325u64;
    for byte in key.to_le_bytes().iter().chain(&origin.to_le_bytes()).chain(bytes) {
        sum = (sum ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
    }
    sum
}

/// A value that knows its key and its original, checks itself, and reports its drop.
struct Tracked {
    key: u64,
    /// Serial of the original this is (a clone of).
    origin: u64,
    /// This instance's serial.
    serial: u64,
    bytes: Box<[u8]>,
    /// `checksum(key, origin, bytes)`.
    sum: u64,
    ledger: Arc<Ledger>,
}

impl Tracked {
    fn intact(&self) -> bool {
        checksum(self.key, self.origin, &self.bytes) == self.sum
    }

    /// Whether this value is intact and belongs to `key`; reports it otherwise.
    fn check(&self, key: u64, op: &str) -> bool {
        let ok = self.key == key && self.intact();
        if !ok {
            self.ledger.report(format!(
                "{op}({key}) returned a value of key {} (original #{}, instance #{}), intact: {}",
                self.key,
                self.origin,
                self.serial,
                self.intact()
            ));
        }
        ok
    }
}

impl Clone for Tracked {
    fn clone(&self) -> Tracked {
        Tracked {
            key: self.key,
            origin: self.origin,
            serial: self.ledger.serial(),
            bytes: self.bytes.clone(),
            sum: self.sum,
            ledger: Arc::clone(&self.ledger),
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        let ledger = &self.ledger;
        if !self.intact() {
            ledger.corrupt_drops.fetch_add(1, Ordering::SeqCst);
        }
        if ledger.drops.set(self.serial) {
            ledger.double_drops.fetch_add(1, Ordering::SeqCst);
            ledger.report(format!("instance #{} (original #{}) dropped twice", self.serial, self.origin));
        }
        ledger.dropped.fetch_add(1, Ordering::SeqCst);
    }
}

/// The map's tick and expiry, and its wheel's resolution (tick / 8).
const TICK: Duration = Duration::from_millis(1);
const EXPIRE: Duration = Duration::from_millis(5);
const WHEEL_TICK: Duration = Duration::from_micros(125);

/// Keys: a few hot ones (contention, replacement) and colder ones that sit idle long
/// enough to expire.
const HOT_KEYS: u64 = 16;
const KEYS: u64 = 4_096;

/// What the workers did.
#[derive(Debug, Default)]
struct Counts {
    ops: u64,
    sets: u64,
    gets_found: u64,
    deletes_found: u64,
    fetches_found: u64,
    bad_values: u64,
}

fn work(map: &ExpiringMap<u64, Tracked>, ledger: &Arc<Ledger>, seed: u64, stop: &AtomicBool) -> Counts {
    let mut rng = XorShift::new(seed);
    let mut counts = Counts::default();
    while !stop.load(Ordering::Relaxed) {
        let key = if rng.below(2) == 0 { rng.below(HOT_KEYS) } else { rng.below(KEYS) };
        match rng.below(10) {
            0..=2 => {
                map.set(key, ledger.value(key, &mut rng));
                counts.sets += 1;
            }
            3..=5 => {
                if let Some(value) = map.get(&key) {
                    counts.gets_found += 1;
                    counts.bad_values += u64::from(!value.check(key, "get"));
                }
            }
            6 => {
                counts.deletes_found += u64::from(map.delete(&key));
            }
            7 | 8 => {
                if let Some(value) = map.fetch_and_delete(&key) {
                    counts.fetches_found += 1;
                    counts.bad_values += u64::from(!value.check(key, "fetch_and_delete"));
                    if ledger.fetched.set(value.origin) {
                        ledger.double_fetches.fetch_add(1, Ordering::SeqCst);
                        ledger.report(format!(
                            "fetch_and_delete({key}) handed out original #{} a second time",
                            value.origin
                        ));
                    }
                }
            }
            _ => {
                // Replacement of a value seen present.
                if let Some(value) = map.get(&key) {
                    counts.gets_found += 1;
                    counts.bad_values += u64::from(!value.check(key, "get"));
                }
                map.set(key, ledger.value(key, &mut rng));
                counts.sets += 1;
            }
        }
        counts.ops += 1;
    }
    counts
}

/// Runs `threads` workers for `duration` on a map with a janitor thread (tick 1 ms, expire
/// 5 ms), brings it to rest, and checks the accounting.
fn soak(duration: Duration, threads: u64) {
    isolated(move || {
        let ledger = Ledger::new();
        let clock = ManualClock::new();
        let map: Arc<ExpiringMap<u64, Tracked>> =
            Arc::new(Builder::new(TICK, EXPIRE).clock(clock.clone()).build().expect("valid durations"));
        let stop_workers = Arc::new(AtomicBool::new(false));
        let stop_clock = Arc::new(AtomicBool::new(false));
        let driver = {
            let (clock, stop) = (clock.clone(), Arc::clone(&stop_clock));
            thread::spawn(move || {
                // One wheel tick (tick / 8) per step, at most one step per 100 µs: manual time
                // runs at about real time or slower, whatever the scheduling.
                let mut moved = Duration::ZERO;
                while !stop.load(Ordering::SeqCst) {
                    thread::sleep(Duration::from_micros(100));
                    clock.advance(WHEEL_TICK);
                    moved += WHEEL_TICK;
                }
                moved
            })
        };
        let start = Instant::now();
        let workers: Vec<_> = (0..threads)
            .map(|worker| {
                let (map, ledger, stop) = (Arc::clone(&map), Arc::clone(&ledger), Arc::clone(&stop_workers));
                thread::spawn(move || work(&map, &ledger, worker + 1, &stop))
            })
            .collect();
        thread::sleep(duration);
        stop_workers.store(true, Ordering::SeqCst);
        let mut counts = Counts::default();
        for worker in workers {
            let done = worker.join().expect("a worker panicked");
            counts.ops += done.ops;
            counts.sets += done.sets;
            counts.gets_found += done.gets_found;
            counts.deletes_found += done.deletes_found;
            counts.fetches_found += done.fetches_found;
            counts.bad_values += done.bad_values;
        }
        let worked = start.elapsed();

        // At rest: freeze the clock, let the janitor sweep what is due, then stop it.
        stop_clock.store(true, Ordering::SeqCst);
        let clock_moved = driver.join().expect("clock driver");
        wait_for_janitor_runs(&map, 5);
        let held = map.len();
        let mut found = 0;
        for key in 0..KEYS {
            if let Some(value) = map.get(&key) {
                found += 1;
                counts.bad_values += u64::from(!value.check(key, "get at rest"));
            }
        }
        // The end state of expiry: past expire + tick, the janitor has swept everything.
        clock.advance(ms(20));
        wait_for("every entry to expire", || map.is_empty());
        wait_for("the expiries to be counted", || map.janitor_stats().expired >= held as u64);
        // Entries held when the janitor stops stay held (no sweep) but are never returned
        // past their deadline (checked below), and the drop frees them.
        let mut rng = XorShift::new(u64::MAX);
        for key in 0..KEYS {
            map.set(key, ledger.value(key, &mut rng));
        }
        counts.sets += KEYS;
        map.done();
        let stats = map.janitor_stats();
        let held_again = map.len();
        // After done, `get` still honours deadlines, with no janitor to sweep.
        clock.advance(ms(20));
        let found_after_deadline = (0..KEYS).filter(|key| map.get(key).is_some()).count();
        assert_eq!(map.len(), KEYS as usize, "swept after done");

        let map = Arc::try_unwrap(map).unwrap_or_else(|_| panic!("the workers let go of the map"));
        drop(map);
        let live_after_drop = ledger.live();
        drain_epoch();
        let live_after_drain = ledger.live();

        let instances = ledger.next_serial.load(Ordering::SeqCst);
        let originals = ledger.originals.load(Ordering::SeqCst);
        println!(
            "soak: {threads} threads, {:.2} s of work ({:?} of manual time), {} ops ({:.0}/s): {} sets, \
             {} gets found, {} deletes found, {} fetches found; {originals} values created ({instances} \
             instances with clones); janitor: {} runs, {} expired, {} retired; at rest: len {held}, {found} \
             found by get; live instances right after drop {live_after_drop}, after an epoch drain \
             {live_after_drain}",
            worked.as_secs_f64(),
            clock_moved,
            counts.ops,
            counts.ops as f64 / worked.as_secs_f64(),
            counts.sets,
            counts.gets_found,
            counts.deletes_found,
            counts.fetches_found,
            stats.runs,
            stats.expired,
            stats.retired,
        );

        let problems = ledger.problems.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
        assert!(problems.is_empty(), "problems seen:\n{}", problems.join("\n"));
        assert_eq!(counts.bad_values, 0, "values returned for the wrong key or corrupted");
        assert_eq!(ledger.double_fetches.load(Ordering::SeqCst), 0, "a value handed out by two fetch_and_deletes");
        assert_eq!(ledger.double_drops.load(Ordering::SeqCst), 0, "values dropped twice");
        assert_eq!(ledger.corrupt_drops.load(Ordering::SeqCst), 0, "values corrupted when dropped");
        let (never, first) = ledger.drops.clear_below(instances);
        assert_eq!(never, 0, "of {instances} instances, {never} were never dropped (e.g. {first:?})");
        assert_eq!(live_after_drain, 0);
        assert_eq!(counts.sets, originals);
        assert_eq!(held_again, KEYS as usize, "the entries set before done");
        assert_eq!(held, found, "at rest, len() is {held} but get finds {found} keys");
        assert_eq!(found_after_deadline, 0, "entries returned past their deadline after done");
        assert!(stats.expired > 0, "the janitor thread expired nothing (expire = 5 ms)");
        assert!(counts.fetches_found > 0 && counts.deletes_found > 0 && counts.gets_found > 0);
    })
}

#[test]
fn every_value_is_dropped_exactly_once_under_live_expiry() {
    soak(Duration::from_secs(3), 6);
}

#[test]
#[ignore = "soak: runs for SOAK_SECS seconds (default 300)"]
fn soak_every_value_is_dropped_exactly_once_under_live_expiry() {
    let secs = std::env::var("SOAK_SECS").ok().map_or(300, |secs| secs.parse().expect("SOAK_SECS: whole seconds"));
    soak(Duration::from_secs(secs), 8);
}
