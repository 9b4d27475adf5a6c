//! The engine's table: the slot table (`crate::slots`) over [`Entry`]s, with what the
//! engine adds to it: the hasher, the hand-down of a replaced entry's deadline, and the
//! hand-off of unlinked entries: their values let go of at once if taken, else after the
//! epoch's grace period; the rest to the janitor (`crate::reclaim`).

use std::hash::{BuildHasher, Hash};

use crate::entry::Entry;
use crate::intake::Intake;
use crate::reclaim::{destroy_whole, release_janitor_hold, release_taken_value, release_value_later, JanitorReleases};
use crate::slots::{self, Release, Slots};
use crate::sync::epoch::Guard;
use crate::sync::{AtomicBool, Ordering};

/// What [`Table::insert`] did.
pub(crate) type Inserted<'g, K, V> = slots::Inserted<'g, Entry<K, V>>;
/// An entry a `set` replaced.
pub(crate) type Replaced<'g, K, V> = slots::Replaced<'g, Entry<K, V>>;

pub(crate) struct Table<K, V, S> {
    slots: Slots<Entry<K, V>, Handoff<K, V>, S>,
}

/// Where unlinked entries go: their values let go of (at once if taken, else through the
/// epoch), the rest to the janitor.
pub(crate) struct Handoff<K, V> {
    /// Entries unlinked after the janitor took them (see `crate::life`, "take").
    unlinked: Intake<K, V>,
    /// Set when the janitor has stopped for good: unlinkers then let go for it.
    janitor_gone: AtomicBool,
}

// SAFETY: the intake holds entries of `K, V: Send + Sync` (see `Table`'s bounds); the
// flag is atomic.
unsafe impl<K: Send + Sync, V: Send + Sync> Send for Handoff<K, V> {}
// SAFETY: as above.
unsafe impl<K: Send + Sync, V: Send + Sync> Sync for Handoff<K, V> {}

impl<K, V> Release<Entry<K, V>> for Handoff<K, V> {
    unsafe fn unlinked(&self, entry: *mut Entry<K, V>, guard: &Guard) {
        // SAFETY: the table hands off an entry once, while it is alive and `guard` pins us.
        let node = unsafe { &*entry };
        let value_taken = node.lease.is_taken();
        if value_taken {
            // Its remover took the value (before this unlink: `TAKEN` is set once, and seen
            // set it stays): nothing to defer.
            // SAFETY: just unlinked by this call, pinned, its value taken.
            unsafe { release_taken_value(entry) };
        } else {
            // A leased value not taken (yet) waits for the epoch: a reader was in at the
            // take, or the remover left it to the janitor's listener, or this unlink (a
            // helper's) came before the take. Flush, so that the payload goes within an
            // epoch advance, not 64 retirements later.
            let flush = node.lease.waits_for_epoch();
            // SAFETY: the entry just left the table, and we are pinned by `guard`.
            unsafe { release_value_later(entry, guard, flush) };
        }
        if !node.life.unlink().is_taken() {
            // The janitor has not taken it from its intake of new entries yet; it will see
            // UNLINKED when it does, and let go of it then.
            return;
        }
        if self.janitor_gone.load(Ordering::Acquire) {
            // No janitor will look at the wheel or the intakes again: let go for it.
            if value_taken && cfg!(loom_broken = "after_done_releases_taken_now") {
                // Broken on purpose: free the shell now, while a reader that found the entry
                // before the unlink may still be reading it.
                // SAFETY: none; this variant exists to show that the loom models catch it.
                unsafe { release_janitor_hold(entry) };
            } else if value_taken {
                // The value side let go already, so this side is second and frees the
                // shell: one grace period from now, as the janitor would.
                let mut releases = JanitorReleases::new();
                // SAFETY: unlinked, on no intake, on no wheel anyone will touch again.
                unsafe { releases.push(entry) };
                releases.release_later(guard);
            } else {
                // The value side's deferral (above, after the unlink) frees the shell after
                // a grace period: this side may let go now, it is first.
                // SAFETY: unlinked, on no intake, on no wheel anyone will touch again; the
                // value side is still pending, so this does not free the entry.
                unsafe { release_janitor_hold(entry) };
            }
        } else {
            // The janitor took it, so `intake_next` is free again: hand it over.
            // SAFETY: the entry is alive (the janitor side still holds it), on no intake,
            // and the unlinker is the only writer of `intake_next` now.
            unsafe { self.unlinked.push(entry) };
        }
    }

