//! [`ExpiringMap`]: the lock-free engine, generic over key, value and hasher.
//!
//! A lock-free open-addressing hash table ([`crate::slots`], through [`crate::table`]) holds
//! the entries; each entry carries an
//! atomic `life` word ([`crate::life`]) with its deadline in wheel ticks. Every call reads
//! the clock itself: a hit extends the deadline with one CAS on that word, and only when
//! it would move by at least one tick; an entry past its deadline is never returned,
//! whatever the janitor is doing. The janitor ([`crate::janitor`]) owns a hierarchical
//! timing wheel, hears of new and removed entries through striped intakes, and removes
//! what is due. See `docs/design.md` for the invariants and the proofs.

use std::cell::Cell;
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::time::Duration;

use crate::clock::{TimeScale, TimeSource};
use crate::doorbell::{Doorbell, Rack};
use crate::entry::{new_entry, Entry};
use crate::error::require_nonzero;
use crate::intake::Intake;
use crate::janitor::{Janitor, JanitorRun, JanitorStats, Listener, Parts};
use crate::life::{Kill, Life, Touch};
use crate::reclaim::{destroy_whole, release_janitor_hold, Taken};
use crate::scheduler::{self, Registration};
use crate::stats::{Stats, Tally};
use crate::sweep;
use crate::sync::epoch::{self, Guard};
use crate::sync::Arc;
use crate::table::{Inserted, Replaced, Table};
use crate::ticker::Next;
use crate::weights::{Weigher, Weights};
use crate::wheel::levels_for;
use crate::Error;

/// Entries a janitor run expires or re-files at most, by default; the rest waits for the
/// next run, so a mass expiry never turns into one long run.
pub const DEFAULT_JANITOR_BUDGET: usize = 1 << 18;

/// The longest period of a map's janitor job (its period is the wheel tick, up to this):
/// what a map on a clock other than the system clock waits between runs at most, since the
/// janitor thread cannot tell when such a clock's time comes. (On the system clock a map
/// sleeps until its next entry may be due, and its doorbell wakes it within
/// [`RING_POLL`](crate::scheduler::RING_POLL) when entries arrive or are removed.)
const MAX_PERIOD: Duration = Duration::from_millis(100);

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
/// One janitor thread serves every map of the process; it starts with the first map and
/// ends a second after the last one is dropped or `done` (manual-mode maps have none). It runs a map when its earliest
/// entry may be due, within 100 ms of entries arriving or being removed (the map's intakes
/// ring a doorbell), every 10 ms while removals are busy, and back to back while a mass
/// expiry lasts (each run stops after about a wheel tick of work, 1 to 10 ms), but never
/// more than once a millisecond otherwise: a removed entry's value is released right after
/// removal, but its ~100-byte shell waits until the janitor has taken it. An idle map costs
/// no thread and no CPU (a run at most every 10 s); on a clock other than the system
/// clock, a run every wheel tick (at most 100 ms apart), since the thread cannot tell when
/// that clock's time comes.
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
    /// The janitor's place on the process's janitor thread; deregistered before `core` is
    /// released.
    janitor_thread: Option<Registration>,
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
    /// The weight held, and the byte budget.
    weights: Weights<V>,
    /// Hits, misses, inserts and removals.
    tally: Tally,
    /// Called by the janitor for each entry it expires.
    on_expire: Option<Listener<K, V>>,
    /// Whether a value is large enough to lease (`crate::lease`): freed by its remover.
    eager_release: fn(&V) -> bool,
}

/// What an [`ExpiringMap`] is built from: the [`Builder`](crate::Builder)'s options.
pub(crate) struct Settings<K, V> {
    pub(crate) tick: Duration,
    pub(crate) expire: Duration,
    pub(crate) clock: Option<TimeSource>,
    pub(crate) manual: bool,
    pub(crate) capacity: usize,
    pub(crate) budget: usize,
    pub(crate) max_bytes: Option<usize>,
    pub(crate) weigher: Option<Weigher<V>>,
    pub(crate) on_expire: Option<Listener<K, V>>,
    pub(crate) eager_release: fn(&V) -> bool,
    pub(crate) count_stats: bool,
}

