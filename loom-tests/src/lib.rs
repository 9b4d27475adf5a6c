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

use download_buffer::{Builder, Clock, ExpiringMap, ManualClock};

/// A fixed hasher: loom replays executions, so hashing must not change between them
/// (ahash's default seeds are random per map).
pub type FixedHasher = BuildHasherDefault<DefaultHasher>;

/// The map every model uses.
pub type Map<V> = ExpiringMap<u64, V, FixedHasher>;

/// What every model starts from: manual mode (the janitor driven by hand) on `clock`, a tiny
/// table (2 buckets, so a few inserts force growth), a fixed hasher, tick 100 ms, expire 1 s.
fn builder<V>(clock: impl Clock) -> Builder<u64, V, FixedHasher> {
    Builder::new(Duration::from_millis(100), Duration::from_secs(1))
        .clock(clock)
        .manual()
        .initial_capacity(2)
        .hasher(FixedHasher::default())
}

/// A clock loom sees: its time is a loom atomic, so a model explores every order of a
/// thread's clock read against another thread's `advance` (a `ManualClock` is a std
/// atomic, whose reads loom does not schedule).
#[derive(Clone, Default)]
pub struct LoomClock(Arc<AtomicU64>);

impl Clock for LoomClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.0.load(Ordering::SeqCst))
    }
}

impl LoomClock {
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_nanos() as u64, Ordering::SeqCst);
    }
}

/// A small manual-mode map (see [`builder`]) on a [`LoomClock`], for models that race a
/// clock read against the clock moving.
pub fn raced_map<V: Clone + Send + Sync + 'static>() -> (Map<V>, LoomClock) {
    let clock = LoomClock::default();
    let map = builder(clock.clone()).build().expect("valid durations");
    (map, clock)
}

/// A small manual-mode map (see [`builder`]) whose values weigh what they say, under a
/// byte budget of `max_bytes`.
pub fn budgeted_map(max_bytes: usize) -> Map<u64> {
    builder(ManualClock::new())
        .weigher(|weight: &u64| *weight as usize)
        .max_bytes(max_bytes)
        .build()
        .expect("valid durations")
}

/// A small manual-mode map (see [`builder`]) and its clock.
pub fn small_map<V: Clone + Send + Sync + 'static>() -> (Map<V>, ManualClock) {
    let clock = ManualClock::new();
    let map = builder(clock.clone()).build().expect("valid durations");
    (map, clock)
}

use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use loom::sync::Arc;

/// Counts how many [`Tracked`] values were made (originals and clones) and dropped.
#[derive(Default)]
pub struct Counts {
    made: AtomicUsize,
    dropped: AtomicUsize,
}

impl Counts {
    /// Values alive now.
    pub fn alive(&self) -> usize {
        let (made, dropped) = (self.made.load(Ordering::SeqCst), self.dropped.load(Ordering::SeqCst));
        assert!(dropped <= made, "{dropped} drops of {made} values");
        made - dropped
    }
}

/// A payload loom can see: its bytes live in a loom `UnsafeCell`, read by `clone` and
/// written by `drop`, so a clone racing a drop (a use after free in the engine) is a
/// causality violation loom reports, and a clone after the drop reads the poison. A value
/// moved out of an entry (a remover's take) is a bitwise copy: it shares loom's tracking of
/// the cell with the bits left behind (so a read of those racing the move's drop is still a
/// causality violation), but its poison is its own; a second drop of the bits left behind
/// shows in [`Counts::alive`] (more drops than values).
pub struct Tracked {
    payload: UnsafeCell<u64>,
    counts: Arc<Counts>,
}

// SAFETY: the cell is written only in `drop` (which has `&mut self`) and read by `clone`;
// a read racing the drop is exactly the engine bug these models look for, and loom
// reports it as a causality violation.
unsafe impl Sync for Tracked {}

const POISON: u64 = 0xDEAD;

