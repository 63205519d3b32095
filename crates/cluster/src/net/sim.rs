//! [`SimNet`]: the in-memory network of the simulation and of the
//! in-process tests, and [`SimTransport`], one node's [`Transport`] on it.
//!
//! Every call draws its fate from the run's seed, in the order calls are
//! made (which the single-threaded runtime fixes): a delay each way (now and
//! then a long one, so messages overtake each other), loss of the request or
//! of the answer, and duplication of the request (the copy arrives later and
//! its answer is dropped). Partitions block directed pairs of nodes. A call
//! to a node that is down fails as a refused connection does; a call lost
//! on the way waits for its timeout, as on a real network.
//!
//! Each node runs with an *incarnation* number. A crash detaches the
//! incarnation, so the tasks a crashed node leaves behind can neither send
//! nor answer: their calls fail as closed, and an answer computed after the
//! crash never leaves.
//!
//! Requests and answers go through the real message codec, and every
//! delivered request is folded into the run's trace hash with its time.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::Hasher;
use std::sync::Arc;
use std::time::Duration;

use super::message::{self, Request, Response};
use super::{BoxFut, Handler, Peer, Transport, TransportError};
use crate::id::NodeId;
use parking_lot::Mutex;
use ringkv_env::{Rng, SeededRng};

/// Message faults, in parts per million of calls, and delays.
#[derive(Debug, Clone, Copy)]
pub struct NetFaults {
    /// Requests lost on the way.
    pub loss_ppm: u32,
    /// Requests delivered twice.
    pub dup_ppm: u32,
    /// Messages held 20-200 ms (others overtake them).
    pub slow_ppm: u32,
    /// One-way delay bounds of other messages, in microseconds.
    pub delay_us_min: u64,
    pub delay_us_max: u64,
}

impl NetFaults {
    /// No loss, no duplication, no slow messages, next to no delay: the
    /// network of in-process tests, which inject their faults themselves.
    pub fn none() -> Self {
        Self {
            loss_ppm: 0,
            dup_ppm: 0,
            slow_ppm: 0,
            delay_us_min: 0,
            delay_us_max: 1,
        }
    }
}

impl Default for NetFaults {
    fn default() -> Self {
        Self {
            loss_ppm: 2_000,
            dup_ppm: 2_000,
            slow_ppm: 5_000,
            delay_us_min: 50,
            delay_us_max: 2_000,
        }
    }
}

/// What the network did, for the report.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct NetStats {
    pub delivered: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub refused: u64,
    pub blocked: u64,
}

/// The run's trace: a hash folded over every event in order.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Trace {
    pub hash: u64,
    pub events: u64,
}

impl Trace {
    pub fn fold(&mut self, at: Duration, bytes: &[u8]) {
        // SipHash with fixed keys: the same on every run of one build.
        let mut h = std::hash::DefaultHasher::new();
        h.write_u64(self.hash);
        h.write_u128(at.as_micros());
        h.write(bytes);
        self.hash = h.finish();
        self.events += 1;
    }
}

struct Host {
    id: u64,
    /// The incarnation attached now, and its handler; `None` while down.
    up: Option<(u64, Arc<dyn Handler>)>,
}

struct State {
    rng: SeededRng,
    hosts: BTreeMap<String, Host>,
    blocked: BTreeSet<(u64, u64)>,
    faults: NetFaults,
    trace: Trace,
    stats: NetStats,
    /// The harness's events (faults, boots) with their times, for reports.
    log: Vec<(Duration, String)>,
    /// Bytes each node sent and received (frames with their 4-byte length
    /// prefix, as on TCP), by node id.
    bytes: BTreeMap<u64, u64>,
    /// Bytes of each kind of request, with their answers.
    bytes_by_kind: BTreeMap<&'static str, u64>,
}

/// Most harness events kept in the log.
const LOG_EVENTS_MAX: usize = 10_000;

/// The network of one simulation.
pub struct SimNet {
    origin: tokio::time::Instant,
    state: Mutex<State>,
}

/// The fate of one call, drawn when it is made.
struct Fate {
    to: u64,
    /// The target's incarnation and handler, `None` when it is down.
    target: Option<(u64, Arc<dyn Handler>)>,
    there: Duration,
    back: Duration,
    lost: bool,
    duplicate: Option<Duration>,
}

