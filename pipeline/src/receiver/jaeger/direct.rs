//! Agent datagrams (`emitBatch` in Thrift compact or binary) straight to the protobuf bytes of an
//! OTLP `ExportTraceServiceRequest`, with no Jaeger model or OTLP structs in between.
//!
//! At 50,000 datagrams per second the UDP path spent about a third of its time building the
//! [`super::model`] structs, converting them to prost's OTLP structs ([`super::translate`]),
//! encoding those, and freeing both: a dozen allocations per span. Here each datagram is read
//! once, every value is written where OTLP wants it, and the scratch buffers live as long as the
//! reader. The consumer takes the bytes as they are ([`crate::trace_wire::ValidTraces`]).
//!
//! The output is, byte for byte, what prost encodes for [`super::translate::to_otlp`] of the
//! decoded datagrams merged into one request (one resource per distinct process, one scope per
//! distinct instrumentation scope in it, spans in the order they came): the equivalence is
//! tested on random batches and fuzzed on random bytes (`fuzz/fuzz_targets/jaeger_thrift.rs`).
//! The same input is refused: a datagram is read by the same [`Protocol`] readers, field by
//! field in the same order, with the same checks, and a refused datagram leaves nothing behind.
//! One difference: resources are merged when their encodings are equal, where the struct path
//! compared them with `==` (a process tag holding NaN made its resource unequal to itself).

use super::model::{micros_to_nanos, span_id, trace_id, RefType, SpanRef};
use super::protocol::{Binary, Compact, DecodeError, Protocol, TType};
use super::thrift::span_ref;
use super::translate::split_references;

/// Message types of a oneway call and of a call (`emitBatch` is oneway).
const ONEWAY: u8 = 4;
const CALL: u8 = 1;

/// Protobuf keys (field number << 3 | wire type) of the fields written.
mod key {
    pub const LEN_1: u8 = (1 << 3) | 2;
    pub const LEN_2: u8 = (2 << 3) | 2;
    pub const LEN_3: u8 = (3 << 3) | 2;
    pub const LEN_4: u8 = (4 << 3) | 2;
    pub const LEN_5: u8 = (5 << 3) | 2;
    pub const LEN_7: u8 = (7 << 3) | 2;
    pub const LEN_9: u8 = (9 << 3) | 2;
    pub const LEN_11: u8 = (11 << 3) | 2;
    pub const LEN_13: u8 = (13 << 3) | 2;
    pub const LEN_15: u8 = (15 << 3) | 2;
    pub const VARINT_2: u8 = 2 << 3;
    pub const VARINT_3: u8 = 3 << 3;
    pub const VARINT_6: u8 = 6 << 3;
    pub const FIXED64_1: u8 = (1 << 3) | 1;
    pub const FIXED64_4: u8 = (4 << 3) | 1;
    pub const FIXED64_7: u8 = (7 << 3) | 1;
    pub const FIXED64_8: u8 = (8 << 3) | 1;
}

/// The wire protocol of a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Thrift {
    Compact,
    Binary,
}

/// One request being built from datagrams: [`RequestBuilder::add`] each, then
/// [`RequestBuilder::finish`]. Reused from request to request (its buffers keep their capacity).
#[derive(Default)]
pub struct RequestBuilder {
    /// Resources of the request, in order of first appearance; `used` of them are live (the
    /// rest keep their buffers for the next request).
    resources: Vec<ResourceGroup>,
    used: usize,
    spans: usize,
    /// The datagram being read: its resource, and its spans by scope, kept apart until it has
    /// been read whole (a malformed datagram leaves nothing in the request).
    scratch: Scratch,
}

#[derive(Default)]
struct ResourceGroup {
    /// The encoded `Resource` message (without key and length).
    resource: Vec<u8>,
    scopes: Vec<ScopeGroup>,
    used: usize,
}

#[derive(Default)]
struct ScopeGroup {
    /// The encoded `InstrumentationScope` message.
    scope: Vec<u8>,
    /// `ScopeSpans.spans` fields, key and length included.
    spans: Vec<u8>,
}

