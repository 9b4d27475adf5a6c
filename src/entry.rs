//! The table's item: a stored key and value, with the state the table, the janitor and
//! the wheel share.

use std::mem::{offset_of, size_of, ManuallyDrop};
use std::ptr;

use crate::lease::Lease;
use crate::life::Life;
use crate::slots::{SlotLinks, Slotted};
use crate::sync::{prefetch, AtomicPtr, UnsafeCell};
use crate::wheel::{Timer, TimerLinks};

/// A stored key and value, with the state the table, the janitor and the wheel share.
///
/// Field order follows a lookup: `links`, `life`, `key`, `value` and `lease` (what `get`
/// reads) come first, so that they share as few cache lines as possible; the janitor's
/// fields follow. The lease (4 bytes) and the wheel links (20, packed to 4-byte alignment)
/// fill 24 bytes together, so the lease costs no padding.
#[repr(C)]
pub(crate) struct Entry<K, V> {
    /// The table's links: removal mark and successor, copy ticket.
    pub(crate) links: SlotLinks<Entry<K, V>>,
    /// Deadline and flags; see [`crate::life`].
    pub(crate) life: Life,
    pub(crate) key: K,
    /// Dropped on its own, before the rest of the entry (see `crate::reclaim`), or taken
    /// out by its remover (see [`crate::lease`]).
    value: UnsafeCell<ManuallyDrop<V>>,
    /// Who may still read a leased value (see [`crate::lease`]).
    pub(crate) lease: Lease,
    /// The wheel's links; only the janitor touches them.
    timer: UnsafeCell<TimerLinks<Entry<K, V>>>,
    /// The next entry in whichever list holds this entry: first the janitor's intake of new
    /// entries, later (once `TAKEN`) the table's intake of unlinked ones, last the janitor's
    /// releases of one run (`crate::reclaim::JanitorReleases`), once it is off both.
    pub(crate) intake_next: AtomicPtr<Entry<K, V>>,
}

impl<K, V> Entry<K, V> {
    /// A new, unpublished entry.
    pub(crate) fn new(key: K, value: V, life: Life, leased: bool) -> Entry<K, V> {
        Entry {
            links: SlotLinks::new(),
            life,
            key,
            value: UnsafeCell::new(ManuallyDrop::new(value)),
            intake_next: AtomicPtr::new(ptr::null_mut()),
            timer: UnsafeCell::new(TimerLinks::new()),
            lease: Lease::new(leased),
        }
    }

    /// The value.
    ///
    /// # Safety
    /// The caller reached the entry through the table (or owns it) and stays pinned while
    /// it uses the reference: the value is dropped only after every thread that could
    /// have reached the entry has unpinned.
    pub(crate) unsafe fn value(&self) -> &V {
        // SAFETY: per the caller's contract, the value is not dropped while borrowed; it is
        // never mutated before that.
        self.value.with(|value| unsafe { &**value })
    }

    /// Drops the value in place, unless its remover took it ([`Entry::take_value`]).
    ///
    /// # Safety
    /// Called once, when no thread can reach the entry's value any more, and after the
    /// take, if there was one (a grace period after the unlink, or with `&mut` on the table).
    pub(crate) unsafe fn drop_value(&self) {
        if self.lease.is_taken() {
            return;
        }
        // SAFETY: per the caller's contract, nobody else accesses the value, and it is
        // dropped only once; not taken, so it is still here.
        self.value.with_mut(|value| unsafe { ManuallyDrop::drop(&mut *value) })
    }

    /// Moves the value out if it is leased and no reader is in (see [`crate::lease`]):
    /// then nobody reads it again and the epoch's deferred drop leaves it alone.
    ///
    /// # Safety
    /// The caller marked the entry (it is its remover) and is done reading the value; each
    /// entry gets this call at most once, and only if no other party may read the value
    /// unleased afterwards (the janitor reads an entry it claimed unleased: a remover whose
    /// settle found the entry claimed does not take).
    pub(crate) unsafe fn take_value(&self) -> Option<V> {
        if !self.lease.take() {
            return None;
        }
        // SAFETY: the take shut every reader out and was the only one; `drop_value` sees
        // `TAKEN` and does not drop the value again.
        Some(self.value.with_mut(|value| unsafe { ManuallyDrop::take(&mut *value) }))
    }

