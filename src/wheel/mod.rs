//! The hierarchical timing wheel that the janitor owns.
//!
//! ```text
//!  level 3  [ 0 | 1 | 2 | ... | 63 ]   one slot = 64^3 ticks
//!  level 2  [ 0 | 1 | 2 | ... | 63 ]   one slot = 64^2 ticks
//!  level 1  [ 0 | 1 | 2 | ... | 63 ]   one slot = 64 ticks
//!  level 0  [ 0 | 1 | 2 | ... | 63 ]   one slot = 1 tick
//!  overflow: deadlines beyond the top level's window, re-filed when the window turns
//!  never:    deadlines that never come (Duration::MAX), never looked at by time
//! ```
//!
//! A timer is filed at the lowest level where its deadline shares the wheel's current
//! window (tokio's rule: the level is the highest 6-bit group in which `elapsed` and the
//! deadline differ). When a slot comes due its timers are handed out one at a time; the
//! owner either fires a timer or files it again, which moves it down the levels
//! (*cascading*) or, if its deadline moved later meanwhile, to wherever it now belongs
//! (*lazy re-filing*). Each level keeps a 64-bit occupancy mask, so finding the next due
//! slot is a mask and a trailing-zeros count, never a scan. Handing out one timer at a
//! time lets the owner stop after a budget and resume at the next run.
//!
//! The wheel owns no timer: it links timers through their embedded [`TimerLinks`] and the
//! owner guarantees each stays alive while filed.

mod list;

use std::ptr::NonNull;

pub(crate) use list::{list_of, Timer, TimerLinks, NOT_FILED};
use list::{ListId, TimerList};

use crate::clock::NEVER;

/// log2 of the slots per level.
const SLOT_BITS: u32 = 6;
/// Slots per level.
const SLOTS: usize = 1 << SLOT_BITS;
/// Ten levels of 64 slots cover every deadline below [`NEVER`] (64^10 = 2^60).
pub(crate) const MAX_LEVELS: usize = 10;
/// List id of the overflow list.
const OVERFLOW: ListId = (MAX_LEVELS * SLOTS) as ListId;
/// List id of the list of timers that never fire.
const NEVER_LIST: ListId = OVERFLOW + 1;
/// List id of the overflow timers being handed out after the top window turned.
const TURNED: ListId = OVERFLOW + 2;

/// One level: 64 slots and a mask of the occupied ones.
struct Level<T> {
    occupied: u64,
    slots: [TimerList<T>; SLOTS],
}

/// The wheel. See the module documentation.
pub(crate) struct Wheel<T> {
    /// The wheel's time in ticks: every slot that starts at or before it has been handed out.
    elapsed: u64,
    levels: Box<[Level<T>]>,
    overflow: TimerList<T>,
    never: TimerList<T>,
    /// The overflow's timers when the top window turns: handed out from here so that a
    /// timer filed back into the overflow is not handed out again in the same turn.
    turned: TimerList<T>,
    /// The due list being handed out, when a run stopped before it was empty.
    in_progress: Option<ListId>,
    /// Timers filed anywhere.
    len: usize,
}

/// Number of levels needed so that a deadline up to `max_delta` ticks ahead fits in the
/// wheel without overflowing (at least 1, at most [`MAX_LEVELS`]).
pub(crate) fn levels_for(max_delta: u64) -> usize {
    let mut levels = 1;
    while levels < MAX_LEVELS && max_delta >= 1u64 << (SLOT_BITS as usize * levels) {
        levels += 1;
    }
    levels
}

/// The level a deadline belongs to, seen from `elapsed`: the highest 6-bit group in
/// which the two differ.
fn level_for(elapsed: u64, deadline: u64) -> usize {
    let masked = (elapsed ^ deadline) | (SLOTS as u64 - 1);
    let significant = 63 - masked.leading_zeros();
    (significant / SLOT_BITS) as usize
}

/// The slot of `deadline` within `level`.
fn slot_for(deadline: u64, level: usize) -> usize {
    ((deadline >> (SLOT_BITS as usize * level)) & (SLOTS as u64 - 1)) as usize
}

