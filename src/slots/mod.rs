//! The concurrent hash table: open addressing over pointer-sized slots, each holding a
//! pointer to a caller-owned item tagged with 16 bits of its hash, grown and cleaned by
//! lock-free, incremental migrations that every writer helps.
//!
//! A hit costs the slot's cache line and the item's: the tag rejects other keys without
//! touching their items. The table knows nothing of what an item holds beyond its key and
//! its [`SlotLinks`]; what happens to an item it lets go of is its [`Release`]'s business.
//!
//! **Marks, not slots, are the linearization points** (docs/design.md, "The table"). An
//! item is removed when its `next` is marked (one CAS), and replaced when its `next` is
//! marked pointing at its successor: a reader that reaches the old item follows the chain
//! to the new one. Slots are cleaned afterwards: the slot's word moves past the marked
//! items (to their live successor, or to a tombstone), and whoever does that move hands
//! the items it passed to [`Release::unlinked`], exactly once.
//!
//! **Migration.** When a generation fills (live items, tombstones and reservations over
//! 3/4), a new one is allocated and every slot of the old one is *frozen* (nobody but the
//! migration writes it again) and *finalized*: its item copied into the new generation, or
//! dropped if its chain ended removed. A writer first finalizes its own key's probe chain
//! in the old generation and helps with one chunk, then works in the new one. Any thread
//! may copy any frozen slot, and a stalled copier must never copy an item a second time
//! (it would resurrect it after a removal), so each copy is decided once, on the item:
//! a copier reserves an empty slot in the new generation, then CASes the item's *ticket*
//! from undecided to "copied to that slot" (or "not copied"); losers give their
//! reservation up, and everyone fills the decided slot from `RESERVED` only.

mod generation;
mod word;

use std::hash::{BuildHasher, Hash};
use std::ptr;

use generation::Generation;
use word::{decode, frozen, frozen_empty, item_word, moved, reserved, tag_of, tomb, Word, LOAD};

use crate::counter::Counter;
use crate::sync::epoch::Guard;
use crate::sync::{prefetch, AtomicPtr, AtomicU64, AtomicUsize, Ordering};

/// The ordering that publishes an item, in a slot or as a successor (AcqRel: Release for
/// the readers, Acquire for what it replaces). Broken on purpose only under
/// `--cfg loom_broken="relaxed_publish"`.
const PUBLISH: Ordering = if cfg!(loom_broken = "relaxed_publish") { Ordering::Relaxed } else { Ordering::AcqRel };

/// The low bit of an item's `next`: set once the item is removed or replaced.
const MARK: usize = 1;

/// The smallest generation.
const MIN_CAPACITY: usize = if cfg!(crossbeam_loom) { 4 } else { 64 };
/// Slots a new generation keeps beyond its share, for writers storing while they help.
const SLACK: usize = if cfg!(crossbeam_loom) { 2 } else { 64 };
/// The size a churning table grows to even when little is live (32 KiB of slots).
const PURGE_ROOM: usize = if cfg!(crossbeam_loom) { 8 } else { 1 << 12 };
/// The most slots a capacity hint allocates up front.
const MAX_INITIAL_CAPACITY: usize = 1 << 26;

/// An item the table holds by pointer.
///
/// # Safety
/// `slot_links` returns the same links for the item's whole life, and items are at least
/// 8-byte aligned (the slot word keeps flags in the low bits).
pub(crate) unsafe trait Slotted: Sized {
    type Key;
    fn key(&self) -> &Self::Key;
    fn slot_links(&self) -> &SlotLinks<Self>;
}

/// What the table keeps in each item.
pub(crate) struct SlotLinks<T> {
    /// Null while the item is in the table; [`MARK`] once removed; `MARK | successor`
    /// once replaced. Frozen once marked.
    next: AtomicPtr<T>,
    /// The copy decision of the last migration that looked at the item:
    /// `generation id << 48 | (index + 1)`, or `| 0` for "not copied".
    ticket: AtomicU64,
}

impl<T> SlotLinks<T> {
    pub(crate) fn new() -> SlotLinks<T> {
        SlotLinks { next: AtomicPtr::new(ptr::null_mut()), ticket: AtomicU64::new(0) }
    }

    /// Whether the item has been removed or replaced.
    pub(crate) fn is_marked(&self) -> bool {
        self.next.load(Ordering::Acquire).addr() & MARK != 0
    }

    /// The item that replaced this one, if one did.
    pub(crate) fn successor(&self) -> Option<*mut T> {
        let next = self.next.load(Ordering::Acquire);
        let successor = next.map_addr(|address| address & !MARK);
        (next.addr() & MARK != 0 && !successor.is_null()).then_some(successor)
    }
}

/// What becomes of the items the table lets go of.
pub(crate) trait Release<T> {
    /// `item` was removed or replaced, and has left the table: no slot holds it and no
    /// chain from a slot leads to it. Called once per item, by a thread pinned by `guard`
    /// (readers that reached it before may still be reading it).
    ///
    /// # Safety
    /// As above.
    unsafe fn unlinked(&self, item: *mut T, guard: &Guard);

