#!/usr/bin/env bash
# Installs what the tests need, only when it is missing (idempotent): the real peers of
# DESIGN.md (Prometheus, node_exporter, rotel, the OpenTelemetry Python SDK) and rustfmt/clippy.
set -euo pipefail

need_apt=()
command -v prometheus >/dev/null 2>&1 || need_apt+=(prometheus)
command -v prometheus-node-exporter >/dev/null 2>&1 || need_apt+=(prometheus-node-exporter)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing Debian packages: ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

need_pip=()
python3 -c 'import rotel, os, sys; sys.exit(0 if os.path.exists(os.path.join(os.path.dirname(rotel.__file__), "rotel-agent")) else 1)' 2>/dev/null || need_pip+=(rotel)
python3 -c 'import opentelemetry.sdk' 2>/dev/null || need_pip+=(opentelemetry-sdk)
python3 -c 'import opentelemetry.exporter.otlp.proto.grpc' 2>/dev/null || need_pip+=(opentelemetry-exporter-otlp-proto-grpc)
python3 -c 'import opentelemetry.exporter.zipkin.json' 2>/dev/null || need_pip+=(opentelemetry-exporter-zipkin-json)
if [ ${#need_pip[@]} -gt 0 ]; then
  echo "installing PyPI packages: ${need_pip[*]}"
  python3 -m pip install -q "${need_pip[@]}"
fi

# The Jaeger Thrift exporter (last release 1.21) needs the SDK of its time, older than the one
# above: it gets a venv of its own, which the Jaeger client tests use (LGTM_JAEGER_PYTHON overrides).
jaeger_venv=/tmp/lgtm-agent-jaeger-venv
if ! "$jaeger_venv/bin/python" -c 'import opentelemetry.exporter.jaeger.thrift' 2>/dev/null; then
  echo "installing the Jaeger Thrift exporter into $jaeger_venv"
  python3 -m venv "$jaeger_venv"
  "$jaeger_venv/bin/python" -m pip install -q opentelemetry-api==1.21.0 opentelemetry-sdk==1.21.0 \
    opentelemetry-exporter-jaeger-thrift==1.21.0
fi

rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
