//! A node's side of its peers' requests: each goes to the service that owns
//! it.

use bytes::Bytes;

use super::Node;
use crate::causality::SiblingSet;
use crate::id::NodeId;
use crate::net::message::{ErrorDetail, Request, Response};
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

    /// The record a peer asks this replica to merge.
    fn decode_merged(record: &Bytes) -> Result<SiblingSet, Response> {
        SiblingSet::decode(record).map_err(|e| {
            Response::error(ErrorDetail::InvalidArgument(format!(
                "record does not decode: {e}"
            )))
        })
    }

    /// Answers the requests that need no waiting (a ping, a replica read,
    /// a buffered merge when writes do not block) on the spot, as
    /// [`Node::answer`] would; gives the others back.
    fn answer_now(&self, req: Request) -> Handled {
        Handled::Now(match req {
            Request::Ping => Response::Pong,
            Request::Read { key } => self.read_answer(&key),
            Request::Merge { key, record } if !self.store().blocking_writes() => {
                match Self::decode_merged(&record) {
                    // Buffered: the transport has the log buffer written
                    // before the answer goes out (`Handler::before_reply`).
                    Ok(set) => match self
                        .inner
                        .replica
                        .merge_with(&key, &set, LogWrite::Buffered)
                    {
                        Ok(_) => Response::Merged,
                        Err(e) => Response::from(&e),
                    },
                    Err(answer) => answer,
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
            Request::Gossip { states } => s.gossip.answer(states).await,
            Request::Read { key } => self.read_answer(&key),
            Request::Merge { key, record } => {
                let set = match Self::decode_merged(&record) {
                    Ok(set) => set,
                    Err(answer) => return answer,
                };
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
            } => s.hints.accept(target, &key, &record),
            req @ (Request::StreamRead { .. } | Request::StreamPush { .. }) => {
                s.movements.answer(req).await
            }
            req @ (Request::MerkleNodes { .. } | Request::RangeDigests { .. }) => {
                match s.anti_entropy.answer(req).await {
                    Ok(resp) => resp,
                    Err(e) => Response::from(&e),
                }
            }
            req @ (Request::Coordinate(_) | Request::CoordinateOnce { .. }) => {
                s.coord.answer_forwarded(from, req).await
            }
        }
    }
}

impl<S: LocalStore> Handler for Node<S> {
    fn handle(&self, from: NodeId, req: Request) -> BoxFut<Response> {
        let node = self.clone();
        Box::pin(async move { node.answer(from, req).await })
    }

    fn handle_now(&self, _from: NodeId, req: Request) -> Handled {
        self.answer_now(req)
    }

    fn before_reply(&self) -> Result<(), crate::api::KvError> {
        self.release_buffered()
    }
}
