//! One target's loop against an in-process server: series, synthetic series, staleness,
//! limits, label handling, compression, formats.

mod common;

use std::time::Duration;

use common::*;
use lgtm_config::RelabelConfig;
use lgtm_scrape::parser::Format;
use lgtm_scrape::{Health, ScrapeLoop, ScrapeOptions};

async fn scrape_loop(body: &str, options: ScrapeOptions) -> (Server, ScrapeLoop) {
    let server = Server::start(Reply::text(body)).await;
    let target = target(server.addr, options);
    (server, ScrapeLoop::new(target, vec![]))
}

#[tokio::test]
async fn series_carry_the_target_labels_and_synthetic_series_report_the_scrape() {
    let (server, mut sl) = scrape_loop("# TYPE a gauge\na 1\nb{x=\"y\"} 2.5\n", options("loop_basic")).await;
    let batch = sl.scrape_once().await.decode().unwrap();
    let mut want = vec!["a".to_string(), "b".to_string()];
    want.extend(SYNTHETIC.iter().map(|s| s.to_string()));
    want.sort();
    assert_eq!(names(&batch), want);
    let instance = server.addr.to_string();
    for ts in &batch {
        assert_eq!(label(ts, "job"), Some("loop_basic"));
        assert_eq!(label(ts, "instance"), Some(instance.as_str()));
        assert!(ts.labels.windows(2).all(|w| w[0].name < w[1].name), "sorted labels");
    }
    let b = batch.iter().find(|t| name(t) == "b").unwrap();
    assert_eq!(label(b, "x"), Some("y"));
    assert_eq!(b.samples[0].value, 2.5);
    assert_eq!(value(&batch, "up"), 1.0);
    assert_eq!(value(&batch, "scrape_samples_scraped"), 2.0);
    assert_eq!(value(&batch, "scrape_samples_post_metric_relabeling"), 2.0);
    assert_eq!(value(&batch, "scrape_series_added"), 2.0);
    assert!(value(&batch, "scrape_duration_seconds") >= 0.0);
    let ts0 = batch[0].samples[0].timestamp;
    assert!(batch.iter().all(|t| t.samples[0].timestamp == ts0), "one timestamp per scrape");

    let again = sl.scrape_once().await.decode().unwrap();
    assert_eq!(value(&again, "scrape_series_added"), 0.0, "known series are not added again");

    let status = sl.status().lock().unwrap().clone();
    assert_eq!(status.health, Health::Up);
    assert_eq!(status.last_samples, 2);
    let accept = server.requests()[0].get("accept").unwrap().to_str().unwrap().to_string();
    assert_eq!(accept, lgtm_scrape::parser::ACCEPT_HEADER);
}

#[tokio::test]
async fn a_series_that_disappears_gets_one_staleness_marker() {
    let (server, mut sl) = scrape_loop("a 1\nb 2\n", options("loop_vanish")).await;
    let first = sl.scrape_once().await.decode().unwrap();
    assert!(stale_names(&first).is_empty());

    server.set_body("a 1\n");
    let second = sl.scrape_once().await.decode().unwrap();
    assert_eq!(stale_names(&second), ["b"]);
    let b = second.iter().find(|t| name(t) == "b").unwrap();
    assert_eq!(b.samples[0].value.to_bits(), STALE_BITS);
    assert_eq!(b.samples[0].timestamp, second.iter().find(|t| name(t) == "up").unwrap().samples[0].timestamp);

    let third = sl.scrape_once().await.decode().unwrap();
    assert!(stale_names(&third).is_empty(), "a marker is sent once");

    server.set_body("a 1\nb 3\n");
    let fourth = sl.scrape_once().await.decode().unwrap();
    assert_eq!(value(&fourth, "b"), 3.0);
    assert_eq!(value(&fourth, "scrape_series_added"), 1.0);
}

