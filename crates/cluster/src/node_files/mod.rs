//! A node's own small files in its data directory, read and written
//! through storage's [`Fs`] seam (so a simulation's disk faults reach them
//! as they reach the engine's files).
//!
//! | file      | holds                                                     |
//! |-----------|-----------------------------------------------------------|
//! | `NODE_ID` | the node's id, drawn on its first start                   |
//! | `EPOCH`   | the count of its starts (see [`crate::causality::epoch_floor`]) |
//! | `TOKENS`  | its ring tokens, once it has joined                       |
//! | `PEERS`   | every node state it knew when the ring last changed       |
//! | `MOVE`    | the movement it drives of itself ([`MoveRecord`])         |
//! | `TRUNCATED` | the cluster's truncation point it knows ([`crate::truncate`]) |
//!
//! # Format (on disk: do not change without bumping the version)
//! ```text
//! file    := magic:4 version:u8 len:u32le body crc:u32le
//!            crc = CRC-32C of magic .. body
//! NODE_ID := magic "RKID", version 1, body id:u64le (never 0)
//! EPOCH   := magic "RKEP", version 1, body epoch:u64le
//! TOKENS  := magic "RKTK", version 1, body count:u32le token:u64le*
//! PEERS   := magic "RKPR", version 1, body postcard(Vec<NodeState>)
//! MOVE    := magic "RKMV", version 2, body postcard(MoveRecord)
//! TRUNCATED := magic "RKTR", version 1, body at:u64le (an HLC)
//! ```
//! Every file is written whole: to `NAME.tmp`, synced, renamed over `NAME`,
//! and the directory synced; a crash leaves the old file or the new one,
//! never a mix. A file that fails its checksum, or whose magic or version
//! is unknown, is an error: the operator decides, the node does not guess.
//!
//! Nodes of earlier versions wrote `NODE_ID` as hex text, `EPOCH` as a
//! decimal, `TOKENS` as one decimal per line, `PEERS` as bare postcard and
//! `MOVE` as `"RKMV" 1 postcard(...)`. Such a file is read once and
//! rewritten in the format above.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ringkv_storage::Fs;
use serde::{Deserialize, Serialize};

use crate::api::MovementKind;
use crate::id::NodeId;
use crate::movement::{DoneTransfer, MoveRecord, MoveRecordStore};
use crate::net::message::NodeState;
use crate::ring::Token;

const NODE_ID_FILE: &str = "NODE_ID";
const EPOCH_FILE: &str = "EPOCH";
const TOKENS_FILE: &str = "TOKENS";
const PEERS_FILE: &str = "PEERS";
const MOVE_FILE: &str = "MOVE";
const TRUNCATED_FILE: &str = "TRUNCATED";

const NODE_ID_MAGIC: &[u8; 4] = b"RKID";
const EPOCH_MAGIC: &[u8; 4] = b"RKEP";
const TOKENS_MAGIC: &[u8; 4] = b"RKTK";
const PEERS_MAGIC: &[u8; 4] = b"RKPR";
const MOVE_MAGIC: &[u8; 4] = b"RKMV";
const TRUNCATED_MAGIC: &[u8; 4] = b"RKTR";

/// Format version of `NODE_ID`, `EPOCH`, `TOKENS`, `PEERS` and `TRUNCATED`.
const FILE_VERSION: u8 = 1;
/// Format version of `MOVE` (1 was the unframed layout before it).
const MOVE_VERSION: u8 = 2;

/// Most tokens a node may hold (weight max x tokens per weight, with room).
pub const TOKENS_MAX: usize = 65_536;
/// Largest node file read, in bytes (PEERS of a large cluster is the big one).
pub const NODE_FILE_BYTES_MAX: u64 = 64 * 1024 * 1024;

/// Bytes of the frame around a body: magic, version, length, checksum.
const FRAME_BYTES: usize = 4 + 1 + 4 + 4;

/// A node's files, in `dir` on `fs`.
#[derive(Clone)]
pub struct NodeFiles {
    fs: Arc<dyn Fs>,
    dir: PathBuf,
}

fn invalid(path: &Path, why: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{}: {why}", path.display()),
    )
}

