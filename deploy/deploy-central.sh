#!/usr/bin/env bash
# lgtm-central: Mimir, Loki, Tempo (multi-tenant) and Grafana, the chosen mesh, the services the
# remotes push to exported through it, the lgtm-agent dashboards, and "Local" datasources.
#   ./deploy/deploy-certs.sh && ./deploy/deploy-central.sh
# shellcheck source=deploy/lib.sh
source "$(dirname "$0")/lib.sh"
require_tools docker kind kubectl helm
helm_repos

# Cluster id 1, pods 10.11.0.0/16, services 10.12.0.0/16, load balancers x.x.x.248/29.
kind_create "$CENTRAL" 10.11.0.0/16 10.12.0.0/16 "${CENTRAL_WORKERS:-2}"
install_cni "$CENTRAL" 1 248
install_mesh "$CENTRAL"
if [[ $(mesh) == cilium ]]; then
  cilium clustermesh status --context "$(ctx "$CENTRAL")" --wait --wait-duration 5m
fi

for ns in mimir loki tempo storage; do mesh_namespace "$CENTRAL" "$ns"; done
k "$CENTRAL" create namespace observability --dry-run=client -o yaml | k "$CENTRAL" apply -f - >/dev/null

# The object store of the three backends (as the upstream PoC: RustFS, no MinIO subcharts).
log "$CENTRAL: RustFS (S3 for Loki, Mimir, Tempo)"
# shellcheck disable=SC2046
h "$CENTRAL" upgrade --install rustfs rustfs/rustfs -n storage $(version_flag RUSTFS_CHART_VERSION) \
  -f "$DEPLOY_DIR/values/central/rustfs.yaml" --wait --timeout 10m
k "$CENTRAL" -n storage delete job rustfs-provisioning --ignore-not-found
k "$CENTRAL" apply -f "$DEPLOY_DIR/manifests/rustfs-provisioning.yaml"
k "$CENTRAL" -n storage wait job/rustfs-provisioning --for=condition=complete --timeout=5m

log "$CENTRAL: Mimir"
# shellcheck disable=SC2046
h "$CENTRAL" upgrade --install mimir grafana/mimir-distributed -n mimir $(version_flag MIMIR_CHART_VERSION) \
  -f "$DEPLOY_DIR/values/central/mimir.yaml"
log "$CENTRAL: Loki"
# shellcheck disable=SC2046
h "$CENTRAL" upgrade --install loki grafana-community/loki -n loki $(version_flag LOKI_CHART_VERSION) \
  -f "$DEPLOY_DIR/values/central/loki.yaml"
log "$CENTRAL: Tempo"
# shellcheck disable=SC2046
h "$CENTRAL" upgrade --install tempo grafana-community/tempo-distributed -n tempo $(version_flag TEMPO_CHART_VERSION) \
  -f "$DEPLOY_DIR/values/central/tempo.yaml"

log "$CENTRAL: Grafana"
k "$CENTRAL" -n observability create secret tls grafana-tls --dry-run=client -o yaml \
  --cert="$CERTS_DIR/grafana.crt" --key="$CERTS_DIR/grafana.key" | k "$CENTRAL" apply -f -
# shellcheck disable=SC2046
h "$CENTRAL" upgrade --install grafana grafana-community/grafana -n observability $(version_flag GRAFANA_CHART_VERSION) \
  -f "$DEPLOY_DIR/values/central/grafana.yaml"

# The comparison and self-metrics dashboards (deploy/dashboards/*.json).
for f in "$DEPLOY_DIR"/dashboards/*.json; do
  base=$(basename "$f" .json)
  k "$CENTRAL" -n observability create configmap "dashboard-$base" --from-file="$f" --dry-run=client -o yaml |
    k "$CENTRAL" label --local -f - grafana_dashboard=1 -o yaml |
    k "$CENTRAL" annotate --local -f - grafana_folder=lgtm-agent -o yaml |
    k "$CENTRAL" apply -f -
done
grafana_datasources Local _local

for ns in mimir loki tempo observability; do wait_rollout "$CENTRAL" "$ns"; done
export_central_services
"$DEPLOY_DIR/verify.sh" central

ip=$(k "$CENTRAL" -n observability get svc grafana -o jsonpath='{.status.loadBalancer.ingress[0].ip}')
log "lgtm-central is ready ($(mesh) mesh)."
cat <<EOF

Grafana: add "${ip:-<pending LB IP>} grafana.example.com" to /etc/hosts and open https://grafana.example.com
(admin / Adm1nAdm1n), or: kubectl --context $(ctx "$CENTRAL") -n observability port-forward svc/grafana 3000:443
and open https://localhost:3000.

Next: ./deploy/deploy-remote-agent.sh (scenario 4) and/or deploy-remote.sh, deploy-remote-alloy.sh, deploy-remote-otel.sh.
EOF
