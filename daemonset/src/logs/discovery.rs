//! Finding log files: inotify (through `notify`) on the log root, recursively, for prompt
//! reaction, and a full scan of the tree used at start and periodically, which recovers from
//! events inotify missed or dropped (queue overflow, a directory created before its watch was
//! added).

use std::path::{Path, PathBuf};
use std::sync::mpsc;

use notify::{RecursiveMode, Watcher as _};

use super::path;

/// What woke the tailer.
#[derive(Debug)]
pub enum Wake {
    /// Paths inotify reported (files or directories, created, modified, renamed or removed).
    Paths(Vec<PathBuf>),
    /// Events were lost: rescan everything.
    Rescan,
    /// Acknowledgements made room under the in-flight cap: reading may go on.
    Resume,
}

/// Keeps the inotify watch alive; dropping it stops the events.
pub struct Watcher {
    inner: Option<notify::RecommendedWatcher>,
}

impl Watcher {
    /// Watches `root` recursively, sending [`Wake`]s to `tx`. On failure (e.g. the directory does
    /// not exist yet) it logs and returns a watcher without events: the rescan still works, and
    /// [`Watcher::is_active`] tells the caller to try again later.
    pub fn start(root: &Path, tx: mpsc::Sender<Wake>) -> Watcher {
        let handler = move |res: notify::Result<notify::Event>| {
            let wake = match res {
                Ok(ev) if ev.need_rescan() => Wake::Rescan,
                Ok(ev) if !changes_something(&ev.kind) => return,
                Ok(ev) => Wake::Paths(ev.paths),
                Err(_) => Wake::Rescan,
            };
            let _ = tx.send(wake);
        };
        let inner = match notify::recommended_watcher(handler) {
            Ok(mut w) => match w.watch(root, RecursiveMode::Recursive) {
                Ok(()) => Some(w),
                Err(e) => {
                    tracing::warn!(path = %root.display(), error = %e, "cannot watch the log directory; relying on the periodic rescan");
                    None
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "inotify unavailable; relying on the periodic rescan");
                None
            }
        };
        Watcher { inner }
    }

    pub fn is_active(&self) -> bool {
        self.inner.is_some()
    }
}

/// Whether an event can mean a new, grown, renamed or removed file. Opens, reads and closes
/// without writing change nothing, and the tailer causes them itself (opening a directory to scan
/// it, a file to read it): waking on them made an idle tailer rescan in a loop.
fn changes_something(kind: &notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode};
    match kind {
        notify::EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        notify::EventKind::Access(_) => false,
        _ => true,
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
        let watcher = Watcher::start(d.path(), tx);
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
            Ok(Wake::Paths(p)) => assert_eq!(p, vec![c.join("0.log")]),
            other => panic!("a write wakes the tailer with the file: {other:?}"),
        }
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
