//! The HTTP side of a scrape: request, timeout, decompression, bounded streaming of the body.

use std::time::Duration;

use lgtm_config::TlsConfig;
use lgtm_pipeline::tls::{http_client_config, TlsFiles};
use reqwest::header::{ACCEPT, CONTENT_TYPE, LOCATION, USER_AGENT};
use reqwest::redirect::Policy;
use reqwest::Client;

use super::error::ScrapeError;
use crate::parser::{Format, ACCEPT_HEADER};
use crate::target::{Secret, Target, TlsOptions};

const AGENT: &str = concat!("lgtm-agent/", env!("CARGO_PKG_VERSION"));

/// Redirects followed before the scrape fails (Go's HTTP client, thus Prometheus, stops at 10).
const MAX_REDIRECTS: usize = 10;

/// Plain-HTTP targets scraped at most this often connect anew for each scrape instead of
/// keeping an idle connection open between scrapes. An idle hyper connection holds about
/// 27 KiB (read and write buffers of 8 KiB each, its dispatch channel, its task): 80 MiB at
/// 3,000 targets (measured with heaptrack under `bench discovery`), for a TCP handshake saved
/// every 30 s.
const KEEP_ALIVE_MAX_INTERVAL: Duration = Duration::from_secs(10);

/// The settings every scrape client has; `keep_alive`: keep one idle connection per target.
fn client_builder(follow_redirects: bool, keep_alive: bool) -> reqwest::ClientBuilder {
    let redirects = if follow_redirects { Policy::limited(MAX_REDIRECTS) } else { Policy::none() };
    Client::builder()
        // Only the target's own configuration decides the route, not HTTP_PROXY.
        .no_proxy()
        .gzip(true)
        .user_agent(AGENT)
        .redirect(redirects)
        .pool_max_idle_per_host(usize::from(keep_alive))
}

/// The process's client for targets without TLS settings, one per redirect policy and
/// keep-alive choice (clones share the connection pool). An `https` target without a `tls`
/// section trusts the process's default roots, as every other client (`lgtm_pipeline::tls`).
async fn shared_plain_client(follow_redirects: bool, keep_alive: bool) -> Result<Client, ScrapeError> {
    static CLIENTS: std::sync::OnceLock<Result<[Client; 4], String>> = std::sync::OnceLock::new();
    if CLIENTS.get().is_none() {
        // Loads the default roots off the runtime threads.
        TlsFiles::read(&TlsConfig::default()).await.map_err(|e| ScrapeError::Tls(e.to_string()))?;
    }
    let clients = CLIENTS.get_or_init(|| {
        let build = |follow, keep| {
            let tls = http_client_config(&TlsConfig::default(), &TlsFiles::default()).map_err(|e| e.to_string())?;
            client_builder(follow, keep).use_preconfigured_tls(tls).build().map_err(|e| e.to_string())
        };
        Ok([build(false, false)?, build(true, false)?, build(false, true)?, build(true, true)?])
    });
    match clients {
        Ok(c) => Ok(c[usize::from(follow_redirects) + 2 * usize::from(keep_alive)].clone()),
        Err(e) => Err(ScrapeError::Tls(e.clone())),
    }
}

/// Fetches one target's body into a reused buffer. Holds only the client (and the rare SNI
/// rewrite): the URL, credentials, timeout and size limit are read from the [`Target`] on each
/// scrape rather than copied into every loop.
pub(crate) struct Fetcher {
    client: Client,
    /// The URL naming `tls.server_name` and the `Host` header (the target's address), when
    /// the target is addressed by IP (see [`sni_url`]). Boxed: most targets have none.
    sni: Option<Box<(reqwest::Url, String)>>,
}

impl Fetcher {
    /// Builds the target's HTTP client (reading its CA and client certificate files).
    pub async fn new(target: &Target) -> Result<Fetcher, ScrapeError> {
        let auth = &target.options.auth;
        let Some(tls) = &auth.tls else {
            // Without TLS settings the client is the same for every target: one per process
            // (a client costs about 16 KiB, thousands of targets add up).
            let keep_alive = target.interval <= KEEP_ALIVE_MAX_INTERVAL;
            let client = shared_plain_client(auth.follow_redirects, keep_alive).await?;
            return Ok(Fetcher { client, sni: None });
        };
        // A TLS handshake per scrape costs more than the idle connection: kept alive.
        let mut builder = client_builder(auth.follow_redirects, true);
        let mut sni = None;
        if let Some((url, ip, authority)) = sni_url(&target.url, tls) {
            builder = builder.resolve(url.host_str().unwrap_or_default(), std::net::SocketAddr::new(ip, 0));
            sni = Some(Box::new((url, authority)));
        }
        // rustls built by hand: reqwest cannot check a certificate against another name.
        let tls = tls_config(tls);
        let files = TlsFiles::read(&tls).await.map_err(|e| ScrapeError::Tls(e.to_string()))?;
        let rustls = http_client_config(&tls, &files).map_err(|e| ScrapeError::Tls(e.to_string()))?;
        builder = builder.use_preconfigured_tls(rustls);
        let client = builder.build().map_err(|e| ScrapeError::Tls(e.to_string()))?;
        Ok(Fetcher { client, sni })
    }

