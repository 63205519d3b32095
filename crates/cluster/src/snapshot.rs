//! Snapshots of a node's data, their copies elsewhere, and restoring a node
//! from one.
//!
//! # Layout (on disk; the meta file is versioned)
//! ```text
//! <data dir>/snapshots/<tag>/SNAPSHOT     meta, JSON: {"format": "ringkv-snapshot",
//!                                          "version": 1, tag, node_id, taken_at_ms,
//!                                          epoch, sequence, tables, bytes}
//! <data dir>/snapshots/<tag>/store/       the data engine's checkpoint: MANIFEST and
//!                                          its tables, hard-linked (no space used
//!                                          until compaction drops the originals)
//! <data dir>/snapshots/<tag>/NODE_ID, TOKENS, PEERS   the node's identity and place
//! <backup dir>/<node id>/<tag>/           the same, copied (another disk or mount)
//! ```
//! A snapshot is taken while writes go on: every write the node acknowledged
//! before it began is in it (see `ringkv_storage::Engine::checkpoint`). Hints
//! the node held, and its epoch, are not: a restored node gets its hints
//! again from their holders, and a new epoch.
//!
//! # Restore ([`restore`], the node stopped)
//! The node's `store` moves aside (kept as `store.before-restore-<ms>`), the
//! snapshot's is copied in, and `NODE_ID`, `TOKENS`, `PEERS` come back when
//! the data directory lost them. The epoch is raised past any the node can
//! have used since the snapshot (the snapshot's plus [`RESTORE_EPOCH_STEP`]
//! when the directory lost its `EPOCH`), so the restored node never issues a
//! dot twice. At start the node takes its place in the ring again; hints and
//! anti-entropy bring it the writes since. A snapshot older than half the
//! tombstone grace period (the shorter of the one it recorded and the one
//! given) is refused unless forced: tombstones of keys deleted since may be
//! purged everywhere before anti-entropy reaches the restored node, and the
//! keys would come back. `ringkv repair` right after the start shortens that
//! window. A restore refuses a store a running node holds (its lock), and a
//! copy whose tables do not match its meta file (copies are made into
//! `<tag>.partial` and renamed once whole).

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::id::NodeId;
use crate::node_files::NodeFiles;
use crate::store::{LocalStore, StoreError};

/// The folder of a data directory holding its snapshots.
pub const SNAPSHOTS_DIR: &str = "snapshots";
/// A snapshot's meta file.
pub const META_FILE: &str = "SNAPSHOT";
/// The meta file's format name and version. Do not change: on disk.
pub const FORMAT: &str = "ringkv-snapshot";
pub const FORMAT_VERSION: u32 = 1;
/// How far a restore raises the epoch of a node whose `EPOCH` was lost:
/// more epochs than a node starts between a snapshot and its restore (one
/// a start, two a truncation).
pub const RESTORE_EPOCH_STEP: u64 = 1 << 16;
/// The longest tag.
pub const TAG_BYTES_MAX: usize = 64;
/// The node files a snapshot keeps (`TRUNCATED`: a snapshot taken after a
/// truncation, before its compaction ran, holds hidden records, and a node
/// restored from it onto an empty disk must hide them from its start).
const NODE_FILES: [&str; 4] = ["NODE_ID", "TOKENS", "PEERS", "TRUNCATED"];

/// A snapshot's meta file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    pub format: String,
    pub version: u32,
    pub tag: String,
    /// The node's id, 16 hex digits.
    pub node_id: String,
    pub taken_at_ms: u64,
    /// The node's epoch when it was taken.
    pub epoch: u64,
    /// The engine's last sequence number in it.
    pub sequence: u64,
    pub tables: usize,
    pub bytes: u64,
    /// The node's tombstone grace period when it was taken (ms).
    #[serde(default)]
    pub tombstone_grace_ms: u64,
}

/// A snapshot and where it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnapshotInfo {
    #[serde(flatten)]
    pub meta: SnapshotMeta,
    pub path: String,
    /// Where a copy went, when one was asked for.
    pub copied_to: Option<String>,
}

/// Why a snapshot, a copy or a restore failed.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{0}")]
    Invalid(String),
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "the snapshot is {age_s} s old, more than half the tombstone grace period ({grace_s} s): \
         keys deleted since may come back before anti-entropy brings their tombstones; restore \
         it anyway with --force"
    )]
    TooOld { age_s: u64, grace_s: u64 },
    #[error("storage: {0}")]
    Store(#[from] StoreError),
}

