//! Key commands: DEL, UNLINK, EXISTS, TYPE.
//!
//! - `DEL key [key ...]` (and `UNLINK`, the same here): writes a versioned
//!   tombstone for each key with a live value; answers how many there were.
//! - `EXISTS key [key ...]`: how many of the keys have a live value (a key
//!   named twice counts twice, as in Redis).
//! - `TYPE key`: `string`, or `none` when missing.
//!
//! Multi-key commands work key by key (no atomicity across keys), at most
//! `key_fanout_max` keys at a time.

use bytes::Bytes;
use ringkv_cluster::Kv;

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
            kv.get(key.clone(), opts.clone())
        })
        .await?;
        let found = reads.iter().filter(|r| !r.is_empty()).count() as i64;
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
        let read = ctx.kv.get(self.key, ctx.session.read_options()).await?;
        Ok(Frame::simple_static(if read.is_empty() {
            "none"
        } else {
            "string"
        }))
    }
}
