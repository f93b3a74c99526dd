//! One Kubernetes event as one Loki entry: stream labels
//! `{cluster, namespace, job="integrations/kubernetes/eventhandler", type}` and a logfmt line
//! with the involved object, reason, count and message (keys as Grafana's event handler and
//! Alloy's `loki.source.kubernetes_events` write them, so their queries keep working).

use std::fmt::Write;

use k8s_openapi::api::events::v1::Event;

pub const JOB: &str = "integrations/kubernetes/eventhandler";

/// When the event last happened (ns since the epoch): the latest of its series' last
/// observation, its deprecated last timestamp, its event time and its creation.
pub fn event_time_nanos(e: &Event) -> i64 {
    let candidates = [
        e.series.as_ref().map(|s| s.last_observed_time.0),
        e.deprecated_last_timestamp.as_ref().map(|t| t.0),
        e.event_time.as_ref().map(|t| t.0),
        e.metadata.creation_timestamp.as_ref().map(|t| t.0),
    ];
    candidates.into_iter().flatten().map(|t| t.as_nanosecond() as i64).max().unwrap_or(0)
}

/// How many times it happened.
pub fn event_count(e: &Event) -> i32 {
    e.series.as_ref().map(|s| s.count).or(e.deprecated_count).filter(|c| *c > 0).unwrap_or(1)
}

/// The stream labels (unsorted pairs; the sink's selector text sorts them).
pub fn stream_labels(cluster: &str, e: &Event) -> Vec<(String, String)> {
    let namespace = e
        .regarding
        .as_ref()
        .and_then(|r| r.namespace.clone())
        .or_else(|| e.metadata.namespace.clone())
        .unwrap_or_default();
    vec![
        ("cluster".into(), cluster.into()),
        ("job".into(), JOB.into()),
        ("namespace".into(), namespace),
        ("type".into(), e.type_.clone().unwrap_or_else(|| "Normal".into())),
    ]
}

/// Appends ` key=value`, quoting the value when logfmt needs it.
fn field(out: &mut String, key: &str, value: &str) {
    if !out.is_empty() {
        out.push(' ');
    }
    out.push_str(key);
    out.push('=');
    let plain =
        !value.is_empty() && value.chars().all(|c| c > ' ' && c != '"' && c != '=' && c != '\\' && c != '\u{7f}');
    if plain {
        out.push_str(value);
        return;
    }
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The logfmt line: `name kind action objectAPIversion objectRV reason type reportingcontroller
/// reportinginstance sourcecomponent sourcehost count msg` (empty ones left out, except `msg`).
pub fn line(e: &Event) -> String {
    let mut out = String::with_capacity(256);
    let r = e.regarding.clone().unwrap_or_default();
    let source = e.deprecated_source.clone().unwrap_or_default();
    let optional = [
        ("name", r.name),
        ("kind", r.kind),
        ("action", e.action.clone()),
        ("objectAPIversion", r.api_version),
        ("objectRV", r.resource_version),
        ("reason", e.reason.clone()),
        ("type", e.type_.clone()),
        ("reportingcontroller", e.reporting_controller.clone()),
        ("reportinginstance", e.reporting_instance.clone()),
        ("sourcecomponent", source.component),
        ("sourcehost", source.host),
    ];
    for (k, v) in optional {
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            field(&mut out, k, &v);
        }
    }
    field(&mut out, "count", &event_count(e).to_string());
    field(&mut out, "msg", e.note.as_deref().unwrap_or_default());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(v: serde_json::Value) -> Event {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn line_is_logfmt_with_kind_name_reason_count_and_quoted_message() {
        let e = event(serde_json::json!({
            "metadata": {"name": "web-0.17a", "namespace": "shop", "resourceVersion": "7"},
            "eventTime": "2025-01-02T03:04:05.000006Z",
            "regarding": {"kind": "Pod", "name": "web-0", "namespace": "shop", "apiVersion": "v1"},
            "reason": "BackOff", "type": "Warning", "action": "Restarting",
            "reportingController": "kubelet", "reportingInstance": "node-a",
            "series": {"count": 4, "lastObservedTime": "2025-01-02T03:09:00.000000Z"},
            "note": "Back-off restarting \"app\"\nnow"
        }));
        assert_eq!(
            line(&e),
            r#"name=web-0 kind=Pod action=Restarting objectAPIversion=v1 reason=BackOff type=Warning reportingcontroller=kubelet reportinginstance=node-a count=4 msg="Back-off restarting \"app\"\nnow""#
        );
        assert_eq!(event_time_nanos(&e), 1_735_787_340_000_000_000);
        let labels = stream_labels("c1", &e);
        assert_eq!(
            lgtm_pipeline::proto::loki_labels_string(&labels),
            r#"{cluster="c1", job="integrations/kubernetes/eventhandler", namespace="shop", type="Warning"}"#
        );
    }

    #[test]
    fn deprecated_fields_and_defaults() {
        let e = event(serde_json::json!({
            "metadata": {"name": "x", "namespace": "kube-system", "creationTimestamp": "2025-01-01T00:00:00Z"},
            "deprecatedCount": 2, "deprecatedSource": {"component": "scheduler"}, "note": ""
        }));
        assert_eq!(line(&e), r#"sourcecomponent=scheduler count=2 msg="""#);
        assert_eq!(stream_labels("c", &e)[3].1, "Normal");
        assert_eq!(stream_labels("c", &e)[2].1, "kube-system");
    }
}
