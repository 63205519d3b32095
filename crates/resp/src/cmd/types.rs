//! The data types: counters, sets and hashes (docs/design/data-types.md).
//!
//! Writes go through [`Kv::write_typed`] (refused while a rolling upgrade
//! leaves a node that cannot read them); reads through [`Kv::get_record`],
//! at the connection's levels. Replies and errors are Redis's.
//!
//! - Counters: `INCR`, `INCRBY`, `DECR`, `DECRBY`. The reply is the value
//!   the coordinator sees after its increment: two clients incrementing at
//!   once through two nodes may both read the same number; the count is
//!   exact (every acknowledged increment counts once). `GET` reads a
//!   counter as its value; `INCRBYFLOAT` is refused (a float sum is not
//!   exact under merges).
//! - Sets (add wins over a concurrent remove): `SADD`, `SREM`, `SMEMBERS`,
//!   `SISMEMBER`, `SMISMEMBER`, `SCARD`, `SRANDMEMBER`. `SPOP` is refused:
//!   two partitioned replicas would each pop a member and both report it.
//! - Hashes (each field a register, or a counter by `HINCRBY`): `HSET`,
//!   `HMSET`, `HSETNX`, `HGET`, `HMGET`, `HDEL`, `HGETALL`, `HLEN`,
//!   `HEXISTS`, `HKEYS`, `HVALS`, `HSTRLEN`, `HINCRBY`. `HSETNX` checks the
//!   field at the coordinator, as `SET NX` does.

use bytes::Bytes;
use ringkv_cluster::causality::types::{FieldValue, Kind, Record};
use ringkv_cluster::replica::TypedChange;
use ringkv_cluster::{Kv, KvError};

use crate::cmd::Ctx;
use crate::error::CommandError;
use crate::frame::Frame;
use crate::parse::Args;

/// Runs a write of a data type; its integer reply.
async fn write<K: Kv>(
    ctx: &Ctx<'_, K>,
    key: Bytes,
    change: TypedChange,
) -> Result<i64, CommandError> {
    let out = (ctx.kv)
        .write_typed(key, change, ctx.session.write_options())
        .await?;
    Ok(out.integer.unwrap_or(0))
}

/// The record of `key` when it holds `kind` (`None` when absent);
/// `WRONGTYPE` when it holds another.
async fn read<K: Kv>(
    ctx: &Ctx<'_, K>,
    key: Bytes,
    kind: Kind,
) -> Result<Option<Record>, CommandError> {
    let record = ctx.kv.get_record(key, ctx.session.read_options()).await?;
    match record.kind(ctx.kv.now_ms()) {
        None => Ok(None),
        Some(k) if k == kind => Ok(Some(record)),
        Some(_) => Err(KvError::WrongType.into()),
    }
}

/// `INCR`, `INCRBY`, `DECR`, `DECRBY`.
pub(crate) struct Incr {
    key: Bytes,
    delta: i64,
}

impl Incr {
    /// `sign` 1 for INCR/INCRBY, -1 for DECR/DECRBY; `by`: the amount is
    /// an argument.
    pub(crate) fn parse(mut args: Args<'_>, sign: i64, by: bool) -> Result<Self, CommandError> {
        let key = args.bytes()?;
        let amount = if by { args.int()? } else { 1 };
        args.finish()?;
        let delta = if sign < 0 {
            amount
                .checked_neg()
                .ok_or_else(|| CommandError::Invalid("decrement would overflow".into()))?
        } else {
            amount
        };
        Ok(Self { key, delta })
    }

    pub(crate) async fn apply<K: Kv>(self, ctx: &mut Ctx<'_, K>) -> Result<Frame, CommandError> {
        let value = write(ctx, self.key, TypedChange::Increment(self.delta)).await?;
        Ok(Frame::Integer(value))
    }
}

/// `SADD` and `SREM`.
pub(crate) struct SetChange {
    key: Bytes,
    change: TypedChange,
}

impl SetChange {
    pub(crate) fn parse(mut args: Args<'_>, add: bool) -> Result<Self, CommandError> {
        let key = args.bytes()?;
        let members = args.rest().to_vec();
        let change = if add {
            TypedChange::SetAdd(members)
        } else {
            TypedChange::SetRemove(members)
        };
        Ok(Self { key, change })
    }

    pub(crate) async fn apply<K: Kv>(self, ctx: &mut Ctx<'_, K>) -> Result<Frame, CommandError> {
        Ok(Frame::Integer(write(ctx, self.key, self.change).await?))
    }
}

/// What a set read answers.
pub(crate) enum SetQuery {
    Members,
    IsMember(Bytes),
    AreMembers(Vec<Bytes>),
    Card,
    /// `SRANDMEMBER key [count]`.
    Random(Option<i64>),
}

pub(crate) struct SetRead {
    key: Bytes,
    query: SetQuery,
}

