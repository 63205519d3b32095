//! Writes of the data types (counters, sets, hashes) as the coordinating
//! replica applies them to its record of the key (docs/design/data-types.md,
//! "What a client sees").
//!
//! A write of a data type is, like a string write, a read-modify-write of
//! the record under the key's lock: it takes a fresh dot (its context is
//! the record's whole vector, so it supersedes the string siblings it
//! sees), supersedes what it sees of the other kinds, and changes its own
//! kind's state with the dot and its HLC. A counter's increments by this
//! node go to an entry keyed by a dot of this node (`STAND_IN_EPOCH | dot
//! counter`): the one it opened in its current epoch when its record of the
//! key holds it, otherwise a new one keyed by the write's own dot. So an
//! entry is never written again once its owner's copy may be behind another
//! replica's: after a restart, a truncation step (new epochs), a purge of
//! the dead record, or by a stand-in (which never reads its own entry back).

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use std::sync::atomic::Ordering;

use super::{Change, LocalReplica, LogWrite};
use crate::api::{KvError, Sibling, WriteOptions, WriteOutcome};
use crate::causality::Hlc;
use crate::causality::types::{
    Base, Counter, CounterError, EntryId, FieldValue, Kind, Record, STAND_IN_EPOCH,
};
use crate::store::LocalStore;

/// What a client write may make a data type hold (`[limits]`). Merges are
/// never refused (that would make replicas diverge), so these bound what
/// clients make, and a merge of two records under them is at most twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TypeLimits {
    /// Members of one set.
    pub set_members_max: usize,
    /// Fields of one hash.
    pub hash_fields_max: usize,
    /// Entries of one counter (owners times epochs, plus stand-ins'
    /// entries).
    pub counter_entries_max: usize,
    /// The encoded record of a key of a data type, bytes (the node's
    /// `value_bytes_max`: what a string value may be).
    pub record_bytes_max: usize,
}

impl TypeLimits {
    /// Why these limits cannot be used: each must be positive, and at most
    /// half what a record decodes with (a merge of two records under them
    /// must still decode everywhere).
    pub fn check(&self) -> Result<(), String> {
        use crate::causality::types::counter::COUNTER_ENTRIES_DECODE_MAX;
        use crate::causality::types::map::HASH_FIELDS_DECODE_MAX;
        use crate::causality::types::orset::SET_MEMBERS_DECODE_MAX;
        for (name, value, decoded) in [
            (
                "set_members_max",
                self.set_members_max,
                SET_MEMBERS_DECODE_MAX,
            ),
            (
                "hash_fields_max",
                self.hash_fields_max,
                HASH_FIELDS_DECODE_MAX,
            ),
            (
                "counter_entries_max",
                self.counter_entries_max,
                COUNTER_ENTRIES_DECODE_MAX,
            ),
            // Halved below like the others: any size fits.
            ("record_bytes_max", self.record_bytes_max, usize::MAX),
        ] {
            if value == 0 || value > decoded / 2 {
                return Err(format!(
                    "limits.{name} ({value}) must lie in 1..={}",
                    decoded / 2
                ));
            }
        }
        Ok(())
    }
}

impl Default for TypeLimits {
    fn default() -> Self {
        Self {
            set_members_max: 100_000,
            hash_fields_max: 100_000,
            counter_entries_max: 4_096,
            record_bytes_max: 1024 * 1024,
        }
    }
}

/// A write of a data type. Variants are appended, never reordered: a
/// forwarded write carries one (`WriteOp::Typed`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TypedChange {
    /// `INCRBY` (`INCR`, `DECR`, `DECRBY`): add `delta` to the counter.
    Increment(i64),
    /// `SADD`.
    SetAdd(Vec<Bytes>),
    /// `SREM`.
    SetRemove(Vec<Bytes>),
    /// `HSET` (`if_absent`: `HSETNX`, one field, set only when absent).
    HashSet {
        fields: Vec<(Bytes, Bytes)>,
        if_absent: bool,
    },
    /// `HDEL`.
    HashDelete(Vec<Bytes>),
    /// `HINCRBY`.
    HashIncrement { field: Bytes, delta: i64 },
}

