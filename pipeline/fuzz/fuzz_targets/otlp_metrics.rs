#![no_main]
//! Any byte string as an OTLP metrics export body (protobuf and JSON, as the receivers decode it),
//! then converted to remote-write series as the receiver does. The conversion must not panic and
//! must only produce series with one `__name__`, valid Prometheus label names each at most once,
//! and one sample.

use lgtm_pipeline::receiver::prometheus::convert;
use libfuzzer_sys::fuzz_target;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use prost::Message;

fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn check(req: &ExportMetricsServiceRequest) {
    let converted = convert(req);
    let _ = converted.dropped_message();
    for series in &converted.series {
        assert_eq!(series.samples.len(), 1);
        assert_eq!(series.labels.iter().filter(|l| l.name == "__name__").count(), 1);
        for (i, label) in series.labels.iter().enumerate() {
            assert!(valid_label_name(&label.name), "invalid label name {:?}", label.name);
            assert!(
                series.labels[..i].iter().all(|l| l.name != label.name),
                "label {:?} twice in one series",
                label.name
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = ExportMetricsServiceRequest::decode(data) {
        check(&req);
    }
    if let Ok(req) = serde_json::from_slice::<ExportMetricsServiceRequest>(data) {
        check(&req);
    }
});
