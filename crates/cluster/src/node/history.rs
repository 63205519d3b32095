//! The cluster's recent traffic as this node sees it: every
//! [`HISTORY_INTERVAL`] the sum of the ops/s and the largest p99 its peers
//! gossip (and its own), kept for the last [`HISTORY_SAMPLES`] readings.
//! The dashboard draws it, so its chart has the last minutes from the
//! moment the page opens.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::api::{ClusterView, LoadSample};

/// How often the traffic is sampled.
pub const HISTORY_INTERVAL: Duration = Duration::from_secs(5);
/// Samples kept: ten minutes.
pub const HISTORY_SAMPLES: usize = 120;

/// The samples, oldest first.
#[derive(Clone, Default)]
pub struct LoadHistory(Arc<Mutex<VecDeque<LoadSample>>>);

impl LoadHistory {
    /// Adds the reading of `view` at `now_ms`.
    pub fn sample(&self, view: &ClusterView, now_ms: u64) {
        let members = view
            .nodes
            .iter()
            .filter(|n| n.status != crate::api::NodeStatus::Left);
        let (ops, p99, down) = members.fold((0, 0, 0), |(ops, p99, down), n| {
            if n.alive {
                (ops + n.ops_per_sec, p99.max(n.p99_us), down)
            } else {
                (ops, p99, down + 1)
            }
        });
        let mut h = self.0.lock();
        if h.len() == HISTORY_SAMPLES {
            h.pop_front();
        }
        h.push_back(LoadSample {
            at_ms: now_ms,
            ops_per_sec: ops,
            p99_us: p99,
            nodes_down: down,
        });
    }

    pub fn samples(&self) -> Vec<LoadSample> {
        self.0.lock().iter().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::NodeView;

    #[test]
    fn samples_sum_ops_take_the_worst_p99_and_stay_bounded() {
        let node = |alive, ops, p99| NodeView {
            alive,
            ops_per_sec: ops,
            p99_us: p99,
            ..NodeView::default()
        };
        let view = ClusterView {
            nodes: vec![
                node(true, 100, 900),
                node(true, 50, 2_000),
                node(false, 999, 99_999),
            ],
            ..ClusterView::default()
        };
        let h = LoadHistory::default();
        for i in 0..HISTORY_SAMPLES as u64 + 5 {
            h.sample(&view, i);
        }
        let s = h.samples();
        assert_eq!(s.len(), HISTORY_SAMPLES);
        assert_eq!(s[0].at_ms, 5, "the oldest went first");
        assert_eq!(
            (s[0].ops_per_sec, s[0].p99_us, s[0].nodes_down),
            (150, 2_000, 1)
        );
    }
}
