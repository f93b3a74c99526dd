//! Differential conformance against the real Prometheus (Debian's 2.42, in agent mode): the same
//! exposition bodies, served by one local target on many paths, are scraped at once by Prometheus
//! and by `lgtm-agent`, one job per case, and both remote-write into a receiver here that keeps
//! every label, value and timestamp. Per case the two streams must agree on `up`, the series set,
//! the values, explicit timestamps and the `scrape_*` series.
//!
//! Inputs: the upstream vectors in `../shared/conformance/` (read at test time, never copied into
//! the project: Prometheus's and prometheus/common's parser tests, the OpenMetrics test suite,
//! Prometheus's relabel tests), cases written here from the text format and OpenMetrics
//! specifications, and a bounded, seeded generator of mutated bodies and of relabel rule sets
//! with label sets (`CONFORMANCE_GENERATED` cases, default 150; `CONFORMANCE_SEED` to vary them).
//!
//! What is compared, and the deliberate normalisations (see ARCHITECTURE.md, "Conformance"):
//! - per side, the scrape with the most samples scraped (bodies do not change; a scrape that
//!   timed out on a loaded machine says nothing about the body), each series' sample in it; when
//!   Prometheus sends a series twice in one scrape (a repeated series in a body: its agent mode
//!   appends both), the first sample is the one compared, the one a Prometheus server keeps and
//!   the only one the agent sends;
//! - timestamps only where the body gives one (the two scrapers scrape at different moments),
//!   and only those after the start of the run (see `digest`);
//! - `scrape_duration_seconds` only for presence; -0 and 0 as one value.
//!
//! The oracle is Debian's Prometheus on `PATH` (2.42, what CI runs); `CONFORMANCE_PROMETHEUS=<path>`
//! names another, e.g. the current 3.x that `scripts/build-prometheus.sh` builds. Where 2.42 and
//! 3.x differ the agent follows 3.x, so each version has its list of cases known to differ and
//! how (`DIFFER_FROM_PROMETHEUS_2`, `DIFFER_FROM_PROMETHEUS_3`, checked by `differs_as`): any
//! other difference, or a listed case that agrees, fails the test.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use base64::Engine;
use lgtm_integration::agent::AgentProcess;
use lgtm_integration::agent_config::{AgentConfig, Backoff};
use lgtm_integration::peers::prometheus::PrometheusAgent;
use lgtm_integration::{free_port, require};
use lgtm_pipeline::proto::{WriteRequest, STALE_NAN_BITS};
use prost::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

const CLUSTER: &str = "conformance";
const OM: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Where a case comes from; each kind is counted on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Origin {
    Upstream,
    Spec,
    Generated,
}

#[derive(Debug, Clone)]
struct Case {
    id: String,
    origin: Origin,
    content_type: String,
    body: Vec<u8>,
    /// Static target labels (besides `job`).
    labels: BTreeMap<String, String>,
    relabel_configs: Vec<Value>,
    metric_relabel_configs: Vec<Value>,
}

impl Case {
    fn body(id: impl Into<String>, origin: Origin, content_type: &str, body: impl Into<Vec<u8>>) -> Case {
        Case {
            id: id.into(),
            origin,
            content_type: content_type.into(),
            body: body.into(),
            labels: BTreeMap::new(),
            relabel_configs: vec![],
            metric_relabel_configs: vec![],
        }
    }
}

fn conformance_file(name: &str) -> Option<Value> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance").join(name);
    let text = std::fs::read_to_string(&path).ok()?;
    Some(serde_json::from_str(&text).expect("a conformance file is JSON"))
}

/// The upstream parser vectors, and Prometheus's relabel tests run both ways (as
/// `metric_relabel_configs` on a series carrying the input labels, and as `relabel_configs` on
/// a static target carrying them).
fn upstream_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    if let Some(Value::Array(vectors)) = conformance_file("exposition.json") {
        for v in vectors {
            let body = base64::engine::general_purpose::STANDARD.decode(v["body_b64"].as_str().unwrap()).unwrap();
            cases.push(Case::body(
                v["id"].as_str().unwrap(),
                Origin::Upstream,
                v["content_type"].as_str().unwrap(),
                body,
            ));
        }
    }
    if let Some(Value::Array(vectors)) = conformance_file("relabel.json") {
        for v in vectors {
            let (Some(input), Some(rules)) = (v["input"].as_object(), v["rules"].as_array()) else { continue };
            let input: BTreeMap<String, String> =
                input.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect();
            // Prometheus's relabel tests build some rules its config loader refuses (`0${3}` as a
            // target): both programs refuse such a config whole, as
            // `relabel_validation_agrees_with_promtool` checks, so they are not run here.
            if !rules.iter().all(valid_rule) {
                continue;
            }
            let mut case = Case::body(v["id"].as_str().unwrap(), Origin::Upstream, TEXT, "");
            if v["mode"] == "target" {
                case.labels = input;
                case.relabel_configs = rules.clone();
                case.body = b"conformance_sample 1\n".to_vec();
            } else {
                case.body = format!("conformance_sample{} 1\n", label_set(&input)).into_bytes();
                case.metric_relabel_configs = rules.clone();
            }
            cases.push(case);
        }
    }
    cases
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

/// Whether the agent's (one) relabel validator accepts the rule. A rule with a `null` field is
/// left out too (Prometheus 2.42 drops such a target at run time while its config check passes).
fn valid_rule(rule: &Value) -> bool {
    rule.as_object().is_some_and(|o| o.values().all(|v| !v.is_null()))
        && serde_json::from_value::<lgtm_config::RelabelConfig>(rule.clone()).is_ok_and(|c| c.check().is_ok())
}

