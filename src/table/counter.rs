//! The table's length: sharded, cache-padded counters summed on read.
//!
//! One shared counter would be written by every insert and remove from every thread; with
//! shards, each thread writes its own cache line and only `len` reads them all.

use crate::sync::{thread_index, AtomicIsize, CachePadded, Ordering};

pub(crate) struct Counter {
    shards: Box<[CachePadded<AtomicIsize>]>,
}

impl Counter {
    pub(crate) fn new() -> Counter {
        let shards = if cfg!(crossbeam_loom) {
            2
        } else {
            let cpus = std::thread::available_parallelism().map_or(4, |n| n.get());
            (cpus * 2).next_power_of_two().min(128)
        };
        Counter { shards: (0..shards).map(|_| CachePadded::new(AtomicIsize::new(0))).collect() }
    }

    fn shard(&self) -> &AtomicIsize {
        &self.shards[thread_index() & (self.shards.len() - 1)]
    }

    /// Adds one; returns the shard's new value, which callers sample (every 64th, say)
    /// to decide when to look at the whole count.
    pub(crate) fn increment(&self) -> isize {
        if cfg!(loom_broken = "len_lost_update") {
            // Broken on purpose: a load and a store, so concurrent updates are lost.
            let shard = self.shard();
            let next = shard.load(Ordering::Relaxed) + 1;
            shard.store(next, Ordering::Relaxed);
            return next;
        }
        self.shard().fetch_add(1, Ordering::Relaxed) + 1
    }

    pub(crate) fn decrement(&self) {
        if cfg!(loom_broken = "len_lost_update") {
            let shard = self.shard();
            shard.store(shard.load(Ordering::Relaxed) - 1, Ordering::Relaxed);
            return;
        }
        self.shard().fetch_sub(1, Ordering::Relaxed);
    }

    /// The sum of the shards. Exact when no update runs concurrently; otherwise some value
    /// the count held during the call, give or take the updates in flight.
    pub(crate) fn sum(&self) -> usize {
        let total: isize = self.shards.iter().map(|shard| shard.load(Ordering::Relaxed)).sum();
        total.max(0) as usize
    }
}
