//! From discovered labels to a [`Target`]: defaults, target relabeling, checks, URL.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{ScrapeOptions, Target};
use crate::labels::{LabelSet, PackedLabels};
use crate::parser::is_valid_label_name;
use crate::relabel::{RelabelError, Relabeler};

pub const ADDRESS_LABEL: &str = "__address__";
pub const SCHEME_LABEL: &str = "__scheme__";
pub const METRICS_PATH_LABEL: &str = "__metrics_path__";
pub const SCRAPE_INTERVAL_LABEL: &str = "__scrape_interval__";
pub const SCRAPE_TIMEOUT_LABEL: &str = "__scrape_timeout__";
pub const PARAM_LABEL_PREFIX: &str = "__param_";
pub const META_LABEL_PREFIX: &str = "__meta_";

/// A target that cannot be scraped. The message names the label at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("target {labels}: {message}")]
pub struct TargetError {
    /// The labels before relabeling.
    pub labels: String,
    pub message: String,
}

fn format_duration(d: std::time::Duration) -> String {
    lgtm_config::Duration::from_millis(d.as_millis() as u64).to_string()
}

fn parse_duration(labels: &LabelSet, name: &str) -> Result<std::time::Duration, String> {
    let text = labels.value(name);
    let d: lgtm_config::Duration = text.parse().map_err(|e| format!("{name}: {e}"))?;
    if d.get().is_zero() {
        return Err(format!("{name}: must not be 0"));
    }
    Ok(d.get())
}

/// Applies the scrape options' defaults and `relabeler` (the group's `relabel_configs`) to one
/// discovered target. `Ok(None)`: relabeling dropped it.
///
/// As Prometheus: `job`, `__scheme__`, `__metrics_path__`, `__scrape_interval__`,
/// `__scrape_timeout__` and `__param_*` default from the options; after relabeling the target
/// needs a non-empty `__address__` without a path, `__meta_*` labels are removed, `instance`
/// defaults to `__address__`, and the labels starting with `__` do not reach the series.
pub fn populate(
    target: &BTreeMap<String, String>,
    group_labels: &BTreeMap<String, String>,
    options: &Arc<ScrapeOptions>,
    relabeler: &Relabeler,
    source: &str,
) -> Result<Option<Target>, TargetError> {
    let metric_relabel = || Relabeler::compile(&options.metric_relabel_configs);
    populate_with(target, group_labels, options, relabeler, metric_relabel, PackedLabels::pack, &source.into())
}

