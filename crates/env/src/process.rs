//! This process as the operating system sees it: CPU time, memory, open
//! files, start time. Read from `/proc/self` on Linux; elsewhere every
//! figure is `None`.
//!
//! The figures feed the `process_*` metrics (Prometheus's standard names)
//! and INFO's `memory` and `cpu` sections.

/// One reading of the process's figures.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessFigures {
    /// User plus system CPU time, in seconds.
    pub cpu_seconds: Option<f64>,
    pub cpu_user_seconds: Option<f64>,
    pub cpu_system_seconds: Option<f64>,
    /// Resident set size, in bytes (`VmRSS`).
    pub resident_bytes: Option<u64>,
    /// The highest resident set size so far, in bytes.
    pub resident_peak_bytes: Option<u64>,
    pub virtual_bytes: Option<u64>,
    /// Open file descriptors.
    pub open_fds: Option<u64>,
    /// The soft limit on open file descriptors.
    pub max_fds: Option<u64>,
    /// Start time, in seconds since the Unix epoch.
    pub start_time_seconds: Option<f64>,
    pub threads: Option<u64>,
}

/// Reads this process's figures now.
pub fn figures() -> ProcessFigures {
    let mut f = ProcessFigures::default();
    #[cfg(target_os = "linux")]
    linux::read(&mut f);
    f
}

#[cfg(target_os = "linux")]
mod linux {
    use super::ProcessFigures;

    /// Clock ticks per second for `/proc/<pid>/stat` times. Linux reports
    /// them in USER_HZ, which is 100 on every architecture it supports.
    const TICKS_PER_SECOND: f64 = 100.0;

    pub(super) fn read(f: &mut ProcessFigures) {
        if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
            stat_fields(&stat, f);
        }
        if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
            for line in status.lines() {
                let kib = |l: &str| {
                    l.split_whitespace()
                        .nth(1)
                        .and_then(|v| v.parse::<u64>().ok())
                        .map(|v| v * 1024)
                };
                if line.starts_with("VmHWM:") {
                    f.resident_peak_bytes = kib(line);
                } else if line.starts_with("VmRSS:") {
                    f.resident_bytes = kib(line);
                }
            }
        }
        f.open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.count() as u64);
        if let Ok(limits) = std::fs::read_to_string("/proc/self/limits") {
            f.max_fds = limits
                .lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|v| v.parse().ok());
        }
        // Boot time (`btime` in /proc/stat) plus the start in ticks after
        // boot: stable from one reading to the next.
        let btime = std::fs::read_to_string("/proc/stat").ok().and_then(|stat| {
            stat.lines()
                .find_map(|l| l.strip_prefix("btime "))
                .and_then(|v| v.trim().parse::<f64>().ok())
        });
        f.start_time_seconds = match (f.start_time_seconds.take(), btime) {
            (Some(after_boot), Some(boot)) => Some(boot + after_boot),
            _ => None,
        };
    }

    /// Fields of `/proc/self/stat` after the command name (which may hold
    /// spaces and parentheses, so it is skipped to its last `)`). Leaves the
    /// start time in seconds after boot in `start_time_seconds`.
    pub(super) fn stat_fields(stat: &str, f: &mut ProcessFigures) {
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            return;
        };
        // Field 3 (state) is the first after the name; utime is field 14.
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok());
        let user = field(14).map(|t| t as f64 / TICKS_PER_SECOND);
        let system = field(15).map(|t| t as f64 / TICKS_PER_SECOND);
        f.cpu_user_seconds = user;
        f.cpu_system_seconds = system;
        f.cpu_seconds = user.zip(system).map(|(u, s)| u + s);
        f.threads = field(20);
        f.start_time_seconds = field(22).map(|t| t as f64 / TICKS_PER_SECOND);
        f.virtual_bytes = field(23);
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_read_past_a_name_with_spaces() {
        let stat = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 7 0 1000 \
                    123456789 300 18446744073709551615";
        let mut f = ProcessFigures::default();
        linux::stat_fields(stat, &mut f);
        assert_eq!(f.cpu_user_seconds, Some(2.5));
        assert_eq!(f.cpu_system_seconds, Some(0.5));
        assert_eq!(f.cpu_seconds, Some(3.0));
        assert_eq!(f.threads, Some(7));
        assert_eq!(f.start_time_seconds, Some(10.0));
        assert_eq!(f.virtual_bytes, Some(123_456_789));
    }

    #[test]
    fn this_process_has_figures() {
        let f = figures();
        assert!(f.resident_bytes.unwrap_or(0) > 0);
        assert!(f.resident_peak_bytes >= f.resident_bytes);
        assert!(f.open_fds.unwrap_or(0) > 0);
        assert!(f.max_fds.unwrap_or(0) >= f.open_fds.unwrap_or(0));
        let start = f.start_time_seconds.unwrap_or(0.0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        assert!(
            start > now - 86_400.0 * 365.0 && start <= now + 1.0,
            "{start} vs {now}"
        );
        assert!(f.threads.unwrap_or(0) >= 1);
    }
}
