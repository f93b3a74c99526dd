//! The persisted commit position: every record with a lower sequence number is done and must not
//! be replayed.
//!
//! A 12-byte file, `<dir>/commit`: the position (u64, little endian) and a CRC-32 of it. It is
//! replaced atomically (written to `commit.tmp`, then renamed over), so a crash leaves either the
//! old or the new position, never a mix. A position that cannot be read is treated as absent: the
//! queue then replays everything still in its segments (at-least-once, never lost).

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::QueueError;

const FILE: &str = "commit";
const TMP: &str = "commit.tmp";

/// Writes the commit position of one queue directory.
pub(super) struct CommitFile {
    name: String,
    dir: PathBuf,
    path: PathBuf,
    tmp: PathBuf,
    /// The position last written.
    written: u64,
}

impl CommitFile {
    /// Reads the position left in `dir` (0 when there is none or it is damaged) and removes a
    /// half-written temporary file.
    pub(super) fn open(name: &str, dir: &Path) -> Result<(CommitFile, u64), QueueError> {
        let path = dir.join(FILE);
        let tmp = dir.join(TMP);
        match fs::remove_file(&tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_error(name, "removing", &tmp, e)),
            _ => {}
        }
        let position = match fs::read(&path) {
            Ok(bytes) => decode(&bytes).unwrap_or_else(|| {
                tracing::warn!(queue = name, path = %path.display(), "commit position is damaged; replaying every segment");
                0
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(io_error(name, "reading", &path, e)),
        };
        let file = CommitFile { name: name.into(), dir: dir.into(), path, tmp, written: position };
        Ok((file, position))
    }

    /// The position last written (or read at open).
    pub(super) fn written(&self) -> u64 {
        self.written
    }

    /// Replaces the position. With `sync`, it is on stable storage when this returns (file and
    /// directory fsync'ed); without, it survives a killed process but maybe not a power loss.
    pub(super) fn store(&mut self, position: u64, sync: bool) -> Result<(), QueueError> {
        let mut f = File::create(&self.tmp).map_err(|e| self.error("creating", &self.tmp, e))?;
        f.write_all(&encode(position)).map_err(|e| self.error("writing", &self.tmp, e))?;
        if sync {
            f.sync_all().map_err(|e| self.error("syncing", &self.tmp, e))?;
        }
        drop(f);
        fs::rename(&self.tmp, &self.path).map_err(|e| self.error("renaming", &self.tmp, e))?;
        if sync {
            sync_dir(&self.dir).map_err(|e| self.error("syncing", &self.dir, e))?;
        }
        self.written = position;
        Ok(())
    }

    fn error(&self, action: &'static str, path: &Path, e: io::Error) -> QueueError {
        io_error(&self.name, action, path, e)
    }
}

pub(super) fn io_error(name: &str, action: &'static str, path: &Path, source: io::Error) -> QueueError {
    QueueError::Io { name: name.into(), action, path: path.display().to_string(), source }
}

/// Makes renames, creations and deletions in `dir` durable.
pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

fn encode(position: u64) -> [u8; 12] {
    let mut out = [0u8; 12];
    let pos = position.to_le_bytes();
    out[..8].copy_from_slice(&pos);
    out[8..].copy_from_slice(&crc32fast::hash(&pos).to_le_bytes());
    out
}

fn decode(bytes: &[u8]) -> Option<u64> {
    let (pos, crc) = (bytes.get(..8)?, bytes.get(8..12)?);
    if bytes.len() != 12 || crc32fast::hash(pos).to_le_bytes() != crc {
        return None;
    }
    Some(u64::from_le_bytes(pos.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (mut c, pos) = CommitFile::open("q", dir.path()).unwrap();
        assert_eq!(pos, 0);
        c.store(17, false).unwrap();
        c.store(1234567, true).unwrap();
        assert_eq!(c.written(), 1234567);
        let (_, pos) = CommitFile::open("q", dir.path()).unwrap();
        assert_eq!(pos, 1234567);
        assert!(!dir.path().join(TMP).exists());
    }

    #[test]
    fn damaged_position_reads_as_zero() {
        let dir = tempfile::tempdir().unwrap();
        let (mut c, _) = CommitFile::open("q", dir.path()).unwrap();
        c.store(99, false).unwrap();
        let mut bytes = fs::read(dir.path().join(FILE)).unwrap();
        bytes[0] ^= 1;
        fs::write(dir.path().join(FILE), &bytes).unwrap();
        assert_eq!(CommitFile::open("q", dir.path()).unwrap().1, 0);
        fs::write(dir.path().join(FILE), b"short").unwrap();
        assert_eq!(CommitFile::open("q", dir.path()).unwrap().1, 0);
    }

    #[test]
    fn leftover_temporary_file_is_ignored_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let (mut c, _) = CommitFile::open("q", dir.path()).unwrap();
        c.store(5, false).unwrap();
        fs::write(dir.path().join(TMP), encode(500)).unwrap();
        assert_eq!(CommitFile::open("q", dir.path()).unwrap().1, 5);
        assert!(!dir.path().join(TMP).exists());
    }
}
