//! A real `kill -9`: a child process (this test binary, re-executed) writes in
//! `SyncMode::Always` from several threads and prints every acknowledged key;
//! the parent SIGKILLs it mid-stream, reopens the directory and checks that
//! every acknowledged key is there with its value.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use ringkv_storage::{Engine, Options, SyncMode};

const CHILD_DIR_ENV: &str = "RINGKV_KILL9_CHILD_DIR";

fn opts() -> Options {
    Options {
        sync: SyncMode::Always,
        memtable_bytes_max: 64 << 10,
        level_base_bytes: 256 << 10,
        table_target_bytes: 64 << 10,
        l0_compaction_trigger_files: 2,
        ..Options::default()
    }
}

fn value_for(k: &str) -> Vec<u8> {
    format!("value-of-{k}-{}", "z".repeat(k.len() * 3)).into_bytes()
}

/// The child: writes until killed.
fn child(dir: &Path) {
    let e = Engine::open(dir, opts()).unwrap();
    let out = std::sync::Arc::new(std::sync::Mutex::new(std::io::stdout()));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let e = e.clone();
            let out = out.clone();
            std::thread::spawn(move || {
                for i in 0u64.. {
                    let k = format!("t{t}-{i:08}");
                    e.put(k.as_bytes(), &value_for(&k), None).unwrap();
                    let mut o = out.lock().unwrap();
                    writeln!(o, "{k}").unwrap();
                    o.flush().unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
}

#[test]
fn kill9_child_writer() {
    // Only meaningful as the child half of the test below.
    if let Ok(dir) = std::env::var(CHILD_DIR_ENV) {
        child(Path::new(&dir));
    }
}

#[test]
fn every_acknowledged_write_survives_kill_9() {
    let tmp = tempfile::tempdir().unwrap();
    for round in 0..3 {
        let exe = std::env::current_exe().unwrap();
        let mut child = Command::new(exe)
            .args([
                "kill9_child_writer",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR_ENV, tmp.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut acked = Vec::new();
        let target = 1_500 + round * 500;
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            // libtest prints its own lines too; keys look like "t<n>-<digits>".
            if line.starts_with('t') && line.contains('-') && !line.contains(' ') {
                acked.push(line);
            }
            if acked.len() >= target {
                break;
            }
        }
        child.kill().unwrap(); // SIGKILL on Unix
        let status = child.wait().unwrap();
        assert!(!status.success(), "child exited by itself: {status:?}");
        assert!(
            acked.len() >= target,
            "child acknowledged only {} writes",
            acked.len()
        );

        let e = Engine::open(tmp.path(), opts()).unwrap();
        for k in &acked {
            let got = e.get(k.as_bytes()).unwrap();
            assert_eq!(
                got.map(|x| x.value.to_vec()),
                Some(value_for(k)),
                "round {round}: acknowledged key {k} lost after kill -9"
            );
        }
        e.close().unwrap();
    }
}
