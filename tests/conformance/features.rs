//! The operators' features, tested once against the [`Buffer`] trait: `set_if_absent`,
//! `try_set` under a byte budget, `peek`/`contains_key`, `clear`/`retain` and `stats`.
//!
//! Tests of the budget take `make_budgeted(tick, expire, max_bytes)`; the others take the
//! plain `make(tick, expire)`. Every test that waits for something ends by checking the
//! end state it promises (entries, bytes).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use download_buffer::{Buffer, BufferId, Bytes, ChunkHandle, Error, Stats};

use crate::common::XorShift;

const TICK: Duration = Duration::from_millis(10);
const EXPIRE: Duration = Duration::from_millis(100);
const LONG: Duration = Duration::from_secs(3600);
/// How long to wait for expiry that is due within `expire + tick`.
const POLL_LIMIT: Duration = Duration::from_secs(5);

fn build<B: Buffer>(make: &impl Fn(Duration, Duration) -> Result<B, Error>, tick: Duration, expire: Duration) -> B {
    make(tick, expire).unwrap_or_else(|err| panic!("constructor refused tick {tick:?}, expire {expire:?}: {err}"))
}

fn build_budgeted<B: Buffer>(
    make: &impl Fn(Duration, Duration, usize) -> Result<B, Error>,
    tick: Duration,
    expire: Duration,
    max_bytes: usize,
) -> B {
    make(tick, expire, max_bytes).unwrap_or_else(|err| panic!("constructor refused: {err}"))
}

/// A fresh, process-unique id for chunk `handle` (every call makes a new one: keep it).
fn id(handle: i64) -> BufferId {
    BufferId::new(ChunkHandle(handle))
}

/// `len` bytes, each `fill`.
fn bytes(len: usize, fill: u8) -> Bytes {
    Bytes::from(vec![fill; len])
}

/// Polls until `done` holds, failing after [`POLL_LIMIT`].
#[track_caller]
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < POLL_LIMIT, "{what}: not after {POLL_LIMIT:?}");
        thread::sleep(Duration::from_millis(2));
    }
}

// ---------------------------------------------------------------------------------------
// set_if_absent
// ---------------------------------------------------------------------------------------

pub fn set_if_absent_stores_only_when_no_live_entry_has_the_id<B: Buffer + 'static>(
    make: impl Fn(Duration, Duration) -> Result<B, Error>,
) {
    let buffer = build(&make, TICK, EXPIRE);
    let a = id(1);
    assert!(buffer.set_if_absent(a, bytes(10, 1)), "absent: stored");
    assert!(!buffer.set_if_absent(a, bytes(20, 2)), "present and live: refused");
    assert_eq!(buffer.peek(&a), Some(bytes(10, 1)), "the first value stays");
    buffer.delete(&a);
    assert!(buffer.set_if_absent(a, bytes(30, 3)), "deleted: absent again");
    assert_eq!(buffer.fetch_and_delete(&a).ok(), Some(bytes(30, 3)));
    // An expired entry counts as absent, whether or not the janitor has removed it yet.
    buffer.set(a, bytes(40, 4));
    let set_at = Instant::now();
    thread::sleep(EXPIRE + TICK);
    assert!(set_at.elapsed() > EXPIRE);
    let stored_at = Instant::now();
    assert!(buffer.set_if_absent(a, bytes(50, 5)), "expired: absent");
    let got = buffer.get(&a);
    if stored_at.elapsed() < EXPIRE {
        assert_eq!(got, Some(bytes(50, 5)));
        assert_eq!(buffer.stats().bytes, 50, "the expired value's bytes are gone");
    }
    wait_for("the new value expired and removed", || {
        let stats = buffer.stats();
        (stats.entries, stats.bytes) == (0, 0)
    });
}

