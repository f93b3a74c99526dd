#!/usr/bin/env bash
# Renders every upstream chart the deploy scripts install, at the version deploy/lib.sh pins, with
# the project's values (the placeholders filled as the scripts fill them), and validates each
# render with `kubernetes-validate --strict` (custom resources without a schema in the tool, such
# as ServiceMonitor, are reported and accepted). Nothing is installed.
#   ./deploy/render-upstream.sh --pull DIR    pull each pinned chart into DIR first (needs the Helm
#                                             repositories, as the deploy scripts do), then render
#   ./deploy/render-upstream.sh DIR           render the charts already unpacked in DIR/<chart>/
#                                             (with their dependencies in DIR/<chart>/charts/)
# Env: HELM (default helm), KUBE_VERSION (default 1.31.0). Exit 1 if a chart is missing, has
# another version than the pin, fails to render, or renders something Kubernetes rejects.
# shellcheck source=deploy/lib.sh
source "$(dirname "$0")/lib.sh"

pull=no
[[ ${1:-} == --pull ]] && { pull=yes; shift; }
dir=${1:?usage: render-upstream.sh [--pull] DIR}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
HELM=${HELM:-helm}
kube_version=${KUBE_VERSION:-1.31.0}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# release|repo/chart|version variable|namespace|values file|NAME|TENANT|extra helm args
charts=(
  "rustfs|rustfs/rustfs|RUSTFS_CHART_VERSION|storage|values/central/rustfs.yaml|||"
  "mimir|grafana/mimir-distributed|MIMIR_CHART_VERSION|mimir|values/central/mimir.yaml|||"
  "loki|grafana-community/loki|LOKI_CHART_VERSION|loki|values/central/loki.yaml|||"
  "tempo|grafana-community/tempo-distributed|TEMPO_CHART_VERSION|tempo|values/central/tempo.yaml|||"
  "grafana|grafana-community/grafana|GRAFANA_CHART_VERSION|observability|values/central/grafana.yaml|||"
  "prometheus-operator-crds|prometheus-community/prometheus-operator-crds|PROMETHEUS_OPERATOR_CRDS_VERSION|kube-system||||"
  "monitor|prometheus-community/kube-prometheus-stack|KPS_CHART_VERSION|observability|values/remote/prometheus.yaml|lgtm-remote|remote01|"
  "vector|vector/vector|VECTOR_CHART_VERSION|observability|values/remote/vector.yaml|lgtm-remote|remote01|"
  "fluent-bit|fluent/fluent-bit|FLUENTBIT_CHART_VERSION|observability|values/remote/fluent-bit.yaml|lgtm-remote|remote01|"
  "alloy|grafana/alloy|ALLOY_CHART_VERSION|observability|values/remote/alloy-traces.yaml|lgtm-remote|remote01|"
  "alloy-daemonset|grafana/alloy|ALLOY_CHART_VERSION|observability|values/remote/alloy-daemonset.yaml|lgtm-remote-alloy|remote02|"
  "alloy-deployment|grafana/alloy|ALLOY_CHART_VERSION|observability|values/remote/alloy-deployment.yaml|lgtm-remote-alloy|remote02|"
  "opentelemetry-operator|open-telemetry/opentelemetry-operator|OTEL_OPERATOR_CHART_VERSION|observability||lgtm-remote-otel|remote03|--set manager.collectorImage.repository=${OTEL_COLLECTOR_IMAGE%:*} --set manager.collectorImage.tag=${OTEL_COLLECTOR_IMAGE##*:}"
)