/// The body of a framed file, checked.
fn unframe<'a>(path: &Path, bytes: &'a [u8], magic: &[u8; 4], version: u8) -> io::Result<&'a [u8]> {
    if bytes.len() < FRAME_BYTES {
        return Err(invalid(path, "truncated"));
    }
    if &bytes[..4] != magic {
        return Err(invalid(path, "bad magic"));
    }
    if bytes[4] != version {
        return Err(invalid(path, format!("unknown version {}", bytes[4])));
    }
    let len = u32::from_le_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) as usize;
    if bytes.len() != FRAME_BYTES + len {
        return Err(invalid(path, "length does not match"));
    }
    let body_end = 9 + len;
    let crc = u32::from_le_bytes([
        bytes[body_end],
        bytes[body_end + 1],
        bytes[body_end + 2],
        bytes[body_end + 3],
    ]);
    if crc32c::crc32c(&bytes[..body_end]) != crc {
        return Err(invalid(path, "checksum mismatch"));
    }
    Ok(&bytes[9..body_end])
}

fn frame(magic: &[u8; 4], version: u8, body: &[u8]) -> io::Result<Vec<u8>> {
    let len = u32::try_from(body.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "node file body too large"))?;
    let mut out = Vec::with_capacity(FRAME_BYTES + body.len());
    out.extend_from_slice(magic);
    out.push(version);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(body);
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// Which layout a file was read in.
enum Layout {
    Current,
    /// Written by a node of an earlier version: to rewrite.
    Earlier,
}

