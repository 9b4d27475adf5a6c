//! The main job: simulated Hercules chunkservers under load, run on `DownloadBuffer`,
//! `RwLockBuffer` and moka side by side.
//!
//! Hercules is a GFS-style file system. A client writing a chunk first *pushes* the bytes
//! along a chain of replicas; each chunkserver's forward handler looks the push up in its
//! download buffer ("get; if absent, store and forward") and keeps the bytes under a
//! `BufferId`. Then the client asks the primary to write, and the primary and every
//! secondary take the bytes out of their buffers (`fetch_and_delete`). Pushes whose write
//! never comes (a client that died) sit in the buffers until they expire: the janitor's
//! job, and the reason this crate exists.
//!
//! Here: 6 chunkservers (one buffer each), 8 client threads, 64 KiB–1 MiB payloads along
//! chains of 3, each client streaming up to 4,096 pushes ahead of its writes (100 k+ entries
//! resident), 10% of pushes abandoned, 5% pushed twice, 1% written twice; tick 100 ms and
//! expire 1 s, so that expiry and the reference design's sweep really run. For each store:
//! throughput, p50/p99/p99.9/max latency of each call, peak entries and bytes held, how long
//! the abandoned bytes took to drain to zero (against the bound, expire + tick), and the
//! checks (the very bytes pushed come out, with their checksum; each write consumes once;
//! no entry vanishes before its expiry). The table goes to stdout, progress to stderr, and
//! a chart of bytes held and latency over time to `--out` (`pipeline.svg`, with the table
//! as `pipeline.md`).
//!
//! Run with `--help` for the flags. The detailed compare report (micro-workloads, targets)
//! is the tools crate's: `cargo run --release -p download-buffer-tools --bin compare`.

mod chart;
mod chunkserver;
mod store;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use chunkserver::{Outcome, Payloads, Workload, CALLS};

const USAGE: &str = "\
The main job: simulated chunkservers pushing and writing chunks through their download
buffers, on lockfree (DownloadBuffer), rwlock (RwLockBuffer) and moka side by side.

Usage: cargo run --release --example pipeline -- [FLAGS]

Flags:
  --seconds S       seconds of load per implementation (then the drain) [default: 12]
  --clients N       client threads                                   [default: 8]
  --servers N       chunkservers, one buffer each (at least 3)       [default: 6]
  --window N        pushed, unwritten chunks per client at most      [default: 4096]
  --tick-ms MS      janitor tick                                     [default: 100]
  --expire-ms MS    idle time after which a push expires             [default: 1000]
  --abandon P       share of pushes never written (0 to 1)           [default: 0.1]
  --impl NAMES      implementations, comma-separated                 [default: rwlock,lockfree,moka]
  --out DIR         where pipeline.svg and pipeline.md go (created)  [default: target/pipeline]
  --help            print this help

Exit status: 0 when every check passed, 1 when one failed, 2 for bad flags.
";

/// What the run does.
#[derive(Debug)]
struct Config {
    workload: Workload,
    implementations: Vec<&'static str>,
    out: PathBuf,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            workload: Workload {
                servers: 6,
                clients: 8,
                seconds: 12.0,
                tick: Duration::from_millis(100),
                expire: Duration::from_secs(1),
                window: 4096,
                min_size: 64 << 10,
                max_size: 1 << 20,
                abandon: 0.1,
                retry: 0.05,
                rewrite: 0.01,
            },
            implementations: store::NAMES.to_vec(),
            out: PathBuf::from("target/pipeline"),
        }
    }
}

#[derive(Debug)]
enum Parsed {
    Run(Config),
    Help,
}

