//! OTLP metrics to Prometheus remote-write series, after the OpenTelemetry-to-Prometheus
//! compatibility specification (`specification/compatibility/prometheus_and_openmetrics.md`):
//!
//! - Names: characters outside `[a-zA-Z0-9:]` separate words, which are joined by `_`; the unit is
//!   appended as a word unless the name already contains it (`s` -> `seconds`, `By` -> `bytes`,
//!   `ms` -> `milliseconds`, `X/Y` -> `X_per_Y`, `{annotations}` removed, a gauge of unit `1` gets
//!   `ratio`); monotonic sums end in `_total`. A leading digit gets a `_` prefix.
//! - Labels: data point attributes, with characters outside `[a-zA-Z0-9_]` replaced by `_` (a
//!   leading digit gets `key_`); attributes that collide after that are joined with `;`.
//!   `job` is `service.namespace/service.name` (or `service.name`), `instance` is
//!   `service.instance.id`; `otel_scope_name` / `otel_scope_version` name the instrumentation
//!   scope. `cluster` is added by the [`crate::MetricsSink`].
//! - Resource attributes other than those three go to one `target_info` series per resource (value
//!   1, with `job` and `instance`), to be joined in PromQL, not copied onto every series.
//! - Types: a monotonic cumulative sum is a counter (`_total`); a non-monotonic cumulative sum and
//!   a gauge are gauges; a cumulative histogram becomes `_bucket{le}` (cumulative counts, `+Inf`
//!   last), `_sum` and `_count`; a summary becomes `{quantile}`, `_sum` and `_count`.
//! - Not converted, and counted in `lgtm_agent_otlp_dropped_total{signal="metrics",reason}` and in
//!   the answer's partial success: delta temporality (`delta_temporality`: turning deltas into
//!   cumulative series needs state per series, which a stateless receiver has not), exponential
//!   histograms (`exponential_histogram`: remote write 1.0 has no native histograms), histograms
//!   whose bucket counts do not match their bounds (`invalid_histogram`) and number points without a value (`no_data`).
//! - A point flagged "no recorded value" becomes a staleness marker; timestamps are milliseconds.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point, AggregationTemporality, Metric};

use crate::proto::{stale_nan, Label, Sample, TimeSeries};

/// The series of one request, and what could not be converted.
#[derive(Debug, Default)]
pub struct Converted {
    pub series: Vec<TimeSeries>,
    /// Data points converted.
    pub points: usize,
    /// Data points not converted, by reason.
    pub dropped: Vec<(&'static str, usize)>,
}

impl Converted {
    fn drop_points(&mut self, reason: &'static str, n: usize) {
        if n == 0 {
            return;
        }
        match self.dropped.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, count)) => *count += n,
            None => self.dropped.push((reason, n)),
        }
    }

    /// The partial-success message of the answer.
    pub fn dropped_message(&self) -> String {
        let parts: Vec<String> = self.dropped.iter().map(|(r, n)| format!("{n} points dropped: {r}")).collect();
        parts.join("; ")
    }
}

const FLAG_NO_RECORDED_VALUE: u32 = 1;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
    Summary,
}

pub fn convert(req: &ExportMetricsServiceRequest) -> Converted {
    let resources: Vec<usize> = (0..req.resource_metrics.len()).collect();
    InParts::default().convert(req, &resources, None)
}

/// Converts a request taken in parts ([`super::metrics_parts`]) part by part: the same series as
/// [`convert`] of the whole request, in the same order. A resource's `target_info` follows its
/// last part, with the latest timestamp of all its series.
#[derive(Default)]
pub struct InParts {
    /// The resource of the last part converted, when the next part goes on with it.
    open: Option<OpenResource>,
}

struct OpenResource {
    index: usize,
    attributes: Vec<KeyValue>,
    latest_ms: i64,
}

