//! Node processes for the proofs: `ringkv server` children on loopback
//! ports, started, killed with SIGKILL, paused with SIGSTOP, resumed and
//! restarted on the same data directory and ports.
//!
//! Every child is owned by a [`NodeProc`]; dropping it kills and reaps the
//! process, so no node outlives the harness on any exit path (error, panic,
//! or a normal return).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::ports::free_port;

/// How long a node may take to print its ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The addresses a node listens on; kept across restarts.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub resp: SocketAddr,
    pub http: SocketAddr,
    pub cluster: SocketAddr,
}

impl Ports {
    pub fn pick() -> anyhow::Result<Self> {
        let at = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
        Ok(Self {
            resp: at(free_port()?),
            http: at(free_port()?),
            cluster: at(free_port()?),
        })
    }
}

/// One `ringkv server` child. Killed and reaped on drop.
pub struct NodeProc {
    pub name: String,
    pub data_dir: PathBuf,
    pub config: PathBuf,
    pub ports: Ports,
    pub extra: Vec<String>,
    child: Option<Child>,
    paused: bool,
}

impl NodeProc {
    /// A node description; nothing runs until [`NodeProc::start`].
    pub fn new(name: &str, data_dir: &Path, config: &Path, extra: &[&str]) -> anyhow::Result<Self> {
        Ok(Self {
            name: name.to_string(),
            data_dir: data_dir.to_path_buf(),
            config: config.to_path_buf(),
            ports: Ports::pick()?,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
            paused: false,
        })
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// True once the process has ended on its own (a decommissioned node
    /// stops after leaving); reaps it.
    pub fn exited(&mut self) -> bool {
        let done = self
            .child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
        if done {
            self.child = None;
            self.paused = false;
        }
        done
    }

    pub fn is_paused(&self) -> bool {
        self.paused
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts the process with `seeds` and waits for its ready line. Its
    /// stderr (logs) goes to `node.log` in the data directory's parent.
    pub fn start(&mut self, seeds: &[SocketAddr]) -> anyhow::Result<()> {
        if self.child.is_some() {
            bail!("{} is already running", self.name);
        }
        let exe = std::env::current_exe().context("locating the ringkv binary")?;
        std::fs::create_dir_all(&self.data_dir)
            .with_context(|| format!("creating {}", self.data_dir.display()))?;
        let log_path = self.data_dir.with_extension("log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        if !self.extra.iter().any(|a| a == "--insecure") {
            let ca = self
                .data_dir
                .parent()
                .map_or_else(|| PathBuf::from("ca"), |p| p.join("ca"));
            crate::cert::provision(&ca, &self.data_dir)
                .with_context(|| format!("certificates of {}", self.name))?;
        }
        let mut cmd = Command::new(exe);
        cmd.arg("server")
            .arg("--config")
            .arg(&self.config)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--resp-addr", &self.ports.resp.to_string()])
            .args(["--http-addr", &self.ports.http.to_string()])
            .args(["--cluster-addr", &self.ports.cluster.to_string()])
            .args(["--log", "warn"])
            .args(&self.extra);
        if !seeds.is_empty() {
            let list: Vec<String> = seeds.iter().map(|s| s.to_string()).collect();
            cmd.args(["--seeds", &list.join(",")]);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("starting {}", self.name))?;
        let stdout = child.stdout.take();
        // Owned from here on: an early return below kills and reaps it.
        self.child = Some(child);
        self.paused = false;
        let Some(stdout) = stdout else {
            bail!("{}: no stdout pipe", self.name);
        };
        // A reader thread forwards the ready line and then keeps draining, so
        // the child never blocks on a full pipe; it ends when the child does.
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if line.contains(" ready: ") {
                    let _ = tx.send(line);
                }
            }
        });
        match rx.recv_timeout(READY_TIMEOUT) {
            Ok(_) => Ok(()),
            Err(_) => {
                self.kill9();
                bail!(
                    "{} did not become ready within {READY_TIMEOUT:?} (log: {})",
                    self.name,
                    log_path.display()
                )
            }
        }
    }

    /// SIGKILL and reap: the process gets no chance to flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.paused = false;
    }

    /// SIGSTOP: the process stays, frozen; its sockets stay open.
    pub fn pause(&mut self) -> anyhow::Result<()> {
        self.signal("STOP")?;
        self.paused = true;
        Ok(())
    }

    /// SIGCONT after [`NodeProc::pause`].
    pub fn resume(&mut self) -> anyhow::Result<()> {
        self.signal("CONT")?;
        self.paused = false;
        Ok(())
    }

    fn signal(&self, sig: &str) -> anyhow::Result<()> {
        let Some(pid) = self.pid() else {
            bail!("{} is not running", self.name);
        };
        let ok = Command::new("kill")
            .args([format!("-{sig}"), pid.to_string()])
            .status()
            .context("running kill")?;
        if !ok.success() {
            bail!("kill -{sig} {pid} failed");
        }
        Ok(())
    }

    /// SIGTERM and wait (bounded) for a clean exit; SIGKILL after that.
    pub fn terminate(&mut self, within: Duration) -> anyhow::Result<bool> {
        if self.paused {
            let _ = self.resume();
        }
        let _ = self.signal("TERM");
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            let Some(child) = self.child.as_mut() else {
                return Ok(true);
            };
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok(status.success());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill9();
        Ok(false)
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        // SIGKILL also ends a stopped process.
        self.kill9();
    }
}

/// A RESP connection to `addr` with read and write timeouts.
pub fn connect_redis(addr: SocketAddr, timeout: Duration) -> redis::RedisResult<redis::Connection> {
    let client = redis::Client::open(format!("redis://{addr}/"))?;
    let con = client.get_connection_with_timeout(timeout)?;
    con.set_read_timeout(Some(timeout))?;
    con.set_write_timeout(Some(timeout))?;
    Ok(con)
}

/// A scratch directory for one run: removed on success unless kept, always
/// kept (and named) on failure so the node logs can be read.
pub struct WorkDir {
    pub path: PathBuf,
    keep: bool,
}

impl WorkDir {
    /// `given`, or a fresh directory under the system temp dir.
    pub fn new(given: Option<&Path>, what: &str, seed: u64) -> anyhow::Result<Self> {
        let (path, keep) = match given {
            Some(p) => (p.to_path_buf(), true),
            None => (
                std::env::temp_dir()
                    .join(format!("ringkv-prove-{what}-{seed}-{}", std::process::id())),
                false,
            ),
        };
        if path.exists() {
            std::fs::remove_dir_all(&path)
                .with_context(|| format!("clearing {}", path.display()))?;
        }
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self { path, keep })
    }

    /// Keeps the directory (a failed run).
    pub fn keep(&mut self) {
        self.keep = true;
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}
