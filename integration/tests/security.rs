//! Security properties of the real binary: credentials (scrape basic auth and bearer tokens,
//! exporter basic auth and tokens) never appear in the log, even at `debug`, nor on `/targets`
//! or `/metrics`, including when the credentials are refused; the admin server listens only where
//! configured and answers nothing but reads.

use std::collections::BTreeSet;
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use lgtm_integration::agent::AgentProcess;
use lgtm_integration::agent_config::{AgentConfig, Backoff};
use lgtm_integration::fake_loki::FakeLoki;
use lgtm_integration::{eventually, free_port};
use serde_json::json;

const SCRAPE_PASSWORD: &str = "s3cr3t-scrape-password";
const WRONG_PASSWORD: &str = "s3cr3t-wrong-password";
const SCRAPE_TOKEN: &str = "s3cr3t-scrape-token";
const LOKI_PASSWORD: &str = "s3cr3t-loki-password";
const MIMIR_TOKEN: &str = "s3cr3t-mimir-token";

/// `Basic base64(user:password)` without a base64 dependency.
fn basic(user: &str, password: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let input = format!("{user}:{password}").into_bytes();
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    format!("Basic {out}")
}

/// Serves `secure_metric 1` to requests with the right basic auth or bearer token; 401 otherwise.
async fn guarded(headers: HeaderMap) -> Response {
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
    if auth == basic("agent", SCRAPE_PASSWORD) || auth == format!("Bearer {SCRAPE_TOKEN}") {
        ([("content-type", "text/plain; version=0.0.4")], "secure_metric 1\n").into_response()
    } else {
        (StatusCode::UNAUTHORIZED, format!("refused authorization {auth:?}")).into_response()
    }
}

/// Mimir that refuses every push, quoting what it got (as some proxies do).
async fn refusing_mimir(headers: HeaderMap) -> Response {
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    (StatusCode::UNAUTHORIZED, format!("bad credentials {auth}")).into_response()
}

