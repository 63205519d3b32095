//! The local replica: this node's copy of the keys it holds, and the
//! versioned operations on it.
//!
//! Every change of a key is a read-modify-write of its sibling set under a
//! per-key lock (a striped lock table), so concurrent changes of one key on
//! this node never lose each other. Two kinds of change exist:
//!
//! - [`LocalReplica::update_buffered`]: this node coordinates a client
//!   write. Read and decode the record -> check the condition (NX/XX) ->
//!   take an HLC timestamp -> apply the write with its causal context,
//!   minting a new dot with this node as the actor -> bound the siblings ->
//!   encode -> store. The new record is returned so the coordinator can
//!   send it to the other replicas. [`LocalReplica::version_unstored`] does
//!   the same without storing (a stand-in coordinator's write, which
//!   travels as hints).
//! - [`LocalReplica::merge`]: another replica sent its record (replication,
//!   read repair, hint replay, anti-entropy, streaming). Merge it into ours
//!   and store.
//!
//! Dots stay unique: a node's dot counters start above its epoch's floor
//! and rise across all keys within an epoch (see
//! [`crate::causality::epoch_floor`]), so a dot is new even for a key this
//! node does not hold (a stand-in) or no longer holds (lost to a crash).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use parking_lot::Mutex;
use ringkv_env::SharedClock;

use crate::api::{Condition, Expiry, KeyCount, KvError, Sibling, WriteOptions, WriteOutcome};
use crate::causality::types::{Kind, Record};
use crate::causality::{DecodeError, Hlc, HlcState, SiblingSet, StoredSibling, VersionVector};
use crate::record_cache::{Cached, RecordCache, RecordCacheStats};
use crate::store::{LocalStore, StoreError};

mod typed;

pub use typed::{TypeLimits, TypedChange, parse_integer};

/// Number of stripes in the per-key lock table.
const KEY_LOCK_STRIPES: usize = 1024;
/// Keys one pass of [`LocalReplica::purge_truncated`] collects before it
/// mends them (and scans again).
const PURGE_BATCH_KEYS: usize = 10_000;

/// When a replica's write reaches the log: handed to the OS before the
/// call returns (`Now`), or left in the log buffer until the store's next
/// [`LocalStore::release_buffered`] (`Buffered`). The request paths buffer,
/// because their replies wait for that write of the buffer, so a batch of
/// writes costs one system call; background work writes now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogWrite {
    Now,
    Buffered,
}

/// A client write as the replica applies it.
#[derive(Debug, Clone)]
pub enum Change {
    Put(Bytes),
    Delete,
    /// Change only the expiry of the live value.
    Expiry(Expiry),
    /// A write of a data type (a counter, a set, a hash).
    Typed(TypedChange),
}

/// This node's copy of the keys it holds.
pub struct LocalReplica<S> {
    id: u64,
    store: S,
    clock: SharedClock,
    hlc: Mutex<HlcState>,
    key_locks: Box<[Mutex<()>]>,
    siblings_max: usize,
    siblings_dropped: AtomicU64,
    /// Dot counters of this node's writes start above it (its epoch's
    /// floor, see [`crate::causality::epoch_floor`]).
    dot_floor: AtomicU64,
    /// This node's epoch: the counter entry its increments go to.
    epoch: AtomicU64,
    /// What a client write may make a data type hold.
    type_limits: TypeLimits,
    /// Version-vector pruning applied to merged records.
    pruner: parking_lot::RwLock<Option<crate::store::Pruner>>,
    /// The cluster's truncation point as this node knows it (an HLC; 0:
    /// never truncated): siblings written at or before it are dropped from
    /// everything read or merged (see [`crate::truncate`]).
    truncated_at: AtomicU64,
    /// The newest record of each key, in memory (see
    /// [`crate::record_cache`]): every change of the store below goes
    /// through this replica, which keeps it.
    cache: RecordCache,
    /// A weakness planted on purpose (the simulation shows the checkers
    /// catch it): merges from peers leave the cache as it was.
    stale_cache_plant: bool,
}

pub(crate) fn store_error(e: StoreError) -> KvError {
    match e {
        StoreError::ReadOnly(why) => KvError::ReadOnly(why),
        other => KvError::Storage(other.to_string()),
    }
}

