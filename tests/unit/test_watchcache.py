"""The operator's list-then-watch cache (``controller.watchcache``) and its child caches (``childwatch``).

A scripted lister answers the cache's calls in order (pages, watch streams, 410 Gone) and then blocks, so
each test checks the cache's content once the script has been played, against what the API server said.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kopf
import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from stratos.controller import rawapi, watchcache
from stratos.controller.childwatch import CHILD_SELECTOR, ChildCaches
from stratos.controller.watchcache import WatchCache
from stratos.kube.naming import LABEL_CANDIDATE, LABEL_JOB_UID, LABEL_STAGE
from stratos.kube.views import index_key, job_view


def child(
    name: str, uid: str, owner: str | None, stage: str = "train", candidate: str = "", **status: Any
) -> dict:
    labels = {"app": "x"}
    if owner is not None:
        labels.update({LABEL_JOB_UID: owner, LABEL_STAGE: stage})
        if candidate:
            labels[LABEL_CANDIDATE] = candidate
    return {
        "metadata": {"name": name, "namespace": "ns", "uid": uid, "labels": labels},
        "status": status,
    }


def page(items: list[dict[str, Any]], version: str = "", token: str = "") -> Raw:
    meta = {"resourceVersion": version, **({"continue": token} if token else {})}
    return Raw({"items": items, "metadata": meta})


def watch(*events: tuple[str, dict[str, Any]]) -> Raw:
    return Raw(lines=[{"type": kind, "object": obj} for kind, obj in events])


GONE = ("ERROR", {"code": 410, "message": "too old resource version"})


class Raw:
    def __init__(self, payload: Any = None, lines: list[dict[str, Any]] | None = None) -> None:
        self.data = json.dumps(payload).encode()
        self.lines = lines or []

    def stream(self, amt: Any = None, decode_content: bool = False) -> Iterator[bytes]:
        for line in self.lines:
            yield (json.dumps(line) + "\n").encode()

    def release_conn(self) -> None:
        pass


class Script:
    """A ``list_*`` method that answers from a script (a response or an exception per call), then blocks."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.calls: list[dict[str, Any]] = []
        self.played = threading.Event()
        self.release = threading.Event()

    def __call__(self, **kwargs: Any) -> Any:
        self.calls.append(kwargs)
        if not self.answers:
            self.played.set()
            self.release.wait(30)
            raise RuntimeError("the script is over")
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def play(script: Script, **kwargs: Any) -> WatchCache[Any]:
    cache: WatchCache[Any] = WatchCache("jobs", script, job_view, index_key, **kwargs)
    assert not cache.synced and dict(cache) == {} and cache.views() is None
    cache.start()
    assert script.played.wait(20), script.calls
    return cache


def finish(cache: WatchCache[Any], script: Script) -> None:
    cache.stop()
    script.release.set()


def names(cache: WatchCache[Any]) -> dict[Any, list[str]]:
    return {key: [v["name"] for v in views] for key, views in cache.items()}


A, B = ("u1", "train", ""), ("u2", "student-probe", "s1")


def test_children_are_grouped_by_their_labels_and_follow_updates_deletes_and_label_changes() -> None:
    script = Script(
        page([child("j1", "1", "u1"), child("x", "9", None)], token="t"),
        page([child("j2", "2", "u1", active=1), child("p1", "3", "u2", "student-probe", "s1")], version="10"),
        watch(
            ("MODIFIED", child("j2", "2", "u1", succeeded=1)),
            ("DELETED", child("j1", "1", "u1")),
            ("ADDED", child("j3", "4", "u1")),  # j1 is gone: j3 comes after j2
            ("MODIFIED", child("p1", "3", "u2", "evaluate")),  # its key changed: it moves
            ("ADDED", child("y", "5", None)),  # not a child: not kept
            ("ADDED", child("j4", "6", "u3")),
            ("MODIFIED", child("j4", "6", None)),  # no longer a child: it leaves
            ("BOOKMARK", {"metadata": {"resourceVersion": "17"}}),
        ),
    )
    cache = play(script, label_selector=CHILD_SELECTOR, page_size=2)
    assert cache.synced
    assert names(cache) == {A: ["j2", "j3"], ("u2", "evaluate", ""): ["p1"]}
    assert cache[A][0]["succeeded"] == 1
    assert B not in cache and cache.get(B, []) == [] and len(cache) == 2
    lists = [c for c in script.calls if not c.get("watch")]
    watches = [c for c in script.calls if c.get("watch")]
    assert [c.get("_continue") for c in lists] == [None, "t"] and lists[0]["resource_version"] == "0"
    assert all(c["label_selector"] == CHILD_SELECTOR and c["_preload_content"] is False for c in script.calls)
    assert lists[0]["limit"] == 2
    # The watch starts at the listing's version; after it ended it resumes from the bookmark's.
    assert [w["resource_version"] for w in watches] == ["10", "17"] and watches[0]["allow_watch_bookmarks"]
    finish(cache, script)


