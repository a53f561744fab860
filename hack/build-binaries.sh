#!/usr/bin/env bash
# Builds the control-plane binaries tests need from the Go module proxy, once per machine, cached
# by version under $LLMKUBE_CACHE (default ~/.cache/llmkube). No registry ships them as binaries.
#
#   kubernetes: kube-apiserver, kube-controller-manager, kube-scheduler, kubectl
#   etcd:       etcd
#   minio:      minio (the S3 server storage tests run against)
#   helm:       helm (renders and lints the chart; its RBAC runs the operator in tests)
#   kuberay:    ray-operator (KubeRay's controller, at the version of the CRDs fetch-crds.sh
#               installs)
#   kwok:       kwok (simulated nodes, and pods on them that run nothing)
#
# Each is built in a throw-away wrapper module: k8s.io/kubernetes and etcd's server replace their
# sibling modules with ../ paths that only exist in their git trees, and a dependency's replaces are
# ignored, so the wrapper requires the module and (for Kubernetes) pins each staging module to its
# v0.x release. Prints `name=directory` lines. Idempotent and safe to run concurrently.
set -euo pipefail

KUBE_VERSION="${LLMKUBE_KUBE_VERSION:-v1.34.4}"
ETCD_VERSION="${LLMKUBE_ETCD_VERSION:-v3.6.4}"
# MinIO publishes no semver tags; this is the newest commit the module proxy serves.
MINIO_VERSION="${LLMKUBE_MINIO_VERSION:-v0.0.0-20260212201848-7aac2a2c5b7c}"
HELM_VERSION="${LLMKUBE_HELM_VERSION:-v3.22.0}"
KUBERAY_VERSION="${LLMKUBE_KUBERAY_VERSION:-v1.5.0}"
KWOK_VERSION="${LLMKUBE_KWOK_VERSION:-v0.8.0}"
CACHE_ROOT="${LLMKUBE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/llmkube}"

command -v go >/dev/null || { echo "go is required to build the control plane (apt-get install golang-go)" >&2; exit 1; }
# kwok needs Go 1.26: an older local Go fetches that toolchain from the module proxy (Go's own
# distribution, and Debian's, default to GOTOOLCHAIN=local, which would refuse instead).
export GOFLAGS=-mod=mod CGO_ENABLED=0 GOTOOLCHAIN=auto

