//! Opening a log file without being led outside the log root.
//!
//! The agent runs as root and sees the node's files, so a file under the log root is opened only
//! if it is a regular file (a FIFO named `0.log` would block the reading thread in `open()`, a
//! link to `/dev/zero` would stream without end), and through a symlink only if the link resolves
//! under the log root or a directory of `logs.follow_symlinks_into` (Docker nodes link
//! `/var/log/pods/.../0.log` to `/var/lib/docker/containers/<id>/<id>-json.log`). Pod and container
//! directories that are symlinks are never followed. The final open uses `O_NOFOLLOW |
//! O_NONBLOCK` on the resolved path, and `fstat` decides whether it is a regular file.

use std::fs::File;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Why a file was not opened (the `reason` label of `lgtm_agent_logs_files_refused_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    SymlinkOutsideAllowed,
    SymlinkedDirectory,
    NotRegularFile,
    OpenFailed,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::SymlinkOutsideAllowed => "symlink_outside_allowed",
            Refusal::SymlinkedDirectory => "symlinked_directory",
            Refusal::NotRegularFile => "not_regular_file",
            Refusal::OpenFailed => "open_failed",
        }
    }
}

/// The log root and the directories symlinks may lead into, resolved once.
#[derive(Debug, Clone)]
pub struct Allowed {
    root: PathBuf,
    dirs: Vec<PathBuf>,
}

impl Allowed {
    pub fn new(root: &Path, follow_symlinks_into: &[PathBuf]) -> Allowed {
        let resolve = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        let mut dirs: Vec<PathBuf> = follow_symlinks_into.iter().map(|p| resolve(p)).collect();
        dirs.push(resolve(root));
        Allowed { root: root.to_path_buf(), dirs }
    }

    /// Opens the log file at `path` (under the root) for reading, or says why not.
    pub fn open(&self, path: &Path) -> Result<File, (Refusal, io::Error)> {
        // The directories between the root and the file must be real directories.
        if let Ok(rel) = path.strip_prefix(&self.root) {
            let mut dir = self.root.clone();
            let comps: Vec<_> = rel.components().collect();
            for c in comps.iter().take(comps.len().saturating_sub(1)) {
                dir.push(c);
                match std::fs::symlink_metadata(&dir) {
                    Ok(m) if m.file_type().is_symlink() => {
                        return Err((
                            Refusal::SymlinkedDirectory,
                            io::Error::other(format!("{} is a symlink", dir.display())),
                        ));
                    }
                    Ok(_) => {}
                    Err(e) => return Err((Refusal::OpenFailed, e)),
                }
            }
        }
        let lmeta = std::fs::symlink_metadata(path).map_err(|e| (Refusal::OpenFailed, e))?;
        let target = if lmeta.file_type().is_symlink() {
            let target = std::fs::canonicalize(path).map_err(|e| (Refusal::OpenFailed, e))?;
            if !self.dirs.iter().any(|d| target.starts_with(d)) {
                return Err((
                    Refusal::SymlinkOutsideAllowed,
                    io::Error::other(format!(
                        "links to {}, outside the log root and logs.follow_symlinks_into",
                        target.display()
                    )),
                ));
            }
            target
        } else {
            path.to_path_buf()
        };
        let file = open_noatime(&target).map_err(|e| match e.raw_os_error() {
            // The path became a symlink after we looked.
            Some(libc::ELOOP) => (Refusal::SymlinkOutsideAllowed, e),
            _ => (Refusal::OpenFailed, e),
        })?;
        let meta = file.metadata().map_err(|e| (Refusal::OpenFailed, e))?;
        if !meta.file_type().is_file() {
            return Err((
                Refusal::NotRegularFile,
                io::Error::other(format!("{} is not a regular file", target.display())),
            ));
        }
        Ok(file)
    }
}

/// Opens `path` read-only with `O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC` and, where permitted,
/// `O_NOATIME`: a file being written has an mtime newer than its atime, so under `relatime` every
/// read of it would update the atime (a journalled inode write per read: 5 % of the agent's CPU
/// following 100 files at 5 MiB/s). `O_NOATIME` needs the file's owner or `CAP_FOWNER`; without
/// them (`EPERM`) the file is opened as before, and later opens do not try again.
fn open_noatime(path: &Path) -> io::Result<File> {
    use std::sync::atomic::{AtomicBool, Ordering};
    static REFUSED: AtomicBool = AtomicBool::new(false);
    let open = |extra: libc::c_int| {
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC | extra)
            .open(path)
    };
    if !REFUSED.load(Ordering::Relaxed) {
        match open(libc::O_NOATIME) {
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => REFUSED.store(true, Ordering::Relaxed),
            r => return r,
        }
    }
    open(0)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    #[test]
    fn refuses_fifos_devices_links_outside_and_symlinked_directories() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("pods");
        let docker = d.path().join("docker");
        let outside = d.path().join("secret");
        std::fs::create_dir_all(&docker).unwrap();
        std::fs::write(&outside, b"token\n").unwrap();
        std::fs::write(docker.join("c-json.log"), b"{}\n").unwrap();
        let c = root.join("ns_p_u").join("c");
        std::fs::create_dir_all(&c).unwrap();
        std::fs::write(c.join("0.log"), b"ok\n").unwrap();
        let fifo = std::ffi::CString::new(c.join("1.log").into_os_string().into_encoded_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
        symlink(&outside, c.join("2.log")).unwrap();
        symlink("/dev/zero", c.join("3.log")).unwrap();
        symlink(docker.join("c-json.log"), c.join("4.log")).unwrap();
        std::fs::create_dir_all(d.path().join("elsewhere/c")).unwrap();
        std::fs::write(d.path().join("elsewhere/c/0.log"), b"x\n").unwrap();
        symlink(d.path().join("elsewhere"), root.join("ns_q_u")).unwrap();

        let a = Allowed::new(&root, std::slice::from_ref(&docker));
        assert!(a.open(&c.join("0.log")).is_ok());
        assert_eq!(a.open(&c.join("1.log")).unwrap_err().0, Refusal::NotRegularFile);
        assert_eq!(a.open(&c.join("2.log")).unwrap_err().0, Refusal::SymlinkOutsideAllowed);
        assert_eq!(a.open(&c.join("3.log")).unwrap_err().0, Refusal::SymlinkOutsideAllowed);
        assert!(a.open(&c.join("4.log")).is_ok(), "Docker's links are followed");
        assert_eq!(a.open(&root.join("ns_q_u/c/0.log")).unwrap_err().0, Refusal::SymlinkedDirectory);
        let none = Allowed::new(&root, &[]);
        assert_eq!(none.open(&c.join("4.log")).unwrap_err().0, Refusal::SymlinkOutsideAllowed);
    }

    #[test]
    fn reading_a_log_file_leaves_its_access_time_alone() {
        use std::io::Read;
        use std::os::unix::fs::MetadataExt;
        let d = tempfile::tempdir().unwrap();
        let c = d.path().join("ns_p_u").join("c");
        std::fs::create_dir_all(&c).unwrap();
        let p = c.join("0.log");
        std::fs::write(&p, b"line\n").unwrap();
        // An access time a day older than the modification time: `relatime` updates it on a read.
        let set_old_atime = || {
            let m = std::fs::metadata(&p).unwrap();
            let times = [
                libc::timespec { tv_sec: m.mtime() - 86_400, tv_nsec: 0 },
                libc::timespec { tv_sec: 0, tv_nsec: libc::UTIME_OMIT },
            ];
            let cp = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
            assert_eq!(unsafe { libc::utimensat(libc::AT_FDCWD, cp.as_ptr(), times.as_ptr(), 0) }, 0);
            m.mtime() - 86_400
        };
        let read_all = |mut f: File| {
            let mut s = String::new();
            f.read_to_string(&mut s).unwrap();
            assert_eq!(s, "line\n");
        };
        let old = set_old_atime();
        read_all(File::open(&p).unwrap());
        if std::fs::metadata(&p).unwrap().atime() == old {
            eprintln!("this file system does not update access times on reads (noatime): nothing to check");
            return;
        }
        let old = set_old_atime();
        read_all(Allowed::new(d.path(), &[]).open(&p).unwrap());
        assert_eq!(std::fs::metadata(&p).unwrap().atime(), old, "the tailer's read updated the access time");
    }
}