impl<K, V, S> ExpiringMap<K, V, S>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    /// Builds the map. Errors with [`Error::ZeroDuration`] naming `tick` or `expire` when
    /// either is zero.
    pub(crate) fn with_settings(settings: Settings<K, V>, hasher: S) -> Result<Self, Error> {
        require_nonzero("tick", settings.tick)?;
        require_nonzero("expire", settings.expire)?;
        let scale = TimeScale::new(settings.tick, settings.expire);
        let clock = settings.clock.unwrap_or_else(|| TimeSource::default_for(&scale));
        let now = scale.ticks(clock.now());
        // What wakes the janitor thread for a sleeping map; manual mode has no thread to wake.
        let bell = (!settings.manual).then(|| Doorbell::new(Rack::process()));
        let core = Arc::new(Core {
            table: Table::new(settings.capacity, hasher, bell.clone()),
            fresh: Intake::new(bell.clone()),
            // A touch's deadline lies at most `expire + 1` ticks (one for rounding up) past
            // the tick it read; one more for the wheel lagging behind the clock. Later ones
            // go to the overflow list and come back when it turns.
            janitor: Janitor::new(levels_for(scale.expire_ticks.saturating_add(2)), now, settings.budget),
            scale,
            clock,
            // Without a budget the weights only feed the statistics: not counted if they are off.
            weights: Weights::new(
                settings.weigher.filter(|_| settings.max_bytes.is_some() || settings.count_stats),
                settings.max_bytes,
            ),
            tally: Tally::new(settings.count_stats),
            on_expire: settings.on_expire,
            eager_release: settings.eager_release,
        });
        let janitor_thread = bell.map(|bell| {
            let period = Duration::from_nanos(scale.resolution_nanos).min(MAX_PERIOD);
            let pacing = Pacing::new(period, &core.clock);
            let janitor = Arc::clone(&core);
            scheduler::register(
                period,
                &bell,
                Box::new(move || {
                    // A panic from user code (a key's `Eq`, a custom clock) must not end
                    // expiry for good: contain it; the run's try-lock is released on unwind.
                    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| janitor.run_janitor())) {
                        Ok(run) => pacing.next(&run),
                        Err(_) => Next::OnTick,
                    }
                }),
            )
        });
        Ok(ExpiringMap { janitor_thread, core })
    }
}

