#!/usr/bin/env bash
# Installs the real components the sandbox and the tests run on: kube-apiserver and etcd built from the Go
# module proxy, helm from `go install`, Prometheus from Debian. Binaries are cached outside the repository,
# keyed by version, so a second run costs seconds.
set -euo pipefail

KUBE_VERSION="${AIROLLOUT_KUBE_VERSION:-1.37.2}"
ETCD_VERSION="${AIROLLOUT_ETCD_VERSION:-v3.7.3}"
HELM_VERSION="${AIROLLOUT_HELM_VERSION:-v3.22.0}"
CACHE="${AIROLLOUT_CACHE:-$HOME/.cache/airollout}"
BIN="$CACHE/bin"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod

log() { printf '[install-tools] %s\n' "$*" >&2; }
mkdir -p "$BIN"

build_kube_apiserver() {
  local out="$CACHE/kube-$KUBE_VERSION/kube-apiserver"
  [ -x "$out" ] && return 0
  log "building kube-apiserver v$KUBE_VERSION (cold: about 15 minutes on 2 cores)"
  local work="$CACHE/build/kube-$KUBE_VERSION" staging="v0.${KUBE_VERSION#1.}" minor
  minor=$(echo "$KUBE_VERSION" | cut -d. -f2)
  mkdir -p "$work" && cd "$work"
  [ -f go.mod ] || go mod init local/kubebins >/dev/null 2>&1
  # k8s.io/kubernetes requires its staging modules at v0.0.0 and replaces them with local paths that a
  # consumer cannot see; its own go.mod names each one, so derive the list from it.
  local gomod
  gomod=$(go mod download -json "k8s.io/kubernetes@v$KUBE_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
  for m in $(sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\1#p' "$gomod"); do
    go mod edit -replace="$m=$m@$staging"
  done
  go get "k8s.io/kubernetes/cmd/kube-apiserver@v$KUBE_VERSION"
  local ldflags="-s -w" k
  for k in "gitVersion=v$KUBE_VERSION" gitMajor=1 "gitMinor=$minor" gitTreeState=clean \
           gitCommit=0000000000000000000000000000000000000000 buildDate=1970-01-01T00:00:00Z; do
    ldflags="$ldflags -X k8s.io/component-base/version.$k -X k8s.io/client-go/pkg/version.$k"
  done
  go build -trimpath -ldflags "$ldflags" -o "$out.tmp" k8s.io/kubernetes/cmd/kube-apiserver
  mv "$out.tmp" "$out"
}

build_etcd() {
  local out="$CACHE/etcd-$ETCD_VERSION/etcd"
  [ -x "$out" ] && return 0
  log "building etcd $ETCD_VERSION"
  # etcd's server module carries replace directives, so `go install` refuses it: build from a local module.
  local work="$CACHE/build/etcd-$ETCD_VERSION"
  mkdir -p "$work" && cd "$work"
  [ -f go.mod ] || go mod init local/etcdbin >/dev/null 2>&1
  go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
  go build -trimpath -ldflags "-s -w" -o "$out.tmp" go.etcd.io/etcd/server/v3
  mv "$out.tmp" "$out"
}

build_helm() {
  local out="$CACHE/helm-$HELM_VERSION/helm"
  [ -x "$out" ] && return 0
  log "building helm $HELM_VERSION"
  local minor
  minor=$(echo "$KUBE_VERSION" | cut -d. -f2)
  # Without these, a `go install`ed helm reports a bogus version and renders against Kubernetes 1.20.
  GOBIN="$CACHE/helm-$HELM_VERSION" go install -trimpath -ldflags "-s -w \
    -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION \
    -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$minor \
    -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$minor" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
}

install_prometheus() {
  command -v prometheus >/dev/null 2>&1 && return 0
  log "installing Prometheus (Debian package)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends prometheus openssl >/dev/null
  # The package starts a system-wide Prometheus on :9090; the sandbox runs its own.
  (systemctl stop prometheus || service prometheus stop || pkill -x prometheus) >/dev/null 2>&1 || true
}

install_prometheus
build_etcd
build_helm
build_kube_apiserver
ln -sf "$CACHE/kube-$KUBE_VERSION/kube-apiserver" "$BIN/kube-apiserver"
ln -sf "$CACHE/etcd-$ETCD_VERSION/etcd" "$BIN/etcd"
ln -sf "$CACHE/helm-$HELM_VERSION/helm" "$BIN/helm"
ln -sf "$(command -v prometheus)" "$BIN/prometheus"
log "tools ready in $BIN"
