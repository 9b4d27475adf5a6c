//! Large payloads, the chunkserver's real case: `DownloadBuffer` against `RwLockBuffer` with
//! fresh values of 64 B to 1 MiB, as Markdown tables.
//!
//! - **consume**: each thread `set`s a fresh value under its own new id and
//!   `fetch_and_delete`s it (then drops it), as a replica does with a pushed chunk.
//! - **replace**: each thread `set`s fresh values over its own 16 ids in turn, so every set
//!   replaces (and frees) the value before.
//! - **mass expiry** (the engine alone, manual mode): fill, move the clock past `expire`, run
//!   the janitor until empty; the cost per entry, against the 64-byte cost, beside what
//!   dropping the same values directly costs (the allocator's share).
//! - **the lease's cost on a hit**: get hits over 1 M resident entries of a map whose values
//!   are all leased against one whose values are not (`Builder::eager_release`).
//!
//! ```text
//! cargo run --release -p download-buffer-tools --bin payloads -- [--threads 4] [--seconds 1]
//! ```
//!
//! Values are filled with a thread's byte (a fresh allocation written through, not a zeroed
//! page the allocator may hand out untouched), inside the measured loop: at 1 MiB the fill
//! dominates and pulls every ratio toward 1 (the "making the values alone" column is that
//! floor). On a 2-core machine, 4 threads oversubscribe.

use std::time::{Duration, Instant};

use download_buffer::{Buffer, BufferId, Builder, Bytes, DownloadBuffer, ExpiringMap, ManualClock, RwLockBuffer};
use download_buffer_tools::{key, measure, parse_count, parse_seconds, pick, value, Failures};

const TICK: Duration = Duration::from_millis(10);
const EXPIRE: Duration = Duration::from_secs(600);
const SIZES: [usize; 4] = [64, 16 * 1024, 64 * 1024, 1024 * 1024];
/// Ids each thread cycles through in the replace workload.
const REPLACED_IDS: u64 = 16;
/// Most payload bytes resident at once in the mass expiry (entries shrink for large sizes).
const EXPIRY_BYTES: usize = 2 << 30;
/// Most entries in the mass expiry.
const EXPIRY_ENTRIES: usize = 100_000;
/// Alternating rounds per throughput point (the machine's noise is in the range shown).
const ROUNDS: usize = 3;

/// Sorts `values` and returns the middle one.
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[derive(Clone, Copy)]
enum Workload {
    Consume,
    Replace,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::Consume => "consume: set a fresh value, fetch_and_delete it, drop it",
            Workload::Replace => "replace: set fresh values over 16 ids per thread",
        }
    }

    /// One round for thread `thread`, call `i`; returns the buffer calls made.
    fn op(self, buffer: &dyn Buffer, size: usize, thread: u64, i: u64, failures: &Failures) -> u64 {
        let payload = Bytes::from(vec![thread as u8 | 1; size]);
        match self {
            Workload::Consume => {
                let id = key((thread + 1) << 40 | i);
                buffer.set(id, payload);
                match buffer.fetch_and_delete(&id) {
                    Ok(data) if data.len() == size => drop(data),
                    _ => failures.add(),
                }
                2
            }
            Workload::Replace => {
                buffer.set(key(((thread + 1) << 40) | (i % REPLACED_IDS)), payload);
                1
            }
        }
    }
}

fn parse_args() -> Result<(usize, f64), String> {
    use lexopt::prelude::*;
    let (mut threads, mut seconds) = (4, 1.0);
    let mut parser = lexopt::Parser::from_env();
    while let Some(arg) = parser.next().map_err(|error| error.to_string())? {
        match arg {
            Long("threads") => threads = parse_count("--threads", &value(&mut parser, "--threads")?, 1024)? as usize,
            Long("seconds") => seconds = parse_seconds("--seconds", &value(&mut parser, "--seconds")?, 3600.0)?,
            other => return Err(format!("{} (flags: --threads N, --seconds S)", other.unexpected())),
        }
    }
    Ok((threads, seconds))
}