/// The sibling a client sees.
pub fn to_sibling(s: &StoredSibling) -> Sibling {
    Sibling {
        value: s.value.clone().unwrap_or_default(),
        hlc: s.hlc,
        actor: s.dot.actor,
        expires_at_ms: s.expires_at_ms,
    }
}

/// [`to_sibling`] of a sibling no longer needed (its value moves).
pub fn into_sibling(s: StoredSibling) -> Sibling {
    Sibling {
        value: s.value.unwrap_or_default(),
        hlc: s.hlc,
        actor: s.dot.actor,
        expires_at_ms: s.expires_at_ms,
    }
}

/// The live sibling the last-writer-wins resolver picks.
pub fn resolved(set: &SiblingSet, now_ms: u64) -> Option<Sibling> {
    set.live(now_ms)
        .max_by_key(|s| (s.hlc, s.dot.actor))
        .map(to_sibling)
}

impl<S: LocalStore> LocalReplica<S> {
    pub fn new(id: u64, store: S, clock: SharedClock, siblings_max: usize) -> Self {
        Self {
            id,
            store,
            clock,
            hlc: Mutex::new(HlcState::default()),
            key_locks: (0..KEY_LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
            siblings_max,
            siblings_dropped: AtomicU64::new(0),
            dot_floor: AtomicU64::new(0),
            epoch: AtomicU64::new(0),
            type_limits: TypeLimits::default(),
            pruner: parking_lot::RwLock::new(None),
            truncated_at: AtomicU64::new(0),
            cache: RecordCache::new(0),
            stale_cache_plant: false,
        }
    }

    /// Keeps the newest records in a cache of at most `bytes_max` bytes
    /// (0: none); fill it with [`LocalReplica::warm_cache`] before use.
    pub fn with_record_cache(mut self, bytes_max: usize) -> Self {
        self.cache = RecordCache::new(bytes_max);
        self
    }

    /// Bounds what a client write may make a data type hold.
    pub fn with_type_limits(mut self, limits: TypeLimits) -> Self {
        self.type_limits = limits;
        self
    }

    /// Plants a stale cache: merges from peers do not update it (for the
    /// simulation's proof that its checkers catch a stale index).
    pub fn with_stale_cache_plant(mut self) -> Self {
        self.stale_cache_plant = true;
        self
    }

    /// Fills the record cache from the store (before the node serves);
    /// logs how long it took. True when every record fit.
    pub fn warm_cache(&self) -> Result<bool, KvError> {
        let started = std::time::Instant::now();
        let mut failed = None;
        let complete = self.cache.warm(|visit| {
            match self.store.for_each(&mut |key, record| visit(key, record)) {
                Ok(()) => true,
                Err(e) => {
                    failed = Some(e);
                    false
                }
            }
        });
        if let Some(e) = failed {
            return Err(store_error(e));
        }
        let s = self.cache.stats();
        if s.bytes_max > 0 {
            tracing::info!(
                entries = s.entries,
                bytes = s.bytes,
                complete,
                ms = started.elapsed().as_millis() as u64,
                "record cache filled from the store"
            );
        }
        Ok(complete)
    }

    /// Figures of the record cache.
    pub fn cache_stats(&self) -> RecordCacheStats {
        self.cache.stats()
    }

    /// Brings the cached records of `keys` into the processor's cache
    /// ([`RecordCache::prefetch`]); a hint, changes nothing.
    pub fn prefetch(&self, keys: &[&[u8]]) {
        self.cache.prefetch(keys);
    }

    /// The stored record of `key`: a copy from the cache, or from the
    /// store (filling the cache).
    fn get_record(&self, key: &[u8]) -> Result<Option<Bytes>, KvError> {
        self.lookup(key, Bytes::copy_from_slice, |bytes| bytes)
    }

    /// What `cached` makes of the record of `key` in the cache (under its
    /// lock, no copy taken), or on a miss `stored` of the store's answer,
    /// which fills the cache (a fill a racing write refuses); `None` when
    /// the key has no record.
    fn lookup<R>(
        &self,
        key: &[u8],
        cached: impl FnOnce(&[u8]) -> R,
        stored: impl FnOnce(Bytes) -> R,
    ) -> Result<Option<R>, KvError> {
        Ok(match self.cache.get_with(key, cached) {
            Cached::Record(found) => Some(found),
            Cached::Absent => None,
            Cached::Unknown { writes } => {
                let record = self.store.get(key).map_err(store_error)?;
                self.cache.fill(key, record.as_ref(), writes);
                record.map(stored)
            }
        })
    }

    /// Drops the record of `key` from this replica only, under the key's
    /// lock: the store and the cache (a range that moved away, see
    /// [`crate::movement`]).
    pub fn remove_record(&self, key: &[u8]) -> Result<(), KvError> {
        let _guard = self.lock(key);
        self.remove_locked(key)
    }

    /// [`LocalReplica::remove_record`] for a caller holding the key's lock.
    fn remove_locked(&self, key: &[u8]) -> Result<(), KvError> {
        match self.store.remove(key) {
            Ok(()) => {
                self.cache.remove(key);
                Ok(())
            }
            Err(e) => {
                // The store may still hold the record: never "absent".
                self.cache.forget(key);
                Err(store_error(e))
            }
        }
    }

    /// Stores `record` under `key`, and keeps it in the cache (unless
    /// `cache` is false: the planted weakness). After a failed store write
    /// the cache forgets the key (the store holds the old record or the
    /// new one) and stops answering misses.
    fn put_record(
        &self,
        key: &[u8],
        record: Vec<u8>,
        log: LogWrite,
        cache: bool,
    ) -> Result<(), KvError> {
        let stored = match log {
            LogWrite::Now => self.store.put(key, &record),
            LogWrite::Buffered => self.store.put_buffered(key, &record),
        };
        match stored {
            Ok(()) if cache => self.cache.put(key, record),
            Ok(()) => {}
            Err(e) => {
                self.cache.forget(key);
                return Err(store_error(e));
            }
        }
        Ok(())
    }

    /// The truncation point this replica applies (0: none).
    pub fn truncated_at(&self) -> Hlc {
        self.truncated_at.load(Ordering::Acquire)
    }

    /// Raises the truncation point to `at`: from now on nothing written at
    /// or before it is read, merged or kept by compaction here, and every
    /// timestamp this node issues is above it. True when it rose.
    pub fn set_truncated_at(&self, at: Hlc) -> bool {
        let mut hlc = self.hlc.lock();
        self.take_point(&mut hlc, at)
    }

    /// [`LocalReplica::set_truncated_at`] under the clock's lock.
    fn take_point(&self, hlc: &mut HlcState, at: Hlc) -> bool {
        hlc.observe(at);
        let rose = self.truncated_at.fetch_max(at, Ordering::AcqRel) < at;
        if rose {
            self.store.set_truncated_at(at);
            // What the point hides leaves memory; misses ask the store.
            self.cache.clear();
        }
        rose
    }

    /// A fresh timestamp of this node's clock (what a truncation asks every
    /// node for, to choose a point above every write acknowledged so far).
    pub fn clock_now(&self) -> Hlc {
        self.hlc.lock().next(self.clock.now_ms())
    }

    /// Drops what the truncation point hides from `set`; true when it did.
    pub fn drop_truncated(&self, set: &mut SiblingSet) -> bool {
        set.drop_truncated(self.truncated_at())
    }

    /// Removes from the store what the truncation point hides, for stores
    /// that cannot leave it to their compaction: each record is read,
    /// pruned of the hidden siblings, and written back or removed under its
    /// key's lock. Returns the records removed.
    pub fn purge_truncated(&self) -> Result<u64, KvError> {
        let at = self.truncated_at();
        if at == 0 {
            return Ok(0);
        }
        let mut removed = 0;
        loop {
            // At most PURGE_BATCH_KEYS keys a pass; a pass mends every key
            // it finds, so the next finds only the rest.
            let mut doomed: Vec<Vec<u8>> = Vec::new();
            self.store
                .for_each(&mut |key, bytes| {
                    if Record::decode(bytes).is_ok_and(|r| r.is_void() || r.touched_by(at)) {
                        doomed.push(key.to_vec());
                    }
                    doomed.len() < PURGE_BATCH_KEYS
                })
                .map_err(store_error)?;
            if doomed.is_empty() {
                return Ok(removed);
            }
            for key in doomed {
                let _guard = self.lock(&key);
                let record = self.read_record(&key)?;
                if record.is_void() {
                    self.remove_locked(&key)?;
                    removed += 1;
                } else {
                    self.put_record(&key, record.encode(), LogWrite::Now, true)?;
                }
            }
        }
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    pub fn siblings_dropped(&self) -> u64 {
        self.siblings_dropped.load(Ordering::Relaxed)
    }

    fn lock(&self, key: &[u8]) -> parking_lot::MutexGuard<'_, ()> {
        let h = fnv1a(key) as usize % self.key_locks.len();
        self.key_locks[h].lock()
    }

    /// What `decode` makes of the stored record of `key` (`None` when
    /// absent): from the cache, decoded under its lock without a copy of
    /// the record, or from the store (filling the cache).
    fn decode_record<R>(
        &self,
        key: &[u8],
        decode: impl Fn(&[u8]) -> Result<R, DecodeError>,
    ) -> Result<Option<R>, KvError> {
        self.lookup(key, &decode, |bytes| decode(&bytes))?
            .transpose()
            .map_err(|e| KvError::Storage(format!("record of a key failed to decode: {e}")))
    }

    /// The stored record of `key` (empty when absent), without what the
    /// truncation point hides.
    pub fn read(&self, key: &[u8]) -> Result<SiblingSet, KvError> {
        let mut set = self
            .decode_record(key, SiblingSet::decode_copied)?
            .unwrap_or_default();
        self.drop_truncated(&mut set);
        Ok(set)
    }

    /// The stored record of `key` with its data-type components (empty when
    /// absent), without what the truncation point hides.
    pub fn read_record(&self, key: &[u8]) -> Result<Record, KvError> {
        let mut record = self
            .decode_record(key, Record::decode_copied)?
            .unwrap_or_default();
        record.drop_truncated(self.truncated_at());
        Ok(record)
    }

    /// The stored record's bytes, for sending to a peer (without what the
    /// truncation point hides; `None` when it hides all of it).
    pub fn read_raw(&self, key: &[u8]) -> Result<Option<Bytes>, KvError> {
        let raw = self.get_record(key)?;
        Ok(raw.and_then(|bytes| self.visible_record(bytes)))
    }

    /// A stored record as a peer may see it: re-encoded without the
    /// siblings the truncation point hides when it holds any, `None` when
    /// the point hides all of it (a record that does not decode is passed
    /// on as it is, for the peer to refuse).
    pub fn visible_record(&self, bytes: Bytes) -> Option<Bytes> {
        let at = self.truncated_at();
        if at == 0 {
            return Some(bytes);
        }
        match Record::decode(&bytes) {
            Ok(mut record) => {
                if !record.drop_truncated(at) {
                    Some(bytes)
                } else if record.is_void() {
                    None
                } else {
                    Some(Bytes::from(record.encode()))
                }
            }
            Err(_) => Some(bytes),
        }
    }

    fn bound(&self, set: &mut SiblingSet) {
        let dropped = set.bound_siblings(self.siblings_max);
        if dropped > 0 {
            self.siblings_dropped
                .fetch_add(dropped as u64, Ordering::Relaxed);
            metrics::counter!("ringkv_siblings_dropped_total").increment(dropped as u64);
        }
    }

    /// Installs the version-vector pruning merges apply (see
    /// [`crate::causality::purge::prune_departed`]).
    pub fn set_pruner(&self, pruner: crate::store::Pruner) {
        *self.pruner.write() = Some(pruner);
    }

    /// Sets this node's epoch: its next dots count from
    /// [`crate::causality::epoch_floor`] of it.
    pub fn set_epoch(&self, epoch: u64) {
        self.dot_floor
            .fetch_max(crate::causality::epoch_floor(epoch), Ordering::Relaxed);
        self.epoch.fetch_max(epoch, Ordering::Relaxed);
    }

    /// This node's epoch as the replica knows it.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Relaxed)
    }

