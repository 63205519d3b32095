//! The history of a run: every operation a client invoked, with its outcome
//! and its invoke and completion times on one monotonic clock.
//!
//! Outcomes follow Jepsen: `Ok` (acknowledged), `Fail` (known not to have
//! happened), `Unknown` (may or may not have happened: a timeout, a dropped
//! connection, or an error from the store, since a failed write in a Dynamo
//! store may still have reached some replicas).

use std::time::Instant;

/// What a client asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpKind {
    /// Set workload: add `element` (its own key, see the workload).
    Add { element: u64 },
    /// Register workload: write `counter` to `key`.
    Write { key: u32, counter: u64 },
    /// Register workload: read every sibling of `key`.
    Read { key: u32 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Fail,
    Unknown,
}

/// One value a read returned: a counter, or bytes that are no value the
/// workload ever writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    Counter(u64),
    Garbage(String),
}

/// One completed operation.
#[derive(Debug, Clone)]
pub struct Op {
    pub client: u32,
    pub kind: OpKind,
    pub outcome: Outcome,
    /// Microseconds since the run began, when the request was sent.
    pub invoke_us: u64,
    /// Microseconds since the run began, when the answer (or error) came.
    pub complete_us: u64,
    /// What an `Ok` read returned.
    pub seen: Vec<Seen>,
    /// The error of a `Fail` or `Unknown` outcome.
    pub error: Option<String>,
}

/// The run's clock: microseconds since it began, monotonic.
#[derive(Debug, Clone, Copy)]
pub struct RunClock {
    start: Instant,
}

impl Default for RunClock {
    fn default() -> Self {
        Self::new()
    }
}

impl RunClock {
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
        }
    }

    pub fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }
}

// What the workloads write, and how a read value is parsed back.

pub fn set_key(element: u64) -> String {
    format!("set:{element:016x}")
}

pub fn register_key(key: u32) -> String {
    format!("reg:{key}")
}

pub fn register_value(counter: u64, client: u32) -> String {
    format!("c{counter}:{client}")
}

/// Parses a register value; anything else is garbage.
pub fn parse_register(value: &[u8]) -> Seen {
    let text = String::from_utf8_lossy(value);
    text.strip_prefix('c')
        .and_then(|rest| rest.split_once(':'))
        .and_then(|(c, _)| c.parse::<u64>().ok())
        .map_or_else(
            || Seen::Garbage(text.chars().take(64).collect()),
            Seen::Counter,
        )
}

/// Counts of a history, for the report.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub ops: u64,
    pub ok: u64,
    pub fail: u64,
    pub unknown: u64,
    /// Acknowledged writes or adds.
    pub acknowledged: u64,
    pub reads_ok: u64,
}

pub fn counts(ops: &[Op]) -> Counts {
    let mut c = Counts::default();
    for op in ops {
        c.ops += 1;
        match op.outcome {
            Outcome::Ok => {
                c.ok += 1;
                match op.kind {
                    OpKind::Read { .. } => c.reads_ok += 1,
                    _ => c.acknowledged += 1,
                }
            }
            Outcome::Fail => c.fail += 1,
            Outcome::Unknown => c.unknown += 1,
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_values_round_trip_and_garbage_is_named() {
        assert_eq!(
            parse_register(register_value(42, 3).as_bytes()),
            Seen::Counter(42)
        );
        assert!(matches!(parse_register(b"c:1"), Seen::Garbage(_)));
        assert!(matches!(parse_register(b"zzz"), Seen::Garbage(_)));
    }
}
