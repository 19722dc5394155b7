"""gather_candidates: which Nodes become server candidates, with which facts, and why the others do not."""

from __future__ import annotations

import copy
from collections import Counter
from typing import Any

import pytest

from stratos.catalog.gpus import GPUS
from stratos.decide import nodes as n
from stratos.decide.nodes import NodeFacts, gather_candidates, tolerates


def make_node(
    name: str = "gpu-1",
    *,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    product: str | None = "NVIDIA-L4",
    count: int | None = 1,
    memory_mib: int | None = None,
    ready: bool = True,
    unschedulable: bool | None = None,
    taints: list[dict[str, Any]] | None = None,
    allocatable: str | None = None,
    latency: str | None = "10",
) -> dict[str, Any]:
    """A Node in API JSON form, with GFD labels and a latency annotation unless told otherwise."""
    all_labels = {"kubernetes.io/hostname": name}
    if product is not None:
        all_labels[n.GFD_GPU_PRODUCT] = product
    if count is not None:
        all_labels[n.GFD_GPU_COUNT] = str(count)
    if memory_mib is not None:
        all_labels[n.GFD_GPU_MEMORY] = str(memory_mib)
    all_labels.update(labels or {})
    all_annotations = {} if latency is None else {n.ANN_LATENCY_MS: latency}
    all_annotations.update(annotations or {})
    node: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": all_labels, "annotations": all_annotations},
        "spec": {},
        "status": {
            "conditions": [
                {"type": "MemoryPressure", "status": "False"},
                {"type": "Ready", "status": "True" if ready else "False"},
            ],
        },
    }
    if unschedulable is not None:
        node["spec"]["unschedulable"] = unschedulable
    if taints is not None:
        node["spec"]["taints"] = taints
    if allocatable is not None:
        node["status"]["allocatable"] = {"cpu": "8", n.GPU_RESOURCE: allocatable}
        node["status"]["capacity"] = {"cpu": "8", n.GPU_RESOURCE: allocatable}
    return node


def gather(nodes: list[dict[str, Any]], **kwargs: Any) -> tuple[list[NodeFacts], Counter[str]]:
    kwargs.setdefault("node_selector", {})
    kwargs.setdefault("tolerations", [])
    kwargs.setdefault("region_latency_ms", {})
    return gather_candidates(nodes, **kwargs)


def only(nodes: list[dict[str, Any]], **kwargs: Any) -> NodeFacts:
    candidates, rejected = gather(nodes, **kwargs)
    assert not rejected, rejected
    assert len(candidates) == 1
    return candidates[0]


def rejected_for(node: dict[str, Any], **kwargs: Any) -> Counter[str]:
    candidates, rejected = gather([node], **kwargs)
    assert candidates == []
    return rejected


# --- the happy path -------------------------------------------------------------------------------


def test_gfd_node_facts() -> None:
    facts = only([make_node(product="NVIDIA-A100-SXM4-80GB", count=8, memory_mib=81920, latency="12.5")])
    assert facts.name == "gpu-1"
    assert facts.gpu is GPUS["A100 80GB"]
    assert facts.gpu_count == 8
    assert facts.gpu_memory_gib == 80.0  # 81920 MiB / 1024
    assert facts.hourly_cost == pytest.approx(8 * 1.60)  # catalogue default per GPU x count
    assert facts.latency_ms == 12.5
    assert facts.latency_known
    assert facts.region is None
    assert facts.hardware == pytest.approx(8 * 312.0)


def test_memory_defaults_to_catalogue() -> None:
    assert only([make_node(product="NVIDIA-L40S")]).gpu_memory_gib == 48.0


def test_count_from_allocatable_then_capacity() -> None:
    facts = only([make_node(count=None, allocatable="4")])
    assert facts.gpu_count == 4
    node = make_node(count=None)
    node["status"]["capacity"] = {n.GPU_RESOURCE: "2"}
    assert only([node]).gpu_count == 2


def test_candidates_keep_input_order() -> None:
    nodes = [make_node(f"n{i}") for i in (3, 1, 2)]
    candidates, _ = gather(nodes)
    assert [c.name for c in candidates] == ["n3", "n1", "n2"]


