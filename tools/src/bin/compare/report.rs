//! The compare report: one Markdown table with each target's verdict (printed, and written
//! to `compare.md`) and a hand-written SVG bar chart (`compare.svg`).

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use crate::compare::{
    Both, CompareConfig, Figures, Scaling, LATENCY_EXPIRE, LATENCY_JANITOR_PERIOD, LOCKFREE_RUNS_PER_TICK, MIX_RESIDENT,
};
use crate::Millis;

// The targets of the tracker's issue 5, all about lockfree (`DownloadBuffer`).
/// Get hits, 1 M resident, 1 thread: at least this many times rwlock's.
const GET_HIT_VS_RWLOCK: f64 = 5.0;
/// Get hits on 2 threads: at least this many times lockfree's own 1-thread figure.
const GET_HIT_SCALING: f64 = 1.8;
const PIPELINE_VS_RWLOCK: f64 = 2.0;
const PIPELINE_SCALING: f64 = 1.6;
/// Single-thread figures: at least this share of the unsynchronized `HashMap`'s.
const FLOOR_SHARE: f64 = 0.5;
const P999_LIMIT_NS: u64 = 2_000;
const MAX_LIMIT_NS: u64 = 1_000_000;
const BYTES_PER_ENTRY_LIMIT: f64 = 128.0;
const BYTES_PER_ENTRY_AIM: f64 = 96.0;
// The targets of the tracker's issue 14, against the peers.
/// Get hits and the pipeline, 1 thread: at least this many times papaya's.
const VS_PAPAYA: f64 = 1.0;
/// Heap bytes per entry, empty values: at most this (issue 14; papaya's + 10 is the aim).
const BYTES_PER_ENTRY_PEER_LIMIT: f64 = 96.0;
/// The sets per second one janitor must keep up with (issue 14: the serial share).
const JANITOR_CEILING_TARGET: f64 = 100e6;
/// Latency samples each implementation should record for a trustworthy p99.9.
const MIN_SAMPLES: u64 = 1_000_000;

/// The rendered report.
pub struct Report {
    pub markdown: String,
    pub svg: String,
    /// One line per missed target (empty when all were met).
    pub misses: Vec<String>,
}

/// One line of the table.
struct Row {
    measure: String,
    lockfree: String,
    rwlock: String,
    ratio: String,
    target: String,
    verdict: String,
}

impl Row {
    /// A row without a target.
    fn new(measure: String, lockfree: String, rwlock: String, ratio: String) -> Row {
        Row { measure, lockfree, rwlock, ratio, target: "—".into(), verdict: "—".into() }
    }

    /// Sets the target and its verdict; a miss is also listed in `misses`.
    fn target(mut self, target: &str, met: bool, detail: &str, misses: &mut Vec<String>) -> Row {
        self.target = target.into();
        let detail = if detail.is_empty() { String::new() } else { format!(" ({detail})") };
        self.verdict = if met { format!("met{detail}") } else { format!("**missed**{detail}") };
        if !met {
            misses.push(format!("{}: {target}{detail}", self.measure));
        }
        self
    }
}

pub fn build(config: &CompareConfig, figures: &Figures) -> Report {
    let mut misses = Vec::new();
    let mut rows = throughput_rows(config, figures, &mut misses);
    rows.extend(latency_rows(config, figures, &mut misses));
    rows.extend(memory_rows(config, figures, &mut misses));
    rows.extend(janitor_rows(figures, &mut misses));
    let peers = peer_table(config, figures, &mut misses);
    let markdown = markdown(config, figures, &rows, &peers, &misses);
    Report { markdown, svg: svg(config, figures), misses }
}

