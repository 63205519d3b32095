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
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};

use super::message::{self, ErrorDetail, Hello, Kind, Request, Response};
use super::{BoxFut, Handled, Handler, Peer, Transport, TransportError};
use crate::det::HashMap;

/// Limits and timeouts of the TCP transport.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// Cluster name both sides must agree on in the hello.
    pub cluster: String,
    /// Largest frame accepted or sent, in bytes.
    pub frame_bytes_max: usize,
    /// Requests queued for one peer before callers are refused.
    pub peer_queue_max: usize,
    /// Requests from one connection handled at once.
    pub inflight_per_connection_max: usize,
    /// Inbound connections at once.
    pub connections_max: usize,
    pub connect_timeout_ms: u64,
    pub hello_timeout_ms: u64,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            cluster: "ringkv".into(),
            frame_bytes_max: 8 * 1024 * 1024,
            peer_queue_max: 4096,
            inflight_per_connection_max: 1024,
            connections_max: 1024,
            connect_timeout_ms: 2_000,
            hello_timeout_ms: 5_000,
        }
    }
}

fn codec(frame_bytes_max: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_length(4)
        .max_frame_length(frame_bytes_max)
        .new_codec()
}

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
    mut writer: FramedWrite<OwnedWriteHalf, LengthDelimitedCodec>,
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
    tx: mpsc::Sender<Bytes>,
    pending: Mutex<HashMap<u64, oneshot::Sender<Response>>>,
    next_id: AtomicU64,
    alive: AtomicBool,
}

/// One peer's connection, created on first use and replaced when it dies;
/// the async lock keeps two callers from connecting at once.
type ConnSlot = Arc<tokio::sync::Mutex<Option<Arc<Conn>>>>;

/// The TCP transport's client side.
pub struct TcpTransport {
    self_id: u64,
    config: TransportConfig,
    conns: Mutex<HashMap<String, ConnSlot>>,
}

