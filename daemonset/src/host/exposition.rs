//! The collected host metrics as families of samples, and their rendering in the Prometheus text
//! exposition format 0.0.4 (what node_exporter serves, so the scrape loop parses both the same way).

use std::borrow::Cow;
use std::fmt::Write as _;
use std::time::Duration;

/// The type on a family's `# TYPE` line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricType {
    Counter,
    Gauge,
}

impl MetricType {
    fn as_str(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
        }
    }
}

/// One series: its labels (names are fixed by the collector) and its value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub labels: Vec<(&'static str, String)>,
    pub value: f64,
}

/// All series of one metric name.
#[derive(Clone, Debug)]
pub struct Family {
    pub name: Cow<'static, str>,
    pub help: Cow<'static, str>,
    pub kind: MetricType,
    pub samples: Vec<Sample>,
}

/// How one collector (node_exporter's unit: `cpu`, `meminfo`, ...) fared in a collection.
#[derive(Clone, Debug)]
pub struct CollectorOutcome {
    pub name: &'static str,
    pub duration: Duration,
    /// `None` when it succeeded; the error's text otherwise.
    pub error: Option<String>,
}

/// Index of a family inside [`HostMetrics`], handed out by [`HostMetrics::family`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct FamilyId(usize);

/// The result of one collection: every family of every collector that succeeded, plus one
/// [`CollectorOutcome`] per collector (rendered as `node_scrape_collector_*`).
#[derive(Clone, Debug, Default)]
pub struct HostMetrics {
    families: Vec<Family>,
    collectors: Vec<CollectorOutcome>,
}

impl HostMetrics {
    /// The families, sorted by name (as node_exporter serves them).
    pub fn families(&self) -> &[Family] {
        &self.families
    }

    /// One family by name.
    pub fn get(&self, name: &str) -> Option<&Family> {
        self.families.iter().find(|f| f.name == name)
    }

    /// The value of the series `name{labels}`; `labels` must list every label of the series.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.get(name)?
            .samples
            .iter()
            .find(|s| {
                s.labels.len() == labels.len()
                    && labels.iter().all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v))
            })
            .map(|s| s.value)
    }

    /// The outcome of each collector, in the order they ran.
    pub fn collectors(&self) -> &[CollectorOutcome] {
        &self.collectors
    }

    pub(crate) fn family(
        &mut self,
        name: impl Into<Cow<'static, str>>,
        help: impl Into<Cow<'static, str>>,
        kind: MetricType,
    ) -> FamilyId {
        self.families.push(Family { name: name.into(), help: help.into(), kind, samples: Vec::new() });
        FamilyId(self.families.len() - 1)
    }

    pub(crate) fn push(&mut self, id: FamilyId, labels: Vec<(&'static str, String)>, value: f64) {
        self.families[id.0].samples.push(Sample { labels, value });
    }

    /// A family with a single unlabelled sample.
    pub(crate) fn single(&mut self, name: &'static str, help: &'static str, kind: MetricType, value: f64) {
        let id = self.family(name, help, kind);
        self.push(id, Vec::new(), value);
    }

    /// Runs one collector; a failure drops whatever it had added, so a family is never half there.
    pub(crate) fn run(
        &mut self,
        name: &'static str,
        collector: impl FnOnce(&mut HostMetrics) -> Result<(), super::HostError>,
    ) {
        let start = std::time::Instant::now();
        let before = self.families.len();
        let error = match collector(self) {
            Ok(()) => None,
            Err(e) => {
                self.families.truncate(before);
                tracing::debug!(collector = name, error = %e, "host metrics collector failed");
                Some(e.to_string())
            }
        };
        self.collectors.push(CollectorOutcome { name, duration: start.elapsed(), error });
    }

    pub(crate) fn finish(&mut self) {
        self.families.retain(|f| !f.samples.is_empty());
        self.families.sort_by(|a, b| a.name.cmp(&b.name));
    }

    /// Appends the text exposition of every family, then `node_scrape_collector_duration_seconds`
    /// and `node_scrape_collector_success`.
    pub fn render(&self, out: &mut String) {
        for family in &self.families {
            render_family(out, &family.name, &family.help, family.kind, &family.samples);
        }
        if self.collectors.is_empty() {
            return;
        }
        let mut sorted: Vec<&CollectorOutcome> = self.collectors.iter().collect();
        sorted.sort_by_key(|c| c.name);
        header(
            out,
            "node_scrape_collector_duration_seconds",
            "node_exporter: Duration of a collector scrape.",
            MetricType::Gauge,
        );
        for c in &sorted {
            sample(out, "node_scrape_collector_duration_seconds", &[("collector", c.name)], c.duration.as_secs_f64());
        }
        header(
            out,
            "node_scrape_collector_success",
            "node_exporter: Whether a collector succeeded.",
            MetricType::Gauge,
        );
        for c in &sorted {
            let ok = if c.error.is_none() { 1.0 } else { 0.0 };
            sample(out, "node_scrape_collector_success", &[("collector", c.name)], ok);
        }
    }
}

