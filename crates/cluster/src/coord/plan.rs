//! Planning a request: the replicas of its key in each ring, which of them
//! are alive, and what its consistency level needs of them.

use std::sync::Arc;

use crate::api::{Consistency, KvError};
use crate::det::HashMap;
use crate::id::{NodeId, display};
use crate::membership::Membership;
use crate::ring::{Placement, Token, token_of};
use crate::rpc::Requirement;

/// The data center of each replica in a preference list; empty when the
/// consistency level does not look at data centers.
pub type DcOf = Vec<(NodeId, String)>;

/// What a consistency level needs of one preference list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Need {
    /// Answers needed from any data center.
    pub total: usize,
    /// Answers needed from specific data centers.
    pub per_dc: Vec<(String, usize)>,
}

impl Need {
    pub fn count(&self) -> usize {
        self.total + self.per_dc.iter().map(|(_, n)| n).sum::<usize>()
    }

    fn met(&self, answered: &[NodeId], dc_of: &DcOf) -> bool {
        self.met_among(answered, |_| true, dc_of)
    }

    /// True when the answers of the nodes `counts` accepts meet the need
    /// (no allocation: this runs after every answer).
    fn met_among(
        &self,
        answered: &[NodeId],
        counts: impl Fn(NodeId) -> bool,
        dc_of: &DcOf,
    ) -> bool {
        let mine = || answered.iter().copied().filter(|&id| counts(id));
        if mine().count() < self.total {
            return false;
        }
        self.per_dc.iter().all(|(dc, need)| {
            mine()
                .filter(|id| dc_of.iter().any(|(n, d)| n == id && d == dc))
                .count()
                >= *need
        })
    }

    /// The one data center a `LOCAL_*` level reads, if this is one.
    pub fn local_dc(&self, level: Consistency) -> Option<&str> {
        match level {
            Consistency::LocalOne | Consistency::LocalQuorum => {
                self.per_dc.first().map(|(dc, _)| dc.as_str())
            }
            _ => None,
        }
    }
}

/// One ring's side of a request: its replicas of the key and what the level
/// needs of them.
#[derive(Debug, Clone)]
pub struct RingPlan {
    pub prefs: Vec<NodeId>,
    pub dc_of: DcOf,
    pub need: Need,
}

impl RingPlan {
    /// True when `id` is in the data center `dc` (per this plan's lookup).
    fn in_dc(&self, id: NodeId, dc: &str) -> bool {
        self.dc_of.iter().any(|(n, d)| *n == id && d == dc)
    }
}

impl Requirement for RingPlan {
    /// Only this ring's replicas count: a node that only joins holds
    /// nothing yet.
    fn met(&self, answered: &[NodeId]) -> bool {
        self.need
            .met_among(answered, |id| self.prefs.contains(&id), &self.dc_of)
    }

    fn required(&self) -> usize {
        self.need.count()
    }
}

/// A request's plan: the current ring's side, the pending ring's while
/// nodes move (a request must meet both), and the live replicas to ask.
#[derive(Debug, Clone)]
pub struct Plan {
    pub current: RingPlan,
    pub pending: Option<RingPlan>,
    /// Live replicas of either ring, current ones first.
    pub live: Vec<NodeId>,
    /// Every replica of either ring, live or not, current ones first
    /// (writes only: a read needs no more than `live`).
    pub replicas: Vec<NodeId>,
}

impl Requirement for Plan {
    fn met(&self, acked: &[NodeId]) -> bool {
        self.current.met(acked) && self.pending.as_ref().is_none_or(|p| p.met(acked))
    }

    fn required(&self) -> usize {
        self.current.required()
    }
}

/// Plans requests against one node's view of membership.
pub struct Planner {
    membership: Arc<Membership>,
}

impl Planner {
    pub fn new(membership: Arc<Membership>) -> Self {
        Self { membership }
    }

    /// The current ring's side of a request on `key` at `level`, and its
    /// live replicas. Fails with `Unavailable` when the live replicas cannot
    /// meet the level (`sloppy`: when none is alive, as stand-ins may take
    /// the place of the others).
    pub fn current(
        &self,
        key: &[u8],
        level: Consistency,
        sloppy: bool,
    ) -> Result<(RingPlan, Vec<NodeId>), KvError> {
        self.current_at(token_of(key), level, sloppy)
    }

    /// [`Planner::current`] for the keys of `token`.
    fn current_at(
        &self,
        token: Token,
        level: Consistency,
        sloppy: bool,
    ) -> Result<(RingPlan, Vec<NodeId>), KvError> {
        self.current_from(self.membership.preference_list(token), level, sloppy)
    }

