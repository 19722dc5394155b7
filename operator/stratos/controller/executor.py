"""Stage runs as Kubernetes Jobs: create them idempotently and read their state.

The state of Jobs and their pods comes from kopf's in-memory indexes (one watch per kind for the whole
operator, not one GET per job per tick); only creates go to the API server. A create that answers 409
means the object is already there, which is what a restarted operator expects to find.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from stratos.api.spec import DistillationJobSpec
from stratos.controller.children import STORAGE_DIR, stage_configmap, stage_job
from stratos.controller.config import OperatorConfig
from stratos.controller.machine import RunStatus, StageRun
from stratos.controller.naming import LABEL_JOB, child_name

# Waiting reasons that will not fix themselves; shown in the parent's conditions.
STUCK_REASONS = {"ErrImagePull", "ImagePullBackOff", "CreateContainerConfigError", "InvalidImageName"}


def job_view(body: Mapping[str, Any]) -> dict[str, Any]:
    status = body.get("status") or {}
    return {
        "conditions": [
            {
                "type": c.get("type"),
                "status": c.get("status"),
                "reason": c.get("reason"),
                "message": c.get("message"),
            }
            for c in status.get("conditions") or []
        ],
        "active": status.get("active", 0),
        "succeeded": status.get("succeeded", 0),
        "failed": status.get("failed", 0),
    }


def pod_view(body: Mapping[str, Any]) -> dict[str, Any]:
    status = body.get("status") or {}
    return {
        "name": body.get("metadata", {}).get("name"),
        "phase": status.get("phase", "Pending"),
        "conditions": [
            {
                "type": c.get("type"),
                "status": c.get("status"),
                "reason": c.get("reason"),
                "message": c.get("message"),
            }
            for c in status.get("conditions") or []
        ],
        "containerStatuses": list(status.get("containerStatuses") or []),
        "creationTimestamp": body.get("metadata", {}).get("creationTimestamp", ""),
    }


def run_state(job: Mapping[str, Any], pods: Iterable[Mapping[str, Any]]) -> RunStatus:
    """Map a Job and its pods to the stage machine's view of a run (pure)."""
    pods = sorted(pods, key=lambda p: str(p.get("creationTimestamp", "")))
    conds = {c.get("type"): c for c in job.get("conditions", []) if c.get("status") == "True"}
    if "Complete" in conds or "SuccessCriteriaMet" in conds:
        for pod in reversed(pods):
            if pod.get("phase") == "Succeeded":
                return _result_of(pod)
        return RunStatus("Failed", message="the stage Job completed but its pod and result are gone")
    if "Failed" in conds:
        cond = conds["Failed"]
        detail = _pod_failure(pods[-1]) if pods else ""
        reason = f"{cond.get('reason') or 'Failed'}: {cond.get('message') or ''}".strip(": ")
        return RunStatus("Failed", message=f"{reason}; last pod: {detail}" if detail else reason)
    if not pods:
        return RunStatus("Pending", message="waiting for the Job's pod")
    pod = pods[-1]
    for cond in pod.get("conditions", []):
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            return RunStatus(
                "Pending", message=f"pod {pod.get('name')} unschedulable: {cond.get('message', '')}"
            )
    for cs in pod.get("containerStatuses", []):
        waiting = (cs.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in STUCK_REASONS:
            return RunStatus(
                "Pending", message=f"pod {pod.get('name')}: {waiting['reason']}: {waiting.get('message', '')}"
            )
    if pod.get("phase") == "Running":
        return RunStatus("Running", message=f"pod {pod.get('name')} running")
    return RunStatus("Pending", message=f"pod {pod.get('name')} {str(pod.get('phase', 'Pending')).lower()}")


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
    try:
        parsed = json.loads(message)
        message = str(parsed.get("error", message)) if isinstance(parsed, dict) else message
    except json.JSONDecodeError:
        pass
    return f"{text}: {message[-500:]}" if message else text


class KubeExecutor:
    """Runs stage programs as Jobs in the DistillationJob's namespace."""

    storage_root = STORAGE_DIR

    def __init__(
        self,
        body: Mapping[str, Any],
        cfg: OperatorConfig,
        api: client.ApiClient,
        jobs: Mapping[tuple[str, str], Iterable[Mapping[str, Any]]],
        pods: Mapping[tuple[str, str], Iterable[Mapping[str, Any]]],
    ) -> None:
        self.body, self.cfg, self.api = body, cfg, api
        self.jobs, self.pods = jobs, pods
        self.namespace = str(body["metadata"]["namespace"])
        self.job_name = str(body["metadata"]["name"])

    def ensure(self, run: StageRun, spec: DistillationJobSpec) -> RunStatus:
        name = child_name(self.body["metadata"]["name"], run.stage, run.candidate)
        key = (self.namespace, name)
        views = list(self.jobs.get(key, []))
        if not views:
            self._create(stage_configmap(self.body, run), "ConfigMap")
            self._create(stage_job(self.body, spec, run, self.cfg), "Job")
            return RunStatus("Pending", message=f"created Job {name}")
        return run_state(views[-1], self.pods.get(key, []))

    def cancel_runs(self) -> None:
        """Delete this job's unfinished stage Jobs (their pods go with them); finished ones stay."""
        batch = client.BatchV1Api(self.api)
        for (namespace, name), views in self.jobs.items():
            if namespace != self.namespace or not name.startswith(f"{self.job_name}-"):
                continue
            finished = any(
                c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
                for view in views
                for c in view.get("conditions", [])
            )
            if finished:
                continue
            try:
                batch.delete_namespaced_job(name, namespace, propagation_policy="Background")
            except ApiException as err:
                if err.status != 404:
                    raise

    def _create(self, manifest: dict[str, Any], kind: str) -> None:
        try:
            if kind == "ConfigMap":
                client.CoreV1Api(self.api).create_namespaced_config_map(self.namespace, manifest)  # type: ignore[arg-type]
            else:
                client.BatchV1Api(self.api).create_namespaced_job(self.namespace, manifest)  # type: ignore[arg-type]
        except ApiException as err:
            if err.status != 409:  # 409: created before, e.g. by an operator that has since restarted
                raise


def index_key_for_pod(body: Mapping[str, Any]) -> tuple[str, str] | None:
    labels = body.get("metadata", {}).get("labels") or {}
    job_name = labels.get("job-name") or labels.get("batch.kubernetes.io/job-name")
    if not job_name or LABEL_JOB not in labels:
        return None
    return (str(body["metadata"]["namespace"]), str(job_name))