/// Writes `compare.md` and `compare.svg` into `dir`, creating it.
pub fn write(report: &Report, dir: &Path) -> Result<(), String> {
    fs::create_dir_all(dir).map_err(|error| format!("cannot create {}: {error}", dir.display()))?;
    for (name, text) in [("compare.md", &report.markdown), ("compare.svg", &report.svg)] {
        let path = dir.join(name);
        fs::write(&path, text).map_err(|error| format!("cannot write {}: {error}", path.display()))?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Rows
// ---------------------------------------------------------------------------------------------

fn throughput_rows(config: &CompareConfig, figures: &Figures, misses: &mut Vec<String>) -> Vec<Row> {
    let resident = count(config.resident);
    let quiet = format!("tick {}", Millis(config.tick));
    let mut rows = Vec::new();
    for (get_hit, setting) in [(figures.get_hit, quiet.as_str()), (figures.get_hit_busy, "janitor every 10 ms")] {
        let what = format!("get hit, {resident} resident, {setting}");
        rows.extend(scaling_rows(&what, get_hit, GET_HIT_VS_RWLOCK, GET_HIT_SCALING, misses));
    }
    rows.push(floor_row(
        &format!("get hit, {resident} resident, 1 thread, {quiet}"),
        figures.get_hit,
        figures.floor.get_hit,
        misses,
    ));
    let pipeline = format!("pipeline, {quiet}");
    rows.extend(scaling_rows(&pipeline, figures.pipeline, PIPELINE_VS_RWLOCK, PIPELINE_SCALING, misses));
    rows.push(floor_row(&format!("pipeline, 1 thread, {quiet}"), figures.pipeline, figures.floor.pipeline, misses));
    rows.push(Row::new(
        format!("90/10 get/set, {} resident, 2 threads, {quiet}", count(MIX_RESIDENT)),
        rate(figures.mix.lockfree),
        rate(figures.mix.rwlock),
        ratio_text(figures.mix.lockfree, figures.mix.rwlock),
    ));
    rows
}

/// A 1-thread row (target: `vs_rwlock` times rwlock) and a 2-thread row (target: `scaling`
/// times lockfree's own 1-thread figure).
fn scaling_rows(what: &str, both: Both<Scaling>, vs_rwlock: f64, scaling: f64, misses: &mut Vec<String>) -> [Row; 2] {
    let one_ratio = both.lockfree.one / both.rwlock.one;
    let one = Row::new(
        format!("{what}, 1 thread"),
        rate(both.lockfree.one),
        rate(both.rwlock.one),
        ratio_text(both.lockfree.one, both.rwlock.one),
    )
    .target(&format!("≥ {vs_rwlock}× rwlock"), one_ratio >= vs_rwlock, "", misses);
    let gain = both.lockfree.two / both.lockfree.one;
    let two = Row::new(
        format!("{what}, 2 threads"),
        rate(both.lockfree.two),
        rate(both.rwlock.two),
        ratio_text(both.lockfree.two, both.rwlock.two),
    )
    .target(&format!("≥ {scaling}× its 1 thread"), gain >= scaling, &format!("{gain:.2}×"), misses);
    [one, two]
}

/// Each implementation's 1-thread figure as a share of the unsynchronized floor's.
fn floor_row(what: &str, both: Both<Scaling>, floor: f64, misses: &mut Vec<String>) -> Row {
    let share = both.lockfree.one / floor;
    Row::new(
        format!("{what}: share of unsynchronized HashMap ({})", rate(floor)),
        percent(share),
        percent(both.rwlock.one / floor),
        "—".into(),
    )
    .target(&format!("≥ {:.0}% of the HashMap", FLOOR_SHARE * 100.0), share >= FLOOR_SHARE, "", misses)
}

fn latency_rows(config: &CompareConfig, figures: &Figures, misses: &mut Vec<String>) -> Vec<Row> {
    let (lockfree, rwlock) = (figures.latency.lockfree, figures.latency.rwlock);
    let setting = format!("janitor every 10 ms, {} resident", count(config.resident));
    let row = |name: &str, pick: fn(&crate::compare::Latency) -> u64| {
        let (a, b) = (pick(&lockfree), pick(&rwlock));
        Row::new(format!("get latency {name}, {setting}"), nanos(a), nanos(b), ratio_text(a as f64, b as f64))
    };
    let short: Vec<&str> = [("lockfree", lockfree.samples), ("rwlock", rwlock.samples)]
        .iter()
        .filter(|(_, samples)| *samples < MIN_SAMPLES)
        .map(|(name, _)| *name)
        .collect();
    let churned = figures.latency_after_churn;
    let churn = format!("after {} s of pipeline churn", crate::compare::CHURN.as_secs());
    let churned_row = |name: &str, pick: fn(&crate::compare::Latency) -> u64| {
        let (a, b) = (pick(&churned.lockfree), pick(&churned.rwlock));
        Row::new(format!("get latency {name}, {setting}, {churn}"), nanos(a), nanos(b), ratio_text(a as f64, b as f64))
    };
    let samples_verdict = if short.is_empty() { "met".into() } else { format!("short: {}", short.join(", ")) };
    vec![
        row("p50", |l| l.p50),
        row("p99", |l| l.p99),
        row("p99.9", |l| l.p999).target(
            &format!("≤ {}", nanos(P999_LIMIT_NS)),
            lockfree.p999 <= P999_LIMIT_NS,
            "",
            misses,
        ),
        row("max", |l| l.max).target(&format!("≤ {}", nanos(MAX_LIMIT_NS)), lockfree.max <= MAX_LIMIT_NS, "", misses),
        churned_row("p99.9", |l| l.p999).target(
            &format!("≤ {}", nanos(P999_LIMIT_NS)),
            churned.lockfree.p999 <= P999_LIMIT_NS,
            "",
            misses,
        ),
        churned_row("max", |l| l.max).target(
            &format!("≤ {}", nanos(MAX_LIMIT_NS)),
            churned.lockfree.max <= MAX_LIMIT_NS,
            "",
            misses,
        ),
        Row::new(
            format!("gets slower than {} / switches, after churn", nanos(crate::compare::SLOW_GET_NS)),
            slow_and_preempted(&churned.lockfree),
            slow_and_preempted(&churned.rwlock),
            "—".into(),
        ),
        Row {
            measure: format!(
                "gets slower than {} / involuntary context switches of the timing thread",
                nanos(crate::compare::SLOW_GET_NS)
            ),
            lockfree: slow_and_preempted(&lockfree),
            rwlock: slow_and_preempted(&rwlock),
            ratio: "—".into(),
            target: "—".into(),
            verdict: "—".into(),
        },
        Row {
            measure: "timed gets (latency samples)".into(),
            lockfree: format!("{} in {:.1} s", count_approx(lockfree.samples), lockfree.seconds),
            rwlock: format!("{} in {:.1} s", count_approx(rwlock.samples), rwlock.seconds),
            ratio: ratio_text(lockfree.samples as f64, rwlock.samples as f64),
            target: format!("≥ {} each (measurement)", count(MIN_SAMPLES)),
            verdict: samples_verdict,
        },
    ]
}

/// "slow / switches", or "slow / ?" where the switches could not be read.
fn slow_and_preempted(latency: &crate::compare::Latency) -> String {
    match latency.preempted {
        Some(switches) => format!("{} / {switches}", latency.slow),
        None => format!("{} / ?", latency.slow),
    }
}

fn memory_rows(config: &CompareConfig, figures: &Figures, misses: &mut Vec<String>) -> Vec<Row> {
    let memory = figures.memory;
    let per_entry = memory.lockfree.bytes_per_entry;
    let aim = if per_entry <= BYTES_PER_ENTRY_AIM { "aim met" } else { "aim missed" };
    vec![
        Row::new(
            "heap bytes per entry, empty values".into(),
            format!("{per_entry:.1} B"),
            format!("{:.1} B", memory.rwlock.bytes_per_entry),
            ratio_text(per_entry, memory.rwlock.bytes_per_entry),
        )
        .target(
            &format!("≤ {BYTES_PER_ENTRY_LIMIT:.0} B (aim {BYTES_PER_ENTRY_AIM:.0})"),
            per_entry <= BYTES_PER_ENTRY_LIMIT,
            aim,
            misses,
        ),
        Row::new(
            format!("peak heap, {}-resident phase", count(config.resident)),
            mib(memory.lockfree.peak),
            mib(memory.rwlock.peak),
            ratio_text(memory.lockfree.peak as f64, memory.rwlock.peak as f64),
        ),
    ]
}

/// Lockfree's janitor: the serial share of every set (rwlock has no such stage: its sets
/// take the write lock instead).
fn janitor_rows(figures: &Figures, misses: &mut Vec<String>) -> Vec<Row> {
    let janitor = figures.janitor;
    if janitor.entries == 0 {
        return Vec::new();
    }
    let ceiling = 1e9 / janitor.filed;
    let per_entry = |what: &str, ns: f64| {
        Row::new(
            format!("janitor: ns per entry {what}, {}", count(janitor.entries)),
            format!("{ns:.1} ns"),
            "—".into(),
            "—".into(),
        )
    };
    vec![
        per_entry("filed", janitor.filed),
        Row::new(
            "janitor: the sets of new keys per second one janitor can file (1 / filed; the filing share only)".into(),
            rate(ceiling),
            "—".into(),
            "—".into(),
        )
        .target(&format!("≥ {}", rate(JANITOR_CEILING_TARGET)), ceiling >= JANITOR_CEILING_TARGET, "", misses),
        per_entry("retired (removed)", janitor.retired),
        Row::new(
            "janitor: pipeline rounds per second one janitor can serve (1 / (filed + retired))".into(),
            rate(1e9 / (janitor.filed + janitor.retired)),
            "—".into(),
            "—".into(),
        ),
        per_entry("expired", janitor.expired),
    ]
}

// ---------------------------------------------------------------------------------------------
// Peers
// ---------------------------------------------------------------------------------------------

/// The second table: lockfree beside the peers (papaya first: the ratios are against it),
/// with issue 14's targets. Lockfree's latency is the 10 ms janitor's (the peers have none).
fn peer_table(config: &CompareConfig, figures: &Figures, misses: &mut Vec<String>) -> String {
    let Some(papaya) = figures.peers.first() else { return String::new() };
    let resident = count(config.resident);
    let quiet = format!("tick {}", Millis(config.tick));
    let mut out = String::new();
    let _ = writeln!(
        out,
        "### Beside the peers
"
    );
    let names: Vec<&str> = figures.peers.iter().map(|peer| peer.name).collect();
    let _ = writeln!(
        out,
        "| measure | lockfree | {} | lockfree / {} | target (lockfree) | verdict |",
        names.join(" | "),
        papaya.name
    );
    let _ = writeln!(out, "|---|---:|{}---:|---|---|", "---:|".repeat(names.len()));
    let mut row = |measure: String,
                   ours: f64,
                   theirs: &dyn Fn(&crate::compare::PeerFigures) -> f64,
                   show: fn(f64) -> String,
                   target: Option<(String, bool)>| {
        let peers: Vec<String> = figures.peers.iter().map(|peer| show(theirs(peer))).collect();
        let (target, verdict) = match target {
            Some((target, met)) => {
                if !met {
                    misses.push(format!("{measure}: {target}"));
                }
                let verdict = if met { "met".to_string() } else { "**missed**".to_string() };
                (target, verdict)
            }
            None => ("—".to_string(), "—".to_string()),
        };
        let _ = writeln!(
            out,
            "| {measure} | {} | {} | {} | {target} | {verdict} |",
            show(ours),
            peers.join(" | "),
            ratio_text(ours, theirs(papaya))
        );
    };
    let vs_papaya =
        |ours: f64, theirs: f64| Some((format!("≥ {VS_PAPAYA:.1}× {}", papaya.name), ours >= VS_PAPAYA * theirs));
    let (get_hit, pipeline) = (figures.get_hit.lockfree, figures.pipeline.lockfree);
    row(
        format!("get hit, {resident} resident, 1 thread, {quiet}"),
        get_hit.one,
        &|peer| peer.get_hit.one,
        rate,
        vs_papaya(get_hit.one, papaya.get_hit.one),
    );
    row(format!("get hit, {resident} resident, 2 threads, {quiet}"), get_hit.two, &|peer| peer.get_hit.two, rate, None);
    row(
        format!("pipeline, 1 thread, {quiet}"),
        pipeline.one,
        &|peer| peer.pipeline.one,
        rate,
        vs_papaya(pipeline.one, papaya.pipeline.one),
    );
    row(format!("pipeline, 2 threads, {quiet}"), pipeline.two, &|peer| peer.pipeline.two, rate, None);
    let latency = figures.latency.lockfree;
    let ns = |ns: f64| nanos(ns as u64);
    row(
        format!("get latency p99.9, {resident} resident"),
        latency.p999 as f64,
        &|peer| peer.latency.p999 as f64,
        ns,
        None,
    );
    row(format!("get latency max, {resident} resident"), latency.max as f64, &|peer| peer.latency.max as f64, ns, None);
    let churned = figures.latency_after_churn.lockfree;
    let churn = format!("after {} s of pipeline churn", crate::compare::CHURN.as_secs());
    row(
        format!("get latency p99.9, {resident} resident, {churn}"),
        churned.p999 as f64,
        &|peer| peer.latency_after_churn.p999 as f64,
        ns,
        None,
    );
    row(
        format!("get latency max, {resident} resident, {churn}"),
        churned.max as f64,
        &|peer| peer.latency_after_churn.max as f64,
        ns,
        None,
    );
    let per_entry = figures.memory.lockfree.bytes_per_entry;
    row(
        "heap bytes per entry, empty values".into(),
        per_entry,
        &|peer| peer.memory.bytes_per_entry,
        |bytes| format!("{bytes:.1} B"),
        Some((
            format!("≤ {BYTES_PER_ENTRY_PEER_LIMIT:.0} B (aim: {} + 10)", papaya.name),
            per_entry <= BYTES_PER_ENTRY_PEER_LIMIT,
        )),
    );
    let _ = writeln!(
        out,
        "\nThe peers' latency is taken over the same fill with no janitor of ours running \
         (papaya has none; moka's housekeeping runs within its calls); lockfree's is the 10 ms \
         janitor's (table above). papaya: no expiry at all; moka: time-to-idle {}.\n",
        Millis(LATENCY_EXPIRE)
    );
    out
}

// ---------------------------------------------------------------------------------------------
// Markdown
// ---------------------------------------------------------------------------------------------

fn markdown(config: &CompareConfig, figures: &Figures, rows: &[Row], peers: &str, misses: &[String]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "## Compare report: lockfree (`DownloadBuffer`) vs rwlock (`RwLockBuffer`)\n");
    out.push_str(&settings(config, figures));
    out.push('\n');
    out.push_str("| measure | lockfree | rwlock | lockfree / rwlock | target (lockfree) | verdict |\n");
    out.push_str("|---|---:|---:|---:|---|---|\n");
    for row in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            row.measure, row.lockfree, row.rwlock, row.ratio, row.target, row.verdict
        );
    }
    out.push('\n');
    out.push_str(peers);
    match misses.len() {
        0 => out.push_str("Every target met.\n"),
        n => {
            let _ = writeln!(out, "{n} target(s) missed:\n");
            for miss in misses {
                let _ = writeln!(out, "- {miss}");
            }
        }
    }
    for (name, latency) in [("lockfree", figures.latency.lockfree), ("rwlock", figures.latency.rwlock)] {
        if latency.resident < config.resident {
            let _ = writeln!(
                out,
                "\n{name}'s fill under the 10 ms janitor was starved: {} of {} entries in the time allowed; \
                 its *janitor every 10 ms* rows and latency ran over those.",
                latency.resident, config.resident
            );
        }
        if latency.samples < MIN_SAMPLES {
            let _ = writeln!(
                out,
                "\nOnly {} latency samples for {name} in {:.1} s (the slowest get took {}): its percentiles \
                 rest on that many.",
                latency.samples,
                latency.seconds,
                nanos(latency.max)
            );
        }
    }
    if !figures.problems.is_empty() {
        out.push_str("\nFAILED checks:\n\n");
        for problem in &figures.problems {
            let _ = writeln!(out, "- {problem}");
        }
    }
    out
}

