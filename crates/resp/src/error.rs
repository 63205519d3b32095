//! Command errors and their wire form: the one place where a failure becomes
//! a RESP error reply.
//!
//! Every error a command can meet, including the cluster's [`KvError`], is a
//! [`CommandError`]; [`CommandError::to_frame`] renders it with a Redis error
//! code (`ERR`, `NOPROTO`, `UNAVAILABLE`, `READONLY`, ...) and
//! [`CommandError::kind`] names it for the `ringkv_resp_errors_total` metric.
//! Wording follows Redis wherever Redis has an equivalent error, because
//! clients and scripts match on it.

use bytes::Bytes;
use ringkv_cluster::KvError;

use crate::frame::{Frame, ProtocolError};

/// Why a command failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    #[error("ERR unknown command '{name}', with args beginning with: {args}")]
    UnknownCommand { name: String, args: String },
    /// `name` is the lower-case command (`get`, `client|setname`).
    #[error("ERR wrong number of arguments for '{0}' command")]
    WrongArity(String),
    #[error("ERR unknown subcommand '{sub}'. Try {command} HELP.")]
    UnknownSubcommand { command: &'static str, sub: String },
    #[error("ERR syntax error")]
    Syntax,
    #[error("ERR value is not an integer or out of range")]
    NotInteger,
    #[error("ERR invalid expire time in '{0}' command")]
    InvalidExpire(&'static str),
    /// A command ringkv knows but does not offer, and why.
    #[error("ERR {command} is not supported: {why}")]
    Unsupported { command: String, why: &'static str },
    /// A command sent after a refused `MULTI`, before `EXEC` or `DISCARD`.
    #[error(
        "ERR command not run: this connection's MULTI was refused, and commands up to EXEC or \
         DISCARD are refused with it"
    )]
    InRefusedTransaction,
    /// `EXEC` closing a refused `MULTI`.
    #[error("EXECABORT Transaction discarded because ringkv does not support MULTI.")]
    ExecAbort,
    #[error("NOPROTO unsupported protocol version")]
    NoProto,
    #[error("NOAUTH Authentication required.")]
    NoAuth,
    #[error("WRONGPASS invalid username-password pair or user is disabled.")]
    WrongPass,
    #[error(
        "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO \
         AUTH <user> <pass> option can be used to authenticate the client and select the RESP \
         protocol version at the same time"
    )]
    HelloNoAuth,
    /// The user's roles do not allow the command (`name` in lower case).
    #[error("NOPERM this user has no permissions to run the '{0}' command")]
    NoPermCommand(String),
    #[error("NOPERM this user has no permissions to access one of the keys used as arguments")]
    NoPermKey,
    /// Any other argument error; the text follows `ERR `.
    #[error("ERR {0}")]
    Invalid(String),
    #[error("ERR Protocol error: {0}")]
    Protocol(#[from] ProtocolError),
    #[error("{}", kv_wire(.0))]
    Kv(#[from] KvError),
}

/// The wire text of a cluster error: its Redis code, then its message.
fn kv_wire(e: &KvError) -> String {
    match e {
        KvError::Unavailable { .. } => format!("UNAVAILABLE {e}"),
        KvError::Incomplete { .. } => format!("INCOMPLETE {e}"),
        KvError::ReadOnly(_) => format!("READONLY {e}"),
        KvError::ShuttingDown => format!("SHUTDOWN {e}"),
        KvError::WrongType => format!("WRONGTYPE {e}"),
        _ => format!("ERR {e}"),
    }
}

impl CommandError {
    /// The error as a reply frame.
    pub fn to_frame(&self) -> Frame {
        Frame::Error(Bytes::from(self.to_string()))
    }

    /// A stable label for the error metric.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::UnknownCommand { .. } => "unknown_command",
            Self::WrongArity(_) => "wrong_arity",
            Self::UnknownSubcommand { .. } => "unknown_subcommand",
            Self::Syntax | Self::NotInteger | Self::InvalidExpire(_) | Self::Invalid(_) => {
                "bad_argument"
            }
            Self::Unsupported { .. } | Self::InRefusedTransaction | Self::ExecAbort => {
                "unsupported"
            }
            Self::NoProto => "noproto",
            Self::NoAuth | Self::WrongPass | Self::HelloNoAuth => "auth",
            Self::NoPermCommand(_) | Self::NoPermKey => "noperm",
            Self::Protocol(_) => "protocol",
            Self::Kv(e) => e.code(),
        }
    }

    /// Redis' unknown-command error: the name and the first arguments, each
    /// quoted, cut to 128 bytes as Redis does.
    pub fn unknown_command(args: &[Bytes]) -> Self {
        const SHOWN_BYTES_MAX: usize = 128;
        let name = args
            .first()
            .map(|n| lossy(&n[..n.len().min(SHOWN_BYTES_MAX)]))
            .unwrap_or_default();
        let mut shown = String::new();
        for arg in args.iter().skip(1) {
            if shown.len() >= SHOWN_BYTES_MAX {
                break;
            }
            let room = SHOWN_BYTES_MAX - shown.len();
            shown.push('\'');
            shown.push_str(&lossy(&arg[..arg.len().min(room)]));
            shown.push_str("' ");
        }
        Self::UnknownCommand { name, args: shown }
    }
}

/// Client bytes as text for an error message.
pub(crate) fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_text_of_each_family() {
        let cases = [
            (
                CommandError::unknown_command(&[
                    Bytes::from_static(b"foo"),
                    Bytes::from_static(b"a"),
                ]),
                "ERR unknown command 'foo', with args beginning with: 'a' ",
            ),
            (
                CommandError::unknown_command(&[Bytes::from_static(b"foo")]),
                "ERR unknown command 'foo', with args beginning with: ",
            ),
            (
                CommandError::WrongArity("get".into()),
                "ERR wrong number of arguments for 'get' command",
            ),
            (
                CommandError::Kv(KvError::ValueTooLarge {
                    len: 2_000_000,
                    max: 1_048_576,
                }),
                "ERR value is 2000000 bytes, the limit is 1048576",
            ),
            (
                CommandError::Kv(KvError::Unavailable {
                    required: 2,
                    answered: 1,
                    why: "one replica is down".into(),
                }),
                "UNAVAILABLE 2 required, 1 answered: one replica is down",
            ),
            (
                CommandError::Kv(KvError::ReadOnly("fsync failed".into())),
                "READONLY store is read-only: fsync failed",
            ),
            (
                CommandError::Protocol(ProtocolError::InvalidBulkLength),
                "ERR Protocol error: invalid bulk length",
            ),
        ];
        for (error, text) in cases {
            assert_eq!(error.to_frame(), Frame::Error(Bytes::from(text)));
        }
    }

    #[test]
    fn unknown_command_args_are_cut_at_128_bytes() {
        let long = Bytes::from(vec![b'x'; 300]);
        let e = CommandError::unknown_command(&[Bytes::from_static(b"nope"), long.clone(), long]);
        let CommandError::UnknownCommand { args, .. } = &e else {
            panic!("not an unknown-command error: {e:?}");
        };
        // One quoted argument of 128 bytes, then no more.
        assert_eq!(args.len(), 128 + 3);
        assert_eq!(e.kind(), "unknown_command");
    }
}
