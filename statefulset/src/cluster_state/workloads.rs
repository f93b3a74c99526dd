//! Deployments, ReplicaSets (owner only), DaemonSets, StatefulSets and Jobs, with the names and
//! labels of kube-state-metrics (`namespace` plus `deployment`, `replicaset`, `daemonset`,
//! `statefulset` or `job_name`).

use lgtm_k8s::objects::{DaemonSetInfo, DeploymentInfo, JobInfo, Meta, ReplicaSetInfo, StatefulSetInfo};

use super::frame::Frame;

fn ns_name(m: &Meta) -> (&str, &str) {
    (m.namespace(), m.name())
}

/// A count (0 when the object does not set it, see [`lgtm_k8s::objects`]).
fn num(v: i32) -> f64 {
    f64::from(v)
}

fn gen(v: i64) -> f64 {
    v as f64
}

fn bool_f(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
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

pub fn deployment(d: &DeploymentInfo, f: &mut Frame) {
    let (ns, name) = ns_name(&d.meta);
    let l = [("namespace", ns), ("deployment", name)];
    f.push("kube_deployment_status_replicas", &l, num(d.replicas));
    f.push("kube_deployment_status_replicas_ready", &l, num(d.ready_replicas));
    f.push("kube_deployment_status_replicas_available", &l, num(d.available_replicas));
    f.push("kube_deployment_status_replicas_unavailable", &l, num(d.unavailable_replicas));
    f.push("kube_deployment_status_replicas_updated", &l, num(d.updated_replicas));
    f.push("kube_deployment_status_observed_generation", &l, gen(d.observed_generation));
    f.push("kube_deployment_metadata_generation", &l, gen(d.generation));
    if let Some(r) = d.spec_replicas {
        f.push("kube_deployment_spec_replicas", &l, f64::from(r));
    }
    f.push("kube_deployment_spec_paused", &l, bool_f(d.paused));
    for c in d.conditions.iter() {
        // kube-state-metrics: `reason` is the condition's reason when the deployment controller
        // sets it (or empty, which is no label), else `unknown`.
        let reason = &*c.reason;
        let reason = if DEPLOYMENT_REASONS.contains(&reason) { reason } else { "unknown" };
        condition_series(f, "kube_deployment_status_condition", &[l[0], l[1], ("reason", reason)], &c.kind, &c.status);
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

pub fn daemonset(d: &DaemonSetInfo, f: &mut Frame) {
    let (ns, name) = ns_name(&d.meta);
    let l = [("namespace", ns), ("daemonset", name)];
    f.push("kube_daemonset_status_current_number_scheduled", &l, num(d.current_number_scheduled));
    f.push("kube_daemonset_status_desired_number_scheduled", &l, num(d.desired_number_scheduled));
    f.push("kube_daemonset_status_number_available", &l, num(d.number_available));
    f.push("kube_daemonset_status_number_misscheduled", &l, num(d.number_misscheduled));
    f.push("kube_daemonset_status_number_ready", &l, num(d.number_ready));
    f.push("kube_daemonset_status_number_unavailable", &l, num(d.number_unavailable));
    f.push("kube_daemonset_status_updated_number_scheduled", &l, num(d.updated_number_scheduled));
    f.push("kube_daemonset_status_observed_generation", &l, gen(d.observed_generation));
    f.push("kube_daemonset_metadata_generation", &l, gen(d.generation));
}

pub fn statefulset(s: &StatefulSetInfo, f: &mut Frame) {
    let (ns, name) = ns_name(&s.meta);
    let l = [("namespace", ns), ("statefulset", name)];
    f.push("kube_statefulset_status_replicas", &l, num(s.replicas));
    f.push("kube_statefulset_status_replicas_available", &l, num(s.available_replicas));
    f.push("kube_statefulset_status_replicas_current", &l, num(s.current_replicas));
    f.push("kube_statefulset_status_replicas_ready", &l, num(s.ready_replicas));
    f.push("kube_statefulset_status_replicas_updated", &l, num(s.updated_replicas));
    f.push("kube_statefulset_status_observed_generation", &l, gen(s.observed_generation));
    f.push("kube_statefulset_metadata_generation", &l, gen(s.generation));
    if let Some(r) = s.spec_replicas {
        f.push("kube_statefulset_replicas", &l, f64::from(r));
    }
    // kube-state-metrics writes both also before the controller has set them (an empty
    // `revision`, i.e. no label).
    for (metric, rev) in [
        ("kube_statefulset_status_current_revision", &s.current_revision),
        ("kube_statefulset_status_update_revision", &s.update_revision),
    ] {
        f.push(metric, &[l[0], l[1], ("revision", rev)], 1.0);
    }
}

pub fn job(j: &JobInfo, f: &mut Frame) {
    let (ns, name) = ns_name(&j.meta);
    let l = [("namespace", ns), ("job_name", name)];
    f.push("kube_job_status_succeeded", &l, num(j.succeeded));
    job_status_failed(f, &l, j);
    f.push("kube_job_status_active", &l, num(j.active));
    if let Some(t) = j.start_time {
        f.push("kube_job_status_start_time", &l, t as f64);
    }
    if let Some(t) = j.completion_time {
        f.push("kube_job_status_completion_time", &l, t as f64);
    }
    if let Some(c) = j.completions {
        f.push("kube_job_spec_completions", &l, f64::from(c));
    }
    for c in j.conditions.iter() {
        let metric = match &*c.kind {
            "Complete" => "kube_job_complete",
            "Failed" => "kube_job_failed",
            _ => continue,
        };
        let mut with = l.to_vec();
        for (label, value) in [("true", "True"), ("false", "False"), ("unknown", "Unknown")] {
            with.push(("condition", label));
            f.push(metric, &with, bool_f(&*c.status == value));
            with.pop();
        }
    }
    let owners = j.owners.iter().map(|o| (&*o.kind, &*o.name, o.controller));
    owner_series(f, "kube_job_owner", &l, owners);
}

/// `kube_job_status_failed` as kube-state-metrics writes it: no failed pod, one series of 0
/// without `reason`; otherwise, for each `Failed` condition, one series per known reason (1 for
/// the condition's, 0 for the others), and when no known reason matched, one series with an
/// empty `reason` (no label) holding the count of failed pods.
fn job_status_failed(f: &mut Frame, l: &[(&str, &str)], j: &JobInfo) {
    let failed = num(j.failed);
    if failed == 0.0 {
        f.push("kube_job_status_failed", l, 0.0);
        return;
    }
    let mut known = false;
    for c in j.conditions.iter().filter(|c| &*c.kind == "Failed") {
        for reason in JOB_FAILURE_REASONS {
            let is = &*c.reason == reason;
            known |= is;
            f.push("kube_job_status_failed", &[l[0], l[1], ("reason", reason)], bool_f(is));
        }
    }
    if !known {
        f.push("kube_job_status_failed", l, failed);
    }
}
