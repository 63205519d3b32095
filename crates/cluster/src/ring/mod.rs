//! The ring: consistent hashing with virtual nodes, weights, and replica
//! placement across racks and data centers.
//!
//! # Tokens (part of the on-disk and wire contract: do not change)
//! A key's token is `xxh3_64(key)` with seed 0, a `u64`. The ring is the
//! circle of `u64` values. A virtual node is one token owned by a physical
//! node; it owns the range `(previous token, token]`, wrapping at `u64::MAX`.
//!
//! # Token allocation
//! Tokens are state, not derived: they are chosen once when a node joins and
//! spread by gossip with the rest of the ring. A joining node with weight `w`
//! takes `w * tokens_per_weight` tokens, placed by [`crate::ring::alloc`] so
//! that, in its data center, every node's share at each replication level
//! `1..=rf` (primary ownership up to what it replicates) stays in proportion
//! to its weight. A join takes about `1/(n+1)` of the keys, all to the new
//! node; twelve equal nodes end within 3% of each other in what they
//! replicate. The first node of a data center spreads its tokens evenly.

//! # Placement
//! The preference list of a token walks the ring clockwise from the token's
//! range and, per data center, picks `rf[dc]` distinct physical nodes,
//! preferring racks not used yet in that DC (as Cassandra's
//! NetworkTopologyStrategy does); when a DC has fewer racks than replicas, the
//! skipped nodes fill the remaining places in ring order.

pub mod alloc;
mod dense;
mod placement;

pub use placement::Placement;

use std::collections::BTreeMap;

use alloc::Member;

use crate::det::{HashMap, HashSet};

/// A key's position on the ring.
pub type Token = u64;

/// The token of a key: `xxh3_64(key)`, seed 0. Do not change: on disk and on
/// the wire.
pub fn token_of(key: &[u8]) -> Token {
    xxhash_rust::xxh3::xxh3_64(key)
}

/// A physical node as the ring sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingNode {
    pub id: u64,
    pub dc: String,
    pub rack: String,
    /// Relative capacity; a node of weight 2 owns twice the share of weight 1.
    pub weight: u32,
}

/// Replication factor per data center.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replication {
    pub per_dc: BTreeMap<String, usize>,
}

impl Replication {
    /// The same factor in one data center.
    pub fn simple(dc: &str, n: usize) -> Self {
        Self {
            per_dc: BTreeMap::from([(dc.to_string(), n)]),
        }
    }

    pub fn total(&self) -> usize {
        self.per_dc.values().sum()
    }

    /// The factor in data center `dc` (1 where none is configured: token
    /// allocation then evens out primary ownership).
    pub fn in_dc(&self, dc: &str) -> usize {
        self.per_dc.get(dc).copied().unwrap_or(1).max(1)
    }
}

/// Errors of ring changes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    #[error("node {0:016x} is already in the ring")]
    AlreadyMember(u64),
    #[error("node {0:016x} is not in the ring")]
    NotMember(u64),
    #[error("weight must be between 1 and {max}", max = WEIGHT_MAX)]
    BadWeight,
    #[error("the ring has no free token left near a split point")]
    TokenSpaceExhausted,
    #[error("{0} tokens for one node, at most {max}", max = TOKENS_PER_NODE_MAX)]
    TooManyTokens(usize),
}

/// Largest accepted node weight.
pub const WEIGHT_MAX: u32 = 64;

/// Most tokens one node may hold (weight 64 at the default 64 tokens per
/// weight). A state with more is refused wherever it arrives, so no peer
/// can make the ring, or its rebuild, as large as it likes.
pub const TOKENS_PER_NODE_MAX: usize = 4096;

/// The token ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ring {
    /// Token -> owning node id, sorted.
    tokens: BTreeMap<Token, u64>,
    nodes: BTreeMap<u64, RingNode>,
    tokens_per_weight: usize,
}

