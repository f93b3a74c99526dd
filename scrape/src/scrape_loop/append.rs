//! One body to series: parse, look up or build each series' labels, apply the limits.

use lgtm_pipeline::proto::Label;

use super::cache::{CachedSeries, Lookup, SeriesCache};
use super::error::ScrapeError;
use crate::encode::{encode_labels, label_hash, BatchBuilder};
use crate::labels::LabelSet;
use crate::parser::{is_valid_label_name, is_valid_metric_name, Entry, Format, Parser, Series};
use crate::relabel::Relabeler;
use crate::target::Target;

/// The per-target settings the append step needs.
pub(crate) struct AppendContext<'a> {
    pub target_labels: &'a LabelSet,
    pub honor_labels: bool,
    pub honor_timestamps: bool,
    pub metric_relabel: &'a Relabeler,
    pub sample_limit: usize,
    pub label_limit: Option<usize>,
    pub label_name_length_limit: Option<usize>,
    pub label_value_length_limit: Option<usize>,
    /// The sink's external labels, merged into every series' encoded labels.
    pub external_labels: &'a [Label],
}

impl<'a> AppendContext<'a> {
    pub fn new(target: &'a Target, external_labels: &'a [Label]) -> AppendContext<'a> {
        let o = &target.options;
        AppendContext {
            target_labels: &target.labels,
            honor_labels: o.honor_labels,
            honor_timestamps: o.honor_timestamps,
            metric_relabel: &target.metric_relabel,
            sample_limit: o.sample_limit,
            label_limit: o.label_limit,
            label_name_length_limit: o.label_name_length_limit,
            label_value_length_limit: o.label_value_length_limit,
            external_labels,
        }
    }
}

/// Counts of one successful append, for the synthetic series.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Appended {
    /// Samples in the body.
    pub scraped: usize,
    /// Samples kept after metric relabeling.
    pub post_relabel: usize,
    /// Series not in the cache before this scrape.
    pub series_added: usize,
    /// Samples of a series already seen earlier in the body (only the first is sent).
    pub duplicates: usize,
}

/// A failed append: why, and the counts up to the failure (Prometheus reports them on the
/// failed scrape's synthetic series: the failing sample counts as scraped unless it did not
/// parse, and as kept only if it was).
pub(crate) struct AppendFailure {
    pub error: ScrapeError,
    pub counts: Appended,
}

/// Appends the samples of `body` to `out` (stamped `scrape_ts_ms` unless the target's own
/// timestamps are honoured). On failure `out` may hold part of the samples; the caller discards
/// them.
pub(crate) fn append(
    body: &[u8],
    format: Format,
    ctx: &AppendContext<'_>,
    cache: &mut SeriesCache,
    scrape_ts_ms: i64,
    out: &mut BatchBuilder,
) -> Result<Appended, AppendFailure> {
    let mut counts = Appended::default();
    let mut over_limit = false;
    for entry in Parser::new(body, format) {
        let series = match entry {
            Ok(Entry::Series(s)) => s,
            Ok(Entry::Metadata(_)) => continue,
            Err(e) => return Err(AppendFailure { error: e.into(), counts }),
        };
        counts.scraped += 1;
        let mut new_series = false;
        let cached = match cache.lookup(series.raw()) {
            Lookup::Hit(c) => c,
            Lookup::Miss => {
                let built = build(&series, ctx).map_err(|error| AppendFailure { error, counts })?;
                cache.insert(series.raw(), built.clone());
                if built.is_some() {
                    counts.series_added += 1;
                    new_series = true;
                }
                built
            }
        };
        let Some(cached) = cached else { continue };
        counts.post_relabel += 1;
        if ctx.sample_limit > 0 && counts.post_relabel > ctx.sample_limit {
            // Keep reading to report how many samples the body had, as Prometheus does.
            over_limit = true;
        }
        if over_limit {
            continue;
        }
        let explicit_ts = if ctx.honor_timestamps { series.timestamp_ms } else { None };
        let kept = match explicit_ts {
            // Series with their own timestamps are not tracked for staleness (as Prometheus).
            Some(ts) => {
                cache.seen_with_timestamp(&cached);
                if ts == i64::MIN {
                    // A timestamp out of range (OpenMetrics seconds beyond i64 milliseconds read
                    // as the smallest i64, as Go does): Prometheus 3's storage refuses it as out
                    // of order, and does not count the series as added.
                    counts.series_added -= usize::from(new_series);
                    continue;
                }
                &cached
            }
            None => match cache.track(cached) {
                Some(kept) => kept,
                None => {
                    // The same series twice in one body: the first sample wins (what a
                    // Prometheus server stores), yet each occurrence counts in
                    // `scrape_samples_post_metric_relabeling`, as in Prometheus.
                    counts.duplicates += 1;
                    continue;
                }
            },
        };
        out.push_hashed(kept.encoded(), kept.fingerprint(), series.value, explicit_ts.unwrap_or(scrape_ts_ms));
    }
    if over_limit {
        return Err(AppendFailure {
            error: ScrapeError::SampleLimit { samples: counts.post_relabel, limit: ctx.sample_limit },
            counts,
        });
    }
    Ok(counts)
}

