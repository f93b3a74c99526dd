//! What the Prometheus Operator generates for one monitor endpoint: the relabelings that select
//! the endpoint's targets and give them the `job`, `namespace`, `service`, `pod`, `container`,
//! `endpoint` and `instance` labels dashboards rely on, and the scrape options. The rules are
//! the operator's, in its order, so that the final labels (and the result of user relabelings
//! that read intermediate labels) are the same as with Prometheus.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use lgtm_config::RelabelConfig;
use lgtm_scrape::{Auth, BasicAuth, ScrapeOptions, Secret, TlsOptions};

use super::credentials::{Credentials, Ref};
use super::monitor::{Endpoint, IntOrString, LabelSelector, Monitor, MonitorKind};
use super::sd_labels::sanitize;

/// The global settings a monitor endpoint falls back to (`scrape.*`).
#[derive(Debug, Clone, Copy)]
pub struct Defaults {
    pub interval: Duration,
    pub timeout: Duration,
    pub body_size_limit: u64,
    pub sample_limit: usize,
}

impl Defaults {
    pub fn from_config(scrape: &lgtm_config::ScrapeConfig) -> Defaults {
        Defaults {
            interval: scrape.interval.get(),
            timeout: scrape.timeout.get(),
            body_size_limit: scrape.body_size_limit.bytes(),
            sample_limit: scrape.sample_limit,
        }
    }
}

fn rule(source: &[&str], target: &str, regex: Option<&str>, replacement: Option<&str>) -> RelabelConfig {
    RelabelConfig {
        source_labels: source.iter().map(|s| s.to_string()).collect(),
        target_label: (!target.is_empty()).then(|| target.to_string()),
        regex: regex.map(str::to_string),
        replacement: replacement.map(str::to_string),
        ..Default::default()
    }
}

fn filter(action: &str, source: &[&str], regex: &str) -> RelabelConfig {
    RelabelConfig { action: Some(action.into()), ..rule(source, "", Some(regex), None) }
}

/// Keep/drop rules equivalent to a label selector, on `<prefix>_label_*` meta labels.
fn selector_rules(out: &mut Vec<RelabelConfig>, selector: &LabelSelector, prefix: &str) {
    for (k, v) in &selector.match_labels {
        let k = sanitize(k);
        let (label, present) = (format!("{prefix}_label_{k}"), format!("{prefix}_labelpresent_{k}"));
        out.push(filter("keep", &[&label, &present], &format!("({v});true")));
    }
    for e in &selector.match_expressions {
        let k = sanitize(&e.key);
        let (label, present) = (format!("{prefix}_label_{k}"), format!("{prefix}_labelpresent_{k}"));
        let values = e.values.join("|");
        match e.operator.as_str() {
            "In" => out.push(filter("keep", &[&label, &present], &format!("({values});true"))),
            "NotIn" => out.push(filter("drop", &[&label, &present], &format!("({values});true"))),
            "Exists" => out.push(filter("keep", &[&present], "true")),
            "DoesNotExist" => out.push(filter("drop", &[&present], "true")),
            _ => {}
        }
    }
}

fn running_filter() -> RelabelConfig {
    filter("drop", &["__meta_kubernetes_pod_phase"], "(Failed|Succeeded)")
}

/// `<label>` from `<meta prefix><label>` when that is not empty.
fn copy_label(out: &mut Vec<RelabelConfig>, meta_prefix: &str, label: &str) {
    let l = sanitize(label);
    out.push(rule(&[&format!("{meta_prefix}{l}")], &l, Some("(.+)"), Some("${1}")));
}