fn label_set(labels: &BTreeMap<String, String>) -> String {
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
    format!("{{{}}}", inner.join(","))
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Cases written from the specifications: the Prometheus text format 0.0.4
/// (prometheus.io/docs/instrumenting/exposition_formats) and OpenMetrics 1.0, valid and invalid.
fn spec_cases() -> Vec<Case> {
    let text: &[(&str, &str)] = &[
        ("text-full-family", "# HELP http_requests_total The total.\n# TYPE http_requests_total counter\nhttp_requests_total{method=\"post\",code=\"200\"} 1027 {MS}\nhttp_requests_total{method=\"post\",code=\"400\"}    3 {MS}\n"),
        ("text-escapes", "msdos_file_access_time_seconds{path=\"C:\\\\DIR\\\\FILE.TXT\",error=\"Cannot find file:\\n\\\"FILE.TXT\\\"\"} 1.458255915e9\n"),
        ("text-unknown-escape", "a{x=\"\\t\\q\"} 1\n"),
        ("text-minimal", "metric_without_timestamp_and_labels 12.47\n"),
        ("text-special-values", "a -Inf\nb +Inf\nc NaN\nd -0\ne 1e-3\nf .5\ng 5.\nh +7\n"),
        ("text-value-spellings", "a Inf\nb inf\nc nan\nd infinity\n"),
        ("text-bad-signed-nan", "a 1\nb -NaN\n"),
        ("om-bad-signed-nan", "a 1\nb +nan\n# EOF\n"),
        ("text-hex-float", "a 0x1p3\n"),
        ("text-underscore-value", "a 1_000\n"),
        ("text-histogram", "# HELP h A histogram.\n# TYPE h histogram\nh_bucket{le=\"0.05\"} 24054\nh_bucket{le=\"+Inf\"} 144320\nh_sum 53423\nh_count 144320\n"),
        ("text-summary", "# TYPE s summary\ns{quantile=\"0.01\"} 3102\ns{quantile=\"0.99\"} 76656\ns_sum 1.7560473e+07\ns_count 2693\n"),
        ("text-untyped", "# TYPE u untyped\nu{a=\"b\"} 1\n"),
        ("text-blanks-tabs", "  a\t{ x = \"1\" ,\ty=\"2\" , }\t 3 \t\n"),
        ("text-empty-label-set", "a{} 1\n"),
        ("text-empty-label-value", "a{x=\"\"} 1\n"),
        ("text-colons", "a:b:c 1\n"),
        ("text-utf8-value", "a{x=\"héllo ✓ 日本\"} 1\n"),
        ("text-value-with-braces", "a{x=\"}{,=\"} 1\n"),
        ("text-comments", "# just a comment\n#another\n# HELP\n# TYPE\na 1\n"),
        ("text-help-no-text", "# HELP a\na 1\n"),
        ("text-type-after-samples", "a 1\n# TYPE a gauge\n"),
        ("text-two-types", "# TYPE a gauge\n# TYPE a counter\na 1\n"),
        ("text-raw-lf-in-value", "a{x=\"1\n2\"} 1\nb 2\n"),
        ("text-negative-timestamp", "a 1 -1000\n"),
        ("text-timestamp", "a 1 {MS}\nb{x=\"y\"} 2 {MS}\n"),
        ("text-leading-blanks", "a 1\n  b 2\n"),
        ("text-no-final-newline", "a 1\nb 2"),
        ("text-empty-body", ""),
        ("text-only-blank-lines", "\n\n   \n"),
        ("text-repeated-series", "a 1\nb 2\na 3\n"),
        ("text-repeated-series-spelled-differently", "a{x=\"1\",y=\"2\"} 1\na{y=\"2\",x=\"1\"} 2\n"),
        ("text-long-value", "a{x=\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"} 1\n"),
        ("text-instance-conflict", "a{instance=\"mine\",job=\"theirs\"} 1\n"),
        // Invalid.
        ("text-bad-duplicate-label", "a{x=\"1\",x=\"2\"} 1\n"),
        ("text-bad-name", "0a 1\n"),
        ("text-bad-label-name", "a{0b=\"x\"} 1\n"),
        ("text-bad-no-value", "a\n"),
        ("text-bad-float-timestamp", "a 1 1.5\n"),
        ("text-bad-value", "a one\n"),
        ("text-bad-unterminated", "a{x=\"1} 1\n"),
        ("text-bad-crlf", "a 1\r\nb 2\r\n"),
        ("text-bad-type", "# TYPE a gauges\na 1\n"),
        ("text-bad-type-trailing-blank", "# TYPE a gauge \na 1\n"),
        ("text-bad-type-missing", "# TYPE a\na 1\n"),
        ("text-bad-openmetrics-type", "# TYPE a info\na 1\n"),
        ("text-bad-escaped-lf", "a{x=\"1\\\n2\"} 1\n"),
        ("text-bad-after-good", "a 1\nb 2\nc{ 3\n"),
        ("text-quantile-forms", "# TYPE s summary\ns{quantile=\"0\"} 1\ns{quantile=\"0x1p-3\"} 2\ns{quantile=\"x\"} 3\n# TYPE g gauge\ng{quantile=\"1\",le=\"1\"} 4\n"),
        ("text-bad-exemplar", "a_total 1 # {x=\"1\"} 1\n"),
        ("text-bad-trailing", "a 1 2 3\n"),
    ];
    let om: &[(&str, &str)] = &[
        ("om-minimal", "a 1\n# EOF\n"),
        ("om-eof-no-newline", "a 1\n# EOF"),
        ("om-counter", "# TYPE c counter\n# HELP c Help.\nc_total 17 {S}.789 # {id=\"k\"} 0.67 1520879607.7\nc_created 1520430000.123\n# EOF\n"),
        ("om-histogram", "# TYPE h histogram\nh_bucket{le=\"0.1\"} 8 # {id=\"a\"} 0.05\nh_bucket{le=\"+Inf\"} 17\nh_count 17\nh_sum 324789.3\nh_created 1520430000.123\n# EOF\n"),
        ("om-gaugehistogram", "# TYPE g gaugehistogram\ng_bucket{le=\"1\"} 1 # {x=\"1\"} 1\ng_bucket{le=\"+Inf\"} 2\ng_gcount 2\ng_gsum 3\n# EOF\n"),
        ("om-stateset", "# TYPE s stateset\ns{s=\"a\"} 1\ns{s=\"b\"} 0\n# EOF\n"),
        ("om-info", "# TYPE i info\ni_info{version=\"1.0\"} 1\n# EOF\n"),
        ("om-summary", "# TYPE s summary\ns{quantile=\"0.5\"} 1\ns_sum 2\ns_count 3\ns_created 4\n# EOF\n"),
        ("om-unknown", "# TYPE u unknown\nu 1\n# EOF\n"),
        ("om-unit", "# TYPE a_seconds gauge\n# UNIT a_seconds seconds\na_seconds 1\n# EOF\n"),
        ("om-unit-empty", "# UNIT a_seconds \na_seconds 1\n# EOF\n"),
        ("om-help-empty", "# HELP a \na 1\n# EOF\n"),
        ("om-escapes", "a{x=\"\\\\ \\\" \\n\"} 1\n# EOF\n"),
        ("om-timestamps", "a 1 {S}\nb 1 {S}.5\nc 1 {S}.0019\nd 1 {S}.7890\ne 1 {S}e0\n# EOF\n"),
        ("om-cut-short", "a 1\nb 2"),
        ("om-bad-space-after-timestamp", "a 1 {S} \n# EOF\n"),
        ("om-bad-nul-in-exemplar", "a_total 1 # {x=\"\0\"} 1\n# EOF\n"),
        ("om-exemplar-on-gauge-named-total", "# TYPE a gauge\na_total 1 # {x=\"1\"} 1\n# EOF\n"),
        ("om-created-of-gauge", "# TYPE g gauge\ng_created 5\n# EOF\n"),
        ("om-repeated-series", "a 1\na 2\n# EOF\n"),
        // Refused by Prometheus 2.42, taken by Prometheus 3 (and the agent).
        ("om-empty", ""),
        ("om-exemplar-on-gauge", "# TYPE a gauge\na 1 # {x=\"1\"} 1\n# EOF\n"),
        ("om-exemplar-on-info", "# TYPE a info\na_info 1 # {x=\"1\"} 1\n# EOF\n"),
        ("om-exemplar-on-stateset", "# TYPE s stateset\ns{s=\"a\"} 1 # {x=\"1\"} 1\n# EOF\n"),
        ("om-exemplar-on-sum", "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_sum 1 # {x=\"1\"} 1\n# EOF\n"),
        ("om-exemplar-on-created", "# TYPE c counter\nc_total 1\nc_created 1 # {x=\"1\"} 1\n# EOF\n"),
        ("om-trailing-comma", "a{x=\"1\",} 1\n# EOF\n"),
        ("om-le-forms", "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"1e+05\"} 2\nh_bucket{le=\"+INF\"} 3\n# TYPE g gaugehistogram\ng_bucket{le=\"1\"} 1\n# EOF\n"),
        // Invalid.
        ("om-bad-missing-eof", "a 1\n"),
        ("om-bad-after-eof", "# EOF\na 1\n"),
        ("om-bad-empty-line", "a 1\n\n# EOF\n"),
        ("om-bad-comment", "# hello\na 1\n# EOF\n"),
        ("om-bad-help-no-text", "# HELP a\na 1\n# EOF\n"),
        ("om-bad-unit-no-text", "# UNIT a\na 1\n# EOF\n"),
        ("om-bad-unit-not-suffix", "# UNIT a_seconds bytes\na_seconds 1\n# EOF\n"),
        ("om-bad-type-trailing-space", "# TYPE a gauge \na 1\n# EOF\n"),
        ("om-bad-untyped", "# TYPE a untyped\na 1\n# EOF\n"),
        ("om-bad-two-spaces", "a  1\n# EOF\n"),
        ("om-bad-blank-in-labels", "a{x=\"1\", y=\"2\"} 1\n# EOF\n"),
        ("om-bad-raw-lf", "a{x=\"1\n2\"} 1\n# EOF\n"),
        ("om-bad-nan-timestamp", "a 1 NaN\n# EOF\n"),
        ("om-bad-trailing-space", "a 1 \n# EOF\n"),
        ("om-bad-eof-trailing-space", "a 1\n# EOF \n"),
        ("om-bad-exemplar-no-value", "a_total 1 # {x=\"1\"}\n# EOF\n"),
    ];
    // Explicit timestamps a little in the future, so that Prometheus's remote write sends them
    // (see `digest`): `{MS}` in milliseconds, `{S}` in seconds.
    let future_ms = now_ms() + 120_000;
    let dated = |b: &str| b.replace("{MS}", &future_ms.to_string()).replace("{S}", &(future_ms / 1000).to_string());
    let mut cases: Vec<Case> = text.iter().map(|(id, b)| Case::body(*id, Origin::Spec, TEXT, dated(b))).collect();
    cases.extend(om.iter().map(|(id, b)| Case::body(*id, Origin::Spec, OM, dated(b))));
    cases.push(Case::body("text-bad-invalid-utf8", Origin::Spec, TEXT, &b"a{x=\"\xff\"} 1\n"[..]));
    // Content negotiation: unknown and missing types fail without `fallback_scrape_protocol`
    // (Prometheus 3; 2.42 took the text format).
    cases.push(Case::body("ct-unknown", Origin::Spec, "text/html", "a 1\n"));
    cases.push(Case::body("ct-none", Origin::Spec, "", "a 1\n"));
    // Metric relabeling removing the name (scrape fails) or every label (a drop).
    let mut c = Case::body("relabel-drops-name", Origin::Spec, TEXT, "b 2\na{x=\"1\"} 1\n");
    c.metric_relabel_configs = vec![json!({"action": "labeldrop", "regex": "__name__"})];
    cases.push(c);
    let mut c = Case::body("relabel-drops-everything", Origin::Spec, TEXT, "a{x=\"1\"} 1\nb 2\n");
    c.metric_relabel_configs = vec![json!({"action": "labeldrop", "regex": ".*"})];
    cases.push(c);
    cases
}

/// Bounded mutations of valid bodies, and generated relabel rule sets over generated label
/// sets, from a fixed seed so a failure replays.
fn generated_cases(seeds: &[Case], count: usize, seed: u64) -> Vec<Case> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut cases = Vec::new();
    let bodies: Vec<&Case> = seeds
        .iter()
        .filter(|c| c.relabel_configs.is_empty() && c.metric_relabel_configs.is_empty() && c.body.len() < 4096)
        .collect();
    let relabel_share = count / 3;
    while cases.len() < count - relabel_share {
        let base = bodies[rng.random_range(0..bodies.len())];
        let mut body = base.body.clone();
        for _ in 0..rng.random_range(1..=3) {
            mutate(&mut body, &mut rng);
        }
        let ct = if rng.random_bool(0.9) {
            base.content_type.clone()
        } else if base.content_type == OM {
            TEXT.into()
        } else {
            OM.into()
        };
        cases.push(Case::body(format!("gen-{}-from-{}", cases.len(), base.id), Origin::Generated, &ct, body));
    }
    let mut tries = 0;
    while cases.len() < count && tries < count * 20 {
        tries += 1;
        let labels = random_labels(&mut rng);
        let rules: Vec<Value> = (0..rng.random_range(1..=3)).map(|_| random_rule(&mut rng)).collect();
        // Only valid rule sets: an invalid one makes both programs refuse the whole config
        // (the verdicts on invalid rules are compared with promtool in `relabel_validation`).
        if !rules.iter().all(valid_rule) {
            continue;
        }
        let mut case = Case::body(format!("gen-{}-relabel", cases.len()), Origin::Generated, TEXT, "");
        if rng.random_bool(0.5) {
            case.id.push_str("-target");
            case.labels = labels;
            case.relabel_configs = rules;
            case.body = b"conformance_sample 1\n".to_vec();
        } else {
            case.id.push_str("-metric");
            case.body = format!("conformance_sample{} 1\n", label_set(&labels)).into_bytes();
            case.metric_relabel_configs = rules;
        }
        cases.push(case);
    }
    cases
}