#[derive(Default)]
struct Scratch {
    resource: Vec<u8>,
    /// The process's tags as resource attributes (fields, key and length included).
    process_tags: Vec<u8>,
    /// The datagram's spans: each `(scope range, span range)` in `staged`.
    staged: Vec<u8>,
    staged_spans: Vec<(std::ops::Range<usize>, std::ops::Range<usize>)>,
    /// The span being read: its attributes, events and links (fields, key and length included),
    /// its scope, and the body written from them.
    attributes: Vec<u8>,
    events: Vec<u8>,
    event_attributes: Vec<u8>,
    links: Vec<u8>,
    references: Vec<SpanRef>,
    log_fields: Vec<TagAt>,
    scope: Vec<u8>,
    span: Vec<u8>,
}

impl RequestBuilder {
    pub fn new() -> RequestBuilder {
        RequestBuilder::default()
    }

    /// Spans added since the last [`RequestBuilder::finish`].
    pub fn spans(&self) -> usize {
        self.spans
    }

    /// Reads one `emitBatch` datagram into the request; on error the request is as it was.
    pub fn add(&mut self, datagram: &[u8], protocol: Thrift) -> Result<(), DecodeError> {
        match protocol {
            Thrift::Compact => {
                let mut p = Compact::new(datagram);
                let (name, kind) = p.message_name()?;
                self.emit_batch(&mut p, datagram, &datagram[name], kind)
            }
            Thrift::Binary => {
                let mut p = Binary::new(datagram);
                let (name, kind) = p.message_name()?;
                self.emit_batch(&mut p, datagram, &datagram[name], kind)
            }
        }
    }

    /// The request (the encoded `ExportTraceServiceRequest`) and its span count; the builder
    /// is empty again.
    pub fn finish(&mut self) -> (Vec<u8>, usize) {
        let live = &self.resources[..self.used];
        let mut total = 0;
        for rs in live {
            total += len_field_size(resource_spans_len(rs));
        }
        let mut out = Vec::with_capacity(total);
        for rs in live {
            let scopes = &rs.scopes[..rs.used];
            write_key_len(&mut out, key::LEN_1, resource_spans_len(rs));
            write_bytes_field(&mut out, key::LEN_1, &rs.resource);
            for s in scopes {
                write_key_len(&mut out, key::LEN_2, scope_spans_len(s));
                write_bytes_field(&mut out, key::LEN_1, &s.scope);
                out.extend_from_slice(&s.spans);
            }
        }
        debug_assert_eq!(out.len(), total);
        let spans = self.spans;
        self.clear();
        (out, spans)
    }

    fn clear(&mut self) {
        for rs in &mut self.resources[..self.used] {
            for s in &mut rs.scopes[..rs.used] {
                s.scope.clear();
                s.spans.clear();
            }
            rs.used = 0;
            rs.resource.clear();
        }
        self.used = 0;
        self.spans = 0;
    }

    fn emit_batch<P: Protocol>(&mut self, p: &mut P, d: &[u8], name: &[u8], kind: u8) -> Result<(), DecodeError> {
        if name != b"emitBatch" || (kind != ONEWAY && kind != CALL) {
            return Err(DecodeError::UnexpectedMessage(String::from_utf8_lossy(name).chars().take(64).collect()));
        }
        let s = &mut self.scratch;
        s.staged.clear();
        s.staged_spans.clear();
        let mut batch = false;
        p.struct_begin();
        while let Some((t, id)) = p.field()? {
            match (id, t) {
                (1, TType::Struct) => {
                    // A second batch replaces the first, as the struct decoder's would.
                    s.staged.clear();
                    s.staged_spans.clear();
                    s.batch(p, d)?;
                    batch = true;
                }
                _ => p.skip(t, 0)?,
            }
        }
        p.struct_end();
        if !batch {
            return Err(DecodeError::Missing("emitBatch.batch"));
        }
        self.commit();
        Ok(())
    }