# --- stratos.io overrides ---------------------------------------------------------------------------


def test_stratos_labels_beat_gfd_labels() -> None:
    node = make_node(
        product="NVIDIA-L4",
        count=1,
        memory_mib=23034,
        labels={n.ANN_GPU_PRODUCT: "H100", n.ANN_GPU_COUNT: "2", n.ANN_GPU_MEMORY: "40960"},
    )
    facts = only([node])
    assert facts.gpu is GPUS["H100"]
    assert facts.gpu_count == 2
    assert facts.gpu_memory_gib == 40.0
    assert facts.hourly_cost == pytest.approx(2 * 2.50)


def test_stratos_labels_without_gfd() -> None:
    node = make_node(product=None, count=None, labels={n.ANN_GPU_PRODUCT: "rtx4090", n.ANN_GPU_COUNT: "1"})
    facts = only([node])
    assert facts.gpu is GPUS["RTX 4090"]
    assert facts.gpu_count == 1


def test_annotation_beats_label() -> None:
    node = make_node(
        labels={n.ANN_HOURLY_COST: "9.99", n.ANN_LATENCY_MS: "999", n.ANN_GPU_PRODUCT: "L4"},
        annotations={n.ANN_HOURLY_COST: "0.70", n.ANN_LATENCY_MS: "7", n.ANN_GPU_PRODUCT: "L40S"},
    )
    facts = only([node])
    assert facts.hourly_cost == 0.70
    assert facts.latency_ms == 7.0
    assert facts.gpu is GPUS["L40S"]


def test_cost_label_used_when_no_annotation() -> None:
    facts = only([make_node(labels={n.ANN_HOURLY_COST: "0.5"})])
    assert facts.hourly_cost == 0.5


def test_zero_cost_is_allowed() -> None:
    assert only([make_node(annotations={n.ANN_HOURLY_COST: "0"})]).hourly_cost == 0.0


# --- latency ----------------------------------------------------------------------------------------


def test_region_latency_table() -> None:
    node = make_node(labels={n.REGION_LABEL: "eu-west"}, latency=None)
    facts = only([node], region_latency_ms={"eu-west": 35.0, "us-east": 90.0})
    assert facts.latency_ms == 35.0
    assert facts.region == "eu-west"
    assert facts.latency_known


def test_latency_annotation_beats_region_table() -> None:
    node = make_node(labels={n.REGION_LABEL: "eu-west"}, latency="4")
    assert only([node], region_latency_ms={"eu-west": 35.0}).latency_ms == 4.0


def test_region_missing_from_table_is_rejected() -> None:
    node = make_node(labels={n.REGION_LABEL: "ap-south"}, latency=None)
    assert rejected_for(node, region_latency_ms={"eu-west": 35.0}) == {n.REASON_NO_LATENCY: 1}


def test_unknown_latency_rejected_when_other_nodes_have_one() -> None:
    candidates, rejected = gather([make_node("a", latency="5"), make_node("b", latency=None)])
    assert [c.name for c in candidates] == ["a"]
    assert rejected == {n.REASON_NO_LATENCY: 1}


def test_no_latency_anywhere_means_latency_is_not_an_objective() -> None:
    candidates, rejected = gather([make_node("a", latency=None), make_node("b", latency=None)])
    assert not rejected
    assert [(c.latency_ms, c.latency_known) for c in candidates] == [(0.0, False), (0.0, False)]


# --- rejections -------------------------------------------------------------------------------------


def test_cordoned() -> None:
    assert rejected_for(make_node(unschedulable=True)) == {n.REASON_CORDONED: 1}
    assert only([make_node(unschedulable=False)]).name == "gpu-1"


def test_not_ready() -> None:
    assert rejected_for(make_node(ready=False)) == {n.REASON_NOT_READY: 1}
    node = make_node()
    node["status"]["conditions"] = []
    assert rejected_for(node) == {n.REASON_NOT_READY: 1}
    node["status"]["conditions"] = [{"type": "Ready", "status": "Unknown"}]
    assert rejected_for(node) == {n.REASON_NOT_READY: 1}


GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}


