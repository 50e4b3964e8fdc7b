#!/usr/bin/env bash
# Installs kube-apiserver and kube-controller-manager for the Kubernetes tests (tests/kube),
# compiled from the Kubernetes Go module through the Go module proxy, the way install-helm.sh
# builds helm. k8s.io/kubernetes is not meant to be required as a module: its go.mod replaces
# every k8s.io/<staging> module (k8s.io/api, k8s.io/apimachinery, ...) with ./staging/..., which
# a dependent module cannot see. So a small wrapper module in a temporary directory requires
# k8s.io/kubernetes at KUBE_VERSION and replaces each staging module its go.mod names with the
# same module at the matching v0.x release, then `go build`s the two commands.
# The ldflags stamp the version (what Kubernetes' own build stamps), so `--version` is right.
# Does nothing when both binaries of KUBE_VERSION are already in $(go env GOPATH)/bin.
# Measured on 2 busy cores with an empty Go cache (downloads included): see the README.
set -euo pipefail

KUBE_VERSION=${KUBE_VERSION:-v1.34.4}
STAGING_VERSION="v0.${KUBE_VERSION#v1.}"
COMMANDS=(kube-apiserver kube-controller-manager)

if ! command -v go >/dev/null 2>&1; then
  if [ -x /usr/local/go/bin/go ]; then
    PATH=/usr/local/go/bin:$PATH
  else
    echo "install-kube: no Go toolchain; install Go >= 1.24, then run this again" >&2
    exit 1
  fi
fi

GOBIN_DIR=$(go env GOBIN)
[ -n "$GOBIN_DIR" ] || GOBIN_DIR="$(go env GOPATH)/bin"

have_all() {
  local cmd
  for cmd in "${COMMANDS[@]}"; do
    [ -x "$GOBIN_DIR/$cmd" ] || return 1
    "$GOBIN_DIR/$cmd" --version 2>/dev/null | grep -q "Kubernetes ${KUBE_VERSION}\$" || return 1
  done
  return 0
}

if have_all; then
  echo "install-kube: found ${COMMANDS[*]} ${KUBE_VERSION} in $GOBIN_DIR"
  exit 0
fi

echo "install-kube: compiling ${COMMANDS[*]} ${KUBE_VERSION} (first time: about 8 min on 2 cores)"
started=$(date +%s)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
export GOFLAGS="${GOFLAGS:+$GOFLAGS }-mod=mod" CGO_ENABLED=0
go mod init galera-health.invalid/kube-build >/dev/null 2>&1
kube_mod=$(go mod download -json "k8s.io/kubernetes@${KUBE_VERSION}" \
  | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')
if [ ! -f "$kube_mod" ]; then
  echo "install-kube: could not download k8s.io/kubernetes@${KUBE_VERSION}'s go.mod" >&2
  exit 1
fi
{
  echo "require k8s.io/kubernetes ${KUBE_VERSION}"
  echo "replace ("
  # the staging modules: lines `k8s.io/x => ./staging/src/k8s.io/x` of its replace block
  sed -n 's|^[[:space:]]*\(k8s\.io/[^ ]*\) => \./staging/src/.*$|\t\1 => \1 '"${STAGING_VERSION}"'|p' "$kube_mod"
  echo ")"
} >>go.mod
cat >tools.go <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
)
GO
go mod tidy >/dev/null 2>&1 || go mod tidy
minor=${KUBE_VERSION#v1.}; minor=${minor%%.*}
LDFLAGS="-w -s"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  LDFLAGS+=" -X ${pkg}.gitVersion=${KUBE_VERSION} -X ${pkg}.gitMajor=1 -X ${pkg}.gitMinor=${minor}"
  LDFLAGS+=" -X ${pkg}.gitTreeState=clean"
done
mkdir -p "$GOBIN_DIR"
for cmd in "${COMMANDS[@]}"; do
  t0=$(date +%s)
  go build -trimpath -ldflags "$LDFLAGS" -o "$GOBIN_DIR/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd"
  mv "$GOBIN_DIR/$cmd.tmp" "$GOBIN_DIR/$cmd"
  echo "install-kube: $cmd built in $(( $(date +%s) - t0 )) s"
done
echo "install-kube: $("$GOBIN_DIR/kube-apiserver" --version) in $GOBIN_DIR ($(( $(date +%s) - started )) s)"
