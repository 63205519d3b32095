//! Helpers shared by the storage integration tests.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ringkv_env::{ManualClock, SharedClock};
use ringkv_storage::{Compression, Engine, FaultFs, Fs, Options, SyncMode};

/// Options that make every mechanism (rotation, flush, compaction, several
/// levels) happen with little data.
pub fn small_opts() -> Options {
    Options {
        memtable_bytes_max: 16 << 10,
        block_bytes: 512,
        block_cache_bytes: 64 << 10,
        level_base_bytes: 64 << 10,
        table_target_bytes: 32 << 10,
        l0_compaction_trigger_files: 2,
        sync: SyncMode::Always,
        compression: Compression::Lz4,
        ..Options::default()
    }
}

pub fn dir() -> PathBuf {
    PathBuf::from("/db")
}

pub fn fault_fs(seed: u64) -> FaultFs {
    FaultFs::new(seed)
}

pub fn clock(at_ms: u64) -> Arc<ManualClock> {
    Arc::new(ManualClock::new(at_ms))
}

pub fn open(
    fs: &FaultFs,
    opts: Options,
    clock: &Arc<ManualClock>,
) -> ringkv_storage::Result<Engine> {
    let fs: Arc<dyn Fs> = Arc::new(fs.clone());
    let clock: SharedClock = clock.clone();
    Engine::open_with(&dir(), opts, fs, clock)
}

pub fn open_real(path: &Path, opts: Options) -> Engine {
    Engine::open(path, opts).unwrap()
}

pub fn key(i: u64) -> Vec<u8> {
    format!("key{i:08}").into_bytes()
}

pub fn value(i: u64, round: u64) -> Vec<u8> {
    format!("value-{i}-{round}-{}", "x".repeat((i % 50) as usize)).into_bytes()
}

pub fn get_value(e: &Engine, k: &[u8]) -> Option<Vec<u8>> {
    e.get(k).unwrap().map(|x| x.value.to_vec())
}

pub fn scan_all(e: &Engine) -> Vec<(Vec<u8>, Vec<u8>)> {
    e.scan(..)
        .unwrap()
        .map(|r| {
            let (k, v) = r.unwrap();
            (k.to_vec(), v.value.to_vec())
        })
        .collect()
}
