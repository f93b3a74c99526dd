//! The HTTP side shared by the Mimir and Loki exporters: one reqwest client per exporter (TLS,
//! timeout, credentials, fixed headers), and the classification of an answer into deliver, retry
//! or reject.

use std::time::Duration;

use bytes::Bytes;
use lgtm_config::ExporterConfig;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, LOCATION, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use tokio_util::sync::CancellationToken;

use super::credentials::{redact, Credentials};
use super::outcome::LogThrottle;
use super::retry::{set_up_until_stopped, Attempt};
use crate::tls::{self, TlsError, TlsFiles};

/// Bytes of a refused request's response body quoted in logs and acknowledgements.
const BODY_QUOTE: usize = 256;

pub const USER_AGENT: &str = concat!("lgtm-agent/", env!("CARGO_PKG_VERSION"));

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("no url configured")]
    NoUrl,
    #[error("url {url:?}: {detail}")]
    Url { url: String, detail: String },
    #[error("header {name:?}: invalid name or value")]
    Header { name: String },
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("building the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// POSTs request bodies to one URL.
pub struct HttpSender {
    client: reqwest::Client,
    url: Url,
    headers: HeaderMap,
    credentials: Credentials,
    redirects_logged: LogThrottle,
    /// Set while the backend redirects elsewhere (`/readyz` is then not ready).
    /// `exporter/<name>` in [`crate::health`]: failed while the backend redirects elsewhere.
    health: crate::health::Component,
    /// Whether this sender last reported a redirect elsewhere (so that only a change touches the
    /// registry, not every request).
    redirected: std::sync::atomic::AtomicBool,
}

/// Shows the URL and the kind of credentials; header values may be secrets and are left out.
impl std::fmt::Debug for HttpSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSender").field("url", &self.url.as_str()).field("credentials", &self.credentials).finish()
    }
}

impl HttpSender {
    /// Builds the client for `cfg`. `protocol_headers` are the backend's own (content type,
    /// encoding, version); they win over `cfg.headers`, and the tenant header wins over both.
    pub async fn new(
        exporter: &str,
        cfg: &ExporterConfig,
        tenant: &str,
        protocol_headers: &[(&'static str, &'static str)],
    ) -> Result<HttpSender, SetupError> {
        let url_text = cfg.url.as_deref().filter(|u| !u.is_empty()).ok_or(SetupError::NoUrl)?;
        let url = Url::parse(url_text)
            .map_err(|e| SetupError::Url { url: lgtm_config::redact_url(url_text), detail: e.to_string() })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(SetupError::Url {
                url: lgtm_config::redact_url(url_text),
                detail: "scheme must be http or https".into(),
            });
        }

        let mut headers = HeaderMap::new();
        let mut put = |name: &str, value: &str| -> Result<(), SetupError> {
            let header = || SetupError::Header { name: name.to_string() };
            let n = HeaderName::from_bytes(name.as_bytes()).map_err(|_| header())?;
            let v = HeaderValue::from_str(value).map_err(|_| header())?;
            headers.insert(n, v);
            Ok(())
        };
        for (name, value) in &cfg.headers {
            put(name, value)?;
        }
        for (name, value) in protocol_headers {
            put(name, value)?;
        }
        if !tenant.is_empty() {
            put("X-Scope-OrgID", tenant)?;
        }

