//! Background work: the flush thread, the compaction threads and the
//! periodic log fsync, plus installing their results.
//!
//! Every change of the live-table set goes through [`install`], under the
//! state mutex: build the new version, write the new manifest (fsync, rename,
//! fsync directory), then swap the super version and mark replaced tables
//! obsolete (their files go when the last reader drops them). A failed
//! manifest write makes the engine read-only; nothing is retried.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{Core, State, SuperVersion};
use crate::cache::BlockCache;
use crate::compaction::{self, Job, RunCtx};
use crate::error::{Error, Result};
use crate::fs::Fs;
use crate::manifest::Manifest;
use crate::memtable::Memtable;
use crate::options::SyncMode;
use crate::stats::Counters;
use crate::table::{BuildOptions, Table, TableBuilder};
use crate::util::{FileKind, log_path, parse_file_name, table_path};
use crate::version::{Edit, Version};

/// Starts the flush thread, the compaction threads and (in periodic mode)
/// the log syncer.
pub(crate) fn spawn(core: &Arc<Core>) -> Result<Vec<JoinHandle<()>>> {
    let mut threads = Vec::new();
    if !core.opts.background_threads {
        return Ok(threads);
    }
    let spawn = |name: String, f: Box<dyn FnOnce() + Send>| {
        std::thread::Builder::new()
            .name(name)
            .spawn(f)
            .map_err(|e| Error::io("spawn thread", &core.dir, e))
    };
    let c = core.clone();
    threads.push(spawn(
        "ringkv-flush".into(),
        Box::new(move || flush_thread(c)),
    )?);
    for i in 0..core.opts.compaction_threads_max {
        let c = core.clone();
        threads.push(spawn(
            format!("ringkv-compact-{i}"),
            Box::new(move || compaction_thread(c)),
        )?);
    }
    if let SyncMode::Periodic { interval_ms } = core.opts.sync {
        let c = core.clone();
        threads.push(spawn(
            "ringkv-logsync".into(),
            Box::new(move || sync_thread(c, Duration::from_millis(interval_ms))),
        )?);
    }
    Ok(threads)
}

fn flush_thread(core: Arc<Core>) {
    loop {
        let mem = {
            let mut st = core.state.lock();
            loop {
                if core.shutdown.load(Ordering::Acquire) {
                    return;
                }
                if core.sticky_error().is_none()
                    && let Some(m) = core.current_sv().imm.last()
                {
                    st.flushing = true;
                    break m.clone();
                }
                core.bg_cv.wait(&mut st);
            }
        };
        let _ = flush_picked(&core, mem);
    }
}

/// Flushes `mem`, which the caller marked `flushing`; clears the mark. A
/// failure is sticky.
fn flush_picked(core: &Core, mem: Arc<Memtable>) -> Result<()> {
    let result = flush_memtable(core, &mem);
    drop(mem);
    let mut st = core.state.lock();
    st.flushing = false;
    match &result {
        Ok(()) | Err(Error::Closed) => {}
        Err(e) => core.set_sticky_locked(format!("flush failed: {e}")),
    }
    core.bg_cv.notify_all();
    result
}

/// Picks a compaction and runs it; `None` when none is due. A failure is
/// sticky.
fn compact_one(core: &Core) -> Option<Result<()>> {
    let _manual = core.manual_compaction.read();
    let job = {
        let mut st = core.state.lock();
        let v = core.current_sv().version.clone();
        let st = &mut *st;
        let job = compaction::pick(&v, &core.opts, &st.busy_levels, &mut st.pointers);
        if let Some(j) = &job {
            st.busy_levels[j.level] = true;
            st.busy_levels[j.output_level] = true;
        }
        job
    }?;
    let result = execute(core, &job);
    let (level, output_level) = (job.level, job.output_level);
    // Release the inputs before anyone can see the levels as idle, so
    // replaced files are gone by then.
    drop(job);
    let mut st = core.state.lock();
    st.busy_levels[level] = false;
    st.busy_levels[output_level] = false;
    match &result {
        Ok(()) | Err(Error::Closed) => {}
        Err(e) => core.set_sticky_locked(format!("compaction failed: {e}")),
    }
    core.bg_cv.notify_all();
    Some(result)
}