impl InParts {
    /// The series of `part`: `resources[i]` is the index in the whole request of
    /// `part.resource_metrics[i]`, `next` that of the next part's first resource (`None` after
    /// the last part).
    pub fn convert(
        &mut self,
        part: &ExportMetricsServiceRequest,
        resources: &[usize],
        next: Option<usize>,
    ) -> Converted {
        let mut out = Converted::default();
        for (rm, &index) in part.resource_metrics.iter().zip(resources) {
            if self.open.as_ref().is_some_and(|o| o.index != index) {
                self.close(&mut out);
            }
            let resource_attrs: &[KeyValue] = rm.resource.as_ref().map_or(&[], |r| &r.attributes);
            let identity = Identity::of(resource_attrs);
            let first_series = out.series.len();
            for sm in &rm.scope_metrics {
                let base = identity.labels(sm.scope.as_ref());
                for m in &sm.metrics {
                    convert_metric(m, &base, &mut out);
                }
            }
            let latest_ms = out.series[first_series..].iter().flat_map(|s| &s.samples).map(|s| s.timestamp).max();
            let latest_ms = latest_ms.unwrap_or(0).max(0);
            match &mut self.open {
                Some(open) => open.latest_ms = open.latest_ms.max(latest_ms),
                None => self.open = Some(OpenResource { index, attributes: resource_attrs.to_vec(), latest_ms }),
            }
        }
        if self.open.as_ref().is_some_and(|o| Some(o.index) != next) {
            self.close(&mut out);
        }
        out
    }

    /// The `target_info` of the open resource, which has no more series.
    fn close(&mut self, out: &mut Converted) {
        if let Some(open) = self.open.take() {
            let identity = Identity::of(&open.attributes);
            if let Some(info) = target_info(&open.attributes, &identity, open.latest_ms) {
                out.series.push(info);
            }
        }
    }
}

/// `job` and `instance` of a resource.
struct Identity {
    job: Option<String>,
    instance: Option<String>,
}

const SERVICE_NAME: &str = "service.name";
const SERVICE_NAMESPACE: &str = "service.namespace";
const SERVICE_INSTANCE: &str = "service.instance.id";

impl Identity {
    fn of(attrs: &[KeyValue]) -> Identity {
        let get = |k: &str| attrs.iter().find(|kv| kv.key == k).map(|kv| any_value_string(kv.value.as_ref()));
        let job = match (get(SERVICE_NAMESPACE), get(SERVICE_NAME)) {
            (Some(ns), Some(name)) if !ns.is_empty() => Some(format!("{ns}/{name}")),
            (_, name) => name,
        };
        Identity { job, instance: get(SERVICE_INSTANCE) }
    }

    fn labels(&self, scope: Option<&InstrumentationScope>) -> Vec<Label> {
        let mut labels = Vec::new();
        if let Some(job) = &self.job {
            labels.push(Label::new("job", job));
        }
        if let Some(instance) = &self.instance {
            labels.push(Label::new("instance", instance));
        }
        if let Some(scope) = scope {
            if !scope.name.is_empty() {
                labels.push(Label::new("otel_scope_name", &scope.name));
            }
            if !scope.version.is_empty() {
                labels.push(Label::new("otel_scope_version", &scope.version));
            }
        }
        labels
    }
}

fn target_info(attrs: &[KeyValue], identity: &Identity, latest_ms: i64) -> Option<TimeSeries> {
    let rest: Vec<&KeyValue> = attrs
        .iter()
        .filter(|kv| ![SERVICE_NAME, SERVICE_NAMESPACE, SERVICE_INSTANCE].contains(&kv.key.as_str()))
        .collect();
    if rest.is_empty() {
        return None;
    }
    let mut labels = identity.labels(None);
    labels.push(Label::new("__name__", "target_info"));
    add_attributes(&mut labels, rest.into_iter());
    let timestamp = if latest_ms > 0 { latest_ms } else { now_ms() };
    Some(TimeSeries { labels, samples: vec![Sample { value: 1.0, timestamp }] })
}

