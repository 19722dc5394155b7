"""Operator scale on the test control plane: 3,732 GPU nodes, 100 DistillationJobs applied at once.

What runs. The test suite's control plane (``tests/support/controlplane.py``: etcd, kube-apiserver,
kube-controller-manager, kube-scheduler, built by ``tests/controlplane/build.sh``), with one addition: an
audit log (step 6). The CRD and the Helm chart's RBAC are installed as the ``operator`` fixture does
(``tests/support/operator.py``), and the operator runs as ``kopf run`` under that ServiceAccount's token
(``OperatorProcess``) with the chart's default reconcile interval, 1 s (``--interval``).

Steps and what is measured:

1. Nodes. ``--nodes`` (3,732) fake GPU nodes in the paper's GPU mix with ``stratos.io`` cost and latency
   annotations (``benchmarks.cloud``), created by parallel requests: a POST with the status (Ready, GPU
   capacity) and a PATCH that removes the not-ready taint admission adds. Time and rate are reported. The
   nodes carry the TTL controller's annotation at the value it settles on for this cluster size (see
   ``node_manifest``): without it the controller re-annotates every node, 20 requests/s, for minutes.
2. Settling: wait until kube-controller-manager and the scheduler have made no request for ``--quiet``
   seconds (at most ``--quiet-max``), so that what follows measures the operator, not a cluster that is
   still digesting its nodes.
3. Operator start: time to liveness, and to the placement of a canary job applied at once (the operator
   lists Nodes itself, in pages, into a cache its handlers do not wait for; only the server decision
   waits for the first complete listing).
4. Placement, operator warm. ``--jobs`` (100) DistillationJobs are POSTed at once from 8 threads (varied:
   cost window 0.1/0.2/0.5, maxLatencyMs 50/100/none, maxHourlyCost 1.5/3/none; one teacher, two
   students). A watch records when each first shows ``ServerSelected=True``. Reported: time from the first
   POST to the last placement (target: all within 30 s), and the median/p95 per job.
5. Stage transitions. Each job's teacher-eval pod (created by the Job controller, bound by the scheduler)
   is completed by patching its status as a kubelet would: phase Succeeded, the container terminated with
   exit code 0 and a teacher-eval result as its termination message (``{"ok": true, "accuracy": 0.5,
   ...}``, what ``stage_teachers`` reads). First half of the jobs: one pod every ``--completion-interval``
   seconds (1; "paced"); second half: all at once from 8 threads ("burst"). Watches record when the Job
   controller marks the teacher-eval Job complete and when the operator creates the next stage's
   (student-probe) Job. Latency = local time the Job's ADDED event arrived minus local time the pod-status
   PATCH returned (``creationTimestamp`` has one-second resolution and is not used). Target: median
   within 1 s. Split into the Job controller's share (pod Succeeded -> Job Complete) and the operator's
   (Job Complete -> next Job).
6. API requests, from the kube-apiserver audit log. The policy logs, at Metadata level (no bodies), the
   operator's ServiceAccount and the admin user, which the test control plane's components share; they
   are told apart by user agent (kube-controller-manager's clients end in the controller's name). Unique
   audit IDs per verb and resource, per phase; a watch counts once.
7. The operator's memory and CPU: VmHWM (peak) and VmRSS from ``/proc/<pid>/status``; user + system CPU
   seconds from ``/proc/<pid>/stat``, per phase.
8. Restarts (``--restarts``, 3): with every node and job in place, the operator is killed, a new job is
   POSTed while it is down, and it is started again; measured from the process start to that job's
   ``ServerSelected`` (target: within 5 s each; kopf's Node index used to hold every handler ~55 s).

Run: ``.venv/bin/python -m benchmarks.operator_scale`` (``--quick``: 400 nodes, 20 jobs). Prints a table
and writes benchmarks/results/operator_scale.json. Needs the control-plane binaries (built by
``make controlplane``); takes a few minutes at full size.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.cloud import (
    DISTRIBUTIONS,
    PAPER_CLUSTER_SIZE,
    REPO_ROOT,
    machine,
    make_cloud,
    node_object,
    revision,
    table,
    write_json,
)
from benchmarks.cloud import summary as stats

if str(REPO_ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(REPO_ROOT / "tests"))

GROUP, VERSION, PLURAL = "stratos.io", "v1alpha1", "distillationjobs"
LABEL_JOB = f"{GROUP}/job"
LABEL_STAGE = f"{GROUP}/stage"
NAMESPACE = "bench"
OPERATOR_NS = "stratos-system"
RELEASE = "stratos-op"
OPERATOR_USER = f"system:serviceaccount:{OPERATOR_NS}:{RELEASE}"
NOT_READY_TAINT = "node.kubernetes.io/not-ready"
TEACHER = "t1"
STUDENTS = (("llama-3-2-1b", 1.24e9), ("llama-3-2-3b", 3.21e9))
TEACHER_RESULT = {
    "ok": True,
    "accuracy": 0.5,
    "samples": 10,
    "correct": 5,
    "promptTokens": 1000,
    "completionTokens": 1000,
    "costUsd": 0.01,
}
TARGETS = {"allPlacedSeconds": 30.0, "transitionMedianSeconds": 1.0, "restartSeconds": 5.0}


# ------------------------------------------------------------------------------------- pure helpers


def audit_policy(users: Sequence[str]) -> str:
    """An audit policy logging these users' requests at Metadata level (no bodies) and nothing else."""
    return (
        "apiVersion: audit.k8s.io/v1\n"
        "kind: Policy\n"
        "omitStages: [RequestReceived]\n"
        "rules:\n"
        f"- level: Metadata\n  users: {json.dumps(list(users))}\n"
        "- level: None\n"
    )


