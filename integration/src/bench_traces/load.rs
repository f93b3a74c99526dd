//! The generated OTLP load: whole traces of several spans from three services, with the
//! attributes an HTTP service and its database client put on spans, one trace in twenty failing,
//! a quarter slower than 50 ms and the rest fast. Requests are encoded once, up front, so sending
//! them costs this process next to nothing; the trace's kind is the first byte of its ID, which
//! is how the counting receiver tells what the sampler kept.

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, SpanKind};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;

/// What a trace is, as the PoC's policies see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// One span has status ERROR: always kept.
    Error,
    /// Root longer than 50 ms, OK: kept at 30%.
    Slow,
    /// Root at most 30 ms, OK: dropped.
    Fast,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Error, Kind::Slow, Kind::Fast];

    /// The first byte of the trace IDs of this kind.
    pub fn tag(self) -> u8 {
        match self {
            Kind::Error => 0xe0,
            Kind::Slow => 0x51,
            Kind::Fast => 0xfa,
        }
    }

    pub fn of_tag(tag: u8) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.tag() == tag)
    }

    pub fn index(self) -> usize {
        self as usize
    }

    /// Trace number `n` of the load: 1 in 20 errors, 5 in 20 slow, the rest fast.
    fn of_trace(n: u64) -> Kind {
        match mix(n ^ 0x6b1d) % 20 {
            0 => Kind::Error,
            1..=5 => Kind::Slow,
            _ => Kind::Fast,
        }
    }
}

/// The load, encoded.
pub struct Load {
    /// `ExportTraceServiceRequest`s as sent on the wire (uncompressed, as SDKs send by default).
    pub requests: Vec<Bytes>,
    /// Spans per request, in the order of `requests`.
    pub spans_per_request: Vec<usize>,
    /// Spans of each kind (by [`Kind::index`]), all requests together.
    pub spans_by_kind: [u64; 3],
    pub traces_by_kind: [u64; 3],
    /// Sum of the encoded sizes of every `Span` message.
    pub span_bytes: u64,
}

impl Load {
    pub fn spans(&self) -> u64 {
        self.spans_by_kind.iter().sum()
    }

    pub fn traces(&self) -> u64 {
        self.traces_by_kind.iter().sum()
    }

    pub fn wire_bytes(&self) -> u64 {
        self.requests.iter().map(|r| r.len() as u64).sum()
    }

    /// Mean encoded size of a `Span` message.
    pub fn mean_span_bytes(&self) -> f64 {
        self.span_bytes as f64 / self.spans().max(1) as f64
    }

    /// The first `n` requests as a load of their own (their counts recomputed).
    pub fn first(&self, n: usize) -> Load {
        let mut out = Load::empty();
        for (req, _) in self.requests.iter().zip(&self.spans_per_request).take(n) {
            out.add(req.clone());
        }
        out
    }

    fn empty() -> Load {
        Load {
            requests: Vec::new(),
            spans_per_request: Vec::new(),
            spans_by_kind: [0; 3],
            traces_by_kind: [0; 3],
            span_bytes: 0,
        }
    }

    fn add(&mut self, encoded: Bytes) {
        let req = ExportTraceServiceRequest::decode(encoded.clone()).expect("a request this module encoded");
        let mut spans = 0;
        for span in req.resource_spans.iter().flat_map(|r| &r.scope_spans).flat_map(|s| &s.spans) {
            spans += 1;
            self.span_bytes += span.encoded_len() as u64;
            if let Some(kind) = span.trace_id.first().and_then(|t| Kind::of_tag(*t)) {
                self.spans_by_kind[kind.index()] += 1;
                if span.parent_span_id.is_empty() {
                    self.traces_by_kind[kind.index()] += 1;
                }
            }
        }
        self.spans_per_request.push(spans);
        self.requests.push(encoded);
    }
}

/// `traces` traces of `spans_per_trace` spans (at least 2), packed whole into requests of about
/// `spans_per_request` spans; IDs and timings differ with `seed`.
pub fn generate(traces: u64, spans_per_trace: usize, spans_per_request: usize, seed: u64) -> Load {
    let spans_per_trace = spans_per_trace.max(2);
    let traces_per_request = (spans_per_request / spans_per_trace).max(1) as u64;
    let mut load = Load::empty();
    let mut n = 0;
    while n < traces {
        let last = (n + traces_per_request).min(traces);
        let req = request(n..last, spans_per_trace, seed);
        load.add(Bytes::from(req.encode_to_vec()));
        n = last;
    }
    load
}

/// The services a trace passes through, each its own resource in the request (as spans of
/// several SDKs arrive through a collector or a node agent).
const SERVICES: [(&str, &str); 3] = [("frontend", "web"), ("cart", "shop"), ("cart-db-client", "shop")];

const ROUTES: [&str; 6] =
    ["/api/cart", "/api/cart/{id}", "/api/checkout", "/api/catalogue", "/api/catalogue/{id}", "/api/user/{id}"];

