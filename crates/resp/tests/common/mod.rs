//! Test support: an in-memory `Kv` with real sibling versioning (the
//! cluster's `SiblingSet`), a server started on an ephemeral loopback port,
//! and a raw RESP client.
//!
//! The in-memory `Kv` exists only to test the protocol layer; the real node
//! is wired in the `ringkv` binary.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use parking_lot_free::Mutex;
use ringkv_cluster::{
    Condition, Consistency, Expiry, Kv, KvError, NodeInfo, ReadOptions, ReadResult, Sibling,
    SiblingSet, VersionVector, WriteOptions, WriteOutcome,
};
use ringkv_resp::frame::{Limits, parse_frame};
use ringkv_resp::{Frame, RespConfig, RespServer, RespStats};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// `std::sync::Mutex` with poisoning folded away: a test that panics while
/// holding it fails anyway.
mod parking_lot_free {
    pub struct Mutex<T>(std::sync::Mutex<T>);

    impl<T> Mutex<T> {
        pub fn new(value: T) -> Self {
            Self(std::sync::Mutex::new(value))
        }

        pub fn lock(&self) -> std::sync::MutexGuard<'_, T> {
            self.0.lock().unwrap_or_else(|e| e.into_inner())
        }
    }
}

pub const KEY_BYTES_MAX: usize = 1024;
pub const VALUE_BYTES_MAX: usize = 64 * 1024;
const ACTOR: u64 = 7;
/// The test clock starts here (2023-11-14) and moves only when told.
pub const START_MS: u64 = 1_700_000_000_000;

/// An in-memory `Kv`: one replica, a manual clock, versioned sibling sets.
pub struct MemKv {
    data: Mutex<HashMap<Bytes, SiblingSet>>,
    now_ms: AtomicU64,
    hlc: AtomicU64,
    /// When set, every write fails with `ReadOnly(reason)`.
    read_only: Mutex<Option<String>>,
    /// Writes to keys starting with `slow` take this long.
    slow_write_ms: AtomicU64,
    /// Calls of `release_writes`, and whether they fail.
    flushes: AtomicU64,
    fail_flush: AtomicBool,
    /// The keys of each `prefetch` call, in order.
    prefetched: Mutex<Vec<Vec<Bytes>>>,
    /// Requests over 50 ms are logged; spikes over 100 ms sampled.
    slow_log: Arc<ringkv_cluster::slowlog::SlowLog>,
}

