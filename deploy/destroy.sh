#!/usr/bin/env bash
# Deletes the Kind clusters of the PoC (all five, or those named): ./deploy/destroy.sh [NAME...]
# shellcheck source=deploy/lib.sh
source "$(dirname "$0")/lib.sh"
clusters=("$@")
((${#clusters[@]})) || clusters=(lgtm-remote-agent lgtm-remote-otel lgtm-remote-alloy lgtm-remote lgtm-central)
for c in "${clusters[@]}"; do
  if kind get clusters 2>/dev/null | grep -qx "$c"; then
    log "deleting kind cluster $c"
    kind delete cluster --name "$c"
  fi
done
