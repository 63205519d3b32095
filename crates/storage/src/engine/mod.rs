//! The engine: ties the commit log, memtables, tables, versions, compaction
//! and background threads together behind [`Engine`].
//!
//! # Layout
//! - `mod.rs` (this file): the public handle, the read path and snapshots.
//! - `write.rs`: the write path: group commit, log append and fsync, memtable
//!   insert, making room (memtable rotation and bounded write stalls).
//! - `background.rs`: the flush, compaction and periodic-fsync threads, and
//!   installing their results in the manifest.
//! - `checkpoint.rs`: a copy of the data as of now, tables hard-linked.
//! - `recovery.rs`: opening a directory: manifest, tables, log replay, orphan
//!   removal.
//!
//! # The read path, top to bottom ([`Engine::get`])
//! Take the current [`SuperVersion`] (active memtable, immutable memtables,
//! table version) and the visible sequence number together; look in the active
//! memtable, then the immutable ones newest first, then the tables: L0 newest
//! first, then one table per deeper level, each skipped by key range and bloom
//! filter before one data block is read (from the block cache when it can).
//! The first version found decides; a tombstone or an expired put reads as
//! absent.
//!
//! # Concurrency
//! Readers never take a lock for more than cloning an `Arc`. Writers are
//! serialised by group commit (one leader at a time writes for everyone).
//! Metadata changes (rotation, flush and compaction installs) happen under one
//! state mutex, which also orders manifest writes.

mod background;
mod checkpoint;
mod recovery;
mod write;

pub use checkpoint::Checkpoint;

use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;

use bytes::Bytes;
use parking_lot::{Condvar, Mutex, RwLock};
use ringkv_env::SharedClock;

use crate::batch::WriteBatch;
use crate::cache::BlockCache;
use crate::compaction::{level_target_bytes, pending_bytes};
use crate::error::{Error, Result};
use crate::filter::CompactionFilter;
use crate::fs::{DirLock, Fs, RealFs, WritableFile};
use crate::iter::{LevelSource, MemSource, MergeIter, NewestIter, ScanIter, Source};
use crate::memtable::Memtable;
use crate::options::Options;
use crate::stats::{Counters, Stats};
use crate::table::{BuildOptions, Table, bloom};
use crate::types::{Entry, Op};
use crate::util::RateLimiter;
use crate::version::Version;

use write::{LogState, Waiter};

/// Everything a read needs, swapped atomically as a unit.
#[derive(Debug)]
pub(crate) struct SuperVersion {
    pub mem: Arc<Memtable>,
    /// Immutable memtables waiting for flush, newest first.
    pub imm: Vec<Arc<Memtable>>,
    pub version: Arc<Version>,
}

/// Metadata guarded by the state mutex.
#[derive(Debug)]
pub(crate) struct State {
    pub next_file_number: u64,
    /// Highest sequence number known to be in a table (persisted).
    pub flushed_seq: u64,
    /// Oldest log segment still needed (persisted).
    pub log_number: u64,
    pub busy_levels: Vec<bool>,
    pub pointers: Vec<Bytes>,
    pub flushing: bool,
}

/// The shared core; background threads hold it directly.
pub(crate) struct Core {
    pub dir: PathBuf,
    pub opts: Options,
    pub fs: Arc<dyn Fs>,
    pub clock: SharedClock,
    pub build: BuildOptions,
    pub cache: Arc<BlockCache>,
    pub counters: Arc<Counters>,
    pub limiter: Option<Arc<RateLimiter>>,

    pub sv: RwLock<Arc<SuperVersion>>,
    pub visible_seq: AtomicU64,
    /// Highest sequence number whose log record is with the OS (below
    /// `visible_seq` while buffered writes wait, see `write.rs`).
    pub logged_seq: AtomicU64,
    /// Tables in L0 of the current version (the write path's cheap check).
    pub l0_files: AtomicUsize,

