"""The Mahjong injection pipeline end to end on real containers.

The operator runs in-cluster (``stratos_release``: `helm install` with the built operator image), the
programmatic teacher is a Pod + Service from the worker image, the tiny students sit on the job's
storage, and every stage is a Job whose pod is a real container of the worker image (model stages with a
fake ``nvidia.com/gpu``). Serving is ``engine: transformers`` from the worker image (the vLLM serving
image cannot be built here); the operator's own probe fills ``status.endpoint`` through the Service, and
a pod in the cluster asks the student through the ``openai`` client.

Storage is a hostPath PersistentVolume on the node, bound to the job's claim: once the chart's default
claim (``spec.storage`` unset), once a claim the job names with a subPath. Every stage pod mounts that
claim and nothing else shared (its other volumes are its own ConfigMap and emptyDirs), and what each
stage hands to the next (traces, dataset, adapter, merged weights) is found in the claim's directory.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stratos.training.tiny import TinySpec, build_tiny_model
from support.controlplane import rest, wait_for
from support.djs import condition, get_dj
from support.pipeline import pipeline_job
from support.realcluster import DEFAULT_CLAIM, POOL, RESTRICTED
from support.realnode import RealNode

UID = 65532  # the worker image's USER
RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
TEACHER = """
from stratos.local.teacher import ProgrammaticTeacher
ProgrammaticTeacher(host="0.0.0.0", port=8000, accuracy=0.25).server.serve_forever()
"""
ASK = """
import json, sys, openai
client = openai.OpenAI(base_url=sys.argv[1], api_key="unused", max_retries=5, timeout=120)
reply = client.chat.completions.create(
    model=sys.argv[2], messages=[{"role": "user", "content": "Hand: 1m 2m 3m"}], max_tokens=8
)
open("/dev/termination-log", "w").write(json.dumps({"model": reply.model, "choices": len(reply.choices)}))
"""


@pytest.fixture
def job_ns(rn_api: Any, stratos_release: str) -> Iterator[str]:
    name = f"rn-pipe-{secrets.token_hex(3)}"
    rest(rn_api, "POST", "/api/v1/namespaces", body={"metadata": {"name": name, "labels": RESTRICTED}})
    try:
        yield name
    finally:
        rest(rn_api, "DELETE", f"/api/v1/namespaces/{name}", body={"propagationPolicy": "Background"})
        wait_for(
            lambda: not _exists(rn_api, f"/api/v1/namespaces/{name}"),
            timeout=300,
            interval=2,
            what=f"namespace {name} gone",
        )


def _exists(api: Any, path: str) -> bool:
    from kubernetes.client.exceptions import ApiException

    try:
        rest(api, "GET", path)
    except ApiException as e:
        if e.status == 404:
            return False
        raise
    return True


@pytest.fixture
def hostpath_claim(realnode: RealNode, rn_api: Any) -> Iterator[Any]:
    """``make(ns, claim)``: a hostPath PersistentVolume on the node bound to claim ``ns/claim``; returns
    the volume's directory on the host (removed with its PV afterwards)."""
    made: list[tuple[str, Path]] = []

    def make(ns: str, claim: str) -> Path:
        pv = f"rn-{ns}-{claim}"
        directory = realnode.workdir / "volumes" / pv
        directory.mkdir(parents=True)
        os.chown(directory, UID, UID)
        body = {
            "metadata": {"name": pv},
            "spec": {
                "capacity": {"storage": "2Gi"},
                "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": "realnode-hostpath",
                "hostPath": {"path": str(directory), "type": "Directory"},
                "claimRef": {"namespace": ns, "name": claim},
            },
        }
        rest(rn_api, "POST", "/api/v1/persistentvolumes", body=body)
        made.append((pv, directory))
        pvc = {
            "metadata": {"name": claim},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": "realnode-hostpath",
                "volumeName": pv,
                "resources": {"requests": {"storage": "2Gi"}},
            },
        }
        rest(rn_api, "POST", f"/api/v1/namespaces/{ns}/persistentvolumeclaims", body=pvc)
        wait_for(
            lambda: (
                rest(rn_api, "GET", f"/api/v1/namespaces/{ns}/persistentvolumeclaims/{claim}")["status"].get(
                    "phase"
                )
                == "Bound"
            ),
            timeout=60,
            what=f"claim {ns}/{claim} bound",
        )
        return directory

    try:
        yield make
    finally:
        for pv, directory in made:
            rest(rn_api, "DELETE", f"/api/v1/persistentvolumes/{pv}")
            shutil.rmtree(directory, ignore_errors=True)


