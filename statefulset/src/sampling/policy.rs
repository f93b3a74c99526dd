//! Sampling policies, compiled from `tail_sampling.policies`.
//!
//! A policy reads a trace through [`TraceFacts`], a summary built while spans arrive, so deciding
//! never decodes a buffered span again:
//! - span-level conditions (`status_code`, `string_attribute`, `numeric_attribute`) are evaluated
//!   on each span as it arrives and OR-ed into a bit mask ("some span of the trace matched");
//!   attributes are looked up on the span and on its resource;
//! - `latency` reads the earliest start and the latest end of the trace's spans;
//! - `probabilistic` hashes the trace ID (xxh3), so every replica, and every restart, decides the
//!   same trace the same way;
//! - `rate_limiting` admits traces while the spans admitted in the current second stay under
//!   `spans_per_second`;
//! - `and`, `or`, `not` combine them (`and` and `or` short-circuit left to right, so a rate limiter
//!   placed last in an `and` only spends its budget on traces the other conditions kept).
//!
//! A trace is kept when any top-level policy keeps it.
//!
//! Spans are read in the wire format ([`Policies::read_span`]): one pass over the span's fields,
//! looking into `status` only when a `status_code` condition exists and into attributes only when
//! an attribute condition does, with prost's reading of repeated occurrences (the last scalar
//! wins, occurrences of a message merge). [`Policies::span_mask`] is the same on a decoded span.

use std::time::{Duration, Instant};

use lgtm_config::PolicyConfig;
use lgtm_pipeline::trace_wire::fields::{fields, Value};
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::trace::v1::{status::StatusCode, Span};

/// What the policies know about a trace.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TraceFacts {
    /// Bit `i`: some span matched span condition `i`.
    pub matched: u64,
    /// Earliest span start (unix ns), 0 if none known.
    pub start: u64,
    /// Latest span end (unix ns).
    pub end: u64,
    pub spans: u64,
}

impl TraceFacts {
    pub fn add_span(&mut self, start: u64, end: u64, matched: u64) {
        if start > 0 && (self.start == 0 || start < self.start) {
            self.start = start;
        }
        self.end = self.end.max(end);
        self.matched |= matched;
        self.spans += 1;
    }

    pub fn duration(&self) -> Duration {
        Duration::from_nanos(self.end.saturating_sub(self.start))
    }
}

#[derive(Debug, thiserror::Error)]
#[error("tail_sampling policy {policy:?}: {message}")]
pub struct PolicyError {
    pub policy: String,
    pub message: String,
}

/// A condition tested on each span (and its resource).
#[derive(Debug, Clone)]
enum SpanCondition {
    /// Bit per `StatusCode` value.
    StatusCode(u8),
    StringAttribute {
        key: String,
        values: Vec<String>,
    },
    NumericAttribute {
        key: String,
        min: i64,
        max: i64,
    },
}

impl SpanCondition {
    fn matches_attributes(&self, attrs: &[KeyValue]) -> bool {
        match self {
            SpanCondition::StatusCode(_) => false,
            SpanCondition::StringAttribute { key, values } => attrs.iter().any(|kv| {
                kv.key == *key
                    && matches!(kv.value.as_ref().and_then(|v| v.value.as_ref()),
                        Some(any_value::Value::StringValue(s)) if values.iter().any(|v| v == s))
            }),
            SpanCondition::NumericAttribute { key, min, max } => attrs.iter().any(|kv| {
                kv.key == *key
                    && match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                        Some(any_value::Value::IntValue(i)) => (*min..=*max).contains(i),
                        Some(any_value::Value::DoubleValue(d)) => *d >= *min as f64 && *d <= *max as f64,
                        _ => false,
                    }
            }),
        }
    }

    /// As `matches_attributes` for one `KeyValue` read from the wire.
    fn matches_wire(&self, kv: &WireKeyValue<'_>) -> bool {
        match self {
            SpanCondition::StatusCode(_) => false,
            SpanCondition::StringAttribute { key, values } => {
                kv.key == key.as_bytes()
                    && matches!(kv.value, WireAny::Str(s) if values.iter().any(|v| v.as_bytes() == s))
            }
            SpanCondition::NumericAttribute { key, min, max } => {
                kv.key == key.as_bytes()
                    && match kv.value {
                        WireAny::Int(i) => (*min..=*max).contains(&i),
                        WireAny::Double(d) => d >= *min as f64 && d <= *max as f64,
                        _ => false,
                    }
            }
        }
    }

    fn matches_status(&self, code: i32) -> bool {
        match self {
            SpanCondition::StatusCode(codes) => (0..8).contains(&code) && codes & (1 << code) != 0,
            _ => false,
        }
    }

    fn matches_span(&self, span: &Span) -> bool {
        match self {
            SpanCondition::StatusCode(codes) => {
                let code = span.status.as_ref().map_or(0, |s| s.code);
                (0..8).contains(&code) && codes & (1 << code) != 0
            }
            _ => self.matches_attributes(&span.attributes),
        }
    }
}

