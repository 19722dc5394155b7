"""Child failures surface in the parent within seconds, on the real control plane (issue #8, item 2).

The operator runs as a real ``kopf run`` process under the chart's ServiceAccount; the Job controller and
the scheduler are the real ones; the test kubelet plays the node. What a stage pod does is decided per
attempt by the test (``intercept``: an exit code and reason such as OOMKilled, or a scripted result), or
the stage program really runs. Each case stops at the stage that fails, so it takes seconds: a stage pod
that exits non-zero, is OOMKilled, cannot pull its image, cannot be scheduled (the train Job asks for more
GPUs than are free) or is bound to a node whose kubelet never starts it is shown in the DistillationJob's
conditions with the pod's reason and message; the Job's retries (``spec.retries.backoffLimit``) happen
and are counted there; then the job is Failed with the last failure's details, and its status stops
changing.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from stratos.kube.config import OperatorConfig
from stratos.kube.views import run_state
from support.controlplane import ControlPlane, rest, wait_for
from support.djs import apply, child, condition, events_for, get_dj
from support.fake_openai import FakeOpenAI
from support.kubelet import FakeKubelet, Outcome
from support.operator import OperatorProcess

pytest_plugins = ["support.operator"]

LABEL_STAGE = "stratos.io/stage"
LABEL_CANDIDATE = "stratos.io/candidate"
RESTRICTED = {
    "allowPrivilegeEscalation": False,
    "runAsNonRoot": True,
    "runAsUser": 65532,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}

# What each stage program reports when it succeeds (enough for the stage machine to move on).
RESULTS: dict[str, dict[str, Any]] = {
    "teacher-eval": {
        "ok": True,
        "accuracy": 0.5,
        "samples": 6,
        "correct": 3,
        "promptTokens": 60,
        "completionTokens": 60,
        "costUSD": 0.0,
    },
    "student-probe": {"ok": True, "accuracy": 0.5, "samples": 6, "correct": 3},
    "synthesize": {
        "ok": True,
        "strategy": "injection",
        "kept": 32,
        "real": 24,
        "synthetic": 8,
        "rejected": {},
        "rejectedTotal": 0,
        "promptTokens": 0,
        "completionTokens": 0,
        "costUSD": 0.0,
    },
    "train": {"ok": True, "steps": 4, "seconds": 1.0, "trainLoss": 1.5, "mergedPath": "merged"},
    "evaluate": {"ok": True, "accuracy": 0.5, "samples": 6, "correct": 3},
}

# The stage that fails, the condition that shows it, and the reason the job fails with.
STAGES = {
    "teacher-eval": ("TeacherSelected", "NoTeacherAvailable"),
    "student-probe": ("StudentSelected", "NoFeasibleStudent"),
    "synthesize": ("DataReady", "SynthesisFailed"),
    "train": ("Trained", "TrainingFailed"),
    "evaluate": ("Evaluated", "EvaluationFailed"),
}


def succeeded(stage: str) -> Outcome:
    return Outcome(0, "Completed", json.dumps(RESULTS[stage]))


Script = Callable[[str, int], "Outcome | None"]


class Scripted:
    """An intercept: ``script(stage, attempt)`` decides each stage pod's outcome (attempt counts from 1
    per stage Job); returning None runs the pod's real command. Records when each failure happened."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.attempts: Counter[str] = Counter()
        self.failed_at: dict[tuple[str, int], float] = {}
        self.lock = threading.Lock()

    def __call__(self, pod: Mapping[str, Any]) -> Outcome | None:
        labels = pod["metadata"].get("labels") or {}
        stage, job = labels.get(LABEL_STAGE), labels.get("job-name", "")
        if stage is None:
            return None
        with self.lock:
            self.attempts[job] += 1
            attempt = self.attempts[job]
        outcome = self.script(stage, attempt)
        if outcome is not None and outcome.exit_code != 0:
            self.failed_at[(stage, attempt)] = time.monotonic()
        return outcome


