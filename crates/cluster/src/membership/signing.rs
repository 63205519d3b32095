//! Signed states: this node signs its own, and checks the signatures of
//! those it is sent (see "Signed states" in [`crate::net::message`]).

use super::*;

impl Membership {
    /// From now on, this node signs its own state with `auth`'s key, and
    /// takes a state about a node only signed by it (see `merge`).
    pub fn set_auth(&self, auth: StateAuth) {
        *self.auth.write() = Some(auth);
        if let Some(me) = self.states.write().get_mut(&self.self_id) {
            self.publish(me);
        }
    }

    /// Signs a state this node vouches for (its own, or one it changes on
    /// a removed node's behalf).
    pub(super) fn sign(&self, s: &mut NodeState) {
        let Some(auth) = self.auth.read().clone() else {
            return;
        };
        s.signature = None;
        match s
            .signed_bytes()
            .map_err(|e| e.to_string())
            .and_then(|bytes| auth.tls.sign(&bytes).map_err(|e| e.to_string()))
        {
            Ok(sig) => s.signature = Some(sig),
            Err(e) => tracing::error!(error = %e, "cannot sign a node state; peers will refuse it"),
        }
    }

    /// Whether `s` may replace `old` (this node's current state of the
    /// same node), as far as signatures go: signed by the node itself, or
    /// (removal) granted by an admin, changing nothing but the status (to
    /// one of a removal's), heartbeat and load.
    pub(super) fn check_signature(
        &self,
        s: &NodeState,
        old: Option<&NodeState>,
    ) -> Result<(), String> {
        let Some(auth) = self.auth.read().clone() else {
            return Ok(());
        };
        let Some(sig) = &s.signature else {
            return if auth.required {
                Err("unsigned".into())
            } else {
                Ok(())
            };
        };
        match auth.tls.signer(sig).map_err(|e| e.to_string())? {
            Signer::Node(signer) if signer == s.id => {
                let bytes = s.signed_bytes().map_err(|e| e.to_string())?;
                check_signature(sig, &bytes).map_err(|e| e.to_string())
            }
            Signer::Node(signer) => Err(format!(
                "signed by node {}, not by the node itself (only an admin's grant may change \
                 another node's status)",
                crate::id::display(signer)
            )),
            Signer::Admin => {
                // A grant moves the removal forward (a receiver may have
                // missed steps), or back to NORMAL on cancel, by a bounded
                // heartbeat step: replayed, it cannot turn a removal back
                // or push a node's heartbeat out of reach. A removal of an
                // earlier life of this node comes whole (`old` is `s`).
                let rank = |st: NodeStatus| match st {
                    NodeStatus::Normal => 0,
                    NodeStatus::Leaving => 1,
                    NodeStatus::LeaveHandover => 2,
                    _ => 3,
                };
                let moves = old.is_some_and(|o| {
                    o == s
                        || (s.heartbeat > o.heartbeat
                            && s.heartbeat - o.heartbeat <= GRANT_HEARTBEAT_STEP_MAX
                            && (rank(s.status) > rank(o.status)
                                || (s.status == NodeStatus::Normal
                                    && matches!(
                                        o.status,
                                        NodeStatus::Leaving | NodeStatus::LeaveHandover
                                    ))))
                });
                if !moves {
                    return Err(
                        "an admin grant moves a removal forward (or cancels it) one step at a time"
                            .into(),
                    );
                }
                let same_but_status = old.is_some_and(|o| {
                    let mut o = o.clone();
                    o.status = s.status;
                    o.heartbeat = s.heartbeat;
                    o.load = s.load;
                    o.signature = s.signature.clone();
                    o == *s
                });
                if !REMOVAL_STATUSES.contains(&s.status) || !same_but_status {
                    return Err(
                        "an admin grant changes only a node's status, to one of a removal's".into(),
                    );
                }
                check_grant(&auth, sig, s.id, s.generation, s.status)
            }
        }
    }

    /// The states of `incoming` whose signatures let them replace what this
    /// node holds (see `check_signature`); the others are refused and
    /// counted. Signatures are checked with no lock held.
    pub(super) fn authenticated(&self, incoming: Vec<NodeState>) -> Vec<NodeState> {
        if self.auth.read().is_none() {
            return incoming;
        }
        let mut checks = Vec::with_capacity(incoming.len());
        {
            let states = self.states.read();
            let mine = states.get(&self.self_id).map_or(0, |me| me.generation);
            for s in incoming {
                if s.id == self.self_id {
                    // Only a LEFT of ours matters (see `merge`): by us, or
                    // a removal of an earlier life (made while we were
                    // down, before this start).
                    let check = s.status == NodeStatus::Left;
                    let earlier = s.generation < mine;
                    checks.push((s, None, earlier, check));
                    continue;
                }
                let old = states.get(&s.id).cloned();
                let check = old.as_ref().is_none_or(|o| s.freshness() > o.freshness());
                checks.push((s, old, false, check));
            }
        }
        let mut passed = Vec::with_capacity(checks.len());
        for (s, old, earlier, check) in checks {
            if !check {
                passed.push(s);
                continue;
            }
            // A LEFT of ours granted by an admin is taken only for an
            // earlier life (a removal made while we were down), and
            // changes it whole.
            let old = match (s.id == self.self_id, earlier) {
                (true, true) => Some(s.clone()),
                (true, false) => None,
                (false, _) => old,
            };
            match self.check_signature(&s, old.as_ref()) {
                Ok(()) => passed.push(s),
                Err(why) => {
                    metrics::counter!("ringkv_gossip_states_refused_total").increment(1);
                    tracing::warn!(
                        node = %crate::id::display(s.id),
                        %why,
                        "refused a node state"
                    );
                }
            }
        }
        passed
    }
}