if [[ $pull == yes ]]; then
  helm_repos
  for c in "${charts[@]}"; do
    IFS='|' read -r _ ref var _ <<<"$c"
    [[ -d $dir/${ref#*/} ]] || "$HELM" pull "$ref" --version "${!var}" --untar --untardir "$dir"
  done
fi

results=()
failed=0
for c in "${charts[@]}"; do
  IFS='|' read -r release ref var ns values name tenant extra <<<"$c"
  chart=${ref#*/}
  want=${!var}
  path=$dir/$chart
  label="$release ($ref ${want})"
  if [[ ! -f $path/Chart.yaml ]]; then
    results+=("MISSING  $label: no $path/Chart.yaml"); failed=1; continue
  fi
  have=$(sed -n 's/^version: *//p' "$path/Chart.yaml" | head -1 | tr -d "\"'")
  if [[ $have != "$want" && $have != "${want#v}" ]]; then
    results+=("VERSION  $label: $path is $have"); failed=1; continue
  fi
  args=(-n "$ns" --kube-version "$kube_version")
  if [[ -n $values ]]; then
    NAME=$name TENANT=$tenant fill "$DEPLOY_DIR/$values" >"$work/$release.values.yaml"
    args+=(-f "$work/$release.values.yaml")
  fi
  # shellcheck disable=SC2206 # the extra arguments are words
  [[ -n $extra ]] && args+=($extra)
  if ! "$HELM" template "$release" "$path" "${args[@]}" >"$work/$release.yaml" 2>"$work/$release.err"; then
    results+=("RENDER   $label: $(grep -m1 -i error "$work/$release.err")"); failed=1; continue
  fi
  objects=$(grep -c '^kind:' "$work/$release.yaml" || true)
  python3 -m kubernetes_validate --strict --quiet -k "$kube_version" "$work/$release.yaml" >"$work/$release.kv" 2>&1 || true
  # What the schema cannot say and the API server rejects: a Service that is not headless needs a port.
  python3 - "$work/$release.yaml" >>"$work/$release.kv" <<'PY3'
import sys, yaml
# CRD schemas quote a bare `=` (YAML's value tag); read it as a string.
yaml.SafeLoader.add_constructor("tag:yaml.org,2002:value", yaml.SafeLoader.construct_yaml_str)
for d in yaml.safe_load_all(open(sys.argv[1])):
    if d and d.get("kind") == "Service" and d["spec"].get("clusterIP") != "None" and d["spec"].get("type") != "ExternalName" and not d["spec"].get("ports"):
        print(f"ERROR Service {d['metadata']['name']}: spec.ports: Required value (the API server rejects it)")
PY3
  errors=$(grep -c -E '^(ERROR|FATAL)' "$work/$release.kv" || true)
  crs=$(sed -n 's/^WARN .*kind \([A-Za-z]*\).*/\1/p; s/^WARN .*\(no schema\).*/\1/p' "$work/$release.kv" | sort -u | tr '\n' ' ')
  if ((errors)); then
    results+=("INVALID  $label: $objects objects, $errors rejected"); failed=1
    grep -E '^(ERROR|FATAL)' "$work/$release.kv" | head -5 | sed 's/^/           /' >"$work/$release.why"
    results+=("$(cat "$work/$release.why")")
  else
    results+=("OK       $label: $objects objects valid${crs:+ (no schema, not checked: ${crs% })}")
  fi
done
# Custom resources of the project against the CRDs of the pinned charts: types, and fields the
# API server would prune (silently lost). check_crs CRD-RENDER OBJECTS LABEL
check_crs() {
  local out
  if out=$(python3 - "$1" "$2" 2>&1 <<'PY3'
import sys, yaml, jsonschema
yaml.SafeLoader.add_constructor("tag:yaml.org,2002:value", yaml.SafeLoader.construct_yaml_str)
crds = {}
for d in yaml.safe_load_all(open(sys.argv[1])):
    if d and d.get("kind") == "CustomResourceDefinition":
        for v in d["spec"]["versions"]:
            crds[(d["spec"]["group"], v["name"], d["spec"]["names"]["kind"])] = v["schema"]["openAPIV3Schema"]
def json_schema(s):
    if isinstance(s, dict):
        s = dict(s)
        if s.get("x-kubernetes-int-or-string"):
            s.pop("type", None)
            s["anyOf"] = [{"type": "integer"}, {"type": "string"}]
        return {k: json_schema(v) for k, v in s.items() if not k.startswith("x-kubernetes")}
    return [json_schema(x) for x in s] if isinstance(s, list) else s
def pruned(obj, schema, path):
    if isinstance(obj, dict) and isinstance(schema, dict) and not schema.get("x-kubernetes-preserve-unknown-fields"):
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        for k, v in obj.items():
            if props is not None and k in props:
                yield from pruned(v, props[k], f"{path}.{k}")
            elif isinstance(extra, dict):
                yield from pruned(v, extra, f"{path}.{k}")
            elif props is not None:
                yield f"{path}.{k}"
    elif isinstance(obj, list) and isinstance(schema, dict) and "items" in schema:
        for i, v in enumerate(obj):
            yield from pruned(v, schema["items"], f"{path}[{i}]")
bad, seen = 0, 0
for d in yaml.safe_load_all(open(sys.argv[2])):
    if not d or "/" not in d.get("apiVersion", ""):
        continue
    group, version = d["apiVersion"].split("/")
    schema = crds.get((group, version, d["kind"]))
    if schema is None:
        continue
    seen += 1
    name = f"{d['kind']} {d['metadata']['name']}"
    errs = list(jsonschema.Draft7Validator(json_schema(schema)).iter_errors(d))
    lost = [p for p in pruned(d, schema, "") if not p.startswith((".apiVersion", ".kind", ".metadata"))]
    for e in errs:
        print(f"{name}: {'.'.join(map(str, e.path))}: {e.message[:160]}")
    for p in lost:
        print(f"{name}: {p}: unknown field, pruned by the API server")
    bad |= bool(errs or lost)
    print(f"{name}: {'invalid' if errs or lost else 'valid'}")
if not seen:
    print("no object of these CRDs")
    bad = 1
sys.exit(bad)
PY3
  ); then
    results+=("OK       $3: $(tr '\n' ' ' <<<"$out")")
  else
    results+=("INVALID  $3: $(tr '\n' ' ' <<<"$out")"); failed=1
  fi
}
if [[ -f $dir/opentelemetry-operator/Chart.yaml ]]; then
  "$HELM" template op "$dir/opentelemetry-operator" -n observability --include-crds >"$work/operator.yaml" 2>/dev/null || true
  NAME=lgtm-remote-otel TENANT=remote03 fill "$DEPLOY_DIR/manifests/otel-collectors.yaml" "OTEL_COLLECTOR_IMAGE=$OTEL_COLLECTOR_IMAGE" >"$work/collectors.yaml"
  check_crs "$work/operator.yaml" "$work/collectors.yaml" "scenario 3's collectors vs the OpenTelemetryCollector CRD (opentelemetry-operator $OTEL_OPERATOR_CHART_VERSION)"
fi
if [[ -f $dir/prometheus-operator-crds/Chart.yaml ]]; then
  "$HELM" template crds "$dir/prometheus-operator-crds" >"$work/monitoring-crds.yaml" 2>/dev/null || true
  {
    "$HELM" template lgtm-agent "$REPO_DIR/charts/lgtm-agent" -n observability -f "$REPO_DIR/charts/lgtm-agent/ci/full-values.yaml"
    echo "---"
    "$HELM" template lgtm-agent "$REPO_DIR/charts/lgtm-agent" -n observability -f "$REPO_DIR/charts/lgtm-agent/ci/options-values.yaml"
    echo "---"
    sed -e 's/__[A-Z_]*__/placeholder/g' "$DEPLOY_DIR/manifests/tns.yaml"
  } >"$work/monitoring-objects.yaml"
  check_crs "$work/monitoring-crds.yaml" "$work/monitoring-objects.yaml" "the chart's ServiceMonitor and PrometheusRule, TNS's ServiceMonitor vs prometheus-operator-crds $PROMETHEUS_OPERATOR_CRDS_VERSION"
fi
printf '%s\n' "${results[@]}"
exit "$failed"
