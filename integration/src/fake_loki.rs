//! A fake Loki: `POST /loki/api/v1/push` decoding the real wire format (snappy block +
//! `logproto.PushRequest` protobuf), recording what arrived per tenant and stream. It can be told
//! to answer errors, and stopped and restarted on the same port to simulate an outage.
//!
//! With [`LokiLimits`] it pushes back as Loki does with its limits, with Loki's texts
//! (`pkg/validation`): structured metadata refused per entry (400, the others stored), the
//! active-stream limit (the known streams stored, 429 naming the first refused one), entries
//! older than `reject_old_samples_max_age` (400 "N errors: a; b", the others stored), the
//! per-stream rate limit (the entries that fit stored, 429 "entry with timestamp ... ignored,
//! reason: 'Per stream rate limit exceeded ...'" for the rest), and a request size limit (413,
//! as the proxy in front of Loki answers), and the distributor's validation limits (line size,
//! or its truncation; label count, name and value lengths; timestamps too old or too new).
//!
//! Validation refusals are answered as Loki answers them: the entries that pass are stored, and
//! the status comes from the request's last stream: 400 with its refusals when it had some, 204
//! when only earlier streams were refused (the case issue 23 saw Loki answer 204 for). Every
//! refused entry is counted by Loki's reason in [`LokiState::discarded`], as Loki's
//! `loki_discarded_samples_total{reason}`: the only place the 204 case shows.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use lgtm_pipeline::proto::{PushRequest, StreamAdapter};
use prost::Message;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// One accepted push.
#[derive(Debug, Clone)]
pub struct ReceivedPush {
    pub tenant: Option<String>,
    pub streams: Vec<StreamAdapter>,
}

/// Loki's limits the fake enforces (all off by default).
#[derive(Debug, Clone, Default)]
pub struct LokiLimits {
    /// `limits_config.allow_structured_metadata` (Loki 2.9's default: false).
    pub refuse_structured_metadata: bool,
    /// `max_global_streams_per_user` (Loki's default: 5,000).
    pub max_streams: Option<usize>,
    /// `reject_old_samples_max_age`, as the oldest accepted timestamp in Unix nanoseconds.
    pub oldest_accepted_ns: Option<i64>,
    /// Largest accepted (decompressed) request, answered 413 above.
    pub max_request_bytes: Option<usize>,
    /// `per_stream_rate_limit` and its burst, in line bytes per second (Loki: 3MB and 15MB). The
    /// ingester stores the entries that fit and answers 429 listing the others.
    pub per_stream_rate: Option<(f64, f64)>,
    /// `creation_grace_period`, as the newest accepted timestamp in Unix nanoseconds.
    pub newest_accepted_ns: Option<i64>,
    /// `max_line_size` in bytes (Loki: 256KB), and `max_line_size_truncate`.
    pub max_line_size: Option<usize>,
    pub max_line_size_truncate: bool,
    /// `max_label_names_per_series` (Loki 3: 15; `service_name` not counted),
    /// `max_label_name_length` (1024) and `max_label_value_length` (2048), in bytes.
    pub max_label_names_per_series: Option<usize>,
    pub max_label_name_length: Option<usize>,
    pub max_label_value_length: Option<usize>,
}

#[derive(Default)]
pub struct LokiState {
    pub limits: LokiLimits,
    /// Streams each tenant has (for the stream limit).
    pub active: BTreeMap<String, std::collections::BTreeSet<String>>,
    /// Answers given because of the limits, by status.
    pub refusals: BTreeMap<u16, usize>,
    /// Entries refused, by Loki's reason: `loki_discarded_samples_total{reason}`.
    pub discarded: BTreeMap<&'static str, usize>,
    /// Lines cut to `max_line_size` (`max_line_size_truncate`): `loki_mutated_samples_total`.
    pub truncated: usize,
    /// Per-stream token buckets (tokens, last refill).
    buckets: BTreeMap<String, (f64, std::time::Instant)>,
    pub pushes: Vec<ReceivedPush>,
    /// Status codes to answer to the next requests instead of accepting them.
    pub fail_next: VecDeque<u16>,
    /// Requests refused because they were not valid Loki pushes.
    pub malformed: usize,
    /// Requests answered with an injected failure.
    pub failed: usize,
}

