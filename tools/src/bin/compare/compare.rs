//! The compare report: the same workloads on both implementations in one process, reported as one
//! table (see [`crate::report`]).
//!
//! The run goes in phases, each one for lockfree and then for rwlock on the same workload:
//!
//! 1. **Timer calibration**: the cost of two back-to-back `Instant::now()` calls, subtracted
//!    from every latency sample.
//! 2. **Resident phase** (heap tracked): build a buffer with the configured tick and expire,
//!    fill it with `resident` entries with empty values (heap bytes per entry), measure get
//!    hits on 1 and 2 threads, drop it (peak heap of the phase). It runs first, and rwlock
//!    before lockfree, so that nothing freed inside a tracked stretch was allocated before it
//!    (rwlock leaves no deferred garbage behind; the epoch's would be).
//! 3. **Unsynchronized floor**: a plain `HashMap` on one thread, get hits and the pipeline.
//! 4. **Pipeline and mix** (heap tracking off: every pipeline round allocates).
//! 5. **Latency phase**: a buffer whose janitor runs every 10 ms over `resident` entries; one
//!    thread times individual gets into a [`Histogram`], then get hits run on 1 and 2 threads
//!    at that cadence too, then 2 s of pipeline churn ([`CHURN`]) and the timed gets again.
//!
//! The peers (papaya, moka: `crate::PEERS`) go through phases 2, 4 (the pipeline) and 5 (the
//! timed gets, with no janitor of ours) after both of ours, for the report's second table.
//!
//! Throughput figures count buffer calls per second over all threads; a pipeline round counts
//! as 4. Every call is checked (a get of a resident key must hit, a round's fetch must find
//! its entry): a failed check is a problem, reported and failing the run.

use std::collections::HashMap;
use std::hint::black_box;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use download_buffer::{BufferId, Bytes, DownloadBuffer, ManualClock};
use download_buffer_tools::{key, measure, pick, pipeline_round, run_for, Failures, Store};

use crate::histogram::Histogram;
use crate::{counted, find_implementation, heap, Constructor, Millis, PEERS};

/// What the report runs; see the usage text for the flags.
#[derive(Clone)]
pub struct CompareConfig {
    /// Seconds per throughput figure.
    pub seconds: f64,
    /// Seconds of timed gets per implementation in the latency phase.
    pub latency_seconds: f64,
    /// Entries resident during get hits, the latency phase and the memory figures.
    pub resident: u64,
    /// Where `compare.md` and `compare.svg` go.
    pub out: PathBuf,
    /// Tick and expire of the buffers of the resident phase and the pipeline and mix.
    pub tick: Duration,
    pub expire: Duration,
}

pub const DEFAULT_SECONDS: f64 = 1.0;
pub const DEFAULT_LATENCY_SECONDS: f64 = 3.0;
pub const DEFAULT_RESIDENT: u64 = 1_000_000;
pub const DEFAULT_OUT: &str = "target/compare";
/// More would not fit the machines this runs on with room to spare (rwlock's table alone
/// takes about 200 bytes per entry at its peak).
pub const MAX_RESIDENT: u64 = 50_000_000;
/// Longest `--seconds` and `--latency-seconds`.
pub const MAX_SECONDS: f64 = 600.0;

