"""The optional serving objects on the real API server, against the real CRDs (issue #16, item 4).

Ingress and HorizontalPodAutoscaler are built-in APIs; the HTTPRoute and PodMonitor CRDs are the
upstream ones, taken from the Go modules ``sigs.k8s.io/gateway-api`` and
``github.com/prometheus-operator/prometheus-operator`` (``go mod download``, checksums verified
against the Go checksum database). The operator's executor creates, updates and deletes them for a
real DistillationJob, so the API server's validation (and the CRDs' schemas and CEL rules) judges
every manifest, and a missing API fails the job's spec with a message naming it.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from stratos.controller.executor import KubeExecutor
from stratos.kube.config import OperatorConfig
from stratos.pipeline.context import ChildRejected
from support.controlplane import ControlPlane, rest, wait_for
from support.djs import apply, get_dj
from support.fake_openai import FakeOpenAI
from support.operator import DEFAULT_CLAIM
from support.serving import serving_plan

GATEWAY_API = (
    "sigs.k8s.io/gateway-api",
    "v1.6.3",
    "config/crd/standard/gateway.networking.k8s.io_httproutes.yaml",
)
PROMETHEUS_OPERATOR = (
    "github.com/prometheus-operator/prometheus-operator",
    "v0.85.0",
    "example/prometheus-operator-crd/monitoring.coreos.com_podmonitors.yaml",
)

# The operator's settings as the chart gives them: serving mounts the default claim (bound in every
# test namespace) like the stages do.
CONFIG = OperatorConfig(default_claim=DEFAULT_CLAIM)


def upstream_crd(module: str, version: str, path: str) -> Path:
    env = {**os.environ, "GOFLAGS": "-mod=mod", "GOTOOLCHAIN": "local"}
    result = subprocess.run(
        ["go", "mod", "download", "-json", f"{module}@{version}"],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd="/",
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"go mod download {module}@{version} failed: {result.stdout}{result.stderr}")
    return Path(json.loads(result.stdout)["Dir"]) / path


def install_crd(cp: ControlPlane, path: Path) -> str:
    name = yaml.safe_load(path.read_text())["metadata"]["name"]
    cp.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path), timeout=120)
    wait_for(
        lambda: (
            cp.kubectl(
                "wait", "--for=condition=Established", "--timeout=20s", f"crd/{name}", check=False
            ).returncode
            == 0
        ),
        timeout=90,
        what=f"CRD {name}",
    )
    return str(name)


def executor_for(
    cp: ControlPlane, api: Any, namespace: str, serving: dict[str, Any]
) -> tuple[KubeExecutor, Any]:
    manifest = {
        "apiVersion": "stratos.io/v1alpha1",
        "kind": "DistillationJob",
        "metadata": {"name": "reach"},
        "spec": {
            "teachers": [{"name": "t1", "endpoint": {"baseURL": "http://127.0.0.1:9/v1", "model": "m"}}],
            "students": [{"name": "tiny", "model": {"uri": "/models/tiny", "parameters": 2e5}}],
            "serving": serving,
        },
    }
    apply(cp, namespace, manifest)
    body = get_dj(api, namespace, "reach")
    plan = serving_plan(body, CONFIG)
    return KubeExecutor(body, CONFIG, api, {}, {}), plan


def names(api: Any, namespace: str) -> dict[str, list[str]]:
    paths = {
        "Ingress": f"/apis/networking.k8s.io/v1/namespaces/{namespace}/ingresses",
        "HorizontalPodAutoscaler": f"/apis/autoscaling/v2/namespaces/{namespace}/horizontalpodautoscalers",
        "HTTPRoute": f"/apis/gateway.networking.k8s.io/v1/namespaces/{namespace}/httproutes",
        "PodMonitor": f"/apis/monitoring.coreos.com/v1/namespaces/{namespace}/podmonitors",
    }
    found: dict[str, list[str]] = {}
    for kind, path in paths.items():
        try:
            found[kind] = [o["metadata"]["name"] for o in rest(api, "GET", path)["items"]]
        except Exception:  # the API is not installed
            found[kind] = []
    return found


def test_serving_objects_are_created_updated_and_removed_on_the_real_api_server(
    control_plane: ControlPlane, crd_installed: Path, namespace: str, api: Any
) -> None:
    full = {
        "ingress": {"host": "llm.example.com", "className": "nginx", "tlsSecretName": "llm-tls"},
        "httpRoute": {
            "parentRefs": [{"name": "public", "namespace": "gateways"}],
            "hostnames": ["llm.example.com"],
        },
        "autoscaling": {"minReplicas": 1, "maxReplicas": 3},
        "podMonitor": True,
        "apiKeySecretRef": {"name": "llm-key", "key": "token"},
    }
    executor, plan = executor_for(control_plane, api, namespace, full)
    installed: list[str] = []
    try:
        check_serving_objects(control_plane, api, namespace, executor, plan, installed)
    finally:  # the CRDs go again: other tests expect a cluster without them
        for crd in installed:
            control_plane.kubectl("delete", "--ignore-not-found", "--wait=false", f"crd/{crd}", check=False)


def check_serving_objects(
    control_plane: ControlPlane,
    api: Any,
    namespace: str,
    executor: KubeExecutor,
    plan: Any,
    installed: list[str],
) -> None:
    # Without the Prometheus Operator's CRD the PodMonitor cannot exist: the spec is refused, naming it.
    installed.append(install_crd(control_plane, upstream_crd(*GATEWAY_API)))
    with pytest.raises(ChildRejected, match=r"does not serve podmonitors\.monitoring\.coreos\.com/v1"):
        executor._sync_extras(plan.extras)
    installed.append(install_crd(control_plane, upstream_crd(*PROMETHEUS_OPERATOR)))

    executor._sync_extras(plan.extras)
    created = names(api, namespace)
    serve = plan.deployment["metadata"]["name"]  # <job>-serve-<digest of the job's uid>
    assert created == {k: [serve] for k in ("Ingress", "HorizontalPodAutoscaler", "HTTPRoute", "PodMonitor")}
    ingress = rest(api, "GET", f"/apis/networking.k8s.io/v1/namespaces/{namespace}/ingresses/{serve}")
    assert ingress["spec"]["tls"][0]["secretName"] == "llm-tls"
    assert (
        ingress["metadata"]["ownerReferences"][0]["uid"] == get_dj(api, namespace, "reach")["metadata"]["uid"]
    )
    executor._sync_extras(plan.extras)  # idempotent: nothing changes
    again = rest(api, "GET", f"/apis/networking.k8s.io/v1/namespaces/{namespace}/ingresses/{serve}")
    assert again["metadata"]["resourceVersion"] == ingress["metadata"]["resourceVersion"]

    # A changed spec: TLS dropped from the Ingress (patched, the key nulled), route and monitor removed.
    smaller = {"ingress": {"host": "llm.example.com"}, "autoscaling": {"minReplicas": 2, "maxReplicas": 3}}
    executor, plan = executor_for(control_plane, api, namespace, smaller)
    executor._sync_extras(plan.extras)
    ingress = rest(api, "GET", f"/apis/networking.k8s.io/v1/namespaces/{namespace}/ingresses/{serve}")
    assert "tls" not in ingress["spec"] and "ingressClassName" not in ingress["spec"]
    hpa = rest(api, "GET", f"/apis/autoscaling/v2/namespaces/{namespace}/horizontalpodautoscalers/{serve}")
    assert hpa["spec"]["minReplicas"] == 2
    assert names(api, namespace)["HTTPRoute"] == [] and names(api, namespace)["PodMonitor"] == []

    executor.remove_endpoint()
    assert names(api, namespace) == {
        k: [] for k in ("Ingress", "HorizontalPodAutoscaler", "HTTPRoute", "PodMonitor")
    }


def test_the_endpoint_probe_reads_the_api_key_from_the_secret_on_the_api_server(
    control_plane: ControlPlane, crd_installed: Path, namespace: str, api: Any
) -> None:
    key = "sk-serving-probe-5b7e21"
    serving = {"apiKeySecretRef": {"name": "llm-key", "key": "token"}}
    executor, _ = executor_for(control_plane, api, namespace, serving)
    with FakeOpenAI(require_key=key, model="reach-tiny") as server:
        missing = executor.probe_endpoint(server.base_url, "reach-tiny")
        assert not missing.ok and missing.error == "Secret llm-key with the serving API key does not exist"
        secret = {"metadata": {"name": "llm-key"}, "stringData": {"token": key}}
        rest(api, "POST", f"/api/v1/namespaces/{namespace}/secrets", body=secret)
        measured = executor.probe_endpoint(server.base_url, "reach-tiny")
        assert measured.ok and measured.latency_ms is not None, measured
        wrong = {"stringData": {"token": "sk-wrong-0000"}}
        rest(api, "PATCH", f"/api/v1/namespaces/{namespace}/secrets/llm-key", body=wrong)
        refused = executor.probe_endpoint(server.base_url, "reach-tiny")
        assert not refused.ok and "401" in refused.error and "sk-wrong-0000" not in refused.error