pub fn set_if_absent_race_has_exactly_one_winner_whose_value_is_stored<B: Buffer + 'static>(
    make: impl Fn(Duration, Duration) -> Result<B, Error>,
) {
    const ROUNDS: usize = 300;
    const RACERS: usize = 6;
    let buffer = build(&make, TICK, LONG);
    let ids: Vec<BufferId> = (0..ROUNDS).map(|round| id(round as i64)).collect();
    let winners: Vec<Mutex<Vec<usize>>> = (0..ROUNDS).map(|_| Mutex::new(Vec::new())).collect();
    let go = Barrier::new(RACERS);
    thread::scope(|s| {
        for racer in 0..RACERS {
            let (buffer, ids, winners, go) = (&buffer, &ids, &winners, &go);
            s.spawn(move || {
                for round in 0..ROUNDS {
                    go.wait();
                    if buffer.set_if_absent(ids[round], bytes(8, racer as u8)) {
                        winners[round].lock().unwrap().push(racer);
                    }
                }
            });
        }
    });
    for round in 0..ROUNDS {
        let won = winners[round].lock().unwrap().clone();
        assert_eq!(won.len(), 1, "round {round}: winners {won:?}");
        assert_eq!(buffer.get(&ids[round]), Some(bytes(8, won[0] as u8)), "round {round}: not the winner's value");
    }
    let stats = buffer.stats();
    assert_eq!((stats.inserts, stats.entries, stats.bytes), (ROUNDS as u64, ROUNDS as u64, 8 * ROUNDS as u64));
}

// ---------------------------------------------------------------------------------------
// try_set and the byte budget
// ---------------------------------------------------------------------------------------

pub fn try_set_refuses_past_the_budget_and_counts_replacements_by_difference<B: Buffer + 'static>(
    make: impl Fn(Duration, Duration, usize) -> Result<B, Error>,
) {
    let buffer = build_budgeted(&make, TICK, LONG, 1000);
    let (a, b, c, d) = (id(1), id(2), id(3), id(4));
    assert_eq!(buffer.try_set(a, bytes(600, 1)), Ok(()));
    let refused = buffer.try_set(b, bytes(500, 2));
    assert_eq!(refused, Err(Error::Full { budget: 1000, held: 600, asked: 500 }));
    let message = refused.unwrap_err().to_string();
    for figure in ["1000", "600", "500"] {
        assert!(message.contains(figure), "{message:?} does not name {figure}");
    }
    assert!(!buffer.contains_key(&b), "refused: nothing stored");
    assert_eq!(buffer.try_set(a, bytes(900, 3)), Ok(()), "a replacement needs room only for the difference");
    assert_eq!(buffer.stats().bytes, 900);
    assert_eq!(buffer.try_set(b, bytes(100, 4)), Ok(()), "exactly up to the budget");
    assert_eq!(buffer.try_set(a, bytes(901, 5)), Err(Error::Full { budget: 1000, held: 1000, asked: 901 }));
    assert_eq!(buffer.get(&a), Some(bytes(900, 3)), "a refused replacement leaves the old value");
    assert_eq!(buffer.try_set(a, bytes(10, 6)), Ok(()), "a smaller replacement always fits");
    assert_eq!(buffer.stats().bytes, 110);
    // `set` bypasses the budget, and is counted.
    buffer.set(c, bytes(2000, 7));
    assert_eq!(buffer.stats().bytes, 2110);
    assert!(matches!(buffer.try_set(d, bytes(1, 8)), Err(Error::Full { held: 2110, asked: 1, .. })));
    assert_eq!(buffer.try_set(d, Bytes::new()), Ok(()), "an empty value weighs nothing");
    // Every exit gives the bytes back.
    buffer.delete(&c);
    assert_eq!(buffer.fetch_and_delete(&a).ok(), Some(bytes(10, 6)));
    assert_eq!(buffer.stats().bytes, 100);
    buffer.clear();
    let stats = buffer.stats();
    assert_eq!((stats.entries, stats.bytes), (0, 0));
    assert_eq!(buffer.try_set(a, bytes(1000, 9)), Ok(()), "the whole budget is free again");
}