/// The settings every figure was taken with.
fn settings(config: &CompareConfig, figures: &Figures) -> String {
    let resident = count(config.resident);
    let (tick, expire) = (Millis(config.tick), Millis(config.expire));
    let wheel = Millis(config.tick / LOCKFREE_RUNS_PER_TICK);
    let latency_tick = Millis(LATENCY_JANITOR_PERIOD * LOCKFREE_RUNS_PER_TICK);
    let period = Millis(LATENCY_JANITOR_PERIOD);
    let (overhead_p50, overhead_p99) = figures.timer_overhead;
    let mut out = String::new();
    let load = match figures.load {
        Some((start, end)) => format!("; load average {start:.2} at the start, {end:.2} at the end"),
        None => String::new(),
    };
    let _ = writeln!(
        out,
        "- Machine: {} CPUs (`available_parallelism`){load}; whole run {:.1} s.",
        figures.cpus,
        figures.wall.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "- Throughput: buffer calls per second over all threads, {} s per figure (lockfree, then \
         rwlock). Rows marked *tick {tick}* use `new({tick}, {expire})`: lockfree's wheel ticks \
         every {wheel} (tick/8) and its janitor thread takes the intakes at least every 100 ms \
         (every 10 ms while they are busy), rwlock's janitor scans every {tick}. Rows marked \
         *janitor every {period}* use the latency settings below.",
        config.seconds
    );
    let _ = writeln!(
        out,
        "- Get hit: {resident} resident entries with empty values, keys picked pseudo-randomly. \
         Pipeline: set, get, get, fetch_and_delete on fresh ids with 64-byte values (4 calls a \
         round). Mix: 90% get, 10% set over {} resident. Floor: an unsynchronized \
         `std::collections::HashMap<BufferId, Bytes, ahash::RandomState>` on one thread.",
        count(MIX_RESIDENT)
    );
    let _ = writeln!(
        out,
        "- Latency: one thread times each `get` between two `Instant::now()` calls for {} s while \
         the janitor runs every {period} over {resident} resident entries: lockfree \
         `DownloadBuffer::new({latency_tick}, {})` (wheel tick = tick/8 = {period}), rwlock \
         `RwLockBuffer::new({period}, {})` (a full scan every tick), filled from two threads; \
         nothing expires. Timer \
         overhead (two back-to-back `Instant::now()`): p50 {overhead_p50} ns, p99 {overhead_p99} \
         ns; the p50 is subtracted from every sample. Percentiles read from an hdrhistogram \
         (three significant digits).",
        config.latency_seconds,
        Millis(LATENCY_EXPIRE),
        Millis(LATENCY_EXPIRE)
    );
    let _ = writeln!(
        out,
        "- Memory: a counting global allocator. Bytes per entry = (live heap after inserting \
         {resident} entries with empty values − before) / {resident}; peak = the highest live \
         heap while the buffer was built, filled, read by the tick-{tick} get-hit rows and \
         dropped, above the live heap before it."
    );
    out
}

