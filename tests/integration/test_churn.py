"""Churn: 200 DistillationJobs created and deleted against one running operator leave nothing behind.

The jobs go in batches. In each batch some are deleted at once (racing the operator's first tick and
the finalizer kopf adds for the timer), the rest once the server is selected and the teacher-eval Job
and its ConfigMap exist. Afterwards:

* every DistillationJob is gone: no finalizer held a deletion up;
* no Job, Pod, ConfigMap, Deployment or Service that belonged to one is left: the controller
  manager's garbage collector removes the children through their ownerReferences (waited for with a
  bounded poll);
* the operator forgot them: its ``stratos_distillationjobs`` gauge is back to zero in every phase, and
  no timer keeps reconciling a deleted job (kopf leaves one running for a job deleted before its finalizer
  lands; the operator's timer filter stops it);
* its memory is flat: VmRSS after the second hundred jobs is within a bound of VmRSS after the first
  hundred, and the thread count does not grow.

The GPU nodes carry a NoSchedule taint that the jobs tolerate (so they stay candidates) and the
teacher-eval pods do not (they run on CPU and carry no toleration): the pods stay unbound, as no kubelet
runs here to confirm the deletion of a bound pod, and the garbage collector can delete them outright.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stratos.kube.naming import LABEL_JOB
from support.controlplane import rest, wait_for
from support.operator import OperatorProcess

pytest_plugins = ["support.operator"]  # the `operator` fixture

TOTAL = 200
BATCH = 25
DELETED_AT_ONCE = 5  # per batch, deleted right after creation
POOL_LABEL = "stratos.test/pool"
TAINT = {"key": "stratos.test/churn", "value": "gpu-only", "effect": "NoSchedule"}
BATCH_LABEL = "stratos.test/churn-batch"
DJ_PATH = "/apis/stratos.io/v1alpha1/namespaces/{ns}/distillationjobs"
CHILD_KINDS = {
    "Job": "/apis/batch/v1/namespaces/{ns}/jobs",
    "Pod": "/api/v1/namespaces/{ns}/pods",
    "ConfigMap": "/api/v1/namespaces/{ns}/configmaps",
    "Deployment": "/apis/apps/v1/namespaces/{ns}/deployments",
    "Service": "/api/v1/namespaces/{ns}/services",
}
# VmRSS after all 200 jobs may exceed VmRSS after the first 100 by at most 10% plus 16 MiB (about
# 30 MiB for an operator of ~140 MiB). The first hundred jobs warm every cache, pool and arena the
# operator has (kopf's per-object state, the indexes, the API client's connection pools, Python's
# allocator: RSS grows ~60 MiB over them); the second hundred should reuse them, and do (+2-3 MiB
# measured). CPython seldom returns freed memory to the OS and heap fragmentation moves RSS by a few
# MiB either way, hence the slack. What it catches is state kept per job: 100 jobs more must not cost
# ~0.3 MiB each, which a leaked body with its status (~10-20 KiB) does not reach but a leaked kopf
# timer or watch, API client or thread per job does. Leaked timers are also caught directly (the
# reconcile count must stand still once every job is gone) and leaked threads by the thread count.
RSS_SLACK_FRACTION = 0.10
RSS_SLACK_KIB = 16 * 1024


def dj(name: str, pool: str, batch: int) -> dict[str, Any]:
    return {
        "apiVersion": "stratos.io/v1alpha1",
        "kind": "DistillationJob",
        "metadata": {"name": name, "labels": {BATCH_LABEL: str(batch)}},
        "spec": {
            "task": {"builtin": "mahjong", "sampleSize": 10},
            "requirements": {"minAccuracy": 0.15},
            "servers": {
                "nodeSelector": {POOL_LABEL: pool},
                "rule": "paper",  # ServerSelected at SelectServer, before any workload runs
                "tolerations": [{"key": TAINT["key"], "operator": "Exists", "effect": "NoSchedule"}],
            },
            "teachers": [
                {"name": "t1", "endpoint": {"baseURL": "http://teacher.invalid:8000/v1", "model": "m"}}
            ],
            "students": [{"name": "tiny", "model": {"uri": "file:///models/tiny", "parameters": 1.0e8}}],
        },
    }


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS (KiB) and Threads of a process, from /proc/<pid>/status."""
    text = Path(f"/proc/{pid}/status").read_text()
    found = dict(re.findall(r"^(VmRSS|Threads):\s+(\d+)", text, re.M))
    return {"rss_kib": int(found["VmRSS"]), "threads": int(found["Threads"])}


def server_selected(obj: dict[str, Any]) -> bool:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return any(c["type"] == "ServerSelected" and c["status"] == "True" for c in conditions)


def batch_items(api: Any, path: str, batch: int) -> list[dict[str, Any]]:
    return list(rest(api, "GET", path, query={"labelSelector": f"{BATCH_LABEL}={batch}"})["items"])


def all_selected(api: Any, path: str, batch: int, names: set[str]) -> bool:
    selected = {o["metadata"]["name"] for o in batch_items(api, path, batch) if server_selected(o)}
    return names <= selected


