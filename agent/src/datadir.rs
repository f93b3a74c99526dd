//! What the agent claims on the node at start: the open-files limit raised to its hard limit,
//! and `data_dir` checked writable and locked for the agent's lifetime.
//!
//! Two agents on one `data_dir` (a `maxSurge` rollout, two releases, a stuck old pod) would append
//! to the same queue segments and checkpoints; the second one waits for the lock (not ready, its
//! admin server is not up yet) and exits with code 1 if it is still held after
//! `data_dir_lock_wait`. The lock is `flock(2)` on `data_dir/.lock`: the kernel releases it when
//! the process dies, however it dies.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (as Go programs do at start): containerd 2.x
/// gives containers a soft limit of 1024, which one descriptor per log file exhausts.
pub fn raise_nofile_limit() {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit with a valid pointer to an rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return;
    }
    let before = lim.rlim_cur;
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            tracing::warn!(soft = before, hard = lim.rlim_max, error = %std::io::Error::last_os_error(), "cannot raise the open-files limit");
            return;
        }
    }
    tracing::info!(before, soft = lim.rlim_cur, "open-files limit");
}

/// Checks that `dir` is writable and takes its exclusive lock, waiting up to `wait` for another
/// agent to release it. The returned file holds the lock until the process exits.
pub async fn lock(dir: &Path, wait: Duration) -> anyhow::Result<File> {
    let probe = dir.join(".write-check");
    let written = File::create(&probe).and_then(|mut f| f.write_all(b"ok").and_then(|()| f.sync_all()));
    if let Err(e) = written {
        bail!("data_dir {} is not writable: {e}", dir.display());
    }
    let _ = std::fs::remove_file(&probe);
    let path = dir.join(".lock");
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("opening the data_dir lock {}", path.display()))?;
    let started = Instant::now();
    let mut logged = false;
    loop {
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            break;
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
            bail!("locking data_dir {}: {e}", path.display());
        }
        let holder = std::fs::read_to_string(&path).unwrap_or_default();
        if started.elapsed() >= wait {
            bail!(
                "data_dir {} is still locked by another agent ({}) after data_dir_lock_wait {:?}; two agents must not share a data_dir",
                dir.display(),
                holder.trim(),
                wait
            );
        }
        if !logged {
            tracing::warn!(data_dir = %dir.display(), holder = holder.trim(), wait = ?wait, "data_dir is locked by another agent; waiting for it to exit (not ready meanwhile)");
            logged = true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if logged {
        tracing::info!(data_dir = %dir.display(), waited = ?started.elapsed(), "data_dir lock acquired");
    }
    file.set_len(0)?;
    write!(file, "pid {}", std::process::id())?;
    Ok(file)
}
