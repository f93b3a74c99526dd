//! The sampler's state machine, without clocks or tasks: spans in, decisions and kept spans out.
//!
//! Requests stay in the protobuf wire format from the receiver to the exporter
//! ([`lgtm_pipeline::trace_wire`]): a request is copied once into an allocation of its own size,
//! and each span waits as a byte range of it (with the request's resource and scope, encoded once
//! per `ScopeSpans` in prost's form so equal ones group again), grouped by trace ID; what the
//! policies need (trace ID, times, the span conditions it matches) is read from the span's fields
//! as it arrives ([`Policies::read_span`]) and folded into [`TraceFacts`]. Kept spans go out as a
//! request built by concatenating the encoded resources, scopes and span bytes: no span is decoded
//! or encoded on the way. A request's copy is freed when the last of its buffered spans is
//! decided (at most `decision_wait` after it arrived; `max_buffer` counts the spans' bytes).
//!
//! A trace is decided `decision_wait` after its first span, or earlier when a bound is reached —
//! never dropped undecided:
//! - `max_traces` traces buffered: the oldest is decided to make room (`max_traces`);
//! - `max_buffer` bytes buffered: the oldest traces are decided until under it (`max_buffer`);
//! - one trace over `max_trace_spans` spans or `max_trace_bytes` bytes: that trace is decided
//!   (`trace_too_large`), and its further spans follow the decision.
//!
//! Spans of a decided trace ("late spans") follow the cached decision: forwarded if kept, dropped
//! if not. The cache holds `decision_cache` trace IDs; a span later than that starts a new buffer.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use lgtm_pipeline::trace_wire::fields::{fields, length_delimited_len, put_length_delimited, Value};
use lgtm_pipeline::trace_wire::ValidTraces;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

use super::decisions::DecisionCache;
use super::policy::{Policies, TraceFacts};
use super::TraceId;

/// Bookkeeping cost of one buffered span besides its bytes (its [`SpanRef`], a share of the
/// trace's entries).
const SPAN_OVERHEAD: usize = 48;

/// The bounds of the buffer.
#[derive(Debug, Clone)]
pub struct Limits {
    pub decision_wait: Duration,
    pub max_traces: usize,
    pub max_buffer_bytes: usize,
    pub max_trace_spans: u64,
    pub max_trace_bytes: usize,
    pub decision_cache: usize,
}

impl Limits {
    /// From the config: a single trace may take 1/16 of the buffer (at least 1 MiB) and 100,000
    /// spans; the decision cache remembers four times `max_traces` decisions.
    pub fn from_config(cfg: &lgtm_config::TailSamplingConfig) -> Limits {
        let max_buffer_bytes = usize::try_from(cfg.max_buffer.bytes()).unwrap_or(usize::MAX);
        Limits {
            decision_wait: cfg.decision_wait.get(),
            max_traces: cfg.max_traces.max(1),
            max_buffer_bytes,
            max_trace_spans: 100_000,
            max_trace_bytes: (max_buffer_bytes / 16).max(1 << 20).min(max_buffer_bytes),
            decision_cache: cfg.max_traces.saturating_mul(4).max(1024),
        }
    }
}

/// Why a trace was decided before `decision_wait`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Early {
    MaxTraces,
    MaxBuffer,
    TraceTooLarge,
    Shutdown,
}

impl Early {
    pub fn as_str(self) -> &'static str {
        match self {
            Early::MaxTraces => "max_traces",
            Early::MaxBuffer => "max_buffer",
            Early::TraceTooLarge => "trace_too_large",
            Early::Shutdown => "shutdown",
        }
    }
}

/// One trace's decision, for self-metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct Decided {
    /// The policy that kept it, `None` if dropped.
    pub policy: Option<String>,
    pub early: Option<Early>,
    /// From the first span to the decision.
    pub waited: Duration,
    pub spans: u64,
}

/// A late span and what happened to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Late {
    Kept,
    Dropped,
}

/// What one call produced.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Kept spans to export (decided traces and late spans of kept traces), `None` if none.
    pub export: Option<ValidTraces>,
    pub decided: Vec<Decided>,
    pub late: Vec<(Late, u64)>,
}

/// One `ScopeSpans` of a request: the request's bytes its spans are ranges of, and its resource
/// and scope in prost's encoding (merged occurrences, unknown fields dropped), so that equal ones
/// of several requests group as the decoded ones did.
#[derive(Debug)]
struct Envelope {
    request: Bytes,
    resource: Bytes,
    /// Ranges of `request`: valid UTF-8 (checked by `trace_wire`).
    resource_schema_url: Bytes,
    scope: Bytes,
    scope_schema_url: Bytes,
}