/// A series the cache does not know: its labels, merged with the target's, relabeled and
/// checked. `Ok(None)`: dropped by relabeling (or left without a name).
fn build(series: &Series<'_>, ctx: &AppendContext<'_>) -> Result<Option<CachedSeries>, ScrapeError> {
    let mut labels = LabelSet::new();
    labels.set("__name__", series.name());
    for (name, value) in series.labels() {
        if labels.contains(name) {
            return Err(ScrapeError::DuplicateLabel { line: series.line, name: name.to_string() });
        }
        labels.set(name, value.into_owned());
    }
    merge_target_labels(&mut labels, ctx.target_labels, ctx.honor_labels);
    if !ctx.metric_relabel.process(&mut labels) || labels.is_empty() {
        // Dropped, or every label removed (which Prometheus takes as a drop too).
        return Ok(None);
    }
    // A rule that removes the name but leaves other labels fails the scrape, as in Prometheus.
    let Some(name) = labels.get("__name__") else {
        return Err(ScrapeError::MissingMetricName { line: series.line, series: labels.to_string() });
    };
    if !is_valid_metric_name(name) {
        return Err(ScrapeError::InvalidLabelName { name: format!("__name__={name:?}"), series: labels.to_string() });
    }
    if let Some(bad) = labels.iter().find(|l| !is_valid_label_name(&l.name)) {
        return Err(ScrapeError::InvalidLabelName { name: bad.name.clone(), series: labels.to_string() });
    }
    check_label_limits(&labels, ctx)?;
    let encoded = encode_labels(&labels, ctx.external_labels);
    // The series' identity as sent, and its remote-write routing hash (see `encode::label_hash`).
    let fingerprint = label_hash(&encoded);
    Ok(Some(CachedSeries::new(fingerprint, &encoded)))
}

/// Adds the target's labels to a scraped series. `honor_labels`: the scraped value wins;
/// otherwise the target's wins and the scraped one moves to `exported_<name>` (more
/// `exported_` prefixes until the name is free; shorter names first).
pub(crate) fn merge_target_labels(labels: &mut LabelSet, target: &LabelSet, honor_labels: bool) {
    if honor_labels {
        for l in target {
            if !labels.contains(&l.name) {
                labels.set(&l.name, l.value.clone());
            }
        }
        return;
    }
    let mut conflicts = Vec::new();
    for l in target {
        // Even an equal value is kept as `exported_<name>`, as Prometheus does.
        if let Some(exposed) = labels.get(&l.name) {
            conflicts.push((l.name.clone(), exposed.to_string()));
        }
        labels.set(&l.name, l.value.clone());
    }
    conflicts.sort_by_key(|(name, _)| name.len());
    for (name, value) in conflicts {
        let mut renamed = name;
        loop {
            renamed.insert_str(0, "exported_");
            if !labels.contains(&renamed) {
                labels.set(&renamed, value);
                break;
            }
        }
    }
}

fn check_label_limits(labels: &LabelSet, ctx: &AppendContext<'_>) -> Result<(), ScrapeError> {
    let metric = labels.value("__name__");
    if let Some(limit) = ctx.label_limit.filter(|&l| l > 0) {
        if labels.len() > limit {
            return Err(ScrapeError::LabelLimit(format!(
                "label_limit exceeded (metric: {metric}, number of labels: {}, limit: {limit})",
                labels.len()
            )));
        }
    }
    for l in labels {
        if let Some(limit) = ctx.label_name_length_limit.filter(|&l| l > 0) {
            if l.name.len() > limit {
                return Err(ScrapeError::LabelLimit(format!(
                    "label_name_length_limit exceeded (metric: {metric}, label name: {}, limit: {limit})",
                    l.name
                )));
            }
        }
        if let Some(limit) = ctx.label_value_length_limit.filter(|&l| l > 0) {
            if l.value.len() > limit {
                return Err(ScrapeError::LabelLimit(format!(
                    "label_value_length_limit exceeded (metric: {metric}, label name: {}, value: {:?}, limit: {limit})",
                    l.name, l.value
                )));
            }
        }
    }
    Ok(())
}
