use std::time::{Duration, Instant};

use lgtm_config::PolicyConfig;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::{Span, Status};

use super::*;

fn policy(kind: &str) -> PolicyConfig {
    PolicyConfig { kind: kind.into(), ..PolicyConfig::default() }
}

fn status_code(codes: &[&str]) -> PolicyConfig {
    PolicyConfig { status_codes: codes.iter().map(|c| c.to_string()).collect(), ..policy("status_code") }
}

fn latency(ms: u64) -> PolicyConfig {
    PolicyConfig { threshold_ms: Some(ms), ..policy("latency") }
}

fn probabilistic(pct: f64) -> PolicyConfig {
    PolicyConfig { percentage: Some(pct), ..policy("probabilistic") }
}

fn string_attr(key: &str, values: &[&str]) -> PolicyConfig {
    PolicyConfig {
        key: Some(key.into()),
        values: values.iter().map(|v| v.to_string()).collect(),
        ..policy("string_attribute")
    }
}

fn numeric_attr(key: &str, min: Option<i64>, max: Option<i64>) -> PolicyConfig {
    PolicyConfig { key: Some(key.into()), min_value: min, max_value: max, ..policy("numeric_attribute") }
}

fn and(parts: Vec<PolicyConfig>) -> PolicyConfig {
    PolicyConfig { and: parts, ..policy("and") }
}

fn or(parts: Vec<PolicyConfig>) -> PolicyConfig {
    PolicyConfig { or: parts, ..policy("or") }
}

fn not(inner: PolicyConfig) -> PolicyConfig {
    PolicyConfig { not: Some(Box::new(inner)), ..policy("not") }
}

fn attr(key: &str, v: any_value::Value) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(v) }), ..Default::default() }
}

/// One span of a trace, as the test table describes it.
#[derive(Clone, Default)]
struct S {
    start_ms: u64,
    end_ms: u64,
    code: i32,
    attrs: Vec<KeyValue>,
}

fn span(start_ms: u64, end_ms: u64) -> S {
    S { start_ms, end_ms, ..S::default() }
}

fn error_span() -> S {
    S { code: 2, ..span(0, 1) }
}

fn with(key: &str, v: any_value::Value) -> S {
    S { attrs: vec![attr(key, v)], ..span(0, 1) }
}

/// Decides one trace of `spans` (trace ID `id`) under `configs`.
fn decide(configs: Vec<PolicyConfig>, id: [u8; 16], spans: &[S], resource: &[KeyValue]) -> bool {
    let mut p = Policies::compile(&configs).expect("compiles");
    let mut facts = TraceFacts::default();
    let base = 1_700_000_000_000_000_000u64;
    for s in spans {
        let span = Span {
            start_time_unix_nano: base + s.start_ms * 1_000_000,
            end_time_unix_nano: base + s.end_ms * 1_000_000,
            status: Some(Status { code: s.code, ..Default::default() }),
            attributes: s.attrs.clone(),
            ..Default::default()
        };
        facts.add_span(
            span.start_time_unix_nano,
            span.end_time_unix_nano,
            p.resource_mask(resource) | p.span_mask(&span),
        );
    }
    p.decide(&id, &facts, Instant::now()).is_some()
}

use any_value::Value::{DoubleValue, IntValue, StringValue};

#[test]
fn each_policy_type_decides_as_specified() {
    let id = [7u8; 16];
    let s = |v: &str| StringValue(v.into());
    #[rustfmt::skip]
    let table: Vec<(&str, PolicyConfig, Vec<S>, bool)> = vec![
        ("error span kept", status_code(&["ERROR"]), vec![span(0, 1), error_span()], true),
        ("no error dropped", status_code(&["ERROR"]), vec![span(0, 1)], false),
        ("ok kept by OK", status_code(&["OK"]), vec![S { code: 1, ..span(0, 1) }], true),
        ("unset (no status) kept by UNSET", status_code(&["STATUS_CODE_UNSET"]), vec![span(0, 1)], true),
        ("latency over threshold", latency(50), vec![span(0, 10), span(40, 60)], true),
        ("latency exactly threshold", latency(50), vec![span(0, 50)], true),
        ("latency under threshold", latency(50), vec![span(0, 10), span(5, 49)], false),
        ("probabilistic 100", probabilistic(100.0), vec![span(0, 1)], true),
        ("probabilistic 0", probabilistic(0.0), vec![span(0, 1)], false),
        ("string attribute match", string_attr("http.route", &["/a", "/b"]), vec![span(0, 1), with("http.route", s("/b"))], true),
        ("string attribute other value", string_attr("http.route", &["/a"]), vec![with("http.route", s("/c"))], false),
        ("string attribute other key", string_attr("http.route", &["/a"]), vec![with("route", s("/a"))], false),
        ("string attribute int value", string_attr("code", &["5"]), vec![with("code", IntValue(5))], false),
        ("numeric in range", numeric_attr("http.status_code", Some(500), Some(599)), vec![with("http.status_code", IntValue(503))], true),
        ("numeric below range", numeric_attr("http.status_code", Some(500), Some(599)), vec![with("http.status_code", IntValue(404))], false),
        ("numeric open max", numeric_attr("retries", Some(3), None), vec![with("retries", IntValue(i64::MAX))], true),
        ("numeric double", numeric_attr("ratio", Some(1), Some(2)), vec![with("ratio", DoubleValue(1.5))], true),
        ("numeric string", numeric_attr("n", Some(1), Some(2)), vec![with("n", s("1"))], false),
    ];
    for (name, cfg, spans, want) in table {
        assert_eq!(decide(vec![cfg], id, &spans, &[]), want, "{name}");
    }
}

