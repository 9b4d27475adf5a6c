//! The simulated chunkservers and their clients, for one store implementation.
//!
//! `servers` chunkservers each own one download buffer. A client writes a chunk by pushing
//! its bytes along a chain of 3 distinct servers (primary first), then asking the primary
//! to write: each server of the chain takes the bytes out of its own buffer. Clients keep
//! a window of pushed, unwritten chunks (a client streams its pushes ahead of its writes),
//! so 100 k+ entries are resident; a share of pushes is abandoned (the client died) and
//! must expire; a share is pushed twice (a retried push: the forward handler's `get`
//! finds it and forwards without storing again); a share is written twice (the second
//! write must find nothing: exactly-once consumption).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use download_buffer::{BufferId, Bytes, ChunkHandle};
use hdrhistogram::Histogram;

use crate::store::Store;

/// Replicas per chunk, primary included.
pub const CHAIN: usize = 3;
/// How often the sampler reads the bytes held (and calls moka's housekeeping).
pub const SAMPLE_EVERY: Duration = Duration::from_millis(50);
/// How often the progress line on stderr is redrawn.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);
/// The width of one point of the latency-over-time chart.
pub const INTERVAL: Duration = Duration::from_millis(250);

/// The workload.
#[derive(Clone, Debug)]
pub struct Workload {
    pub servers: usize,
    pub clients: usize,
    pub seconds: f64,
    pub tick: Duration,
    pub expire: Duration,
    /// Pushed, unwritten chunks each client keeps at most.
    pub window: usize,
    /// Payload sizes, smallest and largest (log-uniform between).
    pub min_size: usize,
    pub max_size: usize,
    /// Shares of pushes abandoned, pushed twice, and written twice.
    pub abandon: f64,
    pub retry: f64,
    pub rewrite: f64,
}

/// One of the three calls, for the latency tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    Get,
    SetIfAbsent,
    FetchAndDelete,
}

pub const CALLS: [Call; 3] = [Call::Get, Call::SetIfAbsent, Call::FetchAndDelete];

impl Call {
    pub fn name(self) -> &'static str {
        match self {
            Call::Get => "get",
            Call::SetIfAbsent => "set_if_absent",
            Call::FetchAndDelete => "fetch_and_delete",
        }
    }
}

/// Latencies of one call, in nanoseconds.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 2).expect("valid histogram bounds")
}

/// Latencies of one chart interval: one significant digit (a tenth of the figure) keeps
/// each interval's counters small.
fn interval_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 1).expect("valid histogram bounds")
}

/// What one run measured.
pub struct Outcome {
    pub name: &'static str,
    /// The load phase's length.
    pub elapsed: Duration,
    /// What the clients counted, summed.
    pub tally: Tally,
    /// Per [`INTERVAL`]: the p99 of every call in it, in nanoseconds.
    pub p99_over_time: Vec<(f64, u64)>,
    /// Samples of (seconds since the start, bytes held by all servers).
    pub bytes_over_time: Vec<(f64, u64)>,
    pub peak_entries: u64,
    pub peak_bytes: u64,
    /// How long after the last push the abandoned bytes took to drain to zero; `None`
    /// when they had not within `drain_limit`.
    pub drained_after: Option<Duration>,
    /// The bound the contract gives (expire + tick) and how long the run waited.
    pub drain_bound: Duration,
    pub drain_limit: Duration,
}

