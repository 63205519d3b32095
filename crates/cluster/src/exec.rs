//! Where a node's blocking work runs, and how its background loops tick.
//!
//! Storage scans, fsynced writes and token allocation block a thread. On a
//! real node they go to tokio's blocking pool, off the executor. A
//! deterministic simulation runs every node on one thread under a paused
//! clock; work on another thread would finish at a moment the seed does not
//! fix, so the simulation asks for blocking work to run inline, on the
//! calling thread ([`run_blocking_inline`]).
//!
//! Bulk work that holds no lock a request waits on (decoding streamed and
//! imported batches, planning an import) runs on the bulk pool instead
//! (`bulk`): [`BULK_THREADS`] threads of lower CPU priority (see
//! [`ringkv_env::thread`]), so requests get the cores first while a node
//! loads data. At most [`BULK_WAITERS_MAX`] callers wait for it, each on a
//! thread of tokio's blocking pool; callers beyond that wait, on the
//! executor, for a turn. The merges themselves keep normal priority: they
//! take the key's lock and the log's, which client writes wait on.

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

/// Threads of the bulk pool.
pub const BULK_THREADS: usize = 2;
/// Jobs queued for the bulk pool at most.
pub const BULK_QUEUE_MAX: usize = 64;
/// Callers waiting for the bulk pool at most (each holds a thread of
/// tokio's blocking pool while it waits).
pub const BULK_WAITERS_MAX: usize = BULK_QUEUE_MAX + BULK_THREADS;

/// Bulk threads that started (none: jobs run on the caller's thread).
static BULK_STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

type Job = Box<dyn FnOnce() + Send>;

/// The bulk pool's queue; its threads start with the first job.
fn bulk_queue() -> &'static std::sync::mpsc::SyncSender<Job> {
    static QUEUE: std::sync::OnceLock<std::sync::mpsc::SyncSender<Job>> =
        std::sync::OnceLock::new();
    QUEUE.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(BULK_QUEUE_MAX);
        let rx = std::sync::Arc::new(parking_lot::Mutex::new(rx));
        for i in 0..BULK_THREADS {
            let rx = std::sync::Arc::clone(&rx);
            let spawned = std::thread::Builder::new()
                .name(format!("ringkv-bulk-{i}"))
                .spawn(move || {
                    ringkv_env::thread::lower_priority(ringkv_env::thread::BACKGROUND_NICE);
                    loop {
                        let job = rx.lock().recv();
                        let Ok(job) = job else { return };
                        // A job that panics drops its answer (the caller
                        // sees an error); the thread goes on.
                        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                    }
                });
            match spawned {
                Ok(_) => {
                    BULK_STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                Err(e) => tracing::error!(error = %e, "bulk thread not started"),
            }
        }
        tx
    })
}

/// Runs `f` on the bulk pool (or inline, see [`run_blocking_inline`]).
/// The caller waits on tokio's blocking pool, so the runtime knows work
/// is under way (a paused test clock does not jump past it).
pub(crate) async fn bulk<R, F>(f: F) -> Result<R, BlockingError>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    if INLINE.with(Cell::get) {
        return Ok(f());
    }
    static WAITERS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(BULK_WAITERS_MAX);
    let _turn = WAITERS
        .acquire()
        .await
        .map_err(|_| BlockingError("the bulk pool is closed".into()))?;
    let waited = tokio::task::spawn_blocking(move || {
        let queue = bulk_queue();
        if BULK_STARTED.load(std::sync::atomic::Ordering::Relaxed) == 0 {
            // No bulk thread: run here, at this thread's priority.
            return Ok(f());
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
        });
        queue
            .send(job)
            .map_err(|_| BlockingError("the bulk pool is gone".into()))?;
        rx.recv()
            .map_err(|_| BlockingError("a bulk task panicked".into()))
    })
    .await;
    waited.map_err(|e| BlockingError(e.to_string()))?
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

    #[tokio::test(flavor = "current_thread")]
    async fn bulk_work_runs_on_lower_priority_threads_and_survives_a_panic() {
        let here = std::thread::current().id();
        let (there, nice) = bulk(|| (std::thread::current().id(), ringkv_env::thread::priority()))
            .await
            .expect("bulk");
        assert_ne!(there, here);
        if cfg!(target_os = "linux") {
            let mine = ringkv_env::thread::priority().expect("readable");
            assert_eq!(nice, Some(mine.max(ringkv_env::thread::BACKGROUND_NICE)));
        }
        let panicked = bulk(|| -> u8 { panic!("a failing job") }).await;
        assert!(panicked.is_err());
        let all: Vec<_> =
            futures::future::join_all((0..BULK_QUEUE_MAX * 2).map(|i| bulk(move || i)))
                .await
                .into_iter()
                .map(|r| r.expect("bulk after a panic"))
                .collect();
        assert_eq!(all, (0..BULK_QUEUE_MAX * 2).collect::<Vec<_>>());
    }
}