def fail_at(stage: str, outcome: Outcome) -> Script:
    """Every stage before ``stage`` succeeds at once; every attempt of ``stage`` ends with ``outcome``."""

    def script(name: str, attempt: int) -> Outcome:
        return outcome if name == stage else succeeded(name)

    return script


def small_job(
    name: str, pool: str, teacher_url: str = "http://127.0.0.1:9/v1", **spec: Any
) -> dict[str, Any]:
    """A tiny job (see support.pipeline): serving off, one teacher, one tiny student, emptyDir storage."""
    body: dict[str, Any] = {
        "task": {"builtin": "mahjong", "sampleSize": 6, "trainSize": 24, "testSize": 6, "seed": 3},
        "requirements": {"minAccuracy": 0.0},
        "servers": {"nodeSelector": {"stratos.test/pool": pool}},
        "teachers": [{"name": "t1", "endpoint": {"baseURL": teacher_url, "model": "fake-teacher"}}],
        "students": [
            {
                "name": "tiny-a",
                "model": {"uri": "/models/tiny-a", "parameters": 2e5, "layers": 2, "hiddenSize": 64},
            }
        ],
        "distillation": {
            "strategy": "injection",
            "targetSamples": 32,
            "sequenceLength": 512,
            "microBatchSize": 8,
            "lora": {"rank": 8, "alpha": 16},
        },
        "serving": {"enabled": False, "engine": "transformers"},
        "retries": {"backoffLimit": 0},
    }
    body.update(spec)
    return {
        "apiVersion": "stratos.io/v1alpha1",
        "kind": "DistillationJob",
        "metadata": {"name": name},
        "spec": body,
    }


def wait_condition(
    api: Any,
    namespace: str,
    name: str,
    ctype: str,
    test: Callable[[dict[str, Any]], bool],
    timeout: float = 60,
) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        cond = condition(get_dj(api, namespace, name), ctype)
        return cond if cond and test(cond) else None

    found: dict[str, Any] = wait_for(check, timeout=timeout, interval=0.2, what=f"{name}: condition {ctype}")
    return found


def wait_failed(api: Any, namespace: str, name: str, timeout: float = 90) -> dict[str, Any]:
    def failed() -> dict[str, Any] | None:
        dj = get_dj(api, namespace, name)
        return dj if (dj.get("status") or {}).get("phase") == "Failed" else None

    dj: dict[str, Any] = wait_for(failed, timeout=timeout, interval=0.3, what=f"{name} to fail")
    return dj


def assert_settled(api: Any, namespace: str, name: str, seconds: float = 3.0, timeout: float = 60.0) -> None:
    """The status of a finished job stops changing: within ``timeout`` there is a window of ``seconds``
    (several reconcile ticks) with no write. Writes that land late (an event announced after the
    failure) settle; a job rewritten on every tick never does, and fails with what kept changing."""
    deadline = time.monotonic() + timeout
    before = get_dj(api, namespace, name)
    while True:
        time.sleep(seconds)
        after = get_dj(api, namespace, name)
        if after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]:
            return
        changed = sorted(
            k
            for k in set(before.get("status") or {}) | set(after.get("status") or {})
            if (before.get("status") or {}).get(k) != (after.get("status") or {}).get(k)
        )
        assert time.monotonic() < deadline, f"{name} kept changing for {timeout:.0f} s: status {changed}"
        before = after


def gpu_node(
    gpu_nodes: Callable[..., dict[str, Any]], kubelet: FakeKubelet | None, name: str, pool: str, **kwargs: Any
) -> None:
    labels = {"stratos.test/pool": pool, "nvidia.com/gpu.product": "NVIDIA-L4", **kwargs.pop("labels", {})}
    gpu_nodes(
        name,
        labels=labels,
        annotations={"stratos.io/hourly-cost": "0.5", "stratos.io/latency-ms": "10"},
        **kwargs,
    )
    if kubelet is not None:
        kubelet.add_node(name)


def stage_job(api: Any, namespace: str, name: str) -> dict[str, Any]:
    return dict(rest(api, "GET", f"/apis/batch/v1/namespaces/{namespace}/jobs/{name}"))


