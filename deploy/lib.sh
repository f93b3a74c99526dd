#!/usr/bin/env bash
# Shared functions of the deploy scripts: Kind clusters with their own CIDRs, the CNI (Cilium or
# Kind's default + MetalLB), load-balancer pools, the service mesh (Linkerd, Istio or Cilium
# ClusterMesh) and the link of a remote cluster to lgtm-central, Grafana datasources per tenant.
# Sourced by the deploy-*.sh scripts; not meant to be run.
#
# Environment (the PoC's switches):
#   CILIUM_ENABLED=yes|no               Cilium as CNI (default yes); no: Kind's CNI + MetalLB
#   CILIUM_CLUSTER_MESH_ENABLED=yes|no  link clusters with Cilium ClusterMesh (needs Cilium)
#   ISTIO_ENABLED=yes|no                link clusters with Istio (multi-primary, multi-network)
#   ISTIO_PROFILE=default|ambient       Istio profile
#   neither of the last two: Linkerd multicluster (the default)
#   CERTS_DIR                           where deploy-certs.sh wrote the certificates (deploy/certs)
#   KIND_WORKERS                        worker nodes of the remote clusters (default 1)
#   <CHART>_CHART_VERSION               another version of a chart than the pinned one below
#
# Needs Helm 4 (the chart checks use v4.3.2); Helm 3.14+ works too. Every chart and image is
# pinned: the chart versions below, the images by the charts' appVersion or a tag set here.

set -euo pipefail

DEPLOY_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck disable=SC2034 # used by the scripts that source this file
REPO_DIR=$(cd "$DEPLOY_DIR/.." && pwd)
CERTS_DIR=${CERTS_DIR:-$DEPLOY_DIR/certs}
CILIUM_ENABLED=${CILIUM_ENABLED:-yes}
CILIUM_CLUSTER_MESH_ENABLED=${CILIUM_CLUSTER_MESH_ENABLED:-no}
ISTIO_ENABLED=${ISTIO_ENABLED:-no}
ISTIO_PROFILE=${ISTIO_PROFILE:-default}
GATEWAY_API_VERSION=${GATEWAY_API_VERSION:-v1.3.0}
KIND_WORKERS=${KIND_WORKERS:-1}
CENTRAL=lgtm-central

# Pinned chart versions (override one with its variable). Where the upstream PoC takes a chart
# from a repository, this takes it from the same repository.
: "${CILIUM_CHART_VERSION:=1.18.4}"                # cilium/cilium
: "${METALLB_CHART_VERSION:=0.15.2}"               # metallb/metallb
: "${LINKERD_CHART_VERSION:=2025.10.7}"            # linkerd-edge/linkerd-{crds,control-plane,multicluster}
: "${CERT_MANAGER_CHART_VERSION:=v1.18.2}"         # jetstack/cert-manager
: "${PROMETHEUS_OPERATOR_CRDS_VERSION:=31.0.1}"    # prometheus-community/prometheus-operator-crds
: "${KPS_CHART_VERSION:=88.5.3}"                   # prometheus-community/kube-prometheus-stack
: "${RUSTFS_CHART_VERSION:=0.12.0}"                # rustfs/rustfs (https://charts.rustfs.com)
: "${MIMIR_CHART_VERSION:=5.8.0}"                  # grafana/mimir-distributed
: "${LOKI_CHART_VERSION:=18.11.0}"                 # grafana-community/loki (grafana/loki is maintenance-only)
: "${TEMPO_CHART_VERSION:=2.26.2}"                 # grafana-community/tempo-distributed (Tempo 2.10; the 3.x charts need Kafka)
: "${GRAFANA_CHART_VERSION:=12.11.1}"              # grafana-community/grafana
: "${VECTOR_CHART_VERSION:=0.57.0}"                # vector/vector
: "${FLUENTBIT_CHART_VERSION:=0.58.1}"             # fluent/fluent-bit
: "${ALLOY_CHART_VERSION:=1.11.1}"                 # grafana/alloy
: "${OTEL_OPERATOR_CHART_VERSION:=0.122.0}"        # open-telemetry/opentelemetry-operator
: "${OTEL_COLLECTOR_IMAGE:=otel/opentelemetry-collector-contrib:0.158.0}"
: "${OTEL_DEMO_CHART_VERSION:=0.41.0}"             # open-telemetry/opentelemetry-demo (OTEL_DEMO=yes only)