fn mutate(body: &mut Vec<u8>, rng: &mut StdRng) {
    const BYTES: &[u8] = b"{}\",= \t\n#\\_:aZ09.-+eE";
    const TOKENS: &[&str] = &[
        "NaN",
        "+Inf",
        "-Inf",
        "1e3",
        "0x1p3",
        "-0",
        "1_0",
        ".5",
        " # {a=\"b\"} 1",
        "_total",
        "_created",
        "\n# EOF\n",
        "# TYPE x counter\n",
        "# HELP x h\n",
        "# UNIT x_s s\n",
        "\r",
        "é",
        "\"",
        "{}",
        "{a=\"b\"}",
        " 1700000000000",
    ];
    let len = body.len();
    match rng.random_range(0..6) {
        0 if len > 0 => {
            body.remove(rng.random_range(0..len));
        }
        1 => {
            body.insert(rng.random_range(0..=len), BYTES[rng.random_range(0..BYTES.len())]);
        }
        2 => {
            let at = rng.random_range(0..=len);
            let token = TOKENS[rng.random_range(0..TOKENS.len())].as_bytes();
            body.splice(at..at, token.iter().copied());
        }
        3 => {
            // Duplicate a line.
            let lines: Vec<Vec<u8>> = body.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
            let pick = lines[rng.random_range(0..lines.len())].clone();
            let at = rng.random_range(0..lines.len());
            let mut out = lines;
            out.insert(at, pick);
            *body = out.join(&b'\n');
        }
        4 => {
            // Swap two lines.
            let mut lines: Vec<Vec<u8>> = body.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
            let (a, b) = (rng.random_range(0..lines.len()), rng.random_range(0..lines.len()));
            lines.swap(a, b);
            *body = lines.join(&b'\n');
        }
        _ => {
            // Replace a space-separated token.
            let spaces: Vec<usize> = body.iter().enumerate().filter(|(_, &b)| b == b' ').map(|(i, _)| i).collect();
            if let Some(&at) = spaces.get(rng.random_range(0..spaces.len().max(1))) {
                let end = body[at + 1..].iter().position(|&b| b == b' ' || b == b'\n').map_or(len, |p| at + 1 + p);
                let token = TOKENS[rng.random_range(0..TOKENS.len())].as_bytes();
                body.splice(at + 1..end, token.iter().copied());
            }
        }
    }
}

fn pick<'a>(rng: &mut StdRng, from: &[&'a str]) -> &'a str {
    from[rng.random_range(0..from.len())]
}

fn random_labels(rng: &mut StdRng) -> BTreeMap<String, String> {
    let values = ["a", "b", "ab", "ba", "A", "aB", "", "a;b", "x1", "ÄÖ", "a b"];
    let mut labels = BTreeMap::new();
    for name in ["l_a", "l_b", "l_c"] {
        let value = pick(rng, &values);
        if rng.random_bool(0.8) && !value.is_empty() {
            labels.insert(name.to_string(), value.to_string());
        }
    }
    labels
}

fn random_rule(rng: &mut StdRng) -> Value {
    let sources = ["l_a", "l_b", "l_c", "l_d", "__name__", "job"];
    let regexes = ["(.*)", "a.*", "(a|b)(.*)", ".*b", "x", "", "(.)(.)", "A", "a;(.*)", "l_(.*)", "l_a|l_b"];
    let targets = ["l_a", "l_d", "l_e", "${1}_t", "l_$2"];
    let replacements = ["$1", "${1}x", "$2", "v", "", "${2}${1}", "m_$1"];
    let action = pick(
        rng,
        &[
            "replace",
            "keep",
            "drop",
            "hashmod",
            "lowercase",
            "uppercase",
            "keepequal",
            "dropequal",
            "labelmap",
            "labeldrop",
            "labelkeep",
        ],
    );
    let mut rule = serde_json::Map::new();
    rule.insert("action".into(), json!(action));
    let n_sources = rng.random_range(0..=2);
    let source_labels: Vec<&str> = (0..n_sources).map(|_| pick(rng, &sources)).collect();
    match action {
        "labeldrop" => {
            rule.insert("regex".into(), json!(pick(rng, &["l_a", "l_.*", "l_a|l_b", "x"])));
        }
        "labelkeep" => {
            // Keep what a target needs (`__address__` and the like) and the name.
            rule.insert("regex".into(), json!(format!("__.*|job|{}", pick(rng, &["l_a", "l_.*", "l_b|l_c"]))));
        }
        "labelmap" => {
            rule.insert("regex".into(), json!(pick(rng, &["l_(.*)", "l_(a)", "(l_b)"])));
            rule.insert("replacement".into(), json!(pick(rng, &["m_$1", "${1}_m", "$1"])));
        }
        _ => {
            if !source_labels.is_empty() {
                rule.insert("source_labels".into(), json!(source_labels));
            }
            if matches!(action, "replace" | "keep" | "drop" | "hashmod") && rng.random_bool(0.8) {
                rule.insert("regex".into(), json!(pick(rng, &regexes)));
            }
            if action == "replace" && rng.random_bool(0.7) {
                rule.insert("replacement".into(), json!(pick(rng, &replacements)));
            }
            if matches!(action, "replace" | "hashmod" | "lowercase" | "uppercase" | "keepequal" | "dropequal") {
                let target = if action == "replace" { pick(rng, &targets) } else { pick(rng, &["l_a", "l_d", "l_e"]) };
                rule.insert("target_label".into(), json!(target));
            }
            if action == "hashmod" {
                rule.insert("modulus".into(), json!(rng.random_range(1..8)));
            }
            if matches!(action, "replace" | "keep" | "drop" | "hashmod") && rng.random_bool(0.2) {
                rule.insert("separator".into(), json!(pick(rng, &["", "-", ";;"])));
            }
        }
    }
    Value::Object(rule)
}