impl Tracked {
    pub fn new(value: u64, counts: &Arc<Counts>) -> Tracked {
        counts.made.fetch_add(1, Ordering::SeqCst);
        let payload = UnsafeCell::new(POISON);
        // A tracked write: a reader on another thread that sees this value without a
        // happens-before edge to here (an entry published without Release) is a causality
        // violation for loom.
        payload.with_mut(|p| unsafe { *p = value });
        Tracked { payload, counts: Arc::clone(counts) }
    }

    pub fn value(&self) -> u64 {
        let value = self.payload.with(|p| unsafe { *p });
        assert_ne!(value, POISON, "read a dropped value");
        value
    }
}

impl Clone for Tracked {
    fn clone(&self) -> Tracked {
        Tracked::new(self.value(), &self.counts)
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.payload.with_mut(|p| unsafe {
            assert_ne!(*p, POISON, "value dropped twice");
            *p = POISON;
        });
        self.counts.dropped.fetch_add(1, Ordering::SeqCst);
    }
}

impl std::fmt::Debug for Tracked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tracked({})", self.value())
    }
}

/// A map of [`Tracked`] values, every one leased (docs/design.md, section 6, *Leases*): a
/// remover takes a value no reader is in and drops it at once; one a reader was in waits
/// for the epoch, its unlinker flushing its bag. So reclamation really runs inside small
/// models, both ways.
pub fn tracked_map() -> (Map<Tracked>, ManualClock, Arc<Counts>) {
    let clock = ManualClock::new();
    let map = builder(clock.clone()).eager_release(|_| true).build().expect("valid durations");
    (map, clock, Arc::new(Counts::default()))
}

/// [`tracked_map`] on a [`LoomClock`].
pub fn raced_tracked_map() -> (Map<Tracked>, LoomClock, Arc<Counts>) {
    let clock = LoomClock::default();
    let map = builder(clock.clone()).eager_release(|_| true).build().expect("valid durations");
    (map, clock, Arc::new(Counts::default()))
}

/// [`raced_tracked_map`] with an expiry listener that reads each expired value it is lent
/// (and keeps the sum of what it read): a value the janitor lends that someone else took
/// or dropped shows up as a read of the poison or a causality violation.
pub fn raced_tracked_map_with_listener() -> (Map<Tracked>, LoomClock, Arc<Counts>, Arc<AtomicU64>) {
    let clock = LoomClock::default();
    let heard = Arc::new(AtomicU64::new(0));
    let listener_heard = Arc::clone(&heard);
    let map = builder(clock.clone())
        .eager_release(|_| true)
        .on_expire(move |_, value: &Tracked| {
            listener_heard.fetch_add(value.value(), Ordering::SeqCst);
        })
        .build()
        .expect("valid durations");
    (map, clock, Arc::new(Counts::default()), heard)
}

/// Pushes the epoch on so that deferred drops run (each flush may advance it once).
pub fn flush_epoch() {
    for _ in 0..3 {
        crossbeam_epoch::pin().flush();
    }
}

/// Runs deferred drops at the end of a model: flushes the epoch until every value is
/// dropped, or a bound is reached. Leaks are not asserted: under loom, crossbeam-epoch's
/// collector can stall (in some executions its participant list iteration gives up), so a
/// deferred drop may not have run by then. Dropped twice is always caught (`Tracked`'s
/// poison), and a use after free is a causality violation.
pub fn collect_garbage(counts: &Counts) {
    for _ in 0..4 {
        if counts.alive() == 0 {
            return;
        }
        flush_epoch();
    }
}

/// Wheel ticks are an eighth of the 100 ms tick; expire 1 s is 80 of them, so an entry set
/// at time 0 has deadline 80 wheel ticks (1 s): dead once the clock reads 1 s.
pub const WHEEL_TICK: Duration = Duration::from_micros(12_500);
pub const DEADLINE_TICKS: u32 = 80;