impl SetRead {
    pub(crate) fn parse(mut args: Args<'_>, name: &str) -> Result<Self, CommandError> {
        let key = args.bytes()?;
        let query = match name {
            "SMEMBERS" => SetQuery::Members,
            "SCARD" => SetQuery::Card,
            "SISMEMBER" => SetQuery::IsMember(args.bytes()?),
            "SMISMEMBER" => SetQuery::AreMembers(args.rest().to_vec()),
            _ => SetQuery::Random(if args.is_empty() {
                None
            } else {
                Some(args.int()?)
            }),
        };
        args.finish()?;
        Ok(Self { key, query })
    }

    pub(crate) async fn apply<K: Kv>(self, ctx: &mut Ctx<'_, K>) -> Result<Frame, CommandError> {
        let record = read(ctx, self.key, Kind::Set).await?;
        let set = record.as_ref().map(|r| &r.set.state);
        let has = |m: &[u8]| set.is_some_and(|s| s.contains(m));
        let members = || -> Vec<Bytes> {
            set.map(|s| s.members().cloned().collect())
                .unwrap_or_default()
        };
        Ok(match self.query {
            SetQuery::Members => Frame::Set(members().into_iter().map(Frame::Bulk).collect()),
            SetQuery::Card => Frame::Integer(set.map_or(0, |s| s.len()) as i64),
            SetQuery::IsMember(m) => Frame::Integer(i64::from(has(&m))),
            SetQuery::AreMembers(ms) => Frame::Array(
                ms.iter()
                    .map(|m| Frame::Integer(i64::from(has(m))))
                    .collect(),
            ),
            SetQuery::Random(count) => {
                random_members(members(), count, ctx.shared.config.reply_bytes_max)?
            }
        })
    }
}

/// `SRANDMEMBER`'s reply: one member (or nil) without a count; with a
/// positive count, that many distinct members at most; with a negative
/// one, that many members, repeats allowed (refused past
/// `reply_bytes_max`, as an `MGET` is: repeats could make it any size).
fn random_members(
    members: Vec<Bytes>,
    count: Option<i64>,
    reply_bytes_max: usize,
) -> Result<Frame, CommandError> {
    use ringkv_env::Rng;
    let mut rng = ringkv_env::SeededRng::new(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    );
    let mut pick = |n: usize| (rng.next_u64() % n.max(1) as u64) as usize;
    Ok(match count {
        None => {
            Frame::bulk_or_null((!members.is_empty()).then(|| members[pick(members.len())].clone()))
        }
        Some(_) if members.is_empty() => Frame::Array(Vec::new()),
        Some(c) if c >= 0 => {
            let mut left = members;
            let take = (c as usize).min(left.len());
            let mut out = Vec::with_capacity(take);
            for _ in 0..take {
                let i = pick(left.len());
                out.push(Frame::Bulk(left.swap_remove(i)));
            }
            Frame::Array(out)
        }
        Some(c) => {
            if c.unsigned_abs() > RANDOM_MEMBERS_MAX as u64 {
                return Err(CommandError::Invalid(format!(
                    "SRANDMEMBER count is past {RANDOM_MEMBERS_MAX} members; ask for fewer"
                )));
            }
            let n = c.unsigned_abs() as usize;
            let mut bytes = 0usize;
            let mut out = Vec::with_capacity(n.min(1024));
            for _ in 0..n {
                let m = members[pick(members.len())].clone();
                bytes += m.len() + 16;
                if bytes > reply_bytes_max {
                    return Err(CommandError::Invalid(format!(
                        "SRANDMEMBER reply exceeds {reply_bytes_max} bytes (reply_bytes_max); \
                         ask for fewer members"
                    )));
                }
                out.push(Frame::Bulk(m));
            }
            Frame::Array(out)
        }
    })
}

/// The most members one `SRANDMEMBER` with a negative count returns (and
/// at most `reply_bytes_max` bytes of them).
pub const RANDOM_MEMBERS_MAX: usize = 100_000;

/// `HSET`, `HMSET`, `HSETNX`.
pub(crate) struct HashSet {
    key: Bytes,
    fields: Vec<(Bytes, Bytes)>,
    if_absent: bool,
    /// `HMSET` answers `+OK`.
    ok_reply: bool,
}

impl HashSet {
    pub(crate) fn parse(mut args: Args<'_>, name: &str) -> Result<Self, CommandError> {
        let key = args.bytes()?;
        let rest = args.rest();
        if rest.is_empty() || !rest.len().is_multiple_of(2) {
            return Err(CommandError::WrongArity(name.to_ascii_lowercase()));
        }
        let fields = rest
            .chunks(2)
            .map(|p| (p[0].clone(), p[1].clone()))
            .collect();
        Ok(Self {
            key,
            fields,
            if_absent: name == "HSETNX",
            ok_reply: name == "HMSET",
        })
    }

