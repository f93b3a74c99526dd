//! OTLP/gRPC `TraceService/Export` to Tempo: each batch of queued `ExportTraceServiceRequest`s is
//! sent as one request, with the tenant as `x-scope-orgid` metadata and, by default,
//! gzip-compressed at `compression_level`: compressed once by the exporter, straight from the
//! records, and sent as it is on every attempt ([`grpc_call`]).
//!
//! The records are not decoded: each holds only field 1 (`resource_spans`, repeated) and fields
//! prost would skip, so their encodings one after the other are the encoding of the request that
//! holds all their resource spans. The sinks queue only checked or prost-encoded requests and the
//! disk queue checksums what it reads back, so a record's outer framing is all that is checked
//! ([`trace_wire::check_framing`]): a damaged one is rejected on its own rather than failing the
//! batch.
//!
//! No request is larger than `batch.max_bytes` where a span allows it: records are cut by
//! `ResourceSpans` and spans ([`trace_split`]).
//!
//! UNAVAILABLE, RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED and ABORTED are retried, except
//! RESOURCE_EXHAUSTED "... larger than max" (the message is over the server's receive limit, which
//! no retry changes): that request is cut in halves and those are sent, down to a single span,
//! dropped and counted (`reason="too_large"`). Any other status rejects the batch. A partial success (some spans refused) counts the refused spans as failed and
//! completes the records: resending would duplicate the spans that were taken.

use std::collections::VecDeque;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use lgtm_config::{Compression, ExporterConfig};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTracePartialSuccess, ExportTraceServiceResponse};
use tokio_util::sync::CancellationToken;
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue, MetadataMap};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};
use tonic_prost::ProstDecoder;

use super::credentials::{redact, Credentials};
use super::grpc_call::{self, GzipPool};
use super::outcome::{release, Reporter};
use super::retry::{set_up_until_stopped, Attempt, Decision, Retrier};
use super::trace_split::{self, Piece};
use crate::ack::Delivery;
use crate::queue::{DurableQueue, Record};
use crate::tls::{self, TlsError, TlsFiles};
use crate::trace_wire::{self, EncodedAttribute};

const EXPORTER: &str = "tempo";

/// The `reason` of a request (and in the end a span) larger than the backend's maximum.
const TOO_LARGE: &str = "too_large";

/// Largest answer accepted from the backend (answers are tiny; this only bounds a broken peer).
const MAX_RESPONSE_BYTES: usize = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("no endpoint configured")]
    NoEndpoint,
    #[error("endpoint {endpoint:?}: {source}")]
    Endpoint { endpoint: String, source: tonic::transport::Error },
    #[error("header {0:?}: not valid gRPC metadata")]
    Header(String),
    #[error(transparent)]
    Tls(#[from] TlsError),
}

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// What every request carries besides the spans.
struct Client {
    channel: Channel,
    metadata: MetadataMap,
    credentials: Credentials,
    /// The gzip level, `None` for no compression.
    gzip_level: Option<u32>,
    /// `k8s.cluster.name`, added to every resource that lacks it as requests are framed.
    cluster: EncodedAttribute,
}

/// Connects, then sends with `shards` senders (requests in flight), each taking its own
/// batches from the queue: spans of different requests have no order to keep, and one request
/// at a time left the exporter waiting on every answer (a client saw the agent at 0.8x
/// rotel-agent's spans per second and 0.3x the Collector's).
pub async fn run(cfg: ExporterConfig, tenant: String, cluster: String, queue: DurableQueue, stop: CancellationToken) {
    let Some(client) = connect_until_stopped(&cfg, &tenant, &cluster, &stop).await else { return };
    let client = Arc::new(client);
    // One compressor per request being compressed at once (at most one per runtime thread),
    // shared by the senders, rather than one per sender (320 KiB each).
    let gzip = Arc::new(client.gzip_level.map(GzipPool::new));
    let retrier = Retrier::new(EXPORTER, &cfg.retry, stop.clone());
    let reporter = Reporter::new(EXPORTER);
    let limits = BatchLimits {
        max_bytes: (cfg.batch.max_bytes.bytes() as usize).max(1),
        max_items: cfg.batch.max_items,
        max_wait: cfg.batch.max_wait.get(),
    };
    let mut senders = tokio::task::JoinSet::new();
    for _ in 0..cfg.shards.max(1) {
        let (client, gzip, retrier, reporter, queue, stop) =
            (client.clone(), gzip.clone(), retrier.clone(), reporter.clone(), queue.clone(), stop.clone());
        senders.spawn(async move {
            sender(limits, &client, gzip.as_ref().as_ref(), &retrier, &reporter, &queue, &stop).await
        });
    }
    while senders.join_next().await.is_some() {}
}