        if cfg.tls.insecure_skip_verify {
            tracing::warn!(exporter, "tls.insecure_skip_verify is on: the server certificate is not checked");
        }
        let tls = tls::http_client_config(&cfg.tls, &TlsFiles::read(&cfg.tls).await?)?;
        let timeout = cfg.timeout.get();
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .user_agent(USER_AGENT)
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(HttpSender {
            client,
            url,
            headers,
            credentials: Credentials::from_config(cfg),
            redirects_logged: LogThrottle::every(Duration::from_secs(60)),
            health: crate::health::handle(&format!("exporter/{exporter}")),
            redirected: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Keeps trying to build the sender (a missing certificate file may appear later) until it
    /// works or `stop` is cancelled.
    pub async fn new_until_stopped(
        exporter: &'static str,
        cfg: &ExporterConfig,
        tenant: &str,
        protocol_headers: &[(&'static str, &'static str)],
        stop: &CancellationToken,
    ) -> Option<HttpSender> {
        set_up_until_stopped(
            exporter,
            cfg.retry.max_backoff.get(),
            stop,
            |e| matches!(e, SetupError::NoUrl),
            || HttpSender::new(exporter, cfg, tenant, protocol_headers),
        )
        .await
    }

    /// Replaces the credentials (tests shorten their recheck period).
    #[cfg(test)]
    pub fn with_credentials(mut self, credentials: Credentials) -> HttpSender {
        self.credentials = credentials;
        self
    }

    /// One POST of `body` (already encoded and compressed), classified: 2xx delivered, 5xx and
    /// 429 retried, any other answer rejected.
    pub async fn post(&self, body: Bytes) -> Attempt<()> {
        match self.send(body).await {
            Ok(()) => Attempt::Delivered(()),
            Err(Failure::Retry(attempt)) => attempt,
            Err(Failure::Refused(answer)) => answer.classify(),
        }
    }

    /// One POST of `body`, following redirects to the same host (see [`same_host`]); a redirect
    /// anywhere else is a configuration error, logged with its `Location` and retried (never
    /// dropped, and the credentials never go to another host).
    pub async fn send(&self, body: Bytes) -> Result<(), Failure> {
        let authorization = self.credentials.authorization().await;
        let auth_header = match &authorization {
            Ok(None) => None,
            Ok(Some(auth)) => match HeaderValue::from_str(auth) {
                Ok(mut v) => {
                    v.set_sensitive(true);
                    Some(v)
                }
                Err(_) => {
                    return Err(Failure::Retry(Attempt::Retry {
                        reason: "credentials".into(),
                        detail: "the credentials contain characters not allowed in a header".into(),
                        retry_after: None,
                    }))
                }
            },
            // The file may be mounted late or mid-rotation; what is queued waits for it.
            Err(e) => {
                return Err(Failure::Retry(Attempt::Retry {
                    reason: "credentials".into(),
                    detail: e.to_string(),
                    retry_after: None,
                }))
            }
        };
        let mut url = self.url.clone();
        let mut hops = 0;
        loop {
            let mut req = self.client.post(url.clone()).headers(self.headers.clone()).body(body.clone());
            if let Some(v) = &auth_header {
                req = req.header(AUTHORIZATION, v.clone());
            }
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => return Err(Failure::Retry(transport_failure(&e))),
            };
            let status = resp.status();
            if !status.is_redirection() && self.redirected.swap(false, std::sync::atomic::Ordering::Relaxed) {
                self.health.running();
            }
            if status.is_success() {
                // Drain so the connection can be reused.
                let _ = resp.bytes().await;
                return Ok(());
            }
            if status.is_redirection() {
                let location = resp.headers().get(LOCATION).and_then(|v| v.to_str().ok()).map(str::to_string);
                let next = location.as_deref().and_then(|l| url.join(l).ok());
                match next {
                    Some(next) if hops < MAX_REDIRECTS && same_host(&self.url, &next) => {
                        let _ = resp.bytes().await;
                        if self.redirects_logged.allow() {
                            tracing::info!(from = %url, to = %next, %status, "following a redirect of the same host; set the exporter's url to where it points");
                        }
                        url = next;
                        hops += 1;
                        continue;
                    }
                    _ => {
                        let location = location.unwrap_or_else(|| "(none)".into());
                        if !self.redirected.swap(true, std::sync::atomic::Ordering::Relaxed) {
                            self.health.failed(format!("the backend redirects to {location}, not followed"));
                        }
                        if self.redirects_logged.allow() {
                            tracing::error!(url = %self.url, %status, %location, "the backend redirects elsewhere than the same host: not followed (credentials stay with the configured host); fix the exporter's url. Retrying, nothing is dropped");
                        }
                        return Err(Failure::Retry(Attempt::Retry {
                            reason: "redirect".into(),
                            detail: format!("HTTP {status} to {location}, not followed"),
                            retry_after: None,
                        }));
                    }
                }
            }
            let retry_after = retry_after(resp.headers());
            let sent = authorization.ok().flatten();
            let body = redact(read_body(resp, MAX_REFUSAL_BODY).await, sent.as_deref());
            return Err(Failure::Refused(Refusal { status, body, retry_after }));
        }
    }
}

/// Redirects followed for one request.
const MAX_REDIRECTS: usize = 5;

/// Bytes of a refusal's body kept for the exporter to read (Loki lists refused entries there).
const MAX_REFUSAL_BODY: usize = 64 * 1024;

/// Whether a redirect from `configured` to `next` stays on the same host: same host name, and the
/// same scheme and port, or an upgrade from http to https (any port). Credentials may go there.
pub fn same_host(configured: &Url, next: &Url) -> bool {
    if configured.host_str() != next.host_str() {
        return false;
    }
    match (configured.scheme(), next.scheme()) {
        (a, b) if a == b => configured.port_or_known_default() == next.port_or_known_default(),
        ("http", "https") => true,
        _ => false,
    }
}

/// Why [`HttpSender::send`] did not deliver.
#[derive(Debug)]
pub enum Failure {
    /// Not answered (connection, timeout, credentials, a redirect elsewhere): retry.
    Retry(Attempt<()>),
    /// Answered with a status that is neither success nor a followed redirect.
    Refused(Refusal),
}

/// A refusal from the backend.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub status: StatusCode,
    /// The start of the body (credentials redacted).
    pub body: String,
    pub retry_after: Option<Duration>,
}

