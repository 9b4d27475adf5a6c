//! A simulated Hercules pipelined write, run against every buffer implementation side by side.
//!
//! Hercules is a GFS-style file system. A client that writes a chunk first *pushes* the bytes
//! along a chain of replicas (the primary, then each secondary); every replica stores them in
//! its download buffer under a [`BufferId`] and forwards them to the next. Then the client asks
//! the primary to write: the primary takes the bytes out of its buffer, applies the mutation,
//! and tells each secondary to apply the same mutation from *its* buffer.
//!
//! Here, in one process:
//!
//! - a **replica** is a [`Box<dyn Buffer>`] (its download buffer) plus a chunk store that
//!   maps each chunk handle to the checksum of the bytes last "written" to that chunk;
//! - each **client thread** takes the next chunk number, makes fresh pseudo-random bytes for
//!   it and their checksum, and makes the id with [`BufferId::new`];
//! - the **push** runs each replica's forward handler in chain order. Like the chunkserver's,
//!   it is "get; if absent, set and forward" as two separate calls. The bytes travel as
//!   [`Bytes`] clones: a reference-count bump per hop, never a copy;
//! - the **write** has the primary, then each secondary, take the bytes out of its own buffer
//!   with [`fetch_and_delete`](Buffer::fetch_and_delete), check them (the very bytes the client
//!   pushed, same address and length, with the client's checksum), and record the checksum
//!   in its chunk store (the stand-in for writing to disk).
//!
//! At the end every buffer must be empty and every replica must hold the client's checksum for
//! every chunk; the exit code is 1 otherwise, 2 for bad flags. Buffers use the chunkserver's
//! tick (15 s) and expire (60 s) unless told otherwise.
//!
//! Implementations are listed in [`IMPLEMENTATIONS`]; by default each runs in turn on the same
//! workload and a final table compares their throughput. Run with `--help` for the flags.
//!
//! `--compare` runs instead the compare report of the tracker's issue 5 ([`compare`]): fixed
//! micro-workloads (get hits over 1 M resident entries, the pipeline's four calls, a 90/10
//! mix), get latency with a busy janitor, and heap use, on lockfree and rwlock in one process,
//! as one Markdown table with each target's verdict plus an SVG chart ([`report`]). Heap
//! figures come from the counting allocator in [`heap`], installed for this example.

// The crate root of an example resolves modules next to itself: point into `pipeline/`.
#[path = "pipeline/compare.rs"]
mod compare;
// The counting allocator the memory tests use too (one file, included by path).
#[path = "../tests/common/counting_alloc.rs"]
mod heap;
#[path = "pipeline/histogram.rs"]
mod histogram;
#[path = "pipeline/report.rs"]
mod report;

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use download_buffer::{Buffer, BufferId, Bytes, ChunkHandle, DownloadBuffer, Error, RwLockBuffer, Stats};

/// Builds a buffer from `(tick, expire, byte budget)`.
type Constructor = fn(Duration, Duration, Option<usize>) -> Result<Box<dyn Buffer>, Error>;

/// Every implementation the simulation can run, in table order; the first row is the baseline
/// of the comparison's ratio column. A new implementation is one more row.
const IMPLEMENTATIONS: &[(&str, Constructor)] = &[
    ("rwlock", |tick, expire, max_bytes| match max_bytes {
        Some(max_bytes) => boxed(RwLockBuffer::with_max_bytes(tick, expire, max_bytes)),
        None => boxed(RwLockBuffer::new(tick, expire)),
    }),
    ("lockfree", |tick, expire, max_bytes| match max_bytes {
        Some(max_bytes) => boxed(DownloadBuffer::builder(tick, expire).max_bytes(max_bytes).build()),
        None => boxed(DownloadBuffer::new(tick, expire)),
    }),
];

fn boxed<B: Buffer + 'static>(built: Result<B, Error>) -> Result<Box<dyn Buffer>, Error> {
    built.map(|buffer| Box::new(buffer) as Box<dyn Buffer>)
}

const USAGE: &str = "\
Simulated Hercules pipelined write: clients push chunks along a chain of replicas, each with its
own download buffer; then the primary and every secondary apply the write from their buffers.

Usage: cargo run --release --example pipeline -- [FLAGS]

Flags:
  --chunks N          chunks to write                                    [default: 2000]
  --chunk-size SIZE   bytes per chunk: 4096, 64KiB, 1MiB, 1GiB (also K, M, G;
                      KB, MB, GB are powers of 1000); at most 1 GiB      [default: 1MiB]
  --replicas N        replicas per chunk, primary included (1 to 64)     [default: 3]
  --threads N         concurrent client threads (1 to 256)               [default: 4]
  --tick-ms MS        janitor tick of every buffer, in milliseconds      [default: 15000]
  --expire-ms MS      idle time after which an entry expires, in ms      [default: 60000]
  --max-bytes SIZE    byte budget of each replica's buffer: the primary takes a push with
                      try_set and, when full, the client backs off and retries [default: 256MiB]
  --impl NAME         implementation to run; repeat or give a comma list [default: all]
  --help              print this help

