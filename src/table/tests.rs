//! Unit tests of the table on its own (no janitor: entries stay on the intake-less path).

use std::collections::hash_map::DefaultHasher;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::Arc;

use super::*;
use crate::entry::new_entry;
use crate::life::Life;
use crate::reclaim::release_janitor_hold;
use crate::sync::epoch;

type Fixed = BuildHasherDefault<DefaultHasher>;

/// Every key hashes to the same value: one long collision run.
#[derive(Clone, Default)]
struct Colliding;

impl BuildHasher for Colliding {
    type Hasher = ConstHasher;
    fn build_hasher(&self) -> ConstHasher {
        ConstHasher
    }
}

struct ConstHasher;

impl Hasher for ConstHasher {
    fn finish(&self) -> u64 {
        0x5eed
    }
    fn write(&mut self, _bytes: &[u8]) {}
}

/// Inserts as the engine does once its janitor is gone (entries count as taken, so their
/// unlinker retires them; nothing leaks without a janitor).
fn set<S: BuildHasher>(table: &Table<u64, u64, S>, key: u64, value: u64) -> bool {
    insert_with_life(table, key, value, true)
}

/// Inserts as the engine does while a janitor runs: the entry awaits the janitor's intake.
fn set_untaken<S: BuildHasher>(table: &Table<u64, u64, S>, key: u64, value: u64) -> bool {
    insert_with_life(table, key, value, false)
}

fn insert_with_life<S: BuildHasher>(table: &Table<u64, u64, S>, key: u64, value: u64, taken: bool) -> bool {
    let guard = epoch::pin();
    let entry = new_entry(key, value, Life::new(0, taken), false);
    // SAFETY: a fresh, unpublished entry, with the table's hash of its key.
    match unsafe { table.insert(entry, table.hash(&key), &guard, |_| true) } {
        Inserted::Replaced(old) => {
            table.unlink_replaced(old, &guard);
            true
        }
        _ => false,
    }
}

fn get<S: BuildHasher>(table: &Table<u64, u64, S>, key: u64) -> Option<u64> {
    let guard = epoch::pin();
    // SAFETY: pinned, found through the table.
    table.find(&key, table.hash(&key), &guard).map(|entry| unsafe { *entry.value() })
}

fn remove<S: BuildHasher>(table: &Table<u64, u64, S>, key: u64) -> bool {
    let guard = epoch::pin();
    match table.find(&key, table.hash(&key), &guard) {
        Some(entry) => table.remove(entry, Some(table.hash(&key)), &guard, || ()).is_some(),
        None => false,
    }
}

/// A table with no janitor (as after `done`): removers retire entries themselves.
fn table<S>(hasher: S) -> Table<u64, u64, S>
where
    S: BuildHasher,
{
    let table = janitor_table(hasher);
    table.mark_janitor_gone();
    table
}

/// A table whose (pretend) janitor is running.
fn janitor_table<S>(hasher: S) -> Table<u64, u64, S>
where
    S: BuildHasher,
{
    Table::new(2, hasher, None)
}

#[test]
fn grows_from_the_smallest_size_and_finds_everything() {
    let table = table(Fixed::default());
    for key in 0..20_000 {
        assert!(!set(&table, key, key * 3), "key {key} was not new");
    }
    assert_eq!(table.len(), 20_000);
    for key in 0..20_000 {
        assert_eq!(get(&table, key), Some(key * 3));
    }
    assert_eq!(get(&table, 20_000), None);
}

#[test]
fn replacing_keeps_one_entry_per_key() {
    let table = table(Fixed::default());
    assert!(!set(&table, 7, 1));
    assert!(set(&table, 7, 2), "second set replaces");
    assert_eq!(get(&table, 7), Some(2));
    assert_eq!(table.len(), 1);
    assert!(remove(&table, 7));
    assert!(!remove(&table, 7), "removed once");
    assert_eq!(get(&table, 7), None);
    assert_eq!(table.len(), 0);
}

#[test]
fn full_hash_collisions_stay_correct() {
    let table = table(Colliding);
    for key in 0..500 {
        set(&table, key, key);
    }
    for key in (0..500).step_by(2) {
        assert!(remove(&table, key));
    }
    for key in 0..500 {
        assert_eq!(get(&table, key), (key % 2 == 1).then_some(key), "key {key}");
    }
    set(&table, 1, 100);
    assert_eq!(get(&table, 1), Some(100));
    assert_eq!(table.len(), 250);
}

#[test]
fn concurrent_inserts_during_growth_lose_nothing() {
    let table = Arc::new(table(Fixed::default()));
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let table = Arc::clone(&table);
            std::thread::spawn(move || {
                for i in 0..20_000 {
                    let key = i * 4 + t;
                    set(&table, key, key);
                    if i % 3 == 0 {
                        assert_eq!(get(&table, key), Some(key));
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    assert_eq!(table.len(), 80_000);
    for key in 0..80_000 {
        assert_eq!(get(&table, key), Some(key), "lost {key}");
    }
}

#[test]
fn removed_entries_are_handed_to_the_janitor_only_once_taken() {
    let table = janitor_table(Fixed::default());
    set_untaken(&table, 1, 1);
    set_untaken(&table, 2, 2);
    let untaken = {
        let guard = epoch::pin();
        std::ptr::from_ref(table.find(&1, table.hash(&1), &guard).unwrap()).cast_mut()
    };
    {
        // Pretend the janitor took entry 2 from its intake of new entries.
        let guard = epoch::pin();
        let entry = table.find(&2, table.hash(&2), &guard).unwrap();
        entry.life.take();
    }
    assert!(remove(&table, 1));
    assert!(remove(&table, 2));
    let mut handed = Vec::new();
    table.unlinked().take_all(|entry| {
        // SAFETY: entries on the intake are alive until the janitor side lets go.
        handed.push(unsafe { (*entry).key });
        // SAFETY: unlinked, off the intake, never filed; and no thread can reach it any
        // more (the grace period the janitor waits for): this test's guards are all
        // dropped and no other thread uses the table.
        unsafe { release_janitor_hold(entry) };
    });
    assert_eq!(handed, vec![2], "only the taken entry goes through the unlinked intake");
    // Entry 1 was never taken: the janitor lets go when it takes it from the intake of new
    // entries and sees UNLINKED. Do that here.
    // SAFETY: the janitor side has not let go of it yet; it is on no intake in this test;
    // no thread can reach it (as above).
    unsafe {
        assert!((*untaken).life.load().is_unlinked());
        release_janitor_hold(untaken);
    }
}