def batch_gone(api: Any, path: str, batch: int) -> bool:
    return not batch_items(api, path, batch)


def reconciles(operator: OperatorProcess) -> float:
    found = re.search(r"^stratos_reconcile_duration_seconds_count (\S+)$", operator.metrics(), re.M)
    return float(found.group(1)) if found else 0.0


def leftovers(api: Any, namespace: str, uids: set[str]) -> dict[str, list[str]]:
    """Children of the deleted jobs still there: owned by one of them or labelled as a stage child."""
    found: dict[str, list[str]] = {}
    for kind, path in CHILD_KINDS.items():
        for obj in rest(api, "GET", path.format(ns=namespace))["items"]:
            meta = obj["metadata"]
            owners = {ref["uid"] for ref in meta.get("ownerReferences") or []}
            if owners & uids or LABEL_JOB in (meta.get("labels") or {}):
                found.setdefault(kind, []).append(meta["name"])
    return found


def test_two_hundred_jobs_created_and_deleted_leave_nothing_behind(
    operator: OperatorProcess,
    api: Any,
    namespace: str,
    gpu_nodes: Callable[..., dict[str, Any]],
) -> None:
    assert operator.process is not None
    pid = operator.process.pid
    for name, product, cost in (("l20", "NVIDIA-L20", "0.6"), ("a10", "NVIDIA-A10", "0.5")):
        gpu_nodes(
            f"{namespace}-{name}",
            labels={POOL_LABEL: namespace, "nvidia.com/gpu.product": product, "nvidia.com/gpu.count": "1"},
            annotations={"stratos.io/hourly-cost": cost, "stratos.io/latency-ms": "10"},
            taints=[TAINT],
        )
    djs = DJ_PATH.format(ns=namespace)
    uids: set[str] = set()
    samples = {"start": proc_status(pid)}
    deletions: list[float] = []  # seconds from a batch's DELETE until every job of it is gone
    started = time.monotonic()

    for batch in range(TOTAL // BATCH):
        names = [f"churn-{batch:02d}-{i:02d}" for i in range(BATCH)]
        for i, name in enumerate(names):
            uids.add(rest(api, "POST", djs, body=dj(name, namespace, batch))["metadata"]["uid"])
            if i < DELETED_AT_ONCE:  # 0 to 120 ms after its creation: across kopf's first cycle
                time.sleep(0.03 * i)
                rest(api, "DELETE", f"{djs}/{name}")
        selected = functools.partial(all_selected, api, djs, batch, set(names[DELETED_AT_ONCE:]))
        wait_for(selected, timeout=90, interval=0.5, what=f"batch {batch}: ServerSelected on every job")
        deleting = time.monotonic()
        rest(api, "DELETE", djs, query={"labelSelector": f"{BATCH_LABEL}={batch}"})
        # Deletion latency is bounded by one tick in flight plus the operator's DELETION_POLL_SECONDS
        # (kopf's cancellation_polling, 60 s before, which was the whole timeout): a wide margin here.
        wait_for(
            functools.partial(batch_gone, api, djs, batch),
            timeout=60,
            interval=0.5,
            what=f"batch {batch}: every DistillationJob deleted (no finalizer left behind)",
        )
        deletions.append(time.monotonic() - deleting)
        if (batch + 1) * BATCH == TOTAL // 2:
            samples["middle"] = proc_status(pid)
    churn_seconds = time.monotonic() - started
    samples["end"] = proc_status(pid)

    assert operator.process.poll() is None, operator.log_tail()
    assert len(uids) == TOTAL
    assert not rest(api, "GET", djs)["items"]
    collected = time.monotonic()
    try:
        wait_for(
            lambda: not leftovers(api, namespace, uids), timeout=180, interval=1, what="garbage collection"
        )
    except TimeoutError:
        raise AssertionError(f"children left behind: {leftovers(api, namespace, uids)}") from None
    collected_seconds = time.monotonic() - collected
    gauges = re.findall(r"^stratos_distillationjobs\{phase=\"(\w+)\"\} (\S+)$", operator.metrics(), re.M)
    assert gauges and all(float(value) == 0 for _, value in gauges), gauges
    # No timer outlives its job (kopf leaves one running for a job deleted before its finalizer
    # lands unless the operator stops it): the reconcile count stands still.
    before = reconciles(operator)
    time.sleep(6 * operator.interval)
    assert reconciles(operator) == before, "reconciles go on after every job is gone"

    mid, end = samples["middle"], samples["end"]
    bound = mid["rss_kib"] * (1 + RSS_SLACK_FRACTION) + RSS_SLACK_KIB
    report = f"{TOTAL} jobs in {churn_seconds:.0f} s, collected in {collected_seconds:.0f} s; "
    report += f"batch deletions {min(deletions):.1f}-{max(deletions):.1f} s; " + ", ".join(
        f"{k}: {v['rss_kib'] / 1024:.1f} MiB, {v['threads']} threads" for k, v in samples.items()
    )
    print(report)
    assert end["rss_kib"] <= bound, report
    assert end["threads"] <= mid["threads"] + 2, report
