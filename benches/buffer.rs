//! Criterion benchmarks: `DownloadBuffer` (lock-free) against `RwLockBuffer` (the reference
//! design), with an unsynchronized `HashMap` as the single-thread floor where it applies.
//! The get-hit, pipeline and large-payload groups also run the peers: papaya (a lock-free map
//! without expiry) and moka (time-to-idle), so that every target is a ratio in one run.
//!
//! Multi-thread cases run N threads that each do `iters / N` operations and report the wall
//! time, so the throughput Criterion prints is the aggregate. This machine has 2 cores: the
//! 4- and 8-thread cases measure oversubscription. Run with `cargo bench --bench buffer`;
//! the HTML report is in `target/criterion/report/index.html`.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, Throughput};
use download_buffer::{Buffer, BufferId, Bytes, DownloadBuffer, ManualClock, RwLockBuffer};
use download_buffer_tools::{key as id, Moka, Papaya, Store};

const THREADS: [usize; 4] = [1, 2, 4, 8];
/// The chunkserver's tick for the buffers under load. (With a 10 ms tick the reference
/// design's janitor rescans 1 M entries back to back and starves its writers for minutes,
/// even while filling for a benchmark that a filter skips: Criterion runs every group's
/// setup. The compare report, `tools/src/bin/compare`, measures that case.)
const TICK: Duration = Duration::from_secs(15);
/// The tick of the manual-mode janitor benchmarks: a wheel tick (tick/8) of 10 ms.
const JANITOR_TICK: Duration = Duration::from_millis(80);
const EXPIRE: Duration = Duration::from_secs(600);
const HOUR: Duration = Duration::from_secs(3600);
/// Ours and the peers, by name.
fn stores() -> Vec<(&'static str, Arc<dyn Store>)> {
    vec![
        ("lockfree", Arc::new(DownloadBuffer::new(TICK, EXPIRE).unwrap())),
        ("rwlock", Arc::new(RwLockBuffer::new(TICK, EXPIRE).unwrap())),
        ("papaya", Arc::new(Papaya::new())),
        ("moka", Arc::new(Moka::new(EXPIRE))),
    ]
}

/// The implementations under test, by name.
fn implementations() -> Vec<(&'static str, Arc<dyn Buffer>)> {
    vec![
        ("lockfree", Arc::new(DownloadBuffer::new(TICK, EXPIRE).unwrap())),
        ("rwlock", Arc::new(RwLockBuffer::new(TICK, EXPIRE).unwrap())),
    ]
}

fn fill(buffer: &(impl Store + ?Sized), resident: u64) {
    for n in 0..resident {
        buffer.set(id(n), Bytes::new());
    }
}