log() { printf '\033[1;34m[%s]\033[0m %s\n' "$(date +%H:%M:%S)" "$*"; }
warn() { printf '\033[1;33m[%s] WARNING:\033[0m %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '\033[1;31m[%s] ERROR:\033[0m %s\n' "$(date +%H:%M:%S)" "$*" >&2; exit 1; }

# mesh: which of linkerd, istio, cilium links the clusters.
mesh() {
  if [[ $CILIUM_CLUSTER_MESH_ENABLED == yes ]]; then
    echo cilium
  elif [[ $ISTIO_ENABLED == yes ]]; then
    echo istio
  else
    echo linkerd
  fi
}

check_settings() {
  if [[ $CILIUM_CLUSTER_MESH_ENABLED == yes && $ISTIO_ENABLED == yes ]]; then
    die "choose one of CILIUM_CLUSTER_MESH_ENABLED=yes and ISTIO_ENABLED=yes"
  fi
  if [[ $CILIUM_CLUSTER_MESH_ENABLED == yes && $CILIUM_ENABLED != yes ]]; then
    die "CILIUM_CLUSTER_MESH_ENABLED=yes needs CILIUM_ENABLED=yes"
  fi
}

# require_tools TOOL...: the laptop's tools; the mesh's CLI is added automatically.
require_tools() {
  local missing=() t
  local tools=("$@")
  case $(mesh) in
    linkerd) tools+=(linkerd) ;;
    istio) tools+=(istioctl) ;;
    cilium) tools+=(cilium) ;;
  esac
  for t in "${tools[@]}"; do
    command -v "$t" >/dev/null 2>&1 || missing+=("$t")
  done
  ((${#missing[@]} == 0)) || die "missing tools: ${missing[*]} (see deploy/README.md, Prerequisites)"
  if [[ " ${tools[*]} " == *" helm "* ]]; then
    local v
    v=$(helm version --template '{{.Version}}' 2>/dev/null || true)
    [[ $v =~ ^v(4\.|3\.(1[4-9]|[2-9][0-9])) ]] || die "Helm 4 (or 3.14+) is needed; found ${v:-none}"
  fi
  check_settings
}

ctx() { echo "kind-$1"; }
k() { local c=$1; shift; kubectl --context "$(ctx "$c")" "$@"; }
h() { local c=$1; shift; helm --kube-context "$(ctx "$c")" "$@"; }

helm_repos() {
  helm repo add grafana https://grafana.github.io/helm-charts --force-update >/dev/null
  helm repo add grafana-community https://grafana-community.github.io/helm-charts --force-update >/dev/null
  helm repo add rustfs https://charts.rustfs.com --force-update >/dev/null
  helm repo add prometheus-community https://prometheus-community.github.io/helm-charts --force-update >/dev/null
  helm repo add cilium https://helm.cilium.io --force-update >/dev/null
  helm repo add metallb https://metallb.github.io/metallb --force-update >/dev/null
  helm repo add linkerd-edge https://helm.linkerd.io/edge --force-update >/dev/null
  helm repo add vector https://helm.vector.dev --force-update >/dev/null
  helm repo add fluent https://fluent.github.io/helm-charts --force-update >/dev/null
  helm repo add open-telemetry https://open-telemetry.github.io/opentelemetry-helm-charts --force-update >/dev/null
  helm repo add jetstack https://charts.jetstack.io --force-update >/dev/null
  helm repo update >/dev/null
}

# version_flag VAR: `--version $VAR` (every chart is pinned above).
version_flag() {
  local v=${!1:-}
  [[ -n $v ]] || die "$1 is empty: every chart is pinned (deploy/lib.sh)"
  printf -- '--version\n%s\n' "$v"
}

# fill FILE [KEY=VALUE...]: FILE with the placeholders __CLUSTER__, __TENANT__, __MIMIR_PUSH_URL__,
# __LOKI_PUSH_URL__, __LOKI_HOST__, __TEMPO_OTLP_HOST__ (from NAME and TENANT, and the mesh) and
# any __KEY__ given replaced; fails on a placeholder left over.
fill() {
  local file=$1 out kv
  shift
  out=$(sed -e "s|__CLUSTER__|${NAME:-}|g" -e "s|__TENANT__|${TENANT:-}|g" \
    -e "s|__MIMIR_PUSH_URL__|$(mimir_push_url)|g" -e "s|__LOKI_PUSH_URL__|$(loki_push_url)|g" \
    -e "s|__LOKI_HOST__|$(central_host loki-write loki)|g" -e "s|__TEMPO_OTLP_HOST__|$(tempo_otlp_host)|g" "$file")
  for kv in "$@"; do out=${out//__${kv%%=*}__/${kv#*=}}; done
  if grep -o -E '__[A-Z][A-Z_]*__' <<<"$out" | sort -u | grep . >&2; then die "$file: placeholders left (above)"; fi
  printf '%s\n' "$out"
}

# load_image NAME IMAGE: the local image into every node of Kind cluster NAME. `kind load
# docker-image` fails with Docker 29's default (containerd) image store; an archive works with both.
load_image() {
  local name=$1 image=$2 dir
  dir=$(mktemp -d) # (mktemp --suffix is GNU only)
  docker save -o "$dir/image.tar" "$image"
  kind load image-archive "$dir/image.tar" --name "$name"
  rm -rf "$dir"
}

# --- Kind ------------------------------------------------------------------------------------

# kind_create NAME POD_CIDR SERVICE_CIDR WORKERS
kind_create() {
  local name=$1 pods=$2 services=$3 workers=$4 i cni=false
  if kind get clusters 2>/dev/null | grep -qx "$name"; then
    log "kind cluster $name exists"
    return 0
  fi
  [[ $CILIUM_ENABLED == yes ]] && cni=true
  log "creating kind cluster $name (pods $pods, services $services, $workers worker(s), cilium=$CILIUM_ENABLED)"
  {
    echo "kind: Cluster"
    echo "apiVersion: kind.x-k8s.io/v1alpha4"
    echo "name: $name"
    echo "networking:"
    echo "  podSubnet: $pods"
    echo "  serviceSubnet: $services"
    echo "  disableDefaultCNI: $cni"
    [[ $cni == true ]] && echo "  kubeProxyMode: none"
    echo "nodes:"
    echo "  - role: control-plane"
    for ((i = 0; i < workers; i++)); do echo "  - role: worker"; done
  } | kind create cluster --config - --wait 0s
}

# lb_prefix: the first three octets for the load-balancer segments, inside Docker's `kind`
# network (x.y.255 for a /16, x.y.z for a /24), as the PoC's x.x.x.248/29 segments.
lb_prefix() {
  local subnet net bits
  subnet=$(docker network inspect kind -f '{{range .IPAM.Config}}{{.Subnet}} {{end}}' | tr ' ' '\n' | grep -E '^[0-9]+\.' | head -1)
  [[ -n $subnet ]] || die "no IPv4 subnet on docker network kind"
  net=${subnet%/*}
  bits=${subnet#*/}
  if ((bits <= 16)); then
    echo "$(cut -d. -f1-2 <<<"$net").255"
  else
    cut -d. -f1-3 <<<"$net"
  fi
}

# install_cni NAME CLUSTER_ID LB_LAST_OCTET: Cilium (with LB IPAM and L2 announcements) or
# MetalLB, and a /29 load-balancer pool at <prefix>.<octet>/29.
install_cni() {
  local name=$1 id=$2 octet=$3 pool
  pool="$(lb_prefix).$octet/29"
  if [[ $CILIUM_ENABLED == yes ]]; then
    install_cilium "$name" "$id"
    log "$name: Cilium LB IPAM pool $pool"
    k "$name" apply -f - <<EOF
apiVersion: cilium.io/v2alpha1
kind: CiliumLoadBalancerIPPool
metadata:
  name: $name
spec:
  blocks:
    - cidr: $pool
---
apiVersion: cilium.io/v2alpha1
kind: CiliumL2AnnouncementPolicy
metadata:
  name: $name
spec:
  loadBalancerIPs: true
  interfaces: ["^eth[0-9]+"]
EOF
  else
    log "$name: MetalLB pool $pool"
    # shellcheck disable=SC2046
    h "$name" upgrade --install metallb metallb/metallb -n metallb-system --create-namespace \
      $(version_flag METALLB_CHART_VERSION) --wait
    k "$name" apply -f - <<EOF
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata:
  name: $name
  namespace: metallb-system
spec:
  addresses: [$pool]
---
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata:
  name: $name
  namespace: metallb-system
spec:
  ipAddressPools: [$name]
EOF
  fi
}

install_cilium() {
  local name=$1 id=$2 args=() keep
  keep=$(mktemp)
  args+=(--set "cluster.name=$name" --set "cluster.id=$id")
  args+=(--set kubeProxyReplacement=true --set "k8sServiceHost=$name-control-plane" --set k8sServicePort=6443)
  args+=(--set ipam.mode=kubernetes --set l2announcements.enabled=true --set externalIPs.enabled=true)
  args+=(--set operator.replicas=1 --set hubble.enabled=false)
  # Linkerd and Istio need Cilium's socket LB limited to the host namespace; Istio's CNI chains
  # after Cilium's.
  case $(mesh) in
    linkerd) args+=(--set socketLB.hostNamespaceOnly=true) ;;
    istio) args+=(--set socketLB.hostNamespaceOnly=true --set cni.exclusive=false) ;;
    cilium)
      # Every cluster of the mesh shares one CA (deploy-certs.sh).
      args+=(--set tls.ca.cert="$(base64 <"$CERTS_DIR/cilium-ca.crt" | tr -d '\n')")
      args+=(--set tls.ca.key="$(base64 <"$CERTS_DIR/cilium-ca.key" | tr -d '\n')")
      args+=(--set clustermesh.useAPIServer=true --set clustermesh.apiserver.service.type=LoadBalancer)
      args+=(--set clustermesh.apiserver.tls.auto.method=cronJob)
      # Telemetry crosses clusters in the clear otherwise: WireGuard between every node.
      args+=(--set encryption.enabled=true --set encryption.type=wireguard)
      ;;
  esac
  # `cilium clustermesh connect` stores the links in this release's values: a re-run keeps them
  # (a plain upgrade would drop every link of an existing mesh).
  if h "$name" status cilium -n kube-system >/dev/null 2>&1; then
    h "$name" get values cilium -n kube-system -o json | jq '{clustermesh: {config: (.clustermesh.config // {})}}' >"$keep"
    args+=(-f "$keep")
  fi
  log "$name: installing Cilium (cluster id $id)"
  # shellcheck disable=SC2046
  h "$name" upgrade --install cilium cilium/cilium -n kube-system "${args[@]}" $(version_flag CILIUM_CHART_VERSION)
  k "$name" -n kube-system rollout status ds/cilium --timeout=10m
  k "$name" wait --for=condition=Ready nodes --all --timeout=10m
}

# --- Service mesh ----------------------------------------------------------------------------

# mesh_namespace NAME NAMESPACE: creates the namespace, enrolled in the mesh (sidecar injection
# or ambient), before anything is installed in it.
mesh_namespace() {
  local name=$1 ns=$2
  k "$name" create namespace "$ns" --dry-run=client -o yaml | k "$name" apply -f - >/dev/null
  case $(mesh) in
    linkerd)
      # Native sidecars (Kubernetes 1.29+) let Jobs finish and order the proxy's start first.
      k "$name" annotate namespace "$ns" linkerd.io/inject=enabled \
        config.alpha.linkerd.io/proxy-enable-native-sidecar=true --overwrite >/dev/null
      ;;
    istio)
      if [[ $ISTIO_PROFILE == ambient ]]; then
        k "$name" label namespace "$ns" istio.io/dataplane-mode=ambient --overwrite >/dev/null
      else
        k "$name" label namespace "$ns" istio-injection=enabled --overwrite >/dev/null
      fi
      ;;
    cilium) ;;
  esac
}

