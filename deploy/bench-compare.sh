#!/usr/bin/env bash
# Compares the agents of the running scenarios on the same workload (TNS), the same intervals
# (30s scrapes everywhere) and the same signals, all read from the central stack with each
# scenario's tenant:
#   - CPU (rate of container_cpu_usage_seconds_total) and memory (container_memory_working_set_bytes)
#     of the agents' containers, per scenario and per agent pod, average and peak over the window;
#   - the work each tenant delivered: samples/s (Mimir's per-tenant ingestion rate), log lines/s
#     and bytes/s (Loki), traces in the window (Tempo search);
#   - the cost per unit of work: CPU millicores per 1000 items/s (samples + log lines).
# Writes a table to stdout, and results.tsv, pods.tsv and comparison.svg (a bar chart, by
# deploy/bench-chart.py, Python without extra packages) to the output directory.
#   ./deploy/bench-compare.sh [-w 30m] [-o DIR]      (default DIR: ./bench-compare-<UTC time>)
# Agents' pods: every container of namespace observability in the remote cluster (Prometheus and
# its operator, node-exporter, kube-state-metrics, Vector/Fluent Bit, Alloy, the OTel operator and
# collectors, lgtm-agent), without mesh proxies. Scenarios whose tenant has no data are skipped;
# a scenario running more than TNS (scenario 3 with OTEL_DEMO=yes) is flagged as not comparable.
# shellcheck source=deploy/lib.sh
source "$(dirname "$0")/lib.sh"

window=30m
out=""
while getopts "w:o:h" opt; do
  case $opt in
    w) window=$OPTARG ;;
    o) out=$OPTARG ;;
    *) sed -n '2,19p' "$0"; exit 0 ;;
  esac