fn parse_args(args: impl IntoIterator<Item = std::ffi::OsString>) -> Result<Parsed, String> {
    use lexopt::prelude::*;
    let mut config = Config::default();
    let workload = &mut config.workload;
    let mut parser = lexopt::Parser::from_args(args);
    while let Some(arg) = parser.next().map_err(|error| error.to_string())? {
        let name = match arg {
            Long(name) => name.to_owned(),
            Short('h') => String::from("help"),
            Short(name) => return Err(format!("unknown flag -{name}")),
            Value(value) => {
                return Err(format!("unexpected argument {value:?}: settings are flags such as --seconds 5"))
            }
        };
        let flag = format!("--{name}");
        let mut value = || -> Result<String, String> {
            let value = parser.value().map_err(|error| error.to_string())?;
            value.into_string().map_err(|value| format!("{flag}: {value:?} is not valid UTF-8"))
        };
        match name.as_str() {
            "help" => return Ok(Parsed::Help),
            "seconds" => workload.seconds = parse_number(&flag, &value()?, 0.1, 600.0)?,
            "clients" => workload.clients = parse_whole(&flag, &value()?, 1, 256)? as usize,
            "servers" => workload.servers = parse_whole(&flag, &value()?, 3, 64)? as usize,
            "window" => workload.window = parse_whole(&flag, &value()?, 1, 1_000_000)? as usize,
            "tick-ms" => workload.tick = Duration::from_millis(parse_whole(&flag, &value()?, 1, 600_000)?),
            "expire-ms" => workload.expire = Duration::from_millis(parse_whole(&flag, &value()?, 4, 600_000)?),
            "abandon" => workload.abandon = parse_number(&flag, &value()?, 0.0, 1.0)?,
            "impl" => {
                config.implementations.clear();
                for name in value()?.split(',').map(str::trim).filter(|name| !name.is_empty()) {
                    let known = store::NAMES.iter().find(|known| **known == name).ok_or_else(|| {
                        format!("{flag}: unknown implementation '{name}' (known: {})", store::NAMES.join(", "))
                    })?;
                    if !config.implementations.contains(known) {
                        config.implementations.push(known);
                    }
                }
            }
            "out" => {
                let dir = value()?;
                if dir.is_empty() {
                    return Err(format!("{flag}: needs a directory"));
                }
                config.out = PathBuf::from(dir);
            }
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(Parsed::Run(config))
}

/// A whole number from `min` to `max`.
fn parse_whole(flag: &str, value: &str, min: u64, max: u64) -> Result<u64, String> {
    match value.parse::<u64>() {
        Ok(number) if (min..=max).contains(&number) => Ok(number),
        Ok(_) => Err(format!("{flag}: {value} is out of range ({min} to {max})")),
        Err(_) => Err(format!("{flag}: '{value}' is not a whole number")),
    }
}

/// A number from `min` to `max`, decimals allowed.
fn parse_number(flag: &str, value: &str, min: f64, max: f64) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(number) if (min..=max).contains(&number) => Ok(number),
        Ok(_) => Err(format!("{flag}: {value} is out of range ({min} to {max})")),
        Err(_) => Err(format!("{flag}: '{value}' is not a number")),
    }
}