# kube-controller-manager's TTL controller (pkg/controller/ttl): node.alpha.kubernetes.io/ttl by cluster size.
TTL_ANNOTATION = "node.alpha.kubernetes.io/ttl"
TTL_BOUNDARIES = ((100, 0), (500, 15), (1000, 30), (2000, 60), (10000, 300))


def node_ttl(cluster_size: int) -> int:
    """The TTL (seconds) the TTL controller gives every node of a cluster of this size (its upper bounds)."""
    for size_max, ttl in TTL_BOUNDARIES:
        if cluster_size <= size_max:
            return ttl
    return 600


def node_manifest(facts: Any, *, ttl: int | None = None) -> dict[str, Any]:
    """A fake GPU node with a full enough status for the scheduler (addresses, nodeInfo, conditions).

    ``ttl``: pre-set the TTL controller's annotation to the value it will settle on, so that it does not
    re-annotate every node (rate-limited to 20 requests/s) each time the growing cluster crosses a size
    boundary, which kept kube-controller-manager busy for minutes after the nodes were created.
    """
    node = node_object(facts)
    if ttl is not None:
        node["metadata"]["annotations"][TTL_ANNOTATION] = str(ttl)
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    status = node["status"]
    status["capacity"]["ephemeral-storage"] = status["allocatable"]["ephemeral-storage"] = "500Gi"
    status["conditions"] = [
        {
            "type": "Ready",
            "status": "True",
            "reason": "KubeletReady",
            "message": "benchmark node",
            "lastHeartbeatTime": now,
            "lastTransitionTime": now,
        },
    ]
    status["addresses"] = [{"type": "InternalIP", "address": "127.0.0.1"}]
    status["nodeInfo"] = {
        "architecture": "amd64",
        "operatingSystem": "linux",
        "osImage": "Stratos benchmark node",
        "kernelVersion": "",
        "kubeletVersion": "v0.0.0-fake",
        "kubeProxyVersion": "",
        "containerRuntimeVersion": "fake://0",
        "machineID": facts.name,
        "systemUUID": facts.name,
        "bootID": facts.name,
    }
    return node


def dj_manifest(i: int, rng: np.random.Generator) -> dict[str, Any]:
    """DistillationJob number ``i``: varied server requirements, one teacher, two students."""
    requirements: dict[str, Any] = {"minAccuracy": 0.15}
    latency = [50, 100, None][int(rng.integers(3))]
    cost = [1.5, 3.0, None][int(rng.integers(3))]
    if latency is not None:
        requirements["maxLatencyMs"] = latency
    if cost is not None:
        requirements["maxHourlyCost"] = cost
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "DistillationJob",
        "metadata": {"name": f"dj-{i:03d}", "namespace": NAMESPACE},
        "spec": {
            "task": {"builtin": "mahjong", "sampleSize": 10},
            "requirements": requirements,
            # The paper's rule: the node is chosen (ServerSelected=True) at SelectServer, which is what
            # placement measures; under the joint rule the node is fixed only after the probes.
            "servers": {"costWindow": [0.1, 0.2, 0.5][int(rng.integers(3))], "rule": "paper"},
            "teachers": [
                {"name": TEACHER, "endpoint": {"baseURL": "http://teacher.invalid:8000/v1", "model": "m"}}
            ],
            "students": [
                {"name": name, "model": {"uri": f"hf://example/{name}", "parameters": params}}
                for name, params in STUDENTS
            ],
        },
    }


