//! OTLP metrics requests taken in parts, so that one request never holds all its data points
//! decoded and converted.
//!
//! A `NumberDataPoint` decoded by prost takes about 100 bytes, and its remote-write series a few
//! hundred more before it is encoded; encoded, a gauge point with a value and a time takes 22.
//! Decoding a whole request of such points, then converting it, took 29 bytes of peak RSS per
//! request byte (a 6 MiB request: 173 MiB). As for logs ([`super::logs_parts`]), the
//! request is first checked as prost decodes it, one data point at a time ([`super::skim`]), so
//! that a request prost would refuse is refused whole, before anything is handed on; then its
//! bytes are walked ([`plan`]) and the data points are grouped into parts of about `part_bytes`
//! of the request, a metric's points split over several parts where it has many. Each part is then decoded on its own
//! ([`Part::decode`]): its resources, scopes and metrics with only the part's points.
//!
//! A metric's `data` is a oneof: where a request holds several of its fields, prost keeps the
//! last variant, merged from the fields of that variant since the variant last changed (an
//! earlier field of another variant is replaced, an earlier one of the same variant merged); the
//! parts keep the same fields. The other fields of resources, scopes, metrics and their data
//! (temporality, monotonicity) are merged from every field, in order, as prost does.
//!
//! Accepted and refused as by `ExportMetricsServiceRequest::decode`, except for the deprecated
//! protobuf groups (wire types 3 and 4), which are refused.

use std::ops::Range;
use std::sync::Arc;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::{
    metric, ExponentialHistogram, Gauge, Histogram, Metric, ResourceMetrics, ScopeMetrics, Sum, Summary,
};
use prost::Message;

use super::skim::Skim;
use super::wire::{bytes_of, fields, Field};

/// The fields of `Metric.data`: gauge, sum, histogram, exponential_histogram, summary. In each
/// of their messages, field 1 is `data_points`.
const DATA_TAGS: [u32; 5] = [5, 7, 9, 10, 11];

/// Fields of a message other than its children (a resource's scopes, a scope's metrics, a
/// metric's data points), as ranges of the request: merged into an empty message, they give the
/// message without its children.
type Header = Arc<[Range<usize>]>;

/// A run of data points of one metric, or (`metric` none) a resource without any, which still
/// gets its `target_info`.
#[derive(Debug, Clone)]
struct Run {
    /// The index of the `ResourceMetrics` in the request, and of the `ScopeMetrics` among all
    /// scopes of the request.
    resource: usize,
    scope: usize,
    resource_header: Header,
    metric: Option<MetricRun>,
}

#[derive(Debug, Clone)]
struct MetricRun {
    scope_header: Header,
    /// The metric's fields but its data.
    metric_header: Header,
    /// The variant of its data (a field of [`DATA_TAGS`]), and the fields of the data kept by
    /// prost but the points.
    data_tag: u32,
    data_header: Header,
    /// The run's points: fields of the data, as ranges of the request, each of one or more
    /// consecutive points.
    points: Vec<Range<usize>>,
    /// The metric's index among all metrics of the request.
    index: usize,
}

/// Data points of the request, from one or more metrics.
#[derive(Debug, Default)]
pub struct Part {
    runs: Vec<Run>,
}

/// A part as a request of its own.
#[derive(Debug, Default)]
pub struct Decoded {
    pub request: ExportMetricsServiceRequest,
    /// The index in the whole request of each of `request.resource_metrics`.
    pub resources: Vec<usize>,
}

/// A field's range in the request, the message holding it starting at `base`.
fn range(base: usize, f: &Field<'_>) -> Range<usize> {
    base + f.key..base + f.end
}

/// The data fields of a metric that prost keeps (see the module's doc): the
/// variant's tag (0: none), the kept fields but the points, and the points (each as its field's
/// range in the request), for the metric at `base` in the request.
type KeptData = (u32, Vec<Range<usize>>, Vec<Range<usize>>);

fn kept_data(metric: &[u8], base: usize) -> Result<(KeptData, Vec<Range<usize>>), String> {
    let mut header = Vec::new();
    let (mut tag, mut data_header, mut points) = (0, Vec::new(), Vec::new());
    for f in fields(metric) {
        let f = f?;
        if !DATA_TAGS.contains(&f.tag) {
            header.push(range(base, &f));
            continue;
        }
        let data = bytes_of(&f, "metric data")?;
        if f.tag != tag {
            tag = f.tag;
            data_header.clear();
            points.clear();
        }
        let data_base = base + f.at;
        for g in fields(data) {
            let g = g?;
            if g.tag == 1 {
                points.push(range(data_base, &g));
            } else {
                data_header.push(range(data_base, &g));
            }
        }
    }
    Ok(((tag, data_header, points), header))
}