/// The operator's relabelings for endpoint `ep` of a ServiceMonitor (role `endpointslice`),
/// followed by the endpoint's own `relabelings`.
pub fn service_monitor_relabelings(m: &Monitor, ep: &Endpoint) -> Vec<RelabelConfig> {
    let mut out = vec![rule(&["job"], "__tmp_prometheus_job_name", None, None)];
    selector_rules(&mut out, &m.spec.selector, "__meta_kubernetes_service");
    if let Some(port) = ep.port.as_deref().filter(|p| !p.is_empty()) {
        out.push(filter("keep", &["__meta_kubernetes_endpointslice_port_name"], port));
    } else if let Some(tp) = &ep.target_port {
        match tp {
            IntOrString::String(name) => out.push(filter("keep", &["__meta_kubernetes_pod_container_port_name"], name)),
            IntOrString::Int(n) => {
                out.push(filter("keep", &["__meta_kubernetes_pod_container_port_number"], &n.to_string()))
            }
        }
    }
    let target =
        ["__meta_kubernetes_endpointslice_address_target_kind", "__meta_kubernetes_endpointslice_address_target_name"];
    for (kind, label) in [("Node", "node"), ("Pod", "pod")] {
        out.push(RelabelConfig {
            separator: Some(";".into()),
            ..rule(&target, label, Some(&format!("{kind};(.*)")), Some("${1}"))
        });
    }
    out.push(rule(&["__meta_kubernetes_namespace"], "namespace", None, None));
    out.push(rule(&["__meta_kubernetes_service_name"], "service", None, None));
    out.push(rule(&["__meta_kubernetes_pod_name"], "pod", None, None));
    out.push(rule(&["__meta_kubernetes_pod_container_name"], "container", None, None));
    if ep.filter_running.unwrap_or(true) {
        out.push(running_filter());
    }
    for l in &m.spec.target_labels {
        copy_label(&mut out, "__meta_kubernetes_service_label_", l);
    }
    for l in &m.spec.pod_target_labels {
        copy_label(&mut out, "__meta_kubernetes_pod_label_", l);
    }
    // The job is the Service's name, or the value of its `jobLabel` label when it has one.
    out.push(rule(&["__meta_kubernetes_service_name"], "job", None, Some("${1}")));
    if !m.spec.job_label.is_empty() {
        copy_job_label(&mut out, "__meta_kubernetes_service_label_", &m.spec.job_label);
    }
    endpoint_label(&mut out, ep);
    out.extend(ep.relabelings.iter().map(RelabelConfig::from));
    out
}

/// The operator's relabelings for endpoint `ep` of a PodMonitor (role `pod`), followed by the
/// endpoint's own `relabelings`.
pub fn pod_monitor_relabelings(m: &Monitor, ep: &Endpoint) -> Vec<RelabelConfig> {
    let mut out = vec![rule(&["job"], "__tmp_prometheus_job_name", None, None)];
    selector_rules(&mut out, &m.spec.selector, "__meta_kubernetes_pod");
    if let Some(port) = ep.port.as_deref().filter(|p| !p.is_empty()) {
        out.push(filter("keep", &["__meta_kubernetes_pod_container_port_name"], port));
    } else if let Some(n) = ep.port_number {
        out.push(filter("keep", &["__meta_kubernetes_pod_container_port_number"], &n.to_string()));
    } else if let Some(tp) = &ep.target_port {
        match tp {
            IntOrString::String(name) => out.push(filter("keep", &["__meta_kubernetes_pod_container_port_name"], name)),
            IntOrString::Int(n) => {
                out.push(filter("keep", &["__meta_kubernetes_pod_container_port_number"], &n.to_string()))
            }
        }
    }
    out.push(rule(&["__meta_kubernetes_namespace"], "namespace", None, None));
    out.push(rule(&["__meta_kubernetes_pod_container_name"], "container", None, None));
    out.push(rule(&["__meta_kubernetes_pod_name"], "pod", None, None));
    if ep.filter_running.unwrap_or(true) {
        out.push(running_filter());
    }
    for l in &m.spec.pod_target_labels {
        copy_label(&mut out, "__meta_kubernetes_pod_label_", l);
    }
    // The job is `<namespace>/<name>` of the PodMonitor, or the pod's `jobLabel` label.
    let job = format!("{}/{}", m.namespace, m.name);
    out.push(rule(&[], "job", None, Some(&job)));
    if !m.spec.job_label.is_empty() {
        copy_job_label(&mut out, "__meta_kubernetes_pod_label_", &m.spec.job_label);
    }
    endpoint_label(&mut out, ep);
    out.extend(ep.relabelings.iter().map(RelabelConfig::from));
    out
}