/// An attribute's value as prost decodes it, for matching: the last field of the `AnyValue`
/// oneof (over every occurrence of `value`) decides.
#[derive(Debug, Clone, Copy)]
enum WireAny<'a> {
    None,
    Str(&'a [u8]),
    Int(i64),
    Double(f64),
    Other,
}

struct WireKeyValue<'a> {
    key: &'a [u8],
    value: WireAny<'a>,
}

impl<'a> WireKeyValue<'a> {
    fn read(kv: &'a [u8]) -> WireKeyValue<'a> {
        let mut out = WireKeyValue { key: &[], value: WireAny::None };
        for f in fields(kv) {
            match (f.tag, f.value) {
                (1, Value::LengthDelimited(key)) => out.key = key,
                (2, Value::LengthDelimited(any)) => {
                    for g in fields(any) {
                        out.value = match (g.tag, g.value) {
                            (1, Value::LengthDelimited(s)) => WireAny::Str(s),
                            // prost reads int64 varints as `u64 as i64`.
                            (3, Value::Varint(i)) => WireAny::Int(i as i64),
                            (4, Value::Fixed64(d)) => WireAny::Double(f64::from_bits(d)),
                            (2 | 5..=8, _) => WireAny::Other,
                            _ => continue,
                        };
                    }
                }
                _ => {}
            }
        }
        out
    }
}

/// What the buffer reads from one encoded span ([`Policies::read_span`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WireSpan<'a> {
    pub trace_id: &'a [u8],
    pub start: u64,
    pub end: u64,
    /// The span conditions the span satisfies (as [`Policies::span_mask`]).
    pub matched: u64,
}

#[derive(Debug, Clone)]
enum Rule {
    /// Some span matched span condition `n`.
    Span(u32),
    Latency(Duration),
    /// Kept when the trace ID's hash is below this.
    Probabilistic(u64),
    /// Index into the rate limiters.
    RateLimiting(usize),
    And(Vec<Rule>),
    Or(Vec<Rule>),
    Not(Box<Rule>),
}

#[derive(Debug, Clone)]
struct RateLimiter {
    per_second: u64,
    window: Option<Instant>,
    spent: u64,
}

impl RateLimiter {
    fn admit(&mut self, spans: u64, now: Instant) -> bool {
        match self.window {
            Some(start) if now.duration_since(start) < Duration::from_secs(1) => {}
            _ => {
                self.window = Some(now);
                self.spent = 0;
            }
        }
        if self.spent + spans <= self.per_second {
            self.spent += spans;
            true
        } else {
            false
        }
    }
}

/// The compiled policy set.
#[derive(Debug, Clone)]
pub struct Policies {
    top: Vec<(String, Rule)>,
    conditions: Vec<SpanCondition>,
    limiters: Vec<RateLimiter>,
    /// Some condition reads the status / the attributes.
    reads_status: bool,
    reads_attributes: bool,
}

/// Span conditions are bits of a `u64`.
const MAX_SPAN_CONDITIONS: usize = 64;