/// [`populate`], with the options' `metric_relabel_configs` compiled by `metric_relabel`
/// (called once the target passed every other check), so that whoever populates a whole group
/// compiles them once and its targets share them: compiled rules cost kilobytes (8.7 KiB for
/// one `drop` rule with a two-branch regex), which every target kept a copy of. Likewise the
/// discovered labels are packed by `pack`: a group's [`crate::labels::CommonLabels::pack`]
/// shares what its targets have in common. Whoever relabels a group's targets for another purpose
/// (learning their identities to shard them) also compiles the rules once.
pub fn populate_with(
    target: &BTreeMap<String, String>,
    group_labels: &BTreeMap<String, String>,
    options: &Arc<ScrapeOptions>,
    relabeler: &Relabeler,
    metric_relabel: impl FnOnce() -> Result<Relabeler, RelabelError>,
    pack: impl FnOnce(&LabelSet) -> PackedLabels,
    source: &Arc<str>,
) -> Result<Option<Target>, TargetError> {
    let mut labels = discovered_labels(target, group_labels, options);
    // Packed before relabeling rather than cloned: errors, the rare case, unpack them.
    let discovered = pack(&labels);
    let fail = |message: String| TargetError { labels: discovered.unpack().to_string(), message };

    if !relabeler.process(&mut labels) {
        return Ok(None);
    }
    let address = labels.value(ADDRESS_LABEL).to_string();
    if address.is_empty() {
        return Err(fail("no __address__ after relabeling".into()));
    }
    if address.contains('/') {
        return Err(fail(format!("__address__ {address:?} must be host:port without a path")));
    }
    let interval = parse_duration(&labels, SCRAPE_INTERVAL_LABEL).map_err(fail)?;
    let timeout = parse_duration(&labels, SCRAPE_TIMEOUT_LABEL).map_err(fail)?;
    if timeout > interval {
        return Err(fail(format!(
            "scrape timeout {} is greater than the interval {}",
            format_duration(timeout),
            format_duration(interval)
        )));
    }
    labels.retain(|l| !l.name.starts_with(META_LABEL_PREFIX));
    if !labels.contains("instance") {
        labels.set("instance", address.clone());
    }
    if let Some(bad) = labels.iter().find(|l| !is_valid_label_name(&l.name)) {
        return Err(fail(format!("invalid label name {:?} after relabeling", bad.name)));
    }

    let scheme = labels.value(SCHEME_LABEL);
    let mut path = labels.value(METRICS_PATH_LABEL).to_string();
    if !path.starts_with('/') {
        path.insert(0, '/');
    }
    let mut url = reqwest::Url::parse(&format!("{scheme}://{address}{path}"))
        .map_err(|e| fail(format!("invalid scrape URL {scheme}://{address}{path}: {e}")))?;
    let params: Vec<(String, String)> = labels
        .iter()
        .filter_map(|l| l.name.strip_prefix(PARAM_LABEL_PREFIX).map(|p| (p.to_string(), l.value.clone())))
        .collect();
    if !params.is_empty() {
        let mut query = url.query_pairs_mut();
        for (k, v) in &params {
            query.append_pair(k, v);
        }
    }

    let metric_relabel = metric_relabel().map_err(|e| fail(format!("metric_relabel_configs: {e}")))?;
    let mut public = labels;
    public.retain(|l| !l.name.starts_with("__"));
    // Kept for the target's life, after most labels were removed: a Kubernetes target would
    // keep the room of its ~50 labels before relabeling, about 3 KiB.
    public.shrink_to_fit();
    Ok(Some(Target {
        labels: public,
        discovered_labels: discovered,
        url,
        interval,
        timeout,
        options: options.clone(),
        metric_relabel,
        source: source.clone(),
    }))
}

/// A target's labels before relabeling, as its `discovered_labels` keep them: the group's
/// labels, the target's (which win), and the options' defaults for those still missing.
pub(crate) fn discovered_labels(
    target: &BTreeMap<String, String>,
    group_labels: &BTreeMap<String, String>,
    options: &ScrapeOptions,
) -> LabelSet {
    let mut labels = LabelSet::from_pairs(group_labels.iter().chain(target.iter()).map(|(k, v)| (k, v.clone())));
    let defaults = [
        ("job", options.job.clone()),
        (SCRAPE_INTERVAL_LABEL, format_duration(options.interval)),
        (SCRAPE_TIMEOUT_LABEL, format_duration(options.timeout)),
        (METRICS_PATH_LABEL, options.metrics_path.clone()),
        (SCHEME_LABEL, options.scheme.clone()),
    ];
    for (name, value) in defaults {
        if !labels.contains(name) {
            labels.set(name, value);
        }
    }
    for (param, value) in &options.params {
        let name = format!("{PARAM_LABEL_PREFIX}{param}");
        if !labels.contains(&name) {
            labels.set(&name, value.clone());
        }
    }
    labels
}

#[cfg(test)]
mod tests {
    use lgtm_config::RelabelConfig;

    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn run(
        target: &[(&str, &str)],
        options: ScrapeOptions,
        rules: Vec<RelabelConfig>,
    ) -> Result<Option<Target>, TargetError> {
        let relabeler = Relabeler::compile(&rules).unwrap();
        populate(&map(target), &map(&[("env", "dev")]), &Arc::new(options), &relabeler, "test")
    }

