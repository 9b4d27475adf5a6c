//! Unit tests of the wheel on its own, with a plain test timer and time given by hand.

use std::ptr::NonNull;

use super::*;
use crate::sync::UnsafeCell;

struct TestTimer {
    links: UnsafeCell<TimerLinks<TestTimer>>,
    deadline: u64,
    fired_at: Option<u64>,
    seen: u32,
}

// SAFETY: `links` is a field of the timer, so it is the same cell for the timer's life.
unsafe impl Timer for TestTimer {
    fn timer_links(&self) -> &UnsafeCell<TimerLinks<TestTimer>> {
        &self.links
    }
}

// Boxed so that each timer keeps its address while the wheel links to it.
#[allow(clippy::vec_box)]
fn timers(deadlines: &[u64]) -> Vec<Box<TestTimer>> {
    deadlines
        .iter()
        .map(|&deadline| {
            Box::new(TestTimer { links: UnsafeCell::new(TimerLinks::new()), deadline, fired_at: None, seen: 0 })
        })
        .collect()
}

fn ptr(timer: &mut TestTimer) -> NonNull<TestTimer> {
    NonNull::from(timer)
}

/// What the janitor does: fire timers that are due, file the others again. Returns how
/// many timers were handed out; stops after `budget`.
fn run(wheel: &mut Wheel<TestTimer>, now: u64, budget: usize) -> usize {
    let mut handed = 0;
    while handed < budget {
        let Some(mut timer) = wheel.pop_due(now) else { break };
        handed += 1;
        // SAFETY: test timers outlive the wheel's use of them.
        let t = unsafe { timer.as_mut() };
        t.seen += 1;
        if t.deadline <= now {
            t.fired_at = Some(now);
        } else {
            // SAFETY: as above; `timer` was just handed out, so it is on no list.
            if let Err(mut due) = unsafe { wheel.insert(timer, t.deadline) } {
                // SAFETY: as above.
                unsafe { due.as_mut() }.fired_at = Some(now);
            }
        }
    }
    wheel.advance_to(now);
    handed
}

fn file_all(wheel: &mut Wheel<TestTimer>, all: &mut [Box<TestTimer>]) {
    for timer in all.iter_mut() {
        let deadline = timer.deadline;
        // SAFETY: the boxes outlive the wheel's use of them and are on no list.
        unsafe { wheel.insert(ptr(timer), deadline) }.expect("deadline in the future");
    }
}

#[test]
fn slot_arithmetic() {
    assert_eq!(level_for(0, 1), 0);
    assert_eq!(level_for(0, 63), 0);
    assert_eq!(level_for(0, 64), 1);
    assert_eq!(level_for(60, 70), 1, "crossing a 64-tick boundary needs level 1");
    assert_eq!(level_for(0, 64 * 64), 2);
    assert_eq!(level_for(0, NEVER - 1), 9);
    assert_eq!(slot_for(64 * 3 + 5, 0), 5);
    assert_eq!(slot_for(64 * 3 + 5, 1), 3);
    assert_eq!(levels_for(63), 1);
    assert_eq!(levels_for(64), 2);
    assert_eq!(levels_for(24_000), 3);
    assert_eq!(levels_for(u64::MAX), MAX_LEVELS);
}

#[test]
fn every_timer_fires_at_its_deadline_never_before() {
    let deadlines: Vec<u64> = (1..3000).map(|i| (i * 7919) % 5000 + 1).collect();
    let mut all = timers(&deadlines);
    let mut wheel = Wheel::new(levels_for(5000), 0);
    file_all(&mut wheel, &mut all);
    for now in 1..=5001 {
        run(&mut wheel, now, usize::MAX);
    }
    for t in &all {
        assert_eq!(t.fired_at, Some(t.deadline), "deadline {}", t.deadline);
    }
    assert_eq!(wheel.len(), 0);
}

#[test]
fn cascading_moves_timers_down_one_level_at_a_time() {
    // 64*64 + 64 + 1 sits on level 2; it cascades through levels 1 and 0.
    let mut all = timers(&[64 * 64 + 64 + 1]);
    let mut wheel = Wheel::new(3, 0);
    file_all(&mut wheel, &mut all);
    // SAFETY: the timer lives in `all`, and only this wheel touches its links.
    assert_eq!(unsafe { list_of(ptr(&mut all[0])) } as usize / SLOTS, 2);
    let mut handouts = 0;
    for now in 1..=64 * 64 + 64 + 1 {
        handouts += run(&mut wheel, now, usize::MAX);
    }
    assert_eq!(all[0].fired_at, Some(64 * 64 + 64 + 1));
    assert_eq!(handouts, 3, "one hand-out per level");
}

