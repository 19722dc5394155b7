"""Stage runs as Kubernetes Jobs: create them idempotently and read their state.

The state of Jobs and their pods comes from the operator's list-then-watch caches (``childwatch``: one
watch per kind for the whole operator, not one GET per job per tick); only creates go to the API
server. A create that answers 409 means the object is already there, which is what a restarted operator
expects to find. The objects are built by ``stratos.kube.children`` and ``stratos.serving``, and read
through the pure views of ``stratos.kube.views``: this module holds only the I/O between them and the
API server.
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
from stratos.kube.children import (
    dataset_configmap_fields,
    stage_configmap,
    stage_job,
    stage_name,
)
from stratos.kube.config import OperatorConfig
from stratos.kube.naming import ChildKey, is_same_child, owner_uid
from stratos.kube.podopts import StorageUnset, storage_claim
from stratos.kube.rollout import deployment_ready, serving_patch
from stratos.kube.serving import (
    EXTRA_APIS,
    SPEC_HASH,
    desired_serving,
    service_name,
    serving_name,
    spec_hash,
)
from stratos.kube.serving import STAGE as SERVE
from stratos.kube.views import (
    START_FAILURE,
    completed_without_result,
    pod_reports,
    pod_view,
    run_state,
    start_deadline,
    with_pod_time,
)
from stratos.pipeline.context import ChildRejected
from stratos.serving.probe import probe

#: Hash of the optional serving objects last synced, kept on the serving Deployment.
EXTRAS_HASH = f"{GROUP}/extras-hash"


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
        #: Jobs this reconcile suspended because their pod never started: the cache has not seen the
        #: suspension yet when the failure it causes cancels the job's runs in the same reconcile.
        self._suspended: set[str] = set()

    def storage_error(self, spec: DistillationJobSpec) -> str | None:
        return None if storage_claim(spec, self.cfg) is not None else StorageUnset.MESSAGE

    def ensure(self, run: StageRun, spec: DistillationJobSpec) -> RunStatus:
        # Found by its labels (owner uid, stage, candidate), never by its name.
        key: ChildKey = (self.uid, run.stage, run.candidate or "")
        views = list(self.jobs.get(key, []))
        if not views:
            name = stage_name(self.body, run)
            self._create(stage_configmap(self.body, run), "ConfigMap")
            created = self._create(stage_job(self.body, spec, run, self.cfg), "Job")
            uid = (created.get("metadata") or {}).get("uid")
            return RunStatus("Pending", message=f"created Job {name}", run_id=str(uid) if uid else None)
        job = views[-1]
        if job.get("deleting"):  # a cancelled run (suspend, node lost) on its way out
            return RunStatus(
                "Pending", message=f"waiting for the previous Job {job.get('name')} to be deleted"
            )
        # The run's identity is its Job's uid: a Job of the same name with another uid is another run.
        # Its reports include those of an earlier Job's pods still known (a deleted Job's terminated pod
        # may have said what it spent before it went).
        state = self._state(job, key, spec)
        earlier = [p for p in self.pods.get(key, []) if p.get("jobUid") not in (None, job.get("uid"))]
        reports = (*pod_reports(earlier), *state.reports)
        return dataclasses.replace(state, run_id=str(job.get("uid") or "") or None, reports=reports)

    def _state(self, job: Mapping[str, Any], key: ChildKey, spec: DistillationJobSpec) -> RunStatus:
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
            self._suspended.add(str(job["name"]))
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
        """Delete this job's unfinished stage Jobs (their pods go with them); finished ones stay, and so
        does a Job the operator suspended because its pod never started (it holds nothing and shows why).

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
                if (view.get("suspended") and view.get("startFailure")) or view["name"] in self._suspended:
                    continue  # suspended by the operator after it never started: kept to be inspected
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

    def _create(self, manifest: dict[str, Any], kind: str) -> dict[str, Any]:
        """Create the object; answer it as created, or as found when it was there already (409)."""
        # Plain JSON requests (``rawapi``): no generated API class on the path every stage run takes.
        try:
            return rawapi.create(self.api, kind, self.namespace, manifest)
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
            return live


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