Compare report (--compare): instead of the simulation, run the same micro-workloads on
lockfree and rwlock and print one Markdown table (throughput and ratios, get latency with the
janitor every 10 ms, heap bytes per entry, peak heap) with a verdict for each target; write it
to DIR/compare.md with a bar chart in DIR/compare.svg. About 30 s with the defaults on a
2-core machine (longer when rwlock's gets stall behind its janitor). Progress goes to stderr.
  --compare           run the compare report
  --seconds S         seconds per throughput figure (decimals allowed)   [default: 1]
  --latency-seconds S seconds of timed gets per implementation           [default: 3]
  --resident N        resident entries for get hits, latency and memory  [default: 1000000]
  --out DIR           where compare.md and compare.svg go (created)      [default: target/compare]
  --tick-ms, --expire-ms  as above: the buffers of the get-hit (tick) rows, the pipeline and
                      the mix; the latency rows always use a 10 ms janitor and a 600 s expire.
  The simulation's --chunks, --chunk-size, --replicas, --threads, --max-bytes and --impl do
  not apply.

Flags take their value as the next argument or after '=' (--chunks=500).
Exit status: 0 when every check passed, 1 when a check failed (or, with --compare, the run
could not start or write its files; a missed target is reported, not a failure), 2 for bad
flags.
";

const DEFAULT_CHUNKS: u64 = 2000;
const DEFAULT_CHUNK_SIZE: usize = 1 << 20;
const DEFAULT_REPLICAS: usize = 3;
const DEFAULT_THREADS: usize = 4;
const DEFAULT_MAX_BYTES: usize = 256 << 20;
/// How long a client waits after a "busy" answer (`Error::Full`) before it pushes again.
const BUSY_BACKOFF: Duration = Duration::from_micros(200);
/// The chunkserver's janitor tick and expiry.
const DEFAULT_TICK_MS: u64 = 15_000;
const DEFAULT_EXPIRE_MS: u64 = 60_000;
const MAX_CHUNK_SIZE: usize = 1 << 30;
const MAX_REPLICAS: usize = 64;
const MAX_THREADS: usize = 256;

/// Progress goes to stderr once a run has taken this long, then every `PROGRESS_EVERY`.
const PROGRESS_AFTER: Duration = Duration::from_secs(3);
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// Failure messages printed per implementation (all are counted).
const FAILURES_SHOWN: usize = 5;

fn main() -> ExitCode {
    // Counting only where `--compare` measures memory; the simulation never pays for it.
    heap::set_tracking(false);
    let config = match parse_args(std::env::args_os().skip(1)) {
        Ok(Parsed::Run(config)) => config,
        Ok(Parsed::Compare(config)) => return run_compare(&config),
        Ok(Parsed::Help) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("error: {message}\nRun with --help for the flags.");
            return ExitCode::from(2);
        }
    };
    print_setup(&config);
    let mut reports = Vec::new();
    for &(name, build) in &config.implementations {
        match run_implementation(&config, name, build) {
            Ok(report) => {
                print_report(&config, &report);
                reports.push(report);
            }
            Err(message) => {
                eprintln!("error: {name}: {message}");
                return ExitCode::from(2);
            }
        }
    }
    print_comparison(&reports);
    if reports.iter().all(|report| report.problems.is_empty()) {
        ExitCode::SUCCESS
    } else {
        eprintln!("FAILED: at least one implementation did not pass every check");
        ExitCode::FAILURE
    }
}

/// `--compare`: measure, print the Markdown report, write it and the chart to `--out`.
fn run_compare(config: &compare::CompareConfig) -> ExitCode {
    let figures = match compare::run(config) {
        Ok(figures) => figures,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::FAILURE;
        }
    };
    let report = report::build(config, &figures);
    print!("{}", report.markdown);
    if let Err(message) = report::write(&report, &config.out) {
        eprintln!("error: {message}");
        return ExitCode::FAILURE;
    }
    eprintln!("wrote {} and compare.svg", config.out.join("compare.md").display());
    if !report.misses.is_empty() {
        eprintln!(
            "{} target(s) missed: see the table (a missed target is reported, not a failure)",
            report.misses.len()
        );
    }
    if figures.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!("FAILED: at least one check failed during the comparison");
        ExitCode::FAILURE
    }
}

// ---------------------------------------------------------------------------------------------
// Flags
// ---------------------------------------------------------------------------------------------

