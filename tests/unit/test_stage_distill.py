"""Synthesize, Train, Evaluate through the machine: decision 5's fallback, the budget, failures."""

from __future__ import annotations

from typing import Any

import pytest

from stratos.api.status import DistillationJobStatus
from stratos.controller.machine import RunStatus, reconcile
from support.jobs import NOW, ScriptedExecutor, conditions, job, node, ok

STUDENTS = [
    {"name": "a", "model": {"uri": "/models/a", "parameters": 1.0e8}},
    {"name": "b", "model": {"uri": "/models/b", "parameters": 2.0e8}},
]
NODES = [node("gpu", "NVIDIA-L4", 0.5, 10)]


def done(**result: Any) -> RunStatus:
    return RunStatus("Succeeded", result={"ok": True, **result})


class StageExecutor(ScriptedExecutor):
    """Answers by (stage, candidate): probes, synthesis, training and evaluation per student."""

    def __init__(self, evaluations: dict[str, float], failing: set[str] | None = None) -> None:
        super().__init__({})
        self.evaluations = evaluations
        self.failing = failing or set()

    def ensure(self, run: Any, spec: Any) -> RunStatus:
        self.started.append(run)
        if run.stage in self.failing:
            return RunStatus("Failed", message=f"{run.stage} pod exited 137 (OOMKilled)")
        if run.stage == "teacher-eval":
            return ok(0.9)
        if run.stage == "student-probe":
            return done(accuracy={"a": 0.7, "b": 0.6}[run.candidate])
        if run.stage == "synthesize":
            tokens = {"promptTokens": 1000, "completionTokens": 3000, "costUSD": 0.5}
            counts = {"kept": 40, "real": 30, "synthetic": 10, "rejectedTotal": 2}
            return done(**tokens, **counts, rejected={"answer mismatch": 2}, strategy="alignment")
        if run.stage == "train":
            return done(steps=10, trainLoss={"first": 2.0, "last": 1.0}, seconds=3600.0)
        if run.stage == "evaluate":
            return done(accuracy=self.evaluations[run.candidate], samples=10, correct=0)
        raise AssertionError(run)


def run_job(executor: StageExecutor, **spec: Any) -> dict[str, Any]:
    body = job(students=STUDENTS, requirements={"minAccuracy": 0.5, **spec.pop("requirements", {})},
               serving={"enabled": False}, **spec)  # fmt: skip
    for _ in range(8):  # a few ticks, as the operator's timer would give
        out = reconcile(body, nodes=NODES, executor=executor, now=NOW)
        body["status"] = out.status
    DistillationJobStatus.model_validate(body["status"])
    return dict(body["status"])


def test_a_student_that_passes_ends_the_job_succeeded_with_serving_off() -> None:
    status = run_job(StageExecutor({"a": 0.8}))
    assert status["phase"] == "Succeeded"
    assert status["evaluation"]["student"] == "a" and status["evaluation"]["passed"] is True
    assert status["data"] == {"uri": "/data/jobs/dj1-u-1/data/train.jsonl", "samples": 40, "real": 30,
                              "synthetic": 10, "rejected": 2}  # fmt: skip
    assert status["training"]["adapterUri"] == "/data/jobs/dj1-u-1/train/a/adapter"
    # teacher-eval tokens 2000 + synthesis 4000; USD: 0.01 + 0.5 + one hour of training at 0.5 USD/h
    hours = next(c["trainingTimeHours"] for c in status["student"]["candidates"] if c["name"] == "a")
    pair = status["student"]["pair"]["cost"]
    assert pair["trainingUsd"] == pytest.approx(hours * 0.5, abs=1e-4)
    # at student selection: spent so far + the chosen pair's training, evaluation and synthesis
    estimate = 0.01 + pair["trainingUsd"] + pair["evaluationUsd"] + pair["synthesisUsd"]
    assert status["cost"]["estimateUsd"] == pytest.approx(estimate, abs=1e-3)
    assert {k: v for k, v in status["cost"].items() if k != "estimateUsd"} == {
        "teacherTokens": 6000,
        "spentUsd": 1.01,
        "gpuHours": 1.0,
    }
    assert conditions(status)["Ready"]["status"] == "True"


def test_a_student_below_the_bar_gives_way_to_the_next_in_the_ranking() -> None:
    executor = StageExecutor({"a": 0.2, "b": 0.55})
    status = run_job(executor)
    assert [r.candidate for r in executor.started if r.stage == "train"][:1] == ["a"]
    assert {r.candidate for r in executor.started if r.stage == "train"} == {"a", "b"}
    assert status["phase"] == "Succeeded" and status["evaluation"]["student"] == "b"
    attempts = [(a["student"], a["passed"]) for a in status["evaluation"]["attempts"]]
    assert attempts == [("a", False), ("b", True)]
    assert status["training"]["attempt"] == 2


