//! Merkle trees over token ranges: what anti-entropy compares.
//!
//! This module owns the shape of a tree and its hashes, and nothing else: it
//! does no I/O and knows no peers. [`crate::repair::anti_entropy`] feeds it the
//! records of a range and exchanges its nodes with other replicas.
//!
//! # Ranges
//! A [`TokenRange`] is `(start, end]` on the ring, wrapping past `u64::MAX`;
//! `start == end` is the whole ring (a ring of one token). A token's
//! *offset* in the range is `t - start - 1` (mod 2^64), in `0..len`.
//!
//! # Shape
//! Fanout 16. A tree of depth `d` (1..=[`DEPTH_MAX`]) has the root at level 0
//! and `16^d` leaves at level `d`; node `i` of level `l` has the children
//! `16 i .. 16 i + 15` of level `l + 1`. Leaf `i` covers the tokens whose
//! offset `o` satisfies `floor(o * 16^d / len) == i`: equal slices of the
//! range (see [`TokenRange::slice`]).
//!
//! The depth is chosen per sync from the larger key count of the two sides
//! ([`depth_for`]): the smallest depth whose leaves hold about
//! [`LEAF_KEYS_TARGET`] keys or fewer, at most [`DEPTH_MAX`] (65,536 leaves).
//! Small ranges thus cost one or two round trips and little memory; large
//! ones still narrow a difference down to a few keys. Because slices nest
//! (`floor(floor(x * 16^D) / 16^(D-d)) == floor(x * 16^d)`), a range is
//! scanned once into sparse leaves at [`DEPTH_MAX`] (a [`RangeSummary`]) and
//! a tree of any depth is folded from that.
//!
//! # Hashes (both sides must compute the same: part of the wire contract)
//! ```text
//! digest = xxh3_64(record bytes)                records are canonical
//! item   = xxh3_64(key ++ digest:u64le)
//! leaf   = XOR of its items (0 when empty)     independent of order
//! inner  = xxh3_64(child_0:u64le ++ .. ++ child_15:u64le)
//! ```

use xxhash_rust::xxh3::xxh3_64;

/// Children per inner node.
pub const FANOUT: usize = 16;
/// Deepest tree: 16^4 = 65,536 leaves.
pub const DEPTH_MAX: u8 = 4;
/// Keys per leaf the depth choice aims for.
pub const LEAF_KEYS_TARGET: u64 = 16;

/// A range of the ring, `(start, end]`, wrapping; `start == end` is the
/// whole ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TokenRange {
    pub start: u64,
    pub end: u64,
}

impl TokenRange {
    pub fn new(start: u64, end: u64) -> Self {
        Self { start, end }
    }

    /// Number of tokens in the range (2^64 for the whole ring).
    pub fn len(&self) -> u128 {
        if self.start == self.end {
            1u128 << 64
        } else {
            u128::from(self.end.wrapping_sub(self.start))
        }
    }

    /// Never true: a range holds at least one token.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The offset of `t` in the range; `>= len` when outside.
    fn offset(&self, t: u64) -> u128 {
        u128::from(t.wrapping_sub(self.start).wrapping_sub(1))
    }

    pub fn contains(&self, t: u64) -> bool {
        self.offset(t) < self.len()
    }

    /// The leaf of `t` in a tree of `depth` (`t` must be in the range).
    pub fn leaf_of(&self, t: u64, depth: u8) -> u32 {
        debug_assert!(self.contains(t));
        debug_assert!((1..=DEPTH_MAX).contains(&depth));
        let leaves = 1u128 << (4 * u32::from(depth));
        ((self.offset(t) * leaves) / self.len()) as u32
    }