#[tokio::test]
async fn a_failed_scrape_reports_up_0_and_marks_every_series_stale() {
    let (server, mut sl) = scrape_loop("a 1\nb 2\n", options("loop_fail")).await;
    sl.scrape_once().await.decode().unwrap();
    server.set(Reply { status: 500, ..Reply::text("oops") });
    let failed = sl.scrape_once().await.decode().unwrap();
    assert_eq!(stale_names(&failed), ["a", "b"]);
    assert_eq!(value(&failed, "up"), 0.0);
    assert_eq!(value(&failed, "scrape_samples_scraped"), 0.0);
    let status = sl.status().lock().unwrap().clone();
    assert_eq!(status.health, Health::Down);
    assert!(status.last_error.unwrap().contains("500"));

    let failed_again = sl.scrape_once().await.decode().unwrap();
    assert!(stale_names(&failed_again).is_empty(), "markers only once");
    assert_eq!(value(&failed_again, "up"), 0.0);
    assert!(!is_stale(failed_again.iter().find(|t| name(t) == "up").unwrap()), "synthetic series stay live");
}

#[tokio::test]
async fn a_malformed_body_fails_the_whole_scrape() {
    let (server, mut sl) = scrape_loop("a 1\nb 2\n", options("loop_malformed")).await;
    sl.scrape_once().await.decode().unwrap();
    server.set_body("a 1\nb two\n");
    let batch = sl.scrape_once().await.decode().unwrap();
    assert!(batch.iter().all(|t| name(t) != "a"), "nothing from the body is kept");
    // `a` was read before the error, so it is not marked stale (as in Prometheus).
    assert_eq!(stale_names(&batch), ["b"]);
    assert_eq!(value(&batch, "up"), 0.0);
    assert_eq!(value(&batch, "scrape_samples_scraped"), 1.0);
    let err = sl.status().lock().unwrap().last_error.clone().unwrap();
    assert!(err.contains("line 2"), "{err}");
    let rendered = lgtm_pipeline::metrics::render();
    assert!(rendered.contains("lgtm_agent_scrape_parse_errors_total{job=\"loop_malformed\"} 1"), "{rendered}");
    assert!(rendered.contains("lgtm_agent_scrapes_total{job=\"loop_malformed\",result=\"parse_error\"} 1"));
}

#[tokio::test]
async fn exceeding_the_sample_limit_fails_the_scrape() {
    let opts = ScrapeOptions { sample_limit: 2, ..options("loop_sample_limit") };
    let (_server, mut sl) = scrape_loop("a 1\nb 2\nc 3\n", opts).await;
    let batch = sl.scrape_once().await.decode().unwrap();
    assert_eq!(names(&batch), SYNTHETIC);
    assert_eq!(value(&batch, "up"), 0.0);
    assert_eq!(value(&batch, "scrape_samples_scraped"), 3.0);
    let err = sl.status().lock().unwrap().last_error.clone().unwrap();
    assert!(err.contains("sample limit"), "{err}");
}

#[tokio::test]
async fn the_sample_limit_counts_samples_after_metric_relabeling() {
    let opts = ScrapeOptions {
        sample_limit: 2,
        metric_relabel_configs: vec![RelabelConfig {
            source_labels: vec!["__name__".into()],
            regex: Some("c".into()),
            action: Some("drop".into()),
            ..Default::default()
        }],
        ..options("loop_sample_limit_relabel")
    };
    let (_server, mut sl) = scrape_loop("a 1\nb 2\nc 3\n", opts).await;
    let batch = sl.scrape_once().await.decode().unwrap();
    assert_eq!(value(&batch, "up"), 1.0);
    assert_eq!(value(&batch, "scrape_samples_scraped"), 3.0);
    assert_eq!(value(&batch, "scrape_samples_post_metric_relabeling"), 2.0);
    assert!(!names(&batch).contains(&"c".to_string()));
}

