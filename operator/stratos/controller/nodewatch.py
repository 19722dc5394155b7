"""The operator's view of the cluster's Nodes: a list-then-watch cache of the few fields decisions read.

A kopf index of Nodes held every handler until thousands of Nodes had gone through it one by one: a
restarted operator decided nothing for most of a minute. Nodes come from a ``WatchCache`` instead
(``controller.watchcache``: paged listing as raw JSON reduced at once to ``node_view``, then a watch from
the listing's resourceVersion, a fresh listing after 410 Gone). Handlers never wait for it: until the
first listing is complete ``snapshot()`` is None, and the stage machine then holds only the decisions
that read nodes (server selection, node loss) while every other stage goes on.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kubernetes import client

from stratos import GROUP
from stratos.controller.rawapi import raw_lister
from stratos.controller.watchcache import PAGE_SIZE, WatchCache


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


class NodeCache(WatchCache[str]):
    """Every Node's ``node_view``, kept current by one list and one watch in a daemon thread."""

    def __init__(self, api: client.ApiClient, *, page_size: int = PAGE_SIZE) -> None:
        super().__init__("nodes", raw_lister(api, "/api/v1/nodes"), node_view, node_name, page_size=page_size)

    def snapshot(self) -> list[dict[str, Any]] | None:
        """Every Node's view, or None until the first complete listing."""
        return self.views()
