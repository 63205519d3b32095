//! The TCP transport: one multiplexed connection per peer, a writer task
//! per connection that batches frames into one system call, and the server
//! side that answers peers' requests.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use parking_lot::Mutex;
use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};

use super::message::{self, ErrorDetail, Hello, Kind, Request, Response};
use super::tls::{self, NodeTls};
use super::{BoxFut, Handled, Handler, Peer, Transport, TransportError};
use crate::det::HashMap;

/// How the cluster port authenticates peers.
#[derive(Debug, Clone, Default)]
pub enum Security {
    /// Plaintext: a peer's hello is taken at its word. Only for
    /// `--insecure` and in-process tests.
    #[default]
    Plaintext,
    /// Accepts TLS and plaintext (told apart by the first byte: a TLS
    /// record starts with 0x16, a frame's length with 0x00), dials TLS and
    /// falls back to plaintext when the handshake fails: the middle step of
    /// a rolling restart from plaintext to mutual TLS. A peer that came in
    /// plaintext is not authenticated.
    Optional(Arc<NodeTls>),
    /// Mutual TLS only: every peer proves the id it claims.
    Mutual(Arc<NodeTls>),
}

impl Security {
    pub fn tls(&self) -> Option<&Arc<NodeTls>> {
        match self {
            Security::Plaintext => None,
            Security::Optional(tls) | Security::Mutual(tls) => Some(tls),
        }
    }
}

/// Limits and timeouts of the TCP transport.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// Cluster name both sides must agree on in the hello.
    pub cluster: String,
    pub security: Security,
    /// Largest frame accepted or sent, in bytes.
    pub frame_bytes_max: usize,
    /// Largest first frame (the hello) accepted, in bytes: nothing bigger
    /// is buffered for a peer not yet known.
    pub hello_frame_bytes_max: usize,
    /// Requests queued for one peer before callers are refused.
    pub peer_queue_max: usize,
    /// Requests from one connection handled at once.
    pub inflight_per_connection_max: usize,
    /// Inbound connections at once, counted from the end of the hello:
    /// a caller that cannot complete a handshake never holds one.
    pub connections_max: usize,
    /// Inbound connections in their handshake (TLS and hello) at once.
    pub handshakes_max: usize,
    /// More handshake slots, only for hosts (IP addresses) a peer has
    /// completed a handshake from before: strangers that hold every slot
    /// of `handshakes_max` cannot keep known peers from reconnecting.
    pub reserved_handshakes_max: usize,
    pub connect_timeout_ms: u64,
    /// Time for the TLS handshake and the hello together.
    pub hello_timeout_ms: u64,
    /// An inbound connection with nothing in flight that sends nothing for
    /// this long is closed; the client side drops its own connections idle
    /// for half of it, so that it is always the one to close first.
    pub idle_timeout_ms: u64,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            cluster: "ringkv".into(),
            security: Security::Plaintext,
            frame_bytes_max: 8 * 1024 * 1024,
            hello_frame_bytes_max: HELLO_FRAME_BYTES_MAX,
            peer_queue_max: 4096,
            inflight_per_connection_max: 1024,
            connections_max: 1024,
            handshakes_max: 64,
            reserved_handshakes_max: 16,
            connect_timeout_ms: 2_000,
            hello_timeout_ms: 5_000,
            idle_timeout_ms: 300_000,
        }
    }
}

/// The default of [`TransportConfig::hello_frame_bytes_max`]; a hello is a
/// cluster name and an id.
pub const HELLO_FRAME_BYTES_MAX: usize = 4096;

fn codec(frame_bytes_max: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_length(4)
        .max_frame_length(frame_bytes_max)
        .new_codec()
}

type BoxRead = Box<dyn AsyncRead + Send + Unpin>;
type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;
type Reader = FramedRead<BoxRead, LengthDelimitedCodec>;
type Writer = FramedWrite<BoxWrite, LengthDelimitedCodec>;

/// A connection after its TLS handshake (if any), before the hello.
struct Opened {
    reader: Reader,
    writer: Writer,
    /// The peer's verified certificate, when the connection is TLS.
    cert: Option<CertificateDer<'static>>,
}

impl Opened {
    /// Frames over `read`/`write`; the reader takes only a first frame of
    /// `hello_frame_bytes_max` until [`Opened::after_hello`].
    fn new(
        read: BoxRead,
        write: BoxWrite,
        cert: Option<CertificateDer<'static>>,
        config: &TransportConfig,
    ) -> Self {
        Self {
            reader: FramedRead::new(read, codec(config.hello_frame_bytes_max)),
            writer: FramedWrite::new(write, codec(config.frame_bytes_max)),
            cert,
        }
    }

    fn plain(stream: TcpStream, config: &TransportConfig) -> Self {
        let (r, w) = stream.into_split();
        Self::new(Box::new(r), Box::new(w), None, config)
    }