impl<K, V, S> ExpiringMap<K, V, S>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    /// Stores `value` under `key`, replacing any previous value, and resets the entry's life.
    /// Counts its weight, past the byte budget if need be (see [`try_set`](Self::try_set)).
    pub fn set(&self, key: K, value: V) {
        self.core.set(key, value)
    }

    /// Stores `value` under `key` only if no live entry holds the key (an expired one,
    /// removed or not, counts as absent); returns whether it stored. Of callers racing on
    /// one key exactly one gets `true`, and its value is the one stored. Like
    /// [`set`](Self::set), it bypasses the byte budget.
    pub fn set_if_absent(&self, key: K, value: V) -> bool {
        self.core.set_if_absent(key, value)
    }

    /// [`set`](Self::set) within the byte budget ([`Builder::max_bytes`](crate::Builder::max_bytes)): refuses with
    /// [`Error::Full`] (naming the budget, the bytes held and the bytes asked) when storing
    /// would take the weight held past the budget; a replacement needs room only for the
    /// difference. Never evicts anything. Without a budget it always stores.
    ///
    /// However writers race, the weight held never exceeds the budget through `try_set`:
    /// room is taken with one compare-and-swap on the budget's counter before the value is
    /// published, and given back after a value is gone.
    pub fn try_set(&self, key: K, value: V) -> Result<(), Error> {
        self.core.try_set(key, value)
    }

    /// A clone of the value under `key` if it is live; extends the entry's life.
    pub fn get(&self, key: &K) -> Option<V> {
        self.core.get(key)
    }

    /// A clone of the value under `key` if it is live, like [`get`](Self::get) but without
    /// extending the entry's life (and not counted as a hit or a miss).
    pub fn peek(&self, key: &K) -> Option<V> {
        self.core.peek(key, V::clone)
    }

    /// Whether a live entry holds `key`; does not extend its life.
    pub fn contains_key(&self, key: &K) -> bool {
        self.core.contains_key(key)
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

    /// Removes every entry.
    ///
    /// Weakly consistent, like iteration over a concurrent map: every entry present
    /// throughout the call is removed; one stored while it runs may stay. When no other
    /// call runs meanwhile, the map is empty afterwards (`len` and the bytes held 0).
    /// Not counted as removals (see [`Stats`]).
    pub fn clear(&self) {
        self.core.retain(|_, _| false)
    }

    /// Keeps the live entries for which `keep` returns true and removes the others
    /// (expired ones not yet removed go too, unasked).
    ///
    /// Weakly consistent, like [`clear`](Self::clear): `keep` is asked once about each entry
    /// present throughout the call, and maybe about entries stored while it runs; a value
    /// replaced while it runs may be asked about in its old or its new version, and a
    /// replacement that lands after `keep` was asked stays. `keep` runs on the calling
    /// thread with the epoch pinned (no removed value waiting for the epoch is freed
    /// meanwhile): keep it short. A panic in it propagates, leaving the map consistent. Not
    /// counted as removals.
    pub fn retain(&self, keep: impl FnMut(&K, &V) -> bool) {
        self.core.retain(keep)
    }

    /// What the map has done, and what it holds now; see [`Stats`].
    pub fn stats(&self) -> Stats {
        self.core.stats()
    }

    /// The byte budget, if [`Builder::max_bytes`](crate::Builder::max_bytes) set one.
    pub fn max_bytes(&self) -> Option<usize> {
        self.core.weights.max()
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
        // The shutdown sequence: off the janitor thread first, then the janitor's own
        // (`Janitor::stop`).
        if let Some(registration) = &self.janitor_thread {
            registration.stop();
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
    /// The time, in nanoseconds of the map's clock: what dates entries.
    #[inline]
    fn now(&self) -> u64 {
        self.clock.now()
    }

    /// A reading for judging entries (is it live?): never ahead of [`now`](Self::now), at
    /// most the clock's lag behind it (`crate::clock::TimeSource::seen`).
    #[inline]
    fn seen(&self) -> u64 {
        self.clock.seen()
    }

    fn parts(&self) -> Parts<'_, K, V, S> {
        Parts {
            table: &self.table,
            fresh: &self.fresh,
            clock: &self.clock,
            scale: &self.scale,
            weights: &self.weights,
            on_expire: self.on_expire.as_ref(),
        }
    }

    /// Makes the entry for `key` and offers it to the table (`admit` as in
    /// `Table::insert`, with the weight counted for the entry so far, which it may change).
    /// A linked entry is counted as an insert and handed to the janitor; a refused one is
    /// freed here, and the weight counted for it given back, as when user code in the
    /// search (`K: Eq`) or in `admit` panics. A replaced entry's deadline is handed down to
    /// the new one (docs/design.md, "Replacing"), so a touch of the old entry, however it
    /// raced this call, is never lost; the caller counts the old entry out and then unlinks
    /// it ([`Core::retire_replaced`]).
    fn link<'g>(
        &'g self,
        new: NewEntry<K, V>,
        counted: usize,
        guard: &'g Guard,
        mut admit: impl FnMut(Option<&'g Entry<K, V>>, &Cell<usize>) -> bool,
    ) -> Inserted<'g, K, V> {
        let deadline = self.scale.deadline_after_touch(new.now);
        // Once the janitor is gone, nobody takes entries from the intake: they count as
        // taken already, so their unlinker retires them (see `Table::unlink`).
        let janitor_gone = self.table.janitor_gone();
        let hash = new.hash;
        let entry = new_entry(new.key, new.value, Life::new(deadline, janitor_gone), new.leased);
        let unpublished = Unpublished { entry, weights: &self.weights, counted: Cell::new(counted) };
        // SAFETY: a fresh `Box::into_raw` entry, unpublished, keyed with `self.table`'s hash.
        let inserted = unsafe { self.table.insert(entry, hash, guard, |found| admit(found, &unpublished.counted)) };
        if let Inserted::Refused = inserted {
            return inserted; // `unpublished` frees it and gives its weight back
        }
        std::mem::forget(unpublished);
        self.tally.insert();
        if !janitor_gone {
            // SAFETY: alive: an entry is freed only after its janitor side lets go, which for
            // an untaken entry happens only when the janitor takes it from this intake
            // (docs/design.md, "Reclamation"); and it is on no intake yet.
            unsafe { self.fresh.push(entry) };
        }
        inserted
    }

    /// After a replacing set: gives back the weight of the entry it replaced (beyond
    /// `keep`, which the new entry took over), then cleans that entry's slot (last: the
    /// accounting comes first).
    ///
    /// A leased old value is dropped here, at once, if no reader is in, unless the janitor
    /// had claimed the entry before the replacement: the janitor then reads the value for
    /// the expiry listener, unleased (the `EXPIRED` a load sees here after the replacing
    /// read-modify-write is the claim's, if the claim came first; a claim after it fails).
    /// `killed_by_this_call`: the replacing call's own `kill_if_dead` claimed `old` dead
    /// (`Kill::Killed`), so the `EXPIRED` it carries is not the janitor's.
    fn retire_replaced(&self, replaced: Replaced<'_, K, V>, keep: usize, killed_by_this_call: bool, guard: &Guard) {
        let old = replaced.old;
        self.weights.release(self.weight_of(old).saturating_sub(keep));
        if killed_by_this_call || !old.life.load().is_expired() {
            // SAFETY: this call's replacing CAS marked `old`, and it is done reading it; the
            // janitor does not read it: it never claimed it (not expired), or this call's
            // kill did, and then the janitor reads it only after a mark of its own, which
            // would have made this call's replacement fail.
            drop(Taken::new(unsafe { old.take_value() }));
        }
        self.table.unlink_replaced(replaced, guard);
    }

    /// Reads the clock, hashes the key and weighs the value: the user code (a custom clock,
    /// `K: Hash`, the weigher) that can run before anything is counted or published, so that
    /// a panic there leaves nothing half done. (`K: Eq` runs in the table's search, while
    /// [`link`](Self::link) holds the unpublished entry; the weigher again on removal.)
    ///
    /// The `eager_release` predicate is asked here too; a panic in it counts as "not large".
    fn prepare(&self, key: K, value: V) -> NewEntry<K, V> {
        let now = self.now();
        let hash = self.table.hash(&key);
        let weight = self.weights.weigh(&value);
        let is_large = std::panic::AssertUnwindSafe(|| (self.eager_release)(&value));
        let leased = std::panic::catch_unwind(is_large).unwrap_or(false);
        NewEntry { key, value, hash, weight, leased, now }
    }

    fn set(&self, key: K, value: V) {
        let new = self.prepare(key, value);
        let weight = new.weight;
        self.weights.add(weight);
        let guard = epoch::pin();
        if let Inserted::Replaced(old) = self.link(new, weight, &guard, |_, _| true) {
            self.retire_replaced(old, 0, false, &guard);
        }
    }

    fn set_if_absent(&self, key: K, value: V) -> bool {
        let new = self.prepare(key, value);
        let weight = new.weight;
        let now = self.scale.ticks(new.now);
        let guard = epoch::pin();
        // A live entry refuses; a dead one is claimed dead first (the janitor's CAS), so
        // that no touch that read the clock earlier revives it between this look and the
        // replacing CAS. The weight is counted once it decides to store (not before it
        // looks: a refused call must not hold room that a racing `try_set` is refused for).
        // The entry this call claimed dead, if any (a retry may find it again, then dead
        // before: the claim is still this call's).
        let killed: Cell<*const Entry<K, V>> = Cell::new(std::ptr::null());
        let inserted = self.link(new, 0, &guard, |found, counted| {
            let store = found.is_none_or(|old| {
                let kill = old.life.kill_if_dead(now);
                if kill == Kill::Killed {
                    killed.set(old);
                }
                kill.is_dead()
            });
            if store && counted.get() == 0 && weight > 0 {
                self.weights.add(weight);
                counted.set(weight);
            }
            store
        });
        match inserted {
            Inserted::New => true,
            Inserted::Replaced(old) => {
                // Broken on purpose under `loom_broken = "set_if_absent_takes_after_claim"`:
                // takes the value although the janitor's claim came first (caught by loom
                // model 14, janitor_set_if_absent).
                let killed_by_this_call =
                    std::ptr::eq(old.old, killed.get()) || cfg!(loom_broken = "set_if_absent_takes_after_claim");
                self.retire_replaced(old, 0, killed_by_this_call, &guard);
                true
            }
            Inserted::Refused => false,
        }
    }

    fn try_set(&self, key: K, value: V) -> Result<(), Error> {
        let new = self.prepare(key, value);
        let weight = new.weight;
        let mut refused = None;
        // The room the last admitted attempt needed (what is counted once it publishes).
        let mut needed_at_publish = 0;
        let guard = epoch::pin();
        // Counted per attempt: the room this attempt needs beyond the weight of the entry
        // it would replace (a replacement hands that weight over to the new entry).
        let inserted = self.link(new, 0, &guard, |found, counted| {
            let reserved = counted.get();
            let needed = weight.saturating_sub(found.map_or(0, |old| self.weight_of_found(old)));
            if needed > reserved {
                if let Err(mut seen) = self.weights.try_add(needed - reserved) {
                    // What others hold: this call's own room (taken for an earlier attempt)
                    // is given back on refusal.
                    seen.held = seen.held.saturating_sub(reserved);
                    refused = Some(seen);
                    return false;
                }
            } else {
                self.weights.release(reserved - needed);
            }
            counted.set(needed);
            needed_at_publish = needed;
            true
        });
        match inserted {
            Inserted::New => Ok(()),
            Inserted::Replaced(old) => {
                // Counted: `needed` on top of the old entry's weight, which was at least
                // `weight - needed`; the old weight goes, less what the new entry needs.
                self.retire_replaced(old, weight - needed_at_publish, false, &guard);
                Ok(())
            }
            Inserted::Refused => {
                let seen = refused.expect("try_set refuses only for want of room");
                Err(Error::Full { budget: seen.max, held: seen.held, asked: weight })
            }
        }
    }

    fn get(&self, key: &K) -> Option<V> {
        // The time first: read before the lookup, the counter's latency overlaps the
        // lookup's cache misses (read after it, a get over 1 M entries took ~40 ns more).
        // A reading for judging: the kernel's coarse clock where the map runs on it, which
        // stalls nothing (`crate::clock::KernelClock`), with its lag: a move is dated by the
        // latest the time can be, and nothing more is read.
        let (seen, lag) = self.clock.seen_and_lag();
        // Counted before the lookup, which it does not depend on: it runs in the shadow of
        // the lookup's cache misses (hits are lookups less misses).
        self.tally.lookup();
        let guard = epoch::pin();
        let hash = self.table.hash(key);
        loop {
            let Some(entry) = self.table.find(key, hash, &guard) else {
                self.tally.miss();
                return None;
            };
            match entry.life.touch_seen(seen, lag, &self.scale) {
                Touch::Live => {
                    // Removed and its value taken since the find: look again.
                    let Some(_reading) = entry.lease.read() else { continue };
                    // SAFETY: pinned by `guard`, `entry` was found through the table, and the
                    // lease (if the value is leased) keeps its remover from taking it.
                    return Some(unsafe { entry.value() }.clone());
                }
                Touch::Dead => {
                    self.tally.miss();
                    return None;
                }
                // A set replaced it before the touch took effect: the touch belongs to the
                // replacement (rare; the set's own CAS made the find see the old entry).
                Touch::Replaced => continue,
            }
        }
    }

    /// `read` of the live value under `key`, without touching it.
    fn peek<R>(&self, key: &K, read: impl FnOnce(&V) -> R) -> Option<R> {
        let now = self.seen();
        let guard = epoch::pin();
        let hash = self.table.hash(key);
        loop {
            let entry = self.table.find(key, hash, &guard)?;
            if !entry.life.load().is_live(now, &self.scale) {
                return None;
            }
            // Removed and its value taken since the find: look again.
            let Some(_reading) = entry.lease.read() else { continue };
            // SAFETY: pinned by `guard`, found through the table, and leased if need be.
            return Some(read(unsafe { entry.value() }));
        }
    }

    /// Whether a live entry holds `key` (its value is not read: no lease).
    fn contains_key(&self, key: &K) -> bool {
        let now = self.seen();
        let guard = epoch::pin();
        let hash = self.table.hash(key);
        self.table.find(key, hash, &guard).is_some_and(|entry| entry.life.load().is_live(now, &self.scale))
    }

    /// Removes `entry` if no one else has (counting its weight out if this call did), and
    /// settles its fate with the janitor (`Life::settle_removal`). A leased value this call
    /// removed is taken if no reader is in (not if the janitor claimed the entry first: it
    /// reads the value for the listener) and comes back in [`Removed::Ours`]; the caller
    /// returns it or drops it (`Taken` drops it, panic-safe, also on an unwinding).
    /// `hash` is the table's hash of the entry's key (the caller's lookup made it).
    fn remove(&self, entry: &Entry<K, V>, hash: u64, guard: &Guard) -> Removed<V> {
        let settled = self.table.remove(entry, Some(hash), guard, || {
            let expired = entry.life.settle_removal();
            self.release_weight(entry);
            // Broken on purpose under `loom_broken = "take_after_claim"`: taken although the
            // janitor claimed it first and will clone it for the listener.
            let take = !expired || cfg!(loom_broken = "take_after_claim");
            // SAFETY: this call marked the entry, and has read its value (the weight) already.
            let taken = Taken::new(if take { unsafe { entry.take_value() } } else { None });
            (expired, taken)
        });
        match settled {
            None => Removed::Lost,
            Some((true, _)) => Removed::Expired,
            Some((false, taken)) => Removed::Ours(taken),
        }
    }

    /// The weight of `entry`'s value, asked again of the weigher (entries do not store it:
    /// 8 bytes more would put a `DownloadBuffer` entry in the next malloc size class).
    /// The caller is pinned and reached the entry through the table or the wheel.
    fn weight_of(&self, entry: &Entry<K, V>) -> usize {
        // SAFETY: pinned (the caller's contract), and the value is dropped only after an
        // unlink and the grace period that follows it.
        self.weights.weigh(unsafe { entry.value() })
    }

    /// [`weight_of`](Self::weight_of) an entry another thread may be removing: under its
    /// lease; 0 if its value was taken (its remover counted its weight out before).
    fn weight_of_found(&self, entry: &Entry<K, V>) -> usize {
        match entry.lease.read() {
            Some(_reading) => self.weight_of(entry),
            None => 0,
        }
    }

    /// Counts out the weight of `entry`, which this call removed.
    fn release_weight(&self, entry: &Entry<K, V>) {
        self.weights.release(self.weight_of(entry));
    }

    fn delete(&self, key: &K) -> bool {
        let now = self.seen();
        let guard = epoch::pin();
        let hash = self.table.hash(key);
        loop {
            let Some(entry) = self.table.find(key, hash, &guard) else { return false };
            let live = entry.life.load().is_live(now, &self.scale);
            match self.remove(entry, hash, &guard) {
                // An expired entry is removed all the same (it is garbage), but it was not
                // live; nor if the janitor's claim came first (it reports the expiry).
                Removed::Ours(_taken) => {
                    if live {
                        self.tally.removal();
                    }
                    return live;
                }
                Removed::Expired => return false,
                // Removed (or replaced) under us: look again.
                Removed::Lost => {}
            }
        }
    }

    fn fetch_and_delete(&self, key: &K) -> Option<V> {
        let now = self.seen();
        let guard = epoch::pin();
        let hash = self.table.hash(key);
        loop {
            let entry = self.table.find(key, hash, &guard)?;
            if !entry.life.load().is_live(now, &self.scale) {
                return None; // expired: the janitor removes it
            }
            if entry.lease.is_leased() {
                // A large value: removed first, then taken out of the entry if no reader is
                // in (no clone, and the caller frees it when it is done), else cloned, the
                // entry's own copy waiting for the epoch. (A panicking clone then leaves it
                // removed and accounted for; the call panics.)
                match self.remove(entry, hash, &guard) {
                    Removed::Ours(taken) => {
                        self.tally.removal();
                        // SAFETY: pinned by `guard`; not taken, so dropped only after the pin.
                        return Some(taken.into_inner().unwrap_or_else(|| unsafe { entry.value() }.clone()));
                    }
                    Removed::Expired => return None,
                    Removed::Lost => continue,
                }
            }
            // Readers may be cloning the value concurrently, so it is cloned here too (before
            // the removal: a panicking clone leaves the entry in place); the entry (and its
            // copy) is freed after the epoch moves on.
            // SAFETY: pinned by `guard`, and `entry` was found through the table.
            let value = unsafe { entry.value() }.clone();
            match self.remove(entry, hash, &guard) {
                Removed::Ours(taken) => {
                    debug_assert!(taken.into_inner().is_none(), "an unleased value was taken");
                    self.tally.removal();
                    return Some(value);
                }
                // The janitor's claim came first: the entry counts as expired (it was due:
                // the janitor claims only due entries), and the janitor reports it.
                Removed::Expired => return None,
                Removed::Lost => {}
            }
        }
    }

    fn retain(&self, mut keep: impl FnMut(&K, &V) -> bool) {
        let now = self.seen();
        let guard = epoch::pin();
        self.table.for_each(&guard, |entry| {
            let kept = entry.life.load().is_live(now, &self.scale) && {
                // Taken: removed since the walk passed it, nothing to ask about.
                let Some(_reading) = entry.lease.read() else { return };
                // SAFETY: pinned by `guard`, reached through the table, leased if need be.
                keep(&entry.key, unsafe { entry.value() })
            };
            if !kept {
                // Hashed before the removal (user code: a panic leaves the entry as it was).
                let hash = self.table.hash(&entry.key);
                // Lost to a racing remover or replacer, or claimed by the janitor first (then
                // an expiry): gone anyway. A value this call took is dropped here (`Taken`).
                let _ = self.remove(entry, hash, &guard);
            }
        });
    }

    fn stats(&self) -> Stats {
        let totals = self.tally.totals();
        Stats {
            hits: totals.hits,
            misses: totals.misses,
            inserts: totals.inserts,
            removals: totals.removals,
            expirations: self.janitor.stats().expired,
            entries: self.table.len() as u64,
            bytes: self.weights.held() as u64,
        }
    }

    fn run_janitor(&self) -> JanitorRun {
        self.janitor.run(&self.parts())
    }
}