def test_an_expired_watch_lists_again_and_drops_what_was_deleted_while_no_watch_was_open() -> None:
    script = Script(
        page([child("j1", "1", "u1"), child("p1", "3", "u2", "student-probe", "s1")], version="10"),
        watch(("MODIFIED", child("j1", "1", "u1", active=1)), GONE),
        # The second listing no longer has p1 (deleted while no watch was open) and has a new j5.
        page([child("j1", "1", "u1", succeeded=1), child("j5", "5", "u1")], version="30"),
        ApiException(status=410, reason="Gone"),  # the watch request itself answered 410
        page([child("j5", "5", "u1")], version="40"),
        watch(("DELETED", child("j5", "5", "u1"))),
    )
    cache = play(script)
    assert names(cache) == {}  # j1 gone at the third listing, j5 deleted by the last watch
    versions = [(bool(c.get("watch")), c.get("resource_version")) for c in script.calls]
    assert versions == [
        (False, "0"),
        (True, "10"),
        (False, "0"),
        (True, "30"),
        (False, "0"),
        (True, "40"),
        (True, "40"),
    ]
    assert cache.listings == 3
    finish(cache, script)


def test_a_listing_whose_continue_token_expired_starts_over_and_readers_keep_the_last_content() -> None:
    seen: list[dict[Any, list[str]]] = []
    script = Script(
        page([child("j1", "1", "u1")], version="5"),
        watch(GONE),
        page([child("j2", "2", "u2", "student-probe", "s1")], token="t"),
        ApiException(status=410, reason="Gone"),  # the continue token expired: list from the start
        page([child("j2", "2", "u2", "student-probe", "s1"), child("j3", "3", "u1")], version="9"),
    )

    def view(obj: dict[str, Any]) -> dict[str, Any]:
        seen.append(names(cache))  # what readers see while the listing is under way
        return job_view(obj)

    cache: WatchCache[Any] = WatchCache("jobs", script, view, index_key, page_size=1)
    cache.start()
    assert script.played.wait(20), script.calls
    assert names(cache) == {B: ["j2"], A: ["j3"]}
    assert {A: ["j1"]} in seen[1:]  # during the second and third listings: the first one's content
    assert [c.get("_continue") for c in script.calls if not c.get("watch")] == [None, None, "t", None]
    finish(cache, script)


def test_failures_other_than_gone_are_retried_with_a_fresh_listing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(watchcache, "RETRY_SECONDS", (0.01,))
    script = Script(
        ApiException(status=500, reason="etcd leader changed"),
        page([child("j1", "1", "u1")], version="3"),
        watch(("ERROR", {"code": 500, "message": "internal error"})),
        page([child("j1", "1", "u1"), child("j2", "2", "u1")], version="8"),
    )
    cache = play(script)
    assert names(cache) == {A: ["j1", "j2"]}
    finish(cache, script)


def test_child_caches_watch_each_served_namespace_and_hand_out_the_one_of_a_jobs_namespace() -> None:
    scripts = {
        (kind, ns): Script(page([child(f"{kind}-{ns}", f"{kind}{ns}", "u1")], version="1"))
        for kind in ("jobs", "pods", "deployments")
        for ns in ("a", "b")
    }
    caches = ChildCaches(client.ApiClient(), ["a", "b", "a"], listers=scripts)
    assert not caches.synced and not caches.wait_synced(0.01)
    caches.start()
    assert caches.wait_synced(20) and caches.synced
    assert [v["name"] for v in caches.of("jobs", "b")[A]] == ["jobs-b"]
    assert caches.of("pods", "a")[A][0]["name"] == "pods-a"
    assert dict(caches.of("jobs", "elsewhere")) == {}  # not served: nothing
    assert len(caches.caches()) == 6
    caches.stop()
    for script in scripts.values():
        script.release.set()
    everywhere = ChildCaches(client.ApiClient())
    assert [c.name for c in everywhere.caches()] == ["jobs", "pods", "deployments"]
    assert everywhere.of("jobs", "any") is everywhere.of("jobs", "other")


def test_the_operator_watches_the_namespaces_the_chart_names(monkeypatch: pytest.MonkeyPatch) -> None:
    from stratos.kube.config import OperatorConfig

    monkeypatch.setenv("STRATOS_WATCHED_NAMESPACES", " team-a,team-b ,,")
    assert OperatorConfig.from_env().watched_namespaces == ("team-a", "team-b")
    monkeypatch.setenv("STRATOS_WATCHED_NAMESPACES", "")
    assert OperatorConfig.from_env().watched_namespaces == ()


