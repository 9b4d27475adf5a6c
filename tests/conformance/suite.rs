//! The generic tests of the conformance suite. Each takes the implementation's constructor
//! (`make(tick, expire)`) and uses nothing but [`Buffer`] trait methods.
//!
//! Timing assertions come in two forms only, so that a loaded machine cannot fail them:
//! - lower bounds that a sleep guarantees ("after sleeping `expire + tick`, `get` misses");
//! - "visible for at least `expire`", checked with measured time: a miss is a failure only
//!   when the clock, read *before* the last set or touch and *after* the missing call, shows
//!   less than `expire` between them.
//!
//! Upper bounds on the janitor ("swept no later than `expire + tick`") are polled for
//! generously ([`POLL_LIMIT`]). Tests with threads run under a watchdog ([`within`]) so that a
//! deadlock fails the test instead of hanging the run.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use download_buffer::{Buffer, BufferId, Bytes, ChunkHandle, Error};

use crate::common::XorShift;

/// The janitor period of the timing tests.
const TICK: Duration = Duration::from_millis(10);
/// The idle lifetime of the timing tests.
const EXPIRE: Duration = Duration::from_millis(100);
/// An idle lifetime no test outlives: for tests that must not see expiry at all.
const LONG: Duration = Duration::from_secs(3600);
/// How long to wait for something that should happen within a tick or two.
const POLL_LIMIT: Duration = Duration::from_secs(2);
/// How long a threaded test may take before it is declared hung.
const HANG_LIMIT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------
// Support
// ---------------------------------------------------------------------------------------

/// Builds a buffer, failing the test if the constructor refuses valid durations.
fn build<B: Buffer>(make: &impl Fn(Duration, Duration) -> Result<B, Error>, tick: Duration, expire: Duration) -> B {
    match make(tick, expire) {
        Ok(buffer) => buffer,
        Err(err) => panic!("constructor refused tick {tick:?}, expire {expire:?}: {err}"),
    }
}

/// A fresh, process-unique id.
fn fresh(handle: i64) -> BufferId {
    BufferId::new(ChunkHandle(handle))
}

/// A small value that names `n`.
fn value(n: u64) -> Bytes {
    Bytes::from(format!("value number {n}").into_bytes())
}

/// Polls `done` every couple of milliseconds until it holds or [`POLL_LIMIT`] passes.
fn poll_until(mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if done() {
            return true;
        }
        if start.elapsed() > POLL_LIMIT {
            return false;
        }
        thread::sleep(Duration::from_millis(2));
    }
}

/// Runs `f` on its own thread and fails if it has not finished within [`HANG_LIMIT`]
/// (a deadlock then fails the test instead of hanging the whole run). Panics propagate.
fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    let worker = thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(HANG_LIMIT) {
        Ok(result) => {
            let _ = worker.join();
            result
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => match worker.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("the worker ended without sending"),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("{what}: still running after {HANG_LIMIT:?} (deadlock?)")
        }
    }
}

/// Asserts `result` is `Err(NotFound { id })` and that its message names the id.
#[track_caller]
fn assert_not_found(result: Result<Bytes, Error>, id: &BufferId, context: &str) {
    match result {
        Err(err) => {
            assert_eq!(err, Error::NotFound { id: *id }, "{context}");
            let message = err.to_string();
            assert!(message.contains(&id.to_string()), "{context}: message {message:?} does not name {id}");
        }
        Ok(data) => {
            panic!("{context}: fetch_and_delete({id}) returned {data:?}, expected NotFound")
        }
    }
}

/// Checks the rule behind every timing test: a miss is allowed only once at least `expire`
/// has passed since `touched` (read before the last set or touch; read now, after the miss).
#[track_caller]
fn assert_miss_allowed(touched: Instant, expire: Duration, context: &str) {
    let idle = touched.elapsed();
    assert!(
        idle >= expire,
        "{context}: the entry was missing only {idle:?} after it was last set or touched (expire {expire:?})"
    );
}

// ---------------------------------------------------------------------------------------
// Constructor and the basic calls
// ---------------------------------------------------------------------------------------

pub fn rejects_zero_tick<B: Buffer + 'static>(make: impl Fn(Duration, Duration) -> Result<B, Error>) {
    for expire in [EXPIRE, LONG, Duration::MAX] {
        let err = make(Duration::ZERO, expire).err().expect("a zero tick must be rejected");
        assert_eq!(err, Error::ZeroDuration { parameter: "tick" });
        let message = err.to_string();
        assert!(message.contains("tick"), "message {message:?} does not name the parameter");
    }
}

