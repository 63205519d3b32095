//! The coordinator: turns [`Kv`] calls into versioned updates of local
//! storage.
//!
//! Every write is a read-modify-write of the key's sibling set under a
//! per-key lock (a striped lock table), so concurrent writes to one key on
//! this node never lose each other. The write path, top to bottom:
//! validate limits -> lock the key -> read and decode the record -> check the
//! condition (NX/XX) -> take an HLC timestamp -> apply the write to the
//! sibling set with its causal context -> bound the siblings -> encode ->
//! store (commit log, memtable) -> answer.
//!
//! The read path: read and decode the record -> drop expired and deleted
//! siblings -> answer the live siblings and the record's version vector as
//! the causal context.
//!
//! With one node every key has one replica; consistency levels are counted
//! against the replicas that exist, so `QUORUM` is met by the one replica and
//! an explicit count above it fails with `Unavailable`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use parking_lot::Mutex;
use ringkv_env::SharedClock;

use crate::api::{
    Condition, Consistency, Expiry, Kv, KvError, NodeInfo, ReadOptions, ReadResult, Sibling,
    WriteOptions, WriteOutcome,
};
use crate::store::{LocalStore, StoreError};
use crate::version::{HlcState, SiblingSet, hlc_physical_ms};

/// Settings of the request layer.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Largest key accepted, in bytes.
    pub key_bytes_max: usize,
    /// Largest value accepted, in bytes.
    pub value_bytes_max: usize,
    /// Replication factor N (copies of each key when the ring has N nodes).
    pub replication_factor: usize,
    pub default_read: Consistency,
    pub default_write: Consistency,
    /// Most siblings kept per key; the oldest beyond it are dropped.
    pub siblings_max: usize,
    /// How long a tombstone is kept before compaction may purge it.
    pub tombstone_grace_ms: u64,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            key_bytes_max: 1024,
            value_bytes_max: 1024 * 1024,
            replication_factor: 3,
            default_read: Consistency::Quorum,
            default_write: Consistency::Quorum,
            siblings_max: 64,
            tombstone_grace_ms: 24 * 3600 * 1000,
        }
    }
}

/// Number of stripes in the per-key lock table.
const KEY_LOCK_STRIPES: usize = 1024;

/// A ringkv node serving the [`Kv`] API from its local store.
pub struct Node<S: LocalStore> {
    inner: Arc<Inner<S>>,
}

impl<S: LocalStore> Clone for Node<S> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

struct Inner<S> {
    id: u64,
    store: S,
    clock: SharedClock,
    config: NodeConfig,
    hlc: Mutex<HlcState>,
    key_locks: Box<[Mutex<()>]>,
    started_ms: u64,
    siblings_dropped: AtomicU64,
}

impl<S: LocalStore> Node<S> {
    pub fn new(id: u64, store: S, clock: SharedClock, config: NodeConfig) -> Self {
        let started_ms = clock.now_ms();
        let key_locks = (0..KEY_LOCK_STRIPES).map(|_| Mutex::new(())).collect();
        Self {
            inner: Arc::new(Inner {
                id,
                store,
                clock,
                config,
                hlc: Mutex::new(HlcState::default()),
                key_locks,
                started_ms,
                siblings_dropped: AtomicU64::new(0),
            }),
        }
    }

    pub fn id(&self) -> u64 {
        self.inner.id
    }

    pub fn store(&self) -> &S {
        &self.inner.store
    }

    pub fn config(&self) -> &NodeConfig {
        &self.inner.config
    }

    /// Makes every acknowledged write durable (shutdown).
    pub fn flush(&self) -> Result<(), KvError> {
        self.inner.store.flush().map_err(store_error)
    }

    /// Runs a write on the executor, or on the blocking pool when the store
    /// may wait for an fsync.
    async fn run_write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner<S>) -> Result<T, KvError> + Send + 'static,
    ) -> Result<T, KvError> {
        if self.inner.store.blocking_writes() {
            let inner = Arc::clone(&self.inner);
            tokio::task::spawn_blocking(move || f(&inner))
                .await
                .map_err(|e| KvError::Storage(format!("write task failed: {e}")))?
        } else {
            f(&self.inner)
        }
    }
}

fn store_error(e: StoreError) -> KvError {
    match e {
        StoreError::ReadOnly(why) => KvError::ReadOnly(why),
        other => KvError::Storage(other.to_string()),
    }
}

impl<S: LocalStore> Inner<S> {
    /// Replicas of a key that exist: N, capped by the nodes in the ring.
    fn replicas(&self) -> usize {
        self.config.replication_factor.clamp(1, 1)
    }