install_mesh() {
  local name=$1
  case $(mesh) in
    linkerd) install_linkerd "$name" ;;
    istio) install_istio "$name" ;;
    cilium) log "$name: Cilium ClusterMesh was enabled with the CNI" ;;
  esac
}

install_linkerd() {
  local name=$1
  [[ -f $CERTS_DIR/linkerd/ca.crt ]] || die "run deploy/deploy-certs.sh first"
  log "$name: installing Linkerd (edge) and its multicluster extension"
  # shellcheck disable=SC2046
  h "$name" upgrade --install linkerd-crds linkerd-edge/linkerd-crds -n linkerd --create-namespace $(version_flag LINKERD_CHART_VERSION)
  # shellcheck disable=SC2046
  h "$name" upgrade --install linkerd-control-plane linkerd-edge/linkerd-control-plane -n linkerd \
    --set-file identityTrustAnchorsPEM="$CERTS_DIR/linkerd/ca.crt" \
    --set-file identity.issuer.tls.crtPEM="$CERTS_DIR/linkerd/issuer.crt" \
    --set-file identity.issuer.tls.keyPEM="$CERTS_DIR/linkerd/issuer.key" \
    $(version_flag LINKERD_CHART_VERSION) --wait --timeout 10m
  local mc=(--set gateway.enabled=true)
  if [[ $name != "$CENTRAL" ]]; then
    # Remotes only consume: no gateway, one service-mirror controller for the central link.
    mc=(--set gateway.enabled=false --set "controllers[0].link.ref.name=$CENTRAL")
  fi
  # shellcheck disable=SC2046
  h "$name" upgrade --install linkerd-multicluster linkerd-edge/linkerd-multicluster -n linkerd-multicluster \
    --create-namespace "${mc[@]}" $(version_flag LINKERD_CHART_VERSION) --wait --timeout 10m
}

