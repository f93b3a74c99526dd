//! Rules that types alone cannot hold: required fields, fields that go together, addresses,
//! sampling policies and relabeling rules.

use std::net::SocketAddr;

use crate::{BasicAuth, Config, ExporterConfig, PolicyConfig, RelabelConfig, StaticConfig, TlsConfig};

/// The path of the field that breaks a rule, and what is wrong with it.
type Invalid = (String, String);

/// The smallest explicit `logs.max_open_files`: a rotation needs two descriptors per stream, and
/// a handful of streams must be readable at once.
pub const MIN_OPEN_FILES: u32 = 16;

fn invalid<T>(path: impl Into<String>, message: impl Into<String>) -> Result<T, Invalid> {
    Err((path.into(), message.into()))
}

/// The tail sampling policy types.
pub const POLICY_TYPES: [&str; 9] = [
    "status_code",
    "latency",
    "probabilistic",
    "string_attribute",
    "numeric_attribute",
    "rate_limiting",
    "and",
    "or",
    "not",
];

impl Config {
    /// Checks the rules across fields; the first broken one as the field's path
    /// (`scrape.static_configs[0].relabel_configs[1].regex`) and what is wrong.
    pub fn validate(&self) -> Result<(), (String, String)> {
        if self.cluster.is_empty() {
            return invalid("cluster", "must not be empty");
        }
        if self.data_dir.as_os_str().is_empty() {
            return invalid("data_dir", "must not be empty");
        }
        socket_address("admin.listen", &self.admin.listen)?;
        if self.shutdown.grace_period.get().is_zero() {
            return invalid("shutdown.grace_period", "must be greater than 0");
        }
        for (name, e) in
            [("mimir", &self.exporters.mimir), ("loki", &self.exporters.loki), ("tempo", &self.exporters.tempo)]
        {
            exporter(&format!("exporters.{name}"), e)?;
        }
        if self.logs.max_line_size.bytes() == 0 {
            return invalid("logs.max_line_size", "must be greater than 0");
        }
        if let Some(p) = self.logs.follow_symlinks_into.iter().find(|p| !p.is_absolute()) {
            return invalid("logs.follow_symlinks_into", format!("{} is not an absolute path", p.display()));
        }
        if self.logs.rescan_interval.get().is_zero() {
            return invalid("logs.rescan_interval", "must be greater than 0");
        }
        if self.logs.partial_flush_timeout.get().is_zero() {
            return invalid("logs.partial_flush_timeout", "must be greater than 0");
        }
        if self.logs.max_open_files != 0 && self.logs.max_open_files < MIN_OPEN_FILES {
            return invalid(
                "logs.max_open_files",
                format!("must be 0 (from the open-files limit) or at least {MIN_OPEN_FILES}"),
            );
        }
        header_value("tenant", &self.tenant)?;
        self.validate_loki_queue_for_logs()?;
        self.validate_scrape()?;
        self.validate_listeners()?;
        let limits = &self.otlp.limits;
        for (field, d) in [
            ("header_timeout", limits.header_timeout),
            ("request_timeout", limits.request_timeout),
            ("keepalive_interval", limits.keepalive_interval),
            ("keepalive_timeout", limits.keepalive_timeout),
        ] {
            if d.get().is_zero() {
                return invalid(format!("otlp.limits.{field}"), "must be greater than 0");
            }
        }
        if limits.max_connections == 0 {
            return invalid("otlp.limits.max_connections", "must be at least 1");
        }
        if limits.max_concurrent_streams == 0 {
            return invalid("otlp.limits.max_concurrent_streams", "must be at least 1");
        }
        if limits.max_in_flight_bytes < self.otlp.max_request_size {
            return invalid(
                "otlp.limits.max_in_flight_bytes",
                format!(
                    "{} is smaller than otlp.max_request_size {}: no request of the largest size could be taken",
                    limits.max_in_flight_bytes, self.otlp.max_request_size
                ),
            );
        }
        if !self.otlp.forward_traces_to.is_empty() {
            host_port("otlp.forward_traces_to", &self.otlp.forward_traces_to)?;
        }
        let ts = &self.tail_sampling;
        if ts.decision_wait.get().is_zero() {
            return invalid("tail_sampling.decision_wait", "must be greater than 0");
        }
        if ts.max_traces == 0 {
            return invalid("tail_sampling.max_traces", "must be at least 1");
        }
        if ts.enabled() && ts.policies.is_empty() {
            return invalid("tail_sampling.policies", "at least one policy is needed when tail sampling is enabled");
        }
        for (i, p) in ts.policies.iter().enumerate() {
            policy(&format!("tail_sampling.policies[{i}]"), p)?;
        }
        Ok(())
    }

