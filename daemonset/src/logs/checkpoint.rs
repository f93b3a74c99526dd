//! Where each file has been delivered up to, on disk and in memory.
//!
//! [`CheckpointStore`] keeps `data_dir/logs/checkpoints.json`: a list of file identities with the
//! offset up to which Loki acknowledged every line. It is written atomically (temporary file,
//! fsync, rename), so a crash leaves either the old or the new version.
//!
//! [`Registry`] is the in-memory side, shared by the reading thread (which registers, per batch,
//! the offset each file reached) and the task awaiting acknowledgements (which resolves them).
//! Acknowledgements may come back in any order; a file's acknowledged offset advances only to the
//! end of its longest prefix of resolved batches, so it never passes a batch still in flight.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::identity::FileIdentity;

/// One file's acknowledged position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    #[serde(flatten)]
    pub identity: FileIdentity,
    /// Every line before this byte offset was acknowledged.
    pub offset: u64,
    /// Where the file was last seen (informational: identity decides).
    pub path: PathBuf,
}

#[derive(Serialize, Deserialize)]
struct OnDisk {
    version: u32,
    files: Vec<Checkpoint>,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("reading checkpoints {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("checkpoints {path} are not valid: {source}")]
    Parse { path: PathBuf, source: serde_json::Error },
    #[error("checkpoints {path} are not valid: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("writing checkpoints {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

/// `data_dir/logs/checkpoints.json`.
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    path: PathBuf,
}

impl CheckpointStore {
    pub fn new(data_dir: &Path) -> CheckpointStore {
        CheckpointStore { path: data_dir.join("logs").join("checkpoints.json") }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `Ok(None)` when there is no file: the very first start.
    pub fn load(&self) -> Result<Option<Vec<Checkpoint>>, CheckpointError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(CheckpointError::Read { path: self.path.clone(), source }),
        };
        let on_disk: OnDisk = serde_json::from_slice(&bytes)
            .map_err(|source| CheckpointError::Parse { path: self.path.clone(), source })?;
        let invalid = |reason: String| Err(CheckpointError::Invalid { path: self.path.clone(), reason });
        if on_disk.version != 1 {
            return invalid(format!("version {} (this agent writes 1)", on_disk.version));
        }
        // Every value is checked before the tailer uses it: a damaged file is an unreadable one.
        for c in &on_disk.files {
            if !c.identity.is_valid() {
                return invalid(format!(
                    "{}: head_len {} (at most {}) with head_hash {}",
                    c.path.display(),
                    c.identity.head_len,
                    super::identity::HEAD_LEN,
                    c.identity.head_hash
                ));
            }
            if c.offset > i64::MAX as u64 {
                return invalid(format!("{}: offset {} is beyond any file", c.path.display(), c.offset));
            }
        }
        Ok(Some(on_disk.files))
    }

