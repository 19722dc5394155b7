"""The kopf operator: thin wiring between the API server and the stage machine.

Run with ``kopf run -m stratos.controller.operator --standalone --all-namespaces``. Each
DistillationJob gets a timer that reconciles it every ``STRATOS_RECONCILE_INTERVAL`` seconds: the
machine gathers the facts (nodes, stage Jobs, their pods and serving Deployments from the operator's own
list-then-watch caches, ``nodewatch`` and ``childwatch``; kopf keeps no index, so it holds no handler),
calls the pure decision functions, and only a status that differs from the one on the server is
written. Nothing is kept between ticks that is not in the object's status, so a restarted operator
carries on where the last one stopped.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import kopf
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from stratos import GROUP, PLURAL, VERSION
from stratos.controller import metrics
from stratos.controller.childwatch import ChildCaches
from stratos.controller.nodewatch import NodeCache, startup_wait
from stratos.kube.config import OperatorConfig
from stratos.pipeline.status_patch import status_patch

# The stage machine, its executor and the announcements (the decision code, with numpy and the stage
# modules: about half a second of imports on a loaded two-core machine) are imported by ``configure``
# once the node listing has started, so that a restarted operator loads them while the API server sends
# the nodes rather than before it asks for them; ``tick`` imports them from there (already loaded).
DECISION_MODULES = (
    "stratos.pipeline.machine",
    "stratos.controller.executor",
    "stratos.controller.announce",
)

CONFIG = OperatorConfig.from_env()
# A patch we sent is not yet visible in the body kopf hands us for this long at most; ticks that see
# the body we patched from are skipped so a decision is not recorded (and announced) twice.
STALE_GRACE_SECONDS = 5.0
DELETION_POLL_SECONDS = 1.0
# A tick waits this long at most for the first listing of the child caches, then tries again next time.
CHILDREN_WAIT_SECONDS = 5.0
# A job whose next step reads the node list (``machine.reads_nodes``: its server decision, or the joint
# rule's student decision) waits for the node cache's first listing, so that after a restart it decides
# as soon as the nodes are in, not at the tick after (one reconcile interval later, with a LoadingNodes
# status written in between). Only within this many seconds of the cache's start: a listing that keeps
# failing (the API server away, RBAC) must not tie up the handler threads, and then such jobs show
# LoadingNodes until it succeeds. Other jobs never wait for it.
NODES_WAIT_SECONDS = 5.0

_last_patch: dict[str, tuple[str, float]] = {}
_last_patch_lock = threading.Lock()
# uid -> when its DELETED event came. kopf spawns a job's timer before the finalizer it adds for it
# lands; a job deleted in between goes without a deletionTimestamp and kopf never stops its timer. The
# timer's filter is false for such a uid, so kopf stops it as a filter mismatch in the DELETED cycle
# (after the on.event handler that records the uid). Kept a while for a tick still running then.
_deleted: dict[str, float] = {}
DELETED_MEMORY_SECONDS = 300.0


class QuietTicks(logging.Filter):
    """Drops kopf's "Timer 'tick' succeeded." line: the tick runs every reconcile interval for every job
    (a hundred lines a second with a hundred jobs), and says nothing a status write or an error does not
    say better. Failures, retries and every other kopf message are kept."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno == logging.INFO and record.getMessage() == "Timer 'tick' succeeded.")


QUIET_TICKS = QuietTicks()  # one instance: a second start-up handler run adds nothing


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: Any, logger: kopf.Logger, **_: Any) -> None:
    settings.posting.reporting_component = "stratos-operator"
    logging.getLogger("kopf.objects").addFilter(QUIET_TICKS)
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
    # Nodes and children come from the operator's own list-then-watch caches, not kopf indexes: kopf
    # would run no handler until thousands of Nodes and every stage Job and pod went through its indexes
    # one by one. Started here, waited for by nobody but the ticks that read them. The node listing
    # first: on a restart it is the longest wait before the first decision (3,732 nodes, several
    # megabytes), and what follows runs while the API server answers it.
    memo.nodes = NodeCache(memo.api).start()
    memo.children = ChildCaches(memo.api, CONFIG.watched_namespaces).start()
    for module in DECISION_MODULES:
        importlib.import_module(module)
    # Per-job metrics come from a replica that acts; under peering a standby exports none of them.
    metrics.JOBS.stale_after = max(60.0, 20 * CONFIG.reconcile_interval)
    metrics.track_activity(mandatory_peering=settings.peering.mandatory)
    metrics.serve(CONFIG.metrics_port)
    logger.info("stratos operator started; metrics on :%s", CONFIG.metrics_port)


