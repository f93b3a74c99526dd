#!/usr/bin/env bash
# Scenario 3, OpenTelemetry native: Kind cluster lgtm-remote-otel (tenant remote03, cluster id 3,
# pods 10.31.0.0/16, services 10.32.0.0/16, load balancers x.x.x.232/29) with the OpenTelemetry
# Operator managing two collectors: a DaemonSet (pod logs, host and kubelet metrics, node-local
# OTLP) and a StatefulSet with the Target Allocator (ServiceMonitors/PodMonitors, events, cluster
# metrics, tail sampling), plus the OpenTelemetry Demo sending to the DaemonSet.
#   ./deploy/deploy-remote-otel.sh         (OTEL_DEMO=no skips the demo, which is heavy)
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
  --set manager.collectorImage.repository=otel/opentelemetry-collector-contrib \
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

# Exporters both collectors share: Prometheus remote write to Mimir, OTLP/HTTP to Loki's native
# OTLP endpoint, OTLP/gRPC to Tempo; every request carries the tenant.
exporters=$(cat <<EOF
      prometheusremotewrite:
        endpoint: $(mimir_push_url)
        headers: { X-Scope-OrgID: $TENANT }
        external_labels: { cluster: $NAME }
        resource_to_telemetry_conversion: { enabled: true }
      otlphttp/loki:
        endpoint: http://$(central_host loki-write loki):3100/otlp
        headers: { X-Scope-OrgID: $TENANT }
      otlp/tempo:
        endpoint: $(tempo_otlp_host)
        tls: { insecure: true }
        headers: { X-Scope-OrgID: $TENANT }
EOF
)

log "$NAME: collectors otel-daemonset and otel-deployment"
k "$NAME" apply -f - <<EOF
apiVersion: opentelemetry.io/v1beta1
kind: OpenTelemetryCollector
metadata:
  name: otel-daemonset
  namespace: observability
