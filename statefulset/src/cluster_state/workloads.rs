//! Deployments, ReplicaSets (owner only), DaemonSets, StatefulSets and Jobs, with the names and
//! labels of kube-state-metrics (`namespace` plus `deployment`, `replicaset`, `daemonset`,
//! `statefulset` or `job_name`).

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use lgtm_k8s::objects::ReplicaSetInfo;

use super::frame::Frame;

fn ns_name(m: &ObjectMeta) -> (&str, &str) {
    (m.namespace.as_deref().unwrap_or_default(), m.name.as_deref().unwrap_or_default())
}

fn num(v: Option<i32>) -> f64 {
    f64::from(v.unwrap_or(0))
}

fn gen(v: Option<i64>) -> f64 {
    v.unwrap_or(0) as f64
}

fn bool_f(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

pub(crate) fn seconds(t: &Time) -> f64 {
    t.0.as_second() as f64
}

/// `name{labels, condition, status=true|false|unknown}`, 1 for the condition's status.
pub(crate) fn condition_series(f: &mut Frame, name: &str, labels: &[(&str, &str)], condition: &str, status: &str) {
    let mut l: Vec<(&str, &str)> = labels.to_vec();
    l.push(("condition", condition));
    for (label, value) in [("true", "True"), ("false", "False"), ("unknown", "Unknown")] {
        l.push(("status", label));
        f.push(name, &l, bool_f(status == value));
        l.pop();
    }
}

pub fn deployment(d: &Deployment, f: &mut Frame) {
    let (ns, name) = ns_name(&d.metadata);
    let l = [("namespace", ns), ("deployment", name)];
    let s = d.status.clone().unwrap_or_default();
    f.push("kube_deployment_status_replicas", &l, num(s.replicas));
    f.push("kube_deployment_status_replicas_ready", &l, num(s.ready_replicas));
    f.push("kube_deployment_status_replicas_available", &l, num(s.available_replicas));
    f.push("kube_deployment_status_replicas_unavailable", &l, num(s.unavailable_replicas));
    f.push("kube_deployment_status_replicas_updated", &l, num(s.updated_replicas));
    f.push("kube_deployment_status_observed_generation", &l, gen(s.observed_generation));
    f.push("kube_deployment_metadata_generation", &l, gen(d.metadata.generation));
    if let Some(r) = d.spec.as_ref().and_then(|spec| spec.replicas) {
        f.push("kube_deployment_spec_replicas", &l, f64::from(r));
    }
    let paused = d.spec.as_ref().and_then(|spec| spec.paused).unwrap_or(false);
    f.push("kube_deployment_spec_paused", &l, bool_f(paused));
    for c in s.conditions.iter().flatten() {
        // kube-state-metrics: `reason` is the condition's reason when the deployment controller
        // sets it (or empty, which is no label), else `unknown`.
        let reason = c.reason.as_deref().unwrap_or_default();
        let reason = if DEPLOYMENT_REASONS.contains(&reason) { reason } else { "unknown" };
        condition_series(f, "kube_deployment_status_condition", &[l[0], l[1], ("reason", reason)], &c.type_, &c.status);
    }
}

/// The condition reasons the deployment controller sets, as kube-state-metrics lists them; any
/// other is reported as `unknown`.
const DEPLOYMENT_REASONS: [&str; 11] = [
    "ReplicaSetUpdated",
    "ReplicaSetCreateError",
    "NewReplicaSetCreated",
    "FoundNewReplicaSet",
    "NewReplicaSetAvailable",
    "ProgressDeadlineExceeded",
    "DeploymentPaused",
    "DeploymentResumed",
    "MinimumReplicasAvailable",
    "MinimumReplicasUnavailable",
    "",
];

/// The reasons of a Job's `Failed` condition kube-state-metrics reports one series each for.
const JOB_FAILURE_REASONS: [&str; 3] = ["BackoffLimitExceeded", "DeadlineExceeded", "Evicted"];

pub fn replicaset(r: &ReplicaSetInfo, f: &mut Frame) {
    let l = [("namespace", r.meta.namespace()), ("replicaset", r.meta.name())];
    let owners = r.owners.iter().map(|o| (&*o.kind, &*o.name, o.controller));
    owner_series(f, "kube_replicaset_owner", &l, owners);
}

/// `<name>{labels, owner_kind, owner_name, owner_is_controller}`: one series per owner
/// reference (kind, name, controller; `owner_is_controller` `false` when the reference does not
/// say), or one whose three owner labels are empty (no labels once ingested) when there is none.
/// kube-state-metrics has written empty values there for Pods, ReplicaSets and Jobs alike since
/// v2.8 (`<none>` before).
pub(crate) fn owner_series<'a>(
    f: &mut Frame,
    name: &str,
    labels: &[(&'a str, &'a str)],
    owners: impl Iterator<Item = (&'a str, &'a str, Option<bool>)>,
) {
    let mut l: Vec<(&str, &str)> = labels.to_vec();
    let mut any = false;
    for (kind, owner, controller) in owners {
        any = true;
        let controller = if controller.unwrap_or(false) { "true" } else { "false" };
        l.truncate(labels.len());
        l.extend([("owner_kind", kind), ("owner_name", owner), ("owner_is_controller", controller)]);
        f.push(name, &l, 1.0);
    }
    if !any {
        l.extend([("owner_kind", ""), ("owner_name", ""), ("owner_is_controller", "")]);
        f.push(name, &l, 1.0);
    }
}