install_istio() {
  local name=$1 d=$CERTS_DIR/istio/$1
  [[ -f $d/ca-cert.pem ]] || die "run deploy/deploy-certs.sh first (no $d)"
  log "$name: installing Istio ($ISTIO_PROFILE) with the shared root CA, network $name"
  k "$name" create namespace istio-system --dry-run=client -o yaml | k "$name" apply -f - >/dev/null
  k "$name" label namespace istio-system "topology.istio.io/network=$name" --overwrite >/dev/null
  k "$name" -n istio-system create secret generic cacerts --dry-run=client -o yaml \
    --from-file="$d/ca-cert.pem" --from-file="$d/ca-key.pem" \
    --from-file="$d/root-cert.pem" --from-file="$d/cert-chain.pem" | k "$name" apply -f -
  if [[ $ISTIO_PROFILE == ambient ]]; then
    # Ambient multi-network: istiod's AMBIENT_ENABLE_MULTI_NETWORK, and an east-west gateway
    # of the Gateway API class istio-east-west (HBONE on 15008), not a sidecar-mode gateway.
    k "$name" apply -f "https://github.com/kubernetes-sigs/gateway-api/releases/download/$GATEWAY_API_VERSION/standard-install.yaml"
    istioctl install --context "$(ctx "$name")" -y -f - <<EOF
apiVersion: install.istio.io/v1alpha1
kind: IstioOperator
spec:
  profile: ambient
  components:
    pilot:
      k8s:
        env:
          - { name: AMBIENT_ENABLE_MULTI_NETWORK, value: "true" }
  values:
    global:
      meshID: lgtm
      multiCluster:
        clusterName: $name
      network: $name
EOF
    k "$name" apply -f - <<EOF
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: istio-eastwestgateway
  namespace: istio-system
  labels:
    topology.istio.io/network: $name
spec:
  gatewayClassName: istio-east-west
  listeners:
    - name: mesh
      port: 15008
      protocol: HBONE
      tls:
        mode: Terminate
        options:
          gateway.istio.io/tls-terminate-mode: ISTIO_MUTUAL
EOF
    return 0
  fi
  # Sidecar mode: DNS proxying (ISTIO_META_DNS_CAPTURE) lets the remotes resolve the central
  # services, which have no Service object in the remote cluster.
  istioctl install --context "$(ctx "$name")" -y -f - <<EOF
apiVersion: install.istio.io/v1alpha1
kind: IstioOperator
spec:
  meshConfig:
    defaultConfig:
      holdApplicationUntilProxyStarts: true
      proxyMetadata:
        ISTIO_META_DNS_CAPTURE: "true"
  values:
    global:
      meshID: lgtm
      multiCluster:
        clusterName: $name
      network: $name
    pilot:
      env:
        ENABLE_NATIVE_SIDECARS: "true"
  components:
    ingressGateways:
      - name: istio-eastwestgateway
        label:
          istio: eastwestgateway
          app: istio-eastwestgateway
          topology.istio.io/network: $name
        enabled: true
        k8s:
          env:
            - name: ISTIO_META_REQUESTED_NETWORK_VIEW
              value: $name
          service:
            type: LoadBalancer
            ports:
              - { name: status-port, port: 15021, targetPort: 15021 }
              - { name: tls, port: 15443, targetPort: 15443 }
              - { name: tls-istiod, port: 15012, targetPort: 15012 }
              - { name: tls-webhook, port: 15017, targetPort: 15017 }
EOF
  # Expose the services of this network to the others through the east-west gateway.
  k "$name" apply -n istio-system -f - <<EOF
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: cross-network-gateway
spec:
  selector:
    istio: eastwestgateway
  servers:
    - port: { number: 15443, name: tls, protocol: TLS }
      tls: { mode: AUTO_PASSTHROUGH }
      hosts: ["*.local"]
EOF
}