/// What the simulation runs.
struct Config {
    chunks: u64,
    chunk_size: usize,
    replicas: usize,
    threads: usize,
    tick: Duration,
    expire: Duration,
    max_bytes: usize,
    implementations: Vec<(&'static str, Constructor)>,
}

enum Parsed {
    Run(Config),
    Compare(compare::CompareConfig),
    Help,
}

/// Parses the flags (without the program name); an `Err` is a message for the user.
fn parse_args(args: impl IntoIterator<Item = OsString>) -> Result<Parsed, String> {
    let mut config = Config {
        chunks: DEFAULT_CHUNKS,
        chunk_size: DEFAULT_CHUNK_SIZE,
        replicas: DEFAULT_REPLICAS,
        threads: DEFAULT_THREADS,
        tick: Duration::from_millis(DEFAULT_TICK_MS),
        expire: Duration::from_millis(DEFAULT_EXPIRE_MS),
        max_bytes: DEFAULT_MAX_BYTES,
        implementations: Vec::new(),
    };
    let mut compare_config = compare::CompareConfig {
        seconds: compare::DEFAULT_SECONDS,
        latency_seconds: compare::DEFAULT_LATENCY_SECONDS,
        resident: compare::DEFAULT_RESIDENT,
        out: PathBuf::from(compare::DEFAULT_OUT),
        tick: config.tick,
        expire: config.expire,
    };
    let mut compare_mode = false;
    // Flags given, to reject those that do not apply to the chosen mode.
    let mut given: Vec<String> = Vec::new();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let arg = arg.into_string().map_err(|arg| format!("argument {arg:?} is not valid UTF-8"))?;
        if arg == "--help" || arg == "-h" {
            return Ok(Parsed::Help);
        }
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) => (flag.to_owned(), Some(value.to_owned())),
            None => (arg, None),
        };
        if !flag.starts_with("--") {
            return Err(format!("unexpected argument '{flag}': every setting is a flag such as --chunks 100"));
        }
        if flag == "--compare" {
            if inline.is_some() {
                return Err(String::from("--compare takes no value"));
            }
            compare_mode = true;
            continue;
        }
        if !FLAGS.contains(&flag.as_str()) {
            return Err(format!("unknown flag {flag}"));
        }
        let value = match inline {
            Some(value) => value,
            None => args
                .next()
                .ok_or_else(|| format!("{flag} needs a value"))?
                .into_string()
                .map_err(|value| format!("{flag}: {value:?} is not valid UTF-8"))?,
        };
        if COMPARE_FLAGS.contains(&flag.as_str()) {
            apply_compare_flag(&mut compare_config, &flag, &value)?;
        } else {
            apply_flag(&mut config, &flag, &value)?;
        }
        given.push(flag);
    }
    if compare_mode {
        if let Some(flag) = given.iter().find(|flag| SIMULATION_FLAGS.contains(&flag.as_str())) {
            return Err(format!(
                "{flag} does not apply to --compare (it runs its own workloads on lockfree and rwlock)"
            ));
        }
        compare_config.tick = config.tick;
        compare_config.expire = config.expire;
        return Ok(Parsed::Compare(compare_config));
    }
    if let Some(flag) = given.iter().find(|flag| COMPARE_FLAGS.contains(&flag.as_str())) {
        return Err(format!("{flag} applies only with --compare"));
    }
    if config.chunk_size > config.max_bytes {
        return Err(format!(
            "--chunk-size ({}) exceeds --max-bytes ({}): the primary could never take a push",
            format_size(config.chunk_size),
            format_size(config.max_bytes)
        ));
    }
    if config.implementations.is_empty() {
        config.implementations = IMPLEMENTATIONS.to_vec();
    }
    Ok(Parsed::Run(config))
}

/// The flags that take a value (all but `--help` and `--compare`).
const FLAGS: &[&str] = &[
    "--chunks",
    "--chunk-size",
    "--replicas",
    "--threads",
    "--tick-ms",
    "--expire-ms",
    "--max-bytes",
    "--impl",
    "--seconds",
    "--latency-seconds",
    "--resident",
    "--out",
];

/// The flags only the simulation reads.
const SIMULATION_FLAGS: &[&str] = &["--chunks", "--chunk-size", "--replicas", "--threads", "--max-bytes", "--impl"];

/// The flags only `--compare` reads.
const COMPARE_FLAGS: &[&str] = &["--seconds", "--latency-seconds", "--resident", "--out"];

