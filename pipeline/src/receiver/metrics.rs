//! The receiver's self-metrics.

use std::sync::LazyLock;

use prometheus::IntCounterVec;

use crate::metrics::counter_vec;

pub struct OtlpMetrics {
    /// Items (spans, data points, log records) taken, by signal and transport.
    pub received: IntCounterVec,
    /// Requests refused, by signal and reason (`malformed`, `too_large`, `busy`, ...).
    pub rejected: IntCounterVec,
    /// Items of accepted requests that cannot be shipped, by signal and reason
    /// (`exponential_histogram`, `delta_temporality`, ...).
    pub dropped: IntCounterVec,
}

pub fn otlp() -> &'static OtlpMetrics {
    static M: LazyLock<OtlpMetrics> = LazyLock::new(|| OtlpMetrics {
        received: counter_vec(
            "lgtm_agent_otlp_received_total",
            "OTLP items (spans, data points, log records) taken, by signal and transport.",
            &["signal", "transport"],
        ),
        rejected: counter_vec(
            "lgtm_agent_otlp_rejected_total",
            "OTLP requests refused, by signal and reason.",
            &["signal", "reason"],
        ),
        dropped: counter_vec(
            "lgtm_agent_otlp_dropped_total",
            "OTLP items of accepted requests that cannot be converted for the backend, by signal and reason.",
            &["signal", "reason"],
        ),
    });
    &M
}
