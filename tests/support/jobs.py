"""Plain-dict DistillationJobs and Nodes for tests of the stage machine."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from stratos.api.spec import DistillationJobSpec
from stratos.contracts.runs import RunStatus, StageRun

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


class ScriptedExecutor:
    """Stands in for Jobs: records what was started and answers with scripted states."""

    storage_root = "/data"

    def __init__(self, states: Mapping[str, RunStatus]) -> None:
        self.states = dict(states)
        self.started: list[StageRun] = []

    cancelled = 0

    def cancel_runs(self) -> None:
        self.cancelled += 1

    def storage_error(self, spec: DistillationJobSpec) -> str | None:
        return None

    def ensure(self, run: StageRun, spec: DistillationJobSpec) -> RunStatus:
        self.started.append(run)
        return self.states.get(run.candidate or "", RunStatus("Pending", message="created"))


def ok(accuracy: float, samples: int = 100, tokens: int = 1000, cost: float = 0.01) -> RunStatus:
    result = {
        "ok": True,
        "accuracy": accuracy,
        "samples": samples,
        "correct": round(accuracy * samples),
        "promptTokens": tokens,
        "completionTokens": tokens,
        "costUSD": cost,
    }
    return RunStatus("Succeeded", result=result)