spec:
  mode: daemonset
  serviceAccount: otel-collector
  tolerations:
    - operator: Exists
  env:
    - name: K8S_NODE_NAME
      valueFrom: { fieldRef: { fieldPath: spec.nodeName } }
    - name: K8S_NODE_IP
      valueFrom: { fieldRef: { fieldPath: status.hostIP } }
  volumes:
    - { name: varlogpods, hostPath: { path: /var/log/pods } }
    - { name: hostfs, hostPath: { path: / } }
  volumeMounts:
    - { name: varlogpods, mountPath: /var/log/pods, readOnly: true }
    - { name: hostfs, mountPath: /hostfs, readOnly: true, mountPropagation: HostToContainer }
  resources:
    requests: { cpu: 100m, memory: 128Mi }
  config:
    receivers:
      otlp:
        protocols:
          grpc: { endpoint: 0.0.0.0:4317 }
          http: { endpoint: 0.0.0.0:4318 }
      filelog:
        include: [/var/log/pods/*/*/*.log]
        exclude: [/var/log/pods/observability_otel-daemonset*/*/*.log, /var/log/pods/*/linkerd-proxy/*.log, /var/log/pods/*/istio-proxy/*.log]
        start_at: end
        include_file_path: true
        operators:
          - { type: container, id: container-parser }
      hostmetrics:
        root_path: /hostfs
        collection_interval: 30s
        scrapers: { cpu: {}, memory: {}, load: {}, disk: {}, filesystem: {}, network: {} }
      kubeletstats:
        collection_interval: 30s
        auth_type: serviceAccount
        endpoint: https://\${env:K8S_NODE_IP}:10250
        insecure_skip_verify: true
      # cAdvisor, as the other scenarios scrape it: the CPU and memory comparison of
      # bench-compare.sh needs the same series (container_cpu_usage_seconds_total, ...) everywhere.
      prometheus/cadvisor:
        config:
          scrape_configs:
            - job_name: integrations/kubernetes/cadvisor
              scheme: https
              metrics_path: /metrics/cadvisor
              honor_timestamps: false
              scrape_interval: 30s
              authorization: { credentials_file: /var/run/secrets/kubernetes.io/serviceaccount/token }
              tls_config: { insecure_skip_verify: true }
              static_configs:
                - targets: [\${env:K8S_NODE_IP}:10250]
    processors:
      batch: {}
      memory_limiter: { check_interval: 1s, limit_percentage: 80, spike_limit_percentage: 20 }
      k8sattributes:
        filter: { node_from_env_var: K8S_NODE_NAME }
        extract:
          metadata: [k8s.namespace.name, k8s.pod.name, k8s.container.name, k8s.node.name, k8s.deployment.name]
      resource:
        attributes:
          - { key: k8s.cluster.name, value: $NAME, action: upsert }
          - { key: cluster, value: $NAME, action: upsert }
    exporters:
$exporters
      otlp/gateway:
        endpoint: otel-deployment-collector.observability.svc:4317
        tls: { insecure: true }
    service:
      pipelines:
        logs:
          receivers: [filelog]
          processors: [memory_limiter, k8sattributes, resource, batch]
          exporters: [otlphttp/loki]
        metrics:
          receivers: [hostmetrics, kubeletstats, prometheus/cadvisor, otlp]
          processors: [memory_limiter, k8sattributes, resource, batch]
          exporters: [prometheusremotewrite]
        traces:
          receivers: [otlp]
          processors: [memory_limiter, k8sattributes, batch]
          exporters: [otlp/gateway]
---
apiVersion: opentelemetry.io/v1beta1
kind: OpenTelemetryCollector
metadata:
  name: otel-deployment
  namespace: observability
spec:
  mode: statefulset
  replicas: 1
  serviceAccount: otel-collector
  resources:
    requests: { cpu: 200m, memory: 256Mi }
  targetAllocator:
    enabled: true
    serviceAccount: otel-targetallocator
    allocationStrategy: consistent-hashing
    prometheusCR:
      enabled: true
      serviceMonitorSelector: {}
      podMonitorSelector: {}
  config:
    receivers:
      otlp:
        protocols:
          grpc: { endpoint: 0.0.0.0:4317 }
          http: { endpoint: 0.0.0.0:4318 }
      prometheus:
        config:
          scrape_configs: []
      k8s_events: {}
      k8s_cluster:
        collection_interval: 30s
    processors:
      batch: {}
      memory_limiter: { check_interval: 1s, limit_percentage: 80, spike_limit_percentage: 20 }
      resource:
        attributes:
          - { key: k8s.cluster.name, value: $NAME, action: upsert }
          - { key: cluster, value: $NAME, action: upsert }
      tail_sampling:
        decision_wait: 10s
        num_traces: 50000
        policies:
          - { name: errors, type: status_code, status_code: { status_codes: [ERROR] } }
          - name: slow-sampled
            type: and
            and:
              and_sub_policy:
                - { name: slow, type: latency, latency: { threshold_ms: 50 } }
                - { name: sampled, type: probabilistic, probabilistic: { sampling_percentage: 30 } }
    exporters:
$exporters
    service:
      pipelines:
        metrics:
          receivers: [prometheus, k8s_cluster]
          processors: [memory_limiter, resource, batch]
          exporters: [prometheusremotewrite]
        logs:
          receivers: [k8s_events]
          processors: [memory_limiter, resource, batch]
          exporters: [otlphttp/loki]
        traces:
          receivers: [otlp]
          processors: [memory_limiter, tail_sampling, resource, batch]
          exporters: [otlp/tempo]
EOF

if [[ ${OTEL_DEMO:-yes} == yes ]]; then
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

wait_rollout "$NAME" observability
grafana_datasources "Remote OTel" "$TENANT"
log "scenario 3 is up: cluster $NAME, tenant $TENANT, $(mesh) mesh"
