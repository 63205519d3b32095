use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;
use ringkv_storage::fs::{DirLock, ReadableFile, WritableFile};
use ringkv_storage::{CrashMode, FaultFs};

use super::*;

fn files(fs: &FaultFs) -> NodeFiles {
    NodeFiles::new(Arc::new(fs.clone()), "/node")
}

fn write_raw(fs: &FaultFs, name: &str, bytes: &[u8]) {
    let fs: Arc<dyn Fs> = Arc::new(fs.clone());
    fs.create_dir_all(Path::new("/node")).expect("dir");
    let f = fs.create(&Path::new("/node").join(name)).expect("create");
    f.append(bytes).expect("append");
    f.sync().expect("sync");
    fs.sync_dir(Path::new("/node")).expect("sync dir");
}

fn raw(fs: &FaultFs, name: &str) -> Vec<u8> {
    let fs: Arc<dyn Fs> = Arc::new(fs.clone());
    fs.read_all(&Path::new("/node").join(name)).expect("read")
}

#[test]
fn every_file_roundtrips_and_absent_files_read_as_nothing() {
    let fs = FaultFs::new(1);
    let f = files(&fs);
    assert_eq!(f.node_id().expect("none"), None);
    assert_eq!(f.tokens().expect("none"), None);
    assert!(f.peers().expect("none").is_empty());
    assert_eq!(f.move_record().expect("none"), None);
    assert_eq!(f.truncated_at().expect("none"), 0);
    f.save_truncated_at(u64::MAX - 1).expect("truncated");
    assert_eq!(f.truncated_at().expect("read back"), u64::MAX - 1);
    assert_eq!(&raw(&fs, "TRUNCATED")[..4], b"RKTR");
    write_raw(&fs, "TRUNCATED", b"12345678");
    assert!(
        f.truncated_at().is_err(),
        "a file without the magic is refused, never read as a point"
    );
    let id = f.load_or_create_id().expect("id");
    assert_ne!(id, 0);
    assert_eq!(f.load_or_create_id().expect("again"), id, "stable");
    assert_eq!(f.bump_epoch().expect("first"), 1);
    assert_eq!(f.bump_epoch().expect("second"), 2);
    f.save_tokens(&[3, 1, u64::MAX]).expect("tokens");
    assert_eq!(f.tokens().expect("tokens"), Some(vec![3, 1, u64::MAX]));
    let states = crate::testing::ring_states(3, 4);
    f.save_peers(&states).expect("peers");
    assert_eq!(f.peers().expect("peers"), states);
    let record = MoveRecord {
        kind: MovementKind::Join,
        left: false,
        done: vec![
            DoneTransfer {
                lo: 1,
                hi: 9,
                target: 42,
            },
            DoneTransfer {
                lo: 10,
                hi: u64::MAX,
                target: 7,
            },
        ],
    };
    f.save_move_record(Some(&record)).expect("save");
    assert_eq!(f.move_record().expect("load"), Some(record));
    f.save_move_record(None).expect("clear");
    assert_eq!(f.move_record().expect("cleared"), None);
    f.save_move_record(None).expect("clearing twice is fine");
    for (name, magic) in [
        (NODE_ID_FILE, NODE_ID_MAGIC),
        (EPOCH_FILE, EPOCH_MAGIC),
        (TOKENS_FILE, TOKENS_MAGIC),
        (PEERS_FILE, PEERS_MAGIC),
    ] {
        let bytes = raw(&fs, name);
        assert_eq!(&bytes[..4], magic, "{name}");
        assert_eq!(bytes[4], FILE_VERSION, "{name}");
    }
}

