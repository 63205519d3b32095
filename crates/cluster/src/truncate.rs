//! Truncation: emptying the whole cluster at once (`FLUSHALL`, `FLUSHDB`,
//! `POST /v1/truncate`, `ringkv truncate`), as Cassandra's `TRUNCATE` does.
//!
//! A truncation is a **point in time**, an HLC `T`, that every node records
//! durably (its `TRUNCATED` file, see [`crate::node_files`]). A node that
//! knows `T` hides every sibling written at or before it, wherever a record
//! passes through it:
//! - its own reads and the records it sends ([`crate::replica::LocalReplica::read`],
//!   [`crate::replica::LocalReplica::visible_record`]), so replica reads, streams,
//!   anti-entropy digests and exports never carry them;
//! - the records it merges ([`crate::replica::LocalReplica::merge_with`]): replication,
//!   read repair, hint replay, anti-entropy and streaming from a node that
//!   has not heard of `T` yet bring nothing older back;
//! - the replies it gathers as a coordinator (reads and scans), so a slow
//!   replica that missed the truncation does not answer with its old data;
//! - its key census (DBSIZE and INFO fall to 0 at once, see
//!   [`crate::node::census`]) and its compaction, which drops
//!   those siblings from the tables (and records left with none), so the
//!   space is reclaimed: a full compaction starts as soon as `T` is
//!   recorded.
//!
//! Every timestamp a node issues after it learns `T` is above it (the node's
//! HLC observes `T`), so writes after the truncation are never hidden. Dots
//! need nothing: a node's dot counters rise across all keys for its whole
//! life and every start is a new epoch, so a dot issued after the
//! truncation is new even for a key whose record was dropped. Counters do:
//! a node's increments go to its entry of its epoch, updated in place, so a
//! node starts a new epoch, durably, when it answers `TruncatePrepare` and
//! again when it records `T`; no entry then counts increments from both
//! before the prepare and after the point, and dropping the entries at or
//! before `T` is sound (docs/design/data-types.md, "Truncation").
//!
//! # Protocol
//! The coordinating node (the one a client asked):
//! 1. refuses unless every member of the ring (joining and leaving nodes
//!    included) is up as it sees them, naming those that are not;
//! 2. asks every member for its clock (`TruncatePrepare`); `T` is the
//!    greatest answer, so it lies above every write any node acknowledged
//!    before the truncation began, whatever the clocks' skew. A member that
//!    does not answer (or runs a version without truncation) stops it here,
//!    with nothing recorded;
//! 3. sends `Truncate { at: T }` to every member, which records `T` (synced
//!    to disk) before answering, then to any node that joined meanwhile. Success when all answered; otherwise the
//!    error names those that did not. Those that did already hide what is
//!    older, and a node that missed `T` learns it from the others:
//!    every node that knows a point sends it, once per gossip interval, to
//!    one random live peer, and adopts a greater one from the answer; and a
//!    node that receives a record with siblings at or before its point
//!    sends the point back to the sender at once.
//!
//! Writes concurrent with a truncation may survive it or not (those whose
//! timestamp is above `T` do). A truncation never waits for the space: the
//! compaction runs in the background.
//!
//! A node that missed `T` (step 3 failed for it; the error says so) stamps
//! the writes it coordinates by its own clock until it learns `T`: from
//! the first replica that knows `T` and receives one of those writes
//! stamped at or before it, or by spreading within a few gossip intervals.
//! Until then, such writes are dropped by the replicas that know `T`,
//! though acknowledged. Run the truncation again until it succeeds before
//! writing through that node.
//!
//! # Imports after a truncation
//! An export taken before a truncation holds records older than `T`. Its
//! import stamps every such sibling as written just after it (`T + 1`),
//! keeping its dot, value and expiry
//! ([`crate::causality::SiblingSet::restamp_truncated`]),
//! so the imported keys come back; importing the same file twice stamps the
//! same way, so replicas agree. A record the point hides entirely forgets
//! its version vector ([`crate::causality::SiblingSet::drop_truncated`]),
//! so the import lands even before compaction removed the old record. A
//! key written again since the truncation keeps that write over the
//! import's versions of it when the same node coordinated both (its
//! vector has seen their dots); otherwise they become siblings.