pub fn rejects_zero_expire<B: Buffer + 'static>(make: impl Fn(Duration, Duration) -> Result<B, Error>) {
    for tick in [TICK, LONG, Duration::MAX] {
        let err = make(tick, Duration::ZERO).err().expect("a zero expire must be rejected");
        assert_eq!(err, Error::ZeroDuration { parameter: "expire" });
        let message = err.to_string();
        assert!(message.contains("expire"), "message {message:?} does not name the parameter");
    }
    // Both zero: rejected, naming one of them.
    let err = make(Duration::ZERO, Duration::ZERO).err().expect("zero durations must be rejected");
    assert!(matches!(err, Error::ZeroDuration { parameter: "tick" | "expire" }), "unexpected error {err:?}");
}

pub fn set_then_get_returns_the_value<B: Buffer + 'static>(make: impl Fn(Duration, Duration) -> Result<B, Error>) {
    let buffer = build(&make, TICK, LONG);
    let id = fresh(1);
    assert!(buffer.is_empty());
    assert_eq!(buffer.len(), 0);
    assert_eq!(buffer.get(&id), None, "an id never stored");

    buffer.set(id, value(1));
    assert_eq!(buffer.get(&id), Some(value(1)));
    assert_eq!(buffer.get(&id), Some(value(1)), "get must not consume the entry");
    assert_eq!(buffer.len(), 1);
    assert!(!buffer.is_empty());

    // Same handle, different id: a separate entry.
    let other = fresh(1);
    assert_eq!(buffer.get(&other), None);
    buffer.set(other, value(2));
    assert_eq!(buffer.get(&id), Some(value(1)));
    assert_eq!(buffer.get(&other), Some(value(2)));
    assert_eq!(buffer.len(), 2);
}

pub fn delete_removes_the_entry<B: Buffer + 'static>(make: impl Fn(Duration, Duration) -> Result<B, Error>) {
    let buffer = build(&make, TICK, LONG);
    let (a, b) = (fresh(1), fresh(2));
    buffer.set(a, value(1));
    buffer.set(b, value(2));

    buffer.delete(&a);
    assert_eq!(buffer.get(&a), None);
    assert_not_found(buffer.fetch_and_delete(&a), &a, "after delete");
    assert_eq!(buffer.get(&b), Some(value(2)), "delete must leave other entries alone");
    assert_eq!(buffer.len(), 1);

    // Deleting what is not there is a no-op.
    buffer.delete(&a);
    buffer.delete(&fresh(3));
    assert_eq!(buffer.len(), 1);

    buffer.delete(&b);
    assert!(buffer.is_empty());
    assert_eq!(buffer.get(&b), None);
}

pub fn fetch_and_delete_returns_once_then_not_found<B: Buffer + 'static>(
    make: impl Fn(Duration, Duration) -> Result<B, Error>,
) {
    let buffer = build(&make, TICK, LONG);
    let id = fresh(7);
    buffer.set(id, value(7));
    assert_eq!(buffer.fetch_and_delete(&id), Ok(value(7)));
    assert_eq!(buffer.get(&id), None, "fetch_and_delete must remove the entry");
    assert!(buffer.is_empty());
    assert_not_found(buffer.fetch_and_delete(&id), &id, "second fetch_and_delete");

    let never = fresh(8);
    assert_not_found(buffer.fetch_and_delete(&never), &never, "an id never stored");
}

pub fn idle_entries_expire_and_are_swept<B: Buffer + 'static>(make: impl Fn(Duration, Duration) -> Result<B, Error>) {
    let buffer = build(&make, TICK, EXPIRE);
    let (probed_by_get, probed_by_fetch, untouched) = (fresh(1), fresh(2), fresh(3));
    for (n, id) in [probed_by_get, probed_by_fetch, untouched].into_iter().enumerate() {
        buffer.set(id, value(n as u64));
    }
    thread::sleep(EXPIRE + 2 * TICK);
    assert_eq!(buffer.get(&probed_by_get), None, "get after expire + 2 * tick");
    assert_not_found(
        buffer.fetch_and_delete(&probed_by_fetch),
        &probed_by_fetch,
        "fetch_and_delete after expire + 2 * tick",
    );
    // The untouched entry can only go by the janitor's sweep.
    assert!(
        poll_until(|| buffer.is_empty()),
        "the janitor did not sweep an expired entry: len() is still {} after {POLL_LIMIT:?} more",
        buffer.len()
    );
}

pub fn hundred_threads_on_their_own_ids<B: Buffer + 'static>(make: impl Fn(Duration, Duration) -> Result<B, Error>) {
    const THREADS: usize = 100;
    let buffer = build(&make, TICK, LONG);
    within("100 threads", move || {
        let start = Barrier::new(THREADS);
        thread::scope(|s| {
            for t in 0..THREADS {
                let (buffer, start) = (&buffer, &start);
                s.spawn(move || {
                    let id = fresh(t as i64);
                    let data = value(t as u64);
                    start.wait();
                    buffer.set(id, data.clone());
                    assert_eq!(buffer.get(&id), Some(data.clone()), "thread {t}: get");
                    assert_eq!(buffer.fetch_and_delete(&id), Ok(data), "thread {t}: fetch_and_delete");
                    assert_eq!(buffer.get(&id), None, "thread {t}: get after fetch_and_delete");
                    assert_not_found(buffer.fetch_and_delete(&id), &id, "second fetch_and_delete");
                });
            }
        });
        assert!(buffer.is_empty(), "{} entries left", buffer.len());
    });
}

