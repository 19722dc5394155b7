"""A real Kubernetes control plane for the test suite, run as local processes.

The integration tests need the behaviour of a real API server (validation, CEL rules, RBAC,
PodSecurity admission, the status subresource, watches), of the garbage collector and of the
scheduler, so nothing here is mocked: etcd, kube-apiserver and optionally kube-controller-manager
and kube-scheduler are the upstream programs, built from Go modules by
``tests/controlplane/build.sh`` and started on free loopback ports in a scratch directory. There is
no kubelet; ``support.kubelet.FakeKubelet`` plays that part for pods bound to fake nodes.

Identities are real: the admin is a static-token user in ``system:masters``, and
``kubeconfig_for_service_account`` hands out a kubeconfig holding a TokenRequest token, so code
run with it is subject to the RBAC rules of that ServiceAccount.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import functools
import json
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "tests" / "controlplane" / "build.sh"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "helm")
SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/16"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
ADMIN_USER = "stratos-admin"

# All the default controllers (garbage collector, job, deployment, replicaset, namespace,
# serviceaccount, serviceaccount-token, ...) except the node lifecycle controller: fake nodes send
# no heartbeats and must stay Ready. Node IPAM has nothing to allocate here.
CONTROLLERS = ("*", "-node-lifecycle-controller", "-node-ipam-controller")


class ControlPlaneError(RuntimeError):
    """The control plane could not be built, started or reached; the message carries log tails."""


class CommandError(subprocess.CalledProcessError):
    """A kubectl/helm call failed; unlike CalledProcessError its message includes stderr."""

    def __str__(self) -> str:
        cmd = " ".join(str(c) for c in self.cmd) if isinstance(self.cmd, list | tuple) else str(self.cmd)
        return f"{cmd!r} exited {self.returncode}:\n{self.stderr or ''}{self.stdout or ''}".rstrip()


def free_port() -> int:
    """Returns a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def resolve_bin_dir(*, stderr: Any = None) -> Path:
    """Where the binaries are: $STRATOS_K8S_BIN, else the build cache (building it if needed)."""
    env_dir = os.environ.get("STRATOS_K8S_BIN")
    if env_dir:
        path = Path(env_dir)
    else:
        try:
            out = subprocess.run(
                ["bash", str(BUILD_SCRIPT), "--print-bin-dir"],
                check=True,
                text=True,
                stdout=subprocess.PIPE,
                stderr=stderr,
            )
        except subprocess.CalledProcessError as e:
            raise ControlPlaneError(
                f"{BUILD_SCRIPT} failed with exit {e.returncode}; see its output above"
            ) from e
        path = Path(out.stdout.strip())
    missing = [b for b in BINARIES if not os.access(path / b, os.X_OK)]
    if missing:
        raise ControlPlaneError(f"{path} lacks the binaries {missing} (STRATOS_K8S_BIN or build.sh)")
    return path


# Loaded up front: the child of a fork must not dlopen (another thread may hold the loader lock).
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None


def die_with_parent() -> None:
    """Runs in a child before exec: get SIGKILL when the thread that started it dies, even when
    the test process is killed with SIGKILL and no cleanup code runs (PR_SET_PDEATHSIG)."""
    if _LIBC is not None:
        _LIBC.prctl(1, signal.SIGKILL)


_LIVE: weakref.WeakSet[ControlPlane] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    for cp in list(_LIVE):
        cp.stop()


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


