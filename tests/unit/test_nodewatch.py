"""The operator's node cache: paged listing, the watch after it, and listing again on 410 Gone.

The cache itself (``controller.watchcache``) is tested for every kind in ``test_watchcache.py``."""

from __future__ import annotations

import json
import threading
from typing import Any

from kubernetes import client

from stratos.controller.nodewatch import NodeCache, decode_event, decode_page, node_view


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


def full_node() -> dict[str, Any]:
    """A Node as the API server sends it, with the fields no decision reads."""
    return {
        "metadata": {
            "name": "gpu-1",
            "uid": "u1",
            "resourceVersion": "7",
            "labels": {"nvidia.com/gpu.product": "NVIDIA-L20", "nvidia.com/gpu.count": "2"},
            "annotations": {"stratos.io/hourly-cost": "1.5", "node.alpha.kubernetes.io/ttl": "0"},
            "managedFields": [{"manager": "m", "fieldsV1": {"f:metadata": {"f:labels": {}}}}],
        },
        "spec": {
            "unschedulable": True,
            "taints": [
                {"key": "k", "value": "v", "effect": "NoSchedule", "timeAdded": "2026-01-01T00:00:00Z"}
            ],
        },
        "status": {
            "capacity": {"nvidia.com/gpu": "2", "cpu": "16"},
            "allocatable": {"nvidia.com/gpu": "2"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "ok"}],
            "nodeInfo": {"machineID": "x"},
            "images": [{"names": ["big"], "sizeBytes": 1}],
            "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}],
        },
    }


def test_pages_and_events_are_decoded_to_the_fields_the_view_reads_and_the_view_is_unchanged() -> None:
    raw = json.dumps({"items": [full_node()], "metadata": {"resourceVersion": "9", "continue": "t"}})
    page = decode_page(raw.encode())
    assert page["metadata"] == {"resourceVersion": "9", "continue": "t"}
    slim = page["items"][0]
    assert "managedFields" not in slim["metadata"]
    assert set(slim["status"]) == {"capacity", "allocatable", "conditions"}
    assert slim["status"]["conditions"] == [{"type": "Ready", "status": "True"}]
    assert node_view(slim) == node_view(full_node())
    assert node_view(slim)["spec"]["taints"][0]["effect"] == "NoSchedule"
    event = decode_event(json.dumps({"type": "MODIFIED", "object": full_node()}))
    assert event["type"] == "MODIFIED" and node_view(event["object"]) == node_view(full_node())
    # A watch error carries a Status, not a Node: its code must survive the decoding (410: list again).
    gone = decode_event(
        json.dumps({"type": "ERROR", "object": {"kind": "Status", "code": 410, "message": "old"}})
    )
    assert gone["object"]["code"] == 410 and gone["object"]["message"] == "old"