    /// Fetches `target`'s body (decompressed) into `body` and returns its format. Fails when
    /// the body exceeds the size limit, without reading the rest. `target` is the one the
    /// fetcher was built for.
    pub async fn fetch(&self, target: &Target, body: &mut Vec<u8>) -> Result<Format, ScrapeError> {
        body.clear();
        let timeout = target.timeout;
        tokio::time::timeout(timeout, self.fetch_inner(target, body))
            .await
            .map_err(|_| ScrapeError::Timeout(timeout))?
    }

    async fn fetch_inner(&self, target: &Target, body: &mut Vec<u8>) -> Result<Format, ScrapeError> {
        let auth = &target.options.auth;
        let url = match &self.sni {
            Some(sni) => &sni.0,
            None => &target.url,
        };
        let mut request = self
            .client
            .get(url.clone())
            .header(ACCEPT, ACCEPT_HEADER)
            .header(USER_AGENT, AGENT)
            .header("X-Prometheus-Scrape-Timeout-Seconds", format!("{}", target.timeout.as_secs_f64()));
        if let Some(sni) = &self.sni {
            request = request.header(reqwest::header::HOST, &sni.1);
        }
        if let Some(file) = &auth.bearer_token_file {
            let token = read_secret("bearer_token_file", file).await?;
            request = request.bearer_auth(token);
        } else if let Some(basic) = &auth.basic_auth {
            let username = secret("basic_auth.username_file", &basic.username).await?;
            let password = secret("basic_auth.password_file", &basic.password).await?;
            request = request.basic_auth(username, Some(password));
        }
        let mut response = request.send().await.map_err(|e| ScrapeError::Request(error_chain(&e)))?;
        let status = response.status();
        if status.is_redirection() && !auth.follow_redirects {
            let location = response.headers().get(LOCATION).and_then(|v| v.to_str().ok()).unwrap_or("");
            return Err(ScrapeError::Redirect { status: status.as_u16(), location: location.to_string() });
        }
        if status != reqwest::StatusCode::OK {
            return Err(ScrapeError::Status(status.as_u16()));
        }
        let content_type =
            response.headers().get(CONTENT_TYPE).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let limit = target.options.body_size_limit;
        while let Some(chunk) = response.chunk().await.map_err(|e| ScrapeError::Request(error_chain(&e)))? {
            if limit > 0 && (body.len() + chunk.len()) as u64 > limit {
                return Err(ScrapeError::BodyTooLarge(limit));
            }
            body.extend_from_slice(&chunk);
        }
        if body.is_empty() {
            // An empty body is an empty scrape whatever its type, as in Prometheus 3 (which
            // looks at the Content-Type only to parse a non-empty body).
            return Ok(Format::Text);
        }
        Ok(Format::from_content_type(content_type.as_deref(), target.options.fallback_scrape_protocol)?)
    }
}

/// With `tls.server_name` set and the target addressed by IP (the Kubernetes case), the request
/// goes to a URL naming `server_name`, pinned to the target's IP, so that `server_name` is both
/// the TLS SNI and the name checked, as in Prometheus; the `Host` header stays the target's
/// address. Returns that URL, the IP and the original `host:port`. A target addressed by name
/// keeps its URL (its SNI stays its own name; only the check uses `server_name`), so that its
/// DNS is still looked up on every connection.
fn sni_url(url: &reqwest::Url, tls: &TlsOptions) -> Option<(reqwest::Url, std::net::IpAddr, String)> {
    let name = tls.server_name.as_deref()?;
    if name.parse::<std::net::IpAddr>().is_ok() {
        return None;
    }
    let host = url.host_str()?;
    let ip: std::net::IpAddr = host.trim_start_matches('[').trim_end_matches(']').parse().ok()?;
    let authority = match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    };
    let mut sni = url.clone();
    sni.set_host(Some(name)).ok()?;
    Some((sni, ip, authority))
}

/// `tls` in the exporters' shape, so that the pipeline's rustls configuration serves both.
fn tls_config(tls: &TlsOptions) -> TlsConfig {
    TlsConfig {
        ca_file: tls.ca_file.clone(),
        cert_file: tls.cert_file.clone(),
        key_file: tls.key_file.clone(),
        server_name: tls.server_name.clone(),
        insecure_skip_verify: tls.insecure_skip_verify,
    }
}

async fn secret(what: &'static str, secret: &Secret) -> Result<String, ScrapeError> {
    match secret {
        Secret::Inline(value) => Ok(value.clone()),
        Secret::File(path) => read_secret(what, path).await,
    }
}

/// Read before every scrape, so a rotated file counts from the next scrape on. The error names
/// the file, never its content.
async fn read_secret(what: &'static str, path: &std::path::Path) -> Result<String, ScrapeError> {
    match tokio::fs::read_to_string(path).await {
        Ok(text) => Ok(text.trim().to_string()),
        Err(e) => Err(ScrapeError::Credentials(format!("reading {what} {}: {e}", path.display()))),
    }
}

/// reqwest's errors say little at the top level; the cause chain says what happened.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
