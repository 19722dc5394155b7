"""A small DistillationJob that runs every stage in seconds: tiny students, the programmatic teacher."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from stratos.training.tiny import TinySpec, build_tiny_model
from support.kubelet import FakeKubelet

CLAIM = "stratos-data"


def pipeline_job(name: str, pool: str, teacher_url: str, **overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "task": {"builtin": "mahjong", "sampleSize": 6, "trainSize": 24, "testSize": 6, "seed": 3},
        "requirements": {"minAccuracy": 0.0},
        "servers": {"nodeSelector": {"stratos.test/pool": pool}},
        "teachers": [
            {
                "name": "prog",
                "endpoint": {"baseURL": teacher_url, "model": "programmatic"},
                "costPerMillionTokens": 1,
            }
        ],
        "students": [
            {
                "name": "tiny-a",
                "model": {"uri": "/models/tiny-a", "parameters": 2e5, "layers": 2, "hiddenSize": 64},
            },
            {
                "name": "tiny-b",
                "model": {"uri": "/models/tiny-b", "parameters": 2e5, "layers": 2, "hiddenSize": 64},
            },
        ],
        "distillation": {
            "strategy": "injection",
            "targetSamples": 32,
            "sequenceLength": 512,
            "microBatchSize": 8,
            "lora": {"rank": 8, "alpha": 16},
        },
        "serving": {"enabled": False, "engine": "transformers"},
        "storage": {"pvc": {"claimName": CLAIM}},
    }
    spec.update(overrides)
    return {
        "apiVersion": "stratos.io/v1alpha1",
        "kind": "DistillationJob",
        "metadata": {"name": name},
        "spec": spec,
    }


def prepare(
    namespace: str,
    gpu_nodes: Callable[..., dict[str, Any]],
    fake_kubelet: FakeKubelet,
    bound_pvc: Callable[..., str],
    *,
    serve_node: bool = True,
) -> str:
    """One GPU node for the namespace's jobs (run by the test kubelet unless ``serve_node`` is False),
    the job's storage claim, and two tiny students on it. Returns the node's name."""
    node = f"{namespace}-gpu"
    gpu_nodes(
        node,
        labels={"stratos.test/pool": namespace, "nvidia.com/gpu.product": "NVIDIA-L4"},
        annotations={"stratos.io/hourly-cost": "0.5", "stratos.io/latency-ms": "10"},
    )
    if serve_node:
        fake_kubelet.add_node(node)
    bound_pvc(namespace, CLAIM)
    storage = fake_kubelet.claim_dir(namespace, CLAIM)
    for student in ("tiny-a", "tiny-b"):
        build_tiny_model(storage / "models" / student, TinySpec(seed=1))
    return node
