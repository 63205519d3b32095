//! The state side of digest gossip: this node's digest of its members, a
//! peer's digest compared with it, the states and refreshes to send, and
//! refreshes taken in (the exchange itself is [`super::gossip`]).

use super::*;
use std::sync::atomic::Ordering::Relaxed;

/// What a peer's digest showed (see [`Membership::take_digest`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DigestDiff {
    /// Members whose state here is newer than the peer's (or unknown to
    /// it): to send.
    pub newer_here: Vec<NodeId>,
    /// The peer's `(generation, version)` of those it knows.
    pub theirs: HashMap<NodeId, (u64, u64)>,
    /// Members whose state the peer holds newer (or that are unknown
    /// here): to ask for.
    pub newer_there: Vec<NodeId>,
}

impl Membership {
    /// `s`'s `(generation, pulse)` with the detectors' pulses.
    pub(super) fn pulse_in(
        &self,
        s: &NodeState,
        detectors: &HashMap<NodeId, PhiDetector>,
    ) -> (u64, u64) {
        if s.id == self.self_id {
            let own = self.own_pulse.load(std::sync::atomic::Ordering::Relaxed);
            return (s.generation, own.max(s.heartbeat));
        }
        let seen = detectors.get(&s.id).map_or((0, 0), PhiDetector::seen);
        if seen.0 == s.generation {
            (s.generation, seen.1.max(s.heartbeat))
        } else {
            s.freshness()
        }
    }

    /// This node's digest of every member it knows (see "Digest gossip"
    /// in [`crate::net::message`]): positional, or explicit.
    pub fn digest(&self, explicit: bool) -> GossipDigest {
        let states = self.states.read();
        let detectors = self.detectors.lock();
        let mut members: Vec<&NodeState> = states.values().collect();
        members.sort_unstable_by_key(|s| s.id);
        let hash = members_hash(members.iter().map(|s| (s.id, s.generation)));
        // A member whose refresh could not be rebuilt here shows version 0
        // (and no pulse): peers send its state whole.
        let want_whole = self.want_whole.lock();
        let pulses = members.iter().map(|s| {
            if want_whole.contains(&s.id) {
                (*s, 0, 0)
            } else {
                (*s, s.heartbeat, self.pulse_in(s, &detectors).1)
            }
        });
        let entries = if explicit {
            DigestEntries::Explicit(
                pulses
                    .map(|(s, version, pulse)| DigestEntry {
                        id: s.id,
                        generation: s.generation,
                        version,
                        ahead: pulse - version,
                    })
                    .collect(),
            )
        } else {
            // LEFT states are final: the hash covers them, the list not.
            DigestEntries::Positional(
                pulses
                    .filter(|(s, _, _)| s.status != NodeStatus::Left)
                    .map(|(_, version, pulse)| (version, pulse - version))
                    .collect(),
            )
        };
        GossipDigest {
            count: entries.len() as u32,
            members: hash,
            entries,
        }
    }

