//! Self-metrics shared by every part of the agent: one registry, rendered by the admin server's
//! `/metrics`. Every crate registers its `lgtm_agent_*` families here.

use std::sync::LazyLock;

use prometheus::{GaugeVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

/// The process-wide registry.
pub fn registry() -> &'static Registry {
    static REGISTRY: LazyLock<Registry> = LazyLock::new(Registry::new);
    &REGISTRY
}

/// Registers a collector, ignoring a second registration of the same family (tests start several
/// pipelines in one process).
pub fn register<C: prometheus::core::Collector + Clone + 'static>(c: C) -> C {
    let _ = registry().register(Box::new(c.clone()));
    c
}

/// A counter family registered on [`registry`].
pub fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition"))
}

/// An integer gauge family registered on [`registry`].
pub fn int_gauge_vec(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    register(IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric definition"))
}

/// A float gauge family registered on [`registry`].
pub fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    register(GaugeVec::new(Opts::new(name, help), labels).expect("valid metric definition"))
}

/// The pipeline's own families.
pub struct PipelineMetrics {
    /// Items (samples, entries, spans) the backend accepted.
    pub sent: IntCounterVec,
    /// Items refused or failed, by reason (`http_400`, `grpc_invalid_argument`, `timeout`, ...).
    pub failed: IntCounterVec,
    /// Requests retried.
    pub retries: IntCounterVec,
    /// Items dropped, by reason (`rejected`, `evicted`, `disabled`, `too_large`).
    pub dropped: IntCounterVec,
    /// Items handed to the pipeline by sources.
    pub received: IntCounterVec,
    pub queue_bytes: IntGaugeVec,
    pub queue_records: IntGaugeVec,
    pub queue_oldest_age: GaugeVec,
    /// Appends refused by a full device (ENOSPC), not by the queue's own limit.
    pub queue_device_full: IntCounterVec,
    pub build_info: IntGaugeVec,
}

/// The pipeline's families, registered once.
pub fn pipeline() -> &'static PipelineMetrics {
    static M: LazyLock<PipelineMetrics> = LazyLock::new(|| {
        let m = PipelineMetrics {
            sent: counter_vec("lgtm_agent_exporter_sent_total", "Items the backend accepted.", &["exporter"]),
            failed: counter_vec(
                "lgtm_agent_exporter_failed_total",
                "Items whose request failed, by reason.",
                &["exporter", "reason"],
            ),
            retries: counter_vec("lgtm_agent_exporter_retries_total", "Requests retried.", &["exporter"]),
            dropped: counter_vec(
                "lgtm_agent_dropped_total",
                "Items dropped and never delivered, by reason.",
                &["exporter", "reason"],
            ),
            received: counter_vec(
                "lgtm_agent_pipeline_received_total",
                "Items handed to the pipeline by sources.",
                &["exporter"],
            ),
            queue_bytes: int_gauge_vec(
                "lgtm_agent_queue_bytes",
                "Bytes of records in the exporter's queue, by medium (memory, disk).",
                &["exporter", "medium"],
            ),
            queue_records: int_gauge_vec("lgtm_agent_queue_records", "Records not yet committed.", &["exporter"]),
            queue_oldest_age: gauge_vec(
                "lgtm_agent_queue_oldest_age_seconds",
                "Age of the oldest uncommitted record.",
                &["exporter"],
            ),
            queue_device_full: counter_vec(
                "lgtm_agent_queue_device_full_total",
                "Appends to the queue's disk refused because the device was full; the queue then holds at what it has (when_full applies).",
                &["exporter"],
            ),
            build_info: int_gauge_vec("lgtm_agent_build_info", "Always 1; the version as a label.", &["version"]),
        };
        m.build_info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        m
    });
    &M
}

impl PipelineMetrics {
    /// Creates an exporter's series at 0, so that `rate()` and alerts see them from the start
    /// (the Prometheus client convention) rather than from the first event of each kind.
    pub fn init_exporter(&self, exporter: &str) {
        self.sent.with_label_values(&[exporter]);
        self.retries.with_label_values(&[exporter]);
        self.received.with_label_values(&[exporter]);
        self.queue_device_full.with_label_values(&[exporter]);
        for reason in ["rejected", "evicted"] {
            self.dropped.with_label_values(&[exporter, reason]);
        }
    }
}

/// What the Loki exporter does about Loki's limits.
pub struct LokiMetrics {
    /// Times Loki refused structured metadata (then entries go without it).
    pub structured_metadata_refused: IntCounter,
    /// Entries held back because Loki's stream limit refused their stream.
    pub held_back: IntCounter,
    /// Streams held back now.
    pub held_streams: IntGauge,
    /// Lines cut to `exporters.loki.limits.max_line_size` (`max_line_size_truncate`).
    pub truncated: IntCounter,
}

pub fn loki() -> &'static LokiMetrics {
    static M: LazyLock<LokiMetrics> = LazyLock::new(|| {
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            registry().register(Box::new(c.clone())).expect("registered once");
            c
        };
        let held_streams =
            IntGauge::new("lgtm_agent_loki_held_back_streams", "Streams held back by Loki's stream limit now.")
                .expect("valid metric");
        registry().register(Box::new(held_streams.clone())).expect("registered once");
        LokiMetrics {
            structured_metadata_refused: counter(
                "lgtm_agent_loki_structured_metadata_refused_total",
                "Times Loki refused structured metadata; entries are then sent without it.",
            ),
            held_back: counter(
                "lgtm_agent_loki_held_back_total",
                "Entries held back because Loki's stream limit refused their stream (retried; dropped after stream_limit_hold_back).",
            ),
            held_streams,
            truncated: counter(
                "lgtm_agent_loki_lines_truncated_total",
                "Lines cut to exporters.loki.limits.max_line_size before sending (max_line_size_truncate), as Loki would.",
            ),
        }
    });
    &M
}

/// Renders every registered family in the Prometheus text format 0.0.4.
pub fn render() -> String {
    let families = registry().gather();
    let mut out = String::new();
    // TextEncoder only fails on invalid UTF-8, which our names cannot contain.
    let _ = prometheus::TextEncoder::new().encode_utf8(&families, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exporters_counters_exist_at_zero_before_anything_happens() {
        let _ = crate::exporter::outcome::Reporter::new("counters-at-zero");
        let text = render();
        for series in [
            r#"lgtm_agent_exporter_sent_total{exporter="counters-at-zero"} 0"#,
            r#"lgtm_agent_exporter_retries_total{exporter="counters-at-zero"} 0"#,
            r#"lgtm_agent_pipeline_received_total{exporter="counters-at-zero"} 0"#,
            r#"lgtm_agent_dropped_total{exporter="counters-at-zero",reason="rejected"} 0"#,
            r#"lgtm_agent_dropped_total{exporter="counters-at-zero",reason="evicted"} 0"#,
        ] {
            assert!(text.lines().any(|l| l == series), "missing {series}");
        }
    }
}
