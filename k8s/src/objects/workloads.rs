//! Deployments, DaemonSets, StatefulSets and Jobs as cluster state reads them: the counts,
//! generations, revisions, conditions and times of kube-state-metrics' `kube_deployment_*`,
//! `kube_daemonset_*`, `kube_statefulset_*` and `kube_job_*` families, nothing else. The pod
//! template, selector and volume claim templates of each object are skipped as they arrive
//! (a slimmed k8s-openapi object still carried their empty shells, and every `Option` of the
//! structs around them).
//!
//! A count the object does not set reads 0, as the series report it (`unwrap_or(0)` on the
//! k8s-openapi field); what the series tell apart from 0 (`spec.replicas`, `spec.completions`,
//! a Job's times) stays an `Option`.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::de::Deserializer;
use serde::Deserialize;

use super::owned::{owner_refs, WireOwnedMeta};
use super::{Compact, Meta, OwnerRef, Shared};

/// A status condition (Deployment, Job, Node): `""` for a field not set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Condition {
    /// `type`.
    pub kind: Shared,
    pub status: Shared,
    pub reason: Shared,
}

/// A condition as it arrives (every field may be missing or `null`, as k8s-openapi reads it).
#[derive(Deserialize)]
pub(super) struct WireCondition {
    #[serde(rename = "type")]
    kind: Option<Shared>,
    status: Option<Shared>,
    reason: Option<Shared>,
}

pub(super) fn conditions(list: Option<Vec<WireCondition>>) -> Box<[Condition]> {
    list.unwrap_or_default()
        .into_iter()
        .map(|c| Condition {
            kind: c.kind.unwrap_or_default(),
            status: c.status.unwrap_or_default(),
            reason: c.reason.unwrap_or_default(),
        })
        .collect()
}

/// The `spec` of the four kinds in one type, as their `status` below: each kind has only some
/// of the fields (the others stay `None`), and no name is used by two kinds for different types.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct WireSpec {
    replicas: Option<i32>,
    paused: Option<bool>,
    completions: Option<i32>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct WireStatus {
    observed_generation: Option<i64>,
    conditions: Option<Vec<WireCondition>>,
    // Deployment, StatefulSet.
    replicas: Option<i32>,
    ready_replicas: Option<i32>,
    available_replicas: Option<i32>,
    unavailable_replicas: Option<i32>,
    updated_replicas: Option<i32>,
    current_replicas: Option<i32>,
    current_revision: Option<Shared>,
    update_revision: Option<Shared>,
    // DaemonSet.
    current_number_scheduled: Option<i32>,
    desired_number_scheduled: Option<i32>,
    number_available: Option<i32>,
    number_misscheduled: Option<i32>,
    number_ready: Option<i32>,
    number_unavailable: Option<i32>,
    updated_number_scheduled: Option<i32>,
    // Job.
    succeeded: Option<i32>,
    failed: Option<i32>,
    active: Option<i32>,
    start_time: Option<Time>,
    completion_time: Option<Time>,
}

/// Any of the four kinds as it arrives.
#[derive(Deserialize)]
struct WireWorkload {
    #[serde(default)]
    metadata: WireOwnedMeta,
    spec: Option<WireSpec>,
    status: Option<WireStatus>,
}

impl WireWorkload {
    /// Metadata (namespace and name), owners, generation, resource version, spec, status.
    fn read<'de, D: Deserializer<'de>>(d: D) -> Result<Parts, D::Error> {
        let w = WireWorkload::deserialize(d)?;
        let m = w.metadata;
        let meta = Meta { namespace: super::shared(m.namespace), name: super::boxed(m.name), ..Meta::default() };
        Ok(Parts {
            meta,
            owners: owner_refs(m.owner_references),
            generation: m.generation.unwrap_or(0),
            resource_version: m.resource_version,
            spec: w.spec.unwrap_or_default(),
            status: w.status.unwrap_or_default(),
        })
    }
}

struct Parts {
    meta: Meta,
    owners: Box<[OwnerRef]>,
    generation: i64,
    resource_version: Option<String>,
    spec: WireSpec,
    status: WireStatus,
}

fn n(v: Option<i32>) -> i32 {
    v.unwrap_or(0)
}

