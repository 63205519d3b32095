//! `ringkv export` and `ringkv import`: a cluster's keys with their whole
//! records to a file and back, into a cluster of any size (the format:
//! `ringkv_cluster::export`).
//!
//! Export pages through the keyspace over HTTP (`/v1/export`, admin), read
//! at `--level` and merged across replicas, and writes `FILE.partial`,
//! renamed to `FILE` once its end is written and synced: a file named
//! `FILE` is whole. `--prefix` keeps keys that start with it; `--from-token`
//! and `--to-token` keep a token range.
//!
//! Import first checks the whole file (every checksum, the end and its
//! count), so a damaged or cut file is refused with its offset and nothing
//! is loaded. It then sends the records in batches (`/v1/import`), merged
//! into whatever the cluster holds, at most `--rate-mb` MB/s, printing
//! progress, and records in `FILE.import-pos` how many are in: after a
//! failure, `--resume` goes on from there.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use ringkv_cluster::export::{self, Item, ItemReader};

use crate::cli::AdminArgs;
use crate::http_client::{request, request_with_header};

/// Records an export page asks for.
const EXPORT_PAGE: usize = 200;
/// The largest import batch sent at once (below the node's body limit).
/// Small, so the rate limit spreads the import evenly: a batch is merged
/// as fast as the cluster can, and clients wait behind it meanwhile.
const IMPORT_BATCH_BYTES_MAX: usize = 256 * 1024;

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The file to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Only keys starting with these bytes (UTF-8).
    #[arg(long, default_value = "")]
    pub prefix: String,
    /// Only keys whose token is at least this.
    #[arg(long, default_value_t = 0)]
    pub from_token: u64,
    /// Only keys whose token is at most this.
    #[arg(long, default_value_t = u64::MAX)]
    pub to_token: u64,
    /// Read level (ONE, QUORUM, ALL, ...); the node's default when not
    /// given.
    #[arg(long)]
    pub level: Option<String>,
    #[command(flatten)]
    pub admin: AdminArgs,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The export file to load.
    #[arg(long = "in")]
    pub input: PathBuf,
    /// Most megabytes (10^6 bytes) per second sent.
    #[arg(long, default_value_t = 20.0)]
    pub rate_mb: f64,
    /// Go on from the position a failed import recorded.
    #[arg(long)]
    pub resume: bool,
    /// Write level; the node's default when not given.
    #[arg(long)]
    pub level: Option<String>,
    #[command(flatten)]
    pub admin: AdminArgs,
}

fn now_ms() -> u64 {
    ringkv_env::SystemClock::shared().now_ms()
}

/// A progress line at most once a second, and at the end: text on
/// standard error, or with `--json` one object per line on standard output
/// (the last with `"done": true`).
struct Progress {
    started: Instant,
    shown: Instant,
    json: bool,
}

impl Progress {
    fn new(json: bool) -> Self {
        let now = Instant::now();
        Self {
            started: now,
            shown: now,
            json,
        }
    }

    fn show(&mut self, what: &str, keys: u64, total: Option<u64>, bytes: u64, last: bool) {
        if !last && self.shown.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.shown = Instant::now();
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let rate = bytes as f64 / secs / 1e6;
        if self.json {
            say!(
                "{}",
                serde_json::json!({"op": what, "keys": keys, "total": total, "bytes": bytes,
                    "mb_per_sec": rate, "seconds": secs, "done": last})
            );
        } else {
            let of = total.map(|t| format!("/{t}")).unwrap_or_default();
            eprintln!("{what}: {keys}{of} keys  {bytes} B  {rate:.1} MB/s  ({secs:.0}s)");
        }
    }
}

pub fn export(args: &ExportArgs) -> anyhow::Result<()> {
    let partial = args.out.with_extension("partial");
    let mut out = BufWriter::new(
        File::create(&partial).with_context(|| format!("creating {}", partial.display()))?,
    );
    out.write_all(&export::header(now_ms()))?;
    let level = args
        .level
        .as_deref()
        .map(|l| format!("&r={l}"))
        .unwrap_or_default();
    let (mut cursor, mut count, mut bytes) = (args.from_token, 0u64, 0u64);
    let mut progress = Progress::new(args.admin.json);
    loop {
        let path = format!("/v1/export?cursor={cursor}&limit={EXPORT_PAGE}{level}");
        let (status, next, body) =
            request_with_header(&args.admin.http, "GET", &path, b"", "x-ringkv-cursor")?;
        if status != 200 {
            bail!(
                "export page at {cursor}: {status} {}",
                String::from_utf8_lossy(&body)
            );
        }
        let next: u64 = next
            .and_then(|n| n.parse().ok())
            .context("the node sent no next cursor")?;
        let mut items = ItemReader::new(&body[..], 0);
        let mut page = Vec::new();
        while let Some(item) = items.next_item()? {
            let Item::Record { key, record } = item else {
                bail!("an end item in an export page");
            };
            let token = ringkv_cluster::ring::token_of(&key);
            if token > args.to_token || !key.starts_with(args.prefix.as_bytes()) {
                continue;
            }
            export::put_record(&mut page, &key, &record);
            count += 1;
        }
        out.write_all(&page)?;
        bytes += page.len() as u64;
        progress.show("export", count, None, bytes, false);
        if next == 0 || next > args.to_token {
            break;
        }
        cursor = next;
    }
    out.write_all(&export::end(count))?;
    let file = out.into_inner().context("flushing the export")?;
    file.sync_all()?;
    std::fs::rename(&partial, &args.out)
        .with_context(|| format!("renaming to {}", args.out.display()))?;
    progress.show("export", count, Some(count), bytes, true);
    if !args.admin.json {
        println!(
            "exported {count} keys ({bytes} B) to {}",
            args.out.display()
        );
    }
    Ok(())
}

