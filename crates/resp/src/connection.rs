//! One client connection: read, parse, execute, reply, in a loop.
//!
//! The loop, top to bottom: execute every complete request already in the
//! input buffer, in order (parsed a few dozen ahead, so the keys of a
//! pipeline can be prefetched together: [`Kv::prefetch`]), encoding each
//! reply into the output buffer
//! (written early only past `reply_flush_bytes_max`); write the replies in
//! one go; then wait for more bytes, the idle deadline, or shutdown. So a
//! pipelined batch costs one read and one write, and a request's arguments
//! are slices of the input buffer, never copies.
//!
//! Before replies are written, the node's buffered writes are handed to the
//! OS ([`ringkv_cluster::Kv::release_writes`]): a pipelined batch of writes
//! costs one log `write()`, and nothing acknowledged or returned is lost to
//! a crash of the process.
//!
//! Closing: on EOF, QUIT, a protocol error (after its `-ERR Protocol error`
//! reply), the idle timeout (no complete request for `idle_timeout_ms`; a
//! client that drips bytes without finishing a request is closed too), a
//! write that makes no progress for `idle_timeout_ms`, and shutdown (after
//! the requests already buffered).

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::FutureExt;
use ringkv_cluster::Kv;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::cmd::{self, Ctx, Session};
use crate::error::CommandError;
use crate::frame::{Frame, ProtocolError, RequestParser};
use crate::server::Shared;
use crate::stats::{Batch, record_error};

/// Bytes read per read call when the parser does not need more.
const READ_CHUNK_BYTES: usize = 16 * 1024;
/// Idle buffers larger than this are given back after use.
const BUFFER_RETAINED_BYTES_MAX: usize = 1024 * 1024;
/// After a protocol error, how much the client may still send (and how
/// long) before the socket closes: the rest is read and dropped so the
/// error reply is not lost to a TCP reset.
const LINGER_BYTES_MAX: usize = 1024 * 1024;
const LINGER: Duration = Duration::from_millis(500);
/// Write deadline when no idle timeout is configured.
const WRITE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(300);
/// Once shutdown has begun, how long a client that is not reading may hold
/// it up.
const SHUTDOWN_WRITE_GRACE: Duration = Duration::from_secs(5);
/// Argument vectors kept for reuse hold at most this many arguments (a
/// larger one, from an MSET of many keys, is given back after use), so the
/// spare vectors of an idle connection stay under 16 KiB.
const SPARE_ARGS_MAX: usize = 16;
/// Requests parsed ahead of running them (see `execute_buffered`); also
/// the most argument vectors kept for reuse.
const PARSE_AHEAD_MAX: usize = 32;

/// Why a connection ends.
#[derive(Debug)]
enum Close {
    Eof,
    Quit,
    Shutdown,
    Idle,
    /// Users are set and the client did not authenticate in time.
    AuthTimeout,
    Protocol(ProtocolError),
    Io(io::Error),
}

impl std::fmt::Display for Close {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Close::Eof => f.write_str("client closed"),
            Close::Quit => f.write_str("QUIT"),
            Close::Shutdown => f.write_str("server shutdown"),
            Close::AuthTimeout => f.write_str("not authenticated in time"),
            Close::Idle => f.write_str("idle timeout"),
            Close::Protocol(e) => write!(f, "protocol error: {e}"),
            Close::Io(e) => write!(f, "i/o error: {e}"),
        }
    }
}

/// What a connection reads from and writes to: a TCP stream, or TLS over one.
pub(crate) trait ClientStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> ClientStream for S {}

struct Connection<K, S> {
    stream: S,
    session: Session,
    kv: Arc<K>,
    shared: Arc<Shared>,
    parser: RequestParser,
    input: BytesMut,
    output: BytesMut,
    /// Requests parsed and not yet run, in order.
    ahead: VecDeque<Vec<Bytes>>,
    /// Argument vectors to reuse.
    spare: Vec<Vec<Bytes>>,
    batch: Batch,
    stop: CancellationToken,
}