fn copy_job_label(out: &mut Vec<RelabelConfig>, meta_prefix: &str, label: &str) {
    let source = format!("{meta_prefix}{}", sanitize(label));
    out.push(rule(&[&source], "job", Some("(.+)"), Some("${1}")));
}

/// `endpoint` = the endpoint's port name, else its port number or target port.
fn endpoint_label(out: &mut Vec<RelabelConfig>, ep: &Endpoint) {
    let value = match (&ep.port, ep.port_number, &ep.target_port) {
        (Some(p), _, _) if !p.is_empty() => p.clone(),
        (_, Some(n), _) => n.to_string(),
        (_, _, Some(tp)) if !tp.to_string().is_empty() => tp.to_string(),
        _ => return,
    };
    out.push(rule(&[], "endpoint", None, Some(&value)));
}

fn parse_duration(field: &str, text: Option<&str>) -> Result<Option<Duration>, String> {
    match text.filter(|t| !t.is_empty()) {
        None => Ok(None),
        Some(t) => t.parse::<lgtm_config::Duration>().map(|d| Some(d.get())).map_err(|e| format!("{field}: {e}")),
    }
}

/// The Prometheus job name the operator gives endpoint `index` of `m`; also the `source` of
/// its targets on `/targets`.
pub fn job_name(m: &Monitor, index: usize) -> String {
    format!("{}/{}/{}/{}", m.kind.job_prefix(), m.namespace, m.name, index)
}

/// The scrape options of endpoint `index` of `m`; credentials are resolved through `creds`
/// (which writes them to files the scrape loop reads). The error names the field.
pub fn endpoint_options(
    m: &Monitor,
    index: usize,
    ep: &Endpoint,
    defaults: &Defaults,
    creds: &mut dyn Credentials,
) -> Result<Arc<ScrapeOptions>, String> {
    let at = match m.kind {
        MonitorKind::ServiceMonitor => format!("spec.endpoints[{index}]"),
        MonitorKind::PodMonitor => format!("spec.podMetricsEndpoints[{index}]"),
    };
    let interval = parse_duration(&format!("{at}.interval"), ep.interval.as_deref())?.unwrap_or(defaults.interval);
    let timeout = parse_duration(&format!("{at}.scrapeTimeout"), ep.scrape_timeout.as_deref())?
        .unwrap_or(defaults.timeout.min(interval));
    let scheme = ep.scheme.clone().unwrap_or_else(|| "http".into()).to_lowercase();
    if scheme != "http" && scheme != "https" {
        return Err(format!("{at}.scheme: {scheme:?} is neither http nor https"));
    }
    let relabel_configs = match m.kind {
        MonitorKind::ServiceMonitor => service_monitor_relabelings(m, ep),
        MonitorKind::PodMonitor => pod_monitor_relabelings(m, ep),
    };
    let params: BTreeMap<String, String> =
        ep.params.iter().filter_map(|(k, v)| v.first().map(|first| (k.clone(), first.clone()))).collect();
    let limit = |v: Option<u64>| v.filter(|n| *n > 0).map(|n| n as usize);
    let options = ScrapeOptions {
        job: job_name(m, index),
        scheme,
        metrics_path: ep.path.clone().filter(|p| !p.is_empty()).unwrap_or_else(|| "/metrics".into()),
        params,
        interval,
        timeout,
        body_size_limit: defaults.body_size_limit,
        sample_limit: limit(m.spec.sample_limit).unwrap_or(defaults.sample_limit),
        label_limit: limit(m.spec.label_limit),
        label_name_length_limit: limit(m.spec.label_name_length_limit),
        label_value_length_limit: limit(m.spec.label_value_length_limit),
        honor_labels: ep.honor_labels,
        honor_timestamps: ep.honor_timestamps.unwrap_or(true),
        relabel_configs,
        metric_relabel_configs: ep.metric_relabelings.iter().map(RelabelConfig::from).collect(),
        auth: endpoint_auth(m, &at, ep, creds)?,
        fallback_scrape_protocol: m.spec.fallback_scrape_protocol.and_then(lgtm_scrape::static_configs::format_of),
    };
    Ok(Arc::new(options))
}

