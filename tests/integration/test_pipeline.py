"""The whole chain on the real control plane: the operator under the chart's identity runs every stage as
a Job, a test kubelet runs the stage pods' own commands as local processes, and the status the operator
writes records every decision.

Teacher: the built-in programmatic Mahjong teacher on localhost. Students: tiny random-initialised models
on the job's PersistentVolumeClaim. Serving starts off and is switched on once the student passed.
"""

from __future__ import annotations

import json
import os
import re
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from openai import OpenAI

from stratos.local.teacher import ProgrammaticTeacher
from support.controlplane import ControlPlane, rest, wait_for
from support.djs import child
from support.djs import service as service_of
from support.health import StatusRecorder, collapse
from support.kubelet import FakeKubelet
from support.monitoring import referenced_metrics, rule_expressions, usage
from support.operator import OperatorProcess
from support.pipeline import CLAIM, pipeline_job, prepare

CHART = Path(__file__).resolve().parents[2] / "charts" / "stratos"

pytest_plugins = ["support.operator"]
pytestmark = pytest.mark.slow


def pinned_to(pod: dict[str, Any]) -> str:
    """The node a pod spec requires by node affinity on metadata.name (how the operator pins)."""
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    (term,) = terms
    (field,) = term["matchFields"]
    assert (field["key"], field["operator"]) == ("metadata.name", "In")
    (node,) = field["values"]
    return str(node)


def test_the_operator_runs_every_stage_and_records_every_decision(
    operator: OperatorProcess,
    control_plane: ControlPlane,
    namespace: str,
    gpu_nodes: Callable[..., dict[str, Any]],
    fake_kubelet: FakeKubelet,
    bound_pvc: Callable[..., str],
    api: Any,
) -> None:
    node = prepare(namespace, gpu_nodes, fake_kubelet, bound_pvc)

    # Every version of the job the operator writes, for the Argo CD health check (support.health).
    exported: set[str] = set()  # every metric name the operator's /metrics showed during the run
    with StatusRecorder(api, namespace, "chain") as recorder:
        with ProgrammaticTeacher(accuracy=0.2) as teacher:
            control_plane.kubectl(
                "apply",
                "-n",
                namespace,
                "-f",
                "-",
                input=yaml.safe_dump(pipeline_job("chain", namespace, teacher.base_url)),
            )

            def finished() -> dict[str, Any] | None:
                exported.update(metric_names(operator.metrics()))
                dj = json.loads(
                    control_plane.kubectl("get", "dj", "chain", "-n", namespace, "-o", "json").stdout
                )
                phase = dj.get("status", {}).get("phase")
                return dj if phase in ("Succeeded", "Failed") else None

            dj = wait_for(finished, timeout=600, interval=2, what="the pipeline to finish")
        status = dj["status"]
        assert status["phase"] == "Succeeded", (
            status.get("message"),
            fake_kubelet.errors,
            operator.log_tail(),
        )
        check_health_while_training(recorder, dj)
        run_the_chain_checks(
            control_plane,
            namespace,
            dj,
            fake_kubelet,
            api,
            node,
            recorder,
            lambda: exported.update(metric_names(operator.metrics())),
        )
    # The chart's dashboard and alerts read only series this run's operator really served (the
    # budget's only with a budget, which this job has not).
    rule = control_plane.helm(
        "template", "stratos", str(CHART), "--set", "prometheusRule.enabled=true",
        "--show-only", "templates/prometheusrule.yaml",
    ).stdout  # fmt: skip
    rules = set().union(*(usage(e).metrics for _, e in rule_expressions(yaml.safe_load(rule))))
    missing = (referenced_metrics() | rules) - exported - {"stratos_distillationjob_budget_usd"}
    assert not missing, f"{sorted(missing)} never appeared on the operator's /metrics"


def metric_names(exposition: str) -> set[str]:
    """Names of the samples, and of the families declared (a labelled counter with no sample yet)."""
    samples = {
        re.split(r"[{ ]", line, maxsplit=1)[0] for line in exposition.splitlines() if line[:1].isalpha()
    }
    return samples | set(re.findall(r"^# HELP (\S+) ", exposition, re.M))


def check_health_while_training(recorder: StatusRecorder, dj: dict[str, Any]) -> None:
    """Up to Succeeded: Progressing (Ready Unknown, never False) on every version, then Healthy."""
    version = dj["metadata"]["resourceVersion"]
    wait_for(
        lambda: any(o["metadata"]["resourceVersion"] == version for o in recorder.snapshot()),
        what="the recorder to see the finished job",
    )
    objects = recorder.snapshot()
    objects = objects[
        : 1 + next(i for i, o in enumerate(objects) if o["metadata"]["resourceVersion"] == version)
    ]
    assert len(objects) >= 5, f"only {len(objects)} versions recorded ({recorder.errors})"
    healths = [h["status"] for h in recorder.healths()[: len(objects)]]
    assert collapse(healths) == ["Progressing", "Healthy"], list(zip(healths, objects, strict=True))
    for obj in objects:
        if obj.get("status", {}).get("phase") in ("Succeeded", "Serving"):
            break  # finished (the write that empties the event outbox can follow this one)
        ready = next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == "Ready"), None)
        assert ready is None or ready["status"] == "Unknown", ready  # in progress: Unknown, not False