    /// Moves the datagram read into the request, under its resource and scopes.
    fn commit(&mut self) {
        let s = &mut self.scratch;
        if s.staged_spans.is_empty() {
            // A batch without spans is no resource (as in `translate`).
            return;
        }
        let live = &self.resources[..self.used];
        let r = match live.iter().position(|g| g.resource == s.resource) {
            Some(r) => r,
            None => {
                if self.used == self.resources.len() {
                    self.resources.push(ResourceGroup::default());
                }
                let g = &mut self.resources[self.used];
                g.resource.extend_from_slice(&s.resource);
                self.used += 1;
                self.used - 1
            }
        };
        let group = &mut self.resources[r];
        for (scope, span) in &s.staged_spans {
            let scope = &s.staged[scope.clone()];
            let i = match group.scopes[..group.used].iter().position(|g| g.scope == scope) {
                Some(i) => i,
                None => {
                    if group.used == group.scopes.len() {
                        group.scopes.push(ScopeGroup::default());
                    }
                    group.scopes[group.used].scope.extend_from_slice(scope);
                    group.used += 1;
                    group.used - 1
                }
            };
            group.scopes[i].spans.extend_from_slice(&s.staged[span.clone()]);
        }
        self.spans += s.staged_spans.len();
    }
}

fn scope_spans_len(s: &ScopeGroup) -> usize {
    len_field_size(s.scope.len()) + s.spans.len()
}

fn resource_spans_len(rs: &ResourceGroup) -> usize {
    len_field_size(rs.resource.len())
        + rs.scopes[..rs.used].iter().map(|s| len_field_size(scope_spans_len(s))).sum::<usize>()
}

/// A tag's value as read: strings and bytes as ranges of the datagram.
#[derive(Debug, Clone)]
pub(super) enum ValueAt {
    Str(std::ops::Range<usize>),
    Double(f64),
    Bool(bool),
    Long(i64),
    Binary(std::ops::Range<usize>),
}

#[derive(Debug, Clone)]
pub(super) struct TagAt {
    /// Valid UTF-8 (checked as read).
    pub(super) key: std::ops::Range<usize>,
    pub(super) value: ValueAt,
}

/// The range of the bytes `binary()` just returned.
fn just_read<P: Protocol>(p: &P, len: usize) -> std::ops::Range<usize> {
    p.position() - len..p.position()
}

/// A string field: checked as UTF-8 as [`Protocol::string`] does.
fn string_at<P: Protocol>(p: &mut P) -> Result<std::ops::Range<usize>, DecodeError> {
    let at = p.position();
    let raw = p.binary()?;
    if std::str::from_utf8(raw).is_err() {
        return Err(DecodeError::Invalid { what: "UTF-8 string", at });
    }
    let n = raw.len();
    Ok(just_read(p, n))
}

/// A list header whose elements must be structs.
fn struct_list<P: Protocol>(p: &mut P) -> Result<usize, DecodeError> {
    let at = p.position();
    let (t, n) = p.list()?;
    if t != TType::Struct {
        return Err(DecodeError::Invalid { what: "list element type", at });
    }
    Ok(n)
}

/// A Jaeger `Tag` as ranges of the input; `thrift::tag` reads it into owned values.
pub(super) fn tag<P: Protocol>(p: &mut P) -> Result<TagAt, DecodeError> {
    let mut key = 0..0;
    let mut v_type = 0i32;
    let (mut s, mut d, mut b, mut l, mut bin) = (None, None, None, None, None);
    p.struct_begin();
    while let Some((t, fid)) = p.field()? {
        match (fid, t) {
            (1, TType::Binary) => key = string_at(p)?,
            (2, TType::I32) => v_type = p.i32()?,
            (3, TType::Binary) => {
                let n = p.binary()?.len();
                s = Some(just_read(p, n));
            }
            (4, TType::Double) => d = Some(p.double()?),
            (5, TType::Bool) => {
                let in_field = p.field_bool();
                b = Some(p.bool(in_field)?)
            }
            (6, TType::I64) => l = Some(p.i64()?),
            (7, TType::Binary) => {
                let n = p.binary()?.len();
                bin = Some(just_read(p, n));
            }
            _ => p.skip(t, 0)?,
        }
    }
    p.struct_end();
    // TagType: STRING, DOUBLE, BOOL, LONG, BINARY; a value missing for its type reads as empty.
    let value = match v_type {
        1 => ValueAt::Double(d.unwrap_or_default()),
        2 => ValueAt::Bool(b.unwrap_or_default()),
        3 => ValueAt::Long(l.unwrap_or_default()),
        4 => ValueAt::Binary(bin.unwrap_or_default()),
        _ => ValueAt::Str(s.unwrap_or_default()),
    };
    Ok(TagAt { key, value })
}

