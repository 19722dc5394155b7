"""Charging GPU runs whose Job goes before their stage charges them (issue 15, defect 10: "charge
everything").

A stage Job can be deleted by hand, evicted, garbage-collected, or cancelled by the operator (suspend, a
lost node) before it finishes; the stage then starts another run, and the node time the first one used
must still be charged, once. The executor here is a script: each test sets what every run reports at
each moment (its identity, when it started and ended) and drives ``reconcile`` as the operator's timer
does. Every expected figure is computed by hand at the node's 0.5 USD per hour.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from stratos.api.status import DistillationJobStatus
from stratos.contracts.runs import EndpointState, ProbeOutcome, RunStatus, StageRun
from stratos.kube.views import with_pod_time
from stratos.pipeline.machine import reconcile
from stratos.pipeline.status_patch import status_patch
from support.jobs import NOW, conditions, job, node

NODES = [node("gpu", "NVIDIA-L4", 0.5, 10)]  # 0.5 USD/h
STUDENTS = [
    {"name": "a", "model": {"uri": "/models/a", "parameters": 1.0e8}},
    {"name": "b", "model": {"uri": "/models/b", "parameters": 2.0e8}},
]
HOURLY = 0.5


def usd(seconds: float) -> Any:
    return pytest.approx(seconds / 3600 * HOURLY, abs=1e-6)


def at(minutes: float) -> datetime:
    return NOW + timedelta(minutes=minutes)


def running(run_id: str, started: datetime, now: datetime) -> RunStatus:
    seconds = (now - started).total_seconds()
    return RunStatus("Running", message="pod running", seconds=seconds, attempts=1, run_id=run_id,
                     started_at=started)  # fmt: skip


def finished(run_id: str, started: datetime, ended: datetime, **result: Any) -> RunStatus:
    seconds = (ended - started).total_seconds()
    return RunStatus("Succeeded", result={"ok": True, **result}, seconds=seconds, attempts=1, run_id=run_id,
                     started_at=started, ended_at=ended)  # fmt: skip


def created(run_id: str) -> RunStatus:
    return RunStatus("Pending", message="created Job", run_id=run_id)


class Script:
    """Stage runs answer what ``live[(stage, candidate)]`` says, else as a run that finished at once."""

    storage_root = "/data"

    def __init__(self) -> None:
        self.live: dict[tuple[str, str], RunStatus] = {}
        self.cancelled = 0

    def storage_error(self, spec: Any) -> str | None:
        return None

    def cancel_runs(self) -> None:
        self.cancelled += 1

    def ensure(self, run: StageRun, spec: Any) -> RunStatus:
        scripted = self.live.get((run.stage, run.candidate or ""))
        if scripted is not None:
            return scripted
        results: dict[str, dict[str, Any]] = {
            "teacher-eval": {"accuracy": 0.9, "samples": 100, "correct": 90, "costUSD": 0.0},
            "student-probe": {"accuracy": 0.7},
            "synthesize": {"kept": 40, "real": 30, "synthetic": 10, "costUSD": 0.0},
            "train": {"steps": 10, "seconds": 1.0},
            "evaluate": {"accuracy": 0.9, "samples": 10, "correct": 9},
        }
        return RunStatus("Succeeded", result={"ok": True, **results[run.stage]})

    def ensure_endpoint(self, request: Any, spec: Any) -> EndpointState:
        return EndpointState("Pending", message="not yet")

    def remove_endpoint(self) -> None:
        pass

    def probe_endpoint(self, url: str, model: str) -> ProbeOutcome:
        return ProbeOutcome(ok=False)


def pipeline(**spec: Any) -> dict[str, Any]:
    teachers = [{"name": "t1", "endpoint": {"baseURL": "http://teacher:8000/v1", "model": "m"},
                 "costPerMillionTokens": 0.0}]  # fmt: skip
    spec.setdefault("requirements", {"minAccuracy": 0.5})
    return job(students=STUDENTS, teachers=teachers, servers={"costWindow": 0.2, "rule": "paper"}, **spec)


def tick(body: dict[str, Any], script: Script, now: datetime, *, times: int = 3) -> None:
    """Reconcile ``times`` times at ``now``: a repeated reconcile must change nothing more."""
    for _ in range(times):
        out = reconcile(body, nodes=NODES, executor=script, now=now)
        assert out.error is None, out.error
        body["status"] = out.status
    DistillationJobStatus.model_validate(body["status"])


def charge(body: dict[str, Any], stage: str, candidate: str | None) -> dict[str, Any]:
    charges = body["status"]["cost"].get("charges", [])
    return next((e for e in charges if (e["stage"], e.get("candidate")) == (stage, candidate)), {})


def in_flight(body: dict[str, Any]) -> list[dict[str, Any]]:
    return list(body["status"]["cost"].get("runs", []))


def test_a_train_job_deleted_mid_run_is_charged_its_node_time_once() -> None:
    script, body = Script(), pipeline()
    script.live[("train", "a")] = running("job-1", NOW, NOW)
    tick(body, script, NOW)
    assert body["status"]["stage"] == "Train"
    assert in_flight(body) == [{"stage": "training", "candidate": "a", "run": "job-1",
                                "startedAt": "2026-11-22T12:00:00Z", "hourlyCost": 0.5}]  # fmt: skip
    assert charge(body, "training", "a") == {}
    spent = body["status"]["cost"]["spentUsd"]

    # Ten minutes in, the Job is deleted; the stage makes another (another uid): the first run's ten
    # minutes are charged (600 s x 0.5 USD/h = 0.083333 USD), and again reconciling adds nothing.
    script.live[("train", "a")] = created("job-2")
    tick(body, script, at(10))
    training = charge(body, "training", "a")
    assert (training["nodeSeconds"], training["usd"]) == (600.0, usd(600))
    assert body["status"]["cost"]["spentUsd"] == pytest.approx(spent + 600 / 3600 * HOURLY, abs=1e-6)
    assert in_flight(body) == []

    # The new run starts at 11 minutes and finishes at 20 (540 s of pods): 600 + 540 s charged in all.
    script.live[("train", "a")] = running("job-2", at(11), at(12))
    tick(body, script, at(12))
    assert [e["run"] for e in in_flight(body)] == ["job-2"]
    script.live[("train", "a")] = finished("job-2", at(11), at(20), steps=10, seconds=500.0)
    tick(body, script, at(20))
    training = charge(body, "training", "a")
    assert (training["nodeSeconds"], training["usd"]) == (1140.0, usd(1140))
    assert conditions(body["status"])["Trained"]["status"] == "True" and in_flight(body) == []
    assert body["status"]["cost"]["spentUsd"] == pytest.approx(spent + 1140 / 3600 * HOURLY, abs=1e-6)
    tick(body, script, at(30))
    assert charge(body, "training", "a")["nodeSeconds"] == 1140.0


def test_a_suspended_job_is_charged_until_its_runs_were_stopped_not_while_it_rests() -> None:
    script, body = Script(), pipeline()
    script.live[("train", "a")] = running("job-1", NOW, NOW)
    tick(body, script, NOW)
    # Suspended at 15 minutes: the run is stopped and its 900 s are charged, once, however long it rests.
    body["spec"]["suspend"] = True
    tick(body, script, at(15))
    assert script.cancelled >= 1 and body["status"]["phase"] == "Suspended"
    assert charge(body, "training", "a")["nodeSeconds"] == 900.0
    assert in_flight(body)[0]["endedAt"] == "2026-11-22T12:15:00Z"
    assert in_flight(body)[0]["chargedSeconds"] == 900.0
    tick(body, script, at(60))
    assert charge(body, "training", "a")["nodeSeconds"] == 900.0
    # Resumed two hours later: the old Job is on its way out (no identity), then another run starts.
    body["spec"]["suspend"] = False
    script.live[("train", "a")] = RunStatus("Pending", message="waiting for the previous Job")
    tick(body, script, at(120))
    assert charge(body, "training", "a")["nodeSeconds"] == 900.0
    script.live[("train", "a")] = created("job-2")
    tick(body, script, at(121))
    assert charge(body, "training", "a")["nodeSeconds"] == 900.0 and in_flight(body) == []
    script.live[("train", "a")] = finished("job-2", at(122), at(132), steps=10, seconds=500.0)
    tick(body, script, at(132))
    training = charge(body, "training", "a")
    assert (training["nodeSeconds"], training["usd"]) == (1500.0, usd(1500))  # 900 + 600


def test_a_run_that_finished_as_it_was_cancelled_is_charged_only_the_rest() -> None:
    script, body = Script(), pipeline()
    script.live[("train", "a")] = running("job-1", NOW, NOW)
    tick(body, script, NOW)
    body["spec"]["suspend"] = True
    tick(body, script, at(15))  # 900 s charged when it was stopped
    # It had finished after all (1,000 s of pods): charged 100 s more, 1,000 s in all.
    body["spec"]["suspend"] = False
    script.live[("train", "a")] = finished("job-1", NOW, NOW + timedelta(seconds=1000), steps=10, seconds=1.0)
    tick(body, script, at(16))
    training = charge(body, "training", "a")
    assert (training["nodeSeconds"], training["usd"]) == (1000.0, usd(1000))
    assert in_flight(body) == []


def test_a_finished_probe_whose_job_goes_before_it_is_charged_is_charged_to_its_end() -> None:
    script, body = Script(), pipeline()
    # Probe a finished in 100 s; probe b still runs, so neither is charged yet.
    script.live[("student-probe", "a")] = finished("pa-1", NOW, NOW + timedelta(seconds=100), accuracy=0.7)
    script.live[("student-probe", "b")] = running("pb-1", NOW, at(1))
    tick(body, script, at(1))
    assert body["status"]["stage"] == "SelectStudent"
    runs = {e["candidate"]: e for e in in_flight(body)}
    assert runs["a"]["endedAt"] == "2026-11-22T12:01:40Z" and "endedAt" not in runs["b"]
    # Half an hour later probe a's Job is gone and another is made: a is charged its 100 s, not 30 min.
    script.live[("student-probe", "a")] = created("pa-2")
    tick(body, script, at(30))
    probe_a = charge(body, "probes", "a")
    assert (probe_a["nodeSeconds"], probe_a["usd"]) == (100.0, usd(100))
    # Both finish: a's second run 60 s, b 2,400 s; a 160 s in all.
    script.live[("student-probe", "a")] = finished("pa-2", at(31), at(32), accuracy=0.7)
    script.live[("student-probe", "b")] = finished("pb-1", NOW, at(40), accuracy=0.7)
    tick(body, script, at(40))
    assert body["status"]["stage"] != "SelectStudent"
    assert charge(body, "probes", "a")["nodeSeconds"] == 160.0
    assert (charge(body, "probes", "b")["nodeSeconds"], charge(body, "probes", "b")["usd"]) == (
        2400.0,
        usd(2400),
    )
    assert in_flight(body) == []


def test_a_run_that_never_started_is_not_charged_when_its_job_goes() -> None:
    script, body = Script(), pipeline()
    script.live[("train", "a")] = created("job-1")
    tick(body, script, NOW)
    script.live[("train", "a")] = created("job-2")
    tick(body, script, at(30))
    assert charge(body, "training", "a") == {} and in_flight(body) == []


def test_a_jobs_pods_say_when_the_run_started_ended_and_what_each_attempt_reported() -> None:
    def pod(name: str, created: str, state: dict[str, Any]) -> dict[str, Any]:
        return {"name": name, "creationTimestamp": created, "containerStatuses": [{"state": state}]}

    report = '{"ok": false, "error": "boom", "costUsd": 0.5}'
    first = {"startedAt": "2026-11-22T12:00:10Z", "finishedAt": "2026-11-22T12:01:40Z", "message": report}
    second = {
        "startedAt": "2026-11-22T12:02:10Z",
        "finishedAt": "2026-11-22T12:05:00Z",
        "message": "not json",
    }
    failed = pod("p1", "2026-11-22T12:00:00Z", {"terminated": first})
    done = pod("p2", "2026-11-22T12:02:00Z", {"terminated": second})
    run = with_pod_time(RunStatus("Failed"), [done, failed], at(6))
    assert (run.started_at, run.ended_at) == (NOW + timedelta(seconds=10), at(5))
    assert run.seconds == 90 + 170 and run.attempts == 2
    assert run.reports == ({"ok": False, "error": "boom", "costUsd": 0.5},)
    # While an attempt runs, the run has not ended.
    live = pod("p3", "2026-11-22T12:06:00Z", {"running": {"startedAt": "2026-11-22T12:06:05Z"}})
    assert with_pod_time(RunStatus("Running"), [failed, live], at(7)).ended_at is None


# ------------------------------------------------------------------ synthesis: what failed runs paid for


def failure(cost: float, prompt: int, completion: int, kind: str = "TeacherUnavailable") -> dict[str, Any]:
    """A synthesize attempt's failure result: what every run of the stage spent so far."""
    return {"ok": False, "error": "boom", "kind": kind, "costUsd": cost, "promptTokens": prompt,
            "completionTokens": completion}  # fmt: skip


