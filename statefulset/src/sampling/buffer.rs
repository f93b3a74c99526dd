//! The sampler's state machine, without clocks or tasks: spans in, decisions and kept spans out.
//!
//! Spans wait *encoded* (one protobuf `Span` per `Bytes`, their resource and scope encoded once per
//! request and shared), grouped by trace ID; what the policies need is folded into
//! [`TraceFacts`] as each span arrives. A trace is decided `decision_wait` after its first span, or
//! earlier when a bound is reached — never dropped undecided:
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
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;

use super::decisions::DecisionCache;
use super::policy::{Policies, TraceFacts};
use super::TraceId;

/// Bookkeeping cost of one buffered span besides its bytes (the `Bytes` handle, the `Arc`).
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
    pub export: Option<ExportTraceServiceRequest>,
    pub decided: Vec<Decided>,
    pub late: Vec<(Late, u64)>,
}

/// The resource and scope of spans, encoded once per request.
#[derive(Debug)]
struct Envelope {
    resource: Bytes,
    resource_schema_url: String,
    scope: Bytes,
    scope_schema_url: String,
}

struct Pending {
    generation: u64,
    first_seen: Instant,
    facts: TraceFacts,
    spans: Vec<(Arc<Envelope>, Bytes)>,
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

    /// Takes the spans of a request.
    pub fn ingest(&mut self, request: ExportTraceServiceRequest, now: Instant) -> Outcome {
        let mut out = Collector::default();
        for rs in request.resource_spans {
            let resource = rs.resource.unwrap_or_default();
            let resource_mask = self.policies.resource_mask(&resource.attributes);
            let resource_bytes = Bytes::from(resource.encode_to_vec());
            for ss in rs.scope_spans {
                let envelope = Arc::new(Envelope {
                    resource: resource_bytes.clone(),
                    resource_schema_url: rs.schema_url.clone(),
                    scope: Bytes::from(ss.scope.unwrap_or_default().encode_to_vec()),
                    scope_schema_url: ss.schema_url,
                });
                for span in ss.spans {
                    self.add_span(&envelope, span, resource_mask, now, &mut out);
                }
            }
        }
        out.finish()
    }

    fn add_span(
        &mut self,
        envelope: &Arc<Envelope>,
        span: Span,
        resource_mask: u64,
        now: Instant,
        out: &mut Collector,
    ) {
        let id = trace_id(&span.trace_id);
        let encoded = Bytes::from(span.encode_to_vec());
        if let Some(kept) = self.decisions.get(&id) {
            if kept {
                out.kept.push((envelope.clone(), encoded));
                out.late(Late::Kept);
            } else {
                out.late(Late::Dropped);
            }
            return;
        }
        let matched = resource_mask | self.policies.span_mask(&span);
        if !self.traces.contains_key(&id) && self.traces.len() >= self.limits.max_traces {
            self.decide_oldest(Early::MaxTraces, now, out);
        }
        let size = encoded.len() + SPAN_OVERHEAD;
        let pending = self.traces.entry(id).or_insert_with(|| {
            let generation = self.next_generation;
            self.next_generation += 1;
            self.order.push_back((now, id, generation));
            Pending { generation, first_seen: now, facts: TraceFacts::default(), spans: Vec::new(), bytes: 0 }
        });
        pending.facts.add_span(span.start_time_unix_nano, span.end_time_unix_nano, matched);
        pending.spans.push((envelope.clone(), encoded));
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
    kept: Vec<(Arc<Envelope>, Bytes)>,
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
        Outcome { export: assemble(self.kept), decided: self.decided, late }
    }
}

/// Decodes kept spans back into one request; spans of equal resources and scopes (from several
/// incoming requests) share one `ResourceSpans` / `ScopeSpans`.
fn assemble(spans: Vec<(Arc<Envelope>, Bytes)>) -> Option<ExportTraceServiceRequest> {
    if spans.is_empty() {
        return None;
    }
    let mut request = ExportTraceServiceRequest::default();
    let mut by_envelope: HashMap<*const Envelope, (usize, usize)> = HashMap::new();
    let mut resources: HashMap<(&Bytes, &str), usize> = HashMap::new();
    let mut scopes: HashMap<(usize, &Bytes, &str), usize> = HashMap::new();
    for (envelope, bytes) in &spans {
        // Encoded by us from a decoded message: decoding cannot fail.
        let Ok(span) = Span::decode(bytes.clone()) else { continue };
        let (r, s) = *by_envelope.entry(Arc::as_ptr(envelope)).or_insert_with(|| {
            let r = *resources.entry((&envelope.resource, &envelope.resource_schema_url)).or_insert_with(|| {
                request.resource_spans.push(ResourceSpans {
                    resource: Some(Resource::decode(envelope.resource.clone()).unwrap_or_default()),
                    scope_spans: Vec::new(),
                    schema_url: envelope.resource_schema_url.clone(),
                });
                request.resource_spans.len() - 1
            });
            let s = *scopes.entry((r, &envelope.scope, &envelope.scope_schema_url)).or_insert_with(|| {
                let rs = &mut request.resource_spans[r];
                rs.scope_spans.push(ScopeSpans {
                    scope: Some(InstrumentationScope::decode(envelope.scope.clone()).unwrap_or_default()),
                    spans: Vec::new(),
                    schema_url: envelope.scope_schema_url.clone(),
                });
                rs.scope_spans.len() - 1
            });
            (r, s)
        });
        request.resource_spans[r].scope_spans[s].spans.push(span);
    }
    Some(request)
}

#[cfg(test)]
#[path = "buffer_tests.rs"]
mod tests;