#[tokio::test]
async fn metric_relabeling_rewrites_and_drops_series() {
    let opts = ScrapeOptions {
        metric_relabel_configs: vec![
            RelabelConfig {
                source_labels: vec!["__name__".into()],
                regex: Some("go_.*".into()),
                action: Some("drop".into()),
                ..Default::default()
            },
            RelabelConfig {
                source_labels: vec!["code".into()],
                regex: Some("(\\d)\\d\\d".into()),
                target_label: Some("class".into()),
                replacement: Some("${1}xx".into()),
                ..Default::default()
            },
            RelabelConfig { regex: Some("code".into()), action: Some("labeldrop".into()), ..Default::default() },
        ],
        ..options("loop_metric_relabel")
    };
    let body = "go_goroutines 10\nhttp_requests_total{code=\"200\"} 5\nhttp_requests_total{code=\"503\"} 1\n";
    let (_server, mut sl) = scrape_loop(body, opts).await;
    for _ in 0..2 {
        // The second scrape is served from the cache, with the same result.
        let batch = sl.scrape_once().await.decode().unwrap();
        let reqs: Vec<_> = batch.iter().filter(|t| name(t) == "http_requests_total").collect();
        assert_eq!(reqs.len(), 2);
        let classes: Vec<_> = reqs.iter().map(|t| label(t, "class").unwrap()).collect();
        assert_eq!(classes, ["2xx", "5xx"]);
        assert!(reqs.iter().all(|t| label(t, "code").is_none()));
        assert!(!names(&batch).contains(&"go_goroutines".to_string()));
        assert_eq!(value(&batch, "scrape_samples_post_metric_relabeling"), 2.0);
    }
}

#[tokio::test]
async fn honor_labels_false_keeps_target_labels_and_renames_scraped_ones() {
    let body = "a{job=\"scraped\",instance=\"i\",exported_job=\"taken\",other=\"o\"} 1\n";
    let (server, mut sl) = scrape_loop(body, options("loop_honor_false")).await;
    let batch = sl.scrape_once().await.decode().unwrap();
    let a = batch.iter().find(|t| name(t) == "a").unwrap();
    assert_eq!(label(a, "job"), Some("loop_honor_false"));
    assert_eq!(label(a, "instance"), Some(server.addr.to_string().as_str()));
    assert_eq!(label(a, "exported_instance"), Some("i"));
    assert_eq!(label(a, "exported_job"), Some("taken"));
    assert_eq!(label(a, "exported_exported_job"), Some("scraped"));
    assert_eq!(label(a, "other"), Some("o"));
}

#[tokio::test]
async fn honor_labels_true_keeps_scraped_labels() {
    let opts = ScrapeOptions { honor_labels: true, ..options("loop_honor_true") };
    let (server, mut sl) = scrape_loop("a{job=\"scraped\"} 1\nb 2\n", opts).await;
    let batch = sl.scrape_once().await.decode().unwrap();
    let a = batch.iter().find(|t| name(t) == "a").unwrap();
    assert_eq!(label(a, "job"), Some("scraped"));
    assert_eq!(label(a, "exported_job"), None);
    assert_eq!(label(a, "instance"), Some(server.addr.to_string().as_str()));
    let b = batch.iter().find(|t| name(t) == "b").unwrap();
    assert_eq!(label(b, "job"), Some("loop_honor_true"));
}

#[tokio::test]
async fn explicit_timestamps_are_honoured_and_not_tracked_for_staleness() {
    let (server, mut sl) = scrape_loop("a 1 1000\nb 2\n", options("loop_ts")).await;
    let batch = sl.scrape_once().await.decode().unwrap();
    assert_eq!(batch.iter().find(|t| name(t) == "a").unwrap().samples[0].timestamp, 1000);
    server.set_body("");
    let batch = sl.scrape_once().await.decode().unwrap();
    assert_eq!(stale_names(&batch), ["b"], "the timestamped series gets no marker");

    let opts = ScrapeOptions { honor_timestamps: false, ..options("loop_ts_ignored") };
    let (_server, mut sl) = scrape_loop("a 1 1000\n", opts).await;
    let batch = sl.scrape_once().await.decode().unwrap();
    let a = batch.iter().find(|t| name(t) == "a").unwrap();
    assert_eq!(a.samples[0].timestamp, batch.iter().find(|t| name(t) == "up").unwrap().samples[0].timestamp);
}