    /// The tokens of leaf `index` at `depth`, or `None` when the slice is
    /// empty (ranges shorter than the leaf count).
    pub fn slice(&self, depth: u8, index: u32) -> Option<TokenRange> {
        let leaves = 1u128 << (4 * u32::from(depth));
        let i = u128::from(index);
        if i >= leaves {
            return None;
        }
        let len = self.len();
        // Offsets [ceil(i len / L), ceil((i + 1) len / L)).
        let lo = (i * len).div_ceil(leaves);
        let hi = ((i + 1) * len).div_ceil(leaves);
        if lo == hi {
            return None;
        }
        // Offsets map to tokens start + 1 + o: the slice is
        // (start + lo, start + hi].
        let start = self.start.wrapping_add(lo as u64);
        let end = self.start.wrapping_add(hi as u64);
        debug_assert!(start != end || hi - lo == 1u128 << 64);
        Some(TokenRange { start, end })
    }

    /// The contiguous scans `(start, end, include_start)` covering the range
    /// with [`crate::LocalStore::scan_tokens`]: one, or two when it wraps.
    pub fn scans(&self) -> Vec<(u64, u64, bool)> {
        if self.start < self.end {
            vec![(self.start, self.end, false)]
        } else {
            // (start, MAX] then [0, end]; the first is empty at start == MAX.
            let mut v = Vec::with_capacity(2);
            if self.start < u64::MAX {
                v.push((self.start, u64::MAX, false));
            }
            v.push((0, self.end, true));
            v
        }
    }
}

/// The digest of a stored record.
pub fn record_digest(record: &[u8]) -> u64 {
    xxh3_64(record)
}

/// The hash one key contributes to its leaf.
pub fn item_hash(key: &[u8], digest: u64) -> u64 {
    let mut buf = Vec::with_capacity(key.len() + 8);
    buf.extend_from_slice(key);
    buf.extend_from_slice(&digest.to_le_bytes());
    xxh3_64(&buf)
}

fn inner_hash(children: &[u64]) -> u64 {
    debug_assert_eq!(children.len(), FANOUT);
    let mut buf = [0u8; FANOUT * 8];
    for (chunk, c) in buf.chunks_exact_mut(8).zip(children) {
        chunk.copy_from_slice(&c.to_le_bytes());
    }
    xxh3_64(&buf)
}

/// The depth for a range holding `keys` keys (on the larger side).
pub fn depth_for(keys: u64) -> u8 {
    let mut depth = 1u8;
    while depth < DEPTH_MAX && (1u64 << (4 * u32::from(depth))) * LEAF_KEYS_TARGET < keys {
        depth += 1;
    }
    depth
}

/// A range's items folded into sparse leaves at [`DEPTH_MAX`]: enough to
/// build a tree of any depth without scanning again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeSummary {
    range: TokenRange,
    keys: u64,
    /// (leaf at DEPTH_MAX, XOR of its items), ascending, no zero hashes.
    leaves: Vec<(u32, u64)>,
}

/// Collects the items of one range.
pub struct SummaryBuilder {
    range: TokenRange,
    keys: u64,
    items: Vec<(u32, u64)>,
}

impl SummaryBuilder {
    /// Adds one key with its record digest. Keys outside the range are a
    /// caller's bug: they are ignored (and asserted in debug builds).
    pub fn add(&mut self, token: u64, key: &[u8], digest: u64) {
        if !self.range.contains(token) {
            debug_assert!(false, "token {token} outside {:?}", self.range);
            return;
        }
        self.keys += 1;
        self.items
            .push((self.range.leaf_of(token, DEPTH_MAX), item_hash(key, digest)));
    }

    pub fn finish(mut self) -> RangeSummary {
        self.items.sort_unstable_by_key(|&(leaf, _)| leaf);
        let mut leaves: Vec<(u32, u64)> = Vec::new();
        for (leaf, h) in self.items {
            match leaves.last_mut() {
                Some((l, acc)) if *l == leaf => *acc ^= h,
                _ => leaves.push((leaf, h)),
            }
        }
        leaves.retain(|&(_, h)| h != 0);
        RangeSummary {
            range: self.range,
            keys: self.keys,
            leaves,
        }
    }
}

impl RangeSummary {
    pub fn builder(range: TokenRange) -> SummaryBuilder {
        SummaryBuilder {
            range,
            keys: 0,
            items: Vec::new(),
        }
    }