/// What clients count: one per client thread, summed into the [`Outcome`].
pub struct Tally {
    pub chunks_written: u64,
    pub abandoned: u64,
    /// Replica writes that came after the push's expiry and found nothing: legal (the
    /// contract keeps an entry `expire` after its last touch, no longer), but a write the
    /// client must redo. A slow store makes them: clients write within `expire / 4` of a
    /// push unless a call stalls.
    pub late_writes: u64,
    /// Hits later than `expire + tick/8` after the last touch ended, by a store whose
    /// removal does not check expiry (moka's `remove`).
    pub stale_returns: u64,
    /// Buffer calls made (all three kinds).
    pub calls: u64,
    /// Payload bytes pushed into buffers (counted per replica; the bytes are shared, not
    /// copied, as a chunkserver's zero-copy buffer shares them).
    pub bytes_pushed: u64,
    pub latency: [Histogram<u64>; 3],
    /// Failed checks, counted; the first few described.
    pub failures: u64,
    pub failure_examples: Vec<String>,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            chunks_written: 0,
            abandoned: 0,
            late_writes: 0,
            stale_returns: 0,
            calls: 0,
            bytes_pushed: 0,
            latency: [histogram(), histogram(), histogram()],
            failures: 0,
            failure_examples: Vec::new(),
        }
    }

    fn fail(&mut self, message: String) {
        self.failures += 1;
        if self.failure_examples.len() < 3 {
            self.failure_examples.push(message);
        }
    }

    fn add(&mut self, other: Tally) {
        self.chunks_written += other.chunks_written;
        self.abandoned += other.abandoned;
        self.late_writes += other.late_writes;
        self.stale_returns += other.stale_returns;
        self.calls += other.calls;
        self.bytes_pushed += other.bytes_pushed;
        for (total, part) in self.latency.iter_mut().zip(&other.latency) {
            total.add(part).expect("same bounds");
        }
        self.failures += other.failures;
        self.failure_examples.extend(other.failure_examples);
    }
}

/// The payloads clients push: made once, then shared (a push hands out a `Bytes` slice).
/// A chunk pushes its payload from an offset its handle picks, so that a store returning
/// another chunk's value is caught (it would have to share payload and offset: 1 in 256).
pub struct Payloads {
    /// Each payload, with the checksum of its bytes from each offset.
    items: Vec<(Bytes, [u64; OFFSETS])>,
}

/// Offsets a chunk's bytes may start at in its payload: `0, 64, ..., 448`.
const OFFSETS: usize = 8;
const OFFSET_STEP: usize = 64;
/// The smallest payload: room for every offset.
pub const MIN_PAYLOAD: usize = 1024;

impl Payloads {
    /// `count` payloads with sizes log-uniform in `min..=max` (`min` at least
    /// [`MIN_PAYLOAD`]) and pseudo-random bytes.
    pub fn new(count: usize, min: usize, max: usize) -> Payloads {
        let (min, max) = (min.max(MIN_PAYLOAD), max.max(min.max(MIN_PAYLOAD)));
        let mut rng = Rng(0x5EED);
        let items = (0..count)
            .map(|i| {
                let spread = (max as f64 / min as f64).ln();
                let size = ((min as f64) * (spread * i as f64 / (count.max(2) - 1) as f64).exp()) as usize;
                let size = size.clamp(min, max);
                let data: Vec<u8> = (0..size).map(|_| rng.next() as u8).collect();
                let sums = std::array::from_fn(|k| checksum(&data[k * OFFSET_STEP..]));
                (Bytes::from(data), sums)
            })
            .collect();
        Payloads { items }
    }

    fn pick(&self, rng: &mut Rng) -> usize {
        (rng.next() % self.items.len() as u64) as usize
    }

    /// The bytes chunk `handle` pushes from payload `payload`, and their checksum.
    fn for_chunk(&self, payload: usize, handle: ChunkHandle) -> (Bytes, u64) {
        let (data, sums) = &self.items[payload];
        let k = handle.0.rem_euclid(OFFSETS as i64) as usize;
        (data.slice(k * OFFSET_STEP..), sums[k])
    }
}

/// FNV-1a over the bytes.
pub fn checksum(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| (hash ^ byte as u64).wrapping_mul(0x100_0000_01b3))
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn chance(&mut self, share: f64) -> bool {
        ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < share
    }
}

/// A chunk pushed and not yet written.
struct Pending {
    id: BufferId,
    chain: [usize; CHAIN],
    payload: usize,
    /// Before its push's first call, and after its last (a retry included): every store
    /// of the chain was last touched between the two.
    push_started: Instant,
    push_ended: Instant,
    rewrite: bool,
}

