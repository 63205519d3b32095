//! [`FaultFs`]: a deterministic in-memory file system that injects faults.
//!
//! It models what a crash does to a POSIX file system: file contents are durable
//! only up to the last `sync` of the file, and creations, renames and removals
//! only after a `sync_dir` of their directory. [`FaultFs::crash`] returns the
//! file system as a machine would find it after power loss (or, with
//! `CrashMode::ProcessOnly`, as a restarted process finds it), and kills the old
//! instance so that threads of a crashed engine can no longer touch it. Unsynced
//! bytes are dropped, or torn (a random prefix survives, optionally followed by
//! zeros as ext4's delayed allocation can leave). It can also fail every fsync,
//! fail writes, and run out of space at a byte budget. Randomness comes from a
//! seed, so a failing case replays.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use ringkv_env::{Rng, SeededRng};

use super::{DirLock, Fs, ReadableFile, WritableFile};

/// What happens to bytes that were written but not synced when the simulated
/// machine loses power.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashMode {
    /// All unsynced bytes are lost.
    DropUnsynced,
    /// A random prefix of each file's unsynced bytes survives (a torn write).
    TornPrefix,
    /// A random prefix survives and the rest of the unsynced length reads as
    /// zeros (the file size was persisted but the data was not).
    TornZeroFill,
    /// Only the process dies (kill -9); the machine and its kernel carry on,
    /// so every byte written and every name created stays, synced or not
    /// (and stays unsynced until a later sync).
    ProcessOnly,
}

#[derive(Debug, Default)]
struct Node {
    data: Vec<u8>,
    synced_len: usize,
}

#[derive(Debug)]
struct State {
    /// Set when this instance crashed: every operation fails from then on.
    dead: bool,
    rng: SeededRng,
    nodes: HashMap<u64, Node>,
    next_node: u64,
    dirs: BTreeSet<PathBuf>,
    names: BTreeMap<PathBuf, u64>,
    durable_names: BTreeMap<PathBuf, u64>,
    locks: BTreeSet<PathBuf>,
    space_bytes_max: Option<u64>,
    fail_sync: bool,
    fail_writes: bool,
    /// Successful syncs left before every sync fails (None: unlimited).
    syncs_left: Option<u64>,
    sync_count: u64,
    sync_attempts: u64,
}

impl State {
    /// The file system a restart finds: these files, fault switches reset,
    /// the byte budget kept.
    fn reborn(
        &self,
        rng: SeededRng,
        nodes: HashMap<u64, Node>,
        names: BTreeMap<PathBuf, u64>,
        durable_names: BTreeMap<PathBuf, u64>,
    ) -> FaultFs {
        FaultFs {
            state: Arc::new(Mutex::new(State {
                dead: false,
                rng,
                nodes,
                next_node: self.next_node,
                dirs: self.dirs.clone(),
                names,
                durable_names,
                locks: BTreeSet::new(),
                space_bytes_max: self.space_bytes_max,
                fail_sync: false,
                fail_writes: false,
                syncs_left: None,
                sync_count: 0,
                sync_attempts: 0,
            })),
        }
    }

    fn check(&self) -> io::Result<()> {
        if self.dead {
            return Err(io::Error::other("file system instance crashed"));
        }
        Ok(())
    }

    fn used_bytes(&self) -> u64 {
        self.names
            .values()
            .filter_map(|id| self.nodes.get(id))
            .map(|n| n.data.len() as u64)
            .sum()
    }

    fn sync_allowed(&mut self) -> io::Result<()> {
        self.check()?;
        self.sync_attempts += 1;
        if self.fail_sync {
            return Err(io::Error::other("injected fsync failure"));
        }
        if let Some(left) = self.syncs_left.as_mut() {
            if *left == 0 {
                self.fail_sync = true;
                return Err(io::Error::other("injected fsync failure"));
            }
            *left -= 1;
        }
        self.sync_count += 1;
        Ok(())
    }
}

/// A fault-injecting in-memory file system. Cheap to clone (shared state).
#[derive(Debug, Clone)]
pub struct FaultFs {
    state: Arc<Mutex<State>>,
}

impl FaultFs {
    /// An empty file system whose random choices (torn-write lengths) follow
    /// `seed`.
    pub fn new(seed: u64) -> Self {
        FaultFs {
            state: Arc::new(Mutex::new(State {
                dead: false,
                rng: SeededRng::new(seed),
                nodes: HashMap::new(),
                next_node: 1,
                dirs: BTreeSet::new(),
                names: BTreeMap::new(),
                durable_names: BTreeMap::new(),
                locks: BTreeSet::new(),
                space_bytes_max: None,
                fail_sync: false,
                fail_writes: false,
                syncs_left: None,
                sync_count: 0,
                sync_attempts: 0,
            })),
        }
    }

