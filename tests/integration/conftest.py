"""Fixtures for the tests that run against the real control plane (support.controlplane).

Every test in tests/integration is marked ``controlplane``. One control plane serves the whole
session; tests isolate themselves with the ``namespace`` fixture and clean up the cluster-scoped
objects they create (``gpu_nodes`` does that for Nodes). When a test fails, the tails of the
control-plane logs are attached to its report.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from support.controlplane import REPO_ROOT, ControlPlane, ControlPlaneError, resolve_bin_dir, rest, wait_for
from support.kubelet import FakeKubelet, create_bound_pvc, delete_pv
from support.nodes import create_gpu_node, delete_node
from support.operator import DEFAULT_CLAIM

HERE = Path(__file__).resolve().parent
CONTROL_PLANE_KEY = pytest.StashKey[ControlPlane]()


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.controlplane)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    cp = item.config.stash.get(CONTROL_PLANE_KEY, None)
    if cp is not None and report.failed and HERE in item.path.parents:
        dead = [f"{n} exited with {p.returncode}" for n, p in cp._procs.items() if p.poll() is not None]
        header = f"logs in {cp.log_dir}" + (f"; {', '.join(dead)}" if dead else "")
        report.sections.append(("control plane", f"{header}\n{cp.log_tails(15)}"))
    return report


@pytest.fixture(scope="session")
def control_plane(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ControlPlane]:
    """etcd, kube-apiserver, kube-controller-manager and kube-scheduler for the whole session.

    A cold build of the binaries takes long; its progress is shown live (capture disabled).
    """
    capman = request.config.pluginmanager.getplugin("capturemanager")
    try:
        with capman.global_and_fixture_disabled():
            bin_dir = resolve_bin_dir()
    except ControlPlaneError as e:
        pytest.fail(str(e), pytrace=False)
    cp = ControlPlane(workdir=tmp_path_factory.mktemp("controlplane"), bin_dir=bin_dir)
    try:
        cp.start()
    except ControlPlaneError as e:
        pytest.fail(f"the test control plane did not start: {e}", pytrace=False)
    request.config.stash[CONTROL_PLANE_KEY] = cp
    try:
        yield cp
    finally:
        del request.config.stash[CONTROL_PLANE_KEY]
        cp.stop()


@pytest.fixture(scope="session")
def api(control_plane: ControlPlane) -> Iterator[Any]:
    """A kubernetes.client.ApiClient authenticated as the admin (system:masters)."""
    client = control_plane.api_client()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="session")
def crd_installed(control_plane: ControlPlane) -> Path:
    """Applies every manifest in crds/ and waits until the CRDs are Established."""
    crds = REPO_ROOT / "crds"
    if not any(crds.glob("*.yaml")):
        pytest.fail(f"no CRD manifests in {crds}", pytrace=False)
    control_plane.kubectl("apply", "--server-side", "-f", str(crds))
    # `kubectl wait` fails outright (instead of waiting) while the new CRD has no conditions yet.
    wait_for(
        lambda: (
            control_plane.kubectl(
                "wait", "--for=condition=Established", "--timeout=20s", "-f", str(crds), check=False
            ).returncode
            == 0
        ),
        timeout=60,
        what="the CRDs to be Established",
    )
    return crds


def _namespace_name(request: pytest.FixtureRequest) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    return f"t-{slug}-{secrets.token_hex(3)}"


@pytest.fixture
def namespace(request: pytest.FixtureRequest, control_plane: ControlPlane, api: Any) -> Iterator[str]:
    """A fresh namespace enforcing the restricted Pod Security Standard; deleted afterwards.

    Waits for its ``default`` ServiceAccount (made by the controller manager), without which the
    ServiceAccount admission plugin rejects pods.
    """
    name = _namespace_name(request)
    rest(
        api,
        "POST",
        "/api/v1/namespaces",
        body={
            "metadata": {
                "name": name,
                "labels": {
                    "pod-security.kubernetes.io/enforce": "restricted",
                    "pod-security.kubernetes.io/enforce-version": "latest",
                },
            }
        },
    )
    volume = None
    if control_plane.with_controller_manager:
        wait_for(
            lambda: rest(api, "GET", f"/api/v1/namespaces/{name}/serviceaccounts/default"),
            timeout=30,
            what=f"ServiceAccount {name}/default",
        )
        # The operator's default storage (support.operator.DEFAULT_CLAIM), for jobs without spec.storage.
        volume = create_bound_pvc(api, name, DEFAULT_CLAIM)
    try:
        yield name
    finally:
        if volume is not None:
            delete_pv(api, volume)
        # Pods on fake nodes have no kubelet to confirm their deletion: remove them at once so
        # the namespace can go; the namespace itself is deleted in the background.
        rest(api, "DELETE", f"/api/v1/namespaces/{name}/pods", body={"gracePeriodSeconds": 0})
        rest(api, "DELETE", f"/api/v1/namespaces/{name}", body={"propagationPolicy": "Background"})


@pytest.fixture
def gpu_nodes(api: Any) -> Iterator[Callable[..., dict[str, Any]]]:
    """Factory ``gpu_nodes(name, **create_gpu_node kwargs) -> Node dict``; nodes go after the test."""
    created: list[str] = []

    def make(name: str, **kwargs: Any) -> dict[str, Any]:
        node = create_gpu_node(api, name, **kwargs)
        created.append(name)
        return node

    try:
        yield make
    finally:
        for name in created:
            delete_node(api, name)


@pytest.fixture
def fake_kubelet(api: Any, tmp_path: Path) -> Iterator[FakeKubelet]:
    """A running FakeKubelet serving no node yet: ``fake_kubelet.add_node(name)``."""
    kubelet = FakeKubelet(api, [], tmp_path / "kubelet").start()
    try:
        yield kubelet
    finally:
        kubelet.stop()


@pytest.fixture
def bound_pvc(api: Any) -> Iterator[Callable[..., str]]:
    """Factory ``bound_pvc(namespace, name, size="10Gi") -> PV name``: a PVC that is Bound at once
    (no provisioner here); its PersistentVolume is deleted after the test."""
    volumes: list[str] = []

    def make(namespace: str, name: str, **kwargs: Any) -> str:
        pv = create_bound_pvc(api, namespace, name, **kwargs)
        volumes.append(pv)
        return pv

    try:
        yield make
    finally:
        for pv in volumes:
            delete_pv(api, pv)
