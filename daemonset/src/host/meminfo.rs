//! node_exporter's `meminfo` collector: one gauge per `/proc/meminfo` field.
//!
//! Naming follows node_exporter: `Active(anon)` becomes `Active_anon`; a field with a unit (the
//! kernel only prints `kB`) is multiplied by 1024 and gets `_bytes`, a field without one
//! (`HugePages_Total`) keeps its bare name. Every field the kernel prints is exposed, so new
//! kernel fields appear without a code change.

use super::exposition::{HostMetrics, MetricType};
use super::fs::{parse_error, parse_f64, HostFs};
use super::HostError;

pub(crate) fn collect(fs: &mut HostFs, out: &mut HostMetrics) -> Result<(), HostError> {
    let path = fs.proc("meminfo");
    let text = fs.read(&path)?;
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        let (Some(key), Some(value)) = (fields.next(), fields.next()) else {
            continue;
        };
        let Some(key) = key.strip_suffix(':') else {
            return Err(parse_error(&path, format!("line without a colon: {line:?}")));
        };
        let mut value = parse_f64(value, &path, key)?;
        let mut name = String::with_capacity(key.len() + 20);
        name.push_str("node_memory_");
        push_field_name(&mut name, key);
        if fields.next().is_some() {
            value *= 1024.0;
            name.push_str("_bytes");
        }
        let help = format!("Memory information field {}.", &name["node_memory_".len()..]);
        let id = out.family(name, help, MetricType::Gauge);
        out.push(id, Vec::new(), value);
    }
    Ok(())
}

/// `Active(anon)` -> `Active_anon`; anything else outside `[A-Za-z0-9_]` becomes `_`.
fn push_field_name(name: &mut String, key: &str) {
    for c in key.chars() {
        match c {
            '(' => name.push('_'),
            ')' => {}
            c if c.is_ascii_alphanumeric() || c == '_' => name.push(c),
            _ => name.push('_'),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{render_one, FakeRoot};
    use super::*;

    #[test]
    fn fields_get_node_exporter_names_and_bytes() {
        let root = FakeRoot::new().file(
            "proc/meminfo",
            "MemTotal:       24684092 kB\n\
             Active(anon):       1592 kB\n\
             NFS_Unstable:          0 kB\n\
             HugePages_Total:       4\n\
             Hugepagesize:       2048 kB\n",
        );
        let text = render_one(&root, collect);
        assert_eq!(
            text,
            "# HELP node_memory_Active_anon_bytes Memory information field Active_anon_bytes.\n\
             # TYPE node_memory_Active_anon_bytes gauge\n\
             node_memory_Active_anon_bytes 1630208\n\
             # HELP node_memory_HugePages_Total Memory information field HugePages_Total.\n\
             # TYPE node_memory_HugePages_Total gauge\n\
             node_memory_HugePages_Total 4\n\
             # HELP node_memory_Hugepagesize_bytes Memory information field Hugepagesize_bytes.\n\
             # TYPE node_memory_Hugepagesize_bytes gauge\n\
             node_memory_Hugepagesize_bytes 2097152\n\
             # HELP node_memory_MemTotal_bytes Memory information field MemTotal_bytes.\n\
             # TYPE node_memory_MemTotal_bytes gauge\n\
             node_memory_MemTotal_bytes 25276510208\n\
             # HELP node_memory_NFS_Unstable_bytes Memory information field NFS_Unstable_bytes.\n\
             # TYPE node_memory_NFS_Unstable_bytes gauge\n\
             node_memory_NFS_Unstable_bytes 0\n"
        );
    }

    #[test]
    fn missing_meminfo_is_an_error_naming_the_file() {
        let root = FakeRoot::new();
        let mut fs = HostFs::new(root.path());
        let err = collect(&mut fs, &mut HostMetrics::default()).unwrap_err();
        assert!(err.to_string().contains("proc/meminfo"), "{err}");
    }
}
