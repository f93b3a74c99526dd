//! OTLP trace requests kept encoded from the receiver to the exporter.
//!
//! Decoding every span into prost structs and encoding it again, only to add a resource attribute,
//! was a fifth of the agent's CPU on the ingest path. Instead:
//!
//! - [`ValidTraces::parse`] walks an `ExportTraceServiceRequest` in the protobuf wire format,
//!   checking it as prost would decode it (same acceptance: a body prost refuses is refused here,
//!   with where and why), counting spans, allocating nothing;
//! - [`resource_attribute_parts`] adds a resource attribute where the Tempo exporter sends the
//!   request, without copying it: slices of the request with, for each `ResourceSpans` that
//!   lacks the attribute, new length prefixes around its `Resource` and the attribute after it;
//!   spans are never decoded.
//!
//! The spans are not looked at here; [`fields`] reads the fields of one message of a checked
//! request, for the tail sampler, which indexes spans by trace ID without decoding them. Unknown
//! fields are kept as they came (prost would drop them).

pub mod fields;
mod reader;
mod schema;
#[cfg(test)]
mod tests;

use bytes::{BufMut, Bytes};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use prost::Message;

pub use reader::WireType;
use reader::{occurrences, Occurrence, Reader};
use schema::{Field, Msg};

/// The resource attribute naming the agent's `cluster` on every span sent to Tempo.
pub const CLUSTER_ATTRIBUTE: &str = "k8s.cluster.name";

/// prost's recursion limit: a message nested deeper than this is refused.
const RECURSION_LIMIT: u32 = 100;

/// Why a body is not an `ExportTraceServiceRequest`. Offsets are from the start of the message
/// being read (the body, or the nested message named in [`WireError::In`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("truncated at byte {at}")]
    Truncated { at: usize },
    #[error("invalid varint ending at byte {at}")]
    InvalidVarint { at: usize },
    #[error("invalid field key at byte {at}")]
    InvalidKey { at: usize },
    #[error("end-group key that closes no group at byte {at}")]
    UnexpectedEndGroup { at: usize },
    #[error("nested more than {RECURSION_LIMIT} levels deep at byte {at}")]
    TooDeep { at: usize },
    #[error("field {tag} has wire type {found:?}, expected {expected:?}")]
    WireType { tag: u32, expected: WireType, found: WireType },
    #[error("field {tag} is not valid UTF-8")]
    Utf8 { tag: u32 },
    /// Where, outermost first: the message, its field, the offset of that field's key.
    #[error("{message}.{tag} at byte {at}: {source}")]
    In { message: &'static str, tag: u32, at: usize, source: Box<WireError> },
}

/// An `ExportTraceServiceRequest` in the wire format that prost would decode.
#[derive(Debug, Clone)]
pub struct ValidTraces {
    bytes: Bytes,
    spans: usize,
}

impl ValidTraces {
    /// Checks `bytes` as prost's decoding of `ExportTraceServiceRequest` would, and counts its
    /// spans.
    pub fn parse(bytes: Bytes) -> Result<ValidTraces, WireError> {
        let mut spans = 0;
        walk(Msg::Request, &bytes, RECURSION_LIMIT, &mut spans)?;
        Ok(ValidTraces { bytes, spans })
    }

    /// A request built from parts of checked requests (or of prost encodings) with the framing
    /// of [`fields`] (the tail sampler's kept spans): not walked again (debug builds check it).
    pub fn assembled(bytes: Bytes, spans: usize) -> ValidTraces {
        debug_assert_eq!(ValidTraces::parse(bytes.clone()).map(|v| v.spans), Ok(spans));
        ValidTraces { bytes, spans }
    }

    /// Spans in the request (each `ScopeSpans.spans` entry).
    pub fn spans(&self) -> usize {
        self.spans
    }