def synthesis_config(script: Script) -> dict[str, Any]:
    return dict(script.started[-1].config)


class Recording(Script):
    def __init__(self) -> None:
        super().__init__()
        self.started: list[StageRun] = []

    def ensure(self, run: StageRun, spec: Any) -> RunStatus:
        if run.stage == "synthesize":
            self.started.append(run)
        return super().ensure(run, spec)


def test_a_failed_synthesis_is_charged_what_its_failure_result_says_it_spent_once() -> None:
    script, body = Recording(), pipeline()
    script.live[("synthesize", "")] = RunStatus(
        "Failed", message="pod exited 1", reports=(failure(0.3, 700, 300),)
    )
    tick(body, script, NOW)
    assert conditions(body["status"])["Failed"]["reason"] == "SynthesisFailed"
    synthesis = charge(body, "synthesis", None)
    assert (synthesis["usd"], synthesis["tokens"]) == (0.3, 1000)
    assert body["status"]["cost"]["teacherTokens"] == 1000
    tick(body, script, at(5))
    assert charge(body, "synthesis", None)["usd"] == 0.3


def test_a_retried_synthesis_is_charged_its_failed_attempt_at_once_and_the_total_once() -> None:
    script, body = Recording(), pipeline(requirements={"minAccuracy": 0.5, "budget": 5.0})
    # The first pod was terminated having spent 0.2 USD; the Job's second pod runs.
    terminated = failure(0.2, 600, 400, kind="Terminated")
    script.live[("synthesize", "")] = RunStatus("Running", message="pod running", reports=(terminated,))
    tick(body, script, NOW)
    assert body["status"]["stage"] == "Synthesize"
    assert charge(body, "synthesis", None)["usd"] == 0.2
    # The Job goes too; its successor is given the same cap (the budget less what other stages spent):
    # its spend ledger already counts the 0.2 USD, so it is not taken off twice.
    cap = synthesis_config(script)["budgetUsd"]
    assert cap == 5.0  # nothing else cost anything here
    script.live[("synthesize", "")] = created("synth-2")
    tick(body, script, at(1))
    assert synthesis_config(script)["budgetUsd"] == cap
    # It succeeds, reporting 0.5 USD for every run together: 0.5 is charged in all, not 0.7.
    done = {"ok": True, "kept": 40, "real": 30, "synthetic": 10, "costUsd": 0.5, "promptTokens": 1500,
            "completionTokens": 1000}  # fmt: skip
    script.live[("synthesize", "")] = RunStatus("Succeeded", result=done, reports=(done,))
    tick(body, script, at(2))
    assert body["status"]["stage"] != "Synthesize"
    synthesis = charge(body, "synthesis", None)
    assert (synthesis["usd"], synthesis["tokens"]) == (0.5, 2500)
    others = sum(e["usd"] for e in body["status"]["cost"]["charges"] if e["stage"] != "synthesis")
    assert body["status"]["cost"]["spentUsd"] == pytest.approx(0.5 + others, abs=1e-6)


