//! A gate for log lines of events that can come in floods (refused
//! connections, dropped hints): the first one passes, then at most one per
//! interval, carrying how many were held back.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::Mutex;

/// Lets one event in per `interval_ms` through; counts the rest.
#[derive(Debug)]
pub struct LogEvery {
    interval_ms: u64,
    last: Mutex<Option<Instant>>,
    held: AtomicU64,
}

impl LogEvery {
    pub const fn new(interval_ms: u64) -> Self {
        Self {
            interval_ms,
            last: Mutex::new(None),
            held: AtomicU64::new(0),
        }
    }

    /// `Some(held back since the last line)` when this event should be
    /// logged, `None` when it is held back.
    pub fn admit(&self) -> Option<u64> {
        let now = Instant::now();
        let mut last = self.last.lock();
        let due = last.is_none_or(|t| now.duration_since(t).as_millis() as u64 >= self.interval_ms);
        if due {
            *last = Some(now);
            Some(self.held.swap(0, Ordering::Relaxed))
        } else {
            self.held.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_passes_then_one_per_interval_with_the_count_held() {
        let gate = LogEvery::new(60_000);
        assert_eq!(gate.admit(), Some(0));
        assert_eq!(gate.admit(), None);
        assert_eq!(gate.admit(), None);
        let open = LogEvery::new(0);
        assert_eq!(open.admit(), Some(0));
        assert_eq!(open.admit(), Some(0));
    }
}