pub fn done_keeps_the_buffer_usable<B: Buffer + 'static>(make: impl Fn(Duration, Duration) -> Result<B, Error>) {
    let buffer = build(&make, TICK, LONG);
    let (a, b, c) = (fresh(1), fresh(2), fresh(3));
    buffer.set(a, value(1));
    buffer.done();

    assert_eq!(buffer.get(&a), Some(value(1)), "an entry set before done");
    buffer.set(b, value(2));
    assert_eq!(buffer.get(&b), Some(value(2)), "an entry set after done");
    assert_eq!(buffer.len(), 2);
    buffer.set(b, value(22));
    assert_eq!(buffer.get(&b), Some(value(22)), "replacing after done");
    buffer.delete(&a);
    assert_eq!(buffer.get(&a), None, "delete after done");
    assert_eq!(buffer.fetch_and_delete(&b), Ok(value(22)), "fetch_and_delete after done");
    assert_not_found(buffer.fetch_and_delete(&b), &b, "second fetch_and_delete after done");
    assert!(buffer.is_empty());
    buffer.set(c, value(3));
    assert_eq!(buffer.len(), 1);
}

pub fn done_stops_sweeping_but_get_still_honours_the_deadline<B: Buffer + 'static>(
    make: impl Fn(Duration, Duration) -> Result<B, Error>,
) {
    let buffer = build(&make, TICK, EXPIRE);
    let (before_done, after_done) = (fresh(1), fresh(2));
    let set_at = Instant::now();
    buffer.set(before_done, value(1));
    buffer.done();
    // Only if this process stalled for `expire` could the janitor have swept it before `done`.
    let could_have_been_swept = set_at.elapsed() >= EXPIRE;
    buffer.set(after_done, value(2));

    thread::sleep(EXPIRE + 2 * TICK);
    let held = buffer.len();
    if could_have_been_swept {
        assert!((1..=2).contains(&held), "len() is {held}: the entry set after done was swept");
    } else {
        assert_eq!(held, 2, "after done, no janitor may sweep: len() must still count both entries");
    }
    // But an entry past its deadline is never returned, janitor or not.
    assert_eq!(buffer.get(&before_done), None, "get of an entry past expire + tick after done");
    assert_not_found(
        buffer.fetch_and_delete(&after_done),
        &after_done,
        "fetch_and_delete of an entry past expire + tick after done",
    );
}

pub fn works_through_dyn_buffer<B: Buffer + 'static>(make: impl Fn(Duration, Duration) -> Result<B, Error>) {
    let boxed: Box<dyn Buffer> = Box::new(build(&make, TICK, LONG));
    let buffer: &dyn Buffer = &*boxed;
    let id = fresh(1);
    assert!(buffer.is_empty());
    buffer.set(id, value(1));
    assert_eq!(buffer.get(&id), Some(value(1)));
    assert_eq!(buffer.len(), 1);
    buffer.delete(&id);
    buffer.set(id, value(2));
    assert_eq!(buffer.fetch_and_delete(&id), Ok(value(2)));
    buffer.done();
    drop(boxed);
}

// ---------------------------------------------------------------------------------------
// One test per semantic in the trait documentation
// ---------------------------------------------------------------------------------------

pub fn set_replaces_and_resets_life<B: Buffer + 'static>(make: impl Fn(Duration, Duration) -> Result<B, Error>) {
    let buffer = build(&make, TICK, EXPIRE);

    // Replacement: one entry, the newer value.
    let replaced = fresh(1);
    buffer.set(replaced, value(1));
    buffer.set(replaced, value(2));
    assert_eq!(buffer.len(), 1, "set on an existing id must replace, not add");
    assert_eq!(buffer.get(&replaced), Some(value(2)));
    assert_eq!(buffer.fetch_and_delete(&replaced), Ok(value(2)));
    assert_not_found(buffer.fetch_and_delete(&replaced), &replaced, "the old value must be gone too");

    // Reset: set at 0, set again at 0.6 * expire, read at 1.2 * expire (> expire + tick, so
    // the entry would be gone had the second set not reset its life).
    let id = fresh(2);
    let first_set = Instant::now();
    buffer.set(id, value(1));
    let mut second_set = first_set;
    for step in 0..2 {
        thread::sleep(EXPIRE * 6 / 10);
        if step == 0 {
            second_set = Instant::now();
            buffer.set(id, value(2));
        }
    }
    let got = buffer.get(&id);
    assert!(first_set.elapsed() > EXPIRE + TICK);
    match got {
        Some(data) => assert_eq!(data, value(2), "get after the replacing set"),
        None => assert_miss_allowed(second_set, EXPIRE, "set must reset the entry's life"),
    }
}