#[tokio::test]
async fn a_duplicate_series_in_one_body_keeps_the_first_sample() {
    let (_server, mut sl) = scrape_loop("a{x=\"1\"} 1\na{x=\"1\",} 2\nb 3\n", options("loop_dup")).await;
    let batch = sl.scrape_once().await.decode().unwrap();
    let a: Vec<_> = batch.iter().filter(|t| name(t) == "a").collect();
    assert_eq!(a.len(), 1, "one sample sent for the series");
    assert_eq!(a[0].samples[0].value, 1.0);
    // Prometheus counts every occurrence after relabeling (the repeat too).
    assert_eq!(value(&batch, "scrape_samples_scraped"), 3.0);
    assert_eq!(value(&batch, "scrape_samples_post_metric_relabeling"), 3.0);
    assert_eq!(value(&batch, "up"), 1.0);
    // Counted where a user looks, and not in the samples sent.
    let rendered = lgtm_pipeline::metrics::render();
    assert!(rendered.contains("lgtm_agent_scrape_duplicate_samples_total{job=\"loop_dup\"} 1"), "{rendered}");
    assert!(rendered.contains("lgtm_agent_scrape_samples_total{job=\"loop_dup\"} 2"), "{rendered}");
}

#[tokio::test]
async fn metric_relabeling_that_removes_the_name_fails_the_scrape() {
    let drop_name = |job: &str, regex: &str| ScrapeOptions {
        metric_relabel_configs: vec![RelabelConfig {
            regex: Some(regex.into()),
            action: Some("labeldrop".into()),
            ..Default::default()
        }],
        ..options(job)
    };
    // `__name__` removed, other labels left: the scrape fails, as in Prometheus ("missing
    // metric name"), reporting the samples up to the failing one.
    let (_server, mut sl) = scrape_loop("b 2\na{x=\"1\"} 1\nc 3\n", drop_name("loop_no_name", "__name__")).await;
    let batch = sl.scrape_once().await.decode().unwrap();
    assert_eq!(names(&batch), SYNTHETIC);
    assert_eq!(value(&batch, "up"), 0.0);
    assert_eq!(value(&batch, "scrape_samples_scraped"), 1.0);
    let err = sl.status().lock().unwrap().last_error.clone().unwrap();
    assert!(err.contains("missing metric name"), "{err}");
    // Every label removed: a drop (Prometheus takes an empty set as dropped).
    let (_server, mut sl) = scrape_loop("a{x=\"1\"} 1\nb 2\n", drop_name("loop_no_labels", ".*")).await;
    let batch = sl.scrape_once().await.decode().unwrap();
    assert_eq!(names(&batch), SYNTHETIC);
    assert_eq!(value(&batch, "up"), 1.0);
    assert_eq!(value(&batch, "scrape_samples_scraped"), 2.0);
    assert_eq!(value(&batch, "scrape_samples_post_metric_relabeling"), 0.0);
}

#[tokio::test]
async fn blanks_before_a_name_fail_the_scrape_as_in_prometheus() {
    // Prometheus takes them as part of the name, counts the sample, and refuses the name.
    let (_server, mut sl) = scrape_loop("a 1\n  b 2\n", options("loop_leading_blanks")).await;
    let batch = sl.scrape_once().await.decode().unwrap();
    assert_eq!(names(&batch), SYNTHETIC);
    assert_eq!(value(&batch, "up"), 0.0);
    assert_eq!(value(&batch, "scrape_samples_scraped"), 2.0);
    assert_eq!(value(&batch, "scrape_samples_post_metric_relabeling"), 1.0);
}

