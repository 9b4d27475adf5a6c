//! [`Stats`]: what a map has done, counted in per-thread shards so that counting costs a
//! hit one uncontended increment on a cache line its thread owns.

use std::fmt;

use crate::sync::{thread_index, AtomicU64, CachePadded, Ordering};

/// A snapshot of a map's counters ([`ExpiringMap::stats`](crate::ExpiringMap::stats),
/// [`DownloadBuffer::stats`](crate::DownloadBuffer::stats)).
///
/// Each counter is exact when no call runs concurrently; while calls run, each is read at
/// its own instant (the fields are not one atomic snapshot).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// `get` calls that found a live entry.
    pub hits: u64,
    /// `get` calls that found none (missing, or past its deadline).
    pub misses: u64,
    /// Values stored: by `set`, by `try_set` that was not refused, by `set_if_absent` that
    /// stored. A replacement counts as one insert.
    pub inserts: u64,
    /// `delete` and `fetch_and_delete` calls that removed a live entry.
    pub removals: u64,
    /// Entries the janitor expired: exactly the entries the expiry listener is called for.
    /// An entry past its deadline that a call replaced or removed before the janitor came
    /// is not counted (that call decided its fate).
    pub expirations: u64,
    /// Entries held ([`len`](crate::ExpiringMap::len)): live ones plus expired ones the
    /// janitor has not removed yet.
    pub entries: u64,
    /// The weight of the entries held: for a [`DownloadBuffer`](crate::DownloadBuffer) their
    /// bytes; for an [`ExpiringMap`](crate::ExpiringMap), what its weigher says (0 without
    /// one). With a byte budget this is the budget's own counter, which counts a value from
    /// just before it is stored until just after it is gone: never below the weight held,
    /// and never above the budget unless `set` (which bypasses it) pushed it there.
    pub bytes: u64,
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let looked_up = self.hits + self.misses;
        let hit_rate = if looked_up == 0 { 0.0 } else { 100.0 * self.hits as f64 / looked_up as f64 };
        write!(
            f,
            "{} entries, {} bytes held; {} hits, {} misses ({hit_rate:.1}% hits); {} inserts, {} removals, {} expirations",
            self.entries, self.bytes, self.hits, self.misses, self.inserts, self.removals, self.expirations
        )
    }
}

/// The counters callers bump, one cache-padded shard per thread (shared when there are
/// more threads than shards, which the atomic increments allow).
pub(crate) struct Tally {
    shards: Box<[CachePadded<Shard>]>,
}

#[derive(Default)]
struct Shard {
    hits: AtomicU64,
    misses: AtomicU64,
    inserts: AtomicU64,
    removals: AtomicU64,
}

/// The caller counts of a [`Tally`], summed over its shards.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    pub(crate) hits: u64,
    pub(crate) misses: u64,
    pub(crate) inserts: u64,
    pub(crate) removals: u64,
}

impl Tally {
    pub(crate) fn new() -> Tally {
        let shards = if cfg!(crossbeam_loom) {
            1
        } else {
            let cpus = std::thread::available_parallelism().map_or(4, |n| n.get());
            (cpus * 2).next_power_of_two().min(128)
        };
        Tally { shards: (0..shards).map(|_| CachePadded::new(Shard::default())).collect() }
    }

    #[inline]
    fn shard(&self) -> &Shard {
        &self.shards[thread_index() & (self.shards.len() - 1)]
    }

    // Relaxed: these are statistics; nothing is ordered by them.

    #[inline]
    pub(crate) fn hit(&self) {
        self.shard().hits.fetch_add(1, Ordering::Relaxed);
    }

    #[inline]
    pub(crate) fn miss(&self) {
        self.shard().misses.fetch_add(1, Ordering::Relaxed);
    }

    #[inline]
    pub(crate) fn insert(&self) {
        self.shard().inserts.fetch_add(1, Ordering::Relaxed);
    }

    #[inline]
    pub(crate) fn removal(&self) {
        self.shard().removals.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn totals(&self) -> Totals {
        self.shards.iter().fold(Totals::default(), |sum, shard| Totals {
            hits: sum.hits + shard.hits.load(Ordering::Relaxed),
            misses: sum.misses + shard.misses.load(Ordering::Relaxed),
            inserts: sum.inserts + shard.inserts.load(Ordering::Relaxed),
            removals: sum.removals + shard.removals.load(Ordering::Relaxed),
        })
    }
}

#[cfg(all(test, not(crossbeam_loom)))]
mod tests {
    use super::*;

    #[test]
    fn counts_from_many_threads_add_up() {
        let tally = Tally::new();
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    for _ in 0..1000 {
                        tally.hit();
                        tally.insert();
                    }
                    tally.miss();
                    tally.removal();
                });
            }
        });
        assert_eq!(tally.totals(), Totals { hits: 8000, misses: 8, inserts: 8000, removals: 8 });
    }

    #[test]
    fn display_names_every_counter() {
        let stats = Stats { hits: 3, misses: 1, inserts: 4, removals: 2, expirations: 1, entries: 1, bytes: 4096 };
        assert_eq!(
            stats.to_string(),
            "1 entries, 4096 bytes held; 3 hits, 1 misses (75.0% hits); 4 inserts, 2 removals, 1 expirations"
        );
    }
}