/// What a span's tags say besides its attributes.
#[derive(Default)]
struct FromTags {
    kind: i32,
    scope_name: Option<std::ops::Range<usize>>,
    scope_name_text: Option<String>,
    scope_version: Option<std::ops::Range<usize>>,
    scope_version_text: Option<String>,
    trace_state: Option<String>,
    /// 0 unset, 1 OK, 2 ERROR, as `otel.status_code` said.
    status_code: Option<i32>,
    status_message: Option<String>,
    error_tag: bool,
}

impl Scratch {
    fn batch<P: Protocol>(&mut self, p: &mut P, d: &[u8]) -> Result<(), DecodeError> {
        let mut process = false;
        p.struct_begin();
        while let Some((t, id)) = p.field()? {
            match (id, t) {
                (1, TType::Struct) => {
                    self.process(p, d)?;
                    process = true;
                }
                (2, TType::List) => {
                    let n = struct_list(p)?;
                    self.staged.clear();
                    self.staged_spans.clear();
                    for _ in 0..n {
                        self.span(p, d)?;
                    }
                }
                _ => p.skip(t, 0)?,
            }
        }
        p.struct_end();
        if !process {
            return Err(DecodeError::Missing("Batch.process"));
        }
        Ok(())
    }

    /// The process as the encoded resource: `service.name` first (when not empty), then every
    /// tag but `service.name`.
    fn process<P: Protocol>(&mut self, p: &mut P, d: &[u8]) -> Result<(), DecodeError> {
        let mut service = 0..0;
        self.process_tags.clear();
        p.struct_begin();
        while let Some((t, id)) = p.field()? {
            match (id, t) {
                (1, TType::Binary) => service = string_at(p)?,
                (2, TType::List) => {
                    let n = struct_list(p)?;
                    self.process_tags.clear();
                    for _ in 0..n {
                        let tag = tag(p)?;
                        if &d[tag.key.clone()] != b"service.name" {
                            write_tag(&mut self.process_tags, key::LEN_1, d, &tag);
                        }
                    }
                }
                _ => p.skip(t, 0)?,
            }
        }
        p.struct_end();
        self.resource.clear();
        if !service.is_empty() {
            write_kv(&mut self.resource, key::LEN_1, b"service.name", Any::Str(&d[service]));
        }
        self.resource.extend_from_slice(&self.process_tags);
        Ok(())
    }