    /// [`Planner::current`] for the preference list `prefs`.
    fn current_from(
        &self,
        prefs: Vec<NodeId>,
        level: Consistency,
        sloppy: bool,
    ) -> Result<(RingPlan, Vec<NodeId>), KvError> {
        let m = &self.membership;
        let plan = self.ring_plan(prefs, level)?;
        let live: Vec<NodeId> = plan
            .prefs
            .iter()
            .copied()
            .filter(|&id| m.is_alive(id))
            .collect();
        let enough = if sloppy {
            !live.is_empty()
        } else {
            plan.need.met(&live, &plan.dc_of)
        };
        if !enough {
            let down: Vec<String> = plan
                .prefs
                .iter()
                .filter(|id| !live.contains(id))
                .map(|&id| display(id))
                .collect();
            return Err(KvError::Unavailable {
                required: plan.need.count(),
                answered: live.len(),
                why: format!("replicas down: {}", down.join(", ")),
            });
        }
        Ok((plan, live))
    }

    /// The current ring's side of a request on `key`, whatever is alive.
    pub fn current_any(&self, key: &[u8], level: Consistency) -> Result<RingPlan, KvError> {
        self.ring_plan(self.membership.preference_list(token_of(key)), level)
    }

    /// A write's plan: the current ring's replicas and, while nodes join or
    /// leave, the pending ring's too (every write goes to both and must
    /// meet the level in each; see [`crate::movement`]).
    pub fn write(&self, key: &[u8], level: Consistency, sloppy: bool) -> Result<Plan, KvError> {
        let (current, live) = self.current(key, level, sloppy)?;
        let pending = self
            .membership
            .pending_ring()
            .and_then(|ring| self.in_ring(&ring, token_of(key), level));
        let mut plan = self.combine(current, pending, live, None);
        plan.replicas = plan.current.prefs.clone();
        if let Some(p) = &plan.pending {
            plan.replicas
                .extend(p.prefs.iter().filter(|id| !plan.current.prefs.contains(id)));
        }
        Ok(plan)
    }

    /// A read's plan: the current ring's live replicas (of the local data
    /// center for `LOCAL_*` levels) and, while a movement hands over, the
    /// pending ring's too (see [`Membership::pending_ring_for_reads`]).
    pub fn read(&self, key: &[u8], level: Consistency) -> Result<Plan, KvError> {
        self.read_at(token_of(key), level)
    }

    /// [`Planner::read`] for the keys of `token`.
    pub fn read_at(&self, token: Token, level: Consistency) -> Result<Plan, KvError> {
        let m = &self.membership;
        self.read_with(
            m.preference_list(token),
            m.pending_ring_for_reads(),
            token,
            level,
        )
    }

    /// A read plan for the keys of `token`, and the last token of the run
    /// from `token` on it covers (see [`Placement::same_replicas_until`]),
    /// both from one reading of the rings.
    pub fn read_run(&self, token: Token, level: Consistency) -> Result<(Plan, Token), KvError> {
        let m = &self.membership;
        let current = m.current_ring();
        let pending = m.pending_ring_for_reads();
        let mut end = current.same_replicas_until(token);
        if let Some(p) = &pending {
            end = end.min(p.same_replicas_until(token));
        }
        let prefs = current.preference_list(token).to_vec();
        Ok((self.read_with(prefs, pending, token, level)?, end))
    }

    fn read_with(
        &self,
        prefs: Vec<NodeId>,
        pending: Option<Arc<Placement>>,
        token: Token,
        level: Consistency,
    ) -> Result<Plan, KvError> {
        let (current, mut live) = self.current_from(prefs, level, false)?;
        let local = current.need.local_dc(level).map(str::to_string);
        if let Some(dc) = &local {
            live.retain(|&id| current.in_dc(id, dc));
        }
        let pending = pending.and_then(|ring| self.in_ring(&ring, token, level));
        Ok(self.combine(current, pending, live, local.as_deref()))
    }

    /// Adds the pending ring's replicas (of `local_dc` only, when given) to
    /// a plan.
    fn combine(
        &self,
        current: RingPlan,
        pending: Option<RingPlan>,
        mut live: Vec<NodeId>,
        local_dc: Option<&str>,
    ) -> Plan {
        if let Some(p) = &pending {
            for &id in &p.prefs {
                if current.prefs.contains(&id) || live.contains(&id) {
                    continue;
                }
                let in_dc = local_dc.is_none_or(|dc| p.in_dc(id, dc));
                if in_dc && self.membership.is_alive(id) {
                    live.push(id);
                }
            }
        }
        Plan {
            current,
            pending,
            live,
            replicas: Vec::new(),
        }
    }

    /// One ring's side, or `None` when it cannot meet `level` (a removal
    /// that leaves fewer nodes than the replication factor).
    fn in_ring(&self, ring: &Placement, token: Token, level: Consistency) -> Option<RingPlan> {
        let prefs = ring.preference_list(token).to_vec();
        self.ring_plan(prefs, level).ok()
    }