    pub queue: Mutex<std::collections::VecDeque<Arc<Waiter>>>,
    pub log: Mutex<LogState>,
    pub current_log: Mutex<Arc<dyn WritableFile>>,

    pub state: Mutex<State>,
    pub bg_cv: Condvar,

    pub sticky: Mutex<Option<String>>,
    pub sticky_set: AtomicBool,
    pub closed: AtomicBool,
    pub shutdown: AtomicBool,
    pub filter: RwLock<Option<Arc<dyn CompactionFilter>>>,
    pub manual_compaction: RwLock<()>,
    pub dir_lock: Mutex<Option<Box<dyn DirLock>>>,
}

impl Core {
    /// The current super version and the visible sequence number, taken
    /// together so that no flush or compaction can slip in between.
    pub fn read_view(&self) -> (Arc<SuperVersion>, u64) {
        let g = self.sv.read();
        let seq = self.visible_seq.load(Ordering::Acquire);
        (g.clone(), seq)
    }

    pub fn current_sv(&self) -> Arc<SuperVersion> {
        self.sv.read().clone()
    }

    /// Puts the engine into the sticky read-only state (first cause wins).
    pub fn set_sticky(&self, cause: String) {
        let _st = self.state.lock();
        self.set_sticky_locked(cause);
    }

    /// [`Core::set_sticky`] for callers that hold the state mutex.
    pub fn set_sticky_locked(&self, cause: String) {
        let mut s = self.sticky.lock();
        if s.is_none() {
            tracing::error!(dir = %self.dir.display(), "storage engine is now read-only: {cause}");
            *s = Some(cause);
            self.sticky_set.store(true, Ordering::Release);
        }
        drop(s);
        self.bg_cv.notify_all();
    }

    pub fn sticky_error(&self) -> Option<Error> {
        if !self.sticky_set.load(Ordering::Acquire) {
            return None;
        }
        self.sticky.lock().as_ref().map(|cause| Error::ReadOnly {
            cause: cause.clone(),
        })
    }

    pub fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        Ok(())
    }

    pub fn check_writable(&self) -> Result<()> {
        self.check_open()?;
        match self.sticky_error() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Allocates a file number.
    pub fn alloc_number(&self) -> u64 {
        let mut st = self.state.lock();
        let n = st.next_file_number;
        st.next_file_number += 1;
        n
    }
}

/// The newest version of `key` visible at `seq` in `sv`.
fn lookup(sv: &SuperVersion, key: &[u8], seq: u64) -> Result<Option<Op>> {
    if let Some((_, op)) = sv.mem.get(key, seq) {
        return Ok(Some(op));
    }
    for m in &sv.imm {
        if let Some((_, op)) = m.get(key, seq) {
            return Ok(Some(op));
        }
    }
    let hash = bloom::key_hash(key);
    Ok(sv.version.get(key, hash, seq)?.map(|(_, op)| op))
}

fn to_owned_bound(b: Bound<&[u8]>) -> Bound<Bytes> {
    match b {
        Bound::Unbounded => Bound::Unbounded,
        Bound::Included(k) => Bound::Included(Bytes::copy_from_slice(k)),
        Bound::Excluded(k) => Bound::Excluded(Bytes::copy_from_slice(k)),
    }
}

fn table_in_range(t: &Table, start: &Bound<Bytes>, end: &Bound<Bytes>) -> bool {
    let after_start = match start {
        Bound::Unbounded => true,
        Bound::Included(s) => t.largest() >= s.as_ref(),
        Bound::Excluded(s) => t.largest() > s.as_ref(),
    };
    let before_end = match end {
        Bound::Unbounded => true,
        Bound::Included(e) => t.smallest() <= e.as_ref(),
        Bound::Excluded(e) => t.smallest() < e.as_ref(),
    };
    after_start && before_end
}

