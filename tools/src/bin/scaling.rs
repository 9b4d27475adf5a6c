//! Multi-thread throughput of `DownloadBuffer` (lock-free) against `RwLockBuffer` (the
//! reference design), as a Markdown table: get hits over 1 M resident entries, the pipeline
//! (set, get, get, fetch_and_delete on fresh ids), and a 90/10 get/set mix over 100 k entries.
//! Each point runs for a fixed time with the janitor ticking every 10 ms.
//!
//! ```text
//! cargo run --release -p download-buffer-tools --bin scaling -- [--threads 1,2,4,8,16] [--seconds 1]
//! ```
//!
//! On a 2-core machine, points beyond 2 threads measure oversubscription.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use download_buffer::{Buffer, Bytes, DownloadBuffer, RwLockBuffer};
use download_buffer_tools::{key, parse_seconds, pick, value};

const TICK: Duration = Duration::from_millis(10);
const EXPIRE: Duration = Duration::from_secs(600);

#[derive(Clone, Copy)]
enum Workload {
    GetHit,
    Pipeline,
    Mix,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::GetHit => "get hit, 1 M resident",
            Workload::Pipeline => "pipeline (set, get, get, fetch_and_delete)",
            Workload::Mix => "90/10 get/set, 100 k resident",
        }
    }

    fn resident(self) -> u64 {
        match self {
            Workload::GetHit => 1_000_000,
            Workload::Pipeline => 0,
            Workload::Mix => 100_000,
        }
    }

    /// One operation (a pipeline round counts as one); returns the operations it made.
    fn op(self, buffer: &dyn Buffer, thread: u64, i: u64, payload: &Bytes) -> u64 {
        match self {
            Workload::GetHit => {
                std::hint::black_box(buffer.get(&key(pick(thread, i, 1_000_000))));
                1
            }
            Workload::Pipeline => {
                let key = download_buffer_tools::key((thread + 1) << 40 | i);
                buffer.set(key, payload.clone());
                std::hint::black_box(buffer.get(&key));
                std::hint::black_box(buffer.get(&key));
                std::hint::black_box(buffer.fetch_and_delete(&key).ok());
                4
            }
            Workload::Mix => {
                let key = download_buffer_tools::key(pick(thread, i, 100_000));
                if i % 10 == 0 {
                    buffer.set(key, payload.clone());
                } else {
                    std::hint::black_box(buffer.get(&key));
                }
                1
            }
        }
    }
}

/// Runs `workload` on `threads` threads for `seconds`; returns buffer operations per second.
fn measure(buffer: Arc<dyn Buffer>, workload: Workload, threads: usize, seconds: f64) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let total = Arc::new(AtomicU64::new(0));
    let barrier = Arc::new(Barrier::new(threads + 1));
    let handles: Vec<_> = (0..threads as u64)
        .map(|thread| {
            let (buffer, stop, total, barrier) =
                (Arc::clone(&buffer), Arc::clone(&stop), Arc::clone(&total), Arc::clone(&barrier));
            std::thread::spawn(move || {
                let payload = Bytes::from_static(&[7u8; 64]);
                barrier.wait();
                let (mut ops, mut i) = (0u64, 0u64);
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..256 {
                        ops += workload.op(&*buffer, thread, i, &payload);
                        i += 1;
                    }
                }
                total.fetch_add(ops, Ordering::Relaxed);
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(seconds));
    stop.store(true, Ordering::Relaxed);
    for handle in handles {
        handle.join().unwrap();
    }
    total.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

fn parse_args() -> Result<(Vec<usize>, f64), String> {
    use lexopt::prelude::*;
    let (mut threads, mut seconds) = (vec![1, 2, 4, 8], 1.0);
    let mut parser = lexopt::Parser::from_env();
    while let Some(arg) = parser.next().map_err(|error| error.to_string())? {
        match arg {
            Long("threads") => {
                let list = value(&mut parser, "--threads")?;
                threads = list
                    .split(',')
                    .map(|t| t.trim().parse::<usize>().ok().filter(|&t| (1..=1024).contains(&t)))
                    .collect::<Option<_>>()
                    .ok_or_else(|| format!("--threads: expected a list like 1,2,4 (1 to 1024), got '{list}'"))?
            }
            Long("seconds") => seconds = parse_seconds("--seconds", &value(&mut parser, "--seconds")?, 3600.0)?,
            other => return Err(format!("{} (flags: --threads LIST, --seconds S)", other.unexpected())),
        }
    }
    Ok((threads, seconds))
}

fn main() {
    let (threads, seconds) = match parse_args() {
        Ok(parsed) => parsed,
        Err(message) => {
            eprintln!("scaling: {message}");
            std::process::exit(2);
        }
    };
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("# Throughput scaling ({cpus} CPUs; {seconds} s per point; janitor tick 10 ms, expire 600 s)\n");
    for workload in [Workload::GetHit, Workload::Pipeline, Workload::Mix] {
        println!("## {}\n", workload.name());
        println!("| threads | lockfree ops/s | rwlock ops/s | ratio | lockfree vs its 1-thread |");
        println!("|---:|---:|---:|---:|---:|");
        let lockfree: Arc<dyn Buffer> = Arc::new(DownloadBuffer::new(TICK, EXPIRE).unwrap());
        let rwlock: Arc<dyn Buffer> = Arc::new(RwLockBuffer::new(TICK, EXPIRE).unwrap());
        for n in 0..workload.resident() {
            lockfree.set(key(n), Bytes::new());
            rwlock.set(key(n), Bytes::new());
        }
        let mut first = None;
        for &t in &threads {
            eprintln!("  {} x{t}...", workload.name());
            let a = measure(Arc::clone(&lockfree), workload, t, seconds);
            let b = measure(Arc::clone(&rwlock), workload, t, seconds);
            let base = *first.get_or_insert(a);
            println!("| {t} | {:.2} M | {:.2} M | {:.1}x | {:.2}x |", a / 1e6, b / 1e6, a / b, a / base);
        }
        println!();
    }
}
