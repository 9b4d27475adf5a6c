//! Helpers shared by the engine's integration tests (`tests/engine_*.rs`).
//!
//! Each test binary uses only some of them.
#![allow(dead_code)]

use std::hash::{BuildHasher, Hash};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use download_buffer::{Builder, DownloadBuffer, ExpiringMap, ManualClock};

/// `n` milliseconds.
pub const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A map in manual mode (no janitor thread) on a fresh [`ManualClock`] standing at zero.
pub fn manual_map<K, V>(tick: Duration, expire: Duration) -> (ExpiringMap<K, V>, ManualClock)
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    manual_map_with_budget(tick, expire, download_buffer::DEFAULT_JANITOR_BUDGET)
}

/// As [`manual_map`], with a janitor budget of `budget` due timers per run.
pub fn manual_map_with_budget<K, V>(tick: Duration, expire: Duration, budget: usize) -> (ExpiringMap<K, V>, ManualClock)
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    let clock = ManualClock::new();
    let map = Builder::new(tick, expire)
        .clock(clock.clone())
        .manual()
        .janitor_budget(budget)
        .build()
        .expect("valid durations");
    (map, clock)
}

/// As [`manual_map`], hashing keys with `hasher`.
pub fn manual_map_with_hasher<K, V, S>(
    tick: Duration,
    expire: Duration,
    hasher: S,
) -> (ExpiringMap<K, V, S>, ManualClock)
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    let clock = ManualClock::new();
    let map = Builder::new(tick, expire).clock(clock.clone()).manual().hasher(hasher).build().expect("valid durations");
    (map, clock)
}

/// A [`DownloadBuffer`] in manual mode on a fresh [`ManualClock`].
pub fn manual_buffer(tick: Duration, expire: Duration) -> (DownloadBuffer, ManualClock) {
    let clock = ManualClock::new();
    let buffer = DownloadBuffer::builder(tick, expire).clock(clock.clone()).manual().build().expect("valid durations");
    (buffer, clock)
}

/// A tiny xorshift64* generator: deterministic per seed, no dependencies.
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> XorShift {
        XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform-ish in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// Runs `body` alone and on a fresh thread, and returns what it returns (or resumes its panic).
///
/// For tests that measure something process-wide (heap bytes, live values) or rely on the
/// epoch advancing promptly: the tests of a binary that use it run one at a time, and
/// before `body` starts the process's epoch queue is emptied. A thread pinned in the epoch
/// holds back every reclamation in the process; the test harness's threads finish their
/// exit (crossbeam-epoch pins once more to hand over the thread's garbage) after the next
/// test may have started, so a test body that ran on the harness thread could be held up by
/// the previous one. A thread spawned here is joined, exit included, before the next test
/// runs, and the harness threads never touch the epoch.
pub fn isolated<R: Send + 'static>(body: impl FnOnce() -> R + Send + 'static) -> R {
    let _serial = serial();
    let worker = std::thread::spawn(move || {
        drain_epoch();
        body()
    });
    match worker.join() {
        Ok(result) => result,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Pushes the epoch until everything queued for reclamation before the call has run (the
/// global queue is first in, first out: a sentinel deferred now runs after all of it).
pub fn drain_epoch() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let drained = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&drained);
    crossbeam_epoch::pin().defer(move || flag.store(true, Ordering::SeqCst));
    for _ in 0..10_000_000 {
        if drained.load(Ordering::SeqCst) {
            return;
        }
        crossbeam_epoch::pin().flush();
    }
    panic!("the epoch queue did not drain");
}

/// Serializes the tests of one binary that measure something process-wide (heap bytes,
/// live values, the epoch). A test that failed while holding it does not poison the rest.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Polls `done` every millisecond; fails after 10 s, naming `what` it waited for.
pub fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(start.elapsed() < Duration::from_secs(10), "timed out waiting for {what}");
        std::thread::sleep(ms(1));
    }
}

/// Waits until `map`'s janitor thread has completed `n` more runs.
pub fn wait_for_janitor_runs<K, V, S>(map: &ExpiringMap<K, V, S>, n: u64)
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    let target = map.janitor_stats().runs + n;
    wait_for("janitor runs (has the janitor thread stopped?)", || map.janitor_stats().runs >= target);
}

/// The ids of this process's threads named like the engine's janitor thread (`comm` keeps
/// 15 bytes of "download-buffer-janitor"). One serves every map while any is registered;
/// it ends a second after the last one is dropped.
pub fn janitor_threads() -> Vec<u64> {
    let mut ids = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").into_iter().flatten().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() == "download-buffer" {
            ids.extend(task.file_name().to_str().and_then(|id| id.parse::<u64>().ok()));
        }
    }
    ids
}
