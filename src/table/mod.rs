//! The concurrent hash table: a split-ordered list (Shalev & Shavit) over a Harris–Michael
//! lock-free list, with a growable bucket directory.
//!
//! Every node lives in one sorted list, ordered by its split-order key (the bit-reversed
//! hash). A bucket is a dummy node in that list, held inline in the directory.
//! Doubling the bucket count is one CAS on the count: new buckets are created lazily
//! by inserting their dummy after their parent's, and no entry ever moves.
//!
//! Removal is Harris's: set the [`MARK`] bit of the node's `next` (the linearization
//! point), then unlink it from its predecessor. Whoever unlinks defers the value's drop
//! through the epoch (a drop that finds the value taken by its remover, see `crate::lease`,
//! does nothing) and hands the entry to the janitor (see `crate::reclaim`): the table
//! frees entries directly only when it is dropped.
//!
//! A set on a present key *replaces* the node: the new node takes the old one's successor
//! and the old node's `next` is marked to point at the new one in one CAS, so a reader
//! finds either the old or the new value, never neither.

mod directory;
mod entry;

use std::hash::{BuildHasher, Hash};
use std::ptr::NonNull;

use directory::{Claim, Directory};
use entry::{entry_key, hash_of, is_marked, marked, unmarked};
pub(crate) use entry::{Entry, Link};

use crate::counter::Counter;
use crate::intake::Intake;
use crate::life::Life;
use crate::reclaim::{destroy_whole, release_janitor_hold, release_value_later};
use crate::sync::epoch::Guard;
use crate::sync::{prefetch, AtomicBool, Ordering};

/// The ordering that publishes a new entry (AcqRel: Release for the readers, Acquire for
/// the node it links after). Broken on purpose only under
/// `--cfg loom_broken="relaxed_publish"`, to show that the loom models catch it.
const PUBLISH: Ordering = if cfg!(loom_broken = "relaxed_publish") { Ordering::Relaxed } else { Ordering::AcqRel };

/// The ordering a lookup reads links with (Acquire: it pairs with [`PUBLISH`], so a reader
/// sees a found entry as initialized). Broken on purpose only under
/// `--cfg loom_broken="relaxed_find"`.
const LOOKUP: Ordering = if cfg!(loom_broken = "relaxed_find") { Ordering::Relaxed } else { Ordering::Acquire };

/// Average entries per bucket before the table doubles its buckets.
const LOAD_FACTOR: usize = 2;

/// The steps of [`Table::prefetch_removal`].
#[derive(Clone, Copy, Debug)]
pub(crate) enum Removal {
    /// The entry's bucket.
    Bucket,
    /// The first node after the bucket's dummy.
    Run,
}

/// What [`Table::insert`] did.
pub(crate) enum Inserted<'g, K, V> {
    /// Linked under a key that had no entry.
    New,
    /// Replaced an entry, which this call removed; the caller unlinks it
    /// ([`Table::unlink_replaced`]) once it has done its accounting.
    Replaced(Replaced<'g, K, V>),
    /// Not linked: the caller's `admit` said no. The entry is still the caller's.
    Refused,
}

/// An entry a `set` replaced (marked, so removed, but maybe still linked), and where.
pub(crate) struct Replaced<'g, K, V> {
    pub(crate) old: &'g Entry<K, V>,
    bucket: &'g Link,
    pred: &'g Link,
    new: &'g Entry<K, V>,
}

/// What a search found: the node before the position, and the node at it.
struct Position<'g> {
    pred: &'g Link,
    /// Null at the end of the list; never marked.
    curr: *mut Link,
    /// Whether `curr` holds the searched key.
    found: bool,
}

pub(crate) struct Table<K, V, S> {
    hasher: S,
    directory: Directory,
    /// The list's first node: bucket 0's dummy, split-order key 0.
    head: NonNull<Link>,
    len: Counter,
    /// Entries this table unlinked after the janitor took them (see `crate::life`, "take").
    unlinked: Intake<K, V>,
    /// Set when the janitor has stopped for good: unlinkers then let go for it.
    janitor_gone: AtomicBool,
}

