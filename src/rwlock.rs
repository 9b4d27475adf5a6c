//! The reference design: the Go original done right.
//!
//! One `RwLock<HashMap>`; `get` takes the write lock because it slides the entry's life
//! forward; a janitor thread scans every entry each tick. It keeps the Go design's shape
//! (and its cost: every tick is O(entries held) and stalls writers) so that benchmarks can
//! compare against it, but none of its defects (docs/architecture.md lists them):
//! `get` and `fetch_and_delete` check the deadline themselves, the sweep re-checks each
//! entry under the write lock before removing it, `done` is idempotent, and a missing id
//! is a typed error.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use crate::error::require_nonzero;
use crate::ticker::{Next, Ticker};
use crate::{Buffer, BufferId, Bytes, Error, Stats};

/// The lock-based reference buffer: one `RwLock<HashMap>` and a janitor that scans it all.
///
/// Same contract as every [`Buffer`]; see the trait for the semantics.
///
/// ```
/// use std::time::Duration;
/// use download_buffer::{BufferId, Bytes, ChunkHandle, RwLockBuffer};
///
/// let buffer = RwLockBuffer::new(Duration::from_secs(15), Duration::from_secs(60))?;
/// let id = BufferId::new(ChunkHandle(7));
/// buffer.set(id, Bytes::from_static(b"chunk bytes"));
/// assert_eq!(buffer.fetch_and_delete(&id)?, Bytes::from_static(b"chunk bytes"));
/// assert!(buffer.fetch_and_delete(&id).is_err());
/// # Ok::<(), download_buffer::Error>(())
/// ```
pub struct RwLockBuffer {
    shared: Arc<Shared>,
    janitor: Ticker,
}

struct Shared {
    state: RwLock<State>,
    expire: Duration,
    /// The byte budget of `try_set`, if any.
    max_bytes: Option<usize>,
}

/// Everything under the lock.
#[derive(Default)]
struct State {
    map: HashMap<BufferId, Slot, ahash::RandomState>,
    /// The bytes of every value in `map`.
    bytes: usize,
    hits: u64,
    misses: u64,
    inserts: u64,
    removals: u64,
    /// Entries removed because they had expired: by the sweep, or by a `get` or
    /// `fetch_and_delete` that found them so.
    expirations: u64,
}

struct Slot {
    data: Bytes,
    /// When the entry was last set or read.
    touched: Instant,
}

impl Slot {
    fn is_expired(&self, now: Instant, expire: Duration) -> bool {
        now.saturating_duration_since(self.touched) >= expire
    }
}

impl State {
    /// Stores `data` under `id` (replacing what is there), keeping the later of the stored
    /// touch and `now`; returns the replaced value, to be dropped outside the lock.
    fn store(&mut self, id: BufferId, data: Bytes, now: Instant) -> Option<Bytes> {
        self.inserts += 1;
        self.bytes += data.len();
        let replaced = match self.map.entry(id) {
            Entry::Occupied(mut held) => {
                // The time is read before the lock (to keep the lock short), so a touch that
                // took the lock meanwhile may be later: keep the later of the two.
                let touched = held.get().touched.max(now);
                Some(held.insert(Slot { data, touched }).data)
            }
            Entry::Vacant(free) => {
                free.insert(Slot { data, touched: now });
                None
            }
        };
        self.bytes -= replaced.as_ref().map_or(0, Bytes::len);
        replaced
    }

    fn remove(&mut self, id: &BufferId) -> Option<Slot> {
        let removed = self.map.remove(id)?;
        self.bytes -= removed.data.len();
        Some(removed)
    }
}

impl RwLockBuffer {
    /// Makes a buffer whose janitor runs every `tick` and drops entries idle for `expire`.
    ///
    /// Errors with [`Error::ZeroDuration`] naming `tick` or `expire` when either is zero.
    #[must_use = "a buffer that is not kept is dropped at once"]
    pub fn new(tick: Duration, expire: Duration) -> Result<RwLockBuffer, Error> {
        RwLockBuffer::with_budget(tick, expire, None)
    }

    /// [`new`](Self::new), with a byte budget for [`try_set`](Self::try_set).
    #[must_use = "a buffer that is not kept is dropped at once"]
    pub fn with_max_bytes(tick: Duration, expire: Duration, max_bytes: usize) -> Result<RwLockBuffer, Error> {
        RwLockBuffer::with_budget(tick, expire, Some(max_bytes))
    }