/// An ordered scan over `sv` at `seq`.
fn scan_view(
    sv: &SuperVersion,
    seq: u64,
    now_ms: u64,
    start: Bound<&[u8]>,
    end: Bound<&[u8]>,
) -> ScanIter {
    let (start, end) = (to_owned_bound(start), to_owned_bound(end));
    let mut sources: Vec<Box<dyn Source>> = Vec::new();
    sources.push(Box::new(MemSource::new(
        sv.mem.clone(),
        start.clone(),
        end.clone(),
        seq,
    )));
    for m in &sv.imm {
        sources.push(Box::new(MemSource::new(
            m.clone(),
            start.clone(),
            end.clone(),
            seq,
        )));
    }
    let start_ref = match &start {
        Bound::Unbounded => Bound::Unbounded,
        Bound::Included(k) => Bound::Included(k.as_ref()),
        Bound::Excluded(k) => Bound::Excluded(k.as_ref()),
    };
    for t in &sv.version.levels[0] {
        if table_in_range(t, &start, &end) {
            sources.push(Box::new(t.iter(start_ref, end.clone(), false)));
        }
    }
    for files in &sv.version.levels[1..] {
        let files: Vec<Arc<Table>> = files
            .iter()
            .filter(|t| table_in_range(t, &start, &end))
            .cloned()
            .collect();
        if !files.is_empty() {
            sources.push(Box::new(LevelSource::new(
                files,
                start.clone(),
                end.clone(),
                false,
            )));
        }
    }
    ScanIter::new(NewestIter::new(MergeIter::new(sources), seq), now_ms)
}

fn vec_bound(b: Bound<&Vec<u8>>) -> Bound<&[u8]> {
    match b {
        Bound::Unbounded => Bound::Unbounded,
        Bound::Included(k) => Bound::Included(k.as_slice()),
        Bound::Excluded(k) => Bound::Excluded(k.as_slice()),
    }
}

fn range_to_bounds<R: RangeBounds<Vec<u8>>>(range: &R) -> (Bound<&[u8]>, Bound<&[u8]>) {
    (vec_bound(range.start_bound()), vec_bound(range.end_bound()))
}

/// A consistent, point-in-time view of the engine: every read through it sees
/// exactly the writes acknowledged before it was taken. TTL expiry is judged
/// at the time the snapshot was taken too.
///
/// A snapshot pins the memtables and table files of its moment (not single
/// versions), so hold it only as long as a scan needs it: the pinned files are
/// deleted only after it is dropped.
#[derive(Clone)]
pub struct Snapshot {
    sv: Arc<SuperVersion>,
    seq: u64,
    now_ms: u64,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("seq", &self.seq)
            .field("now_ms", &self.now_ms)
            .finish()
    }
}

impl Snapshot {
    /// The sequence number this snapshot reads at.
    pub fn sequence(&self) -> u64 {
        self.seq
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<Entry>> {
        Ok(lookup(&self.sv, key, self.seq)?.and_then(|op| op.live(self.now_ms).cloned()))
    }

    /// Live entries in `range`, in key order. See [`Engine::scan`].
    pub fn scan<R: RangeBounds<Vec<u8>>>(&self, range: R) -> ScanIter {
        let (s, e) = range_to_bounds(&range);
        scan_view(&self.sv, self.seq, self.now_ms, s, e)
    }

    /// Live entries between two borrowed bounds, in key order.
    pub fn scan_bounds(&self, start: Bound<&[u8]>, end: Bound<&[u8]>) -> ScanIter {
        scan_view(&self.sv, self.seq, self.now_ms, start, end)
    }
}

struct Handle {
    core: Arc<Core>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        if !self.core.closed.load(Ordering::Acquire)
            && let Err(e) = close_core(&self.core, &self.threads)
        {
            tracing::warn!(dir = %self.core.dir.display(), "closing on drop: {e}");
        }
    }
}

