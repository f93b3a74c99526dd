#!/usr/bin/env bash
# Static checks of the Helm chart and the deploy scripts, for CI:
#   1. shellcheck on every script under deploy/ and scripts/
#   2. values.schema.json accepts values.yaml and every charts/lgtm-agent/ci/*-values.yaml
#   3. the chart renders (../shared/tools/helm-template) with its defaults and several value sets
#   4. each render passes `kubernetes-validate --strict -k 1.31.0` (ServiceMonitor, a CRD the
#      tool has no schema for, is only reported as WARN by it; it is accepted here, and only it)
#   5. structural assertions on each render (checksums, probes, security contexts, RBAC, ...)
#   6. the agent configs in the rendered ConfigMaps pass `lgtm-agent validate --mode <mode>`
# Installs shellcheck (apt) and kubernetes-validate (pip) when missing. Exit 1 on any failure.
# Env: LGTM_AGENT_BIN (default target/debug/lgtm-agent, built with cargo when missing),
#      KUBE_VERSION (default 1.31.0).
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
if ! python3 -c 'import kubernetes_validate' 2>/dev/null; then
  echo "installing kubernetes-validate (pip)"
  python3 -m pip install -q kubernetes-validate
fi
kv=(python3 -m kubernetes_validate)
helm_template=$(bash ../shared/tools/helm-template/build.sh)
agent_bin=${LGTM_AGENT_BIN:-target/debug/lgtm-agent}
if [[ ! -x $agent_bin ]]; then
  echo "building lgtm-agent ($agent_bin is missing)"
  cargo build -q -p lgtm-agent
fi
echo "shellcheck $(shellcheck --version | sed -n 's/^version: //p'), kubernetes-validate $("${kv[@]}" --version), helm-template $helm_template, agent $agent_bin"

# --- 1. shellcheck ------------------------------------------------------------------------------
step "shellcheck"
mapfile -t scripts < <(find deploy scripts -type f -name '*.sh' | sort)
for s in "${scripts[@]}"; do
  if shellcheck -x "$s"; then pass "shellcheck $s"; else fail "shellcheck $s"; fi
done

