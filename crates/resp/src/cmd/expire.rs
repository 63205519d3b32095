//! Time-to-live commands: EXPIRE, PEXPIRE, EXPIREAT, PEXPIREAT, TTL, PTTL,
//! EXPIRETIME, PEXPIRETIME, PERSIST. Replies follow Redis exactly.
//!
//! - `EXPIRE key seconds [NX|XX|GT|LT]` (and `PEXPIRE` in ms, `EXPIREAT` /
//!   `PEXPIREAT` as Unix times): 1 when the expiry was set, 0 when the key
//!   is missing or the condition was not met. A time in the past deletes the
//!   key. NX: only without an expiry; XX: only with one; GT: only later than
//!   the current one (no expiry counts as infinite); LT: only earlier.
//!   Conditions are checked against a read, then the expiry is written: like
//!   every read-then-write in ringkv, not atomic across replicas.
//! - `TTL key` / `PTTL key`: the time left in seconds (rounded) or ms; -1
//!   when the key has no expiry, -2 when it does not exist.
//! - `EXPIRETIME key` / `PEXPIRETIME key`: the expiry as a Unix time in
//!   seconds or ms; -1 and -2 as for TTL.
//! - `PERSIST key`: 1 when an expiry was removed, else 0.

use bytes::Bytes;
use ringkv_cluster::{Expiry, Kv, KvError};

use crate::cmd::Ctx;
use crate::error::CommandError;
use crate::frame::Frame;
use crate::parse::{Args, is};

/// How the time argument of an EXPIRE-family command reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unit {
    RelativeSeconds,
    RelativeMillis,
    AtSeconds,
    AtMillis,
}

impl Unit {
    fn command(self) -> &'static str {
        match self {
            Unit::RelativeSeconds => "expire",
            Unit::RelativeMillis => "pexpire",
            Unit::AtSeconds => "expireat",
            Unit::AtMillis => "pexpireat",
        }
    }
}

/// The NX / XX / GT / LT options; any combination Redis accepts, all of
/// which must hold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Conditions {
    nx: bool,
    xx: bool,
    gt: bool,
    lt: bool,
}

impl Conditions {
    fn any(self) -> bool {
        self.nx || self.xx || self.gt || self.lt
    }

    /// Whether the new expiry `target` may replace `current` (None: the key
    /// has no expiry, which counts as an infinite TTL).
    fn met(self, current: Option<i64>, target: i64) -> bool {
        (!self.nx || current.is_none())
            && (!self.xx || current.is_some())
            && (!self.gt || current.is_some_and(|t| target > t))
            && (!self.lt || current.is_none_or(|t| target < t))
    }
}

pub(crate) struct Expire {
    key: Bytes,
    amount: i64,
    unit: Unit,
    conditions: Conditions,
}

impl Expire {
    pub(crate) fn parse(mut args: Args<'_>, unit: Unit) -> Result<Self, CommandError> {
        let key = args.bytes()?;
        let amount = args.int()?;
        let mut c = Conditions::default();
        while let Some(word) = args.next() {
            if is(word, "NX") {
                c.nx = true;
            } else if is(word, "XX") {
                c.xx = true;
            } else if is(word, "GT") {
                c.gt = true;
            } else if is(word, "LT") {
                c.lt = true;
            } else {
                return Err(CommandError::Invalid(format!(
                    "Unsupported option {}",
                    crate::error::lossy(word)
                )));
            }
        }
        if c.nx && (c.xx || c.gt || c.lt) {
            return Err(CommandError::Invalid(
                "NX and XX, GT or LT options at the same time are not compatible".into(),
            ));
        }
        if c.gt && c.lt {
            return Err(CommandError::Invalid(
                "GT and LT options at the same time are not compatible".into(),
            ));
        }
        Ok(Self {
            key,
            amount,
            unit,
            conditions: c,
        })
    }

    /// The new expiry, in Unix ms (negative: long past).
    fn target_ms(&self, now_ms: u64) -> Result<i64, CommandError> {
        let invalid = CommandError::InvalidExpire(self.unit.command());
        let ms = match self.unit {
            Unit::RelativeSeconds | Unit::AtSeconds => self.amount.checked_mul(1000),
            Unit::RelativeMillis | Unit::AtMillis => Some(self.amount),
        }
        .ok_or(invalid.clone())?;
        match self.unit {
            Unit::RelativeSeconds | Unit::RelativeMillis => {
                (now_ms as i64).checked_add(ms).ok_or(invalid)
            }
            Unit::AtSeconds | Unit::AtMillis => Ok(ms),
        }
    }

    pub(crate) async fn apply<K: Kv>(self, ctx: &mut Ctx<'_, K>) -> Result<Frame, CommandError> {
        let target = self.target_ms(ctx.kv.now_ms())?;
        if self.conditions.any() {
            let read = ctx
                .kv
                .get(self.key.clone(), ctx.session.read_options())
                .await?;
            let Some(current) = read.resolved() else {
                return Ok(Frame::Integer(0));
            };
            let current = current.expires_at_ms.map(|t| t.min(i64::MAX as u64) as i64);
            if !self.conditions.met(current, target) {
                return Ok(Frame::Integer(0));
            }
        }
        let at = Expiry::At(target.max(0) as u64);
        let set = ctx
            .kv
            .set_expiry(self.key, at, ctx.session.write_options())
            .await?;
        Ok(Frame::Integer(i64::from(set)))
    }
}