/// One client thread's tallies.
struct ClientLog {
    tally: Tally,
    /// When its last push call returned.
    last_push: Option<Instant>,
    /// Per [`INTERVAL`], the latencies of every call.
    intervals: Vec<Histogram<u64>>,
}

/// Everything a client thread reads.
struct Shared<'a> {
    servers: &'a [Box<dyn Store>],
    payloads: &'a Payloads,
    workload: &'a Workload,
    start: Instant,
    stop: &'a AtomicBool,
    next_chunk: &'a AtomicU64,
}

/// Runs the workload on `servers` (built by the caller, one store each) and measures it.
pub fn run(name: &'static str, servers: Vec<Box<dyn Store>>, payloads: &Payloads, workload: &Workload) -> Outcome {
    let stop = AtomicBool::new(false);
    let sampling = AtomicBool::new(true);
    let next_chunk = AtomicU64::new(1);
    let start = Instant::now();
    let shared = Shared { servers: &servers, payloads, workload, start, stop: &stop, next_chunk: &next_chunk };
    let (logs, samples, elapsed, drained_after, drain_limit) = thread::scope(|scope| {
        let sampler = scope.spawn(|| sample(&servers, start, &sampling));
        let shared = &shared;
        let clients: Vec<_> = (0..workload.clients).map(|c| scope.spawn(move || client(shared, c as u64))).collect();
        let load = Duration::from_secs_f64(workload.seconds);
        while start.elapsed() < load {
            progress(name, start, load, &servers);
            thread::sleep(PROGRESS_EVERY.min(load.saturating_sub(start.elapsed())));
        }
        stop.store(true, Ordering::Relaxed);
        let joined: Vec<_> = clients.into_iter().map(|client| client.join()).collect();
        if joined.iter().any(Result::is_err) {
            sampling.store(false, Ordering::Relaxed); // lets the sampler end, then the scope
            panic!("{name}: a client thread panicked");
        }
        let logs: Vec<ClientLog> = joined.into_iter().map(|log| log.expect("checked")).collect();
        let elapsed = start.elapsed();
        // The drain: nothing touches the buffers now; the abandoned pushes must go.
        // Counted from the last push of any client (their last writes came after it).
        let drain_from = logs.iter().filter_map(|log| log.last_push).max().unwrap_or_else(Instant::now);
        let drain_limit = (workload.expire + workload.tick) * 3 + Duration::from_secs(2);
        let drained_after = loop {
            if servers.iter().all(|server| server.len() == 0 && server.bytes() == 0) {
                break Some(drain_from.elapsed());
            }
            if drain_from.elapsed() > drain_limit {
                break None;
            }
            thread::sleep(Duration::from_millis(5));
        };
        sampling.store(false, Ordering::Relaxed);
        let samples = sampler.join().expect("sampler thread");
        (logs, samples, elapsed, drained_after, drain_limit)
    });
    eprintln!();
    let mut outcome = Outcome {
        name,
        elapsed,
        tally: Tally::new(),
        p99_over_time: Vec::new(),
        bytes_over_time: samples.iter().map(|&(at, bytes, _)| (at, bytes)).collect(),
        peak_entries: samples.iter().map(|&(_, _, entries)| entries).max().unwrap_or(0),
        peak_bytes: samples.iter().map(|&(_, bytes, _)| bytes).max().unwrap_or(0),
        drained_after,
        drain_bound: workload.expire + workload.tick,
        drain_limit,
    };
    let mut intervals: Vec<Histogram<u64>> = Vec::new();
    for log in logs {
        for (i, part) in log.intervals.iter().enumerate() {
            if intervals.len() <= i {
                intervals.resize_with(i + 1, interval_histogram);
            }
            intervals[i].add(part).expect("same bounds");
        }
        outcome.tally.add(log.tally);
    }
    outcome.p99_over_time = intervals
        .iter()
        .enumerate()
        .filter(|(_, interval)| !interval.is_empty())
        .map(|(i, interval)| ((i as f64 + 0.5) * INTERVAL.as_secs_f64(), interval.value_at_quantile(0.99)))
        .collect();
    if drained_after.is_none() {
        let held: u64 = servers.iter().map(|server| server.len()).sum();
        outcome.tally.failures += 1; // described whatever the clients described
        outcome.tally.failure_examples.push(format!("{held} entries still held {drain_limit:?} after the last push"));
    }
    outcome
}

