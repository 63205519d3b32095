//! The slow log and the latency monitor of a node, as Redis keeps them
//! (`SLOWLOG`, `LATENCY`), fed by the front ends with the coordinator's
//! timings.
//!
//! - A [`Trace`] follows one client request on its task: every replica
//!   answer the coordinator waits for (a read, a merge, a hint to a
//!   stand-in) is noted with its node and arrival time
//!   (`note_replica_answer`, called by [`crate::rpc::Fanout`]). Off a
//!   traced task it costs one task-local lookup.
//! - A request slower than `slower_than_us` becomes a [`SlowEntry`]: its
//!   arguments (at most [`SLOW_ARGS_MAX`], each cut at
//!   [`SLOW_ARG_BYTES_MAX`], as Redis cuts them), its client, its duration
//!   and how long it waited for each replica. The newest `max_len` are
//!   kept.
//! - The latency monitor keeps, per event (`command`, `replica-wait`), the
//!   latest and the largest spike over `threshold_ms` and a history of
//!   [`LATENCY_HISTORY_MAX`] samples, one per second at most (the largest).

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use parking_lot::Mutex;

use crate::id::NodeId;

/// Arguments kept per slow entry (the last one says how many more there
/// were), as Redis keeps them.
pub const SLOW_ARGS_MAX: usize = 32;
/// Bytes kept per argument (the rest is replaced by a note), as Redis.
pub const SLOW_ARG_BYTES_MAX: usize = 128;
/// Samples kept per latency event, as Redis keeps them.
pub const LATENCY_HISTORY_MAX: usize = 160;
/// Distinct replicas noted per traced request.
pub const TRACE_REPLICAS_MAX: usize = 32;

/// The slow log's and the latency monitor's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlowLogConfig {
    /// Requests slower than this are logged; negative logs none, 0 every
    /// one (Redis's `slowlog-log-slower-than`).
    pub slower_than_us: i64,
    /// Entries kept (`slowlog-max-len`).
    pub max_len: usize,
    /// Spikes over this are sampled; 0 turns the monitor off
    /// (`latency-monitor-threshold`).
    pub latency_threshold_ms: u64,
}

impl Default for SlowLogConfig {
    fn default() -> Self {
        Self {
            slower_than_us: 10_000,
            max_len: 128,
            latency_threshold_ms: 100,
        }
    }
}

/// How long a request waited for one replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaWait {
    pub node: NodeId,
    /// From the start of the request to the replica's last answer.
    pub wait_us: u64,
    /// Answers and failures from it.
    pub answers: u32,
    pub failures: u32,
}

/// One slow request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlowEntry {
    pub id: u64,
    /// Unix time the request started, seconds.
    pub started_unix_s: u64,
    pub duration_us: u64,
    /// Its arguments, cut as the module says.
    pub args: Vec<Bytes>,
    /// `ip:port` of the client.
    pub client_addr: String,
    /// The name the client gave itself (`CLIENT SETNAME`), or empty.
    pub client_name: String,
    /// The replicas the coordinator waited for, slowest first.
    pub replicas: Vec<ReplicaWait>,
}

/// One latency event's figures (`LATENCY LATEST`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatencyEvent {
    pub name: &'static str,
    /// Unix time of the latest spike, seconds.
    pub latest_unix_s: u64,
    pub latest_ms: u64,
    pub max_ms: u64,
    /// `(unix seconds, ms)`, oldest first.
    pub history: VecDeque<(u64, u64)>,
}

/// A node's slow log and latency monitor.
#[derive(Debug, Default)]
pub struct SlowLog {
    config: SlowLogConfig,
    next_id: AtomicU64,
    entries: Mutex<VecDeque<SlowEntry>>,
    latency: Mutex<BTreeMap<&'static str, LatencyEvent>>,
}

impl SlowLog {
    pub fn new(config: SlowLogConfig) -> Self {
        Self {
            config,
            ..Self::default()
        }
    }

    pub fn config(&self) -> SlowLogConfig {
        self.config
    }

    /// True when a request that took `duration_us` belongs in the log.
    pub fn is_slow(&self, duration_us: u64) -> bool {
        self.config.slower_than_us >= 0
            && i64::try_from(duration_us).unwrap_or(i64::MAX) >= self.config.slower_than_us
    }