def test_no_student_left_fails_with_accuracy_below_threshold() -> None:
    status = run_job(StageExecutor({"a": 0.2, "b": 0.1}))
    failed = conditions(status)["Failed"]
    assert status["phase"] == "Failed" and failed["reason"] == "AccuracyBelowThreshold"
    assert "no student candidate left" in failed["message"]


def test_the_budget_stops_the_job_before_training_it_cannot_pay_for() -> None:
    # Spent before training: 0.01 (teacher-eval) + 0.5 (synthesis); training a 1e8 model is cheap,
    # so a budget of 0.3 is already exceeded before the Train stage starts.
    executor = StageExecutor({"a": 0.9})
    status = run_job(executor, requirements={"budget": 0.3})
    assert conditions(status)["Failed"]["reason"] == "BudgetExceeded"
    assert not [r for r in executor.started if r.stage == "train"]
    assert "budget of 0.30 USD" in conditions(status)["Failed"]["message"]


def test_synthesis_is_capped_at_what_is_left_of_the_budget() -> None:
    """Issue 15, defect 10: the synthesize program gets the remaining budget as its cap (budgetUsd)."""
    executor = StageExecutor({"a": 0.9})
    run_job(executor, requirements={"budget": 0.3})
    (synthesis, *_) = [r for r in executor.started if r.stage == "synthesize"]
    # 0.3 budget - 0.01 spent on teacher evaluation (ok(): costUSD 0.01)
    assert synthesis.config["budgetUsd"] == 0.29
    unlimited = StageExecutor({"a": 0.9})
    run_job(unlimited)
    assert all("budgetUsd" not in r.config for r in unlimited.started if r.stage == "synthesize")


def test_a_failed_stage_surfaces_in_the_conditions_with_its_cause() -> None:
    status = run_job(StageExecutor({"a": 0.9}, failing={"train"}))
    assert conditions(status)["Trained"]["reason"] == "TrainingFailed"
    assert "OOMKilled" in conditions(status)["Failed"]["message"]


def test_a_node_lost_before_training_is_replaced_and_the_status_says_so() -> None:
    executor = StageExecutor({"a": 0.8})
    body = job(students=STUDENTS, requirements={"minAccuracy": 0.5}, serving={"enabled": False})
    two = [node("gpu", "NVIDIA-L4", 0.5, 10), node("spare", "NVIDIA-L4", 0.6, 12)]
    body["status"] = reconcile(body, nodes=two, executor=_until("synthesize", executor), now=NOW).status
    assert body["status"]["server"]["node"] == "gpu" and body["status"]["stage"] == "Train"
    out = reconcile(body, nodes=two[1:], executor=executor, now=NOW)  # "gpu" is gone
    assert out.status["server"]["node"] == "spare"
    assert [e.reason for e in out.events if e.type == "Warning"] == ["NodeLost"]
    assert "gpu no longer exists" in next(e.message for e in out.events if e.reason == "NodeLost")
    assert out.status["data"]["samples"] == 40  # data kept: synthesis does not depend on the node


def test_a_node_lost_during_training_fails_the_job_when_the_policy_says_fail() -> None:
    executor = StageExecutor({"a": 0.8})
    body = job(students=STUDENTS, requirements={"minAccuracy": 0.5}, serving={"enabled": False},
               servers={"nodeLossPolicy": "Fail"})  # fmt: skip
    body["status"] = reconcile(
        body, nodes=NODES, executor=_until("train", executor, running=True), now=NOW
    ).status
    assert body["status"]["training"]["student"] == "a"
    cordoned = [node("gpu", "NVIDIA-L4", 0.5, 10, unschedulable=True)]
    out = reconcile(body, nodes=cordoned, executor=executor, now=NOW)
    assert conditions(out.status)["Failed"]["reason"] == "NodeLost"
    assert "cordoned" in conditions(out.status)["Failed"]["message"]


def _until(stage: str, executor: StageExecutor, *, running: bool = False) -> StageExecutor:
    """The executor, answering Running from ``stage`` on (so the machine stops there)."""

    class Until(StageExecutor):
        def ensure(self, run: Any, spec: Any) -> RunStatus:
            order = ["teacher-eval", "student-probe", "synthesize", "train", "evaluate"]
            if order.index(run.stage) > order.index(stage) or (running and run.stage == stage):
                return RunStatus("Running", message="running")
            return executor.ensure(run, spec)

    return Until(executor.evaluations)
