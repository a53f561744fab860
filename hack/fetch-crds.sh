#!/usr/bin/env bash
# Copies the real third-party CRDs the operator creates objects of (KubeRay RayJob/RayService/
# RayCluster, prometheus-operator ServiceMonitor/PrometheusRule) out of their Go modules, which the
# Go module proxy serves with the YAML inside. Cached per version; prints the directory.
set -euo pipefail

KUBERAY_VERSION="${LLMKUBE_KUBERAY_VERSION:-v1.5.0}"
PROMOP_VERSION="${LLMKUBE_PROMETHEUS_OPERATOR_VERSION:-v0.85.0}"
CACHE_ROOT="${LLMKUBE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/llmkube}"
OUT="$CACHE_ROOT/crds/kuberay-$KUBERAY_VERSION-prometheus-operator-$PROMOP_VERSION"

if [[ -f "$OUT/.complete" ]]; then
  echo "$OUT"
  exit 0
fi
command -v go >/dev/null || { echo "go is required to fetch the third-party CRDs" >&2; exit 1; }

module_dir() {
  (cd "$(mktemp -d)" && GOFLAGS=-mod=mod go mod download -json "$1" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
}

mkdir -p "$OUT"
kuberay=$(module_dir "github.com/ray-project/kuberay/ray-operator@$KUBERAY_VERSION")
for kind in rayclusters rayjobs rayservices; do
  cp "$kuberay/config/crd/bases/ray.io_$kind.yaml" "$OUT/"
done
promop=$(module_dir "github.com/prometheus-operator/prometheus-operator@$PROMOP_VERSION")
for kind in servicemonitors prometheusrules; do
  cp "$promop/example/prometheus-operator-crd/monitoring.coreos.com_$kind.yaml" "$OUT/"
done
chmod u+w "$OUT"/*.yaml
touch "$OUT/.complete"
echo "$OUT"