/// Runs `op(thread, i)` for `iters` operations split over `threads` threads; returns the wall time.
fn run_threads(threads: usize, iters: u64, op: Arc<dyn Fn(usize, u64) + Send + Sync>) -> Duration {
    let per_thread = iters.div_ceil(threads as u64);
    let barrier = Arc::new(Barrier::new(threads + 1));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let barrier = Arc::clone(&barrier);
            let op = Arc::clone(&op);
            std::thread::spawn(move || {
                barrier.wait();
                for i in 0..per_thread {
                    op(t, i);
                }
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    for handle in handles {
        handle.join().unwrap();
    }
    start.elapsed()
}

/// Benchmarks `op(buffer, thread, i)` on `buffer` at every thread count in [`THREADS`].
fn bench_threads<M, B, F>(group: &mut BenchmarkGroup<'_, M>, name: &str, buffer: &Arc<B>, op: F)
where
    M: criterion::measurement::Measurement<Value = Duration>,
    B: ?Sized + Send + Sync + 'static,
    F: Fn(&B, usize, u64) + Copy + Send + Sync + 'static,
{
    for threads in THREADS {
        group.bench_function(BenchmarkId::new(name, threads), |b| {
            b.iter_custom(|iters| {
                let buffer = Arc::clone(buffer);
                run_threads(threads, iters, Arc::new(move |t, i| op(&*buffer, t, i)))
            })
        });
    }
}

/// A cheap per-thread pseudo-random sequence over `0..resident`.
fn pick(thread: usize, i: u64, resident: u64) -> u64 {
    let mut x = (thread as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ i.wrapping_mul(0xD1B5_4A32_D192_ED03);
    x ^= x >> 31;
    x % resident
}

fn get_hit(c: &mut Criterion) {
    for resident in [10_000u64, 1_000_000] {
        let mut group = c.benchmark_group(format!("get_hit/{resident}"));
        group.throughput(Throughput::Elements(1)).sample_size(10).measurement_time(Duration::from_secs(2));
        let mut floor: HashMap<BufferId, Bytes, ahash::RandomState> = HashMap::default();
        for n in 0..resident {
            floor.insert(id(n), Bytes::new());
        }
        group.bench_function(BenchmarkId::new("hashmap-floor", 1), |b| {
            let mut i = 0;
            b.iter(|| {
                i += 1;
                black_box(floor.get(&id(pick(0, i, resident))).cloned())
            })
        });
        for (name, buffer) in stores() {
            fill(&*buffer, resident);
            bench_threads(&mut group, name, &buffer, move |buffer: &(dyn Store + 'static), t, i| {
                black_box(buffer.get(&id(pick(t, i, resident))));
            });
        }
        group.finish();
    }
}

/// One Hercules write on fresh ids: set, get, get, fetch_and_delete (4 operations).
fn pipeline(c: &mut Criterion) {
    let mut group = c.benchmark_group("pipeline");
    group.throughput(Throughput::Elements(1)).sample_size(10).measurement_time(Duration::from_secs(2));
    let payload = Bytes::from_static(&[7u8; 64]);
    {
        let mut floor: HashMap<BufferId, Bytes, ahash::RandomState> = HashMap::default();
        let payload = payload.clone();
        let mut n = 0u64;
        group.bench_function(BenchmarkId::new("hashmap-floor", 1), |b| {
            b.iter(|| {
                n += 1;
                let key = id(n);
                floor.insert(key, payload.clone());
                black_box(floor.get(&key).cloned());
                black_box(floor.get(&key).cloned());
                black_box(floor.remove(&key))
            })
        });
    }
    for (name, buffer) in stores() {
        for threads in THREADS {
            let payload = payload.clone();
            group.bench_function(BenchmarkId::new(name, threads), |b| {
                let buffer = Arc::clone(&buffer);
                let payload = payload.clone();
                let round = Arc::new(std::sync::atomic::AtomicU64::new(0));
                b.iter_custom(|iters| {
                    let buffer = Arc::clone(&buffer);
                    let payload = payload.clone();
                    let base = round.fetch_add(1, std::sync::atomic::Ordering::Relaxed) << 40;
                    run_threads(
                        threads,
                        iters,
                        Arc::new(move |t, i| {
                            let key = id(base | (t as u64) << 32 | i);
                            buffer.set(key, payload.clone());
                            black_box(buffer.get(&key));
                            black_box(buffer.get(&key));
                            black_box(buffer.fetch_and_delete(&key));
                        }),
                    )
                })
            });
        }
    }
    group.finish();
}

/// The pipeline on one thread, the operators' features used: a byte budget (`try_set`), an
/// expiry listener and `set_if_absent` as the forward step, against the plain calls on a
/// buffer without them. (Unused, the features cost nothing: compare `pipeline/lockfree`
/// across commits, docs/performance.md.)
fn features(c: &mut Criterion) {
    let mut group = c.benchmark_group("features_pipeline");
    group.throughput(Throughput::Elements(1)).sample_size(10).measurement_time(Duration::from_secs(2));
    let payload = Bytes::from_static(&[7u8; 64]);
    let plain = DownloadBuffer::new(JANITOR_TICK, EXPIRE).expect("valid durations");
    let featured = DownloadBuffer::builder(JANITOR_TICK, EXPIRE)
        .max_bytes(1 << 30)
        .on_expire(|_, data| {
            black_box(data.len());
        })
        .build()
        .expect("valid durations");
    let mut n = 0u64;
    group.bench_function("plain: set, get, get, fetch_and_delete", |b| {
        b.iter(|| {
            n += 1;
            let key = id(n);
            plain.set(key, payload.clone());
            get_get_consume(&plain, key)
        })
    });
    group.bench_function("budget + listener: try_set, get, get, fetch_and_delete", |b| {
        b.iter(|| {
            n += 1;
            let key = id(n);
            featured.try_set(key, payload.clone()).expect("within the budget");
            get_get_consume(&featured, key)
        })
    });
    group.bench_function("budget + listener: set_if_absent, get, get, fetch_and_delete", |b| {
        b.iter(|| {
            n += 1;
            let key = id(n);
            assert!(featured.set_if_absent(key, payload.clone()));
            get_get_consume(&featured, key)
        })
    });
    group.finish();
    for resident in [10_000u64, 1_000_000] {
        let mut group = c.benchmark_group(format!("stats_get_hit/{resident}"));
        group.throughput(Throughput::Elements(1)).sample_size(10).measurement_time(Duration::from_secs(2));
        for counting in [true, false] {
            let buffer =
                DownloadBuffer::builder(JANITOR_TICK, EXPIRE).count_stats(counting).build().expect("valid durations");
            fill(&buffer, resident);
            let mut i = 0;
            let name = if counting { "counting" } else { "not counting" };
            group.bench_function(name, |b| {
                b.iter(|| {
                    i += 1;
                    black_box(buffer.get(&id(pick(0, i, resident))))
                })
            });
        }
        group.finish();
    }
}

/// The rest of a pipeline round after the store: two forwards' gets and the write.
fn get_get_consume(buffer: &DownloadBuffer, key: BufferId) -> Option<Bytes> {
    black_box(buffer.get(&key));
    black_box(buffer.get(&key));
    buffer.fetch_and_delete(&key).ok()
}

/// 90% get hits, 10% set (replacing), over 100 000 resident entries.
fn mix_90_10(c: &mut Criterion) {
    const RESIDENT: u64 = 100_000;
    let mut group = c.benchmark_group("mix_90_10");
    group.throughput(Throughput::Elements(1)).sample_size(10).measurement_time(Duration::from_secs(2));
    for (name, buffer) in implementations() {
        fill(&*buffer, RESIDENT);
        bench_threads(&mut group, name, &buffer, |buffer, t, i| {
            let key = id(pick(t, i, RESIDENT));
            if i % 10 == 0 {
                buffer.set(key, Bytes::new());
            } else {
                black_box(buffer.get(&key));
            }
        });
    }
    group.finish();
}

/// A janitor run with 1 M resident entries and nothing due: the lock-free janitor's one
/// wheel tick against the reference design's scan of every entry. (The reference buffer's
/// own janitor thread ticks hourly here, so that only the measured sweeps run.)
fn janitor_tick(c: &mut Criterion) {
    let mut group = c.benchmark_group("janitor_tick_1M_resident_nothing_due");
    group.sample_size(20);
    {
        let clock = ManualClock::new();
        let buffer = DownloadBuffer::builder(JANITOR_TICK, EXPIRE).clock(clock.clone()).manual().build().unwrap();
        fill(&buffer, 1_000_000);
        buffer.run_janitor();
        group.bench_function("lockfree", |b| {
            b.iter(|| {
                clock.advance(JANITOR_TICK / 8); // one wheel tick
                black_box(buffer.run_janitor())
            })
        });
    }
    {
        let buffer = RwLockBuffer::new(HOUR, EXPIRE).unwrap();
        fill(&buffer, 1_000_000);
        group.bench_function("rwlock", |b| b.iter(|| assert_eq!(buffer.run_janitor(), 0)));
    }
    group.finish();
}

/// Expiring 1 M entries, per entry: the lock-free janitor (manual mode, one run) against
/// one sweep of the reference design.
fn expire_1m(c: &mut Criterion) {
    const N: u64 = 1_000_000;
    let mut group = c.benchmark_group("expire_1M");
    // Each iteration fills 1 M entries first (not timed): keep the iterations few.
    group.sample_size(10).measurement_time(Duration::from_secs(2)).throughput(Throughput::Elements(N));
    group.bench_function("lockfree", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let clock = ManualClock::new();
                let buffer = DownloadBuffer::builder(JANITOR_TICK, Duration::from_secs(1))
                    .clock(clock.clone())
                    .manual()
                    .janitor_budget(usize::MAX)
                    .build()
                    .unwrap();
                fill(&buffer, N);
                buffer.run_janitor();
                clock.advance(Duration::from_secs(2));
                let start = Instant::now();
                while buffer.run_janitor().more_due {}
                total += start.elapsed();
                assert!(buffer.is_empty());
            }
            total
        })
    });
    group.bench_function("rwlock", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let expire = Duration::from_millis(1);
                let buffer = RwLockBuffer::new(HOUR, expire).unwrap();
                fill(&buffer, N);
                std::thread::sleep(expire * 2);
                let start = Instant::now();
                assert_eq!(buffer.run_janitor(), N as usize);
                total += start.elapsed();
            }
            total
        })
    });
    group.finish();
}