    fn span<P: Protocol>(&mut self, p: &mut P, d: &[u8]) -> Result<(), DecodeError> {
        let (mut low, mut high, mut id, mut seen) = (0i64, 0i64, 0i64, 0u8);
        let (mut start, mut duration) = (0i64, 0i64);
        let mut parent_id = [0u8; 8];
        let mut name = 0..0;
        let mut tags = FromTags::default();
        self.attributes.clear();
        self.events.clear();
        self.references.clear();
        p.struct_begin();
        while let Some((t, fid)) = p.field()? {
            match (fid, t) {
                (1, TType::I64) => (low, seen) = (p.i64()?, seen | 1),
                (2, TType::I64) => high = p.i64()?,
                (3, TType::I64) => (id, seen) = (p.i64()?, seen | 2),
                (4, TType::I64) => parent_id = span_id(p.i64()?),
                (5, TType::Binary) => name = string_at(p)?,
                (6, TType::List) => {
                    let n = struct_list(p)?;
                    self.references.clear();
                    for _ in 0..n {
                        let r = span_ref(p)?;
                        self.references.push(r);
                    }
                }
                // Jaeger's flags (sampled, debug) are not OTLP's span flags: read, not kept, as in
                // `translate`.
                (7, TType::I32) => {
                    p.i32()?;
                }
                (8, TType::I64) => start = p.i64()?,
                (9, TType::I64) => duration = p.i64()?,
                (10, TType::List) => {
                    let n = struct_list(p)?;
                    self.attributes.clear();
                    tags = FromTags::default();
                    for _ in 0..n {
                        let tag = tag(p)?;
                        self.span_tag(d, tag, &mut tags);
                    }
                }
                (11, TType::List) => {
                    let n = struct_list(p)?;
                    self.events.clear();
                    for _ in 0..n {
                        self.log(p, d)?;
                    }
                }
                _ => p.skip(t, 0)?,
            }
        }
        p.struct_end();
        if seen & 1 == 0 {
            return Err(DecodeError::Missing("Span.traceIdLow"));
        }
        if seen & 2 == 0 {
            return Err(DecodeError::Missing("Span.spanId"));
        }
        let trace = trace_id(high, low);
        let start = micros_to_nanos(start);
        let end = start.saturating_add(micros_to_nanos(duration));
        let parent = self.links(&trace, parent_id);

        // The scope: its name and version, read in place when they are strings.
        self.scope.clear();
        match (&tags.scope_name, &tags.scope_name_text) {
            (_, Some(t)) => write_string_field(&mut self.scope, key::LEN_1, t.as_bytes()),
            (Some(r), None) => write_string_field(&mut self.scope, key::LEN_1, lossy(&d[r.clone()]).as_bytes()),
            (None, None) => {}
        }
        match (&tags.scope_version, &tags.scope_version_text) {
            (_, Some(t)) => write_string_field(&mut self.scope, key::LEN_2, t.as_bytes()),
            (Some(r), None) => write_string_field(&mut self.scope, key::LEN_2, lossy(&d[r.clone()]).as_bytes()),
            (None, None) => {}
        }

        // The status: `otel.status_code` when given, else ERROR for a true `error` tag; its
        // message only with ERROR.
        let code = match tags.status_code {
            Some(code) => code,
            None if tags.error_tag => 2,
            None => 0,
        };

        let sp = &mut self.span;
        sp.clear();
        write_bytes_field(sp, key::LEN_1, &trace);
        write_bytes_field(sp, key::LEN_2, &id.to_be_bytes());
        if let Some(state) = &tags.trace_state {
            write_string_field(sp, key::LEN_3, state.as_bytes());
        }
        if let Some(parent) = parent {
            write_bytes_field(sp, key::LEN_4, &parent);
        }
        write_string_field(sp, key::LEN_5, &d[name]);
        if tags.kind != 0 {
            sp.push(key::VARINT_6);
            write_varint(sp, tags.kind as u64);
        }
        if start != 0 {
            sp.push(key::FIXED64_7);
            sp.extend_from_slice(&start.to_le_bytes());
        }
        if end != 0 {
            sp.push(key::FIXED64_8);
            sp.extend_from_slice(&end.to_le_bytes());
        }
        sp.extend_from_slice(&self.attributes);
        sp.extend_from_slice(&self.events);
        sp.extend_from_slice(&self.links);
        if code != 0 {
            let message = if code == 2 { tags.status_message.as_deref().unwrap_or("") } else { "" };
            let len = string_field_size(message.len()) + 1 + varint_size(code as u64);
            write_key_len(sp, key::LEN_15, len);
            write_string_field(sp, key::LEN_2, message.as_bytes());
            sp.push(key::VARINT_3);
            write_varint(sp, code as u64);
        }

        let scope_start = self.staged.len();
        self.staged.extend_from_slice(&self.scope);
        let span_start = self.staged.len();
        write_bytes_field(&mut self.staged, key::LEN_2, &self.span);
        self.staged_spans.push((scope_start..span_start, span_start..self.staged.len()));
        Ok(())
    }

