//! A node's side of its peers' requests: each goes to the service that owns
//! it.

use bytes::Bytes;

use super::Node;
use crate::causality::types::Record;

use crate::id::NodeId;
use crate::net::message::{ErrorDetail, NodeStatus, Request, Response};
use crate::net::{BoxFut, Handled, Handler};
use crate::replica::LogWrite;
use crate::store::LocalStore;

impl<S: LocalStore> Node<S> {
    /// A replica's read, answered from the local copy.
    fn read_answer(&self, key: &[u8]) -> Response {
        match self.inner.replica.read_raw(key) {
            Ok(rec) => Response::Record(rec),
            Err(e) => Response::from(&e),
        }
    }

    /// The record a peer asks this replica to merge (or to hold as a
    /// hint, or streams to it), held to the limits a client's write is:
    /// a peer cannot store what a client could not.
    fn decode_merged(&self, key: &[u8], record: &Bytes) -> Result<Record, Response> {
        let config = &self.inner.config;
        decode_peer_record(key, record, config.key_bytes_max, config.value_bytes_max)
            .map_err(|why| Response::error(ErrorDetail::InvalidArgument(why)))
    }

    /// Answers the requests that need no waiting (a ping, a replica read,
    /// a buffered merge when writes do not block) on the spot, as
    /// [`Node::answer`] would; gives the others back.
    fn answer_now(&self, from: NodeId, req: Request) -> Handled {
        Handled::Now(match req {
            Request::Ping => Response::Pong,
            Request::Read { key } => self.read_answer(&key),
            Request::Merge { key, record } if !self.store().blocking_writes() => {
                let set = match self.decode_merged(&key, &record) {
                    Ok(set) => set,
                    Err(answer) => return Handled::Now(answer),
                };
                self.tell_if_stale(from, &set);
                // Buffered: the transport has the log buffer written before
                // the answer goes out (`Handler::before_reply`).
                match self
                    .inner
                    .replica
                    .merge_with(&key, &set, LogWrite::Buffered)
                {
                    Ok(_) => Response::Merged,
                    Err(e) => Response::from(&e),
                }
            }
            other => return Handled::Later(other),
        })
    }

