//! The dashboard in a real browser (Debian's headless Chromium) against a
//! live three-node cluster: it loads, shows every node up, and shows a node
//! that stopped as down. Skipped with a note when Chromium is missing,
//! unless RINGKV_REQUIRE_TOOLS=1 (CI).

mod common;

use std::path::Path;
use std::process::Command;

use common::{NodeProc, self_id, start_joined, wait_until};

const FAST: &str = "[cluster]\ngossip_interval_ms = 100\nrequest_timeout_ms = 1000\n";

/// Chromium's binary, if installed.
fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser"]
        .into_iter()
        .find(|b| common::have(b))
}

/// Chromium headless, as this machine needs it: no sandbox (root), no
/// GPU, no background connections to the closed network, a fresh profile.
fn browser(bin: &str, profile: &Path) -> Command {
    // Bounded: a browser that hangs fails the test instead of CI.
    let mut c = Command::new("timeout");
    c.args(["120", bin]);
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        // The page polls every 2 s: let its timers run a few rounds.
        "--virtual-time-budget=7000",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    c
}

/// The page's DOM after its script ran.
fn dom(bin: &str, profile: &Path, node: &NodeProc) -> String {
    let out = browser(bin, profile)
        .arg("--dump-dom")
        .arg(format!("http://{}/", node.http))
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_dashboard_shows_every_node_and_one_going_down() {
    let Some(bin) = chromium() else {
        assert!(
            !common::tools_required(),
            "chromium is required (RINGKV_REQUIRE_TOOLS=1)"
        );
        eprintln!("skipping: chromium not installed");
        return;
    };
    let root = tempfile::tempdir().expect("tempdir");
    let profile = root.path().join("chromium");
    let mut nodes = start_joined(root.path(), FAST, 3, |_| Vec::new());
    let ids: Vec<String> = nodes.iter().map(self_id).collect();
    let a = &nodes[0];

    let page = dom(bin, &profile, a);
    assert!(
        page.contains("data-nodes-up=\"3\""),
        "three nodes up: {page}"
    );
    for id in &ids {
        assert!(
            page.contains(&format!("data-node=\"{id}\" class=\"is-up\"")),
            "node {id} shown up"
        );
    }
    assert!(page.contains("dc1: 3 copies"), "the replication");
    assert!(
        !page.contains("cannot reach this node"),
        "every call answered"
    );

    // A screenshot of the live page, beside the test's files.
    let shot = root.path().join("dashboard.png");
    let out = browser(bin, &profile)
        .args(["--window-size=1280,1000"])
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("http://{}/", a.http))
        .output()
        .expect("screenshot");
    assert!(out.status.success());
    assert!(std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0) > 10_000);

    // A node stops: the page shows it down.
    let gone = ids[2].clone();
    let stopped = nodes.pop().expect("third").terminate();
    assert!(stopped.success());
    let a = &nodes[0];
    wait_until("the stopped node seen down", 10, || common::alive(a) == 2);
    wait_until("two traffic samples", 15, || {
        common::json(a, "/v1/history")["samples"]
            .as_array()
            .is_some_and(|s| s.len() >= 2)
    });
    let page = dom(bin, &profile, a);
    assert!(page.contains("<polyline"), "the traffic chart is drawn");
    assert!(
        page.contains("data-nodes-down=\"1\""),
        "one node down: {page}"
    );
    assert!(page.contains(&format!("data-node=\"{gone}\" class=\"is-down\"")));
    for id in &ids[..2] {
        assert!(page.contains(&format!("data-node=\"{id}\" class=\"is-up\"")));
    }
}
