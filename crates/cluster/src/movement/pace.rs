//! Pacing a stream: a rate limit, and a pace that yields to client
//! traffic.

use std::time::Duration;

use super::Movements;
use crate::id::NodeId;
use crate::store::LocalStore;

/// Keeps a byte stream under a rate.
pub(super) struct Throttle {
    rate: u64,
    start: tokio::time::Instant,
    bytes: u64,
}

impl Throttle {
    pub(super) fn new(rate: u64) -> Self {
        Self {
            rate,
            start: tokio::time::Instant::now(),
            bytes: 0,
        }
    }

    /// Changes the rate from now on.
    fn set_rate(&mut self, rate: u64) {
        *self = Self::new(rate);
    }

    pub(super) async fn wait(&mut self, bytes: u64) {
        self.bytes += bytes;
        if self.rate == 0 {
            return;
        }
        let due = Duration::from_secs_f64(self.bytes as f64 / self.rate as f64);
        let elapsed = self.start.elapsed();
        if due > elapsed {
            tokio::time::sleep(due - elapsed).await;
        }
    }
}

/// Probes between two pace decisions.
const PACE_WINDOW: usize = 4;
/// Time between two probes.
const PACE_PROBE_EVERY: Duration = Duration::from_millis(250);
/// How long a probe may take before it counts as slow.
const PACE_PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Streaming yields to client traffic. The driver pings the peers it
/// streams with (`Ping`, answered at once) every [`PACE_PROBE_EVERY`] and
/// compares the median of the last [`PACE_WINDOW`] round trips with the
/// median measured before streaming began: above twice that (and at least
/// 0.5 ms more) the rate halves, down to 1/64 of the maximum; under 1.5
/// times (plus 0.25 ms) it grows by an eighth of the maximum. It starts at a
/// quarter of the maximum. A round trip stands for what a replica's answer
/// to a coordinator costs while the stream runs: on a busy node both wait
/// for the same threads and disks.
pub(super) struct Pacer {
    max: u64,
    rate: u64,
    baseline: Duration,
    window: Vec<Duration>,
    next_probe: tokio::time::Instant,
    turn: usize,
}

impl Pacer {
    pub(super) fn new(max: u64, baseline: Duration) -> Self {
        Self {
            max,
            rate: if max == 0 { 0 } else { (max / 4).max(1) },
            baseline,
            window: Vec::with_capacity(PACE_WINDOW),
            next_probe: tokio::time::Instant::now() + PACE_PROBE_EVERY,
            turn: 0,
        }
    }

    /// The rate now, bytes per second.
    pub(super) fn rate(&self) -> u64 {
        self.rate
    }

    fn floor(&self) -> u64 {
        (self.max / 64).max(1)
    }

    /// Takes one round trip; returns the new rate when it changes.
    fn observe(&mut self, rtt: Duration) -> Option<u64> {
        if self.max == 0 {
            return None;
        }
        self.window.push(rtt);
        if self.window.len() < PACE_WINDOW {
            return None;
        }
        let mut sorted = self.window.clone();
        sorted.sort_unstable();
        let median = sorted[sorted.len() / 2];
        self.window.clear();
        let slow = (self.baseline * 2).max(self.baseline + Duration::from_micros(500));
        let calm = self.baseline * 3 / 2 + Duration::from_micros(250);
        let rate = if median > slow {
            (self.rate / 2).max(self.floor())
        } else if median < calm {
            (self.rate + self.max / 8).min(self.max)
        } else {
            self.rate
        };
        (rate != self.rate).then(|| {
            self.rate = rate;
            rate
        })
    }
}

impl<S: LocalStore> Movements<S> {
    /// One round trip to `peer`; `None` when it is down or does not answer
    /// (a failure says nothing about load: the copy retries on its own).
    async fn probe(&self, peer: NodeId) -> Option<Duration> {
        if !self.membership.is_alive(peer) {
            return None;
        }
        let started = tokio::time::Instant::now();
        self.rpc
            .ping(peer, PACE_PROBE_TIMEOUT)
            .await
            .ok()
            .map(|()| started.elapsed())
    }

    /// The median round trip to `peers` before streaming begins (1 ms when
    /// none answers).
    pub(super) async fn pace_baseline(&self, peers: &[NodeId]) -> Duration {
        let mut rtts = Vec::new();
        for _ in 0..3 {
            for &p in peers {
                rtts.extend(self.probe(p).await);
            }
        }
        rtts.sort_unstable();
        rtts.get(rtts.len() / 2)
            .copied()
            .unwrap_or(Duration::from_millis(1))
    }

    /// Probes one of `peers` when due and adjusts the throttle.
    pub(super) async fn pace(&self, pacer: &mut Pacer, throttle: &mut Throttle, peers: &[NodeId]) {
        if peers.is_empty() || tokio::time::Instant::now() < pacer.next_probe {
            return;
        }
        pacer.next_probe = tokio::time::Instant::now() + PACE_PROBE_EVERY;
        let peer = peers[pacer.turn % peers.len()];
        pacer.turn += 1;
        let Some(rtt) = self.probe(peer).await else {
            return;
        };
        if let Some(rate) = pacer.observe(rtt) {
            throttle.set_rate(rate);
            self.set_status(|s| s.rate_bytes_per_sec = rate);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pacer_halves_when_peers_slow_down_and_grows_when_they_are_calm() {
        let ms = Duration::from_millis;
        let mut p = Pacer::new(64 << 20, ms(1));
        assert_eq!(p.rate, 16 << 20, "starts at a quarter");
        let window = |p: &mut Pacer, rtt| {
            let mut last = None;
            for _ in 0..PACE_WINDOW {
                last = p.observe(rtt);
            }
            last
        };
        // Calm (under 1.5 ms + 0.25 ms): grows by an eighth of the maximum.
        assert_eq!(window(&mut p, ms(1)), Some(24 << 20));
        // Between calm and slow: unchanged.
        assert_eq!(window(&mut p, ms(2)), None);
        // Slow (over 2 ms): halves, never under 1/64 of the maximum.
        assert_eq!(window(&mut p, ms(3)), Some(12 << 20));
        for _ in 0..10 {
            window(&mut p, ms(50));
        }
        assert_eq!(p.rate, 1 << 20);
        // And back up to the maximum, not beyond.
        for _ in 0..20 {
            window(&mut p, Duration::from_micros(900));
        }
        assert_eq!(p.rate, 64 << 20);
        // A median, not a mean: one slow probe does not slow the stream.
        p.observe(ms(100));
        for _ in 1..PACE_WINDOW {
            assert_eq!(p.observe(ms(1)), None);
        }
        // No limit configured: nothing to pace.
        let mut free = Pacer::new(0, ms(1));
        assert_eq!(window(&mut free, ms(100)), None);
    }
}
