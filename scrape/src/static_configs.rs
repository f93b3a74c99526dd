//! `scrape.static_configs` as target groups.

use std::collections::BTreeMap;
use std::sync::Arc;

use lgtm_config::{ScrapeConfig, ScrapeProtocol, StaticConfig};

use crate::parser::Format;

use crate::target::{Auth, BasicAuth, ScrapeOptions, Secret, TargetGroup, TlsOptions};

/// The job of a static config: its `job` label, else `static` (Prometheus would require a
/// `job_name`; our config has none).
pub const DEFAULT_JOB: &str = "static";

/// One target group per static config, with the global scrape settings as defaults.
pub fn static_target_groups(scrape: &ScrapeConfig) -> Vec<TargetGroup> {
    scrape.static_configs.iter().enumerate().map(|(i, sc)| static_target_group(scrape, sc, i)).collect()
}

fn static_target_group(scrape: &ScrapeConfig, sc: &StaticConfig, index: usize) -> TargetGroup {
    let interval = sc.interval.unwrap_or(scrape.interval).get();
    // A global timeout longer than this job's interval shrinks to the interval (Prometheus).
    let timeout = match sc.timeout {
        Some(t) => t.get(),
        None => scrape.timeout.get().min(interval),
    };
    let options = ScrapeOptions {
        job: sc.labels.get("job").cloned().unwrap_or_else(|| DEFAULT_JOB.into()),
        scheme: sc.scheme.clone().unwrap_or_else(|| "http".into()),
        metrics_path: sc.metrics_path.clone().unwrap_or_else(|| "/metrics".into()),
        interval,
        timeout,
        body_size_limit: scrape.body_size_limit.bytes(),
        sample_limit: scrape.sample_limit,
        honor_labels: sc.honor_labels,
        honor_timestamps: sc.honor_timestamps.unwrap_or(true),
        relabel_configs: sc.relabel_configs.clone(),
        metric_relabel_configs: sc.metric_relabel_configs.clone(),
        auth: auth(sc),
        fallback_scrape_protocol: sc.fallback_scrape_protocol.and_then(format_of),
        ..ScrapeOptions::default()
    };
    TargetGroup {
        source: format!("static_configs/{index}"),
        targets: sc.targets.iter().map(|t| BTreeMap::from([("__address__".to_string(), t.clone())])).collect(),
        labels: sc.labels.clone(),
        options: Arc::new(options),
    }
}

/// The parser of a Prometheus scrape protocol (`None`: protobuf, which `validate` refuses in the
/// config and a monitor's `fallbackScrapeProtocol` leaves as no fallback).
pub fn format_of(protocol: ScrapeProtocol) -> Option<Format> {
    match protocol {
        ScrapeProtocol::PrometheusProto => None,
        ScrapeProtocol::PrometheusText0_0_4 | ScrapeProtocol::PrometheusText1_0_0 => Some(Format::Text),
        // Prometheus 3 parses any OpenMetrics fallback with its OpenMetrics 1 parser.
        ScrapeProtocol::OpenMetricsText0_0_1
        | ScrapeProtocol::OpenMetricsText1_0_0
        | ScrapeProtocol::OpenMetricsText2_0_0 => Some(Format::OpenMetrics),
    }
}

fn auth(sc: &StaticConfig) -> Auth {
    Auth {
        bearer_token_file: sc.bearer_token_file.clone(),
        basic_auth: sc.basic_auth.as_ref().map(|b| BasicAuth {
            username: Secret::Inline(b.username.clone()),
            password: match &b.password_file {
                Some(file) => Secret::File(file.clone()),
                None => Secret::Inline(b.password.clone().unwrap_or_default()),
            },
        }),
        tls: sc.tls_config.as_ref().map(|t| TlsOptions {
            ca_file: t.ca_file.clone(),
            cert_file: t.cert_file.clone(),
            key_file: t.key_file.clone(),
            server_name: t.server_name.clone(),
            insecure_skip_verify: t.insecure_skip_verify,
        }),
        follow_redirects: sc.follow_redirects.unwrap_or(true),
    }
}

