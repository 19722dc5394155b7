"""How Jobs and pods map to stage-run states, and what the stage Job manifests look like."""

from __future__ import annotations

from typing import Any

from stratos.api.spec import DistillationJobSpec
from stratos.contracts.runs import SecretEnv, StageRun
from stratos.kube.children import stage_configmap, stage_job
from stratos.kube.config import OperatorConfig
from stratos.kube.naming import child_name
from stratos.kube.views import run_state
from support.jobs import job


def pod(
    phase: str,
    *,
    terminated: dict[str, Any] | None = None,
    waiting: dict[str, Any] | None = None,
    conditions: list[dict[str, Any]] | None = None,
    name: str = "p1",
) -> dict[str, Any]:
    state = {"terminated": terminated} if terminated else {"waiting": waiting} if waiting else {}
    return {
        "name": name,
        "phase": phase,
        "conditions": conditions or [],
        "containerStatuses": [{"name": "stage", "state": state}],
        "creationTimestamp": "2026-11-22T12:00:00Z",
    }


COMPLETE = {"conditions": [{"type": "Complete", "status": "True"}]}
FAILED = {
    "conditions": [
        {
            "type": "Failed",
            "status": "True",
            "reason": "BackoffLimitExceeded",
            "message": "Job has reached the specified backoff limit",
        }
    ]
}


def test_a_completed_job_yields_the_pods_json_result() -> None:
    done = pod("Succeeded", terminated={"exitCode": 0, "message": '{"ok": true, "accuracy": 0.3}'})
    status = run_state(COMPLETE, [done])
    assert status.state == "Succeeded"
    assert status.result == {"ok": True, "accuracy": 0.3}


def test_a_completed_job_without_a_json_result_is_a_failure_not_a_crash() -> None:
    done = pod("Succeeded", terminated={"exitCode": 0, "message": "hello"})
    assert run_state(COMPLETE, [done]).state == "Failed"


def test_a_failed_job_carries_the_last_pods_reason_and_error() -> None:
    oom = pod("Failed", terminated={"exitCode": 137, "reason": "OOMKilled"})
    err = pod(
        "Failed", terminated={"exitCode": 1, "reason": "Error", "message": '{"ok": false, "error": "401"}'}
    )
    status = run_state(FAILED, [oom])
    assert status.state == "Failed"
    assert (
        "BackoffLimitExceeded" in status.message and "OOMKilled" in status.message and "137" in status.message
    )
    assert "401" in run_state(FAILED, [err]).message


def test_stuck_pods_say_why() -> None:
    pulling = pod("Pending", waiting={"reason": "ImagePullBackOff", "message": "not found"})
    assert "ImagePullBackOff" in run_state({"conditions": []}, [pulling]).message
    unschedulable = pod(
        "Pending",
        conditions=[
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
            }
        ],
    )
    status = run_state({"conditions": []}, [unschedulable])
    assert status.state == "Pending" and "Insufficient nvidia.com/gpu" in status.message
    assert run_state({"conditions": []}, [pod("Running")]).state == "Running"
    assert run_state({"conditions": []}, []).state == "Pending"