/// Serves one connection until it closes.
pub(crate) async fn serve<K: Kv, S: ClientStream>(
    stream: S,
    session: Session,
    kv: Arc<K>,
    shared: Arc<Shared>,
    stop: CancellationToken,
) {
    let mut conn = Connection {
        stream,
        session,
        parser: RequestParser::new(shared.limits),
        kv,
        shared,
        input: BytesMut::with_capacity(READ_CHUNK_BYTES),
        output: BytesMut::with_capacity(READ_CHUNK_BYTES),
        ahead: VecDeque::with_capacity(PARSE_AHEAD_MAX),
        spare: Vec::new(),
        batch: Batch::default(),
        stop,
    };
    let why = conn.run().await;
    conn.shared.stats.add_batch(&conn.batch);
    tracing::debug!(client = conn.session.id, peer = %conn.session.peer, reason = %why, "connection closed");
    if let Close::Protocol(_) = why {
        conn.linger().await;
    }
}

impl<K: Kv, S: ClientStream> Connection<K, S> {
    async fn run(&mut self) -> Close {
        let idle = Duration::from_millis(self.shared.config.idle_timeout_ms);
        let idle_enabled = !idle.is_zero();
        let mut last_request = Instant::now();
        // A connection that must authenticate has `auth_timeout_ms` to.
        let auth_timeout = Duration::from_millis(self.shared.config.auth_timeout_ms);
        let auth_deadline = (!self.session.authenticated && !auth_timeout.is_zero())
            .then(|| Instant::now() + auth_timeout);
        let first = match auth_deadline {
            Some(_) if !idle_enabled || auth_timeout < idle => auth_timeout,
            _ => idle,
        };
        let sleep = tokio::time::sleep(first);
        tokio::pin!(sleep);
        let stopped = self.stop.clone().cancelled_owned();
        tokio::pin!(stopped);

        loop {
            match self.execute_buffered().await {
                Ok(0) => {}
                Ok(_) => last_request = Instant::now(),
                Err(close) => return close,
            }
            // Writes wait in the node's log buffer: let the other
            // connections with requests ready run theirs first (the task
            // resumes after the runtime's next poll of the sockets), so one
            // log write serves them all, as an event loop flushes its
            // append-only file once before it sends the replies.
            if !self.output.is_empty() && self.kv.writes_buffered() {
                tokio::task::yield_now().await;
            }
            if let Err(e) = self.flush().await {
                return Close::Io(e);
            }
            self.shared.stats.add_batch(&self.batch);
            self.batch = Batch::default();
            if self.stop.is_cancelled() {
                return Close::Shutdown;
            }
            if self.input.is_empty() && self.input.capacity() > BUFFER_RETAINED_BYTES_MAX {
                self.input = BytesMut::with_capacity(READ_CHUNK_BYTES);
            }
            self.reserve_input();

            loop {
                tokio::select! {
                    biased;
                    read = self.stream.read_buf(&mut self.input) => match read {
                        Ok(0) => return Close::Eof,
                        Ok(n) => {
                            self.batch.input_bytes += n as u64;
                            break;
                        }
                        Err(e) => return Close::Io(e),
                    },
                    () = &mut stopped => return Close::Shutdown,
                    () = &mut sleep, if idle_enabled || auth_deadline.is_some() => {
                        // The timer is only moved when it fires, not on every
                        // request: one timer registration per idle period.
                        if let Some(by) = auth_deadline
                            && !self.session.authenticated
                            && Instant::now() >= by
                        {
                            return Close::AuthTimeout;
                        }
                        let mut deadline = if idle_enabled {
                            last_request + idle
                        } else {
                            Instant::now() + Duration::from_secs(3600)
                        };
                        if idle_enabled && Instant::now() >= deadline {
                            return Close::Idle;
                        }
                        if let Some(by) = auth_deadline
                            && !self.session.authenticated
                        {
                            deadline = deadline.min(by);
                        }
                        sleep.as_mut().reset(deadline);
                    }
                }
            }
        }
    }