/// Inline mode (`Options::background_threads` false): does on the calling
/// thread what the background threads would, until nothing is due: every
/// immutable memtable is flushed (oldest first), then compactions run while
/// one is picked. A failure is sticky, as on the threads.
pub(crate) fn run_due(core: &Core) -> Result<()> {
    if core.opts.background_threads {
        return Ok(());
    }
    loop {
        if let Some(e) = core.sticky_error() {
            return Err(e);
        }
        if core.shutdown.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let mem = {
            let mut st = core.state.lock();
            if st.flushing {
                // Another caller is flushing; it runs what follows too.
                return Ok(());
            }
            let mem = core.current_sv().imm.last().cloned();
            if mem.is_some() {
                st.flushing = true;
            }
            mem
        };
        if let Some(mem) = mem {
            flush_picked(core, mem)?;
            continue;
        }
        match compact_one(core) {
            None => return Ok(()),
            Some(result) => result?,
        }
    }
}

/// Writes the newest version of every key in `mem` to a new L0 table.
/// Returns `None` for an empty memtable.
pub(crate) fn write_l0_table(core: &Core, mem: &Arc<Memtable>) -> Result<Option<Arc<Table>>> {
    if mem.is_empty() {
        return Ok(None);
    }
    let number = core.alloc_number();
    let t = build_table(
        core.fs.clone(),
        &core.dir,
        number,
        &core.build,
        &core.cache,
        &core.counters,
        mem,
        Some(&core.shutdown),
    )?;
    Ok(Some(t))
}

/// Builds table `number` from a memtable (newest version of each key).
#[allow(clippy::too_many_arguments)]
pub(crate) fn build_table(
    fs: Arc<dyn Fs>,
    dir: &Path,
    number: u64,
    build: &BuildOptions,
    cache: &Arc<BlockCache>,
    counters: &Arc<Counters>,
    mem: &Memtable,
    shutdown: Option<&AtomicBool>,
) -> Result<Arc<Table>> {
    let path = table_path(dir, number);
    let file = fs
        .create(&path)
        .map_err(|e| Error::io("create table", &path, e))?;
    let mut b = TableBuilder::new(file, path.clone(), build.clone(), None);
    let result = (|| {
        let mut n = 0u64;
        mem.for_each_newest(|item| {
            n += 1;
            if n.is_multiple_of(4096) && shutdown.is_some_and(|s| s.load(Ordering::Acquire)) {
                return Err(Error::Closed);
            }
            b.add_ref(item)
        })?;
        b.finish()
    })();
    let (_, bytes) = match result {
        Ok(r) => r,
        Err(e) => {
            let _ = fs.remove(&path);
            return Err(e);
        }
    };
    Counters::add(&counters.flush_bytes_written, bytes);
    let t = Table::open(fs, path, number, cache.clone(), counters.clone())?;
    Ok(Arc::new(t))
}

fn flush_memtable(core: &Core, mem: &Arc<Memtable>) -> Result<()> {
    let table = write_l0_table(core, mem)?;
    let mut st = core.state.lock();
    let sv = core.current_sv();
    let log_number = sv
        .imm
        .iter()
        .filter(|m| !Arc::ptr_eq(m, mem))
        .map(|m| m.log_number())
        .chain(std::iter::once(sv.mem.log_number()))
        .min()
        .unwrap_or(st.log_number)
        .max(st.log_number);
    let flushed_seq = st.flushed_seq.max(mem.max_seq());
    let edit = Edit {
        removed: Vec::new(),
        added: table.iter().map(|t| (0, t.clone())).collect(),
    };
    // A failed install leaves the new table in place: the manifest that
    // lists it may have been renamed in before an fsync failed (see
    // `install`); the next open removes it if the manifest does not.
    install(core, &mut st, edit, log_number, flushed_seq, Some(mem))?;
    Counters::add(&core.counters.flushes, 1);
    drop(st);
    remove_logs_below(core, log_number);
    Ok(())
}

/// Removes log segments numbered below `number` (their data is in tables).
pub(crate) fn remove_logs_below(core: &Core, number: u64) {
    let Ok(names) = core.fs.list(&core.dir) else {
        return;
    };
    for name in names {
        if let Some(FileKind::Log(n)) = parse_file_name(&name)
            && n < number
        {
            let p = log_path(&core.dir, n);
            if let Err(e) = core.fs.remove(&p) {
                tracing::warn!(file = %p.display(), "could not remove flushed log segment: {e}");
            }
        }
    }
}