// SAFETY: the table owns its nodes (keys and values) and shares them between threads:
// `K` and `V` must be `Send + Sync`; the rest is atomics and immutable fields.
unsafe impl<K: Send + Sync, V: Send + Sync, S: Send> Send for Table<K, V, S> {}
// SAFETY: as above; every shared mutation goes through atomics.
unsafe impl<K: Send + Sync, V: Send + Sync, S: Sync> Sync for Table<K, V, S> {}

impl<K, V, S> Table<K, V, S>
where
    K: Hash + Eq,
    S: BuildHasher,
{
    /// `bell` is rung when an unlinked entry lands on an empty stripe of the unlinked intake.
    pub(crate) fn new(
        buckets: usize,
        hasher: S,
        bell: Option<std::sync::Arc<crate::doorbell::Doorbell>>,
    ) -> Table<K, V, S> {
        let directory = Directory::new(buckets);
        // Bucket 0's dummy is the list's head: linked by being the head.
        let Claim::Won(head) = directory.claim(0) else { unreachable!("a new directory's bucket 0 is unclaimed") };
        let head = NonNull::from(head);
        directory.publish(0);
        Table {
            hasher,
            directory,
            head,
            len: Counter::new(),
            unlinked: Intake::new(bell),
            janitor_gone: AtomicBool::new(false),
        }
    }

    pub(crate) fn hash(&self, key: &K) -> u64 {
        self.hasher.hash_one(key)
    }

    /// The entry holding `key`, if one is linked and not removed. Never allocates; it walks
    /// through removed nodes rather than helping unlink them, and writes only to link its
    /// bucket's dummy the first time the bucket is looked up (see `reader_bucket`).
    pub(crate) fn find<'g>(&'g self, key: &K, hash: u64, guard: &'g Guard) -> Option<&'g Entry<K, V>> {
        let so_key = entry_key(hash);
        let mut curr = self.reader_bucket(hash, guard);
        loop {
            // SAFETY: `curr` was reached from the list after the guard was pinned, so it is
            // not freed before the guard is dropped (nodes are retired only after unlinking).
            let node = unsafe { &*curr };
            if node.so_key > so_key {
                return None;
            }
            let next = node.next.load(LOOKUP);
            if node.so_key == so_key && !is_marked(next) {
                // SAFETY: odd split-order keys are entries; the node is protected as above.
                let entry = unsafe { Entry::<K, V>::from_link(NonNull::from(node)) };
                if entry.key == *key {
                    return Some(entry);
                }
            }
            curr = unmarked(next);
            if curr.is_null() {
                return None;
            }
        }
    }

    /// Links `entry` (made by the caller, not yet published) under its key, if `admit`
    /// agrees. Right before each attempt's publishing CAS, `admit` is shown the entry the
    /// key holds then (`None` if none) and says whether to go ahead; if that CAS fails, the
    /// search runs again and `admit` is asked again about what it finds then. A present
    /// key's entry is replaced (and returned as removed by this call).
    ///
    /// # Safety
    /// `entry` came from `Box::into_raw`, is unpublished, and its `so_key` was made from
    /// `self.hash(&entry.key)`. On [`Inserted::Refused`] it is still the caller's.
    pub(crate) unsafe fn insert<'g>(
        &'g self,
        entry: *mut Entry<K, V>,
        guard: &'g Guard,
        mut admit: impl FnMut(Option<&'g Entry<K, V>>) -> bool,
    ) -> Inserted<'g, K, V> {
        // SAFETY: the caller hands us an unpublished, live entry.
        let new = unsafe { &*entry };
        let hash = hash_of(new.link.so_key);
        let new_link = entry.cast::<Link>();
        let bucket = self.bucket(hash, guard);
        loop {
            let at = self.search(bucket, new.link.so_key, Some(&new.key), None, guard);
            if at.found {
                // SAFETY: positions hold protected, unmarked-when-seen nodes; `found` means
                // `curr` is an entry.
                let old = unsafe { Entry::<K, V>::from_link(NonNull::new_unchecked(at.curr)) };
                let succ = old.link.next.load(Ordering::Acquire);
                if is_marked(succ) {
                    continue; // removed meanwhile: search again
                }
                if !admit(Some(old)) {
                    return Inserted::Refused;
                }
                new.link.next.store(succ, Ordering::Relaxed);
                new.life.prepare(true);
                // The linearization point of a replacing set: the old node is removed and
                // the new one reachable through it, in one step.
                if old.link.next.compare_exchange(succ, marked(new_link), PUBLISH, Ordering::Acquire).is_ok() {
                    // Nothing from here to the caller runs user code, so that no panic leaves
                    // the new entry pending or unaccounted for; the unlink (which asks `K: Eq`
                    // if it has to search) is the caller's next step.
                    self.hand_down(old, new);
                    return Inserted::Replaced(Replaced { old, bucket, pred: at.pred, new });
                }
            } else {
                if !admit(None) {
                    return Inserted::Refused;
                }
                new.link.next.store(at.curr, Ordering::Relaxed);
                new.life.prepare(false);
                // Linearization point of an inserting set. Release publishes the entry.
                if at.pred.next.compare_exchange(at.curr, new_link, PUBLISH, Ordering::Acquire).is_ok() {
                    let shard = self.len.count_in();
                    self.maybe_grow(shard);
                    return Inserted::New;
                }
            }
        }
    }

    /// Calls `visit` on every entry linked and not removed when the walk passes it, in list
    /// order. Weakly consistent: an entry inserted or removed during the walk may or may not
    /// be visited; one present throughout is visited once. `visit` may remove the entry it
    /// is shown (the walk goes on from the successor it read before).
    pub(crate) fn for_each<'g>(&'g self, guard: &'g Guard, mut visit: impl FnMut(&'g Entry<K, V>)) {
        let _ = guard;
        let mut curr = self.head.as_ptr();
        while !curr.is_null() {
            // SAFETY: reached from the head through links after the guard was pinned (a
            // removed node's frozen `next` included): not freed before the guard drops.
            let node = unsafe { &*curr };
            let next = node.next.load(LOOKUP);
            if node.is_entry() && !is_marked(next) {
                // SAFETY: odd split-order keys are entries; protected as above.
                visit(unsafe { Entry::<K, V>::from_link(NonNull::from(node)) });
            }
            curr = unmarked(next);
        }
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
            // successor's `replace`, which came after its marking CAS: `next` is the successor.
            let next = entry.link.next.load(Ordering::Acquire);
            debug_assert!(is_marked(next), "replaced but not marked");
            let next = unmarked(next);
            // SAFETY: a replacement, so an entry; the caller is pinned, and the successor was
            // linked after the pin began or is still linked, so it is not freed meanwhile.
            entry = unsafe { Entry::<K, V>::from_link(NonNull::new_unchecked(next)) };
            deadline = inherited;
        }
    }

    /// Unlinks the entry a `set` replaced (or finds that a helping search has): after the
    /// set's accounting, because a search here runs `K: Eq`, which may panic; a node left
    /// marked and linked by a panic is unlinked by the next search that passes it.
    pub(crate) fn unlink_replaced(&self, replaced: Replaced<'_, K, V>, guard: &Guard) {
        let Replaced { old, bucket, pred, new } = replaced;
        let curr = std::ptr::from_ref(&old.link).cast_mut();
        let new_link = std::ptr::from_ref(&new.link).cast_mut();
        if !self.unlink(pred, curr, new_link, guard) {
            // The list changed around it: a search unlinks it (readers never do, and the
            // old value must not stay reachable).
            let _ = self.search(bucket, new.link.so_key, Some(&new.key), None, guard);
        }
    }

    /// Removes `entry` if no one else has: marks it (the linearization point), runs
    /// `settle` (the remover's accounting), and makes sure it is unlinked. Returns what
    /// `settle` returned if this call removed it, `None` if someone else had.
    ///
    /// `settle` runs before the unlink, whose search asks `K: Eq`: a panic there leaves
    /// the entry removed, accounted for, and marked for the next search to unlink.
    pub(crate) fn remove<R>(&self, entry: &Entry<K, V>, guard: &Guard, settle: impl FnOnce() -> R) -> Option<R> {
        // Counted out before the mark, so that `len` never counts an entry already removed
        // (see `Counter::sum`); a remover that loses counts it back in.
        self.len.count_out();
        let mut succ = entry.link.next.load(Ordering::Acquire);
        loop {
            if is_marked(succ) {
                // Broken on purpose under `loom_broken = "remove_ignores_mark"`: a second
                // remover also "wins".
                let broken = cfg!(loom_broken = "remove_ignores_mark");
                // Broken on purpose under `loom_broken = "len_no_undo"`: the loser's early
                // count-out stays, and `len` runs one low for good.
                if !broken && !cfg!(loom_broken = "len_no_undo") {
                    self.len.count_in();
                }
                return broken.then(settle);
            }
            // SeqCst: ordered against the janitor's SeqCst claim on `life` (see
            // `Core::fetch_and_delete`).
            match entry.link.next.compare_exchange(succ, marked(succ), Ordering::SeqCst, Ordering::Acquire) {
                Ok(_) => break,
                Err(seen) => succ = seen,
            }
        }
        let settled = settle();
        // Unlink it (or find that a helping search already has): a search for the key
        // unlinks every removed node it passes, and stops right after unlinking this one.
        let hash = hash_of(entry.link.so_key);
        let bucket = self.bucket(hash, guard);
        let own = std::ptr::from_ref(&entry.link).cast_mut();
        let _ = self.search(bucket, entry.link.so_key, Some(&entry.key), Some(own), guard);
        Some(settled)
    }

    /// Warms the cache for a later [`remove`](Self::remove) of `entry`, in two steps a few
    /// entries apart: [`Removal::Bucket`] loads the bucket, [`Removal::Run`] (once the
    /// bucket is in cache) the first node of the bucket's run, where the unlinking search
    /// starts. A hint only: reads no node, changes nothing; nothing under loom.
    #[inline]
    pub(crate) fn prefetch_removal(&self, entry: &Entry<K, V>, step: Removal) {
        if cfg!(crossbeam_loom) {
            return; // no caches to warm, and no extra loads for the models to explore
        }
        let bucket = (hash_of(entry.link.so_key) as usize) & (self.directory.bucket_count() - 1);
        match step {
            Removal::Bucket => self.directory.prefetch(bucket),
            Removal::Run => {
                if let Some(dummy) = self.directory.get(bucket) {
                    prefetch(dummy.next.load(Ordering::Relaxed));
                }
            }
        }
    }

    /// Harris–Michael search from `start`: the position of (`so_key`, `key`), unlinking
    /// removed nodes on the way. `key == None` searches for a bucket dummy.
    ///
    /// A removal passes its own marked node as `stop_after`: the search then returns as soon
    /// as it has unlinked that node (its result meaningless), without reading the node after
    /// it only to compare its key. At 1 M entries that read is a cache miss per removal;
    /// dropping it took the janitor's expiry loop from ~250 to ~140 ns an entry.
    fn search<'g>(
        &'g self,
        start: &'g Link,
        so_key: u64,
        key: Option<&K>,
        stop_after: Option<*mut Link>,
        guard: &'g Guard,
    ) -> Position<'g> {
        'retry: loop {
            let mut pred = start;
            let mut curr = pred.next.load(Ordering::Acquire);
            if is_marked(curr) {
                // Bucket dummies are never removed; `start` is one.
                unreachable!("a bucket dummy was marked");
            }
            loop {
                if curr.is_null() {
                    return Position { pred, curr, found: false };
                }
                // SAFETY: `curr` was read from a node reachable after the guard was pinned.
                let node = unsafe { &*curr };
                let next = node.next.load(Ordering::Acquire);
                if is_marked(next) {
                    // Help: unlink the removed node; start over if the list changed.
                    if !self.unlink(pred, curr, unmarked(next), guard) {
                        continue 'retry;
                    }
                    if stop_after == Some(curr) {
                        return Position { pred, curr: unmarked(next), found: false };
                    }
                    curr = unmarked(next);
                    continue;
                }
                if node.so_key > so_key {
                    return Position { pred, curr, found: false };
                }
                if node.so_key == so_key {
                    let matches = match key {
                        None => true,
                        // SAFETY: odd split-order keys (those searched with a key) are entries.
                        Some(key) => unsafe { Entry::<K, V>::from_link(NonNull::new_unchecked(curr)) }.key == *key,
                    };
                    if matches {
                        return Position { pred, curr, found: true };
                    }
                }
                pred = node;
                curr = next;
            }
        }
    }

    /// Unlinks the removed node `curr` from `pred` (one CAS to `succ`). On success this
    /// thread owns the hand-off of the node to the janitor.
    fn unlink(&self, pred: &Link, curr: *mut Link, succ: *mut Link, guard: &Guard) -> bool {
        let entry = curr.cast::<Entry<K, V>>();
        // SAFETY: `curr` was reachable while the guard is pinned; only entries are removed.
        let node = unsafe { &*entry };
        if pred.next.compare_exchange(curr, succ, Ordering::AcqRel, Ordering::Acquire).is_err() {
            return false;
        }
        // A leased value not taken (yet) waits for the epoch: a reader was in at the take, or
        // the remover left it to the janitor's listener, or this unlink (a helping search)
        // came before the take. Flush, so that the payload goes within an epoch advance, not
        // 64 retirements later.
        let flush = node.lease.waits_for_epoch();
        // SAFETY: we just unlinked the entry and are pinned by `guard`.
        unsafe { release_value_later(entry, guard, flush) };
        if !node.life.unlink().is_taken() {
            // The janitor has not taken it from its intake of new entries yet; it will see
            // UNLINKED when it does, and let go of it then.
            return true;
        }
        if self.janitor_gone() {
            // No janitor will look at the wheel or the intakes again: let go for it.
            // SAFETY: unlinked, on no intake, on no wheel anyone will touch again.
            unsafe { release_janitor_hold(entry) };
        } else {
            // The janitor took it, so `intake_next` is free again: hand it over.
            // SAFETY: the entry is alive (the janitor side still holds it), on no intake,
            // and the unlinker is the only writer of `intake_next` now.
            unsafe { self.unlinked.push(entry) };
        }
        true
    }

    /// The bucket's dummy for `hash`, creating the bucket (and its parents) if needed.
    fn bucket<'g>(&'g self, hash: u64, guard: &'g Guard) -> &'g Link {
        let bucket = (hash as usize) & (self.directory.bucket_count() - 1);
        self.init_bucket(bucket, guard)
    }

    fn init_bucket<'g>(&'g self, bucket: usize, guard: &'g Guard) -> &'g Link {
        if let Some(dummy) = self.directory.get(bucket) {
            return dummy;
        }
        let parent = bucket & !(1 << (usize::BITS - 1 - bucket.leading_zeros()));
        let parent = self.init_bucket(parent, guard);
        let dummy = match self.directory.claim(bucket) {
            Claim::Linked(dummy) => return dummy,
            // Another thread is linking it: the parent's range contains this bucket's, so
            // searching from there is correct, only longer. Nobody waits for the claimer.
            Claim::Busy => return parent,
            Claim::Won(dummy) => dummy,
        };
        let so_key = dummy.so_key;
        let dummy_ptr = std::ptr::from_ref(dummy).cast_mut();
        loop {
            let at = self.search(parent, so_key, None, None, guard);
            // Only the claimer links this dummy, so the search cannot find it.
            debug_assert!(!at.found, "bucket {bucket}'s dummy linked twice");
            // The dummy is ours until the CAS publishes it (nobody links, reads or starts
            // from a claimed bucket).
            dummy.next.store(at.curr, Ordering::Relaxed);
            if cfg!(loom_broken = "dummy_store") {
                // Broken on purpose: a store, not a CAS, so a concurrent insert can be lost.
                at.pred.next.store(dummy_ptr, Ordering::Release);
                break;
            }
            if at.pred.next.compare_exchange(at.curr, dummy_ptr, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                break;
            }
        }
        self.directory.publish(bucket);
        dummy
    }

    /// Where a reader starts for `hash`: the bucket's dummy, linking it first if its segment
    /// exists (once per bucket; a bucket left unlinked after a doubling would make every
    /// lookup in it walk its parent's entries too), else the nearest linked ancestor.
    /// Never allocates.
    #[inline]
    fn reader_bucket(&self, hash: u64, guard: &Guard) -> *mut Link {
        let bucket = (hash as usize) & (self.directory.bucket_count() - 1);
        if let Some(dummy) = self.directory.get(bucket) {
            return std::ptr::from_ref(dummy).cast_mut();
        }
        if self.directory.has_segment(bucket) {
            // Its ancestors' segments exist too: `init_bucket` allocates nothing here.
            return std::ptr::from_ref(self.init_bucket(bucket, guard)).cast_mut();
        }
        self.lookup_bucket(hash)
    }

    /// The nearest linked bucket for `hash`, without creating any.
    fn lookup_bucket(&self, hash: u64) -> *mut Link {
        let mut bucket = (hash as usize) & (self.directory.bucket_count() - 1);
        loop {
            if let Some(dummy) = self.directory.get(bucket) {
                return std::ptr::from_ref(dummy).cast_mut();
            }
            // The parent bucket's range contains this one's: start there.
            bucket &= !(1 << (usize::BITS - 1 - bucket.leading_zeros()));
        }
    }

    /// Every 64th increment of a length shard (every one under loom, so that small models
    /// grow), doubles the buckets if the load factor is exceeded. Sampling the table's own
    /// shard (not a thread-local count) makes short-lived writer threads grow it too.
    fn maybe_grow(&self, shard: usize) {
        const CHECK_EVERY: usize = 64;
        if cfg!(crossbeam_loom) || shard % CHECK_EVERY == 0 {
            let buckets = self.directory.bucket_count();
            if self.len.sum() > buckets.saturating_mul(LOAD_FACTOR) {
                self.directory.grow(buckets);
            }
        }
    }
}

