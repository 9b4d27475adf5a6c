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

use std::sync::Arc;
use std::time::Duration;

use download_buffer::{Buffer, Bytes, DownloadBuffer, RwLockBuffer};
use download_buffer_tools::{key, measure, parse_seconds, pick, pipeline_round, value, Failures};

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

    /// One operation on `buffer` for measuring thread `thread`, call `i`; returns the
    /// buffer calls it made. A miss is counted in `failures`.
    fn op(self, buffer: &dyn Buffer, thread: u64, i: u64, payload: &Bytes, failures: &Failures) -> u64 {
        match self {
            Workload::GetHit => {
                if std::hint::black_box(buffer.get(&key(pick(thread, i, 1_000_000)))).is_none() {
                    failures.add();
                }
                1
            }
            Workload::Pipeline => pipeline_round(buffer, key((thread + 1) << 40 | i), payload, failures),
            Workload::Mix => {
                let key = key(pick(thread, i, 100_000));
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

fn fail(message: &str) -> ! {
    eprintln!("scaling: {message}");
    std::process::exit(1);
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
            let failures = Failures::default();
            let payload = Bytes::from_static(&[7u8; 64]);
            let rate = |buffer: &dyn Buffer| {
                measure(t, seconds, |thread, i| workload.op(buffer, thread, i, &payload, &failures))
                    .unwrap_or_else(|message| fail(&message))
            };
            let (a, b) = (rate(&*lockfree), rate(&*rwlock));
            let mut problems = Vec::new();
            failures.report(&mut problems, "lockfree or rwlock", workload.name(), "calls missed");
            if let Some(problem) = problems.first() {
                fail(problem);
            }
            let base = *first.get_or_insert(a);
            println!("| {t} | {:.2} M | {:.2} M | {:.1}x | {:.2}x |", a / 1e6, b / 1e6, a / b, a / base);
        }
        println!();
    }
}