    pub fn as_bytes(&self) -> &Bytes {
        &self.bytes
    }

    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }

    /// The request with `attribute` added to the resource of every `ResourceSpans` that does
    /// not have an attribute of that key already (the client's value wins), in one buffer: see
    /// [`resource_attribute_parts`]. When every resource has the key already, that is the request
    /// itself, not copied.
    pub fn with_resource_attribute(&self, attribute: &EncodedAttribute) -> Bytes {
        let mut parts = Vec::new();
        resource_attribute_parts(&self.bytes, attribute, &mut parts);
        match &parts[..] {
            [one] => one.clone(),
            _ => Bytes::from(parts.concat()),
        }
    }
}

/// Appends to `out` the parts of `request` (an `ExportTraceServiceRequest` that reads: checked
/// by [`ValidTraces::parse`], or queued by the agent) with `attribute` added to the resource of
/// every `ResourceSpans` that does not have an attribute of that key already (the client's value
/// wins; a `ResourceSpans` without a resource gets one). The parts one after the other are the
/// new request: slices of `request` (nothing copied) and, around each resource that gets the
/// attribute, its two new length prefixes and the attribute. Decoded, that equals the decoded
/// request with the attribute pushed last onto each such resource's attributes. When every
/// resource has the key, the one part is `request` itself. Returns the length of the parts.
///
/// Adding the attribute where the request is sent, rather than copying every request as it is
/// received, was 15% of the agent's CPU on the ingest path.
pub fn resource_attribute_parts(request: &Bytes, attribute: &EncodedAttribute, out: &mut Vec<Bytes>) -> usize {
    // What goes out, in order: ranges of `request`, ranges of `headers` (the new length prefixes,
    // made into one buffer at the end), the attribute.
    enum Part {
        Request(std::ops::Range<usize>),
        Header(std::ops::Range<usize>),
        Attribute,
    }
    let src = &request[..];
    let key = attribute.key.as_bytes();
    let mut plan: Vec<Part> = Vec::new();
    let mut headers: Vec<u8> = Vec::new();
    // Start of the bytes of `request` not yet in `plan`.
    let mut copied_to = 0;
    let mut r = Reader::new(src);
    // Reads that fail (not expected of a request that reads) stop the walk: the rest goes out as
    // it is.
    while !r.is_empty() {
        let field_start = r.pos();
        let Ok((tag, wire_type)) = r.key() else { break };
        if (tag, wire_type) != (1, WireType::LengthDelimited) {
            if r.skip(wire_type, tag, RECURSION_LIMIT).is_err() {
                break;
            }
            continue;
        }
        let Ok(body) = r.length_delimited() else { break };
        let (last_resource, has_key) = find_resource(body, key);
        if has_key {
            continue;
        }
        // `body` starts at `body_at` in `request`.
        let body_at = r.pos() - body.len();
        plan.push(Part::Request(copied_to..field_start));
        let added = attribute.field.len();
        let header_at = headers.len();
        match last_resource {
            Some(Occurrence { start, end, body: resource }) => {
                let new_resource = resource.len() + added;
                put_field(&mut headers, 1, body.len() - (end - start) + field_len(new_resource));
                if start > 0 {
                    plan.push(Part::Header(header_at..headers.len()));
                    plan.push(Part::Request(body_at..body_at + start));
                }
                let resource_header_at = if start > 0 { headers.len() } else { header_at };
                put_field(&mut headers, 1, new_resource);
                plan.push(Part::Header(resource_header_at..headers.len()));
                let resource_at = body_at + end - resource.len();
                plan.push(Part::Request(resource_at..resource_at + resource.len()));
                plan.push(Part::Attribute);
                copied_to = body_at + end;
            }
            None => {
                put_field(&mut headers, 1, field_len(added) + body.len());
                put_field(&mut headers, 1, added);
                plan.push(Part::Header(header_at..headers.len()));
                plan.push(Part::Attribute);
                copied_to = body_at;
            }
        }
    }
    if plan.is_empty() {
        out.push(request.clone());
        return request.len();
    }
    plan.push(Part::Request(copied_to..src.len()));
    let headers = Bytes::from(headers);
    let mut len = 0;
    for part in plan {
        let part = match part {
            Part::Request(range) if range.is_empty() => continue,
            Part::Request(range) => request.slice(range),
            Part::Header(range) => headers.slice(range),
            Part::Attribute => attribute.field.clone(),
        };
        len += part.len();
        out.push(part);
    }
    len
}

