use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue, KeyValueList};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;

use super::*;

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(v.into())) }),
        ..Default::default()
    }
}

fn string(s: &str) -> Option<AnyValue> {
    Some(AnyValue { value: Some(any_value::Value::StringValue(s.into())) })
}

fn request(resource: Vec<KeyValue>, records: Vec<LogRecord>) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource { attributes: resource, ..Default::default() }),
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope { name: "app.logger".into(), ..Default::default() }),
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn meta<'a>(e: &'a crate::proto::EntryAdapter, name: &str) -> Option<&'a str> {
    e.structured_metadata.iter().find(|p| p.name == name).map(|p| p.value.as_str())
}

#[test]
fn kubernetes_resource_attributes_become_the_few_stream_labels() {
    let req = request(
        vec![
            kv("service.name", "checkout"),
            kv("k8s.namespace.name", "shop"),
            kv("k8s.pod.name", "checkout-7d9"),
            kv("k8s.container.name", "app"),
            kv("host.name", "node-1"),
        ],
        vec![LogRecord {
            time_unix_nano: 2_000,
            severity_text: "ERROR".into(),
            severity_number: 17,
            body: string("payment failed"),
            attributes: vec![kv("http.method", "POST")],
            trace_id: vec![0xab; 16],
            span_id: vec![0x01; 8],
            ..Default::default()
        }],
    );
    let c = convert(&req, "remote04");
    assert_eq!(c.entries, 1);
    assert_eq!(c.streams.len(), 1);
    let s = &c.streams[0];
    assert_eq!(
        s.labels,
        r#"{cluster="remote04", container="app", namespace="shop", pod="checkout-7d9", service_name="checkout"}"#
    );
    let e = &s.entries[0];
    assert_eq!(e.line, "payment failed");
    assert_eq!(e.timestamp.map(|t| t.unix_nanos()), Some(2_000));
    assert_eq!(meta(e, "severity_text"), Some("ERROR"));
    assert_eq!(meta(e, "severity_number"), Some("17"));
    assert_eq!(meta(e, "http_method"), Some("POST"));
    assert_eq!(meta(e, "host_name"), Some("node-1"));
    assert_eq!(meta(e, "trace_id"), Some("abababababababababababababababab"));
    assert_eq!(meta(e, "span_id"), Some("0101010101010101"));
    assert_eq!(meta(e, "scope_name"), Some("app.logger"));
}

#[test]
fn missing_service_name_is_unknown_service_and_entries_are_time_ordered() {
    let records = vec![
        LogRecord { time_unix_nano: 30, body: string("third"), ..Default::default() },
        LogRecord { observed_time_unix_nano: 10, body: string("first"), ..Default::default() },
        LogRecord { time_unix_nano: 20, body: string("second"), ..Default::default() },
    ];
    let c = convert(&request(vec![], records), "c");
    assert_eq!(c.streams[0].labels, r#"{cluster="c", service_name="unknown_service"}"#);
    let lines: Vec<&str> = c.streams[0].entries.iter().map(|e| e.line.as_str()).collect();
    assert_eq!(lines, ["first", "second", "third"]);
}

#[test]
fn structured_bodies_are_rendered_as_json() {
    let body = AnyValue { value: Some(any_value::Value::KvlistValue(KeyValueList { values: vec![kv("msg", "hi")] })) };
    let c =
        convert(&request(vec![], vec![LogRecord { time_unix_nano: 1, body: Some(body), ..Default::default() }]), "c");
    assert_eq!(c.streams[0].entries[0].line, r#"{"msg":"hi"}"#);
}