def run_the_chain_checks(
    control_plane: ControlPlane,
    namespace: str,
    dj: dict[str, Any],
    fake_kubelet: FakeKubelet,
    api: Any,
    node: str,
    recorder: StatusRecorder,
    scrape: Callable[[], None],
) -> None:
    status = dj["status"]
    conditions = {c["type"]: c for c in status["conditions"]}
    for ctype in (
        "ServerSelected",
        "TeacherSelected",
        "StudentSelected",
        "DataReady",
        "Trained",
        "Evaluated",
        "Ready",
    ):
        assert conditions[ctype]["status"] == "True", conditions[ctype]
    assert status["server"]["node"] == node
    assert status["teacher"]["selected"] == "prog"
    assert status["strategy"] == {
        "selected": "injection",
        "algorithm": "sft-lora",
        "reason": status["strategy"]["reason"],
    }
    assert status["student"]["selected"] in ("tiny-a", "tiny-b")
    # servers.rule joint (the default): node and student were chosen together after the probes, with
    # every student's verdict, the chosen pair's expected cost by term, runners-up and the fallback.
    student = status["student"]
    assert student["rule"] == "joint"
    pair = student["pair"]
    assert (pair["node"], pair["student"]) == (node, student["selected"])
    assert pair["cost"]["totalUsd"] > 0 and pair["costBreakdown"].startswith("$")
    assert all(c["probeNode"] == node and c["kept"] for c in student["candidates"])
    other = next(n for n in ("tiny-a", "tiny-b") if n != student["selected"])
    assert [(r["node"], r["student"]) for r in pair["runnersUp"]] == [(node, other)]
    assert student["ranking"] == [student["selected"], other] and other in pair["fallback"]
    assert "not dominated" in status["server"]["reason"] and status["server"]["gridSize"] == 1
    data = status["data"]
    assert data["samples"] == 32 and data["real"] + data["synthetic"] == 32
    assert status["training"]["steps"] > 0 and status["training"]["adapterUri"].endswith("/adapter")
    assert 0.0 <= status["evaluation"]["accuracy"] <= 1.0 and status["evaluation"]["samples"] == 6

    # Every stage ran as an owned Job on the chosen node (CPU stages wherever the scheduler put them).
    jobs = rest(api, "GET", f"/apis/batch/v1/namespaces/{namespace}/jobs")["items"]
    stages = sorted(j["metadata"]["labels"]["stratos.io/stage"] for j in jobs)
    assert stages == ["evaluate", "student-probe", "student-probe", "synthesize", "teacher-eval", "train"]
    assert all(j["metadata"]["ownerReferences"][0]["uid"] == dj["metadata"]["uid"] for j in jobs)
    train = next(j for j in jobs if j["metadata"]["labels"]["stratos.io/stage"] == "train")
    assert pinned_to(train["spec"]["template"]["spec"]) == node
    # The adapter the status names is really there, written by the train pod on the shared volume.
    storage = fake_kubelet.claim_dir(namespace, CLAIM)
    adapter = storage / status["training"]["adapterUri"].removeprefix("/var/lib/stratos/")
    assert (adapter / "adapter_config.json").exists()

    serve_then_clean_up(control_plane, api, namespace, dj, fake_kubelet, node, recorder, scrape)


