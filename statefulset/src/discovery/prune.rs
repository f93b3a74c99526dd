//! What discovery keeps of a Pod: the fields its `__meta_kubernetes_pod_*` labels are made of
//! ([`super::sd_labels`]). A real Pod carries much more (env, volumes, probes, resources, full
//! container statuses, managed fields); a store of every Pod of the cluster would hold all of it
//! for nothing. Pruned as objects arrive, before the reflector stores them.

use k8s_openapi::api::core::v1::{Container, ContainerStatus, Pod, PodCondition, PodSpec, PodStatus};

/// Drops every field of `pod` that no discovery label reads.
pub fn keep_discovery_fields(pod: &mut Pod) {
    pod.metadata.managed_fields = None;
    if let Some(spec) = pod.spec.take() {
        pod.spec = Some(PodSpec {
            node_name: spec.node_name,
            containers: spec.containers.into_iter().map(container).collect(),
            init_containers: spec.init_containers.map(|cs| cs.into_iter().map(container).collect()),
            ..PodSpec::default()
        });
    }
    if let Some(status) = pod.status.take() {
        pod.status = Some(PodStatus {
            phase: status.phase,
            pod_ip: status.pod_ip,
            host_ip: status.host_ip,
            conditions: status.conditions.map(|cs| {
                cs.into_iter()
                    .filter(|c| c.type_ == "Ready")
                    .map(|c| PodCondition { type_: c.type_, status: c.status, ..PodCondition::default() })
                    .collect()
            }),
            container_statuses: status.container_statuses.map(container_ids),
            init_container_statuses: status.init_container_statuses.map(container_ids),
            ..PodStatus::default()
        });
    }
}

fn container(c: Container) -> Container {
    Container { name: c.name, image: c.image, ports: c.ports, ..Container::default() }
}

fn container_ids(statuses: Vec<ContainerStatus>) -> Vec<ContainerStatus> {
    statuses
        .into_iter()
        .map(|s| ContainerStatus { name: s.name, container_id: s.container_id, ..ContainerStatus::default() })
        .collect()
}
