"""The operator as a real ``kopf run`` process under the Helm chart's ServiceAccount, on the real API server.

It picks among labelled fake GPU nodes, writes the decision into status (shown by ``kubectl get dj``),
posts Events, waits and retries when no node fits, serves metrics, and survives restarts without
duplicating children or changing decisions.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from support.controlplane import ControlPlane, rest, wait_for
from support.djs import apply, child, events_for
from support.operator import OperatorProcess

pytest_plugins = ["support.operator"]  # the `operator` fixture


def dj_manifest(name: str, pool: str, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "task": {"builtin": "mahjong", "sampleSize": 10},
        "requirements": {"minAccuracy": 0.15},
        # The paper rule: these tests watch the grid choose the node at SelectServer, before any workload.
        "servers": {"nodeSelector": {"stratos.test/pool": pool}, "costWindow": 0.2, "rule": "paper"},
        "teachers": [{"name": "t1", "endpoint": {"baseURL": "http://teacher.invalid:8000/v1", "model": "m"}}],
        "students": [{"name": "tiny", "model": {"uri": "file:///models/tiny", "parameters": 1.0e8}}],
    }
    body.update(spec)
    return {
        "apiVersion": "stratos.io/v1alpha1",
        "kind": "DistillationJob",
        "metadata": {"name": name},
        "spec": body,
    }


def get_dj(cp: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    return dict(json.loads(cp.kubectl("get", "dj", name, "-n", namespace, "-o", "json").stdout))


def pool_nodes(gpu_nodes: Callable[..., dict[str, Any]], pool: str) -> None:
    """Three nodes as in tests/unit/test_machine.py, whose hand-computed winner is the RTX 4090."""
    for name, product, cost, latency in (
        ("a-4090", "NVIDIA-GeForce-RTX-4090", "0.35", "20"),
        ("b-h20", "NVIDIA-H20", "1.20", "17"),
        ("c-3090", "NVIDIA-GeForce-RTX-3090", "0.22", "60"),
    ):
        gpu_nodes(
            f"{pool}-{name}",
            labels={
                "stratos.test/pool": pool,
                "nvidia.com/gpu.product": product,
                "nvidia.com/gpu.count": "1",
            },
            annotations={"stratos.io/hourly-cost": cost, "stratos.io/latency-ms": latency},
        )


def test_operator_selects_a_node_and_kubectl_shows_the_decision(
    operator: OperatorProcess,
    control_plane: ControlPlane,
    namespace: str,
    gpu_nodes: Callable[..., dict[str, Any]],
    api: Any,
) -> None:
    pool_nodes(gpu_nodes, namespace)
    apply(control_plane, namespace, dj_manifest("mahjong", namespace))
    control_plane.kubectl(
        "wait", "--for=condition=ServerSelected", "dj/mahjong", "-n", namespace, "--timeout=60s"
    )
    dj = get_dj(control_plane, namespace, "mahjong")
    status = dj["status"]
    server = status["server"]
    assert server["node"] == f"{namespace}-a-4090"
    assert server["gpu"] == {"model": "RTX 4090", "count": 1, "memoryGib": 24.0}
    assert (server["gridSize"], server["cell"], server["paretoCells"]) == (5, [0, 0, 0], [[0, 0, 0]])
    assert len(server["runnersUp"]) == 2 and all(r["reason"] for r in server["runnersUp"])
    assert status["observedGeneration"] == dj["metadata"]["generation"]
    cond = next(c for c in status["conditions"] if c["type"] == "ServerSelected")
    assert cond["observedGeneration"] == dj["metadata"]["generation"] and cond["reason"] == "NodeSelected"

    table = control_plane.kubectl("get", "dj", "mahjong", "-n", namespace).stdout
    header, row = table.splitlines()[:2]
    assert re.split(r"\s{2,}", header.strip())[:6] == ["NAME", "PHASE", "READY", "NODE", "GPU", "TEACHER"]
    assert f"{namespace}-a-4090" in row and "RTX 4090" in row
    assert re.split(r"\s{2,}", row.strip())[2] == "Unknown"  # the pipeline is still running
    wide = control_plane.kubectl("get", "dj", "mahjong", "-n", namespace, "-o", "wide").stdout
    assert "ENDPOINT" in wide.splitlines()[0]

    reasons = wait_for(
        lambda: {e["reason"] for e in events_for(api, namespace, "mahjong")} or None, what="events"
    )
    assert "NodeSelected" in reasons

    # The next stage starts: one teacher-eval Job, owned by the DistillationJob, whose pod passes the
    # namespace's restricted Pod Security admission.
    jobs = f"/apis/batch/v1/namespaces/{namespace}/jobs"
    job = wait_for(
        lambda: rest(api, "GET", f"{jobs}/{child(api, namespace, 'mahjong', 'teacher-eval', 't1')}"),
        what="teacher-eval Job",
    )
    owner = job["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"]) == (
        "DistillationJob",
        "mahjong",
        dj["metadata"]["uid"],
    )
    pods = wait_for(
        lambda: rest(api, "GET", f"/api/v1/namespaces/{namespace}/pods", query={"labelSelector": "job-name"})[
            "items"
        ],
        what="the stage pod (created only if restricted PSS admits it)",
    )
    assert pods[0]["spec"]["automountServiceAccountToken"] is False


def test_no_feasible_node_is_reported_and_retried_when_a_node_appears(
    operator: OperatorProcess,
    control_plane: ControlPlane,
    namespace: str,
    gpu_nodes: Callable[..., dict[str, Any]],
) -> None:
    gpu_nodes(
        f"{namespace}-cordoned",
        labels={"stratos.test/pool": namespace, "nvidia.com/gpu.product": "NVIDIA-L20"},
        annotations={"stratos.io/hourly-cost": "0.5", "stratos.io/latency-ms": "10"},
        unschedulable=True,
    )
    gpu_nodes(
        f"{namespace}-garbage",
        labels={"stratos.test/pool": namespace, "nvidia.com/gpu.product": "NVIDIA-L20"},
        annotations={"stratos.io/hourly-cost": "cheap", "stratos.io/latency-ms": "10"},
    )
    apply(control_plane, namespace, dj_manifest("waiting", namespace))
    control_plane.kubectl(
        "wait", "--for=condition=ServerSelected=False", "dj/waiting", "-n", namespace, "--timeout=60s"
    )
    status = get_dj(control_plane, namespace, "waiting")["status"]
    cond = next(c for c in status["conditions"] if c["type"] == "ServerSelected")
    assert cond["reason"] == "NoFeasibleNode"
    assert "cordoned" in cond["message"] and "hourly-cost" in cond["message"]
    assert status["phase"] == "SelectingServer"

    gpu_nodes(
        f"{namespace}-l20",
        labels={"stratos.test/pool": namespace, "nvidia.com/gpu.product": "NVIDIA-L20"},
        annotations={"stratos.io/hourly-cost": "0.6", "stratos.io/latency-ms": "12"},
    )
    control_plane.kubectl(
        "wait", "--for=condition=ServerSelected", "dj/waiting", "-n", namespace, "--timeout=60s"
    )
    assert get_dj(control_plane, namespace, "waiting")["status"]["server"]["node"] == f"{namespace}-l20"


def test_metrics_and_restart_without_duplicates_or_changed_decisions(
    operator: OperatorProcess,
    control_plane: ControlPlane,
    namespace: str,
    gpu_nodes: Callable[..., dict[str, Any]],
    api: Any,
) -> None:
    pool_nodes(gpu_nodes, namespace)
    apply(control_plane, namespace, dj_manifest("restart", namespace))
    control_plane.kubectl(
        "wait", "--for=condition=ServerSelected", "dj/restart", "-n", namespace, "--timeout=60s"
    )
    wait_for(
        lambda: rest(api, "GET", f"/apis/batch/v1/namespaces/{namespace}/jobs")["items"], what="stage Jobs"
    )
    before = get_dj(control_plane, namespace, "restart")["status"]

    metrics = operator.metrics()
    assert re.search(r'^stratos_distillationjobs\{phase="EvaluatingTeachers"\} [1-9]', metrics, re.M)
    assert re.search(r'^stratos_decision_duration_seconds_count\{decision="server"\} [1-9]', metrics, re.M)
    assert "stratos_reconcile_errors_total" in metrics
    # Per-job series, named apart from batch Jobs, from the status the operator wrote.
    job = {"namespace": namespace, "name": "restart"}
    samples = [
        (s.name, s.labels, s.value)
        for family in text_string_to_metric_families(metrics)
        for s in family.samples
    ]

    def value(metric: str, **labels: str) -> float | None:
        want = {**job, **labels}
        found = [v for n, have, v in samples if n == metric and want.items() <= have.items()]
        return found[0] if found else None

    assert [v for n, _, v in samples if n == "stratos_operator_active"] == [1.0]
    assert value("stratos_distillationjob_info", node=f"{namespace}-a-4090", gpu="RTX 4090") == 1.0
    assert value("stratos_distillationjob_status_phase", phase="EvaluatingTeachers") == 1.0
    assert value("stratos_distillationjob_status_phase", phase="Pending") == 0.0
    assert value("stratos_distillationjob_status_condition", condition="ServerSelected", status="true") == 1.0
    assert value("stratos_distillationjob_status_condition", condition="Ready", status="unknown") == 1.0
    for metric, stage in (
        ("stratos_distillationjob_stage_duration_seconds", "SelectServer"),  # whole seconds: 0 is fine
        ("stratos_distillationjob_stage_running_seconds", "EvaluateTeachers"),
    ):
        seconds = value(metric, stage=stage)
        assert seconds is not None and seconds >= 0, (metric, stage, seconds)

    operator.restart(kill=True)
    # A cheaper node appears while the operator is down: the recorded decision must not change.
    gpu_nodes(
        f"{namespace}-cheaper",
        labels={"stratos.test/pool": namespace, "nvidia.com/gpu.product": "NVIDIA-GeForce-RTX-4090"},
        annotations={"stratos.io/hourly-cost": "0.01", "stratos.io/latency-ms": "1"},
    )
    time.sleep(4 * operator.interval + 1)  # a few reconcile ticks of the new process
    after = get_dj(control_plane, namespace, "restart")["status"]
    assert after["server"] == before["server"]
    assert [c for c in after["conditions"] if c["type"] == "ServerSelected"] == [
        c for c in before["conditions"] if c["type"] == "ServerSelected"
    ]
    jobs = rest(api, "GET", f"/apis/batch/v1/namespaces/{namespace}/jobs")["items"]
    assert [j["metadata"]["name"] for j in jobs] == [child(api, namespace, "restart", "teacher-eval", "t1")]
    selected = [e for e in events_for(api, namespace, "restart") if e["reason"] == "NodeSelected"]
    assert sum(e.get("count", 1) for e in selected) == 1


def test_a_restarted_operator_finds_the_stage_jobs_and_pods_that_existed_before_it_started(
    operator: OperatorProcess,
    control_plane: ControlPlane,
    namespace: str,
    gpu_nodes: Callable[..., dict[str, Any]],
    api: Any,
) -> None:
    """The operator's caches list its children when it starts: a teacher evaluation that finished while no
    operator ran is read from the Job and pod already on the server, not created again. A cache that only
    watched (or a lookup by anything but the labels) would never see that Job and the job would wait."""
    pool_nodes(gpu_nodes, namespace)
    apply(control_plane, namespace, dj_manifest("found", namespace))
    pods_path = f"/api/v1/namespaces/{namespace}/pods"
    selector = {"labelSelector": "stratos.io/stage=teacher-eval"}
    pod = wait_for(
        lambda: next(iter(rest(api, "GET", pods_path, query=selector)["items"]), None),
        timeout=120,
        what="the teacher-eval Job's pod",
    )
    (job,) = rest(api, "GET", f"/apis/batch/v1/namespaces/{namespace}/jobs")["items"]

    operator.stop(kill=True)
    # While no operator runs, the stage ends as a kubelet would end it: the pod Succeeded with the
    # evaluation's result as its termination message; the Job controller then marks the Job Complete.
    result = {"ok": True, "accuracy": 0.5, "samples": 10, "correct": 5, "costUsd": 0.01}
    container = pod["spec"]["containers"][0]
    terminated = {"exitCode": 0, "reason": "Completed", "message": json.dumps(result)}
    status = {
        "phase": "Succeeded",
        "containerStatuses": [
            {
                "name": container["name"],
                "image": container["image"],
                "imageID": "",
                "ready": False,
                "restartCount": 0,
                "state": {"terminated": terminated},
            }
        ],
    }
    rest(api, "PATCH", f"{pods_path}/{pod['metadata']['name']}/status", body={"status": status})
    job_path = f"/apis/batch/v1/namespaces/{namespace}/jobs/{job['metadata']['name']}"

    def complete() -> bool:
        conditions = rest(api, "GET", job_path).get("status", {}).get("conditions") or []
        return any(c["type"] == "Complete" and c["status"] == "True" for c in conditions)

    wait_for(complete, timeout=120, what="the Job controller to mark the teacher-eval Job complete")

    operator.start()
    control_plane.kubectl(
        "wait", "--for=condition=TeacherSelected", "dj/found", "-n", namespace, "--timeout=120s"
    )
    teacher_jobs = [
        j
        for j in rest(api, "GET", f"/apis/batch/v1/namespaces/{namespace}/jobs")["items"]
        if j["metadata"]["labels"].get("stratos.io/stage") == "teacher-eval"
    ]
    assert [j["metadata"]["uid"] for j in teacher_jobs] == [job["metadata"]["uid"]]  # the same Job
    teacher = get_dj(control_plane, namespace, "found")["status"]["teacher"]
    assert teacher["selected"] == "t1", teacher
    assert [(c["name"], c["accuracy"]) for c in teacher["candidates"]] == [("t1", 0.5)], teacher
