//! Jepsen-style runs of `ringkv prove jepsen` on five real node processes,
//! fixed seeds: a 60-second set workload in sloppy mode under kill -9,
//! partitions, joins and decommissions (no acknowledged add may be lost),
//! and a 20-second register workload in strict mode (R + W > N) under
//! kill -9, partitions, pauses and clock skew (no stale read). The long
//! versions are in docs/PROOF.md.

use std::process::Command;

/// The `key=value` figures of the run's summary line.
fn figures(stdout: &str) -> Vec<(String, u64)> {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("figures: "))
        .unwrap_or_else(|| panic!("no figures line in:\n{stdout}"));
    line["figures: ".len()..]
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.parse().unwrap_or(u64::MAX)))
        .collect()
}

fn figure(f: &[(String, u64)], name: &str) -> u64 {
    f.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| *v)
        .unwrap_or_else(|| panic!("no {name} in {f:?}"))
}

fn prove(secs: &str, args: &[&str]) -> Vec<(String, u64)> {
    let out = Command::new(env!("CARGO_BIN_EXE_ringkv"))
        .args(["prove", "jepsen", "--nodes", "5", "--duration-secs", secs])
        .args(["--clients", "6", "--pace-ms", "20"])
        .args(args)
        .output()
        .expect("run ringkv prove jepsen");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "ringkv prove jepsen {args:?} failed:\n{stdout}\n{stderr}"
    );
    let f = figures(&stdout);
    eprintln!("{args:?}: {f:?}");
    assert!(
        figure(&f, "acknowledged") > 100,
        "the clients made progress: {f:?}"
    );
    assert!(figure(&f, "faults") > 0, "faults were injected: {f:?}");
    assert_eq!(figure(&f, "lost"), 0, "{f:?}");
    assert_eq!(figure(&f, "phantom"), 0, "{f:?}");
    f
}

#[test]
fn sloppy_set_loses_no_acknowledged_add_under_kill_partition_join_and_decommission() {
    prove(
        "60",
        &[
            "--mode",
            "sloppy",
            "--workload",
            "set",
            "--seed",
            "101",
            "--faults",
            "kill,partition,join,decommission",
        ],
    );
}

#[test]
fn strict_register_reads_no_stale_value_under_kill_partition_and_pause() {
    let f = prove(
        "20",
        &[
            "--mode",
            "strict",
            "--workload",
            "register",
            "--seed",
            "202",
            "--faults",
            "kill,partition,pause,skew",
        ],
    );
    assert_eq!(figure(&f, "stale"), 0, "{f:?}");
}