impl TypedChange {
    /// The kind of key it writes.
    pub fn kind(&self) -> Kind {
        match self {
            Self::Increment(_) => Kind::Counter,
            Self::SetAdd(_) | Self::SetRemove(_) => Kind::Set,
            Self::HashSet { .. } | Self::HashDelete(_) | Self::HashIncrement { .. } => Kind::Hash,
        }
    }

    /// True when it can only remove (so it writes nothing to a key that
    /// does not hold its kind, and needs no room).
    fn removes(&self) -> bool {
        matches!(self, Self::SetRemove(_) | Self::HashDelete(_))
    }
}

/// The coordinator of a typed write: who it is, the HLC of the write, and
/// whether it holds the key (a stand-in does not, and cannot read its own
/// counter entry back).
pub(super) struct Writer {
    pub actor: u64,
    pub epoch: u64,
    pub hlc: Hlc,
    pub floor: u64,
    pub stores: bool,
}

/// What a typed write did: its integer reply, and whether the record
/// changed (nothing to store or send when not).
pub(super) struct Applied {
    pub integer: i64,
    pub changed: bool,
}

/// Applies `change` to `record` (as this replica holds it, without what the
/// truncation point hides) at `now_ms`. On an error the record may be
/// half-changed: the caller drops it.
pub(super) fn apply(
    record: &mut Record,
    change: TypedChange,
    w: &Writer,
    now_ms: u64,
    limits: &TypeLimits,
) -> Result<Applied, KvError> {
    let kind = change.kind();
    let held = record.kind(now_ms);
    // A counter may start from a string holding an integer (Redis's `SET k
    // 10`, then `INCR k`); every other kind meets only itself.
    let from_string = match held {
        None => None,
        Some(k) if k == kind => None,
        Some(Kind::String) if kind == Kind::Counter => Some(string_integer(record, now_ms)?),
        Some(_) => return Err(KvError::WrongType),
    };
    if held.is_none() && change.removes() {
        return Ok(Applied {
            integer: 0,
            changed: false,
        });
    }
    if from_string.is_some() && expiring(record, now_ms) {
        return Err(KvError::InvalidArgument(
            "a key with a time to live cannot become a counter yet (data types do not expire \
             yet); INCR it once it has no expiry"
                .into(),
        ));
    }
    // An increment by 0 changes nothing (and must not make a counter of
    // the value 0, which would read as absent).
    if let TypedChange::Increment(0) = change {
        let value = match (from_string, held) {
            (Some(v), _) => v,
            (None, Some(Kind::Counter)) => {
                i64::try_from(record.counter.state.value()).map_err(|_| KvError::Overflow)?
            }
            _ => 0,
        };
        return Ok(Applied {
            integer: value,
            changed: false,
        });
    }
    // Nothing to do for adds and removals that change no member or field:
    // no dot is taken and nothing is written (Redis replies 0).
    // (An add of members all present is written: its fresh dot makes the
    // add win over a removal concurrent with it.)
    let noop = match &change {
        TypedChange::SetRemove(members) => !members.iter().any(|m| record.set.state.contains(m)),
        TypedChange::HashDelete(fields) => !fields.iter().any(|f| field_present(record, f)),
        TypedChange::HashSet {
            fields,
            if_absent: true,
        } => fields.iter().any(|(f, _)| field_present(record, f)),
        _ => false,
    };
    if noop {
        return Ok(Applied {
            integer: 0,
            changed: false,
        });
    }
    // The causal part: the record's own vector is the context, so the
    // write supersedes every string sibling this replica sees.
    let context = record.strings.vv.clone();
    let dot = record.strings.advance_above(&context, w.actor, w.floor);
    record.supersede_other_kinds(kind, w.hlc, w.actor);
    let epoch_floor = crate::causality::epoch_floor(w.epoch);
    let own_entry = |counter: &Counter| {
        (w.stores)
            .then(|| counter.entry_above(w.actor, epoch_floor))
            .flatten()
            .unwrap_or(EntryId {
                actor: w.actor,
                epoch: STAND_IN_EPOCH | dot.counter,
            })
    };
    let integer = match change {
        TypedChange::Increment(delta) => {
            let counter = &mut record.counter;
            if let Some(value) = from_string {
                restart(&mut counter.state, value, w);
            }
            counter.hlc = counter.hlc.max(w.hlc);
            let entry = own_entry(&counter.state);
            increment(&mut counter.state, entry, delta, w.hlc, limits)?
        }
        TypedChange::SetAdd(members) => {
            let set = &mut record.set;
            set.hlc = set.hlc.max(w.hlc);
            let mut added = 0;
            for m in members {
                if set.state.add(m, dot, w.hlc) {
                    added += 1;
                }
            }
            if set.state.len() > limits.set_members_max {
                return Err(too_many("set", limits.set_members_max, "members"));
            }
            added
        }
        TypedChange::SetRemove(members) => {
            let set = &mut record.set;
            set.hlc = set.hlc.max(w.hlc);
            members.iter().filter(|m| set.state.remove(m)).count() as i64
        }
        TypedChange::HashSet { fields, .. } => {
            let hash = &mut record.hash;
            hash.hlc = hash.hlc.max(w.hlc);
            let mut added = 0;
            for (name, value) in fields {
                if hash.state.field(&name).is_none_or(|f| f.read().is_none()) {
                    added += 1;
                }
                hash.state.write(name, dot, w.hlc, Some(value));
            }
            if hash.state.field_count() > limits.hash_fields_max {
                return Err(too_many("hash", limits.hash_fields_max, "fields"));
            }
            added
        }
        TypedChange::HashDelete(fields) => {
            let hash = &mut record.hash;
            hash.hlc = hash.hlc.max(w.hlc);
            (fields.iter())
                .filter(|f| hash.state.remove(f, w.hlc, w.actor))
                .count() as i64
        }
        TypedChange::HashIncrement { field, delta } => {
            let hash = &mut record.hash;
            hash.hlc = hash.hlc.max(w.hlc);
            // A field that reads as a value (or not at all) starts a count
            // from it: what its counter counted before is removed.
            let start = match hash.state.field(&field).and_then(|f| f.read()) {
                Some(FieldValue::Counter(_)) => None,
                Some(FieldValue::Value(v)) => {
                    Some(parse_integer(v).ok_or(KvError::NotAnInteger { hash: true })?)
                }
                None => Some(0),
            };
            let counter = hash.state.field_mut(field.clone()).counter_mut();
            if let Some(value) = start {
                restart(counter, value, w);
            }
            let entry = own_entry(counter);
            let value = increment(counter, entry, delta, w.hlc, limits)?;
            hash.state.write(field, dot, w.hlc, None);
            if hash.state.field_count() > limits.hash_fields_max {
                return Err(too_many("hash", limits.hash_fields_max, "fields"));
            }
            value
        }
    };
    Ok(Applied {
        integer,
        changed: true,
    })
}