# ---------------------------------------------------------------------------------------------- tests


def test_a_failed_attempt_shows_within_seconds_the_job_retries_then_fails_with_the_last_failure(
    operator: OperatorProcess,
    control_plane: ControlPlane,
    namespace: str,
    gpu_nodes: Callable[..., dict[str, Any]],
    fake_kubelet: FakeKubelet,
    api: Any,
) -> None:
    """teacher-eval, backoffLimit 1: the first pod is OOMKilled; the retry really runs the stage program
    against a teacher that answers 401 to every request, so the program exits non-zero with its error."""
    scripted = Scripted(lambda stage, attempt: Outcome(137, "OOMKilled", "") if attempt == 1 else None)
    fake_kubelet.intercept = scripted
    gpu_node(gpu_nodes, fake_kubelet, f"{namespace}-gpu", namespace)
    with FakeOpenAI(require_key="a-key-this-job-does-not-send") as teacher:
        apply(
            control_plane,
            namespace,
            small_job("retry", namespace, teacher.base_url, retries={"backoffLimit": 1}),
        )
        # The OOMKill is in the parent's condition within seconds, with the retry it causes.
        cond = wait_condition(
            api, namespace, "retry", "TeacherSelected", lambda c: "OOMKilled" in c.get("message", "")
        )
        shown = time.monotonic()
        latency = shown - scripted.failed_at[("teacher-eval", 1)]
        print(f"after {latency:.1f} s: {cond['message']}")
        assert latency < 10, f"the OOMKill took {latency:.1f} s to reach the parent"
        assert cond["status"] == "Unknown" and cond["reason"] == "Evaluating"
        assert "t1:" in cond["message"] and "exited 137 (OOMKilled)" in cond["message"]
        assert "retry 1 of 1" in cond["message"], cond
        assert get_dj(api, namespace, "retry")["status"]["phase"] == "EvaluatingTeachers"

        dj = wait_failed(api, namespace, "retry")
    name = child(api, namespace, "retry", "teacher-eval", "t1")
    job = stage_job(api, namespace, name)
    assert job["spec"]["backoffLimit"] == 1 and job["status"].get("failed") == 2  # the retry happened
    assert scripted.attempts[name] == 2
    assert teacher.chat_requests and all(r.status == 401 for r in teacher.chat_requests)

    status = dj["status"]
    failed = condition(dj, "Failed")
    assert failed["status"] == "True" and failed["reason"] == "NoTeacherAvailable"
    message = failed["message"]
    print(f"Failed: {message}")
    # The last failure's details: the Job's verdict, the attempts, the last pod's exit and the program's
    # own error (not the first attempt's OOMKill).
    assert "BackoffLimitExceeded" in message and "2 attempts" in message, message
    assert "exited 1 (Error)" in message and "TeacherUnavailable" in message and "401" in message, message
    assert status["message"] == message
    assert condition(dj, "TeacherSelected")["status"] == "False"
    assert condition(dj, "Ready") == {
        **condition(dj, "Ready"),
        "status": "False",
        "reason": "NoTeacherAvailable",
    }
    (candidate,) = status["teacher"]["candidates"]
    assert "TeacherUnavailable" in candidate["error"]
    warnings = [e for e in events_for(api, namespace, "retry") if e["type"] == "Warning"]
    assert any(e["reason"] == "NoTeacherAvailable" and "401" in e["message"] for e in warnings), warnings
    assert_settled(api, namespace, "retry")


