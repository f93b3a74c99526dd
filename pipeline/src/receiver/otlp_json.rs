//! OTLP/JSON trace, logs and metrics requests read straight into their protobuf form, one item
//! (span, log record, metric) at a time.
//!
//! Decoding a whole `ExportTraceServiceRequest` with serde first builds every span as a prost
//! struct (about 300 bytes each before its ids and strings), which for small spans is over 5 times
//! the JSON: one 15 MiB request of tiny spans peaked at 4.7 bytes of RSS per request byte. Here
//! the three outer levels (request, `ResourceSpans`, `ScopeSpans`) are walked by hand and each span
//! is decoded with `opentelemetry-proto`'s serde (so the OTLP/JSON rules, hex ids and integer
//! strings, are exactly those of the decoded path) and encoded at once; the result is what
//! [`super::intake::Intake::traces_encoded`] takes from a protobuf client.
//!
//! The same JSON is accepted as by `serde_json::from_slice::<ExportTraceServiceRequest>`: unknown
//! fields are ignored, `null` stands for an absent message, field names are lowerCamelCase. Two
//! differences, neither OTLP/JSON: a message written as a JSON array (serde's sequence form of a
//! struct) is refused, and a key given twice adds to (repeated fields) or merges with (singular
//! ones, as protobuf does) what came before, where serde's derive refuses the request.

use std::fmt;