/// How often the janitor runs in the latency phase: the cadence the targets name.
pub const LATENCY_JANITOR_PERIOD: Duration = Duration::from_millis(10);
/// Long enough that nothing expires during the latency phase.
pub const LATENCY_EXPIRE: Duration = Duration::from_secs(600);
/// Entries resident during the 90/10 mix, as in `benches/buffer.rs` and the `scaling` tool.
pub const MIX_RESIDENT: u64 = 100_000;
/// The value every pipeline and mix `set` stores (a reference-count bump per copy).
const PAYLOAD: &[u8; 64] = &[7; 64];
/// Pipeline churn on a latency-phase buffer before its gets are timed again: the issue's
/// "after 2 s of pipeline churn" (fresh entries allocated and freed beside the resident ones).
pub const CHURN: Duration = Duration::from_secs(2);
/// Timer calls to calibrate with: enough for a stable median, a few milliseconds.
const CALIBRATION_PAIRS: u32 = 1_000_000;
/// Wait after filling a latency-phase buffer, so that lockfree's first janitor run (which
/// files the whole fill into its wheel at once) is over before the first sample.
const SETTLE: Duration = Duration::from_millis(250);
/// Threads that fill the latency-phase buffers. Two writers keep one waiting at all times,
/// and std's `RwLock` lets no new reader in while a writer waits: so rwlock's fill is not
/// held up by its janitor's back-to-back 10 ms scans, which starve a lone writer (over a
/// minute for 1 M entries on a 2-core machine).
const FILL_THREADS: u64 = 2;
/// The longest a latency-phase fill may take. rwlock's fill under a 10 ms janitor over a
/// growing map can starve for minutes on a busy 2-core machine; past this, the phase runs
/// over the entries filled so far and the report says how many.
const FILL_LIMIT: Duration = Duration::from_secs(20);

/// One figure for each implementation.
#[derive(Clone, Copy, Debug, Default)]
pub struct Both<T> {
    pub lockfree: T,
    pub rwlock: T,
}

/// Throughput on one thread and on two, in buffer calls per second.
#[derive(Clone, Copy, Debug, Default)]
pub struct Scaling {
    pub one: f64,
    pub two: f64,
}

/// Get latency in nanoseconds (timer overhead subtracted), from the histogram.
#[derive(Clone, Copy, Debug, Default)]
pub struct Latency {
    pub p50: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub samples: u64,
    /// Samples above [`SLOW_GET_NS`].
    pub slow: u64,
    /// Involuntary context switches of the timing thread during the timed gets (Linux only):
    /// how often the scheduler took its core away, each a candidate for a slow sample.
    pub preempted: Option<u64>,
    pub seconds: f64,
    /// Entries resident during the phase: fewer than asked when the fill hit [`FILL_LIMIT`].
    pub resident: u64,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Memory {
    /// Heap bytes per resident entry with empty values.
    pub bytes_per_entry: f64,
    /// Highest live heap during the resident phase, above the phase's start.
    pub peak: isize,
}

/// The unsynchronized `HashMap` on one thread, in calls per second.
#[derive(Clone, Copy, Debug, Default)]
pub struct Floor {
    pub get_hit: f64,
    pub pipeline: f64,
}

/// Everything the report shows.
#[derive(Default)]
pub struct Figures {
    pub cpus: usize,
    /// The 1-minute load average when the run began and when it ended, where the system tells
    /// it (`/proc/loadavg`): other processes' load skews the 2-thread figures of a small machine.
    pub load: Option<(f64, f64)>,
    /// Median and 99th percentile of two back-to-back `Instant::now()` calls, in ns; the
    /// median is subtracted from every latency sample.
    pub timer_overhead: (u64, u64),
    /// Get hits with the configured tick (the janitor mostly idle).
    pub get_hit: Both<Scaling>,
    /// Get hits with the janitor running every 10 ms.
    pub get_hit_busy: Both<Scaling>,
    pub pipeline: Both<Scaling>,
    /// 90/10 get/set mix on two threads.
    pub mix: Both<f64>,
    pub floor: Floor,
    pub latency: Both<Latency>,
    /// The same gets after [`CHURN`] of the pipeline on the same buffer.
    pub latency_after_churn: Both<Latency>,
    pub memory: Both<Memory>,
    /// papaya and moka, on the same workloads.
    pub peers: Vec<PeerFigures>,
    /// Lockfree's janitor: its work per entry, the serial share of every set.
    pub janitor: JanitorCost,
    /// Failed checks; empty when all passed.
    pub problems: Vec<String>,
    pub wall: Duration,
}

/// What lockfree's one janitor spends per entry, in nanoseconds, timed over whole runs on
/// a manual buffer whose clock only the phase moves (so no run is cut short).
#[derive(Clone, Copy, Debug, Default)]
pub struct JanitorCost {
    /// Per new entry it files into the wheel: every `set` of a new key costs this much of
    /// the one janitor, so `1e9 / filed` bounds the sets per second of the whole process.
    pub filed: f64,
    /// Per removed entry it takes from the unlinked intake and lets go of.
    pub retired: f64,
    /// Per entry it expires (claims, unlinks, defers the drop of).
    pub expired: f64,
    pub entries: u64,
}

/// A peer's figures: the same phases as ours, without the janitor's settings (a peer has
/// no tick; its latency is measured over the same fill, with nothing of ours running).
#[derive(Clone, Copy, Debug, Default)]
pub struct PeerFigures {
    pub name: &'static str,
    pub get_hit: Scaling,
    pub pipeline: Scaling,
    pub latency: Latency,
    pub latency_after_churn: Latency,
    pub memory: Memory,
}

/// An implementation under comparison.
struct Contender {
    name: &'static str,
    build: Constructor,
    /// Janitor runs per `tick`: lockfree's timing wheel ticks 8 times per tick
    /// (`TICKS_PER_USER_TICK` in `src/clock.rs`); rwlock scans once per tick.
    janitor_runs_per_tick: u32,
}

impl Contender {
    fn build(&self, tick: Duration, expire: Duration) -> Result<Box<dyn Store>, String> {
        (self.build)(tick, expire, None).map_err(|error| format!("{}: cannot build the buffer: {error}", self.name))
    }