pub fn get_returns_a_clone_sharing_memory<B: Buffer + 'static>(make: impl Fn(Duration, Duration) -> Result<B, Error>) {
    let buffer = build(&make, TICK, LONG);

    // A Vec-backed value.
    let stored = Bytes::from((0..4096u32).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    let ptr = stored.as_ptr();
    let id = fresh(1);
    buffer.set(id, stored.clone());
    for round in 0..2 {
        let got = buffer.get(&id).expect("stored value");
        assert_eq!(got, stored);
        assert_eq!(got.as_ptr(), ptr, "get #{round} copied the bytes instead of sharing them");
    }
    let fetched = buffer.fetch_and_delete(&id).expect("stored value");
    assert_eq!(fetched.as_ptr(), ptr, "fetch_and_delete copied the bytes");

    // A slice of a larger buffer: the very same window comes back.
    let big = Bytes::from(vec![9u8; 1 << 16]);
    let window = big.slice(1000..3000);
    let id = fresh(2);
    buffer.set(id, window.clone());
    let got = buffer.get(&id).expect("stored slice");
    assert_eq!(got.len(), 2000);
    assert_eq!(got.as_ptr(), window.as_ptr(), "get copied a sliced value");

    // A static value.
    let id = fresh(3);
    let fixed = Bytes::from_static(b"static chunk bytes");
    buffer.set(id, fixed.clone());
    assert_eq!(buffer.get(&id).expect("stored static").as_ptr(), fixed.as_ptr());
}

pub fn get_extends_life<B: Buffer + 'static>(make: impl Fn(Duration, Duration) -> Result<B, Error>) {
    let buffer = build(&make, TICK, EXPIRE);
    let id = fresh(1);
    let mut touched = Instant::now();
    buffer.set(id, value(1));

    // Read every 30 ms for four lifetimes: the entry must stay.
    let start = Instant::now();
    let mut hits = 0;
    while start.elapsed() < 4 * EXPIRE {
        thread::sleep(Duration::from_millis(30));
        let before = Instant::now();
        match buffer.get(&id) {
            Some(data) => {
                assert_eq!(data, value(1));
                touched = before;
                hits += 1;
            }
            None => {
                // Only possible if this thread stalled for a whole lifetime: start over.
                assert_miss_allowed(touched, EXPIRE, "get must extend the entry's life");
                touched = Instant::now();
                buffer.set(id, value(1));
            }
        }
    }
    assert!(hits > 0, "not one get hit");

    // Stop reading: it goes.
    assert!(
        poll_until(|| buffer.is_empty()),
        "an entry no longer read was not swept within {POLL_LIMIT:?} (len {})",
        buffer.len()
    );
    assert_eq!(buffer.get(&id), None);
}

pub fn entries_stay_visible_for_at_least_expire<B: Buffer + 'static>(
    make: impl Fn(Duration, Duration) -> Result<B, Error>,
) {
    let buffer = build(&make, TICK, EXPIRE);
    let ids: Vec<BufferId> = (0..8).map(fresh).collect();
    let set_at = Instant::now();
    for (n, id) in ids.iter().enumerate() {
        buffer.set(*id, value(n as u64));
    }
    // Probe one entry every expire / 10, alternately with get and fetch_and_delete.
    let mut read_by_get = 0;
    for (n, id) in ids.iter().enumerate() {
        thread::sleep(EXPIRE / 10);
        let found = if n % 2 == 0 {
            let got = buffer.get(id);
            if let Some(data) = &got {
                assert_eq!(*data, value(n as u64));
                read_by_get += 1;
            }
            got.is_some()
        } else {
            match buffer.fetch_and_delete(id) {
                Ok(data) => {
                    assert_eq!(data, value(n as u64));
                    true
                }
                Err(err) => {
                    assert_eq!(err, Error::NotFound { id: *id });
                    false
                }
            }
        };
        if !found {
            assert_miss_allowed(set_at, EXPIRE, &format!("entry {n}"));
        }
        // While within `expire`, the janitor may not have swept anything either.
        let held = buffer.len();
        if set_at.elapsed() < EXPIRE {
            let unprobed = ids.len() - n - 1;
            assert_eq!(held, unprobed + read_by_get, "len() after probing entry {n}: an entry was swept early");
        }
    }
}