use opentelemetry_proto::tonic::common::v1::{InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::metrics::v1::{
    ExponentialHistogramDataPoint, HistogramDataPoint, Metric, NumberDataPoint, SummaryDataPoint,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde::de::{DeserializeOwned, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// The protobuf encoding of the OTLP/JSON `ExportTraceServiceRequest` in `json`.
pub fn traces_to_protobuf(json: &[u8]) -> Result<Vec<u8>, serde_json::Error> {
    to_protobuf::<Span>(json, &TRACES)
}

/// The protobuf encoding of the OTLP/JSON `ExportLogsServiceRequest` in `json`, record by record.
pub fn logs_to_protobuf(json: &[u8]) -> Result<Vec<u8>, serde_json::Error> {
    to_protobuf::<LogRecord>(json, &LOGS)
}

/// The protobuf encoding of the OTLP/JSON `ExportMetricsServiceRequest` in `json`, data point by
/// data point (the metric and its data walked by hand too: one metric may hold most of a
/// request): serde's whole request of small data points took about 10 bytes of peak RSS per JSON
/// byte, the protobuf form a fraction of the JSON. A metric's data that serde would take as
/// absent because it cannot be read (serde's flattened oneof swallows the error) is refused.
pub fn metrics_to_protobuf(json: &[u8]) -> Result<Vec<u8>, serde_json::Error> {
    to_protobuf::<Metric>(json, &METRICS)
}

/// The JSON names of one signal's three levels and items (the protobuf tags are the same).
struct Names {
    resource_level: &'static str,
    scope_level: &'static str,
    items: &'static str,
}

const TRACES: Names = Names { resource_level: "resourceSpans", scope_level: "scopeSpans", items: "spans" };
const LOGS: Names = Names { resource_level: "resourceLogs", scope_level: "scopeLogs", items: "logRecords" };
const METRICS: Names = Names { resource_level: "resourceMetrics", scope_level: "scopeMetrics", items: "metrics" };

fn to_protobuf<T: Message + DeserializeOwned>(
    json: &[u8],
    names: &'static Names,
) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = Vec::new();
    let mut de = serde_json::Deserializer::from_slice(json);
    Level::<T> { kind: Kind::Request, names, out: &mut out, item: std::marker::PhantomData }.deserialize(&mut de)?;
    de.end()?;
    Ok(out)
}

/// The message being read at one of the levels walked by hand.
#[derive(Clone, Copy)]
enum Kind {
    Request,
    ResourceSpans,
    ScopeSpans,
    /// Metrics only: a `Metric`, and its data (the field's tag: gauge 5, sum 7, histogram 9,
    /// exponential histogram 10, summary 11), whose points are read one at a time.
    Metric,
    Data(u8),
}

/// The JSON names of a metric's data fields (the oneof `data`) and their tags.
const DATA_FIELDS: [(&str, u8); 5] =
    [("gauge", 5), ("sum", 7), ("histogram", 9), ("exponentialHistogram", 10), ("summary", 11)];

/// A key of a length-delimited field `tag` (every tag here is below 16: one byte).
fn key(tag: u8) -> u8 {
    (tag << 3) | 2
}

/// Appends field `tag` holding the encoded message `body`.
fn put_field(tag: u8, body: &[u8], out: &mut Vec<u8>) {
    out.push(key(tag));
    // A Vec grows as needed: encoding into it cannot fail.
    let _ = prost::encode_length_delimiter(body.len(), out);
    out.extend_from_slice(body);
}

/// Appends field `tag` holding `message`.
fn put_message<M: Message>(tag: u8, message: &M, out: &mut Vec<u8>) {
    out.push(key(tag));
    out.reserve(message.encoded_len() + 10);
    let _ = message.encode_length_delimited(out);
}

/// One JSON object of kind `kind`, encoded and appended to `out`; `T` is the signal's item.
struct Level<'a, T> {
    kind: Kind,
    names: &'static Names,
    out: &'a mut Vec<u8>,
    item: std::marker::PhantomData<fn() -> T>,
}

impl<'de, T: Message + DeserializeOwned> DeserializeSeed<'de> for Level<'_, T> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, T: Message + DeserializeOwned> Visitor<'de> for Level<'_, T> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self.kind {
            Kind::Request => "an Export*ServiceRequest object",
            Kind::ResourceSpans => "a Resource* object",
            Kind::ScopeSpans => "a Scope* object",
            Kind::Metric => "a Metric object",
            Kind::Data(_) => "a metric data object",
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        // The request's fields go straight to `out`; a nested message's to its own buffer, then
        // into `out` behind its length.
        let mut own = Vec::new();
        let body = match self.kind {
            Kind::Request => &mut *self.out,
            _ => &mut own,
        };
        // A metric's data is a oneof flattened into the metric's object: serde takes the first
        // of its fields and ignores the others.
        let mut data_seen = false;
        while let Some(name) = map.next_key::<String>()? {
            let names = self.names;
            match (self.kind, name.as_str()) {
                (Kind::Request, n) if n == names.resource_level => {
                    map.next_value_seed(items::<T>(Some(Kind::ResourceSpans), names, body))?
                }
                (Kind::ResourceSpans, "resource") => {
                    if let Some(resource) = map.next_value::<Option<Resource>>()? {
                        put_message(1, &resource, body);
                    }
                }
                (Kind::ResourceSpans, n) if n == names.scope_level => {
                    map.next_value_seed(items::<T>(Some(Kind::ScopeSpans), names, body))?
                }
                (Kind::ScopeSpans, "scope") => {
                    if let Some(scope) = map.next_value::<Option<InstrumentationScope>>()? {
                        put_message(1, &scope, body);
                    }
                }
                (Kind::ScopeSpans, "metrics") if names.items == "metrics" => {
                    map.next_value_seed(items::<T>(Some(Kind::Metric), names, body))?
                }
                (Kind::ScopeSpans, n) if n == names.items => map.next_value_seed(items::<T>(None, names, body))?,
                (Kind::Metric, "name" | "description" | "unit") => {
                    let text = map.next_value::<String>()?;
                    let tag = match name.as_str() {
                        "name" => 1,
                        "description" => 2,
                        _ => 3,
                    };
                    if !text.is_empty() {
                        put_field(tag, text.as_bytes(), body);
                    }
                }
                (Kind::Metric, "metadata") => {
                    for kv in map.next_value::<Vec<KeyValue>>()? {
                        put_message(12, &kv, body);
                    }
                }
                (Kind::Metric, n) if !data_seen && DATA_FIELDS.iter().any(|(f, _)| *f == n) => {
                    data_seen = true;
                    let tag = DATA_FIELDS.iter().find(|(f, _)| *f == n).map_or(5, |(_, t)| *t);
                    let level =
                        Level::<T> { kind: Kind::Data(tag), names, out: &mut *body, item: std::marker::PhantomData };
                    map.next_value_seed(level)?
                }
                (Kind::Data(tag), "dataPoints") => map.next_value_seed(Points { tag, out: &mut *body })?,
                (Kind::Data(7 | 9 | 10), "aggregationTemporality") => {
                    let temporality = map.next_value::<i32>()?;
                    if temporality != 0 {
                        prost::encoding::int32::encode(2, &temporality, body);
                    }
                }
                (Kind::Data(7), "isMonotonic") => {
                    if map.next_value::<bool>()? {
                        prost::encoding::bool::encode(3, &true, body);
                    }
                }
                (Kind::ResourceSpans | Kind::ScopeSpans, "schemaUrl") => {
                    let url = map.next_value::<String>()?;
                    if !url.is_empty() {
                        put_field(3, url.as_bytes(), body);
                    }
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        match self.kind {
            Kind::Request => {}
            Kind::ResourceSpans => put_field(1, &own, self.out),
            Kind::ScopeSpans | Kind::Metric => put_field(2, &own, self.out),
            Kind::Data(tag) => put_field(tag, &own, self.out),
        }
        Ok(())
    }
}

/// The `dataPoints` array of a metric's data of field `tag`: each point decoded with serde and
/// encoded at once (field 1 of every data message).
struct Points<'a> {
    tag: u8,
    out: &'a mut Vec<u8>,
}

impl<'de> DeserializeSeed<'de> for Points<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Points<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of data points")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        fn each<'de, P: Message + DeserializeOwned, A: SeqAccess<'de>>(
            mut seq: A,
            out: &mut Vec<u8>,
        ) -> Result<(), A::Error> {
            while let Some(point) = seq.next_element::<P>()? {
                put_message(1, &point, out);
            }
            Ok(())
        }
        match self.tag {
            5 | 7 => each::<NumberDataPoint, A>(seq, self.out),
            9 => each::<HistogramDataPoint, A>(seq, self.out),
            10 => each::<ExponentialHistogramDataPoint, A>(seq, self.out),
            _ => each::<SummaryDataPoint, A>(seq, self.out),
        }
    }
}

