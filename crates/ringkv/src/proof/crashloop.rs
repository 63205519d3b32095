//! `ringkv prove crashloop`: one node with `--sync always`, several clients
//! writing, SIGKILL at a random moment, restart on the same data directory,
//! and a check of everything after every restart:
//!
//! - every acknowledged write is there with exactly its value (else *lost*);
//! - a write whose answer never came is either absent or exactly its value;
//! - overwritten keys hold a counter between the last acknowledged (or last
//!   seen) and the last sent; a read never goes back to an older one;
//! - keys never written are absent; no value is anything the clients did
//!   not write (else *garbage*).
//!
//! A small memtable makes flushes and compactions happen during the loop, so
//! SSTables and the manifest are crashed into as well as the commit log.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use ringkv_env::{Rng, SeededRng};

use super::procs::{NodeProc, WorkDir, connect_redis};

#[derive(Debug, Clone, Args)]
pub struct CrashloopArgs {
    /// Kill-and-restart rounds.
    #[arg(long, default_value_t = 20)]
    pub rounds: u32,
    /// Seed of the write sizes and kill moments (default: from the time).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Concurrent writers.
    #[arg(long, default_value_t = 4)]
    pub clients: u32,
    /// Longest a round writes before the kill, in ms (at least 100).
    #[arg(long, default_value_t = 1500)]
    pub round_ms_max: u64,
    /// Working directory (kept); by default a temporary one.
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

const OP_TIMEOUT: Duration = Duration::from_secs(5);
/// Overwritten keys per client.
const HOT_KEYS_PER_CLIENT: u32 = 8;
/// Most writes one client sends in one round.
const ROUND_WRITES_MAX: usize = 200_000;
/// Largest value written, in bytes.
const VALUE_BYTES_MAX: u64 = 4096;

const NODE_CONFIG: &str = "[cluster]\nreplication_factor = 1\nread = \"ONE\"\nwrite = \"ONE\"\n\
                           [storage]\nsync = \"always\"\nmemtable_bytes_max = 262144\n\
                           block_cache_bytes = 4194304\n";

/// One write a client sent.
struct Sent {
    key: String,
    value: Vec<u8>,
    acked: bool,
    /// Hot-key writes: (client, slot, counter).
    hot: Option<(u32, u32, u64)>,
}

/// The deterministic value of a unique key: the key repeated to `len` bytes.
fn unique_value(key: &str, len: usize) -> Vec<u8> {
    key.bytes()
        .chain(std::iter::once(b'|'))
        .cycle()
        .take(len.max(key.len() + 1))
        .collect()
}

fn hot_value(counter: u64, client: u32, len: usize) -> Vec<u8> {
    let head = format!("c{counter}:{client}|");
    head.bytes().cycle().take(len.max(head.len())).collect()
}

fn parse_hot(value: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(value).ok()?;
    let (head, _) = text.split_once('|')?;
    let (c, client) = head.strip_prefix('c')?.split_once(':')?;
    let counter = c.parse().ok()?;
    let client: u32 = client.parse().ok()?;
    (hot_value(counter, client, value.len()) == value).then_some(counter)
}

struct Writer {
    client: u32,
    round: u32,
    seed: u64,
    resp: std::net::SocketAddr,
    stop: Arc<AtomicBool>,
    /// Next counter per hot slot (continues across rounds).
    next_counter: Vec<u64>,
}

impl Writer {
    fn run(mut self) -> (Vec<Sent>, Vec<u64>) {
        let mut rng =
            SeededRng::new(self.seed ^ (u64::from(self.round) << 20) ^ u64::from(self.client));
        let mut sent = Vec::new();
        let mut con: Option<redis::Connection> = None;
        let mut seq = 0u64;
        while !self.stop.load(Ordering::Relaxed) && sent.len() < ROUND_WRITES_MAX {
            let c = match con.as_mut() {
                Some(c) => c,
                None => match connect_redis(self.resp, OP_TIMEOUT) {
                    Ok(c) => con.insert(c),
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    }
                },
            };
            let len = 1 + rng.below(VALUE_BYTES_MAX) as usize;
            let (key, value, hot) = if rng.below(4) == 0 {
                let slot = rng.below(u64::from(HOT_KEYS_PER_CLIENT)) as u32;
                let counter = self.next_counter[slot as usize];
                self.next_counter[slot as usize] += 1;
                (
                    format!("h:{}:{slot}", self.client),
                    hot_value(counter, self.client, len),
                    Some((self.client, slot, counter)),
                )
            } else {
                let key = format!("u:{}:{}:{seq}", self.round, self.client);
                seq += 1;
                let value = unique_value(&key, len);
                (key, value, None)
            };
            let r: redis::RedisResult<()> = redis::cmd("SET").arg(&key).arg(&value).query(c);
            let acked = r.is_ok();
            if !acked {
                con = None;
            }
            sent.push(Sent {
                key,
                value,
                acked,
                hot,
            });
        }
        (sent, self.next_counter)
    }
}

