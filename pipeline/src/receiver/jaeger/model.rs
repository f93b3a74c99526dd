//! Jaeger's span model, as both wire formats (Thrift `jaeger.thrift`, protobuf `model.proto`)
//! carry it, decoded into one shape so that one translation to OTLP serves every transport.

/// A tag's value (`TagType` in Thrift, `ValueType` in protobuf).
#[derive(Debug, Clone, PartialEq)]
pub enum TagValue {
    Str(String),
    Double(f64),
    Bool(bool),
    Long(i64),
    Binary(Vec<u8>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tag {
    pub key: String,
    pub value: TagValue,
}

impl Tag {
    pub fn new(key: impl Into<String>, value: TagValue) -> Tag {
        Tag { key: key.into(), value }
    }
}

/// A span log: becomes a span event.
#[derive(Debug, Clone, PartialEq)]
pub struct Log {
    pub time_unix_nano: u64,
    pub fields: Vec<Tag>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefType {
    ChildOf,
    FollowsFrom,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SpanRef {
    pub ref_type: RefType,
    /// Big-endian: `traceIdHigh` then `traceIdLow`.
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
}

/// The process (service) that emitted spans: becomes the OTLP resource.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Process {
    pub service_name: String,
    pub tags: Vec<Tag>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Span {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// Thrift's `parentSpanId`; all zero when absent (protobuf carries the parent as a reference).
    pub parent_span_id: [u8; 8],
    pub operation_name: String,
    pub references: Vec<SpanRef>,
    pub flags: u32,
    pub start_unix_nano: u64,
    pub duration_nano: u64,
    pub tags: Vec<Tag>,
    pub logs: Vec<Log>,
    /// A span's own process (protobuf only); the batch's process otherwise.
    pub process: Option<Process>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Batch {
    pub process: Process,
    pub spans: Vec<Span>,
}

/// `traceIdHigh`/`traceIdLow` as the 16 big-endian bytes OTLP uses.
pub fn trace_id(high: i64, low: i64) -> [u8; 16] {
    let mut id = [0; 16];
    id[..8].copy_from_slice(&high.to_be_bytes());
    id[8..].copy_from_slice(&low.to_be_bytes());
    id
}

/// Thrift's signed 64-bit span id as 8 big-endian bytes.
pub fn span_id(id: i64) -> [u8; 8] {
    id.to_be_bytes()
}

/// Thrift carries microseconds; negative values (a broken clock) become 0.
pub fn micros_to_nanos(us: i64) -> u64 {
    u64::try_from(us).unwrap_or(0).saturating_mul(1000)
}
