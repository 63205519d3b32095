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
        static GATE: ringkv_env::log_every::LogEvery = ringkv_env::log_every::LogEvery::new(10_000);
        if let Some(held) = GATE.admit() {
            tracing::warn!(
                held_back = held,
                "RESP connection refused: connections_max reached"
            );
        }
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
/// command costs no label lookup, and the per-command figures of `INFO
/// commandstats`.
pub(crate) struct CommandMetrics {
    commands_total: Vec<Counter>,
    command_seconds: Vec<Histogram>,
    figures: Vec<CommandFigures>,
}

/// One command's `INFO commandstats` figures, as Redis counts them: `calls`
/// and `usec` for executed commands, `failed_calls` for those that answered
/// an error, `rejected_calls` for those refused before running (arity,
/// authentication, permissions).
#[derive(Debug, Default)]
struct CommandFigures {
    calls: AtomicU64,
    usec: AtomicU64,
    failed: AtomicU64,
    rejected: AtomicU64,
}

/// A copy of one command's figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandStat {
    /// The command's name, lower case.
    pub name: String,
    pub calls: u64,
    pub usec: u64,
    pub failed_calls: u64,
    pub rejected_calls: u64,
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
            figures: SPECS.iter().map(|_| CommandFigures::default()).collect(),
        }
    }

    /// A command ran for `elapsed`; `failed` when it answered an error.
    pub(crate) fn record(&self, cmd: Cmd, elapsed: Duration, failed: bool) {
        let i = cmd as usize;
        if let Some(c) = self.commands_total.get(i) {
            c.increment(1);
        }
        if let Some(h) = self.command_seconds.get(i) {
            h.record(elapsed.as_secs_f64());
        }
        if let Some(f) = self.figures.get(i) {
            f.calls.fetch_add(1, Ordering::Relaxed);
            let usec = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
            f.usec.fetch_add(usec, Ordering::Relaxed);
            if failed {
                f.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// A command was refused before it ran.
    pub(crate) fn record_rejected(&self, cmd: Cmd) {
        if let Some(f) = self.figures.get(cmd as usize) {
            f.rejected.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The figures of every command called or rejected at least once, in
    /// the order of the command table.
    pub(crate) fn command_stats(&self) -> Vec<CommandStat> {
        SPECS
            .iter()
            .zip(&self.figures)
            .filter_map(|(spec, f)| {
                let stat = CommandStat {
                    name: spec.name.to_ascii_lowercase(),
                    calls: f.calls.load(Ordering::Relaxed),
                    usec: f.usec.load(Ordering::Relaxed),
                    failed_calls: f.failed.load(Ordering::Relaxed),
                    rejected_calls: f.rejected.load(Ordering::Relaxed),
                };
                (stat.calls + stat.rejected_calls > 0).then_some(stat)
            })
            .collect()
    }
}

/// Error replies by their code (the first word: `ERR`, `WRONGPASS`,
/// `UNAVAILABLE`, ...), for `INFO errorstats`. At most
/// [`ERROR_CODES_MAX`] codes are kept, as Redis does; the rest are not
/// tracked.
#[derive(Debug, Default)]
pub(crate) struct ErrorCodes(parking_lot::Mutex<std::collections::BTreeMap<String, u64>>);

/// Distinct error codes `INFO errorstats` keeps (Redis keeps 128).
pub const ERROR_CODES_MAX: usize = 128;

impl ErrorCodes {
    /// Counts one error reply whose text is `text`.
    pub(crate) fn add(&self, text: &[u8]) {
        let code = text.split(|&b| b == b' ').next().unwrap_or_default();
        let code = String::from_utf8_lossy(code);
        let mut codes = self.0.lock();
        if let Some(n) = codes.get_mut(code.as_ref()) {
            *n += 1;
        } else if codes.len() < ERROR_CODES_MAX {
            codes.insert(code.into_owned(), 1);
        }
    }

    pub(crate) fn snapshot(&self) -> Vec<(String, u64)> {
        self.0.lock().iter().map(|(k, v)| (k.clone(), *v)).collect()
    }
}

/// Describes the RESP front end's metric families (HELP text) and shows
/// its unlabelled counters at 0. Called by the binary once the recorder is
/// installed.
pub fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_gauge!("ringkv_resp_connections", "RESP connections open now");
    for (name, help) in [
        (
            "ringkv_resp_rejected_connections_total",
            "RESP connections refused because connections_max were open",
        ),
        (
            "ringkv_resp_tls_handshake_failures_total",
            "RESP connections that failed or timed out in the TLS handshake",
        ),
        (
            "ringkv_resp_auth_failures_total",
            "AUTH and HELLO AUTH attempts refused",
        ),
    ] {
        describe_counter!(name, help);
        metrics::counter!(name).increment(0);
    }
    describe_counter!(
        "ringkv_resp_commands_total",
        "RESP commands run, by command"
    );
    describe_counter!(
        "ringkv_resp_errors_total",
        "RESP error replies, by kind (protocol, unsupported, auth, unavailable, ...)"
    );
    describe_histogram!(
        "ringkv_resp_command_seconds",
        metrics::Unit::Seconds,
        "Time to run a RESP command, by command"
    );
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
    fn error_codes_are_the_first_word_and_bounded() {
        let codes = ErrorCodes::default();
        codes.add(b"ERR syntax error");
        codes.add(b"ERR value is not an integer");
        codes.add(b"UNAVAILABLE 3 required");
        assert_eq!(
            codes.snapshot(),
            vec![("ERR".to_string(), 2), ("UNAVAILABLE".to_string(), 1)]
        );
        for i in 0..ERROR_CODES_MAX + 10 {
            codes.add(format!("E{i} x").as_bytes());
        }
        assert_eq!(codes.snapshot().len(), ERROR_CODES_MAX);
        codes.add(b"ERR again");
        assert!(codes.snapshot().contains(&("ERR".to_string(), 3)));
    }

    #[test]
    fn command_figures_count_calls_failures_and_rejections() {
        let m = CommandMetrics::register();
        m.record(Cmd::Get, Duration::from_micros(30), false);
        m.record(Cmd::Get, Duration::from_micros(10), true);
        m.record_rejected(Cmd::Set);
        let stats = m.command_stats();
        let get = stats.iter().find(|s| s.name == "get").expect("get");
        assert_eq!(
            (get.calls, get.usec, get.failed_calls, get.rejected_calls),
            (2, 40, 1, 0)
        );
        let set = stats.iter().find(|s| s.name == "set").expect("set");
        assert_eq!((set.calls, set.rejected_calls), (0, 1));
        assert_eq!(stats.len(), 2, "commands never called are left out");
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
