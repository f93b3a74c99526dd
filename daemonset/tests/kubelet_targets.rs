//! The kubelet targets against a fake kubelet: HTTPS with a certificate from a test CA, the four
//! metrics paths (directly and through the API server's `nodes/proxy` path), and a bearer
//! token that must be presented on every request. The real `TargetManager` scrapes it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use lgtm_config::{KubeletVia, ScrapeConfig};
use lgtm_daemonset::kubelet::{kubelet_target_groups, KubeletNode, PATHS};
use lgtm_pipeline::proto::TimeSeries;
use lgtm_pipeline::SendError;
use lgtm_scrape::{Batch, SeriesSink, TargetManager};

/// cAdvisor stamps samples with its housekeeping time; this one is from 2020.
const CADVISOR_TS_MS: i64 = 1_600_000_000_000;

fn body_for(path: &str) -> Option<String> {
    let path = path.strip_prefix("/api/v1/nodes/node-a/proxy").unwrap_or(path);
    let text = match path {
        "/metrics" => "# TYPE kubelet_running_pods gauge\nkubelet_running_pods 7\n".to_string(),
        "/metrics/cadvisor" => format!(
            "# TYPE container_cpu_usage_seconds_total counter\n\
             container_cpu_usage_seconds_total{{container=\"app\",namespace=\"shop\",pod=\"web-1\"}} 12.5 {CADVISOR_TS_MS}\n"
        ),
        "/metrics/resource" => "# TYPE node_cpu_usage_seconds_total counter\nnode_cpu_usage_seconds_total 99.5\n".to_string(),
        "/metrics/probes" => "# TYPE prober_probe_total counter\n\
             prober_probe_total{container=\"app\",namespace=\"shop\",pod=\"web-1\",probe_type=\"Liveness\",result=\"successful\"} 3\n"
            .to_string(),
        _ => return None,
    };
    Some(text)
}

/// What the fake kubelet saw: (path, bearer token) per request.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<(String, String)>>>);

impl Seen {
    fn tokens(&self) -> Vec<String> {
        self.0.lock().unwrap().iter().map(|(_, t)| t.clone()).collect()
    }
}

async fn kubelet(State(seen): State<Seen>, uri: Uri, headers: HeaderMap) -> Response {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .to_string();
    seen.0.lock().unwrap().push((uri.path().to_string(), token.clone()));
    if token.is_empty() {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    match body_for(uri.path()) {
        Some(b) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], b).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// A CA, a serving certificate for `localhost` signed by it, and the files the agent reads.
struct Pki {
    dir: tempfile::TempDir,
    server: rustls::ServerConfig,
}

impl Pki {
    fn generate() -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, "fake cluster CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["localhost".to_string()]).unwrap().signed_by(&key, &issuer).unwrap();

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.crt"), ca_cert.pem()).unwrap();
        std::fs::write(dir.path().join("token"), "token-one\n").unwrap();
        let provider = lgtm_pipeline::tls::crypto_provider();
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
            )
            .unwrap();
        Pki { dir, server }
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    fn token_file(&self) -> PathBuf {
        self.dir.path().join("token")
    }
}

/// Serves [`kubelet`] over HTTPS on a loopback port; returns the port.
async fn start_kubelet(server: rustls::ServerConfig, seen: Seen) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let router = Router::new().fallback(kubelet).with_state(seen);
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
    port
}

#[derive(Clone, Default)]
struct Collect(Arc<Mutex<Vec<TimeSeries>>>);

impl SeriesSink for Collect {
    async fn send(&self, batch: Batch) -> Result<(), SendError> {
        self.0.lock().unwrap().extend(batch.decode().unwrap());
        Ok(())
    }
}

