//! OTLP logs to Loki streams.
//!
//! Stream labels, few and of low cardinality: `cluster` (the agent's), `service_name`
//! (`service.name`, else `unknown_service`), and, where the resource has them, `namespace`
//! (`k8s.namespace.name`), `pod` (`k8s.pod.name`) and `container` (`k8s.container.name`). The
//! severity is *not* a label (it would multiply the streams): it is structured metadata, as Loki's
//! own OTLP endpoint does.
//!
//! The line is the body: a string body as is, any other value as JSON. Everything else is
//! structured metadata, with keys made Prometheus-label-safe (`http.method` -> `http_method`):
//! the record's attributes, the resource attributes not used as labels, `severity_text`,
//! `severity_number`, `trace_id` and `span_id` (hex), and `scope_name`. The timestamp is the
//! record's time, else its observed time, else now. Entries of a stream are sent in time order.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};

use super::prometheus::{any_value_string, label_name};
use crate::proto::{loki_labels_string, EntryAdapter, LabelPairAdapter, StreamAdapter, Timestamp};

/// Resource attributes that become stream labels, and the label names they get.
const LABEL_ATTRIBUTES: [(&str, &str); 4] = [
    ("service.name", "service_name"),
    ("k8s.namespace.name", "namespace"),
    ("k8s.pod.name", "pod"),
    ("k8s.container.name", "container"),
];

pub struct Converted {
    pub streams: Vec<StreamAdapter>,
    pub entries: usize,
}

pub fn convert(req: &ExportLogsServiceRequest, cluster: &str) -> Converted {
    let mut streams: BTreeMap<String, Vec<EntryAdapter>> = BTreeMap::new();
    let mut entries = 0;
    for rl in &req.resource_logs {
        let attrs: &[KeyValue] = rl.resource.as_ref().map_or(&[], |r| &r.attributes);
        let mut labels = vec![("cluster".to_string(), cluster.to_string())];
        let mut resource_metadata = Vec::new();
        for kv in attrs {
            match LABEL_ATTRIBUTES.iter().find(|(key, _)| *key == kv.key) {
                Some((_, label)) => labels.push((label.to_string(), any_value_string(kv.value.as_ref()))),
                None => resource_metadata.push(pair(&kv.key, any_value_string(kv.value.as_ref()))),
            }
        }
        if !labels.iter().any(|(k, _)| k == "service_name") {
            labels.push(("service_name".into(), "unknown_service".into()));
        }
        labels.retain(|(_, v)| !v.is_empty());
        let selector = loki_labels_string(&labels);
        let stream = streams.entry(selector).or_default();
        for sl in &rl.scope_logs {
            let scope_name = sl.scope.as_ref().map(|s| s.name.as_str()).filter(|n| !n.is_empty());
            for rec in &sl.log_records {
                let mut metadata = Vec::with_capacity(rec.attributes.len() + resource_metadata.len() + 5);
                for kv in &rec.attributes {
                    metadata.push(pair(&kv.key, any_value_string(kv.value.as_ref())));
                }
                metadata.extend(resource_metadata.iter().cloned());
                if !rec.severity_text.is_empty() {
                    metadata.push(pair("severity_text", rec.severity_text.clone()));
                }
                if rec.severity_number != 0 {
                    metadata.push(pair("severity_number", rec.severity_number.to_string()));
                }
                if !rec.trace_id.is_empty() {
                    metadata.push(pair("trace_id", hex(&rec.trace_id)));
                }
                if !rec.span_id.is_empty() {
                    metadata.push(pair("span_id", hex(&rec.span_id)));
                }
                if let Some(name) = scope_name {
                    metadata.push(pair("scope_name", name.to_string()));
                }
                metadata.retain(|p| !p.value.is_empty());
                let nanos = [rec.time_unix_nano, rec.observed_time_unix_nano].into_iter().find(|t| *t > 0);
                let nanos = nanos.map_or_else(now_nanos, |t| t.min(i64::MAX as u64) as i64);
                stream.push(EntryAdapter {
                    timestamp: Some(Timestamp::from_unix_nanos(nanos)),
                    line: body_line(rec.body.as_ref()),
                    structured_metadata: metadata,
                });
                entries += 1;
            }
        }
    }
    let streams = streams
        .into_iter()
        .filter(|(_, e)| !e.is_empty())
        .map(|(labels, mut entries)| {
            entries.sort_by_key(|e| e.timestamp.map_or(0, |t| t.unix_nanos()));
            StreamAdapter { labels, entries, hash: 0 }
        })
        .collect();
    Converted { streams, entries }
}

fn body_line(body: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match body.and_then(|b| b.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        _ => any_value_string(body),
    }
}

fn pair(key: &str, value: String) -> LabelPairAdapter {
    LabelPairAdapter { name: label_name(key), value }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 0xf) as usize] as char);
    }
    s
}

fn now_nanos() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i64)
}

#[cfg(test)]
#[path = "loki_tests.rs"]
mod tests;