impl Policies {
    pub fn compile(configs: &[PolicyConfig]) -> Result<Policies, PolicyError> {
        let mut p = Policies {
            top: Vec::new(),
            conditions: Vec::new(),
            limiters: Vec::new(),
            reads_status: false,
            reads_attributes: false,
        };
        for (i, cfg) in configs.iter().enumerate() {
            let name = cfg.name.clone().unwrap_or_else(|| format!("{}-{i}", cfg.kind));
            let rule = p.rule(cfg, &name)?;
            p.top.push((name, rule));
        }
        Ok(p)
    }

    fn rule(&mut self, cfg: &PolicyConfig, name: &str) -> Result<Rule, PolicyError> {
        let err = |message: String| PolicyError { policy: name.to_string(), message };
        Ok(match cfg.kind.as_str() {
            "status_code" => {
                let mut mask = 0u8;
                for code in &cfg.status_codes {
                    let c = match code.to_ascii_uppercase().trim_start_matches("STATUS_CODE_") {
                        "UNSET" => StatusCode::Unset,
                        "OK" => StatusCode::Ok,
                        "ERROR" => StatusCode::Error,
                        other => return Err(err(format!("unknown status code {other:?} (UNSET, OK, ERROR)"))),
                    };
                    mask |= 1 << (c as i32);
                }
                if mask == 0 {
                    return Err(err("status_code needs status_codes".into()));
                }
                self.condition(SpanCondition::StatusCode(mask), name)?
            }
            "latency" => {
                let ms = cfg.threshold_ms.ok_or_else(|| err("latency needs threshold_ms".into()))?;
                Rule::Latency(Duration::from_millis(ms))
            }
            "probabilistic" => {
                let pct = cfg.percentage.ok_or_else(|| err("probabilistic needs percentage".into()))?;
                if !(0.0..=100.0).contains(&pct) {
                    return Err(err(format!("percentage {pct} is not within 0..=100")));
                }
                Rule::Probabilistic(probability_threshold(pct))
            }
            "string_attribute" => {
                let key = cfg.key.clone().ok_or_else(|| err("string_attribute needs key".into()))?;
                if cfg.values.is_empty() {
                    return Err(err("string_attribute needs values".into()));
                }
                self.condition(SpanCondition::StringAttribute { key, values: cfg.values.clone() }, name)?
            }
            "numeric_attribute" => {
                let key = cfg.key.clone().ok_or_else(|| err("numeric_attribute needs key".into()))?;
                let (min, max) = (cfg.min_value.unwrap_or(i64::MIN), cfg.max_value.unwrap_or(i64::MAX));
                if cfg.min_value.is_none() && cfg.max_value.is_none() {
                    return Err(err("numeric_attribute needs min_value or max_value".into()));
                }
                self.condition(SpanCondition::NumericAttribute { key, min, max }, name)?
            }
            "rate_limiting" => {
                let per_second =
                    cfg.spans_per_second.ok_or_else(|| err("rate_limiting needs spans_per_second".into()))?;
                self.limiters.push(RateLimiter { per_second, window: None, spent: 0 });
                Rule::RateLimiting(self.limiters.len() - 1)
            }
            "and" | "or" => {
                let parts = if cfg.kind == "and" { &cfg.and } else { &cfg.or };
                if parts.is_empty() {
                    return Err(err(format!("{} needs a list of policies under `{}`", cfg.kind, cfg.kind)));
                }
                let rules = parts.iter().map(|c| self.rule(c, name)).collect::<Result<Vec<_>, _>>()?;
                if cfg.kind == "and" {
                    Rule::And(rules)
                } else {
                    Rule::Or(rules)
                }
            }
            "not" => {
                let inner = cfg.not.as_deref().ok_or_else(|| err("not needs a policy under `not`".into()))?;
                Rule::Not(Box::new(self.rule(inner, name)?))
            }
            other => return Err(err(format!("unknown type {other:?}"))),
        })
    }

