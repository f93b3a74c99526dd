#!/usr/bin/env bash
# Scenario 1, the traditional stack: Kind cluster lgtm-remote (tenant remote01, cluster id 2,
# pods 10.21.0.0/16, services 10.22.0.0/16, load balancers x.x.x.240/29) with Prometheus
# (kube-prometheus-stack: operator, kubelet/cAdvisor, node-exporter, kube-state-metrics, remote
# write to Mimir), Vector or Fluent Bit (LOG_SHIPPER=fluentbit) for pod logs to Loki, Grafana
# Alloy for traces (OTLP and Jaeger) to Tempo and Kubernetes events to Loki, and the TNS demo
# app. Values: deploy/values/remote/{prometheus,vector,fluent-bit,alloy-traces}.yaml.
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
fill "$DEPLOY_DIR/values/remote/prometheus.yaml" >"$tmp/prometheus.yaml"
# shellcheck disable=SC2046
h "$NAME" upgrade --install monitor prometheus-community/kube-prometheus-stack -n observability \
  $(version_flag KPS_CHART_VERSION) -f "$tmp/prometheus.yaml" --wait --timeout 10m

if [[ $LOG_SHIPPER == fluentbit ]]; then
  log "$NAME: Fluent Bit (pod logs to $(loki_push_url))"
  fill "$DEPLOY_DIR/values/remote/fluent-bit.yaml" >"$tmp/fluentbit.yaml"
  # shellcheck disable=SC2046
  h "$NAME" upgrade --install fluent-bit fluent/fluent-bit -n observability $(version_flag FLUENTBIT_CHART_VERSION) \
    -f "$tmp/fluentbit.yaml" --wait --timeout 10m
else
  log "$NAME: Vector (pod logs to $(loki_push_url))"
  fill "$DEPLOY_DIR/values/remote/vector.yaml" >"$tmp/vector.yaml"
  # shellcheck disable=SC2046
  h "$NAME" upgrade --install vector vector/vector -n observability $(version_flag VECTOR_CHART_VERSION) \
    -f "$tmp/vector.yaml" --wait --timeout 10m
fi

log "$NAME: Grafana Alloy for traces (to $(tempo_otlp_host)) and Kubernetes events"
fill "$DEPLOY_DIR/values/remote/alloy-traces.yaml" >"$tmp/alloy.yaml"
# shellcheck disable=SC2046
h "$NAME" upgrade --install alloy grafana/alloy -n observability $(version_flag ALLOY_CHART_VERSION) \
  -f "$tmp/alloy.yaml" --wait --timeout 10m

deploy_tns "$NAME" "$NAME" alloy.observability.svc
grafana_datasources "Remote TNS" "$TENANT"
"$DEPLOY_DIR/verify.sh" 1
log "scenario 1 is up: cluster $NAME, tenant $TENANT, $(mesh) mesh, logs by $LOG_SHIPPER"
