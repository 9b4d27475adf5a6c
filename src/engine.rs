//! [`ExpiringMap`]: the lock-free engine, generic over key, value and hasher.
//!
//! A split-ordered hash table ([`crate::table`]) holds the entries; each entry carries an
//! atomic `life` word ([`crate::life`]) with its deadline in wheel ticks. Every call reads
//! the clock itself: a hit extends the deadline with one CAS on that word, and only when
//! it would move by at least one tick; an entry past its deadline is never returned,
//! whatever the janitor is doing. The janitor ([`crate::janitor`]) owns a hierarchical
//! timing wheel, hears of new and removed entries through striped intakes, and removes
//! what is due. See `docs/design.md` for the invariants and the proofs.

use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::time::Duration;

use crate::clock::{Clock, SystemClock, TimeScale, TimeSource};
use crate::error::require_nonzero;
use crate::intake::Intake;
use crate::janitor::{Janitor, JanitorRun, JanitorStats, Parts};
use crate::life::{Life, Touch};
use crate::reclaim::release_janitor_hold;
use crate::sync::{epoch, Arc, AtomicBool, Ordering};
use crate::table::{new_entry, Table};
use crate::ticker::{Next, Ticker};
use crate::wheel::levels_for;
use crate::Error;

/// Entries a janitor run expires or re-files at most, by default; the rest waits for the
/// next run, so a mass expiry never turns into one long run.
pub const DEFAULT_JANITOR_BUDGET: usize = 1 << 18;

/// The longest the janitor thread leaves its intakes untaken, even when the wheel ticks
/// more slowly (every 1.875 s at the chunkserver's 15 s tick): a removed entry's shell is
/// freed only once the janitor has taken it, so this bounds the shells a burst of removals
/// after a quiet spell can pile up. A run with nothing due and empty intakes costs well
/// under a microsecond. Busy intakes make it run every [`HURRY`](crate::ticker::HURRY).
const MAX_INTAKE_WAIT: Duration = Duration::from_millis(100);

/// A lock-free concurrent map whose entries expire when idle, with a timing-wheel janitor.
///
/// Same contract as [`Buffer`](crate::Buffer) (see there), for any key and value:
/// [`set`](Self::set), [`get`](Self::get), [`delete`](Self::delete),
/// [`fetch_and_delete`](Self::fetch_and_delete) and [`len`](Self::len) take no lock, never
/// wait for the janitor, and `get` never allocates (beyond what `V::clone` does).
///
/// Every call reads the map's clock: an entry is visible for at least `expire` after the
/// start of its last `set` or hit, and never more than `expire + tick/8` after the end of
/// it, whatever the janitor is doing (see [`Buffer`](crate::Buffer) for the whole contract).
///
/// The janitor thread runs every wheel tick (an eighth of `tick`), and at least every
/// 100 ms whatever the tick, every 10 ms while removals are busy, and back to back while a
/// mass expiry lasts (each run stops after about a wheel tick of work, 1 to 10 ms): a
/// removed entry's value is released right after removal, but its ~100-byte shell waits
/// until the janitor has taken it. Idle, that is ten runs a second of well under a
/// microsecond each.
///
/// ```
/// use std::time::Duration;
/// use download_buffer::{Builder, ExpiringMap, ManualClock};
///
/// // Manual mode: no janitor thread; time moves when the clock is told to.
/// let clock = ManualClock::new();
/// let map: ExpiringMap<u64, String> = Builder::new(Duration::from_secs(1), Duration::from_secs(10))
///     .clock(clock.clone())
///     .manual()
///     .build()?;
/// map.set(7, "seven".to_string());
/// clock.advance(Duration::from_secs(5));
/// map.run_janitor();
/// assert_eq!(map.get(&7).as_deref(), Some("seven")); // the get extends its life
/// clock.advance(Duration::from_secs(12));
/// map.run_janitor();
/// assert_eq!(map.get(&7), None);
/// assert!(map.is_empty());
/// # Ok::<(), download_buffer::Error>(())
/// ```
pub struct ExpiringMap<K, V, S = ahash::RandomState> {
    /// Stopped (and joined) before `core` is released.
    ticker: Option<Ticker>,
    core: Arc<Core<K, V, S>>,
}

/// Everything the callers and the janitor thread share.
struct Core<K, V, S> {
    table: Table<K, V, S>,
    /// New entries, for the janitor to file.
    fresh: Intake<K, V>,
    janitor: Janitor<K, V>,
    scale: TimeScale,
    /// Read by every call that dates or judges an entry, and by the janitor.
    clock: TimeSource,
}

