//! Counters of the RESP front end, shared by every connection: what `INFO
//! clients` and `INFO stats` print, and the metric handles of each command.
//!
//! Connections add to the shared counters once per pipelined batch, not once
//! per command, so the hot path touches no shared cache line per command
//! except the per-command metric.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use metrics::{Counter, Histogram};

use crate::cmd::{Cmd, SPECS};

/// Live counters of one RESP server. Cheap to read at any time through
/// [`RespStats::snapshot`].
#[derive(Debug, Default)]
pub struct RespStats {
    connected: AtomicU64,
    connections_total: AtomicU64,
    rejected: AtomicU64,
    commands_total: AtomicU64,
    error_replies: AtomicU64,
    net_input_bytes: AtomicU64,
    net_output_bytes: AtomicU64,
    ops_per_sec: AtomicU64,
    next_client_id: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Connections open now.
    pub connected_clients: u64,
    /// Connections accepted since start (refused ones excluded).
    pub total_connections_received: u64,
    /// Connections refused because `connections_max` were open.
    pub rejected_connections: u64,
    pub total_commands_processed: u64,
    pub total_error_replies: u64,
    pub total_net_input_bytes: u64,
    pub total_net_output_bytes: u64,
    /// Commands per second over the last ~1.6 s.
    pub instantaneous_ops_per_sec: u64,
}

impl RespStats {
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            connected_clients: self.connected.load(Ordering::Relaxed),
            total_connections_received: self.connections_total.load(Ordering::Relaxed),
            rejected_connections: self.rejected.load(Ordering::Relaxed),
            total_commands_processed: self.commands_total.load(Ordering::Relaxed),
            total_error_replies: self.error_replies.load(Ordering::Relaxed),
            total_net_input_bytes: self.net_input_bytes.load(Ordering::Relaxed),
            total_net_output_bytes: self.net_output_bytes.load(Ordering::Relaxed),
            instantaneous_ops_per_sec: self.ops_per_sec.load(Ordering::Relaxed),
        }
    }

    /// A new connection: returns its client id (1, 2, ...).
    pub(crate) fn connection_opened(&self) -> u64 {
        self.connected.fetch_add(1, Ordering::Relaxed);
        self.connections_total.fetch_add(1, Ordering::Relaxed);
        metrics::gauge!("ringkv_resp_connections").increment(1.0);
        self.next_client_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub(crate) fn connection_closed(&self) {
        self.connected.fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!("ringkv_resp_connections").decrement(1.0);
    }

    pub(crate) fn connection_rejected(&self) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("ringkv_resp_rejected_connections_total").increment(1);
    }

    /// Folds in one connection's batch.
    pub(crate) fn add_batch(&self, batch: &Batch) {
        if batch.commands > 0 {
            self.commands_total
                .fetch_add(batch.commands, Ordering::Relaxed);
        }
        if batch.errors > 0 {
            self.error_replies
                .fetch_add(batch.errors, Ordering::Relaxed);
        }
        if batch.input_bytes > 0 {
            self.net_input_bytes
                .fetch_add(batch.input_bytes, Ordering::Relaxed);
        }
        if batch.output_bytes > 0 {
            self.net_output_bytes
                .fetch_add(batch.output_bytes, Ordering::Relaxed);
        }
    }

    pub(crate) fn set_ops_per_sec(&self, ops: u64) {
        self.ops_per_sec.store(ops, Ordering::Relaxed);
    }
}

/// What one connection did since it last reported.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    pub commands: u64,
    pub errors: u64,
    pub input_bytes: u64,
    pub output_bytes: u64,
}

/// Samples of the command counter for `instantaneous_ops_per_sec`, as Redis
/// takes them: every 100 ms, averaged over the last 16.
pub(crate) struct OpsSampler {
    samples: [(Duration, u64); OPS_SAMPLES_MAX],
    next: usize,
    filled: usize,
}

