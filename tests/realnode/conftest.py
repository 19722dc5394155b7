"""The real-node tier: a test control plane plus one real kubelet node (support.realnode).

Every test here is marked ``realnode`` (and ``controlplane``). The node is session-scoped and built once:
binaries from tests/controlplane/build.sh, images from support.images (cached). When the machine cannot
run a node at all (not root, no cgroup v1, containerd/runc/podman not installed) the tier fails with the
list of what is missing, unless STRATOS_SKIP_REALNODE=1 says to skip it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support import images
from support.controlplane import ControlPlane, ControlPlaneError, resolve_bin_dir, rest, wait_for
from support.realcluster import (
    CHART,
    DEFAULT_CLAIM,
    POOL,
    RELEASE,
    RELEASE_NAMESPACE,
    RESTRICTED,
    operator_ready,
)
from support.realnode import NODE_IP, RealNode, RealNodeUnavailable, missing_prerequisites

HERE = Path(__file__).resolve().parent
SETUP_TIMES: dict[str, float] = {}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.realnode)
            item.add_marker(pytest.mark.controlplane)
            # The suite's 15-minute bound covers the test body only: the first test's set-up builds the
            # images (a source change rebuilds the worker's top layer, ~10 minutes) and imports them into
            # containerd, which on a loaded machine took longer than 15 minutes in all. Each of those
            # steps is bounded by its own subprocess timeout (podman, ctr) instead.
            item.add_marker(pytest.mark.timeout(900, func_only=True))


def _timed(name: str, fn: Any, *args: Any) -> Any:
    start = time.monotonic()
    try:
        return fn(*args)
    finally:
        SETUP_TIMES[name] = time.monotonic() - start


@pytest.fixture(scope="session")
def realnode_bin(request: pytest.FixtureRequest) -> Path:
    capman = request.config.pluginmanager.getplugin("capturemanager")
    try:
        with capman.global_and_fixture_disabled():
            bin_dir = resolve_bin_dir()
    except ControlPlaneError as e:
        pytest.fail(str(e), pytrace=False)
    missing = missing_prerequisites(bin_dir)
    if missing:
        message = "this machine cannot run a real node; missing: " + ", ".join(missing)
        if os.environ.get("STRATOS_SKIP_REALNODE") == "1":
            pytest.skip(message)
        pytest.fail(message + " (STRATOS_SKIP_REALNODE=1 skips the tier)", pytrace=False)
    return bin_dir


@pytest.fixture(scope="session")
def node_images(realnode_bin: Path) -> dict[str, images.Image]:
    """The images the node runs, built (or found in the cache) before the node starts."""
    return {
        "pause": _timed("image pause", images.pause_image, realnode_bin),
        "base": _timed("image base", images.base_image_archive),
        "operator": _timed("image operator", images.stratos_image, "operator"),
        "worker": _timed("image worker", images.stratos_image, "worker"),
    }


@pytest.fixture(scope="session")
def runtime(realnode_bin: Path, node_images: dict[str, images.Image]) -> Iterator[RealNode]:
    """The node's container runtime (containerd, runc, CNI) with the images imported; no kubelet yet."""
    node = RealNode(realnode_bin)
    started = time.monotonic()
    try:
        node.prepare()
    except RealNodeUnavailable as e:
        pytest.fail(str(e), pytrace=False)
    try:
        node.start_runtime(node_images["pause"].ref, [i.archive for i in node_images.values()])
        SETUP_TIMES["containerd + image import"] = time.monotonic() - started
        yield node
    finally:
        node.stop()
    assert not node.leftovers, f"the real node left the machine changed: {node.leftovers}"


