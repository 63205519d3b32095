//! Every on-disk decoder, reached the only way input reaches it: through
//! `Engine::open` on a directory whose files are damaged or replaced by
//! arbitrary bytes. The MANIFEST, the commit log and the SSTables (footer,
//! index, properties, bloom filter, data blocks, frames) all must answer an
//! error or open; nothing may panic, and a value that is served must be one
//! that was written.
//!
//! The decoders are crate-private, so this test uses only the public API; the
//! `fuzz/` targets drive the same path with coverage guidance.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;

use common::*;
use proptest::prelude::*;
use ringkv_storage::{FaultFs, Fs};

const KEYS: u64 = 300;

/// A valid engine: one round of values in tables, a second round of half
/// the keys left in the commit log only.
fn valid_fs(seed: u64) -> FaultFs {
    let fs = fault_fs(seed);
    let c = clock(0);
    let e = open(&fs, small_opts(), &c).unwrap();
    for i in 0..KEYS {
        e.put(&key(i), &value(i, 1), None).unwrap();
    }
    e.flush().unwrap();
    e.wait_idle().unwrap();
    for i in (0..KEYS).step_by(2) {
        e.put(&key(i), &value(i, 2), None).unwrap();
    }
    e.close().unwrap();
    fs
}

fn files(fs: &FaultFs) -> Vec<PathBuf> {
    let mut names = fs.list(&dir()).unwrap();
    names.sort();
    names
        .into_iter()
        .filter(|n| n == "MANIFEST" || n.ends_with(".log") || n.ends_with(".sst"))
        .map(|n| dir().join(n))
        .collect()
}

fn replace(fs: &FaultFs, path: &std::path::Path, bytes: &[u8]) {
    fs.remove(path).unwrap();
    let f = fs.create(path).unwrap();
    f.append(bytes).unwrap();
    f.sync().unwrap();
    fs.sync_dir(&dir()).unwrap();
}

/// Opens the damaged engine and reads everything; panics only on wrong data.
fn open_and_read(fs: &FaultFs) {
    let c = clock(0);
    let Ok(e) = open(fs, small_opts(), &c) else {
        return;
    };
    for i in 0..KEYS {
        if let Ok(Some(v)) = e.get(&key(i)) {
            let v = v.value.to_vec();
            assert!(
                v == value(i, 1) || v == value(i, 2),
                "key {i}: served bytes that were never written"
            );
        }
    }
    if let Ok(iter) = e.scan(..) {
        for r in iter.take(2 * KEYS as usize) {
            let Ok((k, v)) = r else { break };
            assert!(k.starts_with(b"key"), "scan served a key never written");
            let i: u64 = std::str::from_utf8(&k[3..]).unwrap().parse().unwrap();
            let v = v.value.to_vec();
            assert!(v == value(i, 1) || v == value(i, 2), "scan served garbage");
        }
    }
    let _ = e.close();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// One file replaced whole by arbitrary bytes.
    #[test]
    fn arbitrary_file_contents_never_panic(
        which in 0usize..16,
        bytes in proptest::collection::vec(any::<u8>(), 0..1500),
    ) {
        let fs = valid_fs(which as u64);
        let targets = files(&fs);
        prop_assert!(targets.len() >= 3, "a manifest, a log and a table: {targets:?}");
        replace(&fs, &targets[which % targets.len()], &bytes);
        open_and_read(&fs);
    }

    /// A few bytes of one file flipped, or the file cut short: damage that
    /// keeps most of the structure, so the decoders get deep.
    #[test]
    fn damaged_files_never_panic(
        which in 0usize..16,
        flips in proptest::collection::vec((any::<u32>(), 1u8..=255), 0..6),
        cut in proptest::option::of(any::<u32>()),
    ) {
        let fs = valid_fs(which as u64 + 100);
        let targets = files(&fs);
        let path = &targets[which % targets.len()];
        let mut bytes = fs.read_all(path).unwrap();
        for (at, xor) in &flips {
            if !bytes.is_empty() {
                let i = *at as usize % bytes.len();
                bytes[i] ^= xor;
            }
        }
        if let Some(cut) = cut
            && !bytes.is_empty()
        {
            bytes.truncate(cut as usize % bytes.len());
        }
        replace(&fs, path, &bytes);
        open_and_read(&fs);
    }
}