/// Sets one `--compare` flag's value in `config`.
fn apply_compare_flag(config: &mut compare::CompareConfig, flag: &str, value: &str) -> Result<(), String> {
    match flag {
        "--seconds" => config.seconds = parse_seconds(flag, value)?,
        "--latency-seconds" => config.latency_seconds = parse_seconds(flag, value)?,
        "--resident" => config.resident = parse_count(flag, value, compare::MAX_RESIDENT)?,
        "--out" if value.is_empty() => return Err(String::from("--out: needs a directory")),
        "--out" => config.out = PathBuf::from(value),
        _ => return Err(format!("unknown flag {flag}")),
    }
    Ok(())
}

/// A positive number of seconds, at most `compare::MAX_SECONDS`; decimals allowed.
fn parse_seconds(flag: &str, value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(seconds) if seconds > 0.0 && seconds <= compare::MAX_SECONDS => Ok(seconds),
        Ok(_) => Err(format!("{flag}: {value} is out of range (above 0, at most {})", compare::MAX_SECONDS)),
        Err(_) => Err(format!("{flag}: '{value}' is not a number of seconds")),
    }
}

/// Sets one simulation flag's value in `config`.
fn apply_flag(config: &mut Config, flag: &str, value: &str) -> Result<(), String> {
    match flag {
        "--chunks" => config.chunks = parse_count(flag, value, i64::MAX as u64)?,
        "--chunk-size" => config.chunk_size = parse_size(flag, value)?,
        "--replicas" => config.replicas = parse_count(flag, value, MAX_REPLICAS as u64)? as usize,
        "--threads" => config.threads = parse_count(flag, value, MAX_THREADS as u64)? as usize,
        "--tick-ms" => config.tick = Duration::from_millis(parse_count(flag, value, u64::MAX)?),
        "--expire-ms" => config.expire = Duration::from_millis(parse_count(flag, value, u64::MAX)?),
        "--max-bytes" => config.max_bytes = parse_size(flag, value)?,
        "--impl" => {
            for name in value.split(',').map(str::trim) {
                let row = find_implementation(name)?;
                if !config.implementations.iter().any(|(chosen, _)| *chosen == row.0) {
                    config.implementations.push(row);
                }
            }
        }
        _ => return Err(format!("unknown flag {flag}")),
    }
    Ok(())
}

fn find_implementation(name: &str) -> Result<(&'static str, Constructor), String> {
    IMPLEMENTATIONS.iter().copied().find(|(known, _)| *known == name).ok_or_else(|| {
        let known: Vec<&str> = IMPLEMENTATIONS.iter().map(|(known, _)| *known).collect();
        format!("--impl: unknown implementation '{name}' (known: {})", known.join(", "))
    })
}

/// A whole number from 1 to `max`.
fn parse_count(flag: &str, value: &str, max: u64) -> Result<u64, String> {
    match value.parse::<u64>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        Ok(0) => Err(format!("{flag}: must be at least 1")),
        Ok(_) => Err(format!("{flag}: {value} is too large (at most {max})")),
        Err(_) => Err(format!("{flag}: '{value}' is not a whole number")),
    }
}

/// A byte count with an optional unit suffix, from 1 byte to `MAX_CHUNK_SIZE`.
fn parse_size(flag: &str, value: &str) -> Result<usize, String> {
    let digits = value.find(|c: char| !c.is_ascii_digit()).unwrap_or(value.len());
    let (number, unit) = value.split_at(digits);
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        _ => return Err(format!("{flag}: '{value}' has an unknown unit (use B, KiB, MiB, GiB, KB, MB or GB)")),
    };
    let bytes = number
        .parse::<u64>()
        .map_err(|_| format!("{flag}: '{value}' does not start with a whole number"))?
        .checked_mul(multiplier)
        .filter(|bytes| (1..=MAX_CHUNK_SIZE as u64).contains(bytes))
        .ok_or_else(|| format!("{flag}: {value} is out of range (1 byte to {})", format_size(MAX_CHUNK_SIZE)))?;
    Ok(bytes as usize)
}

// ---------------------------------------------------------------------------------------------
// The simulation
// ---------------------------------------------------------------------------------------------

/// One chunkserver: its download buffer and its chunks.
struct Replica {
    buffer: Box<dyn Buffer>,
    chunks: ChunkStore,
}

/// Chunks written so far: the checksum of the bytes last written to each chunk, indexed by
/// chunk handle (the simulation numbers chunks 0, 1, 2, ...). Atomic slots rather than a
/// locked map, so that the store costs next to nothing and the comparison measures the buffers.
struct ChunkStore {
    checksums: Vec<AtomicU64>,
}

/// The slot value of a chunk never written; [`checksum`] never returns it.
const NOT_WRITTEN: u64 = 0;

