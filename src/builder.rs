//! [`Builder`]: every option of an [`ExpiringMap`] or a [`DownloadBuffer`], in one type
//! generic over the key, the value and what it builds (moka's shape), so that options that
//! depend on the value (weigher, listener, eager release) are ordinary options.

use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::marker::PhantomData;
use std::time::Duration;

use crate::clock::{Clock, TimeSource};
use crate::engine::{ExpiringMap, Settings, DEFAULT_JANITOR_BUDGET};
use crate::{BufferId, Bytes, DownloadBuffer, Error};

/// Configures an [`ExpiringMap`] (from [`ExpiringMap::builder`] or [`Builder::new`]) or a
/// [`DownloadBuffer`] (from [`DownloadBuffer::builder`]); [`build`](Builder::build) makes
/// it. `T` is what it builds.
///
/// ```
/// use std::time::Duration;
/// use download_buffer::{BufferId, Bytes, ChunkHandle, DownloadBuffer, Error};
///
/// let buffer = DownloadBuffer::builder(Duration::from_secs(15), Duration::from_secs(60))
///     .max_bytes(1 << 30) // at most 1 GiB of pushes held through `try_set`
///     .on_expire(|id, data| eprintln!("push {id} expired unwritten ({} bytes)", data.len()))
///     .build()?;
/// buffer.try_set(BufferId::new(ChunkHandle(1)), Bytes::from(vec![0u8; 4096]))?;
/// # Ok::<(), Error>(())
/// ```
#[must_use = "a builder does nothing until `build` is called"]
pub struct Builder<K, V, S = ahash::RandomState, T = ExpiringMap<K, V, S>> {
    settings: Settings<K, V>,
    hasher: S,
    builds: PhantomData<fn() -> T>,
}

impl<K, V> Builder<K, V> {
    /// A builder for a map whose janitor runs every `tick` and drops entries idle for `expire`.
    pub fn new(tick: Duration, expire: Duration) -> Builder<K, V> {
        Builder {
            settings: Settings {
                tick,
                expire,
                clock: None,
                manual: false,
                capacity: 0,
                budget: DEFAULT_JANITOR_BUDGET,
                max_bytes: None,
                weigher: None,
                on_expire: None,
                eager_release: |_| false,
                count_stats: true,
            },
            hasher: ahash::RandomState::new(),
            builds: PhantomData,
        }
    }
}

