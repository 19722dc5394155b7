"""The budget (issue 15, defect 10): estimates before every spending stage, charges for everything.

The arithmetic of ``stratos.decide.budget`` is checked against figures computed by hand; the machine
tests drive ``reconcile`` as the operator's timer does and check what started, what was refused with
which message, and what ``status.cost`` charged.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest

from stratos.api.status import DistillationJobStatus
from stratos.contracts.runs import EndpointState, ProbeOutcome, RunStatus, StageRun
from stratos.contracts.train import TrainConfig
from stratos.decide import budget
from stratos.kube.views import with_pod_time
from stratos.pipeline.machine import reconcile
from stratos.workloads.train import training_deadline
from support.jobs import NOW, conditions, job, node

NODES = [node("gpu", "NVIDIA-L4", 0.5, 10)]  # 0.5 USD/h
STUDENTS = [
    {"name": "a", "model": {"uri": "/models/a", "parameters": 1.0e8}},
    {"name": "b", "model": {"uri": "/models/b", "parameters": 2.0e8}},
]
T0 = NOW


# ------------------------------------------------------------------ the arithmetic, by hand


def test_teacher_evaluation_is_estimated_at_most_tokens_per_request_at_each_price() -> None:
    # Per request 512 prompt + 2048 completion = 2,560 tokens; 50 requests = 128,000 tokens per teacher;
    # at 5 and 1 USD per million tokens: 0.64 + 0.128 = 0.768 USD.
    est = budget.teacher_evaluation([("big", 5.0), ("small", 1.0)], sample_size=50, max_tokens=2048)
    assert est.usd == pytest.approx(0.768)
    assert est.stage == "teacher evaluation" and "512 prompt + 2048 completion" in est.basis


def test_synthesis_is_estimated_from_the_teachers_own_evaluation() -> None:
    # 10,000 samples x 1,500 tokens / yield 0.75 = 20M tokens at 2 USD per million = 40 USD.
    est = budget.synthesis(10_000, tokens_per_answer=1500, answer_yield=0.75, price=2.0)
    assert est.usd == pytest.approx(40.0)


def test_gpu_stages_are_estimated_in_node_time() -> None:
    # Evaluation: 60 s start-up + 100 x 256 tokens / 800 tokens/s = 92 s; at 2 USD/h = 0.051111 USD.
    est = budget.evaluation("s", samples=100, max_new_tokens=256, tokens_per_second=800, hourly_cost=2.0)
    assert est.usd == pytest.approx(92 / 3600 * 2.0) and est.candidate == "s"
    # Probes: 60 s and 150 s at 1.2 USD/h = 0.07 USD.
    rows = [("a", "n1", 1.2, 60.0), ("b", "n2", 1.2, 150.0)]
    assert budget.probes(rows).usd == pytest.approx(0.07)
    assert budget.training("s", hours=2.5, hourly_cost=3.0).usd == pytest.approx(7.5)
    assert budget.serving(expected_hours=24, hourly_cost=0.5).usd == pytest.approx(12.0)


def test_a_refusal_says_the_estimate_what_is_left_and_how_both_were_computed() -> None:
    est = budget.Estimate("synthesis", 40.0, "10000 samples x ...")
    assert budget.refusal(est, budget=None, spent=100.0) is None
    assert budget.refusal(est, budget=50.0, spent=10.0) is None  # 40 <= 50 - 10
    message = budget.refusal(est, budget=50.0, spent=10.5)
    assert message == (
        "synthesis would cost an estimated 40.0000 USD (10000 samples x ...), more than the 39.5000 USD "
        "left of the budget (budget 50.0000 USD - spent 10.5000 USD)"
    )
    assert budget.remaining(5.0, 7.0) == 0.0


def test_elapsed_time_counts_every_attempt_and_a_running_one_until_now() -> None:
    # A failed attempt of 100 s, a running one started 60 s ago, one that never started.
    intervals = [(T0, T0 + timedelta(seconds=100)), (T0 + timedelta(seconds=200), None), (None, None)]
    assert budget.elapsed_seconds(intervals, T0 + timedelta(seconds=260)) == 160.0


def test_serving_is_charged_in_steps_and_the_rest_when_it_ends() -> None:
    assert budget.serving_charge(T0, T0 + timedelta(seconds=299)) == 0.0
    assert budget.serving_charge(T0, T0 + timedelta(seconds=300)) == 300.0
    assert budget.serving_charge(T0, T0 + timedelta(seconds=42), final=True) == 42.0


def test_the_budget_is_crossed_by_one_charge_only() -> None:
    assert budget.crossed(1.0, 0.9, 1.1) and not budget.crossed(1.0, 1.1, 1.2)
    assert not budget.crossed(1.0, 0.5, 1.0) and not budget.crossed(None, 0.5, 9.0)


def test_max_seconds_is_measured_from_the_first_attempt() -> None:
    assert budget.seconds_left(3600, started_at=1000.0, now=1600.0) == 3000.0
    assert budget.seconds_left(3600, started_at=1000.0, now=900.0) == 3600.0  # a clock behind: no credit


def test_a_retried_train_pod_gets_what_is_left_since_the_first_attempt() -> None:
    started = time.time() - 1000
    config = TrainConfig.model_validate(
        {
            "algorithm": "sft-lora",
            "student": "s",
            "modelUri": "/m",
            "datasetPath": "/d.jsonl",
            "outputDir": "/o",
            "maxSeconds": 3600,
            "startedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        }
    )
    deadline = training_deadline(config, None)
    assert deadline is not None
    assert deadline - time.monotonic() == pytest.approx(2600, abs=5)
    # The time ledger's deadline wins when it is sooner.
    assert training_deadline(config, time.monotonic() + 100) == pytest.approx(time.monotonic() + 100, abs=5)


def test_a_stage_jobs_pod_time_covers_its_failed_attempt_and_its_running_one() -> None:
    failed = {
        "phase": "Failed",
        "containerStatuses": [
            {
                "state": {
                    "terminated": {"startedAt": "2026-11-22T12:00:00Z", "finishedAt": "2026-11-22T12:01:40Z"}
                }
            }
        ],
    }
    running = {
        "phase": "Running",
        "containerStatuses": [{"state": {"running": {"startedAt": "2026-11-22T12:03:20Z"}}}],
    }
    pending = {"phase": "Pending", "containerStatuses": []}
    run = with_pod_time(RunStatus("Running"), [failed, running, pending], T0 + timedelta(seconds=260))
    assert (run.seconds, run.attempts, run.state) == (160.0, 3, "Running")


# ------------------------------------------------------------------ through the machine


class Cluster:
    """Every stage run ends as a finished Job would, with ``seconds`` of pod time; the endpoint is ready."""

    storage_root = "/data"

    def __init__(self, *, failing: set[str] | None = None) -> None:
        self.started: list[StageRun] = []
        self.failing = failing or set()
        self.removed = 0

    def storage_error(self, spec: Any) -> str | None:
        return None

    def cancel_runs(self) -> None:
        pass

    def ensure(self, run: StageRun, spec: Any) -> RunStatus:
        self.started.append(run)
        if run.stage in self.failing:
            return RunStatus(
                "Failed", message="pod exited 137 (OOMKilled) (3 attempts)", seconds=500.0, attempts=3
            )
        results: dict[str, tuple[dict[str, Any], float]] = {
            "teacher-eval": (
                {
                    "accuracy": 0.9,
                    "samples": 100,
                    "correct": 90,
                    "promptTokens": 1000,
                    "completionTokens": 1000,
                    "costUSD": 0.02,
                },
                0.0,
            ),
            "student-probe": ({"accuracy": 0.7}, 120.0),
            "synthesize": (
                {"kept": 40, "real": 30, "synthetic": 10, "costUSD": 0.1, "strategy": "alignment"},
                0.0,
            ),
            "train": ({"steps": 10, "seconds": 600.0}, 720.0),
            "evaluate": ({"accuracy": 0.9, "samples": 10, "correct": 9}, 360.0),
        }
        result, seconds = results[run.stage]
        return RunStatus("Succeeded", result={"ok": True, **result}, seconds=seconds, attempts=1)

    def ensure_endpoint(self, request: Any, spec: Any) -> EndpointState:
        return EndpointState("Ready", url="http://dj1.ns:8000/v1")

    def remove_endpoint(self) -> None:
        self.removed += 1

    def probe_endpoint(self, url: str, model: str) -> ProbeOutcome:
        return ProbeOutcome(ok=True, latency_ms=10.0, tokens_per_second=50.0)


def pipeline(price: float = 10.0, **spec: Any) -> dict[str, Any]:
    spec.setdefault("servers", {"costWindow": 0.2, "rule": "paper"})
    teachers = [{"name": "t1", "endpoint": {"baseURL": "http://teacher:8000/v1", "model": "m"},
                 "costPerMillionTokens": price}]  # fmt: skip
    requirements = {"minAccuracy": 0.5, **spec.pop("requirements", {})}
    return job(students=STUDENTS, teachers=teachers, requirements=requirements, **spec)


def tick(body: dict[str, Any], cluster: Cluster, *, times: int = 10, now: Any = NOW) -> list[Any]:
    events = []
    for _ in range(times):
        out = reconcile(body, nodes=NODES, executor=cluster, now=now)
        body["status"] = out.status
        events += out.events
    DistillationJobStatus.model_validate(body["status"])
    return events


def test_teacher_evaluation_that_would_exceed_the_budget_never_starts() -> None:
    # 1 teacher x 10 samples x 2,560 tokens at 10 USD per million = 0.256 USD > 0.2.
    cluster, body = Cluster(), pipeline(requirements={"budget": 0.2})
    tick(body, cluster)
    failed = conditions(body["status"])["Failed"]
    assert failed["reason"] == "BudgetExceeded"
    assert failed["message"].startswith(
        "teacher evaluation would cost an estimated 0.2560 USD (1 teacher(s) x 10"
    )
    assert (
        "more than the 0.2000 USD left of the budget (budget 0.2000 USD - spent 0.0000 USD)"
        in failed["message"]
    )
    assert conditions(body["status"])["TeacherSelected"]["reason"] == "BudgetExceeded"
    assert not [r for r in cluster.started if r.stage == "teacher-eval"]


def test_synthesis_that_would_exceed_what_is_left_never_starts_and_gpu_time_so_far_is_charged() -> None:
    # Teacher evaluation: estimate 0.256 <= 1.0; charged 0.02 USD. Probes: 2 x 120 s at 0.5 USD/h =
    # 0.033333 USD. Left: 1.0 - 0.053333 = 0.946667. Synthesis: 10,000 samples x 20 tokens per answer /
    # yield 0.9 x 10 USD per million = 2.2222 USD > what is left: refused.
    cluster, body = Cluster(), pipeline(requirements={"budget": 1.0})
    tick(body, cluster)
    failed = conditions(body["status"])["Failed"]
    assert failed["reason"] == "BudgetExceeded" and failed["message"].startswith(
        "synthesis would cost an estimated 2.2222 USD (10000 samples x 20 tokens per answer / yield 0.90"
    )
    assert (
        "more than the 0.9467 USD left of the budget (budget 1.0000 USD - spent 0.0533 USD)"
        in failed["message"]
    )
    assert conditions(body["status"])["DataReady"]["reason"] == "BudgetExceeded"
    assert not [r for r in cluster.started if r.stage == "synthesize"]
    cost = body["status"]["cost"]
    assert cost["spentUsd"] == pytest.approx(0.02 + 240 / 3600 * 0.5, abs=1e-5)
    assert [(e["stage"], e.get("candidate"), e["usd"]) for e in cost["estimates"]] == [
        ("teacher evaluation", None, 0.256),
        ("probes", None, pytest.approx(cost["estimates"][1]["usd"])),
    ]
    assert cost["estimates"][0]["remainingUsd"] == 1.0


def test_every_stage_is_charged_and_serving_time_as_it_passes() -> None:
    cluster, body = Cluster(), pipeline(price=0.0, serving={"enabled": True, "expectedHours": 2})
    tick(body, cluster)
    assert body["status"]["phase"] == "Serving"
    cost = body["status"]["cost"]
    charged = {(e["stage"], e.get("candidate")): e for e in cost["charges"]}
    # Node time at 0.5 USD/h: probes 120 s each, training 720 s of pods (more than the program's 600 s),
    # evaluation 360 s. Serving is charged from the tick that asked for the endpoint.
    assert charged[("training", "a")]["nodeSeconds"] == 720.0
    assert charged[("training", "a")]["usd"] == pytest.approx(0.1)
    assert charged[("evaluation", "a")]["usd"] == pytest.approx(0.05)
    assert charged[("probes", "b")]["usd"] == pytest.approx(120 / 3600 * 0.5, abs=1e-6)
    assert ("serving", None) not in charged and cost["servingChargedUntil"] == "2026-11-22T12:00:00Z"
    assert [e["stage"] for e in cost["estimates"]][-1] == "serving"
    assert cost["estimates"][-1]["usd"] == 1.0  # serving.expectedHours 2 x 0.5 USD/h
    spent = cost["spentUsd"]
    # Four minutes later nothing is charged yet (steps of five); at ten minutes, ten minutes are.
    tick(body, cluster, times=1, now=NOW + timedelta(minutes=4))
    assert body["status"]["cost"]["spentUsd"] == spent
    tick(body, cluster, times=1, now=NOW + timedelta(minutes=10))
    serving = next(e for e in body["status"]["cost"]["charges"] if e["stage"] == "serving")
    assert (serving["nodeSeconds"], serving["usd"]) == (600.0, pytest.approx(600 / 3600 * 0.5, abs=1e-6))
    assert body["status"]["cost"]["spentUsd"] == pytest.approx(spent + 600 / 3600 * 0.5, abs=1e-5)
    # Serving switched off: the rest (one more minute) is charged and the clock stops.
    body["spec"]["serving"]["enabled"] = False
    tick(body, cluster, times=1, now=NOW + timedelta(minutes=11))
    serving = next(e for e in body["status"]["cost"]["charges"] if e["stage"] == "serving")
    assert serving["nodeSeconds"] == 660.0 and "servingChargedUntil" not in body["status"]["cost"]


def test_serving_past_the_budget_is_announced_once_and_keeps_serving() -> None:
    cluster, body = Cluster(), pipeline(price=0.0, requirements={"budget": 1.0})
    tick(body, cluster)
    assert body["status"]["phase"] == "Serving"
    spent = body["status"]["cost"]["spentUsd"]  # about 0.18 USD
    hours = (1.0 - spent) / 0.5 + 0.5  # half an hour past the budget
    events = tick(body, cluster, times=2, now=NOW + timedelta(hours=hours))
    assert [e.reason for e in events].count("BudgetExceeded") == 1
    assert body["status"]["phase"] == "Serving" and body["status"]["cost"]["spentUsd"] > 1.0
    later = tick(body, cluster, times=1, now=NOW + timedelta(hours=hours + 1))
    assert "BudgetExceeded" not in [e.reason for e in later]


def test_a_failed_training_is_charged_for_every_attempt() -> None:
    cluster, body = Cluster(failing={"train"}), pipeline(price=0.0)
    tick(body, cluster)
    assert conditions(body["status"])["Failed"]["reason"] == "TrainingFailed"
    charge = next(e for e in body["status"]["cost"]["charges"] if e["stage"] == "training")
    # 500 s of pods over three attempts at 0.5 USD/h.
    assert charge == {"stage": "training", "candidate": "a", "usd": pytest.approx(500 / 3600 * 0.5, abs=1e-6),
                      "nodeSeconds": 500.0, "attempts": 3}  # fmt: skip


def test_max_training_time_counts_from_the_first_attempt_whichever_tick_or_pod() -> None:
    class Training(Cluster):
        def ensure(self, run: StageRun, spec: Any) -> RunStatus:
            if run.stage == "train":
                self.started.append(run)
                return RunStatus("Running", message="pod running")
            return super().ensure(run, spec)

    cluster, body = Training(), pipeline(price=0.0)
    tick(body, cluster)
    assert body["status"]["training"]["startedAt"] == "2026-11-22T12:00:00Z"
    tick(body, cluster, times=2, now=NOW + timedelta(hours=1))
    assert body["status"]["training"]["startedAt"] == "2026-11-22T12:00:00Z"
    trains = [r for r in cluster.started if r.stage == "train"]
    assert {r.config["startedAt"] for r in trains} == {"2026-11-22T12:00:00Z"}
