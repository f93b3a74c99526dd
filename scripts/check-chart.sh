#!/usr/bin/env bash
# Static checks of the Helm chart and the deploy scripts, for CI, with the real Helm:
#   1. shellcheck on every script under deploy/ and scripts/
#   2. values.schema.json accepts values.yaml and every value file (and rejects typos);
#      `helm lint --strict` with each value file (Helm applies the schema too)
#   3. `helm template` with every value file, and `helm install --dry-run=client` of each
#   4. each render passes `kubernetes-validate --strict -k 1.31.0` (ServiceMonitor and
#      PrometheusRule, CRDs the tool has no schema for, are only reported as WARN by it; they are
#      accepted here, and only they, and checked structurally)
#   5. structural assertions on each render (checksums, probes, security contexts, RBAC, ...)
#   6. the agent configs in the rendered ConfigMaps pass `lgtm-agent validate --mode <mode>`
#   7. the alerting rules: `promtool check rules` and `promtool test rules`, and the chart's
#      PrometheusRule carries exactly the rule file
#   8. installs that must fail do, with the chart's message (no clusterName/tenant, ...)
# Helm is built from source at a pinned version with `go install helm.sh/helm/v4/cmd/helm@VERSION`
# (the Go module proxy serves it) into ~/.cache/lgtm-agent/tools/helm-VERSION, once: later runs
# reuse it. Installs shellcheck and promtool (apt) and kubernetes-validate (pip) when missing.
# Exit 1 on any failure.
# Env: LGTM_AGENT_BIN (default target/debug/lgtm-agent, built with cargo when missing),
#      KUBE_VERSION (default 1.31.0), HELM_VERSION (default v4.3.2),
#      LGTM_TOOLS_DIR (default ~/.cache/lgtm-agent/tools).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
start=$SECONDS
kube_version=${KUBE_VERSION:-1.31.0}
chart=charts/lgtm-agent
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

results=()
failed=0
pass() { results+=("PASS  $1"); }
fail() { results+=("FAIL  $1"); failed=1; }
step() { echo "== $*"; }

# --- tools --------------------------------------------------------------------------------------
step "tools"
if ! command -v shellcheck >/dev/null 2>&1; then
  echo "installing shellcheck (apt)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends shellcheck >/dev/null
fi
if ! command -v promtool >/dev/null 2>&1; then
  echo "installing promtool (apt package prometheus)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
if ! python3 -c 'import kubernetes_validate' 2>/dev/null; then
  echo "installing kubernetes-validate (pip)"
  python3 -m pip install -q kubernetes-validate
fi
kv=(python3 -m kubernetes_validate)
helm_version=${HELM_VERSION:-v4.3.2}
tools_dir=${LGTM_TOOLS_DIR:-$HOME/.cache/lgtm-agent/tools}
helm_bin=$tools_dir/helm-$helm_version/helm
if [[ ! -x $helm_bin || $("$helm_bin" version --template '{{.Version}}' 2>/dev/null) != "$helm_version" ]]; then
  command -v go >/dev/null 2>&1 || { echo "go is needed to build helm $helm_version (https://go.dev/dl/)" >&2; exit 1; }
  echo "building helm $helm_version into $tools_dir (go install; a few minutes, once)"
  mkdir -p "$tools_dir/helm-$helm_version"
  GOBIN=$tools_dir/helm-$helm_version go install -trimpath \
    -ldflags "-X helm.sh/helm/v4/internal/version.version=$helm_version" "helm.sh/helm/v4/cmd/helm@$helm_version"
fi
# Helm's own state (repositories, cache, plugins) stays in the temporary directory.
export HELM_CONFIG_HOME=$work/helm/config HELM_CACHE_HOME=$work/helm/cache HELM_DATA_HOME=$work/helm/data
helm() { "$helm_bin" "$@"; }
agent_bin=${LGTM_AGENT_BIN:-target/debug/lgtm-agent}
if [[ ! -x $agent_bin ]]; then
  echo "building lgtm-agent ($agent_bin is missing)"
  cargo build -q -p lgtm-agent
fi
echo "helm $(helm version --template '{{.Version}} ({{.GoVersion}})'), shellcheck $(shellcheck --version | sed -n 's/^version: //p'), kubernetes-validate $("${kv[@]}" --version), $(promtool --version 2>&1 | head -1), agent $agent_bin"

# --- 1. shellcheck ------------------------------------------------------------------------------
step "shellcheck"
mapfile -t scripts < <(find deploy scripts -type f -name '*.sh' | sort)
for s in "${scripts[@]}"; do
  if shellcheck -x "$s"; then pass "shellcheck $s"; else fail "shellcheck $s"; fi
done