    /// Logs a slow request (see [`SlowLog::is_slow`]); `args` are cut here.
    pub fn record(
        &self,
        started_unix_s: u64,
        duration_us: u64,
        args: &[Bytes],
        client_addr: String,
        client_name: String,
        mut replicas: Vec<ReplicaWait>,
    ) {
        if self.config.max_len == 0 {
            return;
        }
        replicas.sort_by_key(|w| std::cmp::Reverse(w.wait_us));
        let entry = SlowEntry {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            started_unix_s,
            duration_us,
            args: cut_args(args),
            client_addr,
            client_name,
            replicas,
        };
        let mut entries = self.entries.lock();
        entries.push_front(entry);
        entries.truncate(self.config.max_len);
    }

    /// The newest `count` entries (all with `None`), newest first.
    pub fn get(&self, count: Option<usize>) -> Vec<SlowEntry> {
        let entries = self.entries.lock();
        let n = count.unwrap_or(entries.len()).min(entries.len());
        entries.iter().take(n).cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.entries.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn reset(&self) {
        self.entries.lock().clear();
    }

    /// Samples `event` at `ms` when it is over the threshold.
    pub fn latency_sample(&self, event: &'static str, now_unix_s: u64, ms: u64) {
        let threshold = self.config.latency_threshold_ms;
        if threshold == 0 || ms < threshold {
            return;
        }
        let mut events = self.latency.lock();
        let e = events.entry(event).or_insert_with(|| LatencyEvent {
            name: event,
            latest_unix_s: 0,
            latest_ms: 0,
            max_ms: 0,
            history: VecDeque::new(),
        });
        e.max_ms = e.max_ms.max(ms);
        // As Redis: one sample per second, the largest of that second, and
        // "latest" is that sample.
        match e.history.back_mut() {
            Some(last) if last.0 == now_unix_s => last.1 = last.1.max(ms),
            _ => {
                if e.history.len() == LATENCY_HISTORY_MAX {
                    e.history.pop_front();
                }
                e.history.push_back((now_unix_s, ms));
            }
        }
        if let Some(&(at, latest)) = e.history.back() {
            e.latest_unix_s = at;
            e.latest_ms = latest;
        }
    }

    /// Every event with a spike, by name.
    pub fn latency_latest(&self) -> Vec<LatencyEvent> {
        self.latency.lock().values().cloned().collect()
    }

    /// One event's samples, oldest first.
    pub fn latency_history(&self, event: &str) -> Vec<(u64, u64)> {
        self.latency
            .lock()
            .get(event)
            .map(|e| e.history.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Forgets the named events (every event when `events` is empty);
    /// returns how many were forgotten.
    pub fn latency_reset(&self, events: &[&str]) -> usize {
        let mut map = self.latency.lock();
        if events.is_empty() {
            let n = map.len();
            map.clear();
            return n;
        }
        events
            .iter()
            .filter(|name| map.remove(**name).is_some())
            .count()
    }
}

/// Arguments as Redis keeps them in its slow log.
fn cut_args(args: &[Bytes]) -> Vec<Bytes> {
    let shown = if args.len() > SLOW_ARGS_MAX {
        SLOW_ARGS_MAX - 1
    } else {
        args.len()
    };
    let mut out: Vec<Bytes> = args[..shown]
        .iter()
        .map(|a| {
            if a.len() > SLOW_ARG_BYTES_MAX {
                let mut cut = a[..SLOW_ARG_BYTES_MAX].to_vec();
                cut.extend_from_slice(
                    format!("... ({} more bytes)", a.len() - SLOW_ARG_BYTES_MAX).as_bytes(),
                );
                Bytes::from(cut)
            } else {
                a.clone()
            }
        })
        .collect();
    if shown < args.len() {
        out.push(Bytes::from(format!(
            "... ({} more arguments)",
            args.len() - shown
        )));
    }
    out
}

/// What one traced request waited for.
#[derive(Debug)]
pub struct Trace {
    started: Instant,
    replicas: Vec<(NodeId, Instant, u32, u32)>,
}

impl Trace {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            replicas: Vec::new(),
        }
    }

    /// The waits, from `started` (the request's start).
    fn waits(&self) -> Vec<ReplicaWait> {
        self.replicas
            .iter()
            .map(|&(node, last, answers, failures)| ReplicaWait {
                node,
                wait_us: last.saturating_duration_since(self.started).as_micros() as u64,
                answers,
                failures,
            })
            .collect()
    }
}

tokio::task_local! {
    static TRACE: RefCell<Trace>;
}

/// Runs `fut` (a connection's loop) with a trace its requests restart
/// ([`restart_trace`]) and read ([`replica_waits`]).
pub async fn traced<F: std::future::Future>(fut: F) -> F::Output {
    TRACE.scope(RefCell::new(Trace::new()), fut).await
}

/// A new request starts now on this task: its waits start from here.
pub fn restart_trace() {
    let _ = TRACE.try_with(|t| {
        let mut t = t.borrow_mut();
        t.started = Instant::now();
        t.replicas.clear();
    });
}

/// The replicas this task's current request waited for.
pub fn replica_waits() -> Vec<ReplicaWait> {
    TRACE.try_with(|t| t.borrow().waits()).unwrap_or_default()
}

/// Notes that `node` answered (or failed) a request of this task now.
pub(crate) fn note_replica_answer(node: NodeId, ok: bool) {
    let _ = TRACE.try_with(|t| {
        let mut t = t.borrow_mut();
        let now = Instant::now();
        if let Some(r) = t.replicas.iter_mut().find(|r| r.0 == node) {
            r.1 = now;
            if ok {
                r.2 += 1;
            } else {
                r.3 += 1;
            }
        } else if t.replicas.len() < TRACE_REPLICAS_MAX {
            t.replicas.push((node, now, u32::from(ok), u32::from(!ok)));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(slower_than_us: i64, max_len: usize) -> SlowLog {
        SlowLog::new(SlowLogConfig {
            slower_than_us,
            max_len,
            latency_threshold_ms: 100,
        })
    }

    #[test]
    fn entries_are_kept_newest_first_up_to_the_length() {
        let l = log(10, 2);
        assert!(!l.is_slow(9) && l.is_slow(10));
        for i in 0..3u64 {
            l.record(
                i,
                100 + i,
                &[Bytes::from_static(b"GET")],
                "a".into(),
                String::new(),
                vec![],
            );
        }
        let got = l.get(None);
        assert_eq!(got.iter().map(|e| e.id).collect::<Vec<_>>(), vec![2, 1]);
        assert_eq!(l.get(Some(1)).len(), 1);
        assert_eq!(l.len(), 2);
        l.reset();
        assert!(l.is_empty());
        assert!(!log(-1, 2).is_slow(u64::MAX), "negative logs nothing");
        assert!(log(0, 2).is_slow(0), "0 logs everything");
    }

    #[test]
    fn arguments_are_cut_as_redis_cuts_them() {
        let long = Bytes::from(vec![b'x'; 200]);
        let args: Vec<Bytes> = (0..40).map(|_| long.clone()).collect();
        let cut = cut_args(&args);
        assert_eq!(cut.len(), SLOW_ARGS_MAX);
        assert_eq!(cut[31], Bytes::from("... (9 more arguments)"));
        let first = String::from_utf8(cut[0].to_vec()).expect("utf8");
        assert!(first.ends_with("... (72 more bytes)"), "{first}");
        assert_eq!(first.len(), 128 + "... (72 more bytes)".len());
        assert_eq!(cut_args(&args[..2])[1].len(), 128 + 19);
    }

    #[test]
    fn latency_keeps_latest_max_and_one_sample_per_second() {
        let l = log(10, 2);
        l.latency_sample("command", 100, 50);
        assert!(l.latency_latest().is_empty(), "under the threshold");
        l.latency_sample("command", 100, 150);
        l.latency_sample("command", 100, 300);
        l.latency_sample("command", 100, 200);
        let same_second = l.latency_latest();
        assert_eq!(same_second[0].latest_ms, 300, "the largest of the second");
        l.latency_sample("command", 101, 120);
        let latest = l.latency_latest();
        assert_eq!(latest.len(), 1);
        assert_eq!(
            (
                latest[0].latest_unix_s,
                latest[0].latest_ms,
                latest[0].max_ms
            ),
            (101, 120, 300)
        );
        assert_eq!(l.latency_history("command"), vec![(100, 300), (101, 120)]);
        assert_eq!(l.latency_reset(&["nope"]), 0);
        assert_eq!(l.latency_reset(&[]), 1);
        assert!(l.latency_latest().is_empty());
    }

    #[tokio::test]
    async fn a_trace_notes_each_replica_once_with_its_last_answer() {
        note_replica_answer(1, true); // untraced: nothing happens
        let waits = traced(async {
            restart_trace();
            note_replica_answer(7, true);
            note_replica_answer(8, false);
            note_replica_answer(7, true);
            let first = replica_waits();
            restart_trace();
            (first, replica_waits())
        })
        .await;
        let (first, after_restart) = waits;
        assert_eq!(first.len(), 2);
        let seven = first.iter().find(|w| w.node == 7).expect("node 7");
        assert_eq!((seven.answers, seven.failures), (2, 0));
        assert!(after_restart.is_empty());
        assert!(replica_waits().is_empty(), "outside a trace");
    }
}
