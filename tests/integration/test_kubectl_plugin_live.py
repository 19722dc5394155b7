"""``kubectl stratos`` through the real kubectl plugin mechanism, on the real control plane (#16, 6).

The operator runs a small job until its teacher has been evaluated (the test kubelet plays the
teacher-eval pod with a scripted result). kubectl finds ``kubectl-stratos`` on PATH (here a wrapper
that runs ``python -m stratos.kubectl``, exactly what the package's console script runs) and the test
reads what ``get``, ``describe``, ``logs`` and ``plan`` print.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.controlplane import ControlPlane, wait_for
from support.djs import apply, condition, get_dj
from support.kubelet import FakeKubelet, Outcome
from support.operator import OperatorProcess

pytest_plugins = ["support.operator"]

REPO_ROOT = Path(__file__).resolve().parents[2]
RESULT = {
    "ok": True,
    "accuracy": 0.5,
    "samples": 6,
    "correct": 3,
    "promptTokens": 60,
    "completionTokens": 60,
    "costUSD": 0.0,
}


def dj(name: str, pool: str) -> dict[str, Any]:
    return {
        "apiVersion": "stratos.io/v1alpha1",
        "kind": "DistillationJob",
        "metadata": {"name": name},
        "spec": {
            "task": {"builtin": "mahjong", "sampleSize": 6, "trainSize": 24, "testSize": 6},
            # The paper's rule decides the node before the teacher, which this test stops after.
            "servers": {"rule": "paper", "nodeSelector": {"stratos.test/pool": pool}},
            "teachers": [{"name": "t1", "endpoint": {"baseURL": "http://127.0.0.1:9/v1", "model": "m"}}],
            "students": [{"name": "tiny", "model": {"uri": "/models/tiny", "parameters": 2e5}}],
            "serving": {"enabled": False},
        },
    }


@pytest.fixture
def kubectl_stratos(
    control_plane: ControlPlane, tmp_path: Path
) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``kubectl stratos ARGS`` with the plugin on PATH, as the admin."""
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    wrapper = plugins / "kubectl-stratos"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m stratos.kubectl "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    env = {
        **os.environ,
        "KUBECONFIG": str(control_plane.kubeconfig),
        "PATH": f"{plugins}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "operator"), os.environ.get("PYTHONPATH", "")]),
        "COLUMNS": "200",
    }

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(control_plane.bin_dir / "kubectl"), "stratos", *args],
            env=env,
            text=True,
            capture_output=True,
            timeout=120,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"kubectl stratos {' '.join(args)} exited {result.returncode}:\n{result.stderr}"
            )
        return result

    return run


def test_get_describe_logs_and_plan_against_the_live_cluster(
    operator: OperatorProcess,
    control_plane: ControlPlane,
    namespace: str,
    gpu_nodes: Callable[..., dict[str, Any]],
    fake_kubelet: FakeKubelet,
    kubectl_stratos: Callable[..., subprocess.CompletedProcess[str]],
    api: Any,
    tmp_path: Path,
) -> None:
    annotations = {"stratos.io/latency-ms": "10"}
    for name, product, cost in (("cheap", "NVIDIA-L4", "0.5"), ("dear", "NVIDIA-H100-80GB-HBM3", "9.0")):
        node = f"{namespace}-{name}"
        gpu_nodes(
            node,
            labels={"stratos.test/pool": namespace, "nvidia.com/gpu.product": product},
            annotations={**annotations, "stratos.io/hourly-cost": cost},
        )
        fake_kubelet.add_node(node)
    # The teacher is evaluated (a scripted result); later stages stop at once: nothing runs for real.
    fake_kubelet.intercept = lambda pod: (
        Outcome(0, "Completed", json.dumps(RESULT))
        if (pod["metadata"].get("labels") or {}).get("stratos.io/stage") == "teacher-eval"
        else Outcome(1, "Error", "stopped by the test")
    )
    manifest = dj("plug", namespace)
    apply(control_plane, namespace, manifest)
    wait_for(
        lambda: condition(get_dj(api, namespace, "plug"), "TeacherSelected").get("status") == "True",
        timeout=120,
        what="the teacher decision",
    )
    status = get_dj(api, namespace, "plug")["status"]
    chosen = status["server"]["node"]

    # get: the table, then one job's decisions as `stratos run` prints them.
    table = kubectl_stratos("get", "-n", namespace).stdout.splitlines()
    assert table[0].split() == [
        "NAME",
        "PHASE",
        "STAGE",
        "NODE",
        "TEACHER",
        "STUDENT",
        "ACCURACY",
        "ENDPOINT",
    ]
    row = table[1].split()
    assert row[0] == "plug" and row[3] == chosen and row[4] == "t1"
    one = kubectl_stratos("get", "plug", "-n", namespace).stdout
    assert f"Server: {chosen}" in one and "Teacher: t1" in one
    assert "runner-up" in one and f"{namespace}-dear" in one  # the node that lost, with its reason
    as_json = json.loads(kubectl_stratos("get", "plug", "-n", namespace, "-o", "json").stdout)
    assert as_json["server"] == status["server"]

    # describe: the spec in brief, the decisions and the Events the operator posted.
    described = kubectl_stratos("describe", "plug", "-n", namespace).stdout
    assert "Namespace: " + namespace in described and "Teachers:  t1" in described
    assert "ServerSelected" in described and "Events:" in described
    assert "Normal  NodeSelected" in described

    # logs: the teacher-eval pod (the test kubelet serves no log endpoint, so its result is shown).
    logged = kubectl_stratos("logs", "plug", "--stage", "teacher-eval", "-n", namespace)
    assert "teacher-eval" in logged.stderr
    assert json.loads(logged.stdout.split("\n", 1)[1]) == RESULT
    missing = kubectl_stratos("logs", "plug", "--stage", "train", "-n", namespace, check=False)
    assert missing.returncode == 1 and "no pod of stage train" in missing.stderr

    # plan: server selection for a file over the live Nodes, nothing created.
    job_file = tmp_path / "job.yaml"
    job_file.write_text(yaml.safe_dump({**manifest, "metadata": {"name": "planned"}}))
    planned = json.loads(kubectl_stratos("plan", str(job_file), "-n", namespace, "-o", "json").stdout)
    assert planned["server"]["node"] == chosen
    assert planned["server"]["candidates"] == status["server"]["candidates"]
    assert control_plane.kubectl("get", "dj", "planned", "-n", namespace, check=False).returncode != 0
