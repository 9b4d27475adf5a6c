//! The `life` word of an entry: its deadline and the flags that settle its fate, with every
//! transition the engine makes on it.
//!
//! ```text
//!            set links it            set dates it (after the link)
//!  new ──▶ PENDING (live) ──────────────────────────────────────▶ dated: live while now < deadline
//!                │  touch: deadline = max(deadline, touch's)            │  touch: same
//!                │                                                      │  claim (janitor, deadline ≤ now)
//!                │                                                      ▼
//!                │                                                   EXPIRED (dead; touches fail)
//!  independently of the above:
//!    take     (janitor, from the intake of new entries)  sets TAKEN
//!    unlink   (whoever unlinks it from the table)        sets UNLINKED
//!    release  value side: VALUE_DROPPED; janitor side: JANITOR_DONE; the second one frees it
//! ```
//!
//! A deadline only ever grows: [`Life::touch`] and [`Life::date`] take the maximum, so a
//! touch that read the clock long before it took effect never shortens a later touch's
//! life. `PENDING` covers the moment between a `set` linking its entry and reading the
//! clock: the set dates the entry only once it is linked, so its deadline counts from a
//! time no earlier than the start of any touch of the entry it replaced (see
//! `docs/design.md`, "The set"). See `docs/design.md`, sections 4 to 6, for the proofs.

use crate::clock::{TimeScale, NEVER};
use crate::sync::{AtomicU64, Ordering};

/// Bits holding the deadline (58): the first wheel tick at which the entry is dead.
const DEADLINE: u64 = NEVER;
/// A `set` has linked the entry but not dated it yet: live whatever its deadline.
const PENDING: u64 = 1 << 58;
/// The janitor has taken the entry from the intake of new entries.
const TAKEN: u64 = 1 << 59;
/// The entry has been physically unlinked from the table.
const UNLINKED: u64 = 1 << 60;
/// The janitor has claimed the entry for expiry; touches fail from then on.
const EXPIRED: u64 = 1 << 61;
/// The value has been dropped (after the epoch's grace period that followed the unlink).
const VALUE_DROPPED: u64 = 1 << 62;
/// The janitor holds the entry no more (off its intakes and its wheel).
const JANITOR_DONE: u64 = 1 << 63;

// The flags sit above the deadline bits.
const _: () = assert!(NEVER < PENDING, "deadlines must fit below the flags");

/// One reading of a [`Life`].
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct State(u64);

impl State {
    /// The first wheel tick at which the entry is dead (meaningless while pending).
    pub(crate) fn deadline(self) -> u64 {
        self.0 & DEADLINE
    }

    pub(crate) fn is_pending(self) -> bool {
        self.0 & PENDING != 0
    }

    pub(crate) fn is_taken(self) -> bool {
        self.0 & TAKEN != 0
    }

    pub(crate) fn is_unlinked(self) -> bool {
        self.0 & UNLINKED != 0
    }

    pub(crate) fn is_expired(self) -> bool {
        self.0 & EXPIRED != 0
    }

    /// Whether the entry is visible at `now` (nanoseconds): not claimed by the janitor, and
    /// either being set or before its deadline.
    #[inline]
    pub(crate) fn is_live(self, now: u64, scale: &TimeScale) -> bool {
        // Under `--cfg loom_broken="touch_ignores_claim"` the janitor's claim is ignored, on
        // purpose, to show that the loom models catch it.
        (cfg!(loom_broken = "touch_ignores_claim") || !self.is_expired())
            && (self.is_pending() || scale.is_alive(self.deadline(), now))
    }

    fn with_deadline(self, deadline: u64) -> State {
        State((self.0 & !DEADLINE) | deadline)
    }
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let flags = [
            (PENDING, "PENDING"),
            (TAKEN, "TAKEN"),
            (UNLINKED, "UNLINKED"),
            (EXPIRED, "EXPIRED"),
            (VALUE_DROPPED, "VALUE_DROPPED"),
            (JANITOR_DONE, "JANITOR_DONE"),
        ];
        write!(f, "State {{ deadline: {}", self.deadline())?;
        for (bit, name) in flags {
            if self.0 & bit != 0 {
                write!(f, " | {name}")?;
            }
        }
        write!(f, " }}")
    }
}

/// What the janitor found when it looked at a handed-out entry ([`Life::claim`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Claim {
    /// Due, and now claimed: every touch fails from here on; the janitor removes it.
    Expired,
    /// Touched since it was filed: file it again at this deadline (lazy re-filing).
    Refile(u64),
    /// Removed by someone else (or claimed already): leave it to its unlinker.
    Gone,
}

