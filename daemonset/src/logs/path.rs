//! The kubelet's pod log layout: `<root>/<namespace>_<pod>_<uid>/<container>/<n>.log`, where `n`
//! is the container's restart count. Rotated files sit beside it as `<n>.log.<timestamp>` (and
//! later `<n>.log.<timestamp>.gz`, written through a `.tmp` file).

use std::path::Path;

/// What a log file's path says about its container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodLogPath {
    pub namespace: String,
    pub pod: String,
    pub uid: String,
    pub container: String,
    /// The restart count (`n` of `<n>.log`).
    pub restart: u32,
}

/// Parses the last three components of `path`. `None` when it is not an active container log
/// (rotated files and anything else are `None`; see [`parse_rotated`]).
///
/// Namespace names cannot contain `_` (they are DNS labels) and pod uids are UUIDs, so the first
/// `_` ends the namespace and the last `_` starts the uid; pod names may not contain `_` either,
/// but splitting that way keeps us right even if a runtime allowed it.
pub fn parse(path: &Path) -> Option<PodLogPath> {
    let file = path.file_name()?.to_str()?;
    let n = file.strip_suffix(".log")?;
    let restart: u32 = n.parse().ok()?;
    parse_dirs(path, restart)
}

/// Parses a rotated file `<n>.log.<timestamp>` (uncompressed only: `.gz` and `.tmp` are `None`).
pub fn parse_rotated(path: &Path) -> Option<PodLogPath> {
    let file = path.file_name()?.to_str()?;
    let (n, suffix) = file.split_once(".log.")?;
    if suffix.is_empty() || suffix.ends_with(".gz") || suffix.ends_with(".tmp") {
        return None;
    }
    let restart: u32 = n.parse().ok()?;
    parse_dirs(path, restart)
}

/// Directory names that are not UTF-8 are converted lossily (U+FFFD for bad bytes): the file is
/// still read (by its real path) and shipped; the tailer counts and warns once.
fn parse_dirs(path: &Path, restart: u32) -> Option<PodLogPath> {
    let container_dir = path.parent()?;
    let container = container_dir.file_name()?.to_string_lossy();
    let pod_dir = container_dir.parent()?.file_name()?.to_string_lossy();
    let (namespace, rest) = pod_dir.split_once('_')?;
    let (pod, uid) = rest.rsplit_once('_')?;
    if namespace.is_empty() || pod.is_empty() || uid.is_empty() || container.is_empty() {
        return None;
    }
    Some(PodLogPath {
        namespace: namespace.to_string(),
        pod: pod.to_string(),
        uid: uid.to_string(),
        container: container.to_string(),
        restart,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Option<(String, String, String, String, u32)> {
        parse(Path::new(s)).map(|l| (l.namespace, l.pod, l.uid, l.container, l.restart))
    }

    #[test]
    fn parses_the_kubelet_layout() {
        type Row<'a> = (&'a str, Option<(&'a str, &'a str, &'a str, &'a str, u32)>);
        let rows: &[Row<'_>] = &[
            (
                "/var/log/pods/default_web-7d9f_0a1b-2c3d/nginx/0.log",
                Some(("default", "web-7d9f", "0a1b-2c3d", "nginx", 0)),
            ),
            (
                "/var/log/pods/kube-system_coredns-abc_uid/coredns/12.log",
                Some(("kube-system", "coredns-abc", "uid", "coredns", 12)),
            ),
            // A pod name with an underscore (not valid in Kubernetes, but the uid is still last).
            ("/x/ns_a_b_uid/c/1.log", Some(("ns", "a_b", "uid", "c", 1))),
            ("/x/ns_pod_uid/c/0.log.20240101-120000", None),
            ("/x/ns_pod_uid/c/0.log.20240101-120000.gz", None),
            ("/x/ns_pod_uid/c/x.log", None),
            ("/x/nsonly/c/0.log", None),
            ("/x/ns_pod/c/0.log", None),
            ("0.log", None),
            ("/x/_pod_uid/c/0.log", None),
        ];
        for (path, want) in rows {
            let want = want.map(|(a, b, c, d, e)| (a.to_string(), b.to_string(), c.to_string(), d.to_string(), e));
            assert_eq!(p(path), want, "{path}");
        }
    }

    #[test]
    fn directory_names_that_are_not_utf8_are_converted_lossily() {
        use std::os::unix::ffi::OsStrExt;
        let p = Path::new(std::ffi::OsStr::from_bytes(b"/x/ns_p\xffd_uid/c\xfe/0.log"));
        let l = parse(p).unwrap();
        assert_eq!((l.namespace.as_str(), l.pod.as_str(), l.container.as_str()), ("ns", "p\u{fffd}d", "c\u{fffd}"));
    }

    #[test]
    fn rotated_files_are_recognised_but_not_compressed_ones() {
        assert!(parse_rotated(Path::new("/x/ns_pod_uid/c/0.log.20240101-120000")).is_some());
        assert!(parse_rotated(Path::new("/x/ns_pod_uid/c/0.log.20240101-120000.gz")).is_none());
        assert!(parse_rotated(Path::new("/x/ns_pod_uid/c/0.log.20240101-120000.gz.tmp")).is_none());
        assert!(parse_rotated(Path::new("/x/ns_pod_uid/c/0.log")).is_none());
    }
}
