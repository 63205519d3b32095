//! The storage engine's on-disk decoders (MANIFEST, commit-log records,
//! SSTable footer, index, properties, bloom filter, block frames and data
//! blocks). They are crate-private, so the input reaches them the way a
//! damaged disk does: the first byte picks a file of a valid engine (in the
//! in-memory `FaultFs`), the rest replaces its contents, and the engine is
//! opened and read in full. It may refuse to open or report corruption; it
//! must not panic, and any value it serves must be one that was written.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use ringkv_env::{ManualClock, SharedClock};
use ringkv_storage::{Compression, Engine, FaultFs, Fs, Options, SyncMode};

const KEYS: u64 = 64;

fn opts() -> Options {
    Options {
        memtable_bytes_max: 16 << 10,
        block_bytes: 256,
        block_cache_bytes: 64 << 10,
        sync: SyncMode::Always,
        compression: Compression::Lz4,
        ..Options::default()
    }
}

fn value(i: u64, round: u64) -> Vec<u8> {
    format!("value-{i}-{round}").into_bytes()
}

fn open(fs: &FaultFs) -> ringkv_storage::Result<Engine> {
    let clock: SharedClock = Arc::new(ManualClock::new(0));
    Engine::open_with(Path::new("/db"), opts(), Arc::new(fs.clone()), clock)
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, contents)) = data.split_first() else {
        return;
    };
    let fs = FaultFs::new(1);
    let e = open(&fs).expect("fresh engine");
    for i in 0..KEYS {
        e.put(format!("key{i:04}").as_bytes(), &value(i, 1), None)
            .expect("put");
    }
    e.flush().expect("flush");
    for i in (0..KEYS).step_by(2) {
        e.put(format!("key{i:04}").as_bytes(), &value(i, 2), None)
            .expect("put");
    }
    e.close().expect("close");

    let mut names = fs.list(Path::new("/db")).expect("list");
    names.sort();
    let names: Vec<PathBuf> = names
        .into_iter()
        .filter(|n| n == "MANIFEST" || n.ends_with(".log") || n.ends_with(".sst"))
        .map(|n| Path::new("/db").join(n))
        .collect();
    let path = &names[pick as usize % names.len()];
    fs.remove(path).expect("remove");
    let f = fs.create(path).expect("create");
    f.append(contents).expect("append");
    f.sync().expect("sync");
    fs.sync_dir(Path::new("/db")).expect("sync dir");

    let Ok(e) = open(&fs) else { return };
    for i in 0..KEYS {
        if let Ok(Some(v)) = e.get(format!("key{i:04}").as_bytes()) {
            let v = v.value.to_vec();
            assert!(v == value(i, 1) || v == value(i, 2), "served garbage");
        }
    }
    if let Ok(iter) = e.scan(..) {
        for r in iter.take(2 * KEYS as usize) {
            if r.is_err() {
                break;
            }
        }
    }
    let _ = e.close();
});
