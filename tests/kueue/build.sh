#!/usr/bin/env bash
# Builds the Kueue controller (sigs.k8s.io/kueue, pinned in ./go.mod) for the Kueue integration
# tests and caches it next to its CRDs, taken from the same module source.
#
# The result is cached under
#   ${STRATOS_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/stratos}/kueue-<key>/{bin/kueue,crds/}
# where <key> hashes go.mod, go.sum, tools.go and this script. This directory lives outside
# tests/controlplane on purpose: the control plane's cache key hashes every go.mod below
# tests/controlplane, and pinning Kueue must not force a rebuild of Kubernetes.
#
# Usage:
#   build.sh              build if needed; progress on stderr
#   build.sh --print-dir  build if needed, then print only the cache directory on stdout
{
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
print_dir=0
case "${1:-}" in
  "") ;;
  --print-dir) print_dir=1 ;;
  -h | --help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "build.sh: unknown argument: $1 (try --help)" >&2; exit 2 ;;
esac

log() { echo "kueue/build.sh: $*" >&2; }
sha() { if command -v sha256sum >/dev/null; then sha256sum "$@"; else shasum -a 256 "$@"; fi; }

key="$(cd "$here" && sha go.mod go.sum tools.go build.sh | sha | cut -c1-16)-$(uname -sm | tr ' ' _)"
cache_root="${STRATOS_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/stratos}"
out="$cache_root/kueue-$key"

complete() { [[ -x "$out/bin/kueue" && -f "$out/crds/kueue.x-k8s.io_workloads.yaml" ]]; }
finish() {
  touch "$out" 2>/dev/null || true
  if ((print_dir)); then echo "$out"; else log "kueue ready in $out"; fi
  exit 0
}

complete && finish
command -v go >/dev/null || { log "error: the Go toolchain (go) is not on PATH"; exit 1; }
mkdir -p "$cache_root"
if command -v flock >/dev/null; then
  exec 9>"$cache_root/kueue-$key.lock"
  if ! flock -n 9; then
    log "another build of $key is running; waiting for it"
    flock 9
  fi
  complete && finish
fi

export CGO_ENABLED=0 GOTOOLCHAIN=local
export GOFLAGS="-mod=readonly -buildvcs=false"
work="$(mktemp -d "$cache_root/.kueue-$key.XXXXXX")"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/bin" "$work/crds"
cd "$here"
log "building sigs.k8s.io/kueue (key $key); a cold build takes several minutes on few cores"
go mod download sigs.k8s.io/kueue
src="$(go list -m -f '{{.Dir}}' sigs.k8s.io/kueue)"
go build -trimpath -ldflags "-s -w" -o "$work/bin/kueue" sigs.k8s.io/kueue/cmd/kueue
cp "$src"/config/components/crd/bases/*.yaml "$work/crds/"
chmod -R u+w "$work/crds"
rm -rf "$out"
mv "$work" "$out"
trap - EXIT
log "done"
find "$cache_root" -maxdepth 1 -type d -name 'kueue-*' ! -name "kueue-$key" -mtime +30 \
  -exec rm -rf {} + 2>/dev/null || true
finish
exit
}