// ---------------------------------------------------------------------------------------------
// SVG
// ---------------------------------------------------------------------------------------------

const WIDTH: f64 = 900.0;
/// Right edge of the bar labels, and the plot's extent.
const LABEL_RIGHT: f64 = 300.0;
const PLOT_LEFT: f64 = 310.0;
const PLOT_RIGHT: f64 = 820.0;
const BAR: f64 = 18.0;
const GAP: f64 = 6.0;

/// Two panels: lockfree/rwlock throughput ratios, and get latency percentiles.
fn svg(config: &CompareConfig, figures: &Figures) -> String {
    let tick = format!("tick {}", Millis(config.tick));
    let ratios: Vec<(String, f64)> = [
        (format!("get hit, 1 thread, {tick}"), figures.get_hit.lockfree.one, figures.get_hit.rwlock.one),
        (format!("get hit, 2 threads, {tick}"), figures.get_hit.lockfree.two, figures.get_hit.rwlock.two),
        ("get hit, 1 thread, janitor 10 ms".into(), figures.get_hit_busy.lockfree.one, figures.get_hit_busy.rwlock.one),
        (
            "get hit, 2 threads, janitor 10 ms".into(),
            figures.get_hit_busy.lockfree.two,
            figures.get_hit_busy.rwlock.two,
        ),
        (format!("pipeline, 1 thread, {tick}"), figures.pipeline.lockfree.one, figures.pipeline.rwlock.one),
        (format!("pipeline, 2 threads, {tick}"), figures.pipeline.lockfree.two, figures.pipeline.rwlock.two),
        (format!("90/10 mix, 2 threads, {tick}"), figures.mix.lockfree, figures.mix.rwlock),
    ]
    .into_iter()
    .map(|(label, lockfree, rwlock)| (label, lockfree / rwlock))
    .filter(|(_, ratio)| ratio.is_finite() && *ratio > 0.0)
    .collect();
    let (lockfree, rwlock) = (figures.latency.lockfree, figures.latency.rwlock);
    let latencies = [
        ("p50", lockfree.p50, rwlock.p50),
        ("p99", lockfree.p99, rwlock.p99),
        ("p99.9", lockfree.p999, rwlock.p999),
        ("max", lockfree.max, rwlock.max),
    ];

    let mut chart = Chart::new();
    chart.title("Throughput, lockfree / rwlock (log scale; right of 1× = lockfree faster)");
    chart.ratio_bars(&ratios);
    chart.title("Get latency with the janitor every 10 ms (log scale)");
    chart.latency_bars(&latencies);
    chart.finish()
}