impl From<SnapshotError> for crate::api::KvError {
    fn from(e: SnapshotError) -> Self {
        match e {
            SnapshotError::Invalid(_) | SnapshotError::TooOld { .. } => {
                Self::InvalidArgument(e.to_string())
            }
            SnapshotError::Io { .. } | SnapshotError::Store(_) => Self::Storage(e.to_string()),
        }
    }
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> SnapshotError {
    let path = path.to_path_buf();
    move |source| SnapshotError::Io { what, path, source }
}

/// A tag: 1 to 64 letters, digits, `.`, `_` or `-`, not starting with `.`.
pub fn check_tag(tag: &str) -> Result<(), SnapshotError> {
    let ok = !tag.is_empty()
        && tag.len() <= TAG_BYTES_MAX
        && !tag.starts_with('.')
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(SnapshotError::Invalid(format!(
            "bad snapshot tag {tag:?}: 1 to {TAG_BYTES_MAX} letters, digits, '.', '_' or '-'"
        )))
    }
}

/// What a node knows when it takes a snapshot.
pub struct Taker<'a, S> {
    pub store: &'a S,
    pub data_dir: &'a Path,
    pub node_id: NodeId,
    pub epoch: u64,
    pub now_ms: u64,
    /// The node's tombstone grace period (recorded for the restore).
    pub grace_ms: u64,
}

impl<S: LocalStore> Taker<'_, S> {
    /// Takes a snapshot tagged `tag` (the time in ms when `None`), and
    /// copies it under `backup_dir` when given.
    pub fn take(
        &self,
        tag: Option<&str>,
        backup_dir: Option<&Path>,
    ) -> Result<SnapshotInfo, SnapshotError> {
        let tag = tag.map_or_else(|| format!("t{}", self.now_ms), str::to_string);
        check_tag(&tag)?;
        let root = self.data_dir.join(SNAPSHOTS_DIR);
        std::fs::create_dir_all(&root).map_err(io_err("creating", &root))?;
        let dir = root.join(&tag);
        // Made atomically: of two snapshots with one tag, one fails here.
        if let Err(e) = std::fs::create_dir(&dir) {
            if e.kind() == io::ErrorKind::AlreadyExists {
                return Err(SnapshotError::Invalid(format!(
                    "a snapshot tagged {tag} exists; clear it or pick another tag"
                )));
            }
            return Err(io_err("creating", &dir)(e));
        }
        let taken = self.fill(&dir, &tag);
        if taken.is_err() {
            // Nothing half-made is left behind.
            let _ = std::fs::remove_dir_all(&dir);
        }
        let meta = taken?;
        let copied_to = match backup_dir {
            Some(backup) => {
                let to = backup.join(&meta.node_id).join(&tag);
                copy_whole(&dir, &to)?;
                Some(to.display().to_string())
            }
            None => None,
        };
        Ok(SnapshotInfo {
            meta,
            path: dir.display().to_string(),
            copied_to,
        })
    }

    /// The snapshot's content in `dir`: the checkpoint, the node files,
    /// and the meta file last.
    fn fill(&self, dir: &Path, tag: &str) -> Result<SnapshotMeta, SnapshotError> {
        let cp = self.store.checkpoint(&dir.join("store"))?;
        for name in NODE_FILES {
            let from = self.data_dir.join(name);
            if from.exists() {
                copy_file(&from, &dir.join(name))?;
            }
        }
        let meta = SnapshotMeta {
            format: FORMAT.into(),
            version: FORMAT_VERSION,
            tag: tag.to_string(),
            node_id: crate::id::display(self.node_id),
            taken_at_ms: self.now_ms,
            epoch: self.epoch,
            sequence: cp.sequence,
            tables: cp.tables,
            bytes: cp.bytes,
            tombstone_grace_ms: self.grace_ms,
        };
        write_meta(dir, &meta)?;
        Ok(meta)
    }
}