    fn with_budget(tick: Duration, expire: Duration, max_bytes: Option<usize>) -> Result<RwLockBuffer, Error> {
        require_nonzero("tick", tick)?;
        require_nonzero("expire", expire)?;
        let shared = Arc::new(Shared { state: RwLock::new(State::default()), expire, max_bytes });
        let swept = Arc::clone(&shared);
        // Its own thread, as the Go original's goroutine; never more often than the
        // engine's janitor (a 1 ns tick would make it scan without pause).
        let janitor = Ticker::spawn("rwlock-buffer-janitor", tick.max(crate::scheduler::MIN_PERIOD), move || {
            swept.sweep();
            Next::OnTick
        });
        Ok(RwLockBuffer { shared, janitor })
    }

    /// Stores `data` under `id`, replacing any previous value, and resets the entry's life.
    /// Counted in the bytes held, past the byte budget if need be.
    pub fn set(&self, id: BufferId, data: Bytes) {
        let now = Instant::now();
        let replaced = self.shared.write().store(id, data, now);
        drop(replaced); // outside the lock
    }

    /// Stores `data` under `id` only if no live entry has that id; returns whether it stored.
    pub fn set_if_absent(&self, id: BufferId, data: Bytes) -> bool {
        let now = Instant::now();
        let mut state = self.shared.write();
        if state.map.get(&id).is_some_and(|slot| !slot.is_expired(now, self.shared.expire)) {
            drop(state);
            return false;
        }
        let replaced = state.store(id, data, now);
        drop(state);
        drop(replaced);
        true
    }

    /// [`set`](Self::set) within the byte budget: [`Error::Full`] when storing would take
    /// the bytes held past it (a replacement needs room only for the difference).
    pub fn try_set(&self, id: BufferId, data: Bytes) -> Result<(), Error> {
        let now = Instant::now();
        let mut state = self.shared.write();
        if let Some(budget) = self.shared.max_bytes {
            let credit = state.map.get(&id).map_or(0, |slot| slot.data.len());
            let after = (state.bytes - credit).saturating_add(data.len());
            // Refused only if it would add bytes past the budget (a value no larger than the
            // one it replaces always fits, even past a budget that `set` overran).
            if after > budget && after > state.bytes {
                let (held, asked) = (state.bytes, data.len());
                drop(state);
                return Err(Error::Full { budget, held, asked });
            }
        }
        let replaced = state.store(id, data, now);
        drop(state);
        drop(replaced);
        Ok(())
    }

    /// Returns the value under `id` if it is live, and resets the entry's life.
    pub fn get(&self, id: &BufferId) -> Option<Bytes> {
        let now = Instant::now();
        let mut state = self.shared.write();
        let Some(slot) = state.map.get_mut(id) else {
            state.misses += 1;
            return None;
        };
        if slot.is_expired(now, self.shared.expire) {
            let expired = state.remove(id);
            state.misses += 1;
            state.expirations += 1;
            drop(state);
            drop(expired);
            return None;
        }
        // Never backwards: `now` was read before the lock, and a set or get that took the
        // lock meanwhile may have stored a later time.
        slot.touched = slot.touched.max(now);
        let data = slot.data.clone();
        state.hits += 1;
        Some(data)
    }

    /// The value under `id` if it is live, without extending its life (a read lock).
    pub fn peek(&self, id: &BufferId) -> Option<Bytes> {
        let now = Instant::now();
        let state = self.shared.read();
        let slot = state.map.get(id)?;
        (!slot.is_expired(now, self.shared.expire)).then(|| slot.data.clone())
    }

    /// Whether a live entry has `id`; does not extend its life.
    pub fn contains_key(&self, id: &BufferId) -> bool {
        let now = Instant::now();
        self.shared.read().map.get(id).is_some_and(|slot| !slot.is_expired(now, self.shared.expire))
    }

    /// Removes the entry under `id`, if any.
    pub fn delete(&self, id: &BufferId) {
        let now = Instant::now();
        let mut state = self.shared.write();
        let removed = state.remove(id);
        if removed.as_ref().is_some_and(|slot| !slot.is_expired(now, self.shared.expire)) {
            state.removals += 1;
        }
        drop(state);
        drop(removed);
    }

