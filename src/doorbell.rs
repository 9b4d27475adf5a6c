//! Doorbells: how a map's intakes wake the janitor thread for a map that sleeps.
//!
//! A map asleep until its next deadline must still learn of new and removed entries soon.
//! Its intakes ring its [`Doorbell`] when a push finds its stripe empty (the first entry
//! since the janitor last took that stripe); the janitor thread takes every rung bell off
//! the process's [`Rack`] and runs those maps.
//!
//! The protocol, on the bell's `rung` flag (both sides read-modify-write it, so the two are
//! ordered and nothing is lost):
//!
//! - a ringer, after its push: `swap(true)`; if it was clear, it pushes the bell onto the
//!   rack (a Treiber stack; an `Arc` count travels with it);
//! - the janitor thread: takes the whole rack (`swap` of its head: no ABA), and for each bell
//!   reads its stack link, then `swap(false)`, then runs the map.
//!
//! If a ringer's swap finds the flag set, it comes before the thread's clearing swap in the
//! flag's modification order, which then reads it: the ringer's push happens before the run
//! that follows the clear. If it finds the flag clear, it pushes the bell. Either way a run
//! comes that sees the entry. A bell is on the rack at most once (only the ringer that set
//! the flag pushes it, and the flag is cleared only once the bell is off the rack).
//! Checked by a loom model together with the intakes that ring (`crate::intake`'s tests).

use std::sync::Arc;

use crate::sync::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};

/// A map's doorbell.
pub(crate) struct Doorbell {
    /// Set by the ringer that pushes the bell onto the rack; cleared by the thread once it
    /// has taken the bell off it.
    rung: AtomicBool,
    /// The next bell on the rack.
    next: AtomicPtr<Doorbell>,
    /// The rack it is pushed onto.
    rack: &'static Rack,
    /// The map's janitor job (slot and generation in the scheduler), once registered.
    slot: AtomicUsize,
    generation: AtomicU64,
}

/// Rung doorbells: a lock-free stack, each bell holding one count of its `Arc`.
pub(crate) struct Rack {
    head: AtomicPtr<Doorbell>,
}

/// The process's rack, which the janitor thread takes.
#[cfg(not(crossbeam_loom))]
static PROCESS_RACK: Rack = Rack { head: AtomicPtr::new(std::ptr::null_mut()) };

impl Rack {
    /// An empty rack (the loom models make their own).
    #[cfg(all(test, crossbeam_loom))]
    pub(crate) fn new() -> Rack {
        Rack { head: AtomicPtr::new(std::ptr::null_mut()) }
    }

    /// The process's rack, which the janitor thread takes.
    pub(crate) fn process() -> &'static Rack {
        #[cfg(not(crossbeam_loom))]
        return &PROCESS_RACK;
        // Loom models use manual mode, whose maps have no doorbell; a static of loom's
        // atomics would outlive the model's execution.
        #[cfg(crossbeam_loom)]
        unreachable!("under loom, maps are built in manual mode and ring no process rack")
    }

    /// Whether no bell is rung (as of one load: a racing ring may be missed; it is seen by
    /// the next look).
    pub(crate) fn is_empty(&self) -> bool {
        self.head.load(Ordering::Relaxed).is_null()
    }

    /// Takes every rung bell off the rack, clears it and calls `wake` on it. Returns how
    /// many it took.
    pub(crate) fn take(&self, mut wake: impl FnMut(&Doorbell)) -> usize {
        let mut next = self.head.swap(std::ptr::null_mut(), Ordering::Acquire);
        let mut taken = 0;
        while !next.is_null() {
            // SAFETY: every pointer on the rack came from `Arc::into_raw` in `ring` and is
            // taken off exactly once, here (the swap took the whole stack).
            let bell = unsafe { Arc::from_raw(next) };
            // Read before the clear: once cleared, a ringer may push the bell again.
            next = bell.next.load(Ordering::Relaxed);
            bell.clear();
            wake(&bell);
            taken += 1;
        }
        taken
    }
}

impl Doorbell {
    /// A bell that rings onto `rack`.
    pub(crate) fn new(rack: &'static Rack) -> Arc<Doorbell> {
        Arc::new(Doorbell {
            rung: AtomicBool::new(false),
            next: AtomicPtr::new(std::ptr::null_mut()),
            rack,
            slot: AtomicUsize::new(usize::MAX),
            generation: AtomicU64::new(0),
        })
    }

    /// Asks for a run of the map soon. Lock-free: one `swap`, and when the bell was not
    /// rung yet, one CAS loop onto the rack. Called after the push it announces.
    pub(crate) fn ring(self: &Arc<Doorbell>) {
        // Broken on purpose under `loom_broken = "ring_checks_by_load"`: a load first, to
        // skip the swap when the bell looks rung (the thread may be clearing it meanwhile).
        if cfg!(loom_broken = "ring_checks_by_load") && self.rung.load(Ordering::Relaxed) {
            return;
        }
        if self.rung.swap(true, Ordering::AcqRel) {
            return; // on the rack already, or about to be
        }
        let bell = Arc::into_raw(Arc::clone(self)).cast_mut();
        let mut head = self.rack.head.load(Ordering::Relaxed);
        loop {
            self.next.store(head, Ordering::Relaxed);
            match self.rack.head.compare_exchange_weak(head, bell, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => return,
                Err(seen) => head = seen,
            }
        }
    }

    /// The thread's side: the bell is off the rack; a ring from now on pushes it again. A
    /// swap, not a store: it must read the flag, so that a ringer that found it set is
    /// ordered before the run that follows.
    fn clear(&self) {
        self.rung.swap(false, Ordering::AcqRel);
    }

    /// Names the janitor job this bell wakes.
    pub(crate) fn register(&self, slot: usize, generation: u64) {
        self.slot.store(slot, Ordering::Release);
        self.generation.store(generation, Ordering::Release);
    }

    /// The janitor job this bell wakes: its slot and generation.
    pub(crate) fn job(&self) -> (usize, u64) {
        (self.slot.load(Ordering::Acquire), self.generation.load(Ordering::Acquire))
    }
}
