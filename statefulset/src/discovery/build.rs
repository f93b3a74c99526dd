//! From a snapshot of the watched objects to target groups: one group per monitor endpoint
//! (targets with their `__meta_kubernetes_*` labels, options with the operator's relabelings),
//! plus one group per annotation job. A pure function of its input (credentials aside), so the
//! whole target set is recomputed on every change and the scrape manager diffs it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::DynamicObject;
use lgtm_scrape::{ScrapeOptions, TargetGroup};
use serde::Serialize;

use super::annotations;
use super::credentials::{Credentials, ObjectMap};
use super::monitor::{Monitor, MonitorKind};
use super::objects::{PodInfo, ServiceInfo, SliceInfo};
use super::operator::{endpoint_options, job_name, Defaults};
use super::sd_labels::{endpoint_slice_targets, pod_targets, Labels, SERVICE_NAME_LABEL};

/// The watched objects at one instant.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    pub service_monitors: Vec<Arc<DynamicObject>>,
    pub pod_monitors: Vec<Arc<DynamicObject>>,
    pub services: Vec<Arc<ServiceInfo>>,
    pub endpoint_slices: Vec<Arc<SliceInfo>>,
    pub pods: Vec<Arc<PodInfo>>,
    pub secrets: ObjectMap<Secret>,
    pub config_maps: ObjectMap<ConfigMap>,
}

/// Which discoveries are on (`scrape.monitors`) and the global defaults.
#[derive(Debug, Clone, Copy)]
pub struct BuildOptions {
    pub service_monitors: bool,
    pub pod_monitors: bool,
    pub annotations: bool,
    pub defaults: Defaults,
}

/// What `/targets` shows of one monitor.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MonitorStatus {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// Fields set on the monitor that the agent does not act on.
    pub unsupported: Vec<String>,
    /// Why the monitor or one of its endpoints has no targets (bad field, missing Secret,
    /// target limit).
    pub errors: Vec<String>,
    /// Targets after relabeling, over all replicas.
    pub targets_total: usize,
    /// Of those, the ones this replica scrapes.
    pub targets_here: usize,
}

/// The result of [`build`]: the groups and, for each, the monitor (index into `monitors`) it
/// came from and the endpoint's `targetLimit`.
#[derive(Debug, Default)]
pub struct Built {
    pub groups: Vec<TargetGroup>,
    pub origins: Vec<GroupOrigin>,
    pub monitors: Vec<MonitorStatus>,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct GroupOrigin {
    pub monitor: Option<usize>,
    pub target_limit: Option<usize>,
}

fn key(ns: &Option<String>, name: &Option<String>) -> (String, String) {
    (ns.clone().unwrap_or_default(), name.clone().unwrap_or_default())
}

/// Lookups over a snapshot, borrowed from it.
struct Index<'a> {
    /// By (namespace, name), in that order.
    services: BTreeMap<(&'a str, &'a str), &'a ServiceInfo>,
    slices_by_service: HashMap<(&'a str, &'a str), Vec<&'a SliceInfo>>,
    /// By (namespace, name): looked up once per endpoint.
    pods: HashMap<(&'a str, &'a str), &'a PodInfo>,
}