    /// Starts the epoch `bump` makes durable and returns, and then takes
    /// the truncation point `at` when given (true when it rose), both
    /// under the clock's lock. A data type's write takes its timestamp and
    /// its epoch under the same lock, so no increment lands in an entry of
    /// the old epoch stamped after the switch, nor in one of the new epoch
    /// stamped before it (docs/design/data-types.md, "Truncation").
    pub fn switch_epoch(
        &self,
        at: Option<Hlc>,
        bump: impl FnOnce() -> std::io::Result<u64>,
    ) -> Result<bool, KvError> {
        let mut hlc = self.hlc.lock();
        let epoch = bump().map_err(|e| KvError::Storage(format!("starting a new epoch: {e}")))?;
        self.set_epoch(epoch);
        Ok(at.is_some_and(|at| self.take_point(&mut hlc, at)))
    }

    /// Applies a client write coordinated by this node. Returns the outcome
    /// and, when something was written, the new record to replicate. The
    /// write is buffered ([`LogWrite::Buffered`]): the caller releases the
    /// store's buffered writes before acknowledging it.
    pub fn update_buffered(
        &self,
        key: &[u8],
        change: Change,
        opts: &WriteOptions,
    ) -> Result<(WriteOutcome, Option<Record>), KvError> {
        self.apply(key, change, opts, true)
    }

