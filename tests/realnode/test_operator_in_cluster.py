"""The operator as a cluster admin runs it: `helm install` of the chart with the image built from
images/operator/Dockerfile, the operator a real container on the node under the chart's ServiceAccount,
reaching the API server through the `kubernetes` Service (kube-proxy to the node's address), and
reconciling a DistillationJob: its node chosen among the cluster's real nodes, status written, the first
stage's Job created.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import pytest

from support.controlplane import rest, wait_for
from support.djs import DJ_PATH, condition, get_dj
from support.pipeline import pipeline_job
from support.realcluster import POOL, RELEASE, RESTRICTED
from support.realnode import RealNode


@pytest.fixture
def job_ns(rn_api: Any, stratos_release: str) -> Iterator[str]:
    name = f"rn-job-{secrets.token_hex(3)}"
    rest(rn_api, "POST", "/api/v1/namespaces", body={"metadata": {"name": name, "labels": RESTRICTED}})
    try:
        yield name
    finally:
        rest(rn_api, "DELETE", f"/api/v1/namespaces/{name}", body={"propagationPolicy": "Background"})


def operator_pod(api: Any, namespace: str) -> dict[str, Any]:
    pods = rest(api, "GET", f"/api/v1/namespaces/{namespace}/pods")["items"]
    (pod,) = [p for p in pods if p["metadata"]["name"].startswith(f"{RELEASE}-")]
    return dict(pod)


def test_operator_runs_in_cluster_under_its_service_account(
    realnode: RealNode, rn_api: Any, stratos_release: str
) -> None:
    pod = operator_pod(rn_api, stratos_release)
    assert pod["status"]["phase"] == "Running"
    assert pod["spec"]["nodeName"] == realnode.name
    assert pod["spec"]["serviceAccountName"] == RELEASE
    (status,) = pod["status"]["containerStatuses"]
    assert status["ready"] and status["restartCount"] == 0, status
    assert status["imageID"], "a real container of the built image"
    # The restricted profile held at admission (the namespace enforces it) and runs as the image's user.
    assert pod["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True


def test_operator_in_cluster_reconciles_a_job(
    realnode: RealNode, rn_api: Any, gpu_node: str, job_ns: str
) -> None:
    name = "select-node"
    # The paper's rule picks the node before any stage runs (joint would wait for the student probes).
    job = pipeline_job(
        name,
        POOL,
        "http://teacher.invalid/v1",
        servers={"rule": "paper", "nodeSelector": {"stratos.test/pool": POOL}},
    )
    rest(rn_api, "POST", f"/apis/stratos.io/v1alpha1/namespaces/{job_ns}/distillationjobs", body=job)

    def selected() -> dict[str, Any] | None:
        dj = get_dj(rn_api, job_ns, name)
        return dj if condition(dj, "ServerSelected").get("status") == "True" else None

    dj = wait_for(selected, timeout=180, interval=2, what="the in-cluster operator to select the node")
    assert dj["status"]["server"]["node"] == gpu_node
    assert condition(dj, "ServerSelected")["observedGeneration"] == dj["metadata"]["generation"]
    # The next stage's Job exists, made by the operator's ServiceAccount (it alone may create Jobs here).
    wait_for(
        lambda: rest(rn_api, "GET", f"/apis/batch/v1/namespaces/{job_ns}/jobs")["items"],
        timeout=120,
        interval=2,
        what="the teacher-evaluation Job",
    )
    rest(rn_api, "DELETE", DJ_PATH.format(ns=job_ns, name=name))
