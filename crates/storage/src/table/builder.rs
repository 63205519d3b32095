//! Writes an SSTable from items in key order.
//!
//! ## File format (do not change: on disk)
//! ```text
//! sstable := data_frame* filter_frame meta_frame index_frame footer
//! ```
//! - `data_frame`: a data block (block.rs) framed with compression and a
//!   CRC32C (frame.rs). Blocks are cut once they reach `block_bytes`
//!   uncompressed (about 4 KiB by default); one entry never spans blocks.
//! - `filter_frame`: the bloom filter over every key of the table (bloom.rs),
//!   framed uncompressed.
//! - `meta_frame`: table properties (format.rs): counts, sequence range,
//!   smallest and largest key.
//! - `index_frame`: one entry per data block, keyed by the block's last key,
//!   with the block's offset and frame length (format.rs).
//! - `footer`: the handles of the index, filter and meta frames, the format
//!   version, a checksum and the magic number `"ringkvST"` (format.rs).
//!
//! A table holds at most one version of each user key, in strictly increasing
//! key order; its file is fsynced before it is added to the manifest.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;

use super::block::BlockBuilder;
use super::format::{Footer, Handle, IndexEntry, TableProps, encode_index};
use super::{bloom, frame};
use crate::error::{Error, Result};
use crate::fs::WritableFile;
use crate::options::Compression;
use crate::types::{Item, ItemRef, Kind};
use crate::util::RateLimiter;

/// Output is handed to the file system in chunks of this size.
const WRITE_BUFFER_BYTES_MAX: usize = 256 * 1024;

/// The table-shaping options.
#[derive(Debug, Clone)]
pub(crate) struct BuildOptions {
    pub block_bytes: usize,
    pub restart_interval: usize,
    pub compression: Compression,
    pub zstd_level: i32,
    pub bloom_bits_per_key: u32,
}

/// Builds one table file.
pub(crate) struct TableBuilder {
    file: Arc<dyn WritableFile>,
    path: PathBuf,
    opts: BuildOptions,
    limiter: Option<Arc<RateLimiter>>,
    out: Vec<u8>,
    offset: u64,
    block: BlockBuilder,
    raw: Vec<u8>,
    last_key: Vec<u8>,
    index: Vec<IndexEntry>,
    hashes: Vec<u64>,
    props: TableProps,
}

impl TableBuilder {
    pub fn new(
        file: Arc<dyn WritableFile>,
        path: PathBuf,
        opts: BuildOptions,
        limiter: Option<Arc<RateLimiter>>,
    ) -> Self {
        TableBuilder {
            file,
            path,
            block: BlockBuilder::new(opts.restart_interval),
            opts,
            limiter,
            out: Vec::with_capacity(WRITE_BUFFER_BYTES_MAX + 8192),
            offset: 0,
            raw: Vec::new(),
            last_key: Vec::new(),
            index: Vec::new(),
            hashes: Vec::new(),
            props: TableProps {
                min_seq: u64::MAX,
                ..TableProps::default()
            },
        }
    }

    /// Bytes the file will have (roughly) if finished now.
    pub fn estimated_bytes(&self) -> u64 {
        self.offset + self.out.len() as u64 + self.block.estimated_bytes() as u64
    }

    /// Adds an item; keys must strictly increase.
    pub fn add(&mut self, item: &Item) -> Result<()> {
        self.add_ref(&item.as_item_ref())
    }

    /// Adds a borrowed item; keys must strictly increase.
    pub fn add_ref(&mut self, item: &ItemRef<'_>) -> Result<()> {
        if self.props.entries > 0 && item.key <= self.last_key.as_slice() {
            return Err(Error::InvalidArgument(format!(
                "table keys out of order writing {}",
                self.path.display()
            )));
        }
        if self.props.entries == 0 {
            self.props.smallest = Bytes::copy_from_slice(item.key);
        }
        self.last_key.clear();
        self.last_key.extend_from_slice(item.key);
        self.props.entries += 1;
        self.props.raw_key_bytes += item.key.len() as u64;
        if item.kind == Kind::Delete {
            self.props.tombstones += 1;
        } else {
            self.props.raw_value_bytes += item.value.len() as u64;
        }
        self.props.min_seq = self.props.min_seq.min(item.seq);
        self.props.max_seq = self.props.max_seq.max(item.seq);
        self.hashes.push(bloom::key_hash(item.key));
        self.block.add_ref(item);
        if self.block.estimated_bytes() >= self.opts.block_bytes {
            self.finish_block()?;
        }
        Ok(())
    }

    fn finish_block(&mut self) -> Result<()> {
        if self.block.is_empty() {
            return Ok(());
        }
        let last_key = Bytes::copy_from_slice(self.block.last_key());
        self.raw = self.block.finish();
        let start = self.out.len();
        frame::encode(
            &self.raw,
            self.opts.compression,
            self.opts.zstd_level,
            &mut self.out,
        );
        let len = (self.out.len() - start) as u32;
        self.index.push(IndexEntry {
            last_key,
            handle: Handle {
                offset: self.offset + start as u64,
                len,
            },
        });
        self.props.data_blocks += 1;
        if self.out.len() >= WRITE_BUFFER_BYTES_MAX {
            self.write_out()?;
        }
        Ok(())
    }

    fn write_out(&mut self) -> Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        if let Some(l) = &self.limiter {
            l.acquire(self.out.len() as u64);
        }
        self.file
            .append(&self.out)
            .map_err(|e| Error::io("write table", &self.path, e))?;
        self.offset += self.out.len() as u64;
        self.out.clear();
        Ok(())
    }

    /// Appends a framed block at the current position and returns its handle.
    fn add_frame(&mut self, raw: &[u8], compression: Compression) -> Handle {
        let start = self.out.len();
        frame::encode(raw, compression, self.opts.zstd_level, &mut self.out);
        Handle {
            offset: self.offset + start as u64,
            len: (self.out.len() - start) as u32,
        }
    }

    /// Writes filter, meta, index and footer, fsyncs, and returns the table's
    /// properties and file size.
    pub fn finish(mut self) -> Result<(TableProps, u64)> {
        self.finish_block()?;
        let filter_raw = bloom::build(&self.hashes, self.opts.bloom_bits_per_key);
        let filter = self.add_frame(&filter_raw, Compression::None);
        if self.props.entries == 0 {
            self.props.min_seq = 0;
        }
        self.props.largest = Bytes::copy_from_slice(&self.last_key);
        let mut meta_raw = Vec::new();
        self.props.encode(&mut meta_raw);
        let meta = self.add_frame(&meta_raw, Compression::None);
        let mut index_raw = Vec::new();
        encode_index(&self.index, &mut index_raw);
        let index = self.add_frame(&index_raw, self.opts.compression);
        Footer {
            index,
            filter,
            meta,
        }
        .encode(&mut self.out);
        self.write_out()?;
        self.file
            .sync()
            .map_err(|e| Error::io("fsync table", &self.path, e))?;
        Ok((self.props, self.offset))
    }
}
