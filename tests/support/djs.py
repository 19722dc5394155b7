"""DistillationJobs on the test API server: apply one, read it back, its conditions and Events."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from support.controlplane import ControlPlane, rest

DJ_PATH = "/apis/stratos.io/v1alpha1/namespaces/{ns}/distillationjobs/{name}"


def apply(cp: ControlPlane, namespace: str, manifest: Mapping[str, Any]) -> None:
    cp.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(dict(manifest)))


def get_dj(api: Any, namespace: str, name: str) -> dict[str, Any]:
    return dict(rest(api, "GET", DJ_PATH.format(ns=namespace, name=name)))


def condition(dj: Mapping[str, Any], ctype: str) -> dict[str, Any]:
    """The job's condition of this type, or {} if it has none."""
    for cond in (dj.get("status") or {}).get("conditions") or []:
        if cond["type"] == ctype:
            return dict(cond)
    return {}


def events_for(api: Any, namespace: str, name: str) -> list[dict[str, Any]]:
    found = rest(api, "GET", f"/api/v1/namespaces/{namespace}/events")
    return [e for e in found["items"] if e["involvedObject"].get("name") == name]


def child(api: Any, namespace: str, name: str, stage: str, candidate: str | None = None) -> str:
    """The name of a DistillationJob's child (stage Job, ConfigMap, serving Deployment) on the server."""
    from stratos.kube.naming import child_name

    return child_name(name, get_dj(api, namespace, name)["metadata"]["uid"], stage, candidate)


def service(api: Any, namespace: str, name: str) -> str:
    """The name of a DistillationJob's serving Service."""
    from stratos.kube.serving import service_name

    return service_name(name, get_dj(api, namespace, name)["metadata"]["uid"])


def stage_jobs(api: Any, namespace: str, name: str, **labels: str) -> list[dict[str, Any]]:
    """The stage Jobs labelled with the DistillationJob's uid (and ``stratos.io/<key>=<value>`` for each of
    ``labels``, e.g. ``stage="train"``): found by owner, never by name."""
    uid = get_dj(api, namespace, name)["metadata"]["uid"]
    selector = ",".join([f"stratos.io/job-uid={uid}", *(f"stratos.io/{k}={v}" for k, v in labels.items())])
    found = rest(api, "GET", f"/apis/batch/v1/namespaces/{namespace}/jobs", query={"labelSelector": selector})
    return list(found["items"])