fn render_family(out: &mut String, name: &str, help: &str, kind: MetricType, samples: &[Sample]) {
    header(out, name, help, kind);
    for s in samples {
        out.push_str(name);
        if !s.labels.is_empty() {
            out.push('{');
            for (i, (k, v)) in s.labels.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_label(out, k, v);
            }
            out.push('}');
        }
        out.push(' ');
        push_value(out, s.value);
        out.push('\n');
    }
}

fn header(out: &mut String, name: &str, help: &str, kind: MetricType) {
    out.push_str("# HELP ");
    out.push_str(name);
    out.push(' ');
    for c in help.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push_str("\n# TYPE ");
    out.push_str(name);
    out.push(' ');
    out.push_str(kind.as_str());
    out.push('\n');
}

fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: f64) {
    out.push_str(name);
    out.push('{');
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_label(out, k, v);
    }
    out.push_str("} ");
    push_value(out, value);
    out.push('\n');
}

fn push_label(out: &mut String, name: &str, value: &str) {
    out.push_str(name);
    out.push_str("=\"");
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Writes a sample value so that it parses back to the same `f64`: integers without a fraction,
/// very large or small magnitudes in exponent form, and `NaN`/`+Inf`/`-Inf` as Prometheus spells them.
pub(crate) fn push_value(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else if v.fract() == 0.0 && v.abs() < 9.007_199_254_740_992e15 {
        let _ = write!(out, "{}", v as i64);
    } else if v != 0.0 && (v.abs() >= 1e16 || v.abs() < 1e-5) {
        let _ = write!(out, "{v:e}");
    } else {
        let _ = write!(out, "{v}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(v: f64) -> String {
        let mut s = String::new();
        push_value(&mut s, v);
        s
    }

    #[test]
    fn values_round_trip_in_prometheus_spelling() {
        assert_eq!(value(0.0), "0");
        assert_eq!(value(-0.0), "0");
        assert_eq!(value(25_276_510_208.0), "25276510208");
        assert_eq!(value(12.264000000000001), "12.264000000000001");
        assert_eq!(value(3.5e20), "3.5e20");
        assert_eq!(value(1.5e-9), "1.5e-9");
        assert_eq!(value(f64::NAN), "NaN");
        assert_eq!(value(f64::INFINITY), "+Inf");
        assert_eq!(value(f64::NEG_INFINITY), "-Inf");
        for v in [0.1, 676.37, 1.7955941774100513e9, 1e-5, 123456789.123] {
            assert_eq!(value(v).parse::<f64>().unwrap(), v);
        }
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        let mut m = HostMetrics::default();
        let id = m.family("x_info", "a \\ b\nc", MetricType::Gauge);
        m.push(id, vec![("path", "a\"b\\c\nd".to_string())], 1.0);
        let mut out = String::new();
        m.render(&mut out);
        assert_eq!(out, "# HELP x_info a \\\\ b\\nc\n# TYPE x_info gauge\nx_info{path=\"a\\\"b\\\\c\\nd\"} 1\n");
    }

    #[test]
    fn failed_collector_leaves_no_families_and_reports_zero() {
        let mut m = HostMetrics::default();
        m.run("good", |m| {
            m.single("a", "A.", MetricType::Gauge, 1.0);
            Ok(())
        });
        m.run("bad", |m| {
            m.single("b", "B.", MetricType::Gauge, 2.0);
            Err(super::super::HostError::Parse { path: "/proc/x".into(), what: "nothing".into() })
        });
        m.finish();
        assert!(m.get("a").is_some());
        assert!(m.get("b").is_none());
        let mut out = String::new();
        m.render(&mut out);
        assert!(out.contains("node_scrape_collector_success{collector=\"bad\"} 0\n"));
        assert!(out.contains("node_scrape_collector_success{collector=\"good\"} 1\n"));
    }
}