fn convert_metric(m: &Metric, base: &[Label], out: &mut Converted) {
    let cumulative = AggregationTemporality::Cumulative as i32;
    match &m.data {
        None => {}
        Some(metric::Data::Gauge(g)) => {
            let name = metric_name(&m.name, &m.unit, Kind::Gauge);
            for p in &g.data_points {
                number_point(&name, base, &p.attributes, p.flags, p.time_unix_nano, p.value.as_ref(), out);
            }
        }
        Some(metric::Data::Sum(s)) => {
            if s.aggregation_temporality != cumulative {
                out.drop_points("delta_temporality", s.data_points.len());
                return;
            }
            let kind = if s.is_monotonic { Kind::Counter } else { Kind::Gauge };
            let name = metric_name(&m.name, &m.unit, kind);
            for p in &s.data_points {
                number_point(&name, base, &p.attributes, p.flags, p.time_unix_nano, p.value.as_ref(), out);
            }
        }
        Some(metric::Data::Histogram(h)) => {
            if h.aggregation_temporality != cumulative {
                out.drop_points("delta_temporality", h.data_points.len());
                return;
            }
            let name = metric_name(&m.name, &m.unit, Kind::Histogram);
            let (bucket, sum_name, count_name) =
                (format!("{name}_bucket"), format!("{name}_sum"), format!("{name}_count"));
            for p in &h.data_points {
                if !p.bucket_counts.is_empty() && p.bucket_counts.len() != p.explicit_bounds.len() + 1 {
                    out.drop_points("invalid_histogram", 1);
                    continue;
                }
                let ts = timestamp_ms(p.time_unix_nano);
                let stale = p.flags & FLAG_NO_RECORDED_VALUE != 0;
                let value = |v: f64| if stale { stale_nan() } else { v };
                let labels = point_labels(base, &p.attributes);
                let mut cumulative_count = 0u64;
                for (i, count) in p.bucket_counts.iter().enumerate() {
                    cumulative_count = cumulative_count.saturating_add(*count);
                    let le = p.explicit_bounds.get(i).map_or_else(|| "+Inf".to_string(), |b| format_bound(*b));
                    let extra = [Label::new("le", le)];
                    push(out, &bucket, &labels, &extra, value(cumulative_count as f64), ts);
                }
                if p.bucket_counts.is_empty() {
                    let extra = [Label::new("le", "+Inf")];
                    push(out, &bucket, &labels, &extra, value(p.count as f64), ts);
                }
                if let Some(sum) = p.sum {
                    push(out, &sum_name, &labels, &[], value(sum), ts);
                }
                push(out, &count_name, &labels, &[], value(p.count as f64), ts);
                out.points += 1;
            }
        }
        Some(metric::Data::ExponentialHistogram(h)) => out.drop_points("exponential_histogram", h.data_points.len()),
        Some(metric::Data::Summary(s)) => {
            let name = metric_name(&m.name, &m.unit, Kind::Summary);
            let (sum_name, count_name) = (format!("{name}_sum"), format!("{name}_count"));
            for p in &s.data_points {
                let ts = timestamp_ms(p.time_unix_nano);
                let stale = p.flags & FLAG_NO_RECORDED_VALUE != 0;
                let value = |v: f64| if stale { stale_nan() } else { v };
                let labels = point_labels(base, &p.attributes);
                for q in &p.quantile_values {
                    let extra = [Label::new("quantile", format_bound(q.quantile))];
                    push(out, &name, &labels, &extra, value(q.value), ts);
                }
                push(out, &sum_name, &labels, &[], value(p.sum), ts);
                push(out, &count_name, &labels, &[], value(p.count as f64), ts);
                out.points += 1;
            }
        }
    }
}