pub fn expired_entries_give_their_bytes_back<B: Buffer + 'static>(
    make: impl Fn(Duration, Duration, usize) -> Result<B, Error>,
) {
    // A second of life, so that a stalled test thread does not see them expire early.
    let buffer = build_budgeted(&make, TICK, Duration::from_secs(1), 10_000);
    for n in 0..10 {
        assert_eq!(buffer.try_set(id(n), bytes(1000, n as u8)), Ok(()));
    }
    assert!(matches!(buffer.try_set(id(10), bytes(1, 0)), Err(Error::Full { .. })));
    // The end state: the length is counted out before the removal, the bytes after it.
    wait_for("every entry expired, removed and its bytes given back", || {
        let stats = buffer.stats();
        (stats.entries, stats.bytes, stats.expirations) == (0, 0, 10)
    });
    assert_eq!(buffer.try_set(id(10), bytes(10_000, 1)), Ok(()));
}

/// Four writers `try_set` and consume values of random sizes on their own ids while a
/// sampler reads `stats().bytes` without pause: it never reads above the budget, and at rest
/// the bytes held equal the bytes of the entries left.
pub fn try_set_never_passes_the_budget_under_concurrent_writers<B: Buffer + 'static>(
    make: impl Fn(Duration, Duration, usize) -> Result<B, Error>,
) {
    const BUDGET: usize = 64 * 1024;
    const WRITERS: u64 = 4;
    const OPS: usize = 20_000;
    let buffer = build_budgeted(&make, TICK, LONG, BUDGET);
    let stop = AtomicBool::new(false);
    let (samples, worst) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let refusals = AtomicUsize::new(0);
    let left: Mutex<HashMap<BufferId, usize>> = Mutex::new(HashMap::new());
    thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                let bytes = buffer.stats().bytes as usize;
                worst.fetch_max(bytes, Ordering::Relaxed);
                samples.fetch_add(1, Ordering::Relaxed);
            }
        });
        let writers: Vec<_> = (0..WRITERS)
            .map(|writer| {
                let (buffer, refusals, left) = (&buffer, &refusals, &left);
                s.spawn(move || {
                    let mut rng = XorShift::new(writer + 1);
                    let mut mine: HashMap<BufferId, usize> = HashMap::new();
                    let ids: Vec<BufferId> = (0..16).map(|n| id((writer * 100 + n) as i64)).collect();
                    for _ in 0..OPS {
                        let at = ids[(rng.next_u64() % 16) as usize];
                        match rng.next_u64() % 4 {
                            0 => {
                                if let Ok(data) = buffer.fetch_and_delete(&at) {
                                    assert_eq!(mine.remove(&at), Some(data.len()));
                                }
                            }
                            _ => {
                                let len = 1 + (rng.next_u64() % 8192) as usize;
                                match buffer.try_set(at, bytes(len, writer as u8)) {
                                    Ok(()) => {
                                        mine.insert(at, len);
                                    }
                                    Err(Error::Full { budget, asked, .. }) => {
                                        assert_eq!((budget, asked), (BUDGET, len));
                                        refusals.fetch_add(1, Ordering::Relaxed);
                                    }
                                    Err(other) => panic!("unexpected {other}"),
                                }
                            }
                        }
                    }
                    left.lock().unwrap().extend(mine);
                })
            })
            .collect();
        for writer in writers {
            writer.join().unwrap();
        }
        stop.store(true, Ordering::Relaxed);
    });
    let worst = worst.into_inner();
    assert!(worst <= BUDGET, "stats().bytes read {worst}, past the budget of {BUDGET}");
    assert!(samples.into_inner() > 100, "the sampler barely ran");
    assert!(refusals.into_inner() > 0, "the budget was never reached: the test tested nothing");
    let left = left.into_inner().unwrap();
    let stats = buffer.stats();
    assert_eq!(stats.entries, left.len() as u64);
    assert_eq!(stats.bytes, left.values().sum::<usize>() as u64, "at rest, bytes held = the entries' bytes");
    for (at, len) in &left {
        assert_eq!(buffer.peek(at).map(|data| data.len()), Some(*len));
    }
}

// ---------------------------------------------------------------------------------------
// peek, contains_key
// ---------------------------------------------------------------------------------------