def put_students(root: Path) -> None:
    """The tiny students on the claim, owned by the image's user (as a data loader pod would leave them)."""
    for student in ("tiny-a", "tiny-b"):
        build_tiny_model(root / "models" / student, TinySpec(seed=1))
    for path in [root, *root.rglob("*")]:
        os.chown(path, UID, UID)


def worker_pod(name: str, image: str, args: list[str], **extra: Any) -> dict[str, Any]:
    container = {
        "name": "main",
        "image": image,
        "imagePullPolicy": "Never",
        "command": ["python", "-c", *args],
        "securityContext": RESTRICTED_CONTAINER,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
        **extra.pop("container", {}),
    }
    return {
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "automountServiceAccountToken": False,
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [container],
            "volumes": [{"name": "tmp", "emptyDir": {}}],
            **extra,
        },
    }


def serve_teacher(api: Any, ns: str, image: str) -> str:
    """The programmatic teacher as a Pod + Service from the worker image; returns its in-cluster URL."""
    pod = worker_pod(
        "teacher", image, [TEACHER], container={"ports": [{"containerPort": 8000, "name": "http"}]}
    )
    rest(api, "POST", f"/api/v1/namespaces/{ns}/pods", body=pod)
    service = {
        "metadata": {"name": "teacher"},
        "spec": {"selector": {"app": "teacher"}, "ports": [{"port": 8000, "targetPort": "http"}]},
    }
    rest(api, "POST", f"/api/v1/namespaces/{ns}/services", body=service)
    return f"http://teacher.{ns}.svc.cluster.local:8000/v1"


def mahjong_job(name: str, teacher_url: str, storage: dict[str, Any] | None) -> dict[str, Any]:
    job = pipeline_job(
        name,
        POOL,
        teacher_url,
        serving={
            "enabled": True,
            "engine": "transformers",
            "resources": {"requests": {"cpu": "100m", "memory": "512Mi"}},
        },
    )
    if storage is None:
        del job["spec"]["storage"]
    else:
        job["spec"]["storage"] = storage
    return job


def run_to_serving(api: Any, ns: str, name: str, timeout: float = 1500) -> dict[str, Any]:
    def serving() -> dict[str, Any] | None:
        dj = get_dj(api, ns, name)
        status = dj.get("status") or {}
        if status.get("phase") == "Failed":
            raise AssertionError(f"the job failed: {json.dumps(status.get('conditions'), indent=1)}")
        endpoint = status.get("endpoint") or {}
        return dj if endpoint.get("ready") else None

    result: dict[str, Any] = wait_for(serving, timeout=timeout, interval=5, what=f"{ns}/{name} serving")
    return result


def ask_through_openai(api: Any, ns: str, image: str, endpoint: dict[str, Any]) -> dict[str, Any]:
    pod = worker_pod("ask", image, [ASK, endpoint["url"], endpoint["model"]], restartPolicy="Never")
    rest(api, "POST", f"/api/v1/namespaces/{ns}/pods", body=pod)

    def done() -> dict[str, Any] | None:
        p = rest(api, "GET", f"/api/v1/namespaces/{ns}/pods/ask")
        return p if p["status"].get("phase") in ("Succeeded", "Failed") else None

    finished: dict[str, Any] = wait_for(done, timeout=300, interval=2, what="the openai client pod")
    state = finished["status"]["containerStatuses"][0]["state"]["terminated"]
    assert finished["status"]["phase"] == "Succeeded", state.get("message")
    result: dict[str, Any] = json.loads(state["message"].strip().splitlines()[-1])
    return result


