//! The tombstone rule, on one record: when a dead record may be purged,
//! and when the version-vector entries of nodes that left may be pruned.
//!
//! A dead record (every sibling deleted or expired) may be purged by
//! compaction only when its newest write is older than the grace period
//! AND its range completed an anti-entropy sync with every other replica
//! at a time later than that write (`synced_at`, the sync ledger's answer;
//! see [`crate::repair::anti_entropy`]). Then every replica holds the
//! tombstone or something newer, so no replica can bring the old value
//! back. The same rule lets an entry of a departed node go.

use bytes::Bytes;

use super::types::Record;
use super::{Hlc, SiblingSet, hlc_physical_ms};
use crate::id::NodeId;

/// True when compaction may drop this stored record: every sibling is
/// deleted or expired, its newest write is older than the grace period, and
/// its range completed a sync with every other replica after that write
/// (`synced_at`, asked only when the rest holds). Records that do not decode
/// are never purged: they are reported, not destroyed.
pub fn dead_record_purgeable(
    record: &Bytes,
    now_ms: u64,
    grace_ms: u64,
    synced_at: impl FnOnce() -> Option<u64>,
) -> bool {
    match Record::decode(record) {
        Ok(r) => dead_record_with_types_purgeable(&r, now_ms, grace_ms, synced_at),
        Err(_) => false,
    }
}

/// The tombstone rule of [`dead_record_purgeable`] on a decoded record:
/// dead when no sibling is live and every typed component is empty (a
/// record of emptied components is a tombstone, docs/design/data-types.md).
pub(crate) fn dead_record_with_types_purgeable(
    record: &Record,
    now_ms: u64,
    grace_ms: u64,
    synced_at: impl FnOnce() -> Option<u64>,
) -> bool {
    record.is_dead(now_ms) && dead_purgeable(record.max_hlc(), now_ms, grace_ms, synced_at)
}

/// The tombstone rule for a dead record whose newest write is at `newest`.
fn dead_purgeable(
    newest: Hlc,
    now_ms: u64,
    grace_ms: u64,
    synced_at: impl FnOnce() -> Option<u64>,
) -> bool {
    let written_ms = hlc_physical_ms(newest);
    written_ms.saturating_add(grace_ms) < now_ms && synced_at().is_some_and(|t| t > written_ms)
}

/// Prunes `set`'s version vector: drops the entries of nodes that have left
/// the ring (`departed`) and carry no live sibling here, once nothing can
/// bring back a sibling such an entry covers. That is the tombstone rule:
/// the record's newest write is older than the grace period (so no hint or
/// late stream of an older record is still on its way) and its range
/// completed a sync with every other replica after that write
/// (`synced_at`), so every replica already holds a record at least this
/// new. A node that left never issues a dot again (a node joins again only
/// under a new id), so its entry only ever covers old siblings. Returns true
/// when it dropped an entry. Replicas prune on their own schedules; a
/// merge of a pruned and an unpruned record prunes again (see
/// [`crate::replica::LocalReplica::merge`]), so they converge.
pub fn prune_departed(
    set: &mut SiblingSet,
    now_ms: u64,
    grace_ms: u64,
    departed: impl Fn(NodeId) -> bool,
    synced_at: impl FnOnce() -> Option<u64>,
) -> bool {
    // Cheapest first: a record written within the grace period (every
    // record a write or a replication merges) stops here.
    let written_ms = hlc_physical_ms(set.max_hlc());
    if written_ms.saturating_add(grace_ms) >= now_ms {
        return false;
    }
    let gone: Vec<NodeId> = set
        .vv
        .actors()
        .filter(|&a| departed(a) && !set.siblings.iter().any(|s| s.dot.actor == a))
        .collect();
    if gone.is_empty() || synced_at().is_none_or(|t| t <= written_ms) {
        return false;
    }
    for a in gone {
        set.vv.remove(a);
    }
    true
}

/// True when a stored record may be purged by compaction at `now_ms`: every
/// sibling is deleted or expired and the newest is older than the grace
/// period.
pub fn record_purgeable(record: &Bytes, now_ms: u64, grace_ms: u64) -> bool {
    match SiblingSet::decode(record) {
        Ok(set) => {
            set.is_dead(now_ms) && hlc_physical_ms(set.max_hlc()).saturating_add(grace_ms) < now_ms
        }
        // Never purge what cannot be read: it is reported, not destroyed.
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::causality::VersionVector;

    const GRACE_MS: u64 = 1_000;

    #[test]
    fn departed_entries_go_only_once_nothing_can_bring_back_what_they_cover() {
        let departed = |a: u64| a == 9;
        // Node 9 wrote at 1 s; node 1 superseded it at 2 s.
        let mut set = SiblingSet::default();
        set.update(
            &VersionVector::new(),
            9,
            1_000 << 16,
            Some(Bytes::from_static(b"a")),
            None,
        );
        let ctx = set.vv.clone();
        set.update(&ctx, 1, 2_000 << 16, Some(Bytes::from_static(b"b")), None);
        let prune = |set: &mut SiblingSet, now: u64, synced: Option<u64>| {
            prune_departed(set, now, GRACE_MS, departed, || synced)
        };
        // Within the grace period: kept.
        assert!(!prune(&mut set.clone(), 2_500, Some(2_400)));
        // Past it, but not synced with every replica since the write: kept.
        assert!(!prune(&mut set.clone(), 10_000, None));
        assert!(!prune(&mut set.clone(), 10_000, Some(1_500)));
        // Past it and synced after it: 9's entry goes, nothing else changes.
        let mut pruned = set.clone();
        assert!(prune(&mut pruned, 10_000, Some(2_500)));
        assert_eq!(pruned.vv.get(9), 0);
        assert_eq!(pruned.vv.get(1), set.vv.get(1));
        assert_eq!(pruned.siblings, set.siblings);
        // A member's entry, or a departed node's entry with a live sibling,
        // stays.
        let mut live = SiblingSet::default();
        live.update(
            &VersionVector::new(),
            9,
            1_000 << 16,
            Some(Bytes::from_static(b"a")),
            None,
        );
        assert!(!prune(&mut live, 10_000, Some(2_500)));
        assert!(!prune_departed(
            &mut set.clone(),
            10_000,
            GRACE_MS,
            |_| false,
            || Some(2_500)
        ));
        // A pruned and an unpruned copy merge, and pruning again converges.
        let mut merged = pruned.clone();
        merged.merge(&set);
        assert_eq!(
            merged.vv.get(9),
            set.vv.get(9),
            "a merge brings the entry back"
        );
        assert!(prune(&mut merged, 10_000, Some(2_500)));
        assert_eq!(merged, pruned);
    }

    #[test]
    fn purge_rule_needs_dead_and_past_grace() {
        let k = |s: &str| Bytes::copy_from_slice(s.as_bytes());
        let mut set = SiblingSet::default();
        set.update(&VersionVector::new(), 1, 1_000 << 16, None, None);
        let rec = Bytes::from(set.encode());
        assert!(!record_purgeable(&rec, 1_500, 1_000));
        assert!(record_purgeable(&rec, 2_001, 1_000));
        let mut live = SiblingSet::default();
        live.update(&VersionVector::new(), 1, 1_000 << 16, Some(k("v")), None);
        assert!(!record_purgeable(
            &Bytes::from(live.encode()),
            u64::MAX / 2,
            0
        ));
        assert!(!record_purgeable(
            &Bytes::from_static(b"junk"),
            u64::MAX / 2,
            0
        ));
    }
}
