//! Every vnode's preference list, worked out once per ring, and worked out
//! again after a change only where the change reaches.
//!
//! # Incremental rebuild
//! A vnode's list is [`place`] over the owners of the tokens from its own
//! on, clockwise, and the walk stops after a few of them (its *reach*,
//! kept per vnode). The list depends on nothing else but the nodes' data
//! centers and racks, the replication, and each data center's shape (its
//! racks, the nodes owning a token in it). So when a ring changes by a few
//! nodes (a join, a leave, a token moved), [`Placement::updated`] keeps the
//! list of every vnode whose token is still there and whose walk saw no
//! change: no token of the walk removed or given to another owner, and no
//! token inserted inside it. Only the others walk again. A change of a data
//! center's racks, of a node's rack or data center, or of the replication
//! rebuilds everything. A change of a data center's owner count walks
//! again every vnode whose walk was long enough to have seen that many
//! nodes (a walk stops early in a data center that has shown all its
//! owners). The result equals a whole rebuild's
//! (property-tested below); a join of one node among a thousand walks
//! about 1% of the vnodes again.

use super::dense::DensePlacer;
use super::{DcShape, Replication, Ring, Token};

/// A ring with every vnode's preference list worked out once, so the request
/// path does a binary search instead of a ring walk.
#[derive(Debug, Clone)]
pub struct Placement {
    ring: Ring,
    replication: Replication,
    /// Tokens in ring order, and each one's owner.
    tokens: Vec<Token>,
    owners: Vec<u64>,
    /// The preference list of vnode `i` is `lists[starts[i]..starts[i + 1]]`
    /// (one allocation for all: 8 bytes a replica, not a vector each).
    starts: Vec<u32>,
    lists: Vec<u64>,
    /// How many tokens, from its own on, vnode `i`'s walk read.
    reach: Vec<u32>,
}

/// Above this share of vnodes to walk again, a whole rebuild is as cheap.
const UPDATE_SHARE_MAX: f64 = 0.25;

impl Placement {
    /// Works out every vnode's preference list: `O(T log T)` for `T`
    /// tokens, each list walking only as far as it needs.
    pub fn new(ring: Ring, replication: Replication) -> Self {
        Self::counted(ring, replication).0
    }

    /// [`Placement::new`], and the ring-walk steps it took (the work a
    /// test can bound).
    pub fn counted(ring: Ring, replication: Replication) -> (Self, usize) {
        Self::build(ring, replication, None)
    }

    /// The placement of `ring`, keeping the lists of `base` (the placement
    /// of an earlier ring) that the change cannot have touched: equal to
    /// [`Placement::new`], at a fraction of its cost when the rings differ
    /// by a few nodes (see the module docs).
    pub fn updated(base: &Placement, ring: Ring, replication: Replication) -> Self {
        Self::updated_counted(base, ring, replication).0
    }

    /// [`Placement::updated`], and the ring-walk steps it took.
    pub fn updated_counted(
        base: &Placement,
        ring: Ring,
        replication: Replication,
    ) -> (Self, usize) {
        Self::build(ring, replication, Some(base))
    }

    fn build(ring: Ring, replication: Replication, base: Option<&Placement>) -> (Self, usize) {
        let tokens: Vec<Token> = ring.tokens.keys().copied().collect();
        let owners: Vec<u64> = ring.tokens.values().copied().collect();
        let shape = DcShape::of(&ring);
        let kept = base.and_then(|b| b.reusable(&ring, &replication, &shape, &tokens, &owners));
        let count = tokens.len();
        let mut starts = Vec::with_capacity(count + 1);
        let mut lists = Vec::with_capacity(count * replication.total().max(1));
        let mut reach = Vec::with_capacity(count);
        let mut steps = 0;
        // Numbered on the first walk (an update may reuse every list).
        let mut dense: Option<(DensePlacer, Vec<u32>)> = None;
        for i in 0..count {
            starts.push(u32_of(lists.len()));
            let reuse = match (&kept, base) {
                (Some(k), Some(b)) => k[i].map(|j| (b, j)),
                _ => None,
            };
            if let Some((b, j)) = reuse {
                lists.extend_from_slice(b.list_at(j));
                reach.push(b.reach[j]);
                continue;
            }
            let (placer, by_number) = dense.get_or_insert_with(|| {
                DensePlacer::new(&ring.nodes, &owners, &replication, &shape)
            });
            let walk = by_number[i..].iter().chain(&by_number[..i]).copied();
            let before = steps;
            placer.place_into(walk, &mut lists, &mut steps);
            reach.push(u32_of(steps - before));
        }
        starts.push(u32_of(lists.len()));
        let placement = Self {
            ring,
            replication,
            tokens,
            owners,
            starts,
            lists,
            reach,
        };
        (placement, steps)
    }

