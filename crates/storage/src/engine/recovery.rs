//! Opening a data directory, in order:
//!
//! 1. Lock the directory; read `MANIFEST` (a directory with data files but no
//!    manifest is corruption; an empty one is a new engine).
//! 2. Open every table the manifest lists (footer, index, filter and
//!    properties are verified; a missing or resized file is corruption).
//! 3. Replay the log segments numbered at or above the manifest's
//!    `log_number`, oldest first, skipping operations already in tables
//!    (sequence number at or below the manifest's `last_seq`). A torn tail of
//!    the last segment is dropped; corruption anywhere else is an error naming
//!    file and offset, unless `salvage` skips it loudly.
//! 4. Write the replayed data to L0 tables, then a new manifest whose
//!    `log_number` is a fresh segment number: from here on the old segments
//!    are not needed.
//! 5. Remove orphans: old log segments, tables the manifest does not list
//!    (outputs of an interrupted flush or compaction), `MANIFEST.tmp`.
//! 6. Create the fresh log segment and fsync the directory.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};

use bytes::Bytes;
use parking_lot::{Condvar, Mutex, RwLock};
use ringkv_env::SharedClock;

use super::background::build_table;
use super::write::LogState;
use super::{Core, State, SuperVersion};
use crate::cache::BlockCache;
use crate::error::{Error, Result};
use crate::fs::Fs;
use crate::log::replay_segment;
use crate::manifest::Manifest;
use crate::memtable::Memtable;
use crate::options::Options;
use crate::stats::Counters;
use crate::table::{BuildOptions, Table};
use crate::util::{
    FileKind, MANIFEST_NAME, MANIFEST_TMP_NAME, RateLimiter, log_path, parse_file_name, table_path,
};
use crate::version::Version;