    /// `item` is still in the table, which is being dropped: nothing can reach it.
    ///
    /// # Safety
    /// As above; called once per item.
    unsafe fn destroy(&self, item: *mut T);
}

/// What [`Slots::insert`] did.
pub(crate) enum Inserted<'g, T> {
    /// Stored under a key that had no item.
    New,
    /// Replaced an item, which this call marked; the caller cleans its slot
    /// ([`Slots::unlink_replaced`]) once it has done its accounting.
    Replaced(Replaced<'g, T>),
    /// Not stored: the caller's `admit` said no. The item is still the caller's.
    Refused,
}

/// An item a `set` replaced (marked, so removed, but maybe still in a slot's chain), the
/// slot word that led to it, and its key's hash (for the cleanup, which then hashes nothing).
pub(crate) struct Replaced<'g, T> {
    pub(crate) old: &'g T,
    generation: &'g Generation<T>,
    index: usize,
    word: *mut T,
    hash: u64,
}

pub(crate) struct Slots<T: Slotted, R: Release<T>, S> {
    /// The oldest generation: the only one, or the one being migrated.
    root: AtomicPtr<Generation<T>>,
    /// Successors published less generations promoted: non-zero while a migration may be
    /// under way. A hint read without pinning ([`Slots::may_be_migrating`]); it may lag a
    /// publication or a promotion for a moment (and wraps below zero while a promotion
    /// overtakes its publisher's count).
    migrations: AtomicUsize,
    len: Counter,
    release: R,
    /// Items do not store their hash (8 bytes an entry): removals and migrations hash the
    /// key again.
    hasher: S,
}

// SAFETY: the table shares its items between threads (they must be `Send + Sync`); the
// rest is atomics.
unsafe impl<T: Slotted + Send + Sync, R: Release<T> + Send, S: Send> Send for Slots<T, R, S> {}
// SAFETY: as above.
unsafe impl<T: Slotted + Send + Sync, R: Release<T> + Sync, S: Sync> Sync for Slots<T, R, S> {}

/// The item at the end of `item`'s chain if it is in the table; `None` if the chain ends
/// removed.
fn current<T: Slotted>(mut item: &T) -> Option<&T> {
    loop {
        let next = item.slot_links().next.load(LOAD);
        if next.addr() & MARK == 0 {
            return Some(item);
        }
        let successor = next.map_addr(|address| address & !MARK);
        if successor.is_null() {
            return None;
        }
        // SAFETY: a successor is alive while its predecessor is reachable (it leaves the
        // table only with or after it), and the caller is pinned.
        item = unsafe { &*successor };
    }
}

fn marked<T>(successor: *mut T) -> *mut T {
    successor.map_addr(|address| address | MARK)
}

/// The id of the generation before `generation` (ids wrap, skipping 0).
fn generation_before(generation: u16) -> u16 {
    if generation == 1 {
        u16::MAX
    } else {
        generation - 1
    }
}

fn ticket(generation: u16, copied_to: Option<usize>) -> u64 {
    (generation as u64) << 48 | copied_to.map_or(0, |index| index as u64 + 1)
}

/// The decision `ticket` records for the migration into `generation`, if it records one.
fn decided(ticket: u64, generation: u16) -> Option<Option<usize>> {
    ((ticket >> 48) as u16 == generation).then(|| (ticket & ((1 << 48) - 1)).checked_sub(1).map(|index| index as usize))
}

/// The slots of a table sized for about `capacity` items: twice as many, a power of two,
/// within `MIN_CAPACITY..=MAX_INITIAL_CAPACITY` (a larger table grows into its size).
fn initial_slots(capacity: usize) -> usize {
    capacity.min(MAX_INITIAL_CAPACITY).saturating_mul(2).next_power_of_two().clamp(MIN_CAPACITY, MAX_INITIAL_CAPACITY)
}

impl<T: Slotted, R: Release<T>, S> Slots<T, R, S> {
    /// A table sized for about `capacity` items.
    pub(crate) fn new(capacity: usize, hasher: S, release: R) -> Slots<T, R, S> {
        let root = Box::into_raw(Box::new(Generation::new(1, initial_slots(capacity))));
        Slots { root: AtomicPtr::new(root), migrations: AtomicUsize::new(0), len: Counter::new(), release, hasher }
    }

    /// Items in the table (counted in after they are stored, out before their removal).
    pub(crate) fn len(&self) -> usize {
        self.len.sum()
    }

    pub(crate) fn release(&self) -> &R {
        &self.release
    }
}