def test_an_operator_started_with_kopfs_namespace_option_watches_those_namespaces(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Started by hand (``kopf run ... --namespace team-a``) without the chart's variable, the caches
    watch the namespaces kopf serves, not every namespace (which a namespaced RBAC refuses)."""
    from stratos.kube.config import OperatorConfig, kopf_namespaces

    monkeypatch.delenv("STRATOS_WATCHED_NAMESPACES", raising=False)
    monkeypatch.delenv("KOPF_RUN_NAMESPACE", raising=False)
    run = ["/usr/local/bin/kopf", "run", "--standalone", "-m", "stratos.controller.operator"]
    assert OperatorConfig.from_env(
        [*run, "--namespace", "team-a", "-nteam-b", "--namespace=team-a"]
    ).watched_namespaces == ("team-a", "team-b")
    assert OperatorConfig.from_env([*run, "--all-namespaces"]).watched_namespaces == ()
    assert kopf_namespaces([*run, "-n", "team-*"], {}) == ()  # a pattern: every namespace is watched
    assert kopf_namespaces([*run, "-n", "a", "-n", "!kube-system"], {}) == ()
    assert kopf_namespaces(["pytest", "run", "-n", "a"], {}) == ()  # not kopf's command line
    # ``python -m kopf run``: argv[0] is kopf's __main__.py
    main = str(Path(kopf.__file__).parent / "__main__.py")
    assert kopf_namespaces([main, "run", "-m", "stratos.controller.operator", "-n", "a"], {}) == ("a",)
    assert kopf_namespaces(["/srv/app/__main__.py", "run", "-n", "a"], {}) == ()  # another package's
    assert kopf_namespaces([*run], {"KOPF_RUN_NAMESPACE": "legacy"}) == ("legacy",)
    monkeypatch.setenv("STRATOS_WATCHED_NAMESPACES", "chart-ns")  # the chart's variable wins
    assert OperatorConfig.from_env([*run, "-n", "team-a"]).watched_namespaces == ("chart-ns",)


def test_a_listing_the_api_server_refuses_is_reported_until_one_succeeds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(watchcache, "RETRY_SECONDS", (0.01,))
    body = '{"kind": "Status", "message": "jobs.batch is forbidden: User cannot list resource"}'
    refused = ApiException(status=403, reason="Forbidden")
    refused.body = body
    scripts = {(kind, None): Script(refused) for kind in ("jobs", "pods", "deployments")}
    caches = ChildCaches(client.ApiClient(), listers=scripts).start()
    try:
        for script in scripts.values():
            assert script.played.wait(20)
        assert caches.problem() == (
            "jobs in all namespaces: 403 Forbidden: jobs.batch is forbidden: User cannot list resource"
        )
    finally:
        caches.stop()
        for script in scripts.values():
            script.release.set()
    ok = {(kind, "a"): Script(page([], version="1")) for kind in ("jobs", "pods", "deployments")}
    listed = ChildCaches(client.ApiClient(), ["a"], listers=ok).start()
    try:
        assert listed.wait_synced(20) and listed.problem() is None
    finally:
        listed.stop()
        for script in ok.values():
            script.release.set()


class FakeHttp:
    def __init__(self, status: int) -> None:
        self.status, self.reason, self.data, self.response = status, "x", b'{"code": 410}', object()
        self.headers: dict[str, str] = {}

    def read(self) -> bytes:
        return self.data

    def getheaders(self) -> dict[str, str]:
        return {}


def test_the_raw_lister_asks_the_collection_with_the_query_the_client_would_send(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    configuration = client.Configuration(host="https://api.test")
    configuration.api_key = {"BearerToken": "Bearer t0ken"}
    api = client.ApiClient(configuration)
    sent: list[tuple[str, str, dict[str, Any]]] = []
    answers = [FakeHttp(200), FakeHttp(410)]

    timeouts: list[Any] = []

    def call_api(method: str, url: str, header_params: dict[str, Any], *_: Any, **kw: Any) -> FakeHttp:
        sent.append((method, url, header_params))
        timeouts.append(kw.get("_request_timeout"))
        return answers.pop(0)

    monkeypatch.setattr(api, "call_api", call_api)
    lister = rawapi.raw_lister(api, "/apis/batch/v1/namespaces/a/jobs")
    response = lister(
        watch=True, resource_version="7", allow_watch_bookmarks=True, label_selector="x,y", timeout_seconds=9
    )
    assert response is not None
    method, url, headers = sent[0]
    assert method == "GET" and headers["Accept"] == "application/json"
    assert headers["authorization"] == "Bearer t0ken"
    assert url == (
        "https://api.test/apis/batch/v1/namespaces/a/jobs"
        "?watch=true&resourceVersion=7&allowWatchBookmarks=true&labelSelector=x%2Cy&timeoutSeconds=9"
    )
    assert timeouts == [(10.0, 69.0)]  # a silent watch fails a minute after the server should have ended it
    with pytest.raises(ApiException) as gone:
        lister(limit=2, _continue="t", resource_version=None)
    assert gone.value.status == 410 and sent[1][1].endswith("/jobs?limit=2&continue=t")
