//! One generation of the slot array, and the bookkeeping of its migration to the next.
//!
//! A table has one generation, or two while a migration runs: the older (the root) being
//! copied into the newer. A generation migrates in chunks: helpers claim the next chunk
//! with one `fetch_add`, and once every chunk is claimed, a helper that finds one not
//! finished redoes it (finalizing a slot is idempotent), so a claimer preempted mid-chunk
//! delays nobody.

use crate::counter::Counter;
use crate::sync::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};

use super::word;

/// Slots per migration chunk (2 under loom, so that the models migrate in several steps).
const CHUNK: usize = if cfg!(crossbeam_loom) { 2 } else { 512 };

pub(crate) struct Generation<T> {
    /// Names this generation in the items' copy tickets; never 0 (a fresh ticket).
    pub(crate) id: u16,
    pub(crate) slots: Box<[AtomicPtr<T>]>,
    pub(crate) mask: usize,
    /// Slots no longer empty (items, tombstones, reservations): the load that decides when
    /// to migrate. Sampled, like the table's length.
    pub(crate) used: Counter,
    /// The generation this one migrates into; set once.
    pub(crate) next: AtomicPtr<Generation<T>>,
    /// Set by the thread that allocates `next`, so that others do not allocate too (unless
    /// this one fills up meanwhile: see `Slots::start_migration`).
    pub(crate) allocating: AtomicBool,
    claimed: AtomicUsize,
    finished: AtomicUsize,
    chunk_done: Box<[AtomicBool]>,
}

/// `capacity` empty slots. Zeroed memory from the allocator where it can be (an empty slot
/// is a null pointer): a large successor then costs no write per slot in the `set` that
/// allocates it (calloc maps fresh zero pages for a large block).
fn empty_slots<T>(capacity: usize) -> Box<[AtomicPtr<T>]> {
    #[cfg(not(crossbeam_loom))]
    {
        const _: () = assert!(word::EMPTY_IS_NULL);
        assert!(capacity > 0, "a generation has at least one slot");
        let layout = std::alloc::Layout::array::<AtomicPtr<T>>(capacity).expect("a slot array's size fits in isize");
        // SAFETY: the layout's size is not zero (capacity > 0, slots are 8 bytes).
        let memory = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<AtomicPtr<T>>();
        if memory.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        // SAFETY: a fresh block of `capacity` slots from the global allocator with the
        // array's layout, as `Box<[_]>` frees it; all zero, and an all-zero `AtomicPtr` is
        // the null pointer, `word::empty()`.
        unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(memory, capacity)) }
    }
    #[cfg(crossbeam_loom)]
    (0..capacity).map(|_| AtomicPtr::new(word::empty())).collect()
}

impl<T> Generation<T> {
    /// `capacity` is a power of two.
    pub(crate) fn new(id: u16, capacity: usize) -> Generation<T> {
        debug_assert!(capacity.is_power_of_two());
        let chunks = capacity.div_ceil(CHUNK);
        Generation {
            id,
            slots: empty_slots(capacity),
            mask: capacity - 1,
            used: Counter::new(),
            next: AtomicPtr::new(std::ptr::null_mut()),
            allocating: AtomicBool::new(false),
            claimed: AtomicUsize::new(0),
            finished: AtomicUsize::new(0),
            chunk_done: (0..chunks).map(|_| AtomicBool::new(false)).collect(),
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.mask + 1
    }

    /// The id of the generation after this one (ids wrap, skipping 0).
    pub(crate) fn next_id(&self) -> u16 {
        self.id % u16::MAX + 1
    }

    pub(crate) fn chunks(&self) -> usize {
        self.chunk_done.len()
    }

    /// The slots of `chunk`.
    pub(crate) fn chunk_range(&self, chunk: usize) -> std::ops::Range<usize> {
        chunk * CHUNK..((chunk + 1) * CHUNK).min(self.capacity())
    }

    /// A chunk to migrate: the next unclaimed one, or, once all are claimed, one not
    /// finished yet (its claimer may be preempted); `None` when every chunk is finished
    /// (by the count, or, while the count lags, by every chunk's flag).
    pub(crate) fn chunk_to_migrate(&self) -> Option<usize> {
        if self.claimed.load(Ordering::Relaxed) < self.chunks() {
            let chunk = self.claimed.fetch_add(1, Ordering::Relaxed);
            if chunk < self.chunks() {
                return Some(chunk);
            }
        }
        if self.is_migrated() {
            return None;
        }
        // Each thread starts its search at its own chunk, so that helpers spread over the
        // unfinished chunks rather than all redoing the first (and scanning from 0 each).
        let chunks = self.chunks();
        let start = if cfg!(crossbeam_loom) { 0 } else { crate::sync::thread_index() % chunks };
        (0..chunks)
            .map(|offset| (start + offset) % chunks)
            .find(|&chunk| !self.chunk_done[chunk].load(Ordering::Acquire))
    }

    /// Records that every slot of `chunk` is finalized.
    pub(crate) fn finish_chunk(&self, chunk: usize) {
        if !self.chunk_done[chunk].swap(true, Ordering::AcqRel) {
            self.finished.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Whether every slot is finalized (so nothing is read from this generation any more).
    pub(crate) fn is_migrated(&self) -> bool {
        self.finished.load(Ordering::Acquire) == self.chunks()
    }
}