def test_tainted_without_toleration() -> None:
    assert rejected_for(make_node(taints=[GPU_TAINT])) == {n.REASON_TAINTED: 1}
    evict = {"key": "maintenance", "effect": "NoExecute"}
    assert rejected_for(make_node(taints=[evict])) == {n.REASON_TAINTED: 1}


def test_prefer_no_schedule_taint_does_not_block() -> None:
    assert only([make_node(taints=[{"key": "spot", "effect": "PreferNoSchedule"}])]).name == "gpu-1"


@pytest.mark.parametrize(
    "toleration",
    [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "nvidia.com/gpu", "operator": "Exists"},  # empty effect matches all effects
        {"key": "nvidia.com/gpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"},
        {"key": "nvidia.com/gpu", "value": "present"},  # operator defaults to Equal
        {"operator": "Exists"},  # empty key with Exists tolerates everything
    ],
)
def test_tainted_with_toleration(toleration: dict[str, Any]) -> None:
    assert only([make_node(taints=[GPU_TAINT])], tolerations=[toleration]).name == "gpu-1"


@pytest.mark.parametrize(
    "toleration",
    [
        {"key": "nvidia.com/gpu", "operator": "Equal", "value": "absent"},
        {"key": "other", "operator": "Exists"},
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoExecute"},
        {"operator": "Exists", "effect": "NoExecute"},
    ],
)
def test_toleration_that_does_not_match(toleration: dict[str, Any]) -> None:
    assert rejected_for(make_node(taints=[GPU_TAINT]), tolerations=[toleration]) == {n.REASON_TAINTED: 1}


def test_every_blocking_taint_needs_a_toleration() -> None:
    taints = [GPU_TAINT, {"key": "dedicated", "value": "ml", "effect": "NoExecute"}]
    tol = [{"key": "nvidia.com/gpu", "operator": "Exists"}]
    assert rejected_for(make_node(taints=taints), tolerations=tol) == {n.REASON_TAINTED: 1}
    tol.append({"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoExecute"})
    assert only([make_node(taints=taints)], tolerations=tol).name == "gpu-1"


def test_toleration_as_model_object() -> None:
    class Tol:
        key = "nvidia.com/gpu"
        operator = "Exists"
        value = None
        effect = None

    assert tolerates(Tol(), GPU_TAINT)


def test_no_gpu() -> None:
    assert rejected_for(make_node(count=0)) == {n.REASON_NO_GPU: 1}
    assert rejected_for(make_node(count=None)) == {n.REASON_NO_GPU: 1}
    assert rejected_for(make_node(count=None, allocatable="0")) == {n.REASON_NO_GPU: 1}


def test_unknown_and_missing_model() -> None:
    assert rejected_for(make_node(product="NVIDIA-Tesla-T4")) == {n.REASON_UNKNOWN_GPU: 1}
    assert rejected_for(make_node(product=None)) == {n.REASON_NO_GPU_MODEL: 1}


@pytest.mark.parametrize(
    ("where", "key", "value", "reason"),
    [
        ("annotations", n.ANN_HOURLY_COST, "cheap", n.REASON_MALFORMED_COST),
        ("annotations", n.ANN_HOURLY_COST, "NaN", n.REASON_MALFORMED_COST),
        ("annotations", n.ANN_HOURLY_COST, "nan", n.REASON_MALFORMED_COST),
        ("annotations", n.ANN_HOURLY_COST, "inf", n.REASON_MALFORMED_COST),
        ("annotations", n.ANN_HOURLY_COST, "-1.5", n.REASON_MALFORMED_COST),
        ("labels", n.ANN_HOURLY_COST, "", n.REASON_MALFORMED_COST),
        ("annotations", n.ANN_LATENCY_MS, "fast", n.REASON_MALFORMED_LATENCY),
        ("annotations", n.ANN_LATENCY_MS, "-3", n.REASON_MALFORMED_LATENCY),
        ("annotations", n.ANN_LATENCY_MS, "Infinity", n.REASON_MALFORMED_LATENCY),
        ("labels", n.GFD_GPU_COUNT, "two", n.REASON_MALFORMED_GPU_COUNT),
        ("labels", n.GFD_GPU_COUNT, "1.5", n.REASON_MALFORMED_GPU_COUNT),
        ("labels", n.GFD_GPU_COUNT, "-1", n.REASON_MALFORMED_GPU_COUNT),
        ("annotations", n.ANN_GPU_COUNT, "nan", n.REASON_MALFORMED_GPU_COUNT),
        ("labels", n.GFD_GPU_MEMORY, "lots", n.REASON_MALFORMED_GPU_MEMORY),
        ("labels", n.GFD_GPU_MEMORY, "0", n.REASON_MALFORMED_GPU_MEMORY),
        ("annotations", n.ANN_GPU_MEMORY, "-1024", n.REASON_MALFORMED_GPU_MEMORY),
    ],
)
def test_malformed_values(where: str, key: str, value: str, reason: str) -> None:
    node = make_node()
    node["metadata"][where][key] = value
    assert rejected_for(node) == {reason: 1}


