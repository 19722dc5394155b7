"""What the API server does with edits and inputs the operator cannot act on (no operator runs here).

- Once a job has started (``status.server`` or ``status.teacher`` written), the spec fields its
  decisions read are immutable: the edit is refused with a message naming the field, instead of being
  accepted, reconciled (observedGeneration advanced) and ignored. Live fields stay editable.
- GPU quantities the serving engine cannot use are refused at admission (CEL quantity library).
- A stage Job whose Complete condition arrives before its pod's Succeeded status (separate watches)
  is resolved by reading the pod from the API server, not declared gone.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from stratos.api.spec import DistillationJobSpec
from stratos.contracts.runs import StageRun
from stratos.controller.executor import KubeExecutor
from stratos.kube.config import OperatorConfig
from stratos.kube.naming import LABEL_JOB, child_name
from support.controlplane import ControlPlane, rest
from support.djs import DJ_PATH, get_dj

TEACHER = {"name": "t1", "endpoint": {"baseURL": "http://teacher.example:8000/v1", "model": "m"}}
STUDENT = {"name": "s1", "model": {"uri": "/models/s1", "parameters": 1e8}}


def manifest(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "stratos.io/v1alpha1",
        "kind": "DistillationJob",
        "metadata": {"name": name},
        "spec": {"teachers": [TEACHER], "students": [STUDENT], **spec},
    }


def create(api: Any, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
    path = f"/apis/stratos.io/v1alpha1/namespaces/{namespace}/distillationjobs"
    return dict(rest(api, "POST", path, body=body))


def patch(api: Any, namespace: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return dict(rest(api, "PATCH", DJ_PATH.format(ns=namespace, name=name), body={"spec": spec}))


def write_status(api: Any, namespace: str, name: str, status: dict[str, Any]) -> None:
    rest(api, "PATCH", DJ_PATH.format(ns=namespace, name=name) + "/status", body={"status": status})


def refused(call: Any) -> str:
    with pytest.raises(ApiException) as info:
        call()
    assert info.value.status == 422, info.value.body
    return str(json.loads(info.value.body)["message"])


SERVER = {"node": "gpu-1", "gpu": {"model": "L4", "count": 1, "memoryGib": 24.0}, "hourlyCost": 0.5}

FROZEN_EDITS = [
    ("spec.teachers", {"teachers": [{**TEACHER, "name": "renamed"}]}),
    ("spec.students", {"students": [STUDENT, {**STUDENT, "name": "s2"}]}),
    ("spec.task", {"task": {"sampleSize": 7}}),
    ("spec.servers", {"servers": {"costWindow": 0.5}}),
    ("spec.distillation", {"distillation": {"epochs": 3}}),
    ("spec.requirements", {"requirements": {"minAccuracy": 0.9}}),
    ("spec.storage", {"storage": {"pvc": {"claimName": "other"}}}),
]


def test_fields_a_decision_read_are_immutable_once_the_job_started_and_live_ones_are_not(
    control_plane: ControlPlane, crd_installed: Any, namespace: str, api: Any
) -> None:
    create(api, namespace, manifest("edits"))
    # Not started: anything can still be fixed (e.g. while no node is feasible).
    assert patch(api, namespace, "edits", {"servers": {"costWindow": 0.3}})["metadata"]["generation"] == 2

    write_status(api, namespace, "edits", {"stage": "EvaluateTeachers", "server": SERVER})
    for field, edit in FROZEN_EDITS:
        message = refused(lambda edit=edit: patch(api, namespace, "edits", edit))
        assert f"{field} cannot change once the pipeline has started" in message, message
    assert get_dj(api, namespace, "edits")["metadata"]["generation"] == 2  # nothing was accepted

    live = {"suspend": True, "serving": {"replicas": 2}, "requirements": {"budget": 12.5}}
    assert patch(api, namespace, "edits", live)["metadata"]["generation"] == 3
    # The operator's own status writes still go through.
    write_status(api, namespace, "edits", {"phase": "EvaluatingTeachers"})


def test_the_engine_cannot_move_to_transformers_after_training_without_merged_weights(
    control_plane: ControlPlane, crd_installed: Any, namespace: str, api: Any
) -> None:
    create(api, namespace, manifest("engine"))
    write_status(
        api,
        namespace,
        "engine",
        {"server": SERVER, "training": {"student": "s1", "adapterUri": "/var/lib/stratos/a/adapter"}},
    )
    message = refused(lambda: patch(api, namespace, "engine", {"serving": {"engine": "transformers"}}))
    assert "spec.serving.engine cannot change to transformers" in message

    create(api, namespace, manifest("merged", serving={"engine": "transformers"}))
    merged = {"student": "s1", "adapterUri": "/a/adapter", "mergedUri": "/a/merged"}
    write_status(api, namespace, "merged", {"server": SERVER, "training": merged})
    patch(api, namespace, "merged", {"serving": {"engine": "vllm"}})  # both ways work with merged weights
    patch(api, namespace, "merged", {"serving": {"engine": "transformers"}})


@pytest.mark.parametrize(
    ("engine", "gpus"), [("vllm", "0"), ("vllm", "500m"), ("vllm", 0), ("transformers", "1500m")]
)
def test_gpu_quantities_no_engine_can_use_are_refused_at_admission(
    control_plane: ControlPlane, crd_installed: Any, namespace: str, api: Any, engine: str, gpus: Any
) -> None:
    body = manifest("gpus", serving={"engine": engine, "resources": {"limits": {"nvidia.com/gpu": gpus}}})
    message = refused(lambda: create(api, namespace, body))
    assert "whole number of GPUs" in message, message
    ok = copy.deepcopy(body)
    ok["spec"]["serving"]["resources"]["limits"]["nvidia.com/gpu"] = "2000m"  # = 2, as Kubernetes reads it
    create(api, namespace, ok)


def test_a_complete_job_seen_before_its_pod_succeeded_reads_the_pod_instead_of_failing(
    control_plane: ControlPlane, crd_installed: Any, namespace: str, api: Any
) -> None:
    """The indexes say: Job Complete, pod still Running (the pod watch lags). The API server has the
    pod Succeeded with its result: that result is what the stage gets."""
    dj = create(api, namespace, manifest("race"))
    uid = dj["metadata"]["uid"]
    name = child_name("race", uid, "teacher-eval", "t1")
    pod = {
        "metadata": {"name": f"{name}-x1", "labels": {"job-name": name, LABEL_JOB: "race"}},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 1000,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "stage",
                    "image": "stage:1",
                    "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
                }
            ],
        },
    }
    rest(api, "POST", f"/api/v1/namespaces/{namespace}/pods", body=pod)
    result = {"ok": True, "accuracy": 0.5, "samples": 2, "correct": 1}
    terminated = {"exitCode": 0, "reason": "Completed", "message": json.dumps(result)}
    status = {
        "phase": "Succeeded",
        "containerStatuses": [
            {
                "name": "stage",
                "image": "stage:1",
                "imageID": "",
                "ready": False,
                "restartCount": 0,
                "state": {"terminated": terminated},
            }
        ],
    }
    rest(
        api,
        "PATCH",
        f"/api/v1/namespaces/{namespace}/pods/{pod['metadata']['name']}/status",
        body={"status": status},
    )

    complete = {
        "name": name,
        "conditions": [{"type": "Complete", "status": "True"}],
        "succeeded": 1,
        "active": 0,
    }
    stale_pod = {
        "name": pod["metadata"]["name"],
        "phase": "Running",
        "conditions": [],
        "containerStatuses": [],
    }
    # The indexes are keyed by the owner's uid, the stage and the candidate (from the children's labels).
    key = (uid, "teacher-eval", "t1")
    executor = KubeExecutor(dj, OperatorConfig(), api, {key: [complete]}, {key: [stale_pod]})
    spec = DistillationJobSpec.model_validate(dj["spec"])
    state = executor.ensure(StageRun("teacher-eval", "p", {}, candidate="t1"), spec)
    assert state.state == "Succeeded" and state.result == result, state

    other = child_name("race", uid, "teacher-eval", "t2")  # a Job whose pod really is gone
    gone_key = (uid, "teacher-eval", "t2")
    gone = KubeExecutor(dj, OperatorConfig(), api, {gone_key: [{**complete, "name": other}]}, {})
    lost = gone.ensure(StageRun("teacher-eval", "p", {}, candidate="t2"), spec)
    assert lost.state == "Failed" and "gone" in lost.message, lost