fn number_point(
    name: &str,
    base: &[Label],
    attrs: &[KeyValue],
    flags: u32,
    time_unix_nano: u64,
    value: Option<&number_data_point::Value>,
    out: &mut Converted,
) {
    let v = if flags & FLAG_NO_RECORDED_VALUE != 0 {
        stale_nan()
    } else {
        match value {
            Some(number_data_point::Value::AsDouble(d)) => *d,
            Some(number_data_point::Value::AsInt(i)) => *i as f64,
            None => {
                out.drop_points("no_data", 1);
                return;
            }
        }
    };
    push(out, name, &point_labels(base, attrs), &[], v, timestamp_ms(time_unix_nano));
    out.points += 1;
}

/// A data point's labels: a `__name__` placeholder (so no attribute takes that name; [`push`] sets
/// it per series), `base`, then the point's attributes. Worked out once per point and shared by
/// all its series (buckets, quantiles, sum, count).
fn point_labels(base: &[Label], attrs: &[KeyValue]) -> Vec<Label> {
    let mut labels = Vec::with_capacity(base.len() + attrs.len() + 1);
    labels.push(Label::new("__name__", ""));
    labels.extend_from_slice(base);
    add_attributes(&mut labels, attrs.iter());
    labels
}

/// One series of `name` with `point`'s labels (from [`point_labels`]) and `extra`, which win.
fn push(out: &mut Converted, name: &str, point: &[Label], extra: &[Label], value: f64, ts: i64) {
    let mut labels = Vec::with_capacity(point.len() + extra.len());
    labels.push(Label::new("__name__", name));
    labels.extend_from_slice(&point[1..]);
    for l in extra {
        set_label(&mut labels, l.clone());
    }
    out.series.push(TimeSeries { labels, samples: vec![Sample { value, timestamp: ts }] });
}

/// Adds attributes as labels; attributes never override the labels the receiver sets (`job`,
/// `__name__` ...), and attributes that map to one label name are joined with `;` in key order.
fn add_attributes<'a>(labels: &mut Vec<Label>, attrs: impl Iterator<Item = &'a KeyValue>) {
    let reserved = labels.len();
    let mut merged: BTreeMap<String, Vec<(&str, String)>> = BTreeMap::new();
    for kv in attrs {
        let name = label_name(&kv.key);
        if name.is_empty() {
            continue;
        }
        merged.entry(name).or_default().push((&kv.key, any_value_string(kv.value.as_ref())));
    }
    for (name, mut values) in merged {
        if labels[..reserved].iter().any(|l| l.name == name) {
            continue;
        }
        values.sort();
        let value = values.into_iter().map(|(_, v)| v).collect::<Vec<_>>().join(";");
        labels.push(Label { name, value });
    }
}

fn set_label(labels: &mut Vec<Label>, label: Label) {
    match labels.iter_mut().find(|l| l.name == label.name) {
        Some(l) => *l = label,
        None => labels.push(label),
    }
}

/// A Prometheus label name for an attribute key.
pub fn label_name(key: &str) -> String {
    let mut out: String = key.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert_str(0, "key_");
    }
    out
}

/// A Prometheus metric name for an OTLP metric, with unit and type suffixes.
fn metric_name(name: &str, unit: &str, kind: Kind) -> String {
    let mut words: Vec<String> = name
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == ':'))
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect();
    let (main, per) = units(unit);
    if let Some(main) = main {
        if !words.contains(&main) {
            words.push(main);
        }
    } else if kind == Kind::Gauge && unit.trim() == "1" && words.last().map(String::as_str) != Some("ratio") {
        words.push("ratio".into());
    }
    if let Some(per) = per {
        if !words.contains(&per) {
            words.push("per".into());
            words.push(per);
        }
    }
    if kind == Kind::Counter {
        words.retain(|w| w != "total");
        words.push("total".into());
    }
    let mut out = words.join("_");
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// The words a UCUM unit adds to a name: `(main, per)`, e.g. `By/s` -> (`bytes`, `second`).
fn units(unit: &str) -> (Option<String>, Option<String>) {
    // `{request}` and the like are annotations, not units.
    let mut clean = String::new();
    let mut depth = 0;
    for c in unit.chars() {
        match c {
            '{' => depth += 1,
            '}' if depth > 0 => depth -= 1,
            c if depth == 0 => clean.push(c),
            _ => {}
        }
    }
    let (main, per) = match clean.split_once('/') {
        Some((m, p)) => (m.trim(), p.trim()),
        None => (clean.trim(), ""),
    };
    let main = match main {
        "" | "1" => None,
        m => Some(main_unit(m).map_or_else(|| sanitize_word(m), str::to_string)),
    };
    let per = match per {
        "" => None,
        p => Some(per_unit(p).map_or_else(|| sanitize_word(p), str::to_string)),
    };
    (main.filter(|w| !w.is_empty()), per.filter(|w| !w.is_empty()))
}