# link_to_central NAME: the remote cluster reaches lgtm-central's Mimir, Loki and Tempo.
link_to_central() {
  local name=$1
  case $(mesh) in
    linkerd)
      log "$name: linking to $CENTRAL (Linkerd multicluster)"
      linkerd --context "$(ctx "$CENTRAL")" multicluster link-gen --cluster-name "$CENTRAL" \
        --api-server-address "https://$CENTRAL-control-plane:6443" | k "$name" apply -f -
      # A broken link fails the deploy (not a warning).
      linkerd --context "$(ctx "$name")" multicluster check --wait 5m || die "$name: the Linkerd link to $CENTRAL is broken"
      ;;
    istio)
      log "$name: exchanging Istio remote secrets with $CENTRAL"
      istioctl create-remote-secret --context "$(ctx "$CENTRAL")" --name "$CENTRAL" \
        --server "https://$CENTRAL-control-plane:6443" | k "$name" apply -f -
      istioctl create-remote-secret --context "$(ctx "$name")" --name "$name" \
        --server "https://$name-control-plane:6443" | k "$CENTRAL" apply -f -
      local i synced=no
      for i in $(seq 30); do
        if istioctl --context "$(ctx "$name")" remote-clusters 2>/dev/null | grep -E "^${CENTRAL}[[:space:]]" | grep -q synced; then
          synced=yes; break
        fi
        sleep 10
      done
      [[ $synced == yes ]] || die "$name: istiod has not synced $CENTRAL (istioctl --context $(ctx "$name") remote-clusters)"
      ;;
    cilium)
      log "$name: connecting Cilium ClusterMesh to $CENTRAL"
      cilium clustermesh connect --context "$(ctx "$name")" --destination-context "$(ctx "$CENTRAL")"
      cilium clustermesh status --context "$(ctx "$name")" --wait --wait-duration 5m
      # ClusterMesh shares a service only if it exists on both sides: declare the central ones
      # here, without endpoints of their own.
      cilium_remote_service "$name" mimir mimir-distributor http-metrics 8080
      cilium_remote_service "$name" loki loki-write http-metrics 3100
      cilium_remote_service "$name" tempo tempo-distributor grpc-distributor-otlp 4317
      ;;
  esac
}

