#!/usr/bin/env bash
# Builds a current Prometheus 3.x, the second oracle of the differential conformance test
# (`integration/tests/conformance.rs`; Debian's 2.42 is the first, and the one CI runs), with
# `go install` of the pinned module version into a cache directory outside the repo:
#
#   ${LGTM_PEERS_CACHE:-~/.cache/lgtm-agent/peers}/prometheus-<version>/prometheus
#
# Run the test against it with
#   CONFORMANCE_PROMETHEUS=<that path> cargo test -p lgtm-integration --test conformance -- --nocapture
#
# The module `github.com/prometheus/prometheus` v0.316.0 is Prometheus 3.16.0 (the v0.3xx.y module
# versions map to 3.xx.y). Built without its web UI assets (not needed: the test only uses agent
# mode and remote write). Idempotent: exits at once when the binary exists. CI never needs it.
# Needs Go >= 1.26 and the Go module proxy; the Go build cache is shared with build-otelcol.sh.
set -euo pipefail

module_version="v0.316.0"
cache="${LGTM_PEERS_CACHE:-$HOME/.cache/lgtm-agent/peers}"
version="3.${module_version#v0.3}"  # v0.316.0 -> 3.16.0
out="$cache/prometheus-$version"
bin="$out/prometheus"

if [[ -x "$bin" ]]; then
  echo "up to date: $bin"
  exit 0
fi

command -v go >/dev/null || { echo "go is not installed (need Go >= 1.26)" >&2; exit 1; }
mkdir -p "$out" "$cache/go-build-cache"
echo "building Prometheus (module $module_version) into $bin (GOFLAGS=-p=1, nice)"
GOBIN="$out" GOCACHE="$cache/go-build-cache" GOFLAGS="-p=1 -trimpath" CGO_ENABLED=0 \
  nice -n 10 go install \
  -ldflags="-s -w -X github.com/prometheus/common/version.Version=$version" \
  "github.com/prometheus/prometheus/cmd/prometheus@$module_version"
"$bin" --version
