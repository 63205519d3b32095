//! Leveled compaction: choosing what to compact and merging it.
//!
//! Owns the policy (which level is most over its target, which file goes
//! next) and the merge rules (which versions survive). Installing the result
//! in a new version and the manifest is the engine's job.
//!
//! Why leveled and not size-tiered: a node serves a read-modify-write on every
//! client write, so point reads dominate; leveled compaction bounds a lookup
//! to L0 plus one table per level (usually one block read thanks to in-memory
//! bloom filters and indexes) and keeps space amplification near 1.1, at the
//! cost of more write amplification than size-tiered. Size-tiered would
//! write less but leave several overlapping runs per key range and up to 2x
//! space during big merges.
//!
//! Merge rules, for each user key (only the newest version is ever kept):
//! - an engine tombstone is dropped when no level below the output level may
//!   hold the key (the output is the bottom-most level for that key);
//!   otherwise it is kept so that it keeps hiding older versions below;
//! - a put whose TTL has passed, or that the [`CompactionFilter`] removes, is
//!   handled like a tombstone: dropped at the bottom, replaced by an engine
//!   tombstone elsewhere, so an older version never resurfaces;
//! - every older version of the key is dropped (snapshots pin whole table
//!   sets rather than versions, so none is needed).

use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;

use crate::cache::BlockCache;
use crate::error::{Error, Result};
use crate::filter::{CompactionFilter, FilterDecision};
use crate::fs::Fs;
use crate::iter::{LevelSource, MergeIter, NewestIter, Source};
use crate::options::Options;
use crate::stats::Counters;
use crate::table::{BuildOptions, Table, TableBuilder};
use crate::types::{Item, Op};
use crate::util::{RateLimiter, table_path};
use crate::version::Version;

/// An output file is cut early once it overlaps this many target-file sizes of
/// the level below its output (so one future compaction stays bounded).
const GRANDPARENT_OVERLAP_FACTOR: u64 = 10;

/// One planned compaction.
#[derive(Debug, Clone)]
pub(crate) struct Job {
    pub level: usize,
    pub output_level: usize,
    /// Input tables of `level` (L0: newest first).
    pub inputs: Vec<Arc<Table>>,
    /// Overlapping tables of `output_level` (empty when rewriting in place).
    pub next_inputs: Vec<Arc<Table>>,
    /// Tables of `output_level + 1` overlapping the inputs.
    pub grandparents: Vec<Arc<Table>>,
    /// The version the job was planned against.
    pub base: Arc<Version>,
    /// Move the single input down a level without rewriting it.
    pub trivial_move: bool,
}

impl Job {
    pub fn input_numbers(&self) -> Vec<u64> {
        self.inputs
            .iter()
            .chain(&self.next_inputs)
            .map(|t| t.number())
            .collect()
    }

    pub fn input_bytes(&self) -> u64 {
        self.inputs
            .iter()
            .chain(&self.next_inputs)
            .map(|t| t.file_bytes())
            .sum()
    }

    /// Plans merging `inputs` of `level` with what overlaps them in
    /// `output_level`.
    pub fn new(
        base: Arc<Version>,
        level: usize,
        output_level: usize,
        inputs: Vec<Arc<Table>>,
    ) -> Job {
        let (smallest, largest) = key_range(&inputs);
        let next_inputs = if output_level == level {
            Vec::new()
        } else {
            base.overlapping(output_level, &smallest, &largest)
        };
        let grandparents = base.overlapping(output_level + 1, &smallest, &largest);
        Job {
            level,
            output_level,
            inputs,
            next_inputs,
            grandparents,
            base,
            trivial_move: false,
        }
    }
}

/// The smallest and largest key over a set of tables.
pub(crate) fn key_range(tables: &[Arc<Table>]) -> (Bytes, Bytes) {
    let smallest = tables
        .iter()
        .map(|t| t.props().smallest.clone())
        .min()
        .unwrap_or_default();
    let largest = tables
        .iter()
        .map(|t| t.props().largest.clone())
        .max()
        .unwrap_or_default();
    (smallest, largest)
}

/// Target bytes of `level` (1+).
pub(crate) fn level_target_bytes(opts: &Options, level: usize) -> u64 {
    let mut t = opts.level_base_bytes;
    for _ in 1..level {
        t = t.saturating_mul(opts.level_size_multiplier);
    }
    t
}

