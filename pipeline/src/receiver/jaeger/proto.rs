//! `jaeger.api_v2` messages of `model.proto` and `collector.proto`, as prost derives written by
//! hand (the field numbers and types are the IDL's; no protoc at build time), and their
//! conversion to [`super::model`].

use super::model::{self, Batch, Log, Process, RefType, Span, SpanRef, Tag, TagValue};

#[derive(Clone, PartialEq, prost::Message)]
pub struct PostSpansRequest {
    #[prost(message, optional, tag = "1")]
    pub batch: Option<ProtoBatch>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PostSpansResponse {}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ProtoBatch {
    #[prost(message, repeated, tag = "1")]
    pub spans: Vec<ProtoSpan>,
    #[prost(message, optional, tag = "2")]
    pub process: Option<ProtoProcess>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ProtoProcess {
    #[prost(string, tag = "1")]
    pub service_name: String,
    #[prost(message, repeated, tag = "2")]
    pub tags: Vec<KeyValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ProtoSpan {
    #[prost(bytes = "vec", tag = "1")]
    pub trace_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub span_id: Vec<u8>,
    #[prost(string, tag = "3")]
    pub operation_name: String,
    #[prost(message, repeated, tag = "4")]
    pub references: Vec<ProtoSpanRef>,
    #[prost(uint32, tag = "5")]
    pub flags: u32,
    #[prost(message, optional, tag = "6")]
    pub start_time: Option<Timestamp>,
    #[prost(message, optional, tag = "7")]
    pub duration: Option<Duration>,
    #[prost(message, repeated, tag = "8")]
    pub tags: Vec<KeyValue>,
    #[prost(message, repeated, tag = "9")]
    pub logs: Vec<ProtoLog>,
    #[prost(message, optional, tag = "10")]
    pub process: Option<ProtoProcess>,
    #[prost(string, tag = "11")]
    pub process_id: String,
    #[prost(string, repeated, tag = "12")]
    pub warnings: Vec<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ProtoSpanRef {
    #[prost(bytes = "vec", tag = "1")]
    pub trace_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub span_id: Vec<u8>,
    /// 0 CHILD_OF, 1 FOLLOWS_FROM.
    #[prost(int32, tag = "3")]
    pub ref_type: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ProtoLog {
    #[prost(message, optional, tag = "1")]
    pub timestamp: Option<Timestamp>,
    #[prost(message, repeated, tag = "2")]
    pub fields: Vec<KeyValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValue {
    #[prost(string, tag = "1")]
    pub key: String,
    /// 0 STRING, 1 BOOL, 2 INT64, 3 FLOAT64, 4 BINARY.
    #[prost(int32, tag = "2")]
    pub v_type: i32,
    #[prost(string, tag = "3")]
    pub v_str: String,
    #[prost(bool, tag = "4")]
    pub v_bool: bool,
    #[prost(int64, tag = "5")]
    pub v_int64: i64,
    #[prost(double, tag = "6")]
    pub v_float64: f64,
    #[prost(bytes = "vec", tag = "7")]
    pub v_binary: Vec<u8>,
}

/// `google.protobuf.Timestamp`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Timestamp {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

/// `google.protobuf.Duration`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Duration {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

/// Why a protobuf batch is refused.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

/// The protobuf batch in the common model. Ids must be 16 (trace) and 8 (span) bytes.
pub fn to_model(batch: ProtoBatch) -> Result<Batch, Invalid> {
    let process = batch.process.map(process).unwrap_or_default();
    let spans = batch.spans.into_iter().map(span).collect::<Result<Vec<_>, _>>()?;
    Ok(Batch { process, spans })
}

fn process(p: ProtoProcess) -> Process {
    Process { service_name: p.service_name, tags: p.tags.into_iter().map(tag).collect() }
}

fn span(s: ProtoSpan) -> Result<Span, Invalid> {
    let trace_id = trace_id(&s.trace_id)?;
    let span_id = span_id(&s.span_id)?;
    let references = s
        .references
        .into_iter()
        .map(|r| {
            Ok(SpanRef {
                ref_type: if r.ref_type == 0 { RefType::ChildOf } else { RefType::FollowsFrom },
                trace_id: self::trace_id(&r.trace_id)?,
                span_id: self::span_id(&r.span_id)?,
            })
        })
        .collect::<Result<Vec<_>, Invalid>>()?;
    Ok(Span {
        trace_id,
        span_id,
        parent_span_id: [0; 8],
        operation_name: s.operation_name,
        references,
        flags: s.flags,
        start_unix_nano: s.start_time.map(|t| nanos(t.seconds, t.nanos)).unwrap_or(0),
        duration_nano: s.duration.map(|d| nanos(d.seconds, d.nanos)).unwrap_or(0),
        tags: s.tags.into_iter().map(tag).collect(),
        logs: s
            .logs
            .into_iter()
            .map(|l| Log {
                time_unix_nano: l.timestamp.map(|t| nanos(t.seconds, t.nanos)).unwrap_or(0),
                fields: l.fields.into_iter().map(tag).collect(),
            })
            .collect(),
        process: s.process.map(process),
    })
}

fn nanos(seconds: i64, nanos: i32) -> u64 {
    u64::try_from(seconds).unwrap_or(0).saturating_mul(1_000_000_000).saturating_add(u64::try_from(nanos).unwrap_or(0))
}

fn tag(kv: KeyValue) -> Tag {
    let value = match kv.v_type {
        1 => TagValue::Bool(kv.v_bool),
        2 => TagValue::Long(kv.v_int64),
        3 => TagValue::Double(kv.v_float64),
        4 => TagValue::Binary(kv.v_binary),
        _ => TagValue::Str(kv.v_str),
    };
    Tag { key: kv.key, value }
}

fn trace_id(b: &[u8]) -> Result<[u8; 16], Invalid> {
    match b.len() {
        16 => Ok(b.try_into().unwrap_or([0; 16])),
        // 64-bit trace ids: the high half is zero.
        8 => Ok(model::trace_id(0, i64::from_be_bytes(b.try_into().unwrap_or([0; 8])))),
        n => Err(Invalid(format!("trace id of {n} bytes (16 expected)"))),
    }
}

fn span_id(b: &[u8]) -> Result<[u8; 8], Invalid> {
    b.try_into().map_err(|_| Invalid(format!("span id of {} bytes (8 expected)", b.len())))
}