def test_malformed_region_latency_entry() -> None:
    node = make_node(labels={n.REGION_LABEL: "r"}, latency=None)
    assert rejected_for(node, region_latency_ms={"r": float("nan")}) == {n.REASON_MALFORMED_REGION_LATENCY: 1}


def test_malformed_objects_never_raise() -> None:
    bad: list[Any] = [
        None,
        "node",
        {},
        {"metadata": {"name": ""}},
        {"metadata": "x"},
        {"metadata": {"name": "a", "labels": ["x"]}},
        {"metadata": {"name": "b"}, "status": {"conditions": "Ready"}},
        {
            "metadata": {"name": "c"},
            "spec": {"taints": ["NoSchedule"]},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]},
        },
    ]
    candidates, rejected = gather(bad)
    assert candidates == []
    assert rejected == {n.REASON_MALFORMED_NODE: len(bad)}


def test_node_selector() -> None:
    nodes = [
        make_node("a", labels={"pool": "gpu", "zone": "1"}),
        make_node("b", labels={"pool": "gpu", "zone": "2"}),
        make_node("c", labels={"pool": "cpu"}),
        make_node("d"),
    ]
    candidates, rejected = gather(nodes, node_selector={"pool": "gpu"})
    assert [c.name for c in candidates] == ["a", "b"]
    assert rejected == {n.REASON_SELECTOR: 2}
    candidates, rejected = gather(nodes, node_selector={"pool": "gpu", "zone": "2"})
    assert [c.name for c in candidates] == ["b"]
    assert rejected == {n.REASON_SELECTOR: 3}


def test_reasons_are_counted_together() -> None:
    nodes = [
        make_node("ok"),
        make_node("cordoned", unschedulable=True),
        make_node("down", ready=False),
        make_node("down2", ready=False),
        make_node("cpu", count=0),
        make_node("t4", product="NVIDIA-Tesla-T4"),
    ]
    candidates, rejected = gather(nodes)
    assert [c.name for c in candidates] == ["ok"]
    assert rejected == {
        n.REASON_CORDONED: 1,
        n.REASON_NOT_READY: 2,
        n.REASON_NO_GPU: 1,
        n.REASON_UNKNOWN_GPU: 1,
    }


def test_first_failing_check_wins() -> None:
    # cordoned *and* NotReady *and* no GPU: counted once, under the first check in order
    assert rejected_for(make_node(unschedulable=True, ready=False, count=0)) == {n.REASON_CORDONED: 1}


def test_input_is_not_mutated() -> None:
    node = make_node(taints=[GPU_TAINT])
    before = copy.deepcopy(node)
    gather([node], tolerations=[{"operator": "Exists"}])
    assert node == before


def test_mig_node_uses_slice_figures() -> None:
    node = make_node(product="NVIDIA-A100-SXM4-40GB-MIG-1g.5gb", count=7, memory_mib=4864)
    facts = only([node])
    assert facts.gpu.name == "A100 40GB MIG 1g.5gb"
    assert facts.gpu_count == 7
    assert facts.gpu_memory_gib == pytest.approx(4.75)
    assert facts.hardware == pytest.approx(312.0)  # seven 1/7 slices make one A100's compute