pub fn never_returned_past_expire_plus_tick_without_janitor<B: Buffer + 'static>(
    make: impl Fn(Duration, Duration) -> Result<B, Error>,
) {
    let buffer = build(&make, TICK, EXPIRE);
    buffer.done();
    let (a, b) = (fresh(1), fresh(2));
    buffer.set(a, value(1));
    buffer.set(b, value(2));
    thread::sleep(EXPIRE + TICK);
    assert_eq!(buffer.get(&a), None, "get returned an entry past expire + tick (janitor stopped)");
    assert_not_found(
        buffer.fetch_and_delete(&b),
        &b,
        "fetch_and_delete of an entry past expire + tick (janitor stopped)",
    );
}

/// Touches `id` every `period` until `stop`, alternating `get` and `set`; a miss is a
/// failure unless the thread stalled for `expire`. Returns the number of hits.
fn keep_touching<B: Buffer>(buffer: &B, id: BufferId, period: Duration, expire: Duration, stop: &AtomicBool) -> usize {
    let data = value(id.handle.0 as u64);
    let mut touched = Instant::now();
    buffer.set(id, data.clone());
    let mut hits = 0;
    let mut round = 0u64;
    while !stop.load(Ordering::Relaxed) {
        thread::sleep(period);
        round += 1;
        let before = Instant::now();
        if round % 2 == 0 {
            buffer.set(id, data.clone());
            touched = before;
            continue;
        }
        match buffer.get(&id) {
            Some(got) => {
                assert_eq!(got, data);
                touched = before;
                hits += 1;
            }
            None => {
                assert_miss_allowed(touched, expire, &format!("the sweep removed {id}, touched every {period:?}"));
                touched = Instant::now();
                buffer.set(id, data.clone());
            }
        }
    }
    hits
}

/// Sets the flag when dropped, so that helper threads stop even if the test panics.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

pub fn sweep_never_removes_an_entry_touched_concurrently<B: Buffer + 'static>(
    make: impl Fn(Duration, Duration) -> Result<B, Error>,
) {
    const TICK: Duration = Duration::from_millis(5);
    const EXPIRE: Duration = Duration::from_millis(50);
    const RUN: Duration = Duration::from_millis(400);
    let buffer = build(&make, TICK, EXPIRE);
    within("sweep with concurrent touches", move || {
        let stop = AtomicBool::new(false);
        let (hot, warm) = (fresh(1), fresh(2));
        let (hot_hits, warm_hits, cold, revivals) = thread::scope(|s| {
            let stop_guard = StopOnDrop(&stop);
            // One key touched every few ms, one just before each expiry.
            let hot_toucher = s.spawn(|| keep_touching(&buffer, hot, Duration::from_millis(2), EXPIRE, &stop));
            let warm_toucher = s.spawn(|| keep_touching(&buffer, warm, EXPIRE * 8 / 10, EXPIRE, &stop));
            // Meanwhile keys set once and left to expire around them. Half of them are set
            // again just as they expire (while the janitor may be sweeping them): each must
            // then be readable at once and still be there a few ticks later.
            let mut rng = XorShift::new(7);
            let mut idle: VecDeque<(BufferId, Instant)> = VecDeque::new();
            let mut revived: VecDeque<(BufferId, Instant)> = VecDeque::new();
            let (mut cold, mut revivals) = (0, 0);
            let start = Instant::now();
            while start.elapsed() < RUN {
                let id = fresh(100);
                let set_at = Instant::now();
                buffer.set(id, value(100));
                idle.push_back((id, set_at));
                cold += 1;
                while let Some(&(id, set_at)) = idle.front() {
                    if set_at.elapsed() < EXPIRE {
                        break;
                    }
                    idle.pop_front();
                    if rng.below(2) == 0 {
                        let before = Instant::now();
                        buffer.set(id, value(101));
                        match buffer.get(&id) {
                            Some(data) => assert_eq!(data, value(101)),
                            None => assert_miss_allowed(before, EXPIRE, "an entry set again"),
                        }
                        revived.push_back((id, before));
                        revivals += 1;
                    }
                }
                while let Some(&(id, touched)) = revived.front() {
                    if touched.elapsed() < 3 * TICK {
                        break;
                    }
                    revived.pop_front();
                    if buffer.fetch_and_delete(&id).is_err() {
                        assert_miss_allowed(touched, EXPIRE, &format!("{id}, set again as it expired, was swept"));
                    }
                }
                thread::sleep(Duration::from_millis(3));
            }
            drop(stop_guard);
            let hot_hits = hot_toucher.join().expect("hot toucher panicked");
            let warm_hits = warm_toucher.join().expect("warm toucher panicked");
            (hot_hits, warm_hits, cold, revivals)
        });
        assert!(
            hot_hits > 0 && warm_hits > 0 && revivals > 0,
            "hits: hot {hot_hits}, warm {warm_hits}; revivals {revivals}"
        );
        // Every idle key is swept eventually (and then the touched ones, now idle too).
        assert!(
            poll_until(|| buffer.is_empty()),
            "{} of {cold} idle entries still held {POLL_LIMIT:?} after the run",
            buffer.len()
        );
    });
}