def completed_pod_status(pod: Mapping[str, Any], message: str) -> dict[str, Any]:
    """The status a kubelet writes when the pod's only container exited 0 with ``message``."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    container = pod["spec"]["containers"][0]
    uid = pod["metadata"]["uid"]
    return {
        "phase": "Succeeded",
        "hostIP": "127.0.0.1",
        "podIP": "127.0.0.1",
        "startTime": now,
        "conditions": [
            {"type": "Initialized", "status": "True", "lastTransitionTime": now},
            {
                "type": "ContainersReady",
                "status": "False",
                "lastTransitionTime": now,
                "reason": "PodCompleted",
            },
            {"type": "Ready", "status": "False", "lastTransitionTime": now, "reason": "PodCompleted"},
        ],
        "containerStatuses": [
            {
                "name": container["name"],
                "image": container.get("image", ""),
                "imageID": "",
                "containerID": f"fake://{uid}",
                "ready": False,
                "started": False,
                "restartCount": 0,
                "state": {
                    "terminated": {
                        "exitCode": 0,
                        "reason": "Completed",
                        "message": message,
                        "startedAt": now,
                        "finishedAt": now,
                        "containerID": f"fake://{uid}",
                    }
                },
            }
        ],
    }


def _parse_time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@dataclass(frozen=True)
class Request:
    """One API request from the audit log: when it arrived (Unix s), who made it, "verb resource"."""

    time: float
    actor: str
    kind: str


def actor_of(event: Mapping[str, Any]) -> str:
    """ "operator" for the operator's ServiceAccount; else the program in the user agent, with the
    controller's name for kube-controller-manager (its clients append it: ``.../ttl-controller``)."""
    if (event.get("user") or {}).get("username") == OPERATOR_USER:
        return "operator"
    agent = str(event.get("userAgent") or "?")
    program = agent.split("/", 1)[0]
    if program == "kube-controller-manager":
        return f"kcm:{agent.rsplit('/', 1)[-1]}"
    return program


def audit_requests(lines: Iterable[str]) -> dict[str, Request]:
    """Requests by audit ID (a watch logs ResponseStarted and ResponseComplete under one ID)."""
    out: dict[str, Request] = {}
    for line in lines:
        line = line.strip()
        if not line:
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        audit_id = event.get("auditID")
        if not audit_id or audit_id in out or "requestReceivedTimestamp" not in event:
            continue
        ref = event.get("objectRef")
        if ref:
            resource = ref.get("resource", "?") + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        else:  # discovery and other non-resource URLs
            resource = str(event.get("requestURI", "?")).split("?")[0]
        out[audit_id] = Request(
            _parse_time(event["requestReceivedTimestamp"]), actor_of(event), f"{event.get('verb')} {resource}"
        )
    return out


class AuditTail:
    """Reads an audit log as it grows (whole lines only)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.requests: dict[str, Request] = {}

    def poll(self) -> dict[str, Request]:
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                data = f.read()
        except OSError:
            return self.requests
        end = data.rfind(b"\n") + 1
        self.offset += end
        for key, req in audit_requests(data[:end].decode(errors="replace").splitlines()).items():
            self.requests.setdefault(key, req)
        return self.requests


def summarise(
    requests: Iterable[Request], phases: Sequence[tuple[str, float, float]], *, actor: str = "operator"
) -> dict[str, Any]:
    """``actor``'s requests by "verb resource", overall and per phase ((name, start, end) in Unix s)."""
    mine = [r for r in requests if r.actor == actor]
    total = Counter(r.kind for r in mine)
    by_phase = {}
    for name, start, end in phases:
        counts = Counter(r.kind for r in mine if start <= r.time < end)
        by_phase[name] = {"total": sum(counts.values()), "byVerbResource": dict(counts.most_common())}
    return {"total": sum(total.values()), "byVerbResource": dict(total.most_common()), "byPhase": by_phase}


def control_plane_activity(
    requests: Iterable[Request], phases: Sequence[tuple[str, float, float]], top: int = 6
) -> dict[str, Any]:
    """Per phase, the busiest control-plane clients (kube-controller-manager's controllers, the scheduler)."""
    reqs = [r for r in requests if r.actor.startswith(("kcm:", "kube-scheduler"))]
    out = {}
    for name, start, end in phases:
        counts = Counter(f"{r.actor} {r.kind}" for r in reqs if start <= r.time < end)
        out[name] = {"total": sum(counts.values()), "top": dict(counts.most_common(top))}
    return out


def proc_memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of a process in KiB, from /proc/<pid>/status ({} if it is gone)."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    except OSError:
        pass
    return out


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (/proc/<pid>/stat), 0.0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def transition_latencies(
    completed: Mapping[str, float], job_done: Mapping[str, float], next_job: Mapping[str, float]
) -> dict[str, Any]:
    """Per DistillationJob: pod completed -> next stage Job, split at the teacher-eval Job's completion."""
    total, controller, operator = [], [], []
    for dj, t0 in completed.items():
        if dj in next_job:
            total.append(next_job[dj] - t0)
        if dj in job_done:
            controller.append(job_done[dj] - t0)
            if dj in next_job:
                operator.append(next_job[dj] - job_done[dj])
    return {
        "podCompletedToNextJob": stats(total),
        "podCompletedToJobComplete": stats(controller),
        "jobCompleteToNextJob": stats(operator),
        "measured": len(total),
        "missing": sorted(set(completed) - set(next_job)),
        "perJob": {
            dj: {
                "podToJobComplete": round(job_done[dj] - t0, 3) if dj in job_done else None,
                "podToNextJob": round(next_job[dj] - t0, 3) if dj in next_job else None,
            }
            for dj, t0 in completed.items()
        },
    }


# ----------------------------------------------------------------------------------------- the cluster