impl<T: Slotted, R: Release<T>, S: BuildHasher> Slots<T, R, S>
where
    T::Key: Hash + Eq,
{
    pub(crate) fn hash(&self, key: &T::Key) -> u64 {
        self.hasher.hash_one(key)
    }

    fn root<'g>(&self, _guard: &'g Guard) -> &'g Generation<T> {
        // SAFETY: a generation is freed only through the epoch after it stopped being the
        // root, so one read while pinned lives until the guard drops.
        unsafe { &*self.root.load(Ordering::Acquire) }
    }

    fn next<'g>(generation: &'g Generation<T>, _guard: &'g Guard) -> Option<&'g Generation<T>> {
        // SAFETY: the next generation outlives its predecessor (it becomes the root before
        // the predecessor is retired).
        unsafe { generation.next.load(Ordering::Acquire).as_ref() }
    }

    /// The item holding `key`, if there is one.
    pub(crate) fn find<'g>(&'g self, key: &T::Key, hash: u64, guard: &'g Guard) -> Option<&'g T> {
        let tag = tag_of(hash);
        let mut generation = self.root(guard);
        loop {
            let mut index = hash as usize & generation.mask;
            for _ in 0..=generation.mask {
                match decode(generation.slots[index].load(LOAD)) {
                    // The chain's end. Without a successor, the key is absent; with one, a
                    // slot passed may have been moved there.
                    Word::Empty => {
                        Self::next(generation, guard)?;
                        break;
                    }
                    Word::FrozenEmpty => break,
                    Word::Item { item, tag: found, .. } if found == tag => {
                        // SAFETY: read from a slot while pinned: not freed before the guard.
                        let item = unsafe { &*item };
                        if item.key() == key {
                            // A key has one slot per generation; until a migration
                            // finalizes it, nothing about the key is written elsewhere.
                            return current(item);
                        }
                    }
                    _ => {}
                }
                index = (index + 1) & generation.mask;
            }
            generation = Self::next(generation, guard)?;
        }
    }

    /// Stores `item` under its key, if `admit` agrees. Right before each attempt's
    /// publishing CAS, `admit` is shown the item the key holds then (`None` if none); if
    /// that CAS fails, it is asked again about what the next attempt finds. A present
    /// key's item is replaced (and returned as marked by this call).
    ///
    /// # Safety
    /// `item` came from `Box::into_raw` (or is otherwise the caller's to hand over), is
    /// unpublished, its links are fresh and `hash` is the table's hash of its key. On
    /// [`Inserted::Refused`] it is still the caller's.
    pub(crate) unsafe fn insert<'g>(
        &'g self,
        item: *mut T,
        hash: u64,
        guard: &'g Guard,
        mut admit: impl FnMut(Option<&'g T>) -> bool,
    ) -> Inserted<'g, T> {
        // SAFETY: the caller hands over a live, unpublished item.
        let new = unsafe { &*item };
        let tag = tag_of(hash);
        let new_word = item_word(item, tag);
        'generations: loop {
            let generation = self.newest_for(new.key(), hash, guard);
            let mut index = hash as usize & generation.mask;
            let mut probes = 0;
            loop {
                if probes > generation.mask {
                    // Full of tombstones and reservations: migrate, whatever the sample said.
                    self.start_migration(generation, true, guard);
                    continue 'generations;
                }
                let slot = &generation.slots[index];
                let word = slot.load(LOAD);
                match decode(word) {
                    Word::Empty => {
                        if !admit(None) {
                            return Inserted::Refused;
                        }
                        // The linearization point of an inserting set.
                        if slot.compare_exchange(word, new_word, PUBLISH, Ordering::Acquire).is_ok() {
                            self.stored(generation, guard);
                            return Inserted::New;
                        }
                        continue; // look at the same slot again
                    }
                    // A migration froze it: finalize the key's chain and go on in the next.
                    Word::FrozenEmpty | Word::Moved(_) | Word::Item { frozen: true, .. } => continue 'generations,
                    Word::Item { item: found, tag: found_tag, frozen: false } if found_tag == tag => {
                        // SAFETY: read from a slot while pinned.
                        let found_item = unsafe { &*found };
                        if found_item.key() == new.key() {
                            match current(found_item) {
                                // The key's last item was removed: reuse its slot, moving
                                // past the removed chain (whose items this call hands off).
                                None => {
                                    if !admit(None) {
                                        return Inserted::Refused;
                                    }
                                    if slot.compare_exchange(word, new_word, PUBLISH, Ordering::Acquire).is_ok() {
                                        // SAFETY: this CAS took the chain out of the slot.
                                        unsafe { self.hand_off(found, ptr::null_mut(), guard) };
                                        self.len.count_in();
                                        return Inserted::New;
                                    }
                                    continue;
                                }
                                Some(live) => {
                                    if !admit(Some(live)) {
                                        return Inserted::Refused;
                                    }
                                    // The linearization point of a replacing set: the old
                                    // item is marked, and leads to the new one, in one step.
                                    let links = &live.slot_links().next;
                                    if links
                                        .compare_exchange(ptr::null_mut(), marked(item), PUBLISH, Ordering::Acquire)
                                        .is_ok()
                                    {
                                        return Inserted::Replaced(Replaced {
                                            old: live,
                                            generation,
                                            index,
                                            word,
                                            hash,
                                        });
                                    }
                                    continue; // marked meanwhile: look again
                                }
                            }
                        }
                    }
                    _ => {}
                }
                index = (index + 1) & generation.mask;
                probes += 1;
            }
        }
    }

    /// After a fresh item landed in an empty slot of `generation`: counts it, and starts a
    /// migration if the sampled load says the generation is full.
    fn stored(&self, generation: &Generation<T>, guard: &Guard) {
        self.len.count_in();
        let sample = generation.used.count_in();
        if cfg!(crossbeam_loom) || sample % 64 == 0 {
            self.maybe_migrate(generation, guard);
        }
    }

    fn maybe_migrate(&self, generation: &Generation<T>, guard: &Guard) {
        if generation.used.sum() > generation.capacity() / 4 * 3 {
            self.start_migration(generation, false, guard);
        }
    }

    /// Makes sure `generation` has a successor, if it is the root (a generation migrates
    /// only once its predecessor is gone). One thread allocates it; the others go on
    /// storing, unless `forced` (the generation is full): then they allocate too, and the
    /// first to publish wins, so a preempted allocator holds nobody up.
    fn start_migration(&self, generation: &Generation<T>, forced: bool, guard: &Guard) {
        if !ptr::eq(self.root(guard), generation) || Self::next(generation, guard).is_some() {
            return;
        }
        if generation.allocating.swap(true, Ordering::AcqRel) && !forced {
            return;
        }
        // Room for what is live now twice over, plus what writers may store while they
        // help (one chunk each).
        // `used` first: a store counts itself live before used (`stored`), so each store is
        // in `live` or still in `empty` below, never in neither.
        let used = generation.used.sum();
        let live = self.len.sum();
        let room = live.saturating_add(generation.chunks()).saturating_add(SLACK);
        let mut capacity = room.saturating_mul(2).next_power_of_two().max(MIN_CAPACITY);
        // And never less than what the migration may have to copy, plus a seventh: this
        // thread may be preempted before it publishes, and meanwhile writers go on storing
        // here, each store filling one of the slots still empty now. So at most `live`
        // items plus one per empty slot get copied (plus what the counts lag by, stores and
        // removals in flight, and stores reusing their key's removed but not yet cleaned
        // slot: SLACK), beside the stores made in the successor during the migration (one
        // chunk helped each). The spare (and the rounding up) is for reservations copiers
        // lose to each other (each leaves a tombstone): at most one per racing copier of
        // an item, so a heuristic, not a bound. Sized from `live` alone, a preempted
        // allocator of a churning table published 4096 slots for 6000 copies, and the
        // copies' `reserve` never found an empty slot.
        let empty = generation.capacity().saturating_sub(used);
        let copies = room.saturating_add(empty);
        capacity = capacity.max(copies.saturating_add(copies / 7).next_power_of_two());
        if live.saturating_mul(4) < used {
            // Mostly tombstones: a churning table (stores and removals of fresh keys). Grow
            // it up to PURGE_ROOM slots anyway, so that purges come rarely: at the smallest
            // size one came every 48 stores, and cost the 1-thread pipeline 45% of its speed.
            capacity = capacity.max(generation.capacity().saturating_mul(2).min(PURGE_ROOM));
        }
        #[cfg(all(test, not(crossbeam_loom)))]
        if let Some(mut hook) = tests::BEFORE_PUBLISH.with(|hook| hook.borrow_mut().take()) {
            hook(); // this thread preempted between its counts and its publication
        }
        let next = Box::into_raw(Box::new(Generation::new(generation.next_id(), capacity)));
        if generation.next.compare_exchange(ptr::null_mut(), next, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            self.migrations.fetch_add(1, Ordering::Release);
        } else {
            // SAFETY: never published.
            drop(unsafe { Box::from_raw(next) });
        }
    }

    /// The newest generation, after finalizing the chain of `key` in every older one (so
    /// that nothing about the key is read from them any more) and helping their migration.
    fn newest_for<'g>(&'g self, key: &T::Key, hash: u64, guard: &'g Guard) -> &'g Generation<T> {
        let mut generation = self.root(guard);
        while let Some(next) = Self::next(generation, guard) {
            self.finalize_chain(generation, key, hash, guard);
            self.help_migrate(generation, guard);
            generation = next;
        }
        generation
    }

    /// Finalizes `key`'s slot in `generation` if it has one, else freezes the empty slot
    /// that ends its chain (no later store of the key can land in this generation).
    fn finalize_chain(&self, generation: &Generation<T>, key: &T::Key, hash: u64, guard: &Guard) {
        let tag = tag_of(hash);
        let mut index = hash as usize & generation.mask;
        for _ in 0..=generation.mask {
            let slot = &generation.slots[index];
            let word = slot.load(LOAD);
            match decode(word) {
                Word::Empty => {
                    if slot.compare_exchange(word, frozen_empty(), Ordering::AcqRel, Ordering::Acquire).is_ok() {
                        return;
                    }
                    continue; // stored meanwhile: look at it
                }
                Word::FrozenEmpty => return,
                // SAFETY: read from a slot while pinned.
                Word::Item { item, tag: found, .. } if found == tag && unsafe { (*item).key() } == key => {
                    self.finalize(generation, index, Some(hash), guard);
                    return;
                }
                _ => {}
            }
            index = (index + 1) & generation.mask;
        }
    }

    /// Migrates one chunk of `generation` (the root, which has a successor), and promotes
    /// the successor once every chunk is done.
    fn help_migrate(&self, generation: &Generation<T>, guard: &Guard) {
        let done = match generation.chunk_to_migrate() {
            Some(chunk) => {
                for index in generation.chunk_range(chunk) {
                    self.finalize(generation, index, None, guard);
                }
                generation.finish_chunk(chunk);
                generation.is_migrated()
            }
            // Every chunk is done (the count of finished chunks may lag their flags: a
            // finisher between its flag and its count is not waited for).
            None => true,
        };
        if done {
            let next = generation.next.load(Ordering::Acquire);
            let old = ptr::from_ref(generation).cast_mut();
            if self.root.compare_exchange(old, next, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                self.migrations.fetch_sub(1, Ordering::Release);
                let retired = Retired(old);
                // SAFETY: no longer the root, so no thread pinned from now on reaches it;
                // the closure frees only the generation (its slots array), never items.
                unsafe {
                    guard.defer_unchecked(move || {
                        let retired = retired;
                        drop(Box::from_raw(retired.0));
                    })
                };
                if generation.capacity() >= PURGE_ROOM {
                    // A large slot array: worth sealing the bag now rather than after 64 more.
                    guard.flush();
                }
            }
        }
    }

    /// Freezes and finalizes slot `index` of `generation` (which has a successor).
    /// Idempotent: any number of threads may run it on one slot. `hash`, if the caller has
    /// it, is the hash of the slot's key (a slot holds one key for its generation's life):
    /// a copy then hashes nothing.
    fn finalize(&self, generation: &Generation<T>, index: usize, hash: Option<u64>, guard: &Guard) {
        let next = Self::next(generation, guard).expect("finalizing a generation that does not migrate");
        let slot = &generation.slots[index];
        loop {
            let word = slot.load(LOAD);
            let done = match decode(word) {
                Word::FrozenEmpty | Word::Moved(_) => return,
                Word::Empty => slot.compare_exchange(word, frozen_empty(), Ordering::AcqRel, Ordering::Acquire).is_ok(),
                Word::Tomb | Word::Reserved => {
                    slot.compare_exchange(word, moved(None), Ordering::AcqRel, Ordering::Acquire).is_ok()
                }
                Word::Item { frozen: false, .. } => {
                    let _ = slot.compare_exchange(word, frozen(word), Ordering::AcqRel, Ordering::Acquire);
                    false // look again: frozen now, by us or another
                }
                Word::Item { item, tag, frozen: true } => {
                    let Some(copied_to) = self.copy(item, tag, hash, next) else { return };
                    if slot.compare_exchange(word, moved(copied_to), Ordering::AcqRel, Ordering::Acquire).is_ok()
                        && copied_to.is_none()
                    {
                        // Not copied: its chain ended removed, and this CAS took it out of
                        // the last slot that held it.
                        // SAFETY: as just said; no later copy can land (the ticket says so).
                        unsafe { self.hand_off(item, ptr::null_mut(), guard) };
                    }
                    return;
                }
            };
            if done {
                return;
            }
        }
    }

    /// The slot of `next` that the frozen `item` (whose key hashes to `hash`, if the caller
    /// knows it) is copied to, deciding it if no one has:
    /// `Some(None)` if the item is not copied (its chain ended removed when the decision
    /// was made); `None` if this caller is stale: its slot was finalized long ago, and the
    /// item's ticket has moved on to a later migration.
    fn copy(&self, item: *mut T, tag: u16, hash: Option<u64>, next: &Generation<T>) -> Option<Option<usize>> {
        // SAFETY: read from a frozen slot while pinned; the item leaves the table only
        // after that slot is finalized.
        let links = unsafe { (*item).slot_links() };
        if cfg!(loom_broken = "copy_without_ticket") {
            // Broken on purpose: every copier copies, into its own reservation.
            // SAFETY: as above.
            let index = self.reserve(next, self.hash(unsafe { (*item).key() }))?;
            let _ = next.slots[index].compare_exchange(reserved(), item_word(item, tag), PUBLISH, Ordering::Acquire);
            return Some(Some(index));
        }
        let seen = links.ticket.load(Ordering::Acquire);
        let copied_to = match decided(seen, next.id) {
            Some(copied_to) => copied_to,
            None if (seen >> 48) as u16 != 0 && (seen >> 48) as u16 != generation_before(next.id) => return None,
            None => {
                // SAFETY: as above.
                let removed = current(unsafe { &*item }).is_none();
                let reservation = if removed {
                    None
                } else {
                    // SAFETY: as above.
                    let hash = hash.unwrap_or_else(|| self.hash(unsafe { (*item).key() }));
                    match self.reserve(next, hash) {
                        Some(index) => Some(index),
                        // Decided long ago (maybe overwritten by a later migration's decision):
                        // the slot this call finalizes is finalized already.
                        None => return None,
                    }
                };
                let proposal = ticket(next.id, reservation);
                match links.ticket.compare_exchange(seen, proposal, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => reservation,
                    Err(winner) => {
                        if let Some(index) = reservation {
                            // Lost: give the reservation up (the chain goes on through it).
                            let _ = next.slots[index].compare_exchange(
                                reserved(),
                                tomb(),
                                Ordering::AcqRel,
                                Ordering::Acquire,
                            );
                        }
                        // `None`: overwritten by a later migration's decision since, so the
                        // slot is finalized already.
                        decided(winner, next.id)?
                    }
                }
            }
        };
        if let Some(index) = copied_to {
            // Only from RESERVED: once filled, the slot is the key's, and whatever it holds
            // later is newer than this copy.
            let _ = next.slots[index].compare_exchange(reserved(), item_word(item, tag), PUBLISH, Ordering::Acquire);
        }
        Some(copied_to)
    }

    /// Reserves the first empty slot of `hash`'s chain in `generation`, the successor of a
    /// migrating generation. `None` if `generation` migrates itself: its predecessor is
    /// then fully migrated, so every copy into it is decided already (this caller was
    /// preempted since it read an undecided ticket).
    fn reserve(&self, generation: &Generation<T>, hash: u64) -> Option<usize> {
        let mut index = hash as usize & generation.mask;
        let mut probes = 0;
        while probes <= generation.mask {
            let slot = &generation.slots[index];
            let word = slot.load(LOAD);
            match decode(word) {
                Word::Empty => {
                    if slot.compare_exchange(word, reserved(), Ordering::AcqRel, Ordering::Acquire).is_ok() {
                        generation.used.count_in();
                        return Some(index);
                    }
                    continue; // taken meanwhile: look at it again (not a probe)
                }
                Word::FrozenEmpty | Word::Moved(_) | Word::Item { frozen: true, .. } => return None,
                _ => {}
            }
            // Sized for every copy and a spare (`start_migration`): the walk finds an
            // empty slot.
            index = (index + 1) & generation.mask;
            probes += 1;
        }
        // Spinning here would hang every writer; a broken sizing bound is a bug to report.
        panic!("a migration's successor ({} slots) is full: its sizing bound did not hold", generation.capacity());
    }

    /// Calls `release.unlinked` on `from` and each item its chain leads to, up to `until`
    /// (excluded; null: to the chain's end).
    ///
    /// # Safety
    /// The caller's CAS just took this chain segment out of the last slot that led to it.
    unsafe fn hand_off(&self, from: *mut T, until: *mut T, guard: &Guard) {
        let mut item = from;
        while !item.is_null() && item != until {
            // SAFETY: alive until handed off, which is now, by this call only; the next
            // link is read first.
            let next = unsafe { (*item).slot_links().next.load(Ordering::Acquire) };
            // SAFETY: the caller's contract.
            unsafe { self.release.unlinked(item, guard) };
            item = next.map_addr(|address| address & !MARK);
        }
    }

    /// Removes `item` if no one else has: marks it (the linearization point), runs
    /// `settle` (the remover's accounting), and makes sure it leaves its slot. Returns what
    /// `settle` returned if this call removed it, `None` if someone else had.
    ///
    /// `hash` is the table's hash of the item's key (the caller's lookup made it): the
    /// cleanup finds the item's slot with it, and so runs no user code. `None` when the
    /// key could not be hashed (its `Hash` panicked): the item is removed all the same, and
    /// its chain left in its slot for the next migration, which hands off a removed chain
    /// without hashing it (or for a store of the key, which reuses the slot).
    pub(crate) fn remove<Y>(
        &self,
        item: &T,
        hash: Option<u64>,
        guard: &Guard,
        settle: impl FnOnce() -> Y,
    ) -> Option<Y> {
        // Counted out before the mark, so that `len` never counts an item already removed
        // (see `Counter::sum`); a remover that loses counts it back in.
        self.len.count_out();
        let next = &item.slot_links().next;
        // SeqCst: ordered against the janitor's SeqCst claim on the item's `life`.
        if next.compare_exchange(ptr::null_mut(), marked(ptr::null_mut()), Ordering::SeqCst, Ordering::Acquire).is_err()
        {
            // Broken on purpose under `loom_broken = "remove_ignores_mark"`: a second
            // remover also "wins". Under `loom_broken = "len_no_undo"`: the loser's early
            // count-out stays, and `len` runs one low for good.
            let broken = cfg!(loom_broken = "remove_ignores_mark");
            if !broken && !cfg!(loom_broken = "len_no_undo") {
                self.len.count_in();
            }
            return broken.then(settle);
        }
        // The item leaves its slot even if `settle` (user code: the weigher) panics.
        let purge = hash.map(|hash| Purge { slots: self, item: ptr::from_ref(item).cast_mut(), hash, guard });
        let settled = settle();
        drop(purge);
        Some(settled)
    }

    /// After a replacing insert and the caller's accounting: moves the old item's slot
    /// past it, or finds that a helper did.
    pub(crate) fn unlink_replaced(&self, replaced: Replaced<'_, T>, guard: &Guard) {
        let Replaced { old, generation, index, word, hash } = replaced;
        if !self.clean(generation, index, word, guard) {
            self.purge(ptr::from_ref(old).cast_mut(), hash, guard);
        }
    }

    /// Makes sure the marked `item`, whose key hashes to `hash`, leaves every slot's chain:
    /// cleans the slot whose chain holds it, after finalizing it if a migration froze it.
    /// Returns once no generation leads to it. Runs no user code (it compares pointers, and
    /// hashes nothing), so that it is safe in a drop guard while a panic unwinds.
    fn purge(&self, item: *mut T, hash: u64, guard: &Guard) {
        let mut generation = self.root(guard);
        loop {
            match Self::holder(generation, item, hash) {
                Some((index, word, false)) => {
                    if self.clean(generation, index, word, guard) {
                        return;
                    }
                    // The slot changed: look again.
                }
                Some((index, _, true)) => {
                    self.finalize(generation, index, Some(hash), guard);
                    generation = Self::next(generation, guard).expect("a frozen slot without a successor");
                }
                None => match Self::next(generation, guard) {
                    Some(next) => generation = next,
                    None => return,
                },
            }
        }
    }

    /// The slot of `generation` whose chain leads to `item`: its index, word and whether
    /// it is frozen. Compares pointers only (runs no `Eq`).
    fn holder(generation: &Generation<T>, item: *mut T, hash: u64) -> Option<(usize, *mut T, bool)> {
        let tag = tag_of(hash);
        let mut index = hash as usize & generation.mask;
        for _ in 0..=generation.mask {
            let word = generation.slots[index].load(LOAD);
            match decode(word) {
                Word::Empty | Word::FrozenEmpty => return None,
                Word::Item { item: mut found, tag: found_tag, frozen } if found_tag == tag => loop {
                    if found == item {
                        return Some((index, word, frozen));
                    }
                    // SAFETY: reachable from a slot while pinned.
                    let next = unsafe { (*found).slot_links().next.load(LOAD) };
                    found = next.map_addr(|address| address & !MARK);
                    if next.addr() & MARK == 0 || found.is_null() {
                        break;
                    }
                },
                _ => {}
            }
            index = (index + 1) & generation.mask;
        }
        None
    }

    /// Moves the unfrozen slot holding `word` past the marked items at the head of its
    /// chain: to the chain's live item, or to a tombstone. Whether this call did (and
    /// handed the items off); `false` if the slot changed or had nothing to clean.
    fn clean(&self, generation: &Generation<T>, index: usize, word: *mut T, guard: &Guard) -> bool {
        let Word::Item { item, tag, frozen: false } = decode(word) else { return false };
        // SAFETY: the slot held it while we are pinned.
        let live = current(unsafe { &*item }).map_or(ptr::null_mut(), |live| ptr::from_ref(live).cast_mut());
        if live == item {
            return false;
        }
        let cleaned = if live.is_null() { tomb() } else { item_word(live, tag) };
        let slot = &generation.slots[index];
        if slot.compare_exchange(word, cleaned, Ordering::AcqRel, Ordering::Acquire).is_err() {
            return false;
        }
        // SAFETY: this CAS took the marked segment out of the only slot leading to it (a
        // key's slot is cleaned in a generation only once older ones finalized it).
        unsafe { self.hand_off(item, live, guard) };
        true
    }

    /// Calls `visit` on every item in the table when the walk passes its slot. Weakly
    /// consistent: an item stored or removed during the walk may or may not be visited;
    /// one present throughout is visited once (a slot a migration moved is followed to
    /// the slot its copy landed in). `visit` may remove the item it is shown.
    pub(crate) fn for_each<'g>(&'g self, guard: &'g Guard, mut visit: impl FnMut(&'g T)) {
        // Items stored fresh in a successor are reached from no slot of the root: finish
        // the migration under way first (a successor started meanwhile holds only items
        // stored during the walk, or copies the walk follows).
        self.finish_migration(guard);
        let root = self.root(guard);
        for start in 0..root.capacity() {
            let mut generation = root;
            let mut index = start;
            loop {
                match decode(generation.slots[index].load(LOAD)) {
                    Word::Item { item, .. } => {
                        // SAFETY: read from a slot while pinned.
                        if let Some(live) = current(unsafe { &*item }) {
                            visit(live);
                        }
                        break;
                    }
                    Word::Moved(Some(copied_to)) => {
                        generation = Self::next(generation, guard).expect("moved without a successor");
                        index = copied_to;
                    }
                    _ => break,
                }
            }
        }
    }

    /// Helps the migration under way, if any, until its generation is no longer the root. Only that
    /// one: a migration that starts after it is not waited for, so that this returns under
    /// steady churn too (each purge starts the next).
    pub(crate) fn finish_migration(&self, guard: &Guard) {
        let first = self.root(guard);
        while Self::next(first, guard).is_some() && ptr::eq(self.root(guard), first) {
            self.help_migrate(first, guard);
        }
    }

    /// Whether a migration may be under way, read without pinning: a hint for a caller
    /// deciding whether to pin and [`help_migration`](Self::help_migration). It may miss
    /// one for the moment between its publication and its count.
    pub(crate) fn may_be_migrating(&self) -> bool {
        self.migrations.load(Ordering::Acquire) != 0
    }

    /// Migrates up to `chunks` chunks of the migration under way, if any (promoting each
    /// successor whose predecessor is done, and going on into the next migration if one
    /// started meanwhile). Returns whether a migration is still under way. Writers help
    /// only while they write: this is how a migration left behind when they stop ends
    /// (the janitor calls it).
    pub(crate) fn help_migration(&self, chunks: usize, guard: &Guard) -> bool {
        for _ in 0..chunks {
            let root = self.root(guard);
            if Self::next(root, guard).is_none() {
                return false;
            }
            self.help_migrate(root, guard);
        }
        Self::next(self.root(guard), guard).is_some()
    }

    /// Warms the cache for a later lookup or removal of `hash`: its home slot's line in
    /// the root generation. A hint only.
    #[inline]
    pub(crate) fn prefetch_home(&self, hash: u64, guard: &Guard) {
        if cfg!(crossbeam_loom) {
            return;
        }
        let generation = self.root(guard);
        prefetch(ptr::from_ref(&generation.slots[hash as usize & generation.mask]));
    }
}