pub fn done_is_idempotent_and_safe_from_several_threads<B: Buffer + 'static>(
    make: impl Fn(Duration, Duration) -> Result<B, Error>,
) {
    const THREADS: usize = 4;
    let buffer = build(&make, TICK, LONG);
    within("concurrent done", move || {
        let id = fresh(1);
        buffer.set(id, value(1));
        let start = Barrier::new(THREADS);
        thread::scope(|s| {
            for _ in 0..THREADS {
                s.spawn(|| {
                    start.wait();
                    buffer.done();
                });
            }
        });
        buffer.done();
        buffer.done();
        assert_eq!(buffer.get(&id), Some(value(1)));
        buffer.set(id, value(2));
        assert_eq!(buffer.fetch_and_delete(&id), Ok(value(2)));
        assert!(buffer.is_empty());
    });
}

/// A payload whose owner holds a token, so a test can tell when the buffer let go of it.
struct Tracked {
    data: Vec<u8>,
    _token: Arc<()>,
}

impl AsRef<[u8]> for Tracked {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

pub fn drop_without_done_does_not_hang_and_frees_entries<B: Buffer + 'static>(
    make: impl Fn(Duration, Duration) -> Result<B, Error>,
) {
    const ENTRIES: usize = 16;
    let token = Arc::new(());
    for (tick, expire, call_done) in
        [(TICK, LONG, false), (TICK, EXPIRE, false), (Duration::MAX, Duration::MAX, false), (TICK, LONG, true)]
    {
        let context = format!("tick {tick:?}, expire {expire:?}, done first: {call_done}");
        let buffer = build(&make, tick, expire);
        for n in 0..ENTRIES {
            let data = Bytes::from_owner(Tracked { data: vec![n as u8; 1024], _token: Arc::clone(&token) });
            let id = fresh(n as i64);
            buffer.set(id, data);
            drop(buffer.get(&id)); // a returned clone, already dropped
        }
        if call_done {
            buffer.done();
        }
        within(&context, move || drop(buffer));
        assert_eq!(
            Arc::strong_count(&token),
            1,
            "{context}: {} of {ENTRIES} values still alive after the buffer was dropped",
            Arc::strong_count(&token) - 1
        );
    }
}

pub fn duration_max_is_accepted_and_never_expires<B: Buffer + 'static>(
    make: impl Fn(Duration, Duration) -> Result<B, Error>,
) {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    let huge = Duration::from_secs(u64::MAX);
    // (tick, expire, whether entries must outlive the sleep below)
    let configs = [
        (Duration::MAX, Duration::MAX, true),
        (TICK, Duration::MAX, true),
        (TICK, huge, true),
        (CENTURY, Duration::MAX, true),
        (CENTURY + Duration::from_secs(1), huge, true),
        (huge, Duration::MAX, true),
        (Duration::MAX, EXPIRE, false),
        (huge, TICK, false),
    ];
    let buffers: Vec<(Duration, Duration, bool, B, BufferId)> = configs
        .into_iter()
        .map(|(tick, expire, forever)| {
            let buffer = build(&make, tick, expire);
            let id = fresh(1);
            let set_at = Instant::now();
            buffer.set(id, value(1));
            match buffer.get(&id) {
                Some(data) => assert_eq!(data, value(1)),
                None => assert_miss_allowed(set_at, expire, &format!("tick {tick:?}, expire {expire:?}")),
            }
            (tick, expire, forever, buffer, id)
        })
        .collect();

    thread::sleep(EXPIRE + 2 * TICK);

    for (tick, expire, forever, buffer, id) in buffers {
        let context = format!("tick {tick:?}, expire {expire:?}");
        if forever {
            assert_eq!(buffer.len(), 1, "{context}: the entry was swept");
            assert_eq!(buffer.get(&id), Some(value(1)), "{context}: the entry expired");
            assert_eq!(buffer.fetch_and_delete(&id), Ok(value(1)), "{context}");
        } else {
            // No bound applies (expire + tick overflows); any answer will do, without panicking.
            let _ = buffer.get(&id);
            let _ = buffer.fetch_and_delete(&id);
            let _ = buffer.len();
        }
        buffer.set(id, value(2));
        assert_eq!(buffer.get(&id), Some(value(2)), "{context}: set after sleep");
        buffer.done();
    }
}

