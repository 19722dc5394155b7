"""Jobs never touch each other's children, and a stage that cannot start ends the job (issue 15, defects
5 and 7), on the real control plane with the operator under its chart identity.

- Job ``co`` whose student is named ``synthesize`` and job ``co-train`` once needed the same Job name
  (``co-train-synthesize``): ``co`` "trained" on ``co-train``'s synthesize Job. Each now has its own
  children, found by the labels that carry its uid.
- Suspending job ``p`` deleted the running stage Jobs of job ``p-x`` (name-prefix matching). It now
  deletes its own only.
- A ``configmap://missing/train.jsonl`` dataset kept its pod ContainerCreating forever with "pod ...
  pending". The condition now names the ConfigMap and the field, and after ``spec.retries.startTimeout``
  the job fails with that reason and the stuck Job is suspended (its pod goes).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from test_failures import Scripted, gpu_node, small_job, succeeded, wait_condition, wait_failed

from support.controlplane import ControlPlane, rest, wait_for
from support.djs import apply, condition, get_dj, stage_jobs
from support.kubelet import FakeKubelet
from support.operator import OperatorProcess

pytest_plugins = ["support.operator"]


def test_jobs_whose_child_names_once_collided_each_run_their_own_stages(
    operator: OperatorProcess,
    control_plane: ControlPlane,
    namespace: str,
    gpu_nodes: Callable[..., dict[str, Any]],
    fake_kubelet: FakeKubelet,
    api: Any,
) -> None:
    fake_kubelet.intercept = Scripted(lambda stage, attempt: succeeded(stage))
    gpu_node(gpu_nodes, fake_kubelet, f"{namespace}-gpu", namespace)
    co = small_job("co", namespace)
    co["spec"]["students"][0]["name"] = "synthesize"
    apply(control_plane, namespace, small_job("co-train", namespace))
    apply(control_plane, namespace, co)

    def done() -> bool:
        phases = [(get_dj(api, namespace, n).get("status") or {}).get("phase") for n in ("co", "co-train")]
        assert "Failed" not in phases, phases
        return phases == ["Succeeded", "Succeeded"]

    wait_for(done, timeout=180, interval=0.5, what="both jobs to succeed")
    for name, student in (("co", "synthesize"), ("co-train", "tiny-a")):
        uid = get_dj(api, namespace, name)["metadata"]["uid"]
        for stage in ("teacher-eval", "student-probe", "synthesize", "train", "evaluate"):
            (job,) = stage_jobs(api, namespace, name, stage=stage)
            assert job["metadata"]["ownerReferences"][0]["uid"] == uid
            if stage in ("student-probe", "train", "evaluate"):
                assert job["metadata"]["labels"]["stratos.io/candidate"] == student
            # The operator reads a stage's result from its pod; the Job controller counts the
            # success in its own time.
            job_name = job["metadata"]["name"]
            wait_for(
                lambda job_name=job_name: (
                    rest(api, "GET", f"/apis/batch/v1/namespaces/{namespace}/jobs/{job_name}")["status"].get(
                        "succeeded"
                    )
                    == 1
                ),
                timeout=60,
                interval=0.5,
                what=f"Job {job_name} to count its success",
            )
    names = [j["metadata"]["name"] for n in ("co", "co-train") for j in stage_jobs(api, namespace, n)]
    assert len(names) == len(set(names)) == 10


def test_suspending_a_job_stops_only_its_own_stage_jobs(
    operator: OperatorProcess,
    control_plane: ControlPlane,
    namespace: str,
    gpu_nodes: Callable[..., dict[str, Any]],
    api: Any,
) -> None:
    """No kubelet serves the node: the teacher-eval pods stay Pending and their Jobs unfinished."""
    gpu_node(gpu_nodes, None, f"{namespace}-silent", namespace)
    for name in ("p", "p-x"):
        apply(control_plane, namespace, small_job(name, namespace))
    for name in ("p", "p-x"):
        wait_for(lambda n=name: stage_jobs(api, namespace, n), timeout=60, what=f"{name}'s teacher-eval Job")
    spec = small_job("p", namespace)
    spec["spec"]["suspend"] = True
    apply(control_plane, namespace, spec)
    wait_for(
        lambda: not stage_jobs(api, namespace, "p"),
        timeout=60,
        what="p's stage Jobs to be deleted on suspend",
    )
    # The Jobs are deleted first and the condition is written in the same tick's status patch,
    # which may land a moment later.
    wait_for(
        lambda: condition(get_dj(api, namespace, "p"), "Suspended").get("status") == "True",
        timeout=60,
        what="p's Suspended condition",
    )
    (other,) = stage_jobs(api, namespace, "p-x")
    assert not other["metadata"].get("deletionTimestamp"), "suspending p deleted p-x's Job"
    assert (get_dj(api, namespace, "p-x").get("status") or {}).get("phase") == "EvaluatingTeachers"


def test_a_missing_configmap_is_named_and_a_stage_that_never_starts_fails_the_job(
    operator: OperatorProcess,
    control_plane: ControlPlane,
    namespace: str,
    gpu_nodes: Callable[..., dict[str, Any]],
    fake_kubelet: FakeKubelet,
    api: Any,
) -> None:
    fake_kubelet.intercept = Scripted(lambda stage, attempt: succeeded(stage))
    gpu_node(gpu_nodes, fake_kubelet, f"{namespace}-gpu", namespace)
    job = small_job("cm", namespace, retries={"backoffLimit": 0, "startTimeout": "20s"})
    job["spec"]["task"] = {"builtin": "jsonl", "dataset": {"train": "configmap://missing/train.jsonl"}}
    apply(control_plane, namespace, job)
    named = 'ConfigMap "missing" not found (spec.task.dataset.train)'
    cond = wait_condition(api, namespace, "cm", "TeacherSelected", lambda c: named in c.get("message", ""))
    print(cond["message"])
    assert cond["status"] == "Unknown"

    dj = wait_failed(api, namespace, "cm", timeout=120)
    failed = condition(dj, "Failed")
    print(failed["message"])
    assert failed["reason"] == "NoTeacherAvailable"
    assert named in failed["message"] and "not started within startTimeout 20s" in failed["message"]
    (stuck,) = stage_jobs(api, namespace, "cm", stage="teacher-eval")
    assert stuck["spec"]["suspend"] is True  # its pod goes and cannot start later
    wait_for(
        lambda: (
            not rest(
                api,
                "GET",
                f"/api/v1/namespaces/{namespace}/pods",
                query={"labelSelector": f"job-name={stuck['metadata']['name']}"},
            )["items"]
        ),
        timeout=60,
        what="the stuck pod to be deleted",
    )
