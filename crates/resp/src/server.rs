//! The TCP server: accepts connections, enforces the connection limit, and
//! shuts down gracefully.
//!
//! One task per connection (`crate::connection`). At accept, a connection
//! past `connections_max` is answered `-ERR max number of clients reached`
//! and closed without a task. When the shutdown future resolves the server
//! stops accepting (the listener is dropped), tells every connection to
//! finish the requests it already holds, waits for all of them, and returns.
//!
//! A background task samples the command counter every 100 ms for
//! `instantaneous_ops_per_sec`.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringkv_cluster::Kv;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cmd::Session;
use crate::config::RespConfig;
use crate::frame::Limits;
use crate::stats::{CommandMetrics, ErrorCodes, OPS_SAMPLE_INTERVAL, OpsSampler, RespStats};

/// The reply to a connection refused at accept, in Redis' words.
const MAX_CLIENTS_REPLY: &[u8] = b"-ERR max number of clients reached\r\n";

/// Time a TLS client has to finish its handshake; the connection's slot
/// is held meanwhile.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long accept pauses after a resource error (out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// What every connection of one server shares.
pub(crate) struct Shared {
    pub(crate) config: RespConfig,
    pub(crate) limits: Limits,
    /// The limits before a connection authenticated (users set).
    pub(crate) unauthenticated_limits: Limits,
    pub(crate) stats: Arc<RespStats>,
    pub(crate) metrics: CommandMetrics,
    pub(crate) errors: ErrorCodes,
    /// The node's slow log and latency monitor, when it keeps them.
    pub(crate) slow_log: Option<Arc<ringkv_cluster::slowlog::SlowLog>>,
    pub(crate) started: Instant,
    pub(crate) port: u16,
}

/// A RESP server over a bound listener.
///
/// ```no_run
/// # async fn example<K: ringkv_cluster::Kv>(kv: std::sync::Arc<K>) -> std::io::Result<()> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:6379").await?;
/// let server = ringkv_resp::RespServer::new(listener, kv, ringkv_resp::RespConfig::default())?;
/// let stats = server.stats(); // for INFO-like reporting elsewhere
/// server.run(async { let _ = tokio::signal::ctrl_c().await; }).await?;
/// # Ok(()) }
/// ```
pub struct RespServer<K> {
    listener: TcpListener,
    kv: Arc<K>,
    shared: Arc<Shared>,
}

impl<K: Kv> RespServer<K> {
    /// Checks `config` and prepares the server; nothing is accepted until
    /// [`RespServer::run`].
    pub fn new(listener: TcpListener, kv: Arc<K>, config: RespConfig) -> io::Result<Self> {
        config
            .validate()
            .map_err(|why| io::Error::new(io::ErrorKind::InvalidInput, why))?;
        let port = listener.local_addr()?.port();
        let shared = Arc::new(Shared {
            limits: config.limits(),
            unauthenticated_limits: config.unauthenticated_limits(),
            config,
            stats: Arc::new(RespStats::default()),
            metrics: CommandMetrics::register(),
            errors: ErrorCodes::default(),
            slow_log: kv.slow_log(),
            started: Instant::now(),
            port,
        });
        Ok(Self {
            listener,
            kv,
            shared,
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The server's live counters.
    pub fn stats(&self) -> Arc<RespStats> {
        Arc::clone(&self.shared.stats)
    }

    /// Serves until `shutdown` resolves, then drains: no new connections,
    /// each open connection finishes the requests it has buffered, and this
    /// returns once all are closed.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> io::Result<()> {
        let Self {
            listener,
            kv,
            shared,
        } = self;
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        let slots = Arc::new(Semaphore::new(shared.config.connections_max));
        tasks.spawn(sample_ops(Arc::clone(&shared.stats), stop.clone()));
        tracing::info!(addr = %listener.local_addr()?, "RESP server listening");

        tokio::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(e) if is_per_connection(&e) => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed; pausing");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                },
            };
            let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                shared.stats.connection_rejected();
                // Best effort, without waiting: a client that cannot take
                // 37 bytes right away does not get them.
                let _ = stream.try_write(MAX_CLIENTS_REPLY);
                continue;
            };
            let Ok(session) = open_session(&stream, peer, &shared) else {
                continue;
            };
            let kv = Arc::clone(&kv);
            let shared = Arc::clone(&shared);
            let stop = stop.clone();
            // Each connection's requests are traced for the slow log.
            tasks.spawn(ringkv_cluster::slowlog::traced(async move {
                match shared.config.tls.as_ref().map(|tls| tls.resp_config()) {
                    None => {
                        crate::connection::serve(stream, session, kv, Arc::clone(&shared), stop)
                            .await;
                    }
                    Some(tls) => {
                        let accept = tokio_rustls::TlsAcceptor::from(tls).accept(stream);
                        let handshake = tokio::select! {
                            () = stop.cancelled() => None,
                            done = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, accept) => Some(done),
                        };
                        match handshake {
                            Some(Ok(Ok(stream))) => {
                                crate::connection::serve(stream, session, kv, Arc::clone(&shared), stop)
                                    .await;
                            }
                            Some(Ok(Err(e))) => tls_refused(peer, &e.to_string()),
                            Some(Err(_)) => tls_refused(peer, "handshake timed out"),
                            None => {}
                        }
                    }
                }
                shared.stats.connection_closed();
                drop(slot);
            }));
        }

        drop(listener);
        tracing::info!(
            connections = shared.stats.snapshot().connected_clients,
            "RESP server stopping: finishing in-flight requests"
        );
        stop.cancel();
        tasks.close();
        tasks.wait().await;
        tracing::info!("RESP server stopped");
        Ok(())
    }
}

/// Serves RESP on `listener` until `shutdown` resolves; see [`RespServer`].
pub async fn serve<K: Kv>(
    listener: TcpListener,
    kv: Arc<K>,
    config: RespConfig,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    RespServer::new(listener, kv, config)?.run(shutdown).await
}

fn open_session(stream: &TcpStream, peer: SocketAddr, shared: &Shared) -> io::Result<Session> {
    // Replies go out as soon as a batch is done; Nagle would hold them.
    stream.set_nodelay(true)?;
    let local = stream.local_addr()?;
    let id = shared.stats.connection_opened();
    Ok(Session::new(id, peer, local, shared.config.users.is_none()))
}

/// A client whose TLS handshake failed (a plaintext client, an unknown CA,
/// no client certificate where one is required, or too slow).
fn tls_refused(peer: SocketAddr, why: &str) {
    metrics::counter!("ringkv_resp_tls_handshake_failures_total").increment(1);
    tracing::debug!(%peer, why, "RESP TLS handshake failed");
}

/// Accept errors that concern one connection only.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

async fn sample_ops(stats: Arc<RespStats>, stop: CancellationToken) {
    let started = Instant::now();
    let mut sampler = OpsSampler::new();
    let mut tick = tokio::time::interval(OPS_SAMPLE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {
                let rate = sampler.sample(started.elapsed(), OpsSampler::commands_total(&stats));
                stats.set_ops_per_sec(rate);
            }
        }
    }
}
