//! Nanosecond latencies for the compare report: hdrhistogram, with three significant
//! digits (a percentile read back is within 0.1% of the true value) and the few reads the
//! report makes.

/// Recorded latencies, 1 ns to an hour (longer ones are clamped to an hour).
pub struct Histogram(hdrhistogram::Histogram<u64>);

const HIGHEST: u64 = 3_600_000_000_000;

impl Histogram {
    pub fn new() -> Histogram {
        Histogram(hdrhistogram::Histogram::new_with_bounds(1, HIGHEST, 3).expect("valid bounds"))
    }

    pub fn record(&mut self, nanos: u64) {
        self.0.saturating_record(nanos.clamp(1, HIGHEST));
    }

    /// The number of values recorded.
    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// The largest value recorded (to the histogram's precision), or 0 when empty.
    pub fn max(&self) -> u64 {
        if self.0.is_empty() {
            0
        } else {
            self.0.max()
        }
    }

    /// How many recorded values lie above `threshold` (to the histogram's precision).
    pub fn count_above(&self, threshold: u64) -> u64 {
        let above = self.0.highest_equivalent(threshold.clamp(1, HIGHEST)).saturating_add(1);
        if above > HIGHEST {
            return 0;
        }
        self.0.count_between(above, HIGHEST)
    }

    /// The value at quantile `q` (0 to 1); 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.0.is_empty() {
            0
        } else {
            self.0.value_at_quantile(q.clamp(0.0, 1.0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_above_counts_only_values_above_and_quantiles_read_back() {
        let mut histogram = Histogram::new();
        for value in [10, 90_000, 100_000, 150_000, 2_000_000] {
            histogram.record(value);
        }
        assert_eq!(histogram.count_above(100_000), 2);
        assert_eq!(histogram.count_above(0), 5);
        assert_eq!(histogram.count_above(u64::MAX / 2), 0);
        assert_eq!(histogram.count(), 5);
        assert!(histogram.quantile(0.5).abs_diff(100_000) <= 100);
        assert!(histogram.max().abs_diff(2_000_000) <= 2_000);
        assert_eq!(Histogram::new().quantile(0.99), 0);
    }
}
