//! [`Stats`]: what a map has done, counted in per-thread shards so that counting costs a
//! hit a plain load and store on a cache line its thread owns.

use std::fmt;

use crate::counter::Striped;

/// A snapshot of a map's counters ([`ExpiringMap::stats`](crate::ExpiringMap::stats),
/// [`DownloadBuffer::stats`](crate::DownloadBuffer::stats)).
///
/// Each counter is exact when no call runs concurrently; while calls run, each is read at
/// its own instant (the fields are not one atomic snapshot). On by default; a map built
/// with [`Builder::count_stats`](crate::Builder::count_stats)`(false)` counts no hits,
/// misses, inserts or removals, nor bytes unless it has a byte budget (they read 0), and
/// still reports expirations and entries.
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
    /// and never above the budget unless `set` or `set_if_absent` (which bypass it) pushed
    /// it there. Without a budget, and with [`Builder::count_stats`](crate::Builder::count_stats)`(false)`, 0.
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

/// The counters callers bump: striped per thread, so that a hit costs a plain load and
/// store on a cache line its thread owns (see [`Striped`]); none at all when the map was
/// built with [`Builder::count_stats`](crate::Builder::count_stats)`(false)`.
pub(crate) struct Tally {
    counts: Option<Striped<4>>,
}

const LOOKUPS: usize = 0;
const MISSES: usize = 1;
const INSERTS: usize = 2;
const REMOVALS: usize = 3;

/// The caller counts of a [`Tally`], summed over its shards.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    pub(crate) hits: u64,
    pub(crate) misses: u64,
    pub(crate) inserts: u64,
    pub(crate) removals: u64,
}

impl Tally {
    pub(crate) fn new(counting: bool) -> Tally {
        Tally { counts: counting.then(Striped::new) }
    }

    #[inline]
    fn add(&self, counter: usize) {
        if let Some(counts) = &self.counts {
            counts.add(counter, 1);
        }
    }

    /// A `get` began (it is a hit unless it also counts a miss).
    #[inline]
    pub(crate) fn lookup(&self) {
        self.add(LOOKUPS);
    }

    #[inline]
    pub(crate) fn miss(&self) {
        self.add(MISSES);
    }

    #[inline]
    pub(crate) fn insert(&self) {
        self.add(INSERTS);
    }

    #[inline]
    pub(crate) fn removal(&self) {
        self.add(REMOVALS);
    }

    pub(crate) fn totals(&self) -> Totals {
        let Some(counts) = &self.counts else { return Totals::default() };
        // Misses first: a get counted between the two reads then makes `hits` one high at
        // worst for the moment, never wraps it.
        let misses = counts.sum(MISSES);
        Totals {
            hits: counts.sum(LOOKUPS).saturating_sub(misses),
            misses,
            inserts: counts.sum(INSERTS),
            removals: counts.sum(REMOVALS),
        }
    }
}

#[cfg(all(test, not(crossbeam_loom)))]
mod tests {
    use super::*;

    #[test]
    fn counts_from_many_threads_add_up() {
        let tally = Tally::new(true);
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    for _ in 0..1000 {
                        tally.lookup();
                        tally.insert();
                    }
                    tally.lookup();
                    tally.miss();
                    tally.removal();
                });
            }
        });
        assert_eq!(tally.totals(), Totals { hits: 8000, misses: 8, inserts: 8000, removals: 8 });
    }

    #[test]
    fn a_tally_turned_off_counts_nothing() {
        let tally = Tally::new(false);
        tally.lookup();
        tally.insert();
        assert_eq!(tally.totals(), Totals::default());
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
