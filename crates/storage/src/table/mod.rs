//! SSTables: immutable sorted files of key versions.
//!
//! Owns the table file format and nothing about levels or compaction policy.
//! The byte grammar is at the top of each encoder: the whole file in
//! `builder.rs`, data blocks in `block.rs`, frames (compression and checksum)
//! in `frame.rs`, the bloom filter in `bloom.rs`, and footer, index and meta
//! blocks in `format.rs`. `docs/storage-format.md` collects them.

pub(crate) mod block;
pub(crate) mod bloom;
pub(crate) mod builder;
pub(crate) mod format;
pub(crate) mod frame;
pub(crate) mod reader;

pub(crate) use builder::{BuildOptions, TableBuilder};
pub(crate) use reader::{Table, TableIter};
