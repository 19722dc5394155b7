"""Stage runs as Kubernetes Jobs: create them idempotently and read their state.

The state of Jobs and their pods comes from kopf's in-memory indexes (one watch per kind for the whole
operator, not one GET per job per tick); only creates go to the API server. A create that answers 409
means the object is already there, which is what a restarted operator expects to find.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from stratos.api.spec import DistillationJobSpec
from stratos.controller.children import STORAGE_DIR, stage_configmap, stage_job
from stratos.controller.config import OperatorConfig
from stratos.controller.machine import (
    ChildRejected,
    EndpointRequest,
    EndpointState,
    ProbeOutcome,
    RunStatus,
    StageRun,
)
from stratos.controller.naming import LABEL_JOB, child_name
from stratos.controller.podopts import StorageUnset, storage_claim
from stratos.serving.manifests import desired_serving, service_name, serving_name
from stratos.serving.probe import probe_endpoint
from stratos.serving.rollout import deployment_ready, serving_patch

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


def job_view(body: Mapping[str, Any]) -> dict[str, Any]:
    status = body.get("status") or {}
    return {
        "backoffLimit": (body.get("spec") or {}).get("backoffLimit"),
        "deleting": bool((body.get("metadata") or {}).get("deletionTimestamp")),
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


def endpoint_state(live: Mapping[str, Any] | None, url: str) -> EndpointState:
    """The Deploy stage's view of the serving Deployment (pure)."""
    if live is None:
        return EndpointState("Pending", message="creating the serving Deployment")
    if deployment_ready(live):
        return EndpointState("Ready", url=url)
    status = live.get("status") or {}
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            return EndpointState("Failed", message=f"serving rollout stuck: {cond.get('message', '')}")
    ready, want = int(status.get("readyReplicas") or 0), int((live.get("spec") or {}).get("replicas", 1))
    return EndpointState("Pending", message=f"{ready} of {want} serving replicas ready")


