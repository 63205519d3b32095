//! Forwarding: a node that is not a replica of a key hands the write to one
//! that is, and the replica's side of it. A forwarded write is applied at
//! most once: each carries `(sender, generation, seq)` and the receiver
//! refuses a copy of one it has seen.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use parking_lot::Mutex;

use super::Coordinator;
use super::plan::Plan;
use crate::api::{Expiry, KvError, WriteOptions, WriteOutcome};
use crate::det::HashSet;
use crate::id::{NodeId, display};
use crate::net::message::{
    CoordinatedOutcome, ErrorDetail, ForwardedWrite, NOT_A_REPLICA, Request, Response, WireContext,
    WriteOp,
};
use crate::replica::Change;
use crate::rpc::PeerError;
use crate::store::LocalStore;

/// Forwarded writes a coordinator remembers, so that a copy of one is not
/// applied twice.
pub const FORWARDS_REMEMBERED_MAX: usize = 16_384;

/// The identity of a forwarded write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct ForwardId {
    sender: NodeId,
    /// The sender's start time, ms.
    generation: u64,
    seq: u64,
}

/// Forwarded writes sent, and those received lately. Only ids: a copy is
/// never answered with the first answer, because nobody waits for it (a
/// forwarder sends one id to one node once; copies come from the network).
pub(super) struct Forwards {
    generation: u64,
    next_seq: AtomicU64,
    seen: Mutex<RecentForwards>,
}

#[derive(Default)]
struct RecentForwards {
    ids: HashSet<ForwardId>,
    order: VecDeque<ForwardId>,
}

impl Forwards {
    pub(super) fn new(generation: u64) -> Self {
        Self {
            generation,
            next_seq: AtomicU64::new(0),
            seen: Mutex::default(),
        }
    }

    /// True the first time `id` is seen.
    fn first(&self, id: ForwardId) -> bool {
        let mut seen = self.seen.lock();
        if !seen.ids.insert(id) {
            return false;
        }
        seen.order.push_back(id);
        if seen.order.len() > FORWARDS_REMEMBERED_MAX
            && let Some(old) = seen.order.pop_front()
        {
            seen.ids.remove(&old);
        }
        true
    }
}

/// What trying the replicas in turn came to.
enum Forwarded {
    /// A replica coordinated it (or refused it for good).
    Answered(Result<WriteOutcome, KvError>),
    /// No replica was reached, or every one declined: nothing was applied
    /// anywhere.
    NotApplied(String),
}

impl<S: LocalStore> Coordinator<S> {
    /// This node is not a replica of the key: a live replica coordinates
    /// the write; when none can take it and hints count, this node
    /// coordinates as a stand-in.
    pub(super) async fn forward_or_stand_in(
        self: &Arc<Self>,
        key: Bytes,
        change: Change,
        opts: WriteOptions,
        plan: &Plan,
    ) -> Result<WriteOutcome, KvError> {
        let strict = self.config.strict_quorum;
        match self.forward(&key, &change, &opts, plan).await {
            Forwarded::Answered(done) => done,
            Forwarded::NotApplied(why) if !strict => {
                self.write_as_stand_in(key, change, opts, &plan.current, why)
                    .await
            }
            Forwarded::NotApplied(why) => Err(KvError::Unavailable {
                required: plan.current.need.count(),
                answered: 0,
                why: format!("no replica could coordinate: {why}"),
            }),
        }
    }

    /// Hands a write to the live replicas in turn until one coordinates it;
    /// a node whose view of the ring differs declines and the next one is
    /// tried.
    async fn forward(
        &self,
        key: &Bytes,
        change: &Change,
        opts: &WriteOptions,
        plan: &Plan,
    ) -> Forwarded {
        let request = Request::CoordinateOnce {
            generation: self.forwards.generation,
            seq: self.forwards.next_seq.fetch_add(1, Ordering::Relaxed),
            write: forwarded_write(key, change, opts),
        };
        // The coordinator's own wait plus one hop.
        let timeout = self.timeout() * 2;
        let mut failures = Vec::new();
        for &id in &plan.live {
            let answer = self
                .rpc
                .call_for(id, request.clone(), timeout, Response::into_coordinated)
                .await;
            crate::slowlog::note_replica_answer(id, answer.is_ok());
            match answer {
                Ok(out) => return Forwarded::Answered(Ok(out)),
                // Declined (nothing was applied there), or not reached at
                // all: the next replica may take it.
                Err(e) if e.code() == Some(NOT_A_REPLICA) || e.not_delivered() => {
                    failures.push(format!("{}: {e}", display(id)));
                }
                Err(PeerError::Refused(refusal)) => {
                    return Forwarded::Answered(Err(error_from_refusal(
                        refusal,
                        plan.current.need.count(),
                        id,
                    )));
                }
                // It may have been applied: do not apply it twice.
                Err(e) => {
                    // Where it went is unknown: every replica may miss it.
                    return Forwarded::Answered(Err(KvError::Incomplete {
                        required: plan.current.need.count(),
                        acked: Box::default(),
                        hinted: Box::default(),
                        missing: plan.current.prefs.clone().into(),
                        why: format!("coordinator {} did not answer: {e}", display(id)),
                    }));
                }
            }
        }
        Forwarded::NotApplied(failures.join("; "))
    }