impl SimNet {
    pub fn new(seed: u64, origin: tokio::time::Instant, faults: NetFaults) -> Arc<Self> {
        Arc::new(Self {
            origin,
            state: Mutex::new(State {
                rng: SeededRng::new(seed),
                hosts: BTreeMap::new(),
                blocked: BTreeSet::new(),
                faults,
                trace: Trace::default(),
                stats: NetStats::default(),
                log: Vec::new(),
                bytes: BTreeMap::new(),
                bytes_by_kind: BTreeMap::new(),
            }),
        })
    }

    fn now(&self) -> Duration {
        tokio::time::Instant::now().saturating_duration_since(self.origin)
    }

    /// Folds an event of the harness (an operation, a fault) into the trace.
    pub fn record(&self, event: &str) {
        let at = self.now();
        let mut st = self.state.lock();
        st.trace.fold(at, event.as_bytes());
        if !event.starts_with("op ") && st.log.len() < LOG_EVENTS_MAX {
            st.log.push((at, event.to_string()));
        }
    }

    /// The harness's events so far (operations aside), with their times.
    pub fn log(&self) -> Vec<(Duration, String)> {
        self.state.lock().log.clone()
    }

    pub fn trace(&self) -> Trace {
        self.state.lock().trace
    }

    /// Bytes each node has sent and received so far (delivered frames
    /// with their length prefix), by node id.
    pub fn bytes(&self) -> BTreeMap<u64, u64> {
        self.state.lock().bytes.clone()
    }