/// Copies the snapshot in `from` to `to` whole or not at all: into
/// `<to>.partial`, renamed once every file is in.
fn copy_whole(from: &Path, to: &Path) -> Result<(), SnapshotError> {
    if to.exists() {
        return Err(SnapshotError::Invalid(format!(
            "{} exists already",
            to.display()
        )));
    }
    let mut partial = to.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    if partial.exists() {
        std::fs::remove_dir_all(&partial).map_err(io_err("removing", &partial))?;
    }
    copy_tree(from, &partial)?;
    std::fs::rename(&partial, to).map_err(io_err("renaming", to))?;
    if let Some(parent) = to.parent() {
        sync_file(parent)?;
    }
    Ok(())
}

fn write_meta(dir: &Path, meta: &SnapshotMeta) -> Result<(), SnapshotError> {
    let text = serde_json::to_vec_pretty(meta)
        .map_err(|e| SnapshotError::Invalid(format!("encoding the meta file: {e}")))?;
    let tmp = dir.join(format!("{META_FILE}.tmp"));
    let path = dir.join(META_FILE);
    std::fs::write(&tmp, text).map_err(io_err("writing", &tmp))?;
    sync_file(&tmp)?;
    std::fs::rename(&tmp, &path).map_err(io_err("renaming", &path))?;
    sync_file(dir)
}

/// Reads the meta file of the snapshot in `dir`.
pub fn read_meta(dir: &Path) -> Result<SnapshotMeta, SnapshotError> {
    let path = dir.join(META_FILE);
    let bytes = std::fs::read(&path).map_err(io_err("reading", &path))?;
    let meta: SnapshotMeta = serde_json::from_slice(&bytes).map_err(|e| {
        SnapshotError::Invalid(format!("{} is not a snapshot's meta: {e}", path.display()))
    })?;
    if meta.format != FORMAT || meta.version != FORMAT_VERSION {
        return Err(SnapshotError::Invalid(format!(
            "{}: format {} version {}, this version reads {FORMAT} version {FORMAT_VERSION}",
            path.display(),
            meta.format,
            meta.version
        )));
    }
    Ok(meta)
}

/// Every snapshot under `data_dir`, oldest first.
pub fn list(data_dir: &Path) -> Result<Vec<SnapshotInfo>, SnapshotError> {
    let root = data_dir.join(SNAPSHOTS_DIR);
    let entries = match std::fs::read_dir(&root) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("listing", &root)(e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let dir = entry.map_err(io_err("listing", &root))?.path();
        // A snapshot cut short (no meta) is not listed; `clear` removes it.
        if let Ok(meta) = read_meta(&dir) {
            out.push(SnapshotInfo {
                meta,
                path: dir.display().to_string(),
                copied_to: None,
            });
        }
    }
    out.sort_by_key(|s| (s.meta.taken_at_ms, s.meta.tag.clone()));
    Ok(out)
}

/// Removes the snapshot tagged `tag`, or every snapshot; the tags removed.
pub fn clear(data_dir: &Path, tag: Option<&str>) -> Result<Vec<String>, SnapshotError> {
    let root = data_dir.join(SNAPSHOTS_DIR);
    let tags: Vec<String> = match tag {
        Some(t) => {
            check_tag(t)?;
            if !root.join(t).exists() {
                return Err(SnapshotError::Invalid(format!("no snapshot tagged {t}")));
            }
            vec![t.to_string()]
        }
        None => match std::fs::read_dir(&root) {
            Ok(entries) => entries
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|t| check_tag(t).is_ok())
                .collect(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io_err("listing", &root)(e)),
        },
    };
    for t in &tags {
        let dir = root.join(t);
        std::fs::remove_dir_all(&dir).map_err(io_err("removing", &dir))?;
    }
    Ok(tags)
}

/// What a restore did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Restored {
    pub meta: SnapshotMeta,
    /// Where the data it replaced was moved, if there was any.
    pub previous: Option<String>,
    /// The node's epoch now (its next start takes the one after).
    pub epoch: u64,
}

