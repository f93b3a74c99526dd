//! One row per rule of `Config::validate`: a file breaking it and the message a user sees.

use lgtm_config::Config;

fn no_env(_: &str) -> Option<String> {
    None
}

fn check(text: &str) -> Result<Config, String> {
    Config::from_yaml("c.yaml", text, None, no_env).map_err(|e| e.to_string())
}

const INVALID: &[(&str, &str)] = &[
    ("cluster: \"\"\n", "c.yaml:1: cluster: must not be empty"),
    ("admin: { listen: localhost:9464 }\n", "c.yaml:1: admin.listen: invalid listen address \"localhost:9464\": expected IP:port, e.g. 0.0.0.0:9464"),
    ("exporters:\n  loki: { url: \"\" }\n", "c.yaml:2: exporters.loki.url: required unless console: true or enabled: false"),
    ("exporters:\n  mimir: { url: \"mimir:8080/push\" }\n", "c.yaml:2: exporters.mimir.url: invalid URL \"mimir:8080/push\": expected http://host:port/path or https://..."),
    ("exporters:\n  mimir: { url: \"ftp://mimir/push\" }\n", "c.yaml:2: exporters.mimir.url: invalid URL \"ftp://mimir/push\": the scheme must be http or https"),
    ("exporters:\n  mimir: { url: \"http://mimir:80800/push\" }\n", "c.yaml:2: exporters.mimir.url: invalid URL \"http://mimir:80800/push\": the port must be a number up to 65535"),
    ("exporters:\n  mimir: { url: \"http:///push\" }\n", "c.yaml:2: exporters.mimir.url: invalid URL \"http:///push\": no host"),
    ("exporters:\n  tempo:\n    tls: { cert_file: /c.crt }\n", "c.yaml:3: exporters.tempo.tls.key_file: required when tls.cert_file is set"),
    ("exporters:\n  tempo:\n    tls: { key_file: /c.key }\n", "c.yaml:3: exporters.tempo.tls.cert_file: required when tls.key_file is set"),
    ("exporters:\n  loki:\n    basic_auth: { username: u, password: p, password_file: /p }\n", "c.yaml:3: exporters.loki.basic_auth: password and password_file are mutually exclusive"),
    ("exporters:\n  loki:\n    bearer_token_file: /t\n    basic_auth: { username: u }\n", "c.yaml:4: exporters.loki.basic_auth: basic_auth and bearer_token_file are mutually exclusive"),
    ("exporters:\n  mimir:\n    shards: 0\n", "c.yaml:3: exporters.mimir.shards: must be at least 1"),
    ("exporters:\n  tempo:\n    compression_level: 10\n", "c.yaml:3: exporters.tempo.compression_level: must be 1 (fastest) to 9 (smallest)"),
    ("exporters:\n  loki:\n    batch: { max_items: 0 }\n", "c.yaml:3: exporters.loki.batch.max_items: must be at least 1"),
    ("exporters:\n  loki:\n    timeout: 0\n", "c.yaml:3: exporters.loki.timeout: must be greater than 0"),
    ("scrape:\n  interval: 10s\n  timeout: 15s\n", "c.yaml:3: scrape.timeout: 15s is longer than scrape.interval 10s"),
    ("scrape:\n  static_configs:\n    - targets: [\"a:9100\", \"http://b:9100\"]\n", "c.yaml:3: scrape.static_configs[0].targets[1]: invalid target \"http://b:9100\": expected host:port, e.g. 127.0.0.1:9100"),
    ("scrape:\n  static_configs:\n    - targets:\n        - node-exporter\n", "c.yaml:4: scrape.static_configs[0].targets[0]: invalid target \"node-exporter\": expected host:port, e.g. 127.0.0.1:9100"),
    ("scrape:\n  static_configs:\n    - { targets: [\"a:1\"], interval: 5s, timeout: 6s }\n", "c.yaml:3: scrape.static_configs[0].timeout: 6s is longer than the interval 5s"),
    ("scrape:\n  static_configs:\n    - { targets: [\"a:1\"], scheme: ftp }\n", "c.yaml:3: scrape.static_configs[0].scheme: \"ftp\" is not http or https"),
    ("scrape:\n  static_configs:\n    - { targets: [\"a:1\"], labels: { 1job: x } }\n", "c.yaml:3: scrape.static_configs[0].labels: invalid label name \"1job\": expected [a-zA-Z_][a-zA-Z0-9_]*"),
    ("scrape:\n  static_configs:\n    - targets: [\"a:1\"]\n      relabel_configs:\n        - { action: keep, regex: a }\n        - { action: Replaced, target_label: x }\n", "c.yaml:6: scrape.static_configs[0].relabel_configs[1].action: unknown relabel action \"Replaced\", expected one of replace, keep, drop, keepequal, dropequal, hashmod, labelmap, labeldrop, labelkeep, lowercase, uppercase"),
    ("scrape:\n  static_configs:\n    - targets: [\"a:1\"]\n      metric_relabel_configs:\n        - { source_labels: [a], regex: \"a[\" , action: drop }\n", "c.yaml:5: scrape.static_configs[0].metric_relabel_configs[0].regex: invalid regular expression \"a[\": unclosed character class"),
    ("scrape:\n  static_configs:\n    - targets: [\"a:1\"]\n      relabel_configs:\n        - { source_labels: [a] }\n", "c.yaml:5: scrape.static_configs[0].relabel_configs[0].target_label: action replace requires a target_label"),
    ("scrape:\n  static_configs:\n    - targets: [\"a:1\"]\n      relabel_configs:\n        - { source_labels: [a], target_label: h, action: hashmod }\n", "c.yaml:5: scrape.static_configs[0].relabel_configs[0].modulus: action hashmod requires a non-zero modulus"),
    ("scrape:\n  static_configs:\n    - targets: [\"a:1\"]\n      relabel_configs:\n        - { regex: tmp_.*, target_label: x, action: labeldrop }\n", "c.yaml:5: scrape.static_configs[0].relabel_configs[0].target_label: action labeldrop takes only regex"),
    ("scrape:\n  static_configs:\n    - targets: [\"a:1\"]\n      basic_auth: { username: \"\", password: p }\n", "c.yaml:4: scrape.static_configs[0].basic_auth.username: must not be empty"),
    ("scrape:\n  static_configs:\n    - targets: [\"a:1\"]\n      basic_auth: { username: u, password: p, password_file: /p }\n", "c.yaml:4: scrape.static_configs[0].basic_auth: password and password_file are mutually exclusive"),
    ("scrape:\n  static_configs:\n    - targets: [\"a:1\"]\n      bearer_token_file: /t\n      basic_auth:\n        username: u\n", "c.yaml:5: scrape.static_configs[0].basic_auth: basic_auth and bearer_token_file are mutually exclusive"),
    ("scrape:\n  static_configs:\n    - targets: [\"a:1\"]\n      basic_auth:\n        username: u\n        password_file: \"\"\n", "c.yaml:6: scrape.static_configs[0].basic_auth.password_file: must not be empty"),
    ("scrape:\n  static_configs:\n    - targets: [\"a:1\"]\n      tls_config:\n        server_name: \"metrics example\"\n", "c.yaml:5: scrape.static_configs[0].tls_config.server_name: \"metrics example\" is not a DNS name or an IP address"),
    ("scrape:\n  static_configs:\n    - targets: [\"a:1\"]\n      tls_config: { cert_file: /c.crt }\n", "c.yaml:4: scrape.static_configs[0].tls_config.key_file: required when cert_file is set"),
    ("scrape:\n  static_configs:\n    - targets: [\"a:1\"]\n      follow_redirects: sometimes\n", "c.yaml:4: scrape.static_configs[0].follow_redirects: invalid type: string \"sometimes\", expected a boolean"),
    ("scrape:\n  kubelet:\n    address: \"10.0.0.7:10250\"\n", "c.yaml:3: scrape.kubelet.address: \"10.0.0.7:10250\" is not a host name or IP address (the port is scrape.kubelet.port)"),
    ("scrape:\n  kubelet: { address: \"https://node-a\" }\n", "c.yaml:2: scrape.kubelet.address: \"https://node-a\" is not a host name or IP address (the port is scrape.kubelet.port)"),
    ("tail_sampling:\n  policies:\n    - { type: sometimes }\n", "c.yaml:3: tail_sampling.policies[0].type: unknown policy type \"sometimes\", expected one of status_code, latency, probabilistic, string_attribute, numeric_attribute, rate_limiting, and, or, not"),
    ("tail_sampling:\n  policies:\n    - { name: x }\n", "c.yaml:3: tail_sampling.policies[0].type: required, one of status_code, latency, probabilistic, string_attribute, numeric_attribute, rate_limiting, and, or, not"),
    ("tail_sampling:\n  policies:\n    - { type: latency }\n", "c.yaml:3: tail_sampling.policies[0].threshold_ms: required by policy type latency"),
    ("tail_sampling:\n  policies:\n    - { type: latency, threshold_ms: 5, percentage: 3 }\n", "c.yaml:3: tail_sampling.policies[0].percentage: does not apply to policy type latency"),
    ("tail_sampling:\n  policies:\n    - type: or\n      or:\n        - { type: probabilistic, percentage: 130 }\n", "c.yaml:5: tail_sampling.policies[0].or[0].percentage: 130 is not within 0..=100"),
    ("tail_sampling:\n  policies:\n    - { type: status_code, status_codes: [ERROR, FAILED] }\n", "c.yaml:3: tail_sampling.policies[0].status_codes[1]: unknown status code \"FAILED\", expected OK, ERROR or UNSET"),
    ("tail_sampling:\n  policies:\n    - { type: string_attribute, key: http.route }\n", "c.yaml:3: tail_sampling.policies[0].values: required by policy type string_attribute"),
    ("tail_sampling:\n  policies:\n    - { type: numeric_attribute, key: http.status_code }\n", "c.yaml:3: tail_sampling.policies[0].min_value: min_value or max_value is required by policy type numeric_attribute"),
    ("tail_sampling:\n  policies:\n    - { type: numeric_attribute, key: k, min_value: 5, max_value: 1 }\n", "c.yaml:3: tail_sampling.policies[0].min_value: 5 is greater than max_value 1"),
    ("tail_sampling:\n  policies:\n    - { type: rate_limiting, spans_per_second: 0 }\n", "c.yaml:3: tail_sampling.policies[0].spans_per_second: must be at least 1"),
    ("tail_sampling:\n  policies:\n    - type: not\n      not: { type: and }\n", "c.yaml:4: tail_sampling.policies[0].not.and: required by policy type and"),
    ("mode: cluster\ntail_sampling:\n  policies: []\n", "c.yaml:3: tail_sampling.policies: at least one policy is needed when tail sampling is enabled"),
    ("otlp:\n  grpc: \":4317\"\n", "c.yaml:2: otlp.grpc: invalid listen address \":4317\": expected IP:port, e.g. 0.0.0.0:9464"),
    ("otlp:\n  forward_traces_to: http://x:4317\n", "c.yaml:2: otlp.forward_traces_to: invalid target \"http://x:4317\": expected host:port, e.g. 127.0.0.1:9100"),
    // Listeners (issue 17): two on one port, either field named; a wildcard overlaps any IP.
    ("otlp:\n  http: 127.0.0.1:9411\n", "c.yaml:1: otlp.zipkin: 0.0.0.0:9411 is also the address of otlp.http (127.0.0.1:9411): two listeners cannot share a port"),
    ("admin: { listen: \"127.0.0.1:4317\" }\n", "c.yaml: otlp.grpc: 0.0.0.0:4317 is also the address of admin.listen (127.0.0.1:4317): two listeners cannot share a port"),
    ("otlp:\n  jaeger: { thrift_binary: \"0.0.0.0:6831\" }\n", "c.yaml:2: otlp.jaeger.thrift_binary: 0.0.0.0:6831 is also the address of otlp.jaeger.thrift_compact (0.0.0.0:6831): two listeners cannot share a port"),
    ("otlp:\n  zipkin: \"9411\"\n", "c.yaml:2: otlp.zipkin: invalid listen address \"9411\": expected IP:port, e.g. 0.0.0.0:9464"),
    ("otlp:\n  limits: { max_connections: 0 }\n", "c.yaml:2: otlp.limits.max_connections: must be at least 1"),
    ("otlp:\n  limits: { request_timeout: 0s }\n", "c.yaml:2: otlp.limits.request_timeout: must be greater than 0"),
    ("otlp:\n  limits: { max_in_flight_bytes: 1MiB }\n", "c.yaml:2: otlp.limits.max_in_flight_bytes: 1MiB is smaller than otlp.max_request_size 4MiB: no request of the largest size could be taken"),
    // Headers and tenants (issue 17): what HTTP headers and gRPC metadata cannot carry.
    ("exporters:\n  loki:\n    headers: { X-Team: \"a\\nb\" }\n", "c.yaml:3: exporters.loki.headers.X-Team: '\\n' cannot be sent in an HTTP header or gRPC metadata value (only visible ASCII, spaces and tabs)"),
    ("exporters:\n  loki:\n    headers: { \"X Team\": a }\n", "c.yaml:3: exporters.loki.headers: \"X Team\" is not a valid header name (letters, digits and !#$%&'*+-.^_`|~)"),
    ("exporters:\n  tempo:\n    headers: { grpc-timeout: 1S }\n", "c.yaml:3: exporters.tempo.headers: \"grpc-timeout\" is reserved in gRPC metadata (grpc-* and *-bin)"),
    ("exporters:\n  mimir:\n    tenant: \"t1\\r\"\n", "c.yaml:3: exporters.mimir.tenant: '\\r' cannot be sent in an HTTP header or gRPC metadata value (only visible ASCII, spaces and tabs)"),
    ("tenant: \" t1\"\n", "c.yaml:1: tenant: starts or ends with whitespace, which HTTP header values cannot"),
    ("tenant: \"équipe\"\n", "c.yaml:1: tenant: 'é' cannot be sent in an HTTP header or gRPC metadata value (only visible ASCII, spaces and tabs)"),
    // URL passwords are never quoted (issue 17).
    ("exporters:\n  loki: { url: \"http://u:s3cret@loki :3100/push\" }\n", "c.yaml:2: exporters.loki.url: invalid URL \"http://u:***@loki :3100/push\": contains whitespace"),
];