    fn tls<S>(
        stream: S,
        cert: Option<CertificateDer<'static>>,
        config: &TransportConfig,
    ) -> Result<Self, TransportError>
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let cert =
            cert.ok_or_else(|| TransportError::Protocol("the peer sent no certificate".into()))?;
        let (r, w) = tokio::io::split(stream);
        Ok(Self::new(Box::new(r), Box::new(w), Some(cert), config))
    }

    /// Checks that the id a peer claims in its hello is the one its
    /// certificate names (a plaintext peer is taken at its word).
    fn check_identity(&self, claimed: u64) -> Result<(), TransportError> {
        let Some(cert) = &self.cert else {
            return Ok(());
        };
        let named = tls::cert_node_id(cert)
            .map_err(|e| TransportError::Protocol(format!("peer certificate: {e}")))?;
        if named != claimed {
            return Err(TransportError::Protocol(format!(
                "a peer claimed node {} with the certificate of node {}",
                crate::id::display(claimed),
                crate::id::display(named)
            )));
        }
        Ok(())
    }

    fn after_hello(&mut self, config: &TransportConfig) {
        self.reader
            .decoder_mut()
            .set_max_frame_length(config.frame_bytes_max);
    }
}

/// Reads the first frame, which must be a hello of `cluster`.
async fn read_hello(reader: &mut Reader, cluster: &str) -> Result<Hello, TransportError> {
    let protocol = |e: &dyn std::fmt::Display| TransportError::Protocol(e.to_string());
    let first = reader
        .next()
        .await
        .ok_or(TransportError::Closed)?
        .map_err(|e| protocol(&e))?;
    let (kind, _, body) = message::decode_header(first.freeze()).map_err(|e| protocol(&e))?;
    if kind != Kind::Hello {
        return Err(TransportError::Protocol("expected a hello".into()));
    }
    let hello: Hello = message::decode_body(&body).map_err(|e| protocol(&e))?;
    if hello.cluster != cluster {
        return Err(TransportError::Protocol(format!(
            "a peer of cluster {:?} refused (this is {cluster:?})",
            hello.cluster
        )));
    }
    Ok(hello)
}

async fn send_hello(writer: &mut Writer, hello: &Hello) -> Result<(), TransportError> {
    let frame = message::encode(Kind::Hello, 0, hello)
        .map_err(|e| TransportError::Protocol(e.to_string()))?;
    writer
        .send(frame)
        .await
        .map_err(|e| TransportError::Unreachable(e.to_string()))
}

