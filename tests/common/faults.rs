//! Fault injection for the panic-safety tests (`engine_panics`, `engine_panics_janitor`):
//! keys, values, a clock and a listener whose user code panics at random while armed, and
//! the checks of the end state. Each binary includes this file with `#[path]`, beside
//! `counting_alloc.rs` and `heap.rs`.
//!
//! The panics carry the payload [`INJECTED`]; a panic hook keeps them off the output.
#![allow(dead_code)]

use std::hash::{Hash, Hasher};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Once};
use std::time::Duration;

use download_buffer::{Builder, Clock, ExpiringMap, ManualClock};

use crate::common::{self, XorShift};
use crate::heap::{drain_until, Heap};

/// The expire of the maps the tests build on these faults (`key` ranges and clock steps
/// are sized for it).
pub const EXPIRE: Duration = Duration::from_secs(1);
/// Their tick.
pub const TICK: Duration = Duration::from_millis(80);

/// The payload of every injected panic.
pub const INJECTED: &str = "injected fault";

/// Whether faults are injected now.
pub static ARMED: AtomicBool = AtomicBool::new(false);
/// Calls that could fault so far (a fault's pseudo-random draw).
pub static DRAWS: AtomicU64 = AtomicU64::new(0);
/// Injected panics raised.
pub static RAISED: AtomicU64 = AtomicU64::new(0);

/// Panics, while armed, about once in `one_in` calls.
pub fn maybe_fault(one_in: u64) {
    if !ARMED.load(Ordering::Relaxed) {
        return;
    }
    let draw = DRAWS.fetch_add(1, Ordering::Relaxed).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    if (draw >> 40) % one_in == 0 {
        RAISED.fetch_add(1, Ordering::Relaxed);
        std::panic::panic_any(INJECTED);
    }
}

/// Keeps injected panics off the output (others are reported as usual), and makes the
/// process's one-time allocations (the system clock's calibration, the hasher's seeds, the
/// panic machinery's) before a test takes its baseline.
pub fn quiet_injected_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info.payload().downcast_ref::<&str>() != Some(&INJECTED) {
                default(info);
            }
        }));
        let map: ExpiringMap<u64, u64> = Builder::new(TICK, EXPIRE).manual().build().expect("valid durations");
        map.set(1, 1);
        drop(map);
    });
    let _ = catch_unwind(|| std::panic::panic_any(INJECTED));
}

/// A key whose `Hash` and `Eq` fault while armed. Its hash takes only 16 values, so that
/// keys collide and every search compares keys.
#[derive(Debug, Clone)]
pub struct Key(pub u64);

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        maybe_fault(64);
        (self.0 % 16).hash(state);
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        maybe_fault(64);
        self.0 == other.0
    }
}

impl Eq for Key {}

/// A value that counts its live copies and whose `Clone` faults while armed.
#[derive(Debug)]
pub struct Value {
    pub live: Arc<AtomicI64>,
    pub weight: usize,
}

impl Value {
    pub fn new(live: &Arc<AtomicI64>, weight: usize) -> Value {
        live.fetch_add(1, Ordering::Relaxed);
        Value { live: Arc::clone(live), weight }
    }
}

impl Clone for Value {
    fn clone(&self) -> Value {
        maybe_fault(16);
        Value::new(&self.live, self.weight)
    }
}

impl Drop for Value {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A clock that faults while armed (about once in 64 reads), else a [`ManualClock`].
#[derive(Clone)]
pub struct FaultyClock(pub ManualClock);

impl Clock for FaultyClock {
    fn now(&self) -> Duration {
        maybe_fault(64);
        self.0.now()
    }
}

pub type Map = ExpiringMap<Key, Value>;

/// A budgeted map weighing values by their `weight`, with a listener that faults.
pub fn budgeted(builder: Builder<Key, Value>, heard: &Arc<AtomicU64>) -> Map {
    let heard = Arc::clone(heard);
    builder
        .max_bytes(1 << 20)
        .weigher(|value: &Value| value.weight)
        .on_expire(move |_, _| {
            heard.fetch_add(1, Ordering::Relaxed);
            maybe_fault(4);
        })
        .build()
        .expect("valid settings")
}

/// One random operation on `map`, its panic (injected or not) caught and returned.
pub fn operate(map: &Map, live: &Arc<AtomicI64>, rng: &mut XorShift) -> Result<(), Box<dyn std::any::Any + Send>> {
    let key = Key(rng.below(200));
    let weight = 1 + rng.below(1000) as usize;
    catch_unwind(AssertUnwindSafe(|| match rng.below(8) {
        0 | 1 => map.set(key, Value::new(live, weight)),
        2 => drop(map.try_set(key, Value::new(live, weight))),
        3 => drop(map.set_if_absent(key, Value::new(live, weight))),
        4 => drop(map.get(&key)),
        5 => drop(map.delete(&key)),
        6 => drop(map.fetch_and_delete(&key)),
        _ => drop(map.peek(&key)),
    }))
}

/// The end state, once faults are disarmed: the map agrees with itself (`len` is the
/// number of keys it holds, the bytes held their weights), then expires everything.
pub fn assert_consistent_then_drained(map: &Map, advance: impl Fn(Duration), run: impl Fn()) {
    let held: Vec<Value> = (0..200).filter_map(|key| map.peek(&Key(key))).collect();
    let stats = map.stats();
    assert_eq!(stats.entries as usize, held.len(), "len against the keys held: {stats:?}");
    assert_eq!(stats.bytes as usize, held.iter().map(|value| value.weight).sum::<usize>(), "bytes: {stats:?}");
    drop(held);
    advance(EXPIRE + TICK * 2);
    common::wait_for("every entry to expire", || {
        run();
        map.is_empty()
    });
    assert_eq!(map.stats().bytes, 0, "bytes held after everything expired: {:?}", map.stats());
}

/// Checks, once the map is dropped, that every value is dropped and the heap is back to
/// `before` (when given) exactly. For a map with a janitor thread, `before` must have been
/// taken with no janitor thread running, and the thread must have ended since (it keeps
/// the scheduler's tables and its epoch registration while it runs).
/// Takes the values' counter, so that it is freed before the heap is measured (as the
/// test's other handles must be).
pub fn assert_leaks_nothing(before: Option<Heap>, live: Arc<AtomicI64>) {
    assert_eq!(live.load(Ordering::Relaxed), 0, "values alive after the map was dropped");
    drop(live);
    let Some(before) = before else { return };
    if let Err(least) = drain_until(before) {
        panic!("heap not back to its baseline: {before:?} before, at least {least:?} after");
    }
}
