//! The fields of `monitoring.coreos.com/v1` ServiceMonitor and PodMonitor that discovery reads,
//! as serde types written from the CRDs' documentation. Every field this agent does not act on
//! is collected (`rest`) and reported by [`Monitor::unsupported`], never silently ignored.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::objects::StrMap;

/// ServiceMonitor or PodMonitor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum MonitorKind {
    ServiceMonitor,
    PodMonitor,
}

impl MonitorKind {
    /// The prefix of the Prometheus Operator's job names: `serviceMonitor/<ns>/<name>/<i>`.
    pub fn job_prefix(self) -> &'static str {
        match self {
            MonitorKind::ServiceMonitor => "serviceMonitor",
            MonitorKind::PodMonitor => "podMonitor",
        }
    }
}

/// A parsed monitor: its identity and spec. The spec of both kinds is one type: the few fields
/// that differ (`endpoints` / `podMetricsEndpoints`, `targetLabels`, `portNumber`) are checked
/// per kind.
#[derive(Debug, Clone)]
pub struct Monitor {
    pub kind: MonitorKind,
    pub namespace: String,
    pub name: String,
    pub spec: MonitorSpec,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MonitorSpec {
    pub job_label: String,
    pub target_labels: Vec<String>,
    pub pod_target_labels: Vec<String>,
    pub endpoints: Vec<Endpoint>,
    pub pod_metrics_endpoints: Vec<Endpoint>,
    pub selector: LabelSelector,
    pub namespace_selector: NamespaceSelector,
    pub sample_limit: Option<u64>,
    pub target_limit: Option<u64>,
    pub label_limit: Option<u64>,
    pub label_name_length_limit: Option<u64>,
    pub label_value_length_limit: Option<u64>,
    /// The exposition format of a target that sends no or an unknown `Content-Type`
    /// (Prometheus 3's `fallback_scrape_protocol`); absent: such a scrape fails.
    pub fallback_scrape_protocol: Option<lgtm_config::ScrapeProtocol>,
    #[serde(flatten)]
    pub rest: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LabelSelector {
    pub match_labels: BTreeMap<String, String>,
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LabelSelectorRequirement {
    pub key: String,
    pub operator: String,
    pub values: Vec<String>,
}

impl LabelSelector {
    /// Whether an object with `labels` is selected (an empty selector selects everything).
    pub fn matches(&self, labels: &StrMap) -> bool {
        let get = |k: &str| labels.get(k);
        self.match_labels.iter().all(|(k, v)| get(k) == Some(v.as_str()))
            && self.match_expressions.iter().all(|e| match e.operator.as_str() {
                "In" => get(&e.key).is_some_and(|v| e.values.iter().any(|w| w == v)),
                "NotIn" => get(&e.key).is_none_or(|v| !e.values.iter().any(|w| w == v)),
                "Exists" => get(&e.key).is_some(),
                "DoesNotExist" => get(&e.key).is_none(),
                _ => false,
            })
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct NamespaceSelector {
    pub any: bool,
    pub match_names: Vec<String>,
}

impl NamespaceSelector {
    /// Neither `any` nor `matchNames`: the monitor's own namespace.
    pub fn matches(&self, monitor_namespace: &str, namespace: &str) -> bool {
        if self.any {
            true
        } else if self.match_names.is_empty() {
            namespace == monitor_namespace
        } else {
            self.match_names.iter().any(|n| n == namespace)
        }
    }
}

/// A port given by name or number (`targetPort`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum IntOrString {
    Int(i64),
    String(String),
}

impl std::fmt::Display for IntOrString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IntOrString::Int(i) => write!(f, "{i}"),
            IntOrString::String(s) => f.write_str(s),
        }
    }
}

/// A ServiceMonitor `endpoints` item or a PodMonitor `podMetricsEndpoints` item.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Endpoint {
    pub port: Option<String>,
    /// PodMonitor only.
    pub port_number: Option<i64>,
    pub target_port: Option<IntOrString>,
    pub path: Option<String>,
    pub scheme: Option<String>,
    pub params: BTreeMap<String, Vec<String>>,
    pub interval: Option<String>,
    pub scrape_timeout: Option<String>,
    pub honor_labels: bool,
    pub honor_timestamps: Option<bool>,
    pub bearer_token_secret: Option<SecretKeySelector>,
    /// A file in the agent's own container.
    pub bearer_token_file: Option<String>,
    pub authorization: Option<Authorization>,
    pub basic_auth: Option<BasicAuth>,
    pub tls_config: Option<TlsConfig>,
    pub relabelings: Vec<RelabelConfig>,
    pub metric_relabelings: Vec<RelabelConfig>,
    pub follow_redirects: Option<bool>,
    pub filter_running: Option<bool>,
    #[serde(flatten)]
    pub rest: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SecretKeySelector {
    pub name: String,
    pub key: String,
    pub optional: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Authorization {
    /// Default `Bearer`.
    #[serde(rename = "type")]
    pub type_: Option<String>,
    pub credentials: Option<SecretKeySelector>,
    #[serde(flatten)]
    pub rest: BTreeMap<String, Value>,
}

/// `basicAuth`: username and password, each a key of a Secret in the monitor's namespace.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct BasicAuth {
    pub username: Option<SecretKeySelector>,
    pub password: Option<SecretKeySelector>,
    #[serde(flatten)]
    pub rest: BTreeMap<String, Value>,
}

/// A value from a Secret or a ConfigMap key (TLS CA and certificate).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SecretOrConfigMap {
    pub secret: Option<SecretKeySelector>,
    pub config_map: Option<SecretKeySelector>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TlsConfig {
    pub ca: Option<SecretOrConfigMap>,
    pub cert: Option<SecretOrConfigMap>,
    pub key_secret: Option<SecretKeySelector>,
    pub ca_file: Option<String>,
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    pub server_name: Option<String>,
    pub insecure_skip_verify: bool,
    #[serde(flatten)]
    pub rest: BTreeMap<String, Value>,
}

/// A relabeling rule as the CRDs spell it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RelabelConfig {
    pub source_labels: Vec<String>,
    pub separator: Option<String>,
    pub target_label: Option<String>,
    pub regex: Option<String>,
    pub modulus: Option<u64>,
    pub replacement: Option<String>,
    pub action: Option<String>,
}