impl<K, V, S, T> Builder<K, V, S, T> {
    /// Reads time from `clock` instead of the default: on Linux the kernel's monotonic clock
    /// (`Instant`'s), with entries judged by its coarse variant where the wheel tick leaves
    /// room for its lag, which rests "never early" on the kernel's timekeeping keeping up
    /// within 16 timer interrupts (docs/design.md, "Time"); elsewhere a new
    /// [`SystemClock`](crate::SystemClock). A `SystemClock` given here keeps the fast path (no
    /// virtual call per read); a given clock is read for dating and judging alike.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.settings.clock = Some(TimeSource::of(clock));
        self
    }

    /// Manual mode: no janitor thread. Expired entries are removed when the embedder calls
    /// `run_janitor` (from its own event loop, or a test after moving a
    /// [`ManualClock`](crate::ManualClock)). Deadlines do not depend on it: every call
    /// reads the clock, so an entry is invisible from its deadline on whether or not a run
    /// has removed it.
    pub fn manual(mut self) -> Self {
        self.settings.manual = true;
        self
    }

    /// Sizes the table for `entries` up front (it grows on its own anyway).
    pub fn initial_capacity(mut self, entries: usize) -> Self {
        self.settings.capacity = entries;
        self
    }

    /// At most `entries` due timers handled per janitor run (at least 1); the rest waits
    /// for the next run.
    pub fn janitor_budget(mut self, entries: usize) -> Self {
        self.settings.budget = entries.max(1);
        self
    }

    /// A byte budget: `try_set` refuses with [`Error::Full`] rather than take the weight
    /// held past `bytes` (see [`ExpiringMap::try_set`]). The weight of a value is its
    /// length for a [`DownloadBuffer`], and what the [`weigher`](Self::weigher) says for an
    /// [`ExpiringMap`] (without one, every value weighs 0 and nothing is ever refused).
    pub fn max_bytes(mut self, bytes: usize) -> Self {
        self.settings.max_bytes = Some(bytes);
        self
    }

    /// Gives each value a weight (its size in bytes, say), counted in
    /// [`Stats::bytes`](crate::Stats::bytes) and held to [`max_bytes`](Self::max_bytes). Asked
    /// on the storing thread before the value is published, and again when the value leaves
    /// (entries do not store the weight), so it must give a value the same weight every time:
    /// depend on nothing but the value (and not on interior mutability). Keep it cheap. A
    /// [`DownloadBuffer`] weighs by length already.
    pub fn weigher(mut self, weigher: impl Fn(&V) -> usize + Send + Sync + 'static) -> Self {
        self.settings.weigher = Some(Box::new(weigher));
        self
    }

    /// Calls `listener` once for each entry the janitor expires, with the key and the value
    /// that expired: never for values deleted, consumed, replaced or cleared, nor for an
    /// entry past its deadline that a call replaced or removed before the janitor claimed it
    /// (see [`Stats::expirations`](crate::Stats::expirations)). It runs on the thread that
    /// makes the janitor run (the janitor thread, or whoever calls `run_janitor`: in manual
    /// mode, the embedder), after the run's removals and
    /// outside any epoch pin, so it may call into the map; while it runs, no other janitor
    /// run of this map starts. Keep it short: the janitor thread serves every map of the
    /// process, so a slow listener delays the expiry of all of them (never a caller); hand
    /// long work to a channel. A panic in it is contained and counted
    /// ([`JanitorStats::listener_panics`](crate::JanitorStats::listener_panics)); the
    /// other entries of the run are still expired and reported. Since the listener hears of
    /// a run's expiries after the run removed them, `len` can read 0 (and
    /// [`Stats::expirations`](crate::Stats::expirations) the full count) just before the
    /// listener has heard of the last ones.
    pub fn on_expire(mut self, listener: impl Fn(&K, &V) + Send + Sync + 'static) -> Self {
        self.settings.on_expire = Some(Box::new(listener));
        self
    }

    /// Values for which `is_large` returns true (asked once, as each value is stored; a
    /// panic counts as "no") are *leased*: a reader counts itself in and out around its
    /// clone (two read-modify-writes on the entry), and the call that removes the value
    /// frees it at once when no reader is in: `fetch_and_delete` hands over the stored value
    /// itself, without a clone, and `delete`, a replacing `set` and expiry drop it on the
    /// spot (except the one a `set_if_absent` replaces, which waits for the epoch). Other
    /// values wait in the removing thread's epoch bag until it fills (64 removals) and the
    /// epoch has moved on, and are then dropped in batches on whichever thread collects them
    /// (a leased one a reader was cloning is flushed at once): fine for small values,
    /// ruinous for payloads the allocator would reuse warm. A [`DownloadBuffer`] leases
    /// every value. See docs/design.md, section 6, rule 11.
    pub fn eager_release(mut self, is_large: fn(&V) -> bool) -> Self {
        self.settings.eager_release = is_large;
        self
    }

    /// Whether to count hits, misses, inserts and removals for
    /// [`stats`](ExpiringMap::stats), and (without a byte budget) the bytes held: on by
    /// default. Counting costs a `get` about 25 instructions: a load and a store on a cache
    /// line its thread owns, or a `fetch_add` when another thread claimed that shard first
    /// (docs/performance.md, "The operators' features"). Off, those
    /// read 0 (the bytes too, unless a budget counts them), and expirations and entries are
    /// still reported.
    pub fn count_stats(mut self, on: bool) -> Self {
        self.settings.count_stats = on;
        self
    }

    /// The same options, building something else.
    fn builds<T2>(self) -> Builder<K, V, S, T2> {
        Builder { settings: self.settings, hasher: self.hasher, builds: PhantomData }
    }
}

impl<K, V, S> Builder<K, V, S, ExpiringMap<K, V, S>> {
    /// Hashes keys with `hasher` instead of ahash.
    pub fn hasher<S2>(self, hasher: S2) -> Builder<K, V, S2, ExpiringMap<K, V, S2>> {
        Builder { settings: self.settings, hasher, builds: PhantomData }
    }
}

