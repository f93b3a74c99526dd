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
