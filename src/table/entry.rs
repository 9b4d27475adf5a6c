//! The nodes of the table's list: bucket dummies (a bare [`Link`]) and entries.

use std::mem::ManuallyDrop;
use std::ptr::{self, NonNull};

use crate::lease::Lease;
use crate::life::Life;
use crate::sync::{AtomicPtr, Ordering, UnsafeCell};
use crate::wheel::{Timer, TimerLinks};

/// The low pointer bit of a `next` field: set when its node is logically removed.
pub(crate) const MARK: usize = 1;

/// The list links common to every node. The first field of [`Entry`], so a pointer to a
/// regular node's `Link` is a pointer to its `Entry`.
#[repr(C)]
pub(crate) struct Link {
    /// The successor, tagged with [`MARK`] once this node is logically removed; frozen
    /// from then on.
    pub(crate) next: AtomicPtr<Link>,
    /// The split-order key: bit-reversed hash. Odd for entries, even for bucket dummies.
    pub(crate) so_key: u64,
}

impl Link {
    pub(crate) fn new(so_key: u64) -> Link {
        Link { next: AtomicPtr::new(ptr::null_mut()), so_key }
    }

    /// Whether this node is an [`Entry`] (as opposed to a bucket dummy).
    pub(crate) fn is_entry(&self) -> bool {
        self.so_key & 1 == 1
    }
}

/// The split-order key of an entry with hash `hash` (odd: the top hash bit is replaced by
/// a set bit that reverses into bit 0).
pub(crate) fn entry_key(hash: u64) -> u64 {
    (hash | 1 << 63).reverse_bits()
}

/// The split-order key of bucket `bucket`'s dummy (even).
pub(crate) fn dummy_key(bucket: usize) -> u64 {
    (bucket as u64).reverse_bits()
}

/// The hash an entry's split-order key came from (without its top bit).
pub(crate) fn hash_of(so_key: u64) -> u64 {
    so_key.reverse_bits() & !(1 << 63)
}

pub(crate) fn is_marked(ptr: *mut Link) -> bool {
    ptr.addr() & MARK != 0
}

pub(crate) fn marked(ptr: *mut Link) -> *mut Link {
    ptr.map_addr(|addr| addr | MARK)
}

pub(crate) fn unmarked(ptr: *mut Link) -> *mut Link {
    ptr.map_addr(|addr| addr & !MARK)
}

/// A stored key and value, with the state the table, the janitor and the wheel share.
///
/// Field order follows a lookup: `link`, `life`, `key`, `value` and `lease` (what `get`
/// reads) come first, so that they share as few cache lines as possible; the janitor's
/// fields follow. The lease (4 bytes) and the wheel links (20, packed to 4-byte alignment)
/// fill 24 bytes together, so the lease costs no padding.
#[repr(C)]
pub(crate) struct Entry<K, V> {
    pub(crate) link: Link,
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
    /// The next entry in whichever intake stack holds this entry: first the janitor's
    /// intake of new entries, later (once `TAKEN`) the table's intake of unlinked ones.
    pub(crate) intake_next: AtomicPtr<Entry<K, V>>,
}

impl<K, V> Entry<K, V> {
    /// A new, unpublished entry.
    pub(crate) fn new(so_key: u64, key: K, value: V, life: Life, leased: bool) -> Entry<K, V> {
        Entry {
            link: Link::new(so_key),
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

    /// The entry whose link `link` is.
    ///
    /// # Safety
    /// `link` points to a live node whose `so_key` is odd (an entry).
    pub(crate) unsafe fn from_link<'a>(link: NonNull<Link>) -> &'a Entry<K, V> {
        // SAFETY: `Entry` is `repr(C)` with `link` first, and the caller says this node is
        // an `Entry<K, V>` that is alive.
        unsafe { link.cast::<Entry<K, V>>().as_ref() }
    }

    /// Whether the entry has been logically removed from the table.
    pub(crate) fn is_removed(&self) -> bool {
        is_marked(self.link.next.load(Ordering::Acquire))
    }
}

// SAFETY: `timer` is a field of the entry: the same cell for the entry's whole life.
unsafe impl<K, V> Timer for Entry<K, V> {
    fn timer_links(&self) -> &UnsafeCell<TimerLinks<Entry<K, V>>> {
        &self.timer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_order_keys_sort_buckets_before_their_entries() {
        // Bucket b's dummy sorts before every entry whose hash ends in b's bits.
        for hash in [0u64, 1, 2, 3, 6, 0xdead_beef, u64::MAX] {
            for bits in 1..6 {
                let bucket = (hash & ((1 << bits) - 1)) as usize;
                assert!(dummy_key(bucket) < entry_key(hash));
            }
            assert_eq!(hash_of(entry_key(hash)), hash & !(1 << 63));
            assert_eq!(entry_key(hash) & 1, 1);
        }
        assert_eq!(dummy_key(0), 0);
        assert!(dummy_key(1) > dummy_key(2), "bucket 1 splits off after bucket 2's range");
    }

    #[test]
    #[cfg(not(crossbeam_loom))]
    fn the_lease_costs_no_padding() {
        // 16 link + 8 life + 16 key + 32 value + 4 lease + 20 timer + 8 intake_next.
        assert_eq!(std::mem::size_of::<Entry<crate::BufferId, bytes::Bytes>>(), 104);
        assert_eq!(std::mem::size_of::<Entry<u64, u64>>(), 72);
    }

    #[test]
    fn marks_live_in_the_low_bit() {
        let mut link = Link::new(0);
        let p: *mut Link = &mut link;
        assert!(!is_marked(p));
        assert!(is_marked(marked(p)));
        assert_eq!(unmarked(marked(p)), p);
    }
}