@pytest.mark.parametrize("stage", list(STAGES))
def test_an_oom_killed_stage_fails_the_job_with_the_reason(
    operator: OperatorProcess,
    control_plane: ControlPlane,
    namespace: str,
    gpu_nodes: Callable[..., dict[str, Any]],
    fake_kubelet: FakeKubelet,
    api: Any,
    stage: str,
) -> None:
    """Whichever stage's pod is OOMKilled, the job fails naming the stage's verdict and the OOMKill."""
    fake_kubelet.intercept = scripted = Scripted(fail_at(stage, Outcome(137, "OOMKilled", "")))
    gpu_node(gpu_nodes, fake_kubelet, f"{namespace}-gpu", namespace)
    apply(control_plane, namespace, small_job("oom", namespace))
    dj = wait_failed(api, namespace, "oom")
    ctype, reason = STAGES[stage]
    failed, stage_cond = condition(dj, "Failed"), condition(dj, ctype)
    assert (failed["reason"], stage_cond["status"]) == (reason, "False"), (failed, stage_cond)
    status = dj["status"]
    if stage == "student-probe":  # the probe's failure is the candidate's verdict
        (candidate,) = status["student"]["candidates"]
        detail = candidate["verdict"]
        assert detail.startswith("probe failed:")
    else:
        detail = failed["message"]
        assert stage_cond["reason"] == reason
    print(f"{failed['reason']}: {detail}")
    assert "exited 137 (OOMKilled)" in detail and "BackoffLimitExceeded" in detail, detail
    if stage in ("train", "evaluate"):
        assert "tiny-a" in failed["message"]
    candidate = {"teacher-eval": "t1", "synthesize": None}.get(stage, "tiny-a")
    assert scripted.attempts[child(api, namespace, "oom", stage, candidate)] == 1  # backoffLimit 0: no retry
    assert_settled(api, namespace, "oom", seconds=2.0)


def test_an_image_that_cannot_be_pulled_shows_in_the_conditions_until_it_can(
    operator: OperatorProcess,
    control_plane: ControlPlane,
    namespace: str,
    gpu_nodes: Callable[..., dict[str, Any]],
    fake_kubelet: FakeKubelet,
    api: Any,
) -> None:
    image = OperatorConfig.from_env().worker_image  # the operator runs with this process's environment
    fake_kubelet.missing_images.add(image)
    fake_kubelet.intercept = Scripted(lambda stage, attempt: succeeded(stage))
    gpu_node(gpu_nodes, fake_kubelet, f"{namespace}-gpu", namespace)
    apply(control_plane, namespace, small_job("pull", namespace))
    cond = wait_condition(
        api, namespace, "pull", "TeacherSelected", lambda c: "ErrImagePull" in c.get("message", "")
    )
    print(cond["message"])
    assert f'"{image}' in cond["message"] and "not found" in cond["message"], cond
    cond = wait_condition(
        api, namespace, "pull", "TeacherSelected", lambda c: "ImagePullBackOff" in c.get("message", "")
    )
    print(cond["message"])
    assert "Back-off pulling image" in cond["message"] and cond["status"] == "Unknown"
    assert get_dj(api, namespace, "pull")["status"]["phase"] == "EvaluatingTeachers"

    fake_kubelet.missing_images.discard(image)  # the registry has it now: the next pull attempt works
    wait_condition(api, namespace, "pull", "TeacherSelected", lambda c: c["status"] == "True", timeout=30)


