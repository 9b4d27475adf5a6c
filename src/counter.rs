//! Sharded, cache-padded counters summed on read: the table's length and the bytes it holds.
//!
//! One shared counter would be written by every insert and remove from every thread; with
//! shards, each thread writes its own cache line and only `len` reads them all.
//!
//! Each shard holds two counters that only grow: entries counted in and entries counted
//! out. Summing one signed counter per shard is not enough: while `len` walks the shards, a
//! key deleted on a shard already read and set again on a shard not yet read is counted
//! twice, and a reader descheduled mid-walk could report any number. With monotone
//! counters, `sum` reads every "in" before any "out", so it never exceeds the count at the
//! instant between the two passes (see [`Counter::sum`]).

use crate::sync::{thread_index, AtomicU64, AtomicUsize, CachePadded, Ordering};

pub(crate) struct Counter {
    shards: Box<[CachePadded<Shard>]>,
}

#[derive(Default)]
struct Shard {
    counted_in: AtomicUsize,
    counted_out: AtomicUsize,
}

impl Counter {
    pub(crate) fn new() -> Counter {
        let shards = if cfg!(crossbeam_loom) { 2 } else { shard_count() };
        Counter { shards: (0..shards).map(|_| CachePadded::new(Shard::default())).collect() }
    }

    fn shard(&self) -> &Shard {
        &self.shards[thread_index() & (self.shards.len() - 1)]
    }

    // Every access is SeqCst: `sum`'s bound argues about one total order of all counter
    // updates and reads. On x86 this costs nothing (RMWs are locked anyway, loads are plain).

    /// Counts an entry in, after it is published. Returns the shard's running total of
    /// counts in, which callers sample (every 64th, say) to decide when to look at the
    /// whole count.
    pub(crate) fn count_in(&self) -> usize {
        self.shard().counted_in.fetch_add(1, Ordering::SeqCst).wrapping_add(1)
    }

    /// Counts an entry out, before the attempt to remove it: while the remover races, `len`
    /// may run one low, never one high. A remover that loses calls [`Counter::count_in`]
    /// to undo it (the counters only grow).
    pub(crate) fn count_out(&self) {
        self.shard().counted_out.fetch_add(1, Ordering::SeqCst);
    }

    /// The number of entries counted in and not out.
    ///
    /// Exact when no update runs concurrently. Under concurrency it is at most the count at
    /// one instant of the call: every "in" is read before every "out", so with `t` the
    /// instant between the two passes, the ins read are at most the ins at `t` and the outs
    /// read at least the outs at `t`. Entries are counted in after they are published and
    /// out before they are removed, so the count at `t` is at most the entries the table
    /// held then. (It may be low, by the updates that ran during the call.)
    pub(crate) fn sum(&self) -> usize {
        self.sum_observed(|_| {})
    }

    /// [`Counter::sum`], calling `between(i)` after reading shard `i`'s "in" count: the
    /// tests replay adversarial schedules with it. (Inlined away in `sum`.)
    #[inline(always)]
    fn sum_observed(&self, mut between: impl FnMut(usize)) -> usize {
        let mut counted_in = 0usize;
        for (i, shard) in self.shards.iter().enumerate() {
            counted_in = counted_in.wrapping_add(shard.counted_in.load(Ordering::SeqCst));
            between(i);
        }
        let counted_out =
            self.shards.iter().fold(0usize, |sum, shard| sum.wrapping_add(shard.counted_out.load(Ordering::SeqCst)));
        // Wrapping: the totals may wrap (32-bit targets); their difference is still right.
        // It is negative while a remover that counted out early has yet to count back in.
        (counted_in.wrapping_sub(counted_out) as isize).max(0) as usize
    }
}

/// `N` statistics counters that only grow, striped over per-thread shards so that counting
/// costs the hot path no atomic read-modify-write: each shard is claimed by the first thread
/// that counts on it, which from then on adds with a plain load and store to counters only it
/// writes; any other thread mapped to that shard adds to the shard's shared counters with
/// `fetch_add`. Relaxed throughout: exact once the counting threads are done (and their
/// effects visible), approximate while they run. Not for [`Counter`]'s bound on `len`.
pub(crate) struct Striped<const N: usize> {
    shards: Box<[CachePadded<StripedShard<N>>]>,
}

struct StripedShard<const N: usize> {
    /// `thread_index() + 1` of the thread that owns `owned`; 0 while unclaimed.
    owner: AtomicUsize,
    /// Written by the owner only.
    owned: [AtomicU64; N],
    /// Written by the other threads mapped here, with `fetch_add`.
    shared: [AtomicU64; N],
}