pub fn tick_longer_than_expire_still_expires<B: Buffer + 'static>(
    make: impl Fn(Duration, Duration) -> Result<B, Error>,
) {
    const TICK: Duration = Duration::from_millis(80);
    const EXPIRE: Duration = Duration::from_millis(50);
    let buffer = build(&make, TICK, EXPIRE);
    let (probed_by_get, probed_by_fetch, untouched, early) = (fresh(1), fresh(2), fresh(3), fresh(4));
    let set_at = Instant::now();
    for id in [probed_by_get, probed_by_fetch, untouched, early] {
        buffer.set(id, value(1));
    }
    // Still visible right away, even with a tick longer than the lifetime.
    match buffer.fetch_and_delete(&early) {
        Ok(data) => assert_eq!(data, value(1)),
        Err(_) => assert_miss_allowed(set_at, EXPIRE, "tick > expire: entry read right after set"),
    }

    thread::sleep(EXPIRE + TICK);
    assert_eq!(buffer.get(&probed_by_get), None, "tick > expire: get after expire + tick");
    assert_not_found(
        buffer.fetch_and_delete(&probed_by_fetch),
        &probed_by_fetch,
        "tick > expire: fetch_and_delete after expire + tick",
    );
    assert!(
        poll_until(|| buffer.is_empty()),
        "tick > expire: the janitor did not sweep an expired entry (len {})",
        buffer.len()
    );
}

// ---------------------------------------------------------------------------------------
// Races, stress and sizes
// ---------------------------------------------------------------------------------------

pub fn fetch_and_delete_race_has_exactly_one_winner<B: Buffer + 'static>(
    make: impl Fn(Duration, Duration) -> Result<B, Error>,
) {
    const ROUNDS: usize = 200;
    const RACERS: usize = 4;
    let buffer = build(&make, TICK, LONG);
    within("fetch_and_delete race", move || {
        let ids: Vec<BufferId> = (0..ROUNDS).map(|r| fresh(r as i64)).collect();
        let wins: Vec<AtomicUsize> = (0..ROUNDS).map(|_| AtomicUsize::new(0)).collect();
        // Racers record problems instead of panicking, so that no one is left at a barrier.
        let problems = Mutex::new(Vec::<String>::new());
        // Racers and this thread: `go` starts a round, `end` closes it.
        let (go, end) = (Barrier::new(RACERS + 1), Barrier::new(RACERS + 1));
        thread::scope(|s| {
            for racer in 0..RACERS {
                let (buffer, ids, wins, problems, go, end) = (&buffer, &ids, &wins, &problems, &go, &end);
                s.spawn(move || {
                    for round in 0..ROUNDS {
                        go.wait();
                        let id = &ids[round];
                        match buffer.fetch_and_delete(id) {
                            Ok(data) if data == value(round as u64) => {
                                wins[round].fetch_add(1, Ordering::SeqCst);
                            }
                            Ok(data) => problems
                                .lock()
                                .unwrap()
                                .push(format!("round {round}, racer {racer}: wrong value {data:?}")),
                            Err(Error::NotFound { id: missing }) if missing == *id => {}
                            Err(err) => problems
                                .lock()
                                .unwrap()
                                .push(format!("round {round}, racer {racer}: unexpected error {err:?}")),
                        }
                        end.wait();
                    }
                });
            }
            for round in 0..ROUNDS {
                buffer.set(ids[round], value(round as u64));
                go.wait();
                end.wait();
                let won = wins[round].load(Ordering::SeqCst);
                if won != 1 {
                    problems.lock().unwrap().push(format!("round {round}: {won} of {RACERS} racers got the value"));
                }
            }
        });
        let problems = problems.into_inner().unwrap();
        assert!(
            problems.is_empty(),
            "{} problems, first ones: {:#?}",
            problems.len(),
            &problems[..problems.len().min(10)]
        );
        assert!(buffer.is_empty(), "{} entries left after every round was consumed", buffer.len());
    });
}

