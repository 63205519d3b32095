//! The network layer: how a node reaches its peers.
//!
//! The cluster never opens sockets itself: it calls [`Transport::call`] and
//! answers requests through a [`Handler`].
//!
//! - [`message`]: the wire format (frames, requests, answers).
//! - [`tcp`]: the TCP transport: one multiplexed connection per peer
//!   (request ids pair answers with requests), reconnects on demand, bounds
//!   every queue, and times out every call.
//! - [`sim`]: the in-memory network of the simulation and of in-process
//!   tests: routes calls to handlers in the same process, through the real
//!   codec, with seeded delays, loss, duplication and partitions.
//! - [`tls`]: node identity (a certificate names one node id) and the
//!   mutual TLS of the cluster port.
//! - [`fault`]: the partition hooks of fault injection on real processes.

mod bounded;
pub mod certs;
pub mod client_tls;
mod der;
pub mod digest;
mod error_detail;
pub mod fault;
pub mod message;
pub mod sim;
pub mod tcp;
pub mod tls;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::id::NodeId;
use message::{Request, Response};

pub use fault::{BlockedPeers, FaultyHandler, FaultyTransport};
pub use sim::{NetFaults, SimNet, SimTransport};
pub use tcp::{Security, TcpTransport, TransportConfig, serve_tcp};
/// A boxed, sendable future.
pub type BoxFut<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Who to call: a node id and its cluster address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Peer {
    /// 0 when only the address is known (a seed).
    pub id: NodeId,
    pub addr: String,
}

/// Why a call got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    #[error("cannot reach {0}")]
    Unreachable(String),
    #[error("timed out")]
    Timeout,
    #[error("connection closed")]
    Closed,
    #[error("too many requests queued for the peer")]
    Overloaded,
    #[error("protocol error: {0}")]
    Protocol(String),
}

/// Sends requests to peers.
pub trait Transport: Send + Sync + 'static {
    fn call(
        &self,
        peer: &Peer,
        req: Request,
        timeout: Duration,
    ) -> BoxFut<Result<Response, TransportError>>;
}

/// Answers requests from peers.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, from: NodeId, req: Request) -> BoxFut<Response>;

    /// Answers `req` at once when that needs no waiting (no I/O but a local
    /// storage call, no call to another node); otherwise gives it back for
    /// [`Handler::handle`]. The TCP server answers such requests in the
    /// connection's reader, in order, without a task each.
    fn handle_now(&self, from: NodeId, req: Request) -> Handled {
        let _ = from;
        Handled::Later(req)
    }

    /// Called before answers go out, once per batch of them, after every
    /// answer in the batch was produced (the node hands its buffered writes
    /// to the OS here). An error drops the batch and the connection: the
    /// callers see their requests fail with an unknown outcome.
    fn before_reply(&self) -> Result<(), crate::api::KvError> {
        Ok(())
    }
}

/// What [`Handler::handle_now`] did with a request.
#[derive(Debug)]
pub enum Handled {
    /// Answered.
    Now(Response),
    /// Needs waiting: hand it to [`Handler::handle`].
    Later(Request),
}
