//! Finding log files: inotify on the log root and the pod and container directories below it,
//! for prompt reaction, and a full scan of the tree used at start and periodically, which
//! recovers from events inotify missed or dropped (queue overflow, a directory created before its
//! watch was added).
//!
//! The watch runs on a thread of its own (`logs-inotify`), written on the `inotify` crate rather
//! than `notify`: a node appends to every container's file all the time, and `notify` turned each
//! write into an allocated event sent on its own, waking the tailer for each (the profile of
//! `bench node` put the wake-ups, the path-keyed lookups and the per-pass stat of every file at a
//! third of the agent's CPU). This thread reads the events in bulk, keeps one per file, tells the
//! tailer which files were written to ([`Wake::Written`]: read them, nothing else to check) apart
//! from those created, renamed, removed or changed otherwise ([`Wake::Paths`]: look at the path),
//! and then waits `coalesce` before reading again, so that the tailer wakes at most once per
//! `coalesce` however many lines are written.
//!
//! A file written to all the time still costs the kernel an event per write, and this thread a
//! read of each (20,000 a second at 5 MiB/s of 250-byte lines: a fifth of the agent's CPU). The
//! tailer therefore mutes the write events of a container directory whose file is reported
//! written twice within 300 ms ([`Watcher::mute`]) and reads its files periodically instead
//! (every 200 ms by default), until they had no new data for a second ([`Watcher::unmute`], then
//! one more read).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use inotify::{EventMask, Inotify, WatchMask, Watches};

use super::path;

/// What woke the tailer.
#[derive(Debug)]
pub enum Wake {
    /// Files written to (`IN_MODIFY`, `IN_CLOSE_WRITE`): read what they have.
    Written(Vec<PathBuf>),
    /// Paths created, renamed, removed or with changed attributes (files or directories): what
    /// the path leads to may be another file now.
    Paths(Vec<PathBuf>),
    /// Events were lost: rescan everything.
    Rescan,
    /// Acknowledgements made room under the in-flight cap: reading may go on.
    Resume,
}

/// The events of a watched directory (no access, open or close-without-write: the tailer causes
/// those itself, opening a directory to scan it or a file to read it, and waking on them made an
/// idle tailer rescan in a loop).
const MASK: WatchMask = WatchMask::MODIFY
    .union(WatchMask::CLOSE_WRITE)
    .union(WatchMask::ATTRIB)
    .union(WatchMask::CREATE)
    .union(WatchMask::DELETE)
    .union(WatchMask::MOVED_FROM)
    .union(WatchMask::MOVED_TO)
    .union(WatchMask::DELETE_SELF)
    .union(WatchMask::MOVE_SELF);

/// [`MASK`] without the events of the files themselves (`IN_MODIFY`, `IN_CLOSE_WRITE`,
/// `IN_ATTRIB`), keeping those of the directory's entries (creations, renames, deletions): a
/// container directory whose file is written to all the time, and which the tailer reads
/// periodically anyway ([`Watcher::mute`]). A directory watched for any event of its files makes
/// the kernel look up and reference the directory at every read and every write of each of them
/// (`__fsnotify_parent`, about 4 % of the tailer's CPU at 5 MiB/s over 100 files); a deletion or
/// a rename still comes as `IN_DELETE` or `IN_MOVED_FROM` of the directory.
const MUTED_MASK: WatchMask = MASK.difference(WatchMask::MODIFY.union(WatchMask::CLOSE_WRITE).union(WatchMask::ATTRIB));

/// The root is depth 0, pod directories 1, container directories (holding the files) 2.
const FILE_DIR_DEPTH: u8 = 2;

/// Keeps the inotify watches alive; dropping it stops the thread (within a quarter second).
pub struct Watcher {
    stop: Option<Arc<AtomicBool>>,
    /// Changes the masks of the watches (shares the inotify descriptor with the thread).
    watches: Option<Watches>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if let Some(s) = &self.stop {
            s.store(true, Ordering::Relaxed);
        }
    }
}

