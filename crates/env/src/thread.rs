//! A thread's CPU priority.
//!
//! Background work (compaction, the merges of streams and imports) runs on
//! threads of lower priority than the ones that answer requests, so when
//! both want a core the requests get it: on Linux a thread of nice 10 gets
//! about a tenth of the time of one of nice 0 that competes with it, and
//! all of it when nothing competes (Cassandra's compaction threads and
//! RocksDB's low-priority pool do the same). A priority lowered cannot be
//! raised again without privilege, so only threads that do nothing else
//! lower theirs.

/// The nice value of background threads.
pub const BACKGROUND_NICE: i32 = 10;

/// Lowers the calling thread's priority to the nice value `nice` (Linux:
/// `setpriority(2)` on the thread's id, which affects that thread only);
/// a thread already at `nice` or lower in priority is left as it is.
/// False where that is not supported or was refused; the thread then
/// keeps its priority.
pub fn lower_priority(nice: i32) -> bool {
    #[cfg(target_os = "linux")]
    {
        let tid = rustix::thread::gettid();
        match rustix::process::getpriority_process(Some(tid)) {
            Ok(now) if now >= nice => true,
            _ => rustix::process::setpriority_process(Some(tid), nice).is_ok(),
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = nice;
        false
    }
}

/// The calling thread's nice value, where it can be read.
pub fn priority() -> Option<i32> {
    #[cfg(target_os = "linux")]
    {
        rustix::process::getpriority_process(Some(rustix::thread::gettid())).ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_lowers_its_own_priority_only() {
        let before = priority();
        let lowered = std::thread::spawn(|| {
            let start = priority();
            let ok = lower_priority(BACKGROUND_NICE);
            (start, ok, priority())
        })
        .join()
        .expect("thread");
        if cfg!(target_os = "linux") {
            let (start, ok, after) = lowered;
            assert!(ok, "lowering is always allowed");
            let start = start.expect("readable");
            assert_eq!(after, Some(start.max(BACKGROUND_NICE)));
            assert_eq!(priority(), before, "the calling thread keeps its own");
        }
    }
}
