#!/usr/bin/env bash
# Builds the pinned OpenTelemetry Collector that `bench node` runs as lgtm-agent's peer, from
# integration/peers/otelcol (a builder-style main package; every module pinned in go.mod/go.sum to
# one Collector release), into a cache directory outside the repo:
#
#   ${LGTM_PEERS_CACHE:-~/.cache/lgtm-agent/peers}/otelcol-<version>/otelcol-lgtm-bench
#
# Idempotent: exits at once when that binary exists and is newer than the sources. CI never needs it
# (the bench says how to build it when absent). Needs Go >= 1.26 and the Go module proxy.
#
# The build runs with one package at a time (-p=1) and under nice, to leave CPU to others on a shared
# machine; it takes ~10-20 minutes on one core. Its Go build cache is kept beside the binary
# (~1.5 GiB), so an interrupted build resumes where it stopped; the binary is ~200 MiB.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
src="$repo/integration/peers/otelcol"
version="$(sed -n 's/^const collectorVersion = "\(.*\)"$/\1/p' "$src/main.go")"
cache="${LGTM_PEERS_CACHE:-$HOME/.cache/lgtm-agent/peers}"
out="$cache/otelcol-$version"
bin="$out/otelcol-lgtm-bench"

if [[ -x "$bin" && "$bin" -nt "$src/main.go" && "$bin" -nt "$src/go.sum" ]]; then
  echo "up to date: $bin"
  exit 0
fi

command -v go >/dev/null || { echo "go is not installed (need Go >= 1.26)" >&2; exit 1; }
mkdir -p "$out"
gocache="$cache/go-build-cache"
mkdir -p "$gocache"

echo "building OpenTelemetry Collector $version into $bin (GOFLAGS=-p=1, nice)"
cd "$src"
GOCACHE="$gocache" GOFLAGS="-p=1 -mod=readonly -trimpath" CGO_ENABLED=0 \
  nice -n 10 go build -ldflags="-s -w" -o "$bin.tmp" .
mv "$bin.tmp" "$bin"
"$bin" --version