impl From<&RelabelConfig> for lgtm_config::RelabelConfig {
    fn from(r: &RelabelConfig) -> Self {
        lgtm_config::RelabelConfig {
            source_labels: r.source_labels.clone(),
            separator: r.separator.clone(),
            target_label: r.target_label.clone(),
            regex: r.regex.clone(),
            modulus: r.modulus,
            replacement: r.replacement.clone(),
            // The operator lowercases actions (`Replace`, `LabelMap` are valid in the CRD).
            action: r.action.as_ref().map(|a| a.to_lowercase()),
        }
    }
}

impl Monitor {
    /// Parses the `spec` of a ServiceMonitor or PodMonitor object.
    pub fn parse(kind: MonitorKind, namespace: &str, name: &str, spec: &Value) -> Result<Monitor, String> {
        let spec = if spec.is_null() { Value::Object(Default::default()) } else { spec.clone() };
        let spec: MonitorSpec = serde_json::from_value(spec).map_err(|e| format!("spec: {e}"))?;
        Ok(Monitor { kind, namespace: namespace.into(), name: name.into(), spec })
    }

    /// `ServiceMonitor shop/web`.
    pub fn display_name(&self) -> String {
        format!("{:?} {}/{}", self.kind, self.namespace, self.name)
    }

    /// The endpoints of the monitor's kind.
    pub fn endpoints(&self) -> &[Endpoint] {
        match self.kind {
            MonitorKind::ServiceMonitor => &self.spec.endpoints,
            MonitorKind::PodMonitor => &self.spec.pod_metrics_endpoints,
        }
    }