/// Configures an [`ExpiringMap`]: clock, manual mode, capacity, janitor budget, hasher.
pub struct Builder<S = ahash::RandomState> {
    tick: Duration,
    expire: Duration,
    clock: Option<TimeSource>,
    manual: bool,
    capacity: usize,
    budget: usize,
    hasher: S,
}

impl Builder {
    /// A builder for a map whose janitor runs every `tick` and drops entries idle for `expire`.
    pub fn new(tick: Duration, expire: Duration) -> Builder {
        Builder {
            tick,
            expire,
            clock: None,
            manual: false,
            capacity: 0,
            budget: DEFAULT_JANITOR_BUDGET,
            hasher: ahash::RandomState::new(),
        }
    }
}

impl<S> Builder<S> {
    /// Reads time from `clock` instead of a new [`SystemClock`](crate::SystemClock) (a
    /// `SystemClock` given here keeps the fast path: no virtual call per read).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Some(TimeSource::of(clock));
        self
    }

    /// Manual mode: no janitor thread. Expired entries are removed when the embedder calls
    /// [`ExpiringMap::run_janitor`] (from its own event loop, or a test after moving a
    /// [`ManualClock`](crate::ManualClock)). Deadlines do not depend on it: every call
    /// reads the clock, so an entry is invisible from its deadline on whether or not a run
    /// has removed it.
    pub fn manual(mut self) -> Self {
        self.manual = true;
        self
    }

    /// Sizes the bucket directory for `entries` up front (the table grows on its own anyway).
    pub fn initial_capacity(mut self, entries: usize) -> Self {
        self.capacity = entries;
        self
    }

    /// At most `entries` due timers handled per janitor run (at least 1); the rest waits
    /// for the next run.
    pub fn janitor_budget(mut self, entries: usize) -> Self {
        self.budget = entries.max(1);
        self
    }

    /// Hashes keys with `hasher` instead of ahash.
    pub fn hasher<S2>(self, hasher: S2) -> Builder<S2> {
        Builder {
            tick: self.tick,
            expire: self.expire,
            clock: self.clock,
            manual: self.manual,
            capacity: self.capacity,
            budget: self.budget,
            hasher,
        }
    }

    /// Builds the map. Errors with [`Error::ZeroDuration`] naming `tick` or `expire` when
    /// either is zero.
    pub fn build<K, V>(self) -> Result<ExpiringMap<K, V, S>, Error>
    where
        K: Hash + Eq + Send + Sync + 'static,
        V: Clone + Send + Sync + 'static,
        S: BuildHasher + Send + Sync + 'static,
    {
        self.build_with_eager_release(|_| false)
    }

    /// Builds the map; a removed value for which `is_large` returns true is freed within
    /// one epoch advance (the removing thread flushes its epoch bag, which costs a few
    /// hundred nanoseconds), where other values wait until 64 more removals on that
    /// thread fill the bag. Worth it for large payloads: [`DownloadBuffer`] flushes for
    /// values of 16 KiB and more.
    ///
    /// [`DownloadBuffer`]: crate::DownloadBuffer
    pub fn build_with_eager_release<K, V>(self, is_large: fn(&V) -> bool) -> Result<ExpiringMap<K, V, S>, Error>
    where
        K: Hash + Eq + Send + Sync + 'static,
        V: Clone + Send + Sync + 'static,
        S: BuildHasher + Send + Sync + 'static,
    {
        require_nonzero("tick", self.tick)?;
        require_nonzero("expire", self.expire)?;
        let scale = TimeScale::new(self.tick, self.expire);
        let clock = self.clock.unwrap_or_else(|| TimeSource::System(SystemClock::new()));
        let now = scale.ticks(clock.now());
        let buckets = self.capacity / 2;
        let core = Arc::new(Core {
            table: Table::new(buckets, self.hasher, is_large),
            fresh: Intake::new(),
            // A touch's deadline lies at most `expire + 1` ticks (one for rounding up) past
            // the tick it read; one more for the wheel lagging behind the clock. Later ones
            // go to the overflow list and come back when it turns.
            janitor: Janitor::new(levels_for(scale.expire_ticks.saturating_add(2)), now, self.budget),
            scale,
            clock,
        });
        let ticker = if self.manual {
            None
        } else {
            let resolution = Duration::from_nanos(scale.resolution_nanos);
            let janitor = Arc::clone(&core);
            Some(Ticker::spawn("download-buffer-janitor", resolution.min(MAX_INTAKE_WAIT), move || {
                // A panic from user code (a key's `Eq`, a custom clock) must not end expiry
                // for good: contain it; the run's try-lock is released on unwind.
                match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| janitor.run_janitor())) {
                    Ok(run) => run.next(),
                    Err(_) => Next::OnTick,
                }
            }))
        };
        Ok(ExpiringMap { ticker, core })
    }
}