    /// Simulates power loss. Returns the file system as it is found on reboot;
    /// this instance (and every handle opened from it) fails all later calls.
    /// Fault switches are reset on the new instance; the byte budget is kept.
    pub fn crash(&self, mode: CrashMode) -> FaultFs {
        self.state.lock().dead = true;
        self.crash_copy(mode)
    }

    /// The file system as a power loss now would leave it (see
    /// [`FaultFs::crash`]), while this instance carries on: for tests that
    /// look at every crash point of a sequence of writes.
    pub fn crash_copy(&self, mode: CrashMode) -> FaultFs {
        let mut st = self.state.lock();
        if mode == CrashMode::ProcessOnly {
            let nodes = st
                .nodes
                .iter()
                .map(|(id, n)| {
                    (
                        *id,
                        Node {
                            data: n.data.clone(),
                            synced_len: n.synced_len,
                        },
                    )
                })
                .collect();
            let rng = SeededRng::new(st.rng.next_u64());
            let (names, durable) = (st.names.clone(), st.durable_names.clone());
            return st.reborn(rng, nodes, names, durable);
        }
        let seed = st.rng.next_u64();
        let mut rng = SeededRng::new(seed);
        let mut nodes = HashMap::new();
        for (_, id) in st.durable_names.iter() {
            if nodes.contains_key(id) {
                continue;
            }
            let Some(node) = st.nodes.get(id) else {
                continue;
            };
            let unsynced = node.data.len() - node.synced_len;
            let mut data = node.data[..node.synced_len].to_vec();
            if unsynced > 0 {
                match mode {
                    CrashMode::DropUnsynced => {}
                    CrashMode::TornPrefix => {
                        let keep = rng.below(unsynced as u64 + 1) as usize;
                        data.extend_from_slice(&node.data[node.synced_len..node.synced_len + keep]);
                    }
                    CrashMode::TornZeroFill => {
                        let keep = rng.below(unsynced as u64 + 1) as usize;
                        data.extend_from_slice(&node.data[node.synced_len..node.synced_len + keep]);
                        data.resize(node.data.len(), 0);
                    }
                    CrashMode::ProcessOnly => {}
                }
            }
            let synced_len = data.len();
            nodes.insert(*id, Node { data, synced_len });
        }
        let names = st.durable_names.clone();
        st.reborn(rng, nodes, names.clone(), names)
    }

    /// Appends fail with `StorageFull` once the named files would exceed
    /// `bytes` in total (None: unlimited).
    pub fn set_space_bytes_max(&self, bytes: Option<u64>) {
        self.state.lock().space_bytes_max = bytes;
    }

    /// Makes every later fsync (of files and directories) fail.
    pub fn set_fail_sync(&self, fail: bool) {
        let mut st = self.state.lock();
        st.fail_sync = fail;
        st.syncs_left = None;
    }

    /// Lets `n` more fsyncs succeed, then fails every later one.
    pub fn fail_sync_after(&self, n: u64) {
        self.state.lock().syncs_left = Some(n);
    }

    /// Makes every later append fail with an I/O error.
    pub fn set_fail_writes(&self, fail: bool) {
        self.state.lock().fail_writes = fail;
    }

    /// How many fsyncs succeeded so far.
    pub fn sync_count(&self) -> u64 {
        self.state.lock().sync_count
    }

    /// How many fsyncs were attempted (failed ones included).
    pub fn sync_attempts(&self) -> u64 {
        self.state.lock().sync_attempts
    }

    /// Bytes held by named files.
    pub fn used_bytes(&self) -> u64 {
        self.state.lock().used_bytes()
    }

    /// Test helper: overwrites one byte of a file (durably), as a bit rot on the
    /// medium would.
    pub fn corrupt_byte(&self, path: &Path, offset: usize, xor: u8) -> io::Result<()> {
        let mut st = self.state.lock();
        st.check()?;
        let id = *st.names.get(path).ok_or_else(|| not_found(path))?;
        let node = st.nodes.get_mut(&id).ok_or_else(|| not_found(path))?;
        let b = node
            .data
            .get_mut(offset)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "offset past end"))?;
        *b ^= xor;
        Ok(())
    }

    /// Test helper: the length of a named file.
    pub fn file_len(&self, path: &Path) -> Option<u64> {
        let st = self.state.lock();
        let id = st.names.get(path)?;
        st.nodes.get(id).map(|n| n.data.len() as u64)
    }

    /// Test helper: truncates a file (durably), as an interrupted copy would.
    pub fn truncate(&self, path: &Path, len: usize) -> io::Result<()> {
        let mut st = self.state.lock();
        st.check()?;
        let id = *st.names.get(path).ok_or_else(|| not_found(path))?;
        let node = st.nodes.get_mut(&id).ok_or_else(|| not_found(path))?;
        node.data.truncate(len);
        node.synced_len = node.synced_len.min(len);
        Ok(())
    }
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{} not found", path.display()),
    )
}