    /// What `level` needs of the preference list `prefs`.
    fn ring_plan(&self, prefs: Vec<NodeId>, level: Consistency) -> Result<RingPlan, KvError> {
        let m = &self.membership;
        let dc_aware = matches!(
            level,
            Consistency::LocalOne | Consistency::LocalQuorum | Consistency::EachQuorum
        );
        // Only data-center-aware levels pay for looking up data centers.
        let dc_of: DcOf = if dc_aware {
            prefs
                .iter()
                .filter_map(|&id| m.dc_of(id).map(|dc| (id, dc)))
                .collect()
        } else {
            Vec::new()
        };
        let need = need_of(level, prefs.len(), &dc_of, || {
            m.dc_of(m.self_id()).unwrap_or_default()
        })?;
        Ok(RingPlan { prefs, dc_of, need })
    }
}

/// What `level` needs of `n` replicas placed as `dc_of` says;
/// `local_dc` names this node's data center (asked only by `LOCAL_*`).
fn need_of(
    level: Consistency,
    n: usize,
    dc_of: &DcOf,
    local_dc: impl FnOnce() -> String,
) -> Result<Need, KvError> {
    let mut n_dc: HashMap<&str, usize> = HashMap::default();
    for (_, dc) in dc_of {
        *n_dc.entry(dc.as_str()).or_default() += 1;
    }
    let quorum = |k: usize| k / 2 + 1;
    let need = match level {
        Consistency::LocalOne | Consistency::LocalQuorum => {
            let local_dc = local_dc();
            let local_n = n_dc.get(local_dc.as_str()).copied().unwrap_or(0);
            if local_n == 0 {
                return Err(KvError::Unavailable {
                    required: 1,
                    answered: 0,
                    why: format!("no replica of this key in the local data center {local_dc:?}"),
                });
            }
            let k = if level == Consistency::LocalOne {
                1
            } else {
                quorum(local_n)
            };
            Need {
                total: 0,
                per_dc: vec![(local_dc, k)],
            }
        }
        Consistency::EachQuorum => Need {
            total: 0,
            per_dc: n_dc
                .iter()
                .map(|(dc, &k)| (dc.to_string(), quorum(k)))
                .collect(),
        },
        other => Need {
            total: other.required(n),
            per_dc: Vec::new(),
        },
    };
    if need.count() > n || n == 0 {
        return Err(KvError::Unavailable {
            required: need.count(),
            answered: n,
            why: format!(
                "{} needs {} replicas; the ring holds {n} replica(s) of this key",
                level.name(),
                need.count()
            ),
        });
    }
    Ok(need)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dcs(pairs: &[(NodeId, &str)]) -> DcOf {
        pairs.iter().map(|&(id, dc)| (id, dc.to_string())).collect()
    }

    #[test]
    fn levels_need_what_they_say_of_each_data_center() {
        let none = DcOf::new();
        let q = need_of(Consistency::Quorum, 3, &none, String::new).expect("quorum");
        assert_eq!((q.total, q.count()), (2, 2));
        let all = need_of(Consistency::All, 3, &none, String::new).expect("all");
        assert_eq!(all.count(), 3);
        let placed = dcs(&[
            (1, "east"),
            (2, "east"),
            (3, "east"),
            (4, "west"),
            (5, "west"),
        ]);
        let local =
            need_of(Consistency::LocalQuorum, 5, &placed, || "east".into()).expect("local quorum");
        assert_eq!(local.per_dc, vec![("east".to_string(), 2)]);
        assert!(
            !local.met(&[1, 4, 5], &placed),
            "one east answer is not two"
        );
        assert!(local.met(&[1, 3], &placed));
        assert_eq!(local.local_dc(Consistency::LocalQuorum), Some("east"));
        let mut each = need_of(Consistency::EachQuorum, 5, &placed, String::new).expect("each");
        each.per_dc.sort();
        assert_eq!(
            each.per_dc,
            vec![("east".to_string(), 2), ("west".to_string(), 2)]
        );
        assert!(!each.met(&[1, 2, 3, 4], &placed));
        assert!(each.met(&[1, 2, 4, 5], &placed));
        // Beyond the replicas there are, or no local replica: unavailable.
        assert!(matches!(
            need_of(Consistency::Count(4), 3, &none, String::new),
            Err(KvError::Unavailable { required: 4, .. })
        ));
        assert!(matches!(
            need_of(Consistency::LocalOne, 5, &placed, || "north".into()),
            Err(KvError::Unavailable { required: 1, .. })
        ));
    }

    #[test]
    fn a_ring_plan_counts_only_its_own_replicas() {
        let plan = RingPlan {
            prefs: vec![1, 2, 3],
            dc_of: DcOf::new(),
            need: Need {
                total: 2,
                per_dc: Vec::new(),
            },
        };
        assert!(!plan.met(&[1, 9]), "a joiner's answer does not count here");
        assert!(plan.met(&[1, 9, 3]));
    }
}
