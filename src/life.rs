//! The `life` word of an entry: its deadline and the flags that settle its fate, with every
//! transition the engine makes on it.
//!
//! ```text
//!  fresh insert ─────────────────────────────────────────▶ dated: live while now < deadline
//!  replacing insert ─▶ PENDING (live) ── finish(carried) ──▶   │  touch: deadline = max(deadline, touch's)
//!                        │ touch: max, stays PENDING            │  claim (janitor, deadline ≤ now)
//!                        │                                      ▼
//!                        │                                   EXPIRED (dead; touches fail)
//!  on any of them:  replace   (the set that replaced it)          sets REPLACED: touches move on
//!                   take      (janitor, intake of new entries)    sets TAKEN
//!                   unlink    (whoever unlinks it from the table) sets UNLINKED
//!                   release   value side: VALUE_DROPPED; janitor side: JANITOR_DONE;
//!                             the second one frees the entry
//! ```
//!
//! **Deadlines only grow, and a replacement hands its predecessor's deadline down.** A
//! touch and [`Life::finish`] take the maximum, so a touch that read the clock long before
//! it took effect never shortens a later touch's life. A `set` that replaces an entry marks
//! it [`REPLACED`] with one read-modify-write ([`Life::replace`]), which also reads its
//! deadline: every touch that reached the old entry before that is in the deadline the new
//! entry inherits, and every touch after it fails (its CAS expected a word without
//! `REPLACED`) and goes to the new entry instead. Until the new entry has inherited, it is
//! `PENDING`: live whatever its own deadline. If the old entry was itself pending (two
//! replacing sets in a row), its own finisher hands the deadline down when it has it: the
//! `REPLACED` it finds set on finishing says so (see `Table::hand_down`). See
//! `docs/design.md`, sections 4 and 5, for the proofs.

use crate::clock::{TimeScale, NEVER};
use crate::sync::{AtomicU64, Ordering};

/// Bits holding the deadline (57): the first wheel tick at which the entry is dead.
const DEADLINE: u64 = NEVER;
/// The entry replaced another and has not inherited its deadline yet: live whatever its
/// own deadline.
const PENDING: u64 = 1 << 57;
/// A `set` replaced the entry: touches go to its successor (the entry its `next` points at).
const REPLACED: u64 = 1 << 58;
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

/// One reading of a [`Life`].
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct State(u64);

impl State {
    /// The first wheel tick at which the entry is dead (a lower bound while pending).
    pub(crate) fn deadline(self) -> u64 {
        self.0 & DEADLINE
    }

    pub(crate) fn is_pending(self) -> bool {
        self.0 & PENDING != 0
    }

    pub(crate) fn is_replaced(self) -> bool {
        self.0 & REPLACED != 0
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
    /// either inheriting a deadline or before its own.
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
            (REPLACED, "REPLACED"),
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

/// What a hit found ([`Life::touch`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Touch {
    /// Live, and its deadline now covers the touch.
    Live,
    /// Dead: past its deadline, or claimed by the janitor.
    Dead,
    /// Replaced by a `set` before the touch took effect: look the key up again.
    Replaced,
}

/// What the janitor found when it looked at a handed-out entry ([`Life::claim`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Claim {
    /// Due, and now claimed: every touch fails from here on; the janitor removes it.
    Expired,
    /// Not due at the janitor's time: file it again at this deadline (lazy re-filing).
    Refile(u64),
    /// Removed by someone else: leave it to its unlinker.
    Gone,
    /// Claimed dead by a `set_if_absent` ([`Life::kill_if_dead`]) but still linked: the
    /// janitor removes it as garbage (not an expiry), in case that set never does.
    Dead,
}

/// What [`Life::kill_if_dead`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kill {
    /// Live (or pending): the `set_if_absent` refuses.
    Live,
    /// Dead, and this call's CAS claimed it: nobody else reads its value from here on (the
    /// janitor's claim finds [`Claim::Dead`] and reads it only if its own mark wins, which
    /// makes the set's replacement fail), so the set that replaces it may take the value.
    Killed,
    /// Dead for good already: claimed by the janitor (which may read the value for its
    /// listener) or by an earlier look, or unlinked.
    DeadBefore,
}

impl Kill {
    /// Whether the entry is dead for good.
    pub(crate) fn is_dead(self) -> bool {
        self != Kill::Live
    }
}

/// The atomic `life` word of an entry. See the module documentation.
pub(crate) struct Life(AtomicU64);

