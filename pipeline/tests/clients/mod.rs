//! What the Jaeger and Zipkin client tests share: a consumer that keeps what it is given, the
//! Python senders (tests/clients/send_spans.py), and the comparison of what was sent with the
//! OTLP spans that came out.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lgtm_pipeline::receiver::{ConsumeError, TraceConsumer};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::Span;

#[derive(Default)]
pub struct Collect(pub Mutex<Vec<ExportTraceServiceRequest>>);

impl TraceConsumer for Collect {
    fn consume(&self, request: ExportTraceServiceRequest) -> Result<(), ConsumeError> {
        self.0.lock().unwrap().push(request);
        Ok(())
    }
}

impl Collect {
    /// Every span with its resource's `service.name` and the resource's attributes.
    pub fn spans(&self) -> Vec<(Vec<KeyValue>, Span)> {
        let mut out = Vec::new();
        for req in self.0.lock().unwrap().iter() {
            for rs in &req.resource_spans {
                let resource = rs.resource.as_ref().map(|r| r.attributes.clone()).unwrap_or_default();
                for ss in &rs.scope_spans {
                    for s in &ss.spans {
                        out.push((resource.clone(), s.clone()));
                    }
                }
            }
        }
        out
    }

    pub async fn wait_for(self: &Arc<Self>, n: usize) -> Vec<(Vec<KeyValue>, Span)> {
        for _ in 0..100 {
            let spans = self.spans();
            if spans.len() >= n {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("only {} of {n} spans arrived", self.spans().len());
    }
}

/// The Python of the Jaeger exporter's venv (it needs an older SDK than the main environment;
/// scripts/install-test-deps.sh makes it), or `None` (skip) outside CI.
pub fn jaeger_python() -> Option<PathBuf> {
    let python = std::env::var_os("LGTM_JAEGER_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/lgtm-agent-jaeger-venv/bin/python"));
    usable(python, "opentelemetry.exporter.jaeger.thrift")
}

/// The main environment's Python with the Zipkin JSON exporter, or `None` (skip) outside CI.
pub fn zipkin_python() -> Option<PathBuf> {
    usable(PathBuf::from("python3"), "opentelemetry.exporter.zipkin.json")
}

fn usable(python: PathBuf, module: &str) -> Option<PathBuf> {
    let ok =
        Command::new(&python).args(["-c", &format!("import {module}")]).status().map(|s| s.success()).unwrap_or(false);
    if !ok {
        assert!(std::env::var_os("CI").is_none(), "{module} is not installed (scripts/install-test-deps.sh)");
        eprintln!("SKIP: {module} is not installed (scripts/install-test-deps.sh)");
        return None;
    }
    Some(python)
}

/// Runs the sender and returns what it says it sent.
pub fn send(python: &PathBuf, mode: &str, port: u16) -> Vec<serde_json::Value> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/send_spans.py");
    let out = Command::new(python)
        .args([script, mode, "127.0.0.1", &port.to_string()])
        .env("PYTHONWARNINGS", "ignore")
        .output()
        .expect("run send_spans.py");
    assert!(out.status.success(), "send_spans.py failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

pub fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attrs.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.as_ref()).and_then(|v| v.value.as_ref())
}

fn micros(ns: u64) -> u64 {
    ns / 1000 * 1000
}

/// How attribute values come out: typed (Jaeger tags keep their type) or as text (Zipkin tags).
#[derive(Clone, Copy, PartialEq)]
pub enum Typing {
    Typed,
    Text,
}

/// Asserts that every sent span came out with the same ids, parent, name, kind, times (to the
/// microsecond the wire formats carry), status, service name, attributes and events.
pub fn assert_same(sent: &[serde_json::Value], got: &[(Vec<KeyValue>, Span)], typing: Typing) {
    assert_eq!(sent.len(), 3, "the sender sends three spans");
    assert_eq!(got.len(), sent.len(), "spans out: {got:#?}");
    for want in sent {
        let span_id = want["span_id"].as_str().unwrap();
        let (resource, span) = got
            .iter()
            .find(|(_, s)| hex(&s.span_id) == span_id)
            .unwrap_or_else(|| panic!("span {span_id} did not come out"));
        let name = want["name"].as_str().unwrap();
        assert_eq!(hex(&span.trace_id), want["trace_id"].as_str().unwrap(), "{name}: trace id");
        assert_eq!(hex(&span.parent_span_id), want["parent_span_id"].as_str().unwrap(), "{name}: parent");
        assert_eq!(span.name, name);
        let kind = match want["kind"].as_str().unwrap() {
            "SERVER" => 2,
            "CLIENT" => 3,
            "PRODUCER" => 4,
            "CONSUMER" => 5,
            _ => 1,
        };
        // Zipkin has no INTERNAL kind: such spans come out unspecified.
        let kind_ok = span.kind == kind || (typing == Typing::Text && kind == 1 && span.kind == 0);
        assert!(kind_ok, "{name}: kind {} for {}", span.kind, want["kind"]);
        // The wire formats carry microseconds; exporters round or truncate.
        let start = want["start"].as_u64().unwrap();
        assert!(span.start_time_unix_nano.abs_diff(micros(start)) <= 1000, "{name}: start");
        let duration = micros(want["end"].as_u64().unwrap()) - micros(want["start"].as_u64().unwrap());
        let got_duration = span.end_time_unix_nano - span.start_time_unix_nano;
        assert!(got_duration.abs_diff(duration) <= 1000, "{name}: duration {got_duration} vs {duration}");
        let status = span.status.clone().unwrap_or_default();
        match want["status"].as_str().unwrap() {
            "ERROR" => {
                assert_eq!(status.code, 2, "{name}: status");
                assert_eq!(status.message, want["status_description"].as_str().unwrap(), "{name}: status message");
            }
            _ => assert_eq!(status.code, 0, "{name}: status"),
        }
        assert_eq!(attr(resource, "service.name"), Some(&Value::StringValue("tns-app".into())), "{name}: service");
        for (key, value) in want["attributes"].as_object().unwrap() {
            let expected = match (typing, value) {
                (Typing::Text, serde_json::Value::String(s)) => Value::StringValue(s.clone()),
                (Typing::Text, other) => Value::StringValue(other.to_string()),
                (Typing::Typed, serde_json::Value::String(s)) => Value::StringValue(s.clone()),
                (Typing::Typed, serde_json::Value::Bool(b)) => Value::BoolValue(*b),
                (Typing::Typed, serde_json::Value::Number(n)) if n.is_i64() => Value::IntValue(n.as_i64().unwrap()),
                (Typing::Typed, serde_json::Value::Number(n)) => Value::DoubleValue(n.as_f64().unwrap()),
                (_, other) => panic!("unexpected attribute {other}"),
            };
            assert_eq!(attr(&span.attributes, key), Some(&expected), "{name}: attribute {key}");
        }
        for key in ["span.kind", "otel.status_code", "otel.status_description", "error"] {
            assert!(attr(&span.attributes, key).is_none(), "{name}: {key} should have become a field");
        }
        let events = want["events"].as_array().unwrap();
        assert_eq!(span.events.len(), events.len(), "{name}: events");
        for (e, w) in span.events.iter().zip(events) {
            assert_eq!(e.name, w["name"].as_str().unwrap(), "{name}: event name");
            assert!(e.time_unix_nano.abs_diff(micros(w["time"].as_u64().unwrap())) <= 1000, "{name}: event time");
        }
    }
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