/// The atomic `life` word of an entry. See the module documentation.
pub(crate) struct Life(AtomicU64);

impl Life {
    /// A new entry's word: pending until its `set` dates it. `taken` when no janitor will
    /// ever take it from an intake (it has stopped), so that its unlinker retires it.
    pub(crate) fn pending(taken: bool) -> Life {
        Life(AtomicU64::new(PENDING | if taken { TAKEN } else { 0 }))
    }

    /// A word with `deadline` and no flags: for tests of the table alone.
    #[cfg(test)]
    pub(crate) fn dated(deadline: u64, taken: bool) -> Life {
        Life(AtomicU64::new(deadline | if taken { TAKEN } else { 0 }))
    }

    pub(crate) fn load(&self) -> State {
        State(self.0.load(Ordering::Acquire))
    }

    /// The load a remover makes right after its marking CAS: SeqCst, so that it and the
    /// janitor's SeqCst claim cannot both miss each other (docs/design.md, section 5).
    pub(crate) fn load_after_removal(&self) -> State {
        State(self.0.load(Ordering::SeqCst))
    }

    /// The `set` that made the entry dates it, once it is linked: clears `PENDING` and
    /// keeps the later of `deadline` and any touch made meanwhile.
    pub(crate) fn date(&self, deadline: u64) {
        let mut state = self.load();
        loop {
            debug_assert!(state.is_pending(), "dated twice: {state:?}");
            let kept = if cfg!(loom_broken = "date_overwrites_touch") { 0 } else { state.deadline() };
            let dated = State(state.0 & !PENDING).with_deadline(deadline.max(kept));
            match self.0.compare_exchange_weak(state.0, dated.0, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return,
                Err(seen) => state = State(seen),
            }
        }
    }

    /// A hit at `now`: whether the entry is live, extending its deadline to
    /// `deadline_after_touch(now)` if that is later (one CAS; nothing is written when the
    /// deadline would not move). Fails once the janitor has claimed it: a claimed entry is
    /// never revived.
    #[inline]
    pub(crate) fn touch(&self, now: u64, scale: &TimeScale) -> bool {
        let mut state = self.load();
        loop {
            if !state.is_live(now, scale) {
                return false;
            }
            if !scale.touch_moves(state.deadline(), now) {
                return true; // the deadline would not move: write nothing
            }
            let touched = state.with_deadline(scale.deadline_after_touch(now));
            match self.0.compare_exchange_weak(state.0, touched.0, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return true,
                Err(seen) => state = State(seen),
            }
        }
    }

    /// The janitor's decision on an entry the wheel handed out at wheel tick `now`: claim it
    /// if it is due (one SeqCst CAS, which a racing touch or remover makes fail, and then
    /// the janitor looks again), re-file it if a touch moved its deadline past `now`, leave
    /// it if it was removed. `removed` says whether the table has marked it (a remover
    /// whose unlink has not happened yet).
    pub(crate) fn claim(&self, now: u64, removed: impl Fn() -> bool) -> Claim {
        let mut state = self.load();
        loop {
            if state.is_unlinked() || state.is_expired() || removed() {
                return Claim::Gone;
            }
            debug_assert!(!state.is_pending(), "the janitor met a pending entry: {state:?}");
            if state.deadline() > now {
                return Claim::Refile(state.deadline());
            }
            if cfg!(loom_broken = "janitor_blind_claim") {
                // Broken on purpose: claim without checking that no touch moved the deadline.
                self.0.fetch_or(EXPIRED, Ordering::SeqCst);
                return Claim::Expired;
            }
            // SeqCst: ordered against a remover's SeqCst mark and its `load_after_removal`.
            match self.0.compare_exchange(state.0, state.0 | EXPIRED, Ordering::SeqCst, Ordering::Acquire) {
                Ok(_) => return Claim::Expired,
                Err(seen) => state = State(seen),
            }
        }
    }

    /// The janitor takes the entry from the intake of new entries. Returns the state
    /// before: if it was unlinked already, its unlinker left the janitor's hold to us.
    pub(crate) fn take(&self) -> State {
        State(self.0.fetch_or(TAKEN, Ordering::AcqRel))
    }