# --- 2. values schema ---------------------------------------------------------------------------
step "values.schema.json"
value_files=("$chart"/ci/*-values.yaml deploy/values/*.yaml)
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
for typo in [{"daemonset": {"enabld": True}}, {"cluster": {"replicas": 0}}, {"endpoints": {"mimir": ""}}]:
    if not list(jsonschema.Draft7Validator(schema).iter_errors(merge(copy.deepcopy(defaults), typo))):
        print(f"schema accepts a mistake: {typo}")
        bad = 1
sys.exit(bad)
PY
then pass "values.schema.json: defaults, ${#value_files[@]} value files, rejects typos"
else fail "values.schema.json (see below)"; cat "$work/schema.log"; fi

# --- 3-6. render, validate, assert, agent validate -----------------------------------------------
cases=(
  "defaults|"
  "daemonset-only|-f $chart/ci/daemonset-only-values.yaml"
  "cluster-only-3-replicas|-f $chart/ci/cluster-only-values.yaml --set cluster.replicas=3"
  "tls-basic-auth|-f $chart/ci/tls-values.yaml"
  "full|-f $chart/ci/full-values.yaml"
  "deploy-remote-agent|-f deploy/values/lgtm-agent-remote04.yaml"
)
for c in "${cases[@]}"; do
  name=${c%%|*}
  read -r -a args <<<"${c#*|}"
  out=$work/$name.yaml
  step "render $name ${args[*]}"
  if ! "$helm_template" --name lgtm-agent --namespace observability "${args[@]}" "$chart" >"$out" 2>"$work/$name.err"; then
    fail "render $name: $(tr '\n' ' ' <"$work/$name.err")"
    continue
  fi
  pass "render $name ($(grep -c '^kind:' "$out") objects)"

  # kubernetes-validate: rc != 0 on ERROR; WARN (no schema) is accepted for ServiceMonitor only.
  "${kv[@]}" --strict --quiet -k "$kube_version" "$out" >"$work/$name.kv" 2>&1 && kv_rc=0 || kv_rc=$?
  unexpected=$(grep -v -E '^WARN .*ServiceMonitor' "$work/$name.kv" | grep -E '^(ERROR|FATAL|WARN)' || true)
  if [[ $kv_rc -eq 0 && -z $unexpected ]]; then
    pass "kubernetes-validate --strict -k $kube_version $name$(grep -q ServiceMonitor "$work/$name.kv" && echo ' (ServiceMonitor: no schema, checked below)')"
  else
    fail "kubernetes-validate $name"; cat "$work/$name.kv"
  fi

  # Structural assertions and config extraction.
  if python3 - "$name" "$out" "$work" >"$work/$name.assert" 2>&1 <<'PY'
import sys, yaml
name, path, work = sys.argv[1:]
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
workloads = by_kind.get("DaemonSet", []) + by_kind.get("StatefulSet", [])
for w in workloads:
    kind, wname = w["kind"], w["metadata"]["name"]
    mode = "daemonset" if kind == "DaemonSet" else "cluster"
    tpl = w["spec"]["template"]
    check("checksum/config" in tpl["metadata"].get("annotations", {}), f"{wname}: no checksum/config annotation")
    check(tpl["metadata"]["labels"].items() >= w["spec"]["selector"]["matchLabels"].items(), f"{wname}: selector does not match the pod labels")
    c = tpl["spec"]["containers"][0]
    check(c["livenessProbe"]["httpGet"]["path"] == "/healthz", f"{wname}: liveness is not /healthz")
    check(c["readinessProbe"]["httpGet"]["path"] == "/readyz", f"{wname}: readiness is not /readyz")
    sc = c.get("securityContext", {})
    check(sc.get("readOnlyRootFilesystem") is True, f"{wname}: root filesystem is writable")
    check(sc.get("allowPrivilegeEscalation") is False, f"{wname}: privilege escalation allowed")
    check(sc.get("capabilities", {}).get("drop") == ["ALL"], f"{wname}: capabilities not all dropped")
    check(f"--mode={mode}" in c["args"], f"{wname}: not run with --mode={mode}")
    env = {e["name"] for e in c["env"]}
    check({"NODE_NAME", "POD_NAME", "POD_NAMESPACE", "POD_UID", "POD_IP"} <= env, f"{wname}: downward-API env missing")
    sa = tpl["spec"]["serviceAccountName"]
    check(sa == wname, f"{wname}: service account {sa} is not the mode's own")
    cm_name = next(v["configMap"]["name"] for v in tpl["spec"]["volumes"] if v["name"] == "config")
    cm = next((d for d in by_kind.get("ConfigMap", []) if d["metadata"]["name"] == cm_name), None)
    check(cm is not None and f"config-{mode}.yaml" in cm["data"], f"{wname}: ConfigMap {cm_name} with config-{mode}.yaml missing")
    if cm is not None:
        cfg = yaml.safe_load(cm["data"][f"config-{mode}.yaml"])
        check(cfg.get("mode") == mode, f"{wname}: config mode is {cfg.get('mode')}")
        with open(f"{work}/{name}.config-{mode}.yaml", "w") as f:
            f.write(cm["data"][f"config-{mode}.yaml"])
    if kind == "DaemonSet":
        mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
        for p in ["/var/log/pods", "/host/proc", "/host/sys"]:
            check(mounts.get(p, {}).get("readOnly") is True, f"{wname}: {p} is not mounted read-only")
        data = next(v for v in tpl["spec"]["volumes"] if v["name"] == "data")
        check("hostPath" in data, f"{wname}: data dir is not a hostPath")
        check({"operator": "Exists"} in tpl["spec"].get("tolerations", []), f"{wname}: does not tolerate every taint")
    else:
        psc = tpl["spec"].get("securityContext", {})
        check(psc.get("runAsNonRoot") is True, f"{wname}: StatefulSet not non-root")
        check(w["spec"]["serviceName"] in [d["metadata"]["name"] for d in by_kind.get("Service", []) if d["spec"].get("clusterIP") == "None"], f"{wname}: headless Service missing")
        check(any(p["spec"]["selector"]["matchLabels"] == w["spec"]["selector"]["matchLabels"] for p in by_kind.get("PodDisruptionBudget", [])), f"{wname}: no PodDisruptionBudget")
# Every ServiceAccount bound to its own role; every role binding points to an existing role.
roles = {(d["kind"], d["metadata"]["name"]) for d in by_kind.get("ClusterRole", []) + by_kind.get("Role", [])}
for b in by_kind.get("ClusterRoleBinding", []) + by_kind.get("RoleBinding", []):
    check((b["roleRef"]["kind"], b["roleRef"]["name"]) in roles, f"{b['metadata']['name']}: binds a missing role")
    for s in b["subjects"]:
        check(s["name"] in [a["metadata"]["name"] for a in by_kind.get("ServiceAccount", [])], f"{b['metadata']['name']}: binds a missing ServiceAccount")
for r in by_kind.get("ClusterRole", []) + by_kind.get("Role", []):
    for rule in r["rules"]:
        check("*" not in rule["verbs"] and "*" not in rule["resources"], f"{r['metadata']['name']}: wildcard rule")
        check(not ({"delete", "patch", "deletecollection", "escalate", "bind", "impersonate"} & set(rule["verbs"])), f"{r['metadata']['name']}: write verbs {rule['verbs']}")
for sm in by_kind.get("ServiceMonitor", []):
    check(sm["apiVersion"] == "monitoring.coreos.com/v1", "ServiceMonitor apiVersion")
    check(all(e.get("port") for e in sm["spec"]["endpoints"]), "ServiceMonitor endpoint without port")
    ports = {p["name"] for s in by_kind.get("Service", []) for p in s["spec"]["ports"]}
    check(all(e["port"] in ports for e in sm["spec"]["endpoints"]), "ServiceMonitor port not on any Service")
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

# --- deploy/ manifests and dashboards ----------------------------------------------------------
step "deploy/manifests and deploy/dashboards"
for m in deploy/manifests/*.yaml; do
  sed 's/__[A-Z_]*__/placeholder/g' "$m" >"$work/manifest.yaml"
  "${kv[@]}" --strict --quiet -k "$kube_version" "$work/manifest.yaml" >"$work/manifest.kv" 2>&1 && rc=0 || rc=$?
  unexpected=$(grep -v -E '^WARN .*ServiceMonitor' "$work/manifest.kv" | grep -E '^(ERROR|FATAL|WARN)' || true)
  if [[ $rc -eq 0 && -z $unexpected ]]; then pass "kubernetes-validate $m"; else fail "kubernetes-validate $m"; cat "$work/manifest.kv"; fi
done
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
print(f"{len(sys.argv) - 1} dashboards")
PY2
then pass "dashboards: $(tail -1 "$work/dash.log"), every required metric used"
else fail "dashboards"; cat "$work/dash.log"; fi

# --- expected render failures -------------------------------------------------------------------
step "render failures that must happen"
must_fail=(
  "tls without a Secret|--set tls.enabled=true"
  "basic auth without a password|--set auth.basic.enabled=true --set auth.basic.username=u"
)
for c in "${must_fail[@]}"; do
  read -r -a args <<<"${c#*|}"
  if "$helm_template" --name lgtm-agent --namespace observability "${args[@]}" "$chart" >/dev/null 2>"$work/neg.err"; then
    fail "render must fail: ${c%%|*}"
  else
    pass "render fails as it must: ${c%%|*} ($(head -1 "$work/neg.err" | sed 's/.*error calling required: //'))"
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
