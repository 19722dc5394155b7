"""High availability with kopf peering, on the real control plane.

The chart is installed with ``peering.enabled=true`` (its ClusterKopfPeering, the kopf.dev CRDs from
its crds/ directory and the peering RBAC) and ``replicaCount=0``; two operator processes then run
with the exact command and arguments of the chart's Deployment (the priority wrapper included), under
a real token of the chart's ServiceAccount, each with its own ``POD_ID`` as the Deployment sets it.

Only one acts: the older one has the higher priority, the younger one stays paused (kopf's peering
object lists both), so a DistillationJob is reconciled by one process and its decision Event is posted
once. Stopping the active one hands over: its record leaves the peering object, the other resumes and
serves new and existing jobs without announcing a recorded decision again. A restarted operator is the
youngest, so it waits instead of taking over.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.controlplane import ControlPlane, rest, wait_for
from support.djs import child
from support.operator import DEFAULT_CLAIM, REPO_ROOT, OperatorProcess

CHART = REPO_ROOT / "charts" / "stratos"
RELEASE = "stratos-ha"
OPERATOR_NS = "stratos-system"
PEERING_PATH = f"/apis/kopf.dev/v1/clusterkopfpeerings/{RELEASE}"
POOL_LABEL = "stratos.test/pool"


class ChartOperator(OperatorProcess):
    """The operator run with the command and arguments of the chart's Deployment container.

    ``python`` is this interpreter (its directory, which holds ``kopf``, leads PATH) and the liveness
    endpoint moves to a free local port; everything else, ``--peering`` and the priority wrapper
    included, is what the chart renders.
    """

    def __init__(self, kubeconfig: Path, workdir: Path, container: dict[str, Any], pod_id: str) -> None:
        super().__init__(kubeconfig, workdir)
        self.container = container
        self.pod_id = pod_id

    def start(self) -> ChartOperator:
        command = [sys.executable if part == "python" else part for part in self.container["command"]]
        args = [
            f"--liveness=http://127.0.0.1:{self.health_port}/healthz" if a.startswith("--liveness=") else a
            for a in self.container["args"]
        ]
        # The chart's own settings (default claim, pod defaults, images, ...); what the kubelet would
        # fill from the downward API, and the ports and interval this test needs, are set below.
        chart_env = {e["name"]: e["value"] for e in self.container.get("env") or [] if "value" in e}
        env = {
            **os.environ,
            **chart_env,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "KUBECONFIG": str(self.kubeconfig),
            "POD_ID": self.pod_id,
            "STRATOS_METRICS_PORT": str(self.metrics_port),
            "STRATOS_RECONCILE_INTERVAL": str(self.interval),
        }
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [*command, *args], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT
        )
        log.close()
        self.starts += 1
        wait_for(self._healthy, timeout=60, what=f"operator {self.pod_id} liveness (log: {self.log_path})")
        return self

    def reconciles(self) -> float:
        """How many reconciles this process has run (its own metrics)."""
        found = re.search(r"^stratos_reconcile_duration_seconds_count (\S+)$", self.metrics(), re.M)
        return float(found.group(1)) if found else 0.0

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def job_series(self) -> list[str]:
        """The per-DistillationJob lines of its metrics (stratos_distillationjob* samples)."""
        return [line for line in self.metrics().splitlines() if line.startswith("stratos_distillationjob")]

    def active(self) -> float:
        found = re.search(r"^stratos_operator_active (\S+)$", self.metrics(), re.M)
        assert found, "no stratos_operator_active"
        return float(found.group(1))


def acts_and_exports(operator: ChartOperator, job: str) -> bool:
    """It says it acts, and exports the job's series (the acting replica's metrics)."""
    return operator.active() == 1 and any(f'name="{job}"' in line for line in operator.job_series())


def stands_by_silently(operator: ChartOperator) -> None:
    """A standby says so and exports nothing about any job (no zeros that would read as facts)."""
    assert operator.active() == 0
    assert operator.job_series() == [], operator.job_series()[:5]


@pytest.fixture(scope="module")
def ha_release(control_plane: ControlPlane, crd_installed: Path) -> Iterator[dict[str, Any]]:
    """The chart installed with peering on and no pods; yields its rendered operator container."""
    control_plane.kubectl("create", "namespace", OPERATOR_NS, check=False)
    values = ["--set", "peering.enabled=true", "--set", "crds.install=false"]
    values += ["--set", f"storage.defaultClaim={DEFAULT_CLAIM}"]  # bound in every test namespace
    control_plane.helm(
        "install", RELEASE, str(CHART), "--namespace", OPERATOR_NS, *values, "--set", "replicaCount=0"
    )
    try:
        rendered = control_plane.helm(
            "template", RELEASE, str(CHART), "--namespace", OPERATOR_NS, *values,
            "--set", "replicaCount=2", "--show-only", "templates/deployment.yaml",
        ).stdout  # fmt: skip
        deployment = yaml.safe_load(rendered)
        assert deployment["spec"]["replicas"] == 2
        yield next(c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "operator")
    finally:
        control_plane.helm("uninstall", RELEASE, "--namespace", OPERATOR_NS, check=False)


def peers(api: Any) -> dict[str, dict[str, Any]]:
    """The live records in the release's ClusterKopfPeering: identity -> {priority, lifetime, lastseen}."""
    return dict(rest(api, "GET", PEERING_PATH).get("status") or {})