    /// One span tag: an attribute, or what the span's kind, scope, trace state or status is.
    fn span_tag(&mut self, d: &[u8], tag: TagAt, out: &mut FromTags) {
        let text = |v: &ValueAt| -> String { text(d, v) };
        match &d[tag.key.clone()] {
            b"span.kind" => {
                out.kind = match &tag.value {
                    ValueAt::Str(r) => span_kind(&lossy(&d[r.clone()])),
                    other => span_kind(&text(other)),
                }
            }
            b"otel.scope.name" | b"otel.library.name" => match &tag.value {
                ValueAt::Str(r) => (out.scope_name, out.scope_name_text) = (Some(r.clone()), None),
                other => (out.scope_name, out.scope_name_text) = (None, Some(text(other))),
            },
            b"otel.scope.version" | b"otel.library.version" => match &tag.value {
                ValueAt::Str(r) => (out.scope_version, out.scope_version_text) = (Some(r.clone()), None),
                other => (out.scope_version, out.scope_version_text) = (None, Some(text(other))),
            },
            b"w3c.tracestate" => out.trace_state = Some(text(&tag.value)).filter(|s| !s.is_empty()),
            b"otel.status_code" => {
                out.status_code = match text(&tag.value).to_ascii_uppercase().as_str() {
                    "ERROR" | "2" => Some(2),
                    "OK" | "1" => Some(1),
                    _ => Some(0),
                }
            }
            b"otel.status_description" => out.status_message = Some(text(&tag.value)),
            b"error" if is_true(d, &tag.value) => out.error_tag = true,
            _ => write_tag(&mut self.attributes, key::LEN_9, d, &tag),
        }
    }

    /// A span log as an event: named by its `event` field, else its `message` field.
    fn log<P: Protocol>(&mut self, p: &mut P, d: &[u8]) -> Result<(), DecodeError> {
        let mut time = 0u64;
        self.log_fields.clear();
        p.struct_begin();
        while let Some((t, fid)) = p.field()? {
            match (fid, t) {
                (1, TType::I64) => time = micros_to_nanos(p.i64()?),
                (2, TType::List) => {
                    let n = struct_list(p)?;
                    self.log_fields.clear();
                    for _ in 0..n {
                        let tag = tag(p)?;
                        self.log_fields.push(tag);
                    }
                }
                _ => p.skip(t, 0)?,
            }
        }
        p.struct_end();
        let name_key: &[u8] =
            if self.log_fields.iter().any(|f| &d[f.key.clone()] == b"event") { b"event" } else { b"message" };
        let mut name = String::new();
        self.event_attributes.clear();
        for f in &self.log_fields {
            if &d[f.key.clone()] == name_key && name.is_empty() {
                name = text(d, &f.value);
            } else {
                write_tag(&mut self.event_attributes, key::LEN_3, d, f);
            }
        }
        let mut len = self.event_attributes.len();
        if time != 0 {
            len += 9;
        }
        if !name.is_empty() {
            len += string_field_size(name.len());
        }
        write_key_len(&mut self.events, key::LEN_11, len);
        if time != 0 {
            self.events.push(key::FIXED64_1);
            self.events.extend_from_slice(&time.to_le_bytes());
        }
        write_string_field(&mut self.events, key::LEN_2, name.as_bytes());
        self.events.extend_from_slice(&self.event_attributes);
        Ok(())
    }

    /// The parent (Thrift's `parentSpanId` when not zero, else the first `CHILD_OF` reference
    /// in the same trace) and every other reference as a link, into `links`.
    fn links(&mut self, trace: &[u8; 16], parent_span_id: [u8; 8]) -> Option<[u8; 8]> {
        self.links.clear();
        let out = &mut self.links;
        split_references(trace, parent_span_id, &self.references, |r| {
            let ref_type: &[u8] = if r.ref_type == RefType::ChildOf { b"child_of" } else { b"follows_from" };
            let attribute = kv_size(b"opentracing.ref_type", &Any::Str(ref_type));
            let len = 2 + 16 + 2 + 8 + len_field_size(attribute);
            write_key_len(out, key::LEN_13, len);
            write_bytes_field(out, key::LEN_1, &r.trace_id);
            write_bytes_field(out, key::LEN_2, &r.span_id);
            write_kv(out, key::LEN_4, b"opentracing.ref_type", Any::Str(ref_type));
        })
    }
}

fn span_kind(v: &str) -> i32 {
    const KINDS: [(&str, i32); 5] = [("internal", 1), ("server", 2), ("client", 3), ("producer", 4), ("consumer", 5)];
    KINDS.iter().find(|(name, _)| v.eq_ignore_ascii_case(name)).map_or(0, |(_, kind)| *kind)
}

fn is_true(d: &[u8], v: &ValueAt) -> bool {
    match v {
        ValueAt::Bool(b) => *b,
        ValueAt::Str(r) => d[r.clone()].eq_ignore_ascii_case(b"true"),
        _ => false,
    }
}