/// A JSON array of one repeated field: resource or scope levels (walked by hand) or the signal's
/// items (decoded and encoded one at a time).
struct Items<'a, T> {
    kind: Option<Kind>,
    names: &'static Names,
    out: &'a mut Vec<u8>,
    item: std::marker::PhantomData<fn() -> T>,
}

fn items<'a, T>(kind: Option<Kind>, names: &'static Names, out: &'a mut Vec<u8>) -> Items<'a, T> {
    Items { kind, names, out, item: std::marker::PhantomData }
}

impl<'de, T: Message + DeserializeOwned> DeserializeSeed<'de> for Items<'_, T> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, T: Message + DeserializeOwned> Visitor<'de> for Items<'_, T> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        match self.kind {
            Some(kind) => loop {
                let level = Level::<T> { kind, names: self.names, out: &mut *self.out, item: std::marker::PhantomData };
                if seq.next_element_seed(level)?.is_none() {
                    break;
                }
            },
            None => {
                while let Some(item) = seq.next_element::<T>()? {
                    put_message(2, &item, self.out);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::traces_to_protobuf;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use prost::Message;

    /// Decoding the protobuf gives what serde decodes from the JSON.
    fn same_as_serde(json: &str) {
        let expected: ExportTraceServiceRequest = serde_json::from_str(json).unwrap();
        let encoded = traces_to_protobuf(json.as_bytes()).unwrap();
        assert_eq!(ExportTraceServiceRequest::decode(&encoded[..]).unwrap(), expected, "{json}");
    }

    #[test]
    fn the_protobuf_decodes_to_what_serde_reads_from_the_json() {
        same_as_serde(r#"{}"#);
        same_as_serde(r#"{"resourceSpans":[]}"#);
        same_as_serde(r#"{"resourceSpans":[{}]}"#);
        same_as_serde(r#"{"resourceSpans":[{"scopeSpans":[{}]}]}"#);
        same_as_serde(
            r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"checkout"}}],"droppedAttributesCount":2},
                "schemaUrl":"https://opentelemetry.io/schemas/1.21.0","unknownField":{"a":[1,2]},
                "scopeSpans":[
                  {"scope":{"name":"lib","version":"1.0"},"schemaUrl":"s",
                   "spans":[
                     {"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","parentSpanId":"eee19b7ec3c1b173",
                      "name":"GET /","kind":2,"startTimeUnixNano":"1544712660000000000","endTimeUnixNano":1544712661000000000,
                      "attributes":[{"key":"n","value":{"intValue":"42"}}],
                      "events":[{"timeUnixNano":"1544712660500000000","name":"e"}],
                      "status":{"code":2,"message":"boom"}},
                     {"traceId":"5b8efff798038103d269b633813fc60d","spanId":"eee19b7ec3c1b175"}]},
                  {"spans":[{"traceId":"5b8efff798038103d269b633813fc60e","spanId":"eee19b7ec3c1b176","name":"second scope"}]}]},
               {"scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60f","spanId":"eee19b7ec3c1b177"}]}]}]}"#,
        );
        // Messages and strings given as null are absent.
        same_as_serde(r#"{"resourceSpans":[{"resource":null,"scopeSpans":[{"scope":null,"spans":[]}]}]}"#);
    }

    #[test]
    fn logs_decode_to_what_serde_reads_from_the_json() {
        use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
        let json = r#"{"resourceLogs":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"a"}}]},
            "scopeLogs":[{"scope":{"name":"s"},"logRecords":[
              {"timeUnixNano":"1544712660300000000","severityNumber":10,"body":{"stringValue":"one"},
               "attributes":[{"key":"k","value":{"intValue":"3"}}],"traceId":"5b8efff798038103d269b633813fc60c"},
              {"body":{"stringValue":"two"}}]}]}]}"#;
        let expected: ExportLogsServiceRequest = serde_json::from_str(json).unwrap();
        let encoded = super::logs_to_protobuf(json.as_bytes()).unwrap();
        assert_eq!(ExportLogsServiceRequest::decode(&encoded[..]).unwrap(), expected);
        // Trace names are not log names.
        let spans = super::logs_to_protobuf(br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{}]}]}]}"#).unwrap();
        assert!(spans.is_empty());
    }

    #[test]
    fn metrics_decode_to_what_serde_reads_from_the_json() {
        use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
        let json = r#"{"resourceMetrics":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"a"}}]},
            "scopeMetrics":[{"scope":{"name":"s"},"schemaUrl":"u","metrics":[
              {"name":"requests","unit":"1","sum":{"aggregationTemporality":2,"isMonotonic":true,"dataPoints":[
                {"startTimeUnixNano":"1544712660000000000","timeUnixNano":"1544712660300000000","asInt":"7",
                 "attributes":[{"key":"route","value":{"stringValue":"/"}}]}]}},
              {"name":"temperature","gauge":{"dataPoints":[{"timeUnixNano":"1544712660300000000","asDouble":21.5}]}},
              {"name":"latency","histogram":{"aggregationTemporality":2,"dataPoints":[
                {"timeUnixNano":"1544712660300000000","count":"3","sum":0.6,"bucketCounts":["1","2"],"explicitBounds":[0.25]}]}}]}]},
            {"scopeMetrics":[{"metrics":[{"name":"alone","gauge":{"dataPoints":[{"asInt":"1"}]}}]}]}]}"#;
        let expected: ExportMetricsServiceRequest = serde_json::from_str(json).unwrap();
        let encoded = super::metrics_to_protobuf(json.as_bytes()).unwrap();
        assert_eq!(ExportMetricsServiceRequest::decode(&encoded[..]).unwrap(), expected);
        let bad = r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"m","unit":7}]}]}]}"#;
        assert!(serde_json::from_str::<ExportMetricsServiceRequest>(bad).is_err());
        assert!(super::metrics_to_protobuf(bad.as_bytes()).is_err());
    }

    #[test]
    fn what_serde_refuses_is_refused() {
        for json in [
            "",
            r#"{"resourceSpans":{}}"#,
            r#"{"resourceSpans":[{"schemaUrl":null}]}"#,
            r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"not hex","spanId":"eee19b7ec3c1b177"}]}]}]}"#,
            r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"kind":"many"}]}]}]}"#,
            r#"{"resourceSpans":[]} trailing"#,
            r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{}"#,
        ] {
            assert!(serde_json::from_str::<ExportTraceServiceRequest>(json).is_err(), "serde takes {json}");
            assert!(traces_to_protobuf(json.as_bytes()).is_err(), "{json}");
        }
    }
}