/// Ticks covered by one slot of `level`.
fn slot_range(level: usize) -> u64 {
    1 << (SLOT_BITS as usize * level)
}

impl<T: Timer> Wheel<T> {
    /// A wheel of `levels` levels (clamped to 1..=[`MAX_LEVELS`]) starting at tick `now`.
    pub(crate) fn new(levels: usize, now: u64) -> Wheel<T> {
        let levels = levels.clamp(1, MAX_LEVELS);
        Wheel {
            elapsed: now,
            levels: (0..levels)
                .map(|_| Level { occupied: 0, slots: std::array::from_fn(|_| TimerList::new()) })
                .collect(),
            overflow: TimerList::new(),
            never: TimerList::new(),
            turned: TimerList::new(),
            in_progress: None,
            len: 0,
        }
    }

    /// The wheel's time: every slot due at or before it has been handed out.
    pub(crate) fn elapsed(&self) -> u64 {
        self.elapsed
    }

    /// Timers filed.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Files `timer` at `deadline`, or at the next tick if that has been reached: for a
    /// timer that a later pass must hand out rather than its caller decide now.
    ///
    /// # Safety
    /// As for [`insert`](Wheel::insert).
    pub(crate) unsafe fn insert_later(&mut self, timer: NonNull<T>, deadline: u64) {
        // SAFETY: forwarded from the caller.
        let filed = unsafe { self.insert(timer, deadline.max(self.elapsed.saturating_add(1))) };
        debug_assert!(filed.is_ok(), "filed after elapsed {}", self.elapsed);
    }

    /// Files `timer` to come due at `deadline`. A deadline already reached is refused
    /// (`Err`): the caller handles such a timer at once.
    ///
    /// # Safety
    /// `timer` is alive, on no list, and stays alive until it is handed back by
    /// [`pop_due`](Wheel::pop_due) or [`remove`](Wheel::remove)d; only the wheel touches
    /// its links meanwhile.
    pub(crate) unsafe fn insert(&mut self, timer: NonNull<T>, deadline: u64) -> Result<(), NonNull<T>> {
        if deadline <= self.elapsed {
            return Err(timer);
        }
        let id = if deadline >= NEVER {
            NEVER_LIST
        } else {
            let level = level_for(self.elapsed, deadline);
            if level >= self.levels.len() {
                OVERFLOW
            } else {
                let slot = slot_for(deadline, level);
                self.levels[level].occupied |= 1 << slot;
                (level * SLOTS + slot) as ListId
            }
        };
        // SAFETY: forwarded from the caller.
        unsafe { self.list_mut(id).push_front(timer, id) };
        self.len += 1;
        Ok(())
    }

    /// Takes `timer` off the wheel if it is filed; O(1).
    ///
    /// # Safety
    /// `timer` is alive and only the wheel touches its links.
    pub(crate) unsafe fn remove(&mut self, timer: NonNull<T>) {
        // SAFETY: forwarded from the caller.
        let id = unsafe { list_of(timer) };
        if id == NOT_FILED {
            return;
        }
        // SAFETY: the timer's links say it is on list `id`.
        unsafe { self.list_mut(id).remove(timer) };
        self.len -= 1;
        self.clear_if_empty(id);
    }

    /// Hands out the next timer whose slot is due at or before `now`, unlinked from the
    /// wheel, or `None` when nothing is due. The caller fires it or files it again.
    pub(crate) fn pop_due(&mut self, now: u64) -> Option<NonNull<T>> {
        loop {
            if let Some(id) = self.in_progress {
                if let Some(timer) = self.list_mut(id).pop_front() {
                    self.len -= 1;
                    if self.list(id).is_empty() {
                        // Settle now, so that `has_due` does not report the drained slot.
                        self.in_progress = None;
                        self.clear_if_empty(id);
                    }
                    return Some(timer);
                }
                self.in_progress = None;
                self.clear_if_empty(id);
            }
            let (id, deadline) = self.next_expiration()?;
            if deadline > now {
                return None;
            }
            self.elapsed = self.elapsed.max(deadline);
            if id == OVERFLOW && self.levels.iter().all(|level| level.occupied == 0) {
                // Nothing is filed before `now`: jump there, so that a long catch-up turns
                // the overflow once rather than once per top-level window.
                self.elapsed = self.elapsed.max(now);
            }
            if id == OVERFLOW {
                while let Some(timer) = self.overflow.pop_front() {
                    // SAFETY: filed timers are alive; just unlinked, so on no list.
                    unsafe { self.turned.push_front(timer, TURNED) };
                }
                self.in_progress = Some(TURNED);
            } else {
                self.in_progress = Some(id);
            }
        }
    }