/// How far each level is over its target (>= 1.0 means "compact me").
pub(crate) fn level_scores(v: &Version, opts: &Options) -> Vec<f64> {
    let last = v.levels.len() - 1;
    (0..v.levels.len())
        .map(|l| {
            if l == 0 {
                v.levels[0].len() as f64 / opts.l0_compaction_trigger_files as f64
            } else if l == last {
                0.0
            } else {
                v.level_bytes(l) as f64 / level_target_bytes(opts, l) as f64
            }
        })
        .collect()
}

/// Compaction debt: bytes that must be rewritten to bring every level under
/// its target.
pub(crate) fn pending_bytes(v: &Version, opts: &Options) -> u64 {
    let mut debt = 0;
    if v.levels[0].len() >= opts.l0_compaction_trigger_files {
        debt += v.level_bytes(0);
    }
    for l in 1..v.levels.len() - 1 {
        debt += v.level_bytes(l).saturating_sub(level_target_bytes(opts, l));
    }
    debt
}

/// Picks the most urgent compaction whose levels are not `busy`. `pointers`
/// remembers, per level, where the last compaction of that level ended, so
/// files are taken round-robin through the key space.
pub(crate) fn pick(
    v: &Arc<Version>,
    opts: &Options,
    busy: &[bool],
    pointers: &mut [Bytes],
) -> Option<Job> {
    let scores = level_scores(v, opts);
    let mut order: Vec<usize> = (0..scores.len()).filter(|&l| scores[l] >= 1.0).collect();
    order.sort_by(|a, b| scores[*b].total_cmp(&scores[*a]));
    for level in order {
        if busy[level] || busy[level + 1] {
            continue;
        }
        if level == 0 {
            return Some(Job::new(v.clone(), 0, 1, v.levels[0].clone()));
        }
        let files = &v.levels[level];
        let ptr = &pointers[level];
        let f = files
            .iter()
            .find(|t| ptr.is_empty() || t.smallest() > ptr.as_ref())
            .or_else(|| files.first())?
            .clone();
        pointers[level] = f.props().largest.clone();
        let mut job = Job::new(v.clone(), level, level + 1, vec![f]);
        let gp_bytes: u64 = job.grandparents.iter().map(|t| t.file_bytes()).sum();
        job.trivial_move = job.next_inputs.is_empty()
            && gp_bytes <= GRANDPARENT_OVERLAP_FACTOR * opts.table_target_bytes;
        return Some(job);
    }
    None
}

/// What a compaction needs from the engine.
pub(crate) struct RunCtx<'a> {
    pub fs: &'a Arc<dyn Fs>,
    pub dir: &'a Path,
    pub build: &'a BuildOptions,
    pub table_target_bytes: u64,
    pub cache: &'a Arc<BlockCache>,
    pub counters: &'a Arc<Counters>,
    pub limiter: Option<Arc<RateLimiter>>,
    pub filter: Option<Arc<dyn CompactionFilter>>,
    pub now_ms: u64,
    pub alloc_number: &'a (dyn Fn() -> u64 + Sync),
    pub shutdown: &'a AtomicBool,
}

/// Bytes of output between checks for shutdown.
const SHUTDOWN_CHECK_ITEMS: u64 = 1024;

struct Outputs<'a, 'b> {
    ctx: &'a RunCtx<'b>,
    current: Option<(TableBuilder, u64)>,
    done: Vec<Arc<Table>>,
    written: Vec<u64>,
}

impl Outputs<'_, '_> {
    fn add(&mut self, item: &Item) -> Result<()> {
        if self.current.is_none() {
            let number = (self.ctx.alloc_number)();
            let path = table_path(self.ctx.dir, number);
            let file = self
                .ctx
                .fs
                .create(&path)
                .map_err(|e| Error::io("create table", &path, e))?;
            self.written.push(number);
            self.current = Some((
                TableBuilder::new(file, path, self.ctx.build.clone(), self.ctx.limiter.clone()),
                number,
            ));
        }
        if let Some((b, _)) = self.current.as_mut() {
            b.add(item)?;
        }
        Ok(())
    }

