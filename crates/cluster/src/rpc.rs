//! Calls to peers, as the node's services make them.
//!
//! - [`Rpc::call`] sends one request to one node (looked up in membership)
//!   and gives its answer or a typed [`PeerError`]; an error answer is a
//!   [`PeerError::Refused`] carrying the peer's [`ErrorDetail`].
//!   [`Rpc::call_for`] also checks that the answer is of the kind asked
//!   for, with the extractors of [`Response`] (`Response::into_merged`,
//!   ...), so no service matches answers by hand. [`Rpc::read`],
//!   [`Rpc::merge`] and [`Rpc::hint`] are the calls of the request paths.
//! - [`Fanout`] sends a request to a set of nodes at once and waits until
//!   the answers meet a [`Requirement`] (a count, per data center, in each
//!   ring while nodes move). It keeps the answers and the failures, may
//!   start another call in place of a failed one (a stand-in for a replica
//!   that just died), and lets the calls still running finish in the
//!   background ([`Fanout::finish`]), at most [`BACKGROUND_FANOUTS_MAX`] at
//!   once.
//!
//! Garage's `RpcHelper::try_call_many` with a quorum strategy is the model.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::api::KvError;
use crate::causality::DecodeError;
use crate::causality::types::Record;
use crate::id::{NodeId, display};
use crate::membership::Membership;
use crate::net::message::{DigestList, ErrorDetail, NodeState, Request, Response};
use crate::net::{BoxFut, Peer, Transport, TransportError};

/// Why a call to a peer gave no usable answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    /// Membership knows no address for the node.
    #[error("unknown node")]
    UnknownNode,
    /// The request or its answer was lost, or the peer was not reached.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The peer answered with an error.
    #[error("{0}")]
    Refused(RemoteError),
    /// The peer answered with another kind of answer than the request asks.
    #[error("unexpected answer: {0}")]
    Unexpected(&'static str),
    /// The peer's record does not decode.
    #[error("bad record: {0}")]
    BadRecord(#[from] DecodeError),
    /// This node's own part of a fan-out failed.
    #[error("{0}")]
    Local(#[from] KvError),
}

/// An error answer of a peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RemoteError {
    /// The stable wire code.
    pub code: String,
    /// For people; never parsed.
    pub message: String,
    /// The typed error; `None` from nodes that send none (see
    /// [`crate::net::message`], "Error answers").
    /// Boxed: a peer error stays small on the happy path.
    pub detail: Option<Box<ErrorDetail>>,
}

impl PeerError {
    /// The refusal's typed detail, when the peer refused with one.
    pub fn detail(&self) -> Option<&ErrorDetail> {
        match self {
            Self::Refused(r) => r.detail.as_deref(),
            _ => None,
        }
    }

    /// The refusal's wire code, when the peer refused.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Refused(r) => Some(&r.code),
            _ => None,
        }
    }

    /// True when the request certainly never reached the peer's handler
    /// (nothing can have been applied there).
    pub fn not_delivered(&self) -> bool {
        matches!(
            self,
            Self::UnknownNode
                | Self::Transport(TransportError::Unreachable(_) | TransportError::Overloaded)
        )
    }
}

/// Calls to peers on behalf of one node.
#[derive(Clone)]
pub struct Rpc {
    transport: Arc<dyn Transport>,
    membership: Arc<Membership>,
    timeout: Duration,
}

impl Rpc {
    /// `timeout` is the request paths' wait for one replica.
    pub fn new(
        transport: Arc<dyn Transport>,
        membership: Arc<Membership>,
        timeout: Duration,
    ) -> Self {
        Self {
            transport,
            membership,
            timeout,
        }
    }

    /// The request paths' wait for one replica.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    // Every call builds the transport's boxed future at once and returns a
    // small future that awaits it: a fan-out holds many of these, and a
    // future moved around is copied whole.