impl MemKv {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            data: Mutex::new(HashMap::new()),
            now_ms: AtomicU64::new(START_MS),
            hlc: AtomicU64::new(0),
            read_only: Mutex::new(None),
            slow_write_ms: AtomicU64::new(300),
            flushes: AtomicU64::new(0),
            fail_flush: AtomicBool::new(false),
            prefetched: Mutex::new(Vec::new()),
            slow_log: Arc::new(ringkv_cluster::slowlog::SlowLog::new(
                ringkv_cluster::slowlog::SlowLogConfig {
                    slower_than_us: 50_000,
                    max_len: 128,
                    latency_threshold_ms: 100,
                },
            )),
        })
    }

    /// The keys of each prefetch the server asked for, in order.
    pub fn prefetched(&self) -> Vec<Vec<Bytes>> {
        self.prefetched.lock().clone()
    }

    /// How many times the server asked for buffered writes to be flushed.
    pub fn flushes(&self) -> u64 {
        self.flushes.load(Ordering::SeqCst)
    }

    /// Makes every later `release_writes` fail (a failed log write).
    pub fn set_fail_flush(&self, fail: bool) {
        self.fail_flush.store(fail, Ordering::SeqCst);
    }

    pub fn advance(&self, ms: u64) {
        self.now_ms.fetch_add(ms, Ordering::SeqCst);
    }

    pub fn set_read_only(&self, reason: Option<&str>) {
        *self.read_only.lock() = reason.map(str::to_string);
    }

    /// Writes a sibling concurrent with everything stored (as a replica
    /// that missed the other writes would).
    pub fn put_concurrent(&self, key: &[u8], value: &[u8], actor: u64) {
        let hlc = self.hlc.fetch_add(1, Ordering::SeqCst) + 1;
        let mut data = self.data.lock();
        let set = data.entry(Bytes::copy_from_slice(key)).or_default();
        set.update(
            &VersionVector::new(),
            actor,
            hlc,
            Some(Bytes::copy_from_slice(value)),
            None,
        );
    }

    fn check(&self, key: &[u8], level: Option<Consistency>) -> Result<(), KvError> {
        if key.len() > KEY_BYTES_MAX {
            return Err(KvError::KeyTooLarge {
                len: key.len(),
                max: KEY_BYTES_MAX,
            });
        }
        if let Some(level) = level {
            let required = level.required(1);
            if required > 1 {
                return Err(KvError::Unavailable {
                    required,
                    answered: 1,
                    why: format!("{} needs {required} replicas; 1 exists", level.name()),
                });
            }
        }
        Ok(())
    }

    fn check_writable(&self) -> Result<(), KvError> {
        match &*self.read_only.lock() {
            Some(reason) => Err(KvError::ReadOnly(reason.clone())),
            None => Ok(()),
        }
    }

    fn resolved(set: &SiblingSet, now: u64) -> Option<Sibling> {
        set.live(now)
            .max_by_key(|s| (s.hlc, s.dot.actor))
            .map(to_sibling)
    }

    fn write(
        &self,
        key: &[u8],
        value: Option<Bytes>,
        opts: &WriteOptions,
    ) -> Result<WriteOutcome, KvError> {
        self.check(key, opts.consistency)?;
        if let Some(v) = &value
            && v.len() > VALUE_BYTES_MAX
        {
            return Err(KvError::ValueTooLarge {
                len: v.len(),
                max: VALUE_BYTES_MAX,
            });
        }
        self.check_writable()?;
        let now = self.now_ms();
        let mut data = self.data.lock();
        let set = data.entry(Bytes::copy_from_slice(key)).or_default();
        let before = Self::resolved(set, now);
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
        if !met || (value.is_none() && before.is_none() && opts.context.is_none()) {
            return Ok(WriteOutcome {
                applied: false,
                previous,
                integer: None,
            });
        }
        let expires_at_ms = match (value.is_some(), opts.expiry) {
            (false, _) | (true, Expiry::Never) => None,
            (true, Expiry::At(t)) => Some(t),
            (true, Expiry::Keep) => before.as_ref().and_then(|b| b.expires_at_ms),
        };
        let context = opts.context.clone().unwrap_or_else(|| set.vv.clone());
        let hlc = self.hlc.fetch_add(1, Ordering::SeqCst) + 1;
        let deleted = value.is_none();
        // Copy: the bytes are slices of the server's input buffer.
        let value = value.map(|v| Bytes::copy_from_slice(&v));
        set.update(&context, ACTOR, hlc, value, expires_at_ms);
        Ok(WriteOutcome {
            applied: !deleted || before.is_some(),
            previous,
            integer: None,
        })
    }

    async fn maybe_slow(&self, key: &[u8]) {
        if key.starts_with(b"slow") {
            let ms = self.slow_write_ms.load(Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
    }
}

fn to_sibling(s: &ringkv_cluster::causality::StoredSibling) -> Sibling {
    Sibling {
        value: s.value.clone().unwrap_or_default(),
        hlc: s.hlc,
        actor: s.dot.actor,
        expires_at_ms: s.expires_at_ms,
    }
}

impl Kv for MemKv {
    async fn truncate(&self) -> Result<ringkv_cluster::truncate::Truncated, KvError> {
        self.data.lock().clear();
        Ok(ringkv_cluster::truncate::Truncated {
            at: self.now_ms() << 16,
            nodes: vec![ACTOR],
        })
    }

    fn prefetch(&self, keys: &[&[u8]]) {
        (self.prefetched.lock()).push(keys.iter().map(|k| Bytes::copy_from_slice(k)).collect());
    }

    fn release_writes(&self) -> Result<(), KvError> {
        self.flushes.fetch_add(1, Ordering::SeqCst);
        if self.fail_flush.load(Ordering::SeqCst) {
            return Err(KvError::Storage("injected log write failure".into()));
        }
        Ok(())
    }

    async fn get(&self, key: Bytes, opts: ReadOptions) -> Result<ReadResult, KvError> {
        self.check(&key, opts.consistency)?;
        let now = self.now_ms();
        let data = self.data.lock();
        Ok(match data.get(&key) {
            None => ReadResult::default(),
            Some(set) => ReadResult {
                siblings: set.live(now).map(to_sibling).collect(),
                context: set.vv.clone(),
            },
        })
    }

    async fn put(
        &self,
        key: Bytes,
        value: Bytes,
        opts: WriteOptions,
    ) -> Result<WriteOutcome, KvError> {
        self.maybe_slow(&key).await;
        self.write(&key, Some(value), &opts)
    }

    async fn delete(&self, key: Bytes, opts: WriteOptions) -> Result<WriteOutcome, KvError> {
        self.write(&key, None, &opts)
    }

    async fn set_expiry(
        &self,
        key: Bytes,
        expiry: Expiry,
        opts: WriteOptions,
    ) -> Result<bool, KvError> {
        self.check(&key, opts.consistency)?;
        self.check_writable()?;
        let now = self.now_ms();
        let mut data = self.data.lock();
        let Some(set) = data.get_mut(&key) else {
            return Ok(false);
        };
        let Some(current) = Self::resolved(set, now) else {
            return Ok(false);
        };
        let (value, expires_at_ms) = match expiry {
            Expiry::Keep => return Ok(true),
            Expiry::Never => (Some(current.value), None),
            Expiry::At(t) if t <= now => (None, None),
            Expiry::At(t) => (Some(current.value), Some(t)),
        };
        let context = set.vv.clone();
        let hlc = self.hlc.fetch_add(1, Ordering::SeqCst) + 1;
        set.update(&context, ACTOR, hlc, value, expires_at_ms);
        Ok(true)
    }

    /// Keys in token order, `count` per page, the cursor a token.
    async fn scan(
        &self,
        cursor: u64,
        count: usize,
        _opts: ReadOptions,
    ) -> Result<ringkv_cluster::ScanPage, KvError> {
        use ringkv_cluster::ring::token_of;
        let now = self.now_ms.load(Ordering::SeqCst);
        let mut live: Vec<(u64, Bytes)> = self
            .data
            .lock()
            .iter()
            .filter(|(k, s)| !s.is_dead(now) && token_of(k) >= cursor)
            .map(|(k, _)| (token_of(k), k.clone()))
            .collect();
        live.sort();
        let next = if live.len() > count {
            live[count - 1].0 + 1
        } else {
            0
        };
        live.truncate(count);
        Ok(ringkv_cluster::ScanPage {
            keys: live
                .into_iter()
                .map(|(_, key)| ringkv_cluster::ScannedKey {
                    kind: "string",
                    key,
                    value_bytes: 1,
                    expires_at_ms: None,
                    siblings: 1,
                })
                .collect(),
            next,
        })
    }

    async fn count_keys(&self) -> Result<u64, KvError> {
        let now = self.now_ms();
        Ok(self
            .data
            .lock()
            .values()
            .filter(|s| !s.is_dead(now))
            .count() as u64)
    }

    fn info(&self) -> NodeInfo {
        let live = self.data.lock().len() as u64;
        NodeInfo {
            node_id: 0xabcdef,
            version: "0.1.0-test",
            uptime_ms: 5_000,
            replication_factor: 1,
            default_read: "QUORUM".into(),
            default_write: "QUORUM".into(),
            keys: Some(ringkv_cluster::api::KeyCount {
                live,
                ..Default::default()
            }),
            cluster_keys: Some(ringkv_cluster::ClusterKeys {
                keys: live,
                exact: true,
                nodes: 1,
                replicas: 1,
            }),
            storage: vec![ringkv_cluster::store::StoreFigure::gauge(
                "memtable_bytes",
                42.0,
                "test",
            )],
        }
    }

    fn now_ms(&self) -> u64 {
        self.now_ms.load(Ordering::SeqCst)
    }

    fn slow_log(&self) -> Option<Arc<ringkv_cluster::slowlog::SlowLog>> {
        Some(Arc::clone(&self.slow_log))
    }

    /// This node (0xabcdef) and two peers: one up, one down, and a node
    /// that left (never shown).
    fn cluster(&self) -> ringkv_cluster::api::ClusterView {
        use ringkv_cluster::api::{ClusterView, NodeStatus, NodeView};
        let node = |id: u64, port: u16, alive: bool, status: NodeStatus| NodeView {
            id,
            resp_addr: format!("0.0.0.0:{port}"),
            cluster_addr: format!("10.0.0.{}:7381", id % 250),
            alive,
            status,
            ..NodeView::default()
        };
        ClusterView {
            self_id: 0xabcdef,
            nodes: vec![
                node(0xabcdef, 7379, true, NodeStatus::Normal),
                node(2, 7389, true, NodeStatus::Normal),
                node(3, 7399, false, NodeStatus::Normal),
                node(4, 7409, false, NodeStatus::Left),
            ],
            ..ClusterView::default()
        }
    }
}

/// A RESP server on 127.0.0.1:0 over a `MemKv`.
pub struct TestServer {
    pub addr: SocketAddr,
    pub kv: Arc<MemKv>,
    pub stats: Arc<RespStats>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<io::Result<()>>>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(RespConfig::default()).await
    }

    pub async fn start_with(config: RespConfig) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let kv = MemKv::new();
        let server = RespServer::new(listener, Arc::clone(&kv), config).expect("valid config");
        let addr = server.local_addr().expect("addr");
        let stats = server.stats();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async move {
            let _ = rx.await;
        }));
        Self {
            addr,
            kv,
            stats,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// Signals shutdown and waits for the server to return.
    pub async fn stop(&mut self) -> io::Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let task = self.task.take().expect("server running");
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("server stops within 10 s")
            .expect("server task did not panic")
    }

    pub fn url(&self) -> String {
        format!("redis://{}/", self.addr)
    }

    pub async fn redis(&self) -> redis::aio::MultiplexedConnection {
        self.redis_url(&self.url()).await
    }

    pub async fn redis_resp3(&self) -> redis::aio::MultiplexedConnection {
        self.redis_url(&format!("{}?protocol=resp3", self.url()))
            .await
    }

    async fn redis_url(&self, url: &str) -> redis::aio::MultiplexedConnection {
        redis::Client::open(url)
            .expect("url")
            .get_multiplexed_async_connection()
            .await
            .expect("connect")
    }

    pub async fn raw(&self) -> RawClient {
        RawClient::connect(self.addr).await
    }
}