def _healthy(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as response:
        return bool(response.status == 200)


def patch_serving(cp: ControlPlane, namespace: str, serving: dict[str, Any]) -> None:
    body = json.dumps({"spec": {"serving": serving}})
    cp.kubectl("patch", "dj", "chain", "-n", namespace, "--type", "merge", "-p", body)


def latest_health(recorder: StatusRecorder, health: str, phase: str) -> dict[str, str] | None:
    objects = recorder.snapshot()
    if not objects or objects[-1].get("status", {}).get("phase") != phase:
        return None
    found = recorder.latest_health()
    return found if found is not None and found["status"] == health else None


def serve_then_clean_up(
    cp: ControlPlane,
    api: Any,
    namespace: str,
    dj: dict[str, Any],
    kubelet: FakeKubelet,
    node: str,
    recorder: StatusRecorder,
    scrape: Callable[[], None],
) -> None:
    """Serving is switched on after training: the trained student is deployed without retraining,
    answers through the openai client, follows spec.serving, and everything goes with the job."""
    kubelet.extra_env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", HF_HUB_OFFLINE="1"
    )
    trained_steps = dj["status"]["training"]["steps"]
    mark = len(recorder.snapshot())
    patch_serving(cp, namespace, {"enabled": True})
    cp.kubectl("wait", "--for=condition=Ready", "dj/chain", "-n", namespace, "--timeout=300s")
    # Argo CD health: the new generation is Progressing until the operator acts on it, then while it
    # deploys; Healthy once it serves.
    wait_for(lambda: latest_health(recorder, "Healthy", "Serving"), what="a Healthy serving version")
    healths = recorder.healths(mark)
    assert collapse(h["status"] for h in healths) == ["Progressing", "Healthy"], healths
    assert "Waiting for the operator to act on generation 2" in [h["message"] for h in healths]
    scrape()  # the endpoint's series exist now
    status = json.loads(cp.kubectl("get", "dj", "chain", "-n", namespace, "-o", "json").stdout)["status"]
    assert status["phase"] == "Serving" and status["training"]["steps"] == trained_steps
    endpoint = status["endpoint"]
    serve, svc = child(api, namespace, "chain", "serve"), service_of(api, namespace, "chain")
    assert endpoint["url"] == f"http://{svc}.{namespace}.svc:8000/v1" and endpoint["ready"] is True

    deployment = rest(api, "GET", f"/apis/apps/v1/namespaces/{namespace}/deployments/{serve}")
    assert deployment["metadata"]["ownerReferences"][0]["uid"] == dj["metadata"]["uid"]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["containers"][0]["command"] == ["transformers", "serve"]
    assert pinned_to(pod) == node
    service = rest(api, "GET", f"/api/v1/namespaces/{namespace}/services/{svc}")
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    stages = [
        j["metadata"]["labels"]["stratos.io/stage"]
        for j in rest(api, "GET", f"/apis/batch/v1/namespaces/{namespace}/jobs")["items"]
    ]
    assert stages.count("train") == 1  # deployed, not retrained

    # The pod the test kubelet runs is a real `transformers serve` of the merged student. (The test kubelet
    # marks pods Ready as they start, without probes: wait for the server itself.)
    wait_for(
        lambda: _healthy("http://127.0.0.1:8000/health"), timeout=120, what="transformers serve to listen"
    )
    client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="EMPTY", timeout=120)
    reply = client.chat.completions.create(
        model=endpoint["model"], messages=[{"role": "user", "content": "Hand: 🀇🀈🀉"}], max_tokens=8
    )
    assert reply.choices[0].message.content and reply.usage is not None and reply.usage.completion_tokens > 0

    # The endpoint goes down (its process killed until the kubelet's back-off keeps it down long enough
    # for the Deployment to show it): Degraded, naming why; back up, Healthy again.
    mark = len(recorder.snapshot())

    def endpoint_down() -> dict[str, str] | None:
        for run in kubelet.runs():
            alive = run.process is not None and run.process.poll() is None
            if run.namespace == namespace and run.name.startswith("chain-serve-") and alive:
                assert run.process is not None
                run.process.kill()
        return latest_health(recorder, "Degraded", "Serving")

    down = wait_for(
        endpoint_down, timeout=120, interval=0.2, what="the health check to see the endpoint down"
    )
    assert down["message"].startswith("EndpointNotReady"), down
    wait_for(lambda: latest_health(recorder, "Healthy", "Serving"), timeout=120, what="the endpoint back up")
    assert collapse(h["status"] for h in recorder.healths(mark))[-2:] == ["Degraded", "Healthy"]

    patch_serving(cp, namespace, {"replicas": 2})
    wait_for(
        lambda: (
            rest(api, "GET", f"/apis/apps/v1/namespaces/{namespace}/deployments/{serve}")["spec"]["replicas"]
            == 2
        ),
        timeout=60,
        what="the Deployment to follow spec.serving.replicas",
    )
    patch_serving(cp, namespace, {"enabled": False})
    wait_for(
        lambda: (
            not rest(api, "GET", f"/apis/apps/v1/namespaces/{namespace}/deployments")["items"]
            and not rest(api, "GET", f"/api/v1/namespaces/{namespace}/services")["items"]
        ),
        timeout=60,
        what="serving to be removed",
    )
    status = json.loads(cp.kubectl("get", "dj", "chain", "-n", namespace, "-o", "json").stdout)["status"]
    assert status["phase"] == "Succeeded" and "endpoint" not in status
    wait_for(lambda: latest_health(recorder, "Healthy", "Succeeded"), what="Healthy once serving is off")
    recorder.agree()  # Flux's healthCheckExprs say the same on every version

    # Deleting the job removes everything it created (the controller manager's garbage collector).
    cp.kubectl("delete", "dj", "chain", "-n", namespace, "--wait=true", "--timeout=60s")
    wait_for(
        lambda: (
            not any(
                rest(api, "GET", path)["items"]
                for path in (
                    f"/apis/batch/v1/namespaces/{namespace}/jobs",
                    f"/api/v1/namespaces/{namespace}/configmaps?labelSelector=stratos.io%2Fjob",
                )
            )
        ),
        timeout=90,
        what="the garbage collector to remove the job's children",
    )