fn request(traces: std::ops::Range<u64>, spans_per_trace: usize, seed: u64) -> ExportTraceServiceRequest {
    let mut per_service: [Vec<Span>; 3] = Default::default();
    for n in traces {
        for (i, span) in trace(n, spans_per_trace, seed).into_iter().enumerate() {
            // The root is the frontend's, the first child the cart's, the rest its database calls.
            per_service[i.min(2)].push(span);
        }
    }
    let resource_spans = SERVICES
        .iter()
        .zip(per_service)
        .map(|((service, namespace), spans)| ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", service),
                    kv("service.namespace", namespace),
                    kv("service.version", "1.8.2"),
                    kv("telemetry.sdk.language", "python"),
                    kv("telemetry.sdk.name", "opentelemetry"),
                    kv("telemetry.sdk.version", "1.38.0"),
                    kv("k8s.namespace.name", namespace),
                    kv("k8s.pod.name", &format!("{service}-7c9f8d6b5-x2k4p")),
                    kv("host.name", "node-3"),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "opentelemetry.instrumentation.flask".into(),
                    version: "0.59b0".into(),
                    ..Default::default()
                }),
                spans,
                schema_url: "https://opentelemetry.io/schemas/1.11.0".into(),
            }],
            schema_url: String::new(),
        })
        .collect();
    ExportTraceServiceRequest { resource_spans }
}

/// The spans of trace `n`: a server root, a server child in the next service and client calls
/// to the database under it.
fn trace(n: u64, spans: usize, seed: u64) -> Vec<Span> {
    let kind = Kind::of_trace(n);
    let r = mix(n ^ seed);
    let mut trace_id = [0u8; 16];
    trace_id[..8].copy_from_slice(&r.to_be_bytes());
    trace_id[8..].copy_from_slice(&mix(r).to_be_bytes());
    trace_id[0] = kind.tag();
    let span_id = |i: usize| mix(r ^ (i as u64 + 1)).to_be_bytes().to_vec();
    let start = 1_760_000_000_000_000_000 + n * 1_000_000;
    let length_ms = match kind {
        Kind::Slow => 60 + r % 400,
        Kind::Error | Kind::Fast => 2 + r % 28,
    };
    let end = start + length_ms * 1_000_000;
    let route = ROUTES[(r % ROUTES.len() as u64) as usize];
    let user_id = (r >> 20) % 100_000;
    let mut out = Vec::with_capacity(spans);
    for i in 0..spans {
        let failing = kind == Kind::Error && i == spans - 1;
        let (name, span_kind, parent, attributes) = match i {
            0 => (
                format!("GET {route}"),
                SpanKind::Server,
                Vec::new(),
                vec![
                    kv("http.request.method", "GET"),
                    kv("http.route", route),
                    kv("url.path", &route.replace("{id}", &user_id.to_string())),
                    kv("url.scheme", "http"),
                    kv("server.address", "frontend.web.svc"),
                    kv("user_agent.original", "Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0"),
                    int("http.response.status_code", if kind == Kind::Error { 500 } else { 200 }),
                ],
            ),
            1 => (
                format!("POST /cart/{}", user_id % 97),
                SpanKind::Server,
                span_id(0),
                vec![
                    kv("http.request.method", "POST"),
                    kv("http.route", "/cart/{id}"),
                    kv("server.address", "cart.shop.svc"),
                    int("http.response.status_code", if kind == Kind::Error { 500 } else { 200 }),
                    kv("cart.user_id", &user_id.to_string()),
                ],
            ),
            _ => (
                "SELECT shop.cart_items".to_string(),
                SpanKind::Client,
                span_id(1),
                vec![
                    kv("db.system", "postgresql"),
                    kv("db.namespace", "shop"),
                    kv("db.operation.name", "SELECT"),
                    kv("db.query.text", "SELECT id, sku, qty FROM cart_items WHERE user_id = $1"),
                    kv("server.address", "postgres.shop.svc"),
                    int("server.port", 5432),
                ],
            ),
        };
        // Children nest inside the root's time.
        let (s, e) = if i == 0 { (start, end) } else { (start + 100_000 * i as u64, end - 100_000 * i as u64) };
        out.push(Span {
            trace_id: trace_id.to_vec(),
            span_id: span_id(i),
            parent_span_id: parent,
            flags: 0x100,
            name,
            kind: span_kind as i32,
            start_time_unix_nano: s,
            end_time_unix_nano: e.max(s + 1000),
            attributes,
            events: if failing {
                vec![Event {
                    time_unix_nano: e.saturating_sub(50_000),
                    name: "exception".into(),
                    attributes: vec![
                        kv("exception.type", "psycopg.errors.QueryCanceled"),
                        kv("exception.message", "canceling statement due to statement timeout"),
                    ],
                    dropped_attributes_count: 0,
                }]
            } else {
                Vec::new()
            },
            status: Some(if failing {
                Status { code: StatusCode::Error as i32, message: "statement timeout".into() }
            } else {
                Status { code: StatusCode::Unset as i32, message: String::new() }
            }),
            ..Default::default()
        });
    }
    out
}

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.into())) }),
        ..Default::default()
    }
}

fn int(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(any_value::Value::IntValue(value)) }),
        ..Default::default()
    }
}

/// splitmix64: IDs that look random and hash evenly.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traces_are_whole_in_one_request_with_the_mix_of_kinds() {
        let load = generate(2_000, 6, 512, 7);
        assert_eq!(load.traces(), 2_000);
        assert_eq!(load.spans(), 12_000);
        assert!(load.spans_per_request.iter().all(|&n| n <= 512 && n % 6 == 0));
        let share = |k: Kind| load.traces_by_kind[k.index()] as f64 / 2_000.0;
        assert!((share(Kind::Error) - 0.05).abs() < 0.02, "{:?}", load.traces_by_kind);
        assert!((share(Kind::Slow) - 0.25).abs() < 0.04, "{:?}", load.traces_by_kind);
        let mean = load.mean_span_bytes();
        assert!((150.0..600.0).contains(&mean), "a realistic span size, not {mean}");
    }
}