    /// One request to `to`; an error answer is [`PeerError::Refused`].
    pub fn call(
        &self,
        to: NodeId,
        req: Request,
        timeout: Duration,
    ) -> impl Future<Output = Result<Response, PeerError>> + Send + 'static {
        let sent = self
            .membership
            .peer(to)
            .map(|peer| self.transport.call(&peer, req, timeout));
        async move { refused(sent.ok_or(PeerError::UnknownNode)?.await?) }
    }

    /// One request to `peer` (a seed known only by its address has id 0).
    pub fn call_peer(
        &self,
        peer: &Peer,
        req: Request,
        timeout: Duration,
    ) -> impl Future<Output = Result<Response, PeerError>> + Send + 'static {
        let sent = self.transport.call(peer, req, timeout);
        async move { refused(sent.await?) }
    }

    /// One request to `to` whose answer `pick` takes apart; an answer of
    /// another kind is [`PeerError::Unexpected`].
    pub fn call_for<T: Send + 'static>(
        &self,
        to: NodeId,
        req: Request,
        timeout: Duration,
        pick: fn(Response) -> Result<T, Response>,
    ) -> impl Future<Output = Result<T, PeerError>> + Send + 'static {
        let answer = self.call(to, req, timeout);
        async move { pick(answer.await?).map_err(|other| PeerError::Unexpected(other.kind_name())) }
    }

    /// A replica's record of `key` (empty when it has none).
    pub fn read(
        &self,
        to: NodeId,
        key: Bytes,
    ) -> impl Future<Output = Result<Record, PeerError>> + Send + 'static {
        let raw = self.read_raw(to, key, self.timeout);
        async move {
            match raw.await? {
                None => Ok(Record::default()),
                Some(bytes) => Ok(Record::decode(&bytes)?),
            }
        }
    }

    /// A replica's record of `key` as stored, not decoded.
    pub fn read_raw(
        &self,
        to: NodeId,
        key: Bytes,
        timeout: Duration,
    ) -> impl Future<Output = Result<Option<Bytes>, PeerError>> + Send + 'static {
        self.call_for(to, Request::Read { key }, timeout, Response::into_record)
    }

    /// Merges `record` into a replica's own record of `key`.
    pub fn merge(
        &self,
        to: NodeId,
        key: Bytes,
        record: Bytes,
    ) -> impl Future<Output = Result<(), PeerError>> + Send + 'static {
        self.merge_within(to, key, record, self.timeout)
    }

    /// [`Rpc::merge`] with its own timeout.
    pub fn merge_within(
        &self,
        to: NodeId,
        key: Bytes,
        record: Bytes,
        timeout: Duration,
    ) -> impl Future<Output = Result<(), PeerError>> + Send + 'static {
        let req = Request::Merge { key, record };
        self.call_for(to, req, timeout, Response::into_merged)
    }

    /// Merges a batch of records (key, encoded sibling set) into a
    /// replica's own, checksummed ([`Request::StreamPush`]: what streams
    /// and imports send).
    pub fn push_records(
        &self,
        to: NodeId,
        entries: Vec<(Bytes, Bytes)>,
        timeout: Duration,
    ) -> impl Future<Output = Result<(), PeerError>> + Send + 'static {
        let crc = crate::net::message::stream_crc(&entries);
        let req = Request::StreamPush { entries, crc };
        self.call_for(to, req, timeout, Response::into_merged)
    }

    /// Asks `via` to hold `record` of `key` for `target` (hinted handoff).
    pub fn hint(
        &self,
        via: NodeId,
        target: NodeId,
        key: Bytes,
        record: Bytes,
        timeout: Duration,
    ) -> impl Future<Output = Result<(), PeerError>> + Send + 'static {
        let req = Request::Hint {
            target,
            key,
            record,
        };
        self.call_for(via, req, timeout, Response::into_merged)
    }

    /// A round trip to `to`.
    pub fn ping(
        &self,
        to: NodeId,
        timeout: Duration,
    ) -> impl Future<Output = Result<(), PeerError>> + Send + 'static {
        self.call_for(to, Request::Ping, timeout, Response::into_pong)
    }
}

/// An error answer as [`PeerError::Refused`].
fn refused(answer: Response) -> Result<Response, PeerError> {
    match answer {
        Response::Error {
            code,
            message,
            detail,
        } => Err(PeerError::Refused(RemoteError {
            code,
            message,
            detail: detail.map(Box::new),
        })),
        answer => Ok(answer),
    }
}

impl Response {
    pub fn into_pong(self) -> Result<(), Self> {
        match self {
            Self::Pong => Ok(()),
            other => Err(other),
        }
    }

    pub fn into_merged(self) -> Result<(), Self> {
        match self {
            Self::Merged => Ok(()),
            other => Err(other),
        }
    }