    /// Bytes of each kind of request delivered so far, with their answers.
    pub fn bytes_by_kind(&self) -> BTreeMap<&'static str, u64> {
        self.state.lock().bytes_by_kind.clone()
    }

    pub fn stats(&self) -> NetStats {
        self.state.lock().stats
    }

    pub fn set_faults(&self, faults: NetFaults) {
        self.state.lock().faults = faults;
    }

    pub fn faults(&self) -> NetFaults {
        self.state.lock().faults
    }

    /// Attaches incarnation `incarnation` of node `id` at `addr`: calls reach
    /// `handler` from now on.
    pub fn attach(&self, id: u64, addr: &str, incarnation: u64, handler: Arc<dyn Handler>) {
        self.state.lock().hosts.insert(
            addr.to_string(),
            Host {
                id,
                up: Some((incarnation, handler)),
            },
        );
    }

    /// Detaches node `id` (it crashed or stopped).
    pub fn detach(&self, id: u64) {
        for host in self.state.lock().hosts.values_mut() {
            if host.id == id {
                host.up = None;
            }
        }
    }

    /// A network without faults of its own, for in-process tests.
    pub fn quiet(seed: u64) -> Arc<Self> {
        Self::new(seed, tokio::time::Instant::now(), NetFaults::none())
    }

    /// Attaches node `id` at the address `node{id}` (in-process tests,
    /// whose nodes have no other address), or back after
    /// [`SimNet::detach`].
    pub fn register(&self, id: NodeId, handler: Arc<dyn Handler>) {
        self.attach(id, &test_addr(id), 1, handler);
    }

    /// Messages from `from` to `to` are lost, one way only.
    pub fn block_one_way(&self, from: NodeId, to: NodeId) {
        self.state.lock().blocked.insert((from, to));
    }

    /// Messages between the two groups are lost, both ways.
    pub fn partition(&self, a: &[u64], b: &[u64]) {
        let mut st = self.state.lock();
        for &x in a {
            for &y in b {
                st.blocked.insert((x, y));
                st.blocked.insert((y, x));
            }
        }
    }

    pub fn heal(&self) {
        self.state.lock().blocked.clear();
    }

    /// The transport of node `id` as [`SimNet::register`] attaches it.
    pub fn test_transport(self: &Arc<Self>, id: NodeId) -> SimTransport {
        self.transport(id, 1)
    }

    /// A transport for incarnation `incarnation` of node `id`.
    pub fn transport(self: &Arc<Self>, id: u64, incarnation: u64) -> SimTransport {
        SimTransport {
            net: Arc::clone(self),
            id,
            incarnation,
        }
    }

    fn incarnation_of(&self, id: u64) -> Option<u64> {
        let st = self.state.lock();
        st.hosts
            .values()
            .find(|h| h.id == id)
            .and_then(|h| h.up.as_ref().map(|(i, _)| *i))
    }

    fn blocked(&self, from: u64, to: u64) -> bool {
        self.state.lock().blocked.contains(&(from, to))
    }

    fn draw(&self, addr: &str) -> Option<Fate> {
        let mut st = self.state.lock();
        let host = st.hosts.get(addr)?;
        let to = host.id;
        let target = host.up.clone();
        let f = st.faults;
        let delay = |rng: &mut SeededRng| {
            if rng.next_u64() % 1_000_000 < u64::from(f.slow_ppm) {
                Duration::from_millis(20 + rng.next_u64() % 180)
            } else {
                let span = f.delay_us_max.saturating_sub(f.delay_us_min).max(1);
                Duration::from_micros(f.delay_us_min + rng.next_u64() % span)
            }
        };
        let there = delay(&mut st.rng);
        let back = delay(&mut st.rng);
        let lost = st.rng.next_u64() % 1_000_000 < u64::from(f.loss_ppm);
        let dup = st.rng.next_u64() % 1_000_000 < u64::from(f.dup_ppm);
        let duplicate = dup.then(|| there + delay(&mut st.rng) + delay(&mut st.rng));
        Some(Fate {
            to,
            target,
            there,
            back,
            lost,
            duplicate,
        })
    }

    fn count(&self, f: impl FnOnce(&mut NetStats)) {
        f(&mut self.state.lock().stats);
    }

    async fn call(
        self: Arc<Self>,
        from: (u64, u64),
        addr: String,
        req: Request,
    ) -> Result<Response, TransportError> {
        let Some(fate) = self.draw(&addr) else {
            self.count(|s| s.refused += 1);
            return Err(TransportError::Unreachable(addr));
        };
        let Some((incarnation, handler)) = fate.target else {
            tokio::time::sleep(fate.there).await;
            self.count(|s| s.refused += 1);
            return Err(TransportError::Unreachable(format!(
                "node {:016x} is down",
                fate.to
            )));
        };
        let kind = req.kind_name();
        let frame = message::encode_request(1, &req)
            .map_err(|e| TransportError::Protocol(e.to_string()))?;
        tokio::time::sleep(fate.there).await;
        let arrived = self.incarnation_of(fate.to) == Some(incarnation);
        if fate.lost || !arrived || self.blocked(from.0, fate.to) {
            self.count(|s| {
                if fate.lost {
                    s.lost += 1;
                } else {
                    s.blocked += 1;
                }
            });
            return std::future::pending().await;
        }
        {
            let at = self.now();
            let mut st = self.state.lock();
            let mut event = Vec::with_capacity(16 + frame.len());
            event.extend_from_slice(&from.0.to_le_bytes());
            event.extend_from_slice(&fate.to.to_le_bytes());
            event.extend_from_slice(&frame);
            st.trace.fold(at, &event);
            st.stats.delivered += 1;
            let len = frame.len() as u64 + 4;
            *st.bytes.entry(from.0).or_default() += len;
            *st.bytes.entry(fate.to).or_default() += len;
            *st.bytes_by_kind.entry(kind).or_default() += len;
        }
        let decode = |frame: bytes::Bytes| -> Result<Request, TransportError> {
            message::decode_request_payload(frame)
                .map_err(|e| TransportError::Protocol(e.to_string()))
        };
        if let Some(after) = fate.duplicate {
            let copy = decode(frame.clone())?;
            let net = Arc::clone(&self);
            let handler = Arc::clone(&handler);
            self.count(|s| s.duplicated += 1);
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                if net.incarnation_of(fate.to) == Some(incarnation) {
                    let _ = handler.handle(from.0, copy).await;
                }
            });
        }
        // The receiver works in a task of its own, as a server does: the
        // caller giving up does not cancel it.
        let req = decode(frame)?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let resp = handler.handle(from.0, req).await;
            // As the TCP transport does before answers go out.
            let _ = tx.send(handler.before_reply().map(|()| resp));
        });
        let resp = rx
            .await
            .map_err(|_| TransportError::Closed)?
            .map_err(|_| TransportError::Closed)?;
        let sent = self.incarnation_of(fate.to) == Some(incarnation)
            && self.incarnation_of(from.0) == Some(from.1)
            && !self.blocked(fate.to, from.0);
        if !sent {
            self.count(|s| s.blocked += 1);
            return std::future::pending().await;
        }
        let frame = message::encode_response(1, &resp)
            .map_err(|e| TransportError::Protocol(e.to_string()))?;
        {
            let len = frame.len() as u64 + 4;
            let mut st = self.state.lock();
            *st.bytes.entry(from.0).or_default() += len;
            *st.bytes.entry(fate.to).or_default() += len;
            *st.bytes_by_kind.entry(kind).or_default() += len;
        }
        tokio::time::sleep(fate.back).await;
        message::decode_response_payload(frame).map_err(|e| TransportError::Protocol(e.to_string()))
    }
}

