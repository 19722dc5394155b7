"""Deterministic names and the labels/owner references every child object carries.

A child's name is a function of the parent's name, the stage and (where a stage fans out) the candidate,
so a restarted operator finds what it created instead of creating it again.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

from stratos import API_VERSION, GROUP, KIND

LABEL_JOB = f"{GROUP}/job"
LABEL_STAGE = f"{GROUP}/stage"
LABEL_CANDIDATE = f"{GROUP}/candidate"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "stratos"

_MAX_NAME = 63  # DNS-1123 label: Job names end up in pod labels, which are limited to 63 characters.
_INVALID = re.compile(r"[^a-z0-9-]+")


def child_name(job: str, stage: str, candidate: str | None = None) -> str:
    """``<job>-<stage>[-<candidate>]``, shortened with a stable hash when it would exceed 63 chars."""
    parts = [job, stage] + ([candidate] if candidate else [])
    raw = "-".join(parts)
    name = _INVALID.sub("-", raw.lower()).strip("-")
    if len(name) <= _MAX_NAME and name == raw:
        return name
    digest = hashlib.sha256(raw.encode()).hexdigest()[:8]
    return f"{name[: _MAX_NAME - 9].rstrip('-')}-{digest}"


def owner_reference(body: Mapping[str, Any]) -> dict[str, Any]:
    meta = body["metadata"]
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def child_labels(job: str, stage: str, candidate: str | None = None) -> dict[str, str]:
    labels = {LABEL_JOB: job, LABEL_STAGE: stage, LABEL_MANAGED_BY: MANAGED_BY}
    if candidate:
        labels[LABEL_CANDIDATE] = candidate
    return labels