/// What cluster state reads of a Deployment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeploymentInfo {
    /// Namespace and name only.
    pub meta: Meta,
    /// `metadata.generation`.
    pub generation: i64,
    /// `spec.replicas`.
    pub spec_replicas: Option<i32>,
    /// `spec.paused`, false when unset.
    pub paused: bool,
    /// `status.replicas`, `readyReplicas`, `availableReplicas`, `unavailableReplicas`,
    /// `updatedReplicas`, `observedGeneration`.
    pub replicas: i32,
    pub ready_replicas: i32,
    pub available_replicas: i32,
    pub unavailable_replicas: i32,
    pub updated_replicas: i32,
    pub observed_generation: i64,
    pub conditions: Box<[Condition]>,
}

compact!(DeploymentInfo, Deployment, read_deployment);

fn read_deployment<'de, D: Deserializer<'de>>(d: D) -> Result<(DeploymentInfo, Option<String>), D::Error> {
    let Parts { meta, generation, resource_version, spec, status: s, .. } = WireWorkload::read(d)?;
    let info = DeploymentInfo {
        meta,
        generation,
        spec_replicas: spec.replicas,
        paused: spec.paused.unwrap_or(false),
        replicas: n(s.replicas),
        ready_replicas: n(s.ready_replicas),
        available_replicas: n(s.available_replicas),
        unavailable_replicas: n(s.unavailable_replicas),
        updated_replicas: n(s.updated_replicas),
        observed_generation: s.observed_generation.unwrap_or(0),
        conditions: conditions(s.conditions),
    };
    Ok((info, resource_version))
}

/// What cluster state reads of a DaemonSet: `metadata.generation` and the status counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DaemonSetInfo {
    /// Namespace and name only.
    pub meta: Meta,
    pub generation: i64,
    pub current_number_scheduled: i32,
    pub desired_number_scheduled: i32,
    pub number_available: i32,
    pub number_misscheduled: i32,
    pub number_ready: i32,
    pub number_unavailable: i32,
    pub updated_number_scheduled: i32,
    pub observed_generation: i64,
}

compact!(DaemonSetInfo, DaemonSet, read_daemonset);

fn read_daemonset<'de, D: Deserializer<'de>>(d: D) -> Result<(DaemonSetInfo, Option<String>), D::Error> {
    let Parts { meta, generation, resource_version, status: s, .. } = WireWorkload::read(d)?;
    let info = DaemonSetInfo {
        meta,
        generation,
        current_number_scheduled: n(s.current_number_scheduled),
        desired_number_scheduled: n(s.desired_number_scheduled),
        number_available: n(s.number_available),
        number_misscheduled: n(s.number_misscheduled),
        number_ready: n(s.number_ready),
        number_unavailable: n(s.number_unavailable),
        updated_number_scheduled: n(s.updated_number_scheduled),
        observed_generation: s.observed_generation.unwrap_or(0),
    };
    Ok((info, resource_version))
}

/// What cluster state reads of a StatefulSet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatefulSetInfo {
    /// Namespace and name only.
    pub meta: Meta,
    pub generation: i64,
    /// `spec.replicas`.
    pub spec_replicas: Option<i32>,
    /// `status.replicas`, `availableReplicas`, `currentReplicas`, `readyReplicas`,
    /// `updatedReplicas`, `observedGeneration`.
    pub replicas: i32,
    pub available_replicas: i32,
    pub current_replicas: i32,
    pub ready_replicas: i32,
    pub updated_replicas: i32,
    pub observed_generation: i64,
    /// `status.currentRevision` and `updateRevision`, `""` until the controller sets them.
    pub current_revision: Shared,
    pub update_revision: Shared,
}

compact!(StatefulSetInfo, StatefulSet, read_statefulset);

fn read_statefulset<'de, D: Deserializer<'de>>(d: D) -> Result<(StatefulSetInfo, Option<String>), D::Error> {
    let Parts { meta, generation, resource_version, spec, status: s, .. } = WireWorkload::read(d)?;
    let info = StatefulSetInfo {
        meta,
        generation,
        spec_replicas: spec.replicas,
        replicas: n(s.replicas),
        available_replicas: n(s.available_replicas),
        current_replicas: n(s.current_replicas),
        ready_replicas: n(s.ready_replicas),
        updated_replicas: n(s.updated_replicas),
        observed_generation: s.observed_generation.unwrap_or(0),
        current_revision: s.current_revision.unwrap_or_default(),
        update_revision: s.update_revision.unwrap_or_default(),
    };
    Ok((info, resource_version))
}