    /// Every listen address is `IP:port`, and no two listeners of the same protocol (TCP or UDP)
    /// share a port on overlapping addresses (the same IP, or one of them a wildcard).
    fn validate_listeners(&self) -> Result<(), Invalid> {
        let mut tcp = vec![("admin.listen", self.admin.listen.as_str())];
        let mut udp = Vec::new();
        if self.otlp.enabled() {
            let (o, j) = (&self.otlp, &self.otlp.jaeger);
            tcp.extend([
                ("otlp.grpc", o.grpc.as_str()),
                ("otlp.http", o.http.as_str()),
                ("otlp.jaeger.thrift_http", j.thrift_http.as_str()),
                ("otlp.jaeger.grpc", j.grpc.as_str()),
                ("otlp.zipkin", o.zipkin.as_str()),
            ]);
            udp.extend([
                ("otlp.jaeger.thrift_compact", j.thrift_compact.as_str()),
                ("otlp.jaeger.thrift_binary", j.thrift_binary.as_str()),
            ]);
        }
        for list in [&tcp, &udp] {
            let mut seen: Vec<(&str, SocketAddr)> = Vec::new();
            for &(field, value) in list.iter() {
                if value.trim().is_empty() && field != "admin.listen" {
                    continue;
                }
                let addr = socket_address(field, value.trim())?;
                if addr.port() == 0 {
                    continue;
                }
                if let Some((other, other_addr)) = seen.iter().find(|(_, a)| overlaps(*a, addr)) {
                    return invalid(
                        field,
                        format!(
                            "{addr} is also the address of {other} ({other_addr}): two listeners cannot share a port"
                        ),
                    );
                }
                seen.push((field, addr));
            }
        }
        Ok(())
    }

    /// The pod log tailer hands the Loki queue batches of up to [`crate::LogsConfig::largest_batch`]
    /// bytes; a queue that cannot take one would stall the logs for good.
    fn validate_loki_queue_for_logs(&self) -> Result<(), Invalid> {
        let loki = &self.exporters.loki;
        if !self.logs.enabled() || !loki.enabled {
            return Ok(());
        }
        let refused_above = loki.limits.max_line_size;
        if refused_above.bytes() > 0 && !loki.limits.max_line_size_truncate && self.logs.max_line_size > refused_above {
            return invalid(
                "logs.max_line_size",
                format!(
                    "{} is larger than exporters.loki.limits.max_line_size {refused_above}: Loki would refuse the parts \
                     of split lines; lower it, or raise the limit to what your Loki allows",
                    self.logs.max_line_size
                ),
            );
        }
        let batch = self.logs.largest_batch();
        let (field, limit) = if loki.console || loki.queue.max_disk().bytes() == 0 {
            ("max_memory", loki.queue.max_memory())
        } else {
            ("max_disk", loki.queue.max_disk())
        };
        if limit.bytes() < batch.bytes() {
            return invalid(
                format!("exporters.loki.queue.{field}"),
                format!(
                    "{limit} is smaller than the largest batch of the pod log tailer ({batch}: 2MiB + logs.max_line_size); \
                     logs would stall"
                ),
            );
        }
        Ok(())
    }

    fn validate_scrape(&self) -> Result<(), Invalid> {
        let s = &self.scrape;
        if s.interval.get().is_zero() {
            return invalid("scrape.interval", "must be greater than 0");
        }
        if s.timeout.get().is_zero() {
            return invalid("scrape.timeout", "must be greater than 0");
        }
        if s.timeout > s.interval {
            return invalid("scrape.timeout", format!("{} is longer than scrape.interval {}", s.timeout, s.interval));
        }
        for (i, sc) in s.static_configs.iter().enumerate() {
            static_config(&format!("scrape.static_configs[{i}]"), sc, s)?;
        }
        if s.kubelet.port == 0 {
            return invalid("scrape.kubelet.port", "must not be 0");
        }
        let address = &s.kubelet.address;
        let bad_host = address.contains(['/', ' ', '[', ']', '@'])
            || (address.contains(':') && address.parse::<std::net::Ipv6Addr>().is_err());
        if bad_host {
            return invalid(
                "scrape.kubelet.address",
                format!("{address:?} is not a host name or IP address (the port is scrape.kubelet.port)"),
            );
        }
        Ok(())
    }
}

