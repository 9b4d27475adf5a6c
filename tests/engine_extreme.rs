//! Extreme values in the lock-free `DownloadBuffer`: a 256 MiB payload is stored, handed out
//! and taken back without a copy, and its memory is freed within two janitor runs of its
//! replacement, removal or expiry; measured with a counting global allocator (this binary's
//! only). Empty values are covered by the conformance suite (`empty_values`).
//!
//! The payloads are allocated zeroed (`calloc`: pages the test never writes cost no
//! physical memory) and marked at every MiB, so the test touches a few hundred pages only.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Duration;

use common::{isolated, manual_buffer, ms};
use download_buffer::{BufferId, Bytes, ChunkHandle, DownloadBuffer, ManualClock};

/// Counts live heap bytes, process-wide.
struct Counting;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded from the caller.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::SeqCst);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded from the caller.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::SeqCst);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded from the caller.
        unsafe { System.dealloc(ptr, layout) };
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::SeqCst);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded from the caller.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            LIVE_BYTES.fetch_add(new_size as isize - layout.size() as isize, Ordering::SeqCst);
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live_bytes() -> isize {
    LIVE_BYTES.load(Ordering::SeqCst)
}

const SIZE: usize = 256 << 20;
const MIB: usize = 1 << 20;
/// Besides a payload, the buffer allocates an entry, a `Bytes` header and wheel bookkeeping:
/// well under this.
const SLACK: isize = 16 << 10;

fn id(n: u64) -> BufferId {
    BufferId { handle: ChunkHandle(n as i64), timestamp: (n as i64).wrapping_mul(31) }
}

/// Offsets that carry a mark: every MiB, and a few odd ones.
fn marks() -> impl Iterator<Item = usize> {
    (0..SIZE).step_by(MIB).chain([1, MIB - 1, SIZE / 2 + 1, SIZE - 2, SIZE - 1])
}

fn mark(tag: u8, offset: usize) -> u8 {
    tag.wrapping_add((offset / MIB) as u8).wrapping_add(offset as u8) | 1
}

/// A zeroed payload of 256 MiB with `tag`'s marks.
fn payload(tag: u8) -> Bytes {
    let mut data = vec![0u8; SIZE];
    for offset in marks() {
        data[offset] = mark(tag, offset);
    }
    Bytes::from(data)
}

/// Panics unless `data` is the payload `tag` at address `ptr` (not a copy).
#[track_caller]
fn check(data: &Bytes, tag: u8, ptr: *const u8, op: &str) {
    assert_eq!(data.len(), SIZE, "{op}: length");
    assert_eq!(data.as_ptr(), ptr, "{op}: the 256 MiB were copied");
    for offset in marks() {
        assert_eq!(data[offset], mark(tag, offset), "{op}: byte {offset}");
    }
    assert_eq!(data[MIB + 1], 0, "{op}: an unmarked byte");
}

/// Heap bytes above `base`, within [`SLACK`] of `expected`.
#[track_caller]
fn assert_heap(what: &str, base: isize, expected: usize) {
    let above = live_bytes() - base;
    assert!(
        (above - expected as isize).abs() <= SLACK,
        "{what}: heap {above} bytes above the start, expected {expected} (within {SLACK})"
    );
}

/// Two janitor runs, one wheel tick (12.5 ms at tick 100 ms) apart.
fn two_runs(buffer: &DownloadBuffer, clock: &ManualClock) {
    for _ in 0..2 {
        clock.advance(Duration::from_micros(12_500));
        buffer.run_janitor();
    }
}

#[test]
fn a_256_mib_value_is_never_copied_and_is_freed_within_two_janitor_runs() {
    isolated(|| {
        let (buffer, clock) = manual_buffer(ms(100), Duration::from_secs(1));
        buffer.set(id(u64::MAX), Bytes::new()); // registers this thread with the epoch
        buffer.run_janitor();
        let base = live_bytes();

        // Stored without a copy; `get` allocates nothing.
        let first = payload(1);
        let first_ptr = first.as_ptr();
        buffer.set(id(1), first);
        assert_heap("after set", base, SIZE);
        let before_gets = live_bytes();
        check(&buffer.get(&id(1)).expect("present"), 1, first_ptr, "get");
        check(&buffer.get(&id(1)).expect("present"), 1, first_ptr, "second get");
        assert_eq!(live_bytes(), before_gets, "get allocated");

        // Replaced by another 256 MiB value: the first is freed.
        let second = payload(2);
        let second_ptr = second.as_ptr();
        buffer.set(id(1), second);
        two_runs(&buffer, &clock);
        assert_heap("after the replacement", base, SIZE);
        check(&buffer.get(&id(1)).expect("present"), 2, second_ptr, "get after the replacement");

        // Taken back without a copy, once; freed when the caller lets go.
        let fetched = buffer.fetch_and_delete(&id(1)).expect("present");
        check(&fetched, 2, second_ptr, "fetch_and_delete");
        assert!(buffer.fetch_and_delete(&id(1)).is_err());
        assert!(buffer.get(&id(1)).is_none());
        two_runs(&buffer, &clock);
        assert_heap("while the caller holds the fetched value", base, SIZE);
        drop(fetched);
        assert_heap("after the caller dropped the fetched value", base, 0);

        // Expired by the janitor (clock moved a wheel tick per run, as a janitor thread sees
        // it): freed within two runs of falling due.
        let third = payload(3);
        let third_ptr = third.as_ptr();
        buffer.set(id(3), third);
        buffer.run_janitor();
        check(&buffer.get(&id(3)).expect("present"), 3, third_ptr, "get before expiry");
        clock.advance(Duration::from_micros(12_500));
        buffer.run_janitor();
        buffer.get(&id(u64::MAX)).expect("the marker"); // now due a wheel tick after the payload
        let mut expired = 0;
        let mut runs = 0;
        while expired == 0 {
            clock.advance(Duration::from_micros(12_500));
            expired += buffer.run_janitor().expired;
            runs += 1;
            assert!(runs <= 100, "the 256 MiB value did not expire");
        }
        assert_eq!(expired, 1);
        buffer.get(&id(u64::MAX)).expect("the marker"); // kept for the len check below
        two_runs(&buffer, &clock);
        assert_heap("after expiry", base, 0);
        assert!(buffer.get(&id(3)).is_none());
        assert_eq!(buffer.len(), 1);
        println!(
            "256 MiB values: set, get x2, replaced, fetched, expired after {runs} janitor runs; heap now {} bytes \
             above the start",
            live_bytes() - base
        );
    })
}
