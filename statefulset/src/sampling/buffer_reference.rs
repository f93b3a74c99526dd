//! The buffer as it was before spans stayed in the wire format (decode every request, encode each
//! span alone, decode kept spans back into a request), kept for the property tests only: the
//! encoded buffer must produce, decoded, exactly what this one produces for the same requests,
//! times and decisions.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;

use super::buffer::{Decided, Early, Late, Limits};
use super::decisions::DecisionCache;
use super::policy::{Policies, TraceFacts};
use super::TraceId;

const SPAN_OVERHEAD: usize = 48;

#[derive(Debug, Default)]
pub struct RefOutcome {
    pub export: Option<ExportTraceServiceRequest>,
    pub decided: Vec<Decided>,
    pub late: Vec<(Late, u64)>,
}

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

pub struct RefBuffer {
    policies: Policies,
    limits: Limits,
    traces: HashMap<TraceId, Pending>,
    order: VecDeque<(Instant, TraceId, u64)>,
    next_generation: u64,
    bytes: usize,
    spans: usize,
    decisions: DecisionCache,
}

impl RefBuffer {
    pub fn new(policies: Policies, limits: Limits) -> RefBuffer {
        let decisions = DecisionCache::new(limits.decision_cache);
        RefBuffer {
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

    pub fn buffered(&self) -> (usize, usize, usize) {
        (self.traces.len(), self.spans, self.bytes)
    }

    pub fn ingest(&mut self, request: ExportTraceServiceRequest, now: Instant) -> RefOutcome {
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

    pub fn decide_due(&mut self, now: Instant) -> RefOutcome {
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

    pub fn decide_all(&mut self, now: Instant) -> RefOutcome {
        let mut out = Collector::default();
        while self.decide_oldest(Early::Shutdown, now, &mut out) {}
        out.finish()
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

    fn finish(self) -> RefOutcome {
        let mut late = Vec::new();
        if self.late_kept > 0 {
            late.push((Late::Kept, self.late_kept));
        }
        if self.late_dropped > 0 {
            late.push((Late::Dropped, self.late_dropped));
        }
        RefOutcome { export: assemble(self.kept), decided: self.decided, late }
    }
}

fn assemble(spans: Vec<(Arc<Envelope>, Bytes)>) -> Option<ExportTraceServiceRequest> {
    if spans.is_empty() {
        return None;
    }
    let mut request = ExportTraceServiceRequest::default();
    let mut by_envelope: HashMap<*const Envelope, (usize, usize)> = HashMap::new();
    let mut resources: HashMap<(&Bytes, &str), usize> = HashMap::new();
    let mut scopes: HashMap<(usize, &Bytes, &str), usize> = HashMap::new();
    for (envelope, bytes) in &spans {
        let span = Span::decode(bytes.clone()).expect("encoded by us");
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