    /// Versions a client write from this node's own record of `key`
    /// without storing it: what a stand-in coordinator does when no
    /// replica can be reached (the record travels as hints).
    pub fn version_unstored(
        &self,
        key: &[u8],
        change: Change,
        opts: &WriteOptions,
    ) -> Result<(WriteOutcome, Option<Record>), KvError> {
        self.apply(key, change, opts, false)
    }

    fn apply(
        &self,
        key: &[u8],
        change: Change,
        opts: &WriteOptions,
        store: bool,
    ) -> Result<(WriteOutcome, Option<Record>), KvError> {
        let _guard = self.lock(key);
        let at = self.truncated_at();
        let vv_only = if supersedes_all(&change, opts) {
            // Every sibling goes: only the record's vector is read (as the
            // truncation point leaves it), unless it holds data types.
            match self.decode_record(key, |bytes| SiblingSet::decode_vv(bytes, at))? {
                None => Some(VersionVector::default()),
                Some(vv) => vv,
            }
        } else {
            None
        };
        let mut record = match vv_only {
            Some(vv) => Record::from(SiblingSet {
                vv,
                siblings: Vec::new(),
            }),
            None => self.read_record(key)?,
        };
        let now = self.clock.now_ms();
        let change = match change {
            Change::Typed(typed) => return self.apply_typed(key, record, typed, now, store),
            string => string,
        };
        // A key of a data type meets a string write as its value (a
        // counter's, as Redis's counters are strings) or as "present".
        let held = if record.strings_only() {
            None
        } else {
            record.kind(now).filter(|k| *k != Kind::String)
        };
        let before = match held {
            None => resolved(&record.strings, now),
            Some(kind) => Some(typed::typed_before(&record, kind, &change, opts)?),
        };
        let previous = if opts.return_previous {
            before.clone()
        } else {
            None
        };
        let (value, expires_at_ms) = match new_sibling(change, opts, before.as_ref(), now) {
            Ok(written) => written,
            Err(applied) => {
                let outcome = WriteOutcome {
                    applied,
                    previous,
                    integer: None,
                };
                return Ok((outcome, None));
            }
        };
        let deleted = value.is_none();
        let context = opts
            .context
            .clone()
            .unwrap_or_else(|| record.strings.vv.clone());
        let hlc = self.hlc.lock().next(now);
        // Counters rise across all keys within an epoch, so a dot is new
        // even for a key whose record this node does not hold (a stand-in)
        // or no longer holds.
        let floor = self.dot_floor.load(Ordering::Relaxed);
        let dot =
            (record.strings).update_above(&context, self.id, floor, hlc, value, expires_at_ms);
        debug_assert!(dot.counter > floor, "a dot above the floor");
        self.dot_floor.fetch_max(dot.counter, Ordering::Relaxed);
        if !record.strings_only() {
            // The string write supersedes what it sees of the data types.
            record.supersede_other_kinds(Kind::String, hlc, self.id);
        }
        self.finish(key, &mut record, store)?;
        let outcome = WriteOutcome {
            applied: !deleted || before.is_some(),
            previous,
            integer: None,
        };
        Ok((outcome, Some(record)))
    }