    pub fn range(&self) -> TokenRange {
        self.range
    }

    /// Keys summarised.
    pub fn keys(&self) -> u64 {
        self.keys
    }

    /// The tree of `depth` (clamped to 1..=DEPTH_MAX).
    pub fn tree(&self, depth: u8) -> MerkleTree {
        let depth = depth.clamp(1, DEPTH_MAX);
        let shift = 4 * u32::from(DEPTH_MAX - depth);
        let mut level = vec![0u64; 1usize << (4 * u32::from(depth))];
        for &(leaf, h) in &self.leaves {
            level[(leaf >> shift) as usize] ^= h;
        }
        let mut levels = vec![level];
        for _ in 0..depth {
            let below = levels.last().map_or(&[][..], |l| &l[..]);
            let up: Vec<u64> = below.chunks_exact(FANOUT).map(inner_hash).collect();
            levels.push(up);
        }
        levels.reverse();
        debug_assert_eq!(levels[0].len(), 1);
        MerkleTree { depth, levels }
    }
}

/// A full tree of one depth: level 0 is the root, level `depth` the leaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MerkleTree {
    depth: u8,
    levels: Vec<Vec<u64>>,
}

impl MerkleTree {
    pub fn depth(&self) -> u8 {
        self.depth
    }

    pub fn root(&self) -> u64 {
        self.levels[0][0]
    }

    /// The hash of node `index` of `level`.
    pub fn node(&self, level: u8, index: u32) -> Option<u64> {
        self.levels
            .get(usize::from(level))?
            .get(index as usize)
            .copied()
    }

