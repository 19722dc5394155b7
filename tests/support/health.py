"""The chart's Argo CD health check (charts/stratos/files/argocd-health.lua), run by a real Lua 5.1
interpreter (lupa) as Argo CD runs it, and a recorder of every DistillationJob version the API server
holds while a test runs (a watch), to evaluate the check on statuses the operator really wrote."""

from __future__ import annotations

import copy
import functools
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from kubernetes import client, watch
from kubernetes.client.rest import ApiException

REPO_ROOT = Path(__file__).resolve().parents[2]
ARGOCD_HEALTH_LUA = REPO_ROOT / "charts" / "stratos" / "files" / "argocd-health.lua"
FLUX_HEALTH_CHECK = REPO_ROOT / "charts" / "stratos" / "files" / "flux-health-check.yaml"
# Argo CD (gopher-lua) opens the base, table, string and math libraries for health checks, not these.
UNAVAILABLE = ("os", "io", "debug", "package", "require", "dofile", "loadfile", "load", "loadstring")
HEALTH_STATUSES = ("Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown")


@functools.cache
def _script() -> str:
    return ARGOCD_HEALTH_LUA.read_text()


def _to_lua(lua: Any, value: Any) -> Any:
    if isinstance(value, Mapping):
        return lua.table_from({k: _to_lua(lua, v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return lua.table_from([_to_lua(lua, v) for v in value])
    return value


def argocd_health(obj: Mapping[str, Any]) -> dict[str, str]:
    """``{"status": ..., "message": ...}`` as Argo CD's health check returns it for ``obj``."""
    from lupa import lua51

    lua = lua51.LuaRuntime(register_eval=False, register_builtins=False)
    env = lua.globals()
    for name in UNAVAILABLE:
        env[name] = None
    env.obj = _to_lua(lua, obj)
    result = lua.execute(_script())
    health = {str(k): str(v) for k, v in result.items()}
    if health.get("status") not in HEALTH_STATUSES:
        raise AssertionError(f"the health check returned {health} for {obj.get('status')}")
    return health


@functools.cache
def _flux_programs() -> list[tuple[str, Any]]:
    import celpy
    import yaml

    (entry,) = yaml.safe_load(FLUX_HEALTH_CHECK.read_text())
    env = celpy.Environment()
    return [
        (key, env.program(env.compile(entry[key])))
        for key in ("inProgress", "failed", "current")
        if key in entry
    ]


def flux_health(obj: Mapping[str, Any]) -> str:
    """What a Flux Kustomization's healthCheckExprs make of ``obj`` (cel-python evaluating the chart's
    expressions as Flux orders them: inProgress, failed, current; none true means in progress). The
    object's top-level fields are the variables; one without a status is given an empty one here."""
    import celpy

    variables = {key: celpy.json_to_cel(obj.get(key) or {}) for key in ("metadata", "spec", "status")}
    for name, program in _flux_programs():
        if bool(program.evaluate(variables)):
            return {"inProgress": "InProgress", "failed": "Failed", "current": "Current"}[name]
    return "InProgress"


# The Flux verdict each Argo CD health corresponds to (Flux has no "suspended": it counts as current).
ARGO_TO_FLUX = {
    "Progressing": "InProgress",
    "Healthy": "Current",
    "Degraded": "Failed",
    "Suspended": "Current",
}


def collapse(values: Iterable[str]) -> list[str]:
    """Consecutive repeats folded into one: the sequence of changes."""
    out: list[str] = []
    for value in values:
        if not out or out[-1] != value:
            out.append(value)
    return out


class StatusRecorder:
    """Every version of the DistillationJobs in ``namespace`` (optionally one ``name``), as watched.

    Used as a context manager around the part of a test whose statuses matter; ``objects`` holds each
    distinct resourceVersion once, in the order the API server sent them.
    """

    def __init__(self, api: Any, namespace: str, name: str | None = None) -> None:
        self.api = api
        self.namespace = namespace
        self.name = name
        self.objects: list[dict[str, Any]] = []
        self._versions: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="dj-status-recorder", daemon=True)
        self.errors: list[str] = []

    def __enter__(self) -> StatusRecorder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.objects)

    def healths(self, start: int = 0) -> list[dict[str, str]]:
        return [argocd_health(o) for o in self.snapshot()[start:]]

    def agree(self) -> None:
        """Flux's expressions agree with the Argo CD check on every recorded version."""
        for obj in self.snapshot():
            argo = argocd_health(obj)["status"]
            assert flux_health(obj) == ARGO_TO_FLUX[argo], (argo, obj.get("metadata"), obj.get("status"))

    def latest_health(self) -> dict[str, str] | None:
        objects = self.snapshot()
        return argocd_health(objects[-1]) if objects else None

    def _loop(self) -> None:
        custom = client.CustomObjectsApi(self.api)
        selector = f"metadata.name={self.name}" if self.name else None
        version: str | None = None  # go on from the last event: no version is missed between streams
        while not self._stop.is_set():
            stream = watch.Watch()
            kwargs: dict[str, Any] = {"field_selector": selector, "timeout_seconds": 2}
            if version:
                kwargs["resource_version"] = version
            try:
                for event in stream.stream(
                    custom.list_namespaced_custom_object,
                    "stratos.io",
                    "v1alpha1",
                    self.namespace,
                    "distillationjobs",
                    **kwargs,
                ):
                    obj = event["object"]
                    if event["type"] == "ERROR":  # e.g. 410 Gone: the version expired, list again
                        self.errors.append(str(obj.get("message")))
                        version = None
                        break
                    version = obj.get("metadata", {}).get("resourceVersion") or version
                    if event["type"] in ("ADDED", "MODIFIED"):
                        self._record(obj)
                    if self._stop.is_set():
                        stream.stop()
            except ApiException as err:  # an expired resourceVersion: list again
                self.errors.append(f"{err.status}: {err.reason}")
                version = None
            except Exception as err:  # keep watching; the test sees what was recorded
                self.errors.append(repr(err))
                self._stop.wait(0.2)

    def _record(self, obj: Mapping[str, Any]) -> None:
        version = str(obj["metadata"].get("resourceVersion"))
        with self._lock:
            if version not in self._versions:
                self._versions.add(version)
                self.objects.append(copy.deepcopy(dict(obj)))