impl<K, V> ExpiringMap<K, V, ahash::RandomState>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// A map whose janitor thread runs every `tick` and drops entries idle for `expire`.
    ///
    /// Errors with [`Error::ZeroDuration`] naming `tick` or `expire` when either is zero.
    pub fn new(tick: Duration, expire: Duration) -> Result<Self, Error> {
        Builder::new(tick, expire).build()
    }
}

impl<K, V, S> ExpiringMap<K, V, S>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    /// Stores `value` under `key`, replacing any previous value, and resets the entry's life.
    pub fn set(&self, key: K, value: V) {
        self.core.set(key, value)
    }

    /// A clone of the value under `key` if it is live; extends the entry's life.
    pub fn get(&self, key: &K) -> Option<V> {
        self.core.get(key)
    }

    /// Removes the entry under `key`, if any. Returns whether this call removed a live one.
    pub fn delete(&self, key: &K) -> bool {
        self.core.delete(key)
    }

    /// Removes the entry under `key` and returns its value; of racing callers exactly one
    /// gets it. `None` when the key is missing or expired.
    pub fn fetch_and_delete(&self, key: &K) -> Option<V> {
        self.core.fetch_and_delete(key)
    }

    /// The number of entries held (live ones plus expired ones the janitor has not
    /// removed yet). Exact when no call runs concurrently; under concurrent updates it is
    /// never more than the map held at some instant of the call, and may be lower by the
    /// updates that ran meanwhile.
    pub fn len(&self) -> usize {
        self.core.table.len()
    }

    /// Whether [`len`](Self::len) is zero.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stops and joins the janitor; idempotent and safe from any thread. The map keeps
    /// serving every call afterwards, without expiry sweeps; `get` and
    /// `fetch_and_delete` still never return an entry past its deadline.
    pub fn done(&self) {
        // The shutdown sequence: the thread first, then the janitor's own (`Janitor::stop`).
        if let Some(ticker) = &self.ticker {
            ticker.stop();
        }
        self.core.janitor.stop(&self.core.parts());
    }

    /// Runs the janitor once, now: reads the clock, takes the intakes, expires what is due
    /// (up to the budget). Manual-mode embedders call this from their event loop; with a
    /// janitor thread it is harmless (a run already in progress makes this one a no-op).
    pub fn run_janitor(&self) -> JanitorRun {
        self.core.run_janitor()
    }

    /// Counters over the janitor's life.
    pub fn janitor_stats(&self) -> JanitorStats {
        self.core.janitor.stats()
    }
}

