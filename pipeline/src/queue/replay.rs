//! Opening a queue directory: what an earlier run left uncommitted becomes the queue's content.
//!
//! Segments are read oldest first and every frame is checked. Records below the persisted commit
//! position are skipped (the commit position is written lazily, so a few already delivered records
//! may come back: at-least-once). Damage at the end of the newest segment is the torn tail of an
//! append cut short by a crash: the file is cut there, with a warning. Damage anywhere else is
//! corruption: the rest of that segment is skipped and counted. Files without a live record are
//! deleted.

use std::fs::{self, OpenOptions};
use std::path::Path;
use std::sync::Arc;

use super::commit::{io_error, CommitFile};
use super::segment::{self, Frame};
use super::state::{Disk, Segment, State};
use super::{QueueError, QueueOptions};

/// Reads `dir` (creating it if needed) into a fresh state.
pub(super) fn open_dir(opts: &QueueOptions, dir: &Path) -> Result<(State, CommitFile), QueueError> {
    let name = opts.name.as_str();
    fs::create_dir_all(dir).map_err(|e| io_error(name, "creating", dir, e))?;
    let (commit, committed) = CommitFile::open(name, dir)?;
    let files = segment::list(dir).map_err(|e| io_error(name, "listing", dir, e))?;
    let mut st = State::new(Some(Disk::new(dir.to_path_buf(), opts.max_disk)));
    let mut segments = Vec::new();
    let mut last_seq: Option<u64> = None;
    let count = files.len();
    for (i, (first_seq, path)) in files.into_iter().enumerate() {
        if last_seq.is_some_and(|l| first_seq <= l) {
            tracing::error!(queue = name, path = %path.display(), "segment overlaps the one before it; deleting it");
            st.corrupt += 1;
            fs::remove_file(&path).map_err(|e| io_error(name, "removing", &path, e))?;
            continue;
        }
        let file = OpenOptions::new().read(true).open(&path).map_err(|e| io_error(name, "opening", &path, e))?;
        let mut live: Vec<Frame> = Vec::new();
        let end = segment::scan(&file, first_seq, |frame| {
            last_seq = Some(frame.seq);
            if frame.seq >= committed {
                live.push(frame);
            }
        })
        .map_err(|e| io_error(name, "reading", &path, e))?;
        let mut size = end.file_len;
        if let Some(damage) = &end.damage {
            if i + 1 == count {
                tracing::warn!(
                    queue = name,
                    path = %path.display(),
                    %damage,
                    discarded_bytes = end.file_len - end.valid_len,
                    "discarding the torn tail of the newest segment"
                );
                OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .and_then(|f| f.set_len(end.valid_len))
                    .map_err(|e| io_error(name, "truncating", &path, e))?;
                size = end.valid_len;
            } else {
                tracing::error!(
                    queue = name,
                    path = %path.display(),
                    %damage,
                    offset = end.valid_len,
                    "segment is corrupt; skipping the rest of it"
                );
                st.corrupt += 1;
            }
        }
        if live.is_empty() {
            drop(file);
            fs::remove_file(&path).map_err(|e| io_error(name, "removing", &path, e))?;
            continue;
        }
        let pending = live.len();
        for frame in live {
            st.push_replayed(frame.seq, frame.items, frame.payload, frame.offset, opts.max_memory);
        }
        segments.push(Segment { first_seq, path, file: Arc::new(file), size, pending });
    }
    st.next_seq = committed.max(last_seq.map_or(0, |s| s + 1));
    if let Some(disk) = st.disk.as_mut() {
        disk.bytes = segments.iter().map(|s| s.size).sum();
        disk.segments = segments.into();
    }
    if !st.entries.is_empty() {
        tracing::info!(queue = name, records = st.entries.len(), "replaying records left by the previous run");
    }
    Ok((st, commit))
}
