//! The process's heap as a counting allocator sees it, drained of the epoch's garbage: for
//! the test binaries that check that memory returns to its baseline. Each includes this
//! file with `#[path]`, beside `counting_alloc.rs`, and calls `common::drain_epoch`.
#![allow(dead_code)]

use crate::common::drain_epoch;
use crate::counting_alloc;

/// The process's heap at one instant: live bytes and live allocations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Heap {
    // Ordered by bytes first (the smallest heap of several).
    pub bytes: isize,
    pub blocks: i64,
}

pub fn heap() -> Heap {
    // Blocks first: a block allocated and freed between the two reads can then only make
    // `blocks` read high, never negative.
    let blocks = counting_alloc::live_blocks();
    Heap { bytes: counting_alloc::live(), blocks }
}

pub fn live_bytes() -> isize {
    counting_alloc::live()
}

pub const MIB: isize = 1 << 20;

pub fn mib(bytes: isize) -> f64 {
    bytes as f64 / MIB as f64
}

/// Epoch drains a measurement may take: enough to cover every phase of crossbeam-epoch's
/// collection schedule (a collection every 128 pins, besides the flushes) several times.
pub const DRAIN_WINDOW: usize = 256;

/// The heap once the epoch is drained, taken as the smallest heap seen at the end of each
/// of [`DRAIN_WINDOW`] drains.
///
/// One drain is not enough for an exact figure. A drain unlinks the `Local`s of exited
/// threads from crossbeam-epoch's registry and defers their destruction, and pops queue
/// nodes whose destruction is deferred in turn; the next drains free those. And at the end
/// of a drain crossbeam's own garbage queue holds a number of nodes (sealed bags of 64
/// deferred calls, about 2 KiB each) that depends on where the drain fell in its
/// collection schedule: at most drains the fewest, at some one or two more. The smallest
/// figure is the one every drained state returns to.
pub fn drained_minimum() -> Heap {
    let mut least = heap();
    for _ in 0..DRAIN_WINDOW {
        drain_epoch();
        least = least.min(heap());
    }
    least
}

/// Drains the epoch until the heap is `target`, at most [`DRAIN_WINDOW`] times; returns
/// the drains it took, or the smallest heap seen.
pub fn drain_until(target: Heap) -> Result<usize, Heap> {
    let mut least = heap();
    for drains in 0..=DRAIN_WINDOW {
        if heap() == target {
            return Ok(drains);
        }
        least = least.min(heap());
        drain_epoch();
    }
    Err(least)
}