@dataclass
class Recorder:
    """Times (time.monotonic) at which watches saw things, keyed by DistillationJob name."""

    placed: dict[str, float] = field(default_factory=dict)
    teacher_done: dict[str, float] = field(default_factory=dict)
    next_job: dict[str, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def first(self, book: dict[str, float], key: str, when: float) -> None:
        with self.lock:
            book.setdefault(key, when)


def _watch(
    stop: threading.Event, make_stream: Callable[[], Iterable[Any]], handle: Callable[[Any], None]
) -> None:
    while not stop.is_set():
        try:
            for event in make_stream():
                handle(event)
                if stop.is_set():
                    return
        except Exception:  # a dropped watch is restarted; the recorder keeps first sightings only
            time.sleep(0.2)


def start_watches(api: Any, rec: Recorder, stop: threading.Event) -> list[threading.Thread]:
    from kubernetes import client, watch

    custom = client.CustomObjectsApi(api)
    batch = client.BatchV1Api(api)

    def dj_stream() -> Iterable[Any]:
        return watch.Watch().stream(
            custom.list_namespaced_custom_object, GROUP, VERSION, NAMESPACE, PLURAL, timeout_seconds=60
        )

    def on_dj(event: Any) -> None:
        obj = event["object"]
        for cond in (obj.get("status") or {}).get("conditions") or []:
            if cond.get("type") == "ServerSelected" and cond.get("status") == "True":
                rec.first(rec.placed, obj["metadata"]["name"], time.monotonic())

    def job_stream() -> Iterable[Any]:
        return watch.Watch().stream(
            batch.list_namespaced_job, NAMESPACE, label_selector=LABEL_JOB, timeout_seconds=60
        )

    def on_job(event: Any) -> None:
        now = time.monotonic()
        job = event["object"]
        labels = job.metadata.labels or {}
        dj, stage = labels.get(LABEL_JOB), labels.get(LABEL_STAGE)
        if not dj:
            return
        if stage == "student-probe":
            rec.first(rec.next_job, dj, now)
        elif stage == "teacher-eval":
            conds = (job.status.conditions if job.status else None) or []
            if any(c.type in ("Complete", "SuccessCriteriaMet") and c.status == "True" for c in conds):
                rec.first(rec.teacher_done, dj, now)

    threads = [
        threading.Thread(target=_watch, args=(stop, dj_stream, on_dj), daemon=True),
        threading.Thread(target=_watch, args=(stop, job_stream, on_job), daemon=True),
    ]
    for t in threads:
        t.start()
    return threads


def pooled_client(kubeconfig: Path, size: int) -> Any:
    """An admin ApiClient whose connection pool serves ``size`` threads."""
    from kubernetes import client, config

    cfg = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
    cfg.connection_pool_maxsize = size
    return client.ApiClient(cfg)


def create_nodes(api: Any, manifests: Sequence[dict[str, Any]], workers: int) -> float:
    """POST each node (with status) and drop the not-ready taint; returns the seconds it took."""
    from support.controlplane import rest

    def one(node: dict[str, Any]) -> None:
        name = node["metadata"]["name"]
        created = rest(api, "POST", "/api/v1/nodes", body=node)
        if created.get("status", {}).get("conditions") is None:  # status dropped on create: set it
            rest(api, "PATCH", f"/api/v1/nodes/{name}/status", body={"status": node["status"]})
        taints = [
            t for t in (created.get("spec") or {}).get("taints") or [] if t.get("key") != NOT_READY_TAINT
        ]
        rest(api, "PATCH", f"/api/v1/nodes/{name}", body={"spec": {"taints": taints or None}})

    start = time.monotonic()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, manifests))
    return time.monotonic() - start


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.1) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)
    return time.monotonic() - start


def _quiet_since(tail: AuditTail) -> float:
    """Seconds since kube-controller-manager or the scheduler last made a request (inf: never)."""
    last = max(
        (r.time for r in tail.poll().values() if r.actor.startswith(("kcm:", "kube-scheduler"))), default=0
    )
    return time.time() - last if last else float("inf")


