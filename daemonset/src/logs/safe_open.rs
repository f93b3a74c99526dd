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
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&target)
            .map_err(|e| match e.raw_os_error() {
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
}