/// What cluster state reads of a Job.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobInfo {
    /// Namespace and name only.
    pub meta: Meta,
    /// Every owner reference, in order.
    pub owners: Box<[OwnerRef]>,
    /// `spec.completions`.
    pub completions: Option<i32>,
    /// `status.succeeded`, `failed`, `active`.
    pub succeeded: i32,
    pub failed: i32,
    pub active: i32,
    /// `status.startTime` and `completionTime`, in seconds since the epoch.
    pub start_time: Option<i64>,
    pub completion_time: Option<i64>,
    pub conditions: Box<[Condition]>,
}

compact!(JobInfo, Job, read_job);

fn read_job<'de, D: Deserializer<'de>>(d: D) -> Result<(JobInfo, Option<String>), D::Error> {
    let Parts { meta, owners, resource_version, spec, status: s, .. } = WireWorkload::read(d)?;
    let info = JobInfo {
        meta,
        owners,
        completions: spec.completions,
        succeeded: n(s.succeeded),
        failed: n(s.failed),
        active: n(s.active),
        start_time: s.start_time.map(|t| t.0.as_second()),
        completion_time: s.completion_time.map(|t| t.0.as_second()),
        conditions: conditions(s.conditions),
    };
    Ok((info, resource_version))
}

#[cfg(test)]
pub(super) mod tests {
    use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
    use k8s_openapi::api::batch::v1::Job;
    use proptest::prelude::*;
    use serde_json::{json, Map, Value};

    use super::*;
    use crate::objects::{Compact, Watched};

    /// A field absent (`None`), `null` (`Some(None)`) or set.
    pub type Field<T> = Option<Option<T>>;

    pub fn field<S: Strategy>(s: S) -> impl Strategy<Value = Field<S::Value>> {
        prop::option::of(prop::option::of(s))
    }

    /// Inserts `key` into `object` as `value` says (nothing when absent).
    pub fn put<T: serde::Serialize>(object: &mut Map<String, Value>, key: &str, value: &Field<T>) {
        if let Some(v) = value {
            object.insert(key.into(), json!(v));
        }
    }

    /// An object of fields from (key, value) pairs.
    pub fn object(fields: &[(&str, &Field<Value>)]) -> Value {
        let mut o = Map::new();
        for (key, value) in fields {
            put(&mut o, key, value);
        }
        Value::Object(o)
    }

    /// Conditions: type, status and reason, each absent, null or set.
    pub type Conditions = Vec<(Field<String>, Field<String>, Field<String>)>;

    pub fn conditions_strategy() -> impl Strategy<Value = Conditions> {
        let kind = prop::sample::select(vec!["Ready", "Available", "Progressing", "Complete", "Failed"]);
        let status = prop::sample::select(vec!["True", "False", "Unknown", "Maybe"]);
        let reason = prop::sample::select(vec!["", "BackoffLimitExceeded", "MinimumReplicasAvailable", "Other"]);
        let s = |s: prop::sample::Select<&'static str>| field(s.prop_map(String::from));
        prop::collection::vec((s(kind), s(status), s(reason)), 0..4)
    }

    pub fn conditions_json(conditions: &Conditions) -> Value {
        let list = conditions.iter().map(|(kind, status, reason)| {
            let mut c = Map::new();
            put(&mut c, "type", kind);
            put(&mut c, "status", status);
            put(&mut c, "reason", reason);
            c.insert("message".into(), json!("not read"));
            Value::Object(c)
        });
        Value::Array(list.collect())
    }

    /// (type, status, reason) as cluster state reads them from the k8s-openapi struct.
    pub fn got_conditions(c: &[Condition]) -> Vec<(String, String, String)> {
        c.iter().map(|c| (c.kind.to_string(), c.status.to_string(), c.reason.to_string())).collect()
    }

    /// The object as the watch reads it, and its resource version.
    pub fn read<T: Compact>(json: Value) -> (T, Option<String>) {
        let watched = serde_json::from_value::<Watched<T>>(json).expect("compact object");
        let rv = kube::Resource::meta(&watched).resource_version.clone();
        (watched.into_info(), rv)
    }

