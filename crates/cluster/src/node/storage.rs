//! A node's storage engines, opened the same way everywhere: its data in
//! `<dir>/store` and its hints in `<dir>/hints`, each in an engine of its
//! own, so a flood of hints never competes with the data's compaction.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ringkv_env::SharedClock;
use ringkv_storage::{Engine, Fs, Options};

use crate::repair::hints::{EngineHints, HintConfig, HintStore};
use crate::store::engine::engine_error;
use crate::store::{EngineStore, StoreError};

/// Largest memtable and block cache of the hint engine, in bytes: hints are
/// written once and read once.
pub const HINT_ENGINE_MEMORY_BYTES_MAX: usize = 8 * 1024 * 1024;

/// Why a node's storage did not open.
#[derive(Debug, thiserror::Error)]
#[error("opening {what} in {}: {source}", dir.display())]
pub struct StorageError {
    what: &'static str,
    dir: PathBuf,
    #[source]
    source: StoreError,
}

/// A node's data and hint engines.
pub struct NodeStorage {
    pub store: EngineStore,
    pub hints: HintStore,
    engines: [Engine; 2],
}

impl NodeStorage {
    /// Opens both engines under `dir` on `fs`. `blocking_writes`: writes
    /// wait for an fsync (`sync = "always"`), so the node runs them off the
    /// executor.
    pub fn open(
        fs: Arc<dyn Fs>,
        dir: &Path,
        options: Options,
        clock: SharedClock,
        tombstone_grace_ms: u64,
        hint_config: HintConfig,
        blocking_writes: bool,
    ) -> Result<Self, StorageError> {
        let failed = |what: &'static str, sub: &str| {
            let dir = dir.join(sub);
            move |source: StoreError| StorageError { what, dir, source }
        };
        let hint_options = Options {
            memtable_bytes_max: options.memtable_bytes_max.min(HINT_ENGINE_MEMORY_BYTES_MAX),
            block_cache_bytes: options
                .block_cache_bytes
                .min(HINT_ENGINE_MEMORY_BYTES_MAX as u64),
            ..options.clone()
        };
        let engine = Engine::open_with(&dir.join("store"), options, fs.clone(), clock.clone())
            .map_err(engine_error)
            .map_err(failed("storage", "store"))?;
        let hint_engine = Engine::open_with(&dir.join("hints"), hint_options, fs, clock.clone())
            .map_err(engine_error)
            .map_err(failed("the hint store", "hints"))?;
        let hints = HintStore::open(EngineHints::new(hint_engine.clone()), hint_config)
            .map_err(failed("the hint store", "hints"))?;
        let store = EngineStore::new(engine.clone(), clock, tombstone_grace_ms, blocking_writes);
        Ok(Self {
            store,
            hints,
            engines: [engine, hint_engine],
        })
    }

    /// Both engines (for a simulation's own log syncs).
    pub fn engines(&self) -> [Engine; 2] {
        self.engines.clone()
    }

    /// A handle that closes both engines once the node is done with them.
    pub fn closer(&self) -> StorageCloser {
        StorageCloser {
            engines: self.engines.clone(),
        }
    }
}

/// Closes a node's engines: syncs their logs and stops their background
/// work.
pub struct StorageCloser {
    engines: [Engine; 2],
}

impl StorageCloser {
    /// Closes both engines; the first failure is returned, after trying
    /// both.
    pub fn close(&self) -> Result<(), StoreError> {
        let [data, hints] = &self.engines;
        let hints = hints.close().map_err(engine_error);
        data.close().map_err(engine_error)?;
        hints
    }
}