#[test]
fn each_rule_names_the_field_and_line() {
    for (text, expected) in INVALID {
        assert_eq!(check(text).err().as_deref(), Some(*expected), "{text}");
    }
}

#[test]
fn valid_variants_are_accepted() {
    for text in [
        "exporters: { mimir: { console: true, url: \"\" }, loki: { enabled: false, url: \"\" } }\n",
        "exporters:\n  mimir: { url: \"https://user@mimir.example.com:443/api/v1/push\" }\n",
        "exporters:\n  mimir: { url: \"http://[::1]:8080/push\" }\n",
        "exporters:\n  tempo: { tls: { cert_file: /c, key_file: /k } }\n",
        "admin: { listen: \"[::]:9464\" }\n",
        "scrape:\n  kubelet: { address: \"fd00::7\" }\n",
        "scrape:\n  kubelet: { address: node-a.example.internal }\n",
        "otlp: { grpc: \"\", http: \"127.0.0.1:4318\" }\n",
        "scrape:\n  static_configs:\n    - targets: [\"[::1]:9100\", \"node-exporter.monitoring.svc:9100\"]\n      \
         relabel_configs:\n        - { source_labels: [__address__], regex: \"(.+):.*\", target_label: \"${1}_host\" }\n        \
         - { regex: \"__meta_(.+)\", action: labelmap, replacement: \"$1\" }\n        \
         - { source_labels: [a], target_label: b, modulus: 8, action: hashmod }\n        \
         - { source_labels: [a], target_label: b, action: keepequal }\n",
        // Accepted by Prometheus (promtool) and by the ServiceMonitor path, which the old
        // second validator refused: no source_labels for hashmod, lowercase, uppercase,
        // keepequal and dropequal; labeldrop/labelkeep with the default separator and
        // replacement written out; an action name in capitals.
        "scrape:\n  static_configs:\n    - targets: [\"a:1\"]\n      relabel_configs:\n        \
         - { target_label: h, modulus: 4, action: hashmod }\n        - { target_label: l, action: lowercase }\n        \
         - { target_label: u, action: uppercase }\n        - { target_label: k, action: keepequal }\n        \
         - { target_label: d, action: dropequal }\n        - { regex: tmp_.*, separator: \";\", replacement: \"$1\", action: labeldrop }\n        \
         - { regex: keep_.*, separator: \";\", replacement: \"$$1\", action: labelkeep }\n        - { target_label: x, action: Replace }\n",
        "scrape:\n  static_configs:\n    - targets: [\"10.0.0.1:8443\"]\n      scheme: https\n      \
         basic_auth: { username: u, password_file: /etc/p }\n      follow_redirects: false\n      \
         tls_config: { ca_file: /ca.crt, server_name: metrics.example.com, cert_file: /c, key_file: /k }\n",
        "scrape:\n  static_configs:\n    - { targets: [\"a:1\"], tls_config: { server_name: \"10.0.0.1\" }, bearer_token_file: /t }\n",
        "tail_sampling:\n  policies:\n    - { type: numeric_attribute, key: http.status_code, min_value: 500 }\n    \
         - { type: rate_limiting, spans_per_second: 100 }\n    - { type: not, not: { type: latency, threshold_ms: 5 } }\n    \
         - { type: string_attribute, key: k, values: [a, b] }\n",
    ] {
        if let Err(e) = check(text) {
            panic!("{text}\n{e}");
        }
    }
}

#[test]
fn validate_works_on_a_config_built_in_code() {
    let mut c = Config::default_for(lgtm_config::Mode::Cluster);
    assert_eq!(c.validate(), Ok(()));
    c.tail_sampling.policies[1].and[1].percentage = Some(-1.0);
    assert_eq!(
        c.validate(),
        Err(("tail_sampling.policies[1].and[1].percentage".into(), "-1 is not within 0..=100".into()))
    );
}