/// Restores the snapshot in `from` into the data directory `data_dir` of a
/// stopped node (see the module). `grace_ms`: the tombstone grace period.
pub fn restore(
    data_dir: &Path,
    from: &Path,
    now_ms: u64,
    grace_ms: u64,
    force: bool,
) -> Result<Restored, SnapshotError> {
    let meta = read_meta(from)?;
    // The shorter of the grace periods known; half of it at most may have
    // passed, so that anti-entropy has the other half to bring the restored
    // node the deletes made since, before their tombstones may be purged.
    let grace_ms = match meta.tombstone_grace_ms {
        0 => grace_ms,
        recorded => recorded.min(grace_ms),
    };
    let age_ms = now_ms.saturating_sub(meta.taken_at_ms);
    if age_ms > grace_ms / 2 && !force {
        return Err(SnapshotError::TooOld {
            age_s: age_ms / 1000,
            grace_s: grace_ms / 1000,
        });
    }
    let tables = std::fs::read_dir(from.join("store"))
        .map_err(io_err("listing", &from.join("store")))?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".sst"))
        .count();
    if tables != meta.tables {
        return Err(SnapshotError::Invalid(format!(
            "{} holds {tables} tables, its meta file says {}: an incomplete copy",
            from.display(),
            meta.tables
        )));
    }
    std::fs::create_dir_all(data_dir).map_err(io_err("creating", data_dir))?;
    let files = NodeFiles::new(ringkv_storage::RealFs::shared(), data_dir);
    let bad_files = |e: io::Error| SnapshotError::Io {
        what: "reading the node files in",
        path: data_dir.to_path_buf(),
        source: e,
    };
    if let Some(id) = files.node_id().map_err(bad_files)? {
        let id = crate::id::display(id);
        if id != meta.node_id {
            return Err(SnapshotError::Invalid(format!(
                "the snapshot is of node {}, this directory is node {id}'s",
                meta.node_id
            )));
        }
    }
    for name in NODE_FILES {
        let (src, dst) = (from.join(name), data_dir.join(name));
        if src.exists() && !dst.exists() {
            copy_file(&src, &dst)?;
        }
    }
    let store = data_dir.join("store");
    // A running node holds its store's lock.
    let _lock = if store.exists() {
        Some(
            ringkv_storage::RealFs::shared()
                .lock_dir(&store)
                .map_err(|_| {
                    SnapshotError::Invalid(format!(
                        "{} is in use: stop the node first",
                        store.display()
                    ))
                })?,
        )
    } else {
        None
    };
    let previous = if store.exists() {
        let aside = data_dir.join(format!("store.before-restore-{now_ms}"));
        std::fs::rename(&store, &aside).map_err(io_err("moving aside", &store))?;
        Some(aside.display().to_string())
    } else {
        None
    };
    copy_tree(&from.join("store"), &store)?;
    let kept = files.epoch().map_err(bad_files)?;
    let floor = if kept > meta.epoch {
        kept
    } else {
        meta.epoch + RESTORE_EPOCH_STEP
    };
    let epoch = files.raise_epoch(floor).map_err(bad_files)?;
    sync_file(data_dir)?;
    Ok(Restored {
        meta,
        previous,
        epoch,
    })
}

fn sync_file(path: &Path) -> Result<(), SnapshotError> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io_err("syncing", path))
}

fn copy_file(from: &Path, to: &Path) -> Result<(), SnapshotError> {
    std::fs::copy(from, to).map_err(io_err("copying", from))?;
    sync_file(to)
}