#[tokio::test]
async fn a_failed_scrape_reports_the_counts_up_to_the_failure() {
    // As Prometheus: a sample that does not parse is not counted; one that fails after parsing
    // (a repeated label name) counts as scraped but not as kept.
    let (_server, mut sl) = scrape_loop("a 1\nb 2\nc{x=\"1\",x=\"2\"} 3\n", options("loop_fail_counts")).await;
    let batch = sl.scrape_once().await.decode().unwrap();
    assert_eq!(value(&batch, "up"), 0.0);
    assert_eq!(value(&batch, "scrape_samples_scraped"), 3.0);
    assert_eq!(value(&batch, "scrape_samples_post_metric_relabeling"), 2.0);
    let (_server, mut sl) = scrape_loop("a 1\nb 2\nc x\n", options("loop_fail_counts_parse")).await;
    let batch = sl.scrape_once().await.decode().unwrap();
    assert_eq!(value(&batch, "scrape_samples_scraped"), 2.0);
    assert_eq!(value(&batch, "scrape_samples_post_metric_relabeling"), 2.0);
}

#[tokio::test]
async fn a_body_over_the_size_limit_fails_the_scrape() {
    let opts = ScrapeOptions { body_size_limit: 16, ..options("loop_body_limit") };
    let (_server, mut sl) = scrape_loop("a 1\nb 2\nc 3\nd 4\ne 5\n", opts).await;
    let batch = sl.scrape_once().await.decode().unwrap();
    assert_eq!(value(&batch, "up"), 0.0);
    assert!(sl.status().lock().unwrap().last_error.clone().unwrap().contains("16 bytes"));

    let opts = ScrapeOptions { body_size_limit: 20, ..options("loop_body_limit_ok") };
    let (_server, mut sl) = scrape_loop("a 1\nb 2\nc 3\nd 4\ne 5\n", opts).await;
    assert_eq!(value(&sl.scrape_once().await.decode().unwrap(), "up"), 1.0, "exactly at the limit is fine");
}

#[tokio::test]
async fn gzip_bodies_are_decompressed_and_the_limit_applies_to_the_decompressed_size() {
    let body: String = (0..200).map(|i| format!("metric_{i} {i}\n")).collect();
    let server = Server::start(Reply { gzip: true, ..Reply::text(&body) }).await;
    let mut sl = ScrapeLoop::new(target(server.addr, options("loop_gzip")), vec![]);
    let batch = sl.scrape_once().await.decode().unwrap();
    assert_eq!(value(&batch, "up"), 1.0);
    assert_eq!(value(&batch, "scrape_samples_scraped"), 200.0);
    assert_eq!(value(&batch, "metric_199"), 199.0);
    let enc = server.requests()[0].get("accept-encoding").unwrap().to_str().unwrap().to_string();
    assert!(enc.contains("gzip"), "{enc}");

    // The compressed body is far below the limit, the decompressed one above it.
    let opts = ScrapeOptions { body_size_limit: body.len() as u64 - 1, ..options("loop_gzip_limit") };
    let mut sl = ScrapeLoop::new(target(server.addr, opts), vec![]);
    let batch = sl.scrape_once().await.decode().unwrap();
    assert_eq!(value(&batch, "up"), 0.0);
}

#[tokio::test]
async fn openmetrics_responses_use_the_openmetrics_parser() {
    let body = "# TYPE c counter\nc_total 3 1700000000.5\nc_created 1600000000\n# EOF\n";
    let server = Server::start(Reply {
        content_type: "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ..Reply::text(body)
    })
    .await;
    let mut sl = ScrapeLoop::new(target(server.addr, options("loop_om")), vec![]);
    let batch = sl.scrape_once().await.decode().unwrap();
    assert_eq!(value(&batch, "up"), 1.0);
    let c = batch.iter().find(|t| name(t) == "c_total").unwrap();
    assert_eq!(c.samples[0].timestamp, 1_700_000_000_500);
    // `_created` is an ordinary sample, as in Prometheus without created-timestamp ingestion.
    assert_eq!(value(&batch, "c_created"), 1_600_000_000.0);

    server.set_body("c_total 3\n");
    let batch = sl.scrape_once().await.decode().unwrap();
    assert_eq!(value(&batch, "up"), 0.0, "OpenMetrics without # EOF is malformed");
}