impl Life {
    /// A new entry's word: dated `deadline`. `taken` when no janitor will ever take it from
    /// an intake (it has stopped), so that its unlinker retires it.
    pub(crate) fn new(deadline: u64, taken: bool) -> Life {
        Life(AtomicU64::new(deadline | if taken { TAKEN } else { 0 }))
    }

    /// Before the CAS that publishes an unpublished entry: pending if the CAS replaces an
    /// entry, not if it inserts. (Relaxed: the publishing CAS releases it.)
    pub(crate) fn prepare(&self, replacing: bool) {
        let state = self.0.load(Ordering::Relaxed);
        self.0.store(if replacing { state | PENDING } else { state & !PENDING }, Ordering::Relaxed);
    }

    pub(crate) fn load(&self) -> State {
        State(self.0.load(Ordering::Acquire))
    }

    /// A remover that won the marking CAS settles the entry's fate with the janitor: one
    /// read-modify-write that sets `EXPIRED` and returns whether it was set already. The
    /// janitor's claim is a CAS on this same word, so the two are ordered: if the claim came
    /// first, it decided (the entry expired; the remover reports not-found); if this came
    /// first, the claim's CAS fails, and on its second look the janitor sees the mark and
    /// gives up (`Claim::Gone`). A load here would not do: the claim checks the mark and
    /// CASes `life`, two words, so a claim could land after the mark, unseen by a load made
    /// before it, and both would own the entry. Touches fail from here on, as after a claim:
    /// the entry is removed.
    pub(crate) fn settle_removal(&self) -> bool {
        if cfg!(loom_broken = "removal_settles_by_load") {
            // Broken on purpose: the load this replaced (the unit test below catches it).
            return self.load().is_expired();
        }
        self.0.fetch_or(EXPIRED, Ordering::SeqCst) & EXPIRED != 0
    }

    /// The `set` that replaced this entry (its marking CAS done) says so: touches fail from
    /// here on and go to the successor. Returns the deadline the successor inherits, or
    /// `None` while this entry is pending itself: its finisher hands it down then.
    pub(crate) fn replace(&self) -> Option<u64> {
        if cfg!(loom_broken = "replace_forgets_touches") {
            // Broken on purpose: the successor inherits nothing.
            return Some(0);
        }
        let before = State(self.0.fetch_or(REPLACED, Ordering::AcqRel));
        (!before.is_pending()).then(|| before.deadline())
    }

