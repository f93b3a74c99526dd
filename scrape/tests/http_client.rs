//! The HTTP client side of a target against real local servers: basic auth, TLS checked
//! against `server_name`, redirects followed or not.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use common::*;
use lgtm_scrape::{Auth, BasicAuth, ScrapeLoop, ScrapeOptions, Secret, TlsOptions};

const BODY: &str = "# TYPE served gauge\nserved 7\n";

fn exposition() -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], BODY).into_response()
}

async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

/// Scrapes once; returns `up`, the value of `served` if it came, and the scrape's error.
async fn scrape(addr: SocketAddr, options: ScrapeOptions) -> (f64, Option<f64>, Option<String>) {
    let mut sl = ScrapeLoop::new(target(addr, options), vec![]);
    scrape_with(&mut sl).await
}

async fn scrape_with(sl: &mut ScrapeLoop) -> (f64, Option<f64>, Option<String>) {
    let batch = sl.scrape_once().await.decode().unwrap();
    let served = batch.iter().find(|t| name(t) == "served").map(|t| t.samples[0].value);
    let error = sl.status().lock().unwrap().last_error.clone();
    (value(&batch, "up"), served, error)
}

fn with_auth(job: &str, auth: Auth) -> ScrapeOptions {
    ScrapeOptions { auth, ..options(job) }
}

fn basic(username: &str, password: Secret) -> Auth {
    Auth { basic_auth: Some(BasicAuth { username: Secret::Inline(username.into()), password }), ..Auth::default() }
}

/// Serves the exposition only to `Authorization: Basic base64("scraper:s3cret")`.
async fn basic_auth_server() -> SocketAddr {
    serve(Router::new().fallback(|headers: HeaderMap| async move {
        // base64("scraper:s3cret")
        match headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
            Some("Basic c2NyYXBlcjpzM2NyZXQ=") => exposition(),
            _ => (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Basic")]).into_response(),
        }
    }))
    .await
}

#[tokio::test]
async fn basic_auth_is_sent_and_rejected_credentials_make_up_zero() {
    let addr = basic_auth_server().await;

    let (up, served, error) =
        scrape(addr, with_auth("basic_ok", basic("scraper", Secret::Inline("s3cret".into())))).await;
    assert_eq!((up, served, error), (1.0, Some(7.0), None));

    let (up, served, error) =
        scrape(addr, with_auth("basic_bad", basic("scraper", Secret::Inline("wrong".into())))).await;
    assert_eq!((up, served), (0.0, None));
    assert_eq!(error.as_deref(), Some("server returned HTTP status 401"));

    let (up, _, error) = scrape(addr, options("basic_none")).await;
    assert_eq!(up, 0.0, "no credentials: {error:?}");
}

#[tokio::test]
async fn the_password_file_is_read_before_every_scrape() {
    let addr = basic_auth_server().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("password");
    std::fs::write(&file, "s3cret\n").unwrap();
    let options = with_auth("basic_file", basic("scraper", Secret::File(file.clone())));
    let mut sl = ScrapeLoop::new(target(addr, options), vec![]);
    assert_eq!(scrape_with(&mut sl).await, (1.0, Some(7.0), None));

    std::fs::write(&file, "rotated").unwrap();
    let (up, _, error) = scrape_with(&mut sl).await;
    assert_eq!(up, 0.0);
    assert_eq!(error.as_deref(), Some("server returned HTTP status 401"));

    std::fs::write(&file, "s3cret").unwrap();
    assert_eq!(scrape_with(&mut sl).await, (1.0, Some(7.0), None));

    std::fs::remove_file(&file).unwrap();
    let (up, _, error) = scrape_with(&mut sl).await;
    assert_eq!(up, 0.0);
    let error = error.unwrap();
    assert!(error.contains("basic_auth.password_file") && error.contains(&file.display().to_string()), "{error}");
}

/// What the HTTPS server saw of each request: the SNI of its connection and its `Host` header.
type Seen = Arc<Mutex<Vec<(Option<String>, String)>>>;

/// A CA file and an HTTPS server on 127.0.0.1 whose certificate names only `metrics.internal`.
async fn tls_server(dir: &std::path::Path) -> (SocketAddr, std::path::PathBuf, Seen) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "scrape test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["metrics.internal".to_string()]).unwrap().signed_by(&key, &issuer).unwrap();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca_cert.pem()).unwrap();

    let provider = lgtm_pipeline::tls::crypto_provider();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Seen::default();
    let seen_by_server = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, seen) = (acceptor.clone(), seen_by_server.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let sni = tls.get_ref().1.server_name().map(str::to_string);
                let router = Router::new().fallback(move |headers: HeaderMap| async move {
                    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                    seen.lock().unwrap().push((sni, host));
                    exposition()
                });
                let service = hyper_util::service::TowerToHyperService::new(router);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (addr, ca_file, seen)
}

