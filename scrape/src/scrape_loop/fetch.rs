//! The HTTP side of a scrape: request, timeout, decompression, bounded streaming of the body.

use std::time::Duration;

use reqwest::header::{ACCEPT, CONTENT_TYPE, USER_AGENT};
use reqwest::{Certificate, Client, Identity};

use super::error::ScrapeError;
use crate::parser::{Format, ACCEPT_HEADER};
use crate::target::{Auth, Target};

const AGENT: &str = concat!("lgtm-agent/", env!("CARGO_PKG_VERSION"));

/// Fetches one target's body into a reused buffer.
pub(crate) struct Fetcher {
    client: Client,
    url: reqwest::Url,
    timeout: Duration,
    body_size_limit: u64,
    auth: Auth,
}

impl Fetcher {
    /// Builds the target's HTTP client (reading its CA and client certificate files).
    pub async fn new(target: &Target) -> Result<Fetcher, ScrapeError> {
        let auth = target.options.auth.clone();
        let mut builder = Client::builder()
            // Only the target's own configuration decides the route, not HTTP_PROXY.
            .no_proxy()
            .gzip(true)
            .user_agent(AGENT)
            .pool_max_idle_per_host(1);
        if let Some(tls) = &auth.tls {
            if let Some(ca) = &tls.ca_file {
                let pem = read(ca).await?;
                let certs = Certificate::from_pem_bundle(&pem)
                    .map_err(|e| ScrapeError::Tls(format!("{}: {e}", ca.display())))?;
                for cert in certs {
                    builder = builder.add_root_certificate(cert);
                }
            }
            if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
                let mut pem = read(cert).await?;
                pem.push(b'\n');
                pem.extend(read(key).await?);
                let identity = Identity::from_pem(&pem)
                    .map_err(|e| ScrapeError::Tls(format!("{} / {}: {e}", cert.display(), key.display())))?;
                builder = builder.identity(identity);
            }
            if tls.insecure_skip_verify {
                builder = builder.danger_accept_invalid_certs(true);
            }
        }
        let client = builder.build().map_err(|e| ScrapeError::Tls(e.to_string()))?;
        Ok(Fetcher {
            client,
            url: target.url.clone(),
            timeout: target.timeout,
            body_size_limit: target.options.body_size_limit,
            auth,
        })
    }

    /// Fetches the body (decompressed) into `body` and returns its format. Fails when the
    /// body exceeds the size limit, without reading the rest.
    pub async fn fetch(&self, body: &mut Vec<u8>) -> Result<Format, ScrapeError> {
        body.clear();
        let timeout = self.timeout;
        tokio::time::timeout(timeout, self.fetch_inner(body)).await.map_err(|_| ScrapeError::Timeout(timeout))?
    }

    async fn fetch_inner(&self, body: &mut Vec<u8>) -> Result<Format, ScrapeError> {
        let mut request = self
            .client
            .get(self.url.clone())
            .header(ACCEPT, ACCEPT_HEADER)
            .header(USER_AGENT, AGENT)
            .header("X-Prometheus-Scrape-Timeout-Seconds", format!("{}", self.timeout.as_secs_f64()));
        if let Some(file) = &self.auth.bearer_token_file {
            let token = tokio::fs::read_to_string(file)
                .await
                .map_err(|e| ScrapeError::Credentials(format!("{}: {e}", file.display())))?;
            request = request.bearer_auth(token.trim());
        }
        let mut response = request.send().await.map_err(|e| ScrapeError::Request(error_chain(&e)))?;
        if response.status() != reqwest::StatusCode::OK {
            return Err(ScrapeError::Status(response.status().as_u16()));
        }
        let content_type = response.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
        let format = Format::from_content_type(content_type)?;
        let limit = self.body_size_limit;
        while let Some(chunk) = response.chunk().await.map_err(|e| ScrapeError::Request(error_chain(&e)))? {
            if limit > 0 && (body.len() + chunk.len()) as u64 > limit {
                return Err(ScrapeError::BodyTooLarge(limit));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(format)
    }
}

async fn read(path: &std::path::Path) -> Result<Vec<u8>, ScrapeError> {
    tokio::fs::read(path).await.map_err(|e| ScrapeError::Tls(format!("{}: {e}", path.display())))
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