    /// Makes room for the next read. The buffer grows with the bytes that
    /// actually arrive (at most doubling per read), even when a header
    /// announces a large bulk, so a client cannot make the node reserve
    /// memory it has not sent.
    fn reserve_input(&mut self) {
        let wanted = self.parser.bytes_wanted();
        let room = READ_CHUNK_BYTES.max(wanted.min(self.input.len().max(READ_CHUNK_BYTES)));
        let limit = self.shared.config.input_buffer_bytes_max;
        let room = room.min(limit.saturating_sub(self.input.len()).max(1));
        if self.input.capacity() - self.input.len() < room {
            self.input.reserve(room);
        }
    }

    /// Executes every complete request in the input buffer; returns how many.
    ///
    /// Requests are parsed ahead, up to [`PARSE_AHEAD_MAX`] at a time, and
    /// the keys they read or write (`cmd::prefetched_keys`) are handed to
    /// [`Kv::prefetch`] before any runs: the records of a pipeline are
    /// fetched from memory together rather than one miss after another.
    /// They still run one by one, in order. A request that may change the
    /// connection's limits (AUTH, HELLO, RESET) ends the parse-ahead, as
    /// does not being authenticated: the requests behind it are parsed
    /// under the limits it leaves.
    async fn execute_buffered(&mut self) -> Result<u64, Close> {
        let mut executed = 0;
        loop {
            let protocol_error = self.parse_ahead();
            // Worth it with two keys or more (one request alone, the usual
            // case without pipelining, is checked without allocating).
            let worth = match self.ahead.len() {
                0 => false,
                1 => (self.ahead.front())
                    .is_some_and(|args| cmd::prefetched_keys(args).nth(1).is_some()),
                _ => true,
            };
            if worth {
                let keys: Vec<&[u8]> = (self.ahead.iter())
                    .flat_map(|args| cmd::prefetched_keys(args))
                    .collect();
                if keys.len() > 1 {
                    self.kv.prefetch(&keys);
                }
            }
            if self.ahead.is_empty() && protocol_error.is_none() {
                break;
            }
            while let Some(args) = self.ahead.pop_front() {
                executed += 1;
                self.execute_one(args).await?;
            }
            if let Some(e) = protocol_error {
                record_error("protocol");
                self.batch.errors += 1;
                let reply = CommandError::Protocol(e.clone()).to_frame();
                if let Frame::Error(text) = &reply {
                    self.shared.errors.add(text);
                }
                reply.encode(&mut self.output, self.session.protocol);
                // Send the reply before closing; a failed write changes
                // nothing, the connection is closing anyway.
                let _ = self.flush().await;
                return Err(Close::Protocol(e));
            }
        }
        // A request larger than the input buffer limit is refused by the
        // parser from its headers; this catches anything that slips past.
        if self.input.len() >= self.shared.config.input_buffer_bytes_max {
            let e = ProtocolError::RequestTooLarge {
                max: self.shared.config.input_buffer_bytes_max,
            };
            CommandError::Protocol(e.clone())
                .to_frame()
                .encode(&mut self.output, self.session.protocol);
            let _ = self.flush().await;
            return Err(Close::Protocol(e));
        }
        Ok(executed)
    }

    /// Parses complete requests into `ahead` (see
    /// [`Connection::execute_buffered`]); returns the protocol error that
    /// stopped it, if one did (the requests before it still run).
    fn parse_ahead(&mut self) -> Option<ProtocolError> {
        let ahead_max = if self.session.authenticated {
            PARSE_AHEAD_MAX
        } else {
            1
        };
        while self.ahead.len() < ahead_max {
            self.parser.set_limits(if self.session.authenticated {
                self.shared.limits
            } else {
                self.shared.unauthenticated_limits
            });
            let mut args = self.spare.pop().unwrap_or_else(|| Vec::with_capacity(8));
            match self.parser.parse(&mut self.input, &mut args) {
                Ok(true) => {
                    let last = cmd::changes_session(&args);
                    self.ahead.push_back(args);
                    if last {
                        break;
                    }
                }
                Ok(false) => {
                    self.spare.push(args);
                    break;
                }
                Err(e) => {
                    self.spare.push(args);
                    return Some(e);
                }
            }
        }
        None
    }