# build_once NAME VERSION WRITE_GO_MOD_FUNCTION LDFLAGS PACKAGE:BINARY...
build_once() {
  local name=$1 version=$2 write_go_mod=$3 ldflags=$4
  shift 4
  local out="$CACHE_ROOT/bin/$name-$version" target missing=""
  for target in "$@"; do
    [[ -x "$out/${target##*:}" ]] || missing=yes  # a binary added to the list since
  done
  if [[ ! -f "$out/.complete" || -n "$missing" ]]; then
    mkdir -p "$out" "$CACHE_ROOT/build/$name-$version"
    exec 9>"$CACHE_ROOT/.$name-$version.lock"
    flock 9  # a concurrent set-up waits for this build instead of racing it
    if [[ ! -f "$out/.complete" || -n "$missing" ]]; then
      (
        cd "$CACHE_ROOT/build/$name-$version"
        # Through a temporary file: the generator may run `go` here, and an empty go.mod
        # (what `> go.mod` leaves while it runs) is an invalid module.
        rm -f go.mod
        "$write_go_mod" "$version" > go.mod.new
        mv go.mod.new go.mod
        printf 'package wrapper\n' > doc.go
        local target package binary
        for target in "$@"; do
          package=${target%%:*} binary=${target##*:}
          [[ -x "$out/$binary" ]] && continue
          echo "building $binary $version (first run on this machine only; minutes on 2 cores)" >&2
          go build -trimpath -ldflags "$ldflags" -o "$out/$binary.partial" "$package"
          mv "$out/$binary.partial" "$out/$binary"
        done
      )
      touch "$out/.complete"
    fi
    exec 9>&-
  fi
  echo "$name=$out"
}

kubernetes_go_mod() {
  local version=$1 gomod
  gomod=$(go mod download -json "k8s.io/kubernetes@$version" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
  printf 'module llmkube.local/kubernetes\n\ngo %s\n\nrequire k8s.io/kubernetes %s\n\nreplace (\n' \
    "$(awk '$1=="go"{print $2; exit}' "$gomod")" "$version"
  awk -v staging="v0.${version#v1.}" \
    '$2=="=>" && $3 ~ /^\.\/staging\// {printf "\t%s => %s %s\n", $1, $1, staging}' "$gomod"
  printf ')\n'
}

etcd_go_mod() {
  printf 'module llmkube.local/etcd\n\ngo 1.24\n\nrequire go.etcd.io/etcd/server/v3 %s\n' "$1"
}

minio_go_mod() {
  printf 'module llmkube.local/minio\n\ngo 1.24\n\nrequire github.com/minio/minio %s\n' "$1"
}

helm_go_mod() {
  printf 'module llmkube.local/helm\n\ngo 1.24\n\nrequire helm.sh/helm/v3 %s\n' "$1"
}

kuberay_go_mod() {
  printf 'module llmkube.local/kuberay\n\ngo 1.24\n\nrequire github.com/ray-project/kuberay/ray-operator %s\n' "$1"
}

kwok_go_mod() {
  printf 'module llmkube.local/kwok\n\ngo 1.26\n\nrequire sigs.k8s.io/kwok %s\n' "$1"
}

kube_ldflags="-s -w"
major=${KUBE_VERSION#v}; major=${major%%.*}
minor=${KUBE_VERSION#v*.}; minor=${minor%%.*}
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  kube_ldflags+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
  kube_ldflags+=" -X $pkg.gitTreeState=clean"
done

build_once kubernetes "$KUBE_VERSION" kubernetes_go_mod "$kube_ldflags" \
  k8s.io/kubernetes/cmd/kube-apiserver:kube-apiserver \
  k8s.io/kubernetes/cmd/kube-controller-manager:kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler:kube-scheduler \
  k8s.io/kubernetes/cmd/kubectl:kubectl
build_once etcd "$ETCD_VERSION" etcd_go_mod "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=release" \
  go.etcd.io/etcd/server/v3:etcd
build_once minio "$MINIO_VERSION" minio_go_mod "-s -w" github.com/minio/minio:minio
build_once helm "$HELM_VERSION" helm_go_mod "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
  helm.sh/helm/v3/cmd/helm:helm
build_once kuberay "$KUBERAY_VERSION" kuberay_go_mod "-s -w" \
  github.com/ray-project/kuberay/ray-operator:ray-operator
build_once kwok "$KWOK_VERSION" kwok_go_mod "-s -w" \
  sigs.k8s.io/kwok/cmd/kwok:kwok

# kwok's stages (what its simulated nodes and pods go through) ship in its module as YAML, not
# in the binary: copy the ones a standalone kwok needs beside it. Nodes: become Ready, renew
# their lease. Pods: Ready with an IP once scheduled; a Job's pods succeed; deleted ones go.
kwok_out="$CACHE_ROOT/bin/kwok-$KWOK_VERSION"
if [[ ! -f "$kwok_out/stages/.complete" ]]; then
  kwok_module=$(cd "$CACHE_ROOT/build/kwok-$KWOK_VERSION" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)
  mkdir -p "$kwok_out/stages"
  for stage in node/fast/node-initialize node/heartbeat-with-lease/node-heartbeat-with-lease \
    pod/fast/pod-ready pod/fast/pod-complete pod/fast/pod-delete; do
    cp "$kwok_module/kustomize/stage/$stage.yaml" "$kwok_out/stages/"
  done
  cp "$kwok_module/LICENSE" "$kwok_out/stages/LICENSE"
  touch "$kwok_out/stages/.complete"
fi
