//! Intrusive doubly linked lists of timers: the contents of one wheel slot.
//!
//! A timer carries its own links, so filing, moving and removing never allocate, and a
//! timer removed from the table can be unlinked from its slot in O(1) as soon as the
//! janitor hears of it (rather than lingering until its slot comes due).

use std::ptr::NonNull;

use crate::sync::UnsafeCell;

/// Which list a timer is on: a slot (`level * 64 + slot`) or one of the special lists.
pub(crate) type ListId = u32;

/// The timer is on no list.
pub(crate) const NOT_FILED: ListId = u32::MAX;

/// The wheel's links inside a timer. Only the wheel's owner (the janitor) touches them.
///
/// Packed to 4-byte alignment (20 bytes, not 24): the timer can put a 4-byte field right
/// after them instead of padding. Only ever copied whole, never borrowed field by field.
#[repr(C, packed(4))]
pub(crate) struct TimerLinks<T> {
    prev: Option<NonNull<T>>,
    next: Option<NonNull<T>>,
    list: ListId,
}

// Manual impls: derives would demand `T: Copy`, but only pointers to `T` are copied.
impl<T> Clone for TimerLinks<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for TimerLinks<T> {}

impl<T> std::fmt::Debug for TimerLinks<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let TimerLinks { prev, next, list } = *self;
        f.debug_struct("TimerLinks").field("prev", &prev).field("next", &next).field("list", &list).finish()
    }
}

impl<T> TimerLinks<T> {
    pub(crate) const fn new() -> TimerLinks<T> {
        TimerLinks { prev: None, next: None, list: NOT_FILED }
    }
}

/// Something the wheel can file: it embeds a [`TimerLinks`].
///
/// # Safety
/// `timer_links` must return the same cell for the timer's whole life, and nothing but the
/// wheel may read or write that cell while the timer is filed.
pub(crate) unsafe trait Timer: Sized {
    fn timer_links(&self) -> &UnsafeCell<TimerLinks<Self>>;
}

/// Reads a timer's links.
///
/// # Safety
/// `timer` is alive and only the wheel's owner accesses its links.
pub(crate) unsafe fn links<T: Timer>(timer: NonNull<T>) -> TimerLinks<T> {
    // SAFETY: the caller guarantees `timer` is alive and the access exclusive.
    unsafe { timer.as_ref().timer_links().with(|links| *links) }
}

/// Overwrites a timer's links.
///
/// # Safety
/// As for [`links`].
unsafe fn set_links<T: Timer>(timer: NonNull<T>, value: TimerLinks<T>) {
    // SAFETY: the caller guarantees `timer` is alive and the access exclusive.
    unsafe { timer.as_ref().timer_links().with_mut(|links| *links = value) }
}

/// The list a timer is filed on, or [`NOT_FILED`].
///
/// # Safety
/// As for [`links`].
pub(crate) unsafe fn list_of<T: Timer>(timer: NonNull<T>) -> ListId {
    // SAFETY: forwarded from the caller.
    unsafe { links(timer).list }
}

/// One list of timers: a head pointer; each timer links to its neighbours.
#[derive(Debug)]
pub(crate) struct TimerList<T> {
    head: Option<NonNull<T>>,
}

impl<T: Timer> TimerList<T> {
    pub(crate) const fn new() -> TimerList<T> {
        TimerList { head: None }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.head.is_none()
    }

    /// Files `timer` at the front of this list, recording `id` as where it is.
    ///
    /// # Safety
    /// `timer` is alive, on no list, and stays alive until removed; only the wheel's
    /// owner touches its links.
    pub(crate) unsafe fn push_front(&mut self, timer: NonNull<T>, id: ListId) {
        // SAFETY: the caller's contract covers `timer` and, through the list invariant,
        // the old head (alive while filed).
        unsafe {
            debug_assert_eq!(list_of(timer), NOT_FILED, "timer filed twice");
            if let Some(head) = self.head {
                let mut head_links = links(head);
                head_links.prev = Some(timer);
                set_links(head, head_links);
            }
            set_links(timer, TimerLinks { prev: None, next: self.head, list: id });
        }
        self.head = Some(timer);
    }

    /// Takes the first timer off the list.
    pub(crate) fn pop_front(&mut self) -> Option<NonNull<T>> {
        let timer = self.head?;
        // SAFETY: a filed timer is alive (the owner frees it only after removing it).
        unsafe { self.remove(timer) };
        Some(timer)
    }

    /// Unlinks `timer`, which must be on this list.
    ///
    /// # Safety
    /// `timer` is on this list (hence alive), and only the wheel's owner touches links.
    pub(crate) unsafe fn remove(&mut self, timer: NonNull<T>) {
        // SAFETY: `timer` and its neighbours are on this list, so alive.
        unsafe {
            let own = links(timer);
            match own.prev {
                Some(prev) => {
                    let mut prev_links = links(prev);
                    prev_links.next = own.next;
                    set_links(prev, prev_links);
                }
                None => self.head = own.next,
            }
            if let Some(next) = own.next {
                let mut next_links = links(next);
                next_links.prev = own.prev;
                set_links(next, next_links);
            }
            set_links(timer, TimerLinks::new());
        }
    }
}