    /// Removes the entry under `id` and returns its value; of racing callers exactly one
    /// gets it. A missing or expired id gives [`Error::NotFound`].
    pub fn fetch_and_delete(&self, id: &BufferId) -> Result<Bytes, Error> {
        let now = Instant::now();
        let mut state = self.shared.write();
        let removed = state.remove(id);
        match removed {
            Some(slot) if !slot.is_expired(now, self.shared.expire) => {
                state.removals += 1;
                Ok(slot.data)
            }
            Some(expired) => {
                state.expirations += 1;
                drop(state);
                drop(expired);
                Err(Error::NotFound { id: *id })
            }
            None => Err(Error::NotFound { id: *id }),
        }
    }

    /// Removes every entry (values dropped after the lock is released).
    pub fn clear(&self) {
        let mut state = self.shared.write();
        let removed = std::mem::take(&mut state.map);
        state.bytes = 0;
        drop(state);
        drop(removed);
    }

    /// Keeps the live entries for which `keep` returns true (it runs under the write lock).
    pub fn retain(&self, mut keep: impl FnMut(&BufferId, &Bytes) -> bool) {
        let now = Instant::now();
        let mut state = self.shared.write();
        let gone: Vec<BufferId> = state
            .map
            .iter()
            .filter(|(id, slot)| slot.is_expired(now, self.shared.expire) || !keep(id, &slot.data))
            .map(|(id, _)| *id)
            .collect();
        let removed: Vec<Slot> = gone.iter().filter_map(|id| state.remove(id)).collect();
        drop(state);
        drop(removed);
    }

    /// Hits, misses, inserts, removals, expirations, entries and bytes held: exact, read
    /// under the lock.
    pub fn stats(&self) -> Stats {
        let state = self.shared.read();
        Stats {
            hits: state.hits,
            misses: state.misses,
            inserts: state.inserts,
            removals: state.removals,
            expirations: state.expirations,
            entries: state.map.len() as u64,
            bytes: state.bytes as u64,
        }
    }

    /// The number of entries held (live ones plus expired ones the janitor has not swept).
    pub fn len(&self) -> usize {
        self.shared.read().map.len()
    }

    /// Whether the buffer holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Runs one janitor sweep now, on the calling thread, and returns how many entries it
    /// removed: the scan of every entry that the janitor thread makes each tick. For
    /// benchmarks of that scan, and for embedders that want a sweep at a moment of their
    /// choosing; it may run beside the thread's own sweeps.
    pub fn run_janitor(&self) -> usize {
        self.shared.sweep()
    }

    /// Stops and joins the janitor; idempotent and safe from any thread. The buffer keeps
    /// serving every call afterwards, without expiry.
    pub fn done(&self) {
        self.janitor.stop();
    }
}

impl Shared {
    fn read(&self) -> RwLockReadGuard<'_, State> {
        // Nothing panics while holding the lock but `retain`'s `keep`, before it changes
        // anything: a poisoned lock still holds a sound state.
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// One janitor tick: find expired entries under the read lock, then remove them under
    /// the write lock, re-checking each one (an entry touched in between stays: the Go
    /// original deleted it anyway). Removed values are dropped after the lock is released.
    fn sweep(&self) -> usize {
        let now = Instant::now();
        let candidates: Vec<BufferId> =
            self.read().map.iter().filter(|(_, slot)| slot.is_expired(now, self.expire)).map(|(id, _)| *id).collect();
        if candidates.is_empty() {
            return 0;
        }
        let mut removed = Vec::with_capacity(candidates.len());
        {
            let mut state = self.write();
            for id in &candidates {
                if state.map.get(id).is_some_and(|slot| slot.is_expired(now, self.expire)) {
                    removed.extend(state.remove(id));
                }
            }
            state.expirations += removed.len() as u64;
        }
        let count = removed.len();
        drop(removed);
        count
    }
}

impl fmt::Debug for RwLockBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.shared.read();
        f.debug_struct("RwLockBuffer")
            .field("len", &state.map.len())
            .field("bytes", &state.bytes)
            .field("expire", &self.shared.expire)
            .field("max_bytes", &self.shared.max_bytes)
            .finish_non_exhaustive()
    }
}

