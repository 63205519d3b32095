//! What the coordinator measures of the operations it runs: counts and a
//! latency histogram cheap enough for every request, for the load a node
//! gossips (ops/s, p99) and the metrics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

/// Buckets of the coordinator's latency histogram: bucket `i` counts
/// operations that took less than `2^i` microseconds.
pub const LATENCY_BUCKETS: usize = 32;

/// Coordinated operation kinds, for the latency histograms.
#[derive(Debug, Clone, Copy)]
pub enum OpKind {
    Get = 0,
    Put = 1,
    Delete = 2,
}

/// Coordinated operations and their latency.
pub struct OpStats {
    ops: AtomicU64,
    buckets: [AtomicU64; LATENCY_BUCKETS],
    /// `ringkv_coordinator_seconds{op}`, registered once (no lookup per
    /// request); indexed by [`OpKind`].
    latency: [metrics::Histogram; 3],
    /// Snapshot at the last load report: (monotonic ms, ops, buckets).
    last_report: Mutex<(u64, u64, [u64; LATENCY_BUCKETS])>,
}

impl Default for OpStats {
    fn default() -> Self {
        Self {
            ops: AtomicU64::new(0),
            buckets: Default::default(),
            latency: [
                metrics::histogram!("ringkv_coordinator_seconds", "op" => "get"),
                metrics::histogram!("ringkv_coordinator_seconds", "op" => "put"),
                metrics::histogram!("ringkv_coordinator_seconds", "op" => "delete"),
            ],
            last_report: Mutex::new((0, 0, [0; LATENCY_BUCKETS])),
        }
    }
}

impl OpStats {
    /// Counts one operation of `op` that took `elapsed`.
    pub fn record(&self, op: OpKind, elapsed: Duration) {
        self.count(elapsed.as_micros() as u64);
        self.latency[op as usize].record(elapsed.as_secs_f64());
    }

    fn count(&self, micros: u64) {
        self.ops.fetch_add(1, Ordering::Relaxed);
        let i = (64 - micros.leading_zeros() as usize).min(LATENCY_BUCKETS - 1);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> (u64, [u64; LATENCY_BUCKETS]) {
        let mut b = [0u64; LATENCY_BUCKETS];
        for (i, x) in self.buckets.iter().enumerate() {
            b[i] = x.load(Ordering::Relaxed);
        }
        (self.ops.load(Ordering::Relaxed), b)
    }

    /// Operations per second and p99 (microseconds) since the last call,
    /// at monotonic time `now_ms`.
    pub fn since_last_report(&self, now_ms: u64) -> (u64, u64) {
        let (ops, buckets) = self.snapshot();
        let mut last = self.last_report.lock();
        let (t0, ops0, buckets0) = *last;
        *last = (now_ms, ops, buckets);
        let elapsed_ms = now_ms.saturating_sub(t0).max(1);
        (
            (ops - ops0) * 1000 / elapsed_ms,
            p99_between(&buckets0, &buckets),
        )
    }
}

/// The p99 (upper bucket bound, microseconds) of the operations between two
/// snapshots.
fn p99_between(before: &[u64; LATENCY_BUCKETS], after: &[u64; LATENCY_BUCKETS]) -> u64 {
    let deltas: Vec<u64> = after.iter().zip(before).map(|(a, b)| a - b).collect();
    let total: u64 = deltas.iter().sum();
    if total == 0 {
        return 0;
    }
    let target = total - total / 100;
    let mut seen = 0;
    for (i, d) in deltas.iter().enumerate() {
        seen += d;
        if seen >= target {
            return 1u64 << i;
        }
    }
    1u64 << (LATENCY_BUCKETS - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p99_reads_the_right_bucket() {
        let stats = OpStats::default();
        let (_, before) = stats.snapshot();
        for _ in 0..990 {
            stats.count(100); // bucket 7: < 128 us
        }
        for _ in 0..10 {
            stats.count(5_000); // bucket 13: < 8192 us
        }
        let (ops, after) = stats.snapshot();
        assert_eq!(ops, 1000);
        assert_eq!(p99_between(&before, &after), 128);
        for _ in 0..20 {
            stats.count(5_000);
        }
        let (_, later) = stats.snapshot();
        assert_eq!(p99_between(&before, &later), 8192);
        assert_eq!(p99_between(&later, &later), 0);
    }

    #[test]
    fn a_load_report_covers_the_operations_since_the_last() {
        let stats = OpStats::default();
        assert_eq!(stats.since_last_report(1_000), (0, 0));
        for _ in 0..500 {
            stats.record(OpKind::Get, Duration::from_micros(100));
        }
        // 500 operations in 500 ms.
        assert_eq!(stats.since_last_report(1_500), (1_000, 128));
        assert_eq!(stats.since_last_report(2_500), (0, 0));
    }
}
