//! The phi-accrual failure detector (Hayashibara et al., as in Cassandra).

use std::time::Duration;

/// The most heartbeats one arrival stands for (a member back after a cut
/// jumps by many: its outage is no interval).
const PULSES_PER_ARRIVAL_MAX: u64 = 10;

/// The longest interval counted, microseconds (an hour: a longer silence
/// says nothing more of the peer's rate).
const INTERVAL_US_MAX: u64 = 3_600_000_000;

/// A silence longer than this many mean intervals (phi 8.7, past the
/// conviction threshold in use, 8) was an outage, not the peer's rate: it
/// is not counted as an interval (once a rate is measured), so a peer back from a cut or a pause is
/// seen down again at its usual pace (Cassandra ignores intervals past
/// its `fd_max_interval_ms` alike).
const OUTAGE_MEANS: f64 = 20.0;

/// How far the newest pulse seen may lie past a newer state of the peer
/// when that state arrives: beyond it the pulse was forged, and is
/// forgotten. A digest's pulse is unsigned and taken up to
/// [`super::PULSE_AHEAD_MAX`] (four publications) past the state held, so
/// a forger can lead the next state by three; an honest pulse leads a
/// state by a publication interval and a relay's delay. A state that
/// arrives two publications late is taken for the sign of a forgery too:
/// the cost is that up to [`PULSES_PER_ARRIVAL_MAX`] pulses count again
/// in one arrival.
const PULSE_LEAD_MAX: u64 = 2 * PULSES_PER_ARRIVAL_MAX;

