"""Prometheus metrics of the operator, served on their own port (``STRATOS_METRICS_PORT``).

Operator-wide: reconcile and decision timings, reconcile errors, ``stratos_operator_active``.
Per DistillationJob (``stratos_distillationjob_*``, never ``*_job_*``, so they are not taken for
batch Jobs): an info series, phase and conditions, stage durations, teacher tokens, spend, training
throughput, evaluation and endpoint. They are computed at scrape time from the last status each
reconcile wrote, by a pure function (:func:`job_metrics`).

Under kopf peering only the replica that acts exports per-job series: a standby reports
``stratos_operator_active 0`` and nothing about any job (no zeros that would read as "no job is
failing"). A replica learns that it acts or waits from kopf's peering log records (kopf has no other
signal for it); as a second guard, a job that has not been reconciled for ``stale_after`` seconds
drops out, so a paused replica's memory never turns into series.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from prometheus_client import Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import REGISTRY, Collector

from stratos.api.status import PHASES
from stratos.pipeline import conditions as c
from stratos.pipeline.stages import Stage

DECISION_SECONDS = Histogram(
    "stratos_decision_duration_seconds",
    "Time spent in a decision function (server, teacher, student, strategy).",
    ["decision"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
RECONCILE_SECONDS = Histogram(
    "stratos_reconcile_duration_seconds",
    "Time one reconcile of one DistillationJob took, API calls included.",
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
RECONCILE_ERRORS = Counter(
    "stratos_reconcile_errors_total", "Reconciles that raised an error (retried by the operator).", ["kind"]
)

PREFIX = "stratos_distillationjob"
JOB_LABELS = ["namespace", "name"]
INFO_LABELS = [*JOB_LABELS, "uid", "node", "gpu", "teacher", "student", "strategy", "algorithm"]
CONDITION_TYPES = (
    c.SERVER_SELECTED,
    c.TEACHER_SELECTED,
    c.STUDENT_SELECTED,
    c.DATA_READY,
    c.TRAINED,
    c.EVALUATED,
    c.READY,
    c.FAILED,
    c.SUSPENDED,
)
# Each pipeline stage and the condition that turns True when it ends. A stage starts when the one
# before it ended (the first when the object was created), or, when it runs again (the next student
# after one missed minAccuracy), when its own condition last left True.
STAGE_ENDS: tuple[tuple[Stage, str], ...] = (
    (Stage.SELECT_SERVER, c.SERVER_SELECTED),
    (Stage.EVALUATE_TEACHERS, c.TEACHER_SELECTED),
    (Stage.SELECT_STUDENT, c.STUDENT_SELECTED),
    (Stage.SYNTHESIZE, c.DATA_READY),
    (Stage.TRAIN, c.TRAINED),
    (Stage.EVALUATE, c.EVALUATED),
    (Stage.DEPLOY, c.READY),
)
# Phases in which no stage is at work: no stage_running_seconds series (nothing can be stuck).
RESTING_PHASES = frozenset({"Serving", "Succeeded", "Failed", "Suspended"})

# Every metric name this module can export (the chart's alerts and dashboard must use only these).
JOB_METRIC_NAMES: tuple[str, ...] = tuple(
    f"{PREFIX}_{suffix}"
    for suffix in (
        "info",
        "created_timestamp_seconds",
        "status_phase",
        "status_condition",
        "generation_lag",
        "stage_duration_seconds",
        "stage_running_seconds",
        "teacher_tokens",
        "cost_spent_usd",
        "cost_estimate_usd",
        "budget_usd",
        "gpu_hours",
        "training_steps",
        "training_duration_seconds",
        "training_steps_per_second",
        "evaluation_accuracy",
        "endpoint_ready",
        "endpoint_tokens_per_second",
    )
)
OPERATOR_METRIC_NAMES: tuple[str, ...] = (
    "stratos_operator_active",
    "stratos_distillationjobs",
    "stratos_reconcile_duration_seconds",
    "stratos_reconcile_errors_total",
    "stratos_decision_duration_seconds",
)


@dataclass(frozen=True)
class JobView:
    """What the metrics need of one DistillationJob: identity, budget, and the status last written."""

    namespace: str
    name: str
    uid: str
    generation: int | None
    created: str | None
    budget_usd: float | None
    status: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, body: Mapping[str, Any], status: Mapping[str, Any]) -> JobView:
        meta = body.get("metadata") or {}
        budget = ((body.get("spec") or {}).get("requirements") or {}).get("budget")
        return cls(
            namespace=str(meta.get("namespace") or ""),
            name=str(meta.get("name") or ""),
            uid=str(meta.get("uid") or ""),
            generation=meta.get("generation"),
            created=meta.get("creationTimestamp"),
            budget_usd=float(budget) if isinstance(budget, int | float) else None,
            status=status,
        )


def _parse_time(value: object) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def stage_times(job: JobView, now: float) -> tuple[dict[str, float], tuple[str, float] | None]:
    """(seconds each finished stage took, (current stage, seconds in it so far) or None).

    Read from the conditions' ``lastTransitionTime`` (second precision), so a replica that takes
    over reports the same durations as the one before it.
    """
    conds = {cond.get("type"): cond for cond in job.status.get("conditions") or ()}
    done: dict[str, float] = {}
    start = _parse_time(job.created)
    starts: dict[Stage, float | None] = {}
    for stage, ctype in STAGE_ENDS:
        cond = conds.get(ctype) or {}
        changed = _parse_time(cond.get("lastTransitionTime"))
        if cond.get("status") == c.TRUE:
            starts[stage] = start
            if start is not None and changed is not None and changed >= start:
                done[stage.value] = changed - start
            start = changed
        else:
            # Not finished: it started when the stage before it ended, or when its own condition
            # last changed (waiting, or running again), whichever came later.
            starts[stage] = max((t for t in (start, changed) if t is not None), default=None)
            start = None
    phase = str(job.status.get("phase") or "")
    current = job.status.get("stage")
    running = None
    if phase not in RESTING_PHASES:
        for stage, _ in STAGE_ENDS:
            if stage.value == current and starts.get(stage) is not None:
                began = starts[stage]
                assert began is not None
                running = (stage.value, max(0.0, now - began))
                done.pop(stage.value, None)  # running again: its earlier run is history
    return done, running


def job_metrics(jobs: Iterable[JobView], now: float) -> list[Metric]:
    """The per-job metric families for ``jobs`` at time ``now`` (seconds since the epoch)."""

    def gauge(suffix: str, doc: str, labels: list[str] | None = None) -> GaugeMetricFamily:
        return GaugeMetricFamily(f"{PREFIX}_{suffix}", doc, labels=JOB_LABELS + (labels or []))

    info = GaugeMetricFamily(
        f"{PREFIX}_info", "Decisions: node, GPU, teacher, student, strategy.", labels=INFO_LABELS
    )
    created = gauge("created_timestamp_seconds", "When the DistillationJob was created, Unix seconds.")
    phase = gauge("status_phase", "1 for the DistillationJob's current phase, 0 for the others.", ["phase"])
    condition = gauge("status_condition", "1 for the status each condition has.", ["condition", "status"])
    lag = gauge("generation_lag", "metadata.generation minus status.observedGeneration (0: up to date).")
    durations = gauge("stage_duration_seconds", "Seconds each finished pipeline stage took.", ["stage"])
    running = gauge("stage_running_seconds", "Seconds the stage at work has run so far.", ["stage"])
    tokens = gauge("teacher_tokens", "Teacher tokens spent (prompt and completion).")
    spent = gauge("cost_spent_usd", "USD spent so far: teacher tokens and node hours.")
    estimate = gauge("cost_estimate_usd", "Estimated total cost, USD.")
    budget = gauge("budget_usd", "spec.requirements.budget, USD (absent when unlimited).")
    gpu_hours = gauge("gpu_hours", "Node hours used.")
    steps = gauge("training_steps", "Optimizer steps of the last training run.")
    train_seconds = gauge("training_duration_seconds", "Wall-clock seconds of the last training run.")
    throughput = gauge("training_steps_per_second", "Optimizer steps per second of the last training run.")
    accuracy = gauge("evaluation_accuracy", "Held-out accuracy of the evaluated student (0..1).")
    endpoint_ready = gauge("endpoint_ready", "1 when the serving endpoint passes its readiness check.")
    endpoint_tps = gauge("endpoint_tokens_per_second", "Completion tokens/s the endpoint probe measured.")

    for job in jobs:
        key = [job.namespace, job.name]
        status = job.status
        server = status.get("server") or {}
        strategy = status.get("strategy") or {}
        info.add_metric(
            [
                *key,
                job.uid,
                str(server.get("node") or ""),
                str((server.get("gpu") or {}).get("model") or ""),
                str((status.get("teacher") or {}).get("selected") or ""),
                str((status.get("student") or {}).get("selected") or ""),
                str(strategy.get("selected") or ""),
                str(strategy.get("algorithm") or ""),
            ],
            1,
        )
        if (when := _parse_time(job.created)) is not None:
            created.add_metric(key, when)
        current = str(status.get("phase") or "Pending")
        for name in PHASES:
            phase.add_metric([*key, name], 1 if name == current else 0)
        present = {cond.get("type"): cond.get("status") for cond in status.get("conditions") or ()}
        for ctype in CONDITION_TYPES:
            if ctype in present:
                for state in (c.TRUE, c.FALSE, c.UNKNOWN):
                    condition.add_metric([*key, ctype, state.lower()], 1 if present[ctype] == state else 0)
        observed = status.get("observedGeneration")
        if isinstance(job.generation, int) and isinstance(observed, int):
            lag.add_metric(key, max(0, job.generation - observed))
        done, at_work = stage_times(job, now)
        for stage, took in done.items():
            durations.add_metric([*key, stage], took)
        if at_work is not None:
            running.add_metric([*key, at_work[0]], at_work[1])
        cost = status.get("cost") or {}
        for family, raw in (
            (tokens, cost.get("teacherTokens")),
            (spent, cost.get("spentUsd")),
            (estimate, cost.get("estimateUsd")),
            (gpu_hours, cost.get("gpuHours")),
            (budget, job.budget_usd),
        ):
            if (number := _number(raw)) is not None:
                family.add_metric(key, number)
        training = status.get("training") or {}
        n_steps, seconds = _number(training.get("steps")), _number(training.get("durationSeconds"))
        if n_steps is not None:
            steps.add_metric(key, n_steps)
        if seconds is not None:
            train_seconds.add_metric(key, seconds)
            if n_steps is not None and seconds > 0:
                throughput.add_metric(key, n_steps / seconds)
        if (value := _number((status.get("evaluation") or {}).get("accuracy"))) is not None:
            accuracy.add_metric(key, value)
        endpoint = status.get("endpoint")
        if endpoint is not None:
            endpoint_ready.add_metric(key, 1 if endpoint.get("ready") else 0)
            if (value := _number(endpoint.get("tokensPerSecond"))) is not None:
                endpoint_tps.add_metric(key, value)
    return [
        info,
        created,
        phase,
        condition,
        lag,
        durations,
        running,
        tokens,
        spent,
        estimate,
        budget,
        gpu_hours,
        steps,
        train_seconds,
        throughput,
        accuracy,
        endpoint_ready,
        endpoint_tps,
    ]


class JobMetrics(Collector):
    """Per-job series and ``stratos_distillationjobs{phase}``, from the statuses reconciles wrote."""

    def __init__(
        self,
        *,
        stale_after: float = 60.0,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, tuple[JobView, float]] = {}
        self._active = False
        self.stale_after = stale_after
        self._clock = clock
        self._monotonic = monotonic

    @property
    def active(self) -> bool:
        return self._active

    def set_active(self, active: bool) -> None:
        """This replica acts (standalone, or resumed by peering) or stands by (paused)."""
        with self._lock:
            self._active = active
            if not active:
                self._jobs.clear()

    def observe(self, body: Mapping[str, Any], status: Mapping[str, Any]) -> None:
        view = JobView.of(body, status)
        with self._lock:
            self._jobs[view.uid] = (view, self._monotonic())

    def forget(self, uid: str) -> None:
        with self._lock:
            self._jobs.pop(uid, None)

    def fresh(self) -> list[JobView]:
        """Jobs reconciled within ``stale_after`` seconds; older ones are dropped."""
        now = self._monotonic()
        with self._lock:
            for uid in [u for u, (_, seen) in self._jobs.items() if now - seen > self.stale_after]:
                del self._jobs[uid]
            return [view for view, _ in self._jobs.values()]

    def collect(self) -> Iterator[Metric]:
        active = GaugeMetricFamily(
            "stratos_operator_active",
            "1 when this replica reconciles DistillationJobs; 0 on a standby (kopf peering).",
        )
        active.add_metric([], 1 if self._active else 0)
        yield active
        if not self._active:
            return
        jobs = self.fresh()
        counts = GaugeMetricFamily("stratos_distillationjobs", "DistillationJobs by phase.", labels=["phase"])
        phases = [str(j.status.get("phase") or "Pending") for j in jobs]
        for name in sorted(set(PHASES) | set(phases)):
            counts.add_metric([name], phases.count(name))
        yield counts
        yield from job_metrics(jobs, self._clock())


JOBS = JobMetrics()
REGISTRY.register(JOBS)


class PeeringWatch(logging.Handler):
    """Turns kopf's peering log records into :meth:`JobMetrics.set_active` (kopf logs when it
    pauses in favour of a peer and when it resumes; it exposes the state no other way)."""

    LOGGER = "kopf._core.engines.peering"

    def __init__(self, target: JobMetrics) -> None:
        super().__init__(level=logging.INFO)
        self.target = target

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("Resuming operations"):
            self.target.set_active(True)
        elif message.startswith("Pausing "):
            self.target.set_active(False)


def track_activity(*, mandatory_peering: bool, target: JobMetrics = JOBS) -> None:
    """kopf starts an operator with mandatory peering (``--peering``) paused until it finds itself the
    oldest peer; standalone (or auto-detected peering) starts active and pauses only if told to."""
    logger = logging.getLogger(PeeringWatch.LOGGER)
    if not any(isinstance(h, PeeringWatch) and h.target is target for h in logger.handlers):
        logger.addHandler(PeeringWatch(target))
    if logger.getEffectiveLevel() > logging.INFO:  # kopf --quiet: its pause/resume records still count
        logger.setLevel(logging.INFO)
    target.set_active(not mandatory_peering)


_started = False


def serve(port: int) -> None:
    """Start the metrics HTTP server once (a kopf restart of the startup handler must not rebind)."""
    global _started
    if not _started and port > 0:
        start_http_server(port)
        _started = True
