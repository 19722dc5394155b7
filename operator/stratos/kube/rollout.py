"""Live versus desired serving objects: the patch to apply, and whether the rollout is done.

Pure functions over API objects as plain dicts. Equality is judged by the spec hash annotation that
``stratos.kube.serving`` puts on every desired object, never by comparing fields: the live objects
carry server-side defaults, so a field-by-field comparison would always find a difference.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from stratos.kube.serving import SPEC_HASH

#: Pod-spec keys present only in some desired objects: a JSON merge patch must null them explicitly.
#: (nodeSelector: what operators before node affinity set.)
_OPTIONAL_POD_KEYS = (
    "nodeSelector",
    "affinity",
    "tolerations",
    "serviceAccountName",
    "imagePullSecrets",
    "priorityClassName",
)


def serving_patch(live: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any] | None:
    """JSON merge patch (``application/merge-patch+json``) taking ``live`` to ``desired``; None if equal.

    Equality is judged by the spec hash annotation. The patch carries the whole desired spec (lists such
    as containers are replaced whole by a merge patch) and nulls pod-spec keys the desired object lacks.
    (A missing object is created from ``desired`` as it is.)
    """
    want = desired["metadata"]["annotations"][SPEC_HASH]
    if (live.get("metadata", {}).get("annotations") or {}).get(SPEC_HASH) == want:
        return None
    spec = copy.deepcopy(dict(desired["spec"]))
    pod = spec.get("template", {}).get("spec")
    if pod is not None:
        for key in _OPTIONAL_POD_KEYS:
            pod.setdefault(key, None)
    metadata = {"labels": dict(desired["metadata"]["labels"]), "annotations": {SPEC_HASH: want}}
    return {"metadata": metadata, "spec": spec}


def deployment_ready(live: Mapping[str, Any] | None) -> bool:
    """Whether the live Deployment has rolled out its current spec and every replica is ready.

    A Deployment scaled to zero replicas serves nothing, so it is never ready.
    """
    if not live:
        return False
    want = int((live.get("spec") or {}).get("replicas", 1))
    status = live.get("status") or {}
    generation = (live.get("metadata") or {}).get("generation")
    if generation is not None and int(status.get("observedGeneration") or 0) < int(generation):
        return False
    updated, ready = int(status.get("updatedReplicas") or 0), int(status.get("readyReplicas") or 0)
    return want > 0 and updated >= want and ready >= want
