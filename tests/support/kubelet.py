"""A stand-in kubelet for the test control plane: runs bound pods as local processes.

The test control plane has no container runtime, so this plays the kubelet for a set of fake
nodes: it notices pods the scheduler (or a test) bound to them, runs the first container's
``command + args`` as a local subprocess and reports the outcome in the pod's status the way a
kubelet does (phase, containerStatuses with the exit code, reason and termination message).

It knows nothing of Stratos. Files the container would see are mapped onto a per-pod scratch
directory: every volume mount path (and the termination-message path) gets a local directory or
file, occurrences of those paths in the arguments and env values are rewritten, and the whole
map is passed as JSON in $STRATOS_PATH_MAP so a program can translate paths it builds itself.
``python``/``python3`` commands run with the test interpreter (sys.executable).

What stops a real kubelet from starting a container stops this one too, with the kubelet's words: a
Secret or ConfigMap named by the container's env that does not exist keeps the pod Pending with waiting
reason ``CreateContainerConfigError`` (message ``secret "NAME" not found``), a missing volume source keeps
it ``ContainerCreating``, and an image listed in ``missing_images`` cannot be pulled (``ErrImagePull``, then
``ImagePullBackOff``). All three are retried with a short back-off, so creating the Secret (or removing
the image from ``missing_images``) lets the pod start, as on a real node.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
import urllib.parse
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes.client.exceptions import ApiException

from support.controlplane import die_with_parent, rest, stop_group

log = logging.getLogger(__name__)

PATH_MAP_ENV = "STRATOS_PATH_MAP"
TERMINATION_MESSAGE_LIMIT = 4096
DEFAULT_TERMINATION_PATH = "/dev/termination-log"


@dataclass(frozen=True)
class Outcome:
    """How a container ended when a test decides it instead of running it (e.g. OOMKilled)."""

    exit_code: int
    reason: str = ""
    message: str = ""


@dataclass(frozen=True)
class Command:
    """A command a test has the container run instead of its own (e.g. one that runs until deleted)."""

    argv: tuple[str, ...]


# Called with the pod (API dict) before it runs; returning an Outcome skips running it, a Command runs
# that instead of the pod's own command.
Intercept = Callable[[Mapping[str, Any]], "Outcome | Command | None"]

# Back-off between attempts to start a container that cannot start yet (kept short for tests; a
# kubelet starts at 10 s and caps image pulls at 5 minutes).
WAIT_BACKOFF_START = 0.5
WAIT_BACKOFF_CAP = 4.0


class _NotFound(ValueError):
    """A Secret or ConfigMap the pod needs does not exist (the kubelet's object managers' message)."""

    def __init__(self, kind: str, name: str) -> None:
        super().__init__(f'{kind.lower()} "{name}" not found')


class _Waiting(Exception):
    """The container cannot start yet; the pod stays Pending with this waiting reason and is retried."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


@dataclass
class PodRun:
    """What the fake kubelet did with one pod (by uid)."""

    namespace: str
    name: str
    uid: str
    node: str
    pod_dir: Path
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    path_map: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    process: subprocess.Popen[bytes] | None = None
    started_at: str = ""
    restart_count: int = 0
    restart_at: float | None = None
    previous: dict[str, Any] | None = None  # the last termination before a restart (lastState)
    prepared: bool = False  # volumes and environment are in place
    pulled: bool = False  # the image is "present"
    waiting: tuple[str, str] | None = None  # (reason, message) reported while the container cannot start
    wait_until: float | None = None  # when to try starting it again
    wait_attempts: int = 0
    wait_reported_at: float = 0.0
    exit_code: int | None = None
    reason: str = ""
    message: str = ""
    done: bool = False

    @property
    def log_path(self) -> Path:
        return self.pod_dir / "container.log"

    @property
    def termination_path(self) -> Path:
        return self.pod_dir / "termination-log"

    def logs(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name).strip("_") or "root"


def _image_reference(image: str) -> str:
    """The reference a container runtime pulls: ``foo`` -> ``docker.io/library/foo:latest``."""
    name, _, digest = image.partition("@")
    last = name.rsplit("/", 1)[-1]
    if ":" not in last and not digest:
        name += ":latest"
    first = name.split("/", 1)[0]
    if "/" not in name:
        name = f"docker.io/library/{name}"
    elif "." not in first and ":" not in first and first != "localhost":
        name = f"docker.io/{name}"
    return f"{name}@{digest}" if digest else name