pub struct FakeLoki {
    pub addr: SocketAddr,
    state: Arc<Mutex<LokiState>>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl FakeLoki {
    pub async fn start() -> FakeLoki {
        FakeLoki::start_with(0, Arc::new(Mutex::new(LokiState::default()))).await
    }

    async fn start_with(port: u16, state: Arc<Mutex<LokiState>>) -> FakeLoki {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("bind fake loki");
        let addr = listener.local_addr().expect("addr");
        let app = Router::new()
            .route("/loki/api/v1/push", post(push))
            // Where a URL that moved (http to https, a new path) answers with a redirect.
            .route(
                "/moved/loki/api/v1/push",
                post(|| async { redirect(StatusCode::PERMANENT_REDIRECT, "/loki/api/v1/push") }),
            )
            .route(
                "/elsewhere/loki/api/v1/push",
                post(|| async { redirect(StatusCode::FOUND, "http://loki.elsewhere.invalid/loki/api/v1/push") }),
            )
            .with_state(state.clone());
        let (tx, task) = crate::serve_until_stopped(listener, app);
        FakeLoki { addr, state, stop: Some(tx), task: Some(task) }
    }

    pub fn push_url(&self) -> String {
        format!("http://{}/loki/api/v1/push", self.addr)
    }

    /// Stops listening (connections are refused) but keeps what arrived.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }

    /// Listens again on the same port, keeping what arrived before.
    pub async fn restart(&mut self) {
        self.stop().await;
        let again = FakeLoki::start_with(self.addr.port(), self.state.clone()).await;
        *self = again;
    }

    pub fn state(&self) -> std::sync::MutexGuard<'_, LokiState> {
        self.state.lock().expect("fake loki state")
    }

    /// Every entry line per stream selector, in arrival order.
    pub fn lines_by_stream(&self) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for p in &self.state().pushes {
            for s in &p.streams {
                out.entry(s.labels.clone()).or_default().extend(s.entries.iter().map(|e| e.line.clone()));
            }
        }
        out
    }

    pub fn total_entries(&self) -> usize {
        self.state().pushes.iter().flat_map(|p| &p.streams).map(|s| s.entries.len()).sum()
    }
}

fn redirect(status: StatusCode, location: &'static str) -> (StatusCode, [(&'static str, &'static str); 1]) {
    (status, [("location", location)])
}

