//! What the packaging promises, checked as far as this machine allows:
//! shell completions load; the systemd unit passes `systemd-analyze
//! verify`; the container's runtime stage holds (the binary runs as an
//! unprivileged user with only its data directory, serves, and stops
//! cleanly); every admin verb answers JSON with `--json`, its errors
//! included. `docker build` needs a registry for its base images and is not
//! run (deploy/docker/README.md).

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const EXE: &str = env!("CARGO_BIN_EXE_ringkv");

fn repo_file(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

#[test]
fn shell_completions_name_every_verb_and_load_in_bash() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = Command::new(EXE)
            .args(["completions", shell])
            .output()
            .expect("completions");
        assert!(out.status.success(), "{shell}");
        let text = String::from_utf8_lossy(&out.stdout);
        for verb in ["status", "explain", "decommission", "local-cluster"] {
            assert!(text.contains(verb), "{shell} completes {verb}");
        }
    }
    let bad = Command::new(EXE)
        .args(["completions", "tcsh"])
        .output()
        .expect("completions");
    assert!(!bad.status.success(), "an unknown shell is refused");
    if common::have("bash") {
        let loaded = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "source <({EXE} completions bash) && complete -p ringkv"
            ))
            .output()
            .expect("bash");
        assert!(loaded.status.success());
        assert!(String::from_utf8_lossy(&loaded.stdout).contains("-F _ringkv ringkv"));
    }
}

#[test]
fn the_systemd_unit_verifies() {
    if !common::have("systemd-analyze") {
        assert!(
            !common::tools_required(),
            "systemd-analyze is required (Debian package systemd)"
        );
        eprintln!("skipping: systemd-analyze not installed");
        return;
    }
    let unit = std::fs::read_to_string(repo_file("deploy/systemd/ringkv.service")).expect("unit");
    for hardening in [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "User=ringkv",
        "CapabilityBoundingSet=",
    ] {
        assert!(unit.contains(hardening), "{hardening}");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ringkv.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/ringkv", EXE)).expect("write unit");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The Dockerfile's runtime stage: uid 10001, no supplementary groups, a
/// data directory it owns, a configuration file it may only read.
#[test]
fn the_container_runtime_stage_serves_as_an_unprivileged_user() {
    let dockerfile = std::fs::read_to_string(repo_file("Dockerfile")).expect("Dockerfile");
    assert!(dockerfile.contains("USER 10001:10001"));
    assert!(dockerfile.contains("cargo build --release --locked -p ringkv"));
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !is_root || !common::have("setpriv") {
        assert!(
            !common::tools_required(),
            "the unprivileged run needs root and setpriv (util-linux)"
        );
        eprintln!("skipping the unprivileged run: needs root and setpriv");
        return;
    }
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    std::fs::create_dir(&data).expect("data dir");
    let config = root.path().join("ringkv.toml");
    std::fs::write(
        &config,
        "[node]\nresp_addr = \"127.0.0.1:0\"\nhttp_addr = \"127.0.0.1:0\"\n\
         cluster_addr = \"127.0.0.1:0\"\n[tls]\ninsecure = true\n",
    )
    .expect("config");
    for (path, mode) in [(root.path(), "0755"), (&data, "0700"), (&config, "0644")] {
        assert!(
            Command::new("chmod")
                .arg(mode)
                .arg(path)
                .status()
                .expect("chmod")
                .success()
        );
    }
    assert!(
        Command::new("chown")
            .arg("10001:10001")
            .arg(&data)
            .status()
            .expect("chown")
            .success()
    );
    // As the image holds it: a copy outside any private folder of the
    // build's (the checkout may sit under a home directory uid 10001
    // cannot enter).
    let exe = root.path().join("ringkv");
    std::fs::copy(EXE, &exe).expect("copy the binary");
    let mut child = Command::new("setpriv")
        .args(["--reuid=10001", "--regid=10001", "--clear-groups", "--"])
        .arg(&exe)
        .args(["server", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(&data)
        .current_dir(&data)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start as uid 10001");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let deadline = Instant::now() + Duration::from_secs(60);
    let ready = loop {
        assert!(Instant::now() < deadline, "not ready");
        match lines.next() {
            Some(Ok(l)) if l.contains(" ready: ") => break l,
            Some(Ok(_)) => {}
            other => panic!("exited before ready: {other:?}"),
        }
    };
    let port: u16 = ready
        .split("redis-cli -p ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .expect("port");
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).expect("client");
    let mut con = client.get_connection().expect("connect");
    let () = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query(&mut con)
        .expect("SET");
    let v: String = redis::cmd("GET").arg("k").query(&mut con).expect("GET");
    assert_eq!(v, "v");
    drop(con);
    assert!(
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill")
            .success()
    );
    let status = child.wait().expect("wait");
    assert!(status.success(), "a clean stop: {status}");
    // Everything it wrote is in its data directory.
    let outside: Vec<_> = std::fs::read_dir(root.path())
        .expect("list")
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n != "data" && n != "ringkv.toml" && n != "ringkv")
        .collect();
    assert!(
        outside.is_empty(),
        "files written outside the data directory: {outside:?}"
    );
}

/// `--json` on every admin verb: each line of standard output is a JSON
/// object, for answers and for refusals (`{"error": ...}`, exit status 1).
#[test]
fn every_admin_verb_answers_json_with_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = common::NodeProc::start(&dir.path().join("n1"), &["--insecure"]);
    let mut con = node.redis();
    let () = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query(&mut con)
        .expect("SET");
    let http = node.http.to_string();
    let file = dir.path().join("export.rkx");
    let file = file.to_str().expect("utf-8 path");
    let verbs: &[(&[&str], bool)] = &[
        (&["status"], true),
        (&["status", "--ranges"], true),
        (&["ring"], true),
        (&["explain", "k"], true),
        (&["repair"], true),
        (&["snapshot", "--tag", "t1"], true),
        (&["snapshot", "list"], true),
        (&["snapshot", "clear", "--tag", "t1"], true),
        (&["export", "--out", file], true),
        (&["import", "--in", file], true),
        (&["truncate", "--yes"], true),
        (&["cancel"], false),
        (&["decommission", "--no-wait"], false),
        (&["remove", "00000000000000ff"], false),
    ];
    for (args, succeeds) in verbs {
        let out = Command::new(EXE)
            .args(*args)
            .args(["--http", &http, "--json"])
            .output()
            .expect("run ringkv");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.success(), *succeeds, "{args:?}: {out:?}");
        assert!(!stdout.trim().is_empty(), "{args:?} printed nothing");
        for line in stdout.lines() {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{args:?} printed {line:?}: {e}"));
            assert!(v.is_object(), "{args:?}: {line}");
            assert_eq!(v.get("error").is_some(), !succeeds, "{args:?}: {line}");
        }
    }
    node.terminate();
}
