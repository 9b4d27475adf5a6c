//! A log-linear histogram of nanosecond latencies, for the compare report.
//!
//! Written here rather than taken from a crate so that the example adds no dependency. Values
//! below 64 get a bucket each; above, every power of two is cut into 32 equal buckets, so a
//! percentile read back is at most 1/32 (3.1%) above the true value, at any magnitude, in
//! 1,920 counters (15 KiB) whatever the number of samples.

/// Linear sub-buckets per power of two, as a bit count (32 sub-buckets).
const SUB_BITS: u32 = 5;
const SUB: u64 = 1 << SUB_BITS;
/// Values below this are exact (one bucket each).
const EXACT: u64 = 2 * SUB;
/// Buckets for every `u64`: the exact ones, then 32 for each power of two from 2^6 to 2^63
/// (58 of them).
const BUCKETS: usize = (EXACT + 58 * SUB) as usize;

/// Counts of recorded values by bucket, plus the exact count, minimum and maximum.
pub struct Histogram {
    counts: Vec<u64>,
    count: u64,
    min: u64,
    max: u64,
}

impl Histogram {
    pub fn new() -> Histogram {
        Histogram { counts: vec![0; BUCKETS], count: 0, min: u64::MAX, max: 0 }
    }

    pub fn record(&mut self, value: u64) {
        self.counts[bucket(value)] += 1;
        self.count += 1;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
    }

    /// The number of values recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The largest value recorded (exact), or 0 when empty.
    pub fn max(&self) -> u64 {
        self.max
    }

    /// How many recorded values lie in buckets wholly above `threshold` (values above it by
    /// more than the 3.1% bucket width are all counted).
    pub fn count_above(&self, threshold: u64) -> u64 {
        self.counts[bucket(threshold) + 1..].iter().sum()
    }

    /// The value at quantile `q` (0 to 1): the upper bound of the bucket holding the sample of
    /// that rank, never above the largest value recorded (so `quantile(1.0) == max()`); 0 when
    /// empty. Reading the upper bound errs on the pessimistic side.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (index, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return upper_bound(index).clamp(self.min, self.max);
            }
        }
        self.max
    }
}

/// The bucket of `value`.
fn bucket(value: u64) -> usize {
    if value < EXACT {
        return value as usize;
    }
    let shift = (63 - value.leading_zeros()) - SUB_BITS; // at least 1
    let top = value >> shift; // SUB..2*SUB: the leading SUB_BITS + 1 bits
    (EXACT + u64::from(shift - 1) * SUB + (top - SUB)) as usize
}

/// The largest value that falls in bucket `index`.
fn upper_bound(index: usize) -> u64 {
    let index = index as u64;
    if index < EXACT {
        return index;
    }
    let shift = (index - EXACT) / SUB + 1;
    let top = SUB + (index - EXACT) % SUB;
    // The top bucket ends at u64::MAX: compute (top + 1) << shift - 1 without overflowing.
    (top << shift) | ((1u64 << shift) - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_above_counts_only_values_clearly_above() {
        let mut histogram = Histogram::new();
        for value in [10, 90_000, 100_000, 150_000, 2_000_000] {
            histogram.record(value);
        }
        assert_eq!(histogram.count_above(100_000), 2);
        assert_eq!(histogram.count_above(0), 5);
        assert_eq!(histogram.count_above(u64::MAX / 2), 0);
    }

    #[test]
    fn buckets_cover_every_value_and_bound_it() {
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
        for value in (0..5000).chain([u64::MAX / 3, u64::MAX - 1, u64::MAX]) {
            let index = bucket(value);
            assert!(upper_bound(index) >= value, "{value}");
            assert!(index == 0 || upper_bound(index - 1) < value, "{value}");
        }
    }
}