async fn push(State(state): State<Arc<Mutex<LokiState>>>, headers: HeaderMap, body: Bytes) -> (StatusCode, String) {
    let mut st = state.lock().expect("fake loki state");
    if let Some(code) = st.fail_next.pop_front() {
        st.failed += 1;
        return (StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), "injected failure".into());
    }
    let ct = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
    if ct != "application/x-protobuf" {
        st.malformed += 1;
        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, format!("unexpected content-type {ct:?}"));
    }
    let raw = match snap::raw::Decoder::new().decompress_vec(&body) {
        Ok(r) => r,
        Err(e) => {
            st.malformed += 1;
            return (StatusCode::BAD_REQUEST, format!("snappy: {e}"));
        }
    };
    let req = match PushRequest::decode(raw.as_slice()) {
        Ok(r) => r,
        Err(e) => {
            st.malformed += 1;
            return (StatusCode::BAD_REQUEST, format!("protobuf: {e}"));
        }
    };
    let tenant = headers.get("x-scope-orgid").and_then(|v| v.to_str().ok()).map(str::to_string);
    let limits = st.limits.clone();
    if limits.max_request_bytes.is_some_and(|max| raw.len() > max) {
        *st.refusals.entry(413).or_default() += 1;
        return (StatusCode::PAYLOAD_TOO_LARGE, "413 Request Entity Too Large".into());
    }
    // Validation, per stream then per entry: what fails is refused and listed, the rest goes on.
    // Only the last stream's refusals make the answer (see the module's doc).
    let mut errors: Vec<String> = Vec::new();
    let mut streams = req.streams;
    streams.retain(|s| !s.entries.is_empty());
    let mut discarded: Vec<(&'static str, usize)> = Vec::new();
    let mut truncated = 0;
    for s in &mut streams {
        errors.clear();
        if let Some((reason, text)) = refused_labels(&limits, &s.labels) {
            discarded.push((reason, s.entries.len()));
            errors.push(text);
            s.entries.clear();
            continue;
        }
        s.entries.retain_mut(|e| {
            if let Some(max) = limits.max_line_size.filter(|_| limits.max_line_size_truncate) {
                if e.line.len() > max {
                    let mut cut = max;
                    while !e.line.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    e.line.truncate(cut);
                    truncated += 1;
                }
            }
            let ts = e.timestamp.map_or(0, |t| t.seconds * 1_000_000_000 + i64::from(t.nanos));
            let refused = if limits.oldest_accepted_ns.is_some_and(|oldest| ts < oldest) {
                Some(("greater_than_max_sample_age", format!("entry for stream '{}' has timestamp too old: {ts}, oldest acceptable timestamp is: {}", s.labels, limits.oldest_accepted_ns.unwrap_or(0))))
            } else if limits.newest_accepted_ns.is_some_and(|newest| ts > newest) {
                Some(("too_far_in_future", format!("entry for stream '{}' has timestamp too new: {ts}", s.labels)))
            } else if limits.max_line_size.is_some_and(|max| e.line.len() > max) {
                Some(("line_too_long", format!("Max entry size '{}' bytes exceeded for stream '{}' while adding an entry with length '{}' bytes", limits.max_line_size.unwrap_or(0), s.labels, e.line.len())))
            } else if limits.refuse_structured_metadata && !e.structured_metadata.is_empty() {
                Some(("disallowed_structured_metadata", format!("stream '{}' includes structured metadata, but this feature is disallowed. Please see `limits_config.allow_structured_metadata` or contact your Loki administrator to enable it.", s.labels)))
            } else {
                None
            };
            match refused {
                Some((reason, text)) => {
                    discarded.push((reason, 1));
                    errors.push(text);
                    false
                }
                None => true,
            }
        });
    }
    for (reason, n) in discarded {
        *st.discarded.entry(reason).or_default() += n;
    }
    st.truncated += truncated;
    streams.retain(|s| !s.entries.is_empty());
    // The ingester: streams it has or may create are stored; the first refused one is named.
    let mut stream_limited: Option<String> = None;
    let mut discarded_streams: BTreeMap<&'static str, usize> = BTreeMap::new();
    if let Some(max) = limits.max_streams {
        let active = st.active.entry(tenant.clone().unwrap_or_default()).or_default();
        streams.retain(|s| {
            if active.contains(&s.labels) {
                return true;
            }
            if active.len() < max {
                active.insert(s.labels.clone());
                return true;
            }
            stream_limited.get_or_insert_with(|| s.labels.clone());
            *discarded_streams.entry("stream_limit").or_default() += s.entries.len();
            false
        });
    }
    for (reason, n) in discarded_streams {
        *st.discarded.entry(reason).or_default() += n;
    }
    // The ingester's per-stream rate limit: entries that fit are stored, the others refused.
    let mut rate_limited: Vec<String> = Vec::new();
    if let Some((rate, burst)) = limits.per_stream_rate {
        let now = std::time::Instant::now();
        for s in &mut streams {
            let key = format!("{}/{}", tenant.clone().unwrap_or_default(), s.labels);
            let (tokens, at) = st.buckets.entry(key).or_insert((burst, now));
            *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * rate).min(burst);
            *at = now;
            let total = s.entries.len();
            let mut failed = Vec::new();
            s.entries.retain(|e| {
                let len = e.line.len() as f64;
                if len <= *tokens {
                    *tokens -= len;
                    true
                } else {
                    failed.push(e.timestamp.map_or(0, |t| t.seconds * 1_000_000_000 + i64::from(t.nanos)));
                    false
                }
            });
            if !failed.is_empty() {
                *st.discarded.entry("per_stream_rate_limit").or_default() += failed.len();
                let mut text = String::new();
                for ts in failed.iter().take(10) {
                    text.push_str(&format!("entry with timestamp {ts} ignored, reason: 'Per stream rate limit exceeded (limit: {rate}B/sec) while attempting to ingest for stream '{}' totaling {}B, consider splitting a stream via additional labels or contact your Loki administrator to see if the limit can be increased',\n", s.labels, s.entries.iter().map(|e| e.line.len()).sum::<usize>()));
                }
                text.push_str(&format!(
                    "user '{}', total ignored: {} out of {total} for stream: {}",
                    tenant.clone().unwrap_or_default(),
                    failed.len(),
                    s.labels
                ));
                rate_limited.push(text);
            }
        }
        streams.retain(|s| !s.entries.is_empty());
    }
    if !streams.is_empty() {
        st.pushes.push(ReceivedPush { tenant: tenant.clone(), streams });
    }
    if let Some(text) = rate_limited.pop() {
        *st.refusals.entry(429).or_default() += 1;
        return (StatusCode::TOO_MANY_REQUESTS, text);
    }
    if !errors.is_empty() {
        *st.refusals.entry(400).or_default() += 1;
        let body = if errors.len() == 1 {
            errors.remove(0)
        } else {
            format!("{} errors: {}", errors.len(), errors.join("; "))
        };
        return (StatusCode::BAD_REQUEST, body);
    }
    if let Some(labels) = stream_limited {
        *st.refusals.entry(429).or_default() += 1;
        let user = tenant.unwrap_or_default();
        return (
            StatusCode::TOO_MANY_REQUESTS,
            format!("Maximum active stream limit exceeded when trying to create stream {labels}, reduce the number of active streams (reduce labels or reduce label values), or contact your Loki administrator to see if the limit can be increased, user: '{user}'"),
        );
    }
    (StatusCode::NO_CONTENT, String::new())
}

