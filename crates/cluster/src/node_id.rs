//! A node's stable identity.
//!
//! The id is a random 64-bit number drawn on first start and kept in the file
//! `NODE_ID` in the data directory, so a restarted node keeps its place in
//! version vectors (and, with the cluster, in the ring).

use std::io;
use std::path::Path;

const NODE_ID_FILE: &str = "NODE_ID";

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
            // Write, fsync, rename, fsync the directory: a crash leaves either
            // no id or a whole one.
            let tmp = dir.join(format!("{NODE_ID_FILE}.tmp"));
            {
                use std::io::Write;
                let mut f = std::fs::File::create(&tmp)?;
                writeln!(f, "{id:016x}")?;
                f.sync_all()?;
            }
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(dir)?.sync_all()?;
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
}
