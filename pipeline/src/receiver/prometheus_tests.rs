use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, summary_data_point, AggregationTemporality, ExponentialHistogram,
    ExponentialHistogramDataPoint, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics,
    ScopeMetrics, Sum, Summary, SummaryDataPoint,
};
use opentelemetry_proto::tonic::resource::v1::Resource;

use super::*;
use crate::proto::{TimeSeries, STALE_NAN_BITS};

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(v.into())) }),
        ..Default::default()
    }
}

const T: u64 = 1_700_000_000_123_456_789;

fn request(metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", "checkout"),
                    kv("service.namespace", "shop"),
                    kv("service.instance.id", "pod-1"),
                    kv("k8s.pod.name", "checkout-7d9"),
                ],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope { name: "lib".into(), version: "1.2".into(), ..Default::default() }),
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn point(v: f64, attrs: Vec<KeyValue>) -> NumberDataPoint {
    NumberDataPoint {
        attributes: attrs,
        time_unix_nano: T,
        value: Some(number_data_point::Value::AsDouble(v)),
        ..Default::default()
    }
}

fn sum(name: &str, unit: &str, monotonic: bool, temporality: AggregationTemporality) -> Metric {
    Metric {
        name: name.into(),
        unit: unit.into(),
        data: Some(metric::Data::Sum(Sum {
            data_points: vec![point(3.0, vec![kv("http.method", "GET")])],
            aggregation_temporality: temporality as i32,
            is_monotonic: monotonic,
        })),
        ..Default::default()
    }
}

fn label<'a>(s: &'a TimeSeries, name: &str) -> Option<&'a str> {
    s.labels.iter().find(|l| l.name == name).map(|l| l.value.as_str())
}

fn by_name<'a>(c: &'a Converted, name: &str) -> Vec<&'a TimeSeries> {
    c.series.iter().filter(|s| label(s, "__name__") == Some(name)).collect()
}

#[test]
fn metric_names_follow_the_prometheus_compatibility_rules() {
    let table = [
        // (otel name, unit, kind, prometheus name)
        ("http.server.duration", "s", Kind::Histogram, "http_server_duration_seconds"),
        ("http.server.duration", "ms", Kind::Histogram, "http_server_duration_milliseconds"),
        ("http.server.requests", "{request}", Kind::Counter, "http_server_requests_total"),
        ("process.memory.usage", "By", Kind::Gauge, "process_memory_usage_bytes"),
        ("network.io", "By/s", Kind::Gauge, "network_io_bytes_per_second"),
        ("cpu.utilization", "1", Kind::Gauge, "cpu_utilization_ratio"),
        ("cpu.utilization", "1", Kind::Counter, "cpu_utilization_total"),
        ("requests_total", "", Kind::Counter, "requests_total"),
        ("total.requests", "", Kind::Counter, "requests_total"),
        ("latency_seconds", "s", Kind::Gauge, "latency_seconds"),
        ("queue-size", "", Kind::Gauge, "queue_size"),
        ("2xx.responses", "", Kind::Counter, "_2xx_responses_total"),
        ("temp", "Cel", Kind::Gauge, "temp_celsius"),
        ("odd", "foo bar", Kind::Gauge, "odd_foo_bar"),
        ("ns:rule", "", Kind::Gauge, "ns:rule"),
    ];
    for (name, unit, kind, want) in table {
        assert_eq!(metric_name(name, unit, kind), want, "{name} [{unit}]");
    }
}

#[test]
fn label_names_are_sanitized() {
    for (key, want) in [("http.method", "http_method"), ("a-b/c", "a_b_c"), ("1st", "key_1st"), ("ok_1", "ok_1")] {
        assert_eq!(label_name(key), want);
    }
}

#[test]
fn monotonic_cumulative_sum_is_a_counter_with_job_instance_and_scope() {
    let c = convert(&request(vec![sum("http.requests", "", true, AggregationTemporality::Cumulative)]));
    let series = by_name(&c, "http_requests_total");
    assert_eq!(series.len(), 1);
    let s = series[0];
    assert_eq!(label(s, "job"), Some("shop/checkout"));
    assert_eq!(label(s, "instance"), Some("pod-1"));
    assert_eq!(label(s, "http_method"), Some("GET"));
    assert_eq!(label(s, "otel_scope_name"), Some("lib"));
    assert_eq!(label(s, "otel_scope_version"), Some("1.2"));
    assert_eq!(label(s, "k8s_pod_name"), None, "resource attributes go to target_info only");
    assert_eq!(s.samples[0].value, 3.0);
    assert_eq!(s.samples[0].timestamp, (T / 1_000_000) as i64);
    assert_eq!(c.points, 1);
    assert!(c.dropped.is_empty());
}

#[test]
fn resource_attributes_become_one_target_info_series() {
    let c = convert(&request(vec![sum("a", "", false, AggregationTemporality::Cumulative)]));
    let info = by_name(&c, "target_info");
    assert_eq!(info.len(), 1);
    assert_eq!(label(info[0], "k8s_pod_name"), Some("checkout-7d9"));
    assert_eq!(label(info[0], "job"), Some("shop/checkout"));
    assert_eq!(label(info[0], "instance"), Some("pod-1"));
    assert_eq!(label(info[0], "service_name"), None);
    assert_eq!(info[0].samples[0].value, 1.0);
    assert_eq!(info[0].samples[0].timestamp, (T / 1_000_000) as i64);
}

#[test]
fn non_monotonic_sum_is_a_gauge_without_total() {
    let c = convert(&request(vec![sum("queue.depth", "", false, AggregationTemporality::Cumulative)]));
    assert_eq!(by_name(&c, "queue_depth").len(), 1);
}