def dj_manifest(name: str, pool: str) -> dict[str, Any]:
    return {
        "apiVersion": "stratos.io/v1alpha1",
        "kind": "DistillationJob",
        "metadata": {"name": name},
        "spec": {
            "task": {"builtin": "mahjong", "sampleSize": 10},
            "requirements": {"minAccuracy": 0.15},
            "servers": {"nodeSelector": {POOL_LABEL: pool}, "rule": "paper"},  # node chosen at SelectServer
            "teachers": [
                {"name": "t1", "endpoint": {"baseURL": "http://teacher.invalid:8000/v1", "model": "m"}}
            ],
            "students": [{"name": "tiny", "model": {"uri": "file:///models/tiny", "parameters": 1.0e8}}],
        },
    }


def l20_node(gpu_nodes: Callable[..., dict[str, Any]], pool: str) -> None:
    gpu_nodes(
        f"{pool}-l20",
        labels={POOL_LABEL: pool, "nvidia.com/gpu.product": "NVIDIA-L20", "nvidia.com/gpu.count": "1"},
        annotations={"stratos.io/hourly-cost": "0.6", "stratos.io/latency-ms": "12"},
    )


def node_selected_events(api: Any, namespace: str, name: str) -> int:
    events = rest(api, "GET", f"/api/v1/namespaces/{namespace}/events")["items"]
    return sum(
        e.get("count") or 1
        for e in events
        if e["involvedObject"].get("name") == name and e["reason"] == "NodeSelected"
    )


def create_and_select(cp: ControlPlane, api: Any, namespace: str, name: str) -> dict[str, Any]:
    cp.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(dj_manifest(name, namespace)))
    cp.kubectl("wait", "--for=condition=ServerSelected", f"dj/{name}", "-n", namespace, "--timeout=60s")
    wait_for(lambda: node_selected_events(api, namespace, name), what=f"the NodeSelected event of {name}")
    return dict(rest(api, "GET", f"/apis/stratos.io/v1alpha1/namespaces/{namespace}/distillationjobs/{name}"))


def delete_jobs(api: Any, namespace: str) -> None:
    """Deletes the namespace's DistillationJobs while an operator still acts (it lifts the finalizer)."""
    path = f"/apis/stratos.io/v1alpha1/namespaces/{namespace}/distillationjobs"
    rest(api, "DELETE", path)
    wait_for(lambda: not rest(api, "GET", path)["items"], what="the DistillationJobs to be deleted")


