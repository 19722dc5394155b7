"""Restart anywhere: the operator is killed (SIGKILL) at every phase of a real pipeline and started again;
the job still finishes, with no duplicated children and no lost or changed decision."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from stratos.local.teacher import ProgrammaticTeacher
from support.controlplane import ControlPlane, rest, wait_for
from support.health import StatusRecorder, collapse
from support.kubelet import FakeKubelet
from support.operator import OperatorProcess
from support.pipeline import pipeline_job, prepare

pytest_plugins = ["support.operator"]
pytestmark = pytest.mark.slow

DECISIONS = ("server", "teacher", "strategy", "student")


def test_killing_the_operator_at_every_phase_changes_nothing(
    operator: OperatorProcess,
    control_plane: ControlPlane,
    namespace: str,
    gpu_nodes: Callable[..., dict[str, Any]],
    fake_kubelet: FakeKubelet,
    bound_pvc: Callable[..., str],
    api: Any,
) -> None:
    prepare(namespace, gpu_nodes, fake_kubelet, bound_pvc)

    first_seen: dict[str, Any] = {}
    restarted_in: list[str] = []
    with ProgrammaticTeacher(accuracy=0.2) as teacher:
        job = pipeline_job("restart", namespace, teacher.base_url)
        control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(job))
        deadline = time.monotonic() + 600
        phase = None
        while time.monotonic() < deadline:
            dj = json.loads(
                control_plane.kubectl("get", "dj", "restart", "-n", namespace, "-o", "json").stdout
            )
            status = dj.get("status") or {}
            for block in DECISIONS:  # a decision, once written, never changes
                # Under the joint rule SelectServer writes only the shortlist; the node is decided with
                # the student, and from then on the block is final.
                decided = block in status and (block != "server" or "node" in status[block])
                if decided:
                    assert first_seen.setdefault(block, status[block]) == status[block], block
            if status.get("phase") in ("Succeeded", "Failed"):
                break
            if status.get("phase") != phase:
                phase = status.get("phase")
                restarted_in.append(str(phase))
                operator.restart(kill=True)
            time.sleep(0.5)
    assert status.get("phase") == "Succeeded", (status.get("message"), operator.log_tail())
    # Polling every 0.5 s catches most phases (a fast one may come and go between two polls).
    assert len(set(restarted_in)) >= 4, restarted_in

    jobs = rest(api, "GET", f"/apis/batch/v1/namespaces/{namespace}/jobs")["items"]
    names = [j["metadata"]["name"] for j in jobs]
    assert len(names) == len(set(names)) == 6, names  # one Job per stage run, none duplicated
    configmaps = rest(
        api, "GET", f"/api/v1/namespaces/{namespace}/configmaps", query={"labelSelector": "stratos.io/job"}
    )
    assert len(configmaps["items"]) == 6
    events = rest(api, "GET", f"/api/v1/namespaces/{namespace}/events")["items"]
    reasons = Counter(
        e["reason"]
        for e in events
        for _ in range(e.get("count", 1))
        if e["involvedObject"]["name"] == "restart"
    )
    for reason in ("NodeSelected", "TeacherSelected", "StrategySelected", "StudentSelected", "Trained"):
        assert reasons[reason] == 1, reasons  # announced once, however often the operator restarted


def test_suspend_stops_running_stages_and_resume_finishes_the_job(
    operator: OperatorProcess,
    control_plane: ControlPlane,
    namespace: str,
    gpu_nodes: Callable[..., dict[str, Any]],
    fake_kubelet: FakeKubelet,
    bound_pvc: Callable[..., str],
    api: Any,
) -> None:
    node = prepare(namespace, gpu_nodes, fake_kubelet, bound_pvc, serve_node=False)
    jobs_path = f"/apis/batch/v1/namespaces/{namespace}/jobs"

    def suspend(value: bool) -> None:
        patch = json.dumps({"spec": {"suspend": value}})
        control_plane.kubectl("patch", "dj", "pause", "-n", namespace, "--type", "merge", "-p", patch)

    with StatusRecorder(api, namespace, "pause") as recorder, ProgrammaticTeacher(accuracy=0.2) as teacher:
        job = pipeline_job("pause", namespace, teacher.base_url)
        control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(job))
        # No kubelet serves the node yet: the teacher-eval pod stays Pending, its Job unfinished.
        wait_for(lambda: rest(api, "GET", jobs_path)["items"], what="the teacher-eval Job")
        suspend(True)
        control_plane.kubectl(
            "wait", "--for=condition=Suspended", "dj/pause", "-n", namespace, "--timeout=60s"
        )
        wait_for(
            lambda: not rest(api, "GET", jobs_path)["items"], timeout=60, what="running stage Jobs removed"
        )
        time.sleep(2)
        dj = json.loads(control_plane.kubectl("get", "dj", "pause", "-n", namespace, "-o", "json").stdout)
        assert dj["status"]["phase"] == "Suspended" and not rest(api, "GET", jobs_path)["items"]

        suspend(False)
        fake_kubelet.add_node(node)
        control_plane.kubectl(
            "wait", "--for=jsonpath={.status.phase}=Succeeded", "dj/pause", "-n", namespace, "--timeout=600s",
            timeout=660,  # the whole pipeline runs after the resume: minutes on a loaded machine
        )  # fmt: skip
        wait_for(lambda: (recorder.latest_health() or {}).get("status") == "Healthy", what="Healthy")
    # Argo CD health of every version the operator wrote: suspended in between, nothing Degraded.
    healths = recorder.healths()
    expected = ["Progressing", "Suspended", "Progressing", "Healthy"]
    assert collapse(h["status"] for h in healths) == expected, healths
    recorder.agree()  # and Flux's healthCheckExprs say the same
    conditions = {c["type"]: c for c in json.loads(
        control_plane.kubectl("get", "dj", "pause", "-n", namespace, "-o", "json").stdout
    )["status"]["conditions"]}  # fmt: skip
    assert conditions["Suspended"]["status"] == "False" and conditions["Suspended"]["reason"] == "Resumed"


def test_the_budget_refuses_a_stage_whose_estimate_it_cannot_pay_for(
    operator: OperatorProcess,
    control_plane: ControlPlane,
    namespace: str,
    gpu_nodes: Callable[..., dict[str, Any]],
    fake_kubelet: FakeKubelet,
    bound_pvc: Callable[..., str],
    api: Any,
) -> None:
    prepare(namespace, gpu_nodes, fake_kubelet, bound_pvc)
    with StatusRecorder(api, namespace, "budget") as recorder, ProgrammaticTeacher(accuracy=0.2) as teacher:
        job = pipeline_job("budget", namespace, teacher.base_url)
        # USD: less than the teacher evaluation's estimate (6 samples x 2,560 tokens at 1 USD per million
        # tokens = 0.01536 USD), so it never starts and nothing is spent.
        job["spec"]["requirements"]["budget"] = 0.000001
        control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(job))
        control_plane.kubectl(
            "wait", "--for=condition=Failed", "dj/budget", "-n", namespace, "--timeout=180s"
        )
        wait_for(lambda: (recorder.latest_health() or {}).get("status") == "Degraded", what="Degraded")
    healths = recorder.healths()
    assert collapse(h["status"] for h in healths) == ["Progressing", "Degraded"], healths
    assert healths[-1]["message"].startswith("BudgetExceeded: teacher evaluation would cost"), healths[-1]
    recorder.agree()
    status = json.loads(control_plane.kubectl("get", "dj", "budget", "-n", namespace, "-o", "json").stdout)[
        "status"
    ]
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "BudgetExceeded", failed
    assert failed["message"].startswith("teacher evaluation would cost an estimated 0.0154 USD (1 teacher(s)")
    assert "left of the budget (budget 0.0000 USD - spent 0.0000 USD)" in failed["message"]
    assert not (status.get("cost") or {}).get("spentUsd")
    stages = {
        j["metadata"]["labels"]["stratos.io/stage"]
        for j in rest(api, "GET", f"/apis/batch/v1/namespaces/{namespace}/jobs")["items"]
    }
    assert stages == set()  # refused on its estimate: no stage Job was ever created


def _reasons(api: Any, namespace: str, name: str) -> Counter[str]:
    events = rest(api, "GET", f"/api/v1/namespaces/{namespace}/events")["items"]
    return Counter(
        e["reason"] for e in events for _ in range(e.get("count", 1)) if e["involvedObject"]["name"] == name
    )


def test_an_operator_stopped_between_a_decision_and_its_event_announces_it_once(
    operator: OperatorProcess,
    control_plane: ControlPlane,
    namespace: str,
    gpu_nodes: Callable[..., dict[str, Any]],
    fake_kubelet: FakeKubelet,
    bound_pvc: Callable[..., str],
    api: Any,
    tmp_path: Path,
) -> None:
    """The crash is injected at the exact point (STRATOS_CRASH_AT), not raced against a timer:
    first after the decision's status write and before its Event, then after the Event and before the
    status write that records it as posted."""
    prepare(namespace, gpu_nodes, fake_kubelet, bound_pvc)

    def dj() -> dict[str, Any]:
        return dict(
            json.loads(control_plane.kubectl("get", "dj", "crash", "-n", namespace, "-o", "json").stdout)
        )

    def crashing(point: str) -> OperatorProcess:
        env = {"STRATOS_CRASH_AT": point}
        return OperatorProcess(operator.kubeconfig, tmp_path, interval=operator.interval, extra_env=env)

    operator.stop()
    try:
        with ProgrammaticTeacher(accuracy=0.2) as teacher:
            first = crashing("before-announce:TeacherSelected").start()
            job = pipeline_job("crash", namespace, teacher.base_url)
            control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(job))
            assert first.wait_exit(300) == 86, first.log_tail()
            status = dj()["status"]
            assert status["teacher"]["selected"] == "prog" and "strategy" in status  # recorded ...
            assert {"TeacherSelected", "StrategySelected"} <= {a["reason"] for a in status["announcements"]}
            assert _reasons(api, namespace, "crash")["TeacherSelected"] == 0  # ... and not announced yet

            second = crashing("after-announce:StudentSelected").start()
            assert second.wait_exit(300) == 86, second.log_tail()
            status = dj()["status"]
            assert "StudentSelected" in {a["reason"] for a in status.get("announcements", [])}
            assert _reasons(api, namespace, "crash")["StudentSelected"] == 1  # posted, not yet recorded so

            operator.start()
            wait_for(
                lambda: not dj()["status"].get("announcements"),
                timeout=120,
                what="every recorded announcement posted by the restarted operator",
            )
    finally:
        if operator.process is None or operator.process.poll() is not None:
            operator.start()
    reasons = _reasons(api, namespace, "crash")
    for reason in ("NodeSelected", "TeacherSelected", "StrategySelected", "StudentSelected"):
        assert reasons[reason] == 1, reasons  # once each, across two crashes at the worst moments