fn close_core(core: &Arc<Core>, threads: &Mutex<Vec<JoinHandle<()>>>) -> Result<()> {
    if core.closed.swap(true, Ordering::AcqRel) {
        return Err(Error::Closed);
    }
    core.shutdown.store(true, Ordering::Release);
    if let Some(l) = &core.limiter {
        l.cancel();
    }
    {
        let _st = core.state.lock();
        core.bg_cv.notify_all();
    }
    for t in threads.lock().drain(..) {
        if t.join().is_err() {
            tracing::error!("a storage background thread panicked");
        }
    }
    // Wait for an in-flight group commit, write buffered writes, then make
    // the log durable.
    let mut log = core.log.lock();
    let result = if core.sticky_error().is_none() {
        let through = log.last_seq;
        write::append_buffer(core, &mut log, through)
            .and_then(|()| {
                log.file
                    .sync()
                    .map_err(|e| Error::io("fsync log on close", &log.path, e))
            })
            .inspect_err(|err| core.set_sticky(err.to_string()))
    } else {
        Ok(())
    };
    drop(log);
    core.dir_lock.lock().take();
    result
}
/// The storage engine of one node. Cheap to clone; all clones share one
/// engine, which closes when the last clone is dropped (or on [`Engine::close`]).
#[derive(Clone)]
pub struct Engine {
    handle: Arc<Handle>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("dir", &self.handle.core.dir)
            .finish()
    }
}

impl Engine {
    /// Opens (or creates) the engine in `dir` on the real file system with the
    /// system clock.
    pub fn open(dir: &Path, opts: Options) -> Result<Engine> {
        Self::open_with(
            dir,
            opts,
            RealFs::shared(),
            ringkv_env::SystemClock::shared(),
        )
    }

    /// Opens (or creates) the engine in `dir` on `fs`, reading TTL time from
    /// `clock`.
    pub fn open_with(
        dir: &Path,
        opts: Options,
        fs: Arc<dyn Fs>,
        clock: SharedClock,
    ) -> Result<Engine> {
        let core = recovery::open(dir, opts, fs, clock)?;
        let threads = background::spawn(&core)?;
        Ok(Engine {
            handle: Arc::new(Handle {
                core,
                threads: Mutex::new(threads),
            }),
        })
    }

    fn core(&self) -> &Arc<Core> {
        &self.handle.core
    }

    /// The live entry for `key`; expired entries and tombstones are absent.
    pub fn get(&self, key: &[u8]) -> Result<Option<Entry>> {
        let core = self.core();
        core.check_open()?;
        Counters::add(&core.counters.gets, 1);
        let (sv, seq) = core.read_view();
        let now = core.clock.now_ms();
        Ok(lookup(&sv, key, seq)?.and_then(|op| op.live(now).cloned()))
    }

    /// Stores `value` under `key`, optionally expiring at `expires_at_ms`
    /// (Unix ms).
    pub fn put(&self, key: &[u8], value: &[u8], expires_at_ms: Option<u64>) -> Result<()> {
        let mut b = WriteBatch::with_capacity(WriteBatch::put_bytes(key.len(), value.len()));
        b.put(key, value, expires_at_ms);
        self.write(b)
    }

    /// Deletes `key` (writes an engine tombstone).
    pub fn delete(&self, key: &[u8]) -> Result<()> {
        let mut b = WriteBatch::with_capacity(WriteBatch::put_bytes(key.len(), 0));
        b.delete(key);
        self.write(b)
    }

    /// Applies a batch atomically: after a crash either all of it or none of it
    /// is present, and readers never see part of it.
    pub fn write(&self, batch: WriteBatch) -> Result<()> {
        write::write(self.core(), batch)?;
        // Inline mode: the flushes and compactions this write made due. The
        // write itself is committed; a failure here is sticky and refuses
        // the next write.
        let _ = background::run_due(self.core());
        Ok(())
    }

    /// Applies a batch like [`Engine::write`], but leaves its log record in
    /// a buffer, visible at once and handed to the OS with a later write:
    /// many writes share one system call. Before acknowledging such a write,
    /// or answering anyone who may have read it, call
    /// [`Engine::release_buffered`]. With `SyncMode::Always` this is
    /// [`Engine::write`].
    pub fn write_buffered(&self, batch: WriteBatch) -> Result<()> {
        write::write_buffered(self.core(), batch)?;
        let _ = background::run_due(self.core());
        Ok(())
    }

