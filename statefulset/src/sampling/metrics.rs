//! The sampler's self-metrics.

use std::sync::LazyLock;

use lgtm_pipeline::metrics::{counter_vec, register};
use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge};

use super::buffer::{Late, Outcome};

pub struct SamplingMetrics {
    /// Traces decided, by the policy that kept them (`none` when dropped) and decision.
    pub traces: IntCounterVec,
    pub late_spans: IntCounterVec,
    pub early: IntCounterVec,
    pub buffered: IntGauge,
    pub buffer_bytes: IntGauge,
    pub buffered_spans: IntGauge,
    pub decision_latency: Histogram,
    pub spans: IntCounterVec,
}

pub fn sampling() -> &'static SamplingMetrics {
    static M: LazyLock<SamplingMetrics> = LazyLock::new(|| SamplingMetrics {
        traces: counter_vec(
            "lgtm_agent_sampling_traces_total",
            "Traces decided, by the policy that kept them (none: dropped) and decision (sampled, not_sampled).",
            &["policy", "decision"],
        ),
        late_spans: counter_vec(
            "lgtm_agent_sampling_late_spans_total",
            "Spans that arrived after their trace was decided, by the decision they followed.",
            &["decision"],
        ),
        early: counter_vec(
            "lgtm_agent_sampling_early_decisions_total",
            "Traces decided before decision_wait, by reason (max_traces, max_buffer, trace_too_large, shutdown).",
            &["reason"],
        ),
        buffered: register(
            IntGauge::new("lgtm_agent_sampling_traces_buffered", "Traces waiting for a decision.")
                .expect("valid metric"),
        ),
        buffer_bytes: register(
            IntGauge::new("lgtm_agent_sampling_buffer_bytes", "Bytes of spans waiting for a decision.")
                .expect("valid metric"),
        ),
        buffered_spans: register(
            IntGauge::new("lgtm_agent_sampling_spans_buffered", "Spans waiting for a decision.").expect("valid metric"),
        ),
        decision_latency: register(
            Histogram::with_opts(
                HistogramOpts::new(
                    "lgtm_agent_sampling_decision_latency_seconds",
                    "Time from a trace's first span to its decision.",
                )
                .buckets(vec![0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0]),
            )
            .expect("valid metric"),
        ),
        spans: counter_vec(
            "lgtm_agent_sampling_spans_total",
            "Spans through the sampler, by decision (sampled, not_sampled).",
            &["decision"],
        ),
    });
    &M
}

/// Counts what one call of the buffer produced.
pub fn record(out: &Outcome) {
    let m = sampling();
    for d in &out.decided {
        let (policy, decision) = match &d.policy {
            Some(p) => (p.as_str(), "sampled"),
            None => ("none", "not_sampled"),
        };
        m.traces.with_label_values(&[policy, decision]).inc();
        m.spans.with_label_values(&[decision]).inc_by(d.spans);
        if let Some(why) = d.early {
            m.early.with_label_values(&[why.as_str()]).inc();
        }
        m.decision_latency.observe(d.waited.as_secs_f64());
    }
    for (late, n) in &out.late {
        let decision = match late {
            Late::Kept => "sampled",
            Late::Dropped => "not_sampled",
        };
        m.late_spans.with_label_values(&[decision]).inc_by(*n);
    }
}