impl Ring {
    pub fn new(tokens_per_weight: usize) -> Self {
        Self {
            tokens: BTreeMap::new(),
            nodes: BTreeMap::new(),
            tokens_per_weight: tokens_per_weight.max(1),
        }
    }

    pub fn nodes(&self) -> impl Iterator<Item = &RingNode> {
        self.nodes.values()
    }

    pub fn node(&self, id: u64) -> Option<&RingNode> {
        self.nodes.get(&id)
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Every (token, owner) pair in token order.
    pub fn tokens(&self) -> impl Iterator<Item = (Token, u64)> + '_ {
        self.tokens.iter().map(|(&t, &n)| (t, n))
    }

    /// The vnode range ending at `end`, `(previous token, end]`, when `end`
    /// is a token of this ring (a one-token ring's range starts at its
    /// token too: the whole ring).
    pub fn range_ending_at(&self, end: Token) -> Option<(Token, Token)> {
        if !self.tokens.contains_key(&end) {
            return None;
        }
        let start = self
            .tokens
            .range(..end)
            .next_back()
            .or_else(|| self.tokens.iter().next_back())
            .map_or(end, |(&t, _)| t);
        Some((start, end))
    }

    /// The tokens a node owns.
    pub fn tokens_of(&self, id: u64) -> Vec<Token> {
        self.tokens
            .iter()
            .filter(|&(_, &n)| n == id)
            .map(|(&t, _)| t)
            .collect()
    }

    /// Adds a node with tokens chosen to even out, in its data center, both
    /// primary ownership and what each node replicates under replication
    /// factor `rf` (see [`crate::ring::alloc`]); returns them.
    pub fn add_node(&mut self, node: RingNode, rf: usize) -> Result<Vec<Token>, RingError> {
        if self.nodes.contains_key(&node.id) {
            return Err(RingError::AlreadyMember(node.id));
        }
        if node.weight == 0 || node.weight > WEIGHT_MAX {
            return Err(RingError::BadWeight);
        }
        let count = node.weight as usize * self.tokens_per_weight;
        if count > TOKENS_PER_NODE_MAX {
            return Err(RingError::TooManyTokens(count));
        }
        let tokens = self.allocate(&node, count, rf)?;
        self.insert_with_tokens(node, &tokens)?;
        Ok(tokens)
    }

    /// Adds a node with known tokens (from gossip or the node's own state).
    pub fn insert_with_tokens(
        &mut self,
        node: RingNode,
        tokens: &[Token],
    ) -> Result<(), RingError> {
        if self.nodes.contains_key(&node.id) {
            return Err(RingError::AlreadyMember(node.id));
        }
        if tokens.len() > TOKENS_PER_NODE_MAX {
            return Err(RingError::TooManyTokens(tokens.len()));
        }
        for &t in tokens {
            self.tokens.entry(t).or_insert(node.id);
        }
        self.nodes.insert(node.id, node);
        Ok(())
    }

    pub fn remove_node(&mut self, id: u64) -> Result<RingNode, RingError> {
        let node = self.nodes.remove(&id).ok_or(RingError::NotMember(id))?;
        self.tokens.retain(|_, n| *n != id);
        Ok(node)
    }

    /// The size of the range ending at `token` (the distance from the
    /// previous token), as a u128 so that a one-token ring owns 2^64.
    fn range_len(&self, token: Token) -> u128 {
        let prev = self
            .tokens
            .range(..token)
            .next_back()
            .or_else(|| self.tokens.iter().next_back())
            .map(|(&t, _)| t);
        match prev {
            Some(p) if p < token => u128::from(token - p),
            Some(p) if p > token => (1u128 << 64) - u128::from(p) + u128::from(token),
            _ => 1u128 << 64,
        }
    }