impl ChunkStore {
    fn new(chunks: u64) -> Result<ChunkStore, String> {
        let len = usize::try_from(chunks).map_err(|_| format!("{chunks} chunks do not fit in memory"))?;
        let mut checksums = Vec::new();
        checksums.try_reserve_exact(len).map_err(|_| format!("not enough memory to track {chunks} chunks"))?;
        checksums.resize_with(len, || AtomicU64::new(NOT_WRITTEN));
        Ok(ChunkStore { checksums })
    }

    fn write(&self, handle: ChunkHandle, checksum: u64) {
        self.checksums[handle.0 as usize].store(checksum, Ordering::Relaxed);
    }

    /// The checksum written to chunk `number`, if any.
    fn read(&self, number: usize) -> Option<u64> {
        Some(self.checksums[number].load(Ordering::Relaxed)).filter(|&sum| sum != NOT_WRITTEN)
    }
}

/// What the client asks each replica to write: which bytes, and how to recognise them.
struct WriteRequest {
    id: BufferId,
    /// The address and length of the bytes the client pushed: the buffer must hand back those
    /// very bytes (zero-copy), not a copy.
    address: usize,
    len: usize,
    checksum: u64,
}

impl Replica {
    fn new(build: Constructor, config: &Config) -> Result<Replica, String> {
        let buffer = build(config.tick, config.expire, Some(config.max_bytes))
            .map_err(|error| format!("cannot build the buffer: {error}"))?;
        Ok(Replica { buffer, chunks: ChunkStore::new(config.chunks)? })
    }

    /// The client's push to the primary: `try_set` within the byte budget; while the buffer
    /// is full ("busy"), the client backs off and pushes again. Counts buffer calls in `ops`
    /// and busy answers in `busy`.
    fn accept(&self, id: BufferId, data: &Bytes, ops: &mut u64, busy: &mut u64) {
        loop {
            *ops += 1;
            match self.buffer.try_set(id, data.clone()) {
                Ok(()) => return,
                Err(Error::Full { .. }) => {
                    *busy += 1;
                    thread::sleep(BUSY_BACKOFF);
                }
                Err(other) => unreachable!("try_set only refuses for want of room: {other}"),
            }
        }
    }

    /// The forward handler of a secondary: `set_if_absent`, so that a push that arrived first
    /// is never overwritten (a `get` then a `set` would race). Returns whether it stored the
    /// bytes, i.e. whether to forward them. Counts buffer calls in `ops`.
    fn receive(&self, id: BufferId, data: &Bytes, ops: &mut u64) -> bool {
        *ops += 1;
        self.buffer.set_if_absent(id, data.clone())
    }

    /// Applies a write from this replica's own buffer: take the bytes out, check them, and
    /// "write" them by recording their checksum. Counts buffer calls in `ops`.
    fn apply(&self, request: &WriteRequest, ops: &mut u64) -> Result<(), String> {
        *ops += 1;
        let data = self.buffer.fetch_and_delete(&request.id).map_err(|error| error.to_string())?;
        if data.as_ptr() as usize != request.address || data.len() != request.len {
            return Err(format!("buffer id {}: got other bytes than the client pushed (a copy?)", request.id));
        }
        let checksum = checksum(&data);
        if checksum != request.checksum {
            return Err(format!(
                "buffer id {}: checksum {checksum:#018x}, client sent {:#018x}",
                request.id, request.checksum
            ));
        }
        self.chunks.write(request.id.handle, checksum);
        Ok(())
    }
}

/// What one client thread did.
#[derive(Default)]
struct ClientLog {
    chunks: u64,
    buffer_ops: u64,
    /// Pushes the primary answered "busy" (its byte budget full).
    busy: u64,
    /// The first few failures (all are counted).
    failures: Vec<String>,
    failure_count: u64,
}

impl ClientLog {
    fn fail(&mut self, message: String) {
        self.failure_count += 1;
        if self.failures.len() < FAILURES_SHOWN {
            self.failures.push(message);
        }
    }
}

/// Everything the client threads share.
struct Clients<'a> {
    config: &'a Config,
    chain: &'a [Replica],
    /// The next chunk number to write.
    next_chunk: AtomicU64,
    /// Chunks written so far (for progress).
    written: AtomicU64,
    /// The checksum of every chunk as the clients sent it.
    sent: ChunkStore,
}

/// A client thread: writes the next chunk until all are taken.
fn client(clients: &Clients) -> ClientLog {
    let mut log = ClientLog::default();
    loop {
        let number = clients.next_chunk.fetch_add(1, Ordering::Relaxed);
        if number >= clients.config.chunks {
            return log;
        }
        let handle = ChunkHandle(number as i64);
        let checksum = write_chunk(clients.chain, handle, clients.config.chunk_size, &mut log);
        clients.sent.write(handle, checksum);
        log.chunks += 1;
        clients.written.fetch_add(1, Ordering::Relaxed);
    }
}

