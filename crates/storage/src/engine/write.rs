//! The write path, top to bottom ([`write`]):
//!
//! 1. Validate the batch (sizes) and join the commit queue.
//! 2. The writer at the head of the queue is the leader; the others wait.
//!    The leader takes every queued batch up to `group_commit_bytes_max`.
//! 3. Make room: if the active memtable is full, rotate it (new log segment,
//!    old memtable becomes immutable and goes to the flush thread). If too
//!    many memtables wait for flush, or L0 is at its stop limit, wait at most
//!    `write_stall_ms_max` (counted in stats); with L0 at its slowdown limit,
//!    delay the group by 1 ms once.
//! 4. Encode one log record per batch into one buffer and hand it to the OS
//!    with one `write()`. With `SyncMode::Always`, fsync it (one fsync for the
//!    whole group). A failure of either makes the engine read-only for good.
//! 5. Insert into the memtable, publish the new visible sequence number, and
//!    wake the followers with the group's result; the next waiting writer
//!    becomes leader.
//!
//! Buffered writes ([`write_buffered`], not with `SyncMode::Always`) take a
//! shorter path: under the log lock, encode the record into the log buffer,
//! insert into the memtable and publish the sequence number, with no system
//! call. The buffer is written with the next group, by [`release_buffered`]
//! (which a server calls once before sending a batch of replies, so a whole
//! batch of writes costs one `write()`), by the periodic syncer, before a
//! memtable rotation, on close, or as soon as it holds
//! `group_commit_bytes_max`. Until then such a write is visible to readers
//! but not with the OS: whoever answers a client (a write's acknowledgement,
//! or a read that may have seen it) calls [`release_buffered`] first. If writing
//! the buffer fails, the engine becomes read-only and every later
//! [`release_buffered`] fails too: visible writes can no longer reach the log,
//! so no reply may depend on them.
//!
//! Limits: the commit queue holds one entry per caller thread blocked in a
//! write, so its length is bounded by the caller's concurrency (the cluster
//! bounds that with its connection limits); a group writes at most
//! `group_commit_bytes_max` (plus one batch) to the log buffer; one batch is at
//! most `batch_bytes_max`.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::{Core, State, SuperVersion};
use crate::batch::WriteBatch;
use crate::error::{Error, Result};
use crate::fs::WritableFile;
use crate::log::encode_record;
use crate::memtable::Memtable;
use crate::options::SyncMode;
use crate::stats::Counters;
use crate::table::block::SEQ_MAX;
use crate::util::log_path;

/// The leader-only state of the log writer.
pub(crate) struct LogState {
    pub file: Arc<dyn WritableFile>,
    pub number: u64,
    pub path: PathBuf,
    /// The active memtable (the one the leader inserts into).
    pub mem: Arc<Memtable>,
    pub last_seq: u64,
    /// Encoded log records not yet written: buffered writes waiting for the
    /// next `write()`, then the group being committed.
    pub buf: Vec<u8>,
    /// The leader's group, reused across groups.
    pub group: Vec<Arc<Waiter>>,
}

enum WaiterState {
    Waiting,
    Leader,
    Done(Option<Error>),
}

/// One writer in the commit queue.
pub(crate) struct Waiter {
    batch: WriteBatch,
    state: Mutex<WaiterState>,
    cv: Condvar,
}

impl Waiter {
    fn finish(&self, err: Option<Error>) {
        *self.state.lock() = WaiterState::Done(err);
        self.cv.notify_one();
    }

    fn promote(&self) {
        *self.state.lock() = WaiterState::Leader;
        self.cv.notify_one();
    }
}

fn validate(core: &Core, batch: &WriteBatch) -> Result<()> {
    let o = &core.opts;
    if batch.encoded_bytes() > o.batch_bytes_max {
        return Err(Error::InvalidArgument(format!(
            "write batch of {} bytes exceeds batch_bytes_max {}",
            batch.encoded_bytes(),
            o.batch_bytes_max
        )));
    }
    for op in batch.ops() {
        let op =
            op.map_err(|m| Error::InvalidArgument(format!("malformed batch: {}", m.detail)))?;
        if op.key.len() > o.key_bytes_max {
            return Err(Error::InvalidArgument(format!(
                "key of {} bytes exceeds key_bytes_max {}",
                op.key.len(),
                o.key_bytes_max
            )));
        }
        if op.value.len() > o.value_bytes_max {
            return Err(Error::InvalidArgument(format!(
                "value of {} bytes exceeds value_bytes_max {}",
                op.value.len(),
                o.value_bytes_max
            )));
        }
    }
    Ok(())
}

