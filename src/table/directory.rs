//! The bucket directory: a growable array of pointers to bucket dummies.
//!
//! Bucket `b` lives in segment `64 - b.leading_zeros()` (segment 0 holds bucket 0,
//! segment `s > 0` holds buckets `2^(s-1) .. 2^s`), so doubling the bucket count only
//! ever adds a segment: nothing is copied, and a bucket's slot never moves. Segments
//! are allocated on first use by whoever gets there first (one CAS; a loser frees its
//! copy). Slots are filled lazily, as the split-ordered list needs them.

use std::ptr;

use super::entry::Link;
use crate::sync::{AtomicPtr, AtomicUsize, Ordering};

/// The most buckets a capacity hint can ask for up front (a 64 MiB top segment).
const MAX_INITIAL_BUCKETS: usize = 1 << 24;

/// At most 2^63 buckets: 64 segments.
const SEGMENTS: usize = 64;

pub(crate) struct Directory {
    segments: [AtomicPtr<AtomicPtr<Link>>; SEGMENTS],
    /// The number of buckets in use: a power of two that only grows.
    buckets: AtomicUsize,
}

fn segment_of(bucket: usize) -> (usize, usize) {
    match bucket {
        0 => (0, 0),
        _ => {
            let segment = usize::BITS as usize - bucket.leading_zeros() as usize;
            (segment, bucket - (1 << (segment - 1)))
        }
    }
}

fn segment_len(segment: usize) -> usize {
    match segment {
        0 => 1,
        _ => 1 << (segment - 1),
    }
}

impl Directory {
    pub(crate) fn new(buckets: usize) -> Directory {
        Directory {
            segments: std::array::from_fn(|_| AtomicPtr::new(ptr::null_mut())),
            // Clamped: a segment is allocated whole, so a huge capacity hint must not turn
            // into one huge allocation up front (the table grows past it on its own).
            buckets: AtomicUsize::new(buckets.clamp(2, MAX_INITIAL_BUCKETS).next_power_of_two()),
        }
    }

    pub(crate) fn bucket_count(&self) -> usize {
        self.buckets.load(Ordering::Acquire)
    }

    /// Doubles the bucket count if it is still `from`. One CAS; losers do nothing.
    pub(crate) fn grow(&self, from: usize) {
        if let Some(to) = from.checked_mul(2).filter(|&to| to <= 1 << 62) {
            let _ = self.buckets.compare_exchange(from, to, Ordering::AcqRel, Ordering::Relaxed);
        }
    }

    /// The dummy of `bucket`, or null if the bucket is not initialized yet.
    pub(crate) fn get(&self, bucket: usize) -> *mut Link {
        let (segment, index) = segment_of(bucket);
        let slots = self.segments[segment].load(Ordering::Acquire);
        if slots.is_null() {
            return ptr::null_mut();
        }
        // SAFETY: a published segment holds `segment_len(segment)` slots and lives as long
        // as the directory; `index < segment_len(segment)` by `segment_of`.
        unsafe { (*slots.add(index)).load(Ordering::Acquire) }
    }

    /// Records `dummy` as `bucket`'s dummy. Every caller for one bucket passes the same
    /// node (the list holds one dummy per bucket), so a lost race changes nothing.
    pub(crate) fn set(&self, bucket: usize, dummy: *mut Link) {
        let (segment, index) = segment_of(bucket);
        let slots = self.segment(segment);
        // SAFETY: as in `get`; the segment was just made sure to exist.
        let slot = unsafe { &*slots.add(index) };
        let _ = slot.compare_exchange(ptr::null_mut(), dummy, Ordering::AcqRel, Ordering::Acquire);
    }

    /// The slots of `segment`, allocating them on first use.
    fn segment(&self, segment: usize) -> *mut AtomicPtr<Link> {
        let current = self.segments[segment].load(Ordering::Acquire);
        if !current.is_null() {
            return current;
        }
        let fresh: Box<[AtomicPtr<Link>]> =
            (0..segment_len(segment)).map(|_| AtomicPtr::new(ptr::null_mut())).collect();
        let fresh = Box::into_raw(fresh) as *mut AtomicPtr<Link>;
        match self.segments[segment].compare_exchange(ptr::null_mut(), fresh, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => fresh,
            Err(winner) => {
                // SAFETY: `fresh` was never published; it is ours to free, with the length it
                // was made with.
                drop(unsafe { Box::from_raw(ptr::slice_from_raw_parts_mut(fresh, segment_len(segment))) });
                winner
            }
        }
    }
}

impl Drop for Directory {
    fn drop(&mut self) {
        for (segment, slots) in self.segments.iter().enumerate() {
            let slots = slots.load(Ordering::Acquire);
            if !slots.is_null() {
                // SAFETY: published segments were made by `segment` with this length, and
                // `&mut self` means nobody else can see them any more.
                drop(unsafe { Box::from_raw(ptr::slice_from_raw_parts_mut(slots, segment_len(segment))) });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_double_and_never_move_a_bucket() {
        assert_eq!(segment_of(0), (0, 0));
        assert_eq!(segment_of(1), (1, 0));
        assert_eq!(segment_of(2), (2, 0));
        assert_eq!(segment_of(3), (2, 1));
        assert_eq!(segment_of(4), (3, 0));
        assert_eq!(segment_of(7), (3, 3));
        assert_eq!(segment_of(1 << 40), (41, 0));
        for bucket in 0..4096 {
            let (segment, index) = segment_of(bucket);
            assert!(index < segment_len(segment));
        }
    }

    #[test]
    fn grow_doubles_once_per_observed_count() {
        let directory = Directory::new(3);
        assert_eq!(directory.bucket_count(), 4);
        directory.grow(4);
        directory.grow(4); // a second thread that saw 4 too: no double growth
        assert_eq!(directory.bucket_count(), 8);
    }
}
