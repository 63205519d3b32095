//! Writes: SET and its older forms (SETNX, SETEX, PSETEX, GETSET), and MSET.
//!
//! A plain write supersedes the siblings the coordinator sees when it writes
//! (Redis semantics); writes use the connection's write level. NX and XX are
//! checked against the coordinator's read at that level: they are not atomic
//! across replicas, since ringkv is leaderless (two concurrent `SET NX` may
//! both succeed and leave siblings, which `RINGKV.GETALL` shows).
//!
//! - `SET key value [NX|XX] [GET] [EX s|PX ms|EXAT unix-s|PXAT unix-ms|KEEPTTL]`:
//!   `+OK`; null when NX/XX was not met; with GET, the value replaced (or
//!   null) instead.
//! - `SETNX key value`: 1 when written, 0 when the key existed.
//! - `SETEX key seconds value`, `PSETEX key ms value`: SET with EX / PX.
//! - `GETSET key value`: SET ... GET.
//! - `MSET key value [key value ...]`: `+OK`; each key is written on its own
//!   (no atomicity across keys), at most `key_fanout_max` at a time.

use bytes::Bytes;
use ringkv_cluster::{Condition, Expiry, Kv};

use crate::cmd::{Ctx, fan_out};
use crate::error::CommandError;
use crate::frame::Frame;
use crate::parse::{Args, is};

/// An expiry as the client gave it, resolved against the node's clock when
/// the command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExpiryArg {
    Never,
    Keep,
    /// Milliseconds from now (EX, PX); positive.
    InMs(u64),
    /// Unix time in milliseconds (EXAT, PXAT); positive.
    AtMs(u64),
}

impl ExpiryArg {
    /// Reads the number after EX / PX / EXAT / PXAT, with Redis' checks.
    pub(crate) fn parse(
        word: &[u8],
        args: &mut Args<'_>,
        command: &'static str,
    ) -> Result<Option<Self>, CommandError> {
        let unit_ms = if is(word, "EX") || is(word, "EXAT") {
            1000
        } else if is(word, "PX") || is(word, "PXAT") {
            1
        } else {
            return Ok(None);
        };
        let n = args.int()?;
        let ms = to_ms(n, unit_ms).ok_or(CommandError::InvalidExpire(command))?;
        Ok(Some(if is(word, "EX") || is(word, "PX") {
            ExpiryArg::InMs(ms)
        } else {
            ExpiryArg::AtMs(ms)
        }))
    }

    pub(crate) fn resolve(
        self,
        now_ms: u64,
        command: &'static str,
    ) -> Result<Expiry, CommandError> {
        Ok(match self {
            ExpiryArg::Never => Expiry::Never,
            ExpiryArg::Keep => Expiry::Keep,
            ExpiryArg::AtMs(t) => Expiry::At(t),
            ExpiryArg::InMs(ms) => Expiry::At(
                now_ms
                    .checked_add(ms)
                    .filter(|&t| t <= i64::MAX as u64)
                    .ok_or(CommandError::InvalidExpire(command))?,
            ),
        })
    }
}

/// A positive count of `unit_ms` milliseconds, as milliseconds.
fn to_ms(n: i64, unit_ms: i64) -> Option<u64> {
    if n <= 0 {
        return None;
    }
    n.checked_mul(unit_ms).map(|ms| ms as u64)
}

/// What the command answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reply {
    /// `+OK`, or null when the condition was not met (SET, SETEX).
    Ok,
    /// 1 or 0 (SETNX).
    Applied,
    /// The value replaced (SET ... GET, GETSET).
    Previous,
}

pub(crate) struct Set {
    key: Bytes,
    value: Bytes,
    expiry: ExpiryArg,
    condition: Condition,
    reply: Reply,
    command: &'static str,
}

impl Set {
    pub(crate) fn parse(mut args: Args<'_>) -> Result<Self, CommandError> {
        let key = args.bytes()?;
        let value = args.bytes()?;
        let mut set = Set {
            key,
            value,
            expiry: ExpiryArg::Never,
            condition: Condition::Always,
            reply: Reply::Ok,
            command: "set",
        };
        let mut expiry_given = false;
        while let Some(word) = args.next() {
            if is(word, "NX") && set.condition == Condition::Always {
                set.condition = Condition::IfAbsent;
            } else if is(word, "XX") && set.condition == Condition::Always {
                set.condition = Condition::IfPresent;
            } else if is(word, "GET") && set.reply == Reply::Ok {
                set.reply = Reply::Previous;
            } else if is(word, "KEEPTTL") && !expiry_given {
                set.expiry = ExpiryArg::Keep;
                expiry_given = true;
            } else if !expiry_given && let Some(expiry) = ExpiryArg::parse(word, &mut args, "set")?
            {
                set.expiry = expiry;
                expiry_given = true;
            } else {
                return Err(CommandError::Syntax);
            }
        }
        Ok(set)
    }

    pub(crate) fn parse_setnx(mut args: Args<'_>) -> Result<Self, CommandError> {
        Ok(Set {
            key: args.bytes()?,
            value: args.bytes()?,
            expiry: ExpiryArg::Never,
            condition: Condition::IfAbsent,
            reply: Reply::Applied,
            command: "setnx",
        })
    }

