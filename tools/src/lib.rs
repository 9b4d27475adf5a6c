//! What the measurement tools share: the ids and the pseudo-random picks of their
//! workloads (the same shapes as `benches/buffer.rs`), the [`Store`] the workloads call
//! (both of ours, and the peers papaya and moka), the pipeline round, and the fixed-time
//! measuring loop.
//!
//! - `compare` (`cargo run --release -p download-buffer-tools --bin compare`): the compare
//!   report, fixed micro-workloads on lockfree and rwlock with a verdict per target.
//! - `scaling` (`--bin scaling`): throughput of get hits, the pipeline and a 90/10 mix at
//!   several thread counts.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use download_buffer::{Buffer, BufferId, Bytes, ChunkHandle};

/// The three calls of the chunkserver's data path, which the workloads make: every
/// [`Buffer`] is a store, and so are the peers ([`Papaya`], [`Moka`]).
pub trait Store: Send + Sync {
    fn set(&self, id: BufferId, data: Bytes);
    fn get(&self, id: &BufferId) -> Option<Bytes>;
    fn fetch_and_delete(&self, id: &BufferId) -> Option<Bytes>;
}

impl<B: Buffer + ?Sized> Store for B {
    fn set(&self, id: BufferId, data: Bytes) {
        Buffer::set(self, id, data)
    }
    fn get(&self, id: &BufferId) -> Option<Bytes> {
        Buffer::get(self, id)
    }
    fn fetch_and_delete(&self, id: &BufferId) -> Option<Bytes> {
        Buffer::fetch_and_delete(self, id).ok()
    }
}

/// papaya 0.2: a lock-free hash table, no expiry at all (what the engine's table is
/// measured against), with the hasher the buffers use.
pub struct Papaya(papaya::HashMap<BufferId, Bytes, ahash::RandomState>);

impl Papaya {
    pub fn new() -> Papaya {
        Papaya(papaya::HashMap::with_hasher(ahash::RandomState::new()))
    }
}

impl Default for Papaya {
    fn default() -> Papaya {
        Papaya::new()
    }
}

impl Store for Papaya {
    fn set(&self, id: BufferId, data: Bytes) {
        self.0.pin().insert(id, data);
    }
    fn get(&self, id: &BufferId) -> Option<Bytes> {
        self.0.pin().get(id).cloned()
    }
    fn fetch_and_delete(&self, id: &BufferId) -> Option<Bytes> {
        self.0.pin().remove(id).cloned()
    }
}

/// moka 0.12 with time-to-idle `expire`: the concurrent cache with expiry (its
/// housekeeping runs on the callers' threads), with the hasher the buffers use.
pub struct Moka(moka::sync::Cache<BufferId, Bytes, ahash::RandomState>);

impl Moka {
    pub fn new(expire: Duration) -> Moka {
        Moka(moka::sync::Cache::builder().time_to_idle(expire).build_with_hasher(ahash::RandomState::new()))
    }
}

impl Store for Moka {
    fn set(&self, id: BufferId, data: Bytes) {
        self.0.insert(id, data);
    }
    fn get(&self, id: &BufferId) -> Option<Bytes> {
        self.0.get(id)
    }
    fn fetch_and_delete(&self, id: &BufferId) -> Option<Bytes> {
        self.0.remove(id)
    }
}

/// The id of resident entry `n` (or of pipeline round `n`), made without a clock read or
/// global state: `BufferId::new` takes a process-wide CAS, which would measure the id maker
/// rather than the buffer.
pub fn key(n: u64) -> BufferId {
    BufferId { handle: ChunkHandle(n as i64), timestamp: (n as i64).wrapping_mul(0x9E37_79B9) }
}

/// A cheap per-thread pseudo-random pick in `0..resident`, so that lookups miss the cache as
/// a server's would rather than walking memory in order.
pub fn pick(thread: u64, i: u64, resident: u64) -> u64 {
    let mut x = (thread + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ i.wrapping_mul(0xD1B5_4A32_D192_ED03);
    x ^= x >> 31;
    x = x.wrapping_mul(0x94D0_49BB_1331_11EB);
    (x ^ (x >> 29)) % resident
}

/// Parses a whole number from 1 to `max` given to `flag`.
pub fn parse_count(flag: &str, value: &str, max: u64) -> Result<u64, String> {
    match value.parse::<u64>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        Ok(0) => Err(format!("{flag}: must be at least 1")),
        Ok(_) => Err(format!("{flag}: {value} is too large (at most {max})")),
        Err(_) => Err(format!("{flag}: '{value}' is not a whole number")),
    }
}