def test_stage_job_manifest_is_owned_pinned_restricted_and_secret_free() -> None:
    body = job(storage={"pvc": {"claimName": "data"}})
    spec = DistillationJobSpec.model_validate(body["spec"])
    run = StageRun(
        "train",
        "stratos.workloads.train",
        {"epochs": 1},
        candidate="llama-3b",
        node="gpu-1",
        gpus=2,
        secret_env=(SecretEnv("TEACHER_API_KEY", "openai", "api-key"),),
    )
    manifest = stage_job(body, spec, run, OperatorConfig())
    name = manifest["metadata"]["name"]
    assert name == child_name("dj1", "u-1", "train", "llama-3b") and name.startswith("dj1-train-llama-3b-")
    labels = manifest["metadata"]["labels"]
    assert labels["stratos.io/job-uid"] == "u-1" and labels["stratos.io/candidate"] == "llama-3b"
    assert manifest["spec"]["template"]["metadata"]["labels"] == labels  # the pods carry the key too
    owner = manifest["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("DistillationJob", "u-1", True)
    pod_spec = manifest["spec"]["template"]["spec"]
    assert "nodeSelector" not in pod_spec
    terms = pod_spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert terms == {
        "nodeSelectorTerms": [
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["gpu-1"]}]}
        ]
    }
    assert pod_spec["automountServiceAccountToken"] is False
    container = pod_spec["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"
    ctx = container["securityContext"]
    assert ctx["allowPrivilegeEscalation"] is False and ctx["capabilities"] == {"drop": ["ALL"]}
    assert ctx["runAsNonRoot"] is True and ctx["seccompProfile"] == {"type": "RuntimeDefault"}
    key_env = next(e for e in container["env"] if e["name"] == "TEACHER_API_KEY")
    assert key_env["valueFrom"] == {"secretKeyRef": {"name": "openai", "key": "api-key"}}
    assert {"name": "storage", "persistentVolumeClaim": {"claimName": "data"}} in pod_spec["volumes"]
    configmap = stage_configmap(body, run)
    assert configmap["metadata"]["name"] == manifest["metadata"]["name"]
    assert configmap["metadata"]["ownerReferences"] == manifest["metadata"]["ownerReferences"]


def test_long_names_are_shortened_deterministically() -> None:
    long = child_name("a" * 60, "u-1", "teacher-eval", "deepseek-r1")
    assert len(long) <= 63 and long == child_name("a" * 60, "u-1", "teacher-eval", "deepseek-r1")
    assert long != child_name("a" * 60, "u-1", "teacher-eval", "deepseek-r2")


def test_endpoint_state_follows_the_serving_rollout() -> None:
    from stratos.controller.executor import endpoint_state

    url = "http://dj1-serve.ns.svc:8000/v1"
    assert endpoint_state(None, url).state == "Pending"
    rolling = {
        "metadata": {"generation": 2},
        "spec": {"replicas": 2},
        "status": {"observedGeneration": 2, "updatedReplicas": 2, "readyReplicas": 1},
    }
    assert endpoint_state(rolling, url).message == "1 of 2 serving replicas ready"
    done = {**rolling, "status": {"observedGeneration": 2, "updatedReplicas": 2, "readyReplicas": 2}}
    assert endpoint_state(done, url) == endpoint_state(done, url) and endpoint_state(done, url).url == url
    stuck = {
        **rolling,
        "status": {
            "conditions": [
                {
                    "type": "Progressing",
                    "status": "False",
                    "reason": "ProgressDeadlineExceeded",
                    "message": "timed out",
                }
            ]
        },
    }
    assert endpoint_state(stuck, url).state == "Failed"


def test_a_run_that_never_starts_fails_after_the_start_timeout_with_the_pods_reason() -> None:
    from datetime import UTC, datetime, timedelta

    from stratos.kube.views import start_deadline

    created = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
    job = {"name": "j", "created": "2026-11-22T12:00:00Z", "conditions": [], "backoffLimit": 0}
    pull = pod("Pending", waiting={"reason": "ImagePullBackOff", "message": "Back-off pulling image"})
    waiting = run_state(job, [pull])
    assert waiting.state == "Pending"
    assert start_deadline(waiting, job, [pull], created + timedelta(seconds=60), 60).state == "Pending"
    late = start_deadline(waiting, job, [pull], created + timedelta(seconds=61), 60)
    assert late.state == "Failed"
    assert late.message == (
        "pod p1: ImagePullBackOff: Back-off pulling image (pod p1 not started within startTimeout 1m)"
    )
    # A Job that made no pod at all (quota, admission) is measured from its own creation.
    none = start_deadline(run_state(job, []), job, [], created + timedelta(minutes=20), 900)
    assert none.state == "Failed" and "Job j created no pod and not started within startTimeout 15m" in (
        none.message
    )
    # A running pod, or one that has finished, is never stuck.
    running = pod("Running")
    assert start_deadline(
        run_state(job, [running]), job, [running], created + timedelta(days=1), 60
    ).state == ("Running")
    # The verdict is kept on the (suspended) Job: every later look, and a restarted operator, sees it.
    assert run_state({**job, "startFailure": late.message}, []) == late
