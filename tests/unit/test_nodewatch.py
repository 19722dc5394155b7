"""The operator's node cache: paged listing, the watch after it, and listing again on 410 Gone.

The cache itself (``controller.watchcache``) is tested for every kind in ``test_watchcache.py``."""

from __future__ import annotations

import json
import threading
from typing import Any

from kubernetes import client

from stratos.controller.nodewatch import NodeCache, node_view


def node(name: str, version: str, gpus: str = "1") -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "resourceVersion": version,
            "labels": {"a": "b"},
            "annotations": {"x": "y"},
        },
        "status": {"capacity": {"nvidia.com/gpu": gpus}, "images": [{"names": ["big"]}] * 3},
    }


class Raw:
    def __init__(self, payload: Any = None, lines: list[dict[str, Any]] | None = None) -> None:
        self.data = json.dumps(payload).encode()
        self.lines = lines or []

    def stream(self, amt: Any = None, decode_content: bool = False) -> Any:
        for line in self.lines:
            yield (json.dumps(line) + "\n").encode()

    def release_conn(self) -> None:
        pass


class FakeCore:
    """Two pages, a watch with an update, a delete and a 410; then a second listing and a quiet watch."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.quiet = threading.Event()

    def list_node(self, **kwargs: Any) -> Raw:
        self.calls.append(kwargs)
        lists = [c for c in self.calls if not c.get("watch")]
        if kwargs.get("watch"):
            if len(lists) == 2:  # after the two pages of the first listing
                return Raw(
                    lines=[
                        {"type": "MODIFIED", "object": node("n1", "11", gpus="4")},
                        {"type": "DELETED", "object": node("n2", "12")},
                        {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "13"}}},
                        {"type": "ERROR", "object": {"code": 410, "message": "too old"}},
                    ]
                )
            self.quiet.set()
            self.quiet.wait()
            raise RuntimeError("stop")
        if len(lists) == 1:
            return Raw({"items": [node("n1", "1")], "metadata": {"continue": "t1"}})
        if len(lists) == 2 and kwargs.get("_continue") == "t1":
            return Raw({"items": [node("n2", "2")], "metadata": {"resourceVersion": "10"}})
        return Raw(
            {"items": [node("n1", "20", gpus="8"), node("n3", "21")], "metadata": {"resourceVersion": "22"}}
        )


def test_the_cache_lists_in_pages_follows_the_watch_and_lists_again_when_expired() -> None:
    cache = NodeCache(client.ApiClient(), page_size=1)
    fake = FakeCore()
    cache._lister = fake.list_node
    assert cache.snapshot() is None  # not listed yet: handlers must not decide on it
    cache.start()
    assert fake.quiet.wait(10)
    snapshot = {n["metadata"]["name"]: n for n in cache.snapshot() or []}
    assert set(snapshot) == {"n1", "n3"}  # n2 deleted, n3 from the second listing
    assert snapshot["n1"]["status"]["capacity"] == {"nvidia.com/gpu": "8"}
    assert "images" not in snapshot["n1"]["status"] and snapshot["n1"]["metadata"]["annotations"] == {}
    watches = [c for c in fake.calls if c.get("watch")]
    assert watches[0]["resource_version"] == "10" and watches[0]["allow_watch_bookmarks"]
    assert watches[1]["resource_version"] == "22"
    assert fake.calls[0]["limit"] == 1 and fake.calls[1]["_continue"] == "t1"
    assert fake.calls[0]["resource_version"] == "0"  # the first page from the API server's cache
    cache.stop()


def test_node_view_keeps_only_what_decisions_read() -> None:
    view = node_view(
        {"metadata": {"name": "n", "annotations": {"stratos.io/hourly-cost": "1", "other": "x"}}}
    )
    assert view["metadata"]["annotations"] == {"stratos.io/hourly-cost": "1"}
    assert view["spec"] == {"unschedulable": False, "taints": []}
