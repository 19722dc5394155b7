"""Views of child objects as the stage machine's runtime reads them, and what they mean for a run (pure).

Owns the slim views of stage Jobs, their pods and the serving Deployment that the operator keeps in its
indexes (``job_view``, ``pod_view``, ``deployment_view``, keyed by ``index_key``), and the pure reading
of those views: a Job and its pods as a stage run's ``RunStatus`` (``run_state``), its pod time
(``with_pod_time``) and its start deadline (``start_deadline``). Nothing here talks to an API server;
the Kubernetes executor (``stratos.controller.executor``) feeds it what the watches delivered.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from stratos import GROUP
from stratos.api.durations import format_duration
from stratos.contracts.runs import RunStatus
from stratos.decide.budget import elapsed_seconds
from stratos.kube.children import KUEUE_QUEUE_LABEL
from stratos.kube.naming import ChildKey, child_key

# Waiting reasons that will not fix themselves; shown in the parent's conditions.
STUCK_REASONS = {
    "ErrImagePull",
    "ImagePullBackOff",
    "ErrImageNeverPull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
    "CrashLoopBackOff",
}
# Job conditions that mean the Job has failed (FailureTarget comes first, while its pods terminate).
FAILED_CONDITIONS = ("Failed", "FailureTarget")
# Annotation on a stage Job that did not start within spec.retries.startTimeout: why (the Job is
# suspended, so its pod goes and cannot start later).
START_FAILURE = f"{GROUP}/start-failure"


def _conditions(status: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The fields of an object's status conditions that the views read."""
    fields = ("type", "status", "reason", "message")
    return [{f: c.get(f) for f in fields} for c in status.get("conditions") or []]


def job_view(body: Mapping[str, Any]) -> dict[str, Any]:
    status = body.get("status") or {}
    meta = body.get("metadata") or {}
    return {
        "name": meta.get("name"),
        "uid": meta.get("uid"),
        "created": meta.get("creationTimestamp", ""),
        # Set by the operator when the run did not start in time (``start_deadline``): its verdict.
        "startFailure": (meta.get("annotations") or {}).get(START_FAILURE),
        "queue": (meta.get("labels") or {}).get(KUEUE_QUEUE_LABEL),
        "suspended": bool((body.get("spec") or {}).get("suspend")),
        "backoffLimit": (body.get("spec") or {}).get("backoffLimit"),
        "deleting": bool((body.get("metadata") or {}).get("deletionTimestamp")),
        "conditions": _conditions(status),
        "active": status.get("active", 0),
        "succeeded": status.get("succeeded", 0),
        "failed": status.get("failed", 0),
    }


def pod_view(body: Mapping[str, Any]) -> dict[str, Any]:
    status = body.get("status") or {}
    labels = body.get("metadata", {}).get("labels") or {}
    return {
        "name": body.get("metadata", {}).get("name"),
        # The Job that made the pod: pods of a deleted namesake Job (a cancelled run) are not this one's.
        "jobUid": labels.get("batch.kubernetes.io/controller-uid") or labels.get("controller-uid"),
        "phase": status.get("phase", "Pending"),
        "conditions": _conditions(status),
        "containerStatuses": list(status.get("containerStatuses") or []),
        "creationTimestamp": body.get("metadata", {}).get("creationTimestamp", ""),
        "nodeName": (body.get("spec") or {}).get("nodeName"),
    }


def deployment_view(body: Mapping[str, Any]) -> dict[str, Any]:
    meta = body.get("metadata") or {}
    return {
        "metadata": {
            "generation": meta.get("generation"),
            "annotations": dict(meta.get("annotations") or {}),
        },
        "spec": {"replicas": (body.get("spec") or {}).get("replicas", 1)},
        "status": dict(body.get("status") or {}),
    }


def completed_without_result(job: Mapping[str, Any], pods: Iterable[Mapping[str, Any]]) -> bool:
    """The Job says Complete but no pod seen has Succeeded: separate watches deliver Job and pod
    updates in no guaranteed order, so the pod's Succeeded status may simply not have arrived yet."""
    conds = {c.get("type") for c in job.get("conditions", []) if c.get("status") == "True"}
    done = "Complete" in conds or "SuccessCriteriaMet" in conds
    return done and not any(p.get("phase") == "Succeeded" for p in pods)


