//! The engine's error type.
//!
//! Owns [`Error`] and the crate-wide [`Result`]. Every failure the engine can
//! report is one variant here, with the data a caller or an operator needs to act
//! on it (which file, which offset, what was wrong). Conversion to wire errors
//! (RESP, HTTP) happens in the front ends, never here.

use std::path::PathBuf;

/// The result type of every fallible engine call.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Bytes on disk failed a checksum or do not parse. The engine never serves
    /// data from such bytes.
    #[error("corruption in {} at offset {offset}: {detail}", file.display())]
    Corruption {
        file: PathBuf,
        offset: u64,
        detail: String,
    },

    /// An operating-system I/O call failed.
    #[error("i/o error during {op} on {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A write or fsync of the commit log (or a background flush/compaction's
    /// durable step) failed earlier. The engine refuses every later write; reads
    /// keep working. Reopen the engine to recover from the log.
    #[error("engine is read-only after an earlier failure: {cause}")]
    ReadOnly { cause: String },

    /// The engine was closed.
    #[error("engine is closed")]
    Closed,

    /// The caller passed something the engine cannot accept (oversized key,
    /// bad option, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// A write waited `waited_ms` for the background flush/compaction to make
    /// room and gave up (see `Options::write_stall_ms_max`). Retryable.
    #[error("write stalled for {waited_ms} ms waiting for background flush/compaction")]
    WriteStall { waited_ms: u64 },

    /// A file uses a feature this build cannot read (for example zstd blocks in
    /// a build without the `zstd` feature, or a newer format version).
    #[error("unsupported: {0}")]
    Unsupported(String),
}

impl Error {
    /// Shorthand for an [`Error::Corruption`].
    pub(crate) fn corruption(
        file: impl Into<PathBuf>,
        offset: u64,
        detail: impl Into<String>,
    ) -> Error {
        Error::Corruption {
            file: file.into(),
            offset,
            detail: detail.into(),
        }
    }

    /// Shorthand for an [`Error::Io`].
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// True for [`Error::Corruption`].
    pub fn is_corruption(&self) -> bool {
        matches!(self, Error::Corruption { .. })
    }

    /// True when the underlying I/O error says the device is full.
    pub fn is_out_of_space(&self) -> bool {
        match self {
            Error::Io { source, .. } => source.kind() == std::io::ErrorKind::StorageFull,
            Error::ReadOnly { cause } => {
                cause.contains("no space") || cause.contains("storage full")
            }
            _ => false,
        }
    }

    /// A copy of this error for reporting the same failure to several waiters
    /// (group commit followers). I/O sources are not `Clone`; their kind and text
    /// are kept.
    pub(crate) fn duplicate(&self) -> Error {
        match self {
            Error::Corruption {
                file,
                offset,
                detail,
            } => Error::Corruption {
                file: file.clone(),
                offset: *offset,
                detail: detail.clone(),
            },
            Error::Io { op, path, source } => Error::Io {
                op,
                path: path.clone(),
                source: std::io::Error::new(source.kind(), source.to_string()),
            },
            Error::ReadOnly { cause } => Error::ReadOnly {
                cause: cause.clone(),
            },
            Error::Closed => Error::Closed,
            Error::InvalidArgument(s) => Error::InvalidArgument(s.clone()),
            Error::WriteStall { waited_ms } => Error::WriteStall {
                waited_ms: *waited_ms,
            },
            Error::Unsupported(s) => Error::Unsupported(s.clone()),
        }
    }
}
