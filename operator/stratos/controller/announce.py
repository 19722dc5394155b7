"""Announcements (Events) that survive an operator stopping at any point.

A decision and its Event are two writes; an operator killed between them used to lose the Event (the
decision, found in status after the restart, is not made again, so it is not announced again). Events
are therefore recorded first, in the same status write as the decision they announce
(``status.announcements``, an outbox), and posted on the next reconcile under a name derived from the
job's uid and the announcement's sequence number. Posting the same announcement twice is refused by
the API server (409) and so is a no-op; an announcement leaves the outbox only once it is posted.
Whatever the point the operator stops at, each announcement is posted exactly once.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from stratos import GROUP, KIND, VERSION
from stratos.controller import rawapi
from stratos.controller.faults import crash_point
from stratos.pipeline.context import Event

COMPONENT = "stratos-operator"
_INSTANCE = socket.gethostname()[:128]


def event_name(body: Mapping[str, Any], seq: int) -> str:
    """Unique per job (its uid) and announcement; at most 253 characters (a job name is at most 63)."""
    meta = body["metadata"]
    return f"{meta['name']}.{str(meta['uid'])[:8]}-{seq}"


def event_manifest(body: Mapping[str, Any], announcement: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    meta = body["metadata"]
    stamp = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": event_name(body, int(announcement["seq"])), "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": KIND,
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
        },
        "type": announcement["type"],
        "reason": announcement["reason"],
        "message": str(announcement["message"])[:1024],
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": _INSTANCE,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


def queue(status: dict[str, Any], events: Sequence[Event], pending: Sequence[Mapping[str, Any]]) -> None:
    """Set ``status``'s outbox to the still ``pending`` announcements plus ``events``, numbered on."""
    seq = int(status.get("announcedSeq") or 0)
    outbox = [dict(a) for a in pending]
    for event in events:
        outbox.append(
            {"seq": seq, "type": event.type, "reason": event.reason, "message": event.message[:4096]}
        )
        seq += 1
    if outbox:
        status["announcements"] = outbox[-256:]
    else:
        status.pop("announcements", None)
    if seq:
        status["announcedSeq"] = seq


def post(
    api: client.ApiClient, body: Mapping[str, Any], outbox: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Post the outbox's announcements in order; returns those still to post (after a failure)."""
    namespace = str(body["metadata"]["namespace"])
    for i, announcement in enumerate(outbox):
        crash_point("before-announce", str(announcement.get("reason")))
        try:
            manifest: Any = event_manifest(body, announcement, datetime.now(UTC))
            rawapi.create(api, "Event", namespace, manifest)
        except ApiException as err:
            if err.status == 409:  # posted before (by an operator that stopped before dropping it)
                continue
            if err.status in (400, 422):  # a malformed announcement can never be posted: drop it
                continue
            return [dict(a) for a in outbox[i:]]
        crash_point("after-announce", str(announcement.get("reason")))
    return []