#[test]
fn attributes_are_also_read_on_the_resource() {
    let resource = [attr("deployment.environment", StringValue("prod".into()))];
    assert!(decide(vec![string_attr("deployment.environment", &["prod"])], [1; 16], &[span(0, 1)], &resource));
}

#[test]
fn composites_combine_their_parts() {
    let id = [7u8; 16];
    let slow = vec![span(0, 100)];
    let slow_error = vec![span(0, 100), error_span()];
    let fast_error = vec![error_span()];
    #[rustfmt::skip]
    let table: Vec<(&str, PolicyConfig, &Vec<S>, bool)> = vec![
        ("and: both", and(vec![latency(50), status_code(&["ERROR"])]), &slow_error, true),
        ("and: one missing", and(vec![latency(50), status_code(&["ERROR"])]), &slow, false),
        ("or: one", or(vec![latency(50), status_code(&["ERROR"])]), &fast_error, true),
        ("or: none", or(vec![latency(500), status_code(&["ERROR"])]), &slow, false),
        ("not: inverts", not(status_code(&["ERROR"])), &slow, true),
        ("not: inverts match", not(status_code(&["ERROR"])), &slow_error, false),
        ("nested", and(vec![latency(50), not(or(vec![status_code(&["ERROR"]), probabilistic(0.0)]))]), &slow, true),
        ("and with 100%", and(vec![latency(50), probabilistic(100.0)]), &slow, true),
        ("and with 0%", and(vec![latency(50), probabilistic(0.0)]), &slow, false),
    ];
    for (name, cfg, spans, want) in table {
        assert_eq!(decide(vec![cfg], id, spans, &[]), want, "{name}");
    }
}

#[test]
fn the_first_keeping_top_level_policy_is_named() {
    let defaults = lgtm_config::TailSamplingConfig::default().policies;
    let mut p = Policies::compile(&defaults).unwrap();
    let error = TraceFacts { matched: 1, start: 1, end: 2, spans: 1 };
    assert_eq!(p.decide(&[1; 16], &error, Instant::now()), Some("errors"));
    let fast = TraceFacts { matched: 0, start: 1, end: 2, spans: 1 };
    assert_eq!(p.decide(&[1; 16], &fast, Instant::now()), None);
    assert_eq!(p.names().collect::<Vec<_>>(), ["errors", "slow-sampled"]);
}

#[test]
fn rate_limiting_admits_spans_per_second() {
    let cfg = PolicyConfig { spans_per_second: Some(10), ..policy("rate_limiting") };
    let mut p = Policies::compile(&[cfg]).unwrap();
    let t0 = Instant::now();
    let trace = |spans| TraceFacts { spans, ..TraceFacts::default() };
    assert!(p.decide(&[1; 16], &trace(6), t0).is_some());
    assert!(p.decide(&[2; 16], &trace(4), t0 + Duration::from_millis(10)).is_some());
    assert!(p.decide(&[3; 16], &trace(1), t0 + Duration::from_millis(20)).is_none(), "budget spent");
    assert!(p.decide(&[4; 16], &trace(11), t0 + Duration::from_secs(2)).is_none(), "larger than a second's budget");
    assert!(p.decide(&[5; 16], &trace(10), t0 + Duration::from_secs(2)).is_some(), "a new second");
}

#[test]
fn probabilistic_is_deterministic_across_instances() {
    let cfg = vec![probabilistic(30.0)];
    let mut a = Policies::compile(&cfg).unwrap();
    let mut b = Policies::compile(&cfg).unwrap();
    let facts = TraceFacts::default();
    let mut kept = 0;
    for i in 0..2000u32 {
        let mut id = [0u8; 16];
        id[..4].copy_from_slice(&i.to_be_bytes());
        id[8..12].copy_from_slice(&(i.wrapping_mul(2_654_435_761)).to_le_bytes());
        let (da, db) =
            (a.decide(&id, &facts, Instant::now()).is_some(), b.decide(&id, &facts, Instant::now()).is_some());
        assert_eq!(da, db, "trace {i}");
        kept += da as u32;
    }
    assert!((400..800).contains(&kept), "{kept} of 2000 kept at 30%");
}

#[test]
fn invalid_policies_are_refused_with_their_name() {
    let named = |mut c: PolicyConfig| {
        c.name = Some("p1".into());
        c
    };
    for cfg in [
        policy("nonsense"),
        policy("latency"),
        status_code(&["BROKEN"]),
        status_code(&[]),
        probabilistic(150.0),
        policy("string_attribute"),
        string_attr("k", &[]),
        numeric_attr("k", None, None),
        policy("rate_limiting"),
        policy("and"),
        policy("not"),
    ] {
        let err = Policies::compile(&[named(cfg.clone())]).expect_err(&cfg.kind);
        assert_eq!(err.policy, "p1");
    }
}
