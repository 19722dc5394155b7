"""Manifests of the objects a DistillationJob owns: one ConfigMap and one batch/v1 Job per stage run.

Every child has a deterministic name unique to its owner (``naming.child_name``), the job's labels
(it is found by them, never by name) and a controller owner reference, so the garbage collector removes
it with its parent. Stage pods run under the restricted Pod Security Standard, with no ServiceAccount
token: they need no API access. API keys reach them only as ``secretKeyRef`` environment variables,
never through the ConfigMap. The job's files live on one
claim (``spec.storage.pvc``, else the operator's default claim), mounted into every stage: stages hand
data to each other through it, so there is never a per-pod scratch volume in its place. The chart's
``stagePods`` and the job's ``spec.pods`` add environment, credentials and metadata
(``stratos.kube.podopts``).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

from stratos.api.spec import DistillationJobSpec
from stratos.contracts.runs import STORAGE_DIR, StageRun
from stratos.kube.config import OperatorConfig
from stratos.kube.naming import child_labels, child_name, owner_reference, owner_uid
from stratos.kube.podopts import (
    StorageUnset,
    apply_pod_options,
    container_security,
    merge_options,
    pod_security,
    storage_claim,
)

CONFIG_DIR = "/etc/stratos/config"
# configmap://NAME/KEY datasets: each ConfigMap is mounted at CONFIGMAP_ROOT/NAME (stratos.data.sources).
CONFIGMAP_ROOT = "/etc/stratos/configmaps"
CONFIG_FILE = "config.json"

TERMINATION_LOG = "/dev/termination-log"
GPU_RESOURCE = "nvidia.com/gpu"
#: Hugging Face downloads (models, datasets) are cached on the job's storage, once per claim.
HF_HOME = f"{STORAGE_DIR}/cache/huggingface"
#: /dev/shm of model pods: NCCL and DataLoader workers exchange tensors there (runtime default: 64 MiB).
SHM_SIZE = "8Gi"
#: Kueue: the LocalQueue a workload is submitted to (sigs.k8s.io/kueue pkg/controller/constants).
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"


def stage_name(body: Mapping[str, Any], run: StageRun) -> str:
    """The name of a stage run's Job and ConfigMap (unique per job uid, stage and candidate)."""
    return child_name(body["metadata"]["name"], owner_uid(body), run.stage, run.candidate)


def stage_labels(body: Mapping[str, Any], run: StageRun) -> dict[str, str]:
    return child_labels(body["metadata"]["name"], owner_uid(body), run.stage, run.candidate)


def stage_configmap(body: Mapping[str, Any], run: StageRun) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": stage_name(body, run),
            "namespace": body["metadata"]["namespace"],
            "labels": stage_labels(body, run),
            "ownerReferences": [owner_reference(body)],
        },
        "data": {CONFIG_FILE: json.dumps(run.config, sort_keys=True, indent=1)},
    }


#: Built-in requests of a stage that loads a model (probes, training, evaluation): host memory to load
#: and save checkpoints, and no memory limit, since a real student's shards pass through host memory
#: and the node is this job's anyway. 8Gi so that it schedules on 16 GiB GPU nodes (e.g. g4dn.xlarge,
#: g6.xlarge); the chart's stagePods.modelStageResources replaces it.
MODEL_STAGE_RESOURCES: dict[str, Any] = {"requests": {"cpu": "2", "memory": "8Gi"}}
#: Built-in resources of a stage that only calls teachers (network-bound).
CALL_STAGE_RESOURCES: dict[str, Any] = {
    "requests": {"cpu": "500m", "memory": "1Gi"},
    "limits": {"memory": "4Gi"},
}


def _given(resources: dict[str, Any] | None) -> dict[str, Any] | None:
    """The chart's resources when it names any (its default, empty requests and limits, names none)."""
    return resources if resources and any(resources.values()) else None


def stage_resources(run: StageRun, cfg: OperatorConfig) -> dict[str, Any]:
    """A stage container's resources: the chart's or the built-in ones for its kind, plus its GPUs."""
    defaults = cfg.pod_defaults
    if not run.gpus:
        return copy.deepcopy(_given(defaults.call_stage_resources) or CALL_STAGE_RESOURCES)
    resources = copy.deepcopy(_given(defaults.model_stage_resources) or MODEL_STAGE_RESOURCES)
    gpus = {GPU_RESOURCE: str(run.gpus)}
    resources["requests"] = {**(resources.get("requests") or {}), **gpus}
    resources["limits"] = {**(resources.get("limits") or {}), **gpus}
    return resources


