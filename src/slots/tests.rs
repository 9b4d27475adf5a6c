//! Tests of the slot table on its own, with a plain item: stress tests (every item leaves
//! the table exactly once, whatever the migrations), and loom models of inserts, removals,
//! replacements and reads racing a migration.

use std::hash::BuildHasherDefault;

use super::*;
use crate::sync::{epoch, Arc, AtomicUsize};

type Fixed = BuildHasherDefault<std::collections::hash_map::DefaultHasher>;

/// A key, a value, and a serial number naming the item in [`Ledger`].
struct Item {
    links: SlotLinks<Item>,
    key: u64,
    value: u64,
    serial: usize,
}

// SAFETY: `links` is a field; `Item` is 8-aligned.
unsafe impl Slotted for Item {
    type Key = u64;
    fn key(&self) -> &u64 {
        &self.key
    }
    fn slot_links(&self) -> &SlotLinks<Item> {
        &self.links
    }
}

/// How often each item left the table (handed off or destroyed): must end at exactly once.
struct Ledger {
    left: Vec<AtomicUsize>,
}

impl Ledger {
    fn new(items: usize) -> Arc<Ledger> {
        Arc::new(Ledger { left: (0..items).map(|_| AtomicUsize::new(0)).collect() })
    }

    fn times_left(&self, serial: usize) -> usize {
        self.left[serial].load(Ordering::SeqCst)
    }
}

/// Frees handed-off items through the epoch, as the engine does, after counting them.
struct Counting(Arc<Ledger>);

impl Release<Item> for Counting {
    unsafe fn unlinked(&self, item: *mut Item, guard: &Guard) {
        // SAFETY: handed off once, alive until the deferred free.
        self.0.left[unsafe { (*item).serial }].fetch_add(1, Ordering::SeqCst);
        let owned = Owned(item);
        // SAFETY: no slot or chain leads to it any more: readers pinned now are the last.
        unsafe {
            guard.defer_unchecked(move || {
                let owned = owned;
                drop(Box::from_raw(owned.0));
            })
        };
    }

    unsafe fn destroy(&self, item: *mut Item) {
        // SAFETY: destroyed once, nothing reaches it.
        let item = unsafe { Box::from_raw(item) };
        self.0.left[item.serial].fetch_add(1, Ordering::SeqCst);
    }
}

struct Owned(*mut Item);
// SAFETY: an item of plain data, freed on whichever thread the epoch picks.
unsafe impl Send for Owned {}

type Table = Slots<Item, Counting, Fixed>;

fn table(capacity: usize, ledger: &Arc<Ledger>) -> Table {
    Slots::new(capacity, Fixed::default(), Counting(Arc::clone(ledger)))
}

/// Stores `key -> value` as item `serial`; whether it replaced an item.
fn set(table: &Table, key: u64, value: u64, serial: usize) -> bool {
    let guard = epoch::pin();
    let item = Box::into_raw(Box::new(Item { links: SlotLinks::new(), key, value, serial }));
    // SAFETY: a fresh item, with the table's hash of its key.
    match unsafe { table.insert(item, table.hash(&key), &guard, |_| true) } {
        Inserted::New => false,
        Inserted::Replaced(replaced) => {
            table.unlink_replaced(replaced, &guard);
            true
        }
        Inserted::Refused => unreachable!("admitted"),
    }
}

fn get(table: &Table, key: u64) -> Option<u64> {
    let guard = epoch::pin();
    table.find(&key, table.hash(&key), &guard).map(|item| item.value)
}

fn remove(table: &Table, key: u64) -> bool {
    let guard = epoch::pin();
    loop {
        let Some(item) = table.find(&key, table.hash(&key), &guard) else { return false };
        if table.remove(item, Some(table.hash(&key)), &guard, || ()).is_some() {
            return true;
        }
    }
}

#[cfg(not(crossbeam_loom))]
mod stress {
    use super::*;
    use std::sync::atomic::AtomicUsize as StdAtomicUsize;

