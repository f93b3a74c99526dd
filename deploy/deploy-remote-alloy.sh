#!/usr/bin/env bash
# Scenario 2, Grafana Alloy only: Kind cluster lgtm-remote-alloy (tenant remote02, cluster id 4,
# pods 10.41.0.0/16, services 10.42.0.0/16, load balancers x.x.x.224/29) with two Alloy releases:
# a DaemonSet (pod logs from the node's files, kubelet and cAdvisor metrics of its node) and a
# clustered Deployment
# (ServiceMonitors/PodMonitors without the operator, Kubernetes events, OTLP and Jaeger traces),
# the Prometheus Operator CRDs and the TNS demo app. Values: deploy/values/remote/alloy-*.yaml.
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

log "$NAME: Alloy DaemonSet (pod logs from /var/log/pods, kubelet, cAdvisor)"
fill "$DEPLOY_DIR/values/remote/alloy-daemonset.yaml" >"$tmp/alloy-daemonset.yaml"
# shellcheck disable=SC2046
h "$NAME" upgrade --install alloy-daemonset grafana/alloy -n observability $(version_flag ALLOY_CHART_VERSION) \
  -f "$tmp/alloy-daemonset.yaml" --wait --timeout 10m

log "$NAME: Alloy Deployment (ServiceMonitors, PodMonitors, events, traces), 2 replicas, clustered"
fill "$DEPLOY_DIR/values/remote/alloy-deployment.yaml" >"$tmp/alloy-deployment.yaml"
# shellcheck disable=SC2046
h "$NAME" upgrade --install alloy-deployment grafana/alloy -n observability $(version_flag ALLOY_CHART_VERSION) \
  -f "$tmp/alloy-deployment.yaml" --wait --timeout 10m

deploy_tns "$NAME" "$NAME" alloy-deployment.observability.svc
grafana_datasources "Remote Alloy" "$TENANT"
"$DEPLOY_DIR/verify.sh" 2
log "scenario 2 is up: cluster $NAME, tenant $TENANT, $(mesh) mesh"
