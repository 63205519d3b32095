//! Where a node's blocking work runs, and how its background loops tick.
//!
//! Storage scans, fsynced writes and token allocation block a thread. On a
//! real node they go to tokio's blocking pool, off the executor. A
//! deterministic simulation runs every node on one thread under a paused
//! clock; work on another thread would finish at a moment the seed does not
//! fix, so the simulation asks for blocking work to run inline, on the
//! calling thread ([`run_blocking_inline`]).

use std::cell::Cell;
use std::time::Duration;

thread_local! {
    static INLINE: Cell<bool> = const { Cell::new(false) };
}

/// From now on, blocking work started on this thread runs inline instead of
/// on the blocking pool. Only for a current-thread runtime driven by a
/// simulation: every task of such a runtime runs on the thread that drives
/// it.
pub fn run_blocking_inline(on: bool) {
    INLINE.with(|c| c.set(on));
}

/// Why blocking work gave no result.
#[derive(Debug, thiserror::Error)]
#[error("blocking task failed: {0}")]
pub struct BlockingError(String);

/// Runs `f` off the executor (or inline, see [`run_blocking_inline`]).
pub(crate) async fn blocking<R, F>(f: F) -> Result<R, BlockingError>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    if INLINE.with(Cell::get) {
        return Ok(f());
    }
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| BlockingError(e.to_string()))
}

/// Runs `tick` every `interval` (a late tick waits, none is skipped) until
/// `shutdown` resolves. The background loops of a node.
pub async fn every<F, Fut>(
    interval: Duration,
    shutdown: impl std::future::Future<Output = ()>,
    mut tick: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            // Shutdown first, and a fixed order: a simulation replays.
            biased;
            _ = &mut shutdown => return,
            _ = ticker.tick() => {}
        }
        tick().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn inline_work_runs_on_the_calling_thread() {
        let here = std::thread::current().id();
        let elsewhere = blocking(move || std::thread::current().id()).await;
        assert_ne!(elsewhere.ok(), Some(here));
        run_blocking_inline(true);
        let inline = blocking(move || std::thread::current().id()).await;
        run_blocking_inline(false);
        assert_eq!(inline.ok(), Some(here));
    }
}