    #[test]
    fn grows_from_the_smallest_size_through_many_migrations() {
        let ledger = Ledger::new(100_000);
        let table = table(1, &ledger);
        for key in 0..100_000u64 {
            assert!(!set(&table, key, key * 7, key as usize));
        }
        assert_eq!(table.len(), 100_000);
        for key in 0..100_000u64 {
            assert_eq!(get(&table, key), Some(key * 7), "key {key}");
        }
        assert_eq!(get(&table, 100_000), None);
        drop(table);
        assert!((0..100_000).all(|serial| ledger.times_left(serial) == 1), "each item destroyed once");
    }

    #[test]
    fn churn_purges_tombstones_and_releases_every_item_once() {
        // 64 keys, a million sets and removals: the generation fills with tombstones over
        // and over, and each migration purges them.
        let ledger = Ledger::new(1_000_000);
        let table = table(1, &ledger);
        for serial in 0..1_000_000usize {
            let key = (serial % 64) as u64;
            if serial % 3 == 2 {
                remove(&table, key);
                table.release().0.left[serial].fetch_add(1, Ordering::SeqCst); // stored nothing
            } else {
                set(&table, key, serial as u64, serial);
            }
        }
        let present: Vec<u64> = (0..64).filter(|&key| get(&table, key).is_some()).collect();
        assert_eq!(table.len(), present.len());
        drop(table);
        assert!((0..1_000_000).all(|serial| ledger.times_left(serial) == 1), "each item left the table once");
    }