    /// SETEX (`unit_ms` 1000) and PSETEX (1): `key time value`.
    pub(crate) fn parse_setex(
        mut args: Args<'_>,
        unit_ms: i64,
        command: &'static str,
    ) -> Result<Self, CommandError> {
        let key = args.bytes()?;
        let n = args.int()?;
        let ms = to_ms(n, unit_ms).ok_or(CommandError::InvalidExpire(command))?;
        Ok(Set {
            key,
            value: args.bytes()?,
            expiry: ExpiryArg::InMs(ms),
            condition: Condition::Always,
            reply: Reply::Ok,
            command,
        })
    }

    pub(crate) fn parse_getset(mut args: Args<'_>) -> Result<Self, CommandError> {
        Ok(Set {
            key: args.bytes()?,
            value: args.bytes()?,
            expiry: ExpiryArg::Never,
            condition: Condition::Always,
            reply: Reply::Previous,
            command: "getset",
        })
    }

    pub(crate) async fn apply<K: Kv>(self, ctx: &mut Ctx<'_, K>) -> Result<Frame, CommandError> {
        let mut opts = ctx.session.write_options();
        opts.condition = self.condition;
        opts.return_previous = self.reply == Reply::Previous;
        opts.expiry = match self.expiry {
            ExpiryArg::Never => ringkv_cluster::Expiry::Never,
            other => other.resolve(ctx.kv.now_ms(), self.command)?,
        };
        let outcome = ctx.kv.put(self.key, self.value, opts).await?;
        Ok(match self.reply {
            Reply::Ok if outcome.applied => Frame::ok(),
            Reply::Ok => Frame::Null,
            Reply::Applied => Frame::Integer(i64::from(outcome.applied)),
            Reply::Previous => Frame::bulk_or_null(outcome.previous.map(|s| s.value)),
        })
    }
}

pub(crate) struct Mset<'a> {
    pairs: &'a [Bytes],
}

impl<'a> Mset<'a> {
    pub(crate) fn parse(mut args: Args<'a>) -> Result<Self, CommandError> {
        let pairs = args.rest();
        if pairs.is_empty() || !pairs.len().is_multiple_of(2) {
            return Err(CommandError::WrongArity("mset".into()));
        }
        Ok(Self { pairs })
    }

    pub(crate) async fn apply<K: Kv>(self, ctx: &mut Ctx<'_, K>) -> Result<Frame, CommandError> {
        let kv = ctx.kv;
        let opts = ctx.session.write_options();
        let pairs: Vec<&[Bytes]> = self.pairs.chunks_exact(2).collect();
        fan_out(&pairs, ctx.shared.config.key_fanout_max, |pair| {
            kv.put(pair[0].clone(), pair[1].clone(), opts.clone())
        })
        .await?;
        Ok(Frame::ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(words: &[&str]) -> Result<Set, CommandError> {
        let raw: Vec<Bytes> = words
            .iter()
            .map(|w| Bytes::copy_from_slice(w.as_bytes()))
            .collect();
        Set::parse(Args::new(&raw, 1))
    }

    #[test]
    fn set_options() {
        let s = parse(&["SET", "k", "v", "nx", "GET", "px", "1500"]).expect("valid");
        assert_eq!(s.condition, Condition::IfAbsent);
        assert_eq!(s.reply, Reply::Previous);
        assert_eq!(s.expiry, ExpiryArg::InMs(1500));
        let s = parse(&["SET", "k", "v", "EXAT", "10"]).expect("valid");
        assert_eq!(s.expiry, ExpiryArg::AtMs(10_000));
        let s = parse(&["SET", "k", "v", "KEEPTTL", "XX"]).expect("valid");
        assert_eq!(s.expiry, ExpiryArg::Keep);
        assert_eq!(s.condition, Condition::IfPresent);
    }

    #[test]
    fn set_option_errors() {
        let syntax = [
            &["SET", "k", "v", "NX", "XX"][..],
            &["SET", "k", "v", "EX", "1", "PX", "1"],
            &["SET", "k", "v", "KEEPTTL", "EX", "1"],
            &["SET", "k", "v", "EX"],
            &["SET", "k", "v", "BOGUS"],
            &["SET", "k", "v", "GET", "GET"],
        ];
        for words in syntax {
            assert_eq!(parse(words).err(), Some(CommandError::Syntax), "{words:?}");
        }
        assert_eq!(
            parse(&["SET", "k", "v", "EX", "0"]).err(),
            Some(CommandError::InvalidExpire("set"))
        );
        assert_eq!(
            parse(&["SET", "k", "v", "EX", "-5"]).err(),
            Some(CommandError::InvalidExpire("set"))
        );
        assert_eq!(
            parse(&["SET", "k", "v", "EX", "9223372036854775807"]).err(),
            Some(CommandError::InvalidExpire("set"))
        );
        assert_eq!(
            parse(&["SET", "k", "v", "EX", "x"]).err(),
            Some(CommandError::NotInteger)
        );
    }

    #[test]
    fn relative_expiry_resolves_against_now() {
        assert_eq!(
            ExpiryArg::InMs(500).resolve(1000, "set"),
            Ok(Expiry::At(1500))
        );
        assert_eq!(
            ExpiryArg::InMs(u64::MAX).resolve(1000, "set"),
            Err(CommandError::InvalidExpire("set"))
        );
    }
}
