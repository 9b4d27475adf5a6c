//! Freeing entries: the one place that does it.
//!
//! An unlinked entry has two holders that let go independently:
//!
//! - the **epoch side**: the thread that unlinks the entry from the table defers, through
//!   crossbeam-epoch, the drop of its value; the deferred closure runs once every thread
//!   that could have reached the entry has unpinned, and sets `VALUE_DROPPED`;
//! - the **janitor side**: the janitor (or, after `done`, the unlinker; on drop, the
//!   dropping thread) lets go once the entry is off its intakes and its wheel, and sets
//!   `JANITOR_DONE`.
//!
//! Whichever sets its flag second (one `fetch_or` on the entry's `life` word decides)
//! frees the rest of the entry. So a removed value is released one epoch advance after
//! its removal, whatever the janitor is doing, and the entry's memory is freed exactly
//! once. Entries still in the table when it is dropped are freed whole, directly.
//!
//! A leased value (a large one, see `crate::lease`) usually does not wait for the epoch:
//! its remover takes it when no reader is in, and drops it at once ([`Taken`]) or
//! hands it to its caller; the epoch side then finds it taken and drops only the rest.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::AtomicU64;

use crate::sync::epoch::Guard;
use crate::table::Entry;

/// Entries whose key or value destructor panicked, process-wide (deferred destructors run
/// on whichever thread the epoch picks, so there is no per-buffer place to count them).
static DROP_PANICS: AtomicU64 = AtomicU64::new(0);

/// Destructor panics contained so far, process-wide.
pub(crate) fn drop_panics() -> u64 {
    DROP_PANICS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Runs a destructor, containing and counting a panic: a value whose `Drop` panics must
/// not take down the janitor or unwind through the epoch's collector.
fn contained(drop: impl FnOnce()) {
    if catch_unwind(AssertUnwindSafe(drop)).is_err() {
        DROP_PANICS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A value its remover took out of the entry (`Entry::take_value`), if it took one. Dropped
/// on the spot, with a destructor panic contained and counted as for the epoch's deferred
/// drops, also when it is dropped by an unwinding (a panicking weigher or `V: Clone` after
/// the take): a second panic there would abort the process.
pub(crate) struct Taken<V>(Option<V>);

impl<V> Taken<V> {
    pub(crate) fn new(value: Option<V>) -> Taken<V> {
        Taken(value)
    }

    /// The value, for a caller that hands it on (`fetch_and_delete`, the listener's list).
    pub(crate) fn into_inner(mut self) -> Option<V> {
        self.0.take()
    }
}

impl<V> Drop for Taken<V> {
    fn drop(&mut self) {
        if let Some(value) = self.0.take() {
            contained(|| drop(value));
        }
    }
}

/// Frees an entry whose value is already dropped: its key and its memory.
///
/// # Safety
/// `entry` came from `Box::into_raw`, its value was dropped, and nothing can reach it.
unsafe fn free_shell<K, V>(entry: *mut Entry<K, V>) {
    // SAFETY: forwarded from the caller; the value is `ManuallyDrop`, so it is not dropped again.
    contained(|| drop(unsafe { Box::from_raw(entry) }));
}

/// Frees an entry nobody else can reach, value and rest: one never published (a refused
/// `try_set` or `set_if_absent`), or one still linked in a table being dropped.
///
/// # Safety
/// `entry` came from `Box::into_raw` and nothing else can reach it.
pub(crate) unsafe fn destroy_whole<K, V>(entry: *mut Entry<K, V>) {
    // SAFETY: forwarded from the caller.
    unsafe {
        contained(|| (*entry).drop_value());
        free_shell(entry);
    }
}

/// The epoch side, called once by the thread that unlinked `entry`: drop the value (unless
/// its remover took it) once no pinned thread can still see it. With `flush`, the thread's
/// epoch bag is flushed so that this happens within an epoch advance instead of after 64
/// more retirements.
///
/// # Safety
/// `entry` was just unlinked from the table by the caller, who is pinned by `guard`.
pub(crate) unsafe fn release_value_later<K, V>(entry: *mut Entry<K, V>, guard: &Guard, flush: bool) {
    #[cfg(loom_broken = "premature_free")]
    {
        // Broken on purpose: drop the value now, while readers may still hold it.
        // SAFETY: none; this variant exists to show that the loom models catch it.
        unsafe {
            contained(|| (*entry).drop_value());
            (*entry).life.release_value();
        }
        let _ = (guard, flush);
        return;
    }
    #[allow(unreachable_code)]
    let owned = Unlinked(entry);
    // SAFETY: the closure runs after every thread pinned now has unpinned; no thread can
    // reach the entry afterwards (it is unlinked), and the entry's memory is freed only
    // after both sides let go, so it is alive while the closure runs. The closure touches
    // only the entry, so it may run on any thread, even after the buffer is gone.
    unsafe {
        guard.defer_unchecked(move || {
            let owned = owned;
            let entry = owned.0;
            contained(|| (*entry).drop_value());
            if (*entry).life.release_value() {
                free_shell(entry);
            }
        })
    };
    if flush {
        guard.flush();
    }
}

/// The janitor side lets go of an unlinked `entry`.
///
/// # Safety
/// `entry` is unlinked (its epoch side is under way), off every intake and off any wheel
/// that will be touched again; each entry gets this call once.
pub(crate) unsafe fn release_janitor_hold<K, V>(entry: *mut Entry<K, V>) {
    // SAFETY: the entry is alive until both sides have let go, and we have not.
    if unsafe { (*entry).life.release_janitor() } {
        // The epoch side ran, so no reader is left: free now.
        // SAFETY: both sides are done; nothing can reach the entry.
        unsafe { free_shell(entry) };
    }
}

/// An unlinked entry owned by a deferred closure, which may run on another thread.
struct Unlinked<K, V>(*mut Entry<K, V>);

// SAFETY: entries are only created with `K: Send + Sync, V: Send + Sync`, and the closure
// accesses the entry only as the protocol above allows.
unsafe impl<K, V> Send for Unlinked<K, V> {}
