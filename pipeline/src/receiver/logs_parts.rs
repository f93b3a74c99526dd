//! OTLP logs requests taken in parts, so that one request never holds all its records decoded.
//!
//! A `LogRecord` decoded by prost takes about 200 bytes before its strings; encoded, a record
//! with a one-letter body takes 7. Decoding a whole request of small records, then converting it
//! to Loki streams, took 19 bytes of peak RSS per request byte (a 15 MiB request: 323 MiB, over
//! the chart's memory limit). Here the request is first checked as prost decodes it, one record
//! at a time ([`super::skim`]), so that a request prost would refuse is refused whole, before
//! anything is handed on; then its bytes are walked ([`plan`]) and the records are grouped into
//! parts of about `part_bytes` of the request.
//! Each part is then decoded on its own ([`Part::decode`]): its resources and scopes, and its
//! records only.
//!
//! Accepted and refused as by `ExportLogsServiceRequest::decode`, except for the deprecated
//! protobuf groups (wire types 3 and 4), which are refused.

use std::ops::Range;
use std::sync::Arc;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use prost::Message;

use super::skim::Skim;
use super::wire::{bytes_of, fields};

/// A run of records of one `ScopeLogs`: `records` counts its record fields, from the
/// `first`-th; `spans` are where they are in the request (each a range of consecutive record
/// fields), `scope_header` the scope's other fields (merged, they give the scope without its
/// records), so that decoding a run never walks the rest of its scope.
#[derive(Debug, Clone)]
struct Run {
    resource_logs: Range<usize>,
    scope_logs: Range<usize>,
    scope_header: Arc<[Range<usize>]>,
    first: usize,
    records: usize,
    spans: Vec<Range<usize>>,
}

/// Records of the request grouped into runs, the runs into parts.
#[derive(Debug, Default)]
pub struct Part {
    runs: Vec<Run>,
}

/// Walks `body` (an `ExportLogsServiceRequest`), checks it as prost would decode it, and groups
/// its records into parts of about `part_bytes` of encoded records each. An error says why prost
/// would refuse the body.
pub fn plan(body: &[u8], part_bytes: usize) -> Result<Vec<Part>, String> {
    Skim::LogsRequest.check(body)?;
    let mut parts = vec![Part::default()];
    let mut in_part = 0usize;
    for field in fields(body) {
        let field = field?;
        if field.tag != 1 {
            continue;
        }
        let rl = bytes_of(&field, "resource_logs")?;
        let rl_range = field.at..field.at + rl.len();
        for f in fields(rl) {
            let f = f?;
            if f.tag != 2 {
                continue;
            }
            let sl = bytes_of(&f, "scope_logs")?;
            // Offsets in `body`, as `rl_range`.
            let sl_range = rl_range.start + f.at..rl_range.start + f.at + sl.len();
            let scope_header: Arc<[Range<usize>]> = fields(sl)
                .map_while(Result::ok)
                .filter(|g| g.tag != 2)
                .map(|g| sl_range.start + g.key..sl_range.start + g.end)
                .collect();
            let mut index = 0;
            for g in fields(sl) {
                let g = g?;
                if g.tag != 2 {
                    continue;
                }
                let record = bytes_of(&g, "log_records")?;
                if in_part >= part_bytes {
                    parts.push(Part::default());
                    in_part = 0;
                }
                let part = parts.last_mut().expect("never empty");
                let at = sl_range.start + g.key..sl_range.start + g.end;
                match part.runs.last_mut() {
                    Some(run) if run.scope_logs == sl_range && run.first + run.records == index => {
                        run.records += 1;
                        match run.spans.last_mut() {
                            Some(last) if last.end == at.start => last.end = at.end,
                            _ => run.spans.push(at),
                        }
                    }
                    _ => part.runs.push(Run {
                        resource_logs: rl_range.clone(),
                        scope_logs: sl_range.clone(),
                        scope_header: scope_header.clone(),
                        first: index,
                        records: 1,
                        spans: vec![at],
                    }),
                }
                in_part += record.len();
                index += 1;
            }
        }
    }
    parts.retain(|p| !p.runs.is_empty());
    Ok(parts)
}