cilium_remote_service() {
  local name=$1 ns=$2 svc=$3 port_name=$4 port=$5
  k "$name" create namespace "$ns" --dry-run=client -o yaml | k "$name" apply -f - >/dev/null
  k "$name" apply -f - <<EOF
apiVersion: v1
kind: Service
metadata:
  name: $svc
  namespace: $ns
  annotations:
    service.cilium.io/global: "true"
    service.cilium.io/shared: "false"
spec:
  ports:
    - name: $port_name
      port: $port
      protocol: TCP
EOF
}

# export_central_services: make Mimir's distributor, Loki's write path and Tempo's distributor
# reachable from the remotes.
export_central_services() {
  case $(mesh) in
    linkerd)
      k "$CENTRAL" -n mimir label svc mimir-distributor mirror.linkerd.io/exported=true --overwrite
      k "$CENTRAL" -n loki label svc loki-write mirror.linkerd.io/exported=true --overwrite
      k "$CENTRAL" -n tempo label svc tempo-distributor mirror.linkerd.io/exported=true --overwrite
      ;;
    istio)
      # Sidecar mode sees every service through the east-west gateway; ambient mode shares
      # only services marked global.
      if [[ $ISTIO_PROFILE == ambient ]]; then
        k "$CENTRAL" -n mimir label svc mimir-distributor istio.io/global=true --overwrite
        k "$CENTRAL" -n loki label svc loki-write istio.io/global=true --overwrite
        k "$CENTRAL" -n tempo label svc tempo-distributor istio.io/global=true --overwrite
      fi
      ;;
    cilium)
      k "$CENTRAL" -n mimir annotate svc mimir-distributor service.cilium.io/global=true --overwrite
      k "$CENTRAL" -n loki annotate svc loki-write service.cilium.io/global=true --overwrite
      k "$CENTRAL" -n tempo annotate svc tempo-distributor service.cilium.io/global=true --overwrite
      ;;
  esac
}