    /// [`Engine::put`] through [`Engine::write_buffered`].
    pub fn put_buffered(&self, key: &[u8], value: &[u8], expires_at_ms: Option<u64>) -> Result<()> {
        let mut b = WriteBatch::with_capacity(WriteBatch::put_bytes(key.len(), value.len()));
        b.put(key, value, expires_at_ms);
        self.write_buffered(b)
    }

    /// Hands every buffered write to the OS (one `write()` for all of
    /// them). After `Ok`, every write visible before the call survives a
    /// crash of the process. Once writing the buffer has failed, this fails
    /// until the engine is reopened.
    pub fn release_buffered(&self) -> Result<()> {
        write::release_buffered(self.core())
    }

    /// True while some visible write is not yet with the OS (cheap: two
    /// atomic loads).
    pub fn has_buffered_writes(&self) -> bool {
        let core = self.core();
        core.logged_seq.load(Ordering::Acquire) < core.visible_seq.load(Ordering::Acquire)
    }

    /// A consistent point-in-time view.
    pub fn snapshot(&self) -> Snapshot {
        let core = self.core();
        let (sv, seq) = core.read_view();
        Snapshot {
            sv,
            seq,
            now_ms: core.clock.now_ms(),
        }
    }

    /// Live entries in `range` (e.g. `..`, `a.to_vec()..b.to_vec()`), in key
    /// order, as of the moment of the call. Use [`Engine::scan_bounds`] for
    /// borrowed bounds.
    pub fn scan<R: RangeBounds<Vec<u8>>>(&self, range: R) -> Result<ScanIter> {
        self.core().check_open()?;
        Ok(self.snapshot().scan(range))
    }

    /// Live entries between two borrowed bounds, in key order.
    pub fn scan_bounds(&self, start: Bound<&[u8]>, end: Bound<&[u8]>) -> Result<ScanIter> {
        self.core().check_open()?;
        Ok(self.snapshot().scan_bounds(start, end))
    }

    /// Approximate bytes on disk of the keys in `[start, end)` (tables only:
    /// memtable contents are not counted).
    pub fn approximate_size(&self, start: &[u8], end: &[u8]) -> u64 {
        if start >= end {
            return 0;
        }
        let sv = self.core().current_sv();
        sv.version
            .tables()
            .filter(|t| t.largest() >= start && t.smallest() < end)
            .map(|t| {
                t.approximate_offset(end)
                    .saturating_sub(t.approximate_offset(start))
            })
            .sum()
    }