fn exporter(path: &str, e: &ExporterConfig) -> Result<(), Invalid> {
    for (name, value) in &e.headers {
        header_name(&format!("{path}.headers"), name)?;
        header_value(&format!("{path}.headers.{name}"), value)?;
    }
    if let Some(tenant) = &e.tenant {
        header_value(&format!("{path}.tenant"), tenant)?;
    }
    match e.url.as_deref().filter(|u| !u.is_empty()) {
        Some(url) => http_url(&format!("{path}.url"), url)?,
        None if e.enabled && !e.console => {
            return invalid(format!("{path}.url"), "required unless console: true or enabled: false")
        }
        None => {}
    }
    match (&e.tls.cert_file, &e.tls.key_file) {
        (Some(_), None) => return invalid(format!("{path}.tls.key_file"), "required when tls.cert_file is set"),
        (None, Some(_)) => return invalid(format!("{path}.tls.cert_file"), "required when tls.key_file is set"),
        _ => {}
    }
    if let Some(auth) = &e.basic_auth {
        if auth.username.is_empty() {
            return invalid(format!("{path}.basic_auth.username"), "must not be empty");
        }
        if auth.password.is_some() && auth.password_file.is_some() {
            return invalid(format!("{path}.basic_auth"), "password and password_file are mutually exclusive");
        }
        if e.bearer_token_file.is_some() {
            return invalid(format!("{path}.basic_auth"), "basic_auth and bearer_token_file are mutually exclusive");
        }
    }
    if e.timeout.get().is_zero() {
        return invalid(format!("{path}.timeout"), "must be greater than 0");
    }
    if e.batch.max_items == 0 {
        return invalid(format!("{path}.batch.max_items"), "must be at least 1");
    }
    if e.batch.max_bytes.bytes() == 0 {
        return invalid(format!("{path}.batch.max_bytes"), "must be greater than 0");
    }
    if e.retry.initial_backoff.get().is_zero() {
        return invalid(format!("{path}.retry.initial_backoff"), "must be greater than 0");
    }
    if e.retry.initial_backoff > e.retry.max_backoff {
        return invalid(
            format!("{path}.retry.initial_backoff"),
            format!("{} is longer than retry.max_backoff {}", e.retry.initial_backoff, e.retry.max_backoff),
        );
    }
    if e.queue.max_memory().bytes() == 0 {
        return invalid(format!("{path}.queue.max_memory"), "must be greater than 0");
    }
    if e.shards == 0 {
        return invalid(format!("{path}.shards"), "must be at least 1");
    }
    if !(1..=9).contains(&e.compression_level) {
        return invalid(format!("{path}.compression_level"), "must be 1 (fastest) to 9 (smallest)");
    }
    Ok(())
}

/// `http://host[:port][/path]` or `https://...`.
fn http_url(path: &str, url: &str) -> Result<(), Invalid> {
    let bad = |why: &str| invalid(path, format!("invalid URL {:?}: {why}", crate::redact_url(url)));
    let Some((scheme, rest)) = url.split_once("://") else {
        return bad("expected http://host:port/path or https://...");
    };
    if scheme != "http" && scheme != "https" {
        return bad("the scheme must be http or https");
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad("contains whitespace");
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    let (host, port) = split_host_port(host_port);
    if host.is_empty() {
        return bad("no host");
    }
    if let Some(port) = port {
        if port.parse::<u16>().is_err() {
            return bad("the port must be a number up to 65535");
        }
    }
    Ok(())
}

/// `host:port`, `[v6]:port` or `host` (port `None`); IPv6 brackets stripped.
fn split_host_port(s: &str) -> (&str, Option<&str>) {
    if let Some(v6) = s.strip_prefix('[') {
        return match v6.split_once(']') {
            Some((host, rest)) => (host, rest.strip_prefix(':')),
            None => ("", None),
        };
    }
    match s.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (s, None),
    }
}

/// A listen address: `IP:port`.
fn socket_address(path: &str, value: &str) -> Result<SocketAddr, Invalid> {
    value
        .parse::<SocketAddr>()
        .or_else(|_| invalid(path, format!("invalid listen address {value:?}: expected IP:port, e.g. 0.0.0.0:9464")))
}

/// Whether binding both would clash: the same port on the same IP, or on a wildcard of either
/// family (Linux's `[::]` takes IPv4 too unless the socket is IPv6-only).
fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// A value an HTTP header and gRPC metadata can both carry: visible ASCII, spaces and tabs, not
/// starting or ending with whitespace (RFC 9110 field-value; gRPC's ASCII metadata is narrower
/// than HTTP's, without obs-text, so that is the rule for every exporter).
fn header_value(path: &str, value: &str) -> Result<(), Invalid> {
    if let Some(c) = value.chars().find(|c| !(matches!(c, ' '..='~') || *c == '\t')) {
        return invalid(
            path,
            format!(
                "{c:?} cannot be sent in an HTTP header or gRPC metadata value (only visible ASCII, spaces and tabs)"
            ),
        );
    }
    if value != value.trim() {
        return invalid(path, "starts or ends with whitespace, which HTTP header values cannot");
    }
    Ok(())
}