    /// Bounds a record a client write made and stores it (when this node
    /// holds the key).
    fn finish(&self, key: &[u8], record: &mut Record, store: bool) -> Result<(), KvError> {
        self.bound(&mut record.strings);
        if store {
            self.put_record(key, record.encode(), LogWrite::Buffered, true)?;
        }
        Ok(())
    }

    /// Merges a peer's record of `key` into ours. Returns true when ours
    /// changed.
    pub fn merge(&self, key: &[u8], incoming: &Record) -> Result<bool, KvError> {
        self.merge_with(key, incoming, LogWrite::Now)
    }

    /// [`LocalReplica::merge`], choosing when the write reaches the log.
    /// Records with data-type components (format 2) merge by
    /// [`Record::merge`]; string records as before.
    pub fn merge_with(
        &self,
        key: &[u8],
        incoming: &Record,
        log: LogWrite,
    ) -> Result<bool, KvError> {
        let at = self.truncated_at();
        let pruned;
        let incoming = if incoming.touched_by(at) {
            let mut kept = incoming.clone();
            kept.drop_truncated(at);
            pruned = kept;
            &pruned
        } else {
            incoming
        };
        self.hlc.lock().observe(incoming.max_hlc());
        let _guard = self.lock(key);
        let mut record = self.read_record(key)?;
        let mut changed = record.merge_changed(incoming);
        // A pruned record merged with an unpruned one is pruned again, so
        // replicas that prune at different times converge. (Records with
        // data types are not pruned: their set and hash components read
        // the vector.)
        if record.strings_only()
            && let Some(p) = self.pruner.read().as_ref()
            && p(crate::ring::token_of(key), &mut record.strings)
        {
            // Pruning may undo what the merge added (a departed node's
            // entry): compare with the record as read (rare: only records
            // older than the grace period are pruned).
            changed = record != self.read_record(key)?;
        }
        if record.is_void() && at > 0 {
            // Only a vector of truncated events: no record is kept (a
            // truncated read or merge leaves nothing for it to supersede).
            if self.get_record(key)?.is_some() {
                self.remove_locked(key)?;
            }
            return Ok(false);
        }
        if !changed {
            return Ok(false);
        }
        self.bound(&mut record.strings);
        self.put_record(key, record.encode(), log, !self.stale_cache_plant)?;
        Ok(true)
    }

