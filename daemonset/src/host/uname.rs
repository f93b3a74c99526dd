//! node_exporter's `uname` collector: `node_uname_info`, from `uname(2)`.
//!
//! The kernel fields describe the host; `nodename` and `domainname` are those of our UTS
//! namespace (the node's with `hostNetwork: true`, as node_exporter's).

use std::ffi::CStr;

use super::exposition::{HostMetrics, MetricType};
use super::HostError;

pub(crate) fn collect(out: &mut HostMetrics) -> Result<(), HostError> {
    // SAFETY: uname fills the struct we own; every field is a NUL-terminated array within it.
    let u = unsafe {
        let mut u: libc::utsname = std::mem::zeroed();
        if libc::uname(&mut u) != 0 {
            return Err(HostError::Read { path: "uname(2)".into(), source: std::io::Error::last_os_error() });
        }
        u
    };
    let field = |f: &[libc::c_char]| {
        // SAFETY: the kernel NUL-terminates every utsname field inside its array.
        unsafe { CStr::from_ptr(f.as_ptr()) }.to_string_lossy().into_owned()
    };
    let id = out.family(
        "node_uname_info",
        "Labeled system information as provided by the uname system call.",
        MetricType::Gauge,
    );
    out.push(
        id,
        vec![
            ("domainname", field(&u.domainname)),
            ("machine", field(&u.machine)),
            ("nodename", field(&u.nodename)),
            ("release", field(&u.release)),
            ("sysname", field(&u.sysname)),
            ("version", field(&u.version)),
        ],
        1.0,
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uname_info_has_node_exporter_labels() {
        let mut m = HostMetrics::default();
        collect(&mut m).unwrap();
        let s = &m.get("node_uname_info").unwrap().samples[0];
        let names: Vec<&str> = s.labels.iter().map(|(k, _)| *k).collect();
        assert_eq!(names, ["domainname", "machine", "nodename", "release", "sysname", "version"]);
        assert_eq!(s.labels[4].1, "Linux");
        assert_eq!(s.value, 1.0);
    }
}
