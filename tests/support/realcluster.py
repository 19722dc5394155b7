"""What the real-node tier installs on its cluster: the chart's release and the facts of its GPU node."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from support.controlplane import rest

CHART = Path(__file__).resolve().parents[2] / "charts" / "stratos"
#: Where `helm install` puts the operator, and the claim the chart names as the default storage.
RELEASE_NAMESPACE = "stratos-system"
RELEASE = "stratos"
DEFAULT_CLAIM = "stratos-data"
RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted"}
#: The node pool label the tier's jobs select (the real node carries it).
POOL = "realnode"


def operator_ready(api: Any) -> bool:
    deployment = rest(api, "GET", f"/apis/apps/v1/namespaces/{RELEASE_NAMESPACE}/deployments/{RELEASE}")
    if deployment.get("status", {}).get("availableReplicas") == 1:
        return True
    pods = rest(api, "GET", f"/api/v1/namespaces/{RELEASE_NAMESPACE}/pods")["items"]
    for pod in pods:
        for status in pod.get("status", {}).get("containerStatuses") or []:
            waiting = status.get("state", {}).get("waiting", {})
            if waiting.get("reason") in (
                "ErrImageNeverPull",
                "CreateContainerConfigError",
                "InvalidImageName",
            ):
                raise AssertionError(f"operator pod {pod['metadata']['name']}: {waiting}")
            if status.get("restartCount", 0) >= 3:
                raise AssertionError(f"operator pod {pod['metadata']['name']} restarts: {status}")
    return False