/// A request's bounds, from the exporter's `batch` settings.
#[derive(Debug, Clone, Copy)]
struct BatchLimits {
    max_bytes: usize,
    max_items: usize,
    max_wait: Duration,
}

/// One sender: batches from the queue, sent and completed one after the other, until stopped.
async fn sender(
    limits: BatchLimits,
    client: &Client,
    gzip: Option<&GzipPool>,
    retrier: &Retrier,
    reporter: &Reporter,
    queue: &DurableQueue,
    stop: &CancellationToken,
) {
    loop {
        let batch = tokio::select! {
            b = queue.next(limits.max_bytes, limits.max_items, limits.max_wait) => b,
            _ = stop.cancelled() => None,
        };
        let Some(records) = batch else { break };
        if stop.is_cancelled() {
            release(queue, &records);
            break;
        }
        let records = check(records, queue, reporter);
        if records.is_empty() {
            continue;
        }
        if !send(&records, limits.max_bytes, client, gzip, retrier, reporter, queue).await {
            break;
        }
    }
}

/// Sends `records` in requests of at most `max_bytes` (see [`trace_split`]) one after the other,
/// and completes them. A request the backend finds larger than its maximum is cut in halves and
/// those sent, down to a single span, which is dropped and counted (`too_large`). Returns `false`
/// (records handed back to the queue) when stopped.
async fn send(
    records: &[Record],
    max_bytes: usize,
    client: &Client,
    gzip: Option<&GzipPool>,
    retrier: &Retrier,
    reporter: &Reporter,
    queue: &DurableQueue,
) -> bool {
    let pieces = records
        .iter()
        .enumerate()
        .flat_map(|(i, r)| trace_split::pieces_of(i, &r.payload, r.items as u64, max_bytes, Some(&client.cluster)))
        .collect();
    let mut work: VecDeque<Vec<Piece>> = trace_split::group(pieces, max_bytes).into();
    let mut refused: Vec<Option<String>> = vec![None; records.len()];
    while let Some(request) = work.pop_front() {
        let spans: u64 = request.iter().map(|p| p.spans).sum();
        let from: Vec<usize> = request.iter().map(|p| p.record).collect();
        let parts: Vec<&Bytes> = request.iter().flat_map(|p| &p.parts).collect();
        // Framed and compressed once: every attempt sends these bytes.
        let message = grpc_call::message(&parts, gzip);
        drop(parts);
        match retrier.run(|| client.export(message.clone())).await {
            None => {
                release(queue, records);
                return false;
            }
            Some(Decision::Delivered(partial)) => {
                let (rejected, message) = partial.map_or((0, String::new()), |p| (p.rejected_spans, p.error_message));
                let rejected = (rejected.max(0) as u64).min(spans);
                if rejected > 0 {
                    reporter.partially_rejected(rejected, &message);
                }
                reporter.delivered(spans - rejected);
            }
            Some(Decision::Rejected { reason, message }) if reason == TOO_LARGE => {
                match trace_split::halve(request, Some(&client.cluster)) {
                    Some((first, second)) => {
                        work.push_front(second);
                        work.push_front(first);
                    }
                    None => {
                        // What is left is a single span (or what cannot be cut): dropped and counted.
                        reporter.rejected(spans, &reason, &message);
                        for i in from {
                            refused[i] = Some(message.clone());
                        }
                    }
                }
            }
            Some(Decision::Rejected { reason, message }) => {
                reporter.rejected(spans, &reason, &message);
                for i in from {
                    refused[i] = Some(message.clone());
                }
            }
        }
    }
    for (r, refused) in records.iter().zip(refused) {
        queue.complete(r.seq, refused.map_or(Delivery::Accepted, Delivery::Rejected));
    }
    true
}