/// One buffered span: the payload of its `Span` field in the envelope's request.
#[derive(Debug, Clone)]
struct SpanRef {
    envelope: Arc<Envelope>,
    start: u32,
    end: u32,
}

impl SpanRef {
    fn bytes(&self) -> &[u8] {
        &self.envelope.request[self.start as usize..self.end as usize]
    }
}

struct Pending {
    generation: u64,
    first_seen: Instant,
    facts: TraceFacts,
    spans: Vec<SpanRef>,
    bytes: usize,
}

pub struct Buffer {
    policies: Policies,
    limits: Limits,
    traces: HashMap<TraceId, Pending>,
    /// Traces by first span, oldest first; entries of traces decided early are skipped.
    order: VecDeque<(Instant, TraceId, u64)>,
    next_generation: u64,
    bytes: usize,
    spans: usize,
    decisions: DecisionCache,
}

/// The largest request the buffer takes: span ranges are `u32` (the receivers' `max_request_size`
/// is far below).
pub const MAX_REQUEST_BYTES: usize = u32::MAX as usize;

impl Buffer {
    pub fn new(policies: Policies, limits: Limits) -> Buffer {
        let decisions = DecisionCache::new(limits.decision_cache);
        Buffer {
            policies,
            limits,
            traces: HashMap::new(),
            order: VecDeque::new(),
            next_generation: 0,
            bytes: 0,
            spans: 0,
            decisions,
        }
    }

    pub fn buffered_traces(&self) -> usize {
        self.traces.len()
    }

    pub fn buffered_bytes(&self) -> usize {
        self.bytes
    }