def test_spend_a_failed_synthesis_attempt_reports_past_the_budget_fails_the_job_budget_exceeded() -> None:
    script, body = Recording(), pipeline(requirements={"minAccuracy": 0.5, "budget": 1.0})
    # An attempt reports 1.5 USD (say its image predates the cap) while the Job retries it.
    script.live[("synthesize", "")] = RunStatus(
        "Running", message="pod running", reports=(failure(1.5, 9, 1),)
    )
    tick(body, script, NOW)
    failed = conditions(body["status"])["Failed"]
    assert failed["reason"] == "BudgetExceeded"
    assert failed["message"] == "spent 1.50 USD would exceed the budget of 1.00 USD"
    assert charge(body, "synthesis", None)["usd"] == 1.5


def test_the_status_patch_removes_what_a_changed_object_no_longer_has() -> None:
    # A JSON merge patch merges objects: a charged run leaving status.cost.runs (or the serving clock
    # stopping) must be sent as a deletion, or the stored status keeps it and it is charged again.
    old = {
        "cost": {"spentUsd": 1.0, "runs": [{"run": "job-1"}], "servingChargedUntil": "x"},
        "phase": "Training",
    }
    new = {"cost": {"spentUsd": 1.5}, "phase": "Training"}
    patch = status_patch(old, new)
    assert patch == {"cost": {"spentUsd": 1.5, "runs": None, "servingChargedUntil": None}}
    assert merge(old, patch) == new
    assert status_patch(new, new) == {}