    /// Primary ownership of each node, as a fraction of the ring.
    pub fn ownership(&self) -> HashMap<u64, f64> {
        let mut owned: HashMap<u64, u128> = self.nodes.keys().map(|&id| (id, 0)).collect();
        for (&t, &n) in &self.tokens {
            *owned.entry(n).or_default() += self.range_len(t);
        }
        let total = (1u128 << 64) as f64;
        owned
            .into_iter()
            .map(|(id, o)| (id, o as f64 / total))
            .collect()
    }

    fn allocate(&self, node: &RingNode, count: usize, rf: usize) -> Result<Vec<Token>, RingError> {
        let in_dc = |id: &u64| self.nodes.get(id).is_some_and(|n| n.dc == node.dc);
        let dc_tokens: Vec<(Token, u64)> = self
            .tokens
            .iter()
            .filter(|(_, id)| in_dc(id))
            .map(|(&t, &id)| (t, id))
            .collect();
        if dc_tokens.is_empty() {
            // The first node of its data center: evenly spaced tokens,
            // offset by its id so two independently started rings do not
            // collide.
            let step = u64::MAX / count as u64;
            let offset = node.id % step.max(1);
            let mut tokens = Vec::with_capacity(count);
            for i in 0..count as u64 {
                let mut t = offset.wrapping_add(i * step);
                while self.tokens.contains_key(&t) {
                    t = t.wrapping_add(1);
                }
                tokens.push(t);
            }
            return Ok(tokens);
        }
        let members: Vec<Member> = self
            .nodes
            .values()
            .filter(|n| n.dc == node.dc)
            .map(|n| Member {
                id: n.id,
                weight: n.weight,
            })
            .collect();
        let new = Member {
            id: node.id,
            weight: node.weight,
        };
        let tokens = crate::ring::alloc::allocate(&dc_tokens, &members, new, rf, count, &|t| {
            self.tokens.contains_key(&t)
        });
        if tokens.len() < count {
            return Err(RingError::TokenSpaceExhausted);
        }
        Ok(tokens)
    }

    /// Every physical node once, in ring-walk order from `token`.
    pub fn walk_nodes(&self, token: Token) -> Vec<u64> {
        self.walk(token).collect()
    }

    /// The owners of a token's range in walk order: every physical node at
    /// most once, starting with the primary.
    fn walk(&self, token: Token) -> impl Iterator<Item = u64> + '_ {
        let mut seen = HashSet::default();
        self.tokens
            .range(token..)
            .chain(self.tokens.range(..token))
            .map(|(_, &n)| n)
            .filter(move |n| seen.insert(*n))
    }

    /// The preference list of `token`: per data center, `rf[dc]` distinct
    /// nodes, racks spread first. Ordered by ring walk.
    pub fn preference_list(&self, token: Token, replication: &Replication) -> Vec<u64> {
        let walk = self
            .tokens
            .range(token..)
            .chain(self.tokens.range(..token))
            .map(|(_, &n)| n);
        place(walk, &self.nodes, replication, &DcShape::of(self), &mut 0)
    }
}

/// What placement needs to know of each data center, worked out once per
/// ring: how many racks it has, and how many nodes own a token in it.
#[derive(PartialEq, Eq)]
struct DcShape<'a> {
    racks: HashMap<&'a str, usize>,
    owners: HashMap<&'a str, usize>,
}

impl<'a> DcShape<'a> {
    fn of(ring: &'a Ring) -> Self {
        let mut racks: HashMap<&str, HashSet<&str>> = HashMap::default();
        for n in ring.nodes.values() {
            racks
                .entry(n.dc.as_str())
                .or_default()
                .insert(n.rack.as_str());
        }
        // A node may own no token (all of its tokens contested).
        let owning: HashSet<u64> = ring.tokens.values().copied().collect();
        let mut owners: HashMap<&str, usize> = HashMap::default();
        for id in owning {
            if let Some(n) = ring.nodes.get(&id) {
                *owners.entry(n.dc.as_str()).or_default() += 1;
            }
        }
        Self {
            racks: racks.into_iter().map(|(dc, r)| (dc, r.len())).collect(),
            owners,
        }
    }
}