/// When the janitor thread runs a map next, after a run: at once while due entries are
/// left, soon while removals are busy (see [`JanitorRun::next`]); otherwise, on the system
/// clock, when its earliest entry may be due (at most [`MAX_SLEEP`] from now): new and
/// removed entries ring the map's doorbell, which wakes it sooner. On any other clock (a
/// [`ManualClock`](crate::ManualClock) a test moves by an hour at once) the thread cannot
/// tell when the clock's time will come, and runs the map every period.
struct Pacing {
    period: Duration,
    /// Whether the map's time is the janitor thread's (the system clock).
    sleeps: bool,
}

/// The longest a map on the system clock sleeps between janitor runs, whatever its next
/// deadline (a tick of an hour): a backstop, not what bounds any of the contract's times.
const MAX_SLEEP: Duration = Duration::from_secs(10);

impl Pacing {
    fn new(period: Duration, clock: &TimeSource) -> Pacing {
        Pacing { period, sleeps: clock.is_real() }
    }

    fn next(&self, run: &JanitorRun) -> Next {
        match run.next() {
            // Not after a skipped run (another run held the janitor's lock): that run may
            // have taken its intakes before a push that rang the bell this run answered.
            // Nor, while the janitor's removals may still wait for the epoch, much past its
            // tick: the next runs push it on, backing off while a thread stays pinned
            // (crate::sweep).
            Next::OnTick if self.sleeps && !run.skipped => match run.next_due_in {
                Some(due_in) if due_in <= self.period => Next::OnTick,
                _ if run.sweeping && run.sweep_misses == 0 => Next::OnTick,
                due_in if run.sweeping => {
                    let backoff = self.period.saturating_mul(1 << run.sweep_misses.min(16));
                    Next::After(due_in.unwrap_or(MAX_SLEEP).min(backoff).min(MAX_SLEEP))
                }
                due_in => Next::After(due_in.unwrap_or(MAX_SLEEP).min(MAX_SLEEP)),
            },
            next => next,
        }
    }
}