def merge(target: Any, patch: Any) -> Any:
    """RFC 7386, as the API server applies a merge patch."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge(out.get(key), value)
    return out


def test_the_kube_executor_names_each_run_by_its_jobs_uid_and_keeps_an_earlier_jobs_reports() -> None:
    from stratos.api.spec import DistillationJobSpec
    from stratos.controller.executor import KubeExecutor
    from stratos.kube.config import OperatorConfig

    body = job()
    key = ("u-1", "synthesize", "")
    spent = '{"ok": false, "error": "terminated by signal 15", "kind": "Terminated", "costUsd": 0.2}'
    ended = {"startedAt": "2026-11-22T12:00:01Z", "finishedAt": "2026-11-22T12:05:00Z", "message": spent}
    old_pod = {"name": "old", "jobUid": "job-1", "phase": "Failed", "creationTimestamp": ended["startedAt"],
               "containerStatuses": [{"state": {"terminated": ended}}]}  # fmt: skip
    running_since = {"running": {"startedAt": "2026-11-22T12:06:01Z"}}
    new_pod = {"name": "new", "jobUid": "job-2", "phase": "Running", "creationTimestamp": "2026-11-22T12:06Z",
               "containerStatuses": [{"state": running_since}]}  # fmt: skip
    live = {"name": "dj1-synthesize", "uid": "job-2", "conditions": [], "backoffLimit": 0}
    spec = DistillationJobSpec.model_validate(body["spec"])
    executor = KubeExecutor(body, OperatorConfig(), None, {key: [live]}, {key: [old_pod, new_pod]})  # type: ignore[arg-type]
    run = StageRun("synthesize", "stratos.workloads.synthesize", {})
    state = executor.ensure(run, spec)
    assert (state.state, state.run_id) == ("Running", "job-2")
    assert state.started_at == NOW + timedelta(minutes=6, seconds=1) and state.ended_at is None
    assert state.reports == (
        {"ok": False, "error": "terminated by signal 15", "kind": "Terminated", "costUsd": 0.2},
    )
    # A Job on its way out (cancelled) is no run to charge: it has no identity.
    gone = KubeExecutor(body, OperatorConfig(), None, {key: [{**live, "deleting": True}]}, {})  # type: ignore[arg-type]
    assert gone.ensure(run, spec).run_id is None


def test_a_job_that_fails_stops_its_running_runs_and_charges_them_until_then() -> None:
    """Failed is final: a run still going when the job fails (here the budget, lowered while a student
    trains, is exceeded by what was spent) is stopped in that reconcile and charged until then, once."""
    script, body = Script(), pipeline(requirements={"minAccuracy": 0.5, "budget": 100})
    for student in ("a", "b"):  # two probes of 600 s: 1,200 s x 0.5 USD/h = 0.166667 USD spent
        script.live[("student-probe", student)] = finished(f"p{student}", NOW, at(10), accuracy=0.7)
    script.live[("train", "a")] = running("job-1", NOW, NOW)
    tick(body, script, NOW)
    assert body["status"]["stage"] == "Train" and script.cancelled == 0
    assert body["status"]["cost"]["spentUsd"] == usd(1200)
    body["spec"]["requirements"]["budget"] = 0.1
    script.live[("train", "a")] = running("job-1", NOW, at(30))
    tick(body, script, at(30))
    assert body["status"]["stage"] == "Failed"
    assert conditions(body["status"])["Failed"]["reason"] == "BudgetExceeded"
    assert script.cancelled == 1  # on the transition only: the Failed job then stays quiet
    training = charge(body, "training", "a")
    assert (training["nodeSeconds"], training["usd"]) == (1800.0, usd(1800))
    tick(body, script, at(90))
    assert script.cancelled == 1 and charge(body, "training", "a")["nodeSeconds"] == 1800.0


def test_the_job_suspended_for_a_pod_that_never_started_is_kept_when_the_failure_cancels_the_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The stuck run's verdict fails the job in the same reconcile that suspends its Job; the cache has
    not seen the suspension yet, so the cancel must know it from the executor itself, or the Job (kept
    to show why it never started) is deleted. Another unfinished Job of the job is deleted."""
    from stratos.api.spec import DistillationJobSpec
    from stratos.controller import executor as ex
    from stratos.kube.config import OperatorConfig

    calls: list[tuple[str, str]] = []

    class Batch:
        def __init__(self, api: Any) -> None:
            pass

        def patch_namespaced_job(self, name: str, namespace: str, body: Any) -> None:
            calls.append(("patch", name))

        def delete_namespaced_job(self, name: str, namespace: str, **_: Any) -> None:
            calls.append(("delete", name))

    monkeypatch.setattr(ex.client, "BatchV1Api", Batch)
    body = job()
    spec = DistillationJobSpec.model_validate(body["spec"])
    stuck_key, other_key = ("u-1", "teacher-eval", "t1"), ("u-1", "teacher-eval", "t2")
    stuck = {
        "name": "stuck",
        "uid": "j1",
        "created": "2026-11-22T11:00:00Z",
        "conditions": [],
        "backoffLimit": 0,
    }
    other = {
        "name": "other",
        "uid": "j2",
        "created": "2026-11-22T11:59:00Z",
        "conditions": [],
        "backoffLimit": 0,
    }
    pulling = {"waiting": {"reason": "ImagePullBackOff", "message": "no"}}
    waiting = {"name": "p1", "jobUid": "j1", "phase": "Pending", "creationTimestamp": "2026-11-22T11:00:00Z",
               "containerStatuses": [{"state": pulling}]}  # fmt: skip
    executor = ex.KubeExecutor(body, OperatorConfig(), None, {stuck_key: [stuck], other_key: [other]},  # type: ignore[arg-type]
                               {stuck_key: [waiting]})  # fmt: skip
    state = executor.ensure(StageRun("teacher-eval", "stratos.workloads.teacher_eval", {}, "t1"), spec)
    assert state.state == "Failed" and "not started within startTimeout" in (state.message or "")
    executor.cancel_runs()
    assert calls == [("patch", "stuck"), ("delete", "other")]
