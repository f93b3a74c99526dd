//! Test helpers for the exporters: a recording HTTP(S) backend on 127.0.0.1 that answers from a
//! script, throwaway certificates, and a driver that queues records and runs an exporter over them.

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use lgtm_config::{ExporterConfig, RetryConfig, WhenFull};
use tokio_util::sync::CancellationToken;

use crate::ack::{Ack, Delivery};
use crate::queue::{DurableQueue, QueueOptions};

/// One scripted answer; once the script is used up the backend answers 200.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub body: &'static str,
    pub retry_after: Option<u64>,
}

impl From<(u16, &'static str)> for Reply {
    fn from((status, body): (u16, &'static str)) -> Reply {
        Reply { status, body, retry_after: None }
    }
}

/// A request as the backend saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
    /// The status it was answered with.
    pub status: u16,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Answers from the request body: status and body.
type Responder = Arc<dyn Fn(&[u8]) -> (u16, String) + Send + Sync>;

#[derive(Default)]
struct Script {
    replies: std::collections::VecDeque<Reply>,
    responder: Option<Responder>,
    seen: Vec<Seen>,
}

/// The recording backend.
#[derive(Clone)]
pub struct Capture {
    base: String,
    script: Arc<Mutex<Script>>,
}

impl Capture {
    /// Plain HTTP.
    pub async fn start(replies: Vec<Reply>) -> Capture {
        let (capture, router, listener) = Capture::prepare(replies, "http").await;
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        capture
    }

    /// Plain HTTP, answering each request with what `respond` makes of its body.
    pub async fn start_with(respond: impl Fn(&[u8]) -> (u16, String) + Send + Sync + 'static) -> Capture {
        let capture = Capture::start(vec![]).await;
        capture.script.lock().unwrap().responder = Some(Arc::new(respond));
        capture
    }

    /// HTTPS with `server` (see [`Pki::server_config`]).
    pub async fn start_tls(server: rustls::ServerConfig) -> Capture {
        let (capture, router, listener) = Capture::prepare(Vec::new(), "https").await;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, router) = (acceptor.clone(), router.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let service = hyper_util::service::TowerToHyperService::new(router);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        capture
    }

    async fn prepare(replies: Vec<Reply>, scheme: &str) -> (Capture, Router, tokio::net::TcpListener) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("local addr").port();
        let host = if scheme == "https" { "localhost" } else { "127.0.0.1" };
        let capture = Capture {
            base: format!("{scheme}://{host}:{port}"),
            script: Arc::new(Mutex::new(Script { replies: replies.into(), responder: None, seen: Vec::new() })),
        };
        let router = Router::new().fallback(answer).with_state(capture.clone());
        (capture, router, listener)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.script.lock().unwrap().seen.clone()
    }
}

async fn answer(State(capture): State<Capture>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let mut script = capture.script.lock().unwrap();
    if let Some(respond) = script.responder.clone() {
        let (status, text) = respond(&body);
        script.seen.push(Seen { path: uri.path().to_string(), headers, body, at: Instant::now(), status });
        return (StatusCode::from_u16(status).unwrap(), text).into_response();
    }
    let reply = script.replies.pop_front().unwrap_or(Reply { status: 200, body: "", retry_after: None });
    script.seen.push(Seen { path: uri.path().to_string(), headers, body, at: Instant::now(), status: reply.status });
    let mut resp = (StatusCode::from_u16(reply.status).unwrap(), reply.body).into_response();
    if let Some(secs) = reply.retry_after {
        resp.headers_mut().insert("retry-after", secs.to_string().parse().unwrap());
    }
    resp
}

/// An exporter configuration for `url` with fast retries and small batches.
pub fn fast_config(url: &str) -> ExporterConfig {
    let mut cfg = ExporterConfig { url: Some(url.into()), ..Default::default() };
    cfg.retry = RetryConfig {
        initial_backoff: lgtm_config::Duration::from_millis(5),
        max_backoff: lgtm_config::Duration::from_millis(50),
    };
    cfg.batch.max_wait = lgtm_config::Duration::from_millis(10);
    cfg.timeout = lgtm_config::Duration::from_secs(5);
    cfg
}

