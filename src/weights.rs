//! The weight of what a map holds (bytes, for a download buffer), and the byte budget that
//! `try_set` keeps it under.
//!
//! The weigher is asked about a value when it is stored and again when it leaves (entries
//! do not store the weight: it would cost a `DownloadBuffer` entry a malloc size class), so
//! it must give one value the same weight every time. The counter counts a weight *in*
//! before the entry is published and *out* after the entry is gone (by the call that
//! removed it: the one whose mark won, or the set that replaced it), so it never reads
//! below the weight the table holds. With a budget it is one atomic word, and a
//! `try_set` adds to it only by a compare-and-swap that checks the sum against the budget:
//! however writers race, the counter (and so the weight held) never exceeds the budget.
//! Without one it is a pair of striped counters (bytes in, bytes out), which cost a writer
//! no atomic read-modify-write and no shared cache line.

use std::fmt;

use crate::counter::Striped;
use crate::sync::{AtomicUsize, Ordering};

/// The two counters of [`Held::Sharded`].
const IN: usize = 0;
const OUT: usize = 1;

/// Gives a value its weight.
pub(crate) type Weigher<V> = Box<dyn Fn(&V) -> usize + Send + Sync>;

/// The weights held, and the budget if there is one.
pub(crate) struct Weights<V> {
    weigher: Option<Weigher<V>>,
    held: Held,
}

enum Held {
    /// No budget: bytes in and bytes out, summed over per-thread shards on read (a statistic:
    /// exact at rest, approximate while writers run).
    Sharded(Striped<2>),
    /// A budget of `max`: one word, added to only by checked CAS (or unchecked by `set`).
    Budget { max: usize, held: AtomicUsize },
}

/// A `try_set` that would have taken the weight held past the budget: what it saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Refused {
    pub(crate) max: usize,
    pub(crate) held: usize,
}

impl<V> Weights<V> {
    pub(crate) fn new(weigher: Option<Weigher<V>>, max: Option<usize>) -> Weights<V> {
        let held = match max {
            Some(max) => Held::Budget { max, held: AtomicUsize::new(0) },
            None => Held::Sharded(Striped::new()),
        };
        Weights { weigher, held }
    }

    /// The weight of `value` (0 without a weigher). Runs user code: call it before anything
    /// is published, so that a panic leaves nothing half done.
    #[inline]
    pub(crate) fn weigh(&self, value: &V) -> usize {
        self.weigher.as_ref().map_or(0, |weigh| weigh(value))
    }

    /// The budget, if there is one.
    pub(crate) fn max(&self) -> Option<usize> {
        match self.held {
            Held::Budget { max, .. } => Some(max),
            Held::Sharded(_) => None,
        }
    }

    /// Counts `weight` in without looking at the budget (`set`, `set_if_absent`).
    #[inline]
    pub(crate) fn add(&self, weight: usize) {
        if weight == 0 {
            return;
        }
        match &self.held {
            Held::Sharded(counts) => counts.add(IN, weight as u64),
            Held::Budget { held, .. } => {
                held.fetch_add(weight, Ordering::AcqRel);
            }
        }
    }

    /// Counts `weight` in if the weight held stays within the budget; else says what it saw.
    pub(crate) fn try_add(&self, weight: usize) -> Result<(), Refused> {
        if weight == 0 {
            return Ok(());
        }
        let (max, held) = match &self.held {
            Held::Sharded(counts) => {
                counts.add(IN, weight as u64);
                return Ok(());
            }
            Held::Budget { max, held } => (*max, held),
        };
        if cfg!(loom_broken = "budget_check_then_add") {
            // Broken on purpose: check, then add, as two steps: two writers can both pass
            // the check for the last room (loom-tests/tests/budget.rs catches it).
            let seen = held.load(Ordering::Acquire);
            if seen.saturating_add(weight) > max {
                return Err(Refused { max, held: seen });
            }
            held.fetch_add(weight, Ordering::AcqRel);
            return Ok(());
        }
        let mut seen = held.load(Ordering::Acquire);
        loop {
            let Some(after) = seen.checked_add(weight).filter(|&after| after <= max) else {
                return Err(Refused { max, held: seen });
            };
            match held.compare_exchange_weak(seen, after, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Ok(()),
                Err(now) => seen = now,
            }
        }
    }

    /// Counts `weight` out: an entry holding it is gone (or a reservation is given back).
    #[inline]
    pub(crate) fn release(&self, weight: usize) {
        if weight == 0 {
            return;
        }
        match &self.held {
            Held::Sharded(counts) => counts.add(OUT, weight as u64),
            Held::Budget { held, .. } => {
                // Saturating: a weigher that broke its contract (a larger weight on the way
                // out) must not wrap the word round and refuse everything for good.
                let _ =
                    held.fetch_update(Ordering::AcqRel, Ordering::Acquire, |seen| Some(seen.saturating_sub(weight)));
            }
        }
    }

    /// The weight held (see the module documentation for what it counts under concurrency).
    pub(crate) fn held(&self) -> usize {
        match &self.held {
            // Every "out" follows its "in", but the sums are read one shard at a time.
            Held::Sharded(counts) => counts.sum(IN).saturating_sub(counts.sum(OUT)) as usize,
            Held::Budget { held, .. } => held.load(Ordering::Acquire),
        }
    }
}

impl<V> fmt::Debug for Weights<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Weights")
            .field("weigher", &self.weigher.is_some())
            .field("max", &self.max())
            .field("held", &self.held())
            .finish()
    }
}

#[cfg(all(test, not(crossbeam_loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_budget_refuses_what_would_pass_it_and_names_what_it_saw() {
        let weights: Weights<Vec<u8>> = Weights::new(Some(Box::new(|v: &Vec<u8>| v.len())), Some(100));
        assert_eq!(weights.weigh(&vec![0; 7]), 7);
        assert_eq!(weights.try_add(60), Ok(()));
        assert_eq!(weights.try_add(41), Err(Refused { max: 100, held: 60 }));
        assert_eq!(weights.try_add(40), Ok(()));
        assert_eq!(weights.try_add(usize::MAX), Err(Refused { max: 100, held: 100 }), "no overflow");
        weights.release(100);
        assert_eq!(weights.held(), 0);
        weights.add(150); // `set` bypasses the budget
        assert_eq!(weights.held(), 150);
        assert_eq!(weights.try_add(1), Err(Refused { max: 100, held: 150 }));
    }

    #[test]
    fn without_a_budget_everything_is_counted() {
        let weights: Weights<u64> = Weights::new(None, None);
        assert_eq!(weights.weigh(&5), 0, "no weigher: weight 0");
        assert_eq!(weights.try_add(10), Ok(()));
        weights.add(5);
        weights.release(3);
        assert_eq!(weights.held(), 12);
        assert_eq!(weights.max(), None);
    }
}