/// An SVG drawn top to bottom.
struct Chart {
    body: String,
    /// The next free y coordinate.
    y: f64,
}

/// A base-10 logarithmic axis from `10^lo` to `10^hi` over the plot's width.
struct LogAxis {
    lo: i32,
    hi: i32,
}

impl LogAxis {
    /// An axis spanning whole decades around `values` (all positive).
    fn around(values: impl Iterator<Item = f64>) -> LogAxis {
        let (min, max) = values.fold((f64::MAX, f64::MIN), |(min, max), v| (min.min(v), max.max(v)));
        let lo = min.log10().floor() as i32;
        let hi = (max.log10().ceil() as i32).max(lo + 1);
        LogAxis { lo, hi }
    }

    fn x(&self, value: f64) -> f64 {
        let position = (value.log10() - f64::from(self.lo)) / f64::from(self.hi - self.lo);
        PLOT_LEFT + position.clamp(0.0, 1.0) * (PLOT_RIGHT - PLOT_LEFT)
    }

    fn decades(&self) -> impl Iterator<Item = f64> {
        (self.lo..=self.hi).map(|power| 10f64.powi(power))
    }
}

impl Chart {
    fn new() -> Chart {
        Chart { body: String::new(), y: 10.0 }
    }

    fn title(&mut self, text: &str) {
        self.y += 20.0;
        self.text(10.0, self.y, "start", "bold", text);
        self.y += 20.0;
    }