# central_host SERVICE NAMESPACE: the name a remote uses for a central service.
central_host() {
  local svc=$1 ns=$2
  if [[ $(mesh) == linkerd ]]; then
    echo "$svc-$CENTRAL.$ns.svc"
  else
    echo "$svc.$ns.svc"
  fi
}
mimir_push_url() { echo "http://$(central_host mimir-distributor mimir):8080/api/v1/push"; }
loki_push_url() { echo "http://$(central_host loki-write loki):3100/loki/api/v1/push"; }
tempo_otlp_host() { echo "$(central_host tempo-distributor tempo):4317"; }

# --- Grafana ---------------------------------------------------------------------------------

# grafana_datasources LABEL TENANT: "Mimir/Loki/Tempo <LABEL>" datasources of one tenant in the
# central Grafana (its sidecar loads ConfigMaps labelled grafana_datasource=1).
grafana_datasources() {
  local label=$1 tenant=$2 cm
  cm="datasources-$tenant"
  log "$CENTRAL: Grafana datasources Mimir/Loki/Tempo $label (tenant $tenant)"
  k "$CENTRAL" apply -f - <<EOF
apiVersion: v1
kind: ConfigMap
metadata:
  name: $cm
  namespace: observability
  labels:
    grafana_datasource: "1"
data:
  $cm.yaml: |
    apiVersion: 1
    datasources:
      - name: Mimir $label
        uid: mimir-$tenant
        type: prometheus
        access: proxy
        url: http://mimir-query-frontend.mimir.svc:8080/prometheus
        jsonData:
          httpHeaderName1: X-Scope-OrgID
          timeInterval: 30s
        secureJsonData:
          httpHeaderValue1: $tenant
      - name: Loki $label
        uid: loki-$tenant
        type: loki
        access: proxy
        url: http://loki-read.loki.svc:3100
        jsonData:
          httpHeaderName1: X-Scope-OrgID
          derivedFields:
            - name: TraceID
              matcherRegex: '(?:trace_?id|traceID)[=:]"?(\\w+)'
              datasourceUid: tempo-$tenant
              url: '\$\${__value.raw}'
        secureJsonData:
          httpHeaderValue1: $tenant
      - name: Tempo $label
        uid: tempo-$tenant
        type: tempo
        access: proxy
        url: http://tempo-query-frontend.tempo.svc:3200
        jsonData:
          httpHeaderName1: X-Scope-OrgID
          tracesToLogsV2:
            datasourceUid: loki-$tenant
            filterByTraceID: true
          tracesToMetrics:
            datasourceUid: mimir-$tenant
          serviceMap:
            datasourceUid: mimir-$tenant
          nodeGraph:
            enabled: true
        secureJsonData:
          httpHeaderValue1: $tenant
EOF
}