    pub fn buffered_spans(&self) -> usize {
        self.spans
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Takes the spans of a checked request (of at most [`MAX_REQUEST_BYTES`]; a larger one is
    /// taken as empty).
    pub fn ingest(&mut self, request: ValidTraces, now: Instant) -> Outcome {
        let mut out = Collector::default();
        if request.as_bytes().len() > MAX_REQUEST_BYTES {
            return out.finish();
        }
        // An allocation of the request's own size: the receiver's bytes may share a larger buffer.
        let request = Bytes::copy_from_slice(request.as_bytes());
        for rs in fields(&request) {
            let (1, Value::LengthDelimited(rs)) = (rs.tag, rs.value) else { continue };
            // Field order is free: the resource and schema URL may follow the scope spans.
            let (resource, resource_schema_url) = header::<Resource>(rs);
            let resource_mask = self.policies.resource_mask(&resource.attributes);
            let resource = Bytes::from(resource.encode_to_vec());
            let resource_schema_url = request.slice_ref(resource_schema_url);
            for ss in fields(rs) {
                let (2, Value::LengthDelimited(ss)) = (ss.tag, ss.value) else { continue };
                let (scope, scope_schema_url) = header::<InstrumentationScope>(ss);
                let envelope = Arc::new(Envelope {
                    request: request.clone(),
                    resource: resource.clone(),
                    resource_schema_url: resource_schema_url.clone(),
                    scope: Bytes::from(scope.encode_to_vec()),
                    scope_schema_url: request.slice_ref(scope_schema_url),
                });
                for span in fields(ss) {
                    let (2, Value::LengthDelimited(span)) = (span.tag, span.value) else { continue };
                    let start = span.as_ptr() as usize - request.as_ptr() as usize;
                    let span_ref =
                        SpanRef { envelope: envelope.clone(), start: start as u32, end: (start + span.len()) as u32 };
                    self.add_span(span_ref, resource_mask, now, &mut out);
                }
            }
        }
        out.finish()
    }

    fn add_span(&mut self, span_ref: SpanRef, resource_mask: u64, now: Instant, out: &mut Collector) {
        let span = self.policies.read_span(span_ref.bytes());
        let id = trace_id(span.trace_id);
        if let Some(kept) = self.decisions.get(&id) {
            if kept {
                out.kept.push(span_ref);
                out.late(Late::Kept);
            } else {
                out.late(Late::Dropped);
            }
            return;
        }
        let matched = resource_mask | span.matched;
        let (start, end) = (span.start, span.end);
        if !self.traces.contains_key(&id) && self.traces.len() >= self.limits.max_traces {
            self.decide_oldest(Early::MaxTraces, now, out);
        }
        let size = (span_ref.end - span_ref.start) as usize + SPAN_OVERHEAD;
        let pending = self.traces.entry(id).or_insert_with(|| {
            let generation = self.next_generation;
            self.next_generation += 1;
            self.order.push_back((now, id, generation));
            Pending { generation, first_seen: now, facts: TraceFacts::default(), spans: Vec::new(), bytes: 0 }
        });
        pending.facts.add_span(start, end, matched);
        pending.spans.push(span_ref);
        pending.bytes += size;
        self.bytes += size;
        self.spans += 1;
        if pending.facts.spans >= self.limits.max_trace_spans || pending.bytes >= self.limits.max_trace_bytes {
            self.decide(id, Some(Early::TraceTooLarge), now, out);
        }
        while self.bytes > self.limits.max_buffer_bytes {
            if !self.decide_oldest(Early::MaxBuffer, now, out) {
                break;
            }
        }
    }

    /// Decides the traces whose `decision_wait` has passed.
    pub fn decide_due(&mut self, now: Instant) -> Outcome {
        let mut out = Collector::default();
        while let Some(&(first, id, generation)) = self.order.front() {
            if now.duration_since(first) < self.limits.decision_wait {
                break;
            }
            self.order.pop_front();
            if self.traces.get(&id).is_some_and(|p| p.generation == generation) {
                self.decide(id, None, now, &mut out);
            }
        }
        out.finish()
    }

    /// Decides every buffered trace now (at shutdown: decide rather than lose).
    pub fn decide_all(&mut self, now: Instant) -> Outcome {
        let mut out = Collector::default();
        while self.decide_oldest(Early::Shutdown, now, &mut out) {}
        out.finish()
    }

    /// When the oldest trace will be due, if any.
    pub fn next_due(&self) -> Option<Instant> {
        self.order.front().map(|(first, _, _)| *first + self.limits.decision_wait)
    }

    fn decide_oldest(&mut self, why: Early, now: Instant, out: &mut Collector) -> bool {
        while let Some((_, id, generation)) = self.order.pop_front() {
            if self.traces.get(&id).is_some_and(|p| p.generation == generation) {
                self.decide(id, Some(why), now, out);
                return true;
            }
        }
        false
    }

    fn decide(&mut self, id: TraceId, early: Option<Early>, now: Instant, out: &mut Collector) {
        let Some(pending) = self.traces.remove(&id) else { return };
        self.bytes -= pending.bytes;
        self.spans -= pending.spans.len();
        let policy = self.policies.decide(&id, &pending.facts, now).map(str::to_string);
        self.decisions.insert(id, policy.is_some());
        if policy.is_some() {
            out.kept.extend(pending.spans);
        }
        out.decided.push(Decided {
            policy,
            early,
            waited: now.saturating_duration_since(pending.first_seen),
            spans: pending.facts.spans,
        });
    }
}

/// Merges one occurrence of a message field into the value so far, as prost decodes repeated
/// occurrences. The bytes were checked by `trace_wire` (prost's acceptance): cannot fail.
/// The header of a `ResourceSpans` or `ScopeSpans`: field 1 (its resource or scope, merged as
/// prost merges repeated occurrences) and field 3 (its schema URL, the last one).
fn header<M: Message + Default>(message: &[u8]) -> (M, &[u8]) {
    let (mut head, mut schema_url) = (M::default(), &[][..]);
    for f in fields(message) {
        match (f.tag, f.value) {
            (1, Value::LengthDelimited(m)) => merge(&mut head, m),
            (3, Value::LengthDelimited(url)) => schema_url = url,
            _ => {}
        }
    }
    (head, schema_url)
}

fn merge<M: Message>(into: &mut M, bytes: &[u8]) {
    if let Err(e) = into.merge(bytes) {
        debug_assert!(false, "checked bytes do not decode: {e}");
    }
}

/// A 16-byte trace ID (shorter or longer IDs, which the spec calls invalid, are padded or cut so
/// they still group).
fn trace_id(bytes: &[u8]) -> TraceId {
    let mut id = [0u8; 16];
    let n = bytes.len().min(16);
    id[..n].copy_from_slice(&bytes[..n]);
    id
}

#[derive(Default)]
struct Collector {
    kept: Vec<SpanRef>,
    decided: Vec<Decided>,
    late_kept: u64,
    late_dropped: u64,
}

impl Collector {
    fn late(&mut self, l: Late) {
        match l {
            Late::Kept => self.late_kept += 1,
            Late::Dropped => self.late_dropped += 1,
        }
    }

    fn finish(self) -> Outcome {
        let mut late = Vec::new();
        if self.late_kept > 0 {
            late.push((Late::Kept, self.late_kept));
        }
        if self.late_dropped > 0 {
            late.push((Late::Dropped, self.late_dropped));
        }
        Outcome { export: assemble(&self.kept), decided: self.decided, late }
    }
}

/// One `ScopeSpans` of the request being built.
struct OutScope<'a> {
    scope: &'a [u8],
    schema_url: &'a [u8],
    spans: Vec<&'a [u8]>,
    /// Encoded length of the `ScopeSpans` body.
    len: usize,
}

/// One `ResourceSpans` of the request being built.
struct OutResource<'a> {
    resource: &'a [u8],
    schema_url: &'a [u8],
    scopes: Vec<OutScope<'a>>,
    len: usize,
}