/// Picks a preference list from `walk`, the owners of the tokens from the
/// key's range on, clockwise (a node may come several times). The walk
/// stops as soon as every data center has its replicas or has shown all
/// its nodes, so a list costs a few steps, not a turn of the ring; `steps`
/// counts them.
fn place(
    walk: impl Iterator<Item = u64>,
    nodes: &BTreeMap<u64, RingNode>,
    replication: &Replication,
    shape: &DcShape<'_>,
    steps: &mut usize,
) -> Vec<u64> {
    #[derive(Default)]
    struct Dc<'a> {
        chosen: usize,
        seen: usize,
        racks: HashSet<&'a str>,
        /// Nodes passed over for a rack already used, in walk order.
        skipped: Vec<(usize, u64)>,
    }
    let want = |dc: &str| replication.per_dc.get(dc).copied().unwrap_or(0);
    let owners = |dc: &str| shape.owners.get(dc).copied().unwrap_or(0);
    let done = |dc: &str, d: &Dc<'_>| d.chosen >= want(dc) || d.seen >= owners(dc);
    let mut dcs: HashMap<&str, Dc<'_>> = HashMap::default();
    let mut open = replication
        .per_dc
        .iter()
        .filter(|&(dc, &n)| n > 0 && owners(dc) > 0)
        .count();
    let mut chosen: Vec<(usize, u64)> = Vec::new();
    let mut seen_nodes: HashSet<u64> = HashSet::default();
    for (pos, id) in walk.enumerate() {
        if open == 0 {
            break;
        }
        *steps += 1;
        if !seen_nodes.insert(id) {
            continue;
        }
        let Some(node) = nodes.get(&id) else {
            continue;
        };
        let name = node.dc.as_str();
        let need = want(name);
        if need == 0 {
            continue;
        }
        let dc = dcs.entry(name).or_default();
        let was_done = done(name, dc);
        dc.seen += 1;
        if dc.chosen < need {
            let all_racks_used = dc.racks.len() >= shape.racks.get(name).copied().unwrap_or(0);
            if dc.racks.contains(node.rack.as_str()) && !all_racks_used {
                dc.skipped.push((pos, id));
            } else {
                dc.racks.insert(node.rack.as_str());
                chosen.push((pos, id));
                dc.chosen += 1;
            }
        }
        if !was_done && done(name, dc) {
            open -= 1;
        }
    }
    // Where a data center has fewer racks than replicas, the skipped nodes
    // fill the remaining places in ring order.
    for (name, dc) in &dcs {
        let missing = want(name).saturating_sub(dc.chosen);
        chosen.extend(dc.skipped.iter().take(missing).copied());
    }
    chosen.sort_unstable_by_key(|&(pos, _)| pos);
    chosen.into_iter().map(|(_, id)| id).collect()
}

