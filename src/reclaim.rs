//! Freeing entries: the one place that does it.
//!
//! An entry is freed exactly once, by whoever owns it last (`docs/design.md`,
//! "Reclamation"): normally the janitor, through the epoch, after the entry is unlinked
//! from the table and off the wheel; after `done`, the thread that unlinks it; on drop,
//! the dropping thread directly.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::sync::epoch::Guard;
use crate::table::Entry;

/// Entries whose key or value destructor panicked, process-wide (deferred destructors run
/// on whichever thread the epoch picks, so there is no per-buffer place to count them).
static DROP_PANICS: AtomicU64 = AtomicU64::new(0);

/// Destructor panics contained so far, process-wide.
pub(crate) fn drop_panics() -> u64 {
    DROP_PANICS.load(Ordering::Relaxed)
}

/// Frees an entry now, containing a panic from its key's or value's destructor (a value
/// whose `Drop` panics must not take down the janitor or unwind through the epoch).
///
/// # Safety
/// `entry` came from `Box::into_raw`, and nothing can reach it any more.
pub(crate) unsafe fn destroy<K, V>(entry: *mut Entry<K, V>) {
    // SAFETY: forwarded from the caller.
    let dropped = catch_unwind(AssertUnwindSafe(|| drop(unsafe { Box::from_raw(entry) })));
    if dropped.is_err() {
        DROP_PANICS.fetch_add(1, Ordering::Relaxed);
    }
}

/// Hands `entry` to the epoch: it is freed once no pinned thread can still see it.
///
/// # Safety
/// `entry` came from `Box::into_raw`, is unlinked from the table, on no intake and not
/// filed in a wheel anyone will touch again, and nobody else will retire it.
pub(crate) unsafe fn retire<K, V>(entry: *mut Entry<K, V>, guard: &Guard) {
    let owned = Owned(entry);
    // SAFETY: readers that found the entry are pinned; the epoch runs the closure only
    // after they have all unpinned. The closure owns the entry outright and touches nothing
    // else, so it may run on any thread, even after the buffer is gone.
    unsafe {
        guard.defer_unchecked(move || {
            let owned = owned;
            destroy(owned.0)
        })
    };
}

/// An entry owned by a deferred destructor, which may run on another thread.
struct Owned<K, V>(*mut Entry<K, V>);

// SAFETY: the deferred closure is the entry's only owner (see `retire`); entries are only
// created with `K: Send + Sync, V: Send + Sync`.
unsafe impl<K, V> Send for Owned<K, V> {}