pub fn peek_and_contains_key_do_not_extend_life<B: Buffer + 'static>(
    make: impl Fn(Duration, Duration) -> Result<B, Error>,
) {
    let expire = Duration::from_millis(200);
    let buffer = build(&make, TICK, expire);
    let (peeked, touched) = (id(1), id(2));
    buffer.set(peeked, bytes(5, 1));
    buffer.set(touched, bytes(5, 2));
    let set_done = Instant::now();
    // Look at both every 10 ms for 150 ms: `get` extends one, `peek` leaves the other.
    while set_done.elapsed() < Duration::from_millis(150) {
        if let Some(data) = buffer.peek(&peeked) {
            assert_eq!(data, bytes(5, 1));
        }
        let _ = buffer.contains_key(&peeked);
        let _ = buffer.get(&touched);
        thread::sleep(Duration::from_millis(10));
    }
    let last_get_done = Instant::now();
    // Never late: not found past `expire + tick` after the end of its set.
    while set_done.elapsed() < expire + TICK {
        thread::sleep(Duration::from_millis(5));
    }
    assert!(!buffer.contains_key(&peeked), "peek or contains_key extended the entry's life");
    assert_eq!(buffer.peek(&peeked), None);
    if last_get_done.elapsed() < expire {
        assert!(buffer.contains_key(&touched), "get extends life; contains_key sees it");
    }
    let hits = buffer.stats().hits;
    assert!(hits >= 1, "gets count as hits");
    let _ = buffer.peek(&touched);
    assert_eq!(buffer.stats().hits, hits, "peek is not a hit");
}

// ---------------------------------------------------------------------------------------
// clear, retain
// ---------------------------------------------------------------------------------------

pub fn clear_and_retain_leave_len_and_bytes_exact<B: Buffer + 'static>(
    make: impl Fn(Duration, Duration) -> Result<B, Error>,
) {
    let buffer = build(&make, TICK, LONG);
    let ids: Vec<BufferId> = (0..200).map(id).collect();
    let mut expected = 0;
    for (n, at) in ids.iter().enumerate() {
        buffer.set(*at, bytes(n + 1, n as u8));
        expected += n as u64 + 1;
    }
    assert_eq!(buffer.stats().bytes, expected);
    // Drop every buffer of the odd chunks.
    let mut asked = 0;
    buffer.retain(&mut |at, data| {
        asked += 1;
        assert_eq!(data.len() as i64, at.handle.0 + 1, "retain shows each id with its value");
        at.handle.0 % 2 == 0
    });
    assert_eq!(asked, 200, "retain asks once about each entry");
    let kept: u64 = (0..200).filter(|n| n % 2 == 0).map(|n| n + 1).sum();
    let stats = buffer.stats();
    assert_eq!((stats.entries, stats.bytes), (100, kept));
    assert!(buffer.contains_key(&ids[2]) && !buffer.contains_key(&ids[3]));
    buffer.clear();
    let stats = buffer.stats();
    assert_eq!((stats.entries, stats.bytes), (0, 0));
    assert!(buffer.is_empty());
    assert_eq!(stats.removals, 0, "clear and retain are not counted as removals");
    buffer.set(ids[7], bytes(3, 7));
    assert_eq!(buffer.get(&ids[7]), Some(bytes(3, 7)), "usable after clear");
}

/// While writers keep storing new ids, `clear` removes every entry present throughout it;
/// once the writers stop, one more `clear` leaves nothing.
pub fn clear_is_weakly_consistent_with_concurrent_writers<B: Buffer + 'static>(
    make: impl Fn(Duration, Duration) -> Result<B, Error>,
) {
    let buffer = build(&make, TICK, LONG);
    let before: Vec<BufferId> = (0..1000).map(id).collect();
    for at in &before {
        buffer.set(*at, bytes(16, 1));
    }
    let stop = AtomicBool::new(false);
    thread::scope(|s| {
        for writer in 0..2 {
            let (buffer, stop) = (&buffer, &stop);
            s.spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    buffer.set(id(10_000 + writer * 1_000_000 + n), bytes(16, 2));
                    n += 1;
                }
            });
        }
        thread::sleep(Duration::from_millis(5));
        buffer.clear();
        stop.store(true, Ordering::Relaxed);
    });
    for at in &before {
        assert!(!buffer.contains_key(at), "{at} was present throughout clear and stayed");
    }
    let stats = buffer.stats();
    assert_eq!(stats.bytes, 16 * stats.entries, "bytes match what is left: {stats:?}");
    buffer.clear();
    let stats = buffer.stats();
    assert_eq!((stats.entries, stats.bytes), (0, 0));
}