pub fn daemonset(d: &DaemonSet, f: &mut Frame) {
    let (ns, name) = ns_name(&d.metadata);
    let l = [("namespace", ns), ("daemonset", name)];
    let s = d.status.clone().unwrap_or_default();
    f.push("kube_daemonset_status_current_number_scheduled", &l, f64::from(s.current_number_scheduled));
    f.push("kube_daemonset_status_desired_number_scheduled", &l, f64::from(s.desired_number_scheduled));
    f.push("kube_daemonset_status_number_available", &l, num(s.number_available));
    f.push("kube_daemonset_status_number_misscheduled", &l, f64::from(s.number_misscheduled));
    f.push("kube_daemonset_status_number_ready", &l, f64::from(s.number_ready));
    f.push("kube_daemonset_status_number_unavailable", &l, num(s.number_unavailable));
    f.push("kube_daemonset_status_updated_number_scheduled", &l, num(s.updated_number_scheduled));
    f.push("kube_daemonset_status_observed_generation", &l, gen(s.observed_generation));
    f.push("kube_daemonset_metadata_generation", &l, gen(d.metadata.generation));
}

pub fn statefulset(s: &StatefulSet, f: &mut Frame) {
    let (ns, name) = ns_name(&s.metadata);
    let l = [("namespace", ns), ("statefulset", name)];
    let st = s.status.clone().unwrap_or_default();
    f.push("kube_statefulset_status_replicas", &l, f64::from(st.replicas));
    f.push("kube_statefulset_status_replicas_available", &l, num(st.available_replicas));
    f.push("kube_statefulset_status_replicas_current", &l, num(st.current_replicas));
    f.push("kube_statefulset_status_replicas_ready", &l, num(st.ready_replicas));
    f.push("kube_statefulset_status_replicas_updated", &l, num(st.updated_replicas));
    f.push("kube_statefulset_status_observed_generation", &l, gen(st.observed_generation));
    f.push("kube_statefulset_metadata_generation", &l, gen(s.metadata.generation));
    if let Some(r) = s.spec.as_ref().and_then(|spec| spec.replicas) {
        f.push("kube_statefulset_replicas", &l, f64::from(r));
    }
    // kube-state-metrics writes both also before the controller has set them (an empty
    // `revision`, i.e. no label).
    for (metric, rev) in [
        ("kube_statefulset_status_current_revision", &st.current_revision),
        ("kube_statefulset_status_update_revision", &st.update_revision),
    ] {
        f.push(metric, &[l[0], l[1], ("revision", rev.as_deref().unwrap_or_default())], 1.0);
    }
}

pub fn job(j: &Job, f: &mut Frame) {
    let (ns, name) = ns_name(&j.metadata);
    let l = [("namespace", ns), ("job_name", name)];
    let s = j.status.clone().unwrap_or_default();
    f.push("kube_job_status_succeeded", &l, num(s.succeeded));
    job_status_failed(f, &l, &s);
    f.push("kube_job_status_active", &l, num(s.active));
    if let Some(t) = &s.start_time {
        f.push("kube_job_status_start_time", &l, seconds(t));
    }
    if let Some(t) = &s.completion_time {
        f.push("kube_job_status_completion_time", &l, seconds(t));
    }
    if let Some(c) = j.spec.as_ref().and_then(|s| s.completions) {
        f.push("kube_job_spec_completions", &l, f64::from(c));
    }
    for c in s.conditions.iter().flatten() {
        let metric = match c.type_.as_str() {
            "Complete" => "kube_job_complete",
            "Failed" => "kube_job_failed",
            _ => continue,
        };
        let mut with = l.to_vec();
        for (label, value) in [("true", "True"), ("false", "False"), ("unknown", "Unknown")] {
            with.push(("condition", label));
            f.push(metric, &with, bool_f(c.status == value));
            with.pop();
        }
    }
    let owners = j.metadata.owner_references.iter().flatten();
    owner_series(f, "kube_job_owner", &l, owners.map(|o| (o.kind.as_str(), o.name.as_str(), o.controller)));
}

/// `kube_job_status_failed` as kube-state-metrics writes it: no failed pod, one series of 0
/// without `reason`; otherwise, for each `Failed` condition, one series per known reason (1 for
/// the condition's, 0 for the others), and when no known reason matched, one series with an
/// empty `reason` (no label) holding the count of failed pods.
fn job_status_failed(f: &mut Frame, l: &[(&str, &str)], s: &k8s_openapi::api::batch::v1::JobStatus) {
    let failed = num(s.failed);
    if failed == 0.0 {
        f.push("kube_job_status_failed", l, 0.0);
        return;
    }
    let mut known = false;
    for c in s.conditions.iter().flatten().filter(|c| c.type_ == "Failed") {
        for reason in JOB_FAILURE_REASONS {
            let is = c.reason.as_deref() == Some(reason);
            known |= is;
            f.push("kube_job_status_failed", &[l[0], l[1], ("reason", reason)], bool_f(is));
        }
    }
    if !known {
        f.push("kube_job_status_failed", l, failed);
    }
}