def run_state(job: Mapping[str, Any], pods: Iterable[Mapping[str, Any]]) -> RunStatus:
    """Map a Job and its pods to the stage machine's view of a run (pure).

    Every message names the pod and says what holds it up in the kubelet's or scheduler's own words:
    a failed attempt (exit code, reason such as OOMKilled, the program's error), the Job's retries
    (``spec.backoffLimit``), an image that cannot be pulled, a missing Secret, an unschedulable pod.
    """
    pods = sorted(pods, key=_pod_order)
    conds = {c.get("type"): c for c in job.get("conditions", []) if c.get("status") == "True"}
    # A succeeded pod is the run's result: taking it from the pod, not from the Job's Complete
    # condition, saves the Job controller's one-second batching on every stage transition.
    for pod in reversed(pods):
        if pod.get("phase") == "Succeeded":
            return _result_of(pod)
    if "Complete" in conds or "SuccessCriteriaMet" in conds:
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
    try:
        parsed = json.loads(message)
    except json.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict) and parsed.get("error"):  # the stage program's own failure result
        kind = parsed.get("kind")
        message = f"{kind}: {parsed['error']}" if kind else str(parsed["error"])
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
        deployments: Mapping[tuple[str, str], Iterable[Mapping[str, Any]]] | None = None,
    ) -> None:
        self.body, self.cfg, self.api = body, cfg, api
        self.jobs, self.pods, self.deployments = jobs, pods, deployments or {}
        self.namespace = str(body["metadata"]["namespace"])
        self.job_name = str(body["metadata"]["name"])

    def storage_error(self, spec: DistillationJobSpec) -> str | None:
        return None if storage_claim(spec, self.cfg) is not None else StorageUnset.MESSAGE

    def ensure(self, run: StageRun, spec: DistillationJobSpec) -> RunStatus:
        name = child_name(self.body["metadata"]["name"], run.stage, run.candidate)
        key = (self.namespace, name)
        views = list(self.jobs.get(key, []))
        if not views:
            self._create(stage_configmap(self.body, run), "ConfigMap")
            self._create(stage_job(self.body, spec, run, self.cfg), "Job")
            return RunStatus("Pending", message=f"created Job {name}")
        if views[-1].get("deleting"):  # a cancelled run (suspend, node lost) on its way out
            return RunStatus("Pending", message=f"waiting for the previous Job {name} to be deleted")
        return run_state(views[-1], self.pods.get(key, []))

    def cancel_runs(self) -> None:
        """Delete this job's unfinished stage Jobs (their pods go with them); finished ones stay."""
        batch = client.BatchV1Api(self.api)
        # A snapshot of the keys: the index is updated by the watch while this runs.
        for namespace, name in list(self.jobs.keys()):
            if namespace != self.namespace or not name.startswith(f"{self.job_name}-"):
                continue
            views = list(self.jobs.get((namespace, name), []))
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

    def ensure_endpoint(self, request: EndpointRequest, spec: DistillationJobSpec) -> EndpointState:
        plan = desired_serving(
            self.body,
            spec,
            node=request.node,
            gpus=request.gpus,
            base_model_uri=request.base_model_uri,
            adapter_path=request.adapter_path,
            merged_path=request.merged_path,
            model_name=request.model_name,
            cfg=self.cfg,
            lora_rank=spec.distillation.lora.rank,
        )
        if plan is None:
            self.remove_endpoint()
            return EndpointState("Pending", message="serving is disabled")
        name = plan.deployment["metadata"]["name"]
        views = list(self.deployments.get((self.namespace, name), []))
        live = views[-1] if views else None
        if live is None:
            self._create(plan.service, "Service")
            self._create(plan.deployment, "Deployment")
        elif (patch := serving_patch(live, plan.deployment)) is not None:
            client.AppsV1Api(self.api).patch_namespaced_deployment(name, self.namespace, patch)
            return EndpointState("Pending", message="rolling out the new serving spec")
        return endpoint_state(live, plan.url)

    def remove_endpoint(self) -> None:
        job = self.job_name
        for delete, name in (
            (client.AppsV1Api(self.api).delete_namespaced_deployment, serving_name(job)),
            (client.CoreV1Api(self.api).delete_namespaced_service, service_name(job)),
        ):
            try:
                delete(name, self.namespace)
            except ApiException as err:
                if err.status != 404:
                    raise

    def probe_endpoint(self, url: str, model: str) -> ProbeOutcome:
        return probe(url, model)

    def _create(self, manifest: dict[str, Any], kind: str) -> None:
        creators: dict[str, Callable[..., Any]] = {
            "ConfigMap": client.CoreV1Api(self.api).create_namespaced_config_map,
            "Service": client.CoreV1Api(self.api).create_namespaced_service,
            "Job": client.BatchV1Api(self.api).create_namespaced_job,
            "Deployment": client.AppsV1Api(self.api).create_namespaced_deployment,
        }
        try:
            creators[kind](self.namespace, manifest)
        except ApiException as err:
            if err.status in (400, 422):  # invalid: the spec produced something Kubernetes refuses
                raise ChildRejected(kind, _api_message(err)) from err
            if err.status != 409:  # 409: created before, e.g. by an operator that has since restarted
                raise


def _api_message(err: ApiException) -> str:
    try:
        return str(json.loads(err.body or "{}").get("message") or err.reason)
    except (TypeError, ValueError):
        return str(err.reason)


def probe(url: str, model: str) -> ProbeOutcome:
    """Latency and tokens/s of a ready endpoint, from a few short chat completions."""
    result = probe_endpoint(url, model)
    return ProbeOutcome(
        ok=result.ok,
        latency_ms=result.latency_ms_p50,
        tokens_per_second=result.tokens_per_second,
        error=result.error or "",
    )


def index_key_for_pod(body: Mapping[str, Any]) -> tuple[str, str] | None:
    labels = body.get("metadata", {}).get("labels") or {}
    job_name = labels.get("job-name") or labels.get("batch.kubernetes.io/job-name")
    if not job_name or LABEL_JOB not in labels:
        return None
    return (str(body["metadata"]["namespace"]), str(job_name))
