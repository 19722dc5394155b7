"""Plain JSON requests through the Kubernetes client's ``ApiClient``, without its generated API classes.

With kubernetes 37 the first use of ``CoreV1Api``, ``BatchV1Api`` or ``AppsV1Api`` imports hundreds of
pydantic models and builds a validator per method: about 1 s of CPU for the three, which a restarted
operator paid before its first decision (profiled at 3,732 nodes and ~400 children: a third of its CPU
from process start to that decision). The paths the operator takes on every restart (its caches' lists
and watches, creating stage children, posting Events) go through these few functions instead: the same
authentication, TLS and connection pool as the client (``param_serialize`` and ``call_api``), and the
same ``ApiException`` on an error answer.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

#: A ``list_*`` method of the Kubernetes client (or a partial of a namespaced one): takes ``limit``,
#: ``_continue``, ``resource_version``, ``watch``, ``label_selector`` ... and ``_preload_content``.
Lister = Callable[..., Any]

#: The client's keyword arguments and the query parameters they stand for.
QUERY_NAMES = {
    "_continue": "continue",
    "allow_watch_bookmarks": "allowWatchBookmarks",
    "label_selector": "labelSelector",
    "limit": "limit",
    "resource_version": "resourceVersion",
    "timeout_seconds": "timeoutSeconds",
    "watch": "watch",
}

#: Seconds to connect, and to wait for the next bytes of an answer beyond a watch's own timeout: a
#: connection that went silent (a peer gone without closing it) then fails and the cache lists again.
CONNECT_SECONDS = 10.0
READ_GRACE_SECONDS = 60.0

#: Where each kind of child is created, in a namespace.
COLLECTIONS = {
    "ConfigMap": "/api/v1/namespaces/{namespace}/configmaps",
    "Service": "/api/v1/namespaces/{namespace}/services",
    "Event": "/api/v1/namespaces/{namespace}/events",
    "Job": "/apis/batch/v1/namespaces/{namespace}/jobs",
    "Deployment": "/apis/apps/v1/namespaces/{namespace}/deployments",
}


def _send(
    api: client.ApiClient,
    method: str,
    path: str,
    *,
    query: list[tuple[str, Any]] | None = None,
    body: Any = None,
    timeout: tuple[float, float] | None = None,
) -> Any:
    headers = {"Accept": "application/json"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    request = api.param_serialize(
        method=method,
        resource_path=path,
        query_params=query or [],
        header_params=headers,
        body=body,
        auth_settings=["BearerToken"],
    )
    response = api.call_api(*request, _request_timeout=timeout)
    if not 200 <= response.status <= 299:
        response.read()
        raise ApiException.from_response(http_resp=response, body=None, data=None)
    return response


def request(
    api: client.ApiClient, method: str, path: str, body: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """``method`` ``path`` with a JSON body; the answer's JSON. Raises ``ApiException`` as the client does."""
    response = _send(api, method, path, body=dict(body) if body is not None else None)
    data = response.read()
    return dict(json.loads(data)) if data else {}


def create(api: client.ApiClient, kind: str, namespace: str, manifest: Mapping[str, Any]) -> dict[str, Any]:
    """POST ``manifest`` to its kind's collection in ``namespace`` (``COLLECTIONS``)."""
    return request(api, "POST", COLLECTIONS[kind].format(namespace=namespace), manifest)


def read(api: client.ApiClient, kind: str, namespace: str, name: str) -> dict[str, Any]:
    return request(api, "GET", f"{COLLECTIONS[kind].format(namespace=namespace)}/{name}")


def raw_lister(api: client.ApiClient, path: str) -> Lister:
    """A list (or watch) of the collection at ``path`` (``/api/v1/nodes``, ``/apis/batch/v1/jobs``, ...)
    answering the raw HTTP response (streamed), as the client's ``list_*`` methods do with
    ``_preload_content=False``."""

    def call(*, _preload_content: bool = False, **params: Any) -> Any:
        query = [(QUERY_NAMES[name], value) for name, value in params.items() if value is not None]
        read = float(params.get("timeout_seconds") or 0) + READ_GRACE_SECONDS
        return _send(api, "GET", path, query=query, timeout=(CONNECT_SECONDS, read)).response

    return call
