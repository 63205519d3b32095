//! The typed error answers between nodes (see "Error answers" in
//! [`super::message`]): what a refused request's error is, after its
//! code and message, so a forwarder gives its client the coordinator's own
//! error.

use serde::{Deserialize, Serialize};

use super::message::Response;
use crate::api::KvError;

/// The typed form of an error answer (see "Error answers" in [`super::message`]). Variants
/// are appended, never reordered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ErrorDetail {
    #[error("key is {len} bytes, the limit is {max}")]
    KeyTooLarge { len: u64, max: u64 },
    #[error("value is {len} bytes, the limit is {max}")]
    ValueTooLarge { len: u64, max: u64 },
    #[error("{0}")]
    InvalidArgument(String),
    #[error("invalid causal context: {0}")]
    BadContext(String),
    #[error("{required} required, {answered} answered: {why}")]
    Unavailable {
        required: u64,
        answered: u64,
        why: String,
    },
    #[error("store is read-only: {0}")]
    ReadOnly(String),
    #[error("storage error: {0}")]
    Storage(String),
    #[error("node is shutting down")]
    ShuttingDown,
    /// A forwarded write reached a node that is not a live replica of the
    /// key in its current ring: nothing was applied, the next replica may
    /// take it.
    #[error("forwarded to a node that is not a replica")]
    NotAReplica,
    /// A copy of a forwarded write already received: not applied again.
    #[error("a copy of a forwarded write already received; not applied")]
    Duplicate,
    /// [`crate::KvError::Incomplete`]: a write that missed its level after
    /// it was sent. (Nodes of the version before decode it as an unknown
    /// detail and keep the code and message.)
    #[error("outcome unknown: {} required, {} acknowledged", .0.required, .0.acked.len())]
    Incomplete(Box<IncompleteDetail>),
    /// [`crate::KvError::WrongType`] (data types: only between nodes that
    /// read them, so never met by a node of the version before).
    #[error("Operation against a key holding the wrong kind of value")]
    WrongType,
    /// [`crate::KvError::NotAnInteger`].
    #[error("not an integer")]
    NotAnInteger { hash: bool },
    /// [`crate::KvError::Overflow`].
    #[error("increment or decrement would overflow")]
    Overflow,
    /// [`crate::KvError::TooManyElements`].
    #[error("{0}")]
    TooManyElements(String),
}

/// The data of [`ErrorDetail::Incomplete`] (boxed: error answers stay small).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncompleteDetail {
    pub required: u64,
    pub acked: Box<[u64]>,
    pub hinted: Box<[u64]>,
    pub missing: Box<[u64]>,
    pub why: String,
}

/// The wire code of [`ErrorDetail::NotAReplica`].
pub const NOT_A_REPLICA: &str = "not_a_replica";
/// The wire code of [`ErrorDetail::Duplicate`].
pub const DUPLICATE: &str = "duplicate";

/// Version of the error detail after an error answer's body.
pub const ERROR_DETAIL_VERSION: u8 = 1;

impl ErrorDetail {
    /// The stable wire code.
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
            Self::NotAReplica => NOT_A_REPLICA,
            Self::Duplicate => DUPLICATE,
            Self::Incomplete(_) => "incomplete",
            Self::WrongType => "wrong_type",
            Self::NotAnInteger { .. } => "not_an_integer",
            Self::Overflow => "overflow",
            Self::TooManyElements(_) => "too_many_elements",
        }
    }
}

impl From<&KvError> for ErrorDetail {
    fn from(e: &KvError) -> Self {
        match e.clone() {
            KvError::KeyTooLarge { len, max } => Self::KeyTooLarge {
                len: len as u64,
                max: max as u64,
            },
            KvError::ValueTooLarge { len, max } => Self::ValueTooLarge {
                len: len as u64,
                max: max as u64,
            },
            KvError::InvalidArgument(m) => Self::InvalidArgument(m),
            KvError::BadContext(m) => Self::BadContext(m),
            KvError::Unavailable {
                required,
                answered,
                why,
            } => Self::Unavailable {
                required: required as u64,
                answered: answered as u64,
                why,
            },
            KvError::ReadOnly(m) => Self::ReadOnly(m),
            KvError::Storage(m) => Self::Storage(m),
            KvError::ShuttingDown => Self::ShuttingDown,
            KvError::Incomplete {
                required,
                acked,
                hinted,
                missing,
                why,
            } => Self::Incomplete(Box::new(IncompleteDetail {
                required: required as u64,
                acked,
                hinted,
                missing,
                why,
            })),
            KvError::WrongType => Self::WrongType,
            KvError::NotAnInteger { hash } => Self::NotAnInteger { hash },
            KvError::Overflow => Self::Overflow,
            KvError::TooManyElements(m) => Self::TooManyElements(m),
        }
    }
}

impl From<&KvError> for Response {
    fn from(e: &KvError) -> Self {
        Self::error(ErrorDetail::from(e))
    }
}