/// Walks `body` (an `ExportMetricsServiceRequest`), checks it as prost would decode it, and
/// groups its data points into parts of about `part_bytes` of encoded points each. An error says
/// why prost would refuse the body.
pub fn plan(body: &[u8], part_bytes: usize) -> Result<Vec<Part>, String> {
    Skim::MetricsRequest.check(body)?;
    let mut parts = vec![Part::default()];
    let mut in_part = 0usize;
    let (mut resource, mut scope, mut metric_index) = (0, 0, 0);
    for field in fields(body) {
        let field = field?;
        if field.tag != 1 {
            continue;
        }
        let rm = bytes_of(&field, "resource_metrics")?;
        let rm_base = field.at;
        // The header first: a resource may come after its scopes.
        let mut resource_header = Vec::new();
        for f in fields(rm) {
            let f = f?;
            if f.tag != 2 {
                resource_header.push(range(rm_base, &f));
            }
        }
        let resource_header: Header = resource_header.into();
        let mut any_point = false;
        for f in fields(rm).map_while(Result::ok).filter(|f| f.tag == 2) {
            let sm = bytes_of(&f, "scope_metrics")?;
            let sm_base = rm_base + f.at;
            let mut scope_header = Vec::new();
            for g in fields(sm) {
                let g = g?;
                if g.tag != 2 {
                    scope_header.push(range(sm_base, &g));
                }
            }
            let scope_header: Header = scope_header.into();
            for g in fields(sm).map_while(Result::ok).filter(|g| g.tag == 2) {
                let m = bytes_of(&g, "metrics")?;
                let ((data_tag, data_header, points), metric_header) = kept_data(m, sm_base + g.at)?;
                let (data_header, metric_header): (Header, Header) = (data_header.into(), metric_header.into());
                for p in points {
                    if in_part >= part_bytes {
                        parts.push(Part::default());
                        in_part = 0;
                    }
                    in_part += p.len();
                    any_point = true;
                    let part = parts.last_mut().expect("never empty");
                    if let Some(Run { metric: Some(run), .. }) = part.runs.last_mut() {
                        if run.index == metric_index {
                            match run.points.last_mut() {
                                Some(last) if last.end == p.start => last.end = p.end,
                                _ => run.points.push(p),
                            }
                            continue;
                        }
                    }
                    part.runs.push(Run {
                        resource,
                        scope,
                        resource_header: resource_header.clone(),
                        metric: Some(MetricRun {
                            scope_header: scope_header.clone(),
                            metric_header: metric_header.clone(),
                            data_tag,
                            data_header: data_header.clone(),
                            points: vec![p],
                            index: metric_index,
                        }),
                    });
                }
                metric_index += 1;
            }
            scope += 1;
        }
        if !any_point {
            let part = parts.last_mut().expect("never empty");
            part.runs.push(Run { resource, scope, resource_header, metric: None });
        }
        resource += 1;
    }
    parts.retain(|p| !p.runs.is_empty());
    Ok(parts)
}

/// A message merged from the fields `header` of `body` (each field a message of its own: prost
/// merges it as it would in place).
fn merged<M: Message + Default>(body: &[u8], header: &[Range<usize>]) -> M {
    let mut message = M::default();
    for r in header {
        let _ = message.merge(&body[r.clone()]);
    }
    message
}

impl Part {
    /// The index in the request of the part's first resource.
    pub fn first_resource(&self) -> Option<usize> {
        self.runs.first().map(|r| r.resource)
    }

    /// The part as a request of its own: each run's points under their metric, scope and
    /// resource. `body` is the request [`plan`] was given (already checked: errors cannot occur,
    /// and would leave a field out rather than panic).
    pub fn decode(&self, body: &[u8]) -> Decoded {
        let mut out = Decoded::default();
        let mut last: Option<(usize, Option<usize>)> = None;
        for run in &self.runs {
            if last.map(|(r, _)| r) != Some(run.resource) {
                out.request.resource_metrics.push(merged(body, &run.resource_header));
                out.resources.push(run.resource);
                last = Some((run.resource, None));
            }
            let Some(m) = &run.metric else { continue };
            let rm: &mut ResourceMetrics = out.request.resource_metrics.last_mut().expect("pushed above");
            let scope = &mut last.as_mut().expect("set above").1;
            if *scope != Some(run.scope) {
                rm.scope_metrics.push(merged(body, &m.scope_header));
                *scope = Some(run.scope);
            }
            let sm: &mut ScopeMetrics = rm.scope_metrics.last_mut().expect("pushed above");
            sm.metrics.push(m.decode(body));
        }
        out
    }
}

impl MetricRun {
    fn decode(&self, body: &[u8]) -> Metric {
        let mut metric: Metric = merged(body, &self.metric_header);
        let mut data = Vec::new();
        for r in self.data_header.iter().chain(&self.points) {
            data.extend_from_slice(&body[r.clone()]);
        }
        metric.data = match self.data_tag {
            5 => Gauge::decode(&data[..]).ok().map(metric::Data::Gauge),
            7 => Sum::decode(&data[..]).ok().map(metric::Data::Sum),
            9 => Histogram::decode(&data[..]).ok().map(metric::Data::Histogram),
            10 => ExponentialHistogram::decode(&data[..]).ok().map(metric::Data::ExponentialHistogram),
            11 => Summary::decode(&data[..]).ok().map(metric::Data::Summary),
            _ => None,
        };
        metric
    }
}

#[cfg(test)]
#[path = "metrics_parts_tests.rs"]
mod tests;
