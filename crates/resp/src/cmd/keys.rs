//! Key commands: DEL, UNLINK, EXISTS, TYPE.
//!
//! - `DEL key [key ...]` (and `UNLINK`, the same here): writes a versioned
//!   tombstone for each key with a live value; answers how many there were.
//! - `EXISTS key [key ...]`: how many of the keys exist (a live value, or
//!   a counter, set or hash; a key named twice counts twice, as in Redis).
//! - `TYPE key`: `string` (a counter too, as in Redis), `set`, `hash`, or
//!   `none` when missing.
//!
//! Multi-key commands work key by key (no atomicity across keys), at most
//! `key_fanout_max` keys at a time.

use bytes::Bytes;
use ringkv_cluster::causality::types::Kind;
use ringkv_cluster::{Kv, KvError};

use crate::cmd::{Ctx, fan_out};
use crate::error::CommandError;
use crate::frame::Frame;
use crate::parse::Args;

pub(crate) struct Del<'a> {
    keys: &'a [Bytes],
}

impl<'a> Del<'a> {
    pub(crate) fn parse(mut args: Args<'a>) -> Result<Self, CommandError> {
        Ok(Self { keys: args.rest() })
    }

    pub(crate) async fn apply<K: Kv>(self, ctx: &mut Ctx<'_, K>) -> Result<Frame, CommandError> {
        let kv = ctx.kv;
        let opts = ctx.session.write_options();
        let outcomes = fan_out(self.keys, ctx.shared.config.key_fanout_max, |key| {
            kv.delete(key.clone(), opts.clone())
        })
        .await?;
        let deleted = outcomes.iter().filter(|o| o.applied).count() as i64;
        Ok(Frame::Integer(deleted))
    }
}

pub(crate) struct Exists<'a> {
    keys: &'a [Bytes],
}

impl<'a> Exists<'a> {
    pub(crate) fn parse(mut args: Args<'a>) -> Result<Self, CommandError> {
        Ok(Self { keys: args.rest() })
    }

    pub(crate) async fn apply<K: Kv>(self, ctx: &mut Ctx<'_, K>) -> Result<Frame, CommandError> {
        let kv = ctx.kv;
        let opts = ctx.session.read_options();
        let reads = fan_out(self.keys, ctx.shared.config.key_fanout_max, |key| {
            let read = kv.get(key.clone(), opts.clone());
            async move {
                match read.await {
                    // A set or a hash: present.
                    Err(KvError::WrongType) => Ok(true),
                    read => read.map(|r| !r.is_empty()),
                }
            }
        })
        .await?;
        let found = reads.iter().filter(|&&found| found).count() as i64;
        Ok(Frame::Integer(found))
    }
}

pub(crate) struct Type {
    key: Bytes,
}

impl Type {
    pub(crate) fn parse(mut args: Args<'_>) -> Result<Self, CommandError> {
        let key = args.bytes()?;
        args.finish()?;
        Ok(Self { key })
    }

    pub(crate) async fn apply<K: Kv>(self, ctx: &mut Ctx<'_, K>) -> Result<Frame, CommandError> {
        let opts = ctx.session.read_options();
        let name = match ctx.kv.get(self.key.clone(), opts.clone()).await {
            Ok(read) if read.is_empty() => "none",
            // A string, or a counter (a string to Redis).
            Ok(_) => "string",
            Err(KvError::WrongType) => {
                let record = ctx.kv.get_record(self.key, opts).await?;
                match record.kind(ctx.kv.now_ms()) {
                    Some(Kind::Set) => "set",
                    Some(Kind::Hash) => "hash",
                    Some(Kind::String | Kind::Counter) => "string",
                    None => "none",
                }
            }
            Err(e) => return Err(e.into()),
        };
        Ok(Frame::simple_static(name))
    }
}