/// Loki's refusal of a stream for its labels (`ValidateLabels`), with its reason and text.
fn refused_labels(limits: &LokiLimits, selector: &str) -> Option<(&'static str, String)> {
    let labels = parse_selector(selector)?;
    let names = labels.iter().filter(|(n, _)| n != "service_name").count();
    if limits.max_label_names_per_series.is_some_and(|max| names > max) {
        let max = limits.max_label_names_per_series.unwrap_or(0);
        return Some((
            "max_label_names_per_series",
            format!("entry for stream '{selector}' has {names} label names; limit {max}"),
        ));
    }
    for (name, value) in &labels {
        if limits.max_label_name_length.is_some_and(|max| name.len() > max) {
            return Some(("label_name_too_long", format!("stream '{selector}' has label name too long: '{name}'")));
        }
        if limits.max_label_value_length.is_some_and(|max| value.len() > max) {
            return Some(("label_value_too_long", format!("stream '{selector}' has label value too long: '{value}'")));
        }
    }
    None
}

/// `{a="x", b="y"}` as names and unescaped values (a stand-in's own reading, as Loki parses them).
fn parse_selector(selector: &str) -> Option<Vec<(String, String)>> {
    let mut rest = selector.trim().strip_prefix('{')?.strip_suffix('}')?.chars().peekable();
    let mut out = Vec::new();
    loop {
        while rest.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            rest.next();
        }
        if rest.peek().is_none() {
            return Some(out);
        }
        let name: String = rest.by_ref().take_while(|c| *c != '=').collect();
        while rest.peek().is_some_and(|c| c.is_whitespace()) {
            rest.next();
        }
        if rest.next() != Some('"') {
            return None;
        }
        let mut value = String::new();
        loop {
            match rest.next()? {
                '"' => break,
                '\\' => match rest.next()? {
                    'n' => value.push('\n'),
                    't' => value.push('\t'),
                    c => value.push(c),
                },
                c => value.push(c),
            }
        }
        out.push((name.trim().to_string(), value));
    }
}