/// Checks the whole file: its items and their number.
fn check_file(path: &Path) -> anyhow::Result<u64> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut r = ItemReader::new(BufReader::new(file), 0);
    r.header()?;
    let mut items = 0u64;
    loop {
        match r.next_item()? {
            Some(Item::Record { .. }) => items += 1,
            Some(Item::End { count }) => {
                if count != items {
                    bail!(
                        "export at byte {}: the end counts {count} keys, the file holds {items}",
                        r.offset
                    );
                }
                if r.next_item()?.is_some() {
                    bail!("export at byte {}: bytes after the end", r.offset);
                }
                return Ok(items);
            }
            None => bail!(
                "export at byte {}: the file ends without its end item: cut short",
                r.offset
            ),
        }
    }
}

fn pos_path(input: &Path) -> PathBuf {
    let mut name = input.as_os_str().to_owned();
    name.push(".import-pos");
    PathBuf::from(name)
}

pub fn import(args: &ImportArgs) -> anyhow::Result<()> {
    if args.rate_mb.is_nan() || args.rate_mb <= 0.0 {
        bail!("--rate-mb must be above 0");
    }
    let total = check_file(&args.input)?;
    let pos_file = pos_path(&args.input);
    let skip: u64 = if args.resume {
        std::fs::read_to_string(&pos_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    } else {
        0
    };
    let file = File::open(&args.input)?;
    let mut r = ItemReader::new(BufReader::new(file), 0);
    r.header()?;
    let level = args
        .level
        .as_deref()
        .map(|l| format!("?w={l}"))
        .unwrap_or_default();
    let path = format!("/v1/import{level}");
    let mut progress = Progress::new(args.admin.json);
    let (mut done, mut sent_bytes) = (0u64, 0u64);
    let mut batch = Vec::new();
    let mut batch_items = 0u64;
    let started = Instant::now();
    let send = |batch: &mut Vec<u8>,
                batch_items: &mut u64,
                done: &mut u64,
                sent_bytes: &mut u64|
     -> anyhow::Result<()> {
        if *batch_items == 0 {
            return Ok(());
        }
        let (status, answer) = request(&args.admin.http, "POST", &path, batch)?;
        if status != 200 {
            let v: serde_json::Value = serde_json::from_slice(&answer).unwrap_or_default();
            let imported = v["imported"].as_u64().unwrap_or(0);
            let at = *done + imported;
            std::fs::write(&pos_file, at.to_string())?;
            bail!(
                "import stopped after {at} of {total} keys ({status}: {}); run again with \
                 --resume to go on",
                v["message"]
                    .as_str()
                    .unwrap_or(&String::from_utf8_lossy(&answer))
            );
        }
        *done += *batch_items;
        *sent_bytes += batch.len() as u64;
        std::fs::write(&pos_file, done.to_string())?;
        batch.clear();
        *batch_items = 0;
        // Throttle: never ahead of the rate.
        let due = Duration::from_secs_f64(*sent_bytes as f64 / (args.rate_mb * 1e6));
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            std::thread::sleep(wait);
        }
        Ok(())
    };
    let mut index = 0u64;
    while let Some(item) = r.next_item()? {
        let Item::Record { key, record } = item else {
            break;
        };
        index += 1;
        if index <= skip {
            done = index;
            continue;
        }
        export::put_record(&mut batch, &key, &record);
        batch_items += 1;
        if batch.len() >= IMPORT_BATCH_BYTES_MAX {
            send(&mut batch, &mut batch_items, &mut done, &mut sent_bytes)?;
            progress.show("import", done, Some(total), sent_bytes, false);
        }
    }
    send(&mut batch, &mut batch_items, &mut done, &mut sent_bytes)?;
    progress.show("import", done, Some(total), sent_bytes, true);
    let _ = std::fs::remove_file(&pos_file);
    if !args.admin.json {
        println!("imported {done} keys from {}", args.input.display());
    }
    Ok(())
}
