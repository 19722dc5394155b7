"""Stage Jobs go through the real Kueue controller (issue #16, item 1).

Kueue (sigs.k8s.io/kueue, built from the module pinned in tests/kueue) runs against the test control
plane with a ResourceFlavor, a ClusterQueue and a LocalQueue; the operator runs under the chart's
identity. A DistillationJob with ``spec.queueName`` gets its first stage Job (teacher-eval) created
suspended in that queue. The DistillationJob's stage condition then shows, in Kueue's own words:
waiting for quota (the ClusterQueue has too little CPU), admission once the quota is raised (Kueue
unsuspends the Job and its pod appears), and preemption when a higher-priority Job takes the quota.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from support.controlplane import ControlPlane, rest, wait_for
from support.djs import apply, condition, get_dj
from support.kueue import (
    KueueController,
    cluster_queue,
    local_queue,
    resource_flavor,
    workload_priority_class,
)
from support.operator import OperatorProcess

pytest_plugins = ["support.operator"]

CQ, FLAVOR, HIGH = "stratos-test-cq", "stratos-test-flavor", "stratos-test-high"
RESTRICTED = {
    "allowPrivilegeEscalation": False,
    "runAsNonRoot": True,
    "runAsUser": 65532,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


@pytest.fixture(scope="module")
def kueue(
    control_plane: ControlPlane, api: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KueueController]:
    controller = KueueController(control_plane, api, tmp_path_factory.mktemp("kueue")).start()
    try:
        yield controller
    finally:
        # Cluster-scoped queue objects go while Kueue still runs to remove its finalizers.
        for kind, name in (
            ("clusterqueues", CQ),
            ("resourceflavors", FLAVOR),
            ("workloadpriorityclasses", HIGH),
        ):
            control_plane.kubectl(
                "delete", "--ignore-not-found", "--wait=false", f"{kind}.kueue.x-k8s.io/{name}", check=False
            )
        controller.stop()


def job_spec(pool: str, queue: str) -> dict[str, Any]:
    return {
        "apiVersion": "stratos.io/v1alpha1",
        "kind": "DistillationJob",
        "metadata": {"name": "queued"},
        "spec": {
            "queueName": queue,
            "task": {"builtin": "mahjong", "sampleSize": 6, "trainSize": 24, "testSize": 6},
            "servers": {"nodeSelector": {"stratos.test/pool": pool}},
            "teachers": [{"name": "t1", "endpoint": {"baseURL": "http://127.0.0.1:9/v1", "model": "m"}}],
            "students": [{"name": "tiny", "model": {"uri": "/models/tiny", "parameters": 2e5}}],
            "serving": {"enabled": False},
        },
    }


def intruder(namespace: str, queue: str) -> dict[str, Any]:
    """A plain batch Job of higher Kueue priority that needs the CPU the stage Job holds."""
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": "urgent",
            "namespace": namespace,
            "labels": {"kueue.x-k8s.io/queue-name": queue, "kueue.x-k8s.io/priority-class": HIGH},
        },
        "spec": {
            "suspend": True,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": "c",
                            "image": "busybox",
                            "resources": {"requests": {"cpu": "800m", "memory": "1Gi"}},
                            "securityContext": RESTRICTED,
                        }
                    ],
                }
            },
        },
    }


def teacher_condition(api: Any, namespace: str, test: Callable[[str], bool], what: str) -> str:
    def check() -> str | None:
        message = str(condition(get_dj(api, namespace, "queued"), "TeacherSelected").get("message", ""))
        return message if test(message) else None

    found: str = wait_for(check, timeout=240, interval=0.5, what=what)
    return found


def stage_job(api: Any, namespace: str) -> dict[str, Any]:
    jobs = rest(api, "GET", f"/apis/batch/v1/namespaces/{namespace}/jobs")["items"]
    return next(j for j in jobs if j["metadata"]["labels"].get("stratos.io/stage") == "teacher-eval")


def test_kueue_admits_and_preempts_stage_jobs_and_the_job_status_says_so(
    kueue: KueueController,
    operator: OperatorProcess,
    control_plane: ControlPlane,
    namespace: str,
    gpu_nodes: Callable[..., dict[str, Any]],
    api: Any,
    tmp_path: Path,
) -> None:
    gpu_nodes(
        f"{namespace}-gpu",
        labels={"stratos.test/pool": namespace, "nvidia.com/gpu.product": "NVIDIA-L4"},
        annotations={"stratos.io/hourly-cost": "0.5", "stratos.io/latency-ms": "10"},
    )
    kueue.apply(resource_flavor(FLAVOR))
    kueue.apply(cluster_queue(CQ, FLAVOR, {"cpu": "100m", "memory": "64Gi"}))
    kueue.apply(workload_priority_class(HIGH, 1000))
    kueue.apply(local_queue(namespace, "team", CQ))
    apply(control_plane, namespace, job_spec(namespace, "team"))

    # Created suspended in the queue; Kueue's Workload says why it cannot be admitted.
    waiting = teacher_condition(
        api, namespace, lambda m: "insufficient quota for cpu" in m, "the quota wait in the job's status"
    )
    assert "waiting for quota in queue team: couldn't assign flavors to pod set main" in waiting, waiting
    job = stage_job(api, namespace)
    assert job["spec"]["suspend"] is True
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team"
    assert not rest(api, "GET", f"/api/v1/namespaces/{namespace}/pods")["items"]

    # More quota: Kueue admits the Job, unsuspends it, its pod is made and scheduled.
    kueue.apply(cluster_queue(CQ, FLAVOR, {"cpu": "1", "memory": "64Gi"}))
    running = teacher_condition(
        api, namespace, lambda m: "waiting for quota" not in m and " pod " in f" {m}", "admission"
    )
    assert "teacher evaluations finished" in running, running
    assert stage_job(api, namespace)["spec"]["suspend"] is False
    (ours,) = [w for w in kueue.workloads(namespace) if w["metadata"]["labels"].get("kueue.x-k8s.io/job-uid")]
    assert condition(ours, "Admitted")["status"] == "True"

    # A higher-priority Job needs the CPU: Kueue evicts ours, suspends its Job, and the status says so.
    kueue.apply(intruder(namespace, "team"))
    preempted = teacher_condition(api, namespace, lambda m: "preempted by Kueue" in m, "the preemption")
    # Once Kueue has tried to re-admit it, its Workload also says why the quota does not fit.
    assert "); waiting for quota in queue team" in preempted, preempted
    assert "due to prioritization in the ClusterQueue" in preempted, preempted
    assert stage_job(api, namespace)["spec"]["suspend"] is True
    dj = get_dj(api, namespace, "queued")
    assert dj["status"]["phase"] != "Failed", dj["status"]

    # The intruder goes: the stage Job is admitted again.
    control_plane.kubectl("delete", "job", "urgent", "-n", namespace, "--wait=false")
    teacher_condition(
        api, namespace, lambda m: "waiting for quota" not in m and "preempted" not in m, "readmission"
    )
    wait_for(
        lambda: stage_job(api, namespace)["spec"]["suspend"] is False, timeout=240, what="unsuspended again"
    )