impl<'a> Index<'a> {
    fn new(s: &'a Snapshot) -> Index<'a> {
        let services = s.services.iter().map(|svc| ((svc.meta.namespace(), svc.meta.name()), &**svc)).collect();
        let mut slices_by_service: HashMap<(&str, &str), Vec<&SliceInfo>> = HashMap::new();
        for slice in &s.endpoint_slices {
            if let Some(svc) = slice.meta.labels.get(SERVICE_NAME_LABEL) {
                slices_by_service.entry((slice.meta.namespace(), svc)).or_default().push(slice);
            }
        }
        for slices in slices_by_service.values_mut() {
            slices.sort_by(|a, b| a.meta.name().cmp(b.meta.name()));
        }
        let pods = s.pods.iter().map(|p| ((p.meta.namespace(), p.meta.name()), &**p)).collect();
        Index { services, slices_by_service, pods }
    }

    /// The endpoint targets of a Service (all its slices).
    fn service_targets(&self, svc: &ServiceInfo) -> Vec<Labels> {
        let pod = |ns: &str, name: &str| self.pods.get(&(ns, name)).copied();
        let mut out = Vec::new();
        for slice in self.slices_by_service.get(&(svc.meta.namespace(), svc.meta.name())).into_iter().flatten() {
            out.extend(endpoint_slice_targets(slice, Some(svc), pod));
        }
        out
    }
}

fn sorted_pods(s: &Snapshot) -> Vec<&PodInfo> {
    let mut pods: Vec<&PodInfo> = s.pods.iter().map(|p| &**p).collect();
    pods.sort_by(|a, b| (a.meta.namespace(), a.meta.name()).cmp(&(b.meta.namespace(), b.meta.name())));
    pods
}

fn parse_monitors(
    objects: &[Arc<DynamicObject>],
    kind: MonitorKind,
    statuses: &mut Vec<MonitorStatus>,
) -> Vec<(usize, Monitor)> {
    let mut objects: Vec<&DynamicObject> = objects.iter().map(|o| &**o).collect();
    objects.sort_by_key(|o| key(&o.metadata.namespace, &o.metadata.name));
    let mut out = Vec::new();
    for o in objects {
        let (namespace, name) = key(&o.metadata.namespace, &o.metadata.name);
        let mut status = MonitorStatus {
            kind: format!("{kind:?}"),
            namespace: namespace.clone(),
            name: name.clone(),
            ..Default::default()
        };
        match Monitor::parse(kind, &namespace, &name, &o.data["spec"]) {
            Ok(m) => {
                status.unsupported = m.unsupported();
                status.errors = m.invalid_relabelings();
                if status.errors.is_empty() {
                    out.push((statuses.len(), m));
                }
            }
            Err(e) => status.errors.push(e),
        }
        statuses.push(status);
    }
    out
}

/// Every target group of the snapshot, in a stable order.
pub fn build(s: &Snapshot, options: &BuildOptions, creds: &mut dyn Credentials) -> Built {
    let (mut groups, mut origins) = (Vec::new(), Vec::new());
    let monitors = build_each(s, options, creds, &mut |group, origin| {
        groups.push(group);
        origins.push(origin);
    });
    Built { groups, origins, monitors }
}

/// [`build`], handing each group to `emit` as soon as it is made rather than collecting them:
/// the caller can reduce a group to what it keeps before the next one is built (at thousands of
/// targets, the discovered labels of all groups at once were tens of MiB). Returns the
/// monitors' statuses; a group's [`GroupOrigin::monitor`] indexes them.
pub fn build_each(
    s: &Snapshot,
    options: &BuildOptions,
    creds: &mut dyn Credentials,
    emit: &mut dyn FnMut(TargetGroup, GroupOrigin),
) -> Vec<MonitorStatus> {
    let index = Index::new(s);
    let mut built = Emitter { monitors: Vec::new(), emit };
    if options.service_monitors {
        let monitors = parse_monitors(&s.service_monitors, MonitorKind::ServiceMonitor, &mut built.monitors);
        for (mi, m) in monitors {
            let mut targets = Vec::new();
            for ((ns, _), svc) in &index.services {
                let selected =
                    m.spec.namespace_selector.matches(&m.namespace, ns) && m.spec.selector.matches(&svc.meta.labels);
                if selected {
                    targets.extend(index.service_targets(svc));
                }
            }
            monitor_groups(&mut built, mi, &m, targets, options, creds);
        }
    }
    if options.pod_monitors {
        let monitors = parse_monitors(&s.pod_monitors, MonitorKind::PodMonitor, &mut built.monitors);
        let pods = sorted_pods(s);
        for (mi, m) in monitors {
            let mut targets = Vec::new();
            for pod in &pods {
                if m.spec.namespace_selector.matches(&m.namespace, pod.meta.namespace())
                    && m.spec.selector.matches(&pod.meta.labels)
                {
                    targets.extend(pod_targets(pod));
                }
            }
            monitor_groups(&mut built, mi, &m, targets, options, creds);
        }
    }
    if options.annotations {
        annotation_groups(&mut built, s, &index, options);
    }
    built.monitors
}

/// Where [`build_each`] puts what it makes.
struct Emitter<'e> {
    monitors: Vec<MonitorStatus>,
    emit: &'e mut dyn FnMut(TargetGroup, GroupOrigin),
}

fn monitor_groups(
    built: &mut Emitter<'_>,
    mi: usize,
    m: &Monitor,
    mut targets: Vec<Labels>,
    options: &BuildOptions,
    creds: &mut dyn Credentials,
) {
    let endpoints = m.endpoints();
    for (i, ep) in endpoints.iter().enumerate() {
        match endpoint_options(m, i, ep, &options.defaults, creds) {
            Ok(opts) => {
                // The last endpoint takes the list, the others a copy.
                let targets = if i + 1 == endpoints.len() { std::mem::take(&mut targets) } else { targets.clone() };
                let group = TargetGroup { source: job_name(m, i), targets, labels: BTreeMap::new(), options: opts };
                let target_limit = m.spec.target_limit.filter(|l| *l > 0).map(|l| l as usize);
                (built.emit)(group, GroupOrigin { monitor: Some(mi), target_limit });
            }
            Err(e) => built.monitors[mi].errors.push(e),
        }
    }
}

fn annotation_groups(built: &mut Emitter<'_>, s: &Snapshot, index: &Index<'_>, options: &BuildOptions) {
    let base = |job: &str, relabel_configs| {
        Arc::new(ScrapeOptions {
            job: job.into(),
            interval: options.defaults.interval,
            timeout: options.defaults.timeout.min(options.defaults.interval),
            body_size_limit: options.defaults.body_size_limit,
            sample_limit: options.defaults.sample_limit,
            relabel_configs,
            ..ScrapeOptions::default()
        })
    };
    let pods: Vec<Labels> = sorted_pods(s)
        .into_iter()
        .filter(|p| annotations::wants_scrape(&p.meta.annotations))
        .flat_map(pod_targets)
        .collect();
    if !pods.is_empty() {
        let options = base(annotations::POD_JOB, annotations::pod_relabelings());
        let group =
            TargetGroup { source: annotations::POD_JOB.into(), targets: pods, labels: BTreeMap::new(), options };
        (built.emit)(group, GroupOrigin::default());
    }
    let services: Vec<Labels> = index
        .services
        .values()
        .filter(|svc| annotations::wants_scrape(&svc.meta.annotations))
        .flat_map(|svc| index.service_targets(svc))
        .collect();
    if !services.is_empty() {
        let options = base(annotations::SERVICE_JOB, annotations::service_relabelings());
        let source = annotations::SERVICE_JOB.into();
        (built.emit)(
            TargetGroup { source, targets: services, labels: BTreeMap::new(), options },
            GroupOrigin::default(),
        );
    }
}