    pub fn into_record(self) -> Result<Option<Bytes>, Self> {
        match self {
            Self::Record(r) => Ok(r),
            other => Err(other),
        }
    }

    pub fn into_gossip(self) -> Result<Vec<NodeState>, Self> {
        match self {
            Self::Gossip { states } => Ok(states),
            other => Err(other),
        }
    }

    /// The outcome of a forwarded write.
    pub fn into_coordinated(self) -> Result<crate::api::WriteOutcome, Self> {
        match self {
            Self::Coordinated(out) => Ok(crate::api::WriteOutcome {
                applied: out.applied,
                previous: out.previous.map(|(value, hlc, actor, expires_at_ms)| {
                    crate::api::Sibling {
                        value,
                        hlc,
                        actor,
                        expires_at_ms,
                    }
                }),
                integer: None,
            }),
            Self::CoordinatedTyped { applied, integer } => Ok(crate::api::WriteOutcome {
                applied,
                previous: None,
                integer: Some(integer),
            }),
            other => Err(other),
        }
    }

    /// `(entries, more, crc)` of a stream batch.
    #[allow(clippy::type_complexity)]
    pub fn into_stream_batch(self) -> Result<(Vec<(Bytes, Bytes)>, bool, u32), Self> {
        match self {
            Self::StreamBatch { entries, more, crc } => Ok((entries, more, crc)),
            other => Err(other),
        }
    }

    /// `(keys, root, children)` of a Merkle answer.
    pub fn into_merkle_nodes(self) -> Result<(u64, u64, Vec<u64>), Self> {
        match self {
            Self::MerkleNodes {
                keys,
                root,
                children,
            } => Ok((keys, root, children)),
            other => Err(other),
        }
    }

    pub fn into_range_digests(self) -> Result<Vec<DigestList>, Self> {
        match self {
            Self::RangeDigests { ranges } => Ok(ranges),
            other => Err(other),
        }
    }
}

/// What a fan-out waits for.
pub trait Requirement {
    /// True when the nodes in `acked` meet it.
    fn met(&self, acked: &[NodeId]) -> bool;
    /// How many answers it needs, for errors.
    fn required(&self) -> usize;
}

/// Every node of a list.
pub struct All(pub Vec<NodeId>);

impl Requirement for All {
    fn met(&self, acked: &[NodeId]) -> bool {
        self.0.iter().all(|id| acked.contains(id))
    }

    fn required(&self) -> usize {
        self.0.len()
    }
}

/// One call of a fan-out: the node called, the replica it is made for (a
/// stand-in holds a hint for another replica), and whether its answer
/// counts as that replica's (a hint under strict quorum does not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Call {
    pub to: NodeId,
    pub replica: NodeId,
    pub counts: bool,
}

impl Call {
    /// A call to a replica, counting for itself.
    pub fn replica(id: NodeId) -> Self {
        Self {
            to: id,
            replica: id,
            counts: true,
        }
    }

    /// True for a call to the replica itself (not to a stand-in).
    pub fn is_direct(&self) -> bool {
        self.to == self.replica
    }
}

/// A call's outcome.
pub type Answer<T> = (Call, Result<T, PeerError>);

/// Why a fan-out did not meet its requirement.
#[derive(Debug, Clone)]
pub struct Shortfall {
    pub required: usize,
    /// The nodes whose answers counted.
    pub acked: Vec<NodeId>,
    /// Those of `acked` that answered themselves (not through a stand-in's
    /// hint).
    pub direct: Vec<NodeId>,
    pub failures: Vec<(Call, PeerError)>,
}