/// How many bytes [`resource_attribute_parts`] adds to `request`, without building the parts.
pub fn resource_attribute_growth(request: &[u8], attribute: &EncodedAttribute) -> usize {
    let added = attribute.field.len();
    occurrences(request, 1)
        .map_while(Result::ok)
        .map(|rs| match find_resource(rs.body, attribute.key.as_bytes()) {
            (_, true) => 0,
            (Some(resource), false) => {
                let old_resource = resource.end - resource.start;
                let new_body = rs.body.len() - old_resource + field_len(resource.body.len() + added);
                field_len(new_body) - field_len(rs.body.len())
            }
            (None, false) => {
                let new_body = rs.body.len() + field_len(added);
                field_len(new_body) - field_len(rs.body.len())
            }
        })
        .sum()
}

/// Checks only the outer framing of an `ExportTraceServiceRequest`: every top-level field reads
/// and `resource_spans` (field 1) are length-delimited; returns how many there are. For records
/// the agent queued itself (checked by [`ValidTraces::parse`] or encoded by prost), read back from
/// disk behind a checksum: enough to know that several of them one after the other are one
/// readable request, at the cost of a few bytes read per `ResourceSpans`.
pub fn check_framing(bytes: &[u8]) -> Result<usize, WireError> {
    let mut resource_spans = 0;
    let mut r = Reader::new(bytes);
    while !r.is_empty() {
        let at = r.pos();
        let in_field = |tag, e: WireError| WireError::In { message: Msg::Request.name(), tag, at, source: Box::new(e) };
        match r.key()? {
            (1, WireType::LengthDelimited) => {
                r.length_delimited().map_err(|e| in_field(1, e))?;
                resource_spans += 1;
            }
            (1, found) => {
                let expected = WireType::LengthDelimited;
                return Err(in_field(1, WireError::WireType { tag: 1, expected, found }));
            }
            (tag, wire_type) => r.skip(wire_type, tag, RECURSION_LIMIT).map_err(|e| in_field(tag, e))?,
        }
    }
    Ok(resource_spans)
}

/// The byte range of each `resource_spans` field (key and length included) of a request whose
/// framing reads ([`check_framing`]): each range on its own is a request holding that one
/// `ResourceSpans`. Other top-level fields are left out.
pub fn resource_spans_ranges(bytes: &[u8]) -> Result<Vec<std::ops::Range<usize>>, WireError> {
    reader::occurrences(bytes, 1).map(|o| o.map(|o| o.start..o.end)).collect()
}

/// A string attribute.
pub fn string_attribute(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.to_string())) }),
        ..Default::default()
    }
}

/// What [`ValidTraces::with_resource_attribute`] does, on a decoded request: the string attribute
/// `key` pushed last onto every resource that has no attribute of that key (a `ResourceSpans`
/// without a resource gets one).
pub fn add_resource_attribute(req: &mut ExportTraceServiceRequest, key: &str, value: &str) {
    for rs in &mut req.resource_spans {
        let resource = rs.resource.get_or_insert_with(Default::default);
        if !resource.attributes.iter().any(|kv| kv.key == key) {
            resource.attributes.push(string_attribute(key, value));
        }
    }
}

/// A resource attribute as a `Resource.attributes` field (key and length prefix included),
/// encoded once and copied into every resource that lacks it.
#[derive(Debug, Clone)]
pub struct EncodedAttribute {
    key: String,
    field: Bytes,
}