class ChildrenUnlisted(Exception):
    """The operator's caches of stage Jobs, pods and Deployments cannot list: nothing can be decided."""


def not_deleted(uid: str | None = None, **_: Any) -> bool:
    with _last_patch_lock:
        return uid not in _deleted


# Reconcile errors are caught and become the ReconcileError condition; they are retried with this
# backoff (doubling from the first value up to the last), at once when the generation changes.
ERROR_BACKOFF_SECONDS = (5.0, 300.0)
_backoff: dict[str, tuple[int, float, int | None]] = {}  # uid -> (failures, retry at, generation)
# uid -> seqs of the announcements this process posted and that may still be in the outbox.
_posted: dict[str, set[int]] = {}


@kopf.timer(GROUP, VERSION, PLURAL, interval=CONFIG.reconcile_interval, backoff=5, when=not_deleted)
def tick(*, body: kopf.Body, memo: Any, logger: kopf.Logger, **_: Any) -> None:
    """Reconcile one job.

    Nothing raises out of here: every failure is written to the object as the ReconcileError condition
    (with an event when it changes) and retried with backoff, so no failure loops invisibly.
    """
    from stratos.controller import announce
    from stratos.controller.executor import KubeExecutor
    from stratos.pipeline.machine import errored, reads_nodes, reconcile

    children: ChildCaches = memo.children
    unlisted = None
    if not children.synced and not children.wait_synced(CHILDREN_WAIT_SECONDS):
        # Without the first listing of its children a job would look as if it had none: wait for it. A
        # listing that fails (RBAC refusing the namespaces watched) is the job's ReconcileError instead.
        unlisted = children.problem()
        if unlisted is None:
            logger.info("waiting for the first listing of stage Jobs, pods and Deployments")
            return
    nodes: NodeCache = memo.nodes
    if not nodes.synced and reads_nodes(body):
        nodes.wait_synced(startup_wait(nodes.started_at, time.monotonic(), NODES_WAIT_SECONDS))
    uid = body["metadata"]["uid"]
    version = body["metadata"].get("resourceVersion", "")
    generation = body["metadata"].get("generation")
    now = time.monotonic()
    with _last_patch_lock:
        seen = _last_patch.get(uid)
        failing = _backoff.get(uid)
    if seen and seen[0] == version and now - seen[1] < STALE_GRACE_SECONDS:
        return
    if failing and now < failing[1] and failing[2] == generation:
        # Waiting out the backoff: the job is still this replica's, so its series stay fresh.
        metrics.JOBS.observe(body, body.get("status") or {})
        return
    started = time.perf_counter()
    status: Mapping[str, Any] = body.get("status") or {}
    with _last_patch_lock:
        posted = set(_posted.get(uid, ()))
    try:
        # First the announcements an earlier reconcile recorded but did not post (an operator stopped
        # between the two writes); those this process posted already are only dropped.
        if unlisted is not None:
            raise ChildrenUnlisted(
                f"the operator cannot list its stage Jobs, pods and Deployments ({unlisted}); it watches "
                f"{', '.join(CONFIG.watched_namespaces) or 'every namespace'} (STRATOS_WATCHED_NAMESPACES, "
                "else kopf's --namespace), which its RBAC must allow"
            )
        outbox = [a for a in status.get("announcements") or [] if a.get("seq") not in posted]
        pending = announce.post(memo.api, body, outbox)
        namespace = str(body["metadata"]["namespace"])
        executor = KubeExecutor(
            body,
            CONFIG,
            memo.api,
            children.of("jobs", namespace),
            children.of("pods", namespace),
            children.of("deployments", namespace),
        )
        outcome = reconcile(body, nodes=nodes.snapshot(), executor=executor)
    except Exception as err:
        pending = list(status.get("announcements") or [])
        outcome = errored(dict(status), generation, datetime.now(UTC), "reconcile", err)
    finally:
        metrics.RECONCILE_SECONDS.observe(time.perf_counter() - started)
    for decision, seconds in outcome.timings.items():
        metrics.DECISION_SECONDS.labels(decision=decision).observe(seconds)
    _note_error(uid, generation, outcome.error, logger)
    new_status = dict(outcome.status)
    announce.queue(new_status, outcome.events, pending)
    changes = status_patch(status, new_status)
    try:
        if changes and not _write_status(memo.api, body, changes):
            return  # the job is gone
    except Exception as err:  # an API hiccup or a refused status: logged, counted, retried with backoff
        _note_error(uid, generation, err, logger)
        return
    if changes:
        with _last_patch_lock:
            _last_patch[uid] = (version, time.monotonic())
    # The decisions and their announcements are recorded: post the announcements now. They stay in the
    # outbox until the next reconcile drops them, so a crash before this point loses none.
    fresh = [a for a in new_status.get("announcements") or [] if a.get("seq") not in posted]
    try:
        left = {a["seq"] for a in announce.post(memo.api, body, fresh)}
    except Exception as err:  # posted on the next reconcile instead
        logger.warning("posting events failed (retried next reconcile): %s: %s", type(err).__name__, err)
        left = {a["seq"] for a in fresh}
    if new_status.get("announcements") and not left:
        # Every announcement is posted: empty the outbox now rather than on the next reconcile, so the
        # status of a job that has finished settles with this tick (announcedSeq keeps the numbering).
        try:
            _write_status(memo.api, body, {"announcements": None})
        except Exception as err:  # dropped on the next reconcile instead
            logger.warning("emptying the announcement outbox failed: %s: %s", type(err).__name__, err)
    with _last_patch_lock:
        if uid in _deleted:  # deleted while this tick ran: keep nothing of it
            _last_patch.pop(uid, None)
            _backoff.pop(uid, None)
            _posted.pop(uid, None)
            return
        _posted[uid] = {a["seq"] for a in fresh if a["seq"] not in left}
        metrics.JOBS.observe(body, outcome.status)