/// One pipelined write of one chunk: push along the chain, then apply on every replica.
/// Returns the checksum of the bytes the client sent.
fn write_chunk(chain: &[Replica], handle: ChunkHandle, size: usize, log: &mut ClientLog) -> u64 {
    let data = make_chunk(handle, size);
    let request = WriteRequest {
        id: BufferId::new(handle),
        address: data.as_ptr() as usize,
        len: data.len(),
        checksum: checksum(&data),
    };
    push(chain, request.id, &data, log);
    drop(data); // From here on only the replicas' buffers hold the bytes.

    // The primary applies first; only if it succeeds does it tell the secondaries.
    let Some((primary, secondaries)) = chain.split_first() else {
        return request.checksum;
    };
    if let Err(problem) = primary.apply(&request, &mut log.buffer_ops) {
        log.fail(format!("primary: {problem}"));
        return request.checksum;
    }
    for (number, secondary) in secondaries.iter().enumerate() {
        if let Err(problem) = secondary.apply(&request, &mut log.buffer_ops) {
            log.fail(format!("secondary {}: {problem}", number + 1));
        }
    }
    request.checksum
}

/// The push: the primary accepts the bytes (waiting while its budget is full), and each
/// replica forwards them to the next, until one already has them or the chain ends.
fn push(chain: &[Replica], id: BufferId, data: &Bytes, log: &mut ClientLog) {
    let Some((primary, secondaries)) = chain.split_first() else { return };
    primary.accept(id, data, &mut log.buffer_ops, &mut log.busy);
    for replica in secondaries {
        if !replica.receive(id, data, &mut log.buffer_ops) {
            break;
        }
    }
}

/// Fresh bytes for a chunk: a pseudo-random stream (splitmix64) seeded by the handle, so
/// chunks differ from each other.
fn make_chunk(handle: ChunkHandle, size: usize) -> Bytes {
    let mut data = vec![0u8; size];
    let mut state = (handle.0 as u64).wrapping_mul(0xA076_1D64_78BD_642F);
    for word in data.chunks_mut(8) {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        word.copy_from_slice(&z.to_le_bytes()[..word.len()]);
    }
    Bytes::from(data)
}

/// A fast 64-bit checksum (not cryptographic): four independent multiply-rotate lanes over
/// 32-byte blocks, then the tail and the length. Never [`NOT_WRITTEN`].
fn checksum(data: &[u8]) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mix = |lane: u64, word: u64| (lane ^ word).wrapping_mul(K).rotate_left(29);
    let word = |bytes: &[u8]| {
        let mut buf = [0u8; 8];
        buf[..bytes.len()].copy_from_slice(bytes);
        u64::from_le_bytes(buf)
    };
    let mut lanes = [1u64, 2, 3, 4];
    let mut blocks = data.chunks_exact(32);
    for block in &mut blocks {
        for (lane, bytes) in lanes.iter_mut().zip(block.chunks_exact(8)) {
            *lane = mix(*lane, word(bytes));
        }
    }
    let mut sum = data.len() as u64;
    for bytes in blocks.remainder().chunks(8) {
        sum = mix(sum, word(bytes));
    }
    match lanes.iter().fold(sum, |sum, &lane| mix(sum, lane)) {
        NOT_WRITTEN => 1,
        sum => sum,
    }
}

// ---------------------------------------------------------------------------------------------
// One run per implementation
// ---------------------------------------------------------------------------------------------

/// The outcome of running one implementation.
struct Report {
    name: &'static str,
    elapsed: Duration,
    chunks_written: u64,
    /// Bytes pushed along the chains: every chunk travels once to every replica.
    bytes_moved: u128,
    buffer_ops: u64,
    /// Pushes the primary answered "busy".
    busy: u64,
    /// Each replica's buffer statistics at the end, primary first.
    stats: Vec<Stats>,
    /// Every failed check (the first few failed writes spelled out, the rest counted); empty
    /// when all passed.
    problems: Vec<String>,
}

impl Report {
    fn seconds(&self) -> f64 {
        self.elapsed.as_secs_f64().max(1e-9)
    }
    fn chunks_per_second(&self) -> f64 {
        self.chunks_written as f64 / self.seconds()
    }
    fn megabytes_per_second(&self) -> f64 {
        self.bytes_moved as f64 / 1e6 / self.seconds()
    }
    fn ops_per_second(&self) -> f64 {
        self.buffer_ops as f64 / self.seconds()
    }
}