impl Watcher {
    /// Watches `root` and the directories below it, sending [`Wake`]s to `tx` at most once per
    /// `coalesce`. On failure (e.g. the directory does not exist yet) it logs and returns a
    /// watcher without events: the rescan still works, and [`Watcher::is_active`] tells the
    /// caller to try again later.
    pub fn start(root: &Path, tx: mpsc::Sender<Wake>, coalesce: Duration) -> Watcher {
        let inactive = Watcher { stop: None, watches: None };
        let inotify = match Inotify::init() {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!(error = %e, "inotify unavailable; relying on the periodic rescan");
                return inactive;
            }
        };
        let watches = inotify.watches();
        let mut dirs = Dirs { inotify, by_wd: HashMap::new(), root: root.to_path_buf() };
        if let Err(e) = dirs.add(root, 0) {
            tracing::warn!(path = %root.display(), error = %e, "cannot watch the log directory; relying on the periodic rescan");
            return inactive;
        }
        dirs.add_below(root, 0);
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = stop.clone();
        let spawned = std::thread::Builder::new()
            .name("logs-inotify".into())
            .spawn(move || watch_loop(dirs, &tx, &thread_stop, coalesce));
        match spawned {
            Ok(_) => Watcher { stop: Some(stop), watches: Some(watches) },
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the inotify thread; relying on the periodic rescan");
                inactive
            }
        }
    }

    pub fn is_active(&self) -> bool {
        self.stop.is_some()
    }

    /// Stops the events of the files in `dir` (a container directory: writes, closes, attribute
    /// changes, see [`MUTED_MASK`]): creations, renames and deletions still come. A file written
    /// to all the time sends an event per write (20,000 a second at 5 MiB/s of 250-byte lines: a
    /// fifth of the agent's CPU reading them); the tailer reads such a file periodically instead, and
    /// [`Watcher::unmute`]s its directory once it is quiet. `false` if the watch cannot be
    /// changed (the directory is gone, no watcher): then nothing was muted.
    ///
    /// If another directory took `dir`'s path, this watches it (without writes) under a
    /// descriptor the thread learns with the creation event it gets for it anyway.
    pub fn mute(&mut self, dir: &Path) -> bool {
        self.watches.as_mut().is_some_and(|w| w.add(dir, MUTED_MASK).is_ok())
    }

    /// Brings back the write events of `dir`'s files. Writes made before this returns are not
    /// reported: the caller reads the directory's files once more after it.
    pub fn unmute(&mut self, dir: &Path) -> bool {
        self.watches.as_mut().is_some_and(|w| w.add(dir, MASK).is_ok())
    }
}

/// The watched directories by watch descriptor, with their depth below the root.
struct Dirs {
    inotify: Inotify,
    by_wd: HashMap<i32, (PathBuf, u8)>,
    root: PathBuf,
}

impl Dirs {
    fn add(&mut self, dir: &Path, depth: u8) -> std::io::Result<()> {
        let wd = self.inotify.watches().add(dir, MASK)?;
        self.by_wd.insert(wd.get_watch_descriptor_id(), (dir.to_path_buf(), depth));
        Ok(())
    }

    /// Watches the directories below `dir` down to the container directories (those created
    /// before `dir`'s own watch was in place would be missed otherwise).
    fn add_below(&mut self, dir: &Path, depth: u8) {
        if depth >= FILE_DIR_DEPTH {
            return;
        }
        for sub in read_dirs(dir) {
            // Not watched (e.g. out of watches): found by the rescan, read by the periodic pass.
            if self.add(&sub, depth + 1).is_ok() {
                self.add_below(&sub, depth + 1);
            }
        }
    }
}