    /// Whether a timer is due at or before `now` (a run stopped by its budget left some).
    pub(crate) fn has_due(&self, now: u64) -> bool {
        self.in_progress.is_some_and(|id| !self.list(id).is_empty())
            || self.next_expiration().is_some_and(|(_, deadline)| deadline <= now)
    }

    /// The earliest tick at which a filed timer may be due (a lower bound: a slot of a
    /// higher level is cascaded down then); `None` when no timer is filed.
    pub(crate) fn next_due(&self) -> Option<u64> {
        if self.in_progress.is_some_and(|id| !self.list(id).is_empty()) {
            return Some(self.elapsed);
        }
        self.next_expiration().map(|(_, deadline)| deadline)
    }

    /// Moves the wheel's time to `now` once nothing is due before it; does nothing while
    /// due timers remain (a run stopped by its budget).
    pub(crate) fn advance_to(&mut self, now: u64) {
        if self.in_progress.is_none() && self.next_expiration().is_none_or(|(_, deadline)| deadline > now) {
            self.elapsed = self.elapsed.max(now);
        }
    }

    /// The earliest due list and the tick it comes due. The lowest occupied level always
    /// holds the earliest slot: its timers lie in the current window of that level, and
    /// every higher level's occupied slots start after that window.
    fn next_expiration(&self) -> Option<(ListId, u64)> {
        for (level, state) in self.levels.iter().enumerate() {
            if state.occupied == 0 {
                continue;
            }
            let range = slot_range(level);
            let now_slot = slot_for(self.elapsed, level);
            let ahead = state.occupied & (u64::MAX << now_slot);
            debug_assert!(
                ahead != 0,
                "level {level} has a slot behind the wheel: occupied {:#x}, elapsed {}",
                state.occupied,
                self.elapsed
            );
            let slot = if ahead != 0 { ahead } else { state.occupied }.trailing_zeros() as u64;
            let window_start = self.elapsed & !(range * SLOTS as u64 - 1);
            let deadline = (window_start + slot * range).max(self.elapsed);
            return Some(((level * SLOTS) as ListId + slot as ListId, deadline));
        }
        if !self.overflow.is_empty() {
            // The overflow is looked at again when the top level's window turns over.
            let top_range = slot_range(self.levels.len());
            let turn = (self.elapsed | (top_range - 1)).saturating_add(1);
            return Some((OVERFLOW, turn));
        }
        None
    }

    fn list(&self, id: ListId) -> &TimerList<T> {
        match id {
            OVERFLOW => &self.overflow,
            NEVER_LIST => &self.never,
            TURNED => &self.turned,
            slot => {
                let slot = slot as usize;
                &self.levels[slot / SLOTS].slots[slot % SLOTS]
            }
        }
    }

    fn list_mut(&mut self, id: ListId) -> &mut TimerList<T> {
        match id {
            OVERFLOW => &mut self.overflow,
            NEVER_LIST => &mut self.never,
            TURNED => &mut self.turned,
            slot => {
                let slot = slot as usize;
                &mut self.levels[slot / SLOTS].slots[slot % SLOTS]
            }
        }
    }

    /// Clears the occupancy bit of a slot that became empty (unless it is being handed out).
    fn clear_if_empty(&mut self, id: ListId) {
        if id >= OVERFLOW || self.in_progress == Some(id) {
            return;
        }
        let (level, slot) = (id as usize / SLOTS, id as usize % SLOTS);
        if self.levels[level].slots[slot].is_empty() {
            self.levels[level].occupied &= !(1 << slot);
        }
    }
}

#[cfg(test)]
mod tests;