    /// Answers a forwarded write (`Coordinate`, `CoordinateOnce`).
    pub async fn answer_forwarded(self: &Arc<Self>, from: NodeId, req: Request) -> Response {
        match req {
            Request::Coordinate(write) => self.coordinate_forwarded(write).await,
            Request::CoordinateOnce {
                generation,
                seq,
                write,
            } => {
                let id = ForwardId {
                    sender: from,
                    generation,
                    seq,
                };
                if self.forwards.first(id) {
                    self.coordinate_forwarded(write).await
                } else {
                    Response::error(ErrorDetail::Duplicate)
                }
            }
            other => Response::error(ErrorDetail::InvalidArgument(format!(
                "not a forwarded write: {}",
                other.kind_name()
            ))),
        }
    }

    /// Coordinates a write another node forwarded here, if this node is a
    /// live replica of its key in its current ring; never forwards again
    /// (no loops).
    async fn coordinate_forwarded(self: &Arc<Self>, fw: ForwardedWrite) -> Response {
        let (change, opts) = match write_from_wire(&fw) {
            Ok(w) => w,
            Err(e) => return Response::from(&e),
        };
        let level = opts.consistency.unwrap_or(self.config.default_write);
        // Views of the ring differ for a moment while nodes move: a node
        // that is not a live replica of its current ring says so, and the
        // forwarder tries the next replica.
        match self
            .planner
            .current(&fw.key, level, !self.config.strict_quorum)
        {
            Ok((_, live)) if live.contains(&self.id()) => {}
            Ok(_) => return Response::error(ErrorDetail::NotAReplica),
            Err(e) => return Response::from(&e),
        }
        match self.write(fw.key, change, opts).await {
            Ok(WriteOutcome {
                applied,
                integer: Some(integer),
                ..
            }) => Response::CoordinatedTyped { applied, integer },
            Ok(out) => Response::Coordinated(CoordinatedOutcome {
                applied: out.applied,
                previous: out
                    .previous
                    .map(|p| (p.value, p.hlc, p.actor, p.expires_at_ms)),
            }),
            Err(e) => Response::from(&e),
        }
    }
}

fn forwarded_write(key: &Bytes, change: &Change, opts: &WriteOptions) -> ForwardedWrite {
    let op = match change {
        Change::Put(value) => WriteOp::Put {
            value: value.clone(),
            expiry: opts.expiry,
        },
        Change::Delete => WriteOp::Delete,
        Change::Expiry(e) => WriteOp::SetExpiry { expiry: *e },
        Change::Typed(t) => WriteOp::Typed(t.clone()),
    };
    ForwardedWrite {
        key: key.clone(),
        op,
        consistency: opts.consistency,
        context: opts.context.as_ref().map(WireContext::from_vv),
        condition: opts.condition,
        return_previous: opts.return_previous,
    }
}

/// The client write a forwarded one carries.
fn write_from_wire(fw: &ForwardedWrite) -> Result<(Change, WriteOptions), KvError> {
    let context = fw
        .context
        .as_ref()
        .map(WireContext::to_vv)
        .transpose()
        .map_err(|e| KvError::BadContext(e.to_string()))?;
    let (change, expiry) = match &fw.op {
        WriteOp::Put { value, expiry } => (Change::Put(value.clone()), *expiry),
        WriteOp::Delete => (Change::Delete, Expiry::Never),
        WriteOp::SetExpiry { expiry } => (Change::Expiry(*expiry), Expiry::Never),
        WriteOp::Typed(t) => (Change::Typed(t.clone()), Expiry::Never),
    };
    let opts = WriteOptions {
        consistency: fw.consistency,
        context,
        condition: fw.condition,
        expiry,
        return_previous: fw.return_previous,
    };
    Ok((change, opts))
}