fn fail(message: &str) -> ! {
    eprintln!("payloads: {message}");
    std::process::exit(1);
}

/// Nanoseconds per entry the janitor takes to expire a buffer full of `size`-byte values.
fn mass_expiry(size: usize) -> (usize, f64) {
    let entries = (EXPIRY_BYTES / size).min(EXPIRY_ENTRIES);
    let clock = ManualClock::new();
    let buffer = DownloadBuffer::builder(TICK, EXPIRE)
        .clock(clock.clone())
        .manual()
        .build()
        .unwrap_or_else(|e| fail(&e.to_string()));
    for n in 0..entries as u64 {
        buffer.set(key(n), Bytes::from(vec![7u8; size]));
    }
    buffer.run_janitor(); // files them
    clock.advance(EXPIRE + TICK * 2);
    let start = Instant::now();
    while !buffer.is_empty() {
        buffer.run_janitor();
    }
    // The runs after the last removal free what is left of the removed entries.
    buffer.run_janitor();
    (entries, start.elapsed().as_nanos() as f64 / entries as f64)
}

/// Nanoseconds per value to drop as many `size`-byte values as [`mass_expiry`] holds,
/// directly: the allocator's share of the expiry's cost.
fn direct_drops(size: usize) -> f64 {
    let entries = (EXPIRY_BYTES / size).min(EXPIRY_ENTRIES);
    let values: Vec<Bytes> = (0..entries).map(|_| Bytes::from(vec![7u8; size])).collect();
    let start = Instant::now();
    drop(values);
    start.elapsed().as_nanos() as f64 / entries as f64
}

/// Get hits per second over `resident` empty values (or, `hot`, over 16 of them every thread
/// reads), on `threads` threads, with every value leased or none. The tick is the
/// chunkserver's 15 s, so that a hit writes nothing to the entry but the lease's two RMWs (a
/// touch moves the deadline only once per wheel tick, 1.875 s).
fn leased_gets(leased: bool, resident: u64, hot: bool, threads: usize, seconds: f64) -> f64 {
    const TICK: Duration = Duration::from_secs(15);
    let picked = if hot { 16 } else { resident };
    let is_large: fn(&Bytes) -> bool = if leased { |_| true } else { |_| false };
    let map: ExpiringMap<BufferId, Bytes> =
        Builder::new(TICK, EXPIRE).eager_release(is_large).build().unwrap_or_else(|e| fail(&e.to_string()));
    for n in 0..resident {
        map.set(key(n), Bytes::new());
    }
    let failures = Failures::default();
    let rate = measure(threads, seconds, |thread, i| {
        if std::hint::black_box(map.get(&key(pick(thread, i, picked)))).is_none() {
            failures.add();
        }
        1
    })
    .unwrap_or_else(|message| fail(&message));
    let mut problems = Vec::new();
    failures.report(&mut problems, "map", "get hit", "misses");
    if let Some(problem) = problems.first() {
        fail(problem);
    }
    rate
}