impl<const N: usize> Striped<N> {
    pub(crate) fn new() -> Striped<N> {
        let shards = if cfg!(crossbeam_loom) { 1 } else { shard_count() };
        let shard = || {
            CachePadded::new(StripedShard {
                owner: AtomicUsize::new(0),
                owned: std::array::from_fn(|_| AtomicU64::new(0)),
                shared: std::array::from_fn(|_| AtomicU64::new(0)),
            })
        };
        Striped { shards: (0..shards).map(|_| shard()).collect() }
    }

    /// Adds `amount` to counter `counter`.
    #[inline]
    pub(crate) fn add(&self, counter: usize, amount: u64) {
        let me = thread_index();
        let shard = &self.shards[me & (self.shards.len() - 1)];
        let owner = shard.owner.load(Ordering::Relaxed);
        let owns = owner == me + 1
            || (owner == 0 && shard.owner.compare_exchange(0, me + 1, Ordering::Relaxed, Ordering::Relaxed).is_ok());
        if owns {
            // Only this thread writes `owned`: a load and a store lose nothing.
            let slot = &shard.owned[counter];
            slot.store(slot.load(Ordering::Relaxed).wrapping_add(amount), Ordering::Relaxed);
        } else {
            shard.shared[counter].fetch_add(amount, Ordering::Relaxed);
        }
    }

    /// Counter `counter`, summed over the shards.
    pub(crate) fn sum(&self, counter: usize) -> u64 {
        self.shards.iter().fold(0u64, |sum, shard| {
            sum.wrapping_add(shard.owned[counter].load(Ordering::Relaxed))
                .wrapping_add(shard.shared[counter].load(Ordering::Relaxed))
        })
    }
}

/// Shards per counter: twice the CPUs, a power of two, at most 128.
fn shard_count() -> usize {
    let cpus = std::thread::available_parallelism().map_or(4, |n| n.get());
    (cpus * 2).next_power_of_two().min(128)
}

#[cfg(all(test, not(crossbeam_loom)))]
mod tests {
    use super::*;

    impl Counter {
        fn with_shards(shards: usize) -> Counter {
            Counter { shards: (0..shards).map(|_| CachePadded::new(Shard::default())).collect() }
        }
        fn count_in_at(&self, shard: usize) {
            self.shards[shard].counted_in.fetch_add(1, Ordering::SeqCst);
        }
        fn count_out_at(&self, shard: usize) {
            self.shards[shard].counted_out.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// The schedule that broke the first, one-pass version: while `len` walks the shards,
    /// the one key is deleted by a thread on a shard already read and set again by a thread
    /// on a shard not yet read, over and over. One key is held throughout, so `len` may
    /// say 0 or 1, never more.
    #[test]
    fn sum_never_exceeds_the_count_while_a_key_hops_shards_mid_read() {
        let counter = Counter::with_shards(8);
        counter.count_in_at(0);
        let seen = counter.sum_observed(|read| {
            if read + 1 < 8 {
                for _ in 0..100 {
                    counter.count_out_at(read); // deleted on the shard just read...
                    counter.count_in_at(read + 1); // ...and set again on the next one
                    counter.count_out_at(read + 1);
                    counter.count_in_at(read);
                }
                counter.count_out_at(read);
                counter.count_in_at(read + 1);
            }
        });
        assert!(seen <= 1, "len read {seen} while one key was held");
        assert_eq!(counter.sum(), 1, "at rest");
    }

    #[test]
    fn striped_counts_add_up_whoever_owns_the_shards() {
        let counts: Striped<2> = Striped::new();
        std::thread::scope(|scope| {
            // More threads than shards: some share a shard with its owner.
            for _ in 0..3 * counts.shards.len() {
                scope.spawn(|| {
                    for _ in 0..1000 {
                        counts.add(0, 1);
                        counts.add(1, 3);
                    }
                });
            }
        });
        let threads = 3 * counts.shards.len() as u64;
        assert_eq!((counts.sum(0), counts.sum(1)), (1000 * threads, 3000 * threads));
    }

    #[test]
    fn sum_is_exact_at_rest_and_survives_wrapping() {
        let counter = Counter::with_shards(4);
        counter.shards[1].counted_in.store(usize::MAX - 1, Ordering::SeqCst);
        counter.shards[2].counted_out.store(usize::MAX - 3, Ordering::SeqCst);
        assert_eq!(counter.sum(), 2);
        counter.count_in_at(1); // wraps the in total past zero
        counter.count_in_at(3);
        counter.count_out_at(0);
        assert_eq!(counter.sum(), 3);
        counter.count_out_at(2);
        counter.count_out_at(2);
        counter.count_out_at(2);
        counter.count_out_at(2);
        assert_eq!(counter.sum(), 0, "an early count-out not yet undone reads as 0, not as a huge number");
    }
}