/// A ring of `nodes` nodes (ids from 1, placed by `node_of`) of 64 tokens
/// each, drawn by xorshift from `seed`.
#[cfg(test)]
fn xorshift_ring(nodes: u64, seed: u64, node_of: impl Fn(u64) -> RingNode) -> Ring {
    let mut ring = Ring::new(64);
    let mut draw = seed;
    for id in 1..=nodes {
        let tokens: Vec<u64> = (0..64)
            .map(|_| {
                draw ^= draw << 13;
                draw ^= draw >> 7;
                draw ^= draw << 17;
                draw
            })
            .collect();
        let _ = ring.insert_with_tokens(node_of(id), &tokens);
    }
    ring
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn node(id: u64, dc: &str, rack: &str) -> RingNode {
        RingNode {
            id,
            dc: dc.into(),
            rack: rack.into(),
            weight: 1,
        }
    }

    /// A ring of `n` nodes over `racks` racks, built once per shape (the
    /// property tests ask for the same few shapes many times).
    fn ring_of(n: u64, racks: u64) -> Ring {
        static BUILT: std::sync::Mutex<BTreeMap<(u64, u64), Ring>> =
            std::sync::Mutex::new(BTreeMap::new());
        let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
        // Grow from the largest ring of the same racks built so far.
        let (mut have, mut grown) = (1..=n)
            .rev()
            .find_map(|m| built.get(&(m, racks)).map(|r| (m, r.clone())))
            .unwrap_or((0, Ring::new(64)));
        while have < n {
            have += 1;
            grown
                .add_node(node(have * 7919, "dc1", &format!("r{}", have % racks)), 3)
                .expect("add");
            built.insert((have, racks), grown.clone());
        }
        grown
    }

    #[test]
    fn token_hash_is_stable() {
        // Pinned: changing the hash would move every key on disk.
        assert_eq!(token_of(b""), 0x2d06_8005_38d3_94c2);
        assert_eq!(token_of(b"ringkv"), xxhash_rust::xxh3::xxh3_64(b"ringkv"));
    }

    #[test]
    fn ten_equal_nodes_balance_within_ten_percent() {
        let ring = ring_of(10, 3);
        let own = ring.ownership();
        let max = own.values().cloned().fold(0.0, f64::max);
        let min = own.values().cloned().fold(1.0, f64::min);
        assert!(max / min <= 1.10, "max {max} min {min}");
        let sum: f64 = own.values().sum();
        assert!((sum - 1.0).abs() < 1e-9);
    }

    #[test]
    fn weight_two_owns_about_twice() {
        let mut ring = ring_of(4, 4);
        ring.add_node(
            RingNode {
                weight: 2,
                ..node(99, "dc1", "r9")
            },
            3,
        )
        .expect("add");
        let own = ring.ownership();
        let heavy = own[&99];
        let light: f64 = own
            .iter()
            .filter(|(id, _)| **id != 99)
            .map(|(_, o)| o)
            .sum::<f64>()
            / 4.0;
        let ratio = heavy / light;
        assert!((1.8..=2.2).contains(&ratio), "ratio {ratio}");
    }

    #[test]
    fn join_moves_about_one_over_n_plus_one() {
        let before = ring_of(4, 2);
        let mut after = before.clone();
        after.add_node(node(12345, "dc1", "r0"), 1).expect("add");
        let rf = Replication::simple("dc1", 1);
        let keys = 20_000u64;
        let moved = (0..keys)
            .filter(|i| {
                let t = token_of(&i.to_le_bytes());
                before.preference_list(t, &rf) != after.preference_list(t, &rf)
            })
            .count() as f64
            / keys as f64;
        // Ideal: 1/5 = 0.2. Every moved key goes to the new node.
        assert!((0.17..=0.23).contains(&moved), "moved {moved}");
        for i in 0..keys {
            let t = token_of(&i.to_le_bytes());
            let (b, a) = (
                before.preference_list(t, &rf),
                after.preference_list(t, &rf),
            );
            if b != a {
                assert_eq!(a, vec![12345], "a moved key went to an old node");
            }
        }
    }

    #[test]
    fn racks_are_spread_and_dcs_get_their_count() {
        let mut ring = Ring::new(16);
        for i in 0..6u64 {
            ring.add_node(node(100 + i, "east", &format!("e{}", i % 3)), 3)
                .expect("add");
            ring.add_node(node(200 + i, "west", "w0"), 2).expect("add");
        }
        let rf = Replication {
            per_dc: BTreeMap::from([("east".into(), 3), ("west".into(), 2)]),
        };
        for k in 0..500u64 {
            let list = ring.preference_list(token_of(&k.to_le_bytes()), &rf);
            assert_eq!(list.len(), 5);
            let east: Vec<_> = list.iter().filter(|&&n| n < 200).collect();
            let west: Vec<_> = list.iter().filter(|&&n| n >= 200).collect();
            assert_eq!((east.len(), west.len()), (3, 2));
            let racks: HashSet<_> = east
                .iter()
                .map(|&&n| ring.node(n).map(|x| x.rack.clone()))
                .collect();
            assert_eq!(racks.len(), 3, "east replicas share a rack: {list:?}");
        }
    }

    #[test]
    fn removing_a_node_gives_its_ranges_to_the_others() {
        let mut ring = ring_of(5, 5);
        let gone = 3 * 7919;
        ring.remove_node(gone).expect("remove");
        assert!(ring.tokens().all(|(_, n)| n != gone));
        assert_eq!(ring.remove_node(gone), Err(RingError::NotMember(gone)));
        let own = ring.ownership();
        assert_eq!(own.len(), 4);
    }

    /// The placement rule as first written: a whole turn of the ring per
    /// list. The fast walk must agree with it everywhere.
    fn whole_turn_preference_list(
        ring: &Ring,
        token: Token,
        replication: &Replication,
    ) -> Vec<u64> {
        let mut chosen: Vec<u64> = Vec::new();
        let mut per_dc: HashMap<&str, usize> = HashMap::default();
        let mut racks: HashMap<&str, HashSet<&str>> = HashMap::default();
        let mut skipped: HashMap<&str, Vec<u64>> = HashMap::default();
        let mut racks_in: HashMap<&str, HashSet<&str>> = HashMap::default();
        for n in ring.nodes() {
            racks_in
                .entry(n.dc.as_str())
                .or_default()
                .insert(n.rack.as_str());
        }
        for id in ring.walk(token) {
            let Some(node) = ring.node(id) else { continue };
            let dc = node.dc.as_str();
            let want = replication.per_dc.get(dc).copied().unwrap_or(0);
            if per_dc.get(dc).copied().unwrap_or(0) >= want {
                continue;
            }
            let used = racks.entry(dc).or_default();
            let all_used = used.len() >= racks_in.get(dc).map_or(0, |r| r.len());
            if used.contains(node.rack.as_str()) && !all_used {
                skipped.entry(dc).or_default().push(id);
                continue;
            }
            used.insert(node.rack.as_str());
            chosen.push(id);
            *per_dc.entry(dc).or_default() += 1;
        }
        for (dc, ids) in skipped {
            let want = replication.per_dc.get(dc).copied().unwrap_or(0);
            for id in ids {
                if per_dc.get(dc).copied().unwrap_or(0) >= want {
                    break;
                }
                chosen.push(id);
                *per_dc.entry(dc).or_default() += 1;
            }
        }
        let order: HashMap<u64, usize> =
            ring.walk(token).enumerate().map(|(i, n)| (n, i)).collect();
        chosen.sort_by_key(|n| order.get(n).copied().unwrap_or(usize::MAX));
        chosen
    }

    /// A ring of `n` nodes with random tokens (some contested), spread over
    /// data centers dc0.. and racks r0.. as `layout` draws.
    fn random_ring(layout: &[(u8, u8, Vec<u64>)]) -> Ring {
        let mut ring = Ring::new(8);
        for (i, (dc, rack, tokens)) in layout.iter().enumerate() {
            let node = RingNode {
                id: i as u64 + 1,
                dc: format!("dc{dc}"),
                rack: format!("r{rack}"),
                weight: 1,
            };
            ring.insert_with_tokens(node, tokens).expect("a new node");
        }
        ring
    }

    #[test]
    fn a_placement_walks_a_bounded_number_of_steps_per_token() {
        // 64 tokens a node, three racks, N=3: the average list walks a few
        // tokens, whatever the ring's size, so the rebuild is O(T log T).
        let build = |nodes: u64| {
            let ring = xorshift_ring(nodes, 0x9e37_79b9_7f4a_7c15, |id| {
                node(id, "dc1", &format!("r{}", id % 3))
            });
            let (p, steps) = Placement::counted(ring, Replication::simple("dc1", 3));
            (steps as f64 / p.vnodes() as f64, steps)
        };
        let (per_token_small, small) = build(100);
        let (per_token_large, large) = build(2_000);
        assert!(per_token_small < 8.0, "{per_token_small} steps per token");
        assert!(per_token_large < 8.0, "{per_token_large} steps per token");
        // Twenty times the tokens, about twenty times the steps.
        let ratio = large as f64 / small as f64;
        assert!((15.0..25.0).contains(&ratio), "{ratio}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn the_bounded_walk_places_as_a_whole_turn_does(
            layout in proptest::collection::vec(
                (0u8..3, 0u8..3, proptest::collection::vec(0u64..4096, 1..6)), 1..12),
            rf in proptest::collection::vec(0usize..5, 4),
            keys in proptest::collection::vec(0u64..4200, 1..40),
        ) {
            // Small token values so that tokens are contested and some
            // nodes own none; dc3 is configured but has no node.
            let ring = random_ring(&layout);
            let rep = Replication {
                per_dc: rf.iter().enumerate().map(|(i, &n)| (format!("dc{i}"), n)).collect(),
            };
            let placement = Placement::new(ring.clone(), rep.clone());
            for t in keys.into_iter().chain(ring.tokens().map(|(t, _)| t)) {
                let expected = whole_turn_preference_list(&ring, t, &rep);
                prop_assert_eq!(ring.preference_list(t, &rep), expected.clone());
                prop_assert_eq!(placement.preference_list(t).to_vec(), expected);
            }
        }

        #[test]
        fn placement_matches_the_ring_walk(n in 1u64..9, racks in 1u64..4, rf in 1usize..4, keys in proptest::collection::vec(any::<u64>(), 1..50)) {
            let ring = ring_of(n, racks);
            let rep = Replication::simple("dc1", rf);
            let placement = Placement::new(ring.clone(), rep.clone());
            for k in keys {
                let t = token_of(&k.to_le_bytes());
                prop_assert_eq!(placement.preference_list(t).to_vec(), ring.preference_list(t, &rep));
            }
            // Exact token boundaries and the wrap-around.
            for (t, _) in ring.tokens() {
                prop_assert_eq!(placement.preference_list(t).to_vec(), ring.preference_list(t, &rep));
                prop_assert_eq!(placement.preference_list(t.wrapping_add(1)).to_vec(), ring.preference_list(t.wrapping_add(1), &rep));
            }
            prop_assert_eq!(placement.preference_list(u64::MAX).to_vec(), ring.preference_list(u64::MAX, &rep));
        }

        #[test]
        fn preference_lists_have_n_distinct_nodes(
            n in 1u64..12, racks in 1u64..4, rf in 1usize..5, key in any::<u64>()
        ) {
            let ring = ring_of(n, racks);
            let list = ring.preference_list(token_of(&key.to_le_bytes()), &Replication::simple("dc1", rf));
            prop_assert_eq!(list.len(), rf.min(n as usize));
            let distinct: HashSet<_> = list.iter().collect();
            prop_assert_eq!(distinct.len(), list.len());
            // Racks are spread as far as they go.
            let used: HashSet<_> = list.iter().filter_map(|&id| ring.node(id).map(|x| x.rack.clone())).collect();
            let racks_present: HashSet<_> = ring.nodes().map(|x| x.rack.clone()).collect();
            prop_assert_eq!(used.len(), list.len().min(racks_present.len()));
            // The primary owns the token's range.
            let t = token_of(&key.to_le_bytes());
            let primary = ring.tokens().find(|&(tok, _)| tok >= t).or_else(|| ring.tokens().next()).map(|(_, n)| n);
            if rf >= 1 && racks_present.len() >= list.len() {
                prop_assert_eq!(list.first().copied(), primary);
            }
        }
    }
}
