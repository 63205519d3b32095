//! The phi-accrual failure detector (Hayashibara et al., as in Cassandra).

use std::collections::VecDeque;
use std::time::Duration;

/// The most heartbeats one arrival stands for (a member back after a cut
/// jumps by many: its outage is no interval).
const PULSES_PER_ARRIVAL_MAX: u64 = 10;

/// The longest interval counted, microseconds (an hour: a longer silence
/// says nothing more of the peer's rate; it fits a `u32`).
const INTERVAL_US_MAX: u32 = 3_600_000_000;

/// Phi-accrual failure detector for one peer.
#[derive(Debug, Clone)]
pub struct PhiDetector {
    /// The last arrivals: (microseconds since the one before, heartbeats
    /// it brought; 8 bytes an arrival, a detector per member per node),
    /// and their sums (kept as they change: `phi` is asked of every member
    /// every round, and must not walk the window).
    intervals: VecDeque<(u32, u16)>,
    sum_us: u64,
    sum_pulses: u64,
    last: Option<Duration>,
    intervals_max: usize,
    /// Floor on the mean interval so a burst of quick heartbeats does not
    /// make the detector twitchy.
    mean_floor_ms: f64,
    /// The peer announced it stops, its state then being this `(generation,
    /// heartbeat)`: down until a newer state of it arrives.
    stopped_at: Option<(u64, u64)>,
    /// The peer's newest `(generation, pulse)` seen, by whatever path (its
    /// state, or a digest's pulse).
    seen: (u64, u64),
    /// The newest `(generation, heartbeat)` of its states, and when it
    /// arrived.
    state_seen: (u64, u64),
    state_at: Option<Duration>,
}

impl PhiDetector {
    pub fn new(intervals_max: usize, expected_interval_ms: f64) -> Self {
        Self {
            // Grown as arrivals come: a member heard once costs nothing.
            intervals: VecDeque::new(),
            sum_us: 0,
            sum_pulses: 0,
            last: None,
            intervals_max: intervals_max.max(1),
            mean_floor_ms: expected_interval_ms,
            stopped_at: None,
            seen: (0, 0),
            state_seen: (0, 0),
            state_at: None,
        }
    }

    /// The peer's newest `(generation, pulse)` seen.
    pub fn seen(&self) -> (u64, u64) {
        self.seen
    }

    /// A state of the peer at `freshness` arrived at `now` (signed by it
    /// where states are signed): a heartbeat when it is newer than the
    /// last state, whatever pulses digests claimed. True when newer.
    pub fn observe_state(&mut self, freshness: (u64, u64), now: Duration) -> bool {
        if freshness <= self.state_seen {
            return false;
        }
        self.state_seen = freshness;
        self.state_at = Some(now);
        let pulses = self.pulses_to(freshness);
        self.seen = self.seen.max(freshness);
        if self.alive_after_stop(freshness) {
            self.heartbeat_of(now, pulses.max(1));
        }
        true
    }

    /// A pulse of the peer at `freshness`, from a digest (unsigned),
    /// arrived at `now`: a heartbeat when it is newer than every pulse
    /// seen, and a state of the peer arrived within `trust` (so a forger
    /// can keep a dead peer alive that long at most). True when taken.
    pub fn observe_pulse(&mut self, freshness: (u64, u64), now: Duration, trust: Duration) -> bool {
        let trusted = self
            .state_at
            .is_some_and(|at| now.saturating_sub(at) <= trust);
        if !trusted || freshness <= self.seen {
            return false;
        }
        let pulses = self.pulses_to(freshness);
        self.seen = freshness;
        if self.alive_after_stop(freshness) {
            self.heartbeat_of(now, pulses.max(1));
        }
        true
    }

    /// The pulses from the newest seen to `freshness` (1 across lives),
    /// at most [`PULSES_PER_ARRIVAL_MAX`]; 0 when not newer. Pulses
    /// relayed by gossip arrive in jumps (several rounds' worth at once,
    /// after a gap): the mean interval is the time the window spans over
    /// the pulses it brought, so the detector follows the member's rate
    /// and not the relay's jitter.
    fn pulses_to(&self, freshness: (u64, u64)) -> u64 {
        if freshness <= self.seen {
            0
        } else if freshness.0 == self.seen.0 {
            (freshness.1 - self.seen.1).min(PULSES_PER_ARRIVAL_MAX)
        } else {
            1
        }
    }

    /// The peer said it stops with its state at `freshness`.
    pub fn stopped(&mut self, freshness: (u64, u64)) {
        self.stopped_at = Some(freshness);
    }

    /// True when a state of the peer at `freshness` is a sign of life: it
    /// did not announce a stop, or this state is newer than its last.
    pub fn alive_after_stop(&mut self, freshness: (u64, u64)) -> bool {
        match self.stopped_at {
            Some(last) if freshness <= last => false,
            Some(_) => {
                // Back: its outage is not a heartbeat interval.
                self.stopped_at = None;
                self.intervals.clear();
                self.sum_us = 0;
                self.sum_pulses = 0;
                self.last = None;
                true
            }
            None => true,
        }
    }

    /// Records a heartbeat arrival at monotonic time `now`.
    pub fn heartbeat(&mut self, now: Duration) {
        self.heartbeat_of(now, 1);
    }

