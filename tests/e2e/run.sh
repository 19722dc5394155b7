#!/usr/bin/env bash
# End-to-end check on a kind cluster, for people who have Docker (CI does not run it).
#
#   tests/e2e/run.sh            create the cluster, build + load the images, install the chart,
#                               apply examples/mahjong-injection.yaml, wait for ServerSelected
#
# Environment:
#   CLUSTER=stratos        kind cluster name (kind-config.yaml names it "stratos")
#   KEEP_CLUSTER=1         keep the cluster afterwards (default: delete it on success)
#   REUSE_CLUSTER=1        use an existing cluster of that name instead of failing
#   SKIP_BUILD=1           do not build the images (they must already exist locally)
#   SKIP_SERVING=1         do not build/load the serving image (vLLM, ~10 GB); ServerSelected
#                          does not need it
#   TAG=dev                image tag
#   NAMESPACE=stratos-system  operator namespace (labelled restricted Pod Security)
#   TIMEOUT=300s           how long to wait for ServerSelected
#
# Needs: docker, kind (>= 0.29, for the pinned node image in the config), kubectl, helm (3.8+ or 4).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo"

CLUSTER="${CLUSTER:-stratos}"
TAG="${TAG:-dev}"
NAMESPACE="${NAMESPACE:-stratos-system}"
TIMEOUT="${TIMEOUT:-300s}"
EXAMPLE="${EXAMPLE:-examples/mahjong-injection.yaml}"
context="kind-$CLUSTER"

log() { printf '\n==> %s\n' "$*" >&2; }
die() { printf 'e2e: error: %s\n' "$*" >&2; exit 1; }

for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null || die "$tool is not on PATH"
done
docker info >/dev/null 2>&1 || die "the Docker daemon is not reachable"
[[ -f "$EXAMPLE" ]] || die "$EXAMPLE is missing"

kc() { kubectl --context "$context" "$@"; }

dump() {
  log "diagnostics"
  kc get nodes -L nvidia.com/gpu.product,stratos.io/hourly-cost,stratos.io/latency-ms || true
  kc -n "$NAMESPACE" get pods -o wide || true
  kc -n "$NAMESPACE" logs deployment/stratos --tail=200 || true
  kc get distillationjobs -A -o yaml || true
  kc get events -A --sort-by=.lastTimestamp | tail -n 40 || true
}

# 1. The cluster.
if kind get clusters | grep -qx "$CLUSTER"; then
  [[ "${REUSE_CLUSTER:-0}" == 1 ]] || die "kind cluster $CLUSTER exists (REUSE_CLUSTER=1 to use it)"
  log "reusing kind cluster $CLUSTER"
else
  log "creating kind cluster $CLUSTER"
  kind create cluster --name "$CLUSTER" --config kind-config.yaml --wait 120s
fi
cleanup() {
  local rc=$?
  if ((rc != 0)); then dump; fi
  if [[ "${KEEP_CLUSTER:-0}" != 1 && $rc -eq 0 ]]; then
    log "deleting kind cluster $CLUSTER (KEEP_CLUSTER=1 keeps it)"
    kind delete cluster --name "$CLUSTER"
  fi
  exit "$rc"
}
trap cleanup EXIT

# 2. The images, built from the repository root and loaded into the kind nodes.
images=(operator worker)
[[ "${SKIP_SERVING:-0}" == 1 ]] || images+=(serving)
for image in "${images[@]}"; do
  if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    log "building stratos-$image:$TAG"
    docker build -f "images/$image/Dockerfile" -t "stratos-$image:$TAG" .
  fi
  log "loading stratos-$image:$TAG into $CLUSTER"
  kind load docker-image --name "$CLUSTER" "stratos-$image:$TAG"
done

# 3. Fake GPUs: what the NVIDIA device plugin would advertise, nvidia.com/gpu = gpu.count.
#    Extended resources live in the node status, so patch the status subresource.
log "advertising nvidia.com/gpu on the worker nodes"
for node in $(kc get nodes -l nvidia.com/gpu.present=true -o name); do
  count="$(kc get "$node" -o jsonpath='{.metadata.labels.nvidia\.com/gpu\.count}')"
  kc patch "$node" --subresource=status --type=json -p "[
    {\"op\": \"add\", \"path\": \"/status/capacity/nvidia.com~1gpu\", \"value\": \"$count\"},
    {\"op\": \"add\", \"path\": \"/status/allocatable/nvidia.com~1gpu\", \"value\": \"$count\"}]"
done
kc get nodes -o custom-columns='NODE:.metadata.name,GPU:.metadata.labels.nvidia\.com/gpu\.product,COUNT:.status.capacity.nvidia\.com/gpu,COST:.metadata.labels.stratos\.io/hourly-cost,LATENCY:.metadata.labels.stratos\.io/latency-ms'

# 4. The chart, in a namespace that enforces the restricted Pod Security Standard.
log "installing the chart into $NAMESPACE"
kc create namespace "$NAMESPACE" --dry-run=client -o yaml | kc apply -f -
kc label namespace "$NAMESPACE" --overwrite \
  pod-security.kubernetes.io/enforce=restricted pod-security.kubernetes.io/warn=restricted
serving_repo=stratos-serving
[[ "${SKIP_SERVING:-0}" == 1 ]] && serving_repo=stratos-serving-not-loaded
helm --kube-context "$context" upgrade --install stratos charts/stratos \
  --namespace "$NAMESPACE" \
  --set image.repository=stratos-operator --set image.tag="$TAG" \
  --set workerImage.repository=stratos-worker --set workerImage.tag="$TAG" \
  --set servingImage.repository="$serving_repo" --set servingImage.tag="$TAG" \
  --set logLevel=debug \
  --wait --timeout 5m
kc -n "$NAMESPACE" rollout status deployment/stratos --timeout=180s

# 5. A DistillationJob, and the first decision in its status.
log "applying $EXAMPLE"
kc apply -f "$EXAMPLE"
read -r job_ns job_name < <(kc get -f "$EXAMPLE" --no-headers \
  -o custom-columns='KIND:.kind,NAMESPACE:.metadata.namespace,NAME:.metadata.name' |
  awk '$1 == "DistillationJob" {print $2, $3; exit}') || true
[[ -n "${job_name:-}" ]] || die "$EXAMPLE holds no DistillationJob"
job="distillationjob.stratos.io/$job_name"
ns_args=(-n "$job_ns")
log "waiting for $job to reach ServerSelected"
kc "${ns_args[@]}" wait "$job" --for=condition=ServerSelected --timeout="$TIMEOUT"
kc "${ns_args[@]}" get "$job" -o wide
kc "${ns_args[@]}" get "$job" -o jsonpath='{.status.server}' | python3 -m json.tool
log "e2e passed: $job selected node $(kc "${ns_args[@]}" get "$job" -o jsonpath='{.status.server.node}')"
