//! The reference design: the Go original done right.
//!
//! One `RwLock<HashMap>`; `get` takes the write lock because it slides the entry's life
//! forward; a janitor thread scans every entry each tick. It keeps the Go design's shape
//! (and its cost: every tick is O(entries held) and stalls writers) so that benchmarks can
//! compare against it, but none of its defects (`shared/REFERENCE.md`, section 2):
//! `get` and `fetch_and_delete` check the deadline themselves, the sweep re-checks each
//! entry under the write lock before removing it, `done` is idempotent, and a missing id
//! is a typed error.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use crate::error::require_nonzero;
use crate::ticker::{Next, Ticker};
use crate::{Buffer, BufferId, Bytes, Error};

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
    map: RwLock<HashMap<BufferId, Slot, ahash::RandomState>>,
    expire: Duration,
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

impl RwLockBuffer {
    /// Makes a buffer whose janitor runs every `tick` and drops entries idle for `expire`.
    ///
    /// Errors with [`Error::ZeroDuration`] naming `tick` or `expire` when either is zero.
    pub fn new(tick: Duration, expire: Duration) -> Result<RwLockBuffer, Error> {
        require_nonzero("tick", tick)?;
        require_nonzero("expire", expire)?;
        let shared = Arc::new(Shared { map: RwLock::new(HashMap::default()), expire });
        let swept = Arc::clone(&shared);
        let janitor = Ticker::spawn("rwlock-buffer-janitor", tick, move || {
            swept.sweep();
            Next::OnTick
        });
        Ok(RwLockBuffer { shared, janitor })
    }

    /// Stores `data` under `id`, replacing any previous value, and resets the entry's life.
    pub fn set(&self, id: BufferId, data: Bytes) {
        // The time is read before the lock (to keep the lock short), so a touch that took
        // the lock meanwhile may be later: keep the later of the two.
        let now = Instant::now();
        let replaced = match self.shared.write().entry(id) {
            Entry::Occupied(mut held) => {
                let touched = held.get().touched.max(now);
                Some(held.insert(Slot { data, touched }))
            }
            Entry::Vacant(free) => {
                free.insert(Slot { data, touched: now });
                None
            }
        };
        drop(replaced); // outside the lock
    }

    /// Returns the value under `id` if it is live, and resets the entry's life.
    pub fn get(&self, id: &BufferId) -> Option<Bytes> {
        let now = Instant::now();
        let mut map = self.shared.write();
        let slot = map.get_mut(id)?;
        if slot.is_expired(now, self.shared.expire) {
            let expired = map.remove(id);
            drop(map);
            drop(expired);
            return None;
        }
        // Never backwards: `now` was read before the lock, and a set or get that took the
        // lock meanwhile may have stored a later time.
        slot.touched = slot.touched.max(now);
        Some(slot.data.clone())
    }

    /// Removes the entry under `id`, if any.
    pub fn delete(&self, id: &BufferId) {
        let removed = self.shared.write().remove(id);
        drop(removed);
    }

    /// Removes the entry under `id` and returns its value; of racing callers exactly one
    /// gets it. A missing or expired id gives [`Error::NotFound`].
    pub fn fetch_and_delete(&self, id: &BufferId) -> Result<Bytes, Error> {
        let now = Instant::now();
        let removed = self.shared.write().remove(id);
        match removed {
            Some(slot) if !slot.is_expired(now, self.shared.expire) => Ok(slot.data),
            _ => Err(Error::NotFound { id: *id }),
        }
    }

    /// The number of entries held (live ones plus expired ones the janitor has not swept).
    pub fn len(&self) -> usize {
        self.shared.read().len()
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
    fn read(&self) -> RwLockReadGuard<'_, HashMap<BufferId, Slot, ahash::RandomState>> {
        // Nothing panics while holding the lock, so a poisoned lock still holds a sound map.
        self.map.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashMap<BufferId, Slot, ahash::RandomState>> {
        self.map.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// One janitor tick: find expired entries under the read lock, then remove them under
    /// the write lock, re-checking each one (an entry touched in between stays: the Go
    /// original deleted it anyway). Removed values are dropped after the lock is released.
    fn sweep(&self) -> usize {
        let now = Instant::now();
        let candidates: Vec<BufferId> =
            self.read().iter().filter(|(_, slot)| slot.is_expired(now, self.expire)).map(|(id, _)| *id).collect();
        if candidates.is_empty() {
            return 0;
        }
        let mut removed = Vec::with_capacity(candidates.len());
        {
            let mut map = self.write();
            for id in &candidates {
                if map.get(id).is_some_and(|slot| slot.is_expired(now, self.expire)) {
                    removed.extend(map.remove(id));
                }
            }
        }
        let count = removed.len();
        drop(removed);
        count
    }
}

impl Buffer for RwLockBuffer {
    fn set(&self, id: BufferId, data: Bytes) {
        RwLockBuffer::set(self, id, data)
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
            older += usize::from(buffer.shared.read()[&id].touched < get_began);
        }
        assert_eq!(older, 0, "rounds in which the set stored a time older than the get's start");
    }
}
