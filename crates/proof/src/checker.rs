//! Checkers: what a history plus the final reads must satisfy.
//!
//! - Set ([`check_set`]): every acknowledged add is present in the final
//!   read (else *lost*); nothing is present that was never invoked, and no
//!   element carries a value other than the one written (*phantom*); adds
//!   with unknown outcomes may go either way and are counted.
//! - Register ([`check_register`]), per key with one writer per key and a
//!   counter in every value, so "older" is decidable: a read is *stale* when
//!   none of the siblings it returned is at least the counter of the last
//!   write acknowledged before the read was invoked (a successor or siblings
//!   including it are fine); a value whose counter was never invoked (or is
//!   not a counter at all) is a *phantom*; a key whose final read (at ALL,
//!   after healing) is below its last acknowledged counter is *lost*.
//!
//! One subtlety: a write whose outcome is unknown (the client timed out) may
//! take effect at any later time, after the writer's next writes too. A
//! replica that applies it late supersedes whatever it had seen (plain `SET`
//! uses the replica's own context), so it is then a causal successor of a
//! write with a higher counter. Reads that return such a late write are not
//! stale; they are counted as `late_writes` instead.

use std::collections::{BTreeMap, HashMap};

use crate::history::{Op, OpKind, Outcome, Seen};

/// Violations and figures found by a checker.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Acknowledged writes missing from the final state.
    pub lost: u64,
    /// Reads older than a write acknowledged before they began.
    pub stale: u64,
    /// Values that no operation ever wrote.
    pub phantom: u64,
    /// Unknown-outcome writes found present / absent at the end.
    pub unknown_present: u64,
    pub unknown_absent: u64,
    /// Reads (and final reads) explained only by a write with an unknown
    /// outcome that took effect after a later acknowledged one.
    pub late_writes: u64,
    /// Up to [`EXAMPLES_MAX`] human-readable examples of violations.
    pub examples: Vec<String>,
}

/// Most violation examples kept for the report.
pub const EXAMPLES_MAX: usize = 10;

impl Verdict {
    fn example(&mut self, text: String) {
        if self.examples.len() < EXAMPLES_MAX {
            self.examples.push(text);
        }
    }
}

/// The final read of one set element: `None` when absent, else the value.
pub type FinalRead = Option<Vec<u8>>;

/// The value the set workload writes for `element`.
pub fn set_value(element: u64) -> Vec<u8> {
    format!("e{element:016x}").into_bytes()
}

/// Checks the set workload. `final_reads` holds every element invoked plus
/// probes that were never invoked (they must be absent).
pub fn check_set(ops: &[Op], final_reads: &HashMap<u64, FinalRead>) -> Verdict {
    let mut v = Verdict::default();
    // Per element: the best outcome any add of it got.
    let mut invoked: HashMap<u64, Outcome> = HashMap::new();
    for op in ops {
        if let OpKind::Add { element } = op.kind {
            let e = invoked.entry(element).or_insert(op.outcome);
            if op.outcome == Outcome::Ok || (op.outcome == Outcome::Unknown && *e == Outcome::Fail)
            {
                *e = op.outcome;
            }
        }
    }
    let mut elements: Vec<&u64> = final_reads.keys().collect();
    elements.sort_unstable();
    for &element in elements {
        let read = final_reads.get(&element).cloned().flatten();
        let outcome = invoked.get(&element).copied();
        if let Some(value) = &read
            && *value != set_value(element)
        {
            v.phantom += 1;
            v.example(format!(
                "element {element:016x}: read {:?}, which was never written",
                String::from_utf8_lossy(value)
            ));
            continue;
        }
        match (outcome, read.is_some()) {
            (Some(Outcome::Ok), false) => {
                v.lost += 1;
                v.example(format!(
                    "element {element:016x}: add acknowledged, absent from the final read"
                ));
            }
            (Some(Outcome::Unknown), true) => v.unknown_present += 1,
            (Some(Outcome::Unknown), false) => v.unknown_absent += 1,
            (None | Some(Outcome::Fail), true) => {
                v.phantom += 1;
                v.example(format!(
                    "element {element:016x}: present, but no add of it was ever sent"
                ));
            }
            _ => {}
        }
    }
    v
}