impl<K, V, S> Core<K, V, S>
where
    K: Hash + Eq,
    V: Clone,
    S: BuildHasher,
{
    /// The time, in nanoseconds of the map's clock.
    #[inline]
    fn now(&self) -> u64 {
        self.clock.now()
    }

    fn parts(&self) -> Parts<'_, K, V, S> {
        Parts { table: &self.table, fresh: &self.fresh, clock: &self.clock, scale: &self.scale }
    }

    /// Dates a new entry by the clock and links it; a replaced entry's deadline is handed
    /// down to it (docs/design.md, "Replacing"), so that a touch of the old entry, however it
    /// raced this set, is never lost.
    fn set(&self, key: K, value: V) {
        // The clock first: a custom clock that panics leaves nothing half done.
        let deadline = self.scale.deadline_after_touch(self.now());
        let guard = epoch::pin();
        let hash = self.table.hash(&key);
        // Once the janitor is gone, nobody takes entries from the intake: they count as
        // taken already, so their unlinker retires them (see `Table::unlink`).
        let janitor_gone = self.table.janitor_gone();
        let entry = new_entry(key, value, hash, Life::new(deadline, janitor_gone));
        // SAFETY: a fresh `Box::into_raw` entry, unpublished, keyed with `self.table`'s hash.
        let _replaced = unsafe { self.table.insert(entry, &guard) };
        if !janitor_gone {
            // SAFETY: alive: an entry is freed only after its janitor side lets go, which for
            // an untaken entry happens only when the janitor takes it from this intake
            // (docs/design.md, "Reclamation"); and it is on no intake yet.
            unsafe { self.fresh.push(entry) };
        }
    }

    fn get(&self, key: &K) -> Option<V> {
        // The time first: read before the lookup, the counter's latency overlaps the
        // lookup's cache misses (read after it, a get over 1 M entries took ~40 ns more).
        let now = self.now();
        let guard = epoch::pin();
        let hash = self.table.hash(key);
        loop {
            let entry = self.table.find(key, hash, &guard)?;
            match entry.life.touch(now, &self.scale) {
                // SAFETY: pinned by `guard`, and `entry` was found through the table.
                Touch::Live => return Some(unsafe { entry.value() }.clone()),
                Touch::Dead => return None,
                // A set replaced it before the touch took effect: the touch belongs to the
                // replacement (rare; the set's own CAS made the find see the old entry).
                Touch::Replaced => continue,
            }
        }
    }

    fn delete(&self, key: &K) -> bool {
        let now = self.now();
        let guard = epoch::pin();
        let hash = self.table.hash(key);
        loop {
            let Some(entry) = self.table.find(key, hash, &guard) else { return false };
            let live = entry.life.load().is_live(now, &self.scale);
            if self.table.remove(entry, &guard) {
                // An expired entry is removed all the same (it is garbage), but it was not
                // live: the janitor's claim may also have come just before our mark.
                return live && !entry.life.load_after_removal().is_expired();
            }
            // Removed (or replaced) under us: look again.
        }
    }

    fn fetch_and_delete(&self, key: &K) -> Option<V> {
        let now = self.now();
        let guard = epoch::pin();
        let hash = self.table.hash(key);
        loop {
            let entry = self.table.find(key, hash, &guard)?;
            if !entry.life.load().is_live(now, &self.scale) {
                return None; // expired: the janitor removes it
            }
            // Readers may be cloning the value concurrently, so it is cloned here too; the
            // entry (and its copy) is freed after the epoch moves on.
            // SAFETY: pinned by `guard`, and `entry` was found through the table.
            let value = unsafe { entry.value() }.clone();
            if self.table.remove(entry, &guard) {
                // Our mark and the janitor's EXPIRED claim are both SeqCst: if the claim came
                // first, we see it here and the entry counts as expired (it was due: the
                // janitor claims only due entries). If our mark came first, the janitor's
                // removal fails and only we have it. Either way one party owns it.
                if entry.life.load_after_removal().is_expired() {
                    return None;
                }
                return Some(value);
            }
        }
    }

    fn run_janitor(&self) -> JanitorRun {
        self.janitor.run(&self.parts())
    }
}

impl<K, V, S> Drop for ExpiringMap<K, V, S> {
    fn drop(&mut self) {
        // Join the janitor thread first: afterwards this is the last handle on the core.
        if let Some(ticker) = self.ticker.take() {
            ticker.stop();
        }
    }
}

impl<K, V, S> Drop for Core<K, V, S> {
    /// Lets go of the entries only the intake of new entries holds; the table frees the rest.
    fn drop(&mut self) {
        // New entries the janitor never took: for those already unlinked, let go of the
        // janitor's hold; the others are still linked and freed with the list.
        self.fresh.take_all(|entry| {
            // SAFETY: `&mut self`: no other thread; intake entries are alive.
            if unsafe { (*entry).life.load() }.is_unlinked() {
                // SAFETY: unlinked, off the intake, never to be filed.
                unsafe { release_janitor_hold(entry) };
            }
        });
        // The table's own drop (next) frees the linked entries and its unlinked intake.
        // Values removed earlier wait in the epoch's queue: push the epoch on until a marker
        // deferred now has run, so that (unless another thread stays pinned) everything
        // deferred before it has run too. Values still in another live thread's local bag
        // cannot be reached from here; see docs/design.md, "Reclamation".
        drain_epoch_queue();
    }
}

/// Flushes the epoch until a marker deferred now has run (bounded: a thread pinned forever
/// elsewhere would hold it back indefinitely).
fn drain_epoch_queue() {
    const MAX_FLUSHES: usize = if cfg!(crossbeam_loom) { 8 } else { 100_000 };
    let ran = Arc::new(AtomicBool::new(false));
    {
        let ran = Arc::clone(&ran);
        let guard = epoch::pin();
        guard.defer(move || ran.store(true, Ordering::Release));
        guard.flush();
    }
    for _ in 0..MAX_FLUSHES {
        if ran.load(Ordering::Acquire) {
            return;
        }
        epoch::pin().flush();
    }
}

impl<K, V, S> fmt::Debug for ExpiringMap<K, V, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExpiringMap")
            .field("len", &self.core.table.len())
            .field("scale", &self.core.scale)
            .field("janitor_thread", &self.ticker.is_some())
            .finish()
    }
}
