"""Fake GPU nodes for the test control plane.

A Node is just an API object: registering one with GPU capacity in its status is enough for the
scheduler to bind pods that request ``nvidia.com/gpu`` to it, and for the operator to read GPU
Feature Discovery labels from it. No kubelet runs behind these nodes (see support.kubelet).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.exceptions import ApiException

from support.controlplane import rest

# Added by the TaintNodesByCondition admission plugin to every new Node; normally the node
# lifecycle controller lifts it once the node is Ready, but that controller is off in the tests.
NOT_READY_TAINT = "node.kubernetes.io/not-ready"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def gfd_labels(product: str, count: int, memory_mib: int) -> dict[str, str]:
    """The labels NVIDIA GPU Feature Discovery puts on a node with ``count`` GPUs of ``product``."""
    return {
        "nvidia.com/gpu.present": "true",
        "nvidia.com/gpu.product": product,
        "nvidia.com/gpu.count": str(count),
        "nvidia.com/gpu.memory": str(memory_mib),
    }


def create_gpu_node(
    api: Any,
    name: str,
    *,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    gpus: int = 1,
    ready: bool = True,
    unschedulable: bool = False,
    taints: Sequence[Mapping[str, Any]] | None = None,
    cpu: str = "16",
    memory: str = "64Gi",
    pods: int = 110,
) -> dict[str, Any]:
    """Registers Node ``name`` with ``gpus`` nvidia.com/gpu and returns it as an API dict.

    ``api`` is an ApiClient (admin). ``taints`` are API dicts ({"key", "value", "effect"});
    they replace the not-ready taint added at creation (kept if ``ready`` is False). The node gets
    the standard hostname/os/arch labels plus ``labels``.
    """
    all_labels = {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        **(labels or {}),
    }
    body = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": all_labels, "annotations": dict(annotations or {})},
        "spec": {"unschedulable": unschedulable},
    }
    rest(api, "POST", "/api/v1/nodes", body=body)

    spec_taints = [dict(t) for t in taints or ()]
    if not ready:
        spec_taints.append({"key": NOT_READY_TAINT, "effect": "NoSchedule"})
    # A JSON merge patch replaces the whole list, dropping the taint admission added.
    rest(api, "PATCH", f"/api/v1/nodes/{name}", body={"spec": {"taints": spec_taints or None}})

    resources = {
        "cpu": cpu,
        "memory": memory,
        "pods": str(pods),
        "ephemeral-storage": "500Gi",
        "nvidia.com/gpu": str(gpus),
    }
    now = _now()
    status = {
        "capacity": resources,
        "allocatable": resources,
        "conditions": [
            {
                "type": "Ready",
                "status": "True" if ready else "False",
                "lastHeartbeatTime": now,
                "lastTransitionTime": now,
                "reason": "KubeletReady" if ready else "KubeletNotReady",
                "message": "fake node registered by the test suite",
            },
            *(
                {
                    "type": t,
                    "status": "False",
                    "lastHeartbeatTime": now,
                    "lastTransitionTime": now,
                    "reason": f"KubeletHas{r}",
                    "message": "",
                }
                for t, r in (
                    ("MemoryPressure", "SufficientMemory"),
                    ("DiskPressure", "NoDiskPressure"),
                    ("PIDPressure", "SufficientPID"),
                )
            ),
        ],
        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": name}],
        "nodeInfo": {
            "architecture": "amd64",
            "operatingSystem": "linux",
            "osImage": "Stratos fake node",
            "kernelVersion": "",
            "kubeletVersion": "v0.0.0-fake",
            "kubeProxyVersion": "",
            "containerRuntimeVersion": "fake://0",
            "machineID": name,
            "systemUUID": name,
            "bootID": name,
        },
    }
    rest(api, "PATCH", f"/api/v1/nodes/{name}/status", body={"status": status})
    return get_node(api, name)


def get_node(api: Any, name: str) -> dict[str, Any]:
    """Node ``name`` as a plain API dict (camelCase keys)."""
    node: dict[str, Any] = rest(api, "GET", f"/api/v1/nodes/{name}")
    return node


def set_node_ready(api: Any, name: str, ready: bool) -> None:
    """Flips the Ready condition (and the not-ready taint) of a fake node."""
    node = get_node(api, name)
    now = _now()
    conditions = [c for c in node["status"].get("conditions", []) if c["type"] != "Ready"]
    conditions.append(
        {
            "type": "Ready",
            "status": "True" if ready else "False",
            "lastHeartbeatTime": now,
            "lastTransitionTime": now,
            "reason": "KubeletReady" if ready else "KubeletNotReady",
            "message": "set by the test suite",
        }
    )
    rest(
        api,
        "PATCH",
        f"/api/v1/nodes/{name}/status",
        body={"status": {"conditions": conditions}},
        content_type="application/strategic-merge-patch+json",
    )
    taints = [t for t in node["spec"].get("taints") or [] if t["key"] != NOT_READY_TAINT]
    if not ready:
        taints.append({"key": NOT_READY_TAINT, "effect": "NoSchedule"})
    rest(api, "PATCH", f"/api/v1/nodes/{name}", body={"spec": {"taints": taints or None}})


def delete_node(api: Any, name: str) -> None:
    """Deletes Node ``name``; a node that is already gone is fine."""
    try:
        rest(api, "DELETE", f"/api/v1/nodes/{name}")
    except ApiException as e:
        if e.status != 404:
            raise


def delete_all_nodes(api: Any) -> None:
    """Deletes every Node (the tests' nodes are all fake)."""
    for node in rest(api, "GET", "/api/v1/nodes")["items"]:
        delete_node(api, node["metadata"]["name"])