fn first_cert(certs: Option<&[CertificateDer<'_>]>) -> Option<CertificateDer<'static>> {
    certs
        .and_then(|c| c.first())
        .map(|c| c.clone().into_owned())
}

/// The first byte of a TLS handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Frames one batch may gather before it is written.
const BATCH_FRAMES_MAX: usize = 256;

/// Writes queued frames until the queue closes or a write fails.
///
/// Frames are written in batches, one system call each: the writer takes
/// what is queued, yields once so that tasks about to queue a frame (other
/// requests being handled on this thread) can, takes what they queued, then
/// writes. On loopback a write also runs the receiver's TCP processing, so
/// fewer, larger writes save CPU on both sides; the yield costs one task
/// switch, not a timer.
///
/// `before` runs once per batch, after its frames were taken from the queue
/// and before any of them is written; an error ends the connection without
/// writing them.
async fn write_frames(
    mut writer: Writer,
    mut rx: mpsc::Receiver<Bytes>,
    before: impl Fn() -> Result<(), crate::api::KvError>,
) {
    let mut batch: Vec<Bytes> = Vec::new();
    while let Some(frame) = rx.recv().await {
        batch.push(frame);
        for round in 0..2 {
            while batch.len() < BATCH_FRAMES_MAX {
                let Ok(more) = rx.try_recv() else { break };
                batch.push(more);
            }
            if round == 0 && batch.len() < BATCH_FRAMES_MAX {
                tokio::task::yield_now().await;
            }
        }
        if let Err(why) = before() {
            tracing::warn!(error = %why, "dropping a connection: its answers cannot be sent");
            return;
        }
        for frame in batch.drain(..) {
            if writer.feed(frame).await.is_err() {
                return;
            }
        }
        if SinkExt::<Bytes>::flush(&mut writer).await.is_err() {
            return;
        }
    }
}

/// One multiplexed client connection to a peer.
struct Conn {
    /// The node at the other end, as its hello (and certificate) say.
    remote_id: u64,
    tx: mpsc::Sender<Bytes>,
    pending: Mutex<HashMap<u64, oneshot::Sender<Response>>>,
    next_id: AtomicU64,
    alive: AtomicBool,
    /// When a call last used it, in ms since the transport's `started`.
    last_used_ms: AtomicU64,
}

/// One peer's connection, created on first use and replaced when it dies;
/// the async lock keeps two callers from connecting at once.
type ConnSlot = Arc<tokio::sync::Mutex<Option<Arc<Conn>>>>;

/// The TCP transport's client side.
pub struct TcpTransport {
    self_id: u64,
    config: TransportConfig,
    conns: Mutex<HashMap<String, ConnSlot>>,
    started: std::time::Instant,
}

impl TcpTransport {
    pub fn new(self_id: u64, config: TransportConfig) -> Self {
        Self {
            self_id,
            config,
            conns: Mutex::new(HashMap::default()),
            started: std::time::Instant::now(),
        }
    }

    async fn conn(&self, addr: &str) -> Result<Arc<Conn>, TransportError> {
        let slot = {
            let mut conns = self.conns.lock();
            Arc::clone(conns.entry(addr.to_string()).or_default())
        };
        let mut guard = slot.lock().await;
        if let Some(c) = guard.as_ref()
            && c.alive.load(Ordering::Acquire)
            && self
                .now_ms()
                .saturating_sub(c.last_used_ms.load(Ordering::Relaxed))
                < self.config.idle_timeout_ms / 2
        {
            return Ok(Arc::clone(c));
        }
        let conn = self.connect(addr).await?;
        *guard = Some(Arc::clone(&conn));
        Ok(conn)
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    async fn dial(&self, addr: &str) -> Result<TcpStream, TransportError> {
        let connect = TcpStream::connect(addr);
        let stream = tokio::time::timeout(
            Duration::from_millis(self.config.connect_timeout_ms),
            connect,
        )
        .await
        .map_err(|_| TransportError::Unreachable(format!("{addr}: connect timed out")))?
        .map_err(|e| TransportError::Unreachable(format!("{addr}: {e}")))?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    /// Dials `addr` and completes the TLS handshake.
    async fn dial_tls(&self, tls: &NodeTls, addr: &str) -> Result<Opened, TransportError> {
        let stream = self.dial(addr).await?;
        let connector = tokio_rustls::TlsConnector::from(tls.client_config());
        let stream = tokio::time::timeout(
            Duration::from_millis(self.config.hello_timeout_ms),
            connector.connect(NodeTls::dial_name(), stream),
        )
        .await
        .map_err(|_| TransportError::Unreachable(format!("{addr}: TLS handshake timed out")))?
        .map_err(|e| TransportError::Protocol(format!("{addr}: TLS handshake: {e}")))?;
        let cert = first_cert(stream.get_ref().1.peer_certificates());
        Opened::tls(stream, cert, &self.config)
    }

    async fn open(&self, addr: &str) -> Result<Opened, TransportError> {
        match &self.config.security {
            Security::Plaintext => Ok(Opened::plain(self.dial(addr).await?, &self.config)),
            Security::Mutual(tls) => self.dial_tls(tls, addr).await,
            Security::Optional(tls) => match self.dial_tls(tls, addr).await {
                Err(TransportError::Protocol(why)) => {
                    tracing::debug!(%addr, %why, "TLS refused; dialing in plaintext");
                    Ok(Opened::plain(self.dial(addr).await?, &self.config))
                }
                other => other,
            },
        }
    }

    async fn connect(&self, addr: &str) -> Result<Arc<Conn>, TransportError> {
        let mut opened = self.open(addr).await?;
        let hello = Hello {
            cluster: self.config.cluster.clone(),
            node_id: self.self_id,
        };
        send_hello(&mut opened.writer, &hello).await?;
        let their = tokio::time::timeout(
            Duration::from_millis(self.config.hello_timeout_ms),
            read_hello(&mut opened.reader, &self.config.cluster),
        )
        .await
        .map_err(|_| TransportError::Unreachable(format!("{addr}: no hello")))?
        .map_err(|e| match e {
            TransportError::Closed => {
                TransportError::Unreachable(format!("{addr}: closed during hello"))
            }
            e => e,
        })?;
        opened.check_identity(their.node_id)?;
        opened.after_hello(&self.config);
        let Opened {
            mut reader, writer, ..
        } = opened;

        let (tx, rx) = mpsc::channel::<Bytes>(self.config.peer_queue_max);
        let conn = Arc::new(Conn {
            remote_id: their.node_id,
            tx,
            pending: Mutex::new(HashMap::default()),
            next_id: AtomicU64::new(1),
            alive: AtomicBool::new(true),
            last_used_ms: AtomicU64::new(self.now_ms()),
        });
        let wconn = Arc::clone(&conn);
        tokio::spawn(async move {
            write_frames(writer, rx, || Ok(())).await;
            wconn.alive.store(false, Ordering::Release);
        });
        // Reader: hands each response to its caller.
        let rconn = Arc::clone(&conn);
        tokio::spawn(async move {
            while let Some(Ok(payload)) = reader.next().await {
                let Ok((Kind::Response, id, body)) = message::decode_header(payload.freeze())
                else {
                    break;
                };
                let Ok(resp) = message::decode_response(&body) else {
                    break;
                };
                if let Some(tx) = rconn.pending.lock().remove(&id) {
                    let _ = tx.send(resp);
                }
            }
            rconn.alive.store(false, Ordering::Release);
            // Dropping the senders wakes every waiting caller with Closed.
            rconn.pending.lock().clear();
        });
        Ok(conn)
    }
}

impl Transport for Arc<TcpTransport> {
    fn call(
        &self,
        peer: &Peer,
        req: Request,
        timeout: Duration,
    ) -> BoxFut<Result<Response, TransportError>> {
        let this = Arc::clone(self);
        let addr = peer.addr.clone();
        let peer_id = peer.id;
        Box::pin(async move {
            let work = async {
                let conn = this.conn(&addr).await?;
                // The node at an address may have changed (an address
                // reused): a request meant for one node never goes to
                // another.
                if peer_id != 0 && conn.remote_id != peer_id {
                    return Err(TransportError::Unreachable(format!(
                        "{addr} is node {}, not {}",
                        crate::id::display(conn.remote_id),
                        crate::id::display(peer_id)
                    )));
                }
                conn.last_used_ms.store(this.now_ms(), Ordering::Relaxed);
                let id = conn.next_id.fetch_add(1, Ordering::Relaxed);
                let frame = message::encode_request(id, &req)
                    .map_err(|e| TransportError::Protocol(e.to_string()))?;
                if frame.len() > this.config.frame_bytes_max {
                    return Err(TransportError::Protocol(format!(
                        "request of {} bytes exceeds frame_bytes_max",
                        frame.len()
                    )));
                }
                let (tx, rx) = oneshot::channel();
                conn.pending.lock().insert(id, tx);
                let guard = PendingGuard {
                    conn: Arc::clone(&conn),
                    id,
                };
                conn.tx.try_send(frame).map_err(|e| match e {
                    mpsc::error::TrySendError::Full(_) => TransportError::Overloaded,
                    mpsc::error::TrySendError::Closed(_) => TransportError::Closed,
                })?;
                let resp = rx.await.map_err(|_| TransportError::Closed)?;
                drop(guard);
                Ok(resp)
            };
            tokio::time::timeout(timeout, work)
                .await
                .map_err(|_| TransportError::Timeout)?
        })
    }
}

/// Hosts peers have completed a handshake from, at most this many (the
/// first ones are kept).
const KNOWN_HOSTS_MAX: usize = 4096;

/// The IP addresses peers have completed a handshake (and hello) from:
/// they may use the reserved handshake slots.
#[derive(Default)]
struct KnownHosts(parking_lot::Mutex<crate::det::HashSet<std::net::IpAddr>>);

impl KnownHosts {
    fn contains(&self, ip: std::net::IpAddr) -> bool {
        self.0.lock().contains(&ip)
    }

    fn insert(&self, ip: std::net::IpAddr) {
        let mut hosts = self.0.lock();
        if hosts.len() < KNOWN_HOSTS_MAX {
            hosts.insert(ip);
        }
    }
}

/// Removes a pending entry when a call is abandoned (timeout, error).
struct PendingGuard {
    conn: Arc<Conn>,
    id: u64,
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        self.conn.pending.lock().remove(&self.id);
    }
}

/// Serves peers' requests on `listener` until `shutdown` resolves.
pub async fn serve_tcp(
    listener: TcpListener,
    self_id: u64,
    config: TransportConfig,
    handler: Arc<dyn Handler>,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let handshakes = Arc::new(Semaphore::new(config.handshakes_max));
    let reserved = Arc::new(Semaphore::new(config.reserved_handshakes_max));
    let known = Arc::new(KnownHosts::default());
    let connections = Arc::new(Semaphore::new(config.connections_max));
    let config = Arc::new(config);
    tokio::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            // Shutdown first, and a fixed order: a simulation replays.
            biased;
            _ = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "cluster accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // A known host takes a reserved slot when the common ones are held.
        let handshake = Arc::clone(&handshakes).try_acquire_owned().or_else(|_| {
            if known.contains(remote.ip()) {
                Arc::clone(&reserved).try_acquire_owned()
            } else {
                Err(tokio::sync::TryAcquireError::NoPermits)
            }
        });
        let Ok(handshake) = handshake else {
            metrics::counter!("ringkv_cluster_connections_refused_total", "reason" => "handshakes_max")
                .increment(1);
            static GATE: ringkv_env::log_every::LogEvery =
                ringkv_env::log_every::LogEvery::new(10_000);
            if let Some(held) = GATE.admit() {
                tracing::warn!(%remote, held_back = held, "cluster connection refused: handshakes_max reached");
            }
            continue;
        };
        let handler = Arc::clone(&handler);
        let config = Arc::clone(&config);
        let connections = Arc::clone(&connections);
        let known = Arc::clone(&known);
        tokio::spawn(async move {
            let greeted = tokio::time::timeout(
                Duration::from_millis(config.hello_timeout_ms),
                accept(stream, self_id, &config),
            )
            .await
            .unwrap_or(Err(TransportError::Timeout));
            drop(handshake);
            let (opened, from) = match greeted {
                Ok(ok) => ok,
                Err(e) => {
                    metrics::counter!("ringkv_cluster_connections_refused_total", "reason" => "handshake")
                        .increment(1);
                    static GATE: ringkv_env::log_every::LogEvery =
                        ringkv_env::log_every::LogEvery::new(10_000);
                    if let Some(held) = GATE.admit() {
                        tracing::warn!(%remote, error = %e, held_back = held, "cluster handshake failed");
                    }
                    return;
                }
            };
            known.insert(remote.ip());
            let Ok(permit) = connections.try_acquire_owned() else {
                metrics::counter!("ringkv_cluster_connections_refused_total", "reason" => "connections_max")
                    .increment(1);
                static GATE: ringkv_env::log_every::LogEvery =
                    ringkv_env::log_every::LogEvery::new(10_000);
                if let Some(held) = GATE.admit() {
                    tracing::warn!(%remote, held_back = held, "cluster connection refused: connections_max reached");
                }
                return;
            };
            if let Err(e) = serve_conn(opened, from, &config, handler).await {
                tracing::debug!(%remote, error = %e, "cluster connection ended");
            }
            drop(permit);
        });
    }
}

/// The server's side of a connection's opening: the TLS handshake the
/// security mode asks for, then the hello, whose id the peer's certificate
/// must name. Returns the connection and the peer's id once this node's
/// hello is sent.
async fn accept(
    stream: TcpStream,
    self_id: u64,
    config: &TransportConfig,
) -> Result<(Opened, u64), TransportError> {
    let _ = stream.set_nodelay(true);
    let tls = match &config.security {
        Security::Plaintext => None,
        Security::Mutual(tls) => Some(tls),
        Security::Optional(tls) => {
            let mut first = [0u8; 1];
            stream
                .peek(&mut first)
                .await
                .map_err(|e| TransportError::Protocol(e.to_string()))?;
            (first[0] == TLS_HANDSHAKE_RECORD).then_some(tls)
        }
    };
    let mut opened = match tls {
        None => Opened::plain(stream, config),
        Some(tls) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.server_config());
            let stream = acceptor
                .accept(stream)
                .await
                .map_err(|e| TransportError::Protocol(format!("TLS handshake: {e}")))?;
            let cert = first_cert(stream.get_ref().1.peer_certificates());
            Opened::tls(stream, cert, config)?
        }
    };
    let hello = read_hello(&mut opened.reader, &config.cluster).await?;
    opened.check_identity(hello.node_id)?;
    let ours = Hello {
        cluster: config.cluster.clone(),
        node_id: self_id,
    };
    send_hello(&mut opened.writer, &ours).await?;
    opened.after_hello(config);
    Ok((opened, hello.node_id))
}