/// Copies the files of `from` (and its folders) into `to`, which must not
/// exist, each synced.
pub fn copy_tree(from: &Path, to: &Path) -> Result<(), SnapshotError> {
    if to.exists() {
        return Err(SnapshotError::Invalid(format!(
            "{} exists already",
            to.display()
        )));
    }
    std::fs::create_dir_all(to).map_err(io_err("creating", to))?;
    for entry in std::fs::read_dir(from).map_err(io_err("listing", from))? {
        let entry = entry.map_err(io_err("listing", from))?;
        let path = entry.path();
        let target = to.join(entry.file_name());
        let kind = entry.file_type().map_err(io_err("reading", &path))?;
        if kind.is_dir() {
            copy_tree(&path, &target)?;
        } else if kind.is_file() {
            copy_file(&path, &target)?;
        }
    }
    sync_file(to)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::EngineStore;

    fn store(dir: &Path) -> EngineStore {
        let engine =
            ringkv_storage::Engine::open(&dir.join("store"), Default::default()).expect("open");
        EngineStore::new(engine, ringkv_env::SystemClock::shared(), 1_000, false)
    }

    #[test]
    fn take_list_restore_and_clear() {
        let root = tempfile::tempdir().expect("tempdir");
        let data = root.path().join("data");
        let s = store(&data);
        s.put(b"k", b"record").expect("put");
        NodeFiles::new(ringkv_storage::RealFs::shared(), &data)
            .save_truncated_at(42)
            .expect("truncated");
        let taker = Taker {
            store: &s,
            data_dir: &data,
            node_id: 0xabc,
            epoch: 7,
            now_ms: 10_000,
            grace_ms: 1_000,
        };
        let info = taker.take(Some("one"), None).expect("take");
        assert_eq!(
            (info.meta.epoch, info.meta.node_id.as_str()),
            (7, "0000000000000abc")
        );
        assert!(matches!(
            taker.take(Some("one"), None),
            Err(SnapshotError::Invalid(_))
        ));
        assert!(matches!(
            taker.take(Some("../x"), None),
            Err(SnapshotError::Invalid(_))
        ));
        assert_eq!(list(&data).expect("list").len(), 1);
        let from = data.join(SNAPSHOTS_DIR).join("one");

        // Older than the grace period: refused unless forced.
        let fresh = root.path().join("fresh");
        let old = restore(&fresh, &from, 10_000 + 5_000, 1_000, false);
        assert!(matches!(old, Err(SnapshotError::TooOld { .. })), "{old:?}");
        let old = restore(&fresh, &from, 10_600, 1_000, false);
        assert!(
            matches!(old, Err(SnapshotError::TooOld { .. })),
            "past half the grace period"
        );
        let old = restore(&fresh, &from, 10_600, 60_000, false);
        assert!(
            matches!(old, Err(SnapshotError::TooOld { .. })),
            "the recorded grace counts"
        );
        let done = restore(&fresh, &from, 10_400, 1_000, false).expect("restore");
        assert_eq!(
            done.epoch,
            7 + RESTORE_EPOCH_STEP,
            "a lost EPOCH jumps ahead"
        );
        let copy = store(&fresh);
        assert_eq!(
            copy.get(b"k").expect("get").as_deref(),
            Some(&b"record"[..])
        );
        drop(copy);
        assert_eq!(
            NodeFiles::new(ringkv_storage::RealFs::shared(), &fresh)
                .truncated_at()
                .expect("truncated"),
            42,
            "the truncation point comes back with the data"
        );
        // Again over the restored directory: the data moves aside, the
        // kept epoch (already past the snapshot's) stays.
        let again = restore(&fresh, &from, 10_450, 1_000, false).expect("again");
        assert!(again.previous.is_some());
        assert_eq!(again.epoch, 7 + RESTORE_EPOCH_STEP);
        // Another node's snapshot is refused.
        let other = root.path().join("other");
        NodeFiles::new(ringkv_storage::RealFs::shared(), &other)
            .save_node_id(0xdef)
            .expect("id");
        assert!(matches!(
            restore(&other, &from, 10_450, 1_000, false),
            Err(SnapshotError::Invalid(_))
        ));
        // A running node's store is refused.
        let running = store(&fresh);
        assert!(matches!(
            restore(&fresh, &from, 10_450, 1_000, true),
            Err(SnapshotError::Invalid(m)) if m.contains("stop the node")
        ));
        drop(running);
        // A copy missing a table is refused.
        let partial = root.path().join("partial");
        copy_tree(&from, &partial).expect("copy");
        for e in std::fs::read_dir(partial.join("store")).expect("list") {
            let p = e.expect("entry").path();
            if p.extension().is_some_and(|x| x == "sst") {
                std::fs::remove_file(p).expect("remove");
            }
        }
        assert!(matches!(
            restore(&fresh, &partial, 10_450, 1_000, true),
            Err(SnapshotError::Invalid(m)) if m.contains("incomplete")
        ));
        assert_eq!(clear(&data, None).expect("clear"), vec!["one".to_string()]);
        assert!(list(&data).expect("list").is_empty());
    }

    #[test]
    fn tags_are_plain_names() {
        for ok in ["nightly", "2026-12-06", "a.b_c-1"] {
            assert!(check_tag(ok).is_ok(), "{ok}");
        }
        for bad in ["", "..", ".hidden", "a/b", "a b", &"x".repeat(65)] {
            assert!(check_tag(bad).is_err(), "{bad}");
        }
    }
}