    /// The thread that unlinked the entry from the table says so. Returns the state
    /// before: if the janitor had taken it, the unlinker hands it over (the unlinked intake).
    pub(crate) fn unlink(&self) -> State {
        State(self.0.fetch_or(UNLINKED, Ordering::AcqRel))
    }

    /// The epoch side let go (the value is dropped). Returns whether the janitor side had
    /// let go already: then this side frees the entry.
    pub(crate) fn release_value(&self) -> bool {
        self.0.fetch_or(VALUE_DROPPED, Ordering::AcqRel) & JANITOR_DONE != 0
    }

    /// The janitor side let go. Returns whether the value had been dropped already: then
    /// this side frees the entry.
    pub(crate) fn release_janitor(&self) -> bool {
        self.0.fetch_or(JANITOR_DONE, Ordering::AcqRel) & VALUE_DROPPED != 0
    }
}

#[cfg(all(test, not(crossbeam_loom)))]
mod tests {
    use super::*;
    use std::time::Duration;

    const MS: u64 = 1_000_000;

    /// Tick 80 ms (a wheel tick of 10 ms), expire 1 s.
    fn scale() -> TimeScale {
        TimeScale::new(Duration::from_millis(80), Duration::from_secs(1))
    }

    #[test]
    fn a_pending_entry_is_live_and_its_dating_keeps_the_later_touch() {
        let scale = scale();
        let life = Life::pending(false);
        assert!(life.load().is_live(u64::MAX - 1, &scale), "pending: live whatever the time");
        // A get touches it at 500 ms while its set is still between link and dating.
        assert!(life.touch(500 * MS, &scale));
        assert!(life.load().is_pending());
        assert_eq!(life.load().deadline(), 150);
        // The set read the clock at 100 ms: the touch's later deadline stays.
        life.date(scale.deadline_after_touch(100 * MS));
        let state = life.load();
        assert!(!state.is_pending());
        assert_eq!(state.deadline(), 150, "dating moved a deadline backwards: {state:?}");
        assert!(state.is_live(1499 * MS, &scale));
        assert!(!state.is_live(1500 * MS, &scale));
    }

    #[test]
    fn touches_never_move_a_deadline_backwards() {
        let scale = scale();
        let life = Life::pending(false);
        life.date(scale.deadline_after_touch(900 * MS));
        assert_eq!(life.load().deadline(), 190);
        assert!(life.touch(300 * MS, &scale), "a late-arriving touch dated 300 ms");
        assert_eq!(life.load().deadline(), 190);
        assert!(life.touch(905 * MS, &scale));
        assert_eq!(life.load().deadline(), 191, "905 ms + 1 s rounds up to the tick at 1910 ms");
    }

    #[test]
    fn a_claim_wins_over_later_touches_and_loses_to_earlier_ones() {
        let scale = scale();
        let life = Life::pending(true);
        life.date(scale.deadline_after_touch(0));
        assert_eq!(life.claim(99, || false), Claim::Refile(100), "not due before its deadline");
        assert!(life.touch(50 * MS, &scale), "touched at 50 ms");
        assert_eq!(life.claim(100, || false), Claim::Refile(105), "the touch came first");
        assert_eq!(life.claim(105, || false), Claim::Expired);
        assert!(!life.touch(60 * MS, &scale), "a claimed entry is never revived");
        assert!(!life.load().is_live(0, &scale));
        assert_eq!(life.claim(105, || false), Claim::Gone, "claimed once");
    }

    #[test]
    fn removed_entries_are_left_to_their_unlinker() {
        let life = Life::pending(false);
        life.date(10);
        assert_eq!(life.claim(10, || true), Claim::Gone, "marked by a remover");
        assert!(!life.unlink().is_unlinked());
        assert_eq!(life.claim(10, || false), Claim::Gone, "unlinked");
        assert!(life.take().is_unlinked(), "the janitor learns it was unlinked before it took it");
    }

    #[test]
    fn the_second_side_to_let_go_frees() {
        let life = Life::pending(false);
        assert!(!life.release_value());
        assert!(life.release_janitor());
        let life = Life::pending(false);
        assert!(!life.release_janitor());
        assert!(life.release_value());
    }

    #[test]
    fn never_expiring_entries_stay_live() {
        let scale = TimeScale::new(Duration::from_millis(80), Duration::MAX);
        let life = Life::pending(false);
        life.date(scale.deadline_after_touch(0));
        assert_eq!(life.load().deadline(), NEVER);
        assert!(life.touch(u64::MAX, &scale));
        assert_eq!(life.load().deadline(), NEVER);
    }
}