    /// One bar per ratio, from 1× to the ratio: green right of 1×, red left of it.
    fn ratio_bars(&mut self, ratios: &[(String, f64)]) {
        if ratios.is_empty() {
            return;
        }
        let axis = LogAxis::around(ratios.iter().map(|(_, ratio)| *ratio).chain([1.0]));
        let height = ratios.len() as f64 * (BAR + GAP);
        self.grid(&axis, height, |value| {
            let decimals = (-value.log10().round()).max(0.0) as usize;
            format!("{value:.decimals$}×")
        });
        for (label, ratio) in ratios {
            let (one, end) = (axis.x(1.0), axis.x(*ratio));
            let colour = if *ratio >= 1.0 { "#2a9d4a" } else { "#c0392b" };
            self.text(LABEL_RIGHT, self.y + BAR * 0.75, "end", "normal", label);
            self.rect(one.min(end), self.y, (end - one).abs().max(1.0), colour);
            self.text(one.max(end) + 4.0, self.y + BAR * 0.75, "start", "normal", &ratio_text(*ratio, 1.0));
            self.y += BAR + GAP;
        }
        let one = axis.x(1.0);
        self.line(one, self.y - height - 4.0, one, self.y, "#000000");
        self.y += 20.0;
    }

    /// Two bars per percentile (lockfree blue, rwlock orange), from the axis's left end.
    fn latency_bars(&mut self, latencies: &[(&str, u64, u64)]) {
        let values = latencies.iter().flat_map(|&(_, a, b)| [a, b]).map(|ns| ns.max(1) as f64);
        let axis = LogAxis::around(values);
        let height = latencies.len() as f64 * (2.0 * (BAR + GAP) + GAP);
        self.grid(&axis, height, |value| nanos(value as u64));
        for &(name, lockfree, rwlock) in latencies {
            for (implementation, ns, colour) in [("lockfree", lockfree, "#2c6fbb"), ("rwlock", rwlock, "#e08a1e")] {
                let end = axis.x(ns.max(1) as f64);
                self.text(LABEL_RIGHT, self.y + BAR * 0.75, "end", "normal", &format!("{name} {implementation}"));
                self.rect(PLOT_LEFT, self.y, (end - PLOT_LEFT).max(1.0), colour);
                self.text(end + 4.0, self.y + BAR * 0.75, "start", "normal", &nanos(ns));
                self.y += BAR + GAP;
            }
            self.y += GAP;
        }
        self.y += 20.0;
    }