/// Applies `edit`, persists the manifest, and swaps in the new super version.
/// `flushed` is the memtable this edit flushed, if any.
///
/// A failure turns the engine read-only, and what is on disk is then
/// unknown: the new manifest may already be renamed over the old one (a
/// failed directory fsync) and, once the process dies, be the one read. So
/// on failure no file is removed, neither the edit's new tables nor those
/// it drops; the next open removes every table its manifest does not list.
pub(crate) fn install(
    core: &Core,
    st: &mut State,
    edit: Edit,
    log_number: u64,
    flushed_seq: u64,
    flushed: Option<&Arc<Memtable>>,
) -> Result<()> {
    let cur = core.current_sv();
    let version = cur.version.apply(&edit);
    let manifest = Manifest {
        next_file_number: st.next_file_number,
        last_seq: flushed_seq,
        log_number,
        tables: version.records(),
    };
    if let Err(e) = manifest.write(&*core.fs, &core.dir) {
        core.set_sticky_locked(format!("manifest write failed: {e}"));
        return Err(e);
    }
    st.log_number = log_number;
    st.flushed_seq = flushed_seq;
    {
        let mut g = core.sv.write();
        let imm = g
            .imm
            .iter()
            .filter(|m| flushed.is_none_or(|f| !Arc::ptr_eq(m, f)))
            .cloned()
            .collect();
        core.l0_files
            .store(version.levels[0].len(), Ordering::Release);
        *g = Arc::new(SuperVersion {
            mem: g.mem.clone(),
            imm,
            version: Arc::new(version),
        });
    }
    let re_added: Vec<u64> = edit.added.iter().map(|(_, t)| t.number()).collect();
    for t in cur.version.tables() {
        if edit.removed.contains(&t.number()) && !re_added.contains(&t.number()) {
            t.mark_obsolete();
        }
    }
    core.bg_cv.notify_all();
    Ok(())
}

/// Compacts while there is work. Its priority is lowered (see
/// `ringkv_env::thread`): when the cores are busy, reads and writes go
/// first; write stalls (level-0 tables) hold writers back if it falls too
/// far behind.
fn compaction_thread(core: Arc<Core>) {
    ringkv_env::thread::lower_priority(ringkv_env::thread::BACKGROUND_NICE);
    loop {
        {
            let mut st = core.state.lock();
            loop {
                if core.shutdown.load(Ordering::Acquire) {
                    return;
                }
                if core.sticky_error().is_none() {
                    let v = core.current_sv().version.clone();
                    let mut pointers = st.pointers.clone();
                    if compaction::pick(&v, &core.opts, &st.busy_levels, &mut pointers).is_some() {
                        break;
                    }
                }
                core.bg_cv.wait(&mut st);
            }
        }
        let _ = compact_one(&core);
    }
}

/// Runs one compaction job and installs its result.
fn execute(core: &Core, job: &Job) -> Result<()> {
    if job.trivial_move {
        let Some(t) = job.inputs.first() else {
            return Ok(());
        };
        let mut st = core.state.lock();
        let edit = Edit {
            removed: vec![t.number()],
            added: vec![(job.output_level, t.clone())],
        };
        let (log_number, flushed_seq) = (st.log_number, st.flushed_seq);
        install(core, &mut st, edit, log_number, flushed_seq, None)?;
        Counters::add(&core.counters.trivial_moves, 1);
        return Ok(());
    }
    let started = Instant::now();
    let filter = core.filter.read().clone();
    let alloc = || core.alloc_number();
    let ctx = RunCtx {
        fs: &core.fs,
        dir: &core.dir,
        build: &core.build,
        table_target_bytes: core.opts.table_target_bytes,
        cache: &core.cache,
        counters: &core.counters,
        limiter: core.limiter.clone(),
        filter,
        now_ms: core.clock.now_ms(),
        alloc_number: &alloc,
        shutdown: &core.shutdown,
    };
    let outputs = compaction::run(job, &ctx)?;
    let out_bytes: u64 = outputs.iter().map(|t| t.file_bytes()).sum();
    let mut st = core.state.lock();
    let edit = Edit {
        removed: job.input_numbers(),
        added: outputs
            .iter()
            .map(|t| (job.output_level, t.clone()))
            .collect(),
    };
    let (log_number, flushed_seq) = (st.log_number, st.flushed_seq);
    // On failure the outputs stay, as a flush's table does (see `install`).
    install(core, &mut st, edit, log_number, flushed_seq, None)?;
    Counters::add(&core.counters.compactions, 1);
    drop(st);
    tracing::debug!(
        level = job.level,
        output_level = job.output_level,
        inputs = job.inputs.len() + job.next_inputs.len(),
        input_bytes = job.input_bytes(),
        outputs = outputs.len(),
        output_bytes = out_bytes,
        ms = started.elapsed().as_millis() as u64,
        "compaction done"
    );
    Ok(())
}