def _write_status(api: client.ApiClient, body: Mapping[str, Any], changes: Mapping[str, Any]) -> bool:
    """Merge-patch the status subresource (written here, not by kopf after the handler returns, so that
    the announcements can be posted right after the write that records them). False: the job is gone."""
    meta = body["metadata"]
    try:
        client.CustomObjectsApi(api).patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            str(meta["namespace"]),
            PLURAL,
            str(meta["name"]),
            {"status": dict(changes)},
            _content_type="application/merge-patch+json",
        )
    except ApiException as err:
        if err.status == 404:
            return False
        raise
    return True


def _note_error(uid: str, generation: int | None, err: BaseException | None, logger: kopf.Logger) -> None:
    """Count and log a reconcile error and schedule its retry; forget the backoff after a success."""
    with _last_patch_lock:
        if err is None:
            _backoff.pop(uid, None)
            return
        failures = (_backoff.get(uid) or (0, 0.0, None))[0] + 1
        first, most = ERROR_BACKOFF_SECONDS
        delay = min(most, first * 2 ** (failures - 1))
        _backoff[uid] = (failures, time.monotonic() + delay, generation)
    metrics.RECONCILE_ERRORS.labels(kind=type(err).__name__).inc()
    logger.error(
        "reconcile failed (%d in a row, next try in %.0f s): %s: %s",
        failures,
        delay,
        type(err).__name__,
        err,
        exc_info=(type(err), err, err.__traceback__) if failures == 1 else None,
    )


# Async (on kopf's event loop, a few dict operations): a sync handler would queue in the thread pool behind
# every job's tick, and after a restart a new job waited there for all the others' first ticks.
@kopf.on.event(GROUP, VERSION, PLURAL)
async def forget_deleted(event: Mapping[str, Any], uid: str, **_: Any) -> None:
    if event.get("type") == "DELETED":
        now = time.monotonic()
        with _last_patch_lock:
            metrics.JOBS.forget(uid)
            _last_patch.pop(uid, None)
            _backoff.pop(uid, None)
            _posted.pop(uid, None)
            _deleted[uid] = now
            for old in [u for u, seen in _deleted.items() if now - seen > DELETED_MEMORY_SECONDS]:
                del _deleted[old]
