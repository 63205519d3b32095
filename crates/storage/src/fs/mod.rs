//! The file-system seam.
//!
//! Every byte the engine reads or writes goes through [`Fs`], so tests (and later
//! the cluster simulation) can swap the real file system for [`FaultFs`], which
//! loses unsynced data on a simulated crash, tears the last write, fails fsync
//! and runs out of space, deterministically from a seed.
//!
//! This module owns the traits and the two implementations; it knows nothing of
//! the engine's file formats.

mod fault;
mod real;

use std::io;
use std::path::Path;
use std::sync::Arc;

pub use fault::{CrashMode, FaultFs};
pub use real::RealFs;

/// A file opened for appending. Methods take `&self` so the periodic syncer can
/// fsync the log while the group-commit leader appends to it.
pub trait WritableFile: Send + Sync {
    /// Appends all of `data`, with a single `write()` system call where the OS
    /// allows. After it returns the bytes survive a crash of the process (they
    /// are in the OS), but not of the machine until [`WritableFile::sync`].
    fn append(&self, data: &[u8]) -> io::Result<()>;

    /// Makes everything appended so far durable (fdatasync).
    fn sync(&self) -> io::Result<()>;
}

/// A file opened for positional reads.
pub trait ReadableFile: Send + Sync {
    /// Fills `buf` from `offset`; a short file is an `UnexpectedEof` error.
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;

    /// The file's length in bytes.
    fn len(&self) -> u64;

    /// True for an empty file.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An exclusive lock on a data directory, released on drop.
pub trait DirLock: Send + Sync {}

/// The operations the engine needs from a file system.
pub trait Fs: Send + Sync + std::fmt::Debug {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;

    /// Creates `path` (truncating any existing file) for appending.
    fn create(&self, path: &Path) -> io::Result<Arc<dyn WritableFile>>;

    /// Opens an existing file for reading.
    fn open(&self, path: &Path) -> io::Result<Arc<dyn ReadableFile>>;

    /// Atomically replaces `to` with `from` (durable after [`Fs::sync_dir`]).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;

    fn remove(&self, path: &Path) -> io::Result<()>;

    /// The names (not paths) of the files in `dir`.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;

    /// Makes creations, renames and removals in `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;

    /// Takes an exclusive lock on `dir`, failing if another engine holds it.
    fn lock_dir(&self, dir: &Path) -> io::Result<Box<dyn DirLock>>;

    /// Makes `to` a second name of the file `from` (a hard link; same file
    /// system). File systems without links say `Unsupported`.
    fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()> {
        let _ = (from, to);
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "this file system has no hard links",
        ))
    }

    /// Reads a whole file.
    fn read_all(&self, path: &Path) -> io::Result<Vec<u8>> {
        let f = self.open(path)?;
        let len = usize::try_from(f.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "file too large"))?;
        let mut buf = vec![0u8; len];
        f.read_exact_at(0, &mut buf)?;
        Ok(buf)
    }
}
