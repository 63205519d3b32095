//! The one error type of the key-value API: what a refused or failed
//! request is, as every front end reports it (RESP, HTTP) and as it
//! crosses between nodes (`net::message::ErrorDetail`).

use crate::id::NodeId;

/// A failed request, as every front end reports it.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum KvError {
    #[error("key is {len} bytes, the limit is {max}")]
    KeyTooLarge { len: usize, max: usize },
    #[error("value is {len} bytes, the limit is {max}")]
    ValueTooLarge { len: usize, max: usize },
    #[error("{0}")]
    InvalidArgument(String),
    #[error("invalid causal context: {0}")]
    BadContext(String),
    /// Fewer replicas answered than the consistency level needs.
    #[error("{required} required, {answered} answered: {why}")]
    Unavailable {
        required: usize,
        answered: usize,
        why: String,
    },
    /// The local store refuses writes after a failed log write or fsync.
    #[error("store is read-only: {0}")]
    ReadOnly(String),
    #[error("storage error: {0}")]
    Storage(String),
    #[error("node is shutting down")]
    ShuttingDown,
    /// A write that missed its consistency level after it was sent: its
    /// outcome is unknown, and it is not undone. `acked` applied it (reads
    /// that reach them may see it now); `hinted` have it waiting for them
    /// in a stand-in's hint (they get it when they answer again); `missing`
    /// did not answer, and get it through a hint held by the coordinator or
    /// through anti-entropy, unless a later write supersedes it. (A write
    /// refused before anything was sent is [`KvError::Unavailable`].)
    #[error(
        "outcome unknown: {required} acknowledgements required, {} received; applied on {}{}{}; the write is not undone{}{}",
        acked.len() + hinted.len(),
        if acked.is_empty() { "no replica".to_string() } else { id_list("", acked) },
        id_list("; hinted for ", hinted),
        id_list("; missing on ", missing),
        if missing.is_empty() && hinted.is_empty() { String::new() } else { ": it reaches the others through hints or anti-entropy".into() },
        if why.is_empty() { String::new() } else { format!(" ({why})") }
    )]
    Incomplete {
        required: usize,
        acked: Box<[NodeId]>,
        hinted: Box<[NodeId]>,
        missing: Box<[NodeId]>,
        why: String,
    },
    /// A command of one data type on a key that holds another (Redis's
    /// `WRONGTYPE`).
    #[error("Operation against a key holding the wrong kind of value")]
    WrongType,
    /// An increment of a value that is not a 64-bit integer (Redis's texts:
    /// the key's value, or, `hash`, a field's).
    #[error("{}", if *.hash { "hash value is not an integer" } else { "value is not an integer or out of range" })]
    NotAnInteger { hash: bool },
    /// An increment that would leave the signed 64-bit range.
    #[error("increment or decrement would overflow")]
    Overflow,
    /// A write that would make a data type hold more than its limit (the
    /// message names it).
    #[error("{0}")]
    TooManyElements(String),
}

/// `prefix` and the ids, comma-separated, or nothing when there are none.
fn id_list(prefix: &str, ids: &[NodeId]) -> String {
    if ids.is_empty() {
        return String::new();
    }
    let ids: Vec<String> = ids.iter().map(|&id| crate::id::display(id)).collect();
    format!("{prefix}{}", ids.join(", "))
}

impl KvError {
    /// A stable, machine-readable code for the error (HTTP JSON `code`, RESP
    /// error prefix in lower case).
    pub fn code(&self) -> &'static str {
        match self {
            Self::KeyTooLarge { .. } => "key_too_large",
            Self::ValueTooLarge { .. } => "value_too_large",
            Self::InvalidArgument(_) => "invalid_argument",
            Self::BadContext(_) => "bad_context",
            Self::Unavailable { .. } => "unavailable",
            Self::ReadOnly(_) => "read_only",
            Self::Storage(_) => "storage",
            Self::ShuttingDown => "shutting_down",
            Self::Incomplete { .. } => "incomplete",
            Self::WrongType => "wrong_type",
            Self::NotAnInteger { .. } => "not_an_integer",
            Self::Overflow => "overflow",
            Self::TooManyElements(_) => "too_many_elements",
        }
    }
}