impl Refusal {
    /// `http_<status>`, the `reason` label.
    pub fn reason(&self) -> String {
        format!("http_{}", self.status.as_u16())
    }

    /// The status and the start of the body, for logs and acknowledgements.
    pub fn message(&self) -> String {
        let mut end = self.body.len().min(BODY_QUOTE);
        while !self.body.is_char_boundary(end) {
            end -= 1;
        }
        format!("HTTP {}: {}", self.status, &self.body[..end])
    }

    /// 5xx and 429 are retried; any other status is final.
    pub fn classify<T>(&self) -> Attempt<T> {
        let (reason, message) = (self.reason(), self.message());
        if self.status.is_server_error() || self.status == StatusCode::TOO_MANY_REQUESTS {
            Attempt::Retry { reason, detail: message, retry_after: self.retry_after }
        } else {
            Attempt::Reject { reason, message }
        }
    }
}

fn transport_failure(e: &reqwest::Error) -> Attempt<()> {
    let reason = if e.is_timeout() { "timeout" } else { "connection" };
    // The error's source chain says what failed (DNS, refused, TLS); the URL is not secret.
    let mut detail = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        source = s.source();
    }
    Attempt::Retry { reason: reason.into(), detail, retry_after: None }
}

/// `Retry-After` as seconds or as an HTTP-date (RFC 9110 section 10.2.3; a proxy or gateway in
/// front of Mimir or Loki may send the date form); a date in the past means now.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    retry_after_value(headers.get(RETRY_AFTER)?.to_str().ok()?, std::time::SystemTime::now())
}

fn retry_after_value(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The first `limit` bytes of the body, as text.
async fn read_body(mut resp: reqwest::Response, limit: usize) -> String {
    let mut quoted = Vec::with_capacity(limit.min(4096));
    while quoted.len() < limit {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                let take = chunk.len().min(limit - quoted.len());
                quoted.extend_from_slice(&chunk[..take]);
            }
            _ => break,
        }
    }
    String::from_utf8_lossy(&quoted).trim().to_string()
}