/// Builds a chain of replicas with `build`, runs the clients on it, and checks the result.
fn run_implementation(config: &Config, name: &'static str, build: Constructor) -> Result<Report, String> {
    let chain = (0..config.replicas).map(|_| Replica::new(build, config)).collect::<Result<Vec<_>, _>>()?;
    let clients = Clients {
        config,
        chain: &chain,
        next_chunk: AtomicU64::new(0),
        written: AtomicU64::new(0),
        sent: ChunkStore::new(config.chunks)?,
    };
    let (elapsed, logs) = run_clients(name, &clients)?;

    let chunks_written: u64 = logs.iter().map(|log| log.chunks).sum();
    let mut problems: Vec<String> =
        logs.iter().flat_map(|log| log.failures.iter().cloned()).take(FAILURES_SHOWN).collect();
    let failure_count: u64 = logs.iter().map(|log| log.failure_count).sum();
    if failure_count > FAILURES_SHOWN as u64 {
        problems.push(format!("... and {} more failed writes", failure_count - FAILURES_SHOWN as u64));
    }
    problems.extend(verify(&chain, &clients.sent));
    let stats = chain.iter().map(|replica| replica.buffer.stats()).collect();
    for replica in &chain {
        replica.buffer.done();
    }
    Ok(Report {
        name,
        elapsed,
        chunks_written,
        bytes_moved: u128::from(chunks_written) * config.chunk_size as u128 * config.replicas as u128,
        buffer_ops: logs.iter().map(|log| log.buffer_ops).sum(),
        busy: logs.iter().map(|log| log.busy).sum(),
        stats,
        problems,
    })
}

/// Runs `config.threads` client threads (and, for long runs, progress reports); returns the
/// wall time the clients took and their logs.
fn run_clients(name: &str, clients: &Clients) -> Result<(Duration, Vec<ClientLog>), String> {
    let (stop_progress, stopped) = mpsc::channel::<()>();
    thread::scope(|scope| {
        let start = Instant::now();
        let progress = thread::Builder::new()
            .name("progress".into())
            .spawn_scoped(scope, move || report_progress(name, clients, start, stopped))
            .map_err(|error| format!("cannot start the progress thread: {error}"))?;
        let logs = spawn_clients(scope, clients).map(|handles| {
            handles.into_iter().map(|handle| handle.join().expect("a client thread panicked")).collect()
        });
        let elapsed = start.elapsed();
        drop(stop_progress);
        let _ = progress.join();
        logs.map(|logs| (elapsed, logs))
    })
}

/// Starts the client threads. If one cannot start, the others are told to stop after their
/// current chunk (the scope joins them) and the run fails.
fn spawn_clients<'scope>(
    scope: &'scope thread::Scope<'scope, '_>,
    clients: &'scope Clients,
) -> Result<Vec<thread::ScopedJoinHandle<'scope, ClientLog>>, String> {
    let mut handles = Vec::with_capacity(clients.config.threads);
    for number in 0..clients.config.threads {
        let spawned = thread::Builder::new().name(format!("client-{number}")).spawn_scoped(scope, || client(clients));
        match spawned {
            Ok(handle) => handles.push(handle),
            Err(error) => {
                clients.next_chunk.store(clients.config.chunks, Ordering::Relaxed);
                return Err(format!("cannot start client thread {number}: {error}"));
            }
        }
    }
    Ok(handles)
}

/// Prints progress to stderr every `PROGRESS_EVERY` once `PROGRESS_AFTER` has passed, until
/// `stop` is closed.
fn report_progress(name: &str, clients: &Clients, start: Instant, stop: mpsc::Receiver<()>) {
    let total = clients.config.chunks;
    let mut next = start + PROGRESS_AFTER;
    while let Err(RecvTimeoutError::Timeout) = stop.recv_timeout(next.saturating_duration_since(Instant::now())) {
        let done = clients.written.load(Ordering::Relaxed);
        let percent = done as f64 * 100.0 / total as f64;
        eprintln!("  {name}: {done}/{total} chunks ({percent:.0}%) after {:.1} s", start.elapsed().as_secs_f64());
        next += PROGRESS_EVERY;
    }
}

/// Checks that every buffer is empty and that every replica holds, for every chunk, the
/// checksum of the bytes the client sent. Returns one line per problem.
fn verify(chain: &[Replica], sent: &ChunkStore) -> Vec<String> {
    let mut problems = Vec::new();
    let chunks = sent.checksums.len();
    let unsent = (0..chunks).filter(|&number| sent.read(number).is_none()).count();
    if unsent != 0 {
        problems.push(format!("the clients never sent {unsent} of {chunks} chunks"));
    }
    for (number, replica) in chain.iter().enumerate() {
        let held = replica.buffer.len();
        if held != 0 {
            problems.push(format!("replica {number}: its buffer still holds {held} entries"));
        }
        let wrong = (0..chunks).filter(|&chunk| replica.chunks.read(chunk) != sent.read(chunk)).count();
        if wrong != 0 {
            problems.push(format!("replica {number}: {wrong} of {chunks} chunks missing or with a wrong checksum"));
        }
    }
    problems
}

