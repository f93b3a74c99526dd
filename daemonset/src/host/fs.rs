//! Reading the host's files under its root, into one buffer reused across files.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::HostError;

pub(crate) struct HostFs {
    root: PathBuf,
    buf: String,
}

impl HostFs {
    pub(crate) fn new(root: &Path) -> Self {
        HostFs { root: root.to_path_buf(), buf: String::with_capacity(16 * 1024) }
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/proc/<rel>`.
    pub(crate) fn proc(&self, rel: &str) -> PathBuf {
        self.root.join("proc").join(rel)
    }

    /// `<root>/sys/<rel>`.
    pub(crate) fn sys(&self, rel: &str) -> PathBuf {
        self.root.join("sys").join(rel)
    }

    /// `<root>/<path>` for an absolute path as the host sees it (a mount point, `/run/udev`).
    pub(crate) fn rootfs(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }

    /// The whole file as text; the slice lives until the next read.
    pub(crate) fn read(&mut self, path: &Path) -> Result<&str, HostError> {
        self.buf.clear();
        std::fs::File::open(path)
            .and_then(|mut f| f.read_to_string(&mut self.buf))
            .map_err(|source| HostError::Read { path: path.to_path_buf(), source })?;
        Ok(&self.buf)
    }

    /// Like [`HostFs::read`], for files that may legitimately be absent (or unreadable).
    pub(crate) fn read_optional(&mut self, path: &Path) -> Option<&str> {
        self.read(path).ok()
    }
}

/// Parses a decimal field of a kernel file, naming the file in the error.
pub(crate) fn parse_u64(field: &str, path: &Path, what: &str) -> Result<u64, HostError> {
    field.parse().map_err(|_| HostError::Parse {
        path: path.to_path_buf(),
        what: format!("{what}: {field:?} is not an unsigned integer"),
    })
}

pub(crate) fn parse_f64(field: &str, path: &Path, what: &str) -> Result<f64, HostError> {
    field
        .parse()
        .map_err(|_| HostError::Parse { path: path.to_path_buf(), what: format!("{what}: {field:?} is not a number") })
}

pub(crate) fn parse_error(path: &Path, what: impl Into<String>) -> HostError {
    HostError::Parse { path: path.to_path_buf(), what: what.into() }
}
