"""A list-then-watch cache of one kind of object, reduced to small views: the operator's own informer.

kopf runs no handler of any kind until every index it keeps has been filled from its initial listing, and
it pushes each listed object through its per-object machinery one at a time: with thousands of Nodes, or
hundreds of stage Jobs and pods, a restarted operator decided nothing for seconds to most of a minute.
A ``WatchCache`` lists the objects itself, in pages, as raw JSON (no client models) reduced at once to a
view, then watches from the listing's resourceVersion in a daemon thread. Nothing waits for it but the
code that reads it: ``synced`` says when the first listing is complete.

It stays correct the way client-go's informers do: a watch that ends is resumed from the last version
seen (bookmarks included); a watch or a paged listing answered 410 Gone (the version is too old) and any
other failure lead to a fresh listing, which replaces the whole content at once, so objects deleted while
no watch was open disappear too. Until that listing returns, readers keep the last complete content.

How a listing's pages and a watch's events are decoded can be chosen (``decode_page``, ``decode_event``;
``json.loads`` by default): the node cache decodes only the fields its views keep, which is most of the
cost of listing thousands of Nodes.

Views are grouped by a key computed from the object (for stage children: owner uid, stage, candidate from
their labels); the cache is a read-only ``Mapping`` from key to the views of the objects with that key,
in the order they were first seen. An object whose key changes moves; one whose key becomes None leaves.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Hashable, Iterator, Mapping
from typing import Any, Generic, TypeVar

from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from stratos.controller.rawapi import Lister

LOG = logging.getLogger(__name__)
PAGE_SIZE = 500
WATCH_SECONDS = 270
RETRY_SECONDS = (0.5, 1.0, 2.0, 5.0, 10.0)

K = TypeVar("K", bound=Hashable)
View = dict[str, Any]
#: Turns a page of a listing, or one line of a watch, from the API server's JSON into a mapping.
Decoder = Callable[[bytes | str], Mapping[str, Any]]


class Expired(Exception):
    """The resourceVersion of a watch or of a paged listing is too old (410 Gone): list again."""


def identity(obj: Mapping[str, Any]) -> str:
    """What tells two objects apart: the uid (a recreated namesake is another object), else the name."""
    meta = obj.get("metadata") or {}
    return str(meta.get("uid") or f"{meta.get('namespace') or ''}/{meta.get('name')}")


class WatchCache(Mapping[K, tuple[View, ...]], Generic[K]):
    """Every object of one kind (matching ``label_selector``) as ``view(obj)``, grouped by ``key(obj)``."""

    def __init__(
        self,
        name: str,
        lister: Lister,
        view: Callable[[Mapping[str, Any]], View],
        key: Callable[[Mapping[str, Any]], K | None],
        *,
        label_selector: str | None = None,
        page_size: int = PAGE_SIZE,
        decode_page: Decoder = json.loads,
        decode_event: Decoder = json.loads,
    ) -> None:
        self.name = name
        self._lister = lister
        self._view = view
        self._key = key
        self._selector = label_selector
        self._page_size = page_size
        self._decode_page = decode_page
        self._decode_event = decode_event
        self._objects: dict[str, tuple[K, View]] = {}  # identity -> (key, view)
        self._groups: dict[K, dict[str, View]] = {}  # key -> identity -> view, in first-seen order
        self._lock = threading.Lock()
        self._synced = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.listed_seconds: float | None = None
        self.listings = 0
        self.started_at: float | None = None  # time.monotonic() when start() was called

    # ------------------------------------------------------------------------------------ lifecycle
    def start(self) -> WatchCache[K]:
        self.started_at = time.monotonic()
        self._thread = threading.Thread(target=self._loop, name=f"stratos-cache-{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    #: Why the last listing or watch failed ("403 Forbidden: ..."), None once a listing succeeded.
    last_error: str | None = None

    @property
    def synced(self) -> bool:
        return self._synced.is_set()

    def wait_synced(self, timeout: float) -> bool:
        return self._synced.wait(timeout)

    # ------------------------------------------------------------------------------------- reading
    def views(self) -> list[View] | None:
        """Every object's view, or None until the first complete listing."""
        if not self._synced.is_set():
            return None
        with self._lock:
            return [view for _, view in self._objects.values()]

    def __getitem__(self, key: K) -> tuple[View, ...]:
        with self._lock:
            group = self._groups.get(key)
            if not group:
                raise KeyError(key)
            return tuple(group.values())

    def __iter__(self) -> Iterator[K]:
        with self._lock:
            return iter(list(self._groups))

    def __len__(self) -> int:
        with self._lock:
            return len(self._groups)

    # ------------------------------------------------------------------------------------- updating
    def _put(self, obj: Mapping[str, Any]) -> None:
        ident, key = identity(obj), self._key(obj)
        view = self._view(obj) if key is not None else None
        with self._lock:
            old = self._objects.get(ident)
            if old is not None and (key is None or old[0] != key):
                self._drop(ident, old[0])
            if key is None or view is None:
                return
            self._objects[ident] = (key, view)
            self._groups.setdefault(key, {})[ident] = view

    def _delete(self, obj: Mapping[str, Any]) -> None:
        ident = identity(obj)
        with self._lock:
            old = self._objects.get(ident)
            if old is not None:
                self._drop(ident, old[0])

    def _drop(self, ident: str, key: K) -> None:  # under the lock
        self._objects.pop(ident, None)
        group = self._groups.get(key)
        if group is not None:
            group.pop(ident, None)
            if not group:
                del self._groups[key]

    def _replace(self, items: list[tuple[str, K, View]]) -> None:
        objects: dict[str, tuple[K, View]] = {}
        groups: dict[K, dict[str, View]] = {}
        for ident, key, view in items:
            objects[ident] = (key, view)
            groups.setdefault(key, {})[ident] = view
        with self._lock:
            self._objects, self._groups = objects, groups

    # ---------------------------------------------------------------------------- list, then watch
    def _loop(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                version = self._list()
                failures = 0
                while not self._stop.is_set():
                    version = self._watch(version)
            except Expired:
                LOG.info("%s cache: resourceVersion expired (410 Gone); listing again", self.name)
                continue
            except Exception as err:  # the API server restarting, a dropped connection: list again
                delay = RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)]
                failures += 1
                self.last_error = _describe(err)
                LOG.warning(
                    "%s cache: %s: %s; listing again in %.1f s", self.name, type(err).__name__, err, delay
                )
                self._stop.wait(delay)

    def _call(self, **kwargs: Any) -> Any:
        if self._selector:
            kwargs["label_selector"] = self._selector
        try:
            return self._lister(_preload_content=False, **kwargs)  # an HTTP response: no client models
        except ApiException as err:
            if err.status == 410:
                raise Expired() from err
            raise

    def _list(self) -> str:
        started = time.monotonic()
        items: list[tuple[str, K, View]] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"limit": self._page_size}
            if token:
                kwargs["_continue"] = token
            else:
                # Any version will do (the watch that follows brings it up to date): the API server then
                # answers from its watch cache instead of reading every object from etcd, as informers do.
                kwargs["resource_version"] = "0"
            page = self._decode_page(self._call(**kwargs).data)
            for obj in page.get("items") or []:
                key = self._key(obj)
                if key is not None:
                    items.append((identity(obj), key, self._view(obj)))
            meta = page.get("metadata") or {}
            token = meta.get("continue")
            if not token:
                break
        self._replace(items)
        self.last_error = None
        self.listed_seconds = time.monotonic() - started
        self.listings += 1
        LOG.info("%s cache: listed %d objects in %.2f s", self.name, len(items), self.listed_seconds)
        self._synced.set()
        return str(meta.get("resourceVersion") or "")

    def _watch(self, version: str) -> str:
        response = self._call(
            watch=True, resource_version=version, allow_watch_bookmarks=True, timeout_seconds=WATCH_SECONDS
        )
        try:
            for event in _events(iter_resp_lines(response), self._stop.is_set, self._decode_event):
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise Expired()
                    raise RuntimeError(f"watch error: {obj.get('message')}")
                version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                if kind == "BOOKMARK":
                    continue
                if kind == "DELETED":
                    self._delete(obj)
                else:
                    self._put(obj)
        finally:
            response.release_conn()
        return version


def _events(
    lines: Iterator[Any], stopped: Callable[[], bool], decode: Decoder
) -> Iterator[Mapping[str, Any]]:
    for line in lines:
        if stopped():
            return
        data = line if isinstance(line, bytes | str) else str(line)
        if data.strip():
            yield decode(data)


def _describe(err: BaseException) -> str:
    """An API error as its status, reason and the API server's message; anything else as its type."""
    if isinstance(err, ApiException):
        message = ""
        with contextlib.suppress(ValueError, AttributeError):
            message = str(json.loads(err.body or "{}").get("message") or "")
        return f"{err.status} {err.reason}" + (f": {message}" if message else "")
    return f"{type(err).__name__}: {err}"[:500]
