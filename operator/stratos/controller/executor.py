"""Stage runs as Kubernetes Jobs: create them idempotently and read their state.

The state of Jobs and their pods comes from the operator's list-then-watch caches (``childwatch``: one
watch per kind for the whole operator, not one GET per job per tick); only creates go to the API
server. A create that answers 409 means the object is already there, which is what a restarted operator
expects to find.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from stratos import GROUP
from stratos.api.durations import format_duration
from stratos.api.spec import DistillationJobSpec
from stratos.contracts.runs import (
    STORAGE_DIR,
    EndpointRequest,
    EndpointState,
    ProbeOutcome,
    RunStatus,
    StageRun,
)
from stratos.controller import kueue, rawapi
from stratos.controller.context import ChildRejected
from stratos.decide.budget import elapsed_seconds
from stratos.kube.children import (
    KUEUE_QUEUE_LABEL,
    dataset_configmap_fields,
    stage_configmap,
    stage_job,
    stage_name,
)
from stratos.kube.config import OperatorConfig
from stratos.kube.naming import ChildKey, child_key, is_same_child, owner_uid
from stratos.kube.podopts import StorageUnset, storage_claim
from stratos.serving.manifests import (
    EXTRA_APIS,
    SPEC_HASH,
    desired_serving,
    service_name,
    serving_name,
    spec_hash,
)
from stratos.serving.manifests import STAGE as SERVE
from stratos.serving.probe import probe
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
#: Hash of the optional serving objects last synced, kept on the serving Deployment.
EXTRAS_HASH = f"{GROUP}/extras-hash"
# Job conditions that mean the Job has failed (FailureTarget comes first, while its pods terminate).
FAILED_CONDITIONS = ("Failed", "FailureTarget")
# Annotation on a stage Job that did not start within spec.retries.startTimeout: why (the Job is
# suspended, so its pod goes and cannot start later).
START_FAILURE = f"{GROUP}/start-failure"


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
    labels = body.get("metadata", {}).get("labels") or {}
    return {
        "name": body.get("metadata", {}).get("name"),
        # The Job that made the pod: pods of a deleted namesake Job (a cancelled run) are not this one's.
        "jobUid": labels.get("batch.kubernetes.io/controller-uid") or labels.get("controller-uid"),
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
    to ``now`` while it runs; failed and retried attempts included) and the number of pods (pure)."""
    pods = list(pods)
    intervals = []
    for pod in pods:
        for cs in pod.get("containerStatuses") or []:
            state = cs.get("state") or {}
            term, running = state.get("terminated") or {}, state.get("running") or {}
            start = _timestamp(term.get("startedAt") or running.get("startedAt"))
            intervals.append((start, _timestamp(term.get("finishedAt")) if term else None))
    return dataclasses.replace(run, seconds=elapsed_seconds(intervals, now), attempts=len(pods))


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
        jobs: Mapping[ChildKey, Iterable[Mapping[str, Any]]],
        pods: Mapping[ChildKey, Iterable[Mapping[str, Any]]],
        deployments: Mapping[ChildKey, Iterable[Mapping[str, Any]]] | None = None,
    ) -> None:
        self.body, self.cfg, self.api = body, cfg, api
        self.jobs, self.pods, self.deployments = jobs, pods, deployments or {}
        self.namespace = str(body["metadata"]["namespace"])
        self.job_name = str(body["metadata"]["name"])
        self.uid = owner_uid(body)

    def storage_error(self, spec: DistillationJobSpec) -> str | None:
        return None if storage_claim(spec, self.cfg) is not None else StorageUnset.MESSAGE

    def ensure(self, run: StageRun, spec: DistillationJobSpec) -> RunStatus:
        # Found by its labels (owner uid, stage, candidate), never by its name.
        key: ChildKey = (self.uid, run.stage, run.candidate or "")
        views = list(self.jobs.get(key, []))
        if not views:
            name = stage_name(self.body, run)
            self._create(stage_configmap(self.body, run), "ConfigMap")
            self._create(stage_job(self.body, spec, run, self.cfg), "Job")
            return RunStatus("Pending", message=f"created Job {name}")
        job = views[-1]
        if job.get("deleting"):  # a cancelled run (suspend, node lost) on its way out
            return RunStatus(
                "Pending", message=f"waiting for the previous Job {job.get('name')} to be deleted"
            )
        queue = job.get("queue")
        if queue and job.get("suspended") and not job.get("startFailure"):
            # Kueue has not admitted it yet, or preempted it: its Workload says why.
            message = kueue.waiting_message(str(queue), self._workloads(job.get("uid")))
            return RunStatus("Pending", message=f"Job {job.get('name')}: {message}")
        pods = [p for p in self.pods.get(key, []) if p.get("jobUid") in (None, job.get("uid"))]
        now = datetime.now(UTC)
        if completed_without_result(job, pods):
            # The pod index has not caught up with the Job index (or the pod is gone): ask the API.
            read = self._read_pods(str(job["name"]))
            return with_pod_time(run_state(job, read, pods_read=True), read, now)
        state = with_pod_time(run_state(job, pods), pods, now)
        if state.state != "Pending":
            return state
        missing = self._missing_configmaps(spec)
        if missing:
            state = RunStatus("Pending", message=f"{state.message}; {missing}")
        timeout = spec.retries.start_timeout_seconds
        # A queued Job's wait before Kueue admitted it is Kueue's business, not a stuck start: its start
        # is measured from its first pod.
        queued_without_pod = bool(job.get("queue")) and not pods
        stuck = state if queued_without_pod else start_deadline(state, job, pods, now, timeout)
        if stuck.state == "Failed":
            # Suspending the Job deletes its pod (so it cannot start later, for a job that has failed)
            # and keeps the verdict on the Job for every later tick and a restarted operator.
            patch = {"metadata": {"annotations": {START_FAILURE: stuck.message}}, "spec": {"suspend": True}}
            client.BatchV1Api(self.api).patch_namespaced_job(str(job["name"]), self.namespace, patch)
        return stuck

    def _read_pods(self, job_name: str) -> list[dict[str, Any]]:
        raw: Any = client.CoreV1Api(self.api).list_namespaced_pod(
            self.namespace, label_selector=f"job-name={job_name}", _preload_content=False
        )
        return [pod_view(item) for item in json.loads(raw.data).get("items") or []]

    def _missing_configmaps(self, spec: DistillationJobSpec) -> str:
        """``ConfigMap "NAME" not found (spec.task.dataset.train)`` for a dataset ConfigMap that is not
        there: the kubelet keeps such a pod ContainerCreating and says why only in an Event."""
        dataset = spec.task.dataset
        if dataset is None:
            return ""
        core = client.CoreV1Api(self.api)
        for field, name in dataset_configmap_fields(spec):
            try:
                core.read_namespaced_config_map(name, self.namespace)
            except ApiException as err:
                if err.status == 404:
                    return f'ConfigMap "{name}" not found (spec.task.dataset.{field})'
                raise
        return ""

    def _workloads(self, job_uid: Any) -> list[dict[str, Any]] | None:
        """Kueue's Workloads for the Job with this uid; None when they cannot be read."""
        if not job_uid:
            return None
        try:
            found = client.CustomObjectsApi(self.api).list_namespaced_custom_object(
                kueue.GROUP,
                kueue.VERSION,
                self.namespace,
                kueue.PLURAL,
                label_selector=f"{kueue.JOB_UID_LABEL}={job_uid}",
            )
        except ApiException as err:
            if err.status in (403, 404):  # Kueue not installed, or not readable by this operator
                return None
            raise
        return list(dict(found).get("items") or [])  # type: ignore[call-overload]

    def cancel_runs(self) -> None:
        """Delete this job's unfinished stage Jobs (their pods go with them); finished ones stay.

        This job's Jobs are those whose labels carry its uid (``child_key``): no other job's, whatever
        the names look like."""
        batch = client.BatchV1Api(self.api)
        # A snapshot of the keys: the index is updated by the watch while this runs.
        for key in [k for k in list(self.jobs.keys()) if k[0] == self.uid]:
            for view in list(self.jobs.get(key, [])):
                finished = any(
                    c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
                    for c in view.get("conditions", [])
                )
                if finished or view.get("deleting") or not view.get("name"):
                    continue
                try:
                    batch.delete_namespaced_job(
                        str(view["name"]), self.namespace, propagation_policy="Background"
                    )
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
        views = list(self.deployments.get((self.uid, SERVE, ""), []))
        live = views[-1] if views else None
        # The optional objects (Ingress, HTTPRoute, HPA, PodMonitor) are synced only when the hash of
        # all of them, kept on the Deployment, changes: no API calls for them on a steady tick.
        extras_hash = spec_hash({"extras": list(plan.extras)})
        live_annotations = ((live or {}).get("metadata") or {}).get("annotations") or {}
        if live_annotations.get(EXTRAS_HASH) != extras_hash:
            self._sync_extras(plan.extras)
        if live is None:
            self._create(plan.service, "Service")
            deployment = copy.deepcopy(plan.deployment)
            deployment["metadata"]["annotations"][EXTRAS_HASH] = extras_hash
            self._create(deployment, "Deployment")
        elif (patch := serving_patch(live, plan.deployment)) is not None:
            patch["metadata"]["annotations"][EXTRAS_HASH] = extras_hash
            client.AppsV1Api(self.api).patch_namespaced_deployment(name, self.namespace, patch)
            return EndpointState("Pending", message="rolling out the new serving spec")
        elif live_annotations.get(EXTRAS_HASH) != extras_hash:
            annotations = {"metadata": {"annotations": {EXTRAS_HASH: extras_hash}}}
            client.AppsV1Api(self.api).patch_namespaced_deployment(name, self.namespace, annotations)
        return endpoint_state(live, plan.url)

    def _sync_extras(self, extras: Iterable[Mapping[str, Any]]) -> None:
        """Create or update each optional serving object asked for; delete the kinds not asked for."""
        wanted = {str(m["kind"]): dict(m) for m in extras}
        objects = client.CustomObjectsApi(self.api)
        name = serving_name(self.job_name, self.uid)
        for kind, (group, version, plural) in EXTRA_APIS.items():
            desired = wanted.get(kind)
            if desired is None:
                try:
                    objects.delete_namespaced_custom_object(group, version, self.namespace, plural, name)
                except ApiException as err:
                    if err.status != 404:  # gone already, or the API is not installed
                        raise
                continue
            live: Mapping[str, Any] | None
            try:
                live = dict(
                    objects.get_namespaced_custom_object(group, version, self.namespace, plural, name)
                )  # type: ignore[call-overload]
            except ApiException as err:
                if err.status != 404:
                    raise
                live = None
            try:
                if live is None:
                    objects.create_namespaced_custom_object(group, version, self.namespace, plural, desired)
                elif (patch := extra_patch(live, desired)) is not None:
                    objects.patch_namespaced_custom_object(
                        group, version, self.namespace, plural, name, patch
                    )
            except ApiException as err:
                if err.status == 404:  # the resource type itself is not served
                    raise ChildRejected(
                        kind, f"the cluster does not serve {plural}.{group}/{version}; install its CRDs"
                    ) from err
                if err.status in (400, 422):
                    raise ChildRejected(kind, _api_message(err)) from err
                if err.status != 409:
                    raise

    def remove_endpoint(self) -> None:
        job, uid = self.job_name, self.uid
        self._sync_extras(())
        for delete, name in (
            (client.AppsV1Api(self.api).delete_namespaced_deployment, serving_name(job, uid)),
            (client.CoreV1Api(self.api).delete_namespaced_service, service_name(job, uid)),
        ):
            try:
                delete(name, self.namespace)
            except ApiException as err:
                if err.status != 404:
                    raise

    def probe_endpoint(self, url: str, model: str) -> ProbeOutcome:
        ref = (((self.body.get("spec") or {}).get("serving") or {}).get("apiKeySecretRef")) or None
        if not ref:
            return probe(url, model)
        name, key = str(ref["name"]), str(ref["key"])
        try:
            secret = client.CoreV1Api(self.api).read_namespaced_secret(name, self.namespace)
        except ApiException as err:
            if err.status == 403:
                why = f"the operator may not read Secret {name}"
                return ProbeOutcome(
                    ok=False, error=f"{why} (list it in the chart's rbac.servingApiKeySecrets)"
                )
            if err.status == 404:
                return ProbeOutcome(ok=False, error=f"Secret {name} with the serving API key does not exist")
            raise
        value = (secret.data or {}).get(key)
        if not value:
            return ProbeOutcome(ok=False, error=f"Secret {name} has no key {key}")
        # The key is used for the probe's requests only: never stored, logged or put in an error.
        return probe(url, model, api_key=base64.b64decode(value).decode())

    def _create(self, manifest: dict[str, Any], kind: str) -> None:
        # Plain JSON requests (``rawapi``): no generated API class on the path every stage run takes.
        try:
            rawapi.create(self.api, kind, self.namespace, manifest)
        except ApiException as err:
            if err.status in (400, 422):  # invalid: the spec produced something Kubernetes refuses
                raise ChildRejected(kind, _api_message(err)) from err
            if err.status != 409:
                raise
            # 409: created before, e.g. by an operator that has since restarted. Adopted only if it is
            # this very child (same owner uid and labels); anything else under that name is refused.
            name = manifest["metadata"]["name"]
            live = rawapi.read(self.api, kind, self.namespace, name)
            if not is_same_child(live, manifest):
                raise ChildRejected(kind, f"{kind} {name} exists and is not this job's") from err


def _api_message(err: ApiException) -> str:
    try:
        return str(json.loads(err.body or "{}").get("message") or err.reason)
    except (TypeError, ValueError):
        return str(err.reason)


def extra_patch(live: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any] | None:
    """JSON merge patch taking an optional serving object to ``desired``; None when its hash matches.

    Top-level spec keys the desired object lacks are nulled (a merge patch keeps what it does not name).
    """
    want = desired["metadata"]["annotations"][SPEC_HASH]
    if ((live.get("metadata") or {}).get("annotations") or {}).get(SPEC_HASH) == want:
        return None
    spec: dict[str, Any] = {k: None for k in (live.get("spec") or {}) if k not in desired["spec"]}
    spec.update(copy.deepcopy(dict(desired["spec"])))
    metadata = {"labels": dict(desired["metadata"]["labels"]), "annotations": {SPEC_HASH: want}}
    return {"metadata": metadata, "spec": spec}


def index_key(body: Mapping[str, Any]) -> ChildKey | None:
    """Index key of a stage Job, its pods, or a serving Deployment: (owner uid, stage, candidate)."""
    return child_key(body.get("metadata", {}).get("labels"))