    /// Records an arrival at `now` of `pulses` heartbeats at once.
    fn heartbeat_of(&mut self, now: Duration, pulses: u64) {
        if let Some(last) = self.last {
            let us = u32::try_from(now.saturating_sub(last).as_micros())
                .unwrap_or(INTERVAL_US_MAX)
                .min(INTERVAL_US_MAX);
            let pulses = pulses.clamp(1, PULSES_PER_ARRIVAL_MAX) as u16;
            if self.intervals.len() == self.intervals_max
                && let Some((old_us, old_pulses)) = self.intervals.pop_front()
            {
                self.sum_us -= u64::from(old_us);
                self.sum_pulses -= u64::from(old_pulses);
            }
            self.intervals.push_back((us, pulses));
            self.sum_us += u64::from(us);
            self.sum_pulses += u64::from(pulses);
        }
        self.last = Some(now);
    }

    /// Monotonic time of the last heartbeat seen, if any.
    pub fn last_heartbeat(&self) -> Option<Duration> {
        self.last
    }

    /// The suspicion level at `now` (0 right after a heartbeat).
    pub fn phi(&self, now: Duration) -> f64 {
        let Some(last) = self.last else {
            return f64::INFINITY;
        };
        if self.stopped_at.is_some() {
            return f64::INFINITY;
        }
        let mean = if self.intervals.is_empty() {
            self.mean_floor_ms
        } else {
            (self.sum_us as f64 / 1000.0 / self.sum_pulses.max(1) as f64).max(self.mean_floor_ms)
        };
        let elapsed = now.saturating_sub(last).as_secs_f64() * 1000.0;
        elapsed / mean * std::f64::consts::LOG10_E
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stopped_peer_is_down_until_a_newer_state_of_it() {
        let mut d = PhiDetector::new(100, 1000.0);
        let t = Duration::from_secs;
        d.heartbeat(t(1));
        d.heartbeat(t(2));
        assert!(d.phi(t(2)) < 1.0);
        d.stopped((5, 10));
        assert_eq!(d.phi(t(2)), f64::INFINITY, "down at once");
        assert!(!d.alive_after_stop((5, 10)), "its last state again");
        assert!(!d.alive_after_stop((4, 99)), "an earlier life");
        assert_eq!(d.phi(t(3)), f64::INFINITY);
        assert!(d.alive_after_stop((5, 11)), "a newer heartbeat");
        assert!(d.alive_after_stop((6, 0)), "and then anything");
        d.heartbeat(t(60));
        assert!(
            d.phi(t(60)) < 1.0,
            "up again, the outage not counted as an interval"
        );
        d.heartbeat(t(61));
        assert!(d.phi(t(62)) < 1.0, "{}", d.phi(t(62)));
    }

    #[test]
    fn only_newer_pulses_are_heartbeats() {
        let mut d = PhiDetector::new(10, 100.0);
        let t = Duration::from_millis;
        let trust = Duration::from_secs(4);
        assert!(
            !d.observe_pulse((5, 1), t(0), trust),
            "no state yet: not believed"
        );
        assert!(d.observe_state((5, 0), t(0)));
        assert!(d.observe_pulse((5, 10), t(0), trust));
        assert!(
            !d.observe_pulse((5, 10), t(50), trust),
            "the same pulse again"
        );
        assert!(!d.observe_pulse((5, 9), t(60), trust), "an older one");
        assert_eq!(d.last_heartbeat(), Some(t(0)));
        assert!(d.observe_pulse((5, 11), t(100), trust));
        assert!(
            !d.observe_pulse((5, 12), t(5_000), trust),
            "no state for longer than the trust: pulses are not believed"
        );
        assert!(d.observe_state((6, 0), t(5_100)), "a new life");
        assert_eq!(d.seen(), (6, 0));
        assert_eq!(d.last_heartbeat(), Some(t(5_100)));
    }

    /// A forged pulse far ahead does not stop the peer's own states from
    /// counting: it stays alive.
    #[test]
    fn a_forged_pulse_ahead_does_not_silence_the_peers_states() {
        let mut d = PhiDetector::new(10, 1_000.0);
        let t = Duration::from_secs;
        let trust = Duration::from_secs(40);
        d.observe_state((1, 0), t(0));
        assert!(d.observe_pulse((1, 40), t(1), trust), "a forger's pulse");
        for i in 1..=10 {
            // The peer's real publications, every 10 s, below the forgery.
            assert!(d.observe_state((1, 10 * i), t(1 + 10 * i)));
            assert!(d.phi(t(1 + 10 * i)) < 1.0);
        }
    }

    #[test]
    fn a_jump_of_pulses_counts_as_as_many_intervals() {
        let mut d = PhiDetector::new(10, 100.0);
        let t = Duration::from_millis;
        let trust = Duration::from_secs(60);
        d.observe_state((1, 0), t(0));
        // Pulses arrive every 1,000 ms, four at a time: 250 ms each.
        for i in 1..=5u64 {
            d.observe_pulse((1, 4 * i), t(1_000 * i), trust);
        }
        // phi = elapsed / 250 ms * log10(e): 8 after about 4.6 s of silence.
        assert!(d.phi(t(5_000 + 4_000)) < 8.0);
        assert!(d.phi(t(5_000 + 5_000)) >= 8.0);
    }
}
