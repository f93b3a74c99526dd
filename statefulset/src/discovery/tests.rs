//! Unit tests of discovery: SD labels, the operator's relabelings (final label sets),
//! annotations, unsupported fields and credentials.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::DynamicObject;
use lgtm_scrape::relabel::Relabeler;
use lgtm_scrape::target::populate;
use lgtm_scrape::{Auth, BasicAuth, TlsOptions};
use serde_json::{json, Value};

use super::credentials::{CredentialFiles, Credentials, ObjectMap, Ref};
use super::objects::{Compact, PodInfo, ServiceInfo, SliceInfo, StrMap, Watched};
use super::operator::Defaults;
use super::sd_labels::{endpoint_slice_targets, pod_targets};
use super::*;

fn obj<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).expect("valid object")
}

/// A compact object as the watch reads it.
fn compact<T: Compact>(v: Value) -> T {
    obj::<Watched<T>>(v).into_info()
}

fn pod(name: &str, ip: &str, labels: Value) -> PodInfo {
    compact(pod_json(name, ip, labels))
}

fn pod_json(name: &str, ip: &str, labels: Value) -> Value {
    json!({
        "metadata": {"name": name, "namespace": "shop", "uid": format!("uid-{name}"), "labels": labels,
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web", "uid": "u", "controller": true}]},
        "spec": {"nodeName": "node-a", "containers": [
            {"name": "app", "image": "web:1", "ports": [
                {"name": "metrics", "containerPort": 8080, "protocol": "TCP"},
                {"name": "admin", "containerPort": 9000}]},
            {"name": "sidecar", "image": "proxy:2"}]},
        "status": {"phase": "Running", "podIP": ip, "hostIP": "192.168.0.1",
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [{"name": "app", "containerID": "containerd://abc", "image": "web:1", "imageID": "", "ready": true, "restartCount": 0}]}
    })
}

fn service(name: &str, labels: Value, annotations: Value) -> ServiceInfo {
    compact(json!({"metadata": {"name": name, "namespace": "shop", "labels": labels, "annotations": annotations},
        "spec": {"ports": [{"name": "metrics", "port": 80, "targetPort": 8080}]}}))
}

fn slice(service: &str, pods: &[(&str, &str)]) -> SliceInfo {
    let endpoints: Vec<Value> = pods
        .iter()
        .map(|(name, ip)| {
            json!({"addresses": [ip], "conditions": {"ready": true, "serving": true, "terminating": false},
                "nodeName": "node-a", "zone": "z1", "targetRef": {"kind": "Pod", "name": name, "namespace": "shop"}})
        })
        .collect();
    compact(json!({"metadata": {"name": format!("{service}-abc"), "namespace": "shop",
            "labels": {"kubernetes.io/service-name": service, "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}},
        "addressType": "IPv4", "endpoints": endpoints,
        "ports": [{"name": "metrics", "port": 8080, "protocol": "TCP"}, {"name": "other", "port": 7070, "protocol": "TCP"}]}))
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[test]
fn endpointslice_role_labels_match_prometheus_documentation() {
    let p = pod("web-0", "10.0.0.1", json!({"app": "web"}));
    let svc = service("web", json!({"app": "web", "app.kubernetes.io/name": "web"}), json!({"team": "a"}));
    let s = slice("web", &[("web-0", "10.0.0.1")]);
    let targets = endpoint_slice_targets(&s, Some(&svc), |ns, name| (ns == "shop" && name == "web-0").then_some(&p));
    // Two slice ports, plus the pod's container port 9000 that no endpoint port covers.
    assert_eq!(targets.len(), 3);
    let want = labels(&[
        ("__address__", "10.0.0.1:8080"),
        ("__meta_kubernetes_namespace", "shop"),
        ("__meta_kubernetes_endpointslice_name", "web-abc"),
        ("__meta_kubernetes_endpointslice_address_type", "IPv4"),
        ("__meta_kubernetes_endpointslice_label_kubernetes_io_service_name", "web"),
        ("__meta_kubernetes_endpointslice_labelpresent_kubernetes_io_service_name", "true"),
        (
            "__meta_kubernetes_endpointslice_label_endpointslice_kubernetes_io_managed_by",
            "endpointslice-controller.k8s.io",
        ),
        ("__meta_kubernetes_endpointslice_labelpresent_endpointslice_kubernetes_io_managed_by", "true"),
        ("__meta_kubernetes_endpointslice_address_target_kind", "Pod"),
        ("__meta_kubernetes_endpointslice_address_target_name", "web-0"),
        ("__meta_kubernetes_endpointslice_endpoint_conditions_ready", "true"),
        ("__meta_kubernetes_endpointslice_endpoint_conditions_serving", "true"),
        ("__meta_kubernetes_endpointslice_endpoint_conditions_terminating", "false"),
        ("__meta_kubernetes_endpointslice_endpoint_node_name", "node-a"),
        ("__meta_kubernetes_endpointslice_endpoint_zone", "z1"),
        ("__meta_kubernetes_endpointslice_port", "8080"),
        ("__meta_kubernetes_endpointslice_port_name", "metrics"),
        ("__meta_kubernetes_endpointslice_port_protocol", "TCP"),
        ("__meta_kubernetes_service_name", "web"),
        ("__meta_kubernetes_service_label_app", "web"),
        ("__meta_kubernetes_service_labelpresent_app", "true"),
        ("__meta_kubernetes_service_label_app_kubernetes_io_name", "web"),
        ("__meta_kubernetes_service_labelpresent_app_kubernetes_io_name", "true"),
        ("__meta_kubernetes_service_annotation_team", "a"),
        ("__meta_kubernetes_service_annotationpresent_team", "true"),
        ("__meta_kubernetes_pod_name", "web-0"),
        ("__meta_kubernetes_pod_ip", "10.0.0.1"),
        ("__meta_kubernetes_pod_ready", "true"),
        ("__meta_kubernetes_pod_phase", "Running"),
        ("__meta_kubernetes_pod_node_name", "node-a"),
        ("__meta_kubernetes_pod_host_ip", "192.168.0.1"),
        ("__meta_kubernetes_pod_uid", "uid-web-0"),
        ("__meta_kubernetes_pod_controller_kind", "StatefulSet"),
        ("__meta_kubernetes_pod_controller_name", "web"),
        ("__meta_kubernetes_pod_label_app", "web"),
        ("__meta_kubernetes_pod_labelpresent_app", "true"),
        ("__meta_kubernetes_pod_container_name", "app"),
        ("__meta_kubernetes_pod_container_image", "web:1"),
        ("__meta_kubernetes_pod_container_init", "false"),
        ("__meta_kubernetes_pod_container_id", "containerd://abc"),
        ("__meta_kubernetes_pod_container_port_name", "metrics"),
        ("__meta_kubernetes_pod_container_port_number", "8080"),
        ("__meta_kubernetes_pod_container_port_protocol", "TCP"),
    ]);
    assert_eq!(targets[0], want);
    // The slice port no container declares: endpoint labels, pod labels, no container labels.
    assert_eq!(targets[1]["__address__"], "10.0.0.1:7070");
    assert!(!targets[1].contains_key("__meta_kubernetes_pod_container_name"));
    assert_eq!(targets[1]["__meta_kubernetes_pod_name"], "web-0");
    // The uncovered container port: pod and container labels, no endpoint labels.
    assert_eq!(targets[2]["__address__"], "10.0.0.1:9000");
    assert_eq!(targets[2]["__meta_kubernetes_pod_container_port_name"], "admin");
    assert!(!targets[2].contains_key("__meta_kubernetes_endpointslice_port"));
    assert_eq!(targets[2]["__meta_kubernetes_service_name"], "web");
}

#[test]
fn compact_pods_keep_init_containers_statuses_and_the_ready_condition() {
    let full: PodInfo = {
        let mut v = pod_json("web-0", "10.0.0.1", json!({"app": "web"}));
        v["metadata"]["annotations"] = json!({"prometheus.io/scrape": "true"});
        v["spec"]["volumes"] = json!([{"name": "token", "projected": {"sources": []}}]);
        v["spec"]["initContainers"] = json!([{"name": "init", "image": "busybox", "ports": [{"containerPort": 1}],
            "env": [{"name": "A", "value": "b"}]}]);
        v["spec"]["containers"][0]["env"] = json!([{"name": "LOG_LEVEL", "value": "info"}]);
        v["status"]["conditions"] =
            json!([{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "False"}]);
        v["status"]["initContainerStatuses"] = json!([{"name": "init", "containerID": "containerd://i", "image": "busybox",
            "imageID": "sha", "ready": true, "restartCount": 2, "state": {"terminated": {"exitCode": 0}}}]);
        compact(v)
    };
    let targets = pod_targets(&full);
    let addresses: Vec<&str> = targets.iter().map(|t| t["__address__"].as_str()).collect();
    // Regular containers' ports, the port-less sidecar, then the init container's port.
    assert_eq!(addresses, ["10.0.0.1:8080", "10.0.0.1:9000", "10.0.0.1", "10.0.0.1:1"]);
    let init = &targets[3];
    assert_eq!(init["__meta_kubernetes_pod_container_name"], "init");
    assert_eq!(init["__meta_kubernetes_pod_container_init"], "true");
    assert_eq!(init["__meta_kubernetes_pod_container_id"], "containerd://i");
    assert_eq!(init["__meta_kubernetes_pod_container_port_protocol"], "TCP");
    assert_eq!(init["__meta_kubernetes_pod_ready"], "false");
    assert_eq!(init["__meta_kubernetes_pod_annotation_prometheus_io_scrape"], "true");
    assert_eq!(targets[0]["__meta_kubernetes_pod_container_id"], "containerd://abc");
    assert!(!targets[2].contains_key("__meta_kubernetes_pod_container_id"), "the sidecar has no status");
}

#[test]
fn pod_role_has_a_target_per_port_and_per_portless_container() {
    let p = pod("web-0", "fd00::1", json!({}));
    let targets = pod_targets(&p);
    let addresses: Vec<&str> = targets.iter().map(|t| t["__address__"].as_str()).collect();
    assert_eq!(addresses, ["[fd00::1]:8080", "[fd00::1]:9000", "fd00::1"]);
    assert_eq!(targets[2]["__meta_kubernetes_pod_container_name"], "sidecar");
    assert!(!targets[2].contains_key("__meta_kubernetes_pod_container_port_number"));
    let mut no_ip = p.clone();
    no_ip.ip = "".into();
    assert!(pod_targets(&no_ip).is_empty());
}

fn monitor(kind: &str, name: &str, spec: Value) -> Arc<DynamicObject> {
    Arc::new(obj(json!({"apiVersion": "monitoring.coreos.com/v1", "kind": kind,
        "metadata": {"name": name, "namespace": "shop"}, "spec": spec})))
}

/// A Credentials that never finds anything but records paths for known names.
struct FakeCreds;

impl Credentials for FakeCreds {
    fn file(&mut self, namespace: &str, r: &Ref) -> Result<Option<PathBuf>, String> {
        match r {
            Ref::Secret(s) if s.name == "token" => Ok(Some(PathBuf::from(format!("/creds/{namespace}/{}", s.key)))),
            Ref::Secret(s) | Ref::ConfigMap(s) if s.optional == Some(true) => Ok(None),
            Ref::Secret(s) | Ref::ConfigMap(s) => Err(format!("{} not found", s.name)),
        }
    }
}

fn options() -> BuildOptions {
    BuildOptions {
        service_monitors: true,
        pod_monitors: true,
        annotations: true,
        defaults: Defaults {
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(10),
            body_size_limit: 0,
            sample_limit: 0,
        },
    }
}

/// The final label sets of every target, as the scrape manager computes them (identical
/// targets are one).
fn final_targets(built: &Built) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for g in &built.groups {
        let relabeler = Relabeler::compile(&g.options.relabel_configs).expect("relabelings compile");
        for t in &g.targets {
            if let Some(t) = populate(t, &g.labels, &g.options, &relabeler, &g.source).expect("valid target") {
                out.push((g.source.clone(), t.labels.to_string(), t.url.to_string()));
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

fn shop() -> Snapshot {
    let pods = [("web-0", "10.0.0.1"), ("web-1", "10.0.0.2"), ("web-2", "10.0.0.3")];
    Snapshot {
        services: vec![
            Arc::new(service("web", json!({"app": "web", "team": "shop"}), json!({}))),
            Arc::new(service("db", json!({"app": "db"}), json!({}))),
        ],
        endpoint_slices: vec![Arc::new(slice("web", &pods)), Arc::new(slice("db", &[("db-0", "10.0.1.1")]))],
        pods: pods.iter().map(|(n, ip)| Arc::new(pod(n, ip, json!({"app": "web", "tier": "front"})))).collect(),
        ..Default::default()
    }
}

#[test]
fn service_monitor_targets_get_the_operator_final_labels() {
    let mut s = shop();
    s.service_monitors = vec![monitor(
        "ServiceMonitor",
        "web",
        json!({"selector": {"matchLabels": {"app": "web"}}, "endpoints": [{"port": "metrics"}]}),
    )];
    let built = build(&s, &options(), &mut FakeCreds);
    assert_eq!(built.monitors.len(), 1);
    assert!(built.monitors[0].errors.is_empty() && built.monitors[0].unsupported.is_empty(), "{:?}", built.monitors);
    let got = final_targets(&built);
    let want: Vec<(String, String, String)> = (0..3)
        .map(|i| {
            (
                "serviceMonitor/shop/web/0".to_string(),
                format!(
                    r#"{{container="app", endpoint="metrics", instance="10.0.0.{}:8080", job="web", namespace="shop", pod="web-{i}", service="web"}}"#,
                    i + 1
                ),
                format!("http://10.0.0.{}:8080/metrics", i + 1),
            )
        })
        .collect();
    assert_eq!(got, want);
}

#[test]
fn job_label_target_labels_pod_target_labels_and_endpoint_settings() {
    let mut s = shop();
    s.service_monitors = vec![monitor(
        "ServiceMonitor",
        "web",
        json!({"selector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["web", "x"]}]},
            "jobLabel": "team", "targetLabels": ["app"], "podTargetLabels": ["tier"],
            "endpoints": [{"targetPort": 8080, "path": "/m", "scheme": "https", "interval": "15s", "scrapeTimeout": "5s",
                "params": {"module": ["x"]}, "honorLabels": true, "honorTimestamps": false,
                "bearerTokenSecret": {"name": "token", "key": "t"},
                "relabelings": [{"sourceLabels": ["pod"], "targetLabel": "replica", "regex": "web-(.*)", "action": "Replace"}],
                "metricRelabelings": [{"sourceLabels": ["__name__"], "regex": "go_.*", "action": "Drop"}]}]}),
    )];
    let built = build(&s, &options(), &mut FakeCreds);
    let got = final_targets(&built);
    assert_eq!(got.len(), 3);
    assert_eq!(
        got[0].1,
        r#"{app="web", container="app", endpoint="8080", instance="10.0.0.1:8080", job="shop", namespace="shop", pod="web-0", replica="0", service="web", tier="front"}"#
    );
    assert_eq!(got[0].2, "https://10.0.0.1:8080/m?module=x");
    let o = &built.groups[0].options;
    assert_eq!((o.interval, o.timeout), (Duration::from_secs(15), Duration::from_secs(5)));
    assert!(o.honor_labels && !o.honor_timestamps);
    assert_eq!(o.auth.bearer_token_file.as_deref(), Some(std::path::Path::new("/creds/shop/t")));
    assert_eq!(o.metric_relabel_configs[0].action.as_deref(), Some("drop"));
}

#[test]
fn fallback_scrape_protocol_of_a_monitor_is_its_targets_fallback() {
    let mut s = shop();
    let spec = |fallback: serde_json::Value| {
        json!({"selector": {"matchLabels": {"tier": "front"}}, "fallbackScrapeProtocol": fallback,
            "podMetricsEndpoints": [{"port": "admin"}]})
    };
    for (fallback, want) in [
        (json!("PrometheusText0.0.4"), Some(lgtm_scrape::parser::Format::Text)),
        (json!("OpenMetricsText1.0.0"), Some(lgtm_scrape::parser::Format::OpenMetrics)),
        // The agent does not parse protobuf: no fallback, as when the field is absent.
        (json!("PrometheusProto"), None),
        (serde_json::Value::Null, None),
    ] {
        s.pod_monitors = vec![monitor("PodMonitor", "web-pods", spec(fallback.clone()))];
        let built = build(&s, &options(), &mut FakeCreds);
        assert_eq!(built.groups[0].options.fallback_scrape_protocol, want, "{fallback}");
    }
}

#[test]
fn pod_monitor_targets_get_the_operator_final_labels() {
    let mut s = shop();
    s.pod_monitors = vec![monitor(
        "PodMonitor",
        "web-pods",
        json!({"selector": {"matchLabels": {"tier": "front"}}, "podMetricsEndpoints": [{"port": "admin", "path": "/stats"}]}),
    )];
    let built = build(&s, &options(), &mut FakeCreds);
    let got = final_targets(&built);
    assert_eq!(got.len(), 3);
    assert_eq!(
        got[1],
        (
            "podMonitor/shop/web-pods/0".into(),
            r#"{container="app", endpoint="admin", instance="10.0.0.2:9000", job="shop/web-pods", namespace="shop", pod="web-1"}"#.into(),
            "http://10.0.0.2:9000/stats".into()
        )
    );
}

#[test]
fn namespace_selector_default_is_the_monitors_own_namespace() {
    let mut s = shop();
    let mut other = (*s.services[0]).clone();
    other.meta.namespace = "other".into();
    s.services.push(Arc::new(other));
    let m = |spec| monitor("ServiceMonitor", "web", spec);
    s.service_monitors =
        vec![m(json!({"selector": {"matchLabels": {"app": "web"}}, "endpoints": [{"port": "metrics"}]}))];
    // The `other` Service has no slices here, so it adds no targets either way; what matters is
    // that it is not selected when the selector says so.
    assert_eq!(final_targets(&build(&s, &options(), &mut FakeCreds)).len(), 3);
    s.service_monitors = vec![m(json!({"namespaceSelector": {"matchNames": ["other"]},
        "selector": {"matchLabels": {"app": "web"}}, "endpoints": [{"port": "metrics"}]}))];
    assert_eq!(final_targets(&build(&s, &options(), &mut FakeCreds)).len(), 0);
}

#[test]
fn unsupported_fields_and_credential_errors_are_reported_per_monitor() {
    let mut s = shop();
    s.service_monitors = vec![monitor(
        "ServiceMonitor",
        "web",
        json!({"selector": {}, "attachMetadata": {"node": true},
            "endpoints": [
                {"port": "metrics", "basicAuth": {"username": {"name": "token", "key": "k"}, "passwordFile": "/p"},
                 "proxyUrl": "http://p", "tlsConfig": {"serverName": "x", "insecureSkipVerify": true}},
                {"port": "metrics", "bearerTokenSecret": {"name": "missing", "key": "t"}}]}),
    )];
    let built = build(&s, &options(), &mut FakeCreds);
    let m = &built.monitors[0];
    assert_eq!(
        m.unsupported,
        [
            "spec.attachMetadata: not supported",
            "spec.endpoints[0].proxyUrl: not supported",
            "spec.endpoints[0].basicAuth.passwordFile: not supported",
        ]
    );
    assert_eq!(m.errors, ["spec.endpoints[1].bearerTokenSecret: missing not found"]);
    assert_eq!(built.groups.len(), 1, "the endpoint with a missing secret is not scraped");
}

#[test]
fn basic_auth_server_name_and_follow_redirects_reach_the_scrape_options() {
    let mut s = shop();
    let user = json!({"name": "token", "key": "user"});
    s.service_monitors = vec![monitor(
        "ServiceMonitor",
        "web",
        json!({"selector": {"matchLabels": {"app": "web"}}, "endpoints": [
            {"port": "metrics", "scheme": "https", "followRedirects": false,
             "basicAuth": {"username": user, "password": {"name": "token", "key": "pass"}},
             "tlsConfig": {"serverName": "web.shop.svc"}},
            {"port": "metrics", "basicAuth": {"username": user, "password": {"name": "gone", "key": "p", "optional": true}}},
            {"port": "metrics", "basicAuth": {"username": user}, "bearerTokenSecret": {"name": "token", "key": "t"}},
            {"port": "metrics", "basicAuth": {"username": {"name": "missing", "key": "user"}}}]}),
    )];
    let built = build(&s, &options(), &mut FakeCreds);
    let m = &built.monitors[0];
    assert!(m.unsupported.is_empty(), "{:?}", m.unsupported);
    assert_eq!(
        m.errors,
        [
            "spec.endpoints[2].basicAuth: cannot be used together with a bearer token or authorization",
            "spec.endpoints[3].basicAuth.username: missing not found",
        ]
    );
    let auth: Vec<&Auth> = built.groups.iter().map(|g| &g.options.auth).collect();
    let file = |key: &str| lgtm_scrape::Secret::File(PathBuf::from(format!("/creds/shop/{key}")));
    let expected_first = Auth {
        bearer_token_file: None,
        basic_auth: Some(BasicAuth { username: file("user"), password: file("pass") }),
        tls: Some(TlsOptions { server_name: Some("web.shop.svc".into()), ..TlsOptions::default() }),
        follow_redirects: false,
    };
    let expected_second = Auth {
        basic_auth: Some(BasicAuth { username: file("user"), password: lgtm_scrape::Secret::Inline(String::new()) }),
        ..Auth::default()
    };
    assert_eq!(auth, [&expected_first, &expected_second], "the endpoints with an error are not scraped");
    assert!(expected_second.follow_redirects, "redirects are followed unless the monitor says not to");
}

#[test]
fn annotated_pods_and_services_are_scraped_with_the_annotated_port_path_and_scheme() {
    let mut s = shop();
    let mut p = pod("solo", "10.0.2.1", json!({"app": "solo"}));
    p.meta.annotations =
        [("prometheus.io/scrape", "true"), ("prometheus.io/port", "9102"), ("prometheus.io/path", "/custom")]
            .into_iter()
            .collect::<StrMap>();
    s.pods.push(Arc::new(p));
    s.services[1] = Arc::new(service(
        "db",
        json!({"app": "db"}),
        json!({"prometheus.io/scrape": "true", "prometheus.io/scheme": "https", "prometheus.io/port": "9187"}),
    ));
    let got = final_targets(&build(&s, &options(), &mut FakeCreds));
    assert_eq!(
        got,
        [
            (
                "kubernetes-pods".to_string(),
                r#"{app="solo", instance="10.0.2.1:9102", job="kubernetes-pods", namespace="shop", node="node-a", pod="solo"}"#
                    .to_string(),
                "http://10.0.2.1:9102/custom".to_string()
            ),
            (
                "kubernetes-service-endpoints".to_string(),
                r#"{app="db", instance="10.0.1.1:9187", job="kubernetes-service-endpoints", namespace="shop", service="db"}"#
                    .to_string(),
                "https://10.0.1.1:9187/metrics".to_string()
            ),
        ]
    );
}

#[test]
fn credentials_are_written_to_private_files_named_by_content() {
    let dir = tempfile::tempdir().unwrap();
    let secret: Secret = obj(json!({"metadata": {"name": "token", "namespace": "shop"}, "data": {"t": "czNjcjN0"}}));
    let secrets: ObjectMap<Secret> = [(("shop".to_string(), "token".to_string()), Arc::new(secret))].into();
    let config_maps = ObjectMap::new();
    let mut creds = CredentialFiles::new(dir.path(), &secrets, &config_maps);
    let sel = |name: &str, optional| super::monitor::SecretKeySelector { name: name.into(), key: "t".into(), optional };
    let path = creds.file("shop", &Ref::Secret(sel("token", None))).unwrap().unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"s3cr3t");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }
    assert!(!path.to_string_lossy().contains("s3cr3t"));
    assert_eq!(creds.file("shop", &Ref::Secret(sel("gone", Some(true)))).unwrap(), None);
    let err = creds.file("shop", &Ref::Secret(sel("gone", None))).unwrap_err();
    assert_eq!(err, "Secret shop/gone not found");
    assert_eq!(creds.referenced().len(), 2);
}

#[test]
fn a_monitor_with_a_bad_relabeling_is_skipped_with_the_rules_path_in_the_monitor() {
    let mut s = shop();
    s.service_monitors = vec![
        monitor(
            "ServiceMonitor",
            "web",
            json!({"selector": {"matchLabels": {"app": "web"}}, "endpoints": [
                {"port": "metrics"},
                {"port": "metrics", "relabelings": [{"targetLabel": "team", "replacement": "a"},
                    {"sourceLabels": ["__address__"], "regex": "([unclosed", "targetLabel": "addr"}],
                 "metricRelabelings": [{"action": "Keep", "sourceLabels": ["__name__"], "regex": "up"},
                    {"action": "explode"}]}]}),
        ),
        monitor(
            "ServiceMonitor",
            "db",
            json!({"selector": {"matchLabels": {"app": "db"}}, "endpoints": [{"port": "metrics",
                "relabelings": [{"action": "Replace", "targetLabel": "team", "replacement": "b"}]}]}),
        ),
    ];
    let built = build(&s, &options(), &mut FakeCreds);
    let errors: BTreeMap<&str, &Vec<String>> = built.monitors.iter().map(|m| (m.name.as_str(), &m.errors)).collect();
    let web = errors["web"];
    assert_eq!(web.len(), 2, "{web:?}");
    assert!(web[0].starts_with("spec.endpoints[1].relabelings[1].regex: "), "{web:?}");
    assert!(web[1].starts_with("spec.endpoints[1].metricRelabelings[1].action: "), "{web:?}");
    assert!(errors["db"].is_empty(), "{errors:?}");
    let sources: Vec<String> = final_targets(&built).into_iter().map(|(source, _, _)| source).collect();
    assert_eq!(sources, ["serviceMonitor/shop/db/0"], "the bad monitor is skipped whole, the other scraped");
}