fn sanitize_word(w: &str) -> String {
    let s: String = w.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    s.trim_matches('_').to_string()
}

fn main_unit(u: &str) -> Option<&'static str> {
    Some(match u {
        "d" => "days",
        "h" => "hours",
        "min" => "minutes",
        "s" => "seconds",
        "ms" => "milliseconds",
        "us" => "microseconds",
        "ns" => "nanoseconds",
        "By" => "bytes",
        "KiBy" => "kibibytes",
        "MiBy" => "mebibytes",
        "GiBy" => "gibibytes",
        "TiBy" => "tebibytes",
        "KBy" => "kilobytes",
        "MBy" => "megabytes",
        "GBy" => "gigabytes",
        "TBy" => "terabytes",
        "m" => "meters",
        "V" => "volts",
        "A" => "amperes",
        "J" => "joules",
        "W" => "watts",
        "g" => "grams",
        "Cel" => "celsius",
        "Hz" => "hertz",
        "%" => "percent",
        _ => return None,
    })
}

fn per_unit(u: &str) -> Option<&'static str> {
    Some(match u {
        "s" => "second",
        "m" => "minute",
        "h" => "hour",
        "d" => "day",
        "w" => "week",
        "mo" => "month",
        "y" => "year",
        _ => return None,
    })
}

/// `le` and `quantile` values as Prometheus prints them (`0.005`, `1`, `+Inf`).
fn format_bound(b: f64) -> String {
    if b == f64::INFINITY {
        "+Inf".into()
    } else if b == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{b}")
    }
}

fn timestamp_ms(unix_nano: u64) -> i64 {
    if unix_nano == 0 {
        now_ms()
    } else {
        (unix_nano / 1_000_000) as i64
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// An attribute value as label text (arrays and maps as JSON).
pub fn any_value_string(v: Option<&AnyValue>) -> String {
    match v.and_then(|v| v.value.as_ref()) {
        None => String::new(),
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(other) => any_value_json(other).to_string(),
    }
}

fn any_value_json(v: &any_value::Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        any_value::Value::StringValue(s) => J::String(s.clone()),
        any_value::Value::BoolValue(b) => J::Bool(*b),
        any_value::Value::IntValue(i) => J::from(*i),
        any_value::Value::DoubleValue(d) => J::from(*d),
        any_value::Value::BytesValue(b) => {
            J::String(base64::Engine::encode(&base64::engine::general_purpose::STANDARD, b))
        }
        any_value::Value::ArrayValue(a) => {
            J::Array(a.values.iter().map(|v| v.value.as_ref().map_or(J::Null, any_value_json)).collect())
        }
        // A string-table index (profiles only) means nothing outside its dictionary.
        any_value::Value::StringValueStrindex(i) => J::from(*i),
        any_value::Value::KvlistValue(kv) => J::Object(
            kv.values
                .iter()
                .map(|kv| {
                    (kv.key.clone(), kv.value.as_ref().and_then(|v| v.value.as_ref()).map_or(J::Null, any_value_json))
                })
                .collect(),
        ),
    }
}

#[cfg(test)]
#[path = "prometheus_tests.rs"]
mod tests;
