"""The real Kueue controller (sigs.k8s.io/kueue) against the test control plane.

``tests/kueue/build.sh`` compiles ``cmd/kueue`` from the Go module pinned in ``tests/kueue/go.mod`` and
copies its CRDs from the same module source. Here it runs as a local process with the admin's
kubeconfig, only the ``batch/job`` integration, no leader election and no metrics server.

Kueue's webhooks are not registered with the API server (nothing needs them: the operator creates its
Jobs suspended and labelled, which is what Kueue's mutating webhook would do). Kueue still insists on
serving them and on its internal certificate management (without it, it reads metrics certificates from
a fixed path under /etc): it fills the Secret ``kueue-webhook-server-cert`` with a self-signed
certificate and expects the kubelet to mount it into its certificate directory, so ``KueueController``
writes the two files from the Secret itself. It also injects its CA into the webhook configurations
(none exist here, which it accepts) and into the conversion webhooks of five CRDs, which must therefore
name one: they point at a Service that does not exist, which is never called as long as every client
uses the storage version v1beta2.
"""

from __future__ import annotations

import base64
import os
import subprocess
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from support.controlplane import (
    ControlPlane,
    ControlPlaneError,
    die_with_parent,
    free_port,
    rest,
    stop_group,
    wait_for,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "tests" / "kueue" / "build.sh"
NAMESPACE = "kueue-system"
SECRET = "kueue-webhook-server-cert"
API = "/apis/kueue.x-k8s.io/v1beta2"
#: The CRDs Kueue's certificate manager injects its CA into (pkg/util/cert).
CONVERSION_CRDS = {
    "localqueues.kueue.x-k8s.io",
    "clusterqueues.kueue.x-k8s.io",
    "workloads.kueue.x-k8s.io",
    "cohorts.kueue.x-k8s.io",
    "multikueueclusters.kueue.x-k8s.io",
}


def resolve_kueue_dir() -> Path:
    """$STRATOS_KUEUE_DIR (holding bin/kueue and crds/), else the build cache (building if needed)."""
    env_dir = os.environ.get("STRATOS_KUEUE_DIR")
    if env_dir:
        path = Path(env_dir)
    else:
        result = subprocess.run(
            ["bash", str(BUILD_SCRIPT), "--print-dir"], stdout=subprocess.PIPE, text=True, check=False
        )
        if result.returncode != 0:
            raise ControlPlaneError(f"{BUILD_SCRIPT} failed with exit code {result.returncode}")
        path = Path(result.stdout.strip())
    if not (path / "bin" / "kueue").is_file() or not any((path / "crds").glob("*.yaml")):
        raise ControlPlaneError(f"{path} holds no bin/kueue and crds/*.yaml")
    return path


def crd_manifests(crd_dir: Path) -> list[dict[str, Any]]:
    """Kueue's CRDs, with a conversion webhook on the ones its certificate manager expects one on."""
    crds = []
    for path in sorted(crd_dir.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc:
                continue
            if doc["metadata"]["name"] in CONVERSION_CRDS:
                doc["spec"]["conversion"] = {
                    "strategy": "Webhook",
                    "webhook": {
                        "conversionReviewVersions": ["v1"],
                        "clientConfig": {
                            "service": {
                                "name": "kueue-webhook-service",
                                "namespace": NAMESPACE,
                                "path": "/convert",
                            }
                        },
                    },
                }
            crds.append(doc)
    return crds


class KueueController:
    """Installs Kueue's CRDs, runs its controller and stops it again; use as a context manager."""

    def __init__(self, cp: ControlPlane, api: Any, workdir: Path, *, kueue_dir: Path | None = None) -> None:
        self.cp, self.api, self.workdir = cp, api, workdir
        self.kueue_dir = kueue_dir or resolve_kueue_dir()
        self.cert_dir = workdir / "certs"
        self.log_path = workdir / "kueue.log"
        self.health_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._stop = threading.Event()

    def __enter__(self) -> KueueController:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def install(self) -> None:
        crd_file = self.workdir / "crds.yaml"
        crd_file.write_text(yaml.safe_dump_all(crd_manifests(self.kueue_dir / "crds")))
        self.cp.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd_file), timeout=120)
        wait_for(
            lambda: (
                self.cp.kubectl(
                    "wait", "--for=condition=Established", "--timeout=20s", "-f", str(crd_file), check=False
                ).returncode
                == 0
            ),
            timeout=90,
            what="Kueue's CRDs to be Established",
        )
        self.cp.kubectl("create", "namespace", NAMESPACE, check=False)
        self.cp.kubectl("create", "secret", "generic", SECRET, "-n", NAMESPACE, check=False)

    def start(self) -> KueueController:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.cert_dir.mkdir(exist_ok=True)
        self.install()
        config = {
            "apiVersion": "config.kueue.x-k8s.io/v1beta2",
            "kind": "Configuration",
            "namespace": NAMESPACE,
            "health": {"healthProbeBindAddress": f"127.0.0.1:{self.health_port}"},
            "metrics": {"bindAddress": "0"},
            "webhook": {"port": free_port(), "host": "127.0.0.1", "certDir": str(self.cert_dir)},
            "leaderElection": {"leaderElect": False},
            "internalCertManagement": {"enable": True},
            "manageJobsWithoutQueueName": False,
            "integrations": {"frameworks": ["batch/job"]},
        }
        config_file = self.workdir / "config.yaml"
        config_file.write_text(yaml.safe_dump(config))
        log = self.log_path.open("ab")
        try:
            self.process = subprocess.Popen(
                [
                    str(self.kueue_dir / "bin" / "kueue"),
                    f"--config={config_file}",
                    "--feature-gates=VisibilityOnDemand=false",
                    "--zap-log-level=2",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.cp.env(),
                cwd=self.workdir,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        finally:
            log.close()
        threading.Thread(target=self._mount_certs, name="kueue-certs", daemon=True).start()
        try:
            wait_for(self._ready, timeout=180, interval=1, what=f"Kueue to be ready (log: {self.log_path})")
        except BaseException:
            self.stop()
            raise
        return self

    def _mount_certs(self) -> None:
        """What the kubelet does for Kueue's pod: the Secret's certificate and key as files."""
        while not self._stop.is_set():
            try:
                data = (
                    rest(self.api, "GET", f"/api/v1/namespaces/{NAMESPACE}/secrets/{SECRET}").get("data")
                    or {}
                )
            except Exception:  # the API server may be busy; try again
                data = {}
            if data.get("tls.crt") and data.get("tls.key"):
                for key in ("tls.crt", "tls.key", "ca.crt"):
                    if key in data:
                        (self.cert_dir / key).write_bytes(base64.b64decode(data[key]))
                return
            self._stop.wait(0.5)

    def _ready(self) -> bool:
        import urllib.request

        if self.process is not None and self.process.poll() is not None:
            raise ControlPlaneError(f"kueue exited with {self.process.returncode}:\n{self.log_tail()}")
        with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/readyz", timeout=2) as response:
            return bool(response.status == 200)

    def stop(self) -> None:
        self._stop.set()
        proc, self.process = self.process, None
        stop_group(proc)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    # --------------------------------------------------------------------------- queue objects

    def apply(self, manifest: Mapping[str, Any]) -> None:
        self.cp.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump(dict(manifest)))

    def workloads(self, namespace: str) -> list[dict[str, Any]]:
        return list(rest(self.api, "GET", f"{API}/namespaces/{namespace}/workloads")["items"])


def resource_flavor(name: str, node_labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    spec = {"nodeLabels": dict(node_labels)} if node_labels else {}
    return {
        "apiVersion": "kueue.x-k8s.io/v1beta2",
        "kind": "ResourceFlavor",
        "metadata": {"name": name},
        "spec": spec,
    }


def cluster_queue(name: str, flavor: str, quotas: Mapping[str, str]) -> dict[str, Any]:
    """A ClusterQueue with one flavor, preempting lower-priority workloads within itself."""
    return {
        "apiVersion": "kueue.x-k8s.io/v1beta2",
        "kind": "ClusterQueue",
        "metadata": {"name": name},
        "spec": {
            "namespaceSelector": {},
            "preemption": {"withinClusterQueue": "LowerPriority"},
            "resourceGroups": [
                {
                    "coveredResources": sorted(quotas),
                    "flavors": [
                        {
                            "name": flavor,
                            "resources": [{"name": r, "nominalQuota": q} for r, q in sorted(quotas.items())],
                        }
                    ],
                }
            ],
        },
    }


def local_queue(namespace: str, name: str, cluster_queue_name: str) -> dict[str, Any]:
    return {
        "apiVersion": "kueue.x-k8s.io/v1beta2",
        "kind": "LocalQueue",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"clusterQueue": cluster_queue_name},
    }


def workload_priority_class(name: str, value: int) -> dict[str, Any]:
    return {
        "apiVersion": "kueue.x-k8s.io/v1beta2",
        "kind": "WorkloadPriorityClass",
        "metadata": {"name": name},
        "value": value,
    }
