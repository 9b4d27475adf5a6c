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
pub fn manual_map_with_hasher<K, V, S>(tick: Duration, expire: Duration, hasher: S) -> (ExpiringMap<K, V, S>, ManualClock)
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
    let buffer =
        DownloadBuffer::builder(tick, expire).clock(clock.clone()).manual().build_download_buffer().expect("valid durations");
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

/// Serializes the tests of one binary that measure something process-wide (heap bytes,
/// live values, the epoch). A test that failed while holding it does not poison the rest.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