struct FaultWritable {
    state: Arc<Mutex<State>>,
    node: u64,
    path: PathBuf,
}

impl WritableFile for FaultWritable {
    fn append(&self, data: &[u8]) -> io::Result<()> {
        let mut st = self.state.lock();
        st.check()?;
        if st.fail_writes {
            return Err(io::Error::other("injected write failure"));
        }
        if let Some(max) = st.space_bytes_max
            && st.used_bytes() + data.len() as u64 > max
        {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                format!("no space left writing {}", self.path.display()),
            ));
        }
        let node = st
            .nodes
            .get_mut(&self.node)
            .ok_or_else(|| not_found(&self.path))?;
        node.data.extend_from_slice(data);
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        let mut st = self.state.lock();
        st.sync_allowed()?;
        let node = st
            .nodes
            .get_mut(&self.node)
            .ok_or_else(|| not_found(&self.path))?;
        node.synced_len = node.data.len();
        Ok(())
    }
}

struct FaultReadable {
    state: Arc<Mutex<State>>,
    node: u64,
    len: u64,
}

impl ReadableFile for FaultReadable {
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let st = self.state.lock();
        st.check()?;
        let node = st
            .nodes
            .get(&self.node)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "file vanished"))?;
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::UnexpectedEof)?;
        let end = start
            .checked_add(buf.len())
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        let src = node
            .data
            .get(start..end)
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn len(&self) -> u64 {
        self.len
    }
}

struct FaultLock {
    state: Arc<Mutex<State>>,
    dir: PathBuf,
}

impl DirLock for FaultLock {}

impl Drop for FaultLock {
    fn drop(&mut self) {
        self.state.lock().locks.remove(&self.dir);
    }
}

