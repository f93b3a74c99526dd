//! The Loki exporter keeps its own queue defaults when the file has a `loki:` section.

use lgtm_config::{ByteSize, Config};

fn load(yaml: &str) -> Config {
    Config::from_yaml("c.yaml", yaml, None, |_| None).expect("valid")
}

#[test]
fn loki_section_without_queue_keeps_the_memory_only_default() {
    let c = load("exporters:\n  loki:\n    url: http://loki:3100/loki/api/v1/push\n");
    assert_eq!(c.exporters.loki.queue.max_memory(), ByteSize::from_bytes(16 << 20));
    assert_eq!(c.exporters.loki.queue.max_disk(), ByteSize::from_bytes(0));
    assert_eq!(c.exporters.mimir.queue.max_disk(), ByteSize::from_bytes(1 << 30));
}

#[test]
fn explicit_loki_queue_values_win() {
    let c = load("exporters:\n  loki:\n    queue: { max_disk: 2GiB }\n");
    assert_eq!(c.exporters.loki.queue.max_disk(), ByteSize::from_bytes(2 << 30));
    assert_eq!(c.exporters.loki.queue.max_memory(), ByteSize::from_bytes(16 << 20));
}

fn invalid(yaml: &str) -> String {
    match Config::from_yaml("c.yaml", yaml, None, |_| None) {
        Ok(_) => panic!("accepted:\n{yaml}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_loki_queue_smaller_than_a_tailer_batch_is_refused_naming_the_field() {
    let e = invalid("mode: daemonset\nexporters:\n  loki:\n    queue:\n      max_memory: 1MiB\n");
    assert_eq!(
        e,
        "c.yaml:5: exporters.loki.queue.max_memory: 1MiB is smaller than the largest batch of the pod log tailer \
         (2298KiB: 2MiB + logs.max_line_size); logs would stall"
    );
    // The batch grows with the longest joined line.
    let e = invalid(
        "mode: daemonset\nlogs:\n  max_line_size: 4MiB\nexporters:\n  loki:\n    queue: { max_memory: 4MiB }\n    limits: { max_line_size: 4MiB }\n",
    );
    assert!(e.starts_with("c.yaml:6: exporters.loki.queue.max_memory: 4MiB is smaller"), "{e}");
    // With a disk, the disk is the bound.
    let e = invalid("mode: daemonset\nexporters:\n  loki:\n    queue: { max_memory: 1MiB, max_disk: 2MiB }\n");
    assert!(e.starts_with("c.yaml:4: exporters.loki.queue.max_disk: 2MiB is smaller"), "{e}");
}

#[test]
fn a_small_loki_queue_is_fine_when_the_tailer_does_not_run_or_it_fits() {
    load("mode: cluster\nexporters:\n  loki:\n    queue: { max_memory: 1MiB }\n");
    load("mode: daemonset\nlogs: { enabled: false }\nexporters:\n  loki:\n    queue: { max_memory: 1MiB }\n");
    load("mode: daemonset\nexporters:\n  loki:\n    queue: { max_memory: 1MiB, max_disk: 64MiB }\n");
    let c = load("mode: daemonset\nexporters:\n  loki:\n    queue: { max_memory: 2298KiB }\n");
    assert_eq!(c.exporters.loki.queue.max_memory(), c.logs.largest_batch());
}

#[test]
fn split_lines_longer_than_lokis_max_line_size_are_refused_naming_the_field() {
    let e = invalid("mode: daemonset\nlogs:\n  max_line_size: 256KiB\n");
    assert_eq!(
        e,
        "c.yaml:3: logs.max_line_size: 256KiB is larger than exporters.loki.limits.max_line_size 250KiB: Loki would \
         refuse the parts of split lines; lower it, or raise the limit to what your Loki allows"
    );
    // Loki cuts them, or the check is off, or the limit is raised: fine.
    load("mode: daemonset\nlogs:\n  max_line_size: 1MiB\nexporters:\n  loki:\n    limits: { max_line_size_truncate: true }\n");
    load("mode: daemonset\nlogs:\n  max_line_size: 1MiB\nexporters:\n  loki:\n    limits: { max_line_size: 0 }\n");
    load("mode: daemonset\nlogs:\n  max_line_size: 1MiB\nexporters:\n  loki:\n    limits: { max_line_size: 1MiB }\n");
    let c = load("mode: daemonset\n");
    assert!(c.logs.max_line_size <= c.exporters.loki.limits.max_line_size, "the defaults agree");
}