    /// Starts loading the cache lines of the entry at `entry` that the janitor reads and
    /// writes as it takes the entry off an intake and later lets go of it: every field's
    /// first and last byte, so every line of an entry of small fields, and not the interior
    /// of a large key or value. `entry` may be any pointer, null included: the address is
    /// only computed, and a prefetch reads nothing the program sees. The intake walk calls
    /// it on the entry after the one it works on, so that one entry's misses overlap the
    /// work on the one before (whose `life` RMW, when it takes a new entry, holds back the
    /// loads after it).
    #[inline]
    pub(crate) fn prefetch_for_janitor(entry: *const Entry<K, V>) {
        if entry.is_null() {
            return;
        }
        let start = entry.cast::<u8>();
        let fields = [
            (offset_of!(Self, links), size_of::<SlotLinks<Self>>()),
            (offset_of!(Self, life), size_of::<Life>()),
            (offset_of!(Self, key), size_of::<K>()),
            (offset_of!(Self, value), size_of::<V>()),
            (offset_of!(Self, lease), size_of::<Lease>()),
            (offset_of!(Self, timer), size_of::<TimerLinks<Self>>()),
            (offset_of!(Self, intake_next), size_of::<AtomicPtr<Self>>()),
        ];
        for (offset, size) in fields {
            prefetch(start.wrapping_add(offset));
            prefetch(start.wrapping_add(offset + size.saturating_sub(1)));
        }
    }

    /// Whether the entry has been logically removed from the table.
    pub(crate) fn is_removed(&self) -> bool {
        self.links.is_marked()
    }
}

// SAFETY: `links` is a field of the entry, and entries are boxes of an 8-aligned type.
unsafe impl<K, V> Slotted for Entry<K, V> {
    type Key = K;

    fn key(&self) -> &K {
        &self.key
    }

    fn slot_links(&self) -> &SlotLinks<Entry<K, V>> {
        &self.links
    }
}

// SAFETY: `timer` is a field of the entry: the same cell for the entry's whole life.
unsafe impl<K, V> Timer for Entry<K, V> {
    fn timer_links(&self) -> &UnsafeCell<TimerLinks<Entry<K, V>>> {
        &self.timer
    }
}

/// Makes an unpublished entry for `key` with initial `life` word; `leased` if its readers
/// count themselves in (a large value, see `crate::lease`).
pub(crate) fn new_entry<K, V>(key: K, value: V, life: Life, leased: bool) -> *mut Entry<K, V> {
    Box::into_raw(Box::new(Entry::new(key, value, life, leased)))
}

#[cfg(all(test, not(crossbeam_loom)))]
mod tests {
    use super::*;

    #[test]
    fn the_lease_costs_no_padding() {
        // 16 links + 8 life + 16 key + 32 value + 4 lease + 20 timer + 8 intake_next.
        assert_eq!(std::mem::size_of::<Entry<crate::BufferId, bytes::Bytes>>(), 104);
        assert_eq!(std::mem::size_of::<Entry<u64, u64>>(), 72);
    }

    #[test]
    fn a_prefetch_takes_any_pointer_and_changes_nothing() {
        // The janitor prefetches the pointer after the one it works on, which is null at the
        // end of an intake, for entries of any size: none of it may fault or write.
        Entry::<u64, u64>::prefetch_for_janitor(ptr::null());
        Entry::<u64, u64>::prefetch_for_janitor(ptr::dangling());
        Entry::<crate::BufferId, [u8; 1000]>::prefetch_for_janitor(ptr::dangling());
        let entry = new_entry(7u64, 11u64, Life::new(5, false), false);
        Entry::prefetch_for_janitor(entry);
        // SAFETY: made above by `new_entry`, never published.
        let entry = unsafe { Box::from_raw(entry) };
        // SAFETY: owned here; nobody else can reach the value.
        assert_eq!((entry.key, unsafe { *entry.value() }), (7, 11));
        assert_eq!(entry.life.load().deadline(), 5);
        // SAFETY: owned, dropped once; the box frees the rest.
        unsafe { entry.drop_value() };
    }
}