pub(crate) fn open(
    dir: &Path,
    opts: Options,
    fs: Arc<dyn Fs>,
    clock: SharedClock,
) -> Result<Arc<Core>> {
    opts.validate()?;
    fs.create_dir_all(dir)
        .map_err(|e| Error::io("create data directory", dir, e))?;
    let dir_lock = fs
        .lock_dir(dir)
        .map_err(|e| Error::io("lock data directory", dir, e))?;
    let names = fs
        .list(dir)
        .map_err(|e| Error::io("list data directory", dir, e))?;
    let files: Vec<FileKind> = names.iter().filter_map(|n| parse_file_name(n)).collect();
    let manifest_path = dir.join(MANIFEST_NAME);
    let manifest = match Manifest::read(&*fs, dir)? {
        Some(m) => m,
        None => {
            if files
                .iter()
                .any(|f| matches!(f, FileKind::Log(_) | FileKind::Table(_)))
            {
                return Err(Error::corruption(
                    &manifest_path,
                    0,
                    "manifest missing but log or table files are present",
                ));
            }
            Manifest {
                next_file_number: 1,
                ..Manifest::default()
            }
        }
    };

    let cache = Arc::new(BlockCache::new(opts.block_cache_bytes));
    let counters = Arc::new(Counters::default());
    let build = BuildOptions {
        block_bytes: opts.block_bytes,
        restart_interval: opts.block_restart_interval,
        compression: opts.compression,
        zstd_level: opts.zstd_level,
        bloom_bits_per_key: opts.bloom_bits_per_key,
    };

    // Tables.
    let mut levels: Vec<Vec<Arc<Table>>> = vec![Vec::new(); opts.levels_max];
    for rec in &manifest.tables {
        let level = rec.level as usize;
        if level >= opts.levels_max {
            return Err(Error::InvalidArgument(format!(
                "table {} is at level {level} but levels_max is {}",
                rec.number, opts.levels_max
            )));
        }
        let path = table_path(dir, rec.number);
        let t = match Table::open(
            fs.clone(),
            path.clone(),
            rec.number,
            cache.clone(),
            counters.clone(),
        ) {
            Ok(t) => t,
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::corruption(
                    &path,
                    0,
                    "table listed in the manifest is missing",
                ));
            }
            Err(e) => return Err(e),
        };
        if t.file_bytes() != rec.file_bytes {
            return Err(Error::corruption(
                &path,
                t.file_bytes(),
                format!(
                    "table is {} bytes but the manifest says {}",
                    t.file_bytes(),
                    rec.file_bytes
                ),
            ));
        }
        levels[level].push(Arc::new(t));
    }
    Version::sort_levels(&mut levels);
    let mut version = Version { levels };
    version
        .check()
        .map_err(|e| Error::corruption(&manifest_path, 0, e))?;

    let max_seen = files
        .iter()
        .filter_map(|f| match f {
            FileKind::Log(n) | FileKind::Table(n) => Some(*n),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    let mut next_file_number = manifest.next_file_number.max(max_seen + 1);

    // Log replay.
    let mut logs: Vec<u64> = files
        .iter()
        .filter_map(|f| match f {
            FileKind::Log(n) if *n >= manifest.log_number => Some(*n),
            _ => None,
        })
        .collect();
    logs.sort_unstable();
    let mut flushed_seq = manifest.last_seq;
    let mut seen_seq = 0u64;
    let mut mem = Memtable::new(0);
    let mut replayed_records = 0u64;
    for (i, &n) in logs.iter().enumerate() {
        let path = log_path(dir, n);
        let data = fs
            .read_all(&path)
            .map_err(|e| Error::io("read log segment", &path, e))?;
        let floor = flushed_seq;
        let r = replay_segment(
            &data,
            &path,
            i + 1 == logs.len(),
            opts.salvage,
            seen_seq,
            |first, ops| {
                for (j, op) in ops.iter().enumerate() {
                    let seq = first + j as u64;
                    if seq > floor {
                        mem.insert(seq, op);
                    }
                }
                Ok(())
            },
        )?;
        seen_seq = seen_seq.max(r.last_seq);
        replayed_records += r.records;
        if r.salvaged_bytes > 0 {
            tracing::error!(file = %path.display(), bytes = r.salvaged_bytes, "salvage skipped corrupt log bytes");
        }
        if mem.bytes() >= opts.memtable_bytes_max && i + 1 < logs.len() {
            // Bound memory during replay: write what we have to L0 now.
            let number = next_file_number;
            next_file_number += 1;
            let t = build_table(
                fs.clone(),
                dir,
                number,
                &build,
                &cache,
                &counters,
                &mem,
                None,
            )?;
            flushed_seq = flushed_seq.max(mem.max_seq());
            version = version.apply(&crate::version::Edit {
                removed: Vec::new(),
                added: vec![(0, t)],
            });
            Manifest {
                next_file_number,
                last_seq: flushed_seq,
                log_number: manifest.log_number,
                tables: version.records(),
            }
            .write(&*fs, dir)?;
            mem = Memtable::new(0);
        }
    }
    if !mem.is_empty() {
        let number = next_file_number;
        next_file_number += 1;
        let t = build_table(
            fs.clone(),
            dir,
            number,
            &build,
            &cache,
            &counters,
            &mem,
            None,
        )?;
        flushed_seq = flushed_seq.max(mem.max_seq());
        version = version.apply(&crate::version::Edit {
            removed: Vec::new(),
            added: vec![(0, t)],
        });
    }
    let last_seq = flushed_seq.max(seen_seq);
    let new_log = next_file_number;
    next_file_number += 1;
    Manifest {
        next_file_number,
        last_seq,
        log_number: new_log,
        tables: version.records(),
    }
    .write(&*fs, dir)?;
    if replayed_records > 0 {
        tracing::info!(dir = %dir.display(), records = replayed_records, last_seq, "replayed commit log");
    }

    // Orphans.
    let live: Vec<u64> = version.tables().map(|t| t.number()).collect();
    let names = fs
        .list(dir)
        .map_err(|e| Error::io("list data directory", dir, e))?;
    for name in names {
        let orphan = match parse_file_name(&name) {
            Some(FileKind::Log(n)) => n < new_log,
            Some(FileKind::Table(n)) => !live.contains(&n),
            Some(FileKind::ManifestTmp) => true,
            _ => false,
        };
        if orphan {
            let p = dir.join(&name);
            if name != MANIFEST_TMP_NAME {
                tracing::info!(file = %p.display(), "removing obsolete file");
            }
            fs.remove(&p)
                .map_err(|e| Error::io("remove obsolete file", &p, e))?;
        }
    }

    // The fresh log segment.
    let path = log_path(dir, new_log);
    let file = fs
        .create(&path)
        .map_err(|e| Error::io("create log segment", &path, e))?;
    fs.sync_dir(dir)
        .map_err(|e| Error::io("fsync directory", dir, e))?;
    let active = Arc::new(Memtable::new(new_log));
    let l0_files = version.levels[0].len();
    let levels_max = opts.levels_max;
    let limiter = RateLimiter::new(opts.compaction_write_bytes_per_sec_max).map(Arc::new);
    Ok(Arc::new(Core {
        dir: dir.to_path_buf(),
        fs,
        clock,
        build,
        cache,
        counters,
        limiter,
        sv: RwLock::new(Arc::new(SuperVersion {
            mem: active.clone(),
            imm: Vec::new(),
            version: Arc::new(version),
        })),
        visible_seq: AtomicU64::new(last_seq),
        logged_seq: AtomicU64::new(last_seq),
        l0_files: AtomicUsize::new(l0_files),
        queue: Mutex::new(VecDeque::new()),
        current_log: Mutex::new(file.clone()),
        log: Mutex::new(LogState {
            file,
            number: new_log,
            path,
            mem: active,
            last_seq,
            buf: Vec::with_capacity(opts.group_commit_bytes_max.min(1 << 20)),
            group: Vec::new(),
        }),
        state: Mutex::new(State {
            next_file_number,
            flushed_seq: last_seq,
            log_number: new_log,
            busy_levels: vec![false; levels_max],
            pointers: vec![Bytes::new(); levels_max],
            flushing: false,
        }),
        bg_cv: Condvar::new(),
        sticky: Mutex::new(None),
        sticky_set: AtomicBool::new(false),
        closed: AtomicBool::new(false),
        shutdown: AtomicBool::new(false),
        filter: RwLock::new(None),
        manual_compaction: RwLock::new(()),
        dir_lock: Mutex::new(Some(dir_lock)),
        opts,
    }))
}