impl<T: Slotted, R: Release<T>, S> Drop for Slots<T, R, S> {
    /// Destroys every item still in the table, once each (an item a migration copied is
    /// destroyed where its copy landed), and frees the generations.
    fn drop(&mut self) {
        let mut generation = self.root.load(Ordering::Acquire);
        while !generation.is_null() {
            // SAFETY: `&mut self`: no other thread is in the table; generations are boxes.
            let current_generation = unsafe { Box::from_raw(generation) };
            let next = current_generation.next.load(Ordering::Acquire);
            for slot in current_generation.slots.iter() {
                let Word::Item { item, frozen, .. } = decode(slot.load(Ordering::Acquire)) else { continue };
                if frozen && !next.is_null() {
                    // SAFETY: `next` is alive (freed after this one); the item is alive.
                    let (next_generation, links) = unsafe { (&*next, (*item).slot_links()) };
                    if let Some(Some(index)) = decided(links.ticket.load(Ordering::Acquire), next_generation.id) {
                        if let Word::Item { item: copy, .. } =
                            decode(next_generation.slots[index].load(Ordering::Acquire))
                        {
                            if copy == item {
                                continue; // destroyed with the next generation
                            }
                        }
                    }
                }
                let mut chained = item;
                while !chained.is_null() {
                    // SAFETY: nothing else can reach the chain; each item is destroyed once.
                    let link = unsafe { (*chained).slot_links().next.load(Ordering::Acquire) };
                    // SAFETY: as above.
                    unsafe { self.release.destroy(chained) };
                    chained = link.map_addr(|address| address & !MARK);
                }
            }
            generation = next;
        }
    }
}

/// Purges a removed item when dropped: after its remover's `settle`, or as it unwinds.
struct Purge<'a, T: Slotted, R: Release<T>, S: BuildHasher>
where
    T::Key: Hash + Eq,
{
    slots: &'a Slots<T, R, S>,
    item: *mut T,
    hash: u64,
    guard: &'a Guard,
}

impl<T: Slotted, R: Release<T>, S: BuildHasher> Drop for Purge<'_, T, R, S>
where
    T::Key: Hash + Eq,
{
    fn drop(&mut self) {
        self.slots.purge(self.item, self.hash, self.guard);
    }
}

/// A generation no longer the root, owned by the deferred closure that frees it.
struct Retired<T>(*mut Generation<T>);

// SAFETY: the closure only frees the generation's own memory (atomics), on any thread.
unsafe impl<T> Send for Retired<T> {}

#[cfg(test)]
mod tests;
