//! node_exporter's `filesystem` collector: size, free, available bytes and inodes, read-only status
//! and statfs errors of each mounted filesystem, labelled `{device, fstype, mountpoint}`.
//!
//! Mounts come from `<root>/proc/1/mounts` (the host's init sees the host's mounts even when we
//! run in a container), falling back to `<root>/proc/mounts`. `statfs` runs on
//! `<root>/<mountpoint>`; the `mountpoint` label is the path as the host sees it (a `<root>`
//! prefix is stripped). Pseudo filesystems and container layers are excluded by node_exporter's
//! default patterns, [`MOUNT_POINTS_EXCLUDE`] and [`FS_TYPES_EXCLUDE`].

use std::collections::HashSet;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::LazyLock;

use regex::Regex;

use super::exposition::{HostMetrics, MetricType};
use super::fs::HostFs;
use super::HostError;

/// node_exporter's default `--collector.filesystem.mount-points-exclude` (upstream, not Debian's
/// patched default, which also drops `/run`, `/mnt` and `/media`).
pub const MOUNT_POINTS_EXCLUDE: &str =
    r"^/(dev|proc|run/credentials/.+|sys|var/lib/docker/.+|var/lib/containers/storage/.+)($|/)";

/// node_exporter's default `--collector.filesystem.fs-types-exclude`.
pub const FS_TYPES_EXCLUDE: &str = r"^(autofs|binfmt_misc|bpf|cgroup2?|configfs|debugfs|devpts|devtmpfs|fusectl|hugetlbfs|iso9660|mqueue|nsfs|overlay|proc|procfs|pstore|rpc_pipefs|securityfs|selinuxfs|squashfs|sysfs|tracefs)$";

static MOUNT_POINTS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(MOUNT_POINTS_EXCLUDE).expect("valid default pattern"));
static FS_TYPES: LazyLock<Regex> = LazyLock::new(|| Regex::new(FS_TYPES_EXCLUDE).expect("valid default pattern"));

/// One line of a mounts file, after unescaping and stripping the root prefix.
#[derive(Debug, PartialEq)]
struct Mount {
    device: String,
    mountpoint: String,
    fstype: String,
    readonly: bool,
}

struct Usage {
    size: f64,
    free: f64,
    avail: f64,
    files: f64,
    files_free: f64,
}

pub(crate) fn collect(fs: &mut HostFs, out: &mut HostMetrics) -> Result<(), HostError> {
    let root = fs.root().as_os_str().to_string_lossy().into_owned();
    let mounts = {
        let primary = fs.proc("1/mounts");
        let text = match fs.read(&primary) {
            Ok(text) => text,
            Err(_) => {
                let fallback = fs.proc("mounts");
                fs.read(&fallback)?
            }
        };
        parse_mounts(text, &root)
    };

    use MetricType::Gauge;
    let device_error = out.family(
        "node_filesystem_device_error",
        "Whether an error occurred while getting statistics for the given device.",
        Gauge,
    );
    let readonly = out.family("node_filesystem_readonly", "Filesystem read-only status.", Gauge);
    let size = out.family("node_filesystem_size_bytes", "Filesystem size in bytes.", Gauge);
    let free = out.family("node_filesystem_free_bytes", "Filesystem free space in bytes.", Gauge);
    let avail =
        out.family("node_filesystem_avail_bytes", "Filesystem space available to non-root users in bytes.", Gauge);
    let files = out.family("node_filesystem_files", "Filesystem total file nodes.", Gauge);
    let files_free = out.family("node_filesystem_files_free", "Filesystem total free file nodes.", Gauge);

    // The same filesystem mounted twice at the same place (bind mounts, stacked mounts) is one
    // series, as in node_exporter.
    let mut seen = HashSet::new();
    for m in mounts {
        if MOUNT_POINTS.is_match(&m.mountpoint) || FS_TYPES.is_match(&m.fstype) {
            continue;
        }
        if !seen.insert((m.device.clone(), m.mountpoint.clone(), m.fstype.clone())) {
            continue;
        }
        let usage = statfs(&fs.rootfs(&m.mountpoint));
        let labels = vec![("device", m.device), ("fstype", m.fstype), ("mountpoint", m.mountpoint)];
        let flag = |b: bool| if b { 1.0 } else { 0.0 };
        out.push(device_error, labels.clone(), flag(usage.is_none()));
        out.push(readonly, labels.clone(), flag(m.readonly));
        if let Some(u) = usage {
            out.push(size, labels.clone(), u.size);
            out.push(free, labels.clone(), u.free);
            out.push(avail, labels.clone(), u.avail);
            out.push(files, labels.clone(), u.files);
            out.push(files_free, labels, u.files_free);
        }
    }
    Ok(())
}