/// Reads events until `stop`, or until the tailer is gone.
fn watch_loop(mut dirs: Dirs, tx: &mpsc::Sender<Wake>, stop: &AtomicBool, coalesce: Duration) {
    let mut buf = vec![0u8; 16 * 1024];
    let fd = dirs.inotify.as_raw_fd();
    // Per file, whether it was only written to (`true`) or changed otherwise.
    let mut files: HashMap<PathBuf, bool> = HashMap::new();
    let mut new_dirs: Vec<(PathBuf, u8)> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd, for the duration of the call.
        if unsafe { libc::poll(&mut pfd, 1, 250) } <= 0 {
            continue;
        }
        let mut rescan = false;
        loop {
            let events = match dirs.inotify.read_events(&mut buf) {
                Ok(events) => events,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "reading inotify events failed; rescanning");
                    rescan = true;
                    break;
                }
            };
            let mut batch: Vec<(i32, &OsStr, EventMask)> =
                events.map(|e| (e.wd.get_watch_descriptor_id(), e.name.unwrap_or_default(), e.mask)).collect();
            // One entry per (directory, name), written-only if every event of it is a write.
            batch.sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
            let mut i = 0;
            while i < batch.len() {
                let (wd, name, mut mask) = batch[i];
                let mut j = i + 1;
                while j < batch.len() && (batch[j].0, batch[j].1) == (wd, name) {
                    mask |= batch[j].2;
                    j += 1;
                }
                i = j;
                if mask.contains(EventMask::Q_OVERFLOW) {
                    rescan = true;
                }
                if mask.contains(EventMask::IGNORED) && name.is_empty() {
                    // The directory is gone (or unmounted): its watch with it.
                    dirs.by_wd.remove(&wd);
                    continue;
                }
                let Some((dir, depth)) = dirs.by_wd.get(&wd) else { continue };
                if name.is_empty() {
                    // The directory itself moved or was deleted: `IN_IGNORED` follows.
                    continue;
                }
                let path = dir.join(name);
                if mask.contains(EventMask::ISDIR) {
                    if *depth < FILE_DIR_DEPTH && mask.intersects(EventMask::CREATE | EventMask::MOVED_TO) {
                        new_dirs.push((path.clone(), depth + 1));
                    }
                    files.insert(path, false);
                    continue;
                }
                let written = !mask.intersects(!(EventMask::MODIFY | EventMask::CLOSE_WRITE));
                files.entry(path).and_modify(|w| *w &= written).or_insert(written);
            }
        }
        for (dir, depth) in new_dirs.drain(..) {
            if dirs.add(&dir, depth).is_ok() {
                dirs.add_below(&dir, depth);
            }
        }
        if rescan {
            // Directories created while events were lost get their watches.
            let root = dirs.root.clone();
            dirs.add_below(&root, 0);
        }
        let (written, changed): (Vec<_>, Vec<_>) = files.drain().partition(|(_, w)| *w);
        let mut sent = false;
        for wake in [
            (!changed.is_empty()).then(|| Wake::Paths(changed.into_iter().map(|(p, _)| p).collect())),
            (!written.is_empty()).then(|| Wake::Written(written.into_iter().map(|(p, _)| p).collect())),
            rescan.then_some(Wake::Rescan),
        ]
        .into_iter()
        .flatten()
        {
            if tx.send(wake).is_err() {
                return;
            }
            sent = true;
        }
        if sent {
            // Lets events gather: one wake-up of the tailer for all the writes of this while.
            std::thread::sleep(coalesce);
        }
    }
}

/// Log files under a root: active `<n>.log` files and uncompressed rotated ones.
#[derive(Debug, Default)]
pub struct Found {
    pub active: Vec<PathBuf>,
    pub rotated: Vec<PathBuf>,
}

/// Walks `<root>/<pod dir>/<container dir>/<file>` (the kubelet's layout, nothing deeper).
/// Unreadable directories are skipped: they may vanish while we walk.
pub fn scan(root: &Path) -> Found {
    let mut found = Found::default();
    for pod_dir in read_dirs(root) {
        for container_dir in read_dirs(&pod_dir) {
            scan_container_dir(&container_dir, &mut found);
        }
    }
    found.active.sort();
    found.rotated.sort();
    found
}

/// Scans whatever `dir` is in the layout (root, pod or container directory).
pub fn scan_under(root: &Path, dir: &Path) -> Found {
    let depth = dir.strip_prefix(root).map(|p| p.components().count()).unwrap_or(usize::MAX);
    let mut found = Found::default();
    match depth {
        0 => return scan(root),
        1 => {
            for c in read_dirs(dir) {
                scan_container_dir(&c, &mut found);
            }
        }
        2 => scan_container_dir(dir, &mut found),
        _ => {}
    }
    found.active.sort();
    found.rotated.sort();
    found
}

fn scan_container_dir(dir: &Path, found: &mut Found) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        if path::parse(&p).is_some() {
            found.active.push(p);
        } else if path::parse_rotated(&p).is_some() {
            found.rotated.push(p);
        }
    }
}