def test_a_train_pod_asking_for_more_gpus_than_are_free_is_shown_unschedulable(
    operator: OperatorProcess,
    control_plane: ControlPlane,
    namespace: str,
    gpu_nodes: Callable[..., dict[str, Any]],
    fake_kubelet: FakeKubelet,
    api: Any,
) -> None:
    """A 2-GPU node where another workload holds one GPU: the probe (1 GPU) runs, the train Job asks for
    both GPUs and the scheduler cannot place it; the Trained condition says so in the scheduler's words."""
    fake_kubelet.intercept = Scripted(lambda stage, attempt: succeeded(stage))
    node = f"{namespace}-gpu"
    gpu_node(gpu_nodes, fake_kubelet, node, namespace, labels={"nvidia.com/gpu.count": "2"}, gpus=2)
    squatter = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "someone-elses-job"},
        "spec": {
            "nodeName": node,
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "main",
                    "image": "python:3.11-slim",
                    "command": ["sleep", "600"],
                    "resources": {"limits": {"nvidia.com/gpu": "1"}},
                    "securityContext": RESTRICTED,
                }
            ],
        },
    }
    rest(api, "POST", f"/api/v1/namespaces/{namespace}/pods", body=squatter)
    apply(control_plane, namespace, small_job("gpus", namespace))
    cond = wait_condition(
        api, namespace, "gpus", "Trained", lambda c: "unschedulable" in c.get("message", ""), timeout=90
    )
    print(cond["message"])
    assert cond["status"] == "Unknown" and cond["reason"] == "Training"
    assert "tiny-a" in cond["message"] and "Insufficient nvidia.com/gpu" in cond["message"], cond
    dj = get_dj(api, namespace, "gpus")
    assert dj["status"]["phase"] == "Training" and dj["status"]["server"]["gpu"]["count"] == 2
    train = stage_job(api, namespace, child(api, namespace, "gpus", "train", "tiny-a"))
    limits = train["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == "2"


def test_a_pod_on_a_node_without_a_kubelet_is_shown_as_not_started(
    operator: OperatorProcess,
    control_plane: ControlPlane,
    namespace: str,
    gpu_nodes: Callable[..., dict[str, Any]],
    fake_kubelet: FakeKubelet,
    api: Any,
) -> None:
    """The node is Ready and schedulable, but nothing runs its pods (no kubelet behind it)."""
    node = f"{namespace}-silent"
    gpu_node(gpu_nodes, None, node, namespace)  # fake_kubelet does not serve it
    apply(control_plane, namespace, small_job("silent", namespace))
    cond = wait_condition(
        api, namespace, "silent", "TeacherSelected", lambda c: "not started" in c.get("message", "")
    )
    print(cond["message"])
    assert f"scheduled on node {node}" in cond["message"] and "t1:" in cond["message"], cond
    assert cond["status"] == "Unknown"


# ------------------------------------------------------------------ the mapping itself (pure, no cluster)


def _pod(name: str, created: str, phase: str, **state: Any) -> dict[str, Any]:
    return {
        "name": name,
        "phase": phase,
        "conditions": [],
        "containerStatuses": [{"name": "stage", "state": state}] if state else [],
        "creationTimestamp": created,
        "nodeName": "n1",
    }


def test_run_state_names_retries_and_the_last_failure() -> None:
    oom = _pod("p1", "2026-01-01T00:00:00Z", "Failed", terminated={"exitCode": 137, "reason": "OOMKilled"})
    err = _pod(
        "p2",
        "2026-01-01T00:00:10Z",
        "Failed",
        terminated={
            "exitCode": 1,
            "reason": "Error",
            "message": '{"ok": false, "error": "401", "kind": "X"}',
        },
    )
    retrying = {"backoffLimit": 2, "failed": 1, "conditions": []}
    waiting = run_state(retrying, [oom, _pod("p2", "2026-01-01T00:00:10Z", "Pending")])
    assert (
        waiting.state == "Pending" and "retry 1 of 2 after pod p1 exited 137 (OOMKilled)" in waiting.message
    )
    between = run_state(retrying, [oom])  # before the Job controller made the replacement pod
    assert "pod p1 exited 137 (OOMKilled)" in between.message and "retry 1 of 2 follows" in between.message
    failed = {
        "backoffLimit": 1,
        "failed": 2,
        "conditions": [
            {"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded", "message": "limit"}
        ],
    }
    final = run_state(failed, [err, oom])  # order of the index does not matter
    assert final.state == "Failed"
    assert (
        final.message == "BackoffLimitExceeded: limit (2 attempts); last pod: pod p2 exited 1 (Error): X: 401"
    )


def test_run_state_says_why_a_pod_does_not_start() -> None:
    job = {"backoffLimit": 0, "conditions": []}
    bound = _pod("p1", "2026-01-01T00:00:00Z", "Pending")
    assert run_state(job, [bound]).message == "pod p1 scheduled on node n1, not started by its kubelet yet"
    config = _pod(
        "p1",
        "2026-01-01T00:00:00Z",
        "Pending",
        waiting={"reason": "CreateContainerConfigError", "message": 'secret "keys" not found'},
    )
    assert run_state(job, [config]).message == 'pod p1: CreateContainerConfigError: secret "keys" not found'