impl Shortfall {
    /// The failures, one `node: why` each.
    pub fn why(&self) -> String {
        self.failures
            .iter()
            .map(|(call, e)| format!("{}: {e}", display(call.to)))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Fan-outs finishing in the background at once, at most; beyond it the
/// calls still running are dropped (see [`Fanout::finish`]).
pub const BACKGROUND_FANOUTS_MAX: usize = 1024;

/// Where fan-outs finish once their request no longer waits for them.
#[derive(Clone)]
pub struct Background {
    slots: Arc<Semaphore>,
}

impl Default for Background {
    fn default() -> Self {
        Self {
            slots: Arc::new(Semaphore::new(BACKGROUND_FANOUTS_MAX)),
        }
    }
}

impl Background {
    /// A slot, when one is free now.
    fn try_slot(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.slots).try_acquire_owned().ok()
    }

    /// Fan-outs finishing now.
    pub fn running(&self) -> usize {
        BACKGROUND_FANOUTS_MAX - self.slots.available_permits()
    }
}

/// A request sent to several nodes at once.
pub struct Fanout<T> {
    calls: FuturesUnordered<BoxFut<Answer<T>>>,
    /// Every call pushed, answered or not.
    pushed: Vec<Call>,
    acked: Vec<NodeId>,
    direct: Vec<NodeId>,
    answers: Vec<(Call, T)>,
    failures: Vec<(Call, PeerError)>,
}

impl<T: Send + 'static> Default for Fanout<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Send + 'static> Fanout<T> {
    pub fn new() -> Self {
        Self {
            calls: FuturesUnordered::new(),
            pushed: Vec::new(),
            acked: Vec::new(),
            direct: Vec::new(),
            answers: Vec::new(),
            failures: Vec::new(),
        }
    }

    /// Starts `call`.
    pub fn push(
        &mut self,
        call: Call,
        work: impl Future<Output = Result<T, PeerError>> + Send + 'static,
    ) {
        self.pushed.push(call);
        self.calls.push(Box::pin(async move { (call, work.await) }));
    }

    /// Counts an outcome had without a call (this node's own part).
    pub fn answered(&mut self, call: Call, outcome: Result<T, PeerError>) {
        self.take(call, outcome);
    }

    /// Calls still running.
    pub fn running(&self) -> usize {
        self.calls.len()
    }

    /// The nodes whose answers counted so far.
    pub fn acked(&self) -> &[NodeId] {
        &self.acked
    }

    /// The answers so far.
    pub fn answers(&self) -> &[(Call, T)] {
        &self.answers
    }

    /// Takes the answers so far.
    pub fn take_answers(&mut self) -> Vec<(Call, T)> {
        std::mem::take(&mut self.answers)
    }

    fn take(&mut self, call: Call, result: Result<T, PeerError>) {
        crate::slowlog::note_replica_answer(call.to, result.is_ok());
        match result {
            Ok(value) => {
                if call.counts && !self.acked.contains(&call.replica) {
                    self.acked.push(call.replica);
                }
                if call.to == call.replica && !self.direct.contains(&call.replica) {
                    self.direct.push(call.replica);
                }
                self.answers.push((call, value));
            }
            Err(e) => self.failures.push((call, e)),
        }
    }

    /// Waits until the answers meet `req`, or no call is left. A failed
    /// call is offered to `replace`, which may start another in its place.
    pub async fn wait(
        &mut self,
        req: &impl Requirement,
        mut replace: impl FnMut(Call, &PeerError) -> Option<(Call, BoxFut<Result<T, PeerError>>)>,
    ) -> Result<(), Shortfall> {
        while !req.met(&self.acked) {
            let Some((call, result)) = self.calls.next().await else {
                return Err(Shortfall {
                    required: req.required(),
                    acked: self.acked.clone(),
                    direct: self.direct.clone(),
                    failures: self.failures.clone(),
                });
            };
            if let Err(e) = &result
                && let Some((next, work)) = replace(call, e)
            {
                self.push(next, work);
            }
            self.take(call, result);
        }
        Ok(())
    }

    /// Lets the calls still running finish in a background task, then
    /// hands every late outcome to `then` (in that task, even when no call
    /// was left). A request never waits for this: when every background
    /// slot is taken, the calls still running are dropped and returned
    /// (`Err`), for the caller to make up for them (a hint held here, a read
    /// repair skipped), and `then` is not called.
    pub fn finish<F>(
        mut self,
        background: &Background,
        then: impl FnOnce(Vec<Answer<T>>) -> F + Send + 'static,
    ) -> Result<(), Vec<Call>>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let Some(slot) = background.try_slot() else {
            metrics::counter!("ringkv_background_fanouts_full_total").increment(1);
            return Err(self.running_calls());
        };
        // Built once, right into the task.
        tokio::spawn(async move {
            let mut late = Vec::with_capacity(self.calls.len());
            while let Some(answer) = self.calls.next().await {
                late.push(answer);
            }
            then(late).await;
            drop(slot);
        });
        Ok(())
    }