    fn current_bytes(&self) -> u64 {
        self.current
            .as_ref()
            .map(|(b, _)| b.estimated_bytes())
            .unwrap_or(0)
    }

    fn finish_current(&mut self) -> Result<()> {
        if let Some((b, number)) = self.current.take() {
            let (_props, bytes) = b.finish()?;
            Counters::add(&self.ctx.counters.compaction_bytes_written, bytes);
            let path = table_path(self.ctx.dir, number);
            let t = Table::open(
                self.ctx.fs.clone(),
                path,
                number,
                self.ctx.cache.clone(),
                self.ctx.counters.clone(),
            )?;
            self.done.push(Arc::new(t));
        }
        Ok(())
    }

    /// Removes every file this run created (on failure).
    fn abandon(&mut self) {
        self.current = None;
        self.done.clear();
        for n in &self.written {
            let _ = self.ctx.fs.remove(&table_path(self.ctx.dir, *n));
        }
    }
}

/// Merges the job's inputs into new tables of `output_level` and returns them
/// (opened). On error every output file is removed.
pub(crate) fn run(job: &Job, ctx: &RunCtx<'_>) -> Result<Vec<Arc<Table>>> {
    let mut out = Outputs {
        ctx,
        current: None,
        done: Vec::new(),
        written: Vec::new(),
    };
    match merge_into(job, ctx, &mut out) {
        Ok(()) => Ok(out.done),
        Err(e) => {
            out.abandon();
            Err(e)
        }
    }
}

fn merge_into(job: &Job, ctx: &RunCtx<'_>, out: &mut Outputs<'_, '_>) -> Result<()> {
    let mut sources: Vec<Box<dyn Source>> = Vec::new();
    if job.level == 0 {
        for t in &job.inputs {
            sources.push(Box::new(t.iter(Bound::Unbounded, Bound::Unbounded, true)));
        }
    } else {
        sources.push(Box::new(LevelSource::new(
            job.inputs.clone(),
            Bound::Unbounded,
            Bound::Unbounded,
            true,
        )));
    }
    if !job.next_inputs.is_empty() {
        sources.push(Box::new(LevelSource::new(
            job.next_inputs.clone(),
            Bound::Unbounded,
            Bound::Unbounded,
            true,
        )));
    }
    let mut items = NewestIter::new(MergeIter::new(sources), u64::MAX);
    let gp_limit = GRANDPARENT_OVERLAP_FACTOR * ctx.table_target_bytes;
    let (mut gp_idx, mut gp_overlap, mut seen_key) = (0usize, 0u64, false);
    let mut n = 0u64;
    while let Some(item) = items.next_item()? {
        n += 1;
        if n.is_multiple_of(SHUTDOWN_CHECK_ITEMS) && ctx.shutdown.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let Some(item) = decide(job, ctx, item) else {
            continue;
        };
        // Cut the output before this key if the current file already overlaps
        // too much of the level below.
        while gp_idx < job.grandparents.len()
            && item.key.as_ref() > job.grandparents[gp_idx].largest()
        {
            if seen_key {
                gp_overlap += job.grandparents[gp_idx].file_bytes();
            }
            gp_idx += 1;
        }
        seen_key = true;
        if gp_overlap > gp_limit && out.current.is_some() {
            out.finish_current()?;
            gp_overlap = 0;
        }
        out.add(&item)?;
        if out.current_bytes() >= ctx.table_target_bytes {
            out.finish_current()?;
        }
    }
    out.finish_current()
}

