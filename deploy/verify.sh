#!/usr/bin/env bash
# Verifies a deployed scenario end to end, from the central stack: the remote reaches the central
# Mimir, Loki and Tempo through the mesh, and the central stack holds the scenario's data in its
# tenant: series (the remote's own targets, cAdvisor, TNS), pod log lines (TNS) with the `stream`
# label, Kubernetes events, TNS traces, and the scenario's datasources in Grafana. Exits 1 with
# what is missing; the deploy scripts call it last, so a scenario that does not ship fails its
# deploy (a broken mesh link fails, not warns).
#   ./deploy/verify.sh central | 1 | 2 | 3 | 4 | all      (all: the centre and every running scenario)
# Env: VERIFY_TIMEOUT (seconds to wait for each kind of data, default 300), VERIFY_INTERVAL
#      (seconds between tries, default 10), VERIFY_ENDPOINTS="MIMIR LOKI TEMPO GRAFANA" (base URLs
#      of the central query paths instead of port-forwards; the mesh link is then not tested;
#      scripts/check-chart.sh runs it so against a fake central stack).
# shellcheck source=deploy/lib.sh
source "$(dirname "$0")/lib.sh"
for t in curl jq kubectl; do command -v "$t" >/dev/null 2>&1 || die "missing tool: $t"; done

timeout=${VERIFY_TIMEOUT:-300}
interval=${VERIFY_INTERVAL:-10}
# The image of the one-shot pod that tests the mesh link from a remote cluster.
CURL_IMAGE=${CURL_IMAGE:-curlimages/curl:8.11.1}
failures=()
ok() { printf '  \033[1;32mok\033[0m   %s\n' "$*"; }
bad() { printf '  \033[1;31mFAIL\033[0m %s\n' "$*"; failures+=("$*"); }

# scenario -> cluster|tenant|log selector of TNS|events selector ("" when not checkable)
scenario() {
  case $1 in
    1) echo 'lgtm-remote|remote01|{cluster="lgtm-remote", namespace="tns"}|{cluster="lgtm-remote", job="integrations/kubernetes/eventhandler"}' ;;
    2) echo 'lgtm-remote-alloy|remote02|{cluster="lgtm-remote-alloy", namespace="tns"}|{cluster="lgtm-remote-alloy", job="integrations/kubernetes/eventhandler"}' ;;
    # Scenario 3 ships logs as OTLP: Loki indexes the k8s.* resource attributes as k8s_* labels;
    # the k8s_events receiver's records carry no label to select them by.
    3) echo 'lgtm-remote-otel|remote03|{k8s_cluster_name="lgtm-remote-otel", k8s_namespace_name="tns"}|' ;;
    4) echo 'lgtm-remote-agent|remote04|{cluster="lgtm-remote-agent", namespace="tns"}|{cluster="lgtm-remote-agent", job="integrations/kubernetes/eventhandler"}' ;;
    *) die "unknown scenario $1 (central, 1, 2, 3, 4 or all)" ;;
  esac
}