    /// `metadata` with name, namespace, generation, owners, and labels and annotations (not read).
    pub fn metadata(
        name: &str,
        namespace: &Option<String>,
        generation: &Field<i64>,
        owners: &[(String, String, Option<bool>)],
    ) -> Value {
        let owners: Vec<Value> = owners
            .iter()
            .map(|(kind, name, controller)| json!({"apiVersion": "v1", "kind": kind, "name": name, "uid": "u", "controller": controller}))
            .collect();
        let mut m = Map::new();
        m.insert("name".into(), json!(name));
        put(&mut m, "namespace", &Some(namespace.clone()));
        put(&mut m, "generation", generation);
        m.insert("resourceVersion".into(), json!("42"));
        m.insert("labels".into(), json!({"app": name}));
        m.insert("annotations".into(), json!({"deployment.kubernetes.io/revision": "3"}));
        m.insert("managedFields".into(), json!([{"manager": "kube-controller-manager", "operation": "Update"}]));
        m.insert("ownerReferences".into(), json!(owners));
        Value::Object(m)
    }

    fn counts(keys: &'static [&'static str]) -> impl Strategy<Value = Vec<(&'static str, Field<i32>)>> {
        let n = keys.len();
        prop::collection::vec(field(0i32..1000), n..=n).prop_map(move |v| keys.iter().copied().zip(v).collect())
    }

    fn with_counts(mut status: Value, counts: &[(&str, Field<i32>)]) -> Value {
        let o = status.as_object_mut().expect("an object");
        for (key, value) in counts {
            put(o, key, value);
        }
        status
    }

    /// A pod template, selector and volume claim templates, which no compact type reads.
    fn unread_spec() -> Map<String, Value> {
        let template = json!({"metadata": {"labels": {"app": "a"}}, "spec": {"containers": [{"name": "c", "image": "i",
            "env": [{"name": "A", "value": "b"}], "resources": {"requests": {"cpu": "1"}}}]}});
        let mut spec = Map::new();
        spec.insert("template".into(), template);
        spec.insert("selector".into(), json!({"matchLabels": {"app": "a"}}));
        spec.insert("volumeClaimTemplates".into(), json!([{"metadata": {"name": "data"}}]));
        spec
    }

    /// `spec` (absent, null, or the unread fields plus `fields`).
    fn spec(present: Field<()>, fields: &[(&str, &Field<Value>)]) -> Field<Value> {
        present.map(|p| {
            p.map(|()| {
                let mut s = unread_spec();
                for (key, value) in fields {
                    put(&mut s, key, value);
                }
                Value::Object(s)
            })
        })
    }

    fn to_value<T: serde::Serialize>(f: &Field<T>) -> Field<Value> {
        f.as_ref().map(|v| v.as_ref().map(|v| json!(v)))
    }

    const DEPLOYMENT_COUNTS: &[&str] =
        &["replicas", "readyReplicas", "availableReplicas", "unavailableReplicas", "updatedReplicas"];
    const DAEMONSET_COUNTS: &[&str] = &[
        "currentNumberScheduled",
        "desiredNumberScheduled",
        "numberAvailable",
        "numberMisscheduled",
        "numberReady",
        "numberUnavailable",
        "updatedNumberScheduled",
    ];
    const STATEFULSET_COUNTS: &[&str] =
        &["replicas", "availableReplicas", "currentReplicas", "readyReplicas", "updatedReplicas"];
    const JOB_COUNTS: &[&str] = &["succeeded", "failed", "active"];

    fn name_ns() -> impl Strategy<Value = (String, Option<String>)> {
        ("[a-z0-9-]{1,20}", prop::option::of("[a-z]{1,8}"))
    }

    fn time() -> impl Strategy<Value = Field<String>> {
        field(
            (0i64..4_000_000_000)
                .prop_map(|s| k8s_openapi::jiff::Timestamp::from_second(s).expect("in range").to_string()),
        )
    }

    proptest! {
        /// The compact type reads what `kube_deployment_*` reads of k8s-openapi's `Deployment`
        /// from the same JSON.
        #[test]
        fn a_compact_deployment_reads_what_cluster_state_reads_of_the_k8s_struct(
            (name, namespace) in name_ns(),
            generation in field(0i64..100),
            has_spec in field(Just(())),
            replicas in field(0i32..10),
            paused in field(any::<bool>()),
            has_status in field(Just(())),
            counts in counts(DEPLOYMENT_COUNTS),
            observed in field(0i64..100),
            conditions in conditions_strategy(),
        ) {
            let mut status = with_counts(json!({}), &counts);
            put(status.as_object_mut().expect("object"), "observedGeneration", &observed);
            status["conditions"] = conditions_json(&conditions);
            let json = object(&[
                ("metadata", &Some(Some(metadata(&name, &namespace, &generation, &[])))),
                ("spec", &spec(has_spec, &[("replicas", &to_value(&replicas)), ("paused", &to_value(&paused))])),
                ("status", &has_status.map(|p| p.map(|()| status))),
            ]);
            let full: Deployment = serde_json::from_value(json.clone()).expect("k8s deployment");
            let (compact, rv) = read::<DeploymentInfo>(json);
            prop_assert_eq!(rv.as_deref(), Some("42"));
            prop_assert_eq!((compact.meta.namespace(), compact.meta.name()), (full.metadata.namespace.as_deref().unwrap_or(""), full.metadata.name.as_deref().unwrap_or("")));
            prop_assert_eq!(compact.generation, full.metadata.generation.unwrap_or(0));
            let spec = full.spec.as_ref();
            prop_assert_eq!(compact.spec_replicas, spec.and_then(|s| s.replicas));
            prop_assert_eq!(compact.paused, spec.and_then(|s| s.paused).unwrap_or(false));
            let s = full.status.unwrap_or_default();
            prop_assert_eq!(
                [compact.replicas, compact.ready_replicas, compact.available_replicas, compact.unavailable_replicas, compact.updated_replicas],
                [s.replicas, s.ready_replicas, s.available_replicas, s.unavailable_replicas, s.updated_replicas].map(|v| v.unwrap_or(0))
            );
            prop_assert_eq!(compact.observed_generation, s.observed_generation.unwrap_or(0));
            let want: Vec<_> = s.conditions.iter().flatten().map(|c| (c.type_.clone(), c.status.clone(), c.reason.clone().unwrap_or_default())).collect();
            prop_assert_eq!(got_conditions(&compact.conditions), want);
        }

        /// The same for `kube_daemonset_*` and a `DaemonSet`.
        #[test]
        fn a_compact_daemonset_reads_what_cluster_state_reads_of_the_k8s_struct(
            (name, namespace) in name_ns(),
            generation in field(0i64..100),
            has_spec in field(Just(())),
            has_status in field(Just(())),
            counts in counts(DAEMONSET_COUNTS),
            observed in field(0i64..100),
        ) {
            let mut status = with_counts(json!({}), &counts);
            put(status.as_object_mut().expect("object"), "observedGeneration", &observed);
            let json = object(&[
                ("metadata", &Some(Some(metadata(&name, &namespace, &generation, &[])))),
                ("spec", &spec(has_spec, &[])),
                ("status", &has_status.map(|p| p.map(|()| status))),
            ]);
            let full: DaemonSet = serde_json::from_value(json.clone()).expect("k8s daemonset");
            let compact = read::<DaemonSetInfo>(json).0;
            prop_assert_eq!((compact.meta.namespace(), compact.meta.name()), (full.metadata.namespace.as_deref().unwrap_or(""), full.metadata.name.as_deref().unwrap_or("")));
            prop_assert_eq!(compact.generation, full.metadata.generation.unwrap_or(0));
            let s = full.status.unwrap_or_default();
            prop_assert_eq!(
                [compact.current_number_scheduled, compact.desired_number_scheduled, compact.number_available, compact.number_misscheduled,
                    compact.number_ready, compact.number_unavailable, compact.updated_number_scheduled],
                [s.current_number_scheduled, s.desired_number_scheduled, s.number_available.unwrap_or(0), s.number_misscheduled,
                    s.number_ready, s.number_unavailable.unwrap_or(0), s.updated_number_scheduled.unwrap_or(0)]
            );
            prop_assert_eq!(compact.observed_generation, s.observed_generation.unwrap_or(0));
        }

        /// The same for `kube_statefulset_*` and a `StatefulSet`.
        #[test]
        fn a_compact_statefulset_reads_what_cluster_state_reads_of_the_k8s_struct(
            (name, namespace) in name_ns(),
            generation in field(0i64..100),
            has_spec in field(Just(())),
            replicas in field(0i32..10),
            has_status in field(Just(())),
            counts in counts(STATEFULSET_COUNTS),
            observed in field(0i64..100),
            revisions in (field("[a-z]{1,4}-[0-9a-f]{1,6}"), field("[a-z]{1,4}-[0-9a-f]{1,6}")),
        ) {
            let mut status = with_counts(json!({}), &counts);
            let o = status.as_object_mut().expect("object");
            put(o, "observedGeneration", &observed);
            put(o, "currentRevision", &revisions.0);
            put(o, "updateRevision", &revisions.1);
            let json = object(&[
                ("metadata", &Some(Some(metadata(&name, &namespace, &generation, &[])))),
                ("spec", &spec(has_spec, &[("replicas", &to_value(&replicas)), ("serviceName", &Some(Some(json!("svc"))))])),
                ("status", &has_status.map(|p| p.map(|()| status))),
            ]);
            let full: StatefulSet = serde_json::from_value(json.clone()).expect("k8s statefulset");
            let compact = read::<StatefulSetInfo>(json).0;
            prop_assert_eq!((compact.meta.namespace(), compact.meta.name()), (full.metadata.namespace.as_deref().unwrap_or(""), full.metadata.name.as_deref().unwrap_or("")));
            prop_assert_eq!(compact.generation, full.metadata.generation.unwrap_or(0));
            prop_assert_eq!(compact.spec_replicas, full.spec.as_ref().and_then(|s| s.replicas));
            let s = full.status.unwrap_or_default();
            prop_assert_eq!(
                [compact.replicas, compact.available_replicas, compact.current_replicas, compact.ready_replicas, compact.updated_replicas],
                [s.replicas, s.available_replicas.unwrap_or(0), s.current_replicas.unwrap_or(0), s.ready_replicas.unwrap_or(0), s.updated_replicas.unwrap_or(0)]
            );
            prop_assert_eq!(compact.observed_generation, s.observed_generation.unwrap_or(0));
            prop_assert_eq!(&*compact.current_revision, s.current_revision.as_deref().unwrap_or(""));
            prop_assert_eq!(&*compact.update_revision, s.update_revision.as_deref().unwrap_or(""));
        }

        /// The same for `kube_job_*` and a `Job`.
        #[test]
        fn a_compact_job_reads_what_cluster_state_reads_of_the_k8s_struct(
            (name, namespace) in name_ns(),
            owners in prop::collection::vec(("CronJob|Workflow", "[a-z]{1,6}", prop::option::of(any::<bool>())), 0..3),
            has_spec in field(Just(())),
            completions in field(0i32..10),
            has_status in field(Just(())),
            counts in counts(JOB_COUNTS),
            (start, completion) in (time(), time()),
            conditions in conditions_strategy(),
        ) {
            let mut status = with_counts(json!({}), &counts);
            let o = status.as_object_mut().expect("object");
            put(o, "startTime", &start);
            put(o, "completionTime", &completion);
            status["conditions"] = conditions_json(&conditions);
            let json = object(&[
                ("metadata", &Some(Some(metadata(&name, &namespace, &None, &owners)))),
                ("spec", &spec(has_spec, &[("completions", &to_value(&completions))])),
                ("status", &has_status.map(|p| p.map(|()| status))),
            ]);
            let full: Job = serde_json::from_value(json.clone()).expect("k8s job");
            let compact = read::<JobInfo>(json).0;
            prop_assert_eq!((compact.meta.namespace(), compact.meta.name()), (full.metadata.namespace.as_deref().unwrap_or(""), full.metadata.name.as_deref().unwrap_or("")));
            let want_owners: Vec<_> = full.metadata.owner_references.iter().flatten().map(|o| (o.kind.clone(), o.name.clone(), o.controller)).collect();
            let got_owners: Vec<_> = compact.owners.iter().map(|o| (o.kind.to_string(), o.name.to_string(), o.controller)).collect();
            prop_assert_eq!(got_owners, want_owners);
            prop_assert_eq!(compact.completions, full.spec.as_ref().and_then(|s| s.completions));
            let s = full.status.unwrap_or_default();
            prop_assert_eq!([compact.succeeded, compact.failed, compact.active], [s.succeeded, s.failed, s.active].map(|v| v.unwrap_or(0)));
            prop_assert_eq!(compact.start_time, s.start_time.map(|t| t.0.as_second()));
            prop_assert_eq!(compact.completion_time, s.completion_time.map(|t| t.0.as_second()));
            let want: Vec<_> = s.conditions.iter().flatten().map(|c| (c.type_.clone(), c.status.clone(), c.reason.clone().unwrap_or_default())).collect();
            prop_assert_eq!(got_conditions(&compact.conditions), want);
        }
    }
}