impl Buffer for RwLockBuffer {
    fn set(&self, id: BufferId, data: Bytes) {
        RwLockBuffer::set(self, id, data)
    }
    fn set_if_absent(&self, id: BufferId, data: Bytes) -> bool {
        RwLockBuffer::set_if_absent(self, id, data)
    }
    fn try_set(&self, id: BufferId, data: Bytes) -> Result<(), Error> {
        RwLockBuffer::try_set(self, id, data)
    }
    fn peek(&self, id: &BufferId) -> Option<Bytes> {
        RwLockBuffer::peek(self, id)
    }
    fn contains_key(&self, id: &BufferId) -> bool {
        RwLockBuffer::contains_key(self, id)
    }
    fn clear(&self) {
        RwLockBuffer::clear(self)
    }
    fn retain(&self, keep: &mut dyn FnMut(&BufferId, &Bytes) -> bool) {
        RwLockBuffer::retain(self, keep)
    }
    fn stats(&self) -> Stats {
        RwLockBuffer::stats(self)
    }
    fn get(&self, id: &BufferId) -> Option<Bytes> {
        RwLockBuffer::get(self, id)
    }
    fn delete(&self, id: &BufferId) {
        RwLockBuffer::delete(self, id)
    }
    fn fetch_and_delete(&self, id: &BufferId) -> Result<Bytes, Error> {
        RwLockBuffer::fetch_and_delete(self, id)
    }
    fn len(&self) -> usize {
        RwLockBuffer::len(self)
    }
    fn done(&self) {
        RwLockBuffer::done(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ChunkHandle;

    #[test]
    fn run_janitor_removes_only_expired_entries_and_counts_them() {
        let hour = Duration::from_secs(3600);
        let kept = RwLockBuffer::new(hour, hour).unwrap();
        kept.set(BufferId::new(ChunkHandle(1)), Bytes::new());
        assert_eq!(kept.run_janitor(), 0);
        assert_eq!(kept.len(), 1);

        let expire = Duration::from_millis(1);
        let swept = RwLockBuffer::new(hour, expire).unwrap();
        for handle in 0..3 {
            swept.set(BufferId::new(ChunkHandle(handle)), Bytes::new());
        }
        let set_at = Instant::now();
        while set_at.elapsed() < expire * 2 {
            std::thread::sleep(expire);
        }
        assert_eq!(swept.run_janitor(), 3);
        assert!(swept.is_empty());
        assert_eq!(swept.run_janitor(), 0);
    }

    /// A `set` reads the time before it takes the lock. One held up there (here: by the
    /// test holding the lock) while a `get` that began later takes the lock first must not
    /// store its older time over the get's: the entry would expire up to the hold-up early.
    /// The get is started as the lock is released, so it usually takes the lock before the
    /// set, which the kernel has to wake; whichever goes first, the stored time must be no
    /// older than the get's start. (Without the `max`, 20 of 20 rounds fail here.)
    #[test]
    fn a_set_held_up_before_the_lock_never_moves_a_later_touch_back() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let hour = Duration::from_secs(3600);
        let buffer = Arc::new(RwLockBuffer::new(hour, hour).unwrap());
        let id = BufferId::new(ChunkHandle(1));
        let mut older = 0;
        for _round in 0..20 {
            buffer.set(id, Bytes::from_static(b"old"));
            let held = buffer.shared.write();
            let setter = {
                let buffer = Arc::clone(&buffer);
                std::thread::spawn(move || buffer.set(id, Bytes::from_static(b"new")))
            };
            let go = Arc::new(AtomicBool::new(false));
            let getter = {
                let (buffer, go) = (Arc::clone(&buffer), Arc::clone(&go));
                std::thread::spawn(move || {
                    while !go.load(Ordering::Acquire) {
                        std::hint::spin_loop();
                    }
                    let began = Instant::now();
                    assert!(buffer.get(&id).is_some());
                    began
                })
            };
            std::thread::sleep(Duration::from_millis(10)); // the set has read its time and waits
            go.store(true, Ordering::Release);
            drop(held);
            setter.join().unwrap();
            let get_began = getter.join().unwrap();
            older += usize::from(buffer.shared.read().map[&id].touched < get_began);
        }
        assert_eq!(older, 0, "rounds in which the set stored a time older than the get's start");
    }
}
