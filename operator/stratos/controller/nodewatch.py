"""The operator's view of the cluster's Nodes: a list-then-watch cache of the few fields decisions read.

kopf runs no handler of any kind until every index has been filled from its initial listing, and it
pushes each listed object through its handler machinery one at a time: with thousands of Nodes a
restarted operator decided nothing for most of a minute. This cache lists Nodes itself, in pages, as
raw JSON reduced at once to ``node_view`` (no client models), then watches from the list's
resourceVersion. Handlers never wait for it: until the first listing is complete ``snapshot()`` is
None, and the stage machine then holds only the decisions that read nodes (server selection, node
loss) while every other stage goes on.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from stratos import GROUP

LOG = logging.getLogger(__name__)
PAGE_SIZE = 500
WATCH_SECONDS = 270
RETRY_SECONDS = (0.5, 1.0, 2.0, 5.0, 10.0)


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


class Expired(Exception):
    """The watch's resourceVersion is too old (410 Gone): list again."""


class NodeCache:
    """Every Node's ``node_view``, kept current by one list and one watch in a daemon thread."""

    def __init__(self, api: client.ApiClient, *, page_size: int = PAGE_SIZE) -> None:
        self._core = client.CoreV1Api(api)
        self._page_size = page_size
        self._nodes: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._synced = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.listed_seconds: float | None = None

    def start(self) -> NodeCache:
        self._thread = threading.Thread(target=self._loop, name="stratos-node-cache", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    @property
    def synced(self) -> bool:
        return self._synced.is_set()

    def wait_synced(self, timeout: float) -> bool:
        return self._synced.wait(timeout)

    def snapshot(self) -> list[dict[str, Any]] | None:
        """Every Node's view, or None until the first complete listing."""
        if not self._synced.is_set():
            return None
        with self._lock:
            return list(self._nodes.values())

    def _loop(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                version = self._list()
                failures = 0
                while not self._stop.is_set():
                    version = self._watch(version)
            except Expired:
                continue
            except Exception as err:  # the API server restarting, a dropped connection: list again
                delay = RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)]
                failures += 1
                LOG.warning("node cache: %s: %s; listing again in %.1f s", type(err).__name__, err, delay)
                self._stop.wait(delay)

    def _list(self) -> str:
        started = time.monotonic()
        nodes: dict[str, dict[str, Any]] = {}
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"limit": self._page_size, "_preload_content": False}
            if token:
                kwargs["_continue"] = token
            else:
                # Any version will do (the watch that follows brings it up to date): the API server then
                # answers from its watch cache instead of reading every Node from etcd, as informers do.
                kwargs["resource_version"] = "0"
            try:
                raw: Any = self._core.list_node(**kwargs)  # an HTTP response: no client models
                page = json.loads(raw.data)
            except ApiException as err:
                if err.status == 410:  # the continue token expired mid-listing
                    raise Expired() from err
                raise
            for item in page.get("items") or []:
                view = node_view(item)
                nodes[str(view["metadata"]["name"])] = view
            meta = page.get("metadata") or {}
            token = meta.get("continue")
            if not token:
                break
        with self._lock:
            self._nodes = nodes
        self.listed_seconds = time.monotonic() - started
        self._synced.set()
        return str(meta.get("resourceVersion") or "")

    def _watch(self, version: str) -> str:
        response: Any = self._core.list_node(
            watch=True,
            resource_version=version,
            allow_watch_bookmarks=True,
            timeout_seconds=WATCH_SECONDS,
            _preload_content=False,
        )
        try:
            for event in _events(iter_resp_lines(response), self._stop.is_set):
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise Expired()
                    raise RuntimeError(f"watch error: {obj.get('message')}")
                version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                if kind == "BOOKMARK":
                    continue
                name = str((obj.get("metadata") or {}).get("name"))
                with self._lock:
                    if kind == "DELETED":
                        self._nodes.pop(name, None)
                    else:
                        self._nodes[name] = node_view(obj)
        finally:
            response.release_conn()
        return version


def _events(lines: Iterator[Any], stopped: Callable[[], bool]) -> Iterator[dict[str, Any]]:
    for line in lines:
        if stopped():
            return
        text = line.decode() if isinstance(line, bytes) else str(line)
        if text.strip():
            yield json.loads(text)