/// Applies a batch through group commit.
pub(crate) fn write(core: &Arc<Core>, batch: WriteBatch) -> Result<()> {
    core.check_writable()?;
    if batch.is_empty() {
        return Ok(());
    }
    validate(core, &batch)?;
    let me = Arc::new(Waiter {
        batch,
        state: Mutex::new(WaiterState::Waiting),
        cv: Condvar::new(),
    });
    let leader = {
        let mut q = core.queue.lock();
        q.push_back(me.clone());
        q.len() == 1
    };
    if !leader {
        let mut st = me.state.lock();
        loop {
            match &mut *st {
                WaiterState::Waiting => me.cv.wait(&mut st),
                WaiterState::Leader => break,
                WaiterState::Done(err) => {
                    return match err.take() {
                        None => Ok(()),
                        Some(e) => Err(e),
                    };
                }
            }
        }
    }
    // This writer leads: take the log, then a group from the head of the queue
    // (into a buffer reused across groups).
    let mut guard = core.log.lock();
    let mut group = std::mem::take(&mut guard.group);
    {
        let q = core.queue.lock();
        let mut bytes = 0usize;
        for w in q.iter() {
            if !group.is_empty()
                && bytes + w.batch.encoded_bytes() > core.opts.group_commit_bytes_max
            {
                break;
            }
            bytes += w.batch.encoded_bytes();
            group.push(w.clone());
        }
    }
    let result = commit_group(core, &mut guard, &group);
    let mut q = core.queue.lock();
    for w in group.drain(..) {
        let popped = q.pop_front();
        debug_assert!(popped.as_ref().is_some_and(|p| Arc::ptr_eq(p, &w)));
        if !Arc::ptr_eq(&w, &me) {
            w.finish(result.as_ref().err().map(Error::duplicate));
        }
    }
    if let Some(next) = q.front() {
        next.promote();
    }
    drop(q);
    guard.group = group;
    drop(guard);
    result
}

fn commit_group(core: &Core, log: &mut LogState, group: &[Arc<Waiter>]) -> Result<()> {
    core.check_writable()?;
    make_room(core, log)?;
    // Buffered writes already in `buf` go out in the same `write()`.
    let buffered = log.buf.len();
    let mut seq = log.last_seq;
    let mut user_bytes = 0u64;
    for w in group {
        encode_record(&mut log.buf, seq + 1, &w.batch);
        seq += u64::from(w.batch.count());
        user_bytes += w.batch.user_bytes();
    }
    if seq > SEQ_MAX {
        log.buf.truncate(buffered);
        return Err(Error::InvalidArgument("sequence numbers exhausted".into()));
    }
    if let Err(err) = append_buffer(core, log, seq) {
        core.set_sticky(err.to_string());
        return Err(err);
    }
    let c = &core.counters;
    Counters::add(&c.user_bytes_written, user_bytes);
    Counters::add(&c.write_groups, 1);
    if core.opts.sync == SyncMode::Always {
        if let Err(e) = log.file.sync() {
            let err = Error::io("fsync log", &log.path, e);
            core.set_sticky(err.to_string());
            return Err(err);
        }
        Counters::add(&c.log_syncs, 1);
    }
    let mut s = log.last_seq;
    for w in group {
        for op in w.batch.ops() {
            s += 1;
            // Batches were decoded once in `validate`; they cannot fail here.
            if let Ok(op) = op {
                log.mem.insert(s, &op);
            }
        }
    }
    debug_assert_eq!(s, seq);
    log.last_seq = seq;
    core.visible_seq.store(seq, Ordering::Release);
    Ok(())
}

/// Writes the log buffer to the active segment (one `write()`); every record
/// up to `through` is then with the OS. The caller makes a failure sticky.
pub(crate) fn append_buffer(core: &Core, log: &mut LogState, through: u64) -> Result<()> {
    if !log.buf.is_empty() {
        log.file
            .append(&log.buf)
            .map_err(|e| Error::io("append to log", &log.path, e))?;
        let c = &core.counters;
        Counters::add(&c.log_bytes_written, log.buf.len() as u64);
        Counters::add(&c.log_writes, 1);
        log.mem.add_log_bytes(log.buf.len() as u64);
        log.buf.clear();
    }
    core.logged_seq.store(through, Ordering::Release);
    Ok(())
}

/// Applies a batch without writing the log: see the module documentation.
/// With `SyncMode::Always` this is [`write`].
pub(crate) fn write_buffered(core: &Arc<Core>, batch: WriteBatch) -> Result<()> {
    if core.opts.sync == SyncMode::Always {
        return write(core, batch);
    }
    core.check_writable()?;
    if batch.is_empty() {
        return Ok(());
    }
    validate(core, &batch)?;
    let mut log = core.log.lock();
    core.check_writable()?;
    make_room(core, &mut log)?;
    let first = log.last_seq + 1;
    let last = log.last_seq + u64::from(batch.count());
    if last > SEQ_MAX {
        return Err(Error::InvalidArgument("sequence numbers exhausted".into()));
    }
    encode_record(&mut log.buf, first, &batch);
    let mut s = log.last_seq;
    for op in batch.ops() {
        s += 1;
        // Decoded once in `validate`; cannot fail here.
        if let Ok(op) = op {
            log.mem.insert(s, &op);
        }
    }
    log.last_seq = last;
    core.visible_seq.store(last, Ordering::Release);
    let c = &core.counters;
    Counters::add(&c.user_bytes_written, batch.user_bytes());
    Counters::add(&c.buffered_writes, 1);
    if log.buf.len() >= core.opts.group_commit_bytes_max
        && let Err(err) = append_buffer(core, &mut log, last)
    {
        core.set_sticky(err.to_string());
        // The batch is visible but not logged: its writer must not be told
        // it is applied.
        return Err(err);
    }
    Ok(())
}

