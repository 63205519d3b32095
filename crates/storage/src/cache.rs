//! The block cache: decoded data blocks shared by all tables, bounded by a
//! byte budget (quick_cache, weighted by block size). No background threads
//! and no clock, so simulation stays deterministic.

use std::sync::Arc;

use quick_cache::Weighter;
use quick_cache::sync::Cache;

use crate::table::block::Block;

/// Per-entry bytes charged on top of the block itself.
const ENTRY_OVERHEAD_BYTES: u64 = 64;

#[derive(Debug, Clone, Copy)]
struct BlockWeighter;

impl Weighter<(u64, u64), Arc<Block>> for BlockWeighter {
    fn weight(&self, _key: &(u64, u64), val: &Arc<Block>) -> u64 {
        val.bytes() as u64 + ENTRY_OVERHEAD_BYTES
    }
}

/// Decoded blocks keyed by (table number, block offset).
pub(crate) struct BlockCache {
    cache: Cache<(u64, u64), Arc<Block>, BlockWeighter>,
    capacity_bytes: u64,
}

impl std::fmt::Debug for BlockCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockCache")
            .field("capacity_bytes", &self.capacity_bytes)
            .field("weight", &self.cache.weight())
            .finish()
    }
}

impl BlockCache {
    /// A cache of at most `capacity_bytes` (0 disables caching).
    pub fn new(capacity_bytes: u64) -> Self {
        let items = (capacity_bytes / 4096).max(16) as usize;
        BlockCache {
            cache: Cache::with_weighter(items, capacity_bytes.max(1), BlockWeighter),
            capacity_bytes,
        }
    }

    pub fn get(&self, table: u64, offset: u64) -> Option<Arc<Block>> {
        if self.capacity_bytes == 0 {
            return None;
        }
        self.cache.get(&(table, offset))
    }

    pub fn insert(&self, table: u64, offset: u64, block: Arc<Block>) {
        if self.capacity_bytes > 0 {
            self.cache.insert((table, offset), block);
        }
    }

    /// Bytes currently held.
    pub fn weight_bytes(&self) -> u64 {
        self.cache.weight()
    }

    pub fn capacity_bytes(&self) -> u64 {
        self.capacity_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    /// An empty block (4 bytes: a zero restart count).
    fn block() -> Arc<Block> {
        Arc::new(Block::parse(Bytes::from_static(&[0, 0, 0, 0])).unwrap())
    }

    #[test]
    fn the_byte_budget_bounds_what_is_kept() {
        let c = BlockCache::new(64 * 100);
        for i in 0..1_000 {
            c.insert(1, i, block());
        }
        // Each entry weighs 68 bytes: at most ~94 fit in 6400.
        assert!(c.weight_bytes() <= 64 * 100, "{}", c.weight_bytes());
        let kept = (0..1_000).filter(|&i| c.get(1, i).is_some()).count();
        assert!(kept > 10 && kept <= 100, "{kept}");
        let off = BlockCache::new(0);
        off.insert(1, 1, block());
        assert!(off.get(1, 1).is_none());
    }
}