/// What the checker knows about one hot key.
#[derive(Debug, Default, Clone, Copy)]
struct HotState {
    /// The counter that must be there at least (acknowledged or seen).
    floor: Option<u64>,
    /// The largest counter ever sent.
    sent_max: Option<u64>,
}

#[derive(Debug, Default)]
struct Figures {
    writes_sent: u64,
    acknowledged: u64,
    unknown: u64,
    unknown_present: u64,
    lost: u64,
    garbage: u64,
    keys_checked: u64,
    examples: Vec<String>,
}

impl Figures {
    fn example(&mut self, text: String) {
        if self.examples.len() < 10 {
            self.examples.push(text);
        }
    }
}

pub fn run(args: CrashloopArgs) -> anyhow::Result<()> {
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    if args.clients == 0 || args.clients > 64 || args.rounds == 0 {
        bail!("--clients must be 1..=64 and --rounds positive");
    }
    let repro = format!(
        "ringkv prove crashloop --rounds {} --seed {seed} --clients {} --round-ms-max {}",
        args.rounds, args.clients, args.round_ms_max
    );
    println!("prove crashloop: {repro}");
    let mut dir = WorkDir::new(args.dir.as_deref(), "crashloop", seed)?;
    let config = dir.path.join("ringkv.toml");
    std::fs::write(&config, NODE_CONFIG).context("writing the node config")?;
    let mut node = NodeProc::new(
        "node",
        &dir.path.join("node"),
        &config,
        &["--sync", "always"],
    )?;
    let result = rounds(&args, seed, &mut node);
    node.kill9();
    match result {
        Ok(f) => {
            println!(
                "rounds {}  writes sent {}  acknowledged {}  unknown {} ({} present after restart)  keys checked {}  lost {}  garbage {}",
                args.rounds,
                f.writes_sent,
                f.acknowledged,
                f.unknown,
                f.unknown_present,
                f.keys_checked,
                f.lost,
                f.garbage
            );
            for e in &f.examples {
                println!("  violation: {e}");
            }
            println!(
                "figures: rounds={} acknowledged={} lost={} garbage={} unknown={}",
                args.rounds, f.acknowledged, f.lost, f.garbage, f.unknown
            );
            if f.lost > 0 || f.garbage > 0 {
                dir.keep();
                println!("node log and data kept in {}", dir.path.display());
                println!("reproduce (same seed: same sizes and kill moments): {repro}");
                bail!("acknowledged writes lost or garbage served");
            }
            println!("verdict: PASS");
            Ok(())
        }
        Err(e) => {
            dir.keep();
            println!("node log and data kept in {}", dir.path.display());
            println!("reproduce: {repro}");
            Err(e)
        }
    }
}

fn rounds(args: &CrashloopArgs, seed: u64, node: &mut NodeProc) -> anyhow::Result<Figures> {
    let mut rng = SeededRng::new(seed ^ 0xC2A5_4100);
    let mut figures = Figures::default();
    // Unique keys: key -> (value, must be present: acknowledged or served).
    let mut unique: HashMap<String, (Vec<u8>, bool)> = HashMap::new();
    let mut hot: HashMap<(u32, u32), HotState> = HashMap::new();
    let mut counters: Vec<Vec<u64>> =
        vec![vec![1; HOT_KEYS_PER_CLIENT as usize]; args.clients as usize];
    let round_ms_max = args.round_ms_max.max(100);
    for round in 0..args.rounds {
        node.start(&[])
            .with_context(|| format!("round {round}: restarting the node"))?;
        verify(
            node,
            &mut unique,
            &mut hot,
            args.clients,
            round,
            &mut figures,
        )?;
        let stop = Arc::new(AtomicBool::new(false));
        let mut handles = Vec::new();
        for client in 0..args.clients {
            let w = Writer {
                client,
                round,
                seed,
                resp: node.ports.resp,
                stop: Arc::clone(&stop),
                next_counter: std::mem::take(&mut counters[client as usize]),
            };
            handles.push(
                std::thread::Builder::new()
                    .name(format!("writer-{client}"))
                    .spawn(move || w.run())
                    .context("starting a writer")?,
            );
        }
        let kill_after = Duration::from_millis(100 + rng.below(round_ms_max - 99));
        std::thread::sleep(kill_after);
        node.kill9();
        stop.store(true, Ordering::Relaxed);
        for (client, h) in handles.into_iter().enumerate() {
            let Ok((sent, next)) = h.join() else {
                bail!("a writer thread panicked");
            };
            counters[client] = next;
            for s in sent {
                figures.writes_sent += 1;
                if s.acked {
                    figures.acknowledged += 1;
                } else {
                    figures.unknown += 1;
                }
                match s.hot {
                    Some((c, slot, counter)) => {
                        let h = hot.entry((c, slot)).or_default();
                        h.sent_max = Some(h.sent_max.map_or(counter, |m| m.max(counter)));
                        if s.acked {
                            h.floor = Some(h.floor.map_or(counter, |f| f.max(counter)));
                        }
                    }
                    None => {
                        unique.insert(s.key, (s.value, s.acked));
                    }
                }
            }
        }
        println!(
            "round {round}: killed after {kill_after:?}; {} writes acknowledged so far",
            figures.acknowledged
        );
    }
    // The last restart, checked like the others.
    node.start(&[]).context("final restart")?;
    verify(
        node,
        &mut unique,
        &mut hot,
        args.clients,
        args.rounds,
        &mut figures,
    )?;
    Ok(figures)
}