fn main() -> ExitCode {
    let config = match parse_args(std::env::args_os().skip(1)) {
        Ok(Parsed::Run(config)) => config,
        Ok(Parsed::Help) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("error: {message}\nRun with --help for the flags.");
            return ExitCode::from(2);
        }
    };
    let workload = &config.workload;
    let payloads = Payloads::new(32, workload.min_size, workload.max_size);
    let setup = format!(
        "{} chunkservers, {} client threads, chains of {}, {}–{} payloads, window {} per client, \
         {:.0}% abandoned; tick {:?}, expire {:?}; {} s of load each, on {} CPUs",
        workload.servers,
        workload.clients,
        chunkserver::CHAIN,
        chart::size(workload.min_size as f64),
        chart::size(workload.max_size as f64),
        workload.window,
        workload.abandon * 100.0,
        workload.tick,
        workload.expire,
        workload.seconds,
        std::thread::available_parallelism().map_or(1, |n| n.get()),
    );
    println!("{setup}\n");
    let mut outcomes = Vec::new();
    for &name in &config.implementations {
        let servers = match (0..workload.servers).map(|_| store::build(name, workload.tick, workload.expire)).collect()
        {
            Ok(servers) => servers,
            Err(message) => {
                eprintln!("error: {name}: {message}");
                return ExitCode::from(2);
            }
        };
        outcomes.push(chunkserver::run(name, servers, &payloads, workload));
    }
    let table = table(&outcomes, workload);
    print!("{table}");
    let series: Vec<chart::Series> = outcomes
        .iter()
        .map(|outcome| chart::Series {
            name: outcome.name,
            bytes: &outcome.bytes_over_time,
            p99: &outcome.p99_over_time,
        })
        .collect();
    let svg = chart::svg("Download buffers under a chunkserver's load", &setup, &series, workload.seconds);
    let written = std::fs::create_dir_all(&config.out)
        .and_then(|()| std::fs::write(config.out.join("pipeline.svg"), svg))
        .and_then(|()| std::fs::write(config.out.join("pipeline.md"), format!("{setup}\n\n{table}")));
    match written {
        Ok(()) => eprintln!("wrote {} and pipeline.md", config.out.join("pipeline.svg").display()),
        Err(error) => {
            eprintln!("error: writing to {}: {error}", config.out.display());
            return ExitCode::FAILURE;
        }
    }
    if outcomes.iter().all(|outcome| outcome.tally.failures == 0) {
        ExitCode::SUCCESS
    } else {
        eprintln!("FAILED: at least one check failed (see the table)");
        ExitCode::FAILURE
    }
}

/// Throughput below this share of the best counts as starved: no ratio is printed.
const STARVED: f64 = 0.02;