    /// Merges a batch of peers' records (streams, imports): each like
    /// [`LocalReplica::merge`], their log records handed to the OS together
    /// once all are merged (one system call for the batch, not one per
    /// record, where the store buffers: with periodic sync). Stops at the first failure, still handing over what was
    /// merged before it. Blocking: call it off the executor.
    pub fn merge_batch(&self, records: &[(Bytes, Record)]) -> Result<(), KvError> {
        let merged = records
            .iter()
            .try_for_each(|(key, set)| self.merge_with(key, set, LogWrite::Buffered).map(|_| ()));
        let released = self.store.release_buffered().map_err(store_error);
        merged.and(released)
    }

    /// [`LocalReplica::update_buffered`] off the executor when the store
    /// may wait for an fsync.
    pub async fn apply_write(
        self: &Arc<Self>,
        key: Bytes,
        change: Change,
        opts: WriteOptions,
    ) -> Result<(WriteOutcome, Option<Record>), KvError> {
        if !self.store.blocking_writes() {
            return self.update_buffered(&key, change, &opts);
        }
        let me = Arc::clone(self);
        crate::exec::blocking(move || me.update_buffered(&key, change, &opts))
            .await
            .map_err(|e| KvError::Storage(format!("write: {e}")))?
    }

    /// [`LocalReplica::merge_with`] off the executor when the store may
    /// wait for an fsync.
    pub async fn merge_in(
        self: &Arc<Self>,
        key: Bytes,
        set: Record,
        log: LogWrite,
    ) -> Result<bool, KvError> {
        if !self.store.blocking_writes() {
            return self.merge_with(&key, &set, log);
        }
        let me = Arc::clone(self);
        crate::exec::blocking(move || me.merge_with(&key, &set, log))
            .await
            .map_err(|e| KvError::Storage(format!("merge: {e}")))?
    }

