#!/usr/bin/env bash
# Certificates shared by the clusters (run once, before any deploy-*.sh):
#   certs/linkerd/{ca,issuer}.{crt,key}    Linkerd trust anchor and identity issuer (all clusters)
#   certs/istio/<cluster>/*.pem            Istio plug-in CAs under one root (one per cluster)
#   certs/cilium-ca.{crt,key}              Cilium's CA, shared by the ClusterMesh members
# Uses the step CLI. Existing files are kept; delete deploy/certs to regenerate.
# shellcheck source=deploy/lib.sh
source "$(dirname "$0")/lib.sh"
command -v step >/dev/null 2>&1 || die "missing tool: step (https://smallstep.com/docs/step-cli)"

clusters=(lgtm-central lgtm-remote lgtm-remote-alloy lgtm-remote-otel lgtm-remote-agent)
mkdir -p "$CERTS_DIR/linkerd" "$CERTS_DIR/istio"
s() { step certificate create "$@" --no-password --insecure --force >/dev/null; }

if [[ ! -f $CERTS_DIR/linkerd/ca.crt ]]; then
  log "Linkerd trust anchor and issuer"
  s root.linkerd.cluster.local "$CERTS_DIR/linkerd/ca.crt" "$CERTS_DIR/linkerd/ca.key" \
    --profile root-ca --not-after 87600h
  s identity.linkerd.cluster.local "$CERTS_DIR/linkerd/issuer.crt" "$CERTS_DIR/linkerd/issuer.key" \
    --profile intermediate-ca --not-after 8760h \
    --ca "$CERTS_DIR/linkerd/ca.crt" --ca-key "$CERTS_DIR/linkerd/ca.key"
fi

if [[ ! -f $CERTS_DIR/istio/root-cert.pem ]]; then
  log "Istio root CA"
  s "LGTM PoC Istio Root CA" "$CERTS_DIR/istio/root-cert.pem" "$CERTS_DIR/istio/root-key.pem" \
    --profile root-ca --not-after 87600h --kty RSA --size 4096
fi
for c in "${clusters[@]}"; do
  d=$CERTS_DIR/istio/$c
  [[ -f $d/ca-cert.pem ]] && continue
  log "Istio intermediate CA of $c"
  mkdir -p "$d"
  s "Istio intermediate CA $c" "$d/ca-cert.pem" "$d/ca-key.pem" --profile intermediate-ca \
    --not-after 8760h --kty RSA --size 2048 --san "istiod.istio-system.svc" \
    --ca "$CERTS_DIR/istio/root-cert.pem" --ca-key "$CERTS_DIR/istio/root-key.pem"
  cp "$CERTS_DIR/istio/root-cert.pem" "$d/root-cert.pem"
  cat "$d/ca-cert.pem" "$CERTS_DIR/istio/root-cert.pem" >"$d/cert-chain.pem"
done

if [[ ! -f $CERTS_DIR/cilium-ca.crt ]]; then
  log "Cilium CA"
  s "Cilium CA" "$CERTS_DIR/cilium-ca.crt" "$CERTS_DIR/cilium-ca.key" --profile root-ca --not-after 87600h
fi

if [[ ! -f $CERTS_DIR/grafana.crt ]]; then
  log "Grafana's self-signed certificate (grafana.example.com)"
  s grafana.example.com "$CERTS_DIR/grafana.crt" "$CERTS_DIR/grafana.key" \
    --profile self-signed --subtle --san grafana.example.com --not-after 8760h
fi
log "certificates in $CERTS_DIR"
