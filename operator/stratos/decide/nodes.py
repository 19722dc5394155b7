"""Node facts: turn Kubernetes Node objects into the (H, C, L) triples the server selector compares.

Pure: the controller lists Nodes (plain dicts in API JSON form, camelCase keys) and passes them in; nothing
here talks to Kubernetes. Every node that is not a usable candidate is counted under one stable,
human-readable reason (the module constants ``REASON_*``), so the status can say why nodes were left out.
Malformed input never raises: the node is rejected with a reason instead.

Where each fact comes from (for ``stratos.io/*`` keys an annotation beats a label of the same key, and an
explicit ``stratos.io/*`` value beats what GPU Feature Discovery (GFD) reported, because an administrator
who sets one means to override discovery, e.g. on clusters without GFD):

- GPU count: ``stratos.io/gpu-count``, else GFD label ``nvidia.com/gpu.count``, else
  ``status.allocatable["nvidia.com/gpu"]``, else ``status.capacity["nvidia.com/gpu"]``. Zero means "no GPU".
- GPU model: ``stratos.io/gpu-product``, else ``nvidia.com/gpu.product``, resolved by
  :func:`stratos.catalog.gpus.lookup_gpu`; an uncatalogued model is rejected (its figures are unknown).
- Per-GPU memory: ``stratos.io/gpu-memory``, else ``nvidia.com/gpu.memory`` (both MiB, as GFD reports it),
  else the catalogue figure. GiB = MiB / 1024.
- Hourly cost of the node (USD/h): ``stratos.io/hourly-cost``, else the catalogue's indicative per-GPU
  price times the GPU count.
- Latency to the users (ms): ``stratos.io/latency-ms``, else ``region_latency_ms`` keyed by the node's
  ``topology.kubernetes.io/region`` label.

Latency when nothing is known. A node whose latency cannot be determined is rejected
(``REASON_NO_LATENCY``) as soon as the user has expressed any latency information: a non-empty
``region_latency_ms`` table, or a ``stratos.io/latency-ms`` on any other candidate node. Guessing a
latency for one node among measured ones would rank it arbitrarily. But when there is no latency
information at all, the user evidently does not care about latency, and rejecting every node would make a
plain spec fail on any cluster not annotated for Stratos. Then every node gets ``latency_ms = 0.0`` and
``latency_known = False``: latency is constant, so it drops out of the Pareto grid (a constant objective
gives every node coordinate 0), and :func:`stratos.decide.servers.select_server` still rejects such nodes
if the spec sets ``maxLatencyMs``, since a cap cannot be checked against an unknown latency.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from stratos.catalog.gpus import GPUSpec, lookup_gpu

__all__ = [
    "ANN_GPU_COUNT",
    "ANN_GPU_MEMORY",
    "ANN_GPU_PRODUCT",
    "ANN_HOURLY_COST",
    "ANN_LATENCY_MS",
    "GFD_GPU_COUNT",
    "GFD_GPU_MEMORY",
    "GFD_GPU_PRODUCT",
    "GPU_RESOURCE",
    "REGION_LABEL",
    "NodeFacts",
    "gather_candidates",
    "tolerates",
]

ANN_HOURLY_COST = "stratos.io/hourly-cost"
ANN_LATENCY_MS = "stratos.io/latency-ms"
ANN_GPU_PRODUCT = "stratos.io/gpu-product"
ANN_GPU_COUNT = "stratos.io/gpu-count"
ANN_GPU_MEMORY = "stratos.io/gpu-memory"
GFD_GPU_PRODUCT = "nvidia.com/gpu.product"
GFD_GPU_COUNT = "nvidia.com/gpu.count"
GFD_GPU_MEMORY = "nvidia.com/gpu.memory"
GPU_RESOURCE = "nvidia.com/gpu"
REGION_LABEL = "topology.kubernetes.io/region"
LEGACY_REGION_LABEL = "failure-domain.beta.kubernetes.io/region"

REASON_MALFORMED_NODE = "malformed Node object"
REASON_SELECTOR = "does not match nodeSelector"
REASON_CORDONED = "cordoned (spec.unschedulable)"
REASON_NOT_READY = "not Ready"
REASON_TAINTED = "untolerated NoSchedule/NoExecute taint"
REASON_NO_GPU = "no GPU"
REASON_MALFORMED_GPU_COUNT = "malformed GPU count"
REASON_NO_GPU_MODEL = "no GPU product label"
REASON_UNKNOWN_GPU = "unknown GPU model"
REASON_MALFORMED_GPU_MEMORY = "malformed stratos.io/gpu-memory or nvidia.com/gpu.memory"
REASON_MALFORMED_COST = "malformed stratos.io/hourly-cost"
REASON_MALFORMED_LATENCY = "malformed stratos.io/latency-ms"
REASON_MALFORMED_REGION_LATENCY = "malformed regionLatencyMs entry"
REASON_NO_LATENCY = "no latency known"
REASON_GPU_COUNT_ABOVE_ALLOCATABLE = "GPU count label above allocatable nvidia.com/gpu"
#: No node has more GPUs than this; a larger count is a typo or a lie, not hardware.
MAX_GPUS_PER_NODE = 1024

_BLOCKING_EFFECTS = ("NoSchedule", "NoExecute")


@dataclass(frozen=True)
class NodeFacts:
    """One candidate node as the server selector sees it: hardware H, cost C, latency L."""

    name: str
    gpu: GPUSpec
    gpu_count: int
    gpu_memory_gib: float  # per GPU
    hourly_cost: float  # USD per hour for the whole node
    latency_ms: float
    region: str | None = None
    #: False when no latency information existed anywhere (latency_ms is then 0.0; see the module doc).
    latency_known: bool = True

    @property
    def hardware(self) -> float:
        """The hardware objective H (maximised): ``gpu_count * gpu.bf16_dense_tflops``, in TFLOPS.

        One scalar, because the PFG needs one coordinate per objective: aggregate dense BF16 tensor
        throughput is what bounds (LoRA) training time, the stage that dominates a distillation run. GPU
        memory is not traded off against it but enforced as a hard floor (``min_gpu_memory_gib``), and
        memory bandwidth enters later, through the students' decode-throughput estimate.
        """
        return self.gpu_count * self.gpu.bf16_dense_tflops


class _Reject(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _mapping(value: Any) -> Mapping[str, Any]:
    if type(value) is dict:  # the common case, without the slower ABC check
        return value
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _Reject(REASON_MALFORMED_NODE)
    return value


def _is_list(value: Any) -> bool:
    return type(value) is list or (isinstance(value, Sequence) and not isinstance(value, (str, bytes)))


def _field(obj: Any, name: str) -> Any:
    """A toleration field from a dict (API or snake_case form) or from a model object."""
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def _text(value: Any) -> str:
    """Enum-or-string field as plain text ('' for None)."""
    if value is None:
        return ""
    return str(getattr(value, "value", value))


def tolerates(toleration: Any, taint: Mapping[str, Any]) -> bool:
    """Kubernetes ``Toleration.ToleratesTaint``: does ``toleration`` tolerate ``taint``?

    An empty effect matches every effect; an empty key (with operator Exists) matches every key; operator
    Exists ignores the value, Equal (the default) compares it.
    """
    effect = _text(_field(toleration, "effect"))
    if effect and effect != _text(taint.get("effect")):
        return False
    key = _text(_field(toleration, "key"))
    if key and key != _text(taint.get("key")):
        return False
    operator = _text(_field(toleration, "operator")) or "Equal"
    if operator == "Exists":
        return True
    if operator == "Equal":
        return _text(_field(toleration, "value")) == _text(taint.get("value"))
    return False


def _finite(raw: Any, reason: str, *, positive: bool = False) -> float:
    """A finite, non-negative number parsed from a label/annotation string (or number), else _Reject."""
    if isinstance(raw, bool):
        raise _Reject(reason)
    try:
        value = float(str(raw).strip()) if not isinstance(raw, (int, float)) else float(raw)
    except (TypeError, ValueError):
        raise _Reject(reason) from None
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise _Reject(reason)
    return value


def _count(raw: Any) -> int:
    value = _finite(raw, REASON_MALFORMED_GPU_COUNT)
    if value != int(value):
        raise _Reject(REASON_MALFORMED_GPU_COUNT)
    return int(value)


class _Node:
    """Accessors over one Node dict; every lookup validates the shape it touches."""

    def __init__(self, node: Mapping[str, Any]) -> None:
        node = _mapping(node)
        self.metadata = _mapping(node.get("metadata"))
        self.spec = _mapping(node.get("spec"))
        self.status = _mapping(node.get("status"))
        self.labels = _mapping(self.metadata.get("labels"))
        self.annotations = _mapping(self.metadata.get("annotations"))
        name = self.metadata.get("name")
        if not isinstance(name, str) or not name:
            raise _Reject(REASON_MALFORMED_NODE)
        self.name = name

    def stratos(self, key: str) -> Any:
        """A ``stratos.io/*`` value: the annotation if present, else the label."""
        if key in self.annotations:
            return self.annotations[key]
        return self.labels.get(key)

    def explicit(self, stratos_key: str, gfd_key: str) -> Any:
        value = self.stratos(stratos_key)
        return self.labels.get(gfd_key) if value is None else value

    def ready(self) -> bool:
        conditions = self.status.get("conditions") or []
        if not _is_list(conditions):
            raise _Reject(REASON_MALFORMED_NODE)
        return any(
            isinstance(cond, Mapping) and cond.get("type") == "Ready" and cond.get("status") == "True"
            for cond in conditions
        )

    def blocking_taints(self) -> list[Mapping[str, Any]]:
        taints = self.spec.get("taints") or []
        if not _is_list(taints) or not all(isinstance(t, Mapping) for t in taints):
            raise _Reject(REASON_MALFORMED_NODE)
        return [t for t in taints if t.get("effect") in _BLOCKING_EFFECTS]

    def gpu_count(self) -> int:
        """The label's count, checked against what the device plugin says the node can allocate."""
        allocatable = None
        for block in ("allocatable", "capacity"):
            resources = _mapping(self.status.get(block))
            if GPU_RESOURCE in resources:
                allocatable = _count(resources[GPU_RESOURCE])
                break
        raw = self.explicit(ANN_GPU_COUNT, GFD_GPU_COUNT)
        count = allocatable or 0 if raw is None else _count(raw)
        if count > MAX_GPUS_PER_NODE:
            raise _Reject(REASON_MALFORMED_GPU_COUNT)
        if allocatable is not None and count > allocatable:
            raise _Reject(REASON_GPU_COUNT_ABOVE_ALLOCATABLE)
        return count

    def region(self) -> str | None:
        region = self.labels.get(REGION_LABEL, self.labels.get(LEGACY_REGION_LABEL))
        return region if isinstance(region, str) and region else None


def _facts(node: _Node, tolerations: Sequence[Any], region_latency_ms: Mapping[str, Any]) -> NodeFacts:
    """NodeFacts of one node whose latency is still to be settled (latency_ms is -1.0 when unknown)."""
    if node.spec.get("unschedulable") is True:
        raise _Reject(REASON_CORDONED)
    if not node.ready():
        raise _Reject(REASON_NOT_READY)
    for taint in node.blocking_taints():
        if not any(tolerates(t, taint) for t in tolerations):
            raise _Reject(REASON_TAINTED)
    count = node.gpu_count()
    if count == 0:
        raise _Reject(REASON_NO_GPU)
    product = node.explicit(ANN_GPU_PRODUCT, GFD_GPU_PRODUCT)
    if not isinstance(product, str) or not product.strip():
        raise _Reject(REASON_NO_GPU_MODEL)
    gpu = lookup_gpu(product)
    if gpu is None:
        raise _Reject(REASON_UNKNOWN_GPU)
    raw_memory = node.explicit(ANN_GPU_MEMORY, GFD_GPU_MEMORY)
    memory_gib = (
        gpu.memory_gib
        if raw_memory is None
        else _finite(raw_memory, REASON_MALFORMED_GPU_MEMORY, positive=True) / 1024.0
    )
    raw_cost = node.stratos(ANN_HOURLY_COST)
    cost = gpu.default_hourly_usd * count if raw_cost is None else _finite(raw_cost, REASON_MALFORMED_COST)
    region = node.region()
    raw_latency = node.stratos(ANN_LATENCY_MS)
    if raw_latency is not None:
        latency = _finite(raw_latency, REASON_MALFORMED_LATENCY)
    elif region is not None and region in region_latency_ms:
        latency = _finite(region_latency_ms[region], REASON_MALFORMED_REGION_LATENCY)
    else:
        latency = -1.0
    return NodeFacts(node.name, gpu, count, memory_gib, cost, latency, region)


def gather_candidates(
    nodes: Iterable[Mapping[str, Any]],
    *,
    node_selector: Mapping[str, str] | None = None,
    tolerations: Sequence[Any] | None = None,
    region_latency_ms: Mapping[str, float] | None = None,
) -> tuple[list[NodeFacts], Counter[str]]:
    """The candidate nodes and, for every other node, the reason it was left out.

    A candidate matches every ``node_selector`` label exactly, is schedulable (``spec.unschedulable`` not
    true), Ready (``status.conditions`` Ready == "True"), has no NoSchedule/NoExecute taint that
    ``tolerations`` (API dicts or model objects with key/operator/value/effect) leave untolerated, carries at
    least one GPU of a catalogued model, and has well-formed numeric facts. Checks run in that order and a
    node is counted under the first one it fails. Candidates keep the input order. Never raises.
    """
    selector = dict(node_selector or {})
    tols = list(tolerations or [])
    table: Mapping[str, Any] = region_latency_ms if isinstance(region_latency_ms, Mapping) else {}
    rejected: Counter[str] = Counter()
    pending: list[NodeFacts] = []
    for raw in nodes:
        try:
            node = _Node(raw)
            if any(node.labels.get(k) != v for k, v in selector.items()):
                raise _Reject(REASON_SELECTOR)
            pending.append(_facts(node, tols, table))
        except _Reject as reject:
            rejected[reject.reason] += 1
        except Exception:  # never raise on odd input; count it instead
            rejected[REASON_MALFORMED_NODE] += 1

    any_latency = bool(table) or any(f.latency_ms >= 0 for f in pending)
    candidates: list[NodeFacts] = []
    for facts in pending:
        if facts.latency_ms >= 0:
            candidates.append(facts)
        elif any_latency:
            rejected[REASON_NO_LATENCY] += 1
        else:
            candidates.append(_unknown_latency(facts))
    return candidates, rejected


def _unknown_latency(facts: NodeFacts) -> NodeFacts:
    return NodeFacts(
        facts.name,
        facts.gpu,
        facts.gpu_count,
        facts.gpu_memory_gib,
        facts.hourly_cost,
        0.0,
        facts.region,
        latency_known=False,
    )