    /// A report of sizes, work done and caches.
    pub fn stats(&self) -> Stats {
        let core = self.core();
        let c = &core.counters;
        let sv = core.current_sv();
        let v = &sv.version;
        let files_per_level: Vec<usize> = v.levels.iter().map(Vec::len).collect();
        let bytes_per_level: Vec<u64> = (0..v.levels.len()).map(|l| v.level_bytes(l)).collect();
        let table_bytes: u64 = bytes_per_level.iter().sum();
        let mems = std::iter::once(&sv.mem).chain(sv.imm.iter());
        let (mut memtable_bytes, mut log_bytes, mut mem_entries) = (0u64, 0u64, 0u64);
        for m in mems {
            memtable_bytes += m.bytes() as u64;
            log_bytes += m.log_bytes();
            mem_entries += m.len() as u64;
        }
        let manifest_bytes = 32 + 12 * v.table_count() as u64;
        let user = Counters::get(&c.user_bytes_written);
        let written = Counters::get(&c.log_bytes_written)
            + Counters::get(&c.flush_bytes_written)
            + Counters::get(&c.compaction_bytes_written);
        let last_level_bytes = bytes_per_level
            .iter()
            .rev()
            .find(|&&b| b > 0)
            .copied()
            .unwrap_or(0);
        let live_keys_estimate = v
            .tables()
            .map(|t| t.props().entries.saturating_sub(t.props().tombstones))
            .sum::<u64>()
            + mem_entries;
        Stats {
            disk_bytes: table_bytes + log_bytes + manifest_bytes,
            table_bytes,
            log_bytes,
            memtable_bytes,
            table_memory_bytes: v.tables().map(|t| t.memory_bytes() as u64).sum(),
            immutable_memtables: sv.imm.len(),
            pending_compaction_bytes: pending_bytes(v, &core.opts),
            block_cache_hits: Counters::get(&c.block_cache_hits),
            block_cache_misses: Counters::get(&c.block_cache_misses),
            block_cache_bytes: core.cache.weight_bytes(),
            block_cache_capacity_bytes: core.cache.capacity_bytes(),
            block_reads: Counters::get(&c.block_reads),
            block_read_bytes: Counters::get(&c.block_read_bytes),
            gets: Counters::get(&c.gets),
            user_bytes_written: user,
            log_bytes_written: Counters::get(&c.log_bytes_written),
            log_syncs: Counters::get(&c.log_syncs),
            write_groups: Counters::get(&c.write_groups),
            log_writes: Counters::get(&c.log_writes),
            buffered_writes: Counters::get(&c.buffered_writes),
            flush_bytes_written: Counters::get(&c.flush_bytes_written),
            compaction_bytes_read: Counters::get(&c.compaction_bytes_read),
            compaction_bytes_written: Counters::get(&c.compaction_bytes_written),
            flushes: Counters::get(&c.flushes),
            compactions: Counters::get(&c.compactions),
            trivial_moves: Counters::get(&c.trivial_moves),
            write_amplification: if user == 0 {
                0.0
            } else {
                written as f64 / user as f64
            },
            space_amplification: if last_level_bytes == 0 {
                0.0
            } else {
                table_bytes as f64 / last_level_bytes as f64
            },
            live_keys_estimate,
            files_per_level,
            bytes_per_level,
            write_stalls: Counters::get(&c.write_stalls),
            write_stall_total_us: Counters::get(&c.write_stall_us),
            tombstones_dropped: Counters::get(&c.tombstones_dropped),
            expired_dropped: Counters::get(&c.expired_dropped),
            filter_removed: Counters::get(&c.filter_removed),
            filter_replaced: Counters::get(&c.filter_replaced),
            last_sequence: core.visible_seq.load(Ordering::Acquire),
            read_only: core.sticky_error().is_some(),
        }
    }

    /// Target size of each level (index = level; L0 has none, reported as 0).
    pub fn level_targets_bytes(&self) -> Vec<u64> {
        let opts = &self.core().opts;
        (0..opts.levels_max)
            .map(|l| {
                if l == 0 {
                    0
                } else {
                    level_target_bytes(opts, l)
                }
            })
            .collect()
    }

    /// Writes the active memtable (and any waiting immutable ones) to tables
    /// and waits for it.
    pub fn flush(&self) -> Result<()> {
        background::flush_and_wait(self.core())
    }

    /// Compacts everything into the bottom-most populated level, dropping
    /// overwritten versions, tombstones and expired entries. Waits.
    pub fn compact(&self) -> Result<()> {
        background::compact_all(self.core())
    }

    /// Waits until background flushes and compactions have caught up (no
    /// memtable waiting, no level over its target). For tests and benchmarks.
    pub fn wait_idle(&self) -> Result<()> {
        self.core().check_open()?;
        background::wait_idle(self.core())
    }

    /// Fsyncs the commit log now.
    pub fn sync(&self) -> Result<()> {
        write::sync_log(self.core())
    }

    /// Stops background work and syncs the log. Later calls fail with
    /// [`Error::Closed`].
    pub fn close(&self) -> Result<()> {
        close_core(self.core(), &self.handle.threads)
    }

    /// Installs the hook compaction consults for every put it rewrites.
    pub fn set_compaction_filter(&self, f: Arc<dyn CompactionFilter>) {
        *self.core().filter.write() = Some(f);
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.core().dir
    }
}