impl EncodedAttribute {
    pub fn string(key: &str, value: &str) -> EncodedAttribute {
        let kv = string_attribute(key, value);
        let mut field = Vec::new();
        put_field(&mut field, 1, kv.encoded_len());
        kv.encode(&mut field).expect("a Vec grows as needed");
        EncodedAttribute { key: key.to_string(), field: Bytes::from(field) }
    }

    pub fn key(&self) -> &str {
        &self.key
    }
}

/// Writes the key and length of length-delimited field `tag` (< 16, so one byte of key).
fn put_field(out: &mut impl BufMut, tag: u8, len: usize) {
    debug_assert!(tag < 16);
    out.put_u8(tag << 3 | 2);
    prost::encode_length_delimiter(len, out).expect("a Vec grows as needed");
}

fn field_len(len: usize) -> usize {
    1 + prost::length_delimiter_len(len) + len
}

/// Checks one message (`bytes` is its body) and what it holds. `depth_left` is prost's recursion
/// budget for the fields of this message.
fn walk(msg: Msg, bytes: &[u8], depth_left: u32, spans: &mut usize) -> Result<(), WireError> {
    let mut r = Reader::new(bytes);
    while !r.is_empty() {
        let at = r.pos();
        let (tag, wire_type) = r.key()?;
        let in_field = |e: WireError| WireError::In { message: msg.name(), tag, at, source: Box::new(e) };
        let field = schema::field(msg, tag);
        match field.wire_type() {
            None => r.skip(wire_type, tag, depth_left).map_err(in_field)?,
            Some(expected) if expected != wire_type => {
                return Err(in_field(WireError::WireType { tag, expected, found: wire_type }))
            }
            Some(_) => match field {
                Field::Message(nested) => {
                    if depth_left == 0 {
                        return Err(in_field(WireError::TooDeep { at }));
                    }
                    let body = r.length_delimited().map_err(in_field)?;
                    if nested == Msg::Span {
                        *spans += 1;
                    }
                    walk(nested, body, depth_left - 1, spans).map_err(in_field)?;
                }
                Field::Str => {
                    let body = r.length_delimited().map_err(in_field)?;
                    // Most strings are ASCII, which `is_ascii` checks a word at a time.
                    if !body.is_ascii() && std::str::from_utf8(body).is_err() {
                        return Err(in_field(WireError::Utf8 { tag }));
                    }
                }
                Field::Bytes => drop(r.length_delimited().map_err(in_field)?),
                Field::Varint => drop(r.varint().map_err(in_field)?),
                Field::Fixed32 => drop(r.take(4).map_err(in_field)?),
                Field::Fixed64 => drop(r.take(8).map_err(in_field)?),
                Field::Unknown => unreachable!("unknown fields have no wire type"),
            },
        }
    }
    Ok(())
}

/// In a `ResourceSpans` body: the last occurrence of its field 1 (`resource`), and whether any
/// occurrence has an attribute `key`. Field 1 may come more than once; prost merges the
/// occurrences (attributes concatenated), so the key is looked for in all of them, and an
/// attribute appended to the last one ends up last in the merged list.
fn find_resource<'a>(body: &'a [u8], key: &[u8]) -> (Option<Occurrence<'a>>, bool) {
    let mut last_resource = None;
    let mut has_key = false;
    for resource in occurrences(body, 1).map_while(Result::ok) {
        has_key = has_key || resource_has_key(resource.body, key);
        last_resource = Some(resource);
    }
    (last_resource, has_key)
}

/// Whether a `Resource` body has an attribute whose key is `key` (a `KeyValue` whose key field
/// comes twice has the last one, as prost decodes it).
fn resource_has_key(resource: &[u8], key: &[u8]) -> bool {
    occurrences(resource, 1).map_while(Result::ok).any(|kv| key_of(kv.body) == Some(key))
}

fn key_of(kv: &[u8]) -> Option<&[u8]> {
    let mut key: &[u8] = &[];
    for field in occurrences(kv, 1) {
        key = field.ok()?.body;
    }
    // No key field decodes as the empty key.
    Some(key)
}