def stage_job(
    body: Mapping[str, Any], spec: DistillationJobSpec, run: StageRun, cfg: OperatorConfig
) -> dict[str, Any]:
    name, labels = stage_name(body, run), stage_labels(body, run)
    resources = stage_resources(run, cfg)
    container: dict[str, Any] = {
        "name": "stage",
        "image": cfg.worker_image,
        "imagePullPolicy": cfg.image_pull_policy,
        "command": ["python", "-m", run.program],
        "args": ["--config", f"{CONFIG_DIR}/{CONFIG_FILE}", "--result", TERMINATION_LOG],
        "env": [
            {"name": "HOME", "value": "/tmp"},
            {"name": "STRATOS_STORAGE_DIR", "value": STORAGE_DIR},
            {"name": "STRATOS_LOG_FORMAT", "value": cfg.log_format},
            {"name": "HF_HOME", "value": HF_HOME},
            *[
                {"name": s.env, "valueFrom": {"secretKeyRef": {"name": s.secret, "key": s.key}}}
                for s in run.secret_env
            ],
        ],
        "resources": resources,
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [
            {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": "storage", "mountPath": STORAGE_DIR, **_sub_path(spec, cfg)},
            {"name": "tmp", "mountPath": "/tmp"},
            *(
                {"name": f"data-{i}", "mountPath": f"{CONFIGMAP_ROOT}/{cm}", "readOnly": True}
                for i, cm in enumerate(dataset_configmaps(spec))
            ),
        ],
        "securityContext": container_security(cfg),
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        # Training saves a checkpoint on SIGTERM (preemption, suspend); give it time to finish.
        "terminationGracePeriodSeconds": 300 if run.gpus else 30,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security(cfg),
        "containers": [container],
        "volumes": [
            {"name": "config", "configMap": {"name": name}},
            storage_volume(spec, cfg),
            {"name": "tmp", "emptyDir": {}},
            *(
                {"name": f"data-{i}", "configMap": {"name": cm}}
                for i, cm in enumerate(dataset_configmaps(spec))
            ),
        ],
    }
    if run.gpus:
        container["volumeMounts"].append({"name": "shm", "mountPath": "/dev/shm"})
        pod_spec["volumes"].append({"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": SHM_SIZE}})
    if run.node:
        pod_spec.update(pin_to_node(spec, run.node))
    template: dict[str, Any] = {"metadata": {"labels": labels}, "spec": pod_spec}
    apply_pod_options(template, merge_options(cfg.pod_defaults, spec.pods))
    job_spec: dict[str, Any] = {"backoffLimit": spec.retries.backoff_limit, "template": template}
    job_labels = dict(labels)
    if spec.queue_name:
        # Kueue admits the Job by unsuspending it (and may add its ResourceFlavor's node labels to the
        # pod template first); created suspended, no pod exists before admission.
        job_labels[KUEUE_QUEUE_LABEL] = spec.queue_name
        job_spec["suspend"] = True
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": body["metadata"]["namespace"],
            "labels": job_labels,
            "ownerReferences": [owner_reference(body)],
        },
        "spec": job_spec,
    }


def dataset_configmaps(spec: DistillationJobSpec) -> list[str]:
    """Names of the ConfigMaps that ``configmap://NAME/KEY`` dataset URIs point at, in order, once each."""
    return list(dict.fromkeys(name for _, name in dataset_configmap_fields(spec)))


def dataset_configmap_fields(spec: DistillationJobSpec) -> list[tuple[str, str]]:
    """(field of spec.task.dataset, ConfigMap name) for each ``configmap://NAME/KEY`` dataset URI."""
    dataset = spec.task.dataset
    fields = [("train", dataset.train), ("test", dataset.test)] if dataset is not None else []
    return [
        (field, uri.removeprefix("configmap://").split("/", 1)[0])
        for field, uri in fields
        if uri and uri.startswith("configmap://")
    ]


def pin_to_node(spec: DistillationJobSpec, node: str) -> dict[str, Any]:
    """Pod-spec fields that put a pod on the chosen node, tolerating its GPU taint and the job's own.

    Node affinity on the Node's name (``metadata.name``, as the DaemonSet controller does), not a
    ``kubernetes.io/hostname`` selector: on many clouds the hostname label differs from the node name.
    """
    tolerations = [t.model_dump(by_alias=True, exclude_none=True) for t in spec.servers.tolerations]
    tolerations.append({"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"})
    term = {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}
    affinity = {
        "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}}
    }
    return {"affinity": affinity, "tolerations": tolerations}


def storage_volume(spec: DistillationJobSpec, cfg: OperatorConfig) -> dict[str, Any]:
    """The job's storage claim as the volume ``storage``; ``StorageUnset`` when there is none."""
    claim = storage_claim(spec, cfg)
    if claim is None:
        raise StorageUnset()
    return {"name": "storage", "persistentVolumeClaim": {"claimName": claim.claim_name}}


def _sub_path(spec: DistillationJobSpec, cfg: OperatorConfig) -> dict[str, str]:
    claim = storage_claim(spec, cfg)
    return {"subPath": claim.sub_path} if claim is not None and claim.sub_path else {}
