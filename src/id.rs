//! Buffer ids: which chunk a pushed payload belongs to, and when it was pushed.

use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The handle of a chunk, as the Hercules master hands it out (a signed 64-bit integer).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkHandle(pub i64);

/// The key of one pushed payload: the chunk it is for and a timestamp that makes it unique.
///
/// Ids made by [`BufferId::new`] are unique within the process: their timestamps are
/// wall-clock Unix nanoseconds, bumped where needed so that every call returns a larger
/// timestamp than every earlier call, from any thread (the Go original could hand out
/// two equal ids for one handle).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BufferId {
    /// The chunk the payload will be written to.
    pub handle: ChunkHandle,
    /// Unix time in nanoseconds when the id was made (strictly increasing per process).
    pub timestamp: i64,
}

/// The last timestamp handed out by [`BufferId::new`], process-wide.
static LAST_TIMESTAMP: AtomicI64 = AtomicI64::new(i64::MIN);

impl BufferId {
    /// Makes a fresh id for `handle`, stamped with the current Unix time in nanoseconds.
    ///
    /// The timestamp is strictly greater than that of every id made before by this
    /// process, from any thread, even when the wall clock stands still or steps back:
    /// the id is then stamped one nanosecond after the previous one. No lock is taken
    /// (one compare-and-swap loop on a process-wide atomic).
    pub fn new(handle: ChunkHandle) -> BufferId {
        BufferId { handle, timestamp: next_timestamp(unix_nanos()) }
    }
}

/// Returns `max(wall, last + 1)` and records it as the last timestamp.
fn next_timestamp(wall: i64) -> i64 {
    let mut last = LAST_TIMESTAMP.load(Ordering::Relaxed);
    loop {
        let next = wall.max(last.saturating_add(1));
        match LAST_TIMESTAMP.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(seen) => last = seen,
        }
    }
}

/// Current wall-clock time in Unix nanoseconds; a clock before 1970 reads as 0 and one
/// past the year 2262 saturates, rather than panicking.
fn unix_nanos() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(since) => i64::try_from(since.as_nanos()).unwrap_or(i64::MAX),
        Err(_) => 0,
    }
}

impl fmt::Display for BufferId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.handle.0, self.timestamp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_strictly_increase_when_the_clock_steps_back() {
        let a = next_timestamp(unix_nanos());
        let b = next_timestamp(0); // a wall clock far in the past
        let c = next_timestamp(a - 1_000_000);
        assert!(a < b && b < c, "{a} {b} {c}");
    }

    #[test]
    fn display_names_handle_and_timestamp() {
        let id = BufferId { handle: ChunkHandle(-7), timestamp: 42 };
        assert_eq!(id.to_string(), "-7:42");
    }
}