impl TcpTransport {
    pub fn new(self_id: u64, config: TransportConfig) -> Self {
        Self {
            self_id,
            config,
            conns: Mutex::new(HashMap::default()),
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
        {
            return Ok(Arc::clone(c));
        }
        let conn = self.connect(addr).await?;
        *guard = Some(Arc::clone(&conn));
        Ok(conn)
    }

    async fn connect(&self, addr: &str) -> Result<Arc<Conn>, TransportError> {
        let connect = TcpStream::connect(addr);
        let stream = tokio::time::timeout(
            Duration::from_millis(self.config.connect_timeout_ms),
            connect,
        )
        .await
        .map_err(|_| TransportError::Unreachable(format!("{addr}: connect timed out")))?
        .map_err(|e| TransportError::Unreachable(format!("{addr}: {e}")))?;
        let _ = stream.set_nodelay(true);
        let (r, w) = stream.into_split();
        let mut reader = FramedRead::new(r, codec(self.config.frame_bytes_max));
        let mut writer = FramedWrite::new(w, codec(self.config.frame_bytes_max));
        let hello = Hello {
            cluster: self.config.cluster.clone(),
            node_id: self.self_id,
        };
        let frame = message::encode(Kind::Hello, 0, &hello)
            .map_err(|e| TransportError::Protocol(e.to_string()))?;
        writer
            .send(frame)
            .await
            .map_err(|e| TransportError::Unreachable(format!("{addr}: {e}")))?;
        let answer = tokio::time::timeout(
            Duration::from_millis(self.config.hello_timeout_ms),
            reader.next(),
        )
        .await
        .map_err(|_| TransportError::Unreachable(format!("{addr}: no hello")))?;
        let payload = match answer {
            Some(Ok(p)) => p.freeze(),
            _ => {
                return Err(TransportError::Unreachable(format!(
                    "{addr}: closed during hello"
                )));
            }
        };
        let (kind, _, body) =
            message::decode_header(payload).map_err(|e| TransportError::Protocol(e.to_string()))?;
        let their: Hello =
            message::decode_body(&body).map_err(|e| TransportError::Protocol(e.to_string()))?;
        if kind != Kind::Hello || their.cluster != self.config.cluster {
            return Err(TransportError::Protocol(format!(
                "{addr} belongs to cluster {:?}, not {:?}",
                their.cluster, self.config.cluster
            )));
        }

        let (tx, rx) = mpsc::channel::<Bytes>(self.config.peer_queue_max);
        let conn = Arc::new(Conn {
            tx,
            pending: Mutex::new(HashMap::default()),
            next_id: AtomicU64::new(1),
            alive: AtomicBool::new(true),
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
        Box::pin(async move {
            let work = async {
                let conn = this.conn(&addr).await?;
                let id = conn.next_id.fetch_add(1, Ordering::Relaxed);
                let frame = message::encode(Kind::Request, id, &req)
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
        let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
            tracing::warn!(%remote, "cluster connection refused: connections_max reached");
            continue;
        };
        let handler = Arc::clone(&handler);
        let config = Arc::clone(&config);
        tokio::spawn(async move {
            if let Err(e) = serve_conn(stream, self_id, &config, handler).await {
                tracing::debug!(%remote, error = %e, "cluster connection ended");
            }
            drop(permit);
        });
    }
}

type Reader = FramedRead<tokio::net::tcp::OwnedReadHalf, LengthDelimitedCodec>;
type Writer = FramedWrite<OwnedWriteHalf, LengthDelimitedCodec>;

/// The server's side of the hello: the peer's must name this cluster;
/// returns the peer's node id once this node's hello is sent.
async fn accept_hello(
    reader: &mut Reader,
    writer: &mut Writer,
    self_id: u64,
    config: &TransportConfig,
) -> Result<u64, TransportError> {
    let protocol = |e: &dyn std::fmt::Display| TransportError::Protocol(e.to_string());
    let first = tokio::time::timeout(
        Duration::from_millis(config.hello_timeout_ms),
        reader.next(),
    )
    .await
    .map_err(|_| TransportError::Timeout)?
    .ok_or(TransportError::Closed)?
    .map_err(|e| protocol(&e))?;
    let (kind, _, body) = message::decode_header(first.freeze()).map_err(|e| protocol(&e))?;
    let hello: Hello = message::decode_body(&body).map_err(|e| protocol(&e))?;
    if kind != Kind::Hello || hello.cluster != config.cluster {
        return Err(TransportError::Protocol(format!(
            "peer of cluster {:?} refused",
            hello.cluster
        )));
    }
    let ours = Hello {
        cluster: config.cluster.clone(),
        node_id: self_id,
    };
    let frame = message::encode(Kind::Hello, 0, &ours).map_err(|e| protocol(&e))?;
    writer.send(frame).await.map_err(|e| protocol(&e))?;
    Ok(hello.node_id)
}

async fn serve_conn(
    stream: TcpStream,
    self_id: u64,
    config: &TransportConfig,
    handler: Arc<dyn Handler>,
) -> Result<(), TransportError> {
    let _ = stream.set_nodelay(true);
    let (r, w) = stream.into_split();
    let mut reader = FramedRead::new(r, codec(config.frame_bytes_max));
    let mut writer = FramedWrite::new(w, codec(config.frame_bytes_max));
    let from = accept_hello(&mut reader, &mut writer, self_id, config).await?;

    let (tx, rx) = mpsc::channel::<Bytes>(config.inflight_per_connection_max);
    let replier = Arc::clone(&handler);
    let write_task = tokio::spawn(write_frames(writer, rx, move || replier.before_reply()));
    let inflight = Arc::new(Semaphore::new(config.inflight_per_connection_max));
    while let Some(next) = reader.next().await {
        let payload = next.map_err(|e| TransportError::Protocol(e.to_string()))?;
        let (kind, id, body) = message::decode_header(payload.freeze())
            .map_err(|e| TransportError::Protocol(e.to_string()))?;
        if kind != Kind::Request {
            return Err(TransportError::Protocol("expected a request".into()));
        }
        let resp_tx = tx.clone();
        let req = match message::decode_body::<Request>(&body) {
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
            .call(&Peer { id: 2, addr }, Request::Ping, Duration::from_secs(5))
            .await
            .expect_err("foreign cluster");
        assert!(
            matches!(
                err,
                TransportError::Protocol(_) | TransportError::Unreachable(_)
            ),
            "{err:?}"
        );
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
}
