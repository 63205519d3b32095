//! [`super::place`] over small integers, for building every vnode's list
//! of a ring at once: nodes, data centers and racks are numbered once per
//! ring, and the scratch the walk needs (nodes seen, racks used, nodes
//! skipped) is kept between vnodes, so a list costs no hashing of strings
//! and no allocation. It picks exactly the lists [`super::place`] picks,
//! with the same count of steps (both are property-tested against each
//! other through [`super::Placement`]).

use std::collections::BTreeMap;

use super::{DcShape, Replication, RingNode};
use crate::det::HashMap;

/// A node's data center when it holds no replica (unknown, or a data
/// center the replication leaves out).
const NO_DC: u32 = u32::MAX;

/// The walk's scratch for one data center that holds replicas.
#[derive(Default)]
struct Dc {
    /// Replicas wanted, and nodes owning a token, in it.
    want: usize,
    owners: usize,
    /// Its racks.
    racks: usize,
    chosen: usize,
    seen: usize,
    /// Racks used (numbers within the data center), at most `want`.
    racks_used: Vec<u32>,
    /// Nodes passed over for a rack already used: (walk position, node).
    skipped: Vec<(usize, u32)>,
}

/// Places the lists of one ring (see the module docs).
pub(super) struct DensePlacer {
    /// Per node number: its id, data center number (or [`NO_DC`]), rack
    /// number within its data center.
    ids: Vec<u64>,
    dc_of: Vec<u32>,
    rack_of: Vec<u32>,
    dcs: Vec<Dc>,
    /// Data centers open at the start of every walk.
    open_at_start: usize,
    /// `seen[n] == stamp`: node `n` seen in the current walk.
    seen: Vec<u32>,
    stamp: u32,
    chosen: Vec<(usize, u32)>,
}

impl DensePlacer {
    /// Numbers the nodes of a ring: `nodes` as the ring holds them, and
    /// the owners of its tokens (nodes the ring does not hold are numbered
    /// too, as unknown). Returns the placer and the owners by number.
    pub(super) fn new(
        nodes: &BTreeMap<u64, RingNode>,
        owners: &[u64],
        replication: &Replication,
        shape: &DcShape<'_>,
    ) -> (Self, Vec<u32>) {
        let mut dc_number: HashMap<&str, u32> = HashMap::default();
        let mut dcs = Vec::new();
        for (dc, &want) in &replication.per_dc {
            if want == 0 {
                continue;
            }
            dc_number.insert(dc.as_str(), dcs.len() as u32);
            dcs.push(Dc {
                want,
                owners: shape.owners.get(dc.as_str()).copied().unwrap_or(0),
                racks: shape.racks.get(dc.as_str()).copied().unwrap_or(0),
                ..Dc::default()
            });
        }
        let open_at_start = dcs.iter().filter(|d| d.owners > 0).count();
        let mut number: HashMap<u64, u32> = HashMap::default();
        let mut rack_number: HashMap<(u32, &str), u32> = HashMap::default();
        let mut racks_in: Vec<u32> = vec![0; dcs.len()];
        let (mut ids, mut dc_of, mut rack_of) = (Vec::new(), Vec::new(), Vec::new());
        for n in nodes.values() {
            let dc = dc_number.get(n.dc.as_str()).copied().unwrap_or(NO_DC);
            let rack = if dc == NO_DC {
                0
            } else {
                *rack_number.entry((dc, n.rack.as_str())).or_insert_with(|| {
                    racks_in[dc as usize] += 1;
                    racks_in[dc as usize] - 1
                })
            };
            number.insert(n.id, ids.len() as u32);
            ids.push(n.id);
            dc_of.push(dc);
            rack_of.push(rack);
        }
        let by_number = owners
            .iter()
            .map(|id| {
                *number.entry(*id).or_insert_with(|| {
                    ids.push(*id);
                    dc_of.push(NO_DC);
                    rack_of.push(0);
                    ids.len() as u32 - 1
                })
            })
            .collect();
        let seen = vec![0; ids.len()];
        let placer = Self {
            ids,
            dc_of,
            rack_of,
            dcs,
            open_at_start,
            seen,
            stamp: 0,
            chosen: Vec::new(),
        };
        (placer, by_number)
    }

    /// Appends to `out` the list of the walk over `walk` (owners by
    /// number, from the vnode's token on), as [`super::place`] would;
    /// `steps` counts the walk's steps.
    pub(super) fn place_into(
        &mut self,
        walk: impl Iterator<Item = u32>,
        out: &mut Vec<u64>,
        steps: &mut usize,
    ) {
        self.stamp = self.stamp.wrapping_add(1);
        if self.stamp == 0 {
            self.seen.fill(0);
            self.stamp = 1;
        }
        for dc in &mut self.dcs {
            dc.chosen = 0;
            dc.seen = 0;
            dc.racks_used.clear();
            dc.skipped.clear();
        }
        self.chosen.clear();
        let mut open = self.open_at_start;
        for (pos, n) in walk.enumerate() {
            if open == 0 {
                break;
            }
            *steps += 1;
            let i = n as usize;
            if self.seen[i] == self.stamp {
                continue;
            }
            self.seen[i] = self.stamp;
            let dc_no = self.dc_of[i];
            if dc_no == NO_DC {
                continue;
            }
            let dc = &mut self.dcs[dc_no as usize];
            let was_done = dc.chosen >= dc.want || dc.seen >= dc.owners;
            dc.seen += 1;
            if dc.chosen < dc.want {
                let rack = self.rack_of[i];
                let all_racks_used = dc.racks_used.len() >= dc.racks;
                if dc.racks_used.contains(&rack) && !all_racks_used {
                    dc.skipped.push((pos, n));
                } else {
                    if !dc.racks_used.contains(&rack) {
                        dc.racks_used.push(rack);
                    }
                    self.chosen.push((pos, n));
                    dc.chosen += 1;
                }
            }
            if !was_done && (dc.chosen >= dc.want || dc.seen >= dc.owners) {
                open -= 1;
            }
        }
        // Where a data center has fewer racks than replicas, the skipped
        // nodes fill the remaining places in ring order.
        for dc in &self.dcs {
            let missing = dc.want.saturating_sub(dc.chosen);
            self.chosen.extend(dc.skipped.iter().take(missing).copied());
        }
        self.chosen.sort_unstable_by_key(|&(pos, _)| pos);
        out.extend(self.chosen.iter().map(|&(_, n)| self.ids[n as usize]));
    }
}
