"""The whole chain on the real control plane: the operator under the chart's identity runs every stage as
a Job, a test kubelet runs the stage pods' own commands as local processes, and the status the operator
writes records every decision.

Teacher: the built-in programmatic Mahjong teacher on localhost. Students: tiny random-initialised models
on the job's PersistentVolumeClaim. Serving is off here (tests/integration/test_serving.py serves).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from stratos.local.teacher import ProgrammaticTeacher
from stratos.training.tiny import TinySpec, build_tiny_model
from support.controlplane import ControlPlane, rest, wait_for
from support.kubelet import FakeKubelet
from support.operator import OperatorProcess

pytest_plugins = ["support.operator"]
pytestmark = pytest.mark.slow

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


def test_the_operator_runs_every_stage_and_records_every_decision(
    operator: OperatorProcess,
    control_plane: ControlPlane,
    namespace: str,
    gpu_nodes: Callable[..., dict[str, Any]],
    fake_kubelet: FakeKubelet,
    bound_pvc: Callable[..., str],
    api: Any,
) -> None:
    node = f"{namespace}-gpu"
    gpu_nodes(
        node,
        labels={"stratos.test/pool": namespace, "nvidia.com/gpu.product": "NVIDIA-L4"},
        annotations={"stratos.io/hourly-cost": "0.5", "stratos.io/latency-ms": "10"},
    )
    fake_kubelet.add_node(node)
    bound_pvc(namespace, CLAIM)
    storage = fake_kubelet.claim_dir(namespace, CLAIM)
    for student in ("tiny-a", "tiny-b"):
        build_tiny_model(storage / "models" / student, TinySpec(seed=1))

    with ProgrammaticTeacher(accuracy=0.2) as teacher:
        control_plane.kubectl(
            "apply",
            "-n",
            namespace,
            "-f",
            "-",
            input=yaml.safe_dump(pipeline_job("chain", namespace, teacher.base_url)),
        )

        def finished() -> dict[str, Any] | None:
            dj = json.loads(control_plane.kubectl("get", "dj", "chain", "-n", namespace, "-o", "json").stdout)
            phase = dj.get("status", {}).get("phase")
            return dj if phase in ("Succeeded", "Failed") else None

        dj = wait_for(finished, timeout=600, interval=2, what="the pipeline to finish")
    status = dj["status"]
    conditions = {c["type"]: c for c in status["conditions"]}
    assert status["phase"] == "Succeeded", (status.get("message"), fake_kubelet.errors, operator.log_tail())
    for ctype in (
        "ServerSelected",
        "TeacherSelected",
        "StudentSelected",
        "DataReady",
        "Trained",
        "Evaluated",
        "Ready",
    ):
        assert conditions[ctype]["status"] == "True", conditions[ctype]
    assert status["server"]["node"] == node
    assert status["teacher"]["selected"] == "prog"
    assert status["strategy"] == {
        "selected": "injection",
        "algorithm": "sft-lora",
        "reason": status["strategy"]["reason"],
    }
    assert status["student"]["selected"] in ("tiny-a", "tiny-b")
    data = status["data"]
    assert data["samples"] == 32 and data["real"] + data["synthetic"] == 32
    assert status["training"]["steps"] > 0 and status["training"]["adapterUri"].endswith("/adapter")
    assert 0.0 <= status["evaluation"]["accuracy"] <= 1.0 and status["evaluation"]["samples"] == 6

    # Every stage ran as an owned Job on the chosen node (CPU stages wherever the scheduler put them).
    jobs = rest(api, "GET", f"/apis/batch/v1/namespaces/{namespace}/jobs")["items"]
    stages = sorted(j["metadata"]["labels"]["stratos.io/stage"] for j in jobs)
    assert stages == ["evaluate", "student-probe", "student-probe", "synthesize", "teacher-eval", "train"]
    assert all(j["metadata"]["ownerReferences"][0]["uid"] == dj["metadata"]["uid"] for j in jobs)
    train = next(j for j in jobs if j["metadata"]["labels"]["stratos.io/stage"] == "train")
    assert train["spec"]["template"]["spec"]["nodeSelector"] == {"kubernetes.io/hostname": node}
    # The adapter the status names is really there, written by the train pod on the shared volume.
    adapter = storage / status["training"]["adapterUri"].removeprefix("/var/lib/stratos/")
    assert (adapter / "adapter_config.json").exists()