/// The local addresses of the listening TCP sockets on `port` (from /proc/net/tcp and tcp6).
fn listening_on(port: u16) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        for line in std::fs::read_to_string(file).unwrap_or_default().lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state)) = (fields.get(1), fields.get(3)) else { continue };
            let Some((addr, p)) = local.split_once(':') else { continue };
            if *state == "0A" && u16::from_str_radix(p, 16) == Ok(port) {
                out.insert(addr.to_string());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_never_show_and_the_admin_server_only_reads_where_configured() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let app =
            Router::new().route("/metrics", get(guarded)).route("/api/v1/push", axum::routing::post(refusing_mimir));
        let _ = axum::serve(listener, app).await;
    });
    let loki = FakeLoki::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let token_file = tmp.path().join("token");
    std::fs::write(&token_file, SCRAPE_TOKEN).unwrap();
    let mimir_token_file = tmp.path().join("mimir-token");
    std::fs::write(&mimir_token_file, MIMIR_TOKEN).unwrap();
    let admin = free_port();
    let config = AgentConfig::new("it-security", &tmp.path().join("data"), admin)
        .set("log.level", "debug")
        .loki(&loki.push_url(), Backoff("100ms", "1s"))
        .set("exporters.loki.basic_auth", json!({ "username": "tenant", "password": LOKI_PASSWORD }))
        .mimir(&format!("http://{target}/api/v1/push"), Backoff("100ms", "1s"))
        .set("exporters.mimir.bearer_token_file", mimir_token_file.display().to_string())
        .scrape(
            "300ms",
            "250ms",
            json!([
                { "targets": [target], "labels": { "job": "basic" },
                  "basic_auth": { "username": "agent", "password": SCRAPE_PASSWORD } },
                { "targets": [target], "labels": { "job": "wrong" },
                  "basic_auth": { "username": "agent", "password": WRONG_PASSWORD } },
                { "targets": [target], "labels": { "job": "bearer" },
                  "bearer_token_file": token_file.display().to_string() },
            ]),
        )
        .yaml();
    // Debug level, so that whatever the agent logs about requests and configs is in the log.
    let mut agent = AgentProcess::start_with_env(tmp.path(), &config, admin, &[("RUST_LOG", "debug")]).await;

    let targets_url = format!("http://127.0.0.1:{admin}/targets");
    let targets: serde_json::Value = eventually(Duration::from_secs(30), "basic and bearer up, wrong down", || {
        let url = targets_url.clone();
        async move {
            let body: serde_json::Value = reqwest::get(&url).await.ok()?.json().await.ok()?;
            let health = |job: &str| {
                body["targets"].as_array()?.iter().find(|t| t["labels"]["job"] == job).map(|t| t["health"].clone())
            };
            (health("basic")? == "up" && health("bearer")? == "up" && health("wrong")? == "down").then_some(body)
        }
    })
    .await;
    // Mimir refused pushes with our token quoted back; give the exporter time to log them.
    eventually(Duration::from_secs(20), "Mimir's refusals counted", || {
        let a = &agent;
        async move { (a.metric_sum("lgtm_agent_exporter_failed_total", &["exporter=\"mimir\""]).await > 0.0).then_some(()) }
    })
    .await;
    let wrong = targets["targets"].as_array().unwrap().iter().find(|t| t["labels"]["job"] == "wrong").unwrap();
    println!("[security] the refused target on /targets: {wrong}");
    assert!(wrong["last_error"].as_str().is_some_and(|e| e.contains("401")), "the refusal is reported: {wrong}");

    let client = reqwest::Client::new();
    let metrics = client.get(format!("http://127.0.0.1:{admin}/metrics")).send().await.unwrap().text().await.unwrap();
    let targets_html =
        client.get(&targets_url).header("accept", "text/html").send().await.unwrap().text().await.unwrap();
    let status = agent.terminate(Duration::from_secs(20)).await;
    assert!(status.success());
    let log = agent.log();
    println!("[security] agent log: {} lines at debug level", log.lines().count());
    for secret in [SCRAPE_PASSWORD, WRONG_PASSWORD, SCRAPE_TOKEN, LOKI_PASSWORD, MIMIR_TOKEN] {
        for (what, text) in [
            ("the log", &log),
            ("/targets", &targets.to_string()),
            ("/targets (HTML)", &targets_html),
            ("/metrics", &metrics),
        ] {
            if let Some(at) = text.find(secret) {
                let from = text[..at].rfind('\n').map_or(0, |i| i + 1);
                let to = text[at..].find('\n').map_or(text.len(), |i| at + i);
                panic!("{secret} shows in {what}: {}", &text[from..to]);
            }
        }
    }
    // Mimir quoted the token back in its 401 body; the agent logged that body, redacted.
    assert!(log.contains("bad credentials <redacted>"), "the refusal is logged, redacted:\n{log}");
    // Nor their base64 forms (a logged Authorization header).
    for secret in [basic("agent", SCRAPE_PASSWORD), basic("agent", WRONG_PASSWORD), basic("tenant", LOKI_PASSWORD)] {
        let encoded = secret.trim_start_matches("Basic ");
        assert!(!log.contains(encoded) && !targets.to_string().contains(encoded), "{secret} shows");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_server_listens_only_where_configured_and_answers_only_reads() {
    let tmp = tempfile::tempdir().unwrap();
    let admin = free_port();
    let config = AgentConfig::new("it-admin", &tmp.path().join("data"), admin).yaml();
    let agent = AgentProcess::start(tmp.path(), &config, admin).await;
    let listening = listening_on(admin);
    println!("[security] admin port {admin} listening on {listening:?} (hex, /proc/net/tcp)");
    assert_eq!(listening, BTreeSet::from(["0100007F".to_string()]), "only 127.0.0.1, as configured");

    let client = reqwest::Client::new();
    for path in ["/", "/healthz", "/readyz", "/metrics", "/targets", "/config", "/debug/pprof", "/quitquitquit"] {
        let url = format!("http://127.0.0.1:{admin}{path}");
        for method in ["POST", "PUT", "PATCH", "DELETE"] {
            let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
            let status = client.request(m, &url).body("x").send().await.unwrap().status();
            println!("    {method} {path} -> {status}");
            assert!(status == 404 || status == 405, "{method} {path} answered {status}");
        }
    }
    let health = client.get(format!("http://127.0.0.1:{admin}/healthz")).send().await.unwrap().status();
    assert_eq!(health, 200, "still up after the writes were refused");
    drop(agent);
}
