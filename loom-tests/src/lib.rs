//! Loom models of the `download-buffer` engine live in `tests/`, one model per test binary
//! (a failing model aborts its whole binary). They only build under the loom cfg:
//!
//! ```text
//! RUSTFLAGS="--cfg crossbeam_loom" CARGO_TARGET_DIR=target/loom \
//!     LOOM_MAX_PREEMPTIONS=2 cargo test -p loom-tests --release
//! ```
//!
//! Helpers shared by the models are here.

#![cfg(crossbeam_loom)]

use std::collections::hash_map::DefaultHasher;
use std::hash::BuildHasherDefault;
use std::time::Duration;

use download_buffer::{Builder, ExpiringMap, ManualClock};

/// A fixed hasher: loom replays executions, so hashing must not change between them
/// (ahash's default seeds are random per map).
pub type FixedHasher = BuildHasherDefault<DefaultHasher>;

/// The map every model uses.
pub type Map<V> = ExpiringMap<u64, V, FixedHasher>;

/// A manual-mode map with a tiny table (2 buckets, so a few inserts force growth) and the
/// janitor driven by hand: what every model starts from.
pub fn small_map<V: Clone + Send + Sync + 'static>() -> (Map<V>, ManualClock) {
    let clock = ManualClock::new();
    let map = Builder::new(Duration::from_millis(100), Duration::from_secs(1))
        .clock(clock.clone())
        .manual()
        .initial_capacity(2)
        .hasher(FixedHasher::default())
        .build()
        .expect("valid durations");
    (map, clock)
}