#[test]
fn a_jump_far_ahead_fires_everything_due_in_one_run() {
    let mut all = timers(&[5, 70, 4100, 300_000]);
    let mut wheel = Wheel::new(levels_for(300_000), 0);
    file_all(&mut wheel, &mut all);
    run(&mut wheel, 1_000_000, usize::MAX);
    assert!(all.iter().all(|t| t.fired_at == Some(1_000_000)));
    assert_eq!(wheel.elapsed(), 1_000_000);
}

#[test]
fn re_filing_follows_a_moved_deadline() {
    let mut all = timers(&[10]);
    let mut wheel = Wheel::new(2, 0);
    file_all(&mut wheel, &mut all);
    all[0].deadline = 500; // a touch moved it; the wheel still has it at 10
    for now in 1..=499 {
        run(&mut wheel, now, usize::MAX);
    }
    assert_eq!(all[0].fired_at, None);
    run(&mut wheel, 500, usize::MAX);
    assert_eq!(all[0].fired_at, Some(500));
}

#[test]
fn overflow_holds_deadlines_beyond_the_top_level_until_the_window_turns() {
    // One level covers 64 ticks; from elapsed 60, deadline 130 lies beyond its window.
    let mut all = timers(&[130]);
    let mut wheel = Wheel::new(1, 60);
    file_all(&mut wheel, &mut all);
    // SAFETY: the timer lives in `all`, and only this wheel touches its links.
    assert_eq!(unsafe { list_of(ptr(&mut all[0])) }, OVERFLOW);
    for now in 61..=129 {
        run(&mut wheel, now, usize::MAX);
        assert_eq!(all[0].fired_at, None, "fired early at {now}");
    }
    run(&mut wheel, 130, usize::MAX);
    assert_eq!(all[0].fired_at, Some(130));
}

#[test]
fn never_deadlines_are_not_handed_out() {
    let mut all = timers(&[NEVER]);
    let mut wheel = Wheel::new(1, 0);
    file_all(&mut wheel, &mut all);
    assert_eq!(run(&mut wheel, NEVER - 1, usize::MAX), 0);
    assert_eq!(wheel.len(), 1);
    // SAFETY: the timer lives in `all`, is filed on this wheel, and only it touches its links.
    unsafe { wheel.remove(ptr(&mut all[0])) };
    assert_eq!(wheel.len(), 0);
}

#[test]
fn remove_unlinks_in_constant_time_and_clears_occupancy() {
    let mut all = timers(&[5, 5, 5]);
    let mut wheel = Wheel::new(1, 0);
    file_all(&mut wheel, &mut all);
    for timer in all.iter_mut() {
        // SAFETY: the timer lives in `all`, is filed on this wheel, and only it touches its links.
        unsafe { wheel.remove(ptr(timer)) };
    }
    assert_eq!(wheel.levels[0].occupied, 0);
    assert_eq!(run(&mut wheel, 10, usize::MAX), 0);
    assert!(all.iter().all(|t| t.fired_at.is_none()));
}

#[test]
fn a_budget_bounds_each_run_and_the_rest_carries_over() {
    let mut all = timers(&vec![3; 1000]);
    let mut wheel = Wheel::new(1, 0);
    file_all(&mut wheel, &mut all);
    let mut runs = 0;
    let mut now = 3;
    loop {
        let handed = run(&mut wheel, now, 300);
        assert!(handed <= 300);
        runs += 1;
        if handed == 0 {
            break;
        }
        now += 1;
    }
    assert_eq!(runs, 5, "1000 timers at 300 a run: 4 runs of work and one empty");
    assert!(all.iter().all(|t| t.fired_at.is_some_and(|at| at >= 3)));
    assert!(all.iter().all(|t| t.seen == 1));
}

#[test]
fn removing_a_timer_of_the_slot_in_progress_is_safe() {
    let mut all = timers(&[2, 2, 2, 2]);
    let mut wheel = Wheel::new(1, 0);
    file_all(&mut wheel, &mut all);
    assert_eq!(run(&mut wheel, 2, 1), 1);
    // The slot is half handed out; remove one of the rest.
    let victim = all.iter_mut().find(|t| t.fired_at.is_none()).unwrap();
    // SAFETY: the timer lives in `all`, is filed on this wheel, and only it touches its links.
    unsafe { wheel.remove(ptr(victim)) };
    assert_eq!(run(&mut wheel, 2, usize::MAX), 2);
    assert_eq!(all.iter().filter(|t| t.fired_at.is_some()).count(), 3);
    assert_eq!(wheel.len(), 0);
}