fn verify(
    node: &NodeProc,
    unique: &mut HashMap<String, (Vec<u8>, bool)>,
    hot: &mut HashMap<(u32, u32), HotState>,
    clients: u32,
    round: u32,
    f: &mut Figures,
) -> anyhow::Result<()> {
    let mut con = connect_redis(node.ports.resp, OP_TIMEOUT).context("connecting to verify")?;
    let mut keys: Vec<String> = unique.keys().cloned().collect();
    keys.sort_unstable();
    // Probes: keys of this round that no client has written yet.
    let probes: Vec<String> = (0..clients)
        .map(|c| format!("u:{round}:{c}:probe"))
        .collect();
    for chunk in keys.chunks(200) {
        let values: Vec<Option<Vec<u8>>> = redis::cmd("MGET")
            .arg(chunk)
            .query(&mut con)
            .context("reading back unique keys")?;
        if values.len() != chunk.len() {
            bail!(
                "MGET answered {} values for {} keys",
                values.len(),
                chunk.len()
            );
        }
        for (key, got) in chunk.iter().zip(values) {
            f.keys_checked += 1;
            let Some((want, must)) = unique.get_mut(key) else {
                continue;
            };
            match got {
                // Served once, it must survive every later crash too.
                Some(v) if v == *want && !*must => {
                    f.unknown_present += 1;
                    *must = true;
                }
                Some(v) if v == *want => {}
                Some(v) => {
                    f.garbage += 1;
                    f.example(format!(
                        "after restart {round}: {key} holds {} bytes that were never written there",
                        v.len()
                    ));
                }
                None if *must => {
                    f.lost += 1;
                    f.example(format!(
                        "after restart {round}: {key} is missing (acknowledged, or served after an earlier restart)"
                    ));
                }
                None => {}
            }
        }
    }
    let probed: Vec<Option<Vec<u8>>> = redis::cmd("MGET")
        .arg(&probes)
        .query(&mut con)
        .context("reading probes")?;
    for (key, got) in probes.iter().zip(probed) {
        if got.is_some() {
            f.garbage += 1;
            f.example(format!(
                "after restart {round}: never-written {key} is present"
            ));
        }
    }
    let mut slots: Vec<(u32, u32)> = hot.keys().copied().collect();
    slots.sort_unstable();
    for (c, slot) in slots {
        let key = format!("h:{c}:{slot}");
        let got: Option<Vec<u8>> = redis::cmd("GET").arg(&key).query(&mut con)?;
        f.keys_checked += 1;
        let Some(state) = hot.get_mut(&(c, slot)) else {
            continue;
        };
        match got.as_deref().map(parse_hot) {
            None => {
                if let Some(floor) = state.floor {
                    f.lost += 1;
                    f.example(format!(
                        "after restart {round}: {key} missing, counter {floor} was acknowledged"
                    ));
                }
            }
            Some(None) => {
                f.garbage += 1;
                f.example(format!(
                    "after restart {round}: {key} holds a value never written"
                ));
            }
            Some(Some(counter)) => {
                if state.sent_max.is_none_or(|m| counter > m) {
                    f.garbage += 1;
                    f.example(format!(
                        "after restart {round}: {key} holds counter {counter}, never sent"
                    ));
                } else if state.floor.is_some_and(|floor| counter < floor) {
                    f.lost += 1;
                    f.example(format!(
                        "after restart {round}: {key} went back to counter {counter} (at least {:?} was acknowledged or served)",
                        state.floor
                    ));
                } else {
                    // Served once, it must survive every later crash too.
                    state.floor = Some(counter);
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_self_describing() {
        assert_eq!(parse_hot(&hot_value(17, 2, 100)), Some(17));
        assert_eq!(parse_hot(&hot_value(17, 2, 3)), Some(17));
        let mut v = hot_value(17, 2, 100);
        v[50] ^= 1;
        assert_eq!(parse_hot(&v), None, "a damaged value is not a counter");
        let u = unique_value("u:1:2:3", 40);
        assert_eq!(u.len(), 40);
        assert!(u.starts_with(b"u:1:2:3|u:1"));
    }
}
