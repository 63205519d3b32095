//! Reads of the resolved value: GET, MGET, GETDEL, STRLEN.
//!
//! Plain Redis reads see one value per key: the sibling the node's resolver
//! picks (last writer wins by hybrid logical clock). `RINGKV.GETALL` shows
//! every sibling. Reads use the connection's read level
//! (`RINGKV.CONSISTENCY`), else the node's default.
//!
//! - `GET key`: the value, or null.
//! - `MGET key [key ...]`: an array of values or nulls; each key is read
//!   independently, at most `key_fanout_max` at a time. A reply larger than
//!   `reply_bytes_max` is refused rather than buffered.
//! - `GETDEL key`: deletes the key and returns the value it replaced.
//! - `STRLEN key`: the length of the value, 0 when missing.

use bytes::Bytes;
use ringkv_cluster::{Kv, KvError, ReadResult};

use crate::cmd::Ctx;
use crate::error::CommandError;
use crate::frame::Frame;
use crate::parse::Args;

/// The resolved value of a read, if any sibling is live.
pub(crate) fn resolved_value(read: &ReadResult) -> Option<Bytes> {
    read.resolved().map(|s| s.value.clone())
}

pub(crate) struct Get {
    key: Bytes,
}

impl Get {
    pub(crate) fn parse(mut args: Args<'_>) -> Result<Self, CommandError> {
        let key = args.bytes()?;
        args.finish()?;
        Ok(Self { key })
    }

    pub(crate) async fn apply<K: Kv>(self, ctx: &mut Ctx<'_, K>) -> Result<Frame, CommandError> {
        let read = ctx.kv.get(self.key, ctx.session.read_options()).await?;
        Ok(Frame::bulk_or_null(resolved_value(&read)))
    }
}

pub(crate) struct Mget<'a> {
    keys: &'a [Bytes],
}

impl<'a> Mget<'a> {
    pub(crate) fn parse(mut args: Args<'a>) -> Result<Self, CommandError> {
        Ok(Self { keys: args.rest() })
    }

    pub(crate) async fn apply<K: Kv>(self, ctx: &mut Ctx<'_, K>) -> Result<Frame, CommandError> {
        let kv = ctx.kv;
        let opts = ctx.session.read_options();
        let reply_bytes_max = ctx.shared.config.reply_bytes_max;
        let mut reply_bytes = 0usize;
        let mut values = Vec::with_capacity(self.keys.len().min(1024));
        for chunk in self.keys.chunks(ctx.shared.config.key_fanout_max.max(1)) {
            let reads = futures::future::join_all(
                chunk.iter().map(|key| kv.get(key.clone(), opts.clone())),
            )
            .await;
            for read in reads {
                // A set or a hash reads as nil, as in Redis.
                let value = match read {
                    Err(KvError::WrongType) => None,
                    read => resolved_value(&read?),
                };
                reply_bytes += value.as_ref().map_or(0, |v| v.len()) + 16;
                if reply_bytes > reply_bytes_max {
                    return Err(CommandError::Invalid(format!(
                        "MGET reply exceeds {reply_bytes_max} bytes (reply_bytes_max); \
                         read fewer keys at once"
                    )));
                }
                values.push(Frame::bulk_or_null(value));
            }
        }
        Ok(Frame::Array(values))
    }
}

pub(crate) struct Getdel {
    key: Bytes,
}

impl Getdel {
    pub(crate) fn parse(mut args: Args<'_>) -> Result<Self, CommandError> {
        let key = args.bytes()?;
        args.finish()?;
        Ok(Self { key })
    }

    pub(crate) async fn apply<K: Kv>(self, ctx: &mut Ctx<'_, K>) -> Result<Frame, CommandError> {
        let mut opts = ctx.session.write_options();
        opts.return_previous = true;
        let outcome = ctx.kv.delete(self.key, opts).await?;
        Ok(Frame::bulk_or_null(outcome.previous.map(|s| s.value)))
    }
}

pub(crate) struct Strlen {
    key: Bytes,
}

impl Strlen {
    pub(crate) fn parse(mut args: Args<'_>) -> Result<Self, CommandError> {
        let key = args.bytes()?;
        args.finish()?;
        Ok(Self { key })
    }

    pub(crate) async fn apply<K: Kv>(self, ctx: &mut Ctx<'_, K>) -> Result<Frame, CommandError> {
        let read = ctx.kv.get(self.key, ctx.session.read_options()).await?;
        let len = resolved_value(&read).map_or(0, |v| v.len());
        Ok(Frame::Integer(len as i64))
    }
}