done
for t in curl jq kubectl python3 awk; do command -v "$t" >/dev/null 2>&1 || die "missing tool: $t"; done
out=${out:-./bench-compare-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"
seconds=$(awk -v w="$window" 'BEGIN { n = w + 0; u = substr(w, length(w)); m = (u == "h") ? 3600 : (u == "m") ? 60 : 1; print n * m }')

# scenario|cluster|tenant|log selector (scenario 3's logs arrive as OTLP: k8s_* labels)
scenarios=(
  "1 Prometheus+Vector+Alloy|lgtm-remote|remote01|{cluster=\"lgtm-remote\"}"
  "2 Alloy|lgtm-remote-alloy|remote02|{cluster=\"lgtm-remote-alloy\"}"
  "3 OpenTelemetry|lgtm-remote-otel|remote03|{k8s_cluster_name=\"lgtm-remote-otel\"}"
  "4 lgtm-agent|lgtm-remote-agent|remote04|{cluster=\"lgtm-remote-agent\"}"
)

pids=()
cleanup() { local p; for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
forward() { # NAMESPACE SERVICE LOCAL:REMOTE READY-URL
  k "$CENTRAL" -n "$1" port-forward "svc/$2" "$3" >/dev/null 2>&1 &
  pids+=($!)
  local _
  for _ in $(seq 30); do curl -fs -o /dev/null "$4" && return 0; sleep 1; done
  die "port-forward to $1/$2 does not answer ($4)"
}
# BENCH_ENDPOINTS="QUERY-FRONTEND DISTRIBUTOR LOKI TEMPO": base URLs instead of port-forwards
# (scripts/check-chart.sh runs this against a fake central stack).
if [[ -n ${BENCH_ENDPOINTS:-} ]]; then
  read -r MIMIR DISTRIBUTOR LOKI TEMPO <<<"$BENCH_ENDPOINTS"
  MIMIR=$MIMIR/prometheus
else
  forward mimir mimir-query-frontend 18080:8080 http://127.0.0.1:18080/ready
  forward mimir mimir-distributor 18081:8080 http://127.0.0.1:18081/ready
  forward loki loki-read 13100:3100 http://127.0.0.1:13100/ready
  forward tempo tempo-query-frontend 13200:3200 http://127.0.0.1:13200/ready
  MIMIR=http://127.0.0.1:18080/prometheus DISTRIBUTOR=http://127.0.0.1:18081 LOKI=http://127.0.0.1:13100 TEMPO=http://127.0.0.1:13200
fi

# prom TENANT PROMQL: "label value" lines (label: pod, or "total").
prom() {
  curl -fsS -G "$MIMIR/api/v1/query" -H "X-Scope-OrgID: $1" --data-urlencode "query=$2" |
    jq -r '.data.result[] | "\(.metric.pod // "total") \(.value[1])"'
}
one() { prom "$@" | awk 'NR == 1 { print $2 }'; }
loki() {
  curl -fsS -G "$LOKI/loki/api/v1/query" -H "X-Scope-OrgID: $1" --data-urlencode "query=$2" |
    jq -r '.data.result[0].value[1] // 0'
}
traces() {
  curl -fsS -G "$TEMPO/api/search" -H "X-Scope-OrgID: $1" --data-urlencode 'q={}' \
    --data-urlencode limit=100000 --data-urlencode "start=$(($(date +%s) - seconds))" --data-urlencode "end=$(date +%s)" |
    jq -r '.traces | length'
}
# Mimir's own per-tenant ingestion rate (samples/s, an exponentially weighted average).
samples_rate() { curl -fsS "$DISTRIBUTOR/api/v1/user_stats" -H "X-Scope-OrgID: $1" | jq -r '.ingestionRate // 0'; }

sel() { echo "cluster=\"$1\",namespace=\"observability\",container!=\"\",container!=\"POD\",container!~\"linkerd-proxy|istio-proxy|linkerd-init|istio-init|istio-validation\""; }
cpu() { echo "sum $2 (rate(container_cpu_usage_seconds_total{$(sel "$1")}[2m]))"; }
mem() { echo "sum $2 (container_memory_working_set_bytes{$(sel "$1")})"; }
f0() { awk -v v="${1:-0}" -v m="$2" 'BEGIN { printf "%.0f", v * m }'; }
f1() { awk -v v="${1:-0}" -v m="$2" 'BEGIN { printf "%.1f", v * m }'; }

printf 'scenario\ttenant\tpods\tcpu_avg_mcores\tcpu_max_mcores\tmem_avg_mib\tmem_max_mib\tsamples_per_s\tlog_lines_per_s\tlog_kib_per_s\ttraces\tmcores_per_1k_items_per_s\tcomparable\n' >"$out/results.tsv"
printf 'scenario\tpod\tcpu_avg_mcores\tmem_avg_mib\tmem_max_mib\n' >"$out/pods.tsv"
for s in "${scenarios[@]}"; do
  IFS='|' read -r label cluster tenant logsel <<<"$s"
  cpu_avg=$(one "$tenant" "avg_over_time(($(cpu "$cluster" ""))[$window:1m])" || true)
  if [[ -z $cpu_avg ]]; then
    printf '%-26s %-9s no data (scenario not running?)\n' "$label" "$tenant"
    continue
  fi
  cpu_max=$(one "$tenant" "max_over_time(($(cpu "$cluster" ""))[$window:1m])")
  mem_avg=$(one "$tenant" "avg_over_time(($(mem "$cluster" ""))[$window:1m])")
  mem_max=$(one "$tenant" "max_over_time(($(mem "$cluster" ""))[$window:1m])")
  pods=$(one "$tenant" "count(count by (pod) (container_memory_working_set_bytes{$(sel "$cluster")}))")
  samples=$(samples_rate "$tenant" || echo 0)
  lines=$(loki "$tenant" "sum(count_over_time($logsel [$window])) / $seconds" || echo 0)
  bytes=$(loki "$tenant" "sum(bytes_over_time($logsel [$window])) / $seconds" || echo 0)
  ntraces=$(traces "$tenant" || echo 0)
  per_unit=$(awk -v c="$cpu_avg" -v s="$samples" -v l="$lines" 'BEGIN { i = s + l; if (i > 0) printf "%.2f", c * 1000 / (i / 1000); else print "n/a" }')
  # The same workload everywhere: TNS runs, and nothing else heavy (the OpenTelemetry Demo).
  comparable=yes
  [[ -z $(one "$tenant" "count(up{cluster=\"$cluster\", namespace=\"tns\"})") ]] && comparable="no (TNS not scraped)"
  [[ -n $(one "$tenant" "count(container_memory_working_set_bytes{cluster=\"$cluster\", namespace=\"otel-demo\"})") ]] && comparable="no (OpenTelemetry Demo running)"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$label" "$tenant" "${pods:-0}" \
    "$(f0 "$cpu_avg" 1000)" "$(f0 "$cpu_max" 1000)" "$(f1 "$mem_avg" 9.5367431640625e-07)" "$(f1 "$mem_max" 9.5367431640625e-07)" \
    "$(f0 "$samples" 1)" "$(f1 "$lines" 1)" "$(f1 "$bytes" 0.0009765625)" "${ntraces:-0}" "$per_unit" "$comparable" >>"$out/results.tsv"
  declare -A pa=() pm=() px=()
  while read -r p v; do pa[$p]=$v; done < <(prom "$tenant" "avg_over_time(($(cpu "$cluster" "by (pod)"))[$window:1m])")
  while read -r p v; do pm[$p]=$v; done < <(prom "$tenant" "avg_over_time(($(mem "$cluster" "by (pod)"))[$window:1m])")
  while read -r p v; do px[$p]=$v; done < <(prom "$tenant" "max_over_time(($(mem "$cluster" "by (pod)"))[$window:1m])")
  for p in $(printf '%s\n' "${!pa[@]}" | sort); do
    printf '%s\t%s\t%s\t%s\t%s\n' "$label" "$p" "$(f0 "${pa[$p]}" 1000)" "$(f1 "${pm[$p]:-0}" 9.5367431640625e-07)" "$(f1 "${px[$p]:-0}" 9.5367431640625e-07)" >>"$out/pods.tsv"
  done
  unset pa pm px
done

printf '\nAgents of each scenario, last %s (central stack, per tenant)\n\n' "$window"
column -t -s $'\t' "$out/results.tsv"
printf '\nPer agent pod\n\n'
column -t -s $'\t' "$out/pods.tsv"
python3 "$DEPLOY_DIR/bench-chart.py" "$out/results.tsv" "$out/pods.tsv" "$out/comparison.svg" "last $window"
cat <<EOF

CPU: rate over 2m of container_cpu_usage_seconds_total, averaged / peaked over $window at 1m steps;
MEM: container_memory_working_set_bytes, the same way; sums over the agents' containers of each
cluster (mesh proxies excluded), and per pod. samples/s: Mimir's ingestion rate of the tenant
(/api/v1/user_stats); log lines/s and KiB/s: Loki over the window; traces: Tempo search over the
window. mcores per 1k items/s = CPU avg / ((samples/s + log lines/s) / 1000).
Files: $out/results.tsv, $out/pods.tsv, $out/comparison.svg
EOF