class ControlPlane:
    """etcd + kube-apiserver (+ kube-controller-manager, kube-scheduler) on loopback ports.

    Use as a context manager or call ``start()``/``stop()``. ``workdir`` holds certificates,
    etcd data, kubeconfigs and ``logs/<process>.log``; a directory this class created itself is
    removed by ``stop()`` unless startup failed or $STRATOS_KEEP_CONTROLPLANE is set. The
    processes die with the thread that started them (see ``die_with_parent``): start it from a
    thread that lives as long as it should, normally the main thread.
    """

    def __init__(
        self,
        *,
        workdir: Path | None = None,
        bin_dir: Path | None = None,
        controller_manager: bool = True,
        scheduler: bool = True,
        startup_timeout: float = 120.0,
        extra_apiserver_args: Sequence[str] = (),
        bind_address: str = "127.0.0.1",
        node_lifecycle: bool = False,
    ) -> None:
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="stratos-cp-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_dir = self.workdir / "logs"
        self._bin_dir = bin_dir
        self.with_controller_manager = controller_manager
        self.with_scheduler = scheduler
        self.startup_timeout = startup_timeout
        self.extra_apiserver_args = list(extra_apiserver_args)
        # Loopback by default. A real node's pods reach the API server only on a routable address (a
        # dummy interface's): then the `kubernetes` Service gets it as its endpoint.
        self.bind_address = bind_address
        # Fake nodes send no heartbeats, so the node lifecycle controller would mark them NotReady; a
        # real kubelet needs it (it lifts the not-ready taint the kubelet registers with).
        self.node_lifecycle = node_lifecycle
        self.admin_token = secrets.token_hex(24)
        self.port = 0
        self.kubeconfig = self.workdir / "admin.kubeconfig"
        self.cert_dir = self.workdir / "apiserver-certs"
        self.ca_file = self.workdir / "ca.crt"  # the CA of the API server's self-signed serving cert
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._failed = False

    # ----------------------------------------------------------------------------------- lifecycle

    @property
    def bin_dir(self) -> Path:
        if self._bin_dir is None:
            self._bin_dir = resolve_bin_dir()
        return self._bin_dir

    @property
    def server(self) -> str:
        return f"https://{self.bind_address}:{self.port}"

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> ControlPlane:
        """Starts every process and returns once the API server is ready; raises ControlPlaneError."""
        _LIVE.add(self)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._write_credentials()
            etcd_url = self._start_etcd()
            self._start_apiserver(etcd_url)
            self._extract_ca()
            self._write_admin_kubeconfig()
            waits = []
            if self.with_controller_manager:
                waits.append(
                    self._start_component(
                        "kube-controller-manager",
                        [
                            f"--controllers={','.join(self._controllers())}",
                            "--leader-elect=false",
                            "--use-service-account-credentials=false",
                            f"--service-account-private-key-file={self.workdir / 'sa.key'}",
                            f"--root-ca-file={self.ca_file}",
                            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                            "--concurrent-gc-syncs=5",
                        ],
                    )
                )
            if self.with_scheduler:
                waits.append(self._start_component("kube-scheduler", ["--leader-elect=false"]))
            for wait in waits:
                wait()
        except BaseException:
            self._failed = True
            self.stop()
            raise
        return self

    def _controllers(self) -> tuple[str, ...]:
        if self.node_lifecycle:
            return tuple(c for c in CONTROLLERS if c != "-node-lifecycle-controller")
        return CONTROLLERS

    def stop(self) -> None:
        """Terminates every process (SIGTERM, then SIGKILL after 10 s). Safe to call twice.

        The Kubernetes components stop together, etcd last so the API server can shut down cleanly.
        """
        clients = [n for n in self._procs if n != "etcd"]
        for group in (clients, ["etcd"] if "etcd" in self._procs else []):
            for name in group:
                if self._procs[name].poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(self._procs[name].pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            for name in group:
                proc = self._procs.pop(name)
                try:
                    proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        _LIVE.discard(self)
        keep = self._failed or os.environ.get("STRATOS_KEEP_CONTROLPLANE")
        if self._own_workdir and not keep:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def log_tails(self, lines: int = 30) -> str:
        """The last lines of every process log, for error messages."""
        parts = []
        for log in sorted(self.log_dir.glob("*.log")):
            parts.append(f"----- {log} (last {lines} lines) -----\n{_tail(log, lines)}")
        return "\n".join(parts)

    def check_alive(self) -> None:
        """Raises ControlPlaneError if a process has exited (a crashed scheduler fails tests oddly)."""
        for name, proc in self._procs.items():
            if proc.poll() is not None:
                raise ControlPlaneError(f"{name} exited with {proc.returncode}\n{self.log_tails()}")

    # ------------------------------------------------------------------------------------- clients

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        kubeconfig: Path | None = None,
        timeout: float = 120.0,
    ) -> subprocess.CompletedProcess[str]:
        """Runs kubectl against this control plane (admin unless ``kubeconfig`` is given)."""
        __tracebackhide__ = True
        cmd = [str(self.bin_dir / "kubectl"), f"--kubeconfig={kubeconfig or self.kubeconfig}", *args]
        return self._run(cmd, input=input, check=check, timeout=timeout)

    def helm(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        kubeconfig: Path | None = None,
        timeout: float = 300.0,
    ) -> subprocess.CompletedProcess[str]:
        """Runs helm against this control plane, with its cache/config/data dirs in the workdir."""
        __tracebackhide__ = True
        home = self.workdir / "helm"
        env = {
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data"),
        }
        cmd = [str(self.bin_dir / "helm"), f"--kubeconfig={kubeconfig or self.kubeconfig}", *args]
        return self._run(cmd, input=input, check=check, timeout=timeout, env=env)

    def api_client(self, kubeconfig: Path | None = None) -> Any:
        """A kubernetes.client.ApiClient for the admin (or for ``kubeconfig``)."""
        from kubernetes import config

        return config.new_client_from_config(config_file=str(kubeconfig or self.kubeconfig))

    def kubeconfig_for_service_account(
        self,
        namespace: str,
        name: str,
        *,
        duration: str = "24h",
        path: Path | None = None,
    ) -> Path:
        """Writes a kubeconfig holding a real TokenRequest token of ServiceAccount namespace/name.

        Whatever runs with it is authenticated as system:serviceaccount:<namespace>:<name> and
        authorised by RBAC exactly as in a cluster, which is how the operator runs under the
        identity the Helm chart gives it.
        """
        token = self.kubectl(
            "create", "token", name, "-n", namespace, f"--duration={duration}"
        ).stdout.strip()
        path = path or self.workdir / "kubeconfigs" / f"{namespace}-{name}.kubeconfig"
        self._write_kubeconfig(path, user=f"{namespace}-{name}", token=token, namespace=namespace)
        return path

    def env(self, kubeconfig: Path | None = None) -> dict[str, str]:
        """os.environ plus KUBECONFIG, for running other programs (the operator) against this cluster."""
        return {**os.environ, "KUBECONFIG": str(kubeconfig or self.kubeconfig)}

    # ------------------------------------------------------------------------------------ internals

    def _run(
        self,
        cmd: list[str],
        *,
        input: str | None,
        check: bool,
        timeout: float,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        __tracebackhide__ = True
        full_env = {**os.environ, **(env or {})}
        full_env.pop("KUBECONFIG", None)
        try:
            result = subprocess.run(
                cmd,
                input=input,
                text=True,
                capture_output=True,
                timeout=timeout,
                env=full_env,
            )
        except subprocess.TimeoutExpired as e:
            raise ControlPlaneError(f"{' '.join(cmd)!r} timed out after {timeout} s") from e
        if check and result.returncode != 0:
            raise CommandError(result.returncode, cmd, result.stdout, result.stderr)
        return result

    def _popen(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it
        try:
            proc = subprocess.Popen(
                [str(self.bin_dir / name), *args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        finally:
            log.close()
        self._procs[name] = proc
        return proc

    def _openssl(self, *args: str) -> None:
        try:
            subprocess.run(["openssl", *args], check=True, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.CalledProcessError) as e:
            detail = getattr(e, "stderr", "") or str(e)
            raise ControlPlaneError(f"openssl {' '.join(args)} failed: {detail}") from e

    def _write_credentials(self) -> None:
        key, pub = self.workdir / "sa.key", self.workdir / "sa.pub"
        if not key.exists():
            self._openssl("genrsa", "-out", str(key), "2048")
            self._openssl("rsa", "-in", str(key), "-pubout", "-out", str(pub))
        (self.workdir / "tokens.csv").write_text(
            f'{self.admin_token},{ADMIN_USER},{ADMIN_USER},"system:masters"\n'
        )

    def _start_etcd(self) -> str:
        # A port can be taken between free_port() and the bind: retry with fresh ports.
        for attempt in range(3):
            client, peer = free_port(), free_port()
            url, peer_url = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
            data = self.workdir / "etcd"
            shutil.rmtree(data, ignore_errors=True)
            proc = self._popen(
                "etcd",
                [
                    "--name=stratos",
                    f"--data-dir={data}",
                    f"--listen-client-urls={url}",
                    f"--advertise-client-urls={url}",
                    f"--listen-peer-urls={peer_url}",
                    f"--initial-advertise-peer-urls={peer_url}",
                    f"--initial-cluster=stratos={peer_url}",
                    "--unsafe-no-fsync",
                    "--log-level=warn",
                    "--quota-backend-bytes=2147483648",
                ],
            )
            try:
                self._wait_ready("etcd", f"{url}/health", 30.0)
                return url
            except ControlPlaneError:
                if proc.poll() is None or attempt == 2:
                    raise
                del self._procs["etcd"]
        raise AssertionError("unreachable")

    def _start_apiserver(self, etcd_url: str) -> None:
        certs = self.cert_dir
        for attempt in range(3):
            self.port = free_port()
            proc = self._popen(
                "kube-apiserver",
                [
                    f"--etcd-servers={etcd_url}",
                    f"--bind-address={self.bind_address}",
                    f"--advertise-address={self.bind_address}",
                    f"--secure-port={self.port}",
                    f"--cert-dir={certs}",
                    f"--token-auth-file={self.workdir / 'tokens.csv'}",
                    "--authorization-mode=RBAC",
                    "--allow-privileged=true",
                    # A loopback address the endpoint reconciler refuses to publish; nothing reaches
                    # the API server through its Service then anyway.
                    "--endpoint-reconciler-type="
                    + ("none" if self.bind_address.startswith("127.") else "lease"),
                    f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                    f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
                    f"--service-account-key-file={self.workdir / 'sa.pub'}",
                    f"--service-account-signing-key-file={self.workdir / 'sa.key'}",
                    "--profiling=false",
                    *self.extra_apiserver_args,
                ],
            )
            try:
                self._wait_ready(
                    "kube-apiserver",
                    f"{self.server}/readyz",
                    self.startup_timeout,
                    headers={"Authorization": f"Bearer {self.admin_token}"},
                )
                return
            except ControlPlaneError:
                # The port may have been taken since free_port() looked: then try another one.
                lost_port = "address already in use" in _tail(self.log_dir / "kube-apiserver.log", 20)
                if proc.poll() is None or attempt == 2 or not lost_port:
                    raise
                del self._procs["kube-apiserver"]

    def _start_component(self, name: str, args: list[str]) -> Callable[[], None]:
        """Starts a component and returns a function that waits for its /healthz."""
        port = free_port()
        self._popen(
            name,
            [
                f"--kubeconfig={self.kubeconfig}",
                # No delegated authn/authz: only /healthz is served (always allowed), and there is
                # no extension-apiserver-authentication ConfigMap to look up.
                "--bind-address=127.0.0.1",
                f"--secure-port={port}",
                f"--cert-dir={self.workdir / (name + '-certs')}",
                *args,
            ],
        )
        return functools.partial(self._wait_ready, name, f"https://127.0.0.1:{port}/healthz", 60.0)

    def _wait_ready(
        self,
        name: str,
        url: str,
        timeout: float,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # only a readiness probe; real clients verify the CA
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            proc = self._procs.get(name)
            if proc is not None and proc.poll() is not None:
                raise ControlPlaneError(
                    f"{name} exited with {proc.returncode} during startup\n{self.log_tails()}"
                )
            try:
                req = urllib.request.Request(url, headers=dict(headers or {}))
                with urllib.request.urlopen(req, timeout=5, context=ctx) as resp:
                    if resp.status == 200:
                        return
                    last = f"HTTP {resp.status}"
            except urllib.error.HTTPError as e:
                last = f"HTTP {e.code}: {e.read()[-500:].decode(errors='replace')}"
            except (OSError, urllib.error.URLError) as e:
                last = str(e)
            time.sleep(0.2)
        raise ControlPlaneError(
            f"{name} not ready at {url} after {timeout:.0f} s ({last})\n{self.log_tails()}"
        )

    def _extract_ca(self) -> None:
        """Splits the CA out of the generated serving cert file (serving cert first, then its CA).

        Clients verify against it, and the controller manager publishes it as kube-root-ca.crt,
        which must hold a CA certificate only.
        """
        pem = (self.cert_dir / "apiserver.crt").read_text()
        blocks = re.findall(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----\n?", pem, re.DOTALL)
        if not blocks:
            raise ControlPlaneError(f"no certificate in {self.cert_dir / 'apiserver.crt'}")
        self.ca_file.write_text("".join(blocks[1:] or blocks))

    def _write_admin_kubeconfig(self) -> None:
        self._write_kubeconfig(self.kubeconfig, user=ADMIN_USER, token=self.admin_token, namespace="default")

    def _write_kubeconfig(self, path: Path, *, user: str, token: str, namespace: str) -> None:
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "stratos-test",
                    "cluster": {
                        "server": self.server,
                        "certificate-authority": str(self.ca_file),
                    },
                }
            ],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [
                {
                    "name": user,
                    "context": {
                        "cluster": "stratos-test",
                        "user": user,
                        "namespace": namespace,
                    },
                }
            ],
            "current-context": user,
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(doc))
        path.chmod(0o600)


def stop_group(proc: subprocess.Popen[Any] | None, grace: float = 15.0) -> None:
    """Stops a process started in its own session and everything it started: SIGTERM to the group,
    SIGKILL after ``grace`` seconds. Nothing to do for a process already gone."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=max(grace, 0.1))
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def wait_for(
    predicate: Callable[[], Any],
    *,
    timeout: float = 30.0,
    interval: float = 0.2,
    what: str = "condition",
) -> Any:
    """Polls ``predicate`` until it returns a truthy value, which is returned; else TimeoutError.

    Exceptions raised by the predicate count as "not yet" and the last one is reported.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as e:  # reported below
            last_error = e
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}{detail}")
        time.sleep(interval)


def rest(
    api: Any,
    method: str,
    path: str,
    *,
    body: Any = None,
    query: Mapping[str, Any] | None = None,
    content_type: str | None = None,
    timeout: float = 30.0,
) -> Any:
    """One raw API call with ``api`` (an ApiClient) returning the decoded JSON (plain dicts).

    The test helpers speak plain API JSON (camelCase, exactly what kubectl shows) instead of the
    generated model classes, so they do not depend on how a client version maps models; errors are
    raised as kubernetes.client.ApiException like the typed calls do.
    """
    from kubernetes.client.exceptions import ApiException

    headers = {"Accept": "application/json"}
    if body is not None:
        headers["Content-Type"] = content_type or (
            "application/merge-patch+json" if method == "PATCH" else "application/json"
        )
    _, url, headers, _, _ = api.param_serialize(
        method,
        path,
        query_params=list((query or {}).items()) or None,
        header_params=headers,
        auth_settings=["BearerToken"],
    )
    resp = api.rest_client.request(method, url, headers=headers, body=body, _request_timeout=timeout)
    raw = resp.read()
    text = raw.decode("utf-8", errors="replace") if raw else ""
    if not 200 <= resp.status <= 299:
        raise ApiException.from_response(http_resp=resp, body=text, data=None)
    return json.loads(text) if text else None
