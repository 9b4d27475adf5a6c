//! Striped lock-free stacks that hand entries to the janitor.
//!
//! Each thread pushes onto the stripe its [`thread_index`] picks, with one CAS on that
//! stripe's head: there is no single point every `set` contends on. The janitor takes a
//! whole stripe at once with a `swap`, so pops never race pushes (no ABA).
//!
//! An entry is linked through its own `intake_next` field, so pushing never allocates.
//! It sits on at most one intake at a time, and on none once the janitor lets go of it
//! (which chains its released entries through the same field: `crate::reclaim`;
//! `docs/design.md`, "Hand-offs").

use std::ptr;

use crate::doorbell::Doorbell;
use crate::entry::Entry;
use crate::sync::{thread_index, AtomicPtr, CachePadded, Ordering};

/// The head of one stripe's stack.
type Stripe<K, V> = CachePadded<AtomicPtr<Entry<K, V>>>;

pub(crate) struct Intake<K, V> {
    stripes: Box<[Stripe<K, V>]>,
    /// Rung by a push onto an empty stripe, so that a sleeping janitor thread comes for
    /// the entry; `None` in manual mode.
    bell: Option<std::sync::Arc<Doorbell>>,
}

impl<K, V> Intake<K, V> {
    pub(crate) fn new(bell: Option<std::sync::Arc<Doorbell>>) -> Intake<K, V> {
        let stripes = if cfg!(crossbeam_loom) {
            2
        } else {
            let cpus = std::thread::available_parallelism().map_or(4, |n| n.get());
            (cpus * 2).next_power_of_two().min(64)
        };
        let stripes = (0..stripes).map(|_| CachePadded::new(AtomicPtr::new(ptr::null_mut()))).collect();
        Intake { stripes, bell }
    }

    /// Pushes `entry`.
    ///
    /// # Safety
    /// `entry` is alive, on no intake, and stays alive until the janitor takes it; nobody
    /// else writes its `intake_next` meanwhile.
    pub(crate) unsafe fn push(&self, entry: *mut Entry<K, V>) {
        let stripe = &self.stripes[thread_index() & (self.stripes.len() - 1)];
        let mut head = stripe.load(Ordering::Relaxed);
        loop {
            // SAFETY: the caller guarantees `entry` is alive and its `intake_next` ours.
            unsafe { (*entry).intake_next.store(head, Ordering::Relaxed) };
            // Release: the janitor that takes the stripe sees `intake_next` and everything
            // written to the entry before the push.
            match stripe.compare_exchange_weak(head, entry, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => {
                    // The first entry since the janitor last took this stripe: make sure it
                    // comes. (Later pushes find the stripe taken or this entry on it.)
                    if head.is_null() {
                        if let Some(bell) = &self.bell {
                            bell.ring();
                        }
                    }
                    return;
                }
                Err(seen) => head = seen,
            }
        }
    }

    /// Whether no entry is pushed (as of each stripe's load: a racing push may be missed,
    /// as by [`take_all`](Self::take_all)).
    pub(crate) fn is_empty(&self) -> bool {
        self.stripes.iter().all(|stripe| stripe.load(Ordering::Relaxed).is_null())
    }

    /// Takes every pushed entry and calls `f` on each. `f` may push the entry onto another
    /// intake: its `intake_next` has been read before `f` runs.
    pub(crate) fn take_all(&self, mut f: impl FnMut(*mut Entry<K, V>)) -> usize {
        let mut taken = 0;
        for stripe in self.stripes.iter() {
            let mut next = stripe.swap(ptr::null_mut(), Ordering::Acquire);
            while !next.is_null() {
                let entry = next;
                // SAFETY: pushed entries stay alive until taken, and this swap took them.
                next = unsafe { (*entry).intake_next.load(Ordering::Relaxed) };
                // The next entry's lines load while `f` works on this one (whose RMW on its
                // life word would otherwise hold the next load back until it is done).
                Entry::prefetch_for_janitor(next);
                f(entry);
                taken += 1;
            }
        }
        taken
    }
}

/// Loom models of the doorbell protocol (`crate::doorbell`) as intakes ring it, run by `loom-tests/run.sh` (the crate's own unit tests
/// under `--cfg crossbeam_loom`, filtered to `loom_`).
#[cfg(all(test, crossbeam_loom))]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::doorbell::{Doorbell, Rack};
    use crate::entry::new_entry;
    use crate::life::Life;
    use crate::reclaim::destroy_whole;

    /// Two threads push one entry each onto a map's intake (ringing its bell as the engine
    /// does) while the janitor thread takes the rack and then the intake. Afterwards, every
    /// entry still on the intake is announced by a bell on the rack: no wake is lost.
    #[test]
    fn loom_an_entry_left_on_an_intake_always_has_a_rung_bell() {
        loom::model(|| {
            let rack: &'static Rack = Box::leak(Box::new(Rack::new()));
            let bell = Doorbell::new(rack);
            let intake = loom::sync::Arc::new(Intake::<u64, u64>::new(Some(Arc::clone(&bell))));
            let pushers: Vec<_> = (0..2u64)
                .map(|key| {
                    let intake = loom::sync::Arc::clone(&intake);
                    loom::thread::spawn(move || {
                        let entry = new_entry(key, key, Life::new(0, false), false);
                        // SAFETY: a fresh entry, on no intake; taken and freed below.
                        unsafe { intake.push(entry) };
                    })
                })
                .collect();
            let free = |entry| {
                // SAFETY: taken off the intake, never published anywhere else.
                unsafe { destroy_whole(entry) }
            };
            // The janitor thread: a drain of the rack, then the run it leads to.
            rack.take(|_| {});
            let taken = intake.take_all(free);
            for pusher in pushers {
                pusher.join().unwrap();
            }
            let rung = rack.take(|_| {});
            let left = intake.take_all(free);
            assert!(left == 0 || rung == 1, "{left} entries left on the intake with no bell rung ({taken} taken)");
            assert!(rung <= 1, "a bell on the rack twice");
        });
    }
}
