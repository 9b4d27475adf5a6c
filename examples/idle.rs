//! What idle buffers cost: threads, CPU and memory per buffer, and how long dropping them
//! takes, for N `DownloadBuffer`s (and `RwLockBuffer`s) holding 10 entries each and
//! doing nothing. Prints a Markdown table.
//!
//! ```text
//! cargo run --release --example idle -- [--buffers 10,1000,10000] [--seconds 1] [--tick-ms 1000] [--rwlock]
//! ```
//!
//! CPU is the process's user + system time from `/proc/self/stat` over the idle interval
//! (Linux only), as a share of one core; memory is what the buffers allocated, counted by
//! this example's global allocator, divided by N.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use download_buffer::{Buffer, BufferId, Bytes, ChunkHandle, DownloadBuffer, RwLockBuffer};

/// Counts the bytes allocated and not yet freed.
struct Counting;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded from the caller.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded from the caller.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// User + system CPU time of this process, from `/proc/self/stat` (clock ticks of 10 ms).
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// This process's thread count, from `/proc/self/status`.
fn threads() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|line| line.strip_prefix("Threads:")).and_then(|n| n.trim().parse().ok())
}

struct Args {
    buffers: Vec<usize>,
    seconds: f64,
    tick: Duration,
    rwlock: bool,
}

fn args() -> Args {
    let mut args = Args { buffers: vec![10, 1_000, 10_000], seconds: 1.0, tick: Duration::from_secs(1), rwlock: false };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--buffers" => args.buffers = value().split(',').map(|n| n.parse().expect("--buffers: numbers")).collect(),
            "--seconds" => args.seconds = value().parse().expect("--seconds: a number"),
            "--tick-ms" => args.tick = Duration::from_millis(value().parse().expect("--tick-ms: a number")),
            "--rwlock" => args.rwlock = true,
            other => panic!("unknown argument {other}"),
        }
    }
    args
}

fn main() {
    let args = args();
    let expire = Duration::from_secs(600);
    println!("idle buffers, 10 entries each, tick {:?}, expire {expire:?}, {} s idle", args.tick, args.seconds);
    println!();
    println!("| design | buffers | threads added | idle CPU (% of a core) | memory per buffer | drop all |");
    println!("|---|---:|---:|---:|---:|---:|");
    let designs: &[&str] = if args.rwlock { &["DownloadBuffer", "RwLockBuffer"] } else { &["DownloadBuffer"] };
    for &design in designs {
        for &n in &args.buffers {
            let threads_before = threads().unwrap_or(0);
            let bytes_before = LIVE_BYTES.load(Ordering::Relaxed);
            let buffers: Vec<Box<dyn Buffer>> = (0..n)
                .map(|_| -> Box<dyn Buffer> {
                    if design == "DownloadBuffer" {
                        Box::new(DownloadBuffer::new(args.tick, expire).expect("valid settings"))
                    } else {
                        Box::new(RwLockBuffer::new(args.tick, expire).expect("valid settings"))
                    }
                })
                .collect();
            let payload = Bytes::from_static(&[7u8; 64]);
            for buffer in &buffers {
                for k in 0..10 {
                    buffer.set(BufferId { handle: ChunkHandle(k), timestamp: k }, payload.clone());
                }
            }
            // Let the janitors take what the sets handed them, then measure idleness.
            std::thread::sleep(Duration::from_millis(300));
            let bytes = LIVE_BYTES.load(Ordering::Relaxed) - bytes_before;
            let threads_added = threads().unwrap_or(0).saturating_sub(threads_before);
            let cpu_before = cpu_time();
            let wall = Instant::now();
            std::thread::sleep(Duration::from_secs_f64(args.seconds));
            let cpu = match (cpu_before, cpu_time()) {
                (Some(before), Some(after)) => {
                    format!("{:.1}", 100.0 * (after - before).as_secs_f64() / wall.elapsed().as_secs_f64())
                }
                _ => "n/a".to_string(),
            };
            let dropping = Instant::now();
            drop(buffers);
            let dropped = dropping.elapsed();
            println!(
                "| {design} | {n} | {threads_added} | {cpu} | {:.1} KiB | {:.3} s |",
                bytes as f64 / n as f64 / 1024.0,
                dropped.as_secs_f64()
            );
        }
    }
}
