"""The operator's view of its children: stage Jobs, their pods and serving Deployments, by label.

One ``WatchCache`` per kind (and per watched namespace when the operator does not serve all of them),
selected on the owner-uid and stage labels, grouped by ``(owner uid, stage, candidate)`` from those labels:
children are found by their labels, never by their names. They replace kopf indexes, which held every
handler of a restarted operator until each existing child had gone through kopf's per-object machinery;
a tick now runs as soon as the first listing of each kind has returned.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from kubernetes import client

from stratos.controller.rawapi import Lister, raw_lister
from stratos.controller.watchcache import View, WatchCache
from stratos.kube.naming import LABEL_JOB_UID, LABEL_STAGE, ChildKey
from stratos.kube.views import deployment_view, index_key, job_view, pod_view

#: Only the operator's children (and their pods) are listed and watched.
CHILD_SELECTOR = f"{LABEL_JOB_UID},{LABEL_STAGE}"


#: Where each kind's collection is: (group path, resource).
PATHS = {
    "jobs": ("/apis/batch/v1", "jobs"),
    "pods": ("/api/v1", "pods"),
    "deployments": ("/apis/apps/v1", "deployments"),
}


def _listers(api: client.ApiClient, namespace: str | None) -> dict[str, Lister]:
    return {
        kind: raw_lister(
            api, f"{root}/{resource}" if namespace is None else f"{root}/namespaces/{namespace}/{resource}"
        )
        for kind, (root, resource) in PATHS.items()
    }


VIEWS = {"jobs": job_view, "pods": pod_view, "deployments": deployment_view}


class ChildCaches:
    """The stage Jobs, pods and serving Deployments of every job, in every namespace the operator serves
    (``namespaces`` empty: all of them, with one cluster-wide watch per kind)."""

    def __init__(
        self,
        api: client.ApiClient,
        namespaces: Iterable[str] = (),
        *,
        listers: Mapping[tuple[str, str | None], Lister] | None = None,
    ) -> None:
        scopes: list[str | None] = list(dict.fromkeys(namespaces)) or [None]
        self._caches: dict[tuple[str, str | None], WatchCache[ChildKey]] = {}
        for scope in scopes:
            made = _listers(api, scope) if listers is None else {}
            for kind, view in VIEWS.items():
                lister = listers[(kind, scope)] if listers is not None else made[kind]
                name = kind if scope is None else f"{kind}/{scope}"
                self._caches[(kind, scope)] = WatchCache(
                    name, lister, view, index_key, label_selector=CHILD_SELECTOR
                )
        self._all_namespaces = scopes == [None]

    def start(self) -> ChildCaches:
        for cache in self._caches.values():
            cache.start()
        return self

    def stop(self) -> None:
        for cache in self._caches.values():
            cache.stop()

    @property
    def synced(self) -> bool:
        return all(cache.synced for cache in self._caches.values())

    def wait_synced(self, timeout: float) -> bool:
        """True once every cache has listed once (waits at most ``timeout`` seconds in all)."""
        deadline = time.monotonic() + timeout
        return all(c.wait_synced(max(0.0, deadline - time.monotonic())) for c in self._caches.values())

    def problem(self) -> str | None:
        """Why a cache has not listed yet, when a listing failed ("jobs in all namespaces: 403 Forbidden:
        ..."); None while they are merely slow or once every one has listed."""
        for (kind, scope), cache in self._caches.items():
            if not cache.synced and cache.last_error:
                where = "all namespaces" if scope is None else f"namespace {scope}"
                return f"{kind} in {where}: {cache.last_error}"
        return None

    def of(self, kind: str, namespace: str) -> Mapping[ChildKey, tuple[View, ...]]:
        """The cache of ``kind`` ("jobs", "pods", "deployments") that holds ``namespace``'s children."""
        cache = self._caches.get((kind, None if self._all_namespaces else namespace))
        return cache if cache is not None else _EMPTY

    def caches(self) -> list[WatchCache[Any]]:
        return list(self._caches.values())


_EMPTY: Mapping[ChildKey, tuple[View, ...]] = {}
