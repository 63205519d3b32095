//! ringkv's own commands: per-connection consistency, and sibling-aware
//! reads and writes with causal contexts.
//!
//! - `RINGKV.CONSISTENCY`: reports the connection's levels as a map
//!   `{read, write}` (a flat array in RESP2), showing the node's defaults
//!   when the connection has not chosen.
//! - `RINGKV.CONSISTENCY level`: sets both the read and the write level of
//!   the connection: `ONE`, `TWO`, `THREE`, `QUORUM`, `ALL`, `LOCAL_ONE`,
//!   `LOCAL_QUORUM`, `EACH_QUORUM`, or a replica count (`2`); `DEFAULT`
//!   returns to the node's defaults. `RINGKV.CONSISTENCY READ level` and
//!   `... WRITE level` set one side. Every later command on the connection
//!   uses them; `RESET` clears them.
//! - `RINGKV.GETALL key`: every live sibling and the causal context that
//!   saw them. RESP2: `[context, [value, ...]]`; RESP3: a map
//!   `{context: ..., values: [...]}`. The context is opaque bytes; a missing
//!   key has no values and a context that still works (writing with it
//!   creates the key only alongside whatever arrived since).
//! - `RINGKV.PUT key value [CONTEXT ctx] [EX s|PX ms|EXAT unix-s|PXAT unix-ms|KEEPTTL]`:
//!   writes `value`, superseding exactly the siblings `ctx` saw; writes
//!   concurrent with that read stay as siblings. Without CONTEXT it
//!   supersedes what the coordinator sees (like SET). `+OK`.
//! - `RINGKV.DEL key [CONTEXT ctx]`: a tombstone that supersedes what `ctx`
//!   saw; 1 when a live value was there, else 0.
//!
//! A context that does not decode is refused (`-ERR invalid causal context:
//! ...`) and nothing is written.

use bytes::Bytes;
use ringkv_cluster::{CausalContext, Consistency, Kv, KvError, WriteOptions};

use crate::cmd::Ctx;
use crate::cmd::set::ExpiryArg;
use crate::error::{CommandError, lossy};
use crate::frame::{Frame, Protocol};
use crate::parse::{Args, is};

pub(crate) fn consistency<K: Kv>(
    ctx: &mut Ctx<'_, K>,
    mut args: Args<'_>,
) -> Result<Frame, CommandError> {
    match args.remaining() {
        0 => {
            let node = ctx.kv.info();
            let name = |level: Option<Consistency>, default: String| {
                Frame::bulk_string(level.map_or(default, Consistency::name))
            };
            Ok(Frame::Map(vec![
                (
                    Frame::bulk_static("read"),
                    name(ctx.session.read_level, node.default_read),
                ),
                (
                    Frame::bulk_static("write"),
                    name(ctx.session.write_level, node.default_write),
                ),
            ]))
        }
        1 => {
            let level = parse_level(args.bytes()?.as_ref())?;
            ctx.session.read_level = level;
            ctx.session.write_level = level;
            Ok(Frame::ok())
        }
        2 => {
            let side = args.bytes()?;
            let level = parse_level(args.bytes()?.as_ref())?;
            if is(&side, "READ") {
                ctx.session.read_level = level;
            } else if is(&side, "WRITE") {
                ctx.session.write_level = level;
            } else {
                return Err(CommandError::Syntax);
            }
            Ok(Frame::ok())
        }
        _ => Err(CommandError::Syntax),
    }
}

/// A level name or count; `DEFAULT` is `None`.
fn parse_level(text: &[u8]) -> Result<Option<Consistency>, CommandError> {
    if is(text, "DEFAULT") {
        return Ok(None);
    }
    std::str::from_utf8(text)
        .ok()
        .and_then(Consistency::parse)
        .map(Some)
        .ok_or_else(|| {
            CommandError::Invalid(format!(
                "invalid consistency level '{}': expected ONE, TWO, THREE, QUORUM, ALL, \
                 LOCAL_ONE, LOCAL_QUORUM, EACH_QUORUM, DEFAULT or a replica count",
                lossy(text)
            ))
        })
}

fn decode_context(bytes: &[u8]) -> Result<CausalContext, CommandError> {
    CausalContext::decode_context(bytes)
        .map_err(|e| CommandError::Kv(KvError::BadContext(e.to_string())))
}

pub(crate) struct GetAll {
    key: Bytes,
}

