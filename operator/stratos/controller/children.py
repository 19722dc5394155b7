"""Manifests of the objects a DistillationJob owns: one ConfigMap and one batch/v1 Job per stage run.

Every child has a deterministic name unique to its owner (``naming.child_name``), the job's labels
(it is found by them, never by name) and a controller owner reference, so the garbage collector removes
it with its parent. Stage pods run under the restricted Pod Security Standard, with no ServiceAccount
token: they need no API access. API keys reach them only as ``secretKeyRef`` environment variables,
never through the ConfigMap.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from stratos.api.spec import DistillationJobSpec
from stratos.controller.config import OperatorConfig
from stratos.controller.machine import StageRun
from stratos.controller.naming import child_labels, child_name, owner_reference, owner_uid

CONFIG_DIR = "/etc/stratos/config"
# configmap://NAME/KEY datasets: each ConfigMap is mounted at CONFIGMAP_ROOT/NAME (stratos.data.sources).
CONFIGMAP_ROOT = "/etc/stratos/configmaps"
CONFIG_FILE = "config.json"
STORAGE_DIR = "/var/lib/stratos"
TERMINATION_LOG = "/dev/termination-log"
GPU_RESOURCE = "nvidia.com/gpu"
RUN_AS_USER = 65532
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


def stage_job(
    body: Mapping[str, Any], spec: DistillationJobSpec, run: StageRun, cfg: OperatorConfig
) -> dict[str, Any]:
    name, labels = stage_name(body, run), stage_labels(body, run)
    if run.gpus:
        # Model stages: host memory to load and save checkpoints, and every GPU asked for. No memory
        # limit: a real student's shards pass through host memory, and the node is this job's anyway.
        resources: dict[str, Any] = {
            "requests": {"cpu": "2", "memory": "16Gi", GPU_RESOURCE: str(run.gpus)},
            "limits": {GPU_RESOURCE: str(run.gpus)},
        }
    else:  # teacher calls and data synthesis: network-bound
        resources = {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "4Gi"}}
    container = {
        "name": "stage",
        "image": cfg.worker_image,
        "imagePullPolicy": cfg.image_pull_policy,
        "command": ["python", "-m", run.program],
        "args": ["--config", f"{CONFIG_DIR}/{CONFIG_FILE}", "--result", TERMINATION_LOG],
        "env": [
            {"name": "HOME", "value": "/tmp"},
            {"name": "STRATOS_STORAGE_DIR", "value": STORAGE_DIR},
            {"name": "STRATOS_LOG_FORMAT", "value": cfg.log_format},
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
            {"name": "storage", "mountPath": STORAGE_DIR, **_sub_path(spec)},
            {"name": "tmp", "mountPath": "/tmp"},
            *(
                {"name": f"data-{i}", "mountPath": f"{CONFIGMAP_ROOT}/{cm}", "readOnly": True}
                for i, cm in enumerate(dataset_configmaps(spec))
            ),
        ],
        "securityContext": container_security(),
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        # Training saves a checkpoint on SIGTERM (preemption, suspend); give it time to finish.
        "terminationGracePeriodSeconds": 300 if run.gpus else 30,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security(),
        "containers": [container],
        "volumes": [
            {"name": "config", "configMap": {"name": name}},
            storage_volume(spec),
            {"name": "tmp", "emptyDir": {}},
            *(
                {"name": f"data-{i}", "configMap": {"name": cm}}
                for i, cm in enumerate(dataset_configmaps(spec))
            ),
        ],
    }
    if run.node:
        pod_spec.update(pin_to_node(spec, run.node))
    job_spec: dict[str, Any] = {
        "backoffLimit": spec.retries.backoff_limit,
        "template": {"metadata": {"labels": labels}, "spec": pod_spec},
    }
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


def container_security() -> dict[str, Any]:
    """The restricted Pod Security Standard for a container: non-root, read-only, nothing extra."""
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def pod_security() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_USER,
        "fsGroup": RUN_AS_USER,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def pin_to_node(spec: DistillationJobSpec, node: str) -> dict[str, Any]:
    """Pod-spec fields that put a pod on the chosen node, tolerating its GPU taint and the job's own."""
    tolerations = [t.model_dump(by_alias=True, exclude_none=True) for t in spec.servers.tolerations]
    tolerations.append({"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"})
    return {"nodeSelector": {"kubernetes.io/hostname": node}, "tolerations": tolerations}


def storage_volume(spec: DistillationJobSpec) -> dict[str, Any]:
    storage = spec.storage
    if storage is not None and storage.pvc is not None:
        return {"name": "storage", "persistentVolumeClaim": {"claimName": storage.pvc.claim_name}}
    return {"name": "storage", "emptyDir": {}}


def _sub_path(spec: DistillationJobSpec) -> dict[str, str]:
    storage = spec.storage
    if storage is not None and storage.pvc is not None and storage.pvc.sub_path:
        return {"subPath": storage.pvc.sub_path}
    return {}