    fn check_level(&self, level: Consistency) -> Result<(), KvError> {
        let n = self.replicas();
        let required = level.required(n);
        if required > n {
            return Err(KvError::Unavailable {
                required,
                answered: n,
                why: format!(
                    "{} needs {required} replicas; the ring holds {n} replica(s) of each key",
                    level.name()
                ),
            });
        }
        Ok(())
    }

    fn check_key(&self, key: &[u8]) -> Result<(), KvError> {
        if key.len() > self.config.key_bytes_max {
            return Err(KvError::KeyTooLarge {
                len: key.len(),
                max: self.config.key_bytes_max,
            });
        }
        Ok(())
    }

    fn lock(&self, key: &[u8]) -> parking_lot::MutexGuard<'_, ()> {
        let h = xxhash64(key) as usize % self.key_locks.len();
        self.key_locks[h].lock()
    }

    fn load(&self, key: &[u8]) -> Result<SiblingSet, KvError> {
        match self.store.get(key).map_err(store_error)? {
            None => Ok(SiblingSet::default()),
            Some(bytes) => SiblingSet::decode(&bytes)
                .map_err(|e| KvError::Storage(format!("record of a key failed to decode: {e}"))),
        }
    }

    fn resolved(set: &SiblingSet, now_ms: u64) -> Option<Sibling> {
        set.live(now_ms)
            .max_by_key(|s| (s.hlc, s.dot.actor))
            .map(|s| to_sibling(s))
    }

    fn read(&self, key: &[u8], opts: &ReadOptions) -> Result<ReadResult, KvError> {
        self.check_key(key)?;
        self.check_level(opts.consistency.unwrap_or(self.config.default_read))?;
        let set = self.load(key)?;
        let now = self.clock.now_ms();
        let siblings = set.live(now).map(to_sibling).collect();
        Ok(ReadResult {
            siblings,
            context: set.vv,
        })
    }

    /// The write path. `value` `None` is a delete.
    fn write(
        &self,
        key: &[u8],
        value: Option<Bytes>,
        opts: &WriteOptions,
    ) -> Result<WriteOutcome, KvError> {
        self.check_key(key)?;
        if let Some(v) = &value
            && v.len() > self.config.value_bytes_max
        {
            return Err(KvError::ValueTooLarge {
                len: v.len(),
                max: self.config.value_bytes_max,
            });
        }
        self.check_level(opts.consistency.unwrap_or(self.config.default_write))?;

        let _guard = self.lock(key);
        let mut set = self.load(key)?;
        let now = self.clock.now_ms();
        let before = Self::resolved(&set, now);
        let met = match opts.condition {
            Condition::Always => true,
            Condition::IfAbsent => before.is_none(),
            Condition::IfPresent => before.is_some(),
        };
        let previous = if opts.return_previous {
            before.clone()
        } else {
            None
        };
        // Deleting what is not there writes nothing (Redis DEL answers 0).
        if !met || (value.is_none() && before.is_none() && opts.context.is_none()) {
            return Ok(WriteOutcome {
                applied: false,
                previous,
            });
        }
        let expires_at_ms = match (value.is_some(), opts.expiry) {
            (false, _) | (true, Expiry::Never) => None,
            (true, Expiry::At(t)) => Some(t),
            (true, Expiry::Keep) => before.as_ref().and_then(|b| b.expires_at_ms),
        };
        let context = opts.context.clone().unwrap_or_else(|| set.vv.clone());
        let hlc = self.hlc.lock().next(now);
        let deleted = value.is_none();
        set.update(&context, self.id, hlc, value, expires_at_ms);
        let dropped = set.bound_siblings(self.config.siblings_max);
        if dropped > 0 {
            self.siblings_dropped
                .fetch_add(dropped as u64, Ordering::Relaxed);
            metrics::counter!("ringkv_siblings_dropped_total").increment(dropped as u64);
        }
        self.store
            .put(key, &set.encode(), set.record_expiry())
            .map_err(store_error)?;
        Ok(WriteOutcome {
            applied: !deleted || before.is_some(),
            previous,
        })
    }

    fn set_expiry(&self, key: &[u8], expiry: Expiry, opts: &WriteOptions) -> Result<bool, KvError> {
        self.check_key(key)?;
        self.check_level(opts.consistency.unwrap_or(self.config.default_write))?;
        let _guard = self.lock(key);
        let mut set = self.load(key)?;
        let now = self.clock.now_ms();
        let Some(current) = Self::resolved(&set, now) else {
            return Ok(false);
        };
        let (value, expires_at_ms) = match expiry {
            Expiry::Keep => return Ok(true),
            Expiry::Never if current.expires_at_ms.is_none() => return Ok(true),
            Expiry::Never => (Some(current.value), None),
            // An expiry in the past deletes the key, as in Redis.
            Expiry::At(t) if t <= now => (None, None),
            Expiry::At(t) => (Some(current.value), Some(t)),
        };
        let context = set.vv.clone();
        let hlc = self.hlc.lock().next(now);
        set.update(&context, self.id, hlc, value, expires_at_ms);
        self.store
            .put(key, &set.encode(), set.record_expiry())
            .map_err(store_error)?;
        Ok(true)
    }

    fn count_keys(&self) -> Result<u64, KvError> {
        let now = self.clock.now_ms();
        let mut live = 0u64;
        let mut corrupt = 0u64;
        self.store
            .for_each(&mut |_, bytes| {
                match SiblingSet::decode(bytes) {
                    Ok(set) if !set.is_dead(now) => live += 1,
                    Ok(_) => {}
                    Err(_) => corrupt += 1,
                }
                true
            })
            .map_err(store_error)?;
        if corrupt > 0 {
            tracing::warn!(corrupt, "records failed to decode while counting keys");
        }
        Ok(live)
    }
}