fn https(job: &str, ca_file: &std::path::Path, server_name: Option<&str>) -> ScrapeOptions {
    let tls = TlsOptions {
        ca_file: Some(ca_file.to_path_buf()),
        server_name: server_name.map(str::to_string),
        ..TlsOptions::default()
    };
    ScrapeOptions {
        scheme: "https".into(),
        interval: Duration::from_secs(2),
        timeout: Duration::from_secs(2),
        auth: Auth { tls: Some(tls), ..Auth::default() },
        ..options(job)
    }
}

#[tokio::test]
async fn the_certificate_is_checked_against_server_name() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, ca, seen) = tls_server(dir.path()).await;

    let (up, served, error) = scrape(addr, https("tls_named", &ca, Some("metrics.internal"))).await;
    assert_eq!((up, served, error), (1.0, Some(7.0), None));
    // server_name is also the SNI (as in Prometheus); the Host header stays the target's address.
    assert_eq!(*seen.lock().unwrap(), [(Some("metrics.internal".to_string()), addr.to_string())]);

    // By IP the certificate does not match; with another name neither.
    for (job, name) in [("tls_by_ip", None), ("tls_other_name", Some("other.internal"))] {
        let (up, served, error) = scrape(addr, https(job, &ca, name)).await;
        assert_eq!((up, served), (0.0, None), "{job}");
        let error = error.unwrap();
        assert!(error.contains("certificate not valid for name"), "{job}: {error}");
    }
}

#[tokio::test]
async fn a_certificate_from_an_unknown_ca_is_refused_with_or_without_a_tls_section() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, ca, seen) = tls_server(dir.path()).await;
    // The name matches but no `ca_file`: the default roots (system store, else bundled) do not
    // hold the test CA.
    let no_ca = TlsOptions { server_name: Some("metrics.internal".into()), ..TlsOptions::default() };
    let mut options = https("tls_no_ca_file", &ca, None);
    options.auth.tls = Some(no_ca);
    let (up, served, error) = scrape(addr, options).await;
    assert_eq!((up, served), (0.0, None));
    assert!(error.as_deref().unwrap_or("").contains("UnknownIssuer"), "{error:?}");

    // An https target without any `tls` section goes through the process's shared client,
    // which trusts the same default roots.
    let mut options = https("tls_no_section", &ca, None);
    options.auth.tls = None;
    let (up, served, error) = scrape(addr, options).await;
    assert_eq!((up, served), (0.0, None));
    assert!(error.as_deref().unwrap_or("").contains("UnknownIssuer"), "{error:?}");
    assert!(seen.lock().unwrap().is_empty(), "no request got through");

    // The same server with its CA configured: scraped.
    let (up, served, error) = scrape(addr, https("tls_with_ca", &ca, Some("metrics.internal"))).await;
    assert_eq!((up, served, error), (1.0, Some(7.0), None));
}

#[tokio::test]
async fn a_bad_server_name_or_ca_file_fails_the_scrape_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, ca, _) = tls_server(dir.path()).await;
    let (up, _, error) = scrape(addr, https("tls_bad_name", &ca, Some("not a name"))).await;
    assert_eq!(up, 0.0);
    assert_eq!(
        error.as_deref(),
        Some("TLS configuration: tls.server_name \"not a name\" is not a valid DNS name or IP address")
    );
    let missing = dir.path().join("missing.pem");
    let (up, _, error) = scrape(addr, https("tls_no_ca", &missing, None)).await;
    assert_eq!(up, 0.0);
    assert!(error.unwrap().contains(&missing.display().to_string()));
}

/// `/metrics` redirects to `/moved/metrics`, which serves the exposition.
async fn redirecting_server() -> SocketAddr {
    serve(Router::new().fallback(|uri: Uri| async move {
        match uri.path() {
            "/moved/metrics" => exposition(),
            _ => (StatusCode::FOUND, [(header::LOCATION, "/moved/metrics")]).into_response(),
        }
    }))
    .await
}

#[tokio::test]
async fn redirects_are_followed_by_default() {
    let addr = redirecting_server().await;
    assert!(Auth::default().follow_redirects);
    assert_eq!(scrape(addr, options("redirect_default")).await, (1.0, Some(7.0), None));
}

#[tokio::test]
async fn a_redirect_fails_the_scrape_when_follow_redirects_is_false() {
    let addr = redirecting_server().await;
    let (up, served, error) =
        scrape(addr, with_auth("redirect_off", Auth { follow_redirects: false, ..Auth::default() })).await;
    assert_eq!((up, served), (0.0, None));
    assert_eq!(
        error.as_deref(),
        Some(
            "server returned HTTP status 302 redirecting to \"/moved/metrics\", not followed (follow_redirects: false)"
        )
    );
}

#[tokio::test]
async fn a_redirect_loop_fails_the_scrape() {
    let addr = serve(
        Router::new().fallback(|| async { (StatusCode::FOUND, [(header::LOCATION, "/metrics")]).into_response() }),
    )
    .await;
    let (up, _, error) = scrape(addr, options("redirect_loop")).await;
    assert_eq!(up, 0.0);
    assert!(error.unwrap().contains("too many redirects"));
}
