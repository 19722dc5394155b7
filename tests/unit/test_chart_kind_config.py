"""kind-config.yaml: its fake GPU workers must be nodes the server selector understands.

tests/e2e/run.sh cannot run in CI (no Docker), so this checks offline what it relies on: the
labels each worker carries, read by the same node-facts code the operator runs, with the
nvidia.com/gpu capacity run.sh patches in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from stratos.decide.nodes import gather_candidates

REPO = Path(__file__).resolve().parents[2]
REQUIRED_LABELS = {
    "nvidia.com/gpu.product",
    "nvidia.com/gpu.count",
    "nvidia.com/gpu.memory",
    "stratos.io/hourly-cost",
    "stratos.io/latency-ms",
    "topology.kubernetes.io/region",
}


def kind_nodes() -> list[dict[str, Any]]:
    config = yaml.safe_load((REPO / "kind-config.yaml").read_text())
    assert config["apiVersion"] == "kind.x-k8s.io/v1alpha4" and config["kind"] == "Cluster"
    return list(config["nodes"])


def as_api_node(index: int, node: dict[str, Any]) -> dict[str, Any]:
    """The Node the kind worker becomes once run.sh has advertised its GPUs."""
    labels = dict(node.get("labels") or {})
    gpus = labels.get("nvidia.com/gpu.count", "0")
    return {
        "metadata": {"name": f"stratos-worker{index or ''}", "labels": labels},
        "spec": {},
        "status": {
            "conditions": [{"type": "Ready", "status": "True"}],
            "capacity": {"cpu": "8", "nvidia.com/gpu": gpus},
            "allocatable": {"cpu": "8", "nvidia.com/gpu": gpus},
        },
    }


def test_one_control_plane_and_three_gpu_workers() -> None:
    nodes = kind_nodes()
    assert [n["role"] for n in nodes] == ["control-plane", "worker", "worker", "worker"]
    workers = [n for n in nodes if n["role"] == "worker"]
    for worker in workers:
        labels = worker["labels"]
        assert set(labels) >= REQUIRED_LABELS, REQUIRED_LABELS - set(labels)
        # kind passes labels to the kubelet as strings; YAML numbers would not survive.
        assert all(isinstance(v, str) for v in labels.values()), labels
    for key in ("nvidia.com/gpu.product", "topology.kubernetes.io/region"):
        assert len({w["labels"][key] for w in workers}) == 3, f"workers share {key}"


def test_workers_are_candidates_for_the_server_selector() -> None:
    workers = [n for n in kind_nodes() if n["role"] == "worker"]
    api_nodes = [as_api_node(i, w) for i, w in enumerate(workers)]
    candidates, rejected = gather_candidates(api_nodes)
    assert not rejected, dict(rejected)
    by_name = {c.name: c for c in candidates}
    assert len(by_name) == 3
    for api_node in api_nodes:
        facts = by_name[api_node["metadata"]["name"]]
        labels = api_node["metadata"]["labels"]
        assert facts.gpu_count == int(labels["nvidia.com/gpu.count"])
        assert facts.hourly_cost == pytest.approx(float(labels["stratos.io/hourly-cost"]))
        assert facts.latency_ms == pytest.approx(float(labels["stratos.io/latency-ms"]))
        assert facts.gpu_memory_gib == pytest.approx(int(labels["nvidia.com/gpu.memory"]) / 1024)
    assert {c.gpu.name for c in candidates} == {"RTX 4090", "H20", "A100 80GB"}


def test_no_worker_dominates_the_others() -> None:
    """Each worker is best at one objective, so the Pareto front the e2e run shows has all three."""
    workers = [n for n in kind_nodes() if n["role"] == "worker"]
    candidates, _ = gather_candidates([as_api_node(i, w) for i, w in enumerate(workers)])

    def dominates(a: Any, b: Any) -> bool:
        no_worse = (
            a.hourly_cost <= b.hourly_cost and a.latency_ms <= b.latency_ms and a.hardware >= b.hardware
        )
        better = a.hourly_cost < b.hourly_cost or a.latency_ms < b.latency_ms or a.hardware > b.hardware
        return no_worse and better

    for a in candidates:
        for b in candidates:
            assert not dominates(a, b), f"{a.name} dominates {b.name}"


def test_one_minimum_kubernetes_version_across_chart_readme_and_kind() -> None:
    """Chart.yaml's kubeVersion, the README's requirement and the kind node image name one release."""
    chart = yaml.safe_load((REPO / "charts/stratos/Chart.yaml").read_text())
    minimum = chart["kubeVersion"].removeprefix(">=").removesuffix(".0-0")
    assert f"Kubernetes ≥ {minimum}" in (REPO / "README.md").read_text()
    assert f"Kubernetes >= {minimum}" in (REPO / "charts/stratos/README.md").read_text()
    for node in kind_nodes():
        image = node["image"]
        assert image.startswith(f"kindest/node:v{minimum}."), image
        digest = image.partition("@sha256:")[2]
        assert len(digest) == 64, f"{image} is not pinned by digest"