/// Checks the register workload. `final_reads` maps each key to what a read
/// at ALL returned after healing.
pub fn check_register(ops: &[Op], final_reads: &HashMap<u32, Vec<Seen>>) -> Verdict {
    let mut v = Verdict::default();
    // Per key: acknowledged writes as (complete_us, counter), and invoked
    // writes as (invoke_us, counter).
    let mut acked: HashMap<u32, Vec<(u64, u64)>> = HashMap::new();
    let mut invoked: HashMap<u32, Vec<(u64, u64)>> = HashMap::new();
    // Writes that may take effect late: (key, counter) of every write that
    // was not acknowledged.
    let mut indeterminate: std::collections::HashSet<(u32, u64)> = Default::default();
    for op in ops {
        if let OpKind::Write { key, counter } = op.kind {
            if op.outcome != Outcome::Ok {
                indeterminate.insert((key, counter));
            }
            invoked
                .entry(key)
                .or_default()
                .push((op.invoke_us, counter));
            if op.outcome == Outcome::Ok {
                acked
                    .entry(key)
                    .or_default()
                    .push((op.complete_us, counter));
            }
        }
    }
    // Prefix maxima over time, so each read asks one binary search.
    let prefix_max = |mut xs: Vec<(u64, u64)>| -> Vec<(u64, u64)> {
        xs.sort_unstable();
        let mut best = 0;
        xs.into_iter()
            .map(|(t, c)| {
                best = best.max(c);
                (t, best)
            })
            .collect()
    };
    let acked: HashMap<u32, Vec<(u64, u64)>> = acked
        .into_iter()
        .map(|(k, xs)| (k, prefix_max(xs)))
        .collect();
    let invoked: HashMap<u32, Vec<(u64, u64)>> = invoked
        .into_iter()
        .map(|(k, xs)| (k, prefix_max(xs)))
        .collect();
    // The largest counter among entries strictly before `t` (or at/before).
    let max_before = |xs: Option<&Vec<(u64, u64)>>, t: u64, inclusive: bool| -> u64 {
        let Some(xs) = xs else { return 0 };
        let n = xs.partition_point(|&(at, _)| if inclusive { at <= t } else { at < t });
        if n == 0 { 0 } else { xs[n - 1].1 }
    };

    let mut phantoms_seen: BTreeMap<(u32, String), ()> = BTreeMap::new();
    for op in ops {
        let OpKind::Read { key } = op.kind else {
            continue;
        };
        if op.outcome != Outcome::Ok {
            continue;
        }
        let required = max_before(acked.get(&key), op.invoke_us, false);
        let ceiling = max_before(invoked.get(&key), op.complete_us, true);
        let mut best = 0;
        let mut late = false;
        for s in &op.seen {
            match s {
                Seen::Counter(c) if *c <= ceiling => {
                    best = best.max(*c);
                    late |= *c < required && indeterminate.contains(&(key, *c));
                }
                other => {
                    let text = format!("{other:?}");
                    if phantoms_seen.insert((key, text.clone()), ()).is_none() {
                        v.phantom += 1;
                        v.example(format!(
                            "key {key}: read at {}us returned {text}, never written (highest counter invoked: {ceiling})",
                            op.invoke_us
                        ));
                    }
                }
            }
        }
        if best < required && late {
            v.late_writes += 1;
        } else if best < required {
            v.stale += 1;
            v.example(format!(
                "key {key}: read by client {} invoked at {}us returned {:?}, but counter {required} was acknowledged before it began",
                op.client, op.invoke_us, op.seen
            ));
        }
    }

    let mut keys: Vec<&u32> = acked.keys().chain(final_reads.keys()).collect();
    keys.sort_unstable();
    keys.dedup();
    for &key in keys {
        let last_acked = acked.get(&key).and_then(|xs| xs.last()).map_or(0, |x| x.1);
        let ceiling = invoked
            .get(&key)
            .and_then(|xs| xs.last())
            .map_or(0, |x| x.1);
        let seen = final_reads.get(&key).map(Vec::as_slice).unwrap_or(&[]);
        let mut best = 0;
        let mut late = false;
        for s in seen {
            match s {
                Seen::Counter(c) if *c <= ceiling => {
                    best = best.max(*c);
                    late |= *c < last_acked && indeterminate.contains(&(key, *c));
                }
                other => {
                    v.phantom += 1;
                    v.example(format!(
                        "key {key}: final read returned {other:?}, never written"
                    ));
                }
            }
        }
        if best < last_acked && late {
            v.late_writes += 1;
        } else if best < last_acked {
            v.lost += 1;
            v.example(format!(
                "key {key}: final read returned {seen:?}, but counter {last_acked} was acknowledged"
            ));
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(kind: OpKind, outcome: Outcome, invoke_us: u64, complete_us: u64, seen: Vec<u64>) -> Op {
        Op {
            client: 0,
            kind,
            outcome,
            invoke_us,
            complete_us,
            seen: seen.into_iter().map(Seen::Counter).collect(),
            error: None,
        }
    }

    fn write(key: u32, counter: u64, outcome: Outcome, t0: u64, t1: u64) -> Op {
        op(OpKind::Write { key, counter }, outcome, t0, t1, vec![])
    }

    fn read(key: u32, t0: u64, t1: u64, seen: Vec<u64>) -> Op {
        op(OpKind::Read { key }, Outcome::Ok, t0, t1, seen)
    }

    #[test]
    fn set_checker_finds_lost_and_phantom_elements() {
        let add = |element, outcome| op(OpKind::Add { element }, outcome, 0, 1, vec![]);
        let ops = vec![
            add(1, Outcome::Ok),
            add(2, Outcome::Ok),
            add(3, Outcome::Unknown),
            add(4, Outcome::Unknown),
            add(5, Outcome::Ok),
        ];
        let mut finals = HashMap::new();
        finals.insert(1, Some(set_value(1)));
        finals.insert(2, None); // lost
        finals.insert(3, Some(set_value(3)));
        finals.insert(4, None);
        finals.insert(5, Some(b"garbage".to_vec())); // phantom value
        finals.insert(99, Some(set_value(99))); // never invoked
        let v = check_set(&ops, &finals);
        assert_eq!(v.lost, 1, "{v:?}");
        assert_eq!(v.phantom, 2, "{v:?}");
        assert_eq!((v.unknown_present, v.unknown_absent), (1, 1));
        assert_eq!(v.examples.len(), 3);

        finals.insert(2, Some(set_value(2)));
        finals.insert(5, Some(set_value(5)));
        finals.insert(99, None);
        let v = check_set(&ops, &finals);
        assert_eq!((v.lost, v.phantom), (0, 0), "{v:?}");
    }

    #[test]
    fn register_checker_flags_reads_older_than_an_acknowledged_write() {
        let ops = vec![
            write(7, 1, Outcome::Ok, 0, 10),
            write(7, 2, Outcome::Ok, 20, 30),
            // Concurrent with write 2: either answer is fine.
            read(7, 25, 40, vec![1]),
            // Began after write 2 was acknowledged: 1 alone is stale.
            read(7, 31, 50, vec![1]),
            // Siblings including 2 are fine.
            read(7, 32, 50, vec![1, 2]),
            // Nothing at all, after an acknowledged write: stale.
            read(7, 33, 50, vec![]),
            write(7, 3, Outcome::Unknown, 60, 70),
            // An unknown write may show up: fine.
            read(7, 80, 90, vec![3]),
            // A counter never invoked: phantom.
            read(7, 80, 90, vec![3, 9]),
        ];
        let mut finals = HashMap::new();
        finals.insert(7, vec![Seen::Counter(2)]);
        let v = check_register(&ops, &finals);
        assert_eq!(v.stale, 2, "{v:?}");
        assert_eq!(v.phantom, 1, "{v:?}");
        assert_eq!(v.lost, 0, "{v:?}");

        // A final read below the last acknowledged counter is a loss.
        finals.insert(7, vec![Seen::Counter(1)]);
        let v = check_register(&ops, &finals);
        assert_eq!(v.lost, 1, "{v:?}");
        // Garbage is a phantom.
        finals.insert(7, vec![Seen::Counter(3), Seen::Garbage("x".into())]);
        let v = check_register(&ops, &finals);
        assert_eq!((v.lost, v.phantom), (0, 2), "{v:?}");
    }

    #[test]
    fn a_timed_out_write_that_lands_late_is_not_stale() {
        let ops = vec![
            write(3, 1, Outcome::Ok, 0, 10),
            // Times out at a paused coordinator...
            write(3, 2, Outcome::Unknown, 20, 2_000),
            // ...the next write is acknowledged elsewhere...
            write(3, 3, Outcome::Ok, 2_100, 2_200),
            // ...then the paused node wakes and applies 2 over 3.
            read(3, 2_300, 2_400, vec![2]),
            // 1 was acknowledged before 3 was sent: that read is stale.
            read(3, 2_300, 2_400, vec![1]),
        ];
        let mut finals = HashMap::new();
        finals.insert(3, vec![Seen::Counter(2)]);
        let v = check_register(&ops, &finals);
        assert_eq!((v.stale, v.late_writes, v.lost), (1, 2, 0), "{v:?}");
    }

    #[test]
    fn register_checker_accepts_a_clean_history() {
        let ops = vec![
            write(1, 1, Outcome::Ok, 0, 10),
            read(1, 11, 12, vec![1]),
            write(1, 2, Outcome::Fail, 13, 14),
            read(1, 15, 16, vec![1]),
            read(2, 15, 16, vec![]),
        ];
        let mut finals = HashMap::new();
        finals.insert(1, vec![Seen::Counter(1)]);
        let v = check_register(&ops, &finals);
        assert_eq!(v, Verdict::default());
    }
}