pub fn mixed_stress_values_always_match_their_key<B: Buffer + 'static>(
    make: impl Fn(Duration, Duration) -> Result<B, Error>,
) {
    const THREADS: u64 = 4;
    const KEYS: usize = 64;
    const RUN: Duration = Duration::from_secs(1);
    const MAX_OPS: u64 = 2_000_000;
    let buffer = build(&make, Duration::from_millis(1), Duration::from_millis(5));
    within("mixed stress", move || {
        let keys: Vec<BufferId> = (0..KEYS).map(|k| fresh(k as i64 % 4)).collect();
        // The value of a key: its timestamp's bytes repeated, cut at any length.
        let encode = |key: &BufferId, len: usize| -> Bytes {
            let pattern = key.timestamp.to_le_bytes();
            Bytes::from(pattern.iter().copied().cycle().take(len).collect::<Vec<u8>>())
        };
        let check = |key: &BufferId, data: &Bytes, op: &str| {
            let pattern = key.timestamp.to_le_bytes();
            if let Some(i) = data.iter().enumerate().position(|(i, b)| *b != pattern[i % 8]) {
                panic!("{op}({key}) returned a {}-byte value that differs from its key's at byte {i}", data.len());
            }
        };
        let totals = thread::scope(|s| {
            let workers: Vec<_> = (0..THREADS)
                .map(|t| {
                    let (buffer, keys) = (&buffer, &keys);
                    s.spawn(move || {
                        let mut rng = XorShift::new(t + 1);
                        let start = Instant::now();
                        let (mut ops, mut hits) = (0u64, 0u64);
                        while ops < MAX_OPS && (ops % 256 != 0 || start.elapsed() < RUN) {
                            ops += 1;
                            let key = &keys[rng.below(KEYS as u64) as usize];
                            match rng.below(10) {
                                0..=3 => {
                                    let len = if rng.below(16) == 0 { 0 } else { rng.below(300) as usize };
                                    buffer.set(*key, encode(key, len));
                                }
                                4..=6 => {
                                    if let Some(data) = buffer.get(key) {
                                        check(key, &data, "get");
                                        hits += 1;
                                    }
                                }
                                7 => buffer.delete(key),
                                8 => match buffer.fetch_and_delete(key) {
                                    Ok(data) => {
                                        check(key, &data, "fetch_and_delete");
                                        hits += 1;
                                    }
                                    Err(err) => assert_eq!(err, Error::NotFound { id: *key }),
                                },
                                _ => {
                                    let held = buffer.len();
                                    assert!(held <= KEYS, "len() is {held} with only {KEYS} keys in use");
                                }
                            }
                        }
                        (ops, hits)
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().expect("stress thread panicked"))
                .fold((0, 0), |(ops, hits), (o, h)| (ops + o, hits + h))
        });
        let (ops, hits) = totals;
        assert!(ops > 0 && hits > 0, "stress did nothing useful: {ops} ops, {hits} hits");
        // The end state: left alone past expire + tick, every entry is swept.
        assert!(buffer.len() <= KEYS);
        assert!(poll_until(|| buffer.is_empty()), "{} entries left after the stress, well past expire", buffer.len());
        buffer.done();
        assert!(keys.iter().all(|key| buffer.get(key).is_none()));
    });
}

pub fn values_of_64_mib<B: Buffer + 'static>(make: impl Fn(Duration, Duration) -> Result<B, Error>) {
    const SIZE: usize = 64 << 20;
    let buffer = build(&make, TICK, LONG);
    let mut raw = vec![0u8; SIZE];
    let marks: Vec<usize> = (0..SIZE).step_by(1 << 20).chain([1, SIZE / 2 + 1, SIZE - 1]).collect();
    for &i in &marks {
        raw[i] = (i % 251) as u8 + 1;
    }
    let stored = Bytes::from(raw);
    let ptr = stored.as_ptr();
    let id = fresh(1);
    buffer.set(id, stored.clone());

    let check = |data: &Bytes, op: &str| {
        assert_eq!(data.len(), SIZE, "{op}: length");
        assert_eq!(data.as_ptr(), ptr, "{op}: 64 MiB were copied");
        for &i in &marks {
            assert_eq!(data[i], (i % 251) as u8 + 1, "{op}: byte {i}");
        }
        assert_eq!(data[2], 0, "{op}: byte 2");
    };
    check(&buffer.get(&id).expect("64 MiB value"), "get");
    check(&buffer.get(&id).expect("64 MiB value"), "second get");
    assert_eq!(buffer.len(), 1);
    check(&buffer.fetch_and_delete(&id).expect("64 MiB value"), "fetch_and_delete");
    assert!(buffer.is_empty());
}

pub fn empty_values<B: Buffer + 'static>(make: impl Fn(Duration, Duration) -> Result<B, Error>) {
    let buffer = build(&make, TICK, LONG);
    let ids: Vec<BufferId> = (0..3).map(fresh).collect();
    let empties = [Bytes::new(), Bytes::from_static(b""), Bytes::from(Vec::new())];
    for (id, empty) in ids.iter().zip(empties) {
        buffer.set(*id, empty);
    }
    assert_eq!(buffer.len(), 3, "empty values are entries too");
    for id in &ids {
        assert_eq!(buffer.get(id), Some(Bytes::new()), "an empty value is not a missing one");
    }
    assert_eq!(buffer.fetch_and_delete(&ids[0]), Ok(Bytes::new()));
    assert_not_found(buffer.fetch_and_delete(&ids[0]), &ids[0], "second fetch of an empty value");
    buffer.delete(&ids[1]);
    assert_eq!(buffer.get(&ids[1]), None);
    // Replace an empty value with a non-empty one and back.
    buffer.set(ids[2], value(3));
    assert_eq!(buffer.get(&ids[2]), Some(value(3)));
    buffer.set(ids[2], Bytes::new());
    assert_eq!(buffer.get(&ids[2]), Some(Bytes::new()));
    assert_eq!(buffer.len(), 1);
}
