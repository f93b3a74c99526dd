//! Which file is this? `(device, inode)` plus a checksum of the file's first bytes.
//!
//! The inode alone is not enough: after a file is deleted its inode number is soon reused by a new
//! file, and a checkpoint keyed by inode would make the tailer skip the new file's beginning. The
//! head checksum tells them apart. A file shorter than [`HEAD_LEN`] is fingerprinted over what it
//! has; the fingerprint grows with the file until it covers [`HEAD_LEN`] bytes. Since a
//! checkpoint's offset never exceeds the bytes the fingerprint was taken over (up to
//! [`HEAD_LEN`]), a reused inode matches only if its new content starts with the same bytes, which
//! for timestamped CRI/Docker lines does not happen in practice.

use std::fs::{File, Metadata};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};

use serde::{Deserialize, Serialize};

/// Bytes of the head covered by the checksum.
pub const HEAD_LEN: u64 = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FileIdentity {
    pub dev: u64,
    pub inode: u64,
    /// Bytes covered by `head_hash` (`min(size, HEAD_LEN)` when taken).
    pub head_len: u64,
    /// xxh3 of the first `head_len` bytes.
    pub head_hash: u64,
}

impl FileIdentity {
    /// Fingerprints an open file.
    pub fn of(file: &File, meta: &Metadata) -> io::Result<FileIdentity> {
        let head_len = meta.len().min(HEAD_LEN);
        let head_hash = head_hash(file, head_len)?.unwrap_or(0);
        Ok(FileIdentity { dev: meta.dev(), inode: meta.ino(), head_len, head_hash })
    }

    /// Whether the values can describe a file (they come from disk, where anything can happen).
    pub fn is_valid(&self) -> bool {
        self.head_len <= HEAD_LEN
    }

    /// Whether `file` is the file this identity was taken from.
    pub fn matches(&self, file: &File, meta: &Metadata) -> io::Result<bool> {
        if meta.dev() != self.dev || meta.ino() != self.inode || meta.len() < self.head_len {
            return Ok(false);
        }
        Ok(head_hash(file, self.head_len)? == Some(self.head_hash))
    }

    /// Whether `file` (another inode, e.g. a copy) starts with the bytes this fingerprint covers.
    pub fn same_head(&self, file: &File, meta: &Metadata) -> io::Result<bool> {
        if meta.len() < self.head_len {
            return Ok(false);
        }
        Ok(head_hash(file, self.head_len)? == Some(self.head_hash))
    }

    /// Extends the fingerprint while the file is shorter than [`HEAD_LEN`] was; `true` if changed.
    pub fn grow(&mut self, file: &File, size: u64) -> io::Result<bool> {
        if self.head_len >= HEAD_LEN || size <= self.head_len {
            return Ok(false);
        }
        let len = size.min(HEAD_LEN);
        if let Some(h) = head_hash(file, len)? {
            self.head_len = len;
            self.head_hash = h;
            return Ok(true);
        }
        Ok(false)
    }
}

/// `None` if the file has fewer than `len` bytes (or `len` is more than [`HEAD_LEN`], which only
/// a damaged checkpoint can hold: it matches no file).
fn head_hash(file: &File, len: u64) -> io::Result<Option<u64>> {
    if len > HEAD_LEN {
        return Ok(None);
    }
    let mut buf = [0u8; HEAD_LEN as usize];
    let buf = &mut buf[..len as usize];
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], got as u64) {
            Ok(0) => return Ok(None),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Some(xxhash_rust::xxh3::xxh3_64(buf)))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn same_inode_with_different_content_does_not_match() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"first content\n").unwrap();
        let f = File::open(&path).unwrap();
        let id = FileIdentity::of(&f, &f.metadata().unwrap()).unwrap();
        assert!(id.matches(&f, &f.metadata().unwrap()).unwrap());
        // Same inode (truncated and rewritten in place), other bytes.
        std::fs::write(&path, b"other content\n").unwrap();
        assert!(!id.matches(&f, &f.metadata().unwrap()).unwrap());
    }

    #[test]
    fn a_head_len_beyond_the_head_matches_nothing_and_does_not_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![b'x'; 4096]).unwrap();
        let f = File::open(&path).unwrap();
        let mut id = FileIdentity::of(&f, &f.metadata().unwrap()).unwrap();
        id.head_len = 1000;
        assert!(!id.is_valid());
        assert!(!id.matches(&f, &f.metadata().unwrap()).unwrap());
        assert!(!id.grow(&f, 4096).unwrap());
    }

    #[test]
    fn fingerprint_grows_with_the_file_and_still_matches() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"ab").unwrap();
        let f = File::open(&path).unwrap();
        let mut id = FileIdentity::of(&f, &f.metadata().unwrap()).unwrap();
        assert_eq!(id.head_len, 2);
        let mut w = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        w.write_all(&[b'x'; 400]).unwrap();
        assert!(id.matches(&f, &f.metadata().unwrap()).unwrap());
        assert!(id.grow(&f, 402).unwrap());
        assert_eq!(id.head_len, HEAD_LEN);
        assert!(id.matches(&f, &f.metadata().unwrap()).unwrap());
        assert!(!id.grow(&f, 402).unwrap());
    }
}