use std::time::Duration;

use ringkv_env::{Rng, SeededRng};

use crate::api::KvError;
use crate::causality::Hlc;
use crate::causality::types::Record;
use crate::id::{NodeId, display};
use crate::net::message::{NodeStatus, Request, Response};
use crate::node::Node;
use crate::rpc::PeerError;
use crate::store::LocalStore;

/// How long a truncation waits for each member at each step.
pub const TRUNCATE_STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// How often a node sends its truncation point back to one peer whose
/// records show it may not know it.
pub const TRUNCATE_TELL_INTERVAL_MS: u64 = 1_000;
/// Peers remembered as told (the memory is cleared when full).
const TRUNCATE_TOLD_MAX: usize = 10_000;

/// How many times a truncation asks the nodes that joined while it
/// recorded its point.
const TRUNCATE_JOIN_ROUNDS: usize = 3;

/// A truncation recorded on every member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncated {
    /// The truncation point (an HLC).
    pub at: Hlc,
    /// The members that recorded it.
    pub nodes: Vec<NodeId>,
}

impl Response {
    /// The parts of a [`Response::Truncation`]: (clock, truncated_at).
    pub fn into_truncation(self) -> Result<(Hlc, Hlc), Response> {
        match self {
            Self::Truncation {
                clock,
                truncated_at,
            } => Ok((clock, truncated_at)),
            other => Err(other),
        }
    }
}

impl<S: LocalStore> Node<S> {
    /// This node's answer to a truncation request: `at` (when given)
    /// recorded durably, then applied; its clock and point now.
    pub(crate) async fn answer_truncation(&self, at: Option<Hlc>) -> Response {
        let done = match at {
            Some(at) => self.truncate_locally(at).await,
            // The prepare: increments from here on go to new entries.
            None => {
                let _one_at_a_time = self.truncating().lock().await;
                self.switch_epoch(None).await.map(|_| ())
            }
        };
        if let Err(e) = done {
            return Response::from(&e);
        }
        let replica = self.replica();
        Response::Truncation {
            clock: replica.clock_now(),
            truncated_at: replica.truncated_at(),
        }
    }