/// How a removal by a call ended ([`Core::remove`]).
enum Removed<V> {
    /// Someone else's mark came first.
    Lost,
    /// This call's mark removed it, after the janitor had claimed it: an expiry.
    Expired,
    /// This call removed it, and owns its removal; with the value if it took it (a leased
    /// value no reader was reading), dropped with the `Taken` unless the caller hands it on.
    Ours(Taken<V>),
}

/// An entry [`Core::link`] made and has not published (yet): freed, with the weight
/// counted for it given back, when the link refuses it or user code in the table's search
/// (`K: Eq`) or in the admission (the weigher) panics. Forgotten once published.
struct Unpublished<'a, K, V> {
    entry: *mut Entry<K, V>,
    weights: &'a Weights<V>,
    counted: Cell<usize>,
}

impl<K, V> Drop for Unpublished<'_, K, V> {
    fn drop(&mut self) {
        // SAFETY: made by `new_entry` and never published (it is forgotten once it is), so
        // nobody else can reach it.
        unsafe { destroy_whole(self.entry) };
        self.weights.release(self.counted.get());
    }
}

/// A value on its way into the table, with what was computed for it before anything was
/// counted or published.
struct NewEntry<K, V> {
    key: K,
    value: V,
    hash: u64,
    weight: usize,
    /// Whether readers of the entry lease its value (`crate::lease`).
    leased: bool,
    /// When the call began (the clock's nanoseconds): dates the entry.
    now: u64,
}

impl<K, V, S> Drop for ExpiringMap<K, V, S> {
    fn drop(&mut self) {
        // Off the janitor thread first: afterwards this is the last handle on the core.
        if let Some(registration) = self.janitor_thread.take() {
            registration.stop();
        }
    }
}

impl<K, V, S> Drop for Core<K, V, S> {
    /// Lets go of the entries only the intake of new entries holds; the table frees the rest.
    fn drop(&mut self) {
        // New entries the janitor never took: for those already unlinked, let go of the
        // janitor's hold; the others are still in the table and freed with it.
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
        sweep::drain_epoch_queue();
    }
}

impl<K, V, S> fmt::Debug for ExpiringMap<K, V, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExpiringMap")
            .field("len", &self.core.table.len())
            .field("scale", &self.core.scale)
            .field("janitor_thread", &self.janitor_thread.is_some())
            .finish()
    }
}