impl Part {
    /// The part as a request of its own: each run under its resource and scope. `body` is the
    /// request [`plan`] was given (already checked: errors cannot occur, and would leave a field
    /// out rather than panic).
    pub fn decode(&self, body: &[u8]) -> ExportLogsServiceRequest {
        let mut req = ExportLogsServiceRequest::default();
        for run in &self.runs {
            let rl = &body[run.resource_logs.clone()];
            let mut resource_logs = ResourceLogs::default();
            let mut scope_logs = ScopeLogs::default();
            for f in fields(rl).map_while(Result::ok) {
                match (f.tag, f.bytes) {
                    (1, Some(b)) => {
                        let _ = resource_logs.resource.get_or_insert_with(Default::default).merge(b);
                    }
                    (3, Some(b)) => resource_logs.schema_url = String::from_utf8_lossy(b).into_owned(),
                    _ => {}
                }
            }
            for r in run.scope_header.iter() {
                let _ = scope_logs.merge(&body[r.clone()]);
            }
            for span in &run.spans {
                for f in fields(&body[span.clone()]).map_while(Result::ok) {
                    if let (2, Some(b)) = (f.tag, f.bytes) {
                        scope_logs.log_records.push(LogRecord::decode(b).unwrap_or_default());
                    }
                }
            }
            resource_logs.scope_logs.push(scope_logs);
            req.resource_logs.push(resource_logs);
        }
        req
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
    use opentelemetry_proto::tonic::resource::v1::Resource;

    fn record(body: &str) -> LogRecord {
        LogRecord {
            body: Some(AnyValue { value: Some(any_value::Value::StringValue(body.into())) }),
            ..Default::default()
        }
    }

    fn request() -> ExportLogsServiceRequest {
        let resource = |name: &str| Resource {
            attributes: vec![KeyValue {
                key: "service.name".into(),
                value: Some(AnyValue { value: Some(any_value::Value::StringValue(name.into())) }),
                ..Default::default()
            }],
            ..Default::default()
        };
        let scope = |name: &str| InstrumentationScope { name: name.into(), ..Default::default() };
        ExportLogsServiceRequest {
            resource_logs: vec![
                ResourceLogs {
                    resource: Some(resource("a")),
                    scope_logs: vec![
                        ScopeLogs {
                            scope: Some(scope("s1")),
                            log_records: (0..20).map(|i| record(&format!("a-s1-{i}"))).collect(),
                            schema_url: "u".into(),
                        },
                        ScopeLogs { scope: None, log_records: vec![], schema_url: String::new() },
                        ScopeLogs {
                            scope: Some(scope("s2")),
                            log_records: (0..5).map(|i| record(&format!("a-s2-{i}"))).collect(),
                            schema_url: String::new(),
                        },
                    ],
                    schema_url: "r".into(),
                },
                ResourceLogs {
                    resource: Some(resource("b")),
                    scope_logs: vec![ScopeLogs {
                        scope: None,
                        log_records: (0..7).map(|i| record(&format!("b-{i}"))).collect(),
                        schema_url: String::new(),
                    }],
                    schema_url: String::new(),
                },
            ],
        }
    }

    /// A record with what it is under: resource, scope and their schema URLs.
    type Placed = (Option<Resource>, Option<InstrumentationScope>, String, String, LogRecord);

    /// Every record with what it is under, in order.
    fn flat(req: &ExportLogsServiceRequest) -> Vec<Placed> {
        let mut out = Vec::new();
        for rl in &req.resource_logs {
            for sl in &rl.scope_logs {
                for r in &sl.log_records {
                    out.push((
                        rl.resource.clone(),
                        sl.scope.clone(),
                        rl.schema_url.clone(),
                        sl.schema_url.clone(),
                        r.clone(),
                    ));
                }
            }
        }
        out
    }

    #[test]
    fn parts_hold_every_record_once_in_order_under_its_resource_and_scope() {
        let req = request();
        let body = req.encode_to_vec();
        for part_bytes in [0, 30, 100, usize::MAX] {
            let parts = plan(&body, part_bytes).unwrap();
            let decoded: Vec<ExportLogsServiceRequest> = parts.iter().map(|p| p.decode(&body)).collect();
            let all: Vec<_> = decoded.iter().flat_map(flat).collect();
            assert_eq!(all, flat(&req), "{part_bytes}");
            match part_bytes {
                0 => assert_eq!(parts.len(), 32),
                usize::MAX => assert_eq!(parts.len(), 1),
                _ => assert!(parts.len() > 1 && parts.len() < 32, "{part_bytes}: {}", parts.len()),
            }
        }
        assert!(plan(&[], 100).unwrap().is_empty());
    }

    #[test]
    fn what_prost_refuses_is_refused_before_any_part() {
        let body = request().encode_to_vec();
        for cut in 1..body.len() {
            let prost = ExportLogsServiceRequest::decode(&body[..cut]).is_err();
            assert_eq!(plan(&body[..cut], 100).is_err(), prost, "cut at {cut}");
        }
        // A record whose body is not valid UTF-8.
        let mut bad = request();
        bad.resource_logs[1].scope_logs[0].log_records[6] = record("\u{1F600}");
        let mut body = bad.encode_to_vec();
        let at = body.len() - 2;
        body[at] = 0xff;
        assert!(ExportLogsServiceRequest::decode(&body[..]).is_err());
        assert!(plan(&body, 100).is_err());
    }

    /// prost's recursion limit counts from the request: a record that decodes on its own may be
    /// too deep in its request (the `pipeline:logs_parts` fuzz target found one).
    #[test]
    fn nesting_is_limited_from_the_request() {
        let mut verdicts = Vec::new();
        for depth in 28..36 {
            let mut value = AnyValue { value: Some(any_value::Value::IntValue(1)) };
            for _ in 0..depth {
                let kv = KeyValue { key: "k".into(), value: Some(value), ..Default::default() };
                let list = opentelemetry_proto::tonic::common::v1::KeyValueList { values: vec![kv] };
                value = AnyValue { value: Some(any_value::Value::KvlistValue(list)) };
            }
            let mut req = request();
            req.resource_logs[0].scope_logs[0].log_records[0].body = Some(value);
            let body = req.encode_to_vec();
            let prost = ExportLogsServiceRequest::decode(&body[..]).is_ok();
            assert_eq!(plan(&body, 64).is_ok(), prost, "nested {depth}");
            verdicts.push(prost);
        }
        assert!(verdicts.contains(&true) && verdicts.contains(&false), "{verdicts:?}");
    }

    /// Inputs the `pipeline:logs_parts` fuzz target found accepted here and refused by prost.
    #[test]
    fn fuzz_regressions() {
        for body in [
            // A key over 32 bits (13,864,271,221) whose tag alone would fit.
            &b"\xf5\xff\xd2\x33\x00\x00\x00\xed\xf5\xfa\xff\xd2\x33\x04\x00\x40\x00\x59\x00\xff\xff\xff\xff\x7b\xff\xff"[..],
            // A ten-byte varint with more than the top bit in its last byte.
            &b"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\x02"[..],
        ] {
            assert!(ExportLogsServiceRequest::decode(body).is_err());
            assert!(plan(body, 16).is_err(), "{body:?}");
        }
    }
}