/// Phi-accrual failure detector for one peer.
///
/// The mean interval between heartbeats is the ratio of two sums over the
/// last `intervals_max` arrivals or so: the microseconds between arrivals
/// and the heartbeats they brought, each decayed by `1 / intervals_max` as
/// an arrival comes once that many have (an exponentially weighted window,
/// a sliding window's mean without its memory: a node keeps a detector for
/// every member, so at a thousand members a window of 100 arrivals would
/// cost 800 KB a node, these sums 16 bytes a member).
#[derive(Debug, Clone)]
pub struct PhiDetector {
    sum_us: f64,
    sum_pulses: f64,
    /// Arrivals counted, up to `intervals_max`.
    arrivals: u32,
    last: Option<Duration>,
    intervals_max: u32,
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
            sum_us: 0.0,
            sum_pulses: 0.0,
            arrivals: 0,
            last: None,
            intervals_max: u32::try_from(intervals_max).unwrap_or(u32::MAX).max(1),
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
    /// last state, whatever pulses digests claimed. A pulse seen more than
    /// `PULSE_LEAD_MAX` past it was forged: it is forgotten, and this
    /// state brings the pulses since the last state (so a forged pulse far
    /// ahead, relayed by honest peers, neither hides the peer's own pulses
    /// for long nor makes its states look rare). True when newer.
    pub fn observe_state(&mut self, freshness: (u64, u64), now: Duration) -> bool {
        if freshness <= self.state_seen {
            return false;
        }
        let previous = self.state_seen;
        self.state_seen = freshness;
        self.state_at = Some(now);
        if previous.0 != 0 && previous.0 != freshness.0 {
            // A new life: the gap of the restart is no interval, and the
            // old life's rate says nothing of this one.
            self.forget_rate();
        }
        if self.seen.0 == freshness.0 && self.seen.1 > freshness.1.saturating_add(PULSE_LEAD_MAX) {
            self.seen = if previous.0 == freshness.0 {
                previous
            } else {
                (freshness.0, freshness.1.saturating_sub(1))
            };
        }
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
                self.forget_rate();
                true
            }
            None => true,
        }
    }

    /// Forgets the arrivals so far (the next heartbeat starts anew).
    fn forget_rate(&mut self) {
        self.sum_us = 0.0;
        self.sum_pulses = 0.0;
        self.arrivals = 0;
        self.last = None;
    }

    /// Records a heartbeat arrival at monotonic time `now`.
    pub fn heartbeat(&mut self, now: Duration) {
        self.heartbeat_of(now, 1);
    }

    /// Records an arrival at `now` of `pulses` heartbeats at once.
    fn heartbeat_of(&mut self, now: Duration, pulses: u64) {
        if let Some(last) = self.last {
            let us = u64::try_from(now.saturating_sub(last).as_micros())
                .unwrap_or(INTERVAL_US_MAX)
                .min(INTERVAL_US_MAX);
            if self.arrivals > 0 && us as f64 > OUTAGE_MEANS * self.mean_ms() * 1000.0 {
                self.last = Some(now);
                return;
            }
            let pulses = pulses.clamp(1, PULSES_PER_ARRIVAL_MAX);
            if self.arrivals == self.intervals_max {
                let keep = 1.0 - 1.0 / f64::from(self.intervals_max);
                self.sum_us *= keep;
                self.sum_pulses *= keep;
            } else {
                self.arrivals += 1;
            }
            self.sum_us += us as f64;
            self.sum_pulses += pulses as f64;
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
        let elapsed = now.saturating_sub(last).as_secs_f64() * 1000.0;
        elapsed / self.mean_ms() * std::f64::consts::LOG10_E
    }

    /// The mean interval between heartbeats, ms (the floor until one is
    /// measured).
    fn mean_ms(&self) -> f64 {
        if self.arrivals == 0 {
            self.mean_floor_ms
        } else {
            (self.sum_us / 1000.0 / self.sum_pulses.max(1.0)).max(self.mean_floor_ms)
        }
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

    /// A pulse forged far ahead (within what the digest check lets by):
    /// the peer's own pulses count again from its next state on (not only
    /// once they pass the forged one).
    #[test]
    fn a_forged_pulse_ahead_is_forgotten_at_the_next_state() {
        let t = Duration::from_millis;
        let trust = Duration::from_secs(40);
        let mut d = PhiDetector::new(100, 1_000.0);
        d.observe_state((1, 0), t(0));
        assert!(d.observe_pulse((1, 40), t(500), trust), "the forgery");
        assert!(!d.observe_pulse((1, 1), t(1_000), trust));
        assert!(d.observe_state((1, 10), t(10_000)));
        assert!(
            d.observe_pulse((1, 11), t(11_000), trust),
            "a real pulse again"
        );
        assert_eq!(d.last_heartbeat(), Some(t(11_000)));
    }

    /// A restart (a new generation) after a long gap: the gap is no
    /// interval, so a death soon after is seen at the usual pace.
    #[test]
    fn a_new_life_starts_its_rate_anew() {
        let mut d = PhiDetector::new(100, 1_000.0);
        let t = Duration::from_secs;
        for i in 0..50u64 {
            d.observe_state((1, i), t(i));
        }
        d.observe_state((2, 0), t(700));
        d.observe_state((2, 1), t(701));
        assert!(d.phi(t(721)) >= 8.0, "{}", d.phi(t(721)));
    }

    /// A peer back after an outage (same life, its heartbeat on by one or
    /// by many pulses): the outage is no interval, so its next silence is
    /// seen at the usual pace, and gaps of a few means still teach the
    /// rate.
    #[test]
    fn an_outage_is_not_taken_for_the_rate() {
        for jump in [1, 600] {
            let mut d = PhiDetector::new(100, 100.0);
            let t = Duration::from_millis;
            for i in 0..50u64 {
                d.observe_state((1, i), t(1_000 * i));
            }
            // Down for ten minutes, then back.
            d.observe_state((1, 49 + jump), t(49_000 + 600_000));
            for i in 1..=5u64 {
                d.observe_state((1, 49 + jump + i), t(649_000 + 1_000 * i));
            }
            let phi = d.phi(t(654_000 + 20_000));
            assert!(phi >= 8.0, "jump {jump}: phi {phi} after 20 s");
        }
        // A slower rate (gaps of 5 means) is learnt.
        let mut d = PhiDetector::new(10, 100.0);
        let t = Duration::from_millis;
        for i in 0..=10u64 {
            d.heartbeat(t(1_000 * i));
        }
        for i in 1..=10u64 {
            d.heartbeat(t(10_000 + 5_000 * i));
        }
        assert!(d.mean_ms() > 3_000.0, "{}", d.mean_ms());
    }

    /// The decayed sums follow a change of rate within about a window of
    /// arrivals, and cost the same whatever the window.
    #[test]
    fn the_mean_follows_the_rate_in_a_window_and_the_detector_is_small() {
        let mut d = PhiDetector::new(100, 10.0);
        let t = Duration::from_millis;
        for i in 0..=300u64 {
            d.heartbeat(t(1_000 * i));
        }
        // phi = elapsed / mean * log10(e): 1 s of silence at a 1 s mean.
        let at_1s = d.phi(t(301_000));
        assert!((at_1s - std::f64::consts::LOG10_E).abs() < 1e-9, "{at_1s}");
        for i in 1..=300u64 {
            d.heartbeat(t(300_000 + 2_000 * i));
        }
        let mean_ms = 1_000.0 * std::f64::consts::LOG10_E / d.phi(t(900_000 + 1_000));
        assert!((1_900.0..=2_000.0).contains(&mean_ms), "{mean_ms} ms");
        assert!(
            std::mem::size_of::<PhiDetector>() <= 160,
            "{} bytes",
            std::mem::size_of::<PhiDetector>()
        );
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