async fn serve_conn(
    opened: Opened,
    from: u64,
    config: &TransportConfig,
    handler: Arc<dyn Handler>,
) -> Result<(), TransportError> {
    let Opened {
        mut reader, writer, ..
    } = opened;
    let (tx, rx) = mpsc::channel::<Bytes>(config.inflight_per_connection_max);
    let replier = Arc::clone(&handler);
    let write_task = tokio::spawn(write_frames(writer, rx, move || replier.before_reply()));
    let inflight = Arc::new(Semaphore::new(config.inflight_per_connection_max));
    let idle = Duration::from_millis(config.idle_timeout_ms);
    loop {
        let next = match tokio::time::timeout(idle, reader.next()).await {
            Ok(Some(next)) => next,
            Ok(None) => break,
            Err(_) if inflight.available_permits() == config.inflight_per_connection_max => {
                tracing::debug!(peer = %crate::id::display(from), "closing an idle cluster connection");
                break;
            }
            Err(_) => continue,
        };
        let payload = next.map_err(|e| TransportError::Protocol(e.to_string()))?;
        let (kind, id, body) = message::decode_header(payload.freeze())
            .map_err(|e| TransportError::Protocol(e.to_string()))?;
        if kind != Kind::Request {
            return Err(TransportError::Protocol("expected a request".into()));
        }
        let resp_tx = tx.clone();
        let req = match message::decode_request(&body) {
            Ok(req) => req,
            Err(e) => {
                let resp = Response::error(ErrorDetail::InvalidArgument(e.to_string()));
                if let Ok(frame) = message::encode_response(id, &resp) {
                    let _ = resp_tx.send(frame).await;
                }
                continue;
            }
        };
        let req = match handler.handle_now(from, req) {
            Handled::Now(resp) => {
                if let Ok(frame) = message::encode_response(id, &resp)
                    && resp_tx.send(frame).await.is_err()
                {
                    break;
                }
                continue;
            }
            Handled::Later(req) => req,
        };
        // Backpressure: a connection with too many requests in flight stops
        // being read until some finish.
        let permit = Arc::clone(&inflight)
            .acquire_owned()
            .await
            .map_err(|_| TransportError::Closed)?;
        let handler = Arc::clone(&handler);
        tokio::spawn(async move {
            let resp = handler.handle(from, req).await;
            if let Ok(frame) = message::encode_response(id, &resp) {
                let _ = resp_tx.send(frame).await;
            }
            drop(permit);
        });
    }
    drop(tx);
    let _ = write_task.await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo(u64);

    impl Handler for Echo {
        fn handle(&self, from: u64, req: Request) -> BoxFut<Response> {
            let me = self.0;
            Box::pin(async move {
                match req {
                    Request::Ping => Response::Pong,
                    Request::Read { key } => {
                        let mut v = key.to_vec();
                        v.extend_from_slice(format!(":{from}->{me}").as_bytes());
                        Response::Record(Some(Bytes::from(v)))
                    }
                    _ => Response::error(ErrorDetail::InvalidArgument("unexpected".into())),
                }
            })
        }
    }

    #[tokio::test]
    async fn tcp_multiplexes_many_requests_on_one_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let server = tokio::spawn(serve_tcp(
            listener,
            2,
            TransportConfig::default(),
            Arc::new(Echo(2)),
            async {
                let _ = stop_rx.await;
            },
        ));
        let t = Arc::new(TcpTransport::new(1, TransportConfig::default()));
        let peer = Peer { id: 2, addr };
        let calls = (0..200).map(|i| {
            let t = Arc::clone(&t);
            let peer = peer.clone();
            async move {
                let key = Bytes::from(format!("k{i}"));
                let r = t
                    .call(&peer, Request::Read { key }, Duration::from_secs(5))
                    .await
                    .expect("call");
                (i, r)
            }
        });
        for (i, r) in futures::future::join_all(calls).await {
            assert_eq!(r, Response::Record(Some(Bytes::from(format!("k{i}:1->2")))));
        }
        assert_eq!(t.conns.lock().len(), 1, "one connection per peer");
        let _ = stop_tx.send(());
        server.await.expect("join").expect("serve");
    }

    /// Counts answers produced and answers cleared by `before_reply`;
    /// fails `before_reply` when told.
    struct Gated {
        produced: AtomicU64,
        cleared: AtomicU64,
        fail: AtomicBool,
    }

    impl Handler for Arc<Gated> {
        fn handle(&self, _from: u64, _req: Request) -> BoxFut<Response> {
            let me = Arc::clone(self);
            Box::pin(async move {
                let n = me.produced.fetch_add(1, Ordering::SeqCst) + 1;
                Response::Record(Some(Bytes::from(n.to_string())))
            })
        }

        fn before_reply(&self) -> Result<(), crate::api::KvError> {
            if self.fail.load(Ordering::SeqCst) {
                return Err(crate::api::KvError::Storage("injected".into()));
            }
            self.cleared
                .store(self.produced.load(Ordering::SeqCst), Ordering::SeqCst);
            Ok(())
        }
    }

    #[tokio::test]
    async fn answers_leave_only_after_before_reply_cleared_them() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let gated = Arc::new(Gated {
            produced: AtomicU64::new(0),
            cleared: AtomicU64::new(0),
            fail: AtomicBool::new(false),
        });
        tokio::spawn(serve_tcp(
            listener,
            2,
            TransportConfig::default(),
            Arc::new(Arc::clone(&gated)),
            std::future::pending(),
        ));
        let t = Arc::new(TcpTransport::new(1, TransportConfig::default()));
        let peer = Peer { id: 2, addr };
        let calls = (0..100).map(|_| {
            let (t, peer, gated) = (Arc::clone(&t), peer.clone(), Arc::clone(&gated));
            async move {
                let r = t
                    .call(&peer, Request::Ping, Duration::from_secs(5))
                    .await
                    .expect("call");
                let Response::Record(Some(n)) = r else {
                    panic!("unexpected {r:?}")
                };
                let n: u64 = String::from_utf8_lossy(&n).parse().expect("number");
                // Every answer received was produced before a before_reply
                // that covered it.
                assert!(gated.cleared.load(Ordering::SeqCst) >= n);
            }
        });
        futures::future::join_all(calls).await;
        // A failing before_reply sends nothing: the call fails.
        gated.fail.store(true, Ordering::SeqCst);
        let err = t
            .call(&peer, Request::Ping, Duration::from_secs(2))
            .await
            .expect_err("answer sent despite a failed before_reply");
        assert!(
            matches!(err, TransportError::Closed | TransportError::Timeout),
            "{err:?}"
        );
    }

    /// Answers reads on the spot, everything else in a task.
    struct Quick;

    impl Handler for Quick {
        fn handle(&self, _from: u64, _req: Request) -> BoxFut<Response> {
            Box::pin(async { Response::Pong })
        }

        fn handle_now(&self, _from: u64, req: Request) -> Handled {
            match req {
                Request::Read { key } => Handled::Now(Response::Record(Some(key))),
                other => Handled::Later(other),
            }
        }
    }

    #[tokio::test]
    async fn requests_answered_on_the_spot_and_in_tasks_share_a_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        tokio::spawn(serve_tcp(
            listener,
            2,
            TransportConfig::default(),
            Arc::new(Quick),
            std::future::pending(),
        ));
        let t = Arc::new(TcpTransport::new(1, TransportConfig::default()));
        let peer = Peer { id: 2, addr };
        let calls = (0..100).map(|i| {
            let (t, peer) = (Arc::clone(&t), peer.clone());
            async move {
                let req = if i % 2 == 0 {
                    Request::Read {
                        key: Bytes::from(format!("k{i}")),
                    }
                } else {
                    Request::Ping
                };
                let r = t
                    .call(&peer, req, Duration::from_secs(5))
                    .await
                    .expect("call");
                (i, r)
            }
        });
        for (i, r) in futures::future::join_all(calls).await {
            let want = if i % 2 == 0 {
                Response::Record(Some(Bytes::from(format!("k{i}"))))
            } else {
                Response::Pong
            };
            assert_eq!(r, want, "call {i}");
        }
    }

    #[tokio::test]
    async fn tcp_refuses_other_clusters_and_dead_peers() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        tokio::spawn(serve_tcp(
            listener,
            2,
            TransportConfig::default(),
            Arc::new(Echo(2)),
            std::future::pending(),
        ));
        let other = TransportConfig {
            cluster: "other".into(),
            ..TransportConfig::default()
        };
        let t = Arc::new(TcpTransport::new(1, other));
        let err = t
            .call(
                &Peer {
                    id: 2,
                    addr: addr.clone(),
                },
                Request::Ping,
                Duration::from_secs(5),
            )
            .await
            .expect_err("foreign cluster");
        assert!(
            matches!(
                err,
                TransportError::Protocol(_) | TransportError::Unreachable(_)
            ),
            "{err:?}"
        );
        // Another node at the address than the one asked for: refused.
        let t = Arc::new(TcpTransport::new(1, TransportConfig::default()));
        let peer = |id| Peer {
            id,
            addr: addr.clone(),
        };
        t.call(&peer(2), Request::Ping, Duration::from_secs(5))
            .await
            .expect("node 2 is there");
        let err = t
            .call(&peer(3), Request::Ping, Duration::from_secs(5))
            .await
            .expect_err("node 2 answered for node 3");
        assert!(err.to_string().contains("not"), "{err}");
        // Nothing listens here.
        let free = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let dead = free.local_addr().expect("addr").to_string();
        drop(free);
        let t = Arc::new(TcpTransport::new(1, TransportConfig::default()));
        let err = t
            .call(
                &Peer { id: 3, addr: dead },
                Request::Ping,
                Duration::from_secs(5),
            )
            .await
            .expect_err("dead peer");
        assert!(matches!(err, TransportError::Unreachable(_)), "{err:?}");
    }

    mod secure {
        use super::*;
        use crate::net::certs::{self, Pem};
        use tokio::io::AsyncWriteExt;

        fn node_tls(dir: &std::path::Path, ca: &Pem, trusted: &str, id: u64) -> Arc<NodeTls> {
            let node = certs::issue_node(ca, id, 7, &[]).expect("issue");
            let paths = certs::write_node_folder(&dir.join(format!("{id:x}")), trusted, &node)
                .expect("write");
            Arc::new(NodeTls::load(paths).expect("load"))
        }

        async fn server(id: u64, config: TransportConfig) -> String {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("addr").to_string();
            tokio::spawn(serve_tcp(
                listener,
                id,
                config,
                Arc::new(Echo(id)),
                std::future::pending(),
            ));
            addr
        }

        fn with(security: Security) -> TransportConfig {
            TransportConfig {
                security,
                ..TransportConfig::default()
            }
        }

        async fn read_as(t: &Arc<TcpTransport>, addr: &str) -> Result<Response, TransportError> {
            let peer = Peer {
                id: 0,
                addr: addr.to_string(),
            };
            let key = Bytes::from_static(b"k");
            t.call(&peer, Request::Read { key }, Duration::from_secs(5))
                .await
        }

        #[tokio::test]
        async fn peers_of_one_ca_talk_and_are_known_by_the_ids_their_certificates_name() {
            let dir = tempfile::tempdir().expect("dir");
            let ca = certs::new_ca(30).expect("ca");
            let a = node_tls(dir.path(), &ca, &ca.cert, 0xa);
            let b = node_tls(dir.path(), &ca, &ca.cert, 0xb);
            let addr = server(0xb, with(Security::Mutual(b))).await;
            let t = Arc::new(TcpTransport::new(
                0xa,
                with(Security::Mutual(Arc::clone(&a))),
            ));
            let r = read_as(&t, &addr).await.expect("call");
            assert_eq!(r, Response::Record(Some(Bytes::from_static(b"k:10->11"))));

            // A certificate of this CA used to claim another id.
            let liar = Arc::new(TcpTransport::new(0xc, with(Security::Mutual(a))));
            read_as(&liar, &addr).await.expect_err("claimed another id");

            // A certificate of another CA.
            let other = certs::new_ca(30).expect("ca");
            let stray = node_tls(dir.path(), &other, &other.cert, 0xd);
            let t = Arc::new(TcpTransport::new(0xd, with(Security::Mutual(stray))));
            assert!(
                read_as(&t, &addr).await.is_err(),
                "a foreign CA's node got in"
            );

            // No certificate at all.
            let t = Arc::new(TcpTransport::new(0xe, TransportConfig::default()));
            assert!(read_as(&t, &addr).await.is_err(), "a plaintext peer got in");
        }

        #[tokio::test]
        async fn a_client_refuses_a_server_whose_certificate_names_another_node() {
            let dir = tempfile::tempdir().expect("dir");
            let ca = certs::new_ca(30).expect("ca");
            let b = node_tls(dir.path(), &ca, &ca.cert, 0xb);
            // The server says it is node 0xf; its certificate says 0xb.
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("addr").to_string();
            tokio::spawn(serve_tcp(
                listener,
                0xf,
                with(Security::Mutual(b)),
                Arc::new(Echo(0xf)),
                std::future::pending(),
            ));
            let a = node_tls(dir.path(), &ca, &ca.cert, 0xa);
            let t = Arc::new(TcpTransport::new(0xa, with(Security::Mutual(a))));
            let err = read_as(&t, &addr).await.expect_err("a lying server");
            assert!(err.to_string().contains("certificate of node"), "{err}");
        }

        #[tokio::test]
        async fn optional_mode_bridges_plaintext_and_mutual_tls() {
            let dir = tempfile::tempdir().expect("dir");
            let ca = certs::new_ca(30).expect("ca");
            let plain_addr = server(1, TransportConfig::default()).await;
            let optional_addr = server(
                2,
                with(Security::Optional(node_tls(dir.path(), &ca, &ca.cert, 2))),
            )
            .await;
            let mutual_addr = server(
                3,
                with(Security::Mutual(node_tls(dir.path(), &ca, &ca.cert, 3))),
            )
            .await;

            // An optional node reaches all three kinds.
            let optional = Arc::new(TcpTransport::new(
                4,
                with(Security::Optional(node_tls(dir.path(), &ca, &ca.cert, 4))),
            ));
            for addr in [&plain_addr, &optional_addr, &mutual_addr] {
                read_as(&optional, addr)
                    .await
                    .expect("optional dials anyone");
            }
            // A plaintext node reaches the optional one, not the mutual one.
            let plain = Arc::new(TcpTransport::new(5, TransportConfig::default()));
            read_as(&plain, &optional_addr)
                .await
                .expect("plaintext to optional");
            assert!(read_as(&plain, &mutual_addr).await.is_err());
            // A mutual node reaches the optional one over TLS.
            let mutual = Arc::new(TcpTransport::new(
                6,
                with(Security::Mutual(node_tls(dir.path(), &ca, &ca.cert, 6))),
            ));
            read_as(&mutual, &optional_addr)
                .await
                .expect("mutual to optional");
            assert!(read_as(&mutual, &plain_addr).await.is_err());
        }

        #[tokio::test]
        async fn strangers_hold_no_connection_slot_and_big_first_frames_are_refused() {
            let config = TransportConfig {
                connections_max: 2,
                hello_timeout_ms: 300,
                ..TransportConfig::default()
            };
            let addr = server(2, config).await;
            // Idle strangers: in their handshake, then dropped at the deadline.
            let mut strangers = Vec::new();
            for _ in 0..20 {
                strangers.push(TcpStream::connect(&addr).await.expect("connect"));
            }
            // A first frame announcing more than a hello may be is refused
            // at once, before it is read.
            let mut big = TcpStream::connect(&addr).await.expect("connect");
            big.write_all(&(1u32 << 20).to_be_bytes())
                .await
                .expect("write");
            let mut buf = [0u8; 1];
            let n = tokio::time::timeout(
                Duration::from_secs(2),
                tokio::io::AsyncReadExt::read(&mut big, &mut buf),
            )
            .await
            .expect("closed at once")
            .unwrap_or(0);
            assert_eq!(n, 0);
            // Real peers get both slots despite the strangers.
            for id in [7, 8] {
                let t = Arc::new(TcpTransport::new(id, TransportConfig::default()));
                read_as(&t, &addr).await.expect("a real peer");
            }
            drop(strangers);
        }

        #[tokio::test]
        async fn known_hosts_reconnect_while_strangers_hold_every_common_handshake() {
            let config = TransportConfig {
                handshakes_max: 4,
                reserved_handshakes_max: 16,
                hello_timeout_ms: 10_000,
                ..TransportConfig::default()
            };
            let addr = server(2, config).await;
            // A peer on 127.0.0.1 is known once it has completed a hello.
            let t = Arc::new(TcpTransport::new(7, TransportConfig::default()));
            read_as(&t, &addr).await.expect("a real peer");
            // Strangers from 127.0.0.2 take the four common slots, silent.
            let target: std::net::SocketAddr = addr.parse().expect("addr");
            let from = |ip: [u8; 4]| async move {
                let socket = tokio::net::TcpSocket::new_v4().expect("socket");
                socket
                    .bind(std::net::SocketAddr::from((ip, 0)))
                    .expect("bind");
                socket.connect(target).await.expect("connect")
            };
            let mut strangers = Vec::new();
            for _ in 0..4 {
                strangers.push(from([127, 0, 0, 2]).await);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            // One more stranger is closed at accept.
            let mut late = from([127, 0, 0, 3]).await;
            let mut buf = [0u8; 1];
            let n = tokio::time::timeout(
                Duration::from_secs(2),
                tokio::io::AsyncReadExt::read(&mut late, &mut buf),
            )
            .await
            .expect("closed at once")
            .unwrap_or(0);
            assert_eq!(n, 0, "a stranger past handshakes_max got a slot");
            // The known host opens new connections through the reserved
            // slots.
            for id in [8, 9] {
                let t = Arc::new(TcpTransport::new(id, TransportConfig::default()));
                read_as(&t, &addr).await.expect("a known host reconnects");
            }
            drop(strangers);
        }

        #[tokio::test]
        async fn idle_connections_are_closed_and_reopened_on_demand() {
            let config = TransportConfig {
                idle_timeout_ms: 200,
                ..TransportConfig::default()
            };
            let addr = server(2, config.clone()).await;
            let t = Arc::new(TcpTransport::new(1, config));
            read_as(&t, &addr).await.expect("first");
            tokio::time::sleep(Duration::from_millis(500)).await;
            read_as(&t, &addr).await.expect("after the idle close");
        }
    }
}
