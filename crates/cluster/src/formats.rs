//! Which record formats each member reads: the gate of the data types
//! during a rolling upgrade (docs/design/data-types.md, "Rolling upgrade").
//!
//! A record of a data type is format 2, which a node of a version before
//! cannot decode. So a node asks each member, once a life (its
//! generation), which formats it reads (`Request::RecordFormats`, answered
//! `Response::RecordFormats { newest }`); a node of a version before cannot
//! decode the request and answers an error: it reads format 1. A
//! coordinator takes a write of a data type only while every member of the
//! cluster, up or down, is known to read format 2 in its current life, so
//! no format-2 record is written while a node that cannot read it could be
//! sent one. (A member that restarts on an older binary is a new life:
//! unknown until asked again, so the gate closes at once.)

use parking_lot::Mutex;

use crate::api::KvError;
use crate::det::HashMap;
use crate::id::NodeId;
use crate::net::message::{NodeStatus, Request, Response};
use crate::node::Node;
use crate::rpc::PeerError;
use crate::store::LocalStore;

pub use crate::causality::RECORD_FORMAT_TYPED;

/// The newest record format this node reads (format 2: records with data
/// types, `causality::types::record`).
pub const RECORD_FORMAT_NEWEST: u8 = RECORD_FORMAT_TYPED;
/// Members asked at once, at most, each pass.
pub const PROBES_PER_PASS_MAX: usize = 16;

/// What each member said it reads, by its life.
#[derive(Debug, Default)]
pub struct RecordFormats {
    known: Mutex<HashMap<NodeId, (u64, u8)>>,
}

impl RecordFormats {
    /// Notes that member `id`, in its life `generation`, reads formats up
    /// to `newest`.
    pub fn note(&self, id: NodeId, generation: u64, newest: u8) {
        self.known.lock().insert(id, (generation, newest));
    }

    /// The newest format member `id` reads in its life `generation`, when
    /// it said so in that life.
    pub fn newest(&self, id: NodeId, generation: u64) -> Option<u8> {
        match self.known.lock().get(&id) {
            Some(&(g, newest)) if g == generation => Some(newest),
            _ => None,
        }
    }

    /// Of `members` (id, generation), those to ask: not heard from in
    /// their current life.
    pub fn to_ask(&self, members: &[(NodeId, u64)]) -> Vec<(NodeId, u64)> {
        let known = self.known.lock();
        (members.iter())
            .filter(|&&(id, generation)| known.get(&id).is_none_or(|&(g, _)| g != generation))
            .copied()
            .collect()
    }

    /// Forgets members no longer in the cluster.
    pub fn retain(&self, members: &[(NodeId, u64)]) {
        self.known
            .lock()
            .retain(|id, _| members.iter().any(|(m, _)| m == id));
    }

    /// Whether a record of `format` may be written: every one of `members`
    /// (id, generation) said, in its current life, that it reads it.
    /// Otherwise the error names how many do not or have not said.
    pub fn gate(&self, members: &[(NodeId, u64)], format: u8) -> Result<(), KvError> {
        let (older, unknown) =
            members.iter().fold((0, 0), |(older, unknown), &(id, g)| {
                match self.newest(id, g) {
                    Some(newest) if newest >= format => (older, unknown),
                    Some(_) => (older + 1, unknown),
                    None => (older, unknown + 1),
                }
            });
        if older + unknown == 0 {
            return Ok(());
        }
        Err(KvError::InvalidArgument(format!(
            "data types wait for every node to run ringkv >= {} (rolling upgrade in progress: \
             {older} node(s) of an older version, {unknown} not asked yet)",
            env!("CARGO_PKG_VERSION")
        )))
    }
}

impl<S: LocalStore> Node<S> {
    /// Every member of the cluster but those that left, this node
    /// included, with its life.
    fn lives(&self) -> Vec<(NodeId, u64)> {
        (self.membership().states().into_iter())
            .filter(|s| s.status != NodeStatus::Left)
            .map(|s| (s.id, s.generation))
            .collect()
    }

    /// Asks the live members not heard from in their current life which
    /// record formats they read (at most [`PROBES_PER_PASS_MAX`] at once;
    /// this node answers for itself). Once per gossip interval; a member
    /// not reached is asked again the next time.
    pub async fn ask_record_formats(&self) {
        let lives = self.lives();
        let formats = self.record_formats();
        formats.retain(&lives);
        let me = self.id();
        let timeout = std::time::Duration::from_millis(self.config().request_timeout_ms);
        let mut asks = Vec::new();
        for (id, generation) in formats.to_ask(&lives) {
            if id == me {
                formats.note(me, generation, RECORD_FORMAT_NEWEST);
            } else if self.membership().is_alive(id) && asks.len() < PROBES_PER_PASS_MAX {
                let answer = self
                    .coordinator()
                    .rpc()
                    .call(id, Request::RecordFormats, timeout);
                asks.push(async move { (id, generation, answer.await) });
            }
        }
        for (id, generation, answer) in futures::future::join_all(asks).await {
            match answer {
                Ok(Response::RecordFormats { newest }) => formats.note(id, generation, newest),
                // A node of a version before cannot decode the request
                // (its transport's answer; any other refusal is asked
                // again).
                Err(PeerError::Refused(r))
                    if r.code == "invalid_argument" && r.message.contains("decode") =>
                {
                    formats.note(id, generation, 1);
                }
                _ => {}
            }
        }
    }

    /// Whether this node may coordinate a write of a data type: every
    /// member reads their records (see the module documentation).
    pub fn data_types_gate(&self) -> Result<(), KvError> {
        self.record_formats()
            .gate(&self.lives(), RECORD_FORMAT_TYPED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_opens_when_every_member_reads_the_format_in_its_life() {
        let f = RecordFormats::default();
        let members = [(1, 10), (2, 20), (3, 30)];
        assert_eq!(f.to_ask(&members), members.to_vec());
        assert!(f.gate(&members, RECORD_FORMAT_TYPED).is_err());
        f.note(1, 10, 2);
        f.note(2, 20, 2);
        f.note(3, 30, 1);
        assert_eq!(f.to_ask(&members), vec![]);
        let closed = f.gate(&members, RECORD_FORMAT_TYPED);
        assert!(
            matches!(&closed, Err(KvError::InvalidArgument(m)) if m.contains("1 node(s) of an older version, 0 not asked")),
            "{closed:?}"
        );
        assert_eq!(f.gate(&members, 1), Ok(()), "everyone reads format 1");
        // Node 3 upgraded: a new life, asked again.
        let members = [(1, 10), (2, 20), (3, 31)];
        assert_eq!(f.to_ask(&members), vec![(3, 31)]);
        assert!(f.gate(&members, RECORD_FORMAT_TYPED).is_err());
        f.note(3, 31, 2);
        assert_eq!(f.gate(&members, RECORD_FORMAT_TYPED), Ok(()));
        // Node 2 restarted (on whatever binary): closed until it answers.
        let members = [(1, 10), (2, 21), (3, 31)];
        assert!(f.gate(&members, RECORD_FORMAT_TYPED).is_err());
        f.retain(&[(1, 10)]);
        assert_eq!(f.to_ask(&members).len(), 2);
    }
}