/// The client's error for a write the coordinator `id` refused: the
/// coordinator's own error when it sent its detail; from a node of the
/// version before (code and message only), an error of the same kind whose
/// text quotes the coordinator.
fn error_from_refusal(refusal: crate::rpc::RemoteError, required: usize, id: NodeId) -> KvError {
    if let Some(detail) = refusal.detail {
        return kv_error(*detail);
    }
    let message = format!("coordinator {}: {}", display(id), refusal.message);
    match refusal.code.as_str() {
        "read_only" => KvError::ReadOnly(message),
        "invalid_argument" | "key_too_large" | "value_too_large" => {
            KvError::InvalidArgument(message)
        }
        "bad_context" => KvError::BadContext(message),
        "unavailable" => KvError::Unavailable {
            required,
            answered: 0,
            why: message,
        },
        "shutting_down" => KvError::ShuttingDown,
        "incomplete" => KvError::Incomplete {
            required,
            acked: Box::default(),
            hinted: Box::default(),
            missing: Box::default(),
            why: message,
        },
        _ => KvError::Storage(message),
    }
}

/// The coordinator's error, rebuilt from its typed detail.
pub(crate) fn kv_error(detail: ErrorDetail) -> KvError {
    match detail {
        ErrorDetail::KeyTooLarge { len, max } => KvError::KeyTooLarge {
            len: len as usize,
            max: max as usize,
        },
        ErrorDetail::ValueTooLarge { len, max } => KvError::ValueTooLarge {
            len: len as usize,
            max: max as usize,
        },
        ErrorDetail::InvalidArgument(m) => KvError::InvalidArgument(m),
        ErrorDetail::BadContext(m) => KvError::BadContext(m),
        ErrorDetail::Unavailable {
            required,
            answered,
            why,
        } => KvError::Unavailable {
            required: required as usize,
            answered: answered as usize,
            why,
        },
        ErrorDetail::ReadOnly(m) => KvError::ReadOnly(m),
        ErrorDetail::Storage(m) => KvError::Storage(m),
        ErrorDetail::ShuttingDown => KvError::ShuttingDown,
        ErrorDetail::Incomplete(d) => KvError::Incomplete {
            required: d.required as usize,
            acked: d.acked,
            hinted: d.hinted,
            missing: d.missing,
            why: d.why,
        },
        ErrorDetail::WrongType => KvError::WrongType,
        ErrorDetail::NotAnInteger { hash } => KvError::NotAnInteger { hash },
        ErrorDetail::Overflow => KvError::Overflow,
        ErrorDetail::TooManyElements(m) => KvError::TooManyElements(m),
        other @ (ErrorDetail::NotAReplica | ErrorDetail::Duplicate) => {
            KvError::Storage(other.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_coordinators_error_crosses_the_wire_with_its_kind_and_counts() {
        for e in [
            KvError::Unavailable {
                required: 2,
                answered: 1,
                why: "n1: timed out: after 2, 3".into(),
            },
            KvError::KeyTooLarge { len: 9, max: 8 },
            KvError::ValueTooLarge { len: 17, max: 16 },
            KvError::ReadOnly("log write failed".into()),
            KvError::BadContext("truncated".into()),
            KvError::ShuttingDown,
            KvError::Incomplete {
                required: 3,
                acked: vec![1, 2].into(),
                hinted: vec![4].into(),
                missing: vec![3].into(),
                why: String::new(),
            },
        ] {
            let Response::Error {
                code,
                message,
                detail,
            } = Response::from(&e)
            else {
                panic!("an error answer");
            };
            assert_eq!(code, e.code());
            let refusal = crate::rpc::RemoteError {
                code,
                message,
                detail: detail.map(Box::new),
            };
            assert_eq!(error_from_refusal(refusal, 2, 7), e);
        }
    }

    #[test]
    fn an_older_coordinators_error_keeps_its_kind_and_quotes_it() {
        let refusal = crate::rpc::RemoteError {
            code: "unavailable".into(),
            message: "2 required, 1 answered: replicas down".into(),
            detail: None,
        };
        assert_eq!(
            error_from_refusal(refusal, 2, 7),
            KvError::Unavailable {
                required: 2,
                answered: 0,
                why: format!(
                    "coordinator {}: 2 required, 1 answered: replicas down",
                    display(7)
                ),
            }
        );
    }

    #[test]
    fn copies_of_a_forwarded_write_are_recognised_within_the_window() {
        let f = Forwards::new(1);
        let id = |seq| ForwardId {
            sender: 5,
            generation: 1,
            seq,
        };
        assert!(f.first(id(0)));
        assert!(!f.first(id(0)));
        for seq in 1..=FORWARDS_REMEMBERED_MAX as u64 {
            assert!(f.first(id(seq)));
        }
        // The oldest id fell out of the window.
        assert!(f.first(id(0)));
    }
}