// ---- the target and the receiver ----

type Served = Arc<Vec<(String, Vec<u8>)>>;

async fn serve_case(State(cases): State<Served>, UrlPath(i): UrlPath<usize>) -> impl IntoResponse {
    let (ct, body) = cases[i].clone();
    let mut headers = axum::http::HeaderMap::new();
    if !ct.is_empty() {
        headers.insert(header::CONTENT_TYPE, ct.parse().unwrap());
    }
    (headers, body)
}

/// One received series: labels (sorted) and samples in arrival order.
type Received = Arc<Mutex<BTreeMap<String, BTreeMap<Vec<(String, String)>, Vec<(i64, f64)>>>>>;

async fn receive(State(store): State<Received>, UrlPath(who): UrlPath<String>, body: Bytes) -> impl IntoResponse {
    let raw = snap::raw::Decoder::new().decompress_vec(&body).expect("snappy");
    let req = WriteRequest::decode(raw.as_slice()).expect("a WriteRequest");
    let mut store = store.lock().unwrap();
    let side = store.entry(who).or_default();
    for ts in req.timeseries {
        let mut labels: Vec<(String, String)> = ts
            .labels
            .into_iter()
            .filter(|l| !(l.name == "cluster" && l.value == CLUSTER))
            .map(|l| (l.name, l.value))
            .collect();
        labels.sort();
        side.entry(labels).or_default().extend(ts.samples.iter().map(|s| (s.timestamp, s.value)));
    }
    axum::http::StatusCode::NO_CONTENT
}

async fn start_http(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

/// The Prometheus that is the oracle: `CONFORMANCE_PROMETHEUS` (a path, e.g. a current 3.x built
/// by `scripts/build-prometheus.sh`), else Debian's `prometheus` on `PATH`.
fn oracle() -> Option<PathBuf> {
    match std::env::var_os("CONFORMANCE_PROMETHEUS") {
        Some(path) => Some(PathBuf::from(path)),
        None => lgtm_integration::peers::which("prometheus"),
    }
}

fn start_prometheus(config: &Value) -> Option<PrometheusAgent> {
    let bin = oracle()?;
    // YAML is a superset of JSON: the config is written as JSON, escaping done by serde.
    let text = serde_json::to_string_pretty(config).unwrap();
    let prometheus = PrometheusAgent::spawn(&bin, &text, "error").expect("spawn prometheus in agent mode");
    if let Ok(keep) = std::env::var("CONFORMANCE_KEEP_CONFIG") {
        std::fs::copy(prometheus.config_path(), keep).unwrap();
    }
    if let Some(promtool) = lgtm_integration::peers::which("promtool") {
        let out = Command::new(promtool)
            .args(["check", "config"])
            .arg(prometheus.config_path())
            .output()
            .expect("run promtool");
        // Only a refused config matters here: a target that relabeling leaves without an
        // address fails promtool's check but is just dropped by the server, as by the agent.
        let said = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
        assert!(!said.contains("parsing YAML"), "Prometheus refuses the generated config: {said}");
    }
    Some(prometheus)
}

/// The agent's config loader expands `${VAR}` and `$$`: relabel templates are escaped so the
/// agent sees what Prometheus sees (`${1}` is left alone by the loader already).
fn agent_escape(v: &Value) -> Value {
    match v {
        Value::String(s) => {
            let mut out = String::new();
            let mut rest = s.as_str();
            while let Some(i) = rest.find('$') {
                out.push_str(&rest[..i]);
                let tail = &rest[i..];
                if let Some(after) = tail.strip_prefix("$$") {
                    out.push_str("$$$$");
                    rest = after;
                } else if let Some(after) =
                    tail.strip_prefix("${").filter(|a| !a.starts_with(|c: char| c.is_ascii_digit()))
                {
                    out.push_str("$${");
                    rest = after;
                } else {
                    out.push('$');
                    rest = &tail[1..];
                }
            }
            out.push_str(rest);
            Value::String(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(agent_escape).collect()),
        Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), agent_escape(v))).collect()),
        other => other.clone(),
    }
}

// ---- comparison ----

type Series = BTreeMap<Vec<(String, String)>, Vec<(i64, f64)>>;

fn job_of(labels: &[(String, String)]) -> Option<&str> {
    labels.iter().find(|(k, _)| k == "job").map(|(_, v)| v.as_str())
}

fn name_of(labels: &[(String, String)]) -> &str {
    labels.iter().find(|(k, _)| k == "__name__").map_or("", |(_, v)| v.as_str())
}

fn by_job(all: &Series) -> BTreeMap<String, Series> {
    let mut out: BTreeMap<String, Series> = BTreeMap::new();
    for (labels, samples) in all {
        if let Some(job) = job_of(labels) {
            out.entry(job.to_string()).or_default().insert(labels.clone(), samples.clone());
        }
    }
    out
}

fn ups(series: &Series) -> usize {
    series.iter().filter(|(l, _)| name_of(l) == "up").map(|(_, s)| s.len()).sum()
}

fn show_value(v: f64) -> String {
    if v == 0.0 {
        // -0 and 0 are one value (Prometheus's agent mode sends -0 as 0).
        "0".into()
    } else if v.to_bits() == STALE_NAN_BITS {
        "stale".into()
    } else if v.is_nan() {
        "NaN".into()
    } else {
        format!("{v}")
    }
}

fn show(labels: &[(String, String)]) -> String {
    let inner: Vec<String> = labels.iter().filter(|(k, _)| k != "job").map(|(k, v)| format!("{k}={v:?}")).collect();
    inner.join(",")
}

/// What one side did with a case, in comparable form: per series its value in one scrape (and
/// its timestamp when the body gave one). The scrape is the one with the most samples scraped
/// (a scrape that timed out on the loaded test machine is no verdict on the body; bodies do not
/// change, so every other scrape reads the same). Samples the body dates before `since_ms`
/// (the start of the run) are left out: Prometheus's remote write only sends samples newer
/// than its own start (its WAL reader skips older ones), while the agent forwards them and
/// leaves the decision to the backend; those timestamps are checked against the upstream
/// expectations instead.
fn digest(series: &Series, since_ms: i64) -> BTreeMap<String, String> {
    let value_at = |name: &str, ts: i64| -> f64 {
        series
            .iter()
            .filter(|(l, _)| name_of(l) == name)
            .flat_map(|(_, s)| s.iter())
            .find(|(t, _)| *t == ts)
            .map_or(f64::NAN, |(_, v)| *v)
    };
    let scrape_times: BTreeSet<i64> =
        series.iter().filter(|(l, _)| name_of(l) == "up").flat_map(|(_, s)| s.iter().map(|(t, _)| *t)).collect();
    let chosen = scrape_times.iter().copied().max_by(|a, b| {
        let key = |t: i64| (value_at("up", t), value_at("scrape_samples_scraped", t));
        key(*a).partial_cmp(&key(*b)).unwrap_or(std::cmp::Ordering::Equal).then(b.cmp(a))
    });
    series
        .iter()
        .filter_map(|(labels, samples)| {
            // The chosen scrape's sample, or (timestamps from the body) the first one.
            let (ts, v) = chosen
                .and_then(|c| samples.iter().find(|(t, _)| *t == c))
                .copied()
                .or_else(|| samples.iter().find(|(t, _)| !scrape_times.contains(t)).copied())?;
            if !scrape_times.contains(&ts) && ts < since_ms {
                return None;
            }
            let shown = match name_of(labels) {
                "scrape_duration_seconds" => "present".to_string(),
                _ if scrape_times.contains(&ts) => show_value(v),
                _ => format!("{} @{ts}", show_value(v)),
            };
            Some((show(labels), shown))
        })
        .collect()
}

fn differences(prometheus: &Series, agent: &Series, since_ms: i64) -> Vec<String> {
    let (p, a) = (digest(prometheus, since_ms), digest(agent, since_ms));
    let mut out = Vec::new();
    for key in p.keys().chain(a.keys()).collect::<BTreeSet<_>>() {
        match (p.get(key), a.get(key)) {
            (Some(x), Some(y)) if x == y => {}
            (x, y) => out.push(format!("{key}: Prometheus {x:?}, lgtm-agent {y:?}")),
        }
    }
    out
}

