"""Kueue: stage Jobs carry the queue and start suspended; a suspended Job's Workload says why it waits."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from stratos.api.spec import DistillationJobSpec
from stratos.contracts.runs import StageRun
from stratos.controller import kueue
from stratos.controller.executor import KubeExecutor
from stratos.kube.children import stage_job
from stratos.kube.config import OperatorConfig
from stratos.kube.views import job_view
from support.jobs import job

RUN = StageRun("train", "stratos.workloads.train", {}, candidate="s1", node="gpu-1", gpus=1)
CONFIG = OperatorConfig(default_claim="data")  # the chart's default storage


def test_without_a_queue_the_job_starts_at_once_and_has_no_queue_label() -> None:
    body = job()
    manifest = stage_job(body, DistillationJobSpec.model_validate(body["spec"]), RUN, CONFIG)
    assert "suspend" not in manifest["spec"]
    assert "kueue.x-k8s.io/queue-name" not in manifest["metadata"]["labels"]


def test_with_a_queue_the_job_is_created_suspended_and_labelled_for_kueue() -> None:
    body = job(queueName="team-a")
    manifest = stage_job(body, DistillationJobSpec.model_validate(body["spec"]), RUN, CONFIG)
    assert manifest["spec"]["suspend"] is True
    assert manifest["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    # Only the Job is submitted; the pod template keeps the job's own labels.
    assert "kueue.x-k8s.io/queue-name" not in manifest["spec"]["template"]["metadata"]["labels"]
    view = job_view({**manifest, "metadata": {**manifest["metadata"], "uid": "j-1"}})
    assert (view["queue"], view["suspended"], view["uid"]) == ("team-a", True, "j-1")


@pytest.mark.parametrize("bad", ["Team_A", "-a", "a" * 64, ""])
def test_queue_name_must_be_a_label_value_kueue_accepts(bad: str) -> None:
    with pytest.raises(ValidationError):
        DistillationJobSpec.model_validate(job(queueName=bad)["spec"])


def wl(*conds: tuple[str, str, str, str]) -> dict[str, Any]:
    return {
        "metadata": {"name": "job-x-1"},
        "status": {
            "conditions": [{"type": t, "status": s, "reason": r, "message": m} for t, s, r, m in conds]
        },
    }


NO_QUOTA = (
    "QuotaReserved",
    "False",
    "Pending",
    "couldn't assign flavors to pod set main: insufficient quota for cpu in flavor default, "
    "previously considered podsets requests (0) + current podset request (500m) > maximum capacity (100m)",
)


def test_waiting_for_quota_names_the_queue_and_quotes_kueue() -> None:
    msg = kueue.waiting_message("team-a", [wl(NO_QUOTA)])
    assert msg == f"waiting for quota in queue team-a: {NO_QUOTA[3]}"


def test_no_workload_yet_or_unreadable_still_says_which_queue() -> None:
    for workloads in (None, []):
        msg = kueue.waiting_message("team-a", workloads)
        assert msg.startswith("waiting for quota in queue team-a: Kueue has not made a Workload")


def test_preemption_is_surfaced_with_kueues_reason() -> None:
    preempted = wl(
        (
            "Evicted",
            "True",
            "Preempted",
            "Preempted to accommodate a workload (UID: u2) due to prioritization",
        ),
        ("Preempted", "True", "InClusterQueue", "Preempted to accommodate a workload (UID: u2)"),
        NO_QUOTA,
    )
    msg = kueue.waiting_message("team-a", [preempted])
    assert msg.startswith("preempted by Kueue (Preempted to accommodate a workload (UID: u2)); ")
    assert msg.endswith(f"waiting for quota in queue team-a: {NO_QUOTA[3]}")


def test_kueues_repeated_preemption_message_is_said_once() -> None:
    why = (
        "Preempted to accommodate a workload (UID: u2, JobUID: j2) due to prioritization in the ClusterQueue"
    )
    preempted = wl(
        ("Evicted", "True", "Preempted", why),
        ("Preempted", "True", "InClusterQueue", why),
        ("QuotaReserved", "False", "Preempted", why),
    )
    assert (
        kueue.waiting_message("q", [preempted]) == f"preempted by Kueue ({why}); waiting for quota in queue q"
    )


def test_other_evictions_give_their_reason() -> None:
    evicted = wl(("Evicted", "True", "PodsReadyTimeout", "Exceeded the PodsReady timeout"))
    msg = kueue.waiting_message("q", [evicted])
    assert (
        msg
        == "evicted by Kueue (PodsReadyTimeout: Exceeded the PodsReady timeout); waiting for quota in queue q"
    )


def test_readmission_clears_the_preemption_and_admission_checks_are_named() -> None:
    readmitted = wl(
        ("Evicted", "False", "QuotaReserved", "Previously: Preempted"),
        ("QuotaReserved", "True", "QuotaReserved", "Quota reserved in ClusterQueue cq"),
        ("Admitted", "True", "Admitted", "The workload is admitted"),
    )
    assert kueue.waiting_message("q", [readmitted]) == "admitted by queue q; waiting for the Job to start"
    checks = wl(
        ("QuotaReserved", "True", "QuotaReserved", "Quota reserved in ClusterQueue cq"),
        ("Admitted", "False", "NoChecks", "The workload has not all checks ready"),
    )
    assert kueue.waiting_message("q", [checks]) == (
        "quota reserved in queue q, waiting for admission checks: The workload has not all checks ready"
    )


class _Executor(KubeExecutor):
    def __init__(
        self, jobs: dict[tuple[str, str, str], list[dict[str, Any]]], workloads: list[Any] | None
    ) -> None:
        super().__init__(job(queueName="q"), OperatorConfig(), api=None, jobs=jobs, pods={})  # type: ignore[arg-type]
        self.asked: list[Any] = []
        self._found = workloads

    def _workloads(self, job_uid: Any) -> list[dict[str, Any]] | None:
        self.asked.append(job_uid)
        return self._found


def test_the_executor_reports_a_suspended_queued_job_from_its_workload() -> None:
    body = job(queueName="q")
    spec = DistillationJobSpec.model_validate(body["spec"])
    view = {
        "name": "dj1-train-s1",
        "uid": "j-1",
        "queue": "q",
        "suspended": True,
        "conditions": [],
        "deleting": False,
    }
    key = ("u-1", "train", "s1")  # found by the owner's uid, the stage and the candidate
    ex = _Executor({key: [view]}, [wl(NO_QUOTA)])
    status = ex.ensure(RUN, spec)
    assert status.state == "Pending"
    assert status.message == f"Job dj1-train-s1: waiting for quota in queue q: {NO_QUOTA[3]}"
    assert ex.asked == ["j-1"]
    # Once admitted (unsuspended) the pods tell the story again, and Kueue is not asked.
    running = {**view, "suspended": False}
    ex = _Executor({key: [running]}, None)
    assert ex.ensure(RUN, spec).message == "waiting for the Job's pod"
    assert ex.asked == []
