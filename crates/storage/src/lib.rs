//! ringkv's node-local storage engine: a log-structured merge tree.
//!
//! This crate owns everything one node keeps on its disk and nothing else: it
//! knows nothing of the network, the ring or replication. Values are opaque
//! bytes (the cluster stores versioned sibling sets in them); the engine adds
//! optional TTLs, atomic batches, ordered scans and consistent snapshots.
//!
//! # Layout
//! - [`Engine`] (`engine/`): the API, the read path, the write path with
//!   group commit, background flush/compaction/fsync, recovery.
//! - `log.rs`: commit-log record format and replay (torn tails, corruption).
//! - `batch.rs`: [`WriteBatch`] and its encoding (the log record payload).
//! - `memtable.rs`: the concurrent sorted in-memory table.
//! - `table/`: the SSTable format: blocks, frames, bloom filter, index,
//!   footer; builder and reader.
//! - `cache.rs`: the byte-bounded block cache.
//! - `version.rs`, `manifest.rs`: the live table set and its durable record.
//! - `compaction.rs`: leveled compaction policy and merge rules.
//! - `iter.rs`: merging iterators and [`ScanIter`].
//! - [`fs`]: the file-system seam: [`RealFs`] and the fault-injecting
//!   [`FaultFs`].
//! - `options.rs`, `stats.rs`, `filter.rs`, `error.rs`: configuration,
//!   reporting, the compaction hook and errors.
//! - `coding.rs`, `util.rs`: bounds-checked decoding helpers, file names, the
//!   rate limiter.
//!
//! The on-disk formats are summarised in `docs/storage-format.md`; each is
//! specified next to its encoder.

mod batch;
mod cache;
mod coding;
mod compaction;
mod engine;
mod error;
mod filter;
pub mod fs;
mod iter;
mod log;
mod manifest;
mod memtable;
mod options;
mod stats;
mod table;
mod types;
mod util;
mod version;

pub use batch::WriteBatch;
pub use engine::{Checkpoint, Engine, Snapshot};
pub use error::{Error, Result};
pub use filter::{CompactionFilter, FilterDecision};
pub use fs::{CrashMode, FaultFs, Fs, RealFs};
pub use iter::ScanIter;
pub use options::{Compression, Options, SyncMode};
pub use stats::Stats;
pub use types::Entry;
