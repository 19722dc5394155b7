"""Per-DistillationJob metrics: values computed from a status against hand-computed expectations, and
what a standby (kopf peering) exports."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from stratos.controller import metrics
from stratos.controller.metrics import (
    JOB_METRIC_NAMES,
    JobMetrics,
    JobView,
    PeeringWatch,
    job_metrics,
    stage_times,
)

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def at(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def cond(ctype: str, status: str, seconds: float, reason: str = "R") -> dict[str, Any]:
    return {
        "type": ctype,
        "status": status,
        "reason": reason,
        "message": "",
        "lastTransitionTime": at(seconds),
    }


def view(status: dict[str, Any], *, generation: int = 1, budget: float | None = 10.0) -> JobView:
    body: dict[str, Any] = {
        "metadata": {
            "namespace": "team-a",
            "name": "mahjong",
            "uid": "u-1",
            "generation": generation,
            "creationTimestamp": at(0),
        },
        "spec": {"requirements": {"budget": budget} if budget is not None else {}},
    }
    return JobView.of(body, status)


TRAINING_AGAIN = {
    "phase": "Training",
    "stage": "Train",
    "observedGeneration": 1,
    "conditions": [
        cond("ServerSelected", "True", 2),
        cond("TeacherSelected", "True", 10),
        cond("StudentSelected", "True", 40),
        cond("DataReady", "True", 100),
        # The first student trained (True at 200), missed minAccuracy at 260; the next one trains
        # since 270: Trained went Unknown then.
        cond("Trained", "Unknown", 270),
        cond("Evaluated", "False", 260, "TryingNextStudent"),
        cond("Ready", "Unknown", 2, "Training"),
    ],
    "server": {"node": "n1", "gpu": {"model": "L4", "count": 1}},
    "teacher": {"selected": "prog"},
    "student": {"selected": "tiny-a"},
    "strategy": {"selected": "injection", "algorithm": "sft-lora"},
    "cost": {"teacherTokens": 1234, "spentUsd": 9.5, "estimateUsd": 12.0, "gpuHours": 0.25},
    "training": {"student": "tiny-a", "steps": 40, "durationSeconds": 16.0},
    "evaluation": {"student": "tiny-a", "accuracy": 0.4},
}


def test_stage_times_from_condition_transitions() -> None:
    done, running = stage_times(view(TRAINING_AGAIN), now=T0.timestamp() + 300)
    assert done == {"SelectServer": 2, "EvaluateTeachers": 8, "SelectStudent": 30, "Synthesize": 60}
    assert running == ("Train", 30)  # since the next student's training began at 270


def test_stage_times_of_a_waiting_first_stage_and_of_a_resting_job() -> None:
    waiting = {
        "phase": "SelectingServer",
        "stage": "SelectServer",
        "conditions": [cond("ServerSelected", "False", 5, "NoFeasibleNode")],
    }
    # Waiting since its condition went False (the first tick, 5 s after creation).
    assert stage_times(view(waiting), now=T0.timestamp() + 65) == ({}, ("SelectServer", 60))
    serving = {
        "phase": "Serving",
        "stage": "Serving",
        "conditions": [
            cond("ServerSelected", "True", 1),
            cond("TeacherSelected", "True", 3),
            cond("StudentSelected", "True", 6),
            cond("DataReady", "True", 10),
            cond("Trained", "True", 15),
            cond("Evaluated", "True", 21),
            cond("Ready", "True", 28, "Serving"),
        ],
    }
    done, running = stage_times(view(serving), now=T0.timestamp() + 1000)
    assert running is None
    assert done == {
        "SelectServer": 1,
        "EvaluateTeachers": 2,
        "SelectStudent": 3,
        "Synthesize": 4,
        "Train": 5,
        "Evaluate": 6,
        "Deploy": 7,
    }


def samples(families: list[Any]) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    registry = CollectorRegistry()

    class Fixed:
        def collect(self) -> list[Any]:
            return families

    registry.register(Fixed())  # type: ignore[arg-type]
    parsed = text_string_to_metric_families(generate_latest(registry).decode())
    return {(s.name, frozenset(s.labels.items())): s.value for f in parsed for s in f.samples}


def value(found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return found[(name, frozenset({"namespace": "team-a", "name": "mahjong", **labels}.items()))]


def test_job_metrics_values() -> None:
    families = job_metrics([view(TRAINING_AGAIN, generation=2)], now=T0.timestamp() + 300)
    assert sorted(f.name for f in families) == sorted(JOB_METRIC_NAMES)
    found = samples(families)
    prefix = "stratos_distillationjob"
    info = {
        "uid": "u-1",
        "node": "n1",
        "gpu": "L4",
        "teacher": "prog",
        "student": "tiny-a",
        "strategy": "injection",
        "algorithm": "sft-lora",
    }
    assert value(found, f"{prefix}_info", **info) == 1
    assert value(found, f"{prefix}_created_timestamp_seconds") == T0.timestamp()
    phases = {k[1]: v for k, v in found.items() if k[0] == f"{prefix}_status_phase"}
    assert len(phases) == 12 and sum(phases.values()) == 1
    assert value(found, f"{prefix}_status_phase", phase="Training") == 1
    assert value(found, f"{prefix}_status_condition", condition="Trained", status="unknown") == 1
    assert value(found, f"{prefix}_status_condition", condition="Trained", status="true") == 0
    assert value(found, f"{prefix}_status_condition", condition="Ready", status="unknown") == 1
    # Conditions the job does not have yet are absent, not 0.
    assert not [k for k in found if k[0] == f"{prefix}_status_condition" and ("condition", "Failed") in k[1]]
    assert value(found, f"{prefix}_generation_lag") == 1
    assert value(found, f"{prefix}_stage_duration_seconds", stage="Synthesize") == 60
    assert value(found, f"{prefix}_stage_running_seconds", stage="Train") == 30
    assert value(found, f"{prefix}_teacher_tokens") == 1234
    assert value(found, f"{prefix}_cost_spent_usd") == 9.5
    assert value(found, f"{prefix}_cost_estimate_usd") == 12.0
    assert value(found, f"{prefix}_budget_usd") == 10.0
    assert value(found, f"{prefix}_gpu_hours") == 0.25
    assert value(found, f"{prefix}_training_steps") == 40
    assert value(found, f"{prefix}_training_steps_per_second") == 2.5
    assert value(found, f"{prefix}_evaluation_accuracy") == 0.4
    assert not [k for k in found if k[0].startswith(f"{prefix}_endpoint")]  # not deployed yet


def test_unlimited_budget_and_a_new_job_export_no_made_up_values() -> None:
    found = samples(job_metrics([view({}, budget=None)], now=T0.timestamp()))
    names = {name for name, _ in found}
    assert "stratos_distillationjob_budget_usd" not in names
    assert "stratos_distillationjob_cost_spent_usd" not in names
    assert value(found, "stratos_distillationjob_status_phase", phase="Pending") == 1


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def scrape(collector: JobMetrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return samples(list(collector.collect()))


def body(uid: str = "u-1") -> dict[str, Any]:
    return {"metadata": {"namespace": "team-a", "name": "mahjong", "uid": uid, "generation": 1}}


def test_a_standby_exports_only_that_it_stands_by() -> None:
    clock = Clock()
    collector = JobMetrics(stale_after=60, monotonic=clock)
    collector.observe(body(), TRAINING_AGAIN)
    assert scrape(collector) == {("stratos_operator_active", frozenset()): 0}
    collector.set_active(True)
    collector.observe(body(), TRAINING_AGAIN)
    found = scrape(collector)
    assert found[("stratos_operator_active", frozenset())] == 1
    assert found[("stratos_distillationjobs", frozenset({("phase", "Training")}))] == 1
    assert value(found, "stratos_distillationjob_status_phase", phase="Training") == 1
    # Paused in favour of a peer: everything it knew about jobs goes.
    collector.set_active(False)
    assert scrape(collector) == {("stratos_operator_active", frozenset()): 0}


def test_a_job_no_longer_reconciled_drops_out_and_a_deleted_one_at_once() -> None:
    clock = Clock()
    collector = JobMetrics(stale_after=60, monotonic=clock)
    collector.set_active(True)
    collector.observe(body("u-1"), TRAINING_AGAIN)
    collector.observe(body("u-2") | {"metadata": {**body("u-2")["metadata"], "name": "other"}}, {})
    clock.now += 30
    collector.observe(body("u-1"), TRAINING_AGAIN)
    clock.now += 45  # u-2 last seen 75 s ago
    assert [v.uid for v in collector.fresh()] == ["u-1"]
    collector.forget("u-1")
    found = scrape(collector)
    assert not [k for k in found if k[0].startswith("stratos_distillationjob_")]
    assert all(v == 0 for (name, _), v in found.items() if name == "stratos_distillationjobs")


def test_kopf_peering_records_switch_the_replica_between_active_and_standby() -> None:
    target = JobMetrics()
    peering_log = logging.getLogger(PeeringWatch.LOGGER)
    handlers, level = list(peering_log.handlers), peering_log.level
    try:
        metrics.track_activity(mandatory_peering=True, target=target)
        assert not target.active
        # kopf's own words (kopf/_core/engines/peering.py).
        peering_log.info(
            "Resuming operations after the pause. Conflicting operators with the same priority are gone."
        )
        assert target.active
        peering_log.info("Pausing operations in favour of [Peer(identity='older')].")
        assert not target.active
        metrics.track_activity(mandatory_peering=False, target=target)
        assert target.active  # standalone: acts from the start
    finally:
        peering_log.handlers[:] = handlers
        peering_log.setLevel(level)