impl NodeFiles {
    pub fn new(fs: Arc<dyn Fs>, dir: impl Into<PathBuf>) -> Self {
        Self {
            fs,
            dir: dir.into(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// A file's bytes, `None` when it does not exist.
    fn read(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        let path = self.path(name);
        let file = match self.fs.open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        if file.len() > NODE_FILE_BYTES_MAX {
            return Err(invalid(
                &path,
                format!("larger than {NODE_FILE_BYTES_MAX} bytes"),
            ));
        }
        let mut buf = vec![0u8; file.len() as usize];
        file.read_exact_at(0, &mut buf)?;
        Ok(Some(buf))
    }

    /// Replaces a file whole: write a temporary file, sync it, rename it
    /// over the old one, sync the directory.
    fn write(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        self.fs.create_dir_all(&self.dir)?;
        let tmp = self.path(&format!("{name}.tmp"));
        let file = self.fs.create(&tmp)?;
        file.append(bytes)?;
        file.sync()?;
        drop(file);
        self.fs.rename(&tmp, &self.path(name))?;
        self.fs.sync_dir(&self.dir)
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        match self.fs.remove(&self.path(name)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => self.fs.sync_dir(&self.dir),
        }
    }

    /// A framed file's body, or the whole file when it is of an earlier
    /// layout: one without the magic, or one with the magic and a version
    /// in `earlier`. The magic with any other version is an error (a file
    /// of a later version, or damage): it is never read as something else.
    fn read_body(
        &self,
        name: &str,
        magic: &[u8; 4],
        version: u8,
        earlier: &[u8],
    ) -> io::Result<Option<(Vec<u8>, Layout)>> {
        let Some(bytes) = self.read(name)? else {
            return Ok(None);
        };
        if !bytes.starts_with(magic) {
            return Ok(Some((bytes, Layout::Earlier)));
        }
        match bytes.get(4) {
            Some(&v) if v == version => {
                let body = unframe(&self.path(name), &bytes, magic, version)?.to_vec();
                Ok(Some((body, Layout::Current)))
            }
            Some(v) if earlier.contains(v) => Ok(Some((bytes, Layout::Earlier))),
            Some(v) => Err(invalid(&self.path(name), format!("unknown version {v}"))),
            None => Err(invalid(&self.path(name), "truncated")),
        }
    }

    /// The node id, if one was drawn before.
    pub fn node_id(&self) -> io::Result<Option<NodeId>> {
        let path = self.path(NODE_ID_FILE);
        let Some((body, layout)) =
            self.read_body(NODE_ID_FILE, NODE_ID_MAGIC, FILE_VERSION, &[])?
        else {
            return Ok(None);
        };
        let id = match layout {
            Layout::Current => u64_body(&path, &body)?,
            Layout::Earlier => {
                let text = String::from_utf8_lossy(&body);
                u64::from_str_radix(text.trim(), 16).map_err(|_| {
                    invalid(&path, format!("does not hold a node id: {:?}", text.trim()))
                })?
            }
        };
        if id == 0 {
            return Err(invalid(&path, "node id 0"));
        }
        if matches!(layout, Layout::Earlier) {
            self.save_node_id(id)?;
        }
        Ok(Some(id))
    }

    pub fn save_node_id(&self, id: NodeId) -> io::Result<()> {
        self.write(
            NODE_ID_FILE,
            &frame(NODE_ID_MAGIC, FILE_VERSION, &id.to_le_bytes())?,
        )
    }

    /// The node id, drawn and kept on the first start.
    pub fn load_or_create_id(&self) -> io::Result<NodeId> {
        if let Some(id) = self.node_id()? {
            return Ok(id);
        }
        let mut id = 0;
        while id == 0 {
            id = rand::random::<u64>();
        }
        // A crash leaves either no id or a whole one.
        self.save_node_id(id)?;
        Ok(id)
    }

    /// Bumps this node's epoch and returns the new one (1 on a first start):
    /// durable before the node writes anything.
    pub fn bump_epoch(&self) -> io::Result<u64> {
        let epoch = self.epoch()? + 1;
        self.save_epoch(epoch)?;
        Ok(epoch)
    }

    /// The node's last epoch, 0 before its first start.
    pub fn epoch(&self) -> io::Result<u64> {
        let path = self.path(EPOCH_FILE);
        match self.read_body(EPOCH_FILE, EPOCH_MAGIC, FILE_VERSION, &[])? {
            None => Ok(0),
            Some((body, Layout::Current)) => u64_body(&path, &body),
            Some((body, Layout::Earlier)) => String::from_utf8_lossy(&body)
                .trim()
                .parse::<u64>()
                .map_err(|e| invalid(&path, format!("not an epoch: {e}"))),
        }
    }

    /// Raises the epoch to at least `floor` (a restored snapshot's); the
    /// epoch now kept.
    pub fn raise_epoch(&self, floor: u64) -> io::Result<u64> {
        let epoch = self.epoch()?.max(floor);
        self.save_epoch(epoch)?;
        Ok(epoch)
    }

    fn save_epoch(&self, epoch: u64) -> io::Result<()> {
        self.write(
            EPOCH_FILE,
            &frame(EPOCH_MAGIC, FILE_VERSION, &epoch.to_le_bytes())?,
        )
    }

    /// The cluster's truncation point this node recorded (0: none).
    pub fn truncated_at(&self) -> io::Result<u64> {
        let path = self.path(TRUNCATED_FILE);
        match self.read_body(TRUNCATED_FILE, TRUNCATED_MAGIC, FILE_VERSION, &[])? {
            None => Ok(0),
            Some((body, Layout::Current)) => u64_body(&path, &body),
            Some((_, Layout::Earlier)) => Err(invalid(&path, "not a truncation point file")),
        }
    }

    /// Records the truncation point `at` durably (written whole and
    /// synced, as every node file).
    pub fn save_truncated_at(&self, at: u64) -> io::Result<()> {
        self.write(
            TRUNCATED_FILE,
            &frame(TRUNCATED_MAGIC, FILE_VERSION, &at.to_le_bytes())?,
        )
    }

    /// The tokens this node holds, if it has joined before.
    pub fn tokens(&self) -> io::Result<Option<Vec<Token>>> {
        let path = self.path(TOKENS_FILE);
        let Some((body, layout)) = self.read_body(TOKENS_FILE, TOKENS_MAGIC, FILE_VERSION, &[])?
        else {
            return Ok(None);
        };
        let tokens = match layout {
            Layout::Current => decode_tokens(&path, &body)?,
            Layout::Earlier => {
                let tokens = parse_token_lines(&path, &String::from_utf8_lossy(&body))?;
                self.save_tokens(&tokens)?;
                tokens
            }
        };
        if tokens.is_empty() {
            return Err(invalid(&path, "holds no token"));
        }
        Ok(Some(tokens))
    }

    /// Records this node's tokens.
    pub fn save_tokens(&self, tokens: &[Token]) -> io::Result<()> {
        if tokens.len() > TOKENS_MAX {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} tokens, at most {TOKENS_MAX}", tokens.len()),
            ));
        }
        let mut body = Vec::with_capacity(4 + tokens.len() * 8);
        body.extend_from_slice(&(tokens.len() as u32).to_le_bytes());
        for t in tokens {
            body.extend_from_slice(&t.to_le_bytes());
        }
        self.write(TOKENS_FILE, &frame(TOKENS_MAGIC, FILE_VERSION, &body)?)
    }

    /// The states of every node this node knew when it last saw the ring
    /// change (empty when it never did).
    pub fn peers(&self) -> io::Result<Vec<NodeState>> {
        let path = self.path(PEERS_FILE);
        let Some((body, layout)) = self.read_body(PEERS_FILE, PEERS_MAGIC, FILE_VERSION, &[])?
        else {
            return Ok(Vec::new());
        };
        let states: Vec<NodeState> = postcard::from_bytes(&body)
            .map_err(|e| invalid(&path, format!("does not decode: {e}")))?;
        if matches!(layout, Layout::Earlier) {
            self.save_peers(&states)?;
        }
        Ok(states)
    }

