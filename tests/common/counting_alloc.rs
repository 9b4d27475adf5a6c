//! A counting global allocator, shared by the test binaries that measure memory
//! (`engine_memory`, `engine_leaks`, ...) and the tools crate's compare report. Each
//! includes this file with `#[path]`, so each binary gets its own allocator and counters.
//!
//! It wraps [`System`] and counts, while tracking is on (it starts on): live heap bytes,
//! their peak, allocations and deallocations process-wide, and allocations per thread.
//! Counters are Relaxed: figures are read while the measured threads are quiet or joined
//! (a join orders their counts before the read). Tracking can be turned off where every
//! operation allocates and a shared counter would be what gets measured (the example's
//! throughput phases); then the allocator costs one Relaxed load of a read-mostly flag.
//! Only differences are meaningful: frees of blocks allocated while tracking was off count
//! negative and cancel out.
//!
//! The process's first thread is left out unless [`count_the_first_thread`] is called. In a
//! test binary that is the test harness's main thread, which runs no test: it allocates its
//! bookkeeping for a test (and its stdout buffer) when the scheduler lets it, which on a
//! loaded machine is after the test has taken its baseline, and keeps it (940 bytes in 4
//! blocks, seen as a "leak" by a test that wants the heap back exactly). Only the tools'
//! compare report, which measures on its main thread, counts it.
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicU64, Ordering};

struct Counting;

#[global_allocator]
static ALLOCATOR: Counting = Counting;

static TRACKING: AtomicBool = AtomicBool::new(true);
static LIVE: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static DEALLOCATIONS: AtomicU64 = AtomicU64::new(0);
/// Whether the first thread's allocations count ([`count_the_first_thread`]).
static COUNT_FIRST_THREAD: AtomicBool = AtomicBool::new(false);
/// Set by the first thread to allocate: the process's first thread (the runtime allocates
/// before `main`, and before any other thread exists).
static FIRST_THREAD_SEEN: AtomicBool = AtomicBool::new(false);

const ROLE_UNKNOWN: u8 = 0;
const ROLE_FIRST: u8 = 1;
const ROLE_OTHER: u8 = 2;

thread_local! {
    /// Allocations made by this thread (const-initialized, no destructor: safe to touch
    /// from inside the allocator).
    static THREAD_ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
    /// Whether this thread is the process's first (decided at its first allocation).
    static ROLE: Cell<u8> = const { Cell::new(ROLE_UNKNOWN) };
    /// Bytes this thread allocated minus bytes it freed (whoever allocated them).
    static THREAD_NET_BYTES: Cell<isize> = const { Cell::new(0) };
}

/// Whether the calling thread's allocations count.
fn counts_here() -> bool {
    let role = ROLE
        .try_with(|role| {
            if role.get() == ROLE_UNKNOWN {
                let first = !FIRST_THREAD_SEEN.swap(true, Ordering::Relaxed);
                role.set(if first { ROLE_FIRST } else { ROLE_OTHER });
            }
            role.get()
        })
        .unwrap_or(ROLE_OTHER);
    role == ROLE_OTHER || COUNT_FIRST_THREAD.load(Ordering::Relaxed)
}

impl Counting {
    fn grew(size: usize) {
        // The role first: it must be decided at the first allocation, tracked or not.
        if counts_here() && TRACKING.load(Ordering::Relaxed) {
            let now = LIVE.fetch_add(size as isize, Ordering::Relaxed) + size as isize;
            // Read before writing: the peak's line stays shared while the heap is below it.
            if now > PEAK.load(Ordering::Relaxed) {
                PEAK.fetch_max(now, Ordering::Relaxed);
            }
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
            let _ = THREAD_ALLOCATIONS.try_with(|count| count.set(count.get() + 1));
            let _ = THREAD_NET_BYTES.try_with(|net| net.set(net.get() + size as isize));
        }
    }

    fn shrank(size: usize) {
        if counts_here() && TRACKING.load(Ordering::Relaxed) {
            LIVE.fetch_sub(size as isize, Ordering::Relaxed);
            DEALLOCATIONS.fetch_add(1, Ordering::Relaxed);
            let _ = THREAD_NET_BYTES.try_with(|net| net.set(net.get() - size as isize));
        }
    }
}

// SAFETY: every call is forwarded to the system allocator unchanged; this only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded from the caller.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            Counting::grew(layout.size());
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded from the caller.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            Counting::grew(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded from the caller.
        unsafe { System.dealloc(ptr, layout) };
        Counting::shrank(layout.size());
    }

    /// Counted as a deallocation of the old block and an allocation of the new one.
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded from the caller.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            Counting::shrank(layout.size());
            Counting::grew(new_size);
        }
        new
    }
}

/// Counts the process's first thread too (left out by default; see the module
/// documentation): for a binary that measures on its main thread.
pub fn count_the_first_thread() {
    COUNT_FIRST_THREAD.store(true, Ordering::Relaxed);
}

/// Starts or stops counting.
pub fn set_tracking(on: bool) {
    TRACKING.store(on, Ordering::Relaxed);
}

/// Heap bytes live now (relative to when tracking began).
pub fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// Live blocks: allocations minus deallocations. Deallocations are read first, so a block
/// allocated and freed between the two loads can make it read high, never low.
pub fn live_blocks() -> i64 {
    let deallocations = DEALLOCATIONS.load(Ordering::Relaxed);
    let allocations = ALLOCATIONS.load(Ordering::Relaxed);
    allocations as i64 - deallocations as i64
}

/// Restarts the peak from the current level.
pub fn reset_peak() {
    PEAK.store(live(), Ordering::Relaxed);
}

/// The highest [`live`] since the last [`reset_peak`].
pub fn peak() -> isize {
    PEAK.load(Ordering::Relaxed)
}

/// Allocations made by the calling thread so far.
pub fn thread_allocations() -> u64 {
    THREAD_ALLOCATIONS.with(Cell::get)
}

/// Bytes the calling thread allocated minus bytes it freed, since it started. Unlike
/// [`live`], other threads' allocations do not move it: for a test whose allocations and
/// frees all happen on one thread (its epoch garbage too, when no other thread pins),
/// while the test harness's threads start and report beside it.
pub fn thread_net_bytes() -> isize {
    THREAD_NET_BYTES.with(Cell::get)
}
