//! What a node state must look like before it is used or persisted.
//!
//! Gossip spreads states a node did not write itself; a state that passes
//! here is at least one a real node could have: a bounded size, no more
//! tokens than its weight gives (`weight x tokens_per_weight`; fewer only
//! while a node is being set up), addresses that are not wildcards, and
//! names an operator could have typed.

use crate::net::message::NodeState;
use crate::ring::TOKENS_PER_NODE_MAX;

/// Most members a node keeps states of (LEFT ones aside); states of
/// further unknown nodes are refused.
pub const MEMBERS_MAX: usize = 10_000;
/// Most members that have LEFT a node keeps states of: LEFT is final for
/// an id, so they are kept (and answered to a peer that still lists one),
/// but not listed in positional digests. Beyond it, states of further
/// unknown LEFT nodes are refused.
pub const DEPARTED_MAX: usize = 10_000;
/// Most states a node knows: what a whole-state message or an explicit
/// digest may list.
pub const KNOWN_MAX: usize = MEMBERS_MAX + DEPARTED_MAX;

/// Why the state `s` of an id not known yet cannot join `states`: no
/// room left among the members of its kind (LEFT or not).
pub fn room_for<'a>(
    s: &NodeState,
    states: impl Iterator<Item = &'a NodeState>,
) -> Result<(), String> {
    use crate::net::message::NodeStatus;
    let left = s.status == NodeStatus::Left;
    let max = if left { DEPARTED_MAX } else { MEMBERS_MAX };
    let mut same_kind = states.filter(|o| (o.status == NodeStatus::Left) == left);
    if same_kind.nth(max - 1).is_some() {
        let kind = if left { "departed members" } else { "members" };
        return Err(format!("more than {max} {kind}"));
    }
    Ok(())
}
/// Highest weight a node may have (config validation says the same).
pub const WEIGHT_MAX: u32 = 64;
/// Longest address, data center or rack name.
pub const NAME_BYTES_MAX: usize = 255;

/// Why a state was refused.
pub fn check_state(s: &NodeState, tokens_per_weight: usize) -> Result<(), String> {
    if s.id == 0 {
        return Err("node id 0".into());
    }
    if !(1..=WEIGHT_MAX).contains(&s.weight) {
        return Err(format!("weight {} outside 1..={WEIGHT_MAX}", s.weight));
    }
    let expected = s.weight as usize * tokens_per_weight;
    if s.tokens.len() > TOKENS_PER_NODE_MAX || s.tokens.len() > expected {
        return Err(format!(
            "{} tokens for weight {} (at most {expected})",
            s.tokens.len(),
            s.weight
        ));
    }
    check_addr(&s.cluster_addr).map_err(|why| format!("cluster address: {why}"))?;
    for (what, addr) in [("RESP", &s.resp_addr), ("HTTP", &s.http_addr)] {
        // Front-end addresses are shown, not dialed by peers: a wildcard
        // bind is allowed.
        check_syntax(addr).map_err(|why| format!("{what} address: {why}"))?;
    }
    for (what, name) in [("data center", &s.dc), ("rack", &s.rack)] {
        check_name(name).map_err(|why| format!("{what}: {why}"))?;
    }
    Ok(())
}

/// A `host:port` a peer can dial: a port, a host name or an address that
/// is not a wildcard.
pub fn check_addr(addr: &str) -> Result<(), String> {
    let host = check_syntax(addr)?;
    if let Ok(ip) = host.trim_matches(['[', ']']).parse::<std::net::IpAddr>()
        && ip.is_unspecified()
    {
        return Err(format!(
            "{addr} is a wildcard, not an address peers can dial"
        ));
    }
    Ok(())
}

/// `host:port` (the simulation's names have no port: a name alone passes).
fn check_syntax(addr: &str) -> Result<&str, String> {
    if addr.len() > NAME_BYTES_MAX {
        return Err(format!("{} bytes", addr.len()));
    }
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']' | '_');
    if !addr.chars().all(ok) {
        return Err(format!("{addr:?}: not an address"));
    }
    match addr.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(':') || host.starts_with('[') => {
            match port.parse::<u16>() {
                Ok(p) if p > 0 && !host.is_empty() => Ok(host),
                _ => Err(format!("{addr:?}: bad port")),
            }
        }
        _ => Ok(addr),
    }
}

fn check_name(name: &str) -> Result<(), String> {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_');
    if name.is_empty() || name.len() > NAME_BYTES_MAX || !name.chars().all(ok) {
        return Err(format!(
            "{name:?} is not a name (letters, digits, '.', '-', '_')"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::message::{Load, NodeStatus};

    fn state() -> NodeState {
        NodeState {
            id: 7,
            generation: 1,
            heartbeat: 1,
            cluster_addr: "127.0.0.1:7381".into(),
            resp_addr: "0.0.0.0:7379".into(),
            http_addr: "db1.example.com:7380".into(),
            dc: "dc1".into(),
            rack: "rack-1".into(),
            weight: 2,
            tokens: (0..8).collect(),
            status: NodeStatus::Normal,
            load: Load::default(),
            signature: None,
        }
    }

    #[test]
    fn real_states_pass_and_forged_shapes_do_not() {
        assert_eq!(check_state(&state(), 4), Ok(()));
        let joining = NodeState {
            tokens: Vec::new(),
            status: NodeStatus::Joining,
            ..state()
        };
        assert_eq!(check_state(&joining, 4), Ok(()));
        type Forge = Box<dyn Fn(&mut NodeState)>;
        let bad: Vec<(&str, Forge)> = vec![
            ("id 0", Box::new(|s| s.id = 0)),
            ("weight 0", Box::new(|s| s.weight = 0)),
            ("weight 65", Box::new(|s| s.weight = 65)),
            ("more tokens", Box::new(|s| s.tokens.push(99))),
            ("20k tokens", Box::new(|s| s.tokens = (0..20_000).collect())),
            (
                "wildcard",
                Box::new(|s| s.cluster_addr = "0.0.0.0:7381".into()),
            ),
            (
                "wildcard v6",
                Box::new(|s| s.cluster_addr = "[::]:7381".into()),
            ),
            ("port 0", Box::new(|s| s.cluster_addr = "db1:0".into())),
            ("space", Box::new(|s| s.cluster_addr = "a b:1".into())),
            (
                "long",
                Box::new(|s| s.cluster_addr = format!("{}:1", "a".repeat(300))),
            ),
            ("bad http", Box::new(|s| s.http_addr = "a b".into())),
            ("empty dc", Box::new(|s| s.dc = String::new())),
            ("newline rack", Box::new(|s| s.rack = "r\n1".into())),
        ];
        for (what, f) in bad {
            let mut s = state();
            f(&mut s);
            assert!(check_state(&s, 4).is_err(), "{what} passed");
        }
        assert_eq!(check_addr("[::1]:7381"), Ok(()));
        assert_eq!(check_addr("ringkv-0.ringkv-peers.default.svc:7381"), Ok(()));
    }
}
