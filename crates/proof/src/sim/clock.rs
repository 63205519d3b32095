//! [`SimClock`]: a node's clock in the simulation.
//!
//! Time is tokio's paused clock, shared by every node: it stands still
//! while any task can run and jumps to the next timer when all wait. Each
//! node's wall clock adds its own skew (a fault the nemesis sets); the
//! monotonic reading never skews, as on a real machine.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use ringkv_env::Clock;

/// The wall time at which every simulation starts (2026-01-01 UTC), so runs
/// replay whatever the date.
pub const WALL_START_MS: u64 = 1_767_225_600_000;

#[derive(Debug)]
pub struct SimClock {
    origin: tokio::time::Instant,
    skew_ms: AtomicI64,
}

impl SimClock {
    /// A clock whose monotonic reading is zero at `origin`.
    pub fn new(origin: tokio::time::Instant) -> Self {
        Self {
            origin,
            skew_ms: AtomicI64::new(0),
        }
    }

    /// Shifts the wall time by `ms` from now on (replaces an earlier skew).
    pub fn set_skew_ms(&self, ms: i64) {
        self.skew_ms.store(ms, Ordering::SeqCst);
    }

    pub fn skew_ms(&self) -> i64 {
        self.skew_ms.load(Ordering::SeqCst)
    }

    /// Simulated time since the run began. Outside the runtime (an engine's
    /// idle background thread) tokio falls back to the real clock, which
    /// the saturating difference keeps harmless.
    pub fn elapsed(&self) -> Duration {
        tokio::time::Instant::now().saturating_duration_since(self.origin)
    }
}

impl Clock for SimClock {
    fn now_ms(&self) -> u64 {
        (WALL_START_MS + self.elapsed().as_millis() as u64).saturating_add_signed(self.skew_ms())
    }

    fn monotonic(&self) -> Duration {
        self.elapsed()
    }
}
