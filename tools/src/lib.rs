//! What the measurement tools share: the ids and the pseudo-random picks of their
//! workloads (the same shapes as `benches/buffer.rs`).
//!
//! - `compare` (`cargo run --release -p download-buffer-tools --bin compare`): the compare
//!   report, fixed micro-workloads on lockfree and rwlock with a verdict per target.
//! - `scaling` (`--bin scaling`): throughput of get hits, the pipeline and a 90/10 mix at
//!   several thread counts.

use download_buffer::{BufferId, ChunkHandle};

/// The id of resident entry `n` (or of pipeline round `n`), made without a clock read or
/// global state: `BufferId::new` takes a process-wide CAS, which would measure the id maker
/// rather than the buffer.
pub fn key(n: u64) -> BufferId {
    BufferId { handle: ChunkHandle(n as i64), timestamp: (n as i64).wrapping_mul(0x9E37_79B9) }
}

/// A cheap per-thread pseudo-random pick in `0..resident`, so that lookups miss the cache as
/// a server's would rather than walking memory in order.
pub fn pick(thread: u64, i: u64, resident: u64) -> u64 {
    let mut x = (thread + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ i.wrapping_mul(0xD1B5_4A32_D192_ED03);
    x ^= x >> 31;
    x = x.wrapping_mul(0x94D0_49BB_1331_11EB);
    (x ^ (x >> 29)) % resident
}

/// Parses a whole number from 1 to `max` given to `flag`.
pub fn parse_count(flag: &str, value: &str, max: u64) -> Result<u64, String> {
    match value.parse::<u64>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        Ok(0) => Err(format!("{flag}: must be at least 1")),
        Ok(_) => Err(format!("{flag}: {value} is too large (at most {max})")),
        Err(_) => Err(format!("{flag}: '{value}' is not a whole number")),
    }
}

/// Parses a positive number of seconds, at most `max`; decimals allowed.
pub fn parse_seconds(flag: &str, value: &str, max: f64) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(seconds) if seconds > 0.0 && seconds <= max => Ok(seconds),
        Ok(_) => Err(format!("{flag}: {value} is out of range (above 0, at most {max})")),
        Err(_) => Err(format!("{flag}: '{value}' is not a number of seconds")),
    }
}

/// The next flag's value as UTF-8 text.
pub fn value(parser: &mut lexopt::Parser, flag: &str) -> Result<String, String> {
    let value = parser.value().map_err(|error| error.to_string())?;
    value.into_string().map_err(|value| format!("{flag}: {value:?} is not valid UTF-8"))
}
