#!/usr/bin/env bash
# Scenario 2, Grafana Alloy only: Kind cluster lgtm-remote-alloy (tenant remote02, cluster id 4,
# pods 10.41.0.0/16, services 10.42.0.0/16, load balancers x.x.x.224/29) with two Alloy releases:
# a DaemonSet (pod logs, kubelet and cAdvisor metrics of its node) and a clustered Deployment
# (ServiceMonitors/PodMonitors without the operator, Kubernetes events, OTLP and Jaeger traces),
# the Prometheus Operator CRDs and the TNS demo app.
#   ./deploy/deploy-remote-alloy.sh
# shellcheck source=deploy/lib.sh
source "$(dirname "$0")/lib.sh"
require_tools docker kind kubectl helm
helm_repos

NAME=lgtm-remote-alloy
TENANT=remote02
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

setup_remote "$NAME" 4 10.41.0.0/16 10.42.0.0/16 224
prometheus_operator_crds "$NAME"
mesh_namespace "$NAME" observability

# The exporters both releases share.
exporters=$(cat <<EOF
      prometheus.remote_write "mimir" {
        endpoint {
          url = "$(mimir_push_url)"
          headers = { "X-Scope-OrgID" = "$TENANT" }
        }
        external_labels = { cluster = "$NAME" }
      }
      loki.write "loki" {
        endpoint {
          url = "$(loki_push_url)"
          tenant_id = "$TENANT"
        }
        external_labels = { cluster = "$NAME" }
      }
EOF
)

log "$NAME: Alloy DaemonSet (logs, kubelet, cAdvisor)"
cat >"$tmp/alloy-daemonset.yaml" <<EOF
controller:
  type: daemonset
  tolerations:
    - operator: Exists
alloy:
  mounts:
    varlog: true
    dockercontainers: true
  extraEnv:
    - name: NODE_NAME
      valueFrom: { fieldRef: { fieldPath: spec.nodeName } }
  resources:
    requests: { cpu: 100m, memory: 128Mi }
  configMap:
    content: |
$exporters
      discovery.kubernetes "pods" {
        role = "pod"
        selectors {
          role  = "pod"
          field = "spec.nodeName=" + sys.env("NODE_NAME")
        }
      }
      discovery.relabel "pods" {
        targets = discovery.kubernetes.pods.targets
        rule {
          source_labels = ["__meta_kubernetes_pod_container_name"]
          regex         = "linkerd-proxy|istio-proxy"
          action        = "drop"
        }
        rule {
          source_labels = ["__meta_kubernetes_namespace"]
          target_label  = "namespace"
        }
        rule {
          source_labels = ["__meta_kubernetes_pod_name"]
          target_label  = "pod"
        }
        rule {
          source_labels = ["__meta_kubernetes_pod_container_name"]
          target_label  = "container"
        }
        rule {
          source_labels = ["__meta_kubernetes_pod_label_app_kubernetes_io_name", "__meta_kubernetes_pod_label_app"]
          regex         = "^;*([^;]+)(;.*)?$"
          target_label  = "app"
        }
        rule {
          source_labels = ["__meta_kubernetes_namespace", "__meta_kubernetes_pod_container_name"]
          separator     = "/"
          target_label  = "job"
        }
      }
      loki.source.kubernetes "pods" {
        targets    = discovery.relabel.pods.output
        forward_to = [loki.write.loki.receiver]
      }
      discovery.kubernetes "node" {
        role = "node"
        selectors {
          role  = "node"
          field = "metadata.name=" + sys.env("NODE_NAME")
        }
      }
      prometheus.scrape "kubelet" {
        targets           = discovery.kubernetes.node.targets
        job_name          = "integrations/kubernetes/kubelet"
        scheme            = "https"
        bearer_token_file = "/var/run/secrets/kubernetes.io/serviceaccount/token"
        tls_config { insecure_skip_verify = true }
        forward_to        = [prometheus.remote_write.mimir.receiver]
      }
      prometheus.scrape "cadvisor" {
        targets           = discovery.kubernetes.node.targets
        job_name          = "integrations/kubernetes/cadvisor"
        metrics_path      = "/metrics/cadvisor"
        scheme            = "https"
        bearer_token_file = "/var/run/secrets/kubernetes.io/serviceaccount/token"
        honor_timestamps  = false
        tls_config { insecure_skip_verify = true }
        forward_to        = [prometheus.remote_write.mimir.receiver]
      }
EOF
# shellcheck disable=SC2046
h "$NAME" upgrade --install alloy-daemonset grafana/alloy -n observability $(version_flag ALLOY_CHART_VERSION) \
  -f "$tmp/alloy-daemonset.yaml" --wait --timeout 10m

log "$NAME: Alloy Deployment (ServiceMonitors, PodMonitors, events, traces), 2 replicas, clustered"
cat >"$tmp/alloy-deployment.yaml" <<EOF
controller:
  type: deployment
  replicas: 2
alloy:
  clustering:
    enabled: true
  resources:
    requests: { cpu: 200m, memory: 256Mi }
  extraPorts:
    - { name: otlp-grpc, port: 4317, targetPort: 4317, protocol: TCP }
    - { name: otlp-http, port: 4318, targetPort: 4318, protocol: TCP }
    - { name: jaeger-compact, port: 6831, targetPort: 6831, protocol: UDP }
    - { name: jaeger-grpc, port: 14250, targetPort: 14250, protocol: TCP }
  configMap:
    content: |
$exporters
      prometheus.operator.servicemonitors "all" {
        forward_to = [prometheus.remote_write.mimir.receiver]
        clustering { enabled = true }
      }
      prometheus.operator.podmonitors "all" {
        forward_to = [prometheus.remote_write.mimir.receiver]
        clustering { enabled = true }
      }
      loki.source.kubernetes_events "events" {
        job_name   = "integrations/kubernetes/eventhandler"
        log_format = "logfmt"
        forward_to = [loki.write.loki.receiver]
      }
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
h "$NAME" upgrade --install alloy-deployment grafana/alloy -n observability $(version_flag ALLOY_CHART_VERSION) \
  -f "$tmp/alloy-deployment.yaml" --wait --timeout 10m

deploy_tns "$NAME" "$NAME" alloy-deployment.observability.svc
grafana_datasources "Remote Alloy" "$TENANT"
log "scenario 2 is up: cluster $NAME, tenant $TENANT, $(mesh) mesh"
