"""Prometheus metrics of the operator, served on their own port (``STRATOS_METRICS_PORT``)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from prometheus_client import Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector

from stratos.api.status import PHASES

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


class JobPhases(Collector):
    """``stratos_jobs{phase}``: how many DistillationJobs are in each phase, read at scrape time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._phase: dict[str, str] = {}

    def set(self, uid: str, phase: str) -> None:
        with self._lock:
            self._phase[uid] = phase

    def forget(self, uid: str) -> None:
        with self._lock:
            self._phase.pop(uid, None)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self._lock:
            phases = list(self._phase.values())
        family = GaugeMetricFamily("stratos_jobs", "DistillationJobs by phase.", labels=["phase"])
        for phase in sorted(set(PHASES) | set(phases)):
            family.add_metric([phase], phases.count(phase))
        yield family


JOB_PHASES = JobPhases()
REGISTRY.register(JOB_PHASES)

_started = False


def serve(port: int) -> None:
    """Start the metrics HTTP server once (a kopf restart of the startup handler must not rebind)."""
    global _started
    if not _started and port > 0:
        start_http_server(port)
        _started = True
