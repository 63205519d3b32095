//! A node's stable identity: its id and its ring tokens.
//!
//! The id is a random 64-bit number drawn on first start and kept in the file
//! `NODE_ID` in the data directory, so a restarted node keeps its place in
//! version vectors. Its tokens, chosen when it first joins, are kept in
//! `TOKENS` (one decimal token per line), so a restart keeps its place in the
//! ring. Its epoch, bumped on every start, is kept in `EPOCH` (see
//! [`crate::causality::EPOCH_SHIFT`]). These files are written whole (write,
//! fsync, rename, fsync dir).

use std::io;
use std::path::Path;

const NODE_ID_FILE: &str = "NODE_ID";
const TOKENS_FILE: &str = "TOKENS";
const EPOCH_FILE: &str = "EPOCH";
/// Most tokens a node may hold (weight max x tokens per weight, with room).
pub const TOKENS_MAX: usize = 65_536;

fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!("{name}.tmp"));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(name))?;
    std::fs::File::open(dir)?.sync_all()
}

/// Bumps this node's epoch and returns the new one (1 on a first start):
/// durable before the node writes anything.
pub fn bump_epoch(dir: &Path) -> io::Result<u64> {
    let path = dir.join(EPOCH_FILE);
    let previous = match std::fs::read_to_string(&path) {
        Ok(t) => t.trim().parse::<u64>().map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: not an epoch: {e}", path.display()),
            )
        })?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
        Err(e) => return Err(e),
    };
    let epoch = previous + 1;
    write_atomically(dir, EPOCH_FILE, format!("{epoch}\n").as_bytes())?;
    Ok(epoch)
}

/// The tokens this node holds, if it has joined before.
pub fn load_tokens(dir: &Path) -> io::Result<Option<Vec<u64>>> {
    let path = dir.join(TOKENS_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let bad = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
    let mut tokens = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if tokens.len() >= TOKENS_MAX {
            return Err(bad(format!(
                "{} holds more than {TOKENS_MAX} tokens",
                path.display()
            )));
        }
        let t: u64 = line
            .parse()
            .map_err(|_| bad(format!("{} holds a bad token {line:?}", path.display())))?;
        tokens.push(t);
    }
    if tokens.is_empty() {
        return Err(bad(format!("{} holds no token", path.display())));
    }
    Ok(Some(tokens))
}

const PEERS_FILE: &str = "PEERS";
/// Largest PEERS file read, in bytes.
const PEERS_BYTES_MAX: u64 = 64 * 1024 * 1024;

/// The states of every node this node knew when it last saw the ring
/// change (postcard of `Vec<NodeState>`; written whole). Unreadable content
/// is an error: the operator decides, the node does not guess.
pub fn load_peers(dir: &Path) -> io::Result<Vec<crate::net::message::NodeState>> {
    let path = dir.join(PEERS_FILE);
    let bytes = match std::fs::metadata(&path) {
        Ok(m) if m.len() > PEERS_BYTES_MAX => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} is larger than {PEERS_BYTES_MAX} bytes", path.display()),
            ));
        }
        Ok(_) => std::fs::read(&path)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    postcard::from_bytes(&bytes).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} does not decode: {e}", path.display()),
        )
    })
}

/// Records the states of every known node.
pub fn save_peers(dir: &Path, states: &[crate::net::message::NodeState]) -> io::Result<()> {
    let bytes = postcard::to_allocvec(states)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    write_atomically(dir, PEERS_FILE, &bytes)
}

const MOVE_FILE: &str = "MOVE";
/// Largest MOVE file read, in bytes.
const MOVE_BYTES_MAX: u64 = 64 * 1024 * 1024;

/// The movement record kept in `MOVE` in the data directory (postcard of
/// [`MoveRecord`](crate::movement::MoveRecord): magic "RKMV", version 1,
/// then the record; absent when no movement is in progress).
pub struct FileMoveLog {
    dir: std::path::PathBuf,
}

const MOVE_MAGIC: &[u8; 4] = b"RKMV";
const MOVE_VERSION: u8 = 1;

impl FileMoveLog {
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
        }
    }
}

