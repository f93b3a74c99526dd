#!/usr/bin/env bash
# Scenario 1, the traditional stack: Kind cluster lgtm-remote (tenant remote01, cluster id 2,
# pods 10.21.0.0/16, services 10.22.0.0/16, load balancers x.x.x.240/29) with Prometheus
# (kube-prometheus-stack: operator, kubelet/cAdvisor, node-exporter, kube-state-metrics, remote
# write to Mimir), Vector or Fluent Bit (LOG_SHIPPER=fluentbit) for pod logs to Loki, Grafana
# Alloy for traces (OTLP and Jaeger) to Tempo, and the TNS demo app.
#   ./deploy/deploy-remote.sh
# shellcheck source=deploy/lib.sh
source "$(dirname "$0")/lib.sh"
require_tools docker kind kubectl helm
helm_repos

NAME=lgtm-remote
TENANT=remote01
LOG_SHIPPER=${LOG_SHIPPER:-vector}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

setup_remote "$NAME" 2 10.21.0.0/16 10.22.0.0/16 240
mesh_namespace "$NAME" observability

log "$NAME: kube-prometheus-stack (remote write to $(mimir_push_url))"
cat >"$tmp/prometheus.yaml" <<EOF
alertmanager: { enabled: false }
grafana: { enabled: false }
prometheus:
  prometheusSpec:
    externalLabels: { cluster: $NAME }
    remoteWrite:
      - url: $(mimir_push_url)
        headers: { X-Scope-OrgID: $TENANT }
    serviceMonitorSelectorNilUsesHelmValues: false
    podMonitorSelectorNilUsesHelmValues: false
    ruleSelectorNilUsesHelmValues: false
    retention: 2h
    resources:
      requests: { cpu: 100m, memory: 512Mi }
EOF
# shellcheck disable=SC2046
h "$NAME" upgrade --install monitor prometheus-community/kube-prometheus-stack -n observability \
  $(version_flag KPS_CHART_VERSION) -f "$tmp/prometheus.yaml" --wait --timeout 10m

if [[ $LOG_SHIPPER == fluentbit ]]; then
  log "$NAME: Fluent Bit (pod logs to $(loki_push_url))"
  cat >"$tmp/fluentbit.yaml" <<EOF
config:
  outputs: |
    [OUTPUT]
        Name        loki
        Match       kube.*
        Host        $(central_host loki-write loki)
        Port        3100
        Tenant_ID   $TENANT
        Labels      cluster=$NAME, job=fluent-bit
        Label_Map_Path /fluent-bit/etc/labelmap.json
        Remove_Keys kubernetes,stream
        Line_Format json
        Auto_Kubernetes_Labels off
  extraFiles:
    labelmap.json: |
      { "kubernetes": { "namespace_name": "namespace", "pod_name": "pod", "container_name": "container", "host": "node" }, "stream": "stream" }
EOF
  # shellcheck disable=SC2046
  h "$NAME" upgrade --install fluent-bit fluent/fluent-bit -n observability $(version_flag FLUENTBIT_CHART_VERSION) \
    -f "$tmp/fluentbit.yaml" --wait --timeout 10m
else
  log "$NAME: Vector (pod logs to $(loki_push_url))"
  # Vector's chart runs customConfig through tpl: its own {{ }} templates are escaped.
  cat >"$tmp/vector.yaml" <<EOF
role: Agent
customConfig:
  data_dir: /vector-data-dir
  api: { enabled: false }
  sources:
    pods:
      type: kubernetes_logs
  transforms:
    no_proxies:
      type: filter
      inputs: [pods]
      condition: '!includes(["linkerd-proxy", "istio-proxy"], .kubernetes.container_name)'
  sinks:
    loki:
      type: loki
      inputs: [no_proxies]
      endpoint: http://$(central_host loki-write loki):3100
      tenant_id: $TENANT
      encoding: { codec: json }
      out_of_order_action: accept
      labels:
        cluster: $NAME
        job: vector
        namespace: '{{ "{{" }} kubernetes.pod_namespace {{ "}}" }}'
        pod: '{{ "{{" }} kubernetes.pod_name {{ "}}" }}'
        container: '{{ "{{" }} kubernetes.container_name {{ "}}" }}'
        node: '{{ "{{" }} kubernetes.pod_node_name {{ "}}" }}'
EOF
  # shellcheck disable=SC2046
  h "$NAME" upgrade --install vector vector/vector -n observability $(version_flag VECTOR_CHART_VERSION) \
    -f "$tmp/vector.yaml" --wait --timeout 10m
fi

log "$NAME: Grafana Alloy for traces (to $(tempo_otlp_host))"
cat >"$tmp/alloy.yaml" <<EOF
controller:
  type: deployment
  replicas: 1
alloy:
  extraPorts:
    - { name: otlp-grpc, port: 4317, targetPort: 4317, protocol: TCP }
    - { name: otlp-http, port: 4318, targetPort: 4318, protocol: TCP }
    - { name: jaeger-compact, port: 6831, targetPort: 6831, protocol: UDP }
    - { name: jaeger-grpc, port: 14250, targetPort: 14250, protocol: TCP }
  configMap:
    content: |
      otelcol.receiver.otlp "default" {
        grpc { endpoint = "0.0.0.0:4317" }
        http { endpoint = "0.0.0.0:4318" }
        output { traces = [otelcol.processor.batch.default.input] }
      }
      otelcol.receiver.jaeger "default" {
        protocols {
          grpc { endpoint = "0.0.0.0:14250" }
          thrift_compact { endpoint = "0.0.0.0:6831" }
        }
        output { traces = [otelcol.processor.batch.default.input] }
      }
      otelcol.processor.batch "default" {
        output { traces = [otelcol.exporter.otlp.tempo.input] }
      }
      otelcol.exporter.otlp "tempo" {
        client {
          endpoint = "$(tempo_otlp_host)"
          tls { insecure = true }
          headers = { "X-Scope-OrgID" = "$TENANT" }
        }
      }
EOF
# shellcheck disable=SC2046
h "$NAME" upgrade --install alloy grafana/alloy -n observability $(version_flag ALLOY_CHART_VERSION) \
  -f "$tmp/alloy.yaml" --wait --timeout 10m

deploy_tns "$NAME" "$NAME" alloy.observability.svc
grafana_datasources "Remote TNS" "$TENANT"
log "scenario 1 is up: cluster $NAME, tenant $TENANT, $(mesh) mesh, logs by $LOG_SHIPPER"
