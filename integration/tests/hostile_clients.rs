//! Hostile clients and misconfiguration against the real `lgtm-agent` binary (issue 17): a port
//! already taken, two listeners on one address, an exporter that cannot start, header values and
//! tenants that HTTP cannot carry, URL passwords in errors, colour in log files, SIGHUP and
//! `POST /-/reload`, slow clients and too many connections, and the memory one request can take.
//! Every case prints what it sent and what the agent answered.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lgtm_integration::agent::{agent_binary, AgentProcess};
use lgtm_integration::agent_config::AgentConfig;
use lgtm_integration::procstat::Process;
use lgtm_integration::{eventually, free_port};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn report(case: &str, sent: &str, answer: &str) {
    println!("[hostile_clients] {case}\n    sent:   {sent}\n    answer: {answer}");
}

/// The receivers off except those a test turns on (their default ports may be taken).
fn receivers_off() -> serde_json::Value {
    json!({ "grpc": "", "http": "", "zipkin": "",
            "jaeger": { "thrift_compact": "", "thrift_binary": "", "thrift_http": "", "grpc": "" } })
}

/// `lgtm-agent <sub> --config <file>` on `yaml`: exit code and stderr.
fn agent_command(dir: &Path, sub: &str, yaml: &str) -> (Option<i32>, String) {
    let file = dir.join(format!("{sub}.yaml"));
    std::fs::write(&file, yaml).unwrap();
    let out = Command::new(agent_binary())
        .args([sub, "--config"])
        .arg(&file)
        .env("RUST_LOG", "info")
        .output()
        .expect("run lgtm-agent");
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Starts `run` without waiting for `/readyz` (for agents that are not meant to become ready).
fn spawn_agent(dir: &Path, yaml: &str) -> (Child, std::path::PathBuf) {
    let config = dir.join("agent.yaml");
    std::fs::write(&config, yaml).unwrap();
    let log_path = dir.join("agent.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let child = Command::new(agent_binary())
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("start lgtm-agent");
    (child, log_path)
}

async fn get(url: &str) -> Option<(u16, String)> {
    let r = reqwest::get(url).await.ok()?;
    let status = r.status().as_u16();
    Some((status, r.text().await.unwrap_or_default()))
}

// ---------------------------------------------------------------------------------------------
// Item 3: listeners

#[test]
fn a_port_already_taken_stops_the_agent_with_exit_1_naming_the_field() {
    let tmp = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let grpc = free_port();
    let yaml = AgentConfig::new("it-hostile", &tmp.path().join("data"), free_port())
        .set("otlp", receivers_off())
        .set("otlp.grpc", format!("127.0.0.1:{grpc}"))
        .set("otlp.http", format!("127.0.0.1:{port}"))
        .yaml();
    let started = Instant::now();
    let (code, stderr) = agent_command(tmp.path(), "run", &yaml);
    report(
        "otlp.http on a port already taken",
        &format!("otlp.http 127.0.0.1:{port} (held by the test), otlp.grpc 127.0.0.1:{grpc}"),
        &format!("exit {code:?} after {:?}: {}", started.elapsed(), stderr.lines().last().unwrap_or("")),
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains(&format!("otlp.http: cannot listen on 127.0.0.1:{port}")), "{stderr}");
    drop(taken);
}

#[test]
fn validate_rejects_two_listeners_on_one_port_naming_both_fields() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let cases = [
        ("otlp.http", format!("127.0.0.1:{port}"), "otlp.zipkin", format!("127.0.0.1:{port}")),
        ("otlp.grpc", format!("0.0.0.0:{port}"), "otlp.jaeger.grpc", format!("127.0.0.1:{port}")),
        ("admin.listen", format!("127.0.0.1:{port}"), "otlp.http", format!("127.0.0.1:{port}")),
    ];
    for (first, a, second, b) in cases {
        let yaml = AgentConfig::new("it-hostile", &tmp.path().join("data"), free_port())
            .set("otlp", receivers_off())
            .set(first, a.clone())
            .set(second, b.clone())
            .yaml();
        let (code, stderr) = agent_command(tmp.path(), "validate", &yaml);
        report("two listeners on one port", &format!("{first}: {a}, {second}: {b}"), stderr.trim());
        assert_eq!(code, Some(2), "{stderr}");
        assert!(stderr.contains(first) && stderr.contains(second), "both fields named: {stderr}");
        assert!(stderr.contains("validate.yaml:"), "file and line: {stderr}");
    }
}

/// Waits up to `timeout` for `child` to exit; kills it (and fails) when it does not.
fn exit_within(child: &mut Child, timeout: Duration, log: &Path) -> Option<i32> {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            panic!("still running after {timeout:?}; log:\n{}", std::fs::read_to_string(log).unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exporter_that_cannot_start_stops_the_agent_with_exit_1_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = tmp.path().join("ca.pem");
    let exporters = [
        ("loki", "https://127.0.0.1:1/loki/api/v1/push"),
        ("mimir", "https://127.0.0.1:1/api/v1/push"),
        ("tempo", "https://127.0.0.1:1"),
    ];
    let config = |exporter: &str, url: &str, admin: u16| {
        AgentConfig::new("it-hostile", &tmp.path().join(format!("data-{exporter}")), admin)
            .set("otlp", receivers_off())
            .set(
                &format!("exporters.{exporter}"),
                json!({ "url": url, "tls": { "ca_file": ca.display().to_string() } }),
            )
            .yaml()
    };
    for (exporter, url) in exporters {
        let dir = tmp.path().join(exporter);
        std::fs::create_dir_all(&dir).unwrap();
        let started = Instant::now();
        let (mut child, log) = spawn_agent(&dir, &config(exporter, url, free_port()));
        let code = exit_within(&mut child, Duration::from_secs(20), &log);
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let error = text.lines().find(|l| l.contains("cannot start")).unwrap_or("").to_string();
        report(
            "an exporter whose CA file is missing",
            &format!("exporters.{exporter}.tls.ca_file {} (absent)", ca.display()),
            &format!("exit {code:?} after {:?}: {error}", started.elapsed()),
        );
        assert_eq!(code, Some(1), "{text}");
        assert!(error.contains(&format!("exporters.{exporter}: cannot start: ")), "{text}");
        assert!(error.contains("ca_file") && error.contains(&ca.display().to_string()), "{text}");
    }
    // With the file there (as a mounted Secret is), the same configs start and stop cleanly.
    write_ca(&ca);
    for (exporter, url) in exporters {
        let dir = tmp.path().join(format!("{exporter}-ok"));
        std::fs::create_dir_all(&dir).unwrap();
        let admin = free_port();
        let mut agent = AgentProcess::start(&dir, &config(exporter, url, admin), admin).await;
        let ready = get(&format!("http://127.0.0.1:{admin}/readyz")).await.unwrap();
        assert_eq!(ready, (200, "ready\n".to_string()), "{exporter}");
        let status = agent.terminate(Duration::from_secs(20)).await;
        assert_eq!(status.code(), Some(0), "{exporter}: {}", agent.log());
    }
}

/// Writes a self-signed CA certificate to `path` (any valid one does: the exporter only reads it).
fn write_ca(path: &Path) {
    let key = path.with_extension("key");
    let ok = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=lgtm-test-ca", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(path)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "openssl req -x509 (openssl is needed to make a CA certificate)");
}

// ---------------------------------------------------------------------------------------------
// Items 6 and 7: what HTTP cannot carry, and passwords in errors

#[test]
fn header_values_tenants_and_url_passwords_are_refused_by_validate_and_run_without_the_password() {
    let tmp = tempfile::tempdir().unwrap();
    let base = || AgentConfig::new("it-hostile", &tmp.path().join("data"), free_port());
    let loki = json!({ "url": "http://127.0.0.1:3100/loki/api/v1/push" });
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "a header value with a newline",
            base()
                .set("exporters.loki", loki.clone())
                .set("exporters.loki.headers", json!({ "X-Team": "a\nX-Evil: 1" }))
                .yaml(),
            "exporters.loki.headers.X-Team: ",
        ),
        (
            "a tenant with CR LF",
            base().set("exporters.loki", loki.clone()).set("exporters.loki.tenant", "t1\r\nX-Evil: 1").yaml(),
            "exporters.loki.tenant: ",
        ),
        ("the default tenant with a NUL", base().set("tenant", "t\u{0}1").yaml(), "tenant: "),
        (
            "a header name with a space",
            base().set("exporters.loki", loki.clone()).set("exporters.loki.headers", json!({ "X Team": "a" })).yaml(),
            "exporters.loki.headers: ",
        ),
        (
            "a gRPC-reserved header on Tempo",
            base()
                .set("exporters.tempo", json!({ "url": "http://127.0.0.1:4317" }))
                .set("exporters.tempo.headers", json!({ "grpc-timeout": "1S" }))
                .yaml(),
            "exporters.tempo.headers: ",
        ),
        (
            "an invalid URL with a password",
            base().set("exporters.loki", json!({ "url": "http://agent:hunter2-s3cret@loki .svc:3100/push" })).yaml(),
            "exporters.loki.url: ",
        ),
    ];
    for (what, yaml, field) in cases {
        for sub in ["validate", "run"] {
            let (code, stderr) = agent_command(tmp.path(), sub, &yaml);
            if sub == "validate" {
                report(what, field, stderr.trim());
            }
            assert_eq!(code, Some(2), "{what} ({sub}): {stderr}");
            assert!(stderr.contains(&format!("{sub}.yaml:")), "{what} ({sub}): file and line: {stderr}");
            assert!(stderr.contains(field), "{what} ({sub}): names {field}: {stderr}");
            assert!(!stderr.contains("hunter2-s3cret"), "{what} ({sub}): password shown: {stderr}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Item 9: logs

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_logs_to_a_file_have_no_colour_and_fields_print_plain_values() {
    let tmp = tempfile::tempdir().unwrap();
    let admin = free_port();
    let (udp, http) = (free_port(), free_port());
    let yaml = AgentConfig::new("it-hostile", &tmp.path().join("data"), admin)
        .set("otlp", receivers_off())
        .set("otlp.http", format!("127.0.0.1:{http}"))
        .set("otlp.jaeger.thrift_compact", format!("127.0.0.1:{udp}"))
        .set("log.format", "text")
        .yaml();
    let mut agent = AgentProcess::start(tmp.path(), &yaml, admin).await;
    let status = agent.terminate(Duration::from_secs(10)).await;
    let log = agent.log();
    let first = log.lines().find(|l| l.contains("Jaeger UDP receiver listening")).unwrap_or("").to_string();
    report("log.format text into a file", "stderr redirected to a file, NO_COLOR unset", &first);
    assert!(status.success());
    assert!(!log.contains('\u{1b}'), "no ANSI escapes in a file:\n{log}");
    assert!(first.contains(&format!("addr=127.0.0.1:{udp}")), "the address as a value: {first}");
    assert!(!log.contains("Some("), "no Debug forms of Option:\n{log}");
}

// ---------------------------------------------------------------------------------------------
// Item 8: reload

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_and_post_reload_keep_the_old_config_on_error_and_apply_a_changed_one() {
    let tmp = tempfile::tempdir().unwrap();
    let admin = free_port();
    let (http_a, http_b) = (free_port(), free_port());
    let config = |http: u16| {
        AgentConfig::new("it-hostile", &tmp.path().join("data"), admin)
            .set("admin.enable_reload", true)
            .set("otlp", receivers_off())
            .set("otlp.http", format!("127.0.0.1:{http}"))
            .yaml()
    };
    let mut agent = AgentProcess::start(tmp.path(), &config(http_a), admin).await;
    let pid = agent.pid();
    let base = format!("http://127.0.0.1:{admin}");
    let hup = || Command::new("kill").args(["-HUP", &pid.to_string()]).status().unwrap();

    // Unchanged file: nothing happens.
    hup();
    eventually(Duration::from_secs(5), "an unchanged reload counted", || async {
        (agent.metric_sum("lgtm_agent_config_reloads_total", &["unchanged"]).await == 1.0).then_some(())
    })
    .await;

    // An invalid file: the agent keeps running the old config and says so.
    std::fs::write(&agent.config_path, "otlp:\n  http: [not, an, address]\n").unwrap();
    hup();
    eventually(Duration::from_secs(5), "a failed reload counted", || async {
        (agent.metric_sum("lgtm_agent_config_last_reload_successful", &[]).await == 0.0).then_some(())
    })
    .await;
    let client = reqwest::Client::new();
    let refused = client.post(format!("{base}/-/reload")).send().await.unwrap();
    let (code, body) = (refused.status().as_u16(), refused.text().await.unwrap());
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("otlp.http"), "{body}");
    let still = client.post(format!("http://127.0.0.1:{http_a}/v1/traces")).send().await.map(|r| r.status().as_u16());
    report(
        "SIGHUP and POST /-/reload with an invalid file",
        "otlp.http: [not, an, address]",
        &format!("{code} {body:?}; old receiver answers {still:?}"),
    );
    assert!(still.is_ok(), "the old OTLP/HTTP receiver still serves");
    assert_eq!(agent.metric_sum("lgtm_agent_config_reloads_total", &["invalid"]).await, 2.0);

    // A valid file whose exporter cannot start (CA file missing): applied, the agent would exit 1;
    // refused like an invalid one, the old config keeps running.
    let ca = tmp.path().join("absent-ca.pem");
    let unstartable = AgentConfig::from_yaml(&config(http_b))
        .unwrap()
        .set(
            "exporters.loki",
            json!({ "url": "https://127.0.0.1:1/loki/api/v1/push", "tls": { "ca_file": ca.display().to_string() } }),
        )
        .yaml();
    std::fs::write(&agent.config_path, unstartable).unwrap();
    let refused = client.post(format!("{base}/-/reload")).send().await.unwrap();
    let (code, body) = (refused.status().as_u16(), refused.text().await.unwrap());
    report(
        "POST /-/reload with an exporter that cannot start",
        "exporters.loki.tls.ca_file absent",
        &format!("{code} {body:?}"),
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("exporters.loki: cannot start: reading tls.ca_file"), "{body}");
    assert_eq!(agent.metric_sum("lgtm_agent_config_reloads_total", &["invalid"]).await, 3.0);
    assert_eq!(agent.pid(), pid);
    assert!(client.post(format!("http://127.0.0.1:{http_a}/v1/traces")).send().await.is_ok(), "old config serves");

    // A changed valid file: applied (the receiver moves), same process.
    std::fs::write(&agent.config_path, config(http_b)).unwrap();
    let applied = client.post(format!("{base}/-/reload")).send().await.unwrap();
    assert_eq!(applied.status().as_u16(), 200);
    assert_eq!(applied.text().await.unwrap(), "reloading\n");
    let moved = eventually(Duration::from_secs(20), "the receiver on the new port", || {
        let url = format!("http://127.0.0.1:{http_b}/v1/traces");
        async move { reqwest::Client::new().post(&url).send().await.ok().map(|r| r.status().as_u16()) }
    })
    .await;
    eventually(Duration::from_secs(20), "ready again", || {
        let url = format!("{base}/readyz");
        async move { get(&url).await.filter(|(s, _)| *s == 200) }
    })
    .await;
    assert_eq!(agent.pid(), pid);
    assert!(Process::Pid(pid).rss_bytes() > 0, "the same process runs on");
    let old = client.post(format!("http://127.0.0.1:{http_a}/v1/traces")).send().await;
    report(
        "POST /-/reload with a changed file",
        &format!("otlp.http 127.0.0.1:{http_a} -> 127.0.0.1:{http_b}"),
        &format!(
            "200 reloading; new port answers {moved}; old port {}; pid {pid} unchanged",
            if old.is_err() { "closed" } else { "open" }
        ),
    );
    assert!(old.is_err(), "the old port is closed");
    assert_eq!(agent.metric_sum("lgtm_agent_config_last_reload_successful", &[]).await, 1.0);
    let status = agent.terminate(Duration::from_secs(10)).await;
    assert!(status.success(), "{}", agent.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_enable_reload_post_reload_is_404_and_sighup_does_not_kill() {
    let tmp = tempfile::tempdir().unwrap();
    let admin = free_port();
    let yaml = AgentConfig::new("it-hostile", &tmp.path().join("data"), admin).yaml();
    let mut agent = AgentProcess::start(tmp.path(), &yaml, admin).await;
    let code = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{admin}/-/reload"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16();
    let _ = Command::new("kill").args(["-HUP", &agent.pid().to_string()]).status();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ready = get(&format!("http://127.0.0.1:{admin}/readyz")).await;
    report(
        "POST /-/reload and SIGHUP, reload not enabled",
        "POST, then SIGHUP",
        &format!("{code}; /readyz after SIGHUP {ready:?}"),
    );
    assert_eq!(code, 404);
    assert_eq!(ready.map(|r| r.0), Some(200));
    assert!(agent.terminate(Duration::from_secs(10)).await.success());
}

// ---------------------------------------------------------------------------------------------
// Item 2: slow clients and connection caps

/// Opens a connection that announces a 15 MB body (under max_request_size) and then sends one byte every `every`, until
/// the agent closes it; returns how long that took and what the agent answered.
async fn trickle(addr: String, every: Duration, give_up: Duration) -> (Duration, String) {
    let started = Instant::now();
    let Ok(mut conn) = tokio::net::TcpStream::connect(&addr).await else {
        return (started.elapsed(), "connect failed".into());
    };
    let head =
        "POST /api/v2/spans HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 15000000\r\n\r\n[";
    if conn.write_all(head.as_bytes()).await.is_err() {
        return (started.elapsed(), "closed".into());
    }
    let mut answer = Vec::new();
    let mut buf = [0u8; 512];
    while started.elapsed() < give_up {
        tokio::select! {
            n = conn.read(&mut buf) => match n {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            },
            _ = tokio::time::sleep(every) => {
                if conn.write_all(b" ").await.is_err() {
                    break;
                }
            }
        }
    }
    let first = String::from_utf8_lossy(&answer).lines().next().unwrap_or("closed").to_string();
    (started.elapsed(), first)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_timed_out_and_excess_connections_refused_while_a_good_client_is_served() {
    let tmp = tempfile::tempdir().unwrap();
    let admin = free_port();
    let zipkin = free_port();
    let yaml = AgentConfig::new("it-hostile", &tmp.path().join("data"), admin)
        .set("otlp", receivers_off())
        .set("otlp.zipkin", format!("127.0.0.1:{zipkin}"))
        // The bodies announced are 15 MB: above the 4 MiB default, they would be refused at once.
        .set("otlp.max_request_size", "16MiB")
        .set("otlp.limits", json!({ "header_timeout": "3s", "request_timeout": "2s", "max_connections": 210 }))
        .set("exporters.tempo", json!({ "console": true }))
        .yaml();
    let agent = AgentProcess::start(tmp.path(), &yaml, admin).await;
    let pid = agent.pid();
    let addr = format!("127.0.0.1:{zipkin}");
    let before = Process::Pid(pid).peak_rss_bytes();

    // 200 clients trickle a 1 GB body, one byte every 200 ms.
    let slow: Vec<_> = (0..200)
        .map(|_| tokio::spawn(trickle(addr.clone(), Duration::from_millis(200), Duration::from_secs(15))))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // A well-behaved client meanwhile.
    let good = reqwest::Client::new()
        .post(format!("http://{addr}/api/v2/spans"))
        .header("content-type", "application/json")
        .body(r#"[{"traceId":"5af7183fb1d4cf5f","id":"352bff9a74ca9ad2","name":"good","localEndpoint":{"serviceName":"ok"}}]"#)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .map(|r| r.status().as_u16());
    let mut closed_after = Vec::new();
    let mut answers = std::collections::BTreeMap::<String, usize>::new();
    for s in slow {
        let (took, answer) = s.await.unwrap();
        closed_after.push(took);
        *answers.entry(answer).or_default() += 1;
    }
    let longest = closed_after.iter().max().copied().unwrap_or_default();
    let timeouts = agent.metric_sum("lgtm_agent_receiver_timeouts_total", &["zipkin"]).await;
    let peak = Process::Pid(pid).peak_rss_bytes();
    report(
        "200 clients trickling a 15 MB body (request_timeout 2s, max_connections 210)",
        "one byte every 200 ms each; a good Zipkin request 0.5 s in",
        &format!(
            "good client {good:?}; slow ones closed after at most {longest:?} with {answers:?}; timeouts_total {timeouts}; VmHWM {} -> {} MiB",
            before / 1048576,
            peak / 1048576
        ),
    );
    assert_eq!(good.as_ref().ok(), Some(&202), "the good client is served meanwhile: {good:?}");
    assert!(longest < Duration::from_secs(6), "every slow client closed within the request timeout: {longest:?}");
    assert_eq!(timeouts, 200.0);
    assert_eq!(answers.get("HTTP/1.1 408 Request Timeout"), Some(&200), "{answers:?}");

    // 260 connections that send nothing: 210 are held until the header timeout (3 s), 50 refused.
    let idle: Vec<_> = (0..260)
        .map(|_| {
            let addr = addr.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let mut conn = tokio::net::TcpStream::connect(&addr).await.ok()?;
                let mut buf = [0u8; 64];
                let _ = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf)).await;
                Some(started.elapsed())
            })
        })
        .collect();
    let mut held = Vec::new();
    for c in idle {
        held.push(c.await.unwrap().unwrap_or_default());
    }
    let refused = agent.metric_sum("lgtm_agent_receiver_connections_refused_total", &["zipkin"]).await;
    let quick = held.iter().filter(|d| **d < Duration::from_millis(700)).count();
    let longest = held.iter().max().copied().unwrap_or_default();
    report(
        "260 idle connections (header_timeout 3s, max_connections 210)",
        "connect, send nothing",
        &format!("refused_total {refused}; {quick} closed at once; all closed within {longest:?}"),
    );
    assert!(refused >= 50.0, "at least the 50 over the cap refused: {refused}");
    assert!(longest < Duration::from_secs(6), "idle connections closed by the header timeout: {longest:?}");
    let served = agent.metric_sum("lgtm_agent_zipkin_received_total", &[]).await;
    assert_eq!(served, 1.0);
}

// ---------------------------------------------------------------------------------------------
// Item 1: memory of one request

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_request_takes_at_most_four_times_its_size_in_memory() {
    use lgtm_integration::bench_request_memory::{cases, measure, HEADER};
    // 6 MiB: large against the agent's ~25 MiB at rest, small enough for the debug build to convert
    // 6 MiB of 25-byte Zipkin spans in well under a minute (`bench request-memory` uses 15 MiB).
    const SIZE: usize = 6 * 1024 * 1024;
    let tmp = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let cases = cases(SIZE);
    println!("requests built in {:.1} s", started.elapsed().as_secs_f64());
    let mut table = Vec::new();
    let mut over = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let dir = tmp.path().join(i.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        let started = Instant::now();
        let row = measure(&agent_binary(), &dir, case).await.unwrap();
        println!("{} ({:.1} s)", row.markdown(), started.elapsed().as_secs_f64());
        if !matches!(row.answer.as_str(), "200" | "202" | "OK") {
            over.push(format!("{} {}: answered {}", row.receiver, row.encoding, row.answer));
        }
        if case.bounded && row.per_byte() > 4.0 {
            over.push(format!("{} {}: {:.2}", row.receiver, row.encoding, row.per_byte()));
        }
        table.push(row.markdown());
    }
    println!("[hostile_clients] peak RSS growth per request byte (debug build)\n{HEADER}");
    for row in &table {
        println!("{row}");
    }
    assert!(over.is_empty(), "over 4 bytes of peak RSS per request byte, or refused: {over:?}");
}

/// Requests taken in parts lose nothing: an OTLP/gRPC metrics request of 20,000 points of one
/// gauge (about ten parts of 64 KiB) and a JSON one over HTTP of 5,000, each under a
/// resource with attributes, arrive at Mimir as one series per point, each once, with one
/// `target_info` per resource; the received counter says every point.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_requests_taken_in_parts_arrive_whole() {
    use lgtm_integration::bench_request_memory::grpc_unary;
    use lgtm_integration::fake_mimir::FakeMimir;
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
    use opentelemetry_proto::tonic::metrics::v1::{
        metric, number_data_point, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
    };
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use prost::Message;

    let tmp = tempfile::tempdir().unwrap();
    let mimir = FakeMimir::start(1e12, 1e12).await;
    let (admin, grpc, http) = (free_port(), free_port(), free_port());
    let yaml = AgentConfig::new("parts", &tmp.path().join("data"), admin)
        .set("otlp", receivers_off())
        .set("otlp.grpc", format!("127.0.0.1:{grpc}"))
        .set("otlp.http", format!("127.0.0.1:{http}"))
        .set("exporters.mimir", json!({ "url": mimir.push_url() }))
        .yaml();
    let agent = AgentProcess::launch(&agent_binary(), tmp.path(), &yaml, admin, &[]).await.unwrap();
    let kv = |k: &str, v: &str| KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(v.into())) }),
        ..Default::default()
    };
    let now_ns = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    const POINTS: u64 = 20_000;
    let request = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![kv("service.name", "a"), kv("host", "h1")],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "g".into(),
                    data: Some(metric::Data::Gauge(Gauge {
                        data_points: (0..POINTS)
                            .map(|i| NumberDataPoint {
                                time_unix_nano: now_ns,
                                value: Some(number_data_point::Value::AsInt(i as i64)),
                                attributes: vec![kv("i", &i.to_string())],
                                ..Default::default()
                            })
                            .collect(),
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec();
    assert!(request.len() > 5 * 64 * 1024, "several parts: {}", request.len());
    grpc_unary(grpc, "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export", request)
        .await
        .unwrap()
        .expect("taken");
    let mut json = String::from(
        r#"{"resourceMetrics":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"b"}},{"key":"host","value":{"stringValue":"h2"}}]},"scopeMetrics":[{"metrics":[{"name":"j","gauge":{"dataPoints":["#,
    );
    for i in 0..5_000 {
        if i > 0 {
            json.push(',');
        }
        json.push_str(&format!(
            r#"{{"asInt":"{i}","timeUnixNano":"{now_ns}","attributes":[{{"key":"i","value":{{"stringValue":"{i}"}}}}]}}"#
        ));
    }
    json.push_str("]}}]}]}]}");
    let answer = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{http}/v1/metrics"))
        .header("content-type", "application/json")
        .body(json)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 200);
    let counted = |prefix: &'static str| {
        let state = mimir.state();
        let series: Vec<usize> = state.samples.iter().filter(|(k, _)| k.starts_with(prefix)).map(|(_, n)| *n).collect();
        series
    };
    eventually(Duration::from_secs(30), "every series at Mimir", || async {
        (counted("g{").len() == POINTS as usize && counted("j{").len() == 5_000).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (g, j, info) = (counted("g{"), counted("j{"), counted("target_info{"));
    report(
        "OTLP metrics in parts (gRPC protobuf 20,000 points, HTTP JSON 5,000)",
        "2 requests",
        &format!("{} + {} series, {} target_info", g.len(), j.len(), info.len()),
    );
    assert!(g.iter().chain(&j).all(|n| *n == 1), "each point once");
    assert_eq!(info, [1, 1], "one target_info per resource");
    let received = agent.metric_sum("lgtm_agent_otlp_received_total", &["signal=\"metrics\""]).await;
    assert_eq!(received, (POINTS + 5_000) as f64);
}

// ---------------------------------------------------------------------------------------------
// Item 2: gRPC request bytes in the in-flight budget

/// Starts an OTLP/gRPC `Export` whose message announces `announced` bytes, sends `sent` of them
/// and stalls until the returned sender is dropped. The agent buffers what came (tonic reads a
/// whole message before decoding it).
async fn stalled_grpc_export(
    port: u16,
    announced: usize,
    sent: usize,
) -> (futures::channel::mpsc::Sender<Result<bytes::Bytes, std::io::Error>>, tokio::task::JoinHandle<String>) {
    use futures::SinkExt;
    use tonic::codegen::{http, Service};
    let mut channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await
        .expect("connect to otlp.grpc");
    let (mut tx, rx) = futures::channel::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(4);
    let body = tonic::body::Body::new(axum::body::Body::from_stream(rx));
    let request = http::Request::builder()
        .method("POST")
        .uri(format!("http://127.0.0.1:{port}/opentelemetry.proto.collector.trace.v1.TraceService/Export"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(body)
        .unwrap();
    futures::future::poll_fn(|cx| channel.poll_ready(cx)).await.unwrap();
    let call = channel.call(request);
    let answer = tokio::spawn(async move {
        match call.await {
            Ok(r) => format!("{:?}", tonic::Status::from_header_map(r.headers()).map(|s| s.code())),
            Err(e) => format!("error: {e}"),
        }
    });
    let mut prefix = vec![0u8];
    prefix.extend_from_slice(&(announced as u32).to_be_bytes());
    tx.send(Ok(bytes::Bytes::from(prefix))).await.unwrap();
    let chunk = bytes::Bytes::from(vec![0u8; 64 * 1024]);
    let mut n = 0;
    while n < sent {
        tx.send(Ok(chunk.slice(..(sent - n).min(chunk.len())))).await.unwrap();
        n += chunk.len();
    }
    (tx, answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_requests_count_in_the_in_flight_budget() {
    use lgtm_integration::bench_request_memory::otlp_proto_tiny;
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use prost::Message;
    const MIB: usize = 1024 * 1024;
    let tmp = tempfile::tempdir().unwrap();
    let (admin, grpc, http) = (free_port(), free_port(), free_port());
    let yaml = AgentConfig::new("it-hostile", &tmp.path().join("data"), admin)
        .set("otlp", receivers_off())
        .set("otlp.grpc", format!("127.0.0.1:{grpc}"))
        .set("otlp.http", format!("127.0.0.1:{http}"))
        .set("otlp.max_request_size", "4MiB")
        .set("otlp.limits.max_in_flight_bytes", "4MiB")
        .set(
            "exporters.tempo",
            json!({ "url": format!("http://127.0.0.1:{}", free_port()),
            "queue": { "max_memory": "64MiB", "max_disk": "0B" } }),
        )
        .yaml();
    let agent = AgentProcess::start(tmp.path(), &yaml, admin).await;
    let request = ExportTraceServiceRequest::decode(&otlp_proto_tiny(2 * MIB)[..]).unwrap();
    let spans = request.resource_spans[0].scope_spans[0].spans.len() as f64;
    let mut client = TraceServiceClient::connect(format!("http://127.0.0.1:{grpc}")).await.unwrap();

    // One gRPC client holds all but 128 bytes of the 4 MiB budget (a message it never finishes);
    // a second one's 2 MiB does not fit.
    let (stalled, first) = stalled_grpc_export(grpc, 4 * MIB - 64, 4 * MIB - 128).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let second = client.export(request.clone()).await;
    let code = second.as_ref().err().map(|s| s.code());
    let message = second.as_ref().err().map(|s| s.message().to_string()).unwrap_or_default();
    let retry_info = second.as_ref().err().is_some_and(|s| !s.details().is_empty());
    // The budget is the receivers': an HTTP body does not fit either.
    let over_http = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{http}/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .body(request.encode_to_vec())
        .send()
        .await
        .map(|r| r.status().as_u16());
    let busy = agent.metric_sum("lgtm_agent_otlp_rejected_total", &["reason=\"busy\"", "signal=\"traces\""]).await;
    // The stalled client gives up: its bytes are given back, the same request is taken.
    drop(stalled);
    let first = tokio::time::timeout(Duration::from_secs(10), first).await.unwrap().unwrap();
    let retried = client.export(request.clone()).await;
    let received =
        agent.metric_sum("lgtm_agent_otlp_received_total", &["signal=\"traces\"", "transport=\"grpc\""]).await;
    report(
        "gRPC request bytes in otlp.limits.max_in_flight_bytes (4 MiB)",
        "one OTLP/gRPC Export stalled 64 bytes before its end (4 MiB - 128 bytes sent); then a 2 MiB Export (gRPC), the same over HTTP; the first client gives up; the 2 MiB Export again",
        &format!(
            "second: {code:?} ({message}), RetryInfo {retry_info}; HTTP {over_http:?}; busy counted {busy}; stalled one ended {first}; retried: {:?}, spans received {received} of {spans}",
            retried.as_ref().map(|_| "OK").map_err(|s| s.code())
        ),
    );
    assert_eq!(code, Some(tonic::Code::ResourceExhausted), "{second:?}");
    assert!(message.contains("max_in_flight_bytes"), "{message}");
    assert!(retry_info, "RetryInfo: clients retry later");
    assert_eq!(over_http.unwrap(), 429);
    assert_eq!(busy, 2.0, "the gRPC and the HTTP refusals counted");
    assert!(retried.is_ok(), "{retried:?}");
    assert_eq!(received, spans);
}