/// Checks the framing of every record; a record that is not a valid `ExportTraceServiceRequest`
/// is rejected on its own. Returns the others.
fn check(records: Vec<Record>, queue: &DurableQueue, reporter: &Reporter) -> Vec<Record> {
    let mut kept = Vec::with_capacity(records.len());
    for r in records {
        match trace_wire::check_framing(&r.payload) {
            Ok(_) => kept.push(r),
            Err(e) => {
                let message = format!("queued record is not an ExportTraceServiceRequest: {e}");
                reporter.rejected(r.items as u64, "decode", &message);
                queue.complete(r.seq, Delivery::Rejected(message));
            }
        }
    }
    kept
}

impl Client {
    /// `message`: framed by [`grpc_call::message`], compressed if `gzip_level` says so.
    async fn export(&self, message: Bytes) -> Attempt<Option<ExportTracePartialSuccess>> {
        let mut metadata = self.metadata.clone();
        let authorization = self.credentials.authorization().await;
        match &authorization {
            Ok(None) => {}
            Ok(Some(auth)) => match AsciiMetadataValue::from_str(auth) {
                Ok(v) => {
                    metadata.insert("authorization", v);
                }
                Err(_) => {
                    return Attempt::Retry {
                        reason: "credentials".into(),
                        detail: "the credentials contain characters not allowed in metadata".into(),
                        retry_after: None,
                    }
                }
            },
            Err(e) => return Attempt::Retry { reason: "credentials".into(), detail: e.to_string(), retry_after: None },
        }
        let answer = grpc_call::unary(
            &self.channel,
            EXPORT_PATH,
            metadata.into_headers(),
            message,
            self.gzip_level.is_some(),
            ProstDecoder::<ExportTraceServiceResponse>::default(),
            MAX_RESPONSE_BYTES,
        )
        .await;
        match answer {
            Ok(resp) => Attempt::Delivered(resp.partial_success),
            Err(status) => classify(&status, authorization.ok().flatten().as_deref()),
        }
    }
}

/// `authorization`: what was sent, redacted from the status message.
fn classify<T>(status: &Status, authorization: Option<&str>) -> Attempt<T> {
    let detail = redact(format!("{:?}: {}", status.code(), status.message()), authorization);
    // A status made on this side from a transport failure (connection reset, the request timeout,
    // which tonic reports as CANCELLED) carries its cause; an answer from the backend does not.
    if std::error::Error::source(status).is_some() {
        let reason = if status.code() == Code::Cancelled { "timeout" } else { "transport" };
        return Attempt::Retry { reason: reason.into(), detail, retry_after: None };
    }
    // grpc-go's answer to a message over the server's receive limit (Tempo: 4 MiB by default):
    // the same bytes will never pass, so it is not retried; the exporter cuts the request.
    if status.code() == Code::ResourceExhausted && status.message().contains("larger than max") {
        return Attempt::Reject { reason: TOO_LARGE.into(), message: detail };
    }
    let reason = format!("grpc_{}", code_name(status.code()));
    match status.code() {
        Code::Unavailable | Code::ResourceExhausted | Code::DeadlineExceeded | Code::Aborted => {
            Attempt::Retry { reason, detail, retry_after: None }
        }
        _ => Attempt::Reject { reason, message: detail },
    }
}

/// `Code` in snake case, for the `reason` label.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

async fn connect_until_stopped(
    cfg: &ExporterConfig,
    tenant: &str,
    cluster: &str,
    stop: &CancellationToken,
) -> Option<Client> {
    let max_backoff = cfg.retry.max_backoff.get();
    let is_unconfigured = |e: &SetupError| matches!(e, SetupError::NoEndpoint);
    set_up_until_stopped(EXPORTER, max_backoff, stop, is_unconfigured, || connect(cfg, tenant, cluster)).await
}

/// [`connect`] once, for the agent's start-up check (`super::check_setup`).
pub(crate) async fn check_setup(cfg: &ExporterConfig, tenant: &str) -> Result<(), SetupError> {
    connect(cfg, tenant, "").await.map(|_| ())
}