impl GetAll {
    pub(crate) fn parse(mut args: Args<'_>) -> Result<Self, CommandError> {
        let key = args.bytes()?;
        args.finish()?;
        Ok(Self { key })
    }

    pub(crate) async fn apply<K: Kv>(self, ctx: &mut Ctx<'_, K>) -> Result<Frame, CommandError> {
        let read = ctx.kv.get(self.key, ctx.session.read_options()).await?;
        let context = Frame::Bulk(Bytes::from(read.context.encode_context()));
        let values = Frame::Array(
            read.siblings
                .into_iter()
                .map(|s| Frame::Bulk(s.value))
                .collect(),
        );
        Ok(match ctx.session.protocol {
            Protocol::Resp2 => Frame::Array(vec![context, values]),
            Protocol::Resp3 => Frame::Map(vec![
                (Frame::bulk_static("context"), context),
                (Frame::bulk_static("values"), values),
            ]),
        })
    }
}

pub(crate) struct Put {
    key: Bytes,
    value: Bytes,
    context: Option<Bytes>,
    expiry: ExpiryArg,
}

impl Put {
    pub(crate) fn parse(mut args: Args<'_>) -> Result<Self, CommandError> {
        let key = args.bytes()?;
        let value = args.bytes()?;
        let mut put = Put {
            key,
            value,
            context: None,
            expiry: ExpiryArg::Never,
        };
        let mut expiry_given = false;
        while let Some(word) = args.next() {
            if is(word, "CONTEXT") && put.context.is_none() {
                put.context = Some(args.bytes()?);
            } else if is(word, "KEEPTTL") && !expiry_given {
                put.expiry = ExpiryArg::Keep;
                expiry_given = true;
            } else if !expiry_given
                && let Some(expiry) = ExpiryArg::parse(word, &mut args, "ringkv.put")?
            {
                put.expiry = expiry;
                expiry_given = true;
            } else {
                return Err(CommandError::Syntax);
            }
        }
        Ok(put)
    }

    pub(crate) async fn apply<K: Kv>(self, ctx: &mut Ctx<'_, K>) -> Result<Frame, CommandError> {
        let opts = WriteOptions {
            context: self.context.as_deref().map(decode_context).transpose()?,
            expiry: self.expiry.resolve(ctx.kv.now_ms(), "ringkv.put")?,
            ..ctx.session.write_options()
        };
        ctx.kv.put(self.key, self.value, opts).await?;
        Ok(Frame::ok())
    }
}

pub(crate) struct DelWithContext {
    key: Bytes,
    context: Option<Bytes>,
}

impl DelWithContext {
    pub(crate) fn parse(mut args: Args<'_>) -> Result<Self, CommandError> {
        let key = args.bytes()?;
        let context = match args.next() {
            None => None,
            Some(word) if is(word, "CONTEXT") => Some(args.bytes()?),
            Some(_) => return Err(CommandError::Syntax),
        };
        args.finish()?;
        Ok(Self { key, context })
    }

    pub(crate) async fn apply<K: Kv>(self, ctx: &mut Ctx<'_, K>) -> Result<Frame, CommandError> {
        let opts = WriteOptions {
            context: self.context.as_deref().map(decode_context).transpose()?,
            ..ctx.session.write_options()
        };
        let outcome = ctx.kv.delete(self.key, opts).await?;
        Ok(Frame::Integer(i64::from(outcome.applied)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse() {
        assert_eq!(parse_level(b"quorum"), Ok(Some(Consistency::Quorum)));
        assert_eq!(
            parse_level(b"LOCAL_QUORUM"),
            Ok(Some(Consistency::LocalQuorum))
        );
        assert_eq!(parse_level(b"2"), Ok(Some(Consistency::Count(2))));
        assert_eq!(parse_level(b"default"), Ok(None));
        assert!(parse_level(b"0").is_err());
        assert!(parse_level(b"MOST").is_err());
        assert!(parse_level(b"\xff").is_err());
    }

    #[test]
    fn bad_context_is_a_clear_error() {
        let e = decode_context(b"nonsense").expect_err("not a context");
        assert_eq!(
            e.to_frame(),
            Frame::error("ERR invalid causal context: bad magic byte")
        );
        let good = CausalContext::from_entries([(1, 2)]);
        assert_eq!(decode_context(&good.encode_context()), Ok(good));
    }
}