    unsafe fn destroy(&self, entry: *mut Entry<K, V>) {
        // SAFETY: the table is being dropped and nothing else reaches the entry.
        unsafe { destroy_whole(entry) }
    }
}

// SAFETY: the table owns its entries (keys and values) and shares them between threads:
// `K` and `V` must be `Send + Sync`; the rest is atomics and immutable fields.
unsafe impl<K: Send + Sync, V: Send + Sync, S: Send> Send for Table<K, V, S> {}
// SAFETY: as above; every shared mutation goes through atomics.
unsafe impl<K: Send + Sync, V: Send + Sync, S: Sync> Sync for Table<K, V, S> {}

impl<K, V, S> Table<K, V, S>
where
    K: Hash + Eq,
    S: BuildHasher,
{
    /// A table sized for about `capacity` entries. `bell` is rung when an unlinked entry
    /// lands on an empty stripe of the unlinked intake.
    pub(crate) fn new(
        capacity: usize,
        hasher: S,
        bell: Option<std::sync::Arc<crate::doorbell::Doorbell>>,
    ) -> Table<K, V, S> {
        let handoff = Handoff { unlinked: Intake::new(bell), janitor_gone: AtomicBool::new(false) };
        Table { slots: Slots::new(capacity, hasher, handoff) }
    }

    pub(crate) fn hash(&self, key: &K) -> u64 {
        self.slots.hash(key)
    }

    /// The entry holding `key`, if one is in the table and not removed. Never allocates
    /// and writes nothing.
    #[inline]
    pub(crate) fn find<'g>(&'g self, key: &K, hash: u64, guard: &'g Guard) -> Option<&'g Entry<K, V>> {
        self.slots.find(key, hash, guard)
    }

    /// Stores `entry` (made by the caller, not yet published) under its key, if `admit`
    /// agrees (see `Slots::insert`). A present key's entry is replaced, returned as
    /// removed by this call, and its deadline handed down to `entry`.
    ///
    /// # Safety
    /// `entry` came from `Box::into_raw`, is unpublished, and its hash was made by
    /// `self.hash(&entry.key)`: `hash`. On [`Inserted::Refused`] it is still the caller's.
    pub(crate) unsafe fn insert<'g>(
        &'g self,
        entry: *mut Entry<K, V>,
        hash: u64,
        guard: &'g Guard,
        admit: impl FnMut(Option<&'g Entry<K, V>>) -> bool,
    ) -> Inserted<'g, K, V> {
        // SAFETY: the caller hands us an unpublished, live entry.
        let new = unsafe { &*entry };
        let mut admit = admit;
        // SAFETY: forwarded from the caller.
        let inserted = unsafe {
            self.slots.insert(entry, hash, guard, |found| {
                // Pending while it replaces: it inherits the old entry's deadline.
                new.life.prepare(found.is_some());
                admit(found)
            })
        };
        if let Inserted::Replaced(replaced) = &inserted {
            // Nothing from here to the caller runs user code, so that no panic leaves the
            // new entry pending or unaccounted for.
            self.hand_down(replaced.old, new);
        }
        inserted
    }

    /// Calls `visit` on every entry in the table when the walk passes it (see
    /// `Slots::for_each`). `visit` may remove the entry it is shown.
    pub(crate) fn for_each<'g>(&'g self, guard: &'g Guard, visit: impl FnMut(&'g Entry<K, V>)) {
        self.slots.for_each(guard, visit);
    }

    /// Whether a migration may be under way (a hint read without pinning; see
    /// `Slots::may_be_migrating`).
    pub(crate) fn may_be_migrating(&self) -> bool {
        self.slots.may_be_migrating()
    }

    /// Moves up to `chunks` chunks of the migration under way; whether one is still under
    /// way after (see `Slots::help_migration`).
    pub(crate) fn help_migration(&self, chunks: usize, guard: &Guard) -> bool {
        self.slots.help_migration(chunks, guard)
    }

    /// After `new` replaced `old` (its marking CAS done): `old`'s deadline, with every touch
    /// that reached it, goes to `new`, which stops pending. If `old` is pending itself, its
    /// own finisher does this when it has its deadline; and if `new` was replaced while
    /// pending, the deadline goes on down the chain (each replaced entry's `next` points at
    /// its replacement). See `crate::life` and docs/design.md, "Replacing".
    fn hand_down(&self, old: &Entry<K, V>, new: &Entry<K, V>) {
        let Some(mut deadline) = old.life.replace() else { return };
        let mut entry = new;
        while let Some(inherited) = entry.life.finish(deadline) {
            // Replaced while pending: its successor waits for this deadline. `finish` saw the
            // successor's `replace`, which came after its marking CAS: the successor is set.
            let next = entry.links.successor().expect("replaced but not marked with its successor");
            // SAFETY: a replacement; the caller is pinned, and the successor was published
            // after the pin began or is still in the table, so it is not freed meanwhile.
            entry = unsafe { &*next };
            deadline = inherited;
        }
    }

    /// Moves the slot of the entry a `set` replaced past it (or finds that a helper has),
    /// after the set's accounting.
    pub(crate) fn unlink_replaced(&self, replaced: Replaced<'_, K, V>, guard: &Guard) {
        self.slots.unlink_replaced(replaced, guard);
    }

    /// Removes `entry`, whose key hashes to `hash` (`self.hash`), if no one else has:
    /// marks it (the linearization point), runs `settle` (the remover's accounting), and
    /// makes sure it leaves the table, running no user code for that. Returns what `settle`
    /// returned if this call removed it, `None` if someone else had. Without a hash (the
    /// key's `Hash` panicked), the entry is removed but stays in its slot until the next
    /// migration (see `Slots::remove`).
    pub(crate) fn remove<R>(
        &self,
        entry: &Entry<K, V>,
        hash: Option<u64>,
        guard: &Guard,
        settle: impl FnOnce() -> R,
    ) -> Option<R> {
        self.slots.remove(entry, hash, guard, settle)
    }

    /// Warms the cache for a later [`remove`](Self::remove) of an entry whose key hashes to
    /// `hash`: the line of its home slot. A hint only; nothing under loom.
    #[inline]
    pub(crate) fn prefetch_removal(&self, hash: u64, guard: &Guard) {
        self.slots.prefetch_home(hash, guard);
    }
}

impl<K, V, S> Table<K, V, S> {
    /// Entries in the table (live plus expired ones not yet removed).
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the janitor has stopped for good.
    pub(crate) fn janitor_gone(&self) -> bool {
        self.slots.release().janitor_gone.load(Ordering::Acquire)
    }

    /// Called by the janitor's last run: from now on unlinkers retire entries themselves.
    pub(crate) fn mark_janitor_gone(&self) {
        self.slots.release().janitor_gone.store(true, Ordering::Release);
    }

    /// The intake of entries unlinked after the janitor took them.
    pub(crate) fn unlinked(&self) -> &Intake<K, V> {
        &self.slots.release().unlinked
    }
}

impl<K, V> Drop for Handoff<K, V> {
    /// Lets go, for the janitor, of the entries on the unlinked intake (`&mut`: the table
    /// is being dropped, and the janitor will never take them now).
    fn drop(&mut self) {
        // SAFETY: entries on the unlinked intake are in no slot and on no other intake.
        self.unlinked.take_all(|entry| unsafe { release_janitor_hold(entry) });
    }
}

#[cfg(test)]
mod tests;
