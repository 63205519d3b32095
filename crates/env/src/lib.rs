//! The seams between ringkv and the world.
//!
//! Every component that needs the time of day or a random number takes it from
//! here, through a small trait, so that a whole cluster can run inside a seeded
//! simulation with a simulated clock. This crate depends on nothing of ringkv and
//! must stay a leaf: storage, cluster and the front ends all build on it.
//!
//! # Layout
//! - [`Clock`]: wall-clock milliseconds (for TTLs and hybrid logical clocks) and a
//!   monotonic reading (for timeouts and rates).
//! - [`SystemClock`]: the real clock.
//! - [`ManualClock`]: a clock that only moves when told, for tests and simulation.
//! - [`SkewedClock`]: another clock's wall time shifted by an offset that can be
//!   changed while it runs (clock-skew fault injection on real processes).
//! - [`Rng`] / [`SeededRng`]: a tiny deterministic generator (splitmix64).
//! - [`log_every`]: at most one log line per interval for events that come
//!   in floods.
//! - [`process`]: this process's CPU time, memory and open files, as the
//!   operating system reports them (for metrics and INFO).
//! - [`thread`]: a thread's CPU priority (background work yields to
//!   requests).

pub mod log_every;
pub mod process;
pub mod thread;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A source of time. Implementations must be cheap to call and thread-safe.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// Milliseconds since the Unix epoch. May jump (NTP, simulated skew); callers
    /// that need monotonicity use [`Clock::monotonic`].
    fn now_ms(&self) -> u64;

    /// A monotonic reading, only meaningful as a difference between two calls.
    fn monotonic(&self) -> Duration;
}

/// A shared clock handle.
pub type SharedClock = Arc<dyn Clock>;

/// The operating system's clock.
#[derive(Debug)]
pub struct SystemClock {
    start: Instant,
}

impl SystemClock {
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
        }
    }

    /// A shared handle to a new system clock.
    pub fn shared() -> SharedClock {
        Arc::new(Self::new())
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }

    fn monotonic(&self) -> Duration {
        self.start.elapsed()
    }
}

/// A clock that moves only when told to: tests and simulation use it to make
/// TTL expiry and timeouts deterministic.
#[derive(Debug)]
pub struct ManualClock {
    wall_ms: AtomicU64,
    mono_ns: AtomicU64,
}

impl ManualClock {
    /// A clock whose wall time starts at `wall_ms` and whose monotonic reading
    /// starts at zero.
    pub fn new(wall_ms: u64) -> Self {
        Self {
            wall_ms: AtomicU64::new(wall_ms),
            mono_ns: AtomicU64::new(0),
        }
    }

    /// Moves both readings forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.wall_ms
            .fetch_add(by.as_millis() as u64, Ordering::SeqCst);
        self.mono_ns
            .fetch_add(by.as_nanos() as u64, Ordering::SeqCst);
    }

    /// Sets the wall time (a skew or jump); the monotonic reading is untouched.
    pub fn set_wall_ms(&self, wall_ms: u64) {
        self.wall_ms.store(wall_ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.wall_ms.load(Ordering::SeqCst)
    }

    fn monotonic(&self) -> Duration {
        Duration::from_nanos(self.mono_ns.load(Ordering::SeqCst))
    }
}

/// Another clock whose wall time is shifted by an offset that can change at run
/// time: the clock-skew hook of fault injection on real processes. The
/// monotonic reading is the inner clock's, untouched, because skew is a
/// property of wall clocks (NTP steps, misconfigured hosts), never of elapsed
/// time.
#[derive(Debug)]
pub struct SkewedClock {
    inner: SharedClock,
    offset_ms: AtomicI64,
}

impl SkewedClock {
    /// `inner` with no skew.
    pub fn new(inner: SharedClock) -> Self {
        Self {
            inner,
            offset_ms: AtomicI64::new(0),
        }
    }

    /// Shifts the wall time by `offset_ms` (negative: into the past) from now
    /// on; replaces any earlier offset.
    pub fn set_offset_ms(&self, offset_ms: i64) {
        self.offset_ms.store(offset_ms, Ordering::SeqCst);
    }

    pub fn offset_ms(&self) -> i64 {
        self.offset_ms.load(Ordering::SeqCst)
    }
}

impl Clock for SkewedClock {
    fn now_ms(&self) -> u64 {
        self.inner.now_ms().saturating_add_signed(self.offset_ms())
    }

    fn monotonic(&self) -> Duration {
        self.inner.monotonic()
    }
}

/// A source of randomness. Deterministic implementations make simulations replay.
pub trait Rng: Send + std::fmt::Debug {
    fn next_u64(&mut self) -> u64;

    /// A value uniformly drawn from `0..bound` (`bound` > 0).
    fn below(&mut self, bound: u64) -> u64 {
        debug_assert!(bound > 0);
        // Lemire's multiply-shift; the bias is negligible for our bounds.
        ((self.next_u64() as u128 * bound as u128) >> 64) as u64
    }
}

/// splitmix64: tiny, fast, and good enough for placement and jitter. Not for
/// secrets.
#[derive(Debug, Clone)]
pub struct SeededRng {
    state: u64,
}

impl SeededRng {
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }
}

impl Rng for SeededRng {
    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// A shared, lockable generator for components that draw rarely.
pub type SharedRng = Arc<parking_lot::Mutex<dyn Rng>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::new(1_000);
        assert_eq!(c.now_ms(), 1_000);
        assert_eq!(c.monotonic(), Duration::ZERO);
        c.advance(Duration::from_millis(250));
        assert_eq!(c.now_ms(), 1_250);
        assert_eq!(c.monotonic(), Duration::from_millis(250));
        c.set_wall_ms(10);
        assert_eq!(c.now_ms(), 10);
        assert_eq!(c.monotonic(), Duration::from_millis(250));
    }

    #[test]
    fn skewed_clock_shifts_wall_time_only() {
        let base = Arc::new(ManualClock::new(10_000));
        let c = SkewedClock::new(base.clone());
        assert_eq!(c.now_ms(), 10_000);
        c.set_offset_ms(2_500);
        assert_eq!(c.now_ms(), 12_500);
        c.set_offset_ms(-20_000);
        assert_eq!(c.now_ms(), 0, "saturates at the epoch");
        c.set_offset_ms(-1_000);
        base.advance(Duration::from_millis(5));
        assert_eq!(c.now_ms(), 9_005);
        assert_eq!(c.monotonic(), Duration::from_millis(5));
        assert_eq!(c.offset_ms(), -1_000);
    }

    #[test]
    fn seeded_rng_replays_and_stays_in_bounds() {
        let mut a = SeededRng::new(42);
        let mut b = SeededRng::new(42);
        let xs: Vec<u64> = (0..100).map(|_| a.below(7)).collect();
        let ys: Vec<u64> = (0..100).map(|_| b.below(7)).collect();
        assert_eq!(xs, ys);
        assert!(xs.iter().all(|&x| x < 7));
        // All residues appear over 100 draws (a broken generator would not).
        for r in 0..7 {
            assert!(xs.contains(&r), "residue {r} never drawn");
        }
        let mut c = SeededRng::new(43);
        assert_ne!(a.next_u64(), c.next_u64());
    }

    #[test]
    fn system_clock_is_plausible() {
        let c = SystemClock::new();
        // 2020-01-01 in ms: any real clock is past it.
        assert!(c.now_ms() > 1_577_836_800_000);
        let a = c.monotonic();
        let b = c.monotonic();
        assert!(b >= a);
    }
}