    /// The tick that makes the janitor run every `period`.
    fn tick_for_period(&self, period: Duration) -> Duration {
        period * self.janitor_runs_per_tick
    }
}

/// Lockfree's janitor runs per tick (see [`Contender::janitor_runs_per_tick`]).
pub const LOCKFREE_RUNS_PER_TICK: u32 = 8;

fn contenders() -> Result<Both<Contender>, String> {
    Ok(Both {
        lockfree: Contender {
            name: "lockfree",
            build: find_implementation("lockfree")?.1,
            janitor_runs_per_tick: LOCKFREE_RUNS_PER_TICK,
        },
        rwlock: Contender { name: "rwlock", build: find_implementation("rwlock")?.1, janitor_runs_per_tick: 1 },
    })
}

/// The peers (no janitor of ours: the tick they are given is ignored).
fn peers() -> Vec<Contender> {
    PEERS.iter().map(|&(name, build)| Contender { name, build, janitor_runs_per_tick: 1 }).collect()
}

/// Runs every phase; an `Err` is a failure to run at all (a buffer or thread that could not
/// start), not a failed check or a missed target.
pub fn run(config: &CompareConfig) -> Result<Figures, String> {
    let progress = Progress::start();
    let load_at_start = load_average();
    heap::set_tracking(true);
    let contenders = contenders()?;
    let mut problems = Vec::new();

    progress.step("calibrating the timer");
    let timer_overhead = calibrate_timer();

    // Rwlock first: see the module documentation.
    let (rwlock_memory, rwlock_get_hit) = resident_phase(config, &contenders.rwlock, &progress, &mut problems)?;
    let (lockfree_memory, lockfree_get_hit) = resident_phase(config, &contenders.lockfree, &progress, &mut problems)?;
    let peers = peers();
    let mut peer_figures = Vec::with_capacity(peers.len());
    for peer in &peers {
        let (memory, get_hit) = resident_phase(config, peer, &progress, &mut problems)?;
        peer_figures.push(PeerFigures { name: peer.name, get_hit, memory, ..PeerFigures::default() });
    }
    heap::set_tracking(false);

    let floor = floor_phase(config, &progress, &mut problems);

    let pipeline = Both {
        lockfree: pipeline_phase(config, &contenders.lockfree, &progress, &mut problems)?,
        rwlock: pipeline_phase(config, &contenders.rwlock, &progress, &mut problems)?,
    };
    for (peer, figures) in peers.iter().zip(&mut peer_figures) {
        figures.pipeline = pipeline_phase(config, peer, &progress, &mut problems)?;
    }
    let mix = Both {
        lockfree: mix_phase(config, &contenders.lockfree, &progress, &mut problems)?,
        rwlock: mix_phase(config, &contenders.rwlock, &progress, &mut problems)?,
    };

    let (lockfree_latency, lockfree_busy, lockfree_churned) =
        latency_phase(config, &contenders.lockfree, timer_overhead.0, &progress, &mut problems)?;
    let (rwlock_latency, rwlock_busy, rwlock_churned) =
        latency_phase(config, &contenders.rwlock, timer_overhead.0, &progress, &mut problems)?;
    for (peer, figures) in peers.iter().zip(&mut peer_figures) {
        (figures.latency, figures.latency_after_churn) =
            peer_latency_phase(config, peer, timer_overhead.0, &progress, &mut problems)?;
    }

    let janitor = janitor_phase(config, &progress, &mut problems)?;

    progress.step("done");
    Ok(Figures {
        cpus: thread::available_parallelism().map_or(0, |n| n.get()),
        load: load_at_start.zip(load_average()),
        timer_overhead,
        get_hit: Both { lockfree: lockfree_get_hit, rwlock: rwlock_get_hit },
        get_hit_busy: Both { lockfree: lockfree_busy, rwlock: rwlock_busy },
        pipeline,
        mix,
        floor,
        latency: Both { lockfree: lockfree_latency, rwlock: rwlock_latency },
        latency_after_churn: Both { lockfree: lockfree_churned, rwlock: rwlock_churned },
        memory: Both { lockfree: lockfree_memory, rwlock: rwlock_memory },
        peers: peer_figures,
        janitor,
        problems,
        wall: progress.elapsed(),
    })
}

// ---------------------------------------------------------------------------------------------
// Phases
// ---------------------------------------------------------------------------------------------

/// The median and 99th percentile of two back-to-back clock reads, in nanoseconds.
fn calibrate_timer() -> (u64, u64) {
    let mut histogram = Histogram::new();
    for _ in 0..CALIBRATION_PAIRS {
        let start = Instant::now();
        let end = Instant::now();
        histogram.record(nanos(end.duration_since(start)));
    }
    (histogram.quantile(0.5), histogram.quantile(0.99))
}

/// Build, fill (heap bytes per entry), get hits on 1 and 2 threads, drop (peak heap).
fn resident_phase(
    config: &CompareConfig,
    contender: &Contender,
    progress: &Progress,
    problems: &mut Vec<String>,
) -> Result<(Memory, Scaling), String> {
    progress.step(&format!("{}: filling {} entries, heap counted", contender.name, config.resident));
    let start = heap::live();
    heap::reset_peak();
    let buffer = contender.build(config.tick, config.expire)?;
    // The first call registers this thread with the epoch (lockfree): once per thread, not
    // per entry. The key lies outside the range the gets pick from.
    buffer.set(key(config.resident), Bytes::new());
    let before = heap::live();
    fill(&*buffer, config.resident);
    let bytes_per_entry = (heap::live() - before) as f64 / config.resident as f64;
    let what = format!("get hit, tick {}", Millis(config.tick));
    let get_hit = get_hit_scaling(config, contender.name, &what, &*buffer, progress, problems)?;
    drop(buffer);
    Ok((Memory { bytes_per_entry, peak: heap::peak() - start }, get_hit))
}

/// Lockfree's janitor's cost per entry: `resident` sets filed in one run, then removed and
/// retired in one, then set again and expired (in runs of the default budget). The table is
/// sized for them up front: a migration that the fill started and left behind would be
/// finished by these runs (janitor runs move migrations along) and counted as filing.
fn janitor_phase(
    config: &CompareConfig,
    progress: &Progress,
    problems: &mut Vec<String>,
) -> Result<JanitorCost, String> {
    progress.step(&format!("lockfree: the janitor's cost per entry, {} entries", config.resident));
    let entries = config.resident;
    let clock = ManualClock::new();
    let buffer = DownloadBuffer::builder(config.tick, config.expire)
        .clock(clock.clone())
        .manual()
        .initial_capacity(usize::try_from(entries).unwrap_or(usize::MAX))
        .build()
        .map_err(|error| format!("lockfree: cannot build the janitor phase's buffer: {error}"))?;
    let timed_runs = |want: u64, count: fn(&download_buffer::JanitorRun) -> usize| {
        let (mut done, mut spent) = (0u64, Duration::ZERO);
        while done < want {
            let start = Instant::now();
            let run = buffer.run_janitor();
            spent += start.elapsed();
            let counted = count(&run) as u64;
            if counted == 0 && !run.more_due {
                break;
            }
            done += counted;
        }
        (done, nanos(spent) as f64 / done.max(1) as f64)
    };
    let fill = || {
        for n in 0..entries {
            buffer.set(key(n), Bytes::new());
        }
    };
    fill();
    let (filed, filed_ns) = timed_runs(entries, |run| run.filed);
    for n in 0..entries {
        if buffer.fetch_and_delete(&key(n)).is_err() {
            problems.push(format!("lockfree: janitor phase: entry {n} missing"));
            break;
        }
    }
    let (retired, retired_ns) = timed_runs(entries, |run| run.retired);
    fill();
    timed_runs(entries, |run| run.filed);
    clock.advance(config.expire + config.tick);
    let (expired, expired_ns) = timed_runs(entries, |run| run.expired);
    for (what, got) in [("filed", filed), ("retired", retired), ("expired", expired)] {
        if got != entries {
            problems.push(format!("lockfree: janitor phase: {got} of {entries} entries {what}"));
        }
    }
    if !buffer.is_empty() {
        problems.push(format!("lockfree: janitor phase: {} entries left after the expiry", buffer.len()));
    }
    Ok(JanitorCost { filed: filed_ns, retired: retired_ns, expired: expired_ns, entries })
}

/// The unsynchronized floor: `HashMap<BufferId, Bytes, ahash::RandomState>` (the hasher the
/// buffers use) on one thread, get hits over `resident` entries, then the pipeline.
fn floor_phase(config: &CompareConfig, progress: &Progress, problems: &mut Vec<String>) -> Floor {
    progress.step("unsynchronized HashMap floor: get hit, pipeline");
    let duration = Duration::from_secs_f64(config.seconds);
    let resident = config.resident;
    let mut misses = 0u64;
    let mut map: HashMap<BufferId, Bytes, ahash::RandomState> = HashMap::default();
    for n in 0..resident {
        map.insert(key(n), Bytes::new());
    }
    let get_hit = run_for(duration, |i| {
        let value = map.get(&key(pick(0, i, resident))).cloned();
        misses += u64::from(value.is_none());
        black_box(value);
        1
    });
    drop(map);

    let payload = Bytes::from_static(PAYLOAD);
    let mut map: HashMap<BufferId, Bytes, ahash::RandomState> = HashMap::default();
    let pipeline = run_for(duration, |i| {
        let id = key(i);
        map.insert(id, payload.clone());
        let first = black_box(map.get(&id).cloned());
        let second = black_box(map.get(&id).cloned());
        let fetched = black_box(map.remove(&id));
        misses += u64::from(first.is_none() || second.is_none() || fetched.is_none());
        4
    });
    if misses != 0 {
        problems.push(format!("HashMap floor: {misses} lookups missed"));
    }
    Floor { get_hit, pipeline }
}

/// The pipeline on 1 thread, then on 2, each on fresh ids.
fn pipeline_phase(
    config: &CompareConfig,
    contender: &Contender,
    progress: &Progress,
    problems: &mut Vec<String>,
) -> Result<Scaling, String> {
    let buffer = contender.build(config.tick, config.expire)?;
    let payload = Bytes::from_static(PAYLOAD);
    let mut run = |threads: usize, base: u64| {
        progress.step(&format!("{}: pipeline, {}", contender.name, counted(threads as u64, "thread", "threads")));
        let failures = Failures::default();
        let rate = measure(threads, config.seconds, |thread, i| {
            pipeline_round(&*buffer, pipeline_key(base, thread, i), &payload, &failures)
        })?;
        failures.report(problems, contender.name, &format!("pipeline, {threads} threads"), "rounds failed");
        Ok::<f64, String>(rate)
    };
    let one = run(1, 1)?;
    let two = run(2, 2)?;
    Ok(Scaling { one, two })
}

/// 90% get, 10% set over `MIX_RESIDENT` entries, on 2 threads.
fn mix_phase(
    config: &CompareConfig,
    contender: &Contender,
    progress: &Progress,
    problems: &mut Vec<String>,
) -> Result<f64, String> {
    progress.step(&format!("{}: 90/10 get/set mix, 2 threads", contender.name));
    let buffer = contender.build(config.tick, config.expire)?;
    fill(&*buffer, MIX_RESIDENT);
    let payload = Bytes::from_static(PAYLOAD);
    let failures = Failures::default();
    let rate = measure(2, config.seconds, |thread, i| {
        let id = key(pick(thread, i, MIX_RESIDENT));
        if i % 10 == 0 {
            buffer.set(id, payload.clone());
        } else if buffer.get(&id).is_none() {
            failures.add();
        }
        1
    })?;
    failures.report(problems, contender.name, "90/10 mix", "gets missed");
    Ok(rate)
}

/// Timed gets with the janitor running every 10 ms over `resident` entries, then get-hit
/// throughput at that cadence.
fn latency_phase(
    config: &CompareConfig,
    contender: &Contender,
    timer_overhead: u64,
    progress: &Progress,
    problems: &mut Vec<String>,
) -> Result<(Latency, Scaling, Latency), String> {
    progress.step(&format!("{}: filling {} entries, janitor every 10 ms", contender.name, config.resident));
    let buffer: Arc<dyn Store> =
        Arc::from(contender.build(contender.tick_for_period(LATENCY_JANITOR_PERIOD), LATENCY_EXPIRE)?);
    let latency = timed_gets_over_a_fill(config, contender.name, &buffer, timer_overhead, progress, problems)?;
    let config = &CompareConfig { resident: latency.resident, ..config.clone() };
    let get_hit =
        get_hit_scaling(config, contender.name, "get hit, janitor every 10 ms", &*buffer, progress, problems)?;
    let after_churn = timed_gets_after_churn(config, contender.name, &*buffer, timer_overhead, progress, problems)?;
    Ok((latency, get_hit, after_churn))
}

/// A peer's get latency over the same fill (no janitor of ours; moka's housekeeping runs
/// within its calls), quiet and after churn.
fn peer_latency_phase(
    config: &CompareConfig,
    peer: &Contender,
    timer_overhead: u64,
    progress: &Progress,
    problems: &mut Vec<String>,
) -> Result<(Latency, Latency), String> {
    progress.step(&format!("{}: filling {} entries", peer.name, config.resident));
    let store: Arc<dyn Store> = Arc::from(peer.build(LATENCY_JANITOR_PERIOD, LATENCY_EXPIRE)?);
    let latency = timed_gets_over_a_fill(config, peer.name, &store, timer_overhead, progress, problems)?;
    let config = &CompareConfig { resident: latency.resident, ..config.clone() };
    let after_churn = timed_gets_after_churn(config, peer.name, &*store, timer_overhead, progress, problems)?;
    Ok((latency, after_churn))
}

/// [`CHURN`] of the pipeline on one thread (fresh ids: every round allocates and frees an
/// entry), then timed gets over the resident entries, which the churn left in place.
fn timed_gets_after_churn(
    config: &CompareConfig,
    name: &str,
    store: &dyn Store,
    timer_overhead: u64,
    progress: &Progress,
    problems: &mut Vec<String>,
) -> Result<Latency, String> {
    progress.step(&format!("{name}: {} s of pipeline churn", CHURN.as_secs_f64()));
    let payload = Bytes::from_static(PAYLOAD);
    let failures = Failures::default();
    measure(1, CHURN.as_secs_f64(), |thread, i| {
        pipeline_round(store, pipeline_key(3, thread, i), &payload, &failures)
    })?;
    failures.report(problems, name, "churn before the timed gets", "rounds failed");
    progress.step(&format!("{name}: get latency after the churn, {} s", config.latency_seconds));
    Ok(timed_gets(config, name, store, config.resident, timer_overhead, problems))
}

/// Fills `store` from [`FILL_THREADS`] threads (up to [`FILL_LIMIT`]), lets it settle, and
/// times single gets over what was filled for `latency_seconds`.
fn timed_gets_over_a_fill(
    config: &CompareConfig,
    name: &str,
    store: &Arc<dyn Store>,
    timer_overhead: u64,
    progress: &Progress,
    problems: &mut Vec<String>,
) -> Result<Latency, String> {
    let resident = fill_in_parallel(store, config.resident, FILL_THREADS, Instant::now() + FILL_LIMIT)?;
    if resident < config.resident {
        progress.step(&format!(
            "{name}: the fill was starved: {resident} of {} entries in {} s; measuring over those",
            config.resident,
            FILL_LIMIT.as_secs()
        ));
    }
    thread::sleep(SETTLE);
    progress.step(&format!("{name}: get latency, {} s", config.latency_seconds));
    Ok(timed_gets(config, name, &**store, resident, timer_overhead, problems))
}

/// Single gets of random keys among the first `resident`, timed for `latency_seconds`.
fn timed_gets(
    config: &CompareConfig,
    name: &str,
    store: &dyn Store,
    resident: u64,
    timer_overhead: u64,
    problems: &mut Vec<String>,
) -> Latency {
    let failures = Failures::default();
    let duration = Duration::from_secs_f64(config.latency_seconds);
    let switches_before = involuntary_switches();
    let (histogram, elapsed) = time_gets(store, resident, duration, timer_overhead, &failures);
    let preempted = involuntary_switches().zip(switches_before).map(|(after, before)| after.saturating_sub(before));
    failures.report(problems, name, "get latency", "gets missed");
    Latency {
        p50: histogram.quantile(0.5),
        p99: histogram.quantile(0.99),
        p999: histogram.quantile(0.999),
        max: histogram.max(),
        samples: histogram.count(),
        slow: histogram.count_above(SLOW_GET_NS),
        preempted,
        seconds: elapsed.as_secs_f64(),
        resident,
    }
}

// ---------------------------------------------------------------------------------------------
// Workloads
// ---------------------------------------------------------------------------------------------

/// A fresh pipeline id: one id space per run (`base`) and per thread.
fn pipeline_key(base: u64, thread: u64, round: u64) -> BufferId {
    key(base << 48 | thread << 40 | round)
}

/// Stores entries `0..n` with empty values (no heap of their own: the figures are the
/// buffer's), on this thread: every allocation of the fill is then the buffer's.
fn fill(buffer: &dyn Store, n: u64) {
    for i in 0..n {
        buffer.set(key(i), Bytes::new());
    }
}

/// [`fill`] from `threads` threads, each taking every `threads`-th entry.
/// Fills keys `0..n` from `threads` threads until done or `deadline`; returns how many
/// leading keys are surely set. Threads still blocked in a `set` at the deadline (a writer
/// starved by rwlock's janitor can wait for minutes) are left behind: told to stop, not
/// joined; they hold their own `Arc` of the buffer and end with the process at worst.
fn fill_in_parallel(buffer: &Arc<dyn Store>, n: u64, threads: u64, deadline: Instant) -> Result<u64, String> {
    let stop = Arc::new(AtomicBool::new(false));
    let filled: Arc<Vec<AtomicU64>> = Arc::new((0..threads).map(|_| AtomicU64::new(0)).collect());
    let handles = (0..threads)
        .map(|first| {
            let (buffer, stop, filled) = (Arc::clone(buffer), Arc::clone(&stop), Arc::clone(&filled));
            thread::Builder::new().name(format!("fill-{first}")).spawn(move || {
                // Thread `first` sets keys first, first + threads, ...
                for i in (first..n).step_by(threads as usize) {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    buffer.set(key(i), Bytes::new());
                    filled[first as usize].fetch_add(1, Ordering::Release);
                }
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| format!("cannot start a filling thread: {error}"))?;
    while !handles.iter().all(|handle| handle.is_finished()) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::Relaxed);
    for handle in handles {
        if handle.is_finished() {
            handle.join().map_err(|_| String::from("a filling thread panicked"))?;
        }
    }
    // Every key below `least * threads` was set (each thread got at least that far).
    let least = filled.iter().map(|count| count.load(Ordering::Acquire)).min().unwrap_or(0);
    Ok((least * threads).min(n))
}

/// Get hits over `resident` entries on 1 thread, then on 2.
fn get_hit_scaling(
    config: &CompareConfig,
    name: &str,
    what: &str,
    buffer: &dyn Store,
    progress: &Progress,
    problems: &mut Vec<String>,
) -> Result<Scaling, String> {
    let resident = config.resident;
    let mut run = |threads: usize| {
        progress.step(&format!("{name}: {what}, {}", counted(threads as u64, "thread", "threads")));
        let failures = Failures::default();
        let rate = measure(threads, config.seconds, |thread, i| {
            if buffer.get(&key(pick(thread, i, resident))).is_none() {
                failures.add();
            }
            1
        })?;
        failures.report(problems, name, &format!("{what}, {threads} threads"), "gets missed");
        Ok::<f64, String>(rate)
    };
    Ok(Scaling { one: run(1)?, two: run(2)? })
}

/// Times single gets of random resident keys for `duration`; samples in nanoseconds, less
/// the timer's own cost. Returns the histogram and the time taken.
/// A get slower than this has almost certainly lost its core (a lookup is a few cache misses).
pub const SLOW_GET_NS: u64 = 100_000;

/// The calling thread's involuntary context switches so far, from `/proc/thread-self/status`;
/// `None` where that file does not exist.
fn involuntary_switches() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/thread-self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("nonvoluntary_ctxt_switches:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn time_gets(
    buffer: &dyn Store,
    resident: u64,
    duration: Duration,
    timer_overhead: u64,
    failures: &Failures,
) -> (Histogram, Duration) {
    let mut histogram = Histogram::new();
    let start = Instant::now();
    let mut i = 0;
    loop {
        let id = key(pick(0, i, resident));
        i += 1;
        let before = Instant::now();
        let value = buffer.get(&id);
        let after = Instant::now();
        if value.is_none() {
            failures.add();
        }
        drop(value); // outside the timed span, as the caller's use of the bytes would be
        histogram.record(nanos(after.duration_since(before)).saturating_sub(timer_overhead));
        if after.duration_since(start) >= duration {
            return (histogram, after.duration_since(start));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Measuring
// ---------------------------------------------------------------------------------------------

/// The 1-minute load average, on systems that have `/proc/loadavg`.
fn load_average() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// Progress lines on stderr, stamped with the time since the run began.
struct Progress(Instant);

impl Progress {
    fn start() -> Progress {
        Progress(Instant::now())
    }

    fn step(&self, what: &str) {
        eprintln!("[{:5.1} s] {what}", self.elapsed().as_secs_f64());
    }

    fn elapsed(&self) -> Duration {
        self.0.elapsed()
    }
}
