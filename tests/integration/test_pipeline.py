"""The whole chain on the real control plane: the operator under the chart's identity runs every stage as
a Job, a test kubelet runs the stage pods' own commands as local processes, and the status the operator
writes records every decision.

Teacher: the built-in programmatic Mahjong teacher on localhost. Students: tiny random-initialised models
on the job's PersistentVolumeClaim. Serving starts off and is switched on once the student passed.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from openai import OpenAI

from stratos.local.teacher import ProgrammaticTeacher
from support.controlplane import ControlPlane, rest, wait_for
from support.kubelet import FakeKubelet
from support.operator import OperatorProcess
from support.pipeline import CLAIM, pipeline_job, prepare

pytest_plugins = ["support.operator"]
pytestmark = pytest.mark.slow


def pinned_to(pod: dict[str, Any]) -> str:
    """The node a pod spec requires by node affinity on metadata.name (how the operator pins)."""
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    (term,) = terms
    (field,) = term["matchFields"]
    assert (field["key"], field["operator"]) == ("metadata.name", "In")
    (node,) = field["values"]
    return str(node)


def test_the_operator_runs_every_stage_and_records_every_decision(
    operator: OperatorProcess,
    control_plane: ControlPlane,
    namespace: str,
    gpu_nodes: Callable[..., dict[str, Any]],
    fake_kubelet: FakeKubelet,
    bound_pvc: Callable[..., str],
    api: Any,
) -> None:
    node = prepare(namespace, gpu_nodes, fake_kubelet, bound_pvc)

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
    assert pinned_to(train["spec"]["template"]["spec"]) == node
    # The adapter the status names is really there, written by the train pod on the shared volume.
    storage = fake_kubelet.claim_dir(namespace, CLAIM)
    adapter = storage / status["training"]["adapterUri"].removeprefix("/var/lib/stratos/")
    assert (adapter / "adapter_config.json").exists()

    serve_then_clean_up(control_plane, api, namespace, dj, fake_kubelet, node)


def _healthy(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as response:
        return bool(response.status == 200)


def patch_serving(cp: ControlPlane, namespace: str, serving: dict[str, Any]) -> None:
    body = json.dumps({"spec": {"serving": serving}})
    cp.kubectl("patch", "dj", "chain", "-n", namespace, "--type", "merge", "-p", body)


def serve_then_clean_up(
    cp: ControlPlane, api: Any, namespace: str, dj: dict[str, Any], kubelet: FakeKubelet, node: str
) -> None:
    """Serving is switched on after training: the trained student is deployed without retraining,
    answers through the openai client, follows spec.serving, and everything goes with the job."""
    kubelet.extra_env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", HF_HUB_OFFLINE="1"
    )
    trained_steps = dj["status"]["training"]["steps"]
    patch_serving(cp, namespace, {"enabled": True})
    cp.kubectl("wait", "--for=condition=Ready", "dj/chain", "-n", namespace, "--timeout=300s")
    status = json.loads(cp.kubectl("get", "dj", "chain", "-n", namespace, "-o", "json").stdout)["status"]
    assert status["phase"] == "Serving" and status["training"]["steps"] == trained_steps
    endpoint = status["endpoint"]
    assert endpoint["url"] == f"http://chain-serve.{namespace}.svc:8000/v1" and endpoint["ready"] is True

    deployment = rest(api, "GET", f"/apis/apps/v1/namespaces/{namespace}/deployments/chain-serve")
    assert deployment["metadata"]["ownerReferences"][0]["uid"] == dj["metadata"]["uid"]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["containers"][0]["command"] == ["transformers", "serve"]
    assert pinned_to(pod) == node
    service = rest(api, "GET", f"/api/v1/namespaces/{namespace}/services/chain-serve")
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    stages = [
        j["metadata"]["labels"]["stratos.io/stage"]
        for j in rest(api, "GET", f"/apis/batch/v1/namespaces/{namespace}/jobs")["items"]
    ]
    assert stages.count("train") == 1  # deployed, not retrained

    # The pod the test kubelet runs is a real `transformers serve` of the merged student. (The test kubelet
    # marks pods Ready as they start, without probes: wait for the server itself.)
    wait_for(
        lambda: _healthy("http://127.0.0.1:8000/health"), timeout=120, what="transformers serve to listen"
    )
    client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="EMPTY", timeout=120)
    reply = client.chat.completions.create(
        model=endpoint["model"], messages=[{"role": "user", "content": "Hand: 🀇🀈🀉"}], max_tokens=8
    )
    assert reply.choices[0].message.content and reply.usage is not None and reply.usage.completion_tokens > 0

    patch_serving(cp, namespace, {"replicas": 2})
    wait_for(
        lambda: (
            rest(api, "GET", f"/apis/apps/v1/namespaces/{namespace}/deployments/chain-serve")["spec"][
                "replicas"
            ]
            == 2
        ),
        timeout=60,
        what="the Deployment to follow spec.serving.replicas",
    )
    patch_serving(cp, namespace, {"enabled": False})
    wait_for(
        lambda: (
            not rest(api, "GET", f"/apis/apps/v1/namespaces/{namespace}/deployments")["items"]
            and not rest(api, "GET", f"/api/v1/namespaces/{namespace}/services")["items"]
        ),
        timeout=60,
        what="serving to be removed",
    )
    status = json.loads(cp.kubectl("get", "dj", "chain", "-n", namespace, "-o", "json").stdout)["status"]
    assert status["phase"] == "Succeeded" and "endpoint" not in status

    # Deleting the job removes everything it created (the controller manager's garbage collector).
    cp.kubectl("delete", "dj", "chain", "-n", namespace, "--wait=true", "--timeout=60s")
    wait_for(
        lambda: (
            not any(
                rest(api, "GET", path)["items"]
                for path in (
                    f"/apis/batch/v1/namespaces/{namespace}/jobs",
                    f"/api/v1/namespaces/{namespace}/configmaps?labelSelector=stratos.io%2Fjob",
                )
            )
        ),
        timeout=90,
        what="the garbage collector to remove the job's children",
    )
