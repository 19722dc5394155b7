"""The stage machine's SelectServer stage, driven as the operator drives it, without an API server."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

from stratos.api.status import DistillationJobStatus
from stratos.controller.machine import reconcile
from stratos.controller.status_patch import status_patch

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def node(
    name: str, product: str, cost: float, latency: float, *, count: int = 1, **spec: Any
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "labels": {"nvidia.com/gpu.product": product, "nvidia.com/gpu.count": str(count)},
            "annotations": {"stratos.io/hourly-cost": str(cost), "stratos.io/latency-ms": str(latency)},
        },
        "spec": spec,
        "status": {
            "conditions": [{"type": "Ready", "status": "True"}],
            "capacity": {"nvidia.com/gpu": str(count)},
            "allocatable": {"nvidia.com/gpu": str(count)},
        },
    }


def job(**spec_overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "task": {"builtin": "mahjong", "sampleSize": 10},
        "requirements": {"minAccuracy": 0.15},
        "servers": {"costWindow": 0.2},
        "teachers": [{"name": "t1", "endpoint": {"baseURL": "http://teacher:8000/v1", "model": "m"}}],
        "students": [{"name": "tiny", "model": {"uri": "file:///models/tiny", "parameters": 1.0e8}}],
    }
    spec.update(spec_overrides)
    return {
        "apiVersion": "stratos.io/v1alpha1",
        "kind": "DistillationJob",
        "metadata": {"name": "dj1", "namespace": "ns", "uid": "u-1", "generation": 1},
        "spec": spec,
    }


# Hand-computed: gamma 0.2, costs 0.35/1.20/0.22 -> K = ceil((1.20 - 0.22) / 0.2) = ceil(4.9) = 5.
#   cost norm   a: 0.13/0.98 = 0.133 -> cell 0;  b: 1.0 -> cell 4;  c: 0 -> cell 0
#   latency     a: 3/43 = 0.070 -> 0;            b: 0 -> 0;         c: 1.0 -> 4
#   hardware (TFLOPS, maximised) a 165.2 best -> 0; b 148: 17.2/94.2 = 0.18 -> 0; c 71 worst -> 4
# Cells a (0,0,0), b (4,0,0), c (0,4,4): a's cell dominates both, so a is chosen.
NODES = [
    node("a-4090", "NVIDIA-GeForce-RTX-4090", 0.35, 20),
    node("b-h20", "NVIDIA-H20", 1.20, 17),
    node("c-3090", "NVIDIA-GeForce-RTX-3090", 0.22, 60),
]


def conditions(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status["conditions"]}


def test_selects_the_node_in_the_dominating_cell_and_records_why() -> None:
    out = reconcile(job(), nodes=NODES, executor=None, now=NOW)
    DistillationJobStatus.model_validate(out.status)  # every field is one the CRD's schema keeps
    server = out.status["server"]
    assert server["node"] == "a-4090"
    assert server["gpu"] == {"model": "RTX 4090", "count": 1, "memoryGib": 24.0}
    assert server["gridSize"] == 5
    assert server["cell"] == [0, 0, 0]
    assert server["paretoCells"] == [[0, 0, 0]]
    assert {r["node"] for r in server["runnersUp"]} == {"b-h20", "c-3090"}
    assert all(r["reason"] for r in server["runnersUp"])
    assert server["candidates"] == 3 and server["feasible"] == 3
    cond = conditions(out.status)["ServerSelected"]
    assert (cond["status"], cond["reason"], cond["observedGeneration"]) == ("True", "NodeSelected", 1)
    assert "a-4090" in cond["message"]
    assert out.status["observedGeneration"] == 1
    assert out.status["stage"] == "EvaluateTeachers"
    assert [(e.type, e.reason) for e in out.events] == [("Normal", "NodeSelected")]


def test_reconciling_the_written_status_again_changes_nothing() -> None:
    body = job()
    first = reconcile(body, nodes=NODES, executor=None, now=NOW)
    body["status"] = copy.deepcopy(first.status)
    second = reconcile(body, nodes=NODES, executor=None, now=NOW)
    assert status_patch(body["status"], second.status) == {}
    assert second.events == []


def test_a_recorded_decision_survives_node_changes_and_restarts() -> None:
    body = job()
    body["status"] = reconcile(body, nodes=NODES, executor=None, now=NOW).status
    cheaper = [*NODES, node("z-h20-cheap", "NVIDIA-H20", 0.01, 1)]
    again = reconcile(body, nodes=cheaper, executor=None, now=NOW)
    assert again.status["server"]["node"] == "a-4090"


def test_no_feasible_node_counts_rejections_and_retries_when_nodes_change() -> None:
    body = job(requirements={"minAccuracy": 0.15, "maxHourlyCost": 0.1})
    cordoned = node("d-cordoned", "NVIDIA-L20", 0.05, 10, unschedulable=True)
    out = reconcile(body, nodes=[*NODES, cordoned], executor=None, now=NOW)
    cond = conditions(out.status)["ServerSelected"]
    assert (cond["status"], cond["reason"]) == ("False", "NoFeasibleNode")
    assert "3" in cond["message"] and "1" in cond["message"]
    assert out.status["phase"] == "SelectingServer"
    assert "server" not in out.status
    assert [(e.type, e.reason) for e in out.events] == [("Warning", "NoFeasibleNode")]

    body["status"] = out.status
    cheap = node("e-l20", "NVIDIA-L20", 0.08, 10)
    later = reconcile(body, nodes=[*NODES, cordoned, cheap], executor=None, now=NOW)
    assert later.status["server"]["node"] == "e-l20"
    assert conditions(later.status)["ServerSelected"]["status"] == "True"


def test_invalid_spec_fails_with_a_message_naming_the_field() -> None:
    body = job(requirements={"minAccuracy": 1.5})
    out = reconcile(body, nodes=NODES, executor=None, now=NOW)
    cond = conditions(out.status)["Failed"]
    assert (cond["status"], cond["reason"]) == ("True", "InvalidSpec")
    assert "spec.requirements.minAccuracy" in cond["message"]
    assert out.status["phase"] == "Failed"
    assert conditions(out.status)["Ready"]["status"] == "False"
    body["status"] = out.status
    assert reconcile(body, nodes=NODES, executor=None, now=NOW).events == []  # no event storm

    fixed = job()
    fixed["metadata"]["generation"] = 2
    fixed["status"] = out.status
    recovered = reconcile(fixed, nodes=NODES, executor=None, now=NOW)
    assert recovered.status["server"]["node"] == "a-4090"
    assert "Failed" not in conditions(recovered.status)


def test_suspended_job_does_not_start() -> None:
    out = reconcile(job(suspend=True), nodes=NODES, executor=None, now=NOW)
    assert out.status["phase"] == "Suspended"
    assert "server" not in out.status
    assert conditions(out.status)["Suspended"]["status"] == "True"