/// Kept spans as one encoded request: spans of equal resources and scopes (from several incoming
/// requests) share one `ResourceSpans` / `ScopeSpans`, in the order they first appear, each span's
/// bytes copied as they came. Decoded, it is what decoding every span and grouping the decoded
/// spans gave: every resource and scope present (empty ones too), schema URLs when not empty.
fn assemble(spans: &[SpanRef]) -> Option<ValidTraces> {
    if spans.is_empty() {
        return None;
    }
    let mut out: Vec<OutResource<'_>> = Vec::new();
    let mut by_envelope: HashMap<*const Envelope, (usize, usize)> = HashMap::new();
    let mut resources: HashMap<(&[u8], &[u8]), usize> = HashMap::new();
    let mut scopes: HashMap<(usize, &[u8], &[u8]), usize> = HashMap::new();
    let mut last: Option<(*const Envelope, (usize, usize))> = None;
    for span in spans {
        let envelope = &*span.envelope;
        let ptr: *const Envelope = envelope;
        let (r, s) = match last {
            Some((p, at)) if p == ptr => at,
            _ => {
                let at = *by_envelope.entry(ptr).or_insert_with(|| {
                    let r =
                        *resources.entry((&envelope.resource, &envelope.resource_schema_url)).or_insert_with(|| {
                            out.push(OutResource {
                                resource: &envelope.resource,
                                schema_url: &envelope.resource_schema_url,
                                scopes: Vec::new(),
                                len: 0,
                            });
                            out.len() - 1
                        });
                    let s = *scopes.entry((r, &envelope.scope, &envelope.scope_schema_url)).or_insert_with(|| {
                        let scopes = &mut out[r].scopes;
                        scopes.push(OutScope {
                            scope: &envelope.scope,
                            schema_url: &envelope.scope_schema_url,
                            spans: Vec::new(),
                            len: 0,
                        });
                        scopes.len() - 1
                    });
                    (r, s)
                });
                last = Some((ptr, at));
                at
            }
        };
        let bytes = span.bytes();
        let scope = &mut out[r].scopes[s];
        scope.len += length_delimited_len(bytes.len());
        scope.spans.push(bytes);
    }
    // Lengths inside out, then one pass writing.
    let mut total = 0;
    for resource in &mut out {
        let mut len = length_delimited_len(resource.resource.len()) + optional_len(resource.schema_url);
        for scope in &mut resource.scopes {
            scope.len += length_delimited_len(scope.scope.len()) + optional_len(scope.schema_url);
            len += length_delimited_len(scope.len);
        }
        resource.len = len;
        total += length_delimited_len(len);
    }
    let mut buf = Vec::with_capacity(total);
    for resource in &out {
        put_length_delimited(&mut buf, 1, resource.len);
        put_length_delimited(&mut buf, 1, resource.resource.len());
        buf.extend_from_slice(resource.resource);
        for scope in &resource.scopes {
            put_length_delimited(&mut buf, 2, scope.len);
            put_length_delimited(&mut buf, 1, scope.scope.len());
            buf.extend_from_slice(scope.scope);
            for span in &scope.spans {
                put_length_delimited(&mut buf, 2, span.len());
                buf.extend_from_slice(span);
            }
            put_optional(&mut buf, 3, scope.schema_url);
        }
        put_optional(&mut buf, 3, resource.schema_url);
    }
    debug_assert_eq!(buf.len(), total);
    Some(ValidTraces::assembled(Bytes::from(buf), spans.len()))
}

/// A string field prost writes only when not empty.
fn optional_len(value: &[u8]) -> usize {
    if value.is_empty() {
        0
    } else {
        length_delimited_len(value.len())
    }
}

fn put_optional(buf: &mut Vec<u8>, tag: u8, value: &[u8]) {
    if !value.is_empty() {
        put_length_delimited(buf, tag, value.len());
        buf.extend_from_slice(value);
    }
}

#[cfg(test)]
#[path = "buffer_tests.rs"]
mod tests;