impl Collect {
    /// Waits until a series named `name` arrived with every label of `labels`; returns it.
    async fn wait_for(&self, name: &str, labels: &[(&str, &str)]) -> TimeSeries {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let found = self
                .0
                .lock()
                .unwrap()
                .iter()
                .rev()
                .find(|s| label(s, "__name__") == name && labels.iter().all(|(k, v)| label(s, k) == *v))
                .cloned();
            if let Some(s) = found {
                return s;
            }
            assert!(tokio::time::Instant::now() < deadline, "no {name} {labels:?} within 10 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn label<'a>(ts: &'a TimeSeries, name: &str) -> &'a str {
    ts.labels.iter().find(|l| l.name == name).map_or("", |l| l.value.as_str())
}

fn labels_of(ts: &TimeSeries) -> BTreeMap<String, String> {
    ts.labels.iter().map(|l| (l.name.clone(), l.value.clone())).collect()
}

fn scrape_config(pki: &Pki, port: u16) -> ScrapeConfig {
    let mut scrape = ScrapeConfig {
        interval: lgtm_config::Duration::from_millis(200),
        timeout: lgtm_config::Duration::from_millis(200),
        ..ScrapeConfig::default()
    };
    scrape.kubelet.port = port;
    scrape.kubelet.bearer_token_file = pki.token_file();
    scrape.kubelet.ca_file = pki.ca_file();
    scrape
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

#[tokio::test]
async fn kubelet_paths_are_scraped_with_token_and_ca_and_kube_prometheus_labels() {
    let pki = Pki::generate();
    let seen = Seen::default();
    let port = start_kubelet(pki.server.clone(), seen.clone()).await;
    let scrape = scrape_config(&pki, port);
    let sink = Collect::default();
    let manager = TargetManager::new(sink.clone(), 1);
    let groups = kubelet_target_groups(&scrape, &KubeletNode::new("node-a").with_host("localhost")).unwrap();
    assert!(manager.sync(groups).is_empty());

    let instance = format!("localhost:{port}");
    let expected = [
        ("kubelet_running_pods", "/metrics"),
        ("container_cpu_usage_seconds_total", "/metrics/cadvisor"),
        ("node_cpu_usage_seconds_total", "/metrics/resource"),
        ("prober_probe_total", "/metrics/probes"),
    ];
    for (name, path) in expected {
        let s = sink.wait_for(name, &[("metrics_path", path)]).await;
        let l = labels_of(&s);
        assert_eq!(l["job"], "kubelet", "{l:?}");
        assert_eq!(l["node"], "node-a", "{l:?}");
        assert_eq!(l["instance"], instance, "{l:?}");
        let up = sink.wait_for("up", &[("metrics_path", path)]).await;
        assert_eq!(up.samples[0].value, 1.0, "{path}");
    }
    let cadvisor = sink.wait_for("container_cpu_usage_seconds_total", &[]).await;
    assert_eq!(label(&cadvisor, "pod"), "web-1", "the kubelet's own pod labels are kept");
    let ts = cadvisor.samples[0].timestamp;
    assert!((now_ms() - ts).abs() < 60_000, "cAdvisor's timestamp {ts} is replaced by the scrape time");
    assert!(seen.tokens().iter().all(|t| t == "token-one"));

    // A rotated projected token is used from the next scrape on.
    std::fs::write(pki.token_file(), "token-two\n").unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !seen.tokens().iter().any(|t| t == "token-two") {
        assert!(tokio::time::Instant::now() < deadline, "the new token was never sent");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let last = seen.0.lock().unwrap().last().cloned().unwrap();
    assert_eq!(last.1, "token-two");
    manager.shutdown().await;
}

#[tokio::test]
async fn kubelet_through_the_apiserver_proxy_keeps_the_same_labels_and_may_honor_cadvisor_timestamps() {
    let pki = Pki::generate();
    let seen = Seen::default();
    let port = start_kubelet(pki.server.clone(), seen.clone()).await;
    let mut scrape = scrape_config(&pki, 10250);
    scrape.kubelet.via = KubeletVia::Apiserver;
    scrape.kubelet.cadvisor_honor_timestamps = true;
    let sink = Collect::default();
    let manager = TargetManager::new(sink.clone(), 1);
    let node = KubeletNode::new("node-a").with_apiserver(&format!("localhost:{port}"));
    assert!(manager.sync(kubelet_target_groups(&scrape, &node).unwrap()).is_empty());

    let cadvisor = sink.wait_for("container_cpu_usage_seconds_total", &[]).await;
    assert_eq!(cadvisor.samples[0].timestamp, CADVISOR_TS_MS);
    let l = labels_of(&cadvisor);
    assert_eq!(
        (l["job"].as_str(), l["metrics_path"].as_str(), l["node"].as_str(), l["instance"].as_str()),
        ("kubelet", "/metrics/cadvisor", "node-a", "node-a:10250")
    );
    for path in PATHS {
        sink.wait_for("up", &[("metrics_path", path)]).await;
    }
    let paths: Vec<String> = seen.0.lock().unwrap().iter().map(|(p, _)| p.clone()).collect();
    assert!(paths.iter().all(|p| p.starts_with("/api/v1/nodes/node-a/proxy/metrics")), "{paths:?}");
    manager.shutdown().await;
}

#[tokio::test]
async fn kubelet_with_a_certificate_from_another_ca_is_down() {
    let pki = Pki::generate();
    let other = Pki::generate();
    let seen = Seen::default();
    let port = start_kubelet(other.server.clone(), seen.clone()).await;
    let scrape = scrape_config(&pki, port);
    let sink = Collect::default();
    let manager = TargetManager::new(sink.clone(), 1);
    let groups = kubelet_target_groups(&scrape, &KubeletNode::new("node-a").with_host("localhost")).unwrap();
    assert!(manager.sync(groups).is_empty());
    let up = sink.wait_for("up", &[("metrics_path", "/metrics")]).await;
    assert_eq!(up.samples[0].value, 0.0);
    assert!(seen.tokens().is_empty(), "no request (and no token) reaches an unverified server");
    manager.shutdown().await;
}