impl Fs for FaultFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        st.check()?;
        // Directories are modelled as durable on creation.
        st.dirs.insert(dir.to_path_buf());
        Ok(())
    }

    fn create(&self, path: &Path) -> io::Result<Arc<dyn WritableFile>> {
        let mut st = self.state.lock();
        st.check()?;
        let parent = path.parent().unwrap_or(Path::new(""));
        if !st.dirs.contains(parent) {
            return Err(not_found(parent));
        }
        let id = st.next_node;
        st.next_node += 1;
        st.nodes.insert(id, Node::default());
        st.names.insert(path.to_path_buf(), id);
        Ok(Arc::new(FaultWritable {
            state: self.state.clone(),
            node: id,
            path: path.to_path_buf(),
        }))
    }

    fn open(&self, path: &Path) -> io::Result<Arc<dyn ReadableFile>> {
        let st = self.state.lock();
        st.check()?;
        let id = *st.names.get(path).ok_or_else(|| not_found(path))?;
        let len = st.nodes.get(&id).map(|n| n.data.len() as u64).unwrap_or(0);
        Ok(Arc::new(FaultReadable {
            state: self.state.clone(),
            node: id,
            len,
        }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        st.check()?;
        let id = st.names.remove(from).ok_or_else(|| not_found(from))?;
        st.names.insert(to.to_path_buf(), id);
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        st.check()?;
        st.names.remove(path).ok_or_else(|| not_found(path))?;
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let st = self.state.lock();
        st.check()?;
        if !st.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        Ok(st
            .names
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name().and_then(|n| n.to_str()).map(str::to_string))
            .collect())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        st.sync_allowed()?;
        let st = &mut *st;
        st.durable_names.retain(|p, _| p.parent() != Some(dir));
        for (p, id) in st.names.iter() {
            if p.parent() == Some(dir) {
                st.durable_names.insert(p.clone(), *id);
            }
        }
        // Nodes that no name (current or durable) and no handle can reach are
        // garbage; handles keep their own id, so keep nodes that are named in
        // either map and leave the rest to the next crash.
        Ok(())
    }

    fn lock_dir(&self, dir: &Path) -> io::Result<Box<dyn DirLock>> {
        let mut st = self.state.lock();
        st.check()?;
        if !st.locks.insert(dir.to_path_buf()) {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!("{} is locked by another engine", dir.display()),
            ));
        }
        Ok(Box::new(FaultLock {
            state: self.state.clone(),
            dir: dir.to_path_buf(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        PathBuf::from("/db")
    }

    #[test]
    fn unsynced_data_and_names_are_lost_on_crash() {
        let fs = FaultFs::new(1);
        fs.create_dir_all(&dir()).unwrap();
        let a = fs.create(&dir().join("a")).unwrap();
        a.append(b"hello").unwrap();
        a.sync().unwrap();
        a.append(b" world").unwrap();
        // The name was never made durable: the file is gone after a crash.
        let after = fs.crash(CrashMode::DropUnsynced);
        assert!(after.open(&dir().join("a")).is_err());
        // The old instance is dead.
        assert!(a.append(b"x").is_err());
        assert!(fs.list(&dir()).is_err());

        let b = after.create(&dir().join("b")).unwrap();
        b.append(b"hello").unwrap();
        b.sync().unwrap();
        after.sync_dir(&dir()).unwrap();
        b.append(b" world").unwrap();
        let again = after.crash(CrashMode::DropUnsynced);
        assert_eq!(again.read_all(&dir().join("b")).unwrap(), b"hello");
    }

    #[test]
    fn torn_writes_keep_a_prefix_and_zero_fill_keeps_length() {
        for seed in 0..20 {
            let fs = FaultFs::new(seed);
            fs.create_dir_all(&dir()).unwrap();
            let f = fs.create(&dir().join("log")).unwrap();
            fs.sync_dir(&dir()).unwrap();
            f.append(b"synced").unwrap();
            f.sync().unwrap();
            f.append(b"0123456789").unwrap();
            let torn = fs
                .crash(CrashMode::TornPrefix)
                .read_all(&dir().join("log"))
                .unwrap();
            assert!(torn.len() >= 6 && torn.len() <= 16);
            assert_eq!(&torn[..], &b"synced0123456789"[..torn.len()]);

            let fs = FaultFs::new(seed);
            fs.create_dir_all(&dir()).unwrap();
            let f = fs.create(&dir().join("log")).unwrap();
            fs.sync_dir(&dir()).unwrap();
            f.append(b"synced").unwrap();
            f.sync().unwrap();
            f.append(b"0123456789").unwrap();
            let z = fs
                .crash(CrashMode::TornZeroFill)
                .read_all(&dir().join("log"))
                .unwrap();
            assert_eq!(z.len(), 16);
            let kept = z[6..].iter().take_while(|&&b| b != 0).count();
            assert_eq!(&z[..6 + kept], &b"synced0123456789"[..6 + kept]);
            assert!(z[6 + kept..].iter().all(|&b| b == 0));
        }
    }

    #[test]
    fn renames_need_a_directory_sync() {
        let fs = FaultFs::new(7);
        fs.create_dir_all(&dir()).unwrap();
        let f = fs.create(&dir().join("tmp")).unwrap();
        f.append(b"v1").unwrap();
        f.sync().unwrap();
        fs.rename(&dir().join("tmp"), &dir().join("MANIFEST"))
            .unwrap();
        let lost = fs.crash(CrashMode::DropUnsynced);
        assert_eq!(lost.list(&dir()).unwrap(), Vec::<String>::new());

        let f = lost.create(&dir().join("tmp")).unwrap();
        f.append(b"v2").unwrap();
        f.sync().unwrap();
        lost.rename(&dir().join("tmp"), &dir().join("MANIFEST"))
            .unwrap();
        lost.sync_dir(&dir()).unwrap();
        let kept = lost.crash(CrashMode::DropUnsynced);
        assert_eq!(kept.list(&dir()).unwrap(), vec!["MANIFEST".to_string()]);
        assert_eq!(kept.read_all(&dir().join("MANIFEST")).unwrap(), b"v2");
    }

    #[test]
    fn space_budget_and_sync_failures_are_reported() {
        let fs = FaultFs::new(3);
        fs.create_dir_all(&dir()).unwrap();
        fs.set_space_bytes_max(Some(10));
        let f = fs.create(&dir().join("a")).unwrap();
        f.append(b"0123456789").unwrap();
        let e = f.append(b"x").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::StorageFull);
        fs.remove(&dir().join("a")).unwrap();
        let g = fs.create(&dir().join("b")).unwrap();
        g.append(b"x").unwrap();

        fs.fail_sync_after(1);
        g.sync().unwrap();
        assert!(g.sync().is_err());
        assert!(fs.sync_dir(&dir()).is_err());
        fs.set_fail_sync(false);
        g.sync().unwrap();
        fs.set_fail_writes(true);
        assert!(g.append(b"y").is_err());
    }

    #[test]
    fn dir_lock_is_exclusive_until_dropped() {
        let fs = FaultFs::new(0);
        fs.create_dir_all(&dir()).unwrap();
        let l = fs.lock_dir(&dir()).unwrap();
        assert!(fs.lock_dir(&dir()).is_err());
        drop(l);
        assert!(fs.lock_dir(&dir()).is_ok());
    }
}