    /// Replaces the file atomically.
    pub fn save(&self, files: Vec<Checkpoint>) -> Result<(), CheckpointError> {
        let err = |source| CheckpointError::Write { path: self.path.clone(), source };
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(err)?;
        let bytes = serde_json::to_vec_pretty(&OnDisk { version: 1, files }).map_err(|e| err(io::Error::other(e)))?;
        let tmp = self.path.with_extension("json.tmp");
        let mut f = std::fs::File::create(&tmp).map_err(err)?;
        f.write_all(&bytes).map_err(err)?;
        f.sync_all().map_err(err)?;
        drop(f);
        std::fs::rename(&tmp, &self.path).map_err(err)?;
        // Make the rename itself durable.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

/// The tailer's handle on one tracked file (one per open descriptor and generation: a truncated
/// file gets a new key).
pub type FileKey = u64;

#[derive(Debug)]
struct Pending {
    seq: u64,
    offset: u64,
    done: bool,
}

#[derive(Debug)]
struct Tracked {
    identity: FileIdentity,
    path: PathBuf,
    acked: u64,
    size: u64,
    pending: VecDeque<Pending>,
    /// Highest offset registered so far.
    registered: u64,
    /// The descriptor is closed; forget the file once nothing is pending.
    released: bool,
}

/// In-memory checkpoints with per-file ordered pending acknowledgements.
#[derive(Debug, Default)]
pub struct Registry {
    files: HashMap<FileKey, Tracked>,
    next_key: FileKey,
    dirty: bool,
}

impl Registry {
    /// Starts tracking a file whose lines before `acked` need no delivery.
    pub fn track(&mut self, identity: FileIdentity, path: PathBuf, acked: u64, size: u64) -> FileKey {
        self.next_key += 1;
        let t = Tracked { identity, path, acked, size, pending: VecDeque::new(), registered: acked, released: false };
        self.files.insert(self.next_key, t);
        self.dirty = true;
        self.next_key
    }

    /// The reader's latest view of the file.
    pub fn update(&mut self, key: FileKey, identity: FileIdentity, size: u64) {
        if let Some(t) = self.files.get_mut(&key) {
            if t.identity != identity {
                t.identity = identity;
                self.dirty = true;
            }
            t.size = size;
        }
    }

    /// Batch `seq` carries the file's lines up to `offset`. Returns `false` when there is nothing
    /// new to wait for (the offset did not move).
    pub fn register(&mut self, key: FileKey, seq: u64, offset: u64) -> bool {
        let Some(t) = self.files.get_mut(&key) else { return false };
        if offset <= t.registered {
            return false;
        }
        t.registered = offset;
        t.pending.push_back(Pending { seq, offset, done: false });
        true
    }

    /// Batch `seq` reached a final outcome: advance the file over its contiguous resolved prefix.
    pub fn resolve(&mut self, key: FileKey, seq: u64) {
        let Some(t) = self.files.get_mut(&key) else { return };
        if let Some(p) = t.pending.iter_mut().find(|p| p.seq == seq) {
            p.done = true;
        }
        while t.pending.front().is_some_and(|p| p.done) {
            if let Some(p) = t.pending.pop_front() {
                t.acked = p.offset;
                self.dirty = true;
            }
        }
        if t.released && t.pending.is_empty() {
            self.files.remove(&key);
            self.dirty = true;
        }
    }

    /// The file's descriptor was closed. Once its pending batches resolve it leaves the
    /// checkpoints (it was read to its end); if some never do, its position stays for a restart.
    pub fn release(&mut self, key: FileKey) {
        if let Some(t) = self.files.get_mut(&key) {
            t.released = true;
            if t.pending.is_empty() {
                self.files.remove(&key);
                self.dirty = true;
            }
        }
    }

    pub fn acked(&self, key: FileKey) -> Option<u64> {
        self.files.get(&key).map(|t| t.acked)
    }

    /// Whether anything changed since the last [`Registry::snapshot`].
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// What to write to disk. A released file whose inode is held by a live one (a truncated
    /// generation) is left out: the live one is the truth about that inode.
    pub fn snapshot(&mut self) -> Vec<Checkpoint> {
        self.dirty = false;
        let live: std::collections::HashSet<(u64, u64)> =
            self.files.values().filter(|t| !t.released).map(|t| (t.identity.dev, t.identity.inode)).collect();
        let mut out: Vec<Checkpoint> = self
            .files
            .values()
            .filter(|t| !t.released || !live.contains(&(t.identity.dev, t.identity.inode)))
            .map(|t| Checkpoint { identity: t.identity, offset: t.acked, path: t.path.clone() })
            .collect();
        out.sort_by(|a, b| a.path.cmp(&b.path).then(a.identity.inode.cmp(&b.identity.inode)));
        out
    }

    /// Bytes written to tracked files but not yet acknowledged.
    pub fn lag_bytes(&self) -> u64 {
        self.files.values().map(|t| t.size.saturating_sub(t.acked)).sum()
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(inode: u64) -> FileIdentity {
        FileIdentity { dev: 1, inode, head_len: 3, head_hash: 7 }
    }

    #[test]
    fn out_of_order_acks_advance_only_over_the_contiguous_prefix() {
        let mut r = Registry::default();
        let k = r.track(id(1), "a".into(), 0, 100);
        assert!(r.register(k, 1, 10));
        assert!(r.register(k, 2, 20));
        assert!(r.register(k, 3, 30));
        assert!(!r.register(k, 4, 30));
        r.resolve(k, 2);
        assert_eq!(r.acked(k), Some(0));
        r.resolve(k, 3);
        assert_eq!(r.acked(k), Some(0));
        r.resolve(k, 1);
        assert_eq!(r.acked(k), Some(30));
        assert_eq!(r.lag_bytes(), 70);
    }

    #[test]
    fn an_ack_that_never_comes_holds_the_file_back() {
        let mut r = Registry::default();
        let k = r.track(id(1), "a".into(), 0, 100);
        r.register(k, 1, 10);
        r.register(k, 2, 20);
        r.resolve(k, 2);
        assert_eq!(r.acked(k), Some(0));
        r.release(k);
        let snap = r.snapshot();
        assert_eq!(snap.len(), 1);
        assert_eq!(snap[0].offset, 0);
    }

    #[test]
    fn released_file_is_forgotten_once_acknowledged() {
        let mut r = Registry::default();
        let k = r.track(id(1), "a".into(), 0, 10);
        r.register(k, 1, 10);
        r.release(k);
        assert_eq!(r.len(), 1);
        r.resolve(k, 1);
        assert!(r.is_empty());
    }

    #[test]
    fn a_truncated_generation_does_not_shadow_the_live_one() {
        let mut r = Registry::default();
        let old = r.track(id(1), "a".into(), 0, 10);
        r.register(old, 1, 10);
        r.release(old);
        let new = r.track(id(1), "a".into(), 0, 5);
        r.register(new, 2, 5);
        r.resolve(new, 2);
        let snap = r.snapshot();
        assert_eq!(snap.len(), 1);
        assert_eq!(snap[0].offset, 5);
    }

    #[test]
    fn store_round_trips_and_distinguishes_first_start() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::new(dir.path());
        assert!(store.load().unwrap().is_none());
        let c = Checkpoint { identity: id(9), offset: 42, path: "/x/0.log".into() };
        store.save(vec![c.clone()]).unwrap();
        assert_eq!(store.load().unwrap(), Some(vec![c.clone()]));
        assert!(!store.path().with_extension("json.tmp").exists());
        let mut bad = c.clone();
        bad.identity.head_len = 1000;
        store.save(vec![bad]).unwrap();
        assert!(matches!(store.load(), Err(CheckpointError::Invalid { .. })));
        std::fs::write(store.path(), b"{not json").unwrap();
        assert!(matches!(store.load(), Err(CheckpointError::Parse { .. })));
    }
}