    /// Records the states of every known node.
    pub fn save_peers(&self, states: &[NodeState]) -> io::Result<()> {
        let body = postcard::to_allocvec(states)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        self.write(PEERS_FILE, &frame(PEERS_MAGIC, FILE_VERSION, &body)?)
    }

    /// The movement record, absent when no movement is in progress.
    pub fn move_record(&self) -> io::Result<Option<MoveRecord>> {
        let path = self.path(MOVE_FILE);
        let Some((body, layout)) = self.read_body(MOVE_FILE, MOVE_MAGIC, MOVE_VERSION, &[1])?
        else {
            return Ok(None);
        };
        match layout {
            Layout::Current => postcard::from_bytes(&body)
                .map(Some)
                .map_err(|e| invalid(&path, format!("does not decode: {e}"))),
            Layout::Earlier => {
                let record = decode_move_v1(&path, &body)?;
                self.save_move_record(Some(&record))?;
                Ok(Some(record))
            }
        }
    }

    /// Replaces the movement record (`None`: no movement).
    pub fn save_move_record(&self, record: Option<&MoveRecord>) -> io::Result<()> {
        let Some(record) = record else {
            return self.remove(MOVE_FILE);
        };
        let body = postcard::to_allocvec(record)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        self.write(MOVE_FILE, &frame(MOVE_MAGIC, MOVE_VERSION, &body)?)
    }
}

impl MoveRecordStore for NodeFiles {
    fn load(&self) -> io::Result<Option<MoveRecord>> {
        self.move_record()
    }

    fn save(&self, record: Option<&MoveRecord>) -> io::Result<()> {
        self.save_move_record(record)
    }

    fn save_tokens(&self, tokens: &[Token]) -> io::Result<()> {
        NodeFiles::save_tokens(self, tokens)
    }
}

fn u64_body(path: &Path, body: &[u8]) -> io::Result<u64> {
    let bytes: [u8; 8] = body
        .try_into()
        .map_err(|_| invalid(path, "body is not 8 bytes"))?;
    Ok(u64::from_le_bytes(bytes))
}

fn decode_tokens(path: &Path, body: &[u8]) -> io::Result<Vec<Token>> {
    let (count, rest) = body
        .split_first_chunk::<4>()
        .ok_or_else(|| invalid(path, "truncated"))?;
    let count = u32::from_le_bytes(*count) as usize;
    if count > TOKENS_MAX {
        return Err(invalid(
            path,
            format!("holds more than {TOKENS_MAX} tokens"),
        ));
    }
    if rest.len() != count * 8 {
        return Err(invalid(path, "token count does not match"));
    }
    Ok(rest
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
        .collect())
}

/// `TOKENS` of the earlier layout: one decimal token per line.
fn parse_token_lines(path: &Path, text: &str) -> io::Result<Vec<Token>> {
    let mut tokens = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if tokens.len() >= TOKENS_MAX {
            return Err(invalid(
                path,
                format!("holds more than {TOKENS_MAX} tokens"),
            ));
        }
        let t: u64 = line
            .parse()
            .map_err(|_| invalid(path, format!("holds a bad token {line:?}")))?;
        tokens.push(t);
    }
    Ok(tokens)
}

/// `MOVE` of the earlier layout: `"RKMV" 1 postcard(record)`, where the
/// record's kind was join, leave or left and each transfer done a tuple.
fn decode_move_v1(path: &Path, bytes: &[u8]) -> io::Result<MoveRecord> {
    #[derive(Serialize, Deserialize)]
    enum KindV1 {
        Join,
        Leave,
        Left,
    }
    #[derive(Serialize, Deserialize)]
    struct RecordV1 {
        kind: KindV1,
        done: Vec<(u64, u64, u64)>,
    }
    let body = bytes
        .strip_prefix(MOVE_MAGIC.as_slice())
        .ok_or_else(|| invalid(path, "bad magic"))?;
    let record: RecordV1 = match body.split_first() {
        Some((1, rest)) => postcard::from_bytes(rest)
            .map_err(|e| invalid(path, format!("does not decode: {e}")))?,
        Some((v, _)) => return Err(invalid(path, format!("unknown version {v}"))),
        None => return Err(invalid(path, "truncated")),
    };
    let (kind, left) = match record.kind {
        KindV1::Join => (MovementKind::Join, false),
        KindV1::Leave => (MovementKind::Decommission, false),
        KindV1::Left => (MovementKind::Decommission, true),
    };
    Ok(MoveRecord {
        kind,
        left,
        done: record
            .done
            .into_iter()
            .map(|(lo, hi, target)| DoneTransfer { lo, hi, target })
            .collect(),
    })
}

#[cfg(test)]
mod tests;
