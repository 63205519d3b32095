//! An in-process network of handlers, with injectable faults, for tests.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use super::message::{self, Kind, Request, Response};
use super::{BoxFut, Handler, Peer, Transport, TransportError};
use crate::det::{HashMap, HashSet};

/// Faults the in-memory network applies.
#[derive(Debug, Default)]
struct Faults {
    /// Directed pairs (from, to) whose messages are lost.
    blocked: HashSet<(u64, u64)>,
    /// Probability in parts per million that a message is lost.
    drop_ppm: u32,
    rng_state: u64,
}

impl Faults {
    fn lost(&mut self, from: u64, to: u64) -> bool {
        if self.blocked.contains(&(from, to)) {
            return true;
        }
        if self.drop_ppm == 0 {
            return false;
        }
        // splitmix64: deterministic for a given seed and call order.
        self.rng_state = self.rng_state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng_state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z % 1_000_000) < u64::from(self.drop_ppm)
    }
}

/// An in-process network of handlers, with injectable faults.
#[derive(Default)]
pub struct MemNetwork {
    handlers: Mutex<HashMap<u64, Arc<dyn Handler>>>,
    faults: Mutex<Faults>,
}

impl MemNetwork {
    pub fn new(seed: u64) -> Arc<Self> {
        let net = Self::default();
        net.faults.lock().rng_state = seed;
        Arc::new(net)
    }

    /// Attaches (or replaces) the handler of node `id`.
    pub fn register(&self, id: u64, handler: Arc<dyn Handler>) {
        self.handlers.lock().insert(id, handler);
    }

    /// Detaches node `id`: calls to it fail as if it crashed.
    pub fn unregister(&self, id: u64) {
        self.handlers.lock().remove(&id);
    }

    /// Loses every message between the two groups, both ways.
    pub fn partition(&self, a: &[u64], b: &[u64]) {
        let mut f = self.faults.lock();
        for &x in a {
            for &y in b {
                f.blocked.insert((x, y));
                f.blocked.insert((y, x));
            }
        }
    }

    /// Loses messages from `from` to `to` only.
    pub fn block_one_way(&self, from: u64, to: u64) {
        self.faults.lock().blocked.insert((from, to));
    }

    pub fn heal(&self) {
        self.faults.lock().blocked.clear();
    }

    /// Loses each message with probability `ppm` / 1,000,000.
    pub fn set_drop_ppm(&self, ppm: u32) {
        self.faults.lock().drop_ppm = ppm;
    }

    /// A transport for node `self_id` on this network.
    pub fn transport(self: &Arc<Self>, self_id: u64) -> MemTransport {
        MemTransport {
            net: Arc::clone(self),
            self_id,
        }
    }
}

/// One node's view of a [`MemNetwork`].
#[derive(Clone)]
pub struct MemTransport {
    net: Arc<MemNetwork>,
    self_id: u64,
}

impl Transport for MemTransport {
    fn call(
        &self,
        peer: &Peer,
        req: Request,
        timeout: Duration,
    ) -> BoxFut<Result<Response, TransportError>> {
        let net = Arc::clone(&self.net);
        let from = self.self_id;
        let to = peer.id;
        Box::pin(async move {
            let lost_there = net.faults.lock().lost(from, to);
            let handler = net.handlers.lock().get(&to).cloned();
            let Some(handler) = handler else {
                return Err(TransportError::Unreachable(format!(
                    "node {to:016x} is down"
                )));
            };
            if lost_there {
                tokio::time::sleep(timeout).await;
                return Err(TransportError::Timeout);
            }
            // Round-trip through the codec so the simulation exercises the
            // real encoding.
            let req: Request = message::encode(Kind::Request, 1, &req)
                .and_then(message::decode_payload)
                .map_err(|e| TransportError::Protocol(e.to_string()))?;
            let resp = tokio::time::timeout(timeout, handler.handle(from, req))
                .await
                .map_err(|_| TransportError::Timeout)?;
            handler.before_reply().map_err(|_| TransportError::Closed)?;
            let resp = message::encode_response(1, &resp)
                .and_then(message::decode_response_payload)
                .map_err(|e| TransportError::Protocol(e.to_string()))?;
            if net.faults.lock().lost(to, from) {
                return Err(TransportError::Timeout);
            }
            Ok(resp)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::message::ErrorDetail;

    struct Echo;

    impl Handler for Echo {
        fn handle(&self, _from: u64, req: Request) -> BoxFut<Response> {
            Box::pin(async move {
                match req {
                    Request::Ping => Response::Pong,
                    _ => Response::error(ErrorDetail::InvalidArgument("unexpected".into())),
                }
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn mem_network_partitions_and_heals() {
        let net = MemNetwork::new(1);
        net.register(1, Arc::new(Echo));
        net.register(2, Arc::new(Echo));
        let t1 = net.transport(1);
        let p2 = Peer {
            id: 2,
            addr: String::new(),
        };
        let ok = t1
            .call(&p2, Request::Ping, Duration::from_millis(100))
            .await;
        assert_eq!(ok, Ok(Response::Pong));
        net.partition(&[1], &[2]);
        let lost = t1
            .call(&p2, Request::Ping, Duration::from_millis(100))
            .await;
        assert_eq!(lost, Err(TransportError::Timeout));
        net.heal();
        net.unregister(2);
        let down = t1
            .call(&p2, Request::Ping, Duration::from_millis(100))
            .await;
        assert!(matches!(down, Err(TransportError::Unreachable(_))));
    }
}