fn main() {
    let (threads, seconds) = parse_args().unwrap_or_else(|message| {
        eprintln!("payloads: {message}");
        std::process::exit(2);
    });
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "# Large payloads ({cpus} CPUs, {threads} threads, {seconds} s per round, {ROUNDS} alternating rounds per point; janitor tick 10 ms)\n"
    );
    for workload in [Workload::Consume, Workload::Replace] {
        println!("## {}\n", workload.name());
        println!(
            "| value size | lockfree rounds/s (median) | rwlock rounds/s (median) | ratio: median (range) | making the values alone, /s |"
        );
        println!("|---:|---:|---:|---:|---:|");
        for size in SIZES {
            eprintln!("  {} {size} B...", workload.name());
            let failures = Failures::default();
            let rate = |buffer: &dyn Buffer| {
                let calls = measure(threads, seconds, |thread, i| workload.op(buffer, size, thread, i, &failures))
                    .unwrap_or_else(|message| fail(&message));
                let per_round = match workload {
                    Workload::Consume => 2.0,
                    Workload::Replace => 1.0,
                };
                calls / per_round
            };
            let (mut ours, mut theirs, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
            for round in 0..ROUNDS {
                let lockfree = || {
                    let buffer = DownloadBuffer::new(TICK, EXPIRE).unwrap_or_else(|e| fail(&e.to_string()));
                    rate(&buffer)
                };
                let rwlock = || {
                    let buffer = RwLockBuffer::new(TICK, EXPIRE).unwrap_or_else(|e| fail(&e.to_string()));
                    rate(&buffer)
                };
                // The order alternates, so that neither always runs on a warmer machine.
                let (a, b) = if round % 2 == 0 {
                    let a = lockfree();
                    (a, rwlock())
                } else {
                    let b = rwlock();
                    (lockfree(), b)
                };
                ours.push(a);
                theirs.push(b);
                ratios.push(a / b);
            }
            let mut problems = Vec::new();
            failures.report(&mut problems, "lockfree or rwlock", workload.name(), "rounds lost their value");
            if let Some(problem) = problems.first() {
                fail(problem);
            }
            let (a, b, r) = (median(&mut ours), median(&mut theirs), median(&mut ratios));
            let (low, high) = (ratios[0], ratios[ratios.len() - 1]);
            let floor = measure(threads, seconds, |thread, _| {
                drop(std::hint::black_box(Bytes::from(vec![thread as u8 | 1; size])));
                1
            })
            .unwrap_or_else(|message| fail(&message));
            println!(
                "| {size} B | {:.0} k | {:.0} k | {r:.2}x ({low:.2}–{high:.2}) | {:.0} k |",
                a / 1e3,
                b / 1e3,
                floor / 1e3
            );
        }
        println!();
    }
    println!("## mass expiry (lockfree, manual mode: one janitor run after another until empty)\n");
    println!("| value size | entries | ns per entry | vs 64 B | dropping the values directly, ns each |");
    println!("|---:|---:|---:|---:|---:|");
    let mut small = None;
    for size in SIZES {
        eprintln!("  mass expiry {size} B...");
        let (entries, ns) = mass_expiry(size);
        let floor = direct_drops(size);
        let base = *small.get_or_insert(ns);
        println!("| {size} B | {entries} | {ns:.0} | {:.2}x | {floor:.0} |", ns / base);
    }
    println!(
        "\n## the lease's cost on a hit (get hits over empty values, tick 15 s; {ROUNDS} rounds, the order alternating)\n"
    );
    println!("| keys read | threads | unleased gets/s | leased gets/s | leased / unleased |");
    println!("|---|---:|---:|---:|---:|");
    for (resident, hot, t) in
        [(10_000, false, 1), (1_000_000, false, 1), (1_000_000, false, threads), (1_000_000, true, threads)]
    {
        let mut ratios = Vec::new();
        let (mut plain, mut leased) = (Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            eprintln!("  leased gets x{t} ({resident} resident, hot {hot})...");
            let (a, b) = if round % 2 == 0 {
                let a = leased_gets(false, resident, hot, t, seconds);
                (a, leased_gets(true, resident, hot, t, seconds))
            } else {
                let b = leased_gets(true, resident, hot, t, seconds);
                (leased_gets(false, resident, hot, t, seconds), b)
            };
            ratios.push(b / a);
            plain.push(a);
            leased.push(b);
        }
        let range = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            (v[0], v[v.len() - 1])
        };
        let ((p0, p1), (l0, l1), (r0, r1)) = (range(&mut plain), range(&mut leased), range(&mut ratios));
        let keys = match (hot, resident) {
            (true, _) => "16 hot keys of 1 M, every thread".to_string(),
            (false, 10_000) => "10 k, random".to_string(),
            (false, _) => "1 M, random".to_string(),
        };
        println!(
            "| {keys} | {t} | {:.2}–{:.2} M | {:.2}–{:.2} M | {r0:.2}–{r1:.2}x |",
            p0 / 1e6,
            p1 / 1e6,
            l0 / 1e6,
            l1 / 1e6
        );
    }
}
