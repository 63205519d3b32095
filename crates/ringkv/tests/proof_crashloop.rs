//! A short `ringkv prove crashloop`: one node with the commit log fsynced on
//! every write, SIGKILLed at random moments while four clients write, and
//! restarted on the same data directory; every acknowledged write must be
//! there after every restart and nothing never written may be served.

use std::process::Command;

#[test]
fn acknowledged_writes_survive_twenty_kill_9_restarts() {
    let out = Command::new(env!("CARGO_BIN_EXE_ringkv"))
        .args(["prove", "crashloop", "--rounds", "20", "--seed", "303"])
        .args(["--round-ms-max", "800"])
        .output()
        .expect("run ringkv prove crashloop");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "crash loop failed:\n{stdout}\n{stderr}"
    );
    let line = stdout
        .lines()
        .find(|l| l.starts_with("figures: "))
        .unwrap_or_else(|| panic!("no figures line in:\n{stdout}"));
    eprintln!("{line}");
    let get = |name: &str| -> u64 {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {line}"))
    };
    assert_eq!(get("rounds"), 20);
    assert!(get("acknowledged") > 500, "{line}");
    assert_eq!(get("lost"), 0, "{line}");
    assert_eq!(get("garbage"), 0, "{line}");
}