#[tokio::test]
async fn label_limits_fail_the_scrape() {
    let cases = [
        (ScrapeOptions { label_limit: Some(3), ..options("loop_label_limit") }, "label_limit"),
        (ScrapeOptions { label_name_length_limit: Some(4), ..options("loop_name_len") }, "label_name_length_limit"),
        (ScrapeOptions { label_value_length_limit: Some(4), ..options("loop_value_len") }, "label_value_length_limit"),
    ];
    for (opts, what) in cases {
        // __name__, instance, job, x: four labels; `instance` is longer than four characters.
        let (_server, mut sl) = scrape_loop("a{x=\"y\"} 1\n", opts).await;
        let batch = sl.scrape_once().await.decode().unwrap();
        assert_eq!(value(&batch, "up"), 0.0, "{what}");
        let err = sl.status().lock().unwrap().last_error.clone().unwrap();
        assert!(err.contains(what), "{err}");
    }
    let opts = ScrapeOptions { label_limit: Some(4), ..options("loop_label_limit_ok") };
    let (_server, mut sl) = scrape_loop("a{x=\"y\"} 1\n", opts).await;
    assert_eq!(value(&sl.scrape_once().await.decode().unwrap(), "up"), 1.0);
}

#[tokio::test]
async fn a_slow_target_times_out() {
    let server = Server::start(Reply { delay: Duration::from_millis(500), ..Reply::text("a 1\n") }).await;
    let opts = ScrapeOptions { timeout: Duration::from_millis(50), ..options("loop_timeout") };
    let mut sl = ScrapeLoop::new(target(server.addr, opts), vec![]);
    let batch = sl.scrape_once().await.decode().unwrap();
    assert_eq!(value(&batch, "up"), 0.0);
    assert!(sl.status().lock().unwrap().last_error.clone().unwrap().contains("timed out"));
}

#[tokio::test]
async fn the_bearer_token_file_is_read_before_every_scrape() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "first\n").unwrap();
    let server = Server::start(Reply::text("a 1\n")).await;
    let opts = ScrapeOptions {
        auth: lgtm_scrape::Auth { bearer_token_file: Some(token.clone()), ..Default::default() },
        ..options("loop_token")
    };
    let mut sl = ScrapeLoop::new(target(server.addr, opts), vec![]);
    sl.scrape_once().await.decode().unwrap();
    std::fs::write(&token, "second").unwrap();
    sl.scrape_once().await.decode().unwrap();
    let auth: Vec<String> =
        server.requests().iter().map(|h| h.get("authorization").unwrap().to_str().unwrap().to_string()).collect();
    assert_eq!(auth, ["Bearer first", "Bearer second"]);

    std::fs::remove_file(&token).unwrap();
    let batch = sl.scrape_once().await.decode().unwrap();
    assert_eq!(value(&batch, "up"), 0.0, "a missing token fails the scrape");
}

#[tokio::test]
async fn staleness_markers_cover_the_series_and_the_synthetic_series() {
    let (_server, mut sl) = scrape_loop("a 1\nb 2\n", options("loop_end")).await;
    sl.scrape_once().await.decode().unwrap();
    let markers = sl.staleness_markers().decode().unwrap();
    let mut want = vec!["a".to_string(), "b".to_string()];
    want.extend(SYNTHETIC.iter().map(|s| s.to_string()));
    want.sort();
    assert_eq!(stale_names(&markers), want);
    assert!(markers.iter().all(|t| t.samples[0].value.to_bits() == STALE_BITS));
}