/// What a TTL-family command answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TtlKind {
    Seconds,
    Millis,
    AtSeconds,
    AtMillis,
}

pub(crate) struct Ttl {
    key: Bytes,
    kind: TtlKind,
}

impl Ttl {
    pub(crate) fn parse(mut args: Args<'_>, kind: TtlKind) -> Result<Self, CommandError> {
        let key = args.bytes()?;
        args.finish()?;
        Ok(Self { key, kind })
    }

    pub(crate) async fn apply<K: Kv>(self, ctx: &mut Ctx<'_, K>) -> Result<Frame, CommandError> {
        let read = match ctx.kv.get(self.key, ctx.session.read_options()).await {
            // A set or a hash: present, and data types do not expire yet.
            Err(KvError::WrongType) => return Ok(Frame::Integer(-1)),
            read => read?,
        };
        let Some(current) = read.resolved() else {
            return Ok(Frame::Integer(-2));
        };
        let Some(at) = current.expires_at_ms else {
            return Ok(Frame::Integer(-1));
        };
        let left = at.saturating_sub(ctx.kv.now_ms());
        let n = match self.kind {
            TtlKind::Seconds => left.saturating_add(500) / 1000,
            TtlKind::Millis => left,
            TtlKind::AtSeconds => at / 1000,
            TtlKind::AtMillis => at,
        };
        Ok(Frame::Integer(n.min(i64::MAX as u64) as i64))
    }
}

pub(crate) struct Persist {
    key: Bytes,
}

impl Persist {
    pub(crate) fn parse(mut args: Args<'_>) -> Result<Self, CommandError> {
        let key = args.bytes()?;
        args.finish()?;
        Ok(Self { key })
    }

    pub(crate) async fn apply<K: Kv>(self, ctx: &mut Ctx<'_, K>) -> Result<Frame, CommandError> {
        let read = match ctx
            .kv
            .get(self.key.clone(), ctx.session.read_options())
            .await
        {
            // A set or a hash: no expiry to remove.
            Err(KvError::WrongType) => return Ok(Frame::Integer(0)),
            read => read?,
        };
        let has_expiry = read.resolved().is_some_and(|s| s.expires_at_ms.is_some());
        if !has_expiry {
            return Ok(Frame::Integer(0));
        }
        let set = ctx
            .kv
            .set_expiry(self.key, Expiry::Never, ctx.session.write_options())
            .await?;
        Ok(Frame::Integer(i64::from(set)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(words: &[&str], unit: Unit) -> Result<Expire, CommandError> {
        let raw: Vec<Bytes> = words
            .iter()
            .map(|w| Bytes::copy_from_slice(w.as_bytes()))
            .collect();
        Expire::parse(Args::new(&raw, 1), unit)
    }

    #[test]
    fn conditions_follow_redis() {
        let c = |nx, xx, gt, lt| Conditions { nx, xx, gt, lt };
        // NX: only keys without an expiry.
        assert!(c(true, false, false, false).met(None, 5));
        assert!(!c(true, false, false, false).met(Some(1), 5));
        // XX: only keys with one.
        assert!(!c(false, true, false, false).met(None, 5));
        // GT: no expiry is infinite, so never greater.
        assert!(!c(false, false, true, false).met(None, 5));
        assert!(c(false, false, true, false).met(Some(1), 5));
        assert!(!c(false, false, true, false).met(Some(9), 5));
        // LT: a key without expiry gets one; XX LT does not.
        assert!(c(false, false, false, true).met(None, 5));
        assert!(!c(false, true, false, true).met(None, 5));
        assert!(c(false, true, false, true).met(Some(9), 5));
    }

    #[test]
    fn parse_checks_options_and_overflow() {
        assert!(parse(&["EXPIRE", "k", "10", "XX", "GT"], Unit::RelativeSeconds).is_ok());
        assert_eq!(
            parse(&["EXPIRE", "k", "10", "NX", "XX"], Unit::RelativeSeconds).err(),
            Some(CommandError::Invalid(
                "NX and XX, GT or LT options at the same time are not compatible".into()
            ))
        );
        assert!(parse(&["EXPIRE", "k", "10", "GT", "LT"], Unit::RelativeSeconds).is_err());
        assert!(parse(&["EXPIRE", "k", "10", "FOO"], Unit::RelativeSeconds).is_err());
        let huge = parse(
            &["EXPIRE", "k", "9223372036854775807"],
            Unit::RelativeSeconds,
        )
        .expect("parses");
        assert_eq!(
            huge.target_ms(1000),
            Err(CommandError::InvalidExpire("expire"))
        );
        let past = parse(&["PEXPIRE", "k", "-5000"], Unit::RelativeMillis).expect("parses");
        assert_eq!(past.target_ms(1000), Ok(-4000));
        let at = parse(&["EXPIREAT", "k", "7"], Unit::AtSeconds).expect("parses");
        assert_eq!(at.target_ms(1000), Ok(7000));
    }
}
