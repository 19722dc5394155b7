"""The kopf operator: thin wiring between the API server and the stage machine.

Run with ``kopf run -m stratos.controller.operator --standalone --all-namespaces``. Each
DistillationJob gets a timer that reconciles it every ``STRATOS_RECONCILE_INTERVAL`` seconds: the
machine gathers the facts (nodes from an in-memory index, stage runs from the API), calls the pure
decision functions, and only a status that differs from the one on the server is written. Nothing is
kept between ticks that is not in the object's status, so a restarted operator carries on where the
last one stopped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

import kopf
from kubernetes import client, config

from stratos import GROUP, PLURAL, VERSION
from stratos.controller import metrics
from stratos.controller.config import OperatorConfig
from stratos.controller.executor import KubeExecutor, deployment_view, index_key, job_view, pod_view
from stratos.controller.machine import reconcile
from stratos.controller.naming import LABEL_JOB_UID, ChildKey
from stratos.controller.status_patch import status_patch

CONFIG = OperatorConfig.from_env()
NODES_KEY = "nodes"
# A patch we sent is not yet visible in the body kopf hands us for this long at most; ticks that see
# the body we patched from are skipped so a decision is not recorded (and announced) twice.
STALE_GRACE_SECONDS = 5.0
DELETION_POLL_SECONDS = 1.0

_last_patch: dict[str, tuple[str, float]] = {}
_last_patch_lock = threading.Lock()
# uid -> when its DELETED event came. kopf spawns a job's timer before the finalizer it adds for it
# lands; a job deleted in between goes without a deletionTimestamp and kopf never stops its timer. The
# timer's filter is false for such a uid, so kopf stops it as a filter mismatch in the DELETED cycle
# (after the on.event handler that records the uid). Kept a while for a tick still running then.
_deleted: dict[str, float] = {}
DELETED_MEMORY_SECONDS = 300.0


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: Any, logger: kopf.Logger, **_: Any) -> None:
    settings.posting.reporting_component = "stratos-operator"
    settings.posting.level = logging.INFO
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.networking.request_timeout = 60
    settings.watching.server_timeout = 270
    # A job deleted while its tick runs (or waits for an executor thread) cannot drop its finalizer
    # until the tick's timer task ends; kopf checks again only after cancellation_polling, 60 s by
    # default, which made deletions under load take a minute. With 1 s, deletion latency is bounded by
    # one tick plus a second.
    settings.background.cancellation_polling = DELETION_POLL_SECONDS
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    memo.api = client.ApiClient()
    metrics.serve(CONFIG.metrics_port)
    logger.info("stratos operator started; metrics on :%s", CONFIG.metrics_port)


@kopf.index("", "v1", "nodes")
def nodes(body: kopf.Body, **_: Any) -> dict[str, dict[str, Any]]:
    """Every Node, reduced to the fields the node-facts code reads (labels, taints, capacity, Ready)."""
    return {NODES_KEY: node_view(body)}


def node_view(body: Mapping[str, Any]) -> dict[str, Any]:
    meta, spec, status = body.get("metadata", {}), body.get("spec", {}), body.get("status", {})
    return {
        "metadata": {
            "name": meta.get("name"),
            "labels": dict(meta.get("labels") or {}),
            "annotations": {k: v for k, v in (meta.get("annotations") or {}).items() if k.startswith(GROUP)},
        },
        "spec": {"unschedulable": spec.get("unschedulable", False), "taints": list(spec.get("taints") or [])},
        "status": {
            "conditions": [
                {"type": cond.get("type"), "status": cond.get("status")}
                for cond in status.get("conditions") or []
            ],
            "capacity": dict(status.get("capacity") or {}),
            "allocatable": dict(status.get("allocatable") or {}),
        },
    }


# Children are indexed by their labels (owner uid, stage, candidate), never by name.
@kopf.index("batch", "v1", "jobs", labels={LABEL_JOB_UID: kopf.PRESENT})
def stage_jobs(body: kopf.Body, **_: Any) -> dict[ChildKey, dict[str, Any]] | None:
    key = index_key(body)
    return {key: job_view(body)} if key else None


@kopf.index("", "v1", "pods", labels={LABEL_JOB_UID: kopf.PRESENT})
def stage_pods(body: kopf.Body, **_: Any) -> dict[ChildKey, dict[str, Any]] | None:
    key = index_key(body)
    return {key: pod_view(body)} if key else None


@kopf.index("apps", "v1", "deployments", labels={LABEL_JOB_UID: kopf.PRESENT})
def serving_deployments(body: kopf.Body, **_: Any) -> dict[ChildKey, dict[str, Any]] | None:
    key = index_key(body)
    return {key: deployment_view(body)} if key else None


def not_deleted(uid: str | None = None, **_: Any) -> bool:
    with _last_patch_lock:
        return uid not in _deleted


# A reconcile that raises (an API hiccup) is retried after `backoff` seconds, not kopf's default minute.
@kopf.timer(GROUP, VERSION, PLURAL, interval=CONFIG.reconcile_interval, backoff=5, when=not_deleted)
def tick(*, body: kopf.Body, patch: kopf.Patch, memo: Any, **kwargs: Any) -> None:
    """Reconcile one job. kopf passes the indexes by name (``nodes``, ``stage_jobs``, ...)."""
    nodes: kopf.Index[str, Any] = kwargs["nodes"]
    stage_jobs: kopf.Index[ChildKey, Any] = kwargs["stage_jobs"]
    stage_pods: kopf.Index[ChildKey, Any] = kwargs["stage_pods"]
    deployments: kopf.Index[ChildKey, Any] = kwargs["serving_deployments"]
    uid = body["metadata"]["uid"]
    version = body["metadata"].get("resourceVersion", "")
    with _last_patch_lock:
        seen = _last_patch.get(uid)
    if seen and seen[0] == version and time.monotonic() - seen[1] < STALE_GRACE_SECONDS:
        return
    started = time.perf_counter()
    try:
        executor = KubeExecutor(body, CONFIG, memo.api, stage_jobs, stage_pods, deployments)
        outcome = reconcile(body, nodes=list(nodes.get(NODES_KEY, [])), executor=executor)
    except Exception as err:
        metrics.RECONCILE_ERRORS.labels(kind=type(err).__name__).inc()
        raise
    finally:
        metrics.RECONCILE_SECONDS.observe(time.perf_counter() - started)
    for decision, seconds in outcome.timings.items():
        metrics.DECISION_SECONDS.labels(decision=decision).observe(seconds)
    changes = status_patch(body.get("status") or {}, outcome.status)
    if changes:
        patch.status.update(changes)
        with _last_patch_lock:
            _last_patch[uid] = (version, time.monotonic())
    for event in outcome.events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)
    with _last_patch_lock:
        if uid in _deleted:  # deleted while this tick ran: keep nothing of it
            _last_patch.pop(uid, None)
            return
        metrics.JOB_PHASES.set(uid, str(outcome.status.get("phase", "Pending")))


@kopf.on.event(GROUP, VERSION, PLURAL)
def forget_deleted(event: Mapping[str, Any], uid: str, **_: Any) -> None:
    if event.get("type") == "DELETED":
        now = time.monotonic()
        with _last_patch_lock:
            metrics.JOB_PHASES.forget(uid)
            _last_patch.pop(uid, None)
            _deleted[uid] = now
            for old in [u for u, seen in _deleted.items() if now - seen > DELETED_MEMORY_SECONDS]:
                del _deleted[old]