/// Hands every buffered write to the OS: on success, every write visible
/// before the call is in the log. See the module documentation.
pub(crate) fn release_buffered(core: &Core) -> Result<()> {
    if core.logged_seq.load(Ordering::Acquire) >= core.visible_seq.load(Ordering::Acquire) {
        return Ok(());
    }
    let mut log = core.log.lock();
    let through = log.last_seq;
    if core.logged_seq.load(Ordering::Acquire) >= through {
        return Ok(());
    }
    core.check_open()?;
    if let Some(e) = core.sticky_error() {
        return Err(e);
    }
    append_buffer(core, &mut log, through).inspect_err(|err| core.set_sticky(err.to_string()))
}

/// Ensures the active memtable has room, rotating or stalling as needed.
fn make_room(core: &Core, log: &mut LogState) -> Result<()> {
    let o = &core.opts;
    if log.mem.bytes() < o.memtable_bytes_max
        && core.l0_files.load(Ordering::Acquire) < o.l0_slowdown_files
    {
        return Ok(());
    }
    let started = Instant::now();
    let deadline = started + Duration::from_millis(o.write_stall_ms_max);
    let mut stalled = false;
    let mut may_delay = true;
    let mut st = core.state.lock();
    let result = loop {
        if let Some(e) = core.sticky_error() {
            break Err(e);
        }
        if core.shutdown.load(Ordering::Acquire) {
            break Err(Error::Closed);
        }
        let sv = core.current_sv();
        let l0 = sv.version.levels[0].len();
        if may_delay && l0 >= o.l0_slowdown_files && l0 < o.l0_stop_files {
            // Give compaction a little room rather than stopping hard later.
            may_delay = false;
            stalled = true;
            drop(sv);
            parking_lot::MutexGuard::unlocked(&mut st, || {
                std::thread::sleep(Duration::from_millis(1))
            });
            continue;
        }
        if log.mem.bytes() < o.memtable_bytes_max {
            break Ok(());
        }
        if sv.imm.len() >= o.immutable_memtables_max || l0 >= o.l0_stop_files {
            stalled = true;
            if Instant::now() >= deadline {
                break Err(Error::WriteStall {
                    waited_ms: started.elapsed().as_millis() as u64,
                });
            }
            drop(sv);
            core.bg_cv.wait_until(&mut st, deadline);
            continue;
        }
        drop(sv);
        break rotate(core, &mut st, log);
    };
    drop(st);
    if stalled {
        Counters::add(&core.counters.write_stalls, 1);
        Counters::add(
            &core.counters.write_stall_us,
            started.elapsed().as_micros() as u64,
        );
    }
    result
}

/// Makes the active memtable immutable and starts a new one with a new log
/// segment. Called with the log and state locks held.
pub(crate) fn rotate(core: &Core, st: &mut State, log: &mut LogState) -> Result<()> {
    // Buffered writes belong to the old segment.
    let through = log.last_seq;
    append_buffer(core, log, through).inspect_err(|err| core.set_sticky_locked(err.to_string()))?;
    let number = st.next_file_number;
    st.next_file_number += 1;
    let path = log_path(&core.dir, number);
    let file = core
        .fs
        .create(&path)
        .map_err(|e| Error::io("create log segment", &path, e))?;
    // The old segment must be durable before the new one can hold later
    // writes: recovery accepts a torn tail only in the last segment.
    if core.opts.sync != SyncMode::Always
        && let Err(e) = log.file.sync()
    {
        let err = Error::io("fsync log", &log.path, e);
        core.set_sticky_locked(err.to_string());
        return Err(err);
    }
    if let Err(e) = core.fs.sync_dir(&core.dir) {
        let err = Error::io("fsync directory", &core.dir, e);
        core.set_sticky_locked(err.to_string());
        return Err(err);
    }
    let mem = Arc::new(Memtable::new(number));
    {
        let mut g = core.sv.write();
        let mut imm = Vec::with_capacity(g.imm.len() + 1);
        imm.push(g.mem.clone());
        imm.extend(g.imm.iter().cloned());
        *g = Arc::new(SuperVersion {
            mem: mem.clone(),
            imm,
            version: g.version.clone(),
        });
    }
    log.file = file;
    log.number = number;
    log.path = path;
    log.mem = mem;
    *core.current_log.lock() = log.file.clone();
    core.bg_cv.notify_all();
    Ok(())
}

/// Writes buffered writes, then fsyncs the active log segment.
pub(crate) fn sync_log(core: &Core) -> Result<()> {
    core.check_writable()?;
    release_buffered(core)?;
    let file = core.current_log.lock().clone();
    match file.sync() {
        Ok(()) => {
            Counters::add(&core.counters.log_syncs, 1);
            Ok(())
        }
        Err(e) => {
            let err = Error::io("fsync log", &core.dir, e);
            core.set_sticky(err.to_string());
            Err(err)
        }
    }
}