    /// Vertical lines at every decade of `axis` over the next `height` pixels, labelled below
    /// them; drawn before the bars, so that the bars cover them.
    fn grid(&mut self, axis: &LogAxis, height: f64, label: impl Fn(f64) -> String) {
        let (top, bottom) = (self.y - 4.0, self.y + height);
        for value in axis.decades() {
            let x = axis.x(value);
            self.line(x, top, x, bottom, "#bbbbbb");
            self.text(x, bottom + 12.0, "middle", "normal", &label(value));
        }
    }

    fn rect(&mut self, x: f64, y: f64, width: f64, fill: &str) {
        let _ = writeln!(self.body, r#"<rect x="{x:.1}" y="{y:.1}" width="{width:.1}" height="{BAR}" fill="{fill}"/>"#);
    }

    fn line(&mut self, x1: f64, y1: f64, x2: f64, y2: f64, stroke: &str) {
        let _ = writeln!(
            self.body,
            r#"<line x1="{x1:.1}" y1="{y1:.1}" x2="{x2:.1}" y2="{y2:.1}" stroke="{stroke}" stroke-width="1"/>"#
        );
    }

    fn text(&mut self, x: f64, y: f64, anchor: &str, weight: &str, text: &str) {
        let _ = writeln!(
            self.body,
            r#"<text x="{x:.1}" y="{y:.1}" text-anchor="{anchor}" font-weight="{weight}">{}</text>"#,
            escape(text)
        );
    }

    fn finish(self) -> String {
        let height = self.y + 10.0;
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
             <svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height:.0}\" \
             viewBox=\"0 0 {WIDTH} {height:.0}\" font-family=\"sans-serif\" font-size=\"12\">\n\
             <rect width=\"100%\" height=\"100%\" fill=\"#ffffff\"/>\n{}</svg>\n",
            self.body
        )
    }
}

/// Text safe inside an SVG element.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

// ---------------------------------------------------------------------------------------------
// Formatting
// ---------------------------------------------------------------------------------------------

/// Calls per second.
fn rate(per_second: f64) -> String {
    if per_second >= 1e6 {
        format!("{:.2} M/s", per_second / 1e6)
    } else if per_second >= 1e3 {
        format!("{:.1} k/s", per_second / 1e3)
    } else {
        format!("{per_second:.0} /s")
    }
}

