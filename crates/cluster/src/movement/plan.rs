//! Which token intervals change hands when the ring changes: for every
//! interval whose replicas differ between the current and the pending ring,
//! the *gainer* that must receive it, the *losers* that give it up, and the
//! current replicas that hold it.

use crate::id::NodeId;
use crate::ring::{Placement, Token};

/// One token interval to copy: the records with token in `[lo, hi]`, to
/// `target`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    pub lo: Token,
    pub hi: Token,
    pub target: NodeId,
    /// Current replicas that are not replicas in the pending ring.
    pub losers: Vec<NodeId>,
    /// Every current replica.
    pub holders: Vec<NodeId>,
}

/// The intervals `[lo, hi]` between consecutive tokens of both rings; each
/// lies within one vnode of either ring, so one preference list per ring
/// covers it (the list of `hi`).
pub(crate) fn intervals(a: &Placement, b: &Placement) -> Vec<(Token, Token)> {
    let mut tokens: Vec<u64> = a
        .ring()
        .tokens()
        .chain(b.ring().tokens())
        .map(|(t, _)| t)
        .collect();
    tokens.sort_unstable();
    tokens.dedup();
    let Some(&first) = tokens.first() else {
        return vec![(0, u64::MAX)];
    };
    let mut out = Vec::with_capacity(tokens.len() + 1);
    out.push((0, first));
    for w in tokens.windows(2) {
        out.push((w[0] + 1, w[1]));
    }
    if let Some(&last) = tokens.last()
        && last < u64::MAX
    {
        out.push((last + 1, u64::MAX));
    }
    out
}

/// Every copy the move from `current` to `pending` needs, adjacent
/// intervals with the same target and replicas merged.
pub fn transfers(current: &Placement, pending: &Placement) -> Vec<Transfer> {
    let mut out: Vec<Transfer> = Vec::new();
    for (lo, hi) in intervals(current, pending) {
        let cur = current.preference_list(hi);
        let fut = pending.preference_list(hi);
        let losers: Vec<NodeId> = cur.iter().copied().filter(|id| !fut.contains(id)).collect();
        for &target in fut.iter().filter(|id| !cur.contains(id)) {
            let t = Transfer {
                lo,
                hi,
                target,
                losers: losers.clone(),
                holders: cur.to_vec(),
            };
            // Intervals come in token order; extend a run of the same move.
            if let Some(prev) = out.iter_mut().rev().take(8).find(|p| {
                p.target == target
                    && p.hi.checked_add(1) == Some(lo)
                    && p.losers == t.losers
                    && p.holders == t.holders
            }) {
                prev.hi = hi;
            } else {
                out.push(t);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::{Replication, Ring, RingNode};
    use proptest::prelude::*;

    fn placement(ids: &[u64], extra: Option<u64>) -> (Placement, Placement) {
        let mut ring = Ring::new(16);
        let add = |ring: &mut Ring, id: u64| {
            let node = RingNode {
                id,
                dc: "dc1".into(),
                rack: format!("r{}", id % 3),
                weight: 1,
            };
            ring.add_node(node, 3).expect("add");
        };
        for &id in ids {
            add(&mut ring, id);
        }
        let before = Placement::new(ring.clone(), Replication::simple("dc1", 3));
        if let Some(id) = extra {
            add(&mut ring, id);
        }
        (before, Placement::new(ring, Replication::simple("dc1", 3)))
    }

    /// The transfer covering `token` to `target`, if any.
    fn covering(ts: &[Transfer], token: u64, target: u64) -> Option<&Transfer> {
        ts.iter()
            .find(|t| t.target == target && t.lo <= token && token <= t.hi)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Every replica a key gains is a transfer target covering the
        /// key's token, from holders that were its replicas; nothing else
        /// moves.
        #[test]
        fn transfers_cover_exactly_what_each_replica_gains(
            n in 1usize..6,
            tokens in proptest::collection::vec(any::<u64>(), 64),
        ) {
            let ids: Vec<u64> = (1..=n as u64).map(|i| i * 1_000_003).collect();
            let (cur, fut) = placement(&ids, Some(77));
            let ts = transfers(&cur, &fut);
            for t in &ts {
                prop_assert!(t.lo <= t.hi);
                prop_assert!(!t.holders.contains(&t.target));
                prop_assert!(t.losers.iter().all(|l| t.holders.contains(l)));
            }
            for token in tokens {
                let before = cur.preference_list(token);
                let after = fut.preference_list(token);
                for &id in after.iter().filter(|id| !before.contains(id)) {
                    let t = covering(&ts, token, id);
                    prop_assert!(t.is_some(), "gain of {id} at {token} not covered");
                    prop_assert_eq!(&t.map(|t| t.holders.clone()).unwrap_or_default(), &before.to_vec());
                }
                for &id in after.iter().filter(|id| before.contains(id)) {
                    prop_assert!(covering(&ts, token, id).is_none(), "{id} keeps {token}: nothing to copy");
                }
            }
        }
    }

    #[test]
    fn a_join_moves_about_a_share_and_a_removal_names_the_dead_node_as_loser() {
        let ids: Vec<u64> = (1..=4).map(|i| i * 1_000_003).collect();
        let (cur, fut) = placement(&ids, Some(99));
        let ts = transfers(&cur, &fut);
        assert!(ts.iter().all(|t| t.target == 99));
        let moved: u128 = ts.iter().map(|t| u128::from(t.hi - t.lo) + 1).sum();
        // With N = 3 the new node replicates about 3/5 of the token space.
        let share = moved as f64 / 2f64.powi(64);
        assert!((0.4..0.8).contains(&share), "share {share}");
        // Removing a node: its ranges go to the others, it is the loser.
        let (full, _) = placement(&ids, None);
        let (less, _) = placement(&ids[..3], None);
        let ts = transfers(&full, &less);
        assert!(!ts.is_empty());
        assert!(ts.iter().all(|t| t.losers == vec![ids[3]]));
    }

    #[test]
    fn an_empty_ring_is_one_interval() {
        let (a, _) = placement(&[], None);
        assert_eq!(intervals(&a, &a), vec![(0, u64::MAX)]);
        assert!(transfers(&a, &a).is_empty());
    }
}