// ---------------------------------------------------------------------------------------
// stats
// ---------------------------------------------------------------------------------------

pub fn stats_count_what_happened<B: Buffer + 'static>(make: impl Fn(Duration, Duration) -> Result<B, Error>) {
    let buffer = build(&make, TICK, LONG);
    assert_eq!(buffer.stats(), Stats::default());
    let (a, b, c, d) = (id(1), id(2), id(3), id(4));
    buffer.set(a, bytes(100, 1)); // insert
    buffer.set(b, bytes(200, 2)); // insert
    buffer.set(a, bytes(50, 3)); // insert (a replacement)
    assert!(buffer.get(&a).is_some()); // hit
    assert!(buffer.get(&c).is_none()); // miss
    assert!(!buffer.set_if_absent(a, bytes(1, 0))); // refused: nothing
    assert!(buffer.set_if_absent(c, bytes(300, 4))); // insert
    assert_eq!(buffer.try_set(d, bytes(400, 5)), Ok(())); // insert (no budget)
    assert!(buffer.peek(&b).is_some() && buffer.contains_key(&b)); // nothing
    assert!(buffer.fetch_and_delete(&b).is_ok()); // removal
    buffer.delete(&c); // removal
    buffer.delete(&c); // nothing: already gone
    assert!(buffer.fetch_and_delete(&c).is_err()); // nothing
    let stats = buffer.stats();
    assert_eq!(
        (stats.hits, stats.misses, stats.inserts, stats.removals, stats.expirations),
        (1, 1, 5, 2, 0),
        "{stats:?}"
    );
    assert_eq!((stats.entries, stats.bytes), (2, 450), "a and d: {stats:?}");
    assert!(stats.to_string().contains("450 bytes"), "{stats}");
}

pub fn stats_count_expirations_once_each<B: Buffer + 'static>(make: impl Fn(Duration, Duration) -> Result<B, Error>) {
    let buffer = build(&make, TICK, EXPIRE);
    for n in 0..50 {
        buffer.set(id(n), bytes(10, 1));
    }
    wait_for("every entry expired, removed and its bytes given back", || {
        let stats = buffer.stats();
        (stats.expirations, stats.entries, stats.bytes) == (50, 0, 0)
    });
    assert_eq!(buffer.stats().removals, 0, "expiries are not removals");
}

/// Stats from several threads add up to what they did (each thread on its own ids).
pub fn stats_add_up_across_threads<B: Buffer + 'static>(make: impl Fn(Duration, Duration) -> Result<B, Error>) {
    const THREADS: i64 = 4;
    const IDS: i64 = 500;
    let buffer = build(&make, TICK, LONG);
    thread::scope(|s| {
        for thread in 0..THREADS {
            let buffer = &buffer;
            s.spawn(move || {
                for n in 0..IDS {
                    let at = id(thread * IDS + n);
                    buffer.set(at, bytes(3, 1));
                    assert!(buffer.get(&at).is_some());
                    assert!(buffer.get(&id(1_000_000 + n)).is_none());
                    if n % 2 == 0 {
                        assert!(buffer.fetch_and_delete(&at).is_ok());
                    }
                }
            });
        }
    });
    let stats = buffer.stats();
    let all = (THREADS * IDS) as u64;
    assert_eq!((stats.hits, stats.misses, stats.inserts, stats.removals), (all, all, all, all / 2), "{stats:?}");
    assert_eq!((stats.entries, stats.bytes), (all / 2, 3 * all / 2));
}
