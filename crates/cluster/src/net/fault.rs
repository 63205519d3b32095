//! Fault injection on real processes: a blocked-peer set honoured by a
//! transport (outgoing calls) and a handler (incoming requests).

use std::sync::Arc;
use std::time::Duration;

use super::message::{ErrorDetail, Request, Response};
use super::{BoxFut, Handled, Handler, Peer, Transport, TransportError};
use crate::det::HashSet;

/// Peers a node refuses to talk to, both ways: the partition hook of fault
/// injection on real processes (`[debug] fault_injection = true`). Shared by
/// a [`FaultyTransport`] (outgoing calls) and a [`FaultyHandler`] (incoming
/// requests), and changed at run time by the debug routes.
#[derive(Debug, Default)]
pub struct BlockedPeers {
    ids: parking_lot::RwLock<HashSet<u64>>,
}

impl BlockedPeers {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Blocks exactly `ids` from now on (replaces the previous set).
    pub fn set(&self, ids: impl IntoIterator<Item = u64>) {
        *self.ids.write() = ids.into_iter().collect();
    }

    /// Unblocks every peer.
    pub fn clear(&self) {
        self.ids.write().clear();
    }

    pub fn contains(&self, id: u64) -> bool {
        self.ids.read().contains(&id)
    }

    /// The blocked ids, sorted.
    pub fn list(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.ids.read().iter().copied().collect();
        ids.sort_unstable();
        ids
    }
}

/// A transport that loses every call to a blocked peer: the call waits for
/// its whole timeout and fails with [`TransportError::Timeout`], as a call
/// into a network partition does. Calls to other peers go to `inner`.
///
/// Calls addressed only by address (seeds, `id` 0) cannot be matched here;
/// the blocked peer's own [`FaultyHandler`] refuses them on arrival.
pub struct FaultyTransport<T> {
    inner: T,
    blocked: Arc<BlockedPeers>,
}

impl<T: Transport> FaultyTransport<T> {
    pub fn new(inner: T, blocked: Arc<BlockedPeers>) -> Self {
        Self { inner, blocked }
    }
}

impl<T: Transport> Transport for FaultyTransport<T> {
    fn call(
        &self,
        peer: &Peer,
        req: Request,
        timeout: Duration,
    ) -> BoxFut<Result<Response, TransportError>> {
        if peer.id != 0 && self.blocked.contains(peer.id) {
            return Box::pin(async move {
                tokio::time::sleep(timeout).await;
                Err(TransportError::Timeout)
            });
        }
        self.inner.call(peer, req, timeout)
    }
}

/// A handler that refuses requests from blocked peers with an `unavailable`
/// error (the caller counts it as a replica that did not answer) and passes
/// every other request to `inner`. It answers at once rather than sitting on
/// the request, so a partition never holds a connection's in-flight slots.
pub struct FaultyHandler {
    inner: Arc<dyn Handler>,
    blocked: Arc<BlockedPeers>,
}

impl FaultyHandler {
    pub fn new(inner: Arc<dyn Handler>, blocked: Arc<BlockedPeers>) -> Self {
        Self { inner, blocked }
    }
}

impl Handler for FaultyHandler {
    fn handle(&self, from: u64, req: Request) -> BoxFut<Response> {
        if self.blocked.contains(from) {
            return Box::pin(async move {
                Response::error(ErrorDetail::Unavailable {
                    required: 1,
                    answered: 0,
                    why: format!("partitioned from node {from:016x} (fault injection)"),
                })
            });
        }
        self.inner.handle(from, req)
    }

    fn handle_now(&self, from: u64, req: Request) -> Handled {
        if self.blocked.contains(from) {
            return Handled::Later(req);
        }
        self.inner.handle_now(from, req)
    }

    fn before_reply(&self) -> Result<(), crate::api::KvError> {
        self.inner.before_reply()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::SimNet;

    struct Pong;

    impl Handler for Pong {
        fn handle(&self, _from: u64, _req: Request) -> BoxFut<Response> {
            Box::pin(async { Response::Pong })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn blocked_peers_time_out_both_ways_and_heal() {
        let net = SimNet::quiet(7);
        let blocked_at_2 = BlockedPeers::new();
        net.register(1, Arc::new(Pong));
        net.register(
            2,
            Arc::new(FaultyHandler::new(
                Arc::new(Pong),
                Arc::clone(&blocked_at_2),
            )),
        );
        let blocked_at_1 = BlockedPeers::new();
        let t1 = FaultyTransport::new(net.test_transport(1), Arc::clone(&blocked_at_1));
        let to2 = Peer {
            id: 2,
            addr: crate::net::sim::test_addr(2),
        };
        let timeout = Duration::from_millis(300);
        assert_eq!(
            t1.call(&to2, Request::Ping, timeout).await,
            Ok(Response::Pong)
        );

        // Outgoing: node 1 blocks node 2; the call takes its whole timeout.
        blocked_at_1.set([2]);
        let start = tokio::time::Instant::now();
        let lost = t1.call(&to2, Request::Ping, timeout).await;
        assert_eq!(lost, Err(TransportError::Timeout));
        assert!(start.elapsed() >= timeout);
        assert_eq!(blocked_at_1.list(), vec![2]);

        // Incoming: node 2 blocks node 1 and refuses its requests.
        blocked_at_1.clear();
        blocked_at_2.set([1]);
        match t1.call(&to2, Request::Ping, timeout).await {
            Ok(Response::Error { code, .. }) => assert_eq!(code, "unavailable"),
            other => panic!("expected a refusal, got {other:?}"),
        }

        // Healed: calls go through again.
        blocked_at_2.clear();
        assert_eq!(
            t1.call(&to2, Request::Ping, timeout).await,
            Ok(Response::Pong)
        );
        assert!(!blocked_at_1.contains(2) && !blocked_at_2.contains(1));
    }
}