# Port-forwards to the central query paths, torn down on exit.
pids=()
cleanup() { local p; for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
forward() { # NAMESPACE SERVICE LOCAL:REMOTE URL-to-wait-for
  k "$CENTRAL" -n "$1" port-forward "svc/$2" "$3" >/dev/null 2>&1 &
  pids+=($!)
  local _
  for _ in $(seq 30); do curl -ksf -o /dev/null "$4" && return 0; sleep 1; done
  bad "port-forward to $1/$2 ($4) does not answer"
  return 1
}
MIMIR=http://127.0.0.1:18080/prometheus
LOKI=http://127.0.0.1:13100
TEMPO=http://127.0.0.1:13200
GRAFANA=https://127.0.0.1:13000
connect_central() {
  if [[ -n ${VERIFY_ENDPOINTS:-} ]]; then
    read -r MIMIR LOKI TEMPO GRAFANA <<<"$VERIFY_ENDPOINTS"
    MIMIR=$MIMIR/prometheus
    return 0
  fi
  kind get clusters 2>/dev/null | grep -qx "$CENTRAL" || die "no cluster $CENTRAL"
  forward mimir mimir-query-frontend 18080:8080 http://127.0.0.1:18080/ready || true
  forward loki loki-read 13100:3100 http://127.0.0.1:13100/ready || true
  forward tempo tempo-query-frontend 13200:3200 http://127.0.0.1:13200/ready || true
  forward observability grafana 13000:443 https://127.0.0.1:13000/api/health || true
}

# eventually WHAT COMMAND...: retries COMMAND (which prints a number) until it prints > 0; a
# check that never passes is recorded with `bad`.
eventually() {
  local what=$1 deadline=$((SECONDS + timeout)) v
  shift
  while :; do
    v=$("$@" 2>/dev/null || true)
    if [[ -n $v && $v != 0 && $v != null ]]; then ok "$what: $v"; return 0; fi
    # A failed check is recorded and the others still run (exit 1 at the end).
    ((SECONDS < deadline)) || { bad "$what: nothing within ${timeout}s"; return 0; }
    sleep "$interval"
  done
}
promql() { # TENANT QUERY -> the first value
  curl -fsS -G "$MIMIR/api/v1/query" -H "X-Scope-OrgID: $1" --data-urlencode "query=$2" | jq -r '.data.result[0].value[1] // empty'
}
logql() { # TENANT QUERY -> the first value (instant metric query)
  curl -fsS -G "$LOKI/loki/api/v1/query" -H "X-Scope-OrgID: $1" --data-urlencode "query=$2" | jq -r '.data.result[0].value[1] // empty'
}
traceql() { # TENANT QUERY -> traces found in the last hour
  curl -fsS -G "$TEMPO/api/search" -H "X-Scope-OrgID: $1" --data-urlencode "q=$2" \
    --data-urlencode "start=$(($(date +%s) - 3600))" --data-urlencode "end=$(date +%s)" | jq -r '.traces | length'
}
datasource() { # UID -> 1 when Grafana has it
  curl -ksf -u admin:Adm1nAdm1n "$GRAFANA/api/datasources/uid/$1" | jq -r 'if .uid then 1 else 0 end'
}

# mesh_link NAME: from a pod of the remote's observability namespace (enrolled in the mesh),
# the central distributors answer through the mesh.
mesh_link() {
  local name=$1 out
  out=$(k "$name" -n observability run "verify-link-$RANDOM" --image="$CURL_IMAGE" --restart=Never --rm -i --quiet \
    --overrides='{"metadata":{"annotations":{"config.alpha.linkerd.io/proxy-enable-native-sidecar":"true"}}}' \
    --command -- sh -c "
      for u in http://$(central_host mimir-distributor mimir):8080/ready http://$(central_host loki-write loki):3100/ready; do
        printf '%s %s\n' \"\$u\" \"\$(curl -s -o /dev/null -m 10 -w '%{http_code}' \"\$u\")\"
      done
      # Tempo's OTLP/gRPC port: any HTTP/2 answer means reachable.
      printf '%s %s\n' $(tempo_otlp_host) \"\$(curl -s -o /dev/null -m 10 --http2-prior-knowledge -w '%{http_code}' http://$(tempo_otlp_host)/)\"
    " 2>&1) || true
  while read -r url code; do
    [[ -z $url ]] && continue
    if [[ $url == *4317 ]]; then
      if [[ $code =~ ^[1-5][0-9][0-9]$ ]]; then ok "$name -> $url reachable (HTTP/2 $code)"; else bad "$name -> $url unreachable ($code)"; fi
    elif [[ $code == 200 ]]; then ok "$name -> $url 200"
    else bad "$name -> $url answered ${code:-nothing} (mesh link broken?)"; fi
  done < <(grep -E '^(http|[a-z0-9.-]+:4317)' <<<"$out")
  grep -qE '^(http|[a-z0-9.-]+:4317)' <<<"$out" || bad "$name: the link test pod did not run: $out"
}

verify_central() {
  log "central: backends and Grafana"
  local svc ns s
  [[ -n ${VERIFY_ENDPOINTS:-} ]] || for svc in "mimir mimir-distributor" "loki loki-write" "tempo tempo-distributor"; do
    read -r ns s <<<"$svc"
    if k "$CENTRAL" -n "$ns" get svc "$s" >/dev/null 2>&1; then ok "$ns/$s exists"; else bad "$ns/$s missing"; fi
  done
  eventually "Grafana datasource mimir-_local" datasource mimir-_local
}

verify_scenario() {
  local n=$1 cluster tenant logs events
  IFS='|' read -r cluster tenant logs events <<<"$(scenario "$n")"
  if [[ -n ${VERIFY_ENDPOINTS:-} ]]; then
    log "scenario $n: cluster $cluster, tenant $tenant (given endpoints; mesh link not tested)"
  elif ! kind get clusters 2>/dev/null | grep -qx "$cluster"; then
    [[ $target == all ]] && { log "scenario $n ($cluster): not running, skipped"; return 0; }
    bad "scenario $n: no cluster $cluster"; return 0
  else
    log "scenario $n: cluster $cluster, tenant $tenant ($(mesh) mesh)"
    mesh_link "$cluster"
  fi
  eventually "Mimir: targets up" promql "$tenant" "count(up{cluster=\"$cluster\"} == 1)"
  eventually "Mimir: cAdvisor series" promql "$tenant" "count(container_cpu_usage_seconds_total{cluster=\"$cluster\", namespace=\"observability\"})"
  eventually "Mimir: TNS series" promql "$tenant" "count({cluster=\"$cluster\", namespace=\"tns\"})"
  eventually "Loki: TNS log lines (10m)" logql "$tenant" "sum(count_over_time($logs [10m]))"
  if [[ $n != 3 ]]; then
    eventually "Loki: stream label (stderr lines, 10m)" logql "$tenant" "sum(count_over_time(${logs%\}}, stream=\"stderr\"} [10m]))"
  fi
  if [[ -n $events ]]; then
    eventually "Loki: Kubernetes events (1h)" logql "$tenant" "sum(count_over_time($events [1h]))"
  else
    log "  (events of scenario $n: no label selects them in Loki; not checked)"
  fi
  # The upstream PoC's success query first; TNS's tracer names its services app, db and lb.
  if [[ $(traceql "$tenant" '{ resource.service.name = "tns-app" }' 2>/dev/null) =~ ^[1-9] ]]; then
    ok "Tempo: the PoC's query { resource.service.name = \"tns-app\" } finds traces"
  else
    eventually "Tempo: TNS traces { resource.service.name =~ \"app|db|lb\" }" traceql "$tenant" '{ resource.service.name =~ "app|db|lb" }'
  fi
  eventually "Grafana datasources of $tenant" datasource "mimir-$tenant"
}

target=${1:-all}
connect_central
case $target in
  central) verify_central ;;
  all) verify_central; for n in 1 2 3 4; do verify_scenario "$n"; done ;;
  *) verify_scenario "$target" ;;
esac
if ((${#failures[@]})); then
  printf '\n\033[1;31mverify %s: %d check(s) failed\033[0m\n' "$target" "${#failures[@]}" >&2
  printf '  - %s\n' "${failures[@]}" >&2
  exit 1
fi
log "verify $target: every check passed"
