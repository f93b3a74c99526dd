#!/usr/bin/env bash
# Compares the agents of the running scenarios: CPU (container_cpu_usage_seconds_total) and memory
# (container_memory_working_set_bytes) of the agents' containers, averaged and peaked over a
# window, read from the central Mimir with each scenario's tenant (X-Scope-OrgID).
#   ./deploy/bench-compare.sh [-w 30m] [-c]      -c: one row per container too
# Agents' pods: every container of namespace observability in the remote cluster (Prometheus and
# its operator, node-exporter, kube-state-metrics, Vector/Fluent Bit, Alloy, the OTel operator and
# collectors, lgtm-agent), without mesh proxies. Scenarios whose tenant has no data are skipped.
# Env: MIMIR_URL (default: a port-forward to lgtm-central's mimir-query-frontend).
# shellcheck source=deploy/lib.sh
source "$(dirname "$0")/lib.sh"

window=30m
by_container=no
while getopts "w:ch" opt; do
  case $opt in
    w) window=$OPTARG ;;
    c) by_container=yes ;;
    *) sed -n '2,10p' "$0"; exit 0 ;;
  esac
done
for t in curl jq kubectl; do command -v "$t" >/dev/null 2>&1 || die "missing tool: $t"; done

# scenario|cluster|tenant
scenarios=(
  "1 Prometheus+Vector+Alloy|lgtm-remote|remote01"
  "2 Alloy|lgtm-remote-alloy|remote02"
  "3 OpenTelemetry|lgtm-remote-otel|remote03"
  "4 lgtm-agent|lgtm-remote-agent|remote04"
)

pf_pid=""
cleanup() { [[ -n $pf_pid ]] && kill "$pf_pid" 2>/dev/null; return 0; }
trap cleanup EXIT
if [[ -z ${MIMIR_URL:-} ]]; then
  port=${MIMIR_LOCAL_PORT:-18080}
  kubectl --context "$(ctx "$CENTRAL")" -n mimir port-forward svc/mimir-query-frontend "$port:8080" >/dev/null 2>&1 &
  pf_pid=$!
  MIMIR_URL=http://127.0.0.1:$port/prometheus
  for _ in $(seq 30); do curl -fs "$MIMIR_URL/api/v1/status/buildinfo" -H 'X-Scope-OrgID: probe' >/dev/null 2>&1 && break; sleep 1; done
fi

# query TENANT PROMQL: instant query; prints "labelvalue value" lines (label: container or "total").
query() {
  curl -fsS -G "$MIMIR_URL/api/v1/query" -H "X-Scope-OrgID: $1" --data-urlencode "query=$2" |
    jq -r '.data.result[] | "\(.metric.container // "total") \(.value[1])"'
}

sel() { echo "cluster=\"$1\",namespace=\"observability\",container!=\"\",container!=\"POD\",container!~\"linkerd-proxy|istio-proxy|linkerd-init|istio-init|istio-validation\""; }
cpu() { echo "sum $2 (rate(container_cpu_usage_seconds_total{$(sel "$1")}[2m]))"; }
mem() { echo "sum $2 (container_memory_working_set_bytes{$(sel "$1")})"; }

printf '\nAgents of each scenario, last %s (central Mimir, per tenant)\n\n' "$window"
fmt='%-28s %-10s %5s %11s %11s %12s %12s\n'
# shellcheck disable=SC2059
printf "$fmt" SCENARIO TENANT PODS "CPU avg" "CPU max" "MEM avg" "MEM max"
# shellcheck disable=SC2059
printf "$fmt" "" "" "" "(millicores)" "(millicores)" "(MiB)" "(MiB)"
for s in "${scenarios[@]}"; do
  IFS='|' read -r label cluster tenant <<<"$s"
  groupings=("")
  [[ $by_container == yes ]] && groupings+=("by (container)")
  for g in "${groupings[@]}"; do
    declare -A ca=() cm=() ma=() mm=()
    while read -r c v; do ca[$c]=$v; done < <(query "$tenant" "avg_over_time(($(cpu "$cluster" "$g"))[$window:1m])" || true)
    [[ ${#ca[@]} -eq 0 ]] && { [[ -z $g ]] && printf '%-28s %-10s %s\n' "$label" "$tenant" "no data (scenario not running?)"; break; }
    while read -r c v; do cm[$c]=$v; done < <(query "$tenant" "max_over_time(($(cpu "$cluster" "$g"))[$window:1m])")
    while read -r c v; do ma[$c]=$v; done < <(query "$tenant" "avg_over_time(($(mem "$cluster" "$g"))[$window:1m])")
    while read -r c v; do mm[$c]=$v; done < <(query "$tenant" "max_over_time(($(mem "$cluster" "$g"))[$window:1m])")
    pods=$(query "$tenant" "count(count by (pod) (container_memory_working_set_bytes{$(sel "$cluster")}))" | awk '{print $2}')
    for c in "${!ca[@]}"; do
      name=$label
      [[ -n $g ]] && name="  $c" && pods=""
      # shellcheck disable=SC2059
      printf "$fmt" "$name" "$tenant" "${pods:-}" \
        "$(awk -v v="${ca[$c]}" 'BEGIN{printf "%.0f", v*1000}')" "$(awk -v v="${cm[$c]:-0}" 'BEGIN{printf "%.0f", v*1000}')" \
        "$(awk -v v="${ma[$c]:-0}" 'BEGIN{printf "%.1f", v/1048576}')" "$(awk -v v="${mm[$c]:-0}" 'BEGIN{printf "%.1f", v/1048576}')"
    done
    unset ca cm ma mm
  done
done
cat <<EOF

CPU: rate over 2m of container_cpu_usage_seconds_total, averaged / peaked over $window at 1m steps.
MEM: container_memory_working_set_bytes, averaged / peaked the same way. Sums over the agents'
containers of each cluster; the clusters' workloads differ (TNS vs the OpenTelemetry Demo), so
compare per unit of work with the dashboard "Agents: resource comparison" as well.
EOF