const OPS_SAMPLES_MAX: usize = 16;
pub(crate) const OPS_SAMPLE_INTERVAL: Duration = Duration::from_millis(100);

impl OpsSampler {
    pub(crate) fn new() -> Self {
        Self {
            samples: [(Duration::ZERO, 0); OPS_SAMPLES_MAX],
            next: 0,
            filled: 0,
        }
    }

    /// Records the counter at time `at`; returns the rate over the window.
    pub(crate) fn sample(&mut self, at: Duration, commands: u64) -> u64 {
        self.samples[self.next] = (at, commands);
        self.next = (self.next + 1) % OPS_SAMPLES_MAX;
        self.filled = (self.filled + 1).min(OPS_SAMPLES_MAX);
        if self.filled < 2 {
            return 0;
        }
        let oldest = if self.filled < OPS_SAMPLES_MAX {
            self.samples[0]
        } else {
            self.samples[self.next]
        };
        let span = at.saturating_sub(oldest.0).as_secs_f64();
        if span <= 0.0 {
            return 0;
        }
        (commands.saturating_sub(oldest.1) as f64 / span).round() as u64
    }

    pub(crate) fn commands_total(stats: &RespStats) -> u64 {
        stats.commands_total.load(Ordering::Relaxed)
    }
}

/// Per-command metric handles, registered once when the server starts so a
/// command costs no label lookup.
pub(crate) struct CommandMetrics {
    commands_total: Vec<Counter>,
    command_seconds: Vec<Histogram>,
}

impl CommandMetrics {
    pub(crate) fn register() -> Self {
        let names = SPECS.iter().map(|s| s.name.to_ascii_lowercase());
        let mut commands_total = Vec::with_capacity(SPECS.len());
        let mut command_seconds = Vec::with_capacity(SPECS.len());
        for name in names {
            commands_total
                .push(metrics::counter!("ringkv_resp_commands_total", "cmd" => name.clone()));
            command_seconds.push(metrics::histogram!("ringkv_resp_command_seconds", "cmd" => name));
        }
        Self {
            commands_total,
            command_seconds,
        }
    }

    pub(crate) fn record(&self, cmd: Cmd, elapsed: Duration) {
        let i = cmd as usize;
        if let Some(c) = self.commands_total.get(i) {
            c.increment(1);
        }
        if let Some(h) = self.command_seconds.get(i) {
            h.record(elapsed.as_secs_f64());
        }
    }
}

/// Counts an error reply in the error metric.
pub(crate) fn record_error(kind: &'static str) {
    metrics::counter!("ringkv_resp_errors_total", "kind" => kind).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_rate_over_the_window() {
        let mut s = OpsSampler::new();
        assert_eq!(s.sample(Duration::from_millis(0), 0), 0);
        assert_eq!(s.sample(Duration::from_millis(100), 100), 1000);
        for i in 2..40u64 {
            // 500 commands per 100 ms = 5000/s, once the window is past the
            // first samples.
            let rate = s.sample(Duration::from_millis(i * 100), 100 + (i - 1) * 500);
            if i > 20 {
                assert_eq!(rate, 5000);
            }
        }
    }

    #[test]
    fn batches_add_up() {
        let stats = RespStats::default();
        assert_eq!(stats.connection_opened(), 1);
        assert_eq!(stats.connection_opened(), 2);
        stats.connection_closed();
        stats.connection_rejected();
        stats.add_batch(&Batch {
            commands: 3,
            errors: 1,
            input_bytes: 10,
            output_bytes: 20,
        });
        let snap = stats.snapshot();
        assert_eq!(snap.connected_clients, 1);
        assert_eq!(snap.total_connections_received, 2);
        assert_eq!(snap.rejected_connections, 1);
        assert_eq!(snap.total_commands_processed, 3);
        assert_eq!(snap.total_error_replies, 1);
        assert_eq!(snap.total_net_output_bytes, 20);
    }
}