impl crate::movement::MoveLog for FileMoveLog {
    fn load(&self) -> io::Result<Option<crate::movement::MoveRecord>> {
        let path = self.dir.join(MOVE_FILE);
        let bytes = match std::fs::metadata(&path) {
            Ok(m) if m.len() > MOVE_BYTES_MAX => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} is larger than {MOVE_BYTES_MAX} bytes", path.display()),
                ));
            }
            Ok(_) => std::fs::read(&path)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let bad = |why: String| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {why}", path.display()),
            )
        };
        let body = bytes
            .strip_prefix(MOVE_MAGIC.as_slice())
            .ok_or_else(|| bad("bad magic".into()))?;
        match body.split_first() {
            Some((&MOVE_VERSION, rest)) => postcard::from_bytes(rest)
                .map(Some)
                .map_err(|e| bad(format!("does not decode: {e}"))),
            Some((v, _)) => Err(bad(format!("unknown version {v}"))),
            None => Err(bad("truncated".into())),
        }
    }

    fn save_tokens(&self, tokens: &[u64]) -> io::Result<()> {
        save_tokens(&self.dir, tokens)
    }

    fn save(&self, record: Option<&crate::movement::MoveRecord>) -> io::Result<()> {
        let Some(record) = record else {
            return match std::fs::remove_file(self.dir.join(MOVE_FILE)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => std::fs::File::open(&self.dir)?.sync_all(),
            };
        };
        let mut bytes = MOVE_MAGIC.to_vec();
        bytes.push(MOVE_VERSION);
        postcard::to_extend(record, bytes)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
            .and_then(|bytes| write_atomically(&self.dir, MOVE_FILE, &bytes))
    }
}

/// Records this node's tokens.
pub fn save_tokens(dir: &Path, tokens: &[u64]) -> io::Result<()> {
    let text: String = tokens.iter().map(|t| format!("{t}\n")).collect();
    write_atomically(dir, TOKENS_FILE, text.as_bytes())
}

/// Reads the node id from `dir`, creating one on first start.
pub fn load_or_create(dir: &Path) -> io::Result<u64> {
    let path = dir.join(NODE_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => parse(text.trim()).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} does not hold a node id: {:?}",
                    path.display(),
                    text.trim()
                ),
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir)?;
            let mut id = 0;
            while id == 0 {
                id = rand::random::<u64>();
            }
            // A crash leaves either no id or a whole one.
            write_atomically(dir, NODE_ID_FILE, format!("{id:016x}\n").as_bytes())?;
            Ok(id)
        }
        Err(e) => Err(e),
    }
}

fn parse(text: &str) -> Option<u64> {
    let id = u64::from_str_radix(text, 16).ok()?;
    (id != 0).then_some(id)
}

/// Formats a node id the way logs and admin output show it.
pub fn display(id: u64) -> String {
    format!("{id:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_epoch_grows_with_every_start_and_garbage_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(bump_epoch(dir.path()).expect("first"), 1);
        assert_eq!(bump_epoch(dir.path()).expect("second"), 2);
        std::fs::write(dir.path().join(EPOCH_FILE), "x").expect("write");
        assert!(bump_epoch(dir.path()).is_err());
    }

    #[test]
    fn id_is_stable_across_restarts_and_garbage_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = load_or_create(dir.path()).expect("create");
        let b = load_or_create(dir.path()).expect("reload");
        assert_eq!(a, b);
        assert_ne!(a, 0);
        std::fs::write(dir.path().join(NODE_ID_FILE), "not hex").expect("write");
        let err = load_or_create(dir.path()).expect_err("garbage must be refused");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn peers_roundtrip_and_garbage_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(load_peers(dir.path()).expect("none").is_empty());
        let states = crate::testing::ring_states(3, 4);
        save_peers(dir.path(), &states).expect("save");
        assert_eq!(load_peers(dir.path()).expect("load"), states);
        std::fs::write(dir.path().join(PEERS_FILE), b"\xff\xff\xff").expect("write");
        assert!(load_peers(dir.path()).is_err());
    }

    #[test]
    fn move_record_roundtrips_clears_and_garbage_is_refused() {
        use crate::movement::{MoveKind, MoveLog, MoveRecord};
        let dir = tempfile::tempdir().expect("tempdir");
        let log = FileMoveLog::new(dir.path());
        assert_eq!(log.load().expect("none"), None);
        let record = MoveRecord {
            kind: MoveKind::Join,
            done: vec![(1, 9, 42), (10, u64::MAX, 7)],
        };
        log.save(Some(&record)).expect("save");
        assert_eq!(log.load().expect("load"), Some(record));
        log.save(None).expect("clear");
        assert_eq!(log.load().expect("cleared"), None);
        log.save(None).expect("clearing twice is fine");
        std::fs::write(dir.path().join(MOVE_FILE), b"RKMV\x09junk").expect("write");
        assert!(log.load().is_err(), "unknown version refused");
        std::fs::write(dir.path().join(MOVE_FILE), b"nope").expect("write");
        assert!(log.load().is_err(), "bad magic refused");
    }

    #[test]
    fn tokens_roundtrip_and_garbage_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(load_tokens(dir.path()).expect("none"), None);
        save_tokens(dir.path(), &[3, 1, u64::MAX]).expect("save");
        assert_eq!(
            load_tokens(dir.path()).expect("load"),
            Some(vec![3, 1, u64::MAX])
        );
        std::fs::write(dir.path().join(TOKENS_FILE), "12\nnope\n").expect("write");
        assert!(load_tokens(dir.path()).is_err());
    }
}