    /// For each vnode of the new ring (`tokens`, `owners`), the index in
    /// `self` of the same token whose list still holds, if any; `None` when
    /// the change is too large or of a kind that rebuilds everything.
    fn reusable(
        &self,
        ring: &Ring,
        replication: &Replication,
        shape: &DcShape<'_>,
        tokens: &[Token],
        owners: &[u64],
    ) -> Option<Vec<Option<usize>>> {
        let old = self.tokens.len();
        if old == 0 || *replication != self.replication {
            return None;
        }
        // Every node of both rings as it was; racks per data center the
        // same; owner counts that differ beyond any walk's reach.
        let was = DcShape::of(&self.ring);
        let same_nodes = ring
            .nodes
            .values()
            .all(|n| self.ring.nodes.get(&n.id).is_none_or(|o| o == n));
        if !same_nodes || was.racks != shape.racks {
            return None;
        }
        // A walk stops early in a data center once it has seen all of the
        // data center's owners: where that count changed, a walk of at
        // least the smaller count may have stopped (or may now stop)
        // there, and walks again. A data center that gains its first owner
        // or loses its last changes every walk.
        let mut owners_floor = usize::MAX;
        for dc in was.owners.keys().chain(shape.owners.keys()) {
            let (a, b) = (
                was.owners.get(dc).copied().unwrap_or(0),
                shape.owners.get(dc).copied().unwrap_or(0),
            );
            if a != b {
                owners_floor = owners_floor.min(a.min(b));
            }
        }
        if owners_floor == 0 {
            return None;
        }
        // Old positions whose token went or changed owner, and gaps (before
        // old position `g`, circularly: gap 0 is between the last and the
        // first) where tokens came in. Then, per new token, its old index.
        let mut bad_pos = vec![0u32; old];
        let mut bad_gap = vec![0u32; old];
        let mut same = vec![None; tokens.len()];
        let (mut i, mut j) = (0, 0);
        while i < old || j < tokens.len() {
            match (self.tokens.get(i), tokens.get(j)) {
                (Some(a), Some(b)) if a == b => {
                    if self.owners[i] == owners[j] {
                        same[j] = Some(i);
                    } else {
                        bad_pos[i] = 1;
                    }
                    i += 1;
                    j += 1;
                }
                (Some(a), Some(b)) if a < b => {
                    bad_pos[i] = 1;
                    i += 1;
                }
                (Some(_), None) => {
                    bad_pos[i] = 1;
                    i += 1;
                }
                (_, Some(_)) => {
                    bad_gap[if i == old { 0 } else { i }] = 1;
                    j += 1;
                }
                (None, None) => break,
            }
        }
        let changed = bad_pos.iter().chain(&bad_gap).filter(|&&b| b > 0).count();
        if changed as f64 > UPDATE_SHARE_MAX * old as f64 {
            return None;
        }
        let pos = Circular::new(&bad_pos);
        let gap = Circular::new(&bad_gap);
        for k in same.iter_mut() {
            let Some(i) = *k else { continue };
            let len = self.reach[i] as usize;
            // The walk read positions i..i+len and the gaps between them.
            let touched = len >= old
                || len >= owners_floor
                || pos.any(i, len)
                || (len > 1 && gap.any(i + 1, len - 1));
            if touched {
                *k = None;
            }
        }
        Some(same)
    }