// ---- differences known per Prometheus version ----

/// How a case is known to differ between one Prometheus version and the agent, which follows
/// the current Prometheus (3.x) where 2.42 and 3.x disagree. Each is checked, not just named:
/// a listed case must differ in its way, and a listed case that agrees fails the test too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Known {
    /// Prometheus 2 keeps `le` (histogram) and `quantile` (summary) as written; 3 writes them in
    /// float form (`"1"` -> `"1.0"`). Checked: equal once both sides' are put in that form.
    FloatForm,
    /// Prometheus 2 fails the scrape; 3 ingests: an exemplar on a gauge, info, stateset, `_sum`
    /// or `_created`, a trailing comma in an OpenMetrics label set, an empty OpenMetrics body.
    /// Checked: `up` 0 from the oracle, 1 from the agent.
    TwoFails,
    /// A missing or unknown Content-Type: Prometheus 2 parses the text format; 3 fails without
    /// `fallback_scrape_protocol`. Checked: `up` 1 from the oracle, 0 from the agent.
    TwoIngests,
    /// OpenMetrics `a 1 \n` or `a 1  x`: both fail; 3 counts the sample before failing.
    /// Checked: only `scrape_samples_*`/`scrape_series_added` differ, the agent's higher.
    CountedBeforeFailure,
    /// `a 0 0` then `a 0`: Prometheus 2 sends the second sample too; 3 refuses it as a duplicate.
    /// Checked: only non-synthetic series differ, each sent by the oracle and not the agent.
    TimestampedRepeat,
    /// A timestamp beyond i64 milliseconds: Prometheus 2 counts the series as added; 3's storage
    /// refuses the sample. Checked: only `scrape_series_added` differs, the oracle's higher.
    OutOfRangeTimestamp,
    /// Prometheus 3 keeps blanks before a text-format name in the name and takes it (UTF-8
    /// names); the agent validates names as before (`[a-zA-Z_:][a-zA-Z0-9_:]*`) and fails the
    /// scrape, as 2.42 did (see ARCHITECTURE.md, "Conformance"). Checked: `up` 1 from the
    /// oracle with a name starting with a blank, 0 from the agent.
    BlankInName,
}

/// Cases of the upstream vectors and the hand-written ones that differ from Prometheus 2.42,
/// by the way they differ (the agent does as Prometheus 3.16 does on each).
const DIFFER_FROM_PROMETHEUS_2: &[(&str, Known)] = &[
    ("promtext-000", Known::FloatForm),
    ("promtext-025", Known::FloatForm),
    ("openmetrics-000", Known::FloatForm),
    ("expfmt-004", Known::FloatForm),
    ("expfmt-037", Known::FloatForm),
    ("expfmt-038", Known::FloatForm),
    ("omsuite-052", Known::FloatForm),
    ("omsuite-066", Known::FloatForm),
    ("omsuite-068", Known::FloatForm),
    ("omsuite-072", Known::FloatForm),
    ("omsuite-078", Known::FloatForm),
    ("omsuite-106", Known::FloatForm),
    ("omsuite-184", Known::FloatForm),
    ("omsuite-205", Known::FloatForm),
    ("om-le-forms", Known::FloatForm),
    ("text-quantile-forms", Known::FloatForm),
    ("openmetrics-003", Known::TwoFails),
    ("openmetrics-038", Known::TwoFails),
    ("omsuite-041", Known::TwoFails),
    ("omsuite-042", Known::TwoFails),
    ("omsuite-043", Known::TwoFails),
    ("omsuite-044", Known::TwoFails),
    ("omsuite-045", Known::TwoFails),
    ("omsuite-047", Known::TwoFails),
    ("omsuite-104", Known::TwoFails),
    ("omsuite-118", Known::TwoFails),
    ("om-empty", Known::TwoFails),
    ("om-exemplar-on-gauge", Known::TwoFails),
    ("om-exemplar-on-info", Known::TwoFails),
    ("om-exemplar-on-stateset", Known::TwoFails),
    ("om-exemplar-on-sum", Known::TwoFails),
    ("om-exemplar-on-created", Known::TwoFails),
    ("om-trailing-comma", Known::TwoFails),
    ("ct-unknown", Known::TwoIngests),
    ("ct-none", Known::TwoIngests),
    ("omsuite-135", Known::CountedBeforeFailure),
    ("omsuite-160", Known::CountedBeforeFailure),
    ("om-bad-trailing-space", Known::CountedBeforeFailure),
    ("omsuite-050", Known::TimestampedRepeat),
    ("omsuite-206", Known::OutOfRangeTimestamp),
];

/// Cases that differ from Prometheus 3.x (3.16.0 checked): names with leading blanks only.
const DIFFER_FROM_PROMETHEUS_3: &[(&str, Known)] =
    &[("text-blanks-tabs", Known::BlankInName), ("text-leading-blanks", Known::BlankInName)];

/// The oracle's version (`prometheus --version`: "prometheus, version 3.16.0 (...)").
fn oracle_version(bin: &std::path::Path) -> String {
    let out = Command::new(bin).arg("--version").output().expect("run prometheus --version");
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    text.split_whitespace()
        .skip_while(|w| *w != "version")
        .nth(1)
        .unwrap_or_else(|| panic!("no version in {text:?}"))
        .to_string()
}

/// The cases known to differ from this oracle, and the ways generated cases may differ from it
/// (mutations reach the same rules; only these, and only checked ones, are let through).
fn known_differences(version: &str) -> (BTreeMap<&'static str, Known>, &'static [Known]) {
    if version.starts_with("2.") {
        let generated: &[Known] = &[
            Known::FloatForm,
            Known::TwoFails,
            Known::CountedBeforeFailure,
            Known::TimestampedRepeat,
            Known::OutOfRangeTimestamp,
        ];
        (DIFFER_FROM_PROMETHEUS_2.iter().copied().collect(), generated)
    } else {
        (DIFFER_FROM_PROMETHEUS_3.iter().copied().collect(), &[Known::BlankInName])
    }
}

/// The metric name in a digest's key (`__name__="up",instance=...`).
fn key_name(key: &str) -> &str {
    key.split(",").find_map(|kv| kv.strip_prefix("__name__=\"")).map_or("", |v| v.trim_end_matches('"'))
}

fn up_of(d: &BTreeMap<String, String>) -> Option<&str> {
    d.iter().find(|(k, _)| key_name(k) == "up").map(|(_, v)| v.as_str())
}

const COUNTS: [&str; 3] = ["scrape_samples_scraped", "scrape_samples_post_metric_relabeling", "scrape_series_added"];

