//! node_exporter's `loadavg` collector: `node_load1`, `node_load5`, `node_load15`.

use super::exposition::{HostMetrics, MetricType};
use super::fs::{parse_error, parse_f64, HostFs};
use super::HostError;

pub(crate) fn collect(fs: &mut HostFs, out: &mut HostMetrics) -> Result<(), HostError> {
    let path = fs.proc("loadavg");
    let text = fs.read(&path)?;
    let mut fields = text.split_ascii_whitespace();
    let mut next = |what| match fields.next() {
        Some(f) => parse_f64(f, &path, what),
        None => Err(parse_error(&path, format!("missing {what}"))),
    };
    let (one, five, fifteen) = (next("load1")?, next("load5")?, next("load15")?);
    out.single("node_load1", "1m load average.", MetricType::Gauge, one);
    out.single("node_load5", "5m load average.", MetricType::Gauge, five);
    out.single("node_load15", "15m load average.", MetricType::Gauge, fifteen);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testing::{render_one, FakeRoot};
    use super::*;

    #[test]
    fn three_load_averages() {
        let root = FakeRoot::new().file("proc/loadavg", "3.58 1.98 0.88 2/119 7301\n");
        assert_eq!(
            render_one(&root, collect),
            "# HELP node_load1 1m load average.\n# TYPE node_load1 gauge\nnode_load1 3.58\n\
             # HELP node_load15 15m load average.\n# TYPE node_load15 gauge\nnode_load15 0.88\n\
             # HELP node_load5 5m load average.\n# TYPE node_load5 gauge\nnode_load5 1.98\n"
        );
    }

    #[test]
    fn truncated_loadavg_is_an_error() {
        let root = FakeRoot::new().file("proc/loadavg", "3.58\n");
        let mut fs = HostFs::new(root.path());
        let err = collect(&mut fs, &mut HostMetrics::default()).unwrap_err();
        assert!(err.to_string().contains("missing load5"), "{err}");
    }
}
