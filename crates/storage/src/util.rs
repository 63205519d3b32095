//! Small helpers with no format or policy of their own: the compaction write
//! rate limiter and file naming.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// A token bucket over bytes per second, shared by the compaction threads so
/// background I/O cannot starve foreground reads and the log.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    bytes_per_sec: u64,
    state: Mutex<(Instant, f64)>,
    /// Set on shutdown: waiting writers return at once.
    cancelled: AtomicBool,
}

/// The bucket holds at most this many seconds of budget (burst).
const BURST_SECS: f64 = 0.1;

impl RateLimiter {
    /// `None` when `bytes_per_sec` is 0 (unlimited).
    pub fn new(bytes_per_sec: u64) -> Option<Self> {
        (bytes_per_sec > 0).then(|| RateLimiter {
            bytes_per_sec,
            state: Mutex::new((Instant::now(), 0.0)),
            cancelled: AtomicBool::new(false),
        })
    }

    /// Blocks until `bytes` may be written.
    pub fn acquire(&self, bytes: u64) {
        let rate = self.bytes_per_sec as f64;
        let wait = {
            let mut st = self.state.lock();
            let now = Instant::now();
            let elapsed = now.duration_since(st.0).as_secs_f64();
            st.0 = now;
            st.1 = (st.1 + elapsed * rate).min(rate * BURST_SECS);
            st.1 -= bytes as f64;
            if st.1 < 0.0 { -st.1 / rate } else { 0.0 }
        };
        let until = Instant::now() + Duration::from_secs_f64(wait.clamp(0.0, 3600.0));
        while !self.cancelled.load(Ordering::Acquire) {
            let now = Instant::now();
            if now >= until {
                break;
            }
            std::thread::sleep((until - now).min(Duration::from_millis(20)));
        }
    }

    /// Wakes every waiter for good (engine shutdown).
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Release);
    }
}

/// What a file in the data directory is, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileKind {
    Log(u64),
    Table(u64),
    Manifest,
    ManifestTmp,
    Lock,
}

pub(crate) const MANIFEST_NAME: &str = "MANIFEST";
pub(crate) const MANIFEST_TMP_NAME: &str = "MANIFEST.tmp";

pub(crate) fn log_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:06}.log"))
}

pub(crate) fn table_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:06}.sst"))
}

pub(crate) fn parse_file_name(name: &str) -> Option<FileKind> {
    match name {
        MANIFEST_NAME => return Some(FileKind::Manifest),
        MANIFEST_TMP_NAME => return Some(FileKind::ManifestTmp),
        "LOCK" => return Some(FileKind::Lock),
        _ => {}
    }
    let (stem, ext) = name.split_once('.')?;
    if stem.is_empty() || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = stem.parse().ok()?;
    match ext {
        "log" => Some(FileKind::Log(n)),
        "sst" => Some(FileKind::Table(n)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_round_trip() {
        let d = Path::new("/d");
        assert_eq!(log_path(d, 7), PathBuf::from("/d/000007.log"));
        assert_eq!(parse_file_name("000007.log"), Some(FileKind::Log(7)));
        assert_eq!(
            parse_file_name("12345678.sst"),
            Some(FileKind::Table(12_345_678))
        );
        assert_eq!(parse_file_name("MANIFEST"), Some(FileKind::Manifest));
        assert_eq!(parse_file_name("x.sst"), None);
        assert_eq!(parse_file_name("1.txt"), None);
        assert_eq!(parse_file_name("+1.log"), None);
    }

    #[test]
    fn rate_limiter_slows_writers_down() {
        let l = RateLimiter::new(1_000_000).expect("limited");
        let t = Instant::now();
        for _ in 0..4 {
            l.acquire(100_000);
        }
        // 400 KB at 1 MB/s with a 100 KB burst: at least ~0.3 s.
        assert!(
            t.elapsed() >= Duration::from_millis(250),
            "{:?}",
            t.elapsed()
        );
        assert!(RateLimiter::new(0).is_none());
    }
}