    /// [`LocalReplica::merge_in`], written to the log now (background work).
    pub async fn merge_now(self: &Arc<Self>, key: Bytes, set: Record) -> Result<bool, KvError> {
        self.merge_in(key, set, LogWrite::Now).await
    }

    /// Counts live keys, and those of them that expire, in local storage
    /// (a full scan, the key census's); gives up (`None`) as soon as
    /// `stop` turns true.
    pub fn count_keys_until(
        &self,
        stop: &std::sync::atomic::AtomicBool,
    ) -> Result<Option<KeyCount>, KvError> {
        let now = self.clock.now_ms();
        let started = self.clock.monotonic();
        let mut count = KeyCount {
            counted_at_ms: now,
            ..KeyCount::default()
        };
        let mut ttl_sum_ms = 0u128;
        let mut corrupt = 0u64;
        self.store
            .for_each(&mut |_, bytes| {
                match Record::decode(bytes) {
                    Ok(mut record) => {
                        record.drop_truncated(self.truncated_at());
                        if !record.is_dead(now) {
                            count.live += 1;
                            if let Some(at) = record.record_expiry() {
                                count.expiring += 1;
                                ttl_sum_ms += u128::from(at.saturating_sub(now));
                            }
                        }
                    }
                    Err(_) => corrupt += 1,
                }
                !stop.load(Ordering::Relaxed)
            })
            .map_err(store_error)?;
        if stop.load(Ordering::Relaxed) {
            return Ok(None);
        }
        if corrupt > 0 {
            tracing::warn!(corrupt, "records failed to decode while counting keys");
        }
        if count.expiring > 0 {
            count.avg_ttl_ms = (ttl_sum_ms / u128::from(count.expiring)) as u64;
        }
        count.took_ms = self.clock.monotonic().saturating_sub(started).as_millis() as u64;
        Ok(Some(count))
    }
}

/// A write that needs nothing of the record it replaces but its version
/// vector: a value put unconditionally, without keeping the old expiry or
/// returning the old value, and without a client context (so the record's
/// vector is the context, and it covers every sibling).
fn supersedes_all(change: &Change, opts: &WriteOptions) -> bool {
    matches!(change, Change::Put(_))
        && matches!(opts.condition, Condition::Always)
        && !matches!(opts.expiry, Expiry::Keep)
        && !opts.return_previous
        && opts.context.is_none()
}

/// The value and expiry of the sibling a write adds, given the live value
/// it replaces (`before`, as the resolver picks it), or `Err(applied)` when
/// the write adds nothing (a condition not met, nothing to delete, an expiry
/// that changes nothing).
fn new_sibling(
    change: Change,
    opts: &WriteOptions,
    before: Option<&Sibling>,
    now: u64,
) -> Result<(Option<Bytes>, Option<u64>), bool> {
    match change {
        Change::Put(value) => {
            let met = match opts.condition {
                Condition::Always => true,
                Condition::IfAbsent => before.is_none(),
                Condition::IfPresent => before.is_some(),
            };
            if !met {
                return Err(false);
            }
            let exp = match opts.expiry {
                Expiry::Never => None,
                Expiry::At(t) => Some(t),
                Expiry::Keep => before.and_then(|b| b.expires_at_ms),
            };
            Ok((Some(value), exp))
        }
        Change::Delete => {
            // Deleting what this replica does not see writes nothing
            // unless the client names what it deletes (a context).
            if before.is_none() && opts.context.is_none() {
                return Err(false);
            }
            Ok((None, None))
        }
        // Applied by `apply_typed`, never here.
        Change::Typed(_) => Err(false),
        Change::Expiry(expiry) => {
            let Some(current) = before else {
                return Err(false);
            };
            match expiry {
                Expiry::Keep => Err(true),
                Expiry::Never if current.expires_at_ms.is_none() => Err(true),
                Expiry::Never => Ok((Some(current.value.clone()), None)),
                // An expiry in the past deletes the key, as in Redis.
                Expiry::At(t) if t <= now => Ok((None, None)),
                Expiry::At(t) => Ok((Some(current.value.clone()), Some(t))),
            }
        }
    }
}

fn fnv1a(key: &[u8]) -> u64 {
    // Only for lock striping, never stored.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod typed_tests;