impl<S: LocalStore> LocalReplica<S> {
    /// A write of a data type (see the module documentation).
    pub(super) fn apply_typed(
        &self,
        key: &[u8],
        mut record: Record,
        change: TypedChange,
        now: u64,
        store: bool,
    ) -> Result<(WriteOutcome, Option<Record>), KvError> {
        // The timestamp and the epoch together (see `switch_epoch`).
        let writer = {
            let mut hlc = self.hlc.lock();
            Writer {
                actor: self.id,
                epoch: self.epoch(),
                hlc: hlc.next(now),
                floor: self.dot_floor.load(Ordering::Relaxed),
                stores: store,
            }
        };
        let applied = apply(&mut record, change, &writer, now, &self.type_limits)?;
        let outcome = WriteOutcome {
            applied: applied.changed,
            previous: None,
            integer: Some(applied.integer),
        };
        if !applied.changed {
            return Ok((outcome, None));
        }
        self.dot_floor
            .fetch_max(record.strings.vv.get(self.id), Ordering::Relaxed);
        self.bound(&mut record.strings);
        let encoded = record.encode();
        let max = self.type_limits.record_bytes_max;
        if encoded.len() > max {
            return Err(KvError::ValueTooLarge {
                len: encoded.len(),
                max,
            });
        }
        if store {
            self.put_record(key, encoded, LogWrite::Buffered, true)?;
        }
        Ok((outcome, Some(record)))
    }
}