def check_pipeline(api: Any, ns: str, dj: dict[str, Any], node: str, claim: str, root: Path) -> None:
    status = dj["status"]
    for ctype in (
        "ServerSelected",
        "TeacherSelected",
        "StudentSelected",
        "DataReady",
        "Trained",
        "Evaluated",
    ):
        assert condition(dj, ctype).get("status") == "True", condition(dj, ctype)
    assert status["server"]["node"] == node and status["teacher"]["selected"] == "prog"
    assert status["student"]["selected"] in ("tiny-a", "tiny-b")

    jobs = rest(api, "GET", f"/apis/batch/v1/namespaces/{ns}/jobs")["items"]
    stages = sorted(j["metadata"]["labels"]["stratos.io/stage"] for j in jobs)
    assert stages == ["evaluate", "student-probe", "student-probe", "synthesize", "teacher-eval", "train"]
    pods = rest(api, "GET", f"/api/v1/namespaces/{ns}/pods")["items"]
    stage_pods = [p for p in pods if "stratos.io/stage" in p["metadata"].get("labels", {})]
    for pod in stage_pods:
        stage = pod["metadata"]["labels"]["stratos.io/stage"]
        spec = pod["spec"]
        # A real container that ran on the node and exited 0.
        if stage != "serve":
            assert pod["status"]["phase"] == "Succeeded", (stage, pod["status"])
            assert pod["status"]["containerStatuses"][0]["imageID"]
        assert spec["nodeName"] == node
        # The design's GPU stages (probes, training, evaluation, serving on a GPU engine) ask for one.
        limits = spec["containers"][0]["resources"].get("limits", {})
        wants_gpu = stage in ("student-probe", "train", "evaluate")
        assert ("nvidia.com/gpu" in limits) == wants_gpu, (stage, limits)
        # Nothing shared but the declared claim: every other volume is the pod's own.
        shared = [v for v in spec["volumes"] if not ({"configMap", "emptyDir", "projected"} & v.keys())]
        assert [v["persistentVolumeClaim"]["claimName"] for v in shared] == [claim], (stage, spec["volumes"])

    # What the stages handed over is on the claim: traces, the dataset, the adapter and merged weights.
    files = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}
    assert any("traces" in f for f in files), sorted(files)[:40]
    adapter = status["training"]["adapterUri"].removeprefix("/var/lib/stratos/")
    assert (root / adapter / "adapter_config.json").is_file(), sorted(files)[:40]
    assert status["data"]["samples"] == 32


def _run(
    rn_api: Any,
    node_images: dict[str, Any],
    gpu_node: str,
    ns: str,
    claim: str,
    root: Path,
    storage: dict[str, Any] | None,
) -> None:
    worker = node_images["worker"].ref
    put_students(root)
    url = serve_teacher(rn_api, ns, worker)
    rest(
        rn_api,
        "POST",
        f"/apis/stratos.io/v1alpha1/namespaces/{ns}/distillationjobs",
        body=mahjong_job("mj", url, storage),
    )
    dj = run_to_serving(rn_api, ns, "mj")
    check_pipeline(rn_api, ns, dj, gpu_node, claim, root)
    endpoint = dj["status"]["endpoint"]
    assert endpoint["url"].startswith("http://") and ".svc:8000/v1" in endpoint["url"]
    answer = ask_through_openai(rn_api, ns, worker, endpoint)
    assert answer["choices"] == 1


def test_pipeline_on_the_charts_default_claim(
    rn_api: Any, node_images: dict[str, Any], gpu_node: str, job_ns: str, hostpath_claim: Any
) -> None:
    root = hostpath_claim(job_ns, DEFAULT_CLAIM)
    _run(rn_api, node_images, gpu_node, job_ns, DEFAULT_CLAIM, root, storage=None)


def test_pipeline_on_a_named_claim_with_a_sub_path(
    rn_api: Any, node_images: dict[str, Any], gpu_node: str, job_ns: str, hostpath_claim: Any
) -> None:
    volume = hostpath_claim(job_ns, "explicit-data")
    root = volume / "mj-run"
    root.mkdir()
    storage = {"pvc": {"claimName": "explicit-data", "subPath": "mj-run"}}
    _run(rn_api, node_images, gpu_node, job_ns, "explicit-data", root, storage=storage)
    # Nothing outside the sub-path: the job's files all live under it.
    assert {p.name for p in volume.iterdir()} == {"mj-run"}