/// The channel connects lazily: an unreachable backend shows up as UNAVAILABLE on the first
/// export, which is retried like any other.
async fn connect(cfg: &ExporterConfig, tenant: &str, cluster: &str) -> Result<Client, SetupError> {
    let raw = cfg.url.as_deref().filter(|u| !u.is_empty()).ok_or(SetupError::NoEndpoint)?;
    let tls_configured = cfg.tls.ca_file.is_some() || cfg.tls.cert_file.is_some();
    let endpoint_text = if raw.contains("://") {
        raw.to_string()
    } else if tls_configured {
        format!("https://{raw}")
    } else {
        format!("http://{raw}")
    };
    let endpoint_error = |source| SetupError::Endpoint { endpoint: lgtm_config::redact_url(raw), source };
    let timeout = cfg.timeout.get();
    let endpoint = Endpoint::from_shared(endpoint_text.clone())
        .map_err(endpoint_error)?
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        .user_agent(super::http::USER_AGENT)
        .map_err(endpoint_error)?;
    // TLS (for `https://`) comes from the process's one rustls configuration, as for the HTTP
    // exporters: the same roots, `server_name`, client certificate and `insecure_skip_verify`.
    if cfg.tls.insecure_skip_verify {
        tracing::warn!(exporter = EXPORTER, "tls.insecure_skip_verify is on: the server certificate is not checked");
    }
    let rustls = tls::client_config(&cfg.tls, &TlsFiles::read(&cfg.tls).await?)?;
    let connector = tls::grpc_connector(rustls, cfg.tls.server_name.as_deref())?;
    let channel = endpoint.connect_with_connector_lazy(connector);
    let gzip_level = (cfg.compression == Compression::Gzip).then_some(cfg.compression_level);

    let mut metadata = MetadataMap::new();
    for (name, value) in &cfg.headers {
        let key =
            AsciiMetadataKey::from_str(&name.to_ascii_lowercase()).map_err(|_| SetupError::Header(name.clone()))?;
        let value = AsciiMetadataValue::from_str(value).map_err(|_| SetupError::Header(name.clone()))?;
        metadata.insert(key, value);
    }
    if !tenant.is_empty() {
        let value = AsciiMetadataValue::from_str(tenant).map_err(|_| SetupError::Header("x-scope-orgid".into()))?;
        metadata.insert("x-scope-orgid", value);
    }
    Ok(Client {
        channel,
        metadata,
        credentials: Credentials::from_config(cfg),
        gzip_level,
        cluster: EncodedAttribute::string(trace_wire::CLUSTER_ATTRIBUTE, cluster),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value;
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use prost::Message;
    use tonic::codec::CompressionEncoding;
    use tonic::transport::server::TcpIncoming;

    use super::*;
    use crate::exporter::testing::{fast_config, push_and_run, Pki};
    use crate::metrics;

    /// A Tempo stand-in: records requests and answers from a script, then OK. In the script,
    /// `Ok(n)` is a partial success refusing `n` spans, `Err(Code::Ok)` an answer that takes
    /// two seconds, `Err(code)` that status.
    #[derive(Clone, Default)]
    struct Backend {
        script: Arc<Mutex<std::collections::VecDeque<Result<i64, Code>>>>,
        seen: Arc<Mutex<Vec<(MetadataMap, ExportTraceServiceRequest)>>>,
        /// Refuses larger requests as grpc-go does (Tempo's distributor).
        max_message: Option<usize>,
        /// Holds every answer this long, counting the requests it holds at once.
        hold: Option<std::time::Duration>,
        in_flight: Arc<std::sync::atomic::AtomicUsize>,
        most_in_flight: Arc<std::sync::atomic::AtomicUsize>,
    }

    #[tonic::async_trait]
    impl TraceService for Backend {
        async fn export(
            &self,
            request: tonic::Request<ExportTraceServiceRequest>,
        ) -> Result<tonic::Response<ExportTraceServiceResponse>, Status> {
            let (metadata, _, body) = request.into_parts();
            if let Some(max) = self.max_message.filter(|max| body.encoded_len() > *max) {
                let len = body.encoded_len();
                return Err(Status::resource_exhausted(format!(
                    "grpc: received message after decompression larger than max ({len} vs. {max})"
                )));
            }
            self.seen.lock().unwrap().push((metadata, body));
            if let Some(hold) = self.hold {
                use std::sync::atomic::Ordering::SeqCst;
                let now = self.in_flight.fetch_add(1, SeqCst) + 1;
                self.most_in_flight.fetch_max(now, SeqCst);
                tokio::time::sleep(hold).await;
                self.in_flight.fetch_sub(1, SeqCst);
            }
            let next = self.script.lock().unwrap().pop_front();
            match next {
                Some(Err(Code::Ok)) => {
                    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                    Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
                }
                Some(Err(code)) => Err(Status::new(code, "scripted failure")),
                Some(Ok(rejected)) => Ok(tonic::Response::new(ExportTraceServiceResponse {
                    partial_success: Some(ExportTracePartialSuccess {
                        rejected_spans: rejected,
                        error_message: "span too old".into(),
                    }),
                })),
                None => Ok(tonic::Response::new(ExportTraceServiceResponse::default())),
            }
        }
    }

    impl Backend {
        fn scripted(script: Vec<Result<i64, Code>>) -> Backend {
            Backend { script: Arc::new(Mutex::new(script.into())), ..Default::default() }
        }

        /// Serves on 127.0.0.1, over TLS with `tls`; returns the port.
        async fn serve(&self, tls: Option<rustls::ServerConfig>) -> u16 {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let service = TraceServiceServer::new(self.clone()).accept_compressed(CompressionEncoding::Gzip);
            let Some(mut tls) = tls else {
                let incoming = TcpIncoming::from(listener);
                let server = tonic::transport::Server::builder().add_service(service);
                tokio::spawn(async move {
                    let _ = server.serve_with_incoming(incoming).await;
                });
                return port;
            };
            // tonic's TLS is not compiled in: rustls in front of hyper's HTTP/2 server.
            tls.alpn_protocols = vec![b"h2".to_vec()];
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
            tokio::spawn(async move {
                while let Ok((tcp, _)) = listener.accept().await {
                    let (acceptor, service) = (acceptor.clone(), service.clone());
                    tokio::spawn(async move {
                        let Ok(stream) = acceptor.accept(tcp).await else { return };
                        let _ = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                            .http2_only()
                            .serve_connection(
                                hyper_util::rt::TokioIo::new(stream),
                                hyper_util::service::TowerToHyperService::new(service),
                            )
                            .await;
                    });
                }
            });
            port
        }

        fn seen(&self) -> Vec<(MetadataMap, ExportTraceServiceRequest)> {
            self.seen.lock().unwrap().clone()
        }
    }

    /// The exporter of an agent whose `cluster` is `test-cluster`.
    async fn run_in_cluster(cfg: ExporterConfig, tenant: String, queue: DurableQueue, stop: CancellationToken) {
        run(cfg, tenant, "test-cluster".into(), queue, stop).await
    }

    /// The `k8s.cluster.name` values of each resource of `req`.
    fn clusters(req: &ExportTraceServiceRequest) -> Vec<Vec<String>> {
        req.resource_spans
            .iter()
            .map(|rs| {
                let attributes = rs.resource.as_ref().map(|r| &r.attributes[..]).unwrap_or_default();
                attributes
                    .iter()
                    .filter(|kv| kv.key == trace_wire::CLUSTER_ATTRIBUTE)
                    .map(|kv| match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                        Some(any_value::Value::StringValue(s)) => s.clone(),
                        other => format!("{other:?}"),
                    })
                    .collect()
            })
            .collect()
    }

    fn spans(service: &str, names: &[&str]) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: None,
                scope_spans: vec![ScopeSpans {
                    spans: names
                        .iter()
                        .enumerate()
                        .map(|(i, n)| Span {
                            trace_id: vec![1; 16],
                            span_id: vec![i as u8 + 1; 8],
                            name: format!("{service}/{n}"),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    fn span_names(req: &ExportTraceServiceRequest) -> Vec<String> {
        req.resource_spans
            .iter()
            .flat_map(|rs| rs.scope_spans.iter().flat_map(|ss| ss.spans.iter().map(|s| s.name.clone())))
            .collect()
    }

    #[tokio::test]
    async fn export_carries_tenant_headers_gzip_and_the_spans() {
        let backend = Backend::default();
        let port = backend.serve(None).await;
        let mut cfg = fast_config(&format!("http://127.0.0.1:{port}"));
        cfg.headers.insert("X-Extra".into(), "yes".into());
        // The second record's client set its own cluster: kept, not added twice.
        let mut theirs = spans("b", &["three"]);
        theirs.resource_spans[0].resource = Some(Resource {
            attributes: vec![trace_wire::string_attribute(trace_wire::CLUSTER_ATTRIBUTE, "theirs")],
            ..Default::default()
        });
        let records = vec![spans("a", &["one", "two"]).encode_to_vec(), theirs.encode_to_vec()];
        let acks = push_and_run(run_in_cluster, cfg, "tenant-t", records, 1).await;
        assert!(acks.iter().all(|a| *a == Some(Delivery::Accepted)), "{acks:?}");

        let seen = backend.seen();
        let (mut names, mut cluster) = (Vec::new(), Vec::new());
        for (metadata, req) in &seen {
            assert_eq!(metadata.get("x-scope-orgid").unwrap(), "tenant-t");
            assert_eq!(metadata.get("x-extra").unwrap(), "yes");
            assert_eq!(metadata.get("grpc-encoding").unwrap(), "gzip");
            names.extend(span_names(req));
            cluster.extend(clusters(req));
        }
        assert_eq!(names, vec!["a/one", "a/two", "b/three"]);
        // Added by the exporter where the client had none: the queue holds requests as received.
        assert_eq!(cluster, vec![vec!["test-cluster".to_string()], vec!["theirs".to_string()]]);
    }

    #[tokio::test]
    async fn basic_auth_is_sent_as_authorization_metadata() {
        let backend = Backend::default();
        let port = backend.serve(None).await;
        let mut cfg = fast_config(&format!("http://127.0.0.1:{port}"));
        cfg.basic_auth =
            Some(lgtm_config::BasicAuth { username: "u".into(), password: Some("p".into()), password_file: None });
        let acks = push_and_run(run_in_cluster, cfg, "t", vec![spans("a", &["x"]).encode_to_vec()], 1).await;
        assert_eq!(acks, vec![Some(Delivery::Accepted)]);
        let seen = backend.seen();
        assert_eq!(seen[0].0.get("authorization").unwrap(), "Basic dTpw");
        assert_eq!(seen[0].0.get("x-scope-orgid").unwrap(), "t");
    }

    #[tokio::test]
    async fn compression_none_and_every_level_reach_the_backend() {
        for (compression, level) in [(Compression::None, 1), (Compression::Gzip, 1), (Compression::Gzip, 9)] {
            let backend = Backend::default();
            let port = backend.serve(None).await;
            let mut cfg = fast_config(&format!("http://127.0.0.1:{port}"));
            (cfg.compression, cfg.compression_level) = (compression, level);
            let records = vec![spans("a", &["one", "two"]).encode_to_vec(), spans("b", &["three"]).encode_to_vec()];
            let acks = push_and_run(run_in_cluster, cfg, "t", records, 1).await;
            assert!(acks.iter().all(|a| *a == Some(Delivery::Accepted)), "{acks:?}");
            let seen = backend.seen();
            let names: Vec<String> = seen.iter().flat_map(|(_, r)| span_names(r)).collect();
            assert_eq!(names, vec!["a/one", "a/two", "b/three"], "{compression:?} {level}");
            let encoding = seen[0].0.get("grpc-encoding").map(|v| v.to_str().unwrap().to_string());
            let expected = (compression == Compression::Gzip).then(|| "gzip".to_string());
            assert_eq!(encoding, expected);
        }
    }

    #[tokio::test]
    async fn shards_send_that_many_requests_at_once_and_every_span_once() {
        for shards in [1, 4] {
            let backend = Backend { hold: Some(Duration::from_millis(300)), ..Default::default() };
            let port = backend.serve(None).await;
            let mut cfg = fast_config(&format!("http://127.0.0.1:{port}"));
            cfg.shards = shards;
            cfg.batch.max_items = 1;
            let names: Vec<String> = (0..8).map(|i| format!("s{i}")).collect();
            let records = names.iter().map(|n| spans("a", &[n.as_str()]).encode_to_vec()).collect();
            let acks = push_and_run(run_in_cluster, cfg, "t", records, 1).await;
            assert!(acks.iter().all(|a| *a == Some(Delivery::Accepted)), "{acks:?}");
            let mut got: Vec<String> = backend.seen().iter().flat_map(|(_, r)| span_names(r)).collect();
            got.sort();
            let expected: Vec<String> = names.iter().map(|n| format!("a/{n}")).collect();
            assert_eq!(got, expected, "every span once with {shards} shards");
            let most = backend.most_in_flight.load(std::sync::atomic::Ordering::SeqCst);
            assert_eq!(most, shards, "requests in flight at most, with {shards} shards");
        }
    }

    #[tokio::test]
    async fn unavailable_is_retried_and_invalid_argument_is_not() {
        let backend = Backend::scripted(vec![Err(Code::Unavailable), Err(Code::ResourceExhausted)]);
        let port = backend.serve(None).await;
        let cfg = fast_config(&format!("http://127.0.0.1:{port}"));
        let acks = push_and_run(run_in_cluster, cfg, "t", vec![spans("a", &["x"]).encode_to_vec()], 1).await;
        assert_eq!(acks, vec![Some(Delivery::Accepted)]);
        assert_eq!(backend.seen().len(), 3);

        let backend = Backend::scripted(vec![Err(Code::InvalidArgument)]);
        let port = backend.serve(None).await;
        let cfg = fast_config(&format!("http://127.0.0.1:{port}"));
        let acks = push_and_run(run_in_cluster, cfg, "t", vec![spans("a", &["x"]).encode_to_vec()], 1).await;
        assert!(matches!(&acks[0], Some(Delivery::Rejected(m)) if m.contains("scripted failure")), "{acks:?}");
        assert_eq!(backend.seen().len(), 1);
    }

    #[tokio::test]
    async fn request_timeout_is_retried() {
        let backend = Backend::scripted(vec![Err(Code::Ok)]);
        let port = backend.serve(None).await;
        let mut cfg = fast_config(&format!("http://127.0.0.1:{port}"));
        cfg.timeout = lgtm_config::Duration::from_millis(200);
        let acks = push_and_run(run_in_cluster, cfg, "t", vec![spans("a", &["x"]).encode_to_vec()], 1).await;
        assert_eq!(acks, vec![Some(Delivery::Accepted)]);
        assert_eq!(backend.seen().len(), 2, "the first attempt timed out and was sent again");
    }

    #[tokio::test]
    async fn partial_success_counts_refused_spans_and_completes() {
        let backend = Backend::scripted(vec![Ok(2)]);
        let port = backend.serve(None).await;
        let cfg = fast_config(&format!("http://127.0.0.1:{port}"));
        let failed = || metrics::pipeline().failed.with_label_values(&[EXPORTER, "partial_success"]).get();
        let before = failed();
        let acks = push_and_run(run_in_cluster, cfg, "t", vec![spans("a", &["x", "y", "z"]).encode_to_vec()], 3).await;
        assert_eq!(acks, vec![Some(Delivery::Accepted)]);
        assert_eq!(backend.seen().len(), 1);
        assert!(failed() >= before + 2);
    }

    #[tokio::test]
    async fn requests_stay_under_max_bytes_and_larger_than_max_is_cut_down_to_a_span() {
        // The backend takes at most 3,000 bytes; the exporter's bound is 20,000. Each record is
        // about 12 KB of ~600-byte spans, one of which is 5,000 bytes: it alone cannot pass.
        let backend = Backend { max_message: Some(3_000), ..Default::default() };
        let port = backend.serve(None).await;
        let mut cfg = fast_config(&format!("http://127.0.0.1:{port}"));
        cfg.batch.max_bytes = lgtm_config::ByteSize::from_bytes(20_000);
        let long = "y".repeat(600);
        let names: Vec<String> = (0..20).map(|i| format!("{i}-{long}")).collect();
        let mut names: Vec<&str> = names.iter().map(String::as_str).collect();
        let huge = format!("huge-{}", "z".repeat(5_000));
        names.push(&huge);
        let records = vec![spans("a", &names).encode_to_vec(), spans("b", &names[..20]).encode_to_vec()];
        let too_large = || metrics::pipeline().failed.with_label_values(&[EXPORTER, "too_large"]).get();
        let before = too_large();
        let acks = push_and_run(run_in_cluster, cfg, "t", records, 21).await;
        assert!(matches!(&acks[0], Some(Delivery::Rejected(m)) if m.contains("larger than max")), "{acks:?}");
        assert_eq!(acks[1], Some(Delivery::Accepted));
        let mut got: Vec<String> = backend.seen().iter().flat_map(|(_, r)| span_names(r)).collect();
        got.sort();
        let mut expected: Vec<String> = names[..20].iter().flat_map(|n| [format!("a/{n}"), format!("b/{n}")]).collect();
        expected.sort();
        assert_eq!(got, expected, "every span but the huge one, once");
        assert!(too_large() > before);
    }

    /// Runs the exporter over one record for at most `wait`: its outcome, or `None` when the
    /// record was still unacknowledged (the exporter retrying).
    async fn outcome_within(cfg: ExporterConfig, wait: Duration) -> Option<Delivery> {
        let queue = crate::exporter::testing::memory_queue("tls");
        let (tx, ack) = crate::ack::Ack::pair();
        queue.push(spans("a", &["x"]).encode_to_vec().into(), 1, Some(tx)).await.unwrap();
        let stop = CancellationToken::new();
        let task = tokio::spawn(run_in_cluster(cfg, "t".into(), queue.clone(), stop.clone()));
        let outcome = tokio::time::timeout(wait, ack.outcome()).await.ok().flatten();
        stop.cancel();
        queue.close();
        tokio::time::timeout(Duration::from_secs(10), task).await.expect("exporter stops").unwrap();
        outcome
    }

    #[tokio::test]
    async fn server_certificate_is_checked_against_the_configured_ca() {
        let pki = Pki::generate();
        let backend = Backend::default();
        let port = backend.serve(Some(pki.server_config(false))).await;
        let mut cfg = fast_config(&format!("https://localhost:{port}"));

        // A CA in neither the system store nor the bundled roots: refused, and retried (the CA
        // may be fixed), so the record stays queued.
        assert_eq!(outcome_within(cfg.clone(), Duration::from_millis(1500)).await, None);
        assert!(backend.seen().is_empty());

        cfg.tls.ca_file = Some(pki.ca_file.clone());
        assert_eq!(outcome_within(cfg.clone(), Duration::from_secs(10)).await, Some(Delivery::Accepted));

        // By IP the certificate (for localhost only) does not match, unless `server_name` says
        // which name to check.
        cfg.url = Some(format!("https://127.0.0.1:{port}"));
        assert_eq!(outcome_within(cfg.clone(), Duration::from_millis(1500)).await, None);
        cfg.tls.server_name = Some("localhost".into());
        assert_eq!(outcome_within(cfg, Duration::from_secs(10)).await, Some(Delivery::Accepted));
        assert_eq!(backend.seen().len(), 2);
    }

    #[tokio::test]
    async fn insecure_skip_verify_accepts_an_unknown_ca() {
        let pki = Pki::generate();
        let backend = Backend::default();
        let port = backend.serve(Some(pki.server_config(false))).await;
        let mut cfg = fast_config(&format!("https://localhost:{port}"));
        cfg.tls.insecure_skip_verify = true;
        assert_eq!(outcome_within(cfg, Duration::from_secs(10)).await, Some(Delivery::Accepted));
        assert_eq!(backend.seen().len(), 1);
    }

    #[tokio::test]
    async fn mutual_tls_with_a_private_ca() {
        let pki = Pki::generate();
        let backend = Backend::default();
        let port = backend.serve(Some(pki.server_config(true))).await;
        let mut cfg = fast_config(&format!("https://localhost:{port}"));
        cfg.tls.ca_file = Some(pki.ca_file.clone());
        assert_eq!(outcome_within(cfg.clone(), Duration::from_millis(1500)).await, None, "no client certificate");
        cfg.tls.cert_file = Some(pki.client_cert_file.clone());
        cfg.tls.key_file = Some(pki.client_key_file.clone());
        let acks = push_and_run(run_in_cluster, cfg, "t", vec![spans("a", &["x"]).encode_to_vec()], 1).await;
        assert_eq!(acks, vec![Some(Delivery::Accepted)]);
        assert_eq!(backend.seen().len(), 1);
    }
}