/// A client that writes bytes and reads RESP replies.
pub struct RawClient {
    pub stream: TcpStream,
    buf: BytesMut,
}

pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

impl RawClient {
    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        Self {
            stream,
            buf: BytesMut::new(),
        }
    }

    pub async fn try_send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes).await
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// Sends a command as an array of bulk strings and reads one reply.
    pub async fn cmd(&mut self, args: &[&[u8]]) -> Frame {
        let mut out = BytesMut::new();
        ringkv_resp::frame::encode_request(args, &mut out);
        self.send(&out).await;
        self.read().await
    }

    /// Reads one reply, failing the test on timeout or EOF.
    pub async fn read(&mut self) -> Frame {
        self.try_read()
            .await
            .expect("connection open")
            .expect("a reply")
    }

    /// Reads one reply and also returns its bytes as they came on the wire.
    pub async fn read_raw(&mut self) -> (Bytes, Frame) {
        let limits = Limits::default();
        tokio::time::timeout(READ_TIMEOUT, async {
            loop {
                let before = self.buf.clone();
                if let Some(frame) =
                    parse_frame(&mut self.buf, &limits).expect("server speaks RESP")
                {
                    let used = before.len() - self.buf.len();
                    return (before.freeze().slice(..used), frame);
                }
                let n = self.stream.read_buf(&mut self.buf).await.expect("read");
                assert!(n > 0, "connection closed before a whole reply");
            }
        })
        .await
        .expect("reply within the read timeout")
    }

    /// One reply, `Ok(None)` on EOF before a whole reply, `Err` on a reset.
    pub async fn try_read(&mut self) -> io::Result<Option<Frame>> {
        let limits = Limits {
            nesting_depth_max: 8,
            ..Limits::default()
        };
        tokio::time::timeout(READ_TIMEOUT, async {
            loop {
                if let Some(frame) =
                    parse_frame(&mut self.buf, &limits).expect("server speaks RESP")
                {
                    return Ok(Some(frame));
                }
                if self.stream.read_buf(&mut self.buf).await? == 0 {
                    return Ok(None);
                }
            }
        })
        .await
        .expect("reply within the read timeout")
    }

    /// Reads until the server closes; returns what came before the close.
    pub async fn read_until_closed(&mut self) -> Vec<Frame> {
        let mut frames = Vec::new();
        while let Ok(Some(frame)) = self.try_read().await {
            frames.push(frame);
        }
        frames
    }

    /// True when the server has closed the connection (EOF or reset)
    /// within the read timeout, without sending anything more.
    pub async fn is_closed(&mut self) -> bool {
        matches!(self.try_read().await, Ok(None) | Err(_))
    }
}

pub fn bulk(text: &str) -> Frame {
    Frame::Bulk(Bytes::copy_from_slice(text.as_bytes()))
}

pub fn simple(text: &str) -> Frame {
    Frame::Simple(Bytes::copy_from_slice(text.as_bytes()))
}

pub fn error(text: &str) -> Frame {
    Frame::Error(Bytes::copy_from_slice(text.as_bytes()))
}

pub fn error_text(frame: &Frame) -> String {
    match frame {
        Frame::Error(text) => String::from_utf8_lossy(text).into_owned(),
        other => panic!("expected an error reply, got {other:?}"),
    }
}