    /// Runs one parsed request and encodes its reply.
    async fn execute_one(&mut self, mut args: Vec<Bytes>) -> Result<(), Close> {
        self.batch.commands += 1;
        let mut ctx = Ctx {
            kv: &*self.kv,
            session: &mut self.session,
            shared: &self.shared,
        };
        let outcome = cmd::execute(&mut ctx, &args).await;
        args.clear();
        if args.capacity() <= SPARE_ARGS_MAX && self.spare.len() < PARSE_AHEAD_MAX {
            self.spare.push(args);
        }
        if let Some(kind) = outcome.error {
            record_error(kind);
            self.batch.errors += 1;
            if let Frame::Error(text) = &outcome.reply {
                self.shared.errors.add(text);
            }
        }
        outcome
            .reply
            .encode(&mut self.output, self.session.protocol);
        if self.session.closing {
            let _ = self.flush().await;
            return Err(Close::Quit);
        }
        if self.output.len() >= self.shared.config.reply_flush_bytes_max {
            self.flush().await.map_err(Close::Io)?;
        }
        Ok(())
    }

    /// Writes the buffered replies: one non-blocking attempt first (the
    /// usual case, no timer), then a bounded wait for a slow reader.
    async fn flush(&mut self) -> io::Result<()> {
        if self.output.is_empty() {
            return Ok(());
        }
        // The writes these replies acknowledge, and any value they return,
        // reach the OS first: one system call for the whole batch. If that
        // fails, no reply is sent and the connection closes.
        if let Err(e) = self.kv.release_writes() {
            self.output.clear();
            return Err(io::Error::other(e.to_string()));
        }
        let total = self.output.len();
        // One attempt without waiting (no timer in the usual case); TLS
        // may buffer what it accepted, hence the flush.
        let written = match self.stream.write(&self.output).now_or_never() {
            Some(Ok(n)) => n,
            Some(Err(e)) => return Err(e),
            None => 0,
        };
        let flushed = written == total
            && match self.stream.flush().now_or_never() {
                Some(result) => {
                    result?;
                    true
                }
                None => false,
            };
        if !flushed {
            let deadline = match self.shared.config.idle_timeout_ms {
                0 => WRITE_TIMEOUT_DEFAULT,
                ms => Duration::from_millis(ms),
            };
            let stop = self.stop.clone();
            let shutdown_grace = async move {
                stop.cancelled().await;
                tokio::time::sleep(SHUTDOWN_WRITE_GRACE).await;
            };
            let not_reading = || io::Error::new(io::ErrorKind::TimedOut, "client is not reading");
            tokio::select! {
                result = tokio::time::timeout(deadline, async {
                    self.stream.write_all(&self.output[written..]).await?;
                    self.stream.flush().await
                }) => {
                    result.map_err(|_| not_reading())??;
                }
                () = shutdown_grace => return Err(not_reading()),
            }
        }
        self.batch.output_bytes += total as u64;
        self.output.clear();
        if self.output.capacity() > BUFFER_RETAINED_BYTES_MAX {
            self.output = BytesMut::with_capacity(READ_CHUNK_BYTES);
        }
        Ok(())
    }

    /// Closes after a protocol error without losing the error reply: stop
    /// sending, then read and drop what the client still sends, briefly.
    async fn linger(&mut self) {
        let _ = self.stream.shutdown().await;
        let mut drained = 0;
        let mut sink = [0u8; 8192];
        let _ = tokio::time::timeout(LINGER, async {
            while drained < LINGER_BYTES_MAX {
                match self.stream.read(&mut sink).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => drained += n,
                }
            }
        })
        .await;
    }
}