fn lossy(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(bytes)
}

/// A tag value as text, as [`super::translate`] writes it.
fn text(d: &[u8], v: &ValueAt) -> String {
    match v {
        ValueAt::Str(r) | ValueAt::Binary(r) => lossy(&d[r.clone()]).into_owned(),
        ValueAt::Double(x) => x.to_string(),
        ValueAt::Bool(b) => b.to_string(),
        ValueAt::Long(l) => l.to_string(),
    }
}

/// An `AnyValue`'s value.
enum Any<'a> {
    /// UTF-8.
    Str(&'a [u8]),
    Bool(bool),
    Int(i64),
    Double(f64),
    Bytes(&'a [u8]),
}

fn any_size(v: &Any) -> usize {
    match v {
        Any::Str(s) | Any::Bytes(s) => len_field_size(s.len()),
        Any::Bool(_) => 2,
        Any::Int(i) => 1 + varint_size(*i as u64),
        Any::Double(_) => 9,
    }
}

/// The size of a `KeyValue` message (without its own key and length).
fn kv_size(key: &[u8], v: &Any) -> usize {
    string_field_size(key.len()) + len_field_size(any_size(v))
}

/// A `KeyValue` as field `field_key`.
fn write_kv(out: &mut Vec<u8>, field_key: u8, key: &[u8], v: Any) {
    write_key_len(out, field_key, kv_size(key, &v));
    write_string_field(out, key::LEN_1, key);
    write_key_len(out, key::LEN_2, any_size(&v));
    match v {
        Any::Str(s) => write_bytes_field(out, key::LEN_1, s),
        Any::Bool(b) => out.extend_from_slice(&[key::VARINT_2, u8::from(b)]),
        Any::Int(i) => {
            out.push(key::VARINT_3);
            write_varint(out, i as u64);
        }
        Any::Double(x) => {
            out.push(key::FIXED64_4);
            out.extend_from_slice(&x.to_le_bytes());
        }
        Any::Bytes(b) => write_bytes_field(out, key::LEN_7, b),
    }
}

/// A tag as a `KeyValue` field: strings not valid UTF-8 get replacement characters.
fn write_tag(out: &mut Vec<u8>, field_key: u8, d: &[u8], tag: &TagAt) {
    let key = &d[tag.key.clone()];
    match &tag.value {
        ValueAt::Str(r) => match lossy(&d[r.clone()]) {
            std::borrow::Cow::Borrowed(s) => write_kv(out, field_key, key, Any::Str(s.as_bytes())),
            std::borrow::Cow::Owned(s) => write_kv(out, field_key, key, Any::Str(s.as_bytes())),
        },
        ValueAt::Double(x) => write_kv(out, field_key, key, Any::Double(*x)),
        ValueAt::Bool(b) => write_kv(out, field_key, key, Any::Bool(*b)),
        ValueAt::Long(l) => write_kv(out, field_key, key, Any::Int(*l)),
        ValueAt::Binary(r) => write_kv(out, field_key, key, Any::Bytes(&d[r.clone()])),
    }
}

fn varint_size(v: u64) -> usize {
    // 1 byte per 7 bits, at least one.
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

fn write_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Key, length and `len` bytes.
fn len_field_size(len: usize) -> usize {
    1 + varint_size(len as u64) + len
}

/// As [`len_field_size`] for a string or bytes field that prost leaves out when empty.
fn string_field_size(len: usize) -> usize {
    if len == 0 {
        0
    } else {
        len_field_size(len)
    }
}

fn write_key_len(out: &mut Vec<u8>, key: u8, len: usize) {
    out.push(key);
    write_varint(out, len as u64);
}

/// A length-delimited field, written even when empty (a message that is present).
fn write_bytes_field(out: &mut Vec<u8>, key: u8, bytes: &[u8]) {
    write_key_len(out, key, bytes.len());
    out.extend_from_slice(bytes);
}

/// A string or bytes field, left out when empty (as prost does).
fn write_string_field(out: &mut Vec<u8>, key: u8, bytes: &[u8]) {
    if !bytes.is_empty() {
        write_bytes_field(out, key, bytes);
    }
}