fn read_dirs(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else { return Vec::new() };
    rd.flatten().filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false)).map(|e| e.path()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reading_files_and_listing_directories_wakes_nobody_but_a_write_does() {
        use std::io::{Read, Write};
        use std::time::Duration;
        let d = tempfile::tempdir().unwrap();
        let c = d.path().join("ns_pod_uid").join("app");
        std::fs::create_dir_all(&c).unwrap();
        std::fs::write(c.join("0.log"), b"2026-11-25T08:00:00Z stdout F one\n").unwrap();
        let (tx, rx) = mpsc::channel();
        let watcher = Watcher::start(d.path(), tx, Duration::from_millis(5));
        assert!(watcher.is_active());
        // What the tailer does on every wake-up: list the directories, open and read the file.
        for _ in 0..3 {
            let _ = std::fs::read_dir(&c).unwrap().count();
            let mut text = String::new();
            std::fs::File::open(c.join("0.log")).unwrap().read_to_string(&mut text).unwrap();
        }
        let woken: Vec<Wake> = rx.try_iter().chain(rx.recv_timeout(Duration::from_millis(300))).collect();
        assert!(woken.is_empty(), "reads woke the tailer: {woken:?}");
        let mut f = std::fs::OpenOptions::new().append(true).open(c.join("0.log")).unwrap();
        f.write_all(b"2026-11-25T08:00:01Z stdout F two\n").unwrap();
        match rx.recv_timeout(Duration::from_secs(5)) {
            Ok(Wake::Written(p)) => assert_eq!(p, vec![c.join("0.log")]),
            other => panic!("a write wakes the tailer with the file: {other:?}"),
        }
    }

    /// Everything the watch reports within `ms` milliseconds: (written, changed).
    fn collect(rx: &mpsc::Receiver<Wake>, ms: u64) -> (Vec<PathBuf>, Vec<PathBuf>) {
        let (mut written, mut changed) = (Vec::new(), Vec::new());
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(ms);
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match rx.recv_timeout(left) {
                Ok(Wake::Written(p)) => written.extend(p),
                Ok(Wake::Paths(p)) => changed.extend(p),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        written.sort();
        written.dedup();
        changed.sort();
        changed.dedup();
        (written, changed)
    }

    #[test]
    fn a_pod_created_later_is_watched_and_writes_are_told_from_renames() {
        use std::io::Write;
        use std::time::Duration;
        let d = tempfile::tempdir().unwrap();
        let (tx, rx) = mpsc::channel();
        let _watcher = Watcher::start(d.path(), tx, Duration::from_millis(5));
        // A pod and its container directory, created at once after the watch started.
        let c = d.path().join("ns_pod_uid").join("app");
        std::fs::create_dir_all(&c).unwrap();
        let (_, changed) = collect(&rx, 300);
        assert!(changed.contains(&d.path().join("ns_pod_uid")), "{changed:?}");
        let live = c.join("0.log");
        std::fs::write(&live, b"one\n").unwrap();
        let (_, changed) = collect(&rx, 300);
        assert!(changed.contains(&live), "a created file is a change: {changed:?}");
        // Many writes, one wake with the file.
        let mut f = std::fs::OpenOptions::new().append(true).open(&live).unwrap();
        for _ in 0..100 {
            f.write_all(b"more\n").unwrap();
        }
        let (written, changed) = collect(&rx, 300);
        assert_eq!((written, changed), (vec![live.clone()], vec![]));
        let rotated = c.join("0.log.20240101-000000");
        std::fs::rename(&live, &rotated).unwrap();
        let (_, changed) = collect(&rx, 300);
        assert_eq!(changed, vec![live, rotated]);
    }

    #[test]
    fn scan_finds_active_and_rotated_files_only_in_the_layout() {
        let d = tempfile::tempdir().unwrap();
        let c = d.path().join("ns_pod_uid").join("app");
        std::fs::create_dir_all(&c).unwrap();
        for f in ["0.log", "1.log", "0.log.20240101-000000", "0.log.20230101-000000.gz", "notes.txt"] {
            std::fs::write(c.join(f), b"").unwrap();
        }
        std::fs::write(d.path().join("0.log"), b"").unwrap();
        let found = scan(d.path());
        assert_eq!(found.active, vec![c.join("0.log"), c.join("1.log")]);
        assert_eq!(found.rotated, vec![c.join("0.log.20240101-000000")]);
        assert_eq!(scan_under(d.path(), &c).active.len(), 2);
        assert_eq!(scan_under(d.path(), c.parent().unwrap()).active.len(), 2);
    }
}
