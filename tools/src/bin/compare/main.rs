//! The compare report: fixed micro-workloads (get hits over 1 M resident entries, the
//! pipeline's four calls, a 90/10 mix), get latency with a busy janitor, and heap use, on
//! lockfree and rwlock in one process, as one Markdown table with each target's verdict
//! ([`report`]) plus an SVG chart; and lockfree beside the peers papaya and moka in a
//! second table. Heap figures come from the counting allocator in
//! [`heap`], installed for this binary (the one the memory tests use, included by path).
//!
//! ```text
//! cargo run --release -p download-buffer-tools --bin compare -- [FLAGS]
//! ```

mod compare;
#[path = "../../../../tests/common/counting_alloc.rs"]
mod heap;
mod histogram;
mod report;

use std::fmt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use download_buffer::{Buffer, DownloadBuffer, Error, RwLockBuffer};
use download_buffer_tools::{parse_count, parse_seconds, value, Moka, Papaya, Store};

const USAGE: &str = "\
The compare report: the same micro-workloads on lockfree and rwlock, printed as one Markdown
table (throughput and ratios, get latency with the janitor every 10 ms, heap bytes per entry,
peak heap) with a verdict for each target, then lockfree beside the peers papaya and moka
(get hits, the pipeline, get latency, heap bytes per entry, with issue 14's targets), written
to DIR/compare.md with a bar chart of ours in DIR/compare.svg. About 90 s with the defaults on
a 2-core machine (longer when rwlock's gets stall behind its janitor). Progress goes to stderr.

Usage: cargo run --release -p download-buffer-tools --bin compare -- [FLAGS]

Flags:
  --seconds S         seconds per throughput figure (decimals allowed)   [default: 1]
  --latency-seconds S seconds of timed gets per implementation           [default: 3]
  --resident N        resident entries for get hits, latency and memory  [default: 1000000]
  --tick-ms MS        janitor tick of the get-hit (tick) rows, the pipeline and the mix
                      (the latency rows always use a 10 ms janitor)      [default: 15000]
  --expire-ms MS      their expiry                                       [default: 60000]
  --out DIR           where compare.md and compare.svg go (created)      [default: target/compare]
  --help              print this help

Exit status: 0 when every check passed, 1 when a check failed or the files could not be
written (a missed target is reported, not a failure), 2 for bad flags.
";

/// Builds a store from `(tick, expire, byte budget)` (the peers take only what they have).
type Constructor = fn(Duration, Duration, Option<usize>) -> Result<Box<dyn Store>, Error>;

/// The implementations the report compares.
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

/// The peers, measured beside both of ours: papaya (no expiry, no byte budget) and moka
/// (time-to-idle `expire`; its housekeeping runs on the callers' threads, so no tick).
const PEERS: &[(&str, Constructor)] =
    &[("papaya", |_, _, _| Ok(Box::new(Papaya::new()))), ("moka", |_, expire, _| Ok(Box::new(Moka::new(expire))))];

fn boxed<B: Buffer + 'static>(built: Result<B, Error>) -> Result<Box<dyn Store>, Error> {
    built.map(|buffer| Box::new(buffer) as Box<dyn Store>)
}

fn find_implementation(name: &str) -> Result<(&'static str, Constructor), String> {
    IMPLEMENTATIONS
        .iter()
        .copied()
        .find(|(known, _)| *known == name)
        .ok_or_else(|| format!("unknown implementation '{name}'"))
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

enum Parsed {
    Run(compare::CompareConfig),
    Help,
}

fn parse_args(args: impl IntoIterator<Item = std::ffi::OsString>) -> Result<Parsed, String> {
    use lexopt::prelude::*;
    let mut config = compare::CompareConfig {
        seconds: compare::DEFAULT_SECONDS,
        latency_seconds: compare::DEFAULT_LATENCY_SECONDS,
        resident: compare::DEFAULT_RESIDENT,
        out: PathBuf::from(compare::DEFAULT_OUT),
        tick: Duration::from_secs(15),
        expire: Duration::from_secs(60),
    };
    let mut parser = lexopt::Parser::from_args(args);
    while let Some(arg) = parser.next().map_err(|error| error.to_string())? {
        match arg {
            Long("help") | Short('h') => return Ok(Parsed::Help),
            Long("seconds") => {
                config.seconds = parse_seconds("--seconds", &value(&mut parser, "--seconds")?, compare::MAX_SECONDS)?
            }
            Long("latency-seconds") => {
                let flag = "--latency-seconds";
                config.latency_seconds = parse_seconds(flag, &value(&mut parser, flag)?, compare::MAX_SECONDS)?
            }
            Long("resident") => {
                config.resident = parse_count("--resident", &value(&mut parser, "--resident")?, compare::MAX_RESIDENT)?
            }
            Long("tick-ms") => {
                config.tick =
                    Duration::from_millis(parse_count("--tick-ms", &value(&mut parser, "--tick-ms")?, u64::MAX)?)
            }
            Long("expire-ms") => {
                let flag = "--expire-ms";
                config.expire = Duration::from_millis(parse_count(flag, &value(&mut parser, flag)?, u64::MAX)?)
            }
            Long("out") => {
                let dir = value(&mut parser, "--out")?;
                if dir.is_empty() {
                    return Err(String::from("--out: needs a directory"));
                }
                config.out = PathBuf::from(dir);
            }
            other => return Err(other.unexpected().to_string()),
        }
    }
    Ok(Parsed::Run(config))
}

fn main() -> ExitCode {
    // Counting only where the report measures memory; the throughput phases never pay for it.
    // The phases run on this thread, the process's first.
    heap::count_the_first_thread();
    heap::set_tracking(false);
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
    let figures = match compare::run(&config) {
        Ok(figures) => figures,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::FAILURE;
        }
    };
    let report = report::build(&config, &figures);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_read_and_bad_ones_named() {
        let args = ["--seconds", "0.5", "--resident=1000", "--out", "x"].map(std::ffi::OsString::from);
        let Ok(Parsed::Run(config)) = parse_args(args) else { panic!("valid flags") };
        assert_eq!((config.seconds, config.resident, config.out), (0.5, 1000, PathBuf::from("x")));
        let bad = |args: &[&str]| parse_args(args.iter().map(std::ffi::OsString::from)).err().unwrap_or_default();
        assert!(bad(&["--resident", "0"]).contains("at least 1"));
        assert!(bad(&["--chunks", "5"]).contains("--chunks"));
        assert!(bad(&["--seconds", "soon"]).contains("not a number"));
    }
}