#[tokio::test]
async fn external_labels_are_added_where_missing_and_labels_stay_sorted() {
    let server = Server::start(Reply::text("a 1\nb{cluster=\"own\",zone=\"z\"} 2\n")).await;
    let external = vec![lgtm_pipeline::proto::Label::new("cluster", "c1")];
    let mut sl = ScrapeLoop::new(target(server.addr, options("loop_external")), external);
    let batch = sl.scrape_once().await;
    assert_eq!(batch.samples(), 7);
    let series = batch.decode().unwrap();
    for ts in &series {
        assert!(ts.labels.windows(2).all(|w| w[0].name < w[1].name), "sorted: {ts:?}");
    }
    let a = series.iter().find(|t| name(t) == "a").unwrap();
    assert_eq!(label(a, "cluster"), Some("c1"));
    let b = series.iter().find(|t| name(t) == "b").unwrap();
    assert_eq!(label(b, "cluster"), Some("own"));
    let up = series.iter().find(|t| name(t) == "up").unwrap();
    assert_eq!(label(up, "cluster"), Some("c1"));
    let markers = sl.staleness_markers().decode().unwrap();
    assert!(markers.iter().all(|t| label(t, "cluster").is_some()));
}

#[test]
fn the_pipeline_metrics_sink_is_a_series_sink() {
    fn assert_sink<S: lgtm_scrape::SeriesSink>() {}
    assert_sink::<lgtm_pipeline::MetricsSink>();
}

/// A server replying `body` with `content_type` (empty: a blank header).
async fn typed(content_type: &'static str, body: &str) -> Server {
    Server::start(Reply { content_type, ..Reply::text(body) }).await
}

#[tokio::test]
async fn an_unknown_or_blank_content_type_fails_the_scrape_unless_a_fallback_is_set() {
    // Prometheus 3: no parser is guessed without `fallback_scrape_protocol` (2.x took the text
    // format); with one, that parser reads the body.
    for content_type in ["text/html", "", "no media type"] {
        let server = typed(content_type, "a 1\n").await;
        let mut sl = ScrapeLoop::new(target(server.addr, options("loop_ct")), vec![]);
        let batch = sl.scrape_once().await.decode().unwrap();
        assert_eq!(value(&batch, "up"), 0.0, "{content_type:?}");
        assert_eq!(value(&batch, "scrape_samples_scraped"), 0.0, "{content_type:?}");
        assert!(!names(&batch).contains(&"a".to_string()), "{content_type:?}");

        let text = ScrapeOptions { fallback_scrape_protocol: Some(Format::Text), ..options("loop_ct_text") };
        let mut sl = ScrapeLoop::new(target(server.addr, text), vec![]);
        let batch = sl.scrape_once().await.decode().unwrap();
        assert_eq!(value(&batch, "up"), 1.0, "{content_type:?}");
        assert_eq!(value(&batch, "a"), 1.0, "{content_type:?}");

        // The fallback is the parser: this body is not OpenMetrics (no `# EOF`).
        let om = ScrapeOptions { fallback_scrape_protocol: Some(Format::OpenMetrics), ..options("loop_ct_om") };
        let mut sl = ScrapeLoop::new(target(server.addr, om), vec![]);
        assert_eq!(value(&sl.scrape_once().await.decode().unwrap(), "up"), 0.0, "{content_type:?}");
    }
}

#[tokio::test]
async fn an_empty_body_is_an_empty_scrape_whatever_its_content_type() {
    let server = typed("text/plain; version=0.0.4", "a 1\n").await;
    let mut sl = ScrapeLoop::new(target(server.addr, options("loop_empty")), vec![]);
    assert_eq!(value(&sl.scrape_once().await.decode().unwrap(), "up"), 1.0);
    // OpenMetrics requires `# EOF`, yet an empty body is not parsed at all (Prometheus 3).
    for content_type in ["application/openmetrics-text; version=1.0.0", "text/html", ""] {
        server.set(Reply { content_type, ..Reply::text("") });
        let batch = sl.scrape_once().await.decode().unwrap();
        assert_eq!(value(&batch, "up"), 1.0, "{content_type:?}");
        assert_eq!(value(&batch, "scrape_samples_scraped"), 0.0, "{content_type:?}");
    }
}

