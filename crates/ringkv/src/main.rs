//! The `ringkv` binary: wires the layers together and offers the admin verbs.
//!
//! It owns no logic of its own beyond configuration, process lifecycle and
//! printing: storage, the coordinator and the front ends live in their crates.

/// `println!` that ignores a closed standard output (`ringkv ... | head`,
/// a supervisor's reader gone): what was being done still ends properly.
macro_rules! say {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

mod autoscale;
mod bench;
mod cert;
mod cli;
mod config;
mod fault_hooks;
mod http_client;
mod local_cluster;
mod metrics;
mod ports;
mod proof;
mod server;
mod snapshot_cli;
mod status;
mod transfer_cli;
mod user;

use clap::Parser;

/// mimalloc instead of the system allocator: under a write load glibc's
/// arena locks and free-list walks took a tenth of a node's CPU
/// (docs/BENCHMARKS.md has the before and after). Without transparent huge
/// pages: built with `no_thp` (mimalloc does not ask for them), and on Linux
/// the process turns them off for itself at start (for hosts where they are
/// on for everyone). With them, the kernel zeroes (and, with `defrag =
/// madvise`, compacts memory for) a whole 2 MiB page whenever a purged part
/// of an arena is touched again; those stalls of milliseconds tripled the
/// three-node SET p99 (docs/BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // Best effort: a kernel without the call keeps its default.
    #[cfg(target_os = "linux")]
    let _ = rustix::thread::disable_transparent_huge_pages(true);
    let cli = cli::Cli::parse();
    let json = cli.command.json();
    match cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            cli::report_error(json, &e);
            std::process::ExitCode::FAILURE
        }
    }
}
