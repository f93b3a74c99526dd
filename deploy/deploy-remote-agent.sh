#!/usr/bin/env bash
# Scenario 4: lgtm-agent. Kind cluster lgtm-remote-agent (tenant remote04, cluster id 5, pods
# 10.51.0.0/16, services 10.52.0.0/16, load balancers x.x.x.216/29), linked to lgtm-central
# through the chosen mesh, with the Prometheus Operator CRDs (no operator), the TNS demo app and
# its ServiceMonitors (its Jaeger spans to the node's agent), and the chart charts/lgtm-agent in
# both modes.
#   ./deploy/deploy-remote-agent.sh
# Env: IMAGE (default lgtm-agent:dev), SKIP_BUILD=yes to reuse an existing local image,
#      AGENT_REPLICAS (StatefulSet replicas, default 2).
# shellcheck source=deploy/lib.sh
source "$(dirname "$0")/lib.sh"
require_tools docker kind kubectl helm
helm_repos

NAME=lgtm-remote-agent
TENANT=remote04
IMAGE=${IMAGE:-lgtm-agent:dev}

if [[ ${SKIP_BUILD:-no} != yes ]]; then
  log "building $IMAGE from $REPO_DIR (Dockerfile)"
  docker build -t "$IMAGE" "$REPO_DIR"
fi
docker image inspect "$IMAGE" >/dev/null 2>&1 || die "no local image $IMAGE (unset SKIP_BUILD)"

setup_remote "$NAME" 5 10.51.0.0/16 10.52.0.0/16 216
prometheus_operator_crds "$NAME"

log "$NAME: loading $IMAGE into the Kind nodes (docker save | kind load image-archive)"
load_image "$NAME" "$IMAGE"

mesh_namespace "$NAME" observability
log "$NAME: helm upgrade --install lgtm-agent charts/lgtm-agent (DaemonSet + StatefulSet)"
helm --kube-context "$(ctx "$NAME")" upgrade --install lgtm-agent "$REPO_DIR/charts/lgtm-agent" \
  -n observability -f "$DEPLOY_DIR/values/lgtm-agent-remote04.yaml" \
  --set clusterName="$NAME" --set tenant="$TENANT" \
  --set image.repository="${IMAGE%:*}" --set image.tag="${IMAGE##*:}" \
  --set endpoints.mimir="$(central_host mimir-distributor mimir):8080" \
  --set endpoints.loki="$(central_host loki-write loki):3100" \
  --set endpoints.tempo="$(central_host tempo-distributor tempo):4317" \
  --set cluster.replicas="${AGENT_REPLICAS:-2}" \
  --wait --timeout 10m

# TNS sends its spans with the Jaeger agent protocol (UDP 6831) to the agent of its own node,
# through the node-local Service (internalTrafficPolicy: Local); the DaemonSet forwards them to
# the StatefulSet for tail sampling, which ships to Tempo.
deploy_tns "$NAME" "$NAME" lgtm-agent-otlp.observability.svc

grafana_datasources "Remote Agent" "$TENANT"

"$DEPLOY_DIR/verify.sh" 4
log "scenario 4 is up: cluster $NAME, tenant $TENANT, $(mesh) mesh"
cat <<EOF

Check:
  kubectl --context $(ctx "$NAME") -n observability get ds,sts,pods
  kubectl --context $(ctx "$NAME") -n observability port-forward sts/lgtm-agent-cluster 9464 &
  curl -s localhost:9464/readyz; curl -s localhost:9464/targets
In Grafana (Explore), datasources "Mimir/Loki/Tempo Remote Agent":
  up{cluster="$NAME"}          {cluster="$NAME", namespace="tns"}          {resource.service.name=~"app|db|lb"}
Compare with the other scenarios: ./deploy/bench-compare.sh
EOF