    /// Reads a peer's digest: takes the pulses it carries (each at most
    /// [`PULSE_AHEAD_MAX`] past the member's state known here) and says
    /// which states differ. `None` when the digest is positional and names
    /// another member list than this node's (or is malformed): the peer
    /// must send it explicit.
    pub fn take_digest(&self, digest: &GossipDigest) -> Option<DigestDiff> {
        if digest.entries.len() > KNOWN_MAX || digest.count as usize != digest.entries.len() {
            metrics::counter!("ringkv_gossip_states_refused_total").increment(1);
            tracing::warn!(
                entries = digest.entries.len(),
                count = digest.count,
                "refused a gossip digest: too many entries, or not as many as it says"
            );
            return None;
        }
        let now = self.clock.monotonic();
        let mut diff = DigestDiff::default();
        let states = self.states.read();
        let pulse_trust = Duration::from_millis(
            self.config
                .gossip_interval_ms
                .saturating_mul(PULSE_AHEAD_MAX),
        );
        let mut detectors = self.detectors.lock();
        let mut mine: Vec<&NodeState> = states.values().collect();
        mine.sort_unstable_by_key(|s| s.id);
        // (their entry, my state) pairs of the members both know.
        let mut pairs: Vec<(DigestEntry, &NodeState)> = Vec::with_capacity(mine.len());
        match &digest.entries {
            DigestEntries::Positional(entries) => {
                let listed = mine.iter().filter(|s| s.status != NodeStatus::Left);
                if entries.len() != listed.clone().count()
                    || digest.members != members_hash(mine.iter().map(|s| (s.id, s.generation)))
                {
                    return None;
                }
                for (&(version, ahead), s) in entries.iter().zip(listed) {
                    let entry = DigestEntry {
                        id: s.id,
                        generation: s.generation,
                        version,
                        ahead,
                    };
                    pairs.push((entry, *s));
                }
            }
            DigestEntries::Explicit(entries) => {
                if entries.windows(2).any(|w| w[0].id >= w[1].id) {
                    tracing::warn!("refused a gossip digest: ids out of order");
                    return None;
                }
                let (mut i, mut j) = (0, 0);
                while i < entries.len() || j < mine.len() {
                    match (entries.get(i), mine.get(j)) {
                        (Some(e), Some(s)) if e.id == s.id => {
                            pairs.push((*e, *s));
                            i += 1;
                            j += 1;
                        }
                        (Some(e), s) if s.is_none_or(|s| e.id < s.id) => {
                            diff.newer_there.push(e.id);
                            i += 1;
                        }
                        (_, Some(s)) => {
                            diff.newer_here.push(s.id);
                            j += 1;
                        }
                        (_, None) => break,
                    }
                }
            }
        }
        for (e, s) in pairs {
            let theirs = (e.generation, e.version);
            let here = s.freshness();
            if theirs > here {
                diff.newer_there.push(s.id);
            } else if theirs < here {
                diff.newer_here.push(s.id);
                diff.theirs.insert(s.id, theirs);
            }
            // A pulse is news of the member itself, for the detector:
            // only of the life known here, and not of a node that left.
            if s.id == self.self_id || e.generation != s.generation || s.status == NodeStatus::Left
            {
                continue;
            }
            let pulse = e
                .version
                .saturating_add(e.ahead)
                .min(s.heartbeat.saturating_add(PULSE_AHEAD_MAX));
            detectors
                .entry(s.id)
                .or_insert_with(|| {
                    PhiDetector::new(
                        self.config.intervals_max,
                        self.config.gossip_interval_ms as f64,
                    )
                })
                .observe_pulse((s.generation, pulse), now, pulse_trust);
        }
        diff.newer_here.sort_unstable();
        diff.newer_there.sort_unstable();
        diff.newer_there.dedup();
        Some(diff)
    }

    /// What to send a peer of `ids` (newer here than the peer's versions
    /// `theirs`): a refresh where the peer holds the member's current
    /// endpoint and the member signed its state itself, the whole state
    /// otherwise; at most [`GOSSIP_STATES_PER_MESSAGE_MAX`] in all.
    pub fn updates(
        &self,
        ids: &[NodeId],
        theirs: &HashMap<NodeId, (u64, u64)>,
    ) -> (Vec<NodeState>, Vec<StateRefresh>) {
        let states = self.states.read();
        let mut since = self.endpoint_since.lock();
        let mut whole = Vec::new();
        let mut refreshes = Vec::new();
        for id in rotated(ids, self.rotation()).take(GOSSIP_STATES_PER_MESSAGE_MAX) {
            let Some(s) = states.get(id) else {
                continue;
            };
            let by_itself = s.signature.as_ref().is_none_or(|sig| {
                crate::net::tls::cert_node_id(&sig.cert).is_ok_and(|signer| signer == s.id)
            });
            let refreshable = by_itself
                && theirs.get(id).is_some_and(|&(generation, version)| {
                    generation == s.generation
                        && version > 0
                        && since.get(id).is_some_and(|e| version >= e.since)
                });
            if refreshable {
                refreshes.push(StateRefresh {
                    id: s.id,
                    generation: s.generation,
                    heartbeat: s.heartbeat,
                    load: s.load,
                    endpoint: Endpoint::hash_of(&mut since, s),
                    signature: s
                        .signature
                        .as_ref()
                        .map(|sig| (sig.scheme, sig.sig.clone())),
                });
            } else {
                whole.push(s.clone());
            }
        }
        (whole, refreshes)
    }