# --- 2. values schema and helm lint -------------------------------------------------------------
step "values.schema.json, helm lint"
value_files=("$chart"/ci/*-values.yaml deploy/values/lgtm-agent-*.yaml)
if python3 - "$chart" "${value_files[@]}" >"$work/schema.log" 2>&1 <<'PY'
import json, sys, copy
import yaml, jsonschema
chart, files = sys.argv[1], sys.argv[2:]
schema = json.load(open(f"{chart}/values.schema.json"))
jsonschema.Draft7Validator.check_schema(schema)
defaults = yaml.safe_load(open(f"{chart}/values.yaml"))
def merge(a, b):
    for k, v in (b or {}).items():
        if isinstance(v, dict) and isinstance(a.get(k), dict):
            merge(a[k], v)
        else:
            a[k] = v
    return a
bad = 0
for name, values in [("values.yaml", defaults)] + [(f, merge(copy.deepcopy(defaults), yaml.safe_load(open(f)))) for f in files]:
    errs = sorted(jsonschema.Draft7Validator(schema).iter_errors(values), key=lambda e: list(e.path))
    for e in errs:
        print(f"{name}: {'.'.join(map(str, e.path))}: {e.message}")
    bad |= bool(errs)
    print(f"{name}: {'invalid' if errs else 'ok'}")
# The schema must catch mistakes too.
for typo in [{"daemonset": {"enabld": True}}, {"cluster": {"replicas": 0}}, {"endpoints": {"mimir": ""}},
             {"image": {"digest": "latest"}}, {"networkPolicy": {"enable": True}},
             {"cluster": {"topologySpreadConstraints": [{"maxSkew": 1}]}}]:
    if not list(jsonschema.Draft7Validator(schema).iter_errors(merge(copy.deepcopy(defaults), typo))):
        print(f"schema accepts a mistake: {typo}")
        bad = 1
sys.exit(bad)
PY
then pass "values.schema.json: defaults, ${#value_files[@]} value files, rejects typos"
else fail "values.schema.json (see below)"; cat "$work/schema.log"; fi

# Every value file must set clusterName and tenant (the chart requires them).
required=(--set clusterName=ci-defaults --set tenant=ci)
if helm lint --strict --kube-version "$kube_version" "${required[@]}" "$chart" >"$work/lint.log" 2>&1; then
  pass "helm lint --strict (defaults + clusterName, tenant)"
else fail "helm lint --strict defaults"; cat "$work/lint.log"; fi
for f in "${value_files[@]}"; do
  if helm lint --strict --kube-version "$kube_version" -f "$f" "$chart" >"$work/lint.log" 2>&1; then
    pass "helm lint --strict -f $f"
  else fail "helm lint --strict -f $f"; cat "$work/lint.log"; fi
done

# --- 3-6. render, validate, assert, agent validate -----------------------------------------------
cases=(
  "defaults|${required[*]}"
  "daemonset-only|-f $chart/ci/daemonset-only-values.yaml"
  "cluster-only-3-replicas|-f $chart/ci/cluster-only-values.yaml --set cluster.replicas=3"
  "tls-basic-auth|-f $chart/ci/tls-values.yaml"
  "full|-f $chart/ci/full-values.yaml"
  "options|-f $chart/ci/options-values.yaml"
  "deploy-remote-agent|-f deploy/values/lgtm-agent-remote04.yaml"
)
for c in "${cases[@]}"; do
  name=${c%%|*}
  read -r -a args <<<"${c#*|}"
  out=$work/$name.yaml
  step "render $name ${args[*]}"
  if ! helm template lgtm-agent "$chart" --namespace observability --kube-version "$kube_version" "${args[@]}" >"$out" 2>"$work/$name.err"; then
    fail "helm template $name: $(tr '\n' ' ' <"$work/$name.err")"
    continue
  fi
  pass "helm template $name ($(grep -c '^kind:' "$out") objects)"
  # A client-side install: the release as `helm install` builds it (NOTES included), no cluster.
  if helm install lgtm-agent "$chart" --dry-run=client --namespace observability "${args[@]}" >"$work/$name.install" 2>&1 &&
    grep -q '^STATUS: pending-install' "$work/$name.install" && grep -q 'is installed in namespace observability' "$work/$name.install"; then
    pass "helm install --dry-run=client $name (NOTES rendered)"
  else
    fail "helm install --dry-run=client $name"; tail -20 "$work/$name.install"
  fi

  # kubernetes-validate: rc != 0 on ERROR; WARN (no schema) is accepted for the
  # monitoring.coreos.com CRDs only.
  "${kv[@]}" --strict --quiet -k "$kube_version" "$out" >"$work/$name.kv" 2>&1 && kv_rc=0 || kv_rc=$?
  unexpected=$(grep -v -E '^WARN .*(ServiceMonitor|PrometheusRule)' "$work/$name.kv" | grep -E '^(ERROR|FATAL|WARN)' || true)
  if [[ $kv_rc -eq 0 && -z $unexpected ]]; then
    pass "kubernetes-validate --strict -k $kube_version $name$(grep -q -E 'ServiceMonitor|PrometheusRule' "$work/$name.kv" && echo ' (ServiceMonitor/PrometheusRule: no schema, checked below)')"
  else
    fail "kubernetes-validate $name"; cat "$work/$name.kv"
  fi

  # Structural assertions and config extraction.
  if python3 - "$name" "$out" "$work" "$chart" >"$work/$name.assert" 2>&1 <<'PY'
import sys, yaml
name, path, work, chart = sys.argv[1:]
docs = [d for d in yaml.safe_load_all(open(path)) if d]
by_kind = {}
for d in docs:
    by_kind.setdefault(d["kind"], []).append(d)
problems = []
def check(cond, msg):
    if not cond:
        problems.append(msg)
names = [(d["kind"], d["metadata"]["name"]) for d in docs]
check(len(names) == len(set(names)), f"duplicate objects: {names}")
service_accounts = {a["metadata"]["name"] for a in by_kind.get("ServiceAccount", [])}
bindings = by_kind.get("ClusterRoleBinding", []) + by_kind.get("RoleBinding", [])
roles_by_name = {(d["kind"], d["metadata"]["name"]): d for d in by_kind.get("ClusterRole", []) + by_kind.get("Role", [])}
def rules_of(sa):
    out = []
    for b in bindings:
        if any(s["name"] == sa for s in b["subjects"]):
            out += roles_by_name.get((b["roleRef"]["kind"], b["roleRef"]["name"]), {}).get("rules", [])
    return out
workloads = by_kind.get("DaemonSet", []) + by_kind.get("StatefulSet", [])
for w in workloads:
    kind, wname = w["kind"], w["metadata"]["name"]
    mode = "daemonset" if kind == "DaemonSet" else "cluster"
    tpl = w["spec"]["template"]
    pod_labels = tpl["metadata"]["labels"]
    check("checksum/config" in tpl["metadata"].get("annotations", {}), f"{wname}: no checksum/config annotation")
    check(pod_labels.items() >= w["spec"]["selector"]["matchLabels"].items(), f"{wname}: selector does not match the pod labels")
    c = tpl["spec"]["containers"][0]
    check(":latest" not in c["image"] and (":" in c["image"].rsplit("/", 1)[-1] or "@sha256:" in c["image"]), f"{wname}: image {c['image']} is not pinned")
    # The defaults, unless a value set replaces the handler (options: an exec readiness probe).
    check(c["livenessProbe"].get("httpGet", {}).get("path") == "/healthz", f"{wname}: liveness is not /healthz")
    rp = c["readinessProbe"]
    check(rp.get("httpGet", {}).get("path") == "/readyz" if name != "options" else ("exec" in rp and "httpGet" not in rp), f"{wname}: readiness probe {rp}")
    sc = c.get("securityContext", {})
    check(sc.get("readOnlyRootFilesystem") is True, f"{wname}: root filesystem is writable")
    check(sc.get("allowPrivilegeEscalation") is False, f"{wname}: privilege escalation allowed")
    check(sc.get("capabilities", {}).get("drop") == ["ALL"], f"{wname}: capabilities not all dropped")
    check(f"--mode={mode}" in c["args"], f"{wname}: not run with --mode={mode}")
    env = {e["name"] for e in c["env"]}
    check({"NODE_NAME", "NODE_IP", "POD_NAME", "POD_NAMESPACE", "POD_UID", "POD_IP"} <= env, f"{wname}: downward-API env missing")
    sa = tpl["spec"]["serviceAccountName"]
    check(sa in service_accounts, f"{wname}: service account {sa} is not rendered")
    check(rules_of(sa), f"{wname}: service account {sa} is bound to no role")
    cm_name = next(v["configMap"]["name"] for v in tpl["spec"]["volumes"] if v["name"] == "config")
    cm = next((d for d in by_kind.get("ConfigMap", []) if d["metadata"]["name"] == cm_name), None)
    check(cm is not None and f"config-{mode}.yaml" in cm["data"], f"{wname}: ConfigMap {cm_name} with config-{mode}.yaml missing")
    cfg = {}
    if cm is not None:
        cfg = yaml.safe_load(cm["data"][f"config-{mode}.yaml"])
        check(cfg.get("mode") == mode, f"{wname}: config mode is {cfg.get('mode')}")
        check(cfg.get("cluster") and cfg.get("tenant"), f"{wname}: config without cluster/tenant")
        with open(f"{work}/{name}.config-{mode}.yaml", "w") as f:
            f.write(cm["data"][f"config-{mode}.yaml"])
    for np in by_kind.get("NetworkPolicy", []):
        if np["metadata"]["name"] == wname:
            check(pod_labels.items() >= np["spec"]["podSelector"]["matchLabels"].items(), f"{wname}: NetworkPolicy selects other pods")
            ports = {p["port"] for r in np["spec"]["ingress"] for p in r["ports"]}
            check({4317, 9464} <= ports, f"{wname}: NetworkPolicy closes OTLP or admin ({ports})")
    if kind == "DaemonSet":
        mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
        for p in ["/var/log/pods", "/host/proc", "/host/sys"]:
            check(mounts.get(p, {}).get("readOnly") is True, f"{wname}: {p} is not mounted read-only")
        if "/host" in mounts:
            check(mounts["/host"].get("readOnly") is True and mounts["/host"].get("mountPropagation") == "HostToContainer", f"{wname}: host root not read-only/HostToContainer")
        data = next(v for v in tpl["spec"]["volumes"] if v["name"] == "data")
        check("hostPath" in data, f"{wname}: data dir is not a hostPath")
        check(data.get("hostPath", {}).get("path", "").endswith(f"/{w['metadata']['namespace']}/{wname.removesuffix('-daemonset')}"), f"{wname}: data dir {data.get('hostPath')} is not per release")
        check({"operator": "Exists"} in tpl["spec"].get("tolerations", []), f"{wname}: does not tolerate every taint")
        if tpl["spec"].get("hostNetwork"):
            check(tpl["spec"].get("dnsPolicy") == "ClusterFirstWithHostNet", f"{wname}: hostNetwork without ClusterFirstWithHostNet")
        kubelet = cfg.get("scrape", {}).get("kubelet", {})
        via = kubelet.get("via", "direct")
        if via == "direct":
            check(kubelet.get("address") == "${NODE_IP}", f"{wname}: kubelet scraped at {kubelet.get('address')!r}, not the node IP")
        granted = {r for rule in rules_of(sa) for r in rule["resources"]}
        check("nodes/metrics" in granted, f"{wname}: nodes/metrics not granted (the kubelet authorizes scrapes with it)")
        check(("nodes/proxy" in granted) == (via == "apiserver"), f"{wname}: nodes/proxy granted={('nodes/proxy' in granted)} with kubelet.via={via}")
    else:
        psc = tpl["spec"].get("securityContext", {})
        check(psc.get("runAsNonRoot") is True, f"{wname}: StatefulSet not non-root")
        check(w["spec"]["serviceName"] in [d["metadata"]["name"] for d in by_kind.get("Service", []) if d["spec"].get("clusterIP") == "None"], f"{wname}: headless Service missing")
        check(any(p["spec"]["selector"]["matchLabels"] == w["spec"]["selector"]["matchLabels"] for p in by_kind.get("PodDisruptionBudget", [])), f"{wname}: no PodDisruptionBudget")
        for t in tpl["spec"].get("topologySpreadConstraints", []):
            check(pod_labels.items() >= t["labelSelector"]["matchLabels"].items(), f"{wname}: topology spread selects other pods")
# Every ServiceAccount bound to its own role; every role binding points to an existing role.
roles = set(roles_by_name)
for b in bindings:
    check((b["roleRef"]["kind"], b["roleRef"]["name"]) in roles, f"{b['metadata']['name']}: binds a missing role")
    for s in b["subjects"]:
        check(s["name"] in service_accounts, f"{b['metadata']['name']}: binds a missing ServiceAccount")
for r in roles_by_name.values():
    for rule in r["rules"]:
        check("*" not in rule["verbs"] and "*" not in rule["resources"], f"{r['metadata']['name']}: wildcard rule")
        check(not ({"delete", "patch", "deletecollection", "escalate", "bind", "impersonate"} & set(rule["verbs"])), f"{r['metadata']['name']}: write verbs {rule['verbs']}")
for sm in by_kind.get("ServiceMonitor", []):
    check(sm["apiVersion"] == "monitoring.coreos.com/v1", "ServiceMonitor apiVersion")
    check(all(e.get("port") for e in sm["spec"]["endpoints"]), "ServiceMonitor endpoint without port")
    ports = {p["name"] for s in by_kind.get("Service", []) for p in s["spec"]["ports"]}
    check(all(e["port"] in ports for e in sm["spec"]["endpoints"]), "ServiceMonitor port not on any Service")
for pr in by_kind.get("PrometheusRule", []):
    check(pr["apiVersion"] == "monitoring.coreos.com/v1", "PrometheusRule apiVersion")
    want = yaml.safe_load(open(f"{chart}/rules/lgtm-agent.rules.yaml"))["groups"]
    check(pr["spec"]["groups"] == want, "PrometheusRule groups differ from rules/lgtm-agent.rules.yaml")
for s in by_kind.get("Service", []):
    if s["metadata"]["name"].endswith("-otlp"):
        check(s["spec"].get("internalTrafficPolicy") == "Local", "node-local OTLP Service is not internalTrafficPolicy: Local")
print(f"{len(docs)} objects: " + ", ".join(f"{k} x{len(v)}" for k, v in sorted(by_kind.items())))
for p in problems:
    print("problem:", p)
sys.exit(1 if problems else 0)
PY
  then pass "assertions $name: $(tail -1 "$work/$name.assert")"
  else fail "assertions $name"; cat "$work/$name.assert"; fi

  for cfg in "$work/$name".config-*.yaml; do
    [[ -e $cfg ]] || continue
    mode=${cfg##*config-}; mode=${mode%.yaml}
    # The pods set these through the downward API; ${VAR} without a default must be set.
    if msg=$(NODE_NAME=node-1 NODE_IP=10.0.0.1 POD_NAME=lgtm-agent-0 POD_NAMESPACE=observability POD_UID=3f6c2a1e-0000-4000-8000-000000000001 POD_IP=10.0.0.2 \
      "$agent_bin" validate --config "$cfg" --mode "$mode" 2>&1); then
      pass "lgtm-agent validate $name config-$mode.yaml"
    else
      fail "lgtm-agent validate $name config-$mode.yaml: $msg"
      cat -n "$cfg"
    fi
  done
done

# --- 7. alerting rules ----------------------------------------------------------------------------
step "alerting rules (promtool)"
if promtool check rules "$chart/rules/lgtm-agent.rules.yaml" >"$work/rules.log" 2>&1; then
  pass "promtool check rules: $(grep -o '[0-9]* rules found' "$work/rules.log")"
else fail "promtool check rules"; cat "$work/rules.log"; fi
if (cd "$chart/rules" && promtool test rules lgtm-agent.rules.test.yaml) >"$work/rules-test.log" 2>&1; then
  # Every alert of the file has a test case.
  untested=$(comm -23 <(sed -n 's/^ *- alert: //p' "$chart/rules/lgtm-agent.rules.yaml" | sort -u) \
    <(sed -n 's/^ *alertname: //p' "$chart/rules/lgtm-agent.rules.test.yaml" | sort -u))
  if [[ -z $untested ]]; then pass "promtool test rules: every alert tested"
  else fail "alerts without a promtool test: $untested"; fi
else fail "promtool test rules"; cat "$work/rules-test.log"; fi
# Every lgtm_agent_* series a rule reads is one the agent emits (its name in the Rust sources),
# except those listed as pending here, which must not exist yet (remove them when they land).
pending=()
missing=()
stale=()
mapfile -t rule_series < <(grep -o -E 'lgtm_agent_[a-z_]+' "$chart/rules/lgtm-agent.rules.yaml" | sort -u)
for m in "${rule_series[@]}"; do
  if grep -rqs --include='*.rs' "\"$m\"" agent config pipeline scrape k8s daemonset statefulset; then
    [[ " ${pending[*]} " == *" $m "* ]] && stale+=("$m")
  elif [[ " ${pending[*]} " != *" $m "* ]]; then
    missing+=("$m")
  fi
done
if ((${#missing[@]} + ${#stale[@]} == 0)); then
  pass "alert rules read only series the agent emits (pending in the agent: ${pending[*]})"
else
  fail "alert rules: series the agent does not emit: ${missing[*]:-none}; pending but now emitted (update check-chart.sh): ${stale[*]:-none}"
fi

# --- deploy/ manifests and dashboards ----------------------------------------------------------
step "deploy/manifests and deploy/dashboards"
for m in deploy/manifests/*.yaml; do
  # deploy/lib.sh pins the collector image (OTEL_COLLECTOR_IMAGE); other placeholders are names.
  sed -e "s|__OTEL_COLLECTOR_IMAGE__|otel/opentelemetry-collector-contrib:0.158.0|" -e 's/__[A-Z_]*__/placeholder/g' "$m" >"$work/manifest.yaml"
  "${kv[@]}" --strict --quiet -k "$kube_version" "$work/manifest.yaml" >"$work/manifest.kv" 2>&1 && rc=0 || rc=$?
  # CRDs without a schema in the tool: ServiceMonitor (TNS), OpenTelemetryCollector (scenario 3).
  unexpected=$(grep -v -E '^WARN .*(ServiceMonitor|OpenTelemetryCollector)' "$work/manifest.kv" | grep -E '^(ERROR|FATAL|WARN)' || true)
  if [[ $rc -eq 0 && -z $unexpected ]]; then pass "kubernetes-validate $m"; else fail "kubernetes-validate $m"; cat "$work/manifest.kv"; fi
  # Every image names a tag or a digest.
  if grep -E '^[[:space:]-]*image:' "$work/manifest.yaml" | grep -v -E 'image: *"?[^ "]+/[^ "/]+(:[A-Za-z0-9._-]+|@sha256:[a-f0-9]{64})"?[[:space:]]*$' >"$work/latest.log"; then
    fail "images without a tag or digest in $m: $(tr '\n' ' ' <"$work/latest.log")"
  else pass "images pinned in $m"; fi
done
if grep -rn -E ':latest\b' deploy/*.sh deploy/values deploy/manifests >"$work/latest.log"; then
  fail "':latest' in deploy/: $(tr '\n' ' ' <"$work/latest.log")"
else pass "no ':latest' image in deploy/"; fi
if python3 - deploy/dashboards/*.json >"$work/dash.log" 2>&1 <<'PY2'
import json, sys
need = ["lgtm_agent_exporter_sent_total", "lgtm_agent_exporter_failed_total", "lgtm_agent_exporter_retries_total",
        "lgtm_agent_dropped_total", "lgtm_agent_queue_bytes", "lgtm_agent_queue_oldest_age_seconds",
        "lgtm_agent_build_info", "lgtm_agent_logs_", "lgtm_agent_scrape", "container_cpu_usage_seconds_total",
        "container_memory_working_set_bytes"]
text = ""
for f in sys.argv[1:]:
    d = json.load(open(f))
    assert d.get("uid") and d.get("title") and d.get("panels"), f"{f}: no uid/title/panels"
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids)), f"{f}: duplicate panel ids"
    text += json.dumps(d)
missing = [m for m in need if m not in text]
assert not missing, f"dashboards lack {missing}"
# The comparison dashboard reads every scenario's tenant: its matchers may use only the labels
# cAdvisor series carry in all four (cluster is each shipper's external label; job differs:
# kubelet in scenario 1, integrations/kubernetes/cadvisor in 2 and 3, the agent's in 4).
import re
common = {"cluster", "namespace", "pod", "container"}
d = json.load(open([f for f in sys.argv[1:] if f.endswith("agent-comparison.json")][0]))
for p in d["panels"]:
    for t in p.get("targets", []):
        used = set(re.findall(r"([a-z_]+)\s*(?:=~|!~|!=|=)\s*\"", t.get("expr", "")))
        assert used <= common, f"comparison panel {p.get('title')!r} matches on {used - common}, not in every scenario"
print(f"{len(sys.argv) - 1} dashboards")
PY2
then pass "dashboards: $(tail -1 "$work/dash.log"), every required metric used"
else fail "dashboards"; cat "$work/dash.log"; fi

# --- deploy/ values of the upstream charts and the comparison chart -------------------------------
step "deploy/values and manifests with placeholders, bench-chart.py"
# Every file the scripts fill (deploy/lib.sh: fill) becomes YAML without a placeholder left, for
# each mesh's host names.
for mesh_env in "CILIUM_CLUSTER_MESH_ENABLED=no ISTIO_ENABLED=no" "ISTIO_ENABLED=yes"; do
  for f in deploy/values/remote/*.yaml deploy/manifests/otel-collectors.yaml; do
    # shellcheck disable=SC2086,SC2016 # split the env assignments; $1 expands in the inner shell
    if env $mesh_env NAME=lgtm-remote TENANT=remote01 bash -c 'source deploy/lib.sh && fill "$1" OTEL_COLLECTOR_IMAGE=otel/opentelemetry-collector-contrib:0.158.0' _ "$f" >"$work/filled.yaml" 2>"$work/fill.err" &&
      python3 -c 'import sys, yaml; [None for _ in yaml.safe_load_all(open(sys.argv[1]))]' "$work/filled.yaml" 2>>"$work/fill.err"; then
      pass "fill $f ($mesh_env): YAML, no placeholder left"
    else fail "fill $f ($mesh_env)"; cat "$work/fill.err"; fi
  done
done
# Facts of the upstream charts the values must respect (deploy/render-upstream.sh renders them).
if python3 - <<'PY3' >"$work/facts.log" 2>&1
import yaml
v = yaml.safe_load(open("deploy/values/remote/vector.yaml"))
# vector: with the API off no port is open, and a Service without ports is rejected.
assert v["service"]["enabled"] is False and v["serviceHeadless"]["enabled"] is False, "vector: Service without ports"
assert "stream" in v["customConfig"]["sinks"]["loki"]["labels"], "vector: no stream label"
fb = yaml.safe_load(open("deploy/values/remote/fluent-bit.yaml"))["config"]
# fluent-bit: the chart mounts config.extraFiles at /fluent-bit/etc/conf/.
path = next(l.split()[1] for l in fb["outputs"].splitlines() if "Label_Map_Path" in l)
assert path == "/fluent-bit/etc/conf/labelmap.json" and "labelmap.json" in fb["extraFiles"], path
loki = yaml.safe_load(open("deploy/values/central/loki.yaml"))
assert loki["minio"]["enabled"] is False and loki["loki"]["storage"]["type"] == "s3", "loki: bundled MinIO"
g = yaml.safe_load(open("deploy/values/central/grafana.yaml"))
assert g["grafana.ini"]["server"]["protocol"] == "https"
for sc in ("datasources", "dashboards"):
    assert g["sidecar"][sc]["reloadURL"].startswith("https://"), f"grafana: {sc} reload over http"
    assert g["sidecar"][sc]["env"]["REQ_SKIP_TLS_VERIFY"] == "true"
print("ok")
PY3
then pass "deploy values respect the upstream charts (vector Service, fluent-bit label map, Loki storage, Grafana reload over HTTPS)"
else fail "deploy values vs upstream charts"; cat "$work/facts.log"; fi
printf 'scenario\ttenant\tpods\tcpu_avg_mcores\tcpu_max_mcores\tmem_avg_mib\tmem_max_mib\tsamples_per_s\tlog_lines_per_s\tlog_kib_per_s\ttraces\tmcores_per_1k_items_per_s\tcomparable\n1 Prometheus+Vector+Alloy\tremote01\t7\t310\t520\t880.5\t1010.2\t2400\t35.2\t12.5\t1200\t127.32\tyes\n4 lgtm-agent\tremote04\t4\t40\t95\t120.1\t140.7\t2350\t34.9\t12.1\t1180\t16.77\tyes\n' >"$work/results.tsv"
printf 'scenario\tpod\tcpu_avg_mcores\tmem_avg_mib\tmem_max_mib\n1 Prometheus+Vector+Alloy\tprometheus-monitor-0\t200\t600\t700\n4 lgtm-agent\tlgtm-agent-daemonset-x\t20\t50\t60\n' >"$work/pods.tsv"
if python3 deploy/bench-chart.py "$work/results.tsv" "$work/pods.tsv" "$work/chart.svg" "last 30m" &&
  python3 - "$work/chart.svg" <<'PY3'
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
ns = "{http://www.w3.org/2000/svg}"
bars = [r for r in root.iter(ns + "rect") if r.get("class") == "bar"]
# 2 scenarios x 4 panels + 2 pods x 2 panels
assert len(bars) == 12, len(bars)
texts = " ".join(t.text or "" for t in root.iter(ns + "text"))
for want in ["310 m (peak 520)", "40 m (peak 95)", "120.1 MiB", "16.77 m", "lgtm-agent-daemonset-x"]:
    assert want in texts, want
# Bars scale with the values: the CPU bar of scenario 1 is 310/40 times scenario 4's.
w = [float(b.get("width")) for b in bars]
assert abs(w[0] / w[1] - 310 / 40) < 0.01, w[:2]
PY3
then pass "bench-chart.py: SVG with a bar per scenario and pod, to scale"
else fail "bench-chart.py"; fi

# --- deploy/verify.sh against a fake central stack ------------------------------------------------
step "deploy/verify.sh against a fake central stack (scripts/fake-central.py)"
# verify.sh's queries and parsing, without a cluster: passes when the tenant's data is there, fails
# naming what is missing otherwise; every PromQL query it sends is checked by promtool.
fake_pid=""
start_fake() {
  rm -f "$work/fake.port"
  python3 scripts/fake-central.py "$work/fake.port" "$work/promql.log" "$@" &
  fake_pid=$!
  for _ in $(seq 50); do [[ -s $work/fake.port ]] && break; sleep 0.1; done
  local u
  u="http://127.0.0.1:$(cat "$work/fake.port")"
  fake_endpoints="$u $u $u $u"
}
stop_fake() { kill "$fake_pid" 2>/dev/null || true; wait "$fake_pid" 2>/dev/null || true; }
verify_cases=(
  "4|0|every check passed|"
  "3|0|every check passed|"
  "1|0|every check passed|"
  "4|1|1 check(s) failed|--missing tempo"
  "4|1|Tempo: TNS traces|--missing tempo"
  "4|1|3 check(s) failed|--missing loki"
  "4|1|Loki: stream label|--missing stream"
  "2|1|Loki: Kubernetes events|--missing events"
  "4|1|Grafana datasources of remote04|--missing grafana"
  "central|1|Grafana datasource mimir-_local|--missing grafana"
)
: >"$work/promql.log"
for c in "${verify_cases[@]}"; do
  IFS='|' read -r scen want_rc want_text fake_args <<<"$c"
  read -r -a fake_argv <<<"$fake_args"
  start_fake "${fake_argv[@]}"
  VERIFY_ENDPOINTS=$fake_endpoints VERIFY_TIMEOUT=1 VERIFY_INTERVAL=0.2 timeout 60 deploy/verify.sh "$scen" >"$work/verify.log" 2>&1 && rc=0 || rc=$?
  stop_fake
  if [[ $rc == "$want_rc" ]] && grep -qF "$want_text" "$work/verify.log"; then
    pass "verify.sh $scen ${fake_args:-(all data there)}: exit $rc, '$want_text'"
  else
    fail "verify.sh $scen ${fake_args:-(all data there)}: exit $rc (want $want_rc, '$want_text')"; cat "$work/verify.log"
  fi
done
# bench-compare.sh against the same fake: the table, the per-pod rows, the fairness flag and the chart.
start_fake --otel-demo
if BENCH_ENDPOINTS=$fake_endpoints timeout 60 deploy/bench-compare.sh -w 30m -o "$work/bench" >"$work/bench.log" 2>&1 &&
  python3 - "$work/bench" <<'PY3'
import csv, sys, xml.etree.ElementTree as ET
d = sys.argv[1]
rows = {r["tenant"]: r for r in csv.DictReader(open(f"{d}/results.tsv"), delimiter="\t")}
assert set(rows) == {"remote01", "remote02", "remote03", "remote04"}, rows.keys()
r = rows["remote04"]
# the fake: 0.05 cores, 50 MiB, 2000 samples/s, 42 lines/s -> 50 / 2.042 = 24.49 mcores per 1k items/s
assert (r["cpu_avg_mcores"], r["mem_avg_mib"], r["samples_per_s"], r["log_lines_per_s"], r["mcores_per_1k_items_per_s"], r["comparable"]) == ("50", "50.0", "2000", "42.0", "24.49", "yes"), r
assert rows["remote03"]["comparable"] == "no (OpenTelemetry Demo running)", rows["remote03"]
pods = list(csv.DictReader(open(f"{d}/pods.tsv"), delimiter="\t"))
assert len(pods) == 8 and {p["cpu_avg_mcores"] for p in pods} == {"20", "30"}, pods
bars = [e for e in ET.parse(f"{d}/comparison.svg").getroot().iter("{http://www.w3.org/2000/svg}rect") if e.get("class") == "bar"]
assert len(bars) == 4 * 4 + 8 * 2, len(bars)
PY3
then pass "bench-compare.sh against the fake: table, 8 pod rows, unfair scenario flagged, SVG with 32 bars"
else fail "bench-compare.sh against the fake"; cat "$work/bench.log"; fi
stop_fake
{
  echo "groups:"
  echo "  - name: verify-queries"
  echo "    rules:"
  n=0
  sort -u "$work/promql.log" | while IFS= read -r q; do
    n=$((n + 1))
    printf '      - record: verify_query_%d\n        expr: %s\n' "$n" "$(python3 -c 'import json, sys; print(json.dumps(sys.argv[1]))' "$q")"
  done
} >"$work/promql-rules.yaml"
if [[ $(wc -l <"$work/promql.log") -gt 0 ]] && promtool check rules "$work/promql-rules.yaml" >"$work/promql-check.log" 2>&1; then
  pass "verify.sh's and bench-compare.sh's PromQL queries parse (promtool): $(sort -u "$work/promql.log" | wc -l) distinct"
else fail "verify.sh's and bench-compare.sh's PromQL queries"; cat "$work/promql-check.log" "$work/promql-rules.yaml"; fi

# --- 8. installs that must fail -----------------------------------------------------------------
step "installs that must fail, with the chart's message"
must_fail=(
  "no values|clusterName is required|"
  "no tenant|tenant is required|--set clusterName=c"
  "tls without a Secret|tls.existingSecret is required|${required[*]} --set tls.enabled=true"
  "basic auth without a password|auth.basic.password or auth.basic.existingSecret is required|${required[*]} --set auth.basic.enabled=true --set auth.basic.username=u"
  "a typo in a value (schema)|additional properties 'enabld' not allowed|${required[*]} --set daemonset.enabld=true"
)
for c in "${must_fail[@]}"; do
  IFS='|' read -r label want rest <<<"$c"
  read -r -a args <<<"$rest"
  if helm install lgtm-agent "$chart" --dry-run=client --namespace observability "${args[@]}" >/dev/null 2>"$work/neg.err"; then
    fail "install must fail: $label"
  elif grep -qF "$want" "$work/neg.err"; then
    pass "install fails as it must: $label ($want)"
  else
    fail "install failed without the expected message ($want): $label"; cat "$work/neg.err"
  fi
done

# --- summary ------------------------------------------------------------------------------------
echo
echo "== summary (${repo##*/}, $((SECONDS - start))s)"
printf '%s\n' "${results[@]}"
npass=$(printf '%s\n' "${results[@]}" | grep -c '^PASS' || true)
nfail=$(printf '%s\n' "${results[@]}" | grep -c '^FAIL' || true)
echo "check-chart: $npass passed, $nfail failed"
exit "$failed"