    /// The fields set on this monitor that the agent does not act on, each as
    /// `<path>: <why>`.
    pub fn unsupported(&self) -> Vec<String> {
        let mut out = Vec::new();
        unknown_fields(&mut out, "spec", &self.spec.rest);
        let (endpoints_key, other_key) = match self.kind {
            MonitorKind::ServiceMonitor => ("endpoints", "podMetricsEndpoints"),
            MonitorKind::PodMonitor => ("podMetricsEndpoints", "endpoints"),
        };
        let other = match self.kind {
            MonitorKind::ServiceMonitor => &self.spec.pod_metrics_endpoints,
            MonitorKind::PodMonitor => &self.spec.endpoints,
        };
        if !other.is_empty() {
            out.push(format!("spec.{other_key}: not a field of {:?}", self.kind));
        }
        if self.kind == MonitorKind::PodMonitor && !self.spec.target_labels.is_empty() {
            out.push("spec.targetLabels: not a field of PodMonitor".into());
        }
        for e in &self.spec.selector.match_expressions {
            if !matches!(e.operator.as_str(), "In" | "NotIn" | "Exists" | "DoesNotExist") {
                out.push(format!("spec.selector.matchExpressions: unknown operator {:?}", e.operator));
            }
        }
        for (i, ep) in self.endpoints().iter().enumerate() {
            let at = format!("spec.{endpoints_key}[{i}]");
            unknown_fields(&mut out, &at, &ep.rest);
            if self.kind == MonitorKind::ServiceMonitor && ep.port_number.is_some() {
                out.push(format!("{at}.portNumber: not a field of ServiceMonitor endpoints"));
            }
            if let Some(b) = &ep.basic_auth {
                unknown_fields(&mut out, &format!("{at}.basicAuth"), &b.rest);
            }
            if let Some(a) = &ep.authorization {
                unknown_fields(&mut out, &format!("{at}.authorization"), &a.rest);
                if let Some(t) = a.type_.as_deref().filter(|t| !t.eq_ignore_ascii_case("bearer")) {
                    out.push(format!("{at}.authorization.type: only Bearer is supported, not {t:?}"));
                }
            }
            if let Some(tls) = &ep.tls_config {
                unknown_fields(&mut out, &format!("{at}.tlsConfig"), &tls.rest);
            }
            for (name, values) in &ep.params {
                if values.len() > 1 {
                    out.push(format!("{at}.params.{name}: only the first of {} values is sent", values.len()));
                }
            }
        }
        out
    }
}

impl Monitor {
    /// The relabeling rules of the monitor that do not compile, each named by its path in the
    /// monitor (`spec.endpoints[0].relabelings[2].regex: ...`). The Prometheus Operator skips
    /// such a monitor whole; so does discovery. Without this, the error would name the rule's
    /// place in the generated list (the operator's rules come first).
    pub fn invalid_relabelings(&self) -> Vec<String> {
        let endpoints_key = match self.kind {
            MonitorKind::ServiceMonitor => "endpoints",
            MonitorKind::PodMonitor => "podMetricsEndpoints",
        };
        let mut out = Vec::new();
        for (i, ep) in self.endpoints().iter().enumerate() {
            for (list, rules) in [("relabelings", &ep.relabelings), ("metricRelabelings", &ep.metric_relabelings)] {
                for (j, rule) in rules.iter().enumerate() {
                    if let Err(e) = lgtm_scrape::relabel::Rule::compile(&rule.into(), j) {
                        out.push(format!("spec.{endpoints_key}[{i}].{list}[{j}].{}: {}", e.field, e.message));
                    }
                }
            }
        }
        out
    }
}

fn unknown_fields(out: &mut Vec<String>, at: &str, rest: &BTreeMap<String, Value>) {
    for (k, v) in rest {
        if !v.is_null() {
            out.push(format!("{at}.{k}: not supported"));
        }
    }
}