    /// The 16 children of node `index` of `level` (`level < depth`).
    pub fn children(&self, level: u8, index: u32) -> Option<&[u64]> {
        let below = self.levels.get(usize::from(level) + 1)?;
        let first = (index as usize).checked_mul(FANOUT)?;
        below.get(first..first + FANOUT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::token_of;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    const WHOLE: TokenRange = TokenRange { start: 7, end: 7 };

    fn summary(range: TokenRange, items: &BTreeMap<Vec<u8>, u64>) -> RangeSummary {
        let mut b = RangeSummary::builder(range);
        for (k, d) in items {
            b.add(token_of(k), k, *d);
        }
        b.finish()
    }

    fn items(n: usize) -> BTreeMap<Vec<u8>, u64> {
        (0..n)
            .map(|i| (format!("key{i}").into_bytes(), i as u64 * 31))
            .collect()
    }

    /// Every (level, index) whose hash differs between two trees.
    fn diff(a: &MerkleTree, b: &MerkleTree) -> Vec<(u8, u32)> {
        let mut out = Vec::new();
        for level in 0..=a.depth() {
            for i in 0..(1u32 << (4 * u32::from(level))) {
                if a.node(level, i) != b.node(level, i) {
                    out.push((level, i));
                }
            }
        }
        out
    }

    /// The path from the root to leaf `leaf` of a tree of `depth`.
    fn path(leaf: u32, depth: u8) -> Vec<(u8, u32)> {
        (0..=depth)
            .map(|l| (l, leaf >> (4 * u32::from(depth - l))))
            .collect()
    }

    #[test]
    fn equal_items_give_equal_roots_in_any_order() {
        let data = items(500);
        let a = summary(WHOLE, &data);
        let mut b = RangeSummary::builder(WHOLE);
        for (k, d) in data.iter().rev() {
            b.add(token_of(k), k, *d);
        }
        let b = b.finish();
        assert_eq!(a, b);
        for depth in 1..=DEPTH_MAX {
            assert_eq!(a.tree(depth).root(), b.tree(depth).root());
        }
        assert_ne!(
            a.tree(2).root(),
            summary(WHOLE, &BTreeMap::new()).tree(2).root()
        );
    }

    #[test]
    fn one_change_differs_on_exactly_its_leaf_path() {
        let data = items(2_000);
        let base = summary(WHOLE, &data);
        let key = b"key1234".to_vec();
        let leaf = |depth| WHOLE.leaf_of(token_of(&key), depth);
        let mut changed = data.clone();
        changed.insert(key.clone(), 999_999);
        let mut removed = data.clone();
        removed.remove(&key);
        let mut added = data.clone();
        let extra = b"extra-key".to_vec();
        added.insert(extra.clone(), 5);
        for depth in 1..=DEPTH_MAX {
            let t = base.tree(depth);
            assert_eq!(
                diff(&t, &summary(WHOLE, &changed).tree(depth)),
                path(leaf(depth), depth)
            );
            assert_eq!(
                diff(&t, &summary(WHOLE, &removed).tree(depth)),
                path(leaf(depth), depth)
            );
            assert_eq!(
                diff(&t, &summary(WHOLE, &added).tree(depth)),
                path(WHOLE.leaf_of(token_of(&extra), depth), depth)
            );
        }
    }

    #[test]
    fn depth_follows_key_count() {
        assert_eq!(depth_for(0), 1);
        assert_eq!(depth_for(256), 1);
        assert_eq!(depth_for(257), 2);
        assert_eq!(depth_for(4_096), 2);
        assert_eq!(depth_for(4_097), 3);
        assert_eq!(depth_for(u64::MAX), DEPTH_MAX);
    }

    #[test]
    fn scans_cover_wrapping_and_whole_ranges() {
        assert_eq!(TokenRange::new(5, 9).scans(), vec![(5, 9, false)]);
        assert_eq!(
            TokenRange::new(9, 5).scans(),
            vec![(9, u64::MAX, false), (0, 5, true)]
        );
        assert_eq!(TokenRange::new(u64::MAX, 5).scans(), vec![(0, 5, true)]);
        assert_eq!(
            TokenRange::new(3, 3).scans(),
            vec![(3, u64::MAX, false), (0, 3, true)]
        );
        assert!(TokenRange::new(9, 5).contains(u64::MAX));
        assert!(TokenRange::new(9, 5).contains(0));
        assert!(!TokenRange::new(9, 5).contains(9));
        assert!(TokenRange::new(9, 5).contains(5));
        assert!(WHOLE.contains(7) && WHOLE.contains(8));
    }

    proptest! {
        #[test]
        fn roots_equal_iff_item_sets_equal(
            a in proptest::collection::btree_map(proptest::collection::vec(any::<u8>(), 1..6), 0u64..4, 0..60),
            b in proptest::collection::btree_map(proptest::collection::vec(any::<u8>(), 1..6), 0u64..4, 0..60),
            depth in 1u8..=DEPTH_MAX,
        ) {
            let ta = summary(WHOLE, &a).tree(depth);
            let tb = summary(WHOLE, &b).tree(depth);
            prop_assert_eq!(ta.root() == tb.root(), a == b);
        }

        #[test]
        fn leaves_are_the_slices(start in any::<u64>(), span in 1u64..5_000, depth in 1u8..=2, probe in any::<u64>()) {
            // Small spans exercise empty slices; the probe lands in range.
            let range = TokenRange::new(start, start.wrapping_add(span));
            let t = start.wrapping_add(1 + probe % span);
            prop_assert!(range.contains(t));
            let leaf = range.leaf_of(t, depth);
            let slice = range.slice(depth, leaf);
            prop_assert!(slice.is_some_and(|s| s.contains(t)));
            // Slices tile the range exactly.
            let total: u128 = (0..1u32 << (4 * u32::from(depth)))
                .filter_map(|i| range.slice(depth, i))
                .map(|s| s.len())
                .sum();
            prop_assert_eq!(total, range.len());
        }
    }

    #[test]
    fn whole_ring_slices_tile_it() {
        let total: u128 = (0..16u32)
            .filter_map(|i| WHOLE.slice(1, i))
            .map(|s| s.len())
            .sum();
        assert_eq!(total, 1u128 << 64);
        let s = WHOLE.slice(1, 15).expect("slice");
        assert_eq!(s.end, 7, "the last slice ends at the range's end");
    }
}
