//! Fault-injection wiring of a node, on only with `[debug] fault_injection =
//! true`: a skewable clock, a transport and a peer handler that honour a
//! blocked-peer set, and the `/v1/debug/*` routes that change both. Without
//! the flag none of this is built and the node runs the plain types.

use std::sync::Arc;

use ringkv_cluster::net::{
    BlockedPeers, FaultyHandler, FaultyTransport, Handler, TcpTransport, Transport,
};
use ringkv_env::{SharedClock, SkewedClock};

/// A node's fault hooks.
pub struct FaultHooks {
    blocked: Arc<BlockedPeers>,
    clock: Arc<SkewedClock>,
}

impl FaultHooks {
    /// Hooks over `clock` (which stays the source of real time).
    pub fn new(clock: SharedClock) -> Arc<Self> {
        tracing::warn!(
            "fault injection is on: /v1/debug/* can partition this node and skew its clock"
        );
        Arc::new(Self {
            blocked: BlockedPeers::new(),
            clock: Arc::new(SkewedClock::new(clock)),
        })
    }

    /// The skewable clock every component of the node should use.
    pub fn clock(&self) -> SharedClock {
        self.clock.clone()
    }
}

impl ringkv_http::FaultControl for FaultHooks {
    fn partition(&self, peers: Vec<u64>) {
        self.blocked.set(peers);
    }

    fn heal(&self) {
        self.blocked.clear();
        self.clock.set_offset_ms(0);
    }

    fn skew(&self, offset_ms: i64) {
        self.clock.set_offset_ms(offset_ms);
    }

    fn state(&self) -> (Vec<u64>, i64) {
        (self.blocked.list(), self.clock.offset_ms())
    }
}

/// The node's transport: `tcp`, behind the blocked-peer set when hooked.
pub fn transport(hooks: Option<&Arc<FaultHooks>>, tcp: Arc<TcpTransport>) -> Arc<dyn Transport> {
    match hooks {
        Some(h) => Arc::new(FaultyTransport::new(tcp, Arc::clone(&h.blocked))),
        None => Arc::new(tcp),
    }
}

/// The node's handler for peers: refuses blocked peers when hooked.
pub fn handler(hooks: Option<&Arc<FaultHooks>>, inner: Arc<dyn Handler>) -> Arc<dyn Handler> {
    match hooks {
        Some(h) => Arc::new(FaultyHandler::new(inner, Arc::clone(&h.blocked))),
        None => inner,
    }
}

/// `router` plus the debug routes when hooked.
pub fn routes(hooks: Option<&Arc<FaultHooks>>, router: axum::Router) -> axum::Router {
    match hooks {
        Some(h) => router.merge(ringkv_http::debug_router(Arc::clone(h) as Arc<_>)),
        None => router,
    }
}