/// `a / b` as a factor to about 3 significant figures, or "n/a" when `b` is zero.
fn ratio_text(a: f64, b: f64) -> String {
    let ratio = a / b;
    if !ratio.is_finite() {
        "n/a".into()
    } else if ratio >= 100.0 {
        format!("{ratio:.0}×")
    } else if ratio >= 10.0 {
        format!("{ratio:.1}×")
    } else {
        format!("{ratio:.2}×")
    }
}

fn percent(share: f64) -> String {
    format!("{:.0}%", share * 100.0)
}

/// Nanoseconds in the largest unit that keeps them at 1 or more, to about 3 significant
/// figures ("412 ns", "1.23 µs", "12.3 ms", "2 s").
fn nanos(ns: u64) -> String {
    const UNITS: [(f64, &str); 3] = [(1e9, "s"), (1e6, "ms"), (1e3, "µs")];
    let ns_f = ns as f64;
    match UNITS.iter().find(|(unit, _)| ns_f >= *unit) {
        Some((unit, name)) => format!("{} {name}", significant(ns_f / unit)),
        None => format!("{ns} ns"),
    }
}

/// `value` (at least 1) with 3 significant figures and no trailing zeros after the point.
fn significant(value: f64) -> String {
    let decimals = if value >= 100.0 {
        0
    } else if value >= 10.0 {
        1
    } else {
        2
    };
    let text = format!("{value:.decimals$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text
    }
}

fn mib(bytes: isize) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// An exact count, shortened where it is a whole number of thousands or millions.
fn count(n: u64) -> String {
    match n {
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{} M", n / 1_000_000),
        n if n >= 1_000 && n % 1_000 == 0 => format!("{} k", n / 1_000),
        n => n.to_string(),
    }
}

/// A count rounded to 3 significant figures or so.
fn count_approx(n: u64) -> String {
    if n >= 1_000_000 {
        format!("{:.2} M", n as f64 / 1e6)
    } else if n >= 1_000 {
        format!("{:.1} k", n as f64 / 1e3)
    } else {
        n.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::{Memory, PeerFigures};

    fn config() -> CompareConfig {
        CompareConfig {
            seconds: 1.0,
            latency_seconds: 1.0,
            resident: 1_000_000,
            out: "x".into(),
            tick: std::time::Duration::from_secs(15),
            expire: std::time::Duration::from_secs(60),
        }
    }

    fn peer(name: &'static str, get_hit: f64, pipeline: f64, bytes_per_entry: f64) -> PeerFigures {
        PeerFigures {
            name,
            get_hit: Scaling { one: get_hit, two: 2.0 * get_hit },
            pipeline: Scaling { one: pipeline, two: pipeline },
            memory: Memory { bytes_per_entry, peak: 0 },
            ..PeerFigures::default()
        }
    }

    #[test]
    fn the_peer_table_judges_lockfree_against_papaya_and_lists_its_misses() {
        let mut figures = Figures::default();
        figures.get_hit.lockfree = Scaling { one: 2.0e6, two: 3.0e6 };
        figures.pipeline.lockfree = Scaling { one: 5.0e6, two: 6.0e6 };
        figures.memory.lockfree.bytes_per_entry = 90.0;
        figures.peers = vec![peer("papaya", 3.0e6, 4.0e6, 80.0), peer("moka", 1.0e6, 1.0e6, 260.0)];
        let mut misses = Vec::new();
        let table = peer_table(&config(), &figures, &mut misses);
        assert!(table.contains("| lockfree | papaya | moka | lockfree / papaya |"), "{table}");
        // Get hit: 2 M against papaya's 3 M is missed; the pipeline's 5 M against 4 M is met,
        // and so is 90 B an entry.
        assert_eq!(misses, vec!["get hit, 1 M resident, 1 thread, tick 15 s: ≥ 1.0× papaya".to_string()], "{table}");
        assert!(table.contains("| 0.67× | ≥ 1.0× papaya | **missed** |"), "{table}");
        assert!(table.contains("| 1.25× | ≥ 1.0× papaya | met |"), "{table}");
        assert!(table.contains("| 90.0 B | 80.0 B | 260.0 B |"), "{table}");
    }

    #[test]
    fn without_peers_there_is_no_peer_table() {
        let mut misses = Vec::new();
        assert_eq!(peer_table(&config(), &Figures::default(), &mut misses), "");
        assert!(misses.is_empty());
    }
}