fn endpoint_auth(m: &Monitor, at: &str, ep: &Endpoint, creds: &mut dyn Credentials) -> Result<Auth, String> {
    let ns = m.namespace.as_str();
    let mut auth = Auth { follow_redirects: ep.follow_redirects.unwrap_or(true), ..Auth::default() };
    let token = match (&ep.authorization, &ep.bearer_token_secret) {
        (Some(a), _) if a.credentials.is_some() => {
            a.credentials.as_ref().map(|s| (format!("{at}.authorization.credentials"), s))
        }
        (_, Some(s)) if !s.name.is_empty() => Some((format!("{at}.bearerTokenSecret"), s)),
        _ => None,
    };
    if let Some((field, selector)) = token {
        auth.bearer_token_file = creds.file(ns, &Ref::Secret(selector.clone())).map_err(|e| format!("{field}: {e}"))?;
    } else if let Some(file) = ep.bearer_token_file.as_deref().filter(|f| !f.is_empty()) {
        auth.bearer_token_file = Some(file.into());
    }
    if let Some(basic) = &ep.basic_auth {
        if auth.bearer_token_file.is_some() {
            // As Prometheus: at most one of basic auth and a bearer token.
            return Err(format!("{at}.basicAuth: cannot be used together with a bearer token or authorization"));
        }
        let mut secret = |field: &str, selector: &Option<super::monitor::SecretKeySelector>| {
            let Some(selector) = selector.as_ref().filter(|s| !s.name.is_empty()) else {
                return Ok(Secret::Inline(String::new()));
            };
            let file =
                creds.file(ns, &Ref::Secret(selector.clone())).map_err(|e| format!("{at}.basicAuth.{field}: {e}"))?;
            // An optional key that is missing is an empty value, as the operator does.
            Ok::<_, String>(file.map_or_else(|| Secret::Inline(String::new()), Secret::File))
        };
        let username = secret("username", &basic.username)?;
        let password = secret("password", &basic.password)?;
        auth.basic_auth = Some(BasicAuth { username, password });
    }
    if let Some(tls) = &ep.tls_config {
        let mut options = TlsOptions {
            insecure_skip_verify: tls.insecure_skip_verify,
            server_name: tls.server_name.clone().filter(|s| !s.is_empty()),
            ..Default::default()
        };
        let pick = |field: &str, v: &Option<super::monitor::SecretOrConfigMap>| -> Option<(String, Ref)> {
            let v = v.as_ref()?;
            if let Some(s) = v.secret.as_ref().filter(|s| !s.name.is_empty()) {
                return Some((format!("{at}.tlsConfig.{field}.secret"), Ref::Secret(s.clone())));
            }
            v.config_map
                .as_ref()
                .filter(|c| !c.name.is_empty())
                .map(|c| (format!("{at}.tlsConfig.{field}.configMap"), Ref::ConfigMap(c.clone())))
        };
        if let Some((field, r)) = pick("ca", &tls.ca) {
            options.ca_file = creds.file(ns, &r).map_err(|e| format!("{field}: {e}"))?;
        } else if let Some(f) = tls.ca_file.as_deref().filter(|f| !f.is_empty()) {
            options.ca_file = Some(f.into());
        }
        if let Some((field, r)) = pick("cert", &tls.cert) {
            options.cert_file = creds.file(ns, &r).map_err(|e| format!("{field}: {e}"))?;
        } else if let Some(f) = tls.cert_file.as_deref().filter(|f| !f.is_empty()) {
            options.cert_file = Some(f.into());
        }
        if let Some(s) = tls.key_secret.as_ref().filter(|s| !s.name.is_empty()) {
            let r = Ref::Secret(s.clone());
            options.key_file = creds.file(ns, &r).map_err(|e| format!("{at}.tlsConfig.keySecret: {e}"))?;
        } else if let Some(f) = tls.key_file.as_deref().filter(|f| !f.is_empty()) {
            options.key_file = Some(f.into());
        }
        if options.cert_file.is_some() != options.key_file.is_some() {
            return Err(format!("{at}.tlsConfig: a client certificate needs both cert and keySecret"));
        }
        auth.tls = Some(options);
    }
    Ok(auth)
}