#[cfg(test)]
mod tests {
    use lgtm_config::Duration;

    use super::*;
    use crate::relabel::Relabeler;
    use crate::target::populate;

    #[test]
    fn job_label_defaults_to_static_and_global_settings_apply() {
        let scrape = ScrapeConfig {
            interval: Duration::from_secs(15),
            timeout: Duration::from_secs(20),
            sample_limit: 100,
            static_configs: vec![
                StaticConfig { targets: vec!["a:9100".into(), "b:9100".into()], ..Default::default() },
                StaticConfig {
                    targets: vec!["c:8080".into()],
                    labels: BTreeMap::from([("job".into(), "node".into()), ("team".into(), "x".into())]),
                    metrics_path: Some("/m".into()),
                    interval: Some(Duration::from_secs(60)),
                    honor_timestamps: Some(false),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let groups = static_target_groups(&scrape);
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].options.job, "static");
        assert_eq!(groups[0].options.timeout, std::time::Duration::from_secs(15));
        assert_eq!(groups[0].options.sample_limit, 100);
        assert!(groups[0].options.honor_timestamps);
        assert_eq!(groups[0].targets.len(), 2);
        assert_eq!(groups[1].options.job, "node");
        assert_eq!(groups[1].options.timeout, std::time::Duration::from_secs(20));
        assert!(!groups[1].options.honor_timestamps);

        let g = &groups[1];
        let t = populate(&g.targets[0], &g.labels, &g.options, &Relabeler::default(), &g.source).unwrap().unwrap();
        assert_eq!(t.url.as_str(), "http://c:8080/m");
        assert_eq!(t.labels.to_string(), r#"{instance="c:8080", job="node", team="x"}"#);
        let g = &groups[0];
        let t = populate(&g.targets[1], &g.labels, &g.options, &Relabeler::default(), &g.source).unwrap().unwrap();
        assert_eq!(t.labels.to_string(), r#"{instance="b:9100", job="static"}"#);
    }

    #[test]
    fn http_client_keys_become_the_targets_auth() {
        let yaml = "scrape:\n  static_configs:\n    - targets: ['a:1']\n      basic_auth: { username: u, password_file: /p }\n      \
                    tls_config: { ca_file: /ca, server_name: m.example }\n      follow_redirects: false\n    \
                    - targets: ['b:1']\n      basic_auth: { username: v, password: pw }\n    - targets: ['c:1']\n";
        let cfg = lgtm_config::Config::from_yaml("c.yaml", yaml, None, |_| None).unwrap();
        let groups = static_target_groups(&cfg.scrape);
        let auth: Vec<&Auth> = groups.iter().map(|g| &g.options.auth).collect();
        assert_eq!(
            *auth[0],
            Auth {
                bearer_token_file: None,
                basic_auth: Some(BasicAuth {
                    username: Secret::Inline("u".into()),
                    password: Secret::File("/p".into())
                }),
                tls: Some(TlsOptions {
                    ca_file: Some("/ca".into()),
                    server_name: Some("m.example".into()),
                    ..TlsOptions::default()
                }),
                follow_redirects: false,
            }
        );
        assert_eq!(
            auth[1].basic_auth,
            Some(BasicAuth { username: Secret::Inline("v".into()), password: Secret::Inline("pw".into()) })
        );
        assert_eq!(*auth[2], Auth::default());
        assert!(auth[2].follow_redirects);
        // The inline password does not show in logs, but a new one restarts the loop.
        assert!(!format!("{:?}", groups[1].options).contains("pw"));
        let mut changed = (*groups[1].options).clone();
        changed.auth.basic_auth.as_mut().unwrap().password = Secret::Inline("pw2".into());
        assert_ne!(changed.fingerprint(), groups[1].options.fingerprint());
    }
}
