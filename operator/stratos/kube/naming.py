"""Deterministic names and the labels/owner references every child object carries.

A child's name is a function of the owner's identity (its UID), the stage and (where a stage fans out)
the candidate, so a restarted operator finds what it created instead of creating it again, and two jobs
never share a child: ``<readable prefix>-<digest>``, where the prefix (job, stage, candidate, cut to fit
63 characters) is only for people and the digest is a hash of the full identity ``(uid, stage,
candidate)`` with the three parts length-prefixed, so no two identities have the same hashed text.

Names are never parsed and never matched by prefix: the operator finds its children by the labels below
(``LABEL_JOB_UID`` + stage + candidate, see ``child_key``), and a create that meets an object of that name
which is not the same child (another owner, other labels) is refused (``NameTaken``) instead of adopted.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping
from typing import Any

from stratos import API_VERSION, GROUP, KIND

LABEL_JOB = f"{GROUP}/job"
LABEL_JOB_UID = f"{GROUP}/job-uid"
LABEL_STAGE = f"{GROUP}/stage"
LABEL_CANDIDATE = f"{GROUP}/candidate"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "stratos"

_MAX_NAME = 63  # DNS-1123 label: Job names end up in pod labels, which are limited to 63 characters.
DIGEST_CHARS = 16  # base32: 80 bits of sha256
_INVALID = re.compile(r"[^a-z0-9-]+")

ChildKey = tuple[str, str, str]
"""(owner uid, stage, candidate or "") — how children are looked up, from their labels."""


def _identity(uid: str, stage: str, candidate: str | None) -> bytes:
    parts = (uid, stage, candidate or "")
    return b"".join(len(p.encode()).to_bytes(4, "big") + p.encode() for p in parts)


def digest(uid: str, stage: str, candidate: str | None = None) -> str:
    raw = hashlib.sha256(_identity(uid, stage, candidate)).digest()
    return base64.b32encode(raw).decode().lower()[:DIGEST_CHARS]


def child_name(
    job: str, uid: str, stage: str, candidate: str | None = None, *, letter_first: bool = False
) -> str:
    """``<job>-<stage>[-<candidate>]`` cut to fit, then ``-<digest of (uid, stage, candidate)>``.

    ``letter_first`` (Services: DNS-1035) puts an ``s`` before a prefix that starts with a digit.
    """
    readable = _INVALID.sub("-", "-".join([job, stage, *([candidate] if candidate else [])]).lower())
    readable = readable.strip("-")
    if letter_first and not readable[:1].isalpha():
        readable = f"s{readable}"
    room = _MAX_NAME - DIGEST_CHARS - 1
    return f"{readable[:room].rstrip('-')}-{digest(uid, stage, candidate)}"


def owner_uid(body: Mapping[str, Any]) -> str:
    return str(body["metadata"].get("uid") or "")


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


def child_labels(job: str, uid: str, stage: str, candidate: str | None = None) -> dict[str, str]:
    labels = {LABEL_JOB: job, LABEL_JOB_UID: uid, LABEL_STAGE: stage, LABEL_MANAGED_BY: MANAGED_BY}
    if candidate:
        labels[LABEL_CANDIDATE] = candidate
    return labels


def child_key(labels: Mapping[str, str] | None) -> ChildKey | None:
    """The lookup key of a child (or of a pod of a stage Job) from its labels; None when not ours."""
    labels = labels or {}
    uid, stage = labels.get(LABEL_JOB_UID), labels.get(LABEL_STAGE)
    if not uid or not stage:
        return None
    return (uid, stage, labels.get(LABEL_CANDIDATE, ""))


def is_same_child(live: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    """Whether an object found under ``wanted``'s name is that child (same owner and labels)."""
    meta, want = live.get("metadata") or {}, wanted["metadata"]
    owners = {str(o.get("uid")) for o in meta.get("ownerReferences") or [] if o.get("controller")}
    want_owner = {str(o["uid"]) for o in want.get("ownerReferences") or [] if o.get("controller")}
    return owners == want_owner and child_key(meta.get("labels")) == child_key(want.get("labels"))