/// What a string write sees of a key that holds the data type `kind`:
/// a counter's value (a counter is a string to Redis), or, for a set or a
/// hash, a key that exists with no value a string write can return or
/// keep (`SET ... GET` on it is Redis's `WRONGTYPE`). A data type does
/// not expire yet, so `EXPIRE` and `PERSIST` of one are refused.
pub(super) fn typed_before(
    record: &Record,
    kind: Kind,
    change: &Change,
    opts: &WriteOptions,
) -> Result<Sibling, KvError> {
    if matches!(change, Change::Expiry(_)) {
        return Err(KvError::InvalidArgument(
            "keys of data types (counters, sets, hashes) do not expire yet".into(),
        ));
    }
    let (value, hlc) = match kind {
        Kind::Counter => (
            Bytes::from(record.counter.state.value().to_string()),
            record.counter.hlc,
        ),
        _ if opts.return_previous => return Err(KvError::WrongType),
        Kind::Set => (Bytes::new(), record.set.hlc),
        _ => (Bytes::new(), record.hash.hlc),
    };
    Ok(Sibling {
        value,
        hlc,
        actor: 0,
        expires_at_ms: None,
    })
}

/// A counter that starts again from `value`: what it counted is removed
/// (as `DEL` does), and its base is `value`, set by this write.
fn restart(counter: &mut Counter, value: i64, w: &Writer) {
    counter.remove_observed(w.hlc, w.actor);
    counter.base = Base {
        value,
        hlc: w.hlc,
        actor: w.actor,
    };
}

fn increment(
    counter: &mut Counter,
    entry: EntryId,
    delta: i64,
    hlc: Hlc,
    limits: &TypeLimits,
) -> Result<i64, KvError> {
    counter
        .increment(entry, delta, hlc, limits.counter_entries_max)
        .map_err(|e| match e {
            CounterError::Overflow => KvError::Overflow,
            CounterError::TooManyEntries(_) => {
                too_many("counter", limits.counter_entries_max, "entries")
            }
        })
}

fn too_many(what: &'static str, max: usize, of: &'static str) -> KvError {
    KvError::TooManyElements(format!(
        "the {what} would hold more than {max} {of} (limits.{what}_{of}_max)"
    ))
}

/// True when the key's string (its resolved sibling) has an expiry.
fn expiring(record: &Record, now_ms: u64) -> bool {
    super::resolved(&record.strings, now_ms).is_some_and(|s| s.expires_at_ms.is_some())
}

fn field_present(record: &Record, name: &[u8]) -> bool {
    (record.hash.state.field(name)).is_some_and(|f| f.read().is_some())
}

/// The integer the key's string holds (its resolved sibling), for a
/// counter to start from.
fn string_integer(record: &Record, now_ms: u64) -> Result<i64, KvError> {
    let value = super::resolved(&record.strings, now_ms).map(|s| s.value);
    value
        .as_deref()
        .and_then(parse_integer)
        .ok_or(KvError::NotAnInteger { hash: false })
}

/// A 64-bit integer written as Redis writes one (`string2ll`): an optional
/// `-`, digits without a leading zero (`0` alone aside), nothing else.
pub fn parse_integer(bytes: &[u8]) -> Option<i64> {
    let digits = bytes.strip_prefix(b"-").unwrap_or(bytes);
    let well_formed = match digits {
        [] => false,
        [b'0'] => bytes.len() == 1,
        [first, rest @ ..] => (b'1'..=b'9').contains(first) && rest.iter().all(u8::is_ascii_digit),
    };
    if !well_formed || bytes.len() > 20 {
        return None;
    }
    std::str::from_utf8(bytes).ok()?.parse().ok()
}
