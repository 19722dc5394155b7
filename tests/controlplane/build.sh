#!/usr/bin/env bash
# Builds the binaries of the test control plane from upstream Go modules and caches them.
#
# The integration tests run against a real Kubernetes control plane (etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler) plus kubectl and helm; the real-node tier (tests/realnode)
# adds a kubelet and kube-proxy from the same module and build (no second compile of the shared
# packages), and three small programs of ours in kubernetes/cmd: fake-gpu-plugin (a device plugin),
# svc-dns (Service DNS) and pause (the sandbox image's binary). Nothing prebuilt can be
# downloaded where the tests run, only Go modules, so the binaries are compiled here from the
# modules pinned in ./kubernetes, ./etcd and ./helm (go.mod + go.sum are committed).
#
# The result is cached under
#   ${STRATOS_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/stratos}/controlplane-<key>/bin
# where <key> hashes every go.mod, go.sum and *.go file below this directory and this script, so
# changing a pinned version yields a fresh directory and a warm run is a hash plus a `test -x` each.
#
# Usage:
#   build.sh                  build if needed; progress on stderr
#   build.sh --print-bin-dir  build if needed, then print only the bin directory on stdout
# The whole script is one { ... } block, which bash parses completely before running it: editing
# or checking out this file while a (long) build runs cannot change what the running build does.
{
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
print_bin_dir=0
case "${1:-}" in
  "") ;;
  --print-bin-dir) print_bin_dir=1 ;;
  -h | --help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "build.sh: unknown argument: $1 (try --help)" >&2; exit 2 ;;
esac

log() { echo "build.sh: $*" >&2; }

# Versions stamped into the binaries (what `kubectl version` and `helm version` report); they
# must match the versions pinned in kubernetes/go.mod and helm/go.mod.
KUBE_VERSION=v1.37.2
HELM_VERSION=v4.3.1
BINARIES=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl helm
  kubelet kube-proxy fake-gpu-plugin svc-dns pause)

sha() { if command -v sha256sum >/dev/null; then sha256sum "$@"; else shasum -a 256 "$@"; fi; }

compute_key() {
  (
    cd "$here"
    find . -type f \( -name go.mod -o -name go.sum -o -name '*.go' -o -name build.sh \) -print |
      LC_ALL=C sort | while IFS= read -r f; do sha "$f"; done
    uname -sm
  ) | sha | cut -c1-16
}

key="$(compute_key)"
cache_root="${STRATOS_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/stratos}"
out="$cache_root/controlplane-$key"
bin="$out/bin"

complete() {
  local b
  for b in "${BINARIES[@]}"; do [[ -x "$bin/$b" ]] || return 1; done
}

finish() {
  touch "$out" 2>/dev/null || true # last use, for pruning below
  if ((print_bin_dir)); then echo "$bin"; else log "binaries ready in $bin"; fi
  exit 0
}

complete && finish

command -v go >/dev/null || { log "error: the Go toolchain (go) is not on PATH"; exit 1; }
mkdir -p "$cache_root"

# Two test sessions may start at once: only one builds, the other waits and reuses the result.
if command -v flock >/dev/null; then
  exec 9>"$cache_root/controlplane-$key.lock"
  if ! flock -n 9; then
    log "another build of $key is running; waiting for it"
    flock 9
  fi
  complete && finish
fi

export CGO_ENABLED=0 GOTOOLCHAIN=local
export GOFLAGS="-mod=readonly -buildvcs=false"
work="$(mktemp -d "$cache_root/.controlplane-$key.XXXXXX")"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/bin"
start=$SECONDS

elapsed() { local s=$((SECONDS - start)); printf '%dm%02ds' $((s / 60)) $((s % 60)); }

# run_go LABEL MODULE_DIR go-args...: runs go in MODULE_DIR with its output in a log file,
# printing a heartbeat (packages compiled so far) every 30 s and the log tail on failure.
run_go() {
  local label=$1 dir=$2
  shift 2
  local logfile="$work/$label.log" pid rc=0
  log "[$(elapsed)] $label: go $*"
  (cd "$here/$dir" && go "$@") >"$logfile" 2>&1 &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    local i
    for ((i = 0; i < 30; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 1
    done
    kill -0 "$pid" 2>/dev/null && log "[$(elapsed)] $label: still running ($(wc -l <"$logfile") packages so far)"
  done
  wait "$pid" || rc=$?
  if ((rc != 0)); then
    log "error: $label failed (exit $rc): cd $here/$dir && go $*"
    tail -n 40 "$logfile" >&2
    exit "$rc"
  fi
}

build_flags=(-trimpath -v)
kube_ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  minor="${KUBE_VERSION#v1.}"
  kube_ldflags+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=${minor%%.*}"
  kube_ldflags+=" -X $pkg.gitTreeState=clean"
done

log "building the control plane (key $key) into $bin; a cold build takes a long while on few cores"
for dir in etcd helm kubernetes; do
  run_go "download-$dir" "$dir" mod download
done
run_go etcd etcd build "${build_flags[@]}" -ldflags "-s -w" -o "$work/bin/etcd" .
run_go helm helm build "${build_flags[@]}" \
  -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=$HELM_VERSION" \
  -o "$work/bin/" helm.sh/helm/v4/cmd/helm
run_go kubernetes kubernetes build "${build_flags[@]}" -ldflags "$kube_ldflags" -o "$work/bin/" \
  k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl \
  k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy \
  ./cmd/fake-gpu-plugin ./cmd/svc-dns ./cmd/pause

for b in "${BINARIES[@]}"; do
  [[ -x "$work/bin/$b" ]] || { log "error: $b was not produced"; exit 1; }
done
rm -f "$work"/*.log
# Publish atomically: readers see either no directory or a complete one.
rm -rf "$out"
mv "$work" "$out"
trap - EXIT
log "[$(elapsed)] done"
# Builds for other pins that nobody has used for 30 days only take space (~450 MB each).
find "$cache_root" -maxdepth 1 -type d -name 'controlplane-*' ! -name "controlplane-$key" -mtime +30 \
  -exec rm -rf {} + 2>/dev/null || true
finish
# shellcheck disable=SC2317 # finish exits; this only guards against reading past the block
exit
}