def run(
    *,
    nodes: int = PAPER_CLUSTER_SIZE,
    jobs: int = 100,
    interval: float = 1.0,
    completion_interval: float = 1.0,
    quiet: float = 5.0,
    quiet_max: float = 300.0,
    workers: int = 16,
    seed: int = 9,
    restarts: int = 3,
    keep: bool = False,
    progress: Callable[[str], None] = print,
) -> dict[str, Any]:
    from support.controlplane import ADMIN_USER, ControlPlane, rest
    from support.kubelet import create_bound_pvc
    from support.operator import DEFAULT_CLAIM, OperatorProcess

    workdir = Path(tempfile.mkdtemp(prefix="stratos-bench-"))
    policy = workdir / "audit-policy.yaml"
    policy.write_text(audit_policy([OPERATOR_USER, ADMIN_USER]))
    audit_log = workdir / "audit.log"
    cp = ControlPlane(
        workdir=workdir / "cp",
        extra_apiserver_args=[
            f"--audit-policy-file={policy}",
            f"--audit-log-path={audit_log}",
            "--audit-log-format=json",
            "--audit-log-maxsize=0",
        ],
    )
    tail = AuditTail(audit_log)
    report: dict[str, Any] = {"benchmark": "operator_scale"}
    operator: OperatorProcess | None = None
    stop = threading.Event()
    wall: dict[str, float] = {}
    names = [f"dj-{i:03d}" for i in range(jobs)]
    try:
        progress("starting the control plane ...")
        start = time.monotonic()
        cp.start()
        control_plane_seconds = time.monotonic() - start
        api = pooled_client(cp.kubeconfig, workers + 4)

        crds = REPO_ROOT / "crds"
        cp.kubectl("apply", "--server-side", "-f", str(crds))
        # Right after the apply the CRD may have no conditions yet, which kubectl wait reports as an error.
        wait_until(
            lambda: (
                cp.kubectl(
                    "wait", "--for=condition=Established", "--timeout=30s", "-f", str(crds), check=False
                ).returncode
                == 0
            ),
            90,
            "the CRD Established",
            0.5,
        )
        cp.kubectl("create", "namespace", OPERATOR_NS)
        cp.kubectl(
            "label", "--overwrite", "namespace", OPERATOR_NS, "pod-security.kubernetes.io/enforce=restricted"
        )
        cp.helm(
            "install", RELEASE, str(REPO_ROOT / "charts" / "stratos"), "--namespace", OPERATOR_NS,
            "--set", "crds.install=false", "--set", "replicaCount=0",
        )  # fmt: skip
        kubeconfig = cp.kubeconfig_for_service_account(OPERATOR_NS, RELEASE)
        ns = {"metadata": {"name": NAMESPACE, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}}
        rest(api, "POST", "/api/v1/namespaces", body=ns)
        wait_until(
            lambda: _exists(api, f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/default"), 60, "default SA"
        )
        # Stage pods mount the operator's default claim; the scheduler places none whose claim is unbound.
        create_bound_pvc(api, NAMESPACE, DEFAULT_CLAIM)

        progress(f"creating {nodes} nodes ...")
        wall["nodes"] = time.time()
        cloud = make_cloud(nodes, np.random.default_rng(seed), prefix="gpu")
        manifests = [node_manifest(f, ttl=node_ttl(nodes)) for f in cloud]
        node_seconds = create_nodes(api, manifests, workers)
        progress(f"  {node_seconds:.1f} s; waiting for the control plane to go quiet ({quiet:g} s) ...")
        wall["settle"] = time.time()
        start = time.monotonic()
        try:
            wait_until(lambda: _quiet_since(tail) >= quiet, quiet_max, "a quiet control plane", 1.0)
        except TimeoutError as err:
            progress(f"  {err}; going on")
        settle_seconds = time.monotonic() - start
        progress(f"  {settle_seconds:.1f} s")

        rec = Recorder()
        start_watches(api, rec, stop)
        time.sleep(1.0)  # let the watches open before the first object exists
        progress("starting the operator, then a canary DistillationJob ...")
        wall["startup"] = time.time()
        start = time.monotonic()
        operator = OperatorProcess(kubeconfig, workdir, interval=interval).start()
        liveness_seconds = time.monotonic() - start
        assert operator.process is not None
        pid = operator.process.pid
        canary = dj_manifest(0, np.random.default_rng(seed))
        canary["metadata"]["name"] = "canary"
        rest(api, "POST", f"/apis/{GROUP}/{VERSION}/namespaces/{NAMESPACE}/{PLURAL}", body=canary)
        wait_until(lambda: "canary" in rec.placed, 600, "the canary's ServerSelected", 0.05)
        cold_start = rec.placed["canary"] - start
        progress(f"  liveness after {liveness_seconds:.1f} s, canary placed after {cold_start:.1f} s")
        memory = {"afterStartup": proc_memory(pid)}
        cpu = {"startup": 0.0, "placement": proc_cpu_seconds(pid)}

        rng = np.random.default_rng(seed)
        djs = [dj_manifest(i, rng) for i in range(jobs)]
        progress(f"applying {jobs} DistillationJobs ...")
        wall["placement"] = time.time()
        t0 = time.monotonic()
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{NAMESPACE}/{PLURAL}"
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda dj: rest(api, "POST", path, body=dj), djs))
        posted = time.monotonic() - t0
        wait_until(lambda: all(n in rec.placed for n in names), 600, "every job ServerSelected", 0.05)
        per_job = [rec.placed[n] - t0 for n in names]
        all_placed = max(per_job)
        progress(f"  all placed in {all_placed:.2f} s")
        memory["afterPlacement"] = proc_memory(pid)
        cpu["bound"] = proc_cpu_seconds(pid)

        progress("waiting for the teacher-eval pods to be bound ...")
        wall["paced"] = time.time()
        selector = {"labelSelector": f"{LABEL_STAGE}=teacher-eval"}
        pods: dict[str, dict[str, Any]] = {}

        def bound() -> bool:
            items = rest(api, "GET", f"/api/v1/namespaces/{NAMESPACE}/pods", query=selector)["items"]
            pods.clear()
            for p in items:
                dj = p["metadata"]["labels"].get(LABEL_JOB)
                if p["spec"].get("nodeName") and dj in names:
                    pods[dj] = p
            return len(pods) >= jobs

        bound_seconds = wait_until(bound, 300, "teacher-eval pods bound", 0.5)
        message = json.dumps(TEACHER_RESULT)
        completed: dict[str, float] = {}

        def complete(dj: str) -> None:
            pod = pods[dj]
            rest(
                api,
                "PATCH",
                f"/api/v1/namespaces/{NAMESPACE}/pods/{pod['metadata']['name']}/status",
                body={"status": completed_pod_status(pod, message)},
                content_type="application/strategic-merge-patch+json",
            )
            completed[dj] = time.monotonic()

        def next_jobs(group: Sequence[str]) -> None:
            try:
                wait_until(
                    lambda: all(n in rec.next_job for n in group), 120, "every student-probe Job", 0.05
                )
            except TimeoutError as err:
                progress(f"  {err}")

        paced, burst = names[: jobs // 2], names[jobs // 2 :]
        progress(f"completing {len(paced)} teacher-eval pods, one every {completion_interval:g} s ...")
        cpu["transitionsPaced"] = proc_cpu_seconds(pid)
        for dj in paced:
            complete(dj)
            time.sleep(completion_interval)
        next_jobs(paced)
        time.sleep(3.0)
        progress(f"completing {len(burst)} teacher-eval pods at once ...")
        wall["burst"] = time.time()
        cpu["transitionsBurst"] = proc_cpu_seconds(pid)
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(complete, burst))
        next_jobs(burst)
        memory["afterTransitions"] = proc_memory(pid)
        cpu["end"] = proc_cpu_seconds(pid)
        wall["end"] = time.time()
        transitions = {
            "paced": transition_latencies({n: completed[n] for n in paced}, rec.teacher_done, rec.next_job),
            "burst": transition_latencies({n: completed[n] for n in burst}, rec.teacher_done, rec.next_job),
        }
        reconcile = _metric_sum(operator.metrics(), "stratos_reconcile_duration_seconds")

        # Restarts: the operator is killed, a new job is POSTed while it is down, and it is started again
        # with every node and job in place. Measured: process start -> that job's ServerSelected.
        restart_seconds: list[float] = []
        restart_liveness: list[float] = []
        for i in range(restarts):
            operator.stop(kill=True)
            name = f"restart-{i}"
            dj = dj_manifest(i, np.random.default_rng(seed + i))
            dj["metadata"]["name"] = name
            rest(api, "POST", f"/apis/{GROUP}/{VERSION}/namespaces/{NAMESPACE}/{PLURAL}", body=dj)
            start = time.monotonic()
            operator.start()  # returns once the liveness probe answers: Python and kopf have started
            restart_liveness.append(time.monotonic() - start)
            wait_until(lambda name=name: name in rec.placed, 600, f"{name}'s ServerSelected", 0.05)
            restart_seconds.append(rec.placed[name] - start)
            progress(
                f"  restart {i + 1}: live after {restart_liveness[-1]:.2f} s, first decision after "
                f"{restart_seconds[-1]:.2f} s"
            )

        report.update(
            {
                "machine": machine(),
                "settings": {
                    "nodes": nodes,
                    "jobs": jobs,
                    "reconcileIntervalSeconds": interval,
                    "completionIntervalSeconds": completion_interval,
                    "nodeTtlAnnotation": node_ttl(nodes),
                    "quietSeconds": quiet,
                    "nodeCreationWorkers": workers,
                    "seed": seed,
                    "restarts": restarts,
                    "inventory": DISTRIBUTIONS,
                    "apiRequestCounting": "kube-apiserver audit log (policy: Metadata level for the "
                    "operator's ServiceAccount and the admin user, which the control-plane components share; "
                    "told apart by user agent), unique audit IDs",
                },
                "controlPlaneStartSeconds": round(control_plane_seconds, 2),
                "nodeCreation": {
                    "seconds": round(node_seconds, 2),
                    "nodesPerSecond": round(nodes / node_seconds, 1),
                },
                "controlPlaneSettleSeconds": round(settle_seconds, 2),
                "operatorStart": {
                    "livenessSeconds": round(liveness_seconds, 2),
                    "firstPlacementSeconds": round(cold_start, 2),
                },
                "restartToFirstDecisionSeconds": stats(restart_seconds),
                "restartToLivenessSeconds": stats(restart_liveness),
                "placement": {
                    "postSeconds": round(posted, 3),
                    "allPlacedSeconds": round(all_placed, 3),
                    "perJobSeconds": stats(per_job),
                },
                "teacherEvalPodsBoundSeconds": round(bound_seconds, 2),
                "transitions": transitions,
                "operatorMemoryKib": {**memory, "peakVmHWM": memory["afterTransitions"].get("VmHWM")},
                "operatorCpuSeconds": {
                    "startup": round(cpu["placement"], 2),
                    "placement": round(cpu["bound"] - cpu["placement"], 2),
                    "transitionsPaced": round(cpu["transitionsBurst"] - cpu["transitionsPaced"], 2),
                    "transitionsBurst": round(cpu["end"] - cpu["transitionsBurst"], 2),
                    "total": round(cpu["end"], 2),
                    "wallSeconds": {
                        "placement": round(wall["paced"] - wall["placement"], 2),
                        "transitionsPaced": round(wall["burst"] - wall["paced"], 2),
                        "transitionsBurst": round(wall["end"] - wall["burst"], 2),
                    },
                },
                "operatorReconcile": reconcile,
            }
        )
        median = transitions["paced"]["podCompletedToNextJob"].get("median")
        worst_restart = max(restart_seconds) if restart_seconds else None
        report["targets"] = [
            {
                "what": "operator restart -> first decision, slowest of the restarts",
                "targetSeconds": TARGETS["restartSeconds"],
                "measuredSeconds": None if worst_restart is None else round(worst_restart, 3),
                "met": worst_restart is not None and worst_restart <= TARGETS["restartSeconds"],
            },
            {
                "what": "all jobs ServerSelected after the POSTs (operator warm)",
                "targetSeconds": TARGETS["allPlacedSeconds"],
                "measuredSeconds": round(all_placed, 3),
                "met": all_placed <= TARGETS["allPlacedSeconds"],
            },
            {
                "what": "pod completed -> next stage Job, median (paced wave)",
                "targetSeconds": TARGETS["transitionMedianSeconds"],
                "measuredSeconds": median,
                "met": median is not None and median <= TARGETS["transitionMedianSeconds"],
            },
        ]
    finally:
        stop.set()
        if operator is not None:
            operator.stop()
        cp.stop()
        if wall:
            wall.setdefault("end", time.time())
            bounds = sorted(wall.items(), key=lambda kv: kv[1])
            phases = [
                (name, begin, bounds[i + 1][1] if i + 1 < len(bounds) else begin + 60)
                for i, (name, begin) in enumerate(bounds)
                if name != "end"
            ]
            requests = list(tail.poll().values())
            operator_phases = [p for p in phases if p[0] in ("startup", "placement", "paced", "burst")]
            operator_phases.append(("wholeRun", wall.get("startup", 0.0), wall["end"] + 60))
            report["apiRequests"] = summarise(requests, operator_phases)
            report["controlPlaneActivity"] = control_plane_activity(requests, phases)
        if keep:
            progress(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return report


def _exists(api: Any, path: str) -> bool:
    from kubernetes.client.exceptions import ApiException

    from support.controlplane import rest

    try:
        rest(api, "GET", path)
    except ApiException:
        return False
    return True


def _metric_sum(text: str, name: str) -> dict[str, float]:
    """count and sum of a Prometheus histogram in exposition text."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        for suffix in ("_count", "_sum"):
            if line.startswith(name + suffix + " ") or line.startswith(name + suffix + "{"):
                out[suffix[1:]] = out.get(suffix[1:], 0.0) + float(line.rsplit(" ", 1)[1])
    if out.get("count"):
        out["meanSeconds"] = out["sum"] / out["count"]
    return out


def _s(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def render(report: Mapping[str, Any]) -> str:
    s = report["settings"]
    place = report["placement"]
    mem = report["operatorMemoryKib"]
    rows = [
        ["control plane start", f"{report['controlPlaneStartSeconds']} s", ""],
        [
            "node creation",
            f"{report['nodeCreation']['seconds']} s",
            f"{s['nodes']} nodes, {report['nodeCreation']['nodesPerSecond']}/s, "
            f"{s['nodeCreationWorkers']} threads",
        ],
        [
            "control plane settling",
            f"{report['controlPlaneSettleSeconds']} s",
            f"until kube-controller-manager and the scheduler were idle for {s['quietSeconds']:g} s",
        ],
        ["operator start: liveness", f"{report['operatorStart']['livenessSeconds']} s", ""],
        [
            "operator start: first placement",
            f"{report['operatorStart']['firstPlacementSeconds']} s",
            "a canary job applied at start: includes the operator's initial listing of the nodes",
        ],
        [
            "operator restart: first decision",
            f"median {_s(report['restartToFirstDecisionSeconds'].get('median'))} s",
            f"min {_s(report['restartToFirstDecisionSeconds'].get('min'))} s, max "
            f"{_s(report['restartToFirstDecisionSeconds'].get('max'))} s, n={s['restarts']}; killed, a job "
            "POSTed while down, started again: process start -> its ServerSelected; target <= 5 s",
        ],
        [
            "operator restart: liveness",
            f"median {_s(report['restartToLivenessSeconds'].get('median'))} s",
            f"min {_s(report['restartToLivenessSeconds'].get('min'))} s, max "
            f"{_s(report['restartToLivenessSeconds'].get('max'))} s: process start -> liveness probe answers "
            "(Python imports, kopf start-up)",
        ],
        ["POST all DistillationJobs", f"{place['postSeconds']} s", f"{s['jobs']} jobs, 8 threads"],
        ["all ServerSelected", f"{place['allPlacedSeconds']} s", "target <= 30 s"],
        [
            "per job ServerSelected",
            f"median {_s(place['perJobSeconds'].get('median'))} s",
            f"p95 {_s(place['perJobSeconds'].get('p95'))} s",
        ],
    ]
    for wave, label in (
        ("paced", f"one every {s['completionIntervalSeconds']:g} s"),
        ("burst", "all at once"),
    ):
        tr = report["transitions"][wave]
        total, ctrl, op = (
            tr[k] for k in ("podCompletedToNextJob", "podCompletedToJobComplete", "jobCompleteToNextJob")
        )
        rows += [
            [
                f"pod done -> next Job ({wave})",
                f"median {_s(total.get('median'))} s",
                f"p95 {_s(total.get('p95'))} s, n={tr['measured']}, pods completed {label}",
            ],
            [
                "  pod done -> Job Complete",
                f"median {_s(ctrl.get('median'))} s",
                f"p95 {_s(ctrl.get('p95'))} s (kube-controller-manager's Job controller)",
            ],
            [
                "  Job Complete -> next Job",
                f"median {_s(op.get('median'))} s",
                f"p95 {_s(op.get('p95'))} s (operator; reconcile every {s['reconcileIntervalSeconds']:g} s)",
            ],
        ]
    cpu = report["operatorCpuSeconds"]
    rows += [
        [
            "operator CPU",
            f"{cpu['total']} s",
            "placement {placement} s in {w[placement]} s, paced {transitionsPaced} s in "
            "{w[transitionsPaced]} s, burst {transitionsBurst} s in {w[transitionsBurst]} s".format(
                w=cpu["wallSeconds"], **cpu
            ),
        ],
        [
            "operator peak RSS (VmHWM)",
            f"{(mem.get('peakVmHWM') or 0) / 1024:.0f} MiB",
            f"RSS after startup {(mem['afterStartup'].get('VmRSS') or 0) / 1024:.0f} MiB, after placement "
            f"{(mem['afterPlacement'].get('VmRSS') or 0) / 1024:.0f} MiB",
        ],
    ]
    api = report.get("apiRequests")
    if api:
        for phase, data in api["byPhase"].items():
            top = ", ".join(f"{k} {v}" for k, v in list(data["byVerbResource"].items())[:6])
            rows.append([f"operator API requests: {phase}", str(data["total"]), top])
    for phase, data in (report.get("controlPlaneActivity") or {}).items():
        top = ", ".join(f"{k} {v}" for k, v in list(data["top"].items())[:3])
        rows.append([f"control-plane requests: {phase}", str(data["total"]), top])
    lines = [table(["measure", "value", "detail"], rows, left=(0, 2)), ""]
    for t in report["targets"]:
        lines.append(
            f"target: {t['what']} <= {t['targetSeconds']} s -> {_s(t['measuredSeconds'])} s, "
            f"{'met' if t['met'] else 'MISSED'}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=PAPER_CLUSTER_SIZE)
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--interval", type=float, default=1.0, help="operator reconcile interval, seconds")
    parser.add_argument(
        "--completion-interval", type=float, default=1.0, help="seconds between pod completions (paced wave)"
    )
    parser.add_argument(
        "--quiet",
        type=float,
        default=5.0,
        help="idle seconds of kube-controller-manager before the operator starts",
    )
    parser.add_argument("--quiet-max", type=float, default=300.0, help="longest wait for that idleness")
    parser.add_argument("--workers", type=int, default=16, help="threads creating nodes")
    parser.add_argument("--seed", type=int, default=9)
    parser.add_argument("--restarts", type=int, default=3, help="operator restarts measured at the end")
    parser.add_argument("--quick", action="store_true", help="400 nodes, 20 jobs")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, audit log)")
    parser.add_argument(
        "--out", type=Path, default=None, help="directory for the JSON (default benchmarks/results)"
    )
    args = parser.parse_args(argv)
    rev = revision()
    if args.out is None and rev.endswith("+dirty"):
        print(f"refusing to write benchmarks/results from a dirty tree ({rev}): commit, or pass --out DIR")
        return 2
    nodes, jobs = (400, 20) if args.quick else (args.nodes, args.jobs)
    report = run(
        nodes=nodes,
        jobs=jobs,
        interval=args.interval,
        completion_interval=args.completion_interval,
        quiet=args.quiet,
        quiet_max=args.quiet_max,
        workers=args.workers,
        seed=args.seed,
        restarts=args.restarts,
        keep=args.keep,
        progress=lambda m: print(m, flush=True),
    )
    print(render(report))
    print(f"wrote {write_json('operator_scale', report, out_dir=args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