    fn list_at(&self, i: usize) -> &[u64] {
        &self.lists[self.starts[i] as usize..self.starts[i + 1] as usize]
    }

    pub fn ring(&self) -> &Ring {
        &self.ring
    }

    pub fn replication(&self) -> &Replication {
        &self.replication
    }

    /// The number of vnodes (tokens) placed.
    pub fn vnodes(&self) -> usize {
        self.tokens.len()
    }

    /// The preference list of `token` (the list of the vnode owning it).
    pub fn preference_list(&self, token: Token) -> &[u64] {
        if self.tokens.is_empty() {
            return &[];
        }
        let i = self.tokens.partition_point(|&t| t < token);
        let i = if i == self.tokens.len() { 0 } else { i };
        self.list_at(i)
    }

    /// The last token of the run of vnode ranges, from `token` on, whose
    /// preference lists hold the same replicas as `token`'s (in any order),
    /// in plain token order (a run never wraps past `Token::MAX`): one set
    /// of replicas serves a key scan of `[token, end]`.
    pub fn same_replicas_until(&self, token: Token) -> Token {
        let mut i = self.tokens.partition_point(|&t| t < token);
        if i == self.tokens.len() {
            // Past the last token: the range that wraps, up to the end.
            return Token::MAX;
        }
        let same = |a: &[u64], b: &[u64]| a.len() == b.len() && a.iter().all(|x| b.contains(x));
        let first = self.list_at(i);
        while i + 1 < self.tokens.len() && same(self.list_at(i + 1), first) {
            i += 1;
        }
        if i + 1 == self.tokens.len() && same(self.list_at(0), first) {
            // The wrapping range's tokens after the last one: same replicas.
            return Token::MAX;
        }
        self.tokens[i]
    }

    /// Bytes this placement holds beyond its ring (tokens, owners, lists).
    pub fn heap_bytes(&self) -> usize {
        self.tokens.capacity() * 8
            + self.owners.capacity() * 8
            + self.starts.capacity() * 4
            + self.lists.capacity() * 8
            + self.reach.capacity() * 4
    }
}