fn parse_mounts(text: &str, root: &str) -> Vec<Mount> {
    let root = root.trim_end_matches('/');
    let mut mounts = Vec::new();
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        let (Some(device), Some(mountpoint), Some(fstype), Some(options)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let mountpoint = unescape_octal(mountpoint);
        let mountpoint = match mountpoint.strip_prefix(root) {
            Some("") if !root.is_empty() => "/".to_string(),
            Some(rest) if !root.is_empty() && rest.starts_with('/') => rest.to_string(),
            _ => mountpoint,
        };
        mounts.push(Mount {
            device: device.to_string(),
            mountpoint,
            fstype: fstype.to_string(),
            readonly: options.split(',').any(|o| o == "ro"),
        });
    }
    mounts
}

/// The kernel escapes space, tab, newline and backslash in mount paths as `\ooo` (fstab(5)).
fn unescape_octal(s: &str) -> String {
    if !s.contains('\\') {
        return s.to_string();
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            let digits = &bytes[i + 1..i + 4];
            if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let v = digits.iter().fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                if let Ok(b) = u8::try_from(v) {
                    out.push(b);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `statfs(2)`, reported as node_exporter does: block counts times the fundamental block size.
fn statfs(path: &Path) -> Option<Usage> {
    let c_path = CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: `buf` is plain old data the kernel fills in; `c_path` is a valid NUL-terminated
    // string that outlives the call.
    let buf = unsafe {
        let mut buf: libc::statfs = std::mem::zeroed();
        if libc::statfs(c_path.as_ptr(), &mut buf) != 0 {
            return None;
        }
        buf
    };
    let bsize = buf.f_bsize as f64;
    Some(Usage {
        size: buf.f_blocks as f64 * bsize,
        free: buf.f_bfree as f64 * bsize,
        avail: buf.f_bavail as f64 * bsize,
        files: buf.f_files as f64,
        files_free: buf.f_ffree as f64,
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::{render_one, FakeRoot};
    use super::*;

    #[test]
    fn mounts_are_unescaped_stripped_and_flagged_readonly() {
        let text = "/dev/sda1 /host/var/lib/kube\\040let ext4 rw,relatime 0 0\n\
                    /dev/sda2 /host xfs ro,noatime 0 0\n\
                    /dev/sda3 /hostile ext4 rw 0 0\n\
                    short line\n";
        let mounts = parse_mounts(text, "/host/");
        let got: Vec<(&str, &str, bool)> =
            mounts.iter().map(|m| (m.device.as_str(), m.mountpoint.as_str(), m.readonly)).collect();
        assert_eq!(
            got,
            vec![("/dev/sda1", "/var/lib/kube let", false), ("/dev/sda2", "/", true), ("/dev/sda3", "/hostile", false),]
        );
        assert_eq!(parse_mounts(text, "/")[1].mountpoint, "/host");
    }

    #[test]
    fn octal_escapes() {
        assert_eq!(unescape_octal("/a\\011b\\134c\\012"), "/a\tb\\c\n");
        assert_eq!(unescape_octal("/trailing\\04"), "/trailing\\04");
        assert_eq!(unescape_octal("/plain"), "/plain");
    }

    #[test]
    fn default_excludes_match_node_exporter() {
        for mp in [
            "/dev",
            "/dev/shm",
            "/proc",
            "/sys/fs/cgroup",
            "/run/credentials/x.service",
            "/var/lib/docker/overlay2/abc/merged",
            "/var/lib/containers/storage/overlay",
        ] {
            assert!(MOUNT_POINTS.is_match(mp), "{mp}");
        }
        for mp in ["/", "/run", "/boot", "/var/lib/docker", "/var/lib/kubelet/pods/x/volumes/y", "/devices"] {
            assert!(!MOUNT_POINTS.is_match(mp), "{mp}");
        }
        for t in ["cgroup", "cgroup2", "overlay", "tracefs", "squashfs", "nsfs"] {
            assert!(FS_TYPES.is_match(t), "{t}");
        }
        for t in ["ext4", "xfs", "tmpfs", "btrfs", "nfs4", "vfat", "cgroup3"] {
            assert!(!FS_TYPES.is_match(t), "{t}");
        }
    }

    #[test]
    fn statfs_of_each_kept_mount_and_device_error_for_missing_ones() {
        // The fake root is a real directory, so statfs on "/" under it answers for whatever
        // filesystem holds the tempdir; compare with a direct statfs of it.
        let root = FakeRoot::new().file(
            "proc/1/mounts",
            "/dev/vda / ext4 rw,relatime 0 0\n\
                 proc /proc proc rw 0 0\n\
                 cgroup2 /cgroup cgroup2 rw 0 0\n\
                 tmpfs /gone tmpfs ro 0 0\n\
                 /dev/vda / ext4 rw,relatime 0 0\n",
        );
        let expected = statfs(root.path()).unwrap();
        let text = render_one(&root, collect);
        let labels_root = "{device=\"/dev/vda\",fstype=\"ext4\",mountpoint=\"/\"}";
        let labels_gone = "{device=\"tmpfs\",fstype=\"tmpfs\",mountpoint=\"/gone\"}";
        let want = format!(
            "# HELP node_filesystem_avail_bytes Filesystem space available to non-root users in bytes.\n\
             # TYPE node_filesystem_avail_bytes gauge\n\
             node_filesystem_avail_bytes{labels_root} AVAIL\n\
             # HELP node_filesystem_device_error Whether an error occurred while getting statistics for the given device.\n\
             # TYPE node_filesystem_device_error gauge\n\
             node_filesystem_device_error{labels_root} 0\n\
             node_filesystem_device_error{labels_gone} 1\n\
             # HELP node_filesystem_files Filesystem total file nodes.\n\
             # TYPE node_filesystem_files gauge\n\
             node_filesystem_files{labels_root} FILES\n\
             # HELP node_filesystem_files_free Filesystem total free file nodes.\n\
             # TYPE node_filesystem_files_free gauge\n\
             node_filesystem_files_free{labels_root} FFREE\n\
             # HELP node_filesystem_free_bytes Filesystem free space in bytes.\n\
             # TYPE node_filesystem_free_bytes gauge\n\
             node_filesystem_free_bytes{labels_root} FREE\n\
             # HELP node_filesystem_readonly Filesystem read-only status.\n\
             # TYPE node_filesystem_readonly gauge\n\
             node_filesystem_readonly{labels_root} 0\n\
             node_filesystem_readonly{labels_gone} 1\n\
             # HELP node_filesystem_size_bytes Filesystem size in bytes.\n\
             # TYPE node_filesystem_size_bytes gauge\n\
             node_filesystem_size_bytes{labels_root} SIZE\n"
        );
        // Free space and inodes move while the test runs; check shape exactly, values loosely.
        let mut shape = String::new();
        for line in text.lines() {
            let mut l = line.to_string();
            for (metric, tag) in [
                ("avail_bytes", "AVAIL"),
                ("files_free", "FFREE"),
                ("free_bytes", "FREE"),
                ("files{", "FILES"),
                ("size_bytes", "SIZE"),
            ] {
                if line.starts_with(&format!("node_filesystem_{metric}")) && line.contains(labels_root) {
                    let (head, value) = line.rsplit_once(' ').unwrap();
                    let value: f64 = value.parse().unwrap();
                    let reference = match tag {
                        "SIZE" => expected.size,
                        "FILES" => expected.files,
                        "AVAIL" => expected.avail,
                        "FREE" => expected.free,
                        _ => expected.files_free,
                    };
                    assert!((value - reference).abs() <= reference * 0.01 + 1e8, "{line}");
                    l = format!("{head} {tag}");
                }
            }
            shape.push_str(&l);
            shape.push('\n');
        }
        assert_eq!(shape, want);
    }

    #[test]
    fn falls_back_to_proc_mounts() {
        let root = FakeRoot::new().file("proc/mounts", "/dev/vda / ext4 ro 0 0\n");
        let text = render_one(&root, collect);
        assert!(
            text.contains("node_filesystem_readonly{device=\"/dev/vda\",fstype=\"ext4\",mountpoint=\"/\"} 1\n"),
            "{text}"
        );
    }
}