    #[test]
    fn four_threads_racing_migrations_release_every_item_exactly_once() {
        const PER_THREAD: usize = 200_000;
        let ledger = Ledger::new(4 * PER_THREAD);
        let table = std::sync::Arc::new(table(1, &ledger));
        let serials = std::sync::Arc::new(StdAtomicUsize::new(0));
        let threads: Vec<_> = (0..4u64)
            .map(|thread| {
                let (table, serials) = (std::sync::Arc::clone(&table), std::sync::Arc::clone(&serials));
                std::thread::spawn(move || {
                    let mut x = thread + 1;
                    for _ in 0..PER_THREAD {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        // Shared keys (replacements and removals race across threads) and
                        // fresh ones (the table grows).
                        let key = if x % 2 == 0 { x % 512 } else { 1_000 + x % 100_000 };
                        let serial = serials.fetch_add(1, Ordering::Relaxed);
                        match x % 5 {
                            0 | 1 => {
                                set(&table, key, key, serial);
                            }
                            2 => {
                                remove(&table, key);
                                ledger_skip(&table, serial);
                            }
                            _ => {
                                if let Some(value) = get(&table, key) {
                                    assert_eq!(value, key, "a value under another key");
                                }
                                ledger_skip(&table, serial);
                            }
                        }
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let table = std::sync::Arc::into_inner(table).expect("threads are done");
        let present = (0..512).chain(1_000..101_000).filter(|&key| get(&table, key).is_some()).count();
        assert_eq!(table.len(), present, "len agrees with what is found");
        drop(table);
        let wrong: Vec<usize> = (0..4 * PER_THREAD).filter(|&serial| ledger.times_left(serial) != 1).collect();
        assert!(
            wrong.is_empty(),
            "{} items left the table other than once, e.g. {:?}",
            wrong.len(),
            &wrong[..wrong.len().min(5)]
        );
    }

    /// The allocator of a successor may be preempted between counting what is live and
    /// publishing; writers meanwhile go on storing in the old generation. The successor must
    /// still hold every copy (it was once sized from the stale count: a churning table of
    /// 65536 slots published 4096 for 6000 live items, and the migration spun for ever).
    #[test]
    fn a_successor_allocated_before_a_burst_of_stores_holds_every_copy() {
        let ledger = Ledger::new(200_000);
        let table = Arc::new(table(32_768, &ledger)); // 65536 slots
        let shared = Arc::clone(&table);
        BEFORE_PUBLISH.with(|hook| {
            *hook.borrow_mut() = Some(Box::new(move || {
                for key in 1_000_000..1_006_000u64 {
                    set(&shared, key, key, (key - 1_000_000) as usize + 100_000);
                }
            }))
        });
        // Stores and removals of fresh keys: tombstones pile up, nothing stays live, until
        // a migration starts (and the hook stores 6000 keys before it is published).
        let mut key = 0u64;
        loop {
            set(&table, key, key, key as usize);
            assert!(remove(&table, key));
            key += 1;
            let guard = epoch::pin();
            if Table::next(table.root(&guard), &guard).is_some() {
                break;
            }
            assert!(key < 100_000, "no migration started");
        }
        let (done, finished) = std::sync::mpsc::channel();
        let helper = Arc::clone(&table);
        std::thread::spawn(move || {
            helper.finish_migration(&epoch::pin());
            let _ = done.send(());
        });
        assert!(
            finished.recv_timeout(std::time::Duration::from_secs(10)).is_ok(),
            "the migration did not finish: its successor is too small"
        );
        let guard = epoch::pin();
        assert_eq!(table.len(), 6000);
        for key in 1_000_000..1_006_000u64 {
            assert!(table.find(&key, table.hash(&key), &guard).is_some(), "key {key} lost");
        }
    }

    /// Marks `serial` (an operation that stored no item) as accounted for.
    fn ledger_skip(table: &Table, serial: usize) {
        table.release().0.left[serial].fetch_add(1, Ordering::SeqCst);
    }

    #[test]
    fn readers_never_miss_a_present_key_while_writers_migrate_the_table() {
        let ledger = Ledger::new(2_000_000);
        let table = std::sync::Arc::new(table(1, &ledger));
        for key in 0..1_000u64 {
            set(&table, key, key, key as usize);
        }
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let (table, done) = (std::sync::Arc::clone(&table), std::sync::Arc::clone(&done));
            std::thread::spawn(move || {
                let mut rounds = 0;
                while !done.load(Ordering::Relaxed) || rounds == 0 {
                    for key in 0..1_000u64 {
                        assert_eq!(get(&table, key), Some(key), "key {key} missed during a migration");
                    }
                    rounds += 1;
                }
                rounds
            })
        };
        // Growth (fresh keys) and tombstone purges (set and remove), many migrations.
        for serial in 1_000..1_000_000usize {
            let key = 10_000 + serial as u64 % 50_000;
            if serial % 2 == 0 {
                set(&table, key, key, serial);
            } else {
                remove(&table, key);
                table.release().0.left[serial].fetch_add(1, Ordering::SeqCst);
            }
        }
        done.store(true, Ordering::Relaxed);
        assert!(reader.join().unwrap() > 0);
    }
}

/// Loom models of the table's races, run by `loom-tests/run.sh` (the crate's own unit tests
/// under `--cfg crossbeam_loom`, filtered to `loom_`). Under loom a generation has 4 slots
/// and migrates in chunks of 2, so a handful of keys migrate in several steps.
#[cfg(crossbeam_loom)]
mod models {
    use super::*;

    /// A table of 4 slots holding keys 0..3 (serials 0..3) whose fourth store started a
    /// migration that nobody has helped with yet.
    fn migrating(ledger: &Arc<Ledger>) -> Arc<Table> {
        let table = table(1, ledger);
        for key in 0..4u64 {
            set(&table, key, key, key as usize);
        }
        let guard = epoch::pin();
        assert!(Table::next(table.root(&guard), &guard).is_some(), "the fourth store starts a migration");
        drop(guard);
        Arc::new(table)
    }

    fn finish(table: &Table) {
        table.finish_migration(&epoch::pin());
    }

    #[test]
    fn loom_an_insert_and_a_removal_race() {
        loom::model(|| {
            let ledger = Ledger::new(2);
            let table = Arc::new(table(1, &ledger));
            set(&table, 1, 1, 0);
            let inserter = {
                let table = Arc::clone(&table);
                loom::thread::spawn(move || set(&table, 2, 2, 1))
            };
            assert!(remove(&table, 1));
            assert!(!inserter.join().unwrap());
            assert_eq!((get(&table, 1), get(&table, 2)), (None, Some(2)));
            assert_eq!(table.len(), 1);
            drop(table);
            assert_eq!((ledger.times_left(0), ledger.times_left(1)), (1, 1));
        });
    }

    #[test]
    fn loom_a_removal_racing_a_migration_releases_the_item_once() {
        loom::model(|| {
            let ledger = Ledger::new(4);
            let table = migrating(&ledger);
            let helper = {
                let table = Arc::clone(&table);
                loom::thread::spawn(move || finish(&table))
            };
            assert!(remove(&table, 0));
            helper.join().unwrap();
            assert_eq!(get(&table, 0), None);
            assert!((1..4).all(|key| get(&table, key) == Some(key)));
            assert_eq!(table.len(), 3);
            assert_eq!(ledger.times_left(0), 1, "the removed item was handed off once");
            drop(table);
            assert!((0..4).all(|serial| ledger.times_left(serial) == 1), "each item left once");
        });
    }

    #[test]
    fn loom_a_replacement_racing_a_migration_is_not_lost() {
        loom::model(|| {
            let ledger = Ledger::new(5);
            let table = migrating(&ledger);
            let helper = {
                let table = Arc::clone(&table);
                loom::thread::spawn(move || finish(&table))
            };
            assert!(set(&table, 0, 100, 4));
            helper.join().unwrap();
            assert_eq!(get(&table, 0), Some(100));
            assert_eq!(table.len(), 4);
            assert_eq!(ledger.times_left(0), 1, "the replaced item was handed off once");
            drop(table);
            assert!((0..5).all(|serial| ledger.times_left(serial) == 1), "each item left once");
        });
    }

    #[test]
    fn loom_inserts_racing_a_migration_lose_nothing() {
        loom::model(|| {
            let ledger = Ledger::new(6);
            let table = migrating(&ledger);
            let other = {
                let table = Arc::clone(&table);
                loom::thread::spawn(move || set(&table, 4, 4, 4))
            };
            set(&table, 5, 5, 5);
            other.join().unwrap();
            assert!((0..6).all(|key| get(&table, key) == Some(key)), "a key lost");
            assert_eq!(table.len(), 6);
            drop(table);
            assert!((0..6).all(|serial| ledger.times_left(serial) == 1), "each item destroyed once");
        });
    }

    #[test]
    fn loom_reads_racing_a_migration_find_every_key() {
        loom::model(|| {
            let ledger = Ledger::new(4);
            let table = migrating(&ledger);
            let helper = {
                let table = Arc::clone(&table);
                loom::thread::spawn(move || finish(&table))
            };
            for key in [0, 3] {
                assert_eq!(get(&table, key), Some(key), "key {key} missed");
            }
            helper.join().unwrap();
        });
    }
}

/// A capacity hint past what the table allocates up front is clamped, not overflowed.
#[test]
fn a_huge_capacity_hint_gets_the_largest_initial_table() {
    for hint in [usize::MAX, usize::MAX / 2 + 1, MAX_INITIAL_CAPACITY, MAX_INITIAL_CAPACITY / 2] {
        assert_eq!(initial_slots(hint), MAX_INITIAL_CAPACITY, "hint {hint}");
    }
    assert_eq!(initial_slots(0), MIN_CAPACITY);
    assert_eq!(initial_slots(1000), 2048);
}

#[cfg(not(crossbeam_loom))]
thread_local! {
    /// Run by the next `start_migration` of this thread right before it publishes.
    pub(super) static BEFORE_PUBLISH: std::cell::RefCell<Option<Box<dyn FnMut()>>> = const { std::cell::RefCell::new(None) };
}