/// The results as a Markdown table, then each store's latencies and checks.
fn table(outcomes: &[Outcome], workload: &Workload) -> String {
    use std::fmt::Write;
    let rate = |outcome: &Outcome| outcome.tally.chunks_written as f64 / outcome.elapsed.as_secs_f64();
    let best = outcomes.iter().map(rate).fold(0.0, f64::max);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| store | chunks written/s | vs rwlock | buffer calls/s | payload pushed/s | peak entries | peak bytes held | \
         empty after the last push | writes after expiry | checks |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    let baseline = outcomes.iter().find(|outcome| outcome.name == "rwlock").map(rate);
    for outcome in outcomes {
        let seconds = outcome.elapsed.as_secs_f64();
        let starved = if rate(outcome) < best * STARVED { " (starved)" } else { "" };
        let ratio = match baseline {
            Some(base) if base < best * STARVED => format!("rwlock starved{starved}"),
            Some(base) if base > 0.0 => format!("{:.2}×{starved}", rate(outcome) / base),
            _ => format!("—{starved}"),
        };
        let drained = match outcome.drained_after {
            Some(after) => format!("{:.2} s (bound {:.2} s)", after.as_secs_f64(), outcome.drain_bound.as_secs_f64()),
            None => format!("not in {:.0} s", outcome.drain_limit.as_secs_f64()),
        };
        let late = outcome.drained_after.is_some_and(|after| after > outcome.drain_bound + workload.tick * 2);
        let checks = match (outcome.tally.failures, late) {
            (0, false) => String::from("ok"),
            (0, true) => String::from("ok; drained past the bound"),
            (n, _) => format!("{n} FAILED"),
        };
        let _ = writeln!(
            out,
            "| {} | {:.0} | {ratio} | {:.2} M | {}/s | {} | {} | {drained} | {} | {checks} |",
            outcome.name,
            rate(outcome),
            outcome.tally.calls as f64 / seconds / 1e6,
            chart::size(outcome.tally.bytes_pushed as f64 / seconds),
            outcome.peak_entries,
            chart::size(outcome.peak_bytes as f64),
            outcome.tally.late_writes,
        );
    }
    let _ = writeln!(out, "\n| store | call | p50 | p99 | p99.9 | max | calls |");
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|");
    for outcome in outcomes {
        for call in CALLS {
            let latency = &outcome.tally.latency[call as usize];
            let at = |q: f64| chart::nanos(latency.value_at_quantile(q) as f64);
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} |",
                outcome.name,
                call.name(),
                at(0.5),
                at(0.99),
                at(0.999),
                chart::nanos(latency.max() as f64),
                latency.len()
            );
        }
    }
    let _ = writeln!(
        out,
        "\nPayloads are shared `Bytes` (a push hands out a reference, as the chunkserver's zero-copy \
         buffer does): \"payload pushed\" counts the bytes each replica holds, not bytes copied. \
         moka's expiry runs when it is called: the sampler calls `run_pending_tasks` every {:?}. \
         \"Writes after expiry\": replica writes that came more than `expire` after the push and \
         found nothing (legal; clients write within a quarter of `expire` unless a call stalls). \
         \"Starved\": under 2% of the best store's rate. A drain past the bound is noted, not failed \
         (a loaded machine delays every janitor). moka's entry counts are its own estimates, \
         settled by `run_pending_tasks`.",
        chunkserver::SAMPLE_EVERY
    );
    for outcome in outcomes.iter().filter(|outcome| outcome.tally.stale_returns > 0) {
        let _ = writeln!(
            out,
            "\n{}: {} writes found their bytes more than expire + tick/8 after the push \
             (its `remove` returns entries past their time-to-idle until they are evicted).",
            outcome.name, outcome.tally.stale_returns
        );
    }
    for outcome in outcomes.iter().filter(|outcome| outcome.tally.failures > 0) {
        let _ = writeln!(out, "\n{} failed {} check(s):", outcome.name, outcome.tally.failures);
        for example in &outcome.tally.failure_examples {
            let _ = writeln!(out, "- {example}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Parsed, String> {
        parse_args(args.iter().map(std::ffi::OsString::from))
    }

    #[test]
    fn flags_set_the_workload_and_bad_ones_are_named() {
        let Ok(Parsed::Run(config)) = parse(&["--seconds", "2.5", "--impl=moka,lockfree", "--tick-ms", "50"]) else {
            panic!("valid flags")
        };
        assert_eq!(config.workload.seconds, 2.5);
        assert_eq!(config.workload.tick, Duration::from_millis(50));
        assert_eq!(config.implementations, ["moka", "lockfree"]);
        assert!(parse(&["--servers", "2"]).unwrap_err().contains("--servers"));
        assert!(parse(&["--impl", "dashmap"]).unwrap_err().contains("unknown implementation 'dashmap'"));
        assert!(parse(&["--frobnicate"]).unwrap_err().contains("unknown flag --frobnicate"));
        assert!(parse(&["--abandon", "x"]).unwrap_err().contains("not a number"));
        assert!(parse(&["--clients", "2.5"]).unwrap_err().contains("not a whole number"));
        assert!(matches!(parse(&["--help"]), Ok(Parsed::Help)));
    }

    #[test]
    fn a_short_run_on_every_store_passes_its_checks_and_drains() {
        let workload = Workload {
            servers: 3,
            clients: 2,
            seconds: 0.3,
            tick: Duration::from_millis(20),
            expire: Duration::from_millis(200),
            window: 64,
            min_size: 1024,
            max_size: 4096,
            ..Config::default().workload
        };
        let payloads = Payloads::new(8, workload.min_size, workload.max_size);
        for name in store::NAMES {
            let servers = (0..3).map(|_| store::build(name, workload.tick, workload.expire).unwrap()).collect();
            let outcome = chunkserver::run(name, servers, &payloads, &workload);
            assert_eq!(outcome.tally.failures, 0, "{name}: {:?}", outcome.tally.failure_examples);
            assert!(outcome.tally.chunks_written > 0 && outcome.tally.abandoned > 0, "{name}: nothing ran");
            assert!(outcome.drained_after.is_some(), "{name}: the abandoned pushes never drained");
        }
    }
}