# wait_rollout NAME NAMESPACE: every Deployment, StatefulSet and DaemonSet of a namespace.
wait_rollout() {
  local name=$1 ns=$2 r
  for r in $(k "$name" -n "$ns" get deploy,sts,ds -o name); do
    k "$name" -n "$ns" rollout status "$r" --timeout=15m
  done
}

# setup_remote NAME CLUSTER_ID POD_CIDR SERVICE_CIDR LB_OCTET: a remote Kind cluster with its CNI,
# load-balancer pool and mesh, linked to lgtm-central.
setup_remote() {
  local name=$1 id=$2 pods=$3 services=$4 octet=$5
  kind get clusters 2>/dev/null | grep -qx "$CENTRAL" || die "deploy lgtm-central first (deploy/deploy-central.sh)"
  kind_create "$name" "$pods" "$services" "$KIND_WORKERS"
  install_cni "$name" "$id" "$octet"
  install_mesh "$name"
  link_to_central "$name"
}

# deploy_tns NAME CLUSTER_LABEL JAEGER_AGENT_HOST: the TNS demo app (db, app, loadgen) with its
# ServiceMonitors in namespace tns. An empty JAEGER_AGENT_HOST disables its Jaeger tracer.
deploy_tns() {
  local name=$1 cluster=$2 jaeger=$3 disabled=false
  [[ -z $jaeger ]] && disabled=true
  log "$name: TNS demo app (namespace tns)"
  mesh_namespace "$name" tns
  sed -e "s|__CLUSTER__|$cluster|g" -e "s|__JAEGER_AGENT_HOST__|${jaeger:-localhost}|g" \
    -e "s|__JAEGER_DISABLED__|$disabled|g" "$DEPLOY_DIR/manifests/tns.yaml" | k "$name" apply -f -
  wait_rollout "$name" tns
}

# prometheus_operator_crds NAME: ServiceMonitor, PodMonitor, ... (no operator).
prometheus_operator_crds() {
  local name=$1
  log "$name: Prometheus Operator CRDs"
  # shellcheck disable=SC2046
  h "$name" upgrade --install prometheus-operator-crds prometheus-community/prometheus-operator-crds \
    -n kube-system $(version_flag PROMETHEUS_OPERATOR_CRDS_VERSION) --wait
}
