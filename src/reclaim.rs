//! Freeing entries: the one place that does it.
//!
//! An unlinked entry has two holders that let go independently:
//!
//! - the **value side**: the thread that unlinks the entry from the table defers, through
//!   crossbeam-epoch, the drop of its value; the deferred closure runs once every thread
//!   that could have reached the entry has unpinned, and sets `VALUE_DROPPED`. A value its
//!   remover took already (a leased one, see `crate::lease`: dropped at once ([`Taken`]) or
//!   handed to the remover's caller) has nothing left to wait for: the unlinker sets
//!   `VALUE_DROPPED` at once ([`release_taken_value`]), and defers nothing;
//! - the **janitor side**: the janitor (or, after `done`, the unlinker) lets go once the
//!   entry is off its intakes and its wheel, **one grace period later**: it collects the
//!   entries it lets go of in a run ([`JanitorReleases`]) and defers one closure for them
//!   all, which sets `JANITOR_DONE` on each. (On drop, the dropping thread lets go at once:
//!   nothing else can reach the map.)
//!
//! Whichever sets its flag second (one `fetch_or` on the entry's `life` word decides)
//! frees the rest of the entry. Both sides' deferrals start after the unlink (the janitor
//! takes an entry only once it is unlinked), so the shell is freed only after every thread
//! that could have reached it has unpinned, whichever side is second; a removed value
//! waits for one epoch advance at most, whatever the janitor is doing; and the entry's
//! memory is freed exactly once. Entries still in the table when it is dropped are freed
//! whole, directly.
//!
//! So a removal whose remover took the value (every removal of a `DownloadBuffer` payload no
//! reader was reading) costs its thread no epoch deferral at all: the worker allocates no
//! epoch bags, and the shells are freed in batches, wherever the epoch runs the janitor's
//! closures.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::AtomicU64;

use crate::entry::Entry;
use crate::sync::epoch::Guard;

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

/// The value side of an unlinked `entry` whose remover took its value: nothing of it is
/// left to wait for, so it lets go at once. The shell waits for the janitor side, which
/// lets go one grace period after it takes the entry, which it does after this unlink.
///
/// # Safety
/// `entry` was just unlinked by the caller (who is pinned), and its value's take happened
/// before (its lease reads `TAKEN`); each entry gets one value side.
pub(crate) unsafe fn release_taken_value<K, V>(entry: *mut Entry<K, V>) {
    // SAFETY: alive: the janitor side has not let go (it comes after this unlink).
    let janitor_done = unsafe { (*entry).life.release_value() };
    // The janitor side lets go only after it takes the entry, which it does only after the
    // caller's `unlink`, which comes after this: the janitor side is never first here.
    debug_assert!(!janitor_done, "the janitor side let go of an entry before its unlink");
}

/// The janitor side lets go of an unlinked `entry` now.
///
/// # Safety
/// `entry` is unlinked, off every intake and off any wheel that will be touched again;
/// each entry gets this call once; and either no thread can still reach it (a grace period
/// has passed since it was unlinked: the closure of [`JanitorReleases`]; or nothing else
/// can reach the map: it is being dropped), or this side is first: the value side has not
/// let go and will only after a grace period since the unlink (its deferral, queued by the
/// caller under a guard it still holds), so that side frees the entry.
pub(crate) unsafe fn release_janitor_hold<K, V>(entry: *mut Entry<K, V>) {
    // SAFETY: the entry is alive until both sides have let go, and we have not.
    if unsafe { (*entry).life.release_janitor() } {
        // The value side let go too, and no reader is left (the caller's contract).
        // SAFETY: both sides are done; nothing can reach the entry.
        unsafe { free_shell(entry) };
    }
}

/// Entries whose janitor side lets go, collected over a janitor run and released together
/// one grace period later: one epoch deferral for all of them. Chained through their
/// `intake_next`, which is free once an entry is off every intake. Released when dropped
/// too (a run that panics).
pub(crate) struct JanitorReleases<K, V> {
    head: *mut Entry<K, V>,
}

impl<K, V> JanitorReleases<K, V> {
    pub(crate) fn new() -> JanitorReleases<K, V> {
        JanitorReleases { head: std::ptr::null_mut() }
    }

    /// Adds `entry`.
    ///
    /// # Safety
    /// `entry` is unlinked, off every intake and off any wheel that will be touched
    /// again; it is added once, and nobody else writes its `intake_next` from now on.
    pub(crate) unsafe fn push(&mut self, entry: *mut Entry<K, V>) {
        #[cfg(loom_broken = "janitor_releases_now")]
        {
            // Broken on purpose: let go now, with no grace period, while a reader that
            // found the entry before its unlink may still be reading it.
            // SAFETY: none; this variant exists to show that the loom models catch it.
            unsafe { release_janitor_hold(entry) };
            return;
        }
        // SAFETY: alive (the janitor side has not let go), and its `intake_next` is ours.
        #[allow(unreachable_code)]
        unsafe {
            (*entry).intake_next.store(self.head, crate::sync::Ordering::Relaxed)
        };
        self.head = entry;
    }

    /// Whether no entry was added since the last release.
    pub(crate) fn is_empty(&self) -> bool {
        self.head.is_null()
    }

    /// Defers the release of every entry added so far, pinned by `guard`.
    pub(crate) fn release_later(&mut self, guard: &Guard) {
        let head = std::mem::replace(&mut self.head, std::ptr::null_mut());
        if head.is_null() {
            return;
        }
        let owned = Unlinked(head);
        // SAFETY: the closure runs after every thread pinned now has unpinned; each entry
        // was unlinked before it was added, so no thread pinned later can reach it, and
        // none of them is freed before its janitor side lets go, here. The closure touches
        // only the entries, so it may run on any thread, even after the map is gone.
        unsafe {
            guard.defer_unchecked(move || {
                let owned = owned;
                let mut entry = owned.0;
                while !entry.is_null() {
                    // Read before the release, which may free the entry.
                    let next = (*entry).intake_next.load(crate::sync::Ordering::Relaxed);
                    release_janitor_hold(entry);
                    entry = next;
                }
            })
        };
    }
}

impl<K, V> Drop for JanitorReleases<K, V> {
    fn drop(&mut self) {
        if !self.head.is_null() {
            self.release_later(&crate::sync::epoch::pin());
        }
    }
}

/// An unlinked entry owned by a deferred closure, which may run on another thread.
struct Unlinked<K, V>(*mut Entry<K, V>);

// SAFETY: entries are only created with `K: Send + Sync, V: Send + Sync`, and the closure
// accesses the entry only as the protocol above allows.
unsafe impl<K, V> Send for Unlinked<K, V> {}
