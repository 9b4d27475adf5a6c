//! Leases on large values: who may still read an entry's value, so that its remover can
//! free it at once instead of after the epoch's grace period.
//!
//! A removed value normally lives until every thread that could have reached its entry has
//! unpinned (`crate::reclaim`): freed late, in batches, often on another thread. For a
//! 64 KiB payload that is what the allocator cannot afford: it never gets warm memory back.
//! So a value the map's `eager_release` predicate calls large is *leased*:
//!
//! ```text
//!  LEASED, 0 readers ── read (fetch_add) ──▶ LEASED, n readers ── end of read (fetch_sub) ──▶ …
//!        │
//!        └── take (CAS from exactly "LEASED, 0 readers") ──▶ LEASED | TAKEN: the value is the taker's
//! ```
//!
//! - A **reader** (a hit's clone, `peek`, `retain`'s question, the weigher on a found entry)
//!   counts itself in with one `fetch_add`; if that shows `TAKEN`, it backs out without
//!   touching the value (the entry is removed: it looks again, or misses).
//! - The **taker** is the remover that marked the entry (only it, once it has read the value
//!   itself, and not if the janitor claimed the entry first: the janitor then lends the
//!   value to the expiry listener unleased): one CAS that succeeds only with no reader in.
//!   Then no reader is in and none will get in, so the value is the taker's:
//!   `fetch_and_delete` returns it without a clone, the janitor moves it to the listener,
//!   every other removal drops it on the spot. When a reader is in, the CAS fails and
//!   nothing changes: the value is dropped after the grace period, as a small one.
//!
//! Both sides read-modify-write the one word, so they are ordered: a reader that got in
//! before the take makes the CAS fail (or has left, its `Release` paired with the CAS's
//! `Acquire`, so its reads happen before the taker's move), and one that comes after sees
//! `TAKEN`. Nobody waits for anybody. Small values are not leased (`LEASED` clear): readers
//! then pay one load, not two read-modify-writes on the entry.

use crate::sync::{AtomicU32, Ordering};

/// The value is leased: readers count themselves in.
const LEASED: u32 = 1 << 31;
/// The remover took the value: it is gone from the entry.
const TAKEN: u32 = 1 << 30;
/// The readers in now.
const READERS: u32 = TAKEN - 1;

/// An entry's lease word; see the module docs.
#[derive(Debug)]
pub(crate) struct Lease(AtomicU32);

impl Lease {
    /// A lease for a new entry: counting readers if `leased`.
    pub(crate) fn new(leased: bool) -> Lease {
        Lease(AtomicU32::new(if leased { LEASED } else { 0 }))
    }

    /// Whether readers count themselves in. Fixed before the entry is published.
    pub(crate) fn is_leased(&self) -> bool {
        self.0.load(Ordering::Relaxed) & LEASED != 0
    }

    /// Whether the remover took the value. Exact for whoever the take happens before (the
    /// epoch's deferred drop, a dropping table); a hint for anyone else.
    pub(crate) fn is_taken(&self) -> bool {
        self.0.load(Ordering::Acquire) & TAKEN != 0
    }

    /// Lets the caller read the value while the returned [`Reading`] lives, or `None` if
    /// the remover took it. Unleased values are always readable (under the epoch's pin).
    pub(crate) fn read(&self) -> Option<Reading<'_>> {
        if !self.is_leased() {
            return Some(Reading(None));
        }
        let before = self.0.fetch_add(1, Ordering::Acquire);
        debug_assert!(before & READERS < READERS, "lease reader count overflowed");
        if before & TAKEN != 0 {
            self.0.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(Reading(Some(&self.0)))
    }

    /// The remover takes the value, if it is leased and no reader is in; whether it did.
    /// Called once, by the thread that marked the entry, after its own reads of the value.
    pub(crate) fn take(&self) -> bool {
        // A load first: an unleased value's removal (every removal of a map without
        // `eager_release`) pays no locked instruction for a CAS bound to fail.
        if !self.is_leased() {
            return false;
        }
        if cfg!(loom_broken = "take_ignores_readers") {
            // Broken on purpose: take whatever readers are in.
            return self.0.fetch_or(TAKEN, Ordering::AcqRel) & LEASED != 0;
        }
        // Acquire: pairs with the readers' `Release` on leaving. Release: a reader that sees
        // `TAKEN` sees the removal's mark too, so its next lookup skips the entry.
        self.0.compare_exchange(LEASED, LEASED | TAKEN, Ordering::AcqRel, Ordering::Relaxed).is_ok()
    }

    /// Whether an unlinked entry's value will wait for the epoch although it is leased (a
    /// reader was in when its remover tried to take it, or its take is still to come): then
    /// the unlinker flushes its epoch bag, so that the payload goes within an epoch advance.
    pub(crate) fn waits_for_epoch(&self) -> bool {
        self.0.load(Ordering::Relaxed) & (LEASED | TAKEN) == LEASED
    }
}

/// A reader's place in a lease (nothing for an unleased value); leaves on drop.
#[must_use = "the value may be read only while the reading lives"]
pub(crate) struct Reading<'a>(Option<&'a AtomicU32>);

impl Drop for Reading<'_> {
    fn drop(&mut self) {
        if let Some(word) = self.0 {
            // Release: this reader's reads of the value happen before a later take's move.
            word.fetch_sub(1, Ordering::Release);
        }
    }
}

#[cfg(all(test, not(crossbeam_loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_take_succeeds_only_with_no_reader_in_and_shuts_out_later_readers() {
        let lease = Lease::new(true);
        let reading = lease.read().expect("not taken yet");
        assert!(!lease.take(), "a reader is in");
        assert!(lease.waits_for_epoch());
        drop(reading);
        assert!(lease.take());
        assert!(lease.is_taken());
        assert!(!lease.waits_for_epoch());
        assert!(lease.read().is_none(), "taken: readers back out");
        assert!(lease.read().is_none(), "backing out leaves the count as it was");
    }

    #[test]
    fn unleased_values_are_never_taken_and_always_readable() {
        let lease = Lease::new(false);
        assert!(!lease.is_leased());
        assert!(!lease.take());
        assert!(lease.read().is_some());
        assert!(!lease.waits_for_epoch());
        assert!(!lease.is_taken());
    }
}