fn len(c: &mut Criterion) {
    let mut group = c.benchmark_group("len_1M_resident");
    for (name, buffer) in implementations() {
        fill(&*buffer, 1_000_000);
        group.bench_function(name, |b| b.iter(|| black_box(buffer.len())));
    }
    group.finish();
}

/// The chunkserver's real case, on 4 threads: each sets a fresh `size`-byte value under a
/// new id and takes it back with `fetch_and_delete` (then drops it). Throughput in rounds.
fn large_values(c: &mut Criterion) {
    const THREADS: usize = 4;
    for size in [16 << 10, 64 << 10, 1 << 20] {
        let mut group = c.benchmark_group(format!("consume_{}KiB", size >> 10));
        group.throughput(Throughput::Elements(1)).sample_size(10).measurement_time(Duration::from_secs(2));
        for (name, buffer) in stores() {
            let round = Arc::new(std::sync::atomic::AtomicU64::new(0));
            group.bench_function(BenchmarkId::new(name, THREADS), |b| {
                b.iter_custom(|iters| {
                    let buffer = Arc::clone(&buffer);
                    let base = round.fetch_add(1, std::sync::atomic::Ordering::Relaxed) << 40;
                    run_threads(
                        THREADS,
                        iters,
                        Arc::new(move |t, i| {
                            let key = id(base | (t as u64) << 32 | i);
                            buffer.set(key, Bytes::from(vec![t as u8 | 1; size]));
                            let data = buffer.fetch_and_delete(&key);
                            assert_eq!(data.map(|data| data.len()), Some(size));
                        }),
                    )
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, get_hit, pipeline, large_values, features, mix_90_10, janitor_tick, expire_1m, len);
criterion_main!(benches);