    fn condition(&mut self, c: SpanCondition, name: &str) -> Result<Rule, PolicyError> {
        if self.conditions.len() == MAX_SPAN_CONDITIONS {
            return Err(PolicyError {
                policy: name.into(),
                message: format!("more than {MAX_SPAN_CONDITIONS} span conditions in all policies"),
            });
        }
        match c {
            SpanCondition::StatusCode(_) => self.reads_status = true,
            _ => self.reads_attributes = true,
        }
        self.conditions.push(c);
        Ok(Rule::Span(self.conditions.len() as u32 - 1))
    }

    /// The span conditions a resource's attributes satisfy (OR-ed into each of its spans).
    pub fn resource_mask(&self, attrs: &[KeyValue]) -> u64 {
        self.mask(|c| c.matches_attributes(attrs))
    }

    /// The span conditions a span satisfies.
    pub fn span_mask(&self, span: &Span) -> u64 {
        self.mask(|c| c.matches_span(span))
    }

    /// Reads an encoded `Span` (its payload, checked by `trace_wire`): trace ID, times, and the
    /// span conditions it satisfies, as [`Policies::span_mask`] would on the decoded span.
    pub fn read_span<'a>(&self, span: &'a [u8]) -> WireSpan<'a> {
        let mut out = WireSpan { trace_id: &[], start: 0, end: 0, matched: 0 };
        let mut code = 0i32;
        for f in fields(span) {
            match (f.tag, f.value) {
                (1, Value::LengthDelimited(id)) => out.trace_id = id,
                (7, Value::Fixed64(t)) => out.start = t,
                (8, Value::Fixed64(t)) => out.end = t,
                (9, Value::LengthDelimited(kv)) if self.reads_attributes => {
                    let kv = WireKeyValue::read(kv);
                    out.matched |= self.mask(|c| c.matches_wire(&kv));
                }
                (15, Value::LengthDelimited(status)) if self.reads_status => {
                    for g in fields(status) {
                        if let (3, Value::Varint(c)) = (g.tag, g.value) {
                            // prost reads an enum (int32) varint as `u64 as i32`.
                            code = c as i32;
                        }
                    }
                }
                _ => {}
            }
        }
        if self.reads_status {
            out.matched |= self.mask(|c| c.matches_status(code));
        }
        out
    }

    fn mask(&self, mut f: impl FnMut(&SpanCondition) -> bool) -> u64 {
        let mut m = 0;
        for (i, c) in self.conditions.iter().enumerate() {
            if f(c) {
                m |= 1 << i;
            }
        }
        m
    }

    /// The first top-level policy that keeps the trace, or `None` to drop it.
    pub fn decide(&mut self, trace_id: &[u8; 16], facts: &TraceFacts, now: Instant) -> Option<&str> {
        let Policies { top, limiters, .. } = self;
        let trace_hash = hash_trace_id(trace_id);
        for (name, rule) in top.iter() {
            if eval(rule, facts, trace_hash, limiters, now) {
                return Some(name);
            }
        }
        None
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.top.iter().map(|(n, _)| n.as_str())
    }
}

fn eval(rule: &Rule, facts: &TraceFacts, trace_hash: u64, limiters: &mut [RateLimiter], now: Instant) -> bool {
    match rule {
        Rule::Span(bit) => facts.matched & (1 << bit) != 0,
        Rule::Latency(threshold) => facts.duration() >= *threshold,
        Rule::Probabilistic(threshold) => trace_hash < *threshold,
        Rule::RateLimiting(i) => limiters[*i].admit(facts.spans, now),
        Rule::And(rules) => rules.iter().all(|r| eval(r, facts, trace_hash, limiters, now)),
        Rule::Or(rules) => rules.iter().any(|r| eval(r, facts, trace_hash, limiters, now)),
        Rule::Not(r) => !eval(r, facts, trace_hash, limiters, now),
    }
}

/// Traces whose hash is below this are kept: `percentage` of the `u64` range.
fn probability_threshold(percentage: f64) -> u64 {
    if percentage >= 100.0 {
        u64::MAX
    } else {
        (percentage / 100.0 * u64::MAX as f64) as u64
    }
}

/// The same on every replica and every run: xxh3 with a fixed seed.
pub fn hash_trace_id(trace_id: &[u8; 16]) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(trace_id, 0x6c67_746d)
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