def run_state(
    job: Mapping[str, Any], pods: Iterable[Mapping[str, Any]], *, pods_read: bool = False
) -> RunStatus:
    """Map a Job and its pods to the stage machine's view of a run (pure).

    ``pods_read`` says the pods were read from the API server just now rather than from a watch: only
    then does a complete Job without a succeeded pod mean the result is gone.

    Every message names the pod and says what holds it up in the kubelet's or scheduler's own words:
    a failed attempt (exit code, reason such as OOMKilled, the program's error), the Job's retries
    (``spec.backoffLimit``), an image that cannot be pulled, a missing Secret, an unschedulable pod.
    """
    pods = sorted(pods, key=_pod_order)
    if job.get("startFailure"):
        return RunStatus("Failed", message=str(job["startFailure"]))
    conds = {c.get("type"): c for c in job.get("conditions", []) if c.get("status") == "True"}
    # A succeeded pod is the run's result: taking it from the pod, not from the Job's Complete
    # condition, saves the Job controller's one-second batching on every stage transition.
    for pod in reversed(pods):
        if pod.get("phase") == "Succeeded":
            return _result_of(pod)
    if "Complete" in conds or "SuccessCriteriaMet" in conds:
        if not pods_read:  # the pod watch may lag the Job watch: never conclude from their order
            return RunStatus("Pending", message="the stage Job completed; waiting for its pod's result")
        return RunStatus("Failed", message="the stage Job completed but its pod and result are gone")
    failures = [p for p in pods if p.get("phase") == "Failed"]
    failed = next((conds[t] for t in FAILED_CONDITIONS if t in conds), None)
    if failed is not None:
        last = failures[-1] if failures else (pods[-1] if pods else None)
        detail = _pod_failure(last) if last is not None else ""
        reason = f"{failed.get('reason') or 'Failed'}: {failed.get('message') or ''}".strip(": ")
        attempts = len(failures) or int(job.get("failed") or 0)
        if attempts > 1:
            reason = f"{reason} ({attempts} attempts)"
        return RunStatus("Failed", message=f"{reason}; last pod: {detail}" if detail else reason)
    retries = _retries(job, failures)
    if not pods:
        return RunStatus("Pending", message="waiting for the Job's pod" + retries)
    pod = pods[-1]
    name = pod.get("name")
    if pod.get("phase") == "Failed":  # the Job controller has not replaced it (yet)
        return RunStatus("Pending", message=f"{_pod_failure(pod)}{_retry_note(job, failures)}")
    for cond in pod.get("conditions", []):
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            why = cond.get("message") or cond.get("reason") or "no node fits"
            return RunStatus("Pending", message=f"pod {name} unschedulable: {why}{retries}")
    for cs in pod.get("containerStatuses", []):
        waiting = (cs.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in STUCK_REASONS:
            text = f"{waiting['reason']}: {waiting.get('message', '')}".strip(": ")
            return RunStatus("Pending", message=f"pod {name}: {text}{retries}")
    if pod.get("phase") == "Running":
        return RunStatus("Running", message=f"pod {name} running{retries}")
    node = pod.get("nodeName")
    if node and not pod.get("containerStatuses"):
        # Bound, but the node's kubelet has not reported on it: a node that is down or has no kubelet.
        return RunStatus(
            "Pending", message=f"pod {name} scheduled on node {node}, not started by its kubelet yet{retries}"
        )
    return RunStatus("Pending", message=f"pod {name} {str(pod.get('phase', 'Pending')).lower()}{retries}")


def with_pod_time(run: RunStatus, pods: Iterable[Mapping[str, Any]], now: datetime) -> RunStatus:
    """``run`` with the elapsed time of every pod of the Job (each container's start to its finish, or
    to ``now`` while it runs; failed and retried attempts included), the number of pods, when the first
    started and the last ended (None while one runs), and the JSON object each finished pod reported
    (pure)."""
    pods = sorted(pods, key=_pod_order)
    intervals: list[tuple[datetime | None, datetime | None]] = []
    for pod in pods:
        for cs in pod.get("containerStatuses") or []:
            state = cs.get("state") or {}
            term, running = state.get("terminated") or {}, state.get("running") or {}
            start = _timestamp(term.get("startedAt") or running.get("startedAt"))
            intervals.append((start, _timestamp(term.get("finishedAt")) if term else None))
    started = [(start, end) for start, end in intervals if start is not None]
    first = min((start for start, _ in started), default=None)
    ends = [end for _, end in started if end is not None]
    last = max(ends) if ends and len(ends) == len(started) else None
    return dataclasses.replace(
        run,
        seconds=elapsed_seconds(intervals, now),
        attempts=len(pods),
        started_at=first,
        ended_at=last,
        reports=pod_reports(pods),
    )


def pod_reports(pods: Iterable[Mapping[str, Any]]) -> tuple[dict[str, Any], ...]:
    """The JSON objects the finished pods' programs wrote as termination messages, oldest first."""
    return tuple(r for pod in sorted(pods, key=_pod_order) if (r := _report(pod)) is not None)


def _report(pod: Mapping[str, Any]) -> dict[str, Any] | None:
    """The JSON object a finished pod's program wrote as its termination message, if any."""
    try:
        report = json.loads(str(_terminated(pod).get("message") or "").strip() or "null")
    except json.JSONDecodeError:
        return None
    return report if isinstance(report, dict) else None


def start_deadline(
    run: RunStatus,
    job: Mapping[str, Any],
    pods: Iterable[Mapping[str, Any]],
    now: datetime,
    timeout: float,
) -> RunStatus:
    """``run``, or Failed when its pod (or the Job, before any pod) has waited longer than ``timeout``
    seconds to start (pure). The message is the pod's own reason, as ``run_state`` gave it.

    Only a run that never started counts: a pod that is Pending while an earlier attempt ran is measured
    from its own creation, and a Running pod is never "stuck"."""
    if run.state != "Pending":
        return run
    latest = sorted(pods, key=_pod_order)[-1:]
    if latest and latest[0].get("phase") != "Pending":
        return run
    since = _timestamp(latest[0].get("creationTimestamp") if latest else job.get("created"))
    if since is None or (now - since).total_seconds() <= timeout:
        return run
    what = f"pod {latest[0].get('name')}" if latest else f"Job {job.get('name')} created no pod and"
    waited = format_duration(timeout)
    message = f"{run.message} ({what} not started within startTimeout {waited})"
    return dataclasses.replace(run, state="Failed", message=message)


def _timestamp(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def _pod_order(pod: Mapping[str, Any]) -> tuple[str, str, str]:
    """Oldest first: by creation (second resolution), then by when the container started/finished."""
    term = _terminated(pod)
    return (str(pod.get("creationTimestamp", "")), str(term.get("startedAt") or "~"), str(pod.get("name")))


def _retries(job: Mapping[str, Any], failures: list[Mapping[str, Any]]) -> str:
    """`` (retry N of M after <last failure>)`` once an attempt has failed, else empty."""
    if not failures:
        return ""
    used = max(len(failures), int(job.get("failed") or 0))
    limit = job.get("backoffLimit")
    of = f" of {limit}" if limit is not None else ""
    return f" (retry {used}{of} after {_pod_failure(failures[-1])})"


def _retry_note(job: Mapping[str, Any], failures: list[Mapping[str, Any]]) -> str:
    used = max(len(failures), int(job.get("failed") or 0))
    limit = job.get("backoffLimit")
    if limit is None:
        return f" (attempt {used} failed)"
    if used > int(limit):
        return f" (attempt {used} failed; backoffLimit {limit} reached)"
    return f" (attempt {used} failed; retry {used} of {limit} follows)"


def _terminated(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    for cs in pod.get("containerStatuses", []):
        term = (cs.get("state") or {}).get("terminated")
        if term:
            return dict(term)
    return {}


def _result_of(pod: Mapping[str, Any]) -> RunStatus:
    message = str(_terminated(pod).get("message") or "").strip()
    try:
        result = json.loads(message)
    except json.JSONDecodeError:
        return RunStatus("Failed", message=f"pod {pod.get('name')} succeeded without a JSON result")
    if not isinstance(result, dict):
        return RunStatus("Failed", message=f"pod {pod.get('name')} wrote a result that is not an object")
    return RunStatus("Succeeded", result=result)


def _pod_failure(pod: Mapping[str, Any]) -> str:
    term = _terminated(pod)
    if not term:
        return f"pod {pod.get('name')} {pod.get('phase')}"
    text = f"pod {pod.get('name')} exited {term.get('exitCode')} ({term.get('reason', 'Error')})"
    message = str(term.get("message") or "").strip()
    parsed = _report(pod)
    if parsed is not None and parsed.get("error"):  # the stage program's own failure result
        kind = parsed.get("kind")
        message = f"{kind}: {parsed['error']}" if kind else str(parsed["error"])
    return f"{text}: {message[-500:]}" if message else text


def index_key(body: Mapping[str, Any]) -> ChildKey | None:
    """Index key of a stage Job, its pods, or a serving Deployment: (owner uid, stage, candidate)."""
    return child_key(body.get("metadata", {}).get("labels"))