    /// The calls still running.
    fn running_calls(&self) -> Vec<Call> {
        let done = |c: &Call| {
            self.answers.iter().any(|(a, _)| a == c) || self.failures.iter().any(|(f, _)| f == c)
        };
        self.pushed.iter().copied().filter(|c| !done(c)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct AtLeast(usize);

    impl Requirement for AtLeast {
        fn met(&self, acked: &[NodeId]) -> bool {
            acked.len() >= self.0
        }
        fn required(&self) -> usize {
            self.0
        }
    }

    async fn after(ms: u64, r: Result<u64, PeerError>) -> Result<u64, PeerError> {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        r
    }

    #[tokio::test(start_paused = true)]
    async fn a_fanout_answers_at_its_requirement_and_finishes_the_rest_later() {
        let mut f = Fanout::new();
        f.answered(Call::replica(1), Ok(10));
        f.push(Call::replica(2), after(5, Ok(20)));
        f.push(Call::replica(3), after(50, Ok(30)));
        let started = tokio::time::Instant::now();
        f.wait(&AtLeast(2), |_, _| None).await.expect("met");
        assert_eq!(started.elapsed(), Duration::from_millis(5));
        assert_eq!(f.acked(), &[1, 2]);
        assert_eq!(f.running(), 1);
        let (tx, rx) = tokio::sync::oneshot::channel();
        f.finish(&Background::default(), move |late| async move {
            let _ = tx.send(late);
        })
        .expect("a free slot");
        let late = rx.await.expect("late answers");
        assert_eq!(late.len(), 1);
        assert_eq!(late[0].0, Call::replica(3));
        assert_eq!(late[0].1, Ok(30));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_call_may_be_replaced_and_the_replacement_counts_for_the_replica() {
        let mut f: Fanout<u64> = Fanout::new();
        f.push(
            Call::replica(2),
            after(1, Err(PeerError::Transport(TransportError::Closed))),
        );
        f.push(Call::replica(3), after(2, Ok(3)));
        f.wait(&AtLeast(2), |call, _| {
            let stand_in = Call { to: 9, ..call };
            Some((stand_in, Box::pin(after(1, Ok(9))) as BoxFut<_>))
        })
        .await
        .expect("met through the stand-in");
        let mut acked = f.acked().to_vec();
        acked.sort_unstable();
        assert_eq!(acked, vec![2, 3]);
        assert!(f.answers().iter().any(|(c, v)| c.to == 9 && *v == 9));
    }

    #[tokio::test(start_paused = true)]
    async fn a_fanout_short_of_its_requirement_says_who_failed_and_why() {
        let mut f: Fanout<u64> = Fanout::new();
        f.answered(Call::replica(1), Ok(1));
        f.push(Call::replica(2), after(1, Err(PeerError::UnknownNode)));
        // A call that counts for nobody does not help.
        f.push(
            Call {
                counts: false,
                ..Call::replica(3)
            },
            after(1, Ok(3)),
        );
        let short = f.wait(&AtLeast(2), |_, _| None).await.expect_err("short");
        assert_eq!(short.required, 2);
        assert_eq!(short.acked, vec![1]);
        assert_eq!(short.why(), format!("{}: unknown node", display(2)));
    }

    #[tokio::test(start_paused = true)]
    async fn with_every_slot_taken_the_calls_still_running_are_handed_back() {
        let background = Background::default();
        for _ in 0..BACKGROUND_FANOUTS_MAX {
            let mut f: Fanout<u64> = Fanout::new();
            f.push(Call::replica(2), std::future::pending());
            f.finish(&background, |_| async {}).expect("a free slot");
        }
        assert_eq!(background.running(), BACKGROUND_FANOUTS_MAX);
        let mut f: Fanout<u64> = Fanout::new();
        f.answered(Call::replica(1), Ok(1));
        f.push(Call::replica(2), after(1, Ok(2)));
        f.push(Call::replica(3), std::future::pending());
        f.wait(&AtLeast(2), |_, _| None).await.expect("met");
        let dropped = f
            .finish(&background, |_| async {})
            .expect_err("no slot left");
        assert_eq!(
            dropped,
            vec![Call::replica(3)],
            "only the call still running"
        );
    }

    #[test]
    fn all_needs_every_node() {
        let all = All(vec![1, 2, 3]);
        assert!(!all.met(&[1, 3]));
        assert!(all.met(&[3, 2, 1, 7]));
        assert_eq!(all.required(), 3);
    }
}
