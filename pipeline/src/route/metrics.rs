//! The router's self-metrics.

use std::sync::LazyLock;

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts};

use crate::metrics::{counter_vec, register};

pub struct RouteMetrics {
    pub forwarded: IntCounter,
    pub retries: IntCounter,
    pub rerouted: IntCounter,
    pub dropped: IntCounterVec,
    pub endpoints: IntGauge,
    pub pending_bytes: IntGauge,
}

pub fn route() -> &'static RouteMetrics {
    static M: LazyLock<RouteMetrics> = LazyLock::new(|| {
        let counter =
            |name: &str, help: &str| register(IntCounter::with_opts(Opts::new(name, help)).expect("valid metric"));
        let gauge =
            |name: &str, help: &str| register(IntGauge::with_opts(Opts::new(name, help)).expect("valid metric"));
        RouteMetrics {
            forwarded: counter("lgtm_agent_route_forwarded_spans_total", "Spans a cluster-mode replica accepted."),
            retries: counter("lgtm_agent_route_retries_total", "Export requests to a replica retried."),
            rerouted: counter(
                "lgtm_agent_route_rerouted_spans_total",
                "Spans placed again because their replica left or none was known.",
            ),
            dropped: counter_vec(
                "lgtm_agent_route_dropped_spans_total",
                "Spans a replica refused as invalid, by gRPC code.",
                &["code"],
            ),
            endpoints: gauge("lgtm_agent_route_endpoints", "Cluster-mode replicas traces are routed to."),
            pending_bytes: gauge("lgtm_agent_route_pending_bytes", "Bytes of spans waiting for a replica."),
        }
    });
    &M
}
