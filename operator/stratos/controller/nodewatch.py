"""The operator's view of the cluster's Nodes: a list-then-watch cache of the few fields decisions read.

A kopf index of Nodes held every handler until thousands of Nodes had gone through it one by one: a
restarted operator decided nothing for most of a minute. Nodes come from a ``WatchCache`` instead
(``controller.watchcache``: paged listing reduced at once to ``node_view``, then a watch from the
listing's resourceVersion, a fresh listing after 410 Gone). Handlers do not wait for it: until the first
listing is complete ``snapshot()`` is None, and the stage machine then holds only the decisions that read
nodes (server selection, the joint rule's student selection, node loss) while every other stage goes on;
the operator's tick lets a job whose next decision reads nodes wait for the first listing, briefly, at
start (``startup_wait``).

The listing is one answer of several megabytes at the paper's 3,732 nodes (the API server answers a
listing from its cache, ``resourceVersion=0``, in one piece), and decoding it all with ``json`` took
about as long as the API server took to send it, mostly for what no decision reads (managed fields,
node info, addresses, images). Pages and watch events are decoded with msgspec into ``SlimNode``: only
the fields ``node_view`` keeps are built at all, the rest is skipped while parsing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypedDict

import msgspec
from kubernetes import client

from stratos import GROUP
from stratos.controller.rawapi import raw_lister
from stratos.controller.watchcache import PAGE_SIZE, WatchCache


# What is decoded of a Node (unknown fields are skipped by the decoder). Leaves stay ``Any``: a value of
# an unexpected type is kept as it came rather than refused, and ``node_view`` reads it as before.
class _Meta(TypedDict, total=False):
    name: Any
    uid: Any
    resourceVersion: Any
    labels: dict[str, Any]
    annotations: dict[str, Any]


class _Spec(TypedDict, total=False):
    unschedulable: Any
    taints: list[Any]


class _Condition(TypedDict, total=False):
    type: Any
    status: Any


class _Status(TypedDict, total=False):
    conditions: list[_Condition]
    capacity: dict[str, Any]
    allocatable: dict[str, Any]


class SlimNode(TypedDict, total=False):
    metadata: _Meta
    spec: _Spec
    status: _Status
    # A watch's ERROR event carries a Status object in place of a Node: its code says 410 Gone.
    code: Any
    message: Any


_ListMeta = TypedDict("_ListMeta", {"resourceVersion": Any, "continue": Any}, total=False)


class NodePage(TypedDict, total=False):
    items: list[SlimNode]
    metadata: _ListMeta


class NodeEvent(TypedDict, total=False):
    type: Any
    object: SlimNode


_PAGE = msgspec.json.Decoder(NodePage)
_EVENT = msgspec.json.Decoder(NodeEvent)


def decode_page(data: bytes | str) -> Mapping[str, Any]:
    """A page of a Node listing, with only the fields of ``SlimNode``."""
    return _PAGE.decode(data)


def decode_event(data: bytes | str) -> Mapping[str, Any]:
    """One event of a Node watch, with only the fields of ``SlimNode``."""
    return _EVENT.decode(data)


def node_view(body: Mapping[str, Any]) -> dict[str, Any]:
    """A Node reduced to the fields the node-facts code reads (labels, taints, capacity, Ready)."""
    meta, spec, status = body.get("metadata") or {}, body.get("spec") or {}, body.get("status") or {}
    return {
        "metadata": {
            "name": meta.get("name"),
            "labels": dict(meta.get("labels") or {}),
            "annotations": {k: v for k, v in (meta.get("annotations") or {}).items() if k.startswith(GROUP)},
        },
        "spec": {"unschedulable": spec.get("unschedulable", False), "taints": list(spec.get("taints") or [])},
        "status": {
            "conditions": [
                {"type": cond.get("type"), "status": cond.get("status")}
                for cond in status.get("conditions") or []
            ],
            "capacity": dict(status.get("capacity") or {}),
            "allocatable": dict(status.get("allocatable") or {}),
        },
    }


def node_name(body: Mapping[str, Any]) -> str | None:
    name = (body.get("metadata") or {}).get("name")
    return str(name) if name else None


def startup_wait(started_at: float | None, now: float, window: float) -> float:
    """How long a reader may still wait for the first listing of a cache started at ``started_at``: what is
    left of ``window`` seconds from the start, then nothing (a listing that keeps failing must not hold
    its readers on every call)."""
    if started_at is None:
        return 0.0
    return max(0.0, started_at + window - now)


class NodeCache(WatchCache[str]):
    """Every Node's ``node_view``, kept current by one list and one watch in a daemon thread."""

    def __init__(self, api: client.ApiClient, *, page_size: int = PAGE_SIZE) -> None:
        super().__init__(
            "nodes",
            raw_lister(api, "/api/v1/nodes"),
            node_view,
            node_name,
            page_size=page_size,
            decode_page=decode_page,
            decode_event=decode_event,
        )

    def snapshot(self) -> list[dict[str, Any]] | None:
        """Every Node's view, or None until the first complete listing."""
        return self.views()
