"""What the chart and the job add to the operator's pods: environment, credentials, identity, metadata,
security contexts, and which volume holds the job's files.

Pure functions over manifests. The operator's own labels and variables always win over the job's and
the chart's (a job cannot detach its pods from their Job or redirect their storage); the job's entries
win over the chart's.
"""

from __future__ import annotations

import copy
from typing import Any

from stratos.api.pods import PodOptions
from stratos.api.spec import DistillationJobSpec, PvcSource
from stratos.kube.config import OperatorConfig, PodDefaults

#: The restricted Pod Security Standard, with no user or group id: the image's USER (65532) applies on
#: plain Kubernetes, and OpenShift's restricted-v2 admits the pod and assigns ids from its range.
POD_SECURITY: dict[str, Any] = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
CONTAINER_SECURITY: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


class StorageUnset(Exception):
    """The job sets no spec.storage and the operator has no default claim."""

    MESSAGE = (
        "spec.storage is unset and the operator has no default storage (chart value "
        "storage.defaultClaim): set spec.storage.pvc, or install the chart with a default claim"
    )

    def __init__(self) -> None:
        super().__init__(self.MESSAGE)


def storage_claim(spec: DistillationJobSpec, cfg: OperatorConfig) -> PvcSource | None:
    """The claim holding the job's files: spec.storage.pvc, else the operator's default claim, else None."""
    if spec.storage is not None and spec.storage.pvc is not None:
        return spec.storage.pvc
    if cfg.default_claim:
        return PvcSource(claim_name=cfg.default_claim)
    return None


def pod_security(cfg: OperatorConfig) -> dict[str, Any]:
    """The pod's securityContext: restricted without a fixed user id, or the chart's
    ``stagePods.podSecurityContext``."""
    ctx = cfg.pod_defaults.pod_security_context
    return copy.deepcopy(POD_SECURITY if ctx is None else ctx)


def container_security(cfg: OperatorConfig) -> dict[str, Any]:
    """The restricted Pod Security Standard for a container (non-root, read-only, nothing extra), or
    the chart's ``stagePods.containerSecurityContext``."""
    ctx = cfg.pod_defaults.container_security_context
    return copy.deepcopy(CONTAINER_SECURITY if ctx is None else ctx)


def merge_options(defaults: PodDefaults, job: PodOptions) -> PodOptions:
    """The chart's defaults overlaid with the job's options (the job wins by name or key)."""
    job_env = {e.name for e in job.env}
    secrets = [*defaults.image_pull_secrets, *job.image_pull_secrets]
    return PodOptions(
        env=[e for e in defaults.env if e.name not in job_env] + job.env,
        env_from=[*defaults.env_from, *job.env_from],
        service_account_name=job.service_account_name or defaults.service_account_name,
        image_pull_secrets=list({s.name: s for s in secrets}.values()),
        priority_class_name=job.priority_class_name or defaults.priority_class_name,
        labels={**defaults.labels, **job.labels},
        annotations={**defaults.annotations, **job.annotations},
    )


def apply_pod_options(template: dict[str, Any], options: PodOptions) -> None:
    """Add ``options`` to a pod template (``{"metadata": ..., "spec": ...}``) in place."""
    meta = template.setdefault("metadata", {})
    meta["labels"] = {**options.labels, **meta.get("labels", {})}
    if options.annotations:
        meta["annotations"] = {**options.annotations, **meta.get("annotations", {})}
    spec = template["spec"]
    if options.service_account_name:
        spec["serviceAccountName"] = options.service_account_name
    if options.image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": s.name} for s in options.image_pull_secrets]
    if options.priority_class_name:
        spec["priorityClassName"] = options.priority_class_name
    for container in spec["containers"]:
        own = {e["name"] for e in container.get("env", [])}
        extra = [e.to_api() for e in options.env if e.name not in own]
        container["env"] = [*container.get("env", []), *extra]
        if options.env_from:
            container["envFrom"] = [e.to_api() for e in options.env_from]