/// Whether the oracle's series `p` and the agent's `a` differ exactly in the way `known` says.
fn differs_as(known: Known, p: &Series, a: &Series, since_ms: i64) -> bool {
    if known == Known::FloatForm {
        // Both sides in float form: equal then. (Which series Prometheus 3 rewrites, by type,
        // is what the comparison with 3.x checks exactly.)
        let float_form = |series: &Series| -> Series {
            series
                .iter()
                .map(|(labels, samples)| {
                    let labels = labels
                        .iter()
                        .map(|(k, v)| match k.as_str() {
                            "le" | "quantile" => (k.clone(), lgtm_scrape::parser::float_form(v).into_owned()),
                            _ => (k.clone(), v.clone()),
                        })
                        .collect();
                    (labels, samples.clone())
                })
                .collect()
        };
        return differences(&float_form(p), &float_form(a), since_ms).is_empty();
    }
    let (pd, ad) = (digest(p, since_ms), digest(a, since_ms));
    let differing: Vec<&String> =
        pd.keys().chain(ad.keys()).filter(|k| pd.get(*k) != ad.get(*k)).collect::<BTreeSet<_>>().into_iter().collect();
    let number = |d: &BTreeMap<String, String>, k: &str| d.get(k).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    match known {
        Known::FloatForm => unreachable!(),
        Known::TwoFails => up_of(&pd) == Some("0") && up_of(&ad) == Some("1"),
        Known::TwoIngests => up_of(&pd) == Some("1") && up_of(&ad) == Some("0"),
        Known::CountedBeforeFailure => {
            up_of(&pd) == Some("0")
                && up_of(&ad) == Some("0")
                && differing.iter().all(|k| COUNTS.contains(&key_name(k)) && number(&ad, k) > number(&pd, k))
        }
        Known::TimestampedRepeat => differing.iter().all(|k| {
            !key_name(k).starts_with("scrape_") && key_name(k) != "up" && pd.contains_key(*k) && !ad.contains_key(*k)
        }),
        Known::OutOfRangeTimestamp => {
            differing.iter().all(|k| key_name(k) == "scrape_series_added" && number(&pd, k) > number(&ad, k))
        }
        Known::BlankInName => {
            up_of(&pd) == Some("1")
                && up_of(&ad) == Some("0")
                && pd.keys().any(|k| key_name(k).starts_with(' ') || key_name(k).starts_with("\\t"))
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_and_lgtm_agent_ingest_the_same_from_every_case() {
    if oracle().is_none() {
        require::<()>("prometheus", None);
        return;
    }
    let mut cases = upstream_cases();
    let upstream = cases.len();
    cases.extend(spec_cases());
    let generated = std::env::var("CONFORMANCE_GENERATED").ok().and_then(|v| v.parse().ok()).unwrap_or(150);
    let seed = std::env::var("CONFORMANCE_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(18);
    let gen = generated_cases(&cases, generated, seed);
    cases.extend(gen);
    if upstream == 0 {
        eprintln!("NOTE: ../shared/conformance/ not found; running the hand-written and generated cases only");
    }

    let version = oracle_version(&oracle().expect("checked above"));
    let since_ms = now_ms();
    let served: Served = Arc::new(cases.iter().map(|c| (c.content_type.clone(), c.body.clone())).collect());
    let target = start_http(Router::new().route("/c/{i}", get(serve_case)).with_state(served)).await;
    let store: Received = Arc::default();
    let receiver = start_http(Router::new().route("/w/{who}", post(receive)).with_state(store.clone())).await;

    let job = |i: usize| format!("c{i}");
    let prometheus_config = json!({
        "global": {"scrape_interval": "1s", "scrape_timeout": "900ms"},
        "scrape_configs": cases.iter().enumerate().map(|(i, c)| json!({
            "job_name": job(i),
            "metrics_path": format!("/c/{i}"),
            "static_configs": [{"targets": [target.to_string()], "labels": c.labels}],
            "relabel_configs": c.relabel_configs,
            "metric_relabel_configs": c.metric_relabel_configs,
        })).collect::<Vec<_>>(),
        "remote_write": [{"url": format!("http://{receiver}/w/prometheus"),
            "queue_config": {"batch_send_deadline": "200ms", "max_samples_per_send": 5000}}],
    });
    let static_configs: Vec<Value> = cases
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut labels = c.labels.clone();
            labels.insert("job".into(), job(i));
            json!({
                "targets": [target.to_string()],
                "labels": labels,
                "metrics_path": format!("/c/{i}"),
                "relabel_configs": agent_escape(&Value::from(c.relabel_configs.clone())),
                "metric_relabel_configs": agent_escape(&Value::from(c.metric_relabel_configs.clone())),
            })
        })
        .collect();
    let Some(_prometheus) = start_prometheus(&prometheus_config) else { return };
    let tmp = tempfile::tempdir().unwrap();
    let admin = free_port();
    let config = AgentConfig::new(CLUSTER, &tmp.path().join("data"), admin)
        .mimir(&format!("http://{receiver}/w/agent"), Backoff("100ms", "1s"))
        .scrape("1s", "900ms", Value::from(static_configs))
        .yaml();
    let mut agent = AgentProcess::start(tmp.path(), &config, admin).await;

    // Until every job that reports `up` has done so three times on both sides (the first
    // scrapes are then wholly received), and that set has held for 2 s (jobs whose target relabeling drops
    // the target never report).
    let started = Instant::now();
    let mut stable_since = Instant::now();
    let mut last = (BTreeSet::new(), BTreeSet::new());
    while started.elapsed() < Duration::from_secs(90) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = {
            let store = store.lock().unwrap();
            let twice = |who: &str| -> BTreeSet<String> {
                store
                    .get(who)
                    .map(by_job)
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|(_, s)| ups(s) >= 3)
                    .map(|(j, _)| j)
                    .collect()
            };
            (twice("prometheus"), twice("agent"))
        };
        if now != last {
            stable_since = Instant::now();
            last = now;
        } else if !last.0.is_empty() && last.0 == last.1 && stable_since.elapsed() > Duration::from_secs(2) {
            break;
        }
    }
    println!("both sides scraped every case three times after {:.1} s", started.elapsed().as_secs_f64());
    let store = store.lock().unwrap().clone();
    let (p_all, a_all) = (
        by_job(&store.get("prometheus").cloned().unwrap_or_default()),
        by_job(&store.get("agent").cloned().unwrap_or_default()),
    );

    // Per origin: cases that agree, that differ in a way known for this version, and in all.
    let (listed, generated_may) = known_differences(&version);
    let mut tally: BTreeMap<Origin, (usize, usize, usize)> = BTreeMap::new();
    let mut by_way: BTreeMap<Known, usize> = BTreeMap::new();
    let mut report = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let empty = Series::new();
        let (p, a) = (p_all.get(&job(i)).unwrap_or(&empty), a_all.get(&job(i)).unwrap_or(&empty));
        let diffs = differences(p, a, since_ms);
        let entry = tally.entry(case.origin).or_default();
        entry.2 += 1;
        let known = match (listed.get(case.id.as_str()), case.origin) {
            (Some(&k), _) => Some(k).filter(|&k| differs_as(k, p, a, since_ms)),
            (None, Origin::Generated) => generated_may.iter().copied().find(|&k| differs_as(k, p, a, since_ms)),
            (None, _) => None,
        };
        if diffs.is_empty() && listed.contains_key(case.id.as_str()) {
            report.push(format!(
                "{} is listed as differing from Prometheus {version} ({:?}) but agrees: update the list",
                case.id,
                listed[case.id.as_str()]
            ));
        } else if diffs.is_empty() {
            entry.0 += 1;
        } else if let Some(k) = known {
            entry.1 += 1;
            if case.origin != Origin::Generated {
                *by_way.entry(k).or_default() += 1;
            }
        } else {
            let how = match listed.get(case.id.as_str()) {
                Some(k) => format!(" (listed as {k:?} for Prometheus {version}, but differs otherwise)"),
                None => String::new(),
            };
            report.push(format!(
                "{}{how} ({:?}, {}):\n  body {:?}\n  relabel {:?} metric_relabel {:?}\n  {}",
                case.id,
                case.origin,
                case.content_type,
                String::from_utf8_lossy(&case.body),
                case.relabel_configs,
                case.metric_relabel_configs,
                diffs.join("\n  ")
            ));
        }
    }
    let get = |o: Origin| tally.get(&o).copied().unwrap_or_default();
    let (u, s, g) = (get(Origin::Upstream), get(Origin::Spec), get(Origin::Generated));
    println!("oracle: Prometheus {version}");
    println!("upstream vectors: {} of {} cases agree, {} differ as known for this version", u.0, u.2, u.1);
    println!("hand-written cases: {} of {} cases agree, {} differ as known for this version", s.0, s.2, s.1);
    println!(
        "{} of {} cases agree (upstream and hand-written) with Prometheus {version}; {} differ as known: {by_way:?}",
        u.0 + s.0,
        u.2 + s.2,
        u.1 + s.1
    );
    println!("generated cases tried: {} (seed {seed}), {} agree, {} differ as known", g.2, g.0, g.1);
    // A case where neither side received anything is no evidence: every case must have been
    // scraped by both, except targets dropped by relabeling (no `up` on either side).
    let scraped = cases.iter().enumerate().filter(|(i, _)| p_all.contains_key(&job(*i))).count();
    assert!(scraped * 10 >= cases.len() * 9, "only {scraped} of {} cases reached the receiver", cases.len());
    // The timestamps the upstream parser tests state (dated before the run, so not in the
    // comparison above): the agent sends exactly those.
    let mut stated = 0;
    if let Some(Value::Array(expected)) = conformance_file("timestamps.json") {
        for t in expected {
            let Some(i) = cases.iter().position(|c| c.id == t["case"].as_str().unwrap_or_default()) else { continue };
            let want: BTreeMap<String, String> = t["series"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect();
            let found = a_all.get(&job(i)).and_then(|series| {
                series.iter().find(|(labels, _)| {
                    want.iter().all(|(k, v)| labels.iter().any(|(lk, lv)| lk == k && lv == v))
                        && labels.iter().filter(|(k, _)| !["job", "instance"].contains(&k.as_str())).count()
                            == want.len()
                })
            });
            let got = found.map(|(_, samples)| samples[0].0);
            if got != t["ts"].as_i64() {
                report.push(format!(
                    "{} {want:?}: upstream states timestamp {}, lgtm-agent sent {got:?}",
                    t["case"], t["ts"]
                ));
            }
            stated += 1;
        }
    }
    println!("upstream-stated timestamps checked: {stated}");
    assert!(report.is_empty(), "{} cases differ:\n{}", report.len(), report.join("\n"));
    assert!(agent.terminate(Duration::from_secs(20)).await.success());
}