pub fn memory_queue(name: &str) -> DurableQueue {
    DurableQueue::open(QueueOptions {
        name: name.into(),
        dir: None,
        max_memory: 64 << 20,
        max_disk: 0,
        when_full: WhenFull::Block,
    })
    .expect("memory queue")
}

/// Queues `records` (each counted as `items_each` items), runs the exporter `run` until every
/// acknowledgement resolved, then closes the queue and waits for the exporter to exit.
pub async fn push_and_run<F, Fut>(
    run: F,
    cfg: ExporterConfig,
    tenant: &str,
    records: Vec<Vec<u8>>,
    items_each: u32,
) -> Vec<Option<Delivery>>
where
    F: FnOnce(ExporterConfig, String, DurableQueue, CancellationToken) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let queue = memory_queue("test");
    let mut acks: Vec<Ack> = Vec::new();
    for r in records {
        let (tx, ack) = Ack::pair();
        queue.push(r.into(), items_each, Some(tx)).await.expect("push");
        acks.push(ack);
    }
    let stop = CancellationToken::new();
    let task = tokio::spawn(run(cfg, tenant.to_string(), queue.clone(), stop.clone()));
    let mut outcomes = Vec::new();
    for ack in acks {
        let outcome = tokio::time::timeout(Duration::from_secs(20), ack.outcome()).await.expect("ack in time");
        outcomes.push(outcome);
    }
    queue.close();
    tokio::time::timeout(Duration::from_secs(10), task).await.expect("exporter exits").expect("exporter task");
    outcomes
}

/// A throwaway CA with a server certificate for `localhost` and a client certificate, written
/// as PEM files.
pub struct Pki {
    /// Keeps the files alive.
    _dir: tempfile::TempDir,
    pub ca_file: PathBuf,
    pub client_cert_file: PathBuf,
    pub client_key_file: PathBuf,
    ca_der: rustls::pki_types::CertificateDer<'static>,
    server_cert: rustls::pki_types::CertificateDer<'static>,
    server_key: Vec<u8>,
}

impl Pki {
    pub fn generate() -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, "lgtm test CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);

        let server_key = KeyPair::generate().unwrap();
        let server_cert =
            CertificateParams::new(vec!["localhost".to_string()]).unwrap().signed_by(&server_key, &issuer).unwrap();
        let client_key = KeyPair::generate().unwrap();
        let mut client_params = CertificateParams::new(vec!["lgtm-agent".to_string()]).unwrap();
        client_params.distinguished_name.push(DnType::CommonName, "lgtm-agent");
        let client_cert = client_params.signed_by(&client_key, &issuer).unwrap();

        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, content: String| {
            let p = dir.path().join(name);
            std::fs::write(&p, content).unwrap();
            p
        };
        Pki {
            ca_file: write("ca.pem", ca_cert.pem()),
            client_cert_file: write("client.pem", client_cert.pem()),
            client_key_file: write("client.key", client_key.serialize_pem()),
            ca_der: ca_cert.der().clone(),
            server_cert: server_cert.der().clone(),
            server_key: server_key.serialize_der(),
            _dir: dir,
        }
    }

    /// The server side; with `require_client_cert` only clients with a certificate from this CA
    /// get through the handshake.
    pub fn server_config(&self, require_client_cert: bool) -> rustls::ServerConfig {
        let provider = crate::tls::crypto_provider();
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = if require_client_cert {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(self.ca_der.clone()).unwrap();
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build().unwrap();
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let key = rustls::pki_types::PrivateKeyDer::try_from(self.server_key.clone()).unwrap();
        builder.with_single_cert(vec![self.server_cert.clone()], key).unwrap()
    }
}