@pytest.fixture(scope="session")
def realnode(runtime: RealNode, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealNode]:
    """The runtime joined to a control plane bound to the node's address (kubelet, GPUs, proxy, DNS)."""
    started = time.monotonic()
    cp = ControlPlane(
        workdir=tmp_path_factory.mktemp("rn-controlplane"),
        bin_dir=runtime.bin_dir,
        bind_address=NODE_IP,
        node_lifecycle=True,
    )
    try:
        cp.start()
        runtime.join(cp)
        SETUP_TIMES["control plane + kubelet, GPUs, kube-proxy, DNS"] = time.monotonic() - started
        yield runtime
    finally:
        runtime.stop()
        cp.stop()


@pytest.fixture(scope="session")
def rn_api(realnode: RealNode) -> Iterator[Any]:
    assert realnode.cp is not None
    client = realnode.cp.api_client()
    try:
        yield client
    finally:
        client.close()


def _repo_tag(ref: str) -> tuple[str, str]:
    repository, tag = ref.rsplit(":", 1)
    return repository, tag


@pytest.fixture(scope="session")
def stratos_release(realnode: RealNode, rn_api: Any, node_images: dict[str, images.Image]) -> Iterator[str]:
    """The chart installed with `helm install` (CRD included) in a namespace that enforces the restricted
    Pod Security Standard, the operator running in-cluster from the built image under the chart's
    ServiceAccount. The worker image runs the stages; serving (engine: transformers) uses it too (the
    vLLM serving image cannot be built here). Returns the release namespace."""
    cp = realnode.cp
    assert cp is not None
    started = time.monotonic()
    rest(
        rn_api,
        "POST",
        "/api/v1/namespaces",
        body={"metadata": {"name": RELEASE_NAMESPACE, "labels": RESTRICTED}},
    )
    operator_repo, operator_tag = _repo_tag(node_images["operator"].ref)
    worker_repo, worker_tag = _repo_tag(node_images["worker"].ref)
    values = {
        "image.repository": operator_repo,
        "image.tag": operator_tag,
        "image.pullPolicy": "Never",
        "workerImage.repository": worker_repo,
        "workerImage.tag": worker_tag,
        "servingImage.repository": worker_repo,
        "servingImage.tag": worker_tag,
        "stageImagePullPolicy": "Never",
        "storage.defaultClaim": DEFAULT_CLAIM,
        # The model stages request 2 CPUs: on a 2-core node they fit only beside an operator that
        # requests none (a real GPU node has cores to spare).
        "resources.requests.cpu": "0",
    }
    args = [arg for key, value in values.items() for arg in ("--set-string", f"{key}={value}")]
    try:
        cp.helm("install", RELEASE, str(CHART), "--namespace", RELEASE_NAMESPACE, *args)
        wait_for(
            lambda: operator_ready(rn_api),
            timeout=300,
            interval=2,
            what=f"the operator Deployment {RELEASE_NAMESPACE}/{RELEASE} available",
        )
        SETUP_TIMES["helm install + operator pod Ready"] = time.monotonic() - started
        yield RELEASE_NAMESPACE
    finally:
        cp.helm(
            "uninstall", RELEASE, "--namespace", RELEASE_NAMESPACE, "--wait", "--timeout=120s", check=False
        )
        rest(
            rn_api,
            "DELETE",
            f"/api/v1/namespaces/{RELEASE_NAMESPACE}",
            body={"propagationPolicy": "Background"},
        )


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if SETUP_TIMES:
        terminalreporter.write_sep("-", "real node set-up (seconds)")
        for name, seconds in SETUP_TIMES.items():
            terminalreporter.write_line(f"{name}: {seconds:.1f}")


@pytest.fixture(scope="session")
def gpu_node(realnode: RealNode, rn_api: Any) -> str:
    """The real node, labelled and annotated like a priced GPU node (product, hourly cost, latency)."""
    patch = {
        "metadata": {
            "labels": {"stratos.test/pool": POOL, "nvidia.com/gpu.product": "NVIDIA-L4"},
            "annotations": {"stratos.io/hourly-cost": "0.5", "stratos.io/latency-ms": "10"},
        }
    }
    rest(rn_api, "PATCH", f"/api/v1/nodes/{realnode.name}", body=patch)
    return realnode.name