/// Samples (seconds, bytes held, entries held) over all servers until `sampling` ends.
fn sample(servers: &[Box<dyn Store>], start: Instant, sampling: &AtomicBool) -> Vec<(f64, u64, u64)> {
    let mut samples = Vec::new();
    while sampling.load(Ordering::Relaxed) {
        for server in servers {
            server.housekeeping();
        }
        let bytes = servers.iter().map(|server| server.bytes()).sum();
        let entries = servers.iter().map(|server| server.len()).sum();
        samples.push((start.elapsed().as_secs_f64(), bytes, entries));
        thread::sleep(SAMPLE_EVERY);
    }
    samples
}

/// One line of progress on stderr, redrawn every [`PROGRESS_EVERY`].
fn progress(name: &str, start: Instant, load: Duration, servers: &[Box<dyn Store>]) {
    let entries: u64 = servers.iter().map(|server| server.len()).sum();
    let bytes: u64 = servers.iter().map(|server| server.bytes()).sum();
    eprint!(
        "\r{name:>8}: {:4.1}/{:.0} s, {entries:>7} entries, {:>9.1} MiB held   ",
        start.elapsed().as_secs_f64(),
        load.as_secs_f64(),
        bytes as f64 / (1 << 20) as f64
    );
}

/// A client thread: pushes chunks along chains and writes them, until told to stop; then
/// writes what its window still holds.
fn client(shared: &Shared, seed: u64) -> ClientLog {
    let workload = shared.workload;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (seed + 1).wrapping_mul(0xD1B5_4A32_D192_ED03));
    let mut log = ClientLog { tally: Tally::new(), last_push: None, intervals: Vec::new() };
    let mut window: VecDeque<Pending> = VecDeque::with_capacity(workload.window);
    // Written when the window is full or the oldest push is this old: well inside the
    // expiry, however slow the store (a write after `expire` may legally find nothing).
    let write_by = workload.expire / 4;
    while !shared.stop.load(Ordering::Relaxed) {
        let handle = ChunkHandle(shared.next_chunk.fetch_add(1, Ordering::Relaxed) as i64);
        let id = BufferId::new(handle);
        let chain = pick_chain(&mut rng, shared.servers.len());
        let payload = shared.payloads.pick(&mut rng);
        let push_started = Instant::now();
        push(shared, &mut log, id, &chain, payload);
        if rng.chance(workload.retry) {
            push(shared, &mut log, id, &chain, payload); // a retried push: forwarded, not stored again
        }
        if rng.chance(workload.abandon) {
            log.tally.abandoned += 1; // never written: its janitor must drop it
        } else {
            let rewrite = rng.chance(workload.rewrite);
            let push_ended = Instant::now();
            window.push_back(Pending { id, chain, payload, push_started, push_ended, rewrite });
        }
        while window.len() >= workload.window
            || window.front().is_some_and(|oldest| oldest.push_ended.elapsed() >= write_by)
        {
            let oldest = window.pop_front().expect("not empty");
            write(shared, &mut log, &oldest);
        }
    }
    for pending in window.drain(..) {
        write(shared, &mut log, &pending);
    }
    log
}

/// Three distinct servers, primary first.
fn pick_chain(rng: &mut Rng, servers: usize) -> [usize; CHAIN] {
    let mut chain = [usize::MAX; CHAIN];
    for i in 0..CHAIN {
        chain[i] = loop {
            let server = (rng.next() % servers as u64) as usize;
            if !chain[..i].contains(&server) {
                break server;
            }
        };
    }
    chain
}