/// The address [`SimNet::register`] attaches node `id` at.
pub fn test_addr(id: NodeId) -> String {
    format!("node{id}")
}

/// One incarnation of a node on a [`SimNet`].
pub struct SimTransport {
    net: Arc<SimNet>,
    id: u64,
    incarnation: u64,
}

impl Transport for SimTransport {
    fn call(
        &self,
        peer: &Peer,
        req: Request,
        timeout: Duration,
    ) -> BoxFut<Result<Response, TransportError>> {
        let net = Arc::clone(&self.net);
        let from = (self.id, self.incarnation);
        let addr = peer.addr.clone();
        Box::pin(async move {
            if net.incarnation_of(from.0) != Some(from.1) {
                return Err(TransportError::Closed);
            }
            tokio::time::timeout(timeout, net.call(from, addr, req))
                .await
                .unwrap_or(Err(TransportError::Timeout))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::message::ErrorDetail;

    struct Echo;

    impl Handler for Echo {
        fn handle(&self, _from: NodeId, req: Request) -> BoxFut<Response> {
            Box::pin(async move {
                match req {
                    Request::Ping => Response::Pong,
                    _ => Response::error(ErrorDetail::InvalidArgument("unexpected".into())),
                }
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn partitions_heal_and_down_nodes_refuse() {
        let net = SimNet::quiet(1);
        net.register(1, Arc::new(Echo));
        net.register(2, Arc::new(Echo));
        let t1 = net.test_transport(1);
        let p2 = Peer {
            id: 2,
            addr: test_addr(2),
        };
        let timeout = Duration::from_millis(100);
        assert_eq!(
            t1.call(&p2, Request::Ping, timeout).await,
            Ok(Response::Pong)
        );
        net.partition(&[1], &[2]);
        assert_eq!(
            t1.call(&p2, Request::Ping, timeout).await,
            Err(TransportError::Timeout)
        );
        net.heal();
        net.block_one_way(2, 1);
        assert_eq!(
            t1.call(&p2, Request::Ping, timeout).await,
            Err(TransportError::Timeout),
            "the answer is lost on the way back"
        );
        net.heal();
        net.detach(2);
        assert!(matches!(
            t1.call(&p2, Request::Ping, timeout).await,
            Err(TransportError::Unreachable(_))
        ));
        // Back: the same calls go through again.
        net.register(2, Arc::new(Echo));
        assert_eq!(
            t1.call(&p2, Request::Ping, timeout).await,
            Ok(Response::Pong)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn error_answers_keep_their_detail_through_the_codec() {
        let net = SimNet::quiet(2);
        net.register(1, Arc::new(Echo));
        net.register(2, Arc::new(Echo));
        let p2 = Peer {
            id: 2,
            addr: test_addr(2),
        };
        let answer = net
            .test_transport(1)
            .call(
                &p2,
                Request::Read {
                    key: bytes::Bytes::from_static(b"k"),
                },
                Duration::from_secs(1),
            )
            .await;
        assert_eq!(
            answer,
            Ok(Response::error(ErrorDetail::InvalidArgument(
                "unexpected".into()
            )))
        );
    }
}