    #[test]
    fn defaults_fill_in_and_internal_labels_are_hidden() {
        let t = run(&[("__address__", "10.0.0.1:9100"), ("__meta_x", "y")], ScrapeOptions::default(), vec![])
            .unwrap()
            .unwrap();
        assert_eq!(t.labels.to_string(), r#"{env="dev", instance="10.0.0.1:9100", job="static"}"#);
        assert_eq!(t.url.as_str(), "http://10.0.0.1:9100/metrics");
        assert_eq!(t.interval, std::time::Duration::from_secs(30));
        let discovered = t.discovered_labels.unpack();
        assert_eq!(discovered.value("__meta_x"), "y");
        assert_eq!(discovered.value("__scrape_interval__"), "30s");
    }

    #[test]
    fn a_target_keeps_no_room_for_the_labels_it_dropped() {
        let mut discovered = vec![("__address__".to_string(), "10.42.0.7:8080".to_string())];
        discovered.extend((0..45).map(|i| (format!("__meta_kubernetes_pod_label_l{i}"), "v".to_string())));
        let refs: Vec<(&str, &str)> = discovered.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        let t = run(&refs, ScrapeOptions::default(), vec![]).unwrap().unwrap();
        assert_eq!(t.labels.len(), 3);
        // Only the three labels' room: measured 181 bytes, where the set kept the room of the 51
        // labels before relabeling (3,109 bytes).
        let strings: usize = t.labels.iter().map(|l| l.name.capacity() + l.value.capacity()).sum();
        let exact = t.labels.len() * std::mem::size_of::<lgtm_pipeline::proto::Label>() + strings;
        assert_eq!(t.labels.heap_bytes(), exact, "{}", t.labels);
    }

    #[test]
    fn labels_and_relabeling_override_scheme_path_params_interval() {
        let mut options = ScrapeOptions::default();
        options.params.insert("module".into(), "http_2xx".into());
        let rules = vec![
            RelabelConfig {
                target_label: Some("__metrics_path__".into()),
                replacement: Some("/probe".into()),
                ..Default::default()
            },
            RelabelConfig {
                source_labels: vec!["__meta_target".into()],
                target_label: Some("__param_target".into()),
                ..Default::default()
            },
        ];
        let t = run(
            &[
                ("__address__", "blackbox:9115"),
                ("__scheme__", "https"),
                ("__meta_target", "example.com"),
                ("__scrape_interval__", "1m"),
                ("__scrape_timeout__", "15s"),
                ("instance", "custom"),
                ("job", "probe"),
            ],
            options,
            rules,
        )
        .unwrap()
        .unwrap();
        assert_eq!(t.url.as_str(), "https://blackbox:9115/probe?module=http_2xx&target=example.com");
        assert_eq!(t.interval, std::time::Duration::from_secs(60));
        assert_eq!(t.timeout, std::time::Duration::from_secs(15));
        assert_eq!(t.labels.to_string(), r#"{env="dev", instance="custom", job="probe"}"#);
    }

    #[test]
    fn relabeling_can_drop_a_target() {
        let rules = vec![RelabelConfig {
            source_labels: vec!["__address__".into()],
            regex: Some("10\\..*".into()),
            action: Some("drop".into()),
            ..Default::default()
        }];
        assert!(run(&[("__address__", "10.0.0.1:80")], ScrapeOptions::default(), rules).unwrap().is_none());
    }

    #[test]
    fn invalid_targets_are_errors_naming_the_problem() {
        let table: &[(&[(&str, &str)], &str)] = &[
            (&[("__address__", "")], "no __address__"),
            (&[("__address__", "host:80/path")], "without a path"),
            (&[("__address__", "h:1"), ("__scrape_interval__", "often")], "__scrape_interval__"),
            (&[("__address__", "h:1"), ("__scrape_interval__", "0s")], "must not be 0"),
            (&[("__address__", "h:1"), ("__scrape_interval__", "5s"), ("__scrape_timeout__", "10s")], "greater"),
        ];
        for (target, want) in table {
            let err = run(target, ScrapeOptions::default(), vec![]).unwrap_err();
            assert!(err.message.contains(want), "{err}");
        }
    }

    #[test]
    fn offset_is_stable_and_within_the_interval() {
        let t = run(&[("__address__", "a:1")], ScrapeOptions::default(), vec![]).unwrap().unwrap();
        let interval = t.interval.as_nanos();
        for now in [0u128, 1, 29_999_999_999, 1_700_000_000_123_456_789] {
            let off = t.offset(7, now).as_nanos();
            assert!(off <= interval);
            // The first scrape always lands on the same phase of the interval.
            assert_eq!((now + off) % interval, u128::from(t.key() ^ 7) % interval);
        }
    }
}