    /// Records the truncation point `at` on this node (synced to disk
    /// first: a point applied but lost at a crash would let hidden records
    /// back), applies it, and starts reclaiming the space.
    pub async fn truncate_locally(&self, at: Hlc) -> Result<(), KvError> {
        let replica = self.replica();
        let _one_at_a_time = self.truncating().lock().await;
        if at <= replica.truncated_at() {
            return Ok(());
        }
        let files = self.files().clone();
        crate::exec::blocking(move || files.save_truncated_at(at))
            .await
            .map_err(|e| KvError::Storage(format!("recording the truncation point: {e}")))?
            .map_err(|e| KvError::Storage(format!("recording the truncation point: {e}")))?;
        if !self.switch_epoch(Some(at)).await? {
            return Ok(());
        }
        tracing::warn!(
            at,
            at_ms = crate::causality::hlc_physical_ms(at),
            "cluster truncated: everything written before this point is dropped"
        );
        metrics::counter!("ringkv_truncations_total").increment(1);
        // The key counts fall at once (see the census), here and in the
        // load this node gossips next.
        let membership = self.membership();
        self.census().truncated(membership, replica.now_ms());
        if let Some(load) = membership.load_of(self.id()) {
            membership.set_load(crate::net::message::Load { keys: 0, ..load });
        }
        let replica = std::sync::Arc::clone(replica);
        tokio::spawn(async move {
            let reclaimed = crate::exec::blocking(move || {
                if replica
                    .store()
                    .compact()
                    .map_err(crate::replica::store_error)?
                {
                    Ok(None)
                } else {
                    replica.purge_truncated().map(Some)
                }
            })
            .await;
            match reclaimed {
                Ok(Ok(purged)) => {
                    tracing::info!(?purged, "space of the truncated records reclaimed")
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "reclaiming truncated records failed; compaction drops them later")
                }
                Err(e) => tracing::warn!(error = %e, "reclaiming truncated records failed"),
            }
        });
        Ok(())
    }

    /// Starts a new epoch, durable before it is used (this node's counter
    /// increments go to new entries from here on, and its dots count from
    /// the epoch's floor), then takes the point `at` when given: both at
    /// once for the writes (see the module documentation). True when the
    /// point rose. The caller holds `truncating()`.
    async fn switch_epoch(&self, at: Option<Hlc>) -> Result<bool, KvError> {
        let files = self.files().clone();
        let replica = std::sync::Arc::clone(self.replica());
        crate::exec::blocking(move || replica.switch_epoch(at, || files.bump_epoch()))
            .await
            .map_err(|e| KvError::Storage(format!("starting a new epoch: {e}")))?
    }

    /// Truncates the whole cluster (see the module documentation).
    pub async fn truncate_cluster(&self) -> Result<Truncated, KvError> {
        let membership = self.membership();
        let me = self.id();
        let mut members: Vec<NodeId> = membership
            .states()
            .into_iter()
            .filter(|s| s.status != NodeStatus::Left)
            .map(|s| s.id)
            .collect();
        members.sort_unstable();
        let down: Vec<NodeId> = members
            .iter()
            .copied()
            .filter(|&id| id != me && !membership.is_alive(id))
            .collect();
        let total = members.len();
        if !down.is_empty() {
            return Err(KvError::Unavailable {
                required: total,
                answered: total - down.len(),
                why: format!(
                    "a truncation needs every node up; down: {}; nothing was truncated",
                    names(self, &down)
                ),
            });
        }
        // 1. Every member's clock: the point lies above all of them.
        let clocks = self.ask_all(&members, None).await;
        let mut at = 0;
        let mut failed = Vec::new();
        for (id, answer) in clocks {
            match answer {
                Ok((clock, _)) => at = at.max(clock),
                Err(why) => failed.push((id, why)),
            }
        }
        if !failed.is_empty() {
            return Err(KvError::Unavailable {
                required: total,
                answered: total - failed.len(),
                why: format!(
                    "a truncation needs every node; {}; nothing was truncated",
                    failures(self, &failed)
                ),
            });
        }
        // 2. Every member records it, and so does any node that joined
        //    meanwhile (asked until no new one appears, a bounded number
        //    of times).
        let mut done = Vec::new();
        let mut asked = members;
        let mut round = asked.clone();
        for _ in 0..TRUNCATE_JOIN_ROUNDS {
            for (id, answer) in self.ask_all(&round, Some(at)).await {
                match answer {
                    Ok(_) => done.push(id),
                    Err(why) => failed.push((id, why)),
                }
            }
            round = membership
                .states()
                .into_iter()
                .filter(|s| s.status != NodeStatus::Left && !asked.contains(&s.id))
                .map(|s| s.id)
                .collect();
            if round.is_empty() {
                break;
            }
            asked.extend(&round);
        }
        // Still joining after the last round: not asked.
        failed.extend(
            round
                .into_iter()
                .map(|id| (id, "joined while the truncation ran".to_string())),
        );
        let total = asked.len();
        if !failed.is_empty() {
            return Err(KvError::Unavailable {
                required: total,
                answered: done.len(),
                why: format!(
                    "truncation recorded on {} of {total} nodes; {}; the nodes that recorded it \
                     hide everything written before it, and the others learn it from them once \
                     reachable; run it again to confirm",
                    done.len(),
                    failures(self, &failed)
                ),
            });
        }
        Ok(Truncated { at, nodes: done })
    }

    /// Sends `TruncatePrepare` (`at` = None) or `Truncate { at }` to every
    /// member at once (this node answers itself); each one's answer.
    async fn ask_all(
        &self,
        members: &[NodeId],
        at: Option<Hlc>,
    ) -> Vec<(NodeId, Result<(Hlc, Hlc), String>)> {
        let me = self.id();
        let rpc = self.coordinator().rpc().clone();
        let calls = members.iter().map(|&id| {
            let node = self.clone();
            let rpc = rpc.clone();
            async move {
                let answer = if id == me {
                    node.answer_truncation(at)
                        .await
                        .into_truncation()
                        .map_err(|r| answer_error(&r))
                } else {
                    let req = match at {
                        None => Request::TruncatePrepare,
                        Some(at) => Request::Truncate { at },
                    };
                    rpc.call_for(id, req, TRUNCATE_STEP_TIMEOUT, Response::into_truncation)
                        .await
                        .map_err(|e| peer_error(&e))
                };
                (id, answer)
            }
        });
        futures::future::join_all(calls).await
    }

    /// Sends this node's truncation point (if any) to one random live
    /// peer, and takes a greater one from its answer: how a node that
    /// missed a truncation learns it. Once per gossip interval.
    pub async fn spread_truncation(&self) {
        let at = self.replica().truncated_at();
        if at == 0 {
            return;
        }
        let draw = SeededRng::new(self.id() ^ self.replica().clock_now()).next_u64();
        let Some(peer) = self.membership().gossip_target(draw) else {
            return;
        };
        if !self.membership().is_alive(peer.id) {
            return;
        }
        self.send_truncation(peer.id, at).await;
    }

    /// Sends the point `at` to `peer`, and takes a greater one from its
    /// answer.
    async fn send_truncation(&self, peer: NodeId, at: Hlc) {
        let answer = self
            .coordinator()
            .rpc()
            .call_for(
                peer,
                Request::Truncate { at },
                TRUNCATE_STEP_TIMEOUT,
                Response::into_truncation,
            )
            .await;
        if let Ok((_, theirs)) = answer
            && theirs > at
            && let Err(e) = self.truncate_locally(theirs).await
        {
            tracing::warn!(error = %e, "recording a peer's truncation point failed");
        }
    }

    /// A peer sent a record holding siblings at or before this node's
    /// truncation point: it may not know the point, and the writes it
    /// coordinates meanwhile would be dropped though acknowledged, so the
    /// point goes back to it at once (to each peer at most once per
    /// [`TRUNCATE_TELL_INTERVAL_MS`]).
    pub(crate) fn tell_if_stale(&self, from: NodeId, record: &Record) {
        if record.touched_by(self.replica().truncated_at()) {
            self.tell_stale(from);
        }
    }

    /// [`Node::tell_if_stale`] once a record from `from` was found to hold
    /// siblings at or before the point (a streamed batch's records are
    /// checked as they are decoded).
    pub(crate) fn tell_stale(&self, from: NodeId) {
        let at = self.replica().truncated_at();
        if at == 0 || from == self.id() {
            return;
        }
        let now = self.replica().now_ms();
        {
            let mut told = self.truncation_told().lock();
            if told
                .get(&from)
                .is_some_and(|&t| now < t.saturating_add(TRUNCATE_TELL_INTERVAL_MS))
            {
                return;
            }
            if told.len() >= TRUNCATE_TOLD_MAX {
                told.clear();
            }
            told.insert(from, now);
        }
        // Called on the transport's tasks; outside a runtime (never, today)
        // the spreading loop tells the peer instead.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let node = self.clone();
            runtime.spawn(async move { node.send_truncation(from, at).await });
        }
    }
}

fn names<S: LocalStore>(node: &Node<S>, ids: &[NodeId]) -> String {
    ids.iter()
        .map(|&id| name(node, id))
        .collect::<Vec<_>>()
        .join(", ")
}

fn name<S: LocalStore>(node: &Node<S>, id: NodeId) -> String {
    match node.membership().peer(id) {
        Some(p) if !p.addr.is_empty() => format!("{} ({})", display(id), p.addr),
        _ => display(id),
    }
}

fn failures<S: LocalStore>(node: &Node<S>, failed: &[(NodeId, String)]) -> String {
    failed
        .iter()
        .map(|(id, why)| format!("{} did not answer: {why}", name(node, *id)))
        .collect::<Vec<_>>()
        .join("; ")
}

fn peer_error(e: &PeerError) -> String {
    match e {
        PeerError::Refused(r) if r.code == "invalid_argument" && r.message.contains("decode") => {
            format!("it runs a version without truncation ({})", r.message)
        }
        other => other.to_string(),
    }
}

fn answer_error(r: &Response) -> String {
    match r {
        Response::Error { message, .. } => message.clone(),
        other => format!("unexpected answer {}", other.kind_name()),
    }
}