// ---------------------------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------------------------

fn print_setup(config: &Config) {
    let names: Vec<&str> = config.implementations.iter().map(|(name, _)| *name).collect();
    let secondaries = match config.replicas - 1 {
        0 => String::from("the primary alone"),
        n => format!("the primary + {}", counted(n as u64, "secondary", "secondaries")),
    };
    println!("Hercules pipelined write (simulated)");
    println!(
        "  {} of {}, {} per chunk ({secondaries}), {}",
        counted(config.chunks, "chunk", "chunks"),
        format_size(config.chunk_size),
        counted(config.replicas as u64, "replica", "replicas"),
        counted(config.threads as u64, "client thread", "client threads"),
    );
    println!(
        "  every replica has its own buffer: janitor tick {}, expire {}",
        Millis(config.tick),
        Millis(config.expire)
    );
    println!("  implementations: {}", names.join(", "));
}

fn print_report(config: &Config, report: &Report) {
    println!();
    println!("{}:", report.name);
    println!(
        "  wrote {}, moved {} along the chains, in {:.3} s",
        counted(report.chunks_written, "chunk", "chunks"),
        format_decimal_bytes(report.bytes_moved),
        report.elapsed.as_secs_f64()
    );
    println!(
        "  {:.0} chunks/s, {:.0} MB/s, {:.0} buffer ops/s ({} calls of try_set, set_if_absent, fetch_and_delete)",
        report.chunks_per_second(),
        report.megabytes_per_second(),
        report.ops_per_second(),
        report.buffer_ops
    );
    println!(
        "  byte budget {} per buffer: the primary answered \"busy\" {}",
        format_size(config.max_bytes),
        counted(report.busy, "time", "times")
    );
    for (number, stats) in report.stats.iter().enumerate() {
        let role = if number == 0 { "primary".to_string() } else { format!("secondary {number}") };
        println!("  stats, {role}: {stats}");
    }
    if report.problems.is_empty() {
        println!(
            "  verified: every buffer is empty; {} x {} hold the client's checksums",
            counted(config.replicas as u64, "replica", "replicas"),
            counted(config.chunks, "chunk", "chunks"),
        );
    } else {
        println!("  FAILED:");
        for problem in &report.problems {
            println!("    {problem}");
        }
    }
}

/// One row per implementation; the ratio is throughput relative to the first row.
fn print_comparison(reports: &[Report]) {
    let Some(baseline) = reports.first() else {
        return;
    };
    println!();
    println!("{:<16} {:>12} {:>12} {:>14} {:>8}", "implementation", "chunks/s", "MB/s", "buffer ops/s", "ratio");
    for report in reports {
        // Every run does the same work, so this ratio holds for every rate column.
        let ratio = report.chunks_per_second() / baseline.chunks_per_second();
        let verdict = if report.problems.is_empty() { "" } else { "  FAILED" };
        println!(
            "{:<16} {:>12.0} {:>12.0} {:>14.0} {:>7.2}x{verdict}",
            report.name,
            report.chunks_per_second(),
            report.megabytes_per_second(),
            report.ops_per_second(),
            ratio
        );
    }
}

/// A byte count in the largest binary unit that divides it, else with two decimals.
fn format_size(bytes: usize) -> String {
    const UNITS: [(usize, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    for (unit, name) in UNITS {
        if bytes >= unit {
            return if bytes % unit == 0 {
                format!("{} {name}", bytes / unit)
            } else {
                format!("{:.2} {name}", bytes as f64 / unit as f64)
            };
        }
    }
    format!("{bytes} B")
}

/// A byte count in decimal units (MB = 10^6 bytes, as in the MB/s rates).
fn format_decimal_bytes(bytes: u128) -> String {
    const UNITS: [(f64, &str); 4] = [(1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "kB")];
    let bytes = bytes as f64;
    match UNITS.iter().find(|(unit, _)| bytes >= *unit) {
        Some((unit, name)) => format!("{:.2} {name}", bytes / unit),
        None => format!("{bytes} B"),
    }
}

/// `n` and the noun, singular or plural as `n` asks.
fn counted(n: u64, singular: &str, plural: &str) -> String {
    format!("{n} {}", if n == 1 { singular } else { plural })
}

/// A duration shown in seconds when whole, else in milliseconds.
struct Millis(Duration);

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let millis = self.0.as_millis();
        if millis % 1000 == 0 {
            write!(f, "{} s", millis / 1000)
        } else {
            write!(f, "{millis} ms")
        }
    }
}
