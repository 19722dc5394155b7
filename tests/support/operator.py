"""The Stratos operator as a real ``kopf run`` process, authenticated as the chart's ServiceAccount."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.controlplane import ControlPlane, free_port, wait_for

REPO_ROOT = Path(__file__).resolve().parents[2]
RELEASE = "stratos-op"
OPERATOR_NS = "stratos-system"
#: The operator's default storage (the chart's storage.defaultClaim); the ``namespace`` fixture makes
#: this claim, bound, in every test namespace, as an admin would for users of the default.
DEFAULT_CLAIM = "default-storage"


class OperatorProcess:
    """Starts, stops and restarts ``kopf run -m stratos.controller.operator`` against a kubeconfig."""

    def __init__(
        self,
        kubeconfig: Path,
        workdir: Path,
        *,
        interval: float = 0.5,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.kubeconfig = kubeconfig
        self.extra_env = dict(extra_env or {})
        self.workdir = workdir
        self.interval = interval
        self.metrics_port = free_port()
        self.health_port = free_port()
        self.log_path = workdir / "operator.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.health_port}/healthz"

    def start(self) -> OperatorProcess:
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "STRATOS_METRICS_PORT": str(self.metrics_port),
            "STRATOS_RECONCILE_INTERVAL": str(self.interval),
            "STRATOS_DEFAULT_CLAIM": DEFAULT_CLAIM,
            **self.extra_env,
        }
        cmd = [
            sys.executable, "-m", "kopf", "run", "--standalone", "--all-namespaces",
            f"--liveness=http://127.0.0.1:{self.health_port}/healthz",
            "-m", "stratos.controller.operator",
        ]  # fmt: skip
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT)
        log.close()
        self.starts += 1
        wait_for(self._healthy, timeout=60, what=f"operator liveness (log: {self.log_path})")
        return self

    def _healthy(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"operator exited {self.process.returncode}:\n{self.log_tail()}")
        with urllib.request.urlopen(self.health_url, timeout=2) as response:
            return bool(response.status == 200)

    def stop(self, *, kill: bool = False) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def wait_exit(self, timeout: float) -> int:
        """Wait for the process to end by itself (e.g. at a crash point); returns its exit code."""
        assert self.process is not None
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            tail = self.log_tail()
            raise AssertionError(f"the operator did not exit within {timeout} s:\n{tail}") from None

    def restart(self, *, kill: bool = False) -> None:
        self.stop(kill=kill)
        self.start()

    def metrics(self) -> str:
        with urllib.request.urlopen(self.metrics_url, timeout=5) as response:
            return str(response.read().decode())

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@pytest.fixture(scope="module")
def operator(
    control_plane: ControlPlane, crd_installed: Path, api: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    control_plane.kubectl("create", "namespace", OPERATOR_NS, check=False)
    control_plane.kubectl(
        "label", "--overwrite", "namespace", OPERATOR_NS, "pod-security.kubernetes.io/enforce=restricted"
    )
    control_plane.helm(
        "install", RELEASE, str(REPO_ROOT / "charts" / "stratos"), "--namespace", OPERATOR_NS,
        "--set", "crds.install=false", "--set", "replicaCount=0",
    )  # fmt: skip
    kubeconfig = control_plane.kubeconfig_for_service_account(OPERATOR_NS, RELEASE)
    proc = OperatorProcess(kubeconfig, tmp_path_factory.mktemp("operator")).start()
    try:
        yield proc
    finally:
        proc.stop()
        control_plane.helm("uninstall", RELEASE, "--namespace", OPERATOR_NS, check=False)