def _expand(value: str, env: Mapping[str, str]) -> str:
    """Kubernetes $(VAR) expansion: known variables are substituted, $$ escapes a dollar."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))

    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)", sub, value)


def _rewrite_files(root: Path, path_map: Mapping[str, str]) -> None:
    for file in root.rglob("*"):
        if file.is_file():
            try:
                text = file.read_text()
            except UnicodeDecodeError:
                continue
            file.write_text(_rewrite(text, path_map))


def _rewrite(value: str, path_map: Mapping[str, str]) -> str:
    """Replaces in-container paths by their local counterparts, in one pass (longest path first),
    so a local path is never rewritten again by a shorter mount path that happens to prefix it."""
    if not path_map:
        return value
    alternation = "|".join(re.escape(p) for p in sorted(path_map, key=len, reverse=True))
    pattern = rf"(?<![\w.-])({alternation})(?=/|$|[^\w.-])"
    return re.sub(pattern, lambda m: path_map[m.group(1)], value)


def create_bound_pvc(
    api: Any,
    namespace: str,
    name: str,
    *,
    size: str = "10Gi",
    access_mode: str = "ReadWriteOnce",
    timeout: float = 30.0,
) -> str:
    """Creates PVC namespace/name pre-bound to a new PersistentVolume and waits until it is Bound.

    The test cluster has no storage provisioner, and the scheduler will not place a pod whose
    claim is unbound. The PV (a never-used hostPath; FakeKubelet backs claims with ``claim_dir``)
    is cluster-scoped and outlives the namespace: delete it with ``delete_pv`` (its name is
    returned).
    """
    pv = f"pv-{namespace}-{name}"[:63].rstrip("-.")
    rest(
        api,
        "POST",
        "/api/v1/persistentvolumes",
        body={
            "metadata": {"name": pv, "labels": {"stratos.io/test-volume": "true"}},
            "spec": {
                "capacity": {"storage": size},
                "accessModes": [access_mode],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": "",
                "hostPath": {"path": f"/tmp/stratos-fake-pv/{pv}"},
                "claimRef": {"namespace": namespace, "name": name},
            },
        },
    )
    claims = f"/api/v1/namespaces/{namespace}/persistentvolumeclaims"
    rest(
        api,
        "POST",
        claims,
        body={
            "metadata": {"name": name},
            "spec": {
                "accessModes": [access_mode],
                "storageClassName": "",
                "volumeName": pv,
                "resources": {"requests": {"storage": size}},
            },
        },
    )
    deadline = time.monotonic() + timeout
    while rest(api, "GET", f"{claims}/{name}").get("status", {}).get("phase") != "Bound":
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"PVC {namespace}/{name} not Bound after {timeout} s (is the controller manager up?)"
            )
        time.sleep(0.2)
    return pv


def delete_pv(api: Any, name: str) -> None:
    """Deletes PersistentVolume ``name``; one already gone is fine."""
    try:
        rest(api, "DELETE", f"/api/v1/persistentvolumes/{name}")
    except ApiException as e:
        if e.status != 404:
            raise


_LIVE: weakref.WeakSet[FakeKubelet] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    for kubelet in list(_LIVE):
        kubelet.stop()


class FakeKubelet:
    """Runs the pods bound to ``node_names`` as local processes; see the module docstring.

    ``api`` is an admin ApiClient (it reads Secrets/ConfigMaps referenced by the pod and writes
    pod status). ``intercept`` may decide a pod's outcome instead of running it (it is asked once the
    image is pulled and the container's volumes and environment are ready, as a container would start).
    ``extra_env`` is added to every process's environment, on top of this process's environment.
    ``missing_images`` cannot be pulled.
    """

    def __init__(
        self,
        api: Any,
        node_names: Iterable[str],
        workdir: Path,
        *,
        intercept: Intercept | None = None,
        extra_env: Mapping[str, str] | None = None,
        poll_interval: float = 0.25,
        python: str = sys.executable,
        missing_images: Iterable[str] = (),
    ) -> None:
        self.api = api
        #: Images no registry has: pods using them stay Pending in ErrImagePull / ImagePullBackOff.
        #: A test may add or remove images at any time; the next pull attempt sees the change.
        self.missing_images: set[str] = set(missing_images)
        self.nodes = set(node_names)
        self.workdir = Path(workdir)
        self.intercept = intercept
        self.extra_env = dict(extra_env or {})
        self.poll_interval = poll_interval
        self.python = python
        self.errors: list[str] = []
        self._runs: dict[str, PodRun] = {}
        self._confirmed: set[str] = set()  # uids whose deletion this kubelet has confirmed
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ----------------------------------------------------------------------------------- public

    def __enter__(self) -> FakeKubelet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> FakeKubelet:
        self.workdir.mkdir(parents=True, exist_ok=True)
        _LIVE.add(self)
        self._thread = threading.Thread(target=self._loop, name="fake-kubelet", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stops watching and kills every process still running (pod status is left as is)."""
        self._stop.set()
        _LIVE.discard(self)
        if self._thread is not None:
            self._thread.join(timeout=30)
        with self._lock:
            for run in self._runs.values():
                self._kill(run, grace=2.0)

    def add_node(self, name: str) -> None:
        with self._lock:
            self.nodes.add(name)

    def runs(self) -> list[PodRun]:
        with self._lock:
            return list(self._runs.values())

    def run_for(self, namespace: str, name: str) -> PodRun | None:
        """The latest run of pod namespace/name, if this kubelet started it."""
        matches = [r for r in self.runs() if r.namespace == namespace and r.name == name]
        return matches[-1] if matches else None

    def claim_dir(self, namespace: str, claim: str) -> Path:
        """The local directory behind PVC namespace/claim, shared by all pods using the claim
        (write into it to seed data a pod will read)."""
        path = self.workdir / "claims" / namespace / claim
        path.mkdir(parents=True, exist_ok=True)
        return path

    def logs(self, namespace: str, name: str) -> str:
        """stdout+stderr of the pod's container (``kubectl logs`` needs a real kubelet)."""
        run = self.run_for(namespace, name)
        return run.logs() if run else ""

    # --------------------------------------------------------------------------------- the loop

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._sync()
            except Exception as e:
                # Keep going (the API may be briefly unavailable) but let tests see what went wrong.
                log.exception("fake kubelet sync failed")
                self.errors.append(repr(e))
                del self.errors[:-50]
            self._stop.wait(self.poll_interval)

    def _sync(self) -> None:
        with self._lock:
            nodes = sorted(self.nodes)
        pods: dict[str, dict[str, Any]] = {}
        for node in nodes:
            listing = rest(self.api, "GET", "/api/v1/pods", query={"fieldSelector": f"spec.nodeName={node}"})
            for pod in listing.get("items", []):
                pods[pod["metadata"]["uid"]] = pod
        with self._lock:
            for uid, pod in pods.items():
                try:
                    self._sync_pod(uid, pod)
                except Exception as e:
                    # One bad pod must not stall the others; it fails rather than hang Pending.
                    log.exception("fake kubelet: pod %s failed", pod["metadata"]["name"])
                    self.errors.append(f"{pod['metadata']['name']}: {e!r}")
                    run = self._runs.get(uid)
                    if (
                        run is not None
                        and not run.done
                        and run.process is None
                        and run.restart_at is None
                        and run.wait_until is None
                    ):
                        with contextlib.suppress(Exception):
                            self._finish(pod, run, 128, "FakeKubeletError", repr(e)[:1000])
                        run.done = True
            for uid, run in self._runs.items():
                if uid not in pods and not run.done:
                    self._kill(run, grace=0.0)
                    run.done = True

    def _sync_pod(self, uid: str, pod: dict[str, Any]) -> None:
        run = self._runs.get(uid)
        if pod["metadata"].get("deletionTimestamp"):
            self._delete(pod, run)
        elif run is None:
            if pod.get("status", {}).get("phase") not in ("Succeeded", "Failed"):
                self._runs[uid] = run = self._new_run(pod)
                self._launch(pod, run)
        elif not run.done:
            self._check(pod, run)

    # ----------------------------------------------------------------------------- preparation

    def _new_run(self, pod: Mapping[str, Any]) -> PodRun:
        meta = pod["metadata"]
        pod_dir = self.workdir / "pods" / f"{meta['namespace']}_{meta['name']}_{meta['uid'][:8]}"
        pod_dir.mkdir(parents=True, exist_ok=True)
        return PodRun(meta["namespace"], meta["name"], meta["uid"], pod["spec"]["nodeName"], pod_dir)

    def _prepare(self, pod: Mapping[str, Any], run: PodRun) -> None:
        """What a kubelet does before a container can start, in its order: mount the volumes, pull the
        image, resolve the environment. Raises _Waiting while one of them cannot be done yet."""
        if not run.prepared:
            self._mount(pod, run)
        if not run.pulled:
            self._pull(pod)
            run.pulled = True
        if not run.prepared:
            self._environment(pod, run)
            run.prepared = True

    def _mount(self, pod: Mapping[str, Any], run: PodRun) -> None:
        spec = pod["spec"]
        container = spec["containers"][0]
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        path_map: dict[str, str] = {}
        for mount in container.get("volumeMounts", []):
            volume = volumes.get(mount["name"])
            if volume is None:
                raise ValueError(f"volumeMount {mount['name']!r} names no volume")
            try:
                local = self._volume_dir(pod, run, volume)
            except _NotFound as e:
                # The kubelet keeps the pod ContainerCreating and says why only in a FailedMount event.
                log.info("pod %s: MountVolume.SetUp failed for volume %r : %s", run.name, volume["name"], e)
                raise _Waiting("ContainerCreating", "") from e
            if mount.get("subPath"):
                local = local / mount["subPath"]
                local.mkdir(parents=True, exist_ok=True)
            path_map[mount["mountPath"].rstrip("/") or "/"] = str(local)
        term_path = container.get("terminationMessagePath") or DEFAULT_TERMINATION_PATH
        run.termination_path.write_bytes(b"")
        path_map[term_path] = str(run.termination_path)
        run.path_map = path_map
        # Files mounted from ConfigMaps name in-container paths too (a stage's config names its storage
        # paths): rewrite them here, as argv and env are rewritten below.
        for mount in container.get("volumeMounts", []):
            if "configMap" in volumes[mount["name"]]:
                _rewrite_files(Path(path_map[mount["mountPath"].rstrip("/") or "/"]), path_map)

    def _pull(self, pod: Mapping[str, Any]) -> None:
        image = str(pod["spec"]["containers"][0].get("image", ""))
        if image in self.missing_images:
            ref = _image_reference(image)
            raise _Waiting(
                "ErrImagePull",
                f"rpc error: code = NotFound desc = failed to pull and unpack image {ref!r}: failed to "
                f"resolve reference {ref!r}: {ref}: not found".replace("'", '"'),
            )

    def _environment(self, pod: Mapping[str, Any], run: PodRun) -> None:
        container = pod["spec"]["containers"][0]
        ns = run.namespace
        env: dict[str, str] = {}
        try:
            for source in container.get("envFrom", []):
                prefix = source.get("prefix", "")
                if "configMapRef" in source:
                    ref = source["configMapRef"]
                    data = self._config_map(ns, ref["name"], optional=ref.get("optional", False))
                else:
                    ref = source["secretRef"]
                    data = self._secret(ns, ref["name"], optional=ref.get("optional", False))
                env.update({prefix + k: v for k, v in data.items()})
            for item in container.get("env", []):
                if "valueFrom" in item:
                    value = self._value_from(pod, item["valueFrom"])
                    if value is None:
                        continue
                else:
                    value = _expand(item.get("value", ""), env)
                env[item["name"]] = _rewrite(value, run.path_map)
        except ValueError as e:
            raise _Waiting("CreateContainerConfigError", str(e)) from e
        run.env = env

    def _command(self, pod: Mapping[str, Any], run: PodRun) -> None:
        """Builds argv and the working directory; raises ValueError if it cannot."""
        container = pod["spec"]["containers"][0]
        env, path_map = run.env, run.path_map
        command = [_expand(c, env) for c in container.get("command", [])]
        args = [_expand(a, env) for a in container.get("args", [])]
        if not command:
            raise ValueError("the fake kubelet needs an explicit command (it cannot read image entrypoints)")
        if re.fullmatch(r"python(3(\.\d+)?)?", Path(command[0]).name):
            command[0] = self.python
        run.argv = [command[0], *(_rewrite(a, path_map) for a in command[1:] + args)]
        working_dir = container.get("workingDir")
        run.cwd = _rewrite(working_dir, path_map) if working_dir else str(run.pod_dir)
        if working_dir and run.cwd == working_dir:
            run.cwd = str(self._overlay_dir(run, working_dir, path_map))
        if not Path(run.cwd).is_dir():
            run.cwd = str(run.pod_dir)

    @staticmethod
    def _overlay_dir(run: PodRun, working_dir: str, path_map: Mapping[str, str]) -> Path:
        """A local stand-in for an unmounted directory whose children are mounts (e.g. the workingDir
        /models of a server that reads /models/<name>): a directory with a link per mount below it."""
        local = run.pod_dir / "fs" / working_dir.strip("/")
        local.mkdir(parents=True, exist_ok=True)
        prefix = working_dir.rstrip("/") + "/"
        for mount, target in path_map.items():
            if mount.startswith(prefix):
                link = local / mount[len(prefix) :]
                link.parent.mkdir(parents=True, exist_ok=True)
                if not link.exists():
                    link.symlink_to(target)
        return local

    def _volume_dir(self, pod: Mapping[str, Any], run: PodRun, volume: Mapping[str, Any]) -> Path:
        ns, name = run.namespace, volume["name"]
        if "persistentVolumeClaim" in volume:
            # Shared by every pod using the claim, like a real volume: stages hand data on this way.
            path = self.claim_dir(ns, volume["persistentVolumeClaim"]["claimName"])
        elif "hostPath" in volume:
            path = self.workdir / "hostpath" / _safe(volume["hostPath"]["path"])
        else:
            path = run.pod_dir / "volumes" / name
        path.mkdir(parents=True, exist_ok=True)
        files: dict[str, bytes] = {}
        if "configMap" in volume:
            src = volume["configMap"]
            files = self._items(
                self._config_map(ns, src["name"], optional=src.get("optional", False), binary=True),
                src.get("items"),
            )
        elif "secret" in volume:
            src = volume["secret"]
            files = self._items(
                self._secret(ns, src["secretName"], optional=src.get("optional", False), binary=True),
                src.get("items"),
            )
        elif "downwardAPI" in volume:
            files = self._downward(pod, volume["downwardAPI"].get("items", []))
        elif "projected" in volume:
            for source in volume["projected"].get("sources", []):
                files.update(self._projected(pod, run, source))
        for rel, content in files.items():
            target = path / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
        return path

    @staticmethod
    def _items(data: Mapping[str, bytes], items: list[Mapping[str, str]] | None) -> dict[str, bytes]:
        if not items:
            return dict(data)
        return {i["path"]: data[i["key"]] for i in items if i["key"] in data}

    def _projected(self, pod: Mapping[str, Any], run: PodRun, source: Mapping[str, Any]) -> dict[str, bytes]:
        ns = run.namespace
        if "configMap" in source:
            src = source["configMap"]
            return self._items(
                self._config_map(ns, src["name"], optional=True, binary=True), src.get("items")
            )
        if "secret" in source:
            src = source["secret"]
            return self._items(self._secret(ns, src["name"], optional=True, binary=True), src.get("items"))
        if "downwardAPI" in source:
            return self._downward(pod, source["downwardAPI"].get("items", []))
        if "serviceAccountToken" in source:
            src = source["serviceAccountToken"]
            body: dict[str, Any] = {
                "spec": {
                    "expirationSeconds": src.get("expirationSeconds", 3600),
                    "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": run.name, "uid": run.uid},
                }
            }
            if src.get("audience"):
                body["spec"]["audiences"] = [src["audience"]]
            sa = pod["spec"].get("serviceAccountName", "default")
            try:
                token = rest(
                    self.api, "POST", f"/api/v1/namespaces/{ns}/serviceaccounts/{sa}/token", body=body
                )
            except ApiException as e:
                log.warning("no token for %s/%s: %s", ns, sa, e.reason)
                return {}
            return {src["path"]: token["status"]["token"].encode()}
        return {}

    def _downward(self, pod: Mapping[str, Any], items: list[Mapping[str, Any]]) -> dict[str, bytes]:
        out = {}
        for item in items:
            if "fieldRef" in item:
                out[item["path"]] = (self._field(pod, item["fieldRef"]["fieldPath"]) or "").encode()
        return out

    @staticmethod
    def _field(pod: Mapping[str, Any], path: str) -> str | None:
        meta = pod["metadata"]
        m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
        if m:
            return str(meta.get(m.group(1), {}).get(m.group(2), ""))
        simple = {
            "metadata.name": meta["name"],
            "metadata.namespace": meta["namespace"],
            "metadata.uid": meta["uid"],
            "spec.nodeName": pod["spec"].get("nodeName"),
            "spec.serviceAccountName": pod["spec"].get("serviceAccountName"),
            "status.podIP": "127.0.0.1",
            "status.hostIP": "127.0.0.1",
        }
        return simple.get(path)

    def _value_from(self, pod: Mapping[str, Any], source: Mapping[str, Any]) -> str | None:
        ns = pod["metadata"]["namespace"]
        for key, kind, read in (
            ("secretKeyRef", "Secret", self._secret),
            ("configMapKeyRef", "ConfigMap", self._config_map),
        ):
            if key in source:
                ref = source[key]
                optional = bool(ref.get("optional", False))
                data = read(ns, ref["name"], optional=optional)
                if ref["key"] in data:
                    return str(data[ref["key"]])
                if optional:
                    return None
                raise ValueError(f"couldn't find key {ref['key']} in {kind} {ns}/{ref['name']}")
        if "fieldRef" in source:
            return self._field(pod, source["fieldRef"]["fieldPath"])
        return None  # resourceFieldRef and friends: nothing sensible to give locally

    def _config_map(
        self, ns: str, name: str, *, optional: bool = False, binary: bool = False
    ) -> dict[str, Any]:
        obj = self._get(f"/api/v1/namespaces/{ns}/configmaps/{name}", "ConfigMap", optional)
        if binary:
            data = {k: v.encode() for k, v in obj.get("data", {}).items()}
            data.update({k: base64.b64decode(v) for k, v in obj.get("binaryData", {}).items()})
            return data
        return dict(obj.get("data", {}))

    def _secret(self, ns: str, name: str, *, optional: bool = False, binary: bool = False) -> dict[str, Any]:
        obj = self._get(f"/api/v1/namespaces/{ns}/secrets/{name}", "Secret", optional)
        decoded = {k: base64.b64decode(v) for k, v in obj.get("data", {}).items()}
        return decoded if binary else {k: v.decode(errors="replace") for k, v in decoded.items()}

    def _get(self, path: str, kind: str, optional: bool) -> dict[str, Any]:
        try:
            obj: dict[str, Any] = rest(self.api, "GET", path)
            return obj
        except ApiException as e:
            if e.status == 404 and optional:
                return {}
            if e.status == 404:
                raise _NotFound(kind, path.rsplit("/", 1)[-1]) from e
            raise

    # ------------------------------------------------------------------------------- running

    def _launch(self, pod: Mapping[str, Any], run: PodRun) -> None:
        restart = run.prepared
        outcome: Outcome | Command | None = None
        try:
            self._prepare(pod, run)
        except _Waiting as w:
            self._wait(pod, run, w)
            return
        except ValueError as e:  # a pod this kubelet cannot run at all
            outcome = Outcome(128, "CreateContainerConfigError", str(e))
        run.wait_until, run.waiting, run.wait_attempts = None, None, 0
        if outcome is None and self.intercept is not None:
            outcome = self.intercept(pod)
        if isinstance(outcome, Command):
            run.argv, run.cwd, outcome = list(outcome.argv), str(run.pod_dir), None
        if outcome is None and not run.argv:
            try:
                self._command(pod, run)
            except ValueError as e:
                outcome = Outcome(128, "CreateContainerConfigError", str(e))
        if restart:
            run.termination_path.write_bytes(b"")  # each container instance starts with an empty one
        run.started_at = _now()
        if outcome is not None:
            self._finish(pod, run, outcome.exit_code, outcome.reason, outcome.message)
            return
        env = {
            **os.environ,
            **self._service_env(),
            **self.extra_env,
            **run.env,
            PATH_MAP_ENV: json.dumps(run.path_map),
            "PYTHONUNBUFFERED": "1",
            "HOSTNAME": run.name,
        }
        env.pop("KUBECONFIG", None)
        with open(run.log_path, "ab") as logf:
            try:
                run.process = subprocess.Popen(
                    run.argv,
                    env=env,
                    cwd=run.cwd,
                    stdin=subprocess.DEVNULL,
                    stdout=logf,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    # Tied to the kubelet thread, which outlives every pod it runs.
                    preexec_fn=die_with_parent,
                )
            except OSError as e:
                self._finish(pod, run, 127, "StartError", f"cannot run {run.argv[0]}: {e}")
                return
        run.restart_at = None
        self._patch_status(pod, run, running=True)

    def _service_env(self) -> dict[str, str]:
        """What the kubelet tells every pod about the API server (read by in-cluster clients)."""
        server = urllib.parse.urlsplit(self.api.configuration.host)
        return {
            "KUBERNETES_SERVICE_HOST": server.hostname or "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": str(server.port or 443),
        }

    def _wait(self, pod: Mapping[str, Any], run: PodRun, waiting: _Waiting) -> None:
        """The container cannot start yet: report why (once per change) and try again after a back-off."""
        now = time.monotonic()
        run.wait_until = now + min(WAIT_BACKOFF_CAP, WAIT_BACKOFF_START * 2**run.wait_attempts)
        run.wait_attempts += 1
        state = (waiting.reason, waiting.message)
        if state != run.waiting:
            run.waiting, run.wait_reported_at = state, now
            self._patch_waiting(pod, run)

    def _check(self, pod: Mapping[str, Any], run: PodRun) -> None:
        if run.wait_until is not None:
            now = time.monotonic()
            if now >= run.wait_until:
                self._launch(pod, run)
            elif run.waiting and run.waiting[0] == "ErrImagePull" and now - run.wait_reported_at >= 1.0:
                # Between pull attempts the kubelet reports the back-off, with the last pull error.
                image = pod["spec"]["containers"][0].get("image", "")
                message = f'Back-off pulling image "{image}": ErrImagePull: {run.waiting[1]}'
                run.waiting, run.wait_reported_at = ("ImagePullBackOff", message), now
                self._patch_waiting(pod, run)
            return
        if run.restart_at is not None:
            if time.monotonic() >= run.restart_at:
                run.restart_count += 1
                self._launch(pod, run)
            return
        if run.process is None or run.process.poll() is None:
            return
        code = run.process.returncode
        if code < 0:  # killed by a signal: report like a container runtime does
            code = 128 - code
        self._finish(pod, run, code, "Completed" if code == 0 else "Error", None)

    def _finish(
        self, pod: Mapping[str, Any], run: PodRun, code: int, reason: str, message: str | None
    ) -> None:
        if message is None:
            message = self._termination_message(pod, run, code)
        run.exit_code, run.reason, run.message = (
            code,
            reason or ("Completed" if code == 0 else "Error"),
            message,
        )
        policy = pod["spec"].get("restartPolicy", "Always")
        if policy == "Always" or (policy == "OnFailure" and code != 0):
            # Restart in place, like the kubelet's crash-loop back-off (kept short for tests).
            run.restart_at = time.monotonic() + min(10.0, 0.5 * 2**run.restart_count)
            run.process = None
            run.previous = self._terminated(run)
            self._patch_status(pod, run, running=False, terminal=False)
            return
        run.done = True
        self._patch_status(pod, run, running=False, terminal=True)

    def _termination_message(self, pod: Mapping[str, Any], run: PodRun, code: int) -> str:
        try:
            raw = run.termination_path.read_bytes()[:TERMINATION_MESSAGE_LIMIT]
        except OSError:
            raw = b""
        container = pod["spec"]["containers"][0]
        if not raw and code != 0 and container.get("terminationMessagePolicy") == "FallbackToLogsOnError":
            lines = run.logs().splitlines()[-80:]
            raw = "\n".join(lines).encode()[-2048:]
        return raw.decode(errors="replace")

    def _kill(self, run: PodRun, *, grace: float) -> None:
        stop_group(run.process, grace)

    def _delete(self, pod: Mapping[str, Any], run: PodRun | None) -> None:
        """Graceful deletion: stop the process, report it terminated, confirm with a zero-grace
        delete like a kubelet (finalizers, e.g. the Job controller's, may keep the pod a while)."""
        meta = pod["metadata"]
        if meta["uid"] in self._confirmed:
            return
        if run is not None and not run.done:
            self._kill(run, grace=min(float(meta.get("deletionGracePeriodSeconds") or 0), 5.0))
            code = run.process.returncode if run.process is not None else 137
            run.exit_code, run.reason, run.message = 128 - code if code < 0 else code, "Error", ""
            run.done = True
            self._patch_status(pod, run, running=False, terminal=True)
        try:
            rest(
                self.api,
                "DELETE",
                f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
                body={"gracePeriodSeconds": 0, "preconditions": {"uid": meta["uid"]}},
            )
        except ApiException as e:
            if e.status not in (404, 409):
                raise
        self._confirmed.add(meta["uid"])

    @staticmethod
    def _terminated(run: PodRun) -> dict[str, Any]:
        return {
            "exitCode": run.exit_code,
            "reason": run.reason,
            "message": run.message,
            "startedAt": run.started_at,
            "finishedAt": _now(),
            "containerID": f"fake://{run.uid}/{run.restart_count}",
        }

    def _patch_waiting(self, pod: Mapping[str, Any], run: PodRun) -> None:
        """Pending, with the container waiting for ``run.waiting`` (reason, message)."""
        assert run.waiting is not None
        container = pod["spec"]["containers"][0]
        reason, message = run.waiting
        now = _now()
        unready = {
            "status": "False",
            "reason": "ContainersNotReady",
            "message": f"containers with unready status: [{container['name']}]",
            "lastTransitionTime": now,
        }
        waiting = {"reason": reason, **({"message": message} if message else {})}
        status = {
            "phase": "Pending",
            "hostIP": "127.0.0.1",
            "startTime": pod.get("status", {}).get("startTime") or now,
            "conditions": [
                {
                    "type": "PodReadyToStartContainers",
                    "status": "False" if reason == "ContainerCreating" else "True",
                    "lastTransitionTime": now,
                },
                {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                {"type": "ContainersReady", **unready},
                {"type": "Ready", **unready},
            ],
            "containerStatuses": [
                {
                    "name": container["name"],
                    "image": container.get("image", ""),
                    "imageID": "",
                    "ready": False,
                    "started": False,
                    "restartCount": run.restart_count,
                    "state": {"waiting": waiting},
                    "lastState": {"terminated": run.previous} if run.previous else {},
                }
            ],
        }
        meta = pod["metadata"]
        try:
            rest(
                self.api,
                "PATCH",
                f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/status",
                body={"status": status},
                content_type="application/strategic-merge-patch+json",
            )
        except ApiException as e:
            if e.status != 404:
                raise

    def _patch_status(
        self, pod: Mapping[str, Any], run: PodRun, *, running: bool, terminal: bool = False
    ) -> None:
        container = pod["spec"]["containers"][0]
        now = _now()
        state: dict[str, Any]
        last_state = {"terminated": run.previous} if run.previous else {}
        if running:
            state = {"running": {"startedAt": run.started_at}}
        elif terminal:
            state = {"terminated": self._terminated(run)}
        else:
            state = {
                "waiting": {"reason": "CrashLoopBackOff", "message": "back-off restarting failed container"}
            }
        ready = "True" if running else "False"
        phase = "Running"
        if terminal:
            phase = "Succeeded" if run.exit_code == 0 else "Failed"
        status = {
            "phase": phase,
            "hostIP": "127.0.0.1",
            "podIP": "127.0.0.1",
            "podIPs": [{"ip": "127.0.0.1"}],
            "startTime": pod.get("status", {}).get("startTime") or run.started_at,
            "conditions": [
                {"type": "PodReadyToStartContainers", "status": "True", "lastTransitionTime": now},
                {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                {"type": "ContainersReady", "status": ready, "lastTransitionTime": now},
                {"type": "Ready", "status": ready, "lastTransitionTime": now},
            ],
            "containerStatuses": [
                {
                    "name": container["name"],
                    "image": container.get("image", ""),
                    "imageID": "",
                    "containerID": f"fake://{run.uid}/{run.restart_count}",
                    "ready": running,
                    "started": running,
                    "restartCount": run.restart_count,
                    "state": state,
                    "lastState": last_state,
                }
            ],
        }
        meta = pod["metadata"]
        try:
            rest(
                self.api,
                "PATCH",
                f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/status",
                body={"status": status},
                content_type="application/strategic-merge-patch+json",
            )
        except ApiException as e:
            if e.status != 404:
                raise