/// Times one call and records it.
fn timed<T>(shared: &Shared, log: &mut ClientLog, call: Call, f: impl FnOnce() -> T) -> T {
    let before = Instant::now();
    let result = f();
    let after = Instant::now();
    let nanos = (after - before).as_nanos().max(1) as u64;
    let nanos = nanos.min(60_000_000_000);
    log.tally.latency[call as usize].record(nanos).expect("within bounds");
    let interval = ((after - shared.start).as_nanos() / INTERVAL.as_nanos()) as usize;
    if log.intervals.len() <= interval {
        log.intervals.resize_with(interval + 1, interval_histogram);
    }
    log.intervals[interval].record(nanos).expect("within bounds");
    log.tally.calls += 1;
    result
}

/// The push: each server's forward handler, in chain order: "get; if absent, store".
fn push(shared: &Shared, log: &mut ClientLog, id: BufferId, chain: &[usize; CHAIN], payload: usize) {
    let (data, _) = shared.payloads.for_chunk(payload, id.handle);
    for &server in chain {
        let store = &shared.servers[server];
        if timed(shared, log, Call::Get, || store.get(&id)).is_none() {
            timed(shared, log, Call::SetIfAbsent, || store.set_if_absent(id, data.clone()));
            log.tally.bytes_pushed += data.len() as u64;
        }
    }
    log.last_push = Some(Instant::now());
}

/// The write: the primary and then each secondary take the bytes out of their buffers and
/// check them: this chunk's bytes (same address and length: the payload at this chunk's
/// offset), and for one chunk in 64 their checksum. The contract is checked both ways: a
/// miss must come at least `expire` after the last touch began, and a hit no later than
/// `expire + tick/8` after it ended (moka's `remove` does not look at its time-to-idle, so
/// those are only counted for it). A second write of the same id must find nothing.
fn write(shared: &Shared, log: &mut ClientLog, pending: &Pending) {
    let (data, sum) = shared.payloads.for_chunk(pending.payload, pending.id.handle);
    let (expire, tick) = (shared.workload.expire, shared.workload.tick);
    for &server in &pending.chain {
        let store = &shared.servers[server];
        let started = Instant::now();
        let fetched = timed(shared, log, Call::FetchAndDelete, || store.fetch_and_delete(&pending.id));
        let ended = Instant::now();
        match fetched {
            Some(found) => {
                if found.as_ptr() != data.as_ptr() || found.len() != data.len() {
                    log.tally.fail(format!("{:?} on server {server}: other bytes than pushed", pending.id));
                } else if pending.id.handle.0 % 64 == 0 && checksum(&found) != sum {
                    log.tally.fail(format!("{:?} on server {server}: checksum mismatch", pending.id));
                }
                let idle = started.saturating_duration_since(pending.push_ended);
                if idle > expire + tick / 8 {
                    if store.expires_on_remove() {
                        log.tally
                            .fail(format!("{:?} on server {server}: returned {idle:?} after its push", pending.id));
                    } else {
                        log.tally.stale_returns += 1;
                    }
                }
            }
            // Visible for at least `expire` after its last touch began (the contract);
            // later, a miss is legal but a write the client must redo.
            None if ended.saturating_duration_since(pending.push_started) < expire => {
                let after = ended.saturating_duration_since(pending.push_started);
                log.tally.fail(format!("{:?} on server {server}: gone {after:?} after its push began", pending.id));
            }
            None => log.tally.late_writes += 1,
        }
        if pending.rewrite && timed(shared, log, Call::FetchAndDelete, || store.fetch_and_delete(&pending.id)).is_some()
        {
            log.tally.fail(format!("{:?} on server {server}: consumed twice", pending.id));
        }
    }
    log.tally.chunks_written += 1;
}