/// Rules `promtool check config` and `lgtm-agent validate` must give the same verdict on: the
/// edge cases of each action and the old second validator's false refusals (returned first,
/// `HAND_WRITTEN_RULES` of them), every rule of Prometheus's relabel tests, and generated rules
/// (valid and not).
const HAND_WRITTEN_RULES: usize = 29;

fn validation_rule_sets() -> Vec<Value> {
    let mut sets: Vec<Value> = vec![
        // Accepted by Prometheus; refused by the old `validate` before issue 18.
        json!({"action": "hashmod", "target_label": "h", "modulus": 4}),
        json!({"action": "lowercase", "target_label": "l"}),
        json!({"action": "uppercase", "target_label": "u"}),
        json!({"action": "keepequal", "target_label": "k"}),
        json!({"action": "dropequal", "target_label": "d"}),
        json!({"action": "labeldrop", "regex": "tmp_.*", "separator": ";", "replacement": "$1"}),
        json!({"action": "labelkeep", "regex": "__.*|keep_.*", "separator": ";"}),
        json!({"action": "Replace", "source_labels": ["a"], "target_label": "b"}),
        json!({"action": "DROP", "source_labels": ["a"], "regex": "x"}),
        json!({"source_labels": ["a"], "target_label": "${1}_x", "regex": "(.*)"}),
        json!({"action": "labelmap", "regex": "__meta_(.+)", "replacement": "k_${1}"}),
        json!({"action": "keep"}),
        json!({"action": "labelkeep"}),
        // Refused by both.
        json!({"action": "explode"}),
        json!({"action": "replace", "source_labels": ["a"]}),
        json!({"action": "replace", "source_labels": ["a"], "target_label": "1a"}),
        json!({"action": "hashmod", "source_labels": ["a"], "target_label": "h"}),
        json!({"action": "hashmod", "source_labels": ["a"], "target_label": "h", "modulus": 0}),
        json!({"action": "lowercase", "source_labels": ["a"]}),
        json!({"action": "lowercase", "source_labels": ["a"], "target_label": "l", "replacement": "x"}),
        json!({"action": "keepequal", "source_labels": ["a"], "target_label": "k", "regex": "x"}),
        json!({"action": "dropequal", "source_labels": ["a"], "target_label": "k", "separator": "-"}),
        json!({"action": "labeldrop", "regex": "a", "target_label": "b"}),
        json!({"action": "labelkeep", "regex": "a", "source_labels": ["b"]}),
        json!({"action": "labelkeep", "regex": "a", "replacement": "x"}),
        json!({"action": "labelmap", "regex": "(.*)", "replacement": "1-$1"}),
        json!({"action": "drop", "source_labels": ["a-b"], "regex": "x"}),
        json!({"action": "keep", "source_labels": ["a"], "regex": "(unclosed"}),
        json!({"action": "uppercase", "source_labels": ["a"], "target_label": "bad-name"}),
    ];
    assert_eq!(sets.len(), HAND_WRITTEN_RULES);
    // Every rule of Prometheus's relabel tests.
    if let Some(Value::Array(vectors)) = conformance_file("relabel.json") {
        sets.extend(vectors.iter().filter_map(|v| v["rules"].as_array()).flatten().cloned());
    }
    let mut rng = StdRng::seed_from_u64(1818);
    for _ in 0..24 {
        let mut rule = random_rule(&mut rng);
        // Generated rules are mostly valid; break some on purpose.
        match rng.random_range(0..5) {
            0 => {
                rule.as_object_mut().unwrap().remove("target_label");
            }
            1 => {
                rule["replacement"] = json!(pick(&mut rng, &["x", "$1", "", "1$1"]));
            }
            2 => {
                rule["separator"] = json!(";");
            }
            _ => {}
        }
        sets.push(rule);
    }
    sets
}

/// The agent's verdict on one rule under `key` of a static config (exit 0, or 2 with a
/// `file:line: field.path: message` error), and its error.
fn agent_verdict(dir: &std::path::Path, i: usize, key: &str, rule: &Value) -> (bool, String) {
    let agent_file = dir.join(format!("a{i}-{key}.yaml"));
    let yaml = AgentConfig::new(CLUSTER, &dir.join("data"), 9)
        .scrape("10s", "5s", json!([{"targets": ["127.0.0.1:9"], key: [agent_escape(rule)]}]))
        .yaml();
    std::fs::write(&agent_file, yaml).unwrap();
    let agent = Command::new(lgtm_integration::agent::agent_binary())
        .args(["validate", "--config"])
        .arg(&agent_file)
        .output()
        .expect("run lgtm-agent validate");
    let stderr = String::from_utf8_lossy(&agent.stderr).trim().to_string();
    if !agent.status.success() {
        assert_eq!(agent.status.code(), Some(2), "{stderr}");
        let at = format!("{}:", agent_file.display());
        let field = format!("scrape.static_configs[0].{key}[0].");
        assert!(stderr.contains(&at) && stderr.contains(&field), "{stderr}");
    }
    (agent.status.success(), stderr)
}

#[test]
fn relabel_validation_agrees_with_promtool() {
    let Some(promtool) = require("promtool", lgtm_integration::peers::which("promtool")) else { return };
    let tmp = tempfile::tempdir().unwrap();
    let sets = validation_rule_sets();
    let checks: Vec<(usize, &str, &Value)> = sets
        .iter()
        .enumerate()
        // promtool also applies `relabel_configs` to the static target and fails a rule that
        // leaves it without `__address__`, which is not a verdict on the rule: the rules written
        // here keep it and go under both keys, the others under `metric_relabel_configs`.
        .flat_map(|(i, r)| {
            let keys: &[&str] = if i < HAND_WRITTEN_RULES {
                &["relabel_configs", "metric_relabel_configs"]
            } else {
                &["metric_relabel_configs"]
            };
            keys.iter().map(move |k| (i, *k, r))
        })
        .collect();
    // One promtool run over every file: it checks each and says SUCCESS or FAILED under its name.
    let files: Vec<std::path::PathBuf> = checks
        .iter()
        .map(|(i, key, rule)| {
            let path = tmp.path().join(format!("p{i}-{key}.yml"));
            let config = json!({"scrape_configs": [{"job_name": "j", "static_configs": [{"targets": ["127.0.0.1:9"]}], *key: [rule]}]});
            std::fs::write(&path, serde_json::to_string(&config).unwrap()).unwrap();
            path
        })
        .collect();
    // promtool checks the files in turn and stops at the first that fails: run it again from
    // the next one until each has a verdict.
    let mut promtool_says: BTreeMap<String, String> = BTreeMap::new();
    let mut from = 0;
    while from < files.len() {
        let out =
            Command::new(&promtool).args(["check", "config"]).args(&files[from..]).output().expect("run promtool");
        let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
        let mut current = String::new();
        for line in text.lines() {
            if let Some(file) = line.strip_prefix("Checking ") {
                current = file.trim().to_string();
            } else if line.contains("SUCCESS") || line.contains("FAILED") {
                // A failure to parse names its file (and may come after later `Checking` lines).
                let file = files[from..]
                    .iter()
                    .map(|f| f.display().to_string())
                    .find(|f| line.contains(&format!("{f}:")) || line.contains(&format!("{f} ")))
                    .unwrap_or_else(|| current.clone());
                promtool_says.entry(file).or_insert_with(|| line.trim().to_string());
            }
        }
        let next = files[from..].iter().position(|f| !promtool_says.contains_key(&f.display().to_string()));
        match next {
            Some(0) => {
                // No line names it (some failures print only to the log): its exit status.
                let out =
                    Command::new(&promtool).args(["check", "config"]).arg(&files[from]).output().expect("run promtool");
                let verdict = if out.status.success() {
                    "SUCCESS (alone)".to_string()
                } else {
                    format!("FAILED (alone): {}", String::from_utf8_lossy(&out.stderr).trim())
                };
                promtool_says.insert(files[from].display().to_string(), verdict);
                from += 1;
            }
            Some(n) => from += n,
            None => break,
        }
    }
    let (mut accepted, mut agree) = (0, 0);
    let mut differ = Vec::new();
    for ((i, key, rule), file) in checks.iter().zip(&files) {
        let said = &promtool_says[&file.display().to_string()];
        let prometheus_ok = said.contains("SUCCESS");
        let (agent_ok, err) = agent_verdict(tmp.path(), *i, key, rule);
        if prometheus_ok == agent_ok {
            agree += 1;
            accepted += usize::from(agent_ok);
        } else {
            differ.push(format!(
                "{key} {rule}: promtool: {said}; lgtm-agent: {}",
                if agent_ok { "accepts" } else { &err }
            ));
        }
    }
    println!(
        "relabel rule sets: {agree} of {} verdicts agree with promtool ({accepted} accepted by both)",
        checks.len()
    );
    assert!(accepted > 10 && accepted + 10 < checks.len(), "both valid and invalid rules are tried");
    assert!(differ.is_empty(), "{}", differ.join("\n"));
}

