"""A stage Job deleted before it finishes is still charged its node time (issue 15, defect 10: "charge
everything"), on the real control plane with the operator under its chart identity.

The train pod of job ``gone`` runs until its Job is deleted (as by hand, an eviction or garbage
collection); the operator then makes another train Job, which succeeds. ``status.cost`` must charge the
first run's node time, from its container's start to when the operator saw it gone, at the node's
0.5 USD per hour, once, besides the second run's.
"""

from __future__ import annotations

import sys
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import pytest
from test_failures import LABEL_STAGE, assert_settled, gpu_node, small_job, succeeded

from support.controlplane import ControlPlane, rest, wait_for
from support.djs import apply, condition, get_dj, stage_jobs
from support.kubelet import Command, FakeKubelet, Outcome
from support.operator import OperatorProcess

pytest_plugins = ["support.operator"]

HOURLY = 0.5
#: What the first train pod runs: nothing, until it is deleted.
#: What the second train run is charged: its program reports 1 s (``RESULTS``), more than its pod took.
SECOND_RUN = 1.0
HOLD = Command((sys.executable, "-c", "import time; time.sleep(600)"))


class HoldFirstTrain:
    """Every stage pod succeeds at once, except the first train Job's pod, which runs until deleted."""

    def __init__(self) -> None:
        self.jobs: Counter[str] = Counter()
        self.lock = threading.Lock()

    def __call__(self, pod: Mapping[str, Any]) -> Outcome | Command | None:
        stage = (pod["metadata"].get("labels") or {}).get(LABEL_STAGE)
        if stage is None:
            return None
        with self.lock:
            self.jobs[stage] += 1
            first = self.jobs[stage] == 1
        return HOLD if stage == "train" and first else succeeded(stage)


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_a_train_job_deleted_mid_run_is_charged_its_node_time_once(
    operator: OperatorProcess,
    control_plane: ControlPlane,
    namespace: str,
    gpu_nodes: Callable[..., dict[str, Any]],
    fake_kubelet: FakeKubelet,
    api: Any,
) -> None:
    fake_kubelet.intercept = HoldFirstTrain()
    gpu_node(gpu_nodes, fake_kubelet, f"{namespace}-gpu", namespace)
    apply(control_plane, namespace, small_job("gone", namespace))

    def in_flight() -> dict[str, Any] | None:
        cost = (get_dj(api, namespace, "gone").get("status") or {}).get("cost") or {}
        return next((r for r in cost.get("runs") or [] if r["stage"] == "training"), None)

    entry: dict[str, Any] = wait_for(in_flight, timeout=180, interval=0.3, what="the train run seen running")
    assert entry["hourlyCost"] == HOURLY and entry["candidate"] == "tiny-a"
    started = _time(entry["startedAt"])
    (first,) = stage_jobs(api, namespace, "gone", stage="train")
    assert first["metadata"]["uid"] == entry["run"]
    # Let the pod run a few seconds of node time (measured, not slept on: the charge covers what it ran).
    wait_for(
        lambda: (datetime.now(UTC) - started).total_seconds() >= 3,
        timeout=60,
        interval=0.2,
        what="the train pod to have run",
    )
    deleted = datetime.now(UTC)
    path = f"/apis/batch/v1/namespaces/{namespace}/jobs/{first['metadata']['name']}"
    rest(api, "DELETE", path, body={"propagationPolicy": "Background"})

    def finished() -> dict[str, Any] | None:
        dj = get_dj(api, namespace, "gone")
        phase = (dj.get("status") or {}).get("phase")
        assert phase != "Failed", dj["status"]
        return dj if phase == "Succeeded" else None

    dj: dict[str, Any] = wait_for(finished, timeout=180, interval=0.3, what="the job to succeed")
    seen = datetime.now(UTC)
    assert condition(dj, "Trained")["status"] == "True"
    (second,) = stage_jobs(api, namespace, "gone", stage="train")
    assert second["metadata"]["uid"] != first["metadata"]["uid"]  # another run trained the student

    cost = dj["status"]["cost"]
    training = next(e for e in cost["charges"] if e["stage"] == "training")
    # The first run: from its start to when the operator saw its Job gone, which is after the delete and
    # before the job succeeded (1 s either side: the pod's start has second precision).
    low = (deleted - started).total_seconds() - 1
    high = (seen - started).total_seconds() + 1
    print(
        f"training charged {training['nodeSeconds']} s ({low:.0f}..{high:.0f} s + {SECOND_RUN} s expected), "
        f"{training['usd']} USD"
    )
    # The second run: the 1 s its program reports (its pod ended the second it started).
    assert low <= training["nodeSeconds"] - SECOND_RUN <= high, (training, started, deleted, seen)
    assert training["usd"] == pytest.approx(training["nodeSeconds"] / 3600 * HOURLY, abs=1e-5)
    assert not cost.get("runs")  # nothing left to charge
    # Charged once: once the status has stopped changing, the charge is what it was.
    assert_settled(api, namespace, "gone")
    again = get_dj(api, namespace, "gone")["status"]["cost"]
    assert next(e for e in again["charges"] if e["stage"] == "training") == training
    assert again["spentUsd"] == cost["spentUsd"]