#[test]
fn delta_sums_and_exponential_histograms_are_dropped_and_counted() {
    let exp = Metric {
        name: "latency".into(),
        data: Some(metric::Data::ExponentialHistogram(ExponentialHistogram {
            data_points: vec![ExponentialHistogramDataPoint::default(); 2],
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
        })),
        ..Default::default()
    };
    let c = convert(&request(vec![sum("a", "", true, AggregationTemporality::Delta), exp]));
    assert_eq!(c.points, 0);
    assert!(c.dropped.contains(&("delta_temporality", 1)));
    assert!(c.dropped.contains(&("exponential_histogram", 2)));
    assert!(c.dropped_message().contains("exponential_histogram"));
}

#[test]
fn gauge_with_int_value_and_no_recorded_value_flag() {
    let mut stale = point(0.0, vec![kv("k", "b")]);
    stale.flags = 1;
    let mut int = point(0.0, vec![kv("k", "a")]);
    int.value = Some(number_data_point::Value::AsInt(42));
    let g = Metric {
        name: "temperature".into(),
        data: Some(metric::Data::Gauge(Gauge { data_points: vec![int, stale] })),
        ..Default::default()
    };
    let c = convert(&request(vec![g]));
    let series = by_name(&c, "temperature");
    assert_eq!(series[0].samples[0].value, 42.0);
    assert_eq!(series[1].samples[0].value.to_bits(), STALE_NAN_BITS);
}

#[test]
fn cumulative_histogram_becomes_buckets_sum_and_count() {
    let h = Metric {
        name: "http.server.duration".into(),
        unit: "s".into(),
        data: Some(metric::Data::Histogram(Histogram {
            data_points: vec![HistogramDataPoint {
                time_unix_nano: T,
                count: 6,
                sum: Some(1.5),
                bucket_counts: vec![1, 2, 3],
                explicit_bounds: vec![0.005, 1.0],
                attributes: vec![kv("http.route", "/a"), kv("le", "evil"), kv("__name__", "evil")],
                ..Default::default()
            }],
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
        })),
        ..Default::default()
    };
    let c = convert(&request(vec![h]));
    let buckets = by_name(&c, "http_server_duration_seconds_bucket");
    let got: Vec<(Option<&str>, f64)> = buckets.iter().map(|s| (label(s, "le"), s.samples[0].value)).collect();
    assert_eq!(got, vec![(Some("0.005"), 1.0), (Some("1"), 3.0), (Some("+Inf"), 6.0)]);
    assert_eq!(by_name(&c, "http_server_duration_seconds_sum")[0].samples[0].value, 1.5);
    assert_eq!(by_name(&c, "http_server_duration_seconds_count")[0].samples[0].value, 6.0);
    // Every series of the point carries its attributes; its own `le` and `__name__` win.
    let of_point: Vec<&TimeSeries> = c
        .series
        .iter()
        .filter(|s| label(s, "__name__").is_some_and(|n| n.starts_with("http_server_duration")))
        .collect();
    assert_eq!(of_point.len(), 5);
    for s in &of_point {
        assert_eq!(label(s, "http_route"), Some("/a"), "{s:?}");
        assert_eq!(s.labels.iter().filter(|l| l.name == "__name__").count(), 1, "{s:?}");
        assert_eq!(s.labels.iter().filter(|l| l.name == "le").count(), 1, "{s:?}");
        assert_eq!(label(s, "job"), Some("shop/checkout"), "{s:?}");
    }
    assert_eq!(of_point.iter().filter(|s| label(s, "le") == Some("evil")).count(), 2, "sum and count keep it");
}

#[test]
fn histogram_with_mismatched_buckets_is_dropped() {
    let h = Metric {
        name: "h".into(),
        data: Some(metric::Data::Histogram(Histogram {
            data_points: vec![HistogramDataPoint {
                bucket_counts: vec![1, 2],
                explicit_bounds: vec![1.0, 2.0],
                ..Default::default()
            }],
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
        })),
        ..Default::default()
    };
    let c = convert(&request(vec![h]));
    assert!(by_name(&c, "h_bucket").is_empty());
    assert!(c.dropped.contains(&("invalid_histogram", 1)));
}

#[test]
fn summary_becomes_quantiles_sum_and_count() {
    let s = Metric {
        name: "rpc.latency".into(),
        unit: "ms".into(),
        data: Some(metric::Data::Summary(Summary {
            data_points: vec![SummaryDataPoint {
                time_unix_nano: T,
                count: 10,
                sum: 100.0,
                quantile_values: vec![summary_data_point::ValueAtQuantile { quantile: 0.99, value: 30.0 }],
                ..Default::default()
            }],
        })),
        ..Default::default()
    };
    let c = convert(&request(vec![s]));
    let q = by_name(&c, "rpc_latency_milliseconds");
    assert_eq!(label(q[0], "quantile"), Some("0.99"));
    assert_eq!(q[0].samples[0].value, 30.0);
    assert_eq!(by_name(&c, "rpc_latency_milliseconds_count")[0].samples[0].value, 10.0);
}

#[test]
fn colliding_attributes_are_joined_and_do_not_override_job() {
    let c = convert(&request(vec![Metric {
        name: "g".into(),
        data: Some(metric::Data::Gauge(Gauge {
            data_points: vec![point(1.0, vec![kv("a.b", "1"), kv("a_b", "2"), kv("job", "evil")])],
        })),
        ..Default::default()
    }]));
    let s = by_name(&c, "g")[0];
    assert_eq!(label(s, "a_b"), Some("1;2"));
    assert_eq!(label(s, "job"), Some("shop/checkout"));
    assert_eq!(s.labels.iter().filter(|l| l.name == "job").count(), 1);
}