    pub(crate) async fn apply<K: Kv>(self, ctx: &mut Ctx<'_, K>) -> Result<Frame, CommandError> {
        let change = TypedChange::HashSet {
            fields: self.fields,
            if_absent: self.if_absent,
        };
        let added = write(ctx, self.key, change).await?;
        Ok(if self.ok_reply {
            Frame::ok()
        } else {
            Frame::Integer(added)
        })
    }
}

/// `HDEL`.
pub(crate) struct HashDelete {
    key: Bytes,
    fields: Vec<Bytes>,
}

impl HashDelete {
    pub(crate) fn parse(mut args: Args<'_>) -> Result<Self, CommandError> {
        let key = args.bytes()?;
        let fields = args.rest().to_vec();
        Ok(Self { key, fields })
    }

    pub(crate) async fn apply<K: Kv>(self, ctx: &mut Ctx<'_, K>) -> Result<Frame, CommandError> {
        let removed = write(ctx, self.key, TypedChange::HashDelete(self.fields)).await?;
        Ok(Frame::Integer(removed))
    }
}

/// `HINCRBY`.
pub(crate) struct HashIncr {
    key: Bytes,
    field: Bytes,
    delta: i64,
}

impl HashIncr {
    pub(crate) fn parse(mut args: Args<'_>) -> Result<Self, CommandError> {
        let key = args.bytes()?;
        let field = args.bytes()?;
        let delta = args.int()?;
        args.finish()?;
        Ok(Self { key, field, delta })
    }

    pub(crate) async fn apply<K: Kv>(self, ctx: &mut Ctx<'_, K>) -> Result<Frame, CommandError> {
        let change = TypedChange::HashIncrement {
            field: self.field,
            delta: self.delta,
        };
        Ok(Frame::Integer(write(ctx, self.key, change).await?))
    }
}

/// What a hash read answers.
pub(crate) enum HashQuery {
    Get(Bytes),
    MultiGet(Vec<Bytes>),
    All,
    Len,
    Exists(Bytes),
    Keys,
    Values,
    StrLen(Bytes),
}

pub(crate) struct HashRead {
    key: Bytes,
    query: HashQuery,
}

impl HashRead {
    pub(crate) fn parse(mut args: Args<'_>, name: &str) -> Result<Self, CommandError> {
        let key = args.bytes()?;
        let query = match name {
            "HGET" => HashQuery::Get(args.bytes()?),
            "HMGET" => HashQuery::MultiGet(args.rest().to_vec()),
            "HGETALL" => HashQuery::All,
            "HLEN" => HashQuery::Len,
            "HEXISTS" => HashQuery::Exists(args.bytes()?),
            "HKEYS" => HashQuery::Keys,
            "HVALS" => HashQuery::Values,
            _ => HashQuery::StrLen(args.bytes()?),
        };
        args.finish()?;
        Ok(Self { key, query })
    }

    pub(crate) async fn apply<K: Kv>(self, ctx: &mut Ctx<'_, K>) -> Result<Frame, CommandError> {
        let record = read(ctx, self.key, Kind::Hash).await?;
        let hash = record.as_ref().map(|r| &r.hash.state);
        let value = |name: &[u8]| -> Option<Bytes> {
            hash.and_then(|h| h.field(name))
                .and_then(|f| f.read())
                .map(shown)
        };
        let present = || -> Vec<(Bytes, Bytes)> {
            hash.map(|h| h.present().map(|(n, v)| (n.clone(), shown(v))).collect())
                .unwrap_or_default()
        };
        Ok(match self.query {
            HashQuery::Get(f) => Frame::bulk_or_null(value(&f)),
            HashQuery::MultiGet(fs) => {
                Frame::Array(fs.iter().map(|f| Frame::bulk_or_null(value(f))).collect())
            }
            HashQuery::All => Frame::Map(
                present()
                    .into_iter()
                    .map(|(n, v)| (Frame::Bulk(n), Frame::Bulk(v)))
                    .collect(),
            ),
            HashQuery::Len => Frame::Integer(hash.map_or(0, |h| h.len()) as i64),
            HashQuery::Exists(f) => Frame::Integer(i64::from(value(&f).is_some())),
            HashQuery::Keys => {
                Frame::Array(present().into_iter().map(|(n, _)| Frame::Bulk(n)).collect())
            }
            HashQuery::Values => {
                Frame::Array(present().into_iter().map(|(_, v)| Frame::Bulk(v)).collect())
            }
            HashQuery::StrLen(f) => Frame::Integer(value(&f).map_or(0, |v| v.len()) as i64),
        })
    }
}

/// A field as a client reads it: its value, or its counter's.
fn shown(v: FieldValue<'_>) -> Bytes {
    match v {
        FieldValue::Value(b) => b.clone(),
        FieldValue::Counter(c) => Bytes::from(c.value().to_string()),
    }
}