#[test]
fn damaged_or_foreign_files_are_refused() {
    let fs = FaultFs::new(2);
    let f = files(&fs);
    f.save_tokens(&[1, 2, 3]).expect("tokens");
    let good = raw(&fs, TOKENS_FILE);
    // A flipped bit fails the checksum.
    let mut flipped = good.clone();
    flipped[12] ^= 1;
    write_raw(&fs, TOKENS_FILE, &flipped);
    assert!(f.tokens().is_err(), "checksum");
    // A truncated file, an unknown version.
    write_raw(&fs, TOKENS_FILE, &good[..good.len() - 1]);
    assert!(f.tokens().is_err(), "truncated");
    let mut future = good.clone();
    future[4] = 9;
    write_raw(&fs, TOKENS_FILE, &future);
    assert!(f.tokens().is_err(), "unknown version");
    // The magic with a version this build does not know is refused as
    // such, never read as an earlier layout.
    let later = |name: &str, magic: &[u8]| {
        let mut bytes = magic.to_vec();
        bytes.extend_from_slice(&[9, 8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        write_raw(&fs, name, &bytes);
    };
    let refused = |r: std::io::Result<()>| {
        let e = r.expect_err("a later version is refused");
        assert!(e.to_string().contains("unknown version 9"), "{e}");
    };
    later(NODE_ID_FILE, b"RKID");
    refused(f.node_id().map(drop));
    later(EPOCH_FILE, b"RKEP");
    refused(f.bump_epoch().map(drop));
    later(TOKENS_FILE, b"RKTK");
    refused(f.tokens().map(drop));
    later(PEERS_FILE, b"RKPR");
    refused(f.peers().map(drop));
    later(MOVE_FILE, b"RKMV");
    refused(f.move_record().map(drop));
    // Garbage in the earlier layouts.
    write_raw(&fs, NODE_ID_FILE, b"not hex\n");
    assert!(f.node_id().is_err());
    write_raw(&fs, EPOCH_FILE, b"x");
    assert!(f.bump_epoch().is_err());
    write_raw(&fs, TOKENS_FILE, b"12\nnope\n");
    assert!(f.tokens().is_err());
    write_raw(&fs, PEERS_FILE, b"\xff\xff\xff");
    assert!(f.peers().is_err());
    write_raw(&fs, MOVE_FILE, b"RKMV\x09junk");
    assert!(f.move_record().is_err(), "unknown version refused");
    write_raw(&fs, MOVE_FILE, b"nope");
    assert!(f.move_record().is_err(), "bad magic refused");
    // A node id of zero is not an id.
    write_raw(&fs, NODE_ID_FILE, b"0000000000000000\n");
    assert!(f.node_id().is_err());
}

#[test]
fn files_of_the_earlier_layout_are_read_once_and_rewritten() {
    let fs = FaultFs::new(3);
    let f = files(&fs);
    let states = crate::testing::ring_states(2, 4);
    write_raw(&fs, NODE_ID_FILE, b"00000000000000ff\n");
    write_raw(&fs, EPOCH_FILE, b"41\n");
    write_raw(&fs, TOKENS_FILE, b"5\n18446744073709551615\n7\n");
    write_raw(
        &fs,
        PEERS_FILE,
        &postcard::to_allocvec(&states).expect("encode"),
    );
    // MOVE version 1: a leaving node with one transfer done.
    let mut old_move = b"RKMV\x01".to_vec();
    old_move.extend(postcard::to_allocvec(&(1u32, vec![(1u64, 2u64, 3u64)])).expect("encode"));
    write_raw(&fs, MOVE_FILE, &old_move);

    assert_eq!(f.node_id().expect("id"), Some(0xff));
    assert_eq!(f.bump_epoch().expect("epoch"), 42);
    assert_eq!(f.tokens().expect("tokens"), Some(vec![5, u64::MAX, 7]));
    assert_eq!(f.peers().expect("peers"), states);
    let record = f.move_record().expect("move").expect("a record");
    assert_eq!(record.kind, MovementKind::Decommission);
    assert!(!record.left);
    assert_eq!(
        record.done,
        vec![DoneTransfer {
            lo: 1,
            hi: 2,
            target: 3
        }]
    );
    // Rewritten in the current layout, and read the same again.
    assert_eq!(&raw(&fs, NODE_ID_FILE)[..4], NODE_ID_MAGIC);
    assert_eq!(&raw(&fs, EPOCH_FILE)[..4], EPOCH_MAGIC);
    assert_eq!(&raw(&fs, TOKENS_FILE)[..4], TOKENS_MAGIC);
    assert_eq!(&raw(&fs, PEERS_FILE)[..4], PEERS_MAGIC);
    assert_eq!(raw(&fs, MOVE_FILE)[4], MOVE_VERSION);
    assert_eq!(f.node_id().expect("id"), Some(0xff));
    assert_eq!(f.bump_epoch().expect("epoch"), 43);
    assert_eq!(f.tokens().expect("tokens"), Some(vec![5, u64::MAX, 7]));
    assert_eq!(f.peers().expect("peers"), states);
    assert_eq!(f.move_record().expect("move"), Some(record));
    // A left node (kind 2) stays left.
    let mut left = b"RKMV\x01".to_vec();
    left.extend(postcard::to_allocvec(&(2u32, Vec::<(u64, u64, u64)>::new())).expect("encode"));
    write_raw(&fs, MOVE_FILE, &left);
    assert!(f.move_record().expect("move").expect("a record").left);
}

/// An `Fs` that records, after each change it makes to `inner`, what a
/// crash at that moment would leave: one disk per crash point.
#[derive(Debug)]
struct CrashPoints {
    inner: FaultFs,
    mode: CrashMode,
    disks: Mutex<Vec<FaultFs>>,
    steps: AtomicUsize,
}

impl CrashPoints {
    fn new(inner: FaultFs, mode: CrashMode) -> Arc<Self> {
        Arc::new(Self {
            inner,
            mode,
            disks: Mutex::new(Vec::new()),
            steps: AtomicUsize::new(0),
        })
    }

    fn point(&self) {
        self.steps.fetch_add(1, Ordering::Relaxed);
        self.disks.lock().push(self.inner.crash_copy(self.mode));
    }
}

struct PointFile {
    inner: Arc<dyn WritableFile>,
    fs: Arc<CrashPoints>,
}

impl WritableFile for PointFile {
    fn append(&self, data: &[u8]) -> io::Result<()> {
        // A crash in the middle of a write: half of it made it.
        let half = data.len() / 2;
        self.inner.append(&data[..half])?;
        self.fs.point();
        self.inner.append(&data[half..])?;
        self.fs.point();
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        self.inner.sync()?;
        self.fs.point();
        Ok(())
    }
}

/// The `Fs` view of [`CrashPoints`] (it needs its own `Arc` to hand out
/// files that record points too).
#[derive(Debug, Clone)]
struct PointFs(Arc<CrashPoints>);

impl Fs for PointFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.0.inner.create_dir_all(dir)
    }

    fn create(&self, path: &Path) -> io::Result<Arc<dyn WritableFile>> {
        let inner = self.0.inner.create(path)?;
        self.0.point();
        Ok(Arc::new(PointFile {
            inner,
            fs: Arc::clone(&self.0),
        }))
    }

    fn open(&self, path: &Path) -> io::Result<Arc<dyn ReadableFile>> {
        self.0.inner.open(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.0.inner.rename(from, to)?;
        self.0.point();
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        self.0.inner.remove(path)?;
        self.0.point();
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.0.inner.list(dir)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.0.inner.sync_dir(dir)?;
        self.0.point();
        Ok(())
    }

    fn lock_dir(&self, dir: &Path) -> io::Result<Box<dyn DirLock>> {
        self.0.inner.lock_dir(dir)
    }
}

/// Runs `change` on files whose disk starts as `setup` left it, and checks
/// `holds` on what every crash point during the change leaves behind (the
/// files read after a restart).
fn at_every_crash_point(
    setup: impl Fn(&NodeFiles),
    change: impl Fn(&NodeFiles),
    holds: impl Fn(&NodeFiles, usize),
) {
    for mode in [
        CrashMode::DropUnsynced,
        CrashMode::TornPrefix,
        CrashMode::TornZeroFill,
    ] {
        let disk = FaultFs::new(7);
        setup(&files(&disk));
        let points = CrashPoints::new(disk, mode);
        let during = NodeFiles::new(Arc::new(PointFs(Arc::clone(&points))), "/node");
        change(&during);
        let disks = points.disks.lock().clone();
        assert!(
            disks.len() >= 5,
            "a whole-file write has a crash point after each step"
        );
        for (i, disk) in disks.iter().enumerate() {
            holds(&files(disk), i);
        }
    }
}

#[test]
fn a_crash_while_the_epoch_is_written_never_lets_it_go_back() {
    at_every_crash_point(
        |f| {
            for _ in 0..5 {
                f.bump_epoch().expect("bump");
            }
        },
        |f| {
            assert_eq!(f.bump_epoch().expect("bump"), 6);
        },
        |f, point| {
            // The old epoch or the new one, never garbage and never less:
            // the next start takes an epoch above every one served under.
            let next = f
                .bump_epoch()
                .unwrap_or_else(|e| panic!("point {point}: {e}"));
            assert!((6..=7).contains(&next), "point {point}: epoch {next}");
        },
    );
}

#[test]
fn a_crash_while_tokens_peers_or_the_move_record_are_written_leaves_old_or_new() {
    let old_tokens = vec![1u64, 2, 3];
    let new_tokens: Vec<u64> = (10..200).collect();
    at_every_crash_point(
        |f| f.save_tokens(&old_tokens).expect("tokens"),
        |f| f.save_tokens(&new_tokens).expect("tokens"),
        |f, point| {
            let got = f.tokens().unwrap_or_else(|e| panic!("point {point}: {e}"));
            assert!(
                got.as_ref() == Some(&old_tokens) || got.as_ref() == Some(&new_tokens),
                "point {point}: {got:?}"
            );
        },
    );
    let old_peers = crate::testing::ring_states(2, 4);
    let new_peers = crate::testing::ring_states(5, 4);
    at_every_crash_point(
        |f| f.save_peers(&old_peers).expect("peers"),
        |f| f.save_peers(&new_peers).expect("peers"),
        |f, point| {
            let got = f.peers().unwrap_or_else(|e| panic!("point {point}: {e}"));
            assert!(got == old_peers || got == new_peers, "point {point}");
        },
    );
    let started = MoveRecord::new(MovementKind::Join);
    let progressed = MoveRecord {
        done: vec![DoneTransfer {
            lo: 5,
            hi: 6,
            target: 7,
        }],
        ..started.clone()
    };
    at_every_crash_point(
        |f| f.save_move_record(Some(&started)).expect("move"),
        |f| {
            f.save_move_record(Some(&progressed)).expect("move");
            f.save_move_record(None).expect("done");
        },
        |f, point| {
            let got = f
                .move_record()
                .unwrap_or_else(|e| panic!("point {point}: {e}"));
            assert!(
                got.is_none() || got == Some(started.clone()) || got == Some(progressed.clone()),
                "point {point}: {got:?}"
            );
        },
    );
}
