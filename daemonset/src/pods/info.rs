//! From a Pod's metadata (the compact [`Meta`] of [`lgtm_k8s::objects`], which the watch
//! deserializes the API server's JSON into) to the little the log labels need ([`PodInfo`]).
//!
//! `app` is the pod's `app.kubernetes.io/name` label, else its `app` label. The configured
//! `pod_labels` and `pod_annotations` become stream labels named after the key, sanitised to
//! Loki's (Prometheus's) rules: `[a-zA-Z_][a-zA-Z0-9_]*` (`app.kubernetes.io/version` becomes
//! `app_kubernetes_io_version`). A key the pod does not have, or with an empty value, adds
//! nothing; values are cut to [`MAX_LABEL_VALUE`] bytes (Loki refuses longer ones).

use lgtm_k8s::objects::Meta;

use crate::logs::labels::EXCLUDE_ANNOTATION;
use crate::logs::PodInfo;

/// Longest label value copied (Loki's default `max_label_value_length` is 2048).
pub const MAX_LABEL_VALUE: usize = 1024;

/// Which pod labels and annotations become stream labels, with their sanitised names.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    labels: Vec<(String, String)>,
    annotations: Vec<(String, String)>,
}

impl Selection {
    /// `pod_labels` and `pod_annotations` as configured; keys whose sanitised name is empty are
    /// ignored.
    pub fn new(pod_labels: &[String], pod_annotations: &[String]) -> Selection {
        let named = |keys: &[String]| -> Vec<(String, String)> {
            keys.iter().filter_map(|k| sanitize_label_name(k).map(|name| (k.clone(), name))).collect()
        };
        Selection { labels: named(pod_labels), annotations: named(pod_annotations) }
    }

    /// The labels of the streams of the pod with metadata `meta`.
    pub fn info(&self, meta: &Meta) -> PodInfo {
        let (labels, annotations) = (&meta.labels, &meta.annotations);
        let app = ["app.kubernetes.io/name", "app"]
            .iter()
            .find_map(|k| labels.get(k).filter(|v| !v.is_empty()))
            .map(|v| truncate(v).to_string());
        let mut extra = Vec::new();
        for (source, keys) in [(labels, &self.labels), (annotations, &self.annotations)] {
            for (key, name) in keys {
                if let Some(v) = source.get(key).filter(|v| !v.is_empty()) {
                    if !extra.iter().any(|(n, _)| n == name) {
                        extra.push((name.clone(), truncate(v).to_string()));
                    }
                }
            }
        }
        let excluded = annotations.get(EXCLUDE_ANNOTATION).is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
        PodInfo { app, extra, excluded }
    }
}

/// A Kubernetes label or annotation key as a Loki label name: every character outside
/// `[a-zA-Z0-9_]` becomes `_`, and a leading digit gets a `_` in front. `None` for an empty key.
pub fn sanitize_label_name(key: &str) -> Option<String> {
    if key.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(key.len() + 1);
    if key.starts_with(|c: char| c.is_ascii_digit()) {
        out.push('_');
    }
    out.extend(key.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }));
    Some(out)
}

fn truncate(v: &str) -> &str {
    if v.len() <= MAX_LABEL_VALUE {
        return v;
    }
    let mut end = MAX_LABEL_VALUE;
    while !v.is_char_boundary(end) {
        end -= 1;
    }
    &v[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> Meta {
        Meta {
            labels: labels.iter().copied().collect(),
            annotations: annotations.iter().copied().collect(),
            ..Default::default()
        }
    }

    #[test]
    fn label_names_follow_loki_rules() {
        let cases = [
            ("team", Some("team")),
            ("app.kubernetes.io/version", Some("app_kubernetes_io_version")),
            ("example.com/cost-center", Some("example_com_cost_center")),
            ("9lives", Some("_9lives")),
            ("_private", Some("_private")),
            ("ünïcode", Some("_n_code")),
            ("", None),
        ];
        for (key, want) in cases {
            assert_eq!(sanitize_label_name(key).as_deref(), want, "{key:?}");
        }
    }

    #[test]
    fn app_prefers_the_recommended_label_over_app() {
        let s = Selection::default();
        assert_eq!(
            s.info(&pod(&[("app.kubernetes.io/name", "shop-api"), ("app", "old")], &[])).app.as_deref(),
            Some("shop-api")
        );
        assert_eq!(s.info(&pod(&[("app", "cart")], &[])).app.as_deref(), Some("cart"));
        assert_eq!(s.info(&pod(&[("app.kubernetes.io/name", ""), ("app", "cart")], &[])).app.as_deref(), Some("cart"));
        assert_eq!(s.info(&pod(&[], &[])), PodInfo::default());
    }

    #[test]
    fn configured_labels_and_annotations_are_copied_under_sanitised_names() {
        let s = Selection::new(
            &["team".into(), "app.kubernetes.io/version".into(), "missing".into()],
            &["example.com/owner".into(), "team".into()],
        );
        let info = s.info(&pod(
            &[("team", "payments"), ("app.kubernetes.io/version", "1.4.2"), ("other", "x")],
            &[("example.com/owner", "ana"), ("team", "from-annotation")],
        ));
        assert_eq!(
            info.extra,
            vec![
                ("team".to_string(), "payments".to_string()),
                ("app_kubernetes_io_version".to_string(), "1.4.2".to_string()),
                ("example_com_owner".to_string(), "ana".to_string()),
            ],
            "a label wins over an annotation of the same name; absent keys add nothing"
        );
    }

    #[test]
    fn the_exclude_annotation_marks_the_pod_excluded_only_when_true() {
        let s = Selection::default();
        let cases = [
            (vec![("lgtm-agent.io/exclude", "true")], true),
            (vec![("lgtm-agent.io/exclude", "True ")], true),
            (vec![("lgtm-agent.io/exclude", "false")], false),
            (vec![("lgtm-agent.io/exclude", "")], false),
            (vec![("lgtm-agent.io/exclude", "yes")], false),
            (vec![("example.com/exclude", "true")], false),
            (vec![], false),
        ];
        for (annotations, want) in cases {
            assert_eq!(s.info(&pod(&[], &annotations)).excluded, want, "{annotations:?}");
        }
    }

    #[test]
    fn long_values_are_cut_at_a_character_boundary() {
        let long = "é".repeat(MAX_LABEL_VALUE);
        let s = Selection::new(&[], &["note".into()]);
        let info = s.info(&pod(&[], &[("note", &long)]));
        let v = &info.extra[0].1;
        assert!(v.len() <= MAX_LABEL_VALUE && v.len() >= MAX_LABEL_VALUE - 1);
        assert!(long.starts_with(v.as_str()));
    }
}