/// Applies the merge rules to the newest version of one key.
fn decide(job: &Job, ctx: &RunCtx<'_>, item: Item) -> Option<Item> {
    let (gone, why) = match &item.op {
        Op::Delete => (true, &ctx.counters.tombstones_dropped),
        Op::Put(e) if e.is_expired(ctx.now_ms) => (true, &ctx.counters.expired_dropped),
        Op::Put(e) => match ctx
            .filter
            .as_ref()
            .map(|f| f.decide(&item.key, &e.value, e.expires_at_ms))
        {
            Some(FilterDecision::Remove) => (true, &ctx.counters.filter_removed),
            Some(FilterDecision::Replace(value)) => {
                Counters::add(&ctx.counters.filter_replaced, 1);
                let expires_at_ms = e.expires_at_ms;
                return Some(Item {
                    op: Op::Put(crate::types::Entry {
                        value,
                        expires_at_ms,
                    }),
                    ..item
                });
            }
            _ => (false, &ctx.counters.filter_removed),
        },
    };
    if !gone {
        return Some(item);
    }
    if job.base.key_may_exist_below(job.output_level, &item.key) {
        // Keep (or write) a tombstone so older versions below stay hidden.
        return Some(Item {
            op: Op::Delete,
            ..item
        });
    }
    Counters::add(why, 1);
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::FaultFs;
    use crate::version::Edit;
    use crate::version::tests::table;

    fn opts() -> Options {
        Options {
            l0_compaction_trigger_files: 2,
            l0_slowdown_files: 4,
            l0_stop_files: 8,
            level_base_bytes: 10_000,
            level_size_multiplier: 10,
            table_target_bytes: 1_000,
            levels_max: 4,
            ..Options::default()
        }
    }

    #[test]
    fn level_targets_grow_by_the_multiplier() {
        let o = opts();
        assert_eq!(level_target_bytes(&o, 1), 10_000);
        assert_eq!(level_target_bytes(&o, 3), 1_000_000);
    }

    #[test]
    fn l0_over_its_trigger_is_compacted_with_overlapping_l1() {
        let fs = FaultFs::new(1);
        let v = Arc::new(
            Version {
                levels: vec![Vec::new(); 4],
            }
            .apply(&Edit {
                removed: vec![],
                added: vec![
                    (0, table(&fs, 1, &["b", "d"], 10, 0)),
                    (0, table(&fs, 2, &["c", "e"], 20, 0)),
                    (1, table(&fs, 3, &["a"], 1, 0)),
                    (1, table(&fs, 4, &["d", "f"], 1, 0)),
                    (1, table(&fs, 5, &["x"], 1, 0)),
                ],
            }),
        );
        let mut ptrs = vec![Bytes::new(); 4];
        let job = pick(&v, &opts(), &[false; 4], &mut ptrs).expect("L0 is over its trigger");
        assert_eq!((job.level, job.output_level), (0, 1));
        assert_eq!(job.inputs.len(), 2);
        assert_eq!(
            job.next_inputs
                .iter()
                .map(|t| t.number())
                .collect::<Vec<_>>(),
            vec![4]
        );
        // Busy levels are skipped.
        assert!(pick(&v, &opts(), &[false, true, false, false], &mut ptrs).is_none());
    }

    #[test]
    fn an_oversized_level_moves_files_down_round_robin_and_trivially_when_possible() {
        let fs = FaultFs::new(2);
        let big = 6_000;
        let v = Arc::new(
            Version {
                levels: vec![Vec::new(); 4],
            }
            .apply(&Edit {
                removed: vec![],
                added: vec![
                    (1, table(&fs, 1, &["a", "b"], 1, big)),
                    (1, table(&fs, 2, &["c", "d"], 1, big)),
                    (1, table(&fs, 3, &["e", "f"], 1, big)),
                    (2, table(&fs, 4, &["c"], 1, 0)),
                ],
            }),
        );
        let scores = level_scores(&v, &opts());
        assert!(scores[1] > 1.0, "{scores:?}");
        assert!(pending_bytes(&v, &opts()) > 0);
        let mut ptrs = vec![Bytes::new(); 4];
        let j1 = pick(&v, &opts(), &[false; 4], &mut ptrs).unwrap();
        assert_eq!(j1.inputs[0].number(), 1);
        assert!(j1.trivial_move, "nothing below overlaps a..b");
        let j2 = pick(&v, &opts(), &[false; 4], &mut ptrs).unwrap();
        assert_eq!(j2.inputs[0].number(), 2);
        assert!(!j2.trivial_move, "c..d overlaps L2");
        assert_eq!(j2.next_inputs.len(), 1);
        let j3 = pick(&v, &opts(), &[false; 4], &mut ptrs).unwrap();
        assert_eq!(j3.inputs[0].number(), 3);
        let j4 = pick(&v, &opts(), &[false; 4], &mut ptrs).unwrap();
        assert_eq!(j4.inputs[0].number(), 1, "wraps around");
    }
}