/// A ring has at most `u32::MAX` tokens (nodes times
/// [`super::TOKENS_PER_NODE_MAX`] is far below).
fn u32_of(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Prefix sums over a circular array of 0/1 marks: whether any is set in a
/// run of positions that may wrap.
struct Circular {
    /// `sums[k]` = marks in `0..k`.
    sums: Vec<u32>,
}

impl Circular {
    fn new(marks: &[u32]) -> Self {
        let mut sums = Vec::with_capacity(marks.len() + 1);
        let mut total = 0;
        sums.push(0);
        for m in marks {
            total += m;
            sums.push(total);
        }
        Self { sums }
    }

    /// Whether a mark is set in `len` positions from `from` (mod the
    /// array's length; `len` at most that length).
    fn any(&self, from: usize, len: usize) -> bool {
        let n = self.sums.len() - 1;
        if n == 0 || len == 0 {
            return false;
        }
        let from = from % n;
        let end = from + len.min(n);
        if end <= n {
            self.sums[end] > self.sums[from]
        } else {
            self.sums[n] > self.sums[from] || self.sums[end - n] > 0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::RingNode;
    use super::*;
    use proptest::prelude::*;

    fn node(id: u64, dc: u8, rack: u8) -> RingNode {
        RingNode {
            id,
            dc: format!("dc{dc}"),
            rack: format!("r{rack}"),
            weight: 1,
        }
    }

    fn assert_same(a: &Placement, b: &Placement) {
        assert_eq!(a.tokens, b.tokens);
        assert_eq!(a.owners, b.owners);
        for i in 0..a.tokens.len() {
            assert_eq!(a.list_at(i), b.list_at(i), "vnode {i}");
            assert_eq!(a.reach[i], b.reach[i], "reach of vnode {i}");
        }
    }

    fn three_dc_ring(nodes: u64) -> Ring {
        super::super::xorshift_ring(nodes, 0x2545_f491_4f6c_dd1d, |id| {
            node(id, (id % 3) as u8, (id / 3 % 10) as u8)
        })
    }

    fn three_dcs() -> Replication {
        Replication {
            per_dc: (0..3).map(|dc| (format!("dc{dc}"), 3)).collect(),
        }
    }

    #[test]
    fn a_join_among_hundreds_walks_a_few_vnodes_again() {
        let before = three_dc_ring(300);
        let rep = three_dcs();
        let (base, whole) = Placement::counted(before.clone(), rep.clone());
        let mut after = before.clone();
        after.add_node(node(10_000, 1, 4), 3).expect("join");
        let (updated, steps) = Placement::updated_counted(&base, after.clone(), rep.clone());
        assert_same(&updated, &Placement::new(after.clone(), rep.clone()));
        assert!(steps * 20 < whole, "{steps} steps of {whole}");
        // And the node leaving again.
        let (back, steps) = Placement::updated_counted(&updated, before.clone(), rep.clone());
        assert_same(&back, &base);
        assert!(steps * 20 < whole, "{steps} steps of {whole}");
    }

    #[test]
    fn a_new_rack_or_replication_rebuilds_everything() {
        let before = three_dc_ring(60);
        let rep = three_dcs();
        let (base, whole) = Placement::counted(before.clone(), rep.clone());
        let mut after = before.clone();
        after.add_node(node(10_000, 1, 42), 3).expect("join");
        let (updated, steps) = Placement::updated_counted(&base, after.clone(), rep.clone());
        assert_same(&updated, &Placement::new(after, rep.clone()));
        assert!(steps >= whole, "{steps} of {whole}");
        let other = Replication {
            per_dc: (0..3).map(|dc| (format!("dc{dc}"), 2)).collect(),
        };
        let updated = Placement::updated(&base, before.clone(), other.clone());
        assert_same(&updated, &Placement::new(before, other));
    }

    #[test]
    fn a_data_center_short_of_owners_walks_again() {
        // Two owners in dc0 for three replicas: every walk stops once it
        // has seen both, so a third owner, far from every walk, changes
        // every list all the same.
        let mut before = Ring::new(4);
        before
            .insert_with_tokens(node(1, 0, 0), &[100, 200])
            .expect("add");
        before
            .insert_with_tokens(node(2, 0, 1), &[300, 400])
            .expect("add");
        let rep = Replication::simple("dc0", 3);
        let base = Placement::new(before.clone(), rep.clone());
        let mut after = before;
        after
            .insert_with_tokens(node(3, 0, 1), &[1 << 40])
            .expect("add");
        let updated = Placement::updated(&base, after.clone(), rep.clone());
        assert_same(&updated, &Placement::new(after, rep));
        assert_eq!(updated.preference_list(150).len(), 3);
    }

    #[test]
    fn circular_runs_wrap() {
        let c = Circular::new(&[0, 1, 0, 0, 0]);
        assert!(c.any(1, 1));
        assert!(!c.any(2, 3));
        assert!(c.any(4, 3));
        assert!(!c.any(2, 4) || c.any(2, 5));
        assert!(c.any(2, 5));
        assert!(!Circular::new(&[]).any(0, 3));
    }

    /// A ring of small tokens (contested, some nodes owning none) from a
    /// layout of (dc, rack, tokens) per node.
    fn ring_from(layout: &[(u64, u8, u8, Vec<u64>)]) -> Ring {
        let mut ring = Ring::new(4);
        for (id, dc, rack, tokens) in layout {
            if ring.node(*id).is_some() {
                continue;
            }
            let _ = ring.insert_with_tokens(node(*id, *dc, *rack), tokens);
        }
        ring
    }

    proptest! {
        /// Every vnode's list and reach equal the reference walk's
        /// ([`super::super::place`] over ids and strings): data centers with
        /// fewer racks than replicas, nodes owning no token, a factor of 0,
        /// a data center named in the replication that has no node.
        #[test]
        fn the_dense_walk_places_as_the_reference_walk_does(
            layout in proptest::collection::vec(
                (0u64..60, 0u8..4, 0u8..4, proptest::collection::vec(0u64..2048, 1..6)),
                1..60,
            ),
            rf in proptest::collection::vec(0usize..6, 4),
            absent_rf in 0usize..3,
        ) {
            let ring = ring_from(&layout);
            let mut per_dc: std::collections::BTreeMap<String, usize> = rf
                .iter()
                .enumerate()
                .map(|(i, &n)| (format!("dc{i}"), n))
                .collect();
            per_dc.insert("nowhere".into(), absent_rf);
            let rep = Replication { per_dc };
            let placement = Placement::new(ring.clone(), rep.clone());
            let shape = super::super::DcShape::of(&ring);
            for i in 0..placement.tokens.len() {
                let walk = placement.owners[i..].iter().chain(&placement.owners[..i]).copied();
                let mut steps = 0;
                let list = super::super::place(walk, &ring.nodes, &rep, &shape, &mut steps);
                prop_assert_eq!(placement.list_at(i), &list[..]);
                prop_assert_eq!(placement.reach[i] as usize, steps);
            }
        }
    }

    /// An update (nodes added, removed, tokens moved) places as a whole
    /// rebuild does; and most cases do reuse lists, so the property is
    /// about the incremental path, not the fallback.
    #[test]
    fn an_update_places_as_a_whole_rebuild_does() {
        use proptest::test_runner::{Config, TestRunner};
        let layout = |ids: std::ops::Range<u64>, n| {
            proptest::collection::vec(
                (
                    ids,
                    0u8..3,
                    0u8..4,
                    proptest::collection::vec(0u64..4096, 1..8),
                ),
                n,
            )
        };
        let strategy = (
            layout(0..40, 1..40),
            layout(40..50, 0..3),
            proptest::collection::vec(0u64..40, 0..3),
            proptest::collection::vec(
                (0u64..40, proptest::collection::vec(0u64..4096, 1..8)),
                0..3,
            ),
            proptest::collection::vec(1usize..3, 3),
        );
        let cases = 512;
        let mut runner = TestRunner::new(Config::with_cases(cases));
        let reused = std::cell::Cell::new(0u32);
        let result = runner.run(&strategy, |(base, added, removed, moved, rf)| {
            let rep = Replication {
                per_dc: rf
                    .iter()
                    .enumerate()
                    .map(|(i, &n)| (format!("dc{i}"), n))
                    .collect(),
            };
            let before = ring_from(&base);
            let mut after = before.clone();
            for (id, dc, rack, tokens) in &added {
                if after.node(*id).is_none() {
                    let _ = after.insert_with_tokens(node(*id, *dc, *rack), tokens);
                }
            }
            for id in &removed {
                let _ = after.remove_node(*id);
            }
            for (id, tokens) in &moved {
                if let Ok(n) = after.remove_node(*id) {
                    let _ = after.insert_with_tokens(n, tokens);
                }
            }
            let old = Placement::new(before, rep.clone());
            let (whole, all) = Placement::counted(after.clone(), rep.clone());
            let (updated, steps) = Placement::updated_counted(&old, after, rep);
            if steps < all {
                reused.set(reused.get() + 1);
            }
            prop_assert_eq!(&updated.tokens, &whole.tokens);
            for i in 0..whole.tokens.len() {
                prop_assert_eq!(updated.list_at(i), whole.list_at(i));
                prop_assert_eq!(updated.reach[i], whole.reach[i]);
            }
            Ok(())
        });
        if let Err(e) = result {
            panic!("{e}");
        }
        assert!(
            reused.get() > cases / 8,
            "{} of {cases} reused lists",
            reused.get()
        );
    }
}