/// Snappy block format, as remote write and Loki push expect.
pub fn snappy(raw: &[u8]) -> Result<Bytes, String> {
    snap::raw::Encoder::new().compress_vec(raw).map(Bytes::from).map_err(|e| format!("snappy: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exporter::credentials::Credentials;
    use crate::exporter::testing::{fast_config, Capture, Pki};

    #[test]
    fn retry_after_takes_seconds_and_http_dates() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_445_412_480); // Wed, 21 Oct 2015 07:28:00 GMT
        assert_eq!(retry_after_value(" 120 ", now), Some(Duration::from_secs(120)));
        assert_eq!(retry_after_value("Wed, 21 Oct 2015 07:28:30 GMT", now), Some(Duration::from_secs(30)));
        assert_eq!(retry_after_value("Wed, 21 Oct 2015 07:27:00 GMT", now), Some(Duration::ZERO), "a past date");
        assert_eq!(retry_after_value("soon", now), None);
        assert_eq!(retry_after_value("-5", now), None);
    }

    #[tokio::test]
    async fn rotated_bearer_token_is_sent_on_the_next_request() {
        let capture = Capture::start(vec![]).await;
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "token-one\n").unwrap();
        let mut cfg = fast_config(&capture.url("/push"));
        cfg.bearer_token_file = Some(token.clone());
        let sender = HttpSender::new("test", &cfg, "t", &[])
            .await
            .unwrap()
            .with_credentials(Credentials::from_config(&cfg).recheck_every(Duration::ZERO));
        assert!(matches!(sender.post(Bytes::from_static(b"a")).await, Attempt::Delivered(())));
        std::fs::write(&token, "token-two\n").unwrap();
        assert!(matches!(sender.post(Bytes::from_static(b"b")).await, Attempt::Delivered(())));
        let auth: Vec<Option<String>> =
            capture.requests().iter().map(|r| r.header("authorization").map(String::from)).collect();
        assert_eq!(auth, vec![Some("Bearer token-one".to_string()), Some("Bearer token-two".to_string())]);
    }

    #[tokio::test]
    async fn connection_refused_is_retryable() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let cfg = fast_config(&format!("http://127.0.0.1:{port}/push"));
        let sender = HttpSender::new("test", &cfg, "t", &[]).await.unwrap();
        match sender.post(Bytes::new()).await {
            Attempt::Retry { reason, .. } => assert_eq!(reason, "connection"),
            other => panic!("expected a retry, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn server_certificate_is_checked_against_the_configured_ca() {
        let pki = Pki::generate();
        let capture = Capture::start_tls(pki.server_config(false)).await;
        let mut cfg = fast_config(&capture.url("/push"));

        // Unknown CA: the handshake fails, which is retryable (the CA may be fixed).
        let sender = HttpSender::new("test", &cfg, "t", &[]).await.unwrap();
        assert!(matches!(sender.post(Bytes::new()).await, Attempt::Retry { .. }));

        cfg.tls.ca_file = Some(pki.ca_file.clone());
        let sender = HttpSender::new("test", &cfg, "t", &[]).await.unwrap();
        assert!(matches!(sender.post(Bytes::new()).await, Attempt::Delivered(())));

        // By IP: the certificate names only localhost, unless server_name says which name to check.
        let by_ip = capture.url("/push").replace("localhost", "127.0.0.1");
        cfg.url = Some(by_ip);
        let sender = HttpSender::new("test", &cfg, "t", &[]).await.unwrap();
        assert!(matches!(sender.post(Bytes::new()).await, Attempt::Retry { .. }));
        cfg.tls.server_name = Some("localhost".into());
        let sender = HttpSender::new("test", &cfg, "t", &[]).await.unwrap();
        assert!(matches!(sender.post(Bytes::new()).await, Attempt::Delivered(())));
        assert_eq!(capture.requests().len(), 2);
    }

    #[tokio::test]
    async fn insecure_skip_verify_accepts_an_unknown_ca() {
        let pki = Pki::generate();
        let capture = Capture::start_tls(pki.server_config(false)).await;
        let mut cfg = fast_config(&capture.url("/push"));
        cfg.tls.insecure_skip_verify = true;
        let sender = HttpSender::new("test", &cfg, "t", &[]).await.unwrap();
        assert!(matches!(sender.post(Bytes::new()).await, Attempt::Delivered(())));
    }

    #[tokio::test]
    async fn client_certificate_is_presented_for_mutual_tls() {
        let pki = Pki::generate();
        let capture = Capture::start_tls(pki.server_config(true)).await;
        let mut cfg = fast_config(&capture.url("/push"));
        cfg.tls.ca_file = Some(pki.ca_file.clone());

        let sender = HttpSender::new("test", &cfg, "t", &[]).await.unwrap();
        assert!(matches!(sender.post(Bytes::new()).await, Attempt::Retry { .. }), "no client certificate");

        cfg.tls.cert_file = Some(pki.client_cert_file.clone());
        cfg.tls.key_file = Some(pki.client_key_file.clone());
        let sender = HttpSender::new("test", &cfg, "t", &[]).await.unwrap();
        assert!(matches!(sender.post(Bytes::new()).await, Attempt::Delivered(())));
        assert_eq!(capture.requests().len(), 1);
    }

    #[tokio::test]
    async fn half_a_client_identity_is_a_setup_error() {
        let mut cfg = fast_config("https://localhost:1/push");
        cfg.tls.cert_file = Some("/some/cert.pem".into());
        let err = HttpSender::new("test", &cfg, "t", &[]).await.unwrap_err();
        assert!(matches!(err, SetupError::Tls(TlsError::HalfIdentity)), "{err}");
    }
}