impl<K, V, S> Builder<K, V, S, ExpiringMap<K, V, S>>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    /// Builds the map. Errors with [`Error::ZeroDuration`] naming `tick` or `expire` when
    /// either is zero.
    #[must_use = "a map that is not kept is dropped at once"]
    pub fn build(self) -> Result<ExpiringMap<K, V, S>, Error> {
        ExpiringMap::with_settings(self.settings, self.hasher)
    }

    /// Builds the map with [`eager_release`](Self::eager_release)`(is_large)`.
    #[deprecated(since = "0.2.0", note = "use `.eager_release(is_large).build()`")]
    pub fn build_with_eager_release(self, is_large: fn(&V) -> bool) -> Result<ExpiringMap<K, V, S>, Error> {
        self.eager_release(is_large).build()
    }
}

impl Builder<BufferId, Bytes, ahash::RandomState, ExpiringMap<BufferId, Bytes>> {
    /// Builds a [`DownloadBuffer`] from a map builder (values weigh their length and are
    /// leased, as from [`DownloadBuffer::builder`]).
    #[deprecated(since = "0.2.0", note = "use `DownloadBuffer::builder(tick, expire)...build()`")]
    pub fn build_download_buffer(self) -> Result<DownloadBuffer, Error> {
        self.for_download_buffer().build()
    }

    /// These options with a download buffer's defaults: values weigh their length, and
    /// every value is leased ([`eager_release`](Self::eager_release)): its remover frees it
    /// at once. Measured with 64 B to 1 MiB payloads, leasing costs a hit nothing visible
    /// and makes every removal cheaper (docs/performance.md, "Large payloads").
    fn for_download_buffer(self) -> Builder<BufferId, Bytes, ahash::RandomState, DownloadBuffer> {
        self.weigher(Bytes::len).eager_release(|_| true).builds()
    }
}

impl Builder<BufferId, Bytes, ahash::RandomState, DownloadBuffer> {
    /// The builder [`DownloadBuffer::builder`] returns (see `for_download_buffer`).
    pub(crate) fn download_buffer(tick: Duration, expire: Duration) -> Self {
        Builder::new(tick, expire).for_download_buffer()
    }

    /// Builds the buffer. Errors with [`Error::ZeroDuration`] naming `tick` or `expire` when
    /// either is zero.
    #[must_use = "a buffer that is not kept is dropped at once"]
    pub fn build(self) -> Result<DownloadBuffer, Error> {
        ExpiringMap::with_settings(self.settings, self.hasher).map(DownloadBuffer::from_map)
    }

    /// The former name of [`build`](Self::build).
    #[deprecated(since = "0.2.0", note = "use `build`")]
    pub fn build_download_buffer(self) -> Result<DownloadBuffer, Error> {
        self.build()
    }
}

impl<K, V, S, T> fmt::Debug for Builder<K, V, S, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.settings;
        f.debug_struct("Builder")
            .field("tick", &s.tick)
            .field("expire", &s.expire)
            .field("custom_clock", &s.clock.is_some())
            .field("manual", &s.manual)
            .field("initial_capacity", &s.capacity)
            .field("janitor_budget", &s.budget)
            .field("max_bytes", &s.max_bytes)
            .field("weigher", &s.weigher.is_some())
            .field("on_expire", &s.on_expire.is_some())
            .field("count_stats", &s.count_stats)
            .field("builds", &std::any::type_name::<T>())
            .finish_non_exhaustive()
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
    #[must_use = "a map that is not kept is dropped at once"]
    pub fn new(tick: Duration, expire: Duration) -> Result<Self, Error> {
        Builder::new(tick, expire).build()
    }

    /// A [`Builder`] for a map with a custom clock, manual mode, byte budget, weigher,
    /// expiry listener, janitor budget or hasher.
    pub fn builder(tick: Duration, expire: Duration) -> Builder<K, V> {
        Builder::new(tick, expire)
    }
}

impl DownloadBuffer {
    /// A buffer whose janitor runs every `tick` and drops entries idle for `expire`.
    ///
    /// Errors with [`Error::ZeroDuration`] naming `tick` or `expire` when either is zero.
    #[must_use = "a buffer that is not kept is dropped at once"]
    pub fn new(tick: Duration, expire: Duration) -> Result<DownloadBuffer, Error> {
        DownloadBuffer::builder(tick, expire).build()
    }

    /// A [`Builder`] for a buffer with a custom clock, manual mode, byte budget, expiry
    /// listener or janitor budget; finish it with [`build`](Builder::build).
    pub fn builder(tick: Duration, expire: Duration) -> Builder<BufferId, Bytes, ahash::RandomState, DownloadBuffer> {
        Builder::download_buffer(tick, expire)
    }
}