    /// A pending entry inherits `deadline`: it is dated the later of that and any touch
    /// made meanwhile. Returns the deadline to hand down further if the entry was replaced
    /// while pending (its successor waits for it).
    pub(crate) fn finish(&self, deadline: u64) -> Option<u64> {
        let mut state = self.load();
        loop {
            debug_assert!(state.is_pending(), "finished twice: {state:?}");
            let kept = if cfg!(loom_broken = "finish_overwrites_touch") { 0 } else { state.deadline() };
            let dated = State(state.0 & !PENDING).with_deadline(deadline.max(kept));
            match self.0.compare_exchange_weak(state.0, dated.0, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    let relay = state.is_replaced() && !cfg!(loom_broken = "finish_forgets_successor");
                    return relay.then(|| dated.deadline());
                }
                Err(seen) => state = State(seen),
            }
        }
    }

    /// A hit at `now`, read exactly: [`touch_seen`](Self::touch_seen) with no lag.
    #[cfg(test)]
    pub(crate) fn touch(&self, now: u64, scale: &TimeScale) -> Touch {
        self.touch_seen(now, 0, scale)
    }

    /// A hit judged at `seen`, a reading that may trail the map's time by up to `lag`
    /// (`crate::clock::TimeSource::seen`): whether the entry is live at `seen` (judged by a
    /// time that is never ahead, it is never judged dead early), extending its deadline to
    /// `deadline_after_touch(seen + lag)` if that is later (one CAS; nothing is written when
    /// the deadline would not move). `seen + lag` is the latest the time can be, so the new
    /// deadline is never dated early, and no move the time calls for is skipped; it is at
    /// most `lag` later than a date by the exact time, and no clock is read (an exact
    /// reading would hold the loads after it back: docs/performance.md). Fails once the
    /// janitor has claimed the entry (a claimed entry is never revived), and once a `set`
    /// has replaced it (the touch belongs to the successor).
    #[inline]
    pub(crate) fn touch_seen(&self, seen: u64, lag: u64, scale: &TimeScale) -> Touch {
        let latest = seen.saturating_add(lag);
        let mut state = self.load();
        loop {
            if state.is_replaced() && !cfg!(loom_broken = "touch_ignores_replaced") {
                return Touch::Replaced;
            }
            if !state.is_live(seen, scale) {
                return Touch::Dead;
            }
            if !scale.touch_moves(state.deadline(), latest) {
                return Touch::Live; // the deadline would not move: write nothing
            }
            let touched = state.with_deadline(scale.deadline_after_touch(latest));
            match self.0.compare_exchange_weak(state.0, touched.0, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Touch::Live,
                Err(seen) => state = State(seen),
            }
        }
    }

    /// The janitor's decision on an entry the wheel handed out at wheel tick `now`: claim it
    /// if it is due (one SeqCst CAS, which a racing touch or remover makes fail, and then
    /// the janitor looks again), re-file it if a touch moved its deadline past `now` (or,
    /// while it inherits, at the next tick), leave it if it was removed. `removed` says
    /// whether the table has marked it (a remover whose unlink has not happened yet).
    pub(crate) fn claim(&self, now: u64, removed: impl Fn() -> bool) -> Claim {
        let mut state = self.load();
        loop {
            if state.is_unlinked() || removed() {
                return Claim::Gone;
            }
            if state.is_expired() {
                return Claim::Dead;
            }
            if state.is_pending() {
                // Its replacing set is still handing a deadline down: look again next tick.
                return Claim::Refile(state.deadline().max(now + 1));
            }
            if state.deadline() > now {
                return Claim::Refile(state.deadline());
            }
            if cfg!(loom_broken = "janitor_blind_claim") {
                // Broken on purpose: claim without checking that no touch moved the deadline.
                self.0.fetch_or(EXPIRED, Ordering::SeqCst);
                return Claim::Expired;
            }
            // A CAS on the word a remover settles with (`settle_removal`): the two are ordered.
            match self.0.compare_exchange(state.0, state.0 | EXPIRED, Ordering::SeqCst, Ordering::Acquire) {
                Ok(_) => return Claim::Expired,
                Err(seen) => state = State(seen),
            }
        }
    }

    /// A `set_if_absent` that found this entry at wheel tick `now`: if it is dead then (past
    /// its deadline and not pending), claim it so, with the janitor's CAS, so that no touch
    /// that read the clock earlier can revive it before the set replaces it.
    pub(crate) fn kill_if_dead(&self, now: u64) -> Kill {
        match self.claim(now, || false) {
            Claim::Refile(_) => Kill::Live,
            Claim::Expired => Kill::Killed,
            Claim::Dead | Claim::Gone => Kill::DeadBefore,
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

    /// The value side let go (the value is dropped, or was taken by its remover). Returns
    /// whether the janitor side had let go already: then this side frees the entry.
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

    /// A replacing entry as `Table::insert` leaves it: published, pending.
    fn pending(deadline: u64) -> Life {
        let life = Life::new(deadline, false);
        life.prepare(true);
        life
    }

    #[test]
    fn a_pending_entry_is_live_and_inherits_the_later_deadline() {
        let scale = scale();
        let life = pending(scale.deadline_after_touch(100 * MS)); // its set read 100 ms
        assert!(life.load().is_live(u64::MAX - 1, &scale), "pending: live whatever the time");
        // A get touches it at 500 ms while its set is still handing the old deadline down.
        assert_eq!(life.touch(500 * MS, &scale), Touch::Live);
        assert!(life.load().is_pending());
        assert_eq!(life.load().deadline(), 150);
        // The replaced entry's deadline (120) is earlier: the touch's stays.
        assert_eq!(life.finish(120), None);
        let state = life.load();
        assert!(!state.is_pending());
        assert_eq!(state.deadline(), 150, "finishing moved a deadline backwards: {state:?}");
        assert!(state.is_live(1499 * MS, &scale));
        assert!(!state.is_live(1500 * MS, &scale));
    }

    #[test]
    fn a_replaced_entry_hands_its_deadline_down_and_turns_touches_away() {
        let scale = scale();
        let old = Life::new(scale.deadline_after_touch(0), false);
        assert_eq!(old.touch(700 * MS, &scale), Touch::Live);
        assert_eq!(old.replace(), Some(170), "the successor inherits the touch at 700 ms");
        assert_eq!(old.touch(800 * MS, &scale), Touch::Replaced, "later touches go to the successor");
        assert_eq!(old.load().deadline(), 170);
    }

    #[test]
    fn an_entry_replaced_while_pending_relays_when_it_finishes() {
        let middle = pending(100);
        assert_eq!(middle.replace(), None, "pending: nothing to inherit yet");
        assert_eq!(middle.finish(130), Some(130), "its successor waits for this deadline");
        let last = pending(110);
        assert_eq!(last.finish(130), None);
        assert_eq!(last.load().deadline(), 130);
    }

    #[test]
    fn touches_never_move_a_deadline_backwards() {
        let scale = scale();
        let life = Life::new(scale.deadline_after_touch(900 * MS), false);
        assert_eq!(life.load().deadline(), 190);
        assert_eq!(life.touch(300 * MS, &scale), Touch::Live, "a late-arriving touch dated 300 ms");
        assert_eq!(life.load().deadline(), 190);
        assert_eq!(life.touch(905 * MS, &scale), Touch::Live);
        assert_eq!(life.load().deadline(), 191, "905 ms + 1 s rounds up to the tick at 1910 ms");
    }

    /// A touch judged by a reading that trails the time by up to `lag` (the coarse clock):
    /// it moves the deadline whenever the time may call for a move, and dates the move by
    /// the latest the time can be, `seen + lag`: never early, at most `lag` late.
    #[test]
    fn a_touch_judged_by_a_trailing_time_dates_its_move_by_the_latest_time_it_can_be() {
        let scale = scale(); // wheel tick 10 ms, expire 1 s
        let lag = 30 * MS;
        // Set at 95 ms: deadline 110 (1100 ms).
        let life = Life::new(scale.deadline_after_touch(95 * MS), false);
        // Seen at 60 ms, the time is at most 90 ms: 90 ms + 1 s stays inside tick 110.
        assert_eq!(life.touch_seen(60 * MS, lag, &scale), Touch::Live);
        assert_eq!(life.load().deadline(), 110, "no move is due");
        // Seen at 95 ms, the time may be 125 ms (the coarse clock 30 ms behind): the move
        // is made, dated 125 ms. Dated by the seen 95 ms it would move nothing, and an entry
        // hit at 125 ms would be gone 975 ms later.
        assert_eq!(life.touch_seen(95 * MS, lag, &scale), Touch::Live);
        assert_eq!(life.load().deadline(), 113, "125 ms + 1 s rounds up to 1130 ms");
        assert_eq!(life.touch_seen(100 * MS, lag, &scale), Touch::Live);
        assert_eq!(life.load().deadline(), 113, "130 ms + 1 s is tick 113 itself: no move");
        // Judged live by the trailing reading although the time may be past the deadline:
        // a hit then (late, within the lag), and its new life runs from the latest time.
        assert_eq!(life.touch_seen(1129 * MS, lag, &scale), Touch::Live);
        assert_eq!(life.load().deadline(), 216, "1159 ms + 1 s rounds up to 2160 ms");
        // Judged dead only by a reading at or past the deadline.
        assert_eq!(life.touch_seen(2160 * MS, lag, &scale), Touch::Dead);
        // With no lag the seen time is the time: a move is dated by it.
        let fresh = Life::new(scale.deadline_after_touch(0), false);
        assert_eq!(fresh.touch_seen(500 * MS, 0, &scale), Touch::Live);
        assert_eq!(fresh.load().deadline(), 150, "dated 500 ms");
    }

    /// The bounds, over every seen time of a range: whatever the time `t` in
    /// `[seen, seen + lag]` was, the entry lives at least `expire` past it, and its
    /// deadline is less than `expire` plus a wheel tick plus the lag past `seen`.
    #[test]
    fn a_trailing_touch_is_never_early_and_at_most_the_lag_late() {
        let scale = scale(); // wheel tick 10 ms, expire 1 s
        let (tick, expire, lag) = (10 * MS, 1000 * MS, 30 * MS);
        for set_at in (0..40 * MS).step_by(3 * MS as usize) {
            for seen in (set_at..set_at + 40 * MS).step_by(MS as usize) {
                let life = Life::new(scale.deadline_after_touch(set_at), false);
                assert_eq!(life.touch_seen(seen, lag, &scale), Touch::Live);
                let deadline = life.load().deadline();
                let dead_at = deadline * tick;
                assert!(dead_at >= seen + lag + expire, "set {set_at}, seen {seen}: dead at {dead_at}, early");
                assert!(dead_at < seen + lag + expire + tick, "set {set_at}, seen {seen}: dead at {dead_at}, late");
                let dated = scale.deadline_after_touch(seen + lag);
                assert_eq!(deadline, dated.max(scale.deadline_after_touch(set_at)), "set {set_at}, seen {seen}");
            }
        }
    }

    #[test]
    fn a_claim_wins_over_later_touches_and_loses_to_earlier_ones() {
        let scale = scale();
        let life = Life::new(scale.deadline_after_touch(0), true);
        assert_eq!(life.claim(99, || false), Claim::Refile(100), "not due before its deadline");
        assert_eq!(life.touch(50 * MS, &scale), Touch::Live, "touched at 50 ms");
        assert_eq!(life.claim(100, || false), Claim::Refile(105), "the touch came first");
        assert_eq!(life.claim(105, || false), Claim::Expired);
        assert_eq!(life.touch(60 * MS, &scale), Touch::Dead, "a claimed entry is never revived");
        assert!(!life.load().is_live(0, &scale));
        assert_eq!(life.claim(105, || false), Claim::Dead, "claimed once");
    }

    #[test]
    fn set_if_absent_kills_only_dead_entries_and_no_touch_revives_them() {
        let scale = scale();
        let life = Life::new(scale.deadline_after_touch(0), true); // deadline: tick 100
        assert_eq!(life.kill_if_dead(99), Kill::Live, "live at tick 99");
        assert!(life.load().is_live(999 * MS, &scale));
        assert_eq!(life.kill_if_dead(100), Kill::Killed, "dead from its deadline on, claimed by this look");
        assert_eq!(life.touch(500 * MS, &scale), Touch::Dead, "a touch that read the clock earlier comes too late");
        assert_eq!(life.kill_if_dead(100), Kill::DeadBefore, "dead for good, claimed before");
        assert_eq!(life.claim(100, || false), Claim::Dead, "the janitor removes it as garbage");
        assert_eq!(pending(10).kill_if_dead(50), Kill::Live, "pending: live whatever its deadline");
    }

    #[test]
    fn the_janitor_never_claims_a_pending_entry() {
        let life = pending(10);
        assert_eq!(life.claim(50, || false), Claim::Refile(51), "looked at again next tick");
        assert_eq!(life.finish(10), None);
        assert_eq!(life.claim(50, || false), Claim::Expired);
    }

    /// The janitor's claim checks the mark, then CASes `life`: a remover whose mark lands
    /// between the two (here: inside the claim's `removed` check) must still end up the only
    /// owner. With a settling load instead of the RMW (`--cfg
    /// loom_broken="removal_settles_by_load"`) both own the entry.
    #[test]
    fn a_remover_marking_inside_the_claim_window_is_the_only_owner() {
        let life = Life::new(10, true);
        let looks = std::cell::Cell::new(0);
        let remover_owns = std::cell::Cell::new(None);
        let claim = life.claim(10, || {
            looks.set(looks.get() + 1);
            if looks.get() == 1 {
                // Not marked when the janitor looked; marked (and settled) right after.
                remover_owns.set(Some(!life.settle_removal()));
                false
            } else {
                true // marked on the janitor's second look
            }
        });
        let remover_owns = remover_owns.get();
        assert_eq!(remover_owns, Some(true), "the remover came first");
        assert_eq!(claim, Claim::Gone, "the janitor claimed an entry the remover owns");
        // The other order: the claim first, then the remover concedes.
        let life = Life::new(10, true);
        assert_eq!(life.claim(10, || false), Claim::Expired);
        assert!(life.settle_removal(), "the remover must see the claim");
    }

    #[test]
    fn removed_entries_are_left_to_their_unlinker() {
        let life = Life::new(10, false);
        assert_eq!(life.claim(10, || true), Claim::Gone, "marked by a remover");
        assert!(!life.unlink().is_unlinked());
        assert_eq!(life.claim(10, || false), Claim::Gone, "unlinked");
        assert!(life.take().is_unlinked(), "the janitor learns it was unlinked before it took it");
    }

    #[test]
    fn the_second_side_to_let_go_frees() {
        let life = Life::new(0, false);
        assert!(!life.release_value());
        assert!(life.release_janitor());
        let life = Life::new(0, false);
        assert!(!life.release_janitor());
        assert!(life.release_value());
    }

    #[test]
    fn never_expiring_entries_stay_live() {
        let scale = TimeScale::new(Duration::from_millis(80), Duration::MAX);
        let life = Life::new(scale.deadline_after_touch(0), false);
        assert_eq!(life.load().deadline(), NEVER);
        assert_eq!(life.touch(u64::MAX, &scale), Touch::Live);
        assert_eq!(life.load().deadline(), NEVER);
    }
}