fn sync_thread(core: Arc<Core>, interval: Duration) {
    let mut synced_bytes = 0u64;
    loop {
        let deadline = Instant::now() + interval;
        {
            let mut st = core.state.lock();
            while Instant::now() < deadline {
                if core.shutdown.load(Ordering::Acquire) {
                    return;
                }
                core.bg_cv.wait_until(&mut st, deadline);
            }
            if core.shutdown.load(Ordering::Acquire) {
                return;
            }
        }
        if core.sticky_error().is_some() {
            continue;
        }
        let written = Counters::get(&core.counters.log_bytes_written);
        if written == synced_bytes {
            continue;
        }
        let file = core.current_log.lock().clone();
        match file.sync() {
            Ok(()) => {
                synced_bytes = written;
                Counters::add(&core.counters.log_syncs, 1);
            }
            Err(e) => core.set_sticky(format!("periodic log fsync failed: {e}")),
        }
    }
}

/// Rotates the active memtable (if it holds anything) and waits until every
/// immutable memtable is in a table.
pub(crate) fn flush_and_wait(core: &Core) -> Result<()> {
    core.check_writable()?;
    {
        let mut log = core.log.lock();
        if !log.mem.is_empty() {
            let mut st = core.state.lock();
            super::write::rotate(core, &mut st, &mut log)?;
        }
    }
    run_due(core)?;
    let mut st = core.state.lock();
    loop {
        if let Some(e) = core.sticky_error() {
            return Err(e);
        }
        if core.shutdown.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        if core.current_sv().imm.is_empty() {
            return Ok(());
        }
        core.bg_cv.wait(&mut st);
    }
}

/// Waits until no memtable waits for flush and no compaction is running or
/// due.
pub(crate) fn wait_idle(core: &Core) -> Result<()> {
    run_due(core)?;
    let mut st = core.state.lock();
    loop {
        if let Some(e) = core.sticky_error() {
            return Err(e);
        }
        if core.shutdown.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let v = core.current_sv();
        let idle = v.imm.is_empty()
            && !st.flushing
            && !st.busy_levels.iter().any(|b| *b)
            && compaction::pick(
                &v.version,
                &core.opts,
                &st.busy_levels,
                &mut st.pointers.clone(),
            )
            .is_none();
        if idle {
            return Ok(());
        }
        core.bg_cv.wait(&mut st);
    }
}

/// Full manual compaction: everything ends in the bottom-most populated
/// level, which is rewritten too (so expired entries and tombstones there go).
pub(crate) fn compact_all(core: &Core) -> Result<()> {
    flush_and_wait(core)?;
    let _manual = core.manual_compaction.write();
    let v = core.current_sv().version.clone();
    let Some(deepest) = (0..v.levels.len()).rev().find(|&l| !v.levels[l].is_empty()) else {
        return Ok(());
    };
    let bottom = deepest.max(1);
    let mut ran = false;
    for level in 0..bottom {
        core.check_writable()?;
        let v: Arc<Version> = core.current_sv().version.clone();
        if v.levels[level].is_empty() {
            continue;
        }
        let mut job = Job::new(v.clone(), level, level + 1, v.levels[level].clone());
        if level + 1 == bottom {
            job.next_inputs = v.levels[bottom].clone();
        }
        execute(core, &job)?;
        ran = true;
    }
    if !ran {
        let v = core.current_sv().version.clone();
        let job = Job::new(v.clone(), bottom, bottom, v.levels[bottom].clone());
        execute(core, &job)?;
    }
    Ok(())
}
