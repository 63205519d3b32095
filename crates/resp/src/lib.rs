//! ringkv's Redis protocol front end: RESP2 and RESP3 over TCP.
//!
//! This crate turns client bytes into calls on the cluster's
//! [`Kv`](ringkv_cluster::Kv) API and turns the answers back into bytes. It
//! never touches storage, peers or files, and holds no data: every key and
//! value goes straight to the coordinator, which decides replication,
//! consistency and versioning.
//!
//! # Starting a server
//!
//! ```no_run
//! # async fn example<K: ringkv_cluster::Kv>(kv: std::sync::Arc<K>) -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:6379").await?;
//! ringkv_resp::serve(listener, kv, ringkv_resp::RespConfig::default(), async {
//!     let _ = tokio::signal::ctrl_c().await;
//! })
//! .await
//! # }
//! ```
//!
//! Keys and values handed to `Kv` are zero-copy slices of a connection's
//! input buffer; an implementation that keeps them beyond the call should
//! copy them, or it pins that buffer in memory.
//!
//! # Layout
//! - [`frame`]: the request parser (RESP2 arrays and inline commands, with
//!   limits) and the reply encoder (RESP2 and RESP3). The grammar is
//!   written down there.
//! - `parse`: a cursor over a command's arguments.
//! - `cmd`: the command table and one module per family of commands; each
//!   module's doc lists its commands, arguments and replies.
//! - [`error`]: command errors and their one mapping to RESP error replies
//!   (cluster errors included).
//! - `connection`: the per-connection loop (pipelining, timeouts).
//! - [`server`]: accept loop, connection limit, graceful shutdown.
//! - [`config`]: [`RespConfig`], every limit with its default.
//! - [`stats`]: shared counters for `INFO` and the metrics.
//!
//! # Metrics
//! `ringkv_resp_commands_total{cmd}`, `ringkv_resp_command_seconds{cmd}`
//! (histogram), `ringkv_resp_errors_total{kind}`, `ringkv_resp_connections`
//! (gauge) and `ringkv_resp_rejected_connections_total`, through the
//! `metrics` facade. Per-command handles are registered when the server is
//! created, so install the recorder first.

mod cmd;
pub mod config;
mod connection;
pub mod error;
pub mod frame;
pub mod glob;
mod parse;
pub mod server;
pub mod stats;

pub use config::RespConfig;
pub use error::CommandError;
pub use frame::{Frame, Limits, Protocol, ProtocolError, RequestParser};
pub use server::{RespServer, TLS_HANDSHAKE_TIMEOUT, serve};
pub use stats::{RespStats, StatsSnapshot};