def test_two_peered_operators_one_acts_and_a_stop_hands_over(
    ha_release: dict[str, Any],
    control_plane: ControlPlane,
    api: Any,
    namespace: str,
    gpu_nodes: Callable[..., dict[str, Any]],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    container = ha_release
    assert "--standalone" not in container["command"] + container["args"]
    assert f"--peering={RELEASE}" in container["args"]
    kubeconfig = control_plane.kubeconfig_for_service_account(OPERATOR_NS, RELEASE)

    def operator(pod_id: str) -> ChartOperator:
        return ChartOperator(kubeconfig, tmp_path_factory.mktemp(pod_id), container, pod_id)

    first = operator("stratos-ha-first").start()
    second: ChartOperator | None = None
    again: ChartOperator | None = None
    try:
        # Alone in the peering object, the first one resumes from the paused start kopf gives a
        # mandatory peering.
        wait_for(lambda: "stratos-ha-first" in peers(api), what="the first operator in the peering object")
        wait_for(lambda: "Resuming operations" in first.log_text(), what="the first operator to resume")

        second = operator("stratos-ha-second").start()
        both = wait_for(lambda: len(peers(api)) == 2 and peers(api), what="both operators in the peering")
        # Minus the start time in microseconds: the older one has the higher priority.
        assert 0 > both["stratos-ha-first"]["priority"] > both["stratos-ha-second"]["priority"]

        l20_node(gpu_nodes, namespace)
        created = create_and_select(control_plane, api, namespace, "before")
        assert created["status"]["server"]["node"] == f"{namespace}-l20"
        time.sleep(6 * first.interval)  # ticks enough for a second actor to show itself
        assert first.reconciles() > 0
        assert second.reconciles() == 0, second.log_tail()
        assert "Resuming operations" not in second.log_text()
        assert node_selected_events(api, namespace, "before") == 1
        # Metrics: the acting replica exports the job, the standby nothing about jobs.
        wait_for(lambda: acts_and_exports(first, "before"), what="the first operator's job metrics")
        stands_by_silently(second)

        # A graceful stop takes the first one's record out of the peering object: the second resumes.
        first.stop()
        assert first.process is not None and first.process.returncode == 0, first.log_tail()
        wait_for(lambda: list(peers(api)) == ["stratos-ha-second"], what="the first record to leave")
        wait_for(lambda: "Resuming operations" in second.log_text(), timeout=20, what="the second to resume")
        handed = create_and_select(control_plane, api, namespace, "after")
        assert handed["status"]["server"]["node"] == f"{namespace}-l20"
        assert second.reconciles() > 0
        # The replica that took over exports both jobs (the one decided before the hand-over too).
        wait_for(
            lambda: acts_and_exports(second, "before") and acts_and_exports(second, "after"),
            what="the second operator's job metrics",
        )
        jobs = rest(api, "GET", f"/apis/batch/v1/namespaces/{namespace}/jobs")["items"]
        assert sorted(j["metadata"]["name"] for j in jobs) == sorted(
            child(api, namespace, dj, "teacher-eval", "t1") for dj in ("after", "before")
        )

        # The first one, started again, is now the youngest: it waits instead of taking over.
        again = operator("stratos-ha-again").start()
        records = wait_for(
            lambda: len(peers(api)) == 2 and peers(api), what="the restarted operator's record"
        )
        assert records["stratos-ha-second"]["priority"] > records["stratos-ha-again"]["priority"]
        time.sleep(6 * again.interval)
        assert again.reconciles() == 0, again.log_tail()
        stands_by_silently(again)
        for name in ("before", "after"):
            assert node_selected_events(api, namespace, name) == 1, name
        delete_jobs(api, namespace)
        assert again.reconciles() == 0
    finally:
        for proc in (again, second, first):
            if proc is not None:
                proc.stop()
    wait_for(lambda: not peers(api), what="every operator to leave the peering object")


def test_a_killed_operator_is_replaced_once_its_peering_record_expires(
    ha_release: dict[str, Any],
    control_plane: ControlPlane,
    api: Any,
    namespace: str,
    gpu_nodes: Callable[..., dict[str, Any]],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """SIGKILL leaves the record behind: the standby takes over when it expires (kopf's peering
    lifetime, 60 s after the last keep-alive, which comes every 50-55 s), and removes it."""
    kubeconfig = control_plane.kubeconfig_for_service_account(OPERATOR_NS, RELEASE)
    first = ChartOperator(kubeconfig, tmp_path_factory.mktemp("killed"), ha_release, "stratos-ha-killed")
    second = ChartOperator(kubeconfig, tmp_path_factory.mktemp("standby"), ha_release, "stratos-ha-standby")
    try:
        first.start()
        wait_for(lambda: "Resuming operations" in first.log_text(), what="the first operator to resume")
        second.start()
        wait_for(lambda: len(peers(api)) == 2, what="both operators in the peering object")
        l20_node(gpu_nodes, namespace)
        create_and_select(control_plane, api, namespace, "before")

        stands_by_silently(second)
        lastseen = peers(api)["stratos-ha-killed"]["lastseen"]
        first.stop(kill=True)
        killed = time.monotonic()
        assert "stratos-ha-killed" in peers(api)  # nobody said goodbye
        wait_for(lambda: "Resuming operations" in second.log_text(), timeout=75, what="the standby to resume")
        took = time.monotonic() - killed
        assert took <= 65, f"took over {took:.0f} s after the kill (last keep-alive {lastseen})"
        wait_for(lambda: list(peers(api)) == ["stratos-ha-standby"], what="the dead record to be cleaned")
        create_and_select(control_plane, api, namespace, "after")
        assert second.reconciles() > 0
        wait_for(lambda: acts_and_exports(second, "after"), what="the standby's job metrics once it acts")
        assert node_selected_events(api, namespace, "before") == 1
        delete_jobs(api, namespace)
    finally:
        second.stop()
        first.stop(kill=True)
    wait_for(lambda: not peers(api), what="every operator to leave the peering object")