impl<K, V, S> Table<K, V, S> {
    /// Entries in the table (live plus expired ones not yet removed).
    pub(crate) fn len(&self) -> usize {
        self.len.sum()
    }

    /// Whether the janitor has stopped for good.
    pub(crate) fn janitor_gone(&self) -> bool {
        self.janitor_gone.load(Ordering::Acquire)
    }

    /// Called by the janitor's last run: from now on unlinkers retire entries themselves.
    pub(crate) fn mark_janitor_gone(&self) {
        self.janitor_gone.store(true, Ordering::Release);
    }

    /// The intake of entries unlinked after the janitor took them.
    pub(crate) fn unlinked(&self) -> &Intake<K, V> {
        &self.unlinked
    }
}

impl<K, V, S> Drop for Table<K, V, S> {
    /// Frees every node still linked, directly (`&mut self`: no reader is left), and lets
    /// go of the entries on the unlinked intake for the janitor.
    fn drop(&mut self) {
        // SAFETY: entries on the unlinked intake are in no list and on no other intake,
        // and the janitor will never take them now.
        self.unlinked.take_all(|entry| unsafe { release_janitor_hold(entry) });
        let mut curr = self.head.as_ptr();
        while !curr.is_null() {
            // SAFETY: no concurrent access; every node in the list is alive and owned by it.
            let next = unmarked(unsafe { (*curr).next.load(Ordering::Acquire) });
            // SAFETY: as above; entries are `Box<Entry>`s. Dummies live in the directory's
            // segments, freed with it (after this body: fields drop after `drop`).
            unsafe {
                if (*curr).is_entry() {
                    destroy_whole(curr.cast::<Entry<K, V>>());
                }
            }
            curr = next;
        }
    }
}

/// Makes an unpublished entry for `key` with `hash` and initial `life` word; `leased` if
/// its readers count themselves in (a large value, see `crate::lease`).
pub(crate) fn new_entry<K, V>(key: K, value: V, hash: u64, life: Life, leased: bool) -> *mut Entry<K, V> {
    Box::into_raw(Box::new(Entry::new(entry_key(hash), key, value, life, leased)))
}

#[cfg(test)]
mod tests;
