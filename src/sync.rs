//! The sync facade: every atomic, cell, `Arc`, thread-local and epoch use of the engine
//! comes from here.
//!
//! Normal builds re-export `std` and `crossbeam-epoch` and pay nothing. Under
//! `--cfg crossbeam_loom` the same names are loom's (and crossbeam-epoch is built on
//! loom too), so the code the loom models check is the code users run.

#[cfg(not(crossbeam_loom))]
mod imp {
    pub(crate) use std::sync::atomic::{fence, AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};
    pub(crate) use std::sync::Arc;

    /// `std::cell::UnsafeCell` with loom's closure API (`with`, `with_mut`), so that loom
    /// can track every access to janitor-private and payload memory.
    #[derive(Debug)]
    #[repr(transparent)]
    pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

    impl<T> UnsafeCell<T> {
        #[inline]
        pub(crate) const fn new(value: T) -> UnsafeCell<T> {
            UnsafeCell(std::cell::UnsafeCell::new(value))
        }

        #[inline]
        pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
            f(self.0.get())
        }

        #[inline]
        pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
            f(self.0.get())
        }
    }
}

#[cfg(crossbeam_loom)]
mod imp {
    pub(crate) use loom::cell::UnsafeCell;
    pub(crate) use loom::sync::atomic::{fence, AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};
    pub(crate) use loom::sync::Arc;
}

pub(crate) use imp::*;

/// Epoch-based reclamation: crossbeam-epoch, built on loom's primitives under loom.
pub(crate) use crossbeam_epoch as epoch;

/// Pads and aligns a value to a cache line so that shards do not share lines.
pub(crate) use crossbeam_utils::CachePadded;

/// A small per-thread number used to pick a counter shard or an intake stripe, so that
/// threads spread over them without any shared write.
///
/// A const-initialized `Cell` without a destructor, so that the thread-local is a plain
/// `#[thread_local]` slot: reading it is one load (a lazily initialized one costs a state
/// check and a call, on every hit's statistics).
#[cfg(not(crossbeam_loom))]
#[inline]
pub(crate) fn thread_index() -> usize {
    use std::cell::Cell;
    const UNSET: usize = usize::MAX;
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    std::thread_local! {
        static INDEX: Cell<usize> = const { Cell::new(UNSET) };
    }
    INDEX.with(|index| {
        let mut value = index.get();
        if value == UNSET {
            value = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            index.set(value);
        }
        value
    })
}

/// Under loom: numbered by a counter that loom resets with every execution, so that the
/// numbering is the same each time (loom replays executions and needs determinism).
#[cfg(crossbeam_loom)]
pub(crate) fn thread_index() -> usize {
    loom::lazy_static! {
        static ref NEXT: loom::sync::atomic::AtomicUsize = loom::sync::atomic::AtomicUsize::new(0);
    }
    loom::thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, loom::sync::atomic::Ordering::Relaxed);
    }
    INDEX.with(|index| *index)
}

/// Asks the CPU to start loading the cache line at `address` into every cache level: a
/// hint, never a read, so any address will do (null, dangling or freed alike). Code that
/// knows which lines it will touch next issues this a few steps ahead, so that the misses
/// overlap instead of forming a chain. Nothing under loom (no memory to model) or off
/// x86-64.
#[inline(always)]
pub(crate) fn prefetch<T>(address: *const T) {
    #[cfg(all(target_arch = "x86_64", not(crossbeam_loom)))]
    // SAFETY: SSE, the instruction's only requirement, is part of the x86-64 baseline; a
    // prefetch never faults and reads nothing the program sees, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(address.cast())
    };
    #[cfg(not(all(target_arch = "x86_64", not(crossbeam_loom))))]
    let _ = address;
}
