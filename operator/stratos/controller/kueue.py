"""Stage Jobs admitted by Kueue (sigs.k8s.io/kueue): what a suspended Job is waiting for.

With ``spec.queueName`` set, every stage Job is created suspended with the label
``kueue.x-k8s.io/queue-name``. Kueue makes a ``Workload`` for it (labelled with the Job's uid), reserves
quota in the LocalQueue's ClusterQueue, and admits the Job by unsuspending it; to preempt it, Kueue
evicts the Workload and suspends the Job again (its pods go). While the Job is suspended this module
reads the Workload's conditions and says in the stage condition why the stage does not run: waiting for
quota (in Kueue's own words), preempted, evicted, or waiting for admission checks. Pure functions; the
executor does the one LIST of Workloads.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

GROUP = "kueue.x-k8s.io"
VERSION = "v1beta2"
PLURAL = "workloads"
JOB_UID_LABEL = f"{GROUP}/job-uid"


def _conditions(workload: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {str(c.get("type")): c for c in (workload.get("status") or {}).get("conditions") or []}


def _true(cond: Mapping[str, Any] | None) -> bool:
    return cond is not None and cond.get("status") == "True"


def _text(cond: Mapping[str, Any]) -> str:
    return str(cond.get("message") or cond.get("reason") or "").strip()


def waiting_message(queue: str, workloads: Iterable[Mapping[str, Any]] | None) -> str:
    """Why a suspended stage Job in ``queue`` is not running, from its Kueue Workload(s).

    ``workloads`` None means they could not be read (no Kueue API, no permission).
    """
    items = [w for w in workloads or [] if not (w.get("metadata") or {}).get("deletionTimestamp")]
    if workloads is None or not items:
        return (
            f"waiting for quota in queue {queue}: Kueue has not made a Workload for the Job yet "
            "(is Kueue running, with its batch/job integration?)"
        )
    conds = _conditions(items[-1])
    quota, admitted = conds.get("QuotaReserved"), conds.get("Admitted")
    evicted, preempted = conds.get("Evicted"), conds.get("Preempted")
    if _true(admitted):
        return f"admitted by queue {queue}; waiting for the Job to start"
    if _true(quota):
        detail = _text(admitted) if admitted else ""
        return f"quota reserved in queue {queue}, waiting for admission checks" + (
            f": {detail}" if detail else ""
        )
    waiting = f"waiting for quota in queue {queue}"
    detail = _text(quota) if quota else ""
    if detail:
        waiting += f": {detail}"
    if evicted is not None and _true(evicted):
        reason = str(evicted.get("reason") or "")
        was_preempted = preempted is not None and _true(preempted)
        why = _text(preempted) if preempted is not None and was_preempted else _text(evicted)
        if detail == why:  # Kueue repeats the eviction message as the reason quota is not reserved
            waiting = f"waiting for quota in queue {queue}"
        if reason == "Preempted" or was_preempted:
            return f"preempted by Kueue ({why}); {waiting}"
        return f"evicted by Kueue ({reason}: {why}); {waiting}"
    return waiting