    /// Answers a peer's request.
    async fn answer(&self, from: NodeId, req: Request) -> Response {
        let s = &self.inner;
        match req {
            Request::Ping => Response::Pong,
            req @ (Request::Gossip { .. }
            | Request::GossipDigest { .. }
            | Request::GossipStates { .. }) => match s.gossip.answer_request(from, req).await {
                Ok(answer) => answer,
                Err(other) => Response::error(ErrorDetail::InvalidArgument(format!(
                    "unexpected {}",
                    other.kind_name()
                ))),
            },
            Request::Read { key } => self.read_answer(&key),
            Request::Merge { key, record } => {
                let set = match self.decode_merged(&key, &record) {
                    Ok(set) => set,
                    Err(answer) => return answer,
                };
                self.tell_if_stale(from, &set);
                // Buffered: the transport has the log buffer written before
                // the answer goes out (`Handler::before_reply`).
                match s.replica.merge_in(key, set, LogWrite::Buffered).await {
                    Ok(_) => Response::Merged,
                    Err(e) => Response::from(&e),
                }
            }
            Request::Hint {
                target,
                key,
                record,
            } => match self.decode_merged(&key, &record) {
                // Only for a member: hints for an id the ring never had
                // would be "for a gone node" and replayed to the current
                // replicas at once.
                Ok(_)
                    if s.membership
                        .status(target)
                        .is_none_or(|st| st == NodeStatus::Left) =>
                {
                    Response::error(ErrorDetail::InvalidArgument(format!(
                        "hint for node {}, not a member",
                        crate::id::display(target)
                    )))
                }
                Ok(_) => s.hints.accept(target, &key, &record),
                Err(answer) => answer,
            },
            Request::StreamPush { entries, crc } => {
                if crate::net::message::stream_crc(&entries) != crc {
                    metrics::counter!("ringkv_stream_checksum_failures_total").increment(1);
                    return Response::error(ErrorDetail::InvalidArgument(
                        "streamed batch failed its checksum".into(),
                    ));
                }
                // Decoded off the request threads; a batch holding siblings
                // from before this node's truncation point tells the sender
                // the point, as a merge does.
                let (key_max, value_max) = (s.config.key_bytes_max, s.config.value_bytes_max);
                let at = s.replica.truncated_at();
                let stale = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
                let seen = std::sync::Arc::clone(&stale);
                let decode = move |key: &[u8], record: &Bytes| {
                    let set = decode_peer_record(key, record, key_max, value_max)?;
                    if set.touched_by(at) {
                        seen.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                    Ok(set)
                };
                let merged = s.movements.merge_pushed(entries, decode).await;
                if stale.load(std::sync::atomic::Ordering::Relaxed) {
                    self.tell_stale(from);
                }
                match merged {
                    Ok(()) => Response::Merged,
                    Err(e) => Response::from(&e),
                }
            }
            req @ Request::StreamRead { .. } => s.movements.answer(req).await,
            req @ (Request::MerkleNodes { .. } | Request::RangeDigests { .. }) => {
                match s.anti_entropy.answer(req).await {
                    Ok(resp) => resp,
                    Err(e) => Response::from(&e),
                }
            }
            req @ (Request::Coordinate(_) | Request::CoordinateOnce { .. }) => {
                s.coord.answer_forwarded(from, req).await
            }
            Request::Goodbye {
                generation,
                heartbeat,
            } => {
                s.membership.peer_stopped(from, generation, heartbeat);
                Response::Pong
            }
            Request::TruncatePrepare => self.answer_truncation(None).await,
            Request::Truncate { at } => self.answer_truncation(Some(at)).await,
            Request::RecordFormats => Response::RecordFormats {
                newest: crate::formats::RECORD_FORMAT_NEWEST,
            },
        }
    }
}

impl<S: LocalStore> Node<S> {
    /// A node that has left the cluster (decommissioned or removed) is
    /// refused from then on, certificate or not; only its gossip is
    /// answered (its states are not taken), so it learns it is gone.
    fn refuse_departed(&self, from: NodeId, req: &Request) -> Option<Response> {
        if self.inner.membership.status(from) != Some(NodeStatus::Left) {
            return None;
        }
        metrics::counter!("ringkv_departed_requests_refused_total").increment(1);
        Some(match req {
            Request::Gossip { .. }
            | Request::GossipDigest { .. }
            | Request::GossipStates { .. } => Response::Gossip {
                states: self.inner.membership.states(),
            },
            _ => Response::error(ErrorDetail::InvalidArgument(format!(
                "node {} has left the cluster",
                crate::id::display(from)
            ))),
        })
    }
}

impl<S: LocalStore> Handler for Node<S> {
    fn handle(&self, from: NodeId, req: Request) -> BoxFut<Response> {
        if let Some(refused) = self.refuse_departed(from, &req) {
            return Box::pin(async move { refused });
        }
        let node = self.clone();
        Box::pin(async move { node.answer(from, req).await })
    }

    fn handle_now(&self, from: NodeId, req: Request) -> Handled {
        if let Some(refused) = self.refuse_departed(from, &req) {
            return Handled::Now(refused);
        }
        self.answer_now(from, req)
    }

    fn before_reply(&self) -> Result<(), crate::api::KvError> {
        self.release_buffered()
    }
}

/// A record a peer asks this node to merge (or to hold as a hint, or
/// streams to it), held to the limits a client's write is: a peer cannot
/// store what a client could not. Refusals are counted.
pub(crate) fn decode_peer_record(
    key: &[u8],
    record: &Bytes,
    key_bytes_max: usize,
    value_bytes_max: usize,
) -> Result<Record, String> {
    let refuse = |why: String| {
        metrics::counter!("ringkv_peer_records_refused_total").increment(1);
        why
    };
    if key.is_empty() || key.len() > key_bytes_max {
        return Err(refuse(format!(
            "key of {} bytes (this node takes 1 to {key_bytes_max})",
            key.len()
        )));
    }
    let set = Record::decode(record).map_err(|e| refuse(format!("record does not decode: {e}")))?;
    let longest = set
        .strings
        .siblings
        .iter()
        .filter_map(|s| s.value.as_ref().map(Bytes::len))
        .max()
        .unwrap_or(0);
    if longest > value_bytes_max {
        return Err(refuse(format!(
            "value of {longest} bytes exceeds this node's value_bytes_max {value_bytes_max}"
        )));
    }
    Ok(set)
}