/// Parses a positive number of seconds, at most `max`; decimals allowed.
pub fn parse_seconds(flag: &str, value: &str, max: f64) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(seconds) if seconds > 0.0 && seconds <= max => Ok(seconds),
        Ok(_) => Err(format!("{flag}: {value} is out of range (above 0, at most {max})")),
        Err(_) => Err(format!("{flag}: '{value}' is not a number of seconds")),
    }
}

/// The next flag's value as UTF-8 text.
pub fn value(parser: &mut lexopt::Parser, flag: &str) -> Result<String, String> {
    let value = parser.value().map_err(|error| error.to_string())?;
    value.into_string().map_err(|value| format!("{flag}: {value:?} is not valid UTF-8"))
}

/// Most calls between two clock reads in a throughput loop: the read then costs under 1% of
/// the cheapest call measured.
pub const MAX_BATCH: u32 = 64;
/// A batch that takes longer than this halves the next one (down to a single call), so that
/// starved calls (rwlock's gets while its janitor scans 1 M entries back to back take
/// milliseconds each) overrun a measurement by one call at most, not by a whole batch.
pub const BATCH_SPAN: Duration = Duration::from_micros(50);

/// One pipelined write: set, get, get, fetch_and_delete (4 calls); every call must find
/// the entry.
pub fn pipeline_round<S: Store + ?Sized>(store: &S, id: BufferId, payload: &Bytes, failures: &Failures) -> u64 {
    store.set(id, payload.clone());
    let first = store.get(&id);
    let second = store.get(&id);
    let fetched = store.fetch_and_delete(&id);
    if first.is_none() || second.is_none() || fetched.is_none() {
        failures.add();
    }
    4
}

/// Failed checks during one measurement; counted only on failure, so the shared counter's
/// cache line is never written on the measured path.
#[derive(Default)]
pub struct Failures(AtomicU64);

impl Failures {
    pub fn add(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn report(&self, problems: &mut Vec<String>, name: &str, what: &str, noun: &str) {
        let count = self.0.load(Ordering::Relaxed);
        if count != 0 {
            problems.push(format!("{name}: {what}: {count} {noun}"));
        }
    }
}

const WAIT: u8 = 0;
const GO: u8 = 1;
const ABORT: u8 = 2;

/// Runs `op(thread, i)` on `threads` threads at once for `seconds`; returns calls per second
/// over all threads (the sum of each thread's rate: they start together and run equally long).
pub fn measure(threads: usize, seconds: f64, op: impl Fn(u64, u64) -> u64 + Sync) -> Result<f64, String> {
    let duration = Duration::from_secs_f64(seconds);
    // Not a `Barrier`: if a thread cannot be spawned, those already waiting must be released.
    let start = AtomicU8::new(WAIT);
    thread::scope(|scope| {
        let mut handles = Vec::with_capacity(threads);
        for thread in 0..threads {
            let (start, op) = (&start, &op);
            let spawned = thread::Builder::new().name(format!("compare-{thread}")).spawn_scoped(scope, move || {
                if !wait_for_start(start) {
                    return 0.0;
                }
                run_for(duration, |i| op(thread as u64, i))
            });
            match spawned {
                Ok(handle) => handles.push(handle),
                Err(error) => {
                    start.store(ABORT, Ordering::Release);
                    return Err(format!("cannot start measuring thread {thread}: {error}"));
                }
            }
        }
        start.store(GO, Ordering::Release);
        let mut total = 0.0;
        for handle in handles {
            total += handle.join().map_err(|_| String::from("a measuring thread panicked"))?;
        }
        Ok(total)
    })
}

/// Spins (yielding) until the start signal; whether it is a go.
fn wait_for_start(start: &AtomicU8) -> bool {
    loop {
        match start.load(Ordering::Acquire) {
            WAIT => thread::yield_now(),
            state => return state == GO,
        }
    }
}

/// Calls `op(i)` for i = 0, 1, 2, ... for `duration`; returns the calls `op` reports per
/// second. The clock is read once per batch of calls: up to `MAX_BATCH` while batches are
/// quick, fewer when calls are slow (see [`BATCH_SPAN`]).
pub fn run_for(duration: Duration, mut op: impl FnMut(u64) -> u64) -> f64 {
    let start = Instant::now();
    let (mut calls, mut i, mut batch, mut batch_start) = (0u64, 0u64, 1u32, start);
    loop {
        for _ in 0..batch {
            calls += op(i);
            i += 1;
        }
        let now = Instant::now();
        let elapsed = now.duration_since(start);
        if elapsed >= duration {
            return calls as f64 / elapsed.as_secs_f64();
        }
        batch =
            if now.duration_since(batch_start) < BATCH_SPAN { (batch * 2).min(MAX_BATCH) } else { (batch / 2).max(1) };
        batch_start = now;
    }
}