// ---- staleness markers ----

/// Bodies that change once, at the switch: before, after. Each is one job on both sides.
const STALE_CASES: &[(&str, &str, &str, &str)] = &[
    ("a series disappears", TEXT, "a 1\nb{x=\"1\"} 2\nc 3\n", "a 1\n"),
    ("the body turns malformed", TEXT, "a 1\nb 2\n", "a 1\nb{ 2\n"),
    ("the body turns empty", TEXT, "a 1\nb 2\n", ""),
    ("a timestamped series disappears", TEXT, "a 1 {MS}\nb 2\n", "b 2\n"),
    ("a repeated series disappears", TEXT, "a 1\na 2\nb 3\n", "b 3\n"),
    (
        "buckets disappear",
        OM,
        "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_count 2\nh_sum 3\n# EOF\n",
        "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_count 2\nh_sum 3\n# EOF\n",
    ),
    ("OpenMetrics turns malformed", OM, "a 1\nb 2\n# EOF\n", "a 1\nb 2\n"),
];

type Phased = Arc<(std::sync::atomic::AtomicBool, Vec<(String, String, String)>)>;

async fn serve_phased(State(state): State<Phased>, UrlPath(i): UrlPath<usize>) -> impl IntoResponse {
    let (switched, cases) = &*state;
    let (ct, before, after) = &cases[i];
    let body = if switched.load(std::sync::atomic::Ordering::SeqCst) { after } else { before };
    ([(header::CONTENT_TYPE, ct.clone())], body.clone())
}

/// The series one side marked stale, by job, `le`/`quantile` in float form (Prometheus 2 keeps
/// them as written; which ones are rewritten is checked by the main comparison).
fn stale_series(all: &Series) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (labels, samples) in all {
        if !samples.iter().any(|(_, v)| v.to_bits() == STALE_NAN_BITS) {
            continue;
        }
        let Some(job) = job_of(labels) else { continue };
        let shown: Vec<(String, String)> = labels
            .iter()
            .filter(|(k, _)| k != "instance")
            .map(|(k, v)| match k.as_str() {
                "le" | "quantile" => (k.clone(), lgtm_scrape::parser::float_form(v).into_owned()),
                _ => (k.clone(), v.clone()),
            })
            .collect();
        out.entry(job.to_string()).or_default().insert(show(&shown));
    }
    out
}

/// Series that go away (from the body, or with a failed or empty scrape) get one staleness
/// marker from both Prometheus and the agent at the next scrape; series with their own
/// timestamps get none from either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_and_lgtm_agent_send_the_same_staleness_markers() {
    if oracle().is_none() {
        require::<()>("prometheus", None);
        return;
    }
    let future_ms = (now_ms() + 120_000).to_string();
    let cases: Vec<(String, String, String)> = STALE_CASES
        .iter()
        .map(|(_, ct, before, after)| (ct.to_string(), before.replace("{MS}", &future_ms), after.to_string()))
        .collect();
    let state: Phased = Arc::new((std::sync::atomic::AtomicBool::new(false), cases));
    let target = start_http(Router::new().route("/s/{i}", get(serve_phased)).with_state(state.clone())).await;
    let store: Received = Arc::default();
    let receiver = start_http(Router::new().route("/w/{who}", post(receive)).with_state(store.clone())).await;
    let job = |i: usize| format!("s{i}");
    let prometheus_config = json!({
        "global": {"scrape_interval": "1s", "scrape_timeout": "900ms"},
        "scrape_configs": (0..STALE_CASES.len()).map(|i| json!({
            "job_name": job(i),
            "metrics_path": format!("/s/{i}"),
            "static_configs": [{"targets": [target.to_string()]}],
        })).collect::<Vec<_>>(),
        "remote_write": [{"url": format!("http://{receiver}/w/prometheus"),
            "queue_config": {"batch_send_deadline": "200ms"}}],
    });
    let Some(_prometheus) = start_prometheus(&prometheus_config) else { return };
    let tmp = tempfile::tempdir().unwrap();
    let admin = free_port();
    let static_configs: Vec<Value> = (0..STALE_CASES.len())
        .map(|i| json!({"targets": [target.to_string()], "labels": {"job": job(i)}, "metrics_path": format!("/s/{i}")}))
        .collect();
    let config = AgentConfig::new(CLUSTER, &tmp.path().join("data"), admin)
        .mimir(&format!("http://{receiver}/w/agent"), Backoff("100ms", "1s"))
        .scrape("1s", "900ms", Value::from(static_configs))
        .yaml();
    let mut agent = AgentProcess::start(tmp.path(), &config, admin).await;

    // `up` samples per side and job; waits (bounded) until every job has `n` more on both.
    let ups_now = |store: &Received| -> Vec<usize> {
        let store = store.lock().unwrap();
        ["prometheus", "agent"]
            .iter()
            .flat_map(|who| {
                let jobs = store.get(*who).map(by_job).unwrap_or_default();
                (0..STALE_CASES.len()).map(move |i| jobs.get(&job(i)).map_or(0, ups)).collect::<Vec<_>>()
            })
            .collect()
    };
    let wait_for = |base: Vec<usize>, n: usize| {
        let store = store.clone();
        async move {
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(60) {
                tokio::time::sleep(Duration::from_millis(300)).await;
                if ups_now(&store).iter().zip(&base).all(|(now, was)| *now >= was + n) {
                    return true;
                }
            }
            false
        }
    };
    let started = Instant::now();
    assert!(wait_for(vec![0; STALE_CASES.len() * 2], 2).await, "both sides scrape every case");
    println!("both sides scraped every staleness case twice after {:.1} s", started.elapsed().as_secs_f64());
    let before = ups_now(&store);
    state.0.store(true, std::sync::atomic::Ordering::SeqCst);
    // Two scrapes after the switch: the first may have begun before it.
    assert!(wait_for(before, 3).await, "both sides scrape every case after the switch");
    tokio::time::sleep(Duration::from_secs(1)).await; // the last remote-write batches

    let store = store.lock().unwrap().clone();
    let p = stale_series(&store.get("prometheus").cloned().unwrap_or_default());
    let a = stale_series(&store.get("agent").cloned().unwrap_or_default());
    let mut report = Vec::new();
    let mut marked = 0;
    for (i, (what, ..)) in STALE_CASES.iter().enumerate() {
        let (ps, as_) = (p.get(&job(i)).cloned().unwrap_or_default(), a.get(&job(i)).cloned().unwrap_or_default());
        marked += ps.len();
        if ps != as_ {
            report.push(format!("{what}: Prometheus marked {ps:?}, lgtm-agent {as_:?}"));
        }
    }
    println!(
        "staleness markers: {} of {} cases agree ({marked} series marked stale by Prometheus)",
        STALE_CASES.len() - report.len(),
        STALE_CASES.len()
    );
    assert!(marked >= STALE_CASES.len(), "the cases do produce markers ({marked})");
    assert!(report.is_empty(), "{}", report.join("\n"));
    assert!(agent.terminate(Duration::from_secs(20)).await.success());
}
