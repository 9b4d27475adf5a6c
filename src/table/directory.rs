//! The bucket directory: a growable array of buckets, each holding its dummy node inline.
//!
//! Bucket `b` lives in segment `64 - b.leading_zeros()` (segment 0 holds bucket 0,
//! segment `s > 0` holds buckets `2^(s-1) .. 2^s`), so doubling the bucket count only
//! ever adds a segment: nothing is copied, and a bucket never moves. Segments are
//! allocated on first use by whoever gets there first (one CAS; a loser frees its copy,
//! whose dummies nobody has seen).
//!
//! The dummy lives in the bucket itself, not behind a pointer: a lookup's first load (the
//! bucket's state, then the dummy's `next`, on the same cache line) is one miss instead of
//! two (a slot, then a separately allocated dummy). The price is that a dummy cannot be
//! made by every thread that wants it and raced in: one thread *claims* the bucket (one
//! CAS), links its dummy into the list, and marks it linked. Until then every other thread
//! starts from the parent bucket, whose range contains this one's: a longer walk, never a
//! wait.

use std::ptr;

use super::entry::{dummy_key, Link};
use crate::sync::{prefetch, AtomicPtr, AtomicUsize, Ordering};

/// The most buckets a capacity hint can ask for up front (a 384 MiB top segment).
const MAX_INITIAL_BUCKETS: usize = 1 << 24;

/// At most 2^63 buckets: 64 segments.
const SEGMENTS: usize = 64;

/// A bucket's dummy is not in the list yet, and nobody is linking it.
const UNLINKED: usize = 0;
/// One thread has claimed the bucket and is linking its dummy.
const CLAIMED: usize = 1;
/// The dummy is in the list: searches may start from it.
const LINKED: usize = 2;

/// One bucket: its dummy node and how far its linking has got.
struct Bucket {
    dummy: Link,
    state: AtomicUsize,
}

pub(crate) struct Directory {
    segments: [AtomicPtr<Bucket>; SEGMENTS],
    /// The number of buckets in use: a power of two that only grows.
    buckets: AtomicUsize,
}

/// What [`Directory::claim`] found.
pub(crate) enum Claim<'a> {
    /// The dummy is linked already.
    Linked(&'a Link),
    /// The caller owns the unlinked dummy: it links it, then calls [`Directory::publish`].
    Won(&'a Link),
    /// Another thread is linking it.
    Busy,
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

/// The first bucket of `segment`.
fn segment_base(segment: usize) -> usize {
    match segment {
        0 => 0,
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

    /// The dummy of `bucket` if it is linked into the list; never allocates.
    #[inline]
    pub(crate) fn get(&self, bucket: usize) -> Option<&Link> {
        let (segment, index) = segment_of(bucket);
        let buckets = self.segments[segment].load(Ordering::Acquire);
        if buckets.is_null() {
            return None;
        }
        // SAFETY: a published segment holds `segment_len(segment)` buckets and lives as long
        // as the directory; `index < segment_len(segment)` by `segment_of`.
        let bucket = unsafe { &*buckets.add(index) };
        // Acquire: pairs with `publish`, so the dummy's links are seen as linked.
        (bucket.state.load(Ordering::Acquire) == LINKED).then_some(&bucket.dummy)
    }

    /// Starts loading `bucket`'s cache line, reading nothing of the bucket itself.
    #[inline]
    pub(crate) fn prefetch(&self, bucket: usize) {
        let (segment, index) = segment_of(bucket);
        let buckets = self.segments[segment].load(Ordering::Relaxed);
        if !buckets.is_null() {
            // `wrapping_add`: only an address is formed, and only for a hint.
            prefetch(buckets.wrapping_add(index));
        }
    }

    /// Whether `bucket`'s segment is allocated (then so are all its ancestors': a bucket is
    /// claimed only after its parent is linked or claimed).
    #[inline]
    pub(crate) fn has_segment(&self, bucket: usize) -> bool {
        !self.segments[segment_of(bucket).0].load(Ordering::Acquire).is_null()
    }

    /// Claims `bucket` for linking its dummy, allocating its segment if needed.
    pub(crate) fn claim(&self, bucket: usize) -> Claim<'_> {
        let (segment, index) = segment_of(bucket);
        // SAFETY: as in `get`; the segment was just made sure to exist.
        let bucket = unsafe { &*self.segment(segment).add(index) };
        match bucket.state.compare_exchange(UNLINKED, CLAIMED, Ordering::Acquire, Ordering::Acquire) {
            Ok(_) => Claim::Won(&bucket.dummy),
            Err(LINKED) => Claim::Linked(&bucket.dummy),
            Err(_) => Claim::Busy,
        }
    }

    /// Records that the claimer has linked `bucket`'s dummy into the list.
    pub(crate) fn publish(&self, bucket: usize) {
        let (segment, index) = segment_of(bucket);
        let buckets = self.segments[segment].load(Ordering::Acquire);
        debug_assert!(!buckets.is_null(), "publishing bucket {bucket} of an unallocated segment");
        // SAFETY: claimed, so its segment is published; index in range as in `get`.
        let bucket = unsafe { &*buckets.add(index) };
        bucket.state.store(LINKED, Ordering::Release);
    }

    /// The buckets of `segment`, allocating them on first use.
    fn segment(&self, segment: usize) -> *mut Bucket {
        let current = self.segments[segment].load(Ordering::Acquire);
        if !current.is_null() {
            return current;
        }
        let base = segment_base(segment);
        let fresh: Box<[Bucket]> = (0..segment_len(segment))
            .map(|index| Bucket { dummy: Link::new(dummy_key(base + index)), state: AtomicUsize::new(UNLINKED) })
            .collect();
        let fresh = Box::into_raw(fresh) as *mut Bucket;
        match self.segments[segment].compare_exchange(ptr::null_mut(), fresh, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => fresh,
            Err(winner) => {
                // SAFETY: `fresh` was never published (nobody saw its dummies); it is ours to
                // free, with the length it was made with.
                drop(unsafe { Box::from_raw(ptr::slice_from_raw_parts_mut(fresh, segment_len(segment))) });
                winner
            }
        }
    }
}

impl Drop for Directory {
    fn drop(&mut self) {
        for (segment, buckets) in self.segments.iter().enumerate() {
            let buckets = buckets.load(Ordering::Acquire);
            if !buckets.is_null() {
                // SAFETY: published segments were made by `segment` with this length, and
                // `&mut self` means nobody else can see them (or their dummies) any more.
                drop(unsafe { Box::from_raw(ptr::slice_from_raw_parts_mut(buckets, segment_len(segment))) });
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