#[tokio::test]
async fn a_sample_without_a_timestamp_after_one_with_is_a_duplicate() {
    // Prometheus 3 refuses a sample without a timestamp of a series already read in the same
    // scrape, with or without one (its upstream case: `a 0 0` then `a 0`).
    let (_server, mut sl) = scrape_loop("a 7 5000\na 8\nb 1\n", options("loop_dup_ts")).await;
    let batch = sl.scrape_once().await.decode().unwrap();
    let a: Vec<_> = batch.iter().filter(|t| name(t) == "a").flat_map(|t| &t.samples).collect();
    assert_eq!(a.len(), 1);
    assert_eq!((a[0].timestamp, a[0].value), (5000, 7.0));
    assert_eq!(value(&batch, "scrape_samples_post_metric_relabeling"), 3.0);
}

#[tokio::test]
async fn a_timestamp_beyond_the_range_of_milliseconds_is_dropped_as_prometheus_3_does() {
    let body = "a_total 1 12345678901234567890.1\nb_total 2\n# EOF\n";
    let server = typed("application/openmetrics-text; version=1.0.0", body).await;
    let mut sl = ScrapeLoop::new(target(server.addr, options("loop_ts_range")), vec![]);
    let batch = sl.scrape_once().await.decode().unwrap();
    assert_eq!(value(&batch, "up"), 1.0);
    assert!(!names(&batch).contains(&"a_total".to_string()));
    assert_eq!(value(&batch, "b_total"), 2.0);
    assert_eq!(value(&batch, "scrape_samples_scraped"), 2.0);
    assert_eq!(value(&batch, "scrape_samples_post_metric_relabeling"), 2.0);
    assert_eq!(value(&batch, "scrape_series_added"), 1.0, "the refused series is not added");
}

#[tokio::test]
async fn histogram_and_summary_bounds_are_sent_in_float_form() {
    let body =
        "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\n# TYPE s summary\ns{quantile=\"1\"} 3\n";
    let (_server, mut sl) = scrape_loop(body, options("loop_le")).await;
    let batch = sl.scrape_once().await.decode().unwrap();
    let les: Vec<_> = batch.iter().filter(|t| name(t) == "h_bucket").filter_map(|t| label(t, "le")).collect();
    assert_eq!(les, ["1.0", "+Inf"]);
    let s = batch.iter().find(|t| name(t) == "s").unwrap();
    assert_eq!(label(s, "quantile"), Some("1.0"));
}

#[tokio::test]
async fn a_body_that_fails_part_way_marks_stale_only_the_series_not_read_before_the_failure() {
    // Prometheus tracks the series it read before a parse error for staleness, then rolls the
    // scrape back: `a` (read) gets no marker, `b` (not reached) does.
    let (server, mut sl) = scrape_loop("a 1\nb 2\n", options("loop_part")).await;
    sl.scrape_once().await.decode().unwrap();
    server.set_body("a 1\nb{ 2\n");
    let failed = sl.scrape_once().await.decode().unwrap();
    assert_eq!(value(&failed, "up"), 0.0);
    assert_eq!(stale_names(&failed), ["b"]);
    assert!(!names(&failed).contains(&"a".to_string()), "no sample of a failed scrape is sent");
    // `a` is still the last scrape's series: it goes stale when a scrape no longer has it.
    server.set_body("c 3\n");
    let next = sl.scrape_once().await.decode().unwrap();
    assert_eq!(stale_names(&next), ["a"]);
}