    /// Folds in a peer's refreshes: each rebuilt from the state held here
    /// (same generation, same endpoint, the certificate of its signature)
    /// and merged as any state; those that cannot be rebuilt are shown at
    /// version 0 in this node's digests, so peers send them whole. True
    /// when anything changed.
    pub fn take_refreshes(&self, refreshes: Vec<StateRefresh>) -> bool {
        let mut rebuilt = Vec::with_capacity(refreshes.len());
        let mut stale = 0;
        let received = refreshes.len() as u64;
        {
            let states = self.states.read();
            let mut want = self.want_whole.lock();
            let mut since = self.endpoint_since.lock();
            for r in refreshes.into_iter().take(GOSSIP_STATES_PER_MESSAGE_MAX) {
                if r.id == self.self_id {
                    continue;
                }
                // An unknown member comes whole with the explicit digest its
                // new member list brings.
                let Some(old) = states.get(&r.id) else {
                    continue;
                };
                if (r.generation, r.heartbeat) <= old.freshness() || old.status == NodeStatus::Left
                {
                    stale += 1;
                    continue;
                }
                if r.generation != old.generation
                    || Endpoint::hash_of(&mut since, old) != r.endpoint
                {
                    want.insert(r.id);
                    continue;
                }
                let signature = match (r.signature, &old.signature) {
                    (None, _) => None,
                    (Some((scheme, sig)), Some(held))
                        if crate::net::tls::cert_node_id(&held.cert)
                            .is_ok_and(|signer| signer == r.id) =>
                    {
                        Some(StateSignature {
                            cert: held.cert.clone(),
                            scheme,
                            sig,
                        })
                    }
                    (Some(_), _) => {
                        want.insert(r.id);
                        continue;
                    }
                };
                rebuilt.push(NodeState {
                    heartbeat: r.heartbeat,
                    load: r.load,
                    signature,
                    ..old.clone()
                });
            }
        }
        let r = &self.received;
        r.refreshes.fetch_add(received, Relaxed);
        r.refreshes_stale.fetch_add(stale, Relaxed);
        metrics::counter!("ringkv_gossip_received_total", "what" => "refresh").increment(received);
        metrics::counter!("ringkv_gossip_received_stale_total", "what" => "refresh")
            .increment(stale);
        if rebuilt.is_empty() {
            return false;
        }
        let versions: Vec<(NodeId, u64)> = rebuilt.iter().map(|s| (s.id, s.heartbeat)).collect();
        let changed = self.merge(rebuilt);
        // A rebuilt state refused (its signature does not check against
        // the state held: an endpoint that changed meanwhile) is asked for
        // whole.
        let states = self.states.read();
        let mut want = self.want_whole.lock();
        for (id, heartbeat) in versions {
            if states.get(&id).is_some_and(|s| s.heartbeat < heartbeat) {
                want.insert(id);
            }
        }
        changed
    }

    /// Counts whole states received by gossip, and those no newer than
    /// the one held here (before they are merged).
    pub fn note_states_received(&self, incoming: &[NodeState]) {
        let states = self.states.read();
        let stale = incoming
            .iter()
            .filter(|s| {
                states
                    .get(&s.id)
                    .is_some_and(|held| s.freshness() <= held.freshness())
            })
            .count();
        let r = &self.received;
        r.states.fetch_add(incoming.len() as u64, Relaxed);
        r.states_stale.fetch_add(stale as u64, Relaxed);
        metrics::counter!("ringkv_gossip_received_total", "what" => "state")
            .increment(incoming.len() as u64);
        metrics::counter!("ringkv_gossip_received_stale_total", "what" => "state")
            .increment(stale as u64);
    }

    /// The states and refreshes received by gossip since the start, and
    /// how many of each were no news (the member's state held here was as
    /// new): the cost of gossip sent in vain.
    pub fn gossip_received(&self) -> ReceivedCounts {
        let r = &self.received;
        ReceivedCounts {
            states: r.states.load(Relaxed),
            states_stale: r.states_stale.load(Relaxed),
            refreshes: r.refreshes.load(Relaxed),
            refreshes_stale: r.refreshes_stale.load(Relaxed),
        }
    }

    /// `(id, generation, version)` of each of `ids` as held here, as this
    /// node's digest shows them (`(id, 0, 0)` for one unknown).
    pub fn held(&self, ids: &[NodeId]) -> Vec<(NodeId, u64, u64)> {
        let states = self.states.read();
        let want_whole = self.want_whole.lock();
        ids.iter()
            .map(|&id| match states.get(&id) {
                Some(s) if !want_whole.contains(&id) => (id, s.generation, s.heartbeat),
                Some(s) => (id, s.generation, 0),
                None => (id, 0, 0),
            })
            .collect()
    }

    /// Where this round's bounded lists start (see [`rotated`]): a bound's
    /// worth further each round (the pulse moves one a round), so a list
    /// cut to the bound is sent whole over consecutive rounds, and members
    /// refused again and again at its front hold back no others.
    pub fn rotation(&self) -> usize {
        let pulse = self.own_pulse.load(std::sync::atomic::Ordering::Relaxed) as usize;
        pulse.wrapping_mul(GOSSIP_STATES_PER_MESSAGE_MAX)
    }

    /// The states of `ids` known here, at most
    /// [`GOSSIP_STATES_PER_MESSAGE_MAX`].
    pub fn states_of(&self, ids: &[NodeId]) -> Vec<NodeState> {
        let states = self.states.read();
        ids.iter()
            .filter_map(|id| states.get(id).cloned())
            .take(GOSSIP_STATES_PER_MESSAGE_MAX)
            .collect()
    }
}
