#!/usr/bin/env bash
# Scenario 3, OpenTelemetry native: Kind cluster lgtm-remote-otel (tenant remote03, cluster id 3,
# pods 10.31.0.0/16, services 10.32.0.0/16, load balancers x.x.x.232/29) with the OpenTelemetry
# Operator managing two collectors: a DaemonSet (pod logs, host and kubelet metrics, node-local
# OTLP) and a StatefulSet with the Target Allocator (ServiceMonitors/PodMonitors, events, cluster
# metrics, tail sampling), and the TNS demo app (the workload of every scenario) sending Jaeger
# spans to the DaemonSet.
#   ./deploy/deploy-remote-otel.sh         (OTEL_DEMO=yes adds the OpenTelemetry Demo: heavier, and
#                                           the comparison with the other scenarios is then unfair)
# shellcheck source=deploy/lib.sh
source "$(dirname "$0")/lib.sh"
require_tools docker kind kubectl helm
helm_repos

NAME=lgtm-remote-otel
TENANT=remote03
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

setup_remote "$NAME" 3 10.31.0.0/16 10.32.0.0/16 232
prometheus_operator_crds "$NAME"
mesh_namespace "$NAME" observability

log "$NAME: cert-manager and the OpenTelemetry Operator"
# shellcheck disable=SC2046
h "$NAME" upgrade --install cert-manager jetstack/cert-manager -n cert-manager --create-namespace \
  --set crds.enabled=true $(version_flag CERT_MANAGER_CHART_VERSION) --wait --timeout 10m
# shellcheck disable=SC2046
h "$NAME" upgrade --install opentelemetry-operator open-telemetry/opentelemetry-operator -n observability \
  --set manager.collectorImage.repository="${OTEL_COLLECTOR_IMAGE%:*}" --set manager.collectorImage.tag="${OTEL_COLLECTOR_IMAGE##*:}" \
  $(version_flag OTEL_OPERATOR_CHART_VERSION) --wait --timeout 10m

# RBAC the operator does not generate: kubelet metrics, pods/nodes for k8sattributes, events and
# workloads for k8s_cluster/k8sobjects, monitors and their secrets for the Target Allocator.
k "$NAME" apply -f - <<EOF
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: otel-collectors
rules:
  - apiGroups: [""]
    resources: [pods, namespaces, nodes, nodes/stats, nodes/proxy, nodes/metrics, services, endpoints, events, replicationcontrollers, resourcequotas, persistentvolumes, persistentvolumeclaims, configmaps, secrets]
    verbs: [get, list, watch]
  - apiGroups: [apps]
    resources: [deployments, daemonsets, statefulsets, replicasets]
    verbs: [get, list, watch]
  - apiGroups: [batch]
    resources: [jobs, cronjobs]
    verbs: [get, list, watch]
  - apiGroups: [autoscaling]
    resources: [horizontalpodautoscalers]
    verbs: [get, list, watch]
  - apiGroups: [discovery.k8s.io]
    resources: [endpointslices]
    verbs: [get, list, watch]
  - apiGroups: [events.k8s.io]
    resources: [events]
    verbs: [get, list, watch]
  - apiGroups: [monitoring.coreos.com]
    resources: [servicemonitors, podmonitors, probes, scrapeconfigs]
    verbs: ["*"]
  - nonResourceURLs: [/metrics]
    verbs: [get]
---
apiVersion: v1
kind: ServiceAccount
metadata: { name: otel-collector, namespace: observability }
---
apiVersion: v1
kind: ServiceAccount
metadata: { name: otel-targetallocator, namespace: observability }
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: otel-collectors
roleRef: { apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: otel-collectors }
subjects:
  - { kind: ServiceAccount, name: otel-collector, namespace: observability }
  - { kind: ServiceAccount, name: otel-targetallocator, namespace: observability }
EOF

log "$NAME: collectors otel-daemonset and otel-deployment (deploy/manifests/otel-collectors.yaml)"
fill "$DEPLOY_DIR/manifests/otel-collectors.yaml" "OTEL_COLLECTOR_IMAGE=$OTEL_COLLECTOR_IMAGE" | k "$NAME" apply -f -
wait_rollout "$NAME" observability

# The same workload as every scenario: TNS, its Jaeger spans to the node's collector.
deploy_tns "$NAME" "$NAME" otel-daemonset-collector.observability.svc
if [[ ${OTEL_DEMO:-no} == yes ]]; then
  warn "OTEL_DEMO=yes: this scenario now runs more than TNS; bench-compare.sh numbers are not comparable"
  log "$NAME: OpenTelemetry Demo (namespace otel-demo), sending to otel-daemonset"
  mesh_namespace "$NAME" otel-demo
  cat >"$tmp/demo.yaml" <<EOF
default:
  envOverrides:
    - name: OTEL_COLLECTOR_NAME
      value: otel-daemonset-collector.observability.svc
opentelemetry-collector: { enabled: false }
jaeger: { enabled: false }
prometheus: { enabled: false }
grafana: { enabled: false }
opensearch: { enabled: false }
EOF
  # shellcheck disable=SC2046
  h "$NAME" upgrade --install otel-demo open-telemetry/opentelemetry-demo -n otel-demo \
    $(version_flag OTEL_DEMO_CHART_VERSION) -f "$tmp/demo.yaml" --wait --timeout 15m
fi

grafana_datasources "Remote OTel" "$TENANT"
"$DEPLOY_DIR/verify.sh" 3
log "scenario 3 is up: cluster $NAME, tenant $TENANT, $(mesh) mesh"