/// A header name HTTP (an RFC 9110 token) and gRPC metadata (lower-cased, not `grpc-*` and not a
/// binary `*-bin` key) can both carry.
fn header_name(path: &str, name: &str) -> Result<(), Invalid> {
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(token) {
        return invalid(path, format!("{name:?} is not a valid header name (letters, digits and !#$%&'*+-.^_`|~)"));
    }
    let lower = name.to_ascii_lowercase();
    if lower.starts_with("grpc-") || lower.ends_with("-bin") {
        return invalid(path, format!("{name:?} is reserved in gRPC metadata (grpc-* and *-bin)"));
    }
    Ok(())
}

/// `host:port` with a host name or an IP address, no scheme or path.
fn host_port(path: &str, value: &str) -> Result<(), Invalid> {
    let bad = || invalid(path, format!("invalid target {value:?}: expected host:port, e.g. 127.0.0.1:9100"));
    if value.contains("://") || value.contains('/') || value.chars().any(char::is_whitespace) {
        return bad();
    }
    match split_host_port(value) {
        (host, Some(port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => Ok(()),
        _ => bad(),
    }
}

fn static_config(path: &str, sc: &StaticConfig, scrape: &crate::ScrapeConfig) -> Result<(), Invalid> {
    for (i, t) in sc.targets.iter().enumerate() {
        host_port(&format!("{path}.targets[{i}]"), t)?;
    }
    for name in sc.labels.keys() {
        if !crate::relabel::is_label_name(name) {
            return invalid(
                format!("{path}.labels"),
                format!("invalid label name {name:?}: expected [a-zA-Z_][a-zA-Z0-9_]*"),
            );
        }
    }
    if let Some(scheme) = &sc.scheme {
        if scheme != "http" && scheme != "https" {
            return invalid(format!("{path}.scheme"), format!("{scheme:?} is not http or https"));
        }
    }
    if sc.fallback_scrape_protocol == Some(crate::ScrapeProtocol::PrometheusProto) {
        return invalid(
            format!("{path}.fallback_scrape_protocol"),
            "PrometheusProto is not supported (the agent parses the text and OpenMetrics formats only)",
        );
    }
    if let Some(p) = &sc.metrics_path {
        if !p.starts_with('/') {
            return invalid(format!("{path}.metrics_path"), format!("{p:?} does not start with /"));
        }
    }
    let interval = scrape.interval_of(sc);
    if interval.get().is_zero() {
        return invalid(format!("{path}.interval"), "must be greater than 0");
    }
    if let Some(timeout) = sc.timeout {
        if timeout.get().is_zero() {
            return invalid(format!("{path}.timeout"), "must be greater than 0");
        }
        if timeout > interval {
            return invalid(format!("{path}.timeout"), format!("{timeout} is longer than the interval {interval}"));
        }
    }
    for (i, r) in sc.relabel_configs.iter().enumerate() {
        relabel(&format!("{path}.relabel_configs[{i}]"), r)?;
    }
    for (i, r) in sc.metric_relabel_configs.iter().enumerate() {
        relabel(&format!("{path}.metric_relabel_configs[{i}]"), r)?;
    }
    if let Some(auth) = &sc.basic_auth {
        basic_auth(&format!("{path}.basic_auth"), auth)?;
        if sc.bearer_token_file.is_some() {
            return invalid(format!("{path}.basic_auth"), "basic_auth and bearer_token_file are mutually exclusive");
        }
    }
    if let Some(f) = &sc.bearer_token_file {
        if f.as_os_str().is_empty() {
            return invalid(format!("{path}.bearer_token_file"), "must not be empty");
        }
    }
    if let Some(tls) = &sc.tls_config {
        tls_config(&format!("{path}.tls_config"), tls)?;
    }
    Ok(())
}

fn basic_auth(path: &str, auth: &BasicAuth) -> Result<(), Invalid> {
    if auth.username.is_empty() {
        return invalid(format!("{path}.username"), "must not be empty");
    }
    if auth.password.is_some() && auth.password_file.is_some() {
        return invalid(path, "password and password_file are mutually exclusive");
    }
    if auth.password_file.as_ref().is_some_and(|f| f.as_os_str().is_empty()) {
        return invalid(format!("{path}.password_file"), "must not be empty");
    }
    Ok(())
}

fn tls_config(path: &str, tls: &TlsConfig) -> Result<(), Invalid> {
    match (&tls.cert_file, &tls.key_file) {
        (Some(_), None) => return invalid(format!("{path}.key_file"), "required when cert_file is set"),
        (None, Some(_)) => return invalid(format!("{path}.cert_file"), "required when key_file is set"),
        _ => {}
    }
    if let Some(name) = &tls.server_name {
        let valid = name.parse::<std::net::IpAddr>().is_ok()
            || (!name.is_empty()
                && name.len() <= 253
                && name.split('.').all(|part| {
                    !part.is_empty()
                        && part.len() <= 63
                        && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                        && !part.starts_with('-')
                        && !part.ends_with('-')
                }));
        if !valid {
            return invalid(format!("{path}.server_name"), format!("{name:?} is not a DNS name or an IP address"));
        }
    }
    Ok(())
}

/// A relabeling rule, by the one validator the scraper compiles rules with.
fn relabel(path: &str, r: &RelabelConfig) -> Result<(), Invalid> {
    r.check().map(drop).map_err(|e| (format!("{path}.{}", e.field), e.message))
}

/// A sampling policy: a known type with the fields that type needs, and no others.
fn policy(path: &str, p: &PolicyConfig) -> Result<(), Invalid> {
    let kind = p.kind.as_str();
    if kind.is_empty() {
        return invalid(format!("{path}.type"), format!("required, one of {}", POLICY_TYPES.join(", ")));
    }
    if !POLICY_TYPES.contains(&kind) {
        return invalid(
            format!("{path}.type"),
            format!("unknown policy type {kind:?}, expected one of {}", POLICY_TYPES.join(", ")),
        );
    }
    let set = [
        ("status_codes", !p.status_codes.is_empty()),
        ("threshold_ms", p.threshold_ms.is_some()),
        ("percentage", p.percentage.is_some()),
        ("key", p.key.is_some()),
        ("values", !p.values.is_empty()),
        ("min_value", p.min_value.is_some()),
        ("max_value", p.max_value.is_some()),
        ("spans_per_second", p.spans_per_second.is_some()),
        ("and", !p.and.is_empty()),
        ("or", !p.or.is_empty()),
        ("not", p.not.is_some()),
    ];
    let (required, allowed): (&[&str], &[&str]) = match kind {
        "status_code" => (&["status_codes"], &[]),
        "latency" => (&["threshold_ms"], &[]),
        "probabilistic" => (&["percentage"], &[]),
        "string_attribute" => (&["key", "values"], &[]),
        "numeric_attribute" => (&["key"], &["min_value", "max_value"]),
        "rate_limiting" => (&["spans_per_second"], &[]),
        "and" => (&["and"], &[]),
        "or" => (&["or"], &[]),
        _ => (&["not"], &[]),
    };
    for (field, is_set) in set {
        if !is_set && required.contains(&field) {
            return invalid(format!("{path}.{field}"), format!("required by policy type {kind}"));
        }
        if is_set && !required.contains(&field) && !allowed.contains(&field) {
            return invalid(format!("{path}.{field}"), format!("does not apply to policy type {kind}"));
        }
    }
    for (i, code) in p.status_codes.iter().enumerate() {
        if !matches!(code.as_str(), "OK" | "ERROR" | "UNSET") {
            return invalid(
                format!("{path}.status_codes[{i}]"),
                format!("unknown status code {code:?}, expected OK, ERROR or UNSET"),
            );
        }
    }
    if let Some(pct) = p.percentage {
        if !(0.0..=100.0).contains(&pct) {
            return invalid(format!("{path}.percentage"), format!("{pct} is not within 0..=100"));
        }
    }
    if kind == "numeric_attribute" {
        match (p.min_value, p.max_value) {
            (None, None) => {
                return invalid(
                    format!("{path}.min_value"),
                    "min_value or max_value is required by policy type numeric_attribute",
                )
            }
            (Some(min), Some(max)) if min > max => {
                return invalid(format!("{path}.min_value"), format!("{min} is greater than max_value {max}"))
            }
            _ => {}
        }
    }
    if p.spans_per_second == Some(0) {
        return invalid(format!("{path}.spans_per_second"), "must be at least 1");
    }
    if p.key.as_deref() == Some("") {
        return invalid(format!("{path}.key"), "must not be empty");
    }
    for (i, sub) in p.and.iter().enumerate() {
        policy(&format!("{path}.and[{i}]"), sub)?;
    }
    for (i, sub) in p.or.iter().enumerate() {
        policy(&format!("{path}.or[{i}]"), sub)?;
    }
    if let Some(sub) = &p.not {
        policy(&format!("{path}.not"), sub)?;
    }
    Ok(())
}