fn to_sibling(s: &crate::version::StoredSibling) -> Sibling {
    Sibling {
        value: s.value.clone().unwrap_or_default(),
        hlc: s.hlc,
        actor: s.dot.actor,
        expires_at_ms: s.expires_at_ms,
    }
}

fn xxhash64(key: &[u8]) -> u64 {
    // FNV-1a: only for lock striping, never stored.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

impl<S: LocalStore> Kv for Node<S> {
    async fn get(&self, key: Bytes, opts: ReadOptions) -> Result<ReadResult, KvError> {
        self.inner.read(&key, &opts)
    }

    async fn put(
        &self,
        key: Bytes,
        value: Bytes,
        opts: WriteOptions,
    ) -> Result<WriteOutcome, KvError> {
        self.run_write(move |inner| inner.write(&key, Some(value), &opts))
            .await
    }

    async fn delete(&self, key: Bytes, opts: WriteOptions) -> Result<WriteOutcome, KvError> {
        self.run_write(move |inner| inner.write(&key, None, &opts))
            .await
    }

    async fn set_expiry(
        &self,
        key: Bytes,
        expiry: Expiry,
        opts: WriteOptions,
    ) -> Result<bool, KvError> {
        self.run_write(move |inner| inner.set_expiry(&key, expiry, &opts))
            .await
    }

    async fn count_keys(&self) -> Result<u64, KvError> {
        self.inner.count_keys()
    }

    fn info(&self) -> NodeInfo {
        let inner = &self.inner;
        NodeInfo {
            node_id: inner.id,
            version: env!("CARGO_PKG_VERSION"),
            uptime_ms: inner.clock.now_ms().saturating_sub(inner.started_ms),
            replication_factor: inner.replicas(),
            default_read: inner.config.default_read.name(),
            default_write: inner.config.default_write.name(),
            keys_estimate: inner.store.keys_estimate(),
            storage: inner.store.stats(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.inner.clock.now_ms()
    }
}

/// True when a stored record may be purged by compaction at `now_ms`: every
/// sibling is deleted or expired and the newest is older than the grace
/// period.
pub fn record_purgeable(record: &Bytes, now_ms: u64, grace_ms: u64) -> bool {
    match SiblingSet::decode(record) {
        Ok(set) => {
            set.is_dead(now_ms) && hlc_physical_ms(set.max_hlc()).saturating_add(grace_ms) < now_ms
        }
        // Never purge what cannot be read: it is reported, not destroyed.
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::VersionVector;
    use ringkv_env::{Clock, ManualClock};
    use std::collections::BTreeMap;
    use std::time::Duration;

    /// A test double for the engine: a map of records, honouring expiry.
    #[derive(Default)]
    struct MapStore {
        map: Mutex<BTreeMap<Vec<u8>, (Bytes, Option<u64>)>>,
    }

    impl LocalStore for MapStore {
        fn get(&self, key: &[u8]) -> Result<Option<Bytes>, StoreError> {
            Ok(self.map.lock().get(key).map(|(v, _)| v.clone()))
        }
        fn put(&self, key: &[u8], record: &[u8], exp: Option<u64>) -> Result<(), StoreError> {
            self.map
                .lock()
                .insert(key.to_vec(), (Bytes::copy_from_slice(record), exp));
            Ok(())
        }
        fn for_each(&self, visit: &mut dyn FnMut(&[u8], &Bytes) -> bool) -> Result<(), StoreError> {
            for (k, (v, _)) in self.map.lock().iter() {
                if !visit(k, v) {
                    break;
                }
            }
            Ok(())
        }
        fn stats(&self) -> Vec<(String, u64)> {
            Vec::new()
        }
        fn keys_estimate(&self) -> u64 {
            self.map.lock().len() as u64
        }
        fn flush(&self) -> Result<(), StoreError> {
            Ok(())
        }
        fn blocking_writes(&self) -> bool {
            false
        }
    }

    fn node() -> (Node<MapStore>, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(1_700_000_000_000));
        let config = NodeConfig {
            key_bytes_max: 8,
            value_bytes_max: 16,
            siblings_max: 3,
            ..NodeConfig::default()
        };
        let node = Node::new(7, MapStore::default(), clock.clone(), config);
        (node, clock)
    }

    fn k(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    async fn value(node: &Node<MapStore>, key: &str) -> Option<Bytes> {
        let r = node.get(k(key), ReadOptions::default()).await.expect("get");
        r.resolved().map(|s| s.value.clone())
    }

    #[tokio::test]
    async fn put_get_delete_roundtrip() {
        let (node, _) = node();
        assert_eq!(value(&node, "a").await, None);
        let out = node
            .put(k("a"), k("1"), WriteOptions::default())
            .await
            .expect("put");
        assert!(out.applied);
        node.put(k("a"), k("2"), WriteOptions::default())
            .await
            .expect("put");
        assert_eq!(value(&node, "a").await, Some(k("2")));
        // Plain writes supersede what the node sees: no siblings.
        let r = node.get(k("a"), ReadOptions::default()).await.expect("get");
        assert_eq!(r.siblings.len(), 1);
        let del = node
            .delete(k("a"), WriteOptions::default())
            .await
            .expect("delete");
        assert!(del.applied);
        assert_eq!(value(&node, "a").await, None);
        let again = node
            .delete(k("a"), WriteOptions::default())
            .await
            .expect("delete");
        assert!(
            !again.applied,
            "deleting a missing key reports nothing deleted"
        );
        assert_eq!(node.count_keys().await.expect("count"), 0);
    }

    #[tokio::test]
    async fn conditions_and_previous_value() {
        let (node, _) = node();
        let nx = WriteOptions {
            condition: Condition::IfAbsent,
            ..WriteOptions::default()
        };
        assert!(
            node.put(k("a"), k("1"), nx.clone())
                .await
                .expect("nx")
                .applied
        );
        assert!(!node.put(k("a"), k("2"), nx).await.expect("nx").applied);
        assert_eq!(value(&node, "a").await, Some(k("1")));
        let xx = WriteOptions {
            condition: Condition::IfPresent,
            return_previous: true,
            ..WriteOptions::default()
        };
        let out = node.put(k("a"), k("3"), xx.clone()).await.expect("xx");
        assert!(out.applied);
        assert_eq!(out.previous.map(|p| p.value), Some(k("1")));
        assert!(!node.put(k("b"), k("3"), xx).await.expect("xx").applied);
        assert_eq!(value(&node, "b").await, None);
    }

    #[tokio::test]
    async fn expiry_hides_keys_and_can_be_changed() {
        let (node, clock) = node();
        let now = clock.now_ms();
        let opts = WriteOptions {
            expiry: Expiry::At(now + 1_000),
            ..WriteOptions::default()
        };
        node.put(k("a"), k("1"), opts).await.expect("put");
        // KEEPTTL keeps it through an overwrite.
        let keep = WriteOptions {
            expiry: Expiry::Keep,
            ..WriteOptions::default()
        };
        node.put(k("a"), k("2"), keep).await.expect("put");
        let r = node.get(k("a"), ReadOptions::default()).await.expect("get");
        assert_eq!(
            r.resolved().and_then(|s| s.expires_at_ms),
            Some(now + 1_000)
        );
        clock.advance(Duration::from_millis(999));
        assert_eq!(value(&node, "a").await, Some(k("2")));
        clock.advance(Duration::from_millis(1));
        assert_eq!(value(&node, "a").await, None);
        assert!(
            !node
                .set_expiry(k("a"), Expiry::Never, WriteOptions::default())
                .await
                .expect("persist"),
            "an expired key cannot be persisted"
        );
        node.put(k("b"), k("1"), WriteOptions::default())
            .await
            .expect("put");
        let later = clock.now_ms() + 50;
        assert!(
            node.set_expiry(k("b"), Expiry::At(later), WriteOptions::default())
                .await
                .expect("expire")
        );
        let r = node.get(k("b"), ReadOptions::default()).await.expect("get");
        assert_eq!(r.resolved().and_then(|s| s.expires_at_ms), Some(later));
        assert!(
            node.set_expiry(k("b"), Expiry::Never, WriteOptions::default())
                .await
                .expect("persist")
        );
        clock.advance(Duration::from_millis(100));
        assert_eq!(value(&node, "b").await, Some(k("1")));
        // An expiry in the past deletes.
        let past = clock.now_ms() - 1;
        assert!(
            node.set_expiry(k("b"), Expiry::At(past), WriteOptions::default())
                .await
                .expect("expire")
        );
        assert_eq!(value(&node, "b").await, None);
    }

    #[tokio::test]
    async fn stale_contexts_make_siblings_and_a_merged_context_resolves() {
        let (node, _) = node();
        node.put(k("a"), k("base"), WriteOptions::default())
            .await
            .expect("put");
        let seen = node.get(k("a"), ReadOptions::default()).await.expect("get");
        for v in ["x", "y"] {
            let opts = WriteOptions {
                context: Some(seen.context.clone()),
                ..WriteOptions::default()
            };
            node.put(k("a"), k(v), opts).await.expect("put");
        }
        let both = node.get(k("a"), ReadOptions::default()).await.expect("get");
        let mut values: Vec<_> = both.siblings.iter().map(|s| s.value.clone()).collect();
        values.sort();
        assert_eq!(values, vec![k("x"), k("y")]);
        // LWW resolver picks the later write.
        assert_eq!(both.resolved().map(|s| s.value.clone()), Some(k("y")));
        let opts = WriteOptions {
            context: Some(both.context.clone()),
            ..WriteOptions::default()
        };
        node.put(k("a"), k("z"), opts).await.expect("put");
        let one = node.get(k("a"), ReadOptions::default()).await.expect("get");
        assert_eq!(one.siblings.len(), 1);
        assert_eq!(one.siblings[0].value, k("z"));
    }

    #[tokio::test]
    async fn siblings_are_bounded() {
        let (node, _) = node();
        for i in 0..10 {
            let opts = WriteOptions {
                context: Some(VersionVector::new()),
                ..WriteOptions::default()
            };
            node.put(k("a"), k(&i.to_string()), opts)
                .await
                .expect("put");
        }
        let r = node.get(k("a"), ReadOptions::default()).await.expect("get");
        assert_eq!(r.siblings.len(), 3);
        let mut values: Vec<_> = r.siblings.iter().map(|s| s.value.clone()).collect();
        values.sort();
        assert_eq!(values, vec![k("7"), k("8"), k("9")]);
    }

    #[tokio::test]
    async fn limits_and_unreachable_levels_are_errors() {
        let (node, _) = node();
        let err = node
            .put(k("123456789"), k("v"), WriteOptions::default())
            .await
            .expect_err("key too large");
        assert_eq!(err, KvError::KeyTooLarge { len: 9, max: 8 });
        let err = node
            .put(k("a"), Bytes::from(vec![0u8; 17]), WriteOptions::default())
            .await
            .expect_err("value too large");
        assert_eq!(err, KvError::ValueTooLarge { len: 17, max: 16 });
        let two = ReadOptions {
            consistency: Some(Consistency::Count(2)),
        };
        let err = node.get(k("a"), two).await.expect_err("R=2 on one node");
        assert!(
            matches!(
                err,
                KvError::Unavailable {
                    required: 2,
                    answered: 1,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(value(&node, "a").await, None, "nothing was written");
    }

    #[test]
    fn purge_rule_needs_dead_and_past_grace() {
        let mut set = SiblingSet::default();
        set.update(&VersionVector::new(), 1, 1_000 << 16, None, None);
        let rec = Bytes::from(set.encode());
        assert!(!record_purgeable(&rec, 1_500, 1_000));
        assert!(record_purgeable(&rec, 2_001, 1_000));
        let mut live = SiblingSet::default();
        live.update(&VersionVector::new(), 1, 1_000 << 16, Some(k("v")), None);
        assert!(!record_purgeable(
            &Bytes::from(live.encode()),
            u64::MAX / 2,
            0
        ));
        assert!(!record_purgeable(
            &Bytes::from_static(b"junk"),
            u64::MAX / 2,
            0
        ));
    }
}
